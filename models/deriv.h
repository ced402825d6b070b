/* deriv.h — evaluating cell-language expressions on tensors (deriv_eval.c), shared by the
 * derivation checker's forward pass and its run of a .adj file (deriv_check.c). Private. */
#ifndef TG_DERIV_H
#define TG_DERIV_H

#include "cell_prog.h"

/* A value: K_NUM 1×1, K_SCAL B×1 (one per sequence), K_VEC B×n (a vector parameter: 1×n),
 * K_MAT a matrix parameter (or, in a derivation, a gradient of one) r×c. */
struct dval {
    enum ck kind;
    struct tg_tensor *t;
};

struct deval {
    struct tg_tape *tape;      /* ops are recorded here (a no-grad tape for derivations) */
    const struct cl_file *f;   /* for FILE:LINE:COL messages */
    int H, I;
    int adj;                   /* 1: a derivation (^T, H and I as numbers, matrix algebra) */
    /* The value of a name; 0 found, 1 unknown, −1 error (message set). */
    int (*resolve)(void *ctx, const struct cl_expr *e, struct dval *out);
    void *ctx;
};

/* Evaluate e; 0, or −1 with tg_last_error() = "FILE:LINE:COL: message". */
int dv_eval(struct deval *ev, const struct cl_expr *e, struct dval *out);
/* a + b on values of the same kind and shape (scalars broadcast), for `+=`. */
int dv_add(struct deval *ev, const struct cl_expr *at, struct dval a, struct dval b, struct dval *out);

#endif
