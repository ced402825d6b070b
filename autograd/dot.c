/* dot.c — a recorded tape as Graphviz DOT text (conventions in tapegrad_dot.h). No Graphviz needed.
 *
 * Two passes over the tape, both plain loops:
 *   1. number the leaves in order of first use (a pointer→id hash map only answers lookups, so
 *      its layout never reaches the output), sort the tagged nodes by (step, layer, index)
 *      with two stable counting sorts, and map every node to the vertex it is drawn as
 *      (itself, its collapsed step, or the window's gap);
 *   2. turn every (source tensor, op) pair into an edge between vertices, dropping edges inside
 *      one merged vertex and merging repeats through a hash set keyed by (from, to, kind);
 *      the edges are then written in the order they were first seen.
 * Nothing depends on a pointer value or a hash order, so equal tapes give equal bytes. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tapegrad_dot.h"

/* ------------------------------------------------------------ hash map */

/* Open addressing, linear probing: u64 key → u32 value. UINT64_MAX marks an empty slot (no
 * pointer and no edge key takes that value). */
struct u64map {
    uint64_t *keys;
    uint32_t *vals;
    size_t cap, count;
};

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int map_init(struct u64map *m, size_t expect)
{
    size_t cap = 64;
    while (cap < 2 * expect + 2) cap *= 2;
    m->keys = malloc(cap * sizeof *m->keys);
    m->vals = malloc(cap * sizeof *m->vals);
    m->cap = cap;
    m->count = 0;
    if (!m->keys || !m->vals) return -1;
    memset(m->keys, 0xff, cap * sizeof *m->keys);
    return 0;
}

static void map_free(struct u64map *m)
{
    free(m->keys);
    free(m->vals);
}

/* Slot of key: either holding it or the empty slot where it would go. */
static size_t map_slot(const struct u64map *m, uint64_t key)
{
    size_t i = (size_t)mix64(key) & (m->cap - 1);
    while (m->keys[i] != UINT64_MAX && m->keys[i] != key) i = (i + 1) & (m->cap - 1);
    return i;
}

/* Value of key, or UINT32_MAX if absent. */
static uint32_t map_get(const struct u64map *m, uint64_t key)
{
    size_t i = map_slot(m, key);
    return m->keys[i] == key ? m->vals[i] : UINT32_MAX;
}

static int map_put(struct u64map *m, uint64_t key, uint32_t val)
{
    if (2 * (m->count + 1) > m->cap) {
        struct u64map g;
        if (map_init(&g, m->cap) != 0) {
            map_free(&g);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i] != UINT64_MAX) {
                size_t j = map_slot(&g, m->keys[i]);
                g.keys[j] = m->keys[i];
                g.vals[j] = m->vals[i];
            }
        g.count = m->count;
        map_free(m);
        *m = g;
    }
    size_t i = map_slot(m, key);
    if (m->keys[i] != key) m->count++;
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

/* ---------------------------------------------------------- statistics */

/* Norm, min and max of n values. The norm is m·sqrt(Σ(x/m)²) with m = max|x|, so it neither
 * overflows nor underflows before the result would; a NaN anywhere makes it non-finite. */
struct vstat {
    double norm, min, max;
};

static double elem(const void *p, enum tg_dtype dt, size_t i)
{
    return dt == TG_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static struct vstat stat_of(const void *p, size_t n, enum tg_dtype dt)
{
    struct vstat s = {0.0, 0.0, 0.0};
    if (!p || n == 0) return s;
    double m = 0.0;
    int nan = 0;
    s.min = s.max = elem(p, dt, 0);
    for (size_t i = 0; i < n; i++) {
        double v = elem(p, dt, i);
        if (v != v) nan = 1;
        if (v < s.min) s.min = v;
        if (v > s.max) s.max = v;
        if (fabs(v) > m) m = fabs(v);
    }
    if (nan || isinf(m)) {
        s.norm = INFINITY;
        return s;
    }
    if (m == 0.0) return s;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = elem(p, dt, i) / m;
        acc += v * v;
    }
    s.norm = m * sqrt(acc);
    return s;
}

/* ------------------------------------------------------------- context */

enum vkind { V_LEAF, V_NODE, V_GROUP, V_GAP };

