/* test_derivations.c — tapegrad adjoint and check --derivation (models/adjoint.c,
 * models/deriv_check.c):
 *   - golden files: the printed derivation of each of the nine built-in cells, and LaTeX;
 *   - printed = executed: every printed derivation (built-in cells, the literature cells of
 *     test_cell_files.c) passes against autodiff at 1e-12, for 1 to 3 layers;
 *   - attribution: every line of every printed derivation, sign flipped, fails naming that line;
 *     planted mistakes of the kinds students make (swapped concatenation, wrong tanh′, wrong gate
 *     factor, missing term) fail naming their line, and what they spoil is listed;
 *   - derivation-language errors: FILE:LINE:COL and exit 2;
 *   - the seeds' derivations in examples/derivations/ (right ones pass, the wrong one is named);
 *   - the command line, exit codes 0, 1, 2. */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/wait.h>

#include "tapegrad_deriv.h"
#include "test_util.h"

static const char *const BUILTIN[] = {"rnn_tanh", "rnn_relu", "lstm", "gru", "gru_cho",
                                      "lstm_peephole", "lstm_coupled", "lstm_dlbook", "mgu"};
enum { N_BUILTIN = sizeof BUILTIN / sizeof BUILTIN[0] };

/* Cell files of the tests besides the built-in ones: the fuzz corpus (the literature cells of
 * test_cell_files.c: IndRNN, JANET, LN-LSTM, one using every function), the seeds' cells, and
 * test_cell_files.c's cell with three hoisted blocks. */
static const char *const CELL_FILES[] = {
    "fuzz/corpus/cell/indrnn.cell", "fuzz/corpus/cell/janet.cell", "fuzz/corpus/cell/ln_lstm.cell",
    "fuzz/corpus/cell/every.cell", "examples/derivations/dlbook_rnn.cell", "examples/derivations/minchar_rnn.cell",
    "examples/derivations/coursera_rnn.cell", "examples/derivations/coursera_lstm.cell",
    "examples/derivations/coursera_gru.cell",
};
enum { N_FILES = sizeof CELL_FILES / sizeof CELL_FILES[0] };
static const char MUT1[] = "state h\nparam W_xz[H, I], b_z[H], W_xr[H, I], W_hr[H, H], b_r[H], W_hh[H, H], b_h[H]\n"
                           "z = sigmoid(W_xz @ x + b_z)\nr = sigmoid(W_xr @ x + W_hr @ h + b_r)\n"
                           "h' = tanh(W_hh @ (r * h) + tanh(x) + b_h) * z + h * (1 - z)\n";

static struct tg_cell *builtin(const char *name)
{
    struct tg_cell *c = tg_cell_parse_builtin(name);
    if (!c) fail_msg("%s", tg_last_error());
    return c;
}

static char *printed(const struct tg_cell *c, enum tg_adj_format f)
{
    char *s = tg_adjoint_text(c, f);
    if (!s) fail_msg("%s", tg_last_error());
    return s;
}

/* Run a derivation (text) against autodiff; the report into *report (malloc'ed). */
static int run(const struct tg_cell *c, const char *text, int T, int B, int I, int H, int L, double tol,
               char **report)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *out = open_memstream(&buf, &n);
    assert_non_null(out);
    struct tg_deriv_opts o = {.T = T, .B = B, .I = I, .H = H, .L = L, .V = 5, .seed = 3, .tol = tol, .quiet = 1};
    int rc = tg_deriv_check(c, "t.adj", text, &o, out);
    fclose(out);
    if (report) *report = strdup(buf ? buf : "");
    free(buf);
    return rc;
}

/* ------------------------------------------------------------ golden files */

static void check_golden(const char *path, const char *got)
{
    if (getenv("TG_UPDATE_GOLDEN")) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fputs(got, f);
        fclose(f);
    }
    char *want = tg_test_read_file(path, NULL);
    if (!want) fail_msg("missing %s (run with TG_UPDATE_GOLDEN=1 once)", path);
    if (strcmp(want, got) != 0) fail_msg("%s differs; printed:\n%s", path, got);
    free(want);
}

