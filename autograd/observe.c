/* observe.c — what tools that watch the gradient flow need from the engine (issue 13): an
 * origin tag per node, the product form of a node (which weight it multiplies), a hook around
 * each node's backward, and anomaly mode, which stops at the first NaN or ±inf.
 *
 * Anomaly mode checks, after every op's forward, its whole output, and after every op's
 * backward, the gradient of every input that wants one. The first non-finite element is
 * reported in one line with the place it was made:
 *   - the op, and its origin (the cell, or a cell file's FILE:LINE, from tg_tape_set_origin);
 *   - the time step, 1-based as people count them (a node tagged step s is step s + 1; a node
 *     over all T·B rows, tagged −1, gives step row / B + 1 when the unroller said B), the
 *     layer, the sequence (row within the step) and the unit (column);
 *   - the inputs' values at that element (a broadcast input at its broadcast place); for
 *     products and reductions, where the element is not a function of one input element, the
 *     input's largest |value| and whether it already held a non-finite value.
 * The check is a linear pass over what the op wrote, so the cost is a fraction of the op's own
 * (a GEMM's output is read once after O(k) work per element).
 *
 * Fusion stays on. A fused node computes a region of elementwise ops in one pass; its check
 * reads every result it stores (kept outputs and the σ/tanh values saved for backward) and,
 * backward, the gradients it adds to its inputs. Only on a hit is the region replayed one op at
 * a time, unfused, from its inputs — which anomaly mode keeps intact (no kept result may
 * overwrite them: tg_anomaly_may_overwrite) — with a copy of its instructions and their origins
 * that fuse.c hands over (tg_anomaly_keep_region); the replay checks each op as an unfused tape
 * would, so the report names the op and its FILE:LINE. Backward, the replay seeds the region's
 * outputs with the gradients they received and walks its ops in reverse. A value that goes
 * non-finite and dies inside a region (never stored: inf then 1/(1 + inf) = 0 in one pass) is
 * not seen, where an unfused tape would stop at it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

void tg_tape_set_origin(struct tg_tape *t, const char *origin) { t->origin = origin; }
void tg_tape_set_step_rows(struct tg_tape *t, int rows) { t->step_rows = rows > 0 ? rows : 0; }
int tg_tape_step_rows(const struct tg_tape *t) { return t->step_rows; }

void tg_tape_set_backward_hook(struct tg_tape *t, tg_backward_hook_fn fn, void *ctx)
{
    t->bw_hook = fn;
    t->bw_ctx = fn ? ctx : NULL;
}

struct tg_tensor *tg_node_weight(const struct tg_node *n, struct tg_tensor **a,
                                 struct tg_tensor **addend)
{
    int ad = -1;
    struct tg_tensor *w = n->op->stage_weight ? n->op->stage_weight(n, &ad) : NULL;
    if (a) *a = w ? n->src[n->nsrc - 2] : NULL;
    if (addend) *addend = w && ad >= 0 ? n->src[ad] : NULL;
    return w;
}

int tg_tape_set_anomaly(struct tg_tape *t, int on)
{
    int old = t->anomaly;
    t->anomaly = on != 0;
    return old;
}

int tg_tape_anomaly(const struct tg_tape *t) { return t->anomaly; }

int tg_tape_set_nonfinite_loss_ok(struct tg_tape *t, int ok)
{
    int old = t->nonfinite_loss_ok;
    t->nonfinite_loss_ok = ok != 0;
    return old;
}

/* ------------------------------------------------------------------ checks */

