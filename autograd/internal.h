/* internal.h — what the engine's files and the ops share but users do not see. */
#ifndef TG_INTERNAL_H
#define TG_INTERNAL_H

#include "tapegrad.h"
#include "tapegrad_blas.h"
#include "tg_config.h"
#include "parallel.h"

/* Internal invariants (not user errors): print file:line and abort. */
#define TG_ASSERT(cond)                                                            \
    do {                                                                           \
        if (!(cond)) tg_assert_fail(__FILE__, __LINE__, #cond);                   \
    } while (0)
void tg_assert_fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* ------------------------------------------------------- private tensor state */

/* Flags only the engine sets and reads (the public ones are in tapegrad.h). */
enum {
    TG_PENDING = 1 << 16, /* inside a fusion region, not computed yet: data is NULL */
    TG_MARK = 1 << 17,    /* scratch mark (backward.c, during one call) */
    TG_REUSED = 1 << 18,  /* made inside a fusion region, not kept: its storage was reused */
    TG_ALIASED = 1 << 19, /* has a view no tape recorded (no-grad): storage never reused */
};

/* What a tensor carries for the engine, in its opaque priv_ words. stage: during tg_backward
 * (backward.c). For TG_PENDING tensors (fuse.c): the tape and region generation they belong to,
 * their instruction in it, or −1 for a column slice of fuse_base starting at column fuse_off. */
struct __attribute__((may_alias)) tg_tensor_priv {
    struct tg_grad_stage *stage;
    struct tg_tensor *fuse_base;
    struct tg_tape *fuse_tape;
    const struct tg_op_info *fuse_view_op; /* the column view's op, to record it if realized */
    int32_t fuse_idx, fuse_off;
    uint32_t fuse_gen;
};
_Static_assert(sizeof(struct tg_tensor_priv) <= sizeof(((struct tg_tensor *)0)->priv_),
               "tg_tensor.priv_ must hold struct tg_tensor_priv");
#define TG_PRIV(x) ((struct tg_tensor_priv *)(void *)(x)->priv_)

/* ------------------------------------------------------------------ ops */

/* What the engine knows of an op. ops/op_table.c fills one per op; a node points at its op's,
 * and the engine reads only these flags and hooks — it names no op. */
enum tg_op_flags {
    TG_OPF_EW = 1 << 0,         /* elementwise (ops/elementwise.h): a fusion region may hold it */
    TG_OPF_COL_VIEW = 1 << 1,   /* may be a column slice a region reads in place (col_view) */
    TG_OPF_OUT_UNREAD = 1 << 2, /* backward never reads the output's values (products), so a
                                   region may overwrite a dead output (fuse.c) */
    TG_OPF_COMPOUND = 1 << 3,   /* a compiled region: no single output carries the gradient */
    /* elementwise: which values the local derivative reads (da: into input a; db: into b);
     * SAVE_Y: y is a transcendental worth keeping for backward rather than recomputing */
    TG_EW_DA_A = 1 << 8, TG_EW_DA_B = 1 << 9, TG_EW_DA_Y = 1 << 10,
    TG_EW_DB_A = 1 << 11, TG_EW_DB_B = 1 << 12, TG_EW_DB_Y = 1 << 13,
    TG_EW_SAVE_Y = 1 << 14,
};

struct tg_op_info {
    int id;                               /* enum tg_op (ops/tapegrad_ops.h) */
    const char *name;                     /* "matmul", … */
    int arity;                            /* number of inputs; -1: any number ≥ 1 */
    unsigned flags;                       /* enum tg_op_flags */
    void (*forward)(struct tg_node *n);   /* fills n->out->data from n->src */
    void (*backward)(struct tg_node *n);  /* adds d loss/d src into every src->grad != NULL */
    /* Optional hooks (NULL: the default said beside each). */
    int (*reached)(const struct tg_node *n);      /* a gradient reached it (out->grad != NULL) */
    void (*before_backward)(struct tg_node *n);   /* before its inputs get gradient buffers */
    /* the parameter W of out = [C +] A·Wᵀ whose uses may stack their gradient (backward.c),
     * and in *addend the index of C (−1 if none); NULL if the node is not of that form */
    struct tg_tensor *(*stage_weight)(const struct tg_node *n, int *addend);
    int (*col_view)(const union tg_node_args *a); /* COL_VIEW ops: is this one a column slice */
    void (*label)(const struct tg_node *n, char *buf, size_t len); /* DOT: more than the name */
    const struct tg_op_info *fused;       /* EW ops: the op that runs a compiled region */
    const char *print[3];                 /* EW ops: y = …, da += …, db += … (textbook form) */
};

/* Did a gradient reach node n (its op's hook, else: its output has a gradient buffer). */
static inline int tg_node_reached(const struct tg_node *n)
{
    return n->op->reached ? n->op->reached(n) : n->out->grad != NULL;
}

/* Column views (slice) keep their bounds where the engine can read and write them. */
struct tg_view_args { int axis, start, end; };

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
    const struct tg_op_info *op;
    int nsrc;
    struct tg_tensor *src[2];
    union tg_node_args args;
    struct tg_tensor *out;
    const char *origin;       /* the tape's origin tag when recorded (anomaly reports) */
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
    const struct tg_op_info *fused_op; /* runs the compiled region (its ops' `fused`) */
    struct tg_fuse_pending p[TG_FUSE_MAX_INSTR];
};

