/* deriv_eval.c — cell-language expressions evaluated with ops, one op call per operator.
 *
 * The derivation checker uses this twice: to record a cell's step on a grad tape (so that every
 * named quantity is a tensor whose ->grad autodiff fills), and to run a derivation file's lines
 * on a no-grad tape. Derivations add `W^T @ v` (tg_matmul(v, W)), `u @ v^T` (tg_matmul(uᵀ, v):
 * the outer product summed over the batch), matrix sums and scalings, and `[M1, M2]` of matrices
 * (rows stacked). Every size is checked here, before the op, so a mistake is reported at its
 * place in the file with the sizes involved. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deriv.h"
#include "tapegrad_deriv.h"

#define ERRAT(e, ...) (cl_error_at(ev->f, (e)->line, (e)->col, __VA_ARGS__), -1)

static const char *txt(const struct deval *ev, const struct cl_expr *e, char *b, size_t n)
{
    return cl_expr_text(ev->f, e, b, n);
}

static const char *kind_word(enum ck k)
{
    return k == K_NUM ? "a number" : k == K_SCAL ? "a scalar per sequence" : k == K_VEC ? "a vector" : "a matrix";
}

static int units(struct dval v) { return v.kind == K_MAT ? v.t->rows : v.t->cols; }

static int op_failed(struct deval *ev, const struct cl_expr *e)
{
    char b[160];
    return ERRAT(e, "%s: %s", txt(ev, e, b, sizeof b), tg_last_error());
}

static int number(struct deval *ev, double v, struct dval *out)
{
    struct tg_tensor *k = tg_tensor_new(ev->tape, 1, 1, TG_F64);
    if (!k) return -1;
    tg_set(k, 0, 0, v);
    *out = (struct dval){K_NUM, k};
    return 0;
}

static int as_size(struct deval *ev, const struct cl_expr *e, int *out)
{
    struct dval v;
    char b[160];
    if (dv_eval(ev, e, &v)) return -1;
    double x = v.kind == K_NUM ? tg_get(v.t, 0, 0) : NAN;
    if (!(x == floor(x)) || fabs(x) > 1e9) return ERRAT(e, "%s is not a size (H = %d, I = %d)", txt(ev, e, b, sizeof b), ev->H, ev->I);
    *out = (int)x;
    return 0;
}

static int binary(struct deval *ev, const struct cl_expr *e, struct dval a, struct dval b, struct dval *out)
{
    char s[160], s1[160], s2[160];
    int mat = a.kind == K_MAT || b.kind == K_MAT;
    if (mat && !((a.kind == K_MAT || a.kind == K_NUM) && (b.kind == K_MAT || b.kind == K_NUM)))
        return ERRAT(e, "%s: %s is %s and %s is %s", txt(ev, e, s, sizeof s), txt(ev, e->a, s1, sizeof s1),
                     kind_word(a.kind), txt(ev, e->b, s2, sizeof s2), kind_word(b.kind));
    if (mat && a.kind == K_MAT && b.kind == K_MAT && (a.t->rows != b.t->rows || a.t->cols != b.t->cols))
        return ERRAT(e, "%s: %s is %dx%d but %s is %dx%d (H = %d, I = %d)", txt(ev, e, s, sizeof s),
                     txt(ev, e->a, s1, sizeof s1), a.t->rows, a.t->cols, txt(ev, e->b, s2, sizeof s2),
                     b.t->rows, b.t->cols, ev->H, ev->I);
    if (!mat && a.kind == K_VEC && b.kind == K_VEC && a.t->cols != b.t->cols)
        return ERRAT(e, "%s: %s has %d units but %s has %d (H = %d, I = %d)", txt(ev, e, s, sizeof s),
                     txt(ev, e->a, s1, sizeof s1), a.t->cols, txt(ev, e->b, s2, sizeof s2), b.t->cols, ev->H, ev->I);
    struct tg_tensor *r;
    switch (e->kind) {
    case CL_ADD: r = tg_add(ev->tape, a.t, b.t); break;
    case CL_SUB: r = tg_sub(ev->tape, a.t, b.t); break;
    case CL_MUL: r = tg_mul(ev->tape, a.t, b.t); break;
    default: r = tg_div(ev->tape, a.t, b.t); break;
    }
    if (!r) return op_failed(ev, e);
    *out = (struct dval){a.kind > b.kind ? a.kind : b.kind, r};
    return 0;
}

int dv_add(struct deval *ev, const struct cl_expr *at, struct dval a, struct dval b, struct dval *out)
{
    struct cl_expr e = *at;
    e.kind = CL_ADD;
    e.a = e.b = (struct cl_expr *)at;
    return binary(ev, &e, a, b, out);
}

static int matmul(struct deval *ev, const struct cl_expr *e, struct dval *out)
{
    char s[160], s1[160], s2[160];
    struct dval w, v;
    const struct cl_expr *l = e->a, *r = e->b;
    int wt = ev->adj && l->kind == CL_TRANSPOSE, vt = ev->adj && r->kind == CL_TRANSPOSE;
    if (dv_eval(ev, wt ? l->a : l, &w) || dv_eval(ev, vt ? r->a : r, &v)) return -1;
    if (vt) { /* u @ v^T: Σ over sequences of the outer products */
        if (wt || (w.kind != K_VEC && w.kind != K_SCAL) || (v.kind != K_VEC && v.kind != K_SCAL))
            return ERRAT(e, "%s: u @ v^T takes two vectors; %s is %s and %s is %s", txt(ev, e, s, sizeof s),
                         txt(ev, l, s1, sizeof s1), kind_word(w.kind), txt(ev, r->a, s2, sizeof s2), kind_word(v.kind));
        if (w.t->rows != v.t->rows)
            return ERRAT(e, "%s: %s has %d rows but %s has %d", txt(ev, e, s, sizeof s), txt(ev, l, s1, sizeof s1),
                         w.t->rows, txt(ev, r->a, s2, sizeof s2), v.t->rows);
        struct tg_tensor *m = tg_matmul(ev->tape, w.t, v.t, 1, 0);
        if (!m) return op_failed(ev, e);
        *out = (struct dval){K_MAT, m};
        return 0;
    }
    if (w.kind != K_MAT)
        return ERRAT(e, "%s: only a matrix parameter (or its ^T) stands left of '@', and %s is %s",
                     txt(ev, e, s, sizeof s), txt(ev, l, s1, sizeof s1), kind_word(w.kind));
    if (v.kind != K_VEC && v.kind != K_SCAL)
        return ERRAT(r, "%s: right of '@' stands a vector, and %s is %s", txt(ev, e, s, sizeof s),
                     txt(ev, r, s1, sizeof s1), kind_word(v.kind));
    int need = wt ? w.t->rows : w.t->cols;
    if (v.t->cols != need)
        return ERRAT(e, "%s: %s%s has %d columns but %s has %d unit%s (H = %d, I = %d)", txt(ev, e, s, sizeof s),
                     txt(ev, wt ? l->a : l, s1, sizeof s1), wt ? "^T" : "", need, txt(ev, r, s2, sizeof s2),
                     v.t->cols, v.t->cols == 1 ? "" : "s", ev->H, ev->I);
    struct tg_tensor *m = tg_matmul(ev->tape, v.t, w.t, 0, !wt);
    if (!m) return op_failed(ev, e);
    *out = (struct dval){K_VEC, m};
    return 0;
}

