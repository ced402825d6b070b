/* fused_kern.h — the kernels of TG_OP_FUSED for one dtype; ops/fused.c includes it twice, with
 * FT = float, S = f32 and FT = double, S = f64. Each instruction is a vector loop over one chunk
 * (≤ TG_FUSE_CHUNK elements of a row), so the loops vectorise and every operand stays in L1. */
#define KN_(a, b) a##_##b
#define KN(a, b) KN_(a, b)
/* for (j < len) body, vectorised; braces so it can follow `if` or a case label */
#define FUSED_LOOP(body) { TG_PRAGMA(omp simd) for (int j = 0; j < len; j++) { body; } }

/* Results of instructions 0 … n_ins−1 into v[n_in + k]. With for_bwd, only the values the
 * backward sweep reads (reg_val) are recomputed; kept outputs and saved results are read. */
TG_SIMD_CLONES static void KN(fused_eval, S)(const struct tg_fuse_prog *p, FT *const *v, int len,
                                             int for_bwd)
{
    for (int k = 0; k < p->n_ins; k++) {
        const struct tg_fuse_instr *in = &p->ins[k];
        int dr = p->n_in + k;
        if (for_bwd && (p->reg_out[dr] >= 0 || p->reg_saved[dr] || !p->reg_val[dr])) continue;
        FT *d = v[dr];
        const FT *a = v[in->a], *b = in->b >= 0 ? v[in->b] : a;
        FT al = (FT)in->alpha, be = (FT)in->beta;
        switch (in->op) {
        case TG_OP_ADD: FUSED_LOOP(d[j] = a[j] + b[j]) break;
        case TG_OP_SUB: FUSED_LOOP(d[j] = a[j] - b[j]) break;
        case TG_OP_MUL: FUSED_LOOP(d[j] = a[j] * b[j]) break;
        case TG_OP_AFFINE: FUSED_LOOP(d[j] = al * a[j] + be) break;
        case TG_OP_TANH: FUSED_LOOP(d[j] = FUSED_TANH(a[j])) break;
        case TG_OP_SIGMOID: FUSED_LOOP(d[j] = FUSED_SIGMOID(a[j])) break;
        default: /* TG_OP_RELU */ FUSED_LOOP(d[j] = a[j] > 0 ? a[j] : 0) break;
        }
    }
}

/* dst[j] (+)= expr over the chunk: += if dst already holds a gradient, = for its first one. */
#define FUSED_ACC(acc, dst, expr)                                                              \
    {                                                                                          \
        if (acc) FUSED_LOOP(dst[j] += (expr)) else FUSED_LOOP(dst[j] = (expr))                 \
    }

/* Reverse sweep: each instruction adds its local derivative times g[dst] into its sources'
 * g (the same formulas as the op files; see fused.c), following the plan (fused.c): skipped
 * when no gradient reached its result, and assigning rather than adding into a source's
 * scratch the first time it receives one (so scratch is never zeroed). */
TG_SIMD_CLONES static void KN(fused_sweep, S)(const struct tg_fuse_prog *p, const struct tg_fuse_plan *pl,
                                              FT *const *v, FT *const *g, int len)
{
    for (int k = p->n_ins; k-- > 0;) {
        const struct tg_fuse_instr *in = &p->ins[k];
        const struct tg_fuse_plan *q = &pl[k];
        if (q->skip) continue;
        int dr = p->n_in + k;
        const FT *gd = g[dr], *y = v[dr], *a = v[in->a], *b = in->b >= 0 ? v[in->b] : a;
        FT *ga = q->to_a ? g[in->a] : NULL, *gb = q->to_b ? g[in->b] : NULL;
        FT al = (FT)in->alpha;
        switch (in->op) {
        case TG_OP_ADD:
            if (ga) FUSED_ACC(q->acc_a, ga, gd[j]);
            if (gb) FUSED_ACC(q->acc_b, gb, gd[j]);
            break;
        case TG_OP_SUB:
            if (ga) FUSED_ACC(q->acc_a, ga, gd[j]);
            if (gb) FUSED_ACC(q->acc_b, gb, -gd[j]);
            break;
        case TG_OP_MUL:
            if (ga) FUSED_ACC(q->acc_a, ga, gd[j] * b[j]);
            if (gb) FUSED_ACC(q->acc_b, gb, gd[j] * a[j]);
            break;
        case TG_OP_AFFINE:
            if (ga) FUSED_ACC(q->acc_a, ga, al * gd[j]);
            break;
        case TG_OP_TANH:
            if (ga) FUSED_ACC(q->acc_a, ga, gd[j] * (1 - y[j] * y[j]));
            break;
        case TG_OP_SIGMOID:
            if (ga) FUSED_ACC(q->acc_a, ga, gd[j] * y[j] * (1 - y[j]));
            break;
        default: /* TG_OP_RELU */
            if (ga) FUSED_ACC(q->acc_a, ga, a[j] > 0 ? gd[j] : 0);
            break;
        }
    }
}

