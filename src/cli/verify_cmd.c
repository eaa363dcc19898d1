/*
 * verify_cmd.c: `chimera verify`: run the verifier (chimera/verify.h),
 * print its tables and verdict on stdout (progress on stderr) and,
 * with --json, write the whole report.
 * Exit codes: 0 every comparison passed, 1 something failed (or the device
 * failed), 2 bad usage: an unknown op or backend, a named backend that
 * cannot run here, a bad config.
 */
#include "commands.h"
#include "chimera/verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void verify_usage(FILE *f) {
    fprintf(f,
            "usage: chimera verify [--backends cpu,vulkan,cuda] [--config FILE]\n"
            "                      [--set KEY=VALUE ...] [--ops all|none|LIST] [--steps N]\n"
            "                      [--bf16] [--seed N] [--json FILE] [--threads N] [--quiet]\n\n"
            "Show that the backends compute what the cpu reference computes:\n"
            "  ops         every op forward and backward on fresh random inputs at several\n"
            "              shapes, f32 on each backend against the cpu in f64: max |err|,\n"
            "              relative L2 error against the op's limit, PASS, FAIL or SKIP (the\n"
            "              backend does not offer the op);\n"
            "  step        one training step of the config from the same weights and batch on\n"
            "              each backend: loss parts, gradient norm, every parameter's gradient;\n"
            "  trajectory  N steps on each backend from the same start: the loss curves;\n"
            "  crossing    a checkpoint saved on one backend, resumed on another: the next\n"
            "              step's loss, gradient norm and weights.\n"
            "Then a one-line verdict.\n\n"
            "options:\n"
            "  --backends LIST  backends to verify, comma separated (default: every backend\n"
            "                   built in that opens; one named here that cannot run is an error)\n"
            "  --config FILE    config of the model phases, a file or a built-in name\n"
            "                   (default: test)\n"
            "  --set KEY=VALUE  override a config key (repeatable): --set train.micro_batch=2\n"
            "  --ops LIST       ops to check, comma separated, or all (default) or none\n"
            "  --steps N        trajectory steps (default %d); 0 skips step, trajectory and\n"
            "                   crossing\n"
            "  --bf16           also check the ops in bf16 (limits x1000) on the backends with\n"
            "                   bf16 storage; an op a backend cannot compute in bf16 is a SKIP\n"
            "  --seed N         seed of the op phase's random inputs (default 1)\n"
            "  --json FILE      write the full report (every check and parameter) as JSON\n"
            "  --threads N      cpu backend threads (default: every core)\n"
            "  --quiet          no progress lines on stderr\n"
            "  --list-ops       print the op names and exit\n\n"
            "Exit status: 0 all passed, 1 something failed, 2 bad usage or a backend named\n"
            "in --backends that cannot run here. CHIMERA_DEBUG_FAULT=backend:op (debug only)\n"
            "perturbs one op of one backend, to see verify catch it.\n",
            CHM_VERIFY_DEFAULT_STEPS);
}

typedef struct verify_args {
    chm_verify_options o;
    const char **sets;
    const char *json;
    bool quiet;
} verify_args;

static int usage_error(const char *msg) {
    chm_cli_error(msg, "run `chimera verify --help` for the options");
    return 2;
}

/* A whole number >= lo; 0 ok, 2 bad. */
static int whole(const char *name, const char *v, long long lo, long long *out) {
    char *end;
    *out = strtoll(v, &end, 10);
    if (end != v && !*end && *out >= lo) return 0;
    char msg[200];
    snprintf(msg, sizeof msg, "%s needs a whole number >= %lld, got '%s'", name, lo, v);
    return usage_error(msg);
}

static int parse_one(verify_args *a, int argc, char **argv, int *i) {
    bool missing = false;
    const char *v;
    long long x;
    if ((v = chm_cli_option_value(argc, argv, i, "--backends", &missing))) a->o.backends = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--config", &missing))) a->o.config = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--set", &missing))) a->sets[a->o.n_sets++] = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--ops", &missing))) a->o.ops = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--json", &missing))) a->json = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--steps", &missing))) {
        if (whole("--steps", v, 0, &x)) return 2;
        a->o.steps = (int)(x > 100000 ? 100000 : x);
        a->o.no_model = x == 0;
    } else if ((v = chm_cli_option_value(argc, argv, i, "--seed", &missing))) {
        if (whole("--seed", v, 1, &x)) return 2;
        a->o.seed = (uint64_t)x;
    } else if ((v = chm_cli_option_value(argc, argv, i, "--threads", &missing))) {
        if (whole("--threads", v, 1, &x)) return 2;
        a->o.threads = (int)(x > 4096 ? 4096 : x);
    } else if (!strcmp(argv[*i], "--bf16")) {
        a->o.bf16 = true;
    } else if (!strcmp(argv[*i], "--quiet") || !strcmp(argv[*i], "-q")) {
        a->quiet = true;
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, missing ? "option %s needs a value" : "unknown option '%s'",
                 argv[*i]);
        return usage_error(msg);
    }
    return 0;
}

/* The exit code and message for a verifier that could not run. */
static int run_failed(chm_status rc, const chm_err *err) {
    const char *hint = NULL;
    if (rc == CHM_ERR_UNSUPPORTED)
        hint = "`chimera info` lists the backends and devices; leave --backends out to verify "
               "every backend that runs here";
    else if (rc == CHM_ERR_INVALID_ARG)
        hint = "run `chimera verify --help` for the options (`--list-ops` prints the ops)";
    else if (rc == CHM_ERR_CONFIG || rc == CHM_ERR_PARSE)
        hint = "see configs/test.yaml for every key; `chimera config` prints one resolved";
    chm_cli_error(err->msg, hint);
    return rc == CHM_ERR_NOMEM || rc == CHM_ERR_DEVICE || rc == CHM_ERR_INTERNAL ? 1 : 2;
}

static int run(verify_args *a) {
    chm_verify_report *r = NULL;
    chm_err err = {0};
    a->o.sets = a->sets;
    a->o.progress = a->quiet ? NULL : stderr;
    chm_status rc = chm_verify_run(&a->o, &r, &err);
    if (rc) return run_failed(rc, &err);
    chm_verify_print(r, stdout);
    fflush(stdout);
    int code = chm_verify_passed(r) ? 0 : 1;
    if (a->json && chm_verify_write_json(r, a->json, &err) != CHM_OK) {
        chm_cli_error(err.msg, "check that the directory exists and is writable");
        code = 1;
    }
    chm_verify_report_free(r);
    return code;
}

static void list_ops(void) {
    for (int i = 0; i < chm_verify_op_count(); i++) printf("%s\n", chm_verify_op_name(i));
}

int chm_cmd_verify(int argc, char **argv) {
    verify_args a;
    memset(&a, 0, sizeof a);
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    if (!a.sets) {
        chm_cli_error("out of memory", NULL);
        return 1;
    }
    int code = 0;
    bool done = false;
    for (int i = 1; i < argc && !code && !done; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) verify_usage(stdout), done = true;
        else if (!strcmp(argv[i], "--list-ops")) list_ops(), done = true;
        else code = parse_one(&a, argc, argv, &i);
    }
    if (!code && !done && a.o.no_model && a.o.ops && !strcmp(a.o.ops, "none"))
        code = usage_error("--ops none with --steps 0 leaves nothing to verify");
    if (!code && !done) code = run(&a);
    free(a.sets);
    return code;
}
