/* safetensors.c — a validating safetensors reader and an atomic writer (see tg_safetensors.h).
 *
 * Reading keeps the whole file in one malloc'd buffer; tensors point into it. Validation happens
 * once, up front, so that everything after tg_st_read can trust the offsets:
 *   size ≥ 8;  N = u64le(bytes 0..8) ≤ 10⁸ and 8 + N ≤ size;  header = JSON object (no duplicate
 *   keys);  per tensor: dtype known, 0 ≤ shape[k], numel·elsize = end − begin (no overflow),
 *   begin ≤ end ≤ size − 8 − N;  sorted by begin, the intervals tile [0, size − 8 − N) exactly.
 * The tiling rule is the format's own ("the byte buffer needs to be entirely indexed, and cannot
 * contain holes"); it rejects overlaps, holes and trailing garbage with one pass.
 *
 * Writing builds the header with jansson (so names and metadata are escaped correctly) and
 * writes through a temporary file + fsync + rename, which is atomic on POSIX file systems: a
 * reader or a crash sees either the old file or the new one, never a mixture. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tg_safetensors.h"

/* Tensor bytes are copied to and from memory as they are: the file is little-endian. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tapegrad's safetensors code assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ull /* the reference implementation's limit on N */

static const char *const dtype_names[] = {"F32", "F64", "I32", "I64"};
static const size_t dtype_sizes[] = {4, 8, 4, 8};

const char *tg_st_dtype_name(enum tg_st_dtype d)
{
    return (unsigned)d < 4 ? dtype_names[d] : "?";
}

size_t tg_st_dtype_size(enum tg_st_dtype d)
{
    return (unsigned)d < 4 ? dtype_sizes[d] : 0;
}

int64_t tg_st_numel(const struct tg_st_tensor *t)
{
    int64_t n = 1;
    for (int k = 0; k < t->ndim; k++) n *= t->shape[k];
    return n;
}

/* A name from an untrusted file, made safe for a one-line message: control bytes become '?',
 * long names are cut (at a UTF-8 character boundary) and marked with "...". Returned by value
 * so it can be used inline in a printf argument list. */
struct safe_str { char s[100]; };

static struct safe_str safe(const char *in)
{
    struct safe_str o;
    size_t n = 0, max = 80;
    if (!in) in = "(null)";
    for (; in[n] && n < max; n++) {
        unsigned char c = (unsigned char)in[n];
        o.s[n] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (in[n]) {
        while (n > 0 && ((unsigned char)o.s[n] & 0xC0) == 0x80) n--; /* drop a cut sequence */
        if (n > 0 && ((unsigned char)o.s[n - 1] & 0xC0) == 0xC0) n--;
        memcpy(o.s + n, "...", 4);
    } else {
        o.s[n] = '\0';
    }
    return o;
}

/* "[4, 5]" — shape for messages (up to 8 dims, so 8·21 chars at most). */
struct shape_str { char s[200]; };

static struct shape_str fmt_shape(int ndim, const int64_t *shape)
{
    struct shape_str o;
    size_t len = 0;
    o.s[len++] = '[';
    for (int k = 0; k < ndim && k < TG_ST_MAX_DIMS; k++)
        len += (size_t)snprintf(o.s + len, sizeof o.s - len, "%s%lld", k ? ", " : "",
                                (long long)shape[k]);
    snprintf(o.s + len, sizeof o.s - len, "]");
    return o;
}

/* ================================================================ reading */

struct st_entry {
    struct tg_st_tensor t; /* what callers see; t.name is owned here */
    uint64_t begin, end;   /* data_offsets */
    void *copy;            /* an aligned copy when the bytes in the file are misaligned */
};

struct tg_st_file {
    char *path;
    unsigned char *buf; /* the whole file */
    size_t size;
    int n;
    struct st_entry *e; /* sorted by name */
    int nmeta;
    char **mkey, **mval; /* sorted by key */
};

static enum tg_status read_all(const char *path, unsigned char **out, size_t *out_size)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tg_error(TG_ERR_IO, "tg_st_read: %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return tg_error(TG_ERR_IO, "tg_st_read: %s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tg_error(TG_ERR_IO, "tg_st_read: %s: %s", path,
                        S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
    }
    size_t cap = (size_t)st.st_size + 1, len = 0; /* +1: reaching EOF needs one more read */
    unsigned char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return tg_error(TG_ERR_NOMEM, "tg_st_read: %s: cannot allocate %zu bytes", path, cap);
    }
    for (;;) {
        if (len == cap) { /* the file grew while we read it */
            unsigned char *nb = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                close(fd);
                return tg_error(TG_ERR_NOMEM, "tg_st_read: %s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int err = errno;
            free(buf);
            close(fd);
            return tg_error(TG_ERR_IO, "tg_st_read: %s: read failed: %s", path, strerror(err));
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    *out = buf;
    *out_size = len;
    return TG_OK;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const struct st_entry *)a)->t.name, ((const struct st_entry *)b)->t.name);
}

