/* test_flow.c — the gradient-flow ledger (models/flow.c) and anomaly mode (autograd/observe.c).
 *
 *   contributions  every parameter's per-step terms add up to its gradient (≤ 1e-12 relative,
 *                  float64, all nine cells, two layers, fusion on and off), and the Gram-matrix
 *                  norms equal the norms of the explicit terms
 *   split          ‖part of ∂L/∂h_t from step t+1‖ against central differences of the loss of
 *                  steps t+1…T run from the recorded state at t, h_t^l perturbed
 *   jacobian       ‖∂h_T/∂h_t‖ (exact) against central differences of h_T over the same runs;
 *                  the estimator against the exact value
 *   torch          every h_t's gradient and every parameter's per-step term against PyTorch
 *                  (tests/fixtures/flow, made by gen_flow_fixtures.py with retain_grad and
 *                  per-step parameter clones)
 *   anomaly        a planted log of a negative (a C cell tagging FILE:LINE, and a parsed cell
 *                  file) and an exploding RNN are reported at the right op, FILE:LINE, step,
 *                  layer, sequence and unit, fusion on (regions replayed op by op on a hit)
 *                  and off; an ∞ made in a fused region's backward is named the same way; a
 *                  NaN loss is refused
 *   embedding      embed.weight's per-step terms (ids repeated within a step) sum to its
 *                  gradient
 *   no allocation  a loop that keeps the ledger on allocates nothing after its first step
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
#include "tapegrad_safetensors.h"

struct setup {
    struct tg_model *m;
    double *x;
    int32_t *labels;
    struct tg_seq_batch b;
};

static void setup_new(struct setup *s, const struct tg_cell *cell, int T, int B, int I, int H, int L,
                      int V, uint64_t seed)
{
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L, .outputs = V,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    assert_int_equal(tg_model_new(&cfg, &s->m), TG_OK);
    struct tg_rng r;
    tg_rng_seed(&r, seed);
    tg_model_init_uniform(s->m, &r);
    s->x = malloc(sizeof(double) * T * B * I);
    s->labels = malloc(sizeof(int32_t) * T * B);
    for (int i = 0; i < T * B * I; i++) s->x[i] = tg_rng_normal(&r);
    for (int i = 0; i < T * B; i++) s->labels[i] = (int32_t)tg_rng_below(&r, (uint32_t)V);
    s->b = (struct tg_seq_batch){.T = T, .B = B, .x = s->x, .labels = s->labels};
}

static void setup_free(struct setup *s)
{
    tg_model_free(s->m);
    free(s->x);
    free(s->labels);
}

/* forward, ledger armed, backward, ledger read; the tape stays recorded */
static void run_ledger(struct setup *s, struct tg_tape *t, struct tg_flow *f, struct tg_seq_result *res)
{
    tg_tape_reset(t);
    tg_model_zero_grad(s->m);
    assert_int_equal(tg_model_forward_from(s->m, t, &s->b, NULL, res), TG_OK);
    assert_int_equal(tg_flow_begin(f, t, res), TG_OK);
    assert_int_equal(tg_backward(t, res->loss), TG_OK);
    assert_int_equal(tg_flow_end(f, t, res), TG_OK);
}

/* Every parameter covered; step by step, the explicit term's norm equals the ledger's (Gram)
 * norm, and the terms add up to the tape's gradient (≤ 1e-12 relative). */
static void check_terms(const struct setup *s, const struct tg_flow *f, int T, const char *what,
                        double *worst_sum, double *worst_norm)
{
    for (int p = 0; p < s->m->n_params; p++) {
        const struct tg_tensor *w = s->m->params[p];
        if (!f->covered[p]) fail_msg("%s: %s not covered by the ledger", what, s->m->names[p]);
        size_t n = tg_numel(w);
        double *sum = calloc(n, sizeof *sum), *term = malloc(n * sizeof *term), gmax = 0, err = 0;
        double cmax = 0;
        for (int st = 0; st < T; st++) cmax = fmax(cmax, f->contrib[(size_t)p * T + st]);
        for (int st = 0; st < T; st++) {
            assert_int_equal(tg_flow_term(f, p, st, term), TG_OK);
            double nn = 0;
            for (size_t i = 0; i < n; i++) sum[i] += term[i], nn += term[i] * term[i];
            double d = fabs(sqrt(nn) - f->contrib[(size_t)p * T + st]) / (cmax > 0 ? cmax : 1);
            if (d > *worst_norm) *worst_norm = d;
            if (d > 1e-12)
                fail_msg("%s %s step %d: Gram norm %.17g, explicit %.17g", what, s->m->names[p], st,
                         f->contrib[(size_t)p * T + st], sqrt(nn));
        }
        for (size_t i = 0; i < n; i++) {
            double g = ((double *)w->grad)[i];
            gmax = fmax(gmax, fabs(g));
            err = fmax(err, fabs(g - sum[i]));
        }
        double rel = gmax > 0 ? err / gmax : err;
        if (rel > *worst_sum) *worst_sum = rel;
        if (rel > 1e-12)
            fail_msg("%s %s: Σ_t terms differs from the gradient by %.3g relative", what,
                     s->m->names[p], rel);
        if (gmax == 0) fail_msg("%s %s: zero gradient, nothing tested", what, s->m->names[p]);
        free(sum);
        free(term);
    }
}

