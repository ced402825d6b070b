/* elementwise.c — the standalone kernels of every elementwise op, generated from their one
 * definition in elementwise.h, and the constructors tg_add … tg_softplus.
 *
 * Forward:  y[i][j] = f(a[i][j], b[i][j]), where a broadcast input (a 1×n row, a B×1 column,
 *           a 1×1 scalar) is read with stride 0 along the axis it lacks.
 * Backward: da[i][j] += ∂y/∂a · dy[i][j] (the table's `da`), likewise db. A broadcast input
 *           was used once per element along its missing axis, so its gradient is the sum of
 *           those terms: dbias[j] += Σ_i …, a column's dm[i] += Σ_j …, a scalar's Σ_ij ….
 * Inputs of the output's shape take the flat vector loop; broadcast ones a strided loop, and
 * their gradient (whose elements several rows share) a serial one. */
#include "fastmath.h"
#include "elementwise.h"
#include "op_util.h"

/* Strides of an input of shape (r, c) read against an output of shape (R, C). */
struct ew_in {
    size_t rs, cs; /* row stride (0 if broadcast over rows), column stride (0 or 1) */
    int full;      /* same shape as the output */
};

static struct ew_in ew_in_of(const struct tg_tensor *x, const struct tg_tensor *y)
{
    struct ew_in s;
    s.cs = x->cols == y->cols ? 1 : 0;
    s.rs = x->rows == y->rows ? (size_t)x->cols : 0;
    s.full = x->rows == y->rows && x->cols == y->cols;
    return s;
}

#define EW_LOAD_B_1(k) 0
#define EW_LOAD_B_2(k) B[k]

/* Row i of a strided backward (inside EW_KERNELS). */
#define EW_BWD_ROW(ar, T, DA, DB)                                                                     \
    {                                                                                          \
        for (int j = 0; j < C; j++) {                                                          \
            size_t k = (size_t)i * C + j;                                                      \
            T a = A[i * ia.rs + j * ia.cs], b = EW_LOAD_B_##ar(i * ib.rs + j * ib.cs);         \
            T y = Y[k], g = G[k];                                                              \
            (void)a, (void)b, (void)y, (void)g;                                                     \
            dX[i * ix.rs + j * ix.cs] += which ? (T)(DB) : (T)(DA);                            \
        }                                                                                      \
    }

/* Kernels of op `name` for one dtype: forward, and backward into one input (which = 0: a, 1: b).
 * Expressions read a, b, y, g, al, be (elementwise.h). */
#define EW_KERNELS(name, ar, FWD, DA, DB, T, S)                                                \
    TG_SIMD_CLONES static void name##_fwd_##S(const T *A, const T *B, T *Y, int R, int C,      \
                                              struct ew_in ia, struct ew_in ib, T al, T be)    \
    {                                                                                          \
        (void)al, (void)be, (void)B, (void)ib;                                                 \
        size_t n = (size_t)R * C;                                                              \
        if (ia.full && (ar == 1 || ib.full)) {                                                 \
            TG_SIMD_FOR(n, for (size_t k = 0; k < n; k++) {                                    \
                T a = A[k], b = EW_LOAD_B_##ar(k);                                             \
                (void)b;                                                                       \
                Y[k] = (FWD);                                                                  \
            })                                                                                 \
            return;                                                                            \
        }                                                                                      \
        TG_PAR_FOR(n, for (int i = 0; i < R; i++) {                                            \
            for (int j = 0; j < C; j++) {                                                      \
                T a = A[i * ia.rs + j * ia.cs], b = EW_LOAD_B_##ar(i * ib.rs + j * ib.cs);     \
                (void)b;                                                                       \
                Y[(size_t)i * C + j] = (FWD);                                                  \
            }                                                                                  \
        })                                                                                     \
    }                                                                                          \
    static void name##_bwd_##S(int which, T *dX, const T *A, const T *B, const T *Y,           \
                               const T *G, int R, int C, struct ew_in ia, struct ew_in ib,     \
                               T al, T be)                                                     \
    {                                                                                          \
        (void)al, (void)be, (void)B, (void)ib, (void)Y;                                        \
        struct ew_in ix = which ? ib : ia;                                                     \
        size_t n = (size_t)R * C;                                                              \
        if (ia.full && (ar == 1 || ib.full)) {                                                 \
            if (which == 0)                                                                    \
                TG_SIMD_FOR(n, for (size_t k = 0; k < n; k++) {                                \
                    T a = A[k], b = EW_LOAD_B_##ar(k), y = Y[k], g = G[k];                     \
                    (void)a, (void)b, (void)y, (void)g;                                             \
                    dX[k] += (DA);                                                             \
                })                                                                             \
            else                                                                               \
                TG_SIMD_FOR(n, for (size_t k = 0; k < n; k++) {                                \
                    T a = A[k], b = EW_LOAD_B_##ar(k), y = Y[k], g = G[k];                     \
                    (void)a, (void)b, (void)y, (void)g;                                             \
                    dX[k] += (DB);                                                             \
                })                                                                             \
            return;                                                                            \
        }                                                                                      \
        /* a full-shape gradient is written once per element: rows may go parallel; a       \
         * broadcast one is shared by rows or columns: serial */                              \
        if (ix.full)                                                                           \
            TG_PAR_FOR(n, for (int i = 0; i < R; i++) EW_BWD_ROW(ar, T, DA, DB))                      \
        else                                                                                   \
            for (int i = 0; i < R; i++) EW_BWD_ROW(ar, T, DA, DB)                                     \
    }

