/* test_tasks.c — the built-in tasks: generators (grammar validity, targets, copy answers, text
 * windows), determinism, metrics on hand-made predictions, and errors on bad input. */
#include <math.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tapegrad_tasks.h"

/* ------------------------------------------------------------------ helpers */

static struct tg_task *new_task(const char *name, const struct tg_task_config *cfg)
{
    struct tg_task *task = NULL;
    enum tg_status st = tg_task_new(name, cfg, &task);
    if (st != TG_OK) fail_msg("tg_task_new(%s): %s", name, tg_last_error());
    return task;
}

static char *write_temp(const void *bytes, size_t n)
{
    char *path = strdup("/tmp/tg_test_tasks_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    close(fd);
    return path;
}

static void to_string(const int32_t *sym, int n, char *out)
{
    for (int i = 0; i < n; i++) out[i] = tg_reber_symbols[sym[i]];
    out[n] = '\0';
}

static int from_string(const char *s, int32_t *sym)
{
    int n = (int)strlen(s);
    for (int i = 0; i < n; i++) sym[i] = tg_reber_index(s[i]);
    return n;
}

/* An independent recognizer: the embedded Reber language as POSIX regular expressions, derived
 * from the graph by hand (R4 = paths from state 4 to the end = (XT*VP)*(XT*VV|S)). */
#define INNER "B((TS*X|PT*VP)(XT*VP)*(XT*VV|S)|PT*VV)E"
static regex_t re_plain, re_embedded;

static void compile_regexes(void)
{
    static int done;
    if (done) return;
    assert_int_equal(regcomp(&re_plain, "^" INNER "$", REG_EXTENDED | REG_NOSUB), 0);
    assert_int_equal(regcomp(&re_embedded, "^(BT" INNER "TE|BP" INNER "PE)$",
                             REG_EXTENDED | REG_NOSUB), 0);
    done = 1;
}

/* ------------------------------------------------------------------ reber */

static void test_reber_known_strings(void **state)
{
    (void)state;
    int32_t s[64];
    uint8_t allowed[64];
    const char *good[] = {"BTBTXSETE", "BPBPVVEPE", "BTBTSSXXTVVETE", "BPBPVPXVVEPE"};
    for (int i = 0; i < 4; i++) {
        int n = from_string(good[i], s);
        assert_int_equal(tg_reber_check(s, n, 1, NULL), 1);
        assert_int_equal(tg_reber_check(s, n, 1, allowed), 1);
    }
    const char *bad[] = {"BTBTXSEPE", "BTBTXSET", "BTBTXSETEE", "TBTXSETE", "BTBTXXETE",
                         "BTBPVPSTE", "BTTXSETE", "B", "BTBTXSETB"};
    for (int i = 0; i < 9; i++) {
        int n = from_string(bad[i], s);
        assert_int_equal(tg_reber_check(s, n, 1, NULL), 0);
    }
    assert_int_equal(tg_reber_check(s, 0, 1, NULL), 0);
    /* plain strings */
    int n = from_string("BTSSXXTVVE", s);
    assert_int_equal(tg_reber_check(s, n, 0, NULL), 1);
    assert_int_equal(tg_reber_check(s, n, 1, NULL), 0);
    n = from_string("BPVPSE", s);
    assert_int_equal(tg_reber_check(s, n, 0, NULL), 1);

    /* allowed-next masks of B T B T X S E T E, written out by hand */
    n = from_string("BTBTXSETE", s);
    tg_reber_check(s, n, 1, allowed);
#define M(c) (1u << tg_reber_index(c))
    const unsigned expect[9] = {M('T') | M('P'), M('B'), M('T') | M('P'), M('S') | M('X'),
                                M('X') | M('S'), M('E'), M('T'), M('E'), 0};
#undef M
    for (int t = 0; t < 9; t++) assert_int_equal(allowed[t], expect[t]);
    assert_int_equal(tg_reber_index('Q'), -1);
    assert_int_equal(tg_reber_generate(NULL, 1, s, 40), -1);
}

/* Many generated strings: every one valid (by the validator and by the regex), the second-to-
 * last symbol repeats the second, lengths within the cap; mutants agree with the regex. */
static void test_reber_generated_valid(void **state)
{
    (void)state;
    compile_regexes();
    int32_t s[64], m[64];
    char str[80];
    int hist[64] = {0}, long_cap = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct tg_rng rng;
        tg_rng_seed(&rng, seed);
        for (int k = 0; k < 500; k++) {
            int n = tg_reber_generate(&rng, 1, s, 40);
            assert_true(n >= 9 && n <= 40);
            hist[n]++;
            if (n > 20) long_cap++;
            assert_int_equal(tg_reber_check(s, n, 1, NULL), 1);
            to_string(s, n, str);
            if (regexec(&re_embedded, str, 0, NULL, 0) != 0) fail_msg("regex rejects %s", str);
            assert_int_equal(s[n - 2], s[1]);
            assert_int_equal(s[n - 1], tg_reber_index('E'));
            /* every single-symbol substitution: validator and regex agree */
            for (int i = 0; i < n; i++) {
                memcpy(m, s, (size_t)n * sizeof *m);
                m[i] = (int32_t)tg_rng_below(&rng, TG_REBER_NSYM);
                to_string(m, n, str);
                int re_ok = regexec(&re_embedded, str, 0, NULL, 0) == 0;
                assert_int_equal(tg_reber_check(m, n, 1, NULL), re_ok);
            }
            /* the repeat corrupted: always invalid */
            memcpy(m, s, (size_t)n * sizeof *m);
            m[n - 2] = s[1] == tg_reber_index('T') ? tg_reber_index('P') : tg_reber_index('T');
            assert_int_equal(tg_reber_check(m, n, 1, NULL), 0);
            /* truncated: invalid */
            assert_int_equal(tg_reber_check(s, n - 1, 1, NULL), 0);
        }
        for (int k = 0; k < 200; k++) {
            int n = tg_reber_generate(&rng, 0, s, 30);
            assert_true(n >= 5 && n <= 30);
            assert_int_equal(tg_reber_check(s, n, 0, NULL), 1);
            to_string(s, n, str);
            assert_int_equal(regexec(&re_plain, str, 0, NULL, 0), 0);
        }
    }
    /* both branches and a spread of lengths occur (the generator is not stuck) */
    assert_true(hist[9] > 1000 && hist[9] < 4000); /* P(n = 9) = ¼ */
    assert_true(long_cap > 50);
    /* a cap forces redraws but still yields valid strings */
    struct tg_rng rng;
    tg_rng_seed(&rng, 7);
    for (int k = 0; k < 200; k++) {
        int n = tg_reber_generate(&rng, 1, s, 9);
        assert_int_equal(n, 9);
        assert_int_equal(tg_reber_check(s, n, 1, NULL), 1);
    }
}

