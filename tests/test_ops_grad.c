/* test_ops_grad.c — every op against central finite differences in float64, and its float32
 * forward/backward against float64. Shapes are drawn from recorded seeds (printed on failure);
 * the table walk at the end fails if an op has no backward or no case here. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad.h"
#include "tapegrad_ops.h"
#include "op_util.h" /* the op table itself, for the coverage walk */
#include "tg_config.h"
#if TG_HAVE_OPENMP
#include <omp.h>
#endif

enum { MAXIN = 4 };

struct op_case {
    const char *label;
    int op;       /* the op under test (for the coverage walk) */
    int variant;  /* op-specific: transposes, axis, reduction, broadcast side */
    int nin;
    int shapes[MAXIN][2];
    double lo, hi;           /* input value range */
    int32_t labels[64];
    int nlabels;
    int skip_kinks;
    double step;  /* finite-difference step; 0: gradcheck's default 1e-3 */
    int fused;    /* run the op inside a fusion region (see apply_in_region): FUSED_* */
    double min_abs[MAXIN]; /* push input i's values to |v| ≥ min_abs (away from a kink or a pole) */
};

/* How a case runs its op in a fusion region (apply_in_region): not at all, with fusion on
 * keeping only a consumer of the op's result, lean (everything not kept is recomputed in
 * backward), or on keeping the op's result too (read back from memory, with a gradient from
 * inside and outside the region). */
enum { FUSED_NO = 0, FUSED_ON, FUSED_LEAN, FUSED_KEEP, FUSED_MODES };
static const char *const fused_names[FUSED_MODES] = {"", ", fused", ", fused lean",
                                                     ", fused, result kept"};

struct ctx {
    const struct op_case *c;
    struct tg_tensor *in[MAXIN];
    struct tg_tensor *R; /* fixed random weights: loss = Σ out ⊙ R for non-scalar outputs */
};

/* Fusion regions (autograd/fuse.c): the ops run as one TG_OP_FUSED node. */
static struct tg_tensor *apply_fused(struct tg_tape *t, int v, struct tg_tensor **x)
{
    tg_tape_fuse_begin(t);
    if (v == 0) { /* LSTM gate math: column slices read in place, c2 kept and reused inside */
        int h = x[1]->cols;
        struct tg_tensor *i = tg_sigmoid(t, tg_slice(t, x[0], 1, 0, h));
        struct tg_tensor *f = tg_sigmoid(t, tg_slice(t, x[0], 1, h, 2 * h));
        struct tg_tensor *g = tg_tanh(t, tg_slice(t, x[0], 1, 2 * h, 3 * h));
        struct tg_tensor *o = tg_sigmoid(t, tg_slice(t, x[0], 1, 3 * h, 4 * h));
        struct tg_tensor *c2 = tg_add(t, tg_mul(t, f, x[1]), tg_mul(t, i, g));
        struct tg_tensor *h2 = tg_mul(t, o, tg_tanh(t, c2));
        struct tg_tensor *keep[2] = {h2, c2};
        if (tg_tape_fuse_end(t, keep, 2) != TG_OK) return NULL;
        return tg_add(t, h2, tg_mul(t, c2, c2));
    }
    if (v == 1) { /* a broadcast row wanting a gradient, x⊙x, a dead result, a kept slice */
        int n = x[0]->cols;
        struct tg_tensor *a = tg_relu(t, tg_affine(t, x[0], 1.3, -0.2));
        struct tg_tensor *b = tg_sub(t, tg_mul(t, a, a), x[1]);
        (void)tg_tanh(t, x[0]); /* never used: compiled away */
        struct tg_tensor *e = tg_add(t, tg_mul(t, b, x[1]), x[1]);
        struct tg_tensor *sl = tg_slice(t, x[2], 1, 1, 1 + n);
        struct tg_tensor *keep[3] = {e, sl, x[0]};
        if (tg_tape_fuse_end(t, keep, 3) != TG_OK) return NULL;
        return tg_add(t, e, sl);
    }
    /* v == 2: a non-elementwise consumer and a change of shape split the region */
    struct tg_tensor *a = tg_sigmoid(t, x[0]);
    struct tg_tensor *c = tg_tanh(t, tg_matmul(t, a, x[1], 0, 0));
    struct tg_tensor *d = tg_mul(t, c, c);
    struct tg_tensor *e = tg_mul(t, a, tg_affine(t, a, -1, 1));
    struct tg_tensor *keep[2] = {d, e};
    if (tg_tape_fuse_end(t, keep, 2) != TG_OK) return NULL;
    return tg_add(t, tg_sum(t, d), tg_sum(t, e));
}

static struct tg_tensor *apply_op(struct tg_tape *t, const struct op_case *c, struct tg_tensor **x)
{
    int v = c->variant;
    if (c->op != TG_OP_AFFINE && tg_op_is_elementwise((enum tg_op)c->op) && !(c->op == TG_OP_MUL && v == 9))
        return tg_ew_apply(t, (enum tg_op)c->op, x[0], tg_op_arity((enum tg_op)c->op) == 2 ? x[1] : NULL);
    switch (c->op) {
    case TG_OP_MATMUL: return tg_matmul(t, x[0], x[1], v & 1, (v >> 1) & 1);
    case TG_OP_ADD: return tg_add(t, x[0], x[1]);
    case TG_OP_SUB: return tg_sub(t, x[0], x[1]);
    case TG_OP_MUL: return v == 9 ? tg_mul(t, x[0], x[0]) : tg_mul(t, x[0], x[1]);
    case TG_OP_AFFINE: return tg_affine(t, x[0], -1.7, 0.3);
    case TG_OP_TANH: return tg_tanh(t, x[0]);
    case TG_OP_SIGMOID: return tg_sigmoid(t, x[0]);
    case TG_OP_RELU: return tg_relu(t, x[0]);
    case TG_OP_CONCAT: return tg_concat(t, v, c->nin, x);
    case TG_OP_SLICE:
        return v == 0 ? tg_slice(t, x[0], 0, 1, x[0]->rows) : tg_slice(t, x[0], 1, 1, x[0]->cols - 1);
    case TG_OP_SOFTMAX_XENT: return tg_softmax_xent(t, x[0], c->labels, (enum tg_reduction)v);
    case TG_OP_MSE: return tg_mse(t, x[0], x[1], (enum tg_reduction)v);
    case TG_OP_SUM: return tg_sum(t, x[0]);
    case TG_OP_MEAN: return tg_mean(t, x[0]);
    case TG_OP_ROW_SUM: return tg_row_sum(t, x[0]);
    case TG_OP_ROW_MEAN: return tg_row_mean(t, x[0]);
    case TG_OP_EMBEDDING: return tg_embedding(t, x[0], c->labels, c->nlabels);
    case TG_OP_ADDMM: return tg_addmm(t, x[0], x[1], x[2], v & 1, (v >> 1) & 1);
    case -2: { /* overlapping row views of one tensor, each through its own consumer: their
                * gradients alias x's gradient rows and must add, not overwrite */
        struct tg_tensor *a = tg_tanh(t, tg_slice(t, x[0], 0, 0, 3));
        struct tg_tensor *b = tg_sigmoid(t, tg_slice(t, tg_slice(t, x[0], 0, 1, 4), 0, 0, 3));
        return tg_mul(t, a, b);
    }
    case TG_OP_FUSED: return apply_fused(t, v, x);
    case -1: { /* a long chain mixing ops: 60 steps of y = tanh(a·y ⊙ w + b) */
        struct tg_tensor *y = x[0];
        for (int i = 0; i < 60; i++) y = tg_tanh(t, tg_affine(t, tg_mul(t, y, x[1]), 1.1, 0.05));
        return y;
    }
    }
    return NULL;
}

