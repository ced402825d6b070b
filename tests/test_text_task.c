/* test_text_task.c — the text task's held-out split (training never reads a held-out byte, and
 * evaluation never a training one), --valid FILE, and --lines packing (lengths, start and end
 * marks, padding, labels −1 past a length, metrics over valid positions only). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tapegrad_tasks.h"
#include "tapegrad_train.h"

static char *write_temp(const void *bytes, size_t n)
{
    char *path = strdup("/tmp/tg_test_text_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    close(fd);
    return path;
}

static struct tg_task *new_task(const struct tg_task_config *cfg)
{
    struct tg_task *task = NULL;
    if (tg_task_new("text", cfg, &task) != TG_OK) fail_msg("tg_task_new: %s", tg_last_error());
    return task;
}

static int ch(const struct tg_task *task, int32_t idx) { return tg_task_vocab_char(task, idx); }

/* A file whose training part is made of lowercase letters and whose last 10% is digits: no
 * training window may hold a digit (as input or label), no held-out window a letter. */
static void test_held_out_split(void **state)
{
    (void)state;
    char txt[1000];
    for (int i = 0; i < 900; i++) txt[i] = (char)('a' + (i * 7 + i / 13) % 26);
    for (int i = 900; i < 1000; i++) txt[i] = (char)('0' + (i * 3) % 10);
    char *path = write_temp(txt, sizeof txt);
    struct tg_task_config cfg = {.data_path = path, .seq = 12, .valid_fraction = 0.1};
    struct tg_task *tr = new_task(&cfg);
    cfg.held_out = 1;
    struct tg_task *va = new_task(&cfg);
    /* the same vocabulary in both parts: all 36 symbols */
    assert_int_equal(tg_task_vocab_size(tr), 36);
    assert_int_equal(tg_task_vocab_size(va), 36);
    for (int k = 0; k < 36; k++) assert_int_equal(ch(tr, k), ch(va, k));
    /* the parts: the first 900 bytes, the last ⌈0.1·1000⌉ = 100 */
    int64_t n;
    const uint8_t *d = tg_task_text_data(tr, &n);
    assert_int_equal(n, 900);
    for (int i = 0; i < 900; i++) assert_int_equal(ch(tr, d[i]), (unsigned char)txt[i]);
    d = tg_task_text_data(va, &n);
    assert_int_equal(n, 100);
    for (int i = 0; i < 100; i++) assert_int_equal(ch(va, d[i]), (unsigned char)txt[900 + i]);

    struct tg_rng rng;
    tg_rng_seed(&rng, 3);
    struct tg_batch b;
    int last_label_seen = 0; /* the training part's last byte is reachable as a label */
    for (int seq_mode = 0; seq_mode < 2; seq_mode++) {
        struct tg_task_config c2 = cfg;
        c2.held_out = 0;
        c2.sequential = seq_mode;
        struct tg_task *t = new_task(&c2);
        assert_int_equal(tg_batch_alloc(t, 4, &b), TG_OK);
        for (int it = 0; it < 400; it++) {
            assert_int_equal(tg_task_next_batch(t, &rng, &b), TG_OK);
            for (int i = 0; i < b.T * b.B; i++) {
                assert_true(ch(t, b.tokens[i]) >= 'a');
                assert_true(ch(t, b.labels[i]) >= 'a');
                if (ch(t, b.labels[i]) == (unsigned char)txt[899]) last_label_seen = 1;
            }
        }
        tg_batch_free(&b);
        tg_task_free(t);
    }
    assert_true(last_label_seen);
    assert_int_equal(tg_batch_alloc(va, 8, &b), TG_OK);
    for (int it = 0; it < 200; it++) {
        assert_int_equal(tg_task_next_batch(va, &rng, &b), TG_OK);
        for (int i = 0; i < b.T * b.B; i++) {
            assert_true(ch(va, b.tokens[i]) <= '9');
            assert_true(ch(va, b.labels[i]) <= '9');
        }
    }
    tg_batch_free(&b);
    tg_task_free(tr);
    tg_task_free(va);

    /* a held-out part shorter than a window is an error naming the part */
    cfg.valid_fraction = 0.01; /* 10 bytes < seq+1 = 13 */
    struct tg_task *t = (struct tg_task *)1;
    assert_int_equal(tg_task_new("text", &cfg, &t), TG_ERR_VALUE);
    assert_null(t);
    assert_non_null(strstr(tg_last_error(), "held-out part"));
    assert_non_null(strstr(tg_last_error(), "10 bytes"));
    cfg.valid_fraction = 1.0;
    assert_int_equal(tg_task_new("text", &cfg, &t), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "valid fraction 1"));
    cfg.valid_fraction = 0; /* held out, but nothing to hold out */
    assert_int_equal(tg_task_new("text", &cfg, &t), TG_ERR_VALUE);
    unlink(path);
    free(path);
}

