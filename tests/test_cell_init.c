/* test_cell_init.c — `init` lines in cell files (models/cell_init.c): what each distribution
 * writes (orthogonal blocks are orthonormal, constants exact, ranges kept), that only the named
 * parameters and slices change, every layer (with its own input width), determinism from the
 * run's generator (and a resumed run bit-identical to a straight one), and that a file without
 * init lines — or with an intermediate called `init` — means what it meant before. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tapegrad_models.h"
#include "tapegrad_train.h"

static const char BODY[] =
    "state h\n"
    "param W[2H, I], U[2H, H], b[2H], V[H, 2H], c[H]\n"
    "a = W @ x + U @ h + b\n"
    "f = sigmoid(a[0:H])\n"
    "h' = f * h + (1 - f) * tanh(a[H:2H]) + 0 * (V @ [h, h]) + 0 * c\n";
static const char INITS[] =
    "init W = orthogonal          # tall: orthonormal columns\n"
    "init U[0:H] = orthogonal     # a square gate block\n"
    "init U[H:2H] = normal(0.5, 0.25)\n"
    "init b[0:H] = 1              # the gate's bias\n"
    "init b[H:2H] = zeros\n"
    "init V = orthogonal          # wide: orthonormal rows\n"
    "init c = uniform(-0.2, 0.3)\n";

enum { H = 16, IN = 5, L = 2 };

static struct tg_cell *cell_with(const char *extra)
{
    char src[2048];
    snprintf(src, sizeof src, "%s%s", BODY, extra);
    struct tg_cell *c = tg_cell_parse(src, strlen(src), "init_test.cell");
    if (!c) fail_msg("%s", tg_last_error());
    return c;
}

static struct tg_model *model(const struct tg_cell *c, uint64_t seed, int init_lines)
{
    struct tg_model_config cfg = {.cell = c, .input = IN, .hidden = H, .layers = L, .outputs = 3,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    if (tg_model_new(&cfg, &m) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_rng r;
    tg_rng_seed(&r, seed);
    tg_model_init_uniform(m, &r);
    if (init_lines) assert_int_equal(tg_model_init_cell(m, &r), TG_OK);
    return m;
}

static const struct tg_tensor *P(const struct tg_model *m, const char *name, int l)
{
    char n[64];
    snprintf(n, sizeof n, "rnn.%s_l%d", name, l);
    const struct tg_tensor *t = tg_model_param(m, n);
    if (!t) fail_msg("no %s", n);
    return t;
}

/* Rows [r0, r1) of t: is Q Qᵀ = I (rows orthonormal) or Qᵀ Q = I (columns)? max deviation. */
static double orth_error(const struct tg_tensor *t, int r0, int r1, int by_rows)
{
    int R = r1 - r0, C = t->cols, n = by_rows ? R : C, len = by_rows ? C : R;
    double worst = 0;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double d = 0;
            for (int k = 0; k < len; k++)
                d += by_rows ? tg_get(t, r0 + a, k) * tg_get(t, r0 + b, k)
                             : tg_get(t, r0 + k, a) * tg_get(t, r0 + k, b);
            worst = fmax(worst, fabs(d - (a == b)));
        }
    return worst;
}

