/* fuzz_checkpoint.c — loading a checkpoint as `tapegrad train --resume` and `tapegrad sample`
 * do (models/checkpoint.c), on arbitrary bytes.
 *
 * The steps after tg_checkpoint_open are those of the trainer's build(): a model of the saved
 * cell and sizes with the saved parameters (tg_checkpoint_new_model), then an optimizer of the
 * saved configuration with the saved state (tg_optim_new, tg_checkpoint_load_optim). Task
 * creation is left out: it reads the text file a checkpoint names, which is not the
 * checkpoint's bytes. Every step must accept or refuse without a crash, undefined behaviour or
 * an allocation the file's own size does not justify. */
#include <stdint.h>

#include "fuzz_util.h"
#include "st_mutator.h" /* libFuzzer build only: mutations that keep the header JSON */
#include "tapegrad_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tg_checkpoint *c;
    if (tg_checkpoint_open(fuzz_input_file(data, size), &c) != TG_OK) return 0;
    (void)tg_checkpoint_config(c);
    (void)tg_checkpoint_state(c);
    struct tg_model *m;
    if (tg_checkpoint_new_model(c, NULL, &m) == TG_OK) {
        struct tg_optim *o;
        if (tg_optim_new(tg_checkpoint_optim_config(c), m->params, m->n_params, &o) == TG_OK) {
            (void)tg_checkpoint_load_optim(c, o);
            tg_optim_free(o);
        }
        tg_model_free(m);
    }
    tg_checkpoint_close(c);
    return 0;
}
