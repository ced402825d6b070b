/* slice.c — y = x[:, start:end] (axis 1) or x[start:end, :] (axis 0).
 *
 * Derivative: y is a block of x, so  dx[block] += dy  and nothing elsewhere. The backward adds
 * straight into that region of x's gradient: splitting a T·B-row projection into T step slices
 * costs O(size of each slice), never a full-size temporary per slice (which would be O(T²)).
 *
 * A row slice of a row-major tensor is already contiguous, so it is recorded as a view: its
 * data are x's rows and its gradient buffer is that region of x's gradient (tg_grad_buffer), so
 * consumers accumulate into dx directly and both forward and backward do nothing here. Column
 * slices (gate blocks) are strided and are copied. */
#include "op_util.h"

void tg_slice_forward(struct tg_node *nd)
{
    const struct tg_tensor *x = nd->src[0];
    struct tg_tensor *y = nd->out;
    size_t es = tg_dtype_size(x->dtype);
    int start = TG_ARGS(nd)->slice.start;
    if (TG_ARGS(nd)->slice.axis == 0) {
        memcpy(y->data, (const unsigned char *)x->data + (size_t)start * x->cols * es, tg_nbytes(y));
        return;
    }
    for (int i = 0; i < y->rows; i++)
        memcpy((unsigned char *)y->data + (size_t)i * y->cols * es,
               (const unsigned char *)x->data + ((size_t)i * x->cols + start) * es,
               (size_t)y->cols * es);
}

#define DEF_SLICE_BWD(T, S)                                                                    \
    static void slice_bwd_##S(T *dx, int ldx, const T *dy, int rows, int cols)                 \
    {                                                                                          \
        TG_PAR_FOR((size_t)rows * cols,                                                        \
            for (int i = 0; i < rows; i++) {                                                   \
                T *d = dx + (size_t)i * ldx;                                                   \
                const T *g = dy + (size_t)i * cols;                                            \
                for (int j = 0; j < cols; j++) d[j] += g[j];                                   \
            })                                                                                 \
    }
TG_BOTH_DTYPES(DEF_SLICE_BWD)

void tg_slice_backward(struct tg_node *nd)
{
    struct tg_tensor *x = nd->src[0], *y = nd->out;
    if (!x->grad || (y->flags & TG_VIEW)) return; /* a view's gradient already is x's region */
    size_t es = tg_dtype_size(x->dtype);
    int start = TG_ARGS(nd)->slice.start;
    size_t off = TG_ARGS(nd)->slice.axis == 0 ? (size_t)start * x->cols : (size_t)start;
    void *dx = (unsigned char *)x->grad + off * es;
    TG_CALL(y, slice_bwd, dx, x->cols, y->grad, y->rows, y->cols);
}

struct tg_tensor *tg_slice(struct tg_tape *t, struct tg_tensor *x, int axis, int start, int end)
{
    if (!tg_op_check_inputs(t, "tg_slice", &x, 1)) return NULL;
    if (axis != 0 && axis != 1) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_slice: axis must be 0 (rows) or 1 (columns), got %d for "
                   "(%dx%d)", axis, x->rows, x->cols);
        return NULL;
    }
    int len = axis == 1 ? x->cols : x->rows;
    if (start < 0 || end > len || start >= end) {
        tg_op_fail(t, TG_ERR_SHAPE, "tg_slice: range [%d, %d) does not fit %s 0..%d of (%dx%d)",
                   start, end, axis == 1 ? "columns" : "rows", len, x->rows, x->cols);
        return NULL;
    }
    union tg_op_args args = {.slice = {axis, start, end}};
    if (axis == 0)
        return tg_op_emit_view(t, TG_OPI(TG_OP_SLICE), x, end - start, x->cols, TG_NODE_ARGS(&args),
                               (char *)x->data + (size_t)start * x->cols * tg_dtype_size(x->dtype));
    return tg_op_emit(t, TG_OPI(TG_OP_SLICE), &x, 1, x->rows, end - start, TG_NODE_ARGS(&args));
}
