/* cmd_plot.c — training curves from a `train --log` CSV: `tapegrad plot --log run.csv --out
 * curve.png`, and what `train --plot` draws at the end of a run (plot_train_log).
 *
 * Panels: the loss (per step and its moving average, log axis); the task's metrics on the
 * training batch and on the held-out set (evaluated every few steps: those points only);
 * the global gradient norm before clipping and, when the log has them, the per-layer norms
 * ‖∂L/∂W‖ (gnorm_* columns), log axis. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plot.h"

enum { MAX_COLS = 64 };

struct csv {
    int ncols, nrows;
    char *names[MAX_COLS];
    double *v[MAX_COLS];          /* column-major, NaN where empty */
};

static void csv_free(struct csv *c)
{
    for (int i = 0; i < c->ncols; i++) free(c->names[i]), free(c->v[i]);
    memset(c, 0, sizeof *c);
}

static int csv_read(const char *path, struct csv *c, char *err, int errlen)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "r");
    if (!f) return snprintf(err, (size_t)errlen, "cannot open %s", path), -1;
    char *line = NULL;
    size_t cap = 0;
    int cap_rows = 0;
    while (getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!*line) continue;
        if (c->ncols == 0 || strncmp(line, "step,", 5) == 0) {
            if (c->ncols) continue; /* a header repeated by an appended (resumed) run */
            for (char *s = NULL, *tok = strtok_r(line, ",", &s); tok && c->ncols < MAX_COLS; tok = strtok_r(NULL, ",", &s))
                c->names[c->ncols++] = strdup(tok);
            continue;
        }
        if (c->nrows == cap_rows) {
            cap_rows = cap_rows ? 2 * cap_rows : 1024;
            for (int i = 0; i < c->ncols; i++) c->v[i] = realloc(c->v[i], sizeof(double) * (size_t)cap_rows);
        }
        char *p = line;
        for (int i = 0; i < c->ncols; i++) {
            char *end = p;
            double x = *p && *p != ',' ? strtod(p, &end) : NAN;
            c->v[i][c->nrows] = end == p ? NAN : x;
            p = strchr(p, ',');
            p = p ? p + 1 : (char *)"";
        }
        c->nrows++;
    }
    free(line);
    fclose(f);
    if (c->ncols < 2 || strcmp(c->names[0], "step") != 0 || c->nrows == 0) {
        csv_free(c);
        return snprintf(err, (size_t)errlen, "%s is not a tapegrad train --log CSV with rows", path), -1;
    }
    return 0;
}

/* Keep only the rows where column j is finite (held-out columns are filled at evaluations). */
static int finite_pairs(const struct csv *c, int j, double *x, double *y)
{
    int n = 0;
    for (int r = 0; r < c->nrows; r++)
        if (isfinite(c->v[j][r])) x[n] = c->v[0][r], y[n] = c->v[j][r], n++;
    return n;
}

int plot_train_log(const char *csv_path, const char *out, char *err, int errlen)
{
    struct csv c;
    if (csv_read(csv_path, &c, err, errlen) != 0) return -1;
    size_t n = (size_t)c.nrows;
    double *buf = malloc(sizeof(double) * n * 2 * MAX_COLS);
    if (!buf) return csv_free(&c), snprintf(err, (size_t)errlen, "out of memory"), -1;
    struct plot_panel pn[3];
    memset(pn, 0, sizeof pn);
    pn[0] = plot_panel_make("loss", "step", "loss", 1);
    pn[1] = plot_panel_make("metrics (training batch; eval_: held-out)", "step", "", 0);
    pn[2] = plot_panel_make("gradient norm before clipping", "step", "‖∂L/∂W‖", 1);
    int k = 0;
    for (int j = 1; j < c.ncols; j++) {
        const char *nm = c.names[j];
        struct plot_panel *p = NULL;
        if (!strcmp(nm, "loss") || !strcmp(nm, "smooth_loss")) p = &pn[0];
        else if (!strcmp(nm, "grad_norm") || !strncmp(nm, "gnorm_", 6)) p = &pn[2];
        else if (strcmp(nm, "tokens") && strcmp(nm, "seconds")) p = &pn[1];
        if (!p || p->nseries >= PLOT_MAX_SERIES) continue;
        double *x = buf + (size_t)k * 2 * n, *y = x + n;
        int m = finite_pairs(&c, j, x, y);
        if (m == 0) continue;
        p->series[p->nseries++] = (struct plot_series){nm, x, y, m, !strncmp(nm, "eval_", 5) || !strcmp(nm, "smooth_loss")};
        k++;
    }
    int np = pn[2].nseries ? 3 : 2;
    int rc = plot_write(out, pn, np, 1, 1000, 380 * np, err, errlen);
    free(buf);
    csv_free(&c);
    return rc;
}

int cmd_plot(int argc, char **argv)
{
    const char *log = NULL, *out = NULL;
    const struct cli_flag flags[] = {
        {"log", CLI_STR, &log, "a tapegrad train --log CSV", 1, 0},
        {"out", CLI_STR, &out, "FILE.png or FILE.svg", 1, 0},
    };
    int pr = cli_parse("plot", "--log run.csv --out curve.png", argc, argv, flags, 2);
    if (pr) return pr < 0 ? 1 : 0;
    if (!log || !out) return cli_fail("plot", "needs --log FILE.csv and --out FILE.png|svg");
    char err[512];
    if (plot_train_log(log, out, err, sizeof err) != 0) return cli_fail("plot", "%s", err);
    printf("wrote %s\n", out);
    return 0;
}
