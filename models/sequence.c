/* sequence.c — the sequence model: [embedding] → L stacked cells unrolled over T steps →
 * linear output → loss. It only records ops; BPTT is tg_backward on what it recorded, and the
 * sum over time of every shared weight's gradient falls out of the += accumulation.
 *
 * Layout: inputs are time-major, rows t·B … t·B + B − 1 of the T·B-row input matrix are step t.
 * Layers run one after another over the whole sequence (layer-major), so step t of layer l
 * consumes h_t of layer l−1 directly; the top layer's h_1 … h_T are stacked into one T·B×H
 * matrix so the output layer is a single GEMM. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad_models.h"

static char *dup_printf(const char *fmt, const char *a, int k)
{
    char buf[128];
    snprintf(buf, sizeof buf, fmt, a, k);
    return strdup(buf);
}

void tg_model_free(struct tg_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_params; i++) {
        if (m->params) tg_tensor_free(m->params[i]);
        if (m->names) free(m->names[i]);
    }
    if (m->state) {
        for (int i = 0; i < m->cfg.layers * m->cfg.cell->n_state; i++) tg_tensor_free(m->state[i]);
    }
    free(m->state);
    free(m->params);
    free(m->names);
    free(m->param_layer);
    free(m->param_spec);
    free(m);
}

enum tg_status tg_model_new(const struct tg_model_config *cfg, struct tg_model **out)
{
    *out = NULL;
    if (!cfg->cell) return tg_error(TG_ERR_VALUE, "tg_model_new: no cell given");
    if (cfg->input < 1 || cfg->hidden < 1 || cfg->layers < 1 || cfg->outputs < 1 || cfg->vocab < 0)
        return tg_error(TG_ERR_SHAPE, "tg_model_new: sizes must be positive: input %d, hidden %d, "
                        "layers %d, outputs %d, vocab %d", cfg->input, cfg->hidden, cfg->layers,
                        cfg->outputs, cfg->vocab);
    if (cfg->dtype != TG_F32 && cfg->dtype != TG_F64)
        return tg_error(TG_ERR_DTYPE, "tg_model_new: unknown dtype %d", (int)cfg->dtype);
    if (!cfg->cell->step && !cfg->cell->step_ctx)
        return tg_error(TG_ERR_VALUE, "tg_model_new: cell '%s' has no step function", cfg->cell->name);
    for (int l = 0; l < cfg->layers && l < 2; l++)
        if (tg_cell_check(cfg->cell, l == 0 ? cfg->input : cfg->hidden, cfg->hidden) != TG_OK)
            return TG_ERR_FORMAT;
    struct tg_model *m = calloc(1, sizeof *m);
    if (!m) return tg_error(TG_ERR_NOMEM, "tg_model_new: out of memory");
    m->cfg = *cfg;
    const struct tg_cell *c = cfg->cell;
    int n = (cfg->vocab > 0) + cfg->layers * c->n_params + 2;
    m->params = calloc((size_t)n, sizeof *m->params);
    m->names = calloc((size_t)n, sizeof *m->names);
    m->param_layer = calloc((size_t)n, sizeof *m->param_layer);
    m->param_spec = calloc((size_t)n, sizeof *m->param_spec);
    m->state = calloc((size_t)cfg->layers * c->n_state, sizeof *m->state);
    if (!m->params || !m->names || !m->param_layer || !m->param_spec || !m->state) goto nomem;
    m->n_params = n;
    int k = 0, H = cfg->hidden;
    if (cfg->vocab > 0) {
        m->names[k] = strdup("embed.weight");
        m->params[k] = tg_param_new(m->names[k], cfg->vocab, cfg->input, cfg->dtype);
        m->param_layer[k] = m->param_spec[k] = -1;
        if (!m->names[k] || !m->params[k]) goto nomem;
        k++;
    }
    for (int l = 0; l < cfg->layers; l++) {
        int in = l == 0 ? cfg->input : H;
        for (int s = 0; s < c->n_params; s++, k++) {
            int rows, cols;
            m->names[k] = dup_printf("rnn.%s_l%d", c->params[s].name, l);
            if (!m->names[k]) goto nomem;
            if (!tg_param_spec_dims(&c->params[s], in, H, &rows, &cols)) {
                enum tg_status st = tg_error(TG_ERR_SHAPE, "tg_model_new: cell '%s' parameter %s "
                                             "is too large for input %d, hidden %d", c->name,
                                             m->names[k], in, H);
                tg_model_free(m);
                return st;
            }
            m->params[k] = tg_param_new(m->names[k], rows, cols, cfg->dtype);
            if (!m->params[k]) {
                /* keep tg_param_new's own reason (out of memory for a valid shape, usually) */
                char why[256];
                snprintf(why, sizeof why, "%s", tg_last_error());
                enum tg_status st = tg_error(TG_ERR_NOMEM, "tg_model_new: parameter %s: %s",
                                             m->names[k], why);
                tg_model_free(m);
                return st;
            }
            m->param_layer[k] = l;
            m->param_spec[k] = s;
        }
    }
    const char *tail[2] = {"out.weight", "out.bias"};
    for (int j = 0; j < 2; j++, k++) {
        m->names[k] = strdup(tail[j]);
        if (!m->names[k]) goto nomem;
        m->params[k] = j == 0 ? tg_param_new(m->names[k], cfg->outputs, H, cfg->dtype)
                              : tg_param_new(m->names[k], 1, cfg->outputs, cfg->dtype);
        if (!m->params[k]) goto nomem;
        m->param_layer[k] = m->param_spec[k] = -1;
    }
    *out = m;
    return TG_OK;
