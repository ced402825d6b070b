/* tape.c — recording. Every op call appends one node; the tape is therefore its own topological
 * order and backward needs no graph search. Nodes, their outputs and saved data all live in
 * the tape's arena, so tg_tape_reset drops a whole step at once. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct tg_tape *tg_tape_new(size_t arena_hint)
{
    struct tg_tape *t = calloc(1, sizeof *t);
    if (!t) {
        tg_error(TG_ERR_NOMEM, "tg_tape_new: out of memory");
        return NULL;
    }
    tg_arena_init(&t->arena, arena_hint);
    t->tag_step = t->tag_layer = -1;
    return t;
}

void tg_tape_free(struct tg_tape *t)
{
    if (!t) return;
    tg_arena_free(&t->arena);
    free(t->nodes);
    free(t->fuse_scratch);
    free(t);
}

void tg_tape_reset(struct tg_tape *t)
{
    tg_arena_reset(&t->arena);
    t->n_nodes = 0;
    t->status = TG_OK;
    t->errmsg[0] = '\0';
    t->tag_step = t->tag_layer = -1;
    t->origin = NULL;
    t->walked = 0;
    tg_fuse_reset(t);
    t->fuse_cache.n = t->fuse_cache.next = t->fuse_cache.last = 0; /* its templates were in the arena */
}

int tg_tape_set_no_grad(struct tg_tape *t, int no_grad)
{
    int old = t->no_grad;
    t->no_grad = no_grad != 0;
    return old;
}

int tg_tape_no_grad(const struct tg_tape *t) { return t->no_grad; }

void tg_tape_set_tag(struct tg_tape *t, int step, int layer)
{
    t->tag_step = step;
    t->tag_layer = layer;
}

enum tg_status tg_tape_status(const struct tg_tape *t) { return t->status; }
const char *tg_tape_error(const struct tg_tape *t) { return t->errmsg; }
size_t tg_tape_num_nodes(const struct tg_tape *t) { return t->n_nodes; }

struct tg_node *tg_tape_node(const struct tg_tape *t, size_t i)
{
    return i < t->n_nodes ? t->nodes[i] : NULL;
}

size_t tg_tape_arena_used(const struct tg_tape *t) { return t->arena.used_total; }
size_t tg_tape_arena_capacity(const struct tg_tape *t) { return t->arena.capacity; }
size_t tg_tape_heap_allocs(const struct tg_tape *t) { return t->arena.heap_allocs + t->heap_allocs; }