static void test_golden(void **state)
{
    (void)state;
    for (int k = 0; k < N_BUILTIN; k++) {
        struct tg_cell *c = builtin(BUILTIN[k]);
        char *s = printed(c, TG_ADJ_TEXT), path[512];
        snprintf(path, sizeof path, "%s/tests/golden/adjoint/%s.adj", TG_SOURCE_DIR, BUILTIN[k]);
        check_golden(path, s);
        /* the shape: parameter lines as outer products, textbook derivatives, no temporaries */
        if (!strcmp(BUILTIN[k], "lstm")) {
            assert_non_null(strstr(s, "dweight_hh += da @ h^T\n"));
            assert_non_null(strstr(s, "di * i * (1 - i)"));
            assert_non_null(strstr(s, "dg * (1 - g * g)"));
            assert_non_null(strstr(s, "# c' = f * c + i * g\n"));
            int lines = 0;
            for (const char *p = s; *p; p++) lines += *p == '\n' && p[1] != '#' && p[1];
            assert_in_range(lines, 10, 15); /* "about a dozen lines" */
            char *tex = printed(c, TG_ADJ_LATEX);
            snprintf(path, sizeof path, "%s/tests/golden/adjoint/lstm.tex", TG_SOURCE_DIR);
            check_golden(path, tex);
            assert_non_null(strstr(tex, "\\begin{align*}"));
            assert_non_null(strstr(tex, "\\odot"));
            assert_non_null(strstr(tex, "^{\\top}"));
            free(tex);
        }
        free(s);
        tg_cell_free(c);
    }
    /* a C cell has no equations to print */
    assert_null(tg_adjoint_text(tg_cell_find("lstm"), TG_ADJ_TEXT));
}

/* ------------------------------------------------------------ printed = executed */

static void test_closed_loop(void **state)
{
    (void)state;
    static const int sizes[][5] = {{5, 3, 4, 6, 2}, {1, 1, 3, 2, 1}, {4, 2, 5, 3, 3}};
    for (int k = 0; k < N_BUILTIN + N_FILES + 1; k++) {
        struct tg_cell *c;
        char path[512];
        if (k < N_BUILTIN) {
            c = builtin(BUILTIN[k]);
        } else if (k < N_BUILTIN + N_FILES) {
            snprintf(path, sizeof path, "%s/%s", TG_SOURCE_DIR, CELL_FILES[k - N_BUILTIN]);
            c = tg_cell_load(path);
        } else {
            c = tg_cell_parse(MUT1, strlen(MUT1), "mut1.cell");
        }
        if (!c) fail_msg("%s", tg_last_error());
        char *s = printed(c, TG_ADJ_TEXT);
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            char *rep;
            const int *q = sizes[z];
            int I = k == N_BUILTIN + N_FILES ? q[3] : q[2]; /* mut1 adds tanh(x) to H units */
            int rc = run(c, s, q[0], q[1], I, q[3], q[4], 1e-12, &rep);
            if (rc != 0) fail_msg("%s (T=%d B=%d I=%d H=%d L=%d): rc %d %s\n%s\n%s", c->name, q[0], q[1], q[2], q[3], q[4],
                                  rc, tg_last_error(), rep, s);
            free(rep);
        }
        free(s);
        tg_cell_free(c);
    }
}

/* ------------------------------------------------------------ attribution */

/* text with line `line` (1-based) replaced by `repl` */
static char *with_line(const char *text, int line, const char *repl)
{
    const char *p = text;
    for (int l = 1; l < line && p; l++) p = strchr(p, '\n'), p = p ? p + 1 : NULL;
    assert_non_null(p);
    const char *e = strchr(p, '\n');
    size_t n = strlen(text) + strlen(repl) + 2;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(p - text), text, repl, e ? e : "");
    return out;
}

