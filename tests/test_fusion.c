/* test_fusion.c — fusion regions (autograd/fuse.c, ops/fused.c). A region changes when and
 * where elementwise ops run, never what they compute, so nearly every test here records the
 * same graph twice, once with fusion on and once with it off, and demands the same loss and
 * gradients (float64 to 1e-12 of each tensor's largest gradient: only the order of sums may
 * differ). Around that:
 *  - every registered cell, float64 and float32, and the gated cells' tapes get shorter;
 *  - the OpenMP row split of the fused kernel (2 threads) against the unfused ops;
 *  - the arena holds less with fusion (the point of it), and a training loop stays heap-silent;
 *  - the region contract: pending tensors (TG_PENDING, data NULL) are computed by any other op,
 *    intermediates that were not kept fail cleanly afterwards, fusion off makes begin/end
 *    no-ops, a region longer than the instruction / input limits splits correctly, a region
 *    left open is closed by tg_tape_reset and by tg_backward;
 *  - the DOT export draws the fused nodes.
 * Seeds are fixed in the code, so a failure reproduces exactly. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad_models.h"
#include "internal.h" /* TG_PENDING, TG_REUSED: the region contract */
#include "tg_config.h"
#include "tapegrad_dot.h"
#if TG_HAVE_OPENMP
#include <omp.h>
#endif

/* Counting malloc: the warm-up test also checks the real heap, not only the tape's counter. */
#include "malloc_count.h"

/* ------------------------------------------------------------------ model runs */

/* One seeded model and batch; the same parameters are recorded on several tapes. */
struct mcase {
    struct tg_model *m;
    double *x;
    int32_t *y;
    struct tg_seq_batch b;
    char what[96]; /* "lstm f64 seed 7": context for failure messages */
};

static void mcase_new(struct mcase *c, const struct tg_cell *cell, enum tg_dtype dt, int I, int H,
                      int L, int B, int T, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    snprintf(c->what, sizeof c->what, "%s %s seed %llu", cell->name, tg_dtype_name(dt),
             (unsigned long long)seed);
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L, .outputs = 3,
                                  .dtype = dt, .loss = TG_LOSS_XENT_SUM};
    if (tg_model_new(&cfg, &c->m) != TG_OK) fail_msg("%s: %s", c->what, tg_last_error());
    struct tg_rng r;
    tg_rng_seed(&r, seed);
    /* wider than PyTorch's ±1/√H so the gates are really nonlinear (σ, tanh away from 0) */
    for (int i = 0; i < c->m->n_params; i++) tg_tensor_uniform(c->m->params[i], &r, -0.7, 0.7);
    c->x = malloc(sizeof *c->x * (size_t)T * B * I);
    c->y = malloc(sizeof *c->y * (size_t)T * B);
    assert_non_null(c->x);
    assert_non_null(c->y);
    for (long i = 0; i < (long)T * B * I; i++) c->x[i] = tg_rng_normal(&r);
    for (long i = 0; i < (long)T * B; i++) c->y[i] = (int32_t)tg_rng_below(&r, 3);
    c->b = (struct tg_seq_batch){.T = T, .B = B, .x = c->x, .labels = c->y};
}

static void mcase_free(struct mcase *c)
{
    tg_model_free(c->m);
    free(c->x);
    free(c->y);
}

/* Forward + backward on a fresh tape with fusion on or off. Gradients are zeroed first, so the
 * parameters hold this run's gradients alone. The caller frees the returned tape. */
static struct tg_tape *mcase_run(struct mcase *c, int fusion, double *loss)
{
    struct tg_tape *t = tg_tape_new(0);
    assert_non_null(t);
    tg_tape_set_fusion(t, fusion);
    tg_model_zero_grad(c->m);
    struct tg_seq_result res;
    if (tg_model_forward(c->m, t, &c->b, 0, &res) != TG_OK || tg_backward(t, res.loss) != TG_OK)
        fail_msg("%s, fusion %s: %s", c->what, fusion ? "on" : "off", tg_last_error());
    *loss = tg_get(res.loss, 0, 0);
    return t;
}

/* ------------------------------------------------------------------ comparisons */

/* Gradients of n tensors as doubles (one malloc'd array each), to compare with a later run. */
static double **grads_save(struct tg_tensor *const *xs, int n)
{
    double **g = calloc((size_t)n, sizeof *g);
    assert_non_null(g);
    for (int k = 0; k < n; k++) {
        const struct tg_tensor *x = xs[k];
        g[k] = malloc(sizeof **g * tg_numel(x));
        assert_non_null(g[k]);
        for (int i = 0; i < x->rows; i++)
            for (int j = 0; j < x->cols; j++) g[k][(size_t)i * x->cols + j] = tg_grad_get(x, i, j);
    }
    return g;
}

static void grads_free(double **g, int n)
{
    for (int k = 0; k < n; k++) free(g[k]);
    free(g);
}

/* Each tensor's gradient against `want`: max |got − want| / max |want| ≤ tol. A gradient that
 * is zero everywhere would make the check vacuous, so that fails too. Returns the worst ratio. */
