/* softmax_xent.c — fused softmax + cross-entropy with integer labels.
 *
 * For row i with logits l and label y:  p = softmax(l),  loss_i = −log p_y = logsumexp(l) − l_y.
 * Computed as m = max_j l_j,  logsumexp = m + log Σ_j e^{l_j − m}: every exponent is ≤ 0, so
 * logits of ±1000 give a finite loss and finite probabilities.
 * Reduction: sum over rows, or mean over the rows that carry a label. A label of −1 marks a
 * row without loss (padding); such rows get no gradient.
 *
 * Derivative (the softmax Jacobian collapses against the one-hot target):
 *   ∂loss_i/∂l_j = p_j − [j = y],   so  dl[i][j] += g·s·(p[i][j] − [j = y_i]),
 * with g the incoming gradient of the 1×1 loss and s = 1 (sum) or 1/n_labelled (mean).
 * p is saved by the forward pass in the arena.
 * float32 takes e^x from tg_fast_expf (≤ 2 ulp, vectorised: libm's scalar exp per element was
 * 14–18% of a T100·B1·H8 step); float64 keeps libm's exp, which gradient checks compare to the
 * last bit. The exponentials are written in one loop and summed (in double, in order) in the
 * next, so the first vectorises. */
#include "fastmath.h"
#include "op_util.h"

static inline float xent_exp_f32(float x) { return tg_fast_expf(x); }
static inline double xent_exp_f64(double x) { return exp(x); }

/* Σ_j e_j in double. float32: four interleaved partial sums (four independent add chains
 * instead of one; the order changes only the last bits of a double that is then rounded to
 * float). float64 adds in order, as its gradient checks were written against. */
static inline double xent_sum_f32(const float *e, int c)
{
    double s[4] = {0, 0, 0, 0};
    int j = 0;
    for (; j + 4 <= c; j += 4)
        for (int k = 0; k < 4; k++) s[k] += e[j + k];
    for (; j < c; j++) s[0] += e[j];
    return (s[0] + s[1]) + (s[2] + s[3]);
}
static inline double xent_sum_f64(const double *e, int c)
{
    double s = 0;
    for (int j = 0; j < c; j++) s += e[j];
    return s;
}

/* max_j l_j as four interleaved running maxima, then their max: the same value as one running
 * max (a max does not depend on order; a NaN l_0 stays in all four and wins, later NaNs lose
 * every compare in both), with four independent compare chains instead of one. */
#define DEF_ROW_MAX(T, S)                                                                      \
    static inline T row_max_##S(const T *l, int c)                                             \
    {                                                                                          \
        T m[4] = {l[0], l[0], l[0], l[0]};                                                     \
        int j = 1;                                                                             \
        for (; j + 4 <= c; j += 4)                                                             \
            for (int k = 0; k < 4; k++) m[k] = l[j + k] > m[k] ? l[j + k] : m[k];              \
        for (; j < c; j++) m[0] = l[j] > m[0] ? l[j] : m[0];                                   \
        T r = m[0];                                                                            \
        for (int k = 1; k < 4; k++) r = m[k] > r ? m[k] : r;                                   \
        return r;                                                                              \
    }
TG_BOTH_DTYPES(DEF_ROW_MAX)

#define DEF_XENT(T, S)                                                                         \
    static double xent_fwd_##S(const T *l, T *p, const int32_t *y, int n, int c)               \
    {                                                                                          \
        double total = 0;                                                                      \
        for (int i = 0; i < n; i++) {                                                          \
            const T *li = l + (size_t)i * c;                                                   \
            T *pi = p + (size_t)i * c;                                                         \
            T m = row_max_##S(li, c);                                                          \
            for (int j = 0; j < c; j++) pi[j] = xent_exp_##S(li[j] - m);                       \
            double s = xent_sum_##S(pi, c);                                                    \
            T inv = (T)(1.0 / s);                                                              \
            for (int j = 0; j < c; j++) pi[j] *= inv;                                          \
            if (y[i] >= 0) total += (double)m + log(s) - (double)li[y[i]];                     \
        }                                                                                      \
        return total;                                                                          \
    }                                                                                          \
    static void xent_bwd_##S(T *dl, const T *p, const int32_t *y, int n, int c, T scale)       \
    {                                                                                          \
        TG_PAR_FOR((size_t)n * c,                                                              \
            for (int i = 0; i < n; i++) {                                                      \
                if (y[i] < 0) continue;                                                        \
                const T *pi = p + (size_t)i * c;                                               \
                T *di = dl + (size_t)i * c;                                                    \
                for (int j = 0; j < c; j++) di[j] += scale * pi[j];                            \
                di[y[i]] -= scale;                                                             \
            })                                                                                 \
    }
