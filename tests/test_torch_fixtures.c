/* test_torch_fixtures.c — tapegrad reproduces PyTorch: for every case of
 * tests/fixtures/torch/cases.txt (written by tests/fixtures/gen_torch_fixtures.py), load the
 * parameters and data through the library, run the sequence model from a zero state with the
 * summed cross-entropy, and compare loss, h_n, c_n and every parameter gradient with PyTorch's
 * expected.safetensors: max |got − want| / max |want| per tensor ≤ 1e-9 (F64), ≤ 1e-4 (F32).
 * Cases with *_reverse parameters are bidirectional, a `lengths` tensor in the data makes the
 * batch packed, a `dropout_mask` fixes dropout's masks (issue 14). Every case runs twice: with
 * the built-in cell and with its cell file (models/cells/<cell>.cell), which must agree with
 * the built-in bit for bit. Then the built `tapegrad grad` on cases of each kind, comparing its
 * output file, and its one-line errors for bad lengths and masks. */
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
#include "cli_util.h"
#include "st_edit.h"

#define FIXTURES TG_SOURCE_DIR "/tests/fixtures/torch"
#define CELLS TG_SOURCE_DIR "/models/cells"

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

/* One case through the library, with the built-in cell or (cell_file) models/cells/<cell>.cell.
 * Returns the worst relative error over its tensors; *out (if not NULL) gets every compared
 * value in order, for the bit-for-bit comparison of the two. */
static double run_case(const struct fcase *c, int cell_file, double **out, size_t *nout)
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
    struct tg_cell *owned = NULL;
    const struct tg_cell *cell = tg_cell_find(c->cell);
    if (cell_file) {
        snprintf(path, sizeof path, CELLS "/%s.cell", c->cell);
        cell = owned = tg_cell_load(path);
        if (!owned) fail_msg("%s", tg_last_error());
    }
    assert_non_null(cell);
    int bidir = tg_st_find(pf, "rnn.weight_ih_l0_reverse") != NULL, D = bidir ? 2 : 1;
    struct tg_model_config cfg = {.cell = cell, .input = c->I, .hidden = c->H, .layers = c->L,
                                  .outputs = c->V, .dtype = f32 ? TG_F32 : TG_F64,
                                  .loss = TG_LOSS_XENT_SUM, .bidirectional = bidir};
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
    int32_t *y = malloc(ny * sizeof *y), *len = NULL;
    /* PyTorch marks "no loss" with cross_entropy's ignore_index −100, the library with −1 */
    for (size_t i = 0; i < ny; i++) y[i] = yd[i] == -100 ? -1 : (int32_t)yd[i];
    double *mask = NULL;
    if (tg_st_find(df, "lengths")) {
        size_t nl;
        double *ld = read_all(df, "lengths", &nl);
        assert_int_equal(nl, (size_t)c->B);
        len = malloc(nl * sizeof *len);
        for (size_t i = 0; i < nl; i++) len[i] = (int32_t)ld[i];
        /* the library ignores padded labels itself; PyTorch's −100 there is not a class */
        for (size_t i = 0; i < ny; i++)
            if ((int)(i / (size_t)c->B) >= len[i % (size_t)c->B]) y[i] = -1;
        free(ld);
    }
    if (tg_st_find(df, "dropout_mask")) {
        size_t nm;
        mask = read_all(df, "dropout_mask", &nm);
        assert_int_equal(nm, (size_t)(c->L - 1) * c->T * c->B * D * c->H);
        m->dropout_mask = mask;
    }

    struct tg_tape *t = tg_tape_new(0);
    struct tg_seq_batch b = {.T = c->T, .B = c->B, .x = x, .labels = y, .lengths = len};
    struct tg_seq_result res;
    if (tg_model_forward_from(m, t, &b, NULL, &res) != TG_OK) fail_msg("%s", tg_last_error());
    assert_int_equal(tg_backward(t, res.loss), TG_OK);

    double worst = 0, loss = tg_get(res.loss, 0, 0);
    worst = fmax(worst, check_tensor(c->name, "loss", &loss, 1, ef, tol));
    int ns = cell->n_state, checked = 1, LD = c->L * D;
    size_t sb = (size_t)c->B * c->H, cap = 1 + (size_t)ns * LD * sb, used = 0;
    for (int k = 0; k < m->n_params; k++) cap += tg_numel(m->params[k]);
    double *all = malloc(cap * sizeof *all);
    all[used++] = loss;
    for (int k = 0; k < ns; k++) {
        /* h_n (L·D, B, H): layer·D + direction, as res->final */
        for (int l = 0; l < LD; l++) tensor_as_f64(res.final[l * ns + k], 0, all + used + l * sb);
        worst = fmax(worst, check_tensor(c->name, k ? "c_n" : "h_n", all + used, LD * sb, ef, tol));
        used += LD * sb;
        checked++;
    }
    for (int k = 0; k < m->n_params; k++) {
        tensor_as_f64(m->params[k], 1, all + used);
        worst = fmax(worst, check_tensor(c->name, m->names[k], all + used, tg_numel(m->params[k]), ef, tol));
        used += tg_numel(m->params[k]);
        checked++;
    }
    if (out) *out = all, *nout = used;
    else free(all);
    /* nothing in expected.safetensors went unchecked */
    assert_int_equal(tg_st_count(ef), checked);
    printf("# %-28s %-8s %s %s  worst relative error %.2e (%d tensors)\n", c->name, c->cell, c->dtype,
           cell_file ? "file" : "C   ", worst, checked);

    tg_tape_free(t);
    tg_model_free(m);
    tg_cell_free(owned);
    free(x), free(yd), free(y), free(len), free(mask);
    tg_st_close(pf), tg_st_close(df), tg_st_close(ef);
    return worst;
}

