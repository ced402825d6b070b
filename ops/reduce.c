/* reduce.c — s = Σ x and m = Σ x / n, both 1×1.
 *
 * Derivative: ∂s/∂x_i = 1 and ∂m/∂x_i = 1/n, so  dx += g  or  dx += g/n. */
#include "op_util.h"

#define DEF_REDUCE(T, S)                                                                       \
    static double sum_fwd_##S(const T *x, size_t n)                                            \
    {                                                                                          \
        double s = 0; /* accumulate in double: float32 sums of long tensors drift */           \
        for (size_t i = 0; i < n; i++) s += x[i];                                              \
        return s;                                                                              \
    }                                                                                          \
    static void fill_acc_##S(T *dx, size_t n, T g)                                             \
    {                                                                                          \
        TG_PAR_FOR(n,                                                                          \
            for (size_t i = 0; i < n; i++) dx[i] += g;)                                        \
    }
TG_BOTH_DTYPES(DEF_REDUCE)

static void reduce_forward(struct tg_node *nd, int mean)
{
    const struct tg_tensor *x = nd->src[0];
    double s = TG_CALL(x, sum_fwd, x->data, tg_numel(x));
    tg_set(nd->out, 0, 0, mean ? s / (double)tg_numel(x) : s);
}

static void reduce_backward(struct tg_node *nd, int mean)
{
    struct tg_tensor *x = nd->src[0];
    if (!x->grad) return;
    double g = tg_grad_get(nd->out, 0, 0);
    if (mean) g /= (double)tg_numel(x);
    if (x->dtype == TG_F64) fill_acc_f64(x->grad, tg_numel(x), g);
    else fill_acc_f32(x->grad, tg_numel(x), (float)g);
}

void tg_sum_forward(struct tg_node *nd) { reduce_forward(nd, 0); }
void tg_sum_backward(struct tg_node *nd) { reduce_backward(nd, 0); }
void tg_mean_forward(struct tg_node *nd) { reduce_forward(nd, 1); }
void tg_mean_backward(struct tg_node *nd) { reduce_backward(nd, 1); }

struct tg_tensor *tg_sum(struct tg_tape *t, struct tg_tensor *x)
{
    if (!tg_op_check_inputs(t, "tg_sum", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OP_SUM, &x, 1, 1, 1, NULL);
}

struct tg_tensor *tg_mean(struct tg_tape *t, struct tg_tensor *x)
{
    if (!tg_op_check_inputs(t, "tg_mean", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OP_MEAN, &x, 1, 1, 1, NULL);
}
