/* fileio.c — checked reading and writing of the program's files (see tapegrad_fileio.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_CLOEXEC, O_NONBLOCK, strdup (meson defines it too) */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapegrad_fileio.h"

/* "fn: " to start a message with, or nothing when fn is NULL or empty (a caller that prints
 * its own prefix, such as the CLI's "tapegrad grad: "). */
struct prefix_str { char s[80]; };

static struct prefix_str prefix(const char *fn)
{
    struct prefix_str p = {""};
    if (fn && *fn) snprintf(p.s, sizeof p.s, "%s: ", fn);
    return p;
}

/* What a non-regular file is, for "is a FIFO (named pipe)", …; NULL for a regular file. */
static const char *kind(mode_t m)
{
    if (S_ISREG(m)) return NULL;
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO (named pipe)";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

enum tg_status tg_file_read(const char *fn, const char *path, size_t max, unsigned char **buf,
                            size_t *len)
{
    *buf = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. The type is
     * checked on the open descriptor (fstat), so what is read is what was checked. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tg_error(TG_ERR_IO, "%s%s: cannot open: %s", prefix(fn).s, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tg_error(TG_ERR_IO, "%s%s: cannot stat: %s", prefix(fn).s, path, strerror(e));
    }
    const char *k = kind(st.st_mode);
    if (k) {
        close(fd);
        return tg_error(TG_ERR_IO, "%s%s: is %s, not a regular file", prefix(fn).s, path, k);
    }
    /* Read to the end: st_size is only a first guess (0 for files under /proc). Reading stops
     * after max + 1 bytes, enough for the caller to say the file is too large. */
    size_t cap = (size_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1, n = 0;
    if (cap < 4096) cap = 4096;
    unsigned char *b = malloc(cap + 1);
    enum tg_status s = b ? TG_OK : TG_ERR_NOMEM;
    while (s == TG_OK && n <= max) {
        if (n == cap) {
            unsigned char *nb = cap < SIZE_MAX / 4 ? realloc(b, 2 * cap + 1) : NULL;
            if (!nb) {
                s = TG_ERR_NOMEM;
                break;
            }
            b = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) s = tg_error(TG_ERR_IO, "%s%s: read failed: %s", prefix(fn).s, path, strerror(errno));
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (s == TG_ERR_NOMEM) tg_error(s, "%s%s: out of memory after %zu bytes", prefix(fn).s, path, n);
    if (s != TG_OK) {
        free(b);
        return s;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return TG_OK;
}

int tg_file_same(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b || stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* "<path>.<kind>.<pid>" (malloc'd). Kind "tmp" is the temporary name every atomic writer here
 * uses, which tg_checkpoint_clean_temps recognises when a killed run leaves one behind. */
static char *temp_name(const char *path, const char *kind)
{
    size_t n = strlen(path) + strlen(kind) + 32;
    char *t = malloc(n);
    if (t) snprintf(t, n, "%s.%s.%ld", path, kind, (long)getpid());
    return t;
}

/* Does the directory part of path exist ("." for a bare name)? Tells "no such directory"
 * from a directory that refuses the name (/proc says ENOENT for both). */
static int parent_exists(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return 1;
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = strndup(path, n);
    struct stat st;
    int ok = dir && stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
    free(dir);
    return ok;
}

enum tg_status tg_file_check_writable(const char *fn, const char *what, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && kind(st.st_mode))
        return tg_error(TG_ERR_IO, "%s%s %s is %s; give a file name%s", prefix(fn).s, what, path,
                        kind(st.st_mode), S_ISDIR(st.st_mode) ? " (inside it, if you like)" : "");
    /* Probe: create a file beside path, as a save will, then remove it. access(W_OK) would not
     * do: root passes it where the create fails (/proc), and it ignores read-only mounts on
     * some systems. The name is not a save's ("<path>.tmp.<pid>"): a save's temporary file
     * means a save is under way, to anyone watching (the kill-during-save test does). */
    char *tmp = temp_name(path, "probe");
    if (!tmp) return tg_error(TG_ERR_NOMEM, "%sout of memory", prefix(fn).s);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int e = errno;
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(tmp);
    if (fd < 0 && e != EEXIST) /* EEXIST: our own name is taken, so the directory takes files */
        return tg_error(TG_ERR_IO, "%s%s %s cannot be written: %s", prefix(fn).s, what, path,
                        e == ENOENT && !parent_exists(path) ? "its directory does not exist"
                                                            : strerror(e));
    return TG_OK;
}

enum tg_status tg_atomic_open(struct tg_atomic *a, const char *fn, const char *path)
{
    memset(a, 0, sizeof *a);
    a->fn = fn;
    struct stat st;
    if (stat(path, &st) == 0 && kind(st.st_mode))
        return tg_error(TG_ERR_IO, "%s%s is %s, not a file to write", prefix(fn).s, path, kind(st.st_mode));
    a->tmp = temp_name(path, "tmp");
    a->path = strdup(path);
    if (!a->tmp || !a->path) {
        tg_atomic_abort(a);
        return tg_error(TG_ERR_NOMEM, "%sout of memory", prefix(fn).s);
    }
    int fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0 || !(a->f = fdopen(fd, "w"))) {
        int e = errno;
        if (fd >= 0) close(fd);
        if (fd >= 0) unlink(a->tmp);
        free(a->tmp);
        a->tmp = NULL;
        tg_atomic_abort(a);
        return tg_error(TG_ERR_IO, "%scannot write %s: %s", prefix(fn).s, path,
                        e == ENOENT && !parent_exists(path) ? "its directory does not exist"
                                                            : strerror(e));
    }
    return TG_OK;
}

enum tg_status tg_atomic_commit(struct tg_atomic *a)
{
    if (!a->f) return tg_error(TG_ERR_STATE, "%s%s: not open", prefix(a->fn).s, a->path);
    /* An earlier fprintf may have failed (ferror); errno then still holds its reason, as
     * nothing else has run since but more writes. */
    int bad = fflush(a->f) != 0 || ferror(a->f), e = errno;
    if (!bad && fsync(fileno(a->f)) != 0) bad = 1, e = errno;
    if (fclose(a->f) != 0 && !bad) bad = 1, e = errno;
    a->f = NULL;
    if (!bad && rename(a->tmp, a->path) != 0) bad = 1, e = errno;
    enum tg_status s = TG_OK;
    if (bad) s = tg_error(TG_ERR_IO, "%scannot write %s: %s (nothing was written)", prefix(a->fn).s,
                          a->path, strerror(e));
    else {
        free(a->tmp); /* renamed: nothing to remove */
        a->tmp = NULL;
    }
    tg_atomic_abort(a);
    return s;
}

void tg_atomic_abort(struct tg_atomic *a)
{
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    a->f = NULL;
    a->tmp = a->path = NULL;
}
