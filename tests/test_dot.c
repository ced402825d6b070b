/* test_dot.c — the DOT export (autograd/dot.c), its rendering (autograd/render.c) and
 * `tapegrad dot` (tools/cmd_dot.c).
 *
 * Every DOT text is parsed back with Graphviz's own parser (agmemread) and checked against
 * counts this file predicts from the tape by itself (its own leaf numbering, step ordinals and
 * edge set, computed with sorts instead of dot.c's hash maps):
 *   - step clusters == T (or 2K under --window K), layer clusters == T·L when L > 1;
 *   - node and edge counts equal the prediction, and grow linearly in T (measured at T = 2, 3,
 *     checked at 5 and 8; T = 1 is off the line because the output layer skips its concat);
 *   - each parameter is exactly one node, with one data edge per op that reads it;
 *   - backward: following gradient edges from the loss reaches every parameter.
 * Plus a golden file (rnn_tanh, T = 2) made by the CLI, byte-identical output across processes,
 * SVG/PNG validity, CLI errors leaving no file, and a 10,000-step tape. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "tapegrad_models.h"
#include "tg_config.h"
#include "tapegrad_dot.h"
#include "test_util.h"

#if TG_HAVE_GRAPHVIZ
#include <graphviz/cgraph.h>
#endif

/* ------------------------------------------------------------ a model run */

struct run {
    struct tg_model *m;
    struct tg_tape *t;
    struct tg_seq_result res;
    double *x;
    int32_t *y;
};

