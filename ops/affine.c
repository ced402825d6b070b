/* affine.c — y = a·x + b with constants a and b (1 − z is a = −1, b = 1; a scale is b = 0).
 *
 * Derivative: ∂y/∂x = a, so  dx += a·dy. */
#include "op_util.h"

#define DEF_AFFINE(T, S)                                                                       \
    static void affine_fwd_##S(const T *x, T *y, size_t n, T a, T b)                           \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) y[i] = a * x[i] + b;)                               \
    }                                                                                          \
    static void affine_bwd_##S(T *dx, const T *dy, size_t n, T a)                              \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) dx[i] += a * dy[i];)                                \
    }
TG_BOTH_DTYPES(DEF_AFFINE)

void tg_affine_forward(struct tg_node *nd)
{
    const struct tg_tensor *x = nd->src[0];
    double a = nd->args.affine.a, b = nd->args.affine.b;
    if (x->dtype == TG_F64) affine_fwd_f64(x->data, nd->out->data, tg_numel(x), a, b);
    else affine_fwd_f32(x->data, nd->out->data, tg_numel(x), (float)a, (float)b);
}

void tg_affine_backward(struct tg_node *nd)
{
    struct tg_tensor *x = nd->src[0];
    if (!x->grad) return;
    double a = nd->args.affine.a;
    if (x->dtype == TG_F64) affine_bwd_f64(x->grad, nd->out->grad, tg_numel(x), a);
    else affine_bwd_f32(x->grad, nd->out->grad, tg_numel(x), (float)a);
}

struct tg_tensor *tg_affine(struct tg_tape *t, struct tg_tensor *x, double a, double b)
{
    if (!tg_op_check_lazy(t, "tg_affine", &x, 1)) return NULL;
    if (!isfinite(a) || !isfinite(b)) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_affine: constants must be finite, got a=%g b=%g for "
                   "(%dx%d)", a, b, x->rows, x->cols);
        return NULL;
    }
    union tg_op_args args = {.affine = {a, b}};
    return tg_op_emit(t, TG_OP_AFFINE, &x, 1, x->rows, x->cols, &args);
}
