/*
 * cmd_bench.c — `tapegrad bench`: how long a training step takes, against the hand-written
 * BPTT of models/manual/ and against the BLAS this process runs on (issue 6).
 *
 * A step, float32, one layer, I = H input width, V = 64 classes, zero initial state:
 *   tg_tape_reset · zero the gradients · tg_model_forward (summed cross-entropy over T·B tokens)
 *   · tg_backward · SGD step (lr 1e-4)
 * reusing one tape, one model and one pre-made batch (N(0,1) inputs, uniform labels, fixed seed),
 * exactly what bench/torch_bench.py times on PyTorch's side. The oracle step is
 * tg_manual_bptt_f32 with a workspace allocated once, plus the same SGD step, from the same
 * initial weights (the first losses of both are compared, so both compute the same thing).
 *
 * With the oracle, the reported times come from steps of the two alternated (A B A B …), so a
 * shared machine's drift hits both alike and autodiff/manual is steady (time_alternating).
 * Reported per (cell, config) over the timed steps after warm-up (bench/README.md defines
 * every column): median and min–max ms/step, tokens/s, GFLOP/s, %sgemm, allocations per step,
 * tape memory against the minimum a backward pass needs, peak-RSS rise.
 * - FLOPs count the GEMMs a step needs: per step t, forward x_t·W_ihᵀ and h_{t−1}·W_hhᵀ
 *   (2·B·(I+H)·G·H), backward dW_ih and dW_hh (the same) and dh_{t−1} = da_t·W_hh (2·B·H·G·H,
 *   t ≥ 1); once, the output layer (2·T·B·H·V forward, 4·T·B·H·V backward). Not the issue's
 *   3× forward, which counts a dX of the input neither side computes (JSON: flops_issue).
 * - %sgemm = time of those GEMMs as plain cblas_sgemm calls at the per-step shapes (T calls
 *   each over distinct row blocks, plus the output layer's three) ÷ step time, which is
 *   achieved GFLOP/s ÷ the FLOP-weighted sgemm rate whatever the FLOP count. An engine that
 *   stacks GEMMs over T·B rows can pass 100 %.
 * - Allocations are counted only with bench/malloc_count.so preloaded (run_bench.sh does);
 *   tg_tape_heap_allocs needs no preload.
 * Results vary with a shared, noisy machine: compare ratios taken within one run only.
 */
#include <dlfcn.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "tg_config.h"
#if TG_HAVE_OPENMP && defined(_OPENMP)
#include <omp.h>
#define BENCH_OPENMP 1
#else
#define BENCH_OPENMP 0
static void omp_set_num_threads(int n) { (void)n; }
static int omp_get_max_threads(void) { return 1; }
#endif

#include "bench.h"
#include "cli.h"
#include "tapegrad.h"
#include "tapegrad_blas.h"
#include "tapegrad_fileio.h"
#include "tapegrad_models.h"
#include "tapegrad_manual.h"
#include "tapegrad_optim.h"

/* OpenBLAS's own controls (also in its cblas.h; declared here so the intent is visible). */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
int openblas_get_parallel(void);
char *openblas_get_corename(void);
char *openblas_get_config(void);

enum { MAX_CONFIGS = 32, MAX_CELLS = 3, MAX_REPEATS_AUTO = 100, MIN_REPEATS_AUTO = 20 };
static const double LR = 1e-4;

static const char *const STD_CONFIGS[] = {"T50B32H128", "T50B32H256", "T100B64H512",
                                          "T35B20H1024", "T100B1H8"};
static const char *const STD_CELLS[] = {"lstm", "gru", "rnn_tanh"};
static const int SCALING_T[] = {10, 100, 1000};

struct bench_opts {
    int threads, repeats, warmup, no_manual, scaling, seed, fusion;
    double budget;
};


struct timing { double med, min, max; int n; double allocs, tape_allocs; char sites[200]; };

struct result {
    const char *cell, *series;
    struct config cfg;
    struct timing ad, man;
    int have_man;
    double flops, flops_issue, sgemm_ms;
    double loss_ad, loss_man;
    size_t nodes, arena_fwd, arena_bwd, arena_cap, arena_min, man_ws;
    long rss_ad_kib, rss_man_kib;
};

/* ------------------------------------------------------------- process probes */

/* A number of /proc/self/status ("VmHWM", "VmRSS" in KiB; "Threads"), or -1. */
static long proc_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') v = atol(line + n + 1);
    fclose(f);
    return v;
}

/* Reset the peak-RSS mark to the current RSS (Linux ≥ 4.0); returns the current RSS in KiB. */
static long rss_mark(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
    return proc_kib("VmRSS");
}

static long rss_rise(long mark) { long hwm = proc_kib("VmHWM"); return hwm < 0 || mark < 0 ? -1 : hwm - mark; }

/* The counters of bench/malloc_count.so when it is preloaded, else NULL. */
typedef unsigned long (*count_fn)(void);
typedef int (*sites_fn)(void **addr, unsigned long *counts, int max);
static count_fn malloc_calls;
static sites_fn malloc_sites;

static void find_malloc_counter(void)
{
    void *a = dlsym(RTLD_DEFAULT, "tg_malloc_count_calls"), *b = dlsym(RTLD_DEFAULT, "tg_malloc_count_sites");
    memcpy(&malloc_calls, &a, sizeof a);
    memcpy(&malloc_sites, &b, sizeof b);
}

static unsigned long allocs_now(void) { return malloc_calls ? malloc_calls() : 0; }

