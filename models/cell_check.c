/* cell_check.c — the meaning of a parsed cell file: names, kinds, dependencies and sizes.
 *
 * cc_analyze runs once, when the file is loaded: every name resolved (declared before use,
 * assigned once), every expression given a kind (number, one scalar per sequence, vector,
 * matrix parameter), a size as a linear form h·H + i·I + c, and the set of things it reads
 * (x, states, parameters) from which cell_compile.c decides what to hoist. cc_check_sizes runs
 * for concrete H and I (each layer's): lengths, slices and shapes, in the file's terms. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell_prog.h"

/* Functions are the op table's one-input elementwise ops under their own names (tanh, exp,
 * softplus, …), and the per-sequence reductions sum and mean (ops row_sum, row_mean). */
int cl_func_lookup(const char *name)
{
    if (strcmp(name, "sum") == 0) return TG_OP_ROW_SUM;
    if (strcmp(name, "mean") == 0) return TG_OP_ROW_MEAN;
    enum tg_op op = tg_op_lookup(name);
    if (op < TG_OP_COUNT && tg_op_is_elementwise(op) && tg_op_arity(op) == 1 && op != TG_OP_AFFINE)
        return (int)op;
    return -1;
}

int cl_func_is_reduction(int op) { return op == TG_OP_ROW_SUM || op == TG_OP_ROW_MEAN; }

static int find_func(const char *name) { return cl_func_lookup(name); }

static const char *func_list(char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = 0;
    for (int op = 0; op < TG_OP_COUNT && k < n; op++) {
        if (cl_func_lookup(tg_op_name((enum tg_op)op)) != op) continue;
        k += (size_t)snprintf(buf + k, n - k, "%s%s", k ? ", " : "", tg_op_name((enum tg_op)op));
    }
    if (k < n) snprintf(buf + k, n - k, ", sum, mean");
    return buf;
}

/* f(v) for a number v, computed by the op itself on a 1×1 float64 tensor, so that a folded
 * constant is exactly what the op would give at run time. */
static double fold(int op, double v)
{
    if (cl_func_is_reduction(op)) return v;
    struct tg_tape *t = tg_tape_new(0);
    if (!t) return NAN;
    tg_tape_set_no_grad(t, 1);
    struct tg_tensor *x = tg_tensor_new(t, 1, 1, TG_F64), *y = NULL;
    if (x) {
        tg_set(x, 0, 0, v);
        y = tg_ew_apply(t, (enum tg_op)op, x, NULL);
    }
    double r = y ? tg_get(y, 0, 0) : NAN;
    tg_tape_free(t);
    return r;
}

#define ERR(e, ...) cl_error_at(c->f, (e)->line, (e)->col, __VA_ARGS__)

static const char *txt(const struct cfile *c, const struct cl_expr *e, char *buf, size_t n)
{
    return cl_expr_text(c->f, e, buf, n);
}

/* ------------------------------------------------------------------ sizes */

enum { SIZE_LIMIT = 1 << 30 };

static int lf_ok(struct lf s)
{
    return llabs(s.h) <= SIZE_LIMIT && llabs(s.i) <= SIZE_LIMIT && llabs(s.c) <= SIZE_LIMIT;
}