/* The number of TG_OP_FUSED nodes on the tape. */
static int count_fused(const struct tg_tape *t)
{
    int n = 0;
    for (size_t i = 0; i < tg_tape_num_nodes(t); i++)
        n += tg_node_op(tg_tape_node(t, i)) == TG_OP_FUSED;
    return n;
}

/* The op inside a fusion region. Any op that is neither elementwise nor a row reduction reads
 * the region's pending x′ = 1·x + 0 (computing the region first) and its result feeds a second
 * region z = 0.5·y + 0.1. An elementwise op y = op(x…) is followed in the region by
 * z = 0.5·y + 0.1 (whose derivative reads nothing, so what op's own derivative reads — x, y or
 * b — must be recomputed, saved or read back, per mode); the region keeps z (and y with
 * FUSED_KEEP, whose gradient then also comes from tanh(y) outside). A row reduction cannot
 * join a region: it computes the region's tanh(x) first, and its B×1 result is then read as a
 * broadcast column by the next region: (tanh(x) − r) ⊙ r. With gradients on, the tape must
 * show fused nodes (finite differences run with no-grad, hence unfused: the reference). */
static struct tg_tensor *apply_in_region(struct tg_tape *t, const struct op_case *c,
                                         struct tg_tensor **x)
{
    int before = count_fused(t);
    tg_tape_set_fusion(t, c->fused == FUSED_LEAN ? TG_FUSION_LEAN : TG_FUSION_ON);
    tg_tape_fuse_begin(t);
    struct tg_tensor *out, *keep[2];
    int nk = 1;
    if (tg_op_is_elementwise((enum tg_op)c->op)) {
        struct tg_tensor *y = apply_op(t, c, x);
        struct tg_tensor *z = tg_affine(t, y, 0.5, 0.1);
        keep[0] = z;
        if (c->fused == FUSED_KEEP) keep[nk++] = y;
        if (tg_tape_fuse_end(t, keep, nk) != TG_OK) return NULL;
        out = c->fused == FUSED_KEEP ? tg_add(t, z, tg_tanh(t, y)) : z;
    } else if (c->op != TG_OP_ROW_SUM && c->op != TG_OP_ROW_MEAN) {
        /* any other op reads pending results of the region (x′ = 1·x + 0), which it computes
         * first, and its own result is read by the next region */
        struct tg_tensor *xp[MAXIN];
        for (int i = 0; i < c->nin; i++) xp[i] = tg_affine(t, x[i], 1.0, 0.0);
        struct tg_tensor *y = apply_op(t, c, xp);
        keep[0] = tg_affine(t, y, 0.5, 0.1);
        if (c->fused == FUSED_KEEP) keep[nk++] = y;
        if (tg_tape_fuse_end(t, keep, nk) != TG_OK) return NULL;
        out = c->fused == FUSED_KEEP ? tg_add(t, keep[0], tg_tanh(t, y)) : keep[0];
    } else {
        struct tg_tensor *a = tg_tanh(t, x[0]);
        struct tg_tensor *r = c->op == TG_OP_ROW_SUM ? tg_row_sum(t, a) : tg_row_mean(t, a);
        keep[0] = tg_mul(t, tg_sub(t, a, r), r);
        if (c->fused == FUSED_KEEP) keep[nk++] = a;
        if (tg_tape_fuse_end(t, keep, nk) != TG_OK) return NULL;
        out = c->fused == FUSED_KEEP ? tg_add(t, keep[0], tg_sigmoid(t, a)) : keep[0];
    }
    if (out && !tg_tape_no_grad(t) && count_fused(t) == before)
        fail_msg("%s%s: no fused node on the tape", c->label, fused_names[c->fused]);
    return out;
}

static struct tg_tensor *apply(struct tg_tape *t, const struct op_case *c, struct tg_tensor **x)
{
    if (c->fused) return apply_in_region(t, c, x);
    tg_tape_set_fusion(t, TG_FUSION_ON);
    return apply_op(t, c, x);
}

static struct tg_tensor *loss_fn(struct tg_tape *t, void *vctx)
{
    struct ctx *k = vctx;
    struct tg_tensor *out = apply(t, k->c, k->in);
    if (!out) return NULL;
    if (out->rows == 1 && out->cols == 1) return out;
    assert_true(k->R && k->R->rows == out->rows && k->R->cols == out->cols);
    return tg_sum(t, tg_mul(t, out, k->R));
}

/* Inputs in [lo, hi] drawn from the seed; R sized by a dry run of the op. */
static void make_ctx(struct ctx *k, const struct op_case *c, enum tg_dtype dt, uint64_t seed)
{
    struct tg_rng rng;
    tg_rng_seed(&rng, seed);
    memset(k, 0, sizeof *k);
    k->c = c;
    for (int i = 0; i < c->nin; i++) {
        k->in[i] = tg_tensor_new_heap(c->shapes[i][0], c->shapes[i][1], dt);
        assert_non_null(k->in[i]);
        tg_tensor_uniform(k->in[i], &rng, c->lo, c->hi);
        assert_int_equal(tg_tensor_set_requires_grad(k->in[i]), TG_OK);
    }
    if (c->op == TG_OP_RELU) { /* keep every input a margin away from the kink at 0 */
        for (size_t j = 0; j < tg_numel(k->in[0]); j++) {
            double v = tg_get(k->in[0], 0, (int)j);
            if (fabs(v) < 0.05) tg_set(k->in[0], 0, (int)j, v < 0 ? v - 0.05 : v + 0.05);
        }
    }
    for (int i = 0; i < c->nin; i++) { /* |v| ≥ min_abs: abs off its kink, a divisor off 0 */
        if (c->min_abs[i] <= 0) continue;
        for (int r = 0; r < k->in[i]->rows; r++)
            for (int q = 0; q < k->in[i]->cols; q++) {
                double v = tg_get(k->in[i], r, q);
                if (fabs(v) < c->min_abs[i]) tg_set(k->in[i], r, q, v < 0 ? v - c->min_abs[i] : v + c->min_abs[i]);
            }
    }
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *out = apply(t, c, k->in);
    if (!out) fail_msg("%s: op failed: %s", c->label, tg_last_error());
    if (!(out->rows == 1 && out->cols == 1)) {
        k->R = tg_tensor_new_heap(out->rows, out->cols, dt);
        tg_tensor_uniform(k->R, &rng, -1.0, 1.0);
    }
    tg_tape_free(t);
}

static void free_ctx(struct ctx *k)
{
    for (int i = 0; i < MAXIN; i++) tg_tensor_free(k->in[i]);
    tg_tensor_free(k->R);
}

/* Copy values of one context into another of the other dtype (inputs and R). */
static void copy_ctx(struct ctx *dst, const struct ctx *src)
{
    for (int i = 0; i < src->c->nin; i++) tg_tensor_copy(dst->in[i], src->in[i]);
    if (src->R) tg_tensor_copy(dst->R, src->R);
}

#define N_CASES 512
static struct op_case cases[N_CASES];
static int n_cases;
static double worst_rel_seen, worst_per_op[TG_OP_COUNT];

