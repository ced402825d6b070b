/* adjoint.c — `tapegrad adjoint`: the backward pass of one step of a cell file, printed as a
 * derivation file (.adj) a person could have written, or as LaTeX.
 *
 * What is walked. The issue allows walking one recorded step in reverse or, equivalently, the
 * cell's equations in reverse order; this walks the equations (the checked syntax tree of
 * cell_check.c). A recorded step is the compiler's view of them: `weight_ih @ x + bias_ih` is
 * hoisted out of the step into one GEMM over all T·B rows, `W @ h + rest` is fused into
 * tg_addmm, `1 - f` is an affine node and `a[0:H]` a column slice, so mapping nodes back to the
 * user's expressions would mean undoing each of those choices. The tree has every expression as
 * written, its kind (number, per-sequence scalar, vector, matrix) and size, and the op of every
 * function; each step of the walk applies the op table's printable local derivative
 * (tg_op_printable: `dx += dy * (1 - y * y)` for tanh, `db -= dy * y / b` for div) with dy, y,
 * x (a, b) replaced by the user's text — the same table the tape's backward kernels come from,
 * so the two cannot drift apart; tools/… and tests run the printed file against autodiff.
 *
 * Order. Equations are visited last to first. An intermediate's adjoint is complete once every
 * equation after its own has been visited, so `dNAME = …` is printed just before its equation
 * is walked, with all contributions merged into one line (pieces of slices `a[0:H]`, `a[H:2H]`
 * become one concatenation `[…, …]`). A leaf (x, a state, a parameter) is printed after the
 * first equation that reads it, parameters as `dW += da @ [h, x]^T`. Helpers are introduced only
 * where an adjoint is needed twice or must be sliced: `dpre_NAME` for the argument of NAME's
 * function, `dhx` for the adjoint of [h, x]. Each group of lines carries, as a comment, the
 * forward equations its contributions came from. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell_prog.h"
#include "tapegrad_deriv.h"

enum { P_ADD = 1, P_MUL = 2, P_MM = 3, P_ATOM = 5 };

struct piece {
    int sym;
    int ranged;                 /* 0: the whole quantity; 1: units (rows) lo … hi−1 */
    struct lf lo, hi;
    int sign;
    const char *text;
    int eq;                     /* the equation it came from (statement index) */
};

struct oline {
    const char *text, *comment;
};

struct pr {
    const struct cfile *c;
    char **pool;
    int npool, cpool;
    struct piece *pc;
    int npc, cpc;
    struct oline *ln;
    int nln, cln;
    const char **helpers;
    int nhelp, chelp;
    int eq;                     /* statement being walked */
    const struct cl_expr *def;  /* its expression */
    const char *target;         /* its name */
    int failed;
};

static void *grow(void *p, int *cap, int need, size_t sz)
{
    if (need <= *cap) return p;
    int c = *cap ? 2 * *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(p, (size_t)c * sz);
    if (q) *cap = c;
    return q;
}

static const char *keep(struct pr *p, char *s)
{
    char **np = grow(p->pool, &p->cpool, p->npool + 1, sizeof *np);
    if (!s || !np) {
        free(s);
        p->failed = 1;
        return "";
    }
    p->pool = np;
    return p->pool[p->npool++] = s;
}

static const char *fmt(struct pr *p, const char *f, ...) __attribute__((format(printf, 2, 3)));
static const char *fmt(struct pr *p, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    int n = vasprintf(&s, f, ap);
    va_end(ap);
    return keep(p, n < 0 ? NULL : s);
}

static const char *etext(struct pr *p, const struct cl_expr *e)
{
    char buf[4096];
    return fmt(p, "%s", cl_expr_text(p->c->f, e, buf, sizeof buf));
}

/* Precedence of printed text: its loosest top-level operator. */
static int prec(const char *s)
{
    int depth = 0, best = P_ATOM;
    for (const char *q = s; *q; q++) {
        if (*q == '(' || *q == '[') depth++;
        else if (*q == ')' || *q == ']') depth--;
        else if (depth == 0 && q > s && q[-1] == ' ' && q[1] == ' ') {
            if (*q == '+' || *q == '-') best = P_ADD;
            else if ((*q == '*' || *q == '/') && best > P_MUL) best = P_MUL;
            else if (*q == '@' && best > P_MM) best = P_MM;
        }
    }
    if (best == P_ATOM && s[0] == '-') best = P_MM;
    return best;
}

