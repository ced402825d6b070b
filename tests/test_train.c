/* test_train.c — the training loop end to end: an LSTM learns the adding problem (T = 50) well
 * below the 0.167 baseline, Reber improves, same seed ⇒ same bytes, --compare's table, the CSV
 * log, every task × every cell (and a user-defined one) trains a step, truncated BPTT carries
 * its state, clipping, bad configurations, and no heap allocation per step after warm-up.
 *
 * As in test_tape.c, the non-sanitizer build replaces malloc & co. with counting forwarders so
 * that "no allocation per step" is measured on the real heap. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tg_config.h"
#include "tapegrad_train.h"

#if TG_HAVE_OPENMP
#include <omp.h>
#endif
void openblas_set_num_threads(int);

/* Learning tests run on one thread: at these sizes a second one only waits at barriers, and on a
 * busy machine libgomp's spinning made this file ten times slower. Returns the previous count. */
static int one_thread(int n)
{
#if TG_HAVE_OPENMP
    int prev = omp_get_max_threads();
    omp_set_num_threads(n);
#else
    int prev = 1;
#endif
    openblas_set_num_threads(n);
    return prev;
}

/* ------------------------------------------------------- heap allocation counter */

#include "malloc_count.h"

/* ------------------------------------------------------------------ helpers */

static struct tg_trainer *new_trainer(const struct tg_train_config *cfg)
{
    struct tg_trainer *tr = NULL;
    if (tg_trainer_new(cfg, &tr) != TG_OK) fail_msg("tg_trainer_new: %s", tg_last_error());
    return tr;
}

static void step(struct tg_trainer *tr)
{
    if (tg_trainer_step(tr) != TG_OK) fail_msg("tg_trainer_step: %s", tg_last_error());
}

static void eval(struct tg_trainer *tr, struct tg_metrics *m)
{
    if (tg_trainer_eval(tr, m) != TG_OK) fail_msg("tg_trainer_eval: %s", tg_last_error());
}

/* Every parameter's bytes, concatenated (caller frees). */
static unsigned char *param_bytes(const struct tg_model *m, size_t *n)
{
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += tg_nbytes(m->params[i]);
    unsigned char *buf = malloc(total), *p = buf;
    assert_non_null(buf);
    for (int i = 0; i < m->n_params; i++) {
        memcpy(p, m->params[i]->data, tg_nbytes(m->params[i]));
        p += tg_nbytes(m->params[i]);
    }
    *n = total;
    return buf;
}

static char text_path[64];

/* A small text file (a few kB of repetitive English), made once. */
static const char *text_file(void)
{
    if (text_path[0]) return text_path;
    strcpy(text_path, "/tmp/tg_test_train_XXXXXX");
    int fd = mkstemp(text_path);
    assert_true(fd >= 0);
    const char *line = "the quick brown fox jumps over the lazy dog; a stitch in time saves nine.\n";
    for (int i = 0; i < 60; i++) assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    close(fd);
    return text_path;
}

/* ------------------------------------------------------------------ learning */

/* The adding problem with T = 50: predicting the mean gives MSE 1/6 ≈ 0.167; a small LSTM must
 * get below 0.05 on the held-out set. Norm clipping is on, so it is exercised in a real run. */
static void test_adding_lstm_beats_baseline(void **state)
{
    (void)state;
    struct tg_train_config cfg = {.task = "adding", .length = 50, .hidden = 16, .batch = 32,
                                  .lr = 0.03, .clip_norm = 1.0, .seed = 1, .eval_size = 256};
    int threads = one_thread(1);
    struct tg_trainer *tr = new_trainer(&cfg);
    struct tg_metrics m;
    eval(tr, &m);
    assert_true(m.values[0] > 0.1); /* untrained: near the baseline or worse */
    double best = INFINITY;
    for (int s = 1; s <= 1500 && best >= 0.05; s++) {
        step(tr);
        if (s % 50 == 0) {
            eval(tr, &m);
            best = fmin(best, m.values[0]);
        }
    }
    if (!(best < 0.05)) fail_msg("held-out MSE %g after %ld steps, want < 0.05", best, tg_trainer_steps(tr));
    tg_trainer_free(tr);
    one_thread(threads);
}

static void test_reber_improves(void **state)
{
    (void)state;
    struct tg_train_config cfg = {.hidden = 16, .batch = 16, .seed = 3, .eval_size = 128};
    int threads = one_thread(1);
    struct tg_trainer *tr = new_trainer(&cfg);
    struct tg_metrics before, after;
    eval(tr, &before);
    for (int s = 0; s < 120; s++) step(tr);
    eval(tr, &after);
    assert_true(after.values[1] > before.values[1] + 0.1); /* grammatical */
    assert_true(after.values[1] > 0.8);
    assert_true(tg_trainer_last_loss(tr) < 1.2);
    tg_trainer_free(tr);
    one_thread(threads);
}

