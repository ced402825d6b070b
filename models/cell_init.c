/* cell_init.c — per-parameter initialisation in cell files: the `init` lines.
 *
 *   init NAME = DIST            the whole parameter
 *   init NAME[lo:hi] = DIST     rows lo … hi−1 of a matrix, units lo … hi−1 of a vector (sizes
 *                               as in slices: numbers, H, I), e.g. a forget-gate block
 *   DIST := uniform(a, b) | normal(mean, std) | zeros | ones | orthogonal | NUMBER
 *
 * A cell file without init lines starts exactly as before (every parameter U(−1/√H, 1/√H), the
 * trainer's default); init lines then overwrite what they name, in file order, for every layer.
 * The numbers are constants of numbers, H and I with + − · / and sqrt (PyTorch's bound is
 * 1/sqrt(H)), evaluated with each layer's sizes: uniform needs a < b, normal std ≥ 0.
 * `orthogonal` (Saxe et al. 2014; PyTorch's nn.init.orthogonal_) takes a matrix or a row slice
 * of one, r × c: a Gaussian matrix, transposed to be tall if r < c, orthonormalised by
 * Gram–Schmidt (twice, for accuracy) — that is its QR factor Q with R's diagonal made positive,
 * the usual sign correction — and transposed back, so the rows (r ≤ c) or the columns (r ≥ c)
 * are orthonormal. Draws come from the run's generator, after the default initialisation, in
 * file order, layer by layer: the same seed gives the same bytes.
 *
 * Errors (FILE:LINE:COL): a name that is not a parameter, an unknown distribution, numbers
 * that are not constants or out of range, two inits of the same parameter (or slice),
 * orthogonal on a vector, and (per layer size) a slice outside the parameter. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell_prog.h"

#define ERR(e, ...) cl_error_at(c->f, (e)->line, (e)->col, __VA_ARGS__)

/* An init's number: a constant expression of numbers, H and I with + − · / and sqrt, e.g.
 * PyTorch's bound 1/sqrt(H). Returns the first part that is not one (NULL: all are); *uses_size
 * is set when it names H or I, whose values differ between layers. */
static const struct cl_expr *not_scalar(const struct cl_expr *e, int *uses_size)
{
    switch (e->kind) {
    case CL_NUM: return NULL;
    case CL_NAME:
        if ((!strcmp(e->name, "H") || !strcmp(e->name, "I"))) return *uses_size = 1, NULL;
        return e;
    case CL_NEG: return not_scalar(e->a, uses_size);
    case CL_ADD: case CL_SUB: case CL_MUL: case CL_DIV: {
        const struct cl_expr *bad = not_scalar(e->a, uses_size);
        return bad ? bad : not_scalar(e->b, uses_size);
    }
    case CL_CALL:
        if (!strcmp(e->name, "sqrt") && e->n_args == 1) return not_scalar(e->args[0], uses_size);
        return e;
    default: return e;
    }
}

/* Its value for one layer's H and I (NaN or ±inf where the arithmetic gives them). */
static double scalar(const struct cl_expr *e, int H, int I)
{
    switch (e->kind) {
    case CL_NUM: return e->num;
    case CL_NAME: return e->name[0] == 'H' ? H : I;
    case CL_NEG: return -scalar(e->a, H, I);
    case CL_ADD: return scalar(e->a, H, I) + scalar(e->b, H, I);
    case CL_SUB: return scalar(e->a, H, I) - scalar(e->b, H, I);
    case CL_MUL: return scalar(e->a, H, I) * scalar(e->b, H, I);
    case CL_DIV: return scalar(e->a, H, I) / scalar(e->b, H, I);
    default: return sqrt(scalar(e->args[0], H, I)); /* CL_CALL sqrt, as not_scalar allowed */
    }
}

/* A number that names no size: its value now. */
static int constant(const struct cl_expr *e, double *v)
{
    int sized = 0;
    if (not_scalar(e, &sized) || sized) return 0;
    *v = scalar(e, 0, 0);
    return 1;
}

