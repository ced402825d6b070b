/* sequence_fwd.c — recording the unrolled sequence model: [embedding] → L stacked layers of
 * one or two directions → linear output → loss. Only ops are recorded; BPTT, the reverse
 * direction's gradient, dropout's and the frozen states' all come from tg_backward.
 *
 * Layout: inputs are time-major, rows t·B … t·B + B − 1 of the T·B-row input matrix are step t.
 * Layers run one after another over the whole sequence (layer-major), so step t of layer l
 * consumes h_t of layer l−1 directly; the top layer's h_1 … h_T are stacked into one T·B×H
 * matrix so the output layer is a single GEMM.
 *
 * Bidirectional (PyTorch's semantics): direction 1 of layer l runs t = T−1 … 0 with its own
 * parameters (*_l{k}_reverse) from its own initial state; the layer's output at t is
 * Y_t = [h→_t, h←_t] (T·B × 2H), which layer l+1 and the output layer read.
 *
 * Dropout between layers: layer l+1 (l < L−1) reads Y ⊙ M with M_ij = 0 (probability p) or
 * 1/(1 − p), a leaf drawn per forward — so its gradient is dY = dX ⊙ M, from the tape.
 *
 * Variable lengths (pack_padded_sequence): with m_t = [t < len_b] (a B×1 column),
 *   s_t = m_t ⊙ cell(x_t, s_{t−1}) + (1 − m_t) ⊙ s_{t−1}
 * inside the step's fusion region, so a sequence's state stops at its last valid step (both
 * directions: the reverse one stays at its initial state until t = len_b − 1, where PyTorch
 * starts it) and the gradient through a frozen step is exactly the identity. The masks are only
 * recorded for steps t ≥ min len, so full-length batches record the same graph as without. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad_models.h"

static enum tg_status fail_from_tape(struct tg_tape *t, const char *what)
{
    if (tg_tape_status(t) != TG_OK)
        return tg_error(tg_tape_status(t), "tg_model_forward: %s: %s", what, tg_tape_error(t));
    return tg_error(TG_ERR_VALUE, "tg_model_forward: %s failed", what);
}

/* A B×1 column on the tape: 1 where step s is valid for the row (keep = 1), or its complement. */
static struct tg_tensor *length_column(struct tg_tape *t, const int32_t *len, int s, int B,
                                       enum tg_dtype dt, int complement)
{
    struct tg_tensor *c = tg_tensor_new(t, B, 1, dt);
    if (!c) return NULL;
    for (int b = 0; b < B; b++) tg_set(c, b, 0, (s < len[b]) != complement ? 1.0 : 0.0);
    return c;
}

/* The dropout multipliers for layer l's output (T·B × D·H): the fixed ones, or drawn. */
static struct tg_tensor *dropout_mask(struct tg_model *m, struct tg_tape *t, int l, int rows, int cols)
{
    struct tg_tensor *M = tg_tensor_new(t, rows, cols, m->cfg.dtype);
    if (!M) return NULL;
    size_t n = (size_t)rows * cols;
    double p = m->cfg.dropout, keep = 1.0 / (1.0 - p);
    const double *fixed = m->dropout_mask ? m->dropout_mask + (size_t)l * n : NULL;
    for (size_t i = 0; i < n; i++) {
        double v = fixed ? fixed[i] : tg_rng_uniform(m->dropout_rng) < p ? 0.0 : keep;
        if (m->cfg.dtype == TG_F64) ((double *)M->data)[i] = v;
        else ((float *)M->data)[i] = (float)v;
    }
    return M;
}

