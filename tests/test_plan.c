/*
 * test_plan.c: `chimera plan` (src/cli/plan_cmd.c) and the model's arena size
 * without a backend, which the plan's activation figure comes from; a config
 * that does not fit gets per-layer recomputation proposed first, then a
 * smaller micro batch with it.
 */
#include <stdbool.h>
#include <stdio.h>
#include <sys/wait.h>

#include "chimera/config.h"
#include "chimera/model.h"
#include "testutil.h"

/* Output and exit code of `chimera ARGS 2>&1`. */
typedef struct plan_run {
    char out[16384];
    int status;
} plan_run;

/* `chimera plan args` with env ("NAME=value ..." or "") in front. */
static void run_plan_env(const char *env, const char *args, plan_run *r) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s '%s' plan %s 2>&1", env, CHIMERA_BINARY, args);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f, "cannot run %s", cmd);
    size_t n = fread(r->out, 1, sizeof r->out - 1, f);
    r->out[n] = '\0';
    int st = pclose(f);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void run_plan(const char *args, plan_run *r) { run_plan_env("", args, r); }

/* The arena a model without a backend reports is exactly what a cpu model allocates. */
Test(plan, arena_size_without_backend_matches_real_model) {
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load("tiny", NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    chm_backend *be = tt_open_cpu();
    int64_t batches[] = {1, 3};
    chm_dtype dts[] = {CHM_F32, CHM_BF16};
    for (int i = 0; i < 2; i++)
        for (int d = 0; d < 2; d++) {
            chm_model_options mo = {.dtype = dts[d], .batch = batches[i], .seq_len = 96};
            chm_model *desc, *real;
            cr_assert_eq(chm_model_create(&cfg.model, NULL, &mo, &desc, &err), CHM_OK, "%s", err.msg);
            cr_assert_eq(chm_model_create(&cfg.model, be, &mo, &real, &err), CHM_OK, "%s", err.msg);
            size_t planned = chm_model_arena_bytes(desc), got = chm_model_arena_bytes(real);
            cr_expect_gt(planned, 0);
            cr_expect_eq(planned, got, "B=%lld %s: planned %zu bytes, allocated %zu",
                         (long long)batches[i], chm_dtype_name(dts[d]), planned, got);
            chm_model_free(desc);
            chm_model_free(real);
        }
    chm_backend_close(be);
    chm_config_free(&cfg);
}

/* A model without a backend counts the scan's saved states when told the backend it stands for
   reads them (chm_model_options.caps): exactly what a model on such a backend allocates. */
Test(plan, arena_counts_saved_scan_states_for_backends_that_read_them) {
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load("tiny", NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    chm_backend *be = tt_open_cpu();
    be->caps |= CHM_CAP_SCAN_SAVED; /* the cpu ignores h_saved; its model then holds them */
    chm_model_options mo = {.dtype = CHM_BF16, .batch = 2, .seq_len = 96};
    chm_model *plain, *desc, *real;
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &mo, &plain, &err), CHM_OK, "%s", err.msg);
    mo.caps = CHM_CAP_SCAN_SAVED;
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &mo, &desc, &err), CHM_OK, "%s", err.msg);
    mo.caps = 0; /* ignored with a backend: its own caps count */
    cr_assert_eq(chm_model_create(&cfg.model, be, &mo, &real, &err), CHM_OK, "%s", err.msg);
    size_t a = chm_model_arena_bytes(plain), b = chm_model_arena_bytes(desc);
    cr_expect_gt(b, a, "the saved states add to the arena (%zu -> %zu bytes)", a, b);
    cr_expect_eq(b, chm_model_arena_bytes(real), "planned %zu, allocated %zu", b,
                 chm_model_arena_bytes(real));
    chm_model_free(plain);
    chm_model_free(desc);
    chm_model_free(real);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

