/* cell_prog.h — a cell file after checking (cell_check.c) and compiling (cell_compile.c).
 * Private to models/. */
#ifndef TG_CELL_PROG_H
#define TG_CELL_PROG_H

#include "cell_lang.h"
#include "tapegrad_models.h"

/* A size: h·H + i·I + c. */
struct lf { long long h, i, c; };
static inline long long lf_eval(struct lf s, int H, int I) { return s.h * H + s.i * I + s.c; }

enum ck { K_NUM, K_SCAL, K_VEC, K_MAT }; /* number, one per sequence, vector, matrix parameter */
enum { D_X = 1, D_S = 2, D_P = 4 };       /* reads x / a state / a parameter */
enum sym_kind { SY_X, SY_SIZE, SY_STATE, SY_PARAM, SY_INTER, SY_NEXT };

struct csym {
    const char *name;
    enum sym_kind kind;
    int index;                  /* state or parameter index */
    const struct cl_expr *def;  /* SY_INTER, SY_NEXT: its expression */
    int line, col;              /* where it is declared or assigned */
    int used;
    int live;                   /* the next states depend on it (cell_compile.c) */
};

/* What the checker knows of one expression (indexed by cl_expr.id). */
struct cinfo {
    enum ck kind;
    unsigned dep;
    double num;                 /* K_NUM */
    struct lf n;                /* K_VEC: units; K_MAT: rows */
    struct lf cols;             /* K_MAT */
    int sym;                    /* CL_NAME: its symbol */
    int fn;                     /* CL_CALL: its op (enum tg_op) */
};

/* A function name's op (enum tg_op), or −1; sum and mean reduce B×n to B×1. */
int cl_func_lookup(const char *name);
int cl_func_is_reduction(int op);

enum iop {
    I_ARG, I_XP, I_MATMUL, I_ADDMM, I_ADD, I_SUB, I_MUL, I_DIV, I_AFFINE, I_FN, I_SLICE,
    I_ROWSLICE, I_CONCAT, I_CONST,
};

struct ins {
    enum iop op;
    int a, b, c;                /* operand slots; I_ARG: argument index; I_XP: block; I_FN: function */
    int *list, n;               /* I_CONCAT */
    double alpha, beta;         /* I_AFFINE: alpha·a + beta; I_CONST: alpha */
    struct lf lo, hi;           /* I_SLICE, I_ROWSLICE */
    const char *label;          /* the file's name for the result (DOT) */
    const char *origin;         /* "FILE:LINE" of its equation (anomaly reports) */
};

struct prog {
    struct ins *ins;
    int n, cap;
    int *memo;                  /* expression id → slot + 1 (0: not emitted) */
};

struct cblock {                 /* one column block of the hoisted input projection */
    int key;                    /* expression id, or −1 for x itself */
    int partial;                /* the hoistable terms of the sum at `key` */
    int slot;                   /* its slot in the input program */
    struct lf width;
};

/* One `init` line: how (part of) a parameter starts. */
enum init_kind { IN_UNIFORM, IN_NORMAL, IN_CONST, IN_ORTHOGONAL };
struct cinit {
    const struct cl_stmt *stmt;
    int param;                  /* index into params */
    enum init_kind kind;
    double a, b;                /* uniform(a, b), normal(a = mean, b = std), constant a */
    const struct cl_expr *ea, *eb; /* … as written, when they name H or I (evaluated per layer) */
    int sliced;                 /* rows (matrix) or units (vector) [lo, hi) only */
    struct lf lo, hi;
};

struct cfile {
    struct tg_cell cell;        /* first: a struct tg_cell * of a file cell is a struct cfile * */
    unsigned magic;
    struct cl_file *f;
    char *name, *equations;
    struct tg_param_spec *params;
    struct csym *syms;
    int n_syms;
    int *state_sym, *next_sym;  /* per state */
    struct cinfo *info;
    struct prog step, input;
    struct cblock *blocks;
    int n_blocks, blocks_cap;
    int input_out;              /* slot of the projection in the input program */
    int *next_slot;             /* per state: its slot in the step program */
    int n_args;                 /* step/input arguments: x, states, parameters */
    struct cinit *inits;        /* the `init` lines, in file order */
    int n_inits;
};

#define CFILE_MAGIC 0x63656c6cu

/* cell_check.c: names, kinds and dependencies (any sizes); sizes for concrete H and I. */
int cc_analyze(struct cfile *c);
int cc_check_sizes(const struct cfile *c, int H, int I);
/* Parse a size expression into h·H + i·I + c. */
int cc_size(const struct cfile *c, const struct cl_expr *e, struct lf *out);

/* cell_init.c: the `init` lines — resolved (after cc_analyze's declarations), and their slices
 * checked for concrete sizes (from cc_check_sizes). */
int cc_init_analyze(struct cfile *c);
int cc_init_check_sizes(const struct cfile *c, int H, int I);

/* cell_compile.c */
int cc_plan(struct cfile *c);

#endif
