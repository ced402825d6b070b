/*
 * tapegrad_tasks.h — the built-in training tasks, generated in code (no data files), and their metrics.
 *
 *   reber   embedded Reber grammar (Hochreiter & Schmidhuber 1997), next-symbol prediction
 *   adding  adding problem: sum of the two marked values among T, MSE at the last step
 *   copy    remember K symbols across a delay of `length` blanks, replay them after a delimiter
 *   text    character-level language model on any file (min-char-rnn)
 *
 * A typical loop (the model side is the caller's):
 *
 *   struct tg_task *task;
 *   struct tg_task_config cfg = {0};                     // zeros mean "default"
 *   if (tg_task_new("reber", &cfg, &task) != TG_OK) puts(tg_last_error());
 *   struct tg_batch b;  tg_batch_alloc(task, 32, &b);    // once: sized for tg_task_max_T
 *   struct tg_metrics m; tg_metrics_reset(task, &m);
 *   for (...) {
 *       tg_task_next_batch(task, &rng, &b);              // no allocation here
 *       ... run the model on b.x or b.tokens (b.T steps), train on b.labels / b.target ...
 *       tg_task_metrics(task, &b, probs, &m);            // m.values[i] named m.names[i]
 *   }
 *   tg_batch_free(&b); tg_task_free(task);
 *
 * Layout: every batch is time-major, index (t·B + b) for step t and sequence b, and only the
 * first T·B entries are meaningful (T ≤ tg_task_max_T; Reber's T changes from batch to batch).
 *   x        T×B×in_dim doubles: one-hot symbols (reber, copy) or (value, marker) (adding);
 *            NULL for text, whose input is tokens only
 *   tokens   T×B symbol indices (reber, copy, text), the same information as a one-hot x, for a
 *            model that embeds; NULL for adding. Padding positions hold 0.
 *   labels   T×B class indices in [0, n_classes), or −1 where no loss is taken (padding, the
 *            non-answer positions of copy, the last symbol of a Reber string); NULL for adding
 *   target   B×out_dim regression targets compared with the output at the last step (adding)
 *   reset    B flags: 1 = sequence b starts fresh in this batch (zero its carried state),
 *            0 = it continues where the same row of the previous batch stopped (text in
 *            sequential mode only); tasks other than sequential text always give 1.
 *
 * Held-out text. A text task holds one part of its data. With valid_path the held-out part is
 * that file and the whole data file trains; with valid_fraction F > 0 it is the end of the data
 * file — the last ⌈F·N⌉ bytes, or with lines the last ⌈F·L⌉ of its L non-empty lines — and the
 * training part is what precedes it. Every window (inputs and labels) lies inside its part, so
 * training never reads a held-out byte and evaluation never reads a training byte. The vocabulary
 * is the bytes of both files together, the same in both parts. tg_task_text_data gives the part.
 *
 * Lines (text, lines = 1). One sequence per non-empty line of n bytes: tokens '\n' then the
 * line, labels the line then '\n' (start and end marks: the model learns to begin and end a
 * line), n + 1 steps. A batch is B lines drawn uniformly at random (with replacement); T is the
 * longest of them, lengths[b] each row's n + 1, and the steps past it hold token 0 and label −1
 * (no loss, no metric); reset is 1 for every row.
 *
 * Determinism: all randomness comes from the tg_rng passed in, so the same rng state (and, for
 * sequential text, the same cursor) gives the same batch bit for bit.
 */
#ifndef TAPEGRAD_TASKS_H
#define TAPEGRAD_TASKS_H

#include <stdint.h>

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

enum tg_task_kind { TG_TASK_REBER, TG_TASK_ADDING, TG_TASK_COPY, TG_TASK_TEXT };

