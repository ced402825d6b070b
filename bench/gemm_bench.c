/* gemm_bench.c — the per-step products of a recurrent step, timed per backend and shape.
 *
 *   build/bench/gemm_bench [--rounds R] [--ms MS] [--dtype f32|f64|both] [--B "1 4 …"] [--H "8 …"]
 *
 * A step of an RNN with B sequences, H units and G gate blocks (G = 1 rnn, 3 gru, 4 lstm) makes
 * three products with W_hh (G·H × H), all row-major:
 *   fwd:  Z += h·W_hhᵀ        m = B,   n = G·H, k = H     (ta = 0, tb = 1, β = 1: addmm)
 *   dh:   dh += dZ·W_hh       m = B,   n = H,   k = G·H   (ta = 0, tb = 0, β = 1)
 *   dW:   dW += dZᵀ·h         m = G·H, n = H,   k = B     (ta = 1, tb = 0, β = 1)
 * (tapegrad stacks dW over all T steps into one GEMM with k = T·B; the per-step form is here
 * because it is what a per-step implementation calls.) Two stacked products, T = 50, show the
 * other side of the dispatch rule:
 *   xp:   X·W_ihᵀ over all steps m = T·B, n = G·H, k = H     (the input projection)
 *   dWs:  dW += dZᵀ·h stacked  m = G·H, n = H,   k = T·B
 *
 * Timing: the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so time slices lost to other
 * processes are not counted; cache pollution from them still is.
 * Backends: OpenBLAS (cblas_?gemm, the library tapegrad links), libxsmm 1.17 (a JIT kernel per
 * shape, looked up on every call as tg_gemm would), oneDNN 2.6 (dnnl_sgemm, f32 only; it has no
 * public pre-packed GEMM) and tg_gemm itself (whatever it dispatches to). Each backend runs for
 * about MS milliseconds per round, the backends alternate within a round (A B C A B C …), and
 * the median and spread over R rounds are printed as µs per call and as time ÷ OpenBLAS time.
 * Every backend's result is checked against OpenBLAS's first (relative error printed).
 * Single thread: this is what each thread of tg_gemm's OpenMP split calls. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "tapegrad_blas.h"
#include "tg_config.h"

#if TG_HAVE_DNNL
#include <dnnl.h>
#endif

enum { BK_BLAS, BK_XSMM, BK_DNNL, BK_TG, BK_N };
static const char *bk_name[BK_N] = {"openblas", "libxsmm", "dnnl_sgemm", "tg_gemm"};

struct prod { const char *name; int ta, tb; };
static const struct prod prods[5] = {{"fwd", 0, 1}, {"dh", 0, 0}, {"dW", 1, 0}, {"xp", 0, 1},
                                     {"dWs", 1, 0}};

/* This thread's CPU time, not wall time: on a shared, loaded machine the thread is descheduled
 * for whole time slices, which wall time would charge to whichever backend was running. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One call of backend bk: c = op(a)·op(b) + c, row-major, m×n, inner k. 0 if unsupported. */
static int call(int bk, int f64, int ta, int tb, int m, int n, int k, const void *a, int lda,
                const void *b, int ldb, void *c, int ldc)
{
    switch (bk) {
    case BK_BLAS:
        if (f64)
            cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                        m, n, k, 1.0, a, lda, b, ldb, 1.0, c, ldc);
        else
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                        m, n, k, 1.0f, a, lda, b, ldb, 1.0f, c, ldc);
        return 1;
    case BK_TG:
        tg_gemm(f64 ? TG_F64 : TG_F32, ta, tb, m, n, k, a, lda, b, ldb, 1.0, c, ldc);
        return 1;
    case BK_XSMM: /* tg_gemm's libxsmm path, forced (its operand swap and transposes) */
        if (!tg_gemm_have_xsmm() || (ta && tb)) return 0;
        tg_gemm_set_backend(TG_GEMM_XSMM);
        tg_gemm(f64 ? TG_F64 : TG_F32, ta, tb, m, n, k, a, lda, b, ldb, 1.0, c, ldc);
        tg_gemm_set_backend(TG_GEMM_AUTO);
        return 1;
