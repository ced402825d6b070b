/* test_big_tape.c — a tape of 1,000,000 nodes runs forward and backward with the gradient
 * known in closed form, on a thread whose stack is far too small for a recursive backward.
 *
 * The chain, N = 500,000 steps of two nodes each (affine, then add or sub):
 *     y_{k+1} = a·y_k + w   (k even),      y_{k+1} = a·y_k − v   (k odd),      L = y_N.
 * Unrolled, L = a^N y_0 + Σ_{k even} a^{N−1−k} w − Σ_{k odd} a^{N−1−k} v, so with N even
 *     ∂L/∂y_0 = a^N,
 *     ∂L/∂w   = Σ over odd exponents 1, 3, …, N−1   = a (1 − a^N) / (1 − a²),
 *     ∂L/∂v   = −Σ over even exponents 0, 2, …, N−2 = −(1 − a^N) / (1 − a²).
 * w and v are each used by 250,000 nodes: their gradients are 250,000-term += sums.
 * Round-off: each a-multiplication and each += costs ≤ 1 ulp, so relative errors stay below
 * ~N·ε ≈ 1e-10; the test allows 1e-9. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tapegrad.h"
#include "tapegrad_ops.h"

enum { STEPS = 500000, NODES = 2 * STEPS };
static const double A = 0.999995; /* a^N = e^{−2.5} ≈ 0.082: every term matters */

struct run {
    struct tg_tape *t;
    struct tg_tensor *y0, *w, *v;
    double loss, fwd_s, bwd_s;
    size_t nodes, top_index;
    enum tg_status st;
    char msg[512]; /* tg_last_error() is per thread: copied out of the worker */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Record the chain and walk it back; everything the main thread checks lands in r. */
static void *forward_backward(void *arg)
{
    struct run *r = arg;
    double t0 = now();
    struct tg_tensor *y = r->y0;
    for (int k = 0; k < STEPS; k++) {
        y = tg_affine(r->t, y, A, 0.0);
        y = (k % 2 == 0) ? tg_add(r->t, y, r->w) : tg_sub(r->t, y, r->v);
    }
    double t1 = now();
    r->nodes = tg_tape_num_nodes(r->t);
    if (!y) {
        r->st = tg_tape_status(r->t);
        snprintf(r->msg, sizeof r->msg, "%s", tg_last_error());
        return NULL;
    }
    r->loss = tg_get(y, 0, 0);
    r->top_index = y->node ? y->node->index : 0;
    r->st = tg_backward(r->t, y);
    snprintf(r->msg, sizeof r->msg, "%s", tg_last_error());
    r->fwd_s = t1 - t0;
    r->bwd_s = now() - t1;
    return NULL;
}

/* 256 KiB of stack: a recursive backward (one frame per node) would need ~100 MB. */
static void run_on_small_stack(struct run *r)
{
    pthread_attr_t attr;
    pthread_t th;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    assert_int_equal(pthread_create(&th, &attr, forward_backward, r), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    pthread_attr_destroy(&attr);
}

static void assert_rel(double got, double want, double rtol, const char *what)
{
    double rel = fabs(got - want) / fabs(want);
    if (!(rel <= rtol)) fail_msg("%s: got %.17g, want %.17g (rel %.3g)", what, got, want, rel);
}

static void test_million_node_tape(void **state)
{
    (void)state;
    struct run r = {0};
    r.t = tg_tape_new(0);
    r.y0 = tg_param_new("y0", 1, 1, TG_F64);
    r.w = tg_param_new("w", 1, 1, TG_F64);
    r.v = tg_param_new("v", 1, 1, TG_F64);
    assert_true(r.t && r.y0 && r.w && r.v);
    const double y0 = 0.75, w = 0.3, v = 0.125;
    tg_set(r.y0, 0, 0, y0);
    tg_set(r.w, 0, 0, w);
    tg_set(r.v, 0, 0, v);

    const double aN = pow(A, STEPS), one_m_a2 = (1 - A) * (1 + A);
    const double dw = A * (1 - aN) / one_m_a2, dv = -(1 - aN) / one_m_a2;
    size_t allocs = 0, cap = 0;
    for (int pass = 0; pass < 2; pass++) {
        tg_tensor_zero_grad(r.y0);
        tg_tensor_zero_grad(r.w);
        tg_tensor_zero_grad(r.v);
        run_on_small_stack(&r);
        if (r.st != TG_OK) fail_msg("pass %d: %s", pass, r.msg);
        assert_int_equal(r.nodes, NODES);
        assert_int_equal(r.top_index, NODES - 1);
        print_message("pass %d: %d nodes, forward %.3f s, backward %.3f s, arena %zu MB in %zu "
                      "heap blocks\n", pass, NODES, r.fwd_s, r.bwd_s,
                      tg_tape_arena_capacity(r.t) >> 20, tg_tape_heap_allocs(r.t));
        assert_rel(r.loss, aN * y0 + dw * w + dv * v, 1e-9, "loss");
        assert_rel(tg_grad_get(r.y0, 0, 0), aN, 1e-9, "dL/dy0");
        assert_rel(tg_grad_get(r.w, 0, 0), dw, 1e-9, "dL/dw");
        assert_rel(tg_grad_get(r.v, 0, 0), dv, 1e-9, "dL/dv");
        if (pass == 0) {
            allocs = tg_tape_heap_allocs(r.t);
            cap = tg_tape_arena_capacity(r.t);
            /* the arena grows geometrically: few blocks even for a million nodes */
            assert_true(allocs < 64);
        } else {
            /* the second identical step reuses every block */
            assert_int_equal(tg_tape_heap_allocs(r.t), allocs);
            assert_int_equal(tg_tape_arena_capacity(r.t), cap);
        }
        tg_tape_reset(r.t);
    }
    tg_tensor_free(r.y0);
    tg_tensor_free(r.w);
    tg_tensor_free(r.v);
    tg_tape_free(r.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_million_node_tape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
