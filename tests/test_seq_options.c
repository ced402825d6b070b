/* test_seq_options.c — issue 14's options of the sequence model, for every cell (the nine
 * built-in ones and a cell file), beyond the PyTorch fixtures (test_torch_fixtures.c):
 *   - variable lengths: a packed batch gives, sequence by sequence, the loss, final states and
 *     gradients of running that sequence alone over its own length (one and two directions,
 *     cross-entropy and MSE-at-the-last-step) — what pack_padded_sequence means;
 *   - dropout: evaluation (no generator) is the model without dropout, bit for bit; training
 *     draws its masks from the generator in the documented order (reproduced here by hand and
 *     passed as fixed masks: the same bits); the same seed gives the same bits;
 *   - fusion on, lean and off give the same bits with all three options on;
 *   - a training loop with them allocates nothing on the heap after its first step;
 *   - bad lengths and a bad dropout are refused with one message (also by `tapegrad train`);
 *   - DOT writes the reverse chain's edges against time reversed, so it is drawn right to left. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad_dot.h"
#include "tapegrad_models.h"
#include "malloc_count.h"
#include "cli_util.h"

#define CELLS TG_SOURCE_DIR "/models/cells"

struct run_out {
    double loss;
    double *v;   /* final states (all layers, directions, states), then every gradient */
    size_t n;
};

static struct tg_model *make_model(const struct tg_cell *cell, int I, int H, int L, int V, int bidir,
                                   double p, enum tg_loss_kind loss, uint64_t seed)
{
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L, .outputs = V,
                                  .dtype = TG_F64, .loss = loss, .bidirectional = bidir, .dropout = p};
    struct tg_model *m;
    if (tg_model_new(&cfg, &m) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_rng r;
    tg_rng_seed(&r, seed);
    tg_model_init_uniform(m, &r);
    return m;
}

/* Forward and backward of one batch; the results in o (o->v owned by the caller). */
static void run(struct tg_model *m, struct tg_tape *t, const struct tg_seq_batch *b, struct run_out *o)
{
    tg_tape_reset(t);
    tg_model_zero_grad(m);
    struct tg_seq_result res;
    if (tg_model_forward_from(m, t, b, NULL, &res) != TG_OK) fail_msg("%s", tg_last_error());
    if (tg_backward(t, res.loss) != TG_OK) fail_msg("%s", tg_last_error());
    int nf = tg_model_n_states(m);
    size_t n = 0;
    for (int i = 0; i < nf; i++) n += tg_numel(res.final[i]);
    for (int k = 0; k < m->n_params; k++) n += tg_numel(m->params[k]);
    o->loss = tg_get(res.loss, 0, 0);
    o->v = malloc(n * sizeof *o->v);
    o->n = 0;
    for (int i = 0; i < nf; i++)
        for (size_t j = 0; j < tg_numel(res.final[i]); j++) o->v[o->n++] = ((double *)res.final[i]->data)[j];
    for (int k = 0; k < m->n_params; k++)
        for (size_t j = 0; j < tg_numel(m->params[k]); j++) o->v[o->n++] = ((double *)m->params[k]->grad)[j];
}

static void assert_same_bits(const struct run_out *a, const struct run_out *b, const char *what)
{
    if (memcmp(&a->loss, &b->loss, sizeof a->loss) != 0) fail_msg("%s: loss %.17g vs %.17g", what, a->loss, b->loss);
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(&a->v[i], &b->v[i], sizeof a->v[i]) != 0)
            fail_msg("%s: value %zu: %.17g vs %.17g", what, i, a->v[i], b->v[i]);
}

/* The cells to try: every built-in one, and lstm.cell (a cell file). */
static const struct tg_cell *cell_at(int i, struct tg_cell **owned)
{
    *owned = NULL;
    if (i < tg_cell_count()) return tg_cell_at(i);
    *owned = tg_cell_load(CELLS "/lstm.cell");
    if (!*owned) fail_msg("%s", tg_last_error());
    return *owned;
}