struct group {
    int32_t step, layer;   /* tags; layer −1 when the step's ops carry no layer */
    uint32_t start, count; /* range in the sorted order */
    uint32_t ord;          /* ordinal of its step among the steps present */
};

struct edge {
    uint32_t from, to;
    int grad;              /* 0: data edge, 1: gradient edge */
    double norm;           /* gradient norm carried (grad edges); max over merged ones */
};

struct dot {
    const struct tg_tape *t;
    struct tg_dot_opts o;
    FILE *f;
    size_t n;                          /* nodes on the tape */
    size_t loss;                       /* index of the loss node, or SIZE_MAX */
    const struct tg_tensor **leaves;   /* in order of first use */
    uint32_t *leaf_k;                  /* per-kind number (p<k> / x<k>) */
    size_t nleaves, cap_leaves;
    struct u64map leafmap;             /* tensor pointer → leaf id */
    uint32_t *order;                   /* tagged node indices sorted by (step, layer, index) */
    size_t ntagged;
    struct group *groups;
    size_t ngroups, nsteps;            /* groups; distinct steps */
    uint32_t *grp;                     /* per node: group, or UINT32_MAX if untagged */
    int layered;                       /* some layer tag ≥ 1: layer subclusters */
    uint32_t win_lo, win_hi;           /* step ordinals in [win_lo, win_hi) are hidden */
    size_t hidden_steps;
    uint32_t *vert;                    /* per node: vertex id */
    uint32_t v_node0, v_group0, v_gap; /* first vertex id of each kind */
    double *gnorm;                     /* per node: ‖∂L/∂out‖ (NAN: none) */
    double *leaf_gnorm;                /* per leaf */
    struct edge *edges;
    size_t nedges, cap_edges;
    struct u64map edgemap;
    double lg_lo, lg_hi;               /* log10 range of nonzero finite gradient norms */
    int any_norm, any_zero, any_inf;
    struct tg_dot_stats st;
};

static int on_tape(const struct dot *d, const struct tg_tensor *x)
{
    return x->node && x->node->index < d->n && tg_tape_node(d->t, x->node->index) == x->node;
}

static int is_param(const struct tg_tensor *x) { return (x->flags & TG_PARAM) != 0; }

/* Vertex a tensor is drawn as: its producing node's vertex or its leaf. */
static uint32_t vertex_of(const struct dot *d, const struct tg_tensor *x)
{
    if (on_tape(d, x)) return d->vert[x->node->index];
    return map_get(&d->leafmap, (uint64_t)(uintptr_t)x);
}

static enum tg_status nomem(void) { return tg_error(TG_ERR_NOMEM, "tg_dot_write: out of memory"); }

/* --------------------------------------------------------------- pass 1 */

static enum tg_status collect_leaves(struct dot *d)
{
    uint32_t nparam = 0, ninput = 0;
    if (map_init(&d->leafmap, 64) != 0) return nomem();
    for (size_t i = 0; i < d->n; i++) {
        const struct tg_node *nd = tg_tape_node(d->t, i);
        for (int s = 0; s < nd->nsrc; s++) {
            const struct tg_tensor *x = nd->src[s];
            if (!x) return tg_error(TG_ERR_VALUE, "tg_dot_write: node %zu (%s) has a NULL input %d",
                                    i, nd->op->name, s);
            if (on_tape(d, x) || map_get(&d->leafmap, (uint64_t)(uintptr_t)x) != UINT32_MAX) continue;
            if (d->nleaves == d->cap_leaves) {
                size_t cap = d->cap_leaves ? 2 * d->cap_leaves : 64;
                const struct tg_tensor **l = realloc(d->leaves, cap * sizeof *l);
                if (!l) return nomem();
                d->leaves = l;
                uint32_t *k = realloc(d->leaf_k, cap * sizeof *k);
                if (!k) return nomem();
                d->leaf_k = k;
                d->cap_leaves = cap;
            }
            d->leaf_k[d->nleaves] = is_param(x) ? nparam++ : ninput++;
            d->leaves[d->nleaves] = x;
            if (map_put(&d->leafmap, (uint64_t)(uintptr_t)x, (uint32_t)d->nleaves) != 0) return nomem();
            d->nleaves++;
        }
    }
    return TG_OK;
}

