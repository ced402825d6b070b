/* test_cli.c — the `tapegrad` program as a user runs it (the built binary, fork/exec).
 *
 * check: passes for all nine cells at the default sizes; --perturb (the report's self-test) makes
 *        it fail and name the tensor, the time step and the gate block; an unknown cell and bad
 *        flags give exit 1 and one line on stderr.
 * grad:  a missing file, a truncated file, the wrong --cell, labels out of range (the message
 *        counts time steps 1..T), a misshapen or missing tensor, parameters or inputs that are
 *        not finite, an output that is an input (also through a link) and an unwritable output
 *        each give exit 1, one line on stderr naming the file and tensor, and no output file
 *        (an existing one is left untouched).
 *
 * Test functions are named test_check_* and test_grad_* by subcommand. */
#include <dirent.h>
#include <math.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "tapegrad_models.h"
#include "tapegrad_safetensors.h"
#include "test_util.h"
#include "cli_util.h"
#include "st_edit.h"

#define FIXTURES TG_SOURCE_DIR "/tests/fixtures/torch"

/* ------------------------------------------------------------ check */

static void test_check_passes_for_every_cell(void **state)
{
    (void)state;
    need_binary();
    for (int i = 0; i < tg_cell_count(); i++) {
        const char *name = tg_cell_at(i)->name;
        struct run *r = run_tapegrad("check", "--cell", name, NULL);
        if (r->status != 0) fail_msg("check --cell %s exited %d:\n%s%s", name, r->status, r->out, r->err);
        assert_non_null(strstr(r->out, "verdict: PASS"));
        assert_non_null(strstr(r->out, "rnn.weight"));
        assert_non_null(strstr(r->out, "out.bias"));
        /* the oracle is used where it exists and said to be absent elsewhere */
        int oracle = !strcmp(name, "rnn_tanh") || !strcmp(name, "lstm") || !strcmp(name, "gru") ||
                     !strcmp(name, "gru_cho");
        assert_true((strstr(r->out, "no oracle") == NULL) == oracle);
        assert_string_equal(r->err, "");
        const char *v = strstr(r->out, "verdict:");
        printf("# %-14s %.*s", name, (int)(strchr(v, '\n') - v + 1), v);
    }
}

static void test_check_other_sizes(void **state)
{
    (void)state;
    need_binary();
    struct run *r = run_tapegrad("check", "--cell", "gru", "--steps", "7", "--batch", "1", "--input", "2",
                                 "--hidden", "3", "--layers", "3", "--vocab", "4", "--seed", "99", NULL);
    if (r->status != 0) fail_msg("%s%s", r->out, r->err);
    assert_non_null(strstr(r->out, "rnn.weight_hh_l2"));
    assert_non_null(strstr(r->out, "T=7 steps, B=1 sequences, I=2 inputs, H=3 hidden, L=3 layers, V=4"));

    /* relu at a size where many stencils straddle a kink: those are skipped, the rest agree */
    r = run_tapegrad("check", "--cell", "rnn_relu", "--steps", "20", "--batch", "4", "--hidden", "10", NULL);
    if (r->status != 0) fail_msg("%s%s", r->out, r->err);
    const char *v = strstr(r->out, "verdict: PASS");
    assert_non_null(v);
    long checked = 0, skipped = 0;
    const char *paren = strchr(v, '(');
    assert_non_null(paren);
    assert_int_equal(sscanf(paren, "(%ld elements by FD, %ld skipped", &checked, &skipped), 2);
    assert_true(skipped > 0);
    assert_true(checked > 5 * skipped);
}

/* The report's self-test: an error injected from step 3 on into one element of autodiff's
 * gradient of rnn.weight_hh_l0, row 7 = gate block 1 = f of an lstm with H = 6. */
static void test_check_perturb_reports_tensor_step_and_block(void **state)
{
    (void)state;
    need_binary();
    struct run *r = run_tapegrad("check", "--cell", "lstm", "--perturb", "rnn.weight_hh_l0:7:3",
                                 "--perturb-step", "3", NULL);
    assert_int_equal(r->status, 1);
    assert_non_null(strstr(r->out, "verdict: FAIL"));
    assert_non_null(strstr(r->out, "first difference: time step 3, rnn.weight_hh_l0, gate block f"));
    assert_non_null(strstr(r->out, "steps 1..2 agree"));
    assert_non_null(strstr(r->out, "[7, 3]"));

    /* a cell without an oracle: finite differences locate it; mgu's bias_h is the h~ block */
    r = run_tapegrad("check", "--cell", "mgu", "--perturb", "rnn.bias_h_l1:2", "--perturb-step", "2", NULL);
    assert_int_equal(r->status, 1);
    assert_non_null(strstr(r->out, "first difference: time step 2, rnn.bias_h_l1, gate block h~"));

    /* gru_cho: row 13 of the stacked weight is block c (rows 12..17) */
    r = run_tapegrad("check", "--cell", "gru_cho", "--perturb", "rnn.weight_l1:13:0", "--perturb-step", "5", NULL);
    assert_int_equal(r->status, 1);
    assert_non_null(strstr(r->out, "first difference: time step 5, rnn.weight_l1, gate block c"));

    /* a bad perturbation spec is a user error, not a disagreement */
    r = run_tapegrad("check", "--cell", "lstm", "--perturb", "rnn.nothing_l0:1:1", NULL);
    assert_one_line_error(r, "rnn.nothing_l0", NULL);
    r = run_tapegrad("check", "--cell", "lstm", "--perturb", "rnn.weight_hh_l0:24:0", NULL);
    assert_one_line_error(r, "out of range", NULL);
}