static int cmp_entry_offset(const void *a, const void *b)
{
    const struct st_entry *x = *(const struct st_entry *const *)a;
    const struct st_entry *y = *(const struct st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* One header entry → e (name already set). data_len is the size of the data buffer. */
static enum tg_status parse_entry(const char *path, json_t *v, struct st_entry *e, size_t data_len)
{
    const char *nm = e->t.name;
    if (!json_is_object(v))
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: tensor '%s': entry is not a JSON object",
                        path, safe(nm).s);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape");
    json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: tensor '%s': \"dtype\" is missing or not a string",
                        path, safe(nm).s);
    int d = -1;
    for (int k = 0; k < 4; k++)
        if (strcmp(json_string_value(dt), dtype_names[k]) == 0) d = k;
    if (d < 0)
        return tg_error(TG_ERR_FORMAT,
                        "tg_st_read: %s: tensor '%s': unsupported dtype '%s' (tapegrad reads F32, F64, I32, I64)",
                        path, safe(nm).s, safe(json_string_value(dt)).s);
    e->t.dtype = (enum tg_st_dtype)d;

    if (!json_is_array(sh))
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: tensor '%s': \"shape\" is missing or not an array",
                        path, safe(nm).s);
    if (json_array_size(sh) > TG_ST_MAX_DIMS)
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: tensor '%s': shape has %zu dimensions (at most %d)",
                        path, safe(nm).s, json_array_size(sh), TG_ST_MAX_DIMS);
    e->t.ndim = (int)json_array_size(sh);
    /* bytes = Π shape[k] · elsize, watching for overflow of 64 bits. */
    uint64_t bytes = dtype_sizes[d];
    int overflow = 0;
    for (int k = 0; k < e->t.ndim; k++) {
        json_t *x = json_array_get(sh, (size_t)k);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return tg_error(TG_ERR_FORMAT,
                            "tg_st_read: %s: tensor '%s': shape entry %d is not a non-negative integer",
                            path, safe(nm).s, k);
        e->t.shape[k] = (int64_t)json_integer_value(x);
        if (__builtin_mul_overflow(bytes, (uint64_t)e->t.shape[k], &bytes)) overflow = 1;
    }
    struct shape_str shs = fmt_shape(e->t.ndim, e->t.shape);
    if (overflow)
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: tensor '%s': shape %s is too large",
                        path, safe(nm).s, shs.s);

    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)))
        return tg_error(TG_ERR_FORMAT,
                        "tg_st_read: %s: tensor '%s': \"data_offsets\" is missing or not two integers",
                        path, safe(nm).s);
    json_int_t b = json_integer_value(json_array_get(off, 0));
    json_int_t en = json_integer_value(json_array_get(off, 1));
    if (b < 0 || en < 0 || b > en)
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: tensor '%s': invalid data_offsets [%lld, %lld)",
                        path, safe(nm).s, (long long)b, (long long)en);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    if (e->end - e->begin != bytes)
        return tg_error(TG_ERR_FORMAT,
                        "tg_st_read: %s: tensor '%s': data_offsets [%lld, %lld) but shape %s of %s needs %llu bytes",
                        path, safe(nm).s, (long long)b, (long long)en, shs.s, dtype_names[d],
                        (unsigned long long)bytes);
    if (e->end > data_len)
        return tg_error(TG_ERR_FORMAT,
                        "tg_st_read: %s: tensor '%s': data_offsets [%lld, %lld) extend beyond the %zu-byte data buffer (truncated file?)",
                        path, safe(nm).s, (long long)b, (long long)en, data_len);
    e->t.nbytes = (size_t)bytes;
    return TG_OK;
}

