/* cells_gru.c — the two GRU forms, which differ in where the reset gate acts. */
#include "cell_util.h"

/* gru (PyTorch nn.GRU, rows r, z, n; reset after the matmul):
 *   r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr),  z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
 *   n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h. */
static const struct tg_param_spec gru_params[] = {
    {"weight_ih", TG_SHAPE(3, 0, 0, 0, 1, 0)},
    {"weight_hh", TG_SHAPE(3, 0, 0, 1, 0, 0)},
    {"bias_ih", TG_SHAPE(0, 0, 1, 3, 0, 0)},
    {"bias_hh", TG_SHAPE(0, 0, 1, 3, 0, 0)},
};

/* x W_ihᵀ + b_ih for all T·B rows at once; each step receives its block gi. */
static struct tg_tensor *gru_input(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *X)
{
    return tg_linear(t, X, w[0], w[2]);
}

static void gru_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *gi,
                     struct tg_tensor *const *s, struct tg_tensor **next)
{
    int H = tg_hidden_of(s);
    struct tg_tensor *h = s[0];
    struct tg_tensor *gh = tg_linear(t, h, w[1], w[3]);
    /* gate by gate, so that every elementwise op reads column blocks of gi and gh and the whole
     * step is one fusion region (a σ over both blocks at once would have to be stored first) */
    struct tg_tensor *r = tg_named(tg_sigmoid(t, tg_add(t, tg_block(t, gi, 0, H), tg_block(t, gh, 0, H))), "r");
    struct tg_tensor *z = tg_named(tg_sigmoid(t, tg_add(t, tg_block(t, gi, 1, H), tg_block(t, gh, 1, H))), "z");
    struct tg_tensor *n = tg_named(tg_tanh(t, tg_add(t, tg_block(t, gi, 2, H), tg_mul(t, r, tg_block(t, gh, 2, H)))), "n");
    next[0] = tg_named(tg_add(t, tg_mul(t, tg_one_minus(t, z), n), tg_mul(t, z, h)), "h'");
}

const struct tg_cell tg_cell_gru = {
    "gru", "r,z = σ(W_i* x + b_i* + W_h* h + b_h*), n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn)), h' = (1−z)⊙n + z⊙h",
    1, 3, 4, gru_params, gru_step, gru_input};

/* gru_cho (Cho et al. 2014; reset before the matmul), weight rows u, r, c over columns [h, x]:
 *   u = σ(W_u [h, x] + b_u),  r = σ(W_r [h, x] + b_r),
 *   c̃ = tanh(W_c [r ⊙ h, x] + b_c),  h' = u ⊙ c̃ + (1 − u) ⊙ h. */
static const struct tg_param_spec cho_params[] = {
    {"weight", TG_SHAPE(3, 0, 0, 1, 1, 0)},
    {"bias", TG_SHAPE(0, 0, 1, 3, 0, 0)},
};

static void cho_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
                     struct tg_tensor *const *s, struct tg_tensor **next)
{
    int H = tg_hidden_of(s);
    struct tg_tensor *h = s[0];
    struct tg_tensor *w_ur = tg_slice(t, w[0], 0, 0, 2 * H), *b_ur = tg_slice(t, w[1], 1, 0, 2 * H);
    struct tg_tensor *ur = tg_sigmoid(t, tg_linear(t, tg_concat2(t, 1, h, x), w_ur, b_ur));
    struct tg_tensor *u = tg_named(tg_block(t, ur, 0, H), "u"), *r = tg_named(tg_block(t, ur, 1, H), "r");
    struct tg_tensor *w_c = tg_weight_block(t, w[0], 2, H), *b_c = tg_block(t, w[1], 2, H);
    struct tg_tensor *c = tg_named(tg_tanh(t, tg_linear(t, tg_concat2(t, 1, tg_mul(t, r, h), x), w_c, b_c)), "c~");
    next[0] = tg_named(tg_add(t, tg_mul(t, u, c), tg_mul(t, tg_one_minus(t, u), h)), "h'");
}

const struct tg_cell tg_cell_gru_cho = {
    "gru_cho", "u,r = σ(W[h,x] + b), c~ = tanh(W_c[r⊙h,x] + b_c), h' = u⊙c~ + (1−u)⊙h", 1, 3, 2,
    cho_params, cho_step, NULL};