static struct op_case *add_case(const char *label, int op, int variant, int nin, double lo,
                                double hi)
{
    struct op_case *c = &cases[n_cases++];
    assert_true(n_cases <= N_CASES);
    memset(c, 0, sizeof *c);
    c->label = label;
    c->op = op;
    c->variant = variant;
    c->nin = nin;
    c->lo = lo;
    c->hi = hi;
    return c;
}

static void shape(struct op_case *c, int i, int r, int cols)
{
    c->shapes[i][0] = r;
    c->shapes[i][1] = cols;
}

/* Value ranges of the one-input elementwise ops: inside the domain (log, sqrt of positives)
 * and a margin off kinks (abs at 0; relu's margin is applied in make_ctx). An op not listed
 * takes [−2, 2]. */
static const struct { enum tg_op op; double lo, hi, min_abs; } ew_domain[] = {
    {TG_OP_AFFINE, -2, 2, 0},   {TG_OP_TANH, -3, 3, 0}, {TG_OP_SIGMOID, -6, 6, 0},
    {TG_OP_RELU, -2, 2, 0},     {TG_OP_EXP, -3, 3, 0},  {TG_OP_LOG, 0.2, 4, 0},
    {TG_OP_SQRT, 0.2, 4, 0},    {TG_OP_ABS, -2, 2, 0.05}, {TG_OP_SOFTPLUS, -6, 6, 0},
};

/* Shapes of a binary op's inputs (broadcast kinds), as (rows, cols) of a and b from m×n. */
enum { BC_SAME, BC_B_ROW, BC_A_ROW, BC_B_COL, BC_A_COL, BC_B_SCALAR, BC_A_SCALAR, BC_OUTER,
       BC_OUTER_REV, BC_ONE, BC_KINDS };
static const char *const bc_names[BC_KINDS] = {
    "m×n ∘ m×n", "m×n ∘ 1×n row", "1×n row ∘ m×n", "m×n ∘ m×1 column", "m×1 column ∘ m×n",
    "m×n ∘ 1×1 scalar", "1×1 scalar ∘ m×n", "m×1 column ∘ 1×n row", "1×n row ∘ m×1 column",
    "1×1 ∘ 1×1"};

static char label_buf[N_CASES][96];

/* Every elementwise op (drawn from the op table, so a new one gets cases without an edit
 * here) standalone and in a fusion region in each mode, on random shapes and on 1×1; the
 * binary ones in every broadcast (row, column, scalar, on either side, and column against
 * row); row_sum and row_mean likewise, including 1×n, m×1 and 1×1 inputs. */
static void build_ew_cases(void)
{
    struct tg_rng r;
    tg_rng_seed(&r, 20261203);
#define RND(n) (1 + (int)tg_rng_below(&r, n))
    for (int op = 0; op < TG_OP_COUNT; op++) {
        if (!tg_op_is_elementwise((enum tg_op)op)) continue;
        const char *name = tg_op_name((enum tg_op)op);
        if (tg_op_arity((enum tg_op)op) == 2) {
            for (int bc = 0; bc < BC_KINDS; bc++)
                for (int f = 0; f < FUSED_MODES; f++) {
                    int m = 1 + RND(4), n = 1 + RND(5);
                    snprintf(label_buf[n_cases], sizeof label_buf[0], "%s %s%s", name,
                             bc_names[bc], fused_names[f]);
                    struct op_case *c = add_case(label_buf[n_cases], op, bc, 2, -2, 2);
                    c->fused = f;
                    if (op == TG_OP_DIV) c->min_abs[1] = 0.5; /* |b| ≥ 0.5: y and dy/db tame */
                    int ar = m, ac = n, br = m, bcl = n;
                    switch (bc) {
                    case BC_B_ROW: br = 1; break;
                    case BC_A_ROW: ar = 1; break;
                    case BC_B_COL: bcl = 1; break;
                    case BC_A_COL: ac = 1; break;
                    case BC_B_SCALAR: br = bcl = 1; break;
                    case BC_A_SCALAR: ar = ac = 1; break;
                    case BC_OUTER: ac = 1, br = 1; break;
                    case BC_OUTER_REV: ar = 1, bcl = 1; break;
                    case BC_ONE: ar = ac = br = bcl = 1; break;
                    }
                    shape(c, 0, ar, ac);
                    shape(c, 1, br, bcl);
                }
            /* rows of 600: a fused region works in chunks of 256 (the last one partial), and
             * a column's or scalar's gradient sums over every chunk of its row */
            const int wide_bc[3] = {BC_B_COL, BC_A_SCALAR, BC_OUTER};
            for (int w = 0; w < 3; w++) {
                snprintf(label_buf[n_cases], sizeof label_buf[0], "%s %s, fused, 600 columns",
                         name, bc_names[wide_bc[w]]);
                struct op_case *c = add_case(label_buf[n_cases], op, wide_bc[w], 2, -2, 2);
                c->fused = FUSED_ON;
                if (op == TG_OP_DIV) c->min_abs[1] = 0.5;
                shape(c, 0, wide_bc[w] == BC_A_SCALAR ? 1 : 2, wide_bc[w] == BC_B_COL ? 600 : 1);
                shape(c, 1, wide_bc[w] == BC_OUTER ? 1 : 2, wide_bc[w] == BC_B_COL ? 1 : 600);
            }
            continue;
        }
        double lo = -2, hi = 2, min_abs = 0;
        for (size_t d = 0; d < sizeof ew_domain / sizeof ew_domain[0]; d++)
            if ((int)ew_domain[d].op == op)
                lo = ew_domain[d].lo, hi = ew_domain[d].hi, min_abs = ew_domain[d].min_abs;
        for (int f = 0; f < FUSED_MODES; f++)
            for (int one = 0; one < 2; one++) {
                snprintf(label_buf[n_cases], sizeof label_buf[0], "%s%s%s", name,
                         one ? " 1×1" : "", fused_names[f]);
                struct op_case *c = add_case(label_buf[n_cases], op, 0, 1, lo, hi);
                c->fused = f;
                c->min_abs[0] = min_abs;
                if (one) shape(c, 0, 1, 1);
                else shape(c, 0, RND(5), RND(7));
            }
    }
    /* softplus over a wide range: both branches of its stable form, far into the tails */
    struct op_case *c = add_case("softplus wide", TG_OP_SOFTPLUS, 0, 1, -30, 30);
    shape(c, 0, 4, 6);
    int rops[2] = {TG_OP_ROW_SUM, TG_OP_ROW_MEAN};
    for (int o = 0; o < 2; o++)
        for (int f = 0; f < FUSED_MODES; f++)
            for (int s = 0; s < 4; s++) { /* m×n, 1×n, m×1, 1×1 */
                static const char *sh[4] = {"", " 1×n", " m×1", " 1×1"};
                snprintf(label_buf[n_cases], sizeof label_buf[0], "%s%s%s",
                         tg_op_name((enum tg_op)rops[o]), sh[s], fused_names[f]);
                c = add_case(label_buf[n_cases], rops[o], 0, 1, -2, 2);
                c->fused = f;
                shape(c, 0, s & 1 ? 1 : 1 + RND(5), s & 2 ? 1 : 1 + RND(6));
            }
#undef RND
}

