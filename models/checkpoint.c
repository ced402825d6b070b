/* checkpoint.c — a training run's state in one safetensors file, written atomically and read
 * back exactly.
 *
 * Why each piece is there: the next optimizer step reads the parameters, the optimizer's moment
 * buffers and step count (Adam's bias correction 1 − βᵗ depends on t), the batch generator's
 * rng words, the text cursor (which chunk of each stream comes next) and the carried TBPTT state
 * (the initial state of the next chunk). Restore all of them and the step is the same function
 * of the same inputs, so the same bytes come out. Everything else (timers, the smoothed loss
 * shown on screen) only affects what is printed.
 *
 * Atomicity is tg_st_writer_save's: temp file in the same directory, fsync, rename, fsync the
 * directory. A kill mid-save leaves the old file and a stray "<path>.tmp.<pid>", which the next
 * run removes (tg_checkpoint_clean_temps) once that pid is gone. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tapegrad_train.h"

#define CKPT_FORMAT "tapegrad-checkpoint"
#define CKPT_VERSION "1"

struct tg_checkpoint {
    struct tg_st_file *f;
    struct tg_train_config cfg;
    struct tg_optim_config ocfg;
    struct tg_checkpoint_state st;
    int input, vocab_size, outputs;
    struct tg_cell *cell_file;    /* the cell file the run trained (metadata cell_source) */
};

/* ------------------------------------------------------------------ helpers */

/* PyTorch's state_dict keeps biases 1-D ([4H]) and weights 2-D; so do we, so that a checkpoint
 * loads into torch with load_state_dict after a plain rename of nothing. */
static int tensor_ndim(const char *name, const struct tg_tensor *x)
{
    return x->rows == 1 && strstr(name, "bias") ? 1 : 2;
}

/* A model parameter's ndim: the cell's declared one (a cell file's [N] is 1-D whatever its
 * name), else the rule above (embedding, output layer). */
static int param_ndim(const struct tg_model *m, int i)
{
    int s = m->param_spec[i];
    return s >= 0 ? tg_param_spec_ndim(&m->cfg.cell->params[s]) : tensor_ndim(m->names[i], m->params[i]);
}

static void shape_for(int ndim, const struct tg_tensor *x, int64_t shape[2])
{
    shape[0] = ndim == 1 ? x->cols : x->rows;
    shape[1] = ndim == 1 ? 0 : x->cols;
}

static void tensor_shape(const char *name, const struct tg_tensor *x, int64_t shape[2])
{
    if (tensor_ndim(name, x) == 1) {
        shape[0] = x->cols;
    } else {
        shape[0] = x->rows;
        shape[1] = x->cols;
    }
}

static enum tg_st_dtype st_dtype(enum tg_dtype d) { return d == TG_F64 ? TG_ST_F64 : TG_ST_F32; }

static void meta_int(struct tg_st_writer *w, const char *key, long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", v);
    tg_st_writer_meta(w, key, buf);
}

static void meta_dbl(struct tg_st_writer *w, const char *key, double v)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v); /* 17 digits: reads back to the same double */
    tg_st_writer_meta(w, key, buf);
}

static void add_i64(struct tg_st_writer *w, const char *name, const int64_t *v, int n)
{
    int64_t shape[1] = {n};
    tg_st_writer_add(w, name, TG_ST_I64, 1, shape, v);
}

/* "state.h_l0", "state.c_l0", "state.h_l0_reverse", … for the carried state tensor
 * i = (l·D + d)·n_state + k. */
static void state_name(const struct tg_model *m, int i, char *buf, size_t n)
{
    int ns = m->cfg.cell->n_state, D = tg_model_dirs(m);
    snprintf(buf, n, "state.%s_l%d%s", i % ns == 0 ? "h" : "c", i / ns / D, i / ns % D ? "_reverse" : "");
}

/* ------------------------------------------------------------------ writing */

