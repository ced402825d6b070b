/* deriv_check.c — run a derivation file (.adj) for t = T … 1 over L layers and compare it with
 * autodiff, line by line.
 *
 * Autodiff's per-step adjoints. The model is the sequence model (tg_model_forward: L layers,
 * the linear output layer, softmax cross-entropy summed over all T·B positions, float64, the
 * same random problem as `tapegrad check --seed S`) with a wrapper cell whose step evaluates the
 * cell file's equations with one op per operator (deriv_eval.c) on a tape with fusion off, so
 * every named quantity is a tensor of its own whose ->grad is autodiff's gradient of it. x and
 * the states enter the step through an identity op and the new states leave through one: the
 * ->grad of the copies in is the gradient reaching x and s through this step (dx, ds), that of
 * the copies out is what reaches s' from outside the step (the given ds'). That autodiff is the
 * compiled cell's is checked too: the parameter gradients of the cell itself on the same
 * problem must agree (they do to the last bits; the report prints the difference).
 *
 * Two runs of the derivation, both for t = T … 1 and layers from the top:
 *   chained  the derivation alone, as BPTT: ds' is the output layer's gradient (or the layer
 *            above's dx) plus the derivation's own ds from step t+1;
 *   isolated every adjoint a line reads (dNAME of a forward quantity, and the given ds') is
 *            autodiff's, so a line is judged given correct inputs.
 * A quantity wrong in the isolated run is wrong by its own lines; one wrong only in the chained
 * run is wrong because of an earlier mistake. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "deriv.h"
#include "tapegrad_deriv.h"

#define MAXQ 512

/* One quantity a derivation assigns: dNAME of a forward quantity, a parameter, or a helper. */
struct qty {
    const char *name;           /* "da" */
    int sym;                    /* the forward quantity, −1: a helper */
    int param;                  /* sym is a parameter */
    int lines[16], n_lines;     /* the lines that assign it */
    int reads[16], n_reads;     /* helpers (qty indices) its lines read */
    /* worst relative error in each run, and where the isolated run first went wrong */
    double rel_chain, rel_iso;
    int bad_chain, bad_iso;
    int t, l, row, col;         /* isolated: first wrong step/layer, worst element there */
    double yours, theirs, rel_at;
    int order;                  /* execution order of the first wrong (t, l) */
};

struct env_ent {
    int q;
    struct dval v;
    int set;
};

struct dck {
    const struct cfile *c;
    const struct cl_file *adj;
    struct deval ev;            /* for the derivation: no-grad tape */
    const struct tg_deriv_opts *o;
    int T, B, I, H, L, V, ns, np, nsym;
    double tol;
    struct tg_model *m;
    struct tg_tensor *zero;     /* 1×1 parameter 0 (copy) */
    struct tg_cell wrap;
    struct tg_tape *tape;
    struct tg_tensor **fw, **out;
    int *calls;
    struct tg_seq_result res;
    struct qty q[MAXQ];
    int nq;
    /* the running step */
    int l, t, iso;
    struct env_ent env[MAXQ];
    double **psum[2];           /* per mode: [l·np + p] summed parameter gradients */
    double **chain_ds, **chain_dx; /* chained: ds of step t+1 per (l, k); dx of layer l+1 at t */
    char gname[16][80];         /* "dh'": the given gradients, */
    int given_q[16];            /* and their quantities */
};

/* ------------------------------------------------------------ forward */

static int fsym(const struct cfile *c, const char *name)
{
    for (int k = 0; k < c->n_syms; k++)
        if (!strcmp(c->syms[k].name, name) && c->syms[k].kind != SY_SIZE) return k;
    return -1;
}


struct fctx {
    struct dck *d;
    struct tg_tensor **fw;
    struct tg_tensor *const *w;
};

static int fw_resolve(void *ctx, const struct cl_expr *e, struct dval *out)
{
    struct fctx *f = ctx;
    const struct cfile *c = f->d->c;
    int sym = fsym(c, e->name);
    if (sym < 0) return 1;
    const struct csym *s = &c->syms[sym];
    if (s->kind == SY_PARAM) {
        *out = (struct dval){c->params[s->index].ndim == 1 ? K_VEC : K_MAT, f->w[s->index]};
        return 0;
    }
    if (!f->fw[sym]) return 1;
    *out = (struct dval){s->kind == SY_INTER && c->info[s->def->id].kind == K_SCAL ? K_SCAL : K_VEC, f->fw[sym]};
    return 0;
}

/* x + 0 with the 0 a parameter, so that the copy has a gradient even when x (the input, a
 * zero initial state) is a leaf without one */
static struct tg_tensor *copy(struct tg_tape *t, struct dck *d, struct tg_tensor *x) { return tg_add(t, x, d->zero); }

