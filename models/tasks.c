/* tasks.c — the built-in tasks (reber, adding, copy, text): batch generators and metrics.
 *
 * Nothing here touches the tape: a batch is plain arrays, filled from a caller-owned tg_rng so
 * that a run's data is reproduced by its seed (and restored from a checkpoint by the rng words).
 * Buffers are allocated once by tg_batch_alloc; tg_task_next_batch only writes into them. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad_fileio.h"
#include "tapegrad_tasks.h"
#include "tasks_impl.h"

static const char *const task_names[] = {"reber", "adding", "copy", "text"};

/* ============================================================ reber grammar */

/* Symbol indices, in the order of tg_reber_symbols. */
enum { R_B, R_T, R_P, R_S, R_X, R_V, R_E };
const char tg_reber_symbols[TG_REBER_NSYM + 1] = "BTPSXVE";

/* The classic Reber graph as a table: from state s, edge i emits edge[s][i][0] and moves to
 * edge[s][i][1]; −1 marks a missing edge. State 0 expects the opening B, state 6 the closing E,
 * state 7 is the end. Every branching state picks each of its two edges with probability ½.
 *
 *        B     T→2 | P→3
 *   0 ──────▶ 1
 *   2: S→2 | X→4      3: T→3 | V→5      4: X→3 | S→6      5: P→4 | V→6      6: E→7
 */
static const int8_t reber_edge[8][2][2] = {
    {{R_B, 1}, {-1, -1}}, {{R_T, 2}, {R_P, 3}}, {{R_S, 2}, {R_X, 4}}, {{R_T, 3}, {R_V, 5}},
    {{R_X, 3}, {R_S, 6}}, {{R_P, 4}, {R_V, 6}}, {{R_E, 7}, {-1, -1}}, {{-1, -1}, {-1, -1}},
};

int tg_reber_index(char c)
{
    for (int k = 0; k < TG_REBER_NSYM; k++)
        if (tg_reber_symbols[k] == c) return k;
    return -1;
}

static uint8_t inner_mask(int s)
{
    uint8_t m = 0;
    for (int i = 0; i < 2; i++)
        if (reber_edge[s][i][0] >= 0) m |= (uint8_t)(1u << reber_edge[s][i][0]);
    return m;
}

static int inner_step(int s, int32_t c)
{
    for (int i = 0; i < 2; i++)
        if (reber_edge[s][i][0] >= 0 && reber_edge[s][i][0] == c) return reber_edge[s][i][1];
    return -1;
}

/* The embedded grammar wraps a Reber string: B, then T or P (the "second" symbol), the inner
 * string, the second symbol again, E. The recognizer tracks a phase for that wrapper:
 *   0 expect B, 1 expect T|P, 2 inside the inner string, 3 expect the repeat, 4 expect E, 5 done.
 * A plain string starts in phase 2 and ends as soon as the inner string does. */
int tg_reber_check(const int32_t *sym, int n, int embedded, uint8_t *allowed)
{
    int phase = embedded ? 0 : 2, inner = 0, ok = n > 0;
    int32_t second = -1;
    for (int t = 0; t < n; t++) {
        if (ok) {
            int32_t c = sym[t];
            switch (phase) {
            case 0: ok = c == R_B; phase = 1; break;
            case 1: ok = c == R_T || c == R_P; second = c; phase = 2; break;
            case 2:
                inner = inner_step(inner, c);
                ok = inner >= 0;
                if (inner == 7) phase = embedded ? 3 : 5;
                break;
            case 3: ok = c == second; phase = 4; break;
            case 4: ok = c == R_E; phase = 5; break;
            default: ok = 0; break;
            }
        }
        if (!allowed) {
            if (!ok) return 0;
            continue;
        }
        uint8_t m = 0;
        if (ok) {
            switch (phase) {
            case 1: m = (1u << R_T) | (1u << R_P); break;
            case 2: m = inner_mask(inner); break;
            case 3: m = (uint8_t)(1u << second); break;
            case 4: m = 1u << R_E; break;
            default: m = 0; break;
            }
        }
        allowed[t] = m;
    }
    return ok && phase == 5;
}