static char *line_of(const char *text, int line)
{
    const char *p = text;
    for (int l = 1; l < line && p; l++) p = strchr(p, '\n'), p = p ? p + 1 : NULL;
    if (!p || !*p) return NULL;
    size_t n = strcspn(p, "\n");
    char *s = malloc(n + 1);
    memcpy(s, p, n), s[n] = 0;
    return s;
}

/* Does the report blame `line` (in its first block: the wrong quantity's lines, or a helper it reads)? */
static int names_line(const char *rep, int line)
{
    char a[32], b[32];
    snprintf(a, sizeof a, "t.adj:%d:", line);
    snprintf(b, sizeof b, "t.adj:%d)", line);
    const char *end = strstr(rep, "wrong only because");
    const char *also = strstr(rep, "also wrong");
    const char *x = strstr(rep, a), *y = strstr(rep, b);
    if (!end || (also && also < end)) end = also;
    return (x && (!end || x < end)) || (y && (!end || y < end));
}

static void expect_blamed(const struct tg_cell *c, const char *bad, int line, const char *what)
{
    char *rep;
    int rc = run(c, bad, 4, 3, 5, 5, 2, 0, &rep);
    if (rc != 1 || !names_line(rep, line))
        fail_msg("%s, %s, line %d: rc %d (%s), report:\n%s\nderivation:\n%s", c->name, what, line, rc,
                 rc == 2 ? tg_last_error() : "", rep, bad);
    free(rep);
}

static void test_every_line_sign_flipped(void **state)
{
    (void)state;
    for (int k = 0; k < N_BUILTIN; k++) {
        struct tg_cell *c = builtin(BUILTIN[k]);
        char *s = printed(c, TG_ADJ_TEXT), *ln;
        int n = 0;
        for (int line = 1; (ln = line_of(s, line)); line++) {
            char *eq = strstr(ln, "= ");
            if (ln[0] != '#' && eq) {
                char repl[1024];
                snprintf(repl, sizeof repl, "%.*s= -(%s)", (int)(eq - ln), ln, eq + 2);
                char *bad = with_line(s, line, repl);
                expect_blamed(c, bad, line, "sign error");
                free(bad);
                n++;
            }
            free(ln);
        }
        assert_true(n >= 5);
        free(s);
        tg_cell_free(c);
    }
}

