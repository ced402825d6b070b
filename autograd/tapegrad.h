/*
 * tapegrad.h — tensors, the tape, reverse-mode backward, gradient checking, errors.
 *
 * A worked example: f(W, x) = sum(tanh(x·Wᵀ)), its gradient with respect to W.
 *
 *   struct tg_tape *t = tg_tape_new(0);                       // one arena per tape
 *   struct tg_tensor *W = tg_param_new("W", 4, 3, TG_F64);    // lives outside the tape
 *   struct tg_tensor *x = tg_tensor_new(t, 2, 3, TG_F64);     // activation: in the arena
 *   ... fill W->data and x->data ...
 *   struct tg_tensor *y = tg_sum(t, tg_tanh(t, tg_matmul(t, x, W, 0, 1)));
 *   if (!y || tg_backward(t, y) != TG_OK) puts(tg_last_error());
 *   // W->grad now holds dy/dW (accumulated: call tg_tensor_zero_grad(W) between steps)
 *   tg_tape_reset(t);                                        // frees every activation at once
 *
 * Model of the engine
 * - A tensor is a 2-D row-major block of float32 or float64 (a vector is 1×n, a scalar 1×1);
 *   the dtype is chosen at run time and every op handles both.
 * - Every op called on a tape appends one node to it, so the tape is already in topological
 *   order; tg_backward walks it once, last node first, with a plain loop (no recursion).
 *   Op constructors are declared in ops/tapegrad_ops.h.
 * - Backward always accumulates (+=) into gradient buffers; a tensor used twice, or a weight
 *   used at every time step, thus receives the sum of its uses with no special code.
 * - Parameters (tg_param_new) live on the heap and own a gradient buffer that accumulates until
 *   zeroed. Activations live in the tape's arena and are freed together by tg_tape_reset; the
 *   arena keeps its blocks, so a loop that records the same graph each step allocates nothing
 *   on the heap after the first step.
 * - Errors a caller can cause (shapes, dtypes, labels out of range, …) never abort: the op
 *   returns NULL, the tape remembers the first error, and tg_last_error() gives a one-line
 *   message naming the op and the shapes. An op given a NULL input returns NULL quietly, so a
 *   whole expression can be checked once at the end.
 */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */

enum tg_status {
    TG_OK = 0,
    TG_ERR_SHAPE,     /* shapes do not fit the op */
    TG_ERR_DTYPE,     /* mixed or unsupported dtypes */
    TG_ERR_VALUE,     /* a value out of range: label, id, argument */
    TG_ERR_NOMEM,     /* the allocator failed */
    TG_ERR_IO,        /* a file could not be read or written */
    TG_ERR_FORMAT,    /* a file is corrupt, truncated or of the wrong kind */
    TG_ERR_STATE,     /* the call is not valid now (e.g. backward twice, no-grad tape) */
};

