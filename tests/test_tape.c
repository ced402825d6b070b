/* test_tape.c — the tape's contract, one behaviour per test: gradients accumulate (+=) over
 * uses, time steps and backward calls; what cannot reach a gradient is skipped; tg_detach and
 * no-grad mode cut history; tg_tape_reset makes a step loop heap-silent after warm-up; tags
 * land in nodes; the arena hands out 64-byte aligned memory; a slice's backward adds into its
 * region only, so splitting a T·B-row tensor into T slices costs linear work.
 *
 * In the non-sanitizer build this file replaces malloc & co. with counting forwarders to
 * glibc's allocator, so "no heap allocation after warm-up" is measured on the real heap, not
 * only through the tape's own counter. (ASan owns malloc, so there only the counters are used.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "tapegrad.h"
#include "tapegrad_ops.h"
#include "internal.h" /* TG_PRIV: no stage may outlive a failed backward */

/* ------------------------------------------------------- heap allocation counter */

#include "malloc_count.h"

/* -------------------------------------------------------------------- helpers */

static struct tg_tensor *param(const char *name, int r, int c, enum tg_dtype dt, double base)
{
    struct tg_tensor *p = tg_param_new(name, r, c, dt);
    assert_non_null(p);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++) tg_set(p, i, j, base + 0.1 * i - 0.07 * j + 0.013 * i * j);
    return p;
}

static struct tg_tensor *input(struct tg_tape *t, int r, int c, enum tg_dtype dt, double base)
{
    struct tg_tensor *x = tg_tensor_new(t, r, c, dt);
    assert_non_null(x);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++) tg_set(x, i, j, base + 0.05 * j - 0.11 * i + 0.007 * i * j);
    return x;
}

static void assert_close(double got, double want, double rtol)
{
    double err = fabs(got - want), scale = fmax(1.0, fabs(want));
    if (!(err <= rtol * scale)) fail_msg("got %.17g, want %.17g (|err| %.3g)", got, want, err);
}

/* ------------------------------------------------------------ accumulation */

/* x used three times: L = Σ (x⊙x + 3x) + Σ h⊙h + Σ h with h = tanh(x) (an activation also used
 * three times). dL/dx = 2x + 3 + (2h + 1)(1 − h²). */
static void test_tensor_used_twice(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *x = param("x", 2, 3, TG_F64, 0.3);
    struct tg_tensor *h = tg_tanh(t, x);
    struct tg_tensor *a = tg_sum(t, tg_add(t, tg_mul(t, x, x), tg_affine(t, x, 3.0, 0.0)));
    struct tg_tensor *b = tg_add(t, tg_sum(t, tg_mul(t, h, h)), tg_sum(t, h));
    struct tg_tensor *L = tg_add(t, a, b);
    assert_non_null(L);
    assert_int_equal(tg_backward(t, L), TG_OK);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            double v = tg_get(x, i, j), hv = tanh(v);
            assert_close(tg_grad_get(x, i, j), 2 * v + 3 + (2 * hv + 1) * (1 - hv * hv), 1e-14);
            assert_close(tg_grad_get(h, i, j), 2 * hv + 1, 1e-14);
        }
    /* the same tensor as both operands of one op: Σ x + x → 2 */
    tg_tape_reset(t);
    tg_tensor_zero_grad(x);
    assert_int_equal(tg_backward(t, tg_sum(t, tg_add(t, x, x))), TG_OK);
    for (int j = 0; j < 3; j++) assert_close(tg_grad_get(x, 1, j), 2.0, 0);
    tg_tensor_free(x);
    tg_tape_free(t);
}

/* A weight used at each of 20 steps: L = Σ_s Σ tanh(x_s·W + b), x_s (2×3) different per step.
 * Per step: dW_s = x_sᵀ(1 − y_s²), db_s = column sums of (1 − y_s²); the tape must give Σ_s. */
static void test_weight_used_every_step(void **state)
{
    (void)state;
    enum { S = 20, B = 2, I = 3, H = 4 };
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *W = param("W", I, H, TG_F64, -0.2);
    struct tg_tensor *b = param("b", 1, H, TG_F64, 0.1);
    double dW[I][H] = {{0}}, db[H] = {0};
    struct tg_tensor *L = NULL;
    for (int s = 0; s < S; s++) {
        struct tg_tensor *x = input(t, B, I, TG_F64, 0.1 * s - 1.0);
        struct tg_tensor *y = tg_tanh(t, tg_add(t, tg_matmul(t, x, W, 0, 0), b));
        struct tg_tensor *ls = tg_sum(t, y);
        L = L ? tg_add(t, L, ls) : ls;
        for (int r = 0; r < B; r++)
            for (int j = 0; j < H; j++) {
                double z = tg_get(b, 0, j);
                for (int k = 0; k < I; k++) z += tg_get(x, r, k) * tg_get(W, k, j);
                double g = 1 - tanh(z) * tanh(z);
                db[j] += g;
                for (int k = 0; k < I; k++) dW[k][j] += tg_get(x, r, k) * g;
            }
    }
    assert_non_null(L);
    assert_int_equal(tg_backward(t, L), TG_OK);
    for (int j = 0; j < H; j++) {
        assert_close(tg_grad_get(b, 0, j), db[j], 1e-13);
        for (int k = 0; k < I; k++) assert_close(tg_grad_get(W, k, j), dW[k][j], 1e-13);
    }
    tg_tensor_free(W);
    tg_tensor_free(b);
    tg_tape_free(t);
}

