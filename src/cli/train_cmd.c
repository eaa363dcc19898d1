/*
 * train_cmd.c: `chimera train`: load a config (the built-in test config by
 * default), open a run through chimera/trainer.h and run it to the end.
 * SIGINT/SIGTERM: the current step finishes, a checkpoint is written and the
 * command exits 0; a second signal exits at once (the previous checkpoint
 * stays intact: saves are atomic).
 * Exit codes: 0 done or stopped by a signal, 1 the run failed (I/O such as a
 * full disk, device, non-finite losses), 2 bad usage, config, data or
 * checkpoint (also a data file found corrupt during the run), 128 + signal
 * number after a second SIGINT/SIGTERM.
 *
 * Data parallel (chimera/comm.h): under mpirun, or with --rank/--world-size
 * (cuda, NCCL), the command opens the process group before the trainer and
 * closes it after; a rank that fails prints its error (tagged with its
 * rank) and calls chm_comm_abort so that the other ranks stop at once.
 * --comm-check tests the group's collectives and exits.
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
            "                     [--keep N] [--threads N] [--peak-tflops X] [--quiet]\n"
            "                     [--device N] [--profile]\n"
            "                     [--rank R --world-size N [--rendezvous FILE]] [--comm-check]\n\n"
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
            "  --quiet            no informational lines (backend choice)\n"
            "  --device N         GPU N (`chimera info` numbers them): vulkan through\n"
            "                     CHIMERA_VULKAN_DEVICE, cuda through CUDA_VISIBLE_DEVICES\n"
            "  --profile          at the end, a table of device time per op (CHIMERA_PROFILE=1;\n"
            "                     CHIMERA_PROFILE=shapes: a row and TFLOP/s per matmul shape;\n"
            "                     =sync: wait after every op, each op's own time)\n"
            "  --rank R, --world-size N\n"
            "                     data parallel without MPI (cuda backend, NCCL): this process is\n"
            "                     rank R of N started by hand, each on GPU R %% (GPUs visible)\n"
            "  --rendezvous FILE  where rank 0 leaves the NCCL id for the others (a file all\n"
            "                     ranks can read; default: RUN_DIR/.nccl-id)\n"
            "  --comm-check       test every collective of the data-parallel group on the\n"
            "                     backend against a host reference, print the all-reduce\n"
            "                     bandwidth and exit (no training)\n\n"
            "Data parallel: `mpirun -np N chimera train ...` runs N ranks (cpu and vulkan reduce\n"
            "through MPI, cuda through NCCL on GPU local_rank %% GPUs). The global batch is\n"
            "micro_batch x grad_accum x N; the optimizer state is sharded over the ranks; rank 0\n"
            "prints, logs and writes the checkpoints, which resume on any number of ranks.\n"
            "CHIMERA_COMM_TIMEOUT=S: NCCL gives up on a collective after S seconds (600).\n\n"
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
    sa.sa_flags = SA_RESTART; /* a save in progress must not fail with EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

typedef struct train_args {
    const char *config;
    const char **sets;
    int n_sets;
    chm_trainer_options opt;
    chm_comm_options comm;  /* --rank, --world-size, --rendezvous */
    bool comm_check;        /* --comm-check */
} train_args;

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
    if ((v = chm_cli_option_value(argc, argv, i, "--config", &missing))) a->config = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--set", &missing))) a->sets[a->n_sets++] = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--backend", &missing))) a->opt.backend = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--resume", &missing))) a->opt.resume = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--out", &missing))) a->opt.out_dir = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--keep", &missing))) {
        if (number("--keep", v, 1, &x)) return 2;
        a->opt.keep = (int)x;
    } else if ((v = chm_cli_option_value(argc, argv, i, "--threads", &missing))) {
        if (number("--threads", v, 1, &x)) return 2;
        a->opt.threads = (int)x;
    } else if ((v = chm_cli_option_value(argc, argv, i, "--device", &missing))) {
        if (number("--device", v, 0, &x)) return 2;
        char d[32];
        snprintf(d, sizeof d, "%d", (int)x);
        setenv("CHIMERA_VULKAN_DEVICE", d, 1);
        setenv("CUDA_VISIBLE_DEVICES", d, 1); /* read when CUDA starts, after this */
    } else if (!strcmp(argv[*i], "--profile")) {
        const char *pv = getenv("CHIMERA_PROFILE"); /* keep "shapes" or "sync" when set */
        if (!pv || (strcmp(pv, "shapes") != 0 && strcmp(pv, "sync") != 0))
            setenv("CHIMERA_PROFILE", "1", 1);
    } else if ((v = chm_cli_option_value(argc, argv, i, "--peak-tflops", &missing))) {
        if (number("--peak-tflops", v, 1e-9, &x)) return 2;
        a->opt.peak_tflops = x;
    } else if ((v = chm_cli_option_value(argc, argv, i, "--rank", &missing))) {
        if (number("--rank", v, 0, &x)) return 2;
        a->comm.rank = (int)x;
    } else if ((v = chm_cli_option_value(argc, argv, i, "--world-size", &missing))) {
        if (number("--world-size", v, 1, &x)) return 2;
        a->comm.world_size = (int)x;
    } else if ((v = chm_cli_option_value(argc, argv, i, "--rendezvous", &missing))) {
        a->comm.rendezvous = v;
    } else if (!strcmp(argv[*i], "--comm-check")) {
        a->comm_check = true;
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

/* "rank R of N: " in front of an error of a data-parallel rank, so that mpirun's merged
 * output says who failed. */
static void tag_rank(chm_err *err, const chm_comm *comm) {
    if (chm_comm_size(comm) <= 1) return;
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "rank %d of %d: %s", chm_comm_rank(comm), chm_comm_size(comm),
             err->msg);
    memcpy(err->msg, msg, sizeof msg);
}