static enum tg_status check_batch(const struct tg_model *m, const struct tg_seq_batch *b, int *minlen)
{
    const struct tg_model_config *cfg = &m->cfg;
    int T = b->T, B = b->B;
    if (T < 1 || B < 1)
        return tg_error(TG_ERR_SHAPE, "tg_model_forward: need T >= 1 and B >= 1, got T=%d B=%d", T, B);
    if ((cfg->vocab > 0) != (b->tokens != NULL) || (!b->tokens && !b->x))
        return tg_error(TG_ERR_VALUE, "tg_model_forward: the model takes %s inputs",
                        cfg->vocab > 0 ? "token" : "dense");
    int mse = cfg->loss == TG_LOSS_MSE_LAST;
    if (mse ? !b->target : !b->labels)
        return tg_error(TG_ERR_VALUE, "tg_model_forward: missing %s", mse ? "regression target" : "labels");
    *minlen = T;
    for (int r = 0; b->lengths && r < B; r++) {
        if (b->lengths[r] < 1 || b->lengths[r] > T)
            return tg_error(TG_ERR_VALUE, "tg_model_forward: lengths[%d] = %d is outside [1, T = %d]", r,
                            (int)b->lengths[r], T);
        if (b->lengths[r] < *minlen) *minlen = b->lengths[r];
    }
    int dropping = cfg->dropout > 0 && m->dropout_rng && cfg->layers > 1;
    if (m->dropout_mask || dropping) {
        /* the mask block of a layer is T·B·D·H values; refuse sizes whose product overflows */
        double n = (double)T * B * cfg->hidden * (cfg->bidirectional ? 2 : 1);
        if (n > (double)((size_t)1 << 40))
            return tg_error(TG_ERR_SHAPE, "tg_model_forward: dropout masks of T=%d B=%d are too large", T, B);
    }
    return TG_OK;
}

enum tg_status tg_model_forward_from(struct tg_model *m, struct tg_tape *t,
                                     const struct tg_seq_batch *b,
                                     struct tg_tensor *const *init, struct tg_seq_result *res)
{
    const struct tg_model_config *cfg = &m->cfg;
    const struct tg_cell *cell = cfg->cell;
    int T = b->T, B = b->B, H = cfg->hidden, L = cfg->layers, ns = cell->n_state;
    int D = tg_model_dirs(m), minlen = b->T;
    memset(res, 0, sizeof *res);
    enum tg_status st0 = check_batch(m, b, &minlen);
    if (st0 != TG_OK) return st0;
    const int32_t *len = b->lengths && minlen < T ? b->lengths : NULL; /* NULL: all full */
    int mse = cfg->loss == TG_LOSS_MSE_LAST;
    int drop = m->dropout_mask || (cfg->dropout > 0 && m->dropout_rng);

    /* Padding is never read: padded tokens become id 0, padded input rows zeros, padded labels
     * −1 (no loss) — so whatever a caller left there cannot reach the result. */
    const int32_t *tokens = b->tokens, *labels = b->labels;
    if (len) {
        int32_t *tk = tokens ? tg_tape_alloc(t, (size_t)T * B * sizeof *tk) : NULL;
        int32_t *lb = labels ? tg_tape_alloc(t, (size_t)T * B * sizeof *lb) : NULL;
        if ((tokens && !tk) || (labels && !lb)) return fail_from_tape(t, "workspace");
        for (size_t i = 0; i < (size_t)T * B; i++) {
            int valid = (int)(i / (size_t)B) < len[i % (size_t)B];
            if (tk) tk[i] = valid ? tokens[i] : 0;
            if (lb) lb[i] = valid ? labels[i] : -1;
        }
        tokens = tk ? tk : tokens;
        labels = lb ? lb : labels;
    }