/* Parameter gradients survive tg_tape_reset and add up over backward calls until zeroed. */
static void one_step(struct tg_tape *t, struct tg_tensor *W)
{
    tg_tape_reset(t);
    struct tg_tensor *x = input(t, 3, 2, W->dtype, 0.4);
    struct tg_tensor *L = tg_sum(t, tg_sigmoid(t, tg_matmul(t, x, W, 0, 1)));
    assert_int_equal(tg_backward(t, L), TG_OK);
}

static void test_param_grad_accumulates_across_calls(void **state)
{
    (void)state;
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        struct tg_tape *t = tg_tape_new(0);
        struct tg_tensor *W = param("W", 4, 2, (enum tg_dtype)dt, 0.2);
        double g1[8];
        one_step(t, W);
        for (int i = 0; i < 8; i++) g1[i] = tg_grad_get(W, i / 2, i % 2);
        for (int i = 0; i < 8; i++) assert_true(g1[i] != 0.0);
        one_step(t, W);
        for (int i = 0; i < 8; i++) assert_close(tg_grad_get(W, i / 2, i % 2), 2 * g1[i], 0);
        one_step(t, W);
        for (int i = 0; i < 8; i++)
            assert_close(tg_grad_get(W, i / 2, i % 2), 3 * g1[i], dt == TG_F32 ? 1e-6 : 1e-15);
        tg_tensor_zero_grad(W);
        for (int i = 0; i < 8; i++) assert_true(tg_grad_get(W, i / 2, i % 2) == 0.0);
        one_step(t, W);
        for (int i = 0; i < 8; i++) assert_close(tg_grad_get(W, i / 2, i % 2), g1[i], 0);
        tg_tensor_free(W);
        tg_tape_free(t);
    }
}

/* ------------------------------------------------------------------ skipping */

static void test_unreachable_nodes_skipped(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *W = param("W", 3, 4, TG_F64, 0.5);
    struct tg_tensor *xa = input(t, 2, 3, TG_F64, 0.2);           /* arena data */
    struct tg_tensor *xh = tg_tensor_new_heap(2, 3, TG_F64);       /* heap data */
    assert_non_null(xh);
    tg_tensor_fill(xh, 0.25);

    /* A no-grad island feeding the loss: u depends only on data. */
    struct tg_tensor *u = tg_tanh(t, tg_add(t, xa, xh));
    assert_false(tg_requires_grad(u));
    struct tg_tensor *m = tg_matmul(t, u, W, 0, 0);                 /* 2×4 */
    /* A side branch that needs W but never reaches the loss. */
    struct tg_tensor *side_mm = tg_matmul(t, xa, W, 0, 0);
    struct tg_tensor *side = tg_tanh(t, side_mm);
    struct tg_tensor *L = tg_sum(t, m);
    /* Recorded after the loss: backward starts at the loss and never sees it. */
    struct tg_tensor *after = tg_sum(t, tg_relu(t, tg_matmul(t, xh, W, 0, 0)));
    assert_non_null(side);
    assert_non_null(after);
    assert_int_equal(tg_backward(t, L), TG_OK);

    assert_null(xa->grad);
    assert_null(xh->grad);
    assert_null(u->grad);
    assert_null(side_mm->grad);
    assert_null(side->grad);
    assert_null(after->grad);
    /* dW = uᵀ·1 from the loss branch only */
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++)
            assert_close(tg_grad_get(W, k, j), tg_get(u, 0, k) + tg_get(u, 1, k), 1e-15);
    tg_tensor_free(W);
    tg_tensor_free(xh);
    tg_tape_free(t);
}

/* ----------------------------------------------------------- detach, no-grad */

