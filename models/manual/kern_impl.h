/*
 * kern_impl.h — per-element-type helpers shared by the oracles. A template: include it with
 * TG_REAL_F64 defined as 0 (float) or 1 (double); it (re)defines
 *   REAL     the element type
 *   SFX(n)   n with the suffix _f32 / _f64
 *   GEMM     cblas_sgemm / cblas_dgemm
 *   VR, VL   a vector of VL REALs (GCC/Clang vector extension) for the elementwise gate math
 * and static helpers named through SFX; then the includer includes its cell template.
 * No include guard on purpose: it is included once per type.
 *
 * Why explicit vectors: the gate loops are dominated by exp and tanh. libm's are scalar
 * calls — at H ≤ 256 they cost more than the GEMMs — and a branch-free scalar version does
 * not get auto-vectorized either (GCC will not if-convert its clamps under the default
 * -ftrapping-math). Written on vectors, one code path serves every H: a row's last partial
 * vector is loaded zero-padded and stored partially, so the tail gets the very same
 * arithmetic as the body.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cblas.h>

#include "manual_impl.h"
#include "tapegrad_blas.h"

#undef REAL
#undef SFX
#undef GEMM
#undef GEMM_DT
#undef VR
#undef VI
#undef VL
#if defined(__x86_64__) || defined(__AVX__)
#define TG_MANUAL_VBYTES 32  /* two SSE registers per vector, or one AVX register */
#else
#define TG_MANUAL_VBYTES 16
#endif
/* The elementwise kernels are also compiled for x86-64-v3 (AVX2) and picked at load time, as
 * the build targets baseline x86-64. -ffp-contract=off (ISO C) keeps both clones' arithmetic
 * identical, so the results do not depend on which one runs. Vectors are passed by pointer:
 * passing 32-byte vectors by value would have a different ABI in the two clones. */
#undef TG_MANUAL_CLONES
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX2__) &&  \
    defined(__linux__)
#define TG_MANUAL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TG_MANUAL_CLONES
#endif
#if TG_REAL_F64
#define REAL double
#define SFX(n) n##_f64
#define GEMM_DT TG_F64
#define VR tg_manual_vd
#define VI tg_manual_vdi
#else
#define REAL float
#define SFX(n) n##_f32
#define GEMM_DT TG_F32
#define VR tg_manual_vf
#define VI tg_manual_vfi
#endif
#define VL ((int)(TG_MANUAL_VBYTES / sizeof(REAL)))
/* GEMM in CBLAS's argument order (row-major, α = 1 everywhere here), through the engine's
 * tg_gemm: the same OpenBLAS call, split over OpenMP threads the same way as for autodiff, so
 * the comparison measures the BPTT code and not two ways of threading OpenBLAS. */
#undef GEMM
#define GEMM(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)                     \
    ((void)sizeof(char[(alpha) == 1 ? 1 : -1]),                                                \
     tg_gemm(GEMM_DT, (ta) == CblasTrans, (tb) == CblasTrans, m, n, k, a, lda, b, ldb, beta, c, ldc))

#ifndef TG_MANUAL_KERN_ONCE
#define TG_MANUAL_KERN_ONCE
typedef float tg_manual_vf __attribute__((vector_size(TG_MANUAL_VBYTES)));
typedef int32_t tg_manual_vfi __attribute__((vector_size(TG_MANUAL_VBYTES)));
typedef double tg_manual_vd __attribute__((vector_size(TG_MANUAL_VBYTES)));
typedef int64_t tg_manual_vdi __attribute__((vector_size(TG_MANUAL_VBYTES)));

/* m ? a : b lane by lane, m being the all-ones/all-zeros result of a vector comparison.
 * (A macro: a function taking 32-byte vectors by value has a target-dependent ABI.) */
#define TG_MANUAL_SELF(m, a, b)                                                           \
    ((tg_manual_vf)(((m) & (tg_manual_vfi)(a)) | (~(m) & (tg_manual_vfi)(b))))

/*
 * float32 exp, in place: x = n·ln2 + r with n = round(x/ln2) and |r| ≤ ln2/2; e^r from the
 * polynomial of Cephes' expf (≈ 1 ulp), 2^n written into the exponent bits. x is clamped to
 * [−87, 88] so that 2^n stays a normal float (e^{−87} ≈ 1.6e−38 stands in for anything
 * smaller). Rounding adds and subtracts 1.5·2²³, exact without -ffast-math.
 */
static inline void tg_manual_vexpf(tg_manual_vf *v)
{
    const tg_manual_vf z0 = {0};
    tg_manual_vf x = *v;
    x = TG_MANUAL_SELF(x < -87.0f, z0 - 87.0f, x);
    x = TG_MANUAL_SELF(x > 88.0f, z0 + 88.0f, x);
    const tg_manual_vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    tg_manual_vf r = x - n * 0.693359375f;  /* ln2 = 0.693359375 − 2.12194440e−4 */
    r = r + n * 2.12194440e-4f;
    tg_manual_vf p = z0 + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const tg_manual_vfi bits = (__builtin_convertvector(n, tg_manual_vfi) + 127) << 23;
    *v = p * (tg_manual_vf)bits;
}

/* σ(x) = 1 / (1 + e^{−x}); saturates cleanly at both ends. */
static inline void tg_manual_vsigmf(tg_manual_vf *v)
{
    tg_manual_vf e = -*v;
    tg_manual_vexpf(&e);
    *v = 1.0f / (1.0f + e);
}