/* The end of the process group: a failed rank takes the others down with it (under MPI
 * chm_comm_abort does not return), a good one finalises. Returns code. */
static int leave(chm_comm *comm, int code) {
    if (code != 0) chm_comm_abort(comm, code);
    chm_comm_close(comm);
    return code;
}

/* --comm-check: the group's collectives on the run's backend, then exit. */
static int comm_check(train_args *a, const chm_config *cfg, chm_comm *comm) {
    const char *name = a->opt.backend ? a->opt.backend : chm_config_backend_name(cfg->backend);
    const char *dir = a->opt.out_dir ? a->opt.out_dir : cfg->train.out_dir;
    chm_backend_options bo = {.device_index = chm_comm_device_index(comm, name),
                              .threads = a->opt.threads, .quiet = chm_comm_rank(comm) != 0};
    char rdv[4200];
    snprintf(rdv, sizeof rdv, "%s/.nccl-id", dir);
    chm_err err = {0};
    chm_backend *be = NULL;
    chm_status rc = chm_backend_open(name, &bo, &be, &err);
    if (rc == CHM_OK) rc = chm_comm_attach(comm, be, rdv, &err);
    if (rc == CHM_OK) rc = chm_comm_selftest(comm, stdout, &err);
    if (rc) {
        tag_rank(&err, comm);
        chm_cli_error(err.msg, NULL);
        chm_comm_abort(comm, 1);
    }
    chm_comm_detach(comm);
    chm_backend_close(be);
    return leave(comm, rc ? 1 : 0);
}

/* Open the trainer on the group and run it; the exit code. */
static int train(train_args *a, const chm_config *cfg, chm_comm *comm) {
    chm_err err = {0};
    a->opt.log = stdout;
    a->opt.progress = -1;
    a->opt.comm = comm;
    chm_trainer *t;
    chm_status rc = chm_trainer_open(cfg, &a->opt, &t, &err);
    if (rc) {
        tag_rank(&err, comm);
        return leave(comm, open_failed(rc, &err, false));
    }
    install_handlers();
    rc = chm_trainer_run(t, &stop_flag, &err);
    int code = 0;
    if (rc) {
        tag_rank(&err, comm);
        chm_cli_error(err.msg, NULL);
        /* A data file found corrupt mid-run is bad input (2); the rest is the run failing. */
        code = rc == CHM_ERR_PARSE ? 2 : 1;
        chm_comm_abort(comm, code); /* before the trainer lets go of its backend */
    }
    chm_trainer_close(t);
    return leave(comm, code);
}

static int run(train_args *a) {
    chm_config cfg;
    chm_err err = {0};
    chm_status rc = chm_config_load(a->config, a->sets, a->n_sets, &cfg, &err);
    if (rc) return open_failed(rc, &err, true);
    chm_comm *comm = NULL;
    rc = chm_comm_open(&a->comm, &comm, &err);
    int code = rc ? open_failed(rc, &err, false)
               : a->comm_check ? comm_check(a, &cfg, comm)
                               : train(a, &cfg, comm);
    chm_config_free(&cfg);
    return code;
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
