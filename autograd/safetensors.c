/* safetensors.c — a validating safetensors reader and an atomic writer (see tapegrad_safetensors.h).
 *
 * Reading keeps the whole file in one malloc'd buffer; tensors point into it. Validation happens
 * once, up front, so that everything after tg_st_read can trust the offsets:
 *   size ≥ 8;  N = u64le(bytes 0..8) ≤ 10⁸ and 8 + N ≤ size;  header = JSON object (no duplicate
 *   keys);  per tensor: dtype known, 0 ≤ shape[k], numel·elsize = end − begin (no overflow),
 *   begin ≤ end ≤ size − 8 − N;  sorted by begin, the intervals tile [0, size − 8 − N) exactly.
 * The tiling rule is the format's own ("the byte buffer needs to be entirely indexed, and cannot
 * contain holes"); one pass over the sorted intervals rejects overlaps, holes and trailing bytes.
 *
 * Writing builds the header with jansson (so names and metadata are escaped correctly) and
 * goes through a temporary file + fsync + rename, which is atomic on POSIX file systems: a
 * reader, or a crash, sees either the old file or the new one, never a mixture. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strdup, O_CLOEXEC, O_DIRECTORY (meson defines it too) */
#endif
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapegrad_fileio.h"
#include "tapegrad_safetensors.h"

/* Tensor bytes are copied between file and memory as they are: the format is little-endian. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tapegrad's safetensors code assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ull /* the reference implementation's limit on N */

static const char *const dtype_names[] = {"F32", "F64", "I32", "I64"};
static const size_t dtype_sizes[] = {4, 8, 4, 8};

const char *tg_st_dtype_name(enum tg_st_dtype d) { return (unsigned)d < 4 ? dtype_names[d] : "?"; }
size_t tg_st_dtype_size(enum tg_st_dtype d) { return (unsigned)d < 4 ? dtype_sizes[d] : 0; }

int64_t tg_st_numel(const struct tg_st_tensor *t)
{
    int64_t n = 1;
    for (int k = 0; k < t->ndim; k++) n *= t->shape[k];
    return n;
}

/* A name from an untrusted file, made safe for a one-line message: control bytes become '?',
 * long names are cut (at a UTF-8 character boundary) and end in "...". Returned by value so it
 * can be used inline in an argument list. */
struct safe_str { char s[100]; };

