/* cmd_flow.c — `tapegrad flow`: the gradient flow of one batch, step by step and layer by layer
 * (models/flow.c computes it; tools/flow_out.c prints and draws it).
 *
 *   tapegrad flow --cell lstm --task adding --length 50            table on the terminal
 *   tapegrad flow --cell gru --layers 2 --csv f.csv --json f.json --out f.png
 *   tapegrad flow --compare rnn_tanh,lstm,gru --task adding --length 100 --out flow.png
 *   tapegrad flow --bench 20 --length 50 --batch 32 --hidden 128    cost of the ledger / anomaly mode
 *
 * The batch is the task's first batch from --seed, through a model initialised as `train`
 * initialises it (or loaded from --checkpoint F). The tape is recorded with fusion off, so that
 * every σ and tanh is a node whose saturation can be read; the gradients are the same as with
 * fusion on (tested bit for bit in test_fusion). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "cli.h"
#include "flow_out.h"
#include "tapegrad_train.h"

struct flow_opts {
    const char *cell, *task, *data, *dtype, *checkpoint, *loss, *csv, *json, *out, *compare, *ledger;
    int sketch;                   /* from --ledger: 0 exact, else its buckets */
    int length, batch, hidden, layers, every, exact_max, probes, no_jacobian, bench;
    long seed;
};

/* Model and the task's first batch, as `train` would build them. */
struct flow_setup {
    struct tg_trainer *tr;
    struct tg_batch b;
    struct tg_seq_batch sb;
    int32_t *labels;
};

static void setup_free(struct flow_setup *s)
{
    tg_batch_free(&s->b);
    free(s->labels);
    tg_trainer_free(s->tr);
    memset(s, 0, sizeof *s);
}

static int setup_new(const struct flow_opts *o, const char *cell, int loss_last, struct flow_setup *s)
{
    memset(s, 0, sizeof *s);
    struct tg_train_config c = {0};
    c.cell = cell, c.task = o->task, c.data = o->data, c.length = o->length, c.batch = o->batch;
    c.hidden = o->hidden, c.layers = o->layers, c.dtype = o->dtype, c.seed = (uint64_t)o->seed;
    c.resume = o->checkpoint;
    c.eval_size = 1;
    if (tg_trainer_new(&c, &s->tr) != TG_OK) return -1;
    struct tg_task *task = tg_trainer_task(s->tr);
    const struct tg_train_config *rc = tg_trainer_config(s->tr);
    struct tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)o->seed ^ 0xf10f10f1ULL);
    if (tg_batch_alloc(task, rc->batch, &s->b) != TG_OK || tg_task_next_batch(task, &rng, &s->b) != TG_OK)
        return -1;
    int T = s->b.T, B = s->b.B;
    s->sb = (struct tg_seq_batch){.T = T, .B = B, .x = s->b.x, .tokens = s->b.x ? NULL : s->b.tokens,
                                  .labels = s->b.labels, .target = s->b.target};
    if (s->b.labels && loss_last) {
        /* the loss of the last step only: every earlier position unlabelled */
        s->labels = malloc(sizeof *s->labels * (size_t)T * B);
        if (!s->labels) return tg_error(TG_ERR_NOMEM, "out of memory"), -1;
        for (int i = 0; i < T * B; i++) s->labels[i] = i >= (T - 1) * B ? s->b.labels[i] : -1;
        s->sb.labels = s->labels;
    }
    return 0;
}

/* Record, backward with the ledger, saturation, Jacobian. */
static int analyse(const struct flow_opts *o, struct flow_setup *s, struct flow_run *r)
{
    struct tg_model *m = tg_trainer_model(s->tr);
    struct tg_tape *t = tg_tape_new(0);
    if (!t) return -1;
    tg_tape_set_fusion(t, TG_FUSION_OFF);
    struct tg_seq_result res;
    int rc = -1;
    if (tg_flow_new(m, s->sb.T, s->sb.B, &r->f) != TG_OK) goto out;
    r->f->sketch = o->sketch, r->f->sketch_seed = (uint64_t)o->seed;
    r->m = m;
    if (tg_model_forward_from(m, t, &s->sb, NULL, &res) != TG_OK) goto out;
    r->loss = tg_get(res.loss, 0, 0);
    if (tg_flow_begin(r->f, t, &res) != TG_OK || tg_backward(t, res.loss) != TG_OK ||
        tg_flow_end(r->f, t, &res) != TG_OK || tg_flow_saturation(r->f, t) != TG_OK)
        goto out;
    r->jacobian = !o->no_jacobian;
    r->probes = o->probes > 0 ? o->probes : 32;
    if (r->jacobian &&
        tg_flow_jacobian(r->f, m, t, &s->sb, o->exact_max, r->probes, (uint64_t)o->seed) != TG_OK)
        goto out;
    rc = 0;
out:
    tg_tape_free(t);
    return rc;
}