/* Random walk on the graph; a draw that would exceed cap is discarded whole and redrawn (the
 * strings kept are those of the grammar's distribution conditioned on length ≤ cap). */
int tg_reber_generate(struct tg_rng *rng, int embedded, int32_t *sym, int cap)
{
    if (!rng || !sym || cap < (embedded ? 9 : 5)) return -1;
    for (;;) {
        int n = 0, s = 0;
        int32_t second = R_T;
        if (embedded) {
            sym[n++] = R_B;
            second = tg_rng_below(rng, 2) ? R_P : R_T;
            sym[n++] = second;
        }
        int room = cap - (embedded ? 2 : 0); /* the closing pair needs two more */
        while (s != 7 && n < room) {
            int i = reber_edge[s][1][0] >= 0 ? (int)tg_rng_below(rng, 2) : 0;
            sym[n++] = reber_edge[s][i][0];
            s = reber_edge[s][i][1];
        }
        if (s != 7) continue;
        if (embedded) {
            sym[n++] = second;
            sym[n++] = R_E;
        }
        return n;
    }
}

/* ================================================================= creation */

static int pick(int v, int dflt) { return v ? v : dflt; }

enum tg_status tg_task_new(const char *name, const struct tg_task_config *cfg,
                           struct tg_task **out)
{
    if (!out) return tg_error(TG_ERR_VALUE, "tg_task_new: out is NULL");
    *out = NULL;
    int kind = -1;
    for (int k = 0; name && k < 4; k++)
        if (strcmp(name, task_names[k]) == 0) kind = k;
    if (kind < 0)
        return tg_error(TG_ERR_VALUE,
                        "tg_task_new: unknown task '%s' (expected reber, adding, copy, text)",
                        name ? name : "(null)");
    struct tg_task_config c = cfg ? *cfg : (struct tg_task_config){0};
    if (c.length < 0 || c.copy_symbols < 0 || c.copy_alphabet < 0 || c.seq < 0 ||
        c.threshold < 0 || c.threshold >= 1 || !(c.threshold == c.threshold))
        return tg_error(TG_ERR_VALUE,
                        "tg_task_new: negative or out-of-range setting for task '%s' (length %d, "
                        "copy_symbols %d, copy_alphabet %d, seq %d, threshold %g)",
                        name, c.length, c.copy_symbols, c.copy_alphabet, c.seq, c.threshold);
    c.length = pick(c.length, kind == TG_TASK_ADDING ? 100 : kind == TG_TASK_COPY ? 20 : 40);
    c.copy_symbols = pick(c.copy_symbols, 5);
    c.copy_alphabet = pick(c.copy_alphabet, 8);
    c.lines = c.lines != 0;
    c.held_out = c.held_out != 0;
    if (!c.lines) c.seq = pick(c.seq, 25); /* lines: 0 = the longest line + 1 */
    if (c.threshold == 0) c.threshold = 0.3;
    c.sequential = c.sequential != 0 && !c.lines; /* lines are drawn at random */
    if (c.valid_path && !*c.valid_path) c.valid_path = NULL;
    if (kind == TG_TASK_REBER && (c.length < 9 || c.length > 1000000))
        return tg_error(TG_ERR_VALUE,
                        "tg_task_new: reber length (longest string) %d not in [9, 10^6]; 9 is the "
                        "shortest embedded Reber string", c.length);
    if (kind == TG_TASK_ADDING && (c.length < 2 || c.length > 10000000))
        return tg_error(TG_ERR_VALUE, "tg_task_new: adding length %d not in [2, 10^7]", c.length);
    if (kind == TG_TASK_COPY && (c.copy_alphabet < 2 || c.copy_alphabet > 1000))
        return tg_error(TG_ERR_VALUE, "tg_task_new: copy alphabet %d not in [2, 1000]",
                        c.copy_alphabet);
    if (kind == TG_TASK_COPY && (c.length > 1000000 || c.copy_symbols > 100000))
        return tg_error(TG_ERR_VALUE, "tg_task_new: copy length %d / symbols %d too large",
                        c.length, c.copy_symbols);
    if (kind == TG_TASK_TEXT && (!c.data_path || !*c.data_path))
        return tg_error(TG_ERR_VALUE, "tg_task_new: task 'text' needs a data file (--data FILE)");
    if (kind == TG_TASK_TEXT && !(c.valid_fraction >= 0 && c.valid_fraction < 1))
        return tg_error(TG_ERR_VALUE, "tg_task_new: valid fraction %g not in [0, 1)",
                        c.valid_fraction);
    if (kind == TG_TASK_TEXT && c.held_out && !c.valid_path && c.valid_fraction == 0)
        return tg_error(TG_ERR_VALUE, "tg_task_new: a held-out text task needs a valid fraction "
                        "> 0 or a held-out file");