int cc_size(const struct cfile *c, const struct cl_expr *e, struct lf *out)
{
    char b[160];
    struct lf x = {0, 0, 0}, y;
    switch (e->kind) {
    case CL_NUM:
        if (e->num != floor(e->num) || fabs(e->num) > SIZE_LIMIT)
            return ERR(e, "size %s is not a whole number", txt(c, e, b, sizeof b));
        x.c = (long long)e->num;
        break;
    case CL_NAME:
        if (strcmp(e->name, "H") == 0) x.h = 1;
        else if (strcmp(e->name, "I") == 0) x.i = 1;
        else return ERR(e, "a size may use only numbers, H and I, not '%s'", e->name);
        break;
    case CL_NEG:
        if (cc_size(c, e->a, &x)) return -1;
        x = (struct lf){-x.h, -x.i, -x.c};
        break;
    case CL_ADD:
    case CL_SUB:
        if (cc_size(c, e->a, &x) || cc_size(c, e->b, &y)) return -1;
        if (e->kind == CL_SUB) y = (struct lf){-y.h, -y.i, -y.c};
        x = (struct lf){x.h + y.h, x.i + y.i, x.c + y.c};
        break;
    case CL_MUL:
        if (cc_size(c, e->a, &x) || cc_size(c, e->b, &y)) return -1;
        if (x.h || x.i) {
            struct lf t = x;
            x = y;
            y = t;
        }
        if (x.h || x.i)
            return ERR(e, "size %s multiplies H or I by H or I; one side of '*' must be a number",
                       txt(c, e, b, sizeof b));
        if (llabs(x.c) > SIZE_LIMIT || llabs(y.h) > SIZE_LIMIT || llabs(y.i) > SIZE_LIMIT || llabs(y.c) > SIZE_LIMIT)
            return ERR(e, "size %s is too large", txt(c, e, b, sizeof b));
        x = (struct lf){x.c * y.h, x.c * y.i, x.c * y.c};
        break;
    default:
        return ERR(e, "%s is not a size (sizes are numbers, H and I with +, -, * and parentheses)",
                   txt(c, e, b, sizeof b));
    }
    if (!lf_ok(x)) return ERR(e, "size %s is too large", txt(c, e, b, sizeof b));
    *out = x;
    return 0;
}

/* ---------------------------------------------------------------- symbols */

static int find_sym(const struct cfile *c, const char *name)
{
    for (int k = 0; k < c->n_syms; k++)
        if (strcmp(c->syms[k].name, name) == 0) return k;
    return -1;
}

static int add_sym(struct cfile *c, const char *name, enum sym_kind kind, int index, int line, int col)
{
    struct csym *s = &c->syms[c->n_syms];
    *s = (struct csym){.name = name, .kind = kind, .index = index, .line = line, .col = col};
    return c->n_syms++;
}

/* The line that assigns `name` after the current point, for "used before its line". */
static int later_assignment(const struct cfile *c, const char *name)
{
    for (int k = 0; k < c->f->n_stmts; k++) {
        const struct cl_stmt *s = &c->f->stmts[k];
        if ((s->kind == CL_S_ASSIGN || s->kind == CL_S_ACCUM) && strcmp(s->target, name) == 0) return s->line;
    }
    return 0;
}

static const char *kind_name(enum ck k)
{
    return k == K_NUM ? "a number" : k == K_SCAL ? "a scalar" : k == K_VEC ? "a vector" : "a matrix parameter";
}

static int no_matrix(struct cfile *c, const struct cl_expr *e)
{
    char b[160];
    if (c->info[e->id].kind != K_MAT) return 0;
    return ERR(e, "%s is a matrix parameter; a matrix can stand only left of '@'", txt(c, e, b, sizeof b));
}

