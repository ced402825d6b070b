/* test_errors.c — everything a caller can get wrong returns NULL or a status (never aborts)
 * and leaves a one-line message naming the op and the shapes; the tape keeps the first error;
 * a NULL flowing through later ops stays quiet so the first message survives.
 *
 * The op cases are a table: each builds fresh inputs on a reset tape, calls one op the wrong
 * way, and lists the status and the substrings its message must contain. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad.h"
#include "tapegrad_ops.h"

/* A filled arena tensor (values only matter for the few cases that compute). */
static struct tg_tensor *T(struct tg_tape *t, int r, int c, enum tg_dtype dt)
{
    struct tg_tensor *x = tg_tensor_new(t, r, c, dt);
    assert_non_null(x);
    for (int i = 0; i < r * c; i++) tg_set(x, i / c, i % c, 0.1 * i - 0.3);
    return x;
}

#define F32 TG_F32
#define F64 TG_F64

/* The message is one non-empty line containing every needle. */
static void check_message(const char *msg, const char *const *needles)
{
    assert_non_null(msg);
    if (!msg[0]) fail_msg("empty error message");
    if (strchr(msg, '\n') || strchr(msg, '\r')) fail_msg("message is not one line: '%s'", msg);
    for (int i = 0; needles[i]; i++)
        if (!strstr(msg, needles[i])) fail_msg("message '%s' lacks '%s'", msg, needles[i]);
}

/* ----------------------------------------------------------------- op table */

typedef struct tg_tensor *(*bad_call)(struct tg_tape *t);

struct err_case {
    const char *label;
    bad_call call;
    enum tg_status want;
    const char *needles[6];
};

static struct tg_tensor *matmul_inner(struct tg_tape *t)
{
    return tg_matmul(t, T(t, 3, 4, F64), T(t, 5, 2, F64), 0, 0);
}
static struct tg_tensor *matmul_trans(struct tg_tape *t)
{
    return tg_matmul(t, T(t, 4, 3, F64), T(t, 2, 5, F64), 1, 0);
}
static struct tg_tensor *matmul_dtype(struct tg_tape *t)
{
    return tg_matmul(t, T(t, 3, 4, F32), T(t, 4, 2, F64), 0, 0);
}
static struct tg_tensor *add_cols(struct tg_tape *t) { return tg_add(t, T(t, 2, 3, F64), T(t, 3, 2, F64)); }
static struct tg_tensor *add_rows(struct tg_tape *t) { return tg_add(t, T(t, 2, 3, F32), T(t, 3, 3, F32)); }
static struct tg_tensor *add_row_width(struct tg_tape *t)
{
    return tg_add(t, T(t, 4, 3, F64), T(t, 1, 2, F64)); /* a bias of the wrong width */
}
static struct tg_tensor *sub_bcast(struct tg_tape *t) { return tg_sub(t, T(t, 1, 5, F64), T(t, 4, 3, F64)); }
static struct tg_tensor *mul_bcast(struct tg_tape *t) { return tg_mul(t, T(t, 2, 5, F32), T(t, 3, 5, F32)); }
static struct tg_tensor *add_dtype(struct tg_tape *t) { return tg_add(t, T(t, 2, 3, F32), T(t, 2, 3, F64)); }
static struct tg_tensor *sub_dtype(struct tg_tape *t) { return tg_sub(t, T(t, 2, 3, F64), T(t, 1, 3, F32)); }
static struct tg_tensor *mul_dtype(struct tg_tape *t) { return tg_mul(t, T(t, 2, 3, F64), T(t, 2, 3, F32)); }
static struct tg_tensor *mse_dtype(struct tg_tape *t)
{
    return tg_mse(t, T(t, 2, 3, F32), T(t, 2, 3, F64), TG_REDUCE_MEAN);
}
static struct tg_tensor *concat_dtype(struct tg_tape *t)
{
    struct tg_tensor *xs[3] = {T(t, 2, 2, F32), T(t, 2, 3, F32), T(t, 2, 4, F64)};
    return tg_concat(t, 1, 3, xs);
}
static struct tg_tensor *concat_rows(struct tg_tape *t)
{
    struct tg_tensor *xs[3] = {T(t, 2, 3, F64), T(t, 2, 1, F64), T(t, 3, 3, F64)};
    return tg_concat(t, 1, 3, xs);
}
static struct tg_tensor *concat_cols(struct tg_tape *t)
{
    return tg_concat2(t, 0, T(t, 2, 3, F64), T(t, 2, 4, F64));
}
static struct tg_tensor *concat_axis(struct tg_tape *t)
{
    return tg_concat2(t, 2, T(t, 2, 3, F64), T(t, 2, 3, F64));
}
static struct tg_tensor *concat_axis_neg(struct tg_tape *t)
{
    return tg_concat2(t, -1, T(t, 2, 3, F64), T(t, 2, 3, F64));
}
static struct tg_tensor *concat_none(struct tg_tape *t)
{
    struct tg_tensor *xs[1] = {T(t, 2, 3, F64)};
    return tg_concat(t, 1, 0, xs);
}
static struct tg_tensor *concat_neg_n(struct tg_tape *t)
{
    struct tg_tensor *xs[1] = {T(t, 2, 3, F64)};
    return tg_concat(t, 0, -3, xs);
}
static struct tg_tensor *slice_end(struct tg_tape *t) { return tg_slice(t, T(t, 4, 5, F64), 1, 2, 7); }
static struct tg_tensor *slice_start(struct tg_tape *t) { return tg_slice(t, T(t, 4, 5, F32), 0, -1, 2); }
static struct tg_tensor *slice_empty(struct tg_tape *t) { return tg_slice(t, T(t, 4, 5, F64), 0, 3, 3); }
static struct tg_tensor *slice_rows(struct tg_tape *t) { return tg_slice(t, T(t, 4, 5, F64), 0, 2, 5); }
static struct tg_tensor *slice_axis(struct tg_tape *t) { return tg_slice(t, T(t, 4, 5, F64), 3, 0, 1); }