/* ------------------------------------------------------------ lengths */

enum { T = 5, B = 3, I = 3, H = 4, L = 2, V = 3 };
static const int32_t LEN[B] = {5, 2, 4};

static void fill_batch(double *x, int32_t *y, double *target, uint64_t seed)
{
    struct tg_rng r;
    tg_rng_seed(&r, seed);
    for (int i = 0; i < T * B * I; i++) x[i] = 2 * tg_rng_normal(&r);
    for (int i = 0; i < T * B; i++) y[i] = (int32_t)tg_rng_below(&r, V);
    for (int i = 0; i < B * V; i++) target[i] = tg_rng_normal(&r);
}

/* Sequence b alone over its own length; its loss and values added into acc (scaled by w). */
static void run_alone(struct tg_model *m, struct tg_tape *t, const double *x, const int32_t *y,
                      const double *target, int b, double w, struct run_out *acc)
{
    int n = LEN[b];
    double xs[T * I], ts[V];
    int32_t ys[T];
    for (int s = 0; s < n; s++) {
        memcpy(xs + s * I, x + (s * B + b) * I, I * sizeof *xs);
        ys[s] = y[s * B + b];
    }
    memcpy(ts, target + b * V, sizeof ts);
    struct tg_seq_batch sb = {.T = n, .B = 1, .x = xs, .labels = ys, .target = ts};
    struct run_out o;
    run(m, t, &sb, &o);
    acc->loss += w * o.loss;
    /* final states: one row of each B-row state tensor; gradients: whole */
    size_t nstate = (size_t)tg_model_n_states(m) * H, k = 0;
    for (size_t i = 0; i < nstate; i++) acc->v[(i / H) * B * H + b * H + i % H] = o.v[k++];
    for (size_t i = nstate * B; i < acc->n; i++) acc->v[i] += w * o.v[k++];
    assert_int_equal(k, o.n);
    free(o.v);
}

static void test_lengths_are_separate_sequences(void **state)
{
    (void)state;
    double x[T * B * I], target[B * V];
    int32_t y[T * B];
    fill_batch(x, y, target, 11);
    struct tg_tape *t = tg_tape_new(0);
    double worst = 0;
    for (int c = 0; c <= tg_cell_count(); c++) {
        struct tg_cell *owned;
        const struct tg_cell *cell = cell_at(c, &owned);
        for (int bidir = 0; bidir < 2; bidir++) {
            for (int mse = 0; mse < 2; mse++) {
                struct tg_model *m = make_model(cell, I, H, L, V, bidir, 0,
                                                mse ? TG_LOSS_MSE_LAST : TG_LOSS_XENT_SUM, 100 + c);
                /* padding the model must not read: NaN inputs, out-of-range labels */
                double xp[T * B * I];
                int32_t yp[T * B];
                memcpy(xp, x, sizeof xp);
                memcpy(yp, y, sizeof yp);
                for (int i = 0; i < T * B; i++)
                    if (i / B >= LEN[i % B]) {
                        yp[i] = 99;
                        for (int j = 0; j < I; j++) xp[i * I + j] = NAN;
                    }
                struct tg_seq_batch sb = {.T = T, .B = B, .x = xp, .labels = yp, .target = target, .lengths = LEN};
                struct run_out all, sep = {0};
                run(m, t, &sb, &all);
                sep.v = calloc(all.n, sizeof *sep.v);
                sep.n = all.n;
                /* xent sums over sequences; MSE averages over the B rows */
                for (int b = 0; b < B; b++) run_alone(m, t, x, y, target, b, mse ? 1.0 / B : 1.0, &sep);
                double scale = fabs(sep.loss), err = fabs(all.loss - sep.loss);
                for (size_t i = 0; i < all.n; i++) {
                    scale = fmax(scale, fabs(sep.v[i]));
                    err = fmax(err, fabs(all.v[i] - sep.v[i]));
                }
                if (!(err <= 1e-12 * scale))
                    fail_msg("cell %s, %s, %s: packed vs one by one: max error %.3g (scale %.3g)", cell->name,
                             bidir ? "bidirectional" : "one direction", mse ? "mse" : "xent", err, scale);
                worst = fmax(worst, err / scale);
                free(all.v), free(sep.v);
                tg_model_free(m);
            }
        }
        tg_cell_free(owned);
    }
    printf("# packed batch vs sequences alone, %d cells x 2 directions x 2 losses: worst relative "
           "error %.2e\n", tg_cell_count() + 1, worst);
    tg_tape_free(t);
}