static double grads_check(const char *what, struct tg_tensor *const *xs, int n, double **want,
                          double tol)
{
    double worst = 0;
    for (int k = 0; k < n; k++) {
        const struct tg_tensor *x = xs[k];
        double diff = 0, scale = 0;
        int wi = 0;
        for (int i = 0; i < x->rows; i++)
            for (int j = 0; j < x->cols; j++) {
                size_t e = (size_t)i * x->cols + j;
                double d = fabs(tg_grad_get(x, i, j) - want[k][e]);
                if (d > diff) diff = d, wi = (int)e;
                scale = fmax(scale, fabs(want[k][e]));
            }
        const char *name = x->name ? x->name : "input";
        if (!(scale > 0)) fail_msg("%s: gradient of %s (#%d) is zero everywhere", what, name, k);
        double rel = diff / scale;
        if (!(rel <= tol))
            fail_msg("%s: gradient of %s (#%d, %dx%d): max |fused - unfused| / max |unfused| = "
                     "%.3g > %.0e (element %d: fused %.17g, unfused %.17g)", what, name, k,
                     x->rows, x->cols, rel, tol, wi, tg_grad_get(x, wi / x->cols, wi % x->cols),
                     want[k][wi]);
        worst = fmax(worst, rel);
    }
    return worst;
}

static void loss_check(const char *what, double fused, double unfused, double tol)
{
    if (!(fabs(fused - unfused) <= tol * fabs(unfused)))
        fail_msg("%s: loss fused %.17g, unfused %.17g (rel %.3g > %.0e)", what, fused, unfused,
                 fabs(fused - unfused) / fabs(unfused), tol);
}

static size_t count_op(const struct tg_tape *t, enum tg_op op)
{
    size_t n = 0;
    for (size_t i = 0; i < tg_tape_num_nodes(t); i++) n += tg_node_op(tg_tape_node(t, i)) == op;
    return n;
}

/* Record a model three times (fusion off, on, lean) and compare loss and every parameter gradient.
 * Returns the worst gradient ratio; *nodes_fused / *nodes_unfused get the tape lengths. */
static double fused_vs_unfused(struct mcase *c, double tol_loss, double tol_grad,
                               size_t *nodes_fused, size_t *nodes_unfused)
{
    double lu, lf;
    struct tg_tape *tu = mcase_run(c, 0, &lu);
    double **gu = grads_save(c->m->params, c->m->n_params);
    struct tg_tape *tf = mcase_run(c, 1, &lf);
    loss_check(c->what, lf, lu, tol_loss);
    double worst = grads_check(c->what, c->m->params, c->m->n_params, gu, tol_grad);
    /* the fused tape really was fused, the other really was not */
    if (count_op(tf, TG_OP_FUSED) == 0) fail_msg("%s: no fused node with fusion on", c->what);
    assert_int_equal(count_op(tu, TG_OP_FUSED), 0);
    *nodes_fused = tg_tape_num_nodes(tf);
    *nodes_unfused = tg_tape_num_nodes(tu);
    /* lean fusion (σ/tanh recomputed in backward instead of kept): the same again */
    double ll;
    char what[128];
    snprintf(what, sizeof what, "%s, lean", c->what);
    struct tg_tape *tl = mcase_run(c, TG_FUSION_LEAN, &ll);
    loss_check(what, ll, lu, tol_loss);
    worst = fmax(worst, grads_check(what, c->m->params, c->m->n_params, gu, tol_grad));
    if (count_op(tl, TG_OP_FUSED) == 0) fail_msg("%s: no fused node", what);
    tg_tape_free(tl);
    grads_free(gu, c->m->n_params);
    tg_tape_free(tu);
    tg_tape_free(tf);
    return worst;
}

/* ------------------------------------------------------------------ 1. every cell */

static void test_every_cell_fused_equals_unfused(void **state)
{
    (void)state;
    assert_int_equal(tg_cell_count(), 9);
    for (int d = 0; d < 2; d++) {
        enum tg_dtype dt = d == 0 ? TG_F64 : TG_F32;
        /* float32: the fused kernel uses the same fast tanh/σ as the ops, but sums in another
         * order, and rounding at 2^-24 compounds over T = 5 steps and 2 layers */
        double tol_loss = dt == TG_F64 ? 1e-13 : 1e-5, tol_grad = dt == TG_F64 ? 1e-12 : 1e-5;
        double worst = 0;
        for (int i = 0; i < tg_cell_count(); i++) {
            const struct tg_cell *cell = tg_cell_at(i);
            struct mcase c;
            mcase_new(&c, cell, dt, 4, 6, 2, 3, 5, 500 + 10 * (uint64_t)i + (uint64_t)d);
            size_t nf, nu;
            worst = fmax(worst, fused_vs_unfused(&c, tol_loss, tol_grad, &nf, &nu));
            /* a fused node replaces at least one op, never adds any */
            if (nf > nu) fail_msg("%s: fused tape has %zu nodes, unfused %zu", c.what, nf, nu);
            int gated = strcmp(cell->name, "lstm") == 0 || strcmp(cell->name, "gru") == 0;
            if (gated && !(nf < nu))
                fail_msg("%s: fused tape has %zu nodes, not fewer than unfused %zu", c.what, nf, nu);
            mcase_free(&c);
        }
        printf("# %s, %d cells: worst gradient difference fused vs unfused %.3g\n",
               tg_dtype_name(dt), tg_cell_count(), worst);
    }
}

/* ------------------------------------------------------------------ 2. threads */

/* B·H·instructions = 64·128·9 is above the parallel threshold, so with 2 threads the fused
 * kernel splits its rows (forward and backward) over a team, each thread with its own scratch.
 * The thread count must be set before the tape's first fused node: scratch is sized then. */
