/*
 * gru_cho_bptt.c — hand-derived BPTT for the GRU of Cho et al. (2014): the reset gate is
 * applied BEFORE the hidden matmul and u weights the candidate. The code is in
 * gru_cho_impl.h, instantiated below for float and double.
 *
 * Parameters per layer: W (3H × (H+in)) with row blocks [W_u; W_r; W_c] and columns
 * [h-part | x-part] — write W_•ʰ (H × H) and W_•ˣ (H × in) — and b = [b_u; b_r; b_c] (3H).
 * Forward, one layer, step t (rows = the B sequences):
 *   u = σ(h_{t−1}·W_uʰᵀ + x_t·W_uˣᵀ + b_u)
 *   r = σ(h_{t−1}·W_rʰᵀ + x_t·W_rˣᵀ + b_r)
 *   q = r ⊙ h_{t−1}
 *   c̃ = tanh(q·W_cʰᵀ + x_t·W_cˣᵀ + b_c)
 *   h_t = u ⊙ c̃ + (1 − u) ⊙ h_{t−1}
 * The x-parts of all three blocks for all T steps are one GEMM before the time loop (the
 * column offset H of W is the x-part, with leading dimension H+in). Each step then needs two
 * dependent GEMMs: h_{t−1}·[W_uʰ; W_rʰ]ᵀ for u and r, and — once r is known — q·W_cʰᵀ.
 *
 * Output layer (driver_impl.h): z_t = h^{L−1}_t·W_oᵀ + b_o, dz_t = softmax(z_t) − onehot(y_t)
 * (a zero row where y = −1), so the top layer's dH_t = dz_t·W_o and dW_o = Σ_t dz_tᵀ·h_t.
 *
 * Backward, with dh_t = dH_t (output layer or layer k+1) + the part from step t+1, and
 * a_u, a_r, a_c the pre-activations:
 *   dc̃ = dh_t ⊙ u                  da_c = dc̃ ⊙ (1 − c̃²)
 *   du = dh_t ⊙ (c̃ − h_{t−1})      da_u = du ⊙ u(1 − u)
 *   dq = da_c·W_cʰ                  (B × H: one GEMM, needed before da_r)
 *   dr = dq ⊙ h_{t−1}               da_r = dr ⊙ r(1 − r)
 *   dh_{t−1} ← dh_t ⊙ (1 − u) + dq ⊙ r + [da_u, da_r]·[W_uʰ; W_rʰ]
 * h_{t−1} reaches h_t along four paths: straight through (1 − u), through q = r⊙h, and
 * through the matmuls of u and r — the last two as one GEMM of width 2H.
 * Summed over all steps, with dA = [da_u, da_r, da_c] stacked over the T·B rows:
 *   dWˣ = dAᵀ·X                              (all three blocks, one GEMM)
 *   [dW_uʰ; dW_rʰ] = [da_u, da_r]ᵀ·[h0; h_0; …; h_{T−2}]
 *   dW_cʰ = da_cᵀ·Q                          (Q = the stacked q_t, kept from the forward)
 *   db = Σ dA      dX = dA·Wˣ      d loss / d h0 = dh_{−1} above at t = 0
 *
 * Notes on the seeds (/work/shared/seeds): 004 (Coursera) gives this cell's forward — its
 * Γ_u, Γ_r, c̃ are u, r, c̃ here, with [c^{t−1}, x] for [h, x], and its equations list c̃ (2)
 * before Γ_r (4) on which it depends — but no backward. 002 (Olah) writes the same cell with
 * z for u and no biases. Neither is wrong; the backward above is derived here.
 */
#define TG_REAL_F64 0
#include "kern_impl.h"
#include "gru_cho_impl.h"
#undef TG_REAL_F64
#define TG_REAL_F64 1
#include "kern_impl.h"
#include "gru_cho_impl.h"
#undef TG_REAL_F64