/* Sizes come from a recorded seed so failures reproduce; 1×1 and broadcast cases are explicit. */
static void build_cases(void)
{
    struct tg_rng r;
    tg_rng_seed(&r, 20261122);
#define RND(n) (1 + (int)tg_rng_below(&r, n))
    for (int v = 0; v < 4; v++) { /* every transpose combination */
        int m = RND(5), k = RND(5), n = RND(5);
        struct op_case *c = add_case("matmul", TG_OP_MATMUL, v, 2, -1, 1);
        shape(c, 0, v & 1 ? k : m, v & 1 ? m : k);
        shape(c, 1, v & 2 ? n : k, v & 2 ? k : n);
    }
    for (int v = 0; v < 8; v++) { /* addmm: every transpose pair, full addend and bias row */
        int m = 1 + RND(4), k = RND(5), n = RND(5);
        struct op_case *c = add_case(v & 4 ? "addmm (bias row)" : "addmm", TG_OP_ADDMM, v & 3, 3, -1, 1);
        shape(c, 0, v & 4 ? 1 : m, n);
        shape(c, 1, v & 1 ? k : m, v & 1 ? m : k);
        shape(c, 2, v & 2 ? n : k, v & 2 ? k : n);
    }
    struct op_case *c = add_case("matmul 1x1", TG_OP_MATMUL, 0, 2, -1, 1);
    shape(c, 0, 1, 1);
    shape(c, 1, 1, 1);
    int ops2[3] = {TG_OP_ADD, TG_OP_SUB, TG_OP_MUL};
    const char *names2[3] = {"add", "sub", "mul"};
    for (int o = 0; o < 3; o++) {
        int m = 1 + RND(4), n = RND(6);
        c = add_case(names2[o], ops2[o], 0, 2, -1, 1);
        shape(c, 0, m, n);
        shape(c, 1, m, n);
        c = add_case(names2[o], ops2[o], 1, 2, -1, 1); /* b is a broadcast row */
        shape(c, 0, m, n);
        shape(c, 1, 1, n);
        c = add_case(names2[o], ops2[o], 2, 2, -1, 1); /* a is a broadcast row */
        shape(c, 0, 1, n);
        shape(c, 1, m, n);
        c = add_case(names2[o], ops2[o], 3, 2, -1, 1); /* 1x1 */
        shape(c, 0, 1, 1);
        shape(c, 1, 1, 1);
    }
    c = add_case("mul x*x", TG_OP_MUL, 9, 1, -2, 2);
    shape(c, 0, 3, 4);
    c = add_case("affine", TG_OP_AFFINE, 0, 1, -2, 2);
    shape(c, 0, RND(4), RND(5));
    c = add_case("tanh", TG_OP_TANH, 0, 1, -3, 3);
    shape(c, 0, RND(4), RND(6));
    c = add_case("sigmoid", TG_OP_SIGMOID, 0, 1, -6, 6);
    shape(c, 0, RND(4), RND(6));
    c = add_case("relu", TG_OP_RELU, 0, 1, -2, 2);
    shape(c, 0, RND(4), RND(6));
    c = add_case("tanh 1x1", TG_OP_TANH, 0, 1, -1, 1);
    shape(c, 0, 1, 1);
    {
        int m = RND(4), h = RND(5), n = RND(6), k = RND(4);
        c = add_case("fused lstm gates", TG_OP_FUSED, 0, 2, -2, 2);
        shape(c, 0, m, 4 * h);
        shape(c, 1, m, h);
        c = add_case("fused lstm gates, 2 chunks a row", TG_OP_FUSED, 0, 2, -2, 2);
        shape(c, 0, 2, 4 * 300);
        shape(c, 1, 2, 300);
        c = add_case("fused broadcast row", TG_OP_FUSED, 1, 3, -2, 2);
        shape(c, 0, m + 1, n);
        shape(c, 1, 1, n);
        shape(c, 2, m + 1, n + 2);
        c->skip_kinks = 1;
        c = add_case("fused split regions", TG_OP_FUSED, 2, 2, -2, 2);
        shape(c, 0, m, n);
        shape(c, 1, n, k);
    }
    for (int axis = 0; axis < 2; axis++) {
        int m = RND(4), n = RND(4);
        c = add_case(axis ? "concat cols" : "concat rows", TG_OP_CONCAT, axis, 3, -1, 1);
        for (int i = 0; i < 3; i++) shape(c, i, axis ? m : RND(3), axis ? RND(3) : n);
        c = add_case("concat one", TG_OP_CONCAT, axis, 1, -1, 1);
        shape(c, 0, m, n);
        c = add_case(axis ? "slice cols" : "slice rows", TG_OP_SLICE, axis, 1, -1, 1);
        shape(c, 0, 2 + RND(4), 3 + RND(4));
    }
    for (int red = 0; red < 2; red++) {
        c = add_case(red ? "softmax_xent mean" : "softmax_xent sum", TG_OP_SOFTMAX_XENT, red, 1, -3, 3);
        int n = 1 + RND(6), k = 1 + RND(5);
        shape(c, 0, n, k);
        c->nlabels = n;
        for (int i = 0; i < n; i++) c->labels[i] = (int32_t)tg_rng_below(&r, (uint32_t)k);
        c->labels[n - 1] = -1; /* a row without loss */
        c = add_case(red ? "mse mean" : "mse sum", TG_OP_MSE, red, 2, -1, 1);
        shape(c, 0, RND(4), RND(4));
        c->shapes[1][0] = c->shapes[0][0];
        c->shapes[1][1] = c->shapes[0][1];
    }
    c = add_case("softmax_xent 1 class", TG_OP_SOFTMAX_XENT, 0, 1, -1, 1);
    shape(c, 0, 2, 1);
    c->nlabels = 2;
    c = add_case("sum", TG_OP_SUM, 0, 1, -1, 1);
    shape(c, 0, RND(5), RND(5));
    c = add_case("mean", TG_OP_MEAN, 0, 1, -1, 1);
    shape(c, 0, RND(5), RND(5));
    c = add_case("embedding (duplicate ids)", TG_OP_EMBEDDING, 0, 1, -1, 1);
    shape(c, 0, 5, 3);
    int32_t ids[7] = {4, 0, 4, 2, 4, 0, 1};
    memcpy(c->labels, ids, sizeof ids);
    c->nlabels = 7;
    c = add_case("overlapping row views", -2, 0, 1, -1, 1);
    shape(c, 0, 5, 3);
    /* A 60-deep composition has large high derivatives: at h = 1e-3 the stencil's h⁴·f⁽⁵⁾/30
     * truncation reaches 1e-7 (it falls as h⁴: 1.6e-7 at 1e-3, 1.3e-9 at 3e-4 for seed 1045),
     * so this case takes the smaller step. */
    c = add_case("chain of 180 ops", -1, 0, 2, -1, 1);
    c->step = 3e-4;
    shape(c, 0, 2, 3);
    shape(c, 1, 2, 3);
    /* every other op between fusion regions (apply_in_region), on the same shapes */
    for (int i = 0, n0 = n_cases; i < n0; i++) {
        if (cases[i].op < 0 || cases[i].op == TG_OP_FUSED) continue;
        for (int f = FUSED_ON; f <= FUSED_LEAN; f++) {
            c = &cases[n_cases];
            *c = cases[i];
            snprintf(label_buf[n_cases], sizeof label_buf[0], "%s%s", cases[i].label, fused_names[f]);
            c->label = label_buf[n_cases++];
            assert_true(n_cases <= N_CASES);
            c->fused = f;
        }
    }
    build_ew_cases();
#undef RND
}

