/* test_export.c — `tapegrad export` without PyTorch: the export holds exactly the model's
 * parameters (PyTorch's state_dict names and shapes for nn.Embedding / nn.LSTM / nn.Linear, the
 * cell file's names for other cells), with the checkpoint's bytes; the npy and csv folders hold
 * the same numbers; outputs are refused when they would destroy the input or an existing folder,
 * and a failed export leaves nothing behind. (tests/torch_export.py loads exports into PyTorch.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli_util.h"
#include "tapegrad_fileio.h"
#include "tapegrad_safetensors.h"

static char dir[64];

static const char *p(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void train(const char *ck, const char *cell, const char *data)
{
    struct run *r = run_tapegrad("train", "--task", "text", "--data", data, "--cell", cell,
                                 "--hidden", "5", "--embed", "3", "--layers", "2", "--batch", "2",
                                 "--seq", "6", "--steps", "3", "--eval-size", "2", "--checkpoint",
                                 ck, "--overwrite", NULL);
    if (r->status != 0) fail_msg("train failed: %s", r->err);
}

struct want {
    const char *name;
    int ndim;
    int64_t shape[2];
};

/* The export has exactly these tensors, with the checkpoint's bytes and no others. */
static void check_export(const char *out, const char *ck, const struct want *w, int n)
{
    struct tg_st_file *e, *c;
    assert_int_equal(tg_st_read(out, &e), TG_OK);
    assert_int_equal(tg_st_read(ck, &c), TG_OK);
    assert_int_equal(tg_st_count(e), n);
    for (int i = 0; i < n; i++) {
        const struct tg_st_tensor *t = tg_st_find(e, w[i].name), *s = tg_st_find(c, w[i].name);
        if (!t) fail_msg("export lacks %s", w[i].name);
        assert_non_null(s);
        assert_int_equal(t->ndim, w[i].ndim);
        for (int k = 0; k < w[i].ndim; k++) assert_int_equal(t->shape[k], w[i].shape[k]);
        assert_int_equal(t->dtype, TG_ST_F32);
        assert_int_equal(t->nbytes, s->nbytes);
        assert_memory_equal(t->data, s->data, t->nbytes);
    }
    assert_string_equal(tg_st_meta(e, "format"), "tapegrad-export");
    tg_st_close(e);
    tg_st_close(c);
}

static void test_export_lstm(void **state)
{
    (void)state;
    need_binary();
    char data[256], ck[256], out[256];
    snprintf(data, sizeof data, "%s", p("corpus.txt"));
    snprintf(ck, sizeof ck, "%s", p("run.safetensors"));
    snprintf(out, sizeof out, "%s", p("model.safetensors"));
    FILE *f = fopen(data, "w");
    for (int i = 0; i < 20; i++) fputs("abcde fghij, klmno.\n", f);
    fclose(f);
    train(ck, "lstm", data);
    struct run *r = run_tapegrad("export", "--checkpoint", ck, "--out", out, NULL);
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->out, "exported 11 tensors"));
    /* V = 19 symbols, E = 3, H = 5, L = 2: nn.Embedding(19, 3), nn.LSTM(3, 5, 2), nn.Linear(5, 19) */
    const struct want w[] = {
        {"embed.weight", 2, {19, 3}},     {"rnn.weight_ih_l0", 2, {20, 3}},
        {"rnn.weight_hh_l0", 2, {20, 5}}, {"rnn.bias_ih_l0", 1, {20}},
        {"rnn.bias_hh_l0", 1, {20}},      {"rnn.weight_ih_l1", 2, {20, 5}},
        {"rnn.weight_hh_l1", 2, {20, 5}}, {"rnn.bias_ih_l1", 1, {20}},
        {"rnn.bias_hh_l1", 1, {20}},      {"out.weight", 2, {19, 5}},
        {"out.bias", 1, {19}},
    };
    check_export(out, ck, w, 11);
    struct tg_st_file *e;
    assert_int_equal(tg_st_read(out, &e), TG_OK);
    assert_string_equal(tg_st_meta(e, "torch_module"), "LSTM");
    assert_string_equal(tg_st_meta(e, "num_layers"), "2");
    assert_string_equal(tg_st_meta(e, "vocab_size"), "19");
    assert_non_null(tg_st_meta(e, "vocab_hex"));
    tg_st_close(e);

    /* npy: numpy's header, then the checkpoint's bytes */
    struct tg_st_file *c;
    assert_int_equal(tg_st_read(ck, &c), TG_OK);
    r = run_tapegrad("export", "--checkpoint", ck, "--out", p("npy"), "--format", "npy", NULL);
    assert_int_equal(r->status, 0);
    for (int i = 0; i < 11; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s.npy", p("npy"), w[i].name);
        unsigned char *buf;
        size_t n;
        assert_int_equal(tg_file_read("test", path, 1 << 20, &buf, &n), TG_OK);
        assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
        size_t hl = buf[8] | (size_t)buf[9] << 8;
        assert_int_equal((10 + hl) % 64, 0);
        char shape[64];
        if (w[i].ndim == 1) snprintf(shape, sizeof shape, "'shape': (%ld,)", (long)w[i].shape[0]);
        else snprintf(shape, sizeof shape, "'shape': (%ld, %ld)", (long)w[i].shape[0], (long)w[i].shape[1]);
        char *hdr = strndup((char *)buf + 10, hl);
        assert_non_null(strstr(hdr, "'descr': '<f4'"));
        assert_non_null(strstr(hdr, "'fortran_order': False"));
        if (!strstr(hdr, shape)) fail_msg("%s: header %s lacks %s", path, hdr, shape);
        free(hdr);
        const struct tg_st_tensor *s = tg_st_find(c, w[i].name);
        assert_int_equal(n, 10 + hl + s->nbytes);
        assert_memory_equal(buf + 10 + hl, s->data, s->nbytes);
        free(buf);
    }
    /* csv: rows × cols numbers that read back to the same float32 */
    r = run_tapegrad("export", "--checkpoint", ck, "--out", p("csv"), "--format", "csv", NULL);
    assert_int_equal(r->status, 0);
    for (int i = 0; i < 11; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s.csv", p("csv"), w[i].name);
        FILE *cf = fopen(path, "r");
        assert_non_null(cf);
        const struct tg_st_tensor *s = tg_st_find(c, w[i].name);
        const float *v = s->data;
        int64_t cols = w[i].shape[w[i].ndim - 1], n = tg_st_numel(s), lines = 0;
        for (int64_t k = 0; k < n; k++) {
            float got;
            char sep;
            assert_int_equal(fscanf(cf, "%f%c", &got, &sep), 2);
            assert_true(got == v[k]);
            assert_int_equal(sep, (k + 1) % cols == 0 ? '\n' : ',');
            lines += sep == '\n';
        }
        assert_int_equal(lines, w[i].ndim == 2 ? w[i].shape[0] : 1);
        assert_int_equal(fgetc(cf), EOF);
        fclose(cf);
    }
    char js[300];
    snprintf(js, sizeof js, "%s/model.json", p("csv"));
    struct stat sb;
    assert_int_equal(stat(js, &sb), 0);
    tg_st_close(c);

    /* refusals: output = input, an existing folder, unknown format; nothing written */
    r = run_tapegrad("export", "--checkpoint", ck, "--out", ck, NULL);
    assert_one_line_error(r, "same file as --checkpoint", NULL);
    r = run_tapegrad("export", "--checkpoint", ck, "--out", p("csv"), "--format", "csv", NULL);
    assert_one_line_error(r, "already exists", NULL);
    r = run_tapegrad("export", "--checkpoint", ck, "--out", p("x"), "--format", "onnx", NULL);
    assert_one_line_error(r, "unknown --format 'onnx'", NULL);
    r = run_tapegrad("export", "--checkpoint", data, "--out", p("y.safetensors"), NULL);
    assert_last_line_error(r, "corpus.txt", NULL);
    assert_int_equal(stat(p("y.safetensors"), &sb), -1);
    r = run_tapegrad("export", "--checkpoint", ck, "--out", p("nodir/m.safetensors"), NULL);
    assert_last_line_error(r, "nodir", NULL);
    r = run_tapegrad("export", "--checkpoint", ck, "--out", p("nodir/npy"), "--format", "npy", NULL);
    assert_last_line_error(r, "nodir", NULL);
    assert_int_equal(stat(p("nodir"), &sb), -1);

    /* a write that fails midway (a file-size limit: EFBIG, as a full disk) leaves no output and
     * no temporary file or folder behind */
    const char *fmts[] = {"safetensors", "npy", "csv"};
    for (int k = 0; k < 3; k++) {
        cli_fsize_limit = 300;
        r = run_tapegrad("export", "--checkpoint", ck, "--out", p("full"), "--format", fmts[k], NULL);
        cli_fsize_limit = -1;
        assert_last_line_error(r, "full", NULL);
        DIR *d = opendir(dir);
        struct dirent *de;
        while ((de = readdir(d)))
            if (strncmp(de->d_name, "full", 4) == 0) fail_msg("%s: %s left behind", fmts[k], de->d_name);
        closedir(d);
    }
}

/* A cell that is not a PyTorch layer keeps the cell file's names and declared shapes. */
static void test_export_cell_file(void **state)
{
    (void)state;
    char ck[256], out[256];
    snprintf(ck, sizeof ck, "%s", p("cho.safetensors"));
    snprintf(out, sizeof out, "%s", p("cho_model.safetensors"));
    train(ck, TG_SOURCE_DIR "/models/cells/gru_cho.cell", p("corpus.txt"));
    struct run *r = run_tapegrad("export", "--checkpoint", ck, "--out", out, NULL);
    assert_int_equal(r->status, 0);
    struct tg_st_file *e;
    assert_int_equal(tg_st_read(out, &e), TG_OK);
    assert_string_equal(tg_st_meta(e, "torch_module"), "none");
    assert_non_null(tg_st_meta(e, "cell_source"));
    /* every tensor is a parameter of the checkpoint, and no optimizer or training state */
    struct tg_st_file *c;
    assert_int_equal(tg_st_read(ck, &c), TG_OK);
    int params = 0;
    for (int i = 0; i < tg_st_count(c); i++) {
        const char *n = tg_st_at(c, i)->name;
        int is_param = strncmp(n, "rnn.", 4) == 0 || strncmp(n, "out.", 4) == 0 || strncmp(n, "embed.", 6) == 0;
        params += is_param;
        assert_int_equal(tg_st_find(e, n) != NULL, is_param);
    }
    assert_int_equal(tg_st_count(e), params);
    assert_true(params > 3);
    assert_non_null(tg_st_find(e, "rnn.weight_l1"));
    tg_st_close(c);
    tg_st_close(e);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/tg_test_export_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_lstm),
        cmocka_unit_test(test_export_cell_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
