/* tensor.c — tensor values: heap tensors (parameters, long-lived state) and element access.
 * Arena tensors are made in tape.c; both are the same struct, told apart by TG_HEAP. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

size_t tg_dtype_size(enum tg_dtype d) { return d == TG_F64 ? sizeof(double) : sizeof(float); }

const char *tg_dtype_name(enum tg_dtype d) { return d == TG_F64 ? "float64" : "float32"; }

/* NULL (with the last error set) unless x has values and (r, c) is inside it; a tensor
 * pending in a live fusion region is computed first. */
static const void *readable(const char *fn, const struct tg_tensor *x, int r, int c)
{
    if (!x) {
        tg_error(TG_ERR_VALUE, "%s: tensor is NULL", fn);
        return NULL;
    }
    /* (0, k) for the k-th element in row-major order is allowed: callers walk tensors flat */
    if (r < 0 || c < 0 || (size_t)r * x->cols + (size_t)c >= tg_numel(x)) {
        tg_error(TG_ERR_SHAPE, "%s: index (%d, %d) outside (%dx%d)", fn, r, c, x->rows, x->cols);
        return NULL;
    }
    if (!x->data && (x->flags & TG_PENDING)) {
        struct tg_tape *t = TG_PRIV(x)->fuse_tape;
        struct tg_tensor *m = (struct tg_tensor *)x; /* computing it fills in its data */
        if (t && tg_fuse_check_alive(t, fn, 0, m)) tg_fuse_realize(t, m);
        if (!x->data && t) tg_error(tg_tape_status(t) ? tg_tape_status(t) : TG_ERR_STATE, "%s",
                                    tg_tape_status(t) ? tg_tape_error(t) : "tg_get: no values");
    }
    if (!x->data) {
        if (!(x->flags & TG_PENDING)) tg_error(TG_ERR_STATE, "%s: tensor has no values", fn);
        return NULL;
    }
    return x->data;
}

double tg_get(const struct tg_tensor *x, int r, int c)
{
    if (!readable("tg_get", x, r, c)) return NAN;
    size_t i = (size_t)r * x->cols + c;
    return x->dtype == TG_F64 ? ((const double *)x->data)[i] : ((const float *)x->data)[i];
}

void tg_set(struct tg_tensor *x, int r, int c, double v)
{
    if (!readable("tg_set", x, r, c)) return;
    size_t i = (size_t)r * x->cols + c;
    if (x->dtype == TG_F64) ((double *)x->data)[i] = v;
    else ((float *)x->data)[i] = (float)v;
}

double tg_grad_get(const struct tg_tensor *x, int r, int c)
{
    if (!x->grad) return 0.0;
    size_t i = (size_t)r * x->cols + c;
    return x->dtype == TG_F64 ? ((const double *)x->grad)[i] : ((const float *)x->grad)[i];
}

static void *aligned_zalloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = TG_ALIGN;
    if (posix_memalign(&p, TG_ALIGN, (bytes + TG_ALIGN - 1) & ~(size_t)(TG_ALIGN - 1)) != 0)
        return NULL;
    memset(p, 0, bytes);
    return p;
}

static struct tg_tensor *heap_new(const char *fn, int rows, int cols, enum tg_dtype dtype,
                                  int with_grad)
{
    if (rows <= 0 || cols <= 0) {
        tg_error(TG_ERR_SHAPE, "%s: shape must be positive, got (%dx%d)", fn, rows, cols);
        return NULL;
    }
    if (dtype != TG_F32 && dtype != TG_F64) {
        tg_error(TG_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)dtype);
        return NULL;
    }
    struct tg_tensor *x = calloc(1, sizeof *x);
    if (!x) goto nomem;
    x->rows = rows;
    x->cols = cols;
    x->dtype = dtype;
    x->flags = TG_HEAP;
    x->data = aligned_zalloc(tg_nbytes(x));
    if (!x->data) goto nomem;
    if (with_grad) {
        x->grad = aligned_zalloc(tg_nbytes(x));
        if (!x->grad) goto nomem;
        x->flags |= TG_REQUIRES_GRAD;
    }
    return x;
