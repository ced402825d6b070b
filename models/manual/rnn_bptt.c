/*
 * rnn_bptt.c — hand-derived BPTT for the Elman RNN with tanh (PyTorch nn.RNN).
 * The code is in rnn_impl.h, instantiated below for float and double.
 *
 * Forward, one layer, step t (rows = the B sequences, a·Wᵀ with W stored (out, in)):
 *   a_t = x_t·W_ihᵀ + b_ih + h_{t−1}·W_hhᵀ + b_hh            (B × H)
 *   h_t = tanh(a_t)
 * x_t·W_ihᵀ + b_ih + b_hh for all T steps is one GEMM before the time loop, written straight
 * into the h_t buffer; each step adds h_{t−1}·W_hhᵀ (one GEMM) and applies tanh in place.
 *
 * Backward. h_t reaches the loss directly — through the output layer, or layer k+1's W_ih;
 * call that gradient dH_t (for the top layer dH = dZ·W_o with dZ = ŷ − onehot(y), see
 * driver_impl.h) — and through a_{t+1}. With nothing beyond the last step:
 *   dh_t = dH_t + da_{t+1}·W_hh                  (the "dhnext" of min-char-rnn)
 *   da_t = dh_t ⊙ (1 − h_t²)                     (tanh' = 1 − tanh², from the saved output)
 * and, the parameters being shared by every step, their gradients are sums over t — each one
 * GEMM over the stacked T·B rows once the time loop is done:
 *   dW_ih = Σ_t da_tᵀ·x_t = dAᵀ·X      dW_hh = Σ_t da_tᵀ·h_{t−1} = dAᵀ·[h0; h_0; …; h_{T−2}]
 *   db_ih = db_hh = Σ_{t,b} da_t       dX = dA·W_ih     d loss / d h0 = da_0·W_hh
 *
 * Notes on the seeds (/work/shared/seeds), checked against this derivation and the tests:
 * - 003 (RNN derivatives, ex-1): eq-5 reads "ŷ_t − y_t · h_t" but means (ŷ_t − y_t)·h_tᵀ (a
 *   missing parenthesis; as written it would multiply y by h first). eq-12 differentiates
 *   with respect to u where h_{t−1} is meant. eq-9, eq-11 and eq-13 are the gradient of one
 *   step's loss through one step only: the true gradient sums over every t and, before
 *   multiplying by (1 − h²), adds the gradient that flows back from t+1 (dhnext) — which the
 *   NumPy code beneath them does. The "h_{t+4}" on the summary slide is a typo for h_t. The
 *   np.clip there is an optimiser's choice, not part of the gradient.
 * - 004 (Coursera notes), RNN equations (1)–(5): as written, (4) and (5) apply W_axᵀ (W_aaᵀ)
 *   to (1 − tanh²(…)) alone and multiply by da_next afterwards, which does not even have
 *   matching shapes; the elementwise product comes first: dx = W_axᵀ·(da_next ⊙ (1 − tanh²)).
 *   In (3) the batch sum must go around the product, db = Σ_batch da_next ⊙ (1 − tanh²), not
 *   da_next ∗ Σ_batch(1 − tanh²). And da_next there is the total gradient of a^{⟨t⟩}: the
 *   output layer's part plus the part from step t+1.
 * - 001: the softmax is written y_t = e^{z_t}/Σ_k e^{z_t}; the denominator is Σ_k e^{z_k}.
 *   Its ∂E_t/∂V is one step's term; ∂E/∂V = Σ_t (ŷ_t − y_t)·s_tᵀ.
 * - 000: ∂L/∂o_i^{(t)} is expanded with ∂L^{(t)}/∂o_j^{(t)} (index j for i); the result
 *   ŷ_i − 1_{i,y} is right.
 */
#define TG_REAL_F64 0
#include "kern_impl.h"
#include "rnn_impl.h"
#undef TG_REAL_F64
#define TG_REAL_F64 1
#include "kern_impl.h"
#include "rnn_impl.h"
#undef TG_REAL_F64