static struct safe_str safe(const char *in)
{
    struct safe_str o;
    size_t n = 0;
    if (!in) in = "(null)";
    for (; in[n] && n < 80; n++) {
        unsigned char c = (unsigned char)in[n];
        o.s[n] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (in[n]) {
        /* cut before the character that in[n] continues: back up while the byte at the cut is
         * a continuation byte, so the lead byte of a split character goes too */
        while (n > 0 && ((unsigned char)in[n] & 0xC0) == 0x80) n--;
        memcpy(o.s + n, "...", 4);
    } else {
        o.s[n] = '\0';
    }
    return o;
}

/* "[4, 5]" — a shape for messages (at most 8 dims of ≤ 20 digits). */
struct shape_str { char s[200]; };

static struct shape_str fmt_shape(int ndim, const int64_t *shape)
{
    struct shape_str o;
    size_t len = 1;
    o.s[0] = '[';
    for (int k = 0; k < ndim && k < TG_ST_MAX_DIMS; k++)
        len += (size_t)snprintf(o.s + len, sizeof o.s - len, "%s%lld", k ? ", " : "",
                                (long long)shape[k]);
    snprintf(o.s + len, sizeof o.s - len, "]");
    return o;
}

/* An error "fn: path: tensor 'name': what" (no tensor part when name is NULL). */
static enum tg_status fail(enum tg_status st, const char *fn, const char *path, const char *name,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static enum tg_status fail(enum tg_status st, const char *fn, const char *path, const char *name,
                           const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (name) return tg_error(st, "%s: %s: tensor '%s': %s", fn, path, safe(name).s, what);
    return tg_error(st, "%s: %s: %s", fn, path, what);
}

#define RFAIL(st, name, ...) fail(st, "tg_st_read", path, name, __VA_ARGS__)

struct st_kv { char *key, *value; }; /* a metadata entry */

/* Sorting and searching by name: every array sorted here holds structs whose first member is
 * the name (const char *), or the names themselves, so one comparator serves them all (a
 * pointer to a struct points to its first member). */
static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ================================================================ reading */

struct st_entry {
    struct tg_st_tensor t; /* what callers see; t.name is owned here */
    uint64_t begin, end;   /* data_offsets */
    void *copy;            /* an aligned copy when the bytes in the file are misaligned */
};

_Static_assert(offsetof(struct st_entry, t.name) == 0, "cmp_name needs the name first");

struct tg_st_file {
    char *path;
    unsigned char *buf; /* the whole file */
    size_t size;
    int n, nmeta;
    struct st_entry *e; /* sorted by name */
    struct st_kv *meta; /* sorted by key; key and value share one allocation */
};

static int cmp_entry_offset(const void *a, const void *b)
{
    const struct st_entry *x = *(const struct st_entry *const *)a;
    const struct st_entry *y = *(const struct st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* One header entry → e (e->t.name already set). data_len: size of the data buffer. */
static enum tg_status parse_entry(const char *path, json_t *v, struct st_entry *e, size_t data_len)
{
    const char *nm = e->t.name;
    if (!json_is_object(v)) return RFAIL(TG_ERR_FORMAT, nm, "entry is not a JSON object");
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape");
    json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return RFAIL(TG_ERR_FORMAT, nm, "\"dtype\" is missing or not a string");
    int d = -1;
    for (int k = 0; k < 4; k++)
        if (strcmp(json_string_value(dt), dtype_names[k]) == 0) d = k;
    if (d < 0)
        return RFAIL(TG_ERR_FORMAT, nm, "unsupported dtype '%s' (tapegrad reads %s)",
                     safe(json_string_value(dt)).s, "F32, F64, I32, I64");
    e->t.dtype = (enum tg_st_dtype)d;

    if (!json_is_array(sh)) return RFAIL(TG_ERR_FORMAT, nm, "\"shape\" is missing or not an array");
    if (json_array_size(sh) > TG_ST_MAX_DIMS)
        return RFAIL(TG_ERR_FORMAT, nm, "shape has %zu dimensions (at most %d)",
                     json_array_size(sh), TG_ST_MAX_DIMS);
    e->t.ndim = (int)json_array_size(sh);
    uint64_t bytes = dtype_sizes[d]; /* Π shape[k] · elsize, watching for 64-bit overflow */
    int overflow = 0;
    for (int k = 0; k < e->t.ndim; k++) {
        json_t *x = json_array_get(sh, (size_t)k);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return RFAIL(TG_ERR_FORMAT, nm, "shape entry %d is not a non-negative integer", k);
        e->t.shape[k] = (int64_t)json_integer_value(x);
        overflow |= __builtin_mul_overflow(bytes, (uint64_t)e->t.shape[k], &bytes);
    }
    struct shape_str shs = fmt_shape(e->t.ndim, e->t.shape);
    if (overflow) return RFAIL(TG_ERR_FORMAT, nm, "shape %s is too large", shs.s);

    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)))
        return RFAIL(TG_ERR_FORMAT, nm, "\"data_offsets\" is missing or not two integers");
    long long b = json_integer_value(json_array_get(off, 0));
    long long en = json_integer_value(json_array_get(off, 1));
    if (b < 0 || b > en)
        return RFAIL(TG_ERR_FORMAT, nm, "invalid data_offsets [%lld, %lld)", b, en);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    if (e->end - e->begin != bytes)
        return RFAIL(TG_ERR_FORMAT, nm, "data_offsets [%lld, %lld) but shape %s of %s needs %llu"
                     " bytes", b, en, shs.s, dtype_names[d], (unsigned long long)bytes);
    if (e->end > data_len)
        return RFAIL(TG_ERR_FORMAT, nm, "data_offsets [%lld, %lld) extend beyond the %zu-byte %s",
                     b, en, data_len, "data buffer (truncated file?)");
    e->t.nbytes = (size_t)bytes;
    return TG_OK;
}

static enum tg_status parse_meta(const char *path, json_t *m, struct tg_st_file *f)
{
    if (!json_is_object(m))
        return RFAIL(TG_ERR_FORMAT, NULL, "\"__metadata__\" is not a JSON object");
    if (!(f->meta = calloc(json_object_size(m) + 1, sizeof *f->meta)))
        return RFAIL(TG_ERR_NOMEM, NULL, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(m, key, v) {
        if (!json_is_string(v))
            return RFAIL(TG_ERR_FORMAT, NULL, "__metadata__ value of '%s' is not a string",
                         safe(key).s);
        size_t kl = strlen(key), vl = strlen(json_string_value(v));
        char *kv = malloc(kl + vl + 2);
        if (!kv) return RFAIL(TG_ERR_NOMEM, NULL, "out of memory");
        memcpy(kv, key, kl + 1);
        memcpy(kv + kl + 1, json_string_value(v), vl + 1);
        f->meta[f->nmeta++] = (struct st_kv){kv, kv + kl + 1};
    }
    qsort(f->meta, (size_t)f->nmeta, sizeof *f->meta, cmp_name);
    return TG_OK;
}

/* Check that the tensors tile the data buffer, and give each an aligned data pointer. */
static enum tg_status place_tensors(const char *path, struct tg_st_file *f,
                                    const unsigned char *data, size_t data_len)
{
    struct st_entry **by = malloc((size_t)(f->n ? f->n : 1) * sizeof *by);
    if (!by) return RFAIL(TG_ERR_NOMEM, NULL, "out of memory");
    for (int i = 0; i < f->n; i++) by[i] = &f->e[i];
    qsort(by, (size_t)f->n, sizeof *by, cmp_entry_offset);
    uint64_t pos = 0;
    enum tg_status st = TG_OK;
    for (int i = 0; i < f->n && st == TG_OK; i++) {
        const struct st_entry *e = by[i], *p = i ? by[i - 1] : NULL;
        if (e->begin < pos)
            st = RFAIL(TG_ERR_FORMAT, e->t.name,
                       "data_offsets [%llu, %llu) overlap tensor '%s' at [%llu, %llu)",
                       (unsigned long long)e->begin, (unsigned long long)e->end, safe(p->t.name).s,
                       (unsigned long long)p->begin, (unsigned long long)p->end);
        else if (e->begin > pos)
            st = RFAIL(TG_ERR_FORMAT, e->t.name,
                       "data_offsets [%llu, %llu) leave a hole: bytes [%llu, %llu) are unused",
                       (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)pos, (unsigned long long)e->begin);
        pos = e->end;
    }
    free(by);
    if (st != TG_OK) return st;
    if (pos != data_len)
        return RFAIL(TG_ERR_FORMAT, NULL,
                     "the data buffer has %zu bytes but the tensors cover %llu (trailing bytes)",
                     data_len, (unsigned long long)pos);
    static const double nothing; /* what empty tensors point to: aligned, never read */
    for (int i = 0; i < f->n; i++) {
        struct st_entry *e = &f->e[i];
        const unsigned char *p = e->t.nbytes ? data + e->begin : (const unsigned char *)&nothing;
        if (e->t.nbytes > 0 && (uintptr_t)p % dtype_sizes[e->t.dtype] != 0) {
            if (!(e->copy = malloc(e->t.nbytes))) /* malloc's alignment suits every dtype */
                return RFAIL(TG_ERR_NOMEM, NULL, "out of memory");
            memcpy(e->copy, p, e->t.nbytes);
            p = e->copy;
        }
        e->t.data = p;
    }
    return TG_OK;
}

static enum tg_status parse_file(struct tg_st_file *f)
{
    const char *path = f->path;
    if (f->size < 8)
        return RFAIL(TG_ERR_FORMAT, NULL, "file is %zu bytes, too short for the header length",
                     f->size);
    uint64_t hlen;
    memcpy(&hlen, f->buf, 8);
    if (hlen > ST_MAX_HEADER)
        return RFAIL(TG_ERR_FORMAT, NULL, "header length %llu is absurd (limit %llu)",
                     (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > f->size - 8)
        return RFAIL(TG_ERR_FORMAT, NULL,
                     "header length %llu exceeds the %zu bytes that follow it (truncated file?)",
                     (unsigned long long)hlen, f->size - 8);
    json_error_t jerr;
    /* REJECT_DUPLICATES: jansson would otherwise keep the last of two equal names silently. */
    json_t *root = json_loadb((const char *)f->buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES,
                              &jerr);
    if (!root)
        return RFAIL(TG_ERR_FORMAT, NULL, "header is not valid JSON: %s (at header byte %d)",
                     jerr.text, jerr.position);
    enum tg_status st = TG_OK;
    json_t *meta = json_object_get(root, "__metadata__");
    size_t ntensors = json_object_size(root) - (meta ? 1 : 0);
    if (!json_is_object(root)) {
        st = RFAIL(TG_ERR_FORMAT, NULL, "header is not a JSON object");
    } else if (ntensors > INT32_MAX || !(f->e = calloc(ntensors + 1, sizeof *f->e))) {
        st = RFAIL(TG_ERR_NOMEM, NULL, "out of memory for %zu tensors", ntensors);
    } else if (!meta || (st = parse_meta(path, meta, f)) == TG_OK) {
        size_t data_len = f->size - 8 - (size_t)hlen;
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
            if (strcmp(key, "__metadata__") == 0) continue;
            struct st_entry *e = &f->e[f->n];
            if (!(e->t.name = strdup(key))) st = RFAIL(TG_ERR_NOMEM, NULL, "out of memory");
            else f->n++;
            if (st != TG_OK || (st = parse_entry(path, v, e, data_len)) != TG_OK) break;
        }
        qsort(f->e, (size_t)f->n, sizeof *f->e, cmp_name);
        if (st == TG_OK) st = place_tensors(path, f, f->buf + 8 + hlen, data_len);
    }
    json_decref(root);
    return st;
}

enum tg_status tg_st_read(const char *path, struct tg_st_file **out)
{
    if (!out) return tg_error(TG_ERR_VALUE, "tg_st_read: out is NULL");
    *out = NULL;
    if (!path) return tg_error(TG_ERR_VALUE, "tg_st_read: path is NULL");
    struct tg_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return RFAIL(TG_ERR_NOMEM, NULL, "out of memory");
    }
    /* The whole file into one buffer, read to its end; a FIFO or device is refused before it
     * is read (a file that changes meanwhile is read as it is then: our writer never changes a
     * file in place). */
    enum tg_status st = tg_file_read("tg_st_read", path, SIZE_MAX, &f->buf, &f->size);
    if (st == TG_OK) st = parse_file(f);
    if (st != TG_OK) {
        tg_st_close(f);
        return st;
    }
    *out = f;
    return TG_OK;
}

void tg_st_close(struct tg_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free((char *)f->e[i].t.name);
        free(f->e[i].copy);
    }
    for (int i = 0; i < f->nmeta; i++) free(f->meta[i].key); /* owns the value too */
    free(f->e);
    free(f->meta);
    free(f->buf);
    free(f->path);
    free(f);
}

