/* test_torch_fixtures.c — tapegrad reproduces PyTorch: for every case of
 * tests/fixtures/torch/cases.txt (written by tests/fixtures/gen_torch_fixtures.py), load the
 * parameters and data through the library, run the sequence model from a zero state with the
 * summed cross-entropy, and compare loss, h_n, c_n and every parameter gradient with PyTorch's
 * expected.safetensors: max |got − want| / max |want| per tensor ≤ 1e-9 (F64), ≤ 1e-4 (F32).
 * Then the built `tapegrad grad` on one F64 and one F32 case, comparing its output file. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "tapegrad_models.h"
#include "tapegrad_safetensors.h"

#define FIXTURES TG_SOURCE_DIR "/tests/fixtures/torch"
#define TAPEGRAD TG_BUILD_DIR "/tools/tapegrad"

struct fcase {
    char name[64], cell[32], dtype[8];
    int T, B, I, H, L, V;
};

/* cases.txt: `case cell dtype T B I H L V`, '#' lines are comments. */
static int read_cases(struct fcase *out, int max)
{
    FILE *f = fopen(FIXTURES "/cases.txt", "r");
    if (!f) fail_msg("cannot open %s", FIXTURES "/cases.txt");
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        assert_true(n < max);
        struct fcase *c = &out[n];
        int got = sscanf(line, "%63s %31s %7s %d %d %d %d %d %d", c->name, c->cell, c->dtype, &c->T,
                         &c->B, &c->I, &c->H, &c->L, &c->V);
        if (got != 9) fail_msg("cases.txt: bad line '%s'", line);
        n++;
    }
    fclose(f);
    return n;
}

static double *read_all(const struct tg_st_file *f, const char *name, size_t *n)
{
    const struct tg_st_tensor *t = tg_st_find(f, name);
    if (!t) fail_msg("%s: no tensor '%s'", tg_st_path(f), name);
    *n = (size_t)tg_st_numel(t);
    double *v = malloc((*n ? *n : 1) * sizeof *v);
    assert_non_null(v);
    if (tg_st_get_f64(f, name, v, *n, 0, NULL) != TG_OK) fail_msg("%s", tg_last_error());
    return v;
}

/* max |got − want| / max |want| (max |got − want| when want ≡ 0) */
static double rel_err(const double *got, const double *want, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        d = e > d || isnan(e) ? e : d;
        s = fmax(s, fabs(want[i]));
    }
    return s > 0 ? d / s : d;
}

static double check_tensor(const char *cname, const char *what, const double *got, size_t n,
                           const struct tg_st_file *exp, double tol)
{
    size_t m;
    double *want = read_all(exp, what, &m);
    if (m != n) fail_msg("%s: %s has %zu elements, expected %zu", cname, what, n, m);
    double r = rel_err(got, want, n);
    free(want);
    if (!(r <= tol)) fail_msg("%s: %s: relative error %.3g > %.0e", cname, what, r, tol);
    return r;
}

static void tensor_as_f64(const struct tg_tensor *x, int grad, double *out)
{
    for (int r = 0; r < x->rows; r++)
        for (int c = 0; c < x->cols; c++)
            out[(size_t)r * x->cols + c] = grad ? tg_grad_get(x, r, c) : tg_get(x, r, c);
}