/* ------------------------------------------------------------ dropout */

static void test_dropout(void **state)
{
    (void)state;
    double x[T * B * I], target[B * V];
    int32_t y[T * B];
    fill_batch(x, y, target, 12);
    struct tg_tape *t = tg_tape_new(0);
    const int L3 = 3;
    for (int c = 0; c <= tg_cell_count(); c++) {
        struct tg_cell *owned;
        const struct tg_cell *cell = cell_at(c, &owned);
        for (int bidir = 0; bidir < 2; bidir++) {
            double p = 0.4;
            struct tg_model *m = make_model(cell, I, H, L3, V, bidir, p, TG_LOSS_XENT_SUM, 7 + c);
            struct tg_model *m0 = make_model(cell, I, H, L3, V, bidir, 0, TG_LOSS_XENT_SUM, 7 + c);
            struct tg_seq_batch sb = {.T = T, .B = B, .x = x, .labels = y, .lengths = LEN};
            struct run_out ev, plain, tr1, tr2, fixed;
            run(m, t, &sb, &ev);            /* no generator: evaluation */
            run(m0, t, &sb, &plain);
            assert_same_bits(&ev, &plain, "dropout in evaluation vs no dropout");
            struct tg_rng r;
            tg_rng_seed(&r, 99);
            m->dropout_rng = &r;
            run(m, t, &sb, &tr1);
            tg_rng_seed(&r, 99);
            run(m, t, &sb, &tr2);
            assert_same_bits(&tr1, &tr2, "dropout, same seed twice");
            m->dropout_rng = NULL;
            /* the documented order: layer 0's output first, rows time-major, unit by unit;
             * dropped when uniform < p, else scaled by 1/(1 − p) */
            int D = bidir ? 2 : 1;
            size_t per = (size_t)T * B * D * H, dropped = 0;
            double *mask = malloc((L3 - 1) * per * sizeof *mask);
            tg_rng_seed(&r, 99);
            for (size_t i = 0; i < (L3 - 1) * per; i++) {
                mask[i] = tg_rng_uniform(&r) < p ? 0.0 : 1.0 / (1.0 - p);
                dropped += mask[i] == 0.0;
            }
            assert_true(dropped > 0 && dropped < (L3 - 1) * per);
            m->dropout_mask = mask;
            run(m, t, &sb, &fixed);
            assert_same_bits(&tr1, &fixed, "dropout drawn vs the same masks given");
            /* and dropout did change something */
            assert_true(fabs(tr1.loss - ev.loss) > 1e-9);
            free(mask);
            free(ev.v), free(plain.v), free(tr1.v), free(tr2.v), free(fixed.v);
            tg_model_free(m), tg_model_free(m0);
        }
        tg_cell_free(owned);
    }
    tg_tape_free(t);
}

/* ------------------------------------------------------------ fusion modes */