static void test_parallel_fused_equals_unfused(void **state)
{
    (void)state;
#if TG_HAVE_OPENMP
    int prev = omp_get_max_threads();
    omp_set_num_threads(2);
    assert_int_equal(omp_get_max_threads(), 2);
#else
    printf("# built without OpenMP: this only compares the serial kernel\n");
#endif
    struct mcase c;
    mcase_new(&c, tg_cell_find("lstm"), TG_F64, 16, 128, 1, 64, 3, 2024);
    size_t nf, nu;
    double worst = fused_vs_unfused(&c, 1e-13, 1e-12, &nf, &nu);
    printf("# lstm B=64 H=128, 2 threads: worst gradient difference %.3g\n", worst);
    mcase_free(&c);
#if TG_HAVE_OPENMP
    omp_set_num_threads(prev);
#endif
}

/* ------------------------------------------------------------------ 3. memory */

/* Fused, an LSTM step stores c' and h' only; unfused it also stores its eight intermediates and
 * their gradients. Measured: fused/unfused 0.58–0.64 of the arena after backward (the rest is
 * the matmuls, the inputs and the output layer, which fusion does not touch). */
static void test_fusion_uses_less_arena(void **state)
{
    (void)state;
    struct mcase c;
    mcase_new(&c, tg_cell_find("lstm"), TG_F32, 4, 32, 1, 8, 20, 31);
    double lf, lu;
    struct tg_tape *tf = mcase_run(&c, 1, &lf), *tu = mcase_run(&c, 0, &lu);
    size_t f = tg_tape_arena_used(tf), u = tg_tape_arena_used(tu);
    printf("# lstm f32 T=20 B=8 H=32: arena %zu bytes fused, %zu unfused (%.3f)\n", f, u,
           (double)f / (double)u);
    if (!((double)f < 0.7 * (double)u))
        fail_msg("arena after backward: fused %zu bytes, unfused %zu: ratio %.3f, want < 0.7", f, u,
                 (double)f / (double)u);
    tg_tape_free(tf);
    tg_tape_free(tu);
    mcase_free(&c);
}

/* ------------------------------------------------------------------ region contract */

/* A float64 tensor with distinct values in (−1.5, 1.5), seeded. */
static struct tg_tensor *filled(struct tg_tensor *x, uint64_t seed)
{
    assert_non_null(x);
    struct tg_rng r;
    tg_rng_seed(&r, seed);
    tg_tensor_uniform(x, &r, -1.5, 1.5);
    return x;
}

static int pending(const struct tg_tensor *x) { return (x->flags & TG_PENDING) != 0; }

/* 4. An intermediate that was not kept dies with the region: an op given it fails with
 * TG_ERR_STATE and a message saying why, instead of reading data that was never written. */
static void test_dead_intermediate(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *x = filled(tg_tensor_new(t, 3, 5, TG_F64), 4);
    tg_tape_fuse_begin(t);
    struct tg_tensor *a = tg_sigmoid(t, x), *b = tg_tanh(t, a);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(tg_tape_fuse_end(t, &b, 1), TG_OK);
    assert_false(pending(b));
    assert_non_null(b->data);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) {
            double want = tanh(1.0 / (1.0 + exp(-tg_get(x, i, j))));
            if (!(fabs(tg_get(b, i, j) - want) <= 1e-15))
                fail_msg("kept b(%d,%d) = %.17g, want tanh(sigmoid(x)) = %.17g", i, j,
                         tg_get(b, i, j), want);
        }
    assert_int_equal(tg_tape_status(t), TG_OK);
    assert_null(tg_mul(t, a, b));
    assert_int_equal(tg_tape_status(t), TG_ERR_STATE);
    if (!strstr(tg_last_error(), "fused region that has ended"))
        fail_msg("unexpected message: %s", tg_last_error());
    assert_non_null(strstr(tg_tape_error(t), "tg_mul"));
    tg_tape_free(t);
}

/* 5. Inside a region tanh(x) is pending; a matmul reading it computes the region first and
 * sees the same values as unfused; the region then goes on (sigmoid of it is pending again). */
static struct tg_tensor *pending_graph(struct tg_tape *t, struct tg_tensor *x, struct tg_tensor *W,
                                       struct tg_tensor **y_out, int check)
{
    tg_tape_fuse_begin(t);
    struct tg_tensor *th = tg_tanh(t, x);
    assert_non_null(th);
    if (check) {
        assert_true(pending(th));
        assert_null(th->data);
    }
    struct tg_tensor *y = tg_matmul(t, th, W, 0, 1);
    assert_non_null(y);
    assert_false(pending(th));
    assert_non_null(th->data);
    struct tg_tensor *z = tg_sigmoid(t, th);
    assert_non_null(z);
    if (check) assert_true(pending(z));
    assert_int_equal(tg_tape_fuse_end(t, &z, 1), TG_OK);
    *y_out = y;
    return tg_add(t, tg_sum(t, tg_mul(t, y, y)), tg_sum(t, z));
}

