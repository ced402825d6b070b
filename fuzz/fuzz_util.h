/* fuzz_util.h — what every harness shares: the input as a file on disk.
 *
 * The readers under test take a path (tg_st_read, tg_checkpoint_open), and the path is what
 * users hand them, so each input is written to one scratch file that is reused for every input
 * of the process (truncated and rewritten, not recreated: a fuzzer runs millions of inputs).
 * /dev/shm keeps it in memory where there is one. */
#ifndef TG_FUZZ_UTIL_H
#define TG_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_path[64];

/* The input as the contents of a scratch file; returns its path (the process stops if the
 * scratch file cannot be written: that is the machine's fault, not the input's). */
static inline const char *fuzz_input_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0) {
        snprintf(fuzz_path, sizeof fuzz_path, "%s/tg_fuzz_XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        fd = mkstemp(fuzz_path);
        if (fd < 0) {
            perror("fuzz: mkstemp");
            abort();
        }
        /* Unlinked at once and reached through /proc/self/fd: nothing is left behind however
         * the process ends (libFuzzer leaves with _Exit, skipping atexit handlers). */
        unlink(fuzz_path);
        snprintf(fuzz_path, sizeof fuzz_path, "/proc/self/fd/%d", fd);
    }
    size_t done = 0;
    if (ftruncate(fd, 0) != 0) abort();
    while (done < size) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        if (w <= 0) {
            perror("fuzz: pwrite");
            abort();
        }
        done += (size_t)w;
    }
    return fuzz_path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
