/* train.c — the training loop: configuration, one optimizer step, held-out evaluation, the run
 * with its log, checkpoints and progress calls, the cell comparison, and text sampling.
 *
 * Memory: task batches, probability buffers and the tape are allocated when the trainer is
 * built; a step resets the tape and records the same graph again, so once the arena has grown
 * to the largest batch (and an evaluation has run) a step makes no heap allocation. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tapegrad_dist.h"
#include "tapegrad_fileio.h"
#include "tapegrad_flow.h"
#include "tapegrad_train.h"
#include "train_impl.h"
#include "train_log.h"

#define EVAL_BATCH 128                    /* held-out sequences per forward pass */
#define EVAL_SEED 0x5eedf00dcafe1234ULL   /* the held-out set's own stream, apart from training */


static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ configuration */

static int in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0) return 1;
    return 0;
}

/* A setting given for a resumed run must be the checkpoint's: anything else would silently
 * train a different model (or fail to load one). */
static enum tg_status mismatch(const char *path, const char *what, const char *saved,
                               const char *given)
{
    return tg_error(TG_ERR_FORMAT, "checkpoint %s was written with %s %s, not %s (resume with the "
                    "same settings, or start a new run)", path, what, saved, given);
}

static enum tg_status check_same(const struct tg_train_config *g, const struct tg_train_config *s,
                                 const char *path)
{
    char a[64], b[64];
    const char *cell = g->cell_def ? g->cell_def->name : g->cell;
#define SAME_STR(field, what)                                                                  \
    if (g->field && strcmp(g->field, s->field) != 0) return mismatch(path, what, s->field, g->field)
#define SAME_NUM(field, what, fmt)                                                             \
    if (g->field && g->field != s->field) {                                                    \
        snprintf(a, sizeof a, fmt, s->field);                                                  \
        snprintf(b, sizeof b, fmt, g->field);                                                  \
        return mismatch(path, what, a, b);                                                     \
    }
    if (cell && strcmp(cell, s->cell) != 0) return mismatch(path, "cell", s->cell, cell);
    SAME_STR(task, "task");
    SAME_STR(dtype, "dtype");
    SAME_STR(optimizer, "optimizer");
    SAME_STR(loss, "loss");
    SAME_STR(init, "init");
    SAME_NUM(length, "length", "%d");
    SAME_NUM(batch, "batch", "%d");
    SAME_NUM(hidden, "hidden size", "%d");
    SAME_NUM(layers, "layers", "%d");
    SAME_NUM(embed, "embedding width", "%d");
    SAME_NUM(seq, "seq", "%d");
    SAME_NUM(lr, "lr", "%g");
    SAME_NUM(momentum, "momentum", "%g");
    SAME_NUM(clip_value, "clip-value", "%g");
    SAME_NUM(clip_norm, "clip-norm", "%g");
    SAME_NUM(forget_bias, "forget-bias", "%g");
    SAME_NUM(bidirectional, "bidirectional", "%d");
    SAME_NUM(dropout, "dropout", "%g");
    SAME_NUM(valid_fraction, "valid-fraction", "%g");
    SAME_NUM(lines, "lines", "%d");
#undef SAME_STR
#undef SAME_NUM
    return TG_OK;
}

static const char *const tasks[] = {"reber", "adding", "copy", "text", NULL};
static const char *const dtypes[] = {"f32", "f64", NULL};
static const char *const losses[] = {"mean", "sum", NULL};
static const char *const inits[] = {"pytorch", "minchar", NULL};
static const char *const optims[] = {"sgd", "adagrad", "adagrad-minchar", "adam", "rmsprop", NULL};

/* Defaults: tuned so that `tapegrad train` (LSTM, Reber) is solved in a few seconds; Adam's
 * PyTorch default lr 1e-3 needs about ten times the steps there, and 1e-2 is also the best of
 * 2e-3 / 5e-3 / 1e-2 for the text model over 2000 steps (still stable, without clipping). */
static void fill_defaults(struct tg_train_config *c)
{
    if (!c->task) c->task = "reber";
    int text = strcmp(c->task, "text") == 0;
    if (!c->cell_def && !c->cell) c->cell = "lstm";
    if (c->cell_def) c->cell = c->cell_def->name;
    if (!c->batch) c->batch = 32;
    if (!c->hidden) c->hidden = text ? 128 : 64;
    if (!c->layers) c->layers = 1;
    if (!c->seq && text && !c->lines) c->seq = 25; /* lines: the task measures the file */
    if (text && !c->valid && !c->valid_fraction) c->valid_fraction = 0.1;
    if (!c->dtype) c->dtype = "f32";
    if (!c->optimizer) c->optimizer = "adam";
    if (!c->loss) c->loss = "mean";
    if (!c->init) c->init = "pytorch";
    if (!c->lr && strcmp(c->optimizer, "adam") == 0) c->lr = 1e-2;
    if (!c->micro_batches) c->micro_batches = 1;
}