/* Mistakes students make, each as (cell, text to find in the printed derivation, replacement). */
static const char *const PLANTED[][4] = {
    {"rnn_tanh", "swapped", "dx = weight_ih^T @ dpre_h'", "dx = weight_hh^T @ dpre_h'"},
    {"rnn_tanh", "tanh'", "(1 - h' * h')", "(1 - h')"},
    {"rnn_tanh", "parameter", "dweight_hh += dpre_h' @ h^T", "dweight_hh += dpre_h' @ x^T"},
    {"rnn_relu", "relu'", "step(weight_ih @ x", "sign(weight_ih @ x"},
    {"rnn_relu", "missing term", "dbias_hh += dpre_h'", "dbias_hh += 0 * dpre_h'"},
    {"lstm", "swapped concatenation", "da = [di * i * (1 - i), df * f * (1 - f)", "da = [df * f * (1 - f), di * i * (1 - i)"},
    {"lstm", "tanh'", "dg * (1 - g * g)", "dg * (1 - g)"},
    {"lstm", "gate factor", "dc = dc' * f", "dc = dc' * i"},
    {"lstm", "missing term", "dc' += dh' * o * (1 - tanh(c') * tanh(c'))", "dc' += 0 * dh'"},
    {"lstm", "sigma'", "do * o * (1 - o)", "do * (1 - o)"},
    {"gru", "swapped concatenation", "dgh = [dpre_r, dpre_z, dpre_n * r]", "dgh = [dpre_z, dpre_r, dpre_n * r]"},
    {"gru", "tanh'", "dpre_n = dn * (1 - n * n)", "dpre_n = dn * (1 - n)"},
    {"gru", "gate factor", "dn = dh' * (1 - z)", "dn = dh' * z"},
    {"gru", "missing term", "dh = dh' * z + weight_hh^T @ dgh", "dh = weight_hh^T @ dgh"},
    {"gru", "reset gate after the matmul", "dgh = [dpre_r, dpre_z, dpre_n * r]", "dgh = [dpre_r, dpre_z, dpre_n]"},
    {"gru_cho", "swapped concatenation", "dhx = weight[0:2H]^T @ dpre_ur", "dhx = weight[0:2H]^T @ [dpre_ur[H:2H], dpre_ur[0:H]]"},
    {"gru_cho", "tanh'", "dpre_c = dc * (1 - c * c)", "dpre_c = dc * (1 - c)"},
    {"gru_cho", "gate factor", "dc = dh' * u", "dc = dh' * (1 - u)"},
    {"gru_cho", "missing term", "dh = dh' * (1 - u) + drhx[0:H] * r + dhx[0:H]", "dh = dh' * (1 - u) + dhx[0:H]"},
    {"lstm_peephole", "missing term", "dc' += dh' * o * (1 - tanh(c') * tanh(c')) + dchx[0:H]", "dc' += dh' * o * (1 - tanh(c') * tanh(c'))"},
    {"lstm_peephole", "swapped concatenation", "dfi = [di, df]", "dfi = [df, di]"},
    {"lstm_peephole", "tanh'", "dpre_g = dg * (1 - g * g)", "dpre_g = dg * (1 - g)"},
    {"lstm_peephole", "gate factor", "dc = dc' * f", "dc = dc' * i"},
    {"lstm_coupled", "sign error", "df = dc' * c - dc' * g", "df = dc' * c + dc' * g"},
    {"lstm_coupled", "gate factor", "dg = dc' * (1 - f)", "dg = dc' * f"},
    {"lstm_coupled", "tanh'", "dg * (1 - g * g)", "dg * (1 - g)"},
    {"lstm_dlbook", "swapped concatenation", "da = [df, dg, din, dq]", "da = [dg, df, din, dq]"},
    {"lstm_dlbook", "tanh'", "ds' += dh' * q * (1 - tanh(s') * tanh(s'))", "ds' += dh' * q * (1 - tanh(s'))"},
    {"lstm_dlbook", "gate factor", "din = ds' * g", "din = ds' * in"},
    {"mgu", "swapped concatenation", "dweight_h += dpre_hc @ [f * h, x]^T", "dweight_h += dpre_hc @ [h, x]^T"},
    {"mgu", "tanh'", "dpre_hc = dhc * (1 - hc * hc)", "dpre_hc = dhc * (1 - hc)"},
    {"mgu", "missing term", "df = dh' * hc + dfhx[0:H] * h - dh' * h", "df = dh' * hc - dh' * h"},
    {"mgu", "gate factor", "dhc = dh' * f", "dhc = dh' * (1 - f)"},
};

static void test_planted_mistakes(void **state)
{
    (void)state;
    int cells_hit[N_BUILTIN] = {0};
    for (size_t k = 0; k < sizeof PLANTED / sizeof PLANTED[0]; k++) {
        struct tg_cell *c = builtin(PLANTED[k][0]);
        char *s = printed(c, TG_ADJ_TEXT);
        const char *at = strstr(s, PLANTED[k][2]);
        if (!at) fail_msg("%s: '%s' not in the printed derivation:\n%s", PLANTED[k][0], PLANTED[k][2], s);
        int line = 1;
        for (const char *p = s; p < at; p++) line += *p == '\n';
        size_t n = strlen(s) + strlen(PLANTED[k][3]) + 1;
        char *bad = malloc(n);
        snprintf(bad, n, "%.*s%s%s", (int)(at - s), s, PLANTED[k][3], at + strlen(PLANTED[k][2]));
        expect_blamed(c, bad, line, PLANTED[k][1]);
        for (int j = 0; j < N_BUILTIN; j++) cells_hit[j] |= !strcmp(BUILTIN[j], PLANTED[k][0]);
        free(bad);
        free(s);
        tg_cell_free(c);
    }
    for (int j = 0; j < N_BUILTIN; j++) assert_true(cells_hit[j]);
}

