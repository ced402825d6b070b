/* cmd_dot.c — `tapegrad dot`: record a small random model of one cell unrolled over T steps,
 * optionally run backward, and draw the tape (DOT, or SVG/PNG through Graphviz).
 *
 * The output appears whole or not at all: the bytes go to a temporary file next to FILE which
 * is renamed over it only after everything succeeded, and removed on any error. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "tapegrad_flow.h"
#include "tapegrad_models.h"
#include "tapegrad_dot.h"
#include "tapegrad_fileio.h"

static const char *const CMD = "dot";

/* Graphviz's layout time grows faster than the graph: an lstm drawn over 100 steps (1,615
 * nodes) renders in 0.9 s, 200 steps (3,215) in 3 s, 400 steps (6,415) in 20 s, 3,000 steps in
 * minutes. Above this many drawn nodes .svg/.png are refused with a way out; .dot (no layout)
 * of any size is written. */
#define MAX_RENDER_NODES 4000
static const char *const USAGE =
    "--cell NAME [--steps T] [--layers L] [--bidirectional] [--hidden H] [--input I] [--batch B] [--backward] "
    "[--values] [--collapse] [--window K] [--fused] [--seed S] --out FILE(.dot|.svg|.png)";

/* Write n bytes to path atomically (temp file in the same directory, fsync, rename). */
static int write_atomic(const char *path, const char *buf, size_t n)
{
    struct tg_atomic a;
    if (tg_atomic_open(&a, NULL, path) != TG_OK) return cli_fail(CMD, "%s", tg_last_error());
    fwrite(buf, 1, n, a.f); /* a short write shows in the commit's ferror check */
    if (tg_atomic_commit(&a) != TG_OK) return cli_fail(CMD, "%s", tg_last_error());
    return 0;
}

struct dot_run {
    struct tg_model *m;
    struct tg_tape *t;
    struct tg_tensor **init;
    int ninit;
    double *x;
    int32_t *labels;
    char *names;
};

static void run_free(struct dot_run *r)
{
    for (int i = 0; i < r->ninit; i++) tg_tensor_free(r->init[i]);
    free(r->init);
    free(r->x);
    free(r->labels);
    free(r->names);
    tg_tape_free(r->t);
    tg_model_free(r->m);
}

/* The norm of step t's term of parameter w's gradient, for the edge w → use (use at step t);
 * NaN (the whole gradient) for an op outside the time loop or a parameter not in the ledger. */
static double step_term_norm(void *ctx, const struct tg_node *use, const struct tg_tensor *w)
{
    const struct tg_flow *f = ctx;
    if (use->step < 0 || use->step >= f->T) return NAN;
    for (int p = 0; p < f->n_params; p++)
        if (f->model->params[p] == w) return f->contrib[(size_t)p * f->T + use->step];
    return NAN;
}

static struct tg_cell *owned_cell; /* a --cell FILE.cell, freed by cmd_dot */

