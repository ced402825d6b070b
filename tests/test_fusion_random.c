/* test_fusion_random.c — fusion regions against random programs. Each case records a random
 * chain of elementwise ops in one region and keeps a random subset of its results. The ops are
 * drawn from the op table (every op for which tg_op_is_elementwise holds, with its arity), so a
 * new elementwise op is covered without an edit here. Ops with a restricted domain get their
 * argument through a transform that keeps it inside (see apply_ew); the others take any value.
 * Its inputs are drawn from:
 *   - column blocks of a product made inside the region (a candidate for storage reuse);
 *   - a block of a product made before it (never reused);
 *   - a full tensor, a broadcast 1×n row, a broadcast B×1 column and a 1×1 scalar.
 * After the region, each kept result feeds a loss through further ops. The gradients of every
 * input are compared with fusion off, on and lean. Shapes are large enough (40×300) that with
 * 2 threads the fused kernels split their rows. Seeds are fixed, so a failing case reproduces;
 * its number and program are printed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tapegrad.h"
#include "tapegrad_ops.h"
#include "tg_config.h"
#if TG_HAVE_OPENMP
#include <omp.h>
#endif

enum { B = 40, H = 300, G = 4, MAXI = 16, NPAR = 6, CASES = 60 };

/* One random program: instruction k applies op[k] (an enum tg_op) to values a[k], b[k]
 * (indices into the values so far, taken modulo their count; a[k] < 0: the latest value);
 * keep[] picks results that leave the region. */
struct prog {
    int n, op[MAXI], a[MAXI], b[MAXI];
    int nk, keep[3];
    int keep_product; /* also keep the in-region product itself */
    int overlap;      /* add a column block overlapping two others */
};

struct world {
    struct tg_tensor *A, *W, *Y, *bias, *col, *scal; /* parameters whose gradients are compared */
    struct tg_tensor *V[3];            /* fixed projections of the kept results into the loss */
};

/* The elementwise ops of the table, in enum order (filled once by main). */
static enum tg_op ew_ops[TG_OP_COUNT];
static int n_ew_ops;
/* What the programs exercised (printed): ops drawn, reads of the column and the scalar. */
static long n_drawn[TG_OP_COUNT], n_col_reads, n_scalar_reads, n_exp_of_block;

static void collect_ew_ops(void)
{
    n_ew_ops = 0;
    for (int op = 0; op < TG_OP_COUNT; op++)
        if (tg_op_is_elementwise((enum tg_op)op)) ew_ops[n_ew_ops++] = (enum tg_op)op;
}

/* op(a[, b]) with its argument kept in its domain: log and sqrt read softplus(a) + 0.1 (> 0),
 * div divides by softplus(b) + 0.1 (≥ 0.1, no pole), and exp reads tanh(a) unless a is one of
 * the region's inputs (|a| ≤ 6: then exp's saved result may take over a gate block's storage,
 * like σ's; a chain of exps would overflow to ∞, and ∞ − ∞ compares as NaN); affine takes its
 * constants. The transforms are elementwise ops too, so they join the region. Any other op
 * takes its inputs as they are. */
static struct tg_tensor *apply_ew(struct tg_tape *t, enum tg_op op, struct tg_tensor *a,
                                  struct tg_tensor *b, int a_is_input)
{
    if (op == TG_OP_EXP && a_is_input) return tg_exp(t, a);
    switch (op) {
    case TG_OP_AFFINE: return tg_affine(t, a, 0.7, -0.2);
    case TG_OP_LOG:
    case TG_OP_SQRT: return tg_ew_apply(t, op, tg_affine(t, tg_softplus(t, a), 1.0, 0.1), NULL);
    case TG_OP_DIV: return tg_div(t, a, tg_affine(t, tg_softplus(t, b), 1.0, 0.1));
    case TG_OP_EXP: return tg_exp(t, tg_tanh(t, a));
    default: return tg_ew_apply(t, op, a, tg_op_arity(op) == 2 ? b : NULL);
    }
}