static void test_detach_cuts_history(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *W = param("W", 3, 2, TG_F64, 0.3);
    struct tg_tensor *v = param("v", 4, 2, TG_F64, -0.1);
    struct tg_tensor *x = input(t, 4, 3, TG_F64, 0.5);
    struct tg_tensor *h = tg_tanh(t, tg_matmul(t, x, W, 0, 0));
    struct tg_tensor *d = tg_detach(t, h);
    assert_non_null(d);
    assert_null(d->node);
    assert_false(tg_requires_grad(d));
    assert_ptr_not_equal(d->data, h->data);
    assert_memory_equal(d->data, h->data, tg_nbytes(h));

    /* Only through d: v gets d, W gets nothing, and h is never reached. */
    assert_int_equal(tg_backward(t, tg_sum(t, tg_mul(t, d, v))), TG_OK);
    for (int i = 0; i < 8; i++) assert_close(tg_grad_get(v, i / 2, i % 2), tg_get(d, i / 2, i % 2), 0);
    for (int i = 0; i < 6; i++) assert_true(tg_grad_get(W, i / 2, i % 2) == 0.0);
    assert_null(h->grad);
    assert_null(d->grad);

    /* Both paths: L = Σ (h + detach(h)) → dh = 1 (not 2), dW = xᵀ(1 − h²). */
    tg_tape_reset(t);
    tg_tensor_zero_grad(W);
    x = input(t, 4, 3, TG_F64, 0.5);
    h = tg_tanh(t, tg_matmul(t, x, W, 0, 0));
    d = tg_detach(t, h);
    assert_int_equal(tg_backward(t, tg_sum(t, tg_add(t, h, d))), TG_OK);
    for (int i = 0; i < 8; i++) assert_close(tg_grad_get(h, i / 2, i % 2), 1.0, 0);
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 2; j++) {
            double want = 0;
            for (int r = 0; r < 4; r++) want += tg_get(x, r, k) * (1 - pow(tg_get(h, r, j), 2));
            assert_close(tg_grad_get(W, k, j), want, 1e-14);
        }
    assert_null(d->grad);
    tg_tensor_free(W);
    tg_tensor_free(v);
    tg_tape_free(t);
}

static struct tg_tensor *small_net(struct tg_tape *t, struct tg_tensor *W, struct tg_tensor *b,
                                   const int32_t *labels)
{
    struct tg_tensor *x = input(t, 3, 4, W->dtype, -0.3);
    struct tg_tensor *h = tg_relu(t, tg_add(t, tg_matmul(t, x, W, 0, 1), b));
    struct tg_tensor *z = tg_concat2(t, 1, tg_sigmoid(t, h), tg_slice(t, h, 1, 0, 2));
    return tg_softmax_xent(t, z, labels, TG_REDUCE_MEAN);
}

static void test_no_grad_records_nothing(void **state)
{
    (void)state;
    const int32_t labels[3] = {0, 4, 2};
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        struct tg_tape *t = tg_tape_new(0);
        struct tg_tensor *W = param("W", 3, 4, (enum tg_dtype)dt, 0.4);
        struct tg_tensor *b = param("b", 1, 3, (enum tg_dtype)dt, 0.05);
        struct tg_tensor *L1 = small_net(t, W, b, labels);
        assert_non_null(L1);
        size_t nodes = tg_tape_num_nodes(t);
        assert_true(nodes >= 7);
        double v1 = tg_get(L1, 0, 0);

        tg_tape_reset(t);
        assert_int_equal(tg_tape_set_no_grad(t, 1), 0);
        assert_int_equal(tg_tape_no_grad(t), 1);
        struct tg_tensor *L2 = small_net(t, W, b, labels);
        assert_non_null(L2);
        assert_int_equal(tg_tape_num_nodes(t), 0);
        assert_null(L2->node);
        assert_false(tg_requires_grad(L2));
        assert_true(tg_get(L2, 0, 0) == v1); /* bit-identical values */
        assert_int_equal(tg_backward(t, L2), TG_ERR_STATE);
        assert_int_equal(tg_tape_set_no_grad(t, 0), 1);
        for (int i = 0; i < 12; i++) assert_true(tg_grad_get(W, i / 4, i % 4) == 0.0);

        /* recording resumes */
        tg_tape_reset(t);
        assert_non_null(small_net(t, W, b, labels));
        assert_int_equal(tg_tape_num_nodes(t), nodes);
        tg_tensor_free(W);
        tg_tensor_free(b);
        tg_tape_free(t);
    }
}

/* ------------------------------------------------------ reset, no heap use */

