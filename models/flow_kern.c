/* flow_kern.c — the arithmetic of the per-step ledger: B×B Gram matrices of row blocks and
 * the reductions read from them (flow_kern.h).
 *
 * The Gram matrices are BLAS syrk. Two hand-written ones were measured against it at the
 * ledger's shapes: the block transposed into a panel and G built as Σ_k a_k a_kᵀ in a 4×32
 * register tile (0.6–0.9× syrk's speed), and 4×4 tiles of row dot products reduced by a
 * shuffle tree (1.1× at 32×32×128, 1.4× at 32×32×512, 0.9× at 64×64×64); neither is here.
 * Nor is a full A·Aᵀ through libxsmm's JIT kernels (a transposed copy, then C = P·Pᵀ or
 * P·A): per call 1.02–1.29× faster than ssyrk at 32×64, 32×128 and 64×64, 0.77–0.93× at
 * 32×512 and 64×512, 0.63–0.82× at 64×2048 (thread CPU time, one thread): it computes the
 * whole matrix where syrk computes half, so it wins only where syrk's own packing dominates.
 *
 * The estimator (f->sketch) replaces the Gram matrices by CountSketches (flow_sketch): one
 * pass over a block's rows, B·n adds, then ‖YᵀZ‖² from two B×k sketches. At these sizes the
 * ledger is then bound by reading the blocks at all; the backward hook sketches a step's
 * blocks while they are in cache (models/flow.c), which helped the LSTM and was within the
 * noise for the GRU and rnn_tanh (README, "Cost").
 *
 * The reductions accumulate in double, in 8 independent lanes, so the compiler vectorises them
 * without reassociating a single sum (a scalar double sum is latency-bound: one add per 4
 * cycles, which made ‖∂L/∂h_t‖ and its split a third of the ledger's time). */
#include <stdint.h>
#include <string.h>

#include "flow_kern.h"
#include "tapegrad_blas.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FLOW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FLOW_CLONES
#endif

void flow_gram(enum tg_dtype dt, int m, int k, const void *a, size_t lda, void *g)
{
    tg_syrk(dt, m, k, a, (int)lda, g, flow_gram_ld(m));
}