static void test_library_matches_pytorch(void **state)
{
    (void)state;
    struct fcase cases[64];
    int n = read_cases(cases, 64);
    assert_true(n >= 28);
    double worst[2] = {0, 0};
    int seen[2] = {0, 0};
    for (int i = 0; i < n; i++) {
        int f32 = strcmp(cases[i].dtype, "F32") == 0;
        double *a, *b;
        size_t na, nb;
        worst[f32] = fmax(worst[f32], run_case(&cases[i], 0, &a, &na));
        /* the cell file records the same ops as the built-in cell: the same bits */
        worst[f32] = fmax(worst[f32], run_case(&cases[i], 1, &b, &nb));
        assert_int_equal(na, nb);
        for (size_t k = 0; k < na; k++)
            if (memcmp(&a[k], &b[k], sizeof a[k]) != 0)
                fail_msg("%s: value %zu: cell file %.17g, built-in %.17g", cases[i].name, k, b[k], a[k]);
        free(a), free(b);
        seen[f32]++;
    }
    assert_true(seen[0] > 0 && seen[1] > 0);
    printf("# %d cases: worst relative error F64 %.2e (tol 1e-9), F32 %.2e (tol 1e-4)\n", n, worst[0],
           worst[1]);
}

/* ------------------------------------------------------------ the CLI */

/* `tapegrad grad` on a case; its output must hold exactly the expected tensors, same dtypes and
 * shapes, values within tolerance. */
static double cli_case(const char *name, const char *cell, double tol, const char *dir)
{
    char p[512], d[512], o[512], e[512];
    snprintf(p, sizeof p, FIXTURES "/%s/params.safetensors", name);
    snprintf(d, sizeof d, FIXTURES "/%s/data.safetensors", name);
    snprintf(e, sizeof e, FIXTURES "/%s/expected.safetensors", name);
    snprintf(o, sizeof o, "%s/%s.safetensors", dir, name);
    struct run *r = run_tapegrad("grad", "--cell", cell, "--params", p, "--data", d, "--out", o, NULL);
    if (r->status != 0) fail_msg("%s: tapegrad grad --cell %s exited %d: %s", name, cell, r->status, r->err);
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
    /* issue 14: bidirectional, packed, fixed dropout masks — built-in cells and cell files */
    cli_case("lstm_bi_l2_f32", "lstm", 1e-4, dir);
    cli_case("gru_bi_l2_f64", "gru", 1e-9, dir);
    cli_case("lstm_pack_bi_l2_f64", "lstm", 1e-9, dir);
    cli_case("lstm_pack_bi_l2_f64", CELLS "/lstm.cell", 1e-9, dir);
    cli_case("gru_pack_l1_f64", CELLS "/gru.cell", 1e-9, dir);
    cli_case("gru_drop_bi_l3_f64", "gru", 1e-9, dir);
    cli_case("rnn_tanh_drop_pack_bi_l2_f64", CELLS "/rnn_tanh.cell", 1e-9, dir);
    /* y = -100 (cross_entropy's ignore_index) at valid positions: no loss there */
    cli_case("lstm_ignore_l2_f64", "lstm", 1e-9, dir);
    cli_case("gru_ignore_pack_bi_l1_f64", CELLS "/gru.cell", 1e-9, dir);
    assert_int_equal(rmdir(dir), 0); /* nothing else (no temporary file) left behind */
}

