/* test_safetensors.c — the safetensors reader and writer: round trips, every validation rule,
 * truncated and mutated files (never a crash), atomic saves that leave the old file intact on
 * failure, typed getters, and a file written by an independent Python writer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapegrad.h"
#include "tapegrad_safetensors.h"

/* ------------------------------------------------------------------ helpers */

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/tg_st_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s'; rm -rf '%s'", tmpdir, tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *tpath(const char *name)
{
    static char buf[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (n) assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *n = (size_t)len;
    return b;
}

/* A file made of header length, the given header text and data_len pattern bytes. */
static void make_file(const char *path, const char *header, size_t data_len)
{
    size_t hl = strlen(header), n = 8 + hl + data_len;
    unsigned char *b = malloc(n);
    assert_non_null(b);
    uint64_t h = hl;
    memcpy(b, &h, 8);
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (unsigned char)(i * 7 + 1);
    write_bytes(path, b, n);
    free(b);
}

/* tg_st_read must fail with `status`, leave *out NULL and mention every given substring. */
static void expect_read_error(const char *path, enum tg_status status, const char *s1,
                              const char *s2)
{
    struct tg_st_file *f = (struct tg_st_file *)0x1;
    enum tg_status st = tg_st_read(path, &f);
    if (st != status) fprintf(stderr, "for %s: got %d (%s)\n", path, st, tg_last_error());
    assert_int_equal(st, status);
    assert_null(f);
    const char *msg = tg_last_error();
    if ((s1 && !strstr(msg, s1)) || (s2 && !strstr(msg, s2)))
        fprintf(stderr, "message \"%s\" lacks \"%s\" / \"%s\"\n", msg, s1 ? s1 : "", s2 ? s2 : "");
    if (s1) assert_non_null(strstr(msg, s1));
    if (s2) assert_non_null(strstr(msg, s2));
    assert_non_null(strstr(msg, path));
    assert_null(strchr(msg, '\n'));
}

static int count_tmp_files(void)
{
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

/* A small valid file with metadata and three dtypes; returns its path. */
static const char *small_file(void)
{
    struct tg_st_writer *w = tg_st_writer_new();
    float a[6] = {1, 2, 3, 4, 5, 6};
    double b[3] = {0.5, -1.25, 1e300};
    int64_t c[2] = {-7, INT64_MAX};
    int64_t sa[2] = {2, 3}, sb[1] = {3}, sc[1] = {2};
    assert_int_equal(tg_st_writer_add(w, "a", TG_ST_F32, 2, sa, a), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "b", TG_ST_F64, 1, sb, b), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "c", TG_ST_I64, 1, sc, c), TG_OK);
    assert_int_equal(tg_st_writer_meta(w, "format", "pt"), TG_OK);
    const char *p = tpath("small.safetensors");
    assert_int_equal(tg_st_writer_save(w, p), TG_OK);
    tg_st_writer_free(w);
    return p;
}

/* ------------------------------------------------------------------ round trip */

/* Tensor `name` of f has this dtype, shape and content, and its data is aligned. */
static void check_tensor(const struct tg_st_file *f, const char *name, enum tg_st_dtype dt,
                         int ndim, const int64_t *shape, const void *data, size_t nbytes)
{
    const struct tg_st_tensor *t = tg_st_find(f, name);
    assert_non_null(t);
    assert_string_equal(t->name, name);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    for (int k = 0; k < ndim; k++) assert_int_equal(t->shape[k], shape[k]);
    assert_int_equal(t->nbytes, nbytes);
    assert_int_equal((uint64_t)tg_st_numel(t) * tg_st_dtype_size(dt), nbytes);
    if (nbytes) assert_memory_equal(t->data, data, nbytes);
    assert_int_equal((uintptr_t)t->data % tg_st_dtype_size(dt), 0);
}

