/*
 * train_cmd.c: `chimera train`: load a config (the built-in test config by
 * default), open a run through chimera/trainer.h and run it to the end.
 * SIGINT/SIGTERM: the current step finishes, a checkpoint is written and the
 * command exits 0; a second signal exits at once (the previous checkpoint
 * stays intact: saves are atomic).
 * Exit codes: 0 done or stopped by a signal, 1 the run failed (I/O, device,
 * non-finite losses), 2 bad usage, config, data or checkpoint.
 */
#include "commands.h"
#include "chimera/trainer.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: chimera train [--config FILE] [--backend auto|cpu|vulkan|cuda]\n"
            "                     [--resume DIR|auto] [--set key.path=value ...] [--out DIR]\n"
            "                     [--keep N] [--threads N] [--peak-tflops X] [--quiet]\n\n"
            "Train a model. With no options: the built-in test config (configs/test.yaml) on\n"
            "the built-in corpus (tokenized once into ~/.cache/chimera), on the best backend\n"
            "present, in a minute or two on two CPU cores; the loss falls toward the corpus's\n"
            "entropy floor, which the header prints.\n\n"
            "options:\n"
            "  --config FILE      YAML config, or the name of a built-in one (test, tiny, ...)\n"
            "  --set KEY=VALUE    override a config key (repeatable), e.g. --set train.steps=50\n"
            "  --backend NAME     auto (default: the config's `backend`), cpu, vulkan or cuda;\n"
            "                     auto takes the cpu when the device lacks an op the model needs\n"
            "  --out DIR          run directory (default: train.out_dir)\n"
            "  --resume auto|DIR  continue the newest checkpoint of the run directory (auto; a\n"
            "                     fresh run when it has none), of a run directory, or a given\n"
            "                     checkpoint directory. Without it a run directory that holds\n"
            "                     checkpoints is refused, never overwritten.\n"
            "  --keep N           checkpoints kept in the run directory (default %d)\n"
            "  --threads N        cpu backend threads (default: every core; on a busy machine\n"
            "                     or for tiny models, 1 can be faster)\n"
            "  --peak-tflops X    the device's peak for MFU (default: a table of known GPUs,\n"
            "                     else a short GEMM measured at start-up)\n"
            "  --quiet            no informational lines (backend choice)\n\n"
            "Writes DIR/metrics.jsonl (one JSON object per event; plot with tools/plot_metrics),\n"
            "DIR/config.yaml and DIR/step-XXXXXXXX/ checkpoints (model.safetensors,\n"
            "optimizer.safetensors, trainer_state.json). Ctrl-C finishes the step, saves and\n"
            "exits; press it twice to quit at once.\n",
            CHM_CHECKPOINT_KEEP);
}

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
    static const char msg[] = "\nchimera: stopping after this step and saving a checkpoint "
                              "(signal again to quit now)\n";
    if (stop_flag) _exit(128 + sig);
    stop_flag = 1;
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
}

static void install_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

typedef struct train_args {
    const char *config;
    const char **sets;
    int n_sets;
    chm_trainer_options opt;
} train_args;

/* "--name=V" or "--name V" at argv[*i]; NULL when argv[*i] is not that option. */
static const char *option_value(int argc, char **argv, int *i, const char *name, bool *missing) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != 0) return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

static int usage_error(const char *msg) {
    chm_cli_error(msg, "run `chimera train --help` for the options");
    return 2;
}

/* A numeric option value; 0 ok, 2 bad. */
static int number(const char *name, const char *v, double lo, double *out) {
    char *end;
    *out = strtod(v, &end);
    if (end == v || *end || !(*out >= lo)) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s needs a number >= %g, got '%s'", name, lo, v);
        return usage_error(msg);
    }
    return 0;
}

static int parse_one(train_args *a, int argc, char **argv, int *i) {
    bool missing = false;
    const char *v;
    double x;
    if ((v = option_value(argc, argv, i, "--config", &missing))) a->config = v;
    else if ((v = option_value(argc, argv, i, "--set", &missing))) a->sets[a->n_sets++] = v;
    else if ((v = option_value(argc, argv, i, "--backend", &missing))) a->opt.backend = v;
    else if ((v = option_value(argc, argv, i, "--resume", &missing))) a->opt.resume = v;
    else if ((v = option_value(argc, argv, i, "--out", &missing))) a->opt.out_dir = v;
    else if ((v = option_value(argc, argv, i, "--keep", &missing))) {
        if (number("--keep", v, 1, &x)) return 2;
        a->opt.keep = (int)x;
    } else if ((v = option_value(argc, argv, i, "--threads", &missing))) {
        if (number("--threads", v, 1, &x)) return 2;
        a->opt.threads = (int)x;
    } else if ((v = option_value(argc, argv, i, "--peak-tflops", &missing))) {
        if (number("--peak-tflops", v, 1e-9, &x)) return 2;
        a->opt.peak_tflops = x;
    } else if (!strcmp(argv[*i], "--quiet") || !strcmp(argv[*i], "-q")) {
        a->opt.quiet = true;
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, missing ? "option %s needs a value" : "unknown option '%s'", argv[*i]);
        return usage_error(msg);
    }
    return 0;
}

/* The exit code for a failure before training starts; config errors get a hint. */
static int open_failed(chm_status rc, const chm_err *err, bool loading_config) {
    const char *hint = NULL;
    if (loading_config && (rc == CHM_ERR_CONFIG || rc == CHM_ERR_PARSE))
        hint = "see configs/test.yaml for every key; `chimera config` prints one resolved";
    else if (rc == CHM_ERR_UNSUPPORTED)
        hint = "`chimera info` lists the backends and devices; --backend cpu always works";
    chm_cli_error(err->msg, hint);
    return rc == CHM_ERR_NOMEM || rc == CHM_ERR_DEVICE || rc == CHM_ERR_INTERNAL ? 1 : 2;
}

static int run(train_args *a) {
    chm_config cfg;
    chm_err err = {0};
    chm_status rc = chm_config_load(a->config, a->sets, a->n_sets, &cfg, &err);
    if (rc) return open_failed(rc, &err, true);
    a->opt.log = stdout;
    a->opt.progress = -1;
    chm_trainer *t;
    rc = chm_trainer_open(&cfg, &a->opt, &t, &err);
    chm_config_free(&cfg);
    if (rc) return open_failed(rc, &err, false);
    install_handlers();
    rc = chm_trainer_run(t, &stop_flag, &err);
    chm_trainer_close(t);
    if (rc) {
        chm_cli_error(err.msg, NULL);
        return 1;
    }
    return 0;
}

int chm_cmd_train(int argc, char **argv) {
    train_args a = {.opt = {.progress = -1}};
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    if (!a.sets) {
        chm_cli_error("out of memory", NULL);
        return 1;
    }
    int code = 0;
    for (int i = 1; i < argc && !code; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            train_usage(stdout);
            free(a.sets);
            return 0;
        }
        code = parse_one(&a, argc, argv, &i);
    }
    if (!code) code = run(&a);
    free(a.sets);
    return code;
}