const char *tg_st_path(const struct tg_st_file *f) { return f ? f->path : NULL; }
int tg_st_count(const struct tg_st_file *f) { return f ? f->n : 0; }
int tg_st_meta_count(const struct tg_st_file *f) { return f ? f->nmeta : 0; }

const struct tg_st_tensor *tg_st_at(const struct tg_st_file *f, int i)
{
    return f && i >= 0 && i < f->n ? &f->e[i].t : NULL;
}

const char *tg_st_meta_key(const struct tg_st_file *f, int i)
{
    return f && i >= 0 && i < f->nmeta ? f->meta[i].key : NULL;
}

const struct tg_st_tensor *tg_st_find(const struct tg_st_file *f, const char *name)
{
    if (!f || !name || f->n == 0) return NULL;
    const struct st_entry *e = bsearch(&name, f->e, (size_t)f->n, sizeof *f->e, cmp_name);
    return e ? &e->t : NULL;
}

const char *tg_st_meta(const struct tg_st_file *f, const char *key)
{
    if (!f || !key || f->nmeta == 0) return NULL;
    const struct st_kv *kv = bsearch(&key, f->meta, (size_t)f->nmeta, sizeof *f->meta, cmp_name);
    return kv ? kv->value : NULL;
}

/* ------------------------------------------------------------- typed getters */