/* Generated strings hit by random edits (substitute, insert, delete; mostly invalid, some
 * valid again) agree with the regex too. */
static void test_reber_validator_random(void **state)
{
    (void)state;
    compile_regexes();
    struct tg_rng rng;
    tg_rng_seed(&rng, 99);
    int32_t s[64];
    char str[80];
    int accepted = 0, rejected = 0;
    for (int k = 0; k < 50000; k++) {
        int n = tg_reber_generate(&rng, 1, s, 40);
        int edits = 1 + (int)tg_rng_below(&rng, 3);
        for (int e = 0; e < edits; e++) {
            int op = (int)tg_rng_below(&rng, 3), i = (int)tg_rng_below(&rng, (uint32_t)n);
            int32_t c = (int32_t)tg_rng_below(&rng, TG_REBER_NSYM);
            if (op == 0) {
                s[i] = c;
            } else if (op == 1 && n < 60) {
                memmove(s + i + 1, s + i, (size_t)(n - i) * sizeof *s);
                s[i] = c;
                n++;
            } else if (op == 2 && n > 1) {
                memmove(s + i, s + i + 1, (size_t)(n - i - 1) * sizeof *s);
                n--;
            }
        }
        to_string(s, n, str);
        int re_ok = regexec(&re_embedded, str, 0, NULL, 0) == 0;
        accepted += re_ok;
        rejected += !re_ok;
        if (tg_reber_check(s, n, 1, NULL) != re_ok) fail_msg("validator disagrees on %s", str);
    }
    assert_true(accepted > 100 && rejected > 100);
}