/* Stable counting sort of src[0..m) into dst by key(node) ∈ [0, nkeys). */
static int counting_sort(const struct dot *d, const uint32_t *src, uint32_t *dst, size_t m,
                         size_t nkeys, int by_step)
{
    size_t *cnt = calloc(nkeys + 1, sizeof *cnt);
    if (!cnt) return -1;
    for (size_t i = 0; i < m; i++) {
        const struct tg_node *nd = tg_tape_node(d->t, src[i]);
        cnt[1 + (size_t)(by_step ? nd->step : nd->layer + 1)]++;
    }
    for (size_t k = 0; k < nkeys; k++) cnt[k + 1] += cnt[k];
    for (size_t i = 0; i < m; i++) {
        const struct tg_node *nd = tg_tape_node(d->t, src[i]);
        dst[cnt[(size_t)(by_step ? nd->step : nd->layer + 1)]++] = src[i];
    }
    free(cnt);
    return 0;
}

static int cmp_tag(const void *pa, const void *pb, void *ctx)
{
    const struct dot *d = ctx;
    const struct tg_node *a = tg_tape_node(d->t, *(const uint32_t *)pa);
    const struct tg_node *b = tg_tape_node(d->t, *(const uint32_t *)pb);
    if (a->step != b->step) return a->step < b->step ? -1 : 1;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Group the tagged nodes (step ≥ 0) by (step, layer); layer −1 means none, below is an error. */
static enum tg_status group_nodes(struct dot *d)
{
    int32_t max_step = -1, max_layer = -1;
    for (size_t i = 0; i < d->n; i++) {
        const struct tg_node *nd = tg_tape_node(d->t, i);
        if (nd->step < 0) continue;
        d->ntagged++;
        if (nd->step > max_step) max_step = nd->step;
        if (nd->layer > max_layer) max_layer = nd->layer;
        if (nd->layer < -1)
            return tg_error(TG_ERR_VALUE, "tg_dot_write: node %zu has layer tag %d (expected >= -1)",
                            i, (int)nd->layer);
    }
    d->layered = max_layer >= 1;
    d->grp = malloc((d->n + 1) * sizeof *d->grp);
    d->order = malloc((d->ntagged + 1) * sizeof *d->order);
    uint32_t *tmp = malloc((d->ntagged + 1) * sizeof *tmp);
    d->groups = malloc((d->ntagged + 1) * sizeof *d->groups);
    if (!d->grp || !d->order || !tmp || !d->groups) {
        free(tmp);
        return nomem();
    }
    size_t m = 0;
    for (size_t i = 0; i < d->n; i++) {
        d->grp[i] = UINT32_MAX;
        if (tg_tape_node(d->t, i)->step >= 0) tmp[m++] = (uint32_t)i;
    }
    /* Linear: two stable counting sorts (layer, then step) when the tags are dense, as the
     * unroller makes them; sparse tags (a caller's own numbering) fall back to a sort. */
    size_t bound = 4 * d->n + 64;
    int ok;
    if ((size_t)max_step + 1 <= bound && (size_t)max_layer + 2 <= bound)
        ok = counting_sort(d, tmp, d->order, m, (size_t)max_layer + 2, 0) == 0 &&
             counting_sort(d, d->order, tmp, m, (size_t)max_step + 1, 1) == 0;
    else
        ok = 1, qsort_r(tmp, m, sizeof *tmp, cmp_tag, d);
    if (!ok) {
        free(tmp);
        return nomem();
    }
    memcpy(d->order, tmp, m * sizeof *tmp);
    free(tmp);
    for (size_t i = 0; i < m; i++) {
        const struct tg_node *nd = tg_tape_node(d->t, d->order[i]);
        struct group *g = d->ngroups ? &d->groups[d->ngroups - 1] : NULL;
        if (!g || g->step != nd->step || g->layer != nd->layer) {
            if (!g || g->step != nd->step) d->nsteps++;
            g = &d->groups[d->ngroups++];
            *g = (struct group){nd->step, nd->layer, (uint32_t)i, 0, (uint32_t)(d->nsteps - 1)};
        }
        g->count++;
        d->grp[d->order[i]] = (uint32_t)(d->ngroups - 1);
    }
    size_t K = (size_t)d->o.window;
    d->win_lo = d->win_hi = 0;
    if (K > 0 && d->nsteps > 2 * K) {
        d->win_lo = (uint32_t)K;
        d->win_hi = (uint32_t)(d->nsteps - K);
        d->hidden_steps = d->nsteps - 2 * K;
    }
    return TG_OK;
}

static int hidden(const struct dot *d, const struct group *g)
{
    return g->ord >= d->win_lo && g->ord < d->win_hi;
}

static enum tg_status assign_vertices(struct dot *d)
{
    d->v_node0 = (uint32_t)d->nleaves;
    d->v_group0 = d->v_node0 + (uint32_t)d->n;
    d->v_gap = d->v_group0 + (uint32_t)d->ngroups;
    d->vert = malloc((d->n + 1) * sizeof *d->vert);
    if (!d->vert) return nomem();
    for (size_t i = 0; i < d->n; i++) {
        uint32_t g = d->grp[i];
        if (g == UINT32_MAX) d->vert[i] = d->v_node0 + (uint32_t)i;
        else if (hidden(d, &d->groups[g])) d->vert[i] = d->v_gap;
        else if (d->o.collapse) d->vert[i] = d->v_group0 + g;
        else d->vert[i] = d->v_node0 + (uint32_t)i;
    }
    return TG_OK;
}

/* --------------------------------------------------------------- pass 2 */

static int add_edge(struct dot *d, uint32_t from, uint32_t to, int grad, double norm)
{
    if (from == to) return 0; /* inside one merged vertex */
    uint64_t key = ((uint64_t)grad << 63) | ((uint64_t)from << 32) | to;
    uint32_t e = map_get(&d->edgemap, key);
    if (e != UINT32_MAX) {
        double *m = &d->edges[e].norm;
        if (grad && norm > *m) *m = norm; /* a merged gradient edge shows the largest norm */
        return 0;
    }
    if (d->nedges == d->cap_edges) {
        size_t cap = d->cap_edges ? 2 * d->cap_edges : 256;
        struct edge *es = realloc(d->edges, cap * sizeof *es);
        if (!es) return -1;
        d->edges = es;
        d->cap_edges = cap;
    }
    d->edges[d->nedges] = (struct edge){from, to, grad, norm};
    return map_put(&d->edgemap, key, (uint32_t)d->nedges++);
}

/* ‖∂L/∂x‖ for a tensor that needs and has a gradient; NAN otherwise. */
static double tensor_gnorm(const struct tg_tensor *x);

static double grad_norm_of(const struct dot *d, const struct tg_tensor *x)
{
    /* a fused node's second and later outputs have gradients of their own */
    if (on_tape(d, x)) return x == x->node->out ? d->gnorm[x->node->index] : tensor_gnorm(x);
    uint32_t l = map_get(&d->leafmap, (uint64_t)(uintptr_t)x);
    return l == UINT32_MAX ? NAN : d->leaf_gnorm[l];
}

static double tensor_gnorm(const struct tg_tensor *x)
{
    if (!tg_requires_grad(x) || !x->grad) return NAN;
    return stat_of(x->grad, tg_numel(x), x->dtype).norm;
}

static enum tg_status build_edges(struct dot *d)
{
    if (map_init(&d->edgemap, 2 * d->n) != 0) return nomem();
    if (d->o.backward) {
        d->gnorm = malloc((d->n + 1) * sizeof *d->gnorm);
        d->leaf_gnorm = malloc((d->nleaves + 1) * sizeof *d->leaf_gnorm);
        if (!d->gnorm || !d->leaf_gnorm) return nomem();
        for (size_t i = 0; i < d->n; i++) d->gnorm[i] = tensor_gnorm(tg_tape_node(d->t, i)->out);
        for (size_t i = 0; i < d->nleaves; i++) d->leaf_gnorm[i] = tensor_gnorm(d->leaves[i]);
    }
    for (size_t i = 0; i < d->n; i++) {
        const struct tg_node *nd = tg_tape_node(d->t, i);
        uint32_t c = d->vert[i];
        int reached = d->o.backward &&
                      tg_node_reached(nd);
        for (int s = 0; s < nd->nsrc; s++) {
            const struct tg_tensor *x = nd->src[s];
            uint32_t u = vertex_of(d, x);
            if (add_edge(d, u, c, 0, NAN) != 0) return nomem();
            double g = reached ? grad_norm_of(d, x) : NAN;
            if (reached && d->o.use_norm && (x->flags & TG_PARAM)) { /* one step's term */
                double u = d->o.use_norm(d->o.use_ctx, nd, x);
                if (u == u) g = u;
            }
            if (g == g && add_edge(d, u, c, 1, g) != 0) return nomem();
        }
    }
    d->lg_lo = INFINITY, d->lg_hi = -INFINITY;
    for (size_t e = 0; e < d->nedges; e++) {
        if (!d->edges[e].grad) continue;
        double g = d->edges[e].norm;
        if (isinf(g)) d->any_inf = 1;
        else if (g == 0.0) d->any_zero = 1;
        else {
            double lg = log10(g);
            d->any_norm = 1;
            if (lg < d->lg_lo) d->lg_lo = lg;
            if (lg > d->lg_hi) d->lg_hi = lg;
        }
    }
    return TG_OK;
}

/* ------------------------------------------------------------- writing */

/* Light blue (vanishing) … dark red (exploding): eight bins of log10 ‖g‖. */
static const char *const shade[8] = {"#9ecae1", "#6baed6", "#3182bd", "#08519c",
                                     "#756bb1", "#de2d26", "#a50f15", "#67000d"};

static int bin_of(const struct dot *d, double g)
{
    if (!(d->lg_hi > d->lg_lo)) return 4;
    int b = (int)floor((log10(g) - d->lg_lo) / (d->lg_hi - d->lg_lo) * 8.0);
    return b < 0 ? 0 : b > 7 ? 7 : b;
}

/* A DOT string body: quotes and backslashes escaped, newlines as DOT's centred "\n". */
static void put_esc(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f), fputc(*s, f);
        else if (*s == '\n') fputs("\\n", f);
        else fputc(*s, f);
    }
}

