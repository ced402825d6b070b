/* tapegrad_blas.h — the one GEMM every floor calls (autograd/blas.c): row-major CBLAS in either
 * dtype, split over tapegrad's own OpenMP team when a product is worth threading, so that
 * hand-written code (models/manual/) multiplies exactly as the ops do. */
#ifndef TAPEGRAD_BLAS_H
#define TAPEGRAD_BLAS_H

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

/* c = op(a)·op(b) + β·c, op(X) = Xᵀ when its flag is set; m×n result, inner size k. */
void tg_gemm(enum tg_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
             const void *b, int ldb, double beta, void *c, int ldc);

/* The upper triangle (j ≥ i) of the n×n Gram matrix c = a·aᵀ of an n×k matrix a; the strict
 * lower triangle of c is left as it was. */
void tg_syrk(enum tg_dtype dt, int n, int k, const void *a, int lda, void *c, int ldc);

#ifdef __cplusplus
}
#endif
#endif
