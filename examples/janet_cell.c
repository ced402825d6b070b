/* JANET (van der Westhuizen & Lasenby 2018): an LSTM with only a forget gate.
 *   f = σ(W_f x + U_f h + b_f),   h' = f ⊙ h + (1 − f) ⊙ tanh(W_c x + U_c h + b_c)     */
#include "tapegrad_models.h"

static const struct tg_param_spec janet_params[] = {
    {"weight_ih", TG_SHAPE(2, 0, 0, 0, 1, 0)},   /* [W_f; W_c]   2H × in */
    {"weight_hh", TG_SHAPE(2, 0, 0, 1, 0, 0)},   /* [U_f; U_c]   2H × H  */
    {"bias", TG_SHAPE(0, 0, 1, 2, 0, 0)},        /* [b_f, b_c]   1 × 2H  */
};

static void janet_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
                       struct tg_tensor *const *s, struct tg_tensor **next)
{
    int H = s[0]->cols;
    struct tg_tensor *a = tg_add(t, tg_add(t, tg_matmul(t, x, w[0], 0, 1),
                                           tg_matmul(t, s[0], w[1], 0, 1)), w[2]);
    struct tg_tensor *f = tg_sigmoid(t, tg_slice(t, a, 1, 0, H));
    struct tg_tensor *c = tg_tanh(t, tg_slice(t, a, 1, H, 2 * H));
    next[0] = tg_add(t, tg_mul(t, f, s[0]), tg_mul(t, tg_one_minus(t, f), c));
}

const struct tg_cell janet_cell = {"janet", "f = σ(W_f x + U_f h + b_f), h' = f⊙h + (1−f)⊙tanh(…)",
                                   1, 2, 3, janet_params, janet_step, NULL};
