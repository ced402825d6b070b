/* add.c — c = a + b and c = a − b, with a 1×n row broadcast over the other side's rows.
 *
 * Derivative: ∂c/∂a = 1, ∂c/∂b = ±1, so  da += dc,  db += ±dc.
 * A broadcast row was used once per row of c, so its gradient is the sum over those rows:
 *   db[j] += ±Σ_i dc[i][j]   (the bias gradient of a batch). */
#include "op_util.h"

#define DEF_ADD(T, S)                                                                          \
    static void addsub_fwd_##S(const T *a, int a_row, const T *b, int b_row, T *c, int m, int n, \
                               T sign)                                                         \
    {                                                                                          \
        TG_PAR_FOR((size_t)m * n,                                                              \
            for (int i = 0; i < m; i++) {                                                      \
                const T *pa = a + (a_row ? 0 : (size_t)i * n);                                 \
                const T *pb = b + (b_row ? 0 : (size_t)i * n);                                 \
                T *pc = c + (size_t)i * n;                                                     \
                for (int j = 0; j < n; j++) pc[j] = pa[j] + sign * pb[j];                      \
            })                                                                                 \
    }                                                                                          \
    static void acc_##S(T *dst, const T *g, size_t n, T sign)                                  \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) dst[i] += sign * g[i];)                             \
    }
TG_BOTH_DTYPES(DEF_ADD)

static void addsub_forward(struct tg_node *nd, double sign)
{
    const struct tg_tensor *a = nd->src[0], *b = nd->src[1];
    struct tg_tensor *c = nd->out;
    int ar = a->rows != c->rows, br = b->rows != c->rows;
    if (c->dtype == TG_F64)
        addsub_fwd_f64(a->data, ar, b->data, br, c->data, c->rows, c->cols, sign);
    else
        addsub_fwd_f32(a->data, ar, b->data, br, c->data, c->rows, c->cols, (float)sign);
}

/* Route dc into one operand: elementwise if it has c's shape, column sums if it was broadcast. */
static void route(const struct tg_tensor *c, struct tg_tensor *x, double sign)
{
    if (!x->grad) return;
    if (x->rows == c->rows) {
        if (c->dtype == TG_F64) acc_f64(x->grad, c->grad, tg_numel(c), sign);
        else acc_f32(x->grad, c->grad, tg_numel(c), (float)sign);
    } else {
        tg_colsum_acc(c, c->grad, x->grad, sign);
    }
}

void tg_add_forward(struct tg_node *nd) { addsub_forward(nd, 1.0); }
void tg_sub_forward(struct tg_node *nd) { addsub_forward(nd, -1.0); }

void tg_add_backward(struct tg_node *nd)
{
    route(nd->out, nd->src[0], 1.0);
    route(nd->out, nd->src[1], 1.0);
}

void tg_sub_backward(struct tg_node *nd)
{
    route(nd->out, nd->src[0], 1.0);
    route(nd->out, nd->src[1], -1.0);
}

static struct tg_tensor *addsub(struct tg_tape *t, enum tg_op op, const char *name,
                                const char *sym, struct tg_tensor *a, struct tg_tensor *b)
{
    struct tg_tensor *src[2] = {a, b};
    int rows, cols;
    if (!tg_op_check_lazy(t, name, src, 2)) return NULL;
    if (!tg_binary_shape(t, name, sym, a, b, &rows, &cols)) return NULL;
    return tg_op_emit(t, op, src, 2, rows, cols, NULL);
}

struct tg_tensor *tg_add(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b)
{
    return addsub(t, TG_OP_ADD, "tg_add", "+", a, b);
}

struct tg_tensor *tg_sub(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b)
{
    return addsub(t, TG_OP_SUB, "tg_sub", "-", a, b);
}