/* Allocation call sites before and after the timed steps; the difference, grouped by the
 * shared object the caller lives in ("tapegrad" = this executable, the library included), says
 * who allocates during a step: "libgomp.so.1 5, libopenblas.so.0 105". */
enum { MAX_SITES = 1024 };
struct site_snap { int n; void *addr[MAX_SITES]; unsigned long cnt[MAX_SITES]; };
static struct site_snap snap0, snap1;

static void sites_diff(const struct site_snap *a, const struct site_snap *b, int steps, char *out, size_t size)
{
    const char *obj[16];
    unsigned long tot[16];
    int nobj = 0;
    for (int i = 0; i < b->n; i++) {
        unsigned long before = 0;
        for (int j = 0; j < a->n; j++)
            if (a->addr[j] == b->addr[i]) before = a->cnt[j];
        if (b->cnt[i] == before) continue;
        Dl_info info;
        const char *name = dladdr(b->addr[i], &info) && info.dli_fname ? info.dli_fname : "?";
        const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
        int k = 0;
        while (k < nobj && strcmp(obj[k], base) != 0) k++;
        if (k == nobj && nobj < 16) obj[nobj] = base, tot[nobj++] = 0;
        if (k < nobj) tot[k] += b->cnt[i] - before;
    }
    size_t len = 0;
    out[0] = 0;
    for (int k = 0; k < nobj && len < size; k++)
        len += (size_t)snprintf(out + len, size - len, "%s%s %g", k ? ", " : "", obj[k], (double)tot[k] / steps);
}

/* ---------------------------------------------------------- config and names */

static int parse_config(const char *s, struct config *c)
{
    int n = 0;
    if (sscanf(s, "T%dB%dH%d%n", &c->T, &c->B, &c->H, &n) != 3 || s[n] || c->T < 1 || c->B < 1 ||
        c->H < 1 || strlen(s) >= sizeof c->name)
        return -1;
    /* keep every T·B·G·H index comfortably inside int and the run inside memory */
    if ((double)c->T * c->B * (c->H + V_CLASSES) * 4.0 > 5e8) return -2;
    snprintf(c->name, sizeof c->name, "%s", s);
    return 0;
}

/* Activations per step, in units of B·H floats, that a backward pass cannot do without. */
static int cell_min_units(const char *cell) { return strcmp(cell, "lstm") == 0 ? 6 : strcmp(cell, "gru") == 0 ? 4 : 1; }

/* --------------------------------------------------------------- timed steps */

typedef int (*step_fn)(void *ctx);

struct ad_ctx {
    struct tg_model *m;
    struct tg_tape *t;
    struct tg_optim *opt;
    struct tg_seq_batch batch;
    double loss, first_loss;   /* first_loss: of the first step, from the initial weights */
    long steps;
    size_t arena_fwd, arena_bwd;
};

static int ad_step(void *p)
{
    struct ad_ctx *c = p;
    struct tg_seq_result r;
    tg_tape_reset(c->t);
    tg_optim_zero_grad(c->opt);
    if (tg_model_forward(c->m, c->t, &c->batch, 0, &r) != TG_OK) return -1;
    c->arena_fwd = tg_tape_arena_used(c->t);
    if (tg_backward(c->t, r.loss) != TG_OK) return -1;
    c->arena_bwd = tg_tape_arena_used(c->t);
    if (tg_optim_step(c->opt) != TG_OK) return -1;
    c->loss = tg_get(r.loss, 0, 0);
    if (c->steps++ == 0) c->first_loss = c->loss;
    return 0;
}

struct man_ctx {
    enum tg_manual_cell cell;
    struct tg_manual_dims d;
    const float *params[6];
    float *grads[6];
    const float *x;
    const int32_t *y;
    void *ws;
    struct tg_optim *opt;
    float loss;
};

static int man_step(void *p)
{
    struct man_ctx *c = p;
    if (tg_manual_bptt_f32(c->cell, &c->d, c->params, c->x, c->y, NULL, NULL, &c->loss, c->grads,
                           NULL, NULL, NULL, NULL, NULL, c->ws) != TG_OK)
        return -1;
    return tg_optim_step(c->opt) == TG_OK ? 0 : -1;
}

/* Warm up (at least min_warm steps), then time steps one by one. Allocation counts cover the
 * timed steps only. */
static int time_steps(step_fn step, void *ctx, struct tg_tape *tape, const struct bench_opts *o,
                      int min_warm, struct timing *out)
{
    double last = 0;
    int warm = o->warmup > min_warm ? o->warmup : min_warm;
    if (warm < 1 && o->repeats == 0) warm = 1; /* the step count follows from one step's time */
    for (int i = 0; i < warm; i++) {
        double t0 = now();
        if (step(ctx)) return -1;
        last = now() - t0;
    }
    int n = o->repeats;
    if (n == 0) {
        n = last > 0 ? (int)(o->budget / last) : MAX_REPEATS_AUTO;
        n = n < MIN_REPEATS_AUTO ? MIN_REPEATS_AUTO : n > MAX_REPEATS_AUTO ? MAX_REPEATS_AUTO : n;
    }
    double *t = malloc((size_t)n * sizeof *t);
    if (!t) return -1;
    size_t tape0 = tape ? tg_tape_heap_allocs(tape) : 0;
    if (malloc_sites) snap0.n = malloc_sites(snap0.addr, snap0.cnt, MAX_SITES);
    unsigned long a0 = allocs_now();
    for (int i = 0; i < n; i++) {
        double t0 = now();
        if (step(ctx)) {
            free(t);
            return -1;
        }
        t[i] = (now() - t0) * 1e3;
    }
    unsigned long a1 = allocs_now();
    out->sites[0] = 0;
    if (malloc_sites) {
        snap1.n = malloc_sites(snap1.addr, snap1.cnt, MAX_SITES);
        sites_diff(&snap0, &snap1, n, out->sites, sizeof out->sites);
    }
    out->allocs = malloc_calls ? (double)(a1 - a0) / n : -1;
    out->tape_allocs = tape ? (double)(tg_tape_heap_allocs(tape) - tape0) / n : -1;
    out->n = n;
    out->med = median(t, n);
    out->min = t[0], out->max = t[n - 1];
    free(t);
    return 0;
}

