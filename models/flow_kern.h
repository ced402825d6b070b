/* flow_kern.h — the arithmetic of the per-step ledger (models/flow_kern.c), private to
 * models/flow.c: B×B Gram matrices of row blocks, and the reductions read from them. */
#ifndef TG_FLOW_KERN_H
#define TG_FLOW_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "tapegrad.h"

/* Rows of a Gram matrix are padded to a multiple of this many elements (aligned rows). */
enum { FLOW_GRAM_PAD = 16 };

static inline int flow_gram_ld(int m) { return (m + FLOW_GRAM_PAD - 1) / FLOW_GRAM_PAD * FLOW_GRAM_PAD; }

/* The upper triangle (j ≥ i) of the m×m Gram matrix g = a·aᵀ of the m×k row-major block a
 * (row stride lda), into g with row stride flow_gram_ld(m). */
void flow_gram(enum tg_dtype dt, int m, int k, const void *a, size_t lda, void *g);

/* Σ_ij G1_ij G2_ij of two symmetric m×m matrices given by their upper triangles (stride
 * flow_gram_ld(m)): ‖M1ᵀM2‖_F² when G1 = M1M1ᵀ, G2 = M2M2ᵀ. */
double flow_gram_dot(enum tg_dtype dt, const void *g1, const void *g2, int m);
/* Σ_ij G_ij of a symmetric m×m matrix given by its upper triangle: ‖1ᵀM‖² when G = M·Mᵀ. */
double flow_gram_sum(enum tg_dtype dt, const void *g, int m);

/* ‖g‖², ‖a‖², ‖g − a‖² of n elements in one pass (either pointer may be NULL: zeros). */
void flow_split_norms(enum tg_dtype dt, const void *g, const void *a, size_t n, double *tot,
                      double *up, double *nx);
/* ‖column sums‖² of the m×n row-major block a: Σ_j (Σ_i a_ij)², acc holding n doubles. */
double flow_colsum_sumsq(enum tg_dtype dt, const void *a, int m, int n, double *acc);
/* CountSketch of the rows of the m×n row-major block a into the m×k row-major y: column j of
 * chunk c (columns c·k … c·k + k − 1) times sign[c·k + j] into bucket (j + rot[c]) mod k.
 * tmp: m·2k elements. */
void flow_sketch(enum tg_dtype dt, int m, int n, int k, const void *a, const void *sign,
                 const int *rot, void *y, void *tmp);
/* ‖yᵀz‖_F² for m×k row-major y and z; tmp: k·k elements. */
double flow_sketch_dot(enum tg_dtype dt, int m, int k, const void *y, const void *z, void *tmp);
/* The estimator's sketches (models/flow.c, f->sketch = k): CountSketches Y = X·Sᵀ (rows × k) of
 * row blocks X, side 0 for gradients (S₁) and side 1 for inputs (S₂), kept for one batch in
 * the tape's arena by the block's address, so that the backward hook can make them while the
 * block is in cache and tg_flow_end finds them. The signs and rotations of a block come from
 * (seed, side, the step it was made for): reproducible for a seed. */
struct flow_sketch_store;
/* NULL when out of memory. dim: the widest block, rows: the most rows, cap: blocks. */
struct flow_sketch_store *flow_sketch_store_new(struct tg_tape *t, enum tg_dtype dt, int k, uint64_t seed,
                                                int dim, int rows, int cap);
/* 1 if the store was made for these (k, seed) and holds cap blocks this wide and tall. */
int flow_sketch_store_fits(const struct flow_sketch_store *s, int k, uint64_t seed, int dim, int rows, int cap);
/* The sketch of the m×n block p (side 0 or 1), made with the draw of step if not yet there;
 * NULL if the store is full or too small. *cs (if cs): the block's slot for ‖column sums‖²
 * (negative until set). */
const void *flow_sketch_get(struct flow_sketch_store *s, int side, const void *p, int n, int m, int step,
                            double **cs);
/* ‖yᵀz‖_F² of two m-row sketches of the store. */
double flow_sketch_pair(struct flow_sketch_store *s, const void *y, const void *z, int m);

/* Σ x_i² of n elements of dtype dt. */
double flow_sumsq(const void *p, enum tg_dtype dt, size_t n);

#endif
