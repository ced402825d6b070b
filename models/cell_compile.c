/* cell_compile.c — a checked cell file becomes a struct tg_cell whose step records ordinary ops.
 *
 * Two straight-line programs are planned once, at load; each instruction is one op call:
 * - the input program runs on all T·B rows of a layer's input X before the time loop. It
 *   computes every part of the equations that reads x and parameters but no state (hoisting:
 *   `weight_ih @ x + bias_ih + bias_hh` is one GEMM over T·B rows with the summed biases as its
 *   addend, as the hand-written cells do). Its result is the column blocks side by side;
 * - the step program runs at every step on that step's rows of the projection, the states and
 *   the parameters. A sum whose terms include `W @ v` becomes tg_addmm with the rest as its
 *   addend (parameter vectors first, so biases ride in the GEMM as in the C cells), constants
 *   become tg_affine (`1 - z` is one node), and every result is named after the file (`f`,
 *   `c'`, or the expression's text), which is what DOT labels show.
 * Sizes are linear forms in H and I evaluated at run time, so one plan serves every layer. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell_prog.h"

/* ------------------------------------------------------------- planning */

enum { MAX_ARGS = 513, MAX_CONCAT = 256 }; /* x + states + parameters; concatenated blocks */

struct planner {
    struct cfile *c;
    int failed;
    int line;                   /* the equation being compiled, for its instructions' origin */
    const char **origins;       /* "FILE:LINE" per line, made on first use */
    int n_lines;
};

static const char *origin_of(struct planner *pl, int line)
{
    if (line < 1 || line >= pl->n_lines) return NULL;
    if (!pl->origins[line]) {
        char buf[600];
        snprintf(buf, sizeof buf, "%s:%d", pl->c->f->path, line);
        char *o = cl_alloc(pl->c->f, strlen(buf) + 1);
        if (o) memcpy(o, buf, strlen(buf) + 1);
        pl->origins[line] = o;
    }
    return pl->origins[line];
}

static int add_ins(struct planner *pl, struct prog *p, struct ins in)
{
    if (pl->failed) return -1;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 32;
        struct ins *ni = cl_alloc(pl->c->f, (size_t)cap * sizeof *ni);
        if (!ni) {
            pl->failed = 1;
            tg_error(TG_ERR_NOMEM, "%s: out of memory compiling the cell", pl->c->f->path);
            return -1;
        }
        if (p->n) memcpy(ni, p->ins, (size_t)p->n * sizeof *ni);
        p->ins = ni;
        p->cap = cap;
    }
    if (!in.origin) in.origin = origin_of(pl, pl->line);
    p->ins[p->n] = in;
    return p->n++;
}

static const char *label_of(struct planner *pl, const struct cl_expr *e)
{
    char buf[96];
    cl_expr_text(pl->c->f, e, buf, sizeof buf);
    size_t n = strlen(buf);
    char *s = cl_alloc(pl->c->f, n + 1);
    if (!s) return NULL;
    memcpy(s, buf, n);
    return s;
}

static int hoistable(const struct cinfo *in) { return (in->dep & D_X) && !(in->dep & D_S); }

static int emit(struct planner *pl, int input, const struct cl_expr *e);

static int op2(struct planner *pl, int input, enum iop op, int a, int b, const struct cl_expr *e)
{
    if (a < 0 || b < 0) return -1;
    return add_ins(pl, input ? &pl->c->input : &pl->c->step,
                   (struct ins){.op = op, .a = a, .b = b, .label = label_of(pl, e)});
}

static int affine(struct planner *pl, int input, int a, double alpha, double beta, const struct cl_expr *e)
{
    if (a < 0) return -1;
    return add_ins(pl, input ? &pl->c->input : &pl->c->step,
                   (struct ins){.op = I_AFFINE, .a = a, .alpha = alpha, .beta = beta, .label = label_of(pl, e)});
}

