/* matmul.c — C = op(A)·op(B) through CBLAS, op(X) = X or Xᵀ.
 *
 * Shapes: op(A) is m×k, op(B) is k×n, C is m×n.
 * Derivative (from dC = dL/dC):  d op(A) = dC·op(B)ᵀ,   d op(B) = op(A)ᵀ·dC,
 * and undoing the transposes:
 *   trans_a = 0:  dA += dC·op(B)ᵀ          trans_a = 1:  dA += op(B)·dCᵀ
 *   trans_b = 0:  dB += op(A)ᵀ·dC          trans_b = 1:  dB += dCᵀ·op(A)
 * Every update is one GEMM with β = 1 straight into the existing gradient buffer: a weight used
 * at every time step accumulates its per-step terms with no temporary. */
#include <string.h>

#include "op_util.h"

void tg_matmul_forward(struct tg_node *nd)
{
    const struct tg_tensor *A = nd->src[0], *B = nd->src[1];
    struct tg_tensor *C = nd->out;
    int ta = TG_ARGS(nd)->matmul.trans_a, tb = TG_ARGS(nd)->matmul.trans_b;
    int k = ta ? A->rows : A->cols;
    tg_gemm(C->dtype, ta, tb, C->rows, C->cols, k, A->data, A->cols, B->data, B->cols, 0.0, C->data,
         C->cols);
}

/* The weight a use may stage (backward.c): W in x·Wᵀ (matmul) or C + x·Wᵀ (addmm, whose addend
 * C is input 0), W a parameter. */
struct tg_tensor *tg_product_stage_weight(const struct tg_node *nd, int *addend)
{
    int wi = nd->nsrc - 1;
    struct tg_tensor *w = nd->src[wi];
    *addend = nd->nsrc == 3 ? 0 : -1;
    if (!(w->flags & TG_PARAM) || !TG_ARGS(nd)->matmul.trans_b || TG_ARGS(nd)->matmul.trans_a)
        return NULL;
    return w;
}

/* The gradients of C = op(A)·op(B) with respect to A and B (shared by matmul and addmm). */
static void product_backward(struct tg_node *nd, struct tg_tensor *A, struct tg_tensor *B)
{
    struct tg_tensor *C = nd->out;
    int ta = TG_ARGS(nd)->matmul.trans_a, tb = TG_ARGS(nd)->matmul.trans_b;
    int m = C->rows, n = C->cols, k = ta ? A->rows : A->cols;
    if (A->grad) {
        if (!ta) tg_gemm(C->dtype, 0, !tb, m, k, n, C->grad, n, B->data, B->cols, 1.0, A->grad, A->cols);
        else tg_gemm(C->dtype, tb, 1, k, m, n, B->data, B->cols, C->grad, n, 1.0, A->grad, A->cols);
    }
    void *dc_rows, *a_rows;
    if (B->grad && tb && !ta && tg_stage_rows(nd, &dc_rows, &a_rows)) {
        /* Deferred (see struct tg_grad_stage): this use's rows of the stack hold dC already
         * (its gradient was allocated there) unless it existed before backward began; A is
         * copied next to it; backward.c runs the GEMM. */
        size_t es = tg_dtype_size(C->dtype);
        if (dc_rows != C->grad) memcpy(dc_rows, C->grad, (size_t)m * n * es);
        memcpy(a_rows, A->data, (size_t)m * k * es);
    } else if (B->grad) {
        if (!tb) tg_gemm(C->dtype, !ta, 0, k, n, m, A->data, A->cols, C->grad, n, 1.0, B->grad, B->cols);
        else tg_gemm(C->dtype, 1, ta, n, k, m, C->grad, n, A->data, A->cols, 1.0, B->grad, B->cols);
    }
}

void tg_matmul_backward(struct tg_node *nd) { product_backward(nd, nd->src[0], nd->src[1]); }

/* Shape of op(a)·op(b) into *m, *n; 0 and an error naming `name` if the inner sizes differ. */
static int product_shape(struct tg_tape *t, const char *name, const struct tg_tensor *a,
                         const struct tg_tensor *b, int ta, int tb, int *m, int *n)
{
    int ka = ta ? a->rows : a->cols, kb = tb ? b->cols : b->rows;
    *m = ta ? a->cols : a->rows;
    *n = tb ? b->rows : b->cols;
    if (ka == kb) return 1;
    tg_op_fail(t, TG_ERR_SHAPE, "%s: inner dimensions differ: (%dx%d)%s @ (%dx%d)%s", name,
               a->rows, a->cols, ta ? "^T" : "", b->rows, b->cols, tb ? "^T" : "");
    return 0;
}

