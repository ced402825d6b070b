/* test_checkpoint.c — checkpoints keep everything and lose nothing:
 *   - N steps + resume + N steps == 2N steps, byte for byte (Adam; text with its carried TBPTT
 *     state and cursor; chunked adding with SGD momentum and clipping), the whole file included
 *   - SIGKILL at random moments and right in the middle of a save leaves a loadable checkpoint;
 *     the stray temporary files are removed by the next run
 *   - truncated, garbage, foreign and mismatched files (cell, hidden size, dtype): exit 1 with
 *     one line, and the file untouched
 *   - SIGINT: exit 130 with a checkpoint at the step reached
 *   - `tapegrad sample` on a text checkpoint: the requested length, bytes of the vocabulary
 * The process tests run the built program: TG_BUILD_DIR "/tools/tapegrad". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"

#include "tg_config.h"
#include "tapegrad_train.h"

#if TG_HAVE_OPENMP
#include <omp.h>
#endif

#define TAPEGRAD TG_BUILD_DIR "/tools/tapegrad"

static char dir[64];

/* ------------------------------------------------------------------ helpers */

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* the whole file, or the test fails */
static unsigned char *slurp(const char *path, size_t *n)
{
    char *buf = tg_test_read_file(path, n);
    if (!buf) fail_msg("cannot read %s", path);
    return (unsigned char *)buf;
}

static void spit(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void train_lib(const struct tg_train_config *cfg)
{
    struct tg_train_result res;
    if (tg_train(cfg, &res) != TG_OK) fail_msg("tg_train: %s", tg_last_error());
}

/* Start the program with argv (argv[0] is ignored); stdout and stderr go to files (or
 * /dev/null). Returns the pid. */
static pid_t spawn(char *const *argv, const char *out, const char *err)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0) _exit(126);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(TAPEGRAD, argv);
        _exit(127);
    }
    return pid;
}

/* Run to completion; returns the exit status (128 + signal if killed). */
static int run(char *const *argv, const char *out, const char *err)
{
    pid_t pid = spawn(argv, out, err);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Files in dir whose name starts with prefix. */
static int count_prefix(const char *prefix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static int count_containing(const char *part)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strstr(e->d_name, part) != NULL;
    closedir(d);
    return n;
}

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000) * 1e6)};
    nanosleep(&ts, NULL);
}

static long ckpt_step(const char *path)
{
    struct tg_checkpoint *c;
    if (tg_checkpoint_open(path, &c) != TG_OK) fail_msg("checkpoint unreadable: %s", tg_last_error());
    struct tg_model *m;
    if (tg_checkpoint_new_model(c, NULL, &m) != TG_OK) fail_msg("model unloadable: %s", tg_last_error());
    long s = tg_checkpoint_state(c)->step;
    tg_model_free(m);
    tg_checkpoint_close(c);
    return s;
}

static const char *text_file(void)
{
    static char path[96];
    if (path[0]) return path;
    path_in(path, sizeof path, "corpus.txt");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 80; i++)
        fprintf(f, "to be, or not to be, that is the question: whether 'tis nobler %d\n", i % 7);
    fclose(f);
    return path;
}

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/tg_test_ckpt_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (getenv("TG_TEST_KEEP")) return 0; /* leave the files for a look */
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
    return 0;
}

/* ------------------------------------------------------------------ resume bit-identity */

/* Straight 2N steps vs N steps, checkpoint, a new process-like trainer resuming to 2N: the two
 * final checkpoint files (parameters, optimizer state, rng, cursor, carried state, metadata)
 * must be the same bytes. */