static int constant(struct planner *pl, int input, double v, const struct cl_expr *e)
{
    return add_ins(pl, input ? &pl->c->input : &pl->c->step,
                   (struct ins){.op = I_CONST, .alpha = v, .label = label_of(pl, e)});
}

struct term {
    const struct cl_expr *e;
    int sign;
};

static int flatten(const struct cl_expr *e, int sign, struct term *out, int n)
{
    if (e->kind == CL_ADD || e->kind == CL_SUB) {
        n = flatten(e->a, sign, out, n);
        return flatten(e->b, e->kind == CL_SUB ? -sign : sign, out, n);
    }
    out[n++] = (struct term){e, sign};
    return n;
}

/* Σ sign·term: parameter vectors first (they become the GEMM's addend), then the rest in the
 * file's order, `+ W @ v` folded into tg_addmm, numbers into one final affine. */
static int emit_terms(struct planner *pl, int input, const struct term *t, int n, const struct cl_expr *whole)
{
    const struct cinfo *info = pl->c->info;
    struct prog *p = input ? &pl->c->input : &pl->c->step;
    double k = 0;
    int acc = -1, acc_vec = 0, fresh_affine = -1;
    for (int pass = 0; pass < 2; pass++) {
        for (int j = 0; j < n; j++) {
            const struct cinfo *in = &info[t[j].e->id];
            if (in->kind == K_NUM) {
                if (pass == 0) k += t[j].sign * in->num;
                continue;
            }
            if ((in->dep == D_P) != (pass == 0)) continue;
            const struct cl_expr *e = t[j].e;
            if (e->kind == CL_MATMUL && t[j].sign > 0 && acc >= 0 && acc_vec) {
                int w = emit(pl, input, e->a), v = emit(pl, input, e->b);
                if (w < 0 || v < 0) return -1;
                acc = add_ins(pl, p, (struct ins){.op = I_ADDMM, .a = acc, .b = v, .c = w, .label = label_of(pl, whole)});
                fresh_affine = -1;
            } else {
                int s = emit(pl, input, e);
                if (acc < 0) {
                    acc = t[j].sign > 0 ? s : (fresh_affine = affine(pl, input, s, -1.0, 0.0, whole));
                } else {
                    acc = op2(pl, input, t[j].sign > 0 ? I_ADD : I_SUB, acc, s, whole);
                    fresh_affine = -1;
                }
            }
            if (acc < 0) return -1;
            acc_vec |= in->kind == K_VEC;
        }
    }
    if (acc < 0) return constant(pl, input, k, whole);
    if (k != 0) {
        if (fresh_affine == acc) p->ins[acc].beta += k; /* -f + 1 is one affine: (−1)·f + 1 */
        else acc = affine(pl, input, acc, 1.0, k, whole);
    }
    return acc;
}

/* The slot, in the step program, of column block (key, partial) of the projection; planned
 * into the input program on first use. key −1 is x itself. */
static int block(struct planner *pl, int key, int partial, const struct cl_expr *e,
                 const struct term *t, int n)
{
    struct cfile *c = pl->c;
    for (int b = 0; b < c->n_blocks; b++)
        if (c->blocks[b].key == key && c->blocks[b].partial == partial)
            return add_ins(pl, &c->step, (struct ins){.op = I_XP, .a = b});
    if (c->n_blocks == c->blocks_cap) {
        int cap = c->blocks_cap ? 2 * c->blocks_cap : 8;
        struct cblock *nb = cl_alloc(c->f, (size_t)cap * sizeof *nb);
        if (!nb) return pl->failed = 1, -1;
        if (c->n_blocks) memcpy(nb, c->blocks, (size_t)c->n_blocks * sizeof *nb);
        c->blocks = nb;
        c->blocks_cap = cap;
    }
    int slot;
    struct lf width;
    if (key < 0) {
        slot = add_ins(pl, &c->input, (struct ins){.op = I_ARG, .a = 0});
        width = (struct lf){0, 1, 0};
    } else {
        slot = partial ? emit_terms(pl, 1, t, n, e) : emit(pl, 1, e);
        const struct cinfo *in = &c->info[e->id];
        int vec = in->kind == K_VEC;
        if (partial) /* the hoisted terms only: one scalar per sequence unless one is a vector */
            for (int j = vec = 0; j < n; j++)
                if (c->info[t[j].e->id].kind == K_VEC) vec = 1;
        width = vec ? in->n : (struct lf){0, 0, 1};
    }
    if (slot < 0) return -1;
    int b = c->n_blocks++;
    c->blocks[b] = (struct cblock){.key = key, .partial = partial, .slot = slot, .width = width};
    return add_ins(pl, &c->step, (struct ins){.op = I_XP, .a = b, .label = key < 0 ? NULL : label_of(pl, e)});
}

