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

/* Which library computes tg_gemm's products. TG_GEMM_AUTO (the default): libxsmm's JIT kernels
 * for the small per-step products when tapegrad was built with libxsmm, OpenBLAS for the rest
 * (the rule and its measurements: autograd/blas.c, bench/README.md). TG_GEMM_OPENBLAS: always
 * OpenBLAS. TG_GEMM_XSMM: libxsmm wherever it has a kernel (β of 0 or 1; not op(A)ᵀ·op(B)ᵀ);
 * without libxsmm it is OpenBLAS. For benchmarks and tests; set it outside a step, not while
 * another thread runs tg_gemm. */
enum tg_gemm_backend { TG_GEMM_AUTO, TG_GEMM_OPENBLAS, TG_GEMM_XSMM };
void tg_gemm_set_backend(enum tg_gemm_backend b);
enum tg_gemm_backend tg_gemm_get_backend(void);
/* 1 when tapegrad was built with libxsmm. */
int tg_gemm_have_xsmm(void);

/* The upper triangle (j ≥ i) of the n×n Gram matrix c = a·aᵀ of an n×k matrix a; the strict
 * lower triangle of c is left as it was. */
void tg_syrk(enum tg_dtype dt, int n, int k, const void *a, int lda, void *c, int ldc);

#ifdef __cplusplus
}
#endif
#endif