static const char *wrap(struct pr *p, const char *s, int need)
{
    return prec(s) < need ? fmt(p, "(%s)", s) : s;
}

static int is_ident(const char *s);

/* A name or a slice of one (`dhx[0:H]`): cheap to repeat, so it needs no helper. */
static int is_simple(const char *s)
{
    const char *b = strchr(s, '[');
    if (!b) return is_ident(s);
    if (s[strlen(s) - 1] != ']' || strchr(b + 1, '[') || strchr(s, ' ') != NULL) {
        /* "dhx[H:H + I]" has spaces inside the brackets only */
        const char *sp = strchr(s, ' ');
        if (!sp || sp < b || strchr(b + 1, '[') || s[strlen(s) - 1] != ']') return 0;
    }
    char name[256];
    size_t n = (size_t)(b - s);
    if (n >= sizeof name) return 0;
    memcpy(name, s, n), name[n] = 0;
    return is_ident(name);
}

static int is_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return 0;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return *s == '\'' && s[1] == 0;
    return 1;
}

/* The op table's printable derivative tmpl ("dx += dy * (1 - y * y)") with its placeholders
 * replaced; *sign gets −1 for "-=". Parentheses where precedence needs them. */
static const char *subst(struct pr *p, const char *tmpl, int *sign, const char *dy, const char *y,
                         const char *a, const char *b)
{
    const char *q = strstr(tmpl, "= ");
    *sign = q && q[-1] == '-' ? -1 : 1;
    q = q ? q + 2 : tmpl;
    size_t cap = strlen(q) + 8 * (strlen(dy) + strlen(y) + strlen(a) + strlen(b) + 8);
    char *out = malloc(cap), *o = out;
    if (!out) return keep(p, NULL);
    const char *start = q;
    while (*q) {
        if ((*q >= 'a' && *q <= 'z') || *q == '_') {
            const char *s = q;
            while ((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_') q++;
            size_t n = (size_t)(q - s);
            const char *r = n == 2 && !strncmp(s, "dy", 2) ? dy : n == 1 && *s == 'y' ? y
                          : n == 1 && (*s == 'x' || *s == 'a') ? a : n == 1 && *s == 'b' ? b : NULL;
            if (!r) {
                memcpy(o, s, n), o += n;
                continue;
            }
            int pr = prec(r), in_call = s > start && s[-1] == '(' && *q == ')' && s - 1 > start &&
                                                  ((s[-2] >= 'a' && s[-2] <= 'z'));
            int after_mul = s >= start + 2 && s[-2] == '*';
            int lead = s == start && (q[0] == 0 || (q[0] == ' ' && (q[1] == '*' || q[1] == '/')));
            int paren = pr < P_ATOM && !in_call && !(lead && pr >= P_MUL) && !(after_mul && pr >= P_MM);
            if (lead && pr >= P_ADD && q[0] == 0) paren = 0;
            o += sprintf(o, paren ? "(%s)" : "%s", r);
        } else {
            *o++ = *q++;
        }
    }
    *o = 0;
    return keep(p, out);
}

/* A size as text: "H", "2H", "2H + I", "3". */
static const char *lf_text(struct pr *p, struct lf v)
{
    char buf[96];
    int n = 0;
    long long k[3] = {v.h, v.i, v.c};
    const char *u[3] = {"H", "I", ""};
    for (int j = 0; j < 3; j++) {
        if (!k[j]) continue;
        long long a = k[j] < 0 ? -k[j] : k[j];
        if (n) n += snprintf(buf + n, sizeof buf - (size_t)n, k[j] < 0 ? " - " : " + ");
        else if (k[j] < 0) n += snprintf(buf + n, sizeof buf - (size_t)n, "-");
        if (a != 1 || j == 2) n += snprintf(buf + n, sizeof buf - (size_t)n, "%lld", a);
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%s", u[j]);
    }
    if (!n) snprintf(buf, sizeof buf, "0");
    return fmt(p, "%s", buf);
}

static long long lf_key(struct lf v) { return lf_eval(v, 1009, 100003); }

static void emit_line(struct pr *p, const char *text, const char *comment)
{
    struct oline *nl = grow(p->ln, &p->cln, p->nln + 1, sizeof *nl);
    if (!nl) {
        p->failed = 1;
        return;
    }
    p->ln = nl;
    p->ln[p->nln++] = (struct oline){text, comment};
}

static const char *eq_comment(struct pr *p, int stmt)
{
    const struct cl_stmt *s = &p->c->f->stmts[stmt];
    return fmt(p, "%s = %s", s->target, etext(p, s->expr));
}

static int sym_named(const struct cfile *c, const char *name)
{
    for (int k = 0; k < c->n_syms; k++)
        if (!strcmp(c->syms[k].name, name)) return k;
    return -1;
}

/* A helper name from hint, not an adjoint of a forward quantity nor used before. */
static const char *fresh(struct pr *p, const char *hint)
{
    for (int k = 1;; k++) {
        size_t n = strlen(hint);
        int prime = n && hint[n - 1] == '\'';
        const char *s = k == 1 ? hint : fmt(p, "%.*s%d%s", (int)(n - (size_t)prime), hint, k, prime ? "'" : "");
        int taken = sym_named(p->c, s) >= 0 || (s[0] == 'd' && sym_named(p->c, s + 1) >= 0);
        for (int j = 0; !taken && j < p->nhelp; j++) taken = !strcmp(p->helpers[j], s);
        if (taken) continue;
        const char **nh = grow(p->helpers, &p->chelp, p->nhelp + 1, sizeof *nh);
        if (!nh) return p->failed = 1, s;
        p->helpers = nh;
        p->helpers[p->nhelp++] = s;
        return s;
    }
}

/* G itself if it is a name, else a helper line `hint = G`. */
static const char *named(struct pr *p, const char *g, const char *hint)
{
    if (is_ident(g)) return g;
    const char *h = fresh(p, hint);
    emit_line(p, fmt(p, "%s = %s", h, g), eq_comment(p, p->eq));
    return h;
}

static void add_piece(struct pr *p, int sym, int ranged, struct lf lo, struct lf hi, int sign, const char *text)
{
    struct piece *np = grow(p->pc, &p->cpc, p->npc + 1, sizeof *np);
    if (!np) {
        p->failed = 1;
        return;
    }
    p->pc = np;
    p->pc[p->npc++] = (struct piece){sym, ranged, lo, hi, sign, text, p->eq};
}

/* A helper's name from what it is the adjoint of: [h, x] → dhx, [r * h, x] → drhx, r * h → drh. */
static const char *hint_of(struct pr *p, const struct cl_expr *e)
{
    const struct cl_expr *one[1] = {e};
    const struct cl_expr *const *parts = e->kind == CL_CONCAT ? (const struct cl_expr *const *)e->args : one;
    int n = e->kind == CL_CONCAT ? e->n_args : 1;
    char buf[64] = "d";
    for (int k = 0; k < n; k++) {
        const struct cl_expr *a = parts[k];
        while (a->kind == CL_SLICE) a = a->a;
        const struct cl_expr *names[2] = {a, NULL};
        if (a->kind == CL_MUL) names[0] = a->a, names[1] = a->b;
        for (int j = 0; j < 2 && names[j]; j++) {
            if (names[j]->kind != CL_NAME || strlen(buf) + strlen(names[j]->name) >= sizeof buf)
                return e->kind == CL_CONCAT ? "dcat" : "dv";
            strncat(buf, names[j]->name, strcspn(names[j]->name, "'"));
        }
    }
    return fmt(p, "%s", buf);
}

static void fail_at(struct pr *p, const struct cl_expr *e, const char *what)
{
    if (!p->failed) cl_error_at(p->c->f, e->line, e->col, "tapegrad adjoint: %s", what);
    p->failed = 1;
}

static void walk(struct pr *p, const struct cl_expr *e, const char *g, int sign, const char *hint);

static void walk_binary(struct pr *p, const struct cl_expr *e, const char *g, int sign, const char *hint)
{
    const struct cinfo *I = p->c->info;
    enum tg_op op = e->kind == CL_ADD ? TG_OP_ADD : e->kind == CL_SUB ? TG_OP_SUB : e->kind == CL_MUL ? TG_OP_MUL : TG_OP_DIV;
    int na = I[e->a->id].kind != K_NUM, nb = I[e->b->id].kind != K_NUM;
    if (na && nb && !is_simple(g)) g = named(p, g, hint);
    const char *y = e == p->def ? p->target : etext(p, e), *ta = etext(p, e->a), *tb = etext(p, e->b);
    for (int side = 0; side < 2; side++) {
        const struct cl_expr *x = side ? e->b : e->a;
        if (I[x->id].kind == K_NUM) continue;
        int s;
        const char *t = subst(p, tg_op_printable(op, 1 + side), &s, g, y, ta, tb);
        if (I[x->id].kind == K_SCAL && I[e->id].kind == K_VEC) t = fmt(p, "sum(%s)", t);
        walk(p, x, t, sign * s, hint);
    }
}

static void walk(struct pr *p, const struct cl_expr *e, const char *g, int sign, const char *hint)
{
    const struct cfile *c = p->c;
    const struct cinfo *in = &c->info[e->id];
    if (p->failed || in->kind == K_NUM) return;
    switch (e->kind) {
    case CL_NAME:
        add_piece(p, in->sym, 0, (struct lf){0}, (struct lf){0}, sign, g);
        return;
    case CL_SLICE: {
        struct lf lo, hi;
        if (e->a->kind != CL_NAME) return fail_at(p, e, "a slice of anything but a name");
        if (cc_size(c, e->b, &lo) || cc_size(c, e->c, &hi)) return (void)(p->failed = 1);
        add_piece(p, c->info[e->a->id].sym, 1, lo, hi, sign, g);
        return;
    }
    case CL_NEG:
        return walk(p, e->a, g, -sign, hint);
    case CL_CALL: {
        const struct cl_expr *x = e->args[0];
        int fn = in->fn;
        if (fn == TG_OP_ROW_SUM || fn == TG_OP_ROW_MEAN) {
            const struct cinfo *xi = &c->info[x->id];
            if (fn == TG_OP_ROW_MEAN && xi->kind == K_VEC) {
                struct lf n = xi->n;
                const char *d = lf_text(p, n);
                g = fmt(p, "%s / %s", wrap(p, g, P_MUL), n.h + n.i + n.c == 1 && !(n.h && n.i) && (n.h || n.i) ? d : fmt(p, "(%s)", d));
                if (n.h == 0 && n.i == 0) g = fmt(p, "%s / %lld", wrap(p, g, P_MUL), n.c);
            }
            return walk(p, x, g, sign, hint);
        }
        int s;
        const char *tmpl = tg_op_printable((enum tg_op)fn, 1);
        const char *rhs = strstr(tmpl, "= ");
        if (!rhs || !strcmp(rhs + 2, "0")) return; /* sign, step: derivative 0 */
        const char *y = e == p->def ? p->target : etext(p, e);
        const char *t = subst(p, tmpl, &s, g, y, etext(p, x), "");
        return walk(p, x, t, sign * s, e == p->def ? fmt(p, "dpre_%s", p->target) : fmt(p, "dpre_%s", e->name));
    }
    case CL_CONCAT: {
        if (e->n_args == 1) return walk(p, e->args[0], g, sign, hint);
        const char *h = named(p, g, hint_of(p, e));
        struct lf off = {0, 0, 0};
        for (int k = 0; k < e->n_args; k++) {
            const struct cinfo *a = &c->info[e->args[k]->id];
            struct lf w = a->kind == K_SCAL ? (struct lf){0, 0, 1} : a->n;
            struct lf end = {off.h + w.h, off.i + w.i, off.c + w.c};
            walk(p, e->args[k], fmt(p, "%s[%s:%s]", h, lf_text(p, off), lf_text(p, end)), sign, "dv");
            off = end;
        }
        return;
    }
    case CL_ADD:
    case CL_SUB:
    case CL_MUL:
    case CL_DIV:
        return walk_binary(p, e, g, sign, hint);
    case CL_MATMUL: {
        const char *h = named(p, g, hint), *wt = etext(p, e->a);
        const struct cl_expr *w = e->a;
        struct lf lo = {0}, hi = {0};
        if (w->kind == CL_SLICE && (cc_size(c, w->b, &lo) || cc_size(c, w->c, &hi))) return (void)(p->failed = 1);
        int sym = c->info[(w->kind == CL_SLICE ? w->a : w)->id].sym;
        add_piece(p, sym, w->kind == CL_SLICE, lo, hi, sign, fmt(p, "%s @ %s^T", h, wrap(p, etext(p, e->b), P_ATOM)));
        return walk(p, e->b, fmt(p, "%s^T @ %s", wt, h), sign, hint_of(p, e->b));
    }
    default:
        return fail_at(p, e, "cannot differentiate this expression");
    }
}

/* Σ ±text of pieces idx[0..n): positive terms first. */
static const char *sum_text(struct pr *p, const int *idx, int n)
{
    const char *acc = NULL;
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < n; k++) {
            const struct piece *q = &p->pc[idx[k]];
            if ((q->sign > 0) != (pass == 0)) continue;
            if (!acc) acc = q->sign > 0 ? q->text : fmt(p, "-%s", wrap(p, q->text, P_MUL));
            else acc = fmt(p, "%s %s %s", acc, q->sign > 0 ? "+" : "-", q->sign > 0 ? q->text : wrap(p, q->text, P_MUL));
        }
    return acc;
}

static struct lf sym_width(const struct cfile *c, int sym)
{
    const struct csym *s = &c->syms[sym];
    if (s->kind == SY_X) return (struct lf){0, 1, 0};
    if (s->kind == SY_STATE) return (struct lf){1, 0, 0};
    if (s->kind == SY_PARAM) {
        const struct tg_param_shape *sh = &c->params[s->index].shape;
        return c->params[s->index].ndim == 1 ? (struct lf){sh->c_h, sh->c_in, sh->c_1} : (struct lf){sh->r_h, sh->r_in, sh->r_1};
    }
    const struct cinfo *d = &c->info[s->def->id];
    return d->kind == K_SCAL ? (struct lf){0, 0, 1} : d->n;
}

static int cmp_lo(const void *a, const void *b, void *pp)
{
    const struct pr *p = pp;
    long long x = lf_key(p->pc[*(const int *)a].lo), y = lf_key(p->pc[*(const int *)b].lo);
    return x < y ? -1 : x > y;
}

/* The merged adjoint of sym: whole contributions summed, slices concatenated in unit order
 * (a gap is filled with zeros). NULL when nothing reached it. */
static const char *merged(struct pr *p, int sym, const char **comment)
{
    int *idx = malloc(sizeof *idx * (size_t)(p->npc + 1)), n = 0, nr = 0;
    if (!idx) return p->failed = 1, NULL;
    const char *cm = NULL;
    for (int eq = 0; eq < p->c->f->n_stmts; eq++)
        for (int k = 0; k < p->npc; k++)
            if (p->pc[k].sym == sym && p->pc[k].eq == eq) {
                const char *e = eq_comment(p, eq);
                cm = cm ? fmt(p, "%s; %s", cm, e) : e;
                break;
            }
    for (int k = 0; k < p->npc; k++)
        if (p->pc[k].sym == sym && !p->pc[k].ranged) idx[n++] = k;
    *comment = cm;
    const char *whole = n ? sum_text(p, idx, n) : NULL;
    for (int k = 0; k < p->npc; k++)
        if (p->pc[k].sym == sym && p->pc[k].ranged) idx[nr++] = k;
    const char *out = whole;
    if (nr) {
        qsort_r(idx, (size_t)nr, sizeof *idx, cmp_lo, p);
        const char *cat = NULL;
        struct lf at = {0, 0, 0}, w = sym_width(p->c, sym);
        const char *nm = p->c->syms[sym].name;
        int parts = 0;
        for (int k = 0; k < nr;) {
            int j = k;
            while (j < nr && lf_key(p->pc[idx[j]].lo) == lf_key(p->pc[idx[k]].lo) &&
                   lf_key(p->pc[idx[j]].hi) == lf_key(p->pc[idx[k]].hi))
                j++;
            struct lf lo = p->pc[idx[k]].lo;
            if (lf_key(lo) > lf_key(at)) {
                const char *z = fmt(p, "0 * %s[%s:%s]", nm, lf_text(p, at), lf_text(p, lo));
                cat = cat ? fmt(p, "%s, %s", cat, z) : z, parts++;
            } else if (lf_key(lo) < lf_key(at)) {
                p->failed = 1;
                tg_error(TG_ERR_FORMAT, "tapegrad adjoint: overlapping slices of %s", nm);
                free(idx);
                return NULL;
            }
            const char *s = sum_text(p, idx + k, j - k);
            cat = cat ? fmt(p, "%s, %s", cat, s) : s, parts++;
            at = p->pc[idx[k]].hi;
            k = j;
        }
        if (lf_key(at) < lf_key(w)) {
            const char *z = fmt(p, "0 * %s[%s:%s]", nm, lf_text(p, at), lf_text(p, w));
            cat = fmt(p, "%s, %s", cat, z), parts++;
        }
        cat = parts == 1 ? cat : fmt(p, "[%s]", cat);
        out = whole ? fmt(p, "%s + %s", whole, wrap(p, cat, P_ADD + 1)) : cat;
    }
    free(idx);
    return out;
}

static void print_leaf(struct pr *p, int sym)
{
    const struct csym *s = &p->c->syms[sym];
    const char *cm, *m = merged(p, sym, &cm);
    if (!m) {
        if (s->kind == SY_STATE) emit_line(p, fmt(p, "d%s = 0 * %s", s->name, s->name), "nothing in the step reads it");
        return;
    }
    emit_line(p, fmt(p, "d%s %s %s", s->name, s->kind == SY_PARAM ? "+=" : "=", m), cm);
}

static int walked(const struct cfile *c, const struct cl_stmt *s)
{
    if (s->kind != CL_S_ASSIGN) return 0;
    int k = sym_named(c, s->target);
    return k >= 0 && (c->syms[k].kind == SY_NEXT || c->syms[k].live);
}

static void print_lines(struct pr *p)
{
    const struct cfile *c = p->c;
    const struct cl_file *f = c->f;
    char given[512] = "";
    for (int j = 0; j < c->cell.n_state; j++) {
        size_t n = strlen(given);
        snprintf(given + n, sizeof given - n, "%sd%s", j ? ", " : "", c->syms[c->next_sym[j]].name);
    }
    emit_line(p, NULL, fmt(p, "backward of one step of %s.cell (tapegrad adjoint); given %s", c->cell.name, given));
    for (int k = f->n_stmts - 1; k >= 0 && !p->failed; k--) {
        const struct cl_stmt *s = &f->stmts[k];
        if (!walked(c, s)) continue;
        int sym = sym_named(c, s->target);
        p->eq = k, p->def = s->expr, p->target = s->target;
        const char *cm, *m = merged(p, sym, &cm);
        if (!m && c->syms[sym].kind == SY_INTER) continue; /* no gradient reaches it */
        if (m) emit_line(p, fmt(p, "d%s %s %s", s->target, c->syms[sym].kind == SY_NEXT ? "+=" : "=", m), cm);
        walk(p, s->expr, fmt(p, "d%s", s->target), 1, fmt(p, "dsub_%s", s->target));
    }
    /* the leaves last, complete, grouped by the first equation that reads them (in the file's
     * order), within a group parameters, x, states */
    static const enum sym_kind order[3] = {SY_PARAM, SY_X, SY_STATE};
    for (int eq = 0; eq <= f->n_stmts && !p->failed; eq++)
        for (int o = 0; o < 3; o++)
            for (int q = 0; q < c->n_syms; q++) {
                if (c->syms[q].kind != order[o]) continue;
                int first = f->n_stmts;
                for (int k = 0; k < p->npc; k++)
                    if (p->pc[k].sym == q && p->pc[k].eq < first) first = p->pc[k].eq;
                if (first == eq) print_leaf(p, q);
            }
}

/* ------------------------------------------------------------- LaTeX */

struct sb_ {
    char *s;
    size_t n, cap;
    int failed;
};

static void sbf(struct sb_ *b, const char *f, ...) __attribute__((format(printf, 2, 3)));
static void sbf(struct sb_ *b, const char *f, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, f);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, f, ap);
        va_end(ap);
        if (k < 0) return (void)(b->failed = 1);
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap + (size_t)k + 64) * 2;
        char *s = realloc(b->s, cap);
        if (!s) return (void)(b->failed = 1);
        if (!b->s) s[0] = 0;
        b->s = s, b->cap = cap;
    }
}