/* The list's own copy of s (static storage), or NULL. */
static const char *canon(const char *s, const char *const *list)
{
    for (; s && *list; list++)
        if (strcmp(s, *list) == 0) return *list;
    return NULL;
}

/* Point every name of the configuration at static storage, so that it outlives the caller's
 * strings and the checkpoint it may have come from. */
static void canonicalise(struct tg_train_config *c)
{
    const struct tg_cell *cell = c->cell_def ? c->cell_def : tg_cell_find(c->cell);
    c->cell = cell->name;
    c->task = canon(c->task, tasks);
    c->dtype = canon(c->dtype, dtypes);
    c->loss = canon(c->loss, losses);
    c->init = canon(c->init, inits);
    c->optimizer = canon(c->optimizer, optims);
}

static enum tg_status validate(const struct tg_train_config *c)
{
    if (!in_list(c->task, tasks))
        return tg_error(TG_ERR_VALUE, "unknown task '%s' (expected reber, adding, copy, text)", c->task);
    if (!c->cell_def && !tg_cell_find(c->cell))
        return tg_error(TG_ERR_VALUE, "unknown cell '%s' (expected one of %s)", c->cell, tg_cell_names());
    if (!in_list(c->dtype, dtypes))
        return tg_error(TG_ERR_VALUE, "unknown dtype '%s' (expected f32 or f64)", c->dtype);
    if (!in_list(c->loss, losses))
        return tg_error(TG_ERR_VALUE, "unknown loss '%s' (expected mean or sum)", c->loss);
    if (!in_list(c->init, inits))
        return tg_error(TG_ERR_VALUE, "unknown init '%s' (expected pytorch or minchar)", c->init);
    if (!in_list(c->optimizer, optims))
        return tg_error(TG_ERR_VALUE, "unknown optimizer '%s' (expected sgd, adagrad, adagrad-minchar, "
                        "adam, rmsprop)", c->optimizer);
    if (strcmp(c->task, "text") == 0 && (!c->data || !*c->data))
        return tg_error(TG_ERR_VALUE, "task 'text' needs a data file (--data FILE)");
    if (strcmp(c->task, "text") != 0 && (c->valid || c->valid_fraction || c->lines))
        return tg_error(TG_ERR_VALUE, "--valid, --valid-fraction and --lines are for --task text");
    if (c->valid && c->valid_fraction)
        return tg_error(TG_ERR_VALUE, "give either --valid FILE or --valid-fraction, not both");
    if (!(c->valid_fraction >= 0 && c->valid_fraction < 1))
        return tg_error(TG_ERR_VALUE, "--valid-fraction %g is not in (0, 1)", c->valid_fraction);
    if (c->batch < 1 || c->hidden < 1 || c->layers < 1 || c->embed < 0 || c->seq < 0 ||
        c->length < 0 || c->steps < 0 || c->eval_every < 0 || c->eval_size < 0 ||
        c->checkpoint_every < 0)
        return tg_error(TG_ERR_VALUE, "sizes must be positive (batch %d, hidden %d, layers %d, "
                        "embed %d, seq %d, length %d, steps %ld)", c->batch, c->hidden, c->layers,
                        c->embed, c->seq, c->length, c->steps);
    if (c->micro_batches < 1 || c->batch % c->micro_batches != 0)
        return tg_error(TG_ERR_VALUE, "--batch %d does not split into %d micro-batches of equal "
                        "size (--micro-batches must divide --batch)", c->batch, c->micro_batches);
    int N = tg_dist_size(c->dist);
    if (N > c->micro_batches) {
        int k = N;
        while (k <= c->batch && c->batch % k) k++;
        if (k > c->batch)
            return tg_error(TG_ERR_VALUE, "mpirun started %d ranks, more than the %d sequences of "
                            "a batch: use fewer ranks or a larger --batch", N, c->batch);
        return tg_error(TG_ERR_VALUE, "mpirun started %d ranks but a batch is %d micro-batch%s: "
                        "every rank needs at least one. Pass --micro-batches K with K >= %d dividing "
                        "--batch %d (e.g. %d); the result is then the same at any number of ranks "
                        "and without mpirun", N, c->micro_batches, c->micro_batches > 1 ? "es" : "",
                        N, c->batch, k);
    }
    if (c->lr < 0 || c->momentum < 0 || c->clip_value < 0 || c->clip_norm < 0 ||
        !isfinite(c->lr + c->momentum + c->clip_value + c->clip_norm + c->forget_bias))
        return tg_error(TG_ERR_VALUE, "lr, momentum and clipping thresholds must be finite and >= 0");
    if (!(c->dropout >= 0 && c->dropout < 1))
        return tg_error(TG_ERR_VALUE, "--dropout must be in [0, 1), got %g", c->dropout);
    if (c->bidirectional && (strcmp(c->task, "text") == 0 || strcmp(c->task, "reber") == 0))
        return tg_error(TG_ERR_VALUE, "--bidirectional with task %s: it predicts the next symbol, which "
                        "the reverse direction reads as input (use adding or copy)", c->task);
    if (c->bidirectional && c->seq > 0)
        return tg_error(TG_ERR_VALUE, "--bidirectional with --seq %d: the reverse direction runs from "
                        "the end of the sequence, so it cannot be cut into truncated chunks", c->seq);
    return TG_OK;
}