static struct tg_tensor *xent_label_high(struct tg_tape *t)
{
    const int32_t y[3] = {0, 5, 1};
    return tg_softmax_xent(t, T(t, 3, 5, F64), y, TG_REDUCE_SUM);
}
static struct tg_tensor *xent_label_m2(struct tg_tape *t)
{
    const int32_t y[3] = {0, 1, -2};
    return tg_softmax_xent(t, T(t, 3, 5, F32), y, TG_REDUCE_MEAN);
}
static struct tg_tensor *xent_labels_null(struct tg_tape *t)
{
    return tg_softmax_xent(t, T(t, 3, 5, F64), NULL, TG_REDUCE_MEAN);
}
static struct tg_tensor *xent_reduction(struct tg_tape *t)
{
    const int32_t y[3] = {0, 1, 2};
    return tg_softmax_xent(t, T(t, 3, 5, F64), y, (enum tg_reduction)7);
}
static struct tg_tensor *emb_negative(struct tg_tape *t)
{
    const int32_t ids[3] = {1, -1, 2};
    return tg_embedding(t, T(t, 6, 4, F64), ids, 3);
}
static struct tg_tensor *emb_too_big(struct tg_tape *t)
{
    const int32_t ids[2] = {5, 6};
    return tg_embedding(t, T(t, 6, 4, F32), ids, 2);
}
static struct tg_tensor *emb_no_ids(struct tg_tape *t) { return tg_embedding(t, T(t, 6, 4, F64), NULL, 2); }
static struct tg_tensor *mse_shape(struct tg_tape *t)
{
    return tg_mse(t, T(t, 2, 3, F64), T(t, 3, 2, F64), TG_REDUCE_SUM);
}
static struct tg_tensor *mse_reduction(struct tg_tape *t)
{
    return tg_mse(t, T(t, 2, 3, F64), T(t, 2, 3, F64), (enum tg_reduction)-1);
}
static struct tg_tensor *affine_nan(struct tg_tape *t) { return tg_affine(t, T(t, 2, 2, F64), NAN, 1.0); }
static struct tg_tensor *tensor_zero_rows(struct tg_tape *t) { return tg_tensor_new(t, 0, 3, F64); }
static struct tg_tensor *tensor_neg_cols(struct tg_tape *t) { return tg_tensor_new(t, 2, -4, F32); }
static struct tg_tensor *null_input(struct tg_tape *t) { return tg_tanh(t, NULL); }

