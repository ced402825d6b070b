/* test_flow_sketch.c — the ledger's estimator mode (f->sketch = k, models/flow.c), and the split
 * of ∂L/∂h_t against its definition. The estimator: the per-step
 * norms of product weight terms estimated from two CountSketches, ‖(S₁dOutᵀ)(A S₂ᵀ)‖_F².
 *
 *   unbiased      over many seeds the mean of the estimated ‖term‖² is within 5 standard
 *                 errors of the exact value, the standard error taken from the stated variance
 *                 bound ((2/k)(1 + 2/k) + 2/k)·‖term‖⁴; the sample variance is below that bound
 *                 (a factor 1.5 allowed for the sampling error of a variance over 1500 seeds)
 *   reproducible  the same seed gives bit-identical estimates; another seed different ones
 *   hook = end    sketches made in the backward hook equal those tg_flow_end makes afterwards
 *   split         ∂L/∂h_t's split equals its definition computed by the test's own hook (a copy
 *                 of every h_t's gradient when the walk reaches h_t's layer), 5 cells, 2 layers,
 *                 fusion on and off (kept from an attempt to take the split step by step in
 *                 the hook, correct but slower, and not in)
 *   exact rest    bias terms, tg_flow_term (Σ_t terms = gradient ≤ 1e-12) and ‖∂L/∂h_t‖ and
 *                 its split are the same as in exact mode
 *   no allocation a loop with the sketch on allocates nothing after its first step
 *   cli           --ledger sketch:K runs and says ESTIMATED; a bad --ledger fails in one line
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test_util.h"

#include "tapegrad_flow.h"
#include "tapegrad_models.h"

struct fixture {
    struct tg_model *m;
    double *x;
    int32_t *labels;
    struct tg_seq_batch b;
    struct tg_tape *t;
    struct tg_flow *f;
    struct tg_seq_result res;
};

/* A float64 model of cell, recorded once with the ledger armed and its backward run. */
static void fixture_new(struct fixture *s, const char *cell, int T, int B, int I, int H, int L, int V)
{
    struct tg_model_config cfg = {.cell = tg_cell_find(cell), .input = I, .hidden = H, .layers = L,
                                  .outputs = V, .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    assert_int_equal(tg_model_new(&cfg, &s->m), TG_OK);
    struct tg_rng r;
    tg_rng_seed(&r, 77);
    tg_model_init_uniform(s->m, &r);
    s->x = malloc(sizeof(double) * T * B * I);
    s->labels = malloc(sizeof(int32_t) * T * B);
    for (int i = 0; i < T * B * I; i++) s->x[i] = tg_rng_normal(&r);
    for (int i = 0; i < T * B; i++) s->labels[i] = (int32_t)tg_rng_below(&r, (uint32_t)V);
    s->b = (struct tg_seq_batch){.T = T, .B = B, .x = s->x, .labels = s->labels};
    s->t = tg_tape_new(0);
    assert_int_equal(tg_flow_new(s->m, T, B, &s->f), TG_OK);
}

static void fixture_run(struct fixture *s)
{
    tg_tape_reset(s->t);
    tg_model_zero_grad(s->m);
    assert_int_equal(tg_model_forward_from(s->m, s->t, &s->b, NULL, &s->res), TG_OK);
    assert_int_equal(tg_flow_begin(s->f, s->t, &s->res), TG_OK);
    assert_int_equal(tg_backward(s->t, s->res.loss), TG_OK);
    assert_int_equal(tg_flow_end(s->f, s->t, &s->res), TG_OK);
}

static void fixture_free(struct fixture *s)
{
    tg_flow_free(s->f);
    tg_tape_free(s->t);
    tg_model_free(s->m);
    free(s->x);
    free(s->labels);
}

static int is_bias(const struct tg_model *m, int p) { return m->params[p]->rows == 1; }

static void check_unbiased(const char *cell, int k)
{
    struct fixture s;
    int T = 4, B = 6, H = 7;
    fixture_new(&s, cell, T, B, 5, H, 2, 5);
    fixture_run(&s);
    int P = s.m->n_params;
    size_t PT = (size_t)P * T;
    double *exact = malloc(PT * sizeof *exact), *sum = calloc(PT, sizeof *sum), *sum2 = calloc(PT, sizeof *sum2);
    for (size_t i = 0; i < PT; i++) exact[i] = s.f->contrib[i] * s.f->contrib[i];
    const int n = 1500;
    s.f->sketch = k;
    for (int seed = 1; seed <= n; seed++) {
        s.f->sketch_seed = (uint64_t)seed * 0x9e3779b97f4a7c15ULL;
        /* the same recorded tape, read again with another draw of the sketches */
        assert_int_equal(tg_flow_end(s.f, s.t, &s.res), TG_OK);
        for (size_t i = 0; i < PT; i++) {
            double e = s.f->contrib[i] * s.f->contrib[i];
            sum[i] += e, sum2[i] += e * e;
        }
    }
    double vb = (2.0 / k) * (1 + 2.0 / k) + 2.0 / k, worst = 0, worst_var = 0;
    int tested = 0;
    for (int p = 0; p < P; p++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)p * T + t;
            double mean = sum[i] / n, var = sum2[i] / n - mean * mean;
            if (is_bias(s.m, p)) { /* exact in both modes */
                if (fabs(mean - exact[i]) > 1e-12 * fmax(exact[i], 1e-300))
                    fail_msg("%s %s step %d: bias term changed by the sketch", cell, s.m->names[p], t);
                continue;
            }
            if (exact[i] == 0) continue;
            double se = sqrt(vb / n) * exact[i], z = fabs(mean - exact[i]) / se;
            if (z > worst) worst = z;
            if (var / (vb * exact[i] * exact[i]) > worst_var) worst_var = var / (vb * exact[i] * exact[i]);
            if (z > 5)
                fail_msg("%s k=%d %s step %d: mean of %d estimates %.6g, exact %.6g (%.1f standard errors)",
                         cell, k, s.m->names[p], t, n, mean, exact[i], z);
            if (var > 1.5 * vb * exact[i] * exact[i])
                fail_msg("%s k=%d %s step %d: variance %.3g above the stated bound %.3g", cell, k,
                         s.m->names[p], t, var, vb * exact[i] * exact[i]);
            tested++;
        }
    assert_true(tested >= 10);
    printf("# %s k=%d: %d terms, worst |mean − exact| = %.2f standard errors (bound), worst variance "
           "%.2f of the bound\n", cell, k, tested, worst, worst_var);
    free(exact);
    free(sum);
    free(sum2);
    fixture_free(&s);
}

