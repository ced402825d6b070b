/*
 * gru_cho_impl.h — one Cho-GRU layer's forward and BPTT, for the element type set up by
 * kern_impl.h. The derivation, with the equations these loops implement, is in
 * gru_cho_bptt.c.
 */

/* First half of a step: a = [a_u, a_r, ·] → [u, r, ·] in place, q = r ⊙ h_{t−1}. */
TG_MANUAL_CLONES
static void SFX(cho_step_fwd1)(int B, int H, REAL *restrict a, const REAL *restrict hp,
                               REAL *restrict q)
{
    for (int b = 0; b < B; b++) {
        REAL *au = a + (size_t)b * 3 * H, *ar = au + H;
        const size_t o = (size_t)b * H;
        for (int j = 0; j < H; j += VL) {
            const int m = H - j < VL ? H - j : VL;
            VR u, r, hv;
            SFX(vload)(&u, au + j, m);
            SFX(vload)(&r, ar + j, m);
            SFX(vload)(&hv, hp + o + j, m);
            SFX(vsigm)(&u);
            SFX(vsigm)(&r);
            hv *= r;
            SFX(vstore)(au + j, &u, m);
            SFX(vstore)(ar + j, &r, m);
            SFX(vstore)(q + o + j, &hv, m);
        }
    }
}

/* Second half: a_c → c̃ in place, h = u⊙c̃ + (1 − u)⊙h_{t−1}. */
TG_MANUAL_CLONES
static void SFX(cho_step_fwd2)(int B, int H, REAL *restrict a, const REAL *restrict hp,
                               REAL *restrict h)
{
    for (int b = 0; b < B; b++) {
        REAL *au = a + (size_t)b * 3 * H, *ac = au + 2 * H;
        const size_t o = (size_t)b * H;
        for (int j = 0; j < H; j += VL) {
            const int m = H - j < VL ? H - j : VL;
            VR u, c, hv;
            SFX(vload)(&u, au + j, m);
            SFX(vload)(&c, ac + j, m);
            SFX(vload)(&hv, hp + o + j, m);
            SFX(vtanh)(&c);
            hv = u * c + (1 - u) * hv;
            SFX(vstore)(ac + j, &c, m);
            SFX(vstore)(h + o + j, &hv, m);
        }
    }
}

/* First half of a backward step: [u, r, c̃] → [da_u, r, da_c]; dst += dh ⊙ (1 − u). */
TG_MANUAL_CLONES
static void SFX(cho_step_bwd1)(int B, int H, REAL *restrict a, const REAL *restrict hp,
                               const REAL *restrict dh, REAL *restrict dst)
{
    for (int b = 0; b < B; b++) {
        REAL *au = a + (size_t)b * 3 * H, *ac = au + 2 * H;
        const size_t o = (size_t)b * H;
        for (int j = 0; j < H; j++) {
            const REAL u = au[j], c = ac[j], d = dh[o + j];
            ac[j] = d * u * (1 - c * c);
            au[j] = d * (c - hp[o + j]) * u * (1 - u);
            dst[o + j] += d * (1 - u);
        }
    }
}

/* Second half: r → da_r = dq ⊙ h_{t−1} ⊙ r(1 − r); dst += dq ⊙ r. */
TG_MANUAL_CLONES
static void SFX(cho_step_bwd2)(int B, int H, REAL *restrict a, const REAL *restrict hp,
                               const REAL *restrict dq, REAL *restrict dst)
{
    for (int b = 0; b < B; b++) {
        REAL *ar = a + (size_t)b * 3 * H + H;
        const size_t o = (size_t)b * H;
        for (int j = 0; j < H; j++) {
            const REAL r = ar[j];
            ar[j] = dq[o + j] * hp[o + j] * r * (1 - r);
            dst[o + j] += dq[o + j] * r;
        }
    }
}

void SFX(tg_manual_gru_cho_forward)(const struct tg_manual_layer *l)
{
    const int T = l->T, B = l->B, in = l->in, H = l->H, G = 3 * H, ld = H + in;
    const REAL *X = l->X, *W = l->p[0], *bias = l->p[1];
    REAL *Hs = l->Hs, *A = l->A, *Q = l->aux;
    const size_t BH = (size_t)B * H, BG = (size_t)B * G;

    SFX(set_state)(Hs, l->h0, BH);
    /* A = X·Wˣᵀ + b for all steps and all three blocks. */
    SFX(fill_rows)(A, (size_t)T * B, G, bias, NULL);
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T * B, G, in, 1, X, in, W + H, ld, 1, A, G);
    for (int t = 0; t < T; t++) {
        REAL *a = A + t * BG;
        const REAL *hp = Hs + t * BH;
        /* [a_u, a_r] += h_{t−1}·[W_uʰ; W_rʰ]ᵀ */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, 2 * H, H, 1, hp, H, W, ld, 1, a, G);
        SFX(cho_step_fwd1)(B, H, a, hp, Q + t * BH);
        /* a_c += q·W_cʰᵀ */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, H, 1, Q + t * BH, H,
             W + (size_t)2 * H * ld, ld, 1, a + 2 * H, G);
        SFX(cho_step_fwd2)(B, H, a, hp, Hs + (t + 1) * BH);
    }
}

void SFX(tg_manual_gru_cho_backward)(const struct tg_manual_layer *l,
                                     const struct tg_manual_layer_grad *g)
{
    const int T = l->T, B = l->B, in = l->in, H = l->H, G = 3 * H, ld = H + in, TB = T * B;
    const REAL *X = l->X, *W = l->p[0];
    REAL *Hs = l->Hs, *A = l->A, *Q = l->aux, *dq = l->scratch, *dH = g->dH;
    const size_t BH = (size_t)B * H, BG = (size_t)B * G;

    for (int t = T - 1; t >= 0; t--) {
        REAL *a = A + t * BG;
        const REAL *hp = Hs + t * BH;
        /* dh_{t−1} accumulates in dH_{t−1}; at t = 0 in dh0, or in a spare part of scratch
         * (after dq) if not wanted. */
        REAL *dst = t > 0 ? dH + (t - 1) * BH : g->dh0 ? (REAL *)g->dh0 : dq + BH;
        if (t == 0) memset(dst, 0, BH * sizeof(REAL));
        SFX(cho_step_bwd1)(B, H, a, hp, dH + t * BH, dst);
        /* dq = da_c·W_cʰ */
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, H, 1, a + 2 * H, G,
             W + (size_t)2 * H * ld, ld, 0, dq, H);
        SFX(cho_step_bwd2)(B, H, a, hp, dq, dst);
        /* dh_{t−1} += [da_u, da_r]·[W_uʰ; W_rʰ] */
        if (t > 0 || g->dh0)
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, 2 * H, 1, a, G, W, ld, 1,
                 dst, H);
    }
    REAL *gW = g->grads[0], *gb = g->grads[1];
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, G, in, TB, 1, A, G, X, in, 0, gW + H, ld);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, 2 * H, H, TB, 1, A, G, Hs, H, 0, gW, ld);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, H, H, TB, 1, A + 2 * H, G, Q, H, 0,
         gW + (size_t)2 * H * ld, ld);
    SFX(colsum)(A, (size_t)TB, G, G, gb);
    if (g->dX)
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, TB, in, G, 1, A, G, W + H, ld, 0,
             (REAL *)g->dX, in);
}