static void test_round_trip(void **state)
{
    (void)state;
    float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    double f64[5] = {3.141592653589793, -1e-300, 2.0, 1.0 / 3.0, -0.0};
    int64_t i64[4] = {INT64_MIN, -1, 0, INT64_MAX};
    int32_t i32[3] = {INT32_MIN, 5, INT32_MAX};
    double scalar = 42.125;
    float odd[3] = {7, 8, 9}; /* 12 bytes: would misalign what follows if written first */
    int64_t s_f32[2] = {2, 3}, s_f64[1] = {5}, s_i64[2] = {2, 2}, s_i32[1] = {3};
    int64_t s_empty[2] = {0, 4}, s_odd[1] = {3};

    struct tg_st_writer *w = tg_st_writer_new();
    assert_non_null(w);
    /* Added out of name order on purpose. */
    assert_int_equal(tg_st_writer_add(w, "z.odd", TG_ST_F32, 1, s_odd, odd), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "rnn.weight", TG_ST_F32, 2, s_f32, f32), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "a.f64", TG_ST_F64, 1, s_f64, f64), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "ids", TG_ST_I64, 2, s_i64, i64), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "counts", TG_ST_I32, 1, s_i32, i32), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "loss", TG_ST_F64, 0, NULL, &scalar), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "empty", TG_ST_F32, 2, s_empty, NULL), TG_OK);
    assert_int_equal(tg_st_writer_meta(w, "quote\"d", "π \"x\"\n\\"), TG_OK);
    assert_int_equal(tg_st_writer_meta(w, "cell", "lstm"), TG_OK);
    assert_int_equal(tg_st_writer_meta(w, "cell", "gru"), TG_OK); /* replaces */
    const char *p = tpath("rt.safetensors"), *p2 = tpath("rt2.safetensors");
    assert_int_equal(tg_st_writer_save(w, p), TG_OK);
    assert_int_equal(tg_st_writer_save(w, p2), TG_OK);
    tg_st_writer_free(w);
    /* Determinism: the second save gives the same bytes. The header comes first, padded to a
     * multiple of 8, metadata (keys sorted) at its start. */
    size_t n1, n2;
    unsigned char *b1 = read_bytes(p, &n1), *b2 = read_bytes(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    uint64_t hl;
    memcpy(&hl, b1, 8);
    assert_int_equal(hl % 8, 0);
    assert_true(8 + hl <= n1);
    assert_memory_equal(b1 + 8, "{\"__metadata__\":{\"cell\":\"gru\",\"quote", 36);
    free(b1);
    free(b2);
    assert_int_equal(count_tmp_files(), 0);

    struct tg_st_file *f = NULL;
    assert_int_equal(tg_st_read(p, &f), TG_OK);
    assert_string_equal(tg_st_path(f), p);
    assert_int_equal(tg_st_count(f), 7);
    const char *order[] = {"a.f64", "counts", "empty", "ids", "loss", "rnn.weight", "z.odd"};
    for (int i = 0; i < 7; i++) {
        assert_string_equal(tg_st_at(f, i)->name, order[i]);
        assert_ptr_equal(tg_st_find(f, order[i]), tg_st_at(f, i));
    }
    assert_null(tg_st_at(f, 7));
    assert_null(tg_st_at(f, -1));
    assert_null(tg_st_find(f, "nope"));
    assert_null(tg_st_find(f, ""));
    check_tensor(f, "rnn.weight", TG_ST_F32, 2, s_f32, f32, sizeof f32);
    check_tensor(f, "a.f64", TG_ST_F64, 1, s_f64, f64, sizeof f64);
    check_tensor(f, "ids", TG_ST_I64, 2, s_i64, i64, sizeof i64);
    check_tensor(f, "counts", TG_ST_I32, 1, s_i32, i32, sizeof i32);
    check_tensor(f, "loss", TG_ST_F64, 0, NULL, &scalar, 8);
    check_tensor(f, "empty", TG_ST_F32, 2, s_empty, NULL, 0);
    check_tensor(f, "z.odd", TG_ST_F32, 1, s_odd, odd, sizeof odd);
    assert_int_equal(tg_st_meta_count(f), 2);
    assert_string_equal(tg_st_meta(f, "cell"), "gru");
    assert_string_equal(tg_st_meta(f, "quote\"d"), "π \"x\"\n\\");
    assert_null(tg_st_meta(f, "absent"));
    assert_string_equal(tg_st_meta_key(f, 0), "cell");
    assert_null(tg_st_meta_key(f, 2));
    tg_st_close(f);
    tg_st_close(NULL);

    /* An empty writer gives a valid file with no tensors. */
    w = tg_st_writer_new();
    assert_int_equal(tg_st_writer_save(w, tpath("empty.safetensors")), TG_OK);
    tg_st_writer_free(w);
    assert_int_equal(tg_st_read(tpath("empty.safetensors"), &f), TG_OK);
    assert_int_equal(tg_st_count(f) + tg_st_meta_count(f), 0);
    tg_st_close(f);
}

/* ------------------------------------------------------------------ tensors in and out */

static void test_writer_add_tensor(void **state)
{
    (void)state;
    struct tg_tensor *x = tg_tensor_new_heap(2, 3, TG_F32), *y = tg_tensor_new_heap(1, 1, TG_F64);
    for (int i = 0; i < 6; i++) ((float *)x->data)[i] = (float)i + 0.5f;
    ((double *)y->data)[0] = -3.5;
    struct tg_st_writer *w = tg_st_writer_new();
    int64_t s2[2] = {2, 3}, s1[1] = {6}, s3[3] = {1, 2, 3}, bad[2] = {4, 2};
    assert_int_equal(tg_st_writer_add_tensor(w, "x2", x, 2, NULL), TG_OK);
    assert_int_equal(tg_st_writer_add_tensor(w, "x1", x, 1, NULL), TG_OK);
    assert_int_equal(tg_st_writer_add_tensor(w, "x3", x, 3, s3), TG_OK);
    assert_int_equal(tg_st_writer_add_tensor(w, "y", y, 0, NULL), TG_OK);
    assert_int_equal(tg_st_writer_save(w, tpath("t.safetensors")), TG_OK);
    tg_st_writer_free(w);
    struct tg_st_file *f;
    assert_int_equal(tg_st_read(tpath("t.safetensors"), &f), TG_OK);
    check_tensor(f, "x2", TG_ST_F32, 2, s2, x->data, 24);
    check_tensor(f, "x1", TG_ST_F32, 1, s1, x->data, 24);
    check_tensor(f, "x3", TG_ST_F32, 3, s3, x->data, 24);
    check_tensor(f, "y", TG_ST_F64, 0, NULL, y->data, 8);
    tg_st_close(f);

    /* A shape that does not hold the tensor fails, and so does the save afterwards. */
    w = tg_st_writer_new();
    assert_int_equal(tg_st_writer_add_tensor(w, "x", x, 2, bad), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "'x'"));
    assert_int_equal(tg_st_writer_add_tensor(w, "x0", x, 0, NULL), TG_ERR_SHAPE);
    assert_int_equal(tg_st_writer_save(w, tpath("never.safetensors")), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "[4, 2]"));
    assert_int_equal(access(tpath("never.safetensors"), F_OK), -1);
    tg_st_writer_free(w);
    tg_tensor_free(x);
    tg_tensor_free(y);
}