enum tg_status tg_checkpoint_save(const char *path, const struct tg_train_config *cfg,
                                  const struct tg_model *m, const struct tg_optim *o,
                                  const struct tg_checkpoint_state *s)
{
    if (!path || !cfg || !m || !s)
        return tg_error(TG_ERR_VALUE, "tg_checkpoint_save: path, config, model or state is NULL");
    struct tg_st_writer *w = tg_st_writer_new();
    if (!w) return TG_ERR_NOMEM; /* the writer said why */
    int64_t shape[2];
    for (int i = 0; i < m->n_params; i++) {
        shape_for(param_ndim(m, i), m->params[i], shape);
        tg_st_writer_add_tensor(w, m->names[i], m->params[i], param_ndim(m, i), shape);
    }
    for (int i = 0; o && i < tg_optim_state_count(o); i++) {
        struct tg_tensor *x = tg_optim_state(o, i);
        tensor_shape(x->name, x, shape);
        tg_st_writer_add_tensor(w, x->name, x, tensor_ndim(x->name, x), shape);
    }
    if (m->state_batch > 0) {
        for (int i = 0; i < tg_model_n_states(m); i++) {
            char name[48];
            state_name(m, i, name, sizeof name);
            tg_st_writer_add_tensor(w, name, m->state[i], 2, NULL);
        }
    }
    int64_t v = s->step;
    add_i64(w, "train.step", &v, 1);
    v = s->optim_steps;
    add_i64(w, "train.optim_steps", &v, 1);
    add_i64(w, "train.cursor", &s->cursor, 1);
    int64_t words[4];
    for (int k = 0; k < 4; k++) words[k] = (int64_t)s->rng.s[k]; /* the bits, reinterpreted */
    add_i64(w, "train.rng", words, 4);
    int64_t one[1] = {1};
    tg_st_writer_add(w, "train.smooth_loss", TG_ST_F64, 1, one, &s->smooth_loss);

    tg_st_writer_meta(w, "format", CKPT_FORMAT);
    tg_st_writer_meta(w, "version", CKPT_VERSION);
    tg_st_writer_meta(w, "cell", m->cfg.cell->name);
    /* a cell file's text, so that --resume and sample need no file (and can refuse another) */
    if (tg_cell_source(m->cfg.cell, NULL)) tg_st_writer_meta(w, "cell_source", tg_cell_source(m->cfg.cell, NULL));
    tg_st_writer_meta(w, "task", cfg->task);
    if (cfg->data) tg_st_writer_meta(w, "data", cfg->data);
    if (cfg->valid) tg_st_writer_meta(w, "valid", cfg->valid);
    if (cfg->valid_fraction) meta_dbl(w, "valid_fraction", cfg->valid_fraction);
    if (cfg->lines) meta_int(w, "lines", cfg->lines);
    meta_int(w, "length", cfg->length);
    meta_int(w, "batch", cfg->batch);
    meta_int(w, "hidden", cfg->hidden);
    meta_int(w, "layers", cfg->layers);
    meta_int(w, "embed", cfg->embed);
    meta_int(w, "seq", cfg->seq);
    meta_int(w, "micro_batches", cfg->micro_batches > 0 ? cfg->micro_batches : 1);
    tg_st_writer_meta(w, "dtype", m->cfg.dtype == TG_F64 ? "f64" : "f32");
    tg_st_writer_meta(w, "optimizer", cfg->optimizer);
    meta_dbl(w, "lr", cfg->lr);
    meta_dbl(w, "momentum", cfg->momentum);
    meta_dbl(w, "clip_value", cfg->clip_value);
    meta_dbl(w, "clip_norm", cfg->clip_norm);
    tg_st_writer_meta(w, "loss", cfg->loss);
    tg_st_writer_meta(w, "init", cfg->init);
    meta_dbl(w, "forget_bias", cfg->forget_bias);
    meta_int(w, "bidirectional", m->cfg.bidirectional);
    meta_dbl(w, "dropout", m->cfg.dropout);
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, cfg->seed);
    tg_st_writer_meta(w, "seed", seed);
    meta_int(w, "step", s->step);
    meta_int(w, "input", m->cfg.input);
    meta_int(w, "vocab_size", m->cfg.vocab);
    meta_int(w, "outputs", m->cfg.outputs);
    if (s->vocab_n > 0) {
        char hex[513];
        for (int i = 0; i < s->vocab_n && i < 256; i++) snprintf(hex + 2 * i, 3, "%02x", s->vocab[i]);
        hex[2 * s->vocab_n] = '\0';
        tg_st_writer_meta(w, "vocab_hex", hex);
    }
    if (o) {
        const struct tg_optim_config *oc = tg_optim_get_config(o);
        tg_st_writer_meta(w, "optim.kind", tg_optim_kind_name(oc->kind));
        meta_dbl(w, "optim.lr", oc->lr);
        meta_dbl(w, "optim.momentum", oc->momentum);
        meta_dbl(w, "optim.dampening", oc->dampening);
        meta_dbl(w, "optim.weight_decay", oc->weight_decay);
        meta_int(w, "optim.nesterov", oc->nesterov);
        meta_dbl(w, "optim.beta1", oc->beta1);
        meta_dbl(w, "optim.beta2", oc->beta2);
        meta_dbl(w, "optim.eps", oc->eps);
        meta_dbl(w, "optim.alpha", oc->alpha);
        meta_dbl(w, "optim.lr_decay", oc->lr_decay);
        meta_dbl(w, "optim.initial_accumulator_value", oc->initial_accumulator_value);
        meta_int(w, "optim.amsgrad", oc->amsgrad);
        meta_int(w, "optim.centered", oc->centered);
        meta_int(w, "optim.adagrad_minchar", oc->adagrad_minchar);
    }
    enum tg_status st = tg_st_writer_save(w, path);
    tg_st_writer_free(w);
    return st;
}

