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
};

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

static struct tg_tensor *apply(struct tg_tape *t, const struct op_case *c, struct tg_tensor **x)
{
    int v = c->variant;
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

#define N_CASES 64
static struct op_case cases[N_CASES];
static int n_cases;
static double worst_rel_seen;

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
        if (getenv("TG_VERBOSE")) printf("#   %-32s %.3g\n", cases[i].label, rep.max_rel);
        if (!rep.passed || rep.checked == 0)
            fail_msg("%s (case %d, seed %d): rel %.3g abs %.3g at input %d (%d,%d): analytic %.17g "
                     "numeric %.17g, %ld checked", cases[i].label, i, 1000 + i, rep.max_rel,
                     rep.max_abs, rep.worst_tensor, rep.worst_row, rep.worst_col,
                     rep.worst_analytic, rep.worst_numeric, rep.checked);
        free_ctx(&k);
    }
    printf("# %d op cases gradient-checked; worst relative error %.3g\n", n_cases, worst_rel_seen);
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

/* Every op in the table has a forward, a backward, and at least one case above. */
static void test_op_table_complete(void **state)
{
    (void)state;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        assert_non_null(tg_op_table[op].name);
        if (!tg_op_table[op].forward || !tg_op_table[op].backward)
            fail_msg("op %s lacks a forward or backward", tg_op_name(op));
        int covered = 0;
        for (int i = 0; i < n_cases; i++) covered |= cases[i].op == op;
        if (!covered) fail_msg("op %s has no gradient test", tg_op_name(op));
    }
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

int main(void)
{
    build_cases();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_split),
        cmocka_unit_test(test_op_table_complete),
        cmocka_unit_test(test_every_op_vs_finite_differences),
        cmocka_unit_test(test_float32_matches_float64),
        cmocka_unit_test(test_softmax_xent_extreme_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
