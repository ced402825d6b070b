/* train_step.c — one optimisation step of the trainer: the batch's loss and gradient (whole, or
 * in K fixed micro-batches summed in block order, exchanged between MPI ranks), the per-layer
 * gradient norms the log shows, clipping, the divergence check and the optimizer's step. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tapegrad_flow.h"
#include "train_impl.h"

static enum tg_status tape_failure(struct tg_tape *t, const char *what)
{
    if (tg_tape_status(t) != TG_OK) return tg_error(tg_tape_status(t), "%s: %s", what, tg_tape_error(t));
    return tg_error(TG_ERR_STATE, "%s failed", what);
}

/* ‖∂L/∂W‖ of each layer's parameters, and of the rest (output layer, embedding), before any
 * clipping: the log's gnorm_* columns. */
static void layer_norms(struct tg_trainer *tr)
{
    const struct tg_model *m = tr->model;
    int L = m->cfg.layers;
    for (int l = 0; l <= L; l++) tr->gnorm[l] = 0;
    for (int p = 0; p < m->n_params; p++) {
        const struct tg_tensor *w = m->params[p];
        int l = m->param_layer[p] >= 0 ? m->param_layer[p] : L;
        size_t n = tg_numel(w);
        double sq = tr->gnorm[l]; /* one running sum per layer, in element order, as ever */
        if (w->dtype == TG_F64) {
            const double *g = w->grad;
            for (size_t i = 0; i < n; i++) sq += g[i] * g[i];
        } else {
            const float *g = w->grad;
            for (size_t i = 0; i < n; i++) sq += (double)g[i] * (double)g[i];
        }
        tr->gnorm[l] = sq;
    }
    for (int l = 0; l <= L; l++) tr->gnorm[l] = sqrt(tr->gnorm[l]);
}

/* Clip every gradient element to [−clip, clip] (clip > 0; tg_clip_grad_value's selects: NaN
 * stays NaN) and tell whether the global gradient norm is then surely finite, without computing
 * it: every |g| is finite and, in float64, at most 2⁴⁸⁰, so each g² ≤ 2⁹⁶⁰ and any sum of fewer
 * than 2⁶² of them stays below DBL_MAX (float32 values square to at most 2²⁵⁶). One pass, and
 * one that vectorises (selects, and a compare and an OR on the bits) where the norm's ordered
 * sum of squares cannot: a step whose norm nobody reads pays it for the divergence check. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define TAME_CLONES __attribute__((target_clones("avx2", "default"))) /* a 64-bit vector compare */
#else
#define TAME_CLONES
#endif
TAME_CLONES static int clip_and_check(const struct tg_model *m, double clip)
{
    int bad = 0, clipping = clip > 0;
    for (int p = 0; p < m->n_params; p++) {
        const struct tg_tensor *w = m->params[p];
        size_t n = tg_numel(w);
        if (w->dtype == TG_F64) {
            double *g = w->grad;
            for (size_t i = 0; i < n; i++) {
                double v = g[i];
                if (clipping) {
                    v = v > clip ? clip : v;
                    v = v < -clip ? -clip : v;
                    g[i] = v;
                }
                uint64_t b;
                memcpy(&b, &v, 8);
                /* |g| > 2⁴⁸⁰, ∞ or NaN; below 2⁶³ after the mask, so a signed compare serves */
                bad |= (int64_t)(b & 0x7fffffffffffffffULL) > (int64_t)0x5df0000000000000LL;
            }
        } else {
            float *g = w->grad;
            const float c = (float)clip;
            for (size_t i = 0; i < n; i++) {
                float v = g[i];
                if (clipping) {
                    v = v > c ? c : v;
                    v = v < -c ? -c : v;
                    g[i] = v;
                }
                uint32_t b;
                memcpy(&b, &v, 4);
                bad |= (b & 0x7fffffffU) >= 0x7f800000U; /* ±∞ or NaN */
            }
        }
    }
    return !bad;
}

/* The divergence message: the step, and the first non-finite tensor — the first node of the
 * tape whose output is not finite (forward), else the first parameter whose gradient is not. */