    struct tg_task *task = calloc(1, sizeof *task);
    if (!task) return tg_error(TG_ERR_NOMEM, "tg_task_new: out of memory");
    task->kind = (enum tg_task_kind)kind;
    task->cfg = c;
    task->cfg.data_path = NULL;
    task->cfg.valid_path = NULL;
    switch (task->kind) {
    case TG_TASK_REBER:
        task->in_dim = task->n_classes = task->out_dim = TG_REBER_NSYM;
        task->max_T = c.length - 1; /* inputs are every symbol but the closing E */
        task->scratch = malloc((size_t)c.length * sizeof *task->scratch);
        task->scratch_mask = malloc((size_t)c.length);
        if (!task->scratch || !task->scratch_mask) {
            tg_task_free(task);
            return tg_error(TG_ERR_NOMEM, "tg_task_new: out of memory");
        }
        break;
    case TG_TASK_ADDING:
        task->in_dim = 2;
        task->out_dim = 1;
        task->max_T = c.length;
        break;
    case TG_TASK_COPY:
        /* inputs: A symbols, blank (A), delimiter (A+1); outputs: the A symbols only */
        task->in_dim = c.copy_alphabet + 2;
        task->n_classes = task->out_dim = c.copy_alphabet;
        task->max_T = 2 * c.copy_symbols + c.length + 1;
        break;
    case TG_TASK_TEXT: {
        task->path = strdup(c.data_path);
        task->valid_path = c.valid_path ? strdup(c.valid_path) : NULL;
        if (!task->path || (c.valid_path && !task->valid_path)) {
            tg_task_free(task);
            return tg_error(TG_ERR_NOMEM, "tg_task_new: out of memory");
        }
        task->cfg.data_path = task->path;
        task->cfg.valid_path = task->valid_path;
        enum tg_status st = tg_text_load(task); /* sets max_T (and seq, with lines) */
        if (st != TG_OK) {
            tg_task_free(task);
            return st;
        }
        task->in_dim = task->n_classes = task->out_dim = task->vocab_n;
        break;
    }
    }
    *out = task;
    return TG_OK;
}

void tg_task_free(struct tg_task *task)
{
    if (!task) return;
    free(task->scratch);
    free(task->scratch_mask);
    free(task->text);
    free(task->line_start);
    free(task->line_len);
    free(task->path);
    free(task->valid_path);
    free(task);
}

enum tg_task_kind tg_task_kind(const struct tg_task *task) { return task->kind; }
const char *tg_task_name(const struct tg_task *task) { return task_names[task->kind]; }
const struct tg_task_config *tg_task_config(const struct tg_task *task) { return &task->cfg; }
int tg_task_in_dim(const struct tg_task *task) { return task->in_dim; }
int tg_task_n_classes(const struct tg_task *task) { return task->n_classes; }
int tg_task_out_dim(const struct tg_task *task) { return task->out_dim; }
int tg_task_uses_tokens(const struct tg_task *task) { return task->kind == TG_TASK_TEXT; }
int tg_task_is_regression(const struct tg_task *task) { return task->kind == TG_TASK_ADDING; }
int tg_task_max_T(const struct tg_task *task) { return task->max_T; }
int64_t tg_task_cursor(const struct tg_task *task) { return task->cursor; }
void tg_task_set_cursor(struct tg_task *task, int64_t cursor) { task->cursor = cursor; }

int tg_task_vocab_size(const struct tg_task *task) { return task->vocab_n; }

int tg_task_vocab_char(const struct tg_task *task, int index)
{
    return index >= 0 && index < task->vocab_n ? task->vocab[index] : -1;
}

