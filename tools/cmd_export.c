/* cmd_export.c — `tapegrad export`: a checkpoint's model parameters, alone, for PyTorch or numpy.
 *
 *   tapegrad export --checkpoint run.safetensors --out model.safetensors
 *   tapegrad export --checkpoint run.safetensors --out model_npy --format npy
 *   tapegrad export --checkpoint run.safetensors --out model_csv --format csv
 *
 * safetensors: exactly the state_dict of a module with submodules `embed` (nn.Embedding(V, E),
 * text models only), `rnn` (nn.RNN(I, H, L, nonlinearity=…) / nn.LSTM / nn.GRU for the built-in
 * PyTorch-layout cells rnn_tanh, rnn_relu, lstm, gru — or a cell file restating one of them) and
 * `out` (nn.Linear(H, V)): rnn.weight_ih_l{k} …, out.weight, out.bias, embed.weight, biases 1-D,
 * in the checkpoint's dtype, so `module.load_state_dict(safetensors.torch.load_file(…))` takes
 * it. Other cells keep the cell file's names (rnn.<param>_l{k}, declared shapes). No optimizer
 * state, step, rng or carried state. __metadata__ says how to build the module: format
 * "tapegrad-export", torch_module (RNN, LSTM, GRU or none), nonlinearity, input_size,
 * hidden_size, num_layers, vocab_size, outputs, dtype, and what the checkpoint had of cell,
 * cell_source, task, vocab_hex, embed, lines, bidirectional, dropout.
 *
 * npy / csv: a new folder holding one file per tensor (NAME.npy: numpy's format 1.0,
 * little-endian, C order; NAME.csv: one line per row, a 1-D tensor on one line, 9 significant
 * digits for float32 and 17 for float64 — both read back exactly) and model.json (the metadata
 * above and every tensor's name, file, dtype and shape).
 *
 * Written atomically: the file (or the folder, built under a temporary name and renamed) appears
 * whole or not at all. --out may not be the checkpoint; a folder --out must not exist yet. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "tapegrad_fileio.h"
#include "tapegrad_safetensors.h"
#include "tapegrad_train.h"

static const char CMD[] = "export";

/* Checkpoint metadata that describes the model (copied when present). */
static const char *const KEEP_META[] = {"cell", "cell_source", "task", "vocab_hex", "embed",
                                        "lines", "bidirectional", "dropout", NULL};

struct export {
    const struct tg_st_file *ck;          /* the checkpoint's tensors and metadata */
    const struct tg_model *m;
    char keys[24][32];                    /* metadata written, in order */
    char *vals[24];
    int n_meta;
};

static void meta(struct export *e, const char *key, const char *val)
{
    if (e->n_meta >= 24 || !val) return;
    snprintf(e->keys[e->n_meta], sizeof e->keys[0], "%s", key);
    e->vals[e->n_meta++] = strdup(val);
}

static void meta_int(struct export *e, const char *key, long v)
{
    char b[32];
    snprintf(b, sizeof b, "%ld", v);
    meta(e, key, b);
}

/* The PyTorch module a cell's parameters load into, or NULL. */
static const char *torch_module(const struct tg_cell *cell, const char **nonlin)
{
    *nonlin = NULL;
    if (tg_cell_source(cell, NULL) && !cli_cell_is_builtin_layout(cell)) return NULL;
    const char *n = cell->name;
    if (!strcmp(n, "rnn_tanh") || !strcmp(n, "rnn_relu")) {
        *nonlin = n + 4;
        return "RNN";
    }
    if (!strcmp(n, "lstm")) return "LSTM";
    if (!strcmp(n, "gru")) return "GRU";
    return NULL;
}

static void describe(struct export *e, const struct tg_cell *cell)
{
    const struct tg_model_config *c = &e->m->cfg;
    const char *nonlin, *mod = torch_module(cell, &nonlin);
    meta(e, "format", "tapegrad-export");
    meta(e, "version", "1");
    meta(e, "torch_module", mod ? mod : "none");
    if (nonlin) meta(e, "nonlinearity", nonlin);
    meta_int(e, "input_size", c->input);
    meta_int(e, "hidden_size", c->hidden);
    meta_int(e, "num_layers", c->layers);
    meta_int(e, "vocab_size", c->vocab);
    meta_int(e, "outputs", c->outputs);
    meta(e, "dtype", c->dtype == TG_F64 ? "f64" : "f32");
    for (int k = 0; KEEP_META[k]; k++) meta(e, KEEP_META[k], tg_st_meta(e->ck, KEEP_META[k]));
}