static void test_reber_batch(void **state)
{
    (void)state;
    struct tg_task *task = new_task("reber", NULL);
    assert_int_equal(tg_task_in_dim(task), 7);
    assert_int_equal(tg_task_n_classes(task), 7);
    assert_int_equal(tg_task_max_T(task), 39);
    assert_false(tg_task_uses_tokens(task));
    assert_false(tg_task_is_regression(task));
    struct tg_batch b;
    assert_int_equal(tg_batch_alloc(task, 16, &b), TG_OK);
    struct tg_rng rng;
    tg_rng_seed(&rng, 3);
    int32_t s[64];
    for (int it = 0; it < 50; it++) {
        assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
        int maxlen = 0;
        for (int j = 0; j < b.B; j++) {
            int steps = b.lengths[j];
            maxlen = steps > maxlen ? steps : maxlen;
            assert_int_equal(b.reset[j], 1);
            for (int t = 0; t < b.T; t++) {
                size_t i = (size_t)t * b.B + j;
                const double *x = b.x + i * 7;
                double sum = 0;
                for (int k = 0; k < 7; k++) sum += x[k];
                if (t < steps) {
                    assert_true(sum == 1.0 && x[b.tokens[i]] == 1.0);
                    s[t] = b.tokens[i];
                    assert_true(b.labels[i] >= 0 && b.labels[i] < 7);
                    assert_true((b.allowed[i] >> b.labels[i]) & 1);
                    if (t + 1 < steps) assert_int_equal(b.labels[i], b.tokens[i + b.B]);
                } else {
                    assert_true(sum == 0.0);
                    assert_int_equal(b.labels[i], -1);
                    assert_int_equal(b.allowed[i], 0);
                    assert_int_equal(b.tokens[i], 0);
                }
            }
            s[steps] = b.labels[(size_t)(steps - 1) * b.B + j];
            assert_int_equal(tg_reber_check(s, steps + 1, 1, NULL), 1);
        }
        assert_int_equal(b.T, maxlen);
    }
    tg_batch_free(&b);
    tg_batch_free(&b); /* twice is fine */
    tg_task_free(task);
}

/* ------------------------------------------------------------------ adding */

static void test_adding_batch(void **state)
{
    (void)state;
    struct tg_task_config cfg = {.length = 50};
    struct tg_task *task = new_task("adding", &cfg);
    assert_int_equal(tg_task_in_dim(task), 2);
    assert_int_equal(tg_task_out_dim(task), 1);
    assert_true(tg_task_is_regression(task));
    struct tg_batch b;
    assert_int_equal(tg_batch_alloc(task, 32, &b), TG_OK);
    assert_null(b.labels);
    assert_null(b.tokens);
    struct tg_rng rng;
    tg_rng_seed(&rng, 11);
    double sq = 0, mean = 0;
    int count = 0, first_hits[50] = {0};
    for (int it = 0; it < 200; it++) {
        assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
        assert_int_equal(b.T, 50);
        for (int j = 0; j < b.B; j++) {
            int markers = 0, m1 = -1, m2 = -1;
            double sum = 0;
            for (int t = 0; t < b.T; t++) {
                const double *x = b.x + ((size_t)t * b.B + j) * 2;
                assert_true(x[0] >= 0.0 && x[0] < 1.0);
                assert_true(x[1] == 0.0 || x[1] == 1.0);
                if (x[1] == 1.0) {
                    markers++;
                    sum += x[0];
                    if (m1 < 0) m1 = t;
                    else m2 = t;
                }
            }
            assert_int_equal(markers, 2);
            assert_true(m1 < 25 && m2 >= 25);
            first_hits[m1]++;
            assert_true(b.target[j] == sum);
            sq += (1.0 - b.target[j]) * (1.0 - b.target[j]);
            mean += b.target[j];
            count++;
        }
    }
    /* predicting 1 costs Var(u + u') = 1/6 on average; the mean target is 1 */
    assert_true(fabs(sq / count - 1.0 / 6.0) < 0.01);
    assert_true(fabs(mean / count - 1.0) < 0.02);
    for (int t = 0; t < 25; t++) assert_true(first_hits[t] > 0); /* whole first half used */

    /* metrics: exact outputs → 0; off by 0.5 → 0.25; accumulated over batches */
    struct tg_metrics m;
    tg_metrics_reset(task, &m);
    assert_int_equal(m.n, 1);
    assert_string_equal(m.names[0], "mse");
    assert_true(isnan(m.values[0]));
    assert_false(tg_task_solved(task, &m));
    double out[32];
    for (int j = 0; j < 32; j++) out[j] = b.target[j];
    tg_task_metrics(task, &b, out, &m);
    assert_true(m.values[0] == 0.0);
    assert_true(tg_task_solved(task, &m));
    for (int j = 0; j < 32; j++) out[j] = b.target[j] + 0.5;
    tg_task_metrics(task, &b, out, &m);
    assert_true(fabs(m.values[0] - 0.125) < 1e-12);
    assert_false(tg_task_solved(task, &m));
    tg_batch_free(&b);
    tg_task_free(task);
}

