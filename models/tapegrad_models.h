/*
 * tapegrad_models.h — recurrent cells as pure compositions of ops, and the sequence model that
 * unrolls them. Nothing here computes a gradient: BPTT is tg_backward on the unrolled tape.
 *
 * Defining a cell: a parameter list (shapes as linear forms in the layer's input width `in` and
 * hidden width H) and one step function that maps (x_t, state_{t−1}) to state_t with ops:
 *
 *   static const struct tg_param_spec my_params[] = {
 *       {"weight_ih", TG_SHAPE(1, 0, 0, 0, 1, 0)},   // H × in
 *       {"weight_hh", TG_SHAPE(1, 0, 0, 1, 0, 0)},   // H × H
 *       {"bias",      TG_SHAPE(0, 0, 1, 1, 0, 0)},   // 1 × H
 *   };
 *   static void my_step(struct tg_tape *t, struct tg_tensor *const *w, struct tg_tensor *x,
 *                       struct tg_tensor *const *s, struct tg_tensor **next)
 *   {
 *       struct tg_tensor *a = tg_add(t, tg_matmul(t, x, w[0], 0, 1), tg_matmul(t, s[0], w[1], 0, 1));
 *       next[0] = tg_tanh(t, tg_add(t, a, w[2]));
 *   }
 *   const struct tg_cell my_cell = {"my_rnn", "h' = tanh(W x + U h + b)", 1, 1, 3, my_params, my_step};
 *
 * and it trains, checks and draws like the built-in ones (tg_model_new takes any struct tg_cell).
 */
#ifndef TAPEGRAD_MODELS_H
#define TAPEGRAD_MODELS_H

#include "tapegrad.h"
#include "tapegrad_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ cells */

/* rows = r_h·H + r_in·in + r_1,  cols = c_h·H + c_in·in + c_1 */
struct tg_param_shape { int r_h, r_in, r_1, c_h, c_in, c_1; };
#define TG_SHAPE(rh, rin, r1, ch, cin, c1) {rh, rin, r1, ch, cin, c1}

struct tg_param_spec {
    const char *name;             /* PyTorch's name where one exists, without the _l{k} suffix */
    struct tg_param_shape shape;
    int ndim;                     /* 1: a vector (1×N, stored 1-D in files); 2: a matrix;
                                     0: 1-D if it is a single row named *bias* (C cells) */
};

/* 1 or 2: how a parameter is stored in safetensors files (PyTorch keeps biases 1-D). */
int tg_param_spec_ndim(const struct tg_param_spec *s);

/* One time step. w: the layer's parameters in spec order; x: B×in; state: n_state tensors of
 * B×H (state[0] is h, the layer's output); writes the new state into next[0..n_state).
 * Compose ops only; a failing op leaves NULL, which the unroller reports. */
typedef void (*tg_cell_step_fn)(struct tg_tape *t, struct tg_tensor *const *w,
                                struct tg_tensor *x, struct tg_tensor *const *state,
                                struct tg_tensor **next);

/* Optional: the part of a step that depends on the input alone (typically x W_ihᵀ + b_ih).
 * The unroller applies it once to all T·B rows of the layer's input — one GEMM instead of T
 * small ones — and hands step t its B-row block in place of x. Pure ops, like step. */
typedef struct tg_tensor *(*tg_cell_input_fn)(struct tg_tape *t, struct tg_tensor *const *w,
                                              struct tg_tensor *X);

/* The same with a context (a compiled cell file) and the layer's sizes (in = its input width). */
typedef void (*tg_cell_step_ctx_fn)(const void *ctx, int in, int hidden, struct tg_tape *t,
                                    struct tg_tensor *const *w, struct tg_tensor *x,
                                    struct tg_tensor *const *state, struct tg_tensor **next);
typedef struct tg_tensor *(*tg_cell_input_ctx_fn)(const void *ctx, int in, int hidden,
                                                  struct tg_tape *t, struct tg_tensor *const *w,
                                                  struct tg_tensor *X);