static void wrap_step(const void *ctx, int in, int hidden, struct tg_tape *t, struct tg_tensor *const *w,
                      struct tg_tensor *x, struct tg_tensor *const *state, struct tg_tensor **next)
{
    struct dck *d = (struct dck *)ctx;
    const struct cfile *c = d->c;
    int l = 0;
    while (l < d->L - 1 && w != d->m->params + l * d->np) l++;
    int s = d->calls[l]++;
    if (s >= d->T) return;
    struct tg_tensor **fw = d->fw + ((size_t)l * d->T + s) * d->nsym;
    for (int k = 0; k < c->n_syms; k++) {
        if (c->syms[k].kind == SY_X) fw[k] = copy(t, d, x);
        if (c->syms[k].kind == SY_STATE) fw[k] = copy(t, d, state[c->syms[k].index]);
    }
    struct fctx f = {d, fw, w};
    struct deval ev = {t, c->f, hidden, in, 0, fw_resolve, &f};
    for (int k = 0; k < c->f->n_stmts; k++) {
        const struct cl_stmt *st = &c->f->stmts[k];
        if (st->kind != CL_S_ASSIGN) continue;
        int sym = -1;
        for (int j = 0; j < c->n_syms && sym < 0; j++)
            if (!strcmp(c->syms[j].name, st->target)) sym = j;
        struct dval v;
        if (sym < 0 || dv_eval(&ev, st->expr, &v)) return;
        /* `h' = c'`: a tensor of its own, so each name has its own gradient */
        fw[sym] = st->expr->kind == CL_NAME ? copy(t, d, v.t) : v.t;
    }
    for (int k = 0; k < d->ns; k++) {
        next[k] = copy(t, d, fw[c->next_sym[k]]);
        d->out[((size_t)l * d->T + s) * d->ns + k] = next[k];
    }
}

/* ------------------------------------------------------------ derivation */

static int qty_of(struct dck *d, const char *name)
{
    for (int k = 0; k < d->nq; k++)
        if (!strcmp(d->q[k].name, name)) return k;
    return -1;
}

/* dNAME of a forward quantity: its symbol, else −1. */
static int adj_sym(const struct cfile *c, const char *name) { return name[0] == 'd' ? fsym(c, name + 1) : -1; }

static struct tg_tensor **fw_at(struct dck *d) { return d->fw + ((size_t)d->l * d->T + d->t) * d->nsym; }

/* Autodiff's gradient of forward quantity sym at the running step, as a tensor on the
 * derivation's tape; for s' the whole gradient (from outside the step and inside it). */
static struct tg_tensor *ad_grad(struct dck *d, int sym)
{
    struct tg_tensor *x = fw_at(d)[sym];
    struct tg_tensor *g = x ? tg_tensor_new(d->ev.tape, x->rows, x->cols, TG_F64) : NULL;
    for (int r = 0; g && r < x->rows; r++)
        for (int k = 0; k < x->cols; k++) tg_set(g, r, k, tg_grad_get(x, r, k));
    return g;
}

static struct tg_tensor *from_doubles(struct dck *d, const double *v, int rows, int cols)
{
    struct tg_tensor *g = tg_tensor_new(d->ev.tape, rows, cols, TG_F64);
    if (g) memcpy(g->data, v, sizeof *v * (size_t)rows * cols);
    return g;
}

static int adj_resolve(void *ctx, const struct cl_expr *e, struct dval *out)
{
    struct dck *d = ctx;
    const struct cfile *c = d->c;
    int sym = fsym(c, e->name);
    if (sym >= 0) {
        const struct csym *s = &c->syms[sym];
        if (s->kind == SY_PARAM) {
            struct tg_tensor *w = d->m->params[d->l * d->np + s->index];
            *out = (struct dval){c->params[s->index].ndim == 1 ? K_VEC : K_MAT, w};
            return 0;
        }
        struct tg_tensor *x = fw_at(d)[sym];
        if (!x) return cl_error_at(d->adj, e->line, e->col, "%s is not computed by the cell (no equation needs it)", e->name), -1;
        *out = (struct dval){x->cols == 1 && s->kind == SY_INTER && c->info[s->def->id].kind == K_SCAL ? K_SCAL : K_VEC, x};
        return 0;
    }
    int q = qty_of(d, e->name);
    int as = adj_sym(c, e->name);
    if (as >= 0 && c->syms[as].kind == SY_PARAM)
        return cl_error_at(d->adj, e->line, e->col, "%s is a parameter's gradient, summed over steps; a line "
                           "can add to it but not read it", e->name), -1;
    /* isolated: autodiff's value of what dNAME means here; a given ds' no line adds to is just
     * the given (in env), else the whole gradient */
    if (d->iso && as >= 0 && (q < 0 || d->q[q].n_lines > 0)) {
        struct tg_tensor *g = ad_grad(d, as);
        if (!g) return -1;
        *out = (struct dval){g->cols == 1 && c->syms[as].kind == SY_INTER ? K_SCAL : K_VEC, g};
        return 0;
    }
    if (q >= 0 && d->env[q].set) return *out = d->env[q].v, 0;
    if (as >= 0 || q >= 0)
        return cl_error_at(d->adj, e->line, e->col, "%s is read before any line assigns it%s", e->name,
                           as >= 0 && c->syms[as].kind == SY_NEXT ? "" : " (at this step)"), -1;
    if (e->name[0] == 'd' && e->name[1] && strcmp(e->name + 1, "H") && strcmp(e->name + 1, "I"))
        return cl_error_at(d->adj, e->line, e->col, "unknown name '%s': the cell has no %s, and no line assigns %s",
                           e->name, e->name + 1, e->name), -1;
    return 1;
}