static int analyze(struct cfile *c, const struct cl_expr *e)
{
    struct cinfo *in = &c->info[e->id];
    char b[160], b2[160];
    in->sym = in->fn = -1;
    switch (e->kind) {
    case CL_NUM:
        in->kind = K_NUM;
        in->num = e->num;
        return 0;
    case CL_NAME: {
        int k = find_sym(c, e->name);
        if (k < 0) {
            if (find_func(e->name) >= 0)
                return ERR(e, "%s is a function; write %s(v)", e->name, e->name);
            int line = later_assignment(c, e->name);
            if (line) return ERR(e, "'%s' is used before its line (line %d assigns it)", e->name, line);
            size_t n = strlen(e->name);
            if (n > 1 && e->name[n - 1] == '\'')
                return ERR(e, "unknown name '%s' (only a state's next value is written with a prime)", e->name);
            return ERR(e, "unknown name '%s'", e->name);
        }
        struct csym *s = &c->syms[k];
        s->used = 1;
        in->sym = k;
        switch (s->kind) {
        case SY_X: in->kind = K_VEC, in->dep = D_X, in->n = (struct lf){0, 1, 0}; break;
        case SY_SIZE:
            return ERR(e, "%s is a size; it can appear only inside [ ] (a slice or a parameter's shape)", e->name);
        case SY_STATE: in->kind = K_VEC, in->dep = D_S, in->n = (struct lf){1, 0, 0}; break;
        case SY_PARAM: {
            const struct tg_param_shape *p = &c->params[s->index].shape;
            in->dep = D_P;
            if (c->params[s->index].ndim == 1) {
                in->kind = K_VEC;
                in->n = (struct lf){p->c_h, p->c_in, p->c_1};
            } else {
                in->kind = K_MAT;
                in->n = (struct lf){p->r_h, p->r_in, p->r_1};
                in->cols = (struct lf){p->c_h, p->c_in, p->c_1};
            }
            break;
        }
        case SY_INTER:
        case SY_NEXT: {
            int sym = in->sym;
            *in = c->info[s->def->id];
            in->sym = sym;
            in->fn = -1;
            break;
        }
        }
        return 0;
    }
    case CL_CALL: {
        int k = find_func(e->name);
        if (k < 0) {
            char fl[256];
            if (find_sym(c, e->name) >= 0)
                return ERR(e, "'%s' is not a function (functions: %s)", e->name, func_list(fl, sizeof fl));
            return ERR(e, "unknown function '%s' (functions: %s)", e->name, func_list(fl, sizeof fl));
        }
        if (e->n_args != 1)
            return ERR(e, "%s takes one argument, got %d", e->name, e->n_args);
        if (analyze(c, e->args[0]) || no_matrix(c, e->args[0])) return -1;
        *in = c->info[e->args[0]->id];
        in->sym = -1;
        in->fn = k;
        if (in->kind == K_NUM) in->num = fold(k, in->num);
        else if (cl_func_is_reduction(k)) in->kind = K_SCAL, in->n = (struct lf){0, 0, 1};
        return 0;
    }
    case CL_SLICE: {
        if (analyze(c, e->a)) return -1;
        const struct cinfo *a = &c->info[e->a->id];
        if (a->kind == K_NUM || a->kind == K_SCAL)
            return ERR(e, "%s: %s is %s; only vectors and matrix parameters can be sliced",
                       txt(c, e, b, sizeof b), txt(c, e->a, b2, sizeof b2), kind_name(a->kind));
        struct lf lo, hi;
        if (cc_size(c, e->b, &lo) || cc_size(c, e->c, &hi)) return -1;
        *in = *a;
        in->sym = in->fn = -1;
        in->n = (struct lf){hi.h - lo.h, hi.i - lo.i, hi.c - lo.c};
        return 0;
    }
    case CL_CONCAT:
        in->kind = K_VEC;
        for (int k = 0; k < e->n_args; k++) {
            const struct cl_expr *x = e->args[k];
            if (analyze(c, x) || no_matrix(c, x)) return -1;
            const struct cinfo *a = &c->info[x->id];
            if (a->kind == K_NUM)
                return ERR(x, "%s is a number; only vectors and scalars can be concatenated", txt(c, x, b, sizeof b));
            struct lf n = a->kind == K_SCAL ? (struct lf){0, 0, 1} : a->n;
            in->n = (struct lf){in->n.h + n.h, in->n.i + n.i, in->n.c + n.c};
            in->dep |= a->dep;
        }
        if (!lf_ok(in->n)) return ERR(e, "%s is too long", txt(c, e, b, sizeof b));
        return 0;
    case CL_NEG:
        if (analyze(c, e->a) || no_matrix(c, e->a)) return -1;
        *in = c->info[e->a->id];
        in->sym = in->fn = -1;
        in->num = -in->num;
        return 0;
    case CL_ADD:
    case CL_SUB:
    case CL_MUL:
    case CL_DIV: {
        if (analyze(c, e->a) || no_matrix(c, e->a) || analyze(c, e->b) || no_matrix(c, e->b)) return -1;
        const struct cinfo *a = &c->info[e->a->id], *y = &c->info[e->b->id];
        in->dep = a->dep | y->dep;
        in->kind = a->kind > y->kind ? a->kind : y->kind;
        in->n = a->kind == K_VEC ? a->n : y->n;
        if (in->kind == K_NUM) {
            double u = a->num, v = y->num;
            in->num = e->kind == CL_ADD ? u + v : e->kind == CL_SUB ? u - v : e->kind == CL_MUL ? u * v : u / v;
        }
        return 0;
    }
    case CL_MATMUL: {
        if (analyze(c, e->a) || analyze(c, e->b)) return -1;
        const struct cinfo *w = &c->info[e->a->id], *v = &c->info[e->b->id];
        if (w->kind != K_MAT)
            return ERR(e, "%s: only a matrix parameter stands left of '@', and %s is %s",
                       txt(c, e, b, sizeof b), txt(c, e->a, b2, sizeof b2), kind_name(w->kind));
        if (v->kind == K_MAT || v->kind == K_NUM)
            return ERR(e->b, "%s: right of '@' stands a vector, and %s is %s", txt(c, e, b, sizeof b),
                       txt(c, e->b, b2, sizeof b2), kind_name(v->kind));
        in->kind = K_VEC;
        in->dep = D_P | v->dep;
        in->n = w->n;
        return 0;
    }
    case CL_TRANSPOSE:
        return ERR(e, "'^T' belongs to derivation files (.adj); in a cell file W @ v is already "
                      "PyTorch's v @ W.T");
    }
    return ERR(e, "internal: unknown expression");
}

