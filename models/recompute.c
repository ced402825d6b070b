/* recompute.c — gradient checkpointing for BPTT, on top of the public sequence API.
 *
 * The plain run records all T steps on one tape and keeps every step's activations until
 * backward: O(T) memory. Here the T steps are cut into S = ⌈T/K⌉ segments of K steps.
 *
 *   forward   segments 0 … S−2 run without recording (no-grad tape, reset after each); only the
 *             state at the start of each segment, s_0 … s_{S−1} (L·n_state B×H tensors each), is
 *             kept. The last segment needs no forward of its own: backward re-records it first.
 *   backward  for j = S−1 down to 0: record segment j from s_j, now a leaf that wants a
 *             gradient, with the loss of its own positions, and walk it back. What the steps
 *             after the segment owe to its final state, g_j = ∂loss/∂s_{j+1}, enters as a term
 *             whose gradient is exactly g_j:
 *                 loss_j = scale · xent_j + Σ_k sum(final_k ⊙ g_{j,k})       (g constant),
 *             so ∂loss_j/∂final_k = g_{j,k} (mul's backward: g · 1, exact) and tg_backward gives
 *             the segment's share of every parameter gradient (accumulated across calls, as
 *             parameter gradients are) and ∂loss/∂s_j, which is g_{j−1}.
 *
 * The arena holds one segment at a time, so memory is O(S + K) states instead of O(T); the
 * cost is one extra forward of T − K steps (about a third of a step's time for an LSTM).
 *
 * Equal to the plain run. Every step runs the same ops on the same values (a segment starts
 * from the same bytes the plain run had at that step), so activations, per-step gradients
 * (dA_t, dh_t, dc_t) and ∂loss/∂(initial state) are the same bytes, except where a sum is
 * grouped differently:
 *   - parameter gradients are sums over all T·B rows; the plain run forms the hoisted ones
 *     (W_ih and its bias through the input projection, W_hh through the engine's staged dW,
 *     the output layer, the embedding) as one GEMM over T·B rows, this as S GEMMs over K·B
 *     rows added last segment first: the same terms in another order, a few ulps of the sum;
 *   - the gradient reaching a segment's last h is g + (output or upper-layer part): two terms
 *     commute (a + b = b + a), so lstm and rnn_tanh are exact there; a cell that also reads h
 *     elementwise (gru: z ⊙ h) has three, and the plain run's (out + fused) + gemm becomes
 *     (fused + gemm) + out here: a last-bit difference at each boundary;
 *   - with L ≥ 2 the upper layer's input projection is one GEMM over T·B rows there and over
 *     K·B rows here; OpenBLAS runs a row through a full 4-row kernel or an edge kernel by where
 *     it falls in M, and the two round differently, so dh of some rows differs in the last bit
 *     unless B is a multiple of 4 (tested both ways).
 * tests/test_recompute.c asserts the exact cases bit for bit and bounds the rest in float64
 * (observed ≤ 1.1e-15 of the largest |g|). K ≥ T is the plain run, bit for bit.
 *
 * Loss normalisation. The model's loss is per segment; a sum splits exactly over segments. A
 * mean (TG_LOSS_XENT_MEAN) divides by the labelled positions of the whole batch, so each
 * segment records the sum and the scale takes 1/n: the per-logit gradient s·(p − y) is then the
 * plain run's (bit for bit when scale = 1; otherwise scale·(1/n) against scale/n, one rounding).
 * TG_LOSS_MSE_LAST has its loss at the last step only: earlier segments carry only g. */
#include <stdlib.h>
#include <string.h>

#include "tapegrad_models.h"

struct tg_recompute {
    int K;
    int n;                     /* L·n_state state tensors */
    int B, H;
    enum tg_dtype dtype;
    int cap;                   /* segments `saved` has room for */
    unsigned char *saved;      /* cap × n × B×H: the state at the start of each segment */
    struct tg_tensor **leaf;   /* n heap tensors with gradients: a segment's initial state */
    struct tg_tensor **g;      /* n heap tensors: ∂loss/∂(final state) of the segment recorded */
    struct tg_tensor **want;   /* n: the caller's heap initial states that want a gradient */
};

