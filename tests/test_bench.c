/* test_bench.c — `tapegrad bench` runs end to end on a tiny config and reports what it should.
 * Functional only: no timing is asserted (the machine is shared and noisy). What is asserted:
 * the table is printed for the three cells, the JSON is well formed with positive times, and
 * autodiff and the hand-written oracle start from the same loss (so the benchmark compares
 * equal computations); bad flags fail with exit status 1 and a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <math.h>

#include <cmocka.h>
#include <jansson.h>

#ifndef TG_BUILD_DIR
#define TG_BUILD_DIR "."
#endif

static const char *const EXE = TG_BUILD_DIR "/tools/tapegrad";

/* Run `tapegrad bench ARGS`, stdout into out (NUL-terminated), stderr to /dev/null; returns the
 * exit status, or -1 if it could not be run. */
static int run_bench(const char *args, char *out, size_t size)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' bench %s 2>/dev/null", EXE, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, size - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_tiny_run(void **state)
{
    (void)state;
    if (access(EXE, X_OK) != 0) skip();
    char json_path[] = "/tmp/tg_test_bench_XXXXXX";
    int fd = mkstemp(json_path);
    assert_true(fd >= 0);
    close(fd);
    static char out[1 << 16];
    char args[256];
    snprintf(args, sizeof args, "--config T5B2H8 --repeats 2 --warmup 1 --json %s", json_path);
    assert_int_equal(run_bench(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "tapegrad bench"));
    assert_non_null(strstr(out, "%sgemm"));
    assert_non_null(strstr(out, "Tape and memory"));
    const char *cells[3] = {"lstm", "gru", "rnn_tanh"};
    for (int i = 0; i < 3; i++) {
        char row[64];
        snprintf(row, sizeof row, "\n%-8s T5B2H8", cells[i]);
        assert_non_null(strstr(out, row));
    }
    assert_null(strstr(out, "first-step losses differ"));

    json_error_t err;
    json_t *root = json_load_file(json_path, 0, &err);
    unlink(json_path);
    assert_non_null(root);
    json_t *res = json_object_get(root, "results");
    assert_true(json_is_array(res));
    assert_int_equal(json_array_size(res), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *r = json_array_get(res, i);
        assert_string_equal(json_string_value(json_object_get(r, "config")), "T5B2H8");
        json_t *ad = json_object_get(r, "tapegrad"), *man = json_object_get(r, "manual");
        assert_true(json_number_value(json_object_get(ad, "median_ms")) > 0);
        assert_true(json_number_value(json_object_get(man, "median_ms")) > 0);
        assert_int_equal(json_integer_value(json_object_get(ad, "repeats")), 2);
        assert_true(json_integer_value(json_object_get(r, "nodes")) > 0);
        double la = json_number_value(json_object_get(r, "loss_tapegrad"));
        double lm = json_number_value(json_object_get(r, "loss_manual"));
        assert_true(la > 0);
        assert_true(fabs(la - lm) <= 1e-4 * fabs(lm));
        /* the tape holds at least the activations a backward pass needs */
        assert_true(json_integer_value(json_object_get(r, "arena_bytes")) >=
                    json_integer_value(json_object_get(r, "arena_min_bytes")));
    }
    json_decref(root);
}

static void test_bad_flags(void **state)
{
    (void)state;
    if (access(EXE, X_OK) != 0) skip();
    static char out[1 << 12];
    assert_int_equal(run_bench("--config T5B2", out, sizeof out), 1);
    assert_int_equal(run_bench("--cell lstm2", out, sizeof out), 1);
    assert_int_equal(run_bench("--threads 0", out, sizeof out), 1);
    assert_int_equal(run_bench("--config none", out, sizeof out), 1);
    assert_int_equal(run_bench("--config T5B2H8 --json /nonexistent-dir/x.json", out, sizeof out), 1);
    assert_int_equal(run_bench("--help", out, sizeof out), 0);
    assert_non_null(strstr(out, "--scaling"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_run),
        cmocka_unit_test(test_bad_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