/* Decimal integer without printf: the edge list is most of the text, and names are numbers. */
static void put_int(FILE *f, long long v)
{
    char buf[24], *p = buf + sizeof buf;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do *--p = (char)('0' + u % 10); while (u /= 10);
    if (v < 0) *--p = '-';
    fwrite(p, 1, (size_t)(buf + sizeof buf - p), f);
}

static void put_shape(FILE *f, int rows, int cols)
{
    fputs("\\n", f);
    put_int(f, rows);
    fputc('x', f);
    put_int(f, cols);
}

static void put_stat(FILE *f, const char *what, const void *p, const struct tg_tensor *x)
{
    struct vstat s = stat_of(p, tg_numel(x), x->dtype);
    fprintf(f, "\\n|%s| %.3g [%.3g, %.3g]", what, s.norm, s.min, s.max);
}

static void put_values(const struct dot *d, const struct tg_tensor *x)
{
    if (!d->o.values) return;
    if (x->flags & TG_REUSED) fputs("\\n|v| storage reused for σ/tanh results", d->f);
    else put_stat(d->f, "v", x->data, x);
    if (d->o.backward && x->grad && tg_requires_grad(x)) put_stat(d->f, "g", x->grad, x);
}

/* The op's name and what its label hook adds (transposes, slice bounds, a fused node's
 * instructions, …): the op table says it, not this file. */
