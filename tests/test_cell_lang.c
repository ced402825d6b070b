/* test_cell_lang.c — the cell language's parser and checker (models/cell_lang.c, cell_check.c):
 *  1. every error kind, with its line, column and message (one line FILE:LINE:COL: …), found at
 *     load or, for sizes, when checked for concrete H = 4, I = 3;
 *  2. what a good file declares: name, states, parameters with their shapes and ndim;
 *  3. the same grammar parses derivation files (dNAME, +=, W^T @ v, u @ v^T);
 *  4. mutated files never crash (the fuzz harness fuzz/fuzz_cell.c does this at scale). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cell_lang.h"
#include "tapegrad_models.h"
#include "test_util.h"

struct err_case {
    const char *src;
    int at_check; /* 1: found by tg_cell_check (sizes), 0: at load */
    const char *msg;
};

static const struct err_case ERRORS[] = {
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     0, "t.cell:3:20: name longer than 48 characters"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) * 10000000000000000000000000000000000000000000000000000000000000000000000",
     0, "t.cell:3:20: number longer than 63 characters"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)^2",
     0, "t.cell:3:18: expected 'T' after '^' (a transpose is written W^T)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + []",
     0, "t.cell:3:21: empty concatenation"},
    {"state h\nparam W[H, H]\nh' = tanh()",
     0, "t.cell:3:11: empty argument list"},
    {"state h\nparam W[H, H], b[H]\nh' = b + 0 * sum(b)\nq = W @ h",
     0, "t.cell:3:6: b + 0 * sum(b): the next value of state h reads neither x nor a state, so it is not one value per sequence"},
    {"state h\nparam W[2H, H]\nh' = tanh(W @ h)",
     1, "t.cell:3:6: tanh(W @ h): the next value of state h has 8 units, but a state has H = 4 (I = 3)"},
    {"state h\nparam W[H, H]\ntanh = W @ h\nh' = tanh",
     0, "t.cell:3:1: cannot assign to 'tanh': it is a function"},
    {"state h, exp\nparam W[H, H]\nh' = tanh(W @ h)",
     0, "t.cell:1:10: 'exp' is already a function"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) * I",
     0, "t.cell:3:20: I is a size; it can appear only inside [ ] (a slice or a parameter's shape)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h[0:H/2])",
     0, "t.cell:3:19: H/2 is not a size (sizes are numbers, H and I with +, -, * and parentheses)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ 2)",
     0, "t.cell:3:15: W @ 2: right of '@' stands a vector, and 2 is a number"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ W)",
     0, "t.cell:3:15: W @ W: right of '@' stands a vector, and W is a matrix parameter"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)\nstate c",
     0, "t.cell:4:1: a second 'state' line (the first is line 1)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + -h[H:0]",
     1, "t.cell:3:21: h[H:0]: the slice 4:0 is empty; it must lie within h's 4 units (H = 4, I = 3)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h",
     0, "t.cell:3:16: expected ')' to close the argument list, found end of line"},
    {"state h'\nparam W[H, H]\nh' = tanh(W @ h)",
     0, "t.cell:1:7: a state name cannot end in a prime: 'h''"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + c'",
     0, "t.cell:3:20: unknown name 'c'' (only a state's next value is written with a prime)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)\ncell",
     0, "t.cell:4:5: expected a cell name, found end of line"},
    {"state h\nparam W[H, H]\nh' = h(W @ h)",
     0, "t.cell:3:6: 'h' is not a function (functions: tanh, sigmoid, relu, exp, log, sqrt, abs, softplus, sign, step, sum, mean)"},
    {"state\nparam W[H, H]\nh' = tanh(W @ h)",
     0, "t.cell:1:6: expected a state name, found end of line"},
    {"state h\nparam\nh' = h",
     0, "t.cell:2:6: expected a parameter name, found end of line"},
    {"state h\nparam W[H, 0]\nh' = tanh(W @ h)",
     1, "t.cell:2:12: parameter W: size 0 is 0, not positive (H = 4, I = 3)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + [h, x][0:H+I+1]",
     1, "t.cell:3:20: [h, x][0:H+I+1]: slice 0:8 is outside [h, x]'s 7 units (H = 4, I = 3)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + relu",
     0, "t.cell:3:20: relu is a function; write relu(v)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + sum(h)[0:1]",
     0, "t.cell:3:20: sum(h)[0:1]: sum(h) is a scalar; only vectors and matrix parameters can be sliced"},
    {"state h\nh' = tanh(W @ h)",
     0, "t.cell:2:11: unknown name 'W'"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) +",
     0, "t.cell:3:19: expected an expression at the end of the line"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h))",
     0, "t.cell:3:17: unexpected ')'"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) $ 2",
     0, "t.cell:3:18: unexpected character '$'"},
    {"state h\nparam W[H, H]\nh' = foo(W @ h)",
     0, "t.cell:3:6: unknown function 'foo' (functions: tanh, sigmoid, relu, exp, log, sqrt, abs, softplus, sign, step, sum, mean)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h, h)",
     0, "t.cell:3:6: tanh takes one argument, got 2"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ a)\na = h",
     0, "t.cell:3:15: 'a' is used before its line (line 4 assigns it)"},
    {"state h\nparam W[H, H]\na = h\na = x\nh' = tanh(W @ a)",
     0, "t.cell:4:1: 'a' is assigned twice (first on line 3)"},
    {"state h, c\nparam W[H, H]\nh' = tanh(W @ h)",
     0, "t.cell:1:10: state c has no next value (write c' = ...)"},
    {"state h\nparam W[H, H], U[H, I]\nh' = tanh(W @ h)",
     0, "t.cell:2:16: parameter U is not read by any equation"},
    {"state h\nparam W[H - 5, H]\nh' = tanh(W @ h)",
     1, "t.cell:2:9: parameter W: size H - 5 is -1, not positive (H = 4, I = 3)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ [h, x])",
     1, "t.cell:3:11: W @ [h, x]: W has 4 columns but [h, x] has 7 units (H = 4, I = 3)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) * x",
     1, "t.cell:3:6: tanh(W @ h) * x: tanh(W @ h) has 4 units but x has 3 (H = 4, I = 3)"},
    {"state h\nparam W[H, H]\nh' = tanh(h @ W)",
     0, "t.cell:3:11: h @ W: only a matrix parameter stands left of '@', and h is a vector"},
    {"state h\nparam W[H, H]\nh' = tanh(W + h)",
     0, "t.cell:3:11: W is a matrix parameter; a matrix can stand only left of '@'"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)[0:2H]",
     1, "t.cell:3:6: tanh(W @ h)[0:2H]: slice 0:8 is outside tanh(W @ h)'s 4 units (H = 4, I = 3)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)[H:H]",
     1, "t.cell:3:6: tanh(W @ h)[H:H]: the slice 4:4 is empty; it must lie within tanh(W @ h)'s 4 units (H = 4, I = 3)"},
    {"state h\nparam W[H*I, H]\nh' = tanh(W @ h)",
     0, "t.cell:2:9: size H*I multiplies H or I by H or I; one side of '*' must be a number"},
    {"state h\nparam W[H, 1.5]\nh' = tanh(W @ h)",
     0, "t.cell:2:12: size 1.5 is not a whole number"},
    {"state h\nparam W[H, K]\nh' = tanh(W @ h)",
     0, "t.cell:2:12: a size may use only numbers, H and I, not 'K'"},
    {"state h\nparam W[H, H]\nh' += tanh(W @ h)",
     0, "t.cell:3:1: '+=' belongs to derivation files (.adj); a cell file assigns each name once with '='"},
    {"state h\nparam W[H, H]\nh' = tanh(W^T @ h)",
     0, "t.cell:3:11: '^T' belongs to derivation files (.adj); in a cell file W @ v is already PyTorch's v @ W.T"},
    {"state h\nparam W[H, H]\nx = h\nh' = tanh(W @ h)",
     0, "t.cell:3:1: cannot assign to 'x': it is the input"},
    {"state h\nparam W[H, H]\nq' = h\nh' = tanh(W @ h)",
     0, "t.cell:3:1: 'q' is not a state, so 'q'' cannot be assigned (states: see the 'state' line)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)\nh' = h",
     0, "t.cell:4:1: 'h'' is assigned twice (first on line 3)"},
    {"param W[H, H]\nh' = tanh(W @ h)",
     0, "t.cell:2:1: an equation before the 'state' line (declare the states first, e.g. state h, c)"},
    {"state h\nstate c\nparam W[H, H]\nh' = tanh(W @ h)",
     0, "t.cell:2:1: a second 'state' line (the first is line 1)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)\nparam U[H, H]",
     0, "t.cell:4:1: 'param' lines must come before the equations (line 3 is an equation)"},
    {"state h\nparam W[H, H]\nh' = 2",
     0, "t.cell:3:6: 2: the next value of state h must be a vector of H units, but this is a number"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) * H",
     0, "t.cell:3:20: H is a size; it can appear only inside [ ] (a slice or a parameter's shape)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)[0:H+x]",
     0, "t.cell:3:22: a size may use only numbers, H and I, not 'x'"},
    {"state h\nparam W[H, H], W[H]\nh' = tanh(W @ h)",
     0, "t.cell:2:16: 'W' is already declared"},
    {"state h, h\nparam W[H, H]\nh' = tanh(W @ h)",
     0, "t.cell:1:10: 'h' is already declared"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + [1, h]",
     0, "t.cell:3:21: 1 is a number; only vectors and scalars can be concatenated"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)\ncell a\ncell b",
     0, "t.cell:5:1: a second 'cell' line (the first is line 4)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + tanh",
     0, "t.cell:3:20: tanh is a function; write tanh(v)"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((h))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))",
     0, "t.cell:3:84: expression nested too deeply"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + 1e999",
     0, "t.cell:3:20: number 1e999 is out of range"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h) + σ(h)",
     0, "t.cell:3:20: unexpected character 'σ'"},
    {"state h\nparam W[H, H]\nh' = tanh(W @ h)[0 H]",
     0, "t.cell:3:20: expected ':' in the slice v[lo:hi], found 'H'"},
    {"state h\nparam W[H, H]\nh' tanh(W @ h)",
     0, "t.cell:3:4: expected '=' after 'h'', found name"},
    {"state h\nparam W[H, H]\n= tanh(W @ h)",
     0, "t.cell:3:1: expected a statement (cell, state, param or NAME = EXPR), found '='"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit V = zeros",
     0, "t.cell:4:6: init V: 'V' is not a parameter of the cell (declare it with param first)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = gaussian(0, 1)",
     0, "t.cell:4:10: init W: unknown initialisation 'gaussian(0, 1)' (expected uniform(a, b), normal(mean, std), zeros, ones, orthogonal or a number)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = uniform(1, -1)",
     0, "t.cell:4:10: init W: uniform(1, -1) needs a < b"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = normal(0, -2)",
     0, "t.cell:4:10: init W: normal(0, -2) needs a standard deviation >= 0"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = uniform(0, x)",
     0, "t.cell:4:21: init W: x is not a number (the numbers of an init are constants of numbers, H and I with + - * / and sqrt)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = uniform(-1/sqrt(H), exp(H))",
     0, "t.cell:4:30: init W: exp(H) is not a number (the numbers of an init are constants of numbers, H and I with + - * / and sqrt)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = uniform(1/sqrt(H), 1/I)",
     1, "t.cell:4:10: init W: uniform(0.5, 0.333333) needs a < b (H = 4, I = 3)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit b = 1/(H - 4)",
     1, "t.cell:4:10: init b: a number is not finite at H = 4, I = 3"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = uniform(1)",
     0, "t.cell:4:10: init W: uniform takes two numbers, uniform(a, b), not 1"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = zeros\ninit W = ones",
     0, "t.cell:5:6: a second init of W (the first is line 4)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W[0:H] = 1\ninit W[0:H] = orthogonal",
     0, "t.cell:5:6: a second init of W over the same slice (the first is line 4)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit b = orthogonal",
     0, "t.cell:4:10: init b = orthogonal: b is a vector; orthogonal takes a matrix (or rows of one)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W[0:2H] = 1",
     1, "t.cell:4:8: init W[0:8]: not a slice of the 4 rows of W (H = 4, I = 3)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit b[H:H] = 1",
     1, "t.cell:4:8: init b[4:4]: not a slice of the 4 units of b (H = 4, I = 3)"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W zeros",
     0, "t.cell:4:8: expected '=' after the parameter of an init (init NAME = uniform(a, b), normal(m, s), zeros, ones, orthogonal or a number), found 'zeros'"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W[0 H] = 1",
     0, "t.cell:4:10: expected ':' in the slice of an init (init W[lo:hi] = …), found 'H'"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = 1 2",
     0, "t.cell:4:12: unexpected number after the init"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W = 1e999",
     0, "t.cell:4:10: number 1e999 is out of range"},
    {"state h\nparam W[H, H], b[H]\nh' = tanh(W @ h + b)\ninit W[x:H] = 1",
     0, "t.cell:4:8: a size may use only numbers, H and I, not 'x'"},
    {"state h\nparam W[H, 2H], U[H, 2H]\nh' = tanh(W @ [h, x] + U @ [h, h])",
     1, "t.cell:3:11: W @ [h, x]: W has 8 columns but [h, x] has 7 units (H = 4, I = 3)"},
};

