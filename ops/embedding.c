/* embedding.c — row gather: out[i] = W[ids[i]], W is V×D, out is n×D.
 *
 * Derivative: out[i] is a copy of row ids[i], so  dW[ids[i]] += dout[i]  for every i — a
 * scatter-add; an id that appears k times receives k rows. Serial on purpose: two rows with
 * the same id would race if split across threads. */
#include "op_util.h"

void tg_embedding_forward(struct tg_node *nd)
{
    const struct tg_tensor *w = nd->src[0];
    struct tg_tensor *y = nd->out;
    size_t row = (size_t)w->cols * tg_dtype_size(w->dtype);
    const int32_t *ids = TG_ARGS(nd)->embedding.ids;
    for (int i = 0; i < y->rows; i++)
        memcpy((unsigned char *)y->data + i * row, (const unsigned char *)w->data + ids[i] * row, row);
}

#define DEF_EMB_BWD(T, S)                                                                      \
    static void emb_bwd_##S(T *dw, const T *dy, const int32_t *ids, int n, int d)              \
    {                                                                                          \
        for (int i = 0; i < n; i++) {                                                          \
            T *dst = dw + (size_t)ids[i] * d;                                                  \
            const T *g = dy + (size_t)i * d;                                                   \
            for (int j = 0; j < d; j++) dst[j] += g[j];                                        \
        }                                                                                      \
    }
TG_BOTH_DTYPES(DEF_EMB_BWD)

void tg_embedding_backward(struct tg_node *nd)
{
    struct tg_tensor *w = nd->src[0], *y = nd->out;
    if (w->grad) TG_CALL(y, emb_bwd, w->grad, y->grad, TG_ARGS(nd)->embedding.ids, y->rows, y->cols);
}

const int32_t *tg_embedding_ids(const struct tg_node *n)
{
    return n && n->op == TG_OPI(TG_OP_EMBEDDING) ? TG_ARGS(n)->embedding.ids : NULL;
}

struct tg_tensor *tg_embedding(struct tg_tape *t, struct tg_tensor *w, const int32_t *ids, int n)
{
    if (!tg_op_check_inputs(t, "tg_embedding", &w, 1)) return NULL;
    if (!ids || n < 1) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_embedding: need n >= 1 ids (got n=%d%s) for table (%dx%d)",
                   n, ids ? "" : ", ids NULL", w->rows, w->cols);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= w->rows) {
            tg_op_fail(t, TG_ERR_VALUE, "tg_embedding: id %d at position %d out of range [0, %d) "
                       "for table (%dx%d)", (int)ids[i], i, w->rows, w->rows, w->cols);
            return NULL;
        }
    }
    int32_t *copy = tg_tape_alloc(t, (size_t)n * sizeof *copy);
    if (!copy) return NULL;
    memcpy(copy, ids, (size_t)n * sizeof *copy);
    union tg_op_args args = {.embedding = {copy}};
    return tg_op_emit(t, TG_OPI(TG_OP_EMBEDDING), &w, 1, n, w->cols, TG_NODE_ARGS(&args));
}
