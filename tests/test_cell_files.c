/* test_cell_files.c — the nine built-in cells written as cell files (models/cells/NAME.cell):
 *  1. each file's loss and every gradient (parameters and initial states) and final states
 *     agree with its C cell in float64, 2 layers, fusion on and off: bit-identical where the
 *     op order is the same (it is, for all nine), and at most 1e-13 relative in any case;
 *  2. the file cells pass central finite differences;
 *  3. the hoisting plan: lstm, gru, rnn_tanh record exactly the nodes the C cells record;
 *  4. load + compile time. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tapegrad_models.h"

static const char *const NAMES[9] = {"rnn_tanh", "rnn_relu", "lstm", "gru", "gru_cho",
                                     "lstm_peephole", "lstm_coupled", "lstm_dlbook", "mgu"};

static struct tg_cell *load(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/models/cells/%s.cell", TG_SOURCE_DIR, name);
    struct tg_cell *c = tg_cell_load(path);
    if (!c) fail_msg("%s", tg_last_error());
    return c;
}

struct run {
    struct tg_model *m;
    struct tg_tensor *init[6];
    int n_init;
    double loss;
    struct tg_tape *t;
    struct tg_seq_result res;
    size_t nodes;
};

/* Build a model of `cell` with parameters and initial states from seed, run forward+backward. */
static void run_model(struct run *r, const struct tg_cell *cell, int T, int B, int I, int H, int L,
                      int fusion, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L, .outputs = 3,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    if (tg_model_new(&cfg, &r->m) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_rng g;
    tg_rng_seed(&g, seed);
    for (int i = 0; i < r->m->n_params; i++) tg_tensor_uniform(r->m->params[i], &g, -0.8, 0.8);
    static double x[4096];
    static int32_t y[1024];
    for (int i = 0; i < T * B * I; i++) x[i] = 2 * tg_rng_uniform(&g) - 1;
    for (int i = 0; i < T * B; i++) y[i] = (int32_t)tg_rng_below(&g, 3);
    r->n_init = L * cell->n_state;
    for (int i = 0; i < r->n_init; i++) {
        r->init[i] = tg_tensor_new_heap(B, H, TG_F64);
        tg_tensor_uniform(r->init[i], &g, -0.5, 0.5);
        tg_tensor_set_requires_grad(r->init[i]);
    }
    struct tg_seq_batch b = {.T = T, .B = B, .x = x, .labels = y};
    r->t = tg_tape_new(0);
    tg_tape_set_fusion(r->t, fusion);
    if (tg_model_forward_from(r->m, r->t, &b, r->init, &r->res) != TG_OK) fail_msg("%s", tg_last_error());
    if (tg_backward(r->t, r->res.loss) != TG_OK) fail_msg("%s", tg_last_error());
    r->loss = tg_get(r->res.loss, 0, 0);
    r->nodes = tg_tape_num_nodes(r->t);
}

static void free_run(struct run *r)
{
    tg_tape_free(r->t);
    tg_model_free(r->m);
    for (int i = 0; i < r->n_init; i++) tg_tensor_free(r->init[i]);
}

/* max |a − b| / max |b| over n doubles; counts differing elements in *ndiff */
static double rel_diff(const double *a, const double *b, size_t n, size_t *ndiff)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
        *ndiff += a[i] != b[i];
    }
    return s > 0 ? d / s : d;
}