static void test_pending_computed_by_other_ops(void **state)
{
    (void)state;
    struct tg_tensor *x = filled(tg_param_new("x", 3, 4, TG_F64), 5);
    struct tg_tensor *W = filled(tg_param_new("W", 2, 4, TG_F64), 6);
    struct tg_tensor *xs[2] = {x, W}, *yu, *yf;
    struct tg_tape *tu = tg_tape_new(0), *tf = tg_tape_new(0);
    tg_tape_set_fusion(tu, 0);
    struct tg_tensor *lu = pending_graph(tu, x, W, &yu, 0);
    assert_int_equal(tg_backward(tu, lu), TG_OK);
    double **gu = grads_save(xs, 2);
    tg_tensor_zero_grad(x);
    tg_tensor_zero_grad(W);
    struct tg_tensor *lf = pending_graph(tf, x, W, &yf, 1);
    if (!lf || tg_backward(tf, lf) != TG_OK) fail_msg("fused: %s", tg_last_error());
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            if (!(fabs(tg_get(yf, i, j) - tg_get(yu, i, j)) <= 1e-15 * fmax(1, fabs(tg_get(yu, i, j)))))
                fail_msg("matmul of pending tanh (%d,%d): %.17g, unfused %.17g", i, j,
                         tg_get(yf, i, j), tg_get(yu, i, j));
    loss_check("pending tanh -> matmul", tg_get(lf, 0, 0), tg_get(lu, 0, 0), 1e-14);
    grads_check("pending tanh -> matmul", xs, 2, gu, 1e-12);
    grads_free(gu, 2);
    tg_tape_free(tu);
    tg_tape_free(tf);
    tg_tensor_free(x);
    tg_tensor_free(W);
}

/* 6. With fusion off, begin/end change nothing: ops compute at once, one node each. */
static void test_fusion_off_is_noop(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    assert_int_equal(tg_tape_set_fusion(t, 0), 1); /* on by default */
    assert_int_equal(tg_tape_set_fusion(t, 0), 0);
    struct tg_tensor *x = filled(tg_tensor_new(t, 2, 3, TG_F64), 7);
    tg_tape_fuse_begin(t);
    struct tg_tensor *y = tg_tanh(t, x);
    assert_non_null(y);
    assert_false(pending(y));
    assert_non_null(y->data);
    assert_int_equal(tg_tape_num_nodes(t), 1);
    assert_int_equal(tg_node_op(tg_tape_node(t, 0)), TG_OP_TANH);
    assert_true(fabs(tg_get(y, 1, 2) - tanh(tg_get(x, 1, 2))) <= 1e-15);
    assert_int_equal(tg_tape_fuse_end(t, &y, 1), TG_OK);
    assert_int_equal(tg_tape_num_nodes(t), 1);
    assert_int_equal(count_op(t, TG_OP_FUSED), 0);
    tg_tape_free(t);
}

/* 7. Regions beyond the engine's limits: 150 instructions (a chain through a broadcast 1×n
 * row), and 40 distinct heap inputs each scaled by its own constant (so a mixed-up input
 * register would give some input the wrong gradient). Both must split into several fused
 * nodes that together equal the ops run one by one. */
typedef struct tg_tensor *(*graph_fn)(struct tg_tape *t, struct tg_tensor *const *xs, int n);

static struct tg_tensor *long_chain(struct tg_tape *t, struct tg_tensor *const *xs, int n)
{
    (void)n;
    tg_tape_fuse_begin(t);
    struct tg_tensor *y = xs[0];
    for (int i = 0; i < 50; i++) y = tg_tanh(t, tg_affine(t, tg_mul(t, y, xs[1]), 1.1, 0.05));
    tg_tape_fuse_end(t, &y, 1);
    return tg_sum(t, y);
}

static struct tg_tensor *many_inputs(struct tg_tape *t, struct tg_tensor *const *xs, int n)
{
    tg_tape_fuse_begin(t);
    struct tg_tensor *acc = xs[0];
    for (int i = 1; i < n; i++) acc = tg_add(t, acc, tg_affine(t, xs[i], 0.05 + 0.004 * i, 0));
    struct tg_tensor *y = tg_tanh(t, acc);
    tg_tape_fuse_end(t, &y, 1);
    return tg_sum(t, tg_mul(t, y, y));
}

/* Run fn on a tape with fusion off and on; same loss and gradients of every input. The fused
 * tape must hold at least min_fused fused nodes (≥ 2 where a region has to split). */
static void compare_graph(const char *what, graph_fn fn, struct tg_tensor *const *xs, int n,
                          size_t min_fused, size_t *nodes_fused, size_t *nodes_unfused)
{
    double l[2];
    double **gu = NULL;
    for (int fusion = 0; fusion < 2; fusion++) {
        struct tg_tape *t = tg_tape_new(0);
        tg_tape_set_fusion(t, fusion);
        for (int k = 0; k < n; k++) tg_tensor_zero_grad(xs[k]);
        struct tg_tensor *L = fn(t, xs, n);
        if (!L || tg_backward(t, L) != TG_OK)
            fail_msg("%s, fusion %d: %s", what, fusion, tg_last_error());
        l[fusion] = tg_get(L, 0, 0);
        if (fusion == 0) gu = grads_save(xs, n), *nodes_unfused = tg_tape_num_nodes(t);
        else *nodes_fused = tg_tape_num_nodes(t);
        if (fusion && count_op(t, TG_OP_FUSED) < min_fused)
            fail_msg("%s: %zu fused nodes, expected at least %zu", what, count_op(t, TG_OP_FUSED),
                     min_fused);
        tg_tape_free(t);
    }
    loss_check(what, l[1], l[0], 1e-13);
    grads_check(what, xs, n, gu, 1e-12);
    grads_free(gu, n);
}