/* An early mistake is blamed alone; what it spoils is listed as wrong only because of it. */
static void test_downstream_listed(void **state)
{
    (void)state;
    struct tg_cell *c = builtin("lstm");
    char *s = printed(c, TG_ADJ_TEXT), *rep;
    const char *at = strstr(s, "do = dh' * tanh(c')");
    int line = 1;
    for (const char *p = s; p < at; p++) line += *p == '\n';
    char *bad = with_line(s, line, "do = dh' * c'");
    assert_int_equal(run(c, bad, 5, 3, 4, 6, 2, 0, &rep), 1);
    assert_non_null(strstr(rep, "FAIL: do is wrong given correct inputs"));
    assert_true(names_line(rep, line));
    const char *w = strstr(rep, "wrong only because of it: ");
    int ok = w && strstr(w, "da (line") && strstr(w, "dweight_hh (line") && strstr(w, "dh (line");
    if (!ok) fail_msg("%s", rep);
    assert_null(strstr(rep, "also wrong"));
    assert_non_null(strstr(rep, "worst element at t = "));
    assert_non_null(strstr(rep, "yours "));
    free(rep), free(bad), free(s);
    tg_cell_free(c);
}

/* ------------------------------------------------------------ language errors */

static void test_language_errors(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"dpre_h' = dh' * (1 - h' * h')\ndweight_ih += dpre_h' @ x^T\ndweight_hh += dpre_h' @ h^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\ndh = weight_hh^T @ dpre_hh\n",
         "t.adj:6:20: unknown name 'dpre_hh': the cell has no pre_hh, and no line assigns dpre_hh"},
        {"dpre_h' = dh' * (1 - h' * h')\ndweight_ih += dpre_h' @ x^T\ndweight_hh += dpre_h' @ h^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\n",
         "t.adj:5:1: no line assigns dh, the gradient reaching state h at step t-1 (required)"},
        {"dpre_h' = dh' * (1 - h' * h')\ndweight_ih += dpre_h' @ x^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\ndh = weight_hh^T @ dpre_h'\n",
         "t.adj:5:1: no line adds to dweight_hh, the gradient of parameter weight_hh (required)"},
        {"dpre_h' = dh' * (1 - h' * h')\ndweight_ih += dpre_h' @ x^T\ndweight_hh += dpre_h' @ x^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\ndh = weight_hh^T @ dpre_h'\n",
         "t.adj:3:15: dweight_hh += dpre_h' @ x^T: weight_hh is a matrix 6x6 but the right side is 6x4 (H = 6, I = 4)"},
        {"dpre_h' = dh' * (1 - h' * h')\ndweight_ih += dpre_h' @ x^T\ndweight_hh += dpre_h' @ h^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\ndh = weight_ih^T @ dpre_h'\n",
         "t.adj:6:6: dh: the gradient of h has 3x6 elements (B = 3 sequences, 6 units) but weight_ih^T @ dpre_h' is 3x4 (H = 6, I = 4)"},
        {"dweight_ih += dpre_h' @ x^T\ndpre_h' = dh' * (1 - h' * h')\ndweight_hh += dpre_h' @ h^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\ndh = weight_hh^T @ dpre_h'\n",
         "t.adj:1:15: dpre_h' is read before any line assigns it (at this step)"},
        {"dpre_h' = dh' * (1 - h' * h') + dh\ndweight_ih += dpre_h' @ x^T\ndweight_hh += dpre_h' @ h^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\ndh = weight_hh^T @ dpre_h'\n",
         "t.adj:1:33: dh is read before any line assigns it (at this step)"},
        {"dpre_h' = dh' * (1 - h' * h')\ndweight_ih = dpre_h' @ x^T\ndweight_hh += dpre_h' @ h^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\ndh = weight_hh^T @ dpre_h'\n",
         "t.adj:2:1: dweight_ih: a parameter's gradient is summed over steps and sequences; write dweight_ih += …"},
        {"h = dh'\n", "t.adj:1:1: h is a forward quantity of the cell; a derivation assigns gradients (dh) and helpers"},
        {"dpre_h' = dh' * (1 - h' * h')\ndweight_ih += dpre_h' @ x^T\ndweight_hh += dpre_h' @ h^T\n"
         "dbias_ih += dpre_h'\ndbias_hh += dpre_h'\ndh = weight_hh @ dpre_h' @ x\n",
         "t.adj:6:6: weight_hh @ dpre_h' @ x: only a matrix parameter (or its ^T) stands left of '@', and weight_hh @ dpre_h' is a vector"},
        {"dh = (dh' + 1\n", NULL},
    };
    struct tg_cell *c = builtin("rnn_tanh");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int rc = run(c, cases[k][0], 3, 3, 4, 6, 1, 0, NULL);
        if (rc != 2) fail_msg("case %zu: rc %d, expected 2", k, rc);
        if (cases[k][1] && strcmp(tg_last_error(), cases[k][1]) != 0)
            fail_msg("case %zu:\n got  %s\n want %s", k, tg_last_error(), cases[k][1]);
        if (!cases[k][1] && strncmp(tg_last_error(), "t.adj:1:", 8) != 0) fail_msg("case %zu: %s", k, tg_last_error());
    }
    tg_cell_free(c);
}