/* --valid FILE: the whole data file trains, the held-out file is evaluated, and the vocabulary
 * covers both (a byte only the held-out file has still has an index). */
static void test_valid_file(void **state)
{
    (void)state;
    const char *train = "abcabcabcabcabcabcabc", *valid = "cabxcabxcabx";
    char *tp = write_temp(train, strlen(train)), *vp = write_temp(valid, strlen(valid));
    struct tg_task_config cfg = {.data_path = tp, .valid_path = vp, .seq = 4};
    struct tg_task *tr = new_task(&cfg);
    cfg.held_out = 1;
    struct tg_task *va = new_task(&cfg);
    assert_int_equal(tg_task_vocab_size(tr), 4);
    assert_int_equal(tg_task_vocab_index(tr, 'x'), 3);
    int64_t n;
    tg_task_text_data(tr, &n);
    assert_int_equal(n, (int64_t)strlen(train));
    const uint8_t *d = tg_task_text_data(va, &n);
    assert_int_equal(n, (int64_t)strlen(valid));
    for (int i = 0; i < n; i++) assert_int_equal(ch(va, d[i]), (unsigned char)valid[i]);
    tg_task_free(tr);
    tg_task_free(va);
    /* a held-out file too short for a window */
    cfg.seq = 12;
    struct tg_task *t;
    assert_int_equal(tg_task_new("text", &cfg, &t), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "held-out file"));
    cfg.valid_path = "/nonexistent/valid.txt";
    assert_int_equal(tg_task_new("text", &cfg, &t), TG_ERR_IO);
    assert_non_null(strstr(tg_last_error(), "/nonexistent/valid.txt"));
    unlink(tp);
    unlink(vp);
    free(tp);
    free(vp);
}