/* ------------------------------------------------------------------ copy */

static void test_copy_batch(void **state)
{
    (void)state;
    struct tg_task_config cfg = {.length = 7, .copy_symbols = 4, .copy_alphabet = 6};
    struct tg_task *task = new_task("copy", &cfg);
    const int K = 4, L = 7, A = 6, T = 2 * K + L + 1;
    assert_int_equal(tg_task_max_T(task), T);
    assert_int_equal(tg_task_in_dim(task), A + 2);
    assert_int_equal(tg_task_n_classes(task), A);
    struct tg_batch b;
    assert_int_equal(tg_batch_alloc(task, 8, &b), TG_OK);
    struct tg_rng rng;
    tg_rng_seed(&rng, 5);
    int seen[6] = {0};
    for (int it = 0; it < 30; it++) {
        assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
        assert_int_equal(b.T, T);
        for (int j = 0; j < b.B; j++) {
            for (int t = 0; t < T; t++) {
                size_t i = (size_t)t * b.B + j;
                int32_t tok = b.tokens[i];
                assert_true(b.x[i * (A + 2) + tok] == 1.0);
                if (t < K) {
                    assert_true(tok >= 0 && tok < A);
                    seen[tok]++;
                } else if (t == K + L) {
                    assert_int_equal(tok, A + 1);
                } else {
                    assert_int_equal(tok, A);
                }
                if (t > K + L)
                    assert_int_equal(b.labels[i], b.tokens[(size_t)(t - K - L - 1) * b.B + j]);
                else
                    assert_int_equal(b.labels[i], -1);
            }
        }
    }
    for (int a = 0; a < A; a++) assert_true(seen[a] > 0);

    /* metrics: perfect one-hot answers, then one wrong answer in sequence 0 */
    double *p = calloc((size_t)T * b.B * A, sizeof *p);
    for (size_t i = 0; i < (size_t)T * b.B; i++)
        p[i * A + (b.labels[i] >= 0 ? b.labels[i] : 0)] = 1.0;
    struct tg_metrics m;
    tg_metrics_reset(task, &m);
    tg_task_metrics(task, &b, p, &m);
    assert_true(m.values[0] == 1.0 && m.values[1] == 1.0);
    assert_true(tg_task_solved(task, &m));
    size_t i0 = (size_t)(K + L + 1) * b.B; /* first answer of sequence 0 */
    int y = b.labels[i0];
    p[i0 * A + y] = 0.0;
    p[i0 * A + (y + 1) % A] = 1.0;
    tg_metrics_reset(task, &m);
    tg_task_metrics(task, &b, p, &m);
    assert_true(fabs(m.values[0] - (1.0 - 1.0 / (K * b.B))) < 1e-12);
    assert_true(fabs(m.values[1] - (1.0 - 1.0 / b.B)) < 1e-12);
    assert_false(tg_task_solved(task, &m));
    free(p);
    tg_batch_free(&b);
    tg_task_free(task);
}

/* ------------------------------------------------------------------ text */

