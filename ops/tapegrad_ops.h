/*
 * tapegrad_ops.h — the primitive ops. Each call computes its result at once and, unless the
 * tape is in no-grad mode, appends one node so that tg_backward can apply the op's local
 * derivative later. Every op works in float32 and float64; inputs of one op share a dtype.
 *
 * On bad input an op returns NULL and sets a one-line error naming itself and the shapes,
 * e.g. "tg_matmul: inner dimensions differ: (3x4) @ (5x2)". Given a NULL input it returns
 * NULL and keeps the first error, so a whole cell can be checked once at its end.
 *
 * Each op lives in ops/<name>.c with its forward and backward next to each other and the
 * derivative in a comment above the backward. ops/op_table.c lists them all.
 */
#ifndef TAPEGRAD_OPS_H
#define TAPEGRAD_OPS_H

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

enum tg_op {
    TG_OP_MATMUL = 0,
    TG_OP_ADDMM,
    /* elementwise (ops/elementwise.h: each defined once, fused by fusion regions) */
    TG_OP_ADD,
    TG_OP_SUB,
    TG_OP_MUL,
    TG_OP_DIV,
    TG_OP_AFFINE,
    TG_OP_TANH,
    TG_OP_SIGMOID,
    TG_OP_RELU,
    TG_OP_EXP,
    TG_OP_LOG,
    TG_OP_SQRT,
    TG_OP_ABS,
    TG_OP_SOFTPLUS,
    TG_OP_SIGN,
    TG_OP_STEP,
    /* structure and reductions */
    TG_OP_CONCAT,
    TG_OP_SLICE,
    TG_OP_SUM,
    TG_OP_MEAN,
    TG_OP_ROW_SUM,
    TG_OP_ROW_MEAN,
    TG_OP_EMBEDDING,
    /* losses */
    TG_OP_SOFTMAX_XENT,
    TG_OP_MSE,
    TG_OP_FUSED, /* a chain of elementwise ops compiled by tg_tape_fuse_end (ops/fused.c) */
    TG_OP_COUNT
};

/* The op a recorded node ran, and facts about ops for tools and languages built on the tape. */
enum tg_op tg_node_op(const struct tg_node *n);
const char *tg_op_name(enum tg_op op);           /* "matmul", …; "?" if out of range */
enum tg_op tg_op_lookup(const char *name);       /* by name; TG_OP_COUNT if none */
int tg_op_arity(enum tg_op op);                  /* inputs; -1: any number; 0 if out of range */
int tg_op_is_elementwise(enum tg_op op);
/* Textbook form of an elementwise op (part 0: "y = tanh(x)"; 1: the first input's adjoint,
 * "dx += dy * (1 - y * y)"; 2: the second's, "db -= dy * y / b"), in x (a, b), y and dy;
 * "" if the op has no such part. */
const char *tg_op_printable(enum tg_op op, int part);
/* Apply an elementwise op by id (b NULL for one-input ops; not affine, which takes
 * constants): what a language's function call compiles to. */
struct tg_tensor *tg_ew_apply(struct tg_tape *t, enum tg_op op, struct tg_tensor *a,
                              struct tg_tensor *b);

/* C = op(A)·op(B), op(X) = Xᵀ when its flag is set. GEMM through CBLAS.
 * With PyTorch's (out, in) weights, x·Wᵀ is tg_matmul(t, x, W, 0, 1). */
struct tg_tensor *tg_matmul(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b,
                            int trans_a, int trans_b);

/* D = C + op(A)·op(B) in one GEMM (β = 1): C is m×n, or a 1×n row (a bias) repeated on
 * every row. tg_addmm(t, b, x, W, 0, 1) is PyTorch's Linear: x·Wᵀ + b. */
struct tg_tensor *tg_addmm(struct tg_tape *t, struct tg_tensor *c, struct tg_tensor *a,
                           struct tg_tensor *b, int trans_a, int trans_b);

