/* test_fusion_cache.c — the cache of compiled fusion programs (autograd/fuse_compile.c).
 *
 * A region whose signature matches one compiled earlier on the same tape reuses its analysis
 * (a hit); anything else is analysed afresh (a miss). The cache must never change a value, so
 * most tests run the same graph with the cache on and off and demand the same loss and
 * gradients to the bit, and also check against fusion off (float64, 1e-12 of each tensor's
 * largest gradient: only the order of sums differs). Around that:
 *  - hits and misses per unroll: every step of every registered cell after the first two hits;
 *  - a change of shape, of cell (other ops, other constants, other kept results) or of fusion
 *    mode between regions misses and computes the right thing;
 *  - a region whose input block may be overwritten in one step but is read by another node in
 *    the next (same signature) does not take the other step's storage plan;
 *  - a result recomputed in backward takes back the block another result was to be saved in;
 *  - the cache is emptied by tg_tape_reset and a training loop stays heap-silent.
 * Seeds are fixed in the code, so a failure reproduces exactly. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad_models.h"
#include "internal.h" /* the tape's fuse_cache counters and fuse_cache_off, TG_REUSED */

#include "malloc_count.h"
#include "seq_case.h"

/* ------------------------------------------------------------------ model runs */

/* test_cells' fixture (seq_case.h): dense inputs of width 3, 3 classes, no initial state */
static void mcase_new(struct seq_case *c, const struct tg_cell *cell, enum tg_dtype dt, int H, int L,
                      int B, int T, uint64_t seed)
{
    seq_case_new(c, cell, T, B, 3, H, L, 3, dt, seed, 0, NULL);
}

/* Every parameter's gradient, concatenated as doubles (malloc'd), after one forward+backward
 * with the given fusion mode and cache switch on a fresh tape; *hits, *misses from it. */
static double *model_grads(struct seq_case *c, int fusion, int cache_off, double *loss, size_t *n,
                           size_t *hits, size_t *misses)
{
    struct tg_tape *t = tg_tape_new(0);
    assert_non_null(t);
    tg_tape_set_fusion(t, fusion);
    t->fuse_cache_off = cache_off;
    tg_model_zero_grad(c->m);
    struct tg_seq_result res;
    if (tg_model_forward(c->m, t, &c->b, 0, &res) != TG_OK || tg_backward(t, res.loss) != TG_OK)
        fail_msg("fusion %d cache_off %d: %s", fusion, cache_off, tg_last_error());
    *loss = tg_get(res.loss, 0, 0);
    size_t total = 0;
    for (int i = 0; i < c->m->n_params; i++) total += tg_numel(c->m->params[i]);
    double *g = malloc(total * sizeof *g);
    assert_non_null(g);
    size_t k = 0;
    for (int i = 0; i < c->m->n_params; i++) {
        const struct tg_tensor *p = c->m->params[i];
        for (size_t e = 0; e < tg_numel(p); e++) g[k++] = tg_grad_get(p, 0, (int)e);
    }
    *n = total;
    if (hits) *hits = t->fuse_cache.hits;
    if (misses) *misses = t->fuse_cache.misses;
    tg_tape_free(t);
    return g;
}

/* |a − b| ≤ tol · max|b| over the whole vector (b not all zero). */
static void close_to(const char *what, const double *a, const double *b, size_t n, double tol)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs(a[i] - b[i]));
        scale = fmax(scale, fabs(b[i]));
    }
    if (!(scale > 0)) fail_msg("%s: gradient is zero everywhere", what);
    if (!(diff <= tol * scale)) fail_msg("%s: max diff %.3g > %.0e of %.3g", what, diff, tol, scale);
}

/* ------------------------------------------------------------------ tests */

/* Every registered cell, both dtypes, fusion on and lean, two layers: the cache changes no bit
 * of the loss or any gradient, and the fused run still matches the unfused one. */
