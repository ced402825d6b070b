/* recompute_bench.c — one LSTM training step on a long sequence, plain or with recompute
 * (gradient checkpointing, models/recompute.c), for peak memory and time per step. One mode
 * per process, so that the process's peak RSS (getrusage ru_maxrss) is that mode's; the
 * baseline RSS after building the model and data is printed too, so the step's own memory is
 * the difference. A step: zero the gradients, forward, summed cross-entropy at every step,
 * backward (the optimizer's update is left out: it is the same for both and O(weights)); one
 * untimed warm-up step first, during which the tape's arena grows to its size.
 * float32, one layer, dense input I = 16, V = 16 classes; bench/torch_recompute.py is the
 * PyTorch side with the same shapes.
 *
 *   build/bench/recompute_bench T B H K steps      (K = 0: the plain run)
 *   → one line: mode=… T=… B=… H=… K=… steps=… median_ms=… min_ms=… cpu_ms=… (median CPU time of a
 *     step) base_rss_mb=… peak_rss_mb=… loss=… */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "tapegrad_models.h"

enum { I = 16, V = 16 };

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time of this process: on a machine shared with other jobs it counts the step's own work,
 * where wall time also counts the time slices others took. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: recompute_bench T B H K steps   (K = 0: plain)\n");
        return 1;
    }
    int T = atoi(argv[1]), B = atoi(argv[2]), H = atoi(argv[3]), K = atoi(argv[4]), steps = atoi(argv[5]);
    if (T < 1 || B < 1 || H < 1 || K < 0 || K > T || steps < 1 || steps > 1000) {
        fprintf(stderr, "recompute_bench: need T, B, H >= 1, 0 <= K <= T, 1 <= steps <= 1000\n");
        return 1;
    }
    struct tg_model_config cfg = {.cell = tg_cell_find("lstm"), .input = I, .hidden = H, .layers = 1,
                                  .outputs = V, .dtype = TG_F32, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    if (tg_model_new(&cfg, &m) != TG_OK) return fprintf(stderr, "%s\n", tg_last_error()), 1;
    struct tg_rng r;
    tg_rng_seed(&r, 7);
    tg_model_init_uniform(m, &r);
    double *x = malloc(sizeof *x * (size_t)T * B * I);
    int32_t *y = malloc(sizeof *y * (size_t)T * B);
    if (!x || !y) return fprintf(stderr, "out of memory\n"), 1;
    for (size_t i = 0; i < (size_t)T * B * I; i++) x[i] = 2 * tg_rng_uniform(&r) - 1;
    for (size_t i = 0; i < (size_t)T * B; i++) y[i] = (int32_t)tg_rng_below(&r, V);
    struct tg_seq_batch b = {.T = T, .B = B, .x = x, .labels = y};
    struct tg_tape *t = tg_tape_new(0);
    struct tg_recompute *rc = NULL;
    if (!t || (K && tg_recompute_new(K, &rc) != TG_OK)) return fprintf(stderr, "%s\n", tg_last_error()), 1;
    double base = rss_mb(), *ms = malloc(sizeof *ms * steps), *cpu = malloc(sizeof *cpu * steps), loss = 0;
    for (int s = -1; s < steps; s++) { /* step −1: warm-up (the arena grows), not timed */
        double t0 = now_ms(), c0 = cpu_ms();
        tg_model_zero_grad(m);
        enum tg_status st;
        if (rc) {
            st = tg_model_grad_recompute(m, t, &b, NULL, 1.0, rc, &loss, NULL, NULL);
        } else {
            struct tg_seq_result res;
            tg_tape_reset(t);
            st = tg_model_forward_from(m, t, &b, NULL, &res);
            if (st == TG_OK) st = tg_backward(t, res.loss);
            if (st == TG_OK) loss = tg_get(res.loss, 0, 0);
        }
        if (st != TG_OK) return fprintf(stderr, "%s\n", tg_last_error()), 1;
        if (s >= 0) ms[s] = now_ms() - t0, cpu[s] = cpu_ms() - c0;
    }
    qsort(ms, steps, sizeof *ms, cmp_double);
    qsort(cpu, steps, sizeof *cpu, cmp_double);
    printf("mode=%s T=%d B=%d H=%d K=%d steps=%d median_ms=%.1f min_ms=%.1f cpu_ms=%.1f "
           "base_rss_mb=%.1f peak_rss_mb=%.1f loss=%.6g\n", rc ? "recompute" : "plain", T, B, H, K,
           steps, ms[steps / 2], ms[0], cpu[steps / 2], base, rss_mb(), loss);
    tg_recompute_free(rc);
    tg_tape_free(t);
    tg_model_free(m);
    free(ms);
    free(cpu);
    free(x);
    free(y);
    return 0;
}