static void put_op(FILE *f, const struct tg_node *nd)
{
    fputs(nd->op->name, f);
    if (nd->op->label) {
        char buf[512];
        nd->op->label(nd, buf, sizeof buf);
        fputs(buf, f);
    }
}

static void write_leaf(struct dot *d, size_t l, const char *ind)
{
    const struct tg_tensor *x = d->leaves[l];
    int p = is_param(x);
    fprintf(d->f, "%s%c%u [label=\"", ind, p ? 'p' : 'x', (unsigned)d->leaf_k[l]);
    put_esc(d->f, x->name ? x->name : p ? "param" : "input");
    put_shape(d->f, x->rows, x->cols);
    put_values(d, x);
    fprintf(d->f, "\", shape=box, fillcolor=\"%s\"%s];\n", p ? "#fff2cc" : "#d5e8d4",
            p ? ", penwidth=1.5" : ", style=\"rounded,filled\"");
    d->st.nodes++;
}

static void write_node(struct dot *d, size_t i, const char *ind)
{
    const struct tg_node *nd = tg_tape_node(d->t, i);
    int loss = i == d->loss;
    fputs(ind, d->f);
    fputc('n', d->f);
    put_int(d->f, (long long)i);
    fputs(loss ? " [label=\"loss: " : " [label=\"", d->f);
    if (nd->out->name && !loss) { /* the name a cell file gives it (f, c', a[H:2H]) first */
        put_esc(d->f, nd->out->name);
        fputs("\\n", d->f);
    }
    put_op(d->f, nd);
    put_shape(d->f, nd->out->rows, nd->out->cols);
    put_values(d, nd->out);
    fputs(loss ? "\", shape=doubleoctagon, fillcolor=\"#f8cecc\"];\n" : "\"];\n", d->f);
    d->st.nodes++;
}

