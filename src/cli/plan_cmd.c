/*
 * plan_cmd.c: `chimera plan`: will a config fit, how fast will it train on
 * this machine, and how long will its token budget take.
 *
 * 1. Memory per device from the config alone: weights, fp32 master weights
 *    (mixed precision), AdamW moments, gradients, activations (the model's
 *    arena, sized by the same dry run the trainer uses) and the backend's
 *    workspace; against the device's memory; with train.recompute, the
 *    activations of per-layer recomputation. When it does not fit, first
 *    per-layer recomputation (when off) with the memory it needs, then the
 *    largest micro batch that fits with it, with the grad_accum that keeps
 *    the global batch.
 * 2. A short measured benchmark on the chosen backend: a few optimizer steps
 *    of random tokens (model + AdamW exactly as the trainer runs them; the
 *    data loader costs nothing next to a step), the median step time after
 *    warm-up, tokens/s; repeated without each fast path that is available
 *    (cuda: bf16 tensor cores -> f32).
 * 3. The wall-clock time of the token budget (--tokens, else the config's
 *    train.tokens or steps x tokens per step) at each measured speed.
 * Exit codes: 0 it fits (or --no-bench), 1 it does not fit or a step failed,
 * 2 bad usage or config.
 */
#include "commands.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chimera/backend.h"
#include "chimera/config.h"
#include "chimera/device.h"
#include "chimera/model.h"
#include "chimera/optim.h"
#include "chimera/rng.h"
#include "chimera/trainer.h"

/* Share of device memory a plan may use: allocator slack, fragmentation, the driver's context. */
#define PLAN_USABLE 0.92
#define PLAN_MAX_STEPS 100

static void plan_usage(FILE *f) {
    fprintf(f,
            "usage: chimera plan [--config FILE] [--set key.path=value ...] [--tokens N]\n"
            "                    [--backend auto|cpu|vulkan|cuda] [--steps N] [--no-bench]\n"
            "                    [--memory-gib X] [--profile] [--help]\n\n"
            "Plan a training run: the memory it needs per device (weights, master weights,\n"
            "optimizer moments, gradients, activations, workspace) computed from the config,\n"
            "then a short benchmark on this machine (a few steps of the model and AdamW on\n"
            "random tokens) giving tokens/s, and the wall-clock time of the token budget,\n"
            "with and without each fast path the backend has. When the config does not fit,\n"
            "it says whether per-layer recomputation (train.recompute) makes it fit, else which\n"
            "micro batch (and grad_accum, keeping the global batch) does.\n\n"
            "options:\n"
            "  --config FILE     YAML file or built-in name (test, tiny, training_dolma);\n"
            "                    default: the built-in test config\n"
            "  --set KEY=VALUE   override one key, repeatable\n"
            "  --tokens N        token budget, e.g. 100B, 2.5T, 300M (default: the config's\n"
            "                    train.tokens, or train.steps x tokens per step)\n"
            "  --backend NAME    auto (default: the config's backend key), cpu, vulkan, cuda\n"
            "  --steps N         benchmark steps, the first two are warm-up (default 6)\n"
            "  --no-bench        memory only, no benchmark\n"
            "  --memory-gib X    plan for a device with X GiB instead of this one's\n"
            "  --profile         after the benchmark, device time per op of the timed steps\n"
            "                    (CHIMERA_PROFILE=1);\n"
            "                    only the fast path is measured then; with\n"
            "                    CHIMERA_PROFILE=shapes, a row (and TFLOP/s) per matmul shape;\n"
            "                    =sync waits after every op (each op's own time)\n"
            "  -h, --help        print this help\n\n"
            "Exit codes: 0 it fits, 1 it does not fit or a benchmark step failed, 2 bad usage.\n");
}

typedef struct plan_args {
    const char *config, *backend;
    const char **sets;
    int n_sets, steps;
    double tokens, memory_gib;
    bool bench;
} plan_args;

/* The memory of one configuration on one device, in bytes. */
typedef struct plan_memory {
    double weights, master, moments, grads, activations, workspace, total;
} plan_memory;

static int usage_error(const char *msg) {
    chm_cli_error(msg, "run `chimera plan --help` for the options");
    return 2;
}

