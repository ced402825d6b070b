/* st_mutator.h — a structure-aware libFuzzer mutator for safetensors files.
 *
 * Why: the header is JSON parsed by jansson, which is not instrumented, so byte-level mutations
 * mostly produce invalid JSON and the fuzzer gets no coverage signal to climb out with (its
 * corpus stalled at ~200 edges of our code). This mutator parses the input as a safetensors
 * file and changes one thing the way a damaged or hostile file would — a metadata value, a
 * tensor's dtype, shape or offsets, a tensor dropped or renamed, a data element set to NaN, inf
 * or a huge value — and writes the file back out valid JSON, so the reader's later checks and
 * the checkpoint loader behind them are reached. Inputs that do not parse, and one mutation in
 * four, go to libFuzzer's own byte mutator.
 *
 * Only in the libFuzzer build (TG_LIBFUZZER): the replay driver of the test suite has no
 * LLVMFuzzerMutate. */
#ifndef TG_ST_MUTATOR_H
#define TG_ST_MUTATOR_H

#ifdef TG_LIBFUZZER
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

/* Values a hostile file would put in a metadata entry or a header number. */
static const char *const stm_strings[] = {
    "0", "1", "-1", "2", "3", "7", "64", "255", "256", "257", "65536", "1000000", "2147483647",
    "2147483648", "9223372036854775807", "-9223372036854775808", "1e308", "nan", "inf", "-0",
    "", " 1", "1x", "0x10", "lstm", "gru", "rnn_tanh", "mgu", "text", "adding", "reber", "copy",
    "f32", "f64", "sgd", "adam", "rmsprop", "adagrad", "mean", "sum", "tapegrad-checkpoint",
    "616263", "6162", "zz"};
static const json_int_t stm_ints[] = {0, 1, -1, 2, 3, 4, 8, 255, 256, 65535, 1 << 20, INT32_MAX,
                                      (json_int_t)INT32_MAX + 1, INT64_MAX, INT64_MIN};
static const char *const stm_dtypes[] = {"F32", "F64", "I32", "I64", "BF16", "U8", ""};

/* The i-th key of object o (unordered, as jansson iterates), or NULL. */
static const char *stm_key(json_t *o, size_t i)
{
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach(o, k, v) if (n++ == i) return k;
    return NULL;
}

/* Change one tensor entry (a JSON object) or the bytes it points to. */
static void stm_tensor(json_t *root, const char *name, unsigned char *d, size_t dlen, unsigned r)
{
    json_t *e = json_object_get(root, name);
    json_t *sh = json_object_get(e, "shape"), *off = json_object_get(e, "data_offsets");
    switch (r % 8) {
    case 0: json_object_set_new(e, "dtype", json_string(stm_dtypes[(r / 8) % 7])); break;
    case 1: /* a shape entry: another size, or a dimension more or less */
        if (json_array_size(sh) > 0)
            json_array_set_new(sh, (r / 8) % json_array_size(sh),
                               json_integer(stm_ints[(r / 64) % 15]));
        else
            json_array_append_new(sh, json_integer(stm_ints[(r / 64) % 15]));
        break;
    case 2:
        if (json_array_size(sh) > 0 && (r / 8) % 2) json_array_remove(sh, json_array_size(sh) - 1);
        else json_array_append_new(sh, json_integer(1));
        break;
    case 3:
        if (json_array_size(off) == 2)
            json_array_set_new(off, (r / 8) % 2, json_integer(stm_ints[(r / 16) % 15]));
        break;
    case 4: json_object_del(root, name); break;
    case 5: { /* renamed: a parameter the loader looks for goes missing, or appears twice */
        json_incref(e);
        json_object_del(root, name);
        json_object_set_new(root, (r / 8) % 2 ? "rnn.weight_hh_l0" : "x", e);
        break;
    }
    default: { /* a data element of a float tensor becomes NaN, ±inf or huge */
        json_int_t b = json_integer_value(json_array_get(off, 0));
        json_int_t en = json_integer_value(json_array_get(off, 1));
        const char *dt = json_string_value(json_object_get(e, "dtype"));
        if (!dt || b < 0 || en <= b || (size_t)en > dlen) break;
        static const double vals[] = {NAN, INFINITY, -INFINITY, 1e38, 1e300, -0.0};
        double v = vals[(r / 8) % 6];
        if (!strcmp(dt, "F32") && en - b >= 4) {
            float f = (float)v;
            memcpy(d + b + 4 * ((r / 64) % ((en - b) / 4)), &f, 4);
        } else if (!strcmp(dt, "F64") && en - b >= 8) {
            memcpy(d + b + 8 * ((r / 64) % ((en - b) / 8)), &v, 8);
        }
    }
    }
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed)
{
    uint64_t hlen = 0;
    if (size >= 8) memcpy(&hlen, data, 8);
    json_t *root = size >= 8 && hlen <= size - 8 && seed % 4
                       ? json_loadb((const char *)data + 8, (size_t)hlen, 0, NULL) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        return LLVMFuzzerMutate(data, size, max_size);
    }
    size_t dlen = size - 8 - (size_t)hlen;
    unsigned char *d = malloc(dlen ? dlen : 1);
    if (!d) {
        json_decref(root);
        return LLVMFuzzerMutate(data, size, max_size);
    }
    memcpy(d, data + 8 + hlen, dlen);
    unsigned r = seed / 4;
    json_t *meta = json_object_get(root, "__metadata__");
    size_t nt = json_object_size(root) - (meta != NULL);
    if (json_is_object(meta) && json_object_size(meta) && (r % 3 == 0 || nt == 0)) {
        const char *k = stm_key(meta, (r / 3) % json_object_size(meta));
        json_object_set_new(meta, k, json_string(stm_strings[(r / 97) % (sizeof stm_strings / sizeof *stm_strings)]));
    } else if (nt) {
        const char *k = stm_key(root, (r / 3) % json_object_size(root));
        if (k && strcmp(k, "__metadata__") != 0 && json_is_object(json_object_get(root, k)))
            stm_tensor(root, k, d, dlen, r / 97);
    }
    char *js = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    size_t n = js ? strlen(js) : 0, out = 8 + n + dlen;
    if (!js || out > max_size) {
        free(js);
        free(d);
        return LLVMFuzzerMutate(data, size, max_size);
    }
    uint64_t n64 = n;
    memcpy(data, &n64, 8);
    memcpy(data + 8, js, n);
    memcpy(data + 8 + n, d, dlen);
    free(js);
    free(d);
    return out;
}
#endif

#endif