static int width_of(const struct dck *d, int sym)
{
    const struct cfile *c = d->c;
    const struct csym *s = &c->syms[sym];
    if (s->kind == SY_X) return d->l == 0 ? d->I : d->H;
    if (s->kind == SY_STATE) return d->H;
    const struct cinfo *in = &c->info[s->def->id];
    return in->kind == K_SCAL ? 1 : (int)lf_eval(in->n, d->H, d->l == 0 ? d->I : d->H);
}

/* value v as the gradient of forward quantity sym (scalars broadcast to its units). */
static int as_adjoint(struct dck *d, const struct cl_stmt *st, int sym, struct dval v, struct dval *out)
{
    int w = width_of(d, sym);
    char b[160];
    if (v.kind == K_MAT || (v.kind == K_VEC && (v.t->cols != w || v.t->rows != d->B)))
        return cl_error_at(d->adj, st->expr->line, st->expr->col, "%s: the gradient of %s has %dx%d elements "
                           "(B = %d sequences, %d units) but %s is %dx%d (H = %d, I = %d)", st->target,
                           d->c->syms[sym].name, d->B, w, d->B, w, cl_expr_text(d->adj, st->expr, b, sizeof b),
                           v.t->rows, v.t->cols, d->H, d->l == 0 ? d->I : d->H), -1;
    if (v.kind == K_VEC) return *out = v, 0;
    struct tg_tensor *z = tg_tensor_new(d->ev.tape, d->B, w, TG_F64);
    struct tg_tensor *r = z ? tg_add(d->ev.tape, z, v.t) : NULL;
    if (!r) return -1;
    return *out = (struct dval){w == 1 && d->c->syms[sym].kind == SY_INTER ? K_SCAL : K_VEC, r}, 0;
}

static int accumulate_param(struct dck *d, const struct cl_stmt *st, int sym, struct dval v)
{
    const struct csym *s = &d->c->syms[sym];
    struct tg_tensor *w = d->m->params[d->l * d->np + s->index];
    int vec = d->c->params[s->index].ndim == 1;
    char b[160];
    int ok = vec ? (v.kind == K_VEC || v.kind == K_SCAL) && v.t->cols == w->cols
                 : v.kind == K_MAT && v.t->rows == w->rows && v.t->cols == w->cols;
    if (st->kind != CL_S_ACCUM)
        return cl_error_at(d->adj, st->line, st->col, "%s: a parameter's gradient is summed over steps and "
                           "sequences; write %s += …", st->target, st->target), -1;
    if (!ok)
        return cl_error_at(d->adj, st->expr->line, st->expr->col, "%s += %s: %s is %s %dx%d but %s is %dx%d "
                           "(H = %d, I = %d)", st->target, cl_expr_text(d->adj, st->expr, b, sizeof b), s->name,
                           vec ? "a vector" : "a matrix", vec ? 1 : w->rows, w->cols, "the right side",
                           v.t->rows, v.t->cols, d->H, d->l == 0 ? d->I : d->H), -1;
    double *acc = d->psum[d->iso][d->l * d->np + s->index];
    for (int r = 0; r < v.t->rows; r++)
        for (int k = 0; k < v.t->cols; k++) acc[(vec ? 0 : r) * w->cols + k] += tg_get(v.t, r, k);
    return 0;
}

