/* fuse_compile.c — a fusion region (recorded by fuse.c) compiled into one TG_OP_FUSED node
 * (ops/fused.c runs it), and the cache of compiled programs.
 *
 * Why a cache: an unrolled RNN records the same region at every time step — the same ops on
 * the same shapes, reading the same places — and at small sizes (B = 1, H = 8) analysing it
 * again cost more than running it. Compiling is therefore two parts:
 *   - analysis: which instructions are live, the registers, which values backward reads or
 *     recomputes, which σ/tanh results are saved and where. Its result, the template, depends
 *     only on the region's signature (below) and on the answers to "may this input block be
 *     overwritten?" (overwritable) that it asked; it lives in the tape's arena until
 *     tg_tape_reset;
 *   - binding: the template bound to this step's tensors (inputs, kept outputs, saved buffers),
 *     a few stores in one arena piece.
 * The signature is everything the analysis reads: shape, dtype, fusion mode, the fused op; per
 * instruction its op, its sources (an instruction's index or an input register) and its two
 * constants; the kept results; per input register its column offset, broadcast kind, tensor
 * width, whether it wants a gradient and the first register on the same tensor; and whether the
 * gradients' rows must stay on one thread. A region whose signature equals a cached one and whose
 * input blocks answer as the cached analysis found them gets that template (a hit); another
 * shape, cell or mode is a miss and is analysed afresh. Hit or miss, the node is made by the same
 * binding code from a template, so both give the same program, bit for bit. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* What the analysis found, shared by every node compiled from it. */
struct tg_fuse_tmpl {
    struct tg_fuse_prog proto; /* ins, out_reg, reg_out, reg_grad, reg_val, reg_saved_ld shared;
                                  in, out, reg_saved and tape are per node */
    signed char *host;         /* per register: where its saved result goes: −1 not saved,
                                  −2 a buffer of its own, r ≥ 0 the block of input r */
    signed char *out_host;     /* per kept output: −1 a buffer of its own, r ≥ 0 the block of input r */
    signed char asked[TG_FUSE_MAX_IN]; /* overwritable(input r) as the analysis found it, −1 unasked */
    int nb;                    /* distinct input tensors: the node's sources, in order */
    unsigned char base_in[TG_FUSE_MAX_IN]; /* the first input register of each */
};

/* Key words: a header, four per instruction, one per kept result, two per input. */
enum { KEY_HDR = 10, KEY_MAX = KEY_HDR + 4 * TG_FUSE_MAX_INSTR + TG_FUSE_MAX_INSTR + 2 * TG_FUSE_MAX_IN };

/* The region as the analysis sees it, built afresh for every region (cheap: no allocation). */
struct sig {
    int n, no, n_in, n_ins, rows, cols, serial;
    unsigned char live[TG_FUSE_MAX_INSTR];
    int src_reg[TG_FUSE_MAX_INSTR][2]; /* ≥ 0 an input register, −1 − k instruction k */
    struct tg_fuse_input in[TG_FUSE_MAX_IN];
    unsigned char rg[TG_FUSE_MAX_IN];
    signed char same[TG_FUSE_MAX_IN];  /* first input register on the same tensor */
    size_t len;
    uint64_t key[KEY_MAX];
};

/* Input register of x (a computed tensor or a pending column slice), added if new. */
static int input_reg(struct sig *S, const struct tg_tensor *x)
{
    int pend = (x->flags & TG_PENDING) != 0;
    struct tg_tensor *base = pend ? TG_PRIV(x)->fuse_base : (struct tg_tensor *)x;
    int off = pend ? TG_PRIV(x)->fuse_off : 0;
    int bcast = (x->rows != S->rows ? TG_BC_ROW : 0) | (x->cols != S->cols ? TG_BC_COL : 0);
    for (int i = 0; i < S->n_in; i++)
        if (S->in[i].x == base && S->in[i].off == off && S->in[i].bcast == bcast) return i;
    TG_ASSERT(S->n_in < TG_FUSE_MAX_IN);
    S->in[S->n_in] = (struct tg_fuse_input){base, off, bcast};
    return S->n_in++;
}

