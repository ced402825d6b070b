/* op_table.c — every op with its name, arity, forward and backward (ggml's GGML_OP_NAME).
 * The static assert fails the build when an op is added to the enum but not here; a test walks
 * the table and fails if any entry lacks a backward or a gradient test. */
#include "op_util.h"

#define OP_FNS(name)                                                                           \
    void tg_##name##_forward(struct tg_node *n);                                               \
    void tg_##name##_backward(struct tg_node *n);
OP_FNS(matmul) OP_FNS(add) OP_FNS(sub) OP_FNS(mul) OP_FNS(affine) OP_FNS(tanh) OP_FNS(sigmoid)
OP_FNS(relu) OP_FNS(concat) OP_FNS(slice) OP_FNS(softmax_xent) OP_FNS(mse) OP_FNS(sum)
OP_FNS(mean) OP_FNS(embedding) OP_FNS(addmm) OP_FNS(fused)

#define ENTRY(E, name, arity) [E] = {#name, arity, tg_##name##_forward, tg_##name##_backward}

const struct tg_op_info tg_op_table[TG_OP_COUNT] = {
    ENTRY(TG_OP_MATMUL, matmul, 2),
    ENTRY(TG_OP_ADD, add, 2),
    ENTRY(TG_OP_SUB, sub, 2),
    ENTRY(TG_OP_MUL, mul, 2),
    ENTRY(TG_OP_AFFINE, affine, 1),
    ENTRY(TG_OP_TANH, tanh, 1),
    ENTRY(TG_OP_SIGMOID, sigmoid, 1),
    ENTRY(TG_OP_RELU, relu, 1),
    ENTRY(TG_OP_CONCAT, concat, -1),
    ENTRY(TG_OP_SLICE, slice, 1),
    ENTRY(TG_OP_SOFTMAX_XENT, softmax_xent, 1),
    ENTRY(TG_OP_MSE, mse, 2),
    ENTRY(TG_OP_SUM, sum, 1),
    ENTRY(TG_OP_MEAN, mean, 1),
    ENTRY(TG_OP_EMBEDDING, embedding, 1),
    ENTRY(TG_OP_ADDMM, addmm, 3),
    ENTRY(TG_OP_FUSED, fused, -1),
};

_Static_assert(TG_OP_COUNT == 17, "a new op needs an entry in tg_op_table");

const char *tg_op_name(int op)
{
    return op >= 0 && op < TG_OP_COUNT ? tg_op_table[op].name : "?";
}