/* Likewise the scan's pre-gate outputs (CHM_CAP_SCAN_YSAVED), on top of the saved states. */
Test(plan, arena_counts_saved_pre_gate_outputs_for_backends_that_read_them) {
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load("tiny", NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    chm_backend *be = tt_open_cpu();
    be->caps |= CHM_CAP_SCAN_SAVED | CHM_CAP_SCAN_YSAVED;
    chm_model_options mo = {.dtype = CHM_BF16, .batch = 2, .seq_len = 96,
                            .caps = CHM_CAP_SCAN_SAVED};
    chm_model *states, *both, *real;
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &mo, &states, &err), CHM_OK, "%s", err.msg);
    mo.caps = CHM_CAP_SCAN_SAVED | CHM_CAP_SCAN_YSAVED;
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &mo, &both, &err), CHM_OK, "%s", err.msg);
    mo.caps = 0;
    cr_assert_eq(chm_model_create(&cfg.model, be, &mo, &real, &err), CHM_OK, "%s", err.msg);
    size_t a = chm_model_arena_bytes(states), b = chm_model_arena_bytes(both);
    /* one [B,T,Di] bf16 tensor a Mamba layer */
    int64_t want = (int64_t)2 * 96 * cfg.model.mamba.d_inner * 2 * cfg.model.n_mamba;
    cr_assert_gt(cfg.model.n_mamba, 0, "tiny has Mamba layers");
    cr_expect_geq((int64_t)(b - a), want, "the pre-gate outputs add %lld bytes (%zu -> %zu)",
                  (long long)want, a, b);
    cr_expect_eq(b, chm_model_arena_bytes(real), "planned %zu, allocated %zu", b,
                 chm_model_arena_bytes(real));
    chm_model_free(states);
    chm_model_free(both);
    chm_model_free(real);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

Test(plan, benchmark_and_budget_on_cpu) {
    plan_run r;
    run_plan("--config test --backend cpu --steps 3 --tokens 10M", &r);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.out);
    cr_expect(strstr(r.out, "activations") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "fits:") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "tokens/s") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "1e+07 tokens:") != NULL, "%s", r.out);
}

/* `chimera plan ARGS` exits 1 (does not fit), prints every string of want (NULL-terminated)
 * and not `absent`. */
static void expect_no_fit(const char *args, const char *const *want, const char *absent) {
    plan_run r;
    run_plan(args, &r);
    cr_assert_eq(r.status, 1, "%s: exit %d:\n%s", args, r.status, r.out);
    for (int i = 0; want[i]; i++)
        cr_expect(strstr(r.out, want[i]) != NULL, "%s: no '%s' in:\n%s", args, want[i], r.out);
    cr_expect(strstr(r.out, absent) == NULL, "%s: '%s' in:\n%s", args, absent, r.out);
}

/* tiny needs ~1.3 GiB at micro batch 16, ~0.65 GiB with per-layer recomputation. */
Test(plan, too_small_device_suggests_recompute_first) {
    const char *want[] = {"activations (every layer saved)",
                          "DOES NOT FIT. Per-layer recomputation (--set train.recompute=true",
                          "): fits, ", NULL};
    expect_no_fit("--config tiny --backend cpu --no-bench --memory-gib 0.8", want,
                  "train.micro_batch=");
}

Test(plan, too_small_device_suggests_a_micro_batch) {
    /* 0.5 GiB: recomputation alone is not enough; a smaller micro batch with it fits */
    const char *off[] = {"still too much",
                         "With it, use --set train.recompute=true --set train.micro_batch=",
                         "same global batch of 16 sequences", NULL};
    expect_no_fit("--config tiny --backend cpu --no-bench --memory-gib 0.5", off, "fits, ");
    const char *on[] = {"per-layer recomputation):", "activations (per-layer recompute)",
                        "DOES NOT FIT. Use --set train.micro_batch=", NULL};
    expect_no_fit("--config tiny --backend cpu --no-bench --memory-gib 0.5 "
                  "--set train.recompute=true",
                  on, "Per-layer recomputation (");
    const char *none[] = {"even at micro batch 1 with per-layer recomputation", NULL};
    expect_no_fit("--config tiny --backend cpu --no-bench --memory-gib 0.01", none,
                  "not implemented");
}

