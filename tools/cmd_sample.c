/* cmd_sample.c — `tapegrad sample`: characters from a text-model checkpoint, as min-char-rnn's
 * sample() draws them (softmax of the logits, here over a temperature, fed back one at a time).
 * The vocabulary is in the checkpoint, so the training file is not needed. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tapegrad_train.h"

int cmd_sample(int argc, char **argv)
{
    const char *checkpoint = NULL, *prime = NULL;
    long length = 500, seed = 1;
    double temperature = 1.0;
    const struct cli_flag flags[] = {
        {"checkpoint", CLI_STR, &checkpoint, "checkpoint of a --task text run (required)", 0, -1},
        {"length", CLI_LONG, &length, "characters to sample [500]", 0, 1e12},
        {"temperature", CLI_DOUBLE, &temperature, "softmax temperature: < 1 sharper, > 1 flatter [1]", 1e-6, 1e6},
        {"prime", CLI_STR, &prime, "text to start from (printed first; its bytes must be in the vocabulary)", 0, -1},
        {"seed", CLI_LONG, &seed, "random seed [1]", 0, 9.2e18},
    };
    int r = cli_parse("sample", "--checkpoint FILE [flags]", argc, argv, flags,
                      (int)(sizeof flags / sizeof flags[0]));
    if (r != 0) return r < 0 ? 1 : 0;
    if (!checkpoint) return cli_fail("sample", "--checkpoint FILE is required");

    struct tg_checkpoint *ck;
    if (tg_checkpoint_open(checkpoint, &ck) != TG_OK) return cli_fail("sample", "%s", tg_last_error());
    const struct tg_train_config *cfg = tg_checkpoint_config(ck);
    const struct tg_checkpoint_state *s = tg_checkpoint_state(ck);
    if (strcmp(cfg->task, "text") != 0 || s->vocab_n < 1) {
        int rc = cli_fail("sample", "%s is a checkpoint of task '%s'; sampling needs a --task text "
                          "checkpoint", checkpoint, cfg->task);
        tg_checkpoint_close(ck);
        return rc;
    }
    struct tg_model *m;
    if (tg_checkpoint_new_model(ck, NULL, &m) != TG_OK) {
        int rc = cli_fail("sample", "%s", tg_last_error());
        tg_checkpoint_close(ck);
        return rc;
    }
    struct tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)seed);
    /* Check the prime before printing anything (the sampler says which byte is unknown). */
    int known[256] = {0}, ok = 1;
    for (int i = 0; i < s->vocab_n; i++) known[s->vocab[i]] = 1;
    for (const char *p = prime; p && *p; p++) ok &= known[(unsigned char)*p];
    /* a --lines model samples line by line, each from its start mark (tg_sample_lines) */
    enum tg_status (*draw)(struct tg_model *, const uint8_t *, int, const char *, long, double,
                           struct tg_rng *, FILE *) = cfg->lines ? tg_sample_lines : tg_sample_text;
    enum tg_status st = ok ? TG_OK : draw(m, s->vocab, s->vocab_n, prime, 0, temperature, &rng, stdout);
    if (st == TG_OK && prime) fputs(prime, stdout);
    if (st == TG_OK) st = draw(m, s->vocab, s->vocab_n, prime, length, temperature, &rng, stdout);
    fflush(stdout);
    tg_model_free(m);
    tg_checkpoint_close(ck);
    if (st != TG_OK) return cli_fail("sample", "%s", tg_last_error());
    return 0;
}