/* ------------------------------------------------------------------ reading */

static enum tg_status bad(const struct tg_checkpoint *c, const char *key)
{
    return tg_error(TG_ERR_FORMAT, "checkpoint %s: metadata '%s' is missing or malformed",
                    tg_st_path(c->f), key);
}

/* A scalar state tensor whose value cannot be (the metadata is fine; the tensor is not). */
static enum tg_status bad_value(const struct tg_checkpoint *c, const char *name, int64_t v,
                                const char *why)
{
    return tg_error(TG_ERR_FORMAT, "checkpoint %s: tensor '%s' is %" PRId64 ", %s",
                    tg_st_path(c->f), name, v, why);
}

static enum tg_status get_str(const struct tg_checkpoint *c, const char *key, const char **out)
{
    const char *v = tg_st_meta(c->f, key);
    if (!v || !*v) return bad(c, key);
    *out = v;
    return TG_OK;
}

static enum tg_status get_long(const struct tg_checkpoint *c, const char *key, long lo, long hi,
                               long *out)
{
    const char *v = tg_st_meta(c->f, key);
    char *end;
    if (!v) return bad(c, key);
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return bad(c, key);
    *out = x;
    return TG_OK;
}

static enum tg_status get_int(const struct tg_checkpoint *c, const char *key, int lo, int hi, int *out)
{
    long x;
    enum tg_status st = get_long(c, key, lo, hi, &x);
    if (st == TG_OK) *out = (int)x;
    return st;
}

static enum tg_status get_dbl(const struct tg_checkpoint *c, const char *key, double *out)
{
    const char *v = tg_st_meta(c->f, key);
    char *end;
    if (!v) return bad(c, key);
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x)) return bad(c, key);
    *out = x;
    return TG_OK;
}

#define TRY(expr)                                                                              \
    do {                                                                                       \
        enum tg_status st_ = (expr);                                                           \
        if (st_ != TG_OK) return st_;                                                          \
    } while (0)

