/* rng.c — xoshiro256** (Blackman & Vigna) seeded by splitmix64, plus the few distributions the
 * project needs. Everything random in tapegrad goes through this so that a seed and the four
 * state words reproduce a run bit for bit. */
#include <math.h>

#include "tapegrad.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void tg_rng_seed(struct tg_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tg_rng_next(struct tg_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double tg_rng_uniform(struct tg_rng *r)
{
    return (double)(tg_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Box–Muller without a cached second value, so the state stays the four words above.
 * u1 is taken from (0, 1] to keep log finite. */
double tg_rng_normal(struct tg_rng *r)
{
    double u1 = 1.0 - tg_rng_uniform(r);
    double u2 = tg_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

/* Lemire's multiply-and-reject: unbiased for every n. [0, 0) is empty: n = 0 gives 0. */
uint32_t tg_rng_below(struct tg_rng *r, uint32_t n)
{
    if (n == 0) return 0;
    uint64_t m = (uint64_t)(uint32_t)(tg_rng_next(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(tg_rng_next(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void tg_tensor_uniform(struct tg_tensor *x, struct tg_rng *r, double lo, double hi)
{
    size_t n = tg_numel(x);
    for (size_t i = 0; i < n; i++) {
        double v = lo + (hi - lo) * tg_rng_uniform(r);
        if (x->dtype == TG_F32) ((float *)x->data)[i] = (float)v;
        else ((double *)x->data)[i] = v;
    }
}

void tg_tensor_normal(struct tg_tensor *x, struct tg_rng *r, double mean, double std)
{
    size_t n = tg_numel(x);
    for (size_t i = 0; i < n; i++) {
        double v = mean + std * tg_rng_normal(r);
        if (x->dtype == TG_F32) ((float *)x->data)[i] = (float)v;
        else ((double *)x->data)[i] = v;
    }
}
