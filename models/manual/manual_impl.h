/*
 * manual_impl.h — internal interface between the driver (common.c) and the four cells of the
 * hand-derived oracles. Not installed; users include tapegrad_manual.h.
 *
 * The driver owns the sequence model (layers, output layer, loss) and carves the workspace;
 * each cell implements one layer's forward over all T steps and its backward through time.
 * Pointers are void * so that one struct serves both element types; each cell file
 * instantiates its code for float and double from <cell>_impl.h.
 */
#ifndef TG_MANUAL_IMPL_H
#define TG_MANUAL_IMPL_H

#include "tapegrad_manual.h"

/* One layer's view of parameters, input and workspace. Row blocks are B rows of one step. */
struct tg_manual_layer {
    int T, B, in, H;
    const void *X;          /* T·B × in: x (layer 0) or h_t of the layer below */
    const void *const *p;   /* this layer's parameters, in tapegrad_manual.h's order */
    const void *h0, *c0;    /* B × H initial states, NULL for zeros */
    void *Hs;               /* (T+1)·B × H: block 0 is h0, block t+1 is h_t (so blocks 0..T-1
                               stacked are the h_{t-1} every step read: one GEMM for dW_hh) */
    void *A;                /* T·B × G·H gate activations; backward overwrites each step's
                               block with d loss / d pre-activations once it is done with it */
    void *Cs;               /* lstm: (T+1)·B × H cell states, block 0 is c0 */
    void *aux;              /* T·B × H: lstm tanh(c_t); gru h_{t−1}·W_hnᵀ + b_hn;
                               gru_cho r⊙h_{t−1} */
    void *dAh;              /* gru: T·B × 3H gradients of the hidden-side pre-activations */
    void *scratch;          /* B × 3H per-step scratch (gru: s_t; lstm: dc; gru_cho: dq and
                               a sink for the unwanted d loss / d h0) */
};

/* What the backward of one layer reads and writes. */
struct tg_manual_layer_grad {
    void *dH;               /* T·B × H: in, d loss / d h_t from above (output layer or the
                               next layer); used as the accumulator of the recurrent part */
    void *const *grads;     /* this layer's parameter gradients (overwritten) */
    void *dX;               /* T·B × in out, or NULL; may be dH itself (written last) */
    void *dh0, *dc0;        /* B × H out, or NULL */
};

/* Where each buffer lives in the workspace (byte offsets, each 64-byte aligned). The L layer
 * blocks come first, layer_bytes apart; the shared buffers follow. */
struct tg_manual_plan {
    enum tg_manual_cell cell;
    size_t layer_bytes;
    size_t off_Hs, off_A, off_Cs, off_aux;              /* within a layer block */
    size_t off_logits, off_dH, off_dAh, off_scratch;    /* shared */
    size_t total;
};

/* 0 and the plan, or -1 if the sizes overflow. Dims must already be > 0. */
int tg_manual_plan(enum tg_manual_cell c, const struct tg_manual_dims *d, size_t esize,
                   struct tg_manual_plan *pl);
/* Fill l with layer k's view: its input (x, or the layer below's h_t), parameters, initial
 * states (h0/c0 + k·B·H, or NULL) and workspace buffers. */
void tg_manual_layer_view(const struct tg_manual_plan *pl, const struct tg_manual_dims *d,
                          char *ws, int k, size_t esize, const void *x,
                          const void *const *params, const void *h0, const void *c0,
                          struct tg_manual_layer *l);

typedef void (*tg_manual_fwd_fn)(const struct tg_manual_layer *l);
typedef void (*tg_manual_bwd_fn)(const struct tg_manual_layer *l,
                                 const struct tg_manual_layer_grad *g);

#define TG_MANUAL_DECLARE(cell)                                                             \
    void tg_manual_##cell##_forward_f32(const struct tg_manual_layer *l);                 \
    void tg_manual_##cell##_backward_f32(const struct tg_manual_layer *l,                 \
                                         const struct tg_manual_layer_grad *g);           \
    void tg_manual_##cell##_forward_f64(const struct tg_manual_layer *l);                 \
    void tg_manual_##cell##_backward_f64(const struct tg_manual_layer *l,                 \
                                         const struct tg_manual_layer_grad *g);
TG_MANUAL_DECLARE(rnn)
TG_MANUAL_DECLARE(lstm)
TG_MANUAL_DECLARE(gru)
TG_MANUAL_DECLARE(gru_cho)
#undef TG_MANUAL_DECLARE

#endif
