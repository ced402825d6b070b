/*
 * tapegrad_flow.h — see the gradient flow of one batch through an unrolled model: per step and
 * layer, ‖∂L/∂h_t‖ split into what arrives from the output at t and from step t+1, the decay of
 * ‖∂h_T/∂h_t‖, each step's share of every weight gradient, and gate saturation.
 *
 *   struct tg_flow *f;
 *   tg_flow_new(model, T, B, &f);
 *   tg_model_forward(model, tape, &batch, 0, &res);
 *   tg_flow_begin(f, tape, &res);          // arms a backward hook (the split of ∂L/∂h_t)
 *   tg_backward(tape, res.loss);
 *   tg_flow_end(f, tape, &res);            // the ledger: norms, split, weight contributions
 *   tg_flow_saturation(f, tape);           // needs the tape recorded with fusion off
 *   printf("%g\n", tg_flow_at(f->grad_h, f, layer, t));
 *
 * Definitions (h_t^l is layer l's output after step t, a B×H matrix; norms are Frobenius over
 * the whole batch):
 *   grad_h[l,t]  ‖∂L/∂h_t^l‖
 *   from_out     ‖the part of it from step t's consumers above: the output layer (top layer)
 *                or layer l+1 at step t‖ — read from h_t^l's gradient at the moment the reverse
 *                walk leaves the layers above (they are recorded after layer l, so all their
 *                backward has run and none of layer l's)
 *   from_next    ‖the part from step t+1 of layer l‖ = ‖total − from_out‖ (vectors)
 *   jac[l,t]     ‖∂h_T^l/∂h_t^l‖ as the RMS singular value: sqrt(mean_b ‖J_b‖_F² / H), J_b the
 *                H×H Jacobian of sequence b (other state, an LSTM's c_t, held fixed), so
 *                jac[l,T] = 1. Exact for H ≤ exact_max: H backward passes with a one-hot seed
 *                on column k of h_T (row k of every J_b at once: sequences are independent).
 *                Above it, Hutchinson's estimator with `probes` Gaussian seeds v ~ N(0, I):
 *                E‖vᵀJ‖² = ‖J‖_F² (relative standard error about sqrt(2/(probes·H))).
 *   contrib[p,t] ‖the part of parameter p's gradient made at step t‖_F. Three routes:
 *                (1) a product use out = [C +] A·Wᵀ (tg_node_weight): dW_t = dOut_tᵀ·A_t, its
 *                    norm from two B×B Gram matrices, ‖dOutᵀA‖² = Σ_ij (dOut dOutᵀ)_ij (A Aᵀ)_ij,
 *                    O(B²(N+K)) instead of O(B·N·K); a use over all T·B rows (the hoisted input
 *                    projection, the output layer) is split in its B-row blocks, block t = step t;
 *                    Or, with f->sketch = k > 0, estimated: ‖(S₁dOutᵀ)(A S₂ᵀ)‖_F² with
 *                    S₁, S₂ independent CountSketches to k buckets (a random sign per
 *                    column, buckets rotated at random per chunk of k columns), drawn afresh
 *                    per step from sketch_seed: O(B·(N+K) + B·k²) per step and use. Unbiased
 *                    (E[SᵀS] = I); with M = dOutᵀA its variance is at most
 *                    ((2/k)(1 + 2/k) + 2/k)·‖M‖_F⁴ (equality only for rank-one M), so the
 *                    squared norm's relative standard deviation is ≤ 0.52 at k = 16 (≤ 0.36 at
 *                    k = 32), the norm's about half. Routes 2–4 and tg_flow_term stay exact;
 *                (2) a bias row C of such a use (or the sum b_ih + b_hh of two parameters):
 *                    the column sums of the step's rows of dOut;
 *                (3) any other node of step t that reads p itself (peepholes, weight slices
 *                    in a cell, …): the change of p's gradient across that node's backward;
 *                (4) an embedding gathering T·B rows of p (embed.weight): step t's term is
 *                    the scatter-add of its B rows of the output's gradient, its squared norm
 *                    Σ_v ‖Σ_{b: id_b = v} dX_b‖² (rows with equal ids added first).
 *                A parameter some node reads outside these has covered = 0 and NaN
 *                contributions. The contributions of a parameter sum to its gradient.
 *   sat[l,g,t]   share of gate g's activations at step t of layer l that are saturated:
 *                σ < 0.01 or > 0.99, |tanh| > 0.99. Gates are found as the σ/tanh nodes of a
 *                step in recording order, one gate per H columns, named by the cell's gate list
 *                (tg_flow_gate_names; "i,f,g,o,c" for lstm, where c is tanh(c')).
 */
