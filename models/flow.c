/* flow.c — the per-step gradient ledger of an unrolled model (tapegrad_flow.h has the
 * definitions). Nothing here changes a gradient: it reads the tape after tg_backward, plus what
 * a backward hook saw on the way (the gradient of each h_t before its own layer's nodes ran,
 * and the change of a parameter's gradient across nodes that read the parameter directly).
 *
 * Cost, per step and layer, for a use out = [C +] A·Wᵀ over B rows: two B×B Gram matrices,
 * dOut·dOutᵀ (B(B+1)/2·N multiply-adds) and A·Aᵀ (B(B+1)/2·K), shared between uses that read
 * the same rows, against the 3·B·N·K of the use's own forward and backward products. Summed over
 * a step's distinct Gram matrices that is 6.9% of an rnn_tanh step's product work, 6.6% of a
 * GRU's and 3.9% of an LSTM's at B = 32, H = I = 128, V = 64 (3.7%, 3.4%, 1.9% at B = 64,
 * H = I = 512): at equal speed, a floor for exact per-step norms, above the 3% except
 * for the LSTM at H = 512.
 * The Gram matrices are most of the ledger's time (flow_kern.c). With f->sketch = k they are
 * replaced by CountSketches (B·(N+K) adds per block, B·k² per use; unbiased, variance in
 * tapegrad_flow.h), made in the backward hook where it can; what is left is reading the blocks
 * and the ∂L/∂h_t snapshots at all (README, "Cost"). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_kern.h"
#include "tapegrad_flow.h"
#include "tapegrad_ops.h"

enum { USE_PRODUCT = 1, USE_BIAS = 2, USE_GATHER = 4 };

/* One place a parameter's gradient is made: a product node (route 1), the bias row of one
 * (route 2, for p and, when the row is b_ih + b_hh, p2 too) or an embedding over all T·B
 * rows (route 4). Route 3, a node of a step reading p itself, is tracked per parameter (delta).
 * Steps [t0, t1), rows per step: filled by tg_flow_end. */
struct flow_use {
    const struct tg_node *n;
    int kind, p, p2;
    int t0, t1, rows;
};

struct tg_flow_priv {
    const struct tg_seq_result *res;
    int *snapped;                 /* per layer: its h_t gradients were copied (from_out) */
    void **above;                 /* [l·T + t]: copy of ∂L/∂h_t at that moment, or NULL */
    int *diff;                    /* per parameter: route 3 tracks it */
    double **delta;               /* per parameter (route 3): T·numel, step t's term */
    void **before;                /* per parameter (route 3): its gradient before the node */
    struct flow_use *uses;
    int n_uses;
    int *count;                   /* [p·T + t]: terms found (more than one: added explicitly) */
    double *norm2;                /* [p·T + t] */
    double *jac_acc;              /* L·T·B */
    struct flow_sketch_store *sk; /* f->sketch > 0: this batch's sketches (tape arena) */
    double *sk_acc;               /* column sums for the hook (tape arena) */
};

