/* fuzz_cell.c — libFuzzer harness for the cell language (models/cell_lang.c, cell_check.c,
 * cell_compile.c): any bytes are parsed; a file that loads is checked for small sizes and, if
 * it passes, initialised (its init lines too) and run forward and backward for two layers, so
 * the compiled program is exercised too.
 *
 *   fuzz/run.sh cell 600        (seeds: corpus/cell/, the shipped and literature cells)
 *
 * driver.c feeds corpus/cell/ and regressions/cell/ to the same function under gcc (meson
 * test, suite fuzz). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tapegrad_models.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tg_cell *c = tg_cell_parse((const char *)data, size, "fuzz.cell");
    if (!c) {
        if (strchr(tg_last_error(), '\n')) __builtin_trap(); /* errors are one line */
        return 0;
    }
    struct tg_model_config cfg = {.cell = c, .input = 2, .hidden = 3, .layers = 2, .outputs = 2,
                                  .dtype = TG_F64, .loss = TG_LOSS_XENT_SUM};
    struct tg_model *m = NULL;
    if (tg_model_new(&cfg, &m) == TG_OK) {
        struct tg_rng r;
        tg_rng_seed(&r, 1);
        tg_model_init_uniform(m, &r);
        if (tg_model_init_cell(m, &r) != TG_OK) __builtin_trap(); /* its init lines */
        double x[2 * 2 * 2] = {0.5, -0.25, 1, 0.125, -1, 0.75, 0.3, -0.6};
        int32_t y[4] = {0, 1, 1, -1};
        struct tg_seq_batch b = {.T = 2, .B = 2, .x = x, .labels = y};
        struct tg_tape *t = tg_tape_new(0);
        struct tg_seq_result res;
        if (t && tg_model_forward_from(m, t, &b, NULL, &res) == TG_OK) tg_backward(t, res.loss);
        tg_tape_free(t);
        tg_model_free(m);
    }
    tg_cell_free(c);
    return 0;
}