static void test_contributions_sum_to_gradient(void **state)
{
    (void)state;
    double worst_sum = 0, worst_norm = 0;
    for (int c = 0; c < tg_cell_count(); c++)
        for (int fusion = 0; fusion <= 1; fusion++) {
            const struct tg_cell *cell = tg_cell_at(c);
            struct setup s;
            int T = 5, B = 3, H = 4;
            setup_new(&s, cell, T, B, 3, H, 2, 5, 100 + c);
            struct tg_tape *t = tg_tape_new(0);
            tg_tape_set_fusion(t, fusion ? TG_FUSION_ON : TG_FUSION_OFF);
            struct tg_flow *f;
            assert_int_equal(tg_flow_new(s.m, T, B, &f), TG_OK);
            struct tg_seq_result res;
            run_ledger(&s, t, f, &res);
            char what[64];
            snprintf(what, sizeof what, "%s (fusion %d)", cell->name, fusion);
            check_terms(&s, f, T, what, &worst_sum, &worst_norm);
            tg_flow_free(f);
            tg_tape_free(t);
            setup_free(&s);
        }
    printf("# 9 cells x fusion on/off: worst |Σ_t term − grad| / max|grad| = %.2e; "
           "Gram vs explicit norm %.2e\n", worst_sum, worst_norm);
}

/* A token model: embed.weight's per-step terms (the scatter-add of the step's rows, ids
 * repeated within a step so that rows must be added before the norm) sum to its gradient. */
static void test_embedding_shares(void **state)
{
    (void)state;
    double worst_sum = 0, worst_norm = 0;
    const char *cells[] = {"lstm", "gru", "rnn_tanh"};
    for (int c = 0; c < 3; c++) {
        int T = 6, B = 5, V = 3, D = 4, H = 3, O = 4;
        struct tg_model_config cfg = {.cell = tg_cell_find(cells[c]), .input = D, .hidden = H,
                                      .layers = 2, .outputs = O, .vocab = V, .dtype = TG_F64,
                                      .loss = TG_LOSS_XENT_SUM};
        struct setup s = {0};
        assert_int_equal(tg_model_new(&cfg, &s.m), TG_OK);
        assert_string_equal(s.m->names[0], "embed.weight");
        struct tg_rng r;
        tg_rng_seed(&r, 77 + (uint64_t)c);
        tg_model_init_uniform(s.m, &r);
        int32_t *tok = malloc(sizeof *tok * T * B);
        s.labels = malloc(sizeof(int32_t) * T * B);
        /* 5 ids from 3 values per step: at least two rows share an id at every step */
        for (int i = 0; i < T * B; i++) tok[i] = (int32_t)tg_rng_below(&r, V), s.labels[i] = (int32_t)tg_rng_below(&r, O);
        s.b = (struct tg_seq_batch){.T = T, .B = B, .tokens = tok, .labels = s.labels};
        struct tg_tape *t = tg_tape_new(0);
        struct tg_flow *f;
        assert_int_equal(tg_flow_new(s.m, T, B, &f), TG_OK);
        struct tg_seq_result res;
        run_ledger(&s, t, f, &res);
        check_terms(&s, f, T, cells[c], &worst_sum, &worst_norm);
        for (int st = 0; st < T; st++)
            if (!(f->contrib[st] > 0)) fail_msg("%s: embed.weight step %d: contribution %g", cells[c], st, f->contrib[st]);
        tg_flow_free(f);
        tg_tape_free(t);
        setup_free(&s);
        free(tok);
    }
    printf("# embed.weight (lstm, gru, rnn_tanh; ids repeated within steps): worst |Σ_t term − grad| "
           "/ max|grad| = %.2e; norm vs explicit %.2e\n", worst_sum, worst_norm);
}

/* The recorded states at step t (all layers), as heap copies for tg_model_forward_from. */
static struct tg_tensor **states_at(struct setup *s, const struct tg_seq_result *res, int t)
{
    int L = s->m->cfg.layers, ns = s->m->cfg.cell->n_state, T = s->b.T;
    struct tg_tensor **init = calloc((size_t)L * ns, sizeof *init);
    for (int l = 0; l < L; l++)
        for (int k = 0; k < ns; k++) {
            const struct tg_tensor *x = res->states[((size_t)l * T + t) * ns + k];
            init[l * ns + k] = tg_tensor_new_heap(x->rows, x->cols, TG_F64);
            tg_tensor_copy(init[l * ns + k], x);
        }
    return init;
}

