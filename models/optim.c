/*
 * optim.c — SGD, Adagrad, Adam, RMSprop and gradient clipping, as PyTorch 1.13 computes them.
 *
 * The update equations are in tapegrad_optim.h. What this file adds is the order of operations:
 * each kernel below performs the same roundings, in the same order, as the chain of tensor ops
 * in torch/optim/<name>.py (_single_tensor_<name>). The PyTorch ops used there compute, per
 * element,
 *
 *     a.add_(b, alpha=s)            fma(s, b, a)          a + s·b, rounded once
 *     a.mul_(s)                     a·s
 *     a.addcmul_(b, c, value=s)     fma(s·b, c, a)        a + (s·b)·c, s·b rounded first
 *     a.addcdiv_(b, c, value=s)     a + (s·b)/c
 *     a / s, a + s (s a scalar)     a/s, a + s
 *
 * and a Python float meeting a float32 tensor is first rounded to float32, so the scalars that
 * PyTorch derives in Python (1 − β, lr/(1 − β₁ᵗ), √(1 − β₂ᵗ), the decayed lr) are computed here
 * in double and only then rounded to the parameter's type.
 *
 * The fused multiply-adds are what PyTorch's CPU kernels compute on x86-64 with FMA (the
 * vectorised kernels use fmadd and the scalar tails are compiled with contraction), found by
 * comparing torch 1.13 against exact rational arithmetic. With them the results are
 * bit-identical to PyTorch's, float64 and float32, on every fixture of tests/test_optim.c.
 * Writing fma() out also makes the results independent of compiler and flags (fma is correctly
 * rounded by definition). Cost: on x86-64 without -mfma, fma() is a libm call (hardware FMA
 * through glibc's ifunc, a few ns); an optimizer step is a small part of a training step.
 *
 * Each kernel is written once as a macro over the element type and expanded for float and
 * double: the arithmetic must happen in the parameter's own type (a float32 run computed in
 * double would be more accurate and no longer PyTorch's). <tgmath.h> makes sqrt pick sqrtf
 * for float.
 */
#include "tapegrad_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

/* Never fuse a·b + c behind our back: where PyTorch fuses, fma() says so; everywhere else it
 * rounds the product first (e.g. RMSprop's μ·b + g/a, min-char-rnn's mem + g·g), and a build
 * with -ffp-contract=fast -march=native must not change that. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ------------------------------------------------------------------ state slots */

/* Every kind of state tensor any optimizer keeps, under PyTorch's names for them. */
enum slot { S_MOMENTUM, S_SUM, S_EXP_AVG, S_EXP_AVG_SQ, S_MAX_EXP_AVG_SQ, S_SQUARE_AVG,
            S_GRAD_AVG, S_RMS_MOMENTUM, NSLOT };
static const char *const slot_names[NSLOT] = {
    "momentum_buffer", "sum", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg",
    "grad_avg", "momentum_buffer",
};

struct tg_optim {
    struct tg_optim_config cfg;
    int n;                       /* parameters */
    struct tg_tensor **params;   /* not owned */
    int nslots;                  /* state tensors per parameter */
    int slot_at[NSLOT];          /* slot → position among a parameter's state tensors, or -1 */
    struct tg_tensor **state;    /* n·nslots, parameter-major */
    char **names;                /* the state tensors' names (tensors do not copy names) */
    long steps;
};

/* The state tensor of parameter i for slot s (its data), or NULL if the kind keeps none. */
static void *slot_data(const struct tg_optim *o, int i, enum slot s)
{
    int k = o->slot_at[s];
    return k < 0 ? NULL : o->state[(size_t)i * (size_t)o->nslots + (size_t)k]->data;
}

/* ------------------------------------------------------------------ kernels */

/* Without -mfma, every fma() below would be a libm call (~10× slower than the arithmetic
 * around it). On x86-64 with GCC, each kernel is therefore compiled twice, once for CPUs with
 * FMA (fma() becomes one instruction and the loop vectorises) and once for the rest, and the
 * loader picks one (target_clones, an ifunc). The results are the same bits either way. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define TG_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define TG_FMA_CLONES
#endif

/* Per-step scalars, computed in double as PyTorch does in Python. */
struct step_scalars {
    double lr, wd;      /* lr here is the effective one: Adagrad's clr, Adam's lr/(1−β₁ᵗ) */
    double mom, keep;   /* momentum μ and (1 − dampening) */
    double b1, omb1, b2, omb2, bc2_sqrt, eps;
    int first, nesterov, amsgrad, centered, minchar;
};