#ifndef TAPEGRAD_FLOW_H
#define TAPEGRAD_FLOW_H

#include "tapegrad.h"
#include "tapegrad_models.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { TG_FLOW_MAX_GATES = 16 };

struct tg_flow {
    int T, B, H, L, n_state, n_params;
    const struct tg_model *model;
    /* per layer and step, at [l·T + t] */
    double *grad_h, *from_out, *from_next, *jac;
    /* per parameter and step, at [p·T + t] (model parameter order); NaN where not covered */
    double *contrib;
    int *covered;                 /* per parameter */
    int jac_exact;                /* the last tg_flow_jacobian was exact (else estimated) */
    /* saturation, at [(l·n_gates + g)·T + t]; n_gates 0 until tg_flow_saturation found some */
    int n_gates;
    char gate_label[TG_FLOW_MAX_GATES][24]; /* "σ(i)", "tanh(c)", … */
    double *sat;
    const char *gate_names;       /* comma-separated, NULL: the built-in cell's list */
    /* How tg_flow_end computes route 1 (product uses) of contrib: sketch = 0 (the default)
     * exactly, from B×B Gram matrices; sketch = k > 0 estimated with k buckets (below), from
     * sketch_seed (the same seed gives the same estimates). Everything else stays exact. Set
     * before tg_flow_begin, the backward hook makes most sketches while the rows are in
     * cache; set (or changed) later, tg_flow_end makes them all, with the same result. */
    int sketch;
    uint64_t sketch_seed;
    struct tg_flow_priv *priv;    /* per-batch bookkeeping (arena pointers, hook state) */
};

static inline double tg_flow_at(const double *a, const struct tg_flow *f, int l, int t)
{
    return a[(size_t)l * f->T + t];
}

/* For a model and batch shape. Allocates once (heap); every later call allocates in the tape's
 * arena only, so a training loop that keeps the ledger on allocates nothing per step. */
enum tg_status tg_flow_new(const struct tg_model *m, int T, int B, struct tg_flow **out);
void tg_flow_free(struct tg_flow *f);

/* Gate names of a cell (one per H columns of its σ/tanh results, in recording order): the
 * built-in cells' lists, or NULL for a cell it does not know (gates are then numbered). A
 * cell file can give its own through f->gate_names. */
const char *tg_flow_gate_names(const struct tg_cell *cell);

/* Between the forward and tg_backward: arms the hook that splits ∂L/∂h_t. */
enum tg_status tg_flow_begin(struct tg_flow *f, struct tg_tape *t, const struct tg_seq_result *res);
/* After tg_backward: removes the hook and fills grad_h, from_out, from_next, contrib. */
enum tg_status tg_flow_end(struct tg_flow *f, struct tg_tape *t, const struct tg_seq_result *res);
/* Saturation from the tape's σ and tanh nodes (record with fusion off: a fused node hides
 * them; then n_gates stays 0). */
enum tg_status tg_flow_saturation(struct tg_flow *f, struct tg_tape *t);
/* Step t's term of parameter p's gradient as a dense matrix (p's rows × cols, double), from
 * the tape tg_flow_end read (before it is reset): Σ over p's uses at step t. The terms of all
 * steps add up to p's gradient. TG_ERR_VALUE if p is not covered. */
enum tg_status tg_flow_term(const struct tg_flow *f, int p, int step, double *out);

/* ‖∂h_T/∂h_t‖ for every layer and step (see above): records the model on t again for every
 * seed (t is reset each time). exact_max: largest H computed exactly [0: 64]; probes: seeds of
 * the estimator [0: 32]; seed: its random numbers. */
enum tg_status tg_flow_jacobian(struct tg_flow *f, struct tg_model *m, struct tg_tape *t,
                                const struct tg_seq_batch *b, int exact_max, int probes,
                                uint64_t seed);

/* The first node of the tape whose output holds a NaN or ±inf, described in buf as
 * "the output of tanh [lstm] at step 7, layer 0, sequence 3, unit 12 (nan)" (steps 1-based).
 * Returns 1 if one was found, else 0 (buf empty). For a divergence message after the fact;
 * anomaly mode stops at the same place while recording, with the op's inputs. */
int tg_flow_first_nonfinite(const struct tg_tape *t, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