/* "100B", "2.5T", "300M", "64K" or a plain number of tokens; false when malformed. */
static bool parse_tokens(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1e3, end++; break;
    case 'm': case 'M': mul = 1e6, end++; break;
    case 'b': case 'B': case 'g': case 'G': mul = 1e9, end++; break;
    case 't': case 'T': mul = 1e12, end++; break;
    default: break;
    }
    *out = v * mul;
    return end != s && *end == 0 && isfinite(*out) && *out >= 1;
}

static int parse_one(plan_args *a, int argc, char **argv, int *i) {
    bool missing = false;
    const char *v;
    char msg[300];
    if ((v = chm_cli_option_value(argc, argv, i, "--config", &missing))) a->config = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--set", &missing))) a->sets[a->n_sets++] = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--backend", &missing))) a->backend = v;
    else if ((v = chm_cli_option_value(argc, argv, i, "--tokens", &missing))) {
        if (!parse_tokens(v, &a->tokens)) {
            snprintf(msg, sizeof msg, "--tokens needs a count like 100B, 2.5T or 300M, got '%s'", v);
            return usage_error(msg);
        }
    } else if ((v = chm_cli_option_value(argc, argv, i, "--steps", &missing))) {
        a->steps = atoi(v);
        if (a->steps < 3 || a->steps > PLAN_MAX_STEPS) {
            snprintf(msg, sizeof msg, "--steps needs 3 to %d, got '%s'", PLAN_MAX_STEPS, v);
            return usage_error(msg);
        }
    } else if ((v = chm_cli_option_value(argc, argv, i, "--memory-gib", &missing))) {
        a->memory_gib = strtod(v, NULL);
        if (!(a->memory_gib > 0)) {
            snprintf(msg, sizeof msg, "--memory-gib needs a positive number, got '%s'", v);
            return usage_error(msg);
        }
    } else if (!strcmp(argv[*i], "--profile")) {
        const char *pv = getenv("CHIMERA_PROFILE"); /* keep "shapes" or "sync" when set */
        if (!pv || (strcmp(pv, "shapes") != 0 && strcmp(pv, "sync") != 0))
            setenv("CHIMERA_PROFILE", "1", 1);
    } else if (!strcmp(argv[*i], "--no-bench")) {
        a->bench = false;
    } else {
        snprintf(msg, sizeof msg, missing ? "option %s needs a value" : "unknown option '%s'", argv[*i]);
        return usage_error(msg);
    }
    return 0;
}

/* ---- memory ----------------------------------------------------------------------------- */

/* The compute dtype a run of cfg on be (NULL: not on this machine, by name) uses. */
static chm_dtype plan_dtype(const chm_config *cfg, const chm_backend *be, const char *be_name) {
    if (cfg->precision == CHM_CONFIG_PRECISION_BF16) return CHM_BF16;
    if (cfg->precision == CHM_CONFIG_PRECISION_F32) return CHM_F32;
    return chm_train_auto_dtype(be, be_name);
}

/* Bytes of device memory of the backend's device (the --memory-gib override first); 0 unknown. */
static double device_bytes(const plan_args *a, const chm_backend *be) {
    if (a->memory_gib > 0) return a->memory_gib * 1073741824.0;
    if (!be) return 0;
    if (!strcmp(be->name, "cuda")) {
        chm_cuda_probe p;
        chm_cuda_probe_run(&p);
        for (int i = 0; i < p.count; i++)
            if (strstr(be->device, p.dev[i].name)) return (double)p.dev[i].memory;
        return p.count > 0 ? (double)p.dev[0].memory : 0;
    }
    if (!strcmp(be->name, "vulkan")) {
        chm_vulkan_probe p;
        chm_vulkan_probe_run(&p);
        for (int i = 0; i < p.count; i++)
            if (strstr(be->device, p.dev[i].name)) return (double)p.dev[i].device_memory;
        int best = chm_vulkan_probe_best(&p);
        return best >= 0 ? (double)p.dev[best].device_memory : 0;
    }
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? (double)pages * (double)page : 0;
}

/*
 * Workspace a backend allocates besides the model: cuBLASLt's workspace and
 * the flash-attention/scan scratch of cuda (a few tens of MiB); the cpu's
 * per-thread scratch; Vulkan's staging ring and descriptor pools.
 */
static double workspace_bytes(const char *be_name) {
    if (!strcmp(be_name, "cuda")) return 96.0 * 1048576;
    if (!strcmp(be_name, "vulkan")) return 64.0 * 1048576;
    return 16.0 * 1048576;
}