static void write_group(struct dot *d, size_t gi, const char *ind)
{
    const struct group *g = &d->groups[gi];
    FILE *f = d->f;
    fprintf(f, "%ss%d", ind, (int)g->step);
    if (g->layer >= 0) fprintf(f, "_l%d", (int)g->layer);
    fputs(" [label=\"", f);
    put_esc(f, d->o.cell ? d->o.cell : "cell");
    fprintf(f, " step %d", (int)g->step + 1);
    if (d->layered && g->layer >= 0) fprintf(f, " layer %d", (int)g->layer);
    fprintf(f, "\\n%u ops", (unsigned)g->count);
    put_values(d, tg_tape_node(d->t, d->order[g->start + g->count - 1])->out);
    fputs("\", shape=box3d, fillcolor=\"#e1d5e7\"];\n", f);
    d->st.nodes++;
}

static void write_gap(struct dot *d)
{
    fprintf(d->f, "  gap [label=\"\xe2\x80\xa6 %zu steps \xe2\x80\xa6\", shape=box, style=dashed, "
                  "fontsize=14];\n", d->hidden_steps);
    d->st.nodes++;
}

static void write_legend(struct dot *d)
{
    FILE *f = d->f;
    fputs("  legend [shape=plaintext, style=\"\", label=<<TABLE BORDER=\"0\" CELLBORDER=\"1\" "
          "CELLSPACING=\"0\" CELLPADDING=\"3\"><TR><TD COLSPAN=\"2\"><B>gradient norm |dL/dx|"
          "</B></TD></TR>", f);
    if (d->any_norm) {
        int nb = d->lg_hi > d->lg_lo ? 8 : 1;
        for (int b = 0; b < nb; b++) {
            double w = (d->lg_hi - d->lg_lo) / 8.0;
            int k = nb == 1 ? 4 : b;
            fprintf(f, "<TR><TD BGCOLOR=\"%s\" WIDTH=\"24\"> </TD><TD ALIGN=\"LEFT\">", shade[k]);
            if (nb == 1) fprintf(f, "%.2g", pow(10.0, d->lg_lo));
            else fprintf(f, "%.2g to %.2g", pow(10.0, d->lg_lo + b * w), pow(10.0, d->lg_lo + (b + 1) * w));
            fputs("</TD></TR>", f);
        }
    }
    if (d->any_zero)
        fputs("<TR><TD BGCOLOR=\"#bbbbbb\"> </TD><TD ALIGN=\"LEFT\">0 (dotted)</TD></TR>", f);
    if (d->any_inf)
        fputs("<TR><TD BGCOLOR=\"#000000\"> </TD><TD ALIGN=\"LEFT\">inf or nan</TD></TR>", f);
    if (!d->any_norm && !d->any_zero && !d->any_inf)
        fputs("<TR><TD COLSPAN=\"2\">no gradient on the tape</TD></TR>", f);
    if (d->o.loss_label) {
        fputs("<TR><TD COLSPAN=\"2\">", f);
        for (const char *c = d->o.loss_label; *c; c++) /* HTML-like label: escape */
            if (*c == '<') fputs("&lt;", f);
            else if (*c == '>') fputs("&gt;", f);
            else if (*c == '&') fputs("&amp;", f);
            else fputc(*c, f);
        fputs("</TD></TR>", f);
    }
    fputs("</TABLE>>];\n", f);
    d->st.nodes++;
}

static void write_vertex_name(const struct dot *d, uint32_t v)
{
    FILE *f = d->f;
    if (v < d->v_node0) {
        fputc(is_param(d->leaves[v]) ? 'p' : 'x', f);
        put_int(f, d->leaf_k[v]);
    } else if (v < d->v_group0) {
        fputc('n', f);
        put_int(f, v - d->v_node0);
    } else if (v < d->v_gap) {
        const struct group *g = &d->groups[v - d->v_group0];
        fprintf(f, "s%d", (int)g->step);
        if (g->layer >= 0) fprintf(f, "_l%d", (int)g->layer);
    } else {
        fputs("gap", f);
    }
}