static void test_init_values(void **state)
{
    (void)state;
    struct tg_cell *with = cell_with(INITS), *without = cell_with("");
    assert_true(tg_cell_has_init(with));
    assert_false(tg_cell_has_init(without));
    assert_false(tg_cell_has_init(tg_cell_find("lstm")));
    struct tg_model *m = model(with, 7, 1), *d = model(without, 7, 0);
    for (int l = 0; l < L; l++) {
        int in = l == 0 ? IN : H;
        const struct tg_tensor *W = P(m, "W", l), *U = P(m, "U", l), *b = P(m, "b", l),
                               *V = P(m, "V", l), *c = P(m, "c", l);
        assert_int_equal(W->cols, in);
        double e1 = orth_error(W, 0, 2 * H, 0), e2 = orth_error(U, 0, H, 0), e3 = orth_error(V, 0, H, 1);
        printf("# layer %d: orthonormality error W %.2g, U[0:H] %.2g, V %.2g\n", l, e1, e2, e3);
        assert_true(e1 < 1e-13 && e2 < 1e-13 && e3 < 1e-13);
        double s = 0, s2 = 0;
        for (int i = H; i < 2 * H; i++)
            for (int j = 0; j < H; j++) {
                double v = tg_get(U, i, j);
                s += v, s2 += v * v;
            }
        double mean = s / (H * H), sd = sqrt(s2 / (H * H) - mean * mean);
        assert_true(fabs(mean - 0.5) < 0.08 && fabs(sd - 0.25) < 0.06);
        for (int j = 0; j < H; j++) {
            assert_true(tg_get(b, 0, j) == 1.0);
            assert_true(tg_get(b, 0, H + j) == 0.0);
            double v = tg_get(c, 0, j);
            assert_true(v >= -0.2 && v < 0.3);
        }
    }
    /* the parts no init names keep the default initialisation, drawn first from the same seed */
    for (int i = 0; i < m->n_params; i++)
        if (m->param_spec[i] < 0) { /* the output layer */
            assert_int_equal(tg_numel(m->params[i]), tg_numel(d->params[i]));
            for (int r = 0; r < m->params[i]->rows; r++)
                for (int k = 0; k < m->params[i]->cols; k++)
                    assert_true(tg_get(m->params[i], r, k) == tg_get(d->params[i], r, k));
        }
    /* deterministic: the same seed gives the same bytes, another seed other values */
    struct tg_model *m2 = model(with, 7, 1), *m3 = model(with, 8, 1);
    for (int i = 0; i < m->n_params; i++)
        assert_memory_equal(m->params[i]->data, m2->params[i]->data, tg_nbytes(m->params[i]));
    assert_memory_not_equal(P(m, "V", 1)->data, P(m3, "V", 1)->data, tg_nbytes(P(m, "V", 1)));
    /* a file without init lines draws nothing more */
    struct tg_rng r1, r2;
    tg_rng_seed(&r1, 3);
    r2 = r1;
    assert_int_equal(tg_model_init_cell(d, &r1), TG_OK);
    assert_memory_equal(&r1, &r2, sizeof r1);
    tg_model_free(m), tg_model_free(m2), tg_model_free(m3), tg_model_free(d);
    tg_cell_free(with);
    tg_cell_free(without);
}

/* `init` is a keyword only before a name: an intermediate called init is still an equation. */
/* Numbers that name the sizes, evaluated per layer: layer 0 reads I = 5 inputs, layer 1 reads
 * H = 16; W ~ U(−1/√I, 1/√I) must fill each layer's own range (a width near 2/√I), and the
 * constant 2/H is 1/8 everywhere. */
static void test_init_size_expressions(void **state)
{
    (void)state;
    struct tg_cell *c = cell_with("init W = uniform(-1/sqrt(I), 1/sqrt(I))\n"
                                  "init c = 2/H\n"
                                  "init V = normal(0, 1 / sqrt(2 * H))\n");
    struct tg_model *m = model(c, 17, 1);
    for (int l = 0; l < L; l++) {
        int in = l ? H : IN;
        double bound = 1 / sqrt((double)in), lo = 1, hi = -1;
        const struct tg_tensor *w = P(m, "W", l);
        for (int i = 0; i < w->rows; i++)
            for (int j = 0; j < w->cols; j++) {
                double v = tg_get(w, i, j);
                assert_true(fabs(v) <= bound);
                lo = fmin(lo, v), hi = fmax(hi, v);
            }
        if (!(hi - lo > 1.5 * bound)) fail_msg("layer %d: W spans [%g, %g], bound %g", l, lo, hi, bound);
        const struct tg_tensor *cv = P(m, "c", l);
        for (int j = 0; j < H; j++) assert_true(tg_get(cv, 0, j) == 0.125);
        /* std of V's 2H·H entries against 1/√(2H), loosely: 4·2H·H = 512+ draws */
        const struct tg_tensor *v = P(m, "V", l);
        double ss = 0;
        for (int i = 0; i < v->rows; i++)
            for (int j = 0; j < v->cols; j++) ss += tg_get(v, i, j) * tg_get(v, i, j);
        double sd = sqrt(ss / (double)(v->rows * v->cols)), want = 1 / sqrt(2.0 * H);
        if (fabs(sd / want - 1) > 0.15) fail_msg("layer %d: V's std %g, want %g", l, sd, want);
    }
    tg_model_free(m);
    tg_cell_free(c);
}