/* --lines: one sequence per non-empty line, '\n' start mark, '\n' end label, padded. */
static void test_lines_packing(void **state)
{
    (void)state;
    const char *lines[] = {"a", "hello", "xy", "the longest line", "mid line"};
    char txt[256] = "";
    for (int k = 0; k < 5; k++) {
        strcat(txt, lines[k]);
        strcat(txt, k == 2 ? "\n\n\n" : "\n"); /* empty lines are skipped */
    }
    char *path = write_temp(txt, strlen(txt));
    struct tg_task_config cfg = {.data_path = path, .lines = 1};
    struct tg_task *task = new_task(&cfg);
    int nl = tg_task_vocab_index(task, '\n');
    assert_true(nl >= 0);
    int maxT = (int)strlen("the longest line") + 1;
    assert_int_equal(tg_task_max_T(task), maxT);
    assert_int_equal(tg_task_config(task)->seq, maxT);
    struct tg_batch b;
    assert_int_equal(tg_batch_alloc(task, 3, &b), TG_OK);
    struct tg_rng rng;
    tg_rng_seed(&rng, 9);
    int seen[5] = {0};
    int V = tg_task_vocab_size(task);
    double *pr = calloc((size_t)maxT * 3 * V, sizeof *pr);
    for (int it = 0; it < 60; it++) {
        assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
        int T = 0;
        long valid = 0;
        for (int r = 0; r < 3; r++) {
            assert_int_equal(b.reset[r], 1);
            int len = b.lengths[r];
            if (len > T) T = len;
            valid += len;
            /* which line: the bytes after the start mark */
            char got[64];
            for (int t = 1; t < len; t++) got[t - 1] = (char)ch(task, b.tokens[(size_t)t * 3 + r]);
            got[len - 1] = '\0';
            int k = 0;
            while (k < 5 && strcmp(lines[k], got) != 0) k++;
            assert_true(k < 5);
            seen[k] = 1;
            assert_int_equal(len, (int)strlen(lines[k]) + 1);
            assert_int_equal(b.tokens[r], nl);                              /* start mark */
            for (int t = 0; t + 1 < len; t++)                                /* next byte */
                assert_int_equal(ch(task, b.labels[(size_t)t * 3 + r]), (unsigned char)lines[k][t]);
            assert_int_equal(b.labels[(size_t)(len - 1) * 3 + r], nl);      /* end mark */
            for (int t = len; t < b.T; t++) {                                /* padding */
                assert_int_equal(b.tokens[(size_t)t * 3 + r], 0);
                assert_int_equal(b.labels[(size_t)t * 3 + r], -1);
            }
        }
        assert_int_equal(b.T, T); /* the batch is as long as its longest line */
        /* metrics count the valid positions only: garbage probabilities in the padding do not
         * matter, one-hot on the label elsewhere gives 0 bits over exactly Σ lengths positions */
        for (size_t i = 0; i < (size_t)b.T * 3 * V; i++) pr[i] = NAN;
        for (int r = 0; r < 3; r++)
            for (int t = 0; t < b.lengths[r]; t++) {
                size_t i = (size_t)t * 3 + r;
                for (int v = 0; v < V; v++) pr[i * V + v] = v == b.labels[i];
            }
        struct tg_metrics m;
        tg_metrics_reset(task, &m);
        tg_task_metrics(task, &b, pr, &m);
        assert_true(m.values[0] == 0.0 && m.values[1] == 1.0);
        assert_true(m.den[0] == (double)valid);
    }
    for (int k = 0; k < 5; k++) assert_true(seen[k]);
    free(pr);
    tg_batch_free(&b);
    tg_task_free(task);

    /* held-out lines: the last ⌈0.4·5⌉ = 2 lines; training the first 3 */
    cfg.valid_fraction = 0.4;
    task = new_task(&cfg);
    cfg.held_out = 1;
    struct tg_task *va = new_task(&cfg);
    assert_int_equal(tg_task_max_T(va), maxT); /* same shape in both parts */
    tg_rng_seed(&rng, 1);
    assert_int_equal(tg_batch_alloc(task, 4, &b), TG_OK);
    for (int it = 0; it < 50; it++) {
        assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
        for (int r = 0; r < 4; r++) assert_true(b.lengths[r] <= 6); /* "a", "hello", "xy" */
    }
    tg_batch_free(&b);
    assert_int_equal(tg_batch_alloc(va, 4, &b), TG_OK);
    for (int it = 0; it < 50; it++) {
        assert_int_equal(tg_task_next_batch(va, &rng, &b), TG_OK);
        for (int r = 0; r < 4; r++)
            assert_true(b.lengths[r] == 17 || b.lengths[r] == 9);
    }
    tg_batch_free(&b);
    tg_task_free(task);
    tg_task_free(va);

    /* a line longer than --seq allows: FILE:LINE */
    cfg = (struct tg_task_config){.data_path = path, .lines = 1, .seq = 8};
    struct tg_task *t;
    assert_int_equal(tg_task_new("text", &cfg, &t), TG_ERR_VALUE);
    char want[300];
    snprintf(want, sizeof want, "%s:6: a line of 16 bytes", path);
    assert_non_null(strstr(tg_last_error(), want));
    /* everything held out */
    cfg = (struct tg_task_config){.data_path = path, .lines = 1, .valid_fraction = 0.9};
    assert_int_equal(tg_task_new("text", &cfg, &t), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "leaves none to train on"));
    unlink(path);
    free(path);
    char *blank = write_temp("\n\n\n", 3);
    cfg = (struct tg_task_config){.data_path = blank, .lines = 1};
    assert_int_equal(tg_task_new("text", &cfg, &t), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "no non-empty line"));
    unlink(blank);
    free(blank);
}