static enum tg_status parse_meta(const char *path, json_t *m, struct tg_st_file *f)
{
    if (!json_is_object(m))
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: \"__metadata__\" is not a JSON object", path);
    size_t n = json_object_size(m);
    f->mkey = calloc(n + 1, sizeof *f->mkey);
    f->mval = calloc(n + 1, sizeof *f->mval);
    if (!f->mkey || !f->mval) return tg_error(TG_ERR_NOMEM, "tg_st_read: %s: out of memory", path);
    const char *key;
    json_t *v;
    json_object_foreach(m, key, v) {
        if (!json_is_string(v))
            return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: __metadata__ value of '%s' is not a string",
                            path, safe(key).s);
        /* key and value share one allocation, value right after key's NUL: sorting keys moves
         * the pair together. */
        size_t kl = strlen(key), vl = strlen(json_string_value(v));
        char *kv = malloc(kl + vl + 2);
        if (!kv) return tg_error(TG_ERR_NOMEM, "tg_st_read: %s: out of memory", path);
        memcpy(kv, key, kl + 1);
        memcpy(kv + kl + 1, json_string_value(v), vl + 1);
        f->mkey[f->nmeta++] = kv;
    }
    qsort(f->mkey, (size_t)f->nmeta, sizeof *f->mkey, cmp_str_ptr);
    for (int i = 0; i < f->nmeta; i++) f->mval[i] = f->mkey[i] + strlen(f->mkey[i]) + 1;
    return TG_OK;
}