static void latex_name(struct sb_ *sb, const char *n)
{
    size_t len = strcspn(n, "'");
    const char *us = memchr(n, '_', len);
    if (us) sbf(sb, "\\mathit{%.*s}_{\\mathit{%.*s}}%s", (int)(us - n), n, (int)(len - (size_t)(us - n) - 1), us + 1, n + len);
    else sbf(sb, len > 1 ? "\\mathit{%.*s}%s" : "%.*s%s", (int)len, n, n + len);
}

static int lprec(const struct cl_expr *e)
{
    switch (e->kind) {
    case CL_ADD: case CL_SUB: return P_ADD;
    case CL_MUL: case CL_DIV: return P_MUL;
    case CL_MATMUL: case CL_NEG: return P_MM;
    default: return P_ATOM;
    }
}

static void latex_expr(struct sb_ *sb, const struct cl_file *f, const struct cl_expr *e, int need)
{
    int paren = lprec(e) < need;
    if (paren) sbf(sb, "\\left(");
    switch (e->kind) {
    case CL_NUM: sbf(sb, "%.*s", e->end - e->start, f->text + e->start); break;
    case CL_NAME: latex_name(sb, e->name); break;
    case CL_CALL: {
        static const char *const fn[][2] = {{"sigmoid", "\\sigma"}, {"tanh", "\\tanh"}, {"exp", "\\exp"}, {"log", "\\log"}};
        const char *name = NULL;
        for (size_t k = 0; k < sizeof fn / sizeof fn[0]; k++)
            if (!strcmp(e->name, fn[k][0])) name = fn[k][1];
        if (!strcmp(e->name, "sqrt")) {
            sbf(sb, "\\sqrt{");
            latex_expr(sb, f, e->args[0], 0);
            sbf(sb, "}");
            break;
        }
        if (name) sbf(sb, "%s\\left(", name);
        else sbf(sb, "\\operatorname{%s}\\left(", e->name);
        for (int k = 0; k < e->n_args; k++) latex_expr(sb, f, e->args[k], 0);
        sbf(sb, "\\right)");
        break;
    }
    case CL_SLICE:
        latex_expr(sb, f, e->a, P_ATOM);
        sbf(sb, "_{[%.*s]}", e->c->end - e->b->start, f->text + e->b->start);
        break;
    case CL_CONCAT:
        sbf(sb, "\\left[");
        for (int k = 0; k < e->n_args; k++) {
            if (k) sbf(sb, ",\\; ");
            latex_expr(sb, f, e->args[k], 0);
        }
        sbf(sb, "\\right]");
        break;
    case CL_NEG: sbf(sb, "-"); latex_expr(sb, f, e->a, P_MM); break;
    case CL_ADD: case CL_SUB:
        latex_expr(sb, f, e->a, P_ADD);
        sbf(sb, e->kind == CL_ADD ? " + " : " - ");
        latex_expr(sb, f, e->b, P_ADD + 1);
        break;
    case CL_MUL:
        latex_expr(sb, f, e->a, P_MUL);
        sbf(sb, e->a->kind == CL_NUM || e->b->kind == CL_NUM ? " \\cdot " : " \\odot ");
        latex_expr(sb, f, e->b, P_MUL + 1);
        break;
    case CL_DIV:
        sbf(sb, "\\frac{");
        latex_expr(sb, f, e->a, 0);
        sbf(sb, "}{");
        latex_expr(sb, f, e->b, 0);
        sbf(sb, "}");
        break;
    case CL_MATMUL:
        latex_expr(sb, f, e->a, P_MM);
        sbf(sb, "\\,");
        latex_expr(sb, f, e->b, P_MM + 1);
        break;
    case CL_TRANSPOSE:
        latex_expr(sb, f, e->a, P_ATOM);
        sbf(sb, "^{\\top}");
        break;
    }
    if (paren) sbf(sb, "\\right)");
}

