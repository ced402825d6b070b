/* fused_kern.h — the kernels of TG_OP_FUSED for one dtype; ops/fused.c includes it twice, with
 * FT = float, S = f32 and FT = double, S = f64. Each instruction is a vector loop over one chunk
 * (≤ TG_FUSE_CHUNK elements of a row), so the loops vectorise and every operand stays in L1. */
#define KN_(a, b) a##_##b
#define KN(a, b) KN_(a, b)
/* for (j < len) body, vectorised; braces so it can follow `if` or a case label */
#define FUSED_LOOP(...) { TG_PRAGMA(omp simd) for (int j = 0; j < len; j++) { __VA_ARGS__; } }

/* Results of instructions 0 … n_ins−1 into v[n_in + k]. With for_bwd, only the values the
 * backward sweep reads (reg_val) are recomputed; kept outputs and saved results are read.
 * One case per op of elementwise.h, its `forward` expression. */
#define FUSED_EVAL_CASE(name, E, ar, fl, FWD, DA, DB, py, pa, pb)                              \
    case TG_OP_##E:                                                                            \
        FUSED_LOOP(FT a = pa_[j]; FT b = pb_[j]; (void)b; d[j] = (FWD))                        \
        break;
TG_SIMD_CLONES static void KN(fused_eval, S)(const struct tg_fuse_prog *p, FT *const *v, int len,
                                             int for_bwd)
{
    for (int k = 0; k < p->n_ins; k++) {
        const struct tg_fuse_instr *in = &p->ins[k];
        int dr = p->n_in + k;
        if (for_bwd && (p->reg_out[dr] >= 0 || p->reg_saved[dr] || !p->reg_val[dr])) continue;
        FT *d = v[dr];
        const FT *pa_ = v[in->a], *pb_ = in->b >= 0 ? v[in->b] : pa_;
        FT al = (FT)in->alpha, be = (FT)in->beta;
        (void)al, (void)be;
        switch (in->op) {
        TG_ELEMENTWISE_OPS(FUSED_EVAL_CASE)
        default: TG_ASSERT(!"a fused program holds only elementwise ops");
        }
    }
}
#undef FUSED_EVAL_CASE

/* dst[j] (+)= expr over the chunk: += if dst already holds a gradient, = for its first one. */
#define FUSED_ACC(acc, dst, expr)                                                              \
    {                                                                                          \
        if (acc) FUSED_LOOP(FUSED_VARS dst[j] += (expr)) else FUSED_LOOP(FUSED_VARS dst[j] = (expr)) \
    }
#define FUSED_VARS FT a = pa_[j], b = pb_[j], y = py_[j], g = gd[j]; (void)a, (void)b, (void)y, (void)g;
#define FUSED_GB_1(DB)
#define FUSED_GB_2(DB) if (gb) FUSED_ACC(q->acc_b, gb, (DB));
/* One case per op of elementwise.h: its `da` into source a, its `db` into source b. */
#define FUSED_SWEEP_CASE(name, E, ar, fl, FWD, DA, DB, py, pa, pb)                             \
    case TG_OP_##E:                                                                            \
        if (ga) FUSED_ACC(q->acc_a, ga, (DA));                                                 \
        FUSED_GB_##ar(DB)                                                                      \
        break;

/* Reverse sweep: each instruction adds its local derivative times g[dst] into its sources'
 * g (see fused.c), following the plan (fused.c): skipped when no gradient reached its result,
 * and assigning rather than adding into a source's scratch the first time it receives one
 * (so scratch is never zeroed). */
TG_SIMD_CLONES static void KN(fused_sweep, S)(const struct tg_fuse_prog *p, const struct tg_fuse_plan *pl,
                                              FT *const *v, FT *const *g, int len)
{
    for (int k = p->n_ins; k-- > 0;) {
        const struct tg_fuse_instr *in = &p->ins[k];
        const struct tg_fuse_plan *q = &pl[k];
        if (q->skip) continue;
        int dr = p->n_in + k;
        const FT *gd = g[dr], *py_ = v[dr], *pa_ = v[in->a], *pb_ = in->b >= 0 ? v[in->b] : pa_;
        FT *ga = q->to_a ? g[in->a] : NULL, *gb = q->to_b ? g[in->b] : NULL;
        FT al = (FT)in->alpha, be = (FT)in->beta;
        (void)al, (void)be, (void)gb;
        switch (in->op) {
        TG_ELEMENTWISE_OPS(FUSED_SWEEP_CASE)
        default: TG_ASSERT(!"a fused program holds only elementwise ops");
        }
    }
}
#undef FUSED_SWEEP_CASE
#undef FUSED_GB_1
#undef FUSED_GB_2
#undef FUSED_VARS

/* Point v at chunk [c0, c0+len) of row i: inputs in place (a broadcast row at row 0), kept
 * results in their output rows, the others in scratch. */
static void KN(fused_bind, S)(const struct tg_fuse_prog *p, int i, int c0, int len, FT **v, FT *vs)
{
    for (int r = 0; r < p->n_in; r++) {
        const struct tg_fuse_input *in = &p->in[r];
        const FT *x = (const FT *)in->x->data + in->off;
        switch (in->bcast) {
        case TG_BC_NONE: v[r] = (FT *)x + (size_t)i * in->x->cols + c0; break;
        case TG_BC_ROW: v[r] = (FT *)x + c0; break;
        default: { /* one value per row (column) or in all (scalar), spread over the chunk */
            FT val = x[in->bcast == TG_BC_COL ? (size_t)i * in->x->cols : 0];
            FT *buf = vs + (size_t)(p->n_ins + r) * TG_FUSE_CHUNK;
            FUSED_LOOP(buf[j] = val)
            v[r] = buf;
        }
        }
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
            KN(fused_bind, S)(p, i, c0, len, v, scr);
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
            KN(fused_bind, S)(p, i, c0, len, v, scr);
            KN(fused_eval, S)(p, v, len, 1);
            for (int r = 0; r < p->n_in; r++) {
                const struct tg_fuse_input *in = &p->in[r];
                if (p->reg_grad[r] && in->bcast == TG_BC_NONE && in->x->grad)
                    g[r] = (FT *)in->x->grad + (size_t)i * in->x->cols + in->off + c0;
            }
            for (int o = 0; o < p->n_out; o++)
                if (p->out[o]->grad)
                    g[p->out_reg[o]] = (FT *)p->out[o]->grad + (size_t)i * p->cols + c0;
            KN(fused_sweep, S)(p, pl, v, g, len);
            for (int r = 0; r < p->n_in; r++) {
                const struct tg_fuse_input *in = &p->in[r];
                if (!in->bcast || !bcast_done[r] || !in->x->grad) continue;
                FT *dst = (FT *)in->x->grad + in->off;
                const FT *src = g[r];
                if (in->bcast == TG_BC_ROW) {
                    dst += c0;
                    FUSED_LOOP(dst[j] += src[j]);
                } else { /* a column's element of row i, or the scalar: the chunk's sum */
                    FT sum = 0;
                    for (int j = 0; j < len; j++) sum += src[j];
                    dst[in->bcast == TG_BC_COL ? (size_t)i * in->x->cols : 0] += sum;
                }
            }
        }
}

#undef KN
#undef FUSED_LOOP
#undef FUSED_ACC
#undef KN_