static enum tg_status diverged(struct tg_trainer *tr, struct tg_tape *t, double loss, double gn)
{
    char where[384] = "";
    if (tg_flow_first_nonfinite(t, where, sizeof where) == 0) {
        const struct tg_model *m = tr->model;
        for (int p = 0; p < m->n_params && !where[0]; p++)
            for (size_t i = 0; i < tg_numel(m->params[p]); i++) {
                const struct tg_tensor *w = m->params[p];
                double g = w->dtype == TG_F64 ? ((const double *)w->grad)[i] : ((const float *)w->grad)[i];
                if (!isfinite(g)) {
                    snprintf(where, sizeof where, "the gradient of %s (element %zu)", m->names[p], i);
                    break;
                }
            }
    }
    /* NaN's sign bit is noise (printf shows "-nan" for some): name it plainly */
    char ls[32], gs[32];
    snprintf(ls, sizeof ls, isnan(loss) ? "nan" : "%g", loss);
    snprintf(gs, sizeof gs, isnan(gn) ? "nan" : "%g", gn);
    return tg_error(TG_ERR_VALUE, "training diverged at step %ld: loss %s, gradient norm %s; first "
                    "non-finite tensor: %s (try a lower --lr or --clip-norm; --detect-anomaly "
                    "stops there and shows the inputs)", tr->step + 1, ls, gs,
                    where[0] ? where : "none found");
}

/* The loss weight that makes the blocks' gradients add up to the batch's: mean cross-entropy
 * divides by the labelled positions of the whole batch, whichever block holds them; adding
 * averages K equal blocks' MSEs. */
static double loss_scale(const struct tg_trainer *tr, const struct tg_batch *b)
{
    if (tr->regression) return 1.0 / tr->cfg.micro_batches;
    if (!tr->mean_loss) return 1.0;
    long n = 0;
    for (long i = 0; i < (long)b->T * b->B; i++) n += b->labels[i] >= 0;
    return n ? 1.0 / (double)n : 0.0;
}

/* The carried state of rows [r0, r0 + B) as the chunk's initial state (NULL: zero). The whole
 * batch reads the model's state as is; a micro-batch reads a copy of its rows. */
static enum tg_status state_in(struct tg_trainer *tr, struct tg_tape *t, int r0, int B, int carry,
                               struct tg_tensor ***init)
{
    struct tg_model *m = tr->model;
    *init = NULL;
    if (!carry || m->state_batch != tr->cfg.batch) return TG_OK;
    if (B == m->state_batch) {
        *init = m->state;
        return TG_OK;
    }
    int n = tg_model_n_states(m);
    size_t row = (size_t)m->cfg.hidden * tg_dtype_size(m->cfg.dtype);
    struct tg_tensor **s = tg_tape_alloc(t, (size_t)n * sizeof *s);
    if (!s) return tape_failure(t, "carried state");
    for (int i = 0; i < n; i++) {
        s[i] = tg_tensor_new(t, B, m->cfg.hidden, m->cfg.dtype);
        if (!s[i]) return tape_failure(t, "carried state");
        memcpy(s[i]->data, (const char *)m->state[i]->data + (size_t)r0 * row, (size_t)B * row);
    }
    *init = s;
    return TG_OK;
}

/* Keep the chunk's final state as rows [r0, r0 + B) of the model's carried state. */
static enum tg_status state_out(struct tg_trainer *tr, const struct tg_seq_result *res, int r0, int B)
{
    struct tg_model *m = tr->model;
    int Bg = tr->cfg.batch;
    if (B == Bg) return tg_model_keep_state(m, res, B);
    int n = tg_model_n_states(m);
    size_t row = (size_t)m->cfg.hidden * tg_dtype_size(m->cfg.dtype);
    TRY(tg_model_state_alloc(m, Bg));
    for (int i = 0; i < n; i++)
        memcpy((char *)m->state[i]->data + (size_t)r0 * row, res->final[i]->data, (size_t)B * row);
    return TG_OK;
}