static void test_fusion_modes_same_bits(void **state)
{
    (void)state;
    double x[T * B * I], target[B * V];
    int32_t y[T * B];
    fill_batch(x, y, target, 13);
    struct tg_tape *t = tg_tape_new(0);
    const int modes[3] = {TG_FUSION_ON, TG_FUSION_LEAN, TG_FUSION_OFF};
    for (int c = 0; c <= tg_cell_count(); c++) {
        struct tg_cell *owned;
        const struct tg_cell *cell = cell_at(c, &owned);
        struct tg_model *m = make_model(cell, I, H, 3, V, 1, 0.3, TG_LOSS_XENT_SUM, 21 + c);
        struct tg_seq_batch sb = {.T = T, .B = B, .x = x, .labels = y, .lengths = LEN};
        struct run_out o[3];
        struct tg_rng r;
        m->dropout_rng = &r;
        for (int k = 0; k < 3; k++) {
            tg_tape_set_fusion(t, modes[k]);
            tg_rng_seed(&r, 5);
            run(m, t, &sb, &o[k]);
        }
        tg_tape_set_fusion(t, TG_FUSION_ON);
        assert_same_bits(&o[0], &o[1], cell->name);
        assert_same_bits(&o[0], &o[2], cell->name);
        for (int k = 0; k < 3; k++) free(o[k].v);
        tg_model_free(m);
        tg_cell_free(owned);
    }
    tg_tape_free(t);
}

/* ------------------------------------------------------------ no allocation per step */

static void test_no_heap_allocation_per_step(void **state)
{
    (void)state;
    double x[T * B * I], target[B * V];
    int32_t y[T * B];
    fill_batch(x, y, target, 14);
    for (int c = 0; c <= tg_cell_count(); c += tg_cell_count()) { /* rnn_tanh, then lstm.cell */
        struct tg_cell *owned;
        const struct tg_cell *cell = cell_at(c, &owned);
        struct tg_model *m = make_model(cell, I, H, 3, V, 1, 0.3, TG_LOSS_XENT_MEAN, 3);
        struct tg_tape *t = tg_tape_new(0);
        struct tg_rng r;
        tg_rng_seed(&r, 1);
        m->dropout_rng = &r;
        struct tg_seq_batch sb = {.T = T, .B = B, .x = x, .labels = y, .lengths = LEN};
        size_t before = 0;
        for (int it = 0; it < 4; it++) {
            if (it == 1) before = heap_calls();
            tg_tape_reset(t);
            tg_model_zero_grad(m);
            struct tg_seq_result res;
            assert_int_equal(tg_model_forward_from(m, t, &sb, NULL, &res), TG_OK);
            assert_int_equal(tg_backward(t, res.loss), TG_OK);
        }
#if COUNT_MALLOC
        if (heap_calls() != before) fail_msg("%s: %zu heap allocations in 3 steps after the first", cell->name,
                                             heap_calls() - before);
#endif
        (void)before;
        tg_tape_free(t);
        tg_model_free(m);
        tg_cell_free(owned);
    }
}

/* ------------------------------------------------------------ errors */

static void test_bad_input(void **state)
{
    (void)state;
    double x[T * B * I], target[B * V];
    int32_t y[T * B];
    fill_batch(x, y, target, 15);
    struct tg_model *m = make_model(tg_cell_find("gru"), I, H, L, V, 1, 0, TG_LOSS_XENT_SUM, 1);
    struct tg_tape *t = tg_tape_new(0);
    const int32_t zero[B] = {5, 0, 4}, big[B] = {5, 6, 4};
    struct tg_seq_batch sb = {.T = T, .B = B, .x = x, .labels = y, .lengths = zero};
    struct tg_seq_result res;
    assert_int_equal(tg_model_forward_from(m, t, &sb, NULL, &res), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "lengths[1] = 0 is outside [1, T = 5]"));
    sb.lengths = big;
    assert_int_equal(tg_model_forward_from(m, t, &sb, NULL, &res), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "lengths[1] = 6 is outside [1, T = 5]"));
    tg_model_free(m);
    tg_tape_free(t);
    struct tg_model_config cfg = {.cell = tg_cell_find("lstm"), .input = 2, .hidden = 2, .layers = 2,
                                  .outputs = 2, .dtype = TG_F64, .dropout = 1.0};
    assert_int_equal(tg_model_new(&cfg, &m), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "dropout must be in [0, 1), got 1"));
    cfg.dropout = NAN;
    assert_int_equal(tg_model_new(&cfg, &m), TG_ERR_VALUE);
    cfg.dropout = 0, cfg.bidirectional = 2;
    assert_int_equal(tg_model_new(&cfg, &m), TG_ERR_VALUE);
}