/* Every field's 0 means "the default" given in brackets; negative values are errors. */
struct tg_task_config {
    int length;          /* adding: T [100] (≥ 2); copy: blanks between the symbols and the
                            delimiter [20]; reber: longest string drawn [40] (≥ 9; longer draws
                            are redrawn, which at 40 happens for 5 strings in 100 000) */
    int copy_symbols;    /* copy: K symbols to remember [5] */
    int copy_alphabet;   /* copy: alphabet size A [8] (≥ 2), so chance accuracy is 1/A */
    const char *data_path; /* text: the file to model (required) */
    int seq;             /* text: window/chunk length [25], as min-char-rnn's seq_length */
    int sequential;      /* text: 0 = B random windows per batch; 1 = B streams that walk the
                            file in order, seq bytes per batch, so a model may carry its state
                            across batches (truncated BPTT); see tg_task_cursor */
    double threshold;    /* reber: probability above which a symbol counts as predicted [0.3] */
    /* text: held-out data (see "Held-out text" below) */
    double valid_fraction; /* share of the data file held out at its end [0: none] */
    const char *valid_path; /* held-out text from this file instead (the whole data file trains) */
    int held_out;        /* 0: this task draws from the training part; 1: from the held-out part */
    int lines;           /* 1: one sequence per non-empty line (see "Lines" below); seq is then
                            the longest sequence allowed [0: the file's longest line + 1, up to
                            TG_TEXT_MAX_LINE + 1] and becomes the batches' max_T */
};

struct tg_task; /* opaque; text holds the file (as vocabulary indices) and the vocabulary */

/* name: "reber", "adding", "copy" or "text"; cfg may be NULL for all defaults (not for text).
 * Errors: unknown name → TG_ERR_VALUE; bad sizes → TG_ERR_VALUE; text file missing or unreadable
 * → TG_ERR_IO; text file empty, shorter than seq+1 bytes or over TG_TEXT_MAX_BYTES →
 * TG_ERR_VALUE. *out is NULL on error. */
enum tg_status tg_task_new(const char *name, const struct tg_task_config *cfg,
                           struct tg_task **out);
void tg_task_free(struct tg_task *task);

#define TG_TEXT_MAX_BYTES (64L << 20) /* 64 MiB: the whole file is held in memory */
#define TG_TEXT_MAX_LINE 4096          /* lines: the longest line taken when seq is 0 */

enum tg_task_kind tg_task_kind(const struct tg_task *task);
const char *tg_task_name(const struct tg_task *task);
/* The effective configuration (defaults filled in; data_path points into the task). */
const struct tg_task_config *tg_task_config(const struct tg_task *task);
int tg_task_in_dim(const struct tg_task *task);      /* width of x (or vocabulary size, text) */
int tg_task_n_classes(const struct tg_task *task);   /* 0 for adding */
int tg_task_out_dim(const struct tg_task *task);     /* n_classes, or 1 for adding */
int tg_task_uses_tokens(const struct tg_task *task); /* 1: the input is tokens (text) */
int tg_task_is_regression(const struct tg_task *task); /* 1: target + MSE at the last step */
int tg_task_max_T(const struct tg_task *task);       /* capacity a batch needs in time */

/* ----------------------------------------------------------------- batches */

struct tg_batch {
    int T, B, in_dim, n_classes, out_dim, max_T;
    double *x;           /* max_T×B×in_dim, or NULL */
    int32_t *tokens;     /* max_T×B, or NULL */
    int32_t *labels;     /* max_T×B, or NULL */
    double *target;      /* B×out_dim, or NULL */
    int32_t *reset;      /* B */
    int32_t *lengths;    /* B: steps of sequence b holding input (≤ T; < T for padded Reber
                            strings and text lines); labels are −1 past it */
    uint8_t *allowed;    /* reber: max_T×B bit masks of the symbols the grammar allows as the
                            label at that position (bit k = symbol k); else NULL */
};

/* Allocate every buffer once for B sequences of up to tg_task_max_T steps. */
enum tg_status tg_batch_alloc(const struct tg_task *task, int B, struct tg_batch *b);
void tg_batch_free(struct tg_batch *b); /* zeroes *b; fine on a zeroed batch */

/* Copy sequences [r0, r0 + dst->B) of src into dst (allocated by tg_batch_alloc on the same
 * task with dst->B ≤ src->B): a micro-batch, laid out like any batch. TG_ERR_VALUE if the rows
 * are not in src or the batches are of different tasks. */
enum tg_status tg_batch_rows(const struct tg_batch *src, int r0, struct tg_batch *dst);