struct tg_cell {
    const char *name;
    const char *equations;        /* for --help and DOT titles (a cell file's: one per line) */
    int n_state;                  /* 1: h; 2: h and c */
    int gates;                    /* gate blocks stacked in the weights' rows (for reports) */
    int n_params;
    const struct tg_param_spec *params;
    tg_cell_step_fn step;
    tg_cell_input_fn input;       /* NULL: step receives x itself */
    /* Cells with a context (cell files, tg_cell_parse) leave step NULL and set these: */
    const void *ctx;
    tg_cell_step_ctx_fn step_ctx;
    tg_cell_input_ctx_fn input_ctx; /* NULL: step_ctx receives x itself */
    /* Optional: check the cell for a layer of these sizes (tg_model_new calls it per layer). */
    enum tg_status (*check)(const void *ctx, int in, int hidden);
};

/* ------------------------------------------------------------ cell files */

/* A cell written as equations (docs: the cell language), e.g. models/cells/lstm.cell:
 *
 *   state h, c
 *   param weight_ih[4H, I], weight_hh[4H, H], bias_ih[4H], bias_hh[4H]
 *   a  = weight_ih @ x + bias_ih + weight_hh @ h + bias_hh
 *   i  = sigmoid(a[0:H])
 *   ...
 *   h' = o * tanh(c')
 *
 * compiled into a struct tg_cell whose step records ordinary ops (parts that read only x and
 * parameters are hoisted into the input projection). Errors, here and when a model is built
 * for concrete sizes, are one line "FILE:LINE:COL: message" in tg_last_error(); NULL then. */
struct tg_cell *tg_cell_parse(const char *text, size_t len, const char *path);
struct tg_cell *tg_cell_load(const char *path);
void tg_cell_free(struct tg_cell *cell);  /* a parsed cell (anything else: ignored) */
/* A parsed cell's file text and path (NULL for C cells). */
const char *tg_cell_source(const struct tg_cell *cell, size_t *len);
const char *tg_cell_path(const struct tg_cell *cell);
/* A parsed cell's name for state k ("h", "c"); NULL for C cells. */
const char *tg_cell_state_name(const struct tg_cell *cell, int k);
/* Do two cells have the same file text (both parsed from equal sources)? */
int tg_cell_same_source(const struct tg_cell *a, const struct tg_cell *b);
/* Does a cell file have `init` lines (docs/cell-language.md)? 0 for C cells. */
int tg_cell_has_init(const struct tg_cell *cell);
/* Check a cell for a layer of input width `in` and hidden width H (TG_OK for C cells). */
enum tg_status tg_cell_check(const struct tg_cell *cell, int in, int hidden);

/* The nine built-in cells: rnn_tanh, rnn_relu, lstm, gru, gru_cho, lstm_peephole,
 * lstm_coupled, lstm_dlbook, mgu. */
const struct tg_cell *tg_cell_find(const char *name);
int tg_cell_count(void);
const struct tg_cell *tg_cell_at(int i);
/* "rnn_tanh, rnn_relu, …" for error messages. */
const char *tg_cell_names(void);

/* rows × cols of a parameter for a layer of input width `in`; 0 (and 0×0) if that is not a
 * positive size that fits an int. */
int tg_param_spec_dims(const struct tg_param_spec *s, int in, int hidden, int *rows, int *cols);

/* ------------------------------------------------------------------ model */

enum tg_loss_kind {
    TG_LOSS_XENT_SUM,   /* softmax-cross-entropy over every labelled (t, b), summed */
    TG_LOSS_XENT_MEAN,  /* … averaged over labelled positions */
    TG_LOSS_MSE_LAST,   /* MSE (mean) between the output at the last step and a B×V target */
};

struct tg_model_config {
    const struct tg_cell *cell;
    int input;          /* I: width of a dense input, or of the embedding when vocab > 0 */
    int vocab;          /* > 0: inputs are token ids in [0, vocab), embedded (embed.weight) */
    int hidden;         /* H */
    int layers;         /* L ≥ 1 */
    int outputs;        /* V: classes (xent) or regression width (mse) */
    enum tg_dtype dtype;
    enum tg_loss_kind loss;
    int bidirectional;  /* 1: every layer also runs right to left (PyTorch's bidirectional=True):
                           parameters *_l{k}_reverse, each layer's output [forward; reverse]
                           (2H wide: layer k+1's input and the output layer's), state l·2 + d */
    double dropout;     /* p in [0, 1): dropout on the output of every layer but the last, in
                           training only (dropout_rng set), kept units scaled by 1/(1 − p) */
};