enum tg_status tg_recompute_new(int K, struct tg_recompute **out)
{
    *out = NULL;
    if (K < 1) return tg_error(TG_ERR_VALUE, "tg_recompute_new: segment length K must be >= 1, got %d", K);
    struct tg_recompute *rc = calloc(1, sizeof *rc);
    if (!rc) return tg_error(TG_ERR_NOMEM, "tg_recompute_new: out of memory");
    rc->K = K;
    *out = rc;
    return TG_OK;
}

static void free_states(struct tg_recompute *rc)
{
    for (int i = 0; i < rc->n; i++) {
        if (rc->leaf) tg_tensor_free(rc->leaf[i]);
        if (rc->g) tg_tensor_free(rc->g[i]);
    }
    free(rc->leaf);
    free(rc->g);
    free(rc->want);
    rc->want = NULL;
    free(rc->saved);
    rc->leaf = rc->g = NULL;
    rc->saved = NULL;
    rc->n = rc->cap = 0;
}

void tg_recompute_free(struct tg_recompute *rc)
{
    if (!rc) return;
    free_states(rc);
    free(rc);
}

int tg_recompute_k(const struct tg_recompute *rc) { return rc->K; }

struct tg_tensor *const *tg_recompute_init_grad(const struct tg_recompute *rc)
{
    return rc->leaf;
}

/* Room for S segments of this model and batch; allocates only when something grew or changed,
 * so a training loop allocates nothing after its first step. */
static enum tg_status reserve(struct tg_recompute *rc, const struct tg_model *m, int B, int S)
{
    int n = m->cfg.layers * m->cfg.cell->n_state, H = m->cfg.hidden;
    if (rc->n == n && rc->B == B && rc->H == H && rc->dtype == m->cfg.dtype && rc->cap >= S)
        return TG_OK;
    free_states(rc);
    size_t one = (size_t)B * H * tg_dtype_size(m->cfg.dtype);
    rc->leaf = calloc((size_t)n, sizeof *rc->leaf);
    rc->g = calloc((size_t)n, sizeof *rc->g);
    rc->want = calloc((size_t)n, sizeof *rc->want);
    rc->saved = malloc((size_t)S * n * one);
    if (!rc->leaf || !rc->g || !rc->want || !rc->saved) goto nomem;
    rc->n = n;
    rc->B = B, rc->H = H, rc->dtype = m->cfg.dtype, rc->cap = S;
    for (int i = 0; i < n; i++) {
        rc->leaf[i] = tg_tensor_new_heap(B, H, m->cfg.dtype);
        rc->g[i] = tg_tensor_new_heap(B, H, m->cfg.dtype);
        if (!rc->leaf[i] || !rc->g[i] || tg_tensor_set_requires_grad(rc->leaf[i]) != TG_OK) goto nomem;
    }
    return TG_OK;
nomem:
    free_states(rc);
    return tg_error(TG_ERR_NOMEM, "tg_model_grad_recompute: out of memory for %d saved states of "
                    "%d x (%dx%d)", S, n, B, H);
}

static void *saved_at(const struct tg_recompute *rc, int seg, int i)
{
    size_t one = (size_t)rc->B * rc->H * tg_dtype_size(rc->dtype);
    return rc->saved + ((size_t)seg * rc->n + i) * one;
}

/* Steps [t0, t0 + Tk) of the batch as a batch of their own. */
static struct tg_seq_batch segment(const struct tg_model *m, const struct tg_seq_batch *b, int t0, int Tk)
{
    size_t rows = (size_t)t0 * b->B;
    return (struct tg_seq_batch){
        .T = Tk, .B = b->B,
        .x = b->x ? b->x + rows * m->cfg.input : NULL,
        .tokens = b->tokens ? b->tokens + rows : NULL,
        .labels = b->labels ? b->labels + rows : NULL,
        .target = b->target,
    };
}

