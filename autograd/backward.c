/* backward.c — reverse mode in one loop.
 *
 * The tape holds nodes in the order they ran, which is a topological order of the graph, so
 * walking it backwards visits every node after all nodes that consumed its output. Each op's
 * backward adds (+=) its local derivative times the incoming gradient into its inputs'
 * gradients; a tensor used k times therefore receives the sum of k contributions, which is all
 * BPTT needs for a weight shared by every time step. No recursion: a tape of millions of nodes
 * uses no stack beyond this frame. */
#include <math.h>
#include <string.h>

#include "internal.h"

/* Give every parameter that is the right operand (x·Wᵀ) of at least two recorded matmuls a
 * stage for its deferred gradient (struct tg_grad_stage). Returns the number of staged
 * parameters, listed in *out, or −1 if memory ran out. */
static void unstage(struct tg_tensor **list, int n)
{
    for (int j = 0; j < n; j++) TG_PRIV(list[j])->stage = NULL;
}

/* The weight a node may stage, by its op's hook (a product x·Wᵀ with W a parameter, the only
 * form whose gradient dW += dCᵀ·A stacks over uses); *addend: the index of its addend C. */
static struct tg_tensor *staged_weight(const struct tg_node *nd, int *addend)
{
    *addend = -1;
    return nd->op->stage_weight ? nd->op->stage_weight(nd, addend) : NULL;
}

static struct tg_grad_stage *stage_of(const struct tg_tensor *w) { return TG_PRIV(w)->stage; }

void *tg_stage_slot(const struct tg_tensor *x)
{
    const struct tg_node *nd = x->node;
    int ad;
    if (!nd || nd->out != x) return NULL;
    struct tg_tensor *w = staged_weight(nd, &ad);
    if (!w || !stage_of(w)) return NULL;
    return (char *)stage_of(w)->dc + (size_t)nd->stage_row * x->cols * tg_dtype_size(x->dtype);
}

int tg_stage_rows(const struct tg_node *nd, void **dc, void **a)
{
    int ad;
    struct tg_tensor *w = staged_weight(nd, &ad);
    struct tg_grad_stage *st = w ? stage_of(w) : NULL;
    if (!st) return 0;
    const struct tg_tensor *A = nd->src[nd->nsrc - 2], *C = nd->out;
    size_t es = tg_dtype_size(C->dtype);
    TG_ASSERT(nd->stage_row + C->rows <= st->rows_cap);
    *dc = (char *)st->dc + (size_t)nd->stage_row * C->cols * es;
    *a = (char *)st->a + (size_t)nd->stage_row * A->cols * es;
    return 1;
}

/* The addend P of a staged weight's uses, if its gradient can be the stage's dC itself: every
 * use of w is D_k = C_k + A_k·wᵀ (addmm) whose addend C_k is a full-width row view of one
 * tensor P at exactly the rows of D_k's stage slot, P's rows are all those slots, and no other
 * node before the loss reads P or a C_k. Then dC_k = dD_k row for row, so P's gradient buffer
 * is the stage (already zeroed) and addmm's backward skips adding dD into dC. This is the
 * input projection of a recurrent layer, xp_t + h_{t−1}·W_hhᵀ: its gradient costs no memory
 * and no pass of its own. Returns P, or NULL when the pattern does not hold. */
static struct tg_tensor *addend_of(struct tg_tape *t, size_t top, struct tg_tensor *w)
{
    struct tg_grad_stage *st = stage_of(w);
    struct tg_tensor *P = NULL;
    size_t es = tg_dtype_size(w->dtype);
    for (size_t i = 0; i <= top; i++) {
        struct tg_node *nd = t->nodes[i];
        int ad;
        if (staged_weight(nd, &ad) != w) continue;
        if (ad < 0) return NULL; /* a use with no addend */
        struct tg_tensor *C = nd->src[ad];
        if (!(C->flags & TG_VIEW) || !C->node || C->node->nsrc != 1 || C->grad ||
            C->rows != nd->out->rows ||
            C->cols != nd->out->cols || (P && C->node->src[0] != P))
            return NULL;
        P = C->node->src[0];
        size_t row = (size_t)((char *)C->data - (char *)P->data) / ((size_t)P->cols * es);
        if (row != (size_t)nd->stage_row) return NULL;
    }
    /* A fused node's backward adds the in-region uses of its kept outputs into their
     * gradients itself: P's gradient would then not be dD alone. */
    if (!P || P->grad || !tg_requires_grad(P) || P->cols != w->rows || P->rows != st->rows_cap ||
        (P->flags & (TG_VIEW | TG_PARAM | TG_HEAP | TG_PENDING)) ||
        (P->node && (P->node->op->flags & TG_OPF_COMPOUND)))
        return NULL;
    return P;
}

