/* train_log.h — the CSV log of a training run (train.c), internal to the library.
 *
 * A log is streamed (one row per step, flushed, so `tail -f` shows it), so it cannot be written
 * atomically as a checkpoint is. What a failed write leaves is made clean instead: a fresh log
 * is removed (no 0-byte or half-written file), an appended one is cut back to the size it had
 * when the run began (the rows of earlier runs are kept, none of this one's). The error says
 * the system's reason ("No space left on device"). */
#ifndef TG_TRAIN_LOG_H
#define TG_TRAIN_LOG_H

#include <stdio.h>

#include "tapegrad.h"

struct train_log {
    FILE *f;
    char *path;
    long start;   /* size when opened: what an appended log is cut back to */
    int fresh;    /* created or emptied by this run: removed on failure */
};

/* Open for writing ("w") or appending. TG_ERR_IO with the reason. */
enum tg_status train_log_open(struct train_log *l, const char *path, int append);
/* Push what was printed to the file; on failure clean up as above, close, and return
 * TG_ERR_IO with the reason. */
enum tg_status train_log_flush(struct train_log *l);
void train_log_close(struct train_log *l); /* a zeroed or closed log is fine */

#endif