static void test_reset_reuses_memory(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(4096); /* small first block: the step needs several */
    struct tg_tensor *W = param("W", 3, 4, TG_F64, 0.4);
    struct tg_tensor *b = param("b", 1, 3, TG_F64, 0.05);
    const int32_t labels[3] = {1, 0, 3};
    struct tg_tensor *L = small_net(t, W, b, labels);
    assert_int_equal(tg_backward(t, L), TG_OK);
    size_t nodes = tg_tape_num_nodes(t), used = tg_tape_arena_used(t);
    size_t cap = tg_tape_arena_capacity(t), allocs = tg_tape_heap_allocs(t);
    assert_true(used > 0 && used <= cap);
    double g0 = tg_grad_get(W, 1, 2);

    tg_tape_reset(t);
    assert_int_equal(tg_tape_num_nodes(t), 0);
    assert_int_equal(tg_tape_arena_used(t), 0);
    assert_null(tg_tape_node(t, 0));
    assert_int_equal(tg_tape_status(t), TG_OK);
    for (int step = 0; step < 5; step++) {
        tg_tensor_zero_grad(W);
        size_t calls = heap_calls();
        L = small_net(t, W, b, labels);
        assert_int_equal(tg_backward(t, L), TG_OK);
        assert_int_equal(heap_calls(), calls);
        assert_int_equal(tg_tape_num_nodes(t), nodes);
        assert_int_equal(tg_tape_arena_used(t), used);
        assert_int_equal(tg_tape_arena_capacity(t), cap);
        assert_int_equal(tg_tape_heap_allocs(t), allocs);
        assert_true(tg_grad_get(W, 1, 2) == g0);
        tg_tape_reset(t);
    }
    tg_tensor_free(W);
    tg_tensor_free(b);
    tg_tape_free(t);
}

/* A tiny RNN language model trained for 30 steps: inputs projected by one GEMM and split by
 * row slices, a cell h = tanh([x_t, h]·Wcᵀ + b), outputs stacked by a row concat, fused
 * softmax-xent, SGD. From the second step on nothing may touch the heap. */
enum { RT = 6, RB = 2, RI = 3, RE = 4, RH = 5, RV = 7 };

struct rnn {
    struct tg_tensor *We, *Wc, *b, *Wy;
};

static void sgd(struct tg_tensor *p, double lr)
{
    for (int i = 0; i < p->rows; i++)
        for (int j = 0; j < p->cols; j++) tg_set(p, i, j, tg_get(p, i, j) - lr * tg_grad_get(p, i, j));
    tg_tensor_zero_grad(p);
}

static double rnn_step(struct tg_tape *t, struct rnn *m, int step)
{
    int32_t labels[RT * RB];
    struct tg_tensor *hs[RT];
    struct tg_tensor *X = tg_tensor_new(t, RT * RB, RI, m->We->dtype);
    assert_non_null(X);
    for (int r = 0; r < RT * RB; r++) {
        labels[r] = (r * 3 + 1) % RV;
        for (int k = 0; k < RI; k++) tg_set(X, r, k, sin(0.3 * r + k + 0.01 * step));
    }
    struct tg_tensor *P = tg_matmul(t, X, m->We, 0, 1); /* (T·B)×E in one GEMM */
    struct tg_tensor *h = tg_tensor_new(t, RB, RH, m->We->dtype);
    for (int s = 0; s < RT; s++) {
        tg_tape_set_tag(t, s, 0);
        struct tg_tensor *x = tg_slice(t, P, 0, s * RB, (s + 1) * RB);
        h = tg_tanh(t, tg_add(t, tg_matmul(t, tg_concat2(t, 1, x, h), m->Wc, 0, 1), m->b));
        hs[s] = h;
    }
    tg_tape_set_tag(t, -1, -1);
    struct tg_tensor *logits = tg_matmul(t, tg_concat(t, 0, RT, hs), m->Wy, 0, 1);
    struct tg_tensor *L = tg_softmax_xent(t, logits, labels, TG_REDUCE_MEAN);
    assert_non_null(L);
    assert_int_equal(tg_backward(t, L), TG_OK);
    double loss = tg_get(L, 0, 0);
    sgd(m->We, 0.5);
    sgd(m->Wc, 0.5);
    sgd(m->b, 0.5);
    sgd(m->Wy, 0.5);
    tg_tape_reset(t);
    return loss;
}

static void test_rnn_loop_heap_silent(void **state)
{
    (void)state;
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        struct rnn m = {
            param("We", RE, RI, (enum tg_dtype)dt, 0.1),
            param("Wc", RH, RE + RH, (enum tg_dtype)dt, -0.2),
            param("b", 1, RH, (enum tg_dtype)dt, 0.0),
            param("Wy", RV, RH, (enum tg_dtype)dt, 0.05),
        };
        struct tg_tape *t = tg_tape_new(8192);
        double first = rnn_step(t, &m, 0);
        size_t cap = tg_tape_arena_capacity(t), allocs = tg_tape_heap_allocs(t);
        assert_true(allocs > 0);
        double last = first;
        for (int step = 1; step < 30; step++) {
            size_t calls = heap_calls();
            last = rnn_step(t, &m, step);
            if (heap_calls() != calls)
                fail_msg("step %d made %zu heap allocations", step, heap_calls() - calls);
            assert_int_equal(tg_tape_arena_capacity(t), cap);
            assert_int_equal(tg_tape_heap_allocs(t), allocs);
        }
        assert_true(isfinite(last) && last < first); /* it learned something */
        tg_tensor_free(m.We);
        tg_tensor_free(m.Wc);
        tg_tensor_free(m.b);
        tg_tensor_free(m.Wy);
        tg_tape_free(t);
    }
}

