/* test_stage_memory.c — the deferred weight gradient's stack of dC rows (autograd/backward.c)
 * placed in the storage of the addend whose gradient it is.
 *
 * A recurrent layer's steps compute a_t = P_t + h_{t−1}·W_hhᵀ with P = X·W_ihᵀ + b the input
 * projection of all steps. W_hh's stage stacks every dA_t, which is also P's gradient row for
 * row; and backward never reads P's values (its product's backward reads operands, the addends'
 * backward adds dA and reads nothing), so the stack may take P's storage. Checked here: it
 * does for the built-in recurrent cells (P's data is its gradient, P is marked reused, and the
 * gradients still match finite differences in float64), and it does not when P's producer
 * needs its output in backward (P = tanh(…)): that P keeps its values and the gradient is
 * right too. */
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
#include "internal.h" /* TG_REUSED */

/* ------------------------------------------------------- a hand-made recurrence */

enum { T = 4, B = 2, I = 3, H = 5 };

struct rec {
    struct tg_tensor *X, *Wi, *Wh, *h0; /* float64 heap tensors with gradients */
    int squash;                         /* P = tanh(X·W_iᵀ) instead of X·W_iᵀ */
    struct tg_tensor *P;                /* the last recording's projection */
};

/* P = X·W_iᵀ (or tanh of it), h_t = tanh(P_t + h_{t−1}·W_hᵀ), loss = Σ_t Σ h_t². */
static struct tg_tensor *rec_loss(struct tg_tape *t, void *ctx)
{
    struct rec *r = ctx;
    struct tg_tensor *P = tg_matmul(t, r->X, r->Wi, 0, 1);
    if (r->squash) P = tg_tanh(t, P);
    r->P = P;
    struct tg_tensor *h = r->h0, *loss = NULL;
    for (int s = 0; s < T; s++) {
        struct tg_tensor *a = tg_addmm(t, tg_slice(t, P, 0, s * B, (s + 1) * B), h, r->Wh, 0, 1);
        h = tg_tanh(t, a);
        struct tg_tensor *term = tg_sum(t, tg_mul(t, h, h));
        loss = loss ? tg_add(t, loss, term) : term;
    }
    return loss;
}

static struct tg_tensor *heap(const char *name, int rows, int cols, struct tg_rng *g)
{
    struct tg_tensor *x = tg_param_new(name, rows, cols, TG_F64);
    assert_non_null(x);
    tg_tensor_uniform(x, g, -0.8, 0.8);
    return x;
}

static void check_recurrence(int squash)
{
    struct tg_rng g;
    tg_rng_seed(&g, 17 + (uint64_t)squash);
    struct rec r = {heap("X", T * B, I, &g), heap("W_i", H, I, &g), heap("W_h", H, H, &g),
                    heap("h0", B, H, &g), squash, NULL};
    struct tg_tensor *xs[] = {r.X, r.Wi, r.Wh, r.h0};
    /* the placement, on a recording of our own */
    struct tg_tape *t = tg_tape_new(0);
    assert_non_null(t);
    struct tg_tensor *loss = rec_loss(t, &r);
    assert_non_null(loss);
    for (int i = 0; i < 4; i++) tg_tensor_zero_grad(xs[i]);
    assert_int_equal(tg_backward(t, loss), TG_OK);
    assert_non_null(r.P->grad);
    if (!squash) {
        assert_ptr_equal(r.P->grad, r.P->data);
        assert_true(r.P->flags & TG_REUSED);
        /* an op given P afterwards fails cleanly: its values are gone */
        assert_null(tg_tanh(t, r.P));
        assert_non_null(strstr(tg_tape_error(t), "reused its storage for its gradient"));
    } else {
        assert_ptr_not_equal(r.P->grad, r.P->data);
        assert_false(r.P->flags & TG_REUSED);
    }
    tg_tape_free(t);
    /* and the gradients, against central differences */
    struct tg_gradcheck_opts o = {.tol = 1e-7};
    struct tg_gradcheck_report rep;
    assert_int_equal(tg_gradcheck(rec_loss, &r, xs, 4, &o, &rep), TG_OK);
    if (!rep.passed)
        fail_msg("squash %d: max rel %.3g at tensor %d (%d,%d): analytic %.17g numeric %.17g",
                 squash, rep.max_rel, rep.worst_tensor, rep.worst_row, rep.worst_col,
                 rep.worst_analytic, rep.worst_numeric);
    for (int i = 0; i < 4; i++) tg_tensor_free(xs[i]);
}

static void test_projection_holds_stage(void **state)
{
    (void)state;
    check_recurrence(0);
}

static void test_projection_read_in_backward_kept(void **state)
{
    (void)state;
    check_recurrence(1);
}

/* The built-in cells whose step is xp_t + h·W_hhᵀ (lstm, rnn_tanh): their input projection
 * holds the stage, with fusion on and off. */
static void test_cells_projection_holds_stage(void **state)
{
    (void)state;
    const char *names[] = {"lstm", "rnn_tanh"};
    for (int c = 0; c < 2; c++)
        for (int fusion = TG_FUSION_OFF; fusion <= TG_FUSION_ON; fusion++) {
            struct tg_model_config cfg = {.cell = tg_cell_find(names[c]), .input = I, .hidden = H,
                                          .layers = 2, .outputs = 3, .dtype = TG_F64,
                                          .loss = TG_LOSS_XENT_SUM};
            struct tg_model *m;
            assert_int_equal(tg_model_new(&cfg, &m), TG_OK);
            struct tg_rng g;
            tg_rng_seed(&g, 5);
            for (int i = 0; i < m->n_params; i++) tg_tensor_uniform(m->params[i], &g, -0.5, 0.5);
            double x[T * B * I];
            int32_t y[T * B];
            for (int i = 0; i < T * B * I; i++) x[i] = tg_rng_normal(&g);
            for (int i = 0; i < T * B; i++) y[i] = (int32_t)tg_rng_below(&g, 3);
            struct tg_seq_batch b = {.T = T, .B = B, .x = x, .labels = y};
            struct tg_tape *t = tg_tape_new(0);
            assert_non_null(t);
            tg_tape_set_fusion(t, fusion);
            struct tg_seq_result res;
            assert_int_equal(tg_model_forward(m, t, &b, 0, &res), TG_OK);
            assert_int_equal(tg_backward(t, res.loss), TG_OK);
            int holding = 0; /* one projection per layer */
            for (size_t i = 0; i < tg_tape_num_nodes(t); i++) {
                const struct tg_tensor *o = tg_tape_node(t, i)->out;
                holding += o->grad && o->grad == o->data && (o->flags & TG_REUSED);
            }
            if (holding != 2)
                fail_msg("%s fusion %d: %d projections hold their stage (want 2)", names[c],
                         fusion, holding);
            tg_tape_free(t);
            tg_model_free(m);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_projection_holds_stage),
        cmocka_unit_test(test_projection_read_in_backward_kept),
        cmocka_unit_test(test_cells_projection_holds_stage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
