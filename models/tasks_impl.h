/* tasks_impl.h — the task object, shared by tasks.c (creation, batches of reber/adding/copy,
 * metrics) and tasks_text.c (the text task: reading, the held-out split, windows and lines).
 * Private to models/. */
#ifndef TG_TASKS_IMPL_H
#define TG_TASKS_IMPL_H

#include <stdint.h>

#include "tapegrad_tasks.h"

struct tg_task {
    enum tg_task_kind kind;
    struct tg_task_config cfg;  /* defaults filled in */
    char *path;                 /* owned copy of cfg.data_path */
    char *valid_path;           /* owned copy of cfg.valid_path */
    int in_dim, n_classes, out_dim, max_T;
    int32_t *scratch;           /* reber: one string of up to cfg.length symbols */
    uint8_t *scratch_mask;      /* reber: its allowed-next masks */
    uint8_t *text;              /* text: this task's part of the data as vocabulary indices */
    int64_t text_n;
    int64_t *line_start;        /* text, lines: where each non-empty line of the part starts */
    int32_t *line_len;          /* … and its length in bytes, without the '\n' */
    int64_t n_lines;
    int newline;                /* text, lines: the vocabulary index of '\n' (start/end mark) */
    int vocab_n;
    uint8_t vocab[256];         /* index → byte, ascending */
    int16_t index_of[256];      /* byte → index, −1 if absent */
    int64_t cursor;             /* batches drawn (sequential text) */
};

/* tasks_text.c: read the file(s), build the vocabulary, keep this task's part; sets text,
 * text_n, line_start, n_lines, vocab, index_of, max_T and cfg.seq (lines: the longest line + 1). */
enum tg_status tg_text_load(struct tg_task *task);
/* Fill one batch of windows (or lines). */
void tg_text_batch(struct tg_task *task, struct tg_rng *rng, struct tg_batch *bt);

#endif