/* *out = the tensor `name`, checked against exp_shape when exp_ndim > 0. */
static enum tg_status lookup(const char *fn, const struct tg_st_file *f, const char *name,
                             int exp_ndim, const int64_t *exp_shape,
                             const struct tg_st_tensor **out)
{
    if (!f || !name) return tg_error(TG_ERR_VALUE, "%s: file or name is NULL", fn);
    const struct tg_st_tensor *t = tg_st_find(f, name);
    if (!t) return fail(TG_ERR_FORMAT, fn, f->path, name, "not in the file");
    if (exp_ndim > 0) {
        int same = exp_shape && exp_ndim == t->ndim;
        for (int k = 0; same && k < t->ndim; k++) same = exp_shape[k] == t->shape[k];
        if (!same)
            return fail(TG_ERR_FORMAT, fn, f->path, name, "has shape %s, expected %s",
                        fmt_shape(t->ndim, t->shape).s,
                        exp_shape ? fmt_shape(exp_ndim, exp_shape).s : "(null)");
    }
    *out = t;
    return TG_OK;
}

/* Element i as a double (data is aligned for its dtype by construction). */
static double elem_f64(const struct tg_st_tensor *t, size_t i)
{
    switch (t->dtype) {
    case TG_ST_F32: return ((const float *)t->data)[i];
    case TG_ST_F64: return ((const double *)t->data)[i];
    case TG_ST_I32: return ((const int32_t *)t->data)[i];
    default: return (double)((const int64_t *)t->data)[i];
    }
}

