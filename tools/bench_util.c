/* bench_util.c — what `tapegrad bench` (cmd_bench.c) measures against: a clock, medians, and
 * plain cblas_sgemm at the GEMM shapes a training step needs (the %sgemm column's reference). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "bench.h"

/* Wall time by default; with bench_clock_cpu set (`tapegrad bench --clock cpu`) the process's
 * CPU time, all its threads together: on a shared machine a descheduled process then is not
 * charged for the time slices other processes took (cache and memory-bandwidth contention
 * still count). At one thread it measures the work; at more, spinning waits count as work. */
int bench_clock_cpu;

double now(void)
{
    struct timespec ts;
    clock_gettime(bench_clock_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n ≥ 1 values (sorts them in place). */
double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* -------------------------------------------------------------- sgemm reference */


/* Seconds per call of C = A·B (+ beta·C) at one shape, median of 5 batches; `blocks`
 * distinct row blocks are cycled through for the streaming operands, as the steps of a
 * sequence would. */
static double time_gemm(const struct gemm_shape *s, int blocks, float *A, float *Bm, float *C)
{
    const size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
    const int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    int calls = 1;
    double per = 0, t[5];
    for (int rep = -2; rep < 5; rep++) {
        double t0 = now();
        for (int i = 0; i < calls; i++) {
            int k = i % blocks;
            cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans,
                        s->tb ? CblasTrans : CblasNoTrans, s->M, s->N, s->K, 1.0f,
                        A + (s->stream_a ? k * na : 0), lda, Bm + (s->stream_b ? k * nb : 0), ldb,
                        s->beta, C + (s->stream_c ? k * nc : 0), s->N);
        }
        per = (now() - t0) / calls;
        if (rep == -2) {   /* first call: warm; size the batches to ~3 ms from the second */
            calls = 1;
        } else if (rep == -1) {
            calls = per > 0 ? (int)fmin(fmax(3e-3 / per, 1), 20000) : 1000;
        } else {
            t[rep] = per;
        }
    }
    return median(t, 5);
}

/* The GEMMs one training step needs, at the per-step shapes (one layer, input width I). */
int step_gemms(const struct config *c, const char *cell, struct gemm_shape *g)
{
    const int T = c->T, B = c->B, H = c->H, In = c->H, GH = cell_gates(cell) * H, TB = T * B;
    const struct gemm_shape list[] = {
        {"x·W_ihᵀ", B, GH, In, 0, 1, T, 1, 0, 1, 0.0f},
        {"h·W_hhᵀ", B, GH, H, 0, 1, T, 1, 0, 1, 0.0f},
        {"dW_ih += daᵀ·x", GH, In, B, 1, 0, T, 1, 1, 0, 1.0f},
        {"dW_hh += daᵀ·h", GH, H, B, 1, 0, T, 1, 1, 0, 1.0f},
        {"dh = da·W_hh", B, H, GH, 0, 0, T - 1, 1, 0, 1, 0.0f},
        {"logits = H_s·W_outᵀ", TB, V_CLASSES, H, 0, 1, 1, 0, 0, 0, 0.0f},
        {"dW_out += dZᵀ·H_s", V_CLASSES, H, TB, 1, 0, 1, 0, 0, 0, 1.0f},
        {"dH_s = dZ·W_out", TB, H, V_CLASSES, 0, 0, 1, 0, 0, 0, 0.0f},
    };
    memcpy(g, list, sizeof list);
    return (int)(sizeof list / sizeof list[0]);
}

double gemm_flops(const struct gemm_shape *g, int n)
{
    double f = 0;
    for (int i = 0; i < n; i++) f += g[i].calls * 2.0 * g[i].M * g[i].N * g[i].K;
    return f;
}

static void fill_uniform(float *p, size_t n, struct tg_rng *r)
{
    for (size_t i = 0; i < n; i++) p[i] = (float)(2.0 * tg_rng_uniform(r) - 1.0);
}

/* ms per step that the step's GEMMs take as plain sgemm calls; -1 if out of memory. */
double sgemm_reference(const struct config *c, const char *cell, struct tg_rng *rng)
{
    struct gemm_shape g[8];
    int n = step_gemms(c, cell, g);
    const int blocks = c->T < 128 ? c->T : 128;
    size_t na = 0, nb = 0, nc = 0;
    for (int i = 0; i < n; i++) {
        size_t a = (size_t)g[i].M * g[i].K, b = (size_t)g[i].K * g[i].N, cc = (size_t)g[i].M * g[i].N;
        a *= g[i].stream_a ? blocks : 1, b *= g[i].stream_b ? blocks : 1, cc *= g[i].stream_c ? blocks : 1;
        na = a > na ? a : na, nb = b > nb ? b : nb, nc = cc > nc ? cc : nc;
    }
    float *A = malloc(na * sizeof *A), *Bm = malloc(nb * sizeof *Bm), *C = malloc(nc * sizeof *C);
    double ms = -1;
    if (A && Bm && C) {
        fill_uniform(A, na, rng), fill_uniform(Bm, nb, rng), fill_uniform(C, nc, rng);
        double sec[8], total = 0;
        for (int i = 0; i < n; i++) {
            sec[i] = -1;
            for (int j = 0; j < i; j++)   /* identical shape already timed (I = H) */
                if (g[j].M == g[i].M && g[j].N == g[i].N && g[j].K == g[i].K &&
                    g[j].ta == g[i].ta && g[j].tb == g[i].tb)
                    sec[i] = sec[j];
            if (sec[i] < 0) sec[i] = time_gemm(&g[i], blocks, A, Bm, C);
            total += g[i].calls * sec[i];
        }
        ms = total * 1e3;
    }
    free(A), free(Bm), free(C);
    return ms;
}

/* GFLOP/s of one square sgemm (the machine's reference, printed in the header). */
double sgemm_square(int n, struct tg_rng *rng)
{
    struct gemm_shape s = {"square", n, n, n, 0, 0, 1, 0, 0, 0, 0.0f};
    float *A = malloc((size_t)n * n * sizeof *A), *Bm = malloc((size_t)n * n * sizeof *Bm),
          *C = malloc((size_t)n * n * sizeof *C);
    double r = -1;
    if (A && Bm && C) {
        fill_uniform(A, (size_t)n * n, rng), fill_uniform(Bm, (size_t)n * n, rng);
        r = 2.0 * n * n * (double)n / time_gemm(&s, 1, A, Bm, C) * 1e-9;
    }
    free(A), free(Bm), free(C);
    return r;
}

/* Largest relative error of cblas_sgemm against a double-precision loop, over the four
 * transpose combinations of a small odd shape: a guard for OpenBLAS kernels picked by CPUID
 * (OPENBLAS_CORETYPE unset) on a CPU that build does not know well. */
double sgemm_check(struct tg_rng *rng)
{
    enum { M = 37, N = 53, K = 29 };
    static float A[M * K], Bm[K * N], C[M * N];
    fill_uniform(A, M * K, rng), fill_uniform(Bm, K * N, rng);
    double worst = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                        M, N, K, 1.0f, A, ta ? M : K, Bm, tb ? K : N, 0.0f, C, N);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double ref = 0, mag = 0;
                    for (int k = 0; k < K; k++) {
                        double p = (double)(ta ? A[k * M + i] : A[i * K + k]) *
                                   (double)(tb ? Bm[j * K + k] : Bm[k * N + j]);
                        ref += p, mag += fabs(p);
                    }
                    double e = fabs(C[i * N + j] - ref) / fmax(mag, 1e-30);
                    worst = e > worst ? e : worst;
                }
        }
    return worst;
}

