/*
 * tapegrad_safetensors.h — reading and writing safetensors files (parameters, gradients, checkpoints).
 *
 * The format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes]  N, the header length, unsigned 64-bit little-endian
 *   [N bytes]  a JSON object, UTF-8, possibly padded with trailing spaces:
 *                { "__metadata__": {"key": "value", …},            (optional, strings only)
 *                  "name": {"dtype": "F32", "shape": [4, 5], "data_offsets": [begin, end]}, … }
 *   [rest]     the data buffer; a tensor's bytes are data[begin, end), row-major, little-endian
 *
 * A file is read whole into memory and validated before anything is returned: the header must be
 * a JSON object without duplicate names, every entry must have a supported dtype, a shape of
 * non-negative integers whose byte size equals end − begin, and offsets that tile the data buffer
 * exactly (no overlaps, no holes, no trailing bytes — as the format requires). Any violation gives
 * TG_ERR_FORMAT (TG_ERR_IO if the file cannot be read) and a one-line message naming the file and
 * the tensor, e.g.
 *   tg_st_read: params.safetensors: tensor 'rnn.weight_ih_l0': data_offsets [0, 96) but shape
 *   [4, 5] of F32 needs 80 bytes
 * No byte sequence makes the reader crash or read out of bounds.
 *
 * Every tensor's `data` pointer is aligned for its dtype (a misaligned tensor of a foreign file is
 * copied), so it may be cast to float/double/int32_t/int64_t directly.
 *
 * Writing: a writer collects tensors (copying their bytes) and metadata, then tg_st_writer_save
 * writes the file atomically. The header lists __metadata__ first and then the tensors in
 * name order; the data buffer holds the 8-byte dtypes first, then the 4-byte ones (each group in
 * name order), so that every tensor starts at a multiple of its element size — the same layout
 * the reference implementation writes. The header is padded with spaces to a multiple of 8
 * bytes. The same contents give the same bytes on every run.
 *
 * Byte order: tapegrad assumes a little-endian host (checked at compile time in safetensors.c).
 *
 *   struct tg_st_file *f;
 *   if (tg_st_read("params.safetensors", &f) != TG_OK) { puts(tg_last_error()); return 1; }
 *   int64_t shape[2] = {4 * H, I};
 *   if (tg_st_get_tensor(f, "rnn.weight_ih_l0", W, 2, shape) != TG_OK) ...
 *   tg_st_close(f);
 */
#ifndef TAPEGRAD_SAFETENSORS_H
#define TAPEGRAD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

enum tg_st_dtype { TG_ST_F32 = 0, TG_ST_F64, TG_ST_I32, TG_ST_I64 };

#define TG_ST_MAX_DIMS 8

/* "F32", "F64", "I32", "I64" / bytes per element (4 or 8); "?" / 0 for anything else. */
const char *tg_st_dtype_name(enum tg_st_dtype d);
size_t tg_st_dtype_size(enum tg_st_dtype d);

struct tg_st_tensor {
    const char *name;
    enum tg_st_dtype dtype;
    int ndim;                        /* 0 for a scalar (shape []) */
    int64_t shape[TG_ST_MAX_DIMS];
    const void *data;                /* nbytes bytes, aligned for dtype; owned by the file */
    size_t nbytes;
};

/* Number of elements: product of the shape (1 for a scalar). */
int64_t tg_st_numel(const struct tg_st_tensor *t);

/* ------------------------------------------------------------------ reading */

struct tg_st_file; /* an opened, validated file held in memory */

/* Read and validate `path`. On success *out owns everything (tg_st_close); on failure *out is
 * NULL and the status is TG_ERR_IO, TG_ERR_FORMAT or TG_ERR_NOMEM with a message. */
enum tg_status tg_st_read(const char *path, struct tg_st_file **out);
void tg_st_close(struct tg_st_file *f); /* NULL is fine */

const char *tg_st_path(const struct tg_st_file *f);
int tg_st_count(const struct tg_st_file *f);
/* The i-th tensor in name order (strcmp); NULL if i is out of range. */
const struct tg_st_tensor *tg_st_at(const struct tg_st_file *f, int i);
/* The tensor called `name`, NULL if absent (no error set). */
const struct tg_st_tensor *tg_st_find(const struct tg_st_file *f, const char *name);

