/* elementwise.h — the one definition of every elementwise op (private to ops/).
 *
 * TG_ELEMENTWISE_OPS(X) calls X once per op with
 *   X(name, ENUM, arity, flags, forward, da, db, print_y, print_da, print_db)
 * where forward, da and db are C expressions in
 *   a, b   the inputs (b unused by one-input ops; `a` is `x` in the printable forms)
 *   y      the output, g the incoming gradient dy,
 *   al, be the op's two constants (affine's α and β; 0 for the others),
 * and the math macros EW_EXP, EW_LOG, EW_TANH, EW_SIGMOID, EW_SQRT, EW_ABS, EW_SOFTPLUS below
 * (float32 uses the vectorisable fast math, float64 libm). da is ∂y/∂a · g, db is ∂y/∂b · g: the local derivative times the gradient.
 * flags (TG_EW_*) say which values a derivative reads, so the fusion compiler knows what to
 * keep or recompute for backward.
 *
 * From this table come: the standalone forward and backward kernels (elementwise.c), both
 * switches of the fused kernels (fused_kern.h), the op table entries and their flags
 * (op_table.c), the DOT label (the op's name), the random fusion test's op list (through
 * tg_op_count/tg_op_info_of) and the printable forms that the cell language and the printer of
 * backward passes read: textbook notation in x (or a, b), y and dy.
 *
 * Domains follow C: log and sqrt of a negative give NaN, log 0 gives −inf. A NaN input gives a
 * NaN output in every op (relu, sign and step included: written so the comparison a NaN
 * fails picks the NaN), so a NaN made upstream reaches the loss and can be located.
 * abs′(0) = 0 and relu′(0) = 0 (PyTorch's choices). sign and step (the Heaviside step, 0 at 0)
 * are there so that every derivative's printable form is itself made of ops: relu′ is step,
 * abs′ is sign; their own derivative is 0 (almost everywhere). softplus(x) = ln(1 + eˣ) is computed as
 * max(x, 0) + ln(1 + e^{−|x|}), which neither overflows nor loses the small tail. */
#ifndef TG_ELEMENTWISE_H
#define TG_ELEMENTWISE_H

/* clang-format off */
#define TG_ELEMENTWISE_OPS(X)                                                                  \
    X(add, ADD, 2, 0,                                                                          \
      a + b, g, g,                                                                             \
      "y = a + b", "da += dy", "db += dy")                                                     \
    X(sub, SUB, 2, 0,                                                                          \
      a - b, g, -g,                                                                            \
      "y = a - b", "da += dy", "db -= dy")                                                     \
    X(mul, MUL, 2, TG_EW_DA_B | TG_EW_DB_A,                                                    \
      a * b, g * b, g * a,                                                                     \
      "y = a * b", "da += dy * b", "db += dy * a")                                             \
    X(div, DIV, 2, TG_EW_DA_B | TG_EW_DB_B | TG_EW_DB_Y,                                       \
      a / b, g / b, -(g * y) / b,                                                              \
      "y = a / b", "da += dy / b", "db -= dy * y / b")                                         \
    X(affine, AFFINE, 1, 0,                                                                    \
      al * a + be, al * g, 0,                                                                  \
      "y = alpha * x + beta", "dx += alpha * dy", "")                                          \
    X(tanh, TANH, 1, TG_EW_DA_Y | TG_EW_SAVE_Y,                                                \
      EW_TANH(a), g * (1 - y * y), 0,                                                          \
      "y = tanh(x)", "dx += dy * (1 - y * y)", "")                                             \
    X(sigmoid, SIGMOID, 1, TG_EW_DA_Y | TG_EW_SAVE_Y,                                          \
      EW_SIGMOID(a), g * y * (1 - y), 0,                                                       \
      "y = sigmoid(x)", "dx += dy * y * (1 - y)", "")                                          \
    X(relu, RELU, 1, TG_EW_DA_A,                                                               \
      a <= 0 ? 0 : a, a > 0 ? g : 0, 0,                                                        \
      "y = relu(x)", "dx += dy * step(x)", "")                                                 \
    X(exp, EXP, 1, TG_EW_DA_Y | TG_EW_SAVE_Y,                                                  \
      EW_EXP(a), g * y, 0,                                                                     \
      "y = exp(x)", "dx += dy * y", "")                                                        \
    X(log, LOG, 1, TG_EW_DA_A,                                                                 \
      EW_LOG(a), g / a, 0,                                                                     \
      "y = log(x)", "dx += dy / x", "")                                                        \
    X(sqrt, SQRT, 1, TG_EW_DA_Y,                                                               \
      EW_SQRT(a), g / (2 * y), 0,                                                              \
      "y = sqrt(x)", "dx += dy / (2 * y)", "")                                                 \
    X(abs, ABS, 1, TG_EW_DA_A,                                                                 \
      EW_ABS(a), a > 0 ? g : (a < 0 ? -g : 0), 0,                                              \
      "y = abs(x)", "dx += dy * sign(x)", "")                                                  \
    X(softplus, SOFTPLUS, 1, TG_EW_DA_A,                                                       \
      EW_SOFTPLUS(a), g * EW_SIGMOID(a), 0,                                                    \
      "y = softplus(x)", "dx += dy * sigmoid(x)", "")                                          \
    X(sign, SIGN, 1, 0,                                                                        \
      a > 0 ? 1 : (a < 0 ? -1 : a), 0, 0,                                                      \
      "y = sign(x)", "dx += 0", "")                                                            \
    X(step, STEP, 1, 0,                                                                        \
      a > 0 ? 1 : (a <= 0 ? 0 : a), 0, 0,                                                      \
      "y = step(x)", "dx += 0", "")
/* clang-format on */

/* Per-dtype math for the expressions above, picked by the argument's type. float32: the fast,
 * vectorisable kernels of autograd/fastmath.h (NaN in, NaN out; ±inf handled); float64: libm. */
#define EW_TANH(v) _Generic((v), float: tg_fast_tanhf, double: tanh)(v)
#define EW_SIGMOID(v) _Generic((v), float: tg_fast_sigmoidf, double: tg_sigmoid_f64)(v)
#define EW_EXP(v) _Generic((v), float: tg_fast_expf, double: exp)(v)
#define EW_LOG(v) _Generic((v), float: logf, double: log)(v)
#define EW_SQRT(v) _Generic((v), float: sqrtf, double: sqrt)(v)
#define EW_ABS(v) _Generic((v), float: fabsf, double: fabs)(v)
#define EW_SOFTPLUS(v) _Generic((v), float: tg_softplusf, double: tg_softplus_f64)(v)

#endif