static void test_check_unknown_cell(void **state)
{
    (void)state;
    need_binary();
    struct run *r = run_tapegrad("check", "--cell", "lstmm", NULL);
    assert_one_line_error(r, "unknown cell 'lstmm'", "gru_cho", NULL);
    assert_string_equal(r->out, "");
    r = run_tapegrad("check", NULL);
    assert_one_line_error(r, "--cell", NULL);
}

static void test_check_bad_flags(void **state)
{
    (void)state;
    need_binary();
    struct run *r = run_tapegrad("check", "--cell", "lstm", "--steps", "abc", NULL);
    assert_one_line_error(r, "--steps", "abc", NULL);
    r = run_tapegrad("check", "--cell", "lstm", "--steps", "0", NULL);
    assert_one_line_error(r, "--steps", NULL);
    r = run_tapegrad("check", "--cell", "lstm", "--bogus", "1", NULL);
    assert_one_line_error(r, "--bogus", NULL);
    r = run_tapegrad("check", "--cell", "lstm", "--hidden", NULL);
    assert_one_line_error(r, "--hidden", NULL);
    r = run_tapegrad("check", "--cell", "lstm", "--perturb", "rnn.weight_hh_l0:1:1", "--perturb-step", "9", NULL);
    assert_one_line_error(r, "--perturb-step", NULL);
    /* --help documents the definitions and exits 0 */
    r = run_tapegrad("check", "--help", NULL);
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->out, "--perturb"));
    assert_non_null(strstr(r->out, "1e-10"));
    assert_non_null(strstr(r->out, "1e-06"));
}

/* ------------------------------------------------------------ grad: bad input */

struct gdir {
    char dir[64];
    char out[128];      /* output path inside dir */
};

static void gdir_new(struct gdir *g)
{
    snprintf(g->dir, sizeof g->dir, "/tmp/tg_cli_grad_XXXXXX");
    assert_non_null(mkdtemp(g->dir));
    snprintf(g->out, sizeof g->out, "%s/G.safetensors", g->dir);
}

/* Entries in the directory other than the test's own inputs (P.safetensors, D.safetensors) and
 * `keep`; 0 means nothing left behind, not even a temporary file. */
static int stray_files(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const char *f = e->d_name;
        if (!strcmp(f, ".") || !strcmp(f, "..") || !strcmp(f, "P.safetensors") ||
            !strcmp(f, "D.safetensors") || (keep && !strcmp(f, keep)))
            continue;
        n++;
    }
    closedir(d);
    return n;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    char p[512];
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}


static const char SENTINEL[] = "an earlier result that a failed run must not touch\n";

/* Run grad with params/data into g->out twice: once with no output file (none may appear) and
 * once over an existing one (it must stay byte-identical). Every run: exit 1, one line. */
static void expect_grad_error(struct gdir *g, const char *cell, const char *params, const char *data,
                              const char *frag1, const char *frag2)
{
    unlink(g->out);
    struct run *r = run_tapegrad("grad", "--cell", cell, "--params", params, "--data", data, "--out",
                                 g->out, NULL);
    assert_one_line_error(r, frag1, frag2, NULL);
    assert_int_equal(access(g->out, F_OK), -1);
    assert_int_equal(stray_files(g->dir, NULL), 0);

    write_file(g->out, SENTINEL, sizeof SENTINEL - 1);
    r = run_tapegrad("grad", "--cell", cell, "--params", params, "--data", data, "--out", g->out, NULL);
    assert_one_line_error(r, frag1, frag2, NULL);
    size_t n;
    char *back = tg_test_read_file(g->out, &n);
    assert_non_null(back);
    assert_int_equal(n, sizeof SENTINEL - 1);
    assert_memory_equal(back, SENTINEL, n);
    free(back);
    assert_int_equal(stray_files(g->dir, "G.safetensors"), 0);
    unlink(g->out);
}