/* Point v at chunk [c0, c0+len) of row i: inputs in place (a broadcast row at row 0), kept
 * results in their output rows, the others in scratch. */
static void KN(fused_bind, S)(const struct tg_fuse_prog *p, int i, int c0, FT **v, FT *vs)
{
    for (int r = 0; r < p->n_in; r++) {
        const struct tg_fuse_input *in = &p->in[r];
        v[r] = (FT *)in->x->data + (size_t)(in->bcast ? 0 : i) * in->x->cols + in->off + c0;
    }
    for (int k = 0; k < p->n_ins; k++) {
        int r = p->n_in + k, o = p->reg_out[r];
        v[r] = o >= 0 ? (FT *)p->out[o]->data + (size_t)i * p->cols + c0
               : p->reg_saved[r] ? (FT *)p->reg_saved[r] + (size_t)i * p->reg_saved_ld[r] + c0
               : vs + (size_t)k * TG_FUSE_CHUNK;
    }
}

static void KN(fused_fwd_rows, S)(const struct tg_fuse_prog *p, int r0, int r1, FT *scr)
{
    FT *v[TG_FUSE_MAX_IN + TG_FUSE_MAX_INSTR];
    for (int i = r0; i < r1; i++)
        for (int c0 = 0; c0 < p->cols; c0 += TG_FUSE_CHUNK) {
            int len = p->cols - c0 < TG_FUSE_CHUNK ? p->cols - c0 : TG_FUSE_CHUNK;
            KN(fused_bind, S)(p, i, c0, v, scr);
            KN(fused_eval, S)(p, v, len, 0);
        }
}

/* Backward over rows [r0, r1): recompute the values the sweep reads, bind every gradient
 * (a full-width input's and a kept output's straight to their buffers, the rest to scratch),
 * sweep, and add a broadcast row input's scratch into its row. */
static void KN(fused_bwd_rows, S)(const struct tg_fuse_prog *p, const struct tg_fuse_plan *pl,
                                  const unsigned char *bcast_done, int r0, int r1, FT *scr)
{
    FT *v[TG_FUSE_MAX_IN + TG_FUSE_MAX_INSTR], *g[TG_FUSE_MAX_IN + TG_FUSE_MAX_INSTR];
    FT *gs = scr + (size_t)p->n_reg * TG_FUSE_CHUNK;
    for (int r = 0; r < p->n_reg; r++) g[r] = gs + (size_t)r * TG_FUSE_CHUNK;
    for (int i = r0; i < r1; i++)
        for (int c0 = 0; c0 < p->cols; c0 += TG_FUSE_CHUNK) {
            int len = p->cols - c0 < TG_FUSE_CHUNK ? p->cols - c0 : TG_FUSE_CHUNK;
            KN(fused_bind, S)(p, i, c0, v, scr);
            KN(fused_eval, S)(p, v, len, 1);
            for (int r = 0; r < p->n_in; r++) {
                const struct tg_fuse_input *in = &p->in[r];
                if (p->reg_grad[r] && !in->bcast && in->x->grad)
                    g[r] = (FT *)in->x->grad + (size_t)i * in->x->cols + in->off + c0;
            }
            for (int o = 0; o < p->n_out; o++)
                if (p->out[o]->grad)
                    g[p->out_reg[o]] = (FT *)p->out[o]->grad + (size_t)i * p->cols + c0;
            KN(fused_sweep, S)(p, pl, v, g, len);
            for (int r = 0; r < p->n_in; r++) {
                const struct tg_fuse_input *in = &p->in[r];
                if (!in->bcast || !bcast_done[r] || !in->x->grad) continue;
                FT *dst = (FT *)in->x->grad + in->off + c0;
                const FT *src = g[r];
                FUSED_LOOP(dst[j] += src[j]);
            }
        }
}

#undef KN
#undef FUSED_LOOP
#undef FUSED_ACC
#undef KN_