static void check_resume(struct tg_train_config cfg, long n, const char *tag)
{
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/straight_%s.st", dir, tag);
    snprintf(b, sizeof b, "%s/resumed_%s.st", dir, tag);
    unlink(a);
    unlink(b);
    cfg.steps = 2 * n;
    cfg.checkpoint = a;
    train_lib(&cfg);
    cfg.steps = n;
    cfg.checkpoint = b;
    train_lib(&cfg);
    assert_int_equal(ckpt_step(b), n);
    struct tg_train_config r = {.resume = b, .checkpoint = b, .steps = 2 * n,
                                .eval_every = cfg.eval_every, .eval_size = cfg.eval_size,
                                .data = cfg.data};
    train_lib(&r);
    size_t na, nb;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    if (na != nb || memcmp(x, y, na) != 0) fail_msg("%s: resumed run differs from the straight run", tag);
    free(x);
    free(y);
}

static void test_resume_bit_identical(void **state)
{
    (void)state;
    /* Adam on Reber (evaluations in between must not disturb anything) */
    struct tg_train_config c1 = {.hidden = 16, .batch = 8, .seed = 5, .eval_every = 7, .eval_size = 16};
    check_resume(c1, 15, "reber_adam");
    /* text: carried TBPTT state, cursor, and the stream wrapping around within the run */
    struct tg_train_config c2 = {.task = "text", .data = text_file(), .seq = 12, .hidden = 16,
                                 .batch = 6, .seed = 9, .eval_every = 10, .eval_size = 8};
    check_resume(c2, 25, "text_tbptt");
    /* adding in chunks, SGD with Nesterov-free momentum, both clippings, float64 */
    struct tg_train_config c3 = {.task = "adding", .length = 24, .seq = 5, .hidden = 8, .batch = 4,
                                 .optimizer = "sgd", .momentum = 0.9, .clip_value = 0.5,
                                 .clip_norm = 1.0, .dtype = "f64", .seed = 2, .eval_size = 8};
    check_resume(c3, 10, "adding_sgd");
    /* gru with RMSprop and min-char initialisation */
    struct tg_train_config c4 = {.cell = "gru", .task = "copy", .length = 4, .hidden = 8, .batch = 4,
                                 .optimizer = "rmsprop", .init = "minchar", .seed = 3, .eval_size = 8};
    check_resume(c4, 10, "copy_rmsprop");
    /* issue 14: bidirectional layers with dropout between them (masks from the run's rng), in
     * two micro-batches */
    struct tg_train_config c5 = {.task = "copy", .length = 4, .hidden = 8, .batch = 4, .layers = 3,
                                 .bidirectional = 1, .dropout = 0.3, .micro_batches = 2, .seed = 6,
                                 .eval_size = 8, .eval_every = 4};
    check_resume(c5, 10, "copy_bidir_dropout");
}

/* What a resumed run is asked to do along the way is the user's, not the checkpoint's:
 * --detect-anomaly given at resume must be on (it was dropped once). */
static void test_resume_keeps_run_options(void **state)
{
    (void)state;
    char b[128];
    snprintf(b, sizeof b, "%s/anomaly_resume.st", dir);
    unlink(b);
    struct tg_train_config c = {.task = "adding", .length = 6, .hidden = 4, .batch = 2, .steps = 2,
                                .seed = 4, .eval_size = 2, .checkpoint = b};
    train_lib(&c);
    struct tg_train_config r = {.resume = b, .steps = 3, .detect_anomaly = 1};
    struct tg_trainer *tr = NULL;
    assert_int_equal(tg_trainer_new(&r, &tr), TG_OK);
    assert_int_equal(tg_trainer_config(tr)->detect_anomaly, 1);
    tg_trainer_free(tr);
}

/* The same seed gives the same bytes at a fixed thread count, also with two threads. (Across
 * thread counts it does not: OpenBLAS splits a GEMM's work differently, which changes the
 * rounding of the last bits.) */