static enum tg_status parse(struct tg_checkpoint *c)
{
    struct tg_train_config *cfg = &c->cfg;
    const char *fmt = tg_st_meta(c->f, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0)
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: not a tapegrad checkpoint (no format tag "
                        "'%s' in its metadata)", tg_st_path(c->f), CKPT_FORMAT);
    const char *ver = tg_st_meta(c->f, "version");
    if (!ver || strcmp(ver, CKPT_VERSION) != 0)
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: version '%s' is not supported (expected %s)",
                        tg_st_path(c->f), ver ? ver : "(none)", CKPT_VERSION);
    const int BIG = 1 << 30;
    TRY(get_str(c, "cell", &cfg->cell));
    const char *src = tg_st_meta(c->f, "cell_source");
    if (src) {
        char where[600];
        /* named as if it were the file "<cell>.cell": a file without a `cell` line takes its
         * name from its file name, which the checkpoint does not keep */
        snprintf(where, sizeof where, "%s (cell_source)/%s.cell", tg_st_path(c->f), cfg->cell);
        c->cell_file = tg_cell_parse(src, strlen(src), where);
        if (!c->cell_file) return TG_ERR_FORMAT; /* the parser's FILE:LINE:COL message */
        if (strcmp(c->cell_file->name, cfg->cell) != 0) return bad(c, "cell_source");
    }
    TRY(get_str(c, "task", &cfg->task));
    cfg->data = tg_st_meta(c->f, "data");
    /* held-out text and lines (issue 14); older checkpoints have neither */
    cfg->valid = tg_st_meta(c->f, "valid");
    if (tg_st_meta(c->f, "valid_fraction")) TRY(get_dbl(c, "valid_fraction", &cfg->valid_fraction));
    if (!(cfg->valid_fraction >= 0 && cfg->valid_fraction < 1)) return bad(c, "valid_fraction");
    if (tg_st_meta(c->f, "lines")) TRY(get_int(c, "lines", 0, 1, &cfg->lines));
    TRY(get_int(c, "length", 0, BIG, &cfg->length));
    TRY(get_int(c, "batch", 1, BIG, &cfg->batch));
    TRY(get_int(c, "hidden", 1, BIG, &cfg->hidden));
    TRY(get_int(c, "layers", 1, BIG, &cfg->layers));
    TRY(get_int(c, "embed", 0, BIG, &cfg->embed));
    TRY(get_int(c, "seq", 0, BIG, &cfg->seq));
    /* data parallelism (issue 16); older checkpoints ran the batch as one block */
    cfg->micro_batches = 1;
    if (tg_st_meta(c->f, "micro_batches")) TRY(get_int(c, "micro_batches", 1, BIG, &cfg->micro_batches));
    TRY(get_str(c, "dtype", &cfg->dtype));
    if (strcmp(cfg->dtype, "f32") != 0 && strcmp(cfg->dtype, "f64") != 0) return bad(c, "dtype");
    TRY(get_str(c, "optimizer", &cfg->optimizer));
    TRY(get_dbl(c, "lr", &cfg->lr));
    TRY(get_dbl(c, "momentum", &cfg->momentum));
    TRY(get_dbl(c, "clip_value", &cfg->clip_value));
    TRY(get_dbl(c, "clip_norm", &cfg->clip_norm));
    TRY(get_str(c, "loss", &cfg->loss));
    TRY(get_str(c, "init", &cfg->init));
    TRY(get_dbl(c, "forget_bias", &cfg->forget_bias));
    /* issue 14; older checkpoints are one-directional without dropout */
    if (tg_st_meta(c->f, "bidirectional")) TRY(get_int(c, "bidirectional", 0, 1, &cfg->bidirectional));
    if (tg_st_meta(c->f, "dropout")) {
        TRY(get_dbl(c, "dropout", &cfg->dropout));
        if (cfg->dropout < 0 || cfg->dropout >= 1) return bad(c, "dropout");
    }
    const char *seed = tg_st_meta(c->f, "seed");
    char *end;
    if (!seed || !*seed) return bad(c, "seed");
    errno = 0;
    cfg->seed = strtoull(seed, &end, 10);
    if (errno || *end) return bad(c, "seed");
    TRY(get_int(c, "input", 1, BIG, &c->input));
    TRY(get_int(c, "vocab_size", 0, 256, &c->vocab_size));
    TRY(get_int(c, "outputs", 1, BIG, &c->outputs));
    const char *hex = tg_st_meta(c->f, "vocab_hex");
    if (hex) {
        size_t n = strlen(hex);
        if (n % 2 || n / 2 > 256 || n / 2 != (size_t)c->vocab_size) return bad(c, "vocab_hex");
        for (size_t i = 0; i < n / 2; i++) {
            unsigned byte;
            char two[3] = {hex[2 * i], hex[2 * i + 1], 0};
            if (sscanf(two, "%2x", &byte) != 1 || !strchr("0123456789abcdef", two[0]) ||
                !strchr("0123456789abcdef", two[1]))
                return bad(c, "vocab_hex");
            c->st.vocab[i] = (uint8_t)byte;
        }
        c->st.vocab_n = (int)(n / 2);
    }
    /* optimizer */
    struct tg_optim_config *o = &c->ocfg;
    const char *kind;
    TRY(get_str(c, "optim.kind", &kind));
    if (tg_optim_parse_kind(kind, &o->kind) != TG_OK) return bad(c, "optim.kind");
    TRY(get_dbl(c, "optim.lr", &o->lr));
    TRY(get_dbl(c, "optim.momentum", &o->momentum));
    TRY(get_dbl(c, "optim.dampening", &o->dampening));
    TRY(get_dbl(c, "optim.weight_decay", &o->weight_decay));
    TRY(get_int(c, "optim.nesterov", 0, 1, &o->nesterov));
    TRY(get_dbl(c, "optim.beta1", &o->beta1));
    TRY(get_dbl(c, "optim.beta2", &o->beta2));
    TRY(get_dbl(c, "optim.eps", &o->eps));
    TRY(get_dbl(c, "optim.alpha", &o->alpha));
    TRY(get_dbl(c, "optim.lr_decay", &o->lr_decay));
    TRY(get_dbl(c, "optim.initial_accumulator_value", &o->initial_accumulator_value));
    TRY(get_int(c, "optim.amsgrad", 0, 1, &o->amsgrad));
    TRY(get_int(c, "optim.centered", 0, 1, &o->centered));
    TRY(get_int(c, "optim.adagrad_minchar", 0, 1, &o->adagrad_minchar));
    /* scalar state */
    int64_t v[4];
    const int64_t one[1] = {1}, four[1] = {4};
    TRY(tg_st_get_i64(c->f, "train.step", v, 1, 1, one));
    if (v[0] < 0) return bad_value(c, "train.step", v[0], "expected a step count >= 0");
    c->st.step = (long)v[0];
    /* The step is written twice (metadata for people and tools, the tensor for the trainer);
     * a file in which they differ was edited or damaged, and which one is right is unknown. */
    long meta_step;
    TRY(get_long(c, "step", 0, LONG_MAX, &meta_step));
    if (meta_step != c->st.step)
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: metadata 'step' is %ld but tensor "
                        "'train.step' is %ld", tg_st_path(c->f), meta_step, c->st.step);
    TRY(tg_st_get_i64(c->f, "train.optim_steps", v, 1, 1, one));
    if (v[0] < 0) return bad_value(c, "train.optim_steps", v[0], "expected a step count >= 0");
    c->st.optim_steps = (long)v[0];
    TRY(tg_st_get_i64(c->f, "train.cursor", v, 1, 1, one));
    if (v[0] < 0) return bad_value(c, "train.cursor", v[0], "expected a text position >= 0");
    c->st.cursor = v[0];
    TRY(tg_st_get_i64(c->f, "train.rng", v, 4, 1, four));
    for (int k = 0; k < 4; k++) c->st.rng.s[k] = (uint64_t)v[k];
    TRY(tg_st_get_f64(c->f, "train.smooth_loss", &c->st.smooth_loss, 1, 1, one));
    return TG_OK;
}