/* Autodiff and oracle steps alternated, A B A B …, after both were timed on their own: a
 * shared machine's speed drifts over seconds, and alternating exposes both sides to the same
 * drift, so their ratio is far steadier than that of two blocks timed one after the other.
 * Replaces the medians, extremes and counts of both timings (allocation counts stay those of
 * the separate runs, where each side's calls can be told apart). */
static int time_alternating(step_fn sa, void *ca, step_fn sb, void *cb, const struct bench_opts *o,
                            struct timing *ta, struct timing *tb)
{
    int n = o->repeats;
    if (n == 0) {
        double pair = (ta->med + tb->med) * 1e-3;
        n = pair > 0 ? (int)(o->budget / pair) : MAX_REPEATS_AUTO;
        n = n < MIN_REPEATS_AUTO ? MIN_REPEATS_AUTO : n > MAX_REPEATS_AUTO ? MAX_REPEATS_AUTO : n;
    }
    double *t = malloc(2 * (size_t)n * sizeof *t);
    if (!t) return -1;
    for (int i = 0; i < n; i++) {
        double t0 = now();
        if (sa(ca)) goto fail;
        double t1 = now();
        if (sb(cb)) goto fail;
        t[i] = (t1 - t0) * 1e3;
        t[n + i] = (now() - t1) * 1e3;
    }
    ta->med = median(t, n), ta->min = t[0], ta->max = t[n - 1], ta->n = n;
    tb->med = median(t + n, n), tb->min = t[n], tb->max = t[2 * n - 1], tb->n = n;
    free(t);
    return 0;
fail:
    free(t);
    return -1;
}

/* ----------------------------------------------------------- one measurement */

static const struct tg_cell *file_cell; /* --cell FILE.cell */
static struct tg_cell *owned_file;

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