static void run_make(struct run *r, const char *cell, int T, int L, int H, int I, int B, int backward)
{
    memset(r, 0, sizeof *r);
    struct tg_model_config cfg = {.cell = tg_cell_find(cell), .input = I, .hidden = H, .layers = L,
                                  .outputs = 3, .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    assert_non_null(cfg.cell);
    if (tg_model_new(&cfg, &r->m) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_rng rng;
    tg_rng_seed(&rng, 42);
    tg_model_init_uniform(r->m, &rng);
    r->x = malloc(sizeof(double) * (size_t)T * B * I);
    r->y = malloc(sizeof(int32_t) * (size_t)T * B);
    for (long i = 0; i < (long)T * B * I; i++) r->x[i] = tg_rng_normal(&rng);
    for (long i = 0; i < (long)T * B; i++) r->y[i] = (int32_t)tg_rng_below(&rng, 3);
    r->t = tg_tape_new(0);
    tg_tape_set_fusion(r->t, 0); /* predictions below count one node per op */
    struct tg_seq_batch b = {.T = T, .B = B, .x = r->x, .labels = r->y};
    if (tg_model_forward(r->m, r->t, &b, 0, &r->res) != TG_OK) fail_msg("%s", tg_last_error());
    if (backward && tg_backward(r->t, r->res.loss) != TG_OK) fail_msg("%s", tg_last_error());
}

static void run_free(struct run *r)
{
    tg_tape_free(r->t);
    tg_model_free(r->m);
    free(r->x);
    free(r->y);
}

static char *export(const struct run *r, struct tg_dot_opts o, struct tg_dot_stats *st)
{
    o.loss = r->res.loss;
    char *s = NULL;
    size_t len = 0;
    if (tg_dot_to_string(r->t, &o, &s, &len, st) != TG_OK) fail_msg("%s", tg_last_error());
    assert_int_equal(strlen(s), len);
    return s;
}

/* ------------------------------------------- counts predicted from the tape */

struct pred {
    size_t nodes, edges, grad_edges, step_clusters, layer_clusters;
};

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

static int is_on(const struct tg_tape *t, const struct tg_tensor *x)
{
    return x->node && x->node->index < tg_tape_num_nodes(t) && tg_tape_node(t, x->node->index) == x->node;
}

/* Sort + unique, return the count. */
static size_t uniq_u64(uint64_t *a, size_t n)
{
    qsort(a, n, sizeof *a, cmp_u64);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || a[m - 1] != a[i]) a[m++] = a[i];
    return m;
}

static struct pred predict(const struct tg_tape *t, const struct tg_dot_opts *o)
{
    struct pred p = {0};
    size_t n = tg_tape_num_nodes(t), ne = 0, nl = 0, ns = 0;
    for (size_t i = 0; i < n; i++) ne += (size_t)tg_tape_node(t, i)->nsrc;
    const struct tg_tensor **leaves = malloc((ne + 1) * sizeof *leaves);
    int *steps = malloc((n + 1) * sizeof *steps);
    int max_layer = -1;
    for (size_t i = 0; i < n; i++) {
        const struct tg_node *nd = tg_tape_node(t, i);
        for (int s = 0; s < nd->nsrc; s++)
            if (!is_on(t, nd->src[s])) leaves[nl++] = nd->src[s];
        if (nd->step >= 0) steps[ns++] = nd->step;
        if (nd->step >= 0 && nd->layer > max_layer) max_layer = nd->layer;
    }
    qsort(leaves, nl, sizeof *leaves, cmp_ptr);
    size_t m = 0;
    for (size_t i = 0; i < nl; i++)
        if (m == 0 || leaves[m - 1] != leaves[i]) leaves[m++] = leaves[i];
    nl = m;
    qsort(steps, ns, sizeof *steps, cmp_int);
    m = 0;
    for (size_t i = 0; i < ns; i++)
        if (m == 0 || steps[m - 1] != steps[i]) steps[m++] = steps[i];
    size_t S = m, K = (size_t)o->window, LS = (size_t)max_layer + 2;
    int windowed = K > 0 && S > 2 * K, layered = max_layer >= 1;
    /* vertex ids: leaves [0, nl), nodes nl + i, groups nl + n + ord·LS + layer + 1, gap last */
    uint64_t *vert = malloc((n + 1) * sizeof *vert);
    uint64_t *groups = malloc((n + 1) * sizeof *groups), *gsteps = malloc((n + 1) * sizeof *gsteps);
    size_t ng = 0, nvis_steps = 0;
    uint64_t gap = nl + n + S * LS;
    for (size_t i = 0; i < n; i++) {
        const struct tg_node *nd = tg_tape_node(t, i);
        vert[i] = nl + i;
        if (nd->step < 0) {
            p.nodes++;
            continue;
        }
        size_t ord = (size_t)((int *)bsearch(&nd->step, steps, S, sizeof *steps, cmp_int) - steps);
        if (windowed && ord >= K && ord < S - K) {
            vert[i] = gap;
            continue;
        }
        uint64_t gid = nl + n + ord * LS + (uint64_t)(nd->layer + 1);
        if (o->collapse) vert[i] = gid;
        else p.nodes++;
        gsteps[nvis_steps++] = ord;
        if (o->collapse || (layered && nd->layer >= 0)) groups[ng++] = gid;
    }
    size_t ngroups = uniq_u64(groups, ng);
    p.step_clusters = uniq_u64(gsteps, nvis_steps);
    if (o->collapse) p.nodes += ngroups;
    else if (layered) p.layer_clusters = ngroups;
    p.nodes += nl + (windowed ? 1 : 0) + (o->backward ? 1 : 0);
    uint64_t *pairs = malloc((2 * ne + 1) * sizeof *pairs);
    size_t np = 0, gp = 0;
    for (size_t i = 0; i < n; i++) {
        const struct tg_node *nd = tg_tape_node(t, i);
        for (int s = 0; s < nd->nsrc; s++) {
            const struct tg_tensor *x = nd->src[s];
            uint64_t u = is_on(t, x) ? vert[x->node->index]
                                     : (uint64_t)((const struct tg_tensor **)bsearch(
                                                      &x, leaves, nl, sizeof *leaves, cmp_ptr) - leaves);
            if (u == vert[i]) continue;
            pairs[np++] = (u << 32) | vert[i];
            if (o->backward && nd->out->grad && tg_requires_grad(x) && x->grad)
                pairs[np++] = (1ULL << 63) | (u << 32) | vert[i];
        }
    }
    p.edges = uniq_u64(pairs, np);
    for (size_t i = 0; i < p.edges; i++) gp += pairs[i] >> 63;
    p.grad_edges = gp;
    free(leaves), free(steps), free(vert), free(groups), free(gsteps), free(pairs);
    return p;
}

static void check_stats(const struct tg_dot_stats *st, const struct pred *p)
{
    assert_int_equal(st->nodes, p->nodes);
    assert_int_equal(st->edges, p->edges);
    assert_int_equal(st->grad_edges, p->grad_edges);
    assert_int_equal(st->step_clusters, p->step_clusters);
    assert_int_equal(st->layer_clusters, p->layer_clusters);
}

#if TG_HAVE_GRAPHVIZ
/* ------------------------------------------------------- the parsed graph */

struct parsed {
    size_t nodes, edges, grad_edges, step_clusters, layer_clusters;
};

static Agraph_t *parse(const char *dot)
{
    Agraph_t *g = agmemread(dot);
    if (!g) fail_msg("agmemread rejected the DOT text: %s", aglasterr() ? aglasterr() : "?");
    return g;
}

static int is_grad(Agedge_t *e)
{
    const char *c = agget(e, "class");
    return c && strcmp(c, "grad") == 0;
}

static struct parsed measure(Agraph_t *g)
{
    struct parsed m = {(size_t)agnnodes(g), (size_t)agnedges(g), 0, 0, 0};
    for (Agnode_t *v = agfstnode(g); v; v = agnxtnode(g, v))
        for (Agedge_t *e = agfstout(g, v); e; e = agnxtout(g, e)) m.grad_edges += (size_t)is_grad(e);
    for (Agraph_t *s = agfstsubg(g); s; s = agnxtsubg(s)) {
        int k, l, len = 0;
        const char *name = agnameof(s);
        if (sscanf(name, "cluster_t%d%n", &k, &len) == 1 && name[len] == '\0') m.step_clusters++;
        for (Agraph_t *u = agfstsubg(s); u; u = agnxtsubg(u)) {
            name = agnameof(u);
            if (sscanf(name, "cluster_t%d_l%d%n", &k, &l, &len) == 2 && name[len] == '\0')
                m.layer_clusters++;
        }
    }
    return m;
}

static void check_parsed(const struct parsed *m, const struct pred *p)
{
    assert_int_equal(m->nodes, p->nodes);
    assert_int_equal(m->edges, p->edges);
    assert_int_equal(m->grad_edges, p->grad_edges);
    assert_int_equal(m->step_clusters, p->step_clusters);
    assert_int_equal(m->layer_clusters, p->layer_clusters);
}

/* Nodes whose label starts with `name` followed by a line break. */
static int count_labelled(Agraph_t *g, const char *name, Agnode_t **found)
{
    int c = 0;
    size_t n = strlen(name);
    for (Agnode_t *v = agfstnode(g); v; v = agnxtnode(g, v)) {
        const char *lab = agget(v, "label");
        if (lab && strncmp(lab, name, n) == 0 && strncmp(lab + n, "\\n", 2) == 0) c++, *found = v;
    }
    return c;
}

/* Consumers of parameter p on the tape (ops reading it, each counted once). */
static int consumers(const struct tg_tape *t, const struct tg_tensor *p)
{
    int c = 0;
    for (size_t i = 0; i < tg_tape_num_nodes(t); i++) {
        const struct tg_node *nd = tg_tape_node(t, i);
        for (int s = 0; s < nd->nsrc; s++)
            if (nd->src[s] == p) {
                c++;
                break;
            }
    }
    return c;
}

/* Each parameter: one node, one data edge per op that reads it. */
static void check_params(Agraph_t *g, const struct run *r)
{
    for (int i = 0; i < r->m->n_params; i++) {
        Agnode_t *v = NULL;
        assert_int_equal(count_labelled(g, r->m->names[i], &v), 1);
        int data = 0;
        for (Agedge_t *e = agfstout(g, v); e; e = agnxtout(g, e)) data += !is_grad(e);
        assert_int_equal(data, consumers(r->t, r->m->params[i]));
    }
}

/* Breadth-first from the loss along gradient edges (drawn head → tail): every parameter found. */
static void check_grad_paths(Agraph_t *g, const struct run *r)
{
    char name[32];
    snprintf(name, sizeof name, "n%u", (unsigned)r->res.loss->node->index);
    Agnode_t *loss = agnode(g, name, 0);
    assert_non_null(loss);
    int n = agnnodes(g), head = 0, tail = 0;
    Agnode_t **queue = malloc((size_t)n * sizeof *queue);
    Agnode_t **seen = calloc((size_t)n, sizeof *seen);
    int nseen = 0;
    queue[tail++] = loss;
    seen[nseen++] = loss;
    while (head < tail) {
        Agnode_t *v = queue[head++];
        for (Agedge_t *e = agfstin(g, v); e; e = agnxtin(g, e)) {
            if (!is_grad(e)) continue;
            Agnode_t *u = agtail(e);
            int known = 0;
            for (int k = 0; k < nseen && !known; k++) known = seen[k] == u;
            if (!known) seen[nseen++] = u, queue[tail++] = u;
        }
    }
    for (int i = 0; i < r->m->n_params; i++) {
        Agnode_t *p = NULL;
        assert_int_equal(count_labelled(g, r->m->names[i], &p), 1);
        int reached = 0;
        for (int k = 0; k < nseen && !reached; k++) reached = seen[k] == p;
        if (!reached) fail_msg("no gradient path from the loss to %s", r->m->names[i]);
    }
    free(queue);
    free(seen);
}
#endif

/* ------------------------------------------------------------------ tests */

static void check_one(const char *cell, int T, int L, int backward, struct tg_dot_opts o,
                      struct pred *out)
{
    struct run r;
    run_make(&r, cell, T, L, 3, 2, 2, backward);
    o.backward = backward;
    struct tg_dot_stats st;
    char *s = export(&r, o, &st);
    struct pred p = predict(r.t, &o);
    check_stats(&st, &p);
    if (!o.window || 2 * o.window >= T) assert_int_equal(p.step_clusters, T);
    else assert_int_equal(p.step_clusters, 2 * o.window);
    if (L > 1 && !o.collapse) assert_int_equal(p.layer_clusters, p.step_clusters * L);
#if TG_HAVE_GRAPHVIZ
    Agraph_t *g = parse(s);
    struct parsed m = measure(g);
    check_parsed(&m, &p);
    if (!o.collapse && !(o.window && 2 * o.window < T)) check_params(g, &r); /* else merged */
    if (backward) check_grad_paths(g, &r);
    if (o.window && 2 * o.window < T) {
        Agnode_t *gap = agnode(g, "gap", 0);
        assert_non_null(gap);
        char want[64];
        snprintf(want, sizeof want, "\xe2\x80\xa6 %d steps \xe2\x80\xa6", T - 2 * o.window);
        assert_string_equal(agget(gap, "label"), want);
        assert_true(agdegree(g, gap, 1, 0) > 0 && agdegree(g, gap, 0, 1) > 0);
    }
    agclose(g);
#endif
    if (out) *out = p;
    free(s);
    run_free(&r);
}

/* Counts match the prediction, clusters == T, linear growth in T, for several cells. */
static void test_counts_linear(void **state)
{
    (void)state;
    const char *cells[] = {"rnn_tanh", "lstm", "gru", "mgu"};
    for (int c = 0; c < 4; c++)
        for (int L = 1; L <= 2; L++)
            for (int bw = 0; bw <= 1; bw++) {
                struct pred p[4];
                const int Ts[4] = {2, 3, 5, 8};
                for (int k = 0; k < 4; k++) check_one(cells[c], Ts[k], L, bw, (struct tg_dot_opts){0}, &p[k]);
                size_t dn = p[1].nodes - p[0].nodes, de = p[1].edges - p[0].edges;
                assert_true(dn > 0 && de > 0);
                for (int k = 2; k < 4; k++) {
                    assert_int_equal(p[k].nodes, p[0].nodes + (size_t)(Ts[k] - 2) * dn);
                    assert_int_equal(p[k].edges, p[0].edges + (size_t)(Ts[k] - 2) * de);
                }
            }
}

static void test_window_collapse(void **state)
{
    (void)state;
    struct pred p;
    check_one("lstm", 10, 1, 1, (struct tg_dot_opts){.window = 2}, &p);
    check_one("lstm", 10, 2, 0, (struct tg_dot_opts){.window = 3}, &p);
    check_one("gru", 4, 1, 0, (struct tg_dot_opts){.window = 2}, &p); /* 2K >= T: no gap */
    check_one("rnn_tanh", 6, 1, 1, (struct tg_dot_opts){.collapse = 1}, &p);
    assert_int_equal(p.layer_clusters, 0);
    check_one("lstm", 4, 2, 1, (struct tg_dot_opts){.collapse = 1}, &p);
    assert_int_equal(p.layer_clusters, 0);
    check_one("lstm", 12, 2, 1, (struct tg_dot_opts){.collapse = 1, .window = 1, .values = 1}, &p);
    assert_int_equal(p.step_clusters, 2);
#if TG_HAVE_GRAPHVIZ
    /* collapsed nodes: one per (step, layer), labelled with the cell and the op count */
    struct run r;
    run_make(&r, "lstm", 4, 2, 3, 2, 1, 0);
    char *s = export(&r, (struct tg_dot_opts){.collapse = 1, .cell = "lstm"}, NULL);
    Agraph_t *g = parse(s);
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 2; l++) {
            char name[32], want[64];
            snprintf(name, sizeof name, "s%d_l%d", k, l);
            Agnode_t *v = agnode(g, name, 0);
            assert_non_null(v);
            snprintf(want, sizeof want, "lstm step %d layer %d\\n", k + 1, l);
            assert_memory_equal(agget(v, "label"), want, strlen(want));
            assert_non_null(strstr(agget(v, "label"), " ops"));
        }
    agclose(g);
    free(s);
    run_free(&r);
#endif
}