enum tg_status tg_checkpoint_open(const char *path, struct tg_checkpoint **out)
{
    if (!out) return tg_error(TG_ERR_VALUE, "tg_checkpoint_open: out is NULL");
    *out = NULL;
    if (!path) return tg_error(TG_ERR_VALUE, "tg_checkpoint_open: path is NULL");
    struct tg_checkpoint *c = calloc(1, sizeof *c);
    if (!c) return tg_error(TG_ERR_NOMEM, "tg_checkpoint_open: out of memory");
    enum tg_status st = tg_st_read(path, &c->f);
    if (st == TG_OK) st = parse(c);
    if (st != TG_OK) {
        tg_checkpoint_close(c);
        return st;
    }
    *out = c;
    return TG_OK;
}

void tg_checkpoint_close(struct tg_checkpoint *c)
{
    if (!c) return;
    tg_st_close(c->f);
    tg_cell_free(c->cell_file);
    free(c);
}

const struct tg_train_config *tg_checkpoint_config(const struct tg_checkpoint *c) { return &c->cfg; }
const struct tg_cell *tg_checkpoint_cell(const struct tg_checkpoint *c) { return c->cell_file; }

struct tg_cell *tg_checkpoint_take_cell(struct tg_checkpoint *c)
{
    struct tg_cell *cell = c->cell_file;
    c->cell_file = NULL;
    return cell;
}
const struct tg_checkpoint_state *tg_checkpoint_state(const struct tg_checkpoint *c) { return &c->st; }
const struct tg_optim_config *tg_checkpoint_optim_config(const struct tg_checkpoint *c) { return &c->ocfg; }

void tg_checkpoint_model_dims(const struct tg_checkpoint *c, int *input, int *vocab, int *outputs)
{
    if (input) *input = c->input;
    if (vocab) *vocab = c->vocab_size;
    if (outputs) *outputs = c->outputs;
}