static void test_same_bytes_two_threads(void **state)
{
    (void)state;
#if TG_HAVE_OPENMP
    int prev = omp_get_max_threads();
    omp_set_num_threads(2);
#endif
    /* big enough that OpenBLAS does split its GEMMs (the bytes differ from a 1-thread run) */
    struct tg_train_config c = {.hidden = 64, .batch = 8, .seed = 4, .eval_size = 16};
    check_resume(c, 3, "two_threads");
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/straight_two_threads.st", dir);
    snprintf(b, sizeof b, "%s/again_two_threads.st", dir);
    c.steps = 6;
    c.checkpoint = b;
    train_lib(&c);
    size_t na, nb;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
#if TG_HAVE_OPENMP
    omp_set_num_threads(prev);
#endif
}

/* ------------------------------------------------------------------ kill during a save */

static void test_kill_during_save(void **state)
{
    (void)state;
    char ck[128], prefix[64];
    path_in(ck, sizeof ck, "big.st");
    unlink(ck);
    srand(12345);
    long last = 0;
    int mid_write = 0, stray = 0;
    for (int round = 0; round < 9; round++) { /* ends on an even round */
        /* A model whose checkpoint (12 MB with Adam's state) takes a while to write, written
         * after every step; later rounds resume from what the previous kill left. */
        char *argv_new[] = {"tapegrad", "train", "--hidden", "512", "--batch", "1", "--steps",
                            "1000000", "--checkpoint", ck, "--checkpoint-every", "1",
                            "--eval-every", "1000000", "--eval-size", "1", "--threads", "1", NULL};
        char *argv_resume[] = {"tapegrad", "train", "--resume", ck, "--steps", "1000000",
                               "--checkpoint-every", "1", "--eval-every", "1000000", "--eval-size",
                               "1", "--threads", "1", NULL};
        pid_t pid = spawn(round == 0 ? argv_new : argv_resume, NULL, NULL);
        snprintf(prefix, sizeof prefix, "big.st.tmp.%d", (int)pid);
        char tmp[160];
        path_in(tmp, sizeof tmp, prefix);
        double waited = 0;
        if (round % 2 == 0) {
            /* even rounds: once a checkpoint exists, the moment the next save is under way (its
             * temporary file exists) */
            while (!exists(ck) && waited < 30000) sleep_ms(1), waited += 1;
            while (!exists(tmp) && waited < 30000) sleep_ms(0.2), waited += 0.2;
            sleep_ms((double)(rand() % 2));
        } else {
            /* odd rounds: after the first checkpoint of this process, at a random delay */
            struct stat sb0, sb;
            int have0 = stat(ck, &sb0) == 0;
            while (waited < 30000) {
                if (stat(ck, &sb) == 0 && (!have0 || sb.st_mtim.tv_nsec != sb0.st_mtim.tv_nsec ||
                                           sb.st_mtim.tv_sec != sb0.st_mtim.tv_sec))
                    break;
                sleep_ms(1);
                waited += 1;
            }
            sleep_ms((double)(rand() % 300));
        }
        kill(pid, SIGKILL);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        stray = exists(tmp); /* killed with a save open */
        mid_write += stray;
        /* whatever the moment, the checkpoint is complete and loads, and never goes back */
        long s = ckpt_step(ck);
        assert_true(s >= last);
        last = s;
    }
    /* the even rounds killed while a save was open and left its temporary behind (each next
     * round removed the previous one's when it started) … */
    print_message("kills that found a save open: %d of 9 (5 aimed at one)\n", mid_write);
    assert_true(mid_write >= 2);
    assert_int_equal(count_prefix("big.st.tmp."), stray);
    /* … and the next run (here: one more step, resumed) removes them, then saves normally */
    char steps[32];
    snprintf(steps, sizeof steps, "%ld", last + 1);
    char *argv_more[] = {"tapegrad", "train", "--resume", ck, "--steps", steps, "--eval-size", "1",
                         "--threads", "1", NULL};
    assert_int_equal(run(argv_more, NULL, NULL), 0);
    assert_int_equal(count_prefix("big.st.tmp."), 0);
    assert_int_equal(ckpt_step(ck), last + 1);
    unlink(ck);
}