#define TG_OPTIM_KERNELS(real, sfx)                                                               \
    /* SGD: d = g + λp; b = d (first step) or μb + (1−τ)d; d = d + μb or b; p = p − lr·d. */      \
    TG_FMA_CLONES static void sgd_##sfx(real *restrict p, const real *restrict g,                 \
                                        real *restrict buf, size_t len,                           \
                                        const struct step_scalars *s)                             \
    {                                                                                             \
        const real wd = (real)s->wd, mom = (real)s->mom, keep = (real)s->keep;                    \
        const real nlr = (real)(-s->lr);                                                          \
        const int decay = s->wd != 0, first = s->first, nesterov = s->nesterov;                   \
        for (size_t j = 0; j < len; j++) {                                                        \
            real d = g[j];                                                                        \
            if (decay) d = fma(wd, p[j], d);                                                      \
            if (buf) {                                                                            \
                buf[j] = first ? d : fma(keep, d, buf[j] * mom);                                  \
                d = nesterov ? fma(mom, buf[j], d) : buf[j];                                      \
            }                                                                                     \
            p[j] = fma(nlr, d, p[j]);                                                             \
        }                                                                                         \
    }                                                                                             \
    /* Adagrad: d = g + λp; s = s + d²; p = p − clr·d/(√s + ε) or, min-char, /√(s + ε). */        \
    TG_FMA_CLONES static void adagrad_##sfx(real *restrict p, const real *restrict g,             \
                                            real *restrict sum, size_t len,                       \
                                            const struct step_scalars *s)                         \
    {                                                                                             \
        const real wd = (real)s->wd, nclr = (real)(-s->lr), eps = (real)s->eps;                   \
        const int decay = s->wd != 0, minchar = s->minchar;                                       \
        for (size_t j = 0; j < len; j++) {                                                        \
            real d = g[j];                                                                        \
            if (decay) d = fma(wd, p[j], d);                                                      \
            if (minchar) { /* numpy: mem += g*g; p += -lr*g/np.sqrt(mem + eps) */                 \
                sum[j] = sum[j] + d * d;                                                          \
                p[j] = p[j] + nclr * d / sqrt(sum[j] + eps);                                      \
            } else {                                                                              \
                sum[j] = fma(d, d, sum[j]);                                                       \
                p[j] = p[j] + nclr * d / (sqrt(sum[j]) + eps);                                    \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
    /* Adam: m = β₁m + (1−β₁)d; v = β₂v + ((1−β₂)d)d; v̂ = max(v̂, v) (amsgrad);                  \
     * p = p + (−lr/(1−β₁ᵗ))·m / (√v̂ / √(1−β₂ᵗ) + ε). */                                         \
    TG_FMA_CLONES static void adam_##sfx(real *restrict p, const real *restrict g,                \
                                         real *restrict m, real *restrict v,                      \
                                         real *restrict vmax, size_t len,                         \
                                         const struct step_scalars *s)                            \
    {                                                                                             \
        const real wd = (real)s->wd, b1 = (real)s->b1, omb1 = (real)s->omb1;                      \
        const real b2 = (real)s->b2, omb2 = (real)s->omb2;                                        \
        const real bc2_sqrt = (real)s->bc2_sqrt, eps = (real)s->eps;                              \
        const real nstep = (real)(-s->lr);                                                        \
        const int decay = s->wd != 0;                                                             \
        for (size_t j = 0; j < len; j++) {                                                        \
            real d = g[j];                                                                        \
            if (decay) d = fma(wd, p[j], d);                                                      \
            m[j] = fma(omb1, d, m[j] * b1);                                                       \
            v[j] = fma(omb2 * d, d, v[j] * b2);                                                   \
            real vh = v[j];                                                                       \
            if (vmax) {                                                                           \
                if (!(vmax[j] >= vh)) vmax[j] = vh; /* torch.maximum: NaN wins */                 \
                vh = vmax[j];                                                                     \
            }                                                                                     \
            real denom = sqrt(vh) / bc2_sqrt + eps;                                               \
            p[j] = p[j] + nstep * m[j] / denom;                                                   \
        }                                                                                         \
    }                                                                                             \
    /* RMSprop: v = αv + ((1−α)d)d; ḡ = αḡ + (1−α)d; a = √(v − ḡ²) + ε (or √v + ε);               \
     * b = μb + d/a, p = p − lr·b (μ > 0) or p = p − lr·d/a. */                                   \
    TG_FMA_CLONES static void rmsprop_##sfx(real *restrict p, const real *restrict g,             \
                                            real *restrict v, real *restrict gavg,                \
                                            real *restrict buf, size_t len,                       \
                                            const struct step_scalars *s)                         \
    {                                                                                             \
        const real wd = (real)s->wd, a = (real)s->b2, oma = (real)s->omb2;                        \
        const real mom = (real)s->mom, eps = (real)s->eps, nlr = (real)(-s->lr);                  \
        const int decay = s->wd != 0;                                                             \
        for (size_t j = 0; j < len; j++) {                                                        \
            real d = g[j];                                                                        \
            if (decay) d = fma(wd, p[j], d);                                                      \
            v[j] = fma(oma * d, d, v[j] * a);                                                     \
            real avg;                                                                             \
            if (gavg) {                                                                           \
                gavg[j] = fma(oma, d, gavg[j] * a);                                               \
                avg = sqrt(fma(-gavg[j], gavg[j], v[j])) + eps;                                   \
            } else {                                                                              \
                avg = sqrt(v[j]) + eps;                                                           \
            }                                                                                     \
            if (buf) {                                                                            \
                buf[j] = buf[j] * mom + d / avg;                                                  \
                p[j] = fma(nlr, buf[j], p[j]);                                                    \
            } else {                                                                              \
                p[j] = p[j] + nlr * d / avg;                                                      \
            }                                                                                     \
        }                                                                                         \
    }

TG_OPTIM_KERNELS(float, f32)
TG_OPTIM_KERNELS(double, f64)

/* ------------------------------------------------------------------ configuration */

void tg_optim_defaults(enum tg_optim_kind kind, struct tg_optim_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    switch (kind) {
    case TG_OPTIM_SGD: /* lr=required, momentum=0, dampening=0, weight_decay=0, nesterov=False */
        cfg->lr = 1e-2;
        break;
    case TG_OPTIM_ADAGRAD: /* lr=1e-2, lr_decay=0, weight_decay=0, initial_acc..=0, eps=1e-10 */
        cfg->lr = 1e-2;
        cfg->eps = 1e-10;
        break;
    case TG_OPTIM_ADAM: /* lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False */
        cfg->lr = 1e-3;
        cfg->beta1 = 0.9;
        cfg->beta2 = 0.999;
        cfg->eps = 1e-8;
        break;
    case TG_OPTIM_RMSPROP: /* lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0 */
        cfg->lr = 1e-2;
        cfg->alpha = 0.99;
        cfg->eps = 1e-8;
        break;
    }
}

static const char *const kind_names[] = {"sgd", "adagrad", "adam", "rmsprop"};

const char *tg_optim_kind_name(enum tg_optim_kind kind)
{
    return (unsigned)kind < 4 ? kind_names[kind] : "unknown";
}

enum tg_status tg_optim_parse_kind(const char *name, enum tg_optim_kind *out)
{
    for (int k = 0; name && k < 4; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            *out = (enum tg_optim_kind)k;
            return TG_OK;
        }
    }
    return tg_error(TG_ERR_VALUE, "tg_optim_parse_kind: unknown optimizer '%s' (choices: sgd, "
                    "adagrad, adam, rmsprop)", name ? name : "(null)");
}

