/*
 * tapegrad_optim.h — optimizers (SGD, Adagrad, Adam, RMSprop) and gradient clipping.
 *
 * The update rules, their order of operations and their defaults are PyTorch's (torch.optim
 * 1.13, single-tensor code path), so a run here can be compared number for number with one
 * there; tests/test_optim.c checks every rule against PyTorch's own output to round-off.
 *
 *   struct tg_optim_config cfg;
 *   tg_optim_defaults(TG_OPTIM_ADAM, &cfg);          // lr 1e-3, betas (0.9, 0.999), eps 1e-8
 *   cfg.lr = 3e-3;
 *   struct tg_optim *opt;
 *   if (tg_optim_new(&cfg, params, nparams, &opt) != TG_OK) puts(tg_last_error());
 *   for (...) {
 *       ... zero the grads, forward, tg_backward ...
 *       tg_clip_grad_norm(params, nparams, 1.0);     // optional
 *       tg_optim_step(opt);                          // reads p->grad, updates p->data
 *   }
 *   tg_optim_free(opt);                              // the parameters stay the caller's
 *
 * Dtypes: each parameter is updated in its own dtype, float64 in double and float32 in float,
 * with the hyper-parameters rounded to float where PyTorch rounds them (a Python scalar meeting
 * a float32 tensor), so float32 runs also agree with PyTorch's float32 runs to a few ulps.
 * Parameters of both dtypes may be mixed in one optimizer. Non-finite gradients are not checked:
 * they propagate into the parameters exactly as in PyTorch.
 *
 * Steps: PyTorch counts steps per parameter; here every parameter steps together, so one count
 * serves all (tg_optim_steps). It matters for Adam's bias correction, Adagrad's lr_decay and
 * SGD's first momentum step; a checkpoint saves it with the state tensors.
 */
#ifndef TAPEGRAD_OPTIM_H
#define TAPEGRAD_OPTIM_H

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

enum tg_optim_kind { TG_OPTIM_SGD, TG_OPTIM_ADAGRAD, TG_OPTIM_ADAM, TG_OPTIM_RMSPROP };

/* Every hyper-parameter of every optimizer; each kind reads only its own (listed below).
 *
 * SGD (lr, momentum μ, dampening τ, weight_decay λ, nesterov):
 *     g ← g + λ·p
 *     b ← g at the first step, else b ← μ·b + (1−τ)·g          (only if μ ≠ 0)
 *     g ← g + μ·b if nesterov, else g ← b                       (only if μ ≠ 0)
 *     p ← p − lr·g
 * Adagrad (lr, lr_decay, weight_decay λ, initial_accumulator_value s₀, eps ε):
 *     g ← g + λ·p;  clr = lr / (1 + (t−1)·lr_decay);  s ← s + g²
 *     p ← p − clr·g / (√s + ε)                     PyTorch
 *     p ← p − clr·g / √(s + ε)                     adagrad_minchar: min-char-rnn's form, which
 *                                                  puts ε = 1e-8 inside the root (set eps to 1e-8;
 *                                                  tg_optim_config_from_name does)
 * Adam (lr, beta1 β₁, beta2 β₂, eps ε, weight_decay λ, amsgrad):
 *     g ← g + λ·p;  m ← β₁·m + (1−β₁)·g;  v ← β₂·v + (1−β₂)·g²
 *     v̂ ← max(v̂, v) if amsgrad, else v̂ = v
 *     p ← p − (lr/(1−β₁ᵗ))·m / (√v̂/√(1−β₂ᵗ) + ε)
 * RMSprop (lr, alpha α, eps ε, weight_decay λ, momentum μ, centered):
 *     g ← g + λ·p;  v ← α·v + (1−α)·g²
 *     a ← √(v − ḡ²) + ε with ḡ ← α·ḡ + (1−α)·g if centered, else a ← √v + ε
 *     b ← μ·b + g/a;  p ← p − lr·b   if μ > 0, else  p ← p − lr·g/a
 */
struct tg_optim_config {
    enum tg_optim_kind kind;
    double lr, momentum, dampening, weight_decay;
    int nesterov;
    double beta1, beta2, eps, alpha, lr_decay, initial_accumulator_value;
    int amsgrad, centered, adagrad_minchar;
};

/* PyTorch's constructor defaults for `kind` (every other field 0). PyTorch's SGD has no default
 * learning rate (lr is required); here it gets 1e-2, the default of Adagrad and RMSprop. */
