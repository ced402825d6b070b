/* gradcheck.c — compare backward with finite differences.
 *
 * Numeric derivative: the 4-point central stencil
 *     f'(x) ≈ [f(x−2h) − 8 f(x−h) + 8 f(x+h) − f(x+2h)] / (12 h),
 * whose truncation error is O(h⁴) (h⁴ f⁽⁵⁾/30), so with h = 1e-3 it is ~1e-13 and rounding,
 * ~ε|f|/h, dominates; a plain 2-point difference would be stuck near 1e-7 relative.
 * h is scaled by max(1, |x|) and snapped so that x ± h is exact in binary. The step is chosen
 * per element among opts.step, 1e-4, 1e-3 and 1e-2: the larger of the two adjacent steps whose
 * estimates agree best (so neither rounding nor truncation decides the verdict).
 *
 * Kinks (relu at 0): the second difference Δ(h) = [f(x+h) − 2f(x) + f(x−h)]/h is h·f'' for a
 * smooth f, so Δ(h)/Δ(2h) ≈ 1/2; a kink inside the window adds the slope jump unscaled and
 * moves the ratio towards 1 (kink within h) or 0 (between h and 2h). With skip_kinks, elements
 * whose ratio is far from 1/2 while Δ(2h) is above round-off are skipped and counted.
 *
 * Error: abs = |a − n|, rel = abs / max(|a|, |n|, rel_floor). The floor keeps gradients that
 * are zero up to round-off from reporting meaningless relative errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static enum tg_status eval_loss(struct tg_tape *t, tg_loss_fn fn, void *ctx, double *out)
{
    tg_tape_reset(t);
    int old = tg_tape_set_no_grad(t, 1);
    struct tg_tensor *loss = fn(t, ctx);
    tg_tape_set_no_grad(t, old);
    if (!loss) return tg_error(TG_ERR_VALUE, "tg_gradcheck: loss function failed: %s",
                               tg_tape_error(t));
    if (loss->rows != 1 || loss->cols != 1)
        return tg_error(TG_ERR_SHAPE, "tg_gradcheck: loss must be 1x1, got (%dx%d)", loss->rows,
                        loss->cols);
    *out = tg_get(loss, 0, 0);
    return TG_OK;
}

enum tg_status tg_gradcheck(tg_loss_fn fn, void *ctx, struct tg_tensor **xs, int nx,
                            const struct tg_gradcheck_opts *opts,
                            struct tg_gradcheck_report *rep)
{
    struct tg_gradcheck_opts o = {0};
    if (opts) o = *opts;
    if (o.step <= 0) o.step = 1e-3;
    if (o.tol <= 0) o.tol = 1e-7;
    if (o.rel_floor <= 0) o.rel_floor = 1e-3;
    if (rep) {
        memset(rep, 0, sizeof *rep);
        rep->worst_tensor = rep->worst_row = rep->worst_col = -1;
    }
    if (!fn || !xs || nx < 1 || !rep)
        return tg_error(TG_ERR_VALUE, "tg_gradcheck: needs a loss function, nx >= 1 tensors (got "
                                      "%d) and a report", nx);
    for (int k = 0; k < nx; k++) {
        const struct tg_tensor *x = xs[k];
        if (!x) return tg_error(TG_ERR_VALUE, "tg_gradcheck: tensor %d is NULL", k);
        if (x->dtype != TG_F64)
            return tg_error(TG_ERR_DTYPE, "tg_gradcheck: tensor %d (%dx%d) is %s; finite "
                            "differences need float64", k, x->rows, x->cols, tg_dtype_name(x->dtype));
        if (!x->grad || !(x->flags & TG_HEAP))
            return tg_error(TG_ERR_VALUE, "tg_gradcheck: tensor %d (%dx%d) must be a heap tensor "
                            "with a gradient buffer", k, x->rows, x->cols);
    }
    for (int k = 0; k < nx; k++) tg_tensor_zero_grad(xs[k]);

    struct tg_tape *t = tg_tape_new(0);
    if (!t) return TG_ERR_NOMEM;
    enum tg_status st = TG_OK;
    double **analytic = calloc((size_t)nx, sizeof *analytic);
    if (!analytic) {
        st = tg_error(TG_ERR_NOMEM, "tg_gradcheck: out of memory");
        goto done;
    }

    struct tg_tensor *loss = fn(t, ctx);
    if (!loss) {
        st = tg_error(TG_ERR_VALUE, "tg_gradcheck: loss function failed: %s", tg_tape_error(t));
        goto done;
    }
    if ((st = tg_backward(t, loss)) != TG_OK) goto done;
    for (int k = 0; k < nx; k++) {
        analytic[k] = malloc(tg_nbytes(xs[k]));
        if (!analytic[k]) {
            st = tg_error(TG_ERR_NOMEM, "tg_gradcheck: out of memory");
            goto done;
        }
        memcpy(analytic[k], xs[k]->grad, tg_nbytes(xs[k]));
    }

    double f0;
    if ((st = eval_loss(t, fn, ctx, &f0)) != TG_OK) goto done;

    for (int k = 0; k < nx; k++) {
        double *x = xs[k]->data;
        size_t n = tg_numel(xs[k]);
        size_t stride = 1;
        if (o.max_elems > 0 && n > (size_t)o.max_elems) stride = (n + o.max_elems - 1) / o.max_elems;
        for (size_t i = 0; i < n; i += stride) {
            double v = x[i], f[4], num = 0, best = INFINITY, prev = NAN;
            /* The step: a 4-point stencil at each candidate (the caller's step and 1e-4, 1e-3,
             * 1e-2, ascending); the estimate kept is the larger step of the adjacent pair that
             * agrees best. Too small a step drowns in rounding (ε|f|/h), too large in
             * truncation (h⁴), and where both are small two neighbours agree: no step is right
             * for every loss (a layer norm's sums need a larger one than a plain RNN). */
            double cand[4] = {1e-4, 1e-3, 1e-2, o.step};
            int nc = 3;
            if (o.step != 1e-4 && o.step != 1e-3 && o.step != 1e-2) nc = 4;
            for (int a = 1; a < nc; a++) /* ascending */
                for (int b = a; b > 0 && cand[b] < cand[b - 1]; b--) {
                    double tmp = cand[b];
                    cand[b] = cand[b - 1];
                    cand[b - 1] = tmp;
                }
            double f_at_step[4] = {0, 0, 0, 0}, h_step = 0;
            for (int ci = 0; ci < nc; ci++) {
                volatile double vh = v + cand[ci] * fmax(1.0, fabs(v));
                double hc = vh - v;
                const double mult[4] = {-2, -1, 1, 2};
                for (int j = 0; j < 4; j++) {
                    x[i] = v + mult[j] * hc;
                    st = eval_loss(t, fn, ctx, &f[j]);
                    if (st != TG_OK) {
                        x[i] = v;
                        goto done;
                    }
                }
                double nci = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * hc);
                if (ci == 0 || fabs(nci - prev) < best) {
                    if (ci > 0) best = fabs(nci - prev);
                    num = nci;
                    memcpy(f_at_step, f, sizeof f), h_step = hc; /* the kink test's window */
                }
                prev = nci;
            }
            x[i] = v;
            if (o.skip_kinks) {
                double d1 = (f_at_step[2] - 2 * f0 + f_at_step[1]) / h_step;
                double d2 = (f_at_step[3] - 2 * f0 + f_at_step[0]) / (2 * h_step);
                if (fabs(d2) > 1e-10 * (1.0 + fabs(f0)) &&
                    fabs(d1 / d2 - 0.5) > 0.25) {
                    rep->skipped++;
                    continue;
                }
            }
            double a = analytic[k][i];
            double abs_err = fabs(a - num);
            double rel = abs_err / fmax(fmax(fabs(a), fabs(num)), o.rel_floor);
            rep->checked++;
            if (abs_err > rep->max_abs) rep->max_abs = abs_err;
            if (isnan(rel)) rel = INFINITY;
            if (rel > rep->max_rel || rep->worst_tensor < 0) {
                rep->max_rel = rel;
                rep->worst_tensor = k;
                rep->worst_row = (int)(i / (size_t)xs[k]->cols);
                rep->worst_col = (int)(i % (size_t)xs[k]->cols);
                rep->worst_analytic = a;
                rep->worst_numeric = num;
            }
        }
        /* Leave the analytic gradient in place for the caller to inspect. */
        memcpy(xs[k]->grad, analytic[k], tg_nbytes(xs[k]));
    }
    /* a check that checked nothing (every element skipped, or none asked for) did not pass */
    rep->passed = rep->checked > 0 && rep->max_rel <= o.tol;

done:
    if (analytic) {
        for (int k = 0; k < nx; k++) free(analytic[k]);
        free(analytic);
    }
    tg_tape_free(t);
    return st;
}