/* Tags given by hand, sparse and out of order: the fallback sort, labels from the tag values. */
static void test_custom_tags(void **state)
{
    (void)state;
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *w = tg_param_new("w", 2, 2, TG_F64), *x = tg_tensor_new(t, 1, 2, TG_F64);
    const int tags[3] = {2000000000, 7, 7};
    struct tg_tensor *h = x;
    for (int k = 0; k < 3; k++) {
        tg_tape_set_tag(t, tags[k], k == 2 ? 1 : 0);
        h = tg_tanh(t, tg_matmul(t, h, w, 0, 1));
    }
    tg_tape_set_tag(t, -1, -1);
    struct tg_tensor *loss = tg_sum(t, h);
    assert_int_equal(tg_backward(t, loss), TG_OK);
    struct tg_dot_opts o = {.loss = loss, .backward = 1, .values = 1};
    char *s = NULL;
    size_t len;
    struct tg_dot_stats st;
    assert_int_equal(tg_dot_to_string(t, &o, &s, &len, &st), TG_OK);
    struct pred p = predict(t, &o);
    check_stats(&st, &p);
    assert_int_equal(st.step_clusters, 2);
    assert_int_equal(st.layer_clusters, 3);
    assert_non_null(strstr(s, "subgraph cluster_t2000000000 {\n    label=\"t = 2000000001\";"));
    assert_non_null(strstr(s, "subgraph cluster_t7_l1 {"));
    /* the 2e9 step comes after step 7 */
    assert_true(strstr(s, "cluster_t7 ") < strstr(s, "cluster_t2000000000 "));
    free(s);
    /* bad options */
    o.window = -1;
    assert_int_equal(tg_dot_to_string(t, &o, &s, &len, NULL), TG_ERR_VALUE);
    assert_non_null(strstr(tg_last_error(), "window"));
    /* an empty tape is an empty graph */
    tg_tape_reset(t);
    o = (struct tg_dot_opts){0};
    assert_int_equal(tg_dot_to_string(t, &o, &s, &len, &st), TG_OK);
    assert_int_equal(st.nodes + st.edges + st.step_clusters, 0);
    assert_non_null(strstr(s, "digraph tapegrad {"));
    free(s);
    tg_tape_free(t);
    tg_tensor_free(w);
}