/* The gradient given for s' at the running step (chained: the run's own; isolated: autodiff's). */
static struct tg_tensor *given(struct dck *d, int k)
{
    struct tg_tensor *o = d->out[((size_t)d->l * d->T + d->t) * d->ns + k];
    if (d->iso) {
        struct tg_tensor *g = tg_tensor_new(d->ev.tape, d->B, d->H, TG_F64);
        for (int r = 0; g && r < d->B; r++)
            for (int j = 0; j < d->H; j++) tg_set(g, r, j, tg_grad_get(o, r, j));
        return g;
    }
    struct tg_tensor *g = from_doubles(d, d->chain_ds[d->l * d->ns + k], d->B, d->H);
    if (!g) return NULL;
    if (k == 0) {
        const double *ext = d->chain_dx[d->l];
        for (int i = 0; i < d->B * d->H; i++) ((double *)g->data)[i] += ext[i];
    }
    return g;
}

static double rel_err(const struct tg_tensor *got, const struct tg_tensor *want, int *wr, int *wc)
{
    double md = 0, mw = 0;
    *wr = *wc = 0;
    for (int r = 0; r < want->rows; r++)
        for (int k = 0; k < want->cols; k++) {
            double a = tg_get(got, r, k), b = tg_get(want, r, k), e = fabs(a - b);
            if (!(e <= md)) md = e, *wr = r, *wc = k; /* NaN counts as worst */
            mw = fmax(mw, fabs(b));
        }
    return isnan(md) ? INFINITY : mw > 0 ? md / mw : md;
}

static void note(struct dck *d, struct qty *q, int mode, double rel, int order, const struct tg_tensor *got,
                 const struct tg_tensor *want, int r, int k)
{
    int bad = !(rel <= d->tol);
    if (mode == 0) {
        q->rel_chain = fmax(q->rel_chain, rel), q->bad_chain |= bad;
        return;
    }
    q->rel_iso = fmax(q->rel_iso, rel);
    if (bad && !q->bad_iso) {
        q->bad_iso = 1;
        q->t = d->t, q->l = d->l, q->row = r, q->col = k, q->order = order, q->rel_at = rel;
        q->yours = tg_get(got, r, k), q->theirs = tg_get(want, r, k);
    }
}

static int run_step(struct dck *d, int order)
{
    const struct cfile *c = d->c;
    const struct cl_file *f = d->adj;
    tg_tape_reset(d->ev.tape);
    for (int k = 0; k < d->nq; k++) d->env[k].set = 0;
    for (int k = 0; k < d->ns; k++) {
        int q = d->given_q[k];
        struct tg_tensor *g = given(d, k);
        if (!g) return -1;
        d->env[q] = (struct env_ent){q, {K_VEC, g}, 1};
    }
    for (int j = 0; j < f->n_stmts; j++) {
        const struct cl_stmt *st = &f->stmts[j];
        int q = qty_of(d, st->target);
        struct qty *Q = &d->q[q];
        struct dval v;
        if (dv_eval(&d->ev, st->expr, &v)) return -1;
        if (Q->param) {
            if (accumulate_param(d, st, Q->sym, v)) return -1;
            continue;
        }
        if (Q->sym >= 0 && as_adjoint(d, st, Q->sym, v, &v)) return -1;
        if (st->kind == CL_S_ACCUM && d->env[q].set && dv_add(&d->ev, st->expr, d->env[q].v, v, &v)) return -1;
        d->env[q] = (struct env_ent){q, v, 1};
    }
    /* compare, and carry the chained run's ds and dx */
    for (int k = 0; k < d->nq; k++) {
        struct qty *Q = &d->q[k];
        if (Q->sym < 0 || Q->param || !Q->n_lines || !d->env[k].set) continue;
        struct tg_tensor *want = ad_grad(d, Q->sym), *got = d->env[k].v.t;
        int r, cc;
        if (!want) return -1;
        double rel = rel_err(got, want, &r, &cc);
        note(d, Q, d->iso, rel, order * 4096 + Q->lines[0], got, want, r, cc);
        if (d->iso) continue;
        const struct csym *s = &c->syms[Q->sym];
        if (s->kind == SY_STATE) memcpy(d->chain_ds[d->l * d->ns + s->index], got->data, sizeof(double) * (size_t)d->B * d->H);
        if (s->kind == SY_X && d->l > 0) memcpy(d->chain_dx[d->l - 1], got->data, sizeof(double) * (size_t)d->B * d->H);
    }
    return 0;
}

/* ------------------------------------------------------------ set-up */

static int add_qty(struct dck *d, const char *name)
{
    int k = qty_of(d, name);
    if (k >= 0) return k;
    if (d->nq == MAXQ) return -1;
    struct qty *Q = &d->q[d->nq];
    *Q = (struct qty){.name = name, .sym = adj_sym(d->c, name)};
    Q->param = Q->sym >= 0 && d->c->syms[Q->sym].kind == SY_PARAM;
    return d->nq++;
}