/* ------------------------------------------------------------------ construction */

void tg_trainer_free(struct tg_trainer *tr)
{
    if (!tr) return;
    train_log_close(&tr->log);
    tg_batch_free(&tr->batch);
    tg_batch_free(&tr->eval_batch);
    tg_batch_free(&tr->sub);
    free(tr->slots);
    free(tr->probs);
    free(tr->eval_probs);
    tg_tape_free(tr->tape);
    tg_optim_free(tr->optim);
    tg_model_free(tr->model);
    tg_recompute_free(tr->rc);
    tg_recompute_free(tr->eval_rc);
    tg_task_free(tr->task);
    tg_task_free(tr->eval_task);
    tg_checkpoint_close(tr->ck);
    tg_cell_free(tr->owned_cell);   /* after the model that uses it */
    free(tr->owned_data);
    free(tr->owned_valid);
    free(tr->gnorm);
    free(tr);
}

/* The files of a run, checked before any training: a checkpoint that can only be written at
 * the end must be writable now (not a directory, its directory present and taking files), and
 * no output may be one of the inputs (or the other output) under another name. */
static enum tg_status check_paths(const struct tg_train_config *c)
{
    if (c->checkpoint) TRY(tg_file_check_writable(NULL, "checkpoint", c->checkpoint));
    const struct { const char *flag, *path; } in[] = {
        {"--data", c->data}, {"--resume", c->resume}, {"--checkpoint", c->checkpoint},
        {"--valid", c->valid}};
    for (int i = 0; i < 4; i++) {
        if (i == 3 && tg_file_same(c->checkpoint, in[i].path))
            return tg_error(TG_ERR_VALUE, "checkpoint '%s' is the same file as %s '%s'", c->checkpoint,
                            in[i].flag, in[i].path);
        if (i == 0 && tg_file_same(c->checkpoint, in[i].path))
            return tg_error(TG_ERR_VALUE, "checkpoint '%s' is the same file as %s '%s'", c->checkpoint,
                            in[i].flag, in[i].path);
        if (tg_file_same(c->log_path, in[i].path))
            return tg_error(TG_ERR_VALUE, "log '%s' is the same file as %s '%s'", c->log_path,
                            in[i].flag, in[i].path);
    }
    return TG_OK;
}

static enum tg_status open_log(struct tg_trainer *tr, int append)
{
    const struct tg_train_config *c = &tr->cfg;
    TRY(train_log_open(&tr->log, c->log_path, append));
    if (!tr->log.fresh) return TG_OK; /* appending to a log that has its header */
    struct tg_metrics m;
    tg_metrics_reset(tr->task, &m);
    FILE *f = tr->log.f;
    fprintf(f, "step,loss,smooth_loss,grad_norm");
    for (int l = 0; l < c->layers; l++) fprintf(f, ",gnorm_l%d", l);
    fprintf(f, ",gnorm_out");
    for (int i = 0; i < m.n; i++) fprintf(f, ",%s", m.names[i]);
    for (int i = 0; i < m.n; i++) fprintf(f, ",eval_%s", m.names[i]);
    fprintf(f, ",tokens,seconds\n");
    return train_log_flush(&tr->log);
}

/* K > 1: the micro-batch buffer and the slots; this rank's share. */
static enum tg_status build_micro_batches(struct tg_trainer *tr)
{
    int K = tr->cfg.micro_batches;
    tg_dist_share(K, tr->nranks, tr->rank, &tr->k0, &tr->kn);
    if (K == 1) return TG_OK;
    TRY(tg_batch_alloc(tr->task, tr->cfg.batch / K, &tr->sub));
    size_t g = 0;
    for (int i = 0; i < tr->model->n_params; i++) g += tg_nbytes(tr->model->params[i]);
    tr->slot_bytes = (SLOT_HEAD + g + 63) / 64 * 64;
    tr->slots = calloc((size_t)K, tr->slot_bytes);
    if (!tr->slots)
        return tg_error(TG_ERR_NOMEM, "trainer: out of memory for %d micro-batch gradients of %zu "
                        "bytes", K, g);
    return TG_OK;
}