static void test_cells_bit_identical(void **state)
{
    (void)state;
    enum { T = 5, B = 3, H = 6, L = 2 };
    for (int ci = 0; ci < tg_cell_count(); ci++) {
        const struct tg_cell *cell = tg_cell_at(ci);
        for (int dt = 0; dt < 2; dt++) {
            enum tg_dtype dtype = dt ? TG_F32 : TG_F64;
            struct seq_case c;
            mcase_new(&c, cell, dtype, H, L, B, T, 11 + (uint64_t)ci);
            for (int mode = TG_FUSION_ON; mode <= TG_FUSION_LEAN; mode++) {
                double l_on, l_off, l_un;
                size_t n, n2, n3, hits, misses;
                double *g_on = model_grads(&c, mode, 0, &l_on, &n, &hits, &misses);
                double *g_off = model_grads(&c, mode, 1, &l_off, &n2, NULL, NULL);
                double *g_un = model_grads(&c, TG_FUSION_OFF, 0, &l_un, &n3, NULL, NULL);
                char what[96];
                snprintf(what, sizeof what, "%s %s fusion %d", cell->name, tg_dtype_name(dtype), mode);
                assert_int_equal(n, n2);
                if (memcmp(&l_on, &l_off, sizeof l_on) != 0 ||
                    memcmp(g_on, g_off, n * sizeof *g_on) != 0)
                    fail_msg("%s: cached and uncached programs differ (loss %.17g vs %.17g)",
                             what, l_on, l_off);
                /* the cache was used: most steps of the unroll hit */
                if (!(hits >= (size_t)L * T - 4))
                    fail_msg("%s: %zu hits, %zu misses over %d steps", what, hits, misses, L * T);
                if (dtype == TG_F64) close_to(what, g_on, g_un, n, 1e-12);
                free(g_on);
                free(g_off);
                free(g_un);
            }
            seq_case_free(&c);
        }
    }
}

/* The built-in cells' unrolls: the first step (zero initial state, which wants no gradient) and
 * the second (state from the first region) are analysed; every later step of every layer hits
 * (the second layer's regions are the first's: same widths).
 * A reset empties the cache: the next step misses the same two again. */
static void test_hits_per_unroll(void **state)
{
    (void)state;
    const char *names[] = {"lstm", "gru", "rnn_tanh"};
    /* rnn_tanh's region, tanh(x_t W_ihᵀ + h W_hhᵀ + b), reads no state: only its first miss */
    const int first_misses[] = {2, 2, 1};
    enum { T = 7, B = 2, H = 5, L = 2 };
    for (int i = 0; i < 3; i++) {
        struct seq_case c;
        mcase_new(&c, tg_cell_find(names[i]), TG_F64, H, L, B, T, 3);
        struct tg_tape *t = tg_tape_new(0);
        assert_non_null(t);
        for (int rep = 1; rep <= 2; rep++) {
            tg_tape_reset(t);
            tg_model_zero_grad(c.m);
            struct tg_seq_result res;
            assert_int_equal(tg_model_forward(c.m, t, &c.b, 0, &res), TG_OK);
            assert_int_equal(tg_backward(t, res.loss), TG_OK);
            size_t m = (size_t)first_misses[i] * rep, h = (size_t)(L * T - first_misses[i]) * rep;
            if (t->fuse_cache.misses != m || t->fuse_cache.hits != h)
                fail_msg("%s, step %d: %zu misses, %zu hits (want %zu, %zu)", names[i], rep,
                         t->fuse_cache.misses, t->fuse_cache.hits, m, h);
        }
        tg_tape_free(t);
        seq_case_free(&c);
    }
}

/* ------------------------------------------------------- hand-made regions on one tape */

/* A heap parameter filled from a seeded stream. */
static struct tg_tensor *param(const char *name, int r, int cc, uint64_t seed)
{
    struct tg_tensor *p = tg_param_new(name, r, cc, TG_F64);
    assert_non_null(p);
    struct tg_rng g;
    tg_rng_seed(&g, seed);
    tg_tensor_uniform(p, &g, -1.0, 1.0);
    return p;
}

/* The kinds of region the sequence below records (each: y = f(x·Wᵀ, h)). */
enum kind { K_A, K_B, K_C2, K_C3, K_KEEP2, K_READER, K_CASCADE };

