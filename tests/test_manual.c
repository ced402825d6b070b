/*
 * test_manual.c — the hand-derived BPTT oracles (models/manual/) against central finite
 * differences of their own forward loss, in float64, for every element of every parameter,
 * of x and of the initial states; float32 against float64; determinism; state carried across
 * chunks; argument errors.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tapegrad.h"
#include "tapegrad_manual.h"

#define MAXP 32  /* parameter tensors: L·4 + 2 with L ≤ 7 */

/* A random problem in float64. h0/c0 are always allocated (zeros when with_state is 0, in
 * which case the oracle is called with NULL and must treat that as zeros). */
struct prob {
    enum tg_manual_cell cell;
    struct tg_manual_dims d;
    int np, with_state;
    double *params[MAXP];
    size_t psize[MAXP];
    double *x, *h0, *c0;
    int32_t *y;
    size_t nx, ns;
};

static void prob_init(struct prob *p, enum tg_manual_cell cell, struct tg_manual_dims d,
                      uint64_t seed, int with_state)
{
    struct tg_rng rng;
    tg_rng_seed(&rng, seed);
    memset(p, 0, sizeof *p);
    p->cell = cell;
    p->d = d;
    p->with_state = with_state;
    p->np = tg_manual_num_params(cell, d.L);
    assert_true(p->np > 0 && p->np <= MAXP);
    for (int i = 0; i < p->np; i++) {
        int r, c;
        assert_int_equal(tg_manual_param_shape(cell, &d, i, &r, &c), TG_OK);
        p->psize[i] = (size_t)r * c;
        p->params[i] = malloc(p->psize[i] * sizeof(double));
        /* U(−0.6, 0.6): gates away from saturation, gradients of a useful size. */
        for (size_t j = 0; j < p->psize[i]; j++)
            p->params[i][j] = 1.2 * tg_rng_uniform(&rng) - 0.6;
    }
    p->nx = (size_t)d.T * d.B * d.In;
    p->ns = (size_t)d.L * d.B * d.H;
    p->x = malloc(p->nx * sizeof(double));
    for (size_t j = 0; j < p->nx; j++) p->x[j] = tg_rng_normal(&rng);
    p->h0 = calloc(p->ns, sizeof(double));
    p->c0 = calloc(p->ns, sizeof(double));
    if (with_state)
        for (size_t j = 0; j < p->ns; j++) {
            p->h0[j] = 0.8 * tg_rng_uniform(&rng) - 0.4;
            p->c0[j] = 2.0 * tg_rng_uniform(&rng) - 1.0;
        }
    p->y = malloc((size_t)d.T * d.B * sizeof(int32_t));
    for (int r = 0; r < d.T * d.B; r++)  /* every 3rd position from the 2nd: no loss there */
        p->y[r] = r % 3 == 1 ? -1 : (int32_t)tg_rng_below(&rng, (uint32_t)d.V);
}

static void prob_free(struct prob *p)
{
    for (int i = 0; i < p->np; i++) free(p->params[i]);
    free(p->x);
    free(p->h0);
    free(p->c0);
    free(p->y);
}

/* Forward only, with the state buffers passed explicitly (so they can be perturbed). */
static double prob_loss(struct prob *p)
{
    double loss = NAN;
    enum tg_status s = tg_manual_bptt_f64(p->cell, &p->d, (const double *const *)p->params,
                                          p->x, p->y, p->h0, p->c0, &loss, NULL, NULL, NULL,
                                          NULL, NULL, NULL, NULL);
    assert_int_equal(s, TG_OK);
    return loss;
}

struct grads {
    double *g[MAXP], *dx, *dh0, *dc0, loss;
};

static void grads_alloc(struct grads *g, const struct prob *p)
{
    memset(g, 0, sizeof *g);
    for (int i = 0; i < p->np; i++) {
        g->g[i] = malloc(p->psize[i] * sizeof(double));
        for (size_t j = 0; j < p->psize[i]; j++) g->g[i][j] = NAN;  /* must be overwritten */
    }
    g->dx = malloc(p->nx * sizeof(double));
    g->dh0 = malloc(p->ns * sizeof(double));
    g->dc0 = malloc(p->ns * sizeof(double));
}

