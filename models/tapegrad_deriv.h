/* tapegrad_deriv.h — derivations (.adj files): the backward pass of one step of a cell file,
 * printed from the cell's equations, and a hand derivation checked against autodiff.
 *
 *   struct tg_cell *c = tg_cell_load("lstm.cell");
 *   tg_adjoint_write(c, TG_ADJ_TEXT, stdout);          // dc' += …, do = …, da = [...], dW += da @ x^T
 *   struct tg_deriv_opts o = {.T = 5, .B = 3, .I = 4, .H = 6, .L = 2, .V = 5, .seed = 1};
 *   int rc = tg_deriv_check(c, "mine.adj", &o, stdout); // 0 pass, 1 a wrong line, 2 a file error
 *
 * The language is the cell language's (docs: cell-language.md, "Derivation files"). Two
 * extensions: `H` and `I` may stand in a derivation's expressions as numbers (the mean's
 * adjoint divides by the width), and `[M1, M2]` of matrices stacks their rows (the gradient of a
 * weight whose row blocks are used apart, `weight[0:2H] @ …`, as in gru_cho.cell). */
#ifndef TAPEGRAD_DERIV_H
#define TAPEGRAD_DERIV_H

#include <stdio.h>

#include "tapegrad_models.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A built-in cell's shipped file (models/cells/NAME.cell, compiled in), parsed; NULL if none.
 * Free with tg_cell_free. */
struct tg_cell *tg_cell_parse_builtin(const char *name);

enum tg_adj_format { TG_ADJ_TEXT = 0, TG_ADJ_LATEX = 1 };

/* Print the backward pass of one step of a cell file (tg_cell_parse / tg_cell_load) as a
 * derivation file, or as a LaTeX align* block. 0 on success; −1 with tg_last_error() set (a
 * C cell, or an expression the printer cannot differentiate). */
int tg_adjoint_write(const struct tg_cell *cell, enum tg_adj_format format, FILE *out);
/* The same into a malloc'ed string (NULL on error). */
char *tg_adjoint_text(const struct tg_cell *cell, enum tg_adj_format format);

struct tg_deriv_opts {
    int T, B, I, H, L, V;       /* sizes of the random float64 problem (as `tapegrad check`) */
    unsigned long long seed;
    double tol;                 /* relative tolerance (0: 1e-10) */
    int quiet;                  /* 1: print only the verdict and a failure's report */
};

/* Run the derivation in adj_path (text: its contents, or NULL to read the file) for t = T … 1
 * over L layers and compare every adjoint it assigns and every summed parameter gradient with
 * autodiff (float64). Writes a report to out. Returns 0 when everything agrees, 1 when some
 * line is wrong (the report names it), 2 on an error in the derivation (tg_last_error():
 * "FILE:LINE:COL: message"), 3 on any other error. */
int tg_deriv_check(const struct tg_cell *cell, const char *adj_path, const char *text,
                   const struct tg_deriv_opts *opts, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
