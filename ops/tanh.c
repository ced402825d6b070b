/* tanh.c — y = tanh(x).
 *
 * Derivative from the saved output: dy/dx = 1 − tanh²(x) = 1 − y², so  dx += dy·(1 − y²). */
#include "op_util.h"

#define DEF_TANH(T, S)                                                                         \
    static void tanh_fwd_##S(const T *x, T *y, size_t n)                                       \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) y[i] = (T)tanh(x[i]);)                              \
    }                                                                                          \
    static void tanh_bwd_##S(T *dx, const T *y, const T *dy, size_t n)                         \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) dx[i] += dy[i] * (1 - y[i] * y[i]);)                \
    }
TG_BOTH_DTYPES(DEF_TANH)

void tg_tanh_forward(struct tg_node *nd)
{
    TG_CALL(nd->out, tanh_fwd, nd->src[0]->data, nd->out->data, tg_numel(nd->out));
}

void tg_tanh_backward(struct tg_node *nd)
{
    struct tg_tensor *x = nd->src[0], *y = nd->out;
    if (x->grad) TG_CALL(y, tanh_bwd, x->grad, y->data, y->grad, tg_numel(y));
}

struct tg_tensor *tg_tanh(struct tg_tape *t, struct tg_tensor *x)
{
    if (!tg_op_check_inputs(t, "tg_tanh", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OP_TANH, &x, 1, x->rows, x->cols, NULL);
}