static void test_region_limits(void **state)
{
    (void)state;
    struct tg_tensor *xs[40];
    size_t nf, nu;
    xs[0] = filled(tg_param_new("y0", 4, 7, TG_F64), 8);
    xs[1] = tg_param_new("w", 1, 7, TG_F64); /* gains near 1 keep the deep chain's gradient alive */
    struct tg_rng r;
    tg_rng_seed(&r, 9);
    tg_tensor_uniform(xs[1], &r, 0.6, 1.2);
    compare_graph("150-op chain", long_chain, xs, 2, 2, &nf, &nu);
    assert_true(nf < nu);
    tg_tensor_free(xs[0]);
    tg_tensor_free(xs[1]);

    for (int i = 0; i < 40; i++) xs[i] = filled(tg_param_new("x_i", 3, 5, TG_F64), 100 + (uint64_t)i);
    compare_graph("sum of 40 inputs", many_inputs, xs, 40, 2, &nf, &nu);
    assert_true(nf < nu);
    for (int i = 0; i < 40; i++) tg_tensor_free(xs[i]);
}

/* 8. A region left open. tg_tape_reset closes it: the next step records ops at once and its
 * backward is right. tg_backward closes it too: the loss (computed, because tg_sum read the
 * region) gets the same gradients as unfused, and the dangling pending op is simply dropped. */
static struct tg_tensor *left_open(struct tg_tape *t, struct tg_tensor *const *xs, int n)
{
    (void)n;
    tg_tape_fuse_begin(t);
    struct tg_tensor *a = tg_sigmoid(t, xs[0]);
    struct tg_tensor *L = tg_sum(t, tg_tanh(t, tg_mul(t, a, xs[1])));
    (void)tg_relu(t, tg_affine(t, a, 2.0, -1.0)); /* pending when backward starts */
    return L;                                     /* no tg_tape_fuse_end */
}

static void test_region_left_open(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *x = filled(tg_param_new("x", 3, 4, TG_F64), 10);
    tg_tape_fuse_begin(t);
    assert_true(pending(tg_tanh(t, x)));
    tg_tape_reset(t);
    assert_int_equal(tg_tape_num_nodes(t), 0);
    struct tg_tensor *h = tg_tanh(t, x);
    assert_non_null(h);
    assert_false(pending(h)); /* no region any more */
    assert_non_null(h->data);
    struct tg_tensor *L = tg_sum(t, tg_mul(t, h, h));
    assert_int_equal(tg_backward(t, L), TG_OK);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            double th = tanh(tg_get(x, i, j)), want = 2 * th * (1 - th * th);
            if (!(fabs(tg_grad_get(x, i, j) - want) <= 1e-14))
                fail_msg("after reset: dL/dx(%d,%d) = %.17g, want %.17g", i, j,
                         tg_grad_get(x, i, j), want);
        }
    tg_tape_free(t);

    struct tg_tensor *xs[2] = {x, filled(tg_param_new("w", 1, 4, TG_F64), 11)};
    size_t nf, nu;
    compare_graph("region left open at backward", left_open, xs, 2, 1, &nf, &nu);
    /* and backward did close it: an op recorded afterwards is computed at once */
    t = tg_tape_new(0);
    assert_int_equal(tg_backward(t, left_open(t, xs, 2)), TG_OK);
    h = tg_tanh(t, x);
    assert_non_null(h);
    assert_false(pending(h));
    assert_non_null(h->data);
    tg_tape_free(t);
    tg_tensor_free(xs[0]);
    tg_tensor_free(xs[1]);
}

/* A loss that is itself pending (per-step losses summed elementwise inside a region) survives
 * tg_backward closing the region; and switching fusion off with a region open leaves a pending
 * column slice usable (both were bugs: the loss and the slice were declared dead). */
static void test_pending_loss_and_fusion_off_midway(void **state)
{
    (void)state;
    struct tg_tensor *x = filled(tg_param_new("x", 2, 4, TG_F64), 12);
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_fuse_begin(t);
    struct tg_tensor *L = tg_add(t, tg_sum(t, tg_tanh(t, x)), tg_sum(t, tg_sigmoid(t, x)));
    assert_non_null(L);
    assert_true(pending(L));
    if (tg_backward(t, L) != TG_OK) fail_msg("pending loss: %s", tg_last_error());
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            double v = tg_get(x, i, j), th = tanh(v), sg = 1 / (1 + exp(-v));
            double want = (1 - th * th) + sg * (1 - sg);
            if (!(fabs(tg_grad_get(x, i, j) - want) <= 1e-14))
                fail_msg("pending loss: dL/dx(%d,%d) = %.17g, want %.17g", i, j,
                         tg_grad_get(x, i, j), want);
        }
    tg_tape_free(t);

    t = tg_tape_new(0);
    tg_tape_fuse_begin(t);
    struct tg_tensor *sl = tg_slice(t, x, 1, 1, 3);
    assert_true(pending(sl));
    assert_int_equal(tg_tape_set_fusion(t, 0), 1);
    struct tg_tensor *y = tg_tanh(t, sl);
    if (!y) fail_msg("slice after fusion off: %s", tg_last_error());
    assert_false(pending(y));
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            assert_true(fabs(tg_get(y, i, j) - tanh(tg_get(x, i, 1 + j))) <= 1e-15);
    tg_tape_free(t);
    tg_tensor_free(x);
}

/* ------------------------------------------------------------- review regressions */

/* Two chains of one shape but different dtypes never share a fused node (they did: one program
 * of the first output's dtype wrote doubles into float buffers). */