static void test_text_batch(void **state)
{
    (void)state;
    const char *txt = "hello world, this is a small corpus for the text task.\nzebra QUIZ!\n";
    size_t n = strlen(txt);
    char *path = write_temp(txt, n);
    struct tg_task_config cfg = {.data_path = path, .seq = 10};
    struct tg_task *task = new_task("text", &cfg);
    assert_true(tg_task_uses_tokens(task));
    int V = tg_task_vocab_size(task);
    assert_int_equal(tg_task_n_classes(task), V);
    assert_int_equal(tg_task_in_dim(task), V);
    /* vocabulary: sorted distinct bytes, index ↔ byte round trip */
    int distinct = 0, present[256] = {0};
    for (size_t i = 0; i < n; i++) present[(unsigned char)txt[i]] = 1;
    for (int c = 0; c < 256; c++) distinct += present[c];
    assert_int_equal(V, distinct);
    for (int k = 0; k < V; k++) {
        if (k > 0) assert_true(tg_task_vocab_char(task, k) > tg_task_vocab_char(task, k - 1));
        assert_int_equal(tg_task_vocab_index(task, tg_task_vocab_char(task, k)), k);
    }
    assert_int_equal(tg_task_vocab_index(task, '#'), -1);
    assert_int_equal(tg_task_vocab_char(task, V), -1);
    int64_t dn;
    const uint8_t *data = tg_task_text_data(task, &dn);
    assert_int_equal(dn, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tg_task_vocab_char(task, data[i]), (unsigned char)txt[i]);

    /* random windows: consecutive file bytes, labels the next ones */
    struct tg_batch b;
    assert_int_equal(tg_batch_alloc(task, 6, &b), TG_OK);
    assert_null(b.x);
    struct tg_rng rng;
    tg_rng_seed(&rng, 17);
    int starts_seen[128] = {0};
    for (int it = 0; it < 300; it++) {
        assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
        assert_int_equal(b.T, 10);
        for (int j = 0; j < b.B; j++) {
            char win[12];
            for (int t = 0; t < 10; t++)
                win[t] = (char)tg_task_vocab_char(task, b.tokens[(size_t)t * b.B + j]);
            win[10] = (char)tg_task_vocab_char(task, b.labels[(size_t)9 * b.B + j]);
            win[11] = '\0';
            const char *at = strstr(txt, win);
            assert_non_null(at);
            size_t p = (size_t)(at - txt);
            starts_seen[p] = 1;
            for (int t = 0; t < 10; t++) {
                assert_int_equal(tg_task_vocab_char(task, b.tokens[(size_t)t * b.B + j]),
                                 (unsigned char)txt[p + t]);
                assert_int_equal(tg_task_vocab_char(task, b.labels[(size_t)t * b.B + j]),
                                 (unsigned char)txt[p + t + 1]);
            }
        }
    }
    assert_true(starts_seen[0] && starts_seen[n - 11]); /* both ends reachable */

    /* metrics: one-hot on the label → 0 bits, accuracy 1; uniform → log2 V bits */
    double *pr = calloc((size_t)10 * b.B * V, sizeof *pr);
    for (size_t i = 0; i < (size_t)10 * b.B; i++) pr[i * V + b.labels[i]] = 1.0;
    struct tg_metrics m;
    tg_metrics_reset(task, &m);
    assert_string_equal(m.names[0], "bpc");
    tg_task_metrics(task, &b, pr, &m);
    assert_true(m.values[0] == 0.0 && m.values[1] == 1.0);
    assert_false(tg_task_solved(task, &m));
    for (size_t i = 0; i < (size_t)10 * b.B * V; i++) pr[i] = 1.0 / V;
    tg_metrics_reset(task, &m);
    tg_task_metrics(task, &b, pr, &m);
    assert_true(fabs(m.values[0] - log2((double)V)) < 1e-9);
    for (size_t i = 0; i < (size_t)10 * b.B * V; i++) pr[i] = 0.0; /* p(label) = 0: finite */
    tg_task_metrics(task, &b, pr, &m);
    assert_true(isfinite(m.values[0]));
    free(pr);
    tg_batch_free(&b);
    tg_task_free(task);

    /* sequential: row b continues where it stopped, and restarts (reset) after C chunks */
    cfg.sequential = 1;
    cfg.seq = 5;
    task = new_task("text", &cfg);
    data = tg_task_text_data(task, &dn);
    const int B = 3;
    assert_int_equal(tg_batch_alloc(task, B, &b), TG_OK);
    int64_t S = (int64_t)n / B, C = (S - 1) / 5;
    for (int64_t it = 0; it < 3 * C; it++) {
        assert_int_equal(tg_task_cursor(task), it);
        assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
        int64_t c = it % C;
        for (int j = 0; j < B; j++) {
            assert_int_equal(b.reset[j], c == 0);
            int64_t p = j * S + c * 5;
            for (int t = 0; t < 5; t++) {
                assert_int_equal(b.tokens[(size_t)t * B + j], data[p + t]);
                assert_int_equal(b.labels[(size_t)t * B + j], data[p + t + 1]);
            }
        }
    }
    /* the cursor alone reproduces a batch */
    tg_task_set_cursor(task, 1);
    assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
    assert_int_equal(b.tokens[0], data[5]);
    assert_int_equal(b.reset[0], 0);
    tg_batch_free(&b);
    /* too many streams for the file */
    assert_int_equal(tg_batch_alloc(task, 100, &b), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "too short"));
    tg_task_free(task);
    unlink(path);
    free(path);
}