static enum tg_status build(struct tg_trainer *tr)
{
    struct tg_train_config *c = &tr->cfg;
    const struct tg_cell *cell = c->cell_def ? c->cell_def : tg_cell_find(c->cell);
    tr->text = strcmp(c->task, "text") == 0;
    tr->regression = strcmp(c->task, "adding") == 0;
    tr->mean_loss = strcmp(c->loss, "mean") == 0;
    struct tg_task_config tc = {.length = c->length, .data_path = c->data};
    if (tr->text) {
        tc.seq = c->seq, tc.sequential = 1, tc.lines = c->lines;
        tc.valid_path = c->valid, tc.valid_fraction = c->valid_fraction;
    }
    TRY(tg_task_new(c->task, &tc, &tr->task));
    /* held-out text: random windows (or lines) of the held-out part from a fresh zero state */
    tc.sequential = 0, tc.held_out = tr->text;
    TRY(tg_task_new(c->task, &tc, &tr->eval_task));
    c->length = tg_task_config(tr->task)->length;
    if (tr->text) c->seq = tg_task_config(tr->task)->seq; /* lines: the longest line + 1 */
    int vocab = tg_task_vocab_size(tr->task);
    if (tr->text && !c->embed) c->embed = vocab;
    TRY(tg_batch_alloc(tr->task, c->batch, &tr->batch));
    int eb = c->eval_size < EVAL_BATCH ? c->eval_size : EVAL_BATCH;
    TRY(tg_batch_alloc(tr->eval_task, eb, &tr->eval_batch));
    int C = tr->regression ? 1 : tg_task_n_classes(tr->task), T = tg_task_max_T(tr->task);
    tr->probs = malloc((size_t)T * c->batch * C * sizeof *tr->probs);
    tr->eval_probs = malloc((size_t)T * eb * C * sizeof *tr->eval_probs);
    tr->tape = tg_tape_new(0);
    tr->gnorm = calloc((size_t)c->layers + 1, sizeof *tr->gnorm);
    if (!tr->probs || !tr->eval_probs || !tr->tape || !tr->gnorm)
        return tg_error(TG_ERR_NOMEM, "trainer: out of memory");
    if (c->detect_anomaly) tg_tape_set_anomaly(tr->tape, 1);
    /* --recompute K: K past the steps one backward spans (T, or the --seq chunk) is refused,
     * not silently the plain run; anomaly reports would count steps within a segment. */
    int span = tr->text || (c->seq > 0 && c->seq < T) ? c->seq : T;
    if (c->recompute < 0 || c->recompute > span)
        return tg_error(TG_ERR_VALUE, "--recompute %d: K must be between 1 and the %d steps one "
                        "backward spans (%s)", c->recompute, span, span == T ? "the task's T" :
                        "the --seq chunk");
    if (c->recompute && c->detect_anomaly)
        return tg_error(TG_ERR_VALUE, "--recompute cannot be combined with --detect-anomaly yet "
                        "(its reports would count time steps within a segment)");
    /* reber and --lines batches hold sequences shorter than T (frozen past their length) */
    int padded = c->lines || !strcmp(c->task, "reber");
    if (c->recompute && (c->bidirectional || c->dropout > 0 || padded))
        return tg_error(TG_ERR_VALUE, "--recompute cannot be combined with %s yet (a segment "
                        "replay cannot reproduce it)", c->bidirectional ? "--bidirectional" :
                        c->dropout > 0 ? "--dropout" : c->lines ? "--lines" : "task reber's padded strings");
    if (c->recompute) TRY(tg_recompute_new(c->recompute, &tr->rc));
    if (c->recompute) TRY(tg_recompute_new(c->recompute, &tr->eval_rc));

    struct tg_model_config mc = {
        .cell = cell, .input = tr->text ? c->embed : tg_task_in_dim(tr->task),
        .vocab = tr->text ? vocab : 0, .hidden = c->hidden, .layers = c->layers,
        .outputs = tg_task_out_dim(tr->task), .dtype = strcmp(c->dtype, "f64") == 0 ? TG_F64 : TG_F32,
        .loss = tr->regression ? TG_LOSS_MSE_LAST : TG_LOSS_XENT_SUM,
        .bidirectional = c->bidirectional, .dropout = c->dropout,
    };
    if (tr->ck) TRY(tg_checkpoint_check_model_size(tr->ck, &mc));
    TRY(tg_model_new(&mc, &tr->model));

    struct tg_optim_config oc;
    if (tr->ck) {
        oc = *tg_checkpoint_optim_config(tr->ck);
    } else {
        TRY(tg_optim_config_from_name(c->optimizer, &oc));
        if (c->lr > 0) oc.lr = c->lr;
        if (c->momentum > 0) oc.momentum = c->momentum;
        c->lr = oc.lr;
        c->momentum = oc.momentum;
    }
    TRY(tg_optim_new(&oc, tr->model->params, tr->model->n_params, &tr->optim));