static int trivial(const struct cl_expr *e)
{
    while (e->kind == CL_SLICE) e = e->a;
    return e->kind == CL_NAME;
}

static int emit_sum(struct planner *pl, int input, const struct cl_expr *e)
{
    struct term *t = malloc((size_t)pl->c->f->n_exprs * sizeof *t);
    if (!t) return pl->failed = 1, -1;
    int n = flatten(e, 1, t, 0), r;
    /* only terms that compute something are worth a block of their own: a hoisted name or a
     * slice of one is already in the projection */
    int nx = 0;
    for (int j = 0; !input && j < n; j++)
        nx += hoistable(&pl->c->info[t[j].e->id]) && !trivial(t[j].e);
    if (nx == 0) {
        r = emit_terms(pl, input, t, n, e);
    } else {
        /* the hoistable terms and the parameter vectors go to the projection as one block */
        struct term *h = malloc((size_t)n * sizeof *h), *s = malloc((size_t)(n + 1) * sizeof *s);
        int nh = 0, ns = 0;
        if (!h || !s) {
            free(h), free(s), free(t);
            return pl->failed = 1, -1;
        }
        for (int j = 0; j < n; j++) {
            const struct cinfo *in = &pl->c->info[t[j].e->id];
            if (hoistable(in) || in->dep == D_P) h[nh++] = t[j];
            else s[ns++] = t[j];
        }
        int xp = block(pl, e->id, 1, e, h, nh);
        /* the step: the block first, then the remaining terms (W_hh @ h folds into addmm when
         * the sum so far is a vector: addmm's addend cannot be one scalar per sequence) */
        r = xp;
        struct prog *p = &pl->c->step;
        double k = 0;
        int acc_vec = 0;
        for (int j = 0; j < nh; j++) acc_vec |= pl->c->info[h[j].e->id].kind == K_VEC;
        for (int j = 0; r >= 0 && j < ns; j++) {
            const struct cl_expr *x = s[j].e;
            const struct cinfo *in = &pl->c->info[x->id];
            if (in->kind == K_NUM) {
                k += s[j].sign * in->num;
            } else if (x->kind == CL_MATMUL && s[j].sign > 0 && acc_vec) {
                int w = emit(pl, 0, x->a), v = emit(pl, 0, x->b);
                r = w < 0 || v < 0 ? -1 : add_ins(pl, p, (struct ins){.op = I_ADDMM, .a = r, .b = v, .c = w, .label = label_of(pl, e)});
            } else {
                r = op2(pl, 0, s[j].sign > 0 ? I_ADD : I_SUB, r, emit(pl, 0, x), e);
                acc_vec |= in->kind == K_VEC;
            }
        }
        if (r >= 0 && k != 0) r = affine(pl, 0, r, 1.0, k, e);
        free(h);
        free(s);
    }
    free(t);
    return r;
}

static int is_pow2(double v)
{
    int ex;
    return v != 0 && isfinite(v) && fabs(frexp(v, &ex)) == 0.5;
}