#define CASE_P(c) FIXTURES "/" c "/params.safetensors"
#define CASE_D(c) FIXTURES "/" c "/data.safetensors"

static void test_grad_missing_file(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    expect_grad_error(&g, "lstm", "/nonexistent/P.safetensors", CASE_D("lstm_l2_f64"),
                      "/nonexistent/P.safetensors", NULL);
    expect_grad_error(&g, "lstm", CASE_P("lstm_l2_f64"), "/nonexistent/D.safetensors",
                      "/nonexistent/D.safetensors", NULL);
    /* a required flag left out */
    struct run *r = run_tapegrad("grad", "--cell", "lstm", "--params", CASE_P("lstm_l2_f64"), "--out",
                                 g.out, NULL);
    assert_one_line_error(r, "--data", NULL);
    assert_int_equal(access(g.out, F_OK), -1);
    rm_dir(g.dir);
}

static void test_grad_truncated_params(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    size_t n = 0;
    char *bytes = tg_test_read_file(CASE_P("lstm_l2_f64"), &n);
    assert_non_null(bytes);
    char p[160];
    snprintf(p, sizeof p, "%s/P.safetensors", g.dir);
    /* cut inside the data buffer, then inside the header, then inside the length word */
    size_t cuts[3] = {n - 20, 40, 5};
    for (int i = 0; i < 3; i++) {
        write_file(p, bytes, cuts[i]);
        expect_grad_error(&g, "lstm", p, CASE_D("lstm_l2_f64"), p, NULL);
    }
    free(bytes);
    rm_dir(g.dir);
}

static void test_grad_wrong_cell(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    /* LSTM weights (4H rows) read as a GRU (3H rows): the first tensor checked says so */
    expect_grad_error(&g, "gru", CASE_P("lstm_l2_f64"), CASE_D("lstm_l2_f64"), "rnn.weight_ih_l0",
                      "3*H");
    struct run *r = run_tapegrad("grad", "--cell", "gru", "--params", CASE_P("lstm_l2_f64"), "--data",
                                 CASE_D("lstm_l2_f64"), "--out", g.out, NULL);
    assert_non_null(strstr(r->err, "lstm")); /* the hint: 4*H rows is what an lstm has */
    assert_non_null(strstr(r->err, "params.safetensors"));
    expect_grad_error(&g, "rnn_tanh", CASE_P("gru_l2_f64"), CASE_D("gru_l2_f64"), "rnn.weight_ih_l0",
                      "1*H");
    /* cells without a PyTorch module, and unknown ones */
    expect_grad_error(&g, "gru_cho", CASE_P("gru_l2_f64"), CASE_D("gru_l2_f64"), "gru_cho", NULL);
    expect_grad_error(&g, "grux", CASE_P("gru_l2_f64"), CASE_D("gru_l2_f64"), "unknown cell 'grux'", NULL);
    rm_dir(g.dir);
}

/* src with tensor `name` replaced (or dropped when data is NULL), saved as dst. */
static void rewrite(const char *src, const char *dst, const char *name, enum tg_st_dtype dt, int ndim,
                    const int64_t *shape, const void *data)
{
    st_rewrite(src, dst, name, dt, ndim, shape, data, NULL, NULL);
}

/* Issue 17: NaN or infinite weights (or inputs) gave NaN gradients written as a result. */
static void test_grad_nonfinite_params(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    char p[160], d[160];
    snprintf(p, sizeof p, "%s/P.safetensors", g.dir);
    snprintf(d, sizeof d, "%s/D.safetensors", g.dir);
    /* lstm_l2_f64: H 5, so rnn.weight_hh_l1 is [20, 5]; element 7 is [1, 2] */
    st_set_element(CASE_P("lstm_l2_f64"), p, "rnn.weight_hh_l1", 7, NAN);
    expect_grad_error(&g, "lstm", p, CASE_D("lstm_l2_f64"), "'rnn.weight_hh_l1' is not finite",
                      "nan at [1, 2]");
    st_set_element(CASE_P("lstm_l2_f64"), p, "out.bias", 0, -INFINITY);
    expect_grad_error(&g, "lstm", p, CASE_D("lstm_l2_f64"), "'out.bias' is not finite", "-inf at [0]");
    st_set_element(CASE_D("lstm_l2_f64"), d, "x", 3, INFINITY);
    expect_grad_error(&g, "lstm", CASE_P("lstm_l2_f64"), d, "'x' is not finite", "D.safetensors");
    rm_dir(g.dir);
}

/* Issue 17: `grad --out P --params P` replaced the parameters with the gradients and exited 0.
 * An output that is an input, by any name (a hard link, a symbolic link), is refused. */