enum tg_status tg_optim_config_from_name(const char *name, struct tg_optim_config *cfg)
{
    if (name && strcmp(name, "adagrad-minchar") == 0) {
        /* min-char-rnn.py: learning_rate = 1e-1; param += -lr·dparam/np.sqrt(mem + 1e-8) */
        tg_optim_defaults(TG_OPTIM_ADAGRAD, cfg);
        cfg->lr = 1e-1;
        cfg->eps = 1e-8;
        cfg->adagrad_minchar = 1;
        return TG_OK;
    }
    enum tg_optim_kind kind = TG_OPTIM_SGD;
    if (!name || tg_optim_parse_kind(name, &kind) != TG_OK)
        return tg_error(TG_ERR_VALUE, "tg_optim_config_from_name: unknown optimizer '%s' "
                        "(choices: sgd, adagrad, adagrad-minchar, adam, rmsprop)",
                        name ? name : "(null)");
    tg_optim_defaults(kind, cfg);
    return TG_OK;
}

/* PyTorch's constructor checks ("Invalid learning rate: ..."), written so NaN fails too. */
static enum tg_status check_config(const struct tg_optim_config *c)
{
    const char *fn = "tg_optim_new";
    const char *kn = tg_optim_kind_name(c->kind);
    if ((unsigned)c->kind >= 4)
        return tg_error(TG_ERR_VALUE, "%s: unknown optimizer kind %d", fn, (int)c->kind);
    if (!(c->lr >= 0) || isinf(c->lr))
        return tg_error(TG_ERR_VALUE, "%s: invalid learning rate %g for %s (must be >= 0 and "
                        "finite)", fn, c->lr, kn);
    if (!(c->weight_decay >= 0))
        return tg_error(TG_ERR_VALUE, "%s: invalid weight_decay %g for %s (must be >= 0)", fn,
                        c->weight_decay, kn);
    if (c->kind != TG_OPTIM_SGD && !(c->eps >= 0))
        return tg_error(TG_ERR_VALUE, "%s: invalid eps %g for %s (must be >= 0)", fn, c->eps,
                        kn);
    switch (c->kind) {
    case TG_OPTIM_SGD:
        if (!(c->momentum >= 0))
            return tg_error(TG_ERR_VALUE, "%s: invalid momentum %g for sgd (must be >= 0)", fn,
                            c->momentum);
        if (isnan(c->dampening))
            return tg_error(TG_ERR_VALUE, "%s: invalid dampening NaN for sgd", fn);
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            return tg_error(TG_ERR_VALUE, "%s: Nesterov momentum requires a momentum > 0 and "
                            "zero dampening (got momentum %g, dampening %g)", fn, c->momentum,
                            c->dampening);
        break;
    case TG_OPTIM_ADAGRAD:
        if (!(c->lr_decay >= 0))
            return tg_error(TG_ERR_VALUE, "%s: invalid lr_decay %g for adagrad (must be >= 0)",
                            fn, c->lr_decay);
        if (!(c->initial_accumulator_value >= 0))
            return tg_error(TG_ERR_VALUE, "%s: invalid initial_accumulator_value %g for adagrad "
                            "(must be >= 0)", fn, c->initial_accumulator_value);
        break;
    case TG_OPTIM_ADAM:
        if (!(c->beta1 >= 0 && c->beta1 < 1))
            return tg_error(TG_ERR_VALUE, "%s: invalid beta1 %g for adam (must be in [0, 1))",
                            fn, c->beta1);
        if (!(c->beta2 >= 0 && c->beta2 < 1))
            return tg_error(TG_ERR_VALUE, "%s: invalid beta2 %g for adam (must be in [0, 1))",
                            fn, c->beta2);
        break;
    case TG_OPTIM_RMSPROP:
        if (!(c->momentum >= 0))
            return tg_error(TG_ERR_VALUE, "%s: invalid momentum %g for rmsprop (must be >= 0)",
                            fn, c->momentum);
        if (!(c->alpha >= 0))
            return tg_error(TG_ERR_VALUE, "%s: invalid alpha %g for rmsprop (must be >= 0)", fn,
                            c->alpha);
        break;
    }
    return TG_OK;
}