/* The checkpoint's tensor for parameter i (its stored shape: biases 1-D). */
static const struct tg_st_tensor *param(const struct export *e, int i)
{
    return tg_st_find(e->ck, e->m->names[i]);
}

/* ------------------------------------------------------------------ safetensors */

static enum tg_status write_safetensors(const struct export *e, const char *out)
{
    struct tg_st_writer *w = tg_st_writer_new();
    if (!w) return TG_ERR_NOMEM;
    for (int i = 0; i < e->m->n_params; i++) {
        const struct tg_st_tensor *t = param(e, i);
        tg_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    for (int k = 0; k < e->n_meta; k++) tg_st_writer_meta(w, e->keys[k], e->vals[k]);
    enum tg_status st = tg_st_writer_save(w, out); /* atomic */
    tg_st_writer_free(w);
    return st;
}

/* ------------------------------------------------------------------ folders */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static int write_npy(FILE *f, const struct tg_st_tensor *t)
{
    char h[256];
    int n = snprintf(h, sizeof h, "{'descr': '<f%d', 'fortran_order': False, 'shape': (",
                     t->dtype == TG_ST_F64 ? 8 : 4);
    for (int k = 0; k < t->ndim; k++)
        n += snprintf(h + n, sizeof h - (size_t)n, "%" PRId64 "%s", t->shape[k],
                      t->ndim == 1 ? "," : k + 1 < t->ndim ? ", " : "");
    n += snprintf(h + n, sizeof h - (size_t)n, "), }");
    /* magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64,
     * ending in '\n' (the format's rule, so the data is aligned) */
    int total = (10 + n + 1 + 63) / 64 * 64;
    while (10 + n + 1 < total) h[n++] = ' ';
    h[n++] = '\n';
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff),
                             (unsigned char)(n >> 8)};
    fwrite(pre, 1, 10, f);
    fwrite(h, 1, (size_t)n, f);
    fwrite(t->data, 1, t->nbytes, f); /* safetensors data is little-endian, C order too */
    return ferror(f) ? -1 : 0;
}

static int write_csv(FILE *f, const struct tg_st_tensor *t)
{
    int64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1, n = tg_st_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == TG_ST_F64) fprintf(f, "%.17g", ((const double *)t->data)[i]);
        else fprintf(f, "%.9g", (double)((const float *)t->data)[i]);
        fputc((i + 1) % cols == 0 ? '\n' : ',', f);
    }
    return ferror(f) ? -1 : 0;
}

/* Remove the temporary folder and what we put in it. */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        char p[4400];
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

static int close_file(FILE *f, const char *path)
{
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int e = errno;
    bad |= fclose(f) != 0;
    if (bad) return cli_fail(CMD, "writing %s failed: %s", path, strerror(e ? e : errno));
    return 0;
}

