/* test_cells.c — the recurrent cells, whose gradients nobody wrote:
 *  1. every built-in cell, unrolled and stacked, against central finite differences (float64),
 *     for every parameter and the initial state;
 *  2. autodiff against the hand-derived BPTT oracles of models/manual/ on random sizes
 *     (B 1–8, T 1–50, L 1–3): max |autodiff − manual| / max |manual| ≤ 1e-10 per tensor;
 *  3. truncated BPTT: carried state is a leaf, and chunked forward equals the unchunked one. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad_models.h"
#include "tapegrad_manual.h"
#include "seq_case.h"

static void test_all_cells_vs_finite_differences(void **state)
{
    (void)state;
    double worst = 0;
    for (int i = 0; i < tg_cell_count(); i++) {
        const struct tg_cell *cell = tg_cell_at(i);
        struct seq_case c;
        seq_case_new(&c, cell, 4, 2, 3, 4, 2, 3, TG_F64, 77 + (uint64_t)i, 1, NULL);
        struct tg_tensor *xs[64];
        int nx = 0;
        for (int k = 0; k < c.m->n_params; k++) xs[nx++] = c.m->params[k];
        for (int k = 0; k < c.n_init; k++) xs[nx++] = c.init[k];
        struct tg_gradcheck_opts o = {.tol = 1e-7, .skip_kinks = strcmp(cell->name, "rnn_relu") == 0};
        struct tg_gradcheck_report rep;
        assert_int_equal(tg_gradcheck(seq_case_loss, &c, xs, nx, &o, &rep), TG_OK);
        printf("# %-14s FD: %5ld elements, %ld skipped at kinks, max rel %.2e, max abs %.2e\n",
               cell->name, rep.checked, rep.skipped, rep.max_rel, rep.max_abs);
        if (!rep.passed)
            fail_msg("%s: rel %.3g at tensor %d (%d,%d): analytic %.17g numeric %.17g", cell->name,
                     rep.max_rel, rep.worst_tensor, rep.worst_row, rep.worst_col, rep.worst_analytic,
                     rep.worst_numeric);
        assert_true(rep.checked > 100);
        if (rep.max_rel > worst) worst = rep.max_rel;
        seq_case_free(&c);
    }
    printf("# all %d cells: worst FD relative error %.3g\n", tg_cell_count(), worst);
}

/* autodiff vs manual: loss, every parameter gradient, the initial-state gradients, final states */
static double compare(const char *what, const double *a, const double *m, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs(a[i] - m[i]));
        scale = fmax(scale, fabs(m[i]));
    }
    double rel = scale > 0 ? diff / scale : diff;
    if (!(rel <= 1e-10)) fail_msg("%s: max |autodiff - manual| / max |manual| = %.3g", what, rel);
    return rel;
}