static void test_every_op_vs_finite_differences(void **state)
{
    (void)state;
    for (int i = 0; i < n_cases; i++) {
        struct ctx k;
        make_ctx(&k, &cases[i], TG_F64, 1000 + (uint64_t)i);
        struct tg_gradcheck_opts o = {.tol = 1e-7, .skip_kinks = cases[i].op == TG_OP_RELU,
                                      .step = cases[i].step};
        struct tg_gradcheck_report rep;
        assert_int_equal(tg_gradcheck(loss_fn, &k, k.in, cases[i].nin, &o, &rep), TG_OK);
        if (rep.max_rel > worst_rel_seen) worst_rel_seen = rep.max_rel;
        if (cases[i].op >= 0 && rep.max_rel > worst_per_op[cases[i].op]) worst_per_op[cases[i].op] = rep.max_rel;
        if (getenv("TG_VERBOSE")) printf("#   %-32s %.3g\n", cases[i].label, rep.max_rel);
        if (!rep.passed || rep.checked == 0)
            fail_msg("%s (case %d, seed %d): rel %.3g abs %.3g at input %d (%d,%d): analytic %.17g "
                     "numeric %.17g, %ld checked", cases[i].label, i, 1000 + i, rep.max_rel,
                     rep.max_abs, rep.worst_tensor, rep.worst_row, rep.worst_col,
                     rep.worst_analytic, rep.worst_numeric, rep.checked);
        free_ctx(&k);
    }
    printf("# %d op cases gradient-checked; worst relative error %.3g\n", n_cases, worst_rel_seen);
    for (int op = 0; op < TG_OP_COUNT; op++)
        printf("#   %-14s worst relative error %.3g\n", tg_op_name((enum tg_op)op), worst_per_op[op]);
}

/* float32 forward and backward agree with float64 on the same values to float32 precision. */
static void test_float32_matches_float64(void **state)
{
    (void)state;
    for (int i = 0; i < n_cases; i++) {
        struct ctx k64, k32;
        make_ctx(&k64, &cases[i], TG_F64, 1000 + (uint64_t)i);
        make_ctx(&k32, &cases[i], TG_F32, 1000 + (uint64_t)i);
        copy_ctx(&k32, &k64);
        struct tg_tape *t64 = tg_tape_new(0), *t32 = tg_tape_new(0);
        struct tg_tensor *l64 = loss_fn(t64, &k64), *l32 = loss_fn(t32, &k32);
        assert_non_null(l64);
        assert_non_null(l32);
        assert_int_equal(l32->dtype, TG_F32);
        assert_int_equal(tg_backward(t64, l64), TG_OK);
        assert_int_equal(tg_backward(t32, l32), TG_OK);
        double a = tg_get(l64, 0, 0), b = tg_get(l32, 0, 0);
        if (fabs(a - b) > 1e-5 * fmax(1.0, fabs(a)))
            fail_msg("%s: float32 loss %.9g vs float64 %.9g", cases[i].label, b, a);
        for (int j = 0; j < cases[i].nin; j++) {
            struct tg_tensor *x64 = k64.in[j], *x32 = k32.in[j];
            double scale = 1.0;
            for (int r = 0; r < x64->rows; r++)
                for (int c = 0; c < x64->cols; c++) scale = fmax(scale, fabs(tg_grad_get(x64, r, c)));
            for (int r = 0; r < x64->rows; r++)
                for (int c = 0; c < x64->cols; c++) {
                    double g64 = tg_grad_get(x64, r, c), g32 = tg_grad_get(x32, r, c);
                    if (fabs(g64 - g32) > 1e-5 * scale)
                        fail_msg("%s: input %d grad (%d,%d) float32 %.9g vs float64 %.9g",
                                 cases[i].label, j, r, c, g32, g64);
                }
        }
        tg_tape_free(t64);
        tg_tape_free(t32);
        free_ctx(&k64);
        free_ctx(&k32);
    }
}

/* Products large enough that tg_gemm splits them over threads (ops/matmul.c), by rows and by
 * columns, in every transpose combination and with β = 1 (the backward's accumulation), match
 * a plain triple loop. Run with 2 threads where OpenMP is available; one thread otherwise. */
static void test_gemm_split(void **state)
{
    (void)state;
#if TG_HAVE_OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
#endif
    const int shapes[2][3] = {{150, 40, 70}, {33, 170, 60}}; /* m ≥ n: rows; n > m: columns */
    struct tg_rng r;
    tg_rng_seed(&r, 77);
    for (int sh = 0; sh < 2; sh++)
        for (int v = 0; v < 4; v++) {
            int m = shapes[sh][0], n = shapes[sh][1], k = shapes[sh][2], ta = v & 1, tb = v >> 1;
            struct tg_tensor *A = tg_tensor_new_heap(ta ? k : m, ta ? m : k, TG_F64);
            struct tg_tensor *B = tg_tensor_new_heap(tb ? n : k, tb ? k : n, TG_F64);
            tg_tensor_uniform(A, &r, -1, 1);
            tg_tensor_uniform(B, &r, -1, 1);
            struct tg_tape *t = tg_tape_new(0);
            struct tg_tensor *C = tg_matmul(t, A, B, ta, tb);
            assert_non_null(C);
            /* and the β = 1 path: C2 = C + op(A)·op(B) */
            struct tg_tensor *C2 = tg_addmm(t, C, A, B, ta, tb);
            assert_non_null(C2);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int q = 0; q < k; q++)
                        s += (ta ? tg_get(A, q, i) : tg_get(A, i, q)) *
                             (tb ? tg_get(B, j, q) : tg_get(B, q, j));
                    if (fabs(tg_get(C, i, j) - s) > 1e-12 || fabs(tg_get(C2, i, j) - 2 * s) > 2e-12)
                        fail_msg("gemm %dx%dx%d ta=%d tb=%d: C(%d,%d) = %.17g, 2C = %.17g, want %.17g",
                                 m, n, k, ta, tb, i, j, tg_get(C, i, j), tg_get(C2, i, j), s);
                }
            tg_tape_free(t);
            tg_tensor_free(A);
            tg_tensor_free(B);
        }
#if TG_HAVE_OPENMP
    omp_set_num_threads(saved);
#endif
}

/* Every op in the table has a forward, a backward, and at least one case above standalone and
 * one in a fusion region. */
static void test_op_table_complete(void **state)
{
    (void)state;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        assert_non_null(tg_op_table[op].name);
        if (!tg_op_table[op].forward || !tg_op_table[op].backward)
            fail_msg("op %s lacks a forward or backward", tg_op_name(op));
        int covered = 0, fused = op == TG_OP_FUSED; /* a region is fused by definition */
        for (int i = 0; i < n_cases; i++) {
            covered |= cases[i].op == op && !cases[i].fused;
            fused |= cases[i].op == op && cases[i].fused;
        }
        if (!covered) fail_msg("op %s has no gradient test", tg_op_name(op));
        if (!fused) fail_msg("op %s has no gradient test in a fusion region", tg_op_name(op));
    }
}

/* The public lookups agree with the table: names round-trip, arity and the printable forms fit
 * each elementwise op (y = …; the first input's adjoint dx/da +=; the second's db iff it has
 * two inputs), tg_ew_apply refuses what it cannot apply, and out-of-range ids are harmless. */