/* ------------------------------------------------------------- tags, alignment */

static void test_tags_land_in_nodes(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *x = input(t, 2, 2, TG_F64, 0.1);
    struct tg_tensor *a = tg_tanh(t, x);
    tg_tape_set_tag(t, 7, 2);
    struct tg_tensor *b = tg_sigmoid(t, a);
    struct tg_tensor *c = tg_mul(t, a, b);
    tg_tape_set_tag(t, 8, -1);
    struct tg_tensor *d = tg_relu(t, c);
    tg_tape_set_tag(t, -1, -1);
    struct tg_tensor *e = tg_sum(t, d);
    assert_non_null(e);
    assert_int_equal(tg_tape_num_nodes(t), 5);
    const int want[5][2] = {{-1, -1}, {7, 2}, {7, 2}, {8, -1}, {-1, -1}};
    struct tg_tensor *outs[5] = {a, b, c, d, e};
    for (size_t i = 0; i < 5; i++) {
        struct tg_node *n = tg_tape_node(t, i);
        assert_non_null(n);
        assert_ptr_equal(n->out, outs[i]);
        assert_ptr_equal(outs[i]->node, n);
        assert_int_equal(n->index, i);
        assert_int_equal(n->step, want[i][0]);
        assert_int_equal(n->layer, want[i][1]);
    }
    assert_int_equal(tg_node_op(tg_tape_node(t, 2)), TG_OP_MUL);
    assert_ptr_equal(tg_tape_node(t, 2)->src[0], a);
    assert_ptr_equal(tg_tape_node(t, 2)->src[1], b);
    assert_null(tg_tape_node(t, 5));
    tg_tape_free(t);
}

#define ALIGNED(p) (((uintptr_t)(p) & 63u) == 0)

static void test_arena_alignment(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(1000); /* odd first block size */
    const size_t sizes[] = {1, 3, 63, 64, 65, 100, 7, 4096, 1, 3 << 20, 5, 129};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = tg_tape_alloc(t, sizes[i]);
        assert_non_null(p);
        assert_true(ALIGNED(p));
        memset(p, 0xab, sizes[i]); /* the whole piece is writable (ASan checks the bounds) */
    }
    struct tg_tensor *W = param("W", 3, 5, TG_F32, 0.2);
    assert_true(ALIGNED(W->data) && ALIGNED(W->grad));
    struct tg_tensor *x = input(t, 1, 3, TG_F32, 0.1);
    struct tg_tensor *y = tg_tanh(t, tg_matmul(t, x, W, 0, 0));
    struct tg_tensor *z = tg_slice(t, y, 1, 1, 4);
    struct tg_tensor *L = tg_sum(t, tg_mul(t, z, z));
    assert_int_equal(tg_backward(t, L), TG_OK);
    struct tg_tensor *ts[] = {x, y, z, L};
    for (int i = 0; i < 4; i++) assert_true(ALIGNED(ts[i]->data));
    struct tg_tensor *gs[] = {y, z, L};
    for (int i = 0; i < 3; i++) assert_true(gs[i]->grad && ALIGNED(gs[i]->grad));
    tg_tensor_free(W);
    tg_tape_free(t);
}

/* -------------------------------------------------------------------- slices */

/* Exact small values so float32 and float64 both compare exactly. */
static void test_slice_backward_region_only(void **state)
{
    (void)state;
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        for (int axis = 0; axis <= 1; axis++) {
            struct tg_tape *t = tg_tape_new(0);
            struct tg_tensor *x = tg_param_new("x", 4, 6, (enum tg_dtype)dt);
            int rows = axis == 0 ? 2 : 4, cols = axis == 0 ? 6 : 3;
            int r0 = axis == 0 ? 1 : 0, c0 = axis == 0 ? 0 : 2;
            struct tg_tensor *R = tg_tensor_new(t, rows, cols, (enum tg_dtype)dt);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 6; j++) {
                    tg_set(x, i, j, i - j);
                    /* an earlier gradient that must be kept, not overwritten */
                    if (dt == TG_F64) ((double *)x->grad)[i * 6 + j] = 100 + 10 * i + j;
                    else ((float *)x->grad)[i * 6 + j] = 100 + 10 * i + j;
                }
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) tg_set(R, i, j, 1 + i * cols + j);
            struct tg_tensor *s = axis == 0 ? tg_slice(t, x, 0, 1, 3) : tg_slice(t, x, 1, 2, 5);
            assert_non_null(s);
            assert_int_equal(s->rows, rows);
            assert_int_equal(s->cols, cols);
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) assert_true(tg_get(s, i, j) == (i + r0) - (j + c0));
            assert_int_equal(tg_backward(t, tg_sum(t, tg_mul(t, s, R))), TG_OK);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 6; j++) {
                    int in = i >= r0 && i < r0 + rows && j >= c0 && j < c0 + cols;
                    double want = 100 + 10 * i + j + (in ? tg_get(R, i - r0, j - c0) : 0);
                    assert_true(tg_grad_get(x, i, j) == want);
                }
            tg_tensor_free(x);
            tg_tape_free(t);
        }
    }
}

