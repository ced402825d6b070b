/* train_impl.h — what train.c (set-up, evaluation, the run loop, checkpoints) and
 * train_step.c (one optimisation step: micro-batches, their exchange, norms, clipping) share.
 * Private to models/. */
#ifndef TG_TRAIN_IMPL_H
#define TG_TRAIN_IMPL_H

#include <signal.h>

#include "tapegrad_dist.h"
#include "tapegrad_train.h"
#include "train_log.h"

#define SMOOTH 0.95                       /* moving average of the displayed loss (~20 steps) */
#define SLOT_HEAD 128                     /* bytes before a micro-batch slot's gradients */

#define TRY(expr)                                                                              \
    do {                                                                                       \
        enum tg_status st_ = (expr);                                                           \
        if (st_ != TG_OK) return st_;                                                          \
    } while (0)

struct tg_trainer {
    struct tg_train_config cfg;   /* resolved; strings are static names or owned below */
    char *owned_data;
    char *owned_valid;
    struct tg_cell *owned_cell;   /* a resumed run's cell file, from its checkpoint */
    struct tg_checkpoint *ck;     /* open while resuming (its strings back cfg) */
    struct tg_task *task, *eval_task;
    struct tg_model *model;
    struct tg_optim *optim;
    struct tg_tape *tape;
    struct tg_rng rng;
    struct tg_batch batch, eval_batch;
    double *probs, *eval_probs;
    int text, regression, mean_loss;
    long step, tokens;
    double loss, smooth_loss, grad_norm, smooth_metric;
    struct tg_metrics train_m, eval_m;
    int have_eval;
    long eval_step;               /* the step eval_m was measured at (−1: never) */
    struct train_log log;         /* log.f is NULL when there is none */
    /* micro-batches and ranks (see tapegrad_train.h) */
    int rank, nranks, lead;       /* lead: rank 0, which alone logs and checkpoints */
    int k0, kn;                   /* this rank's micro-batches [k0, k0 + kn) */
    struct tg_batch sub;          /* the micro-batch being computed (K > 1) */
    unsigned char *slots;         /* K slots of slot_bytes: header, then every gradient */
    size_t slot_bytes;
    int stop_seen;                /* some rank's stop flag was set during the last step */
    int failed_alone;             /* where the last error came from (tg_trainer_failed_alone) */
    double *gnorm;                /* ‖∂L/∂W‖ per layer, then the rest (log columns), pre-clip */
    uint64_t drop_seed;           /* dropout: this step's draw from rng; block r0's masks come
                                     from a generator seeded by it and r0 (train_step.c) */
    struct tg_recompute *rc;      /* --recompute K: saved segment states (NULL: plain run) */
    struct tg_recompute *eval_rc; /* … and the held-out forward in K-step segments */
};

/* The model's outputs for rows of one chunk, as probabilities (train.c). */
void train_outputs(const struct tg_trainer *tr, const struct tg_seq_result *res, double *out,
                   int t0, int B);

#endif