/* Lane sums: s[l] += f(i) over i ≡ l (mod 8), then the 8 lanes added in a fixed order. */
#define LANES 8
static double lanes_total(const double *s)
{
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

#define REDUCE_DEF(T, S)                                                                       \
    FLOW_CLONES static double gram_dot_##S(const T *g1, const T *g2, int m)                    \
    {                                                                                          \
        const int ld = flow_gram_ld(m);                                                        \
        double diag = 0, off[LANES] = {0};                                                     \
        for (int i = 0; i < m; i++) {                                                          \
            const T *a = g1 + (size_t)i * ld, *b = g2 + (size_t)i * ld;                        \
            diag += (double)a[i] * b[i];                                                       \
            int j = i + 1;                                                                     \
            for (; j + LANES <= m; j += LANES)                                                 \
                for (int l = 0; l < LANES; l++) off[l] += (double)a[j + l] * b[j + l];         \
            for (; j < m; j++) off[0] += (double)a[j] * b[j];                                  \
        }                                                                                      \
        return diag + 2 * lanes_total(off);                                                    \
    }                                                                                          \
    FLOW_CLONES static double gram_sum_##S(const T *g, int m)                                  \
    {                                                                                          \
        const int ld = flow_gram_ld(m);                                                        \
        double diag = 0, off[LANES] = {0};                                                     \
        for (int i = 0; i < m; i++) {                                                          \
            const T *a = g + (size_t)i * ld;                                                   \
            diag += a[i];                                                                      \
            int j = i + 1;                                                                     \
            for (; j + LANES <= m; j += LANES)                                                 \
                for (int l = 0; l < LANES; l++) off[l] += a[j + l];                            \
            for (; j < m; j++) off[0] += a[j];                                                 \
        }                                                                                      \
        return diag + 2 * lanes_total(off);                                                    \
    }                                                                                          \
    FLOW_CLONES static void split_##S(const T *g, const T *a, size_t n, double *r)             \
    {                                                                                          \
        double s0[LANES] = {0}, s1[LANES] = {0}, s2[LANES] = {0};                              \
        size_t i = 0;                                                                          \
        for (; i + LANES <= n; i += LANES)                                                     \
            for (int l = 0; l < LANES; l++) {                                                  \
                double x = g ? g[i + l] : 0, y = a ? a[i + l] : 0;                             \
                s0[l] += x * x, s1[l] += y * y, s2[l] += (x - y) * (x - y);                    \
            }                                                                                  \
        for (; i < n; i++) {                                                                   \
            double x = g ? g[i] : 0, y = a ? a[i] : 0;                                         \
            s0[0] += x * x, s1[0] += y * y, s2[0] += (x - y) * (x - y);                        \
        }                                                                                      \
        r[0] = lanes_total(s0), r[1] = lanes_total(s1), r[2] = lanes_total(s2);                \
    }
REDUCE_DEF(float, f32)
REDUCE_DEF(double, f64)

double flow_gram_dot(enum tg_dtype dt, const void *g1, const void *g2, int m)
{
    double s = dt == TG_F64 ? gram_dot_f64(g1, g2, m) : gram_dot_f32(g1, g2, m);
    return s > 0 ? s : 0;
}

double flow_gram_sum(enum tg_dtype dt, const void *g, int m)
{
    double s = dt == TG_F64 ? gram_sum_f64(g, m) : gram_sum_f32(g, m);
    return s > 0 ? s : 0;
}

void flow_split_norms(enum tg_dtype dt, const void *g, const void *a, size_t n, double *tot,
                      double *up, double *nx)
{
    double r[3];
    if (dt == TG_F64) split_f64(g, a, n, r);
    else split_f32(g, a, n, r);
    *tot = r[0], *up = r[1], *nx = r[2];
}

double flow_sumsq(const void *p, enum tg_dtype dt, size_t n)
{
    double r[3];
    if (dt == TG_F64) split_f64(p, NULL, n, r);
    else split_f32(p, NULL, n, r);
    return r[0];
}

#define COLSUM_DEF(T, S)                                                                       \
    FLOW_CLONES static double colsum_##S(const T *a, int m, int n, double *acc)                \
    {                                                                                          \
        for (int j = 0; j < n; j++) acc[j] = 0;                                                \
        for (int i = 0; i < m; i++)                                                            \
            for (int j = 0; j < n; j++) acc[j] += a[(size_t)i * n + j];                        \
        double s[LANES] = {0};                                                                 \
        int j = 0;                                                                             \
        for (; j + LANES <= n; j += LANES)                                                     \
            for (int l = 0; l < LANES; l++) s[l] += acc[j + l] * acc[j + l];                   \
        for (; j < n; j++) s[0] += acc[j] * acc[j];                                            \
        return lanes_total(s);                                                                 \
    }
COLSUM_DEF(float, f32)
COLSUM_DEF(double, f64)

double flow_colsum_sumsq(enum tg_dtype dt, const void *a, int m, int n, double *acc)
{
    return dt == TG_F64 ? colsum_f64(a, m, n, acc) : colsum_f32(a, m, n, acc);
}

/* The chunk loop is outside the row loop: each row accumulates in its own 2k-wide window
 * (bucket j + rot at offset j + rot, folded at the end), so consecutive adds never overlap the
 * unaligned store just made (a store-forwarding stall per chunk when a row ran chunk by chunk). */
#define SKETCH_DEF(T, S)                                                                       \
    FLOW_CLONES static void sketch_##S(int m, int n, int k, const T *a, const T *sg,           \
                                       const int *rot, T *y, T *w)                             \
    {                                                                                          \
        memset(w, 0, (size_t)m * 2 * k * sizeof *w);                                           \
        for (int c0 = 0; c0 < n; c0 += k) {                                                    \
            int len = n - c0 < k ? n - c0 : k;                                                 \
            const T *s = sg + c0;                                                              \
            for (int i = 0; i < m; i++) {                                                      \
                T *d = w + (size_t)i * 2 * k + rot[c0 / k];                                    \
                const T *x = a + (size_t)i * n + c0;                                           \
                for (int j = 0; j < len; j++) d[j] += s[j] * x[j];                             \
            }                                                                                  \
        }                                                                                      \
        for (int i = 0; i < m; i++)                                                            \
            for (int j = 0; j < k; j++) y[(size_t)i * k + j] = w[(size_t)i * 2 * k + j] + w[(size_t)i * 2 * k + k + j]; \
    }                                                                                          \
    FLOW_CLONES static double sketch_dot_##S(int m, int k, const T *y, const T *z, T *w)       \
    {                                                                                          \
        memset(w, 0, (size_t)k * k * sizeof *w);                                               \
        for (int b = 0; b < m; b++)                                                            \
            for (int i = 0; i < k; i++) {                                                      \
                T yi = y[(size_t)b * k + i];                                                   \
                for (int j = 0; j < k; j++) w[(size_t)i * k + j] += yi * z[(size_t)b * k + j];  \
            }                                                                                  \
        double s[LANES] = {0};                                                                 \
        int i = 0, kk = k * k;                                                                 \
        for (; i + LANES <= kk; i += LANES)                                                    \
            for (int l = 0; l < LANES; l++) s[l] += (double)w[i + l] * w[i + l];               \
        for (; i < kk; i++) s[0] += (double)w[i] * w[i];                                       \
        return lanes_total(s);                                                                 \
    }
SKETCH_DEF(float, f32)
SKETCH_DEF(double, f64)

void flow_sketch(enum tg_dtype dt, int m, int n, int k, const void *a, const void *sign,
                 const int *rot, void *y, void *tmp)
{
    if (dt == TG_F64) sketch_f64(m, n, k, a, sign, rot, y, tmp);
    else sketch_f32(m, n, k, a, sign, rot, y, tmp);
}