static int emit_uncached(struct planner *pl, int input, const struct cl_expr *e)
{
    struct cfile *c = pl->c;
    const struct cinfo *in = &c->info[e->id];
    struct prog *p = input ? &c->input : &c->step;
    if (in->kind == K_NUM) return constant(pl, input, in->num, e);
    if (!input && hoistable(in) && e->kind != CL_SLICE && !(e->kind == CL_ADD || e->kind == CL_SUB) &&
        !(e->kind == CL_NAME && (c->syms[in->sym].kind == SY_INTER || c->syms[in->sym].kind == SY_NEXT)))
        return block(pl, e->kind == CL_NAME ? -1 : e->id, 0, e, NULL, 0);
    if (!input && hoistable(in) && (e->kind == CL_ADD || e->kind == CL_SUB))
        return block(pl, e->id, 0, e, NULL, 0);
    switch (e->kind) {
    case CL_NAME: {
        const struct csym *s = &c->syms[in->sym];
        switch (s->kind) {
        case SY_X: return add_ins(pl, p, (struct ins){.op = I_ARG, .a = 0});
        case SY_STATE: return add_ins(pl, p, (struct ins){.op = I_ARG, .a = 1 + s->index});
        case SY_PARAM: return add_ins(pl, p, (struct ins){.op = I_ARG, .a = 1 + c->cell.n_state + s->index});
        case SY_INTER:
        case SY_NEXT: {
            int r = emit(pl, input, s->def);
            if (r >= 0 && p->ins[r].op != I_ARG && p->ins[r].op != I_XP) p->ins[r].label = s->name;
            if (r >= 0 && p->ins[r].op == I_XP && p->ins[r].label) p->ins[r].label = s->name;
            return r;
        }
        default: break;
        }
        break;
    }
    case CL_CALL: {
        int a = emit(pl, input, e->args[0]);
        if (a < 0) return -1;
        if (cl_func_is_reduction(in->fn) && c->info[e->args[0]->id].kind == K_SCAL) return a;
        return add_ins(pl, p, (struct ins){.op = I_FN, .a = a, .b = in->fn, .label = label_of(pl, e)});
    }
    case CL_SLICE: {
        struct lf lo, hi;
        if (cc_size(c, e->b, &lo) || cc_size(c, e->c, &hi)) return -1;
        int a = emit(pl, input, e->a);
        if (a < 0) return -1;
        enum iop op = c->info[e->a->id].kind == K_MAT ? I_ROWSLICE : I_SLICE;
        return add_ins(pl, p, (struct ins){.op = op, .a = a, .lo = lo, .hi = hi, .label = label_of(pl, e)});
    }
    case CL_CONCAT: {
        if (e->n_args == 1) return emit(pl, input, e->args[0]);
        int *list = cl_alloc(c->f, (size_t)e->n_args * sizeof *list);
        if (!list) return pl->failed = 1, -1;
        for (int k = 0; k < e->n_args; k++)
            if ((list[k] = emit(pl, input, e->args[k])) < 0) return -1;
        return add_ins(pl, p, (struct ins){.op = I_CONCAT, .list = list, .n = e->n_args, .label = label_of(pl, e)});
    }
    case CL_NEG: return affine(pl, input, emit(pl, input, e->a), -1.0, 0.0, e);
    case CL_ADD:
    case CL_SUB: return emit_sum(pl, input, e);
    case CL_MUL:
    case CL_DIV: {
        const struct cinfo *a = &c->info[e->a->id], *b = &c->info[e->b->id];
        int mul = e->kind == CL_MUL;
        if (a->kind == K_NUM && mul) return affine(pl, input, emit(pl, input, e->b), a->num, 0.0, e);
        if (b->kind == K_NUM && (mul || is_pow2(b->num)))
            return affine(pl, input, emit(pl, input, e->a), mul ? b->num : 1.0 / b->num, 0.0, e);
        return op2(pl, input, mul ? I_MUL : I_DIV, emit(pl, input, e->a), emit(pl, input, e->b), e);
    }
    case CL_MATMUL: {
        int w = emit(pl, input, e->a), v = emit(pl, input, e->b);
        if (w < 0 || v < 0) return -1;
        return add_ins(pl, p, (struct ins){.op = I_MATMUL, .a = v, .c = w, .label = label_of(pl, e)});
    }
    default: break;
    }
    pl->failed = 1;
    return cl_error_at(c->f, e->line, e->col, "internal: cannot compile this expression"), -1;
}