static void grads_free(struct grads *g, const struct prob *p)
{
    for (int i = 0; i < p->np; i++) free(g->g[i]);
    free(g->dx);
    free(g->dh0);
    free(g->dc0);
}

static void prob_grads(struct prob *p, struct grads *g, void *ws)
{
    const int lstm = p->cell == TG_MANUAL_LSTM;
    enum tg_status s = tg_manual_bptt_f64(
        p->cell, &p->d, (const double *const *)p->params, p->x, p->y,
        p->with_state ? p->h0 : NULL, p->with_state ? p->c0 : NULL, &g->loss, g->g, g->dx,
        g->dh0, lstm ? g->dc0 : NULL, NULL, NULL, ws);
    assert_int_equal(s, TG_OK);
}

/* 4-point central difference of the loss in v[i]: O(h⁴) truncation error. */
static double fd(struct prob *p, double *v, size_t i)
{
    const double save = v[i], h = 1e-3 * fmax(1.0, fabs(save));
    double f[4];
    const double off[4] = {-2 * h, -h, h, 2 * h};
    for (int k = 0; k < 4; k++) {
        v[i] = save + off[k];
        f[k] = prob_loss(p);
    }
    v[i] = save;
    return (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h);
}

static double check_tensor(struct prob *p, const char *name, double *v, const double *a,
                           size_t n)
{
    double worst = 0.0;
    size_t wi = 0;
    double wa = 0, wn = 0;
    for (size_t i = 0; i < n; i++) {
        const double num = fd(p, v, i);
        const double rel = fabs(a[i] - num) / fmax(fmax(fabs(a[i]), fabs(num)), 1e-3);
        if (!(rel <= worst)) {  /* also catches NaN */
            worst = isnan(rel) ? INFINITY : rel;
            wi = i;
            wa = a[i];
            wn = num;
        }
    }
    if (worst > 1e-7)
        print_error("%s %-14s worst rel %.3g at %zu: analytic %.12g numeric %.12g\n",
                    tg_manual_cell_name(p->cell), name, worst, wi, wa, wn);
    return worst;
}

static void check_fd(enum tg_manual_cell cell, struct tg_manual_dims d, uint64_t seed,
                     int with_state)
{
    struct prob p;
    struct grads g;
    prob_init(&p, cell, d, seed, with_state);
    grads_alloc(&g, &p);
    prob_grads(&p, &g, NULL);
    assert_true(fabs(g.loss - prob_loss(&p)) <= 1e-12 * fmax(1.0, fabs(g.loss)));

    double worst = 0.0;
    char name[64];
    for (int i = 0; i < p.np; i++) {
        assert_int_equal(tg_manual_param_name(cell, &d, i, name, sizeof name), TG_OK);
        worst = fmax(worst, check_tensor(&p, name, p.params[i], g.g[i], p.psize[i]));
    }
    worst = fmax(worst, check_tensor(&p, "x", p.x, g.dx, p.nx));
    /* With with_state = 0 the analytic call got NULL states; the finite differences perturb
     * explicit zeros, which checks that NULL means zero. */
    worst = fmax(worst, check_tensor(&p, "h0", p.h0, g.dh0, p.ns));
    if (cell == TG_MANUAL_LSTM) worst = fmax(worst, check_tensor(&p, "c0", p.c0, g.dc0, p.ns));
    print_message("  %-8s T%d B%d I%d H%d L%d V%d%s: max rel err vs finite differences %.2e\n",
                  tg_manual_cell_name(cell), d.T, d.B, d.In, d.H, d.L, d.V,
                  with_state ? " (h0/c0 given)" : " (zero state)", worst);
    assert_true(worst <= 1e-7);
    grads_free(&g, &p);
    prob_free(&p);
}

static void fd_all_sizes(enum tg_manual_cell cell)
{
    check_fd(cell, (struct tg_manual_dims){.T = 4, .B = 2, .In = 3, .H = 5, .L = 2, .V = 4}, 11,
             1);
    check_fd(cell, (struct tg_manual_dims){.T = 1, .B = 1, .In = 2, .H = 3, .L = 1, .V = 3}, 12,
             0);
    check_fd(cell, (struct tg_manual_dims){.T = 3, .B = 3, .In = 2, .H = 4, .L = 3, .V = 5}, 13,
             1);
    check_fd(cell, (struct tg_manual_dims){.T = 6, .B = 1, .In = 4, .H = 3, .L = 1, .V = 2}, 14,
             0);
}

