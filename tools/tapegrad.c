/* tapegrad.c — the command-line program: one subcommand per job. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"


struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
};

static const struct subcommand commands[] = {
    {"train", cmd_train_mpi, "train a recurrent network on a built-in task or a text file"},
    {"sample", cmd_sample, "sample text from a checkpoint of a text model"},
    {"check", cmd_check, "compare autodiff, hand-derived BPTT and finite differences for a cell"},
    {"adjoint", cmd_adjoint, "print the backward pass of one step as math (a derivation file, or LaTeX)"},
    {"grad", cmd_grad, "loss, final state and gradients of a PyTorch-layout model (safetensors)"},
    {"dot", cmd_dot, "draw the unrolled forward/backward graph (DOT, SVG or PNG)"},
    {"bench", cmd_bench, "time training steps against the hand-written BPTT"},
    {"flow", cmd_flow, "per-step gradient flow of one batch: norms, split, weight terms, saturation, plots"},
    {"export", cmd_export, "a checkpoint's parameters for PyTorch's load_state_dict (or npy / csv)"},
    {"plot", cmd_plot, "draw the loss and metric curves of a train --log CSV (PNG or SVG)"},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *f)
{
    fprintf(f, "usage: tapegrad COMMAND [flags]   (tapegrad COMMAND --help for its flags)\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        int rc = commands[i].run(argc - 2, argv + 2);
        /* Output that never reached its destination (a full disk, a closed pipe) is a failure,
         * not a success with a truncated result. */
        if (fflush(stdout) != 0 || ferror(stdout)) {
            cli_fail(commands[i].name, "writing to standard output failed: %s", strerror(errno));
            return rc ? rc : 1;
        }
        return rc;
    }
    char name[64];
    snprintf(name, sizeof name, "%s", argv[1]);
    cli_sanitize(name);
    fprintf(stderr, "tapegrad: unknown command '%s' (expected train, sample, check, adjoint, grad, dot, bench, flow, export or plot)\n",
            name);
    return 1;
}
