/* test_gemm.c — tg_gemm's backends (autograd/blas.c) against a plain triple loop.
 *
 * tg_gemm sends small per-step products to libxsmm (when built with it: an operand swap for
 * its column-major kernels, a transposed copy of h for h·Wᵀ, a GEMV for one row) and the rest
 * to OpenBLAS, and splits large products over OpenMP threads. Every path must give
 * C = op(A)·op(B) + β·C to round-off, for any shape, transposes, leading dimensions wider than
 * the matrix and β ∈ {0, ½, 1}, in both dtypes; and after one call of a shape (libxsmm
 * generating its kernel, the scratch growing) further calls must not touch the heap.
 *
 * Tolerance: the standard bound for a dot product of length k in precision u,
 * |fl(c) − c| ≤ γ_{k+1}·(Σ_l |a_il|·|b_lj| + |β·c_ij|), γ_n = n·u / (1 − n·u), evaluated per element
 * with the reference in long double. It holds for any summation order, so it neither depends
 * on which kernel ran nor hides a wrong element (a wrong or missing term is O(|a||b|), far
 * above γ·Σ|a||b| for these k). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "malloc_count.h"
#include "tapegrad_blas.h"
#include "tg_config.h"
#if TG_HAVE_OPENMP
#include <omp.h>
#endif

static unsigned rng_state = 12345u;
static double urand(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return ((rng_state >> 8) & 0xffffff) / 16777216.0 - 0.5;
}

static double get(const void *p, size_t i, int f64) { return f64 ? ((const double *)p)[i] : ((const float *)p)[i]; }
static void set(void *p, size_t i, int f64, double v)
{
    if (f64) ((double *)p)[i] = v;
    else ((float *)p)[i] = (float)v;
}

/* One case: op(A) m×k, op(B) k×n, leading dimensions padded by `pad`; returns the worst
 * error ÷ bound (≤ 1 passes) and fails with the element if it is above 1. */
static double check_case(int f64, int ta, int tb, int m, int n, int k, double beta, int pad)
{
    int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    int lda = ac + pad, ldb = bc + pad, ldc = n + pad;
    size_t es = f64 ? 8 : 4;
    void *a = malloc((size_t)ar * lda * es), *b = malloc((size_t)br * ldb * es);
    void *c = malloc((size_t)m * ldc * es), *c0 = malloc((size_t)m * ldc * es);
    assert_non_null(a), assert_non_null(b), assert_non_null(c), assert_non_null(c0);
    for (size_t i = 0; i < (size_t)ar * lda; i++) set(a, i, f64, urand());
    for (size_t i = 0; i < (size_t)br * ldb; i++) set(b, i, f64, urand());
    for (size_t i = 0; i < (size_t)m * ldc; i++) set(c0, i, f64, urand());
    memcpy(c, c0, (size_t)m * ldc * es);
    tg_gemm(f64 ? TG_F64 : TG_F32, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
    double u = f64 ? 0x1p-53 : 0x1p-24, gamma = (k + 1) * u / (1 - (k + 1) * u), worst = 0;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < ldc; j++) {
            size_t ci = (size_t)i * ldc + j;
            if (j >= n) { /* padding: never written */
                if (get(c, ci, f64) != get(c0, ci, f64))
                    fail_msg("dt %s ta %d tb %d %dx%dx%d pad %d: padding C[%d][%d] written", f64 ? "f64" : "f32",
                             ta, tb, m, n, k, pad, i, j);
                continue;
            }
            long double ref = beta * (long double)get(c0, ci, f64), mag = fabs(beta * get(c0, ci, f64));
            for (int l = 0; l < k; l++) {
                double x = get(a, ta ? (size_t)l * lda + i : (size_t)i * lda + l, f64);
                double y = get(b, tb ? (size_t)j * ldb + l : (size_t)l * ldb + j, f64);
                ref += (long double)x * y;
                mag += fabs(x * y);
            }
            double err = fabsl(get(c, ci, f64) - ref), bound = gamma * mag + 1e-300;
            if (err / bound > worst) worst = err / bound;
            if (err > bound)
                fail_msg("dt %s ta %d tb %d m %d n %d k %d beta %g pad %d backend %d: C[%d][%d] = %.17g, "
                         "reference %.17Lg, error %.3g > bound %.3g", f64 ? "f64" : "f32", ta, tb, m, n,
                         k, beta, pad, (int)tg_gemm_get_backend(), i, j, get(c, ci, f64), ref, err, bound);
        }
    }
    free(a), free(b), free(c), free(c0);
    return worst;
}

