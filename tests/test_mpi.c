/* test_mpi.c — data-parallel training (issue 16): micro-batches in the library, and the program
 * under `mpirun -np N`.
 *
 * weighting   one step with K = 2, 4, 8 micro-batches gives the K = 1 gradient to 1e-12 relative
 *             (float64) on every task: Reber's blocks hold different numbers of labelled
 *             positions, copy's hold labels only at the end, adding's loss is a mean of MSEs
 * same bytes  lstm on Reber (clipped by norm), gru on text with carried TBPTT state, and a cell
 *             file (examples/cells/ln_lstm.cell, layer norm): the checkpoint after a run
 *             is the same file at -np 1, 2, 3 (an uneven share), 4 and in a plain run with the
 *             same --micro-batches; -np 2 twice gives the same file
 * resume      5 steps at -np 2, resumed at -np 4 to 8, then without mpirun to 10: the bytes of
 *             10 steps straight
 * output      rank 0 alone prints, writes --log (the rows a single process writes, but for the
 *             seconds) and checkpoints
 * Ctrl-C     on mpirun: every rank stops after the same step, rank 0's checkpoint resumes
 * errors      no --micro-batches under -np 2, a batch that does not split, more ranks than
 *             sequences, and a build without MPI started as 2 copies: exit 1, one message
 *
 * The mpirun tests need Open MPI's mpirun and a build with MPI, and run in the optimised build
 * only (skipped otherwise, and in the ASan+UBSan build: see have_mpirun). As root (CI)
 * they set Open MPI's allow-run-as-root variables; --oversubscribe lets 4 ranks share 2 cores. */
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

#include "tg_config.h"
#include "tapegrad_train.h"
#include "test_util.h"

#define TAPEGRAD TG_BUILD_DIR "/tools/tapegrad"
#define TEXT TG_SOURCE_DIR "/README.md"

/* ------------------------------------------------------------ weighting (library, no MPI) */

static double rel_diff(const struct tg_tensor *a, const struct tg_tensor *b)
{
    double d = 0, m = 0;
    for (int r = 0; r < a->rows; r++)
        for (int c = 0; c < a->cols; c++) {
            double x = tg_grad_get(a, r, c), y = tg_grad_get(b, r, c);
            if (fabs(x - y) > d) d = fabs(x - y);
            if (fabs(x) > m) m = fabs(x);
        }
    return m > 0 ? d / m : d;
}

static void check_weighting(const char *task, const char *cell, int seq)
{
    struct tg_train_config c = {.task = task, .cell = cell, .dtype = "f64", .hidden = 8,
                                .batch = 8, .steps = 1, .seed = 3, .seq = seq,
                                .data = strcmp(task, "text") == 0 ? TEXT : NULL,
                                .length = strcmp(task, "reber") == 0 ? 0 : 8};
    struct tg_trainer *ref;
    assert_int_equal(tg_trainer_new(&c, &ref), TG_OK);
    assert_int_equal(tg_trainer_step(ref), TG_OK);
    struct tg_model *mr = tg_trainer_model(ref);
    for (int K = 2; K <= 8; K *= 2) {
        c.micro_batches = K;
        struct tg_trainer *tr;
        assert_int_equal(tg_trainer_new(&c, &tr), TG_OK);
        assert_int_equal(tg_trainer_step(tr), TG_OK);
        struct tg_model *m = tg_trainer_model(tr);
        double worst = 0;
        for (int i = 0; i < m->n_params; i++) {
            double e = rel_diff(mr->params[i], m->params[i]);
            if (e > worst) worst = e;
        }
        double l0 = tg_trainer_last_loss(ref), l = tg_trainer_last_loss(tr);
        printf("%-6s %-4s K=%d: gradient %.2e relative, loss %.17g vs %.17g\n", task, cell, K,
               worst, l, l0);
        assert_true(worst <= 1e-12);
        assert_true(fabs(l - l0) <= 1e-12 * fabs(l0));
        tg_trainer_free(tr);
    }
    tg_trainer_free(ref);
}

static void test_weighting_reber(void **state) { (void)state; check_weighting("reber", "lstm", 0); }
static void test_weighting_copy(void **state) { (void)state; check_weighting("copy", "gru", 0); }
static void test_weighting_adding(void **state) { (void)state; check_weighting("adding", "lstm", 3); }
static void test_weighting_text(void **state) { (void)state; check_weighting("text", "gru", 5); }

static void test_micro_batch_errors(void **state)
{
    (void)state;
    struct tg_train_config c = {.batch = 6, .micro_batches = 4, .steps = 1};
    struct tg_trainer *tr;
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "--batch 6 does not split into 4 micro-batches"));
}

/* ------------------------------------------------------------ the program under mpirun */

struct run {
    int status;
    char out[8192], err[8192];
};

static void slurp(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t got = f ? fread(buf, 1, n - 1, f) : 0;
    buf[got] = '\0';
    if (f) fclose(f);
}

static char dir[] = "/tmp/tg_mpi_XXXXXX"; /* 18 characters */