/* P = X·Wᵀ ((T·B)×H) split into T row slices s_t; L = Σ_t c_t Σ s_t with c_t = 1 + t mod 7.
 * Then dP[r] = c_{r/B} exactly and dW = dPᵀ·X. Returns the bytes backward took from the arena. */
static size_t split_case(int T, int check)
{
    enum { B = 2, I = 3, H = 4 };
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *W = param("W", H, I, TG_F64, 0.3);
    struct tg_tensor *X = input(t, T * B, I, TG_F64, 0.2);
    struct tg_tensor *P = tg_matmul(t, X, W, 0, 1);
    struct tg_tensor *L = NULL;
    for (int s = 0; s < T; s++) {
        struct tg_tensor *st = tg_slice(t, P, 0, s * B, (s + 1) * B);
        struct tg_tensor *term = tg_affine(t, tg_sum(t, st), 1 + s % 7, 0.0);
        L = L ? tg_add(t, L, term) : term;
    }
    assert_non_null(L);
    size_t fwd = tg_tape_arena_used(t);
    assert_int_equal(tg_backward(t, L), TG_OK);
    size_t bwd = tg_tape_arena_used(t) - fwd;
    /* gradient buffers are at most the activations again; a full-size temporary per slice
     * would be T·|P| on top */
    assert_true(bwd <= fwd);
    if (check) {
        for (int r = 0; r < T * B; r++)
            for (int j = 0; j < H; j++) assert_true(tg_grad_get(P, r, j) == 1 + (r / B) % 7);
        for (int h = 0; h < H; h++)
            for (int k = 0; k < I; k++) {
                double want = 0;
                for (int r = 0; r < T * B; r++) want += (1 + (r / B) % 7) * tg_get(X, r, k);
                assert_close(tg_grad_get(W, h, k), want, 1e-13);
            }
    }
    tg_tensor_free(W);
    tg_tape_free(t);
    return bwd;
}

static void test_sequence_split_linear(void **state)
{
    (void)state;
    size_t b100 = split_case(100, 1), b200 = split_case(200, 1), b400 = split_case(400, 0);
    /* linear in T: doubling T at most doubles (plus slack) the backward's memory */
    assert_true(b200 <= 2 * b100 + 4096);
    assert_true(b400 <= 2 * b200 + 4096);
}

/* Tensors past TG_OMP_MIN elements take the OpenMP path of the elementwise kernels; check it
 * against the closed form, and that repeating the step stays heap-silent there too.
 * L = Σ_rows xent(z) + Σ σ(u) ⊙ R,  z = relu(slice(u, cols 0..C)),  u = tanh(a·x + b) ⊙ x. */
