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

/* ----------------------------------------------------------------- fusion */

/* Limits of one fused node; a region that outgrows them is computed and a new one begun. */
enum { TG_FUSE_MAX_INSTR = 64, TG_FUSE_MAX_IN = 32 };

/* One pending elementwise op of the open region (fuse.c). */
struct tg_fuse_pending {
    int op, nsrc;
    struct tg_tensor *src[2];
    union tg_op_args args;
    struct tg_tensor *out;
};

struct tg_fuse_region {
    int open;           /* between tg_tape_fuse_begin and _end */
    int depth;          /* nested begins: only the outermost end compiles */
    size_t first_node;  /* tape length at the outermost begin: later nodes are the region's */
    enum tg_dtype dtype; /* of every instruction (a region never mixes dtypes) */
    uint32_t gen;       /* bumped at every end and reset: older pending tensors are dead */
    int rows, cols;     /* shape every instruction shares (0 while there is none) */
    int n;
    int n_ext;          /* inputs from outside the region so far (counted with repeats) */
    struct tg_fuse_pending p[TG_FUSE_MAX_INSTR];
};

/* The compiled form of a region: registers 0 … n_in−1 are inputs read in place, register
 * n_in + k is instruction k's result (stored in an output tensor, or in per-thread scratch). */
struct tg_fuse_input {
    struct tg_tensor *x; /* a materialized tensor */
    int off, bcast;      /* first column read; 1 if x is a 1×n row repeated over every row */
};
struct tg_fuse_instr {
    int op;              /* TG_OP_ADD … TG_OP_RELU */
    int a, b;            /* source registers (b = −1 for one-input ops) */
    double alpha, beta;  /* affine: alpha·x + beta */
};
struct tg_fuse_prog {
    int rows, cols, n_in, n_ins, n_out, n_reg;
    struct tg_fuse_input *in;
    struct tg_fuse_instr *ins;
    struct tg_tensor **out;   /* out[j] holds register out_reg[j] */
    int *out_reg;
    int *reg_out;             /* per register: index into out, or −1 */
    unsigned char *reg_grad;  /* per register: a gradient flows through it */
    unsigned char *reg_val;   /* per register: backward reads its value (or recomputes one from it) */
    void **reg_saved;         /* per register: where σ/tanh results kept for backward live, or NULL */
    int *reg_saved_ld;        /* their row stride (cols, or the width of the tensor they overwrite) */
    int serial;               /* gradients of different rows may alias (a broadcast input, or
                                 row views of one tensor): rows must not be split over threads */
    struct tg_tape *tape;     /* owner of the scratch the kernels use */
};

/* Elements of a row a fused kernel handles at a time: every register's slice of a chunk stays
 * in L1 (64 registers · 256 · 8 bytes · 2 for values and gradients = 256 KiB at most, typically
 * a tenth of that). */
#define TG_FUSE_CHUNK 256

/* Per instruction, how the backward sweep treats it (ops/fused.c plans it once per call). */
struct tg_fuse_plan {
    unsigned char skip;         /* no gradient reached its result */
    unsigned char to_a, to_b;   /* pass a gradient to source a / b */
    unsigned char acc_a, acc_b; /* add to it (1) or assign its first gradient (0) */
};

/* ops/fused.c: did any output of this fused node receive a gradient. */
int tg_fused_reached(const struct tg_node *nd);

/* Ensure the tape's kernel scratch holds `bytes` per thread for up to the current OpenMP
 * thread count; returns 0 (error set) if memory ran out. Heap memory, kept across resets. */
int tg_fuse_scratch_reserve(struct tg_tape *t, size_t bytes);

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
    int fusion_off;           /* tg_tape_set_fusion(t, TG_FUSION_OFF) */
    int fusion_lean;          /* TG_FUSION_LEAN: recompute σ/tanh in backward instead of saving */
    struct tg_fuse_region fuse;
    void *fuse_scratch;       /* per-thread scratch of fused kernels (heap, grows in warm-up) */
    size_t fuse_scratch_per_thread;
    int fuse_scratch_threads;
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

/* A zeroed tensor header in the arena (no data yet); NULL and an error if memory ran out. */
struct tg_tensor *tg_tensor_header(struct tg_tape *t, int rows, int cols, enum tg_dtype dtype);

/* Record op with an existing output header (a pending tensor made real; its data may be
 * allocated already): forward runs, the node is appended, the header loses TG_PENDING. */
struct tg_tensor *tg_op_emit_into(struct tg_tape *t, enum tg_op op, struct tg_tensor *const *src,
                                  int nsrc, const union tg_op_args *args, struct tg_tensor *out);

/* Shared validation: non-NULL inputs of one dtype. On failure sets an error (unless an input
 * is NULL because an earlier op already failed) and returns 0. Inputs still pending in a
 * fusion region are computed first, so the op may read their data. */
int tg_op_check_inputs(struct tg_tape *t, const char *opname, struct tg_tensor *const *src,
                       int nsrc);
/* The same for the elementwise ops a region may hold: pending inputs stay pending. */
int tg_op_check_lazy(struct tg_tape *t, const char *opname, struct tg_tensor *const *src,
                     int nsrc);

/* fuse.c: is op (with args) one a region can hold; record it as pending (returns the pending
 * output, or NULL with the tape's error set); compute every pending tensor of the region;
 * make a pending tensor real (its region is computed, or the column slice is copied);
 * 0 and an error naming `opname` if x is pending in a region that has ended. */
int tg_fuse_accepts(const struct tg_tape *t, int op, const union tg_op_args *args);
struct tg_tensor *tg_fuse_pend(struct tg_tape *t, int op, struct tg_tensor *const *src, int nsrc,
                               int rows, int cols, const union tg_op_args *args);
int tg_fuse_flush(struct tg_tape *t);
int tg_fuse_realize(struct tg_tape *t, struct tg_tensor *x);
int tg_fuse_check_alive(struct tg_tape *t, const char *opname, int i, const struct tg_tensor *x);
void tg_fuse_reset(struct tg_tape *t);

/* Append a node to the tape's list (grows it during warm-up). 0 and an error if out of memory. */
int tg_tape_append(struct tg_tape *t, struct tg_node *n);
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
    int rows_cap, rows; /* capacity and rows assigned (each use's first row: args.matmul.stage_row) */
};
/* The stage rows of a staged matmul/addmm output x (NULL if x is not one): its gradient lives
 * there from the start, so the backward never copies dC (tg_grad_buffer). */
void *tg_stage_slot(const struct tg_tensor *x);

/* Row-major GEMM through CBLAS in either dtype: c = op(a)·op(b) + β·c (ops/matmul.c). */
void tg_gemm(enum tg_dtype dt, int ta, int tb, int m, int n, int k, const void *a, int lda,
             const void *b, int ldb, double beta, void *c, int ldc);

/* Gradient buffer of an arena tensor, allocated (zeroed) on first use during backward. */
void *tg_grad_buffer(struct tg_tape *t, struct tg_tensor *x);

/* Elementwise loops go parallel only past this many elements: below it, waking threads costs
 * more than the work (measured order of magnitude: a few µs per parallel region). */
#define TG_OMP_MIN 32768

#endif
