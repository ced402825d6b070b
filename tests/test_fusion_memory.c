/* test_fusion_memory.c — where a fused region puts what it keeps (autograd/fuse_compile.c).
 *
 * With fusion on, the σ/tanh results backward reads are saved only in storage that is dead by
 * then (the gate pre-activations), and recomputed in backward otherwise; a kept output whose rows
 * fit a dead block (rnn_tanh's h' over its pre-activation) lives there. So for the built-in
 * cells fusion on needs no more tape than lean (which saves nothing), and gives the same
 * gradients to the bit: a value recomputed is the value the forward computed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad_models.h"
#include "internal.h" /* struct tg_fuse_prog, TG_REUSED */

struct run {
    size_t arena_fwd, arena_all;
    double loss;
    double *g;
    size_t n;
};

/* One forward+backward of a seeded model with the given fusion mode; check_fused (if set) is
 * called with the tape between them. */
static void run_model(const struct tg_cell *cell, enum tg_dtype dt, int L, int mode,
                      void (*check_fused)(const char *, struct tg_tape *), struct run *out)
{
    enum { T = 6, B = 3, H = 8, I = 5 };
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L, .outputs = 4,
                                  .dtype = dt, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    if (tg_model_new(&cfg, &m) != TG_OK) fail_msg("%s: %s", cell->name, tg_last_error());
    struct tg_rng r;
    tg_rng_seed(&r, 9);
    for (int i = 0; i < m->n_params; i++) tg_tensor_uniform(m->params[i], &r, -0.7, 0.7);
    double x[T * B * I];
    int32_t y[T * B];
    for (int i = 0; i < T * B * I; i++) x[i] = tg_rng_normal(&r);
    for (int i = 0; i < T * B; i++) y[i] = (int32_t)tg_rng_below(&r, 4);
    struct tg_seq_batch b = {.T = T, .B = B, .x = x, .labels = y};
    struct tg_tape *t = tg_tape_new(0);
    assert_non_null(t);
    tg_tape_set_fusion(t, mode);
    struct tg_seq_result res;
    if (tg_model_forward(m, t, &b, 0, &res) != TG_OK) fail_msg("%s: %s", cell->name, tg_last_error());
    out->arena_fwd = tg_tape_arena_used(t);
    if (check_fused) check_fused(cell->name, t);
    if (tg_backward(t, res.loss) != TG_OK) fail_msg("%s: %s", cell->name, tg_last_error());
    out->arena_all = tg_tape_arena_used(t);
    out->loss = tg_get(res.loss, 0, 0);
    out->n = 0;
    for (int i = 0; i < m->n_params; i++) out->n += tg_numel(m->params[i]);
    out->g = malloc(out->n * sizeof *out->g);
    assert_non_null(out->g);
    size_t k = 0;
    for (int i = 0; i < m->n_params; i++)
        for (size_t e = 0; e < tg_numel(m->params[i]); e++)
            out->g[k++] = tg_grad_get(m->params[i], 0, (int)e);
    tg_tape_free(t);
    tg_model_free(m);
}

/* Is [p, p + bytes) inside x's data? */
static int inside(const void *p, size_t bytes, const struct tg_tensor *x)
{
    const char *a = p, *lo = x->data, *hi = lo + tg_nbytes(x);
    return a >= lo && a + bytes <= hi;
}

/* Every fused node: each saved result lies in one of its sources' storage, marked reused. */
static void saved_in_place(const char *what, struct tg_tape *t)
{
    int fused = 0;
    for (size_t i = 0; i < tg_tape_num_nodes(t); i++) {
        const struct tg_node *nd = tg_tape_node(t, i);
        if (!(nd->op->flags & TG_OPF_COMPOUND)) continue;
        fused++;
        const struct tg_fuse_prog *p = nd->args.ptr[0];
        size_t es = tg_dtype_size(nd->out->dtype);
        for (int d = 0; d < p->n_reg; d++) {
            if (!p->reg_saved[d]) continue;
            /* the last row's end: rows − 1 strides plus one row */
            size_t span = ((size_t)(p->rows - 1) * p->reg_saved_ld[d] + p->cols) * es;
            int ok = 0;
            for (int s = 0; s < nd->nsrc && !ok; s++)
                ok = inside(p->reg_saved[d], span, nd->src[s]) && (nd->src[s]->flags & TG_REUSED);
            if (!ok) fail_msg("%s: node %zu saves register %d outside its sources", what, i, d);
        }
    }
    if (fused == 0) fail_msg("%s: no fused node", what);
}

/* rnn_tanh: h' is written over its own pre-activation x W_ihᵀ + h W_hhᵀ + b. */
static void output_in_place(const char *what, struct tg_tape *t)
{
    saved_in_place(what, t);
    int fused = 0;
    for (size_t i = 0; i < tg_tape_num_nodes(t); i++) {
        const struct tg_node *nd = tg_tape_node(t, i);
        if (!(nd->op->flags & TG_OPF_COMPOUND)) continue;
        fused++;
        int ok = 0;
        for (int s = 0; s < nd->nsrc && !ok; s++)
            ok = nd->src[s]->data == nd->out->data && (nd->src[s]->flags & TG_REUSED);
        if (!ok) fail_msg("%s: node %zu: h' has storage of its own", what, i);
    }
    assert_true(fused > 0);
}

static void test_on_costs_no_more_than_lean(void **state)
{
    (void)state;
    const char *names[] = {"lstm", "gru", "rnn_tanh"};
    for (int c = 0; c < 3; c++)
        for (int dt = 0; dt < 2; dt++)
            for (int L = 1; L <= 2; L++) {
                const struct tg_cell *cell = tg_cell_find(names[c]);
                enum tg_dtype dtype = dt ? TG_F32 : TG_F64;
                struct run on, lean, off;
                run_model(cell, dtype, L, TG_FUSION_ON, c == 2 ? output_in_place : saved_in_place, &on);
                run_model(cell, dtype, L, TG_FUSION_LEAN, NULL, &lean);
                run_model(cell, dtype, L, TG_FUSION_OFF, NULL, &off);
                const char *what = names[c];
                if (on.arena_fwd != lean.arena_fwd || on.arena_all != lean.arena_all)
                    fail_msg("%s %s L%d: tape on %zu/%zu bytes, lean %zu/%zu", what,
                             tg_dtype_name(dtype), L, on.arena_fwd, on.arena_all, lean.arena_fwd,
                             lean.arena_all);
                /* (rnn_tanh's one-op region saves nothing at these sizes: the program's bytes
                 * are most of it) */
                if (c < 2 && !(on.arena_all < off.arena_all))
                    fail_msg("%s: fused tape %zu bytes, unfused %zu", what, on.arena_all, off.arena_all);
                assert_int_equal(on.n, lean.n);
                if (memcmp(&on.loss, &lean.loss, sizeof on.loss) != 0 ||
                    memcmp(on.g, lean.g, on.n * sizeof *on.g) != 0)
                    fail_msg("%s %s L%d: saved and recomputed σ/tanh give different gradients",
                             what, tg_dtype_name(dtype), L);
                free(on.g);
                free(lean.g);
                free(off.g);
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_on_costs_no_more_than_lean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