static enum tg_status tape_failure(struct tg_tape *t, const char *what)
{
    if (tg_tape_status(t) != TG_OK)
        return tg_error(tg_tape_status(t), "tg_model_grad_recompute: %s: %s", what, tg_tape_error(t));
    return tg_error(TG_ERR_VALUE, "tg_model_grad_recompute: %s failed", what);
}

/* Record segment j from its saved state and walk it back; leaves ∂loss/∂s_j in the leaves'
 * gradients. with_g: add the term carrying g (every segment but the last). */
static enum tg_status backward_segment(struct tg_model *m, struct tg_tape *t, struct tg_recompute *rc,
                                       const struct tg_seq_batch *sb, int j, int with_g,
                                       double scale, int with_loss, double *loss,
                                       struct tg_seq_result *res)
{
    size_t one = (size_t)rc->B * rc->H * tg_dtype_size(rc->dtype);
    for (int i = 0; i < rc->n; i++) {
        memcpy(rc->leaf[i]->data, saved_at(rc, j, i), one);
        tg_tensor_zero_grad(rc->leaf[i]);
    }
    enum tg_status st = tg_model_forward_from(m, t, sb, rc->leaf, res);
    if (st != TG_OK) return st;
    struct tg_tensor *total = NULL;
    if (with_loss) {
        total = scale != 1.0 ? tg_affine(t, res->loss, scale, 0.0) : res->loss;
        if (!total) return tape_failure(t, "loss scaling");
        *loss += tg_get(total, 0, 0);
    }
    for (int i = 0; with_g && i < rc->n; i++) {
        struct tg_tensor *term = tg_sum(t, tg_mul(t, res->final[i], rc->g[i]));
        total = total ? tg_add(t, total, term) : term;
        if (!total) return tape_failure(t, "carried state gradient");
    }
    /* A segment with neither (a lone segment of MSE_LAST cannot happen: the last one has the
     * loss) would have nothing to walk back. */
    if (!total) return TG_OK;
    return tg_backward(t, total);
}

/* What a segment-by-segment replay cannot reproduce yet, refused rather than answered wrongly:
 * a reverse direction runs from step T back to 1, so its state at a segment boundary is not known
 * until the later segments have run; dropout draws its masks as the forward runs, and a replay
 * would draw others; per-sequence lengths would need each segment's own lengths (0 inside a
 * segment a sequence has already ended in); all lengths equal to T are the plain batch. */
static enum tg_status unsupported(const struct tg_model *m, const struct tg_seq_batch *b, const char *fn)
{
    if (m->cfg.bidirectional)
        return tg_error(TG_ERR_VALUE, "%s: recompute does not support bidirectional layers", fn);
    if (m->dropout_rng || m->dropout_mask)
        return tg_error(TG_ERR_VALUE, "%s: recompute does not support dropout while training", fn);
    for (int r = 0; b->lengths && r < b->B; r++)
        if (b->lengths[r] != b->T)
            return tg_error(TG_ERR_VALUE, "%s: recompute does not support sequences shorter than T "
                            "(lengths[%d] = %d, T = %d)", fn, r, (int)b->lengths[r], b->T);
    return TG_OK;
}