int tg_task_vocab_index(const struct tg_task *task, int byte)
{
    return task->kind == TG_TASK_TEXT && byte >= 0 && byte < 256 ? task->index_of[byte] : -1;
}

const uint8_t *tg_task_text_data(const struct tg_task *task, int64_t *n)
{
    if (n) *n = task->text_n;
    return task->text;
}

/* ================================================================== batches */

void tg_batch_free(struct tg_batch *b)
{
    if (!b) return;
    free(b->x);
    free(b->tokens);
    free(b->labels);
    free(b->target);
    free(b->reset);
    free(b->lengths);
    free(b->allowed);
    memset(b, 0, sizeof *b);
}

enum tg_status tg_batch_alloc(const struct tg_task *task, int B, struct tg_batch *b)
{
    if (!task || !b) return tg_error(TG_ERR_VALUE, "tg_batch_alloc: task or batch is NULL");
    memset(b, 0, sizeof *b);
    if (B < 1 || B > (1 << 20))
        return tg_error(TG_ERR_VALUE, "tg_batch_alloc: batch size %d not in [1, 2^20]", B);
    enum tg_task_kind k = task->kind;
    if (k == TG_TASK_TEXT && task->cfg.sequential &&
        task->text_n / B < (int64_t)task->cfg.seq + 1)
        return tg_error(TG_ERR_VALUE,
                        "tg_batch_alloc: text file of %lld bytes is too short for %d sequential "
                        "streams of seq+1 = %d bytes",
                        (long long)task->text_n, B, task->cfg.seq + 1);
    size_t tb = (size_t)task->max_T * (size_t)B;
    b->T = task->max_T;
    b->B = B;
    b->max_T = task->max_T;
    b->in_dim = task->in_dim;
    b->n_classes = task->n_classes;
    b->out_dim = task->out_dim;
    int ok = 1;
    if (k != TG_TASK_TEXT) ok &= (b->x = calloc(tb * (size_t)task->in_dim, sizeof *b->x)) != NULL;
    if (k != TG_TASK_ADDING) {
        ok &= (b->tokens = calloc(tb, sizeof *b->tokens)) != NULL;
        ok &= (b->labels = calloc(tb, sizeof *b->labels)) != NULL;
    } else {
        ok &= (b->target = calloc((size_t)B * (size_t)task->out_dim, sizeof *b->target)) != NULL;
    }
    if (k == TG_TASK_REBER) ok &= (b->allowed = calloc(tb, sizeof *b->allowed)) != NULL;
    ok &= (b->reset = calloc((size_t)B, sizeof *b->reset)) != NULL;
    ok &= (b->lengths = calloc((size_t)B, sizeof *b->lengths)) != NULL;
    if (!ok) {
        tg_batch_free(b);
        return tg_error(TG_ERR_NOMEM, "tg_batch_alloc: out of memory for %d×%d batch",
                        task->max_T, B);
    }
    return TG_OK;
}

/* Rows [r0, r0 + dst->B) of every time step of src, time-major like any batch. */
static void copy_rows(void *dst, const void *src, size_t row, int T, int Bd, int Bs, int r0)
{
    for (int t = 0; t < T; t++)
        memcpy((char *)dst + (size_t)t * Bd * row, (const char *)src + ((size_t)t * Bs + r0) * row,
               (size_t)Bd * row);
}