struct tg_model {
    struct tg_model_config cfg;
    int n_params;
    struct tg_tensor **params;    /* [embed.weight], layer 0's spec order, …, out.weight, out.bias */
    char **names;                 /* "rnn.weight_ih_l0", …: PyTorch's state_dict names */
    int *param_layer;             /* layer of each parameter (−1: embedding or output) */
    int *param_spec;              /* index into the cell's spec (−1: embedding or output) */
    struct tg_tensor **state;     /* L·D·n_state heap tensors (B×H) carried between chunks,
                                     [(l·D + d)·n_state + k] (D = 2 if bidirectional, else 1) */
    int state_batch;              /* B the carried state was sized for (0: none yet) */
    /* Training mode for dropout (cfg.dropout > 0): each forward draws its masks from this
     * generator — layer 0's output first, rows time-major, unit by unit; a unit is dropped when
     * tg_rng_uniform < p. NULL (the default): evaluation, no dropout. */
    struct tg_rng *dropout_rng;
    /* Or fixed masks (tests, tapegrad grad): L − 1 blocks of T·B × D·H multipliers (0 or
     * 1/(1 − p) for dropout) applied to the outputs of layers 0 … L−2; overrides dropout_rng. */
    const double *dropout_mask;
};

/* Directions (1 or 2) and carried-state tensors (L·D·n_state) of a model. */
static inline int tg_model_dirs(const struct tg_model *m) { return m->cfg.bidirectional ? 2 : 1; }
static inline int tg_model_n_states(const struct tg_model *m)
{
    return m->cfg.layers * tg_model_dirs(m) * m->cfg.cell->n_state;
}

enum tg_status tg_model_new(const struct tg_model_config *cfg, struct tg_model **out);
void tg_model_free(struct tg_model *m);
struct tg_tensor *tg_model_param(const struct tg_model *m, const char *name); /* NULL if absent */
void tg_model_zero_grad(struct tg_model *m);
size_t tg_model_num_weights(const struct tg_model *m);

/* PyTorch's default: every parameter U(−1/√H, 1/√H) (embedding N(0, 1) as nn.Embedding). */
void tg_model_init_uniform(struct tg_model *m, struct tg_rng *rng);
/* min-char-rnn's: weights N(0, 0.01²), biases 0. */
void tg_model_init_normal(struct tg_model *m, struct tg_rng *rng, double std);
/* Add `value` to the forget-gate bias block of the LSTM variants (Jozefowicz et al. 2015). */
void tg_model_set_forget_bias(struct tg_model *m, double value);
/* Apply the cell file's `init` lines to every layer's parameters, in file order, drawing from
 * rng (after the default initialisation). TG_OK and nothing drawn for C cells and files
 * without init lines. */
enum tg_status tg_model_init_cell(struct tg_model *m, struct tg_rng *rng);

/* One batch of T steps × B sequences, time-major. Exactly one of x (T·B·I values) and tokens
 * (T·B ids) is given; labels (T·B, −1 = no loss) for xent losses, target (B·V) for MSE.
 * lengths (PyTorch's pack_padded_sequence): sequence b is steps 0 … lengths[b]−1; after that
 * its state stays as it was (h_n is its last valid state; the reverse direction starts at its
 * own last step from the initial state), its inputs are not read and its labels are ignored;
 * MSE reads each sequence's output at its last valid step. */
struct tg_seq_batch {
    int T, B;
    const double *x;
    const int32_t *tokens;
    const int32_t *labels;
    const int32_t *lengths;       /* B valid lengths or NULL (all T); steps t ≥ lengths[b] carry no loss, state frozen */
    const double *target;
};

struct tg_seq_result {
    struct tg_tensor *loss;       /* 1×1 */
    struct tg_tensor *logits;     /* T·B × V (xent) or B × V (mse): model outputs */
    struct tg_tensor **final;     /* L·D·n_state tensors: state after the last step, at
                                     [(l·D + d)·n_state + k] (the reverse direction's: after
                                     step 0) — h_n's order in PyTorch */
    struct tg_tensor *input;      /* T·B × I dense input leaf (to read its gradient) */
    struct tg_tensor **states;    /* L·D·T·n_state: state k of layer l, direction d at time t
                                     (0-based) at [((l·D + d)·T + t)·n_state + k] (for tools
                                     that read per-step gradients: models/flow.c) */
};

