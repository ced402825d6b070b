/* mse.c — squared error L = s·Σ (p − y)², s = 1 (sum) or 1/n (mean, PyTorch's MSELoss).
 *
 * Derivative: ∂L/∂p = 2s(p − y), ∂L/∂y = −2s(p − y); so with g = dL:
 *   dp += 2gs(p − y),   dy −= 2gs(p − y)   (the target usually has no gradient). */
#include "op_util.h"

#define DEF_MSE(T, S)                                                                          \
    static double mse_fwd_##S(const T *p, const T *y, size_t n)                                \
    {                                                                                          \
        double s = 0;                                                                          \
        for (size_t i = 0; i < n; i++) {                                                       \
            double d = (double)p[i] - (double)y[i];                                            \
            s += d * d;                                                                        \
        }                                                                                      \
        return s;                                                                              \
    }                                                                                          \
    static void mse_bwd_##S(T *dx, const T *p, const T *y, size_t n, T k)                      \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) dx[i] += k * (p[i] - y[i]);)                        \
    }
TG_BOTH_DTYPES(DEF_MSE)

static double mse_scale(const struct tg_node *nd)
{
    return TG_ARGS(nd)->mse.reduction == TG_REDUCE_MEAN ? 1.0 / (double)tg_numel(nd->src[0]) : 1.0;
}

void tg_mse_forward(struct tg_node *nd)
{
    const struct tg_tensor *p = nd->src[0], *y = nd->src[1];
    double s = TG_CALL(p, mse_fwd, p->data, y->data, tg_numel(p));
    tg_set(nd->out, 0, 0, s * mse_scale(nd));
}

void tg_mse_backward(struct tg_node *nd)
{
    struct tg_tensor *p = nd->src[0], *y = nd->src[1];
    double k = 2.0 * tg_grad_get(nd->out, 0, 0) * mse_scale(nd);
    size_t n = tg_numel(p);
    if (p->dtype == TG_F64) {
        if (p->grad) mse_bwd_f64(p->grad, p->data, y->data, n, k);
        if (y->grad) mse_bwd_f64(y->grad, p->data, y->data, n, -k);
    } else {
        if (p->grad) mse_bwd_f32(p->grad, p->data, y->data, n, (float)k);
        if (y->grad) mse_bwd_f32(y->grad, p->data, y->data, n, (float)-k);
    }
}

struct tg_tensor *tg_mse(struct tg_tape *t, struct tg_tensor *pred, struct tg_tensor *target,
                         enum tg_reduction reduction)
{
    struct tg_tensor *src[2] = {pred, target};
    if (!tg_op_check_inputs(t, "tg_mse", src, 2)) return NULL;
    if (pred->rows != target->rows || pred->cols != target->cols) {
        tg_op_fail(t, TG_ERR_SHAPE, "tg_mse: prediction (%dx%d) and target (%dx%d) differ",
                   pred->rows, pred->cols, target->rows, target->cols);
        return NULL;
    }
    if (reduction != TG_REDUCE_SUM && reduction != TG_REDUCE_MEAN) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_mse: unknown reduction %d for (%dx%d)", (int)reduction,
                   pred->rows, pred->cols);
        return NULL;
    }
    union tg_op_args args = {.mse = {reduction}};
    return tg_op_emit(t, TG_OPI(TG_OP_MSE), src, 2, 1, 1, TG_NODE_ARGS(&args));
}
