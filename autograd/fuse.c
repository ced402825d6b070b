/* fuse.c — fusion regions: elementwise ops recorded without being computed, then compiled into
 * one fused node (fuse_compile.c compiles it, ops/fused.c runs it).
 *
 * Why: an LSTM step written as primitive ops makes about ten passes over B×H tensors forward
 * and as many backward, each with its own output and a zeroed gradient buffer, and every one
 * of those tensors stays in the arena until the step ends. Fused, the gate math is one pass
 * that reads the gate pre-activations and c in place and writes c', h' and the σ/tanh results
 * backward needs — the latter over the pre-activations they came from, whose values are dead
 * by then (TG_FUSION_LEAN recomputes them instead); backward recomputes the rest in cache.
 * The cell is unchanged: it still calls tg_sigmoid, tg_mul, …; the region only decides when
 * and where they run.
 *
 * Rules (see tapegrad.h): a region holds instructions of one shape (a 1×n row of the same width
 * may be read as a broadcast input); a column slice of a computed tensor is an input read in
 * place; anything else — another shape, a non-elementwise op reading a pending tensor, a full
 * region — computes what is pending first. Pending results not kept by tg_tape_fuse_end die
 * with the region (generation counter), and using one later is an error, not a crash. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int tg_tape_set_fusion(struct tg_tape *t, int mode)
{
    int old = t->fusion_off ? TG_FUSION_OFF : t->fusion_lean ? TG_FUSION_LEAN : TG_FUSION_ON;
    int on = mode != TG_FUSION_OFF;
    if (!on && t->fuse.open) tg_fuse_flush(t); /* what is pending still gets computed */
    t->fusion_off = !on;
    t->fusion_lean = mode == TG_FUSION_LEAN;
    t->fuse.open = t->fuse.open && on;
    if (!t->fuse.open) t->fuse.depth = 0;
    return old;
}

void tg_tape_fuse_begin(struct tg_tape *t)
{
    if (t->fusion_off) return;
    if (t->fuse.open) { /* nested: one region, compiled by the outermost end */
        t->fuse.depth++;
        return;
    }
    t->fuse.open = 1;
    t->fuse.depth = 1;
    t->fuse.first_node = t->n_nodes;
    t->fuse.n = t->fuse.n_ext = 0;
    t->fuse.rows = t->fuse.cols = 0;
}

void tg_fuse_reset(struct tg_tape *t)
{
    t->fuse.open = 0;
    t->fuse.depth = 0;
    t->fuse.n = t->fuse.n_ext = 0;
    t->fuse.rows = t->fuse.cols = 0;
    t->fuse.gen++;
}

int tg_fuse_accepts(const struct tg_tape *t, const struct tg_op_info *op,
                    const union tg_node_args *args)
{
    if (!t->fuse.open || t->no_grad) return 0;
    if (op->flags & TG_OPF_EW) return op->fused != NULL;
    return (op->flags & TG_OPF_COL_VIEW) && args && op->col_view(args);
}

int tg_fuse_check_alive(struct tg_tape *t, const char *opname, int i, const struct tg_tensor *x)
{
    if ((x->flags & TG_REUSED) && x->grad == x->data) { /* backward.c: a stage took it */
        tg_op_fail(t, TG_ERR_STATE, "%s: input %d (%dx%d) has no values after tg_backward, which "
                   "reused its storage for its gradient; record it again after tg_tape_reset",
                   opname, i, x->rows, x->cols);
        return 0;
    }
    if (x->flags & TG_REUSED) {
        tg_op_fail(t, TG_ERR_STATE, "%s: input %d (%dx%d) was computed inside a fused region, "
                   "which reused its storage; pass it to tg_tape_fuse_end to keep it", opname, i,
                   x->rows, x->cols);
        return 0;
    }
    if (!(x->flags & TG_PENDING)) return 1;
    /* a pending column slice outlives a switch of fusion to off (it can still be copied out);
     * an instruction result never does (turning fusion off computes them all) */
    const struct tg_tensor_priv *px = TG_PRIV(x);
    if (px->fuse_tape == t && px->fuse_gen == t->fuse.gen && (t->fuse.open || px->fuse_idx < 0))
        return 1;
    tg_op_fail(t, TG_ERR_STATE, "%s: input %d (%dx%d) is an intermediate of a fused region that "
               "has ended; only the tensors passed to tg_tape_fuse_end are kept", opname, i,
               x->rows, x->cols);
    return 0;
}

