/*
 * config_cmd.c: `chimera config`: load a config (a file or a built-in one),
 * apply --set overrides, validate, and print it resolved as YAML.
 * Exit codes: 0 valid (YAML on stdout), 2 bad usage or bad config, 1 other failures.
 */
#include "commands.h"
#include "chimera/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void config_usage(FILE *f) {
    fprintf(f,
            "usage: chimera config [--config FILE] [--set key.path=value ...] [--help]\n\n"
            "Load a configuration, apply the overrides, check it, and print it resolved\n"
            "(every key with its value, defaults and derived values filled in) as YAML.\n\n"
            "options:\n"
            "  --config FILE      YAML file to load; a name such as test, tiny or training_dolma\n"
            "                     that is not a file selects the config of that name built into\n"
            "                     the binary (default: the built-in test config)\n"
            "  --set KEY=VALUE    override one key before checking, e.g. --set train.lr=3e-4,\n"
            "                     --set train.betas=[0.9,0.95], --set model.mod.layers=[];\n"
            "                     VALUE is a YAML scalar or flow list; missing sections are\n"
            "                     created; repeat for several keys (later ones win)\n"
            "  -h, --help         print this help\n\n"
            "Every key is documented in configs/test.yaml. Exit status: 0 when the config is\n"
            "valid, 2 for a bad option or an invalid config (the message says\n"
            "file:line:col or --set KEY, the key, and what was expected).\n");
}

/* The value of option `name` at argv[*i]: "--name=V" or "--name V" (advancing *i); NULL if
 * argv[*i] is not that option. *missing is set when the option has no value. */
int chm_cmd_config(int argc, char **argv) {
    const char *spec = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0;
    if (!sets) {
        chm_cli_error("out of memory", NULL);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            config_usage(stdout);
            free(sets);
            return 0;
        }
        if ((v = chm_cli_option_value(argc, argv, &i, "--config", &missing))) {
            spec = v;
        } else if ((v = chm_cli_option_value(argc, argv, &i, "--set", &missing))) {
            sets[n_sets++] = v;
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, missing ? "option %s needs a value" : "unknown option '%s'",
                     argv[i]);
            chm_cli_error(msg, "run `chimera config --help` for the options");
            free(sets);
            return 2;
        }
    }
    chm_config cfg;
    chm_err err = {0};
    chm_status rc = chm_config_load(spec, sets, n_sets, &cfg, &err);
    free(sets);
    if (rc) {
        chm_cli_error(err.msg, rc == CHM_ERR_CONFIG || rc == CHM_ERR_PARSE
                                   ? "every key is documented in configs/test.yaml"
                                   : NULL);
        return rc == CHM_ERR_CONFIG || rc == CHM_ERR_PARSE || rc == CHM_ERR_IO ? 2 : 1;
    }
    chm_config_write(&cfg, stdout);
    chm_config_free(&cfg);
    return 0;
}