/* The numbers of an init for one layer's sizes; the message names what is wrong, else NULL. */
static const char *numbers(const struct cinit *in, int H, int I, double *a, double *b, char *msg, size_t n)
{
    *a = in->ea ? scalar(in->ea, H, I) : in->a;
    *b = in->eb ? scalar(in->eb, H, I) : in->b;
    if (!isfinite(*a) || (in->kind != IN_CONST && !isfinite(*b)))
        snprintf(msg, n, "a number is not finite at H = %d, I = %d", H, I);
    else if (in->kind == IN_UNIFORM && !(*a < *b))
        snprintf(msg, n, "uniform(%g, %g) needs a < b (H = %d, I = %d)", *a, *b, H, I);
    else if (in->kind == IN_NORMAL && !(*b >= 0))
        snprintf(msg, n, "normal(%g, %g) needs a standard deviation >= 0 (H = %d, I = %d)", *a, *b, H, I);
    else
        return NULL;
    return msg;
}

static int param_index(const struct cfile *c, const char *name)
{
    for (int k = 0; k < c->cell.n_params; k++)
        if (strcmp(c->params[k].name, name) == 0) return k;
    return -1;
}

static int same_lf(struct lf a, struct lf b) { return a.h == b.h && a.i == b.i && a.c == b.c; }

static int resolve(struct cfile *c, const struct cl_stmt *s, struct cinit *in)
{
    const struct cl_decl *d = s->decls;
    const struct cl_expr *e = s->expr;
    char b[160];
    in->stmt = s;
    in->param = param_index(c, d->name);
    if (in->param < 0)
        return cl_error_at(c->f, d->line, d->col, "init %s: '%s' is not a parameter of the cell "
                           "(declare it with param first)", d->name, d->name);
    int vector = c->params[in->param].ndim == 1;
    if (d->rows) {
        in->sliced = 1;
        if (cc_size(c, d->rows, &in->lo) || cc_size(c, d->cols, &in->hi)) return -1;
    }
    double v;
    int sized = 0;
    if (constant(e, &v)) {
        in->kind = IN_CONST, in->a = v;
    } else if (!not_scalar(e, &sized) && sized) {
        in->kind = IN_CONST, in->ea = e;
    } else if (e->kind == CL_NAME && (!strcmp(e->name, "zeros") || !strcmp(e->name, "ones"))) {
        in->kind = IN_CONST, in->a = e->name[0] == 'o';
    } else if (e->kind == CL_NAME && !strcmp(e->name, "orthogonal")) {
        in->kind = IN_ORTHOGONAL;
        if (vector)
            return ERR(e, "init %s = orthogonal: %s is a vector; orthogonal takes a matrix (or rows "
                       "of one)", d->name, d->name);
    } else if (e->kind == CL_CALL && (!strcmp(e->name, "uniform") || !strcmp(e->name, "normal"))) {
        int uni = e->name[0] == 'u';
        in->kind = uni ? IN_UNIFORM : IN_NORMAL;
        if (e->n_args != 2)
            return ERR(e, "init %s: %s takes two numbers, %s, not %d", d->name, e->name,
                       uni ? "uniform(a, b)" : "normal(mean, std)", e->n_args);
        for (int k = 0; k < 2; k++) {
            int uses = 0;
            const struct cl_expr *bad = not_scalar(e->args[k], &uses);
            if (bad)
                return ERR(bad, "init %s: %s is not a number (the numbers of an init are constants "
                           "of numbers, H and I with + - * / and sqrt)", d->name,
                           cl_expr_text(c->f, bad, b, sizeof b));
            if (uses) *(k ? &in->eb : &in->ea) = e->args[k];
            else *(k ? &in->b : &in->a) = scalar(e->args[k], 0, 0);
        }
        if (in->ea || in->eb) return 0; /* checked per layer, when H and I are known */
        if (!isfinite(in->a) || !isfinite(in->b))
            return ERR(e, "init %s: %s has a number that is not finite", d->name, e->name);
        if (uni && !(in->a < in->b))
            return ERR(e, "init %s: uniform(%g, %g) needs a < b", d->name, in->a, in->b);
        if (!uni && !(in->b >= 0))
            return ERR(e, "init %s: normal(%g, %g) needs a standard deviation >= 0", d->name, in->a, in->b);
    } else {
        return ERR(e, "init %s: unknown initialisation '%s' (expected uniform(a, b), normal(mean, "
                   "std), zeros, ones, orthogonal or a number)", d->name, cl_expr_text(c->f, e, b, sizeof b));
    }
    if (in->kind == IN_CONST && !isfinite(in->a))
        return ERR(e, "init %s: %g is not finite", d->name, in->a);
    return 0;
}