/* The message of the last error raised on this thread ("" if none). */
const char *tg_last_error(void);
/* Set the thread's last error (printf-style); returns `status` for `return tg_error(...)`. */
enum tg_status tg_error(enum tg_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void tg_error_clear(void);
const char *tg_status_name(enum tg_status s);

/* --------------------------------------------------------------- tensors */

enum tg_dtype { TG_F32 = 0, TG_F64 = 1 };

size_t tg_dtype_size(enum tg_dtype d);
const char *tg_dtype_name(enum tg_dtype d);

enum tg_tensor_flags {
    TG_REQUIRES_GRAD = 1 << 0, /* backward computes a gradient for it */
    TG_PARAM = 1 << 1,         /* a parameter: heap-owned, named, grad accumulates */
    TG_HEAP = 1 << 2,          /* owned by the heap (tg_tensor_free), not by a tape */
    TG_INPUT = 1 << 3,         /* a leaf created as data input (for DOT roles) */
    TG_VIEW = 1 << 4,          /* rows of its node's input: shares its data and gradient */
    /* bits 16 and up are the engine's own */
};

struct tg_node;

struct tg_tensor {
    int rows, cols;
    enum tg_dtype dtype;
    unsigned flags;
    void *data;              /* rows*cols elements, row-major, contiguous; 64-byte aligned
                                unless a row view (TG_VIEW) into another tensor */
    void *grad;              /* same layout; NULL until a gradient flows (arena tensors) */
    struct tg_node *node;    /* node that produced it on its tape; NULL for leaves */
    const char *name;        /* optional; parameters always have one */
    uint64_t priv_[6];       /* the engine's own (fusion regions, deferred gradients) */
};

static inline size_t tg_numel(const struct tg_tensor *x) { return (size_t)x->rows * (size_t)x->cols; }
static inline size_t tg_nbytes(const struct tg_tensor *x) { return tg_numel(x) * tg_dtype_size(x->dtype); }
static inline int tg_requires_grad(const struct tg_tensor *x) { return (x->flags & TG_REQUIRES_GRAD) != 0; }
/* Element access in double whatever the dtype (slow path: tests, tools, printing). Reading a
 * tensor still pending in a fusion region computes the region first; an index out of range
 * (or a failed computation) gives NaN and sets the last error, never aborts. */
double tg_get(const struct tg_tensor *x, int r, int c);
void tg_set(struct tg_tensor *x, int r, int c, double v);
double tg_grad_get(const struct tg_tensor *x, int r, int c); /* 0 if no grad buffer */

/* Heap tensors: parameters and long-lived state. A parameter owns a zeroed gradient buffer. */
struct tg_tensor *tg_param_new(const char *name, int rows, int cols, enum tg_dtype dtype);
/* A heap tensor without gradient (data, targets, carried state). Zero-filled. */
struct tg_tensor *tg_tensor_new_heap(int rows, int cols, enum tg_dtype dtype);
void tg_tensor_free(struct tg_tensor *x); /* heap tensors only; NULL is fine */
void tg_tensor_zero_grad(struct tg_tensor *x);
/* Give a heap tensor a gradient buffer (e.g. an input whose gradient a test wants). */
enum tg_status tg_tensor_set_requires_grad(struct tg_tensor *x);

/* Copy values between tensors of the same shape (dtypes may differ: converts). */
enum tg_status tg_tensor_copy(struct tg_tensor *dst, const struct tg_tensor *src);
void tg_tensor_fill(struct tg_tensor *x, double v);
void tg_tensor_set_name(struct tg_tensor *x, const char *name); /* not copied: keep it alive */

/* ------------------------------------------------------------------ tape */

/* What an op keeps on its node for backward (each op its own layout: ops/op_util.h). */
union tg_node_args {
    double raw[4];
    void *ptr[4];
};

enum tg_reduction { TG_REDUCE_SUM = 0, TG_REDUCE_MEAN = 1 };

/* One recorded op. op identifies it (tg_node_op in tapegrad_ops.h gives its enum tg_op; the
 * engine reads only its flags and hooks); src and out are its inputs and output. */
struct tg_op_info;
struct tg_node {
    const struct tg_op_info *op;
    int nsrc;
    struct tg_tensor **src;     /* nsrc inputs, in the arena */
    struct tg_tensor *out;
    int32_t step, layer;        /* tags for DOT clusters: set by the unrolling code, -1 if none */
    uint32_t index;             /* position on the tape */
    const char *origin;         /* who recorded it (tg_tape_set_origin): a cell, FILE:LINE; or NULL */
    int32_t stage_row;          /* the engine's own: first row of a staged use (backward.c) */
    union tg_node_args args;    /* the op's own */
};

struct tg_tape;

/* A new tape. arena_hint: bytes to reserve up front (0 for a default); it grows as needed. */
struct tg_tape *tg_tape_new(size_t arena_hint);
void tg_tape_free(struct tg_tape *t);
/* Drop every node and activation; keeps the arena's memory for the next step. */
void tg_tape_reset(struct tg_tape *t);

/* No-grad mode: ops compute but record nothing (sampling, inference, finite differences).
 * Returns the previous setting. */
int tg_tape_set_no_grad(struct tg_tape *t, int no_grad);
int tg_tape_no_grad(const struct tg_tape *t);

/* Tag nodes recorded from now on with a time step and a layer (-1: none). Cells need not
 * know: the sequence unroller sets the tag before calling the cell. */
void tg_tape_set_tag(struct tg_tape *t, int step, int layer);

/* Fusion of elementwise ops (autograd/fuse.c, ops/fused.c).
 * Between tg_tape_fuse_begin and tg_tape_fuse_end, add, sub, mul, affine, tanh, sigmoid, relu
 * and column slices return tensors that are recorded but not yet computed (TG_PENDING, data
 * NULL). tg_tape_fuse_end(t, keep, n) compiles the pending ops into one node that evaluates
 * them in a single pass over the rows and stores only the tensors in keep; its backward
 * recomputes the rest from its inputs in cache. A column slice inside a region costs nothing:
 * the fused node reads the parent's columns in place and writes their gradient in place.
 * Any other op given a pending tensor computes the region so far first, so a cell written
 * with ordinary ops needs no change; only intermediates that were not kept become unusable
 * after tg_tape_fuse_end (an op given one fails with a message saying so). Gradients are
 * those of the same ops run one by one, up to the order of floating-point sums.
 * A product computed inside the region whose columns only the region's elementwise ops read,
 * none of them after a σ/tanh that backward needs (an LSTM's or GRU's gate pre-activations),
 * may have its storage reused for that σ/tanh's results unless it is kept; an op given it
 * afterwards fails (TG_REUSED), and its data then hold the activations.
 * The sequence model wraps each cell step in a region. Fusion is on by default; with it off,
 * begin/end do nothing (each op its own node, as the DOT export shows by default).
 * TG_FUSION_ON also keeps the results of σ and tanh that backward reads (their derivative is
 * a function of the result) where that costs no memory — over the gate pre-activations they
 * came from, dead by then — and recomputes in backward only those with no such place (an
 * LSTM's tanh(c')); TG_FUSION_LEAN keeps only the tensors passed to tg_tape_fuse_end and
 * recomputes the rest in backward: a little more time. tg_tape_set_fusion returns the previous
 * mode. */
enum tg_fusion { TG_FUSION_OFF = 0, TG_FUSION_ON = 1, TG_FUSION_LEAN = 2 };
int tg_tape_set_fusion(struct tg_tape *t, int mode);
void tg_tape_fuse_begin(struct tg_tape *t);
enum tg_status tg_tape_fuse_end(struct tg_tape *t, struct tg_tensor *const *keep, int n);

/* The first error raised by an op on this tape since the last reset (TG_OK if none). */
enum tg_status tg_tape_status(const struct tg_tape *t);
const char *tg_tape_error(const struct tg_tape *t);

size_t tg_tape_num_nodes(const struct tg_tape *t);
struct tg_node *tg_tape_node(const struct tg_tape *t, size_t i);
/* Bytes handed out by the arena since the last reset / reserved in total. */
size_t tg_tape_arena_used(const struct tg_tape *t);
size_t tg_tape_arena_capacity(const struct tg_tape *t);
/* Heap allocations the tape has made since it was created (for the no-alloc-after-warm-up test). */
size_t tg_tape_heap_allocs(const struct tg_tape *t);

/* A fresh activation leaf in the arena, zero-filled, no gradient. */
struct tg_tensor *tg_tensor_new(struct tg_tape *t, int rows, int cols, enum tg_dtype dtype);
/* A leaf copy of x with no history (truncated BPTT): same values, no gradient flows back. */
struct tg_tensor *tg_detach(struct tg_tape *t, const struct tg_tensor *x);

/* Raw arena memory (64-byte aligned), freed at reset. NULL and an error on failure. */
void *tg_tape_alloc(struct tg_tape *t, size_t bytes);

/* ------------------------------------------------------------- observing
 * (autograd/observe.c) What tools that look at gradient flow need from the engine, without
 * seeing its internals. */

/* Tag nodes recorded from now on with where they come from: a built-in cell's name, a cell
 * file's "FILE:LINE", … (NULL: none). Copied by pointer like step/layer: keep it alive until
 * the tape is reset. Anomaly reports quote it. */
void tg_tape_set_origin(struct tg_tape *t, const char *origin);
/* Rows that make one time step (B), so a report on a node spanning all T·B rows (a hoisted
 * input projection, tagged step −1) can name the step and sequence of a row (0: unknown). */
void tg_tape_set_step_rows(struct tg_tape *t, int rows);
int tg_tape_step_rows(const struct tg_tape *t);

/* The product form of a node: out = [C +] A·Wᵀ with W a parameter — the weight uses whose
 * gradient dW += dOutᵀ·A backward may stage. Returns W, with *a = A and *addend = C (NULL if
 * none; a 1×n C is a bias row added to every row); NULL if the node is not of that form. */
struct tg_tensor *tg_node_weight(const struct tg_node *n, struct tg_tensor **a,
                                 struct tg_tensor **addend);

/* Called by tg_backward for every node a gradient reached, just before its backward runs
 * (after = 0) and just after (after = 1); fn NULL removes it. Costs one test per node when
 * unset. The hook must not record on t. */
typedef void (*tg_backward_hook_fn)(void *ctx, const struct tg_node *n, int after);
void tg_tape_set_backward_hook(struct tg_tape *t, tg_backward_hook_fn fn, void *ctx);

/* Anomaly mode: every op checks its result for NaN/±inf as it runs, and tg_backward checks
 * every gradient an op adds; the first non-finite value stops the step (the op returns NULL,
 * tg_backward an error, TG_ERR_VALUE) with one line naming the op, its origin, the time step
 * (1-based), layer, sequence (row) and unit (column), and the input values at that place.
 * Fusion is turned off while it is on, so the op named is the one that made the value; the
 * previous fusion mode comes back when it is turned off. Off (the default) it costs nothing
 * beyond one test per op. Returns the previous setting. (Whatever the mode, tg_backward
 * refuses a non-finite loss.) */
int tg_tape_set_anomaly(struct tg_tape *t, int on);
int tg_tape_anomaly(const struct tg_tape *t);
/* Let tg_backward walk from a NaN or ±inf loss instead of refusing it: for tests of what ops
 * do at special values, whose loss Σ y is non-finite by design. Returns the previous setting. */
int tg_tape_set_nonfinite_loss_ok(struct tg_tape *t, int ok);

/* --------------------------------------------------------------- backward */

/* Seed d loss/d loss = 1 and walk the tape backwards, accumulating into every gradient buffer.
 * loss must be 1×1 and recorded on t. Parameter gradients accumulate across calls. */
enum tg_status tg_backward(struct tg_tape *t, struct tg_tensor *loss);

/* ---------------------------------------------------------- gradient check */

/* Builds the graph on t from tensors it knows through ctx and returns a 1×1 loss (or NULL). */
typedef struct tg_tensor *(*tg_loss_fn)(struct tg_tape *t, void *ctx);

struct tg_gradcheck_opts {
    double step;        /* finite-difference step h (scaled by max(1,|x|)); 0: 1e-3 */
    double tol;         /* pass if every relative error ≤ tol; 0: 1e-7 */
    double rel_floor;   /* rel = |a−n| / max(|a|, |n|, rel_floor); 0: 1e-3 */
    int skip_kinks;     /* skip elements where the one-sided differences disagree (relu at 0) */
    int max_elems;      /* check at most this many elements per tensor (0: all) */
};

struct tg_gradcheck_report {
    double max_abs, max_rel;      /* worst errors over every checked element */
    int worst_tensor, worst_row, worst_col;
    double worst_analytic, worst_numeric;
    long checked, skipped;
    int passed;
};

/* Compare tg_backward's gradient with central differences (4-point stencil, O(h⁴)) for every
 * element of every tensor in xs (float64 heap tensors with gradient buffers). */
enum tg_status tg_gradcheck(tg_loss_fn fn, void *ctx, struct tg_tensor **xs, int nx,
                            const struct tg_gradcheck_opts *opts,
                            struct tg_gradcheck_report *report);

/* -------------------------------------------------------------------- rng */

/* xoshiro256** seeded through splitmix64: fast, reproducible on every platform, and its whole
 * state is four words, so a checkpoint can save and restore it exactly. */
struct tg_rng { uint64_t s[4]; };
void tg_rng_seed(struct tg_rng *r, uint64_t seed);
uint64_t tg_rng_next(struct tg_rng *r);
double tg_rng_uniform(struct tg_rng *r);               /* [0, 1), 53 random bits */
double tg_rng_normal(struct tg_rng *r);                /* N(0, 1), Box–Muller */
uint32_t tg_rng_below(struct tg_rng *r, uint32_t n);   /* uniform integer in [0, n), unbiased; 0 if n = 0 */
/* Fill with U(lo, hi) / N(mean, std²). */
void tg_tensor_uniform(struct tg_tensor *x, struct tg_rng *r, double lo, double hi);
void tg_tensor_normal(struct tg_tensor *x, struct tg_rng *r, double mean, double std);

#ifdef __cplusplus
}
#endif
#endif