/* Which state each kind keeps, given its configuration (PyTorch creates the same). */
static int choose_slots(const struct tg_optim_config *c, int slot_at[NSLOT])
{
    int n = 0;
    for (int s = 0; s < NSLOT; s++) slot_at[s] = -1;
    switch (c->kind) {
    case TG_OPTIM_SGD:
        if (c->momentum != 0) slot_at[S_MOMENTUM] = n++;
        break;
    case TG_OPTIM_ADAGRAD:
        slot_at[S_SUM] = n++;
        break;
    case TG_OPTIM_ADAM:
        slot_at[S_EXP_AVG] = n++;
        slot_at[S_EXP_AVG_SQ] = n++;
        if (c->amsgrad) slot_at[S_MAX_EXP_AVG_SQ] = n++;
        break;
    case TG_OPTIM_RMSPROP:
        slot_at[S_SQUARE_AVG] = n++;
        if (c->centered) slot_at[S_GRAD_AVG] = n++;
        if (c->momentum > 0) slot_at[S_RMS_MOMENTUM] = n++;
        break;
    }
    return n;
}

/* ------------------------------------------------------------------ life cycle */

void tg_optim_free(struct tg_optim *o)
{
    if (!o) return;
    size_t ns = (size_t)o->n * (size_t)o->nslots;
    for (size_t k = 0; k < ns && o->state; k++) tg_tensor_free(o->state[k]);
    for (size_t k = 0; k < ns && o->names; k++) free(o->names[k]);
    free(o->state);
    free(o->names);
    free(o->params);
    free(o);
}