static void test_unbiased(void **state)
{
    (void)state;
    check_unbiased("lstm", 4);
    check_unbiased("gru", 2);
    check_unbiased("rnn_tanh", 3);
}

static void test_reproducible_and_rest_exact(void **state)
{
    (void)state;
    struct fixture s;
    int T = 6, B = 5;
    fixture_new(&s, "gru", T, B, 4, 6, 2, 5);
    fixture_run(&s);
    int P = s.m->n_params, L = 2;
    size_t PT = (size_t)P * T, LT = (size_t)L * T;
    double *ex = malloc(PT * sizeof *ex), *a = malloc(PT * sizeof *a), *gh = malloc(3 * LT * sizeof *gh);
    memcpy(ex, s.f->contrib, PT * sizeof *ex);
    memcpy(gh, s.f->grad_h, LT * sizeof *gh);
    memcpy(gh + LT, s.f->from_out, LT * sizeof *gh);
    memcpy(gh + 2 * LT, s.f->from_next, LT * sizeof *gh);
    s.f->sketch = 8, s.f->sketch_seed = 42;
    assert_int_equal(tg_flow_end(s.f, s.t, &s.res), TG_OK);
    memcpy(a, s.f->contrib, PT * sizeof *a);
    assert_int_equal(tg_flow_end(s.f, s.t, &s.res), TG_OK);
    assert_memory_equal(a, s.f->contrib, PT * sizeof *a);
    s.f->sketch_seed = 43;
    assert_int_equal(tg_flow_end(s.f, s.t, &s.res), TG_OK);
    int differ = 0, estimated = 0;
    for (size_t i = 0; i < PT; i++) differ += a[i] != s.f->contrib[i], estimated += a[i] != ex[i];
    assert_true(differ > 0);
    assert_true(estimated > 0);
    assert_memory_equal(gh, s.f->grad_h, LT * sizeof *gh);
    assert_memory_equal(gh + LT, s.f->from_out, LT * sizeof *gh);
    assert_memory_equal(gh + 2 * LT, s.f->from_next, LT * sizeof *gh);
    /* the explicit terms still add up to the gradient */
    for (int p = 0; p < P; p++) {
        const struct tg_tensor *w = s.m->params[p];
        size_t n = tg_numel(w);
        double *sum = calloc(n, sizeof *sum), *term = malloc(n * sizeof *term), gmax = 0, err = 0;
        for (int t = 0; t < T; t++) {
            assert_int_equal(tg_flow_term(s.f, p, t, term), TG_OK);
            for (size_t i = 0; i < n; i++) sum[i] += term[i];
            if (is_bias(s.m, p)) {
                double nn = 0;
                for (size_t i = 0; i < n; i++) nn += term[i] * term[i];
                assert_true(fabs(sqrt(nn) - s.f->contrib[(size_t)p * T + t]) <= 1e-12 * fmax(sqrt(nn), 1e-300));
            }
        }
        for (size_t i = 0; i < n; i++) {
            double g = ((double *)w->grad)[i];
            gmax = fmax(gmax, fabs(g)), err = fmax(err, fabs(g - sum[i]));
        }
        assert_true(gmax > 0);
        if (err > 1e-12 * gmax) fail_msg("%s: Σ_t terms off by %.3g relative", s.m->names[p], err / gmax);
        free(sum);
        free(term);
    }
    free(ex);
    free(a);
    free(gh);
    fixture_free(&s);
}