/* End to end: train reports the held-out part. Its labels are digits, which never occur as a
 * training label, so the held-out argmax is never right (accuracy 0), while the model does learn
 * the letters (training accuracy above chance). Evaluated on training windows, it would not be 0. */
static void test_train_evaluates_held_out(void **state)
{
    (void)state;
    char txt[3000];
    for (int i = 0; i < 2700; i++) txt[i] = "abcab"[i % 5];
    for (int i = 2700; i < 3000; i++) txt[i] = (char)('0' + (i * 7) % 10);
    char *path = write_temp(txt, sizeof txt);
    struct tg_train_config cfg = {.task = "text", .data = path, .steps = 60, .hidden = 16,
                                  .batch = 8, .seq = 10, .eval_size = 64, .dtype = "f64"};
    struct tg_trainer *tr;
    assert_int_equal(tg_trainer_new(&cfg, &tr), TG_OK);
    assert_true(tg_trainer_config(tr)->valid_fraction == 0.1); /* the default */
    struct tg_train_result res;
    assert_int_equal(tg_trainer_run(tr, &res), TG_OK);
    assert_string_equal(res.eval.names[0], "bpc");
    assert_true(res.eval.values[1] == 0.0);
    assert_true(res.eval.values[0] > log2(13.0)); /* worse than uniform over the 13 symbols */
    struct tg_metrics m;
    tg_metrics_reset(tg_trainer_task(tr), &m);
    tg_trainer_free(tr);
    /* the same windows of the training part as held-out text: accuracy well above 0 */
    char *vp = write_temp(txt, 2700);
    cfg.valid = vp;
    assert_int_equal(tg_trainer_new(&cfg, &tr), TG_OK);
    assert_int_equal(tg_trainer_run(tr, &res), TG_OK);
    assert_true(res.eval.values[1] > 0.5);
    tg_trainer_free(tr);
    cfg.valid_fraction = 0.2; /* both */
    assert_int_equal(tg_trainer_new(&cfg, &tr), TG_ERR_VALUE);
    unlink(vp);
    free(vp);
    unlink(path);
    free(path);
}

/* --lines through the trainer: the checkpoint keeps lines, the fraction and the measured seq,
 * so 2 steps + resume + 2 steps gives the bytes of 4 straight; an output on an input is refused. */