nomem:
    tg_model_free(m);
    return tg_error(TG_ERR_NOMEM, "tg_model_new: out of memory");
}

struct tg_tensor *tg_model_param(const struct tg_model *m, const char *name)
{
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->names[i], name) == 0) return m->params[i];
    return NULL;
}

void tg_model_zero_grad(struct tg_model *m)
{
    for (int i = 0; i < m->n_params; i++) tg_tensor_zero_grad(m->params[i]);
}

size_t tg_model_num_weights(const struct tg_model *m)
{
    size_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += tg_numel(m->params[i]);
    return n;
}

void tg_model_init_uniform(struct tg_model *m, struct tg_rng *rng)
{
    double k = 1.0 / sqrt((double)m->cfg.hidden);
    for (int i = 0; i < m->n_params; i++) {
        if (strcmp(m->names[i], "embed.weight") == 0) tg_tensor_normal(m->params[i], rng, 0.0, 1.0);
        else tg_tensor_uniform(m->params[i], rng, -k, k);
    }
}

void tg_model_init_normal(struct tg_model *m, struct tg_rng *rng, double std)
{
    for (int i = 0; i < m->n_params; i++) {
        struct tg_tensor *p = m->params[i];
        if (p->rows == 1 && strstr(m->names[i], "bias")) tg_tensor_fill(p, 0.0);
        else tg_tensor_normal(p, rng, 0.0, std);
    }
}

/* Which bias holds the forget gate, and which H-wide block of it, per LSTM variant. */
void tg_model_set_forget_bias(struct tg_model *m, double value)
{
    const char *cell = m->cfg.cell->name, *bias = NULL;
    int block = 0;
    if (strcmp(cell, "lstm") == 0) bias = "bias_ih", block = 1;
    else if (strcmp(cell, "lstm_peephole") == 0) bias = "bias_if", block = 1;
    else if (strcmp(cell, "lstm_coupled") == 0) bias = "bias_ih", block = 0;
    else if (strcmp(cell, "lstm_dlbook") == 0) bias = "bias", block = 0;
    if (!bias) return;
    int H = m->cfg.hidden;
    for (int l = 0; l < m->cfg.layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "rnn.%s_l%d", bias, l);
        struct tg_tensor *b = tg_model_param(m, name);
        if (!b) continue;
        for (int j = block * H; j < (block + 1) * H; j++) tg_set(b, 0, j, tg_get(b, 0, j) + value);
    }
}

static enum tg_status fail_from_tape(struct tg_tape *t, const char *what)
{
    if (tg_tape_status(t) != TG_OK)
        return tg_error(tg_tape_status(t), "tg_model_forward: %s: %s", what, tg_tape_error(t));
    return tg_error(TG_ERR_VALUE, "tg_model_forward: %s failed", what);
}