#if TG_HAVE_GRAPHVIZ
static double grad_norm(const struct tg_tensor *x)
{
    double acc = 0;
    for (int k = 0; k < x->rows * x->cols; k++) acc += pow(tg_grad_get(x, k / x->cols, k % x->cols), 2);
    return sqrt(acc);
}

/* The edge's tooltip shows `norm` (to the 3 digits printed). */
static void assert_shows(double shown, double norm)
{
    char want[32], got[32];
    snprintf(want, sizeof want, "%.3g", norm);
    snprintf(got, sizeof got, "%.3g", shown);
    assert_string_equal(got, want);
}

static double tooltip_norm(Agedge_t *e)
{
    const char *tip = agget(e, "tooltip");
    double g = -1;
    if (!tip || sscanf(tip, "|dL/dx| = %lf", &g) != 1) fail_msg("gradient edge without a norm");
    return g;
}

static int shade_index(const char *color)
{
    static const char *const pal[8] = {"#9ecae1", "#6baed6", "#3182bd", "#08519c",
                                       "#756bb1", "#de2d26", "#a50f15", "#67000d"};
    for (int k = 0; k < 8; k++)
        if (strcmp(color, pal[k]) == 0) return k;
    fail_msg("gradient edge colour %s is not in the palette", color);
    return -1;
}
#endif