static struct tg_tensor *record(struct tg_tape *t, const struct world *w, const struct prog *p)
{
    struct tg_tensor *before = tg_matmul(t, w->A, w->W, 0, 1); /* B × G·H, outside the region */
    tg_tape_fuse_begin(t);
    struct tg_tensor *X = tg_matmul(t, w->A, w->W, 0, 1); /* made in the region */
    struct tg_tensor *v[8 + MAXI];
    int nv = 0;
    for (int g = 0; g < G; g++) v[nv++] = tg_slice(t, X, 1, g * H, (g + 1) * H);
    v[nv++] = tg_slice(t, before, 1, H, 2 * H);
    v[nv++] = w->Y;
    v[nv++] = w->bias;
    v[nv++] = w->col;
    v[nv++] = w->scal;
    if (p->overlap) v[nv++] = tg_slice(t, X, 1, H / 2, H / 2 + H);
    int first = nv;
    for (int k = 0; k < p->n; k++) {
        int ia = p->a[k] < 0 ? nv - 1 : p->a[k] % nv;
        struct tg_tensor *a = v[ia], *b = v[p->b[k] % nv];
        n_drawn[p->op[k]]++;
        int two = tg_op_arity((enum tg_op)p->op[k]) == 2;
        n_col_reads += (a == w->col) + (two && b == w->col);
        n_scalar_reads += (a == w->scal) + (two && b == w->scal);
        n_exp_of_block += p->op[k] == TG_OP_EXP && ia < G;
        struct tg_tensor *r = apply_ew(t, (enum tg_op)p->op[k], a, b, ia < first);
        /* a 1×n, B×1 or 1×1 result (bias op bias, f(column), …): widen; in the region this
         * changes its shape, so what is pending is computed first and the region goes on */
        if (r && (r->rows != B || r->cols != H)) r = tg_add(t, r, w->Y);
        if (!r) return NULL;
        v[nv++] = r;
    }
    struct tg_tensor *keep[4];
    int nk = 0;
    for (int i = 0; i < p->nk; i++) keep[nk++] = v[first + p->keep[i] % p->n];
    if (p->keep_product) keep[nk++] = X;
    if (tg_tape_fuse_end(t, keep, nk) != TG_OK) return NULL;
    struct tg_tensor *loss = NULL;
    for (int i = 0; i < p->nk; i++) {
        struct tg_tensor *s = tg_add(t, tg_sum(t, tg_tanh(t, tg_matmul(t, keep[i], w->V[i], 0, 1))),
                                     tg_mean(t, tg_mul(t, keep[i], keep[i])));
        loss = loss ? tg_add(t, loss, s) : s;
    }
    if (p->keep_product) loss = tg_add(t, loss, tg_mean(t, tg_tanh(t, X)));
    return loss;
}

/* Loss and all parameter gradients, one after another in g; 0 if recording failed. */
static int run(const struct world *w, const struct prog *p, int mode, double *loss, double *g)
{
    struct tg_tensor *ps[NPAR] = {w->A, w->W, w->Y, w->bias, w->col, w->scal};
    for (int i = 0; i < NPAR; i++) tg_tensor_zero_grad(ps[i]);
    struct tg_tape *t = tg_tape_new(0);
    tg_tape_set_fusion(t, mode);
    struct tg_tensor *l = record(t, w, p);
    int ok = l && tg_backward(t, l) == TG_OK;
    if (ok) {
        *loss = tg_get(l, 0, 0);
        size_t o = 0;
        for (int i = 0; i < NPAR; i++)
            for (int r = 0; r < ps[i]->rows; r++)
                for (int c = 0; c < ps[i]->cols; c++) g[o++] = tg_grad_get(ps[i], r, c);
    }
    tg_tape_free(t);
    return ok;
}

static void print_prog(const struct prog *p)
{
    for (int k = 0; k < p->n; k++)
        printf("  %d: %s(v%d, v%d)\n", k, tg_op_name((enum tg_op)p->op[k]), p->a[k], p->b[k]);
    printf("  keep %d results%s%s\n", p->nk, p->keep_product ? " and the product" : "",
           p->overlap ? "; an overlapping block" : "");
}