void tg_op_fail(struct tg_tape *t, enum tg_status s, const char *fmt, ...)
{
    char buf[sizeof t->errmsg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tg_error(s, "%s", buf);
    if (t && t->status == TG_OK) {
        t->status = s;
        memcpy(t->errmsg, buf, sizeof buf);
    }
}

void *tg_tape_alloc(struct tg_tape *t, size_t bytes)
{
    void *p = tg_arena_alloc(&t->arena, bytes);
    if (!p) tg_op_fail(t, TG_ERR_NOMEM, "tg_tape_alloc: out of memory for %zu bytes", bytes);
    return p;
}

struct tg_tensor *tg_tensor_header(struct tg_tape *t, int rows, int cols, enum tg_dtype dtype)
{
    struct tg_tensor *x = tg_tape_alloc(t, sizeof *x);
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    x->rows = rows;
    x->cols = cols;
    x->dtype = dtype;
    return x;
}

/* Tensor header and data: two arena pieces, data 64-byte aligned for vector loads. */
static struct tg_tensor *arena_tensor(struct tg_tape *t, int rows, int cols, enum tg_dtype dtype,
                                      int zero)
{
    struct tg_tensor *x = tg_tensor_header(t, rows, cols, dtype);
    if (!x) return NULL;
    x->data = tg_tape_alloc(t, tg_nbytes(x));
    if (!x->data) return NULL;
    if (zero) memset(x->data, 0, tg_nbytes(x));
    return x;
}

struct tg_tensor *tg_tensor_new(struct tg_tape *t, int rows, int cols, enum tg_dtype dtype)
{
    if (rows <= 0 || cols <= 0) {
        tg_op_fail(t, TG_ERR_SHAPE, "tg_tensor_new: shape must be positive, got (%dx%d)", rows, cols);
        return NULL;
    }
    if (dtype != TG_F32 && dtype != TG_F64) {
        tg_op_fail(t, TG_ERR_DTYPE, "tg_tensor_new: unknown dtype %d", (int)dtype);
        return NULL;
    }
    struct tg_tensor *x = arena_tensor(t, rows, cols, dtype, 1);
    if (x) x->flags = TG_INPUT;
    return x;
}

struct tg_tensor *tg_detach(struct tg_tape *t, const struct tg_tensor *x)
{
    if (!x) {
        if (t->status == TG_OK) tg_op_fail(t, TG_ERR_VALUE, "tg_detach: NULL input");
        return NULL;
    }
    struct tg_tensor *xs = (struct tg_tensor *)x; /* pending in a fusion region: compute it */
    if (!tg_op_check_inputs(t, "tg_detach", &xs, 1)) return NULL;
    struct tg_tensor *y = arena_tensor(t, x->rows, x->cols, x->dtype, 0);
    if (!y) return NULL;
    memcpy(y->data, x->data, tg_nbytes(x));
    y->name = x->name;
    return y;
}

void *tg_grad_buffer(struct tg_tape *t, struct tg_tensor *x)
{
    if (!x->grad && (x->flags & TG_VIEW)) {
        /* A row view's gradient is its rows of the parent's gradient: whatever flows into the
         * view lands in the parent with no copy and no extra pass (slice.c). */
        struct tg_tensor *parent = x->node->src[0];
        char *pg = tg_grad_buffer(t, parent);
        if (pg) x->grad = pg + ((char *)x->data - (char *)parent->data);
    } else if (!x->grad && (x->grad = tg_stage_slot(x))) {
        /* already zeroed with its stage (backward.c) */
    } else if (!x->grad) {
        x->grad = tg_tape_alloc(t, tg_nbytes(x));
        if (x->grad) memset(x->grad, 0, tg_nbytes(x));
    }
    return x->grad;
}

static const char *shape_str(char *buf, size_t n, const struct tg_tensor *x)
{
    snprintf(buf, n, "(%dx%d)", x->rows, x->cols);
    return buf;
}

static int check_inputs(struct tg_tape *t, const char *opname, struct tg_tensor *const *src,
                        int nsrc, int lazy)
{
    for (int i = 0; i < nsrc; i++) {
        if (!src[i]) {
            /* An earlier op failed and already said why; stay quiet so its message survives. */
            if (t->status == TG_OK)
                tg_op_fail(t, TG_ERR_VALUE, "%s: input %d is NULL", opname, i);
            return 0;
        }
    }
    for (int i = 1; i < nsrc; i++) {
        if (src[i]->dtype != src[0]->dtype) {
            char a[32], b[32];
            tg_op_fail(t, TG_ERR_DTYPE, "%s: mixed dtypes: %s %s and %s %s", opname,
                       tg_dtype_name(src[0]->dtype), shape_str(a, sizeof a, src[0]),
                       tg_dtype_name(src[i]->dtype), shape_str(b, sizeof b, src[i]));
            return 0;
        }
    }
    /* Pending inputs (fusion region): alive, and computed now unless this op joins the region. */
    int stay = lazy && t->fuse.open && !t->no_grad;
    for (int i = 0; i < nsrc; i++) {
        if (!(src[i]->flags & (TG_PENDING | TG_REUSED))) continue;
        if (!tg_fuse_check_alive(t, opname, i, src[i])) return 0;
        if (!stay && !tg_fuse_realize(t, src[i])) return 0;
    }
    return 1;
}

int tg_op_check_inputs(struct tg_tape *t, const char *opname, struct tg_tensor *const *src,
                       int nsrc)
{
    return check_inputs(t, opname, src, nsrc, 0);
}

int tg_op_check_lazy(struct tg_tape *t, const char *opname, struct tg_tensor *const *src,
                     int nsrc)
{
    return check_inputs(t, opname, src, nsrc, 1);
}

int tg_tape_append(struct tg_tape *t, struct tg_node *n)
{
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? 2 * t->cap_nodes : 1024;
        struct tg_node **nodes = realloc(t->nodes, cap * sizeof *nodes);
        if (!nodes) {
            tg_op_fail(t, TG_ERR_NOMEM, "%s: out of memory growing the tape to %zu nodes",
                       n->op->name, cap);
            return 0;
        }
        t->nodes = nodes;
        t->cap_nodes = cap;
        t->heap_allocs++;
    }
    n->index = (uint32_t)t->n_nodes;
    t->nodes[t->n_nodes++] = n;
    return 1;
}

