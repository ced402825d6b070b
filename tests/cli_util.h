/* cli_util.h — running the built `tapegrad` program from a cmocka test, and checking that it
 * failed the way a user should see it fail (exit 1, one line on stderr naming what and where).
 * Shared by test_cli.c and test_inputs.c; include after <cmocka.h>. */
#ifndef TG_CLI_UTIL_H
#define TG_CLI_UTIL_H

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define TAPEGRAD TG_BUILD_DIR "/tools/tapegrad"

struct run {
    int status;          /* exit status (128 if it did not exit normally) */
    char out[32768];     /* stdout, truncated */
    char err[4096];      /* stderr, truncated */
};

/* Limits for the next runs, set by the tests that need them. The alarm turns a program that
 * hangs (a FIFO read forever) into a failed test instead of a stuck suite; the file-size limit
 * makes writes fail with EFBIG, as a full disk would, on any file system. */
static unsigned cli_timeout_s = 120;
static long cli_fsize_limit = -1; /* bytes; −1: none */

static void cli_slurp(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t got = f ? fread(buf, 1, n - 1, f) : 0;
    buf[got] = '\0';
    if (f) fclose(f);
}

/* Run tapegrad with argv (argv[0] is the program name, NULL-terminated). Under a file-size
 * limit (which would cut files short) stdout goes to /dev/null and stderr through a pipe. */
static struct run *run_tapegrad_argv(const char *const *argv)
{
    static struct run r;
    memset(&r, 0, sizeof r);
    char out[] = "/tmp/tg_cli_out_XXXXXX", err[] = "/tmp/tg_cli_err_XXXXXX";
    int limited = cli_fsize_limit >= 0, pfd[2] = {-1, -1};
    int fo = limited ? open("/dev/null", O_WRONLY) : mkstemp(out);
    int fe = limited ? (pipe(pfd) == 0 ? pfd[1] : -1) : mkstemp(err);
    assert_true(fo >= 0 && fe >= 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        if (limited) {
            struct rlimit rl = {(rlim_t)cli_fsize_limit, (rlim_t)cli_fsize_limit};
            signal(SIGXFSZ, SIG_IGN); /* the write then fails with EFBIG instead of killing */
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        alarm(cli_timeout_s);
        execv(TAPEGRAD, (char *const *)argv);
        _exit(127);
    }
    close(fo), close(fe);
    if (limited) { /* drain as it runs: a full pipe would stop the child */
        size_t n = 0;
        ssize_t got;
        while ((got = read(pfd[0], r.err + n, n + 1 < sizeof r.err ? sizeof r.err - 1 - n : 0)) > 0)
            n += (size_t)got;
        char sink[256];
        while (read(pfd[0], sink, sizeof sink) > 0) {}
        close(pfd[0]);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    if (!limited) {
        cli_slurp(out, r.out, sizeof r.out);
        cli_slurp(err, r.err, sizeof r.err);
        unlink(out), unlink(err);
    }
    return &r;
}

/* Run tapegrad with the NULL-terminated arguments after the program name. */
static struct run *run_tapegrad(const char *arg0, ...)
{
    const char *argv[40] = {"tapegrad", arg0};
    int n = 2;
    va_list ap;
    va_start(ap, arg0);
    while (n < 39 && (argv[n] = va_arg(ap, const char *)) != NULL) n++;
    va_end(ap);
    argv[n] = NULL;
    return run_tapegrad_argv(argv);
}

/* Exit 1 and exactly one non-empty line on stderr that contains every given fragment. */
static void assert_one_line_error(const struct run *r, const char *frag, ...)
{
    if (r->status != 1) fail_msg("exit status %d, expected 1 (stderr: %s)", r->status, r->err);
    size_t len = strlen(r->err);
    if (len < 2 || r->err[len - 1] != '\n' || strchr(r->err, '\n') != r->err + len - 1)
        fail_msg("stderr is not one line: '%s'", r->err);
    if (strncmp(r->err, "tapegrad ", 9) != 0) fail_msg("stderr does not start with 'tapegrad ': %s", r->err);
    va_list ap;
    va_start(ap, frag);
    for (const char *f = frag; f; f = va_arg(ap, const char *))
        if (!strstr(r->err, f)) fail_msg("stderr lacks '%s': %s", f, r->err);
    va_end(ap);
}

/* Exit 1 and the last line of stderr (a run that failed midway may have printed progress
 * before it) is one "tapegrad …" line containing every given fragment. */
static inline void assert_last_line_error(const struct run *r, const char *frag, ...)
{
    if (r->status != 1) fail_msg("exit status %d, expected 1 (stderr: %s)", r->status, r->err);
    size_t len = strlen(r->err);
    if (len < 2 || r->err[len - 1] != '\n') fail_msg("stderr does not end in a line: '%s'", r->err);
    const char *last = r->err + len - 1;
    while (last > r->err && last[-1] != '\n' && last[-1] != '\r') last--;
    if (strncmp(last, "tapegrad ", 9) != 0) fail_msg("last line does not start with 'tapegrad ': %s", last);
    va_list ap;
    va_start(ap, frag);
    for (const char *f = frag; f; f = va_arg(ap, const char *))
        if (!strstr(last, f)) fail_msg("last line lacks '%s': %s", f, last);
    va_end(ap);
}

static void need_binary(void)
{
    if (access(TAPEGRAD, X_OK) != 0) fail_msg("%s is not built", TAPEGRAD);
}

#endif