static void test_op_lookups(void **state)
{
    (void)state;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        const char *name = tg_op_name((enum tg_op)op);
        assert_int_equal(tg_op_lookup(name), op);
        if (!tg_op_is_elementwise((enum tg_op)op)) {
            for (int part = 0; part < 3; part++) assert_string_equal(tg_op_printable((enum tg_op)op, part), "");
            continue;
        }
        int ar = tg_op_arity((enum tg_op)op);
        const char *y = tg_op_printable((enum tg_op)op, 0), *d1 = tg_op_printable((enum tg_op)op, 1),
                   *d2 = tg_op_printable((enum tg_op)op, 2);
        if (strncmp(y, "y = ", 4) != 0 || !(ar == 1 || ar == 2) ||
            strncmp(d1, ar == 2 ? "da " : "dx ", 3) != 0 ||
            (!strstr(d1, "dy") && strcmp(d1, "dx += 0") != 0) || /* sign, step: derivative 0 */
            (ar == 2) != (d2[0] != 0) || (ar == 2 && (strncmp(d2, "db ", 3) != 0 || !strstr(d2, "dy"))))
            fail_msg("op %s (arity %d): printable forms '%s' | '%s' | '%s'", name, ar, y, d1, d2);
        assert_string_equal(tg_op_printable((enum tg_op)op, 3), "");
        assert_string_equal(tg_op_printable((enum tg_op)op, -1), "");
    }
    assert_int_equal(tg_op_lookup("no_such_op"), TG_OP_COUNT);
    assert_int_equal(tg_op_lookup(NULL), TG_OP_COUNT);
    assert_int_equal(tg_op_arity(TG_OP_COUNT), 0);
    assert_int_equal(tg_op_arity((enum tg_op)-1), 0);
    assert_false(tg_op_is_elementwise(TG_OP_COUNT));
    assert_string_equal(tg_op_name(TG_OP_COUNT), "?");
    assert_string_equal(tg_op_printable(TG_OP_COUNT, 0), "");
    struct tg_tensor *x = tg_tensor_new_heap(2, 3, TG_F64);
    struct tg_tape *t = tg_tape_new(0);
    const struct { enum tg_op op; int two; } bad[] = {
        {TG_OP_AFFINE, 0}, {TG_OP_ADD, 0}, {TG_OP_TANH, 1}, {TG_OP_MATMUL, 1}, {TG_OP_FUSED, 1},
        {TG_OP_COUNT, 1}, {(enum tg_op)-1, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_error_clear();
        assert_null(tg_ew_apply(t, bad[i].op, x, bad[i].two ? x : NULL));
        assert_non_null(strstr(tg_last_error(), "tg_ew_apply"));
    }
    tg_tape_free(t);
    tg_tensor_free(x);
}

/* Logits of ±1000 give a finite loss and finite gradients (the max-subtraction at work). */
static void test_softmax_xent_extreme_logits(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        struct tg_tensor *l = tg_tensor_new_heap(2, 3, d ? TG_F64 : TG_F32);
        tg_tensor_set_requires_grad(l);
        double v[6] = {1000, -1000, 0, -1000, 1000, 999};
        for (int i = 0; i < 6; i++) tg_set(l, i / 3, i % 3, v[i]);
        int32_t y[2] = {1, 2};
        struct tg_tape *t = tg_tape_new(0);
        struct tg_tensor *loss = tg_softmax_xent(t, l, y, TG_REDUCE_SUM);
        assert_non_null(loss);
        assert_int_equal(tg_backward(t, loss), TG_OK);
        /* row 0: 1000 − (−1000) = 2000; row 1: logsumexp(−1000, 1000, 999) − 999 */
        double expect = 2000.0 + (1000.0 + log1p(exp(-1.0)) - 999.0);
        assert_true(isfinite(tg_get(loss, 0, 0)));
        assert_true(fabs(tg_get(loss, 0, 0) - expect) < 1e-3 * expect);
        for (int i = 0; i < 6; i++) assert_true(isfinite(tg_grad_get(l, i / 3, i % 3)));
        assert_true(fabs(tg_grad_get(l, 0, 0) - 1.0) < 1e-6);
        assert_true(fabs(tg_grad_get(l, 0, 1) + 1.0) < 1e-6);
        tg_tape_free(t);
        tg_tensor_free(l);
    }
}

/* The row max taken as four interleaved maxima (and the float32 sum as four partial sums):
 * a dominant logit at each position of an 11-wide row — every lane and the 3-long tail — must
 * give the loss and gradient of the plain formula. Were the max missed, e^{l−m} would overflow
 * or the loss would be off by the logit's size. */
static void test_softmax_xent_max_anywhere(void **state)
{
    (void)state;
    enum { C = 11 };
    for (int d = 0; d < 2; d++)
        for (int at = 0; at < C; at++) {
            struct tg_tensor *l = tg_tensor_new_heap(1, C, d ? TG_F64 : TG_F32);
            tg_tensor_set_requires_grad(l);
            double v[C];
            for (int j = 0; j < C; j++) v[j] = j == at ? 95.0 : 0.25 * j - 1.0;
            for (int j = 0; j < C; j++) tg_set(l, 0, j, v[j]);
            int32_t y[1] = {(at + 3) % C};
            struct tg_tape *t = tg_tape_new(0);
            struct tg_tensor *loss = tg_softmax_xent(t, l, y, TG_REDUCE_SUM);
            assert_non_null(loss);
            assert_int_equal(tg_backward(t, loss), TG_OK);
            double s = 0;
            for (int j = 0; j < C; j++) s += exp(v[j] - 95.0);
            double want = 95.0 + log(s) - v[y[0]], tol = d ? 1e-12 : 1e-5;
            assert_true(fabs(tg_get(loss, 0, 0) - want) <= tol * want);
            for (int j = 0; j < C; j++) {
                double g = exp(v[j] - 95.0) / s - (j == y[0]);
                assert_true(fabs(tg_grad_get(l, 0, j) - g) <= tol);
            }
            tg_tape_free(t);
            tg_tensor_free(l);
        }
}

/* y = op(x) (affine: 2x + 1) on a 1×n row of given values, loss Σ y, standalone (mode 0) or in a fusion region
 * (1: fusion on, 2: lean) that keeps only z = 1·y + 0 — so backward recomputes or re-reads y
 * itself. Fills y[] and dx[]. */
static void run_values(enum tg_op op, enum tg_dtype dt, int mode, const double *x, int n,
                       double *y, double *dx)
{
    struct tg_tensor *in = tg_tensor_new_heap(1, n, dt);
    assert_int_equal(tg_tensor_set_requires_grad(in), TG_OK);
    for (int j = 0; j < n; j++) tg_set(in, 0, j, x[j]);
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_set_fusion(t, mode == 2 ? TG_FUSION_LEAN : TG_FUSION_ON);
    tg_tape_set_nonfinite_loss_ok(t, 1); /* Σ y is inf or NaN here by design */
    struct tg_tensor *out;
    if (mode) {
        tg_tape_fuse_begin(t);
        struct tg_tensor *y0 = op == TG_OP_AFFINE ? tg_affine(t, in, 2.0, 1.0) : tg_ew_apply(t, op, in, NULL);
        struct tg_tensor *z = tg_affine(t, y0, 1.0, 0.0);
        assert_int_equal(tg_tape_fuse_end(t, &z, 1), TG_OK);
        assert_int_equal(count_fused(t), 1);
        out = z;
    } else {
        out = op == TG_OP_AFFINE ? tg_affine(t, in, 2.0, 1.0) : tg_ew_apply(t, op, in, NULL);
    }
    assert_non_null(out);
    struct tg_tensor *loss = tg_sum(t, out);
    assert_non_null(loss);
    assert_int_equal(tg_backward(t, loss), TG_OK);
    for (int j = 0; j < n; j++) {
        y[j] = tg_get(out, 0, j);
        dx[j] = tg_grad_get(in, 0, j);
    }
    tg_tape_free(t);
    tg_tensor_free(in);
}

