/* cell_lang.c — lexer and parser of the cell language (grammar in cell_lang.h).
 *
 * A line is lexed into tokens, then parsed by recursive descent into statements and
 * expression trees that live in one arena per file, so a bad file (any bytes at all) is freed
 * in one call and never crashes: nesting is bounded, names and numbers have length limits, and
 * every error is one line "PATH:LINE:COL: message". Meaning (names, sizes) is checked later, in
 * cell_compile.c, when H and I are known. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell_lang.h"
#include "tapegrad.h"

enum { MAX_NAME = 48, MAX_NUM = 64, MAX_DEPTH = 64, MAX_LINE_TOKENS = 4096 };

/* ------------------------------------------------------------------ arena */

struct cl_arena {
    struct cl_arena *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *cl_alloc(struct cl_file *f, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct cl_arena *a = f->arena;
    if (!a || a->cap - a->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        struct cl_arena *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a;
        b->used = 0;
        b->cap = cap;
        f->arena = a = b;
    }
    void *p = a->data + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

void cl_file_free(struct cl_file *f)
{
    if (!f) return;
    for (struct cl_arena *a = f->arena, *n; a; a = n) {
        n = a->next;
        free(a);
    }
    free(f);
}

/* ----------------------------------------------------------------- errors */

int cl_error_at(const struct cl_file *f, int line, int col, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tg_error(TG_ERR_FORMAT, "%s:%d:%d: %s", f->path, line, col, msg);
    return TG_ERR_FORMAT;
}

const char *cl_expr_text(const struct cl_file *f, const struct cl_expr *e, char *buf, size_t n)
{
    size_t k = 0;
    int space = 0, cut = 0;
    for (int i = e->start; i < e->end; i++) {
        char ch = f->text[i];
        if (ch == ' ' || ch == '\t' || ch == '\r') {
            space = 1;
            continue;
        }
        if (k + (space && k > 0) + 1 + 4 > n) { /* room for this, "..." and the NUL */
            cut = 1;
            break;
        }
        if (space && k > 0) buf[k++] = ' ';
        space = 0;
        buf[k++] = ch;
    }
    if (cut) memcpy(buf + k, "...", 3), k += 3;
    buf[k] = 0;
    return buf;
}

/* ------------------------------------------------------------------ lexer */

enum tok {
    T_END, T_NAME, T_NUM, T_LP, T_RP, T_LB, T_RB, T_COMMA, T_COLON, T_EQ, T_PLUSEQ,
    T_PLUS, T_MINUS, T_STAR, T_SLASH, T_AT, T_CARET,
};

static const char *const tok_text[] = {
    "end of line", "name", "number", "'('", "')'", "'['", "']'", "','", "':'", "'='", "'+='",
    "'+'", "'-'", "'*'", "'/'", "'@'", "'^'",
};

struct token {
    enum tok kind;
    int start, end;   /* bytes of the source */
    int line, col;
    double num;
    const char *name; /* T_NAME, in the arena */
};

struct parser {
    struct cl_file *f;
    const char *src;
    int line;
    int line_start;   /* byte offset of the current line */
    struct token *tok;
    int n, cap, pos;
    int depth;
    int failed;
};

static int col_of(const struct parser *p, int off)
{
    int col = 1;
    for (int i = p->line_start; i < off; i++)
        if (((unsigned char)p->src[i] & 0xC0) != 0x80) col++;
    return col;
}

static int fail(struct parser *p, int off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct parser *p, int off, const char *fmt, ...)
{
    if (p->failed) return -1;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cl_error_at(p->f, p->line, col_of(p, off), "%s", msg);
    p->failed = 1;
    return -1;
}

static int nomem(struct parser *p)
{
    if (!p->failed) tg_error(TG_ERR_NOMEM, "%s: out of memory while parsing", p->f->path);
    p->failed = 1;
    return -1;
}

/* Describe the character at off for "unexpected character" messages, safely for any bytes. */
static void describe_char(const char *s, int off, int end, char *buf, size_t n)
{
    unsigned char c = (unsigned char)s[off];
    if (c >= 0x20 && c < 0x7f) {
        snprintf(buf, n, "'%c'", c);
        return;
    }
    int len = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    int ok = len > 0 && off + len <= end;
    for (int i = 1; ok && i < len; i++) ok = ((unsigned char)s[off + i] & 0xC0) == 0x80;
    if (ok) snprintf(buf, n, "'%.*s'", len, s + off);
    else snprintf(buf, n, "byte 0x%02x", c);
}

static int push(struct parser *p, struct token t)
{
    if (p->n == p->cap) {
        if (p->cap >= MAX_LINE_TOKENS) return fail(p, t.start, "line too long (more than %d tokens)", MAX_LINE_TOKENS);
        int cap = p->cap ? 2 * p->cap : 64;
        struct token *nt = realloc(p->tok, (size_t)cap * sizeof *nt);
        if (!nt) return nomem(p);
        p->tok = nt;
        p->cap = cap;
    }
    t.line = p->line;
    t.col = col_of(p, t.start);
    p->tok[p->n++] = t;
    return 0;
}

static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Tokens of the line [start, end) (comment excluded) into p->tok. */
static int lex_line(struct parser *p, int start, int end)
{
    const char *s = p->src;
    p->n = p->pos = 0;
    int i = start;
    while (i < end) {
        char c = s[i];
        struct token t = {.start = i};
        if (c == ' ' || c == '\t' || c == '\r') {
            i++;
            continue;
        }
        if (is_alpha(c)) {
            int j = i;
            while (j < end && (is_alpha(s[j]) || is_digit(s[j]))) j++;
            if (j < end && s[j] == '\'') j++;
            if (j - i > MAX_NAME) return fail(p, i, "name longer than %d characters", MAX_NAME);
            char *name = cl_alloc(p->f, (size_t)(j - i) + 1);
            if (!name) return nomem(p);
            memcpy(name, s + i, (size_t)(j - i));
            t.kind = T_NAME;
            t.name = name;
            t.end = i = j;
        } else if (is_digit(c) || (c == '.' && i + 1 < end && is_digit(s[i + 1]))) {
            int j = i;
            while (j < end && is_digit(s[j])) j++;
            if (j < end && s[j] == '.') {
                j++;
                while (j < end && is_digit(s[j])) j++;
            }
            if (j < end && (s[j] == 'e' || s[j] == 'E')) {
                int k = j + 1;
                if (k < end && (s[k] == '+' || s[k] == '-')) k++;
                if (k < end && is_digit(s[k])) {
                    while (k < end && is_digit(s[k])) k++;
                    j = k;
                }
            }
            if (j - i >= MAX_NUM) return fail(p, i, "number longer than %d characters", MAX_NUM - 1);
            char buf[MAX_NUM];
            memcpy(buf, s + i, (size_t)(j - i));
            buf[j - i] = 0;
            t.num = strtod(buf, NULL);
            if (!isfinite(t.num)) return fail(p, i, "number %s is out of range", buf);
            t.kind = T_NUM;
            t.end = i = j;
        } else {
            static const char single[] = "()[],:=+-*/@^";
            static const enum tok kinds[] = {T_LP, T_RP, T_LB, T_RB, T_COMMA, T_COLON, T_EQ,
                                             T_PLUS, T_MINUS, T_STAR, T_SLASH, T_AT, T_CARET};
            const char *hit = c ? strchr(single, c) : NULL;
            if (!hit) {
                char d[32];
                describe_char(s, i, end, d, sizeof d);
                return fail(p, i, "unexpected character %s", d);
            }
            t.kind = kinds[hit - single];
            t.end = ++i;
            if (t.kind == T_PLUS && i < end && s[i] == '=') t.kind = T_PLUSEQ, t.end = ++i;
        }
        if (push(p, t)) return -1;
    }
    struct token e = {.kind = T_END, .start = end, .end = end};
    return push(p, e);
}

/* ----------------------------------------------------------------- parser */

static struct token *peek(struct parser *p) { return &p->tok[p->pos]; }
static struct token *next(struct parser *p)
{
    struct token *t = &p->tok[p->pos];
    if (t->kind != T_END) p->pos++;
    return t;
}
static int accept(struct parser *p, enum tok k)
{
    if (peek(p)->kind != k) return 0;
    next(p);
    return 1;
}

static int expect(struct parser *p, enum tok k, const char *where)
{
    struct token *t = peek(p);
    if (t->kind == k) {
        next(p);
        return 0;
    }
    if (t->kind == T_NAME || t->kind == T_NUM)
        return fail(p, t->start, "expected %s %s, found '%.*s'", tok_text[k], where, t->end - t->start, p->src + t->start);
    return fail(p, t->start, "expected %s %s, found %s", tok_text[k], where, tok_text[t->kind]);
}

static struct cl_expr *node(struct parser *p, enum cl_kind k, const struct token *at)
{
    struct cl_expr *e = cl_alloc(p->f, sizeof *e);
    if (!e) return nomem(p), NULL;
    e->kind = k;
    e->line = at->line;
    e->col = at->col;
    e->start = at->start;
    e->end = at->end;
    e->id = p->f->n_exprs++;
    return e;
}

static struct cl_expr *binary(struct parser *p, enum cl_kind k, struct cl_expr *a, struct cl_expr *b)
{
    if (!a || !b) return NULL;
    struct cl_expr *e = cl_alloc(p->f, sizeof *e);
    if (!e) return nomem(p), NULL;
    *e = (struct cl_expr){.kind = k, .line = a->line, .col = a->col, .start = a->start,
                          .end = b->end, .a = a, .b = b, .id = p->f->n_exprs++};
    return e;
}

static struct cl_expr *parse_expr(struct parser *p);

/* expr {',' expr} up to `close`, into e->args. */
static int parse_list(struct parser *p, struct cl_expr *e, enum tok close, const char *what)
{
    struct cl_expr *items[256];
    int n = 0;
    if (peek(p)->kind == close) return fail(p, peek(p)->start, "empty %s", what);
    do {
        if (n == 256) return fail(p, peek(p)->start, "more than 256 items in one %s", what);
        if (!(items[n++] = parse_expr(p))) return -1;
    } while (accept(p, T_COMMA));
    struct token *end = peek(p);
    if (expect(p, close, close == T_RP ? "to close the argument list" : "to close the concatenation")) return -1;
    e->end = end->end;
    e->args = cl_alloc(p->f, (size_t)n * sizeof *e->args);
    if (!e->args) return nomem(p);
    memcpy(e->args, items, (size_t)n * sizeof *items);
    e->n_args = n;
    return 0;
}

static struct cl_expr *parse_primary(struct parser *p)
{
    struct token *t = peek(p);
    struct cl_expr *e;
    switch (t->kind) {
    case T_NUM:
        next(p);
        if (!(e = node(p, CL_NUM, t))) return NULL;
        e->num = t->num;
        /* 4H: a number written right against a name multiplies it (sizes are written so) */
        if (peek(p)->kind == T_NAME && peek(p)->start == t->end) {
            struct token *n = next(p);
            struct cl_expr *v = node(p, CL_NAME, n);
            if (!v) return NULL;
            v->name = n->name;
            return binary(p, CL_MUL, e, v);
        }
        return e;
    case T_NAME:
        next(p);
        if (!(e = node(p, CL_NAME, t))) return NULL;
        e->name = t->name;
        if (peek(p)->kind == T_LP) {
            next(p);
            e->kind = CL_CALL;
            if (parse_list(p, e, T_RP, "argument list")) return NULL;
        }
        return e;
    case T_LP: {
        next(p);
        if (!(e = parse_expr(p))) return NULL;
        struct token *close = peek(p);
        if (expect(p, T_RP, "to close '('")) return NULL;
        e->start = t->start; /* the parentheses belong to the text of the group */
        e->line = t->line;
        e->col = t->col;
        e->end = close->end;
        return e;
    }
    case T_LB:
        next(p);
        if (!(e = node(p, CL_CONCAT, t))) return NULL;
        if (parse_list(p, e, T_RB, "concatenation")) return NULL;
        return e;
    default:
        fail(p, t->start, t->kind == T_END ? "expected an expression at the end of the line"
                                           : "expected an expression, found %s", tok_text[t->kind]);
        return NULL;
    }
}

static struct cl_expr *parse_postfix(struct parser *p)
{
    struct cl_expr *e = parse_primary(p);
    while (e) {
        struct token *t = peek(p);
        if (t->kind == T_LB) {
            next(p);
            struct cl_expr *s = node(p, CL_SLICE, t);
            if (!s) return NULL;
            s->line = e->line, s->col = e->col, s->start = e->start;
            s->a = e;
            if (!(s->b = parse_expr(p)) || expect(p, T_COLON, "in the slice v[lo:hi]") ||
                !(s->c = parse_expr(p)))
                return NULL;
            struct token *close = peek(p);
            if (expect(p, T_RB, "to close the slice")) return NULL;
            s->end = close->end;
            e = s;
        } else if (t->kind == T_CARET) {
            next(p);
            struct token *T = peek(p);
            if (T->kind != T_NAME || strcmp(T->name, "T") != 0) {
                fail(p, T->start, "expected 'T' after '^' (a transpose is written W^T)");
                return NULL;
            }
            next(p);
            struct cl_expr *tr = binary(p, CL_TRANSPOSE, e, e);
            if (!tr) return NULL;
            tr->b = NULL;
            tr->end = T->end;
            e = tr;
        } else {
            break;
        }
    }
    return e;
}

static struct cl_expr *parse_unary(struct parser *p)
{
    struct token *t = peek(p);
    if (t->kind != T_MINUS) return parse_postfix(p);
    next(p);
    if (++p->depth > MAX_DEPTH) return fail(p, t->start, "expression nested too deeply"), NULL;
    struct cl_expr *a = parse_unary(p);
    p->depth--;
    if (!a) return NULL;
    struct cl_expr *e = node(p, CL_NEG, t);
    if (!e) return NULL;
    e->a = a;
    e->end = a->end;
    return e;
}

static struct cl_expr *parse_mm(struct parser *p)
{
    struct cl_expr *e = parse_unary(p);
    while (e && accept(p, T_AT)) e = binary(p, CL_MATMUL, e, parse_unary(p));
    return e;
}

static struct cl_expr *parse_term(struct parser *p)
{
    struct cl_expr *e = parse_mm(p);
    for (;;) {
        if (!e) return NULL;
        if (accept(p, T_STAR)) e = binary(p, CL_MUL, e, parse_mm(p));
        else if (accept(p, T_SLASH)) e = binary(p, CL_DIV, e, parse_mm(p));
        else return e;
    }
}

static struct cl_expr *parse_expr(struct parser *p)
{
    if (++p->depth > MAX_DEPTH) return fail(p, peek(p)->start, "expression nested too deeply"), NULL;
    struct cl_expr *e = parse_term(p);
    for (;;) {
        if (!e) break;
        if (accept(p, T_PLUS)) e = binary(p, CL_ADD, e, parse_term(p));
        else if (accept(p, T_MINUS)) e = binary(p, CL_SUB, e, parse_term(p));
        else break;
    }
    p->depth--;
    return e;
}

/* ------------------------------------------------------------- statements */

static int parse_decls(struct parser *p, struct cl_stmt *s)
{
    struct cl_decl d[256];
    int n = 0;
    do {
        struct token *t = peek(p);
        if (t->kind != T_NAME) {
            return fail(p, t->start, "expected a %s name, found %s",
                        s->kind == CL_S_PARAM ? "parameter" : s->kind == CL_S_STATE ? "state" : "cell",
                        tok_text[t->kind]);
        }
        if (n == 256) return fail(p, t->start, "more than 256 names on one line");
        next(p);
        d[n] = (struct cl_decl){.name = t->name, .line = t->line, .col = t->col};
        if (strchr(t->name, '\''))
            return fail(p, t->start, "a %s name cannot end in a prime: '%s'",
                        s->kind == CL_S_PARAM ? "parameter" : s->kind == CL_S_STATE ? "state" : "cell", t->name);
        if (s->kind == CL_S_PARAM) {
            if (expect(p, T_LB, "after the parameter name (param W[ROWS, COLS] or b[N])")) return -1;
            if (!(d[n].rows = parse_expr(p))) return -1;
            if (accept(p, T_COMMA) && !(d[n].cols = parse_expr(p))) return -1;
            if (expect(p, T_RB, "to close the parameter's shape")) return -1;
        }
        n++;
    } while (s->kind != CL_S_CELL && accept(p, T_COMMA));
    if (peek(p)->kind != T_END) {
        struct token *t = peek(p);
        return fail(p, t->start, "unexpected %s after the %s", tok_text[t->kind],
                    s->kind == CL_S_CELL ? "cell name" : "declaration");
    }
    s->decls = cl_alloc(p->f, (size_t)n * sizeof *d);
    if (!s->decls) return nomem(p);
    memcpy(s->decls, d, (size_t)n * sizeof *d);
    s->n_decls = n;
    return 0;
}

/* init NAME ['[' lo ':' hi ']'] '=' EXPR — what the EXPR may be is the checker's business. */
static int parse_init(struct parser *p, struct cl_stmt *s)
{
    struct token *t = next(p);
    s->kind = CL_S_INIT;
    s->target = t->name;
    s->decls = cl_alloc(p->f, sizeof *s->decls);
    if (!s->decls) return nomem(p);
    s->n_decls = 1;
    *s->decls = (struct cl_decl){.name = t->name, .line = t->line, .col = t->col};
    if (accept(p, T_LB)) {
        if (!(s->decls->rows = parse_expr(p))) return -1;
        if (expect(p, T_COLON, "in the slice of an init (init W[lo:hi] = …)")) return -1;
        if (!(s->decls->cols = parse_expr(p))) return -1;
        if (expect(p, T_RB, "to close the slice")) return -1;
    }
    if (expect(p, T_EQ, "after the parameter of an init (init NAME = uniform(a, b), normal(m, s), "
               "zeros, ones, orthogonal or a number)")) return -1;
    if (!(s->expr = parse_expr(p))) return -1;
    struct token *e = peek(p);
    if (e->kind != T_END) return fail(p, e->start, "unexpected %s after the init", tok_text[e->kind]);
    return 0;
}

static int parse_stmt(struct parser *p, struct cl_stmt *s)
{
    struct token *t = peek(p);
    s->line = t->line;
    s->col = t->col;
    if (t->kind != T_NAME)
        return fail(p, t->start, "expected a statement (cell, state, param or NAME = EXPR), found %s",
                    tok_text[t->kind]);
    enum tok after = p->tok[p->pos + 1].kind;
    if (after == T_EQ || after == T_PLUSEQ) {
        next(p);
        next(p);
        s->kind = after == T_EQ ? CL_S_ASSIGN : CL_S_ACCUM;
        s->target = t->name;
        if (!(s->expr = parse_expr(p))) return -1;
        struct token *e = peek(p);
        if (e->kind != T_END) {
            if (e->kind == T_NAME || e->kind == T_NUM || e->kind == T_LP || e->kind == T_LB)
                return fail(p, e->start, "expected an operator or the end of the line, found '%.*s'",
                            e->end - e->start, p->src + e->start);
            return fail(p, e->start, "unexpected %s", tok_text[e->kind]);
        }
        return 0;
    }
    /* `init NAME …`: a keyword only when a name follows (`init = …` stays an equation) */
    if (strcmp(t->name, "init") == 0 && after == T_NAME) {
        next(p);
        return parse_init(p, s);
    }
    if (strcmp(t->name, "cell") == 0) s->kind = CL_S_CELL;
    else if (strcmp(t->name, "state") == 0) s->kind = CL_S_STATE;
    else if (strcmp(t->name, "param") == 0) s->kind = CL_S_PARAM;
    else if (after == T_END)
        return fail(p, p->tok[p->pos + 1].start, "expected '=' after '%s'", t->name);
    else
        return fail(p, p->tok[p->pos + 1].start, "expected '=' after '%s', found %s", t->name,
                    tok_text[after]);
    next(p);
    return parse_decls(p, s);
}

struct cl_file *cl_parse(const char *text, size_t len, const char *path)
{
    if (!path) path = "<cell>";
    if (len > (1u << 24)) {
        tg_error(TG_ERR_FORMAT, "%s: file too large (%zu bytes; a cell file is a few lines)", path, len);
        return NULL;
    }
    struct cl_file *f = calloc(1, sizeof *f);
    if (!f) return tg_error(TG_ERR_NOMEM, "%s: out of memory", path), NULL;
    size_t plen = strlen(path);
    char *pcopy = cl_alloc(f, plen + 1), *tcopy = cl_alloc(f, len + 1);
    if (!pcopy || !tcopy) {
        cl_file_free(f);
        tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    memcpy(pcopy, path, plen);
    if (len) memcpy(tcopy, text, len);
    f->path = pcopy;
    f->text = tcopy;
    f->len = len;

    struct parser p = {.f = f, .src = tcopy, .line = 0};
    int cap = 0;
    size_t i = 0;
    while (i < len && !p.failed) {
        size_t e = i;
        while (e < len && tcopy[e] != '\n') e++;
        p.line++;
        p.line_start = (int)i;
        size_t code_end = i;
        while (code_end < e && tcopy[code_end] != '#') code_end++;
        for (size_t k = i; k < code_end && !p.failed; k++)
            if (tcopy[k] == 0) fail(&p, (int)k, "NUL byte in the file");
        if (!p.failed && lex_line(&p, (int)i, (int)code_end) == 0 && p.n > 1) {
            if (f->n_stmts == cap) {
                cap = cap ? 2 * cap : 32;
                struct cl_stmt *ns = cl_alloc(f, (size_t)cap * sizeof *ns);
                if (!ns) {
                    nomem(&p);
                    break;
                }
                if (f->n_stmts) memcpy(ns, f->stmts, (size_t)f->n_stmts * sizeof *ns);
                f->stmts = ns;
            }
            struct cl_stmt *s = &f->stmts[f->n_stmts];
            memset(s, 0, sizeof *s);
            p.depth = 0;
            if (parse_stmt(&p, s) == 0) f->n_stmts++;
        }
        i = e + 1;
    }
    free(p.tok);
    if (p.failed) {
        cl_file_free(f);
        return NULL;
    }
    return f;
}
