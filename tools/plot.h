/* plot.h — line plots to PNG or SVG through PLplot's cairo driver (tools/plot.c), for
 * `tapegrad flow --out` and `tapegrad train --plot` / `tapegrad plot`. Optional at build time
 * like Graphviz: without PLplot, plot_write fails with a message saying how to get it. */
#ifndef TG_PLOT_H
#define TG_PLOT_H

enum { PLOT_MAX_SERIES = 24 };

struct plot_series {
    const char *label;
    const double *x, *y;   /* n points; non-finite y (and y ≤ 0 on a log axis) break the line */
    int n;
    int dashed;
};

struct plot_panel {
    const char *title, *xlabel, *ylabel;
    int logy;              /* log10 y axis */
    double ymin, ymax;     /* fixed range when ymin < ymax; else from the data */
    int nseries;
    struct plot_series series[PLOT_MAX_SERIES];
};

static inline struct plot_panel plot_panel_make(const char *title, const char *xlabel,
                                                const char *ylabel, int logy)
{
    struct plot_panel p = {.title = title, .xlabel = xlabel, .ylabel = ylabel, .logy = logy};
    return p;
}

/* Draw the panels (a grid of `cols` columns) into path: .png (pngcairo) or .svg (svgcairo).
 * Returns 0, or −1 with a one-line message in err (no PLplot, no cairo driver, an unwritable
 * path, another extension, nothing to draw). */
int plot_write(const char *path, const struct plot_panel *panels, int npanels, int cols,
               int width, int height, char *err, int errlen);

/* Loss, metric and gradient-norm curves of a `train --log` CSV (tools/cmd_plot.c). */
int plot_train_log(const char *csv_path, const char *out, char *err, int errlen);

/* Is plotting compiled in (PLplot found at build time)? */
int plot_available(void);

#endif