static int cmd_dot_main(int argc, char **argv)
{
    const char *cell_name = NULL, *out = NULL;
    int T = 3, L = 1, H = 4, I = 3, B = 1, backward = 0, values = 0, collapse = 0, window = 0,
        fused = 0, bidir = 0;
    const char *loss = NULL;
    long seed = 1;
    const struct cli_flag flags[] = {
        {"cell", CLI_STR, &cell_name, "recurrent cell: a built-in name (rnn_tanh, lstm, gru, ...) or FILE.cell", 1, 0},
        {"steps", CLI_INT, &T, "time steps T to unroll (default 3)", 1, 100000},
        {"layers", CLI_INT, &L, "stacked layers L (default 1)", 1, 64},
        {"bidirectional", CLI_BOOL, &bidir, "layers also run right to left (drawn right to left)", 1, 0},
        {"hidden", CLI_INT, &H, "hidden width H (default 4)", 1, 4096},
        {"input", CLI_INT, &I, "input width I (default 3)", 1, 4096},
        {"batch", CLI_INT, &B, "batch size B (default 1)", 1, 4096},
        {"backward", CLI_BOOL, &backward, "also draw the gradient flow (shaded by log |dL/dx|)", 1, 0},
        {"values", CLI_BOOL, &values, "norm, min and max of values (and gradients) in labels", 1, 0},
        {"collapse", CLI_BOOL, &collapse, "draw each cell step as one node", 1, 0},
        {"window", CLI_INT, &window, "keep the first and last K steps, one node for the rest", 1, 1e6},
        {"fused", CLI_BOOL, &fused, "draw the tape as training records it: each step's elementwise "
                                    "gate math as one fused node (default: every op)", 1, 0},
        {"seed", CLI_LONG, &seed, "random seed for weights and data (default 1)", 0, 9e18},
        {"out", CLI_STR, &out, "output file; .dot (any size), .svg or .png (at most 4000 drawn nodes)", 1, 0},
        {"loss", CLI_STR, &loss, "all (every step's loss, default) or last (the last step's only: "
                                 "the vanishing gradient shows)", 1, 0},
    };
    int rc = cli_parse(CMD, USAGE, argc, argv, flags, (int)(sizeof flags / sizeof flags[0]));
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!cell_name) return cli_fail(CMD, "--cell is required (one of %s)", tg_cell_names());
    if (!out) return cli_fail(CMD, "--out FILE is required (.dot, .svg or .png)");
    const char *format = cli_has_ext(out, ".dot") ? "dot" : cli_has_ext(out, ".svg") ? "svg"
                         : cli_has_ext(out, ".png") ? "png" : NULL;
    if (!format)
        return cli_fail(CMD, "cannot tell the format of '%s': the name must end in .dot, .svg or .png",
                        out);
    if (strcmp(format, "dot") != 0 && !tg_dot_can_render())
        return cli_fail(CMD, "this tapegrad was built without Graphviz, so it cannot write .%s; "
                             "use .dot and run Graphviz's dot on it", format);
    if (loss && strcmp(loss, "all") != 0 && strcmp(loss, "last") != 0)
        return cli_fail(CMD, "--loss must be 'all' or 'last', got '%s'", loss);
    int loss_last = loss && strcmp(loss, "last") == 0;
    const struct tg_cell *cell = cli_cell(CMD, cell_name, &owned_cell);
    if (!cell) return 1;

    struct dot_run r;
    memset(&r, 0, sizeof r);
    const int V = 3;
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L, .outputs = V,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM, .bidirectional = bidir};
    if (tg_model_new(&cfg, &r.m) != TG_OK) return cli_fail(CMD, "%s", tg_last_error());
    struct tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)seed);
    tg_model_init_uniform(r.m, &rng);

    /* Named zero initial states (h0, c0 per layer) so the picture says where the recurrence
     * starts; inputs N(0, 1), labels uniform. */
    int ns = cell->n_state, D = bidir ? 2 : 1;
    r.ninit = L * D * ns;
    r.init = calloc((size_t)r.ninit, sizeof *r.init);
    r.names = calloc((size_t)r.ninit, 32);
    r.x = malloc((size_t)T * B * I * sizeof *r.x);
    r.labels = malloc((size_t)T * B * sizeof *r.labels);
    r.t = tg_tape_new(0);
    if (r.t) tg_tape_set_fusion(r.t, fused);
    if (!r.init || !r.names || !r.x || !r.labels || !r.t) {
        run_free(&r);
        return cli_fail(CMD, "out of memory");
    }
    for (int ld = 0; ld < L * D; ld++)
        for (int k = 0; k < ns; k++) {
            int l = ld / D, i = ld * ns + k;
            char *nm = r.names + 32 * i;
            const char *sn = tg_cell_state_name(cell, k);
            char dflt[2] = {k ? 'c' : 'h', 0};
            if (!sn) sn = dflt;
            if (L > 1) snprintf(nm, 32, "%.12s0 layer %d%s", sn, l % 1000, ld % D ? " rev" : "");
            else snprintf(nm, 32, "%.20s0%s", sn, ld % D ? " rev" : "");
            r.init[i] = tg_tensor_new_heap(B, H, TG_F64);
            if (!r.init[i]) {
                run_free(&r);
                return cli_fail(CMD, "out of memory");
            }
            tg_tensor_set_name(r.init[i], nm);
        }
    for (long i = 0; i < (long)T * B * I; i++) r.x[i] = tg_rng_normal(&rng);
    for (long i = 0; i < (long)T * B; i++) r.labels[i] = (int32_t)tg_rng_below(&rng, (uint32_t)V);
    if (loss_last) /* only the last step's positions are labelled */
        for (long i = 0; i < (long)(T - 1) * B; i++) r.labels[i] = -1;
    struct tg_seq_batch batch = {.T = T, .B = B, .x = r.x, .labels = r.labels};
    struct tg_seq_result res;
    /* with backward, the ledger (models/flow.c) gives each step's term of every weight's
     * gradient, which shades the edges into the shared weights (one direction only: a
     * bidirectional model's weight edges show the whole gradient) */
    struct tg_flow *flow = NULL;
    int ledger = backward && !bidir;
    if (tg_model_forward_from(r.m, r.t, &batch, r.init, &res) != TG_OK ||
        (ledger && (tg_flow_new(r.m, T, B, &flow) != TG_OK || tg_flow_begin(flow, r.t, &res) != TG_OK)) ||
        (backward && tg_backward(r.t, res.loss) != TG_OK) ||
        (ledger && tg_flow_end(flow, r.t, &res) != TG_OK)) {
        rc = cli_fail(CMD, "%s", tg_last_error());
        tg_flow_free(flow);
        run_free(&r);
        return rc;
    }
    if (res.input) tg_tensor_set_name(res.input, "x (all steps)");

    char title[512];
    snprintf(title, sizeof title, "%s: %s\nT = %d, layers = %d%s, H = %d, I = %d, B = %d%s", cell->name,
             cell->equations, T, L, bidir ? " (bidirectional: the reverse chain runs right to left)" : "",
             H, I, B,
             backward ? "; dashed: gradient, coloured by log10 |dL/dx|" : "");
    struct tg_dot_opts o = {.loss = res.loss, .title = title, .cell = cell->name, .backward = backward,
                            .values = values, .collapse = collapse, .window = window};
    if (backward) {
        o.loss_label = loss_last ? "loss: the last step's only (--loss last); weight edges: that step's term"
                                 : "loss: every step's (--loss all); weight edges: that step's term";
        o.use_norm = flow ? step_term_norm : NULL;
        o.use_ctx = flow;
    }
    char *text = NULL, *pic = NULL;
    size_t len = 0, pic_len = 0;
    struct tg_dot_stats ds;
    enum tg_status st = tg_dot_to_string(r.t, &o, &text, &len, &ds);
    int render = strcmp(format, "dot") != 0;
    if (st == TG_OK && render && ds.nodes > MAX_RENDER_NODES) {
        rc = cli_fail(CMD, "%s over %d steps draws %zu nodes; rendering more than %d in-process takes "
                      "minutes: add --window K (the first and last K steps) or --collapse, or write a "
                      ".dot file and run Graphviz on it", cell->name, T, ds.nodes, MAX_RENDER_NODES);
        free(text);
        run_free(&r);
        return rc;
    }
    if (st == TG_OK && render) st = tg_dot_render(text, len, format, &pic, &pic_len);
    if (st != TG_OK) rc = cli_fail(CMD, "%s", tg_last_error());
    else rc = pic ? write_atomic(out, pic, pic_len) : write_atomic(out, text, len);
    free(text);
    free(pic);
    tg_flow_free(flow);
    run_free(&r);
    return rc;
}

int cmd_dot(int argc, char **argv)
{
    int rc = cmd_dot_main(argc, argv);
    tg_cell_free(owned_cell);
    owned_cell = NULL;
    return rc;
}
