/*
 * test_interop.c: checkpoints read by other tools (issue 5, "Interop"). A
 * tiny cpu run trains a few steps; its model.safetensors (a) opens in
 * Python's `safetensors` package with our parameter table's names, shapes
 * and f32 dtype, the values' sums and the "chimera.config" metadata, and
 * (b) `chimera model --dump --weights RUN` + tools/torch_reference.py
 * reproduce the loss parts and every gradient of the trained weights in
 * PyTorch (exit 0). Each part is skipped with a message when python3
 * cannot import the package it needs.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* popen, mkdtemp */
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "chimera/checkpoint.h"
#include "chimera/model.h"
#include "chimera/trainer.h"
#include "ckpt/checkpoint_internal.h"
#include "testutil.h"

#define TEST_CACHE_HOME "/tmp/chimera-tests-cache"

/* A small hybrid model (Mamba + attention, MoE, MoD, MTP) that trains in a second. */
static const char *TINY_ARGS =
    "--set model.d_model=16 --set model.n_layers=2 --set model.pattern=MA --set model.heads=2 "
    "--set model.kv_heads=1 --set model.mamba.d_state=4 --set model.moe.hidden=16 "
    "--set model.ffn.hidden=32 --set model.mod.layers=[1] --set train.micro_batch=2 "
    "--set train.seq_len=16 --set train.warmup=2 --set train.eval_every=0 --backend cpu "
    "--peak-tflops 1 --quiet";

/* Reads a safetensors file with the Python package: "meta <has chimera.config>" then
 * "<name> <dtype> [shape] <sum>" per tensor; exit 3 with NO_SAFETENSORS when it is absent. */
static const char *PY_READ =
    "import sys\n"
    "try:\n"
    "    from safetensors import safe_open\n"
    "except ImportError:\n"
    "    print('NO_SAFETENSORS'); sys.exit(3)\n"
    "fw = 'numpy'\n"
    "try:\n"
    "    import numpy\n"
    "except ImportError:\n"
    "    fw = 'pt'\n"
    "with safe_open(sys.argv[1], framework=fw) as f:\n"
    "    print('meta', int('chimera.config' in (f.metadata() or {})))\n"
    "    for k in f.keys():\n"
    "        t = f.get_tensor(k)\n"
    "        s = float(t.astype('float64').sum()) if fw == 'numpy' else float(t.double().sum())\n"
    "        print(k, str(t.dtype).replace('torch.', ''),\n"
    "              '[' + ','.join(str(int(d)) for d in t.shape) + ']', repr(s))\n";

/* Run a shell command; stdout and stderr into out, the exit status returned. */
static int run(const char *cmd, char *out, size_t n) {
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Train the tiny model for 3 steps into dir/run; the newest checkpoint's path into ckpt. */
static void train_tiny(const char *dir, char *ckpt, size_t n) {
    static char out[1 << 16];
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd %s && XDG_CACHE_HOME=" TEST_CACHE_HOME " OMP_NUM_THREADS=1 " CHIMERA_BINARY
             " train --out run --set train.steps=3 %s",
             dir, TINY_ARGS);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "train failed: %s", out);
    char run_dir[4200];
    snprintf(run_dir, sizeof run_dir, "%s/run", dir);
    bool found = false;
    chm_err err = {0};
    cr_assert_eq(chm_checkpoint_latest(run_dir, false, ckpt, n, &found, &err), CHM_OK, "%s",
                 err.msg);
    cr_assert(found, "no checkpoint in %s", run_dir);
}