enum tg_status tg_model_grad_recompute(struct tg_model *m, struct tg_tape *t,
                                       const struct tg_seq_batch *b, struct tg_tensor *const *init,
                                       double scale, struct tg_recompute *rc, double *loss,
                                       tg_recompute_segment_fn on_segment, void *ctx)
{
    *loss = 0;
    if (b->T < 1 || b->B < 1)
        return tg_error(TG_ERR_SHAPE, "tg_model_grad_recompute: need T >= 1 and B >= 1, got T=%d B=%d",
                        b->T, b->B);
    enum tg_status bad = unsupported(m, b, "tg_model_grad_recompute");
    if (bad != TG_OK) return bad;
    int K = rc->K, T = b->T, S = (T + K - 1) / K;
    enum tg_loss_kind kind = m->cfg.loss;
    int mse = kind == TG_LOSS_MSE_LAST;
    if (kind == TG_LOSS_XENT_MEAN) {
        if (!b->labels) return tg_error(TG_ERR_VALUE, "tg_model_forward: missing labels");
        long n = 0;
        for (long i = 0; i < (long)T * b->B; i++) n += b->labels[i] >= 0;
        if (n == 0) scale = 0; /* the plain run: no labelled position, no loss, no gradient */
        else scale *= 1.0 / (double)n;
    }
    enum tg_status st = reserve(rc, m, b->B, S);
    if (st != TG_OK) return st;
    size_t one = (size_t)rc->B * rc->H * tg_dtype_size(rc->dtype);
    /* s_0: a copy, so that init may live on t (reset below) and the caller may overwrite its
     * state (keep the final one) meanwhile. Only heap tensors outlive the resets, so only they
     * can receive ∂loss/∂s_0 at the end. */
    for (int i = 0; i < rc->n; i++) {
        const struct tg_tensor *s0 = init ? init[i] : NULL;
        if (s0 && (s0->rows != rc->B || s0->cols != rc->H || s0->dtype != rc->dtype))
            return tg_error(TG_ERR_SHAPE, "tg_model_grad_recompute: initial state %d is (%dx%d) %s, "
                            "expected (%dx%d) %s", i, s0->rows, s0->cols, tg_dtype_name(s0->dtype),
                            rc->B, rc->H, tg_dtype_name(rc->dtype));
        rc->want[i] = s0 && (s0->flags & TG_HEAP) && s0->grad && tg_requires_grad(s0)
                          ? (struct tg_tensor *)s0 : NULL;
        if (s0) memcpy(saved_at(rc, 0, i), s0->data, one);
        else memset(saved_at(rc, 0, i), 0, one);
    }
    if (kind == TG_LOSS_XENT_MEAN) m->cfg.loss = TG_LOSS_XENT_SUM; /* restored below */

    /* Forward: s_1 … s_{S−1}, nothing recorded. */
    int prev = tg_tape_set_no_grad(t, 1);
    for (int j = 0; j + 1 < S && st == TG_OK; j++) {
        struct tg_seq_batch sb = segment(m, b, j * K, K);
        struct tg_seq_result res;
        tg_tape_reset(t);
        for (int i = 0; i < rc->n; i++) memcpy(rc->leaf[i]->data, saved_at(rc, j, i), one);
        st = tg_model_forward_from(m, t, &sb, rc->leaf, &res);
        for (int i = 0; st == TG_OK && i < rc->n; i++) memcpy(saved_at(rc, j + 1, i), res.final[i]->data, one);
    }
    tg_tape_set_no_grad(t, 0);

    /* Backward: the last segment first, each handing ∂loss/∂(its initial state) to the one
     * before it. */
    for (int j = S - 1; j >= 0 && st == TG_OK; j--) {
        int t0 = j * K, Tk = j == S - 1 ? T - t0 : K;
        struct tg_seq_batch sb = segment(m, b, t0, Tk);
        struct tg_seq_result res;
        tg_tape_reset(t);
        int with_loss = mse ? j == S - 1 : scale != 0;
        st = backward_segment(m, t, rc, &sb, j, j < S - 1, scale, with_loss, loss, &res);
        if (st == TG_OK && on_segment) st = on_segment(ctx, t0, &res);
        for (int i = 0; st == TG_OK && i < rc->n; i++) {
            if (rc->leaf[i]->grad) memcpy(rc->g[i]->data, rc->leaf[i]->grad, one);
            else memset(rc->g[i]->data, 0, one);
        }
    }
    tg_tape_set_no_grad(t, prev);
    m->cfg.loss = kind;
    if (st != TG_OK) return st;

    /* As the plain run would: an initial state that wants a gradient gets ∂loss/∂s_0 added. */
    for (int i = 0; i < rc->n; i++) {
        struct tg_tensor *s0 = rc->want[i];
        if (!s0) continue;
        size_t N = tg_numel(s0);
        if (s0->dtype == TG_F64) {
            double *d = s0->grad;
            const double *s = rc->leaf[i]->grad;
            for (size_t k = 0; k < N; k++) d[k] += s[k];
        } else {
            float *d = s0->grad;
            const float *s = rc->leaf[i]->grad;
            for (size_t k = 0; k < N; k++) d[k] += s[k];
        }
    }
    return TG_OK;
}