static void test_clean_temps(void **state)
{
    (void)state;
    char ck[128], stale[192], mine[192], other[192];
    path_in(ck, sizeof ck, "c.st");
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0); /* a pid that no longer runs */
    snprintf(stale, sizeof stale, "%s.tmp.%d", ck, (int)child);
    snprintf(mine, sizeof mine, "%s.tmp.%d", ck, (int)getpid());
    snprintf(other, sizeof other, "%s.tmp.x1", ck);
    spit(stale, "x", 1);
    spit(mine, "x", 1);
    spit(other, "x", 1);
    assert_int_equal(tg_checkpoint_clean_temps(ck), 1);
    assert_false(exists(stale));
    assert_true(exists(mine));  /* a live writer's file is left alone */
    assert_true(exists(other)); /* not ours */
    unlink(mine);
    unlink(other);
}

/* ------------------------------------------------------------------ bad files */

static void expect_rejected(const char *ck, char *const *argv, const char *what)
{
    size_t n0, n1;
    unsigned char *before = slurp(ck, &n0);
    char err[128];
    path_in(err, sizeof err, "stderr.txt");
    int rc = run(argv, NULL, err);
    if (rc != 1) fail_msg("%s: exit status %d, want 1", what, rc);
    size_t ne;
    char *msg = (char *)slurp(err, &ne);
    /* one line, naming the problem */
    assert_true(ne > 10 && msg[ne - 1] == '\n' && memchr(msg, '\n', ne) == msg + ne - 1);
    assert_non_null(strstr(msg, "tapegrad train: "));
    unsigned char *after = slurp(ck, &n1);
    if (n0 != n1 || memcmp(before, after, n0) != 0) fail_msg("%s: the checkpoint was modified", what);
    assert_int_equal(count_containing(".tmp."), 0); /* no save was even attempted */
    free(before);
    free(after);
    free(msg);
}

