/* registry.c — the built-in cells by name. */
#include <stdio.h>
#include <string.h>

#include "tapegrad_models.h"

extern const struct tg_cell tg_cell_rnn_tanh, tg_cell_rnn_relu, tg_cell_lstm, tg_cell_gru,
    tg_cell_gru_cho, tg_cell_lstm_peephole, tg_cell_lstm_coupled, tg_cell_lstm_dlbook, tg_cell_mgu;

static const struct tg_cell *const cells[] = {
    &tg_cell_rnn_tanh,      &tg_cell_rnn_relu,     &tg_cell_lstm,
    &tg_cell_gru,           &tg_cell_gru_cho,      &tg_cell_lstm_peephole,
    &tg_cell_lstm_coupled,  &tg_cell_lstm_dlbook,  &tg_cell_mgu,
};
enum { N_CELLS = sizeof cells / sizeof cells[0] };

int tg_cell_count(void) { return N_CELLS; }

const struct tg_cell *tg_cell_at(int i) { return i >= 0 && i < N_CELLS ? cells[i] : NULL; }

const struct tg_cell *tg_cell_find(const char *name)
{
    for (int i = 0; name && i < N_CELLS; i++)
        if (strcmp(cells[i]->name, name) == 0) return cells[i];
    tg_error(TG_ERR_VALUE, "unknown cell '%s' (expected one of: %s)", name ? name : "(null)",
             tg_cell_names());
    return NULL;
}

const char *tg_cell_names(void)
{
    static char buf[256];
    if (!buf[0]) {
        for (int i = 0; i < N_CELLS; i++) {
            strncat(buf, cells[i]->name, sizeof buf - strlen(buf) - 1);
            if (i + 1 < N_CELLS) strncat(buf, ", ", sizeof buf - strlen(buf) - 1);
        }
    }
    return buf;
}

int tg_param_spec_dims(const struct tg_param_spec *s, int in, int hidden, int *rows, int *cols)
{
    /* in 64 bits: sizes come from flags and checkpoint metadata, and 4·H may not fit an int */
    const struct tg_param_shape *p = &s->shape;
    long long r = (long long)p->r_h * hidden + (long long)p->r_in * in + p->r_1;
    long long c = (long long)p->c_h * hidden + (long long)p->c_in * in + p->c_1;
    int fits = r > 0 && c > 0 && r <= INT32_MAX && c <= INT32_MAX;
    *rows = fits ? (int)r : 0;
    *cols = fits ? (int)c : 0;
    return fits;
}

int tg_param_spec_ndim(const struct tg_param_spec *s)
{
    if (s->ndim == 1 || s->ndim == 2) return s->ndim;
    const struct tg_param_shape *p = &s->shape;
    return p->r_h == 0 && p->r_in == 0 && p->r_1 == 1 && strstr(s->name, "bias") ? 1 : 2;
}

enum tg_status tg_cell_check(const struct tg_cell *cell, int in, int hidden)
{
    if (!cell) return tg_error(TG_ERR_VALUE, "tg_cell_check: no cell given");
    return cell->check ? cell->check(cell->ctx, in, hidden) : TG_OK;
}
