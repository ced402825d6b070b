/* sample.c — text from a trained character model: prime it, then draw one symbol at a time
 * from softmax(logits / temperature), feeding each back in. With --lines every line starts from
 * the start mark '\n' and a zero state, as the sequences it was trained on did. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad_train.h"

static enum tg_status sample(struct tg_model *m, const uint8_t *vocab, int vocab_n,
                             const char *prime, long n, double temperature,
                             struct tg_rng *rng, FILE *out, int lines)
{
    if (!m || !vocab || !rng || !out) return tg_error(TG_ERR_VALUE, "tg_sample_text: NULL argument");
    if (m->cfg.vocab < 1 || m->cfg.vocab != vocab_n || m->cfg.outputs != vocab_n)
        return tg_error(TG_ERR_VALUE, "tg_sample_text: the model is not a character model of %d "
                        "symbols", vocab_n);
    if (!(temperature > 0) || !isfinite(temperature))
        return tg_error(TG_ERR_VALUE, "tg_sample_text: temperature must be > 0, got %g", temperature);
    if (n < 0) return tg_error(TG_ERR_VALUE, "tg_sample_text: length %ld is negative", n);
    int index_of[256];
    for (int i = 0; i < 256; i++) index_of[i] = -1;
    for (int i = 0; i < vocab_n; i++) index_of[vocab[i]] = i;
    int nl = index_of['\n'];
    if (lines && nl < 0)
        return tg_error(TG_ERR_VALUE, "tg_sample_lines: the vocabulary has no '\\n' (not a --lines model)");
    size_t P = prime ? strlen(prime) : 0;
    for (size_t i = 0; i < P; i++) {
        unsigned char ch = (unsigned char)prime[i];
        if (index_of[ch] < 0) {
            if (ch >= 32 && ch < 127)
                return tg_error(TG_ERR_VALUE, "prime character '%c' (position %zu) is not in the "
                                "model's vocabulary", ch, i + 1);
            return tg_error(TG_ERR_VALUE, "prime byte 0x%02x (position %zu) is not in the model's "
                            "vocabulary", ch, i + 1);
        }
    }
    struct tg_tape *t = tg_tape_new(0);
    double *p = malloc((size_t)vocab_n * sizeof *p);
    int32_t *tok = malloc((P + 1) * sizeof *tok), *lab = malloc((P + 1) * sizeof *lab);
    enum tg_status st = TG_OK;
    if (!t || !p || !tok || !lab) st = tg_error(TG_ERR_NOMEM, "tg_sample_text: out of memory");
    if (st == TG_OK) {
        tg_tape_set_no_grad(t, 1);
        tg_model_reset_state(m);
        /* The prime (or one random symbol) as one sequence; its last output starts the draw.
         * Lines: a line starts with the '\n' start mark from a zero state, as in training. */
        size_t len = P ? P : 1;
        for (size_t i = 0; i < len; i++) {
            tok[i] = P ? index_of[(unsigned char)prime[i]] : (int32_t)tg_rng_below(rng, (uint32_t)vocab_n);
            lab[i] = -1;
        }
        if (lines) {
            memmove(tok + 1, tok, P * sizeof *tok);
            tok[0] = nl;
            lab[P] = -1;
            len = P + 1;
        }
        struct tg_seq_batch sb = {.T = (int)len, .B = 1, .tokens = tok, .labels = lab};
        for (long k = 0; k <= n && st == TG_OK; k++) {
            struct tg_seq_result res;
            tg_tape_reset(t);
            st = tg_model_forward(m, t, &sb, 1, &res);
            if (st == TG_OK) st = tg_model_keep_state(m, &res, 1);
            if (st != TG_OK || k == n) break;
            /* p ∝ exp(logit/τ) at the last position */
            const struct tg_tensor *l = res.logits;
            double mx = -INFINITY, s = 0;
            for (int j = 0; j < vocab_n && st == TG_OK; j++) {
                p[j] = tg_get(l, l->rows - 1, j) / temperature;
                if (p[j] > mx) mx = p[j];
                /* finite weights can still overflow (1e38 in float32): a NaN would make the
                 * draw below pick the last symbol every time, silently */
                if (!isfinite(p[j]))
                    st = tg_error(TG_ERR_VALUE, "tg_sample_text: the model's output for symbol %d "
                                  "is %g at sampled character %ld (weights too large?)", j, p[j], k + 1);
            }
            if (st != TG_OK) break;
            for (int j = 0; j < vocab_n; j++) s += (p[j] = exp(p[j] - mx));
            double u = tg_rng_uniform(rng) * s;
            int pick = vocab_n - 1;
            for (int j = 0; j < vocab_n; j++) {
                if (u < p[j]) {
                    pick = j;
                    break;
                }
                u -= p[j];
            }
            fputc(vocab[pick], out);
            tok[0] = pick;
            lab[0] = -1;
            sb.T = 1;
            /* Lines: '\n' ends a sequence; the next one starts from a zero state with its
             * start mark — which is '\n' again. */
            if (lines && pick == nl) tg_model_reset_state(m);
        }
        tg_model_reset_state(m);
    }
    tg_tape_free(t);
    free(p);
    free(tok);
    free(lab);
    return st;
}

enum tg_status tg_sample_text(struct tg_model *m, const uint8_t *vocab, int vocab_n,
                              const char *prime, long n, double temperature,
                              struct tg_rng *rng, FILE *out)
{
    return sample(m, vocab, vocab_n, prime, n, temperature, rng, out, 0);
}

enum tg_status tg_sample_lines(struct tg_model *m, const uint8_t *vocab, int vocab_n,
                               const char *prime, long n, double temperature,
                               struct tg_rng *rng, FILE *out)
{
    return sample(m, vocab, vocab_n, prime, n, temperature, rng, out, 1);
}
