/* train_log.c — a CSV log that a failed write does not leave half-written (see train_log.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train_log.h"

enum tg_status train_log_open(struct train_log *l, const char *path, int append)
{
    memset(l, 0, sizeof *l);
    if (!(l->path = strdup(path))) return tg_error(TG_ERR_NOMEM, "log: out of memory");
    l->f = fopen(path, append ? "a" : "w");
    if (!l->f) {
        int e = errno;
        train_log_close(l);
        return tg_error(TG_ERR_IO, "cannot open log '%s': %s", path, strerror(e));
    }
    l->start = append ? ftell(l->f) : 0; /* "a" positions at the end */
    l->fresh = !append || l->start == 0;
    return TG_OK;
}

enum tg_status train_log_flush(struct train_log *l)
{
    /* ferror: an earlier fprintf failed while its row was being buffered; errno still says
     * why, nothing but writes to this file having run since. */
    if (fflush(l->f) == 0 && !ferror(l->f)) return TG_OK;
    int e = errno ? errno : EIO;
    struct stat st;
    int regular = fstat(fileno(l->f), &st) == 0 && S_ISREG(st.st_mode); /* not /dev/full */
    const char *left = "";
    if (regular && l->fresh) {
        left = unlink(l->path) == 0 ? " (the log was removed)" : "";
    } else if (regular) {
        left = ftruncate(fileno(l->f), l->start) == 0 ? " (the log is as it was before this run)" : "";
    }
    enum tg_status s = tg_error(TG_ERR_IO, "cannot write log '%s': %s%s", l->path, strerror(e), left);
    train_log_close(l);
    return s;
}

void train_log_close(struct train_log *l)
{
    if (l->f) fclose(l->f); /* after a failure its own flush fails again; nothing to report */
    free(l->path);
    memset(l, 0, sizeof *l);
}
