/* test_layernorm.c — a layer-normalised LSTM written with the public ops (tests/ln_lstm_cell.h:
 * row_mean, column-broadcast sub and div, sqrt, per-unit gain and bias), run through the
 * sequence model like a built-in cell:
 *  1. layer norm itself: with γ = 1, β = 0 each row of LN(a) has mean 0, mean square v/(v+ε);
 *  2. the whole sequence model (L = 1 and 2) against central finite differences in float64,
 *     over every parameter and the initial state;
 *  3. fused: the tape holds TG_OP_FUSED nodes with fusion on (and lean), and the loss and every
 *     gradient match fusion off to 1e-12 relative (float64; several sizes, with 2 threads
 *     where OpenMP is available);
 *  4. after warm-up a training step allocates nothing (the tape's counter and, outside ASan,
 *     the real heap);
 *  5. the DOT export names the new ops, unfused and inside fused nodes' labels. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad_models.h"
#include "ln_lstm_cell.h"
#include "tapegrad_dot.h"
#include "tg_config.h"
#if TG_HAVE_OPENMP
#include <omp.h>
#endif
/* Counting malloc: the warm-up test checks the real heap, not only the tape's counter. */
#include "malloc_count.h"
#include "seq_case.h"

/* Gains U(0.5, 1.5), the norm's biases U(−0.5, 0.5), other weights U(−0.8, 0.8). */
static void ln_init(struct tg_model *m, int i, struct tg_rng *r)
{
    int spec = m->param_spec[i];
    if (spec == LN_G_GAIN || spec == LN_C_GAIN) tg_tensor_uniform(m->params[i], r, 0.5, 1.5);
    else if (spec == LN_G_BIAS || spec == LN_C_BIAS) tg_tensor_uniform(m->params[i], r, -0.5, 0.5);
    else tg_tensor_uniform(m->params[i], r, -0.8, 0.8);
}

static void make_case(struct seq_case *c, int T, int B, int I, int H, int L, int V,
                      enum tg_dtype dt, uint64_t seed, int with_init)
{
    seq_case_new(c, &ln_lstm_cell, T, B, I, H, L, V, dt, seed, with_init, ln_init);
}

static int count_fused(const struct tg_tape *t)
{
    int n = 0;
    for (size_t i = 0; i < tg_tape_num_nodes(t); i++)
        n += tg_node_op(tg_tape_node(t, i)) == TG_OP_FUSED;
    return n;
}

/* ------------------------------------------------------------ 1. layer norm */

/* With γ = 1, β = 0 each row of LN(a) has mean 0 and mean square v/(v + ε), fused or not, in
 * both dtypes; a row of equal values (v = 0) normalises to 0, not NaN. */
static void test_layer_norm_rows(void **state)
{
    (void)state;
    enum { R = 5, N = 37 };
    for (int d = 0; d < 2; d++)
        for (int fused = 0; fused < 2; fused++) {
            enum tg_dtype dt = d ? TG_F64 : TG_F32;
            struct tg_tensor *a = tg_tensor_new_heap(R, N, dt);
            struct tg_tensor *gain = tg_tensor_new_heap(1, N, dt), *bias = tg_tensor_new_heap(1, N, dt);
            struct tg_rng r;
            tg_rng_seed(&r, 5);
            tg_tensor_uniform(a, &r, -3, 5);
            for (int j = 0; j < N; j++) tg_set(a, R - 1, j, 2.5); /* a constant row */
            tg_tensor_fill(gain, 1.0);
            struct tg_tape *t = tg_tape_new(0);
            tg_tape_set_fusion(t, fused ? TG_FUSION_ON : TG_FUSION_OFF);
            tg_tape_fuse_begin(t);
            struct tg_tensor *y = ln_rows(t, a, gain, bias);
            assert_int_equal(tg_tape_fuse_end(t, &y, 1), TG_OK);
            assert_non_null(y);
            for (int i = 0; i < R; i++) {
                double m = 0, v = 0, s = 0, s2 = 0;
                for (int j = 0; j < N; j++) m += tg_get(a, i, j) / N;
                for (int j = 0; j < N; j++) v += (tg_get(a, i, j) - m) * (tg_get(a, i, j) - m) / N;
                for (int j = 0; j < N; j++) s += tg_get(y, i, j) / N, s2 += tg_get(y, i, j) * tg_get(y, i, j) / N;
                double tol = d ? 1e-12 : 1e-5;
                if (!(fabs(s) <= tol) || !(fabs(s2 - v / (v + LN_EPS)) <= tol))
                    fail_msg("%s%s row %d: mean %.3g, mean square %.9g (want 0, %.9g)",
                             tg_dtype_name(dt), fused ? " fused" : "", i, s, s2, v / (v + LN_EPS));
            }
            tg_tape_free(t);
            tg_tensor_free(a);
            tg_tensor_free(gain);
            tg_tensor_free(bias);
        }
}