static int emit(struct planner *pl, int input, const struct cl_expr *e)
{
    struct prog *p = input ? &pl->c->input : &pl->c->step;
    if (pl->failed) return -1;
    if (p->memo[e->id]) return p->memo[e->id] - 1;
    int line = pl->line;
    pl->line = e->line;
    int r = emit_uncached(pl, input, e);
    pl->line = line;
    if (r >= 0) p->memo[e->id] = r + 1;
    return r;
}

static void mark_live(struct cfile *c, const struct cl_expr *e)
{
    if (!e) return;
    if (e->kind == CL_NAME) {
        struct csym *s = &c->syms[c->info[e->id].sym];
        if ((s->kind == SY_INTER || s->kind == SY_NEXT) && !s->live) {
            s->live = 1;
            mark_live(c, s->def);
        }
        return;
    }
    if (e->kind != CL_SLICE) mark_live(c, e->b);
    mark_live(c, e->a);
    for (int k = 0; k < e->n_args; k++) mark_live(c, e->args[k]);
}

int cc_plan(struct cfile *c)
{
    struct planner pl = {.c = c};
    for (int k = 0; k < c->f->n_stmts; k++)
        if (c->f->stmts[k].line >= pl.n_lines) pl.n_lines = c->f->stmts[k].line + 1;
    pl.origins = cl_alloc(c->f, (size_t)(pl.n_lines + 1) * sizeof *pl.origins);
    if (!pl.origins) return tg_error(TG_ERR_NOMEM, "%s: out of memory compiling the cell", c->f->path), -1;
    int n = c->f->n_exprs > 0 ? c->f->n_exprs : 1;
    c->step.memo = cl_alloc(c->f, (size_t)n * sizeof *c->step.memo);
    c->input.memo = cl_alloc(c->f, (size_t)n * sizeof *c->input.memo);
    c->next_slot = cl_alloc(c->f, (size_t)c->cell.n_state * sizeof *c->next_slot);
    if (!c->step.memo || !c->input.memo || !c->next_slot)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory compiling the cell", c->f->path), -1;
    c->n_args = 1 + c->cell.n_state + c->cell.n_params;
    if (c->n_args > MAX_ARGS)
        return cl_error_at(c->f, 1, 1, "%d states and parameters; at most %d are supported",
                           c->n_args - 1, MAX_ARGS - 1), -1;
    /* the equations the next states depend on, in the file's order (so gates are recorded,
     * and drawn, in the order they are written), then the next states */
    for (int j = 0; j < c->cell.n_state; j++) mark_live(c, c->syms[c->next_sym[j]].def);
    for (int k = 0; k < c->n_syms; k++) {
        struct csym *s = &c->syms[k];
        if (s->kind != SY_INTER || !s->live) continue;
        int r = emit(&pl, 0, s->def);
        if (r < 0) return -1;
        struct ins *in = &c->step.ins[r];
        if (in->op != I_ARG && (in->op != I_XP || in->label)) in->label = s->name;
        if (in->op == I_XP && c->input.ins[c->blocks[in->a].slot].op != I_ARG)
            c->input.ins[c->blocks[in->a].slot].label = s->name; /* gi: the projection itself */
    }
    for (int j = 0; j < c->cell.n_state; j++) {
        const struct csym *s = &c->syms[c->next_sym[j]];
        int r = emit(&pl, 0, s->def);
        if (r < 0) return -1;
        if (c->step.ins[r].op != I_ARG) c->step.ins[r].label = s->name;
        c->next_slot[j] = r;
    }
    if (pl.failed) return -1;
    c->input_out = -1;
    int only_x = c->n_blocks == 1 && c->blocks[0].key < 0;
    if (c->n_blocks > MAX_CONCAT)
        return cl_error_at(c->f, 1, 1, "%d expressions to hoist into the input projection; at most %d "
                           "are supported", c->n_blocks, MAX_CONCAT), -1;
    if (c->n_blocks > 1) {
        int *list = cl_alloc(c->f, (size_t)c->n_blocks * sizeof *list);
        if (!list) return tg_error(TG_ERR_NOMEM, "%s: out of memory", c->f->path), -1;
        for (int b = 0; b < c->n_blocks; b++) list[b] = c->blocks[b].slot;
        c->input_out = add_ins(&pl, &c->input, (struct ins){.op = I_CONCAT, .list = list, .n = c->n_blocks});
    } else if (c->n_blocks == 1 && !only_x) {
        c->input_out = c->blocks[0].slot;
    }
    return pl.failed ? -1 : 0;
}