/* Shading: each gradient edge shows ‖∂L/∂s‖ of the tensor s its data edge carries; colours
 * grow monotonically with the norm over the eight bins; merged edges show the largest norm. */
static void test_shading(void **state)
{
    (void)state;
#if TG_HAVE_GRAPHVIZ
    struct run r;
    run_make(&r, "lstm", 6, 1, 3, 2, 2, 1);
    char *s = export(&r, (struct tg_dot_opts){.backward = 1}, NULL);
    Agraph_t *g = parse(s);
    double norms[4096];
    int bins[4096], n = 0;
    for (Agnode_t *v = agfstnode(g); v; v = agnxtnode(g, v))
        for (Agedge_t *e = agfstout(g, v); e; e = agnxtout(g, e)) {
            if (!is_grad(e)) continue;
            double gn = tooltip_norm(e);
            unsigned idx;
            if (sscanf(agnameof(agtail(e)), "n%u", &idx) == 1)
                assert_shows(gn, grad_norm(tg_tape_node(r.t, idx)->out));
            if (strcmp(agget(e, "color"), "#bbbbbb") == 0) { /* f·c0 at step 1: c0 = 0 */
                assert_true(gn == 0.0);
                assert_string_equal(agget(e, "style"), "dotted");
                continue;
            }
            assert_true(n < 4096);
            norms[n] = gn, bins[n++] = shade_index(agget(e, "color"));
        }
    assert_true(n > 50);
    int lo = 8, hi = -1;
    for (int a = 0; a < n; a++) {
        lo = bins[a] < lo ? bins[a] : lo, hi = bins[a] > hi ? bins[a] : hi;
        for (int b = 0; b < n; b++)
            if (norms[a] < norms[b] * 0.999) assert_true(bins[a] <= bins[b]);
    }
    assert_int_equal(lo, 0);
    assert_int_equal(hi, 7);
    agclose(g);
    free(s);

    /* collapsed: the edge from step k to step k+1 carries h_k and c_k (and for k = 0 more);
     * it shows the largest of their norms */
    s = export(&r, (struct tg_dot_opts){.backward = 1, .collapse = 1}, NULL);
    g = parse(s);
    for (int step = 1; step < 6; step++) {
        double best = 0;
        for (size_t i = 0; i < tg_tape_num_nodes(r.t); i++) {
            const struct tg_node *nd = tg_tape_node(r.t, i);
            if (nd->step != step) continue;
            for (int k = 0; k < nd->nsrc; k++) {
                const struct tg_tensor *x = nd->src[k];
                if (x->node && x->node->step == step - 1) best = fmax(best, grad_norm(x));
            }
        }
        char na[16], nb[16];
        snprintf(na, sizeof na, "s%d_l0", step - 1);
        snprintf(nb, sizeof nb, "s%d_l0", step);
        Agnode_t *a = agnode(g, na, 0), *b = agnode(g, nb, 0);
        assert_non_null(a);
        assert_non_null(b);
        int found = 0;
        for (Agedge_t *e = agfstout(g, a); e; e = agnxtout(g, e))
            if (is_grad(e) && aghead(e) == b) assert_shows(tooltip_norm(e), best), found++;
        assert_int_equal(found, 1);
    }
    agclose(g);
    free(s);
    run_free(&r);
#else
    skip();
#endif
}