static struct tg_tensor *pending_tensor(struct tg_tape *t, int rows, int cols, enum tg_dtype dt,
                                        int req)
{
    struct tg_tensor *x = tg_tensor_header(t, rows, cols, dt);
    if (!x) return NULL;
    x->flags = TG_PENDING | (req ? TG_REQUIRES_GRAD : 0);
    TG_PRIV(x)->fuse_gen = t->fuse.gen;
    TG_PRIV(x)->fuse_tape = t;
    return x;
}

/* ------------------------------------------------------------- compute it */

/* Record a node whatever the no-grad mode is now: the pending ops were recorded with
 * gradients, and their results must keep their history. */
struct tg_tensor *tg_fuse_emit_recorded(struct tg_tape *t, const struct tg_op_info *op,
                                        struct tg_tensor *const *src, int nsrc,
                                        const union tg_node_args *args, struct tg_tensor *out)
{
    int ng = t->no_grad;
    t->no_grad = 0;
    struct tg_tensor *r = tg_op_emit_into(t, op, src, nsrc, args, out);
    t->no_grad = ng;
    return r;
}

int tg_fuse_flush(struct tg_tape *t)
{
    struct tg_fuse_region *R = &t->fuse;
    struct tg_tensor *outs[TG_FUSE_MAX_INSTR];
    for (int k = 0; k < R->n; k++) outs[k] = R->p[k].out;
    return tg_fuse_compile(t, outs, R->n, NULL, -1);
}

int tg_fuse_realize(struct tg_tape *t, struct tg_tensor *x)
{
    if (!(x->flags & TG_PENDING)) return 1;
    struct tg_tensor_priv *px = TG_PRIV(x);
    if (px->fuse_idx >= 0) return tg_fuse_flush(t);
    /* a pending column slice: copy it out as an ordinary node of the op that made it, whose
     * args are a struct tg_view_args (COL_VIEW ops) */
    union tg_node_args args;
    memset(&args, 0, sizeof args);
    struct tg_view_args va = {1, px->fuse_off, px->fuse_off + x->cols};
    memcpy(&args, &va, sizeof va);
    struct tg_tensor *base = px->fuse_base;
    return tg_fuse_emit_recorded(t, px->fuse_view_op, &base, 1, &args, x) != NULL;
}

/* ---------------------------------------------------------------- recording */