static void test_autodiff_vs_manual(void **state)
{
    (void)state;
    const char *names[4] = {"rnn_tanh", "lstm", "gru", "gru_cho"};
    struct tg_rng r;
    tg_rng_seed(&r, 4242);
    double worst = 0;
    for (int rep = 0; rep < 6; rep++) {
        for (int ci = 0; ci < 4; ci++) {
            int T = 1 + (int)tg_rng_below(&r, 50), B = 1 + (int)tg_rng_below(&r, 8);
            int L = 1 + (int)tg_rng_below(&r, 3), I = 1 + (int)tg_rng_below(&r, 6);
            int H = 1 + (int)tg_rng_below(&r, 7), V = 2 + (int)tg_rng_below(&r, 5);
            if (rep == 0) T = 1, B = 1;
            const struct tg_cell *cell = tg_cell_find(names[ci]);
            enum tg_manual_cell mc = (enum tg_manual_cell)tg_manual_cell_from_name(names[ci]);
            struct seq_case c;
            seq_case_new(&c, cell, T, B, I, H, L, V, TG_F64, tg_rng_next(&r), 1, NULL);
            struct tg_tape *t = tg_tape_new(0);
            struct tg_seq_result res;
            assert_int_equal(tg_model_forward_from(c.m, t, &c.b, c.init, &res), TG_OK);
            assert_int_equal(tg_backward(t, res.loss), TG_OK);

            struct tg_manual_dims d = {.T = T, .B = B, .In = I, .H = H, .L = L, .V = V};
            int np = tg_manual_num_params(mc, L);
            assert_int_equal(np, c.m->n_params);
            const double *params[16];
            double *grads[16];
            for (int p = 0; p < np; p++) {
                params[p] = c.m->params[p]->data;
                grads[p] = calloc(tg_numel(c.m->params[p]), sizeof(double));
            }
            size_t sb = (size_t)L * B * H;
            double *h0 = calloc(sb, 8), *c0 = calloc(sb, 8), *dh0 = calloc(sb, 8), *dc0 = calloc(sb, 8);
            double *hT = calloc(sb, 8), *cT = calloc(sb, 8);
            int ns = cell->n_state;
            for (int l = 0; l < L; l++) {
                memcpy(h0 + (size_t)l * B * H, c.init[l * ns]->data, sizeof(double) * B * H);
                if (ns == 2) memcpy(c0 + (size_t)l * B * H, c.init[l * ns + 1]->data, sizeof(double) * B * H);
            }
            double loss;
            if (tg_manual_bptt_f64(mc, &d, params, c.x, c.y, h0, ns == 2 ? c0 : NULL, &loss, grads,
                                   NULL, dh0, ns == 2 ? dc0 : NULL, hT, ns == 2 ? cT : NULL, NULL) != TG_OK)
                fail_msg("manual %s: %s", names[ci], tg_last_error());
            char what[128];
            snprintf(what, sizeof what, "%s T%d B%d L%d loss", names[ci], T, B, L);
            double a = tg_get(res.loss, 0, 0);
            worst = fmax(worst, compare(what, &a, &loss, 1));
            for (int p = 0; p < np; p++) {
                snprintf(what, sizeof what, "%s T%d B%d I%d H%d L%d %s", names[ci], T, B, I, H, L,
                         c.m->names[p]);
                worst = fmax(worst, compare(what, c.m->params[p]->grad, grads[p], tg_numel(c.m->params[p])));
                free(grads[p]);
            }
            for (int l = 0; l < L; l++) {
                snprintf(what, sizeof what, "%s T%d B%d L%d dh0 layer %d", names[ci], T, B, L, l);
                worst = fmax(worst, compare(what, c.init[l * ns]->grad, dh0 + (size_t)l * B * H, (size_t)B * H));
                snprintf(what, sizeof what, "%s T%d L%d h_T layer %d", names[ci], T, L, l);
                worst = fmax(worst, compare(what, res.final[l * ns]->data, hT + (size_t)l * B * H, (size_t)B * H));
                if (ns == 2) {
                    snprintf(what, sizeof what, "%s T%d B%d L%d dc0 layer %d", names[ci], T, B, L, l);
                    worst = fmax(worst, compare(what, c.init[l * ns + 1]->grad, dc0 + (size_t)l * B * H, (size_t)B * H));
                    snprintf(what, sizeof what, "%s T%d L%d c_T layer %d", names[ci], T, L, l);
                    worst = fmax(worst, compare(what, res.final[l * ns + 1]->data, cT + (size_t)l * B * H, (size_t)B * H));
                }
            }
            free(h0), free(c0), free(dh0), free(dc0), free(hT), free(cT);
            tg_tape_free(t);
            seq_case_free(&c);
        }
    }
    printf("# autodiff vs manual (24 random configurations): worst relative difference %.3g\n", worst);
}

/* Truncated BPTT: two chunks with the state carried equal one long forward; the carried state
 * is a copy, so no gradient reaches the first chunk's parameters through it. */
static void test_truncated_bptt_chunks(void **state)
{
    (void)state;
    struct seq_case c;
    seq_case_new(&c, tg_cell_find("lstm"), 6, 3, 2, 4, 2, 3, TG_F64, 9, 0, NULL);
    struct tg_tape *t = tg_tape_new(0);
    struct tg_seq_result full, r1, r2;
    assert_int_equal(tg_model_forward(c.m, t, &c.b, 0, &full), TG_OK);
    double whole = tg_get(full.loss, 0, 0);
    tg_tape_reset(t);
    struct tg_seq_batch b1 = c.b, b2 = c.b;
    b1.T = b2.T = 3;
    b2.x = c.x + 3 * 3 * 2;
    b2.labels = c.y + 3 * 3;
    assert_int_equal(tg_model_forward(c.m, t, &b1, 1, &r1), TG_OK);
    double l1 = tg_get(r1.loss, 0, 0);
    assert_int_equal(tg_model_keep_state(c.m, &r1, 3), TG_OK);
    tg_tape_reset(t);
    assert_int_equal(tg_model_forward(c.m, t, &b2, 1, &r2), TG_OK);
    double l2 = tg_get(r2.loss, 0, 0);
    assert_true(fabs(l1 + l2 - whole) < 1e-12 * fabs(whole));
    /* the carried state entered as a leaf: it has no history on the tape */
    for (int i = 0; i < 4; i++) assert_null(c.m->state[i]->node);
    tg_tape_free(t);
    seq_case_free(&c);
}

static void test_unknown_cell_and_bad_sizes(void **state)
{
    (void)state;
    assert_null(tg_cell_find("lstmm"));
    assert_non_null(strstr(tg_last_error(), "unknown cell 'lstmm'"));
    assert_non_null(strstr(tg_last_error(), "gru_cho"));
    struct tg_model *m;
    struct tg_model_config cfg = {.cell = tg_cell_find("gru"), .input = 3, .hidden = 0, .layers = 1,
                                  .outputs = 2, .dtype = TG_F64};
    assert_int_equal(tg_model_new(&cfg, &m), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "hidden 0"));
    /* 3·H rows would overflow an int (sizes can come from a checkpoint's metadata) */
    cfg.hidden = 1 << 30;
    assert_int_equal(tg_model_new(&cfg, &m), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "too large"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_cells_vs_finite_differences),
        cmocka_unit_test(test_autodiff_vs_manual),
        cmocka_unit_test(test_truncated_bptt_chunks),
        cmocka_unit_test(test_unknown_cell_and_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