static const char *const mode_names[3] = {"standalone", "fused", "fused lean"};

/* softplus(x) = ln(1 + eˣ) is finite and right for large |x| (no overflow of eˣ, no loss of
 * the tail e^x for x ≪ 0), and so is its derivative σ(x); in both dtypes, standalone and fused. */
static void test_softplus_large_inputs(void **state)
{
    (void)state;
    const double x[] = {-1000, -100, -30, -1, 0, 1, 30, 100, 1000};
    enum { N = sizeof x / sizeof x[0] };
    for (int d = 0; d < 2; d++)
        for (int mode = 0; mode < 3; mode++) {
            double y[N], dx[N];
            run_values(TG_OP_SOFTPLUS, d ? TG_F64 : TG_F32, mode, x, N, y, dx);
            for (int j = 0; j < N; j++) {
                double want = x[j] > 0 ? x[j] + log1p(exp(-x[j])) : log1p(exp(x[j]));
                double dwant = 1 / (1 + exp(-x[j]));
                /* float32 flushes what is below its normal range (e^−100) to 0 */
                double tol = d ? 1e-15 : 2e-7, floor = d ? 1e-300 : 1.2e-38;
                if (!isfinite(y[j]) || fabs(y[j] - want) > tol * fabs(want) + floor ||
                    !isfinite(dx[j]) || fabs(dx[j] - dwant) > tol * fabs(dwant) + floor)
                    fail_msg("softplus %s %s at x = %g: y = %.17g (want %.17g), dy/dx = %.17g "
                             "(want %.17g)", tg_dtype_name(d ? TG_F64 : TG_F32), mode_names[mode],
                             x[j], y[j], want, dx[j], dwant);
            }
        }
}

/* exp overflows to +∞ like C's exp (and its gradient with it), underflows to 0; in both dtypes,
 * standalone and fused. No crash, no undefined behaviour (the sanitizer build runs this). */
static void test_exp_overflow(void **state)
{
    (void)state;
    const double x64[] = {-1000, -700, 0, 700, 709, 710, 1000};
    const double x32[] = {-1000, -100, 0, 80, 88, 89, 1000};
    enum { N = 7 };
    for (int d = 0; d < 2; d++)
        for (int mode = 0; mode < 3; mode++) {
            const double *x = d ? x64 : x32;
            double y[N], dx[N];
            run_values(TG_OP_EXP, d ? TG_F64 : TG_F32, mode, x, N, y, dx);
            for (int j = 0; j < N; j++) {
                double want = d ? exp(x[j]) : (double)expf((float)x[j]);
                if (!d && x[j] < -87.33) want = 0; /* float32 flushes subnormals */
                int ok = isinf(want) ? isinf(y[j]) && y[j] > 0 && isinf(dx[j]) && dx[j] > 0
                                     : fabs(y[j] - want) <= (d ? 1e-15 : 3e-7) * want &&
                                           fabs(dx[j] - want) <= (d ? 1e-15 : 3e-7) * want;
                if (!ok)
                    fail_msg("exp %s %s at x = %g: y = %.9g, dy/dx = %.9g, want %.9g",
                             tg_dtype_name(d ? TG_F64 : TG_F32), mode_names[mode], x[j], y[j],
                             dx[j], want);
            }
        }
}

/* log and sqrt out of their domain give what C gives: NaN for a negative (sqrt's gradient,
 * dy/(2y), NaN too; log's, dy/x, stays 1/x as in PyTorch), log 0 = −∞, sqrt 0 = 0 with an infinite slope; standalone and fused, both dtypes. */
static void test_log_sqrt_out_of_domain(void **state)
{
    (void)state;
    const double x[] = {-2, -1e-3, 0, 4};
    enum { N = 4 };
    for (int d = 0; d < 2; d++)
        for (int mode = 0; mode < 3; mode++) {
            double y[N], dx[N];
            const char *dn = tg_dtype_name(d ? TG_F64 : TG_F32);
            run_values(TG_OP_LOG, d ? TG_F64 : TG_F32, mode, x, N, y, dx);
            /* the derivative is dy/x from x (elementwise.h), PyTorch's choice: finite */
            if (!isnan(y[0]) || !isnan(y[1]) || fabs(dx[0] + 0.5) > 1e-6 || fabs(dx[1] + 1e3) > 1e-3)
                fail_msg("log %s %s of a negative: y = %g, %g (want NaN); dy/dx = %g, %g (want "
                         "1/x)", dn, mode_names[mode], y[0], y[1], dx[0], dx[1]);
            if (!(isinf(y[2]) && y[2] < 0) || !(isinf(dx[2]) && dx[2] > 0))
                fail_msg("log %s %s of 0: y = %g, dy/dx = %g (want -inf, +inf)", dn,
                         mode_names[mode], y[2], dx[2]);
            if (fabs(y[3] - log(4.0)) > 1e-6 || fabs(dx[3] - 0.25) > 1e-6)
                fail_msg("log %s %s of 4: y = %g, dy/dx = %g", dn, mode_names[mode], y[3], dx[3]);
            run_values(TG_OP_SQRT, d ? TG_F64 : TG_F32, mode, x, N, y, dx);
            if (!isnan(y[0]) || !isnan(y[1]) || !isnan(dx[0]) || !isnan(dx[1]))
                fail_msg("sqrt %s %s of a negative: y = %g, %g; dy/dx = %g, %g (want NaN)", dn,
                         mode_names[mode], y[0], y[1], dx[0], dx[1]);
            if (y[2] != 0 || !(isinf(dx[2]) && dx[2] > 0))
                fail_msg("sqrt %s %s of 0: y = %g, dy/dx = %g (want 0, +inf)", dn,
                         mode_names[mode], y[2], dx[2]);
            if (fabs(y[3] - 2) > 1e-6 || fabs(dx[3] - 0.25) > 1e-6)
                fail_msg("sqrt %s %s of 4: y = %g, dy/dx = %g", dn, mode_names[mode], y[3], dx[3]);
        }
}

/* Broadcast binary ops and row reductions on shapes large enough to go parallel (200×300 >
 * TG_OMP_MIN elements), standalone and fused: loss Σ y ⊙ R and the input gradients agree between
 * 1 and 2 threads and between fused and unfused, to 1e-12 of the largest gradient. */
static double bcast_run(enum tg_op op, int fused, struct tg_tensor *a, struct tg_tensor *b,
                        struct tg_tensor *R)
{
    tg_tensor_zero_grad(a);
    tg_tensor_zero_grad(b);
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_set_fusion(t, fused ? TG_FUSION_ON : TG_FUSION_OFF);
    tg_tape_fuse_begin(t);
    struct tg_tensor *y;
    if (op == TG_OP_ROW_SUM || op == TG_OP_ROW_MEAN) { /* (tanh(a) − r) ⊙ r, r = row op */
        struct tg_tensor *ta = tg_tanh(t, a);
        struct tg_tensor *r = op == TG_OP_ROW_SUM ? tg_row_sum(t, ta) : tg_row_mean(t, ta);
        y = tg_mul(t, tg_sub(t, ta, r), r);
    } else {
        y = tg_ew_apply(t, op, a, b);
    }
    assert_int_equal(tg_tape_fuse_end(t, &y, 1), TG_OK);
    struct tg_tensor *loss = tg_sum(t, tg_mul(t, y, R));
    assert_non_null(loss);
    assert_int_equal(tg_backward(t, loss), TG_OK);
    double l = tg_get(loss, 0, 0);
    tg_tape_free(t);
    return l;
}