/* "[3]", "[1, 2]": the index of flat element i in shape (row-major). */
static struct shape_str fmt_index(const struct tg_st_tensor *t, int64_t i)
{
    int64_t idx[TG_ST_MAX_DIMS];
    for (int k = t->ndim - 1; k >= 0; k--) {
        idx[k] = t->shape[k] ? i % t->shape[k] : 0;
        i = t->shape[k] ? i / t->shape[k] : 0;
    }
    return fmt_shape(t->ndim, idx);
}

enum tg_status tg_st_check_finite(const struct tg_st_file *f, const struct tg_st_tensor *t,
                                  const char *what)
{
    if (!f || !t) return tg_error(TG_ERR_VALUE, "tg_st_check_finite: file or tensor is NULL");
    if (t->dtype != TG_ST_F32 && t->dtype != TG_ST_F64) return TG_OK;
    int64_t n = tg_st_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = elem_f64(t, (size_t)i);
        if (!isfinite(v))
            return tg_error(TG_ERR_FORMAT, "%s %s: tensor '%s' is not finite: %g at %s (refusing "
                            "weights that are not finite)", what, f->path, safe(t->name).s, v,
                            fmt_index(t, i).s);
    }
    return TG_OK;
}

enum tg_status tg_st_get_tensor(const struct tg_st_file *f, const char *name,
                                struct tg_tensor *dst, int exp_ndim, const int64_t *exp_shape)
{
    static const char fn[] = "tg_st_get_tensor";
    if (!dst || (!dst->data && tg_numel(dst) > 0) || (unsigned)dst->dtype > TG_F64)
        return tg_error(TG_ERR_VALUE, "%s: destination for '%s' is NULL or invalid", fn,
                        safe(name).s);
    const struct tg_st_tensor *t;
    enum tg_status st = lookup(fn, f, name, exp_ndim, exp_shape, &t);
    if (st != TG_OK) return st;
    if (t->dtype != TG_ST_F32 && t->dtype != TG_ST_F64)
        return fail(TG_ERR_FORMAT, fn, f->path, name, "is %s, expected F32 or F64",
                    dtype_names[t->dtype]);
    /* 2-D view: every dimension but the last folds into rows. */
    int64_t rows = 1, cols = t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
    for (int k = 0; k + 1 < t->ndim; k++) rows *= t->shape[k];
    if (rows != dst->rows || cols != dst->cols)
        return fail(TG_ERR_FORMAT, fn, f->path, name, "has shape %s (%lldx%lld), expected %dx%d",
                    fmt_shape(t->ndim, t->shape).s, (long long)rows, (long long)cols, dst->rows,
                    dst->cols);
    size_t n = tg_numel(dst);
    if ((t->dtype == TG_ST_F32) == (dst->dtype == TG_F32)) {
        if (n) memcpy(dst->data, t->data, t->nbytes);
    } else if (dst->dtype == TG_F32) {
        for (size_t i = 0; i < n; i++) ((float *)dst->data)[i] = (float)elem_f64(t, i);
    } else {
        for (size_t i = 0; i < n; i++) ((double *)dst->data)[i] = elem_f64(t, i);
    }
    return TG_OK;
}

/* tg_st_get_i64 (ints: I32/I64 only, into int64_t) and tg_st_get_f64 (any dtype, into double). */
static enum tg_status get_flat(const char *fn, const struct tg_st_file *f, const char *name,
                               void *dst, size_t n, int exp_ndim, const int64_t *exp_shape,
                               int ints)
{
    const struct tg_st_tensor *t;
    enum tg_status st = lookup(fn, f, name, exp_ndim, exp_shape, &t);
    if (st != TG_OK) return st;
    if (ints && t->dtype != TG_ST_I32 && t->dtype != TG_ST_I64)
        return fail(TG_ERR_FORMAT, fn, f->path, name, "is %s, expected I32 or I64",
                    dtype_names[t->dtype]);
    if ((uint64_t)tg_st_numel(t) != (uint64_t)n)
        return fail(TG_ERR_FORMAT, fn, f->path, name, "has %lld elements (shape %s), expected %zu",
                    (long long)tg_st_numel(t), fmt_shape(t->ndim, t->shape).s, n);
    if (n && !dst)
        return tg_error(TG_ERR_VALUE, "%s: destination for '%s' is NULL", fn, safe(name).s);
    for (size_t i = 0; i < n; i++) {
        if (!ints) ((double *)dst)[i] = elem_f64(t, i);
        else if (t->dtype == TG_ST_I64) ((int64_t *)dst)[i] = ((const int64_t *)t->data)[i];
        else ((int64_t *)dst)[i] = ((const int32_t *)t->data)[i];
    }
    return TG_OK;
}

