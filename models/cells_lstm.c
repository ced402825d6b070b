/* cells_lstm.c — the LSTM family as compositions of ops (state: h, c).
 * σ = logistic, ⊙ = elementwise product, [a, b] = column concatenation. */
#include "cell_util.h"

/* lstm (PyTorch nn.LSTM, gate rows i, f, g, o):
 *   [i f g o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh;  i, f, o = σ(·), g = tanh(·)
 *   c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(c'). */
static const struct tg_param_spec lstm_params[] = {
    {"weight_ih", TG_SHAPE(4, 0, 0, 0, 1, 0)},
    {"weight_hh", TG_SHAPE(4, 0, 0, 1, 0, 0)},
    {"bias_ih", TG_SHAPE(0, 0, 1, 4, 0, 0)},
    {"bias_hh", TG_SHAPE(0, 0, 1, 4, 0, 0)},
};

/* dlbook's single bias: x W_ihᵀ + b for all T·B rows at once. */
static struct tg_tensor *input_ih(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *X)
{
    return tg_linear(t, X, w[0], w[2]);
}

static void lstm_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *xp,
                      struct tg_tensor *const *s, struct tg_tensor **next)
{
    int H = tg_hidden_of(s);
    struct tg_tensor *g = tg_addmm(t, xp, s[0], w[1], 0, 1); /* xp = x W_ihᵀ + b_ih + b_hh */
    struct tg_tensor *i = tg_named(tg_sigmoid(t, tg_block(t, g, 0, H)), "i");
    struct tg_tensor *f = tg_named(tg_sigmoid(t, tg_block(t, g, 1, H)), "f");
    struct tg_tensor *cand = tg_named(tg_tanh(t, tg_block(t, g, 2, H)), "g");
    struct tg_tensor *o = tg_named(tg_sigmoid(t, tg_block(t, g, 3, H)), "o");
    next[1] = tg_named(tg_add(t, tg_mul(t, f, s[1]), tg_mul(t, i, cand)), "c'");
    next[0] = tg_named(tg_mul(t, o, tg_tanh(t, next[1])), "h'");
}

const struct tg_cell tg_cell_lstm = {
    "lstm", "i,f,o = σ(W_i* x + W_h* h + b), g = tanh(…), c' = f⊙c + i⊙g, h' = o⊙tanh(c')", 2, 4, 4,
    lstm_params, lstm_step, tg_input_ih_hh};

/* lstm_peephole (Gers & Schmidhuber 2000): the gates also see the cell state.
 *   [i f] = σ(W_if [c, h, x] + b_if),  g = tanh(W_g [h, x] + b_g),  c' = f ⊙ c + i ⊙ g,
 *   o = σ(W_o [c', h, x] + b_o)  (the output gate peeks at the new cell),  h' = o ⊙ tanh(c'). */
static const struct tg_param_spec peephole_params[] = {
    {"weight_if", TG_SHAPE(2, 0, 0, 2, 1, 0)},
    {"bias_if", TG_SHAPE(0, 0, 1, 2, 0, 0)},
    {"weight_g", TG_SHAPE(1, 0, 0, 1, 1, 0)},
    {"bias_g", TG_SHAPE(0, 0, 1, 1, 0, 0)},
    {"weight_o", TG_SHAPE(1, 0, 0, 2, 1, 0)},
    {"bias_o", TG_SHAPE(0, 0, 1, 1, 0, 0)},
};

static void peephole_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
                          struct tg_tensor *const *s, struct tg_tensor **next)
{
    int H = tg_hidden_of(s);
    struct tg_tensor *h = s[0], *c = s[1];
    struct tg_tensor *chx[3] = {c, h, x};
    struct tg_tensor *ifg = tg_sigmoid(t, tg_linear(t, tg_concat(t, 1, 3, chx), w[0], w[1]));
    struct tg_tensor *i = tg_named(tg_block(t, ifg, 0, H), "i"), *f = tg_named(tg_block(t, ifg, 1, H), "f");
    struct tg_tensor *g = tg_named(tg_tanh(t, tg_linear(t, tg_concat2(t, 1, h, x), w[2], w[3])), "g");
    struct tg_tensor *c2 = tg_named(tg_add(t, tg_mul(t, f, c), tg_mul(t, i, g)), "c'");
    struct tg_tensor *c2hx[3] = {c2, h, x};
    struct tg_tensor *o = tg_named(tg_sigmoid(t, tg_linear(t, tg_concat(t, 1, 3, c2hx), w[4], w[5])), "o");
    next[1] = c2;
    next[0] = tg_named(tg_mul(t, o, tg_tanh(t, c2)), "h'");
}