/* The printed derivation, parsed back (it is a derivation file), rendered line by line. */
static char *to_latex(const char *text, const char *name)
{
    struct cl_file *f = cl_parse(text, strlen(text), name);
    if (!f) return NULL;
    struct sb_ sb = {0};
    sbf(&sb, "%% %s: backward of one step (tapegrad adjoint --format latex)\n\\begin{align*}\n", name);
    const char *line = text;
    int ln = 1, k = 0;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        if (line[0] == '#') sbf(&sb, "%% %.*s\n", (int)(n > 2 ? n - 2 : 0), line + 2);
        while (k < f->n_stmts && f->stmts[k].line < ln) k++;
        if (k < f->n_stmts && f->stmts[k].line == ln) {
            const struct cl_stmt *s = &f->stmts[k];
            latex_name(&sb, s->target);
            sbf(&sb, s->kind == CL_S_ACCUM ? " &\\mathrel{+}= " : " &= ");
            latex_expr(&sb, f, s->expr, 0);
            sbf(&sb, " \\\\\n");
        }
        line += n + (end != NULL);
        ln++;
    }
    sbf(&sb, "\\end{align*}\n");
    cl_file_free(f);
    if (sb.failed) {
        free(sb.s);
        tg_error(TG_ERR_NOMEM, "tapegrad adjoint: out of memory");
        return NULL;
    }
    return sb.s;
}