static double at(const void *p, enum tg_dtype dt, size_t i)
{
    return dt == TG_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* Index of the first non-finite element of p (n elements), or −1. A chunk is first tested on
 * the bits: a value is NaN or ±inf when its exponent bits are all ones, an integer test with
 * an OR reduction and no early exit, which the compiler vectorises; only a bad chunk is then
 * searched element by element. */
typedef uint32_t __attribute__((may_alias)) u32_alias;
typedef uint64_t __attribute__((may_alias)) u64_alias;
#define FIRST_BAD(T, U, EXP)                                                           \
    do {                                                                               \
        const U *u = p;                                                                \
        for (size_t c0 = 0; c0 < n; c0 += 1024) {                                      \
            size_t c1 = c0 + 1024 < n ? c0 + 1024 : n;                                 \
            int bad = 0;                                                               \
            for (size_t i = c0; i < c1; i++) bad |= (u[i] & (EXP)) == (EXP);           \
            if (!bad) continue;                                                        \
            for (size_t i = c0; i < c1; i++)                                           \
                if (!isfinite(((const T *)p)[i])) return (long)i;                      \
        }                                                                              \
    } while (0)

static long first_bad(const void *p, enum tg_dtype dt, size_t n)
{
    if (!p) return -1;
    if (dt == TG_F64) FIRST_BAD(double, u64_alias, 0x7ff0000000000000ULL);
    else FIRST_BAD(float, u32_alias, 0x7f800000U);
    return -1;
}

/* "step 3, layer 0, sequence 2, unit 5" for element (r, c) of node n's output-sized tensor. */
static void where(const struct tg_tape *t, const struct tg_node *n, int r, int c, char *buf,
                  size_t len)
{
    char step[48], layer[24];
    int seq = r;
    if (n->step >= 0) {
        snprintf(step, sizeof step, "step %d", n->step + 1);
    } else if (t->step_rows > 0 && n->out->rows > t->step_rows && n->out->rows % t->step_rows == 0) {
        snprintf(step, sizeof step, "step %d (all steps' rows)", r / t->step_rows + 1);
        seq = r % t->step_rows;
    } else {
        snprintf(step, sizeof step, "outside the time loop");
    }
    if (n->layer >= 0) snprintf(layer, sizeof layer, ", layer %d", n->layer);
    else layer[0] = '\0';
    snprintf(buf, len, "%s%s, sequence %d, unit %d", step, layer, seq, c);
}

/* %g, but NaN for any NaN (glibc prints "-nan" for a negative one, which means nothing). */
static const char *val_str(double v, char *buf, size_t len)
{
    if (isnan(v)) snprintf(buf, len, "NaN");
    else snprintf(buf, len, "%.9g", v);
    return buf;
}

/* The inputs' values at (r, c) of an m×k result (broadcast inputs at their place), else each
 * input's largest |value| and whether it holds a non-finite one. */
static void inputs(const struct tg_node *n, int r, int c, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int s = 0; s < n->nsrc && off + 48 < len; s++) {
        const struct tg_tensor *x = n->src[s];
        const char *name = x->name ? x->name : (x->flags & TG_PARAM) ? "param" : "";
        int rr = x->rows == 1 ? 0 : r, cc = x->cols == 1 ? 0 : c;
        int same = (x->rows == n->out->rows || x->rows == 1) && (x->cols == n->out->cols || x->cols == 1);
        if (!x->data) continue;
        if (same && rr < x->rows && cc < x->cols) {
            char v[32];
            off += (size_t)snprintf(buf + off, len - off, "%sin%d%s%s = %s", s ? ", " : "", s,
                                    *name ? " " : "", name,
                                    val_str(at(x->data, x->dtype, (size_t)rr * x->cols + cc), v, sizeof v));
        } else {
            double mx = 0;
            long bad = first_bad(x->data, x->dtype, tg_numel(x));
            for (size_t i = 0; i < tg_numel(x); i++) {
                double v = fabs(at(x->data, x->dtype, i));
                if (v > mx) mx = v;
            }
            off += (size_t)snprintf(buf + off, len - off, "%sin%d%s%s (%dx%d) max|x| = %.6g%s",
                                    s ? ", " : "", s, *name ? " " : "", name, x->rows, x->cols, mx,
                                    bad >= 0 ? " (already non-finite)" : "");
        }
        if (off >= len) break;
    }
}

