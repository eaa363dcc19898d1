/*
 * test_model_cmd.c: `chimera model`: the summary and the table print the
 * counts the library computes, bad options exit 2, and --dump writes
 * safetensors files that our reader loads (weights with the config and loss
 * as metadata, gradients, the batch). When python3 can import torch, the
 * dump goes through tools/torch_reference.py (losses and every gradient
 * within 1e-8 of PyTorch's autograd); without torch that part is skipped.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* popen */
#endif
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chimera/checkpoint.h"
#include "chimera/config.h"
#include "chimera/model.h"

/* Run a shell command; its stdout (and stderr) into out, the exit status returned. */
static int run(const char *cmd, char *out, size_t n) {
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(model_cmd, summary_and_table_print_the_library_counts) {
    static char out[1 << 16];
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load_builtin("test", NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    chm_model_stats s;
    cr_assert_eq(chm_model_stats_compute(&cfg.model, cfg.train.seq_len, &s, &err), CHM_OK);
    char want[64];
    snprintf(want, sizeof want, "parameters, total    : %lld", (long long)s.params_total);
    cr_assert_eq(run(CHIMERA_BINARY " model --summary", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, want) != NULL, "%s", out);
    snprintf(want, sizeof want, "parameters, active   : %lld", (long long)s.params_active);
    cr_assert(strstr(out, want) != NULL, "%s", out);
    cr_assert(strstr(out, "FLOPs per token") != NULL, "%s", out);
    cr_assert_eq(run(CHIMERA_BINARY " model --set model.mtp.depth=0", out, sizeof out), 0, "%s",
                 out);
    cr_assert(strstr(out, "layers.3.mixer.q_proj.weight") && strstr(out, "embed.weight"), "%s",
              out);
    cr_assert(strstr(out, "mtp.0.") == NULL, "no MTP module without MTP: %s", out);
    cr_assert_eq(run(CHIMERA_BINARY " model --bogus", out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "unknown option '--bogus'"), "%s", out);
    cr_assert_eq(run(CHIMERA_BINARY " model --seed", out, sizeof out), 2, "%s", out);
    cr_assert_eq(run(CHIMERA_BINARY " model --set model.d_model=x", out, sizeof out), 2, "%s", out);
    chm_config_free(&cfg);
}

Test(model_cmd, dump_writes_loadable_safetensors_and_matches_torch) {
    static char out[1 << 16];
    char dir[256], cmd[2048], path[512];
    snprintf(dir, sizeof dir, "/tmp/chimera_dump_%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             CHIMERA_BINARY " model --set model.moe.capacity_factor=0.75 --set "
                            "model.mod.layers=[1,2] --set train.micro_batch=2 --set "
                            "train.seq_len=17 --dump %s --seed 3 --jitter 0.2",
             dir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    chm_safetensors *f;
    chm_err err = {0};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(chm_safetensors_open(path, &f, &err), CHM_OK, "%s", err.msg);
    const chm_st_tensor *e = chm_safetensors_find(f, "embed.weight");
    cr_assert(e && e->dtype == CHM_F64 && e->ndim == 2);
    cr_assert(strstr(chm_safetensors_metadata(f, "chimera.config"), "\"mixers\":\"MMMA\""));
    cr_assert_not_null(chm_safetensors_metadata(f, "chimera.loss"));
    int n = chm_safetensors_count(f);
    chm_safetensors_close(f);
    snprintf(path, sizeof path, "%s/grads.safetensors", dir);
    cr_assert_eq(chm_safetensors_open(path, &f, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_safetensors_count(f), n);
    chm_safetensors_close(f);
    snprintf(path, sizeof path, "%s/batch.safetensors", dir);
    cr_assert_eq(chm_safetensors_open(path, &f, &err), CHM_OK, "%s", err.msg);
    const chm_st_tensor *ids = chm_safetensors_find(f, "ids");
    cr_assert(ids && ids->dtype == CHM_I32 && ids->shape[0] == 2 && ids->shape[1] == 18);
    chm_safetensors_close(f);
    if (run("python3 -c 'import torch' >/dev/null 2>&1", out, sizeof out) == 0) {
        snprintf(cmd, sizeof cmd, "python3 " CHIMERA_SOURCE_DIR "/tools/torch_reference.py %s",
                 dir);
        int rc = run(cmd, out, sizeof out);
        printf("%s", strstr(out, "torch_reference:") ? strstr(out, "torch_reference:") : out);
        cr_assert_eq(rc, 0, "%s", out);
    } else {
        printf("model_cmd: PyTorch not importable: the torch reference comparison is skipped\n");
    }
    const char *names[] = {"model", "grads", "batch"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}
