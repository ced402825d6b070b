/* minchar_bench.c — tapegrad's side of the min-char-rnn benchmark config (issue 15).
 *
 *   build/bench/minchar_bench --data FILE [--steps N] [--warmup W] [--threads N] [--clock wall|cpu]
 *                             [--json FILE]
 *
 * The configuration of min-char-rnn (bench/minchar_numpy.py is the NumPy reference): a tanh RNN
 * over the bytes of FILE, H = 100, windows of T = 25 bytes in order with the state carried
 * between windows, one sequence (B = 1), summed cross-entropy, every gradient element clipped to
 * [−5, 5], min-char-rnn's Adagrad (lr 0.1, ε 1e-8), weights N(0, 0.01²), float64 as NumPy.
 * One step is tg_trainer_step — batch, forward, backward, clip, update, exactly what
 * `tapegrad train --task text --cell rnn_tanh --hidden 100 --batch 1 --optimizer
 * adagrad-minchar --clip-value 5 --loss sum --init minchar --dtype f64` runs — timed one by
 * one after warm-up; median and min–max ms/step are printed. The input is an embedding of width
 * V (what a one-hot x_t times W_xh computes, without the V-long product). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tg_config.h"
#if TG_HAVE_OPENMP
#include <omp.h>
#endif

#include "tapegrad_train.h"

void openblas_set_num_threads(int num_threads);

static int clock_cpu; /* --clock cpu: the process's CPU time */

static double now(void)
{
    struct timespec ts;
    clock_gettime(clock_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *data = NULL, *json = NULL, *dtype = "f64";
    long steps = 500, warmup = 20;
    int threads = 1;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--data")) data = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--steps")) steps = atol(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--warmup")) warmup = atol(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--dtype")) dtype = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--json")) json = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--clock") && !strcmp(argv[i + 1], "cpu")) clock_cpu = 1, i++;
        else if (i + 1 < argc && !strcmp(argv[i], "--clock") && !strcmp(argv[i + 1], "wall")) clock_cpu = 0, i++;
        else {
            fprintf(stderr, "minchar_bench: unknown argument '%s' (--data FILE --steps N --warmup W "
                    "--threads N --dtype f32|f64 --clock wall|cpu --json FILE)\n", argv[i]);
            return 2;
        }
    }
    if (!data || steps < 1 || warmup < 0 || threads < 1) {
        fprintf(stderr, "minchar_bench: need --data FILE; --steps and --threads >= 1, --warmup >= 0\n");
        return 2;
    }
#if TG_HAVE_OPENMP
    omp_set_num_threads(threads);
#endif
    openblas_set_num_threads(threads);
    struct tg_train_config cfg = {0};
    cfg.cell = "rnn_tanh";
    cfg.task = "text";
    cfg.data = data;
    cfg.batch = 1;
    cfg.hidden = 100;
    cfg.seq = 25;
    cfg.dtype = dtype;
    cfg.optimizer = "adagrad-minchar";
    cfg.clip_value = 5;
    cfg.loss = "sum";
    cfg.init = "minchar";
    cfg.seed = 1;
    cfg.steps = warmup + steps;
    cfg.eval_every = 1L << 40;
    struct tg_trainer *tr = NULL;
    if (tg_trainer_new(&cfg, &tr) != TG_OK) {
        fprintf(stderr, "minchar_bench: %s\n", tg_last_error());
        return 1;
    }
    double *ms = malloc(sizeof *ms * (size_t)steps), first_loss = 0;
    if (!ms) return 1;
    for (long s = 0; s < warmup + steps; s++) {
        double t0 = now();
        if (tg_trainer_step(tr) != TG_OK) {
            fprintf(stderr, "minchar_bench: step %ld: %s\n", s, tg_last_error());
            return 1;
        }
        double dt = (now() - t0) * 1e3;
        if (s == 0) first_loss = tg_trainer_last_loss(tr);
        if (s >= warmup) ms[s - warmup] = dt;
    }
    qsort(ms, (size_t)steps, sizeof *ms, cmp_d);
    double med = ms[steps / 2];
    printf("# tapegrad: rnn_tanh over the bytes of %s, H = 100, T = 25, B = 1, %s, Adagrad "
           "(min-char-rnn), clip 5, %d thread(s); clock %s\n", data, dtype, threads, clock_cpu ? "cpu" : "wall");
    printf("minchar tapegrad: %.4f ms/step median (%.4f–%.4f) over %ld steps after %ld; first loss %.6f\n",
           med, ms[0], ms[steps - 1], steps, warmup, first_loss);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "minchar_bench: cannot write %s\n", json);
            return 1;
        }
        fprintf(f, "{\"impl\": \"tapegrad\", \"median_ms\": %.6f, \"min_ms\": %.6f, \"max_ms\": %.6f, "
                "\"steps\": %ld, \"dtype\": \"%s\", \"first_loss\": %.9g, \"clock\": \"%s\"}\n", med, ms[0],
                ms[steps - 1], steps, dtype, first_loss, clock_cpu ? "cpu" : "wall");
        if (fclose(f) != 0) {
            fprintf(stderr, "minchar_bench: cannot write %s\n", json);
            return 1;
        }
    }
    free(ms);
    tg_trainer_free(tr);
    return 0;
}
