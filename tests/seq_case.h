/* seq_case.h — a small unrolled model with random weights, inputs and labels, and its loss as a
 * tg_loss_fn, for the tests that gradient-check whole sequences (test_cells.c,
 * test_layernorm.c). */
#ifndef TG_TEST_SEQ_CASE_H
#define TG_TEST_SEQ_CASE_H

#include <stdlib.h>
#include <string.h>

#include "tapegrad_models.h"

struct seq_case {
    struct tg_model *m;
    struct tg_seq_batch b;
    double *x;
    int32_t *y;
    struct tg_tensor *init[6];
    int n_init;
    int fusion; /* the mode the loss function records with (default on) */
};

/* Draws parameter i of m from r; NULL: U(−0.8, 0.8), wider than PyTorch's init so gates leave
 * their linear regime. */
typedef void (*seq_param_init)(struct tg_model *m, int i, struct tg_rng *r);

/* Inputs U(−1, 1), labels uniform with one position unlabelled; with_init: a random initial
 * state U(−0.5, 0.5) that wants a gradient. */
static inline void seq_case_new(struct seq_case *c, const struct tg_cell *cell, int T, int B, int I,
                                int H, int L, int V, enum tg_dtype dt, uint64_t seed, int with_init,
                                seq_param_init init)
{
    memset(c, 0, sizeof *c);
    struct tg_model_config cfg = {.cell = cell, .input = I, .hidden = H, .layers = L,
                                  .outputs = V, .dtype = dt, .loss = TG_LOSS_XENT_SUM};
    if (tg_model_new(&cfg, &c->m) != TG_OK) fail_msg("%s", tg_last_error());
    struct tg_rng r;
    tg_rng_seed(&r, seed);
    for (int i = 0; i < c->m->n_params; i++) {
        if (init) init(c->m, i, &r);
        else tg_tensor_uniform(c->m->params[i], &r, -0.8, 0.8);
    }
    c->x = malloc(sizeof(double) * T * B * I);
    c->y = malloc(sizeof(int32_t) * T * B);
    for (int i = 0; i < T * B * I; i++) c->x[i] = 2 * tg_rng_uniform(&r) - 1;
    for (int i = 0; i < T * B; i++) c->y[i] = (int32_t)tg_rng_below(&r, (uint32_t)V);
    if (T * B > 2) c->y[1] = -1; /* one position without loss */
    c->b = (struct tg_seq_batch){.T = T, .B = B, .x = c->x, .labels = c->y};
    if (with_init) {
        c->n_init = L * cell->n_state;
        assert_true(c->n_init <= 6);
        for (int i = 0; i < c->n_init; i++) {
            c->init[i] = tg_tensor_new_heap(B, H, dt);
            tg_tensor_uniform(c->init[i], &r, -0.5, 0.5);
            tg_tensor_set_requires_grad(c->init[i]);
        }
    }
    c->fusion = TG_FUSION_ON;
}

static inline void seq_case_free(struct seq_case *c)
{
    tg_model_free(c->m);
    free(c->x);
    free(c->y);
    for (int i = 0; i < c->n_init; i++) tg_tensor_free(c->init[i]);
}

static inline struct tg_tensor *seq_case_loss(struct tg_tape *t, void *ctx)
{
    struct seq_case *c = ctx;
    struct tg_seq_result res;
    tg_tape_set_fusion(t, c->fusion);
    if (tg_model_forward_from(c->m, t, &c->b, c->n_init ? c->init : NULL, &res) != TG_OK) return NULL;
    return res.loss;
}

#endif