static void test_grad_out_is_an_input(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    char p[160], d[160], hard[160], soft[160];
    snprintf(p, sizeof p, "%s/P.safetensors", g.dir);
    snprintf(d, sizeof d, "%s/D.safetensors", g.dir);
    snprintf(hard, sizeof hard, "%s/hard.safetensors", g.dir);
    snprintf(soft, sizeof soft, "%s/soft.safetensors", g.dir);
    size_t np, nd;
    char *pb = tg_test_read_file(CASE_P("lstm_l2_f64"), &np), *db = tg_test_read_file(CASE_D("lstm_l2_f64"), &nd);
    assert_true(pb && db);
    write_file(p, pb, np);
    write_file(d, db, nd);
    assert_int_equal(link(p, hard), 0);
    assert_int_equal(symlink(d, soft), 0);
    const char *outs[4] = {p, hard, d, soft};
    for (int i = 0; i < 4; i++) {
        struct run *r = run_tapegrad("grad", "--cell", "lstm", "--params", p, "--data", d, "--out", outs[i], NULL);
        assert_one_line_error(r, "same file as", i < 2 ? "--params" : "--data", NULL);
    }
    size_t n;
    char *now = tg_test_read_file(p, &n);
    assert_true(now && n == np && memcmp(now, pb, n) == 0);
    free(now);
    now = tg_test_read_file(d, &n);
    assert_true(now && n == nd && memcmp(now, db, n) == 0);
    free(now);
    free(pb);
    free(db);
    unlink(hard);
    unlink(soft);
    rm_dir(g.dir);
}

static void test_grad_labels_out_of_range(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    /* lstm_l2_f64: T 5, B 2, V 7 */
    int64_t y[10] = {0, 1, 2, 3, 4, 5, 6, 0, 1, 2}, shape[2] = {5, 2};
    char d[160];
    snprintf(d, sizeof d, "%s/D.safetensors", g.dir);
    y[7] = 7;
    rewrite(CASE_D("lstm_l2_f64"), d, "y", TG_ST_I64, 2, shape, y);
    /* the index is y's own (0-based); the time step is counted 1..T like everywhere else */
    expect_grad_error(&g, "lstm", CASE_P("lstm_l2_f64"), d, "'y'", "y[3, 1] (time step 4 of 5, batch row 1)");
    y[7] = -1;
    rewrite(CASE_D("lstm_l2_f64"), d, "y", TG_ST_I64, 2, shape, y);
    expect_grad_error(&g, "lstm", CASE_P("lstm_l2_f64"), d, "label -1", "D.safetensors");
    /* I32 labels are accepted */
    int32_t y32[10] = {0, 1, 2, 3, 4, 5, 6, 0, 1, 2};
    rewrite(CASE_D("lstm_l2_f64"), d, "y", TG_ST_I32, 2, shape, y32);
    struct run *r = run_tapegrad("grad", "--cell", "lstm", "--params", CASE_P("lstm_l2_f64"), "--data", d,
                                 "--out", g.out, NULL);
    if (r->status != 0) fail_msg("%s", r->err);
    assert_int_equal(access(g.out, F_OK), 0);
    rm_dir(g.dir);
}

static void test_grad_misshapen_or_missing_tensor(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    char p[160], d[160];
    snprintf(p, sizeof p, "%s/P.safetensors", g.dir);
    snprintf(d, sizeof d, "%s/D.safetensors", g.dir);
    /* lstm_l2_f64: H 5, so rnn.bias_hh_l1 is (20,) */
    double b[21] = {0};
    int64_t s21[1] = {21};
    rewrite(CASE_P("lstm_l2_f64"), p, "rnn.bias_hh_l1", TG_ST_F64, 1, s21, b);
    expect_grad_error(&g, "lstm", p, CASE_D("lstm_l2_f64"), "rnn.bias_hh_l1", "[21]");
    rewrite(CASE_P("lstm_l2_f64"), p, "rnn.bias_hh_l1", TG_ST_F64, 0, NULL, NULL);
    expect_grad_error(&g, "lstm", p, CASE_D("lstm_l2_f64"), "rnn.bias_hh_l1", "missing");
    float bf[20] = {0};
    int64_t s20[1] = {20};
    rewrite(CASE_P("lstm_l2_f64"), p, "rnn.bias_hh_l1", TG_ST_F32, 1, s20, bf);
    expect_grad_error(&g, "lstm", p, CASE_D("lstm_l2_f64"), "rnn.bias_hh_l1", "F32");
    rewrite(CASE_P("lstm_l2_f64"), p, "rnn.weight_hr_l0", TG_ST_F64, 1, s20, b);
    expect_grad_error(&g, "lstm", p, CASE_D("lstm_l2_f64"), "unexpected tensor 'rnn.weight_hr_l0'", NULL);
    /* x with the wrong input width (I = 3) */
    double x[5 * 2 * 4] = {0};
    int64_t sx[3] = {5, 2, 4};
    rewrite(CASE_D("lstm_l2_f64"), d, "x", TG_ST_F64, 3, sx, x);
    expect_grad_error(&g, "lstm", CASE_P("lstm_l2_f64"), d, "'x'", "[5, 2, 4]");
    unlink(d);
    rewrite(CASE_D("lstm_l2_f64"), d, "y", TG_ST_I64, 0, NULL, NULL);
    expect_grad_error(&g, "lstm", CASE_P("lstm_l2_f64"), d, "'y'", "missing");
    rm_dir(g.dir);
}

