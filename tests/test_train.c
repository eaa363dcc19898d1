/*
 * test_train.c: training runs (chimera/trainer.h) and the train, sample and
 * eval commands: exact resume on the cpu backend (2N steps against N + save
 * + resume + N: identical losses and byte-identical model and optimizer
 * files), a NaN injected through CHIMERA_DEBUG_NAN_STEP (debug only) is
 * skipped and training goes on, three in a row stop the run with a
 * checkpoint, the loss falls, and the CLI: metrics.jsonl with the
 * documented fields, refusal of an existing run, --resume auto, SIGINT
 * (checkpoint, exit 0), `chimera sample` prints text, `chimera eval`
 * prints loss, perplexity and bits per byte.
 */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chimera/trainer.h"
#include "ckpt/checkpoint_internal.h"
#include "testutil.h"
#include "train_fixture.h"

#define TEST_CACHE_HOME "/tmp/chimera-tests-cache"
#define TEST_CACHE TEST_CACHE_HOME "/chimera"

/* The same overrides for the command line. */
static const char *TINY_ARGS =
    "--set model.d_model=16 --set model.n_layers=2 --set model.pattern=MA --set model.heads=2 "
    "--set model.kv_heads=1 --set model.mamba.d_state=4 --set model.moe.hidden=16 "
    "--set model.ffn.hidden=32 --set model.mod.layers=[1] --set train.micro_batch=2 "
    "--set train.seq_len=16 --set train.warmup=2 --set train.eval_batches=2 --backend cpu "
    "--peak-tflops 1";

static char *make_tmpdir(void) { return make_tmpdir_named("chm-train-"); }

static chm_trainer *open_trainer(const chm_config *cfg, const char *dir, const char *resume) {
    chm_trainer_options o = {.out_dir = dir, .resume = resume, .backend = "cpu", .quiet = true,
                             .threads = 1, .cache_dir = TEST_CACHE, .peak_tflops = 1};
    chm_trainer *t;
    chm_err err = {0};
    cr_assert_eq(chm_trainer_open(cfg, &o, &t, &err), CHM_OK, "%s", err.msg);
    return t;
}

/* Run n steps, recording each step's loss into losses[] (may be NULL). */
static void steps(chm_trainer *t, int n, double *losses, chm_train_step *last) {
    for (int i = 0; i < n; i++) {
        chm_train_step s;
        chm_err err = {0};
        cr_assert_eq(chm_trainer_step(t, &s, &err), CHM_OK, "%s", err.msg);
        if (losses) losses[i] = s.loss.total;
        if (last) *last = s;
    }
}

/* The whole content of a file (malloc'd), its size into *n. */
static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = '\0';
    fclose(f);
    if (n) *n = (size_t)len;
    return buf;
}

static void assert_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    cr_assert(na == nb && !memcmp(x, y, na), "%s and %s differ", a, b);
    free(x), free(y);
}

/* ---- the library ----------------------------------------------------------------------- */

Test(train, exact_resume) {
    enum { N = 3 };
    char *da = make_tmpdir(), *db = make_tmpdir(), a[4200], b[4200];
    chm_config cfg;
    load_config(&cfg, NULL);
    double la[2 * N], lb[2 * N];
    chm_err err = {0};
    /* 2N steps in one run */
    chm_trainer *t = open_trainer(&cfg, da, NULL);
    steps(t, 2 * N, la, NULL);
    cr_assert_eq(chm_trainer_save(t, NULL, 0, &err), CHM_OK, "%s", err.msg);
    chm_trainer_close(t);
    /* N steps, save, close; resume; N steps */
    t = open_trainer(&cfg, db, NULL);
    steps(t, N, lb, NULL);
    cr_assert_eq(chm_trainer_save(t, NULL, 0, &err), CHM_OK, "%s", err.msg);
    chm_trainer_close(t);
    t = open_trainer(&cfg, db, "auto");
    cr_assert_eq(chm_trainer_steps_done(t), N);
    steps(t, N, lb + N, NULL);
    cr_assert_eq(chm_trainer_save(t, NULL, 0, &err), CHM_OK, "%s", err.msg);
    chm_trainer_close(t);
    for (int i = 0; i < 2 * N; i++)
        cr_assert(la[i] == lb[i], "step %d: loss %.17g in one run, %.17g resumed", i + 1, la[i], lb[i]);
    cr_assert(la[2 * N - 1] < la[0], "the loss falls (%g -> %g)", la[0], la[2 * N - 1]);
    const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int k = 0; k < 2; k++) {
        snprintf(a, sizeof a, "%s/step-%08d/%s", da, 2 * N, files[k]);
        snprintf(b, sizeof b, "%s/step-%08d/%s", db, 2 * N, files[k]);
        assert_same_file(a, b);
    }
    chm_config_free(&cfg);
    remove_tmpdir(da);
    remove_tmpdir(db);
}