/* The time step a vertex belongs to, or −1 (leaves, untagged nodes, the gap). */
static int32_t vertex_step(const struct dot *d, uint32_t v)
{
    if (v >= d->v_node0 && v < d->v_group0) return tg_tape_node(d->t, v - d->v_node0)->step;
    if (v >= d->v_group0 && v < d->v_gap) return d->groups[v - d->v_group0].step;
    return -1;
}

static void write_edge(struct dot *d, const struct edge *e)
{
    FILE *f = d->f;
    /* An edge that runs back in time (the reverse direction of a bidirectional layer: step
     * t + 1 feeds step t) is written the other way round with its arrowhead flipped, so that
     * Graphviz still ranks the steps left to right and the reverse chain is drawn running
     * right to left. */
    int32_t sf = vertex_step(d, e->from), st = vertex_step(d, e->to);
    int back = sf >= 0 && st >= 0 && st < sf;
    fputs("  ", f);
    write_vertex_name(d, back ? e->to : e->from);
    fputs(" -> ", f);
    write_vertex_name(d, back ? e->from : e->to);
    if (!e->grad) {
        int param = e->from < d->v_node0 && is_param(d->leaves[e->from]);
        fputs(param ? " [color=\"#b89b2a\"];\n" : back ? " [dir=back];\n" : ";\n", f);
        d->st.edges++;
        return;
    }
    double g = e->norm;
    const char *dir = back ? "forward" : "back"; /* the arrowhead at the producer either way */
    if (isinf(g))
        fprintf(f, " [class=\"grad\", dir=%s, style=dashed, color=\"#000000\", penwidth=3.6, "
                   "tooltip=\"|dL/dx| not finite\"];\n", dir);
    else if (g == 0.0)
        fprintf(f, " [class=\"grad\", dir=%s, style=dotted, color=\"#bbbbbb\", "
                   "tooltip=\"|dL/dx| = 0\"];\n", dir);
    else {
        int b = bin_of(d, g);
        static const char *const width[8] = {"0.8", "1.2", "1.6", "2.0", "2.4", "2.8", "3.2", "3.6"};
        fprintf(f, " [class=\"grad\", dir=%s, style=dashed, color=\"%s\", penwidth=%s, "
                   "tooltip=\"|dL/dx| = %.3g\"];\n", dir, shade[b], width[b], g);
    }
    d->st.edges++;
    d->st.grad_edges++;
}

static void write_clusters(struct dot *d)
{
    FILE *f = d->f;
    int gap_done = 0;
    for (size_t gi = 0; gi < d->ngroups;) {
        const struct group *g0 = &d->groups[gi];
        size_t ge = gi;
        while (ge < d->ngroups && d->groups[ge].step == g0->step) ge++;
        if (hidden(d, g0)) {
            if (!gap_done) write_gap(d), gap_done = 1;
            gi = ge;
            continue;
        }
        fprintf(f, "  subgraph cluster_t%d {\n    label=\"t = %d\";\n", (int)g0->step,
                (int)g0->step + 1);
        fputs("    style=rounded; color=\"#888888\"; fontsize=12;\n", f);
        d->st.step_clusters++;
        for (size_t k = gi; k < ge; k++) {
            const struct group *g = &d->groups[k];
            if (d->o.collapse) {
                write_group(d, k, "    ");
                continue;
            }
            int sub = d->layered && g->layer >= 0;
            if (sub) {
                fprintf(f, "    subgraph cluster_t%d_l%d {\n      label=\"layer %d\";\n", (int)g->step,
                        (int)g->layer, (int)g->layer);
                fputs("      style=dashed; color=\"#aaaaaa\"; fontsize=10;\n", f);
                d->st.layer_clusters++;
            }
            for (uint32_t j = 0; j < g->count; j++)
                write_node(d, d->order[g->start + j], sub ? "      " : "    ");
            if (sub) fputs("    }\n", f);
        }
        fputs("  }\n", f);
        gi = ge;
    }
}