static int write_folder(const struct export *e, const char *out, int npy)
{
    char tmp[4096], p[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    if (mkdir(tmp, 0777) != 0)
        return cli_fail(CMD, "cannot create folder %s: %s", tmp, strerror(errno));
    int rc = 0;
    for (int i = 0; i < e->m->n_params && !rc; i++) {
        const struct tg_st_tensor *t = param(e, i);
        snprintf(p, sizeof p, "%s/%s.%s", tmp, t->name, npy ? "npy" : "csv");
        FILE *f = fopen(p, "wb");
        if (!f) {
            rc = cli_fail(CMD, "cannot create %s: %s", p, strerror(errno));
            break;
        }
        if (npy) write_npy(f, t);
        else write_csv(f, t);
        rc = close_file(f, p);
    }
    if (!rc) {
        snprintf(p, sizeof p, "%s/model.json", tmp);
        FILE *f = fopen(p, "w");
        if (!f) rc = cli_fail(CMD, "cannot create %s: %s", p, strerror(errno));
        if (f) {
            fputs("{\n  \"metadata\": {", f);
            for (int k = 0; k < e->n_meta; k++) {
                fputs(k ? ",\n    " : "\n    ", f);
                json_str(f, e->keys[k]);
                fputs(": ", f);
                json_str(f, e->vals[k]);
            }
            fputs("\n  },\n  \"tensors\": [", f);
            for (int i = 0; i < e->m->n_params; i++) {
                const struct tg_st_tensor *t = param(e, i);
                fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
                json_str(f, t->name);
                fprintf(f, ", \"file\": \"%s.%s\", \"dtype\": \"%s\", \"shape\": [", t->name,
                        npy ? "npy" : "csv", t->dtype == TG_ST_F64 ? "float64" : "float32");
                for (int k = 0; k < t->ndim; k++) fprintf(f, "%s%" PRId64, k ? ", " : "", t->shape[k]);
                fputs("]}", f);
            }
            fputs("\n  ]\n}\n", f);
            rc = close_file(f, p);
        }
    }
    if (!rc && rename(tmp, out) != 0)
        rc = cli_fail(CMD, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
    if (rc) remove_dir(tmp);
    return rc;
}

/* ------------------------------------------------------------------ command */

int cmd_export(int argc, char **argv)
{
    const char *checkpoint = NULL, *out = NULL, *format = "safetensors";
    const struct cli_flag flags[] = {
        {"checkpoint", CLI_STR, &checkpoint, "a tapegrad train checkpoint (required)", 0, -1},
        {"out", CLI_STR, &out, "the file (safetensors) or the new folder (npy, csv) to write (required)", 0, -1},
        {"format", CLI_STR, &format, "safetensors (PyTorch's load_state_dict names), npy or csv "
         "(a folder: one file per tensor and model.json) [safetensors]", 0, -1},
    };
    int r = cli_parse(CMD, "--checkpoint run.safetensors --out model.safetensors [--format safetensors|npy|csv]",
                      argc, argv, flags, (int)(sizeof flags / sizeof flags[0]));
    if (r != 0) return r < 0 ? 1 : 0;
    if (!checkpoint) return cli_fail(CMD, "--checkpoint FILE is required");
    if (!out || !*out) return cli_fail(CMD, "--out is required");
    int st_fmt = !strcmp(format, "safetensors"), npy = !strcmp(format, "npy");
    if (!st_fmt && !npy && strcmp(format, "csv") != 0)
        return cli_fail(CMD, "unknown --format '%s' (expected safetensors, npy or csv)", format);
    if (tg_file_same(out, checkpoint))
        return cli_fail(CMD, "--out %s is the same file as --checkpoint %s; writing there would "
                        "destroy the input (give another --out)", out, checkpoint);
    struct stat sb;
    if (!st_fmt && lstat(out, &sb) == 0)
        return cli_fail(CMD, "--out %s already exists; --format %s writes a new folder (remove it "
                        "or give another name)", out, format);

    struct tg_checkpoint *ck;
    if (tg_checkpoint_open(checkpoint, &ck) != TG_OK) return cli_fail(CMD, "%s", tg_last_error());
    struct tg_model *m = NULL;
    struct tg_st_file *f = NULL;
    int rc = 0;
    if (tg_checkpoint_new_model(ck, tg_checkpoint_cell(ck), &m) != TG_OK ||
        tg_st_read(checkpoint, &f) != TG_OK)
        rc = cli_fail(CMD, "%s", tg_last_error());
    struct export e = {.ck = f, .m = m};
    for (int i = 0; !rc && i < m->n_params; i++)
        if (!param(&e, i)) /* validated by the checkpoint's reader; a safety net */
            rc = cli_fail(CMD, "%s: tensor '%s' is missing", checkpoint, m->names[i]);
    if (!rc) {
        describe(&e, m->cfg.cell);
        if (st_fmt) {
            if (write_safetensors(&e, out) != TG_OK) rc = cli_fail(CMD, "%s", tg_last_error());
        } else {
            rc = write_folder(&e, out, npy);
        }
    }
    if (!rc) {
        size_t nw = tg_model_num_weights(m);
        printf("exported %d tensors (%zu weights, %s) of %s to %s (%s)\n", m->n_params, nw,
               m->cfg.dtype == TG_F64 ? "float64" : "float32", m->cfg.cell->name, out, format);
    }
    for (int k = 0; k < e.n_meta; k++) free(e.vals[k]);
    tg_st_close(f);
    tg_model_free(m);
    tg_checkpoint_close(ck);
    return rc;
}