/* --recompute: what run_block does with a chunk's result, per segment (last segment first). */
struct segment_ctx {
    struct tg_trainer *tr;
    int r0, B, t0;             /* the block's rows, the chunk's first step */
    int keep;                  /* the chunk's final state is carried (state_out) */
    int seen;                  /* segments seen: the first one is the chunk's last */
};

static enum tg_status segment_out(void *ctx, int s0, const struct tg_seq_result *res)
{
    struct segment_ctx *c = ctx;
    int last = c->seen++ == 0;
    if (!c->tr->regression || last) train_outputs(c->tr, res, c->tr->probs, c->t0 + s0, c->B);
    /* Overwriting the carried state before the first segment is re-recorded is safe: the
     * recompute copied the initial state when it began. */
    if (c->keep && last) return state_out(c->tr, res, c->r0, c->B);
    return TG_OK;
}

/* Record and backpropagate one block of sequences (the whole batch, or micro-batch rows
 * [r0, r0 + b->B)) into the parameters' gradients: its weighted loss and its metric sums. */
static enum tg_status run_block(struct tg_trainer *tr, const struct tg_batch *b, int r0,
                                double scale, double *loss, struct tg_metrics *mt)
{
    struct tg_model *m = tr->model;
    struct tg_tape *t = tr->tape;
    int T = b->T, B = b->B, in = b->in_dim;
    int chunk = !tr->text && tr->cfg.seq > 0 && tr->cfg.seq < T ? tr->cfg.seq : T;
    int nchunks = (T + chunk - 1) / chunk;
    *loss = 0;
    /* Dropout's masks for this block: drawn from a generator that depends only on the step's
     * seed and the block's first row, so every rank draws a block's masks alike. */
    struct tg_rng drop;
    tg_rng_seed(&drop, tr->drop_seed ^ ((uint64_t)r0 * 0xd1b54a32d192ed03ULL));
    m->dropout_rng = tr->cfg.dropout > 0 ? &drop : NULL;
    for (int c = 0; c < nchunks; c++) {
        int t0 = c * chunk, Tc = T - t0 < chunk ? T - t0 : chunk, last = c == nchunks - 1;
        struct tg_seq_batch sb = {
            .T = Tc, .B = B,
            .x = b->x ? b->x + (size_t)t0 * B * in : NULL,
            .tokens = b->x ? NULL : b->tokens + (size_t)t0 * B,
            .labels = b->labels ? b->labels + (size_t)t0 * B : NULL,
            .lengths = nchunks == 1 ? b->lengths : NULL, /* chunks: the −1 labels say it */
            .target = b->target,
        };
        /* Adding's loss sits at the very last step: earlier chunks only move the state. */
        int nograd = tr->regression && !last;
        tg_tape_reset(t);
        tg_tape_set_no_grad(t, nograd);
        struct tg_seq_result res;
        struct tg_tensor **init;
        enum tg_status st = state_in(tr, t, r0, B, tr->text || c > 0, &init);
        if (st == TG_OK && tr->rc && !nograd && tg_recompute_k(tr->rc) < Tc) {
            struct segment_ctx sc = {tr, r0, B, t0, tr->text || !last, 0};
            double l = 0;
            st = tg_model_grad_recompute(m, t, &sb, init, scale, tr->rc, &l, segment_out, &sc);
            if (st != TG_OK && !isfinite(l) && !tg_tape_anomaly(t)) st = diverged(tr, t, l, NAN);
            *loss += l;
            if (st != TG_OK) return st;
            continue;
        }
        if (st == TG_OK) st = tg_model_forward_from(m, t, &sb, init, &res);
        struct tg_tensor *L = res.loss;
        if (st == TG_OK && !nograd) {
            if (scale != 1.0) L = tg_affine(t, L, scale, 0.0);
            st = L ? tg_backward(t, L) : tape_failure(t, "loss scaling");
            if (st != TG_OK && L && !isfinite(tg_get(L, 0, 0)) && !tg_tape_anomaly(t))
                st = diverged(tr, t, tg_get(L, 0, 0), NAN);
            if (st == TG_OK) *loss += tg_get(L, 0, 0);
        }
        if (st == TG_OK && (!tr->regression || last)) train_outputs(tr, &res, tr->probs, t0, B);
        /* The state is copied out only after backward: the chunk's first step read it. */
        if (st == TG_OK && (tr->text || !last)) st = state_out(tr, &res, r0, B);
        tg_tape_set_no_grad(t, 0);
        if (st != TG_OK) {
            m->dropout_rng = NULL;
            return st;
        }
    }
    m->dropout_rng = NULL; /* evaluation and sampling run without dropout */
    tg_metrics_reset(tr->task, mt);
    tg_task_metrics(tr->task, b, tr->probs, mt);
    return TG_OK;
}

