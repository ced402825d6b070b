/* cmd_train.c — `tapegrad train`: flags → tg_train_config, a progress display, Ctrl-C handling,
 * and the closing summary. The training itself is models/train.c.
 *
 * With no flags it trains an LSTM on the embedded Reber grammar until a held-out set of 512
 * strings is solved (long-range accuracy and grammaticality ≥ 0.99), which takes well under a
 * minute on two cores. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "plot.h"
#include "tg_config.h"
#include "tapegrad_dist.h"
#include "tapegrad_train.h"

#if TG_HAVE_OPENMP
#include <omp.h>
#endif

void openblas_set_num_threads(int); /* OpenBLAS's; cblas.h does not always declare it */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1; /* the loop stops after the current step and writes its checkpoint */
}

struct display {
    int tty, compare;
    long print_every;
    double last_draw;
    const char *cell;     /* the cell being trained (compare: each in turn) */
};

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void hms(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void rate(double r, char *buf, size_t n)
{
    if (r >= 1e6) snprintf(buf, n, "%.1fM", r / 1e6);
    else if (r >= 1e3) snprintf(buf, n, "%.1fk", r / 1e3);
    else snprintf(buf, n, "%.0f", r);
}

static void print_metrics(FILE *f, const char *label, const struct tg_metrics *m)
{
    if (!m || m->n == 0) return;
    fprintf(f, "  %s", label);
    for (int i = 0; i < m->n; i++) fprintf(f, " %s %.4f", m->names[i], m->values[i]);
}

static void progress(const struct tg_train_progress *p, void *ctx)
{
    struct display *d = ctx;
    double now = wall();
    char eta[32], tps[32];
    double per_step = p->step > p->start_step ? p->seconds / (double)(p->step - p->start_step) : 0;
    hms(per_step * (double)(p->total - p->step), eta, sizeof eta);
    rate(p->tokens_per_s, tps, sizeof tps);
    const char *mname = p->train->n ? p->train->names[0] : "";
    const char *held = "held-out";
    char prefix[48] = "";
    if (d->compare) snprintf(prefix, sizeof prefix, "%-13s ", p->cell);
    if (d->tty && d->compare && d->cell && strcmp(d->cell, p->cell) != 0) fputc('\n', stderr);
    d->cell = p->cell;
    if (d->tty) {
        if (now - d->last_draw < 0.1 && p->step != p->total && !p->eval) return;
        d->last_draw = now;
        char bar[21];
        int fill = (int)(20.0 * (double)p->step / (double)(p->total ? p->total : 1));
        for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
        bar[20] = '\0';
        fprintf(stderr, "\r\033[K%s[%s] %ld/%ld  loss %.4f  %s %.3f", prefix, bar, p->step,
                p->total, p->smooth_loss, mname, p->smooth_metric);
        if (p->last_eval) fprintf(stderr, " (%s %.3f)", held, p->last_eval->values[0]);
        fprintf(stderr, "  %s tok/s  ETA %s%s", tps, p->until_solved ? "<= " : "", eta);
        fflush(stderr);
        return;
    }
    if (p->step % d->print_every != 0 && p->step != p->total) return;
    fprintf(stderr, "%sstep %ld/%ld  loss %.4f  %s %.4f", prefix, p->step, p->total,
            p->smooth_loss, mname, p->smooth_metric);
    print_metrics(stderr, "| held-out", p->eval);
    fprintf(stderr, "  | %s tok/s  %.1f s\n", tps, p->seconds);
}

/* "long_acc 0.998, grammatical 0.999" with Reber's names spelled out. */
static void describe(char *buf, size_t n, const struct tg_metrics *m)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < m->n && k < n; i++) {
        const char *name = m->names[i];
        if (strcmp(name, "long_acc") == 0) name = "long-range accuracy";
        else if (strcmp(name, "string_ok") == 0) name = "all-grammatical strings";
        k += (size_t)snprintf(buf + k, n - k, m->higher_better[i] ? "%s%s %.3f" : "%s%s %.4g",
                              i ? ", " : "", name, m->values[i]);
    }
}

static void set_threads(int n)
{
#if TG_HAVE_OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
}

/* Was --name given on the command line (as "--name V" or "--name=V")? */
static int flag_given(int argc, char **argv, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "--", 2) == 0 && strncmp(argv[i] + 2, name, n) == 0 &&
            (argv[i][2 + n] == '\0' || argv[i][2 + n] == '='))
            return 1;
    return 0;
}

