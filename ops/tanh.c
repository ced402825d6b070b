/* tanh.c — y = tanh(x).
 *
 * Derivative from the saved output: dy/dx = 1 − tanh²(x) = 1 − y², so  dx += dy·(1 − y²).
 * float32 uses the vectorisable tg_fast_tanhf (≤ 1.3 ulp), float64 libm's tanh. */
#include "fastmath.h"
#include "op_util.h"

#define TANH_OF(v) _Generic((v), float: tg_fast_tanhf, double: tanh)(v)

#define DEF_TANH(T, S)                                                                         \
    TG_SIMD_CLONES static void tanh_fwd_##S(const T *restrict x, T *restrict y, size_t n)                        \
    {                                                                                          \
        TG_SIMD_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) y[i] = TANH_OF(x[i]);)                                \
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
    if (!tg_op_check_lazy(t, "tg_tanh", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OP_TANH, &x, 1, x->rows, x->cols, NULL);
}
