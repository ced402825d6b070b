/* cmd_check.c — `tapegrad check`: is back-propagation through time by autodiff right?
 *
 * For one cell it builds a small float64 sequence model (L stacked layers unrolled over T steps,
 * a linear output layer, softmax cross-entropy summed over all T·B positions) with random
 * parameters and data from a seed, and compares the gradient of every parameter tensor from
 * tg_backward on the unrolled tape against two independent references:
 *
 *   manual  the hand-derived BPTT recursions of models/manual/ (rnn_tanh, lstm, gru, gru_cho):
 *           rel = max_i |a_i − m_i| / max_i |m_i| over the tensor (max |a − m| if m ≡ 0);
 *           they agree when rel ≤ 1e-10 (the two differ only in rounding order).
 *   FD      central finite differences of the loss, the 4-point stencil
 *               ∂L/∂θ ≈ [L(θ−2h) − 8 L(θ−h) + 8 L(θ+h) − L(θ+2h)] / 12h,  h = 1e-3·max(1, |θ|),
 *           whose truncation error is O(h⁴), so round-off (≈ ε·|L|/h) dominates: per element
 *               rel = |a − n| / max(|a|, |n|, 1e-3·max(1, |L|))
 *           (the floor, scaled like that round-off, keeps gradients that are zero up to
 *           round-off from looking large); they agree when every rel ≤ 1e-6. An estimate is
 *           only kept when the estimate with h/8 confirms it; elements whose stencil straddles
 *           a kink (relu at 0) are detected that way and skipped (and counted).
 *
 * When something disagrees, the comparison is rerun on prefixes of the sequence: the loss summed
 * over steps 1..t' only, for t' = 1, 2, …, T. The first t' at which the gradients differ is the
 * time step whose loss term (back-propagated through steps t', t'−1, …, 1) brings the error in.
 * Within the first disagreeing tensor the worst element is located in its gate block: stacked
 * weights hold G blocks of H rows (biases G blocks of H columns) in the cell's gate order.
 *
 * --perturb is a self-test of that report: it adds a small number to one element of autodiff's
 * gradient in every run whose loss covers step --perturb-step or later, which is what a bug that
 * first matters at that step looks like, and the report must find the tensor, step and block. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tapegrad_models.h"
#include "tapegrad_manual.h"
#include "tapegrad_deriv.h"

#define MANUAL_TOL 1e-10
#define FD_TOL 1e-6
#define FD_FLOOR 1e-3
#define FD_STEP 1e-3

static const char CMD[] = "check";
static const char USAGE[] =
    "--cell NAME [--steps T] [--batch B] [--input I] [--hidden H] [--layers L] [--vocab V] "
    "[--seed S] [--derivation FILE.adj]";

/* ------------------------------------------------------------ gate names */

/* Names of the gate blocks stacked in a parameter's rows (biases: columns), in the cell's order,
 * and of the parts of a weight's columns when its input is a concatenation. param NULL: every
 * parameter of the cell. Only for reports: a user's cell without an entry gets "block k". */
struct gate_names { const char *cell, *param, *blocks, *cols; };

static const struct gate_names gate_table[] = {
    {"lstm", NULL, "i,f,g,o", NULL},
    {"gru", NULL, "r,z,n", NULL},
    {"gru_cho", "weight", "u,r,c", "h (r*h in block c),x"},
    {"gru_cho", "bias", "u,r,c", NULL},
    {"lstm_peephole", "weight_if", "i,f", "c,h,x"},
    {"lstm_peephole", "bias_if", "i,f", NULL},
    {"lstm_peephole", "weight_g", "g", "h,x"},
    {"lstm_peephole", "bias_g", "g", NULL},
    {"lstm_peephole", "weight_o", "o", "c',h,x"},
    {"lstm_peephole", "bias_o", "o", NULL},
    {"lstm_coupled", NULL, "f,g,o", NULL},
    {"lstm_dlbook", NULL, "f,g,cell-input,q", NULL},
    {"mgu", "weight_f", "f", "h,x"},
    {"mgu", "bias_f", "f", NULL},
    {"mgu", "weight_h", "h~", "f*h,x"},
    {"mgu", "bias_h", "h~", NULL},
};

static const struct gate_names *gate_entry(const char *cell, const char *param)
{
    for (size_t i = 0; i < sizeof gate_table / sizeof gate_table[0]; i++) {
        const struct gate_names *g = &gate_table[i];
        if (strcmp(g->cell, cell) == 0 && (!g->param || strcmp(g->param, param) == 0)) return g;
    }
    return NULL;
}