static void test_bad_checkpoints(void **state)
{
    (void)state;
    char good[128], trunc[128], garbage[128], foreign[128];
    path_in(good, sizeof good, "good.st");
    path_in(trunc, sizeof trunc, "bad_trunc.st");
    path_in(garbage, sizeof garbage, "bad_garbage.st");
    path_in(foreign, sizeof foreign, "bad_foreign.st");
    struct tg_train_config c = {.hidden = 8, .batch = 4, .steps = 3, .eval_size = 4, .checkpoint = good};
    train_lib(&c);
    size_t n;
    unsigned char *bytes = slurp(good, &n);
    spit(trunc, bytes, n / 2);
    for (size_t i = 0; i < n; i++) bytes[i] = (unsigned char)(i * 2654435761u >> 13);
    spit(garbage, bytes, n);
    free(bytes);
    /* a valid safetensors file that is not a checkpoint */
    struct tg_st_writer *w = tg_st_writer_new();
    int64_t shape[1] = {2};
    float v[2] = {1, 2};
    tg_st_writer_add(w, "x", TG_ST_F32, 1, shape, v);
    assert_int_equal(tg_st_writer_save(w, foreign), TG_OK);
    tg_st_writer_free(w);

    char *a1[] = {"tapegrad", "train", "--resume", trunc, NULL};
    expect_rejected(trunc, a1, "truncated");
    char *a2[] = {"tapegrad", "train", "--resume", garbage, NULL};
    expect_rejected(garbage, a2, "garbage");
    char *a3[] = {"tapegrad", "train", "--resume", foreign, NULL};
    expect_rejected(foreign, a3, "not a checkpoint");
    char *a4[] = {"tapegrad", "train", "--resume", good, "--cell", "gru", "--steps", "5", NULL};
    expect_rejected(good, a4, "another cell");
    char *a5[] = {"tapegrad", "train", "--resume", good, "--hidden", "16", "--steps", "5", NULL};
    expect_rejected(good, a5, "other hidden size");
    char *a6[] = {"tapegrad", "train", "--resume", good, "--dtype", "f64", "--steps", "5", NULL};
    expect_rejected(good, a6, "other dtype");
    /* a flag the library would take as "unset" (the default seed, a 0) still must agree */
    char *a6b[] = {"tapegrad", "train", "--resume", good, "--seed", "99", "--steps", "5", NULL};
    expect_rejected(good, a6b, "another seed");
    char *a6c[] = {"tapegrad", "train", "--resume", good, "--lr", "0.5", "--steps", "5", NULL};
    expect_rejected(good, a6c, "another lr");
    /* a new run does not overwrite an existing checkpoint by accident */
    char *a7[] = {"tapegrad", "train", "--checkpoint", good, "--steps", "5", NULL};
    expect_rejected(good, a7, "existing checkpoint");

    /* library level: the same files give clear errors */
    struct tg_checkpoint *ck = (struct tg_checkpoint *)1;
    assert_int_equal(tg_checkpoint_open(trunc, &ck), TG_ERR_FORMAT);
    assert_null(ck);
    assert_int_equal(tg_checkpoint_open(foreign, &ck), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_last_error(), "not a tapegrad checkpoint"));
    /* metadata that does not describe the tensors (hidden 8 said, 16 stored) */
    assert_int_equal(tg_checkpoint_open(good, &ck), TG_OK);
    struct tg_model *m;
    assert_int_equal(tg_checkpoint_new_model(ck, NULL, &m), TG_OK);
    struct tg_train_config lie = *tg_checkpoint_config(ck);
    lie.hidden = 16;
    char liar[128];
    path_in(liar, sizeof liar, "bad_liar.st");
    struct tg_checkpoint_state s = *tg_checkpoint_state(ck);
    struct tg_optim *o;
    assert_int_equal(tg_optim_new(tg_checkpoint_optim_config(ck), m->params, m->n_params, &o), TG_OK);
    assert_int_equal(tg_checkpoint_save(liar, &lie, m, o, &s), TG_OK);
    tg_optim_free(o);
    tg_model_free(m);
    tg_checkpoint_close(ck);
    assert_int_equal(tg_checkpoint_open(liar, &ck), TG_OK);
    assert_int_equal(tg_checkpoint_new_model(ck, NULL, &m), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_last_error(), "rnn.weight_ih_l0"));
    tg_checkpoint_close(ck);
    char *a8[] = {"tapegrad", "train", "--resume", liar, NULL};
    expect_rejected(liar, a8, "metadata disagreeing with the tensors");
    unlink(liar);

    /* a negative text cursor would index before the text (found by review): refused */
    char neg[128];
    path_in(neg, sizeof neg, "bad_cursor.st");
    assert_int_equal(tg_checkpoint_open(good, &ck), TG_OK);
    assert_int_equal(tg_checkpoint_new_model(ck, NULL, &m), TG_OK);
    s = *tg_checkpoint_state(ck);
    s.cursor = -1000000;
    assert_int_equal(tg_optim_new(tg_checkpoint_optim_config(ck), m->params, m->n_params, &o), TG_OK);
    assert_int_equal(tg_checkpoint_save(neg, tg_checkpoint_config(ck), m, o, &s), TG_OK);
    tg_optim_free(o);
    tg_model_free(m);
    tg_checkpoint_close(ck);
    assert_int_equal(tg_checkpoint_open(neg, &ck), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_last_error(), "train.cursor"));
    char *a9[] = {"tapegrad", "train", "--resume", neg, NULL};
    expect_rejected(neg, a9, "negative cursor");
    unlink(neg);
}

/* ------------------------------------------------------------------ SIGINT */