/* Sketches made by the backward hook (data in cache) and by tg_flow_end afterwards (the store
 * rebuilt for another seed, then for the first again) give bit-identical estimates. */
static void test_hook_same_as_end(void **state)
{
    (void)state;
    const char *cells[] = {"lstm", "gru", "rnn_tanh"};
    for (int c = 0; c < 3; c++)
        for (int fusion = 0; fusion <= 1; fusion++) {
            struct fixture s;
            int T = 5;
            fixture_new(&s, cells[c], T, 4, 3, 6, 2, 5);
            tg_tape_set_fusion(s.t, fusion ? TG_FUSION_ON : TG_FUSION_OFF);
            s.f->sketch = 8, s.f->sketch_seed = 42;
            fixture_run(&s);
            size_t PT = (size_t)s.m->n_params * T;
            double *a = malloc(PT * sizeof *a);
            memcpy(a, s.f->contrib, PT * sizeof *a);
            s.f->sketch_seed = 43;
            assert_int_equal(tg_flow_end(s.f, s.t, &s.res), TG_OK);
            s.f->sketch_seed = 42;
            assert_int_equal(tg_flow_end(s.f, s.t, &s.res), TG_OK);
            for (size_t i = 0; i < PT; i++)
                if (memcmp(&a[i], &s.f->contrib[i], sizeof *a) != 0)
                    fail_msg("%s fusion %d %s step %zu: hook %.17g, end %.17g", cells[c], fusion,
                             s.m->names[i / T], i % T, a[i], s.f->contrib[i]);
            free(a);
            fixture_free(&s);
        }
}

/* The split of ∂L/∂h_t against its definition computed here by a hook of the test's own: h_t's gradient copied for every t when the reverse walk reaches
 * the first node of h_t's layer, then total, copy and their difference after backward. */
struct ref_snap {
    const struct tg_seq_result *res;
    int T, L, n_state, *done;
    double *above;                /* [(l·T + t)·B·H] */
    size_t bh;
};

static void ref_hook(void *ctx, const struct tg_node *n, int after)
{
    struct ref_snap *r = ctx;
    if (after || n->layer < 0 || n->layer >= r->L || r->done[n->layer]) return;
    r->done[n->layer] = 1;
    for (int t = 0; t < r->T; t++) {
        const struct tg_tensor *h = r->res->states[((size_t)n->layer * r->T + t) * r->n_state];
        for (size_t i = 0; i < r->bh; i++)
            r->above[((size_t)n->layer * r->T + t) * r->bh + i] = h->grad ? ((double *)h->grad)[i] : 0;
    }
}

