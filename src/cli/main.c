/*
 * main.c: the `chimera` command: dispatch to a subcommand, print help.
 * Only the CLI prints errors and picks exit codes; the library returns codes.
 */
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"info", chm_cmd_info, "version, build options, backends and devices, and what auto picks"},
    {"config", chm_cmd_config, "validate a config (with --set overrides) and print it resolved"},
    {"model", chm_cmd_model, "parameter table, counts (total, active) and FLOPs per token of a config"},
    {"tokenizer", chm_cmd_tokenizer, "encode, decode or train a tokenizer.json byte-level BPE"},
    {"tokenize", chm_cmd_tokenize, "turn Dolma JSONL(.gz/.zst) files into token shards"},
    {"train", chm_cmd_train, "train a model (no options: the built-in test config and corpus)"},
    {"sample", chm_cmd_sample, "generate text from a checkpoint"},
    {"eval", chm_cmd_eval, "loss, perplexity and bits per byte of a checkpoint on some data"},
    {"verify", chm_cmd_verify, "show that the backends agree: ops, a step, a trajectory, checkpoints"},
    {"plan", chm_cmd_plan, "memory per device, measured tokens/s and run time of a config"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

void chm_cli_error(const char *msg, const char *hint) {
    fprintf(stderr, "chimera: error: %s\n", msg);
    if (hint && *hint) fprintf(stderr, "---> HINT: %s\n", hint);
}

static void usage(FILE *f) {
    fprintf(f, "chimera %s: train hybrid language models (attention, Mamba, MoE, MoD, MTP)\n"
               "on cuda, vulkan or cpu from one C program.\n\n"
               "usage: chimera <command> [options]\n\ncommands:\n",
            CHIMERA_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`chimera <command> --help` describes each command's options.\n");
}

/*
 * OpenMP threads that wait by spinning cost far more than they save when the
 * cpu ops are small or the machine is busy (measured: 40 training steps of
 * configs/test.yaml took 41 s with spinning threads against 7.7 s passive on
 * a loaded 2-core machine). libgomp reads OMP_WAIT_POLICY when it loads,
 * before main, so when the user has not chosen one we set "passive" and run
 * ourselves again. If the re-exec fails we simply carry on.
 */
static void prefer_passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv) {
    prefer_passive_openmp(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("chimera %s\n", CHIMERA_VERSION);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    char msg[256];
    snprintf(msg, sizeof msg, "unknown command '%s'", argv[1]);
    chm_cli_error(msg, "run `chimera --help` for the list of commands");
    return 2;
}
