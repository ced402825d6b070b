/* flow_out.h — what `tapegrad flow` prints and writes (tools/flow_out.c): the terminal table,
 * CSV (one row per step and layer), JSON, and the plots. */
#ifndef TG_FLOW_OUT_H
#define TG_FLOW_OUT_H

#include <stdio.h>

#include "tapegrad_flow.h"

/* One analysed batch. */
struct flow_run {
    const char *cell, *task;
    int loss_last;                /* --loss last: the loss of the last step only */
    int jacobian;                 /* ‖∂h_T/∂h_t‖ was computed */
    int probes;                   /* estimator seeds when not exact */
    double loss;
    struct tg_flow *f;
    const struct tg_model *m;
};

/* Rows of the table: every `every`-th step (and the last); 0: about 25 rows per layer. */
void flow_print_table(FILE *out, const struct flow_run *r, int every);
int flow_write_csv(const char *path, const struct flow_run *r, char *err, int errlen);
int flow_write_json(const char *path, const struct flow_run *r, char *err, int errlen);
/* Four panels: ∂L/∂h_t and its split, ∂h_T/∂h_t, per-step weight terms, saturation. */
int flow_plot(const char *path, const struct flow_run *r, char *err, int errlen);
/* ‖∂L/∂h_t‖ of the top layer against t, one line per run (the --compare picture). */
int flow_plot_compare(const char *path, const struct flow_run *runs, int n, char *err, int errlen);

#endif