static void test_grad_unwritable_output(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    /* a directory that does not exist */
    char out[200];
    snprintf(out, sizeof out, "%s/no/such/dir/G.safetensors", g.dir);
    struct run *r = run_tapegrad("grad", "--cell", "lstm", "--params", CASE_P("lstm_l2_f64"), "--data",
                                 CASE_D("lstm_l2_f64"), "--out", out, NULL);
    assert_one_line_error(r, out, NULL);
    assert_int_equal(stray_files(g.dir, NULL), 0);
    /* an existing directory as the output: not replaced, nothing left next to it */
    char sub[160];
    snprintf(sub, sizeof sub, "%s/G.safetensors", g.dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    r = run_tapegrad("grad", "--cell", "lstm", "--params", CASE_P("lstm_l2_f64"), "--data",
                     CASE_D("lstm_l2_f64"), "--out", sub, NULL);
    assert_one_line_error(r, sub, NULL);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(stray_files(g.dir, "G.safetensors"), 0);
    rmdir(sub);
    rm_dir(g.dir);
}

/* The success path writes exactly the documented tensors, with PyTorch's shapes. */
static void test_grad_output_layout(void **state)
{
    (void)state;
    need_binary();
    struct gdir g;
    gdir_new(&g);
    struct run *r = run_tapegrad("grad", "--cell", "lstm", "--params", CASE_P("lstm_l2_f64"), "--data",
                                 CASE_D("lstm_l2_f64"), "--out", g.out, NULL);
    if (r->status != 0) fail_msg("%s", r->err);
    assert_string_equal(r->err, "");
    struct tg_st_file *f;
    if (tg_st_read(g.out, &f) != TG_OK) fail_msg("%s", tg_last_error());
    assert_int_equal(tg_st_count(f), 2 * 4 + 2 + 3);
    const struct tg_st_tensor *t = tg_st_find(f, "loss");
    assert_non_null(t);
    assert_int_equal(t->ndim, 0);
    t = tg_st_find(f, "rnn.bias_ih_l1");
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 20);
    t = tg_st_find(f, "c_n");
    assert_non_null(t);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 2);
    assert_int_equal(t->shape[2], 5);
    assert_int_equal(t->dtype, TG_ST_F64);
    tg_st_close(f);
    assert_int_equal(stray_files(g.dir, "G.safetensors"), 0);
    rm_dir(g.dir);
}

/* Found by review: output that could not be written (disk full) exited 0, and control
 * characters in a path or tensor name broke the one-line error and reached the terminal. */
static void test_cli_stdout_failure_and_control_chars(void **state)
{
    (void)state;
    need_binary();
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int full = open("/dev/full", O_WRONLY);
        int null = open("/dev/null", O_WRONLY);
        if (full < 0 || null < 0) _exit(126);
        dup2(full, 1);
        dup2(null, 2);
        execl(TAPEGRAD, "tapegrad", "check", "--cell", "rnn_tanh", (char *)NULL);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);

    struct run *r = run_tapegrad("grad", "--cell", "lstm", "--params", "no\nsuch\033[31m.st",
                                 "--data", "d.st", "--out", "/tmp/tg_cli_never.st", NULL);
    assert_int_equal(r->status, 1);
    assert_null(strchr(r->err, '\033'));
    assert_ptr_equal(strchr(r->err, '\n'), r->err + strlen(r->err) - 1);
    assert_non_null(strstr(r->err, "no?such?[31m.st"));
    r = run_tapegrad("tr\nain", NULL);
    assert_int_equal(r->status, 1);
    assert_ptr_equal(strchr(r->err, '\n'), r->err + strlen(r->err) - 1);
}

/* ------------------------------------------------------ --cell FILE.cell everywhere */

#define CELLS TG_SOURCE_DIR "/models/cells"

