/* relu.c — y = max(x, 0).
 *
 * Derivative: 1 where x > 0, 0 where x < 0; at the kink x = 0 we take 0 (PyTorch's choice),
 * so  dx += dy·[x > 0]. */
#include "op_util.h"

#define DEF_RELU(T, S)                                                                         \
    static void relu_fwd_##S(const T *x, T *y, size_t n)                                       \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0;)                        \
    }                                                                                          \
    static void relu_bwd_##S(T *dx, const T *x, const T *dy, size_t n)                         \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) dx[i] += x[i] > 0 ? dy[i] : 0;)                     \
    }
TG_BOTH_DTYPES(DEF_RELU)

void tg_relu_forward(struct tg_node *nd)
{
    TG_CALL(nd->out, relu_fwd, nd->src[0]->data, nd->out->data, tg_numel(nd->out));
}

void tg_relu_backward(struct tg_node *nd)
{
    struct tg_tensor *x = nd->src[0], *y = nd->out;
    if (x->grad) TG_CALL(y, relu_bwd, x->grad, x->data, y->grad, tg_numel(y));
}

struct tg_tensor *tg_relu(struct tg_tape *t, struct tg_tensor *x)
{
    if (!tg_op_check_lazy(t, "tg_relu", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OP_RELU, &x, 1, x->rows, x->cols, NULL);
}