/* Bad lengths and masks: one line naming the tensor and what is wrong, exit 1, no output. */
static void expect_error(const char *dir, const char *cell, const char *params, const char *data,
                         const char *frag1, const char *frag2)
{
    char o[512];
    snprintf(o, sizeof o, "%s/G.safetensors", dir);
    struct run *r = run_tapegrad("grad", "--cell", cell, "--params", params, "--data", data, "--out", o, NULL);
    assert_one_line_error(r, frag1, frag2, NULL);
    assert_int_equal(access(o, F_OK), -1);
}

static void test_cli_grad_bad_lengths(void **state)
{
    (void)state;
    need_binary();
    char dir[] = "/tmp/tg_fixtures_XXXXXX", d[512];
    assert_non_null(mkdtemp(dir));
    snprintf(d, sizeof d, "%s/D.safetensors", dir);
    const char *P = FIXTURES "/lstm_pack_bi_l2_f64/params.safetensors";
    const char *D0 = FIXTURES "/lstm_pack_bi_l2_f64/data.safetensors"; /* T = 6, B = 4 */
    int64_t four[1] = {4}, three[1] = {3}, two[2] = {2, 2};
    const int64_t zero[4] = {6, 0, 5, 2}, big[4] = {6, 7, 5, 2}, fine[4] = {6, 3, 5, 2};
    const int64_t sq[4] = {6, 3, 5, 2};
    st_rewrite(D0, d, "lengths", TG_ST_I64, 1, four, zero, NULL, NULL);
    expect_error(dir, "lstm", P, d, "'lengths'", "lengths[1] = 0 is outside [1, 6]");
    st_rewrite(D0, d, "lengths", TG_ST_I64, 1, four, big, NULL, NULL);
    expect_error(dir, "lstm", P, d, "'lengths'", "lengths[1] = 7 is outside [1, 6]");
    st_rewrite(D0, d, "lengths", TG_ST_I64, 1, three, fine, NULL, NULL);
    expect_error(dir, "lstm", P, d, "'lengths' has shape [3]", "expected [4]");
    st_rewrite(D0, d, "lengths", TG_ST_I64, 2, two, sq, NULL, NULL);
    expect_error(dir, "lstm", P, d, "'lengths' has shape [2, 2]", "expected [4]");
    const double fl[4] = {6, 3, 5, 2};
    st_rewrite(D0, d, "lengths", TG_ST_F64, 1, four, fl, NULL, NULL);
    expect_error(dir, "lstm", P, d, "'lengths' is F64", "I64");
    /* a NaN in the padding is never read; one in a valid position is refused */
    st_set_element(D0, d, "x", (size_t)(5 * 4 + 3) * 3, NAN); /* t = 5, b = 3: past length 2 */
    char o[512];
    snprintf(o, sizeof o, "%s/G.safetensors", dir);
    struct run *r = run_tapegrad("grad", "--cell", "lstm", "--params", P, "--data", d, "--out", o, NULL);
    if (r->status != 0) fail_msg("NaN in the padding: exit %d: %s", r->status, r->err);
    unlink(o);
    st_set_element(D0, d, "x", (size_t)(1 * 4 + 3) * 3, NAN); /* t = 1, b = 3: valid */
    expect_error(dir, "lstm", P, d, "'x' is not finite", "lengths[3] = 2");
    /* dropout masks of the wrong shape, or for a model with one layer */
    const char *Pm = FIXTURES "/gru_drop_bi_l3_f64/params.safetensors";
    const char *Dm = FIXTURES "/gru_drop_bi_l3_f64/data.safetensors"; /* (2, 4, 2, 6) */
    int64_t ms[4] = {2, 4, 2, 3};
    static double zeros[48];
    st_rewrite(Dm, d, "dropout_mask", TG_ST_F64, 4, ms, zeros, NULL, NULL);
    expect_error(dir, "gru", Pm, d, "'dropout_mask' has shape [2, 4, 2, 3]", "expected [2, 4, 2, 6]");
    int64_t m1[4] = {0, 4, 2, 6};
    st_rewrite(FIXTURES "/gru_bi_l1_f64/data.safetensors", d, "dropout_mask", TG_ST_F64, 4, m1, zeros, NULL, NULL);
    expect_error(dir, "gru", FIXTURES "/gru_bi_l1_f64/params.safetensors", d, "'dropout_mask'",
                 "a 1-layer model has no dropout");
    unlink(d);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_library_matches_pytorch),
        cmocka_unit_test(test_cli_grad_matches_pytorch),
        cmocka_unit_test(test_cli_grad_bad_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
