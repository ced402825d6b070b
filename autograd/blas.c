/* blas.c — the one GEMM every floor calls: CBLAS in either dtype, or a libxsmm JIT kernel for
 * the small per-step products, split over our own OpenMP team when a product is worth
 * threading. The engine (deferred weight gradients), the ops (matmul, addmm) and the
 * hand-derived oracles all use it, so their products round alike. */
#include <stdlib.h>
#include <strings.h>

#include <cblas.h>

#include "internal.h"

#if TG_HAVE_LIBXSMM
#include <libxsmm.h>
#endif

static enum tg_gemm_backend backend = TG_GEMM_AUTO;

void tg_gemm_set_backend(enum tg_gemm_backend b) { backend = b; }
enum tg_gemm_backend tg_gemm_get_backend(void) { return backend; }

static void blas1(enum tg_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
                  const void *b, int ldb, double beta, void *c, int ldc)
{
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE TB = tb ? CblasTrans : CblasNoTrans;
    if (dt == TG_F64)
        cblas_dgemm(CblasRowMajor, TA, TB, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
    else
        cblas_sgemm(CblasRowMajor, TA, TB, m, n, k, 1.0f, a, lda, b, ldb, (float)beta, c, ldc);
}

#if TG_HAVE_LIBXSMM
/* Which products go to libxsmm (TG_GEMM_AUTO). libxsmm computes straight from the operands
 * with a kernel generated for the exact shape, where OpenBLAS copies ("packs") both operands
 * into its blocked layout on every call — for a per-step product that is all of W_hh re-copied
 * for a handful of rows. How much that costs depends on the kernels OpenBLAS runs, so the
 * rule has two tables, both measured per shape with bench/gemm_bench.c (thread CPU time, one
 * thread, OpenBLAS 0.3.21; figures in bench/README.md), as libxsmm ÷ OpenBLAS time.
 *
 * OpenBLAS on AVX-512 kernels (SkylakeX, Cooperlake, SapphireRapids: what CPUID gives here):
 *   h·W_hhᵀ (ta = 0, tb = 1; m = B, n = G·H, k = H): 0.6–0.9 for B = 4–32 once W_hh is at least
 *       400 × 100 (B = 64 from H = 256); 1.2–3.5 below that or at B ≤ 2, where the column-major
 *       kernel has only B lanes to vectorise and the transposes cost as much as the product.
 *       float64 at B = 4 loses from n·k > 2¹⁸.
 *   dZ·W_hh (ta = 0, tb = 0; m = B, n = H, k = G·H): 0.25–0.8 for B ≥ 4 and n·k > 2¹⁶ (B ≥ 16 at
 *       n·k = 2¹⁶); about 1 below; float64 loses from n·k = 2²⁰ at B ≥ 16 (1.1–1.2).
 *   dW += dZᵀ·h (ta = 1, tb = 0; m = G·H, n = H, k = T·B, the engine's one GEMM per weight over
 *       all steps): float64 0.5–0.95 for H ≤ 128 (G·H ≤ 512) up to T·B = 3200; float32 0.5–0.9
 *       at H = 32–64 from T·B = 800; 1.0–3.1 for larger H (OpenBLAS's packing pays there).
 *   one row (B = 1): about 1 (OpenBLAS has its own GEMV path), except once W_hh has 2²⁰
 *       elements: 0.19 (float64 0.35) for h·W_hhᵀ through GEMV, 0.34 for float32 dZ·W_hh.
 * Other kernels (Haswell/AVX2, which this workplace's OPENBLAS_CORETYPE selects):
 *   h·W_hhᵀ: 0.17–0.4 at B = 1 (GEMV) from H = 32; 0.5–0.9 for B = 2–4 from H = 64 and for
 *       B = 16–64 from H = 100 (B = 64 with float64 from H = 256); 1.1–4.4 at H ≤ 32 (64).
 *   dZ·W_hh: 0.1–0.77 at every B ≤ 64, H ≥ 8.
 *   dW over all steps: 0.3–0.94 up to H = 256 (float64 G·H·T·B ≤ 2²¹ at H = 256); H = 512 mixed.
 * The stacked input projection (m = T·B ≥ 50) stays with OpenBLAS under both (1.1–4.7).
 * β must be 0 or 1 (the kernels' only forms); anything else stays with OpenBLAS. */
char *openblas_get_corename(void);

static int blas_avx512(void)
{
    static int v = -1;
    if (v < 0) {
        const char *c = openblas_get_corename();
        v = c && (!strcasecmp(c, "skylakex") || !strcasecmp(c, "cooperlake") ||
                  !strcasecmp(c, "sapphirerapids"));
    }
    return v;
}

static int xsmm_wanted(enum tg_dtype dt, int ta, int tb, int m, int n, int k, double beta)
{
    if (beta != 0.0 && beta != 1.0) return 0;
    if (backend == TG_GEMM_XSMM) return 1;
    if (backend != TG_GEMM_AUTO) return 0;
    int f64 = dt == TG_F64;
    double nk = (double)n * k;
    if (!blas_avx512()) {
        if (ta) return !tb && n <= 256 && !(f64 && n > 128 && (double)m * k > 1024.0 * 1600);
        if (m > 64) return 0;
        if (!tb) return 1;
        if (m == 1) return k >= 32;
        if (m <= 4) return k >= 64;
        return k >= 100 && (m < 64 || k >= 256 || !f64);
    }
    if (ta) /* dW += dZᵀ·h */
        return !tb && n >= 8 && (f64 ? n <= 128 && m <= 512 && k <= 3200 : n >= 32 && n <= 64 && k >= 800);
    if (m == 1 && nk >= 1048576) return tb || !f64;
    if (m < 4 || m > 64) return 0;
    if (tb) /* h·W_hhᵀ */
        return n >= 400 && k >= 100 && (m <= 32 || k >= 256) && !(f64 && m < 16 && nk > 262144);
    /* dZ·W_hh */
    return (nk > 65536 || (m >= 16 && nk >= 65536)) && !(f64 && m >= 16 && nk >= 1048576);
}

/* Scratch for the transposed-operand form below: per thread (each thread of tg_gemm's split
 * runs its own block), grown to the largest need seen and then reused, so after the first
 * step of a training loop nothing is allocated. */
static _Thread_local void *scratch;
static _Thread_local size_t scratch_cap;

static void *scratch_get(size_t bytes)
{
    if (bytes <= scratch_cap) return scratch;
    size_t cap = (bytes + 4095) / 4096 * 4096;
    void *p = aligned_alloc(64, cap);
    if (!p) return NULL;
    free(scratch);
    scratch = p, scratch_cap = cap;
    return p;
}

/* One column-major libxsmm product C = op(A)·op(B) + β·C (β ∈ {0, 1}); 0 when libxsmm has no
 * kernel for it (the caller then uses OpenBLAS). The kernel is looked up on every call: a
 * hash of the shape into libxsmm's registry, generated once per shape (that is the warm-up). */
static int xsmm_cm(enum tg_dtype dt, int flags, int m, int n, int k, const void *a, int lda,
                   const void *b, int ldb, double beta, void *c, int ldc)
{
    libxsmm_blasint M = m, N = n, K = k, LDA = lda, LDB = ldb, LDC = ldc;
    if (dt == TG_F64) {
        double one = 1.0, bt = beta;
        libxsmm_dmmfunction f = libxsmm_dmmdispatch(M, N, K, &LDA, &LDB, &LDC, &one, &bt, &flags, NULL);
        if (!f) return 0;
        f(a, b, c);
    } else {
        float one = 1.0f, bt = (float)beta;
        libxsmm_smmfunction f = libxsmm_smmdispatch(M, N, K, &LDA, &LDB, &LDC, &one, &bt, &flags, NULL);
        if (!f) return 0;
        f(a, b, c);
    }
    return 1;
}

/* Row-major C = op(A)·op(B) + β·C through libxsmm, which is column-major: the same memory is
 * column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so B and A swap places and m and n swap; each operand
 * keeps its own transpose flag.
 *
 * β = 1 adds the finished product to C, C + fl(op(A)·op(B)), as OpenBLAS does for these k
 * (its kernels sum in registers and add to C once), not a sum that starts from C: a gradient
 * accumulated twice from the same product is then exactly twice it, whichever library ran.
 * So the kernel writes the product into scratch (β = 0) and one pass adds it.
 *
 * libxsmm 1.17 generates no kernel with its first operand transposed, and that is exactly the
 * forward product h·W_hhᵀ (tb = 1: both operands contiguous along k). For it:
 *   B = 1 (a row h):  a GEMV, W·hᵀ (OpenBLAS's);
 *   B > 1:            copy hᵀ (k×m) into scratch, compute E = h·Wᵀ column-major (m×n, ld m)
 *                     with no transpose, then C = β·C + Eᵀ: two extra passes over m·(k + n)
 *                     numbers, against OpenBLAS's pass over all of W (n·k) to pack it. */
static int xsmm_gemm(enum tg_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
                     const void *b, int ldb, double beta, void *c, int ldc)
{
    if (!tb) {
        int flags = ta ? LIBXSMM_GEMM_FLAG_TRANS_B : 0;
        if (beta == 0.0) return xsmm_cm(dt, flags, n, m, k, b, ldb, a, lda, 0.0, c, ldc);
        size_t es = tg_dtype_size(dt);
        char *d = scratch_get((size_t)m * n * es);
        if (!d || !xsmm_cm(dt, flags, n, m, k, b, ldb, a, lda, 0.0, d, n)) return 0;
        /* C[i][j] += D[i][j]   (D row-major m×n) */
        if (dt == TG_F64) {
            double *cc = c;
            const double *dd = (const double *)d;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) cc[(size_t)i * ldc + j] += dd[(size_t)i * n + j];
        } else {
            float *cc = c;
            const float *dd = (const float *)d;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) cc[(size_t)i * ldc + j] += dd[(size_t)i * n + j];
        }
        return 1;
    }
    if (ta) return 0;
    if (m == 1) {
        if (dt == TG_F64)
            cblas_dgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0, b, ldb, a, 1, beta, c, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, b, ldb, a, 1, (float)beta, c, 1);
        return 1;
    }
    size_t es = tg_dtype_size(dt);
    char *ht = scratch_get(((size_t)m * k + (size_t)m * n) * es);
    if (!ht) return 0;
    char *e = ht + (size_t)m * k * es;
    if (dt == TG_F64) {
        const double *h = a;
        double *t = (double *)ht;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < k; j++) t[(size_t)j * m + i] = h[(size_t)i * lda + j];
    } else {
        const float *h = a;
        float *t = (float *)ht;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < k; j++) t[(size_t)j * m + i] = h[(size_t)i * lda + j];
    }
    if (!xsmm_cm(dt, 0, m, n, k, ht, m, b, ldb, 0.0, e, m)) return 0;
    /* C[i][j] = β·C[i][j] + E[j][i]   (E column-major m×n: element (i, j) at j·m + i) */
    if (dt == TG_F64) {
        double *cc = c;
        const double *ee = (const double *)e;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                cc[(size_t)i * ldc + j] = (beta != 0.0 ? cc[(size_t)i * ldc + j] : 0.0) + ee[(size_t)j * m + i];
    } else {
        float *cc = c;
        const float *ee = (const float *)e;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                cc[(size_t)i * ldc + j] = (beta != 0.0 ? cc[(size_t)i * ldc + j] : 0.0f) + ee[(size_t)j * m + i];
    }
    return 1;
}
#endif

/* One thread's product, by the backend the shape calls for. */
static void gemm1(enum tg_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
                  const void *b, int ldb, double beta, void *c, int ldc)
{
#if TG_HAVE_LIBXSMM
    if (xsmm_wanted(dt, ta, tb, m, n, k, beta) && xsmm_gemm(dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc))
        return;
#endif
    blas1(dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
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

int tg_gemm_have_xsmm(void) { return TG_HAVE_LIBXSMM; }