enum tg_status tg_batch_rows(const struct tg_batch *src, int r0, struct tg_batch *dst)
{
    int Bd = dst->B, Bs = src->B, T = src->T;
    if (r0 < 0 || r0 + Bd > Bs || dst->max_T < T || dst->in_dim != src->in_dim ||
        dst->out_dim != src->out_dim || !dst->x != !src->x || !dst->tokens != !src->tokens ||
        !dst->target != !src->target || !dst->allowed != !src->allowed)
        return tg_error(TG_ERR_VALUE, "tg_batch_rows: rows [%d, %d) of a batch of %d, or batches of "
                        "different tasks", r0, r0 + Bd, Bs);
    dst->T = T;
    if (src->x) copy_rows(dst->x, src->x, (size_t)src->in_dim * sizeof *src->x, T, Bd, Bs, r0);
    if (src->tokens) copy_rows(dst->tokens, src->tokens, sizeof *src->tokens, T, Bd, Bs, r0);
    if (src->labels) copy_rows(dst->labels, src->labels, sizeof *src->labels, T, Bd, Bs, r0);
    if (src->allowed) copy_rows(dst->allowed, src->allowed, sizeof *src->allowed, T, Bd, Bs, r0);
    if (src->target) copy_rows(dst->target, src->target, (size_t)src->out_dim * sizeof *src->target, 1, Bd, Bs, r0);
    copy_rows(dst->reset, src->reset, sizeof *src->reset, 1, Bd, Bs, r0);
    copy_rows(dst->lengths, src->lengths, sizeof *src->lengths, 1, Bd, Bs, r0);
    return TG_OK;
}

/* Put symbol s at step t of sequence b: token, one-hot row of x. s < 0 writes padding. */
static void put_symbol(struct tg_batch *bt, int t, int b, int32_t s)
{
    size_t i = (size_t)t * (size_t)bt->B + (size_t)b;
    double *row = bt->x + i * (size_t)bt->in_dim;
    memset(row, 0, (size_t)bt->in_dim * sizeof *row);
    if (s >= 0) row[s] = 1.0;
    bt->tokens[i] = s >= 0 ? s : 0;
}

/* Each string s[0..n) gives n−1 steps: input s[t], label s[t+1], allowed = what the grammar
 * permits after s[0..t]. The batch's T is its longest string's n−1; shorter ones are padded
 * with zero input and label −1, so padding never enters a loss or a metric. */
static void reber_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *bt)
{
    int B = bt->B, T = 0;
    int32_t *s = task->scratch;
    uint8_t *mask = task->scratch_mask;
    for (int b = 0; b < B; b++) {
        int n = tg_reber_generate(rng, 1, s, task->cfg.length);
        int valid = tg_reber_check(s, n, 1, mask); /* fills mask; a generated string is valid */
        assert(valid);
        (void)valid;
        int steps = n - 1;
        for (int t = 0; t < steps; t++) {
            size_t i = (size_t)t * (size_t)B + (size_t)b;
            put_symbol(bt, t, b, s[t]);
            bt->labels[i] = s[t + 1];
            bt->allowed[i] = mask[t];
        }
        bt->lengths[b] = steps;
        bt->reset[b] = 1;
        if (steps > T) T = steps;
    }
    for (int b = 0; b < B; b++)
        for (int t = bt->lengths[b]; t < T; t++) {
            size_t i = (size_t)t * (size_t)B + (size_t)b;
            put_symbol(bt, t, b, -1);
            bt->labels[i] = -1;
            bt->allowed[i] = 0;
        }
    bt->T = T;
}

/* The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015): step t carries
 * (v_t ~ U(0,1), m_t ∈ {0,1}); exactly two markers, one in [0, T/2) and one in [T/2, T), and
 * target = Σ m_t v_t. Always predicting 1 = E[target] gives MSE Var(v+v') = 2/12 = 1/6. */
static void adding_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *bt)
{
    int B = bt->B, T = task->max_T, half = T / 2;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            double *row = bt->x + ((size_t)t * (size_t)B + (size_t)b) * 2;
            row[0] = tg_rng_uniform(rng);
            row[1] = 0.0;
        }
        int i1 = (int)tg_rng_below(rng, (uint32_t)half);
        int i2 = half + (int)tg_rng_below(rng, (uint32_t)(T - half));
        double *r1 = bt->x + ((size_t)i1 * (size_t)B + (size_t)b) * 2;
        double *r2 = bt->x + ((size_t)i2 * (size_t)B + (size_t)b) * 2;
        r1[1] = r2[1] = 1.0;
        bt->target[b] = r1[0] + r2[0];
        bt->lengths[b] = T;
        bt->reset[b] = 1;
    }
    bt->T = T;
}

/* The copy task (as in Arjovsky et al. 2016, with labels only where an answer is due):
 *   steps 0..K−1           the K symbols, each uniform in [0, A)
 *   steps K..K+L−1         blank (input A)
 *   step  K+L              delimiter (input A+1): "now replay"
 *   steps K+L+1..2K+L      blank; label = the symbols in order
 * Every other label is −1, so the loss is the K answers alone and chance accuracy is 1/A. */