static void test_broadcast_parallel(void **state)
{
    (void)state;
    enum { M = 200, N = 300 };
    const int kinds[5] = {BC_B_ROW, BC_B_COL, BC_A_COL, BC_B_SCALAR, BC_OUTER};
    const enum tg_op ops[6] = {TG_OP_ADD, TG_OP_SUB, TG_OP_MUL, TG_OP_DIV, TG_OP_ROW_SUM, TG_OP_ROW_MEAN};
    struct tg_rng r;
    tg_rng_seed(&r, 99);
    struct tg_tensor *R = tg_tensor_new_heap(M, N, TG_F64);
    tg_tensor_uniform(R, &r, -1, 1);
    double worst = 0;
    for (int o = 0; o < 6; o++)
        for (int k = 0; k < (o < 4 ? 5 : 1); k++) {
            int bc = kinds[k];
            int ar = M, ac = bc == BC_A_COL || bc == BC_OUTER ? 1 : N;
            int br = bc == BC_B_ROW || bc == BC_B_SCALAR || bc == BC_OUTER ? 1 : M;
            int bcl = bc == BC_B_COL || bc == BC_B_SCALAR ? 1 : N;
            struct tg_tensor *a = tg_tensor_new_heap(ar, ac, TG_F64), *b = tg_tensor_new_heap(br, bcl, TG_F64);
            tg_tensor_uniform(a, &r, -2, 2);
            tg_tensor_uniform(b, &r, 0.5, 2); /* positive: a divisor off 0 */
            assert_int_equal(tg_tensor_set_requires_grad(a), TG_OK);
            assert_int_equal(tg_tensor_set_requires_grad(b), TG_OK);
            size_t na = tg_numel(a), nb = tg_numel(b);
            double *g0 = malloc((na + nb) * sizeof *g0), l0 = 0, scale = 0;
            for (int run = 0; run < 4; run++) { /* (threads, fused): (1,0) (2,0) (1,1) (2,1) */
                int threads = 1 + (run & 1), fused = run >> 1;
#if TG_HAVE_OPENMP
                int saved = omp_get_max_threads();
                omp_set_num_threads(threads);
#endif
                double l = bcast_run(ops[o], fused, a, b, R);
#if TG_HAVE_OPENMP
                omp_set_num_threads(saved);
#endif
                double d = 0;
                for (size_t j = 0; j < na + nb; j++) {
                    double g = j < na ? tg_grad_get(a, (int)(j / ac), (int)(j % ac))
                                      : tg_grad_get(b, (int)((j - na) / bcl), (int)((j - na) % bcl));
                    if (run == 0) g0[j] = g, scale = fmax(scale, fabs(g));
                    else d = fmax(d, fabs(g - g0[j]));
                }
                if (run == 0) l0 = l;
                else {
                    d = fmax(d / scale, fabs(l - l0) / fmax(1, fabs(l0)));
                    worst = fmax(worst, d);
                    if (!(d <= 1e-12))
                        fail_msg("%s %s, %d thread(s)%s: relative difference %.3g from 1 thread unfused",
                                 tg_op_name(ops[o]), o < 4 ? bc_names[bc] : "", threads,
                                 fused ? ", fused" : "", d);
                }
            }
            free(g0);
            tg_tensor_free(a);
            tg_tensor_free(b);
        }
    printf("# broadcasts and row reductions at 200x300: worst difference across threads and fusion %.3g\n", worst);
    tg_tensor_free(R);
}

/* What C (and PyTorch) give for op(x) (affine: 2x + 1), in double; NaN in gives NaN out. */
static double reference(enum tg_op op, double x)
{
    switch (op) {
    case TG_OP_AFFINE: return 2 * x + 1;
    case TG_OP_TANH: return tanh(x);
    case TG_OP_SIGMOID: return 1 / (1 + exp(-x));
    case TG_OP_RELU: return isnan(x) ? x : x > 0 ? x : 0; /* torch.relu(nan) = nan (since 0.4.1) */
    case TG_OP_EXP: return exp(x);
    case TG_OP_LOG: return log(x);
    case TG_OP_SQRT: return sqrt(x);
    case TG_OP_ABS: return fabs(x);
    case TG_OP_SOFTPLUS: return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
    case TG_OP_SIGN: return isnan(x) ? x : (x > 0) - (x < 0);   /* torch.sign */
    case TG_OP_STEP: return isnan(x) ? x : x > 0 ? 1 : 0;       /* torch.heaviside(x, 0) */
    default: fail_msg("no reference value for op %s: add one here", tg_op_name(op));
    }
    return 0;
}

/* Every one-input elementwise op of the table on NaN, ±∞, 0 and a negative, standalone and
 * fused, in both dtypes: the value C gives (NaN stays NaN: a NaN made upstream must reach the
 * loss, where it can be found, not vanish), and backward runs through them without a crash or
 * undefined behaviour (the sanitizer build runs this). */
static void test_special_values(void **state)
{
    (void)state;
    const double x[] = {NAN, INFINITY, -INFINITY, 0.0, -0.5, 2.0};
    enum { N = sizeof x / sizeof x[0] };
    int bad = 0;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        if (!tg_op_is_elementwise((enum tg_op)op) || tg_op_arity((enum tg_op)op) != 1) continue;
        for (int d = 0; d < 2; d++)
            for (int mode = 0; mode < 3; mode++) {
                double y[N], dx[N];
                run_values((enum tg_op)op, d ? TG_F64 : TG_F32, mode, x, N, y, dx);
                for (int j = 0; j < N; j++) {
                    double want = reference((enum tg_op)op, x[j]);
                    if (!d && isfinite(want)) want = (float)want;
                    int ok = isnan(want) ? isnan(y[j])
                             : isinf(want) ? y[j] == want
                                           : fabs(y[j] - want) <= (d ? 1e-15 : 2.4e-7) * fmax(1, fabs(want));
                    if (!ok) {
                        printf("# %s %s %s(%g) = %.9g, want %.9g\n", tg_dtype_name(d ? TG_F64 : TG_F32),
                               mode_names[mode], tg_op_name((enum tg_op)op), x[j], y[j], want);
                        bad++;
                    }
                }
            }
    }
    if (bad) fail_msg("%d special values differ from C's (listed above)", bad);
}

int main(void)
{
    build_cases();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_split),
        cmocka_unit_test(test_op_table_complete),
        cmocka_unit_test(test_op_lookups),
        cmocka_unit_test(test_every_op_vs_finite_differences),
        cmocka_unit_test(test_float32_matches_float64),
        cmocka_unit_test(test_softmax_xent_extreme_logits),
        cmocka_unit_test(test_softmax_xent_max_anywhere),
        cmocka_unit_test(test_softplus_large_inputs),
        cmocka_unit_test(test_exp_overflow),
        cmocka_unit_test(test_log_sqrt_out_of_domain),
        cmocka_unit_test(test_broadcast_parallel),
        cmocka_unit_test(test_special_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
