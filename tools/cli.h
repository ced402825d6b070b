/* cli.h — the `tapegrad` program's subcommands and its small flag parser. */
#ifndef TG_CLI_H
#define TG_CLI_H

#include <stdio.h>

enum cli_kind { CLI_INT, CLI_LONG, CLI_DOUBLE, CLI_STR, CLI_BOOL };

struct cli_flag {
    const char *name;  /* without the leading "--" */
    enum cli_kind kind;
    void *dst;         /* int*, long*, double*, const char**, int* (bool) */
    const char *help;
    double min, max;   /* numeric range, inclusive; ignored when min > max */
};

/* Parse "--name value" / "--name=value" / "--flag" into the flags' destinations. On a bad or
 * unknown flag, a missing or malformed value or one out of range: prints one line
 * "tapegrad CMD: …" to stderr and returns -1. "--help" prints usage and returns 1. */
int cli_parse(const char *cmd, const char *usage, int argc, char **argv,
              const struct cli_flag *flags, int nflags);
void cli_usage(FILE *f, const char *cmd, const char *usage, const struct cli_flag *flags, int nflags);
/* Replace control characters (newlines, escapes) by '?', in place. */
void cli_sanitize(char *s);
/* Print "tapegrad CMD: message" to stderr, control characters replaced; returns 1 (the exit
 * status for user errors). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Does path end in ext (".dot", …)? */
int cli_has_ext(const char *path, const char *ext);

struct tg_cell;
/* --cell NAME or FILE.cell (a path: it ends in .cell or holds a '/'): the built-in cell, or the
 * file loaded and compiled into *owned (free with tg_cell_free; NULL for a built-in). On error
 * prints "tapegrad CMD: FILE:LINE:COL: …" and returns NULL. */
const struct tg_cell *cli_cell(const char *cmd, const char *spec, struct tg_cell **owned);
/* Is a cell file a re-statement of the built-in cell of its name (same parameters and
 * shapes)? Then that cell's hand-derived oracle and gate names apply to it. */
int cli_cell_is_builtin_layout(const struct tg_cell *cell);

int cmd_check(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_adjoint(int argc, char **argv);
/* A cell's file: a built-in name (its shipped .cell, compiled in) or FILE.cell; NULL after a
 * message. Free with tg_cell_free. */
struct tg_cell *cli_cell_file(const char *cmd, const char *spec);
int cmd_grad(int argc, char **argv);
int cmd_dot(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* train_mpi.c: `train` joins an MPI job around cmd_train (see there). */
int cmd_train_mpi(int argc, char **argv);
struct tg_dist *train_dist(void);              /* the job, or NULL */
/* After building the trainer: collective; the lowest failing rank prints msg; nonzero if any
 * rank failed. */
int train_dist_settle(int failed, const char *msg);
/* A failed run (where: tg_trainer_failed_alone): print msg where it belongs, stop the job if
 * only this rank failed; returns the exit status 1. */
int train_dist_fail(int where, const char *msg);
int cmd_flow(int argc, char **argv);
int cmd_plot(int argc, char **argv);

#endif