/* Run a shell command (printf-style) in the test's directory; stdout and stderr captured. */
static struct run *sh(const char *fmt, ...)
{
    static struct run r;
    char cmd[2048], out[64], err[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    char full[8192];
    snprintf(full, sizeof full, "cd %s && (%s) >%s 2>%s", dir, cmd, out, err);
    memset(&r, 0, sizeof r);
    int st = system(full);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    slurp(out, r.out, sizeof r.out);
    slurp(err, r.err, sizeof r.err);
    if (r.status != 0) printf("$ %s\nexit %d\n%s%s", cmd, r.status, r.out, r.err);
    return &r;
}

#define MPIRUN "mpirun --oversubscribe --bind-to none -np"
/* one thread per rank: a second thread per rank would only wait on 2 cores */
#define TRAIN TAPEGRAD " train --threads 1 "
/* --clip-norm 0.05 clips every step: by the norm of the whole batch's gradient, or the bytes
 * would differ between N */
#define LSTM "--cell lstm --task reber --hidden 8 --batch 8 --micro-batches 4 --dtype f64 --steps 10 " \
             "--eval-every 5 --eval-size 64 --clip-norm 0.05"
#define LN_LSTM "--cell " TG_SOURCE_DIR "/examples/cells/ln_lstm.cell --task reber --hidden 8 --batch 8 " \
                "--micro-batches 4 --dtype f64 --steps 6 --eval-every 3 --eval-size 32"
#define GRU "--cell gru --task text --data " TEXT " --hidden 8 --batch 4 --micro-batches 4 --seq 5 --steps 8 --eval-size 16"

/* Not in the sanitizer build: Open MPI's plugins leak at exit, and once unloaded they leave
 * stacks that no suppression can name. The library half of these tests runs there. */
static int have_mpirun(void)
{
#ifdef __SANITIZE_ADDRESS__
    return 0;
#else
    return TG_HAVE_MPI && system("command -v mpirun >/dev/null 2>&1") == 0;
#endif
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir)) return -1;
    /* CI runs as root; Open MPI refuses that unless told. */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void same_file(const char *a, const char *b)
{
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/%s", dir, a);
    snprintf(pb, sizeof pb, "%s/%s", dir, b);
    size_t na, nb;
    char *x = tg_test_read_file(pa, &na), *y = tg_test_read_file(pb, &nb);
    assert_non_null(x);
    assert_non_null(y);
    if (na != nb || memcmp(x, y, na) != 0) fail_msg("%s and %s differ", a, b);
    free(x);
    free(y);
}

static void check_same_bytes(const char *flags, const char *name)
{
    if (!have_mpirun()) skip();
    assert_int_equal(sh(TRAIN "%s --checkpoint %s-plain.st", flags, name)->status, 0);
    const int np[] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(sh(MPIRUN " %d " TRAIN "%s --checkpoint %s-np%d.st", np[i], flags, name,
                            np[i])->status, 0);
        char a[64], b[64];
        snprintf(a, sizeof a, "%s-plain.st", name);
        snprintf(b, sizeof b, "%s-np%d.st", name, np[i]);
        same_file(a, b);
    }
    assert_int_equal(sh(MPIRUN " 2 " TRAIN "%s --checkpoint %s-again.st", flags, name)->status, 0);
    char a[64], b[64];
    snprintf(a, sizeof a, "%s-np2.st", name);
    snprintf(b, sizeof b, "%s-again.st", name);
    same_file(a, b);
}

static void test_same_bytes_lstm(void **state) { (void)state; check_same_bytes(LSTM, "lstm"); }
static void test_same_bytes_gru_text(void **state) { (void)state; check_same_bytes(GRU, "gru"); }
static void test_same_bytes_cell_file(void **state) { (void)state; check_same_bytes(LN_LSTM, "ln_lstm"); }

static void test_resume_across_ranks(void **state)
{
    (void)state;
    if (!have_mpirun()) skip();
    assert_int_equal(sh(MPIRUN " 2 " TRAIN GRU " --steps 10 --checkpoint straight.st")->status, 0);
    assert_int_equal(sh(MPIRUN " 2 " TRAIN GRU " --steps 5 --checkpoint r.st")->status, 0);
    assert_int_equal(sh(MPIRUN " 4 " TRAIN "--resume r.st --steps 8")->status, 0);
    struct run *r = sh(TRAIN "--resume r.st --steps 10");
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->err, "data-parallel: 4 micro-batches of 1 sequences on 1 rank"));
    same_file("straight.st", "r.st");
}

static int count(const char *s, const char *frag)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, frag)) != NULL; p += strlen(frag)) n++;
    return n;
}

/* Drop the last field (wall time) of every CSV line, in place. */
static void strip_seconds(char *csv)
{
    char *w = csv;
    for (char *line = csv; *line;) {
        char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char *comma = memrchr(line, ',', n);
        size_t keep = comma ? (size_t)(comma - line) : n;
        memmove(w, line, keep);
        w += keep;
        *w++ = '\n';
        line += n + (end != NULL);
    }
    *w = '\0';
}