/* The backend a memory plan is for: its name and the CHM_CAP_* that change what its model
   holds (the scan's saved states). */
typedef struct plan_target {
    const char *name;
    unsigned caps;
} plan_target;

/* be's target, or (be NULL: a backend not on this machine) its defaults by name: cuda's scan
   backward reads saved states and pre-gate outputs, Vulkan's does not by default
   (selective_scan.c). */
static plan_target plan_target_of(const chm_backend *be, const char *name) {
    if (be) return (plan_target){be->name, be->caps};
    return (plan_target){name,
                         !strcmp(name, "cuda") ? CHM_CAP_SCAN_SAVED | CHM_CAP_SCAN_YSAVED : 0u};
}

/* The memory of cfg at micro batch B in dtype dt on backend tg, with or without
 * per-layer recomputation. */
static chm_status plan_memory_of(const chm_config *cfg, int64_t B, chm_dtype dt,
                                 const plan_target *tg,
                                 bool recompute, plan_memory *pm, chm_err *err) {
    chm_model *m;
    chm_model_options mo = {.dtype = dt, .batch = B, .seq_len = cfg->train.seq_len,
                            .recompute = recompute, .caps = tg->caps};
    chm_status rc = chm_model_create(&cfg->model, NULL, &mo, &m, err);
    if (rc) return rc;
    chm_model_stats st;
    rc = chm_model_stats_compute(&cfg->model, cfg->train.seq_len, &st, err);
    if (rc) {
        chm_model_free(m);
        return rc;
    }
    double P = (double)st.params_total, cs = (double)chm_dtype_size(dt);
    bool mixed = dt == CHM_BF16 || dt == CHM_F16;
    memset(pm, 0, sizeof *pm);
    pm->weights = P * cs;
    pm->master = mixed ? P * 4 : 0;
    pm->moments = 2 * P * (mixed ? 4 : cs);
    pm->grads = P * cs;
    pm->activations = (double)chm_model_arena_bytes(m);
    pm->workspace = workspace_bytes(tg->name);
    pm->total = pm->weights + pm->master + pm->moments + pm->grads + pm->activations + pm->workspace;
    chm_model_free(m);
    return CHM_OK;
}

/* bytes as "12.34 GiB" or "56.7 MiB". */
static const char *size_str(double bytes, char *out, size_t n) {
    if (bytes >= 1073741824.0) snprintf(out, n, "%8.2f GiB", bytes / 1073741824.0);
    else snprintf(out, n, "%8.1f MiB", bytes / 1048576.0);
    return out;
}

static void print_gib(const char *what, double bytes, double total) {
    char b[32];
    printf("  %-34s %s  %5.1f%%\n", what, size_str(bytes, b, sizeof b),
           total > 0 ? 100.0 * bytes / total : 0.0);
}

static void print_memory(const plan_memory *pm, double device, chm_dtype dt, bool recompute) {
    char w[64], g[64], mo[64];
    bool mixed = dt == CHM_BF16 || dt == CHM_F16;
    snprintf(w, sizeof w, "weights (%s)", chm_dtype_name(dt));
    snprintf(g, sizeof g, "gradients (%s)", chm_dtype_name(dt));
    snprintf(mo, sizeof mo, "AdamW moments (2 x %s)", mixed ? "f32" : chm_dtype_name(dt));
    print_gib(w, pm->weights, pm->total);
    if (mixed) print_gib("master weights (f32)", pm->master, pm->total);
    print_gib(mo, pm->moments, pm->total);
    print_gib(g, pm->grads, pm->total);
    print_gib(recompute ? "activations (per-layer recompute)" : "activations (every layer saved)",
              pm->activations, pm->total);
    print_gib("backend workspace (estimate)", pm->workspace, pm->total);
    char b[32];
    printf("  %-34s %s\n", "total", size_str(pm->total, b, sizeof b));
    if (device > 0)
        printf("  %-34s %s  (plans use %.0f%% of it)\n", "device memory",
               size_str(device, b, sizeof b), 100 * PLAN_USABLE);
}

/* The largest micro batch below cfg's that fits in `usable` bytes with per-layer
 * recomputation; 0 when none does. */