#if TG_HAVE_DNNL
    case BK_DNNL:
        if (f64) return 0;
        return dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, 1.0f, c,
                          ldc) == dnnl_success;
#endif
    default:
        return 0;
    }
}

/* Heap allocations per call, when bench/malloc_count.so is preloaded (else -1). */
static double allocs_per_call(int bk, int f64, int ta, int tb, int m, int n, int k, const void *a,
                              int lda, const void *b, int ldb, void *c, int ldc)
{
    static unsigned long (*count)(void);
    static int looked;
    if (!looked) {
        looked = 1;
        *(void **)&count = dlsym(RTLD_DEFAULT, "tg_malloc_count_calls");
    }
    if (!count) return -1;
    unsigned long n0 = count();
    for (int i = 0; i < 10; i++) call(bk, f64, ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
    return (count() - n0) / 10.0;
}

/* Is `name` one of the comma-separated items of `list`? */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static void fill(void *p, size_t n, int f64, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        double v = ((seed >> 8) & 0xffff) / 65536.0 - 0.5;
        if (f64) ((double *)p)[i] = v;
        else ((float *)p)[i] = (float)v;
    }
}

static double max_rel(const void *x, const void *ref, size_t n, int f64)
{
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double r = f64 ? ((const double *)ref)[i] : ((const float *)ref)[i];
        double v = f64 ? ((const double *)x)[i] : ((const float *)x)[i];
        if (fabs(r) > scale) scale = fabs(r);
        if (fabs(v - r) > worst) worst = fabs(v - r);
    }
    return scale > 0 ? worst / scale : worst;
}