/* ------------------------------------------------------------ the seeds */

static int run_files(const char *cell, const char *adj, int I, int H, char **rep)
{
    char cp[512], ap[512];
    snprintf(cp, sizeof cp, "%s/examples/derivations/%s", TG_SOURCE_DIR, cell);
    snprintf(ap, sizeof ap, "%s/examples/derivations/%s", TG_SOURCE_DIR, adj);
    struct tg_cell *c = tg_cell_load(cp);
    if (!c) fail_msg("%s", tg_last_error());
    char *text = tg_test_read_file(ap, NULL);
    if (!text) fail_msg("cannot read %s", ap);
    int rc = run(c, text, 5, 3, I, H, 2, 0, rep);
    free(text);
    tg_cell_free(c);
    return rc;
}

static int line_with(const char *path, const char *needle)
{
    char p[512];
    snprintf(p, sizeof p, "%s/examples/derivations/%s", TG_SOURCE_DIR, path);
    char *t = tg_test_read_file(p, NULL);
    assert_non_null(t);
    const char *at = strstr(t, needle);
    if (!at) fail_msg("'%s' not in %s", needle, path);
    int line = 1;
    for (const char *q = t; q < at; q++) line += *q == '\n';
    free(t);
    return line;
}

static void test_seeds(void **state)
{
    (void)state;
    static const char *const right[][2] = {
        {"dlbook_rnn.cell", "dlbook_rnn.adj"},          /* seeds 000/002: Deep Learning eqs. 10.8-10.11 */
        {"minchar_rnn.cell", "minchar_rnn.adj"},        /* seed 003: min-char-rnn's backward loop */
        {"coursera_lstm.cell", "coursera_lstm.adj"},    /* seed 004: eqs. 10-28 */
        {"coursera_gru.cell", "coursera_gru.adj"},      /* seed 004's GRU, derived in its notation */
    };
    for (size_t k = 0; k < sizeof right / sizeof right[0]; k++) {
        char *rep;
        int rc = run_files(right[k][0], right[k][1], 4, 6, &rep);
        if (rc != 0) fail_msg("%s: rc %d %s\n%s", right[k][1], rc, rc == 2 ? tg_last_error() : "", rep);
        free(rep);
    }
    /* seed 004's RNN backward, eqs. (4) and (5) as written: da_next multiplies W^T (1 - tanh^2)
     * instead of standing inside it. With I = H the sizes line up and (4) is named, (5) too. */
    char *rep, want[96];
    int l4 = line_with("coursera_rnn.adj", "dx = da_next * (W_ax^T");
    assert_int_equal(run_files("coursera_rnn.cell", "coursera_rnn.adj", 6, 6, &rep), 1);
    if (!names_line(rep, l4) || !strstr(rep, "FAIL: dx is wrong") || !strstr(rep, "also wrong given correct inputs: da (line")) fail_msg("%s", rep);
    free(rep);
    /* seed 004's eq. (25) as written: db_c from dgamma_c, which does not exist */
    assert_int_equal(run_files("coursera_lstm.cell", "coursera_lstm_as_written.adj", 4, 6, &rep), 2);
    snprintf(want, sizeof want, "t.adj:%d:9: unknown name 'dg_c'", line_with("coursera_lstm_as_written.adj", "db_c += dg_c"));
    if (strncmp(tg_last_error(), want, strlen(want)) != 0) fail_msg("%s", tg_last_error());
    free(rep);
    /* with I != H, (4) does not even have the sizes of dx */
    assert_int_equal(run_files("coursera_rnn.cell", "coursera_rnn.adj", 4, 6, &rep), 2);
    snprintf(want, sizeof want, "t.adj:%d:", l4);
    if (strncmp(tg_last_error(), want, strlen(want)) != 0) fail_msg("%s", tg_last_error());
    free(rep);
}

