/* backward.c — reverse mode in one loop.
 *
 * The tape holds nodes in the order they ran, which is a topological order of the graph, so
 * walking it backwards visits every node after all nodes that consumed its output. Each op's
 * backward adds (+=) its local derivative times the incoming gradient into its inputs'
 * gradients; a tensor used k times therefore receives the sum of k contributions, which is all
 * BPTT needs for a weight shared by every time step. No recursion: a tape of millions of nodes
 * uses no stack beyond this frame. */
#include <string.h>

#include "internal.h"

enum tg_status tg_backward(struct tg_tape *t, struct tg_tensor *loss)
{
    if (!loss) {
        if (t->status != TG_OK) return tg_error(t->status, "%s", t->errmsg);
        return tg_error(TG_ERR_VALUE, "tg_backward: loss is NULL");
    }
    if (t->status != TG_OK) return tg_error(t->status, "%s", t->errmsg);
    if (loss->rows != 1 || loss->cols != 1)
        return tg_error(TG_ERR_SHAPE, "tg_backward: loss must be a scalar (1x1), got (%dx%d)",
                        loss->rows, loss->cols);
    if (t->walked)
        return tg_error(TG_ERR_STATE, "tg_backward: this tape was already walked backwards; "
                                      "call tg_tape_reset and record the step again");
    if (!tg_requires_grad(loss) || !loss->node)
        return tg_error(TG_ERR_STATE, "tg_backward: the loss depends on no tensor that requires a "
                                      "gradient (or was computed in no-grad mode)");
    size_t top = loss->node->index;
    if (top >= t->n_nodes || t->nodes[top] != loss->node)
        return tg_error(TG_ERR_STATE, "tg_backward: the loss was not recorded on this tape");
    t->walked = 1;

    void *g = tg_grad_buffer(t, loss);
    if (!g) return tg_error(TG_ERR_NOMEM, "tg_backward: out of memory");
    if (loss->dtype == TG_F64) *(double *)g += 1.0;
    else *(float *)g += 1.0f;

    for (size_t i = top + 1; i-- > 0;) {
        struct tg_node *n = t->nodes[i];
        /* Skip what no gradient reached (nothing downstream of it leads to the loss) and what
         * cannot lead to a tensor that wants a gradient. */
        if (!n->out->grad || !tg_requires_grad(n->out)) continue;
        for (int s = 0; s < n->nsrc; s++) {
            struct tg_tensor *x = n->src[s];
            if (tg_requires_grad(x) && !tg_grad_buffer(t, x))
                return tg_error(TG_ERR_NOMEM, "tg_backward: out of memory for gradients");
        }
        tg_op_table[n->op].backward(n);
    }
    return TG_OK;
}
