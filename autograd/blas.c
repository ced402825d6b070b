/* blas.c — the one GEMM every floor calls: CBLAS in either dtype, split over our own OpenMP
 * team when a product is worth threading. The engine (deferred weight gradients), the ops
 * (matmul, addmm) and the hand-derived oracles all use it, so their products round alike. */
#include <cblas.h>

#include "internal.h"

static void gemm1(enum tg_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
                  const void *b, int ldb, double beta, void *c, int ldc)
{
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE TB = tb ? CblasTrans : CblasNoTrans;
    if (dt == TG_F64)
        cblas_dgemm(CblasRowMajor, TA, TB, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
    else
        cblas_sgemm(CblasRowMajor, TA, TB, m, n, k, 1.0f, a, lda, b, ldb, (float)beta, c, ldc);
}

/* Below this m·n·k OpenBLAS runs a GEMM on one thread anyway (its interface/gemm.c:
 * 65536 · GEMM_MULTITHREAD_THRESHOLD, default 4). */
#define TG_GEMM_SPLIT_MNK 262144.0

/* C = op(A)·op(B) + β·C. With more than one thread allowed and a product OpenBLAS would thread,
 * we split it ourselves: each thread of one OpenMP team computes a block of C's rows (if m is
 * the larger side) or columns with a one-thread GEMM; OpenBLAS, called inside a parallel region,
 * does not thread again. Why not let OpenBLAS thread: its threaded level-3 driver mallocs its
 * job table on every call (about a hundred heap allocations per training step at 2 threads),
 * and the per-step shapes (B = 20–64 rows) are skinny, where splitting the long side in two is
 * as good as its 2-D partition. k is never split (each element of C is one dot product over
 * all of k), though a smaller block may take another OpenBLAS kernel path and so round
 * differently. Blocks are multiples of 16 (the kernels' unroll). */
void tg_gemm(enum tg_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
             const void *b, int ldb, double beta, void *c, int ldc)
{
    /* Only OpenBLAS's OpenMP build stays on one thread inside our parallel region; a pthreads
     * build would thread each block again (openblas_get_parallel: 2 = OpenMP). */
    static int blas_omp = -1;
    if (blas_omp < 0) blas_omp = openblas_get_parallel() == 2;
    int nt = TG_MAX_THREADS();
    if (nt < 2 || !blas_omp || (double)m * n * k <= TG_GEMM_SPLIT_MNK || (m < 32 && n < 32)) {
        gemm1(dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#if TG_HAVE_OPENMP
    size_t es = tg_dtype_size(dt);
    int by_rows = m >= n, len = by_rows ? m : n;
    TG_PRAGMA(omp parallel num_threads(nt))
    {
        int id = omp_get_thread_num(), p = omp_get_num_threads();
        int chunk = ((len + p - 1) / p + 15) / 16 * 16;
        int lo = id * chunk, hi = lo + chunk < len ? lo + chunk : len;
        if (lo < hi) {
            const char *pa = a, *pb = b;
            char *pc = c;
            if (by_rows) /* rows lo… of op(A) and of C */
                gemm1(dt, ta, tb, hi - lo, n, k, pa + (size_t)lo * (ta ? 1 : (size_t)lda) * es,
                      lda, b, ldb, beta, pc + (size_t)lo * ldc * es, ldc);
            else /* columns lo… of op(B) and of C */
                gemm1(dt, ta, tb, m, hi - lo, k, a, lda,
                      pb + (size_t)lo * (tb ? (size_t)ldb : 1) * es, ldb, beta, pc + (size_t)lo * es,
                      ldc);
        }
    }
#else
    gemm1(dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
#endif
}

/* The upper triangle (j ≥ i, row-major) of C = A·Aᵀ, A n×k: a Gram matrix in half a GEMM's
 * work (models/flow.c: ‖dCᵀ·A‖² from two of them). One thread: the shapes are small. */
void tg_syrk(enum tg_dtype dt, int n, int k, const void *a, int lda, void *c, int ldc)
{
    if (dt == TG_F64)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1.0, a, lda, 0.0, c, ldc);
    else
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, k, 1.0f, a, lda, 0.0f, c, ldc);
}