static void test_fd_rnn(void **state) { (void)state; fd_all_sizes(TG_MANUAL_RNN_TANH); }
static void test_fd_lstm(void **state) { (void)state; fd_all_sizes(TG_MANUAL_LSTM); }
static void test_fd_gru(void **state) { (void)state; fd_all_sizes(TG_MANUAL_GRU); }
static void test_fd_gru_cho(void **state) { (void)state; fd_all_sizes(TG_MANUAL_GRU_CHO); }

/* Relative difference with a floor of 1% of the tensor's largest magnitude: float32 keeps
 * about 7 digits of the largest terms of each sum, not of a result 10⁴ times smaller
 * (e.g. 2e-5 in a tensor whose largest gradient is 0.14 came out 1.4e-3 off in relative
 * terms — 2e-7 of the tensor's scale). A wrong derivative is off by far more than 1e-6 of
 * the scale. */
static double rel_err_tensor(const float *a, const double *b, size_t n)
{
    double scale = 0.0, worst = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)a[i] - b[i]) / fmax(fabs(b[i]), 1e-2 * scale + 1e-30));
    return worst;
}

/* float32 against float64 on the same problem. H = 8 fills whole vectors, H = 13 and V = 5
 * leave partial ones (the kernels' tails), V = 16 none. */
static void f32_vs_f64(struct tg_manual_dims d, uint64_t seed)
{
    for (int c = 0; c < TG_MANUAL_CELL_COUNT; c++) {
        struct prob p;
        struct grads g;
        prob_init(&p, (enum tg_manual_cell)c, d, seed + c, 1);
        grads_alloc(&g, &p);
        prob_grads(&p, &g, NULL);

        float *pf[MAXP], *gf[MAXP];
        for (int i = 0; i < p.np; i++) {
            pf[i] = malloc(p.psize[i] * sizeof(float));
            gf[i] = malloc(p.psize[i] * sizeof(float));
            for (size_t j = 0; j < p.psize[i]; j++) pf[i][j] = (float)p.params[i][j];
        }
        float *xf = malloc(p.nx * sizeof(float)), *dxf = malloc(p.nx * sizeof(float));
        float *h0f = malloc(p.ns * sizeof(float)), *c0f = malloc(p.ns * sizeof(float));
        float *dh0f = malloc(p.ns * sizeof(float)), *dc0f = malloc(p.ns * sizeof(float));
        for (size_t j = 0; j < p.nx; j++) xf[j] = (float)p.x[j];
        for (size_t j = 0; j < p.ns; j++) {
            h0f[j] = (float)p.h0[j];
            c0f[j] = (float)p.c0[j];
        }
        float lossf;
        const int lstm = c == TG_MANUAL_LSTM;
        assert_int_equal(tg_manual_bptt_f32((enum tg_manual_cell)c, &d, (const float *const *)pf,
                                            xf, p.y, h0f, c0f, &lossf, gf, dxf, dh0f,
                                            lstm ? dc0f : NULL, NULL, NULL, NULL),
                         TG_OK);
        /* float32 is deterministic too: a second call gives the same bits. */
        float *g2 = malloc(p.psize[0] * sizeof(float)), loss2;
        float *g2s[MAXP];
        memcpy(g2s, gf, sizeof g2s);
        g2s[0] = g2;
        assert_int_equal(tg_manual_bptt_f32((enum tg_manual_cell)c, &d, (const float *const *)pf,
                                            xf, p.y, h0f, c0f, &loss2, g2s, NULL, NULL, NULL,
                                            NULL, NULL, NULL),
                         TG_OK);
        assert_memory_equal(&loss2, &lossf, sizeof lossf);
        assert_memory_equal(g2, gf[0], p.psize[0] * sizeof(float));
        free(g2);

        double worst = fabs(lossf - g.loss) / fabs(g.loss);
        for (int i = 0; i < p.np; i++)
            worst = fmax(worst, rel_err_tensor(gf[i], g.g[i], p.psize[i]));
        worst = fmax(worst, rel_err_tensor(dxf, g.dx, p.nx));
        worst = fmax(worst, rel_err_tensor(dh0f, g.dh0, p.ns));
        if (lstm) worst = fmax(worst, rel_err_tensor(dc0f, g.dc0, p.ns));
        print_message("  %-8s H%-2d V%-2d float32 vs float64: max rel err %.2e\n",
                      tg_manual_cell_name((enum tg_manual_cell)c), d.H, d.V, worst);
        assert_true(worst <= 1e-4);
        for (int i = 0; i < p.np; i++) {
            free(pf[i]);
            free(gf[i]);
        }
        free(xf); free(dxf); free(h0f); free(c0f); free(dh0f); free(dc0f);
        grads_free(&g, &p);
        prob_free(&p);
    }
}