/* Odd and per-step shapes (B = 1…64 rows, H up to 512 with 1 or 4 gate blocks, both inner
 * sizes of the three per-step products), every transpose, three β, both dtypes, with and
 * without padded leading dimensions, under each backend. */
static void test_gemm_against_loop(void **state)
{
    (void)state;
    static const int shapes[][3] = {
        {1, 1, 1},   {1, 7, 3},    {3, 1, 5},     {5, 3, 1},    {2, 33, 17},  {17, 2, 33},
        {7, 13, 29}, {1, 32, 8},   {1, 400, 100}, {1, 100, 400}, {400, 100, 1}, {32, 32, 8},
        {31, 127, 65}, {64, 96, 24}, {65, 63, 64}, {20, 44, 11}, {3, 1024, 256}, {32, 128, 512},
        {512, 128, 32}, {200, 48, 150},
    };
    static const double betas[] = {0.0, 0.5, 1.0};
    static const enum tg_gemm_backend backends[] = {TG_GEMM_AUTO, TG_GEMM_OPENBLAS, TG_GEMM_XSMM};
    double worst = 0;
    int cases = 0;
    for (size_t bk = 0; bk < sizeof backends / sizeof *backends; bk++) {
        tg_gemm_set_backend(backends[bk]);
        for (int f64 = 0; f64 < 2; f64++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
                for (int t = 0; t < 4; t++)
                    for (size_t bi = 0; bi < 3; bi++) {
                        int pad = (int)((s + t + bi) % 3 == 0 ? 3 : 0);
                        double w = check_case(f64, t & 1, t >> 1, shapes[s][0], shapes[s][1],
                                              shapes[s][2], betas[bi], pad);
                        if (w > worst) worst = w;
                        if (getenv("TG_TEST_GEMM_VERBOSE") && w > 0.3)
                            printf("  backend %d %s t %d %dx%dx%d beta %g: error / bound %.3g\n", (int)backends[bk],
                                   f64 ? "f64" : "f32", t, shapes[s][0], shapes[s][1], shapes[s][2], betas[bi], w);
                        cases++;
                    }
    }
    tg_gemm_set_backend(TG_GEMM_AUTO);
    printf("  %d cases, worst error / bound %.3g (libxsmm %s)\n", cases, worst,
           tg_gemm_have_xsmm() ? "built in" : "absent");
}

/* Products big enough for tg_gemm's OpenMP split (m·n·k > 2¹⁸), by rows and by columns, at
 * two threads: each block is its own smaller product, possibly on another backend. */
static void test_gemm_split(void **state)
{
    (void)state;
#if TG_HAVE_OPENMP
    int nt = omp_get_max_threads();
    omp_set_num_threads(2);
#endif
    static const enum tg_gemm_backend backends[] = {TG_GEMM_AUTO, TG_GEMM_XSMM};
    for (size_t bk = 0; bk < 2; bk++) {
        tg_gemm_set_backend(backends[bk]);
        for (int f64 = 0; f64 < 2; f64++)
            for (int t = 0; t < 4; t++) {
                check_case(f64, t & 1, t >> 1, 64, 1024, 256, 1.0, 0);  /* by columns */
                check_case(f64, t & 1, t >> 1, 1000, 40, 100, 0.0, 1);  /* by rows */
                check_case(f64, t & 1, t >> 1, 33, 520, 130, 0.5, 2);   /* odd blocks */
            }
    }
    tg_gemm_set_backend(TG_GEMM_AUTO);
#if TG_HAVE_OPENMP
    omp_set_num_threads(nt);
#endif
}

/* β = 1 adds the finished product: accumulating the same product twice into zero gives exactly
 * twice it, on every backend (gradients summed over calls rely on it: tests/test_tape.c). */
static void test_gemm_accumulates_whole_products(void **state)
{
    (void)state;
    static const int shapes[][5] = {
        {1, 0, 4, 2, 3}, {0, 0, 8, 100, 200}, {1, 0, 400, 100, 50}, {0, 1, 16, 512, 128},
        {0, 0, 32, 256, 64}, {1, 0, 128, 32, 64}, {0, 1, 1, 400, 100},
    };
    static const enum tg_gemm_backend backends[] = {TG_GEMM_AUTO, TG_GEMM_OPENBLAS, TG_GEMM_XSMM};
    for (size_t bk = 0; bk < 3; bk++) {
        tg_gemm_set_backend(backends[bk]);
        for (int f64 = 0; f64 < 2; f64++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
                const int *q = shapes[s];
                int ta = q[0], tb = q[1], m = q[2], n = q[3], k = q[4];
                int lda = ta ? m : k, ldb = tb ? k : n;
                size_t es = f64 ? 8 : 4;
                void *a = malloc((size_t)m * k * es), *b = malloc((size_t)k * n * es);
                void *c1 = calloc((size_t)m * n, es), *c2 = calloc((size_t)m * n, es);
                for (size_t i = 0; i < (size_t)m * k; i++) set(a, i, f64, urand());
                for (size_t i = 0; i < (size_t)k * n; i++) set(b, i, f64, urand());
                enum tg_dtype dt = f64 ? TG_F64 : TG_F32;
                tg_gemm(dt, ta, tb, m, n, k, a, lda, b, ldb, 1.0, c1, n);
                tg_gemm(dt, ta, tb, m, n, k, a, lda, b, ldb, 1.0, c2, n);
                tg_gemm(dt, ta, tb, m, n, k, a, lda, b, ldb, 1.0, c2, n);
                for (size_t i = 0; i < (size_t)m * n; i++)
                    if (get(c2, i, f64) != 2 * get(c1, i, f64))
                        fail_msg("backend %d %s ta %d tb %d %dx%dx%d: element %zu: twice accumulated %.17g, "
                                 "2 x once %.17g", (int)backends[bk], f64 ? "f64" : "f32", ta, tb, m, n,
                                 k, i, get(c2, i, f64), 2 * get(c1, i, f64));
                free(a), free(b), free(c1), free(c2);
            }
    }
    tg_gemm_set_backend(TG_GEMM_AUTO);
}

/* After one call of each shape (kernel generation, scratch growth), the per-step products
 * allocate nothing: the training loop's zero-allocation guarantee covers tg_gemm. */
static void test_gemm_no_alloc_after_warmup(void **state)
{
    (void)state;
#if COUNT_MALLOC
    static const int shapes[][5] = {
        /* ta tb m n k: h·W_hhᵀ, dZ·W_hh, dZᵀ·h at B = 1 and 32, H = 128, 4 gates */
        {0, 1, 1, 512, 128}, {0, 0, 1, 128, 512}, {1, 0, 512, 128, 1},
        {0, 1, 32, 512, 128}, {0, 0, 32, 128, 512}, {1, 0, 512, 128, 32},
    };
    for (int f64 = 0; f64 < 2; f64++) {
        size_t es = f64 ? 8 : 4;
        void *a = calloc(512 * 512, es), *b = calloc(512 * 512, es), *c = calloc(512 * 512, es);
        for (int pass = 0; pass < 2; pass++) {
            size_t calls0 = heap_calls();
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
                const int *q = shapes[s];
                int lda = q[0] ? q[2] : q[4], ldb = q[1] ? q[4] : q[3];
                tg_gemm(f64 ? TG_F64 : TG_F32, q[0], q[1], q[2], q[3], q[4], a, lda, b, ldb, 1.0, c, q[3]);
            }
            if (pass == 1) assert_int_equal(heap_calls() - calls0, 0);
        }
        free(a), free(b), free(c);
    }
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_against_loop),
        cmocka_unit_test(test_gemm_split),
        cmocka_unit_test(test_gemm_accumulates_whole_products),
        cmocka_unit_test(test_gemm_no_alloc_after_warmup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