/* ------------------------------------------------------------ execution */

static struct tg_tensor *run_ins(const struct cfile *c, const struct ins *in, struct tg_tensor **s,
                                 struct tg_tensor *const *args, int H, int I, struct tg_tape *t,
                                 enum tg_dtype dt)
{
    struct tg_tensor *a = s[in->a];
    switch (in->op) {
    case I_ARG: return args[in->a];
    case I_XP: {
        if (c->input_out < 0 || c->n_blocks == 1) return args[0];
        long long off = 0;
        for (int b = 0; b < in->a; b++) off += lf_eval(c->blocks[b].width, H, I);
        long long w = lf_eval(c->blocks[in->a].width, H, I);
        return tg_slice(t, args[0], 1, (int)off, (int)(off + w));
    }
    case I_MATMUL: return tg_matmul(t, a, s[in->c], 0, 1);
    case I_ADDMM: return tg_addmm(t, a, s[in->b], s[in->c], 0, 1);
    case I_ADD: return tg_add(t, a, s[in->b]);
    case I_SUB: return tg_sub(t, a, s[in->b]);
    case I_MUL: return tg_mul(t, a, s[in->b]);
    case I_DIV: return tg_div(t, a, s[in->b]);
    case I_AFFINE: return tg_affine(t, a, in->alpha, in->beta);
    case I_FN:
        if (in->b == TG_OP_ROW_SUM) return tg_row_sum(t, a);
        if (in->b == TG_OP_ROW_MEAN) return tg_row_mean(t, a);
        return tg_ew_apply(t, (enum tg_op)in->b, a, NULL);
    case I_SLICE:
    case I_ROWSLICE:
        if (!a) return NULL;
        return tg_slice(t, a, in->op == I_SLICE, (int)lf_eval(in->lo, H, I), (int)lf_eval(in->hi, H, I));
    case I_CONCAT: {
        struct tg_tensor *xs[MAX_CONCAT];
        for (int k = 0; k < in->n; k++) xs[k] = s[in->list[k]];
        return tg_concat(t, 1, in->n, xs);
    }
    case I_CONST: {
        struct tg_tensor *k = tg_tensor_new(t, 1, 1, dt);
        if (k) tg_set(k, 0, 0, in->alpha);
        return k;
    }
    }
    return NULL;
}