enum tg_status tg_optim_new(const struct tg_optim_config *cfg, struct tg_tensor *const *params,
                            int n, struct tg_optim **out)
{
    const char *fn = "tg_optim_new";
    if (!out) return tg_error(TG_ERR_VALUE, "%s: out is NULL", fn);
    *out = NULL;
    if (!cfg) return tg_error(TG_ERR_VALUE, "%s: cfg is NULL", fn);
    if (n <= 0 || !params)
        return tg_error(TG_ERR_VALUE, "%s: empty parameter list (n = %d)", fn, n);
    enum tg_status st = check_config(cfg);
    if (st != TG_OK) return st;
    for (int i = 0; i < n; i++) {
        const struct tg_tensor *p = params[i];
        if (!p) return tg_error(TG_ERR_VALUE, "%s: parameter %d is NULL", fn, i);
        const char *nm = p->name ? p->name : "(unnamed)";
        if (p->dtype != TG_F32 && p->dtype != TG_F64)
            return tg_error(TG_ERR_DTYPE, "%s: parameter %d '%s' has an unknown dtype %d", fn,
                            i, nm, (int)p->dtype);
        if (p->rows <= 0 || p->cols <= 0 || !p->data)
            return tg_error(TG_ERR_VALUE, "%s: parameter %d '%s' has no data (%dx%d)", fn, i, nm,
                            p->rows, p->cols);
        if (!p->grad)
            return tg_error(TG_ERR_STATE, "%s: parameter %d '%s' has no gradient buffer", fn, i,
                            nm);
        for (int k = 0; k < i; k++)
            if (params[k] == p)
                return tg_error(TG_ERR_VALUE, "%s: parameter '%s' appears twice (positions %d "
                                "and %d)", fn, nm, k, i);
    }

    struct tg_optim *o = calloc(1, sizeof *o);
    if (!o) return tg_error(TG_ERR_NOMEM, "%s: out of memory", fn);
    o->cfg = *cfg;
    o->n = n;
    o->nslots = choose_slots(cfg, o->slot_at);
    size_t ns = (size_t)n * (size_t)o->nslots;
    o->params = malloc((size_t)n * sizeof *o->params);
    o->state = calloc(ns ? ns : 1, sizeof *o->state);
    o->names = calloc(ns ? ns : 1, sizeof *o->names);
    if (!o->params || !o->state || !o->names) goto nomem;
    memcpy(o->params, params, (size_t)n * sizeof *o->params);

    for (int i = 0; i < n; i++) {
        const struct tg_tensor *p = params[i];
        char fallback[32];
        snprintf(fallback, sizeof fallback, "param%d", i);
        const char *pname = p->name ? p->name : fallback;
        for (int s = 0; s < NSLOT; s++) {
            if (o->slot_at[s] < 0) continue;
            size_t k = (size_t)i * (size_t)o->nslots + (size_t)o->slot_at[s];
            size_t len = strlen("optim.") + strlen(slot_names[s]) + 1 + strlen(pname) + 1;
            o->names[k] = malloc(len);
            o->state[k] = tg_tensor_new_heap(p->rows, p->cols, p->dtype);
            if (!o->names[k] || !o->state[k]) goto nomem;
            snprintf(o->names[k], len, "optim.%s.%s", slot_names[s], pname);
            tg_tensor_set_name(o->state[k], o->names[k]);
            if (s == S_SUM && cfg->initial_accumulator_value != 0)
                tg_tensor_fill(o->state[k], cfg->initial_accumulator_value);
        }
    }
    *out = o;
    return TG_OK;
nomem:
    tg_optim_free(o);
    return tg_error(TG_ERR_NOMEM, "%s: out of memory allocating optimizer state for %d "
                    "parameters", fn, n);
}

/* ------------------------------------------------------------------ step */

