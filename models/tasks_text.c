/* tasks_text.c — the text task: the file(s), the vocabulary, the held-out split, and batches of
 * windows or of whole lines.
 *
 * Held-out text. A task holds one part of the data: the training part or (cfg.held_out) the
 * held-out part. With valid_path the held-out part is that file and the whole data file trains;
 * otherwise, with valid_fraction F > 0, the held-out part is the end of the data file — the last
 * ⌈F·N⌉ bytes, or with lines the last ⌈F·L⌉ of its L non-empty lines — and training reads only
 * what precedes it. A training window [p, p+seq] (tokens and labels) lies inside the training
 * part, so no held-out byte is ever an input or a label of training, and no evaluation window
 * reads a training byte. The vocabulary is the sorted set of bytes of the data file and the
 * held-out file together, the same for both parts (so one model serves both).
 *
 * Lines (cfg.lines). One sequence per non-empty line: the input is '\n' (a start mark) then the
 * line's n bytes, the labels are the line's bytes then '\n' (the end mark), so the model learns
 * to begin and end lines; the sequence has n + 1 steps. A batch is B lines drawn uniformly at
 * random (with replacement), T = the longest of them, each row's length in lengths[b]; the steps
 * past it hold token 0 and label −1 (no loss), and reset is 1 for every row (each line starts
 * from a zero state). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad_fileio.h"
#include "tasks_impl.h"

/* Read the regular file `path` (what: "text file" or "held-out file", for messages). */
static enum tg_status read_file(const char *what, const char *path, uint8_t **buf, size_t *n)
{
    char fn[64];
    snprintf(fn, sizeof fn, "tg_task_new: %s", what);
    enum tg_status st = tg_file_read(fn, path, (size_t)TG_TEXT_MAX_BYTES, buf, n);
    if (st != TG_OK) return st;
    if (*n > (size_t)TG_TEXT_MAX_BYTES || *n == 0) {
        free(*buf);
        *buf = NULL;
        if (*n) return tg_error(TG_ERR_VALUE, "%s '%s' is larger than the %ld MiB cap", fn, path,
                                TG_TEXT_MAX_BYTES >> 20);
        return tg_error(TG_ERR_VALUE, "%s '%s' is empty", fn, path);
    }
    return TG_OK;
}

/* Non-empty lines of buf[0, n): count, longest, and (if start != NULL) where they are. Reports
 * the first line longer than cap − 1 bytes (a sequence of more than cap steps) as PATH:LINE. */
static enum tg_status scan_lines(const uint8_t *buf, size_t n, const char *path, int64_t cap,
                                 int64_t *count, int64_t *longest, int64_t *start, int32_t *len)
{
    int64_t k = 0, line_no = 1, best = 0;
    for (size_t i = 0; i < n; line_no++) {
        size_t j = i;
        while (j < n && buf[j] != '\n') j++;
        int64_t m = (int64_t)(j - i);
        if (m + 1 > cap)
            return tg_error(TG_ERR_VALUE, "%s:%lld: a line of %lld bytes; with --lines a sequence is "
                            "a line and its end mark, at most %lld steps (--seq), so lines of up to "
                            "%lld bytes", path, (long long)line_no, (long long)m, (long long)cap,
                            (long long)cap - 1);
        if (m > 0) {
            if (start) start[k] = (int64_t)i, len[k] = (int32_t)m;
            k++;
        }
        if (m > best) best = m;
        i = j + 1;
    }
    *count = k;
    *longest = best;
    return TG_OK;
}

/* Keep bytes [a, b) of buf as this task's text (in place). */
static void keep_part(struct tg_task *task, uint8_t *buf, int64_t a, int64_t b)
{
    memmove(buf, buf + a, (size_t)(b - a));
    task->text = buf;
    task->text_n = b - a;
}

enum tg_status tg_text_load(struct tg_task *task)
{
    struct tg_task_config *c = &task->cfg;
    const char *path = task->path, *vpath = task->valid_path;
    uint8_t *buf = NULL, *vbuf = NULL;
    size_t n = 0, vn = 0;
    enum tg_status st = read_file("text file", path, &buf, &n);
    if (st == TG_OK && vpath) st = read_file("held-out file", vpath, &vbuf, &vn);
    if (st != TG_OK) goto fail;

