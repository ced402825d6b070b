/* flow_out.c — `tapegrad flow`'s outputs. Steps are printed 1-based (t = 1 … T) as people
 * count them; layers 0-based as in PyTorch's parameter names (weight_hh_l0). A value the
 * ledger does not have (a parameter it does not cover, the Jacobian when skipped) is "-" in the
 * table, empty in CSV and null in JSON. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_out.h"
#include "plot.h"

/* The parameters shown on layer l's rows: the layer's own, then the ones outside the layers
 * (embedding, output). Their short names: the cell's spec name, or the full name. */
static int layer_params(const struct flow_run *r, int l, int *idx)
{
    int n = 0;
    for (int p = 0; p < r->m->n_params; p++)
        if (r->m->param_layer[p] == l) idx[n++] = p;
    for (int p = 0; p < r->m->n_params; p++)
        if (r->m->param_layer[p] < 0) idx[n++] = p;
    return n;
}

static const char *short_name(const struct flow_run *r, int p)
{
    int s = r->m->param_spec[p];
    return s >= 0 ? r->m->cfg.cell->params[s].name : r->m->names[p];
}

static double sat_at(const struct tg_flow *f, int l, int g, int t)
{
    return f->sat[((size_t)l * TG_FLOW_MAX_GATES + g) * f->T + t];
}

static void cell_num(FILE *out, double v, int w)
{
    if (isfinite(v)) fprintf(out, " %*.3e", w, v);
    else fprintf(out, " %*s", w, "-");
}

void flow_print_table(FILE *out, const struct flow_run *r, int every)
{
    const struct tg_flow *f = r->f;
    int T = f->T, idx[64];
    if (every <= 0) every = T > 25 ? (T + 24) / 25 : 1;
    fprintf(out, "%s on %s, T=%d B=%d H=%d L=%d, loss: %s %s = %.6g%s\n", r->cell, r->task, T, f->B,
            f->H, f->L, r->m->cfg.loss == TG_LOSS_MSE_LAST ? "MSE" : "cross-entropy summed over positions",
            r->loss_last ? "of the last step only" : "of every step", r->loss,
            every > 1 ? ", every few steps shown (--every 1 for all)" : "");
    if (f->sketch)
        fprintf(out, "per-step weight-gradient norms of products: ESTIMATED (CountSketch, %d buckets; "
                "relative std of the squared norm <= %.2f); bias, embedding, other terms exact\n",
                f->sketch, sqrt((2.0 / f->sketch) * (1 + 2.0 / f->sketch) + 2.0 / f->sketch));
    else
        fprintf(out, "per-step weight-gradient norms: exact\n");
    if (r->jacobian)
        fprintf(out, "‖∂h_T/∂h_t‖: RMS singular value of the per-sequence Jacobian, %s\n",
                f->jac_exact ? "exact (H one-hot seeds)" : "estimated (Gaussian probes)");
    for (int l = 0; l < f->L; l++) {
        int np = layer_params(r, l, idx);
        fprintf(out, "\nlayer %d\n%5s %10s %10s %10s %10s", l, "t", "dL/dh_t", "from out", "from t+1", "dh_T/dh_t");
        for (int g = 0; g < f->n_gates; g++) fprintf(out, " %9s", f->gate_label[g]);
        for (int k = 0; k < np; k++) fprintf(out, " %12.12s", short_name(r, idx[k]));
        fprintf(out, "\n");
        for (int t = 0; t < T; t++) {
            if (t % every != 0 && t != T - 1) continue;
            fprintf(out, "%5d", t + 1);
            cell_num(out, tg_flow_at(f->grad_h, f, l, t), 10);
            cell_num(out, tg_flow_at(f->from_out, f, l, t), 10);
            cell_num(out, tg_flow_at(f->from_next, f, l, t), 10);
            cell_num(out, r->jacobian ? tg_flow_at(f->jac, f, l, t) : NAN, 10);
            for (int g = 0; g < f->n_gates; g++) fprintf(out, " %8.1f%%", 100 * sat_at(f, l, g, t));
            for (int k = 0; k < np; k++) cell_num(out, f->contrib[(size_t)idx[k] * T + t], 12);
            fprintf(out, "\n");
        }
    }
    if (f->n_gates)
        fprintf(out, "\ngates: share saturated (σ < 0.01 or > 0.99, |tanh| > 0.99); weights: ‖step t's term of ∂L/∂W‖_F\n");
    else
        fprintf(out, "\nweights: ‖step t's term of ∂L/∂W‖_F\n");
}

static void csv_num(FILE *o, double v)
{
    if (isfinite(v)) fprintf(o, ",%.9g", v);
    else fprintf(o, ",");
}