enum tg_status tg_st_get_i64(const struct tg_st_file *f, const char *name, int64_t *dst,
                             size_t n, int exp_ndim, const int64_t *exp_shape)
{
    return get_flat("tg_st_get_i64", f, name, dst, n, exp_ndim, exp_shape, 1);
}

enum tg_status tg_st_get_f64(const struct tg_st_file *f, const char *name, double *dst,
                             size_t n, int exp_ndim, const int64_t *exp_shape)
{
    return get_flat("tg_st_get_f64", f, name, dst, n, exp_ndim, exp_shape, 0);
}

/* ================================================================ writing */

struct st_item {
    char *name;
    enum tg_st_dtype dtype;
    int ndim;
    int64_t shape[TG_ST_MAX_DIMS];
    void *data;
    size_t nbytes;
    uint64_t begin; /* assigned at save */
};

struct tg_st_writer {
    struct st_item *items;
    int n, cap;
    json_t *meta;       /* key → JSON string; jansson replaces on a repeated key */
    enum tg_status err; /* the first failed add, replayed by save */
    char *errmsg;
};

/* Report a failed add and remember the first one on w. */
static enum tg_status wfail(struct tg_st_writer *w, enum tg_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum tg_status wfail(struct tg_st_writer *w, enum tg_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w->err == TG_OK) {
        w->err = st;
        w->errmsg = strdup(msg);
    }
    return tg_error(st, "%s", msg);
}

struct tg_st_writer *tg_st_writer_new(void)
{
    struct tg_st_writer *w = calloc(1, sizeof *w);
    if (!w) tg_error(TG_ERR_NOMEM, "tg_st_writer_new: out of memory");
    return w;
}

void tg_st_writer_free(struct tg_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->items[i].name);
        free(w->items[i].data);
    }
    free(w->items);
    json_decref(w->meta);
    free(w->errmsg);
    free(w);
}

static int valid_utf8(const char *s)
{
    json_t *j = json_string(s); /* jansson checks UTF-8 when it makes a string */
    json_decref(j);
    return j != NULL;
}

enum tg_status tg_st_writer_add(struct tg_st_writer *w, const char *name, enum tg_st_dtype dtype,
                                int ndim, const int64_t *shape, const void *data)
{
    static const char fn[] = "tg_st_writer_add";
    if (!w) return tg_error(TG_ERR_VALUE, "%s: writer is NULL", fn);
    const struct safe_str sn_ = safe(name);
    const char *sn = sn_.s;
    if (!name || !valid_utf8(name) || strcmp(name, "__metadata__") == 0)
        return wfail(w, TG_ERR_VALUE, "%s: tensor name '%s' is NULL, not UTF-8 or reserved", fn,
                     sn);
    if ((unsigned)dtype > TG_ST_I64)
        return wfail(w, TG_ERR_DTYPE, "%s: tensor '%s': invalid dtype %d", fn, sn, (int)dtype);
    if (ndim < 0 || ndim > TG_ST_MAX_DIMS || (ndim > 0 && !shape))
        return wfail(w, TG_ERR_SHAPE, "%s: tensor '%s': ndim %d not in 0..%d, or shape NULL", fn,
                     sn, ndim, TG_ST_MAX_DIMS);
    uint64_t bytes = dtype_sizes[dtype];
    for (int k = 0; k < ndim; k++)
        if (shape[k] < 0 || __builtin_mul_overflow(bytes, (uint64_t)shape[k], &bytes) ||
            bytes > (uint64_t)SIZE_MAX / 2)
            return wfail(w, TG_ERR_SHAPE, "%s: tensor '%s': invalid shape %s", fn, sn,
                         fmt_shape(ndim, shape).s);
    if (bytes > 0 && !data) return wfail(w, TG_ERR_VALUE, "%s: tensor '%s': data is NULL", fn, sn);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->items[i].name, name) == 0)
            return wfail(w, TG_ERR_VALUE, "%s: duplicate tensor name '%s'", fn, sn);
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 16;
        struct st_item *ni = realloc(w->items, (size_t)nc * sizeof *ni);
        if (!ni) return wfail(w, TG_ERR_NOMEM, "%s: out of memory", fn);
        w->items = ni;
        w->cap = nc;
    }
    struct st_item *it = &w->items[w->n];
    *it = (struct st_item){.name = strdup(name), .dtype = dtype, .ndim = ndim,
                           .data = malloc(bytes ? (size_t)bytes : 1), .nbytes = (size_t)bytes};
    if (!it->name || !it->data) {
        free(it->name);
        free(it->data);
        return wfail(w, TG_ERR_NOMEM, "%s: tensor '%s': out of memory for %llu bytes", fn, sn,
                     (unsigned long long)bytes);
    }
    if (bytes) memcpy(it->data, data, (size_t)bytes);
    for (int k = 0; k < ndim; k++) it->shape[k] = shape[k];
    w->n++;
    return TG_OK;
}