    /* Vocabulary: the sorted set of bytes present in either file (and '\n' with lines). */
    int present[256] = {0};
    for (size_t i = 0; i < n; i++) present[buf[i]] = 1;
    for (size_t i = 0; i < vn; i++) present[vbuf[i]] = 1;
    if (c->lines) present['\n'] = 1;
    task->vocab_n = 0;
    for (int ch = 0; ch < 256; ch++) {
        task->index_of[ch] = -1;
        if (present[ch]) {
            task->index_of[ch] = (int16_t)task->vocab_n;
            task->vocab[task->vocab_n++] = (uint8_t)ch;
        }
    }
    task->newline = task->index_of['\n'];

    if (!c->lines) {
        /* windows: [a, b) of the data file, or the held-out file */
        int64_t a = 0, b = (int64_t)n, held = 0;
        if (!vpath && c->valid_fraction > 0) {
            held = (int64_t)ceil(c->valid_fraction * (double)n);
            if (c->held_out) a = (int64_t)n - held;
            else b = (int64_t)n - held;
        }
        uint8_t *part = buf;
        if (c->held_out && vpath) part = vbuf, a = 0, b = (int64_t)vn;
        if (b - a < (int64_t)c->seq + 1) {
            if (!c->held_out && !held)
                st = tg_error(TG_ERR_VALUE, "tg_task_new: text file '%s' has %lld bytes, fewer "
                              "than seq+1 = %d", path, (long long)(b - a), c->seq + 1);
            else if (c->held_out && vpath)
                st = tg_error(TG_ERR_VALUE, "tg_task_new: held-out file '%s' has %lld bytes, "
                              "fewer than seq+1 = %d", vpath, (long long)(b - a), c->seq + 1);
            else
                st = tg_error(TG_ERR_VALUE, "tg_task_new: text file '%s' of %zu bytes: its %s part "
                              "(%s %lld bytes, valid fraction %g) is shorter than seq+1 = %d bytes",
                              path, n, c->held_out ? "held-out" : "training",
                              c->held_out ? "the last" : "the first", (long long)(b - a),
                              c->valid_fraction, c->seq + 1);
            goto fail;
        }
        for (int64_t i = a; i < b; i++) part[i] = (uint8_t)task->index_of[part[i]];
        keep_part(task, part, a, b);
        if (part == vbuf) vbuf = NULL, free(buf);
        else buf = NULL, free(vbuf);
        task->max_T = c->seq;
        return TG_OK;
    }

    /* lines: both files' longest line sets T, so both parts have the same batch shape */
    int64_t cap = c->seq ? c->seq : TG_TEXT_MAX_LINE + 1, L = 0, VL = 0, longest = 0, vlongest = 0;
    if ((st = scan_lines(buf, n, path, cap, &L, &longest, NULL, NULL)) != TG_OK) goto fail;
    if (vpath && (st = scan_lines(vbuf, vn, vpath, cap, &VL, &vlongest, NULL, NULL)) != TG_OK)
        goto fail;
    if (vlongest > longest) longest = vlongest;
    if (L == 0 || (vpath && VL == 0)) {
        st = tg_error(TG_ERR_VALUE, "tg_task_new: %s file '%s' has no non-empty line",
                      L == 0 ? "text" : "held-out", L == 0 ? path : vpath);
        goto fail;
    }
    uint8_t *part = c->held_out && vpath ? vbuf : buf;
    size_t pn = part == vbuf ? vn : n;
    int64_t count = part == vbuf ? VL : L;
    task->line_start = malloc((size_t)count * sizeof *task->line_start);
    task->line_len = malloc((size_t)count * sizeof *task->line_len);
    if (!task->line_start || !task->line_len) {
        st = tg_error(TG_ERR_NOMEM, "tg_task_new: out of memory for %lld lines", (long long)count);
        goto fail;
    }
    scan_lines(part, pn, "", cap, &count, &vlongest, task->line_start, task->line_len);
    int64_t first = 0, last = count; /* the part's lines [first, last) */
    if (!vpath && c->valid_fraction > 0) {
        int64_t held = (int64_t)ceil(c->valid_fraction * (double)count);
        if (held >= count) {
            st = tg_error(TG_ERR_VALUE, "tg_task_new: text file '%s' has %lld non-empty lines; "
                          "holding out %g of them leaves none to train on", path,
                          (long long)count, c->valid_fraction);
            goto fail;
        }
        if (c->held_out) first = count - held;
        else last = count - held;
    }
    /* keep the bytes from the first line's start to the last line's end */
    int64_t a = task->line_start[first];
    int64_t b = task->line_start[last - 1] + task->line_len[last - 1];
    for (int64_t i = a; i < b; i++) part[i] = (uint8_t)task->index_of[part[i]];
    keep_part(task, part, a, b);
    task->n_lines = last - first;
    memmove(task->line_start, task->line_start + first, (size_t)task->n_lines * sizeof *task->line_start);
    memmove(task->line_len, task->line_len + first, (size_t)task->n_lines * sizeof *task->line_len);
    for (int64_t k = 0; k < task->n_lines; k++) task->line_start[k] -= a;
    if (part == vbuf) vbuf = NULL, free(buf);
    else buf = NULL, free(vbuf);
    task->max_T = c->seq ? c->seq : (int)longest + 1;
    c->seq = task->max_T;
    return TG_OK;
fail:
    free(buf);
    free(vbuf);
    return st;
}