/* Fill b with the next batch. b must come from tg_batch_alloc on this task. */
enum tg_status tg_task_next_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *b);

/* Sequential text: how many batches have been drawn (batch i is a function of i alone). A
 * checkpoint saves it and a resumed run sets it back; other tasks ignore it. */
int64_t tg_task_cursor(const struct tg_task *task);
void tg_task_set_cursor(struct tg_task *task, int64_t cursor);

/* ----------------------------------------------------------------- metrics */

#define TG_METRICS_MAX 4

/* Every metric is a ratio of two running sums, value = num/den, accumulated over batches until
 * tg_metrics_reset; metric 0 is the headline one (progress bar, --compare table).
 *   reber   long_acc    accuracy on the second-to-last symbol (argmax at the step before it)
 *           grammatical share of labelled positions where the argmax and every symbol with
 *                       probability > threshold are allowed next by the grammar
 *           string_ok   share of strings that are grammatical at every position
 *   adding  mse         mean squared error of the last-step output (trivial baseline 1/6)
 *   copy    acc         per-symbol accuracy on the K answer positions (chance 1/A)
 *           seq_acc     share of sequences whose K answers are all right
 *   text    bpc         bits per character, −log₂ p(next byte), averaged
 *           acc         next-byte accuracy of the argmax */
struct tg_metrics {
    int n;
    const char *names[TG_METRICS_MAX];
    double values[TG_METRICS_MAX];
    int higher_better[TG_METRICS_MAX];
    double num[TG_METRICS_MAX], den[TG_METRICS_MAX];
};

void tg_metrics_reset(const struct tg_task *task, struct tg_metrics *m);
/* Accumulate one batch. out: class probabilities T×B×n_classes (time-major like the batch) for
 * classification tasks, or the last-step outputs B×out_dim for adding. */
void tg_task_metrics(const struct tg_task *task, const struct tg_batch *b, const double *out,
                     struct tg_metrics *m);
/* Whether the metrics meet the task's solved criterion, and that criterion in words:
 *   reber  long_acc ≥ 0.99 and grammatical ≥ 0.99
 *   adding mse ≤ 0.01 (6% of the trivial baseline)
 *   copy   acc ≥ 0.99
 *   text   never (a language model is run for --steps) */
int tg_task_solved(const struct tg_task *task, const struct tg_metrics *m);
const char *tg_task_solved_desc(const struct tg_task *task);

/* ------------------------------------------------------------ reber grammar */

/* Symbols, by index: B T P S X V E. */
#define TG_REBER_NSYM 7
extern const char tg_reber_symbols[TG_REBER_NSYM + 1]; /* "BTPSXVE" */
int tg_reber_index(char c); /* −1 if not a Reber symbol */

/* Check sym[0..n) against the grammar (embedded = 1: the embedded grammar; 0: a plain Reber
 * string B…E). Returns 1 if it is a complete string of the grammar, 0 otherwise. If allowed is not
 * NULL, allowed[t] receives the mask of symbols the grammar allows after sym[0..t] (0 after the
 * final E, and 0 from the first invalid symbol on). */
int tg_reber_check(const int32_t *sym, int n, int embedded, uint8_t *allowed);

/* Draw one string into sym (capacity cap ≥ 9, or ≥ 5 for plain), redrawing any longer than cap.
 * Returns its length, or −1 if cap is below the shortest string (or rng/sym is NULL). */
int tg_reber_generate(struct tg_rng *rng, int embedded, int32_t *sym, int cap);

/* ------------------------------------------------------------- text vocabulary */

/* The sorted distinct bytes of the file: index ↔ byte, for sampling and checkpoints. */
int tg_task_vocab_size(const struct tg_task *task);          /* 0 unless text */
int tg_task_vocab_char(const struct tg_task *task, int index); /* byte 0..255, or −1 */
int tg_task_vocab_index(const struct tg_task *task, int byte); /* index, or −1 if absent */
/* This task's part of the text (the whole file without a held-out split) as vocabulary indices
 * (length *n), e.g. for tests or priming. */
const uint8_t *tg_task_text_data(const struct tg_task *task, int64_t *n);

#ifdef __cplusplus
}
#endif
#endif