/* Run the tapegrad binary with args; its stderr goes to err_path. Returns the exit status. */
static int run_cli(const char *const *args, const char *err_path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[32];
        int n = 0;
        argv[n++] = (char *)TG_BUILD_DIR "/tools/tapegrad";
        argv[n++] = (char *)"dot";
        for (; args[n - 2]; n++) argv[n] = (char *)args[n - 2];
        argv[n] = NULL;
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tg_test_dot_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static void rm_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    char p[512];
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name), unlink(p);
    if (d) closedir(d);
    rmdir(tmpdir);
}

/* The golden file: `tapegrad dot --cell rnn_tanh --steps 2 --hidden 2 --input 2`, byte for byte.
 * TG_UPDATE_GOLDEN=1 rewrites it (after an intended change of the picture). */
static void test_golden(void **state)
{
    (void)state;
    make_tmpdir();
    char out[512], err[512];
    snprintf(out, sizeof out, "%s/g.dot", tmpdir);
    snprintf(err, sizeof err, "%s/err.txt", tmpdir);
    const char *args[] = {"--cell", "rnn_tanh", "--steps", "2", "--hidden", "2", "--input", "2",
                          "--out", out, NULL};
    assert_int_equal(run_cli(args, err), 0);
    size_t n, m;
    char *got = tg_test_read_file(out, &n);
    assert_non_null(got);
    const char *golden = TG_SOURCE_DIR "/tests/golden/rnn_tanh_T2.dot";
    if (getenv("TG_UPDATE_GOLDEN")) {
        FILE *f = fopen(golden, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(got, 1, n, f), n);
        fclose(f);
    }
    char *want = tg_test_read_file(golden, &m);
    if (!want) fail_msg("missing %s (run with TG_UPDATE_GOLDEN=1 once)", golden);
    assert_int_equal(n, m);
    assert_memory_equal(got, want, n);
    free(got);
    free(want);
    rm_tmpdir();
}

/* Same graph, different processes (ASLR) and different heap layouts: identical bytes. */
static void test_deterministic(void **state)
{
    (void)state;
    make_tmpdir();
    char a[512], b[512], err[512];
    snprintf(a, sizeof a, "%s/a.dot", tmpdir);
    snprintf(b, sizeof b, "%s/b.dot", tmpdir);
    snprintf(err, sizeof err, "%s/err.txt", tmpdir);
    const char *args_a[] = {"--cell", "lstm", "--steps", "4", "--layers", "2", "--backward", "--values",
                            "--out", a, NULL};
    const char *args_b[] = {"--cell", "lstm", "--steps", "4", "--layers", "2", "--backward", "--values",
                            "--out", b, NULL};
    assert_int_equal(run_cli(args_a, err), 0);
    assert_int_equal(run_cli(args_b, err), 0);
    size_t na, nb;
    char *sa = tg_test_read_file(a, &na), *sb = tg_test_read_file(b, &nb);
    assert_true(na > 1000);
    assert_int_equal(na, nb);
    assert_memory_equal(sa, sb, na);
    free(sa), free(sb);
    rm_tmpdir();

    struct run r1, r2;
    run_make(&r1, "gru", 5, 2, 3, 2, 2, 1);
    void *shift = malloc(12345); /* move the second run's heap and arena */
    run_make(&r2, "gru", 5, 2, 3, 2, 2, 1);
    struct tg_dot_opts o = {.backward = 1, .values = 1, .title = "gru \"quoted\" \\ title"};
    char *s1 = export(&r1, o, NULL), *s2 = export(&r2, o, NULL);
    assert_string_equal(s1, s2);
    assert_non_null(strstr(s1, "label=\"gru \\\"quoted\\\" \\\\ title\""));
    free(s1), free(s2), free(shift);
    run_free(&r1), run_free(&r2);
}