/* ------------------------------------------------------------------ determinism */

/* FNV-1a over a batch's meaningful contents, to tell consecutive batches apart. */
static uint64_t batch_hash(const struct tg_batch *b)
{
    uint64_t h = 1469598103934665603ULL;
    size_t tb = (size_t)b->T * b->B;
    const void *parts[3] = {b->x, b->tokens, b->target};
    size_t sizes[3] = {tb * b->in_dim * sizeof(double), tb * sizeof(int32_t),
                       b->B * sizeof(double)};
    for (int k = 0; k < 3; k++) {
        const unsigned char *p = parts[k];
        for (size_t i = 0; p && i < sizes[k]; i++) h = (h ^ p[i]) * 1099511628211ULL;
    }
    return h;
}

static void test_same_seed_same_batch(void **state)
{
    (void)state;
    const char *txt = "the quick brown fox jumps over the lazy dog, again and again and again";
    char *path = write_temp(txt, strlen(txt));
    const char *names[] = {"reber", "adding", "copy", "text"};
    for (int k = 0; k < 4; k++) {
        struct tg_task_config cfg = {.data_path = path, .seq = 8, .length = 30};
        struct tg_task *t1 = new_task(names[k], &cfg), *t2 = new_task(names[k], &cfg);
        struct tg_batch a, b;
        assert_int_equal(tg_batch_alloc(t1, 9, &a), TG_OK);
        assert_int_equal(tg_batch_alloc(t2, 9, &b), TG_OK);
        struct tg_rng r1, r2;
        tg_rng_seed(&r1, 1234);
        tg_rng_seed(&r2, 1234);
        uint64_t sums[5];
        for (int it = 0; it < 5; it++) {
            assert_int_equal(tg_task_next_batch(t1, &r1, &a), TG_OK);
            assert_int_equal(tg_task_next_batch(t2, &r2, &b), TG_OK);
            assert_int_equal(a.T, b.T);
            size_t tb = (size_t)a.max_T * a.B;
            if (a.x) assert_memory_equal(a.x, b.x, tb * a.in_dim * sizeof *a.x);
            if (a.tokens) assert_memory_equal(a.tokens, b.tokens, tb * sizeof *a.tokens);
            if (a.labels) assert_memory_equal(a.labels, b.labels, tb * sizeof *a.labels);
            if (a.target) assert_memory_equal(a.target, b.target, a.B * sizeof *a.target);
            if (a.allowed) assert_memory_equal(a.allowed, b.allowed, tb);
            assert_memory_equal(a.lengths, b.lengths, a.B * sizeof *a.lengths);
            assert_memory_equal(r1.s, r2.s, sizeof r1.s);
            sums[it] = batch_hash(&a);
        }
        for (int it = 1; it < 5; it++) assert_true(sums[it] != sums[0]); /* the stream moves on */
        tg_batch_free(&a);
        tg_batch_free(&b);
        tg_task_free(t1);
        tg_task_free(t2);
    }
    unlink(path);
    free(path);
}

/* ------------------------------------------------------------------ reber metrics */