static void test_writer_errors(void **state)
{
    (void)state;
    double d[2] = {1, 2};
    int64_t s1[1] = {2}, neg[1] = {-2}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 2};
    struct tg_st_writer *w = tg_st_writer_new();
    assert_int_equal(tg_st_writer_add(w, "d", TG_ST_F64, 1, s1, d), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "d", TG_ST_F64, 1, s1, d), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "duplicate"));
    assert_int_equal(tg_st_writer_add(w, "__metadata__", TG_ST_F64, 1, s1, d), TG_ERR_VALUE);
    assert_int_equal(tg_st_writer_add(w, "bad\xff", TG_ST_F64, 1, s1, d), TG_ERR_VALUE);
    assert_int_equal(tg_st_writer_add(w, NULL, TG_ST_F64, 1, s1, d), TG_ERR_VALUE);
    assert_int_equal(tg_st_writer_add(w, "n", TG_ST_F64, 1, neg, d), TG_ERR_SHAPE);
    assert_int_equal(tg_st_writer_add(w, "n", TG_ST_F64, 9, nine, d), TG_ERR_SHAPE);
    assert_int_equal(tg_st_writer_add(w, "n", TG_ST_F64, 1, NULL, d), TG_ERR_SHAPE);
    assert_int_equal(tg_st_writer_add(w, "n", TG_ST_F64, 1, s1, NULL), TG_ERR_VALUE);
    assert_int_equal(tg_st_writer_add(w, "n", (enum tg_st_dtype)9, 1, s1, d), TG_ERR_DTYPE);
    assert_int_equal(tg_st_writer_meta(w, "k", "\xc3"), TG_ERR_VALUE);
    assert_int_equal(tg_st_writer_meta(w, "k", NULL), TG_ERR_VALUE);
    /* The save replays the first failure and writes nothing. */
    assert_int_equal(tg_st_writer_save(w, tpath("bad.safetensors")), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "duplicate tensor name 'd'"));
    assert_non_null(strstr(tg_last_error(), "bad.safetensors"));
    assert_int_equal(access(tpath("bad.safetensors"), F_OK), -1);
    tg_st_writer_free(w);
    tg_st_writer_free(NULL);
    assert_int_equal(tg_st_writer_add(NULL, "x", TG_ST_F64, 1, s1, d), TG_ERR_VALUE);
    assert_int_equal(tg_st_writer_save(NULL, "x"), TG_ERR_VALUE);
}