static void random_programs(int threads)
{
#if TG_HAVE_OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    struct tg_rng r;
    tg_rng_seed(&r, 4242);
    struct world w;
    w.A = tg_param_new("A", B, 6, TG_F64);
    w.W = tg_param_new("W", G * H, 6, TG_F64);
    w.Y = tg_param_new("Y", B, H, TG_F64);
    w.bias = tg_param_new("bias", 1, H, TG_F64);
    w.col = tg_param_new("col", B, 1, TG_F64);
    w.scal = tg_param_new("scal", 1, 1, TG_F64);
    tg_tensor_uniform(w.A, &r, -1, 1);
    tg_tensor_uniform(w.W, &r, -1, 1);
    tg_tensor_uniform(w.Y, &r, -1, 1);
    tg_tensor_uniform(w.bias, &r, -1, 1);
    tg_tensor_uniform(w.col, &r, -1, 1);
    tg_tensor_uniform(w.scal, &r, -1, 1);
    for (int i = 0; i < 3; i++) {
        w.V[i] = tg_param_new("V", 3, H, TG_F64);
        tg_tensor_uniform(w.V[i], &r, -0.1, 0.1);
    }
    size_t n = tg_numel(w.A) + tg_numel(w.W) + tg_numel(w.Y) + tg_numel(w.bias) +
               tg_numel(w.col) + tg_numel(w.scal);
    double *g[3];
    for (int m = 0; m < 3; m++) g[m] = malloc(n * sizeof *g[m]);
    double worst = 0;
    for (int c = 0; c < CASES; c++) {
        struct prog p = {0};
        p.n = 2 + (int)tg_rng_below(&r, MAXI - 2);
        for (int k = 0; k < p.n; k++) {
            p.op[k] = (int)ew_ops[tg_rng_below(&r, (uint32_t)n_ew_ops)];
            p.a[k] = (int)tg_rng_below(&r, 64);
            p.b[k] = (int)tg_rng_below(&r, 64);
            /* bias the draw toward LSTM-like shapes: σ/tanh straight on a gate block, or on
             * the previous result */
            uint32_t u = tg_rng_below(&r, 4);
            if (u == 0)
                p.op[k] = tg_rng_below(&r, 2) ? TG_OP_TANH : TG_OP_SIGMOID,
                p.a[k] = (int)tg_rng_below(&r, G);
            else if (u == 1) p.a[k] = -1;
        }
        p.nk = 1 + (int)tg_rng_below(&r, 3);
        for (int i = 0; i < p.nk; i++) p.keep[i] = p.n - 1 - (int)tg_rng_below(&r, (uint32_t)p.n);
        p.keep_product = tg_rng_below(&r, 4) == 0;
        p.overlap = tg_rng_below(&r, 4) == 0;
        double loss[3];
        for (int m = 0; m < 3; m++) {
            int mode = m == 0 ? TG_FUSION_OFF : m == 1 ? TG_FUSION_ON : TG_FUSION_LEAN;
            if (!run(&w, &p, mode, &loss[m], g[m])) {
                print_prog(&p);
                fail_msg("case %d, fusion mode %d, %d threads: %s", c, mode, threads, tg_last_error());
            }
        }
        double scale = 0;
        for (size_t j = 0; j < n; j++) scale = fmax(scale, fabs(g[0][j]));
        for (int m = 1; m < 3; m++) {
            double d = fabs(loss[m] - loss[0]) / fmax(fabs(loss[0]), 1e-300);
            for (size_t j = 0; j < n; j++) d = fmax(d, fabs(g[m][j] - g[0][j]) / scale);
            worst = fmax(worst, d);
            if (!(d <= 1e-12)) {
                print_prog(&p);
                fail_msg("case %d, %s, %d threads: relative difference %.3g from unfused", c,
                         m == 1 ? "fusion on" : "lean", threads, d);
            }
        }
    }
    printf("# %d random programs, %d thread(s): worst relative difference fused vs unfused %.3g\n",
           CASES, threads, worst);
    printf("# instructions drawn (all runs so far):");
    for (int i = 0; i < n_ew_ops; i++) {
        printf(" %s %ld", tg_op_name(ew_ops[i]), n_drawn[ew_ops[i]]);
        if (n_drawn[ew_ops[i]] == 0) fail_msg("no program drew %s", tg_op_name(ew_ops[i]));
    }
    printf("; column read %ld times, scalar %ld; exp of an in-region product block %ld\n",
           n_col_reads, n_scalar_reads, n_exp_of_block);
    assert_true(n_col_reads > 0 && n_scalar_reads > 0);
    for (int m = 0; m < 3; m++) free(g[m]);
    tg_tensor_free(w.A);
    tg_tensor_free(w.W);
    tg_tensor_free(w.Y);
    tg_tensor_free(w.bias);
    tg_tensor_free(w.col);
    tg_tensor_free(w.scal);
    for (int i = 0; i < 3; i++) tg_tensor_free(w.V[i]);
#if TG_HAVE_OPENMP
    omp_set_num_threads(saved);
#endif
}

static void test_random_programs_one_thread(void **state)
{
    (void)state;
    random_programs(1);
}

static void test_random_programs_two_threads(void **state)
{
    (void)state;
    random_programs(2);
}

int main(void)
{
    collect_ew_ops();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_programs_one_thread),
        cmocka_unit_test(test_random_programs_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