enum tg_status tg_st_writer_add_tensor(struct tg_st_writer *w, const char *name,
                                       const struct tg_tensor *x, int ndim, const int64_t *shape)
{
    static const char fn[] = "tg_st_writer_add_tensor";
    if (!w) return tg_error(TG_ERR_VALUE, "%s: writer is NULL", fn);
    if (!x || (unsigned)x->dtype > TG_F64 || x->rows < 0 || x->cols < 0)
        return wfail(w, TG_ERR_VALUE, "%s: tensor '%s': source is NULL or invalid", fn,
                     safe(name).s);
    int64_t numel = (int64_t)x->rows * x->cols, derived[2] = {x->rows, x->cols}, n = 1;
    if (!shape) { /* derive the shape from x: [], [rows·cols] or [rows, cols] */
        if (ndim < 0 || ndim > 2 || (ndim == 0 && numel != 1))
            return wfail(w, TG_ERR_SHAPE, "%s: tensor '%s': cannot view %dx%d as %d-D", fn,
                         safe(name).s, x->rows, x->cols, ndim);
        if (ndim == 1) derived[0] = numel;
        shape = derived;
    } else if (ndim >= 0 && ndim <= TG_ST_MAX_DIMS) {
        int bad = 0;
        for (int k = 0; k < ndim; k++)
            bad |= shape[k] < 0 || __builtin_mul_overflow(n, shape[k], &n);
        if (bad || n != numel)
            return wfail(w, TG_ERR_SHAPE, "%s: tensor '%s': shape %s does not hold %dx%d", fn,
                         safe(name).s, fmt_shape(ndim, shape).s, x->rows, x->cols);
    }
    return tg_st_writer_add(w, name, x->dtype == TG_F32 ? TG_ST_F32 : TG_ST_F64, ndim, shape,
                            x->data);
}

enum tg_status tg_st_writer_meta(struct tg_st_writer *w, const char *key, const char *value)
{
    static const char fn[] = "tg_st_writer_meta";
    if (!w) return tg_error(TG_ERR_VALUE, "%s: writer is NULL", fn);
    if (!key || !value || !valid_utf8(key) || !valid_utf8(value))
        return wfail(w, TG_ERR_VALUE, "%s: key '%s' or its value is NULL or not UTF-8", fn,
                     safe(key).s);
    if ((!w->meta && !(w->meta = json_object())) ||
        json_object_set_new(w->meta, key, json_string(value)) != 0)
        return wfail(w, TG_ERR_NOMEM, "%s: out of memory", fn);
    return TG_OK;
}

static int cmp_item_name(const void *a, const void *b)
{
    return strcmp((*(const struct st_item *const *)a)->name,
                  (*(const struct st_item *const *)b)->name);
}