static void test_get_tensor(void **state)
{
    (void)state;
    float a[20];
    double b[24], s = 2.5;
    float c[7];
    int64_t ids[6] = {0, 1, 2, 3, 4, 5};
    int32_t small[3] = {-1, 0, 1};
    for (int i = 0; i < 20; i++) a[i] = 0.1f * (float)i - 1.0f;
    for (int i = 0; i < 24; i++) b[i] = 1.0 / (i + 1);
    for (int i = 0; i < 7; i++) c[i] = (float)i;
    int64_t sa[2] = {4, 5}, sb[3] = {2, 3, 4}, sc[1] = {7}, sid[2] = {2, 3}, ss[1] = {3};
    struct tg_st_writer *w = tg_st_writer_new();
    assert_int_equal(tg_st_writer_add(w, "rnn.weight_ih_l0", TG_ST_F32, 2, sa, a), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "x", TG_ST_F64, 3, sb, b), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "bias", TG_ST_F32, 1, sc, c), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "loss", TG_ST_F64, 0, NULL, &s), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "y", TG_ST_I64, 2, sid, ids), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "small", TG_ST_I32, 1, ss, small), TG_OK);
    const char *p = tpath("params.safetensors");
    assert_int_equal(tg_st_writer_save(w, p), TG_OK);
    tg_st_writer_free(w);
    struct tg_st_file *f;
    assert_int_equal(tg_st_read(p, &f), TG_OK);

    /* F32 → F64 (exact) with the expected shape checked. */
    struct tg_tensor *W = tg_tensor_new_heap(4, 5, TG_F64);
    assert_int_equal(tg_st_get_tensor(f, "rnn.weight_ih_l0", W, 2, sa), TG_OK);
    for (int i = 0; i < 20; i++) assert_true(((double *)W->data)[i] == (double)a[i]);
    /* F32 → F32 */
    struct tg_tensor *W32 = tg_tensor_new_heap(4, 5, TG_F32);
    assert_int_equal(tg_st_get_tensor(f, "rnn.weight_ih_l0", W32, 0, NULL), TG_OK);
    assert_memory_equal(W32->data, a, sizeof a);
    /* F64 [2,3,4] → F32 6×4 (rounded to nearest) */
    struct tg_tensor *X = tg_tensor_new_heap(6, 4, TG_F32);
    assert_int_equal(tg_st_get_tensor(f, "x", X, 3, sb), TG_OK);
    for (int i = 0; i < 24; i++) assert_true(((float *)X->data)[i] == (float)b[i]);
    /* [7] → 1×7, [] → 1×1 */
    struct tg_tensor *B = tg_tensor_new_heap(1, 7, TG_F64);
    assert_int_equal(tg_st_get_tensor(f, "bias", B, 1, sc), TG_OK);
    assert_true(((double *)B->data)[6] == 6.0);
    struct tg_tensor *L = tg_tensor_new_heap(1, 1, TG_F64);
    assert_int_equal(tg_st_get_tensor(f, "loss", L, 0, NULL), TG_OK);
    assert_true(((double *)L->data)[0] == 2.5);

    /* Wrong destination shape, wrong expected shape, missing tensor, integer dtype. */
    struct tg_tensor *Wt = tg_tensor_new_heap(5, 4, TG_F64);
    assert_int_equal(tg_st_get_tensor(f, "rnn.weight_ih_l0", Wt, 0, NULL), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_last_error(), "params.safetensors"));
    assert_non_null(strstr(tg_last_error(), "'rnn.weight_ih_l0'"));
    assert_non_null(strstr(tg_last_error(), "[4, 5]"));
    assert_non_null(strstr(tg_last_error(), "5x4"));
    int64_t other[2] = {4, 6}, flat[1] = {20};
    assert_int_equal(tg_st_get_tensor(f, "rnn.weight_ih_l0", W, 2, other), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_last_error(), "expected [4, 6]"));
    assert_int_equal(tg_st_get_tensor(f, "rnn.weight_ih_l0", W, 1, flat), TG_ERR_FORMAT);
    assert_int_equal(tg_st_get_tensor(f, "rnn.weight_hh_l0", W, 2, sa), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_last_error(), "'rnn.weight_hh_l0': not in the file"));
    assert_non_null(strstr(tg_last_error(), "params.safetensors"));
    struct tg_tensor *Y = tg_tensor_new_heap(2, 3, TG_F64);
    assert_int_equal(tg_st_get_tensor(f, "y", Y, 0, NULL), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_last_error(), "I64"));
    assert_int_equal(tg_st_get_tensor(f, "y", NULL, 0, NULL), TG_ERR_VALUE);

    /* Integer and double getters. */
    int64_t got[6];
    assert_int_equal(tg_st_get_i64(f, "y", got, 6, 2, sid), TG_OK);
    assert_memory_equal(got, ids, sizeof ids);
    assert_int_equal(tg_st_get_i64(f, "small", got, 3, 0, NULL), TG_OK);
    assert_int_equal(got[0], -1);
    assert_int_equal(got[2], 1);
    assert_int_equal(tg_st_get_i64(f, "y", got, 5, 0, NULL), TG_ERR_FORMAT);
    assert_int_equal(tg_st_get_i64(f, "loss", got, 1, 0, NULL), TG_ERR_FORMAT);
    double dv[6];
    assert_int_equal(tg_st_get_f64(f, "loss", dv, 1, 0, NULL), TG_OK);
    assert_true(dv[0] == 2.5);
    assert_int_equal(tg_st_get_f64(f, "y", dv, 6, 0, NULL), TG_OK);
    assert_true(dv[5] == 5.0);
    assert_int_equal(tg_st_get_f64(f, "nope", dv, 1, 0, NULL), TG_ERR_FORMAT);

    tg_tensor_free(W);
    tg_tensor_free(W32);
    tg_tensor_free(X);
    tg_tensor_free(B);
    tg_tensor_free(L);
    tg_tensor_free(Wt);
    tg_tensor_free(Y);
    tg_st_close(f);
}

/* ------------------------------------------------------------------ validation */

struct bad_case {
    const char *header; /* ' stands for " */
    size_t data_len;
    const char *s1, *s2; /* substrings the message must contain */
};

/* One header entry: name, dtype, shape, data_offsets. */
#define E(n, dt, sh, off) "'" n "': {'dtype': '" dt "', 'shape': " sh ", 'data_offsets': " off "}"