/* check on the shipped files: the four with an oracle use it, every one agrees */
static void test_cell_file_check(void **state)
{
    (void)state;
    need_binary();
    const char *with_oracle[] = {"rnn_tanh", "lstm", "gru", "gru_cho"};
    for (int k = 0; k < 4; k++) {
        char path[512];
        snprintf(path, sizeof path, CELLS "/%s.cell", with_oracle[k]);
        struct run *r = run_tapegrad("check", "--cell", path, NULL);
        if (r->status != 0) fail_msg("check --cell %s: %s%s", path, r->out, r->err);
        assert_non_null(strstr(r->out, "agrees with the hand-derived BPTT and with finite differences"));
    }
    struct run *r = run_tapegrad("check", "--cell", CELLS "/mgu.cell", NULL);
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->out, "PASS"));
    /* a bad file: its error, one line */
    char bad[] = "/tmp/tg_cli_bad_XXXXXX.cell";
    int fd = mkstemps(bad, 5);
    assert_true(fd >= 0);
    const char text[] = "state h\nparam W[H, H]\nh' = tanh(W @ [h, x])\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    r = run_tapegrad("check", "--cell", bad, "--hidden", "6", "--input", "4", NULL);
    assert_one_line_error(r, ":3:11: W @ [h, x]: W has 6 columns but [h, x] has 10 units (H = 6, I = 4)", NULL);
    r = run_tapegrad("dot", "--cell", "/nonexistent/x.cell", "--out", "/tmp/tg_never.dot", NULL);
    assert_one_line_error(r, "/nonexistent/x.cell: cannot open the cell file", NULL);
    unlink(bad);
}

/* dot: names from the file, equations in the title */
static void test_cell_file_dot(void **state)
{
    (void)state;
    need_binary();
    char out[] = "/tmp/tg_cli_dot_XXXXXX.dot";
    int fd = mkstemps(out, 4);
    assert_true(fd >= 0);
    close(fd);
    struct run *r = run_tapegrad("dot", "--cell", CELLS "/lstm.cell", "--steps", "2", "--out", out, NULL);
    if (r->status != 0) fail_msg("%s", r->err);
    char *dot = tg_test_read_file(out, NULL);
    assert_non_null(dot);
    assert_non_null(strstr(dot, "label=\"lstm: a = weight_ih @ x + bias_ih + weight_hh @ h + bias_hh\\n"));
    assert_non_null(strstr(dot, "[label=\"c'\\nadd"));
    assert_non_null(strstr(dot, "[label=\"f\\nsigmoid"));
    assert_non_null(strstr(dot, "[label=\"a[H:2H]\\nslice cols"));
    free(dot);
    /* the built-in cell: its gates named too, and in the tape's order in every step */
    r = run_tapegrad("dot", "--cell", "lstm", "--steps", "2", "--out", out, NULL);
    assert_int_equal(r->status, 0);
    dot = tg_test_read_file(out, NULL);
    assert_non_null(dot);
    assert_non_null(strstr(dot, "graph [rankdir=LR, newrank=true, ordering=out,"));
    assert_non_null(strstr(dot, "[label=\"f\\nsigmoid"));
    assert_non_null(strstr(dot, "[label=\"h'\\nmul"));
    free(dot);
    /* steps in time order, left to right, also collapsed and windowed (rendered by Graphviz) */
    const char *layouts[][4] = {{"--collapse", "--steps", "8", NULL}, {"--window", "2", "--steps", "9"},
                                {"--layers", "2", "--steps", "5"}};
    char svg[] = "/tmp/tg_cli_dot_XXXXXX.svg";
    fd = mkstemps(svg, 4);
    assert_true(fd >= 0);
    close(fd);
    for (int k = 0; k < 3; k++) {
        r = run_tapegrad("dot", "--cell", "lstm", "--backward", "--out", svg, layouts[k][0], layouts[k][1],
                         layouts[k][2], layouts[k][3], NULL);
        if (r->status != 0) fail_msg("%s", r->err);
        char *text = tg_test_read_file(svg, NULL);
        assert_non_null(text);
        double prev = -1e9;
        int n = 0;
        for (const char *p = text; (p = strstr(p, "<title>cluster_t")) != NULL; p++) {
            if (strncmp(strpbrk(p + 16, "_<"), "_l", 2) == 0) continue; /* a layer's box */
            const char *m = strstr(p, " d=\"M");
            assert_non_null(m);
            double x = strtod(m + 5, NULL);
            if (!(x > prev)) fail_msg("%s: step cluster %d is left of the one before (x %g <= %g)",
                                      layouts[k][0], n, x, prev);
            prev = x;
            n++;
        }
        assert_true(n >= 4);
        free(text);
    }
    unlink(svg);
    unlink(out);
}

