/*
 * tapegrad_train.h — training end to end: a task, a sequence model, an optimizer, a loop with
 * held-out evaluation, progress callbacks, a CSV log, and atomic, bit-exact checkpoints.
 *
 *   struct tg_train_config cfg = {0};              // zeros/NULLs mean "the default"
 *   cfg.task = "adding"; cfg.length = 50; cfg.steps = 2000;
 *   struct tg_train_result res;
 *   if (tg_train(&cfg, &res) != TG_OK) puts(tg_last_error());
 *   printf("mse %g after %ld steps\n", res.eval.values[0], res.steps);
 *
 * One optimizer step = one batch from the task: zero the gradients, run the model over the
 * batch (in --seq chunks when truncated BPTT is on), tg_backward per chunk, clip, step.
 *
 * Truncated BPTT (seq > 0). The state is carried from chunk to chunk as a copy (a leaf: no
 * gradient crosses a chunk boundary).
 *   text   the task walks the file as B parallel streams, seq bytes per batch, so one step is one
 *          chunk and the state is carried from step to step (zeroed for a row when its stream
 *          starts over), as min-char-rnn carries hprev.
 *   others each batch's T steps are cut into ⌈T/seq⌉ chunks; every chunk's gradient is added up
 *          and the batch gives one optimizer step. A chunk without any label (the delay of copy,
 *          every chunk but the last of adding) contributes no gradient — which is exactly what
 *          makes long dependencies unlearnable across a truncation, by design.
 *
 * Held-out text. The text task trains on the first part of the file and evaluates on the rest
 * (valid_fraction, 0.1 by default) or on another file (valid); evaluation windows never read a
 * training byte, and the metrics are bits per character (and accuracy) on the held-out text.
 *
 * Loss. Classification (reber, copy, text): softmax cross-entropy summed over labelled positions
 * and, by default, divided by their number in the batch ("mean"); adding: MSE of the last step.
 *
 * Determinism. Everything random comes from one tg_rng seeded by cfg.seed (initialisation, then
 * batches); the held-out set comes from a second generator re-seeded for every evaluation, so
 * evaluating never changes the training stream. Same configuration ⇒ same parameter bytes.
 *
 * Micro-batches (micro_batches = K > 1). Each batch is cut into K fixed blocks of B/K sequences
 * (K must divide B). Each block is recorded and backpropagated on its own, its gradient copied
 * into slot k of one flat buffer, and the step's gradient is the sum of the K slots in the order
 * 0, 1, …, K−1, whichever process computed them. With cfg.dist spanning N ranks (K ≥ N), rank r
 * computes only its share of blocks, one MPI_Allgatherv per step fills every rank's buffer, and
 * every rank sums the same bytes in the same order: the parameters after any step are the same
 * bytes at every N, and in a single process given the same K. A slot also carries its block's
 * loss, metric sums and a stop/failure flag, so that is the step's only exchange. Losses are
 * weighted for the whole batch (mean: divided by the batch's count of labelled positions,
 * whichever block holds them; adding: each block's MSE divided by K). The carried TBPTT state
 * of a block's rows lives on the rank owning the block; rank 0 gathers it only to checkpoint.
 * Rank 0 alone writes the log and checkpoints and calls cfg.progress; every rank evaluates the
 * held-out set (the same bytes: every rank then takes the same decision to stop).
 *
 * Resuming. A checkpoint holds everything the next step depends on: parameters, optimizer state
 * and step count, the rng's four words, the task cursor, the carried TBPTT state and the run's
 * configuration; N steps + resume + N steps is bit-identical to 2N steps. When resuming, every
 * unset (0/NULL) field of the configuration is taken from the checkpoint, and a set field that
 * disagrees with it (another cell, size, dtype, optimizer, …) is an error.
 */
#ifndef TAPEGRAD_TRAIN_H
#define TAPEGRAD_TRAIN_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "tapegrad.h"
#include "tapegrad_models.h"
#include "tapegrad_optim.h"
#include "tapegrad_safetensors.h"
#include "tapegrad_tasks.h"