/* Elementwise a+b, a−b, a⊙b. Same shape, or broadcast along an axis where one side has size 1:
 * a 1×n row over m rows (biases, per-unit scales), a B×1 column over n columns (a per-row mean),
 * a 1×1 scalar over everything. */
struct tg_tensor *tg_add(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b);
struct tg_tensor *tg_sub(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b);
struct tg_tensor *tg_mul(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b);

/* y = a·x + b with constants a, b (1 − z is tg_affine(t, z, -1, 1)). */
struct tg_tensor *tg_affine(struct tg_tape *t, struct tg_tensor *x, double a, double b);
static inline struct tg_tensor *tg_one_minus(struct tg_tape *t, struct tg_tensor *x)
{
    return tg_affine(t, x, -1.0, 1.0);
}

struct tg_tensor *tg_tanh(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_sigmoid(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_relu(struct tg_tape *t, struct tg_tensor *x);

/* Elementwise a / b, broadcasting like add. */
struct tg_tensor *tg_div(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b);

/* Elementwise functions: e^x, ln x, √x, |x|, softplus(x) = ln(1 + e^x) (stable for large |x|).
 * Out-of-domain inputs (log or sqrt of a negative) give NaN, as C's libm does. */
struct tg_tensor *tg_exp(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_log(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_sqrt(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_abs(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_softplus(struct tg_tape *t, struct tg_tensor *x);
/* sign(x) ∈ {−1, 0, 1} and the step [x > 0]: relu′ and abs′, gradient 0. */
struct tg_tensor *tg_sign(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_step(struct tg_tape *t, struct tg_tensor *x);

/* Per-row reductions: B×n → B×1 (the sum or mean of each row's n elements). */
struct tg_tensor *tg_row_sum(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_row_mean(struct tg_tape *t, struct tg_tensor *x);

/* Concatenate n ≥ 1 tensors along axis 1 (columns: [a, b]) or axis 0 (rows). */
struct tg_tensor *tg_concat(struct tg_tape *t, int axis, int n, struct tg_tensor *const *xs);
static inline struct tg_tensor *tg_concat2(struct tg_tape *t, int axis, struct tg_tensor *a,
                                           struct tg_tensor *b)
{
    struct tg_tensor *xs[2] = {a, b};
    return tg_concat(t, axis, 2, xs);
}

/* Columns (axis 1) or rows (axis 0) [start, end) of x, as a new tensor. */
struct tg_tensor *tg_slice(struct tg_tape *t, struct tg_tensor *x, int axis, int start, int end);

/* Fused softmax + cross-entropy over the columns of each row of logits (N×C), with integer
 * labels in [0, C), or −1 for a row without loss (padding); labels are copied. Returns 1×1:
 * the sum over labelled rows, or their mean. */
struct tg_tensor *tg_softmax_xent(struct tg_tape *t, struct tg_tensor *logits,
                                  const int32_t *labels, enum tg_reduction reduction);

/* Squared error Σ(p − y)² over all elements, summed or averaged (PyTorch's MSELoss). */
struct tg_tensor *tg_mse(struct tg_tape *t, struct tg_tensor *pred, struct tg_tensor *target,
                         enum tg_reduction reduction);

/* 1×1 sum / mean of all elements. */
struct tg_tensor *tg_sum(struct tg_tape *t, struct tg_tensor *x);
struct tg_tensor *tg_mean(struct tg_tape *t, struct tg_tensor *x);

/* Row gather: out[i] = W[ids[i]] for i < n (ids copied, each in [0, W->rows)). */
struct tg_tensor *tg_embedding(struct tg_tape *t, struct tg_tensor *w, const int32_t *ids,
                               int n);
/* The ids an embedding node gathered (its out->rows of them), NULL for any other node: what a
 * tool reading the tape needs to split the table's gradient by row (models/flow.c). */
const int32_t *tg_embedding_ids(const struct tg_node *n);

#ifdef __cplusplus
}
#endif
#endif
