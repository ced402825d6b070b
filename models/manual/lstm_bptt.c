/*
 * lstm_bptt.c — hand-derived BPTT for PyTorch's LSTM (gate blocks i, f, g, o).
 * The code is in lstm_impl.h, instantiated below for float and double.
 *
 * Forward, one layer, step t (rows = the B sequences, a·Wᵀ with W stored (out, in)):
 *   a_t = x_t·W_ihᵀ + b_ih + h_{t−1}·W_hhᵀ + b_hh = [a_i, a_f, a_g, a_o]       (B × 4H)
 *   i = σ(a_i),  f = σ(a_f),  g = tanh(a_g),  o = σ(a_o)
 *   c_t = f ⊙ c_{t−1} + i ⊙ g
 *   h_t = o ⊙ tanh(c_t)
 * The x-part of a_t does not depend on the recurrence, so it is one GEMM over all T·B rows
 * before the time loop ((T·B × in)·W_ihᵀ, with b_ih + b_hh folded in); each step then adds
 * h_{t−1}·W_hhᵀ with one GEMM for all four gates.
 *
 * Output layer (driver_impl.h): z_t = h^{L−1}_t·W_oᵀ + b_o, dz_t = softmax(z_t) − onehot(y_t)
 * (a zero row where y = −1), so the top layer's dH_t = dz_t·W_o and dW_o = Σ_t dz_tᵀ·h_t.
 *
 * Backward. The loss reaches h_t along two paths: directly (the output layer, or layer k+1
 * through its W_ih) — call that dH_t — and through step t+1's gates; it reaches c_t through
 * h_t and through c_{t+1} = f_{t+1} ⊙ c_t + …. With dh_T = dc_T = 0 beyond the last step:
 *   dh_t = dH_t + da_{t+1}·W_hh                                     (W_hh is 4H × H)
 *   dc_t = dh_t ⊙ o ⊙ (1 − tanh²(c_t)) + dc_{t+1} ⊙ f_{t+1}
 * and, with σ' = σ(1 − σ) and tanh' = 1 − tanh²,
 *   da_o = dh_t ⊙ tanh(c_t) ⊙ o(1 − o)
 *   da_i = dc_t ⊙ g ⊙ i(1 − i)
 *   da_f = dc_t ⊙ c_{t−1} ⊙ f(1 − f)
 *   da_g = dc_t ⊙ i ⊙ (1 − g²)
 *   dc_{t−1} ← dc_t ⊙ f   (carried to the previous step; at t = 0 it is d loss / d c0)
 * The parameters are shared by every step, so their gradients sum over t — each as one GEMM
 * over the stacked T·B rows once the time loop is done:
 *   dW_ih = Σ_t da_tᵀ·x_t = dAᵀ·X      dW_hh = Σ_t da_tᵀ·h_{t−1} = dAᵀ·[h0; h_0; …; h_{T−2}]
 *   db_ih = db_hh = Σ_{t,b} da_t       dX = dA·W_ih (d loss / d x_t, the layer below's dH)
 *   d loss / d h0 = da_0·W_hh
 * tanh(c_t) is kept from the forward pass; the gate activations are overwritten in place by
 * da_t as soon as step t is done, so backward needs no buffer of its own.
 *
 * Notes on the seeds (/work/shared/seeds), checked against this derivation and the tests:
 * - 004 (Coursera notes): the list under the LSTM equations names (2) the update gate,
 *   (3) forget and (4) output, but those gates are equations (3), (4) and (5) — the labels
 *   are shifted by one. Eq. (17) is the forget gate's derivative but is written ∂L/∂γ_u; it
 *   is ∂L/∂γ_f. Eqs. (13) and (28) multiply by da_next where the total d loss / d a^t of
 *   eq. (12) (output term + da_next) is needed, and (28) takes tanh²(c_next) where c_next
 *   means this step's c^t (the course's variable name), not c^{t+1}. Eq. (25) sums dγ_c,
 *   which is the dpc̃ of eq. (15). Eq. (27) needs only the h-columns of each W (said after
 *   the equation); eqs. (19)–(26) are for one step and must be summed over t.
 * - 000 describes the Deep Learning book's LSTM (s = f⊙s + g⊙σ(…)), a different cell from
 *   PyTorch's; 002's (Olah) forget/input/output gates match PyTorch's i, f, g, o up to the
 *   stacking order and the two bias vectors.
 */
#define TG_REAL_F64 0
#include "kern_impl.h"
#include "lstm_impl.h"
#undef TG_REAL_F64
#define TG_REAL_F64 1
#include "kern_impl.h"
#include "lstm_impl.h"
#undef TG_REAL_F64