/* ------------------------------------------------------------ command line */

/* The exit status of a shell command built with snprintf into cmdbuf. */
static char cmdbuf[2048];
static int status_of(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
#define sh(...) (snprintf(cmdbuf, sizeof cmdbuf, __VA_ARGS__), status_of(cmdbuf))

static void test_cli(void **state)
{
    (void)state;
    const char *tg = TG_BUILD_DIR "/tools/tapegrad";
    char dir[] = "/tmp/tg_deriv_XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(sh("%s adjoint --cell gru > %s/gru.adj", tg, dir), 0);
    assert_int_equal(sh("%s check --cell gru --derivation %s/gru.adj > %s/out.txt", tg, dir, dir), 0);
    assert_int_equal(sh("%s check --cell %s/models/cells/gru.cell --derivation %s/gru.adj --layers 3 --steps 4 > %s/out.txt",
                        tg, TG_SOURCE_DIR, dir, dir), 0);
    assert_int_equal(sh("sed 's/dn = dh. \\* (1 - z)/dn = dh\\x27 * z/' %s/gru.adj > %s/bad.adj && %s check --cell gru "
                        "--derivation %s/bad.adj > %s/out.txt", dir, dir, tg, dir, dir), 1);
    char path[600];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    char *out = tg_test_read_file(path, NULL);
    assert_non_null(out);
    if (!strstr(out, "FAIL: dn is wrong given correct inputs") || !strstr(out, "bad.adj:3: dn = dh' * z")) fail_msg("%s", out);
    free(out);
    assert_int_equal(sh("printf 'dh = dq\\n' > %s/err.adj && %s check --cell gru --derivation %s/err.adj 2> %s/err.txt",
                        dir, tg, dir, dir), 2);
    snprintf(path, sizeof path, "%s/err.txt", dir);
    out = tg_test_read_file(path, NULL);
    if (!out || !strstr(out, "err.adj:1:1: no line adds to dweight_ih")) fail_msg("%s", out ? out : "(none)");
    free(out);
    assert_int_equal(sh("%s adjoint --cell lstm --format latex | grep -q 'odot'", tg), 0);
    assert_int_equal(sh("%s adjoint --cell nosuch 2>/dev/null", tg), 1);
    assert_int_equal(sh("%s adjoint --cell lstm --format pdf 2>/dev/null", tg), 1);
    sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_closed_loop),
        cmocka_unit_test(test_every_line_sign_flipped),
        cmocka_unit_test(test_planted_mistakes),
        cmocka_unit_test(test_downstream_listed),
        cmocka_unit_test(test_language_errors),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