static int bench_one(const char *cell_name, const struct config *c, const char *series,
                     const struct bench_opts *o, int with_sgemm, struct result *r)
{
    const int T = c->T, B = c->B, H = c->H, G = cell_gates(cell_name);
    /* --cell FILE.cell: the file's model is timed against the built-in cell of its name */
    const struct tg_cell *cell = file_cell ? file_cell : tg_cell_find(cell_name);
    int mc = tg_manual_cell_from_name(cell_name);
    if (!cell || mc < 0) return cli_fail("bench", "unknown cell '%s'", cell_name), -1;
    memset(r, 0, sizeof *r);
    r->cell = cell_name, r->series = series, r->cfg = *c;
    r->sgemm_ms = -1, r->rss_man_kib = -1;
    struct gemm_shape g[8];
    int ng = step_gemms(c, cell_name, g);
    r->flops = gemm_flops(g, ng);
    r->flops_issue = 3.0 * 2.0 * T * B * (double)(H + H) * G * H;
    r->arena_min = (size_t)T * B * H * cell_min_units(cell_name) * sizeof(float);

    struct tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)o->seed);
    if (with_sgemm) r->sgemm_ms = sgemm_reference(c, cell_name, &rng);

    /* inputs and labels, shared by both implementations */
    const size_t n_in = (size_t)T * B * H;
    double *x = malloc(n_in * sizeof *x);
    float *xf = malloc(n_in * sizeof *xf);
    int32_t *y = malloc((size_t)T * B * sizeof *y);
    struct tg_tensor *mp[6] = {0};
    struct ad_ctx ad = {0};
    struct man_ctx man = {0};
    int rc = -1;
    if (!x || !xf || !y) goto out;
    for (size_t i = 0; i < n_in; i++) xf[i] = (float)(x[i] = tg_rng_normal(&rng));
    for (int i = 0; i < T * B; i++) y[i] = (int32_t)tg_rng_below(&rng, V_CLASSES);

    long mark = rss_mark();
    struct tg_model_config mcfg = {cell, H, 0, H, 1, V_CLASSES, TG_F32, TG_LOSS_XENT_SUM};
    struct tg_optim_config ocfg;
    tg_optim_defaults(TG_OPTIM_SGD, &ocfg);
    ocfg.lr = LR;
    if (tg_model_new(&mcfg, &ad.m) != TG_OK || !(ad.t = tg_tape_new(0))) goto lib_fail;
    tg_tape_set_fusion(ad.t, o->fusion);
    tg_model_init_uniform(ad.m, &rng);
    if (tg_optim_new(&ocfg, ad.m->params, ad.m->n_params, &ad.opt) != TG_OK) goto lib_fail;
    ad.batch = (struct tg_seq_batch){.T = T, .B = B, .x = x, .labels = y};

    if (file_cell) {
        /* the built-in C cell with the same initial weights, timed alternately with the file */
        struct ad_ctx c2 = {0};
        struct tg_model_config m2 = mcfg;
        m2.cell = tg_cell_find(cell_name);
        int ok = tg_model_new(&m2, &c2.m) == TG_OK && (c2.t = tg_tape_new(0)) != NULL;
        for (int p = 0; ok && p < c2.m->n_params; p++) ok = tg_tensor_copy(c2.m->params[p], ad.m->params[p]) == TG_OK;
        if (ok) tg_tape_set_fusion(c2.t, o->fusion);
        ok = ok && tg_optim_new(&ocfg, c2.m->params, c2.m->n_params, &c2.opt) == TG_OK;
        c2.batch = ad.batch;
        struct timing tf, tc;
        ok = ok && time_steps(ad_step, &ad, ad.t, o, 1, &tf) == 0 && time_steps(ad_step, &c2, c2.t, o, 1, &tc) == 0;
        ok = ok && time_alternating(ad_step, &c2, ad_step, &ad, o, &tc, &tf) == 0;
        if (ok) {
            printf("%-8s %-12s file %s: %8.3f ms/step   built-in: %8.3f ms/step   file/built-in %.3f "
                   "(fastest steps: %.3f)   tape %.2f / %.2f MiB   loss %.9g / %.9g\n", cell_name, c->name,
                   tg_cell_path(file_cell), tf.med, tc.med, tf.med / tc.med, tf.min / tc.min,
                   mib((double)ad.arena_bwd), mib((double)c2.arena_bwd), ad.first_loss, c2.first_loss);
            r->ad = tf, r->man = tc, r->have_man = 0;
            r->loss_ad = ad.first_loss, r->nodes = tg_tape_num_nodes(ad.t);
            r->arena_fwd = ad.arena_fwd, r->arena_bwd = ad.arena_bwd, r->arena_cap = tg_tape_arena_capacity(ad.t);
            rc = 0;
        }
        tg_optim_free(c2.opt), tg_tape_free(c2.t), tg_model_free(c2.m);
        if (!ok) goto lib_fail;
        goto out;
    }

    /* the oracle's parameters: copies of the model's initial ones (same order and shapes) */
    int np = tg_manual_num_params((enum tg_manual_cell)mc, 1);
    if (!o->no_manual) {
        if (np != ad.m->n_params || np > 6) {
            cli_fail("bench", "%s: model has %d parameters, the oracle %d", cell_name, ad.m->n_params, np);
            goto out;
        }
        for (int p = 0; p < np; p++) {
            const struct tg_tensor *src = ad.m->params[p];
            mp[p] = tg_param_new(ad.m->names[p], src->rows, src->cols, TG_F32);
            if (!mp[p] || tg_tensor_copy(mp[p], src) != TG_OK) goto lib_fail;
            man.params[p] = mp[p]->data;
            man.grads[p] = mp[p]->grad;
        }
    }

    /* With the oracle, each side is first timed alone on a third of the budget (allocations,
     * memory), then both alternately (the timings reported). */
    struct bench_opts alone = *o;
    if (!o->no_manual) alone.budget = o->budget / 3;
    if (time_steps(ad_step, &ad, ad.t, &alone, 1, &r->ad) != 0) goto lib_fail;
    r->loss_ad = ad.first_loss;
    r->nodes = tg_tape_num_nodes(ad.t);
    r->arena_fwd = ad.arena_fwd, r->arena_bwd = ad.arena_bwd;
    r->arena_cap = tg_tape_arena_capacity(ad.t);
    r->rss_ad_kib = rss_rise(mark);

    if (!o->no_manual) {
        mark = rss_mark();
        man.cell = (enum tg_manual_cell)mc;
        man.d = (struct tg_manual_dims){T, B, H, H, 1, V_CLASSES};
        man.x = xf, man.y = y;
        r->man_ws = tg_manual_workspace_bytes(man.cell, &man.d, sizeof(float));
        man.ws = aligned_alloc(64, (r->man_ws + 63) / 64 * 64);
        if (!man.ws || tg_optim_new(&ocfg, mp, np, &man.opt) != TG_OK) goto lib_fail;
        if (man_step(&man) != 0) goto lib_fail;   /* first step: its loss is the comparison */
        r->loss_man = man.loss;
        if (time_steps(man_step, &man, NULL, &alone, 0, &r->man) != 0) goto lib_fail;
        r->have_man = 1;
        r->rss_man_kib = rss_rise(mark);
        if (time_alternating(ad_step, &ad, man_step, &man, o, &r->ad, &r->man) != 0) goto lib_fail;
    }
    rc = 0;
    goto out;
lib_fail:
    cli_fail("bench", "%s %s: %s", cell_name, c->name, tg_last_error());
out:
    tg_optim_free(ad.opt), tg_tape_free(ad.t), tg_model_free(ad.m);
    tg_optim_free(man.opt);
    free(man.ws);
    for (int p = 0; p < 6; p++) tg_tensor_free(mp[p]);
    free(x), free(xf), free(y);
    return rc;
}

/* ------------------------------------------------------------------- output */


static void fmt_allocs(char *buf, size_t n, double a)
{
    if (a < 0) snprintf(buf, n, "-");
    else if (a == floor(a)) snprintf(buf, n, "%.0f", a);
    else snprintf(buf, n, "%.2f", a);
}

static void print_time_header(void)
{
    printf("%-8s %-12s %10s %17s %9s %7s %7s %6s │ %10s %17s %6s │ %6s %6s\n", "cell", "config",
           "tapegrad", "min–max ms", "tokens/s", "GFLOP/s", "sgemm", "%sgemm", "manual", "min–max ms",
           "ad/man", "allocs", "manual");
    printf("%-8s %-12s %10s %17s %9s %7s %7s %6s │ %10s %17s %6s │ %6s %6s\n", "", "", "ms/step", "",
           "", "", "GFLOP/s", "", "ms/step", "", "", "/step", "allocs");
}