/* May a σ/tanh result overwrite X's own storage? Only at the region's end (nkeep ≥ 0: the
 * whole step is known), and only if X was made in this region by a product (whose backward
 * reads its operands, never its result), is not kept, and no recorded node reads it: then its
 * values are dead once this region has read them. */
static int overwritable(const struct tg_tape *t, const struct tg_tensor *X,
                        struct tg_tensor *const *keep, int nkeep)
{
    const struct tg_node *nd = X->node;
    if (!tg_anomaly_may_overwrite(t)) return 0; /* observe.c: the replay reads the inputs */
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

static uint64_t dbits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

/* The region's signature (struct sig): liveness, input registers, and the key. */
static void make_sig(const struct tg_tape *t, const struct tg_fuse_region *R, int rows, int cols,
                     struct tg_tensor *const *outs, int no, struct sig *S)
{
    S->n = R->n;
    S->no = no;
    S->rows = rows;
    S->cols = cols;
    S->n_in = S->n_ins = 0;
    memset(S->live, 0, (size_t)S->n);
    for (int j = 0; j < no; j++) S->live[TG_PRIV(outs[j])->fuse_idx] = 1;
    for (int k = S->n; k-- > 0;)
        if (S->live[k])
            for (int s = 0; s < R->p[k].nsrc; s++)
                if (tg_fuse_is_instr(R->p[k].src[s])) S->live[TG_PRIV(R->p[k].src[s])->fuse_idx] = 1;
    for (int k = 0; k < S->n; k++) {
        S->src_reg[k][0] = S->src_reg[k][1] = 0;
        if (!S->live[k]) continue;
        for (int s = 0; s < R->p[k].nsrc; s++) {
            const struct tg_tensor *x = R->p[k].src[s];
            S->src_reg[k][s] = tg_fuse_is_instr(x) ? -1 - TG_PRIV(x)->fuse_idx : input_reg(S, x);
        }
        S->n_ins++;
    }
    /* Gradients wanted, and whether rows must stay on one thread: a row's or a scalar's
     * gradient sums over rows (a column's does not); row views of one tensor at different rows
     * (x[1:] − x[:-1]) have row i of one and row i of the other in different rows of the same
     * gradient, which two threads could update at once. */
    const struct tg_tensor *root[TG_FUSE_MAX_IN];
    size_t root_row[TG_FUSE_MAX_IN];
    S->serial = 0;
    for (int i = 0; i < S->n_in; i++) {
        S->rg[i] = (unsigned char)tg_requires_grad(S->in[i].x);
        if (S->rg[i] && (S->in[i].bcast == TG_BC_ROW || S->in[i].bcast == TG_BC_SCALAR)) S->serial = 1;
        root[i] = S->rg[i] ? row_root(S->in[i].x, &root_row[i]) : NULL;
        S->same[i] = (signed char)i;
        for (int j = 0; j < i; j++)
            if (S->in[j].x == S->in[i].x) {
                S->same[i] = (signed char)j;
                break;
            }
    }
    for (int i = 0; i < S->n_in && !S->serial; i++)
        for (int j = i + 1; j < S->n_in && root[i] && !S->serial; j++)
            if (root[j] == root[i] && root_row[j] != root_row[i]) S->serial = 1;

