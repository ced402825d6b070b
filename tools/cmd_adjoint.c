/* cmd_adjoint.c — `tapegrad adjoint`: print the backward pass of one step of a cell as a
 * derivation file (models/adjoint.c), or as LaTeX. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tapegrad_deriv.h"

static const char CMD[] = "adjoint";
static const char USAGE[] = "--cell NAME|FILE.cell [--format adj|latex] [--out FILE]";

struct tg_cell *cli_cell_file(const char *cmd, const char *spec)
{
    struct tg_cell *c = cli_has_ext(spec, ".cell") || strchr(spec, '/') ? tg_cell_load(spec) : tg_cell_parse_builtin(spec);
    if (!c) cli_fail(cmd, "%s", tg_last_error());
    return c;
}

int cmd_adjoint(int argc, char **argv)
{
    const char *cell_name = NULL, *format = "adj", *out_path = NULL;
    const struct cli_flag flags[] = {
        {"cell", CLI_STR, &cell_name, "a built-in cell (its file, models/cells/NAME.cell) or FILE.cell (required)", 1, 0},
        {"format", CLI_STR, &format, "adj (a derivation file, default) or latex (an align* block)", 1, 0},
        {"out", CLI_STR, &out_path, "write to FILE instead of standard output", 1, 0},
    };
    int pr = cli_parse(CMD, USAGE, argc, argv, flags, (int)(sizeof flags / sizeof flags[0]));
    if (pr < 0) return 1;
    if (pr > 0) {
        printf("\nPrints the backward pass of one time step: given ds' for every state s, one line per\n"
               "adjoint (dNAME for the gradient of NAME), parameters as dW += da @ v^T, each group\n"
               "under the forward equation it came from. The output is a derivation file:\n"
               "  tapegrad check --cell CELL --derivation FILE.adj   runs it against autodiff.\n");
        return 0;
    }
    if (!cell_name) return cli_fail(CMD, "--cell is required (one of: %s, or FILE.cell)", tg_cell_names());
    enum tg_adj_format f;
    if (!strcmp(format, "adj")) f = TG_ADJ_TEXT;
    else if (!strcmp(format, "latex")) f = TG_ADJ_LATEX;
    else return cli_fail(CMD, "--format must be adj or latex, not '%s'", format);
    struct tg_cell *cell = cli_cell_file(CMD, cell_name);
    if (!cell) return 1;
    char *text = tg_adjoint_text(cell, f);
    tg_cell_free(cell);
    if (!text) return cli_fail(CMD, "%s", tg_last_error());
    int rc = 0;
    if (out_path) {
        FILE *fp = fopen(out_path, "w");
        if (!fp || fputs(text, fp) < 0 || fclose(fp) != 0) rc = cli_fail(CMD, "cannot write %s", out_path);
    } else {
        fputs(text, stdout);
    }
    free(text);
    return rc;
}
