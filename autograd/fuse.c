/* fuse.c — fusion regions: elementwise ops recorded without being computed, then compiled into
 * one fused node (ops/fused.c runs it).
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

/* ------------------------------------------------------------------ compile */

static int is_instr(const struct tg_tensor *x)
{
    return (x->flags & TG_PENDING) && TG_PRIV(x)->fuse_idx >= 0;
}
static int instr_of(const struct tg_tensor *x) { return TG_PRIV(x)->fuse_idx; }

/* Input register of x (a computed tensor or a pending column slice), added if new. */
static int input_reg(struct tg_fuse_input *in, int *n_in, const struct tg_tensor *x, int rows,
                     int cols)
{
    int pend = (x->flags & TG_PENDING) != 0;
    struct tg_tensor *base = pend ? TG_PRIV(x)->fuse_base : (struct tg_tensor *)x;
    int off = pend ? TG_PRIV(x)->fuse_off : 0;
    int bcast = (x->rows != rows ? TG_BC_ROW : 0) | (x->cols != cols ? TG_BC_COL : 0);
    for (int i = 0; i < *n_in; i++)
        if (in[i].x == base && in[i].off == off && in[i].bcast == bcast) return i;
    TG_ASSERT(*n_in < TG_FUSE_MAX_IN);
    in[*n_in] = (struct tg_fuse_input){base, off, bcast};
    return (*n_in)++;
}

/* May a σ/tanh result overwrite X's own storage? Only at the region's end (nkeep ≥ 0: the
 * whole step is known), and only if X was made in this region by a product (whose backward
 * reads its operands, never its result), is not kept, and no recorded node reads it: then its
 * values are dead once this region has read them. */
static int overwritable(const struct tg_tape *t, const struct tg_tensor *X,
                        struct tg_tensor *const *keep, int nkeep)
{
    const struct tg_node *nd = X->node;
    if (!tg_anomaly_may_overwrite(t)) return 0; /* observe.c */
    if (nkeep < 0 || !nd || nd->out != X || !(nd->op->flags & TG_OPF_OUT_UNREAD) ||
        (X->flags & (TG_VIEW | TG_PARAM | TG_HEAP | TG_INPUT | TG_PENDING | TG_ALIASED)) ||
        nd->index < t->fuse.first_node || nd->index >= t->n_nodes || t->nodes[nd->index] != nd)
        return 0;
    for (int i = 0; i < nkeep; i++)
        if (keep[i] == X) return 0;
    for (size_t i = nd->index + 1; i < t->n_nodes; i++)
        for (int s = 0; s < t->nodes[i]->nsrc; s++)
            if (t->nodes[i]->src[s] == X) return 0;
    return 1;
}

/* Compile the open region into one node that stores outs[0 … no−1] (pending results of this
 * region); instructions that none of them needs are dropped. Clears the region's instructions
 * (pending column slices stay usable). Returns 0 if memory ran out (error set on the tape). */
static int compile_region(struct tg_tape *t, struct tg_tensor *const *outs, int no,
                          struct tg_tensor *const *keep, int nkeep);

/* Compile; on failure (out of memory, error set on the tape) the region's pending tensors are
 * declared dead, so nothing later indexes instructions that are gone. */
static int compile(struct tg_tape *t, struct tg_tensor *const *outs, int no,
                   struct tg_tensor *const *keep, int nkeep)
{
    if (compile_region(t, outs, no, keep, nkeep)) return 1;
    t->fuse.n = t->fuse.n_ext = 0;
    t->fuse.gen++;
    return 0;
}

/* Record a node whatever the no-grad mode is now: the pending ops were recorded with
 * gradients, and their results must keep their history. */
static struct tg_tensor *emit_recorded(struct tg_tape *t, const struct tg_op_info *op,
                                       struct tg_tensor *const *src, int nsrc,
                                       const union tg_node_args *args, struct tg_tensor *out)
{
    int ng = t->no_grad;
    t->no_grad = 0;
    struct tg_tensor *r = tg_op_emit_into(t, op, src, nsrc, args, out);
    t->no_grad = ng;
    return r;
}