/* Slot layout: a header of doubles, then every parameter's gradient in order. */
enum { H_LOSS, H_FAILED, H_STOP, H_NUM, H_DEN = H_NUM + TG_METRICS_MAX, H_END = H_DEN + TG_METRICS_MAX };
_Static_assert(H_END * sizeof(double) <= SLOT_HEAD, "the slot header holds its fields");

static double *slot(const struct tg_trainer *tr, int k)
{
    return (double *)(tr->slots + (size_t)k * tr->slot_bytes);
}

/* K > 1: this rank's blocks into their slots, one exchange, then every rank sums all K slots
 * in block order into the gradients — the same bytes whatever the number of ranks. */
static enum tg_status run_blocks(struct tg_trainer *tr, double scale, double *loss)
{
    struct tg_model *m = tr->model;
    int K = tr->cfg.micro_batches, mb = tr->cfg.batch / K;
    enum tg_status st = TG_OK;
    for (int k = tr->k0; k < tr->k0 + tr->kn; k++) {
        double *h = slot(tr, k);
        memset(h, 0, SLOT_HEAD);
        struct tg_metrics mt;
        if (st == TG_OK) {
            st = tg_batch_rows(&tr->batch, k * mb, &tr->sub);
            tg_model_zero_grad(m);
            if (st == TG_OK) st = run_block(tr, &tr->sub, k * mb, scale, &h[H_LOSS], &mt);
        }
        if (st != TG_OK) {
            h[H_FAILED] = 1; /* still exchanged, so that every rank stops at this step */
            continue;
        }
        for (int i = 0; i < mt.n; i++) h[H_NUM + i] = mt.num[i], h[H_DEN + i] = mt.den[i];
        unsigned char *g = (unsigned char *)h + SLOT_HEAD;
        for (int i = 0; i < m->n_params; i++) {
            memcpy(g, m->params[i]->grad, tg_nbytes(m->params[i]));
            g += tg_nbytes(m->params[i]);
        }
    }
    if (tr->kn > 0) slot(tr, tr->k0)[H_STOP] = tr->cfg.stop && *tr->cfg.stop;
    TRY(tg_dist_allgather(tr->cfg.dist, tr->slots, tr->slot_bytes, K));

    struct tg_metrics *mt = &tr->train_m;
    tg_metrics_reset(tr->task, mt);
    int failed = -1;
    tr->stop_seen = 0;
    *loss = 0;
    for (int k = 0; k < K; k++) {
        const double *h = slot(tr, k);
        if (h[H_FAILED] && failed < 0) failed = k;
        tr->stop_seen |= h[H_STOP] != 0;
        *loss += h[H_LOSS];
        for (int i = 0; i < mt->n; i++) mt->num[i] += h[H_NUM + i], mt->den[i] += h[H_DEN + i];
    }
    if (st != TG_OK) {
        tr->failed_alone = tr->nranks > 1 ? 2 : 0;
        return st;
    }
    if (failed >= 0)
        return tg_error(TG_ERR_STATE, "step %ld failed on the rank computing micro-batch %d (its "
                        "message says why)", tr->step + 1, failed);
    for (int i = 0; i < mt->n; i++) mt->values[i] = mt->den[i] > 0 ? mt->num[i] / mt->den[i] : NAN;
    size_t off = SLOT_HEAD;
    for (int i = 0; i < m->n_params; i++) {
        struct tg_tensor *p = m->params[i];
        long n = (long)tg_numel(p);
        for (int k = 0; k < K; k++) {
            const unsigned char *g = (const unsigned char *)slot(tr, k) + off;
            /* Each element's sum runs over k in order, whatever the thread count. */
            if (p->dtype == TG_F64) {
                double *d = p->grad;
                const double *s = (const double *)g;
#pragma omp parallel for if (n > 65536)
                for (long j = 0; j < n; j++) d[j] = k ? d[j] + s[j] : s[j];
            } else {
                float *d = p->grad;
                const float *s = (const float *)g;
#pragma omp parallel for if (n > 65536)
                for (long j = 0; j < n; j++) d[j] = k ? d[j] + s[j] : s[j];
            }
        }
        off += tg_nbytes(p);
    }
    return TG_OK;
}