int cc_init_analyze(struct cfile *c)
{
    int n = 0;
    for (int k = 0; k < c->f->n_stmts; k++) n += c->f->stmts[k].kind == CL_S_INIT;
    if (!n) return 0;
    c->inits = cl_alloc(c->f, (size_t)n * sizeof *c->inits);
    if (!c->inits) return cl_error_at(c->f, 1, 1, "out of memory");
    for (int k = 0; k < c->f->n_stmts; k++) {
        const struct cl_stmt *s = &c->f->stmts[k];
        if (s->kind != CL_S_INIT) continue;
        struct cinit *in = &c->inits[c->n_inits];
        if (resolve(c, s, in)) return -1;
        for (int j = 0; j < c->n_inits; j++) {
            const struct cinit *o = &c->inits[j];
            if (o->param == in->param && o->sliced == in->sliced &&
                (!in->sliced || (same_lf(o->lo, in->lo) && same_lf(o->hi, in->hi))))
                return cl_error_at(c->f, s->decls->line, s->decls->col, "a second init of %s%s (the "
                                   "first is line %d)", s->decls->name, in->sliced ? " over the same slice" : "",
                                   o->stmt->line);
        }
        c->n_inits++;
    }
    return 0;
}

/* The parameter's first dimension: rows of a matrix, units of a vector. */
static long long extent(const struct cfile *c, int param, int H, int I)
{
    int r, cc;
    if (!tg_param_spec_dims(&c->params[param], I, H, &r, &cc)) return 0;
    return c->params[param].ndim == 1 ? (long long)r * cc : r;
}

int cc_init_check_sizes(const struct cfile *c, int H, int I)
{
    for (int k = 0; k < c->n_inits; k++) {
        const struct cinit *in = &c->inits[k];
        double a, b;
        char msg[160];
        if ((in->ea || in->eb) && numbers(in, H, I, &a, &b, msg, sizeof msg))
            return ERR(in->stmt->expr, "init %s: %s", in->stmt->decls->name, msg);
        if (!in->sliced) continue;
        const struct cl_decl *d = in->stmt->decls;
        long long lo = lf_eval(in->lo, H, I), hi = lf_eval(in->hi, H, I), n = extent(c, in->param, H, I);
        if (!(0 <= lo && lo < hi && hi <= n))
            return ERR(d->rows, "init %s[%lld:%lld]: not a slice of the %lld %s of %s (H = %d, I = %d)",
                       d->name, lo, hi, n, c->params[in->param].ndim == 1 ? "units" : "rows",
                       d->name, H, I);
    }
    return 0;
}

/* ---------------------------------------------------------------- applying */

/* An r × c block with orthonormal rows (r ≤ c) or columns (r ≥ c), into out (row-major). */
static int orthogonal(double *out, int r, int c, struct tg_rng *rng)
{
    int n = r > c ? r : c, k = r < c ? r : c;
    double *A = malloc((size_t)n * (size_t)k * sizeof *A); /* k columns of n, column j at A + j·n */
    if (!A) return -1;
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++) {
            double g = tg_rng_normal(rng);
            if (r >= c) A[(size_t)j * n + i] = g;
            else A[(size_t)i * n + j] = g; /* transposed: row i of the block is column i */
        }
    for (int j = 0; j < k; j++) {
        double *a = A + (size_t)j * n;
        for (int pass = 0; pass < 2; pass++)
            for (int q = 0; q < j; q++) {
                const double *u = A + (size_t)q * n;
                double d = 0;
                for (int i = 0; i < n; i++) d += a[i] * u[i];
                for (int i = 0; i < n; i++) a[i] -= d * u[i];
            }
        double s = 0;
        for (int i = 0; i < n; i++) s += a[i] * a[i];
        s = sqrt(s);
        if (!(s > 0)) { /* probability zero for a Gaussian matrix */
            free(A);
            return -1;
        }
        for (int i = 0; i < n; i++) a[i] /= s;
    }
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++)
            out[(size_t)i * c + j] = r >= c ? A[(size_t)j * n + i] : A[(size_t)i * n + j];
    free(A);
    return 0;
}