/* The common part of tg_op_emit, tg_op_emit_view and tg_op_emit_into: with view_data, the
 * output aliases it and no forward runs; with `given`, that header (a pending tensor being made
 * real, whose data the caller may already have allocated) is the output. */
static struct tg_tensor *emit(struct tg_tape *t, const struct tg_op_info *op,
                              struct tg_tensor *const *src, int nsrc, int rows, int cols,
                              const union tg_node_args *args, void *view_data,
                              struct tg_tensor *given)
{
    if (!view_data && !given && tg_fuse_accepts(t, op, args))
        return tg_fuse_pend(t, op, src, nsrc, rows, cols, args);
    /* Node, source list and output header in one arena piece: one bump per op. */
    size_t node_sz = (sizeof(struct tg_node) + 15) & ~(size_t)15;
    size_t src_sz = ((size_t)nsrc * sizeof(struct tg_tensor *) + 15) & ~(size_t)15;
    unsigned char *mem = tg_tape_alloc(t, node_sz + src_sz + (given ? 0 : sizeof(struct tg_tensor)));
    if (!mem) return NULL;
    struct tg_node *n = (struct tg_node *)mem;
    struct tg_tensor *out = given ? given : (struct tg_tensor *)(mem + node_sz + src_sz);
    n->src = (struct tg_tensor **)(mem + node_sz);
    n->nsrc = nsrc;
    n->op = op;
    n->out = out;
    if (args) n->args = *args;
    else memset(&n->args, 0, sizeof n->args);
    n->step = t->tag_step;
    n->layer = t->tag_layer;
    n->origin = t->origin;
    n->index = (uint32_t)t->n_nodes;
    if (given) {
        out->flags &= ~(unsigned)(TG_PENDING | TG_REQUIRES_GRAD);
        TG_PRIV(out)->fuse_base = NULL;
    } else {
        memset(out, 0, sizeof *out);
        out->rows = rows;
        out->cols = cols;
        out->dtype = src[0]->dtype;
    }
    if (view_data) {
        out->data = view_data;
        out->flags = TG_VIEW;
    } else if (!out->data) {
        out->data = tg_tape_alloc(t, tg_nbytes(out));
        if (!out->data) return NULL;
    }
    int req = 0;
    for (int i = 0; i < nsrc; i++) {
        n->src[i] = src[i];
        req |= tg_requires_grad(src[i]);
    }
    n->stage_row = 0;
    if (!view_data) op->forward(n);
    if (t->anomaly && !view_data && !tg_anomaly_forward(t, n)) return NULL; /* observe.c */
    if (t->no_grad) { /* computed, not recorded: no history, no gradient */
        if (view_data) src[0]->flags |= TG_ALIASED; /* a reader the tape cannot see */
        out->flags &= ~(unsigned)TG_VIEW;
        return out;
    }
    if (req) out->flags |= TG_REQUIRES_GRAD;
    out->node = n;
    if (!tg_tape_append(t, n)) return NULL;
    return out;
}

struct tg_tensor *tg_op_emit(struct tg_tape *t, const struct tg_op_info *op,
                             struct tg_tensor *const *src, int nsrc, int rows, int cols,
                             const union tg_node_args *args)
{
    return emit(t, op, src, nsrc, rows, cols, args, NULL, NULL);
}

struct tg_tensor *tg_op_emit_view(struct tg_tape *t, const struct tg_op_info *op,
                                  struct tg_tensor *src, int rows, int cols,
                                  const union tg_node_args *args, void *data)
{
    return emit(t, op, &src, 1, rows, cols, args, data, NULL);
}

struct tg_tensor *tg_op_emit_into(struct tg_tape *t, const struct tg_op_info *op,
                                  struct tg_tensor *const *src, int nsrc,
                                  const union tg_node_args *args, struct tg_tensor *out)
{
    return emit(t, op, src, nsrc, out->rows, out->cols, args, NULL, out);
}