static void test_init_as_a_name(void **state)
{
    (void)state;
    const char *src = "state h\nparam W[H, H]\ninit = W @ h\nh' = tanh(init)\n";
    struct tg_cell *c = tg_cell_parse(src, strlen(src), "old.cell");
    if (!c) fail_msg("%s", tg_last_error());
    assert_false(tg_cell_has_init(c));
    assert_int_equal(tg_cell_check(c, 3, 4), TG_OK);
    tg_cell_free(c);
    /* the forget-gate bias of the shipped lstm.cell, as one line */
    char path[512];
    snprintf(path, sizeof path, "%s/models/cells/lstm.cell", TG_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 64, f);
    fclose(f);
    buf[n] = '\0';
    strcat(buf, "init bias_ih[H:2H] = 1\n");
    c = tg_cell_parse(buf, strlen(buf), "lstm_fb.cell");
    if (!c) fail_msg("%s", tg_last_error());
    struct tg_model_config cfg = {.cell = c, .input = 3, .hidden = 4, .layers = 1, .outputs = 2,
                                  .dtype = TG_F32, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    assert_int_equal(tg_model_new(&cfg, &m), TG_OK);
    struct tg_rng r;
    tg_rng_seed(&r, 1);
    tg_model_init_uniform(m, &r);
    assert_int_equal(tg_model_init_cell(m, &r), TG_OK);
    const struct tg_tensor *b = tg_model_param(m, "rnn.bias_ih_l0");
    for (int j = 0; j < 16; j++) {
        if (j >= 4 && j < 8) assert_true(tg_get(b, 0, j) == 1.0);
        else assert_true(fabs(tg_get(b, 0, j)) <= 0.5 && tg_get(b, 0, j) != 1.0);
    }
    tg_model_free(m);
    tg_cell_free(c);
}

/* Training with init lines: 4 steps straight = 2 steps, a checkpoint, resume, 2 more. */
static void test_resume_bit_identical(void **state)
{
    (void)state;
    struct tg_cell *c = cell_with(INITS);
    char a[] = "/tmp/tg_init_a_XXXXXX", b[] = "/tmp/tg_init_b_XXXXXX";
    close(mkstemp(a));
    close(mkstemp(b));
    struct tg_train_config cfg = {.cell_def = c, .task = "copy", .length = 3, .hidden = 6,
                                  .batch = 4, .steps = 4, .eval_size = 4, .dtype = "f64",
                                  .checkpoint = a, .overwrite = 1, .seed = 11};
    struct tg_train_result res;
    if (tg_train(&cfg, &res) != TG_OK) fail_msg("%s", tg_last_error());
    cfg.checkpoint = b, cfg.steps = 2;
    if (tg_train(&cfg, &res) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_train_config rc = {.resume = b, .checkpoint = b, .steps = 4, .eval_size = 4};
    if (tg_train(&rc, &res) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_checkpoint *ca, *cb;
    assert_int_equal(tg_checkpoint_open(a, &ca), TG_OK);
    assert_int_equal(tg_checkpoint_open(b, &cb), TG_OK);
    struct tg_model *ma, *mb;
    assert_int_equal(tg_checkpoint_new_model(ca, tg_checkpoint_cell(ca), &ma), TG_OK);
    assert_int_equal(tg_checkpoint_new_model(cb, tg_checkpoint_cell(cb), &mb), TG_OK);
    for (int i = 0; i < ma->n_params; i++)
        assert_memory_equal(ma->params[i]->data, mb->params[i]->data, tg_nbytes(ma->params[i]));
    tg_model_free(ma), tg_model_free(mb);
    tg_checkpoint_close(ca), tg_checkpoint_close(cb);
    unlink(a), unlink(b);
    tg_cell_free(c);
}

/* LAPACK (OpenBLAS's), Fortran calling convention: A = QR, then Q from the reflectors. */
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work,
             const int *lwork, int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau,
             double *work, const int *lwork, int *info);

/* The expected orthogonal r × c block from the next r·c normals of rng: LAPACK's Householder QR
 * of the (tall) Gaussian matrix, each column of Q times the sign of R's diagonal entry. */
static void lapack_orthogonal(struct tg_rng *rng, int r, int c, double *out)
{
    int n = r > c ? r : c, k = r < c ? r : c, lw = 64 * n, info;
    double *A = malloc(sizeof *A * (size_t)n * k), tau[64], work[64 * 64], sgn[64];
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++) {
            double g = tg_rng_normal(rng); /* column-major n × k */
            if (r >= c) A[(size_t)j * n + i] = g;
            else A[(size_t)i * n + j] = g;
        }
    dgeqrf_(&n, &k, A, &n, tau, work, &lw, &info);
    assert_int_equal(info, 0);
    for (int j = 0; j < k; j++) sgn[j] = A[(size_t)j * n + j] < 0 ? -1.0 : 1.0;
    dorgqr_(&n, &k, &k, A, &n, tau, work, &lw, &info);
    assert_int_equal(info, 0);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++)
            out[(size_t)i * c + j] = r >= c ? A[(size_t)j * n + i] * sgn[j] : A[(size_t)i * n + j] * sgn[i];
    free(A);
}

