/*
 * rnn_impl.h — one tanh-RNN layer's forward and BPTT, for the element type set up by
 * kern_impl.h. The derivation, with the equations these loops implement, is in rnn_bptt.c.
 */

TG_MANUAL_CLONES
static void SFX(rnn_step_fwd)(size_t n, REAL *restrict h)
{
    for (size_t j = 0; j < n; j += VL) {
        const int m = n - j < (size_t)VL ? (int)(n - j) : VL;
        VR v;
        SFX(vload)(&v, h + j, m);
        SFX(vtanh)(&v);
        SFX(vstore)(h + j, &v, m);
    }
}

/* da = dh ⊙ (1 − h²) */
TG_MANUAL_CLONES
static void SFX(rnn_step_bwd)(size_t n, const REAL *restrict h, const REAL *restrict dh,
                              REAL *restrict da)
{
    for (size_t j = 0; j < n; j++) da[j] = dh[j] * (1 - h[j] * h[j]);
}

void SFX(tg_manual_rnn_forward)(const struct tg_manual_layer *l)
{
    const int T = l->T, B = l->B, in = l->in, H = l->H;
    const REAL *X = l->X, *Wih = l->p[0], *Whh = l->p[1], *bih = l->p[2], *bhh = l->p[3];
    REAL *Hs = l->Hs;
    const size_t BH = (size_t)B * H;

    SFX(set_state)(Hs, l->h0, BH);
    /* h_t ← x_t·W_ihᵀ + b_ih + b_hh for all steps (block t+1 of Hs), one GEMM. */
    SFX(fill_rows)(Hs + BH, (size_t)T * B, H, bih, bhh);
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T * B, H, in, 1, X, in, Wih, in, 1, Hs + BH,
         H);
    for (int t = 0; t < T; t++) {
        REAL *h = Hs + (t + 1) * BH;
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, H, 1, Hs + t * BH, H, Whh, H, 1, h,
             H);
        SFX(rnn_step_fwd)(BH, h);
    }
}

void SFX(tg_manual_rnn_backward)(const struct tg_manual_layer *l,
                                 const struct tg_manual_layer_grad *g)
{
    const int T = l->T, B = l->B, in = l->in, H = l->H, TB = T * B;
    const REAL *X = l->X, *Wih = l->p[0], *Whh = l->p[1];
    REAL *Hs = l->Hs, *dA = l->A, *dH = g->dH;
    const size_t BH = (size_t)B * H;

    for (int t = T - 1; t >= 0; t--) {
        /* dH_t holds dH from above plus da_{t+1}·W_hh (added at step t+1). */
        REAL *da = dA + t * BH;
        SFX(rnn_step_bwd)(BH, Hs + (t + 1) * BH, dH + t * BH, da);
        REAL *dst = t > 0 ? dH + (t - 1) * BH : (REAL *)g->dh0;
        if (dst)
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, H, 1, da, H, Whh, H,
                 t > 0 ? 1 : 0, dst, H);
    }
    REAL *gWih = g->grads[0], *gWhh = g->grads[1], *gbih = g->grads[2], *gbhh = g->grads[3];
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, H, in, TB, 1, dA, H, X, in, 0, gWih, in);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, H, H, TB, 1, dA, H, Hs, H, 0, gWhh, H);
    SFX(colsum)(dA, (size_t)TB, H, H, gbih);
    memcpy(gbhh, gbih, (size_t)H * sizeof(REAL));
    if (g->dX)
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, TB, in, H, 1, dA, H, Wih, in, 0,
             (REAL *)g->dX, in);
}