#define EW_DEFINE(name, E, ar, fl, FWD, DA, DB, py, pa, pb)                                    \
    EW_KERNELS(name, ar, FWD, DA, DB, float, f32)                                              \
    EW_KERNELS(name, ar, FWD, DA, DB, double, f64)                                             \
    void tg_##name##_forward(struct tg_node *nd)                                               \
    {                                                                                          \
        const struct tg_tensor *a = nd->src[0], *b = nd->src[ar - 1], *y = nd->out;            \
        double al = TG_ARGS(nd)->affine.a, be = TG_ARGS(nd)->affine.b;                         \
        struct ew_in ia = ew_in_of(a, y), ib = ew_in_of(b, y);                                 \
        const void *bd = ar == 2 ? b->data : NULL;                                             \
        if (y->dtype == TG_F64)                                                                \
            name##_fwd_f64(a->data, bd, y->data, y->rows, y->cols, ia, ib, al, be);            \
        else                                                                                   \
            name##_fwd_f32(a->data, bd, y->data, y->rows, y->cols, ia, ib, (float)al,          \
                           (float)be);                                                         \
    }                                                                                          \
    void tg_##name##_backward(struct tg_node *nd)                                              \
    {                                                                                          \
        const struct tg_tensor *a = nd->src[0], *b = nd->src[ar - 1], *y = nd->out;            \
        double al = TG_ARGS(nd)->affine.a, be = TG_ARGS(nd)->affine.b;                         \
        struct ew_in ia = ew_in_of(a, y), ib = ew_in_of(b, y);                                 \
        const void *bd = ar == 2 ? b->data : NULL;                                             \
        for (int w = 0; w < ar; w++) {                                                         \
            void *dx = nd->src[w]->grad;                                                       \
            if (!dx) continue;                                                                 \
            if (y->dtype == TG_F64)                                                            \
                name##_bwd_f64(w, dx, a->data, bd, y->data, y->grad, y->rows, y->cols, ia, ib, \
                               al, be);                                                        \
            else                                                                               \
                name##_bwd_f32(w, dx, a->data, bd, y->data, y->grad, y->rows, y->cols, ia, ib, \
                               (float)al, (float)be);                                          \
        }                                                                                      \
    }
TG_ELEMENTWISE_OPS(EW_DEFINE)

/* ---------------------------------------------------------------- constructors */

static struct tg_tensor *ew_unary(struct tg_tape *t, enum tg_op op, const char *fn,
                                  struct tg_tensor *x, const union tg_op_args *args)
{
    if (!tg_op_check_lazy(t, fn, &x, 1)) return NULL;
    return tg_op_emit(t, TG_OPI(op), &x, 1, x->rows, x->cols, args ? TG_NODE_ARGS(args) : NULL);
}

static struct tg_tensor *ew_binary(struct tg_tape *t, enum tg_op op, const char *fn,
                                   const char *sym, struct tg_tensor *a, struct tg_tensor *b)
{
    struct tg_tensor *src[2] = {a, b};
    int rows, cols;
    if (!tg_op_check_lazy(t, fn, src, 2)) return NULL;
    if (!tg_binary_shape(t, fn, sym, a, b, &rows, &cols)) return NULL;
    return tg_op_emit(t, TG_OPI(op), src, 2, rows, cols, NULL);
}

#define EW_BINARY(name, E, sym)                                                                \
    struct tg_tensor *tg_##name(struct tg_tape *t, struct tg_tensor *a, struct tg_tensor *b)   \
    {                                                                                          \
        return ew_binary(t, TG_OP_##E, "tg_" #name, sym, a, b);                                \
    }
EW_BINARY(add, ADD, "+")
EW_BINARY(sub, SUB, "-")
EW_BINARY(mul, MUL, "*")
EW_BINARY(div, DIV, "/")

#define EW_UNARY(name, E)                                                                      \
    struct tg_tensor *tg_##name(struct tg_tape *t, struct tg_tensor *x)                        \
    {                                                                                          \
        return ew_unary(t, TG_OP_##E, "tg_" #name, x, NULL);                                   \
    }
EW_UNARY(tanh, TANH)
EW_UNARY(sigmoid, SIGMOID)
EW_UNARY(relu, RELU)
EW_UNARY(exp, EXP)
EW_UNARY(log, LOG)
EW_UNARY(sqrt, SQRT)
EW_UNARY(abs, ABS)
EW_UNARY(softplus, SOFTPLUS)
EW_UNARY(sign, SIGN)
EW_UNARY(step, STEP)

struct tg_tensor *tg_affine(struct tg_tape *t, struct tg_tensor *x, double a, double b)
{
    if (x && (!isfinite(a) || !isfinite(b))) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_affine: constants must be finite, got a=%g b=%g for "
                   "(%dx%d)", a, b, x->rows, x->cols);
        return NULL;
    }
    union tg_op_args args = {.affine = {a, b}};
    return ew_unary(t, TG_OP_AFFINE, "tg_affine", x, &args);
}

struct tg_tensor *tg_ew_apply(struct tg_tape *t, enum tg_op op, struct tg_tensor *a,
                              struct tg_tensor *b)
{
    if (op < 0 || op >= TG_OP_COUNT || !(tg_op_table[op].flags & TG_OPF_EW) ||
        op == TG_OP_AFFINE || (tg_op_table[op].arity == 2) != (b != NULL)) {
        tg_op_fail(t, TG_ERR_VALUE, "tg_ew_apply: op %d (%s) is not an elementwise op taking %d "
                   "input(s)", (int)op, tg_op_name(op), b ? 2 : 1);
        return NULL;
    }
    if (b) return ew_binary(t, op, tg_op_table[op].name, tg_op_table[op].name, a, b);
    return ew_unary(t, op, tg_op_table[op].name, a, NULL);
}