struct tg_tensor *tg_matmul(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b,
                            int trans_a, int trans_b)
{
    struct tg_tensor *src[2] = {a, b};
    int m, n;
    if (!tg_op_check_inputs(t, "tg_matmul", src, 2)) return NULL;
    if (!product_shape(t, "tg_matmul", a, b, trans_a, trans_b, &m, &n)) return NULL;
    union tg_op_args args = {.matmul = {trans_a != 0, trans_b != 0}};
    return tg_op_emit(t, TG_OPI(TG_OP_MATMUL), src, 2, m, n, TG_NODE_ARGS(&args));
}

/* addmm — D = C + op(A)·op(B), GEMM's own form: D starts as C (a full m×n matrix, or a 1×n
 * row such as a bias repeated on every row) and the product is added with β = 1, so
 * x·Wᵀ + b and xp + h·W_hhᵀ are one op and one pass over memory instead of two.
 *
 * Derivative: ∂D/∂C = 1, so  dC += dD  (a broadcast row sums over rows: db[j] += Σ_i dD[i][j]);
 * A and B get exactly matmul's gradients (above), with dD in place of dC. */
void tg_addmm_forward(struct tg_node *nd)
{
    const struct tg_tensor *C = nd->src[0], *A = nd->src[1], *B = nd->src[2];
    struct tg_tensor *D = nd->out;
    size_t row = (size_t)D->cols * tg_dtype_size(D->dtype);
    if (C->rows == D->rows) {
        memcpy(D->data, C->data, tg_nbytes(D));
    } else {
        for (int i = 0; i < D->rows; i++) memcpy((char *)D->data + i * row, C->data, row);
    }
    int ta = TG_ARGS(nd)->matmul.trans_a, tb = TG_ARGS(nd)->matmul.trans_b;
    int k = ta ? A->rows : A->cols;
    tg_gemm(D->dtype, ta, tb, D->rows, D->cols, k, A->data, A->cols, B->data, B->cols, 1.0,
            D->data, D->cols);
}

void tg_addmm_backward(struct tg_node *nd)
{
    struct tg_tensor *C = nd->src[0], *D = nd->out;
    if (C->grad && C->grad != D->grad) { /* equal: dC is dD's very rows (backward.c) */
        if (C->rows == D->rows) {
            size_t n = tg_numel(D);
            if (D->dtype == TG_F64) {
                double *dc = C->grad;
                const double *dd = D->grad;
                for (size_t i = 0; i < n; i++) dc[i] += dd[i];
            } else {
                float *dc = C->grad;
                const float *dd = D->grad;
                for (size_t i = 0; i < n; i++) dc[i] += dd[i];
            }
        } else {
            tg_colsum_acc(D, D->grad, C->grad, 1.0);
        }
    }
    product_backward(nd, nd->src[1], nd->src[2]);
}

struct tg_tensor *tg_addmm(struct tg_tape *t, struct tg_tensor *c, struct tg_tensor *a,
                           struct tg_tensor *b, int trans_a, int trans_b)
{
    struct tg_tensor *src[3] = {c, a, b};
    int m, n;
    if (!tg_op_check_inputs(t, "tg_addmm", src, 3)) return NULL;
    if (!product_shape(t, "tg_addmm", a, b, trans_a, trans_b, &m, &n)) return NULL;
    if (c->cols != n || (c->rows != m && c->rows != 1)) {
        tg_op_fail(t, TG_ERR_SHAPE, "tg_addmm: addend (%dx%d) does not fit the product (%dx%d) "
                   "of (%dx%d)%s @ (%dx%d)%s", c->rows, c->cols, m, n, a->rows, a->cols,
                   trans_a ? "^T" : "", b->rows, b->cols, trans_b ? "^T" : "");
        return NULL;
    }
    union tg_op_args args = {.matmul = {trans_a != 0, trans_b != 0}};
    return tg_op_emit(t, TG_OPI(TG_OP_ADDMM), src, 3, m, n, TG_NODE_ARGS(&args));
}