/* ------------------------------------------------------------- the API */

char *tg_adjoint_text(const struct tg_cell *cell, enum tg_adj_format format)
{
    const struct cfile *c = (const struct cfile *)cell;
    if (!cell || !tg_cell_source(cell, NULL)) {
        tg_error(TG_ERR_VALUE, "tapegrad adjoint: %s is a C cell; give its cell file (models/cells/%s.cell)",
                 cell ? cell->name : "(null)", cell ? cell->name : "NAME");
        return NULL;
    }
    struct pr p = {.c = c};
    print_lines(&p);
    struct sb_ sb = {0};
    const char *last = NULL;
    for (int k = 0; k < p.nln && !p.failed; k++) {
        const struct oline *l = &p.ln[k];
        if (l->comment && (!last || strcmp(last, l->comment))) sbf(&sb, "# %s\n", l->comment);
        last = l->comment;
        if (l->text) sbf(&sb, "%s\n", l->text);
    }
    char *out = p.failed || sb.failed ? NULL : sb.s;
    if (!out) {
        free(sb.s);
        if (!p.failed || !tg_last_error()[0]) tg_error(TG_ERR_NOMEM, "tapegrad adjoint: out of memory");
    }
    for (int k = 0; k < p.npool; k++) free(p.pool[k]);
    free(p.pool), free(p.pc), free(p.ln), free(p.helpers);
    if (out && format == TG_ADJ_LATEX) {
        char name[256];
        snprintf(name, sizeof name, "%s.adj", cell->name);
        char *tex = to_latex(out, name);
        free(out);
        out = tex;
    }
    return out;
}

int tg_adjoint_write(const struct tg_cell *cell, enum tg_adj_format format, FILE *out)
{
    char *s = tg_adjoint_text(cell, format);
    if (!s) return -1;
    fputs(s, out);
    free(s);
    return 0;
}