/* The layer's input width, from any of its parameters whose shape depends on it (H if none). */
static int layer_input(const struct tg_model *m, int layer)
{
    const struct tg_cell *cell = m->cfg.cell;
    int H = m->cfg.hidden;
    for (int i = 0; i < m->n_params; i++) {
        if (m->param_layer[i] != layer || m->param_spec[i] < 0) continue;
        const struct tg_param_shape *s = &cell->params[m->param_spec[i]].shape;
        const struct tg_tensor *t = m->params[i];
        if (s->r_in) return (int)((t->rows - (long long)s->r_h * H - s->r_1) / s->r_in);
        if (s->c_in) return (int)((t->cols - (long long)s->c_h * H - s->c_1) / s->c_in);
    }
    return H;
}

static enum tg_status apply(const struct cfile *c, const struct cinit *in, struct tg_tensor *t,
                            int H, int I, struct tg_rng *rng)
{
    int vector = c->params[in->param].ndim == 1;
    double a, b;
    char msg[160];
    if (numbers(in, H, I, &a, &b, msg, sizeof msg))
        return tg_error(TG_ERR_VALUE, "%s:%d:%d: init %s: %s", c->f->path, in->stmt->expr->line,
                        in->stmt->expr->col, in->stmt->decls->name, msg);
    long long lo = 0, hi = vector ? t->cols : t->rows;
    if (in->sliced) lo = lf_eval(in->lo, H, I), hi = lf_eval(in->hi, H, I);
    if (!(0 <= lo && lo < hi && hi <= (vector ? t->cols : t->rows)))
        return tg_error(TG_ERR_VALUE, "%s:%d: init %s: the slice is outside the parameter",
                        c->f->path, in->stmt->line, in->stmt->decls->name);
    /* the block: rows [lo, hi) × all columns, or of a vector (1 × N) columns [lo, hi) */
    int r0 = vector ? 0 : (int)lo, r1 = vector ? 1 : (int)hi;
    int c0 = vector ? (int)lo : 0, c1 = vector ? (int)hi : t->cols;
    if (in->kind == IN_ORTHOGONAL) {
        int r = r1 - r0, cc = c1 - c0;
        double *q = malloc((size_t)r * (size_t)cc * sizeof *q);
        if (!q || orthogonal(q, r, cc, rng)) {
            free(q);
            return tg_error(TG_ERR_NOMEM, "%s:%d: init %s = orthogonal: out of memory", c->f->path,
                            in->stmt->line, in->stmt->decls->name);
        }
        for (int i = 0; i < r; i++)
            for (int j = 0; j < cc; j++) tg_set(t, r0 + i, c0 + j, q[(size_t)i * cc + j]);
        free(q);
        return TG_OK;
    }
    for (int i = r0; i < r1; i++)
        for (int j = c0; j < c1; j++) {
            double v = in->kind == IN_CONST     ? a
                       : in->kind == IN_UNIFORM ? a + (b - a) * tg_rng_uniform(rng)
                                                : a + b * tg_rng_normal(rng);
            tg_set(t, i, j, v);
        }
    return TG_OK;
}

int tg_cell_has_init(const struct tg_cell *cell)
{
    const struct cfile *c = (const struct cfile *)cell;
    return cell && tg_cell_source(cell, NULL) && c->magic == CFILE_MAGIC && c->n_inits > 0;
}

enum tg_status tg_model_init_cell(struct tg_model *m, struct tg_rng *rng)
{
    if (!m || !rng) return tg_error(TG_ERR_VALUE, "tg_model_init_cell: NULL argument");
    if (!tg_cell_has_init(m->cfg.cell)) return TG_OK;
    const struct cfile *c = (const struct cfile *)m->cfg.cell;
    for (int l = 0; l < m->cfg.layers; l++) {
        int I = layer_input(m, l), H = m->cfg.hidden;
        for (int k = 0; k < c->n_inits; k++)
            for (int i = 0; i < m->n_params; i++)
                if (m->param_layer[i] == l && m->param_spec[i] == c->inits[k].param) {
                    enum tg_status st = apply(c, &c->inits[k], m->params[i], H, I, rng);
                    if (st != TG_OK) return st;
                }
    }
    return TG_OK;
}