static void test_same_seed_same_bytes(void **state)
{
    (void)state;
    struct tg_train_config cfg = {.hidden = 12, .batch = 8, .seed = 7, .steps = 25, .eval_every = 10,
                                  .eval_size = 16};
    unsigned char *b[3];
    size_t n[3];
    for (int k = 0; k < 3; k++) {
        cfg.seed = k == 2 ? 8 : 7;
        struct tg_trainer *tr = new_trainer(&cfg);
        assert_int_equal(tg_trainer_run(tr, NULL), TG_OK);
        assert_int_equal(tg_trainer_steps(tr), 25);
        b[k] = param_bytes(tg_trainer_model(tr), &n[k]);
        tg_trainer_free(tr);
    }
    assert_int_equal(n[0], n[1]);
    assert_memory_equal(b[0], b[1], n[0]);
    assert_memory_not_equal(b[0], b[2], n[0]);
    for (int k = 0; k < 3; k++) free(b[k]);
}

/* ------------------------------------------------------------------ compare and log */

static void test_compare_table(void **state)
{
    (void)state;
    struct tg_train_config cfg = {.hidden = 8, .batch = 8, .steps = 15, .seed = 2, .eval_size = 32};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    struct tg_train_result res[3];
    int n = 0;
    assert_int_equal(tg_train_compare(&cfg, "rnn_tanh,lstm,gru", f, res, 3, &n), TG_OK);
    fclose(f);
    assert_int_equal(n, 3);
    /* header + one row per cell, each row starting with the cell's name */
    const char *want[] = {"cell", "rnn_tanh", "lstm", "gru"};
    char *line = buf;
    for (int i = 0; i < 4; i++) {
        assert_non_null(line);
        assert_true(strncmp(line, want[i], strlen(want[i])) == 0);
        assert_true(line[strlen(want[i])] == ' ');
        if (i == 0) {
            char *nl = strchr(line, '\n');
            assert_non_null(strstr(line, "long_acc"));
            assert_true(strstr(line, "long_acc") < nl);
            assert_non_null(strstr(line, "steps"));
        }
        line = strchr(line, '\n');
        if (line) line++;
    }
    assert_true(line && *line == '\0');
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].steps, 15);
        assert_int_equal(res[i].eval.n, 3);
    }
    free(buf);
    /* no checkpoints while comparing; unknown cells named */
    cfg.checkpoint = "/tmp/never.safetensors";
    assert_int_equal(tg_train_compare(&cfg, "lstm", NULL, NULL, 0, NULL), TG_ERR_VALUE);
    cfg.checkpoint = NULL;
    assert_int_equal(tg_train_compare(&cfg, "lstm,nope", NULL, NULL, 0, NULL), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "nope"));
}

static void test_csv_log(void **state)
{
    (void)state;
    char path[] = "/tmp/tg_test_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    struct tg_train_config cfg = {.task = "copy", .length = 5, .hidden = 8, .batch = 4, .steps = 23,
                                  .eval_every = 10, .eval_size = 8, .log_path = path};
    assert_int_equal(tg_train(&cfg, NULL), TG_OK);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    assert_non_null(fgets(line, sizeof line, f));
    assert_true(strncmp(line, "step,loss,", 10) == 0);
    assert_non_null(strstr(line, ",acc,"));
    assert_non_null(strstr(line, ",seq_acc,"));
    assert_non_null(strstr(line, ",eval_acc,"));
    int cols = 1;
    for (char *p = line; *p; p++) cols += *p == ',';
    long rows = 0;
    while (fgets(line, sizeof line, f)) {
        rows++;
        assert_int_equal(strtol(line, NULL, 10), rows);
        int c = 1;
        for (char *p = line; *p; p++) c += *p == ',';
        assert_int_equal(c, cols);
        double loss = strtod(strchr(line, ',') + 1, NULL);
        assert_true(isfinite(loss) && loss > 0);
    }
    fclose(f);
    assert_int_equal(rows, 23);
    unlink(path);
}

/* ------------------------------------------------------------------ every path */

/* A user-defined cell, as in tapegrad_models.h: h' = tanh(W x + U h + b). */
static const struct tg_param_spec my_params[] = {
    {"weight_ih", TG_SHAPE(1, 0, 0, 0, 1, 0)},
    {"weight_hh", TG_SHAPE(1, 0, 0, 1, 0, 0)},
    {"bias", TG_SHAPE(0, 0, 1, 1, 0, 0)},
};
static void my_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
                    struct tg_tensor *const *s, struct tg_tensor **next)
{
    struct tg_tensor *a = tg_add(t, tg_matmul(t, x, w[0], 0, 1), tg_matmul(t, s[0], w[1], 0, 1));
    next[0] = tg_tanh(t, tg_add(t, a, w[2]));
}
static const struct tg_cell my_cell = {.name = "my_rnn", .equations = "h' = tanh(W x + U h + b)",
                                       .n_state = 1, .gates = 1, .n_params = 3,
                                       .params = my_params, .step = my_step};