/* One tensor of the file into x: present, of x's dtype exactly (a float64 file does not load
 * into a float32 run silently), finite (a NaN or infinite weight, moment or carried state
 * would only give NaN losses or garbage samples later, far from the cause), of x's shape. */
static enum tg_status load_tensor(const struct tg_checkpoint *c, const char *name,
                                  struct tg_tensor *x, int ndim, const int64_t *shape)
{
    const struct tg_st_tensor *t = tg_st_find(c->f, name);
    if (!t)
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: tensor '%s' is missing", tg_st_path(c->f), name);
    if (t->dtype != st_dtype(x->dtype))
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: tensor '%s' is %s, the model is %s",
                        tg_st_path(c->f), name, tg_st_dtype_name(t->dtype), tg_dtype_name(x->dtype));
    TRY(tg_st_check_finite(c->f, t, "checkpoint"));
    return tg_st_get_tensor(c->f, name, x, ndim, shape);
}

enum tg_status tg_checkpoint_load_model(const struct tg_checkpoint *c, struct tg_model *m)
{
    if (!c || !m) return tg_error(TG_ERR_VALUE, "tg_checkpoint_load_model: NULL argument");
    if (strcmp(m->cfg.cell->name, c->cfg.cell) != 0)
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: written for cell '%s', the model is '%s'",
                        tg_st_path(c->f), c->cfg.cell, m->cfg.cell->name);
    if (c->cell_file && !tg_cell_same_source(c->cell_file, m->cfg.cell))
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: written for another definition of cell '%s' "
                        "(the cell file's text differs from the one saved in the checkpoint)",
                        tg_st_path(c->f), c->cfg.cell);
    if (!c->cell_file && tg_cell_source(m->cfg.cell, NULL))
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: written for the built-in cell '%s', the model "
                        "is the cell file %s", tg_st_path(c->f), c->cfg.cell, tg_cell_path(m->cfg.cell));
    int64_t shape[2];
    for (int i = 0; i < m->n_params; i++) {
        shape_for(param_ndim(m, i), m->params[i], shape);
        TRY(load_tensor(c, m->names[i], m->params[i], param_ndim(m, i), shape));
    }
    /* The carried state: all of it or none. */
    int n = tg_model_n_states(m);
    char name[48];
    state_name(m, 0, name, sizeof name);
    const struct tg_st_tensor *s0 = tg_st_find(c->f, name);
    tg_model_reset_state(m);
    if (!s0) return TG_OK;
    if (s0->ndim != 2 || s0->shape[0] < 1 || s0->shape[0] > (1 << 20) || s0->shape[1] != m->cfg.hidden)
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: carried state '%s' has the wrong shape",
                        tg_st_path(c->f), name);
    int B = (int)s0->shape[0];
    int64_t sshape[2] = {B, m->cfg.hidden};
    for (int i = 0; i < n; i++) {
        m->state[i] = tg_tensor_new_heap(B, m->cfg.hidden, m->cfg.dtype);
        if (!m->state[i]) {
            tg_model_reset_state(m);
            return tg_error(TG_ERR_NOMEM, "tg_checkpoint_load_model: out of memory");
        }
    }
    m->state_batch = B;
    for (int i = 0; i < n; i++) {
        state_name(m, i, name, sizeof name);
        enum tg_status st = load_tensor(c, name, m->state[i], 2, sshape);
        if (st != TG_OK) {
            tg_model_reset_state(m);
            return st;
        }
    }
    return TG_OK;
}

enum tg_status tg_checkpoint_load_optim(const struct tg_checkpoint *c, struct tg_optim *o)
{
    if (!c || !o) return tg_error(TG_ERR_VALUE, "tg_checkpoint_load_optim: NULL argument");
    int64_t shape[2];
    for (int i = 0; i < tg_optim_state_count(o); i++) {
        struct tg_tensor *x = tg_optim_state(o, i);
        tensor_shape(x->name, x, shape);
        TRY(load_tensor(c, x->name, x, tensor_ndim(x->name, x), shape));
    }
    return tg_optim_set_steps(o, c->st.optim_steps);
}

/* a += b, saturating: sizes from a damaged file may claim anything */
static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