static const struct err_case cases[] = {
    {"matmul inner", matmul_inner, TG_ERR_SHAPE, {"tg_matmul: inner dimensions differ: (3x4) @ (5x2)"}},
    {"matmul transposed", matmul_trans, TG_ERR_SHAPE, {"tg_matmul", "(4x3)^T", "(2x5)"}},
    {"matmul dtypes", matmul_dtype, TG_ERR_DTYPE, {"tg_matmul", "float32 (3x4)", "float64 (4x2)"}},
    {"add cols", add_cols, TG_ERR_SHAPE, {"tg_add", "(2x3) + (3x2)"}},
    {"add rows", add_rows, TG_ERR_SHAPE, {"tg_add", "(2x3) + (3x3)"}},
    {"add bias width", add_row_width, TG_ERR_SHAPE, {"tg_add", "(4x3) + (1x2)"}},
    {"sub broadcast", sub_bcast, TG_ERR_SHAPE, {"tg_sub", "(1x5) - (4x3)"}},
    {"mul broadcast", mul_bcast, TG_ERR_SHAPE, {"tg_mul", "(2x5) * (3x5)"}},
    {"add dtypes", add_dtype, TG_ERR_DTYPE, {"tg_add", "float32 (2x3)", "float64 (2x3)"}},
    {"sub dtypes", sub_dtype, TG_ERR_DTYPE, {"tg_sub", "float64 (2x3)", "float32 (1x3)"}},
    {"mul dtypes", mul_dtype, TG_ERR_DTYPE, {"tg_mul", "float64 (2x3)", "float32 (2x3)"}},
    {"mse dtypes", mse_dtype, TG_ERR_DTYPE, {"tg_mse", "float32 (2x3)", "float64 (2x3)"}},
    {"concat dtypes", concat_dtype, TG_ERR_DTYPE, {"tg_concat", "float32 (2x2)", "float64 (2x4)"}},
    {"concat rows", concat_rows, TG_ERR_SHAPE, {"tg_concat", "input 2", "(3x3)", "(2x3)", "rows"}},
    {"concat cols", concat_cols, TG_ERR_SHAPE, {"tg_concat", "(2x4)", "(2x3)", "columns"}},
    {"concat axis 2", concat_axis, TG_ERR_VALUE, {"tg_concat", "axis", "2", "(2x3)"}},
    {"concat axis -1", concat_axis_neg, TG_ERR_VALUE, {"tg_concat", "axis", "-1", "(2x3)"}},
    {"concat n=0", concat_none, TG_ERR_VALUE, {"tg_concat", "at least one input", "got 0"}},
    {"concat n<0", concat_neg_n, TG_ERR_VALUE, {"tg_concat", "got -3"}},
    {"slice end", slice_end, TG_ERR_SHAPE, {"tg_slice", "[2, 7)", "columns", "(4x5)"}},
    {"slice start", slice_start, TG_ERR_SHAPE, {"tg_slice", "[-1, 2)", "rows", "(4x5)"}},
    {"slice empty", slice_empty, TG_ERR_SHAPE, {"tg_slice", "[3, 3)", "(4x5)"}},
    {"slice rows", slice_rows, TG_ERR_SHAPE, {"tg_slice", "[2, 5)", "rows", "(4x5)"}},
    {"slice axis", slice_axis, TG_ERR_VALUE, {"tg_slice", "axis", "3", "(4x5)"}},
    {"xent label C", xent_label_high, TG_ERR_VALUE, {"tg_softmax_xent", "label 5", "row 1", "(3x5)"}},
    {"xent label -2", xent_label_m2, TG_ERR_VALUE, {"tg_softmax_xent", "label -2", "row 2", "(3x5)"}},
    {"xent labels NULL", xent_labels_null, TG_ERR_VALUE, {"tg_softmax_xent", "NULL", "(3x5)"}},
    {"xent reduction", xent_reduction, TG_ERR_VALUE, {"tg_softmax_xent", "reduction 7", "(3x5)"}},
    {"embedding id -1", emb_negative, TG_ERR_VALUE, {"tg_embedding", "id -1", "position 1", "(6x4)"}},
    {"embedding id rows", emb_too_big, TG_ERR_VALUE, {"tg_embedding", "id 6", "position 1", "(6x4)"}},
    {"embedding ids NULL", emb_no_ids, TG_ERR_VALUE, {"tg_embedding", "NULL", "(6x4)"}},
    {"mse shapes", mse_shape, TG_ERR_SHAPE, {"tg_mse", "(2x3)", "(3x2)"}},
    {"mse reduction", mse_reduction, TG_ERR_VALUE, {"tg_mse", "reduction -1", "(2x3)"}},
    {"affine NaN", affine_nan, TG_ERR_VALUE, {"tg_affine", "nan", "(2x2)"}},
    {"tensor 0 rows", tensor_zero_rows, TG_ERR_SHAPE, {"tg_tensor_new", "(0x3)"}},
    {"tensor -4 cols", tensor_neg_cols, TG_ERR_SHAPE, {"tg_tensor_new", "(2x-4)"}},
    {"first NULL input", null_input, TG_ERR_VALUE, {"tg_tanh", "NULL"}},
};