    if (tr->ck) {
        /* Everything the next step reads comes back from the file. */
        const struct tg_checkpoint_state *s = tg_checkpoint_state(tr->ck);
        if (tr->text && s->vocab_n != vocab)
            return tg_error(TG_ERR_FORMAT, "checkpoint %s: its vocabulary (%d bytes) is not the one of "
                            "'%s' (%d bytes)", c->resume, s->vocab_n, c->data, vocab);
        for (int i = 0; tr->text && i < vocab; i++)
            if (tg_task_vocab_char(tr->task, i) != s->vocab[i])
                return tg_error(TG_ERR_FORMAT, "checkpoint %s: its vocabulary differs from the one "
                                "of '%s'", c->resume, c->data);
        TRY(tg_checkpoint_load_model(tr->ck, tr->model));
        if (tr->model->state_batch && tr->model->state_batch != c->batch)
            return tg_error(TG_ERR_FORMAT, "checkpoint %s: carried state for batch %d, run has %d",
                            c->resume, tr->model->state_batch, c->batch);
        TRY(tg_checkpoint_load_optim(tr->ck, tr->optim));
        tr->rng = s->rng;
        tr->step = s->step;
        tr->smooth_loss = s->smooth_loss;
        tg_task_set_cursor(tr->task, s->cursor);
    } else {
        tg_rng_seed(&tr->rng, c->seed);
        if (strcmp(c->init, "minchar") == 0) tg_model_init_normal(tr->model, &tr->rng, 0.01);
        else tg_model_init_uniform(tr->model, &tr->rng);
        if (c->forget_bias != 0) tg_model_set_forget_bias(tr->model, c->forget_bias);
        TRY(tg_model_init_cell(tr->model, &tr->rng)); /* a cell file's init lines, if any */
    }
    tg_metrics_reset(tr->task, &tr->train_m);
    tg_metrics_reset(tr->task, &tr->eval_m);
    TRY(build_micro_batches(tr));
    if (c->log_path && tr->lead) TRY(open_log(tr, tr->ck != NULL));
    return TG_OK;
}

enum tg_status tg_trainer_new(const struct tg_train_config *cfg, struct tg_trainer **out)
{
    if (!out || !cfg) return tg_error(TG_ERR_VALUE, "tg_trainer_new: NULL argument");
    *out = NULL;
    struct tg_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) return tg_error(TG_ERR_NOMEM, "tg_trainer_new: out of memory");
    struct tg_train_config *c = &tr->cfg;
    *c = *cfg;
    tr->rank = tg_dist_rank(cfg->dist);
    tr->nranks = tg_dist_size(cfg->dist);
    tr->lead = tr->rank == 0;
    enum tg_status st = TG_OK;
    if (cfg->resume) {
        st = tg_checkpoint_open(cfg->resume, &tr->ck);
        if (st == TG_OK) st = check_same(cfg, tg_checkpoint_config(tr->ck), cfg->resume);
        if (st == TG_OK) {
            const struct tg_train_config *s = tg_checkpoint_config(tr->ck);
            struct tg_train_config r = *s;       /* what is trained: the checkpoint's */
            /* a cell file comes from the checkpoint unless given, and must then be the same */
            r.cell_def = cfg->cell_def ? cfg->cell_def : tg_checkpoint_cell(tr->ck);
            r.data = cfg->data ? cfg->data : s->data;
            r.valid = cfg->valid ? cfg->valid : s->valid;
            r.steps = cfg->steps;                 /* how long and what along the way: ours */
            r.until_solved = cfg->until_solved;
            r.eval_every = cfg->eval_every;
            r.eval_size = cfg->eval_size;
            r.checkpoint = cfg->checkpoint;
            r.checkpoint_every = cfg->checkpoint_every;
            r.resume = cfg->resume;
            r.overwrite = cfg->overwrite;
            r.log_path = cfg->log_path;
            if (cfg->micro_batches) r.micro_batches = cfg->micro_batches;
            r.recompute = cfg->recompute;
            r.detect_anomaly = cfg->detect_anomaly; /* the user's, like --log */
            r.dist = cfg->dist;
            r.stop = cfg->stop;
            r.progress = cfg->progress;
            r.progress_ctx = cfg->progress_ctx;
            *c = r;
            if (c->cell_def && strcmp(c->cell_def->name, c->cell) != 0) c->cell_def = NULL;
            /* --steps is the total to reach: at or below the saved step nothing would run, and
             * a run that does nothing and exits 0 looks like one that trained. */
            long done = tg_checkpoint_state(tr->ck)->step;
            if (c->steps && c->steps <= done)
                st = tg_error(TG_ERR_VALUE, "checkpoint %s is at step %ld already and --steps %ld "
                              "counts the resumed steps too, so nothing would run (ask for more than "
                              "%ld steps)", cfg->resume, done, c->steps, done);
        }
    }
    if (st == TG_OK) {
        fill_defaults(c);
        if (!c->steps) c->steps = c->until_solved ? 20000 : 1000;
        if (!c->eval_every) c->eval_every = 50;
        if (!c->eval_size) c->eval_size = 512;
        st = validate(c);
        if (st == TG_OK) canonicalise(c);
    }
    if (st == TG_OK && c->data) {
        tr->owned_data = strdup(c->data);
        if (!tr->owned_data) st = tg_error(TG_ERR_NOMEM, "tg_trainer_new: out of memory");
        c->data = tr->owned_data;
    }
    if (st == TG_OK && c->valid) {
        tr->owned_valid = strdup(c->valid);
        if (!tr->owned_valid) st = tg_error(TG_ERR_NOMEM, "tg_trainer_new: out of memory");
        c->valid = tr->owned_valid;
    }
    if (st == TG_OK) st = check_paths(c);
    if (st == TG_OK && tr->lead && c->checkpoint && !c->overwrite &&
        !(c->resume && tg_file_same(c->resume, c->checkpoint))) {
        struct stat sb;
        if (stat(c->checkpoint, &sb) == 0)
            st = tg_error(TG_ERR_VALUE, "checkpoint '%s' already exists (continue it with --resume "
                          "%s, or pass --overwrite to start over)", c->checkpoint, c->checkpoint);
    }
    if (st == TG_OK) st = build(tr);
    /* a cell file from the checkpoint outlives it: the model runs it */
    if (tr->ck && c->cell_def == tg_checkpoint_cell(tr->ck)) tr->owned_cell = tg_checkpoint_take_cell(tr->ck);
    tg_checkpoint_close(tr->ck); /* everything is restored; the names are static */
    tr->ck = NULL;
    if (st != TG_OK) {
        tg_trainer_free(tr);
        return st;
    }
    if (c->checkpoint && tr->lead) tg_checkpoint_clean_temps(c->checkpoint);
    *out = tr;
    return TG_OK;
}