/* One case through the library. Returns the worst relative error over its tensors. */
static double run_case(const struct fcase *c)
{
    char path[512];
    struct tg_st_file *pf, *df, *ef;
    snprintf(path, sizeof path, FIXTURES "/%s/params.safetensors", c->name);
    if (tg_st_read(path, &pf) != TG_OK) fail_msg("%s", tg_last_error());
    snprintf(path, sizeof path, FIXTURES "/%s/data.safetensors", c->name);
    if (tg_st_read(path, &df) != TG_OK) fail_msg("%s", tg_last_error());
    snprintf(path, sizeof path, FIXTURES "/%s/expected.safetensors", c->name);
    if (tg_st_read(path, &ef) != TG_OK) fail_msg("%s", tg_last_error());

    int f32 = strcmp(c->dtype, "F32") == 0;
    double tol = f32 ? 1e-4 : 1e-9;
    const struct tg_cell *cell = tg_cell_find(c->cell);
    assert_non_null(cell);
    struct tg_model_config cfg = {.cell = cell, .input = c->I, .hidden = c->H, .layers = c->L,
                                  .outputs = c->V, .dtype = f32 ? TG_F32 : TG_F64,
                                  .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    assert_int_equal(tg_model_new(&cfg, &m), TG_OK);
    /* every parameter under its PyTorch name; the file must hold exactly these */
    assert_int_equal(tg_st_count(pf), m->n_params);
    for (int k = 0; k < m->n_params; k++) {
        const struct tg_st_tensor *t = tg_st_find(pf, m->names[k]);
        if (!t) fail_msg("%s: params lack %s", c->name, m->names[k]);
        assert_int_equal(t->dtype, f32 ? TG_ST_F32 : TG_ST_F64);
        if (tg_st_get_tensor(pf, m->names[k], m->params[k], 0, NULL) != TG_OK)
            fail_msg("%s", tg_last_error());
    }
    size_t nx, ny;
    double *x = read_all(df, "x", &nx), *yd = read_all(df, "y", &ny);
    assert_int_equal(nx, (size_t)c->T * c->B * c->I);
    assert_int_equal(ny, (size_t)c->T * c->B);
    int32_t *y = malloc(ny * sizeof *y);
    for (size_t i = 0; i < ny; i++) y[i] = (int32_t)yd[i];

    struct tg_tape *t = tg_tape_new(0);
    struct tg_seq_batch b = {.T = c->T, .B = c->B, .x = x, .labels = y};
    struct tg_seq_result res;
    if (tg_model_forward_from(m, t, &b, NULL, &res) != TG_OK) fail_msg("%s", tg_last_error());
    assert_int_equal(tg_backward(t, res.loss), TG_OK);

    double worst = 0, loss = tg_get(res.loss, 0, 0);
    worst = fmax(worst, check_tensor(c->name, "loss", &loss, 1, ef, tol));
    int ns = cell->n_state, checked = 1;
    size_t sb = (size_t)c->B * c->H;
    double *st = malloc((size_t)c->L * sb * sizeof *st);
    for (int k = 0; k < ns; k++) {
        for (int l = 0; l < c->L; l++) tensor_as_f64(res.final[l * ns + k], 0, st + l * sb);
        worst = fmax(worst, check_tensor(c->name, k ? "c_n" : "h_n", st, c->L * sb, ef, tol));
        checked++;
    }
    free(st);
    for (int k = 0; k < m->n_params; k++) {
        double *g = malloc(tg_numel(m->params[k]) * sizeof *g);
        tensor_as_f64(m->params[k], 1, g);
        worst = fmax(worst, check_tensor(c->name, m->names[k], g, tg_numel(m->params[k]), ef, tol));
        free(g);
        checked++;
    }
    /* nothing in expected.safetensors went unchecked */
    assert_int_equal(tg_st_count(ef), checked);
    printf("# %-16s %-8s %s  worst relative error %.2e (%d tensors)\n", c->name, c->cell, c->dtype,
           worst, checked);

    tg_tape_free(t);
    tg_model_free(m);
    free(x), free(yd), free(y);
    tg_st_close(pf), tg_st_close(df), tg_st_close(ef);
    return worst;
}

static void test_library_matches_pytorch(void **state)
{
    (void)state;
    struct fcase cases[64];
    int n = read_cases(cases, 64);
    assert_true(n >= 10);
    double worst[2] = {0, 0};
    int seen[2] = {0, 0};
    for (int i = 0; i < n; i++) {
        int f32 = strcmp(cases[i].dtype, "F32") == 0;
        worst[f32] = fmax(worst[f32], run_case(&cases[i]));
        seen[f32]++;
    }
    assert_true(seen[0] > 0 && seen[1] > 0);
    printf("# %d cases: worst relative error F64 %.2e (tol 1e-9), F32 %.2e (tol 1e-4)\n", n, worst[0],
           worst[1]);
}

/* ------------------------------------------------------------ the CLI */

static int run_tapegrad(char *const argv[])
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execv(TAPEGRAD, argv);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* `tapegrad grad` on a case; its output must hold exactly the expected tensors, same dtypes and
 * shapes, values within tolerance. */
static double cli_case(const char *name, const char *cell, double tol, const char *dir)
{
    char p[512], d[512], o[512], e[512];
    snprintf(p, sizeof p, FIXTURES "/%s/params.safetensors", name);
    snprintf(d, sizeof d, FIXTURES "/%s/data.safetensors", name);
    snprintf(e, sizeof e, FIXTURES "/%s/expected.safetensors", name);
    snprintf(o, sizeof o, "%s/%s.safetensors", dir, name);
    char *argv[] = {"tapegrad", "grad", "--cell", (char *)cell, "--params", p, "--data", d, "--out", o, NULL};
    assert_int_equal(run_tapegrad(argv), 0);
    struct tg_st_file *gf, *ef;
    if (tg_st_read(o, &gf) != TG_OK) fail_msg("%s", tg_last_error());
    if (tg_st_read(e, &ef) != TG_OK) fail_msg("%s", tg_last_error());
    assert_int_equal(tg_st_count(gf), tg_st_count(ef));
    double worst = 0;
    for (int i = 0; i < tg_st_count(ef); i++) {
        const struct tg_st_tensor *want = tg_st_at(ef, i), *got = tg_st_find(gf, want->name);
        if (!got) fail_msg("%s: output lacks %s", name, want->name);
        assert_int_equal(got->dtype, want->dtype);
        assert_int_equal(got->ndim, want->ndim);
        for (int k = 0; k < want->ndim; k++) assert_int_equal(got->shape[k], want->shape[k]);
        size_t n;
        double *g = read_all(gf, want->name, &n);
        worst = fmax(worst, check_tensor(name, want->name, g, n, ef, tol));
        free(g);
    }
    printf("# tapegrad grad %-14s worst relative error %.2e\n", name, worst);
    tg_st_close(gf), tg_st_close(ef);
    unlink(o);
    return worst;
}

static void test_cli_grad_matches_pytorch(void **state)
{
    (void)state;
    if (access(TAPEGRAD, X_OK) != 0) fail_msg("%s is not built", TAPEGRAD);
    char dir[] = "/tmp/tg_fixtures_XXXXXX";
    assert_non_null(mkdtemp(dir));
    cli_case("lstm_l2_f64", "lstm", 1e-9, dir);
    cli_case("gru_l2_f32", "gru", 1e-4, dir); /* y misaligned in data.safetensors */
    cli_case("rnn_relu_l2_f64", "rnn_relu", 1e-9, dir);
    assert_int_equal(rmdir(dir), 0); /* nothing else (no temporary file) left behind */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_library_matches_pytorch),
        cmocka_unit_test(test_cli_grad_matches_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
