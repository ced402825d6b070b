/*
 * gru_impl.h — one PyTorch-GRU layer's forward and BPTT, for the element type set up by
 * kern_impl.h. The derivation, with the equations these loops implement, is in gru_bptt.c.
 */

/* a = [g_r, g_z, g_n] → [r, z, n] in place; s = h_{t−1}·W_hhᵀ + b_hh; sn keeps s_n. */
TG_MANUAL_CLONES
static void SFX(gru_step_fwd)(int B, int H, REAL *restrict a, const REAL *restrict s,
                              const REAL *restrict hp, REAL *restrict sn, REAL *restrict h)
{
    for (int b = 0; b < B; b++) {
        REAL *ar = a + (size_t)b * 3 * H, *az = ar + H, *an = az + H;
        const REAL *sr = s + (size_t)b * 3 * H, *sz = sr + H, *snb = sz + H;
        const size_t o = (size_t)b * H;
        for (int j = 0; j < H; j += VL) {
            const int m = H - j < VL ? H - j : VL;
            VR s_n, r, z, n, t, hv;
            SFX(vload)(&s_n, snb + j, m);
            SFX(vload)(&r, ar + j, m);
            SFX(vload)(&t, sr + j, m);
            r += t;
            SFX(vsigm)(&r);
            SFX(vload)(&z, az + j, m);
            SFX(vload)(&t, sz + j, m);
            z += t;
            SFX(vsigm)(&z);
            SFX(vload)(&n, an + j, m);
            n += r * s_n;
            SFX(vtanh)(&n);
            SFX(vload)(&hv, hp + o + j, m);
            hv = (1 - z) * n + z * hv;
            SFX(vstore)(ar + j, &r, m);
            SFX(vstore)(az + j, &z, m);
            SFX(vstore)(an + j, &n, m);
            SFX(vstore)(sn + o + j, &s_n, m);
            SFX(vstore)(h + o + j, &hv, m);
        }
    }
}

/* a = [r, z, n] → dG = [da_r, da_z, da_n] in place, dS = [da_r, da_z, r⊙da_n];
 * dst += dh ⊙ z (the gradient that z⊙h_{t−1} passes straight to h_{t−1}). */
TG_MANUAL_CLONES
static void SFX(gru_step_bwd)(int B, int H, REAL *restrict a, REAL *restrict dS,
                              const REAL *restrict sn, const REAL *restrict hp,
                              const REAL *restrict dh, REAL *restrict dst)
{
    for (int b = 0; b < B; b++) {
        REAL *ar = a + (size_t)b * 3 * H, *az = ar + H, *an = az + H;
        REAL *sr = dS + (size_t)b * 3 * H, *sz = sr + H, *snd = sz + H;
        const size_t o = (size_t)b * H;
        for (int j = 0; j < H; j++) {
            const REAL r = ar[j], z = az[j], n = an[j], d = dh[o + j];
            const REAL dan = d * (1 - z) * (1 - n * n);
            const REAL daz = d * (hp[o + j] - n) * z * (1 - z);
            const REAL dar = dan * sn[o + j] * r * (1 - r);
            ar[j] = dar; az[j] = daz; an[j] = dan;
            sr[j] = dar; sz[j] = daz; snd[j] = r * dan;
            dst[o + j] += d * z;
        }
    }
}

void SFX(tg_manual_gru_forward)(const struct tg_manual_layer *l)
{
    const int T = l->T, B = l->B, in = l->in, H = l->H, G = 3 * H;
    const REAL *X = l->X, *Wih = l->p[0], *Whh = l->p[1], *bih = l->p[2], *bhh = l->p[3];
    REAL *Hs = l->Hs, *A = l->A, *SN = l->aux, *S = l->scratch;
    const size_t BH = (size_t)B * H, BG = (size_t)B * G;

    SFX(set_state)(Hs, l->h0, BH);
    SFX(fill_rows)(A, (size_t)T * B, G, bih, NULL);  /* g = X·W_ihᵀ + b_ih, all steps */
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T * B, G, in, 1, X, in, Wih, in, 1, A, G);
    for (int t = 0; t < T; t++) {
        const REAL *hp = Hs + t * BH;
        SFX(fill_rows)(S, (size_t)B, G, bhh, NULL);   /* s = h_{t−1}·W_hhᵀ + b_hh */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, G, H, 1, hp, H, Whh, H, 1, S, G);
        SFX(gru_step_fwd)(B, H, A + t * BG, S, hp, SN + t * BH, Hs + (t + 1) * BH);
    }
}

void SFX(tg_manual_gru_backward)(const struct tg_manual_layer *l,
                                 const struct tg_manual_layer_grad *g)
{
    const int T = l->T, B = l->B, in = l->in, H = l->H, G = 3 * H, TB = T * B;
    const REAL *X = l->X, *Wih = l->p[0], *Whh = l->p[1];
    REAL *Hs = l->Hs, *A = l->A, *SN = l->aux, *dS = l->dAh, *dH = g->dH;
    const size_t BH = (size_t)B * H, BG = (size_t)B * G;

    for (int t = T - 1; t >= 0; t--) {
        /* dh_{t−1} accumulates in dH_{t−1}; at t = 0 in dh0, or in scratch if not wanted. */
        REAL *dst = t > 0 ? dH + (t - 1) * BH : g->dh0 ? (REAL *)g->dh0 : l->scratch;
        if (t == 0) memset(dst, 0, BH * sizeof(REAL));
        SFX(gru_step_bwd)(B, H, A + t * BG, dS + t * BG, SN + t * BH, Hs + t * BH,
                          dH + t * BH, dst);
        if (t > 0 || g->dh0)
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, G, 1, dS + t * BG, G, Whh, H,
                 1, dst, H);
    }
    REAL *gWih = g->grads[0], *gWhh = g->grads[1], *gbih = g->grads[2], *gbhh = g->grads[3];
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, G, in, TB, 1, A, G, X, in, 0, gWih, in);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, G, H, TB, 1, dS, G, Hs, H, 0, gWhh, H);
    SFX(colsum)(A, (size_t)TB, G, G, gbih);
    SFX(colsum)(dS, (size_t)TB, G, G, gbhh);
    if (g->dX)
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, TB, in, G, 1, A, G, Wih, in, 0,
             (REAL *)g->dX, in);
}
