/* cli.c — one flag parser for every subcommand, so they all reject bad input the same way. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tapegrad_models.h"

void cli_sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    /* Messages quote tensor names from files and paths from the command line: control
     * characters there would break the one-line promise or drive the terminal. */
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_sanitize(msg);
    fprintf(stderr, "tapegrad %s: %s\n", cmd, msg);
    return 1;
}

int cli_has_ext(const char *path, const char *ext)
{
    size_t n = strlen(path), e = strlen(ext);
    return n > e && strcmp(path + n - e, ext) == 0;
}

void cli_usage(FILE *f, const char *cmd, const char *usage, const struct cli_flag *flags, int nflags)
{
    fprintf(f, "usage: tapegrad %s %s\n", cmd, usage);
    for (int i = 0; i < nflags; i++) {
        const char *arg = flags[i].kind == CLI_BOOL ? "" : flags[i].kind == CLI_STR ? " S" : " N";
        fprintf(f, "  --%s%-*s %s\n", flags[i].name, (int)(22 - strlen(flags[i].name)), arg,
                flags[i].help);
    }
}

static int set_value(const char *cmd, const struct cli_flag *f, const char *v)
{
    char *end;
    errno = 0;
    double num = 0;
    switch (f->kind) {
    case CLI_INT:
    case CLI_LONG: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return cli_fail(cmd, "--%s expects an integer, got '%s'", f->name, v), -1;
        if (f->kind == CLI_INT && (x > 2147483647LL || x < -2147483647LL))
            return cli_fail(cmd, "--%s: %s is out of range", f->name, v), -1;
        num = (double)x;
        if (f->min <= f->max && (num < f->min || num > f->max))
            return cli_fail(cmd, "--%s must be in [%g, %g], got %s", f->name, f->min, f->max, v), -1;
        if (f->kind == CLI_INT) *(int *)f->dst = (int)x;
        else *(long *)f->dst = (long)x;
        return 0;
    }
    case CLI_DOUBLE:
        num = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(num))
            return cli_fail(cmd, "--%s expects a number, got '%s'", f->name, v), -1;
        if (f->min <= f->max && (num < f->min || num > f->max))
            return cli_fail(cmd, "--%s must be in [%g, %g], got %s", f->name, f->min, f->max, v), -1;
        *(double *)f->dst = num;
        return 0;
    case CLI_STR:
        if (!*v) return cli_fail(cmd, "--%s expects a value", f->name), -1;
        *(const char **)f->dst = v;
        return 0;
    case CLI_BOOL:
        *(int *)f->dst = 1;
        return 0;
    }
    return -1;
}

int cli_parse(const char *cmd, const char *usage, int argc, char **argv,
              const struct cli_flag *flags, int nflags)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_usage(stdout, cmd, usage, flags, nflags);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            cli_fail(cmd, "unexpected argument '%s' (flags start with --; see --help)", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct cli_flag *f = NULL;
        for (int k = 0; k < nflags; k++)
            if (strlen(flags[k].name) == len && strncmp(flags[k].name, name, len) == 0) f = &flags[k];
        if (!f) {
            cli_fail(cmd, "unknown flag '--%.*s' (see tapegrad %s --help)", (int)len, name, cmd);
            return -1;
        }
        const char *v;
        if (f->kind == CLI_BOOL) {
            if (eq) {
                cli_fail(cmd, "--%s takes no value", f->name);
                return -1;
            }
            v = "";
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            cli_fail(cmd, "--%s needs a value", f->name);
            return -1;
        }
        if (set_value(cmd, f, v) != 0) return -1;
    }
    return 0;
}

const struct tg_cell *cli_cell(const char *cmd, const char *spec, struct tg_cell **owned)
{
    *owned = NULL;
    if (cli_has_ext(spec, ".cell") || strchr(spec, '/')) {
        *owned = tg_cell_load(spec);
        if (!*owned) cli_fail(cmd, "%s", tg_last_error());
        return *owned;
    }
    const struct tg_cell *c = tg_cell_find(spec);
    if (!c) cli_fail(cmd, "%s (or a cell file: --cell FILE.cell)", tg_last_error());
    return c;
}

int cli_cell_is_builtin_layout(const struct tg_cell *cell)
{
    const struct tg_cell *b = tg_cell_find(cell->name);
    tg_error_clear();
    if (!b || b->n_params != cell->n_params || b->n_state != cell->n_state) return 0;
    for (int k = 0; k < b->n_params; k++) {
        const struct tg_param_spec *p = &b->params[k], *q = &cell->params[k];
        if (strcmp(p->name, q->name) != 0 || memcmp(&p->shape, &q->shape, sizeof p->shape) != 0 ||
            tg_param_spec_ndim(p) != tg_param_spec_ndim(q))
            return 0;
    }
    return 1;
}