static const struct bad_case bad_cases[] = {
    {"[1, 2]", 0, "not a JSON object", NULL},
    {"{'a': ", 0, "not valid JSON", NULL},
    {"{'a': 5}", 0, "'a'", "not a JSON object"},
    {"{'w': {'shape': [1], 'data_offsets': [0, 4]}}", 4, "'w'", "dtype"},
    {"{'w': {'dtype': 5, 'shape': [1], 'data_offsets': [0, 4]}}", 4, "'w'", "dtype"},
    {"{'w': {'dtype': 'F32', 'data_offsets': [0, 4]}}", 4, "'w'", "shape"},
    {"{'w': {'dtype': 'F32', 'shape': [1]}}", 4, "'w'", "data_offsets"},
    {"{" E("w", "F16", "[2]", "[0, 4]") "}", 4, "'w'", "unsupported dtype 'F16'"},
    {"{" E("w", "Q7", "[2]", "[0, 4]") "}", 4, "'w'", "unsupported dtype 'Q7'"},
    {"{" E("w", "F32", "[-1]", "[0, 4]") "}", 4, "'w'", "shape entry 0"},
    {"{" E("w", "F32", "[2.5]", "[0, 4]") "}", 4, "'w'", "shape entry 0"},
    {"{" E("w", "F32", "[1, '2']", "[0, 4]") "}", 4, "'w'", "shape entry 1"},
    {"{" E("w", "F32", "4", "[0, 4]") "}", 4, "'w'", "shape"},
    {"{" E("w", "F32", "[1,1,1,1,1,1,1,1,1]", "[0, 4]") "}", 4, "'w'", "9 dimensions"},
    {"{" E("rnn.weight_ih_l0", "F32", "[4, 5]", "[0, 96]") "}", 96,
     "tensor 'rnn.weight_ih_l0': data_offsets [0, 96) but shape [4, 5] of F32 needs 80 bytes",
     NULL},
    {"{" E("w", "F64", "[4294967296, 4294967296]", "[0, 8]") "}", 8, "'w'", "too large"},
    {"{" E("w", "F64", "[2305843009213693952]", "[0, 0]") "}", 0, "'w'", "too large"},
    {"{" E("w", "F32", "[4]", "[0, 16]") "}", 8, "'w'", "beyond the 8-byte data buffer"},
    {"{" E("w", "F32", "[0]", "[9, 9]") "}", 8, "'w'", "beyond"},
    {"{" E("w", "F32", "[2]", "[8, 0]") "}", 8, "'w'", "invalid data_offsets [8, 0)"},
    {"{" E("w", "F32", "[2]", "[-8, 0]") "}", 8, "'w'", "invalid data_offsets"},
    {"{" E("w", "F32", "[2]", "[0, 8, 16]") "}", 8, "'w'", "data_offsets"},
    {"{" E("w", "F32", "[2]", "[0, 8.0]") "}", 8, "'w'", "data_offsets"},
    {"{" E("w", "F32", "[2]", "[0, 99999999999999999999999]") "}", 8, "not valid JSON", NULL},
    {"{" E("a", "F32", "[4]", "[0, 16]") ", " E("b", "F32", "[4]", "[8, 24]") "}", 24, "'b'",
     "overlap tensor 'a'"},
    {"{" E("a", "F32", "[2]", "[0, 8]") ", " E("b", "F32", "[2]", "[0, 8]") "}", 8, "overlap",
     NULL},
    {"{" E("a", "F32", "[4]", "[0, 16]") ", " E("b", "F32", "[0]", "[8, 8]") "}", 16, "'b'",
     "overlap"},
    {"{" E("a", "F32", "[2]", "[0, 8]") ", " E("b", "F32", "[2]", "[16, 24]") "}", 24, "'b'",
     "hole"},
    {"{" E("b", "F32", "[2]", "[8, 16]") "}", 16, "'b'", "hole"},
    {"{" E("a", "F32", "[2]", "[0, 8]") "}", 16, "trailing bytes", NULL},
    {"{}", 3, "trailing bytes", NULL},
    {"{" E("a", "F32", "[2]", "[0, 8]") ", " E("a", "F32", "[2]", "[0, 8]") "}", 8,
     "duplicate object key", NULL},
    {"{'__metadata__': {'k': 1}}", 0, "__metadata__ value of 'k'", NULL},
    {"{'__metadata__': ['k']}", 0, "__metadata__", "not a JSON object"},
    {"{'__metadata__': {'k': 'a\\u0000b'}}", 0, "not valid JSON", NULL},
    {"{'w\\u0000x': 1}", 0, "not valid JSON", NULL},
    {"{} x", 0, "not valid JSON", NULL},
    {"{'\xff': 1}", 0, "not valid JSON", NULL},
    {"", 0, "not valid JSON", NULL},
    {"{'\x01\x1b[31mred': 1}", 0, "not valid JSON", NULL}, /* raw control bytes in a string */
    {"{'\\u001b[31mred': 5}", 0, "'?[31mred'", NULL},     /* escaped: printed as '?' */
};

static void test_bad_headers(void **state)
{
    (void)state;
    char name[64];
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        snprintf(name, sizeof name, "bad%02zu.safetensors", i);
        const char *p = tpath(name);
        char hdr[512];
        snprintf(hdr, sizeof hdr, "%s", bad_cases[i].header);
        for (char *c = hdr; *c; c++)
            if (*c == '\'') *c = '"';
        make_file(p, hdr, bad_cases[i].data_len);
        expect_read_error(p, TG_ERR_FORMAT, bad_cases[i].s1, bad_cases[i].s2);
    }
}