/* grad_accum 2 of micro batch 1 equals one micro batch of 2 (dense FFNs: MoE capacity depends
 * on the micro batch, mixture-of-depths is per sequence): same windows, same gradients up to
 * the f32 summation order. */
Test(train, grad_accum_matches_bigger_batch) {
    char *da = make_tmpdir(), *db = make_tmpdir();
    const char *common[] = {"model.moe.experts=0", "train.steps=3"};
    chm_config a, b;
    const char *sa[N_TINY + 5], *sb[N_TINY + 5];
    memcpy(sa, TINY, sizeof TINY), memcpy(sb, TINY, sizeof TINY);
    sa[N_TINY] = sb[N_TINY] = common[0], sa[N_TINY + 1] = sb[N_TINY + 1] = common[1];
    sa[N_TINY + 2] = "train.micro_batch=2", sa[N_TINY + 3] = "train.grad_accum=1";
    sa[N_TINY + 4] = "train.eval_batches=2";
    sb[N_TINY + 2] = "train.micro_batch=1", sb[N_TINY + 3] = "train.grad_accum=2";
    sb[N_TINY + 4] = "train.eval_batches=4";
    chm_err err = {0};
    cr_assert_eq(chm_config_load(NULL, sa, N_TINY + 5, &a, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_config_load(NULL, sb, N_TINY + 5, &b, &err), CHM_OK, "%s", err.msg);
    chm_trainer *ta = open_trainer(&a, da, NULL), *tb = open_trainer(&b, db, NULL);
    for (int i = 0; i < 3; i++) {
        chm_train_step x, y;
        steps(ta, 1, NULL, &x);
        steps(tb, 1, NULL, &y);
        cr_assert_eq(x.tokens, y.tokens);
        cr_assert_float_eq(x.loss.total, y.loss.total, 1e-5, "step %d: %.9g vs %.9g", i + 1,
                           x.loss.total, y.loss.total);
        cr_assert_float_eq(x.grad_norm, y.grad_norm, 1e-5 * x.grad_norm);
    }
    int n = chm_model_param_count(chm_trainer_model(ta));
    for (int i = 0; i < n; i++) {
        const chm_model_param *p = chm_model_param_get(chm_trainer_model(ta), i);
        const chm_model_param *q = chm_model_param_get(chm_trainer_model(tb), i);
        float *x = malloc((size_t)p->numel * 4), *y = malloc((size_t)p->numel * 4);
        cr_assert_eq(chm_download(chm_trainer_backend(ta), &p->value, x), CHM_OK);
        cr_assert_eq(chm_download(chm_trainer_backend(tb), &q->value, y), CHM_OK);
        for (int64_t j = 0; j < p->numel; j++)
            cr_assert(fabsf(x[j] - y[j]) <= 1e-5f + 1e-4f * fabsf(x[j]), "%s[%lld]: %g vs %g",
                      p->name, (long long)j, x[j], y[j]);
        free(x), free(y);
    }
    chm_trainer_close(ta);
    chm_trainer_close(tb);
    chm_config_free(&a);
    chm_config_free(&b);
    remove_tmpdir(da);
    remove_tmpdir(db);
}

/* All parameters as host bytes. */
static void *params_bytes(chm_trainer *t, size_t *n) {
    chm_model *m = chm_trainer_model(t);
    chm_tensor pd, pn;
    chm_model_param_region(m, true, &pd, NULL);
    chm_model_param_region(m, false, &pn, NULL);
    chm_tensor all = chm_tensor_1d(pd.buf, pd.offset, pd.dtype,
                                   chm_tensor_numel(&pd) + chm_tensor_numel(&pn));
    *n = chm_tensor_nbytes(&all);
    void *h = malloc(*n);
    cr_assert_eq(chm_download(chm_trainer_backend(t), &all, h), CHM_OK);
    return h;
}

Test(train, nan_step_is_skipped) {
    setenv("CHIMERA_DEBUG_NAN_STEP", "2", 1); /* debug only: the 2nd step's gradients are NaN */
    char *dir = make_tmpdir();
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer *t = open_trainer(&cfg, dir, NULL);
    chm_train_step s;
    steps(t, 1, NULL, &s);
    cr_assert(!s.skipped);
    size_t n1, n2;
    void *before = params_bytes(t, &n1);
    steps(t, 1, NULL, &s);
    cr_assert(s.skipped && s.bad_streak == 1 && !isfinite(s.grad_norm), "step 2 skipped");
    void *after = params_bytes(t, &n2);
    cr_assert(n1 == n2 && !memcmp(before, after, n1), "a skipped step leaves the weights alone");
    steps(t, 2, NULL, &s);
    cr_assert(!s.skipped && isfinite(s.loss.total) && s.bad_streak == 0, "training goes on");
    cr_assert_eq(chm_trainer_steps_done(t), 4);
    free(before), free(after);
    chm_trainer_close(t);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

Test(train, three_nan_steps_stop_with_checkpoint) {
    setenv("CHIMERA_DEBUG_NAN_STEP", "2-4", 1);
    char *dir = make_tmpdir(), path[4200];
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer *t = open_trainer(&cfg, dir, NULL);
    chm_err err = {0};
    cr_assert_eq(chm_trainer_run(t, NULL, &err), CHM_ERR_CONFIG);
    cr_assert(strstr(err.msg, "3 steps in a row") && strstr(err.msg, "step-00000004"), "%s", err.msg);
    snprintf(path, sizeof path, "%s/step-00000004/trainer_state.json", dir);
    cr_assert(ck_exists(path), "the last good state is saved");
    chm_trainer_close(t);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

/* MFU's denominator: known cards from the table (dtype column), the cpu measured. */
Test(train, device_peak) {
    chm_backend fake = {.name = "cuda", .device = "NVIDIA H100 80GB HBM3"};
    chm_device_peak p;
    chm_device_peak_find(&fake, CHM_BF16, &p);
    cr_assert_float_eq(p.tflops, 989.4, 1e-9, "%s", p.source);
    chm_device_peak_find(&fake, CHM_F32, &p);
    cr_assert_float_eq(p.tflops, 66.9, 1e-9, "%s", p.source);
    snprintf(fake.device, sizeof fake.device, "NVIDIA H100 PCIe");
    chm_device_peak_find(&fake, CHM_BF16, &p);
    cr_assert_float_eq(p.tflops, 756.0, 1e-9, "%s", p.source);
    snprintf(fake.device, sizeof fake.device, "NVIDIA A100-SXM4-40GB");
    chm_device_peak_find(&fake, CHM_BF16, &p);
    cr_assert_float_eq(p.tflops, 312.0, 1e-9, "%s", p.source);
    chm_backend *be = tt_open_cpu();
    chm_device_peak_find(be, CHM_F32, &p);
    cr_assert(p.tflops > 1e-4 && p.tflops < 1e3 && strstr(p.source, "measured"), "%g: %s",
              p.tflops, p.source);
    chm_backend_close(be);
}

/* ---- the commands ---------------------------------------------------------------------- */

/* Run `chimera ARGS` through the shell with the test cache; stdout and stderr into files of
 * dir. The exit status. */
static int chimera(const char *dir, const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "cd %s && XDG_CACHE_HOME=" TEST_CACHE_HOME " OMP_NUM_THREADS=1 %s %s >out.txt 2>err.txt",
             dir, CHIMERA_BINARY, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *read_in(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return slurp(path, NULL);
}

/* The events of metrics.jsonl as a JSON array. */
static json_t *metrics(const char *run) {
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    json_t *all = json_array();
    char line[1 << 14];
    while (fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *e = json_loads(line, 0, &je);
        cr_assert_not_null(e, "metrics.jsonl line is not JSON: %s (%s)", line, je.text);
        json_array_append_new(all, e);
    }
    fclose(f);
    return all;
}

/* The first event named ev, or NULL. */
static json_t *find_event(json_t *all, const char *ev) {
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e) {
        if (!strcmp(json_string_value(json_object_get(e, "event")), ev)) return e;
    }
    return NULL;
}

static void assert_keys(json_t *e, const char *ev, const char *const *keys) {
    cr_assert_not_null(e, "no %s event", ev);
    for (int i = 0; keys[i]; i++)
        cr_assert_not_null(json_object_get(e, keys[i]), "%s event lacks %s", ev, keys[i]);
}

Test(train, cli_train_sample_eval) {
    char *dir = make_tmpdir(), args[4096];
    snprintf(args, sizeof args, "train --out run %s --set train.steps=4 --set train.log_every=2 "
             "--set train.eval_every=3", TINY_ARGS);
    cr_assert_eq(chimera(dir, args), 0, "train failed: %s", read_in(dir, "err.txt"));
    char *out = read_in(dir, "out.txt");
    cr_assert(strstr(out, "step 4/4") && strstr(out, "val loss") && strstr(out, "tok/s") &&
              strstr(out, "MFU") && strstr(out, "ETA") && strstr(out, "loss floor"), "%s", out);
    free(out);
    char run[4200];
    snprintf(run, sizeof run, "%s/run", dir);
    json_t *all = metrics(run);
    const char *train_keys[] = {"step", "tokens", "loss", "ce", "mtp", "moe_balance", "moe_z",
                                "mod_aux", "lr", "grad_norm", "tokens_per_s", "mfu",
                                "memory_bytes", "eta_s", "elapsed_s", "time", NULL};
    const char *eval_keys[] = {"step", "val_loss", "val_ppl", "val_bpb", "val_tokens", NULL};
    const char *start_keys[] = {"backend", "params_total", "flops_per_token", "peak_tflops",
                                "floor", NULL};
    assert_keys(find_event(all, "train"), "train", train_keys);
    assert_keys(find_event(all, "eval"), "eval", eval_keys);
    assert_keys(find_event(all, "start"), "start", start_keys);
    cr_assert_not_null(find_event(all, "checkpoint"));
    json_t *end = json_array_get(all, json_array_size(all) - 1);
    cr_assert_str_eq(json_string_value(json_object_get(end, "event")), "end");
    cr_assert_str_eq(json_string_value(json_object_get(end, "reason")), "done");
    json_decref(all);
    /* the run directory is never overwritten */
    cr_assert_eq(chimera(dir, args), 2);
    char *err = read_in(dir, "err.txt");
    cr_assert(strstr(err, "already holds checkpoints") && strstr(err, "--resume auto"), "%s", err);
    free(err);
    /* sample: the prompt, then generated text; the same seed gives the same text */
    const char *sample = "sample --checkpoint run --prompt 'the ' --tokens 12 --seed 7 --backend cpu";
    cr_assert_eq(chimera(dir, sample), 0, "%s", read_in(dir, "err.txt"));
    char *s1 = read_in(dir, "out.txt");
    cr_assert(!strncmp(s1, "the ", 4) && strlen(s1) > 6, "sample printed '%s'", s1);
    cr_assert_eq(chimera(dir, sample), 0);
    char *s2 = read_in(dir, "out.txt");
    cr_assert_str_eq(s1, s2);
    free(s1), free(s2);
    /* eval: the three numbers */
    cr_assert_eq(chimera(dir, "eval --checkpoint run --backend cpu"), 0, "%s", read_in(dir, "err.txt"));
    out = read_in(dir, "out.txt");
    cr_assert(strstr(out, "loss ") && strstr(out, "perplexity ") && strstr(out, "bits/byte"), "%s", out);
    free(out);
    /* --resume auto continues the run */
    snprintf(args, sizeof args, "train --out run %s --set train.steps=6 --resume auto --quiet",
             TINY_ARGS);
    cr_assert_eq(chimera(dir, args), 0, "%s", read_in(dir, "err.txt"));
    out = read_in(dir, "out.txt");
    cr_assert(strstr(out, "resumed from") && strstr(out, "step 6/6"), "%s", out);
    free(out);
    remove_tmpdir(dir);
}

Test(train, cli_eval_on_dolma_file) {
    char *dir = make_tmpdir(), args[4096];
    snprintf(args, sizeof args, "train --out run %s --set train.steps=1 --quiet", TINY_ARGS);
    cr_assert_eq(chimera(dir, args), 0, "%s", read_in(dir, "err.txt"));
    char docs[4200];
    snprintf(docs, sizeof docs, "%s/docs.jsonl", dir);
    FILE *f = fopen(docs, "w");
    for (int i = 0; i < 40; i++)
        fprintf(f, "{\"id\": \"%d\", \"text\": \"the cat sat on the mat number %d, then slept.\"}\n",
                i, i);
    fclose(f);
    cr_assert_eq(chimera(dir, "eval --checkpoint run --data docs.jsonl --json --backend cpu"), 0, "%s",
                 read_in(dir, "err.txt"));
    char *out = read_in(dir, "out.txt");
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert_not_null(j, "%s", out);
    double loss = json_number_value(json_object_get(j, "loss"));
    double bpb = json_number_value(json_object_get(j, "bits_per_byte"));
    cr_assert(loss > 0 && isfinite(loss) && bpb > 0, "%s", out);
    /* byte tokenizer: one byte per token, so bits per byte = loss / ln 2 */
    cr_assert_float_eq(bpb, loss / log(2.0), 1e-4, "%s", out);
    json_decref(j);
    free(out);
    remove_tmpdir(dir);
}

/* Wait (up to ~60 s) until run/metrics.jsonl holds a "train" event. */
static bool wait_for_training(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/run/metrics.jsonl", dir);
    for (int i = 0; i < 600; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            char line[1 << 14];
            bool seen = false;
            while (!seen && fgets(line, sizeof line, f)) seen = strstr(line, "\"event\":\"train\"");
            fclose(f);
            if (seen) return true;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

Test(train, cli_sigint_saves_and_exits_0) {
    char *dir = make_tmpdir(), args[4096];
    snprintf(args, sizeof args, "exec %s train --out run %s --set train.steps=1000000 --quiet",
             CHIMERA_BINARY, TINY_ARGS);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(127);
        setenv("XDG_CACHE_HOME", TEST_CACHE_HOME, 1);
        setenv("OMP_NUM_THREADS", "1", 1);
        freopen("out.txt", "w", stdout);
        freopen("err.txt", "w", stderr);
        execl("/bin/sh", "sh", "-c", args, (char *)NULL);
        _exit(127);
    }
    bool started = wait_for_training(dir);
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(started, "training did not start: %s", read_in(dir, "err.txt"));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d: %s", st, read_in(dir, "err.txt"));
    char run[4200], latest[4096];
    snprintf(run, sizeof run, "%s/run", dir);
    bool found;
    chm_err err = {0};
    cr_assert_eq(chm_checkpoint_latest(run, false, latest, sizeof latest, &found, &err), CHM_OK);
    cr_assert(found, "a checkpoint was saved on SIGINT");
    chm_checkpoint *c;
    cr_assert_eq(chm_checkpoint_open(latest, &c, &err), CHM_OK, "%s", err.msg);
    chm_checkpoint_close(c);
    json_t *all = metrics(run);
    json_t *end = json_array_get(all, json_array_size(all) - 1);
    cr_assert_str_eq(json_string_value(json_object_get(end, "reason")), "signal");
    json_decref(all);
    remove_tmpdir(dir);
}