/* The compiled form of a region: registers 0 … n_in−1 are inputs read in place, register
 * n_in + k is instruction k's result (stored in an output tensor, or in per-thread scratch). */
enum tg_bcast { TG_BC_NONE = 0, TG_BC_ROW = 1, TG_BC_COL = 2, TG_BC_SCALAR = 3 };
struct tg_fuse_input {
    struct tg_tensor *x; /* a materialized tensor */
    int off;             /* first column read */
    int bcast;           /* enum tg_bcast: a 1×n row, a B×1 column or a 1×1 repeated */
};
struct tg_fuse_instr {
    int op;              /* the elementwise op's id (its kernels switch on it) */
    unsigned flags;      /* its TG_EW_* facts */
    int a, b;            /* source registers (b = −1 for one-input ops) */
    double alpha, beta;  /* the op's two constants (affine: alpha·x + beta) */
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


/* The compiled-program cache of one tape (fuse_compile.c): templates of regions already
 * compiled since the last reset, keyed by the region's signature. Entries point into the
 * arena and die with it at tg_tape_reset; hits and misses count for the life of the tape. */
struct tg_fuse_tmpl;
struct tg_fuse_cache_entry {
    size_t len;                     /* key words */
    const uint64_t *key;
    const struct tg_fuse_tmpl *tm;
};
enum { TG_FUSE_CACHE = 8 };
struct tg_fuse_cache {
    int n, next, last;              /* entries, the next to replace, the last hit */
    struct tg_fuse_cache_entry e[TG_FUSE_CACHE];
    size_t hits, misses;
};

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
    struct tg_fuse_cache fuse_cache;
    int fuse_cache_off;       /* analyse every region afresh (tests compare it with the cache) */
    void *fuse_scratch;       /* per-thread scratch of fused kernels (heap, grows in warm-up) */
    size_t fuse_scratch_per_thread;
    int fuse_scratch_threads;
    /* observe.c (issue 13): origin tag, rows per step, backward hook, anomaly mode */
    const char *origin;
    int step_rows;
    tg_backward_hook_fn bw_hook;
    void *bw_ctx;
    int anomaly;
    int nonfinite_loss_ok;    /* tg_tape_set_nonfinite_loss_ok */
};

/* observe.c: anomaly checks. Forward: node n just computed its output; backward: n's backward
 * just ran (checks its inputs' gradients); weights: the staged weights' deferred GEMMs ran.
 * Each returns 1 if all is finite, else 0 with the tape's error and the thread's last error set
 * to the one-line report. */