static void test_bad_framing(void **state)
{
    (void)state;
    /* Shorter than the length field. */
    const char *p = tpath("short.safetensors");
    write_bytes(p, "\x10\x00\x00", 3);
    expect_read_error(p, TG_ERR_FORMAT, "too short", NULL);
    write_bytes(p, "", 0);
    expect_read_error(p, TG_ERR_FORMAT, "too short", NULL);
    /* Header length beyond the file, and absurd. */
    unsigned char b[16] = {0};
    uint64_t h = 9;
    memcpy(b, &h, 8);
    memcpy(b + 8, "{}      ", 8);
    write_bytes(p, b, 16);
    expect_read_error(p, TG_ERR_FORMAT, "header length 9 exceeds", "truncated");
    h = UINT64_MAX;
    memcpy(b, &h, 8);
    write_bytes(p, b, 16);
    expect_read_error(p, TG_ERR_FORMAT, "absurd", NULL);
    h = 0;
    memcpy(b, &h, 8);
    write_bytes(p, b, 16);
    expect_read_error(p, TG_ERR_FORMAT, "not valid JSON", NULL);
    /* A header padded with spaces is fine; so is one with no padding at all. */
    h = 8;
    memcpy(b, &h, 8);
    write_bytes(p, b, 16);
    struct tg_st_file *f;
    assert_int_equal(tg_st_read(p, &f), TG_OK);
    tg_st_close(f);
    make_file(p, "{\"__metadata__\":{}}", 0);
    assert_int_equal(tg_st_read(p, &f), TG_OK);
    tg_st_close(f);
    /* Not a file. */
    expect_read_error(tpath("does-not-exist.safetensors"), TG_ERR_IO, "cannot open", NULL);
    expect_read_error(tmpdir, TG_ERR_IO, "is a directory", NULL);
    assert_int_equal(tg_st_read(NULL, &f), TG_ERR_VALUE);
    assert_int_equal(tg_st_read(p, NULL), TG_ERR_VALUE);
}

/* Every strict prefix of a valid file is rejected (and never crashes). */
static void test_truncated(void **state)
{
    (void)state;
    const char *p = small_file();
    size_t n;
    unsigned char *b = read_bytes(p, &n);
    assert_non_null(b);
    const char *q = tpath("prefix.safetensors");
    for (size_t len = 0; len < n; len++) {
        write_bytes(q, b, len);
        struct tg_st_file *f = (struct tg_st_file *)0x1;
        assert_int_equal(tg_st_read(q, &f), TG_ERR_FORMAT);
        assert_null(f);
        assert_non_null(strstr(tg_last_error(), "prefix.safetensors"));
    }
    write_bytes(q, b, n);
    struct tg_st_file *f;
    assert_int_equal(tg_st_read(q, &f), TG_OK);
    assert_int_equal(tg_st_count(f), 3);
    tg_st_close(f);
    free(b);
}

/* Random mutations of a valid file: the reader returns OK or an error, and when it accepts a
 * file every tensor lies inside it and the tensors tile the data buffer. */
static void test_mutations(void **state)
{
    (void)state;
    const char *p = small_file();
    size_t n;
    unsigned char *orig = read_bytes(p, &n);
    unsigned char *b = malloc(n + 64);
    assert_non_null(b);
    uint64_t hl;
    memcpy(&hl, orig, 8);
    const char *q = tpath("mutant.safetensors");
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int accepted = 0;
    const char interesting[] = "0123456789-.[]{},:\" eE";
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(b, orig, n);
        size_t len = n;
        int edits = 1 + (int)(iter % 4);
        for (int e = 0; e < edits; e++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            size_t pos = (size_t)(s >> 8) % len;
            if (iter % 3 == 0) pos = 8 + (size_t)(s >> 8) % hl; /* mostly the header text */
            switch ((s >> 40) % 4) {
            case 0: b[pos] = (unsigned char)(s >> 48); break;
            case 1: b[pos] = (unsigned char)interesting[(s >> 48) % (sizeof interesting - 1)];
                    break;
            case 2: b[pos] ^= (unsigned char)(1u << ((s >> 50) % 8)); break;
            default: len = pos; break; /* truncate */
            }
            if (len == 0) break;
        }
        write_bytes(q, b, len);
        struct tg_st_file *f = NULL;
        enum tg_status st = tg_st_read(q, &f);
        if (st == TG_OK) {
            accepted++;
            uint64_t h2;
            memcpy(&h2, b, 8);
            size_t covered = 0;
            for (int i = 0; i < tg_st_count(f); i++) {
                const struct tg_st_tensor *t = tg_st_at(f, i);
                assert_int_equal((uint64_t)tg_st_numel(t) * tg_st_dtype_size(t->dtype), t->nbytes);
                covered += t->nbytes;
                if (i > 0) assert_true(strcmp(tg_st_at(f, i - 1)->name, t->name) < 0);
            }
            assert_int_equal(covered, len - 8 - h2);
            tg_st_close(f);
        } else {
            assert_null(f);
            assert_true(st == TG_ERR_FORMAT);
            assert_non_null(strstr(tg_last_error(), "mutant.safetensors"));
        }
    }
    /* Some mutants (digits of padding, metadata text) stay valid; most do not. */
    assert_true(accepted > 0 && accepted < 3000);
    free(b);
    free(orig);
}

/* A file from another writer: header not padded (so the data buffer starts at an odd address)
 * and an F64 tensor right after 12 bytes of F32 — its bytes are misaligned in the file. */
static void test_misaligned_foreign(void **state)
{
    (void)state;
    const char *hdr = "{\"f\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                      "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[12,28]}}";
    size_t hl = strlen(hdr);
    unsigned char buf[512];
    uint64_t h = hl;
    memcpy(buf, &h, 8);
    memcpy(buf + 8, hdr, hl);
    float fv[3] = {1, 2, 3};
    double dv[2] = {-0.1, 1e-310};
    memcpy(buf + 8 + hl, fv, 12);
    memcpy(buf + 8 + hl + 12, dv, 16);
    const char *p = tpath("foreign.safetensors");
    write_bytes(p, buf, 8 + hl + 28);
    struct tg_st_file *f;
    assert_int_equal(tg_st_read(p, &f), TG_OK);
    const struct tg_st_tensor *d = tg_st_find(f, "d"), *ff = tg_st_find(f, "f");
    assert_int_equal((uintptr_t)d->data % 8, 0);
    assert_int_equal((uintptr_t)ff->data % 4, 0);
    assert_true(((const double *)d->data)[0] == -0.1);
    assert_true(((const double *)d->data)[1] == 1e-310);
    assert_true(((const float *)ff->data)[2] == 3.0f);
    struct tg_tensor *x = tg_tensor_new_heap(1, 2, TG_F64);
    assert_int_equal(tg_st_get_tensor(f, "d", x, 0, NULL), TG_OK);
    assert_true(((double *)x->data)[1] == 1e-310);
    tg_tensor_free(x);
    tg_st_close(f);
}