static int64_t fitting_batch(const chm_config *cfg, chm_dtype dt, const plan_target *tg,
                             double usable,
                             chm_err *err) {
    for (int64_t b = cfg->train.micro_batch - 1; b >= 1; b = b > 8 ? b * 3 / 4 : b - 1) {
        plan_memory pm;
        if (plan_memory_of(cfg, b, dt, tg, true, &pm, err)) return 0;
        if (pm.total <= usable) return b;
    }
    return 0;
}

/*
 * Recomputation off: print what it would need and whether that fits (then true). A
 * failure to size it (it cannot fail where the plain plan did not) just skips the advice.
 */
static bool suggest_recompute(const chm_config *cfg, chm_dtype dt, const plan_target *tg,
                              const plan_memory *pm, double device, double usable) {
    chm_err err = {0};
    plan_memory pr;
    if (plan_memory_of(cfg, cfg->train.micro_batch, dt, tg, true, &pr, &err)) return false;
    char t[32], x[32], y[32];
    bool ok = pr.total <= usable;
    printf("  DOES NOT FIT. Per-layer recomputation (--set train.recompute=true; each layer's "
           "forward runs again in the backward, about 1/3 more compute per step) needs %s "
           "(activations %s instead of %s): ",
           size_str(pr.total, t, sizeof t) + strspn(t, " "),
           size_str(pr.activations, x, sizeof x) + strspn(x, " "),
           size_str(pm->activations, y, sizeof y) + strspn(y, " "));
    if (ok) printf("fits, %.0f%% of the device\n", 100 * pr.total / device);
    else printf("still too much\n");
    return ok;
}

/* The config does not fit: recomputation first, then a smaller micro batch with it. */
static void suggest(const chm_config *cfg, chm_dtype dt, const plan_target *tg,
                    const plan_memory *pm, double device, double usable) {
    bool rc = cfg->train.recompute;
    if (!rc && suggest_recompute(cfg, dt, tg, pm, device, usable)) return;
    chm_err err = {0};
    int64_t b = fitting_batch(cfg, dt, tg, usable, &err);
    int64_t global = (int64_t)cfg->train.micro_batch * cfg->train.grad_accum;
    if (b > 0)
        printf("  %s --set train.micro_batch=%lld --set train.grad_accum=%lld "
               "(same global batch of %lld sequences)\n",
               rc ? "DOES NOT FIT. Use" : "With it, use --set train.recompute=true", (long long)b,
               (long long)((global + b - 1) / b), (long long)global);
    else
        printf("  %s even at micro batch 1 with per-layer recomputation: the weights and "
               "optimizer state alone need %.1f GiB. Shard the optimizer over more devices "
               "(mpirun -np N: ZeRO-1 divides the moments by N), shorten train.seq_len, or use "
               "a smaller model.\n",
               rc ? "DOES NOT FIT" : "Nor does it fit",
               (pm->weights + pm->master + pm->moments + pm->grads) / 1073741824.0);
}

/* Print the memory plan; *fits says whether the config's micro batch fits. */
static int memory_section(const chm_config *cfg, const chm_backend *be, const plan_target *tg,
                          const plan_args *a, chm_dtype dt, bool *fits) {
    chm_err err = {0};
    plan_memory pm;
    bool rc = cfg->train.recompute;
    if (plan_memory_of(cfg, cfg->train.micro_batch, dt, tg, rc, &pm, &err)) {
        chm_cli_error(err.msg, NULL);
        return 2;
    }
    double device = device_bytes(a, be), usable = device * PLAN_USABLE;
    printf("\nmemory per device (micro batch %d x %d, %s%s):\n", cfg->train.micro_batch,
           cfg->train.seq_len, chm_dtype_name(dt), rc ? ", per-layer recomputation" : "");
    print_memory(&pm, device, dt, rc);
    *fits = device <= 0 || pm.total <= usable;
    if (*fits) {
        if (device > 0) printf("  fits: %.0f%% of the device\n", 100 * pm.total / device);
        return 0;
    }
    suggest(cfg, dt, tg, &pm, device, usable);
    return 0;
}

/* ---- benchmark ------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Random token windows [B, T+1] from the counter-based generator. */
static void random_ids(int32_t *ids, int64_t n, int64_t vocab, uint64_t seed) {
    chm_rng r = chm_rng_keyed(seed, "plan.tokens");
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(chm_rng_u64(&r) % (uint64_t)vocab);
}