static void test_op_errors(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct err_case *c = &cases[i];
        tg_tape_reset(t);
        tg_error_clear();
        struct tg_tensor *y = c->call(t);
        if (y) fail_msg("%s: expected NULL", c->label);
        if (tg_tape_status(t) != c->want)
            fail_msg("%s: status %s, want %s (%s)", c->label, tg_status_name(tg_tape_status(t)),
                     tg_status_name(c->want), tg_last_error());
        check_message(tg_last_error(), c->needles);
        assert_string_equal(tg_tape_error(t), tg_last_error());
        /* nothing half-recorded: the failing op appended no node */
        assert_int_equal(tg_tape_num_nodes(t), 0);
    }
    /* the matmul message is exactly the documented one */
    tg_tape_reset(t);
    assert_null(matmul_inner(t));
    assert_string_equal(tg_last_error(), "tg_matmul: inner dimensions differ: (3x4) @ (5x2)");
    /* reset clears the tape's error; a good op afterwards records normally */
    tg_tape_reset(t);
    assert_int_equal(tg_tape_status(t), TG_OK);
    assert_string_equal(tg_tape_error(t), "");
    assert_non_null(tg_tanh(t, T(t, 2, 2, F64)));
    assert_int_equal(tg_tape_status(t), TG_OK);
    tg_tape_free(t);
}

/* The tape keeps the first error; the thread's last error is the latest one. */
static void test_first_error_sticks(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    assert_null(matmul_inner(t));
    char first[256];
    snprintf(first, sizeof first, "%s", tg_last_error());
    assert_null(add_cols(t)); /* a second, independent failure */
    check_message(tg_last_error(), (const char *[]){"tg_add", "(2x3) + (3x2)", NULL});
    assert_int_equal(tg_tape_status(t), TG_ERR_SHAPE);
    assert_string_equal(tg_tape_error(t), first);
    assert_null(concat_axis(t)); /* a different status does not replace the first either */
    assert_int_equal(tg_tape_status(t), TG_ERR_SHAPE);
    assert_string_equal(tg_tape_error(t), first);
    /* backward reports the tape's first error, not the latest */
    struct tg_tensor *L = tg_sum(t, T(t, 2, 2, F64));
    assert_non_null(L); /* ops on good inputs still compute */
    assert_int_equal(tg_backward(t, L), TG_ERR_SHAPE);
    assert_string_equal(tg_last_error(), first);
    tg_tape_free(t);
}

/* A NULL from a failed op flows through five more ops quietly: the first message survives. */
static void test_null_chain_quiet(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *W = tg_param_new("W", 3, 3, TG_F64);
    assert_non_null(W);
    struct tg_tensor *x = T(t, 2, 3, F64);
    struct tg_tensor *a = tg_matmul(t, x, x, 0, 0); /* (2x3) @ (2x3) */
    assert_null(a);
    char first[256];
    snprintf(first, sizeof first, "%s", tg_last_error());
    check_message(first, (const char *[]){"tg_matmul: inner dimensions differ: (2x3) @ (2x3)", NULL});
    struct tg_tensor *b = tg_tanh(t, a);
    struct tg_tensor *c = tg_add(t, b, x);
    struct tg_tensor *d = tg_matmul(t, c, W, 0, 0);
    struct tg_tensor *e = tg_slice(t, d, 1, 0, 2);
    struct tg_tensor *f = tg_concat2(t, 1, e, x);
    struct tg_tensor *g = tg_softmax_xent(t, f, (const int32_t[]){0, 1}, TG_REDUCE_MEAN);
    struct tg_tensor *h = tg_detach(t, g);
    assert_true(!b && !c && !d && !e && !f && !g && !h);
    assert_string_equal(tg_last_error(), first);
    assert_int_equal(tg_tape_status(t), TG_ERR_SHAPE);
    assert_string_equal(tg_tape_error(t), first);
    assert_int_equal(tg_tape_num_nodes(t), 0);
    /* backward on the NULL loss: the first error again, still the same message */
    assert_int_equal(tg_backward(t, g), TG_ERR_SHAPE);
    assert_string_equal(tg_last_error(), first);
    for (int i = 0; i < 9; i++) assert_true(tg_grad_get(W, i / 3, i % 3) == 0.0);
    tg_tensor_free(W);
    tg_tape_free(t);
}