static void test_reber_metrics(void **state)
{
    (void)state;
    struct tg_task *task = new_task("reber", NULL);
    struct tg_batch b;
    assert_int_equal(tg_batch_alloc(task, 10, &b), TG_OK);
    struct tg_rng rng;
    tg_rng_seed(&rng, 21);
    assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
    size_t tb = (size_t)b.T * b.B;
    double *p = calloc(tb * 7, sizeof *p);

    /* the ideal predictor: uniform over the allowed set (½ each at a branch, 1 at the repeat) */
    for (size_t i = 0; i < tb; i++) {
        int cnt = __builtin_popcount(b.allowed[i]);
        for (int k = 0; k < 7; k++)
            p[i * 7 + k] = cnt && ((b.allowed[i] >> k) & 1) ? 1.0 / cnt : 0.0;
    }
    struct tg_metrics m;
    tg_metrics_reset(task, &m);
    assert_int_equal(m.n, 3);
    assert_string_equal(m.names[0], "long_acc");
    assert_string_equal(m.names[1], "grammatical");
    tg_task_metrics(task, &b, p, &m);
    assert_true(m.values[0] == 1.0 && m.values[1] == 1.0 && m.values[2] == 1.0);
    assert_true(tg_task_solved(task, &m));
    int labelled = 0;
    for (int j = 0; j < b.B; j++) labelled += b.lengths[j];
    assert_true(m.den[1] == labelled && m.den[0] == b.B);

    /* wrong at the long-range step of every string: the other of T/P gets probability 1 */
    for (int j = 0; j < b.B; j++) {
        size_t i = (size_t)(b.lengths[j] - 2) * b.B + j;
        int y = b.labels[i];
        assert_true(y == 1 || y == 2);
        p[i * 7 + y] = 0.0;
        p[i * 7 + (3 - y)] = 1.0;
    }
    tg_metrics_reset(task, &m);
    tg_task_metrics(task, &b, p, &m);
    assert_true(m.values[0] == 0.0);
    assert_true(fabs(m.values[1] - (1.0 - (double)b.B / labelled)) < 1e-12);
    assert_true(m.values[2] == 0.0);
    assert_false(tg_task_solved(task, &m));

    /* a flat output (p = 1/7 < 0.3 everywhere) passes only where its argmax, B (index 0), is
     * the allowed symbol: the one step after the second symbol of each string */
    for (size_t i = 0; i < tb * 7; i++) p[i] = 1.0 / 7.0;
    tg_metrics_reset(task, &m);
    tg_task_metrics(task, &b, p, &m);
    assert_true(fabs(m.values[1] - (double)b.B / labelled) < 1e-12);

    /* a 0.35 leak to a disallowed symbol breaks grammaticality; 0.25 does not */
    for (size_t i = 0; i < tb; i++) {
        int cnt = __builtin_popcount(b.allowed[i]);
        for (int k = 0; k < 7; k++)
            p[i * 7 + k] = cnt && ((b.allowed[i] >> k) & 1) ? 1.0 / cnt : 0.0;
    }
    size_t i1 = (size_t)1 * b.B; /* step 1 of string 0: only B allowed */
    assert_int_equal(b.allowed[i1], 1);
    p[i1 * 7 + 0] = 0.75;
    p[i1 * 7 + 4] = 0.25;
    tg_metrics_reset(task, &m);
    tg_task_metrics(task, &b, p, &m);
    assert_true(m.values[1] == 1.0);
    p[i1 * 7 + 0] = 0.65;
    p[i1 * 7 + 4] = 0.35;
    tg_metrics_reset(task, &m);
    tg_task_metrics(task, &b, p, &m);
    assert_true(fabs(m.values[1] - (1.0 - 1.0 / labelled)) < 1e-12);
    assert_true(fabs(m.values[2] - (1.0 - 1.0 / b.B)) < 1e-12);
    assert_true(m.values[0] == 1.0);
    assert_non_null(strstr(tg_task_solved_desc(task), "0.99"));
    free(p);
    tg_batch_free(&b);
    tg_task_free(task);
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void **state)
{
    (void)state;
    struct tg_task *task = (struct tg_task *)1;
    assert_int_equal(tg_task_new("foo", NULL, &task), TG_ERR_VALUE);
    assert_null(task);
    assert_string_equal(tg_last_error(),
                        "tg_task_new: unknown task 'foo' (expected reber, adding, copy, text)");
    assert_int_equal(tg_task_new(NULL, NULL, &task), TG_ERR_VALUE);

    assert_int_equal(tg_task_new("text", NULL, &task), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "--data"));

    struct tg_task_config cfg = {.data_path = "/nonexistent/dir/corpus.txt"};
    assert_int_equal(tg_task_new("text", &cfg, &task), TG_ERR_IO);
    assert_non_null(strstr(tg_last_error(), "/nonexistent/dir/corpus.txt"));
    assert_non_null(strstr(tg_last_error(), "No such file"));

    cfg.data_path = "/tmp";
    assert_int_equal(tg_task_new("text", &cfg, &task), TG_ERR_IO);

    char *empty = write_temp("", 0);
    cfg.data_path = empty;
    assert_int_equal(tg_task_new("text", &cfg, &task), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "is empty"));
    unlink(empty);
    free(empty);

    char *tiny = write_temp("abcdef", 6);
    cfg.data_path = tiny;
    cfg.seq = 10;
    assert_int_equal(tg_task_new("text", &cfg, &task), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "has 6 bytes, fewer than seq+1 = 11"));
    cfg.seq = 5; /* exactly seq+1 bytes is enough: one window */
    assert_int_equal(tg_task_new("text", &cfg, &task), TG_OK);
    struct tg_batch b;
    struct tg_rng rng;
    tg_rng_seed(&rng, 1);
    assert_int_equal(tg_batch_alloc(task, 2, &b), TG_OK);
    assert_int_equal(tg_task_next_batch(task, &rng, &b), TG_OK);
    assert_int_equal(b.tokens[0], 0);
    assert_int_equal(b.labels[4 * 2], 5);
    tg_batch_free(&b);
    tg_task_free(task);
    unlink(tiny);
    free(tiny);

    struct tg_task_config bad = {.length = -3};
    assert_int_equal(tg_task_new("adding", &bad, &task), TG_ERR_VALUE);
    bad = (struct tg_task_config){.length = 1};
    assert_int_equal(tg_task_new("adding", &bad, &task), TG_ERR_VALUE);
    bad = (struct tg_task_config){.length = 8};
    assert_int_equal(tg_task_new("reber", &bad, &task), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "reber"));
    bad = (struct tg_task_config){.copy_alphabet = 1};
    assert_int_equal(tg_task_new("copy", &bad, &task), TG_ERR_VALUE);
    bad = (struct tg_task_config){.threshold = 1.5};
    assert_int_equal(tg_task_new("reber", &bad, &task), TG_ERR_VALUE);

    /* batch misuse */
    struct tg_task *reber = new_task("reber", NULL), *adding = new_task("adding", NULL);
    assert_int_equal(tg_batch_alloc(reber, 0, &b), TG_ERR_VALUE);
    assert_int_equal(tg_batch_alloc(adding, 4, &b), TG_OK);
    assert_int_equal(tg_task_next_batch(reber, &rng, &b), TG_ERR_STATE);
    assert_non_null(strstr(tg_last_error(), "reber"));
    tg_batch_free(&b);
    assert_int_equal(tg_task_next_batch(reber, &rng, &b), TG_ERR_STATE); /* freed batch */
    assert_int_equal(tg_task_next_batch(reber, NULL, &b), TG_ERR_VALUE);
    tg_task_free(reber);
    tg_task_free(adding);
    tg_task_free(NULL);
}