static void test_f32_matches_f64(void **state)
{
    (void)state;
    f32_vs_f64((struct tg_manual_dims){.T = 6, .B = 3, .In = 4, .H = 8, .L = 2, .V = 5}, 100);
    f32_vs_f64((struct tg_manual_dims){.T = 5, .B = 2, .In = 7, .H = 13, .L = 2, .V = 16}, 110);
}

/* Two calls — one allocating its workspace, one given a (dirty) workspace — agree bit for
 * bit; so does a call that wants no dx, dh0, dc0; grads = NULL gives the same loss. */
static void test_deterministic(void **state)
{
    (void)state;
    const struct tg_manual_dims d = {.T = 7, .B = 4, .In = 5, .H = 6, .L = 2, .V = 7};
    for (int c = 0; c < TG_MANUAL_CELL_COUNT; c++) {
        struct prob p;
        struct grads g1, g2;
        prob_init(&p, (enum tg_manual_cell)c, d, 200 + c, 1);
        grads_alloc(&g1, &p);
        grads_alloc(&g2, &p);
        size_t wsb = tg_manual_workspace_bytes((enum tg_manual_cell)c, &d, sizeof(double));
        assert_true(wsb > 0);
        void *ws = aligned_alloc(64, wsb);
        memset(ws, 0xA5, wsb);
        prob_grads(&p, &g1, NULL);
        prob_grads(&p, &g2, ws);
        assert_memory_equal(&g1.loss, &g2.loss, sizeof(double));
        for (int i = 0; i < p.np; i++)
            assert_memory_equal(g1.g[i], g2.g[i], p.psize[i] * sizeof(double));
        assert_memory_equal(g1.dx, g2.dx, p.nx * sizeof(double));
        assert_memory_equal(g1.dh0, g2.dh0, p.ns * sizeof(double));
        prob_grads(&p, &g2, ws);  /* reusing the workspace */
        assert_memory_equal(g1.g[0], g2.g[0], p.psize[0] * sizeof(double));
        double loss3;
        assert_int_equal(tg_manual_bptt_f64(p.cell, &d, (const double *const *)p.params, p.x,
                                            p.y, p.h0, p.c0, &loss3, g2.g, NULL, NULL, NULL,
                                            NULL, NULL, ws),
                         TG_OK);
        for (int i = 0; i < p.np; i++)
            assert_memory_equal(g1.g[i], g2.g[i], p.psize[i] * sizeof(double));
        double lf = prob_loss(&p);
        assert_memory_equal(&lf, &g1.loss, sizeof(double));
        free(ws);
        grads_free(&g1, &p);
        grads_free(&g2, &p);
        prob_free(&p);
    }
}

/* hT/cT are the final states: running T steps at once gives the loss of running the first
 * T1 steps and then the rest from the state the first part returned (truncated BPTT). */