static int concat(struct deval *ev, const struct cl_expr *e, struct dval *out)
{
    char s[160], s1[160];
    struct tg_tensor *xs[256] = {0};
    struct dval v0 = {K_NUM, NULL};
    if (e->n_args > 256) return ERRAT(e, "more than 256 parts in one concatenation");
    for (int k = 0; k < e->n_args; k++) {
        struct dval v;
        if (dv_eval(ev, e->args[k], &v)) return -1;
        if (v.kind == K_NUM) return ERRAT(e->args[k], "%s is a number; only vectors and scalars can be concatenated", txt(ev, e->args[k], s, sizeof s));
        if (k == 0) v0 = v;
        int mat0 = v0.kind == K_MAT, mat = v.kind == K_MAT;
        if (mat0 != mat || (mat && v.t->cols != v0.t->cols) || (!mat && v.t->rows != v0.t->rows))
            return ERRAT(e->args[k], "%s: %s does not line up with %s (%dx%d against %dx%d)", txt(ev, e, s, sizeof s),
                         txt(ev, e->args[k], s1, sizeof s1), mat ? "the first part's columns" : "the first part's rows",
                         v.t->rows, v.t->cols, v0.t->rows, v0.t->cols);
        xs[k] = v.t;
    }
    if (e->n_args == 1) return *out = v0, 0;
    struct tg_tensor *r = tg_concat(ev->tape, v0.kind == K_MAT ? 0 : 1, e->n_args, xs);
    if (!r) return op_failed(ev, e);
    *out = (struct dval){v0.kind == K_MAT ? K_MAT : K_VEC, r};
    return 0;
}