static void test_lines_resume(void **state)
{
    (void)state;
    char txt[2000] = "";
    for (int i = 0; i < 120; i++) strcat(txt, i % 3 ? "ab ba\n" : i % 2 ? "abba cab\n" : "c\n");
    char *path = write_temp(txt, strlen(txt));
    char a[] = "/tmp/tg_lines_a_XXXXXX", b[] = "/tmp/tg_lines_b_XXXXXX";
    close(mkstemp(a));
    close(mkstemp(b));
    struct tg_train_config cfg = {.task = "text", .data = path, .lines = 1, .steps = 4, .hidden = 8,
                                  .batch = 4, .eval_size = 8, .dtype = "f64", .checkpoint = a,
                                  .overwrite = 1, .micro_batches = 2};
    struct tg_train_result res;
    if (tg_train(&cfg, &res) != TG_OK) fail_msg("%s", tg_last_error());
    assert_true(res.eval.den[0] > 0 && isfinite(res.eval.values[0]));
    cfg.checkpoint = b, cfg.steps = 2;
    if (tg_train(&cfg, &res) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_train_config rc = {.resume = b, .checkpoint = b, .steps = 4, .eval_size = 8};
    struct tg_trainer *tr;
    if (tg_trainer_new(&rc, &tr) != TG_OK) fail_msg("%s", tg_last_error());
    assert_int_equal(tg_trainer_config(tr)->lines, 1);
    assert_int_equal(tg_trainer_config(tr)->seq, 9); /* "abba cab" + its end mark */
    assert_true(tg_trainer_config(tr)->valid_fraction == 0.1);
    assert_int_equal(tg_trainer_run(tr, &res), TG_OK);
    tg_trainer_free(tr);
    struct tg_checkpoint *ca, *cb;
    assert_int_equal(tg_checkpoint_open(a, &ca), TG_OK);
    assert_int_equal(tg_checkpoint_open(b, &cb), TG_OK);
    struct tg_model *ma, *mb;
    assert_int_equal(tg_checkpoint_new_model(ca, NULL, &ma), TG_OK);
    assert_int_equal(tg_checkpoint_new_model(cb, NULL, &mb), TG_OK);
    for (int i = 0; i < ma->n_params; i++)
        assert_memory_equal(ma->params[i]->data, mb->params[i]->data, tg_nbytes(ma->params[i]));
    tg_model_free(ma), tg_model_free(mb);
    tg_checkpoint_close(ca), tg_checkpoint_close(cb);
    /* --valid must not be the checkpoint, and the held-out options are for text only */
    struct tg_train_config bad = {.task = "text", .data = path, .valid = a, .checkpoint = a,
                                  .overwrite = 1, .steps = 1};
    assert_int_equal(tg_trainer_new(&bad, &tr), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "same file as --valid"));
    bad = (struct tg_train_config){.task = "copy", .lines = 1, .steps = 1};
    assert_int_equal(tg_trainer_new(&bad, &tr), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "for --task text"));
    unlink(a), unlink(b), unlink(path);
    free(path);
}

/* The line sampler starts each line from the start mark and a zero state: with a near-greedy
 * temperature every line it draws is the model's most likely line, and a trained model's is
 * the one line of the file. */
static void test_sample_lines(void **state)
{
    (void)state;
    char txt[800] = "";
    for (int i = 0; i < 60; i++) strcat(txt, "abcab\n");
    char *path = write_temp(txt, strlen(txt));
    char ck[] = "/tmp/tg_lines_s_XXXXXX";
    close(mkstemp(ck));
    struct tg_train_config cfg = {.task = "text", .data = path, .lines = 1, .steps = 150,
                                  .hidden = 16, .batch = 8, .eval_size = 8, .checkpoint = ck,
                                  .overwrite = 1, .lr = 0.05};
    struct tg_train_result res;
    if (tg_train(&cfg, &res) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_checkpoint *c;
    assert_int_equal(tg_checkpoint_open(ck, &c), TG_OK);
    const struct tg_checkpoint_state *s = tg_checkpoint_state(c);
    struct tg_model *m;
    assert_int_equal(tg_checkpoint_new_model(c, NULL, &m), TG_OK);
    char out[64] = "";
    FILE *f = fmemopen(out, sizeof out, "w");
    struct tg_rng rng;
    tg_rng_seed(&rng, 1);
    assert_int_equal(tg_sample_lines(m, s->vocab, s->vocab_n, NULL, 36, 1e-3, &rng, f), TG_OK);
    fclose(f);
    assert_string_equal(out, "abcab\nabcab\nabcab\nabcab\nabcab\nabcab\n");
    /* a prime is the start of the first line */
    f = fmemopen(out, sizeof out, "w");
    assert_int_equal(tg_sample_lines(m, s->vocab, s->vocab_n, "abc", 9, 1e-3, &rng, f), TG_OK);
    fclose(f);
    assert_string_equal(out, "ab\nabcab\n");
    tg_model_free(m);
    tg_checkpoint_close(c);
    unlink(ck), unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_held_out_split),
        cmocka_unit_test(test_valid_file),
        cmocka_unit_test(test_lines_packing),
        cmocka_unit_test(test_train_evaluates_held_out),
        cmocka_unit_test(test_lines_resume),
        cmocka_unit_test(test_sample_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