    uint64_t *k = S->key;
    size_t w = 0;
    k[w++] = (uint64_t)(uint32_t)rows << 32 | (uint32_t)cols;
    k[w++] = (uint64_t)R->dtype << 32 | (uint64_t)(t->fusion_lean != 0) << 16 | (uint64_t)S->serial;
    k[w++] = (uint64_t)(uintptr_t)R->fused_op;
    k[w++] = (uint64_t)(uint32_t)S->n << 32 | (uint32_t)no;
    k[w++] = (uint64_t)(uint32_t)S->n_in << 32 | (uint32_t)S->n_ins;
    while (w < KEY_HDR) k[w++] = 0;
    for (int i = 0; i < S->n; i++) {
        const struct tg_fuse_pending *q = &R->p[i];
        k[w++] = (uint64_t)(uint32_t)q->op->id << 32 | (uint64_t)q->nsrc << 8 | S->live[i];
        k[w++] = (uint64_t)(uint32_t)S->src_reg[i][0] << 32 | (uint32_t)S->src_reg[i][1];
        k[w++] = dbits(q->args.raw[0]); /* an elementwise op's constants: its first two words */
        k[w++] = dbits(q->args.raw[1]);
    }
    for (int j = 0; j < no; j++) k[w++] = (uint64_t)TG_PRIV(outs[j])->fuse_idx;
    for (int i = 0; i < S->n_in; i++) {
        const struct tg_fuse_input *in = &S->in[i];
        k[w++] = (uint64_t)(uint32_t)in->off << 32 | (uint64_t)(uint32_t)in->bcast << 8 | S->rg[i];
        k[w++] = (uint64_t)(uint32_t)in->x->cols << 32 | (uint8_t)S->same[i];
    }
    S->len = w;
}

/* A cached template whose signature equals S's and whose overwritable answers hold now. */
static const struct tg_fuse_tmpl *cache_find(struct tg_tape *t, const struct sig *S,
                                             struct tg_tensor *const *keep, int nkeep)
{
    struct tg_fuse_cache *C = &t->fuse_cache;
    for (int i = 0; i < C->n; i++) {
        int e = (C->last + i) % C->n; /* the last hit first: an unroll repeats one region */
        const struct tg_fuse_cache_entry *E = &C->e[e];
        if (E->len != S->len || memcmp(E->key, S->key, S->len * sizeof *S->key) != 0) continue;
        int ok = 1;
        for (int r = 0; r < S->n_in && ok; r++)
            ok = E->tm->asked[r] < 0 || E->tm->asked[r] == overwritable(t, S->in[r].x, keep, nkeep);
        if (ok) {
            C->last = e;
            return E->tm;
        }
    }
    return NULL;
}

/* Keep tm under S's key (the oldest entry makes room). 0 if the arena is out of memory. */
static int cache_add(struct tg_tape *t, const struct sig *S, const struct tg_fuse_tmpl *tm)
{
    struct tg_fuse_cache *C = &t->fuse_cache;
    uint64_t *key = tg_tape_alloc(t, S->len * sizeof *key);
    if (!key) return 0;
    memcpy(key, S->key, S->len * sizeof *key);
    int e = C->n < TG_FUSE_CACHE ? C->n++ : C->next++ % TG_FUSE_CACHE;
    C->e[e] = (struct tg_fuse_cache_entry){S->len, key, tm};
    C->last = e;
    return 1;
}

/* An input block that may hold instruction k's result (see analyse): not holding another, not
 * broadcast, not read by backward (rv) nor by an instruction after k, no other input
 * overlapping it, and overwritable; for a kept output also laid out as the output's rows
 * (one row, or the whole width of its tensor). −1 if none. */
static int find_host(const struct tg_tape *t, struct tg_fuse_tmpl *tm, const struct sig *S,
                     const struct tg_fuse_instr *pins, const unsigned char *rv,
                     const unsigned char *hosted, int k, int as_output,
                     struct tg_tensor *const *keep, int nkeep)
{
    const struct tg_fuse_input *in = S->in;
    for (int r = 0; r < S->n_in; r++) {
        int ok = !hosted[r] && !in[r].bcast && !rv[r];
        if (ok && as_output) ok = S->rows == 1 || (in[r].off == 0 && in[r].x->cols == S->cols);
        if (ok && tm->asked[r] < 0) tm->asked[r] = (signed char)overwritable(t, in[r].x, keep, nkeep);
        ok = ok && tm->asked[r];
        for (int j = k + 1; j < S->n_ins && ok; j++) ok = pins[j].a != r && pins[j].b != r;
        for (int q = 0; q < S->n_in && ok; q++)
            ok = q == r || S->same[q] != S->same[r] || abs(in[q].off - in[r].off) >= S->cols;
        if (ok) return r;
    }
    return -1;
}

/* The analysis of region R with signature S; NULL if the arena ran out (error set). */
static struct tg_fuse_tmpl *analyse(struct tg_tape *t, const struct tg_fuse_region *R,
                                    const struct sig *S, struct tg_tensor *const *outs,
                                    struct tg_tensor *const *keep, int nkeep)
{
    int n = S->n, n_in = S->n_in, n_ins = S->n_ins, no = S->no, cols = S->cols;
    int reg_of[TG_FUSE_MAX_INSTR];
    /* registers: inputs first, then live instructions in order */
    int r = n_in;
    for (int k = 0; k < n; k++) reg_of[k] = S->live[k] ? r++ : -1;
    int n_reg = r;