/* One region over x (B×4) and h (B×3): z = x·Wᵀ (B×6, a product whose storage the region may
 * reuse), then cell `k` on its two column blocks. Returns the new h (and adds a second kept
 * result, or a row sum reading z, to *extra for some kinds). */
static struct tg_tensor *region(struct tg_tape *t, enum kind k, struct tg_tensor *x,
                                struct tg_tensor *h, struct tg_tensor *W, struct tg_tensor **extra)
{
    tg_tape_fuse_begin(t);
    struct tg_tensor *z = tg_matmul(t, x, W, 0, 1); /* in the region: its storage may be reused */
    struct tg_tensor *a = tg_slice(t, z, 1, 0, 3), *b = tg_slice(t, z, 1, 3, 6);
    struct tg_tensor *y = NULL, *keep[2];
    int nk = 1;
    *extra = NULL;
    switch (k) {
    case K_A: y = tg_mul(t, tg_sigmoid(t, a), tg_tanh(t, tg_add(t, b, h))); break;
    case K_B: y = tg_mul(t, tg_tanh(t, a), tg_sigmoid(t, tg_add(t, b, h))); break;
    case K_C2: y = tg_mul(t, tg_affine(t, tg_sigmoid(t, a), 2.0, 1.0), tg_tanh(t, tg_add(t, b, h))); break;
    case K_C3: y = tg_mul(t, tg_affine(t, tg_sigmoid(t, a), 3.0, 1.0), tg_tanh(t, tg_add(t, b, h))); break;
    case K_KEEP2: {
        struct tg_tensor *s = tg_sigmoid(t, a);
        y = tg_mul(t, s, tg_tanh(t, tg_add(t, b, h)));
        keep[nk++] = *extra = s;
        break;
    }
    case K_READER: /* as K_A, but another node reads z: its storage must not hold σ(a) */
        *extra = tg_row_sum(t, z);
        y = tg_mul(t, tg_sigmoid(t, a), tg_tanh(t, tg_add(t, b, h)));
        break;
    case K_CASCADE: {
        /* tanh(a + h) has no dead block to live in (a is read after it), so it is recomputed
         * in backward, from a; σ(a), which could have taken a's block, must then not: a's
         * values are read by that recomputation */
        struct tg_tensor *u = tg_tanh(t, tg_add(t, a, h));
        y = tg_mul(t, u, tg_sigmoid(t, a));
        break;
    }
    }
    keep[0] = y;
    assert_int_equal(tg_tape_fuse_end(t, keep, nk), TG_OK);
    return y;
}

/* Record regions of the given kinds and batch sizes one after another on one tape (the state h
 * carried where the batch stays), sum everything into a loss, backward; gradients of W and of
 * the inputs (concatenated), and the cache counters. */