static void test_files_match_c_cells(void **state)
{
    (void)state;
    double worst = 0;
    for (int fusion = 0; fusion <= 1; fusion++) {
        for (int k = 0; k < 9; k++) {
            struct tg_cell *fc = load(NAMES[k]);
            const struct tg_cell *cc = tg_cell_find(NAMES[k]);
            assert_non_null(cc);
            assert_string_equal(fc->name, cc->name);
            assert_int_equal(fc->n_state, cc->n_state);
            assert_int_equal(fc->n_params, cc->n_params);
            struct run a, b;
            run_model(&a, fc, 5, 3, 4, 6, 2, fusion, 1000 + (uint64_t)k);
            run_model(&b, cc, 5, 3, 4, 6, 2, fusion, 1000 + (uint64_t)k);
            size_t ndiff = 0;
            double rel = rel_diff(&a.loss, &b.loss, 1, &ndiff);
            assert_int_equal(a.m->n_params, b.m->n_params);
            for (int i = 0; i < a.m->n_params; i++) {
                assert_string_equal(a.m->names[i], b.m->names[i]);
                assert_int_equal(a.m->params[i]->rows, b.m->params[i]->rows);
                assert_int_equal(a.m->params[i]->cols, b.m->params[i]->cols);
                rel = fmax(rel, rel_diff(a.m->params[i]->grad, b.m->params[i]->grad,
                                         tg_numel(a.m->params[i]), &ndiff));
            }
            for (int i = 0; i < a.n_init; i++) {
                rel = fmax(rel, rel_diff(a.init[i]->grad, b.init[i]->grad, tg_numel(a.init[i]), &ndiff));
                rel = fmax(rel, rel_diff(a.res.final[i]->data, b.res.final[i]->data, tg_numel(a.init[i]), &ndiff));
            }
            printf("# %-14s fusion %s: loss %.17g, max rel diff %.3g, %zu elements differ, nodes %zu / %zu\n",
                   NAMES[k], fusion ? "on " : "off", a.loss, rel, ndiff, a.nodes, b.nodes);
            if (!(rel <= 1e-13)) fail_msg("%s: file vs C cell: relative difference %.3g", NAMES[k], rel);
            assert_int_equal(ndiff, 0); /* same ops in the same order: bit-identical */
            assert_int_equal(a.nodes, b.nodes);
            worst = fmax(worst, rel);
            free_run(&a);
            free_run(&b);
            tg_cell_free(fc);
        }
    }
    printf("# worst relative difference file vs C over 9 cells x 2 fusion modes: %.3g\n", worst);
}

static struct run *fd_run;
static struct tg_seq_batch fd_batch;

static struct tg_tensor *fd_loss(struct tg_tape *t, void *ctx)
{
    struct run *r = ctx;
    struct tg_seq_result res;
    if (tg_model_forward_from(r->m, t, &fd_batch, r->init, &res) != TG_OK) return NULL;
    return res.loss;
}

static void test_files_vs_finite_differences(void **state)
{
    (void)state;
    for (int k = 0; k < 9; k++) {
        struct tg_cell *fc = load(NAMES[k]);
        struct run r;
        run_model(&r, fc, 3, 2, 3, 4, 2, 1, 55 + (uint64_t)k);
        static double x[64];
        static int32_t y[16];
        struct tg_rng g;
        tg_rng_seed(&g, 9);
        for (int i = 0; i < 18; i++) x[i] = 2 * tg_rng_uniform(&g) - 1;
        for (int i = 0; i < 6; i++) y[i] = (int32_t)tg_rng_below(&g, 3);
        fd_batch = (struct tg_seq_batch){.T = 3, .B = 2, .x = x, .labels = y};
        fd_run = &r;
        struct tg_tensor *xs[64];
        int nx = 0;
        for (int i = 0; i < r.m->n_params; i++) xs[nx++] = r.m->params[i];
        for (int i = 0; i < r.n_init; i++) xs[nx++] = r.init[i];
        struct tg_gradcheck_opts o = {.tol = 1e-7, .skip_kinks = strcmp(NAMES[k], "rnn_relu") == 0};
        struct tg_gradcheck_report rep;
        assert_int_equal(tg_gradcheck(fd_loss, &r, xs, nx, &o, &rep), TG_OK);
        printf("# %-14s file vs FD: %ld elements, max rel %.2e\n", NAMES[k], rep.checked, rep.max_rel);
        if (!rep.passed) fail_msg("%s: FD rel %.3g", NAMES[k], rep.max_rel);
        free_run(&r);
        tg_cell_free(fc);
    }
}

/* Cells from the literature written only as files, against finite differences (1 and 2 layers):
 * the language's every function, scalars per sequence, broadcasting and vector parameters. */