/* ------------------------------------------------------------ DOT */

/* Data edges "b -> a [dir=back]" where a feeds b: exactly the reverse chain's step-to-step
 * edges (h←_{t+1} → step t); none in a one-directional model. */
static void test_dot_reverse_chain(void **state)
{
    (void)state;
    double x[T * B * I], target[B * V];
    int32_t y[T * B];
    fill_batch(x, y, target, 16);
    for (int bidir = 0; bidir < 2; bidir++) {
        struct tg_model *m = make_model(tg_cell_find("rnn_tanh"), I, H, 1, V, bidir, 0, TG_LOSS_XENT_SUM, 2);
        struct tg_tape *t = tg_tape_new(0);
        tg_tape_set_fusion(t, TG_FUSION_OFF);
        struct tg_seq_batch sb = {.T = T, .B = B, .x = x, .labels = y};
        struct tg_seq_result res;
        assert_int_equal(tg_model_forward_from(m, t, &sb, NULL, &res), TG_OK);
        struct tg_dot_opts o = {.loss = res.loss, .collapse = 1};
        char *text;
        size_t len;
        assert_int_equal(tg_dot_to_string(t, &o, &text, &len, NULL), TG_OK);
        int n = 0;
        for (const char *p = text; (p = strstr(p, " [dir=back];")); p++) {
            /* collapsed: "  s<t> -> s<t+1> [dir=back];" */
            const char *ls = p;
            while (ls > text && ls[-1] != '\n') ls--;
            int a, b2;
            if (sscanf(ls, " s%d_l0 -> s%d_l0", &a, &b2) != 2 && sscanf(ls, " s%d -> s%d", &a, &b2) != 2)
                fail_msg("unexpected reversed edge: %.60s", ls);
            assert_int_equal(b2, a + 1);
            n++;
        }
        assert_int_equal(n, bidir ? T - 1 : 0);
        free(text);
        tg_tape_free(t);
        tg_model_free(m);
    }
}

/* ------------------------------------------------------------ train's flags */

static void test_train_flags(void **state)
{
    (void)state;
    need_binary();
    struct run *r = run_tapegrad("train", "--dropout", "1.5", NULL);
    assert_one_line_error(r, "--dropout must be in [0, 1), got 1.5", NULL);
    r = run_tapegrad("train", "--dropout", "1", NULL);
    assert_one_line_error(r, "--dropout must be in [0, 1), got 1", NULL);
    r = run_tapegrad("train", "--dropout", "-0.5", NULL);
    assert_one_line_error(r, "--dropout must be in [0, 1), got -0.5", NULL);
    r = run_tapegrad("train", "--bidirectional", "--task", "reber", NULL);
    assert_one_line_error(r, "--bidirectional with task reber", NULL);
    r = run_tapegrad("train", "--bidirectional", "--task", "copy", "--seq", "4", NULL);
    assert_one_line_error(r, "--bidirectional with --seq 4", NULL);
    /* and a run with both trains, saying so */
    r = run_tapegrad("train", "--task", "copy", "--length", "3", "--layers", "2", "--hidden", "8",
                     "--bidirectional", "--dropout", "0.25", "--steps", "3", "--eval-size", "8", NULL);
    if (r->status != 0) fail_msg("exit %d: %s", r->status, r->err);
    assert_non_null(strstr(r->err, "bidirectional layers; dropout between layers 0.25"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths_are_separate_sequences),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_fusion_modes_same_bits),
        cmocka_unit_test(test_no_heap_allocation_per_step),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_dot_reverse_chain),
        cmocka_unit_test(test_train_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
