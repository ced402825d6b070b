/* fused.c — TG_OP_FUSED: a chain of elementwise ops that autograd/fuse.c compiled from a fusion
 * region, run as one pass over the rows.
 *
 * Forward: for each chunk of a row (≤ TG_FUSE_CHUNK elements), every instruction runs as one
 * vector loop; inputs are read in place (a column slice is an offset into its parent's row, a
 * broadcast row is row 0), results go to per-thread scratch or, for the tensors the region kept,
 * straight into their rows. Only the kept tensors are ever written to memory.
 *
 * Backward: per chunk, recompute the results that were not kept (cheap: they are elementwise
 * functions of data already in cache), seed the kept outputs' chunk gradients from their
 * buffers, and sweep the instructions in reverse, each adding its local derivative:
 *   c = a + b:  da += dc,  db += dc          c = a − b:  da += dc,  db −= dc
 *   c = a ⊙ b:  da += dc ⊙ b,  db += dc ⊙ a   y = α·a + β:  da += α·dy
 *   y = tanh a: da += dy ⊙ (1 − y²)           y = σ(a):  da += dy ⊙ y ⊙ (1 − y)
 *   y = relu a: da += dy ⊙ [a > 0]            (the formulas of ops/add.c … relu.c)
 * then add each input's chunk gradient into its buffer: for a column slice that is its block of
 * the parent's gradient, for a broadcast row its row (the column sum over rows, one thread).
 * The result equals running the ops one by one up to the order of floating-point sums: a tensor
 * used twice in the region gets its contributions summed in scratch before they reach memory. */
#include "fastmath.h"
#include "op_util.h"

#define FT float
#define S f32
#define FUSED_TANH(x) tg_fast_tanhf(x)
#define FUSED_SIGMOID(x) tg_fast_sigmoidf(x)
#include "fused_kern.h"
#undef FT
#undef S
#undef FUSED_TANH
#undef FUSED_SIGMOID

#define FT double
#define S f64
#define FUSED_TANH(x) tanh(x)
#define FUSED_SIGMOID(x) tg_sigmoid_f64(x)
#include "fused_kern.h"
#undef FT
#undef S
#undef FUSED_TANH
#undef FUSED_SIGMOID

/* Rows [r0, r1) on one thread with its scratch. */
static void run_rows(const struct tg_fuse_prog *p, int bwd, int r0, int r1, int thread)
{
    const struct tg_tape *t = p->tape;
    void *scr = (char *)t->fuse_scratch + (size_t)thread * t->fuse_scratch_per_thread;
    if (p->out[0]->dtype == TG_F64) {
        if (bwd) fused_bwd_rows_f64(p, r0, r1, scr);
        else fused_fwd_rows_f64(p, r0, r1, scr);
    } else {
        if (bwd) fused_bwd_rows_f32(p, r0, r1, scr);
        else fused_fwd_rows_f32(p, r0, r1, scr);
    }
}

/* Split the rows over threads when the work (elements × instructions) is worth it. */
static void run(const struct tg_fuse_prog *p, int bwd)
{
    size_t work = (size_t)p->rows * p->cols * (size_t)p->n_ins;
    int nt = p->tape->fuse_scratch_threads;
    if (nt > TG_MAX_THREADS()) nt = TG_MAX_THREADS();
    if (nt > p->rows) nt = p->rows;
    if (nt < 2 || !TG_GO_PARALLEL(work) || (bwd && p->serial)) {
        run_rows(p, bwd, 0, p->rows, 0);
        return;
    }
#if TG_HAVE_OPENMP
    TG_PRAGMA(omp parallel num_threads(nt))
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        run_rows(p, bwd, (int)((long)p->rows * id / n), (int)((long)p->rows * (id + 1) / n), id);
    }
#endif
}

void tg_fused_forward(struct tg_node *nd) { run(nd->args.fused.prog, 0); }

void tg_fused_backward(struct tg_node *nd) { run(nd->args.fused.prog, 1); }

/* True if any output of the fused node received a gradient (backward.c skips it otherwise). */
int tg_fused_reached(const struct tg_node *nd)
{
    const struct tg_fuse_prog *p = nd->args.fused.prog;
    for (int o = 0; o < p->n_out; o++)
        if (p->out[o]->grad) return 1;
    return 0;
}