static void test_large_tensors_parallel_path(void **state)
{
    (void)state;
    enum { N = 256, M = 160, C = 150 };
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *x = tg_param_new("x", N, M, TG_F64);
    struct tg_tensor *R = tg_tensor_new_heap(N, M, TG_F64);
    static int32_t labels[N];
    for (int i = 0; i < N; i++) {
        labels[i] = (i * 7) % C;
        for (int j = 0; j < M; j++) {
            tg_set(x, i, j, sin(0.01 * i * j + i));
            tg_set(R, i, j, cos(0.3 * i - 0.2 * j));
        }
    }
    size_t calls = 0;
    for (int step = 0; step < 3; step++) {
        tg_tensor_zero_grad(x);
        if (step == 2) calls = heap_calls();
        struct tg_tensor *u = tg_mul(t, tg_tanh(t, tg_affine(t, x, 0.7, 0.1)), x);
        struct tg_tensor *z = tg_relu(t, tg_slice(t, u, 1, 0, C));
        struct tg_tensor *L = tg_add(t, tg_softmax_xent(t, z, labels, TG_REDUCE_SUM),
                                     tg_sum(t, tg_mul(t, tg_sigmoid(t, u), R)));
        assert_non_null(L);
        assert_int_equal(tg_backward(t, L), TG_OK);
        if (step == 2) assert_int_equal(heap_calls(), calls);
        if (step == 0) {
            /* expected dx, row by row: softmax over relu(u[:, :C]) in double */
            double p[C];
            for (int i = 0; i < N; i++) {
                double mx = -INFINITY, s = 0;
                for (int j = 0; j < C; j++) mx = fmax(mx, tg_get(z, i, j));
                for (int j = 0; j < C; j++) s += (p[j] = exp(tg_get(z, i, j) - mx));
                for (int j = 0; j < M; j++) {
                    double xv = tg_get(x, i, j), th = tanh(0.7 * xv + 0.1), uv = th * xv;
                    double sg = 1 / (1 + exp(-uv));
                    double du = sg * (1 - sg) * tg_get(R, i, j);
                    if (j < C && uv > 0) du += p[j] / s - (j == labels[i]);
                    double want = du * (0.7 * (1 - th * th) * xv + th);
                    assert_close(tg_grad_get(x, i, j), want, 1e-12);
                }
            }
        }
        tg_tape_reset(t);
    }
    tg_tensor_free(x);
    tg_tensor_free(R);
    tg_tape_free(t);
}

/* Out of memory in the middle of backward is an error, not a crash, and leaves no engine state
 * behind: the deferred weight-gradient stages point into the arena and must be gone, so the
 * same tape, reset, runs the step again correctly. (Needs the allocator wrappers.) */
static void test_backward_out_of_memory_recovers(void **state)
{
    (void)state;
#if COUNT_MALLOC
    struct tg_tape *t = tg_tape_new(4096); /* small first block: backward must grow the arena */
    struct tg_tensor *W = tg_param_new("W", 8, 8, TG_F64);
    struct tg_rng r;
    tg_rng_seed(&r, 5);
    tg_tensor_uniform(W, &r, -0.5, 0.5);
    enum tg_status st[2];
    double g[2];
    for (int round = 0; round < 2; round++) {
        tg_tape_reset(t);
        tg_tensor_zero_grad(W);
        struct tg_tensor *h = tg_tensor_new(t, 4, 8, TG_F64);
        tg_tensor_fill(h, 0.1);
        for (int s = 0; s < 6; s++) h = tg_tanh(t, tg_matmul(t, h, W, 0, 1)); /* W used 6 times */
        struct tg_tensor *loss = tg_sum(t, h);
        assert_non_null(loss);
        heap_fail = round == 0;
        st[round] = tg_backward(t, loss);
        heap_fail = 0;
        assert_null(TG_PRIV(W)->stage);
        g[round] = tg_grad_get(W, 1, 2);
    }
    assert_int_equal(st[0], TG_ERR_NOMEM);
    assert_non_null(strstr(tg_last_error(), "out of memory"));
    assert_int_equal(st[1], TG_OK);
    assert_true(g[1] != 0.0);
    tg_tensor_free(W);
    tg_tape_free(t);
#else
    skip();
#endif
}

/* ------------------------------------------------------------ addend aliasing */

struct rec_ctx {
    struct tg_tensor *X, *V, *W;
    int extra_reader;       /* also read P elsewhere: the aliasing must not happen */
    struct tg_tensor *P, *D0; /* recorded, for the pointer checks */
};

/* P = X·Vᵀ (3 steps of 2 rows), h_t = tanh(P[t] + h_{t−1}·Wᵀ), loss = Σ h_T (+ Σ P). */
static struct tg_tensor *recurrence(struct tg_tape *t, void *vctx)
{
    struct rec_ctx *c = vctx;
    c->P = tg_matmul(t, c->X, c->V, 0, 1);
    struct tg_tensor *h = tg_tensor_new(t, 2, 4, TG_F64);
    for (int s = 0; s < 3; s++) {
        struct tg_tensor *d = tg_addmm(t, tg_slice(t, c->P, 0, 2 * s, 2 * s + 2), h, c->W, 0, 1);
        if (s == 0) c->D0 = d;
        h = tg_tanh(t, d);
    }
    struct tg_tensor *loss = tg_sum(t, h);
    return c->extra_reader ? tg_add(t, loss, tg_sum(t, tg_mul(t, c->P, c->P))) : loss;
}

/* The addend of x·Wᵀ at every step (the input projection) gets the stage's rows as its
 * gradient, unless something else reads it; either way the gradients are right. */
