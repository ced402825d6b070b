/*
 * tapegrad_manual.h — hand-derived BPTT for rnn_tanh, lstm, gru and gru_cho: forward and backward
 * written out by hand over plain arrays, no tape. These are the oracles the autodiff engine is
 * tested against, and the "expert hand-written" speed reference of the benchmarks.
 *
 * A worked example: loss and every gradient of a 2-layer LSTM language model in float64.
 *
 *   struct tg_manual_dims d = {.T = 50, .B = 32, .In = 128, .H = 128, .L = 2, .V = 64};
 *   int np = tg_manual_num_params(TG_MANUAL_LSTM, d.L);          // 2·4 + 2 = 10
 *   const double *params[10]; double *grads[10];
 *   for (int p = 0; p < np; p++) {
 *       int r, c;
 *       tg_manual_param_shape(TG_MANUAL_LSTM, &d, p, &r, &c);    // (4H, I), (4H, H), …
 *       params[p] = ...r·c doubles...; grads[p] = ...r·c doubles...;
 *   }
 *   double loss;
 *   if (tg_manual_bptt_f64(TG_MANUAL_LSTM, &d, params, x, y, NULL, NULL, &loss, grads,
 *                          NULL, NULL, NULL, NULL, NULL, NULL) != TG_OK)
 *       puts(tg_last_error());
 *
 * The model: a stack of L recurrent layers over T steps of a batch of B sequences, a linear
 * output layer, and softmax cross-entropy summed over all T·B positions.
 * - x is T×B×In, time-major (x[t][b][i]); y is T×B labels in [0, V), or -1 for "no loss here".
 * - Layer k reads x_t (k = 0, width In) or h^{k-1}_t (width H).
 * - logits_t = h^{L-1}_t·out.weightᵀ + out.bias; loss = Σ_{t,b} −log softmax(logits_t[b])[y_t[b]].
 * - Parameters are stored PyTorch-style, (out, in), so a layer computes a·Wᵀ. Their order:
 *   layer 0's, layer 1's, …, then out.weight (V×H), out.bias (V). Per layer:
 *     rnn_tanh, lstm, gru: weight_ih (G·H × in), weight_hh (G·H × H), bias_ih (G·H), bias_hh (G·H)
 *                          with G = 1, 4 (blocks i,f,g,o), 3 (blocks r,z,n)
 *     gru_cho:             weight (3H × (H+in)), rows [u; r; c], columns [h-part, x-part];
 *                          bias (3H)
 *   The cell equations and their derivatives are in the header comment of each
 *   models/manual/<cell>_bptt.c.
 */
#ifndef TAPEGRAD_MANUAL_H
#define TAPEGRAD_MANUAL_H

#include <stddef.h>
#include <stdint.h>

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

enum tg_manual_cell {
    TG_MANUAL_RNN_TANH = 0,
    TG_MANUAL_LSTM,
    TG_MANUAL_GRU,
    TG_MANUAL_GRU_CHO,
    TG_MANUAL_CELL_COUNT
};

/* T steps, B sequences, In inputs, H hidden units, L layers, V output classes. All > 0.
 * (The input width is `In`, not `I`: <complex.h>, which OpenBLAS's cblas.h includes, defines
 * a macro I.) */
struct tg_manual_dims { int T, B, In, H, L, V; };

/* "rnn_tanh", "lstm", "gru", "gru_cho" (NULL for an unknown value). */
const char *tg_manual_cell_name(enum tg_manual_cell c);
/* The cell called `name`, or -1 if there is none. */
int tg_manual_cell_from_name(const char *name);

/* Parameter tensors per layer: 4, or 2 for gru_cho (0 for an unknown cell). */
int tg_manual_params_per_layer(enum tg_manual_cell c);
/* Parameter tensors in all: L·params_per_layer + 2 (out.weight, out.bias). */
int tg_manual_num_params(enum tg_manual_cell c, int L);
/* Shape of parameter p (biases are 1×n). TG_ERR_VALUE if p is out of range. */
enum tg_status tg_manual_param_shape(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                     int p, int *rows, int *cols);
/* PyTorch-style name of parameter p ("weight_ih_l0", …, "out.weight"), written into buf. */
enum tg_status tg_manual_param_name(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                    int p, char *buf, size_t size);

/* Bytes of workspace one call needs for these sizes (element size 4 or 8); 0 if invalid. */
size_t tg_manual_workspace_bytes(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                 int dtype_bytes);

/*
 * Forward and backward through time.
 *   params  tg_manual_num_params pointers, in the order above.
 *   x, y    T×B×In inputs and T×B labels (-1: position without loss).
 *   h0, c0  L×B×H initial states, or NULL for zeros (c0 only for lstm; ignored otherwise).
 *   loss    receives the summed cross-entropy.
 *   grads   same order and shapes as params, OVERWRITTEN with d loss / d param; NULL runs
 *           the forward pass only (loss and final states).
 *   dx      T×B×In, d loss / d x, or NULL.
 *   dh0,dc0 L×B×H, d loss / d h0 and d loss / d c0 (lstm only), or NULL.
 *   hT, cT  L×B×H final states (cT for lstm only), or NULL.
 *   ws      tg_manual_workspace_bytes(c, d, sizeof(elem)) bytes, 64-byte aligned, or NULL to
 *           allocate for this call. With ws given, the call allocates nothing on the heap.
 * Returns TG_OK, TG_ERR_SHAPE (a size ≤ 0 or too large), TG_ERR_VALUE (unknown cell, a label
 * outside [-1, V), a required pointer NULL) or TG_ERR_NOMEM; tg_last_error() says which.
 * The result depends only on the inputs (no randomness, fixed summation order) for a given
 * BLAS library and thread count.
 */
enum tg_status tg_manual_bptt_f64(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                  const double *const *params, const double *x,
                                  const int32_t *y, const double *h0, const double *c0,
                                  double *loss, double *const *grads, double *dx, double *dh0,
                                  double *dc0, double *hT, double *cT, void *ws);
enum tg_status tg_manual_bptt_f32(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                  const float *const *params, const float *x,
                                  const int32_t *y, const float *h0, const float *c0,
                                  float *loss, float *const *grads, float *dx, float *dh0,
                                  float *dc0, float *hT, float *cT, void *ws);

/* Multiply-adds ×2 of the gate GEMMs of one forward pass (2·T·B·(in+H)·G·H summed over
 * layers, plus the output layer's 2·T·B·H·V): the FLOP count benchmarks report. */
double tg_manual_forward_flops(enum tg_manual_cell c, const struct tg_manual_dims *d);

#ifdef __cplusplus
}
#endif
#endif