const struct tg_train_config *tg_trainer_config(const struct tg_trainer *tr) { return &tr->cfg; }
struct tg_model *tg_trainer_model(const struct tg_trainer *tr) { return tr->model; }
struct tg_optim *tg_trainer_optim(const struct tg_trainer *tr) { return tr->optim; }
struct tg_task *tg_trainer_task(const struct tg_trainer *tr) { return tr->task; }
long tg_trainer_steps(const struct tg_trainer *tr) { return tr->step; }
double tg_trainer_last_loss(const struct tg_trainer *tr) { return tr->loss; }
int tg_trainer_failed_alone(const struct tg_trainer *tr) { return tr->failed_alone; }

/* ------------------------------------------------------------------ one step */

/* Row-wise softmax of logits (rows × C) into p, in double whatever the dtype. */
static void softmax_rows(const struct tg_tensor *l, double *p)
{
    int C = l->cols;
    for (int i = 0; i < l->rows; i++) {
        double *pi = p + (size_t)i * C, mx = -INFINITY, s = 0;
        for (int j = 0; j < C; j++) {
            size_t k = (size_t)i * C + j;
            pi[j] = l->dtype == TG_F64 ? ((const double *)l->data)[k] : ((const float *)l->data)[k];
            if (pi[j] > mx) mx = pi[j];
        }
        for (int j = 0; j < C; j++) s += (pi[j] = exp(pi[j] - mx));
        for (int j = 0; j < C; j++) pi[j] /= s;
    }
}

/* The outputs a metric reads: probabilities at rows [t0·B, …) or the last step's regression. */
void train_outputs(const struct tg_trainer *tr, const struct tg_seq_result *res, double *out,
                    int t0, int B)
{
    if (tr->regression) {
        for (int b = 0; b < B; b++) out[b] = tg_get(res->logits, b, 0);
    } else {
        softmax_rows(res->logits, out + (size_t)t0 * B * res->logits->cols);
    }
}

/* --recompute: the held-out forward in K-step segments, so that evaluating a long sequence
 * holds one segment, not T steps (no-grad ops still keep their outputs until the reset). */
struct eval_ctx {
    struct tg_trainer *tr;
    int T, B, K;
};

static enum tg_status eval_segment(void *ctx, int t0, const struct tg_seq_result *res)
{
    struct eval_ctx *e = ctx;
    if (!e->tr->regression || t0 + e->K >= e->T) train_outputs(e->tr, res, e->tr->eval_probs, t0, e->B);
    return TG_OK;
}

