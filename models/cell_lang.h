/* cell_lang.h — the cell language's syntax tree (models/cell_lang.c parses, cell_compile.c
 * checks and compiles). Private to models/.
 *
 * One grammar serves cell files (.cell) and, later, derivation files (.adj): the lexer takes
 * primes (`c'`), the parser takes `NAME += EXPR` and postfix `^T`, and names such as `dh'` are
 * ordinary names; what each kind of file accepts is decided by its checker, not here.
 *
 *   file    := { line '\n' }
 *   line    := [ stmt ] [ '#' comment ]
 *   stmt    := 'cell' NAME | 'state' NAME {',' NAME} | 'param' decl {',' decl}
 *            | 'init' NAME ['[' expr ':' expr ']'] '=' expr
 *            | NAME ['\''] ('=' | '+=') expr
 *   decl    := NAME '[' expr [',' expr] ']'
 *   expr    := term {('+' | '-') term}            left associative
 *   term    := mm {('*' | '/') mm}
 *   mm      := unary {'@' unary}
 *   unary   := '-' unary | postfix
 *   postfix := primary {'[' expr ':' expr ']' | '^' 'T'}
 *   primary := NUMBER [NAME]                       `4H` (no space) is 4*H
 *            | NAME ['\''] ['(' expr {',' expr} ')'] | '(' expr ')' | '[' expr {',' expr} ']'
 */
#ifndef TG_CELL_LANG_H
#define TG_CELL_LANG_H

#include <stddef.h>

enum cl_kind {
    CL_NUM,       /* num */
    CL_NAME,      /* name (with its prime: "c'") */
    CL_CALL,      /* name(args[0..n)) */
    CL_SLICE,     /* a[b:c] */
    CL_CONCAT,    /* [args[0..n)] */
    CL_NEG,       /* -a */
    CL_ADD, CL_SUB, CL_MUL, CL_DIV, CL_MATMUL, /* a op b */
    CL_TRANSPOSE, /* a^T */
};

struct cl_expr {
    enum cl_kind kind;
    int line, col;            /* of its first character, 1-based (columns count characters) */
    int start, end;           /* its text: bytes [start, end) of the source */
    double num;
    const char *name;
    struct cl_expr *a, *b, *c;
    struct cl_expr **args;
    int n_args;
    int id;                   /* 0 … n_exprs−1 in parse order (for the compiler's tables) */
};

enum cl_stmt_kind { CL_S_CELL, CL_S_STATE, CL_S_PARAM, CL_S_ASSIGN, CL_S_ACCUM, CL_S_INIT };

struct cl_decl {              /* one `param` entry, or one name of `state` / `cell` / `init` */
    const char *name;
    int line, col;
    struct cl_expr *rows, *cols; /* param: cols NULL for a vector NAME[N];
                                    init: the slice [rows:cols] of NAME, or both NULL */
};

struct cl_stmt {
    enum cl_stmt_kind kind;
    int line, col;
    struct cl_decl *decls;    /* cell, state, param */
    int n_decls;
    const char *target;       /* assign / accumulate: the name, with its prime */
    struct cl_expr *expr;     /* assign / accumulate: the value; init: the distribution */
};

struct cl_file {
    const char *path;         /* as given, for messages */
    const char *text;         /* the source (NUL-terminated copy) */
    size_t len;
    struct cl_stmt *stmts;
    int n_stmts;
    int n_exprs;
    struct cl_arena *arena;   /* everything above lives here */
};

/* Parse text (len bytes, NUL bytes are an error) read from path. On failure returns NULL and
 * sets tg_last_error() to "PATH:LINE:COL: message". Free with cl_file_free. */
struct cl_file *cl_parse(const char *text, size_t len, const char *path);
void cl_file_free(struct cl_file *f);

/* Arena allocation that lives as long as f (zeroed; NULL when out of memory). */
void *cl_alloc(struct cl_file *f, size_t n);

/* Set tg_last_error() to "PATH:LINE:COL: message" and return TG_ERR_FORMAT. */
int cl_error_at(const struct cl_file *f, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The source text of e with runs of white space collapsed to one space, into buf. */
const char *cl_expr_text(const struct cl_file *f, const struct cl_expr *e, char *buf, size_t n);

#endif
