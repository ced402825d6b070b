/* fastmath.h — float32 exp, sigmoid and tanh written so the compiler vectorises the loops that
 * call them (no libm calls, no branches). float64 keeps libm: gradient checks want its last bit,
 * training runs in float32 and wants speed (libm's scalar tanh was ~10% of an LSTM step).
 *
 * exp(x) = 2ⁿ · e^r with n = round(x / ln 2), r = x − n·ln 2 (ln 2 split in a high part exact
 * in float and a low correction, Cody–Waite), |r| ≤ ln2/2, and e^r by its degree-7 Taylor
 * polynomial in Horner form: the remainder r⁸/8! ≤ 6e-9 is below float's half-ulp, so the
 * error is the few roundings of Horner (measured ≤ 2 ulp over [−87, 88]). 2ⁿ is built in the
 * exponent bits; x is clamped so n stays in the normal range, and the true result (∞; 0
 * below FLT_MIN, subnormals being flushed; NaN) is selected afterwards for the inputs the clamp moved.
 *
 * tanh(x) for |x| < 0.625: x + x³·q(x²), q a degree-4 polynomial fitted for minimum relative
 * error (|error| ≤ 8e-8 ≈ 0.7 ulp in float); above: 1 − 2/(e^{2|x|} + 1) with the sign
 * restored, where cancellation is mild (result ≥ 0.55). Clamped at |x| = 9.1, where tanh
 * rounds to 1 in float (at 9 it is still 1 − 2⁻²⁴).
 * σ(x) = 1 / (1 + e^{−x}), with −x clamped so e^{−x} stays finite (σ → 0 for x ≪ 0). */
#ifndef TG_FASTMATH_H
#define TG_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float tg_fast_expf(float x)
{
    /* Clamp first, with comparisons a NaN fails (so NaN becomes −87): the conversion to int
     * below must never see NaN or a value out of range (undefined behaviour). The true result
     * for the inputs clamped away is restored by the selects at the end. */
    float xc = x > -87.33f ? x : -87.33f;
    xc = xc < 88.0f ? xc : 88.0f;
    /* round to nearest by the 1.5·2²³ trick: exact for |x/ln2| < 2²², and vectorises */
    float fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - fn * 0.693359375f;     /* ln 2 high part: 8 significant bits, exact product */
    r = r + fn * 2.12194440e-4f;          /* ln 2 − 0.693359375 (sign folded in) */
    float p = 1.98412698e-4f;             /* 1/7! … 1/2!: e^r = Σ rᵏ/k! */
    p = p * r + 1.38888889e-3f;
    p = p * r + 8.33333333e-3f;
    p = p * r + 4.16666667e-2f;
    p = p * r + 1.66666667e-1f;
    p = p * r + 0.5f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)fn + 127) * (1 << 23); /* fn ∈ [−126, 127]: a normal exponent */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = p * scale;
    e = x > 88.72283f ? INFINITY : e; /* past FLT_MAX's log: overflow, as expf */
    e = x < -87.33f ? 0.0f : e;       /* below FLT_MIN's log: 0 (subnormals flushed) */
    return x == x ? e : x;            /* NaN in, NaN out */
}

static inline float tg_fast_sigmoidf(float x)
{
    return 1.0f / (1.0f + tg_fast_expf(-x));
}

static inline float tg_fast_tanhf(float x)
{
    float a = x < 0 ? -x : x;
    a = a > 9.1f ? 9.1f : a;
    float u = a * a;
    float q = -0.005716315f;
    q = q * u + 0.020649942f;
    q = q * u - 0.053743303f;
    q = q * u + 0.133314893f;
    q = q * u - 0.333332837f;
    float small = a + a * u * q;
    float large = 1.0f - 2.0f / (tg_fast_expf(2.0f * a) + 1.0f);
    float y = a < 0.625f ? small : large;
    return x < 0 ? -y : y;
}

/* softplus(x) = ln(1 + eˣ) = max(x, 0) + ln(1 + e^{−|x|}): no overflow for large x, and the
 * small tail e^{x} for x ≪ 0 is kept by log1p. */
static inline float tg_softplusf(float v) { return (v > 0 ? v : 0) + log1pf(tg_fast_expf(-fabsf(v))); }
static inline double tg_softplus_f64(double v) { return (v > 0 ? v : 0) + log1p(exp(-fabs(v))); }

/* float64 σ without overflow: for x < 0, e^{x} / (1 + e^{x}) never forms e^{+big}. */
static inline double tg_sigmoid_f64(double v)
{
    if (v >= 0) return 1 / (1 + exp(-v));
    double e = exp(v);
    return e / (1 + e);
}

#endif