/* ------------------------------------------------------ 2. finite differences */

static void gradcheck_layers(int L, uint64_t seed)
{
    struct seq_case c;
    make_case(&c, 4, 2, 3, 5, L, 3, TG_F64, seed, 1);
    struct tg_tensor *xs[32];
    int nx = 0;
    for (int k = 0; k < c.m->n_params; k++) xs[nx++] = c.m->params[k];
    for (int k = 0; k < c.n_init; k++) xs[nx++] = c.init[k];
    struct tg_gradcheck_opts o = {.tol = 1e-7};
    struct tg_gradcheck_report rep;
    assert_int_equal(tg_gradcheck(seq_case_loss, &c, xs, nx, &o, &rep), TG_OK);
    printf("# ln_lstm L=%d FD: %ld elements, max rel %.2e, max abs %.2e\n", L, rep.checked,
           rep.max_rel, rep.max_abs);
    if (!rep.passed)
        fail_msg("ln_lstm L=%d: rel %.3g at tensor %d (%d,%d): analytic %.17g numeric %.17g", L,
                 rep.max_rel, rep.worst_tensor, rep.worst_row, rep.worst_col, rep.worst_analytic,
                 rep.worst_numeric);
    assert_true(rep.checked > 200);
    seq_case_free(&c);
}

static void test_gradcheck_one_layer(void **state)
{
    (void)state;
    gradcheck_layers(1, 101);
}

static void test_gradcheck_two_layers(void **state)
{
    (void)state;
    gradcheck_layers(2, 202);
}

/* ---------------------------------------------------------------- 3. fused */

/* Loss and every gradient (parameters, then initial state) of one forward and backward. */
static size_t run_grads(struct seq_case *c, int mode, double *loss, double *g, int *n_fused)
{
    tg_model_zero_grad(c->m);
    for (int k = 0; k < c->n_init; k++) tg_tensor_zero_grad(c->init[k]);
    struct tg_tape *t = tg_tape_new(0);
    c->fusion = mode;
    struct tg_tensor *l = seq_case_loss(t, c);
    if (!l || tg_backward(t, l) != TG_OK) fail_msg("fusion mode %d: %s", mode, tg_last_error());
    *loss = tg_get(l, 0, 0);
    *n_fused = count_fused(t);
    size_t o = 0;
    for (int k = 0; k < c->m->n_params + c->n_init; k++) {
        struct tg_tensor *p = k < c->m->n_params ? c->m->params[k] : c->init[k - c->m->n_params];
        for (int r = 0; r < p->rows; r++)
            for (int q = 0; q < p->cols; q++) g[o++] = tg_grad_get(p, r, q);
    }
    tg_tape_free(t);
    return o;
}

static void fused_matches_unfused(int threads)
{
#if TG_HAVE_OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    /* small; one with 300 units (4H = 1200: rows of several fusion chunks) and enough work
     * for 2 threads to split the fused rows */
    const int sizes[3][5] = {{3, 2, 3, 4, 1}, {5, 3, 4, 6, 2}, {3, 48, 8, 300, 1}}; /* T B I H L */
    double worst = 0;
    for (int s = 0; s < 3; s++) {
        struct seq_case c;
        make_case(&c, sizes[s][0], sizes[s][1], sizes[s][2], sizes[s][3], sizes[s][4], 5, TG_F64,
                  300 + (uint64_t)s, 1);
        size_t n = 0;
        for (int k = 0; k < c.m->n_params; k++) n += tg_numel(c.m->params[k]);
        for (int k = 0; k < c.n_init; k++) n += tg_numel(c.init[k]);
        double *g[3], loss[3];
        int nf[3];
        for (int m = 0; m < 3; m++) {
            g[m] = malloc(n * sizeof *g[m]);
            int mode = m == 0 ? TG_FUSION_OFF : m == 1 ? TG_FUSION_ON : TG_FUSION_LEAN;
            assert_int_equal(run_grads(&c, mode, &loss[m], g[m], &nf[m]), n);
        }
        assert_int_equal(nf[0], 0);
        /* every step of every layer has at least its gate math fused */
        int steps = sizes[s][0] * sizes[s][4];
        if (nf[1] < steps || nf[2] < steps)
            fail_msg("size %d: %d and %d fused nodes (on, lean) for %d cell steps", s, nf[1], nf[2], steps);
        double scale = 0;
        for (size_t j = 0; j < n; j++) scale = fmax(scale, fabs(g[0][j]));
        for (int m = 1; m < 3; m++) {
            double d = fabs(loss[m] - loss[0]) / fabs(loss[0]);
            for (size_t j = 0; j < n; j++) d = fmax(d, fabs(g[m][j] - g[0][j]) / scale);
            worst = fmax(worst, d);
            if (!(d <= 1e-12))
                fail_msg("size %d (T%d B%d H%d L%d), %s, %d threads: relative difference %.3g from "
                         "unfused", s, sizes[s][0], sizes[s][1], sizes[s][3], sizes[s][4],
                         m == 1 ? "fusion on" : "lean", threads, d);
        }
        printf("# T%d B%d H%d L%d: %d fused nodes (%d lean) for %d cell steps\n", sizes[s][0],
               sizes[s][1], sizes[s][3], sizes[s][4], nf[1], nf[2], steps);
        for (int m = 0; m < 3; m++) free(g[m]);
        seq_case_free(&c);
    }
    printf("# ln_lstm, %d thread(s): worst relative difference fused vs unfused %.3g\n", threads, worst);
#if TG_HAVE_OPENMP
    omp_set_num_threads(saved);
#endif
}

