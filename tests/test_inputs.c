/* test_inputs.c — what the program does with hostile files and paths (issue 17), as a user runs
 * it (the built binary). Each test names the defect it guards against; each would fail on the
 * code before the fix:
 *   - a FIFO given as any input path hung forever                          (test_fifo_inputs)
 *   - an unwritable --checkpoint was found at the first save, after training;
 *     a directory was called an existing checkpoint               (test_checkpoint_path_first)
 *   - an output that is one of the inputs was overwritten               (test_output_is_input)
 *   - --log and bench --json left 0-byte files and no reason      (test_log_write_failure,
 *                                                                   test_bench_json_failure)
 *   - dot rendered for minutes                                          (test_dot_render_limit)
 *   - non-finite weights were loaded                                (test_nonfinite_checkpoint)
 *   - misleading or missing messages                                     (test_messages)
 * Bad input always gives exit 1 and one line on stderr naming what and where. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tapegrad_dot.h"
#include "tapegrad_train.h"
#include "test_util.h"
#include "cli_util.h"
#include "st_edit.h"

static char dir[64];
static char good[128]; /* a small reber checkpoint at step 3 */
static char text[128]; /* a text checkpoint, and its data file */
static char corpus[128];

static const char *in_dir(const char *name)
{
    static char bufs[8][160];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* Files in dir whose name contains part (temporary files left behind, …). */
static int count_containing(const char *part)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, part) != NULL;
    closedir(d);
    return n;
}

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/tg_test_inputs_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(good, sizeof good, "%s/good.st", dir);
    snprintf(text, sizeof text, "%s/text.st", dir);
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    FILE *f = fopen(corpus, "w");
    if (!f) return -1;
    for (int i = 0; i < 40; i++) fprintf(f, "the quick brown fox %d jumps\n", i % 5);
    fclose(f);
    struct tg_train_config c = {.hidden = 4, .batch = 2, .steps = 3, .eval_size = 2, .checkpoint = good};
    struct tg_train_config t = {.task = "text", .data = corpus, .hidden = 4, .batch = 2, .seq = 5,
                                .steps = 2, .eval_size = 2, .checkpoint = text};
    if (tg_train(&c, NULL) != TG_OK || tg_train(&t, NULL) != TG_OK) {
        fprintf(stderr, "setup: %s\n", tg_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    char p[512];
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) rmdir(p);
    }
    if (d) closedir(d);
    rmdir(dir);
    return 0;
}

static long ckpt_step_or_fail(const char *path)
{
    struct tg_checkpoint *c;
    if (tg_checkpoint_open(path, &c) != TG_OK) fail_msg("%s", tg_last_error());
    long step = tg_checkpoint_state(c)->step;
    tg_checkpoint_close(c);
    return step;
}

/* ------------------------------------------------------------------ inputs */

/* Every input path, given a FIFO with no writer: refused at once (it used to block forever in
 * open or read; the alarm in cli_util turns a regression into a failure, not a stuck suite). */