static void test_every_error_kind(void **state)
{
    (void)state;
    int n = (int)(sizeof ERRORS / sizeof ERRORS[0]);
    for (int k = 0; k < n; k++) {
        const struct err_case *e = &ERRORS[k];
        struct tg_cell *c = tg_cell_parse(e->src, strlen(e->src), "t.cell");
        if (e->at_check) {
            if (!c) fail_msg("case %d: load failed: %s", k, tg_last_error());
            assert_int_equal(tg_cell_check(c, 3, 4), TG_ERR_FORMAT);
            /* and tg_model_new refuses the same way */
            struct tg_model_config cfg = {.cell = c, .input = 3, .hidden = 4, .layers = 1, .outputs = 2,
                                          .dtype = TG_F64};
            struct tg_model *m = NULL;
            assert_int_not_equal(tg_model_new(&cfg, &m), TG_OK);
            assert_null(m);
        } else if (c) {
            fail_msg("case %d loaded but should fail with: %s", k, e->msg);
        }
        if (strcmp(tg_last_error(), e->msg) != 0)
            fail_msg("case %d:\n  got      %s\n  expected %s", k, tg_last_error(), e->msg);
        assert_null(strchr(tg_last_error(), '\n'));
        tg_cell_free(c);
    }
    const char nul[] = "state h\nparam W[H, H]\nh' = tanh(W @ h) + \0\n";
    assert_null(tg_cell_parse(nul, sizeof nul - 1, "t.cell"));
    assert_string_equal(tg_last_error(), "t.cell:3:20: NUL byte in the file");
    printf("# %d error cases: line, column and message as expected\n", n + 1);
}

