/* export_logits.c — a helper for torch_export.py: run a checkpoint's model in tapegrad on a
 * fixed input and write that input and the logits, so PyTorch can run the exported parameters
 * on the same input and compare.
 *
 *   export_logits CHECKPOINT OUT.safetensors
 *
 * OUT holds `tokens` (I64 [T, B]) for a text model or `x` (F64 [T, B, I]) otherwise, and
 * `logits` (F64 [T, B, V]). Exit 1 with a message on any error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tapegrad_safetensors.h"
#include "tapegrad_train.h"

enum { T = 7, B = 3 };

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: export_logits CHECKPOINT OUT.safetensors\n");
        return 1;
    }
    struct tg_checkpoint *ck = NULL;
    struct tg_model *m = NULL;
    if (tg_checkpoint_open(argv[1], &ck) != TG_OK ||
        tg_checkpoint_new_model(ck, tg_checkpoint_cell(ck), &m) != TG_OK) {
        fprintf(stderr, "export_logits: %s\n", tg_last_error());
        return 1;
    }
    int V = m->cfg.vocab, I = m->cfg.input, O = m->cfg.outputs;
    int64_t tok[T * B];
    int32_t tok32[T * B], lab[T * B];
    double *x = calloc((size_t)T * B * I, sizeof *x), *lg = calloc((size_t)T * B * O, sizeof *lg);
    for (int i = 0; i < T * B; i++) {
        tok[i] = V ? (i * 7 + 3) % V : 0;
        tok32[i] = (int32_t)tok[i];
        lab[i] = -1;
    }
    /* a dense input: one-hot symbols, as the reber and copy tasks give, plus a little noise */
    for (int i = 0; i < T * B && !V; i++)
        for (int k = 0; k < I; k++) x[(size_t)i * I + k] = (k == (i * 5 + 1) % I) + 0.1 * sin(i + 0.3 * k);
    struct tg_seq_batch sb = {.T = T, .B = B, .x = V ? NULL : x, .tokens = V ? tok32 : NULL, .labels = lab};
    struct tg_tape *t = tg_tape_new(0);
    struct tg_seq_result res;
    int rc = 0;
    if (tg_model_forward_from(m, t, &sb, NULL, &res) != TG_OK) {
        fprintf(stderr, "export_logits: %s\n", tg_last_error());
        rc = 1;
    }
    for (int i = 0; !rc && i < T * B; i++)
        for (int k = 0; k < O; k++) lg[(size_t)i * O + k] = tg_get(res.logits, i, k);
    struct tg_st_writer *w = tg_st_writer_new();
    int64_t s2[2] = {T, B}, s3[3] = {T, B, I}, sl[3] = {T, B, O};
    if (V) tg_st_writer_add(w, "tokens", TG_ST_I64, 2, s2, tok);
    else tg_st_writer_add(w, "x", TG_ST_F64, 3, s3, x);
    tg_st_writer_add(w, "logits", TG_ST_F64, 3, sl, lg);
    if (!rc && tg_st_writer_save(w, argv[2]) != TG_OK) {
        fprintf(stderr, "export_logits: %s\n", tg_last_error());
        rc = 1;
    }
    tg_st_writer_free(w);
    tg_tape_free(t);
    free(x);
    free(lg);
    tg_model_free(m);
    tg_checkpoint_close(ck);
    return rc;
}