    /* Inputs: T·B rows, one block of B rows per step. */
    struct tg_tensor *X;
    if (cfg->vocab > 0) {
        X = tg_embedding(t, m->params[0], tokens, T * B);
        if (!X) return fail_from_tape(t, "embedding");
    } else {
        X = tg_tensor_new(t, T * B, cfg->input, cfg->dtype);
        if (!X) return fail_from_tape(t, "input");
        size_t I = (size_t)cfg->input;
        for (size_t r = 0; r < (size_t)T * B; r++) {
            int pad = len && (int)(r / (size_t)B) >= len[r % (size_t)B]; /* X is zero-filled */
            for (size_t i = r * I; !pad && i < (r + 1) * I; i++) {
                if (cfg->dtype == TG_F64) ((double *)X->data)[i] = b->x[i];
                else ((float *)X->data)[i] = (float)b->x[i];
            }
        }
        res->input = X;
    }
    /* hs[d·T + t]: direction d's output at time t for the layer being run; below[t]: the
     * layer below's (one direction, no dropout: read per step without stacking them). */
    struct tg_tensor **hs = tg_tape_alloc(t, (size_t)2 * D * T * sizeof *hs), **below = hs + D * T;
    struct tg_tensor **keep = len ? tg_tape_alloc(t, (size_t)2 * T * sizeof *keep) : NULL;
    res->final = tg_tape_alloc(t, (size_t)L * D * ns * sizeof *res->final);
    res->states = tg_tape_alloc(t, (size_t)L * D * T * ns * sizeof *res->states);
    if (!hs || (len && !keep) || !res->final || !res->states) return fail_from_tape(t, "workspace");
    if (keep) memset(keep, 0, (size_t)2 * T * sizeof *keep); /* keep[t], then 1 − keep at T + t */
    /* for anomaly reports: which cell recorded a node, and how many rows make a step */
    tg_tape_set_origin(t, cell->name);
    tg_tape_set_step_rows(t, B);

    struct tg_tensor *state[2], *next[2], *Y = NULL; /* Y: the layer below's stacked output */
    int first = cfg->vocab > 0, projected = cell->input || cell->input_ctx;
    for (int l = 0; l < L; l++) {
        int in = l == 0 ? cfg->input : D * H;
        /* The layer's whole input as one T·B-row matrix (the first layer's X, or the layer
         * below's output, stacked and dropped out) when a projection, a second direction or
         * dropout needs it; otherwise each step reads the step below directly. */
        struct tg_tensor *Xin = X;
        if (l > 0) {
            Xin = Y;
            if (!Y && (projected || drop)) {
                tg_tape_set_tag(t, -1, l);
                Xin = T == 1 ? below[0] : tg_concat(t, 0, T, below);
            }
            if (Xin && drop) {
                tg_tape_set_tag(t, -1, l);
                struct tg_tensor *M = dropout_mask(m, t, l - 1, T * B, D * H);
                Xin = M ? tg_mul(t, Xin, M) : NULL;
            }
            if (!Xin && (Y || projected || drop)) return fail_from_tape(t, "layer input");
        }
        for (int d = 0; d < D; d++) {
            struct tg_tensor *const *w = m->params + first + (l * D + d) * cell->n_params;
            struct tg_tensor *Xl = Xin;
            if (projected) {
                /* the part of every step that reads x alone, for all T·B rows: one GEMM */
                tg_tape_set_tag(t, -1, l);
                Xl = cell->input ? cell->input(t, w, Xin) : cell->input_ctx(cell->ctx, in, H, t, w, Xin);
                if (!Xl) return fail_from_tape(t, "input projection");
            }
            for (int k = 0; k < ns; k++) {
                struct tg_tensor *s0 = init ? init[(l * D + d) * ns + k] : NULL;
                if (s0 && (s0->rows != B || s0->cols != H || s0->dtype != cfg->dtype))
                    return tg_error(TG_ERR_SHAPE, "tg_model_forward: initial state %d of layer %d%s is "
                                    "(%dx%d) %s, expected (%dx%d) %s", k, l, d ? " (reverse)" : "",
                                    s0->rows, s0->cols, tg_dtype_name(s0->dtype), B, H,
                                    tg_dtype_name(cfg->dtype));
                state[k] = s0 ? s0 : tg_tensor_new(t, B, H, cfg->dtype);
                if (!state[k]) return fail_from_tape(t, "initial state");
            }
            for (int i = 0; i < T; i++) {
                int s = d ? T - 1 - i : i; /* the reverse direction runs right to left */
                tg_tape_set_tag(t, s, l);
                struct tg_tensor *x = l == 0 || Xl ? tg_slice(t, Xl, 0, s * B, (s + 1) * B) : below[s];
                int freeze = len && s >= minlen;
                if (freeze && !keep[s]) {
                    keep[s] = length_column(t, len, s, B, cfg->dtype, 0);
                    keep[T + s] = length_column(t, len, s, B, cfg->dtype, 1);
                    if (!keep[s] || !keep[T + s]) return fail_from_tape(t, "length mask");
                }
                next[0] = next[1] = NULL;
                /* One fusion region per step: the cell's elementwise gate math (and the
                 * freezing of finished sequences) becomes one node that keeps only the new
                 * state (autograd/fuse.c); a no-op with fusion off. */
                tg_tape_fuse_begin(t);
                if (cell->step) cell->step(t, w, x, state, next);
                else cell->step_ctx(cell->ctx, in, H, t, w, x, state, next);
                for (int k = 0; freeze && k < ns; k++)
                    next[k] = tg_add(t, tg_mul(t, next[k], keep[s]), tg_mul(t, state[k], keep[T + s]));
                if (tg_tape_fuse_end(t, next, ns) != TG_OK) next[0] = next[1] = NULL;
                for (int k = 0; k < ns; k++) {
                    if (!next[k]) {
                        char what[112];
                        snprintf(what, sizeof what, "cell '%s' at time step %d of %d, layer %d%s",
                                 cell->name, s + 1, T, l, d ? " (reverse)" : ""); /* steps 1..T */
                        return fail_from_tape(t, what);
                    }
                    state[k] = next[k];
                    res->states[(((size_t)l * D + d) * T + s) * ns + k] = next[k];
                }
                hs[d * T + s] = state[0];
            }
            for (int k = 0; k < ns; k++) res->final[(l * D + d) * ns + k] = state[k];
        }
        /* This layer's output for the next layer and the output layer: per step (one
         * direction), or stacked [forward; reverse] columns (two). */
        Y = NULL;
        if (D == 2) {
            tg_tape_set_tag(t, -1, l);
            struct tg_tensor *yf = T == 1 ? hs[0] : tg_concat(t, 0, T, hs);
            struct tg_tensor *yr = T == 1 ? hs[T] : tg_concat(t, 0, T, hs + T);
            Y = yf && yr ? tg_concat2(t, 1, yf, yr) : NULL;
            if (!Y) return fail_from_tape(t, "bidirectional output");
        } else {
            memcpy(below, hs, (size_t)T * sizeof *hs);
        }
    }
    tg_tape_set_tag(t, -1, -1);
    tg_tape_set_origin(t, "output layer");