/* The addend P whose gradient may be w's stage dC (addend_of, and no other reader), or NULL. */
static struct tg_tensor *alias_addend(struct tg_tape *t, size_t top, struct tg_tensor *w)
{
    struct tg_tensor *P = addend_of(t, top, w);
    if (!P) return NULL;
    /* mark the row views, then look for any reader other than the slices and the uses */
    int ad;
    for (size_t i = 0; i <= top; i++)
        if (staged_weight(t->nodes[i], &ad) == w) t->nodes[i]->src[ad]->flags |= TG_MARK;
    int ok = 1;
    for (size_t i = 0; i <= top && ok; i++) {
        struct tg_node *nd = t->nodes[i];
        int use = staged_weight(nd, &ad) == w;
        for (int s = 0; s < nd->nsrc && ok; s++) {
            const struct tg_tensor *x = nd->src[s];
            if (x == P) ok = (nd->out->flags & (TG_VIEW | TG_MARK)) == (TG_VIEW | TG_MARK);
            else if (x->flags & TG_MARK) ok = use && s == ad;
        }
    }
    for (size_t i = 0; i <= top; i++)
        if (staged_weight(t->nodes[i], &ad) == w) t->nodes[i]->src[ad]->flags &= ~(unsigned)TG_MARK;
    return ok ? P : NULL;
}

/* May the stage's dC live in P's own storage? Backward never reads P's values: its readers
 * are the row views the staged products take as addends (whose backward adds dD into dC and
 * reads no value of C), and its product's backward reads its operands, never its result
 * (TG_OPF_OUT_UNREAD). So once the forward has run, P's values are dead — a recurrent
 * layer's input projection x W_ihᵀ + b, T·B × G·H, the size of the stage exactly — and the
 * stage costs no memory. P is then marked TG_REUSED: its data hold its gradient. */
static int addend_data_dead(const struct tg_tensor *P)
{
    return P->node && P->node->out == P && (P->node->op->flags & TG_OPF_OUT_UNREAD) &&
           !(P->flags & (TG_VIEW | TG_PARAM | TG_HEAP | TG_INPUT | TG_PENDING | TG_ALIASED |
                         TG_REUSED));
}

static int stage_weights(struct tg_tape *t, size_t top, struct tg_tensor ***out)
{
    int n = 0;
    struct tg_tensor **list = NULL;
    size_t cap = 0;
    *out = NULL;
    for (size_t i = 0; i <= top; i++) {
        struct tg_node *nd = t->nodes[i];
        int ad;
        struct tg_tensor *w = staged_weight(nd, &ad);
        if (!w) continue;
        if (!stage_of(w)) {
            if ((size_t)n == cap) {
                size_t ncap = cap ? 2 * cap : 16;
                struct tg_tensor **nl = tg_tape_alloc(t, ncap * sizeof *nl);
                if (!nl) goto fail;
                if (n) memcpy(nl, list, (size_t)n * sizeof *nl);
                list = nl;
                cap = ncap;
            }
            struct tg_grad_stage *st = tg_tape_alloc(t, sizeof *st);
            if (!st) goto fail;
            memset(st, 0, sizeof *st);
            TG_PRIV(w)->stage = st;
            list[n++] = w;
        }
        stage_of(w)->rows_cap += nd->out->rows;
        stage_of(w)->rows++; /* counts uses until the buffers exist */
    }
    int kept = 0;
    for (int j = 0; j < n; j++) {
        struct tg_tensor *w = list[j];
        if (stage_of(w)->rows < 2) { /* one use: nothing to batch */
            TG_PRIV(w)->stage = NULL;
            continue;
        }
        stage_of(w)->rows = 0;
        list[kept++] = w;
    }
    /* Each use's rows, in tape order. The use's output gradient is then allocated in its rows
     * (tg_stage_slot), so dC is never copied. */
    for (size_t i = 0; i <= top; i++) {
        struct tg_node *nd = t->nodes[i];
        int ad;
        struct tg_tensor *w = staged_weight(nd, &ad);
        if (w && stage_of(w)) {
            nd->stage_row = stage_of(w)->rows;
            stage_of(w)->rows += nd->out->rows;
        }
    }
    for (int j = 0; j < kept; j++) {
        struct tg_tensor *w = list[j];
        struct tg_grad_stage *st = stage_of(w);
        size_t es = tg_dtype_size(w->dtype);
        struct tg_tensor *P = alias_addend(t, top, w);
        if (P && addend_data_dead(P)) {
            st->dc = P->data;
            P->flags |= TG_REUSED;
        } else {
            st->dc = tg_tape_alloc(t, (size_t)st->rows_cap * w->rows * es);
        }
        st->a = tg_tape_alloc(t, (size_t)st->rows_cap * w->cols * es);
        if (!st->dc || !st->a) {
            /* every weight in the list still carries a stage */
            unstage(list, n);
            return -1;
        }
        /* zeroed: a use that no gradient reaches leaves zero rows, which add nothing */
        memset(st->dc, 0, (size_t)st->rows_cap * w->rows * es);
        memset(st->a, 0, (size_t)st->rows_cap * w->cols * es);
        if (P) P->grad = st->dc;
    }
    *out = list;
    return kept;
fail:
    /* no stage may outlive this call: it points into the arena, which the next step reuses */
    unstage(list, n);
    return -1;
}