/* Record the unrolled model on t. The initial state is zero, or the carried state when
 * `carry` is set and its batch size matches (truncated BPTT: copied in as leaves, so no
 * gradient flows into the previous chunk). Steps and layers are tagged for DOT. */
enum tg_status tg_model_forward(struct tg_model *m, struct tg_tape *t,
                                const struct tg_seq_batch *b, int carry,
                                struct tg_seq_result *res);
/* Like tg_model_forward but from a given initial state (L·D·n_state tensors, B×H each; NULL
 * entries mean zero). */
enum tg_status tg_model_forward_from(struct tg_model *m, struct tg_tape *t,
                                     const struct tg_seq_batch *b,
                                     struct tg_tensor *const *init, struct tg_seq_result *res);
/* Size the carried state for B rows (zeros when newly allocated; kept when already B). */
enum tg_status tg_model_state_alloc(struct tg_model *m, int B);
/* Copy res->final into the model's carried state (allocated on first use). */
enum tg_status tg_model_keep_state(struct tg_model *m, const struct tg_seq_result *res, int B);
void tg_model_reset_state(struct tg_model *m);

/* ------------------------------------------- recompute (gradient checkpointing for BPTT)
 * (models/recompute.c) The loss and gradients of tg_model_forward_from + tg_backward, keeping
 * only the state every K steps: a forward without recording saves the state at the start of
 * each K-step segment; backward re-records the segments from the last, one at a time on t.
 * Activation memory O(T/K + K) instead of O(T); time about one more forward of the sequence.
 *
 *   struct tg_recompute *rc;
 *   tg_recompute_new(32, &rc);                       // K = 32 (≈ √T for T = 1000)
 *   tg_model_zero_grad(m);
 *   tg_model_grad_recompute(m, t, &batch, NULL, 1.0, rc, &loss, NULL, NULL);
 *   // every parameter's grad now holds what tg_backward on the whole unroll gives
 *
 * Parameter gradients accumulate (+=) like tg_backward's; scale multiplies the loss (the
 * trainer's loss weight). Gradients equal the plain run's up to the order of the sums over
 * time (bit for bit for K ≥ T; see recompute.c for exactly where they can differ). init may be
 * NULL or live on t (it is copied first); heap initial states that want a gradient receive it,
 * as in the plain run. on_segment (may be NULL) sees each segment's result after its backward,
 * last segment first (t0: its first step); its logits and final state are valid during the
 * call. A non-OK return from it stops the call. *loss: the scaled loss (summed per segment).
 * Anomaly reports (tg_tape_set_anomaly on t) count time steps within the segment. */
struct tg_recompute;
enum tg_status tg_recompute_new(int K, struct tg_recompute **out);  /* K ≥ 1 */
void tg_recompute_free(struct tg_recompute *rc);
int tg_recompute_k(const struct tg_recompute *rc);
typedef enum tg_status (*tg_recompute_segment_fn)(void *ctx, int t0, const struct tg_seq_result *res);
enum tg_status tg_model_grad_recompute(struct tg_model *m, struct tg_tape *t,
                                       const struct tg_seq_batch *b, struct tg_tensor *const *init,
                                       double scale, struct tg_recompute *rc, double *loss,
                                       tg_recompute_segment_fn on_segment, void *ctx);
/* ∂loss/∂(initial state) of the last call: L·n_state heap tensors' gradients (NULL before). */
struct tg_tensor *const *tg_recompute_init_grad(const struct tg_recompute *rc);
/* Forward only (no gradient), in K-step segments handed to on_segment in order (t0 ascending)
 * and dropped: evaluation of long sequences in O(K) memory. *loss: the model's loss. */
enum tg_status tg_model_forward_segments(struct tg_model *m, struct tg_tape *t,
                                         const struct tg_seq_batch *b, struct tg_tensor *const *init,
                                         struct tg_recompute *rc, double *loss,
                                         tg_recompute_segment_fn on_segment, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