/* The sub-batch of steps t+1 … T−1. */
static struct tg_seq_batch tail_of(const struct setup *s, int t, int I)
{
    struct tg_seq_batch b = s->b;
    b.T = s->b.T - t - 1;
    b.x = s->x + (size_t)(t + 1) * b.B * I;
    b.labels = s->labels + (size_t)(t + 1) * b.B;
    return b;
}

/* FD of the tail's loss (or of h_T^l's entries) with respect to init[l][r][c]. */
static double tail_eval(struct setup *s, struct tg_tape *t, const struct tg_seq_batch *b,
                        struct tg_tensor **init, int l, int out_r, int out_c)
{
    struct tg_seq_result res;
    tg_tape_reset(t);
    int prev = tg_tape_set_no_grad(t, 1);
    assert_int_equal(tg_model_forward_from(s->m, t, b, init, &res), TG_OK);
    tg_tape_set_no_grad(t, prev);
    int ns = s->m->cfg.cell->n_state;
    return out_r < 0 ? tg_get(res.loss, 0, 0) : tg_get(res.final[l * ns], out_r, out_c);
}

static void test_split_and_jacobian_vs_fd(void **state)
{
    (void)state;
    const char *cells[] = {"rnn_tanh", "lstm", "gru"};
    double worst_next = 0, worst_jac = 0, worst_est = 0;
    for (int ci = 0; ci < 3; ci++) {
        struct setup s;
        int T = 5, B = 2, I = 3, H = 3, L = 2, ns;
        setup_new(&s, tg_cell_find(cells[ci]), T, B, I, H, L, 4, 7 + ci);
        ns = s.m->cfg.cell->n_state;
        struct tg_tape *t = tg_tape_new(0), *t2 = tg_tape_new(0);
        struct tg_flow *f;
        assert_int_equal(tg_flow_new(s.m, T, B, &f), TG_OK);
        struct tg_seq_result res;
        run_ledger(&s, t, f, &res);
        assert_int_equal(tg_flow_jacobian(f, s.m, t2, &s.b, 0, 0, 1), TG_OK);
        assert_true(f->jac_exact);
        double eps = 1e-5;
        for (int l = 0; l < L; l++)
            for (int st = 0; st + 1 < T; st++) {
                struct tg_tensor **init = states_at(&s, &res, st);
                struct tg_seq_batch tb = tail_of(&s, st, I);
                double nx2 = 0, jac2 = 0;
                for (int r = 0; r < B; r++)
                    for (int c = 0; c < H; c++) {
                        struct tg_tensor *h = init[l * ns];
                        double v = tg_get(h, r, c);
                        tg_set(h, r, c, v + eps);
                        double lp = tail_eval(&s, t2, &tb, init, l, -1, 0);
                        double hp[8];
                        for (int k = 0; k < H; k++) hp[k] = tail_eval(&s, t2, &tb, init, l, r, k);
                        tg_set(h, r, c, v - eps);
                        double lm = tail_eval(&s, t2, &tb, init, l, -1, 0);
                        for (int k = 0; k < H; k++) {
                            double d = (hp[k] - tail_eval(&s, t2, &tb, init, l, r, k)) / (2 * eps);
                            jac2 += d * d;
                        }
                        tg_set(h, r, c, v);
                        double g = (lp - lm) / (2 * eps);
                        nx2 += g * g;
                    }
                double nx = sqrt(nx2), got = tg_flow_at(f->from_next, f, l, st);
                double e = fabs(got - nx) / fmax(nx, 1e-3);
                if (e > worst_next) worst_next = e;
                if (e > 1e-7) fail_msg("%s layer %d step %d: from_next %.12g, FD %.12g", cells[ci], l, st, got, nx);
                double jac = sqrt(jac2 / B / H), gj = tg_flow_at(f->jac, f, l, st);
                e = fabs(gj - jac) / fmax(jac, 1e-3);
                if (e > worst_jac) worst_jac = e;
                if (e > 1e-7) fail_msg("%s layer %d step %d: jacobian %.12g, FD %.12g", cells[ci], l, st, gj, jac);
                for (int k = 0; k < L * ns; k++) tg_tensor_free(init[k]);
                free(init);
            }
        for (int l = 0; l < L; l++) assert_true(fabs(tg_flow_at(f->jac, f, l, T - 1) - 1.0) < 1e-15);
        /* total = from the output/above + from t+1, as vectors: the norms obey the triangle */
        for (int i = 0; i < L * T; i++)
            assert_true(f->grad_h[i] <= f->from_out[i] + f->from_next[i] + 1e-12);
        /* the estimator (exact_max 1 forces it), 4000 probes: relative error ~ sqrt(2/(K·H)) */
        double exact[16];
        memcpy(exact, f->jac, sizeof(double) * L * T);
        assert_int_equal(tg_flow_jacobian(f, s.m, t2, &s.b, 1, 4000, 3), TG_OK);
        assert_false(f->jac_exact);
        for (int i = 0; i < L * T; i++) {
            double e = fabs(f->jac[i] - exact[i]) / exact[i];
            if (e > worst_est) worst_est = e;
            if (e > 0.1) fail_msg("%s: estimated %g, exact %g", cells[ci], f->jac[i], exact[i]);
        }
        tg_flow_free(f);
        tg_tape_free(t);
        tg_tape_free(t2);
        setup_free(&s);
    }
    printf("# from_next vs FD worst rel %.2e; jacobian vs FD %.2e; estimator (4000 probes) vs exact %.2e\n",
           worst_next, worst_jac, worst_est);
}