/* One optimizer step as the trainer runs it (zero, accum x fwd/bwd, norm, AdamW). */
static chm_status bench_step(chm_model *m, chm_optim *o, const int32_t *ids, int accum, chm_err *err) {
    double norm;
    chm_status rc = chm_model_zero_grad(m, err);
    for (int k = 0; rc == CHM_OK && k < accum; k++)
        rc = chm_model_forward_backward(m, ids, 1.0 / accum, NULL, err);
    if (rc == CHM_OK) rc = chm_optim_grad_norm(o, &norm, err);
    if (rc == CHM_OK) rc = chm_optim_step(o, 1e-4, chm_optim_clip_factor(norm, 1.0), err);
    return rc;
}

/* Median seconds per optimizer step of cfg in dtype dt on be, after two warm-up steps. */
static chm_status bench_run(const chm_config *cfg, chm_backend *be, chm_dtype dt, int steps,
                            double *median_s, chm_err *err) {
    const chm_config_train *tc = &cfg->train;
    chm_model_options mo = {.dtype = dt, .batch = tc->micro_batch, .seq_len = tc->seq_len,
                            .recompute = tc->recompute};
    chm_model *m = NULL;
    chm_optim *o = NULL;
    int64_t n = (int64_t)tc->micro_batch * (tc->seq_len + 1);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    double times[PLAN_MAX_STEPS];
    bool tty = isatty(2);
    if (!ids) return CHM_ERR(err, CHM_ERR_NOMEM, "plan: no memory for %lld token ids", (long long)n);
    random_ids(ids, n, cfg->model.vocab, (uint64_t)tc->seed);
    chm_status rc = chm_model_create(&cfg->model, be, &mo, &m, err);
    if (rc == CHM_OK) rc = chm_model_init_params(m, (uint64_t)tc->seed, err);
    if (rc == CHM_OK) rc = chm_optim_create(m, tc, NULL, &o, err);
    for (int s = 0; rc == CHM_OK && s < steps; s++) {
        double t0 = now_s();
        rc = bench_step(m, o, ids, tc->grad_accum, err);
        times[s] = now_s() - t0;  /* grad_norm downloads: the step has finished on the device */
        if (s == 1) chm_profile_restart(be); /* profile the timed steps only */
        if (tty) fprintf(stderr, "\r  step %d/%d: %.3f s", s + 1, steps, times[s]);
    }
    if (tty) fprintf(stderr, "\r%40s\r", "");
    chm_optim_free(o);
    chm_model_free(m);
    free(ids);
    if (rc) return rc;
    qsort(times + 2, (size_t)steps - 2, sizeof *times, cmp_double);
    *median_s = times[2 + (steps - 2) / 2];
    return CHM_OK;
}

/* "3 days 4 hours", "5.2 hours", "12 minutes". */
static void format_duration(double s, char *out, size_t n) {
    if (s >= 86400 * 2) snprintf(out, n, "%.0f days %.0f hours", floor(s / 86400), fmod(s, 86400) / 3600);
    else if (s >= 3600) snprintf(out, n, "%.1f hours", s / 3600);
    else if (s >= 60) snprintf(out, n, "%.1f minutes", s / 60);
    else snprintf(out, n, "%.1f seconds", s);
}

/* One benchmark line: tokens/s, MFU when the peak is known, time of the budget. */
static void print_speed(const char *label, const chm_config *cfg, double step_s, double tokens,
                        double flops_token, double peak_tflops) {
    double tps = (double)cfg->train.tokens_per_step / step_s;
    char eta[64];
    format_duration(tokens / tps, eta, sizeof eta);
    printf("  %-30s %10.0f tokens/s  %7.3f s/step", label, tps, step_s);
    if (peak_tflops > 0) printf("  MFU %5.1f%%", 100 * tps * flops_token / (peak_tflops * 1e12));
    printf("  %.3g tokens: %s\n", tokens, eta);
}