static int64_t sat_mul(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

enum tg_status tg_checkpoint_check_model_size(const struct tg_checkpoint *c,
                                              const struct tg_model_config *mc)
{
    if (!c || !mc || !mc->cell) return tg_error(TG_ERR_VALUE, "tg_checkpoint_check_model_size: NULL argument");
    /* What the file holds: every float tensor (validated, so the sum is at most its size). */
    int64_t have = 0;
    for (int i = 0; i < tg_st_count(c->f); i++) {
        const struct tg_st_tensor *t = tg_st_at(c->f, i);
        if (t->dtype == TG_ST_F32 || t->dtype == TG_ST_F64) have += tg_st_numel(t);
    }
    /* What the model would allocate, counted as tg_model_new lays it out (stopping as soon as
     * it is too much: a million layers need not be counted to the end). */
    int D = mc->bidirectional ? 2 : 1;
    int64_t need = sat_add(sat_mul(mc->vocab, mc->input), sat_mul(mc->outputs, sat_add(sat_mul(D, mc->hidden), 1)));
    for (int64_t ld = 0; ld < (int64_t)mc->layers * D && need <= have; ld++) {
        for (int s = 0; s < mc->cell->n_params; s++) {
            int rows, cols;
            if (!tg_param_spec_dims(&mc->cell->params[s], ld >= D ? D * mc->hidden : mc->input, mc->hidden,
                                    &rows, &cols))
                need = INT64_MAX;
            else
                need = sat_add(need, (int64_t)rows * cols);
        }
    }
    if (need > have)
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: its metadata (cell %s, hidden %d, layers %d, "
                        "input %d, vocab %d, outputs %d) describes more weights than the %" PRId64
                        " numbers the file holds (damaged or edited metadata?)", tg_st_path(c->f),
                        mc->cell->name, mc->hidden, mc->layers, mc->input, mc->vocab, mc->outputs,
                        have);
    return TG_OK;
}

enum tg_status tg_checkpoint_new_model(const struct tg_checkpoint *c, const struct tg_cell *cell_def,
                                       struct tg_model **out)
{
    if (!c || !out) return tg_error(TG_ERR_VALUE, "tg_checkpoint_new_model: NULL argument");
    *out = NULL;
    const struct tg_cell *cell = cell_def && strcmp(cell_def->name, c->cfg.cell) == 0 ? cell_def
                                 : c->cell_file ? c->cell_file : tg_cell_find(c->cfg.cell);
    if (!cell)
        return tg_error(TG_ERR_FORMAT, "checkpoint %s: unknown cell '%s' (built-in: %s)",
                        tg_st_path(c->f), c->cfg.cell, tg_cell_names());
    int is_xent = strcmp(c->cfg.task, "adding") != 0;
    struct tg_model_config mc = {
        .cell = cell, .input = c->input, .vocab = c->vocab_size, .hidden = c->cfg.hidden,
        .layers = c->cfg.layers, .outputs = c->outputs,
        .dtype = strcmp(c->cfg.dtype, "f64") == 0 ? TG_F64 : TG_F32,
        .loss = is_xent ? TG_LOSS_XENT_SUM : TG_LOSS_MSE_LAST,
        .bidirectional = c->cfg.bidirectional, .dropout = c->cfg.dropout,
    };
    struct tg_model *m;
    TRY(tg_checkpoint_check_model_size(c, &mc)); /* before allocating what the metadata says */
    TRY(tg_model_new(&mc, &m));
    enum tg_status st = tg_checkpoint_load_model(c, m);
    if (st != TG_OK) {
        tg_model_free(m);
        return st;
    }
    *out = m;
    return TG_OK;
}

/* ------------------------------------------------------------------ stray temporaries */

int tg_checkpoint_clean_temps(const char *path)
{
    if (!path || !*path) return 0;
    char dir[4096];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash) {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return 0;
        memcpy(dir, path, n);
        dir[n] = '\0';
        if (n == 0) strcpy(dir, "/");
    } else {
        strcpy(dir, ".");
    }
    char prefix[1024];
    if (snprintf(prefix, sizeof prefix, "%s.tmp.", base) >= (int)sizeof prefix) return 0;
    size_t plen = strlen(prefix);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, plen) != 0) continue;
        char *end;
        errno = 0;
        long pid = strtol(e->d_name + plen, &end, 10);
        if (errno || *end || pid <= 0 || end == e->d_name + plen) continue;
        /* Only files of processes that are gone: a live writer's temp is its business. */
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char full[4096 + 256];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (unlink(full) == 0) removed++;
    }
    closedir(d);
    return removed;
}