/* Larger elements first, then by name: every tensor then starts at a multiple of its size. */
static int cmp_item_layout(const void *a, const void *b)
{
    const struct st_item *x = *(const struct st_item *const *)a;
    const struct st_item *y = *(const struct st_item *const *)b;
    size_t sx = dtype_sizes[x->dtype], sy = dtype_sizes[y->dtype];
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The JSON header padded with spaces to a multiple of 8 bytes (malloc'd, length *len), or NULL
 * when out of memory. Keys: __metadata__ (its keys sorted), then the tensors in name order —
 * jansson ≥ 2.8 dumps keys in insertion order, so the same contents give the same bytes. */
static char *build_header(struct tg_st_writer *w, struct st_item **by_name, size_t *len)
{
    json_t *root = json_object();
    int ok = root != NULL;
    size_t nm = json_object_size(w->meta), j = 0;
    if (ok && nm > 0) { /* metadata keys in sorted order */
        const char **keys = malloc(nm * sizeof *keys), *key;
        json_t *m = json_object(), *v;
        ok = json_object_set_new(root, "__metadata__", m) == 0 && keys; /* root owns m */
        if (ok) json_object_foreach(w->meta, key, v) keys[j++] = key;
        if (ok) qsort(keys, nm, sizeof *keys, cmp_name);
        for (j = 0; ok && j < nm; j++)
            ok = json_object_set(m, keys[j], json_object_get(w->meta, keys[j])) == 0;
        free(keys);
    }
    for (int i = 0; ok && i < w->n; i++) {
        const struct st_item *it = by_name[i];
        json_t *sh = json_array();
        ok = sh != NULL;
        for (int k = 0; ok && k < it->ndim; k++)
            ok = json_array_append_new(sh, json_integer((json_int_t)it->shape[k])) == 0;
        json_t *e = !ok ? NULL : json_pack("{s:s, s:O, s:[I, I]}", "dtype", dtype_names[it->dtype],
                                           "shape", sh, "data_offsets", (json_int_t)it->begin,
                                           (json_int_t)(it->begin + it->nbytes));
        json_decref(sh);
        ok = e && json_object_set_new(root, it->name, e) == 0;
    }
    char *js = ok ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!js) return NULL;
    size_t n = strlen(js), padded = (n + 7) / 8 * 8;
    char *h = malloc(padded + 1);
    if (h) {
        memcpy(h, js, n);
        memset(h + n, ' ', padded - n);
        h[padded] = '\0';
        *len = padded;
    }
    free(js);
    return h;
}

static int write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n > 0) {
        ssize_t r = write(fd, b, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* fsync the directory holding path so that the rename itself survives a power cut. Best
 * effort: some file systems refuse to fsync directories, and the new file is in place. */
static void sync_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    if (slash) slash[slash == dir ? 1 : 0] = '\0'; /* "/x" → "/", "a/b" → "a" */
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

enum tg_status tg_st_writer_save(struct tg_st_writer *w, const char *path)
{
    static const char fn[] = "tg_st_writer_save";
    if (!w || !path) return tg_error(TG_ERR_VALUE, "%s: writer or path is NULL", fn);
    if (w->err != TG_OK)
        return tg_error(w->err, "%s: %s: not written, an earlier call failed: %s", fn, path,
                        w->errmsg ? w->errmsg : "(message lost)");
    size_t cnt = (size_t)(w->n ? w->n : 1), tlen = strlen(path) + 32, hlen = 0;
    struct st_item **by_name = malloc(cnt * sizeof *by_name);
    struct st_item **by_layout = malloc(cnt * sizeof *by_layout);
    char *tmp = malloc(tlen), *header = NULL;
    enum tg_status st = TG_OK;
    int fd = -1, created = 0;
    if (!by_name || !by_layout || !tmp) {
        st = fail(TG_ERR_NOMEM, fn, path, NULL, "out of memory");
        goto out;
    }
    for (int i = 0; i < w->n; i++) by_name[i] = by_layout[i] = &w->items[i];
    qsort(by_name, (size_t)w->n, sizeof *by_name, cmp_item_name);
    qsort(by_layout, (size_t)w->n, sizeof *by_layout, cmp_item_layout);
    uint64_t pos = 0;
    for (int i = 0; i < w->n; i++) {
        by_layout[i]->begin = pos;
        pos += by_layout[i]->nbytes;
    }
    if (!(header = build_header(w, by_name, &hlen))) {
        st = fail(TG_ERR_NOMEM, fn, path, NULL, "out of memory for the header");
        goto out;
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0) {
        st = fail(TG_ERR_IO, fn, path, NULL, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    created = 1;
    uint64_t n64 = hlen;
    int bad = write_all(fd, &n64, 8) || write_all(fd, header, hlen);
    for (int i = 0; !bad && i < w->n; i++)
        bad = write_all(fd, by_layout[i]->data, by_layout[i]->nbytes);
    if (bad || fsync(fd) != 0) {
        st = fail(TG_ERR_IO, fn, path, NULL, "writing %s failed: %s", tmp, strerror(errno));
        goto out;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) {
        st = fail(TG_ERR_IO, fn, path, NULL, "closing %s failed: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st = fail(TG_ERR_IO, fn, path, NULL, "cannot rename %s over it: %s", tmp, strerror(errno));
        goto out;
    }
    created = 0;
    sync_dir(path);
out:
    if (fd >= 0) close(fd);
    if (created) unlink(tmp);
    free(header);
    free(tmp);
    free(by_name);
    free(by_layout);
    return st;
}
