/* sequence.c — the sequence model's parameters and carried state: [embedding] → L stacked
 * layers (one or two directions) → linear output, under PyTorch's state_dict names. Recording
 * the unrolled model is sequence_fwd.c. */
#include <limits.h>
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
        for (int i = 0; i < tg_model_n_states(m); i++) tg_tensor_free(m->state[i]);
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
    if (cfg->bidirectional != 0 && cfg->bidirectional != 1)
        return tg_error(TG_ERR_VALUE, "tg_model_new: bidirectional must be 0 or 1, got %d", cfg->bidirectional);
    if (!(cfg->dropout >= 0.0 && cfg->dropout < 1.0))
        return tg_error(TG_ERR_VALUE, "tg_model_new: dropout must be in [0, 1), got %g", cfg->dropout);
    int D = cfg->bidirectional ? 2 : 1;
    if (cfg->hidden > INT_MAX / D) /* a layer's output is D·H wide */
        return tg_error(TG_ERR_SHAPE, "tg_model_new: hidden %d is too large for a bidirectional model",
                        cfg->hidden);
    for (int l = 0; l < cfg->layers && l < 2; l++)
        if (tg_cell_check(cfg->cell, l == 0 ? cfg->input : D * cfg->hidden, cfg->hidden) != TG_OK)
            return TG_ERR_FORMAT;
    struct tg_model *m = calloc(1, sizeof *m);
    if (!m) return tg_error(TG_ERR_NOMEM, "tg_model_new: out of memory");
    m->cfg = *cfg;
    const struct tg_cell *c = cfg->cell;
    int n = (cfg->vocab > 0) + cfg->layers * D * c->n_params + 2;
    m->params = calloc((size_t)n, sizeof *m->params);
    m->names = calloc((size_t)n, sizeof *m->names);
    m->param_layer = calloc((size_t)n, sizeof *m->param_layer);
    m->param_spec = calloc((size_t)n, sizeof *m->param_spec);
    m->state = calloc((size_t)cfg->layers * D * c->n_state, sizeof *m->state);
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
    /* PyTorch's state_dict order: layer by layer, the forward direction's parameters, then
     * (bidirectional) the reverse direction's, named *_l{k}_reverse. */
    for (int ld = 0; ld < cfg->layers * D; ld++) {
        int l = ld / D, in = l == 0 ? cfg->input : D * H;
        for (int s = 0; s < c->n_params; s++, k++) {
            int rows, cols;
            m->names[k] = dup_printf(ld % D ? "rnn.%s_l%d_reverse" : "rnn.%s_l%d", c->params[s].name, l);
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
        m->params[k] = j == 0 ? tg_param_new(m->names[k], cfg->outputs, D * H, cfg->dtype)
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
    for (int ld = 0; ld < m->cfg.layers * tg_model_dirs(m); ld++) {
        char name[64];
        snprintf(name, sizeof name, ld % tg_model_dirs(m) ? "rnn.%s_l%d_reverse" : "rnn.%s_l%d", bias,
                 ld / tg_model_dirs(m));
        struct tg_tensor *b = tg_model_param(m, name);
        if (!b) continue;
        for (int j = block * H; j < (block + 1) * H; j++) tg_set(b, 0, j, tg_get(b, 0, j) + value);
    }
}

enum tg_status tg_model_state_alloc(struct tg_model *m, int B)
{
    if (m->state_batch == B) return TG_OK;
    for (int i = 0; i < tg_model_n_states(m); i++) {
        tg_tensor_free(m->state[i]);
        m->state[i] = tg_tensor_new_heap(B, m->cfg.hidden, m->cfg.dtype);
        if (!m->state[i]) return TG_ERR_NOMEM;
    }
    m->state_batch = B;
    return TG_OK;
}

enum tg_status tg_model_keep_state(struct tg_model *m, const struct tg_seq_result *res, int B)
{
    int n = tg_model_n_states(m);
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
    int n = tg_model_n_states(m);
    for (int i = 0; i < n; i++) {
        tg_tensor_free(m->state[i]);
        m->state[i] = NULL;
    }
    m->state_batch = 0;
}