/* A small XML well-formedness check: every start tag closed in order, one root element. */
static int xml_well_formed(const char *s, size_t n)
{
    const char *p = s, *end = s + n;
    char stack[64][64];
    int depth = 0, roots = 0;
    while (p < end) {
        if (*p != '<') {
            p++;
            continue;
        }
        const char *close = NULL;
        if (strncmp(p, "<?", 2) == 0) close = strstr(p, "?>");
        else if (strncmp(p, "<!--", 4) == 0) close = strstr(p, "-->");
        else if (strncmp(p, "<![CDATA[", 9) == 0) close = strstr(p, "]]>");
        else if (strncmp(p, "<!", 2) == 0) close = strchr(p, '>');
        if (close) {
            p = close + 1;
            continue;
        }
        if (p[1] == '/') {
            size_t k = strcspn(p + 2, " \t\n>");
            if (depth == 0 || strlen(stack[depth - 1]) != k || strncmp(stack[depth - 1], p + 2, k))
                return 0;
            depth--;
            p = strchr(p, '>');
            if (!p) return 0;
            p++;
            continue;
        }
        size_t k = strcspn(p + 1, " \t\n/>");
        if (k == 0 || k >= 64 || depth == 64) return 0;
        const char *q = p + 1 + k;
        char quote = 0;
        for (; q < end && (quote || *q != '>'); q++)
            if (quote ? *q == quote : (*q == '"' || *q == '\'')) quote = quote ? 0 : *q;
        if (q >= end) return 0;
        if (q[-1] != '/') {
            if (depth == 0) roots++;
            memcpy(stack[depth], p + 1, k);
            stack[depth++][k] = '\0';
        } else if (depth == 0) {
            roots++;
        }
        p = q + 1;
    }
    return depth == 0 && roots == 1;
}

static void test_render(void **state)
{
    (void)state;
    struct run r;
    run_make(&r, "lstm", 3, 1, 2, 2, 1, 1);
    char *s = export(&r, (struct tg_dot_opts){.backward = 1, .values = 1, .title = "lstm"}, NULL);
    char *pic = NULL;
    size_t n = 0;
    if (!tg_dot_can_render()) {
        assert_int_equal(tg_dot_render(s, strlen(s), "svg", &pic, &n), TG_ERR_STATE);
        free(s);
        run_free(&r);
        skip();
    }
    assert_int_equal(tg_dot_render(s, strlen(s), "svg", &pic, &n), TG_OK);
    assert_true(n > 1000);
    assert_memory_equal(pic, "<?xml", 5);
    assert_non_null(strstr(pic, "Generated by graphviz"));
    assert_non_null(strstr(pic, "<svg"));
    while (n > 0 && (pic[n - 1] == '\n' || pic[n - 1] == ' ')) n--;
    assert_true(n > 6 && memcmp(pic + n - 6, "</svg>", 6) == 0);
    assert_true(xml_well_formed(pic, n));
    assert_false(xml_well_formed("<svg><g></svg></g>", 18));
    free(pic);

    /* PNG: a smaller picture (rasterising is the slow part) */
    struct run small;
    run_make(&small, "rnn_tanh", 2, 1, 2, 2, 1, 1);
    char *s2 = export(&small, (struct tg_dot_opts){.backward = 1}, NULL);
    assert_int_equal(tg_dot_render(s2, strlen(s2), "png", &pic, &n), TG_OK);
    free(s2);
    run_free(&small);
    const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const unsigned char *u = (const unsigned char *)pic;
    assert_true(n > 33);
    assert_memory_equal(u, sig, 8);
    assert_memory_equal(u + 12, "IHDR", 4);
    uint32_t w = (uint32_t)u[16] << 24 | (uint32_t)u[17] << 16 | (uint32_t)u[18] << 8 | u[19];
    uint32_t h = (uint32_t)u[20] << 24 | (uint32_t)u[21] << 16 | (uint32_t)u[22] << 8 | u[23];
    assert_true(w >= 100 && w < 100000 && h >= 50 && h < 100000);
    free(pic);

    assert_int_equal(tg_dot_render(s, strlen(s), "jpg", &pic, &n), TG_ERR_VALUE);
    const char *bad = "digraph { a -> ; }";
    assert_int_equal(tg_dot_render(bad, strlen(bad), "svg", &pic, &n), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_last_error(), "tg_dot_render"));
    assert_null(pic);
    free(s);
    run_free(&r);
}