enum tg_status tg_trainer_step(struct tg_trainer *tr)
{
    struct tg_model *m = tr->model;
    struct tg_batch *b = &tr->batch;
    TRY(tg_task_next_batch(tr->task, &tr->rng, b));
    /* one draw per step, only with dropout: runs without it keep their random stream */
    if (tr->cfg.dropout > 0 && tr->cfg.layers > 1) tr->drop_seed = tg_rng_next(&tr->rng);
    int B = b->B;
    double scale = loss_scale(tr, b);
    /* A text stream that starts over (end of its segment) starts from a zero state. */
    if (tr->text && m->state_batch == B) {
        int ns = tg_model_n_states(m);
        for (int r = 0; r < B; r++)
            if (b->reset[r])
                for (int i = 0; i < ns; i++)
                    memset((char *)m->state[i]->data + (size_t)r * m->cfg.hidden * tg_dtype_size(m->cfg.dtype),
                           0, (size_t)m->cfg.hidden * tg_dtype_size(m->cfg.dtype));
    }
    double loss = 0;
    if (tr->cfg.micro_batches > 1) {
        TRY(run_blocks(tr, scale, &loss));
    } else {
        tg_model_zero_grad(m);
        TRY(run_block(tr, b, 0, scale, &loss, &tr->train_m));
    }

    struct tg_tensor **P = m->params;
    /* The norms are read by the log, the progress callback and --clip-norm. A step with none
     * of them (the C API's bare step, the benchmarks) skips their ordered sums of squares
     * (a quarter of a min-char-rnn step) and only checks that the norm would be finite; a
     * failed check, or a non-finite loss, computes it exactly as before for the message. */
    int want = tr->log.f || tr->cfg.progress || tr->cfg.clip_norm > 0;
    double gn = NAN; /* not computed: nothing reads it */
    int computed = want || !isfinite(loss);
    if (computed) {
        if (want) layer_norms(tr);
        if (tr->cfg.clip_value > 0) TRY(tg_clip_grad_value(P, m->n_params, tr->cfg.clip_value));
    } else {
        computed = !clip_and_check(m, tr->cfg.clip_value);
    }
    if (computed)
        gn = tg_clip_grad_norm(P, m->n_params, tr->cfg.clip_norm > 0 ? tr->cfg.clip_norm : INFINITY);
    if ((computed && !isfinite(gn)) || !isfinite(loss)) return diverged(tr, tr->tape, loss, gn);
    TRY(tg_optim_step(tr->optim));
    tr->step++;
    tr->loss = loss;
    tr->grad_norm = gn;
    tr->smooth_loss = tr->smooth_loss == 0 ? loss : SMOOTH * tr->smooth_loss + (1 - SMOOTH) * loss;
    double m0 = tr->train_m.values[0];
    if (isfinite(m0))
        tr->smooth_metric = tr->smooth_metric == 0 ? m0 : SMOOTH * tr->smooth_metric + (1 - SMOOTH) * m0;
    for (int r = 0; r < B; r++) tr->tokens += b->lengths[r];
    return TG_OK;
}

/* ------------------------------------------------------------------ evaluation */