/* ------------------------------------------------------------- statements */

static int reserved(const struct cfile *c, const char *name)
{
    return find_sym(c, name) >= 0 || find_func(name) >= 0;
}

static int declare_params(struct cfile *c, const struct cl_stmt *s, int *n_params)
{
    for (int k = 0; k < s->n_decls; k++) {
        const struct cl_decl *d = &s->decls[k];
        if (reserved(c, d->name))
            return cl_error_at(c->f, d->line, d->col, "'%s' is already %s", d->name,
                               find_func(d->name) >= 0 ? "a function" : "declared");
        struct lf r = {0, 0, 1}, col;
        if (d->cols ? cc_size(c, d->rows, &r) || cc_size(c, d->cols, &col) : cc_size(c, d->rows, &col))
            return -1;
        struct tg_param_spec *p = &c->params[*n_params];
        p->name = d->name;
        p->shape = (struct tg_param_shape){(int)r.h, (int)r.i, (int)r.c, (int)col.h, (int)col.i, (int)col.c};
        p->ndim = d->cols ? 2 : 1;
        add_sym(c, d->name, SY_PARAM, (*n_params)++, d->line, d->col);
    }
    return 0;
}

static int assign(struct cfile *c, const struct cl_stmt *s)
{
    char b[160];
    const char *name = s->target;
    size_t len = strlen(name);
    int k = find_sym(c, name);
    if (s->kind == CL_S_ACCUM)
        return cl_error_at(c->f, s->line, s->col, "'+=' belongs to derivation files (.adj); a cell "
                           "file assigns each name once with '='");
    if (k >= 0 && (c->syms[k].kind == SY_INTER || c->syms[k].kind == SY_NEXT))
        return cl_error_at(c->f, s->line, s->col, "'%s' is assigned twice (first on line %d)", name,
                           c->syms[k].line);
    int state = -1;
    if (len > 1 && name[len - 1] == '\'') {
        for (int j = 0; j < c->cell.n_state; j++) {
            const char *sn = c->syms[c->state_sym[j]].name;
            if (strlen(sn) == len - 1 && strncmp(sn, name, len - 1) == 0) state = j;
        }
        if (state < 0)
            return cl_error_at(c->f, s->line, s->col, "'%.*s' is not a state, so '%s' cannot be "
                               "assigned (states: see the 'state' line)", (int)(len - 1), name, name);
    } else if (k >= 0 || find_func(name) >= 0) {
        const char *what = find_func(name) >= 0 ? "a function" : c->syms[k].kind == SY_X ? "the input"
                         : c->syms[k].kind == SY_SIZE ? "a size" : c->syms[k].kind == SY_STATE
                         ? "a state (its next value is written with a prime)" : "a parameter";
        return cl_error_at(c->f, s->line, s->col, "cannot assign to '%s': it is %s", name, what);
    }
    if (analyze(c, s->expr)) return -1;
    const struct cinfo *in = &c->info[s->expr->id];
    if (state >= 0) {
        if (in->kind != K_VEC)
            return ERR(s->expr, "%s: the next value of state %.*s must be a vector of H units, "
                       "but this is %s", txt(c, s->expr, b, sizeof b), (int)(len - 1), name, kind_name(in->kind));
        if (!(in->dep & (D_X | D_S)))
            return ERR(s->expr, "%s: the next value of state %.*s reads neither x nor a state, so it "
                       "is not one value per sequence", txt(c, s->expr, b, sizeof b), (int)(len - 1), name);
    }
    int sym = add_sym(c, name, state >= 0 ? SY_NEXT : SY_INTER, state, s->line, s->col);
    c->syms[sym].def = s->expr;
    if (state >= 0) c->next_sym[state] = sym;
    return 0;
}