static char *make_tmpdir(void) {
    char *d = strdup("/tmp/chm-interop-XXXXXX");
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static void remove_tmpdir(char *d) {
    chm_err err;
    ck_remove_tree(d, &err);
    free(d);
}

/* Sum of an f32 tensor of our own reader, in double. */
static double st_sum(const chm_st_tensor *t) {
    double s = 0;
    for (uint64_t i = 0; i < t->nbytes / 4; i++) {
        float v;
        memcpy(&v, (const char *)t->data + 4 * i, 4);
        s += v;
    }
    return s;
}

/* Check one "<name> <dtype> [shape] <sum>" line of PY_READ against the model and the file. */
static void check_line(const char *line, const chm_model *m, const chm_safetensors *f) {
    char name[160], dt[32], shape[96];
    double sum;
    cr_assert_eq(sscanf(line, "%159s %31s %95s %lf", name, dt, shape, &sum), 4, "line '%s'", line);
    const chm_model_param *p = chm_model_param_find(m, name);
    cr_assert_not_null(p, "python read a tensor '%s' that is not a parameter", name);
    char want[96] = "[";
    for (int d = 0; d < p->ndim; d++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "",
                 (long long)p->shape[d]);
    strcat(want, "]");
    cr_assert_str_eq(shape, want, "%s: python shape %s, ours %s", name, shape, want);
    cr_assert_str_eq(dt, "float32", "%s: python dtype %s", name, dt);
    double ours = st_sum(chm_safetensors_find(f, name));
    cr_assert(fabs(sum - ours) <= 1e-9 * (1 + fabs(ours)), "%s: sum %.17g in python, %.17g here",
              name, sum, ours);
}

Test(interop, checkpoint_loads_in_python_safetensors) {
    static char out[1 << 16];
    char *dir = make_tmpdir(), ckpt[4200], path[4400], cmd[8192];
    train_tiny(dir, ckpt, sizeof ckpt);
    snprintf(path, sizeof path, "%s/read.py", dir);
    FILE *py = fopen(path, "w");
    cr_assert_not_null(py);
    fputs(PY_READ, py);
    fclose(py);
    snprintf(cmd, sizeof cmd, "python3 %s/read.py %s/model.safetensors", dir, ckpt);
    int rc = run(cmd, out, sizeof out);
    if (rc == 3 && strstr(out, "NO_SAFETENSORS")) {
        remove_tmpdir(dir);
        cr_skip("python3 cannot import safetensors (pip install safetensors): skipped");
    }
    cr_assert_eq(rc, 0, "python failed: %s", out);
    chm_checkpoint *ck;
    chm_model *m;
    chm_safetensors *f;
    chm_err err = {0};
    cr_assert_eq(chm_checkpoint_open(ckpt, &ck, &err), CHM_OK, "%s", err.msg);
    const chm_config *cfg = chm_checkpoint_config(ck);
    chm_model_options o = {.dtype = CHM_F32, .batch = 1, .seq_len = cfg->train.seq_len};
    cr_assert_eq(chm_model_create(&cfg->model, NULL, &o, &m, &err), CHM_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/model.safetensors", ckpt);
    cr_assert_eq(chm_safetensors_open(path, &f, &err), CHM_OK, "%s", err.msg);
    cr_assert(!strncmp(out, "meta 1\n", 7), "no chimera.config metadata: %s", out);
    int lines = 0;
    for (char *l = strtok(out + 7, "\n"); l; l = strtok(NULL, "\n"), lines++) check_line(l, m, f);
    cr_assert_eq(lines, chm_model_param_count(m), "python read %d tensors, the model has %d",
                 lines, chm_model_param_count(m));
    chm_safetensors_close(f);
    chm_model_free(m);
    chm_checkpoint_close(ck);
    remove_tmpdir(dir);
}

Test(interop, trained_checkpoint_matches_torch_reference) {
    static char out[1 << 16];
    char *dir = make_tmpdir(), ckpt[4200], cmd[8192];
    train_tiny(dir, ckpt, sizeof ckpt);
    if (run("python3 -c 'import torch' >/dev/null 2>&1", out, sizeof out) != 0) {
        remove_tmpdir(dir);
        cr_skip("python3 cannot import torch (pip install torch): the reference check is skipped");
    }
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=1 " CHIMERA_BINARY " model --dump %s/dump --weights %s/run", dir, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "dump failed: %s", out);
    cr_assert(strstr(out, ckpt), "the dump did not use the newest checkpoint %s: %s", ckpt, out);
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=1 python3 " CHIMERA_SOURCE_DIR
             "/tools/torch_reference.py --require %s/dump",
             dir);
    int rc = run(cmd, out, sizeof out);
    const char *summary = strstr(out, "torch_reference:");
    printf("interop: %s", summary ? summary : out);
    cr_assert_eq(rc, 0, "torch_reference failed: %s", out);
    remove_tmpdir(dir);
}
