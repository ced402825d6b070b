/*
 * common.c — the public entry points of the hand-derived oracles: argument checks, parameter
 * shapes and names, the workspace plan, and the driver (driver_impl.h, instantiated for float
 * and double) that runs the layers of a cell, the output layer and the loss.
 *
 * Workspace, per layer (kept for the whole call: backward needs every layer's activations):
 *   Hs   (T+1)·B × H   h0, h_0 … h_{T−1}
 *   A    T·B × G·H     gate activations, then (backward) pre-activation gradients
 *   Cs   (T+1)·B × H   lstm only: c0, c_0 … c_{T−1}
 *   aux  T·B × H       lstm tanh(c_t); gru h_{t−1}W_hnᵀ + b_hn; gru_cho r_t⊙h_{t−1}
 * shared: logits/dZ T·B × V, dH T·B × H, dAh T·B × 3H (gru), scratch B × 3H.
 * The memory the backward pass needs is thus the activations of every step, as in autodiff.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manual_impl.h"

static const char *const cell_names[TG_MANUAL_CELL_COUNT] = {"rnn_tanh", "lstm", "gru",
                                                             "gru_cho"};
/* Gate blocks per cell: rows of the stacked weights are G·H. */
static const int cell_gates[TG_MANUAL_CELL_COUNT] = {1, 4, 3, 3};

static int valid_cell(enum tg_manual_cell c) { return (int)c >= 0 && c < TG_MANUAL_CELL_COUNT; }

const char *tg_manual_cell_name(enum tg_manual_cell c)
{
    return valid_cell(c) ? cell_names[c] : NULL;
}

int tg_manual_cell_from_name(const char *name)
{
    for (int c = 0; name && c < TG_MANUAL_CELL_COUNT; c++)
        if (strcmp(name, cell_names[c]) == 0) return c;
    return -1;
}

int tg_manual_params_per_layer(enum tg_manual_cell c)
{
    if (!valid_cell(c)) return 0;
    return c == TG_MANUAL_GRU_CHO ? 2 : 4;
}

int tg_manual_num_params(enum tg_manual_cell c, int L)
{
    return valid_cell(c) && L > 0 ? L * tg_manual_params_per_layer(c) + 2 : 0;
}

enum tg_status tg_manual_param_shape(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                     int p, int *rows, int *cols)
{
    if (!valid_cell(c) || !d || !rows || !cols)
        return tg_error(TG_ERR_VALUE, "tg_manual_param_shape: unknown cell %d or NULL argument",
                        (int)c);
    const int P = tg_manual_params_per_layer(c), n = tg_manual_num_params(c, d->L);
    if (p < 0 || p >= n)
        return tg_error(TG_ERR_VALUE, "tg_manual_param_shape: parameter %d of %s out of [0, %d)",
                        p, cell_names[c], n);
    const int GH = cell_gates[c] * d->H;
    if (p == n - 2) { *rows = d->V; *cols = d->H; return TG_OK; }
    if (p == n - 1) { *rows = 1; *cols = d->V; return TG_OK; }
    const int k = p / P, j = p % P, in = k == 0 ? d->In : d->H;
    if (c == TG_MANUAL_GRU_CHO) {
        *rows = j == 0 ? GH : 1;
        *cols = j == 0 ? d->H + in : GH;
    } else {
        *rows = j < 2 ? GH : 1;
        *cols = j == 0 ? in : j == 1 ? d->H : GH;
    }
    return TG_OK;
}

enum tg_status tg_manual_param_name(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                    int p, char *buf, size_t size)
{
    int r, cc;
    enum tg_status s = tg_manual_param_shape(c, d, p, &r, &cc);
    if (s != TG_OK) return s;
    if (!buf || size == 0) return tg_error(TG_ERR_VALUE, "tg_manual_param_name: no buffer");
    static const char *const std_names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    static const char *const cho_names[2] = {"weight", "bias"};
    const int P = tg_manual_params_per_layer(c), n = tg_manual_num_params(c, d->L);
    int len;
    if (p >= n - 2)
        len = snprintf(buf, size, "%s", p == n - 2 ? "out.weight" : "out.bias");
    else
        len = snprintf(buf, size, "%s_l%d",
                       c == TG_MANUAL_GRU_CHO ? cho_names[p % P] : std_names[p % P], p / P);
    if (len < 0 || (size_t)len >= size)
        return tg_error(TG_ERR_VALUE, "tg_manual_param_name: buffer of %zu bytes too small", size);
    return TG_OK;
}

