/* error.c — the two error channels: user errors become a status plus a one-line message kept
 * per thread; broken internal invariants abort with file:line (TG_ASSERT). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static _Thread_local char last_error[512];

const char *tg_last_error(void) { return last_error; }

void tg_error_clear(void) { last_error[0] = '\0'; }

enum tg_status tg_error(enum tg_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char *tg_status_name(enum tg_status s)
{
    switch (s) {
    case TG_OK: return "ok";
    case TG_ERR_SHAPE: return "shape error";
    case TG_ERR_DTYPE: return "dtype error";
    case TG_ERR_VALUE: return "value error";
    case TG_ERR_NOMEM: return "out of memory";
    case TG_ERR_IO: return "i/o error";
    case TG_ERR_FORMAT: return "format error";
    case TG_ERR_STATE: return "invalid state";
    }
    return "unknown status";
}

void tg_assert_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "tapegrad: internal error at %s:%d: assertion '%s' failed\n", file, line, what);
    abort();
}