static const char LSTM[] =
    "# lstm.cell — PyTorch's nn.LSTM (gate rows i, f, g, o)\n"
    "cell lstm\n"
    "state h, c\n"
    "param weight_ih[4H, I], weight_hh[4H, H], bias_ih[4H], bias_hh[4H]\n"
    "\n"
    "a  = weight_ih @ x + bias_ih + weight_hh @ h + bias_hh\n"
    "i  = sigmoid(a[0:H])\n"
    "f  = sigmoid(a[H:2H])\n"
    "g  = tanh(a[2H:3H])\n"
    "o  = sigmoid(a[3H:4H])\n"
    "c' = f * c + i * g\n"
    "h' = o * tanh(c')\n";

static void test_contract_example(void **state)
{
    (void)state;
    struct tg_cell *c = tg_cell_parse(LSTM, strlen(LSTM), "dir/x.cell");
    if (!c) fail_msg("%s", tg_last_error());
    assert_string_equal(c->name, "lstm");
    assert_int_equal(c->n_state, 2);
    assert_int_equal(c->n_params, 4);
    assert_string_equal(c->params[0].name, "weight_ih");
    assert_int_equal(tg_param_spec_ndim(&c->params[0]), 2);
    assert_int_equal(tg_param_spec_ndim(&c->params[2]), 1);
    int r, k;
    assert_true(tg_param_spec_dims(&c->params[0], 5, 7, &r, &k));
    assert_int_equal(r, 28);
    assert_int_equal(k, 5);
    assert_true(tg_param_spec_dims(&c->params[3], 5, 7, &r, &k));
    assert_int_equal(r, 1);
    assert_int_equal(k, 28);
    size_t len;
    assert_string_equal(tg_cell_source(c, &len), LSTM);
    assert_int_equal(len, strlen(LSTM));
    assert_string_equal(tg_cell_path(c), "dir/x.cell");
    assert_non_null(strstr(c->equations, "c' = f * c + i * g"));
    assert_int_equal(tg_cell_check(c, 5, 7), TG_OK);
    tg_cell_free(c);
    /* without a cell line the name is the file's base name; comments, blanks, sizes */
    const char *src = "state h  # the output\n\nparam W[2*(H+1) - 2, H], b[ H ]\n"
                      "h' = tanh(W[0:H] @ h + b * .5 + 1e-5) # done\n";
    c = tg_cell_parse(src, strlen(src), "/a/b/my_rnn.cell");
    if (!c) fail_msg("%s", tg_last_error());
    assert_string_equal(c->name, "my_rnn");
    assert_true(tg_param_spec_dims(&c->params[0], 3, 4, &r, &k));
    assert_int_equal(r, 8);
    assert_int_equal(k, 4);
    tg_cell_free(c);
    assert_null(tg_cell_load("/nonexistent/x.cell"));
    assert_non_null(strstr(tg_last_error(), "/nonexistent/x.cell: cannot open"));
    assert_int_equal(tg_cell_check(tg_cell_find("lstm"), 3, 4), TG_OK);
    tg_cell_free(NULL);
}

