/* cell_util.h — tiny compositions shared by the built-in cells (ops only, no gradients). */
#ifndef TG_CELL_UTIL_H
#define TG_CELL_UTIL_H

#include "tapegrad_models.h"

/* x·Wᵀ + b with W stored (out, in) as PyTorch does: one GEMM with the bias as its addend. */
static inline struct tg_tensor *tg_linear(struct tg_tape *t, struct tg_tensor *x,
                                          struct tg_tensor *w, struct tg_tensor *b)
{
    return tg_addmm(t, b, x, w, 0, 1);
}

/* x W_ihᵀ + b_ih + b_hh for all T·B rows at once (w[0] = weight_ih, w[2] = bias_ih,
 * w[3] = bias_hh): both biases are added once per sequence instead of once per step, and each
 * step is then the single GEMM xp + h·W_hhᵀ. The two biases are summed first (one 1×G·H row),
 * so the GEMM adds them as its addend: no extra pass over the T·B rows, forward or backward. */
static inline struct tg_tensor *tg_input_ih_hh(struct tg_tape *t, struct tg_tensor *const *w,
                                               struct tg_tensor *X)
{
    return tg_linear(t, X, w[0], tg_add(t, w[2], w[3]));
}

/* Gate block k of width h from a B×(G·h) pre-activation. */
static inline struct tg_tensor *tg_block(struct tg_tape *t, struct tg_tensor *g, int k, int h)
{
    return g ? tg_slice(t, g, 1, k * h, (k + 1) * h) : NULL;
}

/* Rows [k·h, (k+1)·h) of a weight, or columns of a 1×(G·h) bias: one gate's parameters. */
static inline struct tg_tensor *tg_weight_block(struct tg_tape *t, struct tg_tensor *w, int k, int h)
{
    return tg_slice(t, w, 0, k * h, (k + 1) * h);
}

/* x, named for pictures (DOT labels: "f", "c'"); the name is not copied. */
static inline struct tg_tensor *tg_named(struct tg_tensor *x, const char *name)
{
    tg_tensor_set_name(x, name);
    return x;
}

/* Hidden width of a step: the state's columns. */
static inline int tg_hidden_of(struct tg_tensor *const *state) { return state[0] ? state[0]->cols : 0; }

#endif