    struct tg_fuse_tmpl *tm = tg_tape_alloc(t, sizeof *tm);
    struct tg_fuse_instr *pins = tg_tape_alloc(t, (size_t)n_ins * sizeof *pins);
    int *ints = tg_tape_alloc(t, ((size_t)no + n_reg) * sizeof *ints);
    unsigned char *rg = tg_tape_alloc(t, 2 * (size_t)n_reg);
    int *saved_ld = tg_tape_alloc(t, (size_t)n_reg * sizeof *saved_ld);
    signed char *host = tg_tape_alloc(t, (size_t)n_reg + (size_t)no);
    if (!tm || !pins || !ints || !rg || !saved_ld || !host) return NULL;
    memset(tm, 0, sizeof *tm);
    struct tg_fuse_prog *p = &tm->proto;
    p->rows = S->rows;
    p->cols = cols;
    p->n_in = n_in;
    p->n_ins = n_ins;
    p->n_out = no;
    p->n_reg = n_reg;
    p->ins = pins;
    p->out_reg = ints;
    p->reg_out = ints + no;
    p->reg_grad = rg;
    p->reg_val = rg + n_reg;
    p->reg_saved_ld = saved_ld;
    p->serial = S->serial;
    tm->host = host;
    tm->out_host = host + n_reg;
    memset(host, -1, (size_t)n_reg + (size_t)no);
    memset(saved_ld, 0, (size_t)n_reg * sizeof *saved_ld);
    memset(tm->asked, -1, sizeof tm->asked);