/* Seconds of CPU time this process has used: on a loaded machine a step's wall time includes
 * the time other processes held the core; its CPU time does not (with one thread they agree
 * on a quiet machine). */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* --bench N: a training step (forward, summed cross-entropy over V = 64 classes, backward,
 * SGD; I = H, as `tapegrad bench`) timed plain, with the ledger on, and in anomaly mode,
 * interleaved A B C A B C in one process; medians of wall and of CPU time. */
static int bench(const struct flow_opts *o)
{
    int T = o->length ? o->length : 50, B = o->batch ? o->batch : 32, H = o->hidden ? o->hidden : 128;
    int V = 64, N = o->bench;
    const struct tg_cell *cell = tg_cell_find(o->cell ? o->cell : "lstm");
    if (!cell) return cli_fail("flow", "unknown cell '%s' (one of %s)", o->cell, tg_cell_names());
    enum tg_dtype dt = o->dtype && strcmp(o->dtype, "f64") == 0 ? TG_F64 : TG_F32;
    struct tg_model_config mc = {.cell = cell, .input = H, .hidden = H, .layers = o->layers ? o->layers : 1,
                                 .outputs = V, .dtype = dt, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    if (tg_model_new(&mc, &m) != TG_OK) return cli_fail("flow", "%s", tg_last_error());
    struct tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)o->seed);
    tg_model_init_uniform(m, &rng);
    double *x = malloc(sizeof *x * (size_t)T * B * H);
    int32_t *lab = malloc(sizeof *lab * (size_t)T * B);
    double *ms = malloc(sizeof *ms * 8 * (size_t)N), *cs = ms + 4 * (size_t)N;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_flow *f = NULL;
    if (!x || !lab || !ms || !t || tg_flow_new(m, T, B, &f) != TG_OK) return cli_fail("flow", "out of memory");
    f->sketch = o->sketch, f->sketch_seed = (uint64_t)o->seed;
    for (size_t i = 0; i < (size_t)T * B * H; i++) x[i] = tg_rng_normal(&rng);
    for (int i = 0; i < T * B; i++) lab[i] = (int32_t)tg_rng_below(&rng, V);
    struct tg_seq_batch sb = {.T = T, .B = B, .x = x, .labels = lab};
    size_t allocs = 0;
    for (int it = -2; it < N; it++)
        for (int v = 0; v < 3; v++) {
            double t0 = now(), c0 = cpu_now();
            struct tg_seq_result res;
            tg_tape_reset(t);
            tg_tape_set_anomaly(t, v == 2);
            tg_model_zero_grad(m);
            if (tg_model_forward_from(m, t, &sb, NULL, &res) != TG_OK) return cli_fail("flow", "%s", tg_last_error());
            double l0 = now(), k0 = cpu_now();
            if ((v == 1 && tg_flow_begin(f, t, &res) != TG_OK)) return cli_fail("flow", "%s", tg_last_error());
            double l1 = now(), k1 = cpu_now();
            if (tg_backward(t, res.loss) != TG_OK) return cli_fail("flow", "%s", tg_last_error());
            double l2 = now(), k2 = cpu_now();
            if (v == 1 && tg_flow_end(f, t, &res) != TG_OK) return cli_fail("flow", "%s", tg_last_error());
            if (v == 1 && it >= 0) ms[3 * N + it] = 1e3 * ((l1 - l0) + (now() - l2));
            if (v == 1 && it >= 0) cs[3 * N + it] = 1e3 * ((k1 - k0) + (cpu_now() - k2));
            for (int p = 0; p < m->n_params; p++) { /* SGD, lr 1e-6: the weights barely move */
                struct tg_tensor *w = m->params[p];
                for (size_t i = 0; i < tg_numel(w); i++)
                    if (dt == TG_F64) ((double *)w->data)[i] -= 1e-6 * ((double *)w->grad)[i];
                    else ((float *)w->data)[i] -= 1e-6f * ((float *)w->grad)[i];
            }
            if (it >= 0) ms[v * N + it] = 1e3 * (now() - t0), cs[v * N + it] = 1e3 * (cpu_now() - c0);
            if (it == -1 && v == 2) allocs = tg_tape_heap_allocs(t);
        }
    size_t allocs_after = tg_tape_heap_allocs(t);
    for (int clk = 0; clk < 2; clk++) {
        double *v = clk ? cs : ms;
        double a = median(v, N), b = median(v + N, N), c = median(v + 2 * N, N), own = median(v + 3 * N, N);
        if (!clk)
            printf("%s T%d·B%d·H%d L%d %s, ledger %s, %d steps each, interleaved; median ms per training step\n",
                   cell->name, T, B, H, mc.layers, tg_dtype_name(dt), o->sketch ? "sketch" : "exact", N);
        printf("  %s\n  plain          %9.3f\n  ledger on      %9.3f  (%+.1f%%; tg_flow_begin + "
               "tg_flow_end alone %.3f ms = %.1f%% of plain)\n  anomaly mode   %9.3f  (%.2fx)\n",
               clk ? "CPU time (the process's; steadier on a loaded machine):" : "wall time:",
               a, b, 100 * (b - a) / a, own, 100 * own / a, c, c / a);
    }
    printf("  tape heap allocations after warm-up: %zu\n", allocs_after - allocs);
    tg_flow_free(f);
    tg_tape_free(t);
    tg_model_free(m);
    free(x);
    free(lab);
    free(ms);
    return 0;
}