int cc_analyze(struct cfile *c)
{
    const struct cl_file *f = c->f;
    int n_params = 0, n_state = 0, eq_line = 0, state_line = 0, cell_line = 0;
    add_sym(c, "x", SY_X, 0, 0, 0);
    add_sym(c, "H", SY_SIZE, 0, 0, 0);
    add_sym(c, "I", SY_SIZE, 1, 0, 0);
    for (int k = 0; k < f->n_stmts; k++) {
        const struct cl_stmt *s = &f->stmts[k];
        switch (s->kind) {
        case CL_S_CELL:
            if (cell_line)
                return cl_error_at(f, s->line, s->col, "a second 'cell' line (the first is line %d)", cell_line);
            cell_line = s->line;
            c->cell.name = s->decls[0].name;
            break;
        case CL_S_STATE:
            if (state_line)
                return cl_error_at(f, s->line, s->col, "a second 'state' line (the first is line %d)", state_line);
            if (eq_line)
                return cl_error_at(f, s->line, s->col, "the 'state' line must come before the equations "
                                   "(line %d is an equation)", eq_line);
            state_line = s->line;
            for (int j = 0; j < s->n_decls; j++) {
                const struct cl_decl *d = &s->decls[j];
                if (reserved(c, d->name))
                    return cl_error_at(f, d->line, d->col, "'%s' is already %s", d->name,
                                       find_func(d->name) >= 0 ? "a function" : "declared");
                c->state_sym[n_state] = add_sym(c, d->name, SY_STATE, n_state, d->line, d->col);
                n_state++;
            }
            c->cell.n_state = n_state;
            break;
        case CL_S_PARAM:
            if (eq_line)
                return cl_error_at(f, s->line, s->col, "'param' lines must come before the equations "
                                   "(line %d is an equation)", eq_line);
            if (declare_params(c, s, &n_params)) return -1;
            break;
        case CL_S_ASSIGN:
        case CL_S_ACCUM:
            if (!state_line)
                return cl_error_at(f, s->line, s->col, "an equation before the 'state' line (declare "
                                   "the states first, e.g. state h, c)");
            if (!eq_line) eq_line = s->line;
            if (assign(c, s)) return -1;
            break;
        case CL_S_INIT: /* resolved at the end, once every parameter is declared */
            break;
        }
    }
    int last = f->n_stmts ? f->stmts[f->n_stmts - 1].line : 1;
    if (!state_line) return cl_error_at(f, last, 1, "no 'state' line (e.g. state h, c)");
    c->cell.n_params = n_params;
    for (int j = 0; j < n_state; j++) {
        const struct csym *s = &c->syms[c->state_sym[j]];
        if (c->next_sym[j] < 0)
            return cl_error_at(f, s->line, s->col, "state %s has no next value (write %s' = ...)", s->name, s->name);
    }
    for (int k = 0; k < c->n_syms; k++) {
        const struct csym *s = &c->syms[k];
        if (s->kind == SY_PARAM && !s->used)
            return cl_error_at(f, s->line, s->col, "parameter %s is not read by any equation", s->name);
    }
    return cc_init_analyze(c);
}

/* ------------------------------------------------------- concrete sizes */

struct sz {
    const struct cfile *c;
    int H, I;
};

static long long units(const struct sz *z, const struct cl_expr *e)
{
    const struct cinfo *in = &z->c->info[e->id];
    return in->kind == K_SCAL ? 1 : lf_eval(in->n, z->H, z->I);
}