static struct tg_tensor *run(const struct cfile *c, const struct prog *p, int out_slot,
                             struct tg_tensor *const *args, int H, int I, struct tg_tape *t,
                             struct tg_tensor **outs, const int *out_slots, int n_out)
{
    /* slots on the stack, so a file cell's tape holds exactly what the C cell's holds */
    struct tg_tensor *stack[256], **s = stack;
    if (p->n > 256 && !(s = tg_tape_alloc(t, (size_t)p->n * sizeof *s))) return NULL;
    enum tg_dtype dt = args[0] ? args[0]->dtype : TG_F64;
    int pass = c->input_out < 0 || c->n_blocks == 1;
    const char *origin = NULL;
    for (int k = 0; k < p->n; k++) {
        const struct ins *in = &p->ins[k];
        if (in->origin != origin) tg_tape_set_origin(t, origin = in->origin); /* FILE:LINE */
        s[k] = run_ins(c, in, s, args, H, I, t, dt);
        if (!s[k]) return NULL;
        if (in->label && in->op != I_ARG && !(in->op == I_XP && pass)) tg_tensor_set_name(s[k], in->label);
    }
    tg_tape_set_origin(t, c->cell.name); /* as the sequence model set it */
    for (int j = 0; j < n_out; j++) outs[j] = s[out_slots[j]];
    return out_slot >= 0 ? s[out_slot] : NULL;
}

static void file_step(const void *ctx, int in, int hidden, struct tg_tape *t,
                      struct tg_tensor *const *w, struct tg_tensor *x,
                      struct tg_tensor *const *state, struct tg_tensor **next)
{
    const struct cfile *c = ctx;
    int ns = c->cell.n_state;
    struct tg_tensor *args[MAX_ARGS];
    args[0] = x;
    for (int k = 0; k < ns; k++) args[1 + k] = state[k];
    for (int k = 0; k < c->cell.n_params; k++) args[1 + ns + k] = w[k];
    run(c, &c->step, -1, args, hidden, in, t, next, c->next_slot, ns);
}

static struct tg_tensor *file_input(const void *ctx, int in, int hidden, struct tg_tape *t,
                                    struct tg_tensor *const *w, struct tg_tensor *X)
{
    const struct cfile *c = ctx;
    int ns = c->cell.n_state;
    struct tg_tensor *args[MAX_ARGS];
    args[0] = X;
    for (int k = 0; k < ns; k++) args[1 + k] = NULL;
    for (int k = 0; k < c->cell.n_params; k++) args[1 + ns + k] = w[k];
    return run(c, &c->input, c->input_out, args, hidden, in, t, NULL, NULL, 0);
}

static enum tg_status file_check(const void *ctx, int in, int hidden)
{
    return cc_check_sizes(ctx, hidden, in) ? TG_ERR_FORMAT : TG_OK;
}

/* ------------------------------------------------------------ the API */

static const struct cfile *as_file(const struct tg_cell *cell)
{
    const struct cfile *c = (const struct cfile *)cell;
    return cell && cell->step_ctx == file_step && c->magic == CFILE_MAGIC ? c : NULL;
}

void tg_cell_free(struct tg_cell *cell)
{
    struct cfile *c = (struct cfile *)cell;
    if (!as_file(cell)) return;
    cl_file_free(c->f);
    free(c->name);
    free(c->equations);
    free(c->params);
    free(c->syms);
    free(c->state_sym);
    free(c->next_sym);
    free(c->info);
    free(c);
}

const char *tg_cell_source(const struct tg_cell *cell, size_t *len)
{
    const struct cfile *c = as_file(cell);
    if (len) *len = c ? c->f->len : 0;
    return c ? c->f->text : NULL;
}

const char *tg_cell_state_name(const struct tg_cell *cell, int k)
{
    const struct cfile *c = as_file(cell);
    return c && k >= 0 && k < cell->n_state ? c->syms[c->state_sym[k]].name : NULL;
}

int tg_cell_same_source(const struct tg_cell *a, const struct tg_cell *b)
{
    size_t na, nb;
    const char *sa = tg_cell_source(a, &na), *sb = tg_cell_source(b, &nb);
    return sa && sb && na == nb && memcmp(sa, sb, na) == 0;
}