/* Benchmark dt and, where one exists, the run without the fast path. */
static int bench_section(const chm_config *cfg, chm_backend *be, const plan_args *a, chm_dtype dt,
                         double tokens) {
    chm_err err = {0};
    chm_model_stats st;
    if (chm_model_stats_compute(&cfg->model, cfg->train.seq_len, &st, &err)) memset(&st, 0, sizeof st);
    printf("\nbenchmark on %s (%s), %d steps of micro batch %d x %d x grad_accum %d:\n", be->name,
           be->device, a->steps, cfg->train.micro_batch, cfg->train.seq_len, cfg->train.grad_accum);
    chm_dtype variants[2] = {dt, CHM_F32};
    plan_target tg = plan_target_of(be, be->name);
    /* With --profile only the fast path runs, so that the table is of one configuration. */
    int nv = dt == CHM_F32 || be->profile ? 1 : 2, code = 0;
    for (int i = 0; i < nv; i++) {
        double s = 0;
        chm_device_peak peak;
        plan_memory pm;
        double usable = device_bytes(a, be) * PLAN_USABLE;
        if (i > 0 && usable > 0 &&
            plan_memory_of(cfg, cfg->train.micro_batch, variants[i], &tg,
                           cfg->train.recompute, &pm, &err) == CHM_OK &&
            pm.total > usable) {
            char b[32];
            printf("  %-30s does not fit at this micro batch (%s): not measured\n",
                   "f32 (without the fast path)", size_str(pm.total, b, sizeof b));
            continue;
        }
        chm_device_peak_find(be, variants[i], &peak);
        if (bench_run(cfg, be, variants[i], a->steps, &s, &err)) {
            printf("  %-30s failed: %s\n", chm_dtype_name(variants[i]), err.msg);
            code = 1;
            continue;
        }
        char label[64];
        bool cuda = !strcmp(be->name, "cuda");
        snprintf(label, sizeof label, "%s%s", chm_dtype_name(variants[i]),
                 i > 0 ? " (without the fast path)"
                 : nv == 1                         ? ""
                 : cuda                            ? " (tensor cores)"
                 : (be->caps & CHM_CAP_FAST_BF16) ? " (cooperative matrices)"
                                                   : " (16-bit storage)");
        print_speed(label, cfg, s, tokens, st.flops_train, peak.tflops);
        if (peak.tflops > 0) printf("  %-30s (MFU of %.1f TFLOP/s: %s)\n", "", peak.tflops, peak.source);
    }
    return code;
}

/* ---- the command ------------------------------------------------------------------------ */

static int run(plan_args *a) {
    chm_config cfg;
    chm_err err = {0};
    if (chm_config_load(a->config, a->sets, a->n_sets, &cfg, &err)) {
        chm_cli_error(err.msg, "see configs/test.yaml for every key");
        return 2;
    }
    const char *name = a->backend ? a->backend : chm_config_backend_name(cfg.backend);
    chm_backend *be = NULL;
    if (chm_train_backend_open(name, 0, true, &be, &err)) {
        /* Still plan the memory of the named backend (a config for another machine). */
        if (!strcmp(name, "auto")) {
            chm_cli_error(err.msg, "`chimera info` lists the backends and devices");
            chm_config_free(&cfg);
            return 2;
        }
        fprintf(stderr, "chimera plan: %s; planning memory only%s\n", err.msg,
                a->memory_gib > 0 ? "" : " (pass --memory-gib for the device's size)");
        be = NULL;
    }
    const char *be_name = be ? be->name : name;
    chm_dtype dt = plan_dtype(&cfg, be, be_name);
    double tokens = a->tokens > 0 ? a->tokens : (double)cfg.train.tokens_per_step * (double)cfg.train.total_steps;
    printf("plan: %s on %s (%s), %s, %.3g tokens\n", a->config ? a->config : "test", be_name,
           be ? be->device : "not on this machine",
           dt == CHM_F32 ? "f32" : "bf16 mixed precision (fp32 master)", tokens);
    bool fits = false;
    plan_target tg = plan_target_of(be, be_name);
    int code = memory_section(&cfg, be, &tg, a, dt, &fits);
    if (code == 0 && !fits) code = 1;
    if (code == 0 && a->bench && be) code = bench_section(&cfg, be, a, dt, tokens);
    else if (code == 0) printf("\n(no benchmark: %s)\n", be ? "--no-bench" : "backend not available here");
    if (be) chm_backend_close(be);
    chm_config_free(&cfg);
    return code;
}

int chm_cmd_plan(int argc, char **argv) {
    plan_args a = {.steps = 6, .bench = true};
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    if (!a.sets) {
        chm_cli_error("out of memory", NULL);
        return 1;
    }
    int code = 0;
    for (int i = 1; i < argc && !code; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            plan_usage(stdout);
            free(a.sets);
            return 0;
        }
        code = parse_one(&a, argc, argv, &i);
    }
    if (!code) code = run(&a);
    free(a.sets);
    return code;
}
