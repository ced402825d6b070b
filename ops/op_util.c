/* op_util.c — the broadcast shape rule of the binary elementwise ops. */
#include "op_util.h"

int tg_binary_shape(struct tg_tape *t, const char *name, const char *sym,
                    const struct tg_tensor *a, const struct tg_tensor *b, int *rows, int *cols)
{
    int rows_ok = a->rows == b->rows || a->rows == 1 || b->rows == 1;
    int cols_ok = a->cols == b->cols || a->cols == 1 || b->cols == 1;
    if (rows_ok && cols_ok) {
        *rows = a->rows > b->rows ? a->rows : b->rows;
        *cols = a->cols > b->cols ? a->cols : b->cols;
        return 1;
    }
    tg_op_fail(t, TG_ERR_SHAPE, "%s: shapes do not broadcast: (%dx%d) %s (%dx%d)", name, a->rows,
               a->cols, sym, b->rows, b->cols);
    return 0;
}

#define DEF_COLSUM(T, S)                                                                       \
    static void colsum_##S(const T *g, T *dst, int m, int n, T scale)                          \
    {                                                                                          \
        for (int i = 0; i < m; i++) {                                                          \
            const T *gi = g + (size_t)i * n;                                                   \
            for (int j = 0; j < n; j++) dst[j] += scale * gi[j];                               \
        }                                                                                      \
    }
TG_BOTH_DTYPES(DEF_COLSUM)

void tg_colsum_acc(const struct tg_tensor *g_like, const void *g, void *dst, double scale)
{
    if (g_like->dtype == TG_F64) colsum_f64(g, dst, g_like->rows, g_like->cols, scale);
    else colsum_f32(g, dst, g_like->rows, g_like->cols, (float)scale);
}