static void test_every_task_every_cell(void **state)
{
    (void)state;
    const char *tasks[] = {"reber", "adding", "copy", "text"};
    for (int k = 0; k < 4; k++) {
        for (int c = 0; c <= tg_cell_count(); c++) {
            struct tg_train_config cfg = {.task = tasks[k], .hidden = 6, .batch = 3,
                                          .length = k == 0 ? 20 : 6, .eval_size = 4,
                                          .seed = (uint64_t)c};
            if (c == tg_cell_count()) cfg.cell_def = &my_cell, cfg.layers = 2;
            else cfg.cell = tg_cell_at(c)->name;
            if (k == 3) cfg.data = text_file(), cfg.seq = 8;
            struct tg_trainer *tr = new_trainer(&cfg);
            step(tr);
            step(tr);
            double loss = tg_trainer_last_loss(tr);
            if (!(isfinite(loss) && loss > 0))
                fail_msg("task %s, cell %s: loss %g", tasks[k], tg_trainer_config(tr)->cell, loss);
            struct tg_metrics m;
            eval(tr, &m);
            assert_true(isfinite(m.values[0]));
            tg_trainer_free(tr);
        }
    }
}

/* Text: one step is one chunk of seq bytes per stream; the state is carried between steps. */
static void test_tbptt(void **state)
{
    (void)state;
    struct tg_train_config cfg = {.task = "text", .data = text_file(), .seq = 10, .hidden = 8,
                                  .batch = 4, .eval_size = 4};
    struct tg_trainer *tr = new_trainer(&cfg);
    struct tg_model *m = tg_trainer_model(tr);
    assert_int_equal(m->state_batch, 0);
    step(tr);
    assert_int_equal(m->state_batch, 4);
    assert_int_equal(tg_task_cursor(tg_trainer_task(tr)), 1);
    double h = 0;
    for (int j = 0; j < 8; j++) h += fabs(tg_get(m->state[0], 0, j));
    assert_true(h > 0);
    tg_trainer_free(tr);
    /* adding in chunks: only the last chunk carries the loss; still trains without error */
    struct tg_train_config a = {.task = "adding", .length = 30, .seq = 7, .hidden = 8, .batch = 4,
                                .eval_size = 4, .clip_value = 0.5, .optimizer = "sgd", .momentum = 0.9};
    tr = new_trainer(&a);
    for (int s = 0; s < 3; s++) step(tr);
    assert_true(isfinite(tg_trainer_last_loss(tr)));
    tg_trainer_free(tr);
}

/* Clipping by value bounds every element of the gradient the optimizer sees: with SGD, lr 1 and
 * clip c, no parameter moves by more than c in one step. */
static void test_clip_value_in_run(void **state)
{
    (void)state;
    struct tg_train_config cfg = {.hidden = 8, .batch = 8, .optimizer = "sgd", .lr = 1.0,
                                  .clip_value = 1e-3, .loss = "sum", .eval_size = 8};
    struct tg_trainer *tr = new_trainer(&cfg);
    size_t n;
    unsigned char *before = param_bytes(tg_trainer_model(tr), &n);
    step(tr);
    struct tg_model *m = tg_trainer_model(tr);
    const float *b = (const float *)before;
    double maxd = 0;
    for (int i = 0; i < m->n_params; i++) {
        const float *p = m->params[i]->data;
        for (size_t j = 0; j < tg_numel(m->params[i]); j++) maxd = fmax(maxd, fabs((double)p[j] - *b++));
    }
    assert_true(maxd > 0);
    assert_true(maxd <= 1e-3 + 1e-6); /* + the float rounding of p − g */
    free(before);
    tg_trainer_free(tr);
}

/* A bare tg_trainer_step (no log, no progress callback, no --clip-norm) skips the gradient
 * norms: the parameters must come out byte for byte as from a run that logs them, and a run that
 * blows up must still stop with the divergence message. */