static struct tg_cell *owned_cell; /* --cell FILE.cell */

static int train_main(int argc, char **argv)
{
    const char *cell = NULL, *task = NULL, *data = NULL, *optimizer = NULL, *checkpoint = NULL;
    const char *resume = NULL, *log = NULL, *compare = NULL, *dtype = NULL, *init = NULL;
    const char *loss = NULL, *plot = NULL, *valid = NULL;
    int detect_anomaly = 0, lines = 0;
    double valid_fraction = 0;
    int length = 0, batch = 0, hidden = 0, layers = 0, seq = 0, threads = 0, embed = 0;
    int until_solved = 0, overwrite = 0, eval_size = 0, micro_batches = 0, bidirectional = 0,
        recompute = 0;
    long steps = 0, max_steps = 20000, checkpoint_every = 0, seed = 1, eval_every = 0;
    long print_every = 100;
    double lr = 0, clip_value = 0, clip_norm = 0, forget_bias = 0, momentum = 0, dropout = 0;
    const struct cli_flag flags[] = {
        {"cell", CLI_STR, &cell, "recurrent cell: a built-in name or FILE.cell [lstm]", 0, -1},
        {"task", CLI_STR, &task, "reber, adding, copy or text [reber]", 0, -1},
        {"data", CLI_STR, &data, "text file for --task text", 0, -1},
        {"valid", CLI_STR, &valid, "text: held-out text from this file (the whole --data trains)", 0, -1},
        {"valid-fraction", CLI_DOUBLE, &valid_fraction, "text: hold out this share of --data at its "
         "end, never trained on [0.1]", 1e-9, 0.999999},
        {"lines", CLI_BOOL, &lines, "text: one sequence per line of --data (lengths vary)", 0, -1},
        {"length", CLI_INT, &length, "adding: T [100]; copy: delay [20]; reber: longest string [40]", 2, 1e7},
        {"steps", CLI_LONG, &steps, "total optimizer steps, counting resumed ones [until solved; text 1000]", 1, 1e12},
        {"until-solved", CLI_BOOL, &until_solved, "stop early once the held-out set is solved", 0, -1},
        {"max-steps", CLI_LONG, &max_steps, "cap of an until-solved run [20000]", 1, 1e12},
        {"batch", CLI_INT, &batch, "sequences per batch [32]", 1, 1 << 20},
        {"hidden", CLI_INT, &hidden, "hidden size H [64; text 128]", 1, 1 << 16},
        {"layers", CLI_INT, &layers, "stacked layers [1]", 1, 64},
        {"bidirectional", CLI_BOOL, &bidirectional, "every layer also runs right to left; its output is "
         "[forward; reverse] (adding, copy) [off]", 0, -1},
        {"dropout", CLI_DOUBLE, &dropout, "p: dropout on the output of every layer but the last, "
         "training only, scaled by 1/(1-p) [0]", 1, 0}, /* [0, 1): checked by the trainer */
        {"embed", CLI_INT, &embed, "text: embedding width [vocabulary size]", 1, 1 << 16},
        {"seq", CLI_INT, &seq, "truncated BPTT chunk length [text 25; else off]; with --lines the longest sequence [longest line + 1]", 1, 1e7},
        {"optimizer", CLI_STR, &optimizer, "sgd, adagrad, adagrad-minchar, adam, rmsprop [adam]", 0, -1},
        {"lr", CLI_DOUBLE, &lr, "learning rate [adam: 1e-2; others: PyTorch's default]", 1e-12, 1e6},
        {"momentum", CLI_DOUBLE, &momentum, "sgd/rmsprop momentum [0]", 0, 1},
        {"clip-value", CLI_DOUBLE, &clip_value, "clamp gradients to [-c, c] [off]", 1e-12, 1e12},
        {"clip-norm", CLI_DOUBLE, &clip_norm, "clip the global gradient norm [off]", 1e-12, 1e12},
        {"loss", CLI_STR, &loss, "cross-entropy reduction: mean or sum [mean]", 0, -1},
        {"init", CLI_STR, &init, "pytorch (U(+-1/sqrt H)) or minchar (N(0,0.01^2)) [pytorch]", 0, -1},
        {"forget-bias", CLI_DOUBLE, &forget_bias, "add to the LSTM forget-gate bias [0]", -100, 100},
        {"dtype", CLI_STR, &dtype, "f32 or f64 [f32]", 0, -1},
        {"seed", CLI_LONG, &seed, "random seed [1]", 0, 9.2e18},
        {"threads", CLI_INT, &threads, "OpenMP and OpenBLAS threads [1, or $OMP_NUM_THREADS]", 1, 1024},
        {"checkpoint", CLI_STR, &checkpoint, "write checkpoints to this .safetensors file", 0, -1},
        {"checkpoint-every", CLI_LONG, &checkpoint_every, "checkpoint every N steps [end only]", 1, 1e12},
        {"resume", CLI_STR, &resume, "continue from a checkpoint (and keep saving to it)", 0, -1},
        {"overwrite", CLI_BOOL, &overwrite, "replace an existing --checkpoint file", 0, -1},
        {"log", CLI_STR, &log, "CSV file: one row per step", 0, -1},
        {"eval-every", CLI_LONG, &eval_every, "held-out evaluation every N steps [50]", 1, 1e12},
        {"eval-size", CLI_INT, &eval_size, "held-out sequences [512]", 1, 1 << 20},
        {"print-every", CLI_LONG, &print_every, "non-terminal: a progress line every N steps [100]", 1, 1e12},
        {"micro-batches", CLI_INT, &micro_batches, "split each batch into K fixed blocks, summed in "
         "order: the same result with or without mpirun -np N (N <= K) [1]", 1, 1 << 20},
        {"recompute", CLI_INT, &recompute, "keep the state every N steps, recompute segments in "
         "backward: O(T/N + N) memory, ~1/3 more time [off]", 1, 1e7},
        {"compare", CLI_STR, &compare, "train each listed cell (rnn_tanh,lstm,gru) and print a table", 0, -1},
        {"plot", CLI_STR, &plot, "at the end, draw loss, metric and gradient-norm curves to FILE.png|svg", 0, -1},
        {"detect-anomaly", CLI_BOOL, &detect_anomaly, "stop at the first NaN/inf in forward or backward and say where", 0, -1},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]);
    int r = cli_parse("train", "[flags]   (no flags: LSTM on the embedded Reber grammar until solved)",
                      argc, argv, flags, nflags);
    if (r != 0) return r < 0 ? 1 : 0;
    /* One thread unless asked: these models are small, a second thread mostly waits at
     * barriers (and on a busy machine spins against other work, many times slower), and a fixed
     * count keeps runs bit-identical across machines (OpenBLAS splits GEMMs by thread count). */
    if (threads > 0) set_threads(threads);
    else if (!getenv("OMP_NUM_THREADS")) set_threads(1);

    const struct tg_cell *cell_def = NULL;
    if (cell && (cli_has_ext(cell, ".cell") || strchr(cell, '/'))) {
        if (!(cell_def = cli_cell("train", cell, &owned_cell))) return 1;
        cell = NULL;
    }
    struct tg_train_config cfg = {
        .cell = cell, .cell_def = cell_def, .task = task, .data = data, .valid = valid,
        .valid_fraction = valid_fraction, .lines = lines, .length = length, .batch = batch,
        .hidden = hidden, .layers = layers, .embed = embed, .seq = seq, .dtype = dtype,
        .optimizer = optimizer, .lr = lr, .momentum = momentum, .clip_value = clip_value,
        .clip_norm = clip_norm, .loss = loss, .init = init, .forget_bias = forget_bias,
        .bidirectional = bidirectional, .dropout = dropout,
        .seed = (uint64_t)seed, .steps = steps, .until_solved = until_solved,
        .eval_every = eval_every, .eval_size = eval_size, .checkpoint = checkpoint,
        .checkpoint_every = checkpoint_every, .resume = resume, .overwrite = overwrite,
        .log_path = log, .stop = &interrupted, .progress = progress,
        .micro_batches = micro_batches, .dist = train_dist(), /* issue 16: train_mpi.c */
        .detect_anomaly = detect_anomaly, .recompute = recompute,
    };
    /* --plot draws from the log; without --log, from a temporary one removed afterwards */
    char tmp_log[64] = "";
    if (plot && !cli_has_ext(plot, ".png") && !cli_has_ext(plot, ".svg"))
        return cli_fail("train", "--plot must end in .png or .svg, got '%s'", plot);
    if (plot && compare) return cli_fail("train", "--plot draws one run; not with --compare");
    if (plot && !log) {
        snprintf(tmp_log, sizeof tmp_log, "/tmp/tapegrad-log-XXXXXX");
        int fd = mkstemp(tmp_log);
        if (fd < 0) return cli_fail("train", "cannot create a temporary log for --plot");
        close(fd);
        cfg.log_path = tmp_log;
    }
    /* Without --steps a task with a solved criterion runs until solved (capped); text runs 1000.
     * A resumed run's task is the checkpoint's (an unreadable file is reported below). */
    char saved_task[16] = "";
    if (resume) {
        struct tg_checkpoint *ck;
        if (tg_checkpoint_open(resume, &ck) == TG_OK) {
            const struct tg_train_config *sc = tg_checkpoint_config(ck);
            snprintf(saved_task, sizeof saved_task, "%s", sc->task);
            /* The library treats 0 as "not set" and cannot tell a given 0 (or the default
             * seed) from an absent flag; here we know what was typed. A resumed run must use
             * the checkpoint's settings, so a flag given with another value is refused. */
            const char *bad = NULL;
            char was[48] = "", now[48] = "";
            if (flag_given(argc, argv, "seed") && (uint64_t)seed != sc->seed) {
                bad = "seed";
                snprintf(was, sizeof was, "%llu", (unsigned long long)sc->seed);
                snprintf(now, sizeof now, "%ld", seed);
            }
            const struct { const char *name; double given, saved; } nums[] = {
                {"momentum", momentum, sc->momentum},    {"forget-bias", forget_bias, sc->forget_bias},
                {"clip-value", clip_value, sc->clip_value}, {"clip-norm", clip_norm, sc->clip_norm},
                {"lr", lr, sc->lr},          {"dropout", dropout, sc->dropout},
            };
            for (size_t i = 0; !bad && i < sizeof nums / sizeof nums[0]; i++) {
                if (flag_given(argc, argv, nums[i].name) && nums[i].given != nums[i].saved) {
                    bad = nums[i].name;
                    snprintf(was, sizeof was, "%g", nums[i].saved);
                    snprintf(now, sizeof now, "%g", nums[i].given);
                }
            }
            tg_checkpoint_close(ck);
            if (bad)
                return cli_fail("train", "checkpoint %s was written with --%s %s, not %s (resume with "
                                "the same settings, or start a new run)", resume, bad, was, now);
        }
    }
    const char *eff_task = task ? task : saved_task[0] ? saved_task : "reber";
    int is_text = strcmp(eff_task, "text") == 0;
    if (!steps && !is_text) {
        cfg.until_solved = 1;
        cfg.steps = max_steps;
    }
    if (resume && !checkpoint) cfg.checkpoint = resume; /* keep saving where we came from */
    if (data && !is_text) return cli_fail("train", "--data is only for --task text");
    if ((valid || valid_fraction || lines) && !is_text)
        return cli_fail("train", "--valid, --valid-fraction and --lines are only for --task text");

    struct display d = {.tty = isatty(2), .compare = compare != NULL, .print_every = print_every};
    cfg.progress_ctx = &d;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once (the checkpoint stays atomic) */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    /* mpirun turns a Ctrl-C into SIGTERM for every rank (then SIGKILL): stop the same way */
    if (tg_dist_size(train_dist()) > 1) sigaction(SIGTERM, &sa, NULL);

    if (compare) {
        if (cell) return cli_fail("train", "--compare takes the cells; drop --cell");
        enum tg_status st = tg_train_compare(&cfg, compare, stdout, NULL, 0, NULL);
        if (d.tty) fputc('\n', stderr);
        if (st != TG_OK) return cli_fail("train", "%s", tg_last_error());
        return interrupted ? 130 : 0;
    }

    struct tg_trainer *tr;
    int failed = tg_trainer_new(&cfg, &tr) != TG_OK;
    if (train_dist_settle(failed, tg_last_error())) { /* every rank learns if one failed */
        if (!failed) tg_trainer_free(tr);
        return 1;
    }
    const struct tg_train_config *rc = tg_trainer_config(tr);
    struct tg_model *m = tg_trainer_model(tr);
    fprintf(stderr, "%s %s on %s: H=%d, L=%d, batch %d, %zu weights, %s lr %g, %s, seed %llu%s\n",
            tg_trainer_steps(tr) ? "resuming" : "training", rc->cell, rc->task, rc->hidden,
            rc->layers, rc->batch, tg_model_num_weights(m), rc->optimizer, rc->lr, rc->dtype, (unsigned long long)rc->seed,
            rc->until_solved ? ", until solved" : "");
    if (rc->seq) fprintf(stderr, "truncated BPTT: chunks of %d steps\n", rc->seq);
    if (rc->bidirectional || rc->dropout > 0)
        fprintf(stderr, "%s%s%.3g\n", rc->bidirectional ? "bidirectional layers; " : "",
                "dropout between layers ", rc->dropout);
    if (tg_trainer_steps(tr)) fprintf(stderr, "from step %ld of %s\n", tg_trainer_steps(tr), rc->resume);
    if (tg_dist_size(rc->dist) > 1 || rc->micro_batches > 1)
        fprintf(stderr, "data-parallel: %d micro-batches of %d sequences on %d rank%s\n",
                rc->micro_batches, rc->batch / rc->micro_batches, tg_dist_size(rc->dist),
                tg_dist_size(rc->dist) > 1 ? "s" : "");
    struct tg_train_result res;
    enum tg_status st = tg_trainer_run(tr, &res);
    if (d.tty) fputc('\n', stderr);
    if (plot) { /* also after a divergence: the curves up to it (the run flushed the log) */
        char perr[512], why[1024];
        snprintf(why, sizeof why, "%s", tg_last_error());
        if (plot_train_log(cfg.log_path, plot, perr, sizeof perr) != 0) cli_fail("train", "%s", perr);
        else fprintf(stderr, "plot: %s\n", plot);
        if (tmp_log[0]) unlink(tmp_log);
        if (st != TG_OK) tg_error(st, "%s", why);
    }
    if (st != TG_OK) {
        int where = tg_trainer_failed_alone(tr);
        tg_trainer_free(tr);
        return train_dist_fail(where, tg_last_error());
    }
    struct tg_dist_stats ds;
    tg_dist_stats(rc->dist, &ds);
    if (ds.calls)
        fprintf(stderr, "exchange: %.2f MiB received per step by rank 0, %.1f%% of %.1f s in "
                "MPI_Allgatherv\n", ds.bytes_received / ds.calls / 1048576.0,
                100.0 * ds.seconds / (res.seconds > 0 ? res.seconds : 1), res.seconds);
    char what[512];
    describe(what, sizeof what, &res.eval);
    /* text: windows (or lines) of the held-out part, never of the training text */
    const char *held = "held-out";
    char ran[64] = "";
    if (res.steps_run != res.steps) snprintf(ran, sizeof ran, " (%ld in this run)", res.steps_run);
    if (res.interrupted) {
        printf("interrupted at step %ld%s after %.1f s: %s %s\n", res.steps, ran, res.seconds, held, what);
        if (res.checkpoint_written)
            printf("checkpoint written: %s (step %ld); continue with --resume %s\n", rc->checkpoint,
                   res.steps, rc->checkpoint);
        else if (rc->checkpoint)
            printf("no step since the last checkpoint: %s is unchanged\n", rc->checkpoint);
        else
            printf("nothing was saved (no --checkpoint given)\n");
        tg_trainer_free(tr);
        return 130;
    }
    if (rc->until_solved && res.solved)
        printf("solved in %ld steps%s, %.1f s: %s (held-out, %d sequences)\n", res.solved_step, ran,
               res.seconds, what, rc->eval_size);
    else if (rc->until_solved)
        printf("not solved in %ld steps%s, %.1f s: %s (held-out; solved means %s)\n", res.steps, ran,
               res.seconds, what, tg_task_solved_desc(tg_trainer_task(tr)));
    else
        printf("trained %ld steps%s in %.1f s: %s %s%s\n", res.steps, ran, res.seconds, held, what,
               res.solved ? " (solved)" : "");
    if (res.checkpoint_written) printf("checkpoint: %s (step %ld)\n", rc->checkpoint, res.steps);
    tg_trainer_free(tr);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    int rc = train_main(argc, argv);
    tg_cell_free(owned_cell);
    owned_cell = NULL;
    return rc;
}