/* ------------------------------------------------------------------ PyTorch */

static double max_rel(const double *got, const double *want, size_t n)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(got[i] - want[i])), m = fmax(m, fabs(want[i]));
    return m > 0 ? e / m : e;
}

static void torch_case(const char *file, double *worst)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/flow/%s", TG_SOURCE_DIR, file);
    struct tg_st_file *fx;
    if (tg_st_read(path, &fx) != TG_OK) fail_msg("%s", tg_last_error());
    int T = atoi(tg_st_meta(fx, "T")), B = atoi(tg_st_meta(fx, "B")), I = atoi(tg_st_meta(fx, "I"));
    int H = atoi(tg_st_meta(fx, "H")), L = atoi(tg_st_meta(fx, "L")), V = atoi(tg_st_meta(fx, "V"));
    struct setup s;
    setup_new(&s, tg_cell_find(tg_st_meta(fx, "cell")), T, B, I, H, L, V, 1);
    for (int p = 0; p < s.m->n_params; p++)
        assert_int_equal(tg_st_get_tensor(fx, s.m->names[p], s.m->params[p], 0, NULL), TG_OK);
    assert_int_equal(tg_st_get_f64(fx, "x", s.x, (size_t)T * B * I, 0, NULL), TG_OK);
    int64_t *y = malloc(sizeof *y * T * B);
    assert_int_equal(tg_st_get_i64(fx, "y", y, (size_t)T * B, 0, NULL), TG_OK);
    for (int i = 0; i < T * B; i++) s.labels[i] = (int32_t)y[i];
    free(y);
    struct tg_tape *t = tg_tape_new(0);
    struct tg_flow *f;
    assert_int_equal(tg_flow_new(s.m, T, B, &f), TG_OK);
    struct tg_seq_result res;
    run_ledger(&s, t, f, &res);
    int ns = s.m->cfg.cell->n_state;
    double *dh = malloc(sizeof *dh * L * T * B * H);
    assert_int_equal(tg_st_get_f64(fx, "dh", dh, (size_t)L * T * B * H, 0, NULL), TG_OK);
    for (int l = 0; l < L; l++)
        for (int st = 0; st < T; st++) {
            const struct tg_tensor *h = res.states[((size_t)l * T + st) * ns];
            const double *want = dh + ((size_t)l * T + st) * B * H;
            double e = max_rel(h->grad, want, (size_t)B * H), n2 = 0;
            for (int i = 0; i < B * H; i++) n2 += want[i] * want[i];
            e = fmax(e, fabs(tg_flow_at(f->grad_h, f, l, st) - sqrt(n2)) / sqrt(n2));
            if (e > *worst) *worst = e;
            if (e > 1e-12) fail_msg("%s: dL/dh layer %d step %d differs from PyTorch by %.3g", file, l, st, e);
        }
    for (int p = 0; p < s.m->n_params; p++) {
        size_t n = tg_numel(s.m->params[p]);
        double *want = malloc(sizeof *want * T * n), *got = malloc(sizeof *got * n);
        char name[128];
        snprintf(name, sizeof name, "term.%s", s.m->names[p]);
        assert_int_equal(tg_st_get_f64(fx, name, want, (size_t)T * n, 0, NULL), TG_OK);
        for (int st = 0; st < T; st++) {
            assert_int_equal(tg_flow_term(f, p, st, got), TG_OK);
            double e = max_rel(got, want + (size_t)st * n, n), n2 = 0;
            for (size_t i = 0; i < n; i++) n2 += want[st * n + i] * want[st * n + i];
            double en = n2 > 0 ? fabs(f->contrib[(size_t)p * T + st] - sqrt(n2)) / sqrt(n2) : 0;
            e = fmax(e, en);
            if (e > *worst) *worst = e;
            if (e > 1e-12) fail_msg("%s: %s step %d differs from PyTorch by %.3g", file, name, st, e);
        }
        free(want);
        free(got);
    }
    free(dh);
    tg_flow_free(f);
    tg_tape_free(t);
    setup_free(&s);
    tg_st_close(fx);
}

static void test_vs_pytorch(void **state)
{
    (void)state;
    double worst = 0;
    torch_case("lstm_l2.safetensors", &worst);
    torch_case("gru_l2.safetensors", &worst);
    printf("# PyTorch (retain_grad, per-step clones), LSTM and GRU, 2 layers: worst rel %.2e\n", worst);
}