enum tg_status tg_trainer_eval(struct tg_trainer *tr, struct tg_metrics *out)
{
    struct tg_batch *b = &tr->eval_batch;
    struct tg_tape *t = tr->tape;
    struct tg_rng rng;
    tg_rng_seed(&rng, EVAL_SEED ^ tr->cfg.seed); /* the same held-out sequences every time */
    tg_metrics_reset(tr->eval_task, out);
    int batches = (tr->cfg.eval_size + b->B - 1) / b->B;
    enum tg_status st = TG_OK;
    int prev = tg_tape_set_no_grad(t, 1);
    for (int k = 0; k < batches && st == TG_OK; k++) {
        st = tg_task_next_batch(tr->eval_task, &rng, b);
        if (st != TG_OK) break;
        struct tg_seq_batch sb = {.T = b->T, .B = b->B, .x = b->x, .tokens = b->x ? NULL : b->tokens,
                                  .labels = b->labels, .lengths = b->lengths, .target = b->target};
        struct tg_seq_result res;
        tg_tape_reset(t);
        if (tr->eval_rc && tg_recompute_k(tr->eval_rc) < b->T) {
            struct eval_ctx e = {tr, b->T, b->B, tg_recompute_k(tr->eval_rc)};
            double loss;
            st = tg_model_forward_segments(tr->model, t, &sb, NULL, tr->eval_rc, &loss, eval_segment, &e);
            if (st != TG_OK) break;
        } else {
            st = tg_model_forward_from(tr->model, t, &sb, NULL, &res);
            if (st != TG_OK) break;
            train_outputs(tr, &res, tr->eval_probs, 0, b->B);
        }
        tg_task_metrics(tr->eval_task, b, tr->eval_probs, out);
    }
    tg_tape_reset(t);
    tg_tape_set_no_grad(t, prev);
    return st;
}

/* ------------------------------------------------------------------ checkpoints */

enum tg_status tg_trainer_save(struct tg_trainer *tr, const char *path)
{
    /* Across ranks: rank 0 collects every block's rows of the carried state, then writes. */
    struct tg_model *m = tr->model;
    if (tr->nranks > 1 && m->state_batch == tr->cfg.batch) {
        int K = tr->cfg.micro_batches;
        size_t rows = (size_t)(tr->cfg.batch / K) * m->cfg.hidden * tg_dtype_size(m->cfg.dtype);
        for (int i = 0; i < tg_model_n_states(m); i++)
            TRY(tg_dist_gather0(tr->cfg.dist, m->state[i]->data, rows, K));
    }
    if (!tr->lead) return TG_OK;
    struct tg_checkpoint_state s = {
        .step = tr->step, .optim_steps = tg_optim_steps(tr->optim),
        .cursor = tg_task_cursor(tr->task), .rng = tr->rng, .smooth_loss = tr->smooth_loss,
    };
    if (tr->text) {
        s.vocab_n = tg_task_vocab_size(tr->task);
        for (int i = 0; i < s.vocab_n; i++) s.vocab[i] = (uint8_t)tg_task_vocab_char(tr->task, i);
    }
    return tg_checkpoint_save(path, &tr->cfg, tr->model, tr->optim, &s);
}

/* ------------------------------------------------------------------ the run */

static void log_row(struct tg_trainer *tr, int evaluated, double seconds)
{
    FILE *f = tr->log.f;
    fprintf(f, "%ld,%.9g,%.9g,%.9g", tr->step, tr->loss, tr->smooth_loss, tr->grad_norm);
    for (int l = 0; l <= tr->cfg.layers; l++) fprintf(f, ",%.9g", tr->gnorm[l]);
    for (int i = 0; i < tr->train_m.n; i++) fprintf(f, ",%.9g", tr->train_m.values[i]);
    for (int i = 0; i < tr->eval_m.n; i++) {
        if (evaluated) fprintf(f, ",%.9g", tr->eval_m.values[i]);
        else fputc(',', f);
    }
    fprintf(f, ",%ld,%.3f\n", tr->tokens, seconds);
}

