/*
 * driver_impl.h — the sequence model around the cells, for one element type (a template
 * included by common.c after kern_impl.h): run every layer's forward, the output layer and the
 * loss, then the backward from the loss down through the layers.
 *
 * Output layer and loss, for every position (t, b) whose label y ≠ −1:
 *     z = h^{L-1}_t·W_oᵀ + b_o,   p = softmax(z),   ℓ = −log p_y = logsumexp(z) − z_y
 *     ∂ℓ/∂z_j = p_j − [j = y]
 * (softmax Jacobian ∂p_i/∂z_j = p_i(δ_ij − p_j), contracted with ∂ℓ/∂p_i = −[i = y]/p_y).
 * Positions with y = −1 contribute neither loss nor gradient. Stacking all T·B positions as
 * rows of dZ (T·B × V) and H_top (T·B × H), every sum over time is one GEMM:
 *     dW_o = dZᵀ·H_top,   db_o = Σ_rows dZ,   dH_top = dZ·W_o   (d loss / d h^{L-1}_t)
 * Layer k's backward turns its dH into dX = d loss / d h^{k-1}_t, the dH of layer k−1.
 */

static const tg_manual_fwd_fn SFX(fwd_table)[TG_MANUAL_CELL_COUNT] = {
    SFX(tg_manual_rnn_forward), SFX(tg_manual_lstm_forward), SFX(tg_manual_gru_forward),
    SFX(tg_manual_gru_cho_forward)};
static const tg_manual_bwd_fn SFX(bwd_table)[TG_MANUAL_CELL_COUNT] = {
    SFX(tg_manual_rnn_backward), SFX(tg_manual_lstm_backward), SFX(tg_manual_gru_backward),
    SFX(tg_manual_gru_cho_backward)};

/* Logits, loss and (if want_grad) dZ in place of the logits. Loss summed in double. */
TG_MANUAL_CLONES
static double SFX(softmax_xent)(REAL *Z, size_t rows, int V, const REAL *bo, const int32_t *y,
                                int want_grad)
{
    double total = 0.0;
    for (size_t r = 0; r < rows; r++) {
        REAL *z = Z + r * (size_t)V;
        REAL m = z[0] + bo[0];
        for (int j = 0; j < V; j++) {
            z[j] += bo[j];
            if (z[j] > m) m = z[j];
        }
        const int lab = y[r];
        if (lab < 0) {  /* no loss here, and so no gradient either */
            if (want_grad) memset(z, 0, (size_t)V * sizeof(REAL));
            continue;
        }
        const double zy = (double)z[lab];
        VR vs = {0};
        for (int j = 0; j < V; j += VL) {  /* shifted by the max: no overflow */
            const int n = V - j < VL ? V - j : VL;
            VR e;
            SFX(vload)(&e, z + j, n);
            e -= m;
            SFX(vexp)(&e);
            SFX(vstore)(z + j, &e, n);
            if (n < VL) SFX(vload)(&e, z + j, n);  /* padding lanes must add 0 */
            vs += e;
        }
        REAL s = 0;
        for (int k = 0; k < VL; k++) s += vs[k];
        total += (double)m + log((double)s) - zy;
        if (want_grad) {
            const REAL inv = (REAL)1 / s;
            for (int j = 0; j < V; j++) z[j] *= inv;
            z[lab] -= 1;
        }
    }
    return total;
}

static void SFX(run)(enum tg_manual_cell c, const struct tg_manual_dims *d,
                     const struct tg_manual_plan *pl, const REAL *const *params, const REAL *x,
                     const int32_t *y, const REAL *h0, const REAL *c0, REAL *loss,
                     REAL *const *grads, REAL *dx, REAL *dh0, REAL *dc0, REAL *hT, REAL *cT,
                     char *ws)
{
    const int T = d->T, B = d->B, H = d->H, L = d->L, V = d->V;
    const int P = tg_manual_params_per_layer(c);
    const int TB = T * B;
    const size_t BH = (size_t)B * H;
    const int is_lstm = c == TG_MANUAL_LSTM;
    struct tg_manual_layer lay;

    for (int k = 0; k < L; k++) {
        tg_manual_layer_view(pl, d, ws, k, sizeof(REAL), x, (const void *const *)params,
                             h0, is_lstm ? c0 : NULL, &lay);
        SFX(fwd_table)[c](&lay);
    }

    /* lay is the top layer now. logits = H_top·W_oᵀ (+ b_o inside softmax_xent). */
    const REAL *Wo = params[(size_t)L * P], *bo = params[(size_t)L * P + 1];
    const REAL *Htop = (const REAL *)lay.Hs + BH;
    REAL *Z = (REAL *)(ws + pl->off_logits);
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, TB, V, H, 1, Htop, H, Wo, H, 0, Z, V);
    *loss = (REAL)SFX(softmax_xent)(Z, (size_t)TB, V, bo, y, grads != NULL);

    if (hT || (is_lstm && cT)) {
        for (int k = 0; k < L; k++) {
            struct tg_manual_layer v;
            tg_manual_layer_view(pl, d, ws, k, sizeof(REAL), x, (const void *const *)params,
                                 NULL, NULL, &v);
            if (hT) memcpy(hT + k * BH, (REAL *)v.Hs + (size_t)T * BH, BH * sizeof(REAL));
            if (is_lstm && cT)
                memcpy(cT + k * BH, (REAL *)v.Cs + (size_t)T * BH, BH * sizeof(REAL));
        }
    }
    if (!grads) return;

    REAL *dH = (REAL *)(ws + pl->off_dH);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, V, H, TB, 1, Z, V, Htop, H, 0,
         grads[(size_t)L * P], H);
    SFX(colsum)(Z, (size_t)TB, V, V, grads[(size_t)L * P + 1]);
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, TB, H, V, 1, Z, V, Wo, H, 0, dH, H);

    for (int k = L - 1; k >= 0; k--) {
        tg_manual_layer_view(pl, d, ws, k, sizeof(REAL), x, (const void *const *)params,
                             h0, is_lstm ? c0 : NULL, &lay);
        struct tg_manual_layer_grad g = {
            .dH = dH,
            .grads = (void *const *)(grads + (size_t)k * P),
            .dX = k > 0 ? (void *)dH : (void *)dx,  /* layer k−1's dH, written last */
            .dh0 = dh0 ? dh0 + k * BH : NULL,
            .dc0 = is_lstm && dc0 ? dc0 + k * BH : NULL,
        };
        SFX(bwd_table)[c](&lay, &g);
    }
}