static void copy_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *bt)
{
    int B = bt->B, K = task->cfg.copy_symbols, L = task->cfg.length, A = task->cfg.copy_alphabet;
    int T = task->max_T;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)t * (size_t)B + (size_t)b;
            int32_t in = A, label = -1;
            if (t < K) in = (int32_t)tg_rng_below(rng, (uint32_t)A);
            else if (t == K + L) in = A + 1;
            else if (t > K + L) label = bt->tokens[(size_t)(t - K - L - 1) * (size_t)B + (size_t)b];
            put_symbol(bt, t, b, in);
            bt->labels[i] = label;
        }
        bt->lengths[b] = T;
        bt->reset[b] = 1;
    }
    bt->T = T;
}

enum tg_status tg_task_next_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *b)
{
    if (!task || !rng || !b)
        return tg_error(TG_ERR_VALUE, "tg_task_next_batch: task, rng or batch is NULL");
    int need_x = task->kind != TG_TASK_TEXT, need_tok = task->kind != TG_TASK_ADDING;
    if (b->B < 1 || b->max_T != task->max_T || b->in_dim != task->in_dim ||
        b->n_classes != task->n_classes || !b->reset || !b->lengths || (need_x && !b->x) ||
        (need_tok && (!b->tokens || !b->labels)) ||
        (task->kind == TG_TASK_ADDING && !b->target) ||
        (task->kind == TG_TASK_REBER && !b->allowed))
        return tg_error(TG_ERR_STATE,
                        "tg_task_next_batch: batch was not allocated by tg_batch_alloc for task "
                        "'%s' (max_T %d, in_dim %d)",
                        tg_task_name(task), task->max_T, task->in_dim);
    if (task->kind == TG_TASK_TEXT && task->cfg.sequential &&
        task->text_n / b->B < (int64_t)task->cfg.seq + 1)
        return tg_error(TG_ERR_VALUE, "tg_task_next_batch: text too short for %d streams", b->B);
    switch (task->kind) {
    case TG_TASK_REBER: reber_batch(task, rng, b); break;
    case TG_TASK_ADDING: adding_batch(task, rng, b); break;
    case TG_TASK_COPY: copy_batch(task, rng, b); break;
    case TG_TASK_TEXT: tg_text_batch(task, rng, b); break;
    }
    task->cursor++;
    return TG_OK;
}

/* ================================================================== metrics */

void tg_metrics_reset(const struct tg_task *task, struct tg_metrics *m)
{
    memset(m, 0, sizeof *m);
    switch (task->kind) {
    case TG_TASK_REBER:
        m->n = 3;
        m->names[0] = "long_acc";
        m->names[1] = "grammatical";
        m->names[2] = "string_ok";
        m->higher_better[0] = m->higher_better[1] = m->higher_better[2] = 1;
        break;
    case TG_TASK_ADDING:
        m->n = 1;
        m->names[0] = "mse";
        break;
    case TG_TASK_COPY:
        m->n = 2;
        m->names[0] = "acc";
        m->names[1] = "seq_acc";
        m->higher_better[0] = m->higher_better[1] = 1;
        break;
    case TG_TASK_TEXT:
        m->n = 2;
        m->names[0] = "bpc";
        m->names[1] = "acc";
        m->higher_better[1] = 1;
        break;
    }
    for (int i = 0; i < m->n; i++) m->values[i] = NAN; /* nothing measured yet */
}

/* First index of the largest probability (NaNs never win). */
static int argmax(const double *p, int n)
{
    int best = 0;
    for (int k = 1; k < n; k++)
        if (p[k] > p[best] || (p[best] != p[best] && p[k] == p[k])) best = k;
    return best;
}

/* A Reber position is grammatical when the argmax and every symbol with p > threshold are in
 * the grammar's allowed set. Requiring the argmax keeps a flat, know-nothing output (every
 * p = 1/7 < 0.3) from passing vacuously; the threshold 0.3 sits below the ½ a perfect model
 * gives each of two legal successors and above anything a wrong symbol should get. */