/* The command line: files appear whole; errors say one line, exit 1 and leave nothing. */
static void test_cli(void **state)
{
    (void)state;
    make_tmpdir();
    char out[512], err[512], nodir[512];
    snprintf(err, sizeof err, "/tmp/tg_test_dot_err_%d.txt", (int)getpid());
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.dot", tmpdir);
    struct { const char *a[12]; } bad[] = {
        {{"--cell", "lstm", "--out", "OUT.jpg", NULL}},
        {{"--cell", "lstm", "--out", "OUT", NULL}},
        {{"--cell", "lstm", "--window", "0", "--out", "OUT.dot", NULL}},
        {{"--cell", "lstm", "--window", "-2", "--out", "OUT.dot", NULL}},
        {{"--cell", "lstm", "--window", "two", "--out", "OUT.dot", NULL}},
        {{"--cell", "nope", "--out", "OUT.dot", NULL}},
        {{"--cell", "lstm", "--steps", "0", "--out", "OUT.dot", NULL}},
        {{"--cell", "lstm", "--frobnicate", "--out", "OUT.dot", NULL}},
        {{"--cell", "lstm", NULL}},
        {{"--cell", "lstm", "--out", "NODIR", NULL}},
        {{"--cell", "lstm", "--out", "NODIR.svg", NULL}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[12];
        char path[512];
        int k = 0;
        for (; bad[i].a[k]; k++) {
            args[k] = bad[i].a[k];
            if (strncmp(args[k], "OUT", 3) == 0) {
                snprintf(path, sizeof path, "%s/x%s", tmpdir, args[k] + 3);
                args[k] = path;
            } else if (strncmp(args[k], "NODIR", 5) == 0) {
                snprintf(path, sizeof path, "%s%s", nodir, args[k] + 5);
                args[k] = path;
            }
        }
        args[k] = NULL;
        assert_int_equal(run_cli(args, err), 1);
        assert_int_equal(dir_entries(tmpdir), 0);
        size_t n;
        char *msg = tg_test_read_file(err, &n);
        if (n == 0 || msg[n - 1] != '\n' || strchr(msg, '\n') != msg + n - 1 ||
            strncmp(msg, "tapegrad dot: ", 14) != 0)
            fail_msg("case %zu: expected one line 'tapegrad dot: ...', got '%s'", i, msg);
        free(msg);
    }
    /* an existing directory as the output: rename fails, the temp file is removed */
    snprintf(out, sizeof out, "%s/dir.dot", tmpdir);
    assert_int_equal(mkdir(out, 0755), 0);
    const char *args_dir[] = {"--cell", "gru", "--out", out, NULL};
    assert_int_equal(run_cli(args_dir, err), 1);
    assert_int_equal(dir_entries(tmpdir), 1);
    rmdir(out);
    /* success: each format, and --help */
    const char *exts[3] = {".dot", ".svg", ".png"};
    for (int i = 0; i < (tg_dot_can_render() ? 3 : 1); i++) {
        snprintf(out, sizeof out, "%s/ok%s", tmpdir, exts[i]);
        const char *args[] = {"--cell", "gru", "--steps", "3", "--backward", "--values", "--collapse",
                              "--window", "1", "--out", out, NULL};
        assert_int_equal(run_cli(args, err), 0);
        size_t n;
        char *b = tg_test_read_file(out, &n);
        assert_non_null(b);
        assert_true(n > 100);
        if (i == 0) assert_memory_equal(b, "digraph tapegrad {", 18);
        if (i == 1) assert_non_null(strstr(b, "</svg>"));
        if (i == 2) assert_memory_equal(b, "\x89PNG", 4);
        free(b);
    }
    assert_int_equal(dir_entries(tmpdir), tg_dot_can_render() ? 3 : 1);
    const char *help[] = {"--help", NULL};
    assert_int_equal(run_cli(help, err), 0);
    unlink(err);
    rm_tmpdir();
}

/* 10,000 steps: the writer has no recursion and is linear; Graphviz parses the result. Parsing
 * 180,000 edges takes Graphviz seconds, so the full backward text is checked through the
 * writer's counts against the prediction, and the forward and windowed texts are parsed. */
static void test_long_tape(void **state)
{
    (void)state;
    const int T = 10000;
    struct run r;
    run_make(&r, "rnn_tanh", T, 1, 2, 1, 1, 1);
    struct tg_dot_opts variants[3] = {{0}, {.backward = 1}, {.backward = 1, .window = 3, .collapse = 1}};
    for (int v = 0; v < 3; v++) {
        struct tg_dot_stats st;
        char *s = export(&r, variants[v], &st);
        struct pred p = predict(r.t, &variants[v]);
        check_stats(&st, &p);
        assert_int_equal(st.step_clusters, v == 2 ? 6 : T);
        assert_true(v == 2 ? st.nodes < 30 : st.nodes > (size_t)3 * T); /* slice, addmm, tanh per step */
        assert_true(v == 0 ? st.grad_edges == 0 : st.grad_edges > (v == 1 ? (size_t)3 * T : 10));
        if (v == 2) assert_non_null(strstr(s, "9994 steps"));
#if TG_HAVE_GRAPHVIZ
        if (v != 1) {
            Agraph_t *g = parse(s);
            struct parsed m = measure(g);
            check_parsed(&m, &p);
            if (v == 2) check_grad_paths(g, &r);
            agclose(g);
        }
#endif
        free(s);
    }
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_linear),
        cmocka_unit_test(test_window_collapse),
        cmocka_unit_test(test_custom_tags),
        cmocka_unit_test(test_shading),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_long_tape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