struct tg_tensor *tg_fuse_pend(struct tg_tape *t, const struct tg_op_info *op,
                               struct tg_tensor *const *src, int nsrc, int rows, int cols,
                               const union tg_node_args *args)
{
    struct tg_fuse_region *R = &t->fuse;
    int req = 0;
    for (int s = 0; s < nsrc; s++) req |= tg_requires_grad(src[s]);
    if (!(op->flags & TG_OPF_EW)) { /* a column view: src[0] is computed, read it in place */
        struct tg_view_args va;
        memcpy(&va, args, sizeof va);
        struct tg_tensor *x = pending_tensor(t, rows, cols, src[0]->dtype, req);
        if (!x) return NULL;
        struct tg_tensor_priv *px = TG_PRIV(x);
        px->fuse_idx = -1;
        px->fuse_base = src[0];
        px->fuse_off = va.start;
        px->fuse_view_op = op;
        return x;
    }
    /* Another shape or dtype, or no room left: compute what is pending and begin afresh. A pending
     * input of the old shape is computed by that and becomes an ordinary input. */
    if (R->n > 0 && (rows != R->rows || cols != R->cols || src[0]->dtype != R->dtype ||
                     R->n == TG_FUSE_MAX_INSTR || R->n_ext + nsrc > TG_FUSE_MAX_IN)) {
        if (!tg_fuse_flush(t)) return NULL;
    }
    /* Sources that cannot join this region's shape (a pending row of another width cannot
     * exist after the flush above; a pending slice must be this width or a broadcast row). */
    for (int s = 0; s < nsrc; s++) {
        struct tg_tensor *x = src[s];
        if ((x->flags & TG_PENDING) && TG_PRIV(x)->fuse_idx < 0 &&
            ((x->rows != rows && x->rows != 1) || (x->cols != cols && x->cols != 1)) &&
            !tg_fuse_realize(t, x))
            return NULL;
    }
    R->rows = rows;
    R->cols = cols;
    R->dtype = src[0]->dtype;
    R->fused_op = op->fused;
    struct tg_tensor *out = pending_tensor(t, rows, cols, src[0]->dtype, req);
    if (!out) return NULL;
    TG_PRIV(out)->fuse_idx = R->n;
    struct tg_fuse_pending *q = &R->p[R->n++];
    q->op = op;
    q->nsrc = nsrc;
    for (int s = 0; s < nsrc; s++) {
        q->src[s] = src[s];
        if (!tg_fuse_is_instr(src[s])) R->n_ext++;
    }
    q->args = args ? *args : (union tg_node_args){.raw = {0}};
    q->out = out;
    q->origin = t->origin;
    return out;
}

enum tg_status tg_tape_fuse_end(struct tg_tape *t, struct tg_tensor *const *keep, int n)
{
    if (!t->fuse.open) return t->status;
    if (--t->fuse.depth > 0) return t->status; /* an inner end: the region goes on */
    struct tg_tensor *outs[TG_FUSE_MAX_INSTR];
    int no = 0, ok = t->status == TG_OK;
    for (int i = 0; ok && i < n; i++) {
        struct tg_tensor *x = keep[i];
        if (!x || !(x->flags & TG_PENDING)) continue;
        if (!tg_fuse_check_alive(t, "tg_tape_fuse_end", i, x)) ok = 0;
        else if (TG_PRIV(x)->fuse_idx < 0) ok = tg_fuse_realize(t, x);
        else {
            int dup = 0;
            for (int j = 0; j < no; j++) dup |= outs[j] == x;
            if (!dup) {
                TG_ASSERT(no < TG_FUSE_MAX_INSTR); /* live results are instructions of R */
                outs[no++] = x;
            }
        }
    }
    if (ok) tg_fuse_compile(t, outs, no, keep, n);
    tg_fuse_reset(t); /* closes the region; what was not kept is dead */
    return t->status;
}

/* -------------------------------------------------------------------- scratch */

int tg_fuse_scratch_reserve(struct tg_tape *t, size_t bytes)
{
    int nt = TG_MAX_THREADS();
    if (bytes <= t->fuse_scratch_per_thread && nt <= t->fuse_scratch_threads) return 1;
    size_t per = bytes > t->fuse_scratch_per_thread ? bytes : t->fuse_scratch_per_thread;
    int n = nt > t->fuse_scratch_threads ? nt : t->fuse_scratch_threads;
    void *mem = NULL;
    if (posix_memalign(&mem, TG_ALIGN, per * (size_t)n) != 0) {
        tg_op_fail(t, TG_ERR_NOMEM, "fused op: out of memory for %zu bytes of scratch",
                   per * (size_t)n);
        return 0;
    }
    free(t->fuse_scratch);
    t->fuse_scratch = mem;
    t->fuse_scratch_per_thread = per;
    t->fuse_scratch_threads = n;
    t->heap_allocs++;
    return 1;
}