static void note_reads(struct dck *d, struct qty *Q, const struct cl_expr *e)
{
    if (!e) return;
    if (e->kind == CL_NAME) {
        int h = qty_of(d, e->name);
        if (h >= 0 && d->q[h].sym < 0 && Q->n_reads < 16) {
            for (int k = 0; k < Q->n_reads; k++)
                if (Q->reads[k] == h) return;
            Q->reads[Q->n_reads++] = h;
        }
        return;
    }
    note_reads(d, Q, e->a);
    if (e->kind != CL_SLICE) note_reads(d, Q, e->b);
    for (int k = 0; k < e->n_args; k++) note_reads(d, Q, e->args[k]);
}

/* The quantities the derivation assigns (helpers first seen, in line order), then one per
 * given ds'; the file's statements checked: kinds, targets, the required ds and dP. */
static int scan(struct dck *d)
{
    const struct cfile *c = d->c;
    const struct cl_file *f = d->adj;
    for (int j = 0; j < f->n_stmts; j++) {
        const struct cl_stmt *st = &f->stmts[j];
        if (st->kind != CL_S_ASSIGN && st->kind != CL_S_ACCUM)
            return cl_error_at(f, st->line, st->col, "a derivation has only lines NAME = EXPR and NAME += EXPR");
        if (fsym(c, st->target) >= 0)
            return cl_error_at(f, st->line, st->col, "%s is a forward quantity of the cell; a derivation assigns "
                               "gradients (d%s) and helpers", st->target, st->target);
        int q = add_qty(d, st->target);
        if (q < 0) return cl_error_at(f, st->line, st->col, "more than %d names", MAXQ);
        if (d->q[q].n_lines < 16) d->q[q].lines[d->q[q].n_lines++] = st->line;
    }
    for (int j = 0; j < f->n_stmts; j++) note_reads(d, &d->q[qty_of(d, f->stmts[j].target)], f->stmts[j].expr);
    int last = f->n_stmts ? f->stmts[f->n_stmts - 1].line : 1;
    for (int k = 0; k < c->n_syms; k++) {
        const struct csym *s = &c->syms[k];
        if (s->kind != SY_STATE && s->kind != SY_PARAM) continue;
        int q = -1;
        for (int j = 0; j < d->nq; j++)
            if (d->q[j].sym == k && d->q[j].n_lines) q = j;
        if (q < 0)
            return cl_error_at(f, last, 1, s->kind == SY_STATE ? "no line assigns d%s, the gradient reaching state %s "
                               "at step t-1 (required)" : "no line adds to d%s, the gradient of parameter %s (required)",
                               s->name, s->name);
    }
    for (int k = 0; k < d->ns; k++) {
        snprintf(d->gname[k], sizeof d->gname[k], "d%s", c->syms[c->next_sym[k]].name);
        if ((d->given_q[k] = add_qty(d, d->gname[k])) < 0) return cl_error_at(f, last, 1, "more than %d names", MAXQ);
    }
    return 0;
}

/* The output layer's gradient reaching h' of the top layer at step t (from autodiff: the
 * loss's gradient of the logits times out.weight; the layer is not the cell's). */
static void output_grad(struct dck *d, double *ext)
{
    const struct tg_tensor *lg = d->res.logits, *W = d->m->params[d->m->n_params - 2];
    for (int b = 0; b < d->B; b++)
        for (int j = 0; j < d->H; j++) {
            double s = 0;
            for (int v = 0; v < d->V; v++) s += tg_grad_get(lg, d->t * d->B + b, v) * tg_get(W, v, j);
            ext[b * d->H + j] = s;
        }
}

static int run_all(struct dck *d)
{
    int order = 0;
    for (d->t = d->T - 1; d->t >= 0; d->t--)
        for (d->l = d->L - 1; d->l >= 0; d->l--, order++)
            for (d->iso = 0; d->iso < 2; d->iso++) {
                d->ev.I = d->l == 0 ? d->I : d->H; /* the layer's input width */
                if (!d->iso && d->l == d->L - 1) output_grad(d, d->chain_dx[d->l]);
                if (!d->iso && d->l > 0) { /* autodiff's dx, unless the derivation gives its own */
                    struct tg_tensor *x = fw_at(d)[fsym(d->c, "x")];
                    for (int i = 0; i < d->B * d->H; i++) d->chain_dx[d->l - 1][i] = tg_grad_get(x, i / d->H, i % d->H);
                }
                if (run_step(d, order + 1)) return -1;
            }
    for (int mode = 0; mode < 2; mode++)
        for (int k = 0; k < d->nq; k++) {
            struct qty *Q = &d->q[k];
            if (!Q->param) continue;
            for (int l = 0; l < d->L; l++) {
                struct tg_tensor *w = d->m->params[l * d->np + d->c->syms[Q->sym].index];
                struct tg_tensor got = *w, want = *w;
                got.data = d->psum[mode][l * d->np + d->c->syms[Q->sym].index];
                want.data = w->grad;
                int r, cc;
                d->l = l, d->t = -1, d->iso = mode;
                double rel = rel_err(&got, &want, &r, &cc);
                note(d, Q, mode, rel, (order + 1) * 4096 + Q->lines[0], &got, &want, r, cc);
            }
        }
    return 0;
}