/* -------------------------------------------------------------------- backward */

static void test_backward_errors(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *W = tg_param_new("W", 3, 2, TG_F64);
    tg_tensor_fill(W, 0.5);

    /* non-scalar loss */
    struct tg_tensor *y = tg_matmul(t, T(t, 4, 3, F64), W, 0, 0);
    assert_int_equal(tg_backward(t, y), TG_ERR_SHAPE);
    check_message(tg_last_error(), (const char *[]){"tg_backward", "(4x2)", "1x1", NULL});
    assert_true(W->grad && tg_grad_get(W, 0, 0) == 0.0);
    /* a backward misuse is not an op error: the tape stays usable (a scalar loss works) */
    assert_int_equal(tg_tape_status(t), TG_OK);
    struct tg_tensor *L = tg_sum(t, y);
    assert_int_equal(tg_backward(t, L), TG_OK);
    double g = tg_grad_get(W, 1, 1);
    assert_true(g != 0.0);

    /* twice without reset: refused, gradients not added again */
    assert_int_equal(tg_backward(t, L), TG_ERR_STATE);
    check_message(tg_last_error(), (const char *[]){"tg_backward", "reset", NULL});
    assert_true(tg_grad_get(W, 1, 1) == g);

    /* NULL loss on a clean tape */
    tg_tape_reset(t);
    assert_int_equal(tg_backward(t, NULL), TG_ERR_VALUE);
    check_message(tg_last_error(), (const char *[]){"tg_backward", "NULL", NULL});

    /* a loss that depends on no gradient-requiring tensor */
    tg_tape_reset(t);
    struct tg_tensor *data = T(t, 2, 3, F64);
    L = tg_sum(t, tg_tanh(t, data));
    assert_non_null(L);
    assert_int_equal(tg_backward(t, L), TG_ERR_STATE);
    check_message(tg_last_error(), (const char *[]){"tg_backward", "requires a gradient", NULL});
    assert_null(data->grad);

    /* a 1×1 leaf that was never recorded */
    assert_int_equal(tg_backward(t, T(t, 1, 1, F64)), TG_ERR_STATE);
    check_message(tg_last_error(), (const char *[]){"tg_backward", NULL});

    /* a loss recorded on another tape */
    struct tg_tape *other = tg_tape_new(0);
    struct tg_tensor *L2 = tg_sum(t, tg_matmul(t, T(t, 1, 3, F64), W, 0, 0));
    assert_int_equal(tg_backward(other, L2), TG_ERR_STATE);
    check_message(tg_last_error(), (const char *[]){"tg_backward", "this tape", NULL});
    tg_tape_free(other);
    tg_tensor_free(W);
    tg_tape_free(t);
}

/* ------------------------------------------------------ no tape: params, gradcheck */

static void test_param_new_bad_shape(void **state)
{
    (void)state;
    const int shapes[][2] = {{0, 3}, {3, 0}, {-2, 4}, {4, -1}, {0, 0}};
    for (int i = 0; i < 5; i++) {
        tg_error_clear();
        assert_null(tg_param_new("W", shapes[i][0], shapes[i][1], TG_F64));
        char shape[32];
        snprintf(shape, sizeof shape, "(%dx%d)", shapes[i][0], shapes[i][1]);
        check_message(tg_last_error(), (const char *[]){"tg_param_new", shape, NULL});
        assert_null(tg_tensor_new_heap(shapes[i][0], shapes[i][1], TG_F32));
        check_message(tg_last_error(), (const char *[]){"tg_tensor_new_heap", shape, NULL});
    }
    assert_null(tg_param_new("W", 2, 2, (enum tg_dtype)5));
    check_message(tg_last_error(), (const char *[]){"tg_param_new", "dtype", NULL});
}

static int loss_calls;