/* Metadata value for `key`, NULL if absent. Keys are iterable in strcmp order. */
const char *tg_st_meta(const struct tg_st_file *f, const char *key);
int tg_st_meta_count(const struct tg_st_file *f);
const char *tg_st_meta_key(const struct tg_st_file *f, int i); /* NULL if out of range */

/* Fetch tensor `name` into dst, an existing float tensor, converting F32/F64 into dst's dtype.
 * The file's shape is viewed as 2-D: [] → 1×1, [n] → 1×n, [r, c] → r×c, [a, …, y, z] →
 * (a·…·y)×z; that view must be dst->rows × dst->cols. If exp_ndim > 0 the file's shape must
 * also equal exp_shape[0..exp_ndim) exactly (exp_ndim == 0: no check; use a 1×1 dst for
 * scalars). A missing tensor, an integer dtype or a shape mismatch gives TG_ERR_FORMAT with a
 * message naming the file, the tensor and both shapes. */
enum tg_status tg_st_get_tensor(const struct tg_st_file *f, const char *name,
                                struct tg_tensor *dst, int exp_ndim, const int64_t *exp_shape);

/* Copy an integer tensor (I32 or I64) into dst as int64 values; its element count must be n,
 * and its shape exp_shape if exp_ndim > 0. Same errors as tg_st_get_tensor. */
enum tg_status tg_st_get_i64(const struct tg_st_file *f, const char *name, int64_t *dst,
                             size_t n, int exp_ndim, const int64_t *exp_shape);

/* Copy any tensor (F32, F64, I32, I64) into dst as doubles (scalars such as a loss or a step);
 * element count n, shape checked as above. */
enum tg_status tg_st_get_f64(const struct tg_st_file *f, const char *name, double *dst,
                             size_t n, int exp_ndim, const int64_t *exp_shape);

/* TG_OK if every element of the float tensor t (of file f) is finite; otherwise TG_ERR_FORMAT
 * and "<what> <path>: tensor '<name>' is not finite: nan at [i, j] (refusing weights that are
 * not finite)", naming the first such element. Integer tensors are always finite. */
enum tg_status tg_st_check_finite(const struct tg_st_file *f, const struct tg_st_tensor *t,
                                  const char *what);

/* ------------------------------------------------------------------ writing */

struct tg_st_writer;

struct tg_st_writer *tg_st_writer_new(void); /* NULL (and an error) if out of memory */
void tg_st_writer_free(struct tg_st_writer *w); /* NULL is fine */

/* Add a tensor, copying its nbytes = numel·size bytes from data (data may be NULL only when
 * numel is 0). ndim 0..8; shape may be NULL when ndim is 0. Names must be unique, valid UTF-8
 * and not "__metadata__". The first failed add is remembered and makes tg_st_writer_save fail
 * with the same status and message, so a run of adds may be checked once at the save. */
enum tg_status tg_st_writer_add(struct tg_st_writer *w, const char *name, enum tg_st_dtype dtype,
                                int ndim, const int64_t *shape, const void *data);
/* Add a float tensor's data in its own dtype (F32 or F64) under the given shape, whose element
 * count must equal rows·cols. shape == NULL derives it from x: ndim 0 → [] (x must be 1×1),
 * ndim 1 → [rows·cols], ndim 2 → [rows, cols]. */
enum tg_status tg_st_writer_add_tensor(struct tg_st_writer *w, const char *name,
                                       const struct tg_tensor *x, int ndim, const int64_t *shape);
/* Set a __metadata__ entry (a later value for the same key replaces the earlier one). */
enum tg_status tg_st_writer_meta(struct tg_st_writer *w, const char *key, const char *value);

/* Write the file atomically: "<path>.tmp.<pid>" in the same directory is written, flushed to
 * disk (fsync), renamed over path, and then the directory is fsynced (best effort: a directory
 * that cannot be fsynced does not fail a save that has already replaced the file). On any
 * failure the temporary file is removed, path is untouched and the status is TG_ERR_IO (or the
 * writer's remembered error). A crash mid-save leaves path as it was (and possibly a stray
 * temporary file). The writer may be saved again or freed afterwards. */
enum tg_status tg_st_writer_save(struct tg_st_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif
