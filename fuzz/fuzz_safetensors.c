/* fuzz_safetensors.c — the safetensors reader (autograd/safetensors.c) on arbitrary bytes.
 *
 * tg_st_read must accept or refuse every byte sequence without a crash, an out-of-bounds read
 * or undefined behaviour; on acceptance, every tensor must be readable through each typed
 * getter that its dtype allows, over its whole extent (that is what makes ASan check the
 * validated offsets), and every metadata entry must be a string. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "st_mutator.h" /* libFuzzer build only: mutations that keep the header JSON */
#include "tapegrad_safetensors.h"

/* Tensors larger than this are looked at, not copied: the copy would only measure memcpy. */
#define MAX_COPY (1 << 16)

static void read_tensor(const struct tg_st_file *f, const struct tg_st_tensor *t)
{
    int64_t n = tg_st_numel(t);
    if (n < 0 || n > MAX_COPY) return;
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    int64_t *i = malloc((size_t)(n ? n : 1) * sizeof *i);
    if (d && i) {
        (void)tg_st_get_f64(f, t->name, d, (size_t)n, t->ndim, t->shape);
        (void)tg_st_get_i64(f, t->name, i, (size_t)n, 0, NULL);
        /* as a 2-D float tensor in each dtype (the copy and the conversion paths) */
        int64_t rows = 1, cols = t->ndim ? t->shape[t->ndim - 1] : 1;
        int big = cols > MAX_COPY;
        for (int k = 0; k + 1 < t->ndim; k++) big |= __builtin_mul_overflow(rows, t->shape[k], &rows);
        for (int dt = 0; dt < 2 && !big && rows <= MAX_COPY; dt++) {
            struct tg_tensor *x = tg_tensor_new_heap((int)rows, (int)cols, dt ? TG_F64 : TG_F32);
            if (x) (void)tg_st_get_tensor(f, t->name, x, 0, NULL);
            tg_tensor_free(x);
        }
    }
    free(d);
    free(i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tg_st_file *f;
    if (tg_st_read(fuzz_input_file(data, size), &f) != TG_OK) return 0;
    for (int k = 0; k < tg_st_count(f); k++) {
        const struct tg_st_tensor *t = tg_st_at(f, k);
        if (tg_st_find(f, t->name) != t) abort(); /* lookup by name must find the same entry */
        read_tensor(f, t);
    }
    for (int k = 0; k < tg_st_meta_count(f); k++) {
        const char *key = tg_st_meta_key(f, k), *v = tg_st_meta(f, key);
        if (!v) abort();
        (void)strlen(v);
    }
    tg_st_close(f);
    return 0;
}