static void test_bare_steps_skip_norms(void **state)
{
    (void)state;
    char log[] = "/tmp/tg_train_bareXXXXXX";
    int fd = mkstemp(log);
    assert_true(fd >= 0);
    close(fd);
    struct tg_train_config a = {.hidden = 8, .batch = 4, .seed = 5, .clip_value = 0.05, .eval_size = 8};
    struct tg_train_config b = a;
    b.log_path = log;
    struct tg_trainer *ta = new_trainer(&a), *tb = new_trainer(&b);
    for (int i = 0; i < 6; i++) step(ta), step(tb);
    size_t na, nb;
    unsigned char *pa = param_bytes(tg_trainer_model(ta), &na), *pb = param_bytes(tg_trainer_model(tb), &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na);
    free(pa);
    free(pb);
    tg_trainer_free(ta);
    tg_trainer_free(tb);
    unlink(log);

    struct tg_train_config d = {.cell = "rnn_relu", .task = "adding", .length = 30, .lr = 1e4,
                                .optimizer = "sgd", .eval_size = 8};
    struct tg_trainer *td = new_trainer(&d);
    enum tg_status st = TG_OK;
    for (int i = 0; i < 20 && st == TG_OK; i++) st = tg_trainer_step(td);
    assert_int_equal(st, TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "training diverged at step"));
    tg_trainer_free(td);
}

static void test_bad_config(void **state)
{
    (void)state;
    struct tg_trainer *tr = (struct tg_trainer *)1;
    struct tg_train_config c = {.task = "nope"};
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_VALUE);
    assert_null(tr);
    assert_non_null(strstr(tg_last_error(), "nope"));
    c = (struct tg_train_config){.cell = "lstmm"};
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "lstmm"));
    c = (struct tg_train_config){.optimizer = "adamw"};
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_VALUE);
    c = (struct tg_train_config){.task = "text"};
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "--data"));
    c = (struct tg_train_config){.task = "text", .data = "/nonexistent/file.txt"};
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_IO);
    c = (struct tg_train_config){.dtype = "f16"};
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_VALUE);
    c = (struct tg_train_config){.hidden = -3};
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_VALUE);
    c = (struct tg_train_config){.resume = "/nonexistent/ckpt.safetensors"};
    assert_int_equal(tg_trainer_new(&c, &tr), TG_ERR_IO);
    assert_null(tr);
}

static void test_sample_errors(void **state)
{
    (void)state;
    struct tg_train_config cfg = {.task = "text", .data = text_file(), .hidden = 8, .batch = 2,
                                  .eval_size = 2};
    struct tg_trainer *tr = new_trainer(&cfg);
    struct tg_model *m = tg_trainer_model(tr);
    struct tg_task *task = tg_trainer_task(tr);
    uint8_t vocab[256];
    int V = tg_task_vocab_size(task);
    for (int i = 0; i < V; i++) vocab[i] = (uint8_t)tg_task_vocab_char(task, i);
    struct tg_rng rng;
    tg_rng_seed(&rng, 1);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(tg_sample_text(m, vocab, V, "the fox", 40, 0.8, &rng, f), TG_OK);
    fflush(f);
    assert_int_equal(len, 40);
    for (size_t i = 0; i < len; i++) assert_non_null(memchr(vocab, buf[i], (size_t)V));
    assert_int_equal(tg_sample_text(m, vocab, V, "the FOX", 5, 1.0, &rng, f), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "'F'"));
    assert_int_equal(tg_sample_text(m, vocab, V, NULL, 5, 0.0, &rng, f), TG_ERR_VALUE);
    fclose(f);
    free(buf);
    tg_trainer_free(tr);
}

/* After warm-up (the arena at its largest, the carried state sized, one evaluation) a step
 * allocates nothing: batches, probabilities and the tape are reused. */
static void test_no_alloc_after_warmup(void **state)
{
    (void)state;
    struct tg_train_config cfgs[2] = {
        {.task = "adding", .length = 20, .seq = 8, .hidden = 8, .batch = 4, .eval_size = 8},
        {.task = "text", .data = text_file(), .seq = 10, .hidden = 8, .batch = 4, .eval_size = 8},
    };
    for (int k = 0; k < 2; k++) {
        struct tg_trainer *tr = new_trainer(&cfgs[k]);
        struct tg_metrics m;
        for (int s = 0; s < 3; s++) step(tr);
        eval(tr, &m);
        size_t before = heap_calls();
        for (int s = 0; s < 20; s++) step(tr);
        eval(tr, &m);
        if (COUNT_MALLOC) assert_int_equal(heap_calls(), before);
        tg_trainer_free(tr);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adding_lstm_beats_baseline),
        cmocka_unit_test(test_reber_improves),
        cmocka_unit_test(test_same_seed_same_bytes),
        cmocka_unit_test(test_compare_table),
        cmocka_unit_test(test_csv_log),
        cmocka_unit_test(test_every_task_every_cell),
        cmocka_unit_test(test_tbptt),
        cmocka_unit_test(test_clip_value_in_run),
        cmocka_unit_test(test_bare_steps_skip_norms),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_sample_errors),
        cmocka_unit_test(test_no_alloc_after_warmup),
    };
    if (getenv("TG_TEST_FILTER")) cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (text_path[0]) unlink(text_path);
    return rc;
}