int tg_anomaly_forward(struct tg_tape *t, const struct tg_node *n);
int tg_anomaly_backward(struct tg_tape *t, const struct tg_node *n);
int tg_anomaly_weights(struct tg_tape *t, struct tg_tensor *const *w, int n);
/* Anomaly mode keeps fusion on. fuse.c calls these two: may a region's kept result overwrite
 * an input (not in anomaly mode: the inputs must survive so a region whose results hold a
 * non-finite value can be replayed op by op), and a copy of a region's instructions for that
 * replay, which rides in the fused node's args.ptr[1] (NULL when anomaly mode is off). */
int tg_anomaly_may_overwrite(const struct tg_tape *t);
void *tg_anomaly_keep_region(struct tg_tape *t, const struct tg_fuse_pending *p, int n);

/* Record an op: checks nothing, allocates the output, copies args and the source list,
 * computes the forward and, unless no-grad, appends the node.
 * Returns the output, or NULL (with the tape's error set) if memory ran out. */
struct tg_tensor *tg_op_emit(struct tg_tape *t, const struct tg_op_info *op,
                             struct tg_tensor *const *src, int nsrc, int rows, int cols,
                             const union tg_node_args *args);

/* Record an op whose output is a view: `data` points into src[0]'s data (contiguous rows),
 * nothing is computed, and its gradient will point into src[0]'s gradient (tg_grad_buffer). */
struct tg_tensor *tg_op_emit_view(struct tg_tape *t, const struct tg_op_info *op,
                                  struct tg_tensor *src, int rows, int cols,
                                  const union tg_node_args *args, void *data);

/* A zeroed tensor header in the arena (no data yet); NULL and an error if memory ran out. */
struct tg_tensor *tg_tensor_header(struct tg_tape *t, int rows, int cols, enum tg_dtype dtype);

/* Record op with an existing output header (a pending tensor made real; its data may be
 * allocated already): forward runs, the node is appended, the header loses TG_PENDING. */
struct tg_tensor *tg_op_emit_into(struct tg_tape *t, const struct tg_op_info *op,
                                  struct tg_tensor *const *src, int nsrc,
                                  const union tg_node_args *args, struct tg_tensor *out);

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
int tg_fuse_accepts(const struct tg_tape *t, const struct tg_op_info *op,
                    const union tg_node_args *args);
struct tg_tensor *tg_fuse_pend(struct tg_tape *t, const struct tg_op_info *op,
                               struct tg_tensor *const *src, int nsrc, int rows, int cols,
                               const union tg_node_args *args);
int tg_fuse_flush(struct tg_tape *t);
/* fuse_compile.c: compile the open region into one node keeping outs[0 … no−1] (keep, nkeep:
 * what the step keeps, nkeep < 0 if unknown); 0 if memory ran out (error set; the region's
 * pending tensors are then dead). */
int tg_fuse_compile(struct tg_tape *t, struct tg_tensor *const *outs, int no,
                    struct tg_tensor *const *keep, int nkeep);
/* Record a node whatever the no-grad mode is (pending ops were recorded with gradients). */
struct tg_tensor *tg_fuse_emit_recorded(struct tg_tape *t, const struct tg_op_info *op,
                                        struct tg_tensor *const *src, int nsrc,
                                        const union tg_node_args *args, struct tg_tensor *out);
/* Is x an instruction's result in the open region (not a pending column slice)? */
static inline int tg_fuse_is_instr(const struct tg_tensor *x)
{
    return (x->flags & TG_PENDING) && TG_PRIV(x)->fuse_idx >= 0;
}
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
    int rows_cap, rows; /* capacity and rows assigned (each use's first row: node stage_row) */
};
/* The stage rows of a staged matmul/addmm output x (NULL if x is not one): its gradient lives
 * there from the start, so the backward never copies dC (tg_grad_buffer). */
void *tg_stage_slot(const struct tg_tensor *x);

/* If nd is a staged use (its op's stage_weight hook names a weight that has a stage), where its
 * dC rows and its A rows go for the deferred dW (the product's backward copies them there);
 * else 0. */
int tg_stage_rows(const struct tg_node *nd, void **dc, void **a);

/* Gradient buffer of an arena tensor, allocated (zeroed) on first use during backward. */
void *tg_grad_buffer(struct tg_tape *t, struct tg_tensor *x);

#endif