enum tg_status tg_optim_step(struct tg_optim *o)
{
    if (!o) return tg_error(TG_ERR_VALUE, "tg_optim_step: optimizer is NULL");
    const struct tg_optim_config *c = &o->cfg;
    for (int i = 0; i < o->n; i++)
        if (!o->params[i]->grad)
            return tg_error(TG_ERR_STATE, "tg_optim_step: parameter %d '%s' has no gradient "
                            "buffer", i, o->params[i]->name ? o->params[i]->name : "(unnamed)");

    o->steps++; /* PyTorch: step_t += 1 before the update, so the first step is t = 1 */
    const double t = (double)o->steps;
    struct step_scalars s = {0};
    s.lr = c->lr;
    s.wd = c->weight_decay;
    s.eps = c->eps;
    switch (c->kind) {
    case TG_OPTIM_SGD:
        s.mom = c->momentum;
        s.keep = 1 - c->dampening;
        s.first = o->steps == 1; /* PyTorch: no buffer yet ⇒ buf = clone(d_p), no dampening */
        s.nesterov = c->nesterov;
        break;
    case TG_OPTIM_ADAGRAD:
        s.lr = c->lr / (1 + (t - 1) * c->lr_decay); /* clr */
        s.minchar = c->adagrad_minchar;
        break;
    case TG_OPTIM_ADAM:
        s.b1 = c->beta1;
        s.omb1 = 1 - c->beta1;
        s.b2 = c->beta2;
        s.omb2 = 1 - c->beta2;
        s.lr = c->lr / (1 - pow(c->beta1, t));     /* step_size = lr / bias_correction1 */
        s.bc2_sqrt = sqrt(1 - pow(c->beta2, t));   /* math.sqrt(bias_correction2) */
        s.amsgrad = c->amsgrad;
        break;
    case TG_OPTIM_RMSPROP: /* α and 1 − α ride in b2/omb2 */
        s.b2 = c->alpha;
        s.omb2 = 1 - c->alpha;
        s.mom = c->momentum;
        s.centered = c->centered;
        break;
    }