static void print_time_row(const struct result *r)
{
    char mm[40], mm2[40] = "", a1[16], a2[16] = "-";
    snprintf(mm, sizeof mm, "%.3f–%.3f", r->ad.min, r->ad.max);
    double gf = r->flops / (r->ad.med * 1e-3) * 1e-9;
    double sg = r->sgemm_ms > 0 ? r->flops / (r->sgemm_ms * 1e-3) * 1e-9 : NAN;
    double pct = r->sgemm_ms > 0 ? 100.0 * r->sgemm_ms / r->ad.med : NAN;
    fmt_allocs(a1, sizeof a1, r->ad.allocs);
    printf("%-8s %-12s %10.3f %17s %9.0f %7.1f %7.1f %5.0f%% │ ", r->cell, r->cfg.name, r->ad.med, mm,
           r->cfg.T * r->cfg.B / (r->ad.med * 1e-3), gf, sg, pct);
    if (r->have_man) {
        snprintf(mm2, sizeof mm2, "%.3f–%.3f", r->man.min, r->man.max);
        fmt_allocs(a2, sizeof a2, r->man.allocs);
        printf("%10.3f %17s %6.2f │ %6s %6s\n", r->man.med, mm2, r->ad.med / r->man.med, a1, a2);
    } else {
        printf("%10s %17s %6s │ %6s %6s\n", "-", "", "-", a1, a2);
    }
    if (r->ad.sites[0] || (r->have_man && r->man.sites[0]))
        printf("  allocations/step by caller — tapegrad: %s; manual: %s\n", r->ad.sites[0] ? r->ad.sites : "none",
               r->have_man && r->man.sites[0] ? r->man.sites : "none");
    double rel = r->have_man ? fabs(r->loss_ad - r->loss_man) / fmax(fabs(r->loss_man), 1e-30) : 0;
    if (rel > 1e-3)
        printf("  ! %s %s: first-step losses differ: tapegrad %.6g, manual %.6g (relative %.2g)\n",
               r->cell, r->cfg.name, r->loss_ad, r->loss_man, rel);
    fflush(stdout);
}

static void print_memory_table(const struct result *res, int n)
{
    printf("\nTape and memory (per step after warm-up; MiB = 2^20 bytes)\n");
    printf("%-8s %-12s %7s %8s %10s │ %8s %8s %8s %7s │ %8s %7s │ %8s %8s │ %6s\n", "cell", "config",
           "nodes", "µs/node", "(ad−man)", "tape fwd", "fwd+bwd", "minimum", "tape/", "manual", "ws/",
           "RSS rise", "RSS rise", "tape");
    printf("%-8s %-12s %7s %8s %10s │ %8s %8s %8s %7s │ %8s %7s │ %8s %8s │ %6s\n", "", "", "", "",
           "µs/node", "MiB", "MiB", "MiB", "min", "ws MiB", "min", "tapegrad", "manual", "allocs");
    for (int i = 0; i < n; i++) {
        const struct result *r = &res[i];
        char ovh[24] = "-", ws[24] = "-", wsr[24] = "-", rm[24] = "-", ta[16];
        double us = r->ad.med * 1e3 / (double)(r->nodes ? r->nodes : 1);
        if (r->have_man) {
            snprintf(ovh, sizeof ovh, "%.3f", (r->ad.med - r->man.med) * 1e3 / (double)(r->nodes ? r->nodes : 1));
            snprintf(ws, sizeof ws, "%.2f", mib((double)r->man_ws));
            snprintf(wsr, sizeof wsr, "%.2f", (double)r->man_ws / (double)r->arena_min);
            if (r->rss_man_kib >= 0) snprintf(rm, sizeof rm, "%.1f", r->rss_man_kib / 1024.0);
        }
        fmt_allocs(ta, sizeof ta, r->ad.tape_allocs);
        printf("%-8s %-12s %7zu %8.3f %10s │ %8.2f %8.2f %8.2f %7.2f │ %8s %7s │ %8.1f %8s │ %6s\n",
               r->cell, r->cfg.name, r->nodes, us, ovh, mib((double)r->arena_fwd),
               mib((double)r->arena_bwd), mib((double)r->arena_min),
               (double)r->arena_bwd / (double)r->arena_min, ws, wsr, r->rss_ad_kib / 1024.0, rm, ta);
    }
}

static void print_scaling(const struct result *res, int n)
{
    printf("\nScaling in T (lstm, B32, H128): cost per time step should stay flat\n");
    printf("%6s │ %12s %14s %9s │ %12s %14s %9s\n", "T", "tapegrad ms", "ms/(step·T)", "vs T=10",
           "manual ms", "ms/(step·T)", "vs T=10");
    for (int i = 0; i < n; i++) {
        const struct result *r = &res[i];
        double per = r->ad.med / r->cfg.T, per0 = res[0].ad.med / res[0].cfg.T;
        printf("%6d │ %12.3f %14.5f %9.2f │ ", r->cfg.T, r->ad.med, per, per / per0);
        if (r->have_man) {
            double pm = r->man.med / r->cfg.T, pm0 = res[0].man.med / res[0].cfg.T;
            printf("%12.3f %14.5f %9.2f\n", r->man.med, pm, pm / pm0);
        } else {
            printf("%12s %14s %9s\n", "-", "-", "-");
        }
    }
}