static void test_mixed_dtypes_split(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *x = tg_tensor_new(t, 2, 3, TG_F64), *y = tg_tensor_new(t, 2, 3, TG_F32);
    for (int i = 0; i < 6; i++) tg_set(x, 0, i, 0.3 * i - 0.7), tg_set(y, 0, i, 0.25 * i - 0.6);
    tg_tape_fuse_begin(t);
    struct tg_tensor *a = tg_tanh(t, x), *b = tg_sigmoid(t, y);
    struct tg_tensor *keep[2] = {a, b};
    assert_int_equal(tg_tape_fuse_end(t, keep, 2), TG_OK);
    for (int i = 0; i < 6; i++) {
        assert_true(fabs(tg_get(a, 0, i) - tanh(0.3 * i - 0.7)) <= 1e-15);
        assert_true(fabs(tg_get(b, 0, i) - 1 / (1 + exp(-(0.25 * i - 0.6)))) <= 1e-6);
    }
    tg_tape_free(t);
}

/* Pending ops computed while no-grad is on keep their history (they were recorded with it). */
static void test_no_grad_toggle_inside_region(void **state)
{
    (void)state;
    struct tg_tensor *x = filled(tg_param_new("x", 2, 3, TG_F64), 21);
    struct tg_tensor *w = filled(tg_param_new("w", 2, 3, TG_F64), 22);
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_fuse_begin(t);
    struct tg_tensor *h = tg_tanh(t, x);
    int old = tg_tape_set_no_grad(t, 1);
    assert_non_null(tg_sum(t, h)); /* computes the region under no-grad */
    tg_tape_set_no_grad(t, old);
    struct tg_tensor *y = tg_mul(t, h, w);
    assert_int_equal(tg_tape_fuse_end(t, &y, 1), TG_OK);
    assert_int_equal(tg_backward(t, tg_sum(t, y)), TG_OK);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            double th = tanh(tg_get(x, i, j)), want = (1 - th * th) * tg_get(w, i, j);
            if (!(fabs(tg_grad_get(x, i, j) - want) <= 1e-15))
                fail_msg("dL/dx(%d,%d) = %.17g, want %.17g", i, j, tg_grad_get(x, i, j), want);
        }
    tg_tape_free(t);
    tg_tensor_free(x);
    tg_tensor_free(w);
}

static struct tg_tensor *shifted_diff(struct tg_tape *t, struct tg_tensor *const *xs, int n)
{
    (void)n;
    tg_tape_fuse_begin(t);
    struct tg_tensor *d = tg_sub(t, tg_slice(t, xs[0], 0, 0, 64), tg_slice(t, xs[0], 0, 32, 96));
    tg_tape_fuse_end(t, &d, 1);
    return tg_sum(t, tg_mul(t, d, d));
}

/* Row views of one tensor at different rows (x[:64] − x[32:]) update overlapping rows of its
 * gradient: with 2 threads the rows must not be split (a race lost updates). Repeated, since
 * a race shows only sometimes. */
static void test_overlapping_row_views_threads(void **state)
{
    (void)state;
#if TG_HAVE_OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
#endif
    struct tg_tensor *X = filled(tg_param_new("X", 96, 512, TG_F64), 23);
    struct tg_tensor *xs[1] = {X};
    for (int rep = 0; rep < 4; rep++) {
        size_t nf, nu;
        compare_graph("overlapping row views, 2 threads", shifted_diff, xs, 1, 1, &nf, &nu);
    }
    tg_tensor_free(X);
#if TG_HAVE_OPENMP
    omp_set_num_threads(saved);
#endif
}

/* Nested regions are one region: an inner end keeps nothing alive or dead, the outer compiles. */
static void test_nested_regions(void **state)
{
    (void)state;
    struct tg_tensor *x = filled(tg_param_new("x", 2, 3, TG_F64), 24);
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_fuse_begin(t);
    tg_tape_fuse_begin(t);
    struct tg_tensor *a = tg_tanh(t, x);
    assert_int_equal(tg_tape_fuse_end(t, NULL, 0), TG_OK);
    assert_true(pending(a)); /* still in the outer region */
    struct tg_tensor *b = tg_mul(t, a, a);
    assert_non_null(b);
    assert_int_equal(tg_tape_fuse_end(t, &b, 1), TG_OK);
    for (int j = 0; j < 3; j++) {
        double th = tanh(tg_get(x, 0, j));
        assert_true(fabs(tg_get(b, 0, j) - th * th) <= 1e-15);
    }
    tg_tape_free(t);
    tg_tensor_free(x);
}

/* Out of memory while a region compiles: an error, the region's pending tensors are dead (no
 * later op indexes instructions that are gone), and the next step works. */
static void test_compile_out_of_memory(void **state)
{
    (void)state;
#if COUNT_MALLOC
    struct tg_tensor *x = filled(tg_param_new("x", 64, 64, TG_F64), 25);
    struct tg_tape *t = tg_tape_new(4096); /* small first block: compile must grow the arena */
    for (int round = 0; round < 2; round++) {
        tg_tape_reset(t);
        tg_tape_fuse_begin(t);
        struct tg_tensor *a = tg_tanh(t, x), *b = tg_sigmoid(t, a);
        heap_fail = round == 0;
        enum tg_status st = tg_tape_fuse_end(t, &b, 1);
        heap_fail = 0;
        if (round == 0) {
            assert_int_equal(st, TG_ERR_NOMEM);
            assert_null(tg_mul(t, a, b)); /* dead, not a wild index */
        } else {
            assert_int_equal(st, TG_OK);
            assert_true(fabs(tg_get(b, 3, 4) - 1 / (1 + exp(-tanh(tg_get(x, 3, 4))))) <= 1e-15);
        }
    }
    tg_tape_free(t);
    tg_tensor_free(x);
#else
    skip();
#endif
}

/* σ of column blocks of a product made in the region: the product's storage is reused for the
 * σ results unless it is kept; using it afterwards is an error, keeping it keeps its values. */