void tg_optim_defaults(enum tg_optim_kind kind, struct tg_optim_config *cfg);
/* "sgd", "adagrad", "adam", "rmsprop" → kind. Anything else: TG_ERR_VALUE with a message that
 * lists the choices. */
enum tg_status tg_optim_parse_kind(const char *name, enum tg_optim_kind *out);
const char *tg_optim_kind_name(enum tg_optim_kind kind);
/* Defaults by name, for command lines: the four names above, plus "adagrad-minchar" —
 * min-char-rnn's Adagrad exactly: adagrad_minchar = 1, eps = 1e-8, lr = 1e-1. */
enum tg_status tg_optim_config_from_name(const char *name, struct tg_optim_config *cfg);

struct tg_optim;

/* An optimizer over n parameters (heap tensors with gradient buffers, distinct, not owned).
 * Validates the configuration as PyTorch's constructors do (lr, eps, momentum, weight_decay,
 * alpha, lr_decay, initial_accumulator_value ≥ 0, betas in [0, 1), Nesterov needs momentum > 0
 * and dampening 0); every failure is TG_ERR_VALUE with a message naming the field and value.
 * Allocates the state tensors (zeros; Adagrad's sums start at initial_accumulator_value). */
enum tg_status tg_optim_new(const struct tg_optim_config *cfg, struct tg_tensor *const *params,
                            int n, struct tg_optim **out);
/* One update of every parameter from its current gradient (which it does not zero).
 * Allocates nothing. TG_ERR_STATE if a parameter lost its gradient buffer. */
enum tg_status tg_optim_step(struct tg_optim *o);
void tg_optim_free(struct tg_optim *o);

const struct tg_optim_config *tg_optim_get_config(const struct tg_optim *o);
/* Change the learning rate between steps (schedules); must be ≥ 0 and finite. */
enum tg_status tg_optim_set_lr(struct tg_optim *o, double lr);
/* Zero the gradient of every parameter. */
void tg_optim_zero_grad(struct tg_optim *o);

/* ---- state, for checkpoints
 * The state is a list of heap tensors owned by the optimizer, each shaped and typed like its
 * parameter and named "optim.<slot>.<parameter name>" with PyTorch's slot names:
 *   SGD momentum_buffer (if momentum ≠ 0) · Adagrad sum · Adam exp_avg, exp_avg_sq,
 *   max_exp_avg_sq (if amsgrad) · RMSprop square_avg, grad_avg (if centered),
 *   momentum_buffer (if momentum > 0).
 * Order: parameter by parameter, slots in the order above. (A parameter without a name is
 * called "param<i>".) To resume: build the optimizer with the same configuration over the same
 * parameters, copy the saved values into tg_optim_state(o, i) (tg_tensor_copy), and call
 * tg_optim_set_steps with the saved count; the next step is then bit-identical. */
int tg_optim_state_count(const struct tg_optim *o);
struct tg_tensor *tg_optim_state(const struct tg_optim *o, int i);      /* NULL if out of range */
struct tg_tensor *tg_optim_find_state(const struct tg_optim *o, const char *name); /* or NULL */
long tg_optim_steps(const struct tg_optim *o);
enum tg_status tg_optim_set_steps(struct tg_optim *o, long steps);      /* steps ≥ 0 */

/* ---- clipping (call between backward and step)
 *
 * Global norm, PyTorch's clip_grad_norm_ with norm_type 2: total = √(Σ_p ‖g_p‖²) over every
 * parameter's gradient (parameters without a gradient buffer are skipped); if
 * c = max_norm / (total + 1e-6) < 1 every gradient is scaled by c. Returns total, the norm
 * before clipping.
 * - A non-finite total (a NaN or infinite gradient) is returned as is and the gradients are
 *   left untouched: the caller decides (skip the step, stop the run). PyTorch would instead
 *   multiply by the NaN/zero coefficient; there is nothing useful to keep from that.
 * - max_norm must be ≥ 0 and not NaN; otherwise returns -1 and sets tg_last_error, touching
 *   nothing. */
double tg_clip_grad_norm(struct tg_tensor *const *params, int n, double max_norm);
/* By value: clamp every gradient element to [−clip, clip] (PyTorch's clip_grad_value_;
 * min-char-rnn's np.clip(g, -5, 5)). NaNs stay NaN. clip must be ≥ 0 and not NaN
 * (TG_ERR_VALUE otherwise, nothing touched). */
enum tg_status tg_clip_grad_value(struct tg_tensor *const *params, int n, double clip);

#ifdef __cplusplus
}
#endif
#endif