    for (int i = 0; i < n_reg; i++) p->reg_out[i] = -1;
    for (int i = 0; i < n_in; i++) rg[i] = S->rg[i];
    int j = 0;
    for (int k = 0; k < n; k++) {
        if (!S->live[k]) continue;
        const struct tg_fuse_pending *q = &R->p[k];
        struct tg_fuse_instr *ins = &pins[j++];
        int reg[2] = {-1, -1};
        for (int s = 0; s < q->nsrc; s++)
            reg[s] = S->src_reg[k][s] >= 0 ? S->src_reg[k][s] : reg_of[-1 - S->src_reg[k][s]];
        ins->op = q->op->id;
        ins->flags = q->op->flags;
        ins->a = reg[0];
        ins->b = reg[1];
        ins->alpha = q->args.raw[0]; /* an elementwise op's constants are its first two words */
        ins->beta = q->args.raw[1];
        rg[reg_of[k]] = rg[reg[0]] || (reg[1] >= 0 && rg[reg[1]]);
    }
    for (int o = 0; o < no; o++) {
        p->out_reg[o] = reg_of[TG_PRIV(outs[o])->fuse_idx];
        p->reg_out[p->out_reg[o]] = o;
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
     * are kept, those being most of a fused step's arithmetic — where that costs no memory: in
     * the storage of an input block whose values are dead by the time the result is written (no
     * instruction after it reads the block, backward does not, no other input overlaps it, and
     * its tensor is overwritable: an LSTM's or GRU's gate pre-activations h·W_hhᵀ). A result
     * with no such place is recomputed in backward instead (an LSTM's tanh(c'), a GRU's n: one
     * transcendental per element against a B×H buffer per step). To recompute, the sources of
     * what is read are read too (kept outputs, saved results and inputs are in memory), which
     * may take a block another result was placed in: then place again, with fewer kept, until
     * every kept result has its place (each round keeps fewer, so this ends). */
    unsigned char rv0[TG_FUSE_MAX_IN + TG_FUSE_MAX_INSTR], keep_val[TG_FUSE_MAX_INSTR] = {0};
    unsigned char hosted[TG_FUSE_MAX_IN];
    memcpy(rv0, rv, (size_t)n_reg);
    for (int k = 0; k < n_ins && !t->fusion_lean; k++)
        keep_val[k] = rv[n_in + k] && p->reg_out[n_in + k] < 0 && (pins[k].flags & TG_EW_SAVE_Y);
    for (int dropped = 1; dropped;) {
        memcpy(rv, rv0, (size_t)n_reg);
        for (int k = n_ins; k-- > 0;) {
            int d = n_in + k;
            if (!rv[d] || p->reg_out[d] >= 0 || keep_val[k]) continue;
            rv[pins[k].a] = 1;
            if (pins[k].b >= 0) rv[pins[k].b] = 1;
        }
        memset(hosted, 0, sizeof hosted);
        dropped = 0;
        for (int k = 0; k < n_ins; k++) {
            int d = n_in + k;
            host[d] = -1;
            saved_ld[d] = 0;
            if (!keep_val[k]) continue;
            int h = find_host(t, tm, S, pins, rv, hosted, k, 0, keep, nkeep);
            if (h < 0) {
                keep_val[k] = 0;
                dropped = 1;
                continue;
            }
            hosted[h] = 1;
            host[d] = (signed char)h;
            saved_ld[d] = S->in[h].x->cols; /* in the key: the same for every hit */
        }
    }
    /* A kept output may live in a dead block too, if its rows fit there unchanged: one row, or
     * a block as wide as the tensor (rnn_tanh's h' = tanh(x W_ihᵀ + h W_hhᵀ + b) takes the
     * place of its pre-activation). */
    for (int o = 0; o < no; o++) {
        int h = find_host(t, tm, S, pins, rv, hosted, p->out_reg[o] - n_in, 1, keep, nkeep);
        tm->out_host[o] = (signed char)h;
        if (h >= 0) hosted[h] = 1;
    }
    for (int i = 0; i < n_in; i++)
        if (S->same[i] == i) tm->base_in[tm->nb++] = (unsigned char)i;
    return tm;
}

/* Make the fused node of template tm for this region's tensors (S's inputs, outs). */
static int bind(struct tg_tape *t, const struct tg_fuse_tmpl *tm, const struct sig *S,
                const struct tg_fuse_region *R, struct tg_tensor *const *outs)
{
    const struct tg_fuse_prog *pt = &tm->proto;
    int n_in = pt->n_in, no = pt->n_out, n_reg = pt->n_reg;
    /* one arena piece: program, inputs, outputs, saved places, the node's sources */
    size_t sz_p = (sizeof *pt + 15) & ~(size_t)15;
    size_t sz_in = ((size_t)n_in * sizeof(struct tg_fuse_input) + 15) & ~(size_t)15;
    size_t sz_ptr = ((size_t)no + n_reg + tm->nb) * sizeof(void *);
    unsigned char *mem = tg_tape_alloc(t, sz_p + sz_in + sz_ptr);
    if (!mem) return 0;
    struct tg_fuse_prog *p = (struct tg_fuse_prog *)mem;
    *p = *pt;
    p->in = (struct tg_fuse_input *)(mem + sz_p);
    p->out = (struct tg_tensor **)(mem + sz_p + sz_in);
    p->reg_saved = (void **)(p->out + no);
    struct tg_tensor **bases = (struct tg_tensor **)(p->reg_saved + n_reg);
    p->tape = t;
    memcpy(p->in, S->in, (size_t)n_in * sizeof *p->in);
    size_t es = tg_dtype_size(outs[0]->dtype);
    for (int o = 0; o < no; o++) {
        int h = tm->out_host[o];
        p->out[o] = outs[o];
        if (h >= 0) {
            p->in[h].x->flags |= TG_REUSED;
            outs[o]->data = (char *)p->in[h].x->data + (size_t)p->in[h].off * es;
        } else {
            outs[o]->data = tg_tape_alloc(t, tg_nbytes(outs[o]));
            if (!outs[o]->data) return 0;
        }
    }
    for (int d = 0; d < n_reg; d++) {
        int h = tm->host[d];
        if (h >= 0) {
            p->in[h].x->flags |= TG_REUSED;
            p->reg_saved[d] = (char *)p->in[h].x->data + (size_t)p->in[h].off * es;
        } else if (h == -2) {
            p->reg_saved[d] = tg_tape_alloc(t, (size_t)p->rows * p->cols * es);
            if (!p->reg_saved[d]) return 0;
        } else {
            p->reg_saved[d] = NULL;
        }
    }
    for (int b = 0; b < tm->nb; b++) bases[b] = p->in[tm->base_in[b]].x;
    if (!tg_fuse_scratch_reserve(t, 2 * (size_t)n_reg * TG_FUSE_CHUNK * es)) return 0;

    /* the program rides in the node's first pointer; the op that runs it is the one every
     * elementwise op names as its fused form */
    union tg_node_args args = {.ptr = {p, tg_anomaly_keep_region(t, R->p, S->n)}}; /* observe.c */
    struct tg_tensor *o0 = tg_fuse_emit_recorded(t, R->fused_op, bases, tm->nb, &args, outs[0]);
    if (!o0) return 0;
    for (int o = 1; o < no; o++) {
        outs[o]->flags &= ~(unsigned)TG_PENDING;
        if (!(o0->flags & TG_REQUIRES_GRAD)) outs[o]->flags &= ~(unsigned)TG_REQUIRES_GRAD;
        outs[o]->node = o0->node;
    }
    return 1;
}

/* Compile the open region into one node that stores outs[0 … no−1] (pending results of this
 * region); instructions that none of them needs are dropped. Clears the region's instructions
 * (pending column slices stay usable). Returns 0 if memory ran out (error set on the tape). */
static int compile_region(struct tg_tape *t, struct tg_tensor *const *outs, int no,
                          struct tg_tensor *const *keep, int nkeep)
{
    struct tg_fuse_region *R = &t->fuse;
    int n = R->n, rows = R->rows, cols = R->cols;
    if (n == 0 || no == 0) {
        R->n = R->n_ext = 0;
        R->rows = R->cols = 0;
        return 1;
    }
    struct sig S;
    make_sig(t, R, rows, cols, outs, no, &S);
    R->n = R->n_ext = 0;
    R->rows = R->cols = 0;
    const struct tg_fuse_tmpl *tm = t->fuse_cache_off ? NULL : cache_find(t, &S, keep, nkeep);
    if (tm) {
        t->fuse_cache.hits++;
    } else {
        t->fuse_cache.misses++;
        struct tg_fuse_tmpl *fresh = analyse(t, R, &S, outs, keep, nkeep);
        if (!fresh || !cache_add(t, &S, fresh)) return 0;
        tm = fresh;
    }
    return bind(t, tm, &S, R, outs);
}

int tg_fuse_compile(struct tg_tape *t, struct tg_tensor *const *outs, int no,
                    struct tg_tensor *const *keep, int nkeep)
{
    if (compile_region(t, outs, no, keep, nkeep)) return 1;
    /* on failure the region's pending tensors are declared dead, so nothing later indexes
     * instructions that are gone */
    t->fuse.n = t->fuse.n_ext = 0;
    t->fuse.gen++;
    return 0;
}
