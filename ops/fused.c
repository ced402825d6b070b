/* fused.c — TG_OP_FUSED: a chain of elementwise ops that autograd/fuse.c compiled from a fusion
 * region, run as one pass over the rows.
 *
 * Forward: for each chunk of a row (≤ TG_FUSE_CHUNK elements), every instruction runs as one
 * vector loop; inputs are read in place (a column slice is an offset into its parent's row, a
 * broadcast row is row 0), results go to per-thread scratch or, for the tensors the region kept
 * and the σ/tanh results backward reads (reg_saved: a buffer, or the dead pre-activation block
 * they came from, with its row stride), straight into memory. Nothing else is written.
 *
 * Broadcast inputs: a 1×n row is read at row 0; a B×1 column's or a 1×1 scalar's value is
 * spread over a scratch chunk.
 *
 * Backward: per chunk, recompute the results the sweep reads that are not in memory (cheap:
 * elementwise functions of data already in cache), and sweep the instructions in reverse,
 * each adding its local derivative into its sources' gradients — the `da`, `db` of each op's
 * one definition in elementwise.h, the same expressions the standalone kernels use.
 * A full-width input's gradient (for a column slice: its block of the parent's gradient) and a
 * kept output's gradient are accumulated in place; the kept output thus ends with its whole
 * gradient, uses inside the region included, as unfused. Other gradients live in scratch and
 * are assigned by their first contribution, never zeroed. A broadcast row's scratch is added
 * into its row at the end (the column sum over rows, on one thread); a column's is summed
 * over the chunk into its row's element, a scalar's into its one element. The result equals running
 * the ops one by one up to the order of floating-point sums. */
#include <stdio.h>

#include "elementwise.h"
#include "fastmath.h"
#include "op_util.h"

#define FT float
#define S f32
#include "fused_kern.h"
#undef FT
#undef S

#define FT double
#define S f64
#include "fused_kern.h"
#undef FT
#undef S

/* How the sweep treats each instruction, the same for every chunk: a gradient buffer is
 * "filled" from the start if it is bound to memory (a full-width input's gradient, a kept
 * output's gradient) and otherwise by its first contribution, which assigns instead of adding;
 * an instruction whose result never got a gradient is skipped. bcast_done[r]: broadcast input
 * r received a gradient (so its scratch is added into its row). */
static void plan_sweep(const struct tg_fuse_prog *p, struct tg_fuse_plan *pl,
                       unsigned char *bcast_done)
{
    unsigned char filled[TG_FUSE_MAX_IN + TG_FUSE_MAX_INSTR];
    const unsigned char *rg = p->reg_grad;
    for (int r = 0; r < p->n_reg; r++) filled[r] = 0;
    for (int r = 0; r < p->n_in; r++)
        filled[r] = rg[r] && p->in[r].bcast == TG_BC_NONE && p->in[r].x->grad;
    for (int o = 0; o < p->n_out; o++)
        if (p->out[o]->grad) filled[p->out_reg[o]] = 1;
    for (int k = p->n_ins; k-- > 0;) {
        const struct tg_fuse_instr *in = &p->ins[k];
        struct tg_fuse_plan *q = &pl[k];
        int d = p->n_in + k;
        *q = (struct tg_fuse_plan){0};
        q->skip = !rg[d] || !filled[d];
        if (q->skip) continue;
        if (rg[in->a]) {
            q->to_a = 1;
            q->acc_a = filled[in->a];
            filled[in->a] = 1;
        }
        if (in->b >= 0 && rg[in->b]) {
            q->to_b = 1;
            q->acc_b = filled[in->b];
            filled[in->b] = 1;
        }
    }
    for (int r = 0; r < p->n_in && r < TG_FUSE_MAX_IN; r++) bcast_done[r] = p->in[r].bcast && filled[r];
}

/* Rows [r0, r1) on one thread with its scratch. */
static void run_rows(const struct tg_fuse_prog *p, const struct tg_fuse_plan *pl,
                     const unsigned char *bd, int r0, int r1, int thread)
{
    const struct tg_tape *t = p->tape;
    void *scr = (char *)t->fuse_scratch + (size_t)thread * t->fuse_scratch_per_thread;
    if (p->out[0]->dtype == TG_F64) {
        if (pl) fused_bwd_rows_f64(p, pl, bd, r0, r1, scr);
        else fused_fwd_rows_f64(p, r0, r1, scr);
    } else {
        if (pl) fused_bwd_rows_f32(p, pl, bd, r0, r1, scr);
        else fused_fwd_rows_f32(p, r0, r1, scr);
    }
}

/* Split the rows over threads when the work (elements × instructions) is worth it. */
static void run(const struct tg_fuse_prog *p, int bwd)
{
    struct tg_fuse_plan plan[TG_FUSE_MAX_INSTR], *pl = NULL;
    unsigned char bd[TG_FUSE_MAX_IN];
    if (bwd) {
        plan_sweep(p, plan, bd);
        pl = plan;
    }
    size_t work = (size_t)p->rows * p->cols * (size_t)p->n_ins;
    int nt = p->tape->fuse_scratch_threads;
    if (nt > TG_MAX_THREADS()) nt = TG_MAX_THREADS();
    if (nt > p->rows) nt = p->rows;
    if (nt < 2 || !TG_GO_PARALLEL(work) || (bwd && p->serial)) {
        run_rows(p, pl, bd, 0, p->rows, 0);
        return;
    }
#if TG_HAVE_OPENMP
    TG_PRAGMA(omp parallel num_threads(nt))
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        run_rows(p, pl, bd, (int)((long)p->rows * id / n), (int)((long)p->rows * (id + 1) / n), id);
    }
#endif
}

/* The engine's compiled program rides in the node's first pointer (autograd/fuse.c). */
static const struct tg_fuse_prog *prog_of(const struct tg_node *nd) { return nd->args.ptr[0]; }

void tg_fused_forward(struct tg_node *nd) { run(prog_of(nd), 0); }

void tg_fused_backward(struct tg_node *nd) { run(prog_of(nd), 1); }

/* DOT: its instructions in order, and how many results it keeps. */
void tg_fused_label(const struct tg_node *nd, char *buf, size_t len)
{
    const struct tg_fuse_prog *p = prog_of(nd);
    size_t at = 0;
    buf[0] = 0;
    for (int k = 0; k < p->n_ins && at < len; k++)
        at += (size_t)snprintf(buf + at, len - at, "%s%s", k % 6 ? " " : "\\n",
                               tg_op_table[p->ins[k].op].name);
    if (at < len) snprintf(buf + at, len - at, "\\n%d kept", p->n_out);
}

/* True if any output of the fused node received a gradient (backward.c skips it otherwise). */
int tg_fused_reached(const struct tg_node *nd)
{
    const struct tg_fuse_prog *p = prog_of(nd);
    for (int o = 0; o < p->n_out; o++)
        if (p->out[o]->grad) return 1;
    return 0;
}