int main(int argc, char **argv)
{
    int rounds = 7;
    double ms = 3.0;
    const char *ops = "fwd,dh,dW,xp,dWs", *dts = "both", *Bs = "1 4 16 32 64", *Hs = "8 32 64 100 128 256 512", *Gs = "1 4";
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--rounds")) rounds = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--ms")) ms = atof(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--dtype")) dts = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--B")) Bs = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--H")) Hs = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--G")) Gs = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--ops")) ops = argv[++i];
        else {
            fprintf(stderr, "gemm_bench: unknown argument '%s' (--rounds R --ms MS --dtype "
                    "f32|f64|both --B LIST --H LIST --G LIST --ops fwd,dh,dW,xp,dWs)\n", argv[i]);
            return 2;
        }
    }
    if (rounds < 1 || ms <= 0) {
        fprintf(stderr, "gemm_bench: --rounds and --ms must be positive\n");
        return 2;
    }
    openblas_set_num_threads(1);
    printf("# libxsmm %s\n", tg_gemm_have_xsmm() ? "built in" : "absent");
    printf("# openblas %s\n", openblas_get_config());
    printf("# µs per call (thread CPU time): median over %d rounds [min–max]; ratio = backend ÷ "
           "openblas, min ÷ min\n", rounds);
    printf("%-3s %-3s %2s %4s %4s %4s %4s", "dt", "op", "G", "B", "H", "m", "n");
    printf(" %5s", "k");
    for (int bk = 0; bk < BK_N; bk++) printf(" | %-26s", bk_name[bk]);
    printf(" | relerr\n");
    for (int f64 = 0; f64 < 2; f64++) {
        if ((f64 && !strcmp(dts, "f32")) || (!f64 && !strcmp(dts, "f64"))) continue;
        size_t es = f64 ? 8 : 4;
        char Gbuf[256], Bbuf[256], Hbuf[256], *s1, *s2, *s3;
        snprintf(Gbuf, sizeof Gbuf, "%s", Gs);
        for (char *g = strtok_r(Gbuf, " ", &s1); g; g = strtok_r(NULL, " ", &s1)) {
            int G = atoi(g);
            snprintf(Hbuf, sizeof Hbuf, "%s", Hs);
            for (char *h = strtok_r(Hbuf, " ", &s2); h; h = strtok_r(NULL, " ", &s2)) {
                int H = atoi(h);
                snprintf(Bbuf, sizeof Bbuf, "%s", Bs);
                for (char *bb = strtok_r(Bbuf, " ", &s3); bb; bb = strtok_r(NULL, " ", &s3)) {
                    int B = atoi(bb);
                    for (int p = 0; p < 5; p++) {
                        if (!in_list(ops, prods[p].name)) continue;
                        int ta = prods[p].ta, tb = prods[p].tb, m, n, k;
                        if (p == 0) m = B, n = G * H, k = H;
                        else if (p == 1) m = B, n = H, k = G * H;
                        else if (p == 2) m = G * H, n = H, k = B;
                        else if (p == 3) m = 50 * B, n = G * H, k = H;
                        else m = G * H, n = H, k = 50 * B;
                        int lda = ta ? m : k, ldb = tb ? k : n, ldc = n;
                        void *a = malloc((size_t)m * k * es), *b = malloc((size_t)k * n * es);
                        void *c0 = malloc((size_t)m * n * es), *c[BK_N];
                        fill(a, (size_t)m * k, f64, 1);
                        fill(b, (size_t)k * n, f64, 2);
                        fill(c0, (size_t)m * n, f64, 3);
                        int ok[BK_N];
                        double err[BK_N];
                        for (int bk = 0; bk < BK_N; bk++) {
                            c[bk] = malloc((size_t)m * n * es);
                            memcpy(c[bk], c0, (size_t)m * n * es);
                            ok[bk] = call(bk, f64, ta, tb, m, n, k, a, lda, b, ldb, c[bk], ldc);
                        }
                        double allocs[BK_N];
                        for (int bk = 0; bk < BK_N; bk++)
                            err[bk] = ok[bk] ? max_rel(c[bk], c[BK_BLAS], (size_t)m * n, f64) : NAN;
                        for (int bk = 0; bk < BK_N; bk++) {
                            allocs[bk] = ok[bk] ? allocs_per_call(bk, f64, ta, tb, m, n, k, a, lda, b,
                                                                  ldb, c[bk], ldc) : 0;
                        }
                        /* Calls per round: about `ms` of OpenBLAS's time. */
                        double t0 = now();
                        int reps = 0;
                        while (now() - t0 < 1e-3 * ms / 4) {
                            call(BK_BLAS, f64, ta, tb, m, n, k, a, lda, b, ldb, c[BK_BLAS], ldc);
                            reps++;
                        }
                        reps *= 4;
                        double *us = calloc((size_t)BK_N * rounds, sizeof *us);
                        for (int r = 0; r < rounds; r++) {
                            for (int bk = 0; bk < BK_N; bk++) {
                                if (!ok[bk]) continue;
                                /* fresh c each round so values stay bounded */
                                memcpy(c[bk], c0, (size_t)m * n * es);
                                double t = now();
                                for (int i = 0; i < reps; i++)
                                    call(bk, f64, ta, tb, m, n, k, a, lda, b, ldb, c[bk], ldc);
                                us[bk * rounds + r] = (now() - t) / reps * 1e6;
                            }
                        }
                        printf("%-3s %-3s %2d %4d %4d %4d %4d %5d", f64 ? "f64" : "f32",
                               prods[p].name, G, B, H, m, n, k);
                        double us_blas_min = us[0];
                        for (int r = 1; r < rounds; r++)
                            if (us[r] < us_blas_min) us_blas_min = us[r];
                        for (int bk = 0; bk < BK_N; bk++) {
                            if (!ok[bk]) {
                                printf(" | %-26s", "n/a");
                                continue;
                            }
                            double *u = us + bk * rounds;
                            qsort(u, rounds, sizeof *u, cmp_d);
                            char cell[64];
                            snprintf(cell, sizeof cell, "%8.2f [%6.2f–%7.2f] %5.2f", u[rounds / 2], u[0],
                                     u[rounds - 1], u[0] / us_blas_min);
                            printf(" | %-26s", cell);
                        }
                        printf(" |");
                        for (int bk = 1; bk < BK_N; bk++) printf(" %.0e", ok[bk] ? err[bk] : NAN);
                        printf(" | allocs/call");
                        for (int bk = 0; bk < BK_N; bk++) printf(" %g", allocs[bk]);
                        printf("\n");
                        fflush(stdout);
                        free(us);
                        for (int bk = 0; bk < BK_N; bk++) free(c[bk]);
                        free(a);
                        free(b);
                        free(c0);
                    }
                }
            }
        }
    }
    return 0;
}