/* ------------------------------------------------------------------ anomaly */

/* h' = tanh(log(x) + h·Uᵀ): log of a negative input where one is planted. */
static const struct tg_param_spec log_params[] = {{"weight_hh", TG_SHAPE(1, 0, 0, 1, 0, 0)}};
static void log_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
                     struct tg_tensor *const *s, struct tg_tensor **next)
{
    /* what a cell file's recorder does per equation: tag the nodes with FILE:LINE */
    tg_tape_set_origin(t, "logcell.cell:2");
    struct tg_tensor *lx = tg_log(t, x);
    tg_tape_set_origin(t, "logcell.cell:3");
    next[0] = tg_tanh(t, tg_addmm(t, lx, s[0], w[0], 0, 1));
}
static const struct tg_cell log_cell = {"logcell", "h' = tanh(log x + U h)", 1, 1, 1, log_params, log_step, NULL};

static void test_anomaly_log_of_negative(void **state)
{
    (void)state;
    /* fusion on (the default, and anomaly mode keeps it: the fused region holding the log is
     * replayed op by op when its result is found non-finite) and off: the same report */
    for (int fusion = 1; fusion >= 0; fusion--) {
        struct setup s;
        int T = 6, B = 3, H = 4;
        setup_new(&s, &log_cell, T, B, H, H, 1, 3, 5);
        for (int i = 0; i < T * B * H; i++) s.x[i] = 0.5 + fabs(s.x[i]);
        s.x[((size_t)3 * B + 1) * H + 2] = -0.25; /* step 4 (1-based), sequence 1, unit 2 */
        struct tg_tape *t = tg_tape_new(0);
        tg_tape_set_fusion(t, fusion ? TG_FUSION_ON : TG_FUSION_OFF);
        struct tg_seq_result res;
        /* without anomaly mode the NaN flows into the loss, and backward refuses it */
        assert_int_equal(tg_model_forward_from(s.m, t, &s.b, NULL, &res), TG_OK);
        assert_true(isnan(tg_get(res.loss, 0, 0)));
        assert_int_equal(tg_backward(t, res.loss), TG_ERR_VALUE);
        assert_non_null(strstr(tg_last_error(), "loss is NaN"));
        tg_tape_reset(t);
        tg_tape_set_anomaly(t, 1);
        assert_int_not_equal(tg_model_forward_from(s.m, t, &s.b, NULL, &res), TG_OK);
        const char *msg = tg_last_error();
        printf("# fusion %s: %s\n", fusion ? "on" : "off", msg);
        assert_non_null(strstr(msg, "forward log [logcell.cell:2]"));
        assert_non_null(strstr(msg, "step 4, layer 0, sequence 1, unit 2"));
        assert_non_null(strstr(msg, "in0 = -0.25"));
        tg_tape_free(t);
        setup_free(&s);
    }
}

/* A parsed cell file, as users write one: the report names the file's line of the log. */
static void test_anomaly_cell_file(void **state)
{
    (void)state;
    static const char src[] = "# plant.cell — a log of a negative, planted\n"
                              "cell plant\n"
                              "state h\n"
                              "param weight_ih[H, I], weight_hh[H, H]\n"
                              "a = weight_ih @ x + weight_hh @ h\n"
                              "h' = tanh(log(a))\n";
    struct tg_cell *cell = tg_cell_parse(src, sizeof src - 1, "plant.cell");
    assert_non_null(cell);
    for (int fusion = 1; fusion >= 0; fusion--) {
        struct setup s;
        int T = 5, B = 3, H = 4;
        setup_new(&s, cell, T, B, H, H, 2, 3, 8);
        /* layer 0: a = x (W_ih = I, W_hh = 0); x > 0 but at step 3, sequence 1, unit 2 */
        for (int p = 0; p < s.m->n_params; p++) tg_tensor_fill(s.m->params[p], 0.0);
        for (int i = 0; i < H; i++) tg_set(s.m->params[0], i, i, 1.0);
        for (int i = 0; i < T * B * H; i++) s.x[i] = 0.5 + fabs(s.x[i]);
        s.x[((size_t)2 * B + 1) * H + 2] = -2.0;
        struct tg_tape *t = tg_tape_new(0);
        tg_tape_set_fusion(t, fusion ? TG_FUSION_ON : TG_FUSION_OFF);
        tg_tape_set_anomaly(t, 1);
        struct tg_seq_result res;
        assert_int_not_equal(tg_model_forward_from(s.m, t, &s.b, NULL, &res), TG_OK);
        printf("# cell file, fusion %s: %s\n", fusion ? "on" : "off", tg_last_error());
        assert_non_null(strstr(tg_last_error(), "forward log [plant.cell:6]"));
        assert_non_null(strstr(tg_last_error(), "step 3, layer 0, sequence 1, unit 2"));
        assert_non_null(strstr(tg_last_error(), "= -2"));
        tg_tape_free(t);
        setup_free(&s);
    }
    tg_cell_free(cell);
}