static const char UGRNN_ADJ[] =
    "# backward of one step of ugrnn.cell\n"
    "dg = dh' * (h - c)\n"
    "dc = dh' * (1 - g)\n"
    "dh = dh' * g\n"
    "da = [dg * g * (1 - g), dc * (1 - c * c)]\n"
    "dW += da @ [x, h]^T\n"
    "db += da\n"
    "dxh = W^T @ da\n"
    "dx = dxh[0:I]\n"
    "dh += dxh[I:I + H]\n";

static void test_derivation_grammar(void **state)
{
    (void)state;
    struct cl_file *f = cl_parse(UGRNN_ADJ, strlen(UGRNN_ADJ), "ugrnn.adj");
    if (!f) fail_msg("%s", tg_last_error());
    assert_int_equal(f->n_stmts, 9);
    assert_int_equal(f->stmts[0].kind, CL_S_ASSIGN);
    assert_string_equal(f->stmts[0].target, "dg");
    assert_string_equal(f->stmts[0].expr->a->name, "dh'");
    const struct cl_stmt *s = &f->stmts[4];
    assert_int_equal(s->kind, CL_S_ACCUM);
    assert_string_equal(s->target, "dW");
    assert_int_equal(s->expr->kind, CL_MATMUL);
    assert_int_equal(s->expr->b->kind, CL_TRANSPOSE);     /* u @ v^T: ^T binds to [x, h] */
    assert_int_equal(s->expr->b->a->kind, CL_CONCAT);
    s = &f->stmts[6];
    assert_int_equal(s->expr->kind, CL_MATMUL);
    assert_int_equal(s->expr->a->kind, CL_TRANSPOSE);     /* W^T @ da */
    char buf[64];
    assert_string_equal(cl_expr_text(f, f->stmts[8].expr, buf, sizeof buf), "dxh[I:I + H]");
    assert_int_equal(f->stmts[8].kind, CL_S_ACCUM);
    /* truncated text ends in "..." within the buffer (a fuzzer find: it wrote one byte past) */
    char small[8];
    memset(small, 'Z', sizeof small);
    assert_string_equal(cl_expr_text(f, f->stmts[8].expr, small, sizeof small), "dxh[...");
    cl_file_free(f);
}