/* The tensor whose memory x's data are rows of (x itself unless a row view), and x's first
 * row in it. */
static const struct tg_tensor *row_root(const struct tg_tensor *x, size_t *row)
{
    size_t off = 0;
    while ((x->flags & TG_VIEW) && x->node && x->node->nsrc == 1) {
        const struct tg_tensor *parent = x->node->src[0];
        off += (size_t)((const char *)x->data - (const char *)parent->data);
        x = parent;
    }
    *row = off / ((size_t)x->cols * tg_dtype_size(x->dtype));
    return x;
}

static int compile_region(struct tg_tape *t, struct tg_tensor *const *outs, int no,
                          struct tg_tensor *const *keep, int nkeep)
{
    struct tg_fuse_region *R = &t->fuse;
    int n = R->n, rows = R->rows, cols = R->cols;
    R->n = R->n_ext = 0;
    R->rows = R->cols = 0;
    if (n == 0 || no == 0) return 1;

    unsigned char live[TG_FUSE_MAX_INSTR] = {0};
    for (int j = 0; j < no; j++) live[instr_of(outs[j])] = 1;
    for (int k = n; k-- > 0;)
        if (live[k])
            for (int s = 0; s < R->p[k].nsrc; s++)
                if (is_instr(R->p[k].src[s])) live[instr_of(R->p[k].src[s])] = 1;

    struct tg_fuse_input in[TG_FUSE_MAX_IN];
    int n_in = 0, n_ins = 0;
    int src_reg[TG_FUSE_MAX_INSTR][2], reg_of[TG_FUSE_MAX_INSTR];
    for (int k = 0; k < n; k++) {
        if (!live[k]) continue;
        for (int s = 0; s < R->p[k].nsrc; s++) {
            const struct tg_tensor *x = R->p[k].src[s];
            src_reg[k][s] = is_instr(x) ? -1 - instr_of(x) : input_reg(in, &n_in, x, rows, cols);
        }
        n_ins++;
    }
    /* registers: inputs first, then live instructions in order */
    int r = n_in;
    for (int k = 0; k < n; k++) reg_of[k] = live[k] ? r++ : -1;
    int n_reg = r;

    struct tg_fuse_prog *p = tg_tape_alloc(t, sizeof *p);
    struct tg_fuse_input *pin = tg_tape_alloc(t, (size_t)n_in * sizeof *pin + 1);
    struct tg_fuse_instr *pins = tg_tape_alloc(t, (size_t)n_ins * sizeof *pins);
    struct tg_tensor **pout = tg_tape_alloc(t, (size_t)no * sizeof *pout);
    int *ints = tg_tape_alloc(t, ((size_t)no + n_reg) * sizeof *ints);
    unsigned char *rg = tg_tape_alloc(t, 2 * (size_t)n_reg);
    void **saved = tg_tape_alloc(t, (size_t)n_reg * sizeof *saved);
    int *saved_ld = tg_tape_alloc(t, (size_t)n_reg * sizeof *saved_ld);
    struct tg_tensor **bases = tg_tape_alloc(t, (size_t)n_in * sizeof *bases + 1);
    if (!p || !pin || !pins || !pout || !ints || !rg || !saved || !saved_ld || !bases) return 0;
    memset(p, 0, sizeof *p);
    p->rows = rows;
    p->cols = cols;
    p->n_in = n_in;
    p->n_ins = n_ins;
    p->n_out = no;
    p->n_reg = n_reg;
    p->in = pin;
    p->ins = pins;
    p->out = pout;
    p->out_reg = ints;
    p->reg_out = ints + no;
    p->reg_grad = rg;
    p->reg_val = rg + n_reg;
    p->reg_saved = saved;
    p->reg_saved_ld = saved_ld;
    memset(saved, 0, (size_t)n_reg * sizeof *saved);
    p->tape = t;
    memcpy(pin, in, (size_t)n_in * sizeof *pin);

