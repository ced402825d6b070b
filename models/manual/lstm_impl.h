/*
 * lstm_impl.h — one LSTM layer's forward and BPTT, for the element type set up by kern_impl.h.
 * The derivation, with the equations these loops implement, is in lstm_bptt.c.
 */

/* Step t's gates in place: a = [a_i, a_f, a_g, a_o] → [i, f, g, o]; c = f⊙cp + i⊙g,
 * tc = tanh(c), h = o⊙tc. B rows of 4H gates, H units. */
TG_MANUAL_CLONES
static void SFX(lstm_step_fwd)(int B, int H, REAL *restrict a, const REAL *restrict cp,
                               REAL *restrict c, REAL *restrict tc, REAL *restrict h)
{
    for (int b = 0; b < B; b++) {
        REAL *ai = a + (size_t)b * 4 * H, *af = ai + H, *ag = af + H, *ao = ag + H;
        const size_t o = (size_t)b * H;
        for (int j = 0; j < H; j += VL) {
            const int n = H - j < VL ? H - j : VL;
            VR i, f, g, og, cn, t;
            SFX(vload)(&i, ai + j, n);
            SFX(vload)(&f, af + j, n);
            SFX(vload)(&g, ag + j, n);
            SFX(vload)(&og, ao + j, n);
            SFX(vload)(&cn, cp + o + j, n);
            SFX(vsigm)(&i);
            SFX(vsigm)(&f);
            SFX(vtanh)(&g);
            SFX(vsigm)(&og);
            cn = f * cn + i * g;
            t = cn;
            SFX(vtanh)(&t);
            SFX(vstore)(ai + j, &i, n);
            SFX(vstore)(af + j, &f, n);
            SFX(vstore)(ag + j, &g, n);
            SFX(vstore)(ao + j, &og, n);
            SFX(vstore)(c + o + j, &cn, n);
            SFX(vstore)(tc + o + j, &t, n);
            t *= og;
            SFX(vstore)(h + o + j, &t, n);
        }
    }
}

/* Step t's backward: dh (total d loss/d h_t) and dc (in: dc_{t+1}⊙f_{t+1}, out: dc_t⊙f_t)
 * turn the gates a = [i, f, g, o] into [da_i, da_f, da_g, da_o] in place. */
TG_MANUAL_CLONES
static void SFX(lstm_step_bwd)(int B, int H, REAL *restrict a, const REAL *restrict cp,
                               const REAL *restrict tc, const REAL *restrict dh,
                               REAL *restrict dc)
{
    for (int b = 0; b < B; b++) {
        REAL *ai = a + (size_t)b * 4 * H, *af = ai + H, *ag = af + H, *ao = ag + H;
        const size_t o = (size_t)b * H;
        for (int j = 0; j < H; j++) {
            const REAL i = ai[j], f = af[j], g = ag[j], og = ao[j], t = tc[o + j];
            const REAL d = dh[o + j];
            const REAL dct = d * og * (1 - t * t) + dc[o + j];
            ao[j] = d * t * og * (1 - og);
            ai[j] = dct * g * i * (1 - i);
            af[j] = dct * cp[o + j] * f * (1 - f);
            ag[j] = dct * i * (1 - g * g);
            dc[o + j] = dct * f;
        }
    }
}

void SFX(tg_manual_lstm_forward)(const struct tg_manual_layer *l)
{
    const int T = l->T, B = l->B, in = l->in, H = l->H, G = 4 * H;
    const REAL *X = l->X, *Wih = l->p[0], *Whh = l->p[1], *bih = l->p[2], *bhh = l->p[3];
    REAL *Hs = l->Hs, *A = l->A, *Cs = l->Cs, *TC = l->aux;
    const size_t BH = (size_t)B * H, BG = (size_t)B * G;

    SFX(set_state)(Hs, l->h0, BH);
    SFX(set_state)(Cs, l->c0, BH);
    /* A = X·W_ihᵀ + b_ih + b_hh for all T steps at once. */
    SFX(fill_rows)(A, (size_t)T * B, G, bih, bhh);
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T * B, G, in, 1, X, in, Wih, in, 1, A, G);
    for (int t = 0; t < T; t++) {
        REAL *a = A + t * BG;
        /* a_t += h_{t−1}·W_hhᵀ: all four gates in one GEMM. */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, G, H, 1, Hs + t * BH, H, Whh, H, 1,
             a, G);
        SFX(lstm_step_fwd)(B, H, a, Cs + t * BH, Cs + (t + 1) * BH, TC + t * BH,
                           Hs + (t + 1) * BH);
    }
}

void SFX(tg_manual_lstm_backward)(const struct tg_manual_layer *l,
                                  const struct tg_manual_layer_grad *g)
{
    const int T = l->T, B = l->B, in = l->in, H = l->H, G = 4 * H, TB = T * B;
    const REAL *X = l->X, *Wih = l->p[0], *Whh = l->p[1];
    REAL *Hs = l->Hs, *A = l->A, *Cs = l->Cs, *TC = l->aux;
    REAL *dH = g->dH, *dc = l->scratch;
    const size_t BH = (size_t)B * H, BG = (size_t)B * G;

    memset(dc, 0, BH * sizeof(REAL));  /* nothing flows into c_{T−1} from beyond the end */
    for (int t = T - 1; t >= 0; t--) {
        REAL *a = A + t * BG;
        /* dH_t already holds dH from above plus da_{t+1}·W_hh (added at step t+1). */
        SFX(lstm_step_bwd)(B, H, a, Cs + t * BH, TC + t * BH, dH + t * BH, dc);
        /* dh_{t−1} += da_t·W_hh; at t = 0 that is d loss / d h0. */
        REAL *dst = t > 0 ? dH + (t - 1) * BH : (REAL *)g->dh0;
        if (dst)
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, G, 1, a, G, Whh, H,
                 t > 0 ? 1 : 0, dst, H);
    }
    if (g->dc0) memcpy(g->dc0, dc, BH * sizeof(REAL));

    /* Weight gradients of all steps: one GEMM each over the stacked T·B rows. */
    REAL *gWih = g->grads[0], *gWhh = g->grads[1], *gbih = g->grads[2], *gbhh = g->grads[3];
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, G, in, TB, 1, A, G, X, in, 0, gWih, in);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, G, H, TB, 1, A, G, Hs, H, 0, gWhh, H);
    SFX(colsum)(A, (size_t)TB, G, G, gbih);
    memcpy(gbhh, gbih, (size_t)G * sizeof(REAL));  /* both biases enter a_t alike */
    if (g->dX)
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, TB, in, G, 1, A, G, Wih, in, 0,
             (REAL *)g->dX, in);
}