nomem:
    tg_tensor_free(x);
    tg_error(TG_ERR_NOMEM, "%s: out of memory for (%dx%d) %s", fn, rows, cols, tg_dtype_name(dtype));
    return NULL;
}

struct tg_tensor *tg_param_new(const char *name, int rows, int cols, enum tg_dtype dtype)
{
    struct tg_tensor *x = heap_new("tg_param_new", rows, cols, dtype, 1);
    if (x) {
        x->flags |= TG_PARAM;
        x->name = name;
    }
    return x;
}

struct tg_tensor *tg_tensor_new_heap(int rows, int cols, enum tg_dtype dtype)
{
    return heap_new("tg_tensor_new_heap", rows, cols, dtype, 0);
}

void tg_tensor_free(struct tg_tensor *x)
{
    if (!x) return;
    if (!(x->flags & TG_HEAP)) { /* an arena tensor: its tape frees it */
        tg_error(TG_ERR_STATE, "tg_tensor_free: (%dx%d) belongs to a tape (tg_tape_reset frees "
                 "it), not to the heap", x->rows, x->cols);
        return;
    }
    free(x->data);
    free(x->grad);
    free(x);
}

void tg_tensor_zero_grad(struct tg_tensor *x)
{
    if (x && x->grad) memset(x->grad, 0, tg_nbytes(x));
}

enum tg_status tg_tensor_set_requires_grad(struct tg_tensor *x)
{
    if (!x || !(x->flags & TG_HEAP))
        return tg_error(TG_ERR_STATE, "tg_tensor_set_requires_grad: only heap tensors (arena "
                                      "leaves get gradients through ops)");
    if (!x->grad) {
        x->grad = aligned_zalloc(tg_nbytes(x));
        if (!x->grad) return tg_error(TG_ERR_NOMEM, "tg_tensor_set_requires_grad: out of memory");
    }
    x->flags |= TG_REQUIRES_GRAD;
    return TG_OK;
}

enum tg_status tg_tensor_copy(struct tg_tensor *dst, const struct tg_tensor *src)
{
    if (!dst || !src) return tg_error(TG_ERR_VALUE, "tg_tensor_copy: NULL tensor");
    if (!dst->data || !src->data)
        return tg_error(TG_ERR_STATE, "tg_tensor_copy: a tensor is still pending in a fusion "
                                      "region; it has values after tg_tape_fuse_end");
    if (dst->rows != src->rows || dst->cols != src->cols)
        return tg_error(TG_ERR_SHAPE, "tg_tensor_copy: shapes differ: (%dx%d) <- (%dx%d)",
                        dst->rows, dst->cols, src->rows, src->cols);
    size_t n = tg_numel(src);
    if (dst->dtype == src->dtype) {
        memmove(dst->data, src->data, tg_nbytes(src));
    } else if (dst->dtype == TG_F64) {
        const float *s = src->data;
        double *d = dst->data;
        for (size_t i = 0; i < n; i++) d[i] = s[i];
    } else {
        const double *s = src->data;
        float *d = dst->data;
        for (size_t i = 0; i < n; i++) d[i] = (float)s[i];
    }
    return TG_OK;
}

void tg_tensor_fill(struct tg_tensor *x, double v)
{
    if (!readable("tg_tensor_fill", x, 0, 0)) return;
    size_t n = tg_numel(x);
    if (x->dtype == TG_F64) {
        double *d = x->data;
        for (size_t i = 0; i < n; i++) d[i] = v;
    } else {
        float *d = x->data;
        for (size_t i = 0; i < n; i++) d[i] = (float)v;
    }
}

void tg_tensor_set_name(struct tg_tensor *x, const char *name)
{
    if (x) x->name = name;
}