#ifdef __cplusplus
extern "C" {
#endif

struct tg_train_progress;
struct tg_dist;

/* Every field's 0 / NULL means the default in brackets (or, when resuming, the checkpoint's). */
struct tg_train_config {
    /* ---- what is trained (saved in checkpoints; must match when resuming) */
    const char *cell;             /* built-in cell name ["lstm"] */
    const struct tg_cell *cell_def; /* a user-defined cell; overrides `cell` (its name is saved) */
    const char *task;             /* "reber", "adding", "copy", "text" ["reber"] */
    const char *data;             /* text: the file to model (required for text) */
    const char *valid;            /* text: held-out text from this file (the whole data file
                                     trains) [none: the end of the data file, valid_fraction] */
    double valid_fraction;        /* text without `valid`: the share of the data file held out
                                     at its end, in (0, 1) [0.1]; evaluation reads only it */
    int lines;                    /* text: one sequence per line (tapegrad_tasks.h "Lines");
                                     seq is then the longest line + 1 [0: from the file] */
    int length;                   /* adding/copy T, reber's longest string [task default] */
    int batch;                    /* sequences per batch [32] */
    int hidden;                   /* H [64; text 128] */
    int layers;                   /* [1] */
    int embed;                    /* text: embedding width [vocabulary size] */
    int seq;                      /* TBPTT chunk length; text: window [25]; others [0 = off] */
    const char *dtype;            /* "f32" or "f64" ["f32"] */
    const char *optimizer;        /* sgd, adagrad, adagrad-minchar, adam, rmsprop ["adam"] */
    double lr;                    /* [adam: 1e-2; others: PyTorch's default] */
    double momentum;              /* sgd, rmsprop [0] */
    double clip_value;            /* clamp each gradient element to [−c, c] [off] */
    double clip_norm;             /* scale the global gradient norm down to this [off] */
    const char *loss;             /* "mean" or "sum" of the cross-entropy ["mean"] */
    const char *init;             /* "pytorch" (U(±1/√H)) or "minchar" (N(0, 0.01²)) ["pytorch"] */
    double forget_bias;           /* added to the LSTM variants' forget-gate bias [0] */
    int bidirectional;            /* every layer also runs right to left (adding, copy; not with
                                     seq, as a reverse direction cannot be truncated) [0] */
    double dropout;               /* p in [0, 1): dropout on every layer's output but the last's,
                                     in training steps only; masks from the run's rng [0] */
    uint64_t seed;                /* taken as is (0 is a seed like any other) */

    /* ---- how long, and what happens along the way (free to change when resuming) */
    long steps;                   /* total optimizer steps of the run, counting resumed ones
                                     [until_solved: 20000 cap; else 1000] */
    int until_solved;             /* stop at the first evaluation meeting the solved criterion */
    long eval_every;              /* steps between held-out evaluations [50] */
    int eval_size;                /* held-out sequences per evaluation [512] */
    const char *checkpoint;       /* write checkpoints here (atomically) */
    long checkpoint_every;        /* … every N steps, and always at the end [0: end only] */
    const char *resume;           /* continue from this checkpoint */
    int overwrite;                /* allow replacing an existing checkpoint when not resuming it */
    const char *log_path;         /* CSV: one row per step (appended when resuming); besides the
                                     global norm before clipping (grad_norm) it has ‖∂L/∂W‖ per
                                     layer (gnorm_l0, …) and for the rest (gnorm_out: output
                                     layer and embedding), before clipping */
    int detect_anomaly;           /* stop at the first NaN/inf in forward or backward, naming
                                     the op, step, layer, sequence and unit (tg_tape_set_anomaly) */
    /* ---- data parallelism (see "Micro-batches" above) */
    int micro_batches;            /* K fixed blocks of batch/K sequences each [1; resuming: the
                                     checkpoint's]; free to change when resuming (last bits) */
    struct tg_dist *dist;         /* the MPI job (tapegrad_dist.h), or NULL: one process */
    /* ---- memory for long sequences (free to change when resuming; not saved) */
    int recompute;                /* K: keep the state every K steps and recompute each segment
                                     in backward (tg_model_grad_recompute): O(T/K + K) activation
                                     memory, gradients equal up to the order of sums [0 = off] */
    volatile sig_atomic_t *stop;  /* set (e.g. by a SIGINT handler) to stop after this step */
    void (*progress)(const struct tg_train_progress *p, void *ctx); /* called after every step */
    void *progress_ctx;
};

/* What a progress callback sees (pointers valid during the call only). */
struct tg_train_progress {
    const char *cell, *task;
    long step, total;             /* steps done, of the run's total (or cap) */
    long start_step;              /* where this process started (resumed step or 0) */
    int until_solved;
    double loss, smooth_loss;     /* this step's loss; exponential moving average (0.95) */
    double grad_norm;             /* global gradient norm before norm clipping */
    const struct tg_metrics *train;  /* this step's batch */
    double smooth_metric;         /* moving average of the batch's headline metric */
    const struct tg_metrics *eval;   /* non-NULL when this step ran a held-out evaluation */
    const struct tg_metrics *last_eval; /* the latest evaluation, or NULL before the first */
    double seconds;               /* wall time since this process started training */
    double tokens_per_s;          /* input positions per second, this process */
    int checkpointed;             /* a checkpoint was written after this step */
};

struct tg_train_result {
    long steps;                   /* the step reached (total, counting resumed ones) */
    long steps_run;               /* steps run by this call */
    double seconds;               /* wall time of this call */
    int solved;                   /* the last evaluation met the task's solved criterion */
    long solved_step;             /* when (0 if not solved) */
    int interrupted;              /* stopped through cfg.stop */
    int checkpoint_written;       /* a checkpoint was written at the end */
    double loss, smooth_loss;     /* last step */
    struct tg_metrics eval;       /* final held-out evaluation (n = 0 if none ran) */
};

struct tg_trainer; /* opaque: task, model, optimizer, rng, batches, log */

/* Resolve the configuration (defaults, or the checkpoint's when cfg->resume is set), build task,
 * model and optimizer, initialise or restore them, open the log. Errors: TG_ERR_VALUE for bad
 * settings (unknown cell/task/optimizer, bad sizes, no data file), TG_ERR_IO / TG_ERR_FORMAT for
 * unreadable, corrupt or mismatched checkpoints (nothing is written then). */
enum tg_status tg_trainer_new(const struct tg_train_config *cfg, struct tg_trainer **out);
void tg_trainer_free(struct tg_trainer *tr);

/* One optimizer step. TG_ERR_VALUE if the gradient norm is not finite (the run diverged; the
 * parameters are left as they were before the step). */
enum tg_status tg_trainer_step(struct tg_trainer *tr);
/* Evaluate on the held-out set (the same sequences every call; state zero; no gradients). */
enum tg_status tg_trainer_eval(struct tg_trainer *tr, struct tg_metrics *out);
/* Write a checkpoint of the current state (atomically). Across ranks every rank calls it: rank 0
 * gathers the carried state and alone writes. */
enum tg_status tg_trainer_save(struct tg_trainer *tr, const char *path);
/* The loop: steps until cfg.steps (or solved, or stop), evaluations, checkpoints, log rows,
 * progress calls. A checkpoint is written at the end (also when stopped) if cfg.checkpoint is
 * set. res may be NULL. */
enum tg_status tg_trainer_run(struct tg_trainer *tr, struct tg_train_result *res);

const struct tg_train_config *tg_trainer_config(const struct tg_trainer *tr); /* resolved */
struct tg_model *tg_trainer_model(const struct tg_trainer *tr);
struct tg_optim *tg_trainer_optim(const struct tg_trainer *tr);
struct tg_task *tg_trainer_task(const struct tg_trainer *tr);
long tg_trainer_steps(const struct tg_trainer *tr);
double tg_trainer_last_loss(const struct tg_trainer *tr);
/* Across ranks, where the last error came from: 0 — every rank returned it at the same step;
 * 1 — this rank alone failed (rank 0's checkpoint or log) and the others carry on, so the job
 * has to be stopped (tg_dist_abort); 2 — this rank's micro-batch failed, the others learnt of it
 * in the step's exchange and stopped too, and this rank's message is the one saying why. */
int tg_trainer_failed_alone(const struct tg_trainer *tr);

/* new + run + free. */
enum tg_status tg_train(const struct tg_train_config *cfg, struct tg_train_result *res);

/* Train each cell of the comma-separated list on the same task, configuration and seed, and
 * print one table to `table` (if not NULL): cell, final held-out metrics, solved at, steps,
 * time. results (may be NULL) receives up to max entries; *n the number of cells run.
 * Checkpoints and resuming are not allowed here (TG_ERR_VALUE). */
enum tg_status tg_train_compare(const struct tg_train_config *base, const char *cells,
                                FILE *table, struct tg_train_result *results, int max, int *n);

/* Sample n bytes from a text model (no-grad tape): prime it with `prime` (may be NULL or empty:
 * then the first input is a vocabulary byte drawn at random), then draw each next byte from
 * softmax(logits/temperature) and feed it back, as min-char-rnn's sample(). Writes the n sampled
 * bytes (not the prime) to out. Errors: a prime byte not in the vocabulary (TG_ERR_VALUE,
 * naming it), temperature ≤ 0, a model that does not take tokens. */
enum tg_status tg_sample_text(struct tg_model *m, const uint8_t *vocab, int vocab_n,
                              const char *prime, long n, double temperature,
                              struct tg_rng *rng, FILE *out);
/* The same for a model trained with lines: every line is a sequence of its own, started by the
 * '\n' start mark from a zero state, as in training — the prime is the beginning of the first
 * line, and after each sampled '\n' (a line's end) the state is zeroed for the next line. */
enum tg_status tg_sample_lines(struct tg_model *m, const uint8_t *vocab, int vocab_n,
                               const char *prime, long n, double temperature,
                               struct tg_rng *rng, FILE *out);

/* ------------------------------------------------------------------ checkpoints
 *
 * One safetensors file:
 *   tensors    the model's parameters under its PyTorch names (rnn.weight_ih_l0, …, out.weight,
 *              out.bias, embed.weight), biases 1-D as in a state_dict; the optimizer's state
 *              (optim.<slot>.<parameter>); train.step, train.optim_steps, train.cursor (I64 [1]),
 *              train.rng (I64 [4], the xoshiro words' bits), train.smooth_loss (F64 [1]); the
 *              carried TBPTT state, state.<h|c>_l<k> (B×H), when there is one
 *   metadata   format "tapegrad-checkpoint", version, and the resolved configuration: cell,
 *              task, data, valid, valid_fraction, lines, length, batch, hidden, layers, embed,
 *              seq, micro_batches, dtype, loss, init, forget_bias, bidirectional, dropout, seed,
 *              clip_value, clip_norm, every optimizer field (optim.*), and
 *              for text the vocabulary as hex bytes (vocab_hex), so sampling needs no data file
 * Numbers in the metadata are printed with 17 significant digits, so they read back exactly. */

struct tg_checkpoint; /* an opened, validated checkpoint file */

/* What besides the model and optimizer a checkpoint carries. */
struct tg_checkpoint_state {
    long step, optim_steps;
    int64_t cursor;
    struct tg_rng rng;
    double smooth_loss;
    int vocab_n;
    uint8_t vocab[256];
};

/* Write atomically (temp file, fsync, rename). cfg: the resolved configuration; o may be NULL
 * (no optimizer state). Writes the model's carried state if it has one. */
enum tg_status tg_checkpoint_save(const char *path, const struct tg_train_config *cfg,
                                  const struct tg_model *m, const struct tg_optim *o,
                                  const struct tg_checkpoint_state *s);

/* Read and validate: a safetensors file with tapegrad's format tag and a complete, parsable
 * configuration. TG_ERR_IO / TG_ERR_FORMAT with a message naming the file otherwise. */
enum tg_status tg_checkpoint_open(const char *path, struct tg_checkpoint **out);
void tg_checkpoint_close(struct tg_checkpoint *c);
/* The saved configuration (strings live as long as c) and scalar state. */
/* The cell file a checkpoint was trained with (its text is in the metadata), or NULL for a
 * built-in cell. Lives as long as the checkpoint is open. */
const struct tg_cell *tg_checkpoint_cell(const struct tg_checkpoint *c);
/* The same, handed over: the caller frees it with tg_cell_free (after any model using it). */
struct tg_cell *tg_checkpoint_take_cell(struct tg_checkpoint *c);
const struct tg_train_config *tg_checkpoint_config(const struct tg_checkpoint *c);
const struct tg_checkpoint_state *tg_checkpoint_state(const struct tg_checkpoint *c);
/* The saved optimizer configuration. */
const struct tg_optim_config *tg_checkpoint_optim_config(const struct tg_checkpoint *c);
/* Model configuration sizes: input width and output count as saved. */
void tg_checkpoint_model_dims(const struct tg_checkpoint *c, int *input, int *vocab, int *outputs);
/* Copy the parameters (and carried state, if saved) into m, which must have the saved
 * architecture: each tensor must exist with the exact shape and dtype (TG_ERR_FORMAT). */
enum tg_status tg_checkpoint_load_model(const struct tg_checkpoint *c, struct tg_model *m);
/* Copy the optimizer state tensors and step count into o (same configuration and parameters). */
enum tg_status tg_checkpoint_load_optim(const struct tg_checkpoint *c, struct tg_optim *o);
/* Does the file hold at least as many numbers as a model of configuration mc has weights?
 * TG_ERR_FORMAT otherwise. Checked before such a model is allocated, so that a file whose
 * metadata claims a huge size (hidden 60000 over tensors of H = 2) is refused instead of
 * making us allocate gigabytes. tg_checkpoint_new_model and the trainer call it. */
enum tg_status tg_checkpoint_check_model_size(const struct tg_checkpoint *c,
                                              const struct tg_model_config *mc);
/* Build a model from a checkpoint alone (for sampling): cell by name (built-in, or cell_def if
 * its name matches), sizes and dtype from the metadata, parameters loaded. */
enum tg_status tg_checkpoint_new_model(const struct tg_checkpoint *c, const struct tg_cell *cell_def,
                                       struct tg_model **out);

/* Remove stale temporary files "<path>.tmp.<pid>" left by processes that no longer run (a
 * kill during a save). Returns how many were removed. */
int tg_checkpoint_clean_temps(const char *path);

#ifdef __cplusplus
}
#endif
#endif