/* ------------------------------------------------------------------ atomic save */

static struct tg_st_writer *writer_with(double v, size_t n)
{
    struct tg_st_writer *w = tg_st_writer_new();
    double *d = malloc(n * sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < n; i++) d[i] = v;
    int64_t sh[1] = {(int64_t)n};
    assert_int_equal(tg_st_writer_add(w, "v", TG_ST_F64, 1, sh, d), TG_OK);
    free(d);
    return w;
}

static void assert_file_value(const char *path, double v)
{
    struct tg_st_file *f;
    assert_int_equal(tg_st_read(path, &f), TG_OK);
    const struct tg_st_tensor *t = tg_st_find(f, "v");
    assert_non_null(t);
    assert_true(((const double *)t->data)[0] == v);
    assert_true(((const double *)t->data)[tg_st_numel(t) - 1] == v);
    tg_st_close(f);
}

static void test_atomic_save(void **state)
{
    (void)state;
    char sub[128], dst[256], tmp[300];
    snprintf(sub, sizeof sub, "%s/ckdir", tmpdir);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(dst, sizeof dst, "%s/ckpt.safetensors", sub);
    struct tg_st_writer *w1 = writer_with(1.0, 1), *w2 = writer_with(2.0, 1);
    assert_int_equal(tg_st_writer_save(w1, dst), TG_OK);
    size_t n0;
    unsigned char *before = read_bytes(dst, &n0);

    /* The target is a directory: nothing replaced, no temporary left. */
    char dirpath[256];
    snprintf(dirpath, sizeof dirpath, "%s/adir", sub);
    assert_int_equal(mkdir(dirpath, 0755), 0);
    assert_int_equal(tg_st_writer_save(w2, dirpath), TG_ERR_IO);
    assert_non_null(strstr(tg_last_error(), "adir"));
    struct stat st;
    assert_int_equal(stat(dirpath, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    /* The temporary cannot be created (its name is taken by a directory): old file intact. */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid());
    assert_int_equal(mkdir(tmp, 0755), 0);
    assert_int_equal(tg_st_writer_save(w2, dst), TG_ERR_IO);
    assert_non_null(strstr(tg_last_error(), "ckpt.safetensors"));
    assert_int_equal(rmdir(tmp), 0);
    assert_file_value(dst, 1.0);

    /* The directory is not writable (only meaningful when not root: root ignores modes). */
    if (geteuid() != 0) {
        assert_int_equal(chmod(sub, 0555), 0);
        assert_int_equal(tg_st_writer_save(w2, dst), TG_ERR_IO);
        assert_int_equal(chmod(sub, 0755), 0);
        assert_file_value(dst, 1.0);
    }

    /* A write that fails part-way (file size limit): the partial temporary is removed. */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 4096;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    struct tg_st_writer *big = writer_with(3.0, 100000);
    enum tg_status r = tg_st_writer_save(big, dst);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(r, TG_ERR_IO);
    assert_non_null(strstr(tg_last_error(), "writing"));

    /* No directory at all. */
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/missing/x.safetensors", sub);
    assert_int_equal(tg_st_writer_save(w2, nodir), TG_ERR_IO);

    size_t n1;
    unsigned char *after = read_bytes(dst, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(after);
    DIR *d = opendir(sub);
    for (struct dirent *e; (e = readdir(d));) assert_null(strstr(e->d_name, ".tmp."));
    closedir(d);

    /* And successful overwrites. */
    assert_int_equal(tg_st_writer_save(big, dst), TG_OK);
    assert_file_value(dst, 3.0);
    assert_int_equal(tg_st_writer_save(w2, dst), TG_OK);
    assert_file_value(dst, 2.0);
    free(before);
    tg_st_writer_free(w1);
    tg_st_writer_free(w2);
    tg_st_writer_free(big);
}

/* ------------------------------------------------------------------ an independent writer */

static const char py_script[] =
    "import json, struct, sys\n"
    "out, ours = sys.argv[1], sys.argv[2]\n"
    "f32 = struct.pack('<5f', 1.5, -2.0, 0.25, 3.0, -7.5)\n"
    "f64 = struct.pack('<4d', 0.1, -1e-300, 2.5, 1e300)\n"
    "i64 = struct.pack('<3q', -1, 2**62, 7)\n"
    "hdr = {'rnn.bias': {'dtype': 'F32', 'shape': [5], 'data_offsets': [0, 20]},\n"
    "       '__metadata__': {'format': 'pt', 'note': 'unpadded \\u00e9'},\n"
    "       'y': {'dtype': 'I64', 'shape': [3], 'data_offsets': [52, 76]},\n"
    "       'rnn.weight': {'dtype': 'F64', 'shape': [2, 2], 'data_offsets': [20, 52]}}\n"
    "h = json.dumps(hdr).encode()\n"
    "open(out, 'wb').write(struct.pack('<Q', len(h)) + h + f32 + f64 + i64)\n"
    "b = open(ours, 'rb').read()\n"
    "n = struct.unpack('<Q', b[:8])[0]\n"
    "assert n % 8 == 0, n\n"
    "H = json.loads(b[8:8 + n].decode('utf-8'))\n"
    "assert H['__metadata__'] == {'k': 'v\\u00e9'}, H\n"
    "data = b[8 + n:]\n"
    "e = H['w']; s, t = e['data_offsets']\n"
    "assert e['dtype'] == 'F64' and e['shape'] == [2, 3], e\n"
    "assert list(struct.unpack('<6d', data[s:t])) == [0.5 * i for i in range(6)]\n"
    "e = H['ids']; s, t = e['data_offsets']\n"
    "assert e['dtype'] == 'I32' and e['shape'] == [3]\n"
    "assert list(struct.unpack('<3i', data[s:t])) == [-3, 0, 3]\n"
    "e = H['s']; s, t = e['data_offsets']\n"
    "assert e['shape'] == [] and struct.unpack('<f', data[s:t])[0] == 0.75\n"
    "assert max(v['data_offsets'][1] for k, v in H.items() if k != '__metadata__') == len(data)\n"
    "print('python ok')\n";

static void test_python_interop(void **state)
{
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0) skip();
    /* Ours, for Python to check. */
    struct tg_st_writer *w = tg_st_writer_new();
    double wv[6];
    for (int i = 0; i < 6; i++) wv[i] = 0.5 * i;
    int32_t ids[3] = {-3, 0, 3};
    float sv = 0.75f;
    int64_t sw[2] = {2, 3}, si[1] = {3};
    assert_int_equal(tg_st_writer_add(w, "w", TG_ST_F64, 2, sw, wv), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "ids", TG_ST_I32, 1, si, ids), TG_OK);
    assert_int_equal(tg_st_writer_add(w, "s", TG_ST_F32, 0, NULL, &sv), TG_OK);
    assert_int_equal(tg_st_writer_meta(w, "k", "v\xc3\xa9"), TG_OK);
    const char *ours = tpath("ours.safetensors");
    assert_int_equal(tg_st_writer_save(w, ours), TG_OK);
    tg_st_writer_free(w);

    const char *script = tpath("writer.py"), *theirs = tpath("py.safetensors");
    write_bytes(script, py_script, strlen(py_script));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s' '%s'", script, theirs, ours);
    assert_int_equal(system(cmd), 0);

    struct tg_st_file *f;
    assert_int_equal(tg_st_read(theirs, &f), TG_OK);
    assert_int_equal(tg_st_count(f), 3);
    assert_string_equal(tg_st_at(f, 0)->name, "rnn.bias");
    assert_string_equal(tg_st_meta(f, "note"), "unpadded \xc3\xa9");
    struct tg_tensor *W = tg_tensor_new_heap(2, 2, TG_F64);
    struct tg_tensor *bias = tg_tensor_new_heap(1, 5, TG_F64);
    int64_t sh[2] = {2, 2};
    assert_int_equal(tg_st_get_tensor(f, "rnn.weight", W, 2, sh), TG_OK);
    assert_true(((double *)W->data)[0] == 0.1);
    assert_true(((double *)W->data)[3] == 1e300);
    assert_int_equal(tg_st_get_tensor(f, "rnn.bias", bias, 0, NULL), TG_OK);
    assert_true(((double *)bias->data)[4] == -7.5);
    int64_t y[3];
    assert_int_equal(tg_st_get_i64(f, "y", y, 3, 0, NULL), TG_OK);
    assert_int_equal(y[1], INT64_C(1) << 62);
    tg_tensor_free(W);
    tg_tensor_free(bias);
    tg_st_close(f);
}