TG_BOTH_DTYPES(DEF_XENT)

static int labelled_rows(const int32_t *y, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) k += y[i] >= 0;
    return k;
}

void tg_softmax_xent_forward(struct tg_node *nd)
{
    const struct tg_tensor *l = nd->src[0];
    const int32_t *y = TG_ARGS(nd)->xent.labels;
    double total = TG_CALL(l, xent_fwd, l->data, TG_ARGS(nd)->xent.probs, y, l->rows, l->cols);
    if (TG_ARGS(nd)->xent.reduction == TG_REDUCE_MEAN) {
        int k = labelled_rows(y, l->rows);
        total = k ? total / k : 0.0; /* no labelled row: no loss (PyTorch would give NaN) */
    }
    tg_set(nd->out, 0, 0, total);
}

void tg_softmax_xent_backward(struct tg_node *nd)
{
    struct tg_tensor *l = nd->src[0];
    if (!l->grad) return;
    const int32_t *y = TG_ARGS(nd)->xent.labels;
    double scale = tg_grad_get(nd->out, 0, 0);
    if (TG_ARGS(nd)->xent.reduction == TG_REDUCE_MEAN) {
        int k = labelled_rows(y, l->rows);
        if (!k) return;
        scale /= k;
    }
    if (l->dtype == TG_F64)
        xent_bwd_f64(l->grad, TG_ARGS(nd)->xent.probs, y, l->rows, l->cols, scale);
    else
        xent_bwd_f32(l->grad, TG_ARGS(nd)->xent.probs, y, l->rows, l->cols, (float)scale);
}

struct tg_tensor *tg_softmax_xent(struct tg_tape *t, struct tg_tensor *logits,
                                  const int32_t *labels, enum tg_reduction reduction)
{
    if (!tg_op_check_inputs(t, "tg_softmax_xent", &logits, 1)) return NULL;
    if (!labels) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_softmax_xent: labels are NULL for logits (%dx%d)",
                   logits->rows, logits->cols);
        return NULL;
    }
    if (reduction != TG_REDUCE_SUM && reduction != TG_REDUCE_MEAN) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_softmax_xent: unknown reduction %d for logits (%dx%d)",
                   (int)reduction, logits->rows, logits->cols);
        return NULL;
    }
    for (int i = 0; i < logits->rows; i++) {
        if (labels[i] < -1 || labels[i] >= logits->cols) {
            tg_op_fail(t, TG_ERR_VALUE, "tg_softmax_xent: label %d at row %d out of range [0, %d) "
                       "for logits (%dx%d) (-1 marks a row without loss)", (int)labels[i], i,
                       logits->cols, logits->rows, logits->cols);
            return NULL;
        }
    }
    /* Labels are copied (the caller's buffer may change before backward); p is saved. */
    int32_t *y = tg_tape_alloc(t, (size_t)logits->rows * sizeof *y);
    void *p = tg_tape_alloc(t, tg_nbytes(logits));
    if (!y || !p) return NULL;
    memcpy(y, labels, (size_t)logits->rows * sizeof *y);
    union tg_op_args args = {.xent = {y, p, reduction}};
    return tg_op_emit(t, TG_OPI(TG_OP_SOFTMAX_XENT), &logits, 1, 1, 1, TG_NODE_ARGS(&args));
}