static void test_state_carry(void **state)
{
    (void)state;
    const struct tg_manual_dims d = {.T = 6, .B = 2, .In = 3, .H = 4, .L = 2, .V = 3};
    for (int c = 0; c < TG_MANUAL_CELL_COUNT; c++) {
        struct prob p;
        prob_init(&p, (enum tg_manual_cell)c, d, 300 + c, 1);
        const int lstm = c == TG_MANUAL_LSTM;
        double full, l1, l2;
        double *hT = malloc(p.ns * sizeof(double)), *cT = malloc(p.ns * sizeof(double));
        double *hT2 = malloc(p.ns * sizeof(double)), *cT2 = malloc(p.ns * sizeof(double));
        double *hT3 = malloc(p.ns * sizeof(double)), *cT3 = malloc(p.ns * sizeof(double));
        const double *const *prm = (const double *const *)p.params;
        assert_int_equal(tg_manual_bptt_f64(p.cell, &d, prm, p.x, p.y, p.h0, p.c0, &full, NULL,
                                            NULL, NULL, NULL, hT, lstm ? cT : NULL, NULL),
                         TG_OK);
        struct tg_manual_dims d1 = d, d2 = d;
        d1.T = 2;
        d2.T = 4;
        const size_t off = (size_t)d1.T * d.B;
        assert_int_equal(tg_manual_bptt_f64(p.cell, &d1, prm, p.x, p.y, p.h0, p.c0, &l1, NULL,
                                            NULL, NULL, NULL, hT2, cT2, NULL),
                         TG_OK);
        assert_int_equal(tg_manual_bptt_f64(p.cell, &d2, prm, p.x + off * d.In, p.y + off, hT2,
                                            cT2, &l2, NULL, NULL, NULL, NULL, hT3, cT3, NULL),
                         TG_OK);
        assert_true(fabs(full - (l1 + l2)) <= 1e-12 * fabs(full));
        for (size_t j = 0; j < p.ns; j++) {
            assert_true(fabs(hT[j] - hT3[j]) <= 1e-13);
            if (lstm) assert_true(fabs(cT[j] - cT3[j]) <= 1e-13);
        }
        free(hT); free(cT); free(hT2); free(cT2); free(hT3); free(cT3);
        prob_free(&p);
    }
}

/* With every label −1 there is no loss: loss 0 and every gradient exactly 0. */
static void test_all_masked(void **state)
{
    (void)state;
    const struct tg_manual_dims d = {.T = 3, .B = 2, .In = 2, .H = 3, .L = 2, .V = 4};
    for (int c = 0; c < TG_MANUAL_CELL_COUNT; c++) {
        struct prob p;
        struct grads g;
        prob_init(&p, (enum tg_manual_cell)c, d, 400 + c, 1);
        for (int r = 0; r < d.T * d.B; r++) p.y[r] = -1;
        grads_alloc(&g, &p);
        prob_grads(&p, &g, NULL);
        assert_true(g.loss == 0.0);
        for (int i = 0; i < p.np; i++)
            for (size_t j = 0; j < p.psize[i]; j++) assert_true(g.g[i][j] == 0.0);
        for (size_t j = 0; j < p.nx; j++) assert_true(g.dx[j] == 0.0);
        grads_free(&g, &p);
        prob_free(&p);
    }
}

static void test_shapes_and_names(void **state)
{
    (void)state;
    const struct tg_manual_dims d = {.T = 2, .B = 2, .In = 3, .H = 5, .L = 2, .V = 7};
    int r, c;
    char name[32];
    assert_int_equal(tg_manual_params_per_layer(TG_MANUAL_LSTM), 4);
    assert_int_equal(tg_manual_params_per_layer(TG_MANUAL_GRU_CHO), 2);
    assert_int_equal(tg_manual_num_params(TG_MANUAL_GRU, 2), 10);
    assert_int_equal(tg_manual_param_shape(TG_MANUAL_LSTM, &d, 0, &r, &c), TG_OK);
    assert_true(r == 20 && c == 3);
    assert_int_equal(tg_manual_param_shape(TG_MANUAL_LSTM, &d, 4, &r, &c), TG_OK);
    assert_true(r == 20 && c == 5);  /* weight_ih_l1 reads the layer below: width H */
    assert_int_equal(tg_manual_param_shape(TG_MANUAL_GRU, &d, 3, &r, &c), TG_OK);
    assert_true(r == 1 && c == 15);
    assert_int_equal(tg_manual_param_shape(TG_MANUAL_GRU_CHO, &d, 2, &r, &c), TG_OK);
    assert_true(r == 15 && c == 10);  /* weight_l1: 3H × (H + H) */
    assert_int_equal(tg_manual_param_shape(TG_MANUAL_RNN_TANH, &d, 8, &r, &c), TG_OK);
    assert_true(r == 7 && c == 5);
    assert_int_equal(tg_manual_param_name(TG_MANUAL_LSTM, &d, 5, name, sizeof name), TG_OK);
    assert_string_equal(name, "weight_hh_l1");
    assert_int_equal(tg_manual_param_name(TG_MANUAL_GRU_CHO, &d, 1, name, sizeof name), TG_OK);
    assert_string_equal(name, "bias_l0");
    assert_int_equal(tg_manual_param_name(TG_MANUAL_GRU, &d, 9, name, sizeof name), TG_OK);
    assert_string_equal(name, "out.bias");
    assert_int_equal(tg_manual_param_shape(TG_MANUAL_GRU, &d, 10, &r, &c), TG_ERR_VALUE);
    assert_int_equal(tg_manual_param_name(TG_MANUAL_GRU, &d, 0, name, 4), TG_ERR_VALUE);
    assert_string_equal(tg_manual_cell_name(TG_MANUAL_GRU_CHO), "gru_cho");
    assert_int_equal(tg_manual_cell_from_name("lstm"), TG_MANUAL_LSTM);
    assert_int_equal(tg_manual_cell_from_name("nope"), -1);
    assert_true(tg_manual_forward_flops(TG_MANUAL_LSTM, &d) > 0.0);
}