/* Check that the tensors tile the data buffer and give each an aligned data pointer. */
static enum tg_status place_tensors(const char *path, struct tg_st_file *f,
                                    const unsigned char *data, size_t data_len)
{
    struct st_entry **by = malloc((size_t)(f->n ? f->n : 1) * sizeof *by);
    if (!by) return tg_error(TG_ERR_NOMEM, "tg_st_read: %s: out of memory", path);
    for (int i = 0; i < f->n; i++) by[i] = &f->e[i];
    qsort(by, (size_t)f->n, sizeof *by, cmp_entry_offset);
    uint64_t pos = 0;
    const struct st_entry *prev = NULL;
    enum tg_status st = TG_OK;
    for (int i = 0; i < f->n && st == TG_OK; i++) {
        const struct st_entry *e = by[i];
        if (e->begin < pos)
            st = tg_error(TG_ERR_FORMAT,
                          "tg_st_read: %s: tensor '%s': data_offsets [%llu, %llu) overlap tensor '%s' at [%llu, %llu)",
                          path, safe(e->t.name).s, (unsigned long long)e->begin,
                          (unsigned long long)e->end, safe(prev->t.name).s,
                          (unsigned long long)prev->begin, (unsigned long long)prev->end);
        else if (e->begin > pos)
            st = tg_error(TG_ERR_FORMAT,
                          "tg_st_read: %s: tensor '%s': data_offsets [%llu, %llu) leave a hole: bytes [%llu, %llu) belong to no tensor",
                          path, safe(e->t.name).s, (unsigned long long)e->begin,
                          (unsigned long long)e->end, (unsigned long long)pos,
                          (unsigned long long)e->begin);
        pos = e->end;
        prev = e;
    }
    free(by);
    if (st != TG_OK) return st;
    if (pos != data_len)
        return tg_error(TG_ERR_FORMAT,
                        "tg_st_read: %s: the data buffer has %zu bytes but the tensors cover %llu (trailing bytes)",
                        path, data_len, (unsigned long long)pos);
    for (int i = 0; i < f->n; i++) {
        struct st_entry *e = &f->e[i];
        const unsigned char *p = data + e->begin;
        size_t align = dtype_sizes[e->t.dtype];
        if (e->t.nbytes > 0 && (uintptr_t)p % align != 0) {
            e->copy = malloc(e->t.nbytes); /* malloc's alignment suits every dtype */
            if (!e->copy) return tg_error(TG_ERR_NOMEM, "tg_st_read: %s: out of memory", path);
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
        return tg_error(TG_ERR_FORMAT,
                        "tg_st_read: %s: file is %zu bytes, too short for the 8-byte header length",
                        path, f->size);
    uint64_t hlen;
    memcpy(&hlen, f->buf, 8);
    if (hlen > ST_MAX_HEADER)
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: header length %llu is absurd (limit %llu)",
                        path, (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > f->size - 8)
        return tg_error(TG_ERR_FORMAT,
                        "tg_st_read: %s: header length %llu exceeds the %zu bytes that follow it (truncated file?)",
                        path, (unsigned long long)hlen, f->size - 8);
    json_error_t jerr;
    /* REJECT_DUPLICATES: jansson would otherwise keep the last of two equal names silently. */
    json_t *root = json_loadb((const char *)f->buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return tg_error(TG_ERR_FORMAT, "tg_st_read: %s: header is not valid JSON: %s (column %d)",
                        path, jerr.text, jerr.column);
    enum tg_status st = TG_OK;
    if (!json_is_object(root)) {
        st = tg_error(TG_ERR_FORMAT, "tg_st_read: %s: header is not a JSON object", path);
        goto done;
    }
    json_t *meta = json_object_get(root, "__metadata__");
    size_t ntensors = json_object_size(root) - (meta ? 1 : 0);
    if (ntensors > (size_t)INT32_MAX) {
        st = tg_error(TG_ERR_FORMAT, "tg_st_read: %s: too many tensors", path);
        goto done;
    }
    f->e = calloc(ntensors + 1, sizeof *f->e);
    if (!f->e) {
        st = tg_error(TG_ERR_NOMEM, "tg_st_read: %s: out of memory", path);
        goto done;
    }
    if (meta && (st = parse_meta(path, meta, f)) != TG_OK) goto done;
    size_t data_len = f->size - 8 - (size_t)hlen;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        struct st_entry *e = &f->e[f->n];
        if (!(e->t.name = strdup(key))) {
            st = tg_error(TG_ERR_NOMEM, "tg_st_read: %s: out of memory", path);
            goto done;
        }
        f->n++;
        if ((st = parse_entry(path, v, e, data_len)) != TG_OK) goto done;
    }
    qsort(f->e, (size_t)f->n, sizeof *f->e, cmp_entry_name);
    st = place_tensors(path, f, f->buf + 8 + hlen, data_len);
done:
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
        return tg_error(TG_ERR_NOMEM, "tg_st_read: %s: out of memory", path);
    }
    enum tg_status st = read_all(path, &f->buf, &f->size);
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
    for (int i = 0; i < f->nmeta; i++) free(f->mkey[i]); /* owns the value too */
    free(f->e);
    free(f->mkey);
    free(f->mval);
    free(f->buf);
    free(f->path);
    free(f);
}

const char *tg_st_path(const struct tg_st_file *f) { return f ? f->path : NULL; }
int tg_st_count(const struct tg_st_file *f) { return f ? f->n : 0; }

const struct tg_st_tensor *tg_st_at(const struct tg_st_file *f, int i)
{
    return f && i >= 0 && i < f->n ? &f->e[i].t : NULL;
}

const struct tg_st_tensor *tg_st_find(const struct tg_st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(name, f->e[mid].t.name);
        if (c == 0) return &f->e[mid].t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *tg_st_meta(const struct tg_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int lo = 0, hi = f->nmeta - 1; lo <= hi;) {
        int mid = lo + (hi - lo) / 2, c = strcmp(key, f->mkey[mid]);
        if (c == 0) return f->mval[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

int tg_st_meta_count(const struct tg_st_file *f) { return f ? f->nmeta : 0; }

const char *tg_st_meta_key(const struct tg_st_file *f, int i)
{
    return f && i >= 0 && i < f->nmeta ? f->mkey[i] : NULL;
}

/* ------------------------------------------------------------- typed getters */

/* *out = the tensor `name`, checked against exp_shape (when exp_ndim > 0); an error naming fn,
 * the file and the tensor otherwise. */
static enum tg_status lookup(const char *fn, const struct tg_st_file *f, const char *name,
                             int exp_ndim, const int64_t *exp_shape, const struct tg_st_tensor **out)
{
    if (!f || !name) return tg_error(TG_ERR_VALUE, "%s: file or name is NULL", fn);
    const struct tg_st_tensor *t = tg_st_find(f, name);
    if (!t) return tg_error(TG_ERR_FORMAT, "%s: %s: tensor '%s' is missing", fn, f->path, safe(name).s);
    if (exp_ndim > 0) {
        int same = exp_shape && exp_ndim == t->ndim;
        for (int k = 0; same && k < t->ndim; k++) same = exp_shape[k] == t->shape[k];
        if (!same)
            return tg_error(TG_ERR_FORMAT, "%s: %s: tensor '%s' has shape %s, expected %s", fn,
                            f->path, safe(name).s, fmt_shape(t->ndim, t->shape).s,
                            exp_shape ? fmt_shape(exp_ndim, exp_shape).s : "(null)");
    }
    *out = t;
    return TG_OK;
}

/* Element i of t as a double / an int64 (data is aligned for its dtype by construction). */
static double elem_f64(const struct tg_st_tensor *t, size_t i)
{
    switch (t->dtype) {
    case TG_ST_F32: return ((const float *)t->data)[i];
    case TG_ST_F64: return ((const double *)t->data)[i];
    case TG_ST_I32: return ((const int32_t *)t->data)[i];
    default: return (double)((const int64_t *)t->data)[i];
    }
}

enum tg_status tg_st_get_tensor(const struct tg_st_file *f, const char *name,
                                struct tg_tensor *dst, int exp_ndim, const int64_t *exp_shape)
{
    static const char fn[] = "tg_st_get_tensor";
    if (!dst || (!dst->data && tg_numel(dst) > 0) || (unsigned)dst->dtype > TG_F64)
        return tg_error(TG_ERR_VALUE, "%s: destination tensor for '%s' is NULL or invalid", fn,
                        safe(name).s);
    const struct tg_st_tensor *t;
    enum tg_status st = lookup(fn, f, name, exp_ndim, exp_shape, &t);
    if (st != TG_OK) return st;
    if (t->dtype != TG_ST_F32 && t->dtype != TG_ST_F64)
        return tg_error(TG_ERR_FORMAT, "%s: %s: tensor '%s' is %s, expected F32 or F64", fn, f->path,
                        safe(name).s, dtype_names[t->dtype]);
    /* 2-D view: every dimension but the last folds into rows. */
    int64_t rows = 1, cols = t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
    for (int k = 0; k + 1 < t->ndim; k++) rows *= t->shape[k];
    if (rows != dst->rows || cols != dst->cols)
        return tg_error(TG_ERR_FORMAT, "%s: %s: tensor '%s' has shape %s (%lldx%lld), expected %dx%d",
                        fn, f->path, safe(name).s, fmt_shape(t->ndim, t->shape).s, (long long)rows,
                        (long long)cols, dst->rows, dst->cols);
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

enum tg_status tg_st_get_i64(const struct tg_st_file *f, const char *name, int64_t *dst,
                             size_t n, int exp_ndim, const int64_t *exp_shape)
{
    static const char fn[] = "tg_st_get_i64";
    const struct tg_st_tensor *t;
    enum tg_status st = lookup(fn, f, name, exp_ndim, exp_shape, &t);
    if (st != TG_OK) return st;
    if (t->dtype != TG_ST_I32 && t->dtype != TG_ST_I64)
        return tg_error(TG_ERR_FORMAT, "%s: %s: tensor '%s' is %s, expected I32 or I64", fn, f->path,
                        safe(name).s, dtype_names[t->dtype]);
    if ((uint64_t)tg_st_numel(t) != (uint64_t)n)
        return tg_error(TG_ERR_FORMAT, "%s: %s: tensor '%s' has %lld elements, expected %zu", fn,
                        f->path, safe(name).s, (long long)tg_st_numel(t), n);
    if (n && !dst) return tg_error(TG_ERR_VALUE, "%s: destination for '%s' is NULL", fn, safe(name).s);
    for (size_t i = 0; i < n; i++)
        dst[i] = t->dtype == TG_ST_I64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
    return TG_OK;
}

enum tg_status tg_st_get_f64(const struct tg_st_file *f, const char *name, double *dst,
                             size_t n, int exp_ndim, const int64_t *exp_shape)
{
    static const char fn[] = "tg_st_get_f64";
    const struct tg_st_tensor *t;
    enum tg_status st = lookup(fn, f, name, exp_ndim, exp_shape, &t);
    if (st != TG_OK) return st;
    if ((uint64_t)tg_st_numel(t) != (uint64_t)n)
        return tg_error(TG_ERR_FORMAT, "%s: %s: tensor '%s' has %lld elements, expected %zu", fn,
                        f->path, safe(name).s, (long long)tg_st_numel(t), n);
    if (n && !dst) return tg_error(TG_ERR_VALUE, "%s: destination for '%s' is NULL", fn, safe(name).s);
    for (size_t i = 0; i < n; i++) dst[i] = elem_f64(t, i);
    return TG_OK;
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
    char **mkey, **mval;
    int nmeta, mcap;
    enum tg_status err; /* first failure of an add, replayed by save */
    char *errmsg;
};

/* Record the first failure on w (an add's status is also returned to its caller). */
static enum tg_status writer_fail(struct tg_st_writer *w, enum tg_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum tg_status writer_fail(struct tg_st_writer *w, enum tg_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w && w->err == TG_OK) {
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
    for (int i = 0; i < w->nmeta; i++) {
        free(w->mkey[i]);
        free(w->mval[i]);
    }
    free(w->items);
    free(w->mkey);
    free(w->mval);
    free(w->errmsg);
    free(w);
}

static int valid_utf8(const char *s)
{
    json_t *j = json_string(s); /* jansson validates UTF-8 when it makes a string */
    json_decref(j);
    return j != NULL;
}

enum tg_status tg_st_writer_add(struct tg_st_writer *w, const char *name, enum tg_st_dtype dtype,
                                int ndim, const int64_t *shape, const void *data)
{
    static const char fn[] = "tg_st_writer_add";
    if (!w) return tg_error(TG_ERR_VALUE, "%s: writer is NULL", fn);
    if (!name || !valid_utf8(name) || strcmp(name, "__metadata__") == 0)
        return writer_fail(w, TG_ERR_VALUE, "%s: tensor name '%s' is NULL, not UTF-8 or reserved",
                           fn, safe(name).s);
    if ((unsigned)dtype > TG_ST_I64)
        return writer_fail(w, TG_ERR_DTYPE, "%s: tensor '%s': invalid dtype %d", fn, safe(name).s,
                           (int)dtype);
    if (ndim < 0 || ndim > TG_ST_MAX_DIMS || (ndim > 0 && !shape))
        return writer_fail(w, TG_ERR_SHAPE, "%s: tensor '%s': ndim %d (0..%d, shape %s)", fn,
                           safe(name).s, ndim, TG_ST_MAX_DIMS, shape ? "given" : "NULL");
    uint64_t bytes = dtype_sizes[dtype];
    for (int k = 0; k < ndim; k++)
        if (shape[k] < 0 || __builtin_mul_overflow(bytes, (uint64_t)shape[k], &bytes) ||
            bytes > (uint64_t)SIZE_MAX / 2)
            return writer_fail(w, TG_ERR_SHAPE, "%s: tensor '%s': invalid shape %s", fn,
                               safe(name).s, fmt_shape(ndim, shape).s);
    if (bytes > 0 && !data)
        return writer_fail(w, TG_ERR_VALUE, "%s: tensor '%s': data is NULL", fn, safe(name).s);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->items[i].name, name) == 0)
            return writer_fail(w, TG_ERR_VALUE, "%s: duplicate tensor name '%s'", fn, safe(name).s);
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 16;
        struct st_item *ni = realloc(w->items, (size_t)nc * sizeof *ni);
        if (!ni) return writer_fail(w, TG_ERR_NOMEM, "%s: out of memory", fn);
        w->items = ni;
        w->cap = nc;
    }
    struct st_item *it = &w->items[w->n];
    memset(it, 0, sizeof *it);
    it->name = strdup(name);
    it->data = malloc(bytes ? (size_t)bytes : 1);
    if (!it->name || !it->data) {
        free(it->name);
        free(it->data);
        return writer_fail(w, TG_ERR_NOMEM, "%s: tensor '%s': out of memory (%llu bytes)", fn,
                           safe(name).s, (unsigned long long)bytes);
    }
    if (bytes) memcpy(it->data, data, (size_t)bytes);
    it->dtype = dtype;
    it->ndim = ndim;
    for (int k = 0; k < ndim; k++) it->shape[k] = shape[k];
    it->nbytes = (size_t)bytes;
    w->n++;
    return TG_OK;
}

enum tg_status tg_st_writer_add_tensor(struct tg_st_writer *w, const char *name,
                                       const struct tg_tensor *x, int ndim, const int64_t *shape)
{
    static const char fn[] = "tg_st_writer_add_tensor";
    if (!w) return tg_error(TG_ERR_VALUE, "%s: writer is NULL", fn);
    if (!x || (unsigned)x->dtype > TG_F64 || x->rows < 0 || x->cols < 0)
        return writer_fail(w, TG_ERR_VALUE, "%s: tensor '%s': source is NULL or invalid", fn,
                           safe(name).s);
    int64_t numel = (int64_t)x->rows * x->cols, derived[2];
    if (!shape) {
        if (ndim == 0 && numel != 1)
            return writer_fail(w, TG_ERR_SHAPE, "%s: tensor '%s': a scalar needs a 1x1 source, got %dx%d",
                               fn, safe(name).s, x->rows, x->cols);
        if (ndim < 0 || ndim > 2)
            return writer_fail(w, TG_ERR_SHAPE, "%s: tensor '%s': shape NULL needs ndim 0, 1 or 2, got %d",
                               fn, safe(name).s, ndim);
        derived[0] = ndim == 1 ? numel : x->rows;
        derived[1] = x->cols;
        shape = derived;
    } else if (ndim >= 0 && ndim <= TG_ST_MAX_DIMS) {
        int64_t n = 1;
        int bad = 0;
        for (int k = 0; k < ndim; k++)
            if (shape[k] < 0 || __builtin_mul_overflow(n, shape[k], &n)) bad = 1;
        if (bad || n != numel)
            return writer_fail(w, TG_ERR_SHAPE, "%s: tensor '%s': shape %s does not hold the %dx%d source",
                               fn, safe(name).s, fmt_shape(ndim, shape).s, x->rows, x->cols);
    }
    return tg_st_writer_add(w, name, x->dtype == TG_F32 ? TG_ST_F32 : TG_ST_F64, ndim, shape, x->data);
}

enum tg_status tg_st_writer_meta(struct tg_st_writer *w, const char *key, const char *value)
{
    static const char fn[] = "tg_st_writer_meta";
    if (!w) return tg_error(TG_ERR_VALUE, "%s: writer is NULL", fn);
    if (!key || !value || !valid_utf8(key) || !valid_utf8(value))
        return writer_fail(w, TG_ERR_VALUE, "%s: key '%s' or its value is NULL or not UTF-8", fn,
                           safe(key).s);
    char *v = strdup(value);
    if (!v) return writer_fail(w, TG_ERR_NOMEM, "%s: out of memory", fn);
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->mkey[i], key) == 0) {
            free(w->mval[i]);
            w->mval[i] = v;
            return TG_OK;
        }
    if (w->nmeta == w->mcap) {
        int nc = w->mcap ? 2 * w->mcap : 8;
        char **nk = realloc(w->mkey, (size_t)nc * sizeof *nk);
        if (nk) w->mkey = nk;
        char **nv = nk ? realloc(w->mval, (size_t)nc * sizeof *nv) : NULL;
        if (nv) w->mval = nv;
        if (!nk || !nv) {
            free(v);
            return writer_fail(w, TG_ERR_NOMEM, "%s: out of memory", fn);
        }
        w->mcap = nc;
    }
    if (!(w->mkey[w->nmeta] = strdup(key))) {
        free(v);
        return writer_fail(w, TG_ERR_NOMEM, "%s: out of memory", fn);
    }
    w->mval[w->nmeta++] = v;
    return TG_OK;
}

static int cmp_item_name(const void *a, const void *b)
{
    return strcmp((*(const struct st_item *const *)a)->name, (*(const struct st_item *const *)b)->name);
}

/* Larger elements first, then by name: every tensor then starts at a multiple of its size. */
static int cmp_item_layout(const void *a, const void *b)
{
    const struct st_item *x = *(const struct st_item *const *)a, *y = *(const struct st_item *const *)b;
    size_t sx = dtype_sizes[x->dtype], sy = dtype_sizes[y->dtype];
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The padded JSON header (malloc'd, length *len, a multiple of 8); NULL when out of memory. */
static char *build_header(struct tg_st_writer *w, struct st_item **by_name, size_t *len)
{
    json_t *root = json_object();
    int ok = root != NULL;
    if (ok && w->nmeta > 0) {
        /* Keys in sorted order so that the same contents give the same bytes. */
        int *ord = malloc((size_t)w->nmeta * sizeof *ord);
        json_t *m = json_object();
        ok = ord && m;
        for (int i = 0; ok && i < w->nmeta; i++) {
            int j = i;
            while (j > 0 && strcmp(w->mkey[ord[j - 1]], w->mkey[i]) > 0) {
                ord[j] = ord[j - 1];
                j--;
            }
            ord[j] = i;
        }
        for (int i = 0; ok && i < w->nmeta; i++)
            ok = json_object_set_new(m, w->mkey[ord[i]], json_string(w->mval[ord[i]])) == 0;
        free(ord);
        if (ok) ok = json_object_set_new(root, "__metadata__", m) == 0;
        else json_decref(m);
    }
    for (int i = 0; ok && i < w->n; i++) {
        const struct st_item *it = by_name[i];
        json_t *e = json_object(), *sh = json_array();
        ok = e && sh && json_object_set_new(e, "dtype", json_string(dtype_names[it->dtype])) == 0;
        for (int k = 0; ok && k < it->ndim; k++)
            ok = json_array_append_new(sh, json_integer((json_int_t)it->shape[k])) == 0;
        if (ok) ok = json_object_set_new(e, "shape", sh) == 0;
        else json_decref(sh);
        sh = NULL;
        json_t *off = ok ? json_pack("[II]", (json_int_t)it->begin,
                                     (json_int_t)(it->begin + it->nbytes)) : NULL;
        if (ok) ok = off && json_object_set_new(e, "data_offsets", off) == 0;
        if (ok) ok = json_object_set_new(root, it->name, e) == 0;
        else json_decref(e);
    }
    /* jansson ≥ 2.8 dumps keys in insertion order: __metadata__, then names in sorted order. */
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

/* fsync the directory holding path, so that the rename itself survives a power cut. */
static void sync_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    const char *d = dir;
    if (!slash) d = ".";
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: some file systems refuse (EINVAL) */
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
    struct st_item **by_name = malloc((size_t)(w->n ? w->n : 1) * sizeof *by_name);
    struct st_item **by_layout = malloc((size_t)(w->n ? w->n : 1) * sizeof *by_layout);
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    char *header = NULL;
    size_t hlen = 0;
    enum tg_status st = TG_OK;
    int fd = -1, created = 0;
    if (!by_name || !by_layout || !tmp) {
        st = tg_error(TG_ERR_NOMEM, "%s: %s: out of memory", fn, path);
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
        st = tg_error(TG_ERR_NOMEM, "%s: %s: cannot build the header (out of memory)", fn, path);
        goto out;
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = tg_error(TG_ERR_IO, "%s: %s: cannot create %s: %s", fn, path, tmp, strerror(errno));
        goto out;
    }
    created = 1;
    uint64_t n64 = hlen;
    int bad = write_all(fd, &n64, 8) || write_all(fd, header, hlen);
    for (int i = 0; !bad && i < w->n; i++) bad = write_all(fd, by_layout[i]->data, by_layout[i]->nbytes);
    if (bad || fsync(fd) != 0) {
        st = tg_error(TG_ERR_IO, "%s: %s: writing %s failed: %s", fn, path, tmp, strerror(errno));
        goto out;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) {
        st = tg_error(TG_ERR_IO, "%s: %s: closing %s failed: %s", fn, path, tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st = tg_error(TG_ERR_IO, "%s: %s: cannot rename %s over it: %s", fn, path, tmp, strerror(errno));
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