static double *run_sequence(int fusion, int cache_off, const enum kind *kinds, const int *rows,
                            int n, size_t *ng, size_t *hits, size_t *misses, unsigned *reused)
{
    struct tg_tensor *W = param("W", 6, 4, 1);
    struct tg_tensor *xs[16], *hs[16];
    struct tg_tape *t = tg_tape_new(0);
    assert_non_null(t);
    tg_tape_set_fusion(t, fusion);
    t->fuse_cache_off = cache_off;
    struct tg_tensor *loss = NULL;
    struct tg_tensor *h = NULL;
    *reused = 0;
    for (int i = 0; i < n; i++) {
        xs[i] = param("x", rows[i], 4, 100 + (uint64_t)i);
        hs[i] = param("h0", rows[i], 3, 200 + (uint64_t)i);
        if (!h || h->rows != rows[i]) h = hs[i];
        struct tg_tensor *extra;
        h = region(t, kinds[i], xs[i], h, W, &extra);
        struct tg_tensor *term = tg_sum(t, h);
        if (extra) term = tg_add(t, term, tg_sum(t, extra));
        loss = loss ? tg_add(t, loss, term) : term;
    }
    /* the products whose storage now holds saved results */
    for (size_t i = 0; i < tg_tape_num_nodes(t); i++) {
        const struct tg_node *nd = tg_tape_node(t, i);
        if ((nd->out->flags & TG_REUSED)) (*reused)++;
    }
    assert_non_null(loss);
    assert_int_equal(tg_backward(t, loss), TG_OK);
    size_t total = tg_numel(W);
    for (int i = 0; i < n; i++) total += tg_numel(xs[i]) + tg_numel(hs[i]);
    double *g = malloc(total * sizeof *g), *gp = g;
    assert_non_null(g);
    for (size_t e = 0; e < tg_numel(W); e++) *gp++ = tg_grad_get(W, 0, (int)e);
    for (int i = 0; i < n; i++) {
        for (size_t e = 0; e < tg_numel(xs[i]); e++) *gp++ = tg_grad_get(xs[i], 0, (int)e);
        for (size_t e = 0; e < tg_numel(hs[i]); e++) *gp++ = tg_grad_get(hs[i], 0, (int)e);
        tg_tensor_free(xs[i]);
        tg_tensor_free(hs[i]);
    }
    *ng = total;
    *hits = t->fuse_cache.hits;
    *misses = t->fuse_cache.misses;
    tg_tape_free(t);
    tg_tensor_free(W);
    return g;
}

/* Run kinds/rows with the cache, without it and unfused: bit-identical, close to unfused, and
 * the hit and miss counts given. */
static void check_sequence(const char *what, const enum kind *kinds, const int *rows, int n,
                           size_t want_hits, size_t want_misses, unsigned want_reused)
{
    size_t n1, n2, n3, h1, m1, h2, m2, h3, m3;
    unsigned r1, r2, r3;
    double *g_on = run_sequence(TG_FUSION_ON, 0, kinds, rows, n, &n1, &h1, &m1, &r1);
    double *g_off = run_sequence(TG_FUSION_ON, 1, kinds, rows, n, &n2, &h2, &m2, &r2);
    double *g_un = run_sequence(TG_FUSION_OFF, 0, kinds, rows, n, &n3, &h3, &m3, &r3);
    assert_int_equal(n1, n2);
    if (memcmp(g_on, g_off, n1 * sizeof *g_on) != 0)
        fail_msg("%s: cached and uncached programs give different gradients", what);
    close_to(what, g_on, g_un, n1, 1e-12);
    if (h1 != want_hits || m1 != want_misses)
        fail_msg("%s: %zu hits, %zu misses (want %zu, %zu)", what, h1, m1, want_hits, want_misses);
    assert_int_equal(h2, 0); /* cache off: every region analysed */
    if (r1 != want_reused || r2 != want_reused)
        fail_msg("%s: %u / %u products held saved results (want %u)", what, r1, r2, want_reused);
    free(g_on);
    free(g_off);
    free(g_un);
}

/* The batch changes between steps (4, 4, 3, 3, 4 rows): each new shape misses once, and going
 * back to a shape seen before hits its entry. */
static void test_shape_change(void **state)
{
    (void)state;
    const enum kind k[] = {K_A, K_A, K_A, K_A, K_A, K_A};
    const int rows[] = {4, 4, 4, 3, 3, 4};
    /* step 0 (h0 wants a gradient, as later h's do), step 3 (3 rows) miss; 2 and 1 and 5 hit.
     * Step 3's h is a fresh 3-row h0, step 5 goes on from a fresh 4-row h0 too */
    check_sequence("shape change", k, rows, 6, 4, 2, 6);
}

/* Other ops, other constants, other kept results between steps of one shape: each is its own
 * entry; repeating one hits. */
static void test_cell_change(void **state)
{
    (void)state;
    const enum kind k[] = {K_A, K_B, K_A, K_C2, K_C3, K_C2, K_KEEP2, K_A, K_KEEP2};
    const int rows[] = {4, 4, 4, 4, 4, 4, 4, 4, 4};
    /* misses: A, B, C2, C3, KEEP2; hits: A, C2, A, KEEP2. In K_KEEP2, σ(a) is kept, so only
     * tanh is saved — still in z's storage */
    check_sequence("cell change", k, rows, 9, 4, 5, 9);
}

