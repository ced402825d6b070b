/* st_edit.h — damaged copies of safetensors files, for the tests that feed them to the program.
 * Include after <cmocka.h>. */
#ifndef TG_ST_EDIT_H
#define TG_ST_EDIT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad_safetensors.h"

/* A copy of src at dst, metadata included, in which tensor `name` (if not NULL) is replaced by
 * (dt, ndim, shape, data) — or left out when data is NULL — and metadata `key` (if not NULL)
 * is set to value. */
static inline void st_rewrite(const char *src, const char *dst, const char *name,
                              enum tg_st_dtype dt, int ndim, const int64_t *shape, const void *data,
                              const char *key, const char *value)
{
    struct tg_st_file *f;
    if (tg_st_read(src, &f) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_st_writer *w = tg_st_writer_new();
    for (int i = 0; i < tg_st_count(f); i++) {
        const struct tg_st_tensor *t = tg_st_at(f, i);
        if (!name || strcmp(t->name, name) != 0) tg_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    if (name && data) tg_st_writer_add(w, name, dt, ndim, shape, data);
    for (int i = 0; i < tg_st_meta_count(f); i++) {
        const char *k = tg_st_meta_key(f, i);
        tg_st_writer_meta(w, k, tg_st_meta(f, k));
    }
    if (key) tg_st_writer_meta(w, key, value);
    if (tg_st_writer_save(w, dst) != TG_OK) fail_msg("%s", tg_last_error());
    tg_st_writer_free(w);
    tg_st_close(f);
}

/* A copy of src at dst with element i of tensor `name` (F32, F64 or I64) set to v. */
static inline void st_set_element(const char *src, const char *dst, const char *name, size_t i, double v)
{
    struct tg_st_file *f;
    if (tg_st_read(src, &f) != TG_OK) fail_msg("%s", tg_last_error());
    const struct tg_st_tensor *t = tg_st_find(f, name);
    if (!t) fail_msg("%s has no tensor %s", src, name);
    assert_true(i < t->nbytes / tg_st_dtype_size(t->dtype));
    unsigned char *d = malloc(t->nbytes);
    assert_non_null(d);
    memcpy(d, t->data, t->nbytes);
    if (t->dtype == TG_ST_F32) ((float *)d)[i] = (float)v;
    else if (t->dtype == TG_ST_F64) ((double *)d)[i] = v;
    else if (t->dtype == TG_ST_I64) ((int64_t *)d)[i] = (int64_t)v;
    else fail_msg("st_set_element: %s is I32", name);
    st_rewrite(src, dst, name, t->dtype, t->ndim, t->shape, d, NULL, NULL);
    free(d);
    tg_st_close(f);
}

#endif
