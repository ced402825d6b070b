/* ln_lstm_bench.c — the training step of the layer-normalised LSTM of tests/ln_lstm_cell.h
 * (written with the public ops) against the built-in LSTM, as `tapegrad bench` times a step:
 * reset, zero grad, forward, backward, SGD. float32, dense input I = H, 64 classes, one layer,
 * the same data for both. Steps alternate between the two models so that drift of the machine
 * hits both; the medians are reported, and their ratio.
 *
 *   build/bench/ln_lstm_bench [T B H [steps [threads [fusion: on|lean|off [only: lstm|ln_lstm]]]]]
 *   (defaults 50 32 128 30 1 on; `only` times one model, e.g. under perf record) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "tapegrad_models.h"
#include "tapegrad_optim.h"
#include "ln_lstm_cell.h"
#include "tg_config.h"
#if TG_HAVE_OPENMP
#include <omp.h>
#endif

enum { V = 64 };

struct side {
    const char *name;
    struct tg_model *m;
    struct tg_tape *t;
    struct tg_optim *opt;
    struct tg_seq_batch b;
    double loss;
    size_t nodes, fused;
    long faults; /* minor page faults during the timed steps */
};

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int step(struct side *s)
{
    struct tg_seq_result r;
    tg_tape_reset(s->t);
    tg_optim_zero_grad(s->opt);
    if (tg_model_forward(s->m, s->t, &s->b, 0, &r) != TG_OK) return -1;
    if (tg_backward(s->t, r.loss) != TG_OK) return -1;
    if (tg_optim_step(s->opt) != TG_OK) return -1;
    s->loss = tg_get(r.loss, 0, 0);
    s->nodes = tg_tape_num_nodes(s->t);
    s->fused = 0;
    for (size_t i = 0; i < s->nodes; i++) s->fused += tg_node_op(tg_tape_node(s->t, i)) == TG_OP_FUSED;
    return 0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int setup(struct side *s, const char *name, const struct tg_cell *cell, int H, int fusion,
                 const double *x, const int32_t *y, int T, int B)
{
    memset(s, 0, sizeof *s);
    s->name = name;
    struct tg_model_config cfg = {cell, H, 0, H, 1, V, TG_F32, TG_LOSS_XENT_SUM};
    struct tg_optim_config oc;
    tg_optim_defaults(TG_OPTIM_SGD, &oc);
    oc.lr = 1e-3;
    struct tg_rng r;
    tg_rng_seed(&r, 1);
    if (tg_model_new(&cfg, &s->m) != TG_OK || !(s->t = tg_tape_new(0))) return -1;
    tg_model_init_uniform(s->m, &r);
    if (cell == &ln_lstm_cell) /* gains 1, biases 0: LN's usual start */
        for (int i = 0; i < s->m->n_params; i++) {
            int sp = s->m->param_spec[i];
            if (sp == LN_G_GAIN || sp == LN_C_GAIN) tg_tensor_fill(s->m->params[i], 1.0);
            if (sp == LN_G_BIAS || sp == LN_C_BIAS) tg_tensor_fill(s->m->params[i], 0.0);
        }
    tg_tape_set_fusion(s->t, fusion);
    if (tg_optim_new(&oc, s->m->params, s->m->n_params, &s->opt) != TG_OK) return -1;
    s->b = (struct tg_seq_batch){.T = T, .B = B, .x = x, .labels = y};
    return 0;
}

int main(int argc, char **argv)
{
    int T = argc > 1 ? atoi(argv[1]) : 50, B = argc > 2 ? atoi(argv[2]) : 32;
    int H = argc > 3 ? atoi(argv[3]) : 128, n = argc > 4 ? atoi(argv[4]) : 30;
    int threads = argc > 5 ? atoi(argv[5]) : 1;
    const char *fa = argc > 6 ? argv[6] : "on";
    int only = argc > 7 ? (strcmp(argv[7], "lstm") == 0 ? 0 : 1) : -1;
    int fusion = strcmp(fa, "off") == 0 ? TG_FUSION_OFF : strcmp(fa, "lean") == 0 ? TG_FUSION_LEAN : TG_FUSION_ON;
    if (T < 1 || B < 1 || H < 2 || n < 1 || threads < 1) {
        fprintf(stderr, "usage: %s [T B H [steps [threads [on|lean|off [lstm|ln_lstm]]]]]\n", argv[0]);
        return 2;
    }
#if TG_HAVE_OPENMP
    omp_set_num_threads(threads);
#endif
    struct tg_rng r;
    tg_rng_seed(&r, 7);
    double *x = malloc(sizeof *x * (size_t)T * B * H);
    int32_t *y = malloc(sizeof *y * (size_t)T * B);
    for (size_t i = 0; i < (size_t)T * B * H; i++) x[i] = tg_rng_normal(&r);
    for (int i = 0; i < T * B; i++) y[i] = (int32_t)tg_rng_below(&r, V);
    struct side s[2];
    if (setup(&s[0], "lstm", tg_cell_find("lstm"), H, fusion, x, y, T, B) ||
        setup(&s[1], "ln_lstm", &ln_lstm_cell, H, fusion, x, y, T, B)) {
        fprintf(stderr, "setup: %s\n", tg_last_error());
        return 1;
    }
    double *ms[2] = {malloc(sizeof(double) * n), malloc(sizeof(double) * n)};
    for (int w = 0; w < 3; w++) /* warm-up: arenas, scratch, caches */
        for (int k = 0; k < 2; k++)
            if ((only < 0 || only == k) && step(&s[k])) return fprintf(stderr, "%s: %s\n", s[k].name, tg_last_error()), 1;
    for (int i = 0; i < n; i++)
        for (int k0 = 0; k0 < 2; k0++) {
            int k = (i + k0) % 2; /* alternate which goes first */
            if (only >= 0 && k != only) continue;
            long f0 = minor_faults();
            double t0 = now();
            if (step(&s[k])) return fprintf(stderr, "%s: %s\n", s[k].name, tg_last_error()), 1;
            ms[k][i] = (now() - t0) * 1e3;
            s[k].faults += minor_faults() - f0;
        }
    double med[2];
    for (int k = 0; k < 2; k++) {
        if (only >= 0 && k != only) continue;
        qsort(ms[k], (size_t)n, sizeof(double), cmp);
        med[k] = n % 2 ? ms[k][n / 2] : 0.5 * (ms[k][n / 2 - 1] + ms[k][n / 2]);
        printf("%-8s T%d B%d H%d float32, %d thread(s), fusion %s: step median %.2f ms (min %.2f, "
               "max %.2f) over %d; %zu nodes, %zu fused; arena %.1f MiB; %.0f page faults a step; "
               "loss %.4f\n", s[k].name, T, B, H, threads, fa, med[k], ms[k][0], ms[k][n - 1], n,
               s[k].nodes, s[k].fused, tg_tape_arena_capacity(s[k].t) / 1048576.0,
               (double)s[k].faults / n, s[k].loss);
    }
    if (only < 0) printf("ratio ln_lstm / lstm: %.2f\n", med[1] / med[0]);
    for (int k = 0; k < 2; k++) {
        tg_optim_free(s[k].opt);
        tg_tape_free(s[k].t);
        tg_model_free(s[k].m);
        free(ms[k]);
    }
    free(x);
    free(y);
    return 0;
}