static void test_fifo_inputs(void **state)
{
    (void)state;
    need_binary();
    const char *fifo = in_dir("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    cli_timeout_s = 20;
    const char *P = TG_SOURCE_DIR "/tests/fixtures/torch/lstm_l1_f64/params.safetensors";
    const char *D = TG_SOURCE_DIR "/tests/fixtures/torch/lstm_l1_f64/data.safetensors";
    struct run *r = run_tapegrad("train", "--resume", fifo, NULL);
    assert_one_line_error(r, fifo, "FIFO", NULL);
    r = run_tapegrad("train", "--task", "text", "--data", fifo, "--steps", "1", NULL);
    assert_one_line_error(r, fifo, "FIFO", NULL);
    r = run_tapegrad("sample", "--checkpoint", fifo, NULL);
    assert_one_line_error(r, fifo, "FIFO", NULL);
    r = run_tapegrad("grad", "--cell", "lstm", "--params", fifo, "--data", D, "--out", in_dir("g.st"), NULL);
    assert_one_line_error(r, fifo, "FIFO", NULL);
    r = run_tapegrad("grad", "--cell", "lstm", "--params", P, "--data", fifo, "--out", in_dir("g.st"), NULL);
    assert_one_line_error(r, fifo, "FIFO", NULL);
    /* as the output: a FIFO is no place for a checkpoint either */
    r = run_tapegrad("train", "--checkpoint", fifo, "--steps", "1", NULL);
    assert_one_line_error(r, fifo, "FIFO", NULL);
    cli_timeout_s = 120;
    unlink(fifo);
}

/* /proc files report st_size 0; they were called "0 bytes, too short". */
static void test_proc_file_read_whole(void **state)
{
    (void)state;
    need_binary();
    struct run *r = run_tapegrad("train", "--resume", "/proc/self/status", NULL);
    assert_one_line_error(r, "/proc/self/status", "header length", NULL);
    assert_null(strstr(r->err, "0 bytes"));
}

/* ------------------------------------------------------------------ outputs */

/* An unwritable checkpoint path is refused before the first step (stderr has no "training"
 * line, one line only), not after a run that then cannot save; a directory is called one. */
static void test_checkpoint_path_first(void **state)
{
    (void)state;
    need_binary();
    struct run *r = run_tapegrad("train", "--checkpoint", in_dir("nodir/x.st"), "--steps", "50", NULL);
    assert_one_line_error(r, "nodir/x.st", "its directory does not exist", NULL);
    r = run_tapegrad("train", "--checkpoint", "/proc/tg_x.safetensors", "--steps", "50", NULL);
    assert_one_line_error(r, "/proc/tg_x.safetensors", "cannot be written", NULL);
    char under_file[200];
    snprintf(under_file, sizeof under_file, "%s/x.st", good); /* a regular file as directory */
    r = run_tapegrad("train", "--checkpoint", under_file, "--steps", "50", NULL);
    assert_one_line_error(r, "Not a directory", NULL);
    /* a directory: said so, with and without --overwrite (which used to train, then fail) */
    r = run_tapegrad("train", "--checkpoint", dir, "--steps", "50", NULL);
    assert_one_line_error(r, "is a directory", NULL);
    assert_null(strstr(r->err, "already exists"));
    r = run_tapegrad("train", "--checkpoint", dir, "--steps", "50", "--overwrite", NULL);
    assert_one_line_error(r, "is a directory", NULL);
    /* the probe leaves nothing behind */
    assert_int_equal(count_containing(".probe."), 0);
    assert_int_equal(count_containing(".tmp."), 0);
}

/* An output that is an input under another name is refused (compared by device and inode). */
static void test_output_is_input(void **state)
{
    (void)state;
    need_binary();
    const char *alias = in_dir("alias.st"), *corpus_link = in_dir("corpus_link.txt");
    assert_int_equal(symlink(good, alias), 0);
    assert_int_equal(link(corpus, corpus_link), 0);
    struct run *r = run_tapegrad("train", "--resume", good, "--steps", "5", "--log", alias, NULL);
    assert_one_line_error(r, "is the same file as --resume", NULL);
    r = run_tapegrad("train", "--task", "text", "--data", corpus, "--steps", "2", "--checkpoint",
                     corpus_link, "--overwrite", NULL);
    assert_one_line_error(r, "is the same file as --data", NULL);
    r = run_tapegrad("train", "--task", "text", "--data", corpus, "--steps", "2", "--log", corpus_link, NULL);
    assert_one_line_error(r, "is the same file as --data", NULL);
    assert_int_equal(ckpt_step_or_fail(good), 3);
    unlink(alias);
    unlink(corpus_link);
}

/* A log whose writes fail (here: over the file-size limit, EFBIG, as a full disk gives ENOSPC)
 * is removed when the run created it and cut back when it was appended to; the message gives
 * the system's reason. It used to leave a 0-byte file and say only "cannot write log". */
static void test_log_write_failure(void **state)
{
    (void)state;
    need_binary();
    const char *log = in_dir("run.csv");
    cli_fsize_limit = 300; /* the header and a row or two */
    struct run *r = run_tapegrad("train", "--hidden", "4", "--batch", "2", "--eval-size", "2",
                                 "--steps", "40", "--log", log, NULL);
    cli_fsize_limit = -1;
    assert_last_line_error(r, "run.csv", strerror(EFBIG), "removed", NULL);
    assert_false(exists(log));

    /* appended (resuming): the earlier rows stay, this run's go */
    const char *ck = in_dir("logged.st");
    r = run_tapegrad("train", "--hidden", "4", "--batch", "2", "--eval-size", "2", "--steps", "2",
                     "--log", log, "--checkpoint", ck, NULL);
    assert_int_equal(r->status, 0);
    size_t n0, n1;
    char *before = tg_test_read_file(log, &n0);
    assert_non_null(before);
    cli_fsize_limit = (long)n0 + 40; /* room for part of a row */
    r = run_tapegrad("train", "--resume", ck, "--steps", "40", "--log", log, "--checkpoint",
                     in_dir("logged2.st"), NULL);
    cli_fsize_limit = -1;
    assert_last_line_error(r, strerror(EFBIG), "as it was before this run", NULL);
    char *after = tg_test_read_file(log, &n1);
    assert_true(after && n1 == n0 && memcmp(before, after, n0) == 0);
    free(before);
    free(after);

    /* a device: not removed, but the reason is given */
    r = run_tapegrad("train", "--hidden", "4", "--batch", "2", "--eval-size", "2", "--steps", "2",
                     "--log", "/dev/full", NULL);
    assert_last_line_error(r, "/dev/full", strerror(ENOSPC), NULL);
    assert_true(exists("/dev/full"));
    unlink(log);
}

/* bench --json is written whole or not at all; a trailing comma in a list is an error. */
static void test_bench_json_failure(void **state)
{
    (void)state;
    need_binary();
    const char *json = in_dir("bench.json");
    const char *args[] = {"tapegrad", "bench", "--cell", "rnn_tanh", "--config", "T2B1H2", "--repeats",
                          "1", "--warmup", "1", "--no-manual", "--json", json, NULL};
    cli_fsize_limit = 64;
    struct run *r = run_tapegrad_argv(args);
    cli_fsize_limit = -1;
    assert_one_line_error(r, "--json", "bench.json", strerror(EFBIG), NULL);
    assert_false(exists(json));
    assert_int_equal(count_containing("bench.json"), 0); /* no temporary left either */
    r = run_tapegrad_argv(args);
    assert_int_equal(r->status, 0);
    size_t n;
    char *j = tg_test_read_file(json, &n);
    assert_true(j && n > 100 && j[0] == '{' && strstr(j, "\"results\""));
    free(j);
    unlink(json);

    r = run_tapegrad("bench", "--config", "T2B1H2,", NULL);
    assert_one_line_error(r, "--config", "T2B1H2,", "empty item", NULL);
    r = run_tapegrad("bench", "--cell", "lstm,,gru", "--config", "T2B1H2", NULL);
    assert_one_line_error(r, "--cell", "empty item", NULL);
}

/* dot --steps 3000 to .svg ran for minutes: refused at once with a way out; .dot stays allowed. */
static void test_dot_render_limit(void **state)
{
    (void)state;
    need_binary();
    if (!tg_dot_can_render()) skip();
    time_t t0 = time(NULL);
    struct run *r = run_tapegrad("dot", "--cell", "lstm", "--steps", "3000", "--out", in_dir("big.svg"), NULL);
    assert_one_line_error(r, "3000 steps", "--window", "--collapse", ".dot", NULL);
    assert_false(exists(in_dir("big.svg")));
    r = run_tapegrad("dot", "--cell", "lstm", "--steps", "3000", "--out", in_dir("big.dot"), NULL);
    assert_int_equal(r->status, 0);
    assert_true(exists(in_dir("big.dot")));
    r = run_tapegrad("dot", "--cell", "lstm", "--steps", "3000", "--window", "2", "--out", in_dir("w.svg"), NULL);
    assert_int_equal(r->status, 0);
    assert_true(time(NULL) - t0 < 60);
    unlink(in_dir("big.dot"));
    unlink(in_dir("w.svg"));
}

/* ------------------------------------------------------------------ checkpoints */

/* Non-finite weights, optimizer moments or carried state: refused by train --resume and sample,
 * naming the tensor and the element (they used to give NaN losses or garbage samples). */
static void test_nonfinite_checkpoint(void **state)
{
    (void)state;
    need_binary();
    const char *bad = in_dir("nan.st");
    st_set_element(good, bad, "rnn.weight_hh_l0", 5, NAN); /* [16, 4]: element 5 is [1, 1] */
    struct run *r = run_tapegrad("train", "--resume", bad, "--steps", "5", NULL);
    assert_one_line_error(r, "'rnn.weight_hh_l0' is not finite", "nan at [1, 1]", NULL);
    st_set_element(good, bad, "optim.exp_avg_sq.out.bias", 0, INFINITY);
    r = run_tapegrad("train", "--resume", bad, "--steps", "5", NULL);
    assert_one_line_error(r, "'optim.exp_avg_sq.out.bias' is not finite", "inf", NULL);
    st_set_element(text, bad, "embed.weight", 0, -INFINITY);
    r = run_tapegrad("sample", "--checkpoint", bad, "--length", "20", NULL);
    assert_one_line_error(r, "'embed.weight' is not finite", "-inf at [0, 0]", NULL);
    assert_string_equal(r->out, ""); /* nothing sampled */
    st_set_element(text, bad, "state.h_l0", 3, NAN);
    r = run_tapegrad("train", "--resume", bad, "--steps", "5", "--data", corpus, NULL);
    assert_one_line_error(r, "'state.h_l0' is not finite", NULL);
    unlink(bad);
}

static void test_messages(void **state)
{
    (void)state;
    need_binary();
    const char *bad = in_dir("edited.st");
    /* a negative text cursor is the tensor's fault, not the metadata's */
    st_set_element(text, bad, "train.cursor", 0, -5);
    struct run *r = run_tapegrad("sample", "--checkpoint", bad, NULL);
    assert_one_line_error(r, "tensor 'train.cursor' is -5", NULL);
    assert_null(strstr(r->err, "metadata"));
    /* the step is written twice; the two must agree */
    st_rewrite(good, bad, NULL, 0, 0, NULL, NULL, "step", "7");
    r = run_tapegrad("train", "--resume", bad, "--steps", "9", NULL);
    assert_one_line_error(r, "metadata 'step' is 7", "'train.step' is 3", NULL);
    /* resuming to a total already reached ran nothing and exited 0 */
    r = run_tapegrad("train", "--resume", good, "--steps", "2", NULL);
    assert_one_line_error(r, "at step 3 already", "--steps 2", NULL);
    r = run_tapegrad("train", "--resume", good, "--steps", "3", NULL);
    assert_one_line_error(r, "at step 3 already", NULL);
    assert_int_equal(ckpt_step_or_fail(good), 3);
    unlink(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_inputs),
        cmocka_unit_test(test_proc_file_read_whole),
        cmocka_unit_test(test_checkpoint_path_first),
        cmocka_unit_test(test_output_is_input),
        cmocka_unit_test(test_log_write_failure),
        cmocka_unit_test(test_bench_json_failure),
        cmocka_unit_test(test_dot_render_limit),
        cmocka_unit_test(test_nonfinite_checkpoint),
        cmocka_unit_test(test_messages),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