static const char *const LITERATURE[][2] = {
    {"indrnn", "state h\nparam weight_ih[H, I], weight_hh[H], bias_ih[H]\n"
               "h' = relu(weight_ih @ x + bias_ih + weight_hh * h)\n"},
    {"janet", "state h, c\nparam W[2H, I], U[2H, H], b[2H]\n"
              "a = W @ x + U @ h + b\nf = sigmoid(a[0:H])\nc' = f * c + (1 - f) * tanh(a[H:2H])\nh' = c'\n"},
    {"ln_lstm", "state h, c\nparam weight_ih[4H, I], weight_hh[4H, H], bias[4H], gamma[4H], beta[4H]\n"
                "a = weight_ih @ x + weight_hh @ h + bias\nm = mean(a)\nd = a - m\n"
                "n = d / sqrt(mean(d * d) + 1e-5) * gamma + beta\n"
                "c' = sigmoid(n[H:2H]) * c + sigmoid(n[0:H]) * tanh(n[2H:3H])\n"
                "h' = sigmoid(n[3H:4H]) * tanh(c')\n"},
    {"mut1", "state h\nparam W_xz[H, I], b_z[H], W_xr[H, I], W_hr[H, H], b_r[H], W_hh[H, H], b_h[H]\n"
             "z = sigmoid(W_xz @ x + b_z)\nr = sigmoid(W_xr @ x + W_hr @ h + b_r)\n"
             "h' = tanh(W_hh @ (r * h) + tanh(x) + b_h) * z + h * (1 - z)\n"},
    {"scalars", "state h\nparam W[H, H], U[H, I], v[H]\n"  /* blocks of width 1 and H, side by side */
                "a = tanh(W @ h + mean(x))\nb = sigmoid(U @ x)\nh' = a * b + sum(x) * v\n"},
    {"every", "cell every\nstate h, s\nparam W[2H, I + H], b[2H], v[H]\n"
              "a = W @ [x, h] + b\np = softplus(a[0:H]) + exp(-abs(a[H:2H])) + 0.5\n"
              "q = log(p) / sqrt(p) - sum(p) / 8 + mean(relu(a[0:H]))\n"
              "s' = tanh(q) * v + sigmoid(s) - 1 / (2 + s * s)\nh' = -s' * 0.25 + 3 * tanh(h) / 3\n"},
};

static void test_literature_cells_vs_finite_differences(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof LITERATURE / sizeof LITERATURE[0]; k++) {
        for (int L = 1; L <= 2; L++) {
            struct tg_cell *fc = tg_cell_parse(LITERATURE[k][1], strlen(LITERATURE[k][1]), LITERATURE[k][0]);
            if (!fc) fail_msg("%s", tg_last_error());
            struct run r;
            run_model(&r, fc, 3, 2, 4, 4, L, 1, 99 + k); /* I = H: MUT1 adds tanh(x) to H units */
            static double x[64];
            static int32_t y[16];
            struct tg_rng g;
            tg_rng_seed(&g, 3 + k);
            for (int i = 0; i < 24; i++) x[i] = 2 * tg_rng_uniform(&g) - 1;
            for (int i = 0; i < 6; i++) y[i] = (int32_t)tg_rng_below(&g, 3);
            fd_batch = (struct tg_seq_batch){.T = 3, .B = 2, .x = x, .labels = y};
            struct tg_tensor *xs[64];
            int nx = 0;
            for (int i = 0; i < r.m->n_params; i++) xs[nx++] = r.m->params[i];
            for (int i = 0; i < r.n_init; i++) xs[nx++] = r.init[i];
            /* the step a user's LN-LSTM failed at (3.8e-7): the check chooses its own now */
            struct tg_gradcheck_opts o = {.tol = 1e-7, .skip_kinks = 1, .step = L == 2 ? 3.8e-7 : 0};
            struct tg_gradcheck_report rep;
            assert_int_equal(tg_gradcheck(fd_loss, &r, xs, nx, &o, &rep), TG_OK);
            printf("# %-8s L=%d vs FD: %ld elements (%ld at kinks), max rel %.2e\n", LITERATURE[k][0], L,
                   rep.checked, rep.skipped, rep.max_rel);
            if (!rep.passed) fail_msg("%s: FD rel %.3g", LITERATURE[k][0], rep.max_rel);
            assert_true(rep.checked > 40);
            free_run(&r);
            tg_cell_free(fc);
        }
    }
}

/* tg_gradcheck's verdicts: a gradient missing a part of relative size 5e-7 fails at every step
 * a caller may pass; one that checked no element does not pass. */
static double wrong_scale;
static struct tg_tensor *wrong_W;