/* Forward only, in K-step segments (evaluation of long sequences): each segment recorded from
 * the state the one before it ended in, handed to on_segment in order, then dropped; O(K)
 * memory. *loss as tg_model_forward_from's (a mean over the whole batch's labelled positions). */
enum tg_status tg_model_forward_segments(struct tg_model *m, struct tg_tape *t,
                                         const struct tg_seq_batch *b, struct tg_tensor *const *init,
                                         struct tg_recompute *rc, double *loss,
                                         tg_recompute_segment_fn on_segment, void *ctx)
{
    *loss = 0;
    if (b->T < 1 || b->B < 1)
        return tg_error(TG_ERR_SHAPE, "tg_model_forward_segments: need T >= 1 and B >= 1, got T=%d B=%d",
                        b->T, b->B);
    enum tg_status bad = unsupported(m, b, "tg_model_forward_segments");
    if (bad != TG_OK) return bad;
    int K = rc->K, T = b->T, S = (T + K - 1) / K;
    enum tg_loss_kind kind = m->cfg.loss;
    double scale = 1.0;
    if (kind == TG_LOSS_XENT_MEAN) {
        if (!b->labels) return tg_error(TG_ERR_VALUE, "tg_model_forward: missing labels");
        long n = 0;
        for (long i = 0; i < (long)T * b->B; i++) n += b->labels[i] >= 0;
        scale = n ? 1.0 / (double)n : 0.0;
    }
    enum tg_status st = reserve(rc, m, b->B, 1);
    if (st != TG_OK) return st;
    size_t one = (size_t)rc->B * rc->H * tg_dtype_size(rc->dtype);
    for (int i = 0; i < rc->n; i++) {
        const struct tg_tensor *s0 = init ? init[i] : NULL;
        if (s0 && (s0->rows != rc->B || s0->cols != rc->H || s0->dtype != rc->dtype))
            return tg_error(TG_ERR_SHAPE, "tg_model_forward_segments: initial state %d is (%dx%d) %s, "
                            "expected (%dx%d) %s", i, s0->rows, s0->cols, tg_dtype_name(s0->dtype),
                            rc->B, rc->H, tg_dtype_name(rc->dtype));
        if (s0) memcpy(rc->leaf[i]->data, s0->data, one);
        else memset(rc->leaf[i]->data, 0, one);
    }
    if (kind == TG_LOSS_XENT_MEAN) m->cfg.loss = TG_LOSS_XENT_SUM; /* restored below */
    int prev = tg_tape_set_no_grad(t, 1);
    for (int j = 0; j < S && st == TG_OK; j++) {
        int t0 = j * K;
        struct tg_seq_batch sb = segment(m, b, t0, j == S - 1 ? T - t0 : K);
        struct tg_seq_result res;
        tg_tape_reset(t);
        st = tg_model_forward_from(m, t, &sb, rc->leaf, &res);
        if (st != TG_OK) break;
        if (kind != TG_LOSS_MSE_LAST || j == S - 1) *loss += scale * tg_get(res.loss, 0, 0);
        if (on_segment) st = on_segment(ctx, t0, &res);
        for (int i = 0; st == TG_OK && i < rc->n; i++) memcpy(rc->leaf[i]->data, res.final[i]->data, one);
    }
    tg_tape_set_no_grad(t, prev);
    m->cfg.loss = kind;
    return st;
}