int cmd_flow(int argc, char **argv)
{
    struct flow_opts o = {.seed = 1};
    const struct cli_flag flags[] = {
        {"cell", CLI_STR, &o.cell, "cell (default lstm)", 1, 0},
        {"task", CLI_STR, &o.task, "reber, adding, copy, text (default adding)", 1, 0},
        {"length", CLI_INT, &o.length, "adding/copy T, reber's longest string", 1, 100000},
        {"data", CLI_STR, &o.data, "text: the file to model", 1, 0},
        {"batch", CLI_INT, &o.batch, "sequences in the batch (default 32)", 1, 1 << 20},
        {"hidden", CLI_INT, &o.hidden, "H (default 64)", 1, 1 << 16},
        {"layers", CLI_INT, &o.layers, "L (default 1)", 1, 64},
        {"seed", CLI_LONG, &o.seed, "initialisation and batch (default 1)", 0, 9.2e18},
        {"dtype", CLI_STR, &o.dtype, "f32 or f64 (default f32)", 1, 0},
        {"checkpoint", CLI_STR, &o.checkpoint, "weights (and configuration) from a train checkpoint", 1, 0},
        {"loss", CLI_STR, &o.loss, "all (every step's loss, as trained) or last (the last step's only)", 1, 0},
        {"csv", CLI_STR, &o.csv, "write one row per step and layer", 1, 0},
        {"json", CLI_STR, &o.json, "write everything as JSON", 1, 0},
        {"out", CLI_STR, &o.out, "plot to FILE.png or FILE.svg", 1, 0},
        {"compare", CLI_STR, &o.compare, "a,b[:ckpt],…: ‖∂L_T/∂h_t‖ of each cell (loss last), one table/plot", 1, 0},
        {"every", CLI_INT, &o.every, "table: every N-th step (default: ~25 rows)", 1, 1 << 20},
        {"exact-max", CLI_INT, &o.exact_max, "‖∂h_T/∂h_t‖ exactly up to this H (default 64), else estimated", 1, 1 << 16},
        {"probes", CLI_INT, &o.probes, "seeds of the estimator (default 32)", 1, 1 << 16},
        {"no-jacobian", CLI_BOOL, &o.no_jacobian, "skip ‖∂h_T/∂h_t‖ (H extra backward passes)", 1, 0},
        {"ledger", CLI_STR, &o.ledger, "per-step weight-gradient norms: exact (default) or sketch[:K], estimated with K buckets (default 16)", 1, 0},
        {"bench", CLI_INT, &o.bench, "time N training steps plain / with the ledger / in anomaly mode", 1, 100000},
    };
    int pr = cli_parse("flow", "[flags]", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]));
    if (pr) return pr < 0 ? 1 : 0;
    if (o.ledger && strcmp(o.ledger, "exact") != 0) {
        char *end = NULL;
        long k = 16;
        if (strncmp(o.ledger, "sketch", 6) != 0 || (o.ledger[6] && o.ledger[6] != ':') ||
            (o.ledger[6] == ':' && ((k = strtol(o.ledger + 7, &end, 10)) < 1 || k > 4096 || *end)))
            return cli_fail("flow", "--ledger must be 'exact', 'sketch' or 'sketch:K' with 1 <= K <= 4096, got '%s'", o.ledger);
        o.sketch = (int)k;
    }
    if (o.bench) return bench(&o);
    if (!o.task && !o.checkpoint) o.task = "adding";
    int loss_last = 0;
    if (o.loss && strcmp(o.loss, "last") == 0) loss_last = 1;
    else if (o.loss && strcmp(o.loss, "all") != 0)
        return cli_fail("flow", "--loss must be 'all' or 'last', got '%s'", o.loss);
    char err[512];
    if (o.out && !cli_has_ext(o.out, ".png") && !cli_has_ext(o.out, ".svg"))
        return cli_fail("flow", "--out must end in .png or .svg, got '%s'", o.out);

    if (o.compare) {
        struct flow_run runs[16];
        struct flow_setup setups[16];
        int n = 0, rc = 0;
        char list[512];
        snprintf(list, sizeof list, "%s", o.compare);
        for (char *save = NULL, *c = strtok_r(list, ",", &save); c && n < 16; c = strtok_r(NULL, ",", &save)) {
            /* cell or cell:checkpoint (a trained model of that cell) */
            struct flow_opts oc = o;
            char *colon = strchr(c, ':');
            if (colon) *colon = '\0', oc.checkpoint = colon + 1;
            if (!tg_cell_find(c)) return cli_fail("flow", "unknown cell '%s' (one of %s)", c, tg_cell_names());
            memset(&runs[n], 0, sizeof runs[n]);
            if (setup_new(&oc, c, 1, &setups[n]) != 0) return cli_fail("flow", "%s", tg_last_error());
            runs[n].cell = tg_cell_find(c)->name;
            runs[n].task = tg_trainer_config(setups[n].tr)->task;
            runs[n].loss_last = 1;
            oc.no_jacobian = 1;
            if (analyse(&oc, &setups[n], &runs[n]) != 0) return cli_fail("flow", "%s: %s", c, tg_last_error());
            n++;
        }
        if (n == 0) return cli_fail("flow", "--compare needs a list of cells");
        const struct tg_flow *f0 = runs[0].f;
        printf("‖∂L_T/∂h_t‖ (top layer; loss of the last step only) on %s, T=%d B=%d H=%d\n%6s",
               runs[0].task, f0->T, f0->B, f0->H, "t");
        for (int i = 0; i < n; i++) printf(" %12s", runs[i].cell);
        printf("\n");
        int every = o.every ? o.every : f0->T > 25 ? (f0->T + 24) / 25 : 1;
        for (int t = 0; t < f0->T; t++) {
            if (t % every && t != f0->T - 1) continue;
            printf("%6d", t + 1);
            for (int i = 0; i < n; i++) {
                const struct tg_flow *f = runs[i].f;
                printf(" %12.3e", t < f->T ? tg_flow_at(f->grad_h, f, f->L - 1, t) : NAN);
            }
            printf("\n");
        }
        if (o.out && flow_plot_compare(o.out, runs, n, err, sizeof err) != 0) rc = cli_fail("flow", "%s", err);
        else if (o.out) printf("wrote %s\n", o.out);
        for (int i = 0; i < n; i++) tg_flow_free(runs[i].f), setup_free(&setups[i]);
        return rc;
    }

    struct flow_setup s;
    struct flow_run r = {0};
    if (setup_new(&o, o.cell, loss_last, &s) != 0) return cli_fail("flow", "%s", tg_last_error());
    const struct tg_train_config *rc = tg_trainer_config(s.tr);
    r.cell = rc->cell_def ? rc->cell_def->name : rc->cell;
    r.task = rc->task;
    /* adding's loss is the MSE of the last step's output: --loss last or not */
    r.loss_last = loss_last || tg_trainer_model(s.tr)->cfg.loss == TG_LOSS_MSE_LAST;
    int status = 0;
    if (analyse(&o, &s, &r) != 0) {
        status = cli_fail("flow", "%s", tg_last_error());
    } else {
        flow_print_table(stdout, &r, o.every);
        if (o.csv && flow_write_csv(o.csv, &r, err, sizeof err) != 0) status = cli_fail("flow", "%s", err);
        if (o.json && flow_write_json(o.json, &r, err, sizeof err) != 0) status = cli_fail("flow", "%s", err);
        if (o.out && flow_plot(o.out, &r, err, sizeof err) != 0) status = cli_fail("flow", "%s", err);
        if (!status && (o.csv || o.json || o.out))
            printf("wrote%s%s%s%s%s%s\n", o.csv ? " " : "", o.csv ? o.csv : "", o.json ? " " : "",
                   o.json ? o.json : "", o.out ? " " : "", o.out ? o.out : "");
    }
    tg_flow_free(r.f);
    setup_free(&s);
    return status;
}