    for (int i = 0; i < n_reg; i++) p->reg_out[i] = -1;
    for (int i = 0; i < n_in; i++) {
        rg[i] = tg_requires_grad(in[i].x);
        /* a row's or a scalar's gradient sums over rows: one thread (a column's does not) */
        if (rg[i] && (in[i].bcast == TG_BC_ROW || in[i].bcast == TG_BC_SCALAR)) p->serial = 1;
    }
    /* Row views of one tensor at different rows (x[1:] − x[:-1]): row i of one and row i of the
     * other are different rows of the same gradient, which two threads could update at once. */
    const struct tg_tensor *root[TG_FUSE_MAX_IN];
    size_t root_row[TG_FUSE_MAX_IN];
    for (int i = 0; i < n_in; i++) root[i] = rg[i] ? row_root(in[i].x, &root_row[i]) : NULL;
    for (int i = 0; i < n_in && !p->serial; i++)
        for (int j = i + 1; j < n_in && root[i] && !p->serial; j++)
            if (root[j] == root[i] && root_row[j] != root_row[i]) p->serial = 1;
    int j = 0;
    for (int k = 0; k < n; k++) {
        if (!live[k]) continue;
        const struct tg_fuse_pending *q = &R->p[k];
        struct tg_fuse_instr *ins = &pins[j++];
        int reg[2] = {-1, -1};
        for (int s = 0; s < q->nsrc; s++)
            reg[s] = src_reg[k][s] >= 0 ? src_reg[k][s] : reg_of[-1 - src_reg[k][s]];
        ins->op = q->op->id;
        ins->flags = q->op->flags;
        ins->a = reg[0];
        ins->b = reg[1];
        ins->alpha = q->args.raw[0]; /* an elementwise op's constants are its first two words */
        ins->beta = q->args.raw[1];
        rg[reg_of[k]] = rg[reg[0]] || (reg[1] >= 0 && rg[reg[1]]);
    }
    for (int o = 0; o < no; o++) {
        pout[o] = outs[o];
        p->out_reg[o] = reg_of[instr_of(outs[o])];
        p->reg_out[p->out_reg[o]] = o;
        outs[o]->data = tg_tape_alloc(t, tg_nbytes(outs[o]));
        if (!outs[o]->data) return 0;
    }
    /* Values the backward sweep reads, from each op's TG_EW_* facts: a product's other factor,
     * σ's and tanh's own output, relu's input, … Everything not read, directly or to recompute
     * something read, is not recomputed in backward. */
    unsigned char *rv = p->reg_val;
    memset(rv, 0, (size_t)n_reg);
    for (int k = n_ins; k-- > 0;) {
        const struct tg_fuse_instr *ins = &pins[k];
        int d = n_in + k;
        unsigned f = ins->flags;
        if (!rg[d]) continue;
        if (rg[ins->a]) {
            if (f & TG_EW_DA_A) rv[ins->a] = 1;
            if (f & TG_EW_DA_B) rv[ins->b] = 1;
            if (f & TG_EW_DA_Y) rv[d] = 1;
        }
        if (ins->b >= 0 && rg[ins->b]) {
            if (f & TG_EW_DB_A) rv[ins->a] = 1;
            if (f & TG_EW_DB_B) rv[ins->b] = 1;
            if (f & TG_EW_DB_Y) rv[d] = 1;
        }
    }
    /* Unless lean: results of transcendentals the sweep reads (TG_EW_SAVE_Y: σ, tanh, exp)
     * are kept, those being most of a fused step's arithmetic; then, to recompute the rest, the
     * sources of what is read (kept outputs, saved results and inputs are in memory and need
     * nothing). */
    unsigned char keep_val[TG_FUSE_MAX_INSTR] = {0};
    for (int k = 0; k < n_ins && !t->fusion_lean; k++)
        keep_val[k] = rv[n_in + k] && p->reg_out[n_in + k] < 0 && (pins[k].flags & TG_EW_SAVE_Y);
    for (int k = n_ins; k-- > 0;) {
        int d = n_in + k;
        if (!rv[d] || p->reg_out[d] >= 0 || keep_val[k]) continue;
        rv[pins[k].a] = 1;
        if (pins[k].b >= 0) rv[pins[k].b] = 1;
    }
    /* Where a kept result lives: in the storage of an input block whose values are dead by the
     * time the result is written — no instruction after it reads the block, backward does not,
     * no other input overlaps it, and its tensor is overwritable (an LSTM's or GRU's gate
     * pre-activations h·W_hhᵀ) — else in a rows×cols buffer of its own. */
    size_t es = tg_dtype_size(outs[0]->dtype);
    unsigned char hosted[TG_FUSE_MAX_IN] = {0};
    signed char can_host[TG_FUSE_MAX_IN]; /* overwritable(in[r].x): −1 not asked yet */
    memset(can_host, -1, sizeof can_host);
    for (int k = 0; k < n_ins; k++) {
        if (!keep_val[k]) continue;
        int d = n_in + k, host = -1;
        for (int r = 0; r < n_in && host < 0; r++) {
            int ok = !hosted[r] && !in[r].bcast && !rv[r];
            if (ok && can_host[r] < 0) can_host[r] = (signed char)overwritable(t, in[r].x, keep, nkeep);
            ok = ok && can_host[r];
            for (int j = k + 1; j < n_ins && ok; j++) ok = pins[j].a != r && pins[j].b != r;
            for (int q = 0; q < n_in && ok; q++)
                ok = q == r || in[q].x != in[r].x || abs(in[q].off - in[r].off) >= cols;
            if (ok) host = r;
        }
        if (host >= 0) {
            hosted[host] = 1;
            in[host].x->flags |= TG_REUSED;
            saved[d] = (char *)in[host].x->data + (size_t)in[host].off * es;
            saved_ld[d] = in[host].x->cols;
        } else {
            saved[d] = tg_tape_alloc(t, (size_t)rows * cols * es);
            saved_ld[d] = cols;
            if (!saved[d]) return 0;
        }
    }
    int nb = 0;
    for (int i = 0; i < n_in; i++) {
        int seen = 0;
        for (int b = 0; b < nb; b++) seen |= bases[b] == in[i].x;
        if (!seen) bases[nb++] = in[i].x;
    }
    if (!tg_fuse_scratch_reserve(t, 2 * (size_t)n_reg * TG_FUSE_CHUNK * es)) return 0;

    /* the program rides in the node's first pointer; the op that runs it is the one every
     * elementwise op names as its fused form */
    union tg_node_args args = {.ptr = {p, tg_anomaly_keep_region(t, R->p, n)}}; /* observe.c */
    struct tg_tensor *o0 = emit_recorded(t, R->fused_op, bases, nb, &args, outs[0]);
    if (!o0) return 0;
    for (int o = 1; o < no; o++) {
        outs[o]->flags &= ~(unsigned)TG_PENDING;
        if (!(o0->flags & TG_REQUIRES_GRAD)) outs[o]->flags &= ~(unsigned)TG_REQUIRES_GRAD;
        outs[o]->node = o0->node;
    }
    return 1;
}

int tg_fuse_flush(struct tg_tape *t)
{
    struct tg_fuse_region *R = &t->fuse;
    struct tg_tensor *outs[TG_FUSE_MAX_INSTR];
    for (int k = 0; k < R->n; k++) outs[k] = R->p[k].out;
    return compile(t, outs, R->n, NULL, -1);
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
    return emit_recorded(t, px->fuse_view_op, &base, 1, &args, x) != NULL;
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
        if (!is_instr(src[s])) R->n_ext++;
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
    if (ok) compile(t, outs, no, keep, n);
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
