/* cmd_grad.c — `tapegrad grad`: loss, final state and every gradient of a PyTorch-layout model.
 *
 *   tapegrad grad --cell {rnn_tanh,rnn_relu,lstm,gru} --params P.safetensors
 *                 --data D.safetensors --out G.safetensors
 *
 * P is the state_dict of a container with submodules `rnn` (nn.RNN / nn.LSTM / nn.GRU (I, H, L),
 * sequence-first, with biases) and `out` (nn.Linear(H, V)):
 *   rnn.weight_ih_l{k} (G·H, I or H), rnn.weight_hh_l{k} (G·H, H), rnn.bias_ih_l{k} (G·H,),
 *   rnn.bias_hh_l{k} (G·H,) for k = 0..L−1, out.weight (V, H), out.bias (V,)
 * with G = 1 (rnn), 4 (lstm: i,f,g,o) or 3 (gru: r,z,n). The sizes come from the tensors:
 * H = columns of rnn.weight_hh_l0, I = columns of rnn.weight_ih_l0, L = how many
 * rnn.weight_ih_l{k} there are, V = rows of out.weight; every tensor is then checked against
 * them, so a wrong --cell shows up as a misshapen rnn.weight_ih_l0.
 * D holds x (T, B, I), float (converted to the parameters' dtype if it differs), and y (T, B),
 * I64 (or I32) labels in [0, V).
 *
 * Issue 14, as PyTorch has them:
 *   bidirectional  P also holds rnn.<param>_l{k}_reverse for every layer (nn.LSTM(…,
 *                  bidirectional=True)'s state_dict): layer k ≥ 1 reads 2H, out.weight is (V, 2H),
 *                  h_n is (2L, B, H) indexed layer·2 + direction
 *   lengths        optional in D: I64 (or I32) (B), each in [1, T] — a packed batch
 *                  (pack_padded_sequence(x, lengths, enforce_sorted=False)): positions t ≥
 *                  lengths[b] are not read (any x, any label may stand there) and carry no loss,
 *                  h_n holds each sequence's last valid state
 *   dropout_mask   optional in D: float (L−1, T, B, D·H), what multiplies layer l's output
 *                  before layer l + 1 reads it (dropout between layers with its masks fixed:
 *                  0 or 1/(1 − p))
 *
 * The model runs from a zero state in the parameters' dtype; the loss is softmax cross-entropy
 * summed over all (valid) positions, as F.cross_entropy(…, reduction='sum'). G gets `loss`
 * (shape []), d loss / d p for every parameter under its own name and shape, `h_n` (L·D, B, H)
 * and for lstm `c_n` (L·D, B, H), all in the parameters' dtype, written atomically: on any
 * error nothing is written and an existing G is left as it was. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tapegrad_fileio.h"
#include "tapegrad_models.h"
#include "tapegrad_safetensors.h"

static const char CMD[] = "grad";
static const char USAGE[] =
    "--cell {rnn_tanh,rnn_relu,lstm,gru,FILE.cell} --params P.safetensors --data D.safetensors "
    "--out G.safetensors";

#define MAX_ELEMS (((int64_t)1 << 31) - 1) /* per tensor: sizes are ints in the engine */

