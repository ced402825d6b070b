/* sigmoid.c — y = σ(x) = 1 / (1 + e^{−x}).
 *
 * float64, without overflow: for x < 0 use e^{x} / (1 + e^{x}), which never forms e^{+big}.
 * float32: the branch-free, vectorisable tg_fast_sigmoidf (clamps instead; ≤ 2.5 ulp).
 * Derivative from the saved output: σ'(x) = σ(x)(1 − σ(x)), so  dx += dy·y·(1 − y). */
#include "fastmath.h"
#include "op_util.h"

#define SIGMOID_OF(v) _Generic((v), float: tg_fast_sigmoidf, double: tg_sigmoid_f64)(v)

#define DEF_SIGMOID(T, S)                                                                      \
    TG_SIMD_CLONES static void sigmoid_fwd_##S(const T *restrict x, T *restrict y, size_t n)                     \
    {                                                                                          \
        TG_SIMD_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) y[i] = SIGMOID_OF(x[i]);)                           \
    }                                                                                          \
    static void sigmoid_bwd_##S(T *dx, const T *y, const T *dy, size_t n)                      \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) dx[i] += dy[i] * y[i] * (1 - y[i]);)                \
    }
TG_BOTH_DTYPES(DEF_SIGMOID)

void tg_sigmoid_forward(struct tg_node *nd)
{
    TG_CALL(nd->out, sigmoid_fwd, nd->src[0]->data, nd->out->data, tg_numel(nd->out));
}

void tg_sigmoid_backward(struct tg_node *nd)
{
    struct tg_tensor *x = nd->src[0], *y = nd->out;
    if (x->grad) TG_CALL(y, sigmoid_bwd, x->grad, y->data, y->grad, tg_numel(y));
}

struct tg_tensor *tg_sigmoid(struct tg_tape *t, struct tg_tensor *x)
{
    if (!tg_op_check_lazy(t, "tg_sigmoid", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OP_SIGMOID, &x, 1, x->rows, x->cols, NULL);
}
