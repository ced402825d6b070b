/* janet_train.c — a complete program around examples/janet_cell.c: learn to predict, at every
 * step, whether the running sum of a random ±1 input is positive. Build against the installed
 * library (see README: Layout):
 *   cc janet_train.c janet_cell.c $(pkg-config --cflags --libs tapegrad) -o janet_train        */
#include <stdio.h>

#include "tapegrad_models.h"
#include "tapegrad_optim.h"

extern const struct tg_cell janet_cell;

int main(void)
{
    enum { T = 20, B = 16, STEPS = 300 };
    struct tg_model_config cfg = {.cell = &janet_cell, .input = 1, .hidden = 16, .layers = 1,
                                  .outputs = 2, .dtype = TG_F32, .loss = TG_LOSS_XENT_MEAN};
    struct tg_model *m;
    struct tg_optim_config oc;
    struct tg_optim *opt;
    struct tg_rng rng;
    tg_rng_seed(&rng, 1);
    if (tg_model_new(&cfg, &m) != TG_OK) return puts(tg_last_error()), 1;
    tg_model_init_uniform(m, &rng);
    tg_optim_defaults(TG_OPTIM_ADAM, &oc);
    oc.lr = 1e-2;
    if (tg_optim_new(&oc, m->params, m->n_params, &opt) != TG_OK) return puts(tg_last_error()), 1;
    struct tg_tape *t = tg_tape_new(0);
    double x[T * B], loss = 0;
    int32_t y[T * B];
    for (int step = 1; step <= STEPS; step++) {
        for (int b = 0; b < B; b++) {
            double sum = 0;
            for (int s = 0; s < T; s++) {
                x[s * B + b] = tg_rng_uniform(&rng) < 0.5 ? -1 : 1;
                sum += x[s * B + b];
                y[s * B + b] = sum > 0;
            }
        }
        struct tg_seq_batch batch = {.T = T, .B = B, .x = x, .labels = y};
        struct tg_seq_result res;
        tg_tape_reset(t);
        tg_model_zero_grad(m);
        if (tg_model_forward(m, t, &batch, 0, &res) != TG_OK || tg_backward(t, res.loss) != TG_OK ||
            tg_optim_step(opt) != TG_OK)
            return puts(tg_last_error()), 1;
        loss = tg_get(res.loss, 0, 0);
        if (step % 100 == 0) printf("step %d: cross-entropy %.4f\n", step, loss);
    }
    tg_tape_free(t);
    tg_optim_free(opt);
    tg_model_free(m);
    return loss < 0.35 ? 0 : 1; /* chance is 0.69 */
}