double tg_manual_forward_flops(enum tg_manual_cell c, const struct tg_manual_dims *d)
{
    if (!valid_cell(c) || !d) return 0.0;
    const double TB = (double)d->T * d->B, GH = (double)cell_gates[c] * d->H;
    double f = 0.0;
    for (int k = 0; k < d->L; k++) f += 2.0 * TB * ((k == 0 ? d->In : d->H) + d->H) * GH;
    return f + 2.0 * TB * d->H * d->V;
}

/* ------------------------------------------------------------------ workspace plan */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

int tg_manual_plan(enum tg_manual_cell c, const struct tg_manual_dims *d, size_t esize,
                   struct tg_manual_plan *pl)
{
    /* Refuse sizes whose element counts or GEMM dimensions would overflow (checked in
     * double, which is exact far beyond any size that fits in memory). */
    const double TB = (double)d->T * d->B, G = cell_gates[c];
    const double widest = G * d->H + d->H + d->In + d->V;
    const double elems = (double)d->L * (TB + d->B) * (G + 3.0) * d->H + TB * (d->V + 4.0 * d->H);
    if (TB > INT_MAX || widest > INT_MAX || elems * (double)esize > (double)(SIZE_MAX / 4))
        return -1;

    const size_t tb = (size_t)d->T * d->B, bh = (size_t)d->B * d->H, H = (size_t)d->H;
    const size_t gh = (size_t)cell_gates[c] * H;
    const int lstm = c == TG_MANUAL_LSTM;
    memset(pl, 0, sizeof *pl);
    pl->cell = c;
    size_t o = 0;
    pl->off_Hs = o;  o += align64((tb + d->B) * H * esize);
    pl->off_A = o;   o += align64(tb * gh * esize);
    pl->off_Cs = o;  o += lstm ? align64((tb + d->B) * H * esize) : 0;
    pl->off_aux = o; o += c != TG_MANUAL_RNN_TANH ? align64(tb * H * esize) : 0;
    pl->layer_bytes = o;
    o *= (size_t)d->L;
    pl->off_logits = o;  o += align64(tb * (size_t)d->V * esize);
    pl->off_dH = o;      o += align64(tb * H * esize);
    pl->off_dAh = o;     o += c == TG_MANUAL_GRU ? align64(tb * gh * esize) : 0;
    pl->off_scratch = o; o += align64(3 * bh * esize);
    pl->total = o;
    return 0;
}

void tg_manual_layer_view(const struct tg_manual_plan *pl, const struct tg_manual_dims *d,
                          char *ws, int k, size_t esize, const void *x,
                          const void *const *params, const void *h0, const void *c0,
                          struct tg_manual_layer *l)
{
    const size_t bh = (size_t)d->B * d->H;
    char *base = ws + (size_t)k * pl->layer_bytes;
    memset(l, 0, sizeof *l);
    l->T = d->T;
    l->B = d->B;
    l->in = k == 0 ? d->In : d->H;
    l->H = d->H;
    /* Layer k > 0 reads h_0 … h_{T−1} of layer k−1: its Hs from block 1 on. */
    l->X = k == 0 ? x : (const void *)(ws + (size_t)(k - 1) * pl->layer_bytes + pl->off_Hs +
                                       bh * esize);
    l->p = params + (size_t)k * tg_manual_params_per_layer(pl->cell);
    l->h0 = h0 ? (const char *)h0 + (size_t)k * bh * esize : NULL;
    l->c0 = c0 ? (const char *)c0 + (size_t)k * bh * esize : NULL;
    l->Hs = base + pl->off_Hs;
    l->A = base + pl->off_A;
    l->Cs = pl->cell == TG_MANUAL_LSTM ? base + pl->off_Cs : NULL;
    l->aux = pl->cell != TG_MANUAL_RNN_TANH ? base + pl->off_aux : NULL;
    l->dAh = pl->cell == TG_MANUAL_GRU ? ws + pl->off_dAh : NULL;
    l->scratch = ws + pl->off_scratch;
}

size_t tg_manual_workspace_bytes(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                 int dtype_bytes)
{
    struct tg_manual_plan pl;
    if (!valid_cell(c) || !d || (dtype_bytes != 4 && dtype_bytes != 8)) return 0;
    if (d->T <= 0 || d->B <= 0 || d->In <= 0 || d->H <= 0 || d->L <= 0 || d->V <= 0) return 0;
    if (tg_manual_plan(c, d, (size_t)dtype_bytes, &pl) != 0) return 0;
    return pl.total;
}

/* ---------------------------------------------------------------- argument checks */