/* grad through a file gives the built-in cell's bytes; states are named after the file's */
static void test_cell_file_grad(void **state)
{
    (void)state;
    need_binary();
    const char *cases[][2] = {{"lstm_l2_f64", "lstm"}, {"gru_l2_f32", "gru"}};
    for (int k = 0; k < 2; k++) {
        char p[512], d[512], cell[512];
        snprintf(p, sizeof p, FIXTURES "/%s/params.safetensors", cases[k][0]);
        snprintf(d, sizeof d, FIXTURES "/%s/data.safetensors", cases[k][0]);
        snprintf(cell, sizeof cell, CELLS "/%s.cell", cases[k][1]);
        const char *outs[2] = {"/tmp/tg_cli_g_builtin.st", "/tmp/tg_cli_g_file.st"};
        struct run *r = run_tapegrad("grad", "--cell", cases[k][1], "--params", p, "--data", d, "--out", outs[0], NULL);
        assert_int_equal(r->status, 0);
        r = run_tapegrad("grad", "--cell", cell, "--params", p, "--data", d, "--out", outs[1], NULL);
        if (r->status != 0) fail_msg("%s", r->err);
        struct tg_st_file *a, *b;
        assert_int_equal(tg_st_read(outs[0], &a), TG_OK);
        assert_int_equal(tg_st_read(outs[1], &b), TG_OK);
        assert_int_equal(tg_st_count(a), tg_st_count(b));
        for (int i = 0; i < tg_st_count(a); i++) {
            const struct tg_st_tensor *ta = tg_st_at(a, i), *tb = tg_st_find(b, ta->name);
            if (!tb) fail_msg("%s: file output lacks %s", cases[k][0], ta->name);
            assert_int_equal(ta->ndim, tb->ndim);
            assert_int_equal(ta->nbytes, tb->nbytes);
            if (memcmp(ta->data, tb->data, ta->nbytes) != 0) fail_msg("%s: %s differs", cases[k][0], ta->name);
        }
        tg_st_close(a);
        tg_st_close(b);
        unlink(outs[0]);
        unlink(outs[1]);
    }
}

/* train with a file, resume without it, refuse another file; sample needs no file */
static void test_cell_file_train_resume_sample(void **state)
{
    (void)state;
    need_binary();
    char dir[] = "/tmp/tg_cli_cellrun_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char ck[600], other[600];
    snprintf(ck, sizeof ck, "%s/run.st", dir);
    snprintf(other, sizeof other, "%s/gru.cell", dir);
    struct run *r = run_tapegrad("train", "--cell", CELLS "/gru.cell", "--task", "text", "--data",
                                 TG_SOURCE_DIR "/README.md", "--steps", "4", "--hidden", "8",
                                 "--batch", "2", "--seq", "5", "--checkpoint", ck, NULL);
    if (r->status != 0) fail_msg("%s", r->err);
    r = run_tapegrad("train", "--resume", ck, "--steps", "6", NULL);
    if (r->status != 0) fail_msg("resume without the file: %s", r->err);
    r = run_tapegrad("sample", "--checkpoint", ck, "--length", "20", NULL);
    if (r->status != 0) fail_msg("sample: %s", r->err);
    /* the same cell name, another definition (z and 1 − z swapped) */
    FILE *f = fopen(other, "w");
    assert_non_null(f);
    fputs("cell gru\nstate h\nparam weight_ih[3H, I], weight_hh[3H, H], bias_ih[3H], bias_hh[3H]\n"
          "gi = weight_ih @ x + bias_ih\ngh = weight_hh @ h + bias_hh\nr = sigmoid(gi[0:H] + gh[0:H])\n"
          "z = sigmoid(gi[H:2H] + gh[H:2H])\nn = tanh(gi[2H:3H] + r * gh[2H:3H])\n"
          "h' = z * n + (1 - z) * h\n", f);
    fclose(f);
    r = run_tapegrad("train", "--cell", other, "--resume", ck, "--steps", "8", NULL);
    assert_one_line_error(r, "written for another definition of cell 'gru'", NULL);
    r = run_tapegrad("train", "--cell", CELLS "/gru.cell", "--resume", ck, "--steps", "8", NULL);
    if (r->status != 0) fail_msg("resume with the same file: %s", r->err);
    unlink(ck), unlink(other), rmdir(dir);
}

/* grad for a file of our own: vector parameters ([N], 1-D in P and G), a second state named s
 * (s_n in G), 2 layers, float32; the loss matches the model run in this process. */