double flow_sketch_dot(enum tg_dtype dt, int m, int k, const void *y, const void *z, void *tmp)
{
    return dt == TG_F64 ? sketch_dot_f64(m, k, y, z, tmp) : sketch_dot_f32(m, k, y, z, tmp);
}

/* ------------------------------------------------------------- sketch store */

struct flow_sketch_entry {
    const void *p;
    int n, m, side;
    void *y;
    double cs;
};

struct flow_sketch_store {
    enum tg_dtype dt;
    int k, dim, rows, cap, n, hmask, drawn;
    uint64_t seed;
    void *sign[2], *tmp;
    int *rot[2];
    struct flow_sketch_entry *e;
    int *hash;                     /* open addressing, −1 empty */
    char *pool;
    size_t ybytes;
};

struct flow_sketch_store *flow_sketch_store_new(struct tg_tape *t, enum tg_dtype dt, int k, uint64_t seed,
                                                int dim, int rows, int cap)
{
    size_t es = tg_dtype_size(dt);
    int chunks = (dim + k - 1) / k, hn = 16;
    while (hn < 2 * cap) hn *= 2;
    struct flow_sketch_store *s = tg_tape_alloc(t, sizeof *s);
    if (!s) return NULL;
    *s = (struct flow_sketch_store){.dt = dt, .k = k, .dim = dim, .rows = rows, .cap = cap, .hmask = hn - 1,
                                    .drawn = -1, .seed = seed};
    s->ybytes = ((size_t)rows * k * es + 63) / 64 * 64;
    s->e = tg_tape_alloc(t, (size_t)cap * sizeof *s->e);
    s->hash = tg_tape_alloc(t, (size_t)hn * sizeof *s->hash);
    s->pool = tg_tape_alloc(t, (size_t)cap * s->ybytes);
    s->tmp = tg_tape_alloc(t, ((size_t)rows * 2 * k + (size_t)k * k) * es);
    for (int side = 0; side < 2; side++) {
        s->sign[side] = tg_tape_alloc(t, (size_t)dim * es);
        s->rot[side] = tg_tape_alloc(t, (size_t)chunks * sizeof(int));
        if (!s->sign[side] || !s->rot[side]) return NULL;
    }
    if (!s->e || !s->hash || !s->pool || !s->tmp) return NULL;
    memset(s->hash, 0xff, (size_t)hn * sizeof *s->hash);
    return s;
}

int flow_sketch_store_fits(const struct flow_sketch_store *s, int k, uint64_t seed, int dim, int rows, int cap)
{
    return s && s->k == k && s->seed == seed && s->dim >= dim && s->rows >= rows && s->cap >= cap;
}

/* Step step's signs (±1) and chunk rotations, both sides, from (seed, step). */
static void sketch_draw(struct flow_sketch_store *s, int step)
{
    if (s->drawn == step) return;
    s->drawn = step;
    struct tg_rng rng;
    tg_rng_seed(&rng, s->seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(step + 1)));
    for (int side = 0; side < 2; side++) {
        for (int i = 0; i < s->dim; i += 64) {
            uint64_t bits = tg_rng_next(&rng);
            for (int j = i; j < s->dim && j < i + 64; j++, bits >>= 1) {
                int x = 1 - 2 * (int)(bits & 1);
                if (s->dt == TG_F64) ((double *)s->sign[side])[j] = x;
                else ((float *)s->sign[side])[j] = (float)x;
            }
        }
        for (int i = 0; i < (s->dim + s->k - 1) / s->k; i++)
            s->rot[side][i] = (int)tg_rng_below(&rng, (uint32_t)s->k);
    }
}

const void *flow_sketch_get(struct flow_sketch_store *s, int side, const void *p, int n, int m, int step,
                            double **cs)
{
    uint64_t h = ((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ULL) >> 32 ^ (uint64_t)side;
    int i = (int)(h & (uint64_t)s->hmask);
    for (; s->hash[i] >= 0; i = (i + 1) & s->hmask) {
        struct flow_sketch_entry *e = &s->e[s->hash[i]];
        if (e->p == p && e->side == side && e->n == n && e->m == m) {
            if (cs) *cs = &e->cs;
            return e->y;
        }
    }
    if (s->n == s->cap || n > s->dim || m > s->rows) return NULL;
    struct flow_sketch_entry *e = &s->e[s->n];
    *e = (struct flow_sketch_entry){p, n, m, side, s->pool + (size_t)s->n * s->ybytes, -1.0};
    s->hash[i] = s->n++;
    sketch_draw(s, step);
    flow_sketch(s->dt, m, n, s->k, p, s->sign[side], s->rot[side], e->y, s->tmp);
    if (cs) *cs = &e->cs;
    return e->y;
}

double flow_sketch_pair(struct flow_sketch_store *s, const void *y, const void *z, int m)
{
    return flow_sketch_dot(s->dt, m, s->k, y, z, s->tmp);
}