static void test_addend_gradient_aliases_stage(void **state)
{
    (void)state;
    struct tg_rng r;
    tg_rng_seed(&r, 31);
    struct rec_ctx c = {0};
    c.X = tg_tensor_new_heap(6, 3, TG_F64);
    c.V = tg_param_new("V", 4, 3, TG_F64);
    c.W = tg_param_new("W", 4, 4, TG_F64);
    tg_tensor_uniform(c.X, &r, -1, 1);
    tg_tensor_uniform(c.V, &r, -1, 1);
    tg_tensor_uniform(c.W, &r, -1, 1);
    for (c.extra_reader = 0; c.extra_reader < 2; c.extra_reader++) {
        struct tg_tape *t = tg_tape_new(0);
        tg_tensor_zero_grad(c.V);
        tg_tensor_zero_grad(c.W);
        assert_int_equal(tg_backward(t, recurrence(t, &c)), TG_OK);
        /* aliased: P's gradient is the stage, whose first rows are D_0's gradient */
        if (c.extra_reader) assert_ptr_not_equal(c.P->grad, c.D0->grad);
        else assert_ptr_equal(c.P->grad, c.D0->grad);
        tg_tape_free(t);
        struct tg_tensor *xs[2] = {c.V, c.W};
        struct tg_gradcheck_report rep;
        assert_int_equal(tg_gradcheck(recurrence, &c, xs, 2, NULL, &rep), TG_OK);
        if (!rep.passed) fail_msg("extra reader %d: gradcheck worst rel %.3g", c.extra_reader, rep.max_rel);
    }
    tg_tensor_free(c.X);
    tg_tensor_free(c.V);
    tg_tensor_free(c.W);
}

/* Rows concatenation hands its row blocks to inputs that have no gradient yet (backward.c):
 * an input listed twice, and one with another consumer, still get the sum of all their uses. */
struct cat_ctx { struct tg_tensor *x1, *x2, *R; struct tg_tensor *a, *cat; };

static struct tg_tensor *cat_loss(struct tg_tape *t, void *vctx)
{
    struct cat_ctx *c = vctx;
    c->a = tg_tanh(t, c->x1);
    struct tg_tensor *b = tg_sigmoid(t, c->x2);
    struct tg_tensor *sq = tg_sum(t, tg_mul(t, c->a, c->a)); /* before the concat: its last use */
    struct tg_tensor *xs[3] = {c->a, b, c->a};
    c->cat = tg_concat(t, 0, 3, xs);
    return tg_add(t, tg_sum(t, tg_mul(t, c->cat, c->R)), sq);
}

static void test_concat_rows_grad_blocks(void **state)
{
    (void)state;
    struct tg_rng r;
    tg_rng_seed(&r, 41);
    struct cat_ctx c = {tg_param_new("x1", 2, 3, TG_F64), tg_param_new("x2", 3, 3, TG_F64),
                        tg_tensor_new_heap(7, 3, TG_F64), NULL, NULL};
    tg_tensor_uniform(c.x1, &r, -1, 1);
    tg_tensor_uniform(c.x2, &r, -1, 1);
    tg_tensor_uniform(c.R, &r, -1, 1);
    struct tg_tape *t = tg_tape_new(0);
    assert_int_equal(tg_backward(t, cat_loss(t, &c)), TG_OK);
    assert_ptr_equal(c.a->grad, c.cat->grad); /* a's gradient is the first block */
    tg_tape_free(t);
    struct tg_tensor *xs[2] = {c.x1, c.x2};
    struct tg_gradcheck_report rep;
    assert_int_equal(tg_gradcheck(cat_loss, &c, xs, 2, NULL, &rep), TG_OK);
    if (!rep.passed) fail_msg("gradcheck: worst relative error %.3g", rep.max_rel);
    tg_tensor_free(c.x1);
    tg_tensor_free(c.x2);
    tg_tensor_free(c.R);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backward_out_of_memory_recovers),
        cmocka_unit_test(test_tensor_used_twice),
        cmocka_unit_test(test_weight_used_every_step),
        cmocka_unit_test(test_param_grad_accumulates_across_calls),
        cmocka_unit_test(test_unreachable_nodes_skipped),
        cmocka_unit_test(test_detach_cuts_history),
        cmocka_unit_test(test_no_grad_records_nothing),
        cmocka_unit_test(test_reset_reuses_memory),
        cmocka_unit_test(test_rnn_loop_heap_silent),
        cmocka_unit_test(test_tags_land_in_nodes),
        cmocka_unit_test(test_arena_alignment),
        cmocka_unit_test(test_slice_backward_region_only),
        cmocka_unit_test(test_sequence_split_linear),
        cmocka_unit_test(test_large_tensors_parallel_path),
        cmocka_unit_test(test_addend_gradient_aliases_stage),
        cmocka_unit_test(test_concat_rows_grad_blocks),
    };
    if (!COUNT_MALLOC) printf("# heap counted through the tape's counters only (sanitizer build)\n");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