static void test_errors(void **state)
{
    (void)state;
    struct tg_manual_dims d = {.T = 2, .B = 2, .In = 3, .H = 4, .L = 1, .V = 3};
    struct prob p;
    prob_init(&p, TG_MANUAL_GRU, d, 500, 0);
    const double *const *prm = (const double *const *)p.params;
    double loss;

    d.H = 0;
    assert_int_equal(tg_manual_bptt_f64(TG_MANUAL_GRU, &d, prm, p.x, p.y, NULL, NULL, &loss,
                                        NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                     TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "tg_manual_bptt_f64"));
    assert_non_null(strstr(tg_last_error(), "H=0"));
    assert_int_equal(tg_manual_workspace_bytes(TG_MANUAL_GRU, &d, 8), 0);
    d.H = 4;
    d.T = -1;
    assert_int_equal(tg_manual_bptt_f32(TG_MANUAL_GRU, &d, NULL, NULL, NULL, NULL, NULL, NULL,
                                        NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                     TG_ERR_SHAPE);
    d.T = 2;

    p.y[3] = 3;  /* = V */
    assert_int_equal(tg_manual_bptt_f64(TG_MANUAL_GRU, &d, prm, p.x, p.y, NULL, NULL, &loss,
                                        NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                     TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "label 3 at time step 2 of 2 (batch row 1)"));
    p.y[3] = -2;
    assert_int_equal(tg_manual_bptt_f64(TG_MANUAL_GRU, &d, prm, p.x, p.y, NULL, NULL, &loss,
                                        NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                     TG_ERR_VALUE);
    p.y[3] = 0;
    assert_int_equal(tg_manual_bptt_f64((enum tg_manual_cell)7, &d, prm, p.x, p.y, NULL, NULL,
                                        &loss, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                     TG_ERR_VALUE);
    assert_int_equal(tg_manual_bptt_f64(TG_MANUAL_GRU, &d, prm, NULL, p.y, NULL, NULL, &loss,
                                        NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                     TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "x is NULL"));
    double *g[MAXP] = {0};
    assert_int_equal(tg_manual_bptt_f64(TG_MANUAL_GRU, &d, prm, p.x, p.y, NULL, NULL, &loss, g,
                                        NULL, NULL, NULL, NULL, NULL, NULL),
                     TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "grads[0] is NULL"));
    assert_int_equal(tg_manual_bptt_f64(TG_MANUAL_GRU, &d, prm, p.x, p.y, NULL, NULL, &loss,
                                        NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                     TG_OK);
    prob_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_and_names),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_fd_rnn),
        cmocka_unit_test(test_fd_lstm),
        cmocka_unit_test(test_fd_gru),
        cmocka_unit_test(test_fd_gru_cho),
        cmocka_unit_test(test_f32_matches_f64),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_state_carry),
        cmocka_unit_test(test_all_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