/* Same signature, different storage plan: when another node reads z, σ(a) cannot overwrite it.
 * The reader step must not take the plan of the plain one, nor the reverse. */
static void test_overwritable_answer_change(void **state)
{
    (void)state;
    const enum kind k[] = {K_A, K_READER, K_A, K_READER, K_READER};
    const int rows[] = {4, 4, 4, 4, 4};
    /* misses: the first A and the first reader; z is reused in the three A steps only... */
    check_sequence("overwritable answers", k, rows, 5, 3, 2, 2);
}

/* Saving one result costs another its place (K_CASCADE): nothing is placed in z, both are
 * recomputed, and the gradients are right. */
static void test_recompute_cascade(void **state)
{
    (void)state;
    const enum kind k[] = {K_CASCADE, K_CASCADE, K_A};
    const int rows[] = {4, 4, 4};
    check_sequence("recompute cascade", k, rows, 3, 1, 2, 1);
}

/* Fusion mode changes between regions of one tape: on and lean are different entries. */
static void test_mode_change(void **state)
{
    (void)state;
    struct tg_tensor *W = param("W", 6, 4, 1);
    struct tg_tensor *x = param("x", 4, 4, 2), *h = param("h", 4, 3, 3);
    struct tg_tape *t = tg_tape_new(0);
    assert_non_null(t);
    struct tg_tensor *extra, *y[4];
    const int modes[4] = {TG_FUSION_ON, TG_FUSION_LEAN, TG_FUSION_ON, TG_FUSION_LEAN};
    for (int i = 0; i < 4; i++) {
        tg_tape_set_fusion(t, modes[i]);
        y[i] = region(t, K_A, x, h, W, &extra);
    }
    assert_int_equal(t->fuse_cache.misses, 2);
    assert_int_equal(t->fuse_cache.hits, 2);
    /* the same values whatever the mode */
    for (int i = 1; i < 4; i++)
        for (int e = 0; e < 12; e++) assert_true(tg_get(y[i], 0, e) == tg_get(y[0], 0, e));
    tg_tape_free(t);
    tg_tensor_free(W);
    tg_tensor_free(x);
    tg_tensor_free(h);
}

/* A training loop: after warm-up, no heap call at all (the cache lives in the arena), and the
 * same hits every step. */
static void test_loop_heap_silent(void **state)
{
    (void)state;
    struct seq_case c;
    mcase_new(&c, tg_cell_find("lstm"), TG_F32, 8, 1, 1, 20, 5);
    struct tg_tape *t = tg_tape_new(0);
    assert_non_null(t);
    size_t calls0 = 0, tape0 = 0, hits0 = 0;
    for (int step = 0; step < 6; step++) {
        if (step == 2) {
            calls0 = heap_calls();
            tape0 = tg_tape_heap_allocs(t);
            hits0 = t->fuse_cache.hits;
        }
        tg_tape_reset(t);
        tg_model_zero_grad(c.m);
        struct tg_seq_result res;
        assert_int_equal(tg_model_forward(c.m, t, &c.b, 0, &res), TG_OK);
        assert_int_equal(tg_backward(t, res.loss), TG_OK);
    }
    if (COUNT_MALLOC) assert_int_equal(heap_calls() - calls0, 0);
    assert_int_equal(tg_tape_heap_allocs(t) - tape0, 0);
    assert_int_equal(t->fuse_cache.hits - hits0, 4 * (20 - 2));
    tg_tape_free(t);
    seq_case_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cells_bit_identical),
        cmocka_unit_test(test_hits_per_unroll),
        cmocka_unit_test(test_shape_change),
        cmocka_unit_test(test_cell_change),
        cmocka_unit_test(test_overwritable_answer_change),
        cmocka_unit_test(test_recompute_cascade),
        cmocka_unit_test(test_mode_change),
        cmocka_unit_test(test_loop_heap_silent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