/* A long name from a bad file is cut for the message at a character boundary: never between
 * the bytes of one UTF-8 character (found by review: the cut used to keep a lone lead byte). */
static void test_long_name_cut_at_character(void **state)
{
    (void)state;
    char name[160], hdr[512], path[128];
    memset(name, 'a', 79);
    strcpy(name + 79, "\xc3\xa9 and more of a long name");
    int n = snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"X9\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
    snprintf(path, sizeof path, "%s/longname.st", tmpdir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t len = (uint64_t)n;
    assert_int_equal(fwrite(&len, 8, 1, f), 1);
    assert_int_equal(fwrite(hdr, 1, (size_t)n, f), (size_t)n);
    assert_int_equal(fwrite("abcd", 1, 4, f), 4);
    fclose(f);
    struct tg_st_file *sf = NULL;
    assert_int_equal(tg_st_read(path, &sf), TG_ERR_FORMAT);
    const char *e = strstr(tg_last_error(), "...");
    assert_non_null(e);
    assert_true((unsigned char)e[-1] < 0x80);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_writer_add_tensor),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_get_tensor),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_bad_framing),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_misaligned_foreign),
        cmocka_unit_test(test_atomic_save),
        cmocka_unit_test(test_python_interop),
        cmocka_unit_test(test_long_name_cut_at_character),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