/* The k-th comma-separated item of list into buf ("" if there is none). */
static void list_item(const char *list, int k, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; list && *list; i++) {
        const char *end = strchr(list, ',');
        size_t len = end ? (size_t)(end - list) : strlen(list);
        if (i == k) {
            snprintf(buf, n, "%.*s", (int)len, list);
            return;
        }
        list = end ? end + 1 : list + len;
    }
}

/* ------------------------------------------------------------ the problem */

struct check {
    const struct tg_cell *cell;
    struct tg_model *m;
    int T, B, I, H, L, V;
    double *x;
    int32_t *y;
    int manual;                 /* enum tg_manual_cell, or -1: no oracle */
    int fd_elems;               /* FD: at most this many elements per tensor (0: all) */
    double fd_floor;            /* FD: floor of the relative error for the current loss */
    struct tg_tape *tape;       /* for autodiff */
    struct tg_tape *fd_tape;    /* no-grad, for the finite-difference evaluations */
    /* --perturb: autodiff's gradient of parameter pk gets +pby at element pidx when t' ≥ pstep */
    int pk, pstep;
    size_t pidx;
    double pby;
};

static struct tg_seq_batch batch(const struct check *c, int Tp)
{
    return (struct tg_seq_batch){.T = Tp, .B = c->B, .x = c->x, .labels = c->y};
}

/* Loss of the first Tp steps, forward only. */
static int eval_loss(struct check *c, int Tp, double *out)
{
    tg_tape_reset(c->fd_tape);
    struct tg_seq_batch b = batch(c, Tp);
    struct tg_seq_result r;
    if (tg_model_forward_from(c->m, c->fd_tape, &b, NULL, &r) != TG_OK) return -1;
    *out = tg_get(r.loss, 0, 0);
    return 0;
}

/* Autodiff: loss of the first Tp steps and every parameter's gradient (copied into g). */
static int autodiff(struct check *c, int Tp, double *loss, double **g)
{
    tg_tape_reset(c->tape);
    tg_model_zero_grad(c->m);
    struct tg_seq_batch b = batch(c, Tp);
    struct tg_seq_result r;
    if (tg_model_forward_from(c->m, c->tape, &b, NULL, &r) != TG_OK) return -1;
    if (tg_backward(c->tape, r.loss) != TG_OK) return -1;
    *loss = tg_get(r.loss, 0, 0);
    for (int k = 0; k < c->m->n_params; k++)
        memcpy(g[k], c->m->params[k]->grad, tg_nbytes(c->m->params[k]));
    if (c->pk >= 0 && Tp >= c->pstep) g[c->pk][c->pidx] += c->pby;
    return 0;
}

/* The hand-derived oracle on the same parameters and the first Tp steps. */
static int manual(struct check *c, int Tp, double *loss, double **g)
{
    struct tg_manual_dims d = {.T = Tp, .B = c->B, .In = c->I, .H = c->H, .L = c->L, .V = c->V};
    const double *params[128];
    int np = c->m->n_params;
    if (np > 128 || tg_manual_num_params((enum tg_manual_cell)c->manual, c->L) != np) {
        tg_error(TG_ERR_STATE, "manual oracle for %s has a different parameter list", c->cell->name);
        return -1;
    }
    for (int k = 0; k < np; k++) params[k] = c->m->params[k]->data;
    return tg_manual_bptt_f64((enum tg_manual_cell)c->manual, &d, params, c->x, c->y, NULL, NULL,
                              loss, g, NULL, NULL, NULL, NULL, NULL, NULL) == TG_OK ? 0 : -1;
}

/* The 4-point central estimate of ∂L/∂x[i] at step h (x[i] = v on entry and on return). */
static int stencil(struct check *c, int Tp, double *x, size_t i, double v, double step, double *out)
{
    volatile double vh = v + step * fmax(1.0, fabs(v)); /* snapped: v ± h is exact in binary */
    double h = vh - v, f[4];
    static const double mult[4] = {-2, -1, 1, 2};
    for (int j = 0; j < 4; j++) {
        x[i] = v + mult[j] * h;
        int bad = eval_loss(c, Tp, &f[j]);
        x[i] = v;
        if (bad) return -1;
    }
    *out = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h);
    return 0;
}

/* Central differences for every (or every stride-th) element of parameter k, loss of the first
 * Tp steps. num[i] gets the estimate, state[i]: 0 not checked, 1 checked, 2 skipped (kink);
 * c->fd_floor the floor of the relative error, FD_FLOOR·max(1, |L|).
 * Kinks (relu at 0): where L is smooth the estimates at h and h/8 agree to round-off; a kink
 * inside the stencil's window [−2h, 2h] shifts an estimate by about (slope jump)·(fraction of
 * the window past the kink), differently for the two widths. So: keep the h estimate when it
 * agrees with h/8; else keep h/8 when it agrees with h/64 (the kink lay between); else the
 * element sits on a kink and is skipped. */