static void reber_metrics(const struct tg_task *task, const struct tg_batch *bt,
                          const double *probs, struct tg_metrics *m)
{
    int B = bt->B, C = bt->n_classes;
    double thr = task->cfg.threshold;
    for (int b = 0; b < B; b++) {
        int steps = bt->lengths[b], string_ok = 1;
        for (int t = 0; t < steps; t++) {
            size_t i = (size_t)t * (size_t)B + (size_t)b;
            const double *p = probs + i * (size_t)C;
            unsigned allowed = bt->allowed[i];
            int good = (allowed >> argmax(p, C)) & 1;
            for (int k = 0; k < C; k++)
                if (p[k] > thr && !((allowed >> k) & 1)) good = 0;
            m->num[1] += good;
            m->den[1] += 1;
            string_ok &= good;
        }
        /* the long-range symbol s[n−2] is the label of step n−3 = steps−2 */
        int t = steps - 2;
        if (t >= 0) {
            size_t i = (size_t)t * (size_t)B + (size_t)b;
            m->num[0] += argmax(probs + i * (size_t)C, C) == bt->labels[i];
            m->den[0] += 1;
        }
        m->num[2] += string_ok;
        m->den[2] += 1;
    }
}

/* Copy: argmax accuracy over labelled steps, and whole-sequence accuracy. Text: the same
 * accuracy plus bits per character −log₂ p(label), p floored at DBL_MIN to stay finite. */
static void label_metrics(const struct tg_task *task, const struct tg_batch *bt,
                          const double *probs, struct tg_metrics *m)
{
    int B = bt->B, C = bt->n_classes, text = task->kind == TG_TASK_TEXT;
    int acc = text ? 1 : 0;
    for (int b = 0; b < B; b++) {
        int all = 1;
        for (int t = 0; t < bt->lengths[b]; t++) { /* the steps past a length carry no label */
            size_t i = (size_t)t * (size_t)B + (size_t)b;
            int32_t y = bt->labels[i];
            if (y < 0) continue;
            const double *p = probs + i * (size_t)C;
            int right = argmax(p, C) == y;
            all &= right;
            m->num[acc] += right;
            m->den[acc] += 1;
            if (text) {
                double py = p[y] > DBL_MIN ? p[y] : DBL_MIN;
                m->num[0] -= log2(py);
                m->den[0] += 1;
            }
        }
        if (!text) {
            m->num[1] += all;
            m->den[1] += 1;
        }
    }
}

void tg_task_metrics(const struct tg_task *task, const struct tg_batch *b, const double *out,
                     struct tg_metrics *m)
{
    switch (task->kind) {
    case TG_TASK_REBER: reber_metrics(task, b, out, m); break;
    case TG_TASK_ADDING:
        for (int i = 0; i < b->B; i++) {
            double e = out[i] - b->target[i];
            m->num[0] += e * e;
            m->den[0] += 1;
        }
        break;
    case TG_TASK_COPY:
    case TG_TASK_TEXT: label_metrics(task, b, out, m); break;
    }
    for (int i = 0; i < m->n; i++) m->values[i] = m->den[i] > 0 ? m->num[i] / m->den[i] : NAN;
}

int tg_task_solved(const struct tg_task *task, const struct tg_metrics *m)
{
    if (m->n < 1 || !(m->den[0] > 0)) return 0;
    switch (task->kind) {
    case TG_TASK_REBER: return m->values[0] >= 0.99 && m->values[1] >= 0.99;
    case TG_TASK_ADDING: return m->values[0] <= 0.01;
    case TG_TASK_COPY: return m->values[0] >= 0.99;
    case TG_TASK_TEXT: return 0;
    }
    return 0;
}

const char *tg_task_solved_desc(const struct tg_task *task)
{
    switch (task->kind) {
    case TG_TASK_REBER: return "long_acc >= 0.99 and grammatical >= 0.99";
    case TG_TASK_ADDING: return "mse <= 0.01 (trivial baseline 0.167)";
    case TG_TASK_COPY: return "acc >= 0.99";
    case TG_TASK_TEXT: return "none (language model: runs for --steps)";
    }
    return "";
}