static void write_all(struct dot *d)
{
    FILE *f = d->f;
    fputs("digraph tapegrad {\n", f);
    /* ordering=out: a node's successors keep the tape's order, so gates sit in the same order
     * in every step. newrank=true: ranks come from the edges alone, not cluster by cluster, so
     * steps stand in time order even when one node feeds every step (the input projection of
     * collapsed or windowed pictures stacked them out of order, t = 1, 6, 7, 2, …) */
    fputs("  graph [rankdir=LR, newrank=true, ordering=out, nodesep=0.15, ranksep=0.3, fontname=\"Helvetica\", "
          "fontsize=14", f);
    if (d->o.title) {
        fputs(", labelloc=t, label=\"", f);
        put_esc(f, d->o.title);
        fputc('"', f);
    }
    fputs("];\n  node [shape=ellipse, style=filled, fillcolor=\"#dae8fc\", fontname=\"Helvetica\", "
          "fontsize=10, margin=\"0.05,0.02\"];\n", f);
    fputs("  edge [class=\"data\", color=\"#444444\", arrowsize=0.6];\n", f);
    if (d->o.backward) write_legend(d);
    for (size_t l = 0; l < d->nleaves; l++) write_leaf(d, l, "  ");
    for (size_t i = 0; i < d->n; i++)
        if (d->grp[i] == UINT32_MAX) write_node(d, i, "  ");
    write_clusters(d);
    for (size_t e = 0; e < d->nedges; e++) write_edge(d, &d->edges[e]);
    fputs("}\n", f);
}

static void dot_free(struct dot *d)
{
    free(d->leaves);
    free(d->leaf_k);
    map_free(&d->leafmap);
    free(d->order);
    free(d->groups);
    free(d->grp);
    free(d->vert);
    free(d->gnorm);
    free(d->leaf_gnorm);
    free(d->edges);
    map_free(&d->edgemap);
}

enum tg_status tg_dot_write(const struct tg_tape *t, const struct tg_dot_opts *opts, FILE *f,
                            struct tg_dot_stats *stats)
{
    if (stats) memset(stats, 0, sizeof *stats);
    if (!t || !f) return tg_error(TG_ERR_VALUE, "tg_dot_write: %s is NULL", t ? "the stream" : "the tape");
    struct dot d;
    memset(&d, 0, sizeof d);
    d.t = t;
    d.f = f;
    if (opts) d.o = *opts;
    if (d.o.window < 0)
        return tg_error(TG_ERR_VALUE, "tg_dot_write: window must be >= 0, got %d", d.o.window);
    d.n = tg_tape_num_nodes(t);
    if (d.n >= UINT32_MAX / 4)
        return tg_error(TG_ERR_VALUE, "tg_dot_write: tape too large to draw (%zu nodes)", d.n);
    d.loss = SIZE_MAX;
    if (d.o.loss) {
        if (!on_tape(&d, d.o.loss))
            return tg_error(TG_ERR_VALUE, "tg_dot_write: the loss was not recorded on this tape");
        d.loss = d.o.loss->node->index;
    } else if (d.n > 0) {
        const struct tg_tensor *y = tg_tape_node(t, d.n - 1)->out;
        if (y->rows == 1 && y->cols == 1) d.loss = d.n - 1;
    }
    enum tg_status st = collect_leaves(&d);
    if (st == TG_OK) st = group_nodes(&d);
    if (st == TG_OK) st = assign_vertices(&d);
    if (st == TG_OK) st = build_edges(&d);
    if (st == TG_OK) {
        errno = 0;
        write_all(&d);
        if (fflush(f) != 0 || ferror(f))
            st = tg_error(TG_ERR_IO, "tg_dot_write: writing the DOT text failed: %s",
                          errno ? strerror(errno) : "stream error");
    }
    if (st == TG_OK && stats) *stats = d.st;
    dot_free(&d);
    return st;
}

enum tg_status tg_dot_to_string(const struct tg_tape *t, const struct tg_dot_opts *opts,
                                char **out, size_t *len, struct tg_dot_stats *stats)
{
    *out = NULL;
    *len = 0;
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return nomem();
    enum tg_status st = tg_dot_write(t, opts, f, stats);
    if (fclose(f) != 0 && st == TG_OK) st = nomem();
    if (st != TG_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *len = n;
    return TG_OK;
}