int dv_eval(struct deval *ev, const struct cl_expr *e, struct dval *out)
{
    char s[160], s1[160];
    switch (e->kind) {
    case CL_NUM: return number(ev, e->num, out);
    case CL_NAME: {
        if (!strcmp(e->name, "H") || !strcmp(e->name, "I")) /* sizes; in a derivation also numbers */
            return number(ev, e->name[0] == 'H' ? ev->H : ev->I, out);
        int r = ev->resolve(ev->ctx, e, out);
        if (r <= 0) return r;
        return ERRAT(e, "unknown name '%s'", e->name);
    }
    case CL_CALL: {
        int fn = cl_func_lookup(e->name);
        struct dval a;
        if (fn < 0) return ERRAT(e, "unknown function '%s'", e->name);
        if (e->n_args != 1) return ERRAT(e, "%s takes one argument, got %d", e->name, e->n_args);
        if (dv_eval(ev, e->args[0], &a)) return -1;
        struct tg_tensor *r;
        if (cl_func_is_reduction(fn)) {
            if (a.kind == K_NUM || a.kind == K_SCAL) return *out = a, 0;
            if (a.kind == K_MAT) return ERRAT(e, "%s: %s of a matrix", txt(ev, e, s, sizeof s), e->name);
            r = fn == TG_OP_ROW_SUM ? tg_row_sum(ev->tape, a.t) : tg_row_mean(ev->tape, a.t);
            a.kind = K_SCAL;
        } else {
            r = tg_ew_apply(ev->tape, (enum tg_op)fn, a.t, NULL);
        }
        if (!r) return op_failed(ev, e);
        *out = (struct dval){a.kind, r};
        return 0;
    }
    case CL_SLICE: {
        struct dval a;
        int lo, hi;
        if (dv_eval(ev, e->a, &a) || as_size(ev, e->b, &lo) || as_size(ev, e->c, &hi)) return -1;
        if (a.kind == K_NUM || a.kind == K_SCAL)
            return ERRAT(e, "%s: %s is %s; only vectors and matrices can be sliced", txt(ev, e, s, sizeof s),
                         txt(ev, e->a, s1, sizeof s1), kind_word(a.kind));
        if (lo < 0 || hi <= lo || hi > units(a))
            return ERRAT(e, "%s: %d:%d is outside %s's %d units (H = %d, I = %d)", txt(ev, e, s, sizeof s), lo, hi,
                         txt(ev, e->a, s1, sizeof s1), units(a), ev->H, ev->I);
        struct tg_tensor *r = tg_slice(ev->tape, a.t, a.kind != K_MAT, lo, hi);
        if (!r) return op_failed(ev, e);
        *out = (struct dval){a.kind, r};
        return 0;
    }
    case CL_CONCAT: return concat(ev, e, out);
    case CL_NEG: {
        struct dval a;
        if (dv_eval(ev, e->a, &a)) return -1;
        struct tg_tensor *r = tg_affine(ev->tape, a.t, -1.0, 0.0);
        if (!r) return op_failed(ev, e);
        *out = (struct dval){a.kind, r};
        return 0;
    }
    case CL_ADD:
    case CL_SUB:
    case CL_MUL:
    case CL_DIV: {
        struct dval a, b;
        if (dv_eval(ev, e->a, &a) || dv_eval(ev, e->b, &b)) return -1;
        return binary(ev, e, a, b, out);
    }
    case CL_MATMUL: return matmul(ev, e, out);
    case CL_TRANSPOSE:
        if (!ev->adj) return ERRAT(e, "'^T' belongs to derivation files (.adj)");
        return ERRAT(e, "%s: '^T' stands only in W^T @ v or u @ v^T", txt(ev, e, s, sizeof s));
    }
    return ERRAT(e, "internal: unknown expression");
}

/* ------------------------------------------------------ built-in cell files */

extern const char *const tg_builtin_cell_files[][2];

struct tg_cell *tg_cell_parse_builtin(const char *name)
{
    for (int k = 0; tg_builtin_cell_files[k][0]; k++) {
        if (strcmp(tg_builtin_cell_files[k][0], name) != 0) continue;
        char path[128];
        snprintf(path, sizeof path, "%s.cell", name);
        const char *text = tg_builtin_cell_files[k][1];
        return tg_cell_parse(text, strlen(text), path);
    }
    tg_error(TG_ERR_VALUE, "no built-in cell '%s' (built-in: %s)", name, tg_cell_names());
    return NULL;
}