static enum tg_status check_args(const char *fn, enum tg_manual_cell c,
                                 const struct tg_manual_dims *d, const void *const *params,
                                 const void *x, const int32_t *y, const void *loss,
                                 void *const *grads)
{
    if (!valid_cell(c))
        return tg_error(TG_ERR_VALUE, "%s: unknown cell %d (expected 0..%d)", fn, (int)c,
                        TG_MANUAL_CELL_COUNT - 1);
    if (!d) return tg_error(TG_ERR_VALUE, "%s: dims is NULL", fn);
    if (d->T <= 0 || d->B <= 0 || d->In <= 0 || d->H <= 0 || d->L <= 0 || d->V <= 0)
        return tg_error(TG_ERR_SHAPE,
                        "%s: every size must be > 0 (T=%d B=%d I=%d H=%d L=%d V=%d)", fn, d->T,
                        d->B, d->In, d->H, d->L, d->V);
    if (!params || !x || !y || !loss)
        return tg_error(TG_ERR_VALUE, "%s: %s is NULL", fn,
                        !params ? "params" : !x ? "x" : !y ? "y" : "loss");
    const int n = tg_manual_num_params(c, d->L);
    for (int p = 0; p < n; p++) {
        if (!params[p]) return tg_error(TG_ERR_VALUE, "%s: params[%d] is NULL", fn, p);
        if (grads && !grads[p]) return tg_error(TG_ERR_VALUE, "%s: grads[%d] is NULL", fn, p);
    }
    const size_t tb = (size_t)d->T * d->B;
    for (size_t r = 0; r < tb; r++)
        if (y[r] < -1 || y[r] >= d->V)
            return tg_error(TG_ERR_VALUE, "%s: label %d at time step %zu of %d (batch row %zu) "
                            "outside [-1, %d)", fn, (int)y[r], r / (size_t)d->B + 1, d->T,
                            r % (size_t)d->B, d->V);
    return TG_OK;
}

/* ------------------------------------------------------------ the driver, per type */

#define TG_REAL_F64 0
#include "kern_impl.h"
#include "driver_impl.h"
#undef TG_REAL_F64
#define TG_REAL_F64 1
#include "kern_impl.h"
#include "driver_impl.h"
#undef TG_REAL_F64

/* Checks the arguments, plans the workspace and allocates it if the caller gave none. */
static enum tg_status begin(const char *fn, enum tg_manual_cell c, const struct tg_manual_dims *d,
                            const void *const *params, const void *x, const int32_t *y,
                            const void *loss, void *const *grads, size_t esize, void *ws,
                            struct tg_manual_plan *pl, void **mem)
{
    enum tg_status s = check_args(fn, c, d, params, x, y, loss, grads);
    if (s != TG_OK) return s;
    if (tg_manual_plan(c, d, esize, pl) != 0)
        return tg_error(TG_ERR_SHAPE, "%s: sizes too large (T=%d B=%d I=%d H=%d L=%d V=%d)", fn,
                        d->T, d->B, d->In, d->H, d->L, d->V);
    *mem = ws ? ws : aligned_alloc(64, pl->total);  /* total is a multiple of 64 */
    if (!*mem)
        return tg_error(TG_ERR_NOMEM, "%s: cannot allocate %zu bytes of workspace", fn,
                        pl->total);
    return TG_OK;
}

enum tg_status tg_manual_bptt_f64(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                  const double *const *params, const double *x,
                                  const int32_t *y, const double *h0, const double *c0,
                                  double *loss, double *const *grads, double *dx, double *dh0,
                                  double *dc0, double *hT, double *cT, void *ws)
{
    struct tg_manual_plan pl;
    void *mem;
    enum tg_status s = begin("tg_manual_bptt_f64", c, d, (const void *const *)params, x, y, loss,
                             (void *const *)grads, sizeof(double), ws, &pl, &mem);
    if (s != TG_OK) return s;
    run_f64(c, d, &pl, params, x, y, h0, c0, loss, grads, dx, dh0, dc0, hT, cT, mem);
    if (!ws) free(mem);
    return TG_OK;
}

enum tg_status tg_manual_bptt_f32(enum tg_manual_cell c, const struct tg_manual_dims *d,
                                  const float *const *params, const float *x,
                                  const int32_t *y, const float *h0, const float *c0,
                                  float *loss, float *const *grads, float *dx, float *dh0,
                                  float *dc0, float *hT, float *cT, void *ws)
{
    struct tg_manual_plan pl;
    void *mem;
    enum tg_status s = begin("tg_manual_bptt_f32", c, d, (const void *const *)params, x, y, loss,
                             (void *const *)grads, sizeof(float), ws, &pl, &mem);
    if (s != TG_OK) return s;
    run_f32(c, d, &pl, params, x, y, h0, c0, loss, grads, dx, dh0, dc0, hT, cT, mem);
    if (!ws) free(mem);
    return TG_OK;
}
