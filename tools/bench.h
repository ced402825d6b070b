/* bench.h — shared by cmd_bench.c (the command) and bench_util.c (clock, medians, the sgemm
 * reference). Not installed. */
#ifndef TG_BENCH_H
#define TG_BENCH_H

#include <string.h>

#include "tapegrad.h"

enum { V_CLASSES = 64 }; /* output classes of every benchmark model */

/* T<steps>B<batch>H<hidden>; the input width is H. */
struct config { char name[40]; int T, B, H; };

static inline int cell_gates(const char *cell)
{
    return strcmp(cell, "lstm") == 0 ? 4 : strcmp(cell, "gru") == 0 ? 3 : 1;
}

/* One GEMM shape of a training step, as a cblas_sgemm call. */
struct gemm_shape {
    const char *what;
    int M, N, K, ta, tb;
    double calls;                  /* per training step */
    int stream_a, stream_b, stream_c; /* operand changes from call to call (a new time step) */
    float beta;
};

double now(void);                  /* seconds, monotonic; process CPU time if bench_clock_cpu */
extern int bench_clock_cpu;
double median(double *v, int n);   /* of n ≥ 1 values; sorts them in place */

/* The step's GEMMs (at most 8) into g; their FLOPs; the time (ms) of those GEMMs as plain
 * cblas_sgemm at the per-step shapes; sgemm n³ GFLOP/s; relative error of cblas_sgemm against
 * a float64 loop. */
int step_gemms(const struct config *c, const char *cell, struct gemm_shape *g);
double gemm_flops(const struct gemm_shape *g, int n);
double sgemm_reference(const struct config *c, const char *cell, struct tg_rng *rng);
double sgemm_square(int n, struct tg_rng *rng);
double sgemm_check(struct tg_rng *rng);

#endif