/* `orthogonal` is the QR factor, sign-corrected: the same matrix LAPACK gives for the same draws. */
static void test_orthogonal_is_lapack_qr(void **state)
{
    (void)state;
    const char *src = "state h\nparam U[3H, H], V[H, 2H]\n"
                      "h' = tanh(U[0:H] @ h + 0 * (V @ [h, h]))\n"
                      "init U = orthogonal\ninit V = orthogonal\n";
    struct tg_cell *c = tg_cell_parse(src, strlen(src), "qr.cell");
    if (!c) fail_msg("%s", tg_last_error());
    struct tg_model_config cfg = {.cell = c, .input = 3, .hidden = 5, .layers = 1, .outputs = 2,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    assert_int_equal(tg_model_new(&cfg, &m), TG_OK);
    struct tg_rng r;
    tg_rng_seed(&r, 42);
    tg_model_init_uniform(m, &r);
    struct tg_rng r2 = r;
    assert_int_equal(tg_model_init_cell(m, &r), TG_OK);
    double want[15 * 10];
    const char *names[2] = {"U", "V"};
    const int shape[2][2] = {{15, 5}, {5, 10}};
    for (int k = 0; k < 2; k++) {
        lapack_orthogonal(&r2, shape[k][0], shape[k][1], want);
        const struct tg_tensor *t = P(m, names[k], 0);
        double worst = 0;
        for (int i = 0; i < shape[k][0]; i++)
            for (int j = 0; j < shape[k][1]; j++)
                worst = fmax(worst, fabs(tg_get(t, i, j) - want[(size_t)i * shape[k][1] + j]));
        printf("# %s (%d x %d): max |Gram-Schmidt - LAPACK QR| = %.2g\n", names[k], shape[k][0],
               shape[k][1], worst);
        assert_true(worst < 1e-13);
    }
    tg_model_free(m);
    tg_cell_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_values),
        cmocka_unit_test(test_init_size_expressions),
        cmocka_unit_test(test_init_as_a_name),
        cmocka_unit_test(test_resume_bit_identical),
        cmocka_unit_test(test_orthogonal_is_lapack_qr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
