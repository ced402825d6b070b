/* test_readme_example.c — the user-defined cell shown in README.md compiles, trains through
 * the same sequence model as the built-in cells, and its autodiff gradients agree with
 * finite differences. The README quotes examples/janet_cell.c; this test checks that the
 * quote is verbatim, so the README cannot drift from code that is tested. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../examples/janet_cell.c"
#include "test_util.h"


static void test_readme_quotes_the_example(void **state)
{
    (void)state;
    char *readme = tg_test_read_file(TG_SOURCE_DIR "/README.md", NULL);
    char *code = tg_test_read_file(TG_SOURCE_DIR "/examples/janet_cell.c", NULL);
    assert_non_null(readme);
    assert_non_null(code);
    if (!strstr(readme, code)) fail_msg("README.md does not quote examples/janet_cell.c verbatim");
    free(readme);
    free(code);
}

struct ctx {
    struct tg_model *m;
    struct tg_seq_batch b;
    struct tg_tensor *h0[2];
};

static struct tg_tensor *loss_fn(struct tg_tape *t, void *vctx)
{
    struct ctx *c = vctx;
    struct tg_seq_result res;
    return tg_model_forward_from(c->m, t, &c->b, c->h0, &res) == TG_OK ? res.loss : NULL;
}

static void test_user_cell_gradients(void **state)
{
    (void)state;
    enum { T = 5, B = 2, I = 3, H = 4, L = 2, V = 3 };
    struct tg_model_config cfg = {.cell = &janet_cell, .input = I, .hidden = H, .layers = L,
                                  .outputs = V, .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    struct ctx c = {0};
    assert_int_equal(tg_model_new(&cfg, &c.m), TG_OK);
    struct tg_rng r;
    tg_rng_seed(&r, 31337);
    for (int i = 0; i < c.m->n_params; i++) tg_tensor_uniform(c.m->params[i], &r, -0.7, 0.7);
    double x[T * B * I];
    int32_t y[T * B];
    for (int i = 0; i < T * B * I; i++) x[i] = tg_rng_uniform(&r) * 2 - 1;
    for (int i = 0; i < T * B; i++) y[i] = (int32_t)tg_rng_below(&r, V);
    c.b = (struct tg_seq_batch){.T = T, .B = B, .x = x, .labels = y};
    for (int l = 0; l < L; l++) {
        c.h0[l] = tg_tensor_new_heap(B, H, TG_F64);
        tg_tensor_uniform(c.h0[l], &r, -0.5, 0.5);
        tg_tensor_set_requires_grad(c.h0[l]);
    }
    struct tg_tensor *xs[16];
    int n = 0;
    for (int i = 0; i < c.m->n_params; i++) xs[n++] = c.m->params[i];
    xs[n++] = c.h0[0];
    xs[n++] = c.h0[1];
    struct tg_gradcheck_report rep;
    struct tg_gradcheck_opts o = {.tol = 1e-7};
    assert_int_equal(tg_gradcheck(loss_fn, &c, xs, n, &o, &rep), TG_OK);
    printf("# janet (README example): %ld elements, max rel %.3g\n", rep.checked, rep.max_rel);
    if (!rep.passed) fail_msg("rel %.3g at tensor %d (%d,%d)", rep.max_rel, rep.worst_tensor,
                              rep.worst_row, rep.worst_col);
    assert_string_equal(c.m->names[0], "rnn.weight_ih_l0");
    tg_model_free(c.m);
    tg_tensor_free(c.h0[0]);
    tg_tensor_free(c.h0[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readme_quotes_the_example),
        cmocka_unit_test(test_user_cell_gradients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