enum tg_status tg_model_forward_from(struct tg_model *m, struct tg_tape *t,
                                     const struct tg_seq_batch *b,
                                     struct tg_tensor *const *init, struct tg_seq_result *res)
{
    const struct tg_model_config *cfg = &m->cfg;
    const struct tg_cell *cell = cfg->cell;
    int T = b->T, B = b->B, H = cfg->hidden, L = cfg->layers, ns = cell->n_state;
    memset(res, 0, sizeof *res);
    if (T < 1 || B < 1)
        return tg_error(TG_ERR_SHAPE, "tg_model_forward: need T >= 1 and B >= 1, got T=%d B=%d", T, B);
    if ((cfg->vocab > 0) != (b->tokens != NULL) || (!b->tokens && !b->x))
        return tg_error(TG_ERR_VALUE, "tg_model_forward: the model takes %s inputs",
                        cfg->vocab > 0 ? "token" : "dense");
    int mse = cfg->loss == TG_LOSS_MSE_LAST;
    if (mse ? !b->target : !b->labels)
        return tg_error(TG_ERR_VALUE, "tg_model_forward: missing %s", mse ? "regression target" : "labels");

    /* Inputs: T·B rows, one block of B rows per step. */
    struct tg_tensor *X;
    if (cfg->vocab > 0) {
        X = tg_embedding(t, m->params[0], b->tokens, T * B);
        if (!X) return fail_from_tape(t, "embedding");
    } else {
        X = tg_tensor_new(t, T * B, cfg->input, cfg->dtype);
        if (!X) return fail_from_tape(t, "input");
        for (size_t i = 0; i < (size_t)T * B * cfg->input; i++) {
            if (cfg->dtype == TG_F64) ((double *)X->data)[i] = b->x[i];
            else ((float *)X->data)[i] = (float)b->x[i];
        }
        res->input = X;
    }
    struct tg_tensor **hs = tg_tape_alloc(t, (size_t)T * sizeof *hs);
    res->final = tg_tape_alloc(t, (size_t)L * ns * sizeof *res->final);
    res->states = tg_tape_alloc(t, (size_t)L * T * ns * sizeof *res->states);
    if (!hs || !res->final || !res->states) return fail_from_tape(t, "workspace");
    /* for anomaly reports: which cell recorded a node, and how many rows make a step */
    tg_tape_set_origin(t, cell->name);
    tg_tape_set_step_rows(t, B);

    struct tg_tensor *state[2], *next[2];
    int first = cfg->vocab > 0;
    for (int l = 0; l < L; l++) {
        struct tg_tensor *const *w = m->params + first + l * cell->n_params;
        /* The layer's whole input as one T·B-row matrix: the first layer's X, or the stacked
         * outputs of the layer below. With an input hook, project it once (one GEMM). */
        struct tg_tensor *Xl = X;
        int in = l == 0 ? cfg->input : H, projected = cell->input || cell->input_ctx;
        if (projected) {
            tg_tape_set_tag(t, -1, l);
            if (l > 0) Xl = T == 1 ? hs[0] : tg_concat(t, 0, T, hs);
            if (Xl) Xl = cell->input ? cell->input(t, w, Xl) : cell->input_ctx(cell->ctx, in, H, t, w, Xl);
            if (!Xl) return fail_from_tape(t, "input projection");
        }
        for (int k = 0; k < ns; k++) {
            struct tg_tensor *s0 = init ? init[l * ns + k] : NULL;
            if (s0 && (s0->rows != B || s0->cols != H || s0->dtype != cfg->dtype))
                return tg_error(TG_ERR_SHAPE, "tg_model_forward: initial state %d of layer %d is "
                                "(%dx%d) %s, expected (%dx%d) %s", k, l, s0->rows, s0->cols,
                                tg_dtype_name(s0->dtype), B, H, tg_dtype_name(cfg->dtype));
            state[k] = s0 ? s0 : tg_tensor_new(t, B, H, cfg->dtype);
            if (!state[k]) return fail_from_tape(t, "initial state");
        }
        for (int s = 0; s < T; s++) {
            tg_tape_set_tag(t, s, l);
            struct tg_tensor *x = l == 0 || projected ? tg_slice(t, Xl, 0, s * B, (s + 1) * B) : hs[s];
            next[0] = next[1] = NULL;
            /* One fusion region per step: the cell's elementwise gate math becomes one node
             * that keeps only the new state (autograd/fuse.c); a no-op with fusion off. */
            tg_tape_fuse_begin(t);
            if (cell->step) cell->step(t, w, x, state, next);
            else cell->step_ctx(cell->ctx, in, H, t, w, x, state, next);
            if (tg_tape_fuse_end(t, next, ns) != TG_OK) next[0] = next[1] = NULL;
            for (int k = 0; k < ns; k++) {
                if (!next[k]) {
                    char what[96];
                    snprintf(what, sizeof what, "cell '%s' at time step %d of %d, layer %d", cell->name,
                             s + 1, T, l); /* steps counted 1..T, as in check and dot */
                    return fail_from_tape(t, what);
                }
                state[k] = next[k];
                res->states[((size_t)l * T + s) * ns + k] = next[k];
            }
            hs[s] = state[0];
        }
        for (int k = 0; k < ns; k++) res->final[l * ns + k] = state[k];
    }
    tg_tape_set_tag(t, -1, -1);
    tg_tape_set_origin(t, "output layer");