/* The defaults and the effective configuration. */
static void test_defaults(void **state)
{
    (void)state;
    struct tg_task *t = new_task("adding", NULL);
    assert_int_equal(tg_task_max_T(t), 100);
    assert_int_equal(tg_task_kind(t), TG_TASK_ADDING);
    assert_string_equal(tg_task_name(t), "adding");
    tg_task_free(t);
    t = new_task("copy", NULL);
    assert_int_equal(tg_task_max_T(t), 2 * 5 + 20 + 1);
    assert_int_equal(tg_task_config(t)->copy_alphabet, 8);
    tg_task_free(t);
    t = new_task("reber", NULL);
    assert_true(tg_task_config(t)->threshold == 0.3);
    assert_int_equal(tg_task_config(t)->length, 40);
    assert_int_equal(tg_task_vocab_size(t), 0);
    tg_task_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reber_known_strings),
        cmocka_unit_test(test_reber_generated_valid),
        cmocka_unit_test(test_reber_validator_random),
        cmocka_unit_test(test_reber_batch),
        cmocka_unit_test(test_adding_batch),
        cmocka_unit_test(test_copy_batch),
        cmocka_unit_test(test_text_batch),
        cmocka_unit_test(test_same_seed_same_batch),
        cmocka_unit_test(test_reber_metrics),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