enum tg_status tg_trainer_run(struct tg_trainer *tr, struct tg_train_result *res)
{
    struct tg_train_result dummy;
    if (!res) res = &dummy;
    memset(res, 0, sizeof *res);
    const struct tg_train_config *c = &tr->cfg;
    double t0 = now_s();
    long start = tr->step;
    tr->tokens = 0;
    enum tg_status st = TG_OK;
    int done = 0;
    while (!done && tr->step < c->steps) {
        st = tg_trainer_step(tr);
        if (st != TG_OK) break;
        int evaluated = tr->step % c->eval_every == 0 || tr->step == c->steps;
        if (evaluated) {
            st = tg_trainer_eval(tr, &tr->eval_m);
            if (st != TG_OK) break;
            tr->have_eval = 1;
            tr->eval_step = tr->step;
            if (tg_task_solved(tr->eval_task, &tr->eval_m) && !res->solved) {
                res->solved = 1;
                res->solved_step = tr->step;
            }
            if (c->until_solved && res->solved) done = 1;
        }
        /* Across ranks, a stop is seen through the step's exchange, so all stop together. */
        int stop = tr->nranks > 1 ? tr->stop_seen : c->stop && *c->stop;
        if (stop) res->interrupted = done = 1;
        int ckpt = c->checkpoint && ((c->checkpoint_every && tr->step % c->checkpoint_every == 0) ||
                                     done || tr->step == c->steps);
        if (ckpt) {
            st = tg_trainer_save(tr, c->checkpoint);
            if (st != TG_OK) {
                tr->failed_alone = tr->nranks > 1;
                break;
            }
            res->checkpoint_written = 1;
        }
        double secs = now_s() - t0;
        if (tr->log.f) {
            log_row(tr, evaluated, secs);
            /* every row is flushed: a failure is seen (and cleaned up) at the step it hit */
            if ((st = train_log_flush(&tr->log)) != TG_OK) {
                tr->failed_alone = tr->nranks > 1;
                break;
            }
        }
        if (c->progress && tr->lead) {
            struct tg_train_progress p = {
                .cell = c->cell, .task = c->task, .step = tr->step, .total = c->steps,
                .start_step = start, .until_solved = c->until_solved, .loss = tr->loss,
                .smooth_loss = tr->smooth_loss, .grad_norm = tr->grad_norm, .train = &tr->train_m,
                .smooth_metric = tr->smooth_metric, .eval = evaluated ? &tr->eval_m : NULL,
                .last_eval = tr->have_eval ? &tr->eval_m : NULL, .seconds = secs,
                .tokens_per_s = secs > 0 ? (double)tr->tokens / secs : 0, .checkpointed = ckpt,
            };
            c->progress(&p, c->progress_ctx);
        }
    }
    if (st == TG_OK && tr->log.f) st = train_log_flush(&tr->log);
    /* Stopped outside a step (before the first, or after the last, whose checkpoint the loop
     * already wrote): nothing new to save. */
    if (st == TG_OK && c->stop && *c->stop) res->interrupted = 1;
    /* The result always carries a held-out evaluation of the final parameters. */
    if (st == TG_OK && !(tr->have_eval && tr->eval_step == tr->step)) {
        st = tg_trainer_eval(tr, &tr->eval_m);
        if (st == TG_OK && tg_task_solved(tr->eval_task, &tr->eval_m) && !res->solved) {
            res->solved = 1;
            res->solved_step = tr->step;
        }
    }
    res->steps = tr->step;
    res->steps_run = tr->step - start;
    res->seconds = now_s() - t0;
    res->loss = tr->loss;
    res->smooth_loss = tr->smooth_loss;
    res->eval = tr->eval_m;
    return st;
}

enum tg_status tg_train(const struct tg_train_config *cfg, struct tg_train_result *res)
{
    struct tg_trainer *tr;
    TRY(tg_trainer_new(cfg, &tr));
    enum tg_status st = tg_trainer_run(tr, res);
    tg_trainer_free(tr);
    return st;
}

/* ------------------------------------------------------------------ compare */

enum tg_status tg_train_compare(const struct tg_train_config *base, const char *cells,
                                FILE *table, struct tg_train_result *results, int max, int *n)
{
    if (n) *n = 0;
    if (!base || !cells) return tg_error(TG_ERR_VALUE, "tg_train_compare: NULL argument");
    if (base->checkpoint || base->resume)
        return tg_error(TG_ERR_VALUE, "--compare trains several models: it takes no --checkpoint or --resume");
    enum { MAXC = 16 };
    char names[MAXC][64];
    struct tg_train_result rs[MAXC];
    int k = 0;
    for (const char *p = cells; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof names[0] || k == MAXC)
            return tg_error(TG_ERR_VALUE, "--compare: bad cell list '%s' (comma-separated, at most %d)",
                            cells, MAXC);
        memcpy(names[k], p, len);
        names[k][len] = '\0';
        if (!tg_cell_find(names[k]) && !(base->cell_def && strcmp(base->cell_def->name, names[k]) == 0))
            return tg_error(TG_ERR_VALUE, "--compare: unknown cell '%s' (expected %s)", names[k],
                            tg_cell_names());
        k++;
        p += len + (p[len] == ',');
    }
    if (k == 0) return tg_error(TG_ERR_VALUE, "--compare: no cells given");
    for (int i = 0; i < k; i++) {
        struct tg_train_config c = *base;
        c.cell = names[i];
        if (c.cell_def && strcmp(c.cell_def->name, names[i]) != 0) c.cell_def = NULL;
        TRY(tg_train(&c, &rs[i]));
        if (results && i < max) results[i] = rs[i];
        if (n) *n = i + 1;
        if (c.stop && *c.stop) {
            k = i + 1;
            break;
        }
    }
    if (!table) return TG_OK;
    const struct tg_metrics *m0 = &rs[0].eval;
    fprintf(table, "%-14s", "cell");
    for (int j = 0; j < m0->n; j++) fprintf(table, " %12s", m0->names[j]);
    fprintf(table, " %10s %8s %9s\n", "solved at", "steps", "time");
    for (int i = 0; i < k; i++) {
        fprintf(table, "%-14s", names[i]);
        for (int j = 0; j < rs[i].eval.n; j++) fprintf(table, " %12.4f", rs[i].eval.values[j]);
        if (rs[i].solved) fprintf(table, " %10ld", rs[i].solved_step);
        else fprintf(table, " %10s", "no");
        fprintf(table, " %8ld %7.1f s\n", rs[i].steps, rs[i].seconds);
    }
    return TG_OK;
}