static const char *origin_of(const struct tg_node *n, char *buf, size_t len)
{
    if (n->origin) snprintf(buf, len, " [%s]", n->origin);
    else buf[0] = '\0';
    return buf;
}

static int check_forward(struct tg_tape *t, const struct tg_node *n)
{
    const struct tg_tensor *y = n->out;
    long i = first_bad(y->data, y->dtype, tg_numel(y));
    if (i < 0) return 1;
    int r = (int)(i / y->cols), c = (int)(i % y->cols);
    char w[128], in[320], org[160], v[32];
    where(t, n, r, c, w, sizeof w);
    inputs(n, r, c, in, sizeof in);
    tg_op_fail(t, TG_ERR_VALUE, "anomaly: forward %s%s gave %s at %s (row %d, col %d of %dx%d) from %s",
               n->op->name, origin_of(n, org, sizeof org), val_str(at(y->data, y->dtype, (size_t)i), v, sizeof v),
               w, r, c, y->rows, y->cols, in);
    return 0;
}

static int check_backward(struct tg_tape *t, const struct tg_node *n)
{
    for (int s = 0; s < n->nsrc; s++) {
        const struct tg_tensor *x = n->src[s];
        if (!tg_requires_grad(x) || !x->grad || (x->flags & TG_PARAM)) continue;
        /* A row view's gradient is its rows of the parent's, written by the readers of the view:
         * those rows are all this node touched (checking the whole parent at every step's
         * view would make the check quadratic in T). */
        if ((n->out->flags & TG_VIEW) && n->nsrc == 1) {
            x = n->out;
            if (!x->grad) continue;
        }
        long i = first_bad(x->grad, x->dtype, tg_numel(x));
        if (i < 0) continue;
        int r = (int)(i / x->cols), c = (int)(i % x->cols);
        char w[128], in[320], org[160], dy[64] = "", v[32], v2[32];
        /* the place in the output's terms when the input has the output's shape */
        int same = x->rows == n->out->rows && x->cols == n->out->cols;
        where(t, n, same ? r : 0, same ? c : 0, w, sizeof w);
        if (same && n->out->grad)
            snprintf(dy, sizeof dy, "dy = %s, ", val_str(at(n->out->grad, x->dtype, (size_t)i), v2, sizeof v2));
        inputs(n, same ? r : 0, same ? c : 0, in, sizeof in);
        tg_op_fail(t, TG_ERR_VALUE, "anomaly: backward of %s%s gave %s in the gradient of input %d "
                   "(%dx%d) at row %d, col %d; %s: %sfrom %s", n->op->name,
                   origin_of(n, org, sizeof org), val_str(at(x->grad, x->dtype, (size_t)i), v, sizeof v), s, x->rows,
                   x->cols, r, c, w, dy, in);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------- fused regions, replayed */

/* A region's instructions as recorded (fuse.c's pending list), for the replay. */
struct anomaly_region {
    int n;
    struct tg_fuse_pending p[];
};

int tg_anomaly_may_overwrite(const struct tg_tape *t) { return !t->anomaly; }

void *tg_anomaly_keep_region(struct tg_tape *t, const struct tg_fuse_pending *p, int n)
{
    if (!t->anomaly || n <= 0) return NULL;
    struct anomaly_region *r = tg_tape_alloc(t, sizeof *r + (size_t)n * sizeof *p);
    if (!r) return NULL; /* no replay: the report names the region instead */
    r->n = n;
    memcpy(r->p, p, (size_t)n * sizeof *p);
    return r;
}

static int is_fused(const struct tg_tape *t, const struct tg_node *n)
{
    return t->fuse.fused_op && n->op == t->fuse.fused_op;
}

/* The replay's own copy of a region input: its data (a pending column slice's columns copied
 * out of the tensor it slices), a gradient of its own, the original's name. */
static struct tg_tensor *replay_input(struct tg_tape *t, struct tg_tensor *x)
{
    struct tg_tensor *y = tg_tensor_header(t, x->rows, x->cols, x->dtype);
    if (!y) return NULL;
    y->name = x->name;
    y->flags = x->flags & TG_REQUIRES_GRAD;
    if ((x->flags & TG_PENDING) && TG_PRIV(x)->fuse_idx < 0) {
        const struct tg_tensor *b = TG_PRIV(x)->fuse_base;
        size_t es = tg_dtype_size(x->dtype), w = (size_t)x->cols * es;
        if (!(y->data = tg_tape_alloc(t, tg_nbytes(x)))) return NULL;
        for (int r = 0; r < x->rows; r++)
            memcpy((char *)y->data + r * w,
                   (const char *)b->data + ((size_t)r * b->cols + (size_t)TG_PRIV(x)->fuse_off) * es, w);
    } else {
        y->data = x->data;
    }
    return y;
}

/* Nodes replaying region n's instructions unfused (forward run, results in fresh tensors),
 * tagged with n's step and layer and each instruction's own origin; with check, each is
 * checked as an unfused tape would check it. Returns the nodes, or NULL: an error was reported
 * (check) or memory ran out (the tape's error is then restored by the caller). */
static struct tg_node *replay_forward(struct tg_tape *t, const struct tg_node *n, int check, int *stop)
{
    const struct anomaly_region *r = n->args.ptr[1];
    *stop = 0;
    if (!r) return NULL;
    struct tg_node *nd = tg_tape_alloc(t, (size_t)r->n * sizeof *nd);
    struct tg_tensor **map = tg_tape_alloc(t, 4 * (size_t)r->n * sizeof *map); /* original, copy */
    struct tg_tensor **srcs = tg_tape_alloc(t, 2 * (size_t)r->n * sizeof *srcs);
    if (!nd || !map || !srcs) return NULL;
    int nmap = 0;
    for (int k = 0; k < r->n; k++) {
        const struct tg_fuse_pending *q = &r->p[k];
        struct tg_node *m = &nd[k];
        memset(m, 0, sizeof *m);
        m->op = q->op, m->nsrc = q->nsrc, m->src = srcs + 2 * k, m->args = q->args;
        m->step = n->step, m->layer = n->layer, m->index = n->index, m->origin = q->origin;
        for (int s = 0; s < q->nsrc; s++) {
            struct tg_tensor *x = q->src[s], *y = NULL;
            for (int j = 0; j < nmap && !y; j++)
                if (map[2 * j] == x) y = map[2 * j + 1];
            if (!y) {
                if (!(y = replay_input(t, x))) return NULL;
                map[2 * nmap] = x, map[2 * nmap + 1] = y, nmap++;
            }
            m->src[s] = y;
        }
        if (!(m->out = tg_tensor_header(t, q->out->rows, q->out->cols, q->out->dtype)) ||
            !(m->out->data = tg_tape_alloc(t, tg_nbytes(q->out))))
            return NULL;
        m->out->name = q->out->name;
        m->out->flags = q->out->flags & TG_REQUIRES_GRAD;
        m->out->node = m;
        map[2 * nmap] = q->out, map[2 * nmap + 1] = m->out, nmap++;
        m->op->forward(m);
        if (check && !check_forward(t, m)) {
            *stop = 1;
            return NULL;
        }
    }
    return nd;
}

/* Does any result fused node n stored hold a non-finite value? */
static int fused_results_bad(const struct tg_node *n)
{
    const struct tg_fuse_prog *p = n->args.ptr[0];
    for (int o = 0; o < p->n_out; o++)
        if (first_bad(p->out[o]->data, p->out[o]->dtype, tg_numel(p->out[o])) >= 0) return 1;
    for (int r = 0; r < p->n_reg; r++) /* saved σ/tanh values: their own rows×cols buffers */
        if (p->reg_saved[r] && p->reg_saved_ld[r] == p->cols &&
            first_bad(p->reg_saved[r], p->out[0]->dtype, (size_t)p->rows * p->cols) >= 0)
            return 1;
    return 0;
}

static void region_ops(const struct tg_node *n, char *buf, size_t len)
{
    const struct anomaly_region *r = n->args.ptr[1];
    size_t off = 0;
    buf[0] = '\0';
    for (int k = 0; r && k < r->n && off + 24 < len; k++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", k ? ", " : "", r->p[k].op->name);
}

int tg_anomaly_forward(struct tg_tape *t, const struct tg_node *n)
{
    if (!is_fused(t, n)) return check_forward(t, n);
    if (!fused_results_bad(n)) return 1;
    int stop;
    replay_forward(t, n, 1, &stop);
    if (stop) return 0;
    char ops[160], org[160];
    region_ops(n, ops, sizeof ops);
    tg_op_fail(t, TG_ERR_VALUE, "anomaly: forward of a fused region%s (%s) gave a non-finite value "
               "at step %d, layer %d (its ops replayed one by one did not reproduce it)",
               origin_of(n, org, sizeof org), ops, n->step + 1, n->layer);
    return 0;
}

/* Region n's backward made a non-finite input gradient: replay its forward, seed the results
 * it stored with the gradients they received, and run its ops' backward in reverse, checking
 * each. Returns 0 with the report if one op is found, else 1. */
static int replay_backward(struct tg_tape *t, const struct tg_node *n)
{
    const struct anomaly_region *r = n->args.ptr[1];
    const struct tg_fuse_prog *p = n->args.ptr[0];
    int stop;
    struct tg_node *nd = replay_forward(t, n, 0, &stop);
    unsigned char *reached = nd ? tg_tape_alloc(t, (size_t)r->n) : NULL;
    if (!reached) return 1;
    memset(reached, 0, (size_t)r->n);
    for (int k = 0; k < r->n; k++)
        for (int o = 0; o < p->n_out; o++)
            if (p->out[o] == r->p[k].out && p->out[o]->grad) {
                if (!tg_grad_buffer(t, nd[k].out)) return 1;
                memcpy(nd[k].out->grad, p->out[o]->grad, tg_nbytes(p->out[o]));
                reached[k] = 1;
            }
    for (int k = r->n; k-- > 0;) {
        if (!reached[k]) continue;
        struct tg_node *m = &nd[k];
        for (int s = 0; s < m->nsrc; s++) {
            if (!tg_requires_grad(m->src[s])) continue;
            if (!tg_grad_buffer(t, m->src[s])) return 1;
            for (int j = 0; j < k; j++) reached[j] |= nd[j].out == m->src[s];
        }
        m->op->backward(m);
        if (!check_backward(t, m)) return 0;
    }
    return 1;
}

int tg_anomaly_backward(struct tg_tape *t, const struct tg_node *n)
{
    if (check_backward(t, n)) return 1;
    if (!is_fused(t, n)) return 0;
    /* keep the region's report unless the replay names the op */
    char msg[sizeof t->errmsg];
    snprintf(msg, sizeof msg, "%s", t->errmsg);
    enum tg_status st = t->status;
    t->status = TG_OK;
    if (!replay_backward(t, n)) return 0;
    t->status = st;
    snprintf(t->errmsg, sizeof t->errmsg, "%s", msg);
    tg_error(st, "%s", msg);
    return 0;
}

int tg_anomaly_weights(struct tg_tape *t, struct tg_tensor *const *w, int n)
{
    for (int j = 0; j < n; j++) {
        long i = w[j]->grad ? first_bad(w[j]->grad, w[j]->dtype, tg_numel(w[j])) : -1;
        if (i < 0) continue;
        char v[32];
        tg_op_fail(t, TG_ERR_VALUE, "anomaly: the gradient of %s (summed over its uses) is %s at "
                   "row %ld, col %ld", w[j]->name ? w[j]->name : "a weight",
                   val_str(at(w[j]->grad, w[j]->dtype, (size_t)i), v, sizeof v), i / w[j]->cols, i % w[j]->cols);
        return 0;
    }
    return 1;
}