/* With train.recompute the activation figure is the recomputing model's arena. */
Test(plan, recompute_shrinks_the_activations) {
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load("tiny", NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    chm_model_options off = {.dtype = CHM_BF16, .batch = 2, .seq_len = 96}, on = off;
    on.recompute = true;
    chm_model *a, *b;
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &off, &a, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &on, &b, &err), CHM_OK, "%s", err.msg);
    cr_expect_lt(chm_model_arena_bytes(b), chm_model_arena_bytes(a));
    chm_model_free(a);
    chm_model_free(b);
    chm_config_free(&cfg);
}

Test(plan, bad_usage_exits_2) {
    plan_run r;
    run_plan("--tokens 12Q", &r);
    cr_expect_eq(r.status, 2, "%s", r.out);
    cr_expect(strstr(r.out, "--tokens") != NULL, "%s", r.out);
    run_plan("--steps 1", &r);
    cr_expect_eq(r.status, 2, "%s", r.out);
    run_plan("--bogus", &r);
    cr_expect_eq(r.status, 2, "%s", r.out);
}

/* --profile: a per-op table after the benchmark, covering the model's ops. */
Test(plan, profile_prints_device_time_per_op) {
    plan_run r;
    run_plan("--config test --backend cpu --steps 3 --profile", &r);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.out);
    const char *t = strstr(r.out, "profile of cpu");
    cr_assert_not_null(t, "%s", r.out);
    const char *ops[] = {"matmul", "attention_fwd", "attention_bwd", "selective_scan_bwd", "adamw_step"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char row[64];
        snprintf(row, sizeof row, "\n  %s ", ops[i]);
        cr_expect(strstr(t, row) != NULL, "no row for %s:\n%s", ops[i], t);
    }
    /* adamw runs once per segment per step: the one timed step (the two warm-up steps are
     * dropped) x 3 segments (test.yaml's layout). */
    cr_expect(strstr(r.out, "profile of cpu (host CPU, ") && strstr(t, " after warm-up:"), "%s", t);
    const char *row = strstr(t, "\n  adamw_step ");
    long calls = row ? strtol(row + 13, NULL, 10) : -1;
    cr_expect_eq(calls, 3, "adamw_step calls %ld:\n%s", calls, t);
}

/* Whether s starts with a GEMM shape as the profile prints it, MxNxK, each a number or "n" (a
 * size that varies from call to call, src/backend/profile.c), then a space. */
static bool is_gemm_shape(const char *s) {
    for (int dim = 0; dim < 3; dim++) {
        if (*s == 'n') s++;
        else if (*s >= '1' && *s <= '9')
            while (*s >= '0' && *s <= '9') s++;
        else return false;
        if (*s++ != (dim < 2 ? 'x' : ' ')) return false;
    }
    return true;
}

/* CHIMERA_PROFILE=sync survives --profile and gives per-shape GEMM rows (it implies shapes). */
Test(plan, profile_sync_keeps_shape_rows) {
    plan_run r;
    run_plan_env("CHIMERA_PROFILE=sync", "--config test --backend cpu --steps 3 --profile", &r);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.out);
    const char *t = strstr(r.out, "profile of cpu");
    cr_assert_not_null(t, "%s", r.out);
    const char *row = strstr(t, "\n  matmul ");
    cr_assert_not_null(row, "%s", t);
    /* the first matmul row (the one that took longest, which varies with the machine) */
    cr_expect(is_gemm_shape(row + 10), "no shape in the matmul row:\n%s", t);
    cr_expect(strstr(t, "TFLOP/s") != NULL, "%s", t);
}