static int check_expr(const struct sz *z, const struct cl_expr *e)
{
    const struct cfile *c = z->c;
    char b[160], b2[160], b3[160];
    for (int k = 0; k < e->n_args; k++)
        if (check_expr(z, e->args[k])) return -1;
    if (e->kind == CL_SLICE || e->kind == CL_CALL || e->kind == CL_NEG || e->kind == CL_TRANSPOSE) {
        if (e->a && check_expr(z, e->a)) return -1;
    } else if (e->a && (check_expr(z, e->a) || check_expr(z, e->b))) {
        return -1;
    }
    const struct cinfo *in = &c->info[e->id];
    if (e->kind == CL_SLICE) {
        struct lf lo, hi;
        cc_size(c, e->b, &lo);
        cc_size(c, e->c, &hi);
        long long l = lf_eval(lo, z->H, z->I), h = lf_eval(hi, z->H, z->I);
        const struct cinfo *a = &c->info[e->a->id];
        long long n = lf_eval(a->n, z->H, z->I);
        const char *what = a->kind == K_MAT ? "rows" : "units";
        if (l < 0 || h > n || h <= l)
            return ERR(e, "%s: %s %lld:%lld %s %s's %lld %s (H = %d, I = %d)", txt(c, e, b, sizeof b),
                       h <= l ? "the slice" : "slice", l, h, h <= l ? "is empty; it must lie within" : "is outside",
                       txt(c, e->a, b2, sizeof b2), n, what, z->H, z->I);
    } else if (e->kind == CL_MATMUL) {
        long long cols = lf_eval(c->info[e->a->id].cols, z->H, z->I), n = units(z, e->b);
        if (cols != n)
            return ERR(e, "%s: %s has %lld columns but %s has %lld unit%s (H = %d, I = %d)", txt(c, e, b, sizeof b),
                       txt(c, e->a, b2, sizeof b2), cols, txt(c, e->b, b3, sizeof b3), n, n == 1 ? "" : "s", z->H, z->I);
    } else if (e->kind >= CL_ADD && e->kind <= CL_DIV) {
        const struct cinfo *a = &c->info[e->a->id], *y = &c->info[e->b->id];
        if (a->kind == K_VEC && y->kind == K_VEC && units(z, e->a) != units(z, e->b))
            return ERR(e, "%s: %s has %lld units but %s has %lld (H = %d, I = %d)", txt(c, e, b, sizeof b),
                       txt(c, e->a, b2, sizeof b2), units(z, e->a), txt(c, e->b, b3, sizeof b3),
                       units(z, e->b), z->H, z->I);
    }
    if ((in->kind == K_VEC || in->kind == K_MAT) && e->kind != CL_SLICE) {
        long long n = lf_eval(in->n, z->H, z->I);
        if (n > INT32_MAX) return ERR(e, "%s is too large (%lld units)", txt(c, e, b, sizeof b), n);
    }
    return 0;
}

static int check_dim(const struct cfile *c, const struct cl_decl *d, const struct cl_expr *e, int H, int I)
{
    char b[160];
    struct lf s;
    if (cc_size(c, e, &s)) return -1;
    long long v = lf_eval(s, H, I);
    if (v < 1)
        return ERR(e, "parameter %s: size %s is %lld, not positive (H = %d, I = %d)", d->name,
                   txt(c, e, b, sizeof b), v, H, I);
    if (v > INT32_MAX) return ERR(e, "parameter %s: size %s is too large (H = %d, I = %d)", d->name, txt(c, e, b, sizeof b), H, I);
    return 0;
}

int cc_check_sizes(const struct cfile *c, int H, int I)
{
    struct sz z = {c, H, I};
    for (int k = 0; k < c->f->n_stmts; k++) {
        const struct cl_stmt *s = &c->f->stmts[k];
        if (s->kind == CL_S_PARAM) {
            for (int j = 0; j < s->n_decls; j++) {
                const struct cl_decl *d = &s->decls[j];
                if (check_dim(c, d, d->rows, H, I) || (d->cols && check_dim(c, d, d->cols, H, I))) return -1;
            }
        } else if (s->kind == CL_S_ASSIGN) {
            if (check_expr(&z, s->expr)) return -1;
        }
    }
    char b[160];
    for (int j = 0; j < c->cell.n_state; j++) {
        const struct csym *s = &c->syms[c->next_sym[j]];
        long long n = lf_eval(c->info[s->def->id].n, H, I);
        if (n != H)
            return ERR(s->def, "%s: the next value of state %s has %lld units, but a state has H = %d "
                       "(I = %d)", txt(c, s->def, b, sizeof b), c->syms[c->state_sym[j]].name, n, H, I);
    }
    return cc_init_check_sizes(c, H, I);
}
