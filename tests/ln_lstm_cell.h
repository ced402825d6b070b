/* ln_lstm_cell.h — a layer-normalised LSTM (Ba, Kiros & Hinton 2016) written as a user would,
 * with the public ops only: no derivative code. Shared by tests/test_layernorm.c and
 * bench/ln_lstm_bench.c.
 *
 *   a  = x W_ihᵀ + h W_hhᵀ                                   (B × 4H, no bias: LN's β is one)
 *   [i f g o] = LN(a; γ_g, β_g);  i, f, o = σ(·), g = tanh(·)
 *   c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(LN(c'; γ_c, β_c))
 * with LN(a; γ, β) = (a − m) / √(v + ε) ⊙ γ + β over each row, m = row_mean(a),
 * v = row_mean((a − m)²), ε = 1e-5, and per-unit gains γ and biases β (1×n rows). */
#ifndef TG_TEST_LN_LSTM_CELL_H
#define TG_TEST_LN_LSTM_CELL_H

#include "tapegrad_models.h"

#define LN_EPS 1e-5

/* Row-wise layer norm with per-unit gain and bias (1×n rows broadcast over B). */
static inline struct tg_tensor *ln_rows(struct tg_tape *t, struct tg_tensor *a,
                                        struct tg_tensor *gain, struct tg_tensor *bias)
{
    struct tg_tensor *m = tg_row_mean(t, a);                               /* B×1 */
    struct tg_tensor *d = tg_sub(t, a, m);                                 /* column broadcast */
    struct tg_tensor *v = tg_row_mean(t, tg_mul(t, d, d));                 /* B×1 */
    struct tg_tensor *s = tg_sqrt(t, tg_affine(t, v, 1.0, LN_EPS));        /* B×1 */
    struct tg_tensor *n = tg_div(t, d, s);                                 /* column broadcast */
    return tg_add(t, tg_mul(t, n, gain), bias);                            /* row broadcasts */
}

/* weight_ih 4H×in, weight_hh 4H×H, gain/bias of the gates 1×4H, of the cell 1×H */
static const struct tg_param_spec ln_lstm_params[] = {
    {"weight_ih", TG_SHAPE(4, 0, 0, 0, 1, 0)},
    {"weight_hh", TG_SHAPE(4, 0, 0, 1, 0, 0)},
    {"ln_gates_gain", TG_SHAPE(0, 0, 1, 4, 0, 0)},
    {"ln_gates_bias", TG_SHAPE(0, 0, 1, 4, 0, 0)},
    {"ln_cell_gain", TG_SHAPE(0, 0, 1, 1, 0, 0)},
    {"ln_cell_bias", TG_SHAPE(0, 0, 1, 1, 0, 0)},
};
enum { LN_W_IH, LN_W_HH, LN_G_GAIN, LN_G_BIAS, LN_C_GAIN, LN_C_BIAS, LN_NPARAMS };

/* x W_ihᵀ for all T·B rows at once: one GEMM instead of T. */
static inline struct tg_tensor *ln_lstm_input(struct tg_tape *t, struct tg_tensor *const *w,
                                              struct tg_tensor *X)
{
    return tg_matmul(t, X, w[LN_W_IH], 0, 1);
}

static inline void ln_lstm_step(struct tg_tape *t, struct tg_tensor *const *w,
                                struct tg_tensor *xp, struct tg_tensor *const *s,
                                struct tg_tensor **next)
{
    int H = s[0] ? s[0]->cols : 0;
    struct tg_tensor *a = tg_addmm(t, xp, s[0], w[LN_W_HH], 0, 1);
    struct tg_tensor *z = ln_rows(t, a, w[LN_G_GAIN], w[LN_G_BIAS]);
    struct tg_tensor *i = tg_sigmoid(t, z ? tg_slice(t, z, 1, 0, H) : NULL);
    struct tg_tensor *f = tg_sigmoid(t, z ? tg_slice(t, z, 1, H, 2 * H) : NULL);
    struct tg_tensor *g = tg_tanh(t, z ? tg_slice(t, z, 1, 2 * H, 3 * H) : NULL);
    struct tg_tensor *o = tg_sigmoid(t, z ? tg_slice(t, z, 1, 3 * H, 4 * H) : NULL);
    next[1] = tg_add(t, tg_mul(t, f, s[1]), tg_mul(t, i, g));
    next[0] = tg_mul(t, o, tg_tanh(t, ln_rows(t, next[1], w[LN_C_GAIN], w[LN_C_BIAS])));
}

static const struct tg_cell ln_lstm_cell = {
    "ln_lstm", "[i f g o] = LN(W x + U h), c' = f⊙c + i⊙g, h' = o⊙tanh(LN(c'))", 2, 4,
    LN_NPARAMS, ln_lstm_params, ln_lstm_step, ln_lstm_input};

#endif