/* h' = tanh(sqrt(relu(x + h·Uᵀ))): finite forward, but where x + h·Uᵀ < 0 the relu gives 0
 * and sqrt′(0) = ∞, so only the backward walk meets the non-finite value. */
static const struct tg_param_spec sqrt_params[] = {{"weight_hh", TG_SHAPE(1, 0, 0, 1, 0, 0)}};
static void sqrt_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
                      struct tg_tensor *const *s, struct tg_tensor **next)
{
    next[0] = tg_tanh(t, tg_sqrt(t, tg_relu(t, tg_addmm(t, x, s[0], w[0], 0, 1))));
}
static const struct tg_cell sqrt_cell = {"sqrtcell", "h' = tanh(sqrt(relu(x + U h)))", 1, 1, 1, sqrt_params, sqrt_step, NULL};

/* h' = tanh(sqrt(x + U h)): where x + U h = 0 exactly, sqrt′ = ∞ and the gradient leaving
 * the region (into x + U h) is ∞ — found at the fused region's backward, then named by
 * replaying the region's ops backward one by one. */
static void sqrt0_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
                       struct tg_tensor *const *s, struct tg_tensor **next)
{
    next[0] = tg_tanh(t, tg_sqrt(t, tg_addmm(t, x, s[0], w[0], 0, 1)));
}
static const struct tg_cell sqrt0_cell = {"sqrt0cell", "h' = tanh(sqrt(x + U h))", 1, 1, 1, sqrt_params, sqrt0_step, NULL};

static void test_anomaly_in_backward(void **state)
{
    (void)state;
    struct setup s;
    int T = 5, B = 3, H = 4;
    setup_new(&s, &sqrt_cell, T, B, H, H, 1, 3, 6);
    tg_tensor_fill(s.m->params[0], 0.1); /* |U h| < 0.4 */
    for (int i = 0; i < T * B * H; i++) s.x[i] = 5.0;
    s.x[((size_t)2 * B + 2) * H + 1] = -10.0; /* step 3 (1-based), sequence 2, unit 1 */
    struct tg_tape *t = tg_tape_new(0);
    /* the ∞ here dies inside the cell's fused region (relu′ = 0 selects it away before the
     * region's gradients are stored), so only an unfused tape meets it: fusion off too */
    tg_tape_set_fusion(t, TG_FUSION_OFF);
    tg_tape_set_anomaly(t, 1);
    struct tg_seq_result res;
    assert_int_equal(tg_model_forward_from(s.m, t, &s.b, NULL, &res), TG_OK);
    assert_int_equal(tg_backward(t, res.loss), TG_ERR_VALUE);
    printf("# %s\n", tg_last_error());
    assert_non_null(strstr(tg_last_error(), "anomaly: backward of sqrt [sqrtcell]"));
    assert_non_null(strstr(tg_last_error(), "step 3, layer 0, sequence 2, unit 1"));
    /* off: the walk runs to the end; relu′ = 0 there masks the ∞ (a select, not ∞·0), so
     * nothing but anomaly mode says that a gradient was infinite on the way */
    tg_tape_free(t);
    t = tg_tape_new(0);
    assert_int_equal(tg_model_forward_from(s.m, t, &s.b, NULL, &res), TG_OK);
    assert_int_equal(tg_backward(t, res.loss), TG_OK);
    tg_tape_free(t);
    setup_free(&s);

    /* fused (the default): the ∞ leaves the region. x + U h = 0 at step 1 (h_0 = 0),
     * sequence 2, unit 1; elsewhere x + U h > 4.6 */
    setup_new(&s, &sqrt0_cell, T, B, H, H, 1, 3, 6);
    tg_tensor_fill(s.m->params[0], 0.1);
    for (int i = 0; i < T * B * H; i++) s.x[i] = 5.0;
    s.x[((size_t)0 * B + 2) * H + 1] = 0.0;
    t = tg_tape_new(0);
    tg_tape_set_anomaly(t, 1);
    assert_int_equal(tg_model_forward_from(s.m, t, &s.b, NULL, &res), TG_OK);
    assert_int_equal(tg_backward(t, res.loss), TG_ERR_VALUE);
    printf("# fused: %s\n", tg_last_error());
    assert_non_null(strstr(tg_last_error(), "anomaly: backward of sqrt [sqrt0cell]"));
    assert_non_null(strstr(tg_last_error(), "step 1, layer 0, sequence 2, unit 1"));
    tg_tape_free(t);
    setup_free(&s);
}

/* rnn_relu, float32, two layers: layer 0 passes 1s up, layer 1 has W_hh = 10·I, so h grows ×10
 * per step until it overflows; the step is found by running the same float recurrence. */