/* Character windows of seq+1 bytes: tokens = bytes [p, p+seq), labels = bytes [p+1, p+seq].
 * Random mode: B independent starts, uniform over the N−seq possible ones.
 * Sequential mode: the part is cut into B segments of S = ⌊N/B⌋ bytes; row b of batch i reads
 * chunk c = i mod C of segment b, where C = ⌊(S−1)/seq⌋ chunks fit with their next byte, so a
 * row continues the text of the previous batch's row and starts over (reset) when c = 0 —
 * min-char-rnn's walk (p += seq; back to 0 and zero state at the end), B times in parallel. */
static void window_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *bt)
{
    int B = bt->B, seq = task->cfg.seq;
    int64_t N = task->text_n, S = N / B, C = (S - 1) / seq; /* C ≥ 1 checked if sequential */
    /* the cursor comes from checkpoints too: keep the chunk index in [0, C) whatever its sign */
    int64_t c = task->cfg.sequential ? ((task->cursor % C) + C) % C : 0;
    for (int b = 0; b < B; b++) {
        int64_t p;
        if (task->cfg.sequential) {
            p = (int64_t)b * S + c * seq;
            bt->reset[b] = c == 0;
        } else {
            p = (int64_t)tg_rng_below(rng, (uint32_t)(N - seq));
            bt->reset[b] = 1;
        }
        for (int t = 0; t < seq; t++) {
            size_t i = (size_t)t * (size_t)B + (size_t)b;
            bt->tokens[i] = task->text[p + t];
            bt->labels[i] = task->text[p + t + 1];
        }
        bt->lengths[b] = seq;
    }
    bt->T = seq;
}

/* B whole lines, padded to the longest (see the top of the file). */
static void line_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *bt)
{
    int B = bt->B, T = 0, nl = task->newline;
    for (int b = 0; b < B; b++) {
        int64_t k = (int64_t)tg_rng_below(rng, (uint32_t)task->n_lines);
        const uint8_t *s = task->text + task->line_start[k];
        int n = task->line_len[k];
        bt->tokens[b] = nl;
        for (int t = 0; t < n; t++) {
            bt->tokens[(size_t)(t + 1) * B + b] = s[t];
            bt->labels[(size_t)t * B + b] = s[t];
        }
        bt->labels[(size_t)n * B + b] = nl;
        bt->lengths[b] = n + 1;
        bt->reset[b] = 1;
        if (n + 1 > T) T = n + 1;
    }
    for (int b = 0; b < B; b++)
        for (int t = bt->lengths[b]; t < T; t++) {
            bt->tokens[(size_t)t * B + b] = 0;
            bt->labels[(size_t)t * B + b] = -1;
        }
    bt->T = T;
}

void tg_text_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *bt)
{
    if (task->cfg.lines) line_batch(task, rng, bt);
    else window_batch(task, rng, bt);
}