static void test_cell_file_grad_own_cell(void **state)
{
    (void)state;
    need_binary();
    const char src[] = "state h, s\nparam weight_ih[H, I], weight_hh[H], bias_ih[H], w_s[H]\n"
                       "s' = sigmoid(w_s * s + weight_ih @ x)\nh' = relu(weight_ih @ x + bias_ih + weight_hh * h) * s'\n";
    char dir[] = "/tmp/tg_cli_own_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cpath[600], ppath[600], dpath[600], gpath[600];
    snprintf(cpath, sizeof cpath, "%s/indrnn_s.cell", dir);
    snprintf(ppath, sizeof ppath, "%s/P.st", dir);
    snprintf(dpath, sizeof dpath, "%s/D.st", dir);
    snprintf(gpath, sizeof gpath, "%s/G.st", dir);
    FILE *f = fopen(cpath, "w");
    assert_non_null(f);
    fputs(src, f);
    fclose(f);
    struct tg_cell *cell = tg_cell_load(cpath);
    if (!cell) fail_msg("%s", tg_last_error());
    enum { T = 3, B = 2, I = 3, H = 4, L = 2, V = 5 };
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L, .outputs = V,
                                  .dtype = TG_F32, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m;
    assert_int_equal(tg_model_new(&cfg, &m), TG_OK);
    struct tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_model_init_uniform(m, &rng);
    struct tg_st_writer *w = tg_st_writer_new();
    for (int k = 0; k < m->n_params; k++) {
        struct tg_tensor *p = m->params[k];
        int vec = m->param_spec[k] >= 0 ? tg_param_spec_ndim(&cell->params[m->param_spec[k]]) == 1
                                        : strcmp(m->names[k], "out.bias") == 0;
        int64_t shape[2] = {vec ? p->cols : p->rows, p->cols};
        tg_st_writer_add_tensor(w, m->names[k], p, vec ? 1 : 2, shape);
    }
    assert_int_equal(tg_st_writer_save(w, ppath), TG_OK);
    tg_st_writer_free(w);
    float x[T * B * I];
    double xd[T * B * I];
    int64_t y[T * B];
    int32_t y32[T * B];
    for (int i = 0; i < T * B * I; i++) xd[i] = x[i] = (float)(2 * tg_rng_uniform(&rng) - 1);
    for (int i = 0; i < T * B; i++) y32[i] = (int32_t)(y[i] = (int64_t)tg_rng_below(&rng, V));
    w = tg_st_writer_new();
    int64_t xs[3] = {T, B, I}, ys[2] = {T, B};
    tg_st_writer_add(w, "x", TG_ST_F32, 3, xs, x);
    tg_st_writer_add(w, "y", TG_ST_I64, 2, ys, y);
    assert_int_equal(tg_st_writer_save(w, dpath), TG_OK);
    tg_st_writer_free(w);
    struct run *r = run_tapegrad("grad", "--cell", cpath, "--params", ppath, "--data", dpath, "--out", gpath, NULL);
    if (r->status != 0) fail_msg("%s", r->err);
    struct tg_st_file *g;
    assert_int_equal(tg_st_read(gpath, &g), TG_OK);
    const struct tg_st_tensor *t = tg_st_find(g, "rnn.weight_hh_l1");
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], H);
    assert_int_equal(t->dtype, TG_ST_F32);
    t = tg_st_find(g, "s_n");
    assert_non_null(t);
    assert_int_equal(t->ndim, 3);
    assert_true(t->shape[0] == L && t->shape[1] == B && t->shape[2] == H);
    assert_non_null(tg_st_find(g, "h_n"));
    /* the same loss in this process */
    struct tg_tape *tp = tg_tape_new(0);
    struct tg_seq_batch b = {.T = T, .B = B, .x = xd, .labels = y32};
    struct tg_seq_result res;
    assert_int_equal(tg_model_forward_from(m, tp, &b, NULL, &res), TG_OK);
    float loss;
    memcpy(&loss, tg_st_find(g, "loss")->data, sizeof loss);
    assert_float_equal(loss, tg_get(res.loss, 0, 0), 1e-5 * fabs(loss));
    tg_tape_free(tp);
    tg_st_close(g);
    tg_model_free(m);
    tg_cell_free(cell);
    unlink(cpath), unlink(ppath), unlink(dpath), unlink(gpath), rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_passes_for_every_cell),
        cmocka_unit_test(test_cli_stdout_failure_and_control_chars),
        cmocka_unit_test(test_check_other_sizes),
        cmocka_unit_test(test_check_perturb_reports_tensor_step_and_block),
        cmocka_unit_test(test_check_unknown_cell),
        cmocka_unit_test(test_check_bad_flags),
        cmocka_unit_test(test_grad_missing_file),
        cmocka_unit_test(test_grad_truncated_params),
        cmocka_unit_test(test_grad_wrong_cell),
        cmocka_unit_test(test_grad_labels_out_of_range),
        cmocka_unit_test(test_grad_nonfinite_params),
        cmocka_unit_test(test_grad_out_is_an_input),
        cmocka_unit_test(test_grad_misshapen_or_missing_tensor),
        cmocka_unit_test(test_grad_unwritable_output),
        cmocka_unit_test(test_grad_output_layout),
        cmocka_unit_test(test_cell_file_check),
        cmocka_unit_test(test_cell_file_dot),
        cmocka_unit_test(test_cell_file_grad),
        cmocka_unit_test(test_cell_file_train_resume_sample),
        cmocka_unit_test(test_cell_file_grad_own_cell),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
