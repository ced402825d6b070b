/* internal.h — what the engine's files and the ops share but users do not see. */
#ifndef TG_INTERNAL_H
#define TG_INTERNAL_H

#include "tapegrad.h"
#include "tapegrad_ops.h"
#include "tg_config.h"

/* ------------------------------------------------------------------ arena */

/* A bump allocator made of blocks. Reset rewinds to the first block and keeps them all, so a
 * step that asks for the same sizes as the last one is served without touching the heap. */
struct tg_arena_block {
    struct tg_arena_block *next;
    size_t size, used;
    unsigned char *base; /* 64-byte aligned */
};

struct tg_arena {
    struct tg_arena_block *head, *cur;
    size_t min_block;
    size_t used_total;   /* handed out since reset */
    size_t capacity;     /* sum of block sizes */
    size_t heap_allocs;  /* blocks ever malloc'd */
};

#define TG_ALIGN 64

void tg_arena_init(struct tg_arena *a, size_t first_block);
void *tg_arena_alloc(struct tg_arena *a, size_t bytes); /* NULL if the heap is exhausted */
void tg_arena_reset(struct tg_arena *a);
void tg_arena_free(struct tg_arena *a);

/* ------------------------------------------------------------------- tape */

struct tg_tape {
    struct tg_arena arena;
    struct tg_node **nodes;   /* grows by doubling during warm-up, kept across resets */
    size_t n_nodes, cap_nodes;
    size_t heap_allocs;       /* growths of `nodes` */
    int no_grad;
    int walked;               /* backward already ran since the last reset */
    int32_t tag_step, tag_layer;
    enum tg_status status;    /* first error since reset */
    char errmsg[256];
};

/* Record an op: checks nothing, allocates the output (zeroed only if `zero`), copies args and
 * the source list, computes the forward and, unless no-grad, appends the node.
 * Returns the output, or NULL (with the tape's error set) if memory ran out. */
struct tg_tensor *tg_op_emit(struct tg_tape *t, enum tg_op op, struct tg_tensor *const *src,
                             int nsrc, int rows, int cols, const union tg_op_args *args);

/* Record an op whose output is a view: `data` points into src[0]'s data (contiguous rows),
 * nothing is computed, and its gradient will point into src[0]'s gradient (tg_grad_buffer). */
struct tg_tensor *tg_op_emit_view(struct tg_tape *t, enum tg_op op, struct tg_tensor *src,
                                  int rows, int cols, const union tg_op_args *args, void *data);

/* Shared validation: non-NULL inputs of one dtype. On failure sets an error (unless an input
 * is NULL because an earlier op already failed) and returns 0. */
int tg_op_check_inputs(struct tg_tape *t, const char *opname, struct tg_tensor *const *src,
                       int nsrc);
/* Raise a user error on tape t (first one sticks on the tape; always the thread's last). */
void tg_op_fail(struct tg_tape *t, enum tg_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Deferred weight gradient (issue: T small GEMMs dW += dC_tᵀ·A_t, one per time step, each
 * with inner dimension B, run far below the GEMM rate). A weight used as the transposed right
 * operand of several matmuls gets a stage: each such matmul's backward copies its dC and A
 * rows into two stacked matrices, and after the walk one GEMM over all stacked rows adds
 *   dW += [dC_1; …; dC_T]ᵀ · [A_1; …; A_T]  =  Σ_t dC_tᵀ · A_t. */
struct tg_grad_stage {
    void *dc, *a;       /* uses·M × N and uses·M × K, stacked in the order backward meets them */
    int rows_cap, rows; /* capacity and rows filled */
};

/* Row-major GEMM through CBLAS in either dtype: c = op(a)·op(b) + β·c (ops/matmul.c). */
void tg_gemm(enum tg_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
             const void *b, int ldb, double beta, void *c, int ldc);

/* Gradient buffer of an arena tensor, allocated (zeroed) on first use during backward. */
void *tg_grad_buffer(struct tg_tape *t, struct tg_tensor *x);

/* Elementwise loops go parallel only past this many elements: below it, waking threads costs
 * more than the work (measured order of magnitude: a few µs per parallel region). */
#define TG_OMP_MIN 32768

#endif
