/* reduce.c — s = Σ x and m = Σ x / n, both 1×1; and their per-row forms (below).
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
    return tg_op_emit(t, TG_OPI(TG_OP_SUM), &x, 1, 1, 1, NULL);
}

struct tg_tensor *tg_mean(struct tg_tape *t, struct tg_tensor *x)
{
    if (!tg_op_check_inputs(t, "tg_mean", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OPI(TG_OP_MEAN), &x, 1, 1, 1, NULL);
}

/* Row reductions r = Σ_j x[i][j] and m = r / n over the n columns of each row: B×n → B×1.
 * Derivative: ∂r_i/∂x_ij = 1 and ∂m_i/∂x_ij = 1/n, so  dx[i][j] += g[i]  or  g[i]/n.
 * Each row is summed in double (float32 rows of thousands of units drift otherwise). */
#define DEF_ROW_REDUCE(T, S)                                                                   \
    static void row_sum_fwd_##S(const T *x, T *y, int m, int n, double scale)                  \
    {                                                                                          \
        TG_PAR_FOR((size_t)m * n, for (int i = 0; i < m; i++) {                                \
            double s = 0;                                                                      \
            const T *xi = x + (size_t)i * n;                                                   \
            for (int j = 0; j < n; j++) s += xi[j];                                            \
            y[i] = (T)(s * scale);                                                             \
        })                                                                                     \
    }                                                                                          \
    static void row_sum_bwd_##S(T *dx, const T *g, int m, int n, T scale)                      \
    {                                                                                          \
        TG_PAR_FOR((size_t)m * n, for (int i = 0; i < m; i++) {                                \
            T gi = g[i] * scale;                                                               \
            T *d = dx + (size_t)i * n;                                                         \
            for (int j = 0; j < n; j++) d[j] += gi;                                            \
        })                                                                                     \
    }
TG_BOTH_DTYPES(DEF_ROW_REDUCE)

static void row_reduce_forward(struct tg_node *nd, int mean)
{
    const struct tg_tensor *x = nd->src[0];
    double scale = mean ? 1.0 / x->cols : 1.0;
    TG_CALL(x, row_sum_fwd, x->data, nd->out->data, x->rows, x->cols, scale);
}

static void row_reduce_backward(struct tg_node *nd, int mean)
{
    struct tg_tensor *x = nd->src[0];
    if (!x->grad) return;
    double scale = mean ? 1.0 / x->cols : 1.0;
    if (x->dtype == TG_F64) row_sum_bwd_f64(x->grad, nd->out->grad, x->rows, x->cols, scale);
    else row_sum_bwd_f32(x->grad, nd->out->grad, x->rows, x->cols, (float)scale);
}

void tg_row_sum_forward(struct tg_node *nd) { row_reduce_forward(nd, 0); }
void tg_row_sum_backward(struct tg_node *nd) { row_reduce_backward(nd, 0); }
void tg_row_mean_forward(struct tg_node *nd) { row_reduce_forward(nd, 1); }
void tg_row_mean_backward(struct tg_node *nd) { row_reduce_backward(nd, 1); }

struct tg_tensor *tg_row_sum(struct tg_tape *t, struct tg_tensor *x)
{
    if (!tg_op_check_inputs(t, "tg_row_sum", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OPI(TG_OP_ROW_SUM), &x, 1, x->rows, 1, NULL);
}

struct tg_tensor *tg_row_mean(struct tg_tape *t, struct tg_tensor *x)
{
    if (!tg_op_check_inputs(t, "tg_row_mean", &x, 1)) return NULL;
    return tg_op_emit(t, TG_OPI(TG_OP_ROW_MEAN), &x, 1, x->rows, 1, NULL);
}