const struct tg_cell tg_cell_lstm_peephole = {
    "lstm_peephole", "i,f = σ(W[c,h,x] + b), c' = f⊙c + i⊙tanh(W_g[h,x] + b_g), o = σ(W_o[c',h,x] + b_o), h' = o⊙tanh(c')",
    2, 2, 6, peephole_params, peephole_step, NULL};

/* lstm_coupled (coupled input and forget gate, Greff et al. 2017's CIFG), gate rows f, g, o:
 *   f, o = σ(·), g = tanh(·),  c' = f ⊙ c + (1 − f) ⊙ g,  h' = o ⊙ tanh(c'). */
static const struct tg_param_spec coupled_params[] = {
    {"weight_ih", TG_SHAPE(3, 0, 0, 0, 1, 0)},
    {"weight_hh", TG_SHAPE(3, 0, 0, 1, 0, 0)},
    {"bias_ih", TG_SHAPE(0, 0, 1, 3, 0, 0)},
    {"bias_hh", TG_SHAPE(0, 0, 1, 3, 0, 0)},
};

static void coupled_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *xp,
                         struct tg_tensor *const *s, struct tg_tensor **next)
{
    int H = tg_hidden_of(s);
    struct tg_tensor *a = tg_addmm(t, xp, s[0], w[1], 0, 1); /* xp = x W_ihᵀ + b_ih + b_hh */
    struct tg_tensor *f = tg_named(tg_sigmoid(t, tg_block(t, a, 0, H)), "f");
    struct tg_tensor *g = tg_named(tg_tanh(t, tg_block(t, a, 1, H)), "g");
    struct tg_tensor *o = tg_named(tg_sigmoid(t, tg_block(t, a, 2, H)), "o");
    next[1] = tg_named(tg_add(t, tg_mul(t, f, s[1]), tg_mul(t, tg_one_minus(t, f), g)), "c'");
    next[0] = tg_named(tg_mul(t, o, tg_tanh(t, next[1])), "h'");
}

const struct tg_cell tg_cell_lstm_coupled = {
    "lstm_coupled", "f,o = σ(…), g = tanh(…), c' = f⊙c + (1−f)⊙g, h' = o⊙tanh(c')", 2, 3, 4,
    coupled_params, coupled_step, tg_input_ih_hh};

/* lstm_dlbook (Goodfellow, Bengio & Courville, Deep Learning, eqs. 10.40–10.44), rows f, g, a, q:
 *   f = σ(b^f + U^f x + W^f h)            forget gate            (10.40)
 *   s' = f ⊙ s + g ⊙ σ(b + U x + W h)     cell; note σ, not tanh (10.41)
 *   g = σ(b^g + U^g x + W^g h)            external input gate    (10.42)
 *   h' = tanh(s') ⊙ q                      output                 (10.43)
 *   q = σ(b^o + U^o x + W^o h)            output gate            (10.44)
 * One bias per gate, as in the book. */
static const struct tg_param_spec dlbook_params[] = {
    {"weight_ih", TG_SHAPE(4, 0, 0, 0, 1, 0)},
    {"weight_hh", TG_SHAPE(4, 0, 0, 1, 0, 0)},
    {"bias", TG_SHAPE(0, 0, 1, 4, 0, 0)},
};

static void dlbook_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *xp,
                        struct tg_tensor *const *s, struct tg_tensor **next)
{
    int H = tg_hidden_of(s);
    /* all four blocks are sigmoids, so one σ over the whole pre-activation */
    struct tg_tensor *a = tg_sigmoid(t, tg_addmm(t, xp, s[0], w[1], 0, 1));
    struct tg_tensor *f = tg_named(tg_block(t, a, 0, H), "f"), *g = tg_named(tg_block(t, a, 1, H), "g");
    struct tg_tensor *in = tg_named(tg_block(t, a, 2, H), "in"), *q = tg_named(tg_block(t, a, 3, H), "q");
    next[1] = tg_named(tg_add(t, tg_mul(t, f, s[1]), tg_mul(t, g, in)), "s'");
    next[0] = tg_named(tg_mul(t, tg_tanh(t, next[1]), q), "h'");
}

const struct tg_cell tg_cell_lstm_dlbook = {
    "lstm_dlbook", "f,g,q = σ(b + U x + W h), s' = f⊙s + g⊙σ(b + U x + W h), h' = tanh(s')⊙q", 2, 4, 3,
    dlbook_params, dlbook_step, input_ih};
