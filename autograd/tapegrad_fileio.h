/*
 * tapegrad_fileio.h — files as the program's inputs and outputs, checked the same way everywhere.
 *
 *   unsigned char *buf; size_t n;
 *   if (tg_file_read("tg_st_read", path, SIZE_MAX, &buf, &n) != TG_OK) puts(tg_last_error());
 *   if (tg_file_check_writable("train", "--checkpoint", out) != TG_OK) ...   // before training
 *   struct tg_atomic a;                                                      // whole or nothing
 *   if (tg_atomic_open(&a, "bench", "results.json") == TG_OK) {
 *       fprintf(a.f, "...");
 *       tg_atomic_commit(&a);       // or tg_atomic_abort(&a): the old file stays as it was
 *   }
 *
 * Why these exist (each was a defect found by a hostile test):
 *   - An input path is checked to be a regular file *before* it is read: a FIFO opened for
 *     reading blocks until a writer appears, i.e. forever, and a device never ends. The open is
 *     non-blocking for the same reason.
 *   - A regular file is read to its end, not to st_size: files under /proc report size 0.
 *   - An output path is checked before any work: its directory must exist and take a new file
 *     (tested by creating one, which also catches read-only file systems and /proc, where even
 *     root cannot write), and the path must not be a directory.
 *   - An output written at the end appears whole or not at all (temporary file next to it,
 *     fsync, rename), so a full disk leaves no empty or half-written file behind.
 * Every failure returns a status and leaves one line in tg_last_error() that names the path and
 * gives the system's reason (strerror) when there is one.
 */
#ifndef TAPEGRAD_FILEIO_H
#define TAPEGRAD_FILEIO_H

#include <stddef.h>
#include <stdio.h>

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Read the regular file `path` whole into a malloc'd buffer (*len bytes, plus a NUL after them
 * so text can be used as a string). At most max + 1 bytes are read: *len > max tells the caller
 * the file is larger than it accepts. Errors name fn and path: TG_ERR_IO when it cannot be
 * opened or read, is a directory, a FIFO, a device or a socket; TG_ERR_NOMEM. */
enum tg_status tg_file_read(const char *fn, const char *path, size_t max, unsigned char **buf,
                            size_t *len);

/* Can a file be written at `path`? No if it is a directory or another non-regular file, or if
 * its directory does not exist or refuses a new file (probed by creating and removing
 * "<path>.probe.<pid>" beside it). `what` names the path in the message
 * (e.g. "--checkpoint"). TG_ERR_IO with the reason. */
enum tg_status tg_file_check_writable(const char *fn, const char *what, const char *path);

/* Do a and b name the same existing file (same device and inode: hard links, symbolic links
 * and other spellings of one path count)? 0 if either does not exist. */
int tg_file_same(const char *a, const char *b);

/* A file written whole or not at all: f writes to a temporary file in path's directory;
 * commit flushes, fsyncs and renames it over path; abort (or a failed commit) removes it. */
struct tg_atomic {
    FILE *f;
    char *tmp, *path;
    const char *fn; /* for messages */
};
enum tg_status tg_atomic_open(struct tg_atomic *a, const char *fn, const char *path);
enum tg_status tg_atomic_commit(struct tg_atomic *a);
void tg_atomic_abort(struct tg_atomic *a);

#ifdef __cplusplus
}
#endif
#endif