static void test_fused_matches_unfused_one_thread(void **state)
{
    (void)state;
    fused_matches_unfused(1);
}

static void test_fused_matches_unfused_two_threads(void **state)
{
    (void)state;
    fused_matches_unfused(2);
}

/* -------------------------------------------------------------- 4. warm-up */

static void test_no_heap_after_warmup(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        struct seq_case c;
        make_case(&c, 6, 4, 5, 8, 2, 7, d ? TG_F64 : TG_F32, 11, 0);
        struct tg_tape *t = tg_tape_new(0);
        size_t allocs = 0, calls = 0;
        double first = 0;
        for (int step = 0; step < 5; step++) {
            size_t calls0 = heap_calls();
            tg_model_zero_grad(c.m);
            struct tg_seq_result res;
            if (tg_model_forward(c.m, t, &c.b, 0, &res) != TG_OK || tg_backward(t, res.loss) != TG_OK)
                fail_msg("step %d: %s", step, tg_last_error());
            assert_true(count_fused(t) > 0);
            double loss = tg_get(res.loss, 0, 0);
            tg_tape_reset(t);
            size_t calls_step = heap_calls() - calls0;
            if (step == 0) first = loss;
            else if (loss != first) fail_msg("step %d: loss %.17g, first step %.17g", step, loss, first);
            if (step == 1) allocs = tg_tape_heap_allocs(t), calls = calls_step;
            if (step >= 2) {
                if (tg_tape_heap_allocs(t) != allocs)
                    fail_msg("%s step %d: tape heap allocations %zu, after step 2: %zu",
                             tg_dtype_name(c.m->cfg.dtype), step, tg_tape_heap_allocs(t), allocs);
                if (COUNT_MALLOC && calls_step != 0)
                    fail_msg("%s step %d: %zu heap calls (step 2 made %zu)",
                             tg_dtype_name(c.m->cfg.dtype), step, calls_step, calls);
            }
        }
        tg_tape_free(t);
        seq_case_free(&c);
    }
}

/* ------------------------------------------------------------------ 5. DOT */

static void test_dot_names_new_ops(void **state)
{
    (void)state;
    for (int fused = 0; fused < 2; fused++) {
        struct seq_case c;
        make_case(&c, 2, 2, 3, 3, 1, 3, TG_F64, 5, 0);
        struct tg_tape *t = tg_tape_new(0);
        tg_tape_set_fusion(t, fused ? TG_FUSION_ON : TG_FUSION_OFF);
        struct tg_seq_result res;
        assert_int_equal(tg_model_forward(c.m, t, &c.b, 0, &res), TG_OK);
        assert_int_equal(tg_backward(t, res.loss), TG_OK);
        struct tg_dot_opts o = {.backward = 1, .values = 1, .cell = "ln_lstm"};
        char *dot = NULL;
        size_t len = 0;
        assert_int_equal(tg_dot_to_string(t, &o, &dot, &len, NULL), TG_OK);
        const char *names[] = {"row_mean", "div", "sqrt", "affine", "sigmoid", "tanh"}; /* ("sub" would match "subgraph") */
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (!strstr(dot, names[i]))
                fail_msg("DOT (fusion %s) does not name %s", fused ? "on" : "off", names[i]);
        assert_true(!fused || strstr(dot, "fused"));
        free(dot);
        tg_tape_free(t);
        seq_case_free(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_norm_rows),
        cmocka_unit_test(test_gradcheck_one_layer),
        cmocka_unit_test(test_gradcheck_two_layers),
        cmocka_unit_test(test_fused_matches_unfused_one_thread),
        cmocka_unit_test(test_fused_matches_unfused_two_threads),
        cmocka_unit_test(test_no_heap_after_warmup),
        cmocka_unit_test(test_dot_names_new_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
