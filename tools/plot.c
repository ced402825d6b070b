/* plot.c — PLplot (cairo driver) line plots: the vanishing-gradient curves of `tapegrad flow`
 * and the loss curves of `tapegrad train --plot`. PLplot draws the axes, ticks, log labels and
 * legends; this file only maps our series onto its calls:
 *   plsdev("pngcairo"|"svgcairo"), plsfnam, plspage (size), plssub (grid), plinit;
 *   per panel: pladv, plvsta, plwind, plbox (log axis: "l" option on log10 data), pllab,
 *   plline per finite run of points, pllegend; plend.
 * Colours: map 0 is white (background), 1 black (axes), then a qualitative palette. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot.h"
#include "tg_config.h"

#if TG_HAVE_PLPLOT
#include <plplot.h>
#endif

static int fail(char *err, int errlen, const char *msg, const char *arg)
{
    snprintf(err, (size_t)errlen, msg, arg);
    return -1;
}

#if !TG_HAVE_PLPLOT

int plot_available(void) { return 0; }

int plot_write(const char *path, const struct plot_panel *panels, int npanels, int cols,
               int width, int height, char *err, int errlen)
{
    (void)panels, (void)npanels, (void)cols, (void)width, (void)height;
    return fail(err, errlen, "cannot draw %s: tapegrad was built without PLplot (Debian: "
                "apt-get install libplplot-dev plplot-driver-cairo, then reconfigure)", path);
}

#else

int plot_available(void) { return 1; }

/* Colour map 0 entries 2… : a palette readable on white (Okabe–Ito plus a few). */
static const int palette[][3] = {
    {0, 114, 178}, {213, 94, 0}, {0, 158, 115}, {204, 121, 167}, {230, 159, 0},
    {86, 180, 233}, {120, 120, 120}, {0, 0, 0}, {240, 228, 66}, {153, 0, 0},
};
enum { NPAL = sizeof palette / sizeof palette[0] };

static int has_device(const char *dev)
{
    const char **menu, **names;
    int n = 64;
    static const char *m[64], *d[64];
    menu = m, names = d;
    plgDevs(&menu, &names, &n);
    for (int i = 0; i < n; i++)
        if (names[i] && strcmp(names[i], dev) == 0) return 1;
    return 0;
}

/* y labels of a log axis drawn from log10 data: 10^k at whole k (PLplot's own "l" option
 * labels every decade, unreadable over 30 of them), x labels as numbers. */
static void log_label(PLINT axis, PLFLT v, char *label, PLINT len, PLPointer data)
{
    (void)data;
    if (axis == PL_Y_AXIS && fabs(v - round(v)) < 1e-9) snprintf(label, (size_t)len, "10#u%d#d", (int)round(v));
    else if (axis == PL_Y_AXIS) snprintf(label, (size_t)len, "%.3g", pow(10.0, v));
    else snprintf(label, (size_t)len, "%g", v);
}

static double yval(const struct plot_panel *p, double y) { return p->logy ? log10(y) : y; }
static int usable(const struct plot_panel *p, double y) { return isfinite(y) && (!p->logy || y > 0); }

