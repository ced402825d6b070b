/* cells.c — the plain recurrent cells: Elman RNN (tanh, relu) and the minimal gated unit.
 * Forward equations only; their gradients come from the ops they are made of. */
#include "cell_util.h"

/* rnn_tanh / rnn_relu (PyTorch nn.RNN):  h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh). */
static const struct tg_param_spec rnn_params[] = {
    {"weight_ih", TG_SHAPE(1, 0, 0, 0, 1, 0)},
    {"weight_hh", TG_SHAPE(1, 0, 0, 1, 0, 0)},
    {"bias_ih", TG_SHAPE(0, 0, 1, 1, 0, 0)},
    {"bias_hh", TG_SHAPE(0, 0, 1, 1, 0, 0)},
};

/* x W_ihᵀ + b_ih + b_hh for all T·B rows at once (see tg_cell_input_fn); step t gets its
 * block xp and adds h W_hhᵀ to it in one GEMM. */
static struct tg_tensor *rnn_pre(struct tg_tape *t, struct tg_tensor *const *w,
                                 struct tg_tensor *xp, struct tg_tensor *h)
{
    return tg_addmm(t, xp, h, w[1], 0, 1);
}

static void rnn_tanh_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *xp,
                          struct tg_tensor *const *s, struct tg_tensor **next)
{
    next[0] = tg_named(tg_tanh(t, rnn_pre(t, w, xp, s[0])), "h'");
}

static void rnn_relu_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *xp,
                          struct tg_tensor *const *s, struct tg_tensor **next)
{
    next[0] = tg_named(tg_relu(t, rnn_pre(t, w, xp, s[0])), "h'");
}

const struct tg_cell tg_cell_rnn_tanh = {
    "rnn_tanh", "h' = tanh(W_ih x + b_ih + W_hh h + b_hh)", 1, 1, 4, rnn_params, rnn_tanh_step, tg_input_ih_hh};
const struct tg_cell tg_cell_rnn_relu = {
    "rnn_relu", "h' = relu(W_ih x + b_ih + W_hh h + b_hh)", 1, 1, 4, rnn_params, rnn_relu_step, tg_input_ih_hh};

/* mgu (Zhou et al. 2016, minimal gated unit):
 *   f = σ(W_f [h, x] + b_f),  h̃ = tanh(W_h [f ⊙ h, x] + b_h),  h' = (1 − f) ⊙ h + f ⊙ h̃. */
static const struct tg_param_spec mgu_params[] = {
    {"weight_f", TG_SHAPE(1, 0, 0, 1, 1, 0)},
    {"bias_f", TG_SHAPE(0, 0, 1, 1, 0, 0)},
    {"weight_h", TG_SHAPE(1, 0, 0, 1, 1, 0)},
    {"bias_h", TG_SHAPE(0, 0, 1, 1, 0, 0)},
};

static void mgu_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
                     struct tg_tensor *const *s, struct tg_tensor **next)
{
    struct tg_tensor *h = s[0];
    struct tg_tensor *f = tg_named(tg_sigmoid(t, tg_linear(t, tg_concat2(t, 1, h, x), w[0], w[1])), "f");
    struct tg_tensor *fh = tg_mul(t, f, h);
    struct tg_tensor *cand = tg_named(tg_tanh(t, tg_linear(t, tg_concat2(t, 1, fh, x), w[2], w[3])), "h~");
    next[0] = tg_named(tg_add(t, tg_mul(t, tg_one_minus(t, f), h), tg_mul(t, f, cand)), "h'");
}

const struct tg_cell tg_cell_mgu = {
    "mgu", "f = σ(W_f[h,x] + b_f), h~ = tanh(W_h[f⊙h,x] + b_h), h' = (1−f)⊙h + f⊙h~", 1, 1, 4,
    mgu_params, mgu_step, NULL};
