/* test_util.h — small helpers shared by the test files. */
#ifndef TG_TEST_UTIL_H
#define TG_TEST_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file, NUL-terminated, in a malloc'd buffer (*len bytes, len may be NULL); NULL if it
 * cannot be opened or read in full. */
static inline char *tg_test_read_file(const char *path, size_t *len)
{
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    char *buf = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

/* system() of a printf-formatted shell command; its wait status. */
static inline int __attribute__((format(printf, 1, 2))) tg_test_sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

#endif