/* float32 tanh after Cephes' tanhf: x + x³·P(x²) for |x| < 0.625 (no cancellation near 0),
 * else 1 − 2/(e^{2|x|} + 1) with the sign of x. Both are computed (the polynomial on x
 * clamped to ±0.625, so it stays finite) and one is selected per lane. ≈ 2 ulp. */
static inline void tg_manual_vtanhf(tg_manual_vf *v)
{
    const tg_manual_vf x = *v;
    const tg_manual_vfi sign = (tg_manual_vfi)x & (int32_t)0x80000000;
    const tg_manual_vf ax = (tg_manual_vf)((tg_manual_vfi)x & 0x7fffffff);
    tg_manual_vf xs = TG_MANUAL_SELF(x < -0.625f, (tg_manual_vf){0} - 0.625f, x);
    xs = TG_MANUAL_SELF(xs > 0.625f, (tg_manual_vf){0} + 0.625f, xs);
    const tg_manual_vf z = xs * xs;
    tg_manual_vf p = z * -5.70498872745e-3f + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const tg_manual_vf small = p * z * xs + xs;
    tg_manual_vf e = 2.0f * ax;
    tg_manual_vexpf(&e);
    const tg_manual_vf big = 1.0f - 2.0f / (e + 1.0f);  /* ≥ 0: the sign is OR-ed in */
    *v = TG_MANUAL_SELF(ax < 0.625f, small, (tg_manual_vf)((tg_manual_vfi)big | sign));
}

/* float64: libm lane by lane — the f64 oracle must agree with autodiff to ~1e-12, and its
 * speed is not what the benchmarks measure. */
#define TG_MANUAL_LANES(v) ((int)(sizeof *(v) / sizeof (*(v))[0]))
static inline void tg_manual_vexpd(tg_manual_vd *v)
{
    for (int k = 0; k < TG_MANUAL_LANES(v); k++) (*v)[k] = exp((*v)[k]);
}
static inline void tg_manual_vsigmd(tg_manual_vd *v)
{
    for (int k = 0; k < TG_MANUAL_LANES(v); k++) (*v)[k] = 1.0 / (1.0 + exp(-(*v)[k]));
}
static inline void tg_manual_vtanhd(tg_manual_vd *v)
{
    for (int k = 0; k < TG_MANUAL_LANES(v); k++) (*v)[k] = tanh((*v)[k]);
}
#endif /* TG_MANUAL_KERN_ONCE */

#if TG_REAL_F64
#define SFX_VEXP tg_manual_vexpd
#define SFX_VSIGM tg_manual_vsigmd
#define SFX_VTANH tg_manual_vtanhd
#else
#define SFX_VEXP tg_manual_vexpf
#define SFX_VSIGM tg_manual_vsigmf
#define SFX_VTANH tg_manual_vtanhf
#endif
static inline void SFX(vexp)(VR *v) { SFX_VEXP(v); }
static inline void SFX(vsigm)(VR *v) { SFX_VSIGM(v); }
static inline void SFX(vtanh)(VR *v) { SFX_VTANH(v); }
#undef SFX_VEXP
#undef SFX_VSIGM
#undef SFX_VTANH

/* *v = n ≤ VL elements from p; lanes past n are 0. */
static inline void SFX(vload)(VR *v, const REAL *p, int n)
{
    if (n == VL) {
        memcpy(v, p, sizeof *v);
    } else {
        memset(v, 0, sizeof *v);
        memcpy(v, p, (size_t)n * sizeof(REAL));
    }
}

static inline void SFX(vstore)(REAL *p, const VR *v, int n)
{
    memcpy(p, v, n == VL ? sizeof *v : (size_t)n * sizeof(REAL));
}

/* dst = src (B·H elements), or zeros when src is NULL (a zero initial state). */
static inline void SFX(set_state)(REAL *dst, const void *src, size_t n)
{
    if (src)
        memcpy(dst, src, n * sizeof(REAL));
    else
        memset(dst, 0, n * sizeof(REAL));
}

/* Every one of `rows` rows of A (width cols, contiguous) = b1 (+ b2 if given). The input
 * projection GEMM then accumulates onto it with beta = 1, which saves a pass over A. */
static inline void SFX(fill_rows)(REAL *A, size_t rows, int cols, const REAL *b1,
                                  const REAL *b2)
{
    REAL *r0 = A;
    if (b2)
        for (int j = 0; j < cols; j++) r0[j] = b1[j] + b2[j];
    else
        memcpy(r0, b1, (size_t)cols * sizeof(REAL));
    for (size_t r = 1; r < rows; r++) memcpy(A + r * (size_t)cols, r0, (size_t)cols * sizeof(REAL));
}

/* out[j] = Σ_r A[r][j] over `rows` rows of leading dimension lda: the bias gradients, which
 * sum the pre-activation gradients over every step and sequence. Fixed order: deterministic. */
TG_MANUAL_CLONES
static void SFX(colsum)(const REAL *A, size_t rows, int cols, int lda, REAL *out)
{
    memset(out, 0, (size_t)cols * sizeof(REAL));
    for (size_t r = 0; r < rows; r++) {
        const REAL *a = A + r * (size_t)lda;
        for (int j = 0; j < cols; j++) out[j] += a[j];
    }
}
