/*
 * tapegrad_dot.h — draw a recorded tape as a Graphviz DOT graph, and render it to SVG or PNG.
 *
 *   struct tg_dot_opts o = {0};             // all-zero options: plain forward graph
 *   o.loss = res.loss;  o.backward = 1;      // after tg_backward(t, res.loss)
 *   tg_dot_write(t, &o, stdout, NULL);     // or tg_dot_to_string(t, &o, &text, &len, NULL)
 *
 * Writing DOT needs no Graphviz; tg_dot_render (render.c) lays the text out in-process through
 * libgvc/libcgraph when the library was built with them.
 *
 * Conventions of the picture (every one of them is relied on by tests/test_dot.c)
 * - Vertices. Every op on the tape is one node `n<index>` (its tape position), labelled with the
 *   op, its arguments (matmul transposes, slice range, affine constants) and its shape.
 *   Leaves (tensors no node of this tape produced) are nodes too: parameters (TG_PARAM) are
 *   `p<k>` and every other leaf (inputs, initial states, targets) is `x<k>`, k counting leaves
 *   of each kind in order of first use on the tape. Names never depend on pointer values, so
 *   the same graph gives byte-identical DOT on every run.
 * - Colours by role: input (green box), parameter (yellow box, its edges yellow too), op (blue
 *   ellipse), loss (red double octagon, label "loss: …"), collapsed step (lilac 3-D box),
 *   gradient (dashed edges, below). The loss is opts.loss, else the last node if it is 1×1.
 * - Time. Ops carry the (step, layer) tag that the unroller set (tg_tape_set_tag). Each step
 *   present on the tape becomes `subgraph cluster_t<k>` labelled "t = k+1"; when any layer tag
 *   is ≥ 1 each step holds one `subgraph cluster_t<k>_l<l>` (label "layer l") per layer.
 *   Untagged ops (output layer, loss) and all leaves stay outside the clusters, so a parameter
 *   is drawn exactly once with one edge into every op that reads it, at every step: the
 *   weight sharing that makes BPTT sum gradients over time is visible as a fan of edges.
 * - Data edges u -> v: tensor u is an input of op v. Between the same two vertices there is at
 *   most one edge (an op reading one tensor twice, or merged vertices below, give one edge).
 * - Backward (opts.backward). For every data edge s -> c along which a gradient flowed (s needs
 *   a gradient and has one, and c's output received one) there is a second, gradient edge
 *   that points from c back to s. It is written `s -> c [class="grad", dir=back, …]`: the
 *   arrow is drawn at s, and because Graphviz lays it out like the data edge it runs right
 *   beside it instead of cutting across the picture (so a reader of the DOT follows gradient
 *   edges from head to tail). It is dashed, coloured and thickened by log10 ‖∂L/∂s‖, the
 *   Frobenius norm of the gradient of the tensor the data edge carries (for a parameter: its
 *   whole gradient, summed over steps). Eight colour bins span the smallest to the largest
 *   nonzero norm in the picture (light blue = vanishing … dark red = exploding); a zero
 *   gradient is grey and dotted, a non-finite one black; the tooltip gives the norm. A
 *   `legend` node lists the bins' ranges (and opts.loss_label). Data edges carry class="data".
 *   With opts.use_norm, the edge of a parameter into an op of step t is shaded by step t's
 *   term of the parameter's gradient instead (tapegrad dot: its time step's contribution).
 * - opts.values: labels gain "|v| norm [min, max]" of the value and, where a gradient exists,
 *   "|g| norm [min, max]" of the gradient (norms are Frobenius, printed with %.3g).
 * - opts.collapse: one node per cell step (not a rolled-up ×T node): the ops of each
 *   (step, layer) become one node `s<k>_l<l>` (`s<k>` if the step has no layer tag) labelled
 *   "<cell> step k+1[ layer l]\n<n> ops", inside cluster_t<k> (no layer subclusters: each
 *   would hold one node). With --values it shows its last op's output (the
 *   new hidden state for the built-in cells). Edges into and out of a group are merged: one per
 *   pair of vertices, a merged gradient edge shaded by the largest norm it carries.
 * - opts.window = K > 0 with more than 2K steps: the first K and last K steps are drawn; the
 *   N hidden steps become one node `gap` ("… N steps …") outside every cluster, and every edge
 *   that crosses the gap is drawn to or from it (merged as above).
 * - Export is two passes over the tape with plain loops and hash tables: linear in the number
 *   of nodes plus edges, no recursion (10,000 rnn_tanh steps, 50,000 nodes: about 0.2 s, and
 *   0.5 s with backward and values, on a busy 2-core machine).
 */
#ifndef TAPEGRAD_DOT_H
#define TAPEGRAD_DOT_H

#include <stdio.h>

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

struct tg_dot_opts {
    const struct tg_tensor *loss; /* drawn as the loss; NULL: the last node if it is 1×1 */
    const char *title;            /* graph label, NULL for none (may hold '\n' line breaks) */
    const char *cell;             /* name used for collapsed steps ("lstm step 3"); NULL: "cell" */
    int backward;                 /* draw gradient edges and the legend (after tg_backward) */
    int values;                   /* value / gradient summaries in labels */
    int collapse;                 /* one node per (step, layer) */
    int window;                   /* K > 0: keep the first and last K steps; 0: every step */
    const char *loss_label;       /* the legend's line saying which loss the gradients are of */
    /* Optional: the norm of the part of parameter w's gradient that op `use` made (one time
     * step's term, from models/flow.c), to shade the gradient edge of w → use by it rather than
     * by w's whole gradient; NaN: the whole gradient. */
    double (*use_norm)(void *ctx, const struct tg_node *use, const struct tg_tensor *w);
    void *use_ctx;
};

/* What was written (vertices and edges as Graphviz will count them). */
struct tg_dot_stats {
    size_t nodes, edges, grad_edges, step_clusters, layer_clusters;
};

/* Write the tape as DOT to f. opts NULL means all defaults; stats may be NULL.
 * Errors: TG_ERR_VALUE (bad options), TG_ERR_NOMEM, TG_ERR_IO (the stream failed). */
enum tg_status tg_dot_write(const struct tg_tape *t, const struct tg_dot_opts *opts, FILE *f,
                            struct tg_dot_stats *stats);
/* The same into a NUL-terminated malloc'd buffer (*out; free() it) of *len bytes. */
enum tg_status tg_dot_to_string(const struct tg_tape *t, const struct tg_dot_opts *opts,
                                char **out, size_t *len, struct tg_dot_stats *stats);

/* ---- render.c: Graphviz in-process (libgvc/libcgraph) ---- */

/* 1 if this build can render (it was compiled with Graphviz), else 0. */
int tg_dot_can_render(void);
/* Lay DOT text out with `dot` and render it in `format` ("svg" or "png") into a malloc'd buffer
 * (*out, *len; free() it). Errors: TG_ERR_STATE (built without Graphviz), TG_ERR_VALUE (unknown
 * format), TG_ERR_FORMAT (Graphviz rejected the text; its message is included), TG_ERR_NOMEM. */
enum tg_status tg_dot_render(const char *dot, size_t len, const char *format, char **out,
                             size_t *out_len);

#ifdef __cplusplus
}
#endif
#endif