/* Mutations of a shipped file and of the init-line corpus file: bytes flipped, lines cut,
 * characters inserted. */
static void test_mutations_never_crash(void **state)
{
    (void)state;
    const char *files[] = {"models/cells/lstm_peephole.cell", "fuzz/corpus/cell/init_every.cell"};
    for (int fi = 0; fi < 2; fi++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", TG_SOURCE_DIR, files[fi]);
        size_t len;
        char *src = tg_test_read_file(path, &len);
        assert_non_null(src);
        char *buf = malloc(len + 8);
        struct tg_rng r;
        tg_rng_seed(&r, 5);
        const char alphabet[] = "[]():,=+-*/@^'#\nHIx0123456789.e hc";
        int loaded = 0, initialised = 0;
        for (int it = 0; it < 10000; it++) {
            memcpy(buf, src, len);
            size_t n = len;
            for (int m = 0; m < 1 + (int)tg_rng_below(&r, 4); m++) {
                size_t at = tg_rng_below(&r, (uint32_t)n);
                int kind = (int)tg_rng_below(&r, 3);
                if (kind == 0) buf[at] = alphabet[tg_rng_below(&r, sizeof alphabet - 1)];
                else if (kind == 1 && n > 1) memmove(buf + at, buf + at + 1, n - at - 1), n--;
                else if (kind == 2) buf[at] = (char)tg_rng_below(&r, 256);
            }
            struct tg_cell *c = tg_cell_parse(buf, n, "m.cell");
            if (c) {
                loaded++;
                /* a file that passes its checks also initialises a model without harm */
                struct tg_model_config mc = {.cell = c, .input = 3, .hidden = 4, .layers = 2,
                                             .outputs = 2, .dtype = TG_F32};
                struct tg_model *m = NULL;
                if (tg_cell_check(c, 3, 4) == TG_OK && tg_cell_has_init(c) &&
                    tg_model_new(&mc, &m) == TG_OK) {
                    tg_model_init_uniform(m, &r);
                    assert_int_equal(tg_model_init_cell(m, &r), TG_OK);
                    initialised++;
                }
                tg_model_free(m);
            } else {
                assert_null(strchr(tg_last_error(), '\n'));
            }
            tg_cell_free(c);
        }
        printf("# %s: 10000 mutations, %d still loaded (%d initialised a model), none crashed\n",
               files[fi], loaded, initialised);
        free(buf);
        free(src);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_error_kind),
        cmocka_unit_test(test_contract_example),
        cmocka_unit_test(test_derivation_grammar),
        cmocka_unit_test(test_mutations_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
