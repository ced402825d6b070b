/* concat.c — c = [x₁, x₂, …] along columns (axis 1) or rows (axis 0), any number of inputs.
 *
 * Derivative: concatenation only moves values, so each input's gradient is its own block of
 * dc:  dxₖ += dc[:, offₖ : offₖ + colsₖ]  (axis 1)  or  dc[offₖ : offₖ + rowsₖ, :]  (axis 0). */
#include "op_util.h"

void tg_concat_forward(struct tg_node *nd)
{
    struct tg_tensor *c = nd->out;
    size_t es = tg_dtype_size(c->dtype);
    unsigned char *dst = c->data;
    if (TG_ARGS(nd)->concat.axis == 0) {
        for (int k = 0; k < nd->nsrc; k++) {
            memcpy(dst, nd->src[k]->data, tg_nbytes(nd->src[k]));
            dst += tg_nbytes(nd->src[k]);
        }
        return;
    }
    size_t off = 0;
    for (int k = 0; k < nd->nsrc; k++) {
        const struct tg_tensor *x = nd->src[k];
        size_t w = (size_t)x->cols * es;
        for (int i = 0; i < c->rows; i++)
            memcpy(dst + ((size_t)i * c->cols) * es + off, (const unsigned char *)x->data + i * w, w);
        off += w;
    }
}

#define DEF_CONCAT_BWD(T, S)                                                                   \
    static void block_acc_##S(T *dx, const T *dc, int rows, int cols, int ldc)                 \
    {                                                                                          \
        for (int i = 0; i < rows; i++) {                                                       \
            const T *g = dc + (size_t)i * ldc;                                                 \
            T *d = dx + (size_t)i * cols;                                                      \
            for (int j = 0; j < cols; j++) d[j] += g[j];                                       \
        }                                                                                      \
    }
TG_BOTH_DTYPES(DEF_CONCAT_BWD)

void tg_concat_backward(struct tg_node *nd)
{
    struct tg_tensor *c = nd->out;
    size_t es = tg_dtype_size(c->dtype);
    size_t off = 0; /* in elements: row offset × cols (axis 0) or column offset (axis 1) */
    for (int k = 0; k < nd->nsrc; k++) {
        struct tg_tensor *x = nd->src[k];
        const unsigned char *g = (const unsigned char *)c->grad + off * es;
        /* equal: x's gradient is this very block (backward.c gave it to x) */
        if (x->grad && x->grad != (const void *)g)
            TG_CALL(c, block_acc, x->grad, (const void *)g, x->rows, x->cols, c->cols);
        off += TG_ARGS(nd)->concat.axis == 0 ? tg_numel(x) : (size_t)x->cols;
    }
}

/* Rows concatenation c = [x₁; x₂; …] (the output layer's stacked h_t): dxₖ is a block of dc
 * row for row. An input whose gradient does not exist yet (the concatenation is its last
 * consumer in tape order, so backward meets it first) gets that block as its gradient buffer:
 * no buffer of its own, no zeroing, no copy; its other consumers then add into the block,
 * which nothing reads any more (dc is final once its node runs). The backward above skips
 * such inputs. The engine calls this before giving the inputs gradient buffers. */
void tg_concat_before_backward(struct tg_node *nd)
{
    if (TG_ARGS(nd)->concat.axis != 0) return;
    char *g = nd->out->grad;
    for (int k = 0; k < nd->nsrc; k++) {
        struct tg_tensor *x = nd->src[k];
        if (tg_requires_grad(x) && !x->grad && !(x->flags & (TG_VIEW | TG_PARAM | TG_HEAP)))
            x->grad = g;
        g += tg_nbytes(x);
    }
}

struct tg_tensor *tg_concat(struct tg_tape *t, int axis, int n, struct tg_tensor *const *xs)
{
    if (n < 1 || !xs) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_concat: needs at least one input, got %d", n);
        return NULL;
    }
    if (!tg_op_check_inputs(t, "tg_concat", xs, n)) return NULL;
    if (axis != 0 && axis != 1) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_concat: axis must be 0 (rows) or 1 (columns), got %d "
                   "(input 0 is (%dx%d))", axis, xs[0]->rows, xs[0]->cols);
        return NULL;
    }
    long rows = xs[0]->rows, cols = xs[0]->cols;
    for (int k = 1; k < n; k++) {
        int keep = axis == 1 ? xs[k]->rows : xs[k]->cols;
        int want = axis == 1 ? xs[0]->rows : xs[0]->cols;
        if (keep != want) {
            tg_op_fail(t, TG_ERR_SHAPE, "tg_concat: input %d is (%dx%d) but input 0 is (%dx%d): "
                       "%s must agree for axis %d", k, xs[k]->rows, xs[k]->cols, xs[0]->rows,
                       xs[0]->cols, axis == 1 ? "rows" : "columns", axis);
            return NULL;
        }
        if (axis == 1) cols += xs[k]->cols;
        else rows += xs[k]->rows;
    }
    if (rows > INT32_MAX || cols > INT32_MAX) {
        tg_op_fail(t, TG_ERR_SHAPE, "tg_concat: result too large (%ldx%ld)", rows, cols);
        return NULL;
    }
    union tg_op_args args = {.concat = {axis}};
    return tg_op_emit(t, TG_OPI(TG_OP_CONCAT), xs, n, (int)rows, (int)cols, TG_NODE_ARGS(&args));
}