static void json_timing(FILE *f, const char *key, const struct timing *t, const struct result *r)
{
    fprintf(f, "\"%s\": {\"median_ms\": %.6g, \"min_ms\": %.6g, \"max_ms\": %.6g, \"repeats\": %d, "
            "\"tokens_per_s\": %.6g, \"gflops\": %.6g, \"pct_sgemm\": %.6g, \"allocs_per_step\": ",
            key, t->med, t->min, t->max, t->n, r->cfg.T * r->cfg.B / (t->med * 1e-3),
            r->flops / (t->med * 1e-3) * 1e-9, r->sgemm_ms > 0 ? 100.0 * r->sgemm_ms / t->med : -1.0);
    if (t->allocs < 0) fprintf(f, "null");
    else fprintf(f, "%.6g", t->allocs);
    fprintf(f, ", \"alloc_sites\": \"%s\"}", t->sites);
}

static int write_json(struct tg_atomic *a, const struct result *res, int n,
                      const struct bench_opts *o, double peak, double check)
{
    FILE *f = a->f;
    const char *core = getenv("OPENBLAS_CORETYPE");
    static const char *const gemm_names[] = {"auto", "openblas", "xsmm"};
    fprintf(f, "{\"tool\": \"tapegrad bench\", \"gemm\": \"%s\", \"libxsmm\": %s, \"clock\": \"%s\", ",
            gemm_names[tg_gemm_get_backend()], tg_gemm_have_xsmm() ? "true" : "false",
            bench_clock_cpu ? "cpu" : "wall");
    fprintf(f, "\"threads\": %d, \"blas_flavour\": \"%s\", "
            "\"openblas_parallel\": %d, \"openblas_core\": \"%s\", \"openblas_coretype_env\": %s%s%s, "
            "\"sgemm_1024_gflops\": %.6g, \"sgemm_check_rel_err\": %.3g, \"malloc_counted\": %s,\n \"flops\": \"GEMMs a step needs: "
            "per step fwd 2B(I+H)GH, bwd dW 2B(I+H)GH + dh 2BH·GH (t>=1); output 6TBHV\",\n"
            " \"results\": [\n", o->threads, TG_BLAS_FLAVOUR, openblas_get_parallel(),
            openblas_get_corename(), core ? "\"" : "", core ? core : "null", core ? "\"" : "", peak, check,
            malloc_calls ? "true" : "false");
    for (int i = 0; i < n; i++) {
        const struct result *r = &res[i];
        fprintf(f, "  {\"series\": \"%s\", \"cell\": \"%s\", \"config\": \"%s\", \"T\": %d, \"B\": %d, "
                "\"H\": %d, \"V\": %d, \"threads\": %d, \"flops\": %.6g, \"flops_issue\": %.6g, "
                "\"sgemm_ms\": %.6g, \"sgemm_gflops\": %.6g,\n   ", r->series, r->cell, r->cfg.name,
                r->cfg.T, r->cfg.B, r->cfg.H, V_CLASSES, o->threads, r->flops, r->flops_issue,
                r->sgemm_ms, r->sgemm_ms > 0 ? r->flops / (r->sgemm_ms * 1e-3) * 1e-9 : -1.0);
        json_timing(f, "tapegrad", &r->ad, r);
        fprintf(f, ",\n   ");
        if (r->have_man) json_timing(f, "manual", &r->man, r);
        else fprintf(f, "\"manual\": null");
        fprintf(f, ",\n   \"autodiff_over_manual\": %.6g, \"tape_allocs_per_step\": %.6g, "
                "\"nodes\": %zu, \"arena_fwd_bytes\": %zu, \"arena_bytes\": %zu, "
                "\"arena_capacity_bytes\": %zu, \"arena_min_bytes\": %zu, \"manual_ws_bytes\": %zu, "
                "\"rss_rise_kib_tapegrad\": %ld, \"rss_rise_kib_manual\": %ld, \"loss_tapegrad\": %.9g, "
                "\"loss_manual\": %.9g}%s\n", r->have_man ? r->ad.med / r->man.med : -1.0,
                r->ad.tape_allocs, r->nodes, r->arena_fwd, r->arena_bwd, r->arena_cap, r->arena_min,
                r->man_ws, r->rss_ad_kib, r->rss_man_kib, r->loss_ad, r->loss_man,
                i + 1 < n ? "," : "");
    }
    fprintf(f, " ]\n}\n");
    if (tg_atomic_commit(a) != TG_OK) return cli_fail("bench", "--json: %s", tg_last_error()), -1;
    return 0;
}

/* ------------------------------------------------------------------- command */

/* Split a comma list in place. −1: more than max items; −2: an empty item (a trailing or
 * doubled comma, which strtok would have skipped silently). */
static int split_list(char *s, const char **items, int max)
{
    int n = 0;
    for (char *tok = s;; tok++) {
        char *comma = strchr(tok, ',');
        if (comma) *comma = '\0';
        if (!*tok) return -2;
        if (n == max) return -1;
        items[n++] = tok;
        if (!comma) return n;
        tok = comma;
    }
}

static int list_fail(const char *flag, const char *arg, int n)
{
    if (n == -2) return cli_fail("bench", "%s '%s' has an empty item (a trailing or doubled comma?)", flag, arg);
    return cli_fail("bench", "%s: more than %d items", flag, MAX_CONFIGS);
}