static void test_sigint(void **state)
{
    (void)state;
    char ck[128], out[128];
    path_in(ck, sizeof ck, "int.st");
    path_in(out, sizeof out, "int.out");
    unlink(ck);
    char *argv[] = {"tapegrad", "train", "--hidden", "16", "--steps", "100000000", "--checkpoint",
                    ck, "--checkpoint-every", "20", "--threads", "1", NULL};
    pid_t pid = spawn(argv, out, NULL);
    for (int i = 0; i < 20000 && !exists(ck); i++) sleep_ms(1);
    assert_true(exists(ck));
    sleep_ms(50);
    kill(pid, SIGINT);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 130);
    size_t n;
    char *text = (char *)slurp(out, &n);
    long at = -1;
    char *p = strstr(text, "interrupted at step ");
    assert_non_null(p);
    at = strtol(p + strlen("interrupted at step "), NULL, 10);
    assert_non_null(strstr(text, "checkpoint written"));
    assert_true(at >= 20);
    assert_int_equal(ckpt_step(ck), at); /* the step reached, not the last periodic one */
    free(text);
    /* without --checkpoint: says nothing was saved, still 130 */
    char *argv2[] = {"tapegrad", "train", "--hidden", "8", "--steps", "100000000", "--threads", "1", NULL};
    pid = spawn(argv2, out, NULL);
    sleep_ms(300);
    kill(pid, SIGINT);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 130);
    text = (char *)slurp(out, &n);
    assert_non_null(strstr(text, "nothing was saved"));
    free(text);
}

/* ------------------------------------------------------------------ sampling */

static void test_sample_cli(void **state)
{
    (void)state;
    char ck[128], out[128], reber[128];
    path_in(ck, sizeof ck, "text.st");
    path_in(out, sizeof out, "sample.out");
    path_in(reber, sizeof reber, "reber.st");
    struct tg_train_config c = {.task = "text", .data = text_file(), .hidden = 16, .batch = 4,
                                .steps = 20, .eval_size = 4, .checkpoint = ck};
    train_lib(&c);
    size_t nt;
    unsigned char *corpus = slurp(text_file(), &nt);
    char *a1[] = {"tapegrad", "sample", "--checkpoint", ck, "--length", "300", "--seed", "2", NULL};
    assert_int_equal(run(a1, out, NULL), 0);
    size_t n;
    unsigned char *s = slurp(out, &n);
    assert_int_equal(n, 300);
    for (size_t i = 0; i < n; i++) assert_non_null(memchr(corpus, s[i], nt));
    free(s);
    char *a2[] = {"tapegrad", "sample", "--checkpoint", ck, "--length", "50", "--prime", "to be",
                  "--temperature", "0.5", NULL};
    assert_int_equal(run(a2, out, NULL), 0);
    s = slurp(out, &n);
    assert_int_equal(n, 55);
    assert_memory_equal(s, "to be", 5);
    free(s);
    char *a3[] = {"tapegrad", "sample", "--checkpoint", ck, "--prime", "TO BE", NULL};
    assert_int_equal(run(a3, out, NULL), 1);
    s = slurp(out, &n);
    assert_int_equal(n, 0); /* nothing printed before the error */
    free(s);
    struct tg_train_config r = {.hidden = 8, .batch = 4, .steps = 2, .eval_size = 4, .checkpoint = reber};
    train_lib(&r);
    char *a4[] = {"tapegrad", "sample", "--checkpoint", reber, NULL};
    assert_int_equal(run(a4, out, NULL), 1);
    free(corpus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_bit_identical),
        cmocka_unit_test(test_same_bytes_two_threads),
        cmocka_unit_test(test_clean_temps),
        cmocka_unit_test(test_bad_checkpoints),
        cmocka_unit_test(test_resume_keeps_run_options),
        cmocka_unit_test(test_sigint),
        cmocka_unit_test(test_sample_cli),
        cmocka_unit_test(test_kill_during_save),
    };
    if (getenv("TG_TEST_FILTER")) cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