static void lines_of(const struct qty *Q, char *b, size_t n)
{
    size_t k = 0;
    b[0] = 0;
    for (int j = 0; j < Q->n_lines && k < n; j++) k += (size_t)snprintf(b + k, n - k, "%s%d", j ? ", " : "", Q->lines[j]);
}

static void report_fail(struct dck *d, FILE *out, const char *path, int first)
{
    const struct qty *Q = &d->q[first];
    const struct cl_file *f = d->adj;
    char b[256];
    fprintf(out, "FAIL: %s is wrong given correct inputs (every adjoint its line%s read%s taken from autodiff)\n",
            Q->name, Q->n_lines > 1 ? "s" : "", Q->n_lines > 1 ? "" : "s");
    for (int j = 0; j < Q->n_lines; j++)
        for (int s = 0; s < f->n_stmts; s++)
            if (f->stmts[s].line == Q->lines[j] && !strcmp(f->stmts[s].target, Q->name))
                fprintf(out, "  %s:%d: %s %s %s\n", path, Q->lines[j], Q->name, f->stmts[s].kind == CL_S_ACCUM ? "+=" : "=",
                        cl_expr_text(f, f->stmts[s].expr, b, sizeof b));
    /* the helpers its lines read, and theirs (autodiff has no value for a helper) */
    int seen[MAXQ] = {0}, stack[MAXQ], sp = 0, nh = 0;
    for (int j = 0; j < Q->n_reads; j++) stack[sp++] = Q->reads[j], seen[Q->reads[j]] = 1;
    while (sp > 0) {
        const struct qty *R = &d->q[stack[--sp]];
        char ln[128];
        lines_of(R, ln, sizeof ln);
        fprintf(out, "%s%s (%s:%s)", nh++ ? ", " : "  or in a helper it reads (autodiff has no value for a helper): ", R->name, path, ln);
        for (int j = 0; j < R->n_reads; j++)
            if (!seen[R->reads[j]] && sp < MAXQ) stack[sp++] = R->reads[j], seen[R->reads[j]] = 1;
    }
    if (nh) fprintf(out, "\n");
    if (Q->param)
        fprintf(out, "  summed over t = %d … 1: worst element [%d, %d] of layer %d: yours %.10g, autodiff %.10g "
                "(relative error %.2e)\n", d->T, Q->row, Q->col, Q->l, Q->yours, Q->theirs, Q->rel_at);
    else
        fprintf(out, "  worst element at t = %d, layer %d, sequence %d, unit %d: yours %.10g, autodiff %.10g "
                "(relative error %.2e)\n", Q->t + 1, Q->l, Q->row, Q->col, Q->yours, Q->theirs, Q->rel_at);
    fprintf(out, "  (t counts 1 … T; layers, sequences and units count from 0)\n");
    int n = 0;
    for (int k = 0; k < d->nq; k++) {
        const struct qty *R = &d->q[k];
        if (!R->bad_chain || R->bad_iso || !R->n_lines) continue;
        char ln[128];
        lines_of(R, ln, sizeof ln);
        fprintf(out, "%s%s (line %s)", n++ ? ", " : "wrong only because of it: ", R->name, ln);
    }
    if (n) fprintf(out, "\n");
    n = 0;
    for (int k = 0; k < d->nq; k++) {
        const struct qty *R = &d->q[k];
        if (k == first || !R->bad_iso) continue;
        char ln[128];
        lines_of(R, ln, sizeof ln);
        fprintf(out, "%s%s (line %s)", n++ ? ", " : "also wrong given correct inputs: ", R->name, ln);
    }
    if (n) fprintf(out, "\n");
}

static double compiled_agreement(struct dck *d, const struct tg_seq_batch *bt)
{
    struct tg_model_config cfg = d->m->cfg;
    cfg.cell = &d->c->cell;
    struct tg_model *m2;
    double worst = INFINITY;
    if (tg_model_new(&cfg, &m2) != TG_OK) return worst;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_seq_result r;
    for (int k = 0; k < m2->n_params; k++) tg_tensor_copy(m2->params[k], d->m->params[k]);
    if (t && tg_model_forward(m2, t, bt, 0, &r) == TG_OK && tg_backward(t, r.loss) == TG_OK) {
        worst = 0;
        for (int k = 0; k < d->L * d->np; k++) {
            struct tg_tensor a = *d->m->params[k], b = *m2->params[k];
            a.data = a.grad, b.data = b.grad;
            int i, j;
            worst = fmax(worst, rel_err(&a, &b, &i, &j));
        }
    }
    tg_tape_free(t);
    tg_model_free(m2);
    return worst;
}