    for (int i = 0; i < o->n; i++) {
        struct tg_tensor *p = o->params[i];
        size_t len = tg_numel(p);
        int f64 = p->dtype == TG_F64;
        switch (c->kind) {
        case TG_OPTIM_SGD:
            if (f64) sgd_f64(p->data, p->grad, slot_data(o, i, S_MOMENTUM), len, &s);
            else sgd_f32(p->data, p->grad, slot_data(o, i, S_MOMENTUM), len, &s);
            break;
        case TG_OPTIM_ADAGRAD:
            if (f64) adagrad_f64(p->data, p->grad, slot_data(o, i, S_SUM), len, &s);
            else adagrad_f32(p->data, p->grad, slot_data(o, i, S_SUM), len, &s);
            break;
        case TG_OPTIM_ADAM:
            if (f64)
                adam_f64(p->data, p->grad, slot_data(o, i, S_EXP_AVG),
                         slot_data(o, i, S_EXP_AVG_SQ), slot_data(o, i, S_MAX_EXP_AVG_SQ), len,
                         &s);
            else
                adam_f32(p->data, p->grad, slot_data(o, i, S_EXP_AVG),
                         slot_data(o, i, S_EXP_AVG_SQ), slot_data(o, i, S_MAX_EXP_AVG_SQ), len,
                         &s);
            break;
        case TG_OPTIM_RMSPROP:
            if (f64)
                rmsprop_f64(p->data, p->grad, slot_data(o, i, S_SQUARE_AVG),
                            slot_data(o, i, S_GRAD_AVG), slot_data(o, i, S_RMS_MOMENTUM), len,
                            &s);
            else
                rmsprop_f32(p->data, p->grad, slot_data(o, i, S_SQUARE_AVG),
                            slot_data(o, i, S_GRAD_AVG), slot_data(o, i, S_RMS_MOMENTUM), len,
                            &s);
            break;
        }
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ accessors */

const struct tg_optim_config *tg_optim_get_config(const struct tg_optim *o)
{
    return o ? &o->cfg : NULL;
}

enum tg_status tg_optim_set_lr(struct tg_optim *o, double lr)
{
    if (!o) return tg_error(TG_ERR_VALUE, "tg_optim_set_lr: optimizer is NULL");
    if (!(lr >= 0) || isinf(lr))
        return tg_error(TG_ERR_VALUE, "tg_optim_set_lr: invalid learning rate %g (must be >= 0 "
                        "and finite)", lr);
    o->cfg.lr = lr;
    return TG_OK;
}

void tg_optim_zero_grad(struct tg_optim *o)
{
    for (int i = 0; o && i < o->n; i++) tg_tensor_zero_grad(o->params[i]);
}

int tg_optim_state_count(const struct tg_optim *o)
{
    return o ? o->n * o->nslots : 0;
}

struct tg_tensor *tg_optim_state(const struct tg_optim *o, int i)
{
    if (!o || i < 0 || i >= o->n * o->nslots) return NULL;
    return o->state[i];
}

struct tg_tensor *tg_optim_find_state(const struct tg_optim *o, const char *name)
{
    for (int k = 0; o && name && k < o->n * o->nslots; k++)
        if (strcmp(o->names[k], name) == 0) return o->state[k];
    return NULL;
}

long tg_optim_steps(const struct tg_optim *o)
{
    return o ? o->steps : 0;
}

enum tg_status tg_optim_set_steps(struct tg_optim *o, long steps)
{
    if (!o) return tg_error(TG_ERR_VALUE, "tg_optim_set_steps: optimizer is NULL");
    if (steps < 0)
        return tg_error(TG_ERR_VALUE, "tg_optim_set_steps: negative step count %ld", steps);
    o->steps = steps;
    return TG_OK;
}

/* ------------------------------------------------------------------ clipping */

double tg_clip_grad_norm(struct tg_tensor *const *params, int n, double max_norm)
{
    if (!(max_norm >= 0)) {
        tg_error(TG_ERR_VALUE, "tg_clip_grad_norm: invalid max_norm %g (must be >= 0)",
                 max_norm);
        return -1;
    }
    if (n < 0 || (n > 0 && !params)) {
        tg_error(TG_ERR_VALUE, "tg_clip_grad_norm: bad parameter list (n = %d)", n);
        return -1;
    }
    /* PyTorch: total = ‖(‖g₁‖, ‖g₂‖, …)‖, each norm a sum of squares under a root. */
    double total_sq = 0;
    for (int i = 0; i < n; i++) {
        const struct tg_tensor *p = params[i];
        if (!p || !p->grad) continue;
        size_t len = tg_numel(p);
        double sq = 0;
        if (p->dtype == TG_F64) {
            const double *g = p->grad;
            for (size_t j = 0; j < len; j++) sq += g[j] * g[j];
        } else {
            const float *g = p->grad;
            for (size_t j = 0; j < len; j++) sq += (double)g[j] * (double)g[j];
        }
        double norm = sqrt(sq);
        total_sq += norm * norm;
    }
    double total = sqrt(total_sq);
    if (!isfinite(total)) return total; /* the caller decides; see tapegrad_optim.h */
    double coef = max_norm / (total + 1e-6);
    if (coef >= 1) return total;
    for (int i = 0; i < n; i++) {
        struct tg_tensor *p = params[i];
        if (!p || !p->grad) continue;
        size_t len = tg_numel(p);
        if (p->dtype == TG_F64) {
            double *g = p->grad;
            for (size_t j = 0; j < len; j++) g[j] *= coef;
        } else {
            float *g = p->grad;
            const float cf = (float)coef;
            for (size_t j = 0; j < len; j++) g[j] *= cf;
        }
    }
    return total;
}

enum tg_status tg_clip_grad_value(struct tg_tensor *const *params, int n, double clip)
{
    if (!(clip >= 0))
        return tg_error(TG_ERR_VALUE, "tg_clip_grad_value: invalid clip value %g (must be >= 0)",
                        clip);
    if (n < 0 || (n > 0 && !params))
        return tg_error(TG_ERR_VALUE, "tg_clip_grad_value: bad parameter list (n = %d)", n);
    for (int i = 0; i < n; i++) {
        struct tg_tensor *p = params[i];
        if (!p || !p->grad) continue;
        size_t len = tg_numel(p);
        if (p->dtype == TG_F64) {
            /* selects, not branches, so the loop vectorises; NaN fails both and stays NaN */
            double *g = p->grad;
            for (size_t j = 0; j < len; j++) {
                double v = g[j];
                v = v > clip ? clip : v;
                g[j] = v < -clip ? -clip : v;
            }
        } else {
            float *g = p->grad;
            const float c = (float)clip;
            for (size_t j = 0; j < len; j++) {
                float v = g[j];
                v = v > c ? c : v;
                g[j] = v < -c ? -c : v;
            }
        }
    }
    return TG_OK;
}