enum tg_status tg_backward(struct tg_tape *t, struct tg_tensor *loss)
{
    if (!loss) {
        if (t->status != TG_OK) return tg_error(t->status, "%s", t->errmsg);
        return tg_error(TG_ERR_VALUE, "tg_backward: loss is NULL");
    }
    if (t->status != TG_OK) return tg_error(t->status, "%s", t->errmsg);
    if (t->walked)
        return tg_error(TG_ERR_STATE, "tg_backward: this tape was already walked backwards; "
                                      "call tg_tape_reset and record the step again");
    /* A region left open (however deeply nested) ends here, keeping the loss if it is pending. */
    if (t->fuse.open) {
        t->fuse.depth = 1;
        tg_tape_fuse_end(t, &loss, 1);
    }
    if (t->status != TG_OK) return tg_error(t->status, "%s", t->errmsg);
    if (loss->flags & TG_PENDING)
        return tg_error(TG_ERR_STATE, "tg_backward: the loss is an intermediate of a fused region "
                                      "that has ended; keep it in tg_tape_fuse_end");
    if (loss->rows != 1 || loss->cols != 1)
        return tg_error(TG_ERR_SHAPE, "tg_backward: loss must be a scalar (1x1), got (%dx%d)",
                        loss->rows, loss->cols);
    if (!tg_requires_grad(loss) || !loss->node)
        return tg_error(TG_ERR_STATE, "tg_backward: the loss depends on no tensor that requires a "
                                      "gradient (or was computed in no-grad mode)");
    /* A NaN or ±inf loss would silently fill every gradient with NaN: refuse it, always. */
    double lv = loss->dtype == TG_F64 ? *(const double *)loss->data : *(const float *)loss->data;
    if (!isfinite(lv) && !t->nonfinite_loss_ok)
        return tg_error(TG_ERR_VALUE, "tg_backward: the loss is %s; nothing was propagated "
                                      "(anomaly mode, e.g. tapegrad train --detect-anomaly, names "
                                      "the op and time step where it began)",
                        isnan(lv) ? "NaN" : lv > 0 ? "+inf" : "-inf");
    size_t top = loss->node->index;
    if (top >= t->n_nodes || t->nodes[top] != loss->node)
        return tg_error(TG_ERR_STATE, "tg_backward: the loss was not recorded on this tape");
    t->walked = 1;

    void *g = tg_grad_buffer(t, loss);
    if (!g) return tg_error(TG_ERR_NOMEM, "tg_backward: out of memory");
    if (loss->dtype == TG_F64) *(double *)g += 1.0;
    else *(float *)g += 1.0f;

    struct tg_tensor **staged = NULL;
    int n_staged = stage_weights(t, top, &staged);
    if (n_staged < 0) return tg_error(TG_ERR_NOMEM, "tg_backward: out of memory for gradients");

    for (size_t i = top + 1; i-- > 0;) {
        struct tg_node *n = t->nodes[i];
        /* Skip what no gradient reached (nothing downstream of it leads to the loss) and what
         * cannot lead to a tensor that wants a gradient. */
        if (!tg_requires_grad(n->out)) continue;
        if (!tg_node_reached(n)) continue;
        if (n->op->before_backward) n->op->before_backward(n);
        for (int s = 0; s < n->nsrc; s++) {
            struct tg_tensor *x = n->src[s];
            if (tg_requires_grad(x) && !tg_grad_buffer(t, x)) {
                unstage(staged, n_staged);
                return tg_error(TG_ERR_NOMEM, "tg_backward: out of memory for gradients");
            }
        }
        if (t->bw_hook) t->bw_hook(t->bw_ctx, n, 0);
        n->op->backward(n);
        if (t->bw_hook) t->bw_hook(t->bw_ctx, n, 1);
        if (t->anomaly && !tg_anomaly_backward(t, n)) { /* observe.c */
            unstage(staged, n_staged);
            return tg_error(TG_ERR_VALUE, "%s", t->errmsg);
        }
    }

    /* The deferred weight gradients: one GEMM per staged weight over all its uses' rows. */
    for (int j = 0; j < n_staged; j++) {
        struct tg_tensor *w = staged[j];
        struct tg_grad_stage *st = stage_of(w);
        if (st->rows > 0 && w->grad)
            tg_gemm(w->dtype, 1, 0, w->rows, w->cols, st->rows, st->dc, w->rows, st->a, w->cols,
                    1.0, w->grad, w->cols);
    }
    int finite = !t->anomaly || tg_anomaly_weights(t, staged, n_staged);
    unstage(staged, n_staged);
    return finite ? TG_OK : tg_error(TG_ERR_VALUE, "%s", t->errmsg);
}