static void test_split_definition(void **state)
{
    (void)state;
    const char *cells[] = {"lstm", "gru", "rnn_tanh", "gru_cho", "lstm_peephole"};
    double worst = 0;
    for (int c = 0; c < 5; c++)
        for (int fusion = 0; fusion <= 1; fusion++) {
            struct fixture s;
            int T = 6, B = 3, H = 5, L = 2;
            fixture_new(&s, cells[c], T, B, 4, H, L, 5);
            tg_tape_set_fusion(s.t, fusion ? TG_FUSION_ON : TG_FUSION_OFF);
            fixture_run(&s);
            struct ref_snap r = {.T = T, .L = L, .n_state = s.m->cfg.cell->n_state, .bh = (size_t)B * H};
            r.done = calloc((size_t)L, sizeof *r.done);
            r.above = calloc((size_t)L * T * r.bh, sizeof *r.above);
            struct tg_tape *t2 = tg_tape_new(0);
            tg_tape_set_fusion(t2, fusion ? TG_FUSION_ON : TG_FUSION_OFF);
            struct tg_seq_result res2;
            tg_model_zero_grad(s.m);
            assert_int_equal(tg_model_forward_from(s.m, t2, &s.b, NULL, &res2), TG_OK);
            r.res = &res2;
            tg_tape_set_backward_hook(t2, ref_hook, &r);
            assert_int_equal(tg_backward(t2, res2.loss), TG_OK);
            for (int l = 0; l < L; l++)
                for (int t = 0; t < T; t++) {
                    const double *g = res2.states[((size_t)l * T + t) * r.n_state]->grad;
                    const double *a = r.above + ((size_t)l * T + t) * r.bh;
                    double tot = 0, up = 0, nx = 0;
                    for (size_t i = 0; i < r.bh; i++) {
                        double x = g ? g[i] : 0;
                        tot += x * x, up += a[i] * a[i], nx += (x - a[i]) * (x - a[i]);
                    }
                    double want[3] = {sqrt(tot), sqrt(up), sqrt(nx)};
                    double got[3] = {tg_flow_at(s.f->grad_h, s.f, l, t), tg_flow_at(s.f->from_out, s.f, l, t),
                                     tg_flow_at(s.f->from_next, s.f, l, t)};
                    for (int k = 0; k < 3; k++) {
                        double d = fabs(got[k] - want[k]) / fmax(want[0], 1e-300);
                        worst = fmax(worst, d);
                        if (d > 1e-12)
                            fail_msg("%s fusion %d layer %d step %d: split %d is %.17g, by definition %.17g",
                                     cells[c], fusion, l, t, k, got[k], want[k]);
                    }
                    if (t < T - 1 && want[2] == 0) fail_msg("%s: nothing from step t+1, nothing tested", cells[c]);
                }
            tg_tape_free(t2);
            free(r.done);
            free(r.above);
            fixture_free(&s);
        }
    printf("# split vs its definition: worst %.2e (relative to ‖∂L/∂h_t‖)\n", worst);
}

static void test_allocates_nothing_per_step(void **state)
{
    (void)state;
    struct fixture s;
    fixture_new(&s, "lstm", 8, 4, 3, 6, 2, 5);
    s.f->sketch = 16, s.f->sketch_seed = 3;
    fixture_run(&s);
    fixture_run(&s);
    size_t before = tg_tape_heap_allocs(s.t);
    for (int i = 0; i < 3; i++) fixture_run(&s);
    assert_int_equal(tg_tape_heap_allocs(s.t), before);
    fixture_free(&s);
}

#define TAPEGRAD TG_BUILD_DIR "/tools/tapegrad"


static int file_has(const char *path, const char *needle, int *lines)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (lines) {
        *lines = 0;
        for (size_t i = 0; i < n; i++) *lines += buf[i] == '\n';
    }
    return strstr(buf, needle) != NULL;
}

static void test_cli(void **state)
{
    (void)state;
    char dir[] = "/tmp/tg_flow_sketchXXXXXX", p[512];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(tg_test_sh("cd %s && " TAPEGRAD " flow --cell lstm --task adding --length 8 --batch 4 --hidden 5 "
                        "--ledger sketch:8 --no-jacobian --json f.json > t.txt", dir), 0);
    snprintf(p, sizeof p, "%s/t.txt", dir);
    assert_true(file_has(p, "ESTIMATED (CountSketch, 8 buckets", NULL));
    snprintf(p, sizeof p, "%s/f.json", dir);
    assert_true(file_has(p, "\"sketch\"", NULL));
    assert_int_equal(tg_test_sh("cd %s && " TAPEGRAD " flow --length 8 --batch 4 --hidden 5 --no-jacobian > t.txt", dir), 0);
    snprintf(p, sizeof p, "%s/t.txt", dir);
    assert_true(file_has(p, "per-step weight-gradient norms: exact", NULL));
    const char *bad[] = {"sketchy", "sketch:0", "sketch:", "sketch:4x", "Exact"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_not_equal(tg_test_sh("cd %s && " TAPEGRAD " flow --length 8 --ledger %s > /dev/null 2> err.txt", dir, bad[i]), 0);
        int lines = 0;
        snprintf(p, sizeof p, "%s/err.txt", dir);
        assert_true(file_has(p, "--ledger", &lines));
        assert_int_equal(lines, 1);
    }
    tg_test_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unbiased),
        cmocka_unit_test(test_reproducible_and_rest_exact),
        cmocka_unit_test(test_hook_same_as_end),
        cmocka_unit_test(test_split_definition),
        cmocka_unit_test(test_allocates_nothing_per_step),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