static void draw_panel(const struct plot_panel *p)
{
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < p->nseries; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (!isfinite(x) || !usable(p, y)) continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x);
            y0 = fmin(y0, yval(p, y)), y1 = fmax(y1, yval(p, y));
        }
    if (p->ymin < p->ymax) y0 = yval(p, p->ymin), y1 = yval(p, p->ymax);
    if (!(x0 <= x1)) x0 = 0, x1 = 1;
    if (!(y0 <= y1)) y0 = 0, y1 = 1;
    if (x1 == x0) x1 = x0 + 1;
    if (y1 - y0 < 1e-12) y0 -= 0.5, y1 += 0.5;
    double pad = 0.04 * (y1 - y0);
    pladv(0);
    plvpor(0.12, 0.95, 0.14, 0.88);
    plwind(x0, x1, y0 - pad, y1 + pad);
    plcol0(1);
    plwidth(1.0);
    /* a log axis: a labelled tick every k whole decades, k keeping ≤ 8 labels */
    double ytick = p->logy ? fmax(1.0, ceil((y1 - y0) / 8)) : 0.0;
    plslabelfunc(p->logy ? log_label : NULL, NULL);
    plbox("bcnst", 0.0, 0, p->logy ? "bcnstov" : "bcnstv", ytick, p->logy ? (ytick > 1 ? 1 : 9) : 0);
    plslabelfunc(NULL, NULL);
    pllab(p->xlabel ? p->xlabel : "", p->ylabel ? p->ylabel : "", p->title ? p->title : "");
    PLINT opt[PLOT_MAX_SERIES], col[PLOT_MAX_SERIES], sty[PLOT_MAX_SERIES], tcol[PLOT_MAX_SERIES];
    PLFLT wid[PLOT_MAX_SERIES];
    const char *text[PLOT_MAX_SERIES];
    static PLFLT xs[1 << 16], ys[1 << 16];
    int nl = 0;
    for (int s = 0; s < p->nseries; s++) {
        const struct plot_series *se = &p->series[s];
        int c = 2 + s % NPAL;
        plcol0(c);
        pllsty(se->dashed ? 2 : 1);
        plwidth(2.0);
        int k = 0;
        for (int i = 0; i <= se->n; i++) {
            int ok = i < se->n && isfinite(se->x[i]) && usable(p, se->y[i]) && k < (1 << 16);
            if (ok) xs[k] = se->x[i], ys[k] = yval(p, se->y[i]), k++;
            if (!ok || i == se->n) {
                if (k >= 2) plline(k, xs, ys);
                else if (k == 1) plpoin(1, xs, ys, 17);
                k = 0;
            }
        }
        pllsty(1);
        if (se->label) {
            opt[nl] = PL_LEGEND_LINE, col[nl] = c, tcol[nl] = 1, sty[nl] = se->dashed ? 2 : 1;
            wid[nl] = 2.0, text[nl] = se->label, nl++;
        }
    }
    plwidth(1.0);
    if (nl > 0) {
        PLFLT lw, lh;
        plcol0(1);
        pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_INSIDE | PL_POSITION_LEFT | PL_POSITION_TOP,
                 0.01, 0.01, 0.08, 0, 1, 1, nl, 1, nl, opt, 1.0, 0.8, 1.6, 0.0, tcol, text,
                 NULL, NULL, NULL, NULL, col, sty, wid, NULL, NULL, NULL, NULL);
    }
}

int plot_write(const char *path, const struct plot_panel *panels, int npanels, int cols,
               int width, int height, char *err, int errlen)
{
    size_t n = strlen(path);
    const char *dev = n > 4 && strcmp(path + n - 4, ".png") == 0   ? "pngcairo"
                      : n > 4 && strcmp(path + n - 4, ".svg") == 0 ? "svgcairo"
                                                                    : NULL;
    if (!dev) return fail(err, errlen, "cannot draw %s: the plot's file must end in .png or .svg", path);
    if (npanels < 1) return fail(err, errlen, "cannot draw %s: nothing to plot", path);
    if (!has_device(dev))
        return fail(err, errlen, "cannot draw %s: PLplot's cairo driver is missing (Debian: "
                    "apt-get install plplot-driver-cairo)", path);
    FILE *probe = fopen(path, "wb"); /* PLplot exits the process on an unwritable file */
    if (!probe) return fail(err, errlen, "cannot write %s", path);
    fclose(probe);
    if (cols < 1) cols = 1;
    int rows = (npanels + cols - 1) / cols;
    plsdev(dev);
    plsfnam(path);
    plspage(0.0, 0.0, width, height, 0, 0);
    plscol0(0, 255, 255, 255);
    plscol0(1, 0, 0, 0);
    for (int i = 0; i < NPAL; i++) plscol0(2 + i, palette[i][0], palette[i][1], palette[i][2]);
    plssub(cols, rows);
    plinit();
    plfontld(1);
    plschr(0.0, rows > 1 ? 0.9 : 1.0);
    for (int i = 0; i < npanels; i++) draw_panel(&panels[i]);
    plend();
    return 0;
}

#endif