static void test_anomaly_exploding_rnn(void **state)
{
    (void)state;
    int T = 60, B = 2, H = 2;
    struct tg_model_config cfg = {.cell = tg_cell_find("rnn_relu"), .input = H, .hidden = H, .layers = 2,
                                  .outputs = 2, .dtype = TG_F32, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    assert_int_equal(tg_model_new(&cfg, &m), TG_OK);
    for (int p = 0; p < m->n_params; p++) tg_tensor_fill(m->params[p], 0.0);
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < H; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "rnn.weight_ih_l%d", l);
            tg_set(tg_model_param(m, nm), i, i, 1.0);
            snprintf(nm, sizeof nm, "rnn.weight_hh_l%d", l);
            if (l == 1) tg_set(tg_model_param(m, nm), i, i, 10.0);
        }
    double *x = malloc(sizeof *x * T * B * H);
    int32_t *lab = calloc((size_t)T * B, sizeof *lab);
    for (int i = 0; i < T * B * H; i++) x[i] = 1.0;
    float h = 0;
    int expect = 0;
    for (int st = 1; st <= T && !expect; st++) {
        h = 1.0f + 10.0f * h; /* the GEMM xp + h·W_hhᵀ in float: one term per unit */
        if (!isfinite(h)) expect = st;
    }
    assert_true(expect > 0);
    struct tg_seq_batch b = {.T = T, .B = B, .x = x, .labels = lab};
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_set_anomaly(t, 1);
    struct tg_seq_result res;
    assert_int_not_equal(tg_model_forward_from(m, t, &b, NULL, &res), TG_OK);
    char want[64];
    snprintf(want, sizeof want, "step %d, layer 1, sequence 0, unit 0", expect);
    printf("# %s\n", tg_last_error());
    assert_non_null(strstr(tg_last_error(), "forward addmm [rnn_relu]"));
    assert_non_null(strstr(tg_last_error(), want));
    tg_tape_free(t);
    tg_model_free(m);
    free(x);
    free(lab);
}

static void test_ledger_allocates_nothing_per_step(void **state)
{
    (void)state;
    struct setup s;
    int T = 8, B = 4;
    setup_new(&s, tg_cell_find("lstm"), T, B, 3, 6, 2, 5, 9);
    struct tg_tape *t = tg_tape_new(0);
    struct tg_flow *f;
    assert_int_equal(tg_flow_new(s.m, T, B, &f), TG_OK);
    struct tg_seq_result res;
    run_ledger(&s, t, f, &res);
    run_ledger(&s, t, f, &res);
    size_t before = tg_tape_heap_allocs(t);
    for (int i = 0; i < 3; i++) run_ledger(&s, t, f, &res);
    assert_int_equal(tg_tape_heap_allocs(t), before);
    tg_flow_free(f);
    tg_tape_free(t);
    setup_free(&s);
}

static void test_saturation(void **state)
{
    (void)state;
    struct setup s;
    int T = 4, B = 8, H = 5;
    setup_new(&s, tg_cell_find("lstm"), T, B, 3, H, 1, 3, 4);
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_set_fusion(t, TG_FUSION_OFF);
    struct tg_flow *f;
    assert_int_equal(tg_flow_new(s.m, T, B, &f), TG_OK);
    struct tg_seq_result res;
    /* the forget gate's bias at +50: σ(f) ≈ 1 everywhere; the rest small */
    tg_model_set_forget_bias(s.m, 50.0);
    run_ledger(&s, t, f, &res);
    assert_int_equal(tg_flow_saturation(f, t), TG_OK);
    assert_int_equal(f->n_gates, 5);
    assert_string_equal(f->gate_label[1], "σ(f)");
    assert_string_equal(f->gate_label[4], "tanh(c)");
    for (int st = 0; st < T; st++) {
        assert_true(f->sat[(size_t)1 * T + st] == 1.0);
        assert_true(f->sat[(size_t)0 * T + st] < 0.5);
    }
    tg_flow_free(f);
    tg_tape_free(t);
    setup_free(&s);
}

/* ------------------------------------------------------------------ the CLI */

#define TAPEGRAD TG_BUILD_DIR "/tools/tapegrad"

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static int starts_with(const char *path, const char *magic, size_t n)
{
    char buf[16] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n && memcmp(buf, magic, n) == 0;
}


/* tapegrad flow writes a table, CSV (one row per step and layer), JSON and PNG/SVG plots;
 * --compare, train --plot, tapegrad plot and dot --loss last make non-empty files. */