static double at(const void *p, enum tg_dtype dt, size_t i)
{
    return dt == TG_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* The model parameter x is, or is a row view of (a cell's weight slice shares its gradient:
 * the node reading the view adds into the parameter's gradient itself); −1 if neither. */
static int param_index(const struct tg_flow *f, const struct tg_tensor *x)
{
    if (x && (x->flags & TG_VIEW) && x->node && x->node->nsrc == 1) x = x->node->src[0];
    if (!x || !(x->flags & TG_PARAM)) return -1;
    for (int i = 0; i < f->n_params; i++)
        if (f->model->params[i] == x) return i;
    return -1;
}

static const struct {
    const char *cell, *gates;
} gate_lists[] = {
    {"rnn_tanh", "h"}, {"lstm", "i,f,g,o,c"}, {"gru", "r,z,n"}, {"gru_cho", "u,r,c~"},
    {"lstm_peephole", "i,f,g,o,c"}, {"lstm_coupled", "f,g,o,c"}, {"lstm_dlbook", "f,g,in,q,s"},
    {"mgu", "f,h~"},
};

const char *tg_flow_gate_names(const struct tg_cell *cell)
{
    for (size_t i = 0; i < sizeof gate_lists / sizeof gate_lists[0]; i++)
        if (strcmp(cell->name, gate_lists[i].cell) == 0) return gate_lists[i].gates;
    return NULL;
}

void tg_flow_free(struct tg_flow *f)
{
    if (!f) return;
    if (f->priv) {
        free(f->priv->snapped);
        free(f->priv->above);
        free(f->priv->diff);
        free(f->priv->delta);
        free(f->priv->before);
        free(f->priv->count);
        free(f->priv->norm2);
        free(f->priv->jac_acc);
        free(f->priv);
    }
    free(f->grad_h);
    free(f->from_out);
    free(f->from_next);
    free(f->jac);
    free(f->contrib);
    free(f->covered);
    free(f->sat);
    free(f);
}

enum tg_status tg_flow_new(const struct tg_model *m, int T, int B, struct tg_flow **out)
{
    *out = NULL;
    if (T < 1 || B < 1) return tg_error(TG_ERR_SHAPE, "tg_flow_new: need T, B >= 1, got %d, %d", T, B);
    if (m->cfg.bidirectional) /* the ledger follows one chain of states per layer */
        return tg_error(TG_ERR_VALUE, "tg_flow_new: bidirectional models are not supported");
    struct tg_flow *f = calloc(1, sizeof *f);
    if (!f) return tg_error(TG_ERR_NOMEM, "tg_flow_new: out of memory");
    f->model = m;
    f->T = T, f->B = B, f->H = m->cfg.hidden, f->L = m->cfg.layers;
    f->n_state = m->cfg.cell->n_state, f->n_params = m->n_params;
    size_t LT = (size_t)f->L * T, PT = (size_t)f->n_params * T;
    struct tg_flow_priv *q = f->priv = calloc(1, sizeof *q);
    f->grad_h = calloc(LT, sizeof(double));
    f->from_out = calloc(LT, sizeof(double));
    f->from_next = calloc(LT, sizeof(double));
    f->jac = calloc(LT, sizeof(double));
    f->contrib = calloc(PT, sizeof(double));
    f->covered = calloc((size_t)f->n_params, sizeof(int));
    f->sat = calloc((size_t)f->L * TG_FLOW_MAX_GATES * T, sizeof(double));
    if (q) {
        q->snapped = calloc((size_t)f->L, sizeof(int));
        q->above = calloc(LT, sizeof(void *));
        q->diff = calloc((size_t)f->n_params, sizeof(int));
        q->delta = calloc((size_t)f->n_params, sizeof(double *));
        q->before = calloc((size_t)f->n_params, sizeof(void *));
        q->count = calloc(PT, sizeof(int));
        q->norm2 = calloc(PT, sizeof(double));
        q->jac_acc = calloc(LT * B, sizeof(double));
    }
    if (!q || !f->grad_h || !f->from_out || !f->from_next || !f->jac || !f->contrib ||
        !f->covered || !f->sat || !q->snapped || !q->above || !q->diff || !q->delta ||
        !q->before || !q->count || !q->norm2 || !q->jac_acc) {
        tg_flow_free(f);
        return tg_error(TG_ERR_NOMEM, "tg_flow_new: out of memory");
    }
    for (size_t i = 0; i < LT; i++) f->jac[i] = NAN;
    *out = f;
    return TG_OK;
}

static struct tg_tensor *h_of(const struct tg_flow *f, const struct tg_seq_result *res, int l, int t)
{
    return res->states[((size_t)l * f->T + t) * f->n_state];
}

/* The step a product node's rows belong to when it is one block, or −1 (split in T blocks if
 * it has T·B rows, else not attributable: −2). */
static int block_step(const struct tg_flow *f, const struct tg_node *n, const struct tg_tensor *A)
{
    if (n->step >= 0) return n->step;
    if (n->out->rows == f->T * f->B && f->T > 1) return -1;
    for (int l = 0; l < f->L; l++)
        for (int t = 0; t < f->T; t++)
            if (h_of(f, f->priv->res, l, t) == A) return t;
    return n->out->rows == f->T * f->B ? -1 : -2;
}

/* ----------------------------------------------------------------- the hook */

static void snapshot(struct tg_flow *f, int l)
{
    struct tg_flow_priv *q = f->priv;
    q->snapped[l] = 1;
    for (int t = 0; t < f->T; t++) {
        struct tg_tensor *h = h_of(f, q->res, l, t);
        void **a = &q->above[(size_t)l * f->T + t];
        if (h->grad && *a) memcpy(*a, h->grad, tg_nbytes(h));
        else *a = NULL;
    }
}

static int diff_node(const struct tg_flow *f, const struct tg_node *n)
{
    return n->step >= 0 && n->step < f->T && !tg_node_weight(n, NULL, NULL);
}

static const void *rows_of(const struct tg_tensor *A, int r0, int m);

static void hook(void *ctx, const struct tg_node *n, int after)
{
    struct tg_flow *f = ctx;
    struct tg_flow_priv *q = f->priv;
    if (!after && n->layer >= 0 && n->layer < f->L && !q->snapped[n->layer]) snapshot(f, n->layer);
    if (after && q->sk && n->step >= 0 && n->step < f->T) {
        /* A step's product: its dOut rows were just written and its A rows just read (staged),
         * so sketch both now, from cache, for tg_flow_end (and the bias's column sums) */
        struct tg_tensor *A, *C, *W = tg_node_weight(n, &A, &C);
        if (W && n->out->grad && A->data && param_index(f, W) >= 0) {
            double *cs = NULL;
            enum tg_dtype dt = n->out->dtype;
            if (flow_sketch_get(q->sk, 0, n->out->grad, n->out->cols, n->out->rows, n->step, &cs) && cs &&
                *cs < 0 && C && C->rows == 1)
                *cs = flow_colsum_sumsq(dt, n->out->grad, n->out->rows, n->out->cols, q->sk_acc);
            flow_sketch_get(q->sk, 1, rows_of(A, 0, n->out->rows), A->cols, n->out->rows, n->step, NULL);
        }
    }
    if (!diff_node(f, n)) return;
    for (int s = 0; s < n->nsrc; s++) {
        int p = param_index(f, n->src[s]), dup = 0;
        if (p < 0 || !q->diff[p]) continue;
        for (int r = 0; r < s; r++) dup |= param_index(f, n->src[r]) == p;
        if (dup) continue;
        const struct tg_tensor *w = f->model->params[p];
        size_t k = tg_numel(w);
        if (!after) {
            memcpy(q->before[p], w->grad, tg_nbytes(w));
        } else {
            double *d = q->delta[p] + (size_t)n->step * k;
            for (size_t i = 0; i < k; i++)
                d[i] += at(w->grad, w->dtype, i) - at(q->before[p], w->dtype, i);
        }
    }
}

enum tg_status tg_flow_begin(struct tg_flow *f, struct tg_tape *t, const struct tg_seq_result *res)
{
    struct tg_flow_priv *q = f->priv;
    q->res = res;
    size_t hb = (size_t)f->B * f->H * tg_dtype_size(f->model->cfg.dtype);
    for (int l = 0; l < f->L; l++) {
        q->snapped[l] = 0;
        for (int s = 0; s < f->T; s++)
            if (!(q->above[(size_t)l * f->T + s] = tg_tape_alloc(t, hb)))
                return tg_error(TG_ERR_NOMEM, "tg_flow_begin: out of memory");
    }
    /* Which parameters some node of a step reads itself (route 3), and the use list. */
    size_t nn = tg_tape_num_nodes(t);
    int n_uses = 0;
    for (int p = 0; p < f->n_params; p++) q->diff[p] = 0, f->covered[p] = 1;
    for (size_t i = 0; i < nn; i++) {
        const struct tg_node *n = tg_tape_node(t, i);
        struct tg_tensor *A, *C, *W = tg_node_weight(n, &A, &C);
        for (int s = 0; s < n->nsrc; s++) {
            int p = param_index(f, n->src[s]);
            if (p < 0) continue;
            n_uses++;
            if (diff_node(f, n)) q->diff[p] = 1;
            else if (s == 0 && tg_embedding_ids(n) && n->out->rows == f->T * f->B) continue; /* route 4 */
            else if (!(W && (n->src[s] == W || n->src[s] == C)) &&
                     !(tg_node_op(n) == TG_OP_ADD && n->out->rows == 1))
                f->covered[p] = 0; /* read outside a step, not as a product or bias */
        }
        if (W && (block_step(f, n, A) == -2)) {
            int p = param_index(f, W);
            if (p >= 0) f->covered[p] = 0;
        }
    }
    q->uses = tg_tape_alloc(t, (size_t)(n_uses + 1) * sizeof *q->uses);
    if (!q->uses) return tg_error(TG_ERR_NOMEM, "tg_flow_begin: out of memory");
    q->sk = NULL;
    if (f->sketch > 0) { /* room for two sketches per block of every product */
        int dim = 1, rows = f->B, cap = 2;
        for (size_t i = 0; i < nn; i++) {
            struct tg_tensor *A, *W = tg_node_weight(tg_tape_node(t, i), &A, NULL);
            const struct tg_node *n = tg_tape_node(t, i);
            if (!W || param_index(f, W) < 0) continue;
            dim = W->rows > dim ? W->rows : dim;
            dim = A->cols > dim ? A->cols : dim;
            int per_step = n->step >= 0 || n->out->rows != f->T * f->B;
            if (per_step && n->out->rows > rows) rows = n->out->rows;
            cap += 2 * (per_step ? 1 : f->T);
        }
        q->sk = flow_sketch_store_new(t, f->model->cfg.dtype, f->sketch, f->sketch_seed, dim, rows, cap);
        q->sk_acc = tg_tape_alloc(t, (size_t)dim * sizeof *q->sk_acc);
        if (!q->sk || !q->sk_acc) return tg_error(TG_ERR_NOMEM, "tg_flow_begin: out of memory");
    }
    for (int p = 0; p < f->n_params; p++) {
        if (!q->diff[p]) continue;
        const struct tg_tensor *w = f->model->params[p];
        q->delta[p] = tg_tape_alloc(t, (size_t)f->T * tg_numel(w) * sizeof(double));
        q->before[p] = tg_tape_alloc(t, tg_nbytes(w));
        if (!q->delta[p] || !q->before[p]) return tg_error(TG_ERR_NOMEM, "tg_flow_begin: out of memory");
        memset(q->delta[p], 0, (size_t)f->T * tg_numel(w) * sizeof(double));
    }
    tg_tape_set_backward_hook(t, hook, f);
    return TG_OK;
}

/* -------------------------------------------------------------- the ledger */

/* Gram matrices of the current and the previous step, by the address of their rows: a use's
 * dOut rows are often another use's (the input projection's gradient is W_hh's staged dOut),
 * and its A rows another's (h_t is A of the output layer at t and of W_hh at t + 1). */
struct gram_cache {
    struct gram { const void *p; int k, m; void *g; } *e[2];
    int n[2], cap;
    char *pool[2];
    size_t gbytes;
};

static const void *gram_of(struct gram_cache *c, int slot, enum tg_dtype dt, const void *p, int k, int m)
{
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < c->n[s]; i++)
            if (c->e[s][i].p == p && c->e[s][i].k == k && c->e[s][i].m == m) return c->e[s][i].g;
    if (c->n[slot] == c->cap) return NULL;
    struct gram *g = &c->e[slot][c->n[slot]];
    g->p = p, g->k = k, g->m = m, g->g = c->pool[slot] + (size_t)c->n[slot] * c->gbytes;
    c->n[slot]++;
    flow_gram(dt, m, k, p, (size_t)k, g->g);
    return g->g;
}

/* The estimator (f->sketch = k): ‖dOut_tᵀA_t‖_F² ≈ ‖(S₁ dOut_tᵀ)(A_t S₂ᵀ)‖_F² = ‖Yᵀ Z‖_F², with
 * Y = dOut_t S₁ᵀ (B × k) and Z = A_t S₂ᵀ (B × k) CountSketches of the rows: column n of a block
 * goes, times a random sign, to bucket (n mod k + rot[n div k]) mod k, a random rotation per
 * chunk of k columns (so that two columns meet in a bucket with probability ≤ 1/k whatever
 * their positions, as with a random hash, while a chunk stays one vector add). S₁ (for
 * gradients) and S₂ (for inputs) are drawn afresh and independently per step; E[SᵀS] = I
 * makes the estimate unbiased. Cost per step: B·(N + K) adds per distinct block (blocks are
 * shared by address, as the Gram matrices are) and B·k² per use, against B²/2·(N + K).
 * Variance (one side, signs and rotations random): (2/k)·Σ_{n≠m} ⟨M_n, M_m⟩² ≤ (2/k)‖M‖_F⁴
 * for M's rows M_n; both sides: ≤ ((2/k)(1 + 2/k) + 2/k)·‖M‖_F⁴. */
/* Where rows [r0, r0 + m) of A live: in A, or — when A is a concatenation of rows, as the
 * output layer's stacked h_t are — in the input holding exactly those rows (so its Gram is
 * shared with the uses that read that input itself). */
static const void *rows_of(const struct tg_tensor *A, int r0, int m)
{
    const struct tg_node *n = A->node;
    if (n && tg_node_op(n) == TG_OP_CONCAT) {
        int r = 0;
        for (int s = 0; s < n->nsrc; s++) {
            const struct tg_tensor *x = n->src[s];
            if (x->cols != A->cols) break;
            if (r == r0 && x->rows == m) return x->data;
            if (r > r0) break;
            r += x->rows;
        }
    }
    return (const char *)A->data + (size_t)r0 * A->cols * tg_dtype_size(A->dtype);
}

static void add_term(struct tg_flow *f, int p, int t, double norm2)
{
    struct tg_flow_priv *q = f->priv;
    size_t k = (size_t)p * f->T + t;
    q->count[k]++;
    q->norm2[k] += norm2;
}

/* The steps of a use: [*t0, *t1) and the rows of step t start at (t − *t0)·rows. */
static int use_blocks(const struct tg_flow *f, const struct flow_use *u, int *t0, int *t1, int *rows)
{
    if (u->kind == USE_GATHER) {
        *t0 = 0, *t1 = f->T, *rows = f->B;
        return 1;
    }
    struct tg_tensor *A;
    tg_node_weight(u->n, &A, NULL);
    int s = block_step(f, u->n, A);
    if (s == -2) return 0;
    if (s >= 0) *t0 = s, *t1 = s + 1, *rows = u->n->out->rows;
    else *t0 = 0, *t1 = f->T, *rows = f->B;
    return 1;
}

/* ‖step s's term of the table's gradient‖² for an embedding over all T·B rows: the term is the
 * scatter-add dE_s[v] = Σ_{b: id_b = v} dX_b over the step's B rows, so its squared norm is
 * Σ_v ‖Σ_{b: id_b = v} dX_b‖² — rows with equal ids added first (O(B² + B·D)). */
static double gather_norm2(const struct flow_use *u, int r0, int B, double *acc)
{
    const struct tg_tensor *y = u->n->out;
    const int32_t *ids = tg_embedding_ids(u->n) + r0;
    int D = y->cols;
    double s = 0;
    for (int b = 0; b < B; b++) {
        int first = 1;
        for (int c = 0; c < b && first; c++) first = ids[c] != ids[b];
        if (!first) continue;
        for (int j = 0; j < D; j++) acc[j] = 0;
        for (int c = b; c < B; c++)
            if (ids[c] == ids[b])
                for (int j = 0; j < D; j++) acc[j] += at(y->grad, y->dtype, (size_t)(r0 + c) * D + j);
        for (int j = 0; j < D; j++) s += acc[j] * acc[j];
    }
    return s;
}

enum tg_status tg_flow_end(struct tg_flow *f, struct tg_tape *t, const struct tg_seq_result *res)
{
    struct tg_flow_priv *q = f->priv;
    tg_tape_set_backward_hook(t, NULL, NULL);
    enum tg_dtype dt = f->model->cfg.dtype;
    size_t nh = (size_t)f->B * f->H;
    int T = f->T;
    /* ∂L/∂h_t and its split */
    for (int l = 0; l < f->L; l++)
        for (int s = 0; s < T; s++) {
            size_t k = (size_t)l * T + s;
            const struct tg_tensor *h = h_of(f, res, l, s);
            const void *a = q->snapped[l] ? q->above[k] : h->grad;
            double tot = 0, up = 0, nx = 0;
            flow_split_norms(dt, h->grad, a, nh, &tot, &up, &nx);
            f->grad_h[k] = sqrt(tot), f->from_out[k] = sqrt(up), f->from_next[k] = sqrt(nx);
        }
    /* every place a parameter's gradient is made */
    memset(q->count, 0, (size_t)f->n_params * T * sizeof *q->count);
    memset(q->norm2, 0, (size_t)f->n_params * T * sizeof *q->norm2);
    q->n_uses = 0;
    size_t nn = tg_tape_num_nodes(t), gmax = 1, kmax = 1;
    for (size_t i = 0; i < nn; i++) {
        const struct tg_node *n = tg_tape_node(t, i);
        struct tg_tensor *A, *C, *W = tg_node_weight(n, &A, &C);
        int p = param_index(f, W);
        if (p >= 0) {
            q->uses[q->n_uses++] = (struct flow_use){n, USE_PRODUCT, p, -1, 0, 0, 0};
            if (C && C->rows == 1) {
                int pc = param_index(f, C), pc2 = -1;
                if (pc < 0 && C->node && tg_node_op(C->node) == TG_OP_ADD && C->node->nsrc == 2)
                    pc = param_index(f, C->node->src[0]), pc2 = param_index(f, C->node->src[1]);
                if (pc >= 0) q->uses[q->n_uses++] = (struct flow_use){n, USE_BIAS, pc, pc2, 0, 0, 0};
            }
            if ((size_t)W->rows > kmax) kmax = (size_t)W->rows;
            if ((size_t)A->cols > kmax) kmax = (size_t)A->cols;
        } else if (tg_embedding_ids(n) && (p = param_index(f, n->src[0])) >= 0 && f->covered[p]) {
            q->uses[q->n_uses++] = (struct flow_use){n, USE_GATHER, p, -1, 0, 0, 0};
            if ((size_t)n->out->cols > kmax) kmax = (size_t)n->out->cols;
        }
    }
    /* Each use's steps, once (not per step: T·uses lookups were a tenth of the ledger), and
     * the uses of one step listed together: order[0, n_span) span all steps, then
     * order[pos[s], pos[s + 1]) are step s's own. */
    int *order = tg_tape_alloc(t, (size_t)(q->n_uses + 1) * sizeof *order);
    int *pos = tg_tape_alloc(t, (size_t)(2 * T + 2) * sizeof *pos), *cur = pos + T + 1;
    if (!order || !pos) return tg_error(TG_ERR_NOMEM, "tg_flow_end: out of memory");
    int n_span = 0;
    memset(pos, 0, (size_t)(T + 1) * sizeof *pos);
    for (int u = 0; u < q->n_uses; u++) {
        struct flow_use *us = &q->uses[u];
        if (!us->n->out->grad || !use_blocks(f, us, &us->t0, &us->t1, &us->rows)) us->t0 = us->t1 = 0;
        if (us->t1 <= us->t0) continue;
        if ((size_t)us->rows > gmax) gmax = (size_t)us->rows;
        if (us->t1 - us->t0 > 1) order[n_span++] = u;
        else pos[us->t0 + 1]++;
    }
    pos[0] = n_span;
    for (int s = 0; s < T; s++) pos[s + 1] += pos[s], cur[s] = pos[s];
    for (int u = 0; u < q->n_uses; u++)
        if (q->uses[u].t1 == q->uses[u].t0 + 1) order[cur[q->uses[u].t0]++] = u;
    size_t es = tg_dtype_size(dt), ld = (size_t)flow_gram_ld((int)gmax);
    const int sketch = f->sketch > 0 ? f->sketch : 0;
    struct gram_cache gc = {.cap = 2 * q->n_uses + 2, .gbytes = (ld * ld * es + 63) / 64 * 64};
    int sk_cap = 2, sk_dim = 1, sk_rows = 1; /* what the products' sketches need */
    for (int u = 0; u < q->n_uses; u++) {
        const struct flow_use *us = &q->uses[u];
        struct tg_tensor *A, *W = us->kind == USE_PRODUCT ? tg_node_weight(us->n, &A, NULL) : NULL;
        if (!W || us->t1 <= us->t0) continue;
        sk_cap += 2 * (us->t1 - us->t0);
        sk_dim = W->rows > sk_dim ? W->rows : sk_dim;
        sk_dim = A->cols > sk_dim ? A->cols : sk_dim;
        sk_rows = us->rows > sk_rows ? us->rows : sk_rows;
    }
    double *acc = tg_tape_alloc(t, kmax * sizeof *acc);
    if (!acc) return tg_error(TG_ERR_NOMEM, "tg_flow_end: out of memory");
    if (sketch) { /* the hook's sketches if they were made for this (k, seed), else anew */
        if (!flow_sketch_store_fits(q->sk, sketch, f->sketch_seed, sk_dim, sk_rows, sk_cap))
            q->sk = flow_sketch_store_new(t, dt, sketch, f->sketch_seed, sk_dim, sk_rows, sk_cap);
        if (!q->sk) return tg_error(TG_ERR_NOMEM, "tg_flow_end: out of memory");
    } else
        for (int sl = 0; sl < 2; sl++) {
            gc.e[sl] = tg_tape_alloc(t, (size_t)gc.cap * sizeof *gc.e[sl]);
            gc.pool[sl] = tg_tape_alloc(t, (size_t)gc.cap * gc.gbytes + 64);
            if (!gc.e[sl] || !gc.pool[sl]) return tg_error(TG_ERR_NOMEM, "tg_flow_end: out of memory");
            gc.pool[sl] = (char *)(((uintptr_t)gc.pool[sl] + 63) & ~(uintptr_t)63);
        }
    /* step by step, so that the Gram matrices of one step serve the next; last step first, as
     * the backward hook ran, so that a block shared by two steps (h_t: the input of step t's
     * output and of step t+1's W_hh) is sketched with the same step's draw either way */
    for (int s = T - 1; s >= 0; s--) {
        int slot = s & 1;
        gc.n[slot] = 0;
        for (int j = 0; j < n_span + pos[s + 1] - pos[s]; j++) {
            const struct flow_use *us = &q->uses[order[j < n_span ? j : pos[s] + j - n_span]];
            const struct tg_node *n = us->n;
            int rows = us->rows, r0 = (s - us->t0) * rows, N = n->out->cols;
            if (us->kind == USE_GATHER) {
                add_term(f, us->p, s, gather_norm2(us, r0, rows, acc));
                continue;
            }
            const void *dout = (const char *)n->out->grad + (size_t)r0 * N * es;
            if (us->kind == USE_PRODUCT && sketch) {
                struct tg_tensor *A;
                tg_node_weight(n, &A, NULL);
                const void *y = flow_sketch_get(q->sk, 0, dout, N, rows, s, NULL);
                const void *z = flow_sketch_get(q->sk, 1, rows_of(A, r0, rows), A->cols, rows, s, NULL);
                if (!y || !z) return tg_error(TG_ERR_NOMEM, "tg_flow_end: sketch store full");
                add_term(f, us->p, s, flow_sketch_pair(q->sk, y, z, rows));
            } else if (us->kind == USE_BIAS && sketch) { /* exact: the column sums themselves */
                double *cs = NULL;
                flow_sketch_get(q->sk, 0, dout, N, rows, s, &cs);
                double ss = cs && *cs >= 0 ? *cs : flow_colsum_sumsq(dt, dout, rows, N, acc);
                if (cs) *cs = ss;
                add_term(f, us->p, s, ss);
                if (us->p2 >= 0) add_term(f, us->p2, s, ss);
            } else if (us->kind == USE_PRODUCT) {
                struct tg_tensor *A;
                tg_node_weight(n, &A, NULL);
                const void *g1 = gram_of(&gc, slot, dt, dout, N, rows);
                const void *g2 = gram_of(&gc, slot, dt, rows_of(A, r0, rows), A->cols, rows);
                if (!g1 || !g2) return tg_error(TG_ERR_NOMEM, "tg_flow_end: Gram cache full");
                add_term(f, us->p, s, flow_gram_dot(dt, g1, g2, rows));
            } else { /* ‖column sums‖² = Σ of the Gram matrix of the same rows */
                const void *g1 = gram_of(&gc, slot, dt, dout, N, rows);
                if (!g1) return tg_error(TG_ERR_NOMEM, "tg_flow_end: Gram cache full");
                double ss = flow_gram_sum(dt, g1, rows);
                add_term(f, us->p, s, ss);
                if (us->p2 >= 0) add_term(f, us->p2, s, ss);
            }
        }
    }
    for (int p = 0; p < f->n_params; p++) {
        if (!q->diff[p]) continue;
        size_t k = tg_numel(f->model->params[p]);
        for (int s = 0; s < T; s++) add_term(f, p, s, flow_sumsq(q->delta[p] + (size_t)s * k, TG_F64, k));
    }
    /* Several terms at one step: norms do not add, so sum the terms themselves (slow path:
     * a cell that uses one weight twice in a step). */
    for (int p = 0; p < f->n_params; p++)
        for (int s = 0; s < T; s++) {
            size_t k = (size_t)p * T + s;
            if (!f->covered[p]) {
                f->contrib[k] = NAN;
                continue;
            }
            if (q->count[k] > 1) {
                size_t m = tg_numel(f->model->params[p]);
                double *buf = tg_tape_alloc(t, m * sizeof(double));
                if (!buf || tg_flow_term(f, p, s, buf) != TG_OK) return tg_error(TG_ERR_NOMEM, "tg_flow_end: out of memory");
                q->norm2[k] = flow_sumsq(buf, TG_F64, m);
            }
            f->contrib[k] = sqrt(q->norm2[k]);
        }
    return TG_OK;
}

enum tg_status tg_flow_term(const struct tg_flow *f, int p, int step, double *out)
{
    const struct tg_flow_priv *q = f->priv;
    if (p < 0 || p >= f->n_params || step < 0 || step >= f->T || !f->covered[p])
        return tg_error(TG_ERR_VALUE, "tg_flow_term: parameter %d step %d is not in the ledger", p, step);
    const struct tg_tensor *w = f->model->params[p];
    size_t m = tg_numel(w);
    enum tg_dtype dt = w->dtype;
    memset(out, 0, m * sizeof *out);
    for (int u = 0; u < q->n_uses; u++) {
        const struct flow_use *us = &q->uses[u];
        if (us->p != p && us->p2 != p) continue;
        const struct tg_node *n = us->n;
        struct tg_tensor *A;
        tg_node_weight(n, &A, NULL);
        int t0, t1, rows;
        if (!n->out->grad || !use_blocks(f, us, &t0, &t1, &rows) || step < t0 || step >= t1) continue;
        int r0 = (step - t0) * rows, N = n->out->cols;
        const void *dc = n->out->grad;
        const int32_t *ids = us->kind == USE_GATHER ? tg_embedding_ids(n) : NULL;
        for (int r = r0; r < r0 + rows; r++)
            for (int i = 0; i < N; i++) {
                double g = at(dc, dt, (size_t)r * N + i);
                if (g == 0) continue;
                if (us->kind == USE_BIAS) out[i] += g;
                else if (us->kind == USE_GATHER) out[(size_t)ids[r] * N + i] += g;
                else
                    for (int j = 0; j < A->cols; j++) out[(size_t)i * A->cols + j] += g * at(A->data, dt, (size_t)r * A->cols + j);
            }
    }
    if (q->diff[p])
        for (size_t i = 0; i < m; i++) out[i] += q->delta[p][(size_t)step * m + i];
    return TG_OK;
}

/* -------------------------------------------------------------- saturation */

enum tg_status tg_flow_saturation(struct tg_flow *f, struct tg_tape *t)
{
    const char *names = f->gate_names ? f->gate_names : tg_flow_gate_names(f->model->cfg.cell);
    int cur_step = -1, cur_layer = -1, slot = 0;
    f->n_gates = 0;
    size_t nn = tg_tape_num_nodes(t);
    for (size_t i = 0; i < nn; i++) {
        const struct tg_node *n = tg_tape_node(t, i);
        enum tg_op op = tg_node_op(n);
        if ((op != TG_OP_SIGMOID && op != TG_OP_TANH) || n->step < 0 || n->layer < 0 ||
            n->step >= f->T || n->layer >= f->L)
            continue;
        if (n->step != cur_step || n->layer != cur_layer) cur_step = n->step, cur_layer = n->layer, slot = 0;
        const struct tg_tensor *y = n->out;
        int blocks = y->cols % f->H == 0 ? y->cols / f->H : 1, w = y->cols / blocks;
        for (int g = 0; g < blocks && slot < TG_FLOW_MAX_GATES; g++, slot++) {
            if (slot >= f->n_gates) {
                /* name: the slot-th entry of the comma-separated list, else its number */
                char nm[16];
                snprintf(nm, sizeof nm, "%d", slot + 1);
                const char *s = names;
                for (int k = 0; s && k < slot; k++) s = strchr(s, ',') ? strchr(s, ',') + 1 : NULL;
                if (s) snprintf(nm, sizeof nm, "%.*s", (int)strcspn(s, ","), s);
                snprintf(f->gate_label[slot], sizeof f->gate_label[slot], "%s(%s)",
                         op == TG_OP_SIGMOID ? "σ" : "tanh", nm);
                f->n_gates = slot + 1;
            }
            long sat = 0, cnt = 0;
            for (int r = 0; r < y->rows; r++)
                for (int c = g * w; c < (g + 1) * w; c++, cnt++) {
                    double v = at(y->data, y->dtype, (size_t)r * y->cols + c);
                    sat += op == TG_OP_SIGMOID ? (v < 0.01 || v > 0.99) : fabs(v) > 0.99;
                }
            f->sat[((size_t)n->layer * TG_FLOW_MAX_GATES + slot) * f->T + n->step] =
                cnt ? (double)sat / (double)cnt : 0;
        }
    }
    return TG_OK;
}

/* ------------------------------------------------------------- ∂h_T/∂h_t */

enum tg_status tg_flow_jacobian(struct tg_flow *f, struct tg_model *m, struct tg_tape *t,
                                const struct tg_seq_batch *b, int exact_max, int probes,
                                uint64_t seed)
{
    struct tg_flow_priv *q = f->priv;
    int H = f->H, B = f->B, T = f->T;
    if (b->T != T || b->B != B)
        return tg_error(TG_ERR_SHAPE, "tg_flow_jacobian: batch is T=%d B=%d, ledger T=%d B=%d", b->T, b->B, T, B);
    if (exact_max <= 0) exact_max = 64;
    if (probes <= 0) probes = 32;
    int exact = H <= exact_max, K = exact ? H : probes;
    f->jac_exact = exact;
    struct tg_rng rng;
    tg_rng_seed(&rng, seed);
    memset(q->jac_acc, 0, (size_t)f->L * T * B * sizeof *q->jac_acc);
    for (int l = 0; l < f->L; l++)
        for (int k = 0; k < K; k++) {
            struct tg_seq_result res;
            tg_tape_reset(t);
            enum tg_status st = tg_model_forward_from(m, t, b, NULL, &res);
            if (st != TG_OK) return st;
            /* loss = Σ h_T ⊙ V: its gradient into h_t is Vᵀ ∂h_T/∂h_t, row by row */
            struct tg_tensor *V = tg_tensor_new(t, B, H, m->cfg.dtype);
            if (!V) return tg_error(tg_tape_status(t), "%s", tg_tape_error(t));
            for (int r = 0; r < B; r++)
                for (int c = 0; c < H; c++)
                    tg_set(V, r, c, exact ? (double)(c == k) : tg_rng_normal(&rng));
            struct tg_tensor *loss = tg_sum(t, tg_mul(t, h_of(f, &res, l, T - 1), V));
            if ((st = tg_backward(t, loss)) != TG_OK) return st;
            for (int s = 0; s < T; s++) {
                const struct tg_tensor *h = h_of(f, &res, l, s);
                if (!h->grad) continue;
                for (int r = 0; r < B; r++)
                    q->jac_acc[((size_t)l * T + s) * B + r] += flow_sumsq((const char *)h->grad + (size_t)r * H * tg_dtype_size(h->dtype), h->dtype, (size_t)H);
            }
        }
    for (int l = 0; l < f->L; l++)
        for (int s = 0; s < T; s++) {
            double acc = 0;
            for (int r = 0; r < B; r++) acc += q->jac_acc[((size_t)l * T + s) * B + r];
            /* exact: acc = Σ_b ‖J_b‖_F²; estimated: K·Σ_b ‖J_b‖_F² in expectation */
            f->jac[(size_t)l * T + s] = sqrt(acc / (exact ? 1.0 : (double)K) / B / H);
        }
    tg_tape_reset(t);
    return TG_OK;
}

/* ------------------------------------------------------------ divergence */

int tg_flow_first_nonfinite(const struct tg_tape *t, char *buf, size_t len)
{
    buf[0] = '\0';
    size_t nn = tg_tape_num_nodes(t);
    int rows = tg_tape_step_rows(t);
    for (size_t i = 0; i < nn; i++) {
        const struct tg_node *n = tg_tape_node(t, i);
        const struct tg_tensor *y = n->out;
        if (!y->data) continue;
        for (size_t k = 0; k < tg_numel(y); k++) {
            double v = at(y->data, y->dtype, k);
            if (isfinite(v)) continue;
            int r = (int)(k / (size_t)y->cols), c = (int)(k % (size_t)y->cols), step = n->step + 1, seq = r;
            if (n->step < 0 && rows > 0 && y->rows > rows && y->rows % rows == 0) step = r / rows + 1, seq = r % rows;
            char st[32] = "outside the time loop";
            if (step > 0) snprintf(st, sizeof st, "step %d", step);
            snprintf(buf, len, "the output of %s%s%s%s at %s, layer %d, sequence %d, unit %d (%s)",
                     tg_op_name(tg_node_op(n)), n->origin ? " [" : "", n->origin ? n->origin : "",
                     n->origin ? "]" : "", st, n->layer, seq, c, isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf");
            return 1;
        }
    }
    return 0;
}