static void test_reused_storage(void **state)
{
    (void)state;
    struct tg_tensor *x = filled(tg_param_new("x", 3, 4, TG_F64), 26);
    struct tg_tensor *W = filled(tg_param_new("W", 6, 4, TG_F64), 27);
    for (int keep_g = 0; keep_g < 3; keep_g++) { /* 2: not kept, but a no-grad view of it exists */
        struct tg_tape *t = tg_tape_new(0);
        tg_tape_fuse_begin(t);
        struct tg_tensor *g = tg_matmul(t, x, W, 0, 1); /* 3×6: two blocks of 3 */
        struct tg_tensor *y = tg_mul(t, tg_sigmoid(t, tg_slice(t, g, 1, 0, 3)),
                                     tg_tanh(t, tg_slice(t, g, 1, 3, 6)));
        struct tg_tensor *keep[2] = {y, g};
        /* a view the tape does not record (no-grad) would see the reuse: none may happen */
        struct tg_tensor *row0 = NULL;
        if (keep_g == 2) {
            int old = tg_tape_set_no_grad(t, 1);
            row0 = tg_slice(t, g, 0, 0, 1);
            tg_tape_set_no_grad(t, old);
            assert_non_null(row0);
        }
        assert_int_equal(tg_tape_fuse_end(t, keep, keep_g == 1 ? 2 : 1), TG_OK);
        if (keep_g == 2) {
            assert_false(g->flags & TG_REUSED);
            double a = 0;
            for (int k = 0; k < 4; k++) a += tg_get(x, 0, k) * tg_get(W, 0, k);
            assert_true(fabs(tg_get(row0, 0, 0) - a) <= 1e-14);
            tg_tape_free(t);
            continue;
        }
        /* y is right either way */
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                double a = 0, b = 0;
                for (int k = 0; k < 4; k++)
                    a += tg_get(x, i, k) * tg_get(W, j, k), b += tg_get(x, i, k) * tg_get(W, 3 + j, k);
                assert_true(fabs(tg_get(y, i, j) - tanh(b) / (1 + exp(-a))) <= 1e-14);
                if (keep_g == 1) assert_true(fabs(tg_get(g, i, j) - a) <= 1e-14);
            }
        struct tg_tensor *sg = tg_sum(t, g);
        if (keep_g == 1) {
            assert_non_null(sg);
            assert_false(g->flags & TG_REUSED);
        } else {
            assert_true(g->flags & TG_REUSED);
            assert_null(sg);
            assert_int_equal(tg_tape_status(t), TG_ERR_STATE);
            assert_non_null(strstr(tg_last_error(), "reused its storage"));
        }
        tg_tape_free(t);
    }
    tg_tensor_free(x);
    tg_tensor_free(W);
}

/* The input projection as a fused node's kept output that its own region reads again: its
 * gradient must not become W's stage (the fused backward adds the in-region use into it, which
 * corrupted dW). Gradient-checked with fusion on. */
struct fused_proj_ctx { struct tg_tensor *X, *V, *W; };

static struct tg_tensor *fused_projection(struct tg_tape *t, void *vctx)
{
    struct fused_proj_ctx *c = vctx;
    struct tg_tensor *Z = tg_matmul(t, c->X, c->V, 0, 1);
    tg_tape_fuse_begin(t);
    struct tg_tensor *P = tg_tanh(t, Z), *Q = tg_sigmoid(t, P);
    struct tg_tensor *keep[2] = {P, Q};
    tg_tape_fuse_end(t, keep, 2);
    struct tg_tensor *h = tg_tensor_new(t, 2, 4, TG_F64);
    for (int s = 0; s < 3; s++)
        h = tg_tanh(t, tg_addmm(t, tg_slice(t, P, 0, 2 * s, 2 * s + 2), h, c->W, 0, 1));
    return tg_add(t, tg_sum(t, h), tg_sum(t, Q));
}

static void test_fused_projection_not_aliased(void **state)
{
    (void)state;
    struct fused_proj_ctx c = {filled(tg_tensor_new_heap(6, 3, TG_F64), 28),
                               filled(tg_param_new("V", 4, 3, TG_F64), 29),
                               filled(tg_param_new("W", 4, 4, TG_F64), 30)};
    struct tg_tensor *xs[2] = {c.V, c.W};
    struct tg_gradcheck_report rep;
    assert_int_equal(tg_gradcheck(fused_projection, &c, xs, 2, NULL, &rep), TG_OK);
    if (!rep.passed) fail_msg("gradcheck: worst relative error %.3g on tensor %d", rep.max_rel,
                              rep.worst_tensor);
    tg_tensor_free(c.X);
    tg_tensor_free(c.V);
    tg_tensor_free(c.W);
}

/* ------------------------------------------------------------------ 9. warm-up */

/* The fused node's program and kept outputs live in the arena and its scratch is reserved once,
 * so after the first steps a training loop allocates nothing: neither through the tape's
 * counter nor (outside ASan) on the real heap. The loss is bit-identical every step. */
