/* op_table.c — every op with its name, arity, flags, forward, backward and hooks (ggml's
 * GGML_OP_NAME, micrograd's "each op knows its own derivative"). The engine reads nothing
 * else of an op. Elementwise entries come from their one definition in elementwise.h. The
 * static asserts fail the build when an op is added to the enum but not here; a test walks
 * the table and fails if any entry lacks a backward or a gradient test. */
#include <stdio.h>
#include <string.h>

#include "elementwise.h"
#include "op_util.h"

#define OP_FNS(name)                                                                           \
    void tg_##name##_forward(struct tg_node *n);                                               \
    void tg_##name##_backward(struct tg_node *n);
OP_FNS(matmul) OP_FNS(addmm) OP_FNS(concat) OP_FNS(slice) OP_FNS(softmax_xent) OP_FNS(mse)
OP_FNS(sum) OP_FNS(mean) OP_FNS(row_sum) OP_FNS(row_mean) OP_FNS(embedding) OP_FNS(fused)
#define EW_FNS(name, ...) OP_FNS(name)
TG_ELEMENTWISE_OPS(EW_FNS)

/* hooks (in the ops' files) */
struct tg_tensor *tg_product_stage_weight(const struct tg_node *nd, int *addend);
void tg_concat_before_backward(struct tg_node *nd);
int tg_fused_reached(const struct tg_node *nd);
void tg_fused_label(const struct tg_node *nd, char *buf, size_t len);

static void matmul_label(const struct tg_node *nd, char *buf, size_t len)
{
    snprintf(buf, len, " A%s B%s", TG_ARGS(nd)->matmul.trans_a ? "^T" : "",
             TG_ARGS(nd)->matmul.trans_b ? "^T" : "");
}
static void slice_label(const struct tg_node *nd, char *buf, size_t len)
{
    const struct tg_view_args *a = &TG_ARGS(nd)->slice;
    snprintf(buf, len, " %s %d:%d", a->axis ? "cols" : "rows", a->start, a->end);
}
static void concat_label(const struct tg_node *nd, char *buf, size_t len)
{
    snprintf(buf, len, " %s (%d)", TG_ARGS(nd)->concat.axis ? "cols" : "rows", nd->nsrc);
}
/* affine's label shows its constants; the other elementwise ops are their name alone */
static void ew_label(const struct tg_node *nd, char *buf, size_t len)
{
    if (nd->op->id == TG_OP_AFFINE)
        snprintf(buf, len, " %g*x%+g", TG_ARGS(nd)->affine.a, TG_ARGS(nd)->affine.b);
    else if (len)
        buf[0] = 0;
}
static void xent_label(const struct tg_node *nd, char *buf, size_t len)
{
    snprintf(buf, len, " %s", TG_ARGS(nd)->xent.reduction == TG_REDUCE_MEAN ? "mean" : "sum");
}
static void mse_label(const struct tg_node *nd, char *buf, size_t len)
{
    snprintf(buf, len, " %s", TG_ARGS(nd)->mse.reduction == TG_REDUCE_MEAN ? "mean" : "sum");
}
static int slice_col_view(const union tg_node_args *a)
{
    return ((const union tg_op_args *)(const void *)a)->slice.axis == 1;
}

#define ENTRY(E, nm, ar, fl, ...)                                                            \
    [E] = {.id = E, .name = #nm, .arity = ar, .flags = fl, .forward = tg_##nm##_forward,       \
           .backward = tg_##nm##_backward, __VA_ARGS__}
#define EW_ENTRY(name, E, ar, fl, fwd, da, db, py, pa, pb)                                     \
    ENTRY(TG_OP_##E, name, ar, TG_OPF_EW | (fl), .fused = &tg_op_table[TG_OP_FUSED],           \
          .label = ew_label, .print = {py, pa, pb}),

const struct tg_op_info tg_op_table[TG_OP_COUNT] = {
    ENTRY(TG_OP_MATMUL, matmul, 2, TG_OPF_OUT_UNREAD, .stage_weight = tg_product_stage_weight,
          .label = matmul_label),
    ENTRY(TG_OP_ADDMM, addmm, 3, TG_OPF_OUT_UNREAD, .stage_weight = tg_product_stage_weight),
    TG_ELEMENTWISE_OPS(EW_ENTRY)
    ENTRY(TG_OP_CONCAT, concat, -1, 0, .before_backward = tg_concat_before_backward,
          .label = concat_label),
    ENTRY(TG_OP_SLICE, slice, 1, TG_OPF_COL_VIEW, .col_view = slice_col_view,
          .label = slice_label),
    ENTRY(TG_OP_SUM, sum, 1, 0),
    ENTRY(TG_OP_MEAN, mean, 1, 0),
    ENTRY(TG_OP_ROW_SUM, row_sum, 1, 0),
    ENTRY(TG_OP_ROW_MEAN, row_mean, 1, 0),
    ENTRY(TG_OP_EMBEDDING, embedding, 1, 0),
    ENTRY(TG_OP_SOFTMAX_XENT, softmax_xent, 1, 0, .label = xent_label),
    ENTRY(TG_OP_MSE, mse, 2, 0, .label = mse_label),
    ENTRY(TG_OP_FUSED, fused, -1, TG_OPF_COMPOUND, .reached = tg_fused_reached,
          .label = tg_fused_label),
};

_Static_assert(TG_OP_COUNT == 27, "a new op needs an entry in tg_op_table");

const char *tg_op_name(enum tg_op op)
{
    return (int)op >= 0 && op < TG_OP_COUNT ? tg_op_table[op].name : "?";
}

enum tg_op tg_node_op(const struct tg_node *n) { return (enum tg_op)n->op->id; }

enum tg_op tg_op_lookup(const char *name)
{
    for (int i = 0; name && i < TG_OP_COUNT; i++)
        if (strcmp(tg_op_table[i].name, name) == 0) return (enum tg_op)i;
    return TG_OP_COUNT;
}

int tg_op_arity(enum tg_op op) { return (int)op >= 0 && op < TG_OP_COUNT ? tg_op_table[op].arity : 0; }

int tg_op_is_elementwise(enum tg_op op)
{
    return (int)op >= 0 && op < TG_OP_COUNT && (tg_op_table[op].flags & TG_OPF_EW);
}

const char *tg_op_printable(enum tg_op op, int part)
{
    if (!tg_op_is_elementwise(op) || part < 0 || part > 2) return "";
    return tg_op_table[op].print[part];
}