static struct tg_tensor *wrong_loss(struct tg_tape *t, void *ctx)
{
    (void)ctx;
    /* sum(W⊙W) + s·sum(W⊙detach(W)): autodiff misses s·W of the true gradient (2 + 2s)·W */
    struct tg_tensor *a = tg_sum(t, tg_mul(t, wrong_W, wrong_W));
    struct tg_tensor *d = tg_detach(t, wrong_W);
    struct tg_tensor *b = tg_sum(t, tg_mul(t, wrong_W, d));
    return tg_add(t, a, tg_affine(t, b, wrong_scale, 0));
}

static struct tg_tensor *kink_loss(struct tg_tape *t, void *ctx)
{
    (void)ctx;
    return tg_sum(t, tg_relu(t, wrong_W));
}

static void test_gradcheck_verdicts(void **state)
{
    (void)state;
    wrong_W = tg_param_new("W", 3, 4, TG_F64);
    struct tg_rng g;
    tg_rng_seed(&g, 8);
    tg_tensor_uniform(wrong_W, &g, 0.5, 1.5);
    const double steps[] = {0, 3.8e-7, 1e-5, 1e-2};
    for (int k = 0; k < 4; k++) {
        struct tg_gradcheck_opts o = {.tol = 1e-7, .step = steps[k]};
        struct tg_gradcheck_report rep;
        wrong_scale = 1e-6;
        assert_int_equal(tg_gradcheck(wrong_loss, NULL, &wrong_W, 1, &o, &rep), TG_OK);
        if (rep.passed) fail_msg("step %g: a wrong gradient passed (max rel %.3g)", steps[k], rep.max_rel);
        wrong_scale = 0;
        assert_int_equal(tg_gradcheck(wrong_loss, NULL, &wrong_W, 1, &o, &rep), TG_OK);
        if (!rep.passed) fail_msg("step %g: a right gradient failed (max rel %.3g)", steps[k], rep.max_rel);
    }
    tg_tensor_fill(wrong_W, 0.0); /* every element on relu's kink: all skipped */
    struct tg_gradcheck_opts o = {.skip_kinks = 1};
    struct tg_gradcheck_report rep;
    assert_int_equal(tg_gradcheck(kink_loss, NULL, &wrong_W, 1, &o, &rep), TG_OK);
    assert_int_equal(rep.checked, 0);
    assert_int_equal(rep.skipped, 12);
    assert_false(rep.passed);
    tg_tensor_free(wrong_W);
}

/* Anomaly mode names the equation: a cell file's ops carry "FILE:LINE" as their origin. */
static void test_anomaly_names_the_line(void **state)
{
    (void)state;
    const char src[] = "state h\nparam U[H, H]\nlx = log(x)\nh' = tanh(lx + U @ h)\n";
    struct tg_cell *c = tg_cell_parse(src, strlen(src), "logcell.cell");
    if (!c) fail_msg("%s", tg_last_error());
    enum { T = 4, B = 2, H = 3 };
    struct tg_model_config cfg = {.cell = c, .input = H, .hidden = H, .layers = 1, .outputs = 2,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    assert_int_equal(tg_model_new(&cfg, &m), TG_OK);
    double x[T * B * H];
    int32_t y[T * B] = {0};
    for (int i = 0; i < T * B * H; i++) x[i] = 0.5 + 0.1 * i;
    x[(2 * B + 1) * H + 1] = -0.25; /* step 3, sequence 1, unit 1 */
    struct tg_seq_batch b = {.T = T, .B = B, .x = x, .labels = y};
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_set_anomaly(t, 1);
    struct tg_seq_result res;
    assert_int_not_equal(tg_model_forward_from(m, t, &b, NULL, &res), TG_OK);
    printf("# %s\n", tg_last_error());
    assert_non_null(strstr(tg_last_error(), "log [logcell.cell:3]"));
    tg_tape_free(t);
    tg_model_free(m);
    tg_cell_free(c);
}

static void test_load_time(void **state)
{
    (void)state;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int k = 0; k < 9; k++) tg_cell_free(load(NAMES[k]));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = ((double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) * 1e-6) / 9;
    printf("# load + compile: %.3f ms per file\n", ms);
    assert_true(ms < 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files_match_c_cells),
        cmocka_unit_test(test_files_vs_finite_differences),
        cmocka_unit_test(test_literature_cells_vs_finite_differences),
        cmocka_unit_test(test_gradcheck_verdicts),
        cmocka_unit_test(test_anomaly_names_the_line),
        cmocka_unit_test(test_load_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
