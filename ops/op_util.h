/* op_util.h — helpers shared by the op files (not public). */
#ifndef TG_OP_UTIL_H
#define TG_OP_UTIL_H

#include <math.h>
#include <string.h>

#include "internal.h"
#include "tapegrad_ops.h"

/* Per-op payload kept on the node for backward (what each op saved), in the node's args. */
union tg_op_args {
    union tg_node_args node;                 /* sets the size: tg_op_emit copies all of it */
    struct { int trans_a, trans_b; } matmul;
    struct { double a, b; } affine;          /* y = a·x + b: the EW constants alpha, beta */
    struct tg_view_args slice;               /* axis 0 = rows, 1 = cols; [start, end) */
    struct { int axis; } concat;
    struct { const int32_t *labels; void *probs; int reduction; } xent;
    struct { int reduction; } mse;
    struct { const int32_t *ids; } embedding;
};
_Static_assert(sizeof(union tg_op_args) == sizeof(union tg_node_args),
               "op arguments must fit the node's args");
#define TG_ARGS(nd) ((const union tg_op_args *)(const void *)&(nd)->args)
#define TG_NODE_ARGS(a) (&(a)->node)

/* The table entry of an op (op_table.c). */
extern const struct tg_op_info tg_op_table[TG_OP_COUNT];
#define TG_OPI(e) (&tg_op_table[e])

/* Instantiate a kernel body for both dtypes: DEF(float, f32) and DEF(double, f64). */
#define TG_BOTH_DTYPES(DEF) DEF(float, f32) DEF(double, f64)

/* Call name_f32 or name_f64 on the dtype of tensor x. */
#define TG_CALL(x, name, ...)                                                                  \
    ((x)->dtype == TG_F64 ? name##_f64(__VA_ARGS__) : name##_f32(__VA_ARGS__))

/* Broadcast rule of the binary elementwise ops, per axis as NumPy's: equal sizes, or 1 on one
 * side (a 1×n row, a B×1 column, a 1×1 scalar). Returns 0 and raises
 * "name: shapes do not broadcast: (axb) sym (cxd)" otherwise. */
int tg_binary_shape(struct tg_tape *t, const char *name, const char *sym,
                    const struct tg_tensor *a, const struct tg_tensor *b, int *rows, int *cols);

/* Add the column sums of g (m×n) into dst (1×n) times `scale`: a broadcast row's gradient. */
void tg_colsum_acc(const struct tg_tensor *g_like, const void *g, void *dst, double scale);

#endif