const char *tg_cell_path(const struct tg_cell *cell)
{
    const struct cfile *c = as_file(cell);
    return c ? c->f->path : NULL;
}

/* "name" from "dir/name.cell" */
static char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 5 && strcmp(b + n - 5, ".cell") == 0) n -= 5;
    char *s = malloc(n + 1);
    if (s) memcpy(s, b, n), s[n] = 0;
    return s;
}

/* The equations, one per line, as written (comments dropped), for titles and --help. */
static char *equations_of(const struct cl_file *f)
{
    size_t n = 0;
    char *out = malloc(f->len + 2);
    if (!out) return NULL;
    for (int k = 0; k < f->n_stmts; k++) {
        const struct cl_stmt *s = &f->stmts[k];
        if (s->kind != CL_S_ASSIGN) continue;
        char buf[512];
        struct cl_expr whole = {.start = 0, .end = 0};
        /* the line's text from the target to the end of the expression */
        const char *line = f->text;
        int ln = 1;
        while (ln < s->line && *line) {
            if (*line++ == '\n') ln++;
        }
        whole.start = (int)(line - f->text);
        whole.end = s->expr->end;
        cl_expr_text(f, &whole, buf, sizeof buf);
        size_t m = strlen(buf);
        if (n + m + 2 > f->len + 1) break;
        if (n) out[n++] = '\n';
        memcpy(out + n, buf, m);
        n += m;
    }
    out[n] = 0;
    return out;
}

struct tg_cell *tg_cell_parse(const char *text, size_t len, const char *path)
{
    if (!path) path = "<cell>";
    struct cl_file *f = cl_parse(text ? text : "", text ? len : 0, path);
    if (!f) return NULL;
    struct cfile *c = calloc(1, sizeof *c);
    int n_decl = 0, n_syms = 3;
    for (int k = 0; k < f->n_stmts; k++) {
        n_decl += f->stmts[k].n_decls;
        n_syms += f->stmts[k].n_decls + 1;
    }
    if (c) {
        c->f = f;
        c->magic = CFILE_MAGIC;
        c->params = calloc((size_t)n_decl + 1, sizeof *c->params);
        c->syms = calloc((size_t)n_syms, sizeof *c->syms);
        c->state_sym = calloc((size_t)n_decl + 1, sizeof *c->state_sym);
        c->next_sym = calloc((size_t)n_decl + 1, sizeof *c->next_sym);
        c->info = calloc((size_t)f->n_exprs + 1, sizeof *c->info);
        c->name = base_name(path);
        c->cell.step_ctx = file_step; /* so tg_cell_free recognises it from here on */
    }
    if (!c || !c->params || !c->syms || !c->state_sym || !c->next_sym || !c->info || !c->name) {
        if (c) tg_cell_free(&c->cell);
        else cl_file_free(f);
        tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    for (int j = 0; j <= n_decl; j++) c->next_sym[j] = -1;
    c->cell.name = c->name;
    if (cc_analyze(c) || cc_plan(c)) {
        tg_cell_free(&c->cell);
        return NULL;
    }
    c->equations = equations_of(f);
    if (!c->equations) {
        tg_cell_free(&c->cell);
        tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    c->cell.equations = c->equations;
    c->cell.gates = 1;
    c->cell.params = c->params;
    c->cell.ctx = c;
    c->cell.input_ctx = c->input_out >= 0 ? file_input : NULL;
    c->cell.check = file_check;
    return &c->cell;
}

struct tg_cell *tg_cell_load(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        tg_error(TG_ERR_IO, "%s: cannot open the cell file: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= (1u << 24)) break;
            cap = cap ? 2 * cap : 4096;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(fp);
                tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        tg_error(TG_ERR_IO, "%s: read error", path);
        return NULL;
    }
    struct tg_cell *c = tg_cell_parse(buf ? buf : "", len, path);
    free(buf);
    return c;
}