static void test_no_heap_after_warmup(void **state)
{
    (void)state;
    struct mcase c;
    mcase_new(&c, tg_cell_find("lstm"), TG_F64, 3, 8, 2, 4, 6, 12);
    struct tg_tape *t = tg_tape_new(0);
    size_t allocs = 0, calls = 0;
    double first = 0;
    for (int step = 0; step < 5; step++) {
        size_t calls0 = heap_calls();
        tg_model_zero_grad(c.m);
        struct tg_seq_result res;
        if (tg_model_forward(c.m, t, &c.b, 0, &res) != TG_OK || tg_backward(t, res.loss) != TG_OK)
            fail_msg("step %d: %s", step, tg_last_error());
        assert_true(count_op(t, TG_OP_FUSED) > 0);
        double loss = tg_get(res.loss, 0, 0);
        tg_tape_reset(t);
        size_t calls_step = heap_calls() - calls0;
        if (step == 0) first = loss;
        else if (loss != first) fail_msg("step %d: loss %.17g, first step %.17g", step, loss, first);
        if (step == 1) allocs = tg_tape_heap_allocs(t), calls = calls_step;
        if (step >= 2) {
            if (tg_tape_heap_allocs(t) != allocs)
                fail_msg("step %d: tape heap allocations %zu, after step 2: %zu", step,
                         tg_tape_heap_allocs(t), allocs);
            if (COUNT_MALLOC && calls_step != 0)
                fail_msg("step %d: %zu heap calls (step 2 made %zu)", step, calls_step, calls);
        }
    }
    tg_tape_free(t);
    mcase_free(&c);
}

/* ------------------------------------------------------------------ 10. DOT */

static size_t count_str(const char *s, const char *w)
{
    size_t n = 0;
    for (const char *p = strstr(s, w); p; p = strstr(p + 1, w)) n++;
    return n;
}

/* The export knows the fused op: one fused node per LSTM step, drawn before and after
 * backward, with gradient edges into it when asked. */
static void test_dot_draws_fused_nodes(void **state)
{
    (void)state;
    struct mcase c;
    mcase_new(&c, tg_cell_find("lstm"), TG_F64, 3, 4, 1, 2, 3, 13);
    struct tg_tape *t = tg_tape_new(0);
    struct tg_seq_result res;
    assert_int_equal(tg_model_forward(c.m, t, &c.b, 0, &res), TG_OK);
    size_t fused = count_op(t, TG_OP_FUSED);
    assert_true(fused >= 3);
    struct tg_dot_opts o = {.loss = res.loss, .cell = "lstm"};
    struct tg_dot_stats st;
    char *text = NULL;
    size_t len = 0;
    if (tg_dot_to_string(t, &o, &text, &len, &st) != TG_OK) fail_msg("forward: %s", tg_last_error());
    assert_int_equal(strlen(text), len);
    if (count_str(text, "fused") < fused)
        fail_msg("forward DOT names \"fused\" %zu times for %zu fused nodes", count_str(text, "fused"),
                 fused);
    free(text);

    assert_int_equal(tg_backward(t, res.loss), TG_OK);
    o.backward = 1;
    if (tg_dot_to_string(t, &o, &text, &len, &st) != TG_OK) fail_msg("backward: %s", tg_last_error());
    assert_true(count_str(text, "fused") >= fused);
    assert_true(st.grad_edges > 0);
    assert_non_null(strstr(text, "class=\"grad\""));
    free(text);
    tg_tape_free(t);
    mcase_free(&c);
}

/* A cell that reads a value inside its step (tg_get on a tensor still pending in the region)
 * gets the value: the region so far is computed, the step goes on, nothing aborts (it used to
 * exit with status 134). An index out of range gives NaN and an error instead. */
static void test_get_pending_computes(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *x = tg_param_new("x", 2, 3, TG_F64);
    for (int i = 0; i < 6; i++) tg_set(x, 0, i, 0.2 * i - 0.5);
    tg_tape_fuse_begin(t);
    struct tg_tensor *a = tg_tanh(t, x);
    assert_true(pending(a));
    double v = tg_get(a, 1, 2);
    assert_true(fabs(v - tanh(0.5)) <= 1e-15);
    assert_false(pending(a));
    struct tg_tensor *b = tg_mul(t, a, a);
    struct tg_tensor *keep[1] = {b};
    assert_int_equal(tg_tape_fuse_end(t, keep, 1), TG_OK);
    struct tg_tensor *loss = tg_sum(t, b);
    assert_int_equal(tg_backward(t, loss), TG_OK);
    double y = tanh(0.2 * 5 - 0.5);
    assert_true(fabs(tg_grad_get(x, 1, 2) - 2 * y * (1 - y * y)) <= 1e-14);
    tg_error_clear();
    assert_true(isnan(tg_get(a, 2, 0)));
    assert_non_null(strstr(tg_last_error(), "outside (2x3)"));
    tg_tape_free(t);
    tg_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_cell_fused_equals_unfused),
        cmocka_unit_test(test_parallel_fused_equals_unfused),
        cmocka_unit_test(test_fusion_uses_less_arena),
        cmocka_unit_test(test_dead_intermediate),
        cmocka_unit_test(test_pending_computed_by_other_ops),
        cmocka_unit_test(test_fusion_off_is_noop),
        cmocka_unit_test(test_region_limits),
        cmocka_unit_test(test_region_left_open),
        cmocka_unit_test(test_pending_loss_and_fusion_off_midway),
        cmocka_unit_test(test_mixed_dtypes_split),
        cmocka_unit_test(test_get_pending_computes),
        cmocka_unit_test(test_no_grad_toggle_inside_region),
        cmocka_unit_test(test_overlapping_row_views_threads),
        cmocka_unit_test(test_nested_regions),
        cmocka_unit_test(test_compile_out_of_memory),
        cmocka_unit_test(test_reused_storage),
        cmocka_unit_test(test_fused_projection_not_aliased),
        cmocka_unit_test(test_no_heap_after_warmup),
        cmocka_unit_test(test_dot_draws_fused_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
