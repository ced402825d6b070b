/* mul.c — elementwise product c = a ⊙ b (either side may be a broadcast 1×n row).
 *
 * Derivative: ∂c/∂a = b, ∂c/∂b = a, so  da += dc ⊙ b,  db += dc ⊙ a;
 * a broadcast row sums its terms over the rows: da[j] += Σ_i dc[i][j]·b[i][j].
 * x ⊙ x (both inputs the same tensor) needs no care: both terms land in the same buffer. */
#include "op_util.h"

#define DEF_MUL(T, S)                                                                          \
    static void mul_fwd_##S(const T *a, int ar, const T *b, int br, T *c, int m, int n)        \
    {                                                                                          \
        TG_PAR_FOR((size_t)m * n,                                                              \
            for (int i = 0; i < m; i++) {                                                      \
                const T *pa = a + (ar ? 0 : (size_t)i * n);                                    \
                const T *pb = b + (br ? 0 : (size_t)i * n);                                    \
                T *pc = c + (size_t)i * n;                                                     \
                for (int j = 0; j < n; j++) pc[j] = pa[j] * pb[j];                             \
            })                                                                                 \
    }                                                                                          \
    /* dx += dc ⊙ other; rows of dx are shared when x was broadcast (xr), so only then serial */ \
    static void mul_bwd_##S(T *dx, int xr, const T *other, int orow, const T *dc, int m, int n) \
    {                                                                                          \
        if (xr) {                                                                              \
            for (int i = 0; i < m; i++) {                                                      \
                const T *po = other + (orow ? 0 : (size_t)i * n);                              \
                const T *pg = dc + (size_t)i * n;                                              \
                for (int j = 0; j < n; j++) dx[j] += pg[j] * po[j];                            \
            }                                                                                  \
            return;                                                                            \
        }                                                                                      \
        TG_PAR_FOR((size_t)m * n,                                                              \
            for (int i = 0; i < m; i++) {                                                      \
                const T *po = other + (orow ? 0 : (size_t)i * n);                              \
                const T *pg = dc + (size_t)i * n;                                              \
                T *px = dx + (size_t)i * n;                                                    \
                for (int j = 0; j < n; j++) px[j] += pg[j] * po[j];                            \
            })                                                                                 \
    }
TG_BOTH_DTYPES(DEF_MUL)

void tg_mul_forward(struct tg_node *nd)
{
    const struct tg_tensor *a = nd->src[0], *b = nd->src[1];
    struct tg_tensor *c = nd->out;
    int ar = a->rows != c->rows, br = b->rows != c->rows;
    TG_CALL(c, mul_fwd, a->data, ar, b->data, br, c->data, c->rows, c->cols);
}

void tg_mul_backward(struct tg_node *nd)
{
    struct tg_tensor *a = nd->src[0], *b = nd->src[1], *c = nd->out;
    int ar = a->rows != c->rows, br = b->rows != c->rows;
    if (a->grad) TG_CALL(c, mul_bwd, a->grad, ar, b->data, br, c->grad, c->rows, c->cols);
    if (b->grad) TG_CALL(c, mul_bwd, b->grad, br, a->data, ar, c->grad, c->rows, c->cols);
}

struct tg_tensor *tg_mul(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b)
{
    struct tg_tensor *src[2] = {a, b};
    int rows, cols;
    if (!tg_op_check_lazy(t, "tg_mul", src, 2)) return NULL;
    if (!tg_binary_shape(t, "tg_mul", "*", a, b, &rows, &cols)) return NULL;
    return tg_op_emit(t, TG_OP_MUL, src, 2, rows, cols, NULL);
}