static struct tg_tensor *sq_loss(struct tg_tape *t, void *ctx)
{
    loss_calls++;
    struct tg_tensor *x = ctx;
    return tg_sum(t, tg_mul(t, x, x));
}

static void test_gradcheck_rejects_float32(void **state)
{
    (void)state;
    struct tg_tensor *x = tg_param_new("x", 2, 3, TG_F32);
    struct tg_gradcheck_report rep;
    loss_calls = 0;
    assert_int_equal(tg_gradcheck(sq_loss, x, &x, 1, NULL, &rep), TG_ERR_DTYPE);
    check_message(tg_last_error(), (const char *[]){"tg_gradcheck", "(2x3)", "float32", "float64", NULL});
    assert_int_equal(loss_calls, 0);
    assert_false(rep.passed);

    /* a float64 tensor without a gradient buffer, and a NULL one */
    struct tg_tensor *d = tg_tensor_new_heap(3, 2, TG_F64);
    assert_int_equal(tg_gradcheck(sq_loss, d, &d, 1, NULL, &rep), TG_ERR_VALUE);
    check_message(tg_last_error(), (const char *[]){"tg_gradcheck", "(3x2)", "gradient", NULL});
    struct tg_tensor *none = NULL;
    assert_int_equal(tg_gradcheck(sq_loss, d, &none, 1, NULL, &rep), TG_ERR_VALUE);
    check_message(tg_last_error(), (const char *[]){"tg_gradcheck", "NULL", NULL});
    assert_int_equal(tg_gradcheck(sq_loss, d, &d, 1, NULL, NULL), TG_ERR_VALUE);
    check_message(tg_last_error(), (const char *[]){"tg_gradcheck", "report", NULL});

    /* and the good case still works */
    struct tg_tensor *y = tg_param_new("y", 2, 2, TG_F64);
    tg_tensor_fill(y, 0.75);
    assert_int_equal(tg_gradcheck(sq_loss, y, &y, 1, NULL, &rep), TG_OK);
    assert_true(rep.passed);
    assert_int_equal(rep.checked, 4);
    tg_tensor_free(x);
    tg_tensor_free(d);
    tg_tensor_free(y);
}

/* A loss function that fails inside gradcheck: the op's message is passed on. */
static struct tg_tensor *bad_loss(struct tg_tape *t, void *ctx)
{
    struct tg_tensor *x = ctx;
    return tg_sum(t, tg_matmul(t, x, x, 0, 0));
}

static void test_gradcheck_failing_loss(void **state)
{
    (void)state;
    struct tg_tensor *x = tg_param_new("x", 2, 3, TG_F64);
    struct tg_gradcheck_report rep;
    assert_int_equal(tg_gradcheck(bad_loss, x, &x, 1, NULL, &rep), TG_ERR_VALUE);
    check_message(tg_last_error(),
                  (const char *[]){"tg_gradcheck", "tg_matmul: inner dimensions differ: (2x3) @ (2x3)", NULL});
    tg_tensor_free(x);
}

/* Heap-tensor helpers with bad arguments. */
static void test_tensor_helpers(void **state)
{
    (void)state;
    struct tg_tensor *a = tg_tensor_new_heap(2, 3, TG_F64), *b = tg_tensor_new_heap(3, 2, TG_F32);
    assert_int_equal(tg_tensor_copy(a, b), TG_ERR_SHAPE);
    check_message(tg_last_error(), (const char *[]){"tg_tensor_copy", "(2x3)", "(3x2)", NULL});
    assert_int_equal(tg_tensor_copy(a, NULL), TG_ERR_VALUE);
    check_message(tg_last_error(), (const char *[]){"tg_tensor_copy", "NULL", NULL});
    struct tg_tape *t = tg_tape_new(0);
    assert_int_equal(tg_tensor_set_requires_grad(T(t, 2, 2, F64)), TG_ERR_STATE);
    check_message(tg_last_error(), (const char *[]){"tg_tensor_set_requires_grad", NULL});
    tg_tape_free(t);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_errors),
        cmocka_unit_test(test_first_error_sticks),
        cmocka_unit_test(test_null_chain_quiet),
        cmocka_unit_test(test_backward_errors),
        cmocka_unit_test(test_param_new_bad_shape),
        cmocka_unit_test(test_gradcheck_rejects_float32),
        cmocka_unit_test(test_gradcheck_failing_loss),
        cmocka_unit_test(test_tensor_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
