/* flow_kern.c — the arithmetic of the per-step ledger: B×B Gram matrices of row blocks and
 * the reductions read from them (flow_kern.h).
 *
 * The Gram matrices are BLAS syrk. Two hand-written ones were measured against it at the
 * ledger's shapes: the block transposed into a panel and G built as Σ_k a_k a_kᵀ in a 4×32
 * register tile (0.6–0.9× syrk's speed), and 4×4 tiles of row dot products reduced by a
 * shuffle tree (1.1× at 32×32×128, 1.4× at 32×32×512, 0.9× at 64×64×64); neither is here.
 *
 * The reductions accumulate in double, in 8 independent lanes, so the compiler vectorises them
 * without reassociating a single sum (a scalar double sum is latency-bound: one add per 4
 * cycles, which made ‖∂L/∂h_t‖ and its split a third of the ledger's time). */
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