/* An expected parameter: name, PyTorch shape (1-D for biases). */
struct pspec {
    char name[64];
    int ndim;
    int64_t shape[2];
};

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int k = 0; k < ndim && used < n; k++)
        used += (size_t)snprintf(buf + used, n - used, "%s%" PRId64, k ? ", " : "", shape[k]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

static int is_float(enum tg_st_dtype d) { return d == TG_ST_F32 || d == TG_ST_F64; }

/* The PyTorch cell whose stacked weights have g gate blocks, for hints. */
static const char *cell_with_gates(int64_t g)
{
    return g == 1 ? "rnn_tanh or rnn_relu" : g == 4 ? "lstm" : g == 3 ? "gru" : NULL;
}

/* Check that tensor `s->name` exists in f with exactly shape s and the float dtype dt. */
static int check_tensor(const struct tg_st_file *f, const struct pspec *s, enum tg_st_dtype dt,
                        const char *why)
{
    const char *path = tg_st_path(f);
    const struct tg_st_tensor *t = tg_st_find(f, s->name);
    char a[96], b[96];
    if (!t) return cli_fail(CMD, "%s: tensor '%s' is missing (%s)", path, s->name, why);
    int same = t->ndim == s->ndim;
    for (int k = 0; same && k < s->ndim; k++) same = t->shape[k] == s->shape[k];
    if (!same)
        return cli_fail(CMD, "%s: tensor '%s' has shape %s, expected %s (%s)", path, s->name,
                        shape_str(t->ndim, t->shape, a, sizeof a), shape_str(s->ndim, s->shape, b, sizeof b), why);
    if (t->dtype != dt)
        return cli_fail(CMD, "%s: tensor '%s' is %s, but the parameters are %s (from rnn.weight_ih_l0)",
                        path, s->name, tg_st_dtype_name(t->dtype), tg_st_dtype_name(dt));
    return 0;
}

/* Sizes from P and the list of every parameter it must hold, in the model's order. */
struct layout {
    enum tg_st_dtype dt;
    int I, H, L, V, D;   /* D = 2 when P holds *_reverse parameters (bidirectional) */
    int n;
    struct pspec *p;
};

/* With lo's sizes and dtype known: count the layers (rnn.<first parameter>_l0, _l1, …), list
 * every tensor P must hold with its shape (1-D for vectors, as PyTorch stores biases), and check
 * that P holds exactly those. why_fmt describes the model, with %d for L. */
static int expect_params(const struct tg_st_file *f, const struct tg_cell *cell, struct layout *lo,
                         const char *why_fmt)
{
    const char *path = tg_st_path(f);
    char name[96];
    lo->L = 0;
    for (;;) {
        snprintf(name, sizeof name, "rnn.%s_l%d", cell->params[0].name, lo->L);
        if (!tg_st_find(f, name) || lo->L >= 64) break;
        lo->L++;
    }
    if (lo->L == 0)
        return cli_fail(CMD, "%s: tensor 'rnn.%s_l0' is missing (the first parameter of cell %s)", path,
                        cell->params[0].name, cell->name);
    lo->n = lo->L * lo->D * cell->n_params + 2;
    lo->p = calloc((size_t)lo->n, sizeof *lo->p);
    if (!lo->p) return cli_fail(CMD, "out of memory");
    int k = 0;
    /* PyTorch's order: per layer the forward direction's parameters, then the reverse one's */
    for (int ld = 0; ld < lo->L * lo->D; ld++) {
        int l = ld / lo->D;
        for (int s = 0; s < cell->n_params; s++, k++) {
            const struct tg_param_spec *sp = &cell->params[s];
            int rows, cols;
            if (!tg_param_spec_dims(sp, l == 0 ? lo->I : lo->D * lo->H, lo->H, &rows, &cols))
                return cli_fail(CMD, "%s: sizes I=%d, H=%d give %s a shape that is not positive or too large",
                                path, lo->I, lo->H, sp->name);
            struct pspec *p = &lo->p[k];
            snprintf(p->name, sizeof p->name, ld % lo->D ? "rnn.%s_l%d_reverse" : "rnn.%s_l%d", sp->name, l);
            p->ndim = tg_param_spec_ndim(sp);
            p->shape[0] = p->ndim == 1 ? cols : rows;
            p->shape[1] = cols;
        }
    }
    lo->p[k] = (struct pspec){"out.weight", 2, {lo->V, (int64_t)lo->D * lo->H}};
    lo->p[k + 1] = (struct pspec){"out.bias", 1, {lo->V, 0}};
    char why[200];
    snprintf(why, sizeof why, why_fmt, lo->L);
    for (int i = 0; i < lo->n; i++)
        if (check_tensor(f, &lo->p[i], lo->dt, why)) return 1;
    /* Anything else is a model we would silently get wrong (projections, other modules). */
    for (int i = 0; i < tg_st_count(f); i++) {
        const char *tn = tg_st_at(f, i)->name;
        int known = 0;
        for (int j = 0; j < lo->n && !known; j++) known = strcmp(tn, lo->p[j].name) == 0;
        if (!known)
            return cli_fail(CMD, "%s: unexpected tensor '%s' (a %d-layer %s%s model has only "
                            "rnn.*_l0..l%d%s, out.weight and out.bias)", path, tn, lo->L,
                            lo->D == 2 ? "bidirectional " : "", cell->name, lo->L - 1,
                            lo->D == 2 ? " (and *_reverse)" : "");
    }
    return 0;
}

static int read_layout(const struct tg_st_file *f, const struct tg_cell *cell, struct layout *lo)
{
    const char *path = tg_st_path(f);
    char a[96];
    const struct tg_st_tensor *wih = tg_st_find(f, "rnn.weight_ih_l0");
    const struct tg_st_tensor *whh = tg_st_find(f, "rnn.weight_hh_l0");
    const struct tg_st_tensor *ow = tg_st_find(f, "out.weight");
    const char *need = wih ? whh ? ow ? NULL : "out.weight" : "rnn.weight_hh_l0" : "rnn.weight_ih_l0";
    if (need)
        return cli_fail(CMD, "%s: tensor '%s' is missing (expected the state_dict of a module with "
                        "submodules rnn and out)", path, need);
    if (!is_float(wih->dtype))
        return cli_fail(CMD, "%s: tensor 'rnn.weight_ih_l0' is %s, expected F32 or F64", path,
                        tg_st_dtype_name(wih->dtype));
    if (whh->ndim != 2 || whh->shape[1] < 1 || whh->shape[1] > 1 << 24)
        return cli_fail(CMD, "%s: tensor 'rnn.weight_hh_l0' has shape %s, expected [G*H, H] with H >= 1",
                        path, shape_str(whh->ndim, whh->shape, a, sizeof a));
    if (wih->ndim != 2 || wih->shape[1] < 1 || wih->shape[1] > 1 << 24)
        return cli_fail(CMD, "%s: tensor 'rnn.weight_ih_l0' has shape %s, expected [G*H, I] with I >= 1",
                        path, shape_str(wih->ndim, wih->shape, a, sizeof a));
    if (ow->ndim != 2 || ow->shape[0] < 1 || ow->shape[0] > 1 << 24)
        return cli_fail(CMD, "%s: tensor 'out.weight' has shape %s, expected [V, H] with V >= 1",
                        path, shape_str(ow->ndim, ow->shape, a, sizeof a));
    lo->dt = wih->dtype;
    lo->H = (int)whh->shape[1];
    lo->I = (int)wih->shape[1];
    lo->V = (int)ow->shape[0];
    lo->D = tg_st_find(f, "rnn.weight_ih_l0_reverse") ? 2 : 1;
    int64_t G = cell->gates, H = lo->H;
    /* The first check, and the one a wrong --cell fails: the rows of rnn.weight_ih_l0. */
    if (wih->shape[0] != G * H) {
        const char *other = wih->shape[0] % H == 0 ? cell_with_gates(wih->shape[0] / H) : NULL;
        char hint[96] = "";
        if (other) snprintf(hint, sizeof hint, "; %" PRId64 "*H rows is what %s has", wih->shape[0] / H, other);
        return cli_fail(CMD, "%s: tensor 'rnn.weight_ih_l0' has shape %s, but --cell %s needs %" PRId64
                        "*H = %" PRId64 " rows (H = %d from rnn.weight_hh_l0)%s", path,
                        shape_str(wih->ndim, wih->shape, a, sizeof a), cell->name, G, G * H, lo->H, hint);
    }
    char why[96];
    snprintf(why, sizeof why, "%s%s, L = %%d, I = %d, H = %d, V = %d", lo->D == 2 ? "bidirectional " : "",
             cell->name, lo->I, lo->H, lo->V);
    return expect_params(f, cell, lo, why);
}

/* A cell file's layout: I from x (T, B, I) in D, H solved from the first dimension of a
 * layer-0 parameter that involves H, L from how many layers of its first parameter P holds,
 * every shape from the file's declarations (1-D for [N]). */
static int read_layout_file(const struct tg_st_file *f, const struct tg_st_file *df,
                            const struct tg_cell *cell, struct layout *lo)
{
    const struct tg_st_tensor *x = tg_st_find(df, "x"), *ow = tg_st_find(f, "out.weight");
    if (!x || x->ndim != 3 || x->shape[2] < 1 || x->shape[2] > 1 << 24)
        return cli_fail(CMD, "%s: tensor 'x' is missing or not (T, B, I) with I >= 1", tg_st_path(df));
    if (!ow || ow->ndim != 2 || ow->shape[0] < 1 || ow->shape[0] > 1 << 24 || ow->shape[1] < 1 || ow->shape[1] > 1 << 24)
        return cli_fail(CMD, "%s: tensor 'out.weight' is missing or not [V, H]", tg_st_path(f));
    char rev[96];
    snprintf(rev, sizeof rev, "rnn.%s_l0_reverse", cell->params[0].name);
    lo->D = tg_st_find(f, rev) ? 2 : 1;
    lo->I = (int)x->shape[2];
    lo->V = (int)ow->shape[0];
    lo->H = (int)(ow->shape[1] / lo->D);
    lo->dt = ow->dtype;
    if (ow->shape[1] % lo->D)
        return cli_fail(CMD, "%s: tensor 'out.weight' has %" PRId64 " columns, but a bidirectional model "
                        "(%s is present) needs 2*H", tg_st_path(f), ow->shape[1], rev);
    if (!is_float(lo->dt))
        return cli_fail(CMD, "%s: tensor 'out.weight' is %s, expected F32 or F64", tg_st_path(f),
                        tg_st_dtype_name(lo->dt));
    if (tg_cell_check(cell, lo->I, lo->H) != TG_OK) return cli_fail(CMD, "%s", tg_last_error());
    char why[200];
    snprintf(why, sizeof why, "%s%s, L = %%d, I = %d from x, H = %d and V = %d from out.weight",
             lo->D == 2 ? "bidirectional " : "", tg_cell_path(cell), lo->I, lo->H, lo->V);
    return expect_params(f, cell, lo, why);
}

/* x (T, B, I) as doubles, y (T, B) as int32 labels in [0, V) (−1 where padded), and the
 * optional lengths (B) and dropout masks ((L−1)·T·B·D·H multipliers). */
struct data {
    int T, B;
    double *x;
    int32_t *y;
    int32_t *len;
    double *mask;
};

/* lengths (B), I64 or I32, every entry in [1, T] (pack_padded_sequence's rule). */
static int read_lengths(const struct tg_st_file *f, struct data *d)
{
    const char *path = tg_st_path(f);
    const struct tg_st_tensor *n = tg_st_find(f, "lengths");
    char a[96];
    if (!n) return 0;
    if (n->dtype != TG_ST_I64 && n->dtype != TG_ST_I32)
        return cli_fail(CMD, "%s: tensor 'lengths' is %s, expected I64 (or I32) sequence lengths", path,
                        tg_st_dtype_name(n->dtype));
    if (n->ndim != 1 || n->shape[0] != d->B)
        return cli_fail(CMD, "%s: tensor 'lengths' has shape %s, expected [%d] (B of x)", path,
                        shape_str(n->ndim, n->shape, a, sizeof a), d->B);
    int64_t *v = malloc((size_t)d->B * sizeof *v);
    d->len = malloc((size_t)d->B * sizeof *d->len);
    if (!v || !d->len) {
        free(v);
        return cli_fail(CMD, "out of memory for lengths (B=%d)", d->B);
    }
    if (tg_st_get_i64(f, "lengths", v, (size_t)d->B, 0, NULL) != TG_OK) {
        free(v);
        return cli_fail(CMD, "%s", tg_last_error());
    }
    for (int b = 0; b < d->B; b++) {
        if (v[b] < 1 || v[b] > d->T) {
            int64_t bad = v[b];
            free(v);
            return cli_fail(CMD, "%s: tensor 'lengths': lengths[%d] = %" PRId64 " is outside [1, %d] "
                            "(T = %d from x; every sequence needs at least one step)", path, b, bad,
                            d->T, d->T);
        }
        d->len[b] = (int32_t)v[b];
    }
    free(v);
    return 0;
}

/* dropout_mask (L−1, T, B, D·H): what multiplies each layer's output before the next layer
 * reads it (PyTorch's dropout between layers with the mask drawn: 0 or 1/(1 − p)). */
static int read_mask(const struct tg_st_file *f, const struct layout *lo, struct data *d)
{
    const char *path = tg_st_path(f);
    const struct tg_st_tensor *m = tg_st_find(f, "dropout_mask");
    char a[96], b[96];
    if (!m) return 0;
    int64_t want[4] = {lo->L - 1, d->T, d->B, (int64_t)lo->D * lo->H};
    if (!is_float(m->dtype))
        return cli_fail(CMD, "%s: tensor 'dropout_mask' is %s, expected F32 or F64", path, tg_st_dtype_name(m->dtype));
    int same = m->ndim == 4;
    for (int k = 0; same && k < 4; k++) same = m->shape[k] == want[k];
    if (!same || lo->L < 2)
        return cli_fail(CMD, "%s: tensor 'dropout_mask' has shape %s, expected %s (L-1, T, B, %sH)%s", path,
                        shape_str(m->ndim, m->shape, a, sizeof a), shape_str(4, want, b, sizeof b),
                        lo->D == 2 ? "2*" : "", lo->L < 2 ? "; a 1-layer model has no dropout" : "");
    size_t n = (size_t)tg_st_numel(m);
    d->mask = malloc((n ? n : 1) * sizeof *d->mask);
    if (!d->mask) return cli_fail(CMD, "out of memory for dropout_mask");
    if (tg_st_check_finite(f, m, "--data") != TG_OK || tg_st_get_f64(f, "dropout_mask", d->mask, n, 0, NULL) != TG_OK)
        return cli_fail(CMD, "%s", tg_last_error());
    return 0;
}

static int read_data(const struct tg_st_file *f, const struct layout *lo, struct data *d)
{
    const char *path = tg_st_path(f);
    char a[96];
    const struct tg_st_tensor *x = tg_st_find(f, "x"), *y = tg_st_find(f, "y");
    if (!x || !y)
        return cli_fail(CMD, "%s: tensor '%s' is missing (expected x (T, B, I) and y (T, B))", path,
                        x ? "y" : "x");
    if (!is_float(x->dtype))
        return cli_fail(CMD, "%s: tensor 'x' is %s, expected F32 or F64", path, tg_st_dtype_name(x->dtype));
    if (x->ndim != 3 || x->shape[2] != lo->I || x->shape[0] < 1 || x->shape[1] < 1)
        return cli_fail(CMD, "%s: tensor 'x' has shape %s, expected [T, B, %d] with T, B >= 1 (I = %d "
                        "from rnn.weight_ih_l0)", path, shape_str(x->ndim, x->shape, a, sizeof a), lo->I, lo->I);
    int64_t wide = (int64_t)lo->D * lo->H > lo->I ? (int64_t)lo->D * lo->H : lo->I;
    if (x->shape[0] > MAX_ELEMS || x->shape[1] > MAX_ELEMS || x->shape[0] * x->shape[1] > MAX_ELEMS / wide)
        return cli_fail(CMD, "%s: tensor 'x' of shape %s is too large", path, shape_str(x->ndim, x->shape, a, sizeof a));
    if (y->dtype != TG_ST_I64 && y->dtype != TG_ST_I32)
        return cli_fail(CMD, "%s: tensor 'y' is %s, expected I64 (or I32) labels", path, tg_st_dtype_name(y->dtype));
    if (y->ndim != 2 || y->shape[0] != x->shape[0] || y->shape[1] != x->shape[1])
        return cli_fail(CMD, "%s: tensor 'y' has shape %s, expected [%" PRId64 ", %" PRId64 "] (T, B of x)",
                        path, shape_str(y->ndim, y->shape, a, sizeof a), x->shape[0], x->shape[1]);
    d->T = (int)x->shape[0];
    d->B = (int)x->shape[1];
    if (read_lengths(f, d) || read_mask(f, lo, d)) return 1;
    size_t nx = (size_t)d->T * d->B * lo->I, ny = (size_t)d->T * d->B;
    d->x = malloc(nx * sizeof *d->x);
    d->y = malloc(ny * sizeof *d->y);
    int64_t *labels = malloc(ny * sizeof *labels);
    if (!d->x || !d->y || !labels) {
        free(labels);
        return cli_fail(CMD, "out of memory for x (T=%d, B=%d)", d->T, d->B);
    }
    if ((!d->len && tg_st_check_finite(f, x, "--data") != TG_OK) || tg_st_get_f64(f, "x", d->x, nx, 0, NULL) != TG_OK ||
        tg_st_get_i64(f, "y", labels, ny, 0, NULL) != TG_OK) {
        free(labels);
        return cli_fail(CMD, "%s", tg_last_error());
    }
    /* Padded positions (t >= lengths[b]) are not read: any x and any label may stand there
     * (PyTorch users pad labels with -100, say). The valid ones must be finite and in range. */
    for (size_t i = 0; i < ny; i++) {
        size_t t = i / (size_t)d->B, b = i % (size_t)d->B;
        if (d->len && (int64_t)t >= d->len[b]) {
            d->y[i] = -1;
            continue;
        }
        for (size_t j = 0; d->len && j < (size_t)lo->I; j++) {
            if (!isfinite(d->x[i * lo->I + j])) {
                free(labels);
                return cli_fail(CMD, "--data %s: tensor 'x' is not finite: %g at [%zu, %zu, %zu] (time step "
                                "%zu of %d, batch row %zu, within lengths[%zu] = %d)", path,
                                d->x[i * lo->I + j], t, b, j, t + 1, d->T, b, b, (int)d->len[b]);
            }
        }
        if (labels[i] == -100) { /* F.cross_entropy's default ignore_index: no loss here */
            d->y[i] = -1;
            continue;
        }
        if (labels[i] < 0 || labels[i] >= lo->V) {
            int64_t v = labels[i];
            free(labels);
            /* y[t, b] is a 0-based index; the time step is said as people count, 1..T */
            return cli_fail(CMD, "%s: tensor 'y': label %" PRId64 " at y[%zu, %zu] (time step %zu of %d, "
                            "batch row %zu) is outside [0, %d) (V = %d from out.weight)", path, v,
                            i / (size_t)d->B, i % (size_t)d->B, i / (size_t)d->B + 1, d->T,
                            i % (size_t)d->B, lo->V, lo->V);
        }
        d->y[i] = (int32_t)labels[i];
    }
    free(labels);
    return 0;
}

/* The result file: loss, gradients under the parameters' names and shapes, h_n [, c_n]. */
static int write_result(const char *out, const struct tg_cell *cell, const struct layout *lo,
                        const struct tg_model *m, const struct tg_seq_result *res, int B)
{
    struct tg_st_writer *w = tg_st_writer_new();
    if (!w) return cli_fail(CMD, "%s", tg_last_error());
    tg_st_writer_meta(w, "generator", "tapegrad grad");
    tg_st_writer_meta(w, "cell", cell->name);
    tg_st_writer_add_tensor(w, "loss", res->loss, 0, NULL);
    for (int k = 0; k < lo->n; k++) {
        const struct tg_tensor *p = m->params[k];
        /* the model's parameters are in the same order as the layout, by construction */
        if (strcmp(m->names[k], lo->p[k].name) != 0) {
            tg_st_writer_free(w);
            return cli_fail(CMD, "internal: parameter %d is %s, expected %s", k, m->names[k], lo->p[k].name);
        }
        tg_st_writer_add(w, lo->p[k].name, lo->dt, lo->p[k].ndim, lo->p[k].shape, p->grad);
    }
    int ns = cell->n_state, H = lo->H, L = lo->L * lo->D; /* h_n is (L·D, B, H): layer·D + direction */
    size_t es = tg_dtype_size(m->cfg.dtype), layer = (size_t)B * H * es;
    unsigned char *buf = malloc((size_t)L * layer);
    if (!buf) {
        tg_st_writer_free(w);
        return cli_fail(CMD, "out of memory");
    }
    const int64_t shape[3] = {L, B, H};
    for (int k = 0; k < ns; k++) {
        for (int l = 0; l < L; l++) memcpy(buf + l * layer, res->final[l * ns + k]->data, layer);
        char sname[64];
        const char *sn = tg_cell_state_name(cell, k); /* a cell file's: h_n, then s_n per state */
        snprintf(sname, sizeof sname, "%s_n", sn ? sn : k == 0 ? "h" : "c");
        tg_st_writer_add(w, sname, lo->dt, 3, shape, buf);
    }
    free(buf);
    enum tg_status st = tg_st_writer_save(w, out);
    tg_st_writer_free(w);
    return st == TG_OK ? 0 : cli_fail(CMD, "%s", tg_last_error());
}

static struct tg_cell *owned_cell; /* --cell FILE.cell */

/* --recompute: the last segment (seen first) holds the final state; keep a copy, as its tape
 * is reset before the call returns. */
struct kept_final {
    int n, seen;
    struct tg_tensor **final;
};

static enum tg_status keep_final(void *ctx, int t0, const struct tg_seq_result *res)
{
    (void)t0;
    struct kept_final *k = ctx;
    if (k->seen++) return TG_OK;
    for (int i = 0; i < k->n; i++) {
        enum tg_status st = tg_tensor_copy(k->final[i], res->final[i]);
        if (st != TG_OK) return st;
    }
    return TG_OK;
}

/* The gradients through tg_model_grad_recompute (K-step segments); res gets heap copies of the
 * loss and final state (freed by the caller with free_kept). */
static enum tg_status grad_recompute(struct tg_model *m, struct tg_tape *t, const struct tg_seq_batch *b,
                                     int K, struct tg_seq_result *res)
{
    int n = m->cfg.layers * m->cfg.cell->n_state;
    memset(res, 0, sizeof *res);
    struct kept_final k = {n, 0, calloc((size_t)n, sizeof *k.final)};
    res->final = k.final;
    res->loss = tg_tensor_new_heap(1, 1, m->cfg.dtype);
    if (!k.final || !res->loss) return tg_error(TG_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        if (!(k.final[i] = tg_tensor_new_heap(b->B, m->cfg.hidden, m->cfg.dtype)))
            return tg_error(TG_ERR_NOMEM, "out of memory");
    struct tg_recompute *rc;
    double loss;
    enum tg_status st = tg_recompute_new(K, &rc);
    if (st == TG_OK) st = tg_model_grad_recompute(m, t, b, NULL, 1.0, rc, &loss, keep_final, &k);
    tg_recompute_free(rc);
    if (st == TG_OK) tg_set(res->loss, 0, 0, loss);
    return st;
}

static void free_kept(const struct tg_model *m, struct tg_seq_result *res)
{
    tg_tensor_free(res->loss);
    for (int i = 0; res->final && i < m->cfg.layers * m->cfg.cell->n_state; i++)
        tg_tensor_free(res->final[i]);
    free(res->final);
}

static int grad_main(int argc, char **argv)
{
    const char *cell_name = NULL, *ppath = NULL, *dpath = NULL, *out = NULL;
    int anomaly = 0, recompute = 0;
    const struct cli_flag flags[] = {
        {"cell", CLI_STR, &cell_name, "rnn_tanh, rnn_relu, lstm or gru (must match the parameters), or FILE.cell", 1, 0},
        {"params", CLI_STR, &ppath, "state_dict of the model: rnn.weight_ih_l0, ..., out.weight, out.bias", 1, 0},
        {"data", CLI_STR, &dpath, "x (T, B, I) float, y (T, B) int64 labels; optional lengths (B) int64, "
         "dropout_mask (L-1, T, B, D*H)", 1, 0},
        {"out", CLI_STR, &out, "where to write loss, the gradients, h_n (and c_n)", 1, 0},
        {"detect-anomaly", CLI_BOOL, &anomaly, "stop at the first NaN/inf in forward or backward and say where", 1, 0},
        {"recompute", CLI_INT, &recompute, "keep the state every N steps, recompute segments in backward "
         "(less memory; the same gradients up to the order of sums) [off]", 1, 1e7},
    };
    int pr = cli_parse(CMD, USAGE, argc, argv, flags, (int)(sizeof flags / sizeof flags[0]));
    if (pr < 0) return 1;
    if (pr > 0) {
        printf("\nRuns the model from a zero state in the parameters' dtype (F32 or F64); the loss is the\n"
               "cross-entropy summed over all T*B positions (a label of -100, F.cross_entropy's ignore_index,\n"
               "carries no loss). Writes G with loss (shape []), the gradient\n"
               "of every parameter under its own name and shape, h_n (L, B, H) and, for lstm, c_n.\n"
               "Sizes and layers come from the tensors. On any error: one line on stderr, exit 1, and\n"
               "G is not written (an existing G is left as it was).\n"
               "As in PyTorch: rnn.*_l{k}_reverse parameters make the model bidirectional (out.weight\n"
               "is then (V, 2H) and h_n (2L, B, H), layer*2 + direction); a 'lengths' tensor (B) in D\n"
               "packs the batch (pack_padded_sequence): steps t >= lengths[b] are not read, carry no\n"
               "loss, and h_n is each sequence's last valid state; 'dropout_mask' (L-1, T, B, D*H)\n"
               "multiplies each layer's output but the last's (dropout with its masks fixed).\n");
        return 0;
    }
    if (recompute && anomaly)
        return cli_fail(CMD, "--recompute cannot be combined with --detect-anomaly yet (its reports "
                        "would count time steps within a segment)");
    const char *missing = !cell_name ? "--cell" : !ppath ? "--params" : !dpath ? "--data" : !out ? "--out" : NULL;
    if (missing) return cli_fail(CMD, "%s is required (see tapegrad grad --help)", missing);
    const struct tg_cell *cell = cli_cell(CMD, cell_name, &owned_cell);
    if (!cell) return 1;
    static const char *const supported[] = {"rnn_tanh", "rnn_relu", "lstm", "gru"};
    int ok = owned_cell != NULL;
    for (int i = 0; i < 4; i++) ok |= strcmp(cell->name, supported[i]) == 0;
    if (!ok)
        return cli_fail(CMD, "--cell %s has no PyTorch module; grad takes rnn_tanh, rnn_relu, lstm or gru",
                        cell->name);

    /* The output replaces its file whole: if that file is an input (by any name: compared by
     * device and inode), the input would be gone. */
    const char *same = tg_file_same(out, ppath) ? "--params" : tg_file_same(out, dpath) ? "--data" : NULL;
    if (same)
        return cli_fail(CMD, "--out %s is the same file as %s %s; writing the gradients there would "
                        "destroy an input (give another --out)", out, same, !strcmp(same, "--data") ? dpath : ppath);
    if (tg_file_check_writable(NULL, "--out", out) != TG_OK) return cli_fail(CMD, "%s", tg_last_error());

    struct tg_st_file *pf = NULL, *df = NULL;
    struct layout lo = {0};
    struct data d = {0};
    struct tg_model *m = NULL;
    struct tg_tape *t = NULL;
    int rc = 1;
    if (tg_st_read(ppath, &pf) != TG_OK || tg_st_read(dpath, &df) != TG_OK) {
        rc = cli_fail(CMD, "%s", tg_last_error());
        goto done;
    }
    if ((owned_cell ? read_layout_file(pf, df, cell, &lo) : read_layout(pf, cell, &lo)) || read_data(df, &lo, &d))
        goto done;

    struct tg_model_config cfg = {.cell = cell, .input = lo.I, .hidden = lo.H, .layers = lo.L,
                                  .outputs = lo.V, .dtype = lo.dt == TG_ST_F32 ? TG_F32 : TG_F64,
                                  .loss = TG_LOSS_XENT_SUM, .bidirectional = lo.D == 2};
    if (tg_model_new(&cfg, &m) != TG_OK) {
        rc = cli_fail(CMD, "%s", tg_last_error());
        goto done;
    }
    for (int k = 0; k < lo.n; k++) {
        /* Non-finite weights would give NaN gradients that look like a result. */
        if (tg_st_check_finite(pf, tg_st_find(pf, lo.p[k].name), "--params") != TG_OK ||
            tg_st_get_tensor(pf, lo.p[k].name, m->params[k], lo.p[k].ndim, lo.p[k].shape) != TG_OK) {
            rc = cli_fail(CMD, "%s", tg_last_error());
            goto done;
        }
    }
    t = tg_tape_new(0);
    if (t && anomaly) tg_tape_set_anomaly(t, 1);
    m->dropout_mask = d.mask;
    struct tg_seq_batch b = {.T = d.T, .B = d.B, .x = d.x, .labels = d.y, .lengths = d.len};
    struct tg_seq_result res;
    if (recompute > d.T) {
        rc = cli_fail(CMD, "--recompute %d is longer than the sequence (T = %d in %s)", recompute, d.T, dpath);
        goto done;
    }
    if (recompute) {
        enum tg_status st = t ? grad_recompute(m, t, &b, recompute, &res) : TG_ERR_NOMEM;
        rc = st == TG_OK ? write_result(out, cell, &lo, m, &res, d.B)
                         : cli_fail(CMD, "%s", t ? tg_last_error() : "out of memory");
        free_kept(m, &res);
        goto done;
    }
    if (!t || tg_model_forward_from(m, t, &b, NULL, &res) != TG_OK || tg_backward(t, res.loss) != TG_OK) {
        rc = cli_fail(CMD, "%s", t ? tg_last_error() : "out of memory");
        goto done;
    }
    rc = write_result(out, cell, &lo, m, &res, d.B);
done:
    tg_tape_free(t);
    tg_model_free(m);
    free(lo.p);
    free(d.x);
    free(d.y);
    free(d.len);
    free(d.mask);
    tg_st_close(pf);
    tg_st_close(df);
    return rc;
}

int cmd_grad(int argc, char **argv)
{
    int rc = grad_main(argc, argv);
    tg_cell_free(owned_cell);
    owned_cell = NULL;
    return rc;
}
