/*
 * gru_bptt.c — hand-derived BPTT for PyTorch's GRU (gate blocks r, z, n; the reset gate is
 * applied AFTER the hidden matmul). The code is in gru_impl.h, instantiated below for float
 * and double.
 *
 * Forward, one layer, step t (rows = the B sequences, a·Wᵀ with W stored (out, in)):
 *   g_t = x_t·W_ihᵀ + b_ih = [g_r, g_z, g_n]        (input side, B × 3H)
 *   s_t = h_{t−1}·W_hhᵀ + b_hh = [s_r, s_z, s_n]    (hidden side, B × 3H)
 *   r = σ(g_r + s_r),  z = σ(g_z + s_z)
 *   n = tanh(g_n + r ⊙ s_n)
 *   h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}
 * g for all T steps is one GEMM before the time loop; s_t is one GEMM per step for all three
 * gates. s_n must be kept for the backward pass (it is what r multiplies).
 *
 * Output layer (driver_impl.h): z_t = h^{L−1}_t·W_oᵀ + b_o, dz_t = softmax(z_t) − onehot(y_t)
 * (a zero row where y = −1), so the top layer's dH_t = dz_t·W_o and dW_o = Σ_t dz_tᵀ·h_t.
 *
 * Backward, with dh_t = dH_t (from the output layer or layer k+1) + the part from step t+1:
 *   dn   = dh_t ⊙ (1 − z)           da_n = dn ⊙ (1 − n²)            (a_n = g_n + r⊙s_n)
 *   dz   = dh_t ⊙ (h_{t−1} − n)     da_z = dz ⊙ z(1 − z)
 *   dr   = da_n ⊙ s_n               da_r = dr ⊙ r(1 − r)
 *   ds_n = da_n ⊙ r
 * so the input side and the hidden side get different pre-activation gradients:
 *   dG_t = [da_r, da_z, da_n]       dS_t = [da_r, da_z, r ⊙ da_n]
 *   dh_{t−1} ← dh_t ⊙ z + dS_t·W_hh   (z⊙h_{t−1} passes gradient straight through)
 * Summed over all steps (one GEMM each over the stacked T·B rows):
 *   dW_ih = dGᵀ·X    db_ih = Σ dG    dW_hh = dSᵀ·[h0; h_0; …; h_{T−2}]    db_hh = Σ dS
 *   dX = dG·W_ih     d loss / d h0 = dh_0 ⊙ z_0 + dS_0·W_hh
 * In particular db_in = Σ da_n but db_hn = Σ r ⊙ da_n: b_hn sits inside the product with r,
 * so unlike the r and z biases the two n biases are different parameters with different
 * gradients (see /work/shared/reference/rnn-conventions.md).
 *
 * Notes on the seeds (/work/shared/seeds): none derives this backward. 002 (Olah) and 004
 * (Coursera) write the GRU of Cho et al. — reset before the matmul (gru_cho_bptt.c) and with
 * the update gate weighting the candidate, h_t = (1 − z)⊙h_{t−1} + z⊙h̃ — whereas PyTorch's z
 * weights the old state. Their equations are right for that cell, not for this one.
 */
#define TG_REAL_F64 0
#include "kern_impl.h"
#include "gru_impl.h"
#undef TG_REAL_F64
#define TG_REAL_F64 1
#include "kern_impl.h"
#include "gru_impl.h"
#undef TG_REAL_F64