static void test_cli_outputs(void **state)
{
    (void)state;
    char dir[] = "/tmp/tg_flow_testXXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(tg_test_sh("cd %s && " TAPEGRAD " flow --cell gru --task adding --length 12 --batch 4 "
                        "--hidden 5 --layers 2 --csv f.csv --json f.json --out f.png > table.txt", dir), 0);
    char p[512];
    snprintf(p, sizeof p, "%s/f.csv", dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    int lines = 0, c;
    while ((c = fgetc(f)) != EOF) lines += c == '\n';
    fclose(f);
    assert_int_equal(lines, 1 + 12 * 2); /* header + T·L rows */
    snprintf(p, sizeof p, "%s/f.json", dir);
    assert_true(file_size(p) > 100);
    snprintf(p, sizeof p, "%s/f.png", dir);
    assert_true(file_size(p) > 10000);
    assert_true(starts_with(p, "\x89PNG", 4));
    snprintf(p, sizeof p, "%s/table.txt", dir);
    assert_true(file_size(p) > 500);

    assert_int_equal(tg_test_sh("cd %s && " TAPEGRAD " flow --compare rnn_tanh,lstm,gru --task adding --length 20 "
                        "--batch 4 --hidden 6 --out cmp.svg > /dev/null", dir), 0);
    snprintf(p, sizeof p, "%s/cmp.svg", dir);
    assert_true(file_size(p) > 5000);
    assert_true(starts_with(p, "<?xml", 5));

    assert_int_equal(tg_test_sh("cd %s && " TAPEGRAD " train --task adding --length 10 --steps 60 --hidden 8 "
                        "--layers 2 --log run.csv --plot curve.png > /dev/null 2>&1", dir), 0);
    snprintf(p, sizeof p, "%s/curve.png", dir);
    assert_true(file_size(p) > 10000);
    snprintf(p, sizeof p, "%s/run.csv", dir);
    f = fopen(p, "r");
    assert_non_null(f);
    char head[256] = "";
    assert_non_null(fgets(head, sizeof head, f));
    fclose(f);
    assert_non_null(strstr(head, "grad_norm,gnorm_l0,gnorm_l1,gnorm_out"));
    assert_int_equal(tg_test_sh("cd %s && " TAPEGRAD " plot --log run.csv --out again.svg > /dev/null", dir), 0);
    snprintf(p, sizeof p, "%s/again.svg", dir);
    assert_true(file_size(p) > 5000);

    assert_int_equal(tg_test_sh("cd %s && " TAPEGRAD " dot --cell lstm --steps 3 --backward --loss last --out g.dot", dir), 0);
    snprintf(p, sizeof p, "%s/g.dot", dir);
    assert_true(file_size(p) > 1000);
    /* a plot request the program cannot honour fails with one line, not a crash */
    assert_int_not_equal(tg_test_sh("cd %s && " TAPEGRAD " flow --length 5 --out f.jpg 2> err.txt", dir), 0);
    snprintf(p, sizeof p, "%s/err.txt", dir);
    assert_true(file_size(p) > 10);
    tg_test_sh("rm -rf %s", dir);
}

/* The divergence message names the step and the first non-finite tensor; with
 * --detect-anomaly the op, step, layer, sequence, unit and inputs. */
static void test_cli_divergence(void **state)
{
    (void)state;
    char dir[] = "/tmp/tg_flow_divXXXXXX", p[512], buf[1024] = "";
    assert_non_null(mkdtemp(dir));
    assert_int_not_equal(tg_test_sh("cd %s && " TAPEGRAD " train --cell rnn_relu --task adding --length 30 --steps 20 "
                            "--lr 1e4 --optimizer sgd 2> err.txt > /dev/null", dir), 0);
    snprintf(p, sizeof p, "%s/err.txt", dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    while (fgets(buf, sizeof buf, f))
        if (strstr(buf, "diverged")) break;
    fclose(f);
    printf("# %s", buf);
    assert_non_null(strstr(buf, "training diverged at step"));
    assert_non_null(strstr(buf, "first non-finite tensor: the output of"));
    assert_int_not_equal(tg_test_sh("cd %s && " TAPEGRAD " train --cell rnn_relu --task adding --length 30 --steps 20 "
                            "--lr 1e4 --optimizer sgd --detect-anomaly 2> err2.txt > /dev/null", dir), 0);
    snprintf(p, sizeof p, "%s/err2.txt", dir);
    f = fopen(p, "r");
    assert_non_null(f);
    buf[0] = '\0';
    while (fgets(buf, sizeof buf, f))
        if (strstr(buf, "anomaly")) break;
    fclose(f);
    printf("# %s", buf);
    assert_non_null(strstr(buf, "anomaly: forward"));
    assert_non_null(strstr(buf, ", layer 0, sequence"));
    tg_test_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contributions_sum_to_gradient),
        cmocka_unit_test(test_embedding_shares),
        cmocka_unit_test(test_split_and_jacobian_vs_fd),
        cmocka_unit_test(test_vs_pytorch),
        cmocka_unit_test(test_anomaly_log_of_negative),
        cmocka_unit_test(test_anomaly_cell_file),
        cmocka_unit_test(test_anomaly_exploding_rnn),
        cmocka_unit_test(test_anomaly_in_backward),
        cmocka_unit_test(test_ledger_allocates_nothing_per_step),
        cmocka_unit_test(test_saturation),
        cmocka_unit_test(test_cli_outputs),
        cmocka_unit_test(test_cli_divergence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