    struct tg_tensor *W = m->params[m->n_params - 2], *bias = m->params[m->n_params - 1];
    if (mse) {
        res->logits = tg_addmm(t, bias, hs[T - 1], W, 0, 1);
        struct tg_tensor *y = tg_tensor_new(t, B, cfg->outputs, cfg->dtype);
        if (!y) return fail_from_tape(t, "target");
        for (int i = 0; i < B * cfg->outputs; i++) tg_set(y, 0, i, b->target[i]);
        res->loss = tg_mse(t, res->logits, y, TG_REDUCE_MEAN);
    } else {
        struct tg_tensor *Hs = T == 1 ? hs[0] : tg_concat(t, 0, T, hs);
        res->logits = tg_addmm(t, bias, Hs, W, 0, 1);
        res->loss = tg_softmax_xent(t, res->logits, b->labels,
                                    cfg->loss == TG_LOSS_XENT_MEAN ? TG_REDUCE_MEAN : TG_REDUCE_SUM);
    }
    if (!res->loss) return fail_from_tape(t, "output layer");
    return TG_OK;
}

enum tg_status tg_model_forward(struct tg_model *m, struct tg_tape *t,
                                const struct tg_seq_batch *b, int carry,
                                struct tg_seq_result *res)
{
    struct tg_tensor *const *init = carry && m->state_batch == b->B ? m->state : NULL;
    return tg_model_forward_from(m, t, b, init, res);
}

enum tg_status tg_model_state_alloc(struct tg_model *m, int B)
{
    if (m->state_batch == B) return TG_OK;
    for (int i = 0; i < m->cfg.layers * m->cfg.cell->n_state; i++) {
        tg_tensor_free(m->state[i]);
        m->state[i] = tg_tensor_new_heap(B, m->cfg.hidden, m->cfg.dtype);
        if (!m->state[i]) return TG_ERR_NOMEM;
    }
    m->state_batch = B;
    return TG_OK;
}

enum tg_status tg_model_keep_state(struct tg_model *m, const struct tg_seq_result *res, int B)
{
    int n = m->cfg.layers * m->cfg.cell->n_state;
    enum tg_status st = tg_model_state_alloc(m, B);
    if (st != TG_OK) return st;
    /* A copy, not a reference: the next chunk sees the values as leaves, with no history
     * (this is tg_detach across a tape reset). */
    for (int i = 0; i < n; i++) {
        enum tg_status st = tg_tensor_copy(m->state[i], res->final[i]);
        if (st != TG_OK) return st;
    }
    return TG_OK;
}

void tg_model_reset_state(struct tg_model *m)
{
    int n = m->cfg.layers * m->cfg.cell->n_state;
    for (int i = 0; i < n; i++) {
        tg_tensor_free(m->state[i]);
        m->state[i] = NULL;
    }
    m->state_batch = 0;
}