int flow_write_csv(const char *path, const struct flow_run *r, char *err, int errlen)
{
    FILE *o = fopen(path, "w");
    if (!o) return snprintf(err, (size_t)errlen, "cannot write %s", path), -1;
    const struct tg_flow *f = r->f;
    int idx[64], np = layer_params(r, 0, idx);
    fprintf(o, "cell,t,layer,grad_h,from_out,from_next,jac");
    for (int g = 0; g < f->n_gates; g++) fprintf(o, ",sat_%s", f->gate_label[g]);
    for (int k = 0; k < np; k++) fprintf(o, ",contrib_%s", short_name(r, idx[k]));
    fprintf(o, "\n");
    for (int l = 0; l < f->L; l++) {
        layer_params(r, l, idx);
        for (int t = 0; t < f->T; t++) {
            fprintf(o, "%s,%d,%d", r->cell, t + 1, l);
            csv_num(o, tg_flow_at(f->grad_h, f, l, t));
            csv_num(o, tg_flow_at(f->from_out, f, l, t));
            csv_num(o, tg_flow_at(f->from_next, f, l, t));
            csv_num(o, r->jacobian ? tg_flow_at(f->jac, f, l, t) : NAN);
            for (int g = 0; g < f->n_gates; g++) csv_num(o, sat_at(f, l, g, t));
            for (int k = 0; k < np; k++) csv_num(o, f->contrib[(size_t)idx[k] * f->T + t]);
            fprintf(o, "\n");
        }
    }
    int bad = ferror(o);
    if (fclose(o) != 0 || bad) return snprintf(err, (size_t)errlen, "cannot write %s", path), -1;
    return 0;
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

int flow_write_json(const char *path, const struct flow_run *r, char *err, int errlen)
{
    const struct tg_flow *f = r->f;
    json_t *root = json_object(), *layers = json_array(), *params = json_array();
    json_object_set_new(root, "cell", json_string(r->cell));
    json_object_set_new(root, "task", json_string(r->task));
    json_object_set_new(root, "T", json_integer(f->T));
    json_object_set_new(root, "B", json_integer(f->B));
    json_object_set_new(root, "H", json_integer(f->H));
    json_object_set_new(root, "L", json_integer(f->L));
    json_object_set_new(root, "loss", json_string(r->loss_last ? "last" : "all"));
    json_object_set_new(root, "loss_value", num(r->loss));
    json_object_set_new(root, "steps_are", json_string("1-based"));
    json_t *jm = json_object();
    json_object_set_new(jm, "method", json_string(!r->jacobian ? "skipped" : f->jac_exact ? "exact" : "hutchinson"));
    if (r->jacobian && !f->jac_exact) json_object_set_new(jm, "probes", json_integer(r->probes));
    json_object_set_new(root, "jacobian", jm);
    json_t *jl = json_object();
    json_object_set_new(jl, "method", json_string(f->sketch ? "sketch" : "exact"));
    if (f->sketch) json_object_set_new(jl, "buckets", json_integer(f->sketch));
    json_object_set_new(root, "contrib_method", jl);
    for (int p = 0; p < r->m->n_params; p++) {
        json_t *jp = json_object();
        json_object_set_new(jp, "name", json_string(r->m->names[p]));
        json_object_set_new(jp, "covered", json_boolean(f->covered[p]));
        json_t *c = json_array();
        for (int t = 0; t < f->T; t++) json_array_append_new(c, num(f->contrib[(size_t)p * f->T + t]));
        json_object_set_new(jp, "contrib", c);
        json_array_append_new(params, jp);
    }
    for (int l = 0; l < f->L; l++) {
        json_t *jl = json_object(), *steps = json_array();
        json_object_set_new(jl, "layer", json_integer(l));
        for (int t = 0; t < f->T; t++) {
            json_t *s = json_object(), *sat = json_object();
            json_object_set_new(s, "t", json_integer(t + 1));
            json_object_set_new(s, "grad_h", num(tg_flow_at(f->grad_h, f, l, t)));
            json_object_set_new(s, "from_out", num(tg_flow_at(f->from_out, f, l, t)));
            json_object_set_new(s, "from_next", num(tg_flow_at(f->from_next, f, l, t)));
            json_object_set_new(s, "jac", num(r->jacobian ? tg_flow_at(f->jac, f, l, t) : NAN));
            for (int g = 0; g < f->n_gates; g++) json_object_set_new(sat, f->gate_label[g], num(sat_at(f, l, g, t)));
            json_object_set_new(s, "saturation", sat);
            json_array_append_new(steps, s);
        }
        json_object_set_new(jl, "steps", steps);
        json_array_append_new(layers, jl);
    }
    json_object_set_new(root, "layers", layers);
    json_object_set_new(root, "params", params);
    int rc = json_dump_file(root, path, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (rc != 0) return snprintf(err, (size_t)errlen, "cannot write %s", path), -1;
    return 0;
}

/* x = 1 … T, shared by every series (static: the plot is drawn before the call returns). */
static double *steps_axis(int T)
{
    static double *xs;
    static int n;
    if (n < T) {
        free(xs);
        xs = malloc(sizeof *xs * (size_t)T);
        n = xs ? T : 0;
        for (int t = 0; t < n; t++) xs[t] = t + 1;
    }
    return xs;
}

static void add(struct plot_panel *p, const char *label, const double *x, const double *y, int n, int dashed)
{
    if (p->nseries >= PLOT_MAX_SERIES) return;
    p->series[p->nseries++] = (struct plot_series){label, x, y, n, dashed};
}

int flow_plot(const char *path, const struct flow_run *r, char *err, int errlen)
{
    const struct tg_flow *f = r->f;
    int T = f->T;
    double *x = steps_axis(T);
    if (!x) return snprintf(err, (size_t)errlen, "out of memory"), -1;
    static char labels[4][PLOT_MAX_SERIES][48];
    static char titles[4][128];
    struct plot_panel pn[4];
    memset(pn, 0, sizeof pn);
    snprintf(titles[0], sizeof titles[0], "‖∂L/∂h#dt#u‖ and its two parts (%s, loss %s)", r->cell, r->loss_last ? "last" : "all");
    pn[0] = plot_panel_make(titles[0], "time step t", "norm", 1);
    for (int l = 0; l < f->L; l++) {
        snprintf(labels[0][3 * l], 48, "total, layer %d", l);
        snprintf(labels[0][3 * l + 1], 48, "from output, layer %d", l);
        snprintf(labels[0][3 * l + 2], 48, "from t+1, layer %d", l);
        add(&pn[0], labels[0][3 * l], x, f->grad_h + (size_t)l * T, T, 0);
        add(&pn[0], labels[0][3 * l + 1], x, f->from_out + (size_t)l * T, T, 1);
        add(&pn[0], labels[0][3 * l + 2], x, f->from_next + (size_t)l * T, T, 1);
    }
    snprintf(titles[1], sizeof titles[1], "‖∂h#dT#u/∂h#dt#u‖ (%s)",
             !r->jacobian ? "skipped" : f->jac_exact ? "exact" : "estimated");
    pn[1] = plot_panel_make(titles[1], "time step t", "RMS singular value", 1);
    if (r->jacobian)
        for (int l = 0; l < f->L; l++) {
            snprintf(labels[1][l], 48, "layer %d", l);
            add(&pn[1], labels[1][l], x, f->jac + (size_t)l * T, T, 0);
        }
    pn[2] = plot_panel_make("‖step t's term of ∂L/∂W‖", "time step t", "Frobenius norm", 1);
    for (int p = 0; p < r->m->n_params && pn[2].nseries < PLOT_MAX_SERIES; p++) {
        if (!f->covered[p]) continue;
        snprintf(labels[2][pn[2].nseries], 48, "%s", r->m->names[p]);
        add(&pn[2], labels[2][pn[2].nseries], x, f->contrib + (size_t)p * T, T, r->m->param_layer[p] < 0);
    }
    pn[3] = plot_panel_make("gate saturation", "time step t", "share saturated", 0);
    pn[3].ymin = 0.0, pn[3].ymax = 1.0;
    for (int l = 0; l < f->L; l++)
        for (int g = 0; g < f->n_gates && pn[3].nseries < PLOT_MAX_SERIES; g++) {
            snprintf(labels[3][pn[3].nseries], 48, "%s, layer %d", f->gate_label[g], l);
            add(&pn[3], labels[3][pn[3].nseries], x, f->sat + ((size_t)l * TG_FLOW_MAX_GATES + g) * T, T, l > 0);
        }
    return plot_write(path, pn, 4, 2, 1400, 1000, err, errlen);
}

int flow_plot_compare(const char *path, const struct flow_run *runs, int n, char *err, int errlen)
{
    struct plot_panel pn;
    memset(&pn, 0, sizeof pn);
    static char title[160];
    const struct tg_flow *f0 = runs[0].f;
    snprintf(title, sizeof title, "‖∂L#dT#u/∂h#dt#u‖ on %s, T=%d, H=%d, B=%d (loss at the last step only)",
             runs[0].task, f0->T, f0->H, f0->B);
    pn = plot_panel_make(title, "time step t", "‖∂L#dT#u/∂h#dt#u‖, top layer", 1);
    for (int i = 0; i < n; i++) {
        const struct tg_flow *f = runs[i].f;
        double *x = steps_axis(f->T);
        if (!x) return snprintf(err, (size_t)errlen, "out of memory"), -1;
        add(&pn, runs[i].cell, x, f->grad_h + (size_t)(f->L - 1) * f->T, f->T, 0);
    }
    return plot_write(path, &pn, 1, 1, 1000, 650, err, errlen);
}