static void test_rank0_alone_prints_logs_and_saves(void **state)
{
    (void)state;
    if (!have_mpirun()) skip();
    struct run *r = sh(MPIRUN " 4 " TRAIN LSTM " --log run.csv --checkpoint out.st --print-every 5");
    assert_int_equal(r->status, 0);
    assert_int_equal(count(r->out, "trained 10 steps"), 1);
    assert_int_equal(count(r->out, "checkpoint: out.st"), 1);
    assert_int_equal(count(r->err, "training lstm on reber"), 1);
    assert_int_equal(count(r->err, "step 5/10"), 1);
    assert_int_equal(count(r->err, "exchange:"), 1);
    char path[512];
    snprintf(path, sizeof path, "%s/run.csv", dir);
    char *log = tg_test_read_file(path, NULL);
    assert_non_null(log);
    assert_int_equal(count(log, "\n"), 11); /* a header and 10 rows, written once */
    /* and the rows a single process writes, up to the seconds column */
    assert_int_equal(sh(TRAIN LSTM " --log plain.csv")->status, 0);
    snprintf(path, sizeof path, "%s/plain.csv", dir);
    char *plain = tg_test_read_file(path, NULL);
    assert_non_null(plain);
    strip_seconds(log);
    strip_seconds(plain);
    assert_string_equal(log, plain);
    free(plain);
    free(log);
    /* no temporary files of other ranks next to the checkpoint */
    r = sh("ls");
    assert_int_equal(count(r->out, ".tmp"), 0);
}

/* Ctrl-C on mpirun: it sends every rank SIGTERM; the stop flag travels in the step's exchange,
 * so all ranks stop after the same step and rank 0 writes a checkpoint that resumes. */
static void test_ctrl_c_stops_every_rank_at_one_step(void **state)
{
    (void)state;
    if (!have_mpirun()) skip();
    struct run *r = sh(MPIRUN " 2 " TRAIN LSTM " --steps 1000000 --eval-every 1000000 --checkpoint "
                       "stop.st --log stop.csv & p=$!; "
                       "for i in $(seq 1200); do [ -f stop.csv ] && [ $(wc -l <stop.csv) -ge 3 ] && break; "
                       "sleep 0.1; done; kill -INT $p; wait $p; echo \"mpirun exit $?\"");
    long step = -1;
    const char *at = strstr(r->out, "interrupted at step ");
    if (!at) fail_msg("no interruption reported: %s %s", r->out, r->err);
    step = strtol(at + strlen("interrupted at step "), NULL, 10);
    assert_true(step >= 2);
    assert_non_null(strstr(r->out, "checkpoint written: stop.st"));
    assert_int_equal(count(r->out, "interrupted at step"), 1);
    char want[64];
    snprintf(want, sizeof want, "from step %ld of stop.st", step);
    r = sh(TRAIN "--resume stop.st --steps %ld", step + 1);
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->err, want));
}

/* Exit 1 and our message once (mpirun adds its own lines about the exit status). */
static void expect_error(struct run *r, const char *frag)
{
    assert_int_equal(r->status, 1);
    if (!strstr(r->err, frag)) fail_msg("expected '%s' in: %s", frag, r->err);
    assert_int_equal(count(r->err, "tapegrad train:"), 1);
}

static void test_bad_mpi_use(void **state)
{
    (void)state;
    /* a build without MPI (TAPEGRAD_NO_MPI=1 stands in for one) started as one of 2 copies */
    expect_error(sh("OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0 TAPEGRAD_NO_MPI=1 " TRAIN
                    "--steps 1"), "mpirun started 2 copies, but this tapegrad");
    if (!have_mpirun()) skip();
    expect_error(sh(MPIRUN " 2 " TRAIN "--steps 1"),
                 "mpirun started 2 ranks but a batch is 1 micro-batch: every rank needs at least "
                 "one. Pass --micro-batches K with K >= 2 dividing --batch 32 (e.g. 2)");
    expect_error(sh(MPIRUN " 2 " TRAIN "--steps 1 --batch 10 --micro-batches 4"),
                 "--batch 10 does not split into 4 micro-batches");
    expect_error(sh(MPIRUN " 3 " TRAIN "--steps 1 --batch 2 --micro-batches 2"),
                 "mpirun started 3 ranks, more than the 2 sequences of a batch");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weighting_reber),
        cmocka_unit_test(test_weighting_copy),
        cmocka_unit_test(test_weighting_adding),
        cmocka_unit_test(test_weighting_text),
        cmocka_unit_test(test_micro_batch_errors),
        cmocka_unit_test(test_same_bytes_lstm),
        cmocka_unit_test(test_same_bytes_gru_text),
        cmocka_unit_test(test_same_bytes_cell_file),
        cmocka_unit_test(test_resume_across_ranks),
        cmocka_unit_test(test_rank0_alone_prints_logs_and_saves),
        cmocka_unit_test(test_ctrl_c_stops_every_rank_at_one_step),
        cmocka_unit_test(test_bad_mpi_use),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