int tg_deriv_check(const struct tg_cell *cell, const char *adj_path, const char *text,
                   const struct tg_deriv_opts *o, FILE *out)
{
    const struct cfile *c = (const struct cfile *)cell;
    if (!cell || !tg_cell_source(cell, NULL)) {
        tg_error(TG_ERR_VALUE, "check --derivation: %s is not a cell file", cell ? cell->name : "(null)");
        return 3;
    }
    char *buf = NULL;
    size_t len = 0;
    if (!text) {
        FILE *fp = fopen(adj_path, "rb");
        if (!fp) return tg_error(TG_ERR_IO, "%s: cannot open the derivation", adj_path), 3;
        size_t cap = 0, got;
        do {
            if (len == cap) {
                char *nb = realloc(buf, (cap = cap ? 2 * cap : 4096) + 1);
                if (!nb) break;
                buf = nb;
            }
            got = fread(buf + len, 1, cap - len, fp);
            len += got;
        } while (got && cap < (1u << 24));
        fclose(fp);
        if (!buf) return tg_error(TG_ERR_NOMEM, "out of memory"), 3;
        text = buf;
    } else {
        len = strlen(text);
    }
    struct cl_file *f = cl_parse(text, len, adj_path);
    free(buf);
    if (!f) return 2;
    struct dck *d = calloc(1, sizeof *d);
    int rc = 3;
    if (!d) goto done;
    *d = (struct dck){.c = c, .adj = f, .o = o, .T = o->T, .B = o->B, .I = o->I, .H = o->H, .L = o->L, .V = o->V,
                      .ns = cell->n_state, .np = cell->n_params, .nsym = c->n_syms, .tol = o->tol > 0 ? o->tol : 1e-10};
    if (scan(d)) {
        rc = 2;
        goto done;
    }
    d->wrap = *cell;
    d->wrap.ctx = d;
    d->wrap.step_ctx = wrap_step;
    d->wrap.input_ctx = NULL;
    d->wrap.check = NULL;
    struct tg_model_config cfg = {.cell = &d->wrap, .input = d->I, .hidden = d->H, .layers = d->L, .outputs = d->V,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    if (tg_cell_check(cell, d->I, d->H) != TG_OK || (d->L > 1 && tg_cell_check(cell, d->H, d->H) != TG_OK) ||
        tg_model_new(&cfg, &d->m) != TG_OK)
        goto done;
    size_t nfw = (size_t)d->L * d->T * d->nsym;
    d->fw = calloc(nfw, sizeof *d->fw);
    d->out = calloc((size_t)d->L * d->T * d->ns, sizeof *d->out);
    d->calls = calloc((size_t)d->L, sizeof *d->calls);
    d->chain_ds = calloc((size_t)d->L * d->ns, sizeof *d->chain_ds);
    d->chain_dx = calloc((size_t)d->L, sizeof *d->chain_dx);
    for (int m = 0; m < 2; m++) d->psum[m] = calloc((size_t)d->L * d->np, sizeof *d->psum[m]);
    double *x = malloc(sizeof *x * (size_t)d->T * d->B * d->I);
    int32_t *y = malloc(sizeof *y * (size_t)d->T * d->B);
    d->tape = tg_tape_new(0);
    d->ev.tape = tg_tape_new(0);
    d->zero = tg_param_new("zero", 1, 1, TG_F64);
    int ok = d->zero && d->fw && d->out && d->calls && d->chain_ds && d->chain_dx && d->psum[0] && d->psum[1] && x && y && d->tape && d->ev.tape;
    for (int k = 0; ok && k < d->L * d->ns; k++) ok = (d->chain_ds[k] = calloc((size_t)d->B * d->H, sizeof(double))) != NULL;
    for (int k = 0; ok && k < d->L; k++) ok = (d->chain_dx[k] = calloc((size_t)d->B * d->H, sizeof(double))) != NULL;
    for (int m = 0; ok && m < 2; m++)
        for (int k = 0; ok && k < d->L * d->np; k++) ok = (d->psum[m][k] = calloc(tg_numel(d->m->params[k]), sizeof(double))) != NULL;
    if (!ok) {
        tg_error(TG_ERR_NOMEM, "check --derivation: out of memory");
        goto free_all;
    }
    tg_tape_set_no_grad(d->ev.tape, 1);
    tg_tape_set_fusion(d->tape, TG_FUSION_OFF);
    d->ev = (struct deval){d->ev.tape, f, d->H, d->I, 1, adj_resolve, d};
    /* the problem of `tapegrad check --seed S`: parameters U(±2/√H), inputs U(−1, 1), labels */
    struct tg_rng r;
    tg_rng_seed(&r, o->seed);
    double a = 2.0 / sqrt((double)d->H);
    for (int k = 0; k < d->m->n_params; k++) tg_tensor_uniform(d->m->params[k], &r, -a, a);
    for (size_t i = 0; i < (size_t)d->T * d->B * d->I; i++) x[i] = 2 * tg_rng_uniform(&r) - 1;
    for (size_t i = 0; i < (size_t)d->T * d->B; i++) y[i] = (int32_t)tg_rng_below(&r, (uint32_t)d->V);
    struct tg_seq_batch bt = {.T = d->T, .B = d->B, .x = x, .labels = y};
    if (tg_model_forward(d->m, d->tape, &bt, 0, &d->res) != TG_OK || tg_backward(d->tape, d->res.loss) != TG_OK)
        goto free_all;
    double agree = compiled_agreement(d, &bt);
    if (!(agree <= 1e-12)) {
        tg_error(TG_ERR_STATE, "check --derivation: internal: the cell's equations evaluated op by op disagree "
                 "with the compiled cell (%.2e)", agree);
        goto free_all;
    }
    /* the run: derivation-language errors show up at its first step */
    if (run_all(d)) {
        rc = 2;
        goto free_all;
    }
    int first = -1, n_cmp = 0, n_par = 0;
    for (int k = 0; k < d->nq; k++) {
        const struct qty *Q = &d->q[k];
        if (Q->sym < 0 || !Q->n_lines) continue;
        Q->param ? n_par++ : n_cmp++;
        if (Q->bad_iso && (first < 0 || Q->order < d->q[first].order)) first = k;
    }
    int bad_chain = 0;
    for (int k = 0; k < d->nq; k++) bad_chain |= d->q[k].bad_chain;
    if (!o->quiet) {
        fprintf(out, "derivation %s against autodiff: %s.cell, T=%d B=%d I=%d H=%d L=%d V=%d, float64, seed %llu\n",
                adj_path, cell->name, d->T, d->B, d->I, d->H, d->L, d->V, o->seed);
        fprintf(out, "(autodiff of the equations op by op agrees with the compiled cell to %.1e)\n\n", agree);
        fprintf(out, "%-14s %-12s %-12s %-12s %s\n", "gradient", "lines", "chained", "isolated", "");
        for (int k = 0; k < d->nq; k++) {
            const struct qty *Q = &d->q[k];
            if (Q->sym < 0 || !Q->n_lines) continue;
            char ln[128];
            lines_of(Q, ln, sizeof ln);
            fprintf(out, "%-14s %-12s %-12.2e %-12.2e %s\n", Q->name, ln, Q->rel_chain, Q->rel_iso,
                    Q->bad_iso ? "WRONG" : Q->bad_chain ? "wrong input" : "ok");
        }
        fprintf(out, "(relative error max|yours - autodiff| / max|autodiff| per step; chained: the derivation "
                "run alone; isolated: each line given autodiff's adjoints)\n\n");
    }
    /* The verdict is the chained run's (what the derivation computes); the isolated run only
     * says which line is to blame. */
    if (bad_chain && first >= 0) {
        report_fail(d, out, adj_path, first);
        rc = 1;
    } else if (bad_chain) {
        fprintf(out, "FAIL: some gradients are wrong although every line is right given autodiff's inputs "
                "(a line reads an adjoint before it is complete?)\n");
        rc = 1;
    } else {
        fprintf(out, "PASS: %d adjoints and %d parameter gradients agree with autodiff (relative error <= %.0e) "
                "at every step and layer\n", n_cmp, n_par, d->tol);
        rc = 0;
    }
free_all:
    free(x), free(y);
    for (int k = 0; d->chain_ds && k < d->L * d->ns; k++) free(d->chain_ds[k]);
    for (int k = 0; d->chain_dx && k < d->L; k++) free(d->chain_dx[k]);
    for (int m = 0; m < 2; m++)
        for (int k = 0; d->psum[m] && k < d->L * d->np; k++) free(d->psum[m][k]);
    free(d->psum[0]), free(d->psum[1]), free(d->chain_ds), free(d->chain_dx);
    free(d->fw), free(d->out), free(d->calls);
    tg_tape_free(d->tape), tg_tape_free(d->ev.tape);
    tg_model_free(d->m);
    tg_tensor_free(d->zero);
done:
    free(d);
    cl_file_free(f);
    return rc;
}
