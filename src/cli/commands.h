/*
 * commands.h: the subcommands of the `chimera` program, one file each.
 * Each takes the arguments after its name and returns the process exit code:
 * 0 success, 1 failure of the work itself, 2 bad usage or bad input files.
 */
#ifndef CHIMERA_CLI_COMMANDS_H
#define CHIMERA_CLI_COMMANDS_H

#include <stdbool.h>

/* `chimera info`: version, build, backends, devices, auto's choice (info.c). */
int chm_cmd_info(int argc, char **argv);

/* `chimera config`: load, validate and print a configuration (config_cmd.c). */
int chm_cmd_config(int argc, char **argv);

/* `chimera model`: parameter names/shapes, counts and FLOPs per token of a config (model_cmd.c). */
int chm_cmd_model(int argc, char **argv);

/* `chimera tokenizer encode|decode|train`: the BPE tokenizer by hand (tokenizer_cmd.c). */
int chm_cmd_tokenizer(int argc, char **argv);

/* `chimera tokenize`: Dolma documents -> token shards + manifest (tokenize_cmd.c). */
int chm_cmd_tokenize(int argc, char **argv);

/* `chimera train`: run training with checkpoints, metrics and evaluation (train_cmd.c). */
int chm_cmd_train(int argc, char **argv);

/* `chimera sample`: text from a checkpoint, token by token (sample_cmd.c). */
int chm_cmd_sample(int argc, char **argv);

/* `chimera eval`: loss, perplexity and bits per byte of a checkpoint (eval_cmd.c). */
int chm_cmd_eval(int argc, char **argv);

/* `chimera plan`: memory breakdown, a short benchmark and the run's wall-clock time (plan_cmd.c). */
int chm_cmd_plan(int argc, char **argv);

/* `chimera verify`: backends against the cpu reference, op by op and step by step (verify_cmd.c). */
int chm_cmd_verify(int argc, char **argv);

/*
 * The value of option `name` at argv[*i], given as "--name=V" or "--name V"
 * (then *i advances past V); NULL when argv[*i] is another option, or when
 * the value is missing (then *missing is set) (cli_options.c).
 */
const char *chm_cli_option_value(int argc, char **argv, int *i, const char *name, bool *missing);

/* Print "chimera: error: <msg>" and a hint line to stderr (main.c). */
void chm_cli_error(const char *msg, const char *hint);

#endif