static int finite_diff(struct check *c, int Tp, int k, double *num, unsigned char *state)
{
    struct tg_tensor *p = c->m->params[k];
    double *x = p->data, f0;
    size_t n = tg_numel(p), stride = 1;
    if (c->fd_elems > 0 && n > (size_t)c->fd_elems) stride = (n + (size_t)c->fd_elems - 1) / (size_t)c->fd_elems;
    memset(state, 0, n);
    if (eval_loss(c, Tp, &f0)) return -1;
    c->fd_floor = FD_FLOOR * fmax(1.0, fabs(f0));
    for (size_t i = 0; i < n; i += stride) {
        double v = x[i], e[3];
        state[i] = 2;
        for (int s = 0; s < 3; s++) {
            if (stencil(c, Tp, x, i, v, FD_STEP / (s == 0 ? 1 : s == 1 ? 8 : 64), &e[s])) return -1;
            if (s > 0 && fabs(e[s] - e[s - 1]) <= 0.1 * FD_TOL * fmax(fmax(fabs(e[s]), fabs(e[s - 1])), c->fd_floor)) {
                num[i] = e[s - 1];
                state[i] = 1;
                break;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------ comparisons */

struct diff {
    double abs, rel;  /* as defined in the header comment, per reference */
    size_t worst;     /* element of the largest |Δ| (manual) or largest rel (FD) */
    long checked, skipped;
};

static struct diff diff_manual(const double *a, const double *m, size_t n)
{
    struct diff d = {0};
    double scale = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - m[i]);
        if (!(e <= d.abs)) d.abs = e, d.worst = i; /* NaN counts as worst */
        scale = fmax(scale, fabs(m[i]));
    }
    d.rel = scale > 0 ? d.abs / scale : d.abs;
    d.checked = (long)n;
    return d;
}

static struct diff diff_fd(const double *a, const double *num, const unsigned char *state, size_t n,
                           double floor)
{
    struct diff d = {0};
    for (size_t i = 0; i < n; i++) {
        if (state[i] != 1) {
            d.skipped += state[i] == 2;
            continue;
        }
        double e = fabs(a[i] - num[i]), r = e / fmax(fmax(fabs(a[i]), fabs(num[i])), floor);
        if (isnan(r)) r = INFINITY;
        d.abs = fmax(d.abs, e);
        if (r > d.rel || d.checked == 0) d.rel = r, d.worst = i;
        d.checked++;
    }
    return d;
}

static int diff_ok(const struct diff *d, double tol) { return d->rel <= tol; }

/* PyTorch's shape of parameter k: biases are 1-D. */
static void shape_str(const struct tg_tensor *p, char *buf, size_t n)
{
    if (p->rows == 1) snprintf(buf, n, "(%d,)", p->cols);
    else snprintf(buf, n, "(%d, %d)", p->rows, p->cols);
}

/* Gate blocks per row-stacked weight or column-stacked bias of parameter k: G (0 if it has no
 * blocks, e.g. the output layer). */
static int param_blocks(const struct check *c, int k, int *by_rows)
{
    int ps = c->m->param_spec[k];
    if (ps < 0) return 0;
    const struct tg_param_shape *s = &c->cell->params[ps].shape;
    if (s->r_in == 0 && s->r_1 == 0 && s->r_h >= 1) return *by_rows = 1, s->r_h;
    if (s->r_h == 0 && s->r_in == 0 && s->r_1 == 1 && s->c_in == 0 && s->c_1 == 0 && s->c_h >= 1)
        return *by_rows = 0, s->c_h;
    return 0;
}

static const char *spec_name(const struct check *c, int k)
{
    int ps = c->m->param_spec[k];
    return ps < 0 ? "" : c->cell->params[ps].name;
}

/* Name of gate block b of parameter k: "f", or "block 2" for a cell without names. */
static void block_name(const struct check *c, int k, int b, char *buf, size_t n)
{
    const struct gate_names *g = gate_entry(c->cell->name, spec_name(c, k));
    char item[32];
    list_item(g ? g->blocks : NULL, b, item, sizeof item);
    if (item[0]) snprintf(buf, n, "%s", item);
    else snprintf(buf, n, "block %d", b);
}

/* "[7, 3]: gate block f (rows 6..11), unit 1; column 3 = h unit 3" */
static void describe(const struct check *c, int k, size_t i, char *buf, size_t n)
{
    const struct tg_tensor *p = c->m->params[k];
    int r = (int)(i / (size_t)p->cols), col = (int)(i % (size_t)p->cols), H = c->H, by_rows = 0;
    int used = p->rows == 1 ? snprintf(buf, n, "[%d]", col) : snprintf(buf, n, "[%d, %d]", r, col);
    if (used < 0 || (size_t)used >= n) return;
    const char *name = c->m->names[k];
    if (strcmp(name, "out.weight") == 0) {
        snprintf(buf + used, n - used, ": output class %d, hidden unit %d of the top layer", r, col);
        return;
    }
    if (strcmp(name, "out.bias") == 0) {
        snprintf(buf + used, n - used, ": output class %d", col);
        return;
    }
    int G = param_blocks(c, k, &by_rows);
    if (G > 0) {
        int at = by_rows ? r : col, b = at / H;
        char bn[32];
        block_name(c, k, b, bn, sizeof bn);
        used += snprintf(buf + used, n - used, ": gate block %s (%s %d..%d), unit %d", bn,
                         by_rows ? "rows" : "entries", b * H, b * H + H - 1, at % H);
    }
    if (p->rows == 1 || (size_t)used >= n) return;
    /* the column: which part of the (concatenated) input it multiplies */
    const struct gate_names *g = gate_entry(c->cell->name, spec_name(c, k));
    const char *parts = g && g->cols ? g->cols
                        : strcmp(spec_name(c, k), "weight_hh") == 0 ? "h" : "x";
    int in = c->m->param_layer[k] == 0 ? c->I : H, start = 0;
    for (int j = 0;; j++) {
        char part[48];
        list_item(parts, j, part, sizeof part);
        if (!part[0]) break;
        int w = strcmp(part, "x") == 0 ? in : H;
        if (col < start + w) {
            const char *what = strcmp(part, "x") == 0 && c->m->param_layer[k] > 0 ? "x (= h of the layer below)" : part;
            snprintf(buf + used, n - used, "; column %d multiplies %s unit %d", col, what, col - start);
            return;
        }
        start += w;
    }
}

/* ------------------------------------------------------------ localization */

/* Rerun on prefixes t' = 1..T and report the first at which some tensor disagrees. With a
 * failing manual comparison the oracle is the reference (every tensor, cheap); otherwise finite
 * differences on the tensors that failed them. Returns the step found, or 0. */
static int localize(struct check *c, const int *fail_m, const int *fail_f, double **ag,
                    double **ref, double *num, unsigned char *state)
{
    int np = c->m->n_params, use_manual = 0;
    for (int k = 0; k < np; k++) use_manual |= fail_m[k];
    const char *rname = use_manual ? "manual" : "finite differences";
    printf("\nlocating the first difference: the comparison against %s again, with the loss summed\n"
           "over steps 1..t' only (t' = 1, 2, ...); steps are numbered 1..%d\n", rname, c->T);
    for (int Tp = 1; Tp <= c->T; Tp++) {
        double la, lm;
        if (autodiff(c, Tp, &la, ag) || (use_manual && manual(c, Tp, &lm, ref))) {
            printf("  t' = %d: %s\n", Tp, tg_last_error());
            return 0;
        }
        for (int k = 0; k < np; k++) {
            const struct tg_tensor *p = c->m->params[k];
            size_t n = tg_numel(p);
            struct diff d;
            const double *cmp;
            if (use_manual) {
                d = diff_manual(ag[k], ref[k], n);
                cmp = ref[k];
                if (diff_ok(&d, MANUAL_TOL)) continue;
            } else {
                if (!fail_f[k]) continue;
                if (finite_diff(c, Tp, k, num, state)) {
                    printf("  t' = %d: %s\n", Tp, tg_last_error());
                    return 0;
                }
                d = diff_fd(ag[k], num, state, n, c->fd_floor);
                cmp = num;
                if (diff_ok(&d, FD_TOL)) continue;
            }
            char where[256], bn[32];
            describe(c, k, d.worst, where, sizeof where);
            if (Tp == 1)
                printf("  step 1 alone: %s differs (rel %.2e)\n", c->m->names[k], d.rel);
            else if (Tp == 2)
                printf("  step 1 alone agrees; steps 1..2: %s differs first (rel %.2e)\n",
                       c->m->names[k], d.rel);
            else
                printf("  steps 1..%d agree; steps 1..%d: %s differs first (rel %.2e)\n", Tp - 1, Tp,
                       c->m->names[k], d.rel);
            printf("  worst element %s\n", where);
            printf("  autodiff %.17g vs %s %.17g\n", ag[k][d.worst], rname, cmp[d.worst]);
            /* every block over the tolerance, in gate order */
            int by_rows = 0, G = param_blocks(c, k, &by_rows);
            if (G > 0) {
                double scale = 0; /* max |manual| over the tensor, as in diff_manual */
                for (size_t i = 0; use_manual && i < n; i++) scale = fmax(scale, fabs(ref[k][i]));
                if (scale == 0) scale = 1;
                printf("  gate blocks over the tolerance:");
                for (int b = 0; b < G; b++) {
                    int bad = 0;
                    for (size_t i = 0; i < n && !bad; i++) {
                        int at = by_rows ? (int)(i / (size_t)p->cols) : (int)(i % (size_t)p->cols);
                        if (at / c->H != b) continue;
                        if (use_manual)
                            bad = !(fabs(ag[k][i] - ref[k][i]) / scale <= MANUAL_TOL);
                        else if (state[i] == 1)
                            bad = !(fabs(ag[k][i] - num[i]) /
                                        fmax(fmax(fabs(ag[k][i]), fabs(num[i])), c->fd_floor) <= FD_TOL);
                    }
                    if (bad) {
                        block_name(c, k, b, bn, sizeof bn);
                        printf(" %s", bn);
                    }
                }
                printf("\n");
            }
            if (G > 0) {
                int at = by_rows ? (int)(d.worst / (size_t)p->cols) : (int)(d.worst % (size_t)p->cols);
                block_name(c, k, at / c->H, bn, sizeof bn);
                printf("first difference: time step %d, %s, gate block %s\n", Tp, c->m->names[k], bn);
            } else {
                printf("first difference: time step %d, %s\n", Tp, c->m->names[k]);
            }
            return Tp;
        }
    }
    printf("  no prefix disagrees on its own (the difference did not reproduce)\n");
    return 0;
}

/* ------------------------------------------------------------ the command */

static int parse_perturb(struct check *c, const char *spec)
{
    char name[128];
    const char *colon = strchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof name)
        return cli_fail(CMD, "--perturb expects NAME:ROW:COL or NAME:INDEX (e.g. rnn.weight_hh_l0:7:3), got '%s'", spec);
    snprintf(name, sizeof name, "%.*s", (int)(colon - spec), spec);
    int k = -1;
    for (int i = 0; i < c->m->n_params; i++)
        if (strcmp(c->m->names[i], name) == 0) k = i;
    if (k < 0)
        return cli_fail(CMD, "--perturb: no parameter '%s' in this model (e.g. %s, %s)", name,
                        c->m->names[0], c->m->names[c->m->n_params - 1]);
    const struct tg_tensor *p = c->m->params[k];
    long a = -1, b = -1;
    char extra;
    int got = sscanf(colon + 1, "%ld:%ld%c", &a, &b, &extra);
    if (p->rows == 1 && got == 1) b = a, a = 0;
    else if (got != 2)
        return cli_fail(CMD, "--perturb: '%s' needs %s after the name", spec,
                        p->rows == 1 ? ":INDEX" : ":ROW:COL");
    if (a < 0 || a >= p->rows || b < 0 || b >= p->cols)
        return cli_fail(CMD, "--perturb: element out of range for %s of shape (%d, %d)", name,
                        p->rows, p->cols);
    c->pk = k;
    c->pidx = (size_t)a * (size_t)p->cols + (size_t)b;
    return 0;
}

static void print_header(const struct check *c, unsigned long long seed)
{
    if (!strchr(c->cell->equations, '\n')) {
        printf("tapegrad check: %s — %s\n", c->cell->name, c->cell->equations);
    } else { /* a cell file's equations, one per line */
        printf("tapegrad check: %s (%s)\n  ", c->cell->name, tg_cell_path(c->cell));
        for (const char *p = c->cell->equations; *p; p++) {
            if (*p == '\n') fputs("\n  ", stdout);
            else putchar(*p);
        }
        putchar('\n');
    }
    printf("model: T=%d steps, B=%d sequences, I=%d inputs, H=%d hidden, L=%d layers, V=%d classes;"
           " float64, seed %llu\n", c->T, c->B, c->I, c->H, c->L, c->V, seed);
    printf("compares the gradient of every parameter from autodiff (tg_backward on the unrolled tape) with\n");
    if (c->manual >= 0)
        printf("  manual  hand-derived BPTT (models/manual/): rel = max|a-m| / max|m| over the tensor, agree if <= %.0e\n", MANUAL_TOL);
    else
        printf("  manual  no oracle for %s (hand-derived BPTT exists for rnn_tanh, lstm, gru, gru_cho)\n", c->cell->name);
    printf("  FD      central differences, 4-point stencil, h = %.0e*max(1,|p|), confirmed with h/8:\n"
           "          rel = max over elements of |a-n| / max(|a|, |n|, %.0e*max(1,|loss|)), agree if <= %.0e\n",
           FD_STEP, FD_FLOOR, FD_TOL);
    /* the gate order, once for the cell or per weight when the weights differ */
    const struct gate_names *g = gate_entry(c->cell->name, c->cell->params[0].name);
    if (g && !g->param) {
        printf("gate blocks, in the order of the stacked weight rows: %s\n", g->blocks);
    } else if (g) {
        printf("gate blocks:");
        for (int s = 0; s < c->cell->n_params; s++) {
            const char *pn = c->cell->params[s].name;
            const struct gate_names *e = gate_entry(c->cell->name, pn);
            if (e && e->cols) printf(" %s rows %s, columns [%s];", pn, e->blocks, e->cols);
        }
        printf("\n");
    }
    printf("legend: abs = max |difference| over the tensor; rel as above; 'ok' agrees, 'FAIL' does not;\n"
           "        FD checks every element (n), except those at a kink such as relu's at 0 (skipped)\n\n");
}

static int run(struct check *c, unsigned long long seed)
{
    int np = c->m->n_params, rc = 1;
    double **ag = calloc((size_t)np, sizeof *ag), **mg = calloc((size_t)np, sizeof *mg);
    int *fail_m = calloc((size_t)np, sizeof *fail_m), *fail_f = calloc((size_t)np, sizeof *fail_f);
    size_t maxn = 0;
    for (int k = 0; k < np; k++) maxn = maxn > tg_numel(c->m->params[k]) ? maxn : tg_numel(c->m->params[k]);
    double *num = malloc(maxn * sizeof *num);
    unsigned char *state = malloc(maxn);
    if (!ag || !mg || !fail_m || !fail_f || !num || !state) goto nomem;
    for (int k = 0; k < np; k++) {
        ag[k] = malloc(tg_nbytes(c->m->params[k]));
        mg[k] = malloc(tg_nbytes(c->m->params[k]));
        if (!ag[k] || !mg[k]) goto nomem;
    }

    double la = 0, lm = 0;
    if (autodiff(c, c->T, &la, ag)) {
        rc = cli_fail(CMD, "autodiff failed: %s", tg_last_error());
        goto out;
    }
    if (c->manual >= 0 && manual(c, c->T, &lm, mg)) {
        rc = cli_fail(CMD, "manual BPTT failed: %s", tg_last_error());
        goto out;
    }
    print_header(c, seed);
    printf("%-22s %-10s %-25s  %s\n", "", "", "autodiff vs manual", "autodiff vs finite differences");
    printf("%-22s %-10s %-9s  %-9s       %-9s  %-9s      %5s %7s\n", "parameter", "shape", "abs", "rel",
           "abs", "rel", "n", "skipped");
    int bad_m = 0, bad_f = 0;
    long n_checked = 0, n_skipped = 0;
    for (int k = 0; k < np; k++) {
        const struct tg_tensor *p = c->m->params[k];
        size_t n = tg_numel(p);
        char shape[32], mcol[64];
        shape_str(p, shape, sizeof shape);
        if (c->manual >= 0) {
            struct diff dm = diff_manual(ag[k], mg[k], n);
            fail_m[k] = !diff_ok(&dm, MANUAL_TOL);
            bad_m += fail_m[k];
            snprintf(mcol, sizeof mcol, "%-9.2e  %-9.2e %-4s", dm.abs, dm.rel, fail_m[k] ? "FAIL" : "ok");
        } else {
            snprintf(mcol, sizeof mcol, "%-25s", "-          no oracle");
        }
        if (finite_diff(c, c->T, k, num, state)) {
            rc = cli_fail(CMD, "finite differences failed: %s", tg_last_error());
            goto out;
        }
        struct diff df = diff_fd(ag[k], num, state, n, c->fd_floor);
        fail_f[k] = !diff_ok(&df, FD_TOL);
        bad_f += fail_f[k];
        n_checked += df.checked;
        n_skipped += df.skipped;
        printf("%-22s %-10s %s  %-9.2e  %-9.2e %-4s %5ld %5ld\n", c->m->names[k], shape, mcol, df.abs,
               df.rel, fail_f[k] ? "FAIL" : "ok", df.checked, df.skipped);
    }
    int loss_bad = 0;
    if (c->manual >= 0) {
        double e = fabs(la - lm), rel = e / fmax(fabs(lm), 1e-300);
        loss_bad = !(rel <= MANUAL_TOL);
        printf("%-22s %-10s %-9.2e  %-9.2e %-4s   autodiff %.17g, manual %.17g\n", "loss", "()", e, rel,
               loss_bad ? "FAIL" : "ok", la, lm);
    } else {
        printf("%-22s %-10s autodiff %.17g (no oracle to compare with)\n", "loss", "()", la);
    }

    if (bad_m || bad_f || loss_bad) {
        if (bad_m || bad_f) localize(c, fail_m, fail_f, ag, mg, num, state);
        printf("\nverdict: FAIL — autodiff disagrees with %s%s%s on %d of %d tensors%s\n",
               bad_m ? "the hand-derived BPTT" : "", bad_m && bad_f ? " and with " : "",
               bad_f ? "finite differences" : "", bad_m > bad_f ? bad_m : bad_f, np,
               loss_bad ? " (and the losses differ)" : "");
        rc = 1;
    } else {
        printf("\nverdict: PASS — autodiff agrees with %sfinite differences on all %d tensors "
               "(%ld elements by FD, %ld skipped at kinks)\n",
               c->manual >= 0 ? "the hand-derived BPTT and with " : "", np, n_checked, n_skipped);
        rc = 0;
    }
    goto out;
nomem:
    rc = cli_fail(CMD, "out of memory");
out:
    for (int k = 0; ag && mg && k < np; k++) free(ag[k]), free(mg[k]);
    free(ag), free(mg), free(fail_m), free(fail_f), free(num), free(state);
    return rc;
}

static void print_definitions(void)
{
    printf("\nWhat is compared (float64 throughout): the gradient of every parameter from autodiff\n"
           "(tg_backward on the unrolled tape) against\n"
           "  manual  hand-derived BPTT (rnn_tanh, lstm, gru, gru_cho only):\n"
           "          rel = max|a - m| / max|m| over the tensor; agree if rel <= %.0e\n"
           "  FD      central finite differences (4-point stencil, h = %.0e*max(1,|p|)):\n"
           "          rel = max over elements of |a - n| / max(|a|, |n|, %.0e*max(1,|loss|));\n"
           "          agree if rel <= %.0e. An estimate counts only when the one with h/8 agrees\n"
           "          with it (or h/8 with h/64); otherwise the element sits on a kink (relu at 0)\n"
           "          and is skipped.\n"
           "Parameters are drawn U(-2/sqrt(H), 2/sqrt(H)), inputs U(-1, 1), labels uniform in [0, V).\n"
           "On a disagreement the comparison is rerun with the loss of steps 1..t' only, t' = 1, 2, ...,\n"
           "and the first t' and the gate block of the worst element are reported.\n"
           "Self-test of that report: --perturb adds --perturb-by to one element of autodiff's\n"
           "gradient whenever the loss covers step --perturb-step or later; check must then fail and\n"
           "name that tensor, step and block.\n"
           "Exit status: 0 all agree, 1 a disagreement or an error.\n",
           MANUAL_TOL, FD_STEP, FD_FLOOR, FD_TOL);
}

/* --derivation: models/deriv_check.c on the same random problem (a built-in name means its
 * shipped cell file). */
static int check_derivation(const char *cell_name, const char *path, int T, int B, int I, int H, int L, int V, long seed)
{
    struct tg_cell *cell = cli_cell_file(CMD, cell_name);
    if (!cell) return 2;
    struct tg_deriv_opts o = {.T = T, .B = B, .I = I, .H = H, .L = L, .V = V, .seed = (unsigned long long)seed};
    int rc = tg_deriv_check(cell, path, NULL, &o, stdout);
    if (rc >= 2) { /* an error in the file (2) or any other (3): exit 2, not 1 (a wrong line) */
        fflush(stdout);
        fprintf(stderr, "%s\n", tg_last_error());
        rc = 2;
    }
    tg_cell_free(cell);
    return rc;
}

int cmd_check(int argc, char **argv)
{
    const char *cell_name = NULL, *perturb = NULL, *derivation = NULL;
    int T = 5, B = 3, I = 4, H = 6, L = 2, V = 5, fd_elems = 0, pstep = 1;
    long seed = 1;
    double pby = 1e-4;
    int anomaly = 0;
    const struct cli_flag flags[] = {
        {"cell", CLI_STR, &cell_name, "cell to check (required): rnn_tanh, rnn_relu, lstm, gru, gru_cho, ...", 1, 0},
        {"steps", CLI_INT, &T, "time steps T (default 5)", 1, 10000},
        {"batch", CLI_INT, &B, "sequences per batch B (default 3)", 1, 10000},
        {"input", CLI_INT, &I, "input width I (default 4)", 1, 100000},
        {"hidden", CLI_INT, &H, "hidden units H (default 6)", 1, 100000},
        {"layers", CLI_INT, &L, "stacked layers L (default 2)", 1, 16},
        {"vocab", CLI_INT, &V, "output classes V of the softmax (default 5)", 2, 100000},
        {"seed", CLI_LONG, &seed, "random seed for parameters, inputs and labels (default 1)", 0, 9.2e18},
        {"fd-elems", CLI_INT, &fd_elems, "FD: check at most N elements per tensor, evenly spread (default 0: all)", 0, 1e9},
        {"perturb", CLI_STR, &perturb, "self-test of the report: NAME:ROW:COL (or NAME:INDEX) of autodiff's gradient to perturb", 1, 0},
        {"perturb-step", CLI_INT, &pstep, "... from time step S on (1..T, default 1)", 1, 10000},
        {"perturb-by", CLI_DOUBLE, &pby, "... by this amount (default 1e-4)", -1e300, 1e300},
        {"detect-anomaly", CLI_BOOL, &anomaly, "stop at the first NaN/inf in forward or backward and say where", 1, 0},
        {"derivation", CLI_STR, &derivation, "run FILE.adj (a hand derivation, or `tapegrad adjoint`'s) for t = T ... 1 "
                                             "and compare it line by line with autodiff (exit 0 pass, 1 a wrong line, 2 an error in the file)", 1, 0},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    int pr = cli_parse(CMD, USAGE, argc, argv, flags, nf);
    if (pr < 0) return 1;
    if (pr > 0) {
        print_definitions();
        return 0;
    }
    if (!cell_name) return cli_fail(CMD, "--cell is required (one of: %s)", tg_cell_names());
    if (derivation) return check_derivation(cell_name, derivation, T, B, I, H, L, V, seed);
    if (perturb && pstep > T)
        return cli_fail(CMD, "--perturb-step %d is beyond --steps %d", pstep, T);
    struct tg_cell *owned;
    const struct tg_cell *cell = cli_cell(CMD, cell_name, &owned);
    if (!cell) return 1;

    struct check c = {.cell = cell, .T = T, .B = B, .I = I, .H = H, .L = L, .V = V,
                      .fd_elems = fd_elems, .pk = -1, .pstep = pstep, .pby = pby};
    /* a cell file gets the oracle of the built-in cell it restates (same parameters) */
    c.manual = !owned || cli_cell_is_builtin_layout(cell) ? tg_manual_cell_from_name(cell->name) : -1;
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L, .outputs = V,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    if (tg_model_new(&cfg, &c.m) != TG_OK) {
        cli_fail(CMD, "%s", tg_last_error());
        tg_cell_free(owned);
        return 1;
    }
    int rc = 1;
    c.x = malloc(sizeof *c.x * (size_t)T * B * I);
    c.y = malloc(sizeof *c.y * (size_t)T * B);
    c.tape = tg_tape_new(0);
    c.fd_tape = tg_tape_new(0);
    if (anomaly && c.tape && c.fd_tape) tg_tape_set_anomaly(c.tape, 1), tg_tape_set_anomaly(c.fd_tape, 1);
    if (!c.x || !c.y || !c.tape || !c.fd_tape) {
        rc = cli_fail(CMD, "out of memory for T=%d B=%d I=%d", T, B, I);
        goto out;
    }
    tg_tape_set_no_grad(c.fd_tape, 1);
    if (perturb && parse_perturb(&c, perturb)) goto out;

    /* Twice PyTorch's init range, so that gates leave their linear regime and the nonlinearities
     * are exercised; inputs in (−1, 1). */
    struct tg_rng r;
    tg_rng_seed(&r, (uint64_t)seed);
    double a = 2.0 / sqrt((double)H);
    for (int k = 0; k < c.m->n_params; k++) tg_tensor_uniform(c.m->params[k], &r, -a, a);
    for (size_t i = 0; i < (size_t)T * B * I; i++) c.x[i] = 2 * tg_rng_uniform(&r) - 1;
    for (size_t i = 0; i < (size_t)T * B; i++) c.y[i] = (int32_t)tg_rng_below(&r, (uint32_t)V);

    rc = run(&c, (unsigned long long)seed);
out:
    tg_tape_free(c.tape);
    tg_tape_free(c.fd_tape);
    free(c.x);
    free(c.y);
    tg_model_free(c.m);
    tg_cell_free(owned);
    return rc;
}