    struct tg_tensor *W = m->params[m->n_params - 2], *bias = m->params[m->n_params - 1];
    if (mse) {
        /* each sequence's output at its last valid step: the forward direction's state is
         * frozen there already; the reverse one's is picked out of step len_b − 1 */
        struct tg_tensor *last = hs[T - 1];
        if (D == 2) {
            struct tg_tensor *rev = hs[T + T - 1];
            if (len) {
                rev = NULL;
                for (int s = minlen - 1; s < T; s++) {
                    struct tg_tensor *e = tg_tensor_new(t, B, 1, cfg->dtype);
                    int any = 0;
                    for (int r = 0; e && r < B; r++) {
                        tg_set(e, r, 0, len[r] - 1 == s ? 1.0 : 0.0);
                        any |= len[r] - 1 == s;
                    }
                    if (!e) return fail_from_tape(t, "length mask");
                    if (!any) continue;
                    struct tg_tensor *term = tg_mul(t, hs[T + s], e);
                    rev = rev ? tg_add(t, rev, term) : term;
                }
            }
            last = tg_concat2(t, 1, last, rev);
        }
        res->logits = tg_addmm(t, bias, last, W, 0, 1);
        struct tg_tensor *y = tg_tensor_new(t, B, cfg->outputs, cfg->dtype);
        if (!y) return fail_from_tape(t, "target");
        for (int i = 0; i < B * cfg->outputs; i++) tg_set(y, 0, i, b->target[i]);
        res->loss = tg_mse(t, res->logits, y, TG_REDUCE_MEAN);
    } else {
        struct tg_tensor *Hs = Y ? Y : T == 1 ? hs[0] : tg_concat(t, 0, T, hs);
        res->logits = tg_addmm(t, bias, Hs, W, 0, 1);
        res->loss = tg_softmax_xent(t, res->logits, labels,
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
