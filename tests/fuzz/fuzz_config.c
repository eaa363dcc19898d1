/*
 * fuzz_config.c: libFuzzer target for the YAML config loader
 * (chm_config_load_string: libyaml, the schema checks, derived values).
 * An input whose first line starts with "#set " also passes the rest of that
 * line as one --set override, so the override parser is fuzzed too. A config
 * that loads is written back (chm_config_write) and must load again.
 */
#include "fuzz_util.h"

#include "chimera/config.h"

/* Split "#set key=value\n<yaml>" into the override and the YAML (both in s). */
static const char *split_set(char *s, char **yaml) {
    *yaml = s;
    if (strncmp(s, "#set ", 5) != 0) return NULL;
    char *nl = strchr(s, '\n');
    if (!nl) {
        *yaml = s + strlen(s);
        return s + 5;
    }
    *nl = '\0';
    *yaml = nl + 1;
    return s + 5;
}

/* Write cfg as YAML and load that again: the writer's output must be a valid config. */
static void round_trip(const chm_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) abort();
    chm_config_write(cfg, f);
    fclose(f);
    chm_config again;
    chm_err err = {0};
    if (chm_config_load_string(buf, "<written>", NULL, 0, &again, &err) != CHM_OK) {
        fprintf(stderr, "a loaded config does not load back: %s\n%s\n", err.msg, buf);
        abort();
    }
    chm_config_free(&again);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = fz_string(data, size), *yaml;
    const char *set = split_set(s, &yaml);
    const char *sets[1] = {set};
    chm_config cfg;
    chm_err err = {0};
    chm_status rc = chm_config_load_string(yaml, "fuzz.yaml", set ? sets : NULL, set ? 1 : 0,
                                           &cfg, &err);
    fz_report("config", rc == CHM_OK, err.msg);
    if (rc == CHM_OK) {
        round_trip(&cfg);
        chm_config_free(&cfg);
    } else if (!err.msg[0]) {
        fprintf(stderr, "a failed load must say why\n");
        abort();
    }
    free(s);
    return 0;
}