static int bench_main(int argc, char **argv)
{
    const char *cell_arg = "all", *config_arg = "all", *json = NULL;
    struct bench_opts o = {.threads = 1, .repeats = 0, .warmup = 2, .seed = 1, .budget = 1.0,
                           .fusion = TG_FUSION_ON};
    const char *fusion_arg = "on", *gemm_arg = "auto", *clock_arg = "wall";
    const struct cli_flag flags[] = {
        {"cell", CLI_STR, &cell_arg, "lstm, gru, rnn_tanh, a comma list, or all (default); or FILE.cell (timed against the built-in cell of its name)", 1, 0},
        {"config", CLI_STR, &config_arg, "T<steps>B<batch>H<hidden>, a comma list, all (default: "
                                         "T50B32H128,T50B32H256,T100B64H512,T35B20H1024,T100B1H8) or none", 1, 0},
        {"threads", CLI_INT, &o.threads, "OpenMP and OpenBLAS threads (default 1)", 1, 256},
        {"repeats", CLI_INT, &o.repeats, "timed steps after warm-up (default 0: about --budget "
                                         "seconds' worth, 20 to 100)", 0, 100000},
        {"warmup", CLI_INT, &o.warmup, "untimed steps first (default 2; autodiff runs at least 1)", 0, 10000},
        {"budget", CLI_DOUBLE, &o.budget, "seconds of timed steps per measurement when --repeats is 0 "
                                          "(default 1)", 0.01, 3600},
        {"json", CLI_STR, &json, "also write the results to this JSON file", 1, 0},
        {"no-manual", CLI_BOOL, &o.no_manual, "skip the hand-written BPTT oracles", 1, 0},
        {"scaling", CLI_BOOL, &o.scaling, "also time lstm B32 H128 at T = 10, 100, 1000", 1, 0},
        {"seed", CLI_INT, &o.seed, "seed of weights, inputs and labels (default 1)", 0, 2147483647},
        {"fusion", CLI_STR, &fusion_arg, "on (default), lean (recompute σ/tanh in backward: less "
                                         "memory) or off (one node per op)", 1, 0},
        {"gemm", CLI_STR, &gemm_arg, "auto (default: libxsmm for the small per-step products where "
                                     "it was measured faster, OpenBLAS for the rest), openblas or xsmm", 1, 0},
        {"clock", CLI_STR, &clock_arg, "wall (default) or cpu: the process's CPU time, which a "
                                       "loaded machine's time slicing does not inflate", 1, 0},
    };
    const int nflags = (int)(sizeof flags / sizeof flags[0]);
    int pr = cli_parse("bench", "[flags]   time training steps (see bench/README.md)", argc, argv,
                       flags, nflags);
    if (pr != 0) return pr < 0 ? 1 : 0;
    if (strcmp(fusion_arg, "on") == 0) o.fusion = TG_FUSION_ON;
    else if (strcmp(fusion_arg, "lean") == 0) o.fusion = TG_FUSION_LEAN;
    else if (strcmp(fusion_arg, "off") == 0) o.fusion = TG_FUSION_OFF;
    else return cli_fail("bench", "--fusion: expected on, lean or off, got '%s'", fusion_arg);
    if (strcmp(clock_arg, "wall") == 0) bench_clock_cpu = 0;
    else if (strcmp(clock_arg, "cpu") == 0) bench_clock_cpu = 1;
    else return cli_fail("bench", "--clock: expected wall or cpu, got '%s'", clock_arg);
    if (strcmp(gemm_arg, "auto") == 0) tg_gemm_set_backend(TG_GEMM_AUTO);
    else if (strcmp(gemm_arg, "openblas") == 0) tg_gemm_set_backend(TG_GEMM_OPENBLAS);
    else if (strcmp(gemm_arg, "xsmm") == 0 && tg_gemm_have_xsmm()) tg_gemm_set_backend(TG_GEMM_XSMM);
    else if (strcmp(gemm_arg, "xsmm") == 0)
        return cli_fail("bench", "--gemm xsmm: this tapegrad was built without libxsmm");
    else return cli_fail("bench", "--gemm: expected auto, openblas or xsmm, got '%s'", gemm_arg);

    /* cells and configs */
    const char *cells[MAX_CELLS];
    int ncell = 0;
    char cbuf[256], gbuf[1024];
    snprintf(cbuf, sizeof cbuf, "%s", strcmp(cell_arg, "all") == 0 ? "lstm,gru,rnn_tanh" : cell_arg);
    const char *items[MAX_CONFIGS];
    int n = split_list(cbuf, items, MAX_CONFIGS);
    if (n < 0) return list_fail("--cell", cell_arg, n);
    for (int i = 0; i < n; i++) {
        int k = -1;
        for (int j = 0; j < MAX_CELLS; j++)
            if (strcmp(items[i], STD_CELLS[j]) == 0) k = j;
        if (k < 0 && n == 1 && cli_has_ext(items[i], ".cell")) {
            file_cell = cli_cell("bench", items[i], &owned_file);
            if (!file_cell) return 1;
            for (int j = 0; j < MAX_CELLS; j++)
                if (strcmp(file_cell->name, STD_CELLS[j]) == 0) k = j;
            if (k < 0)
                return cli_fail("bench", "--cell %s: bench times a file against the built-in cell of "
                                "its name (lstm, gru, rnn_tanh); this file is cell '%s'", items[i], file_cell->name);
        }
        if (k < 0) return cli_fail("bench", "--cell: unknown cell '%s' (choose from lstm, gru, rnn_tanh, all)", items[i]);
        if (ncell < MAX_CELLS) cells[ncell++] = STD_CELLS[k];
    }
    if (ncell == 0) return cli_fail("bench", "--cell: no cell given");
    struct config cfgs[MAX_CONFIGS];
    int ncfg = 0;
    if (strcmp(config_arg, "none") != 0) {
        if (strcmp(config_arg, "all") == 0) {
            snprintf(gbuf, sizeof gbuf, "%s,%s,%s,%s,%s", STD_CONFIGS[0], STD_CONFIGS[1],
                     STD_CONFIGS[2], STD_CONFIGS[3], STD_CONFIGS[4]);
        } else if (snprintf(gbuf, sizeof gbuf, "%s", config_arg) >= (int)sizeof gbuf) {
            return cli_fail("bench", "--config: list too long");
        }
        n = split_list(gbuf, items, MAX_CONFIGS);
        if (n < 0) return list_fail("--config", config_arg, n);
        for (int i = 0; i < n; i++) {
            int e = parse_config(items[i], &cfgs[ncfg]);
            if (e == -1)
                return cli_fail("bench", "--config: '%s' is not of the form T<steps>B<batch>H<hidden> "
                                "with positive sizes (e.g. T50B32H128)", items[i]);
            if (e == -2) return cli_fail("bench", "--config: '%s' is too large for this benchmark", items[i]);
            ncfg++;
        }
    }
    if (ncfg == 0 && !o.scaling) return cli_fail("bench", "--config none without --scaling: nothing to run");

    /* Opened now, not after minutes of measuring; written whole at the end or not at all
     * (a temporary file renamed over it), so a failure leaves no empty or partial file. */
    struct tg_atomic jf = {0};
    if (json && tg_atomic_open(&jf, NULL, json) != TG_OK) return cli_fail("bench", "--json: %s", tg_last_error());

    /* threads: our OpenMP loops and OpenBLAS's pool, the same count */
    omp_set_num_threads(o.threads);
    openblas_set_num_threads(o.threads);
    find_malloc_counter();
    /* fixed mmap threshold: freed big blocks go back to the kernel, so each config's peak-RSS
     * rise is its own (glibc's sliding threshold would keep them on the heap) */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);

    struct tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)o.seed);
    int par = openblas_get_parallel();
    const char *coretype = getenv("OPENBLAS_CORETYPE"), *l2 = getenv("OPENBLAS_L2_SIZE");
    printf("tapegrad bench — training step = forward + summed cross-entropy (V=%d) + backward + "
           "SGD, float32, 1 layer, I = H\n", V_CLASSES);
    printf("threads %d (OpenMP %s, max threads %d; OpenBLAS threads %d); fusion %s; gemm %s "
           "(libxsmm %s); clock %s\n", o.threads, BENCH_OPENMP ? "on" : "off", omp_get_max_threads(),
           openblas_get_num_threads(), fusion_arg, gemm_arg, tg_gemm_have_xsmm() ? "built in" : "absent",
           bench_clock_cpu ? "process CPU time" : "wall");
    printf("BLAS: %s; flavour %s (openblas_get_parallel() = %d: %s); core %s; OPENBLAS_CORETYPE=%s%s%s\n",
           openblas_get_config(), TG_BLAS_FLAVOUR, par,
           par == 2 ? "OpenMP" : par == 1 ? "pthreads" : "sequential", openblas_get_corename(),
           coretype ? coretype : "(unset)", l2 ? ", OPENBLAS_L2_SIZE=" : "", l2 ? l2 : "");
    double check = sgemm_check(&rng), peak = sgemm_square(1024, &rng);
    if (check > 1e-5)
        printf("! cblas_sgemm is WRONG on this core (relative error %.2g against a float64 loop): "
               "timings below are of a broken kernel\n", check);
    printf("sgemm 1024×1024×1024: %.1f GFLOP/s (results checked: relative error %.1g).  "
           "allocations: %s\n", peak, check,
           malloc_calls ? "counted (malloc_count.so preloaded)"
                        : "not counted (preload bench/malloc_count.so, as bench/run_bench.sh does)");
    printf("GFLOP/s counts the GEMMs a step needs (fwd 2B(I+H)GH and bwd dW 2B(I+H)GH + dh 2BH·GH "
           "per step, output layer 6TBHV);\n%%sgemm = time of those GEMMs as cblas_sgemm at the "
           "per-step shapes ÷ step time. Repeats: %s.\n\n",
           o.repeats ? "fixed" : "about --budget s of steps, 20 to 100");

    int nres = ncfg * ncell, nscal = o.scaling ? (int)(sizeof SCALING_T / sizeof SCALING_T[0]) : 0;
    struct result *res = calloc((size_t)(nres + nscal + 1), sizeof *res);
    if (!res) {
        tg_atomic_abort(&jf);
        return cli_fail("bench", "out of memory");
    }
    int rc = 0, k = 0;
    if (nres) print_time_header();
    for (int ci = 0; ci < ncell && rc == 0; ci++)
        for (int gi = 0; gi < ncfg && rc == 0; gi++) {
            if (bench_one(cells[ci], &cfgs[gi], "main", &o, 1, &res[k]) != 0) rc = 1;
            else print_time_row(&res[k++]);
        }
    if (rc == 0 && nres) print_memory_table(res, k);
    for (int si = 0; si < nscal && rc == 0; si++) {
        struct config c;
        char name[40];
        snprintf(name, sizeof name, "T%dB32H128", SCALING_T[si]);
        parse_config(name, &c);
        if (bench_one("lstm", &c, "scaling", &o, 0, &res[k]) != 0) rc = 1;
        else k++;
    }
    if (rc == 0 && nscal) print_scaling(res + nres, nscal);
    if (rc == 0) {
        printf("\nprocess threads at the end: %d\n", (int)proc_kib("Threads"));
        if (jf.f && write_json(&jf, res, k, &o, peak, check) != 0) rc = 1;
    }
    tg_atomic_abort(&jf); /* after a commit: nothing left to do */
    free(res);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    int rc = bench_main(argc, argv);
    tg_cell_free(owned_file);
    owned_file = NULL;
    file_cell = NULL;
    return rc;
}
