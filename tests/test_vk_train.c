/*
 * test_vk_train.c: configs/test.yaml trained 50 steps on vulkan tracks the
 * cpu backend's loss curve (suite vulkan_train).
 *
 * Two trainers start from the same config and seed (the weights are drawn on
 * the host, so both start identical) and step in lockstep; after every
 * optimizer step their losses and gradient norms are compared. Both compute
 * in f32 but sum in different orders (OpenBLAS vs the shaders' tiles, the
 * attention and scan reductions), so the curves differ by rounding only:
 * measured on lavapipe, the losses agree to 3e-7 (relative) for 27 steps.
 * Then a near-tie in a discrete routing decision (MoE top-k and capacity,
 * mixture-of-depths top-k) goes the other way on one side, and from there
 * the curves drift chaotically: up to 3.5e-4 in the loss and 0.9% in the
 * gradient norm by step 50. So the first 10 steps must agree to 1e-5 in
 * the loss and 1e-4 in the gradient norm (f32 rounding; an op that is wrong
 * by more shows here), and every later step to 1e-3 in the loss (about 3x
 * the drift measured) and 3% in the gradient norm. The largest loss
 * difference is printed. The run uses the
 * test config's model and batch unchanged, with 50 steps (the schedule
 * follows: warmup 30, cosine to 50), no evaluation and no checkpoints, and
 * precision f32 (auto would be bf16 on a device with cooperative matrices).
 * Skipped without a Vulkan device; the validation layer must stay silent.
 */
#include <math.h>
#include <stdio.h>

#include "chimera/trainer.h"
#include "train_fixture.h"
#include "vk_harness.h"

#define STEPS 50
/* The corpus cache the trainer tests share (tokenized once). */
#define CORPUS_CACHE "/tmp/chimera-tests-cache/chimera"

/* Open a trainer on backend `name`, or skip the test when vulkan has no device. */
static chm_trainer *open_on(const chm_config *cfg, const char *name, char *dir) {
    chm_trainer_options o = {.out_dir = dir, .backend = name, .quiet = true, .threads = 1,
                             .cache_dir = CORPUS_CACHE, .peak_tflops = 1};
    chm_trainer *t = NULL;
    chm_err err = {0};
    chm_status rc = chm_trainer_open(cfg, &o, &t, &err);
    if (rc == CHM_ERR_UNSUPPORTED && strcmp(name, "vulkan") == 0)
        cr_skip_test("no usable Vulkan device here: %s", err.msg);
    cr_assert_eq(rc, CHM_OK, "%s trainer: %s", name, err.msg);
    return t;
}

/* Steps over which only f32 rounding separates the two runs (no routing decision flips). */
#define EXACT_STEPS 10

/* Allowed relative loss difference after step s (1-based); see the top of the file. */
static double tolerance(int s) { return s <= EXACT_STEPS ? 1e-5 : 1e-3; }

static double rel_diff(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-30); }

/* One step on each trainer; returns the relative loss difference (asserted within tol). */
static double step_both(chm_trainer *cpu, chm_trainer *vk, int s, double *loss_first,
                        double *loss_last) {
    chm_train_step a, b;
    chm_err err = {0};
    cr_assert_eq(chm_trainer_step(cpu, &a, &err), CHM_OK, "cpu step %d: %s", s, err.msg);
    cr_assert_eq(chm_trainer_step(vk, &b, &err), CHM_OK, "vulkan step %d: %s", s, err.msg);
    cr_assert(!a.skipped && !b.skipped, "step %d was skipped (cpu %d, vulkan %d)", s,
              a.skipped, b.skipped);
    double d = rel_diff(b.loss.total, a.loss.total), tol = tolerance(s);
    cr_assert(d <= tol, "step %d: vulkan loss %.9g, cpu %.9g: relative difference %.3g > %.3g",
              s, b.loss.total, a.loss.total, d, tol);
    double dn = rel_diff(b.grad_norm, a.grad_norm);
    cr_assert(dn <= (s <= EXACT_STEPS ? 1e-4 : 0.03),
              "step %d: vulkan grad norm %.9g, cpu %.9g (relative %.3g)", s,
              b.grad_norm, a.grad_norm, dn);
    if (s == 1) *loss_first = b.loss.total;
    *loss_last = b.loss.total;
    return d;
}

Test(vulkan_train, test_config_tracks_cpu_for_50_steps) {
    use_test_cache(); /* the pipeline cache goes to the build folder */
    chm_config cfg;
    chm_err err = {0};
    /* f32 on both sides: precision auto trains in bf16 where vulkan has cooperative matrices
     * (an H100: step 1's gradient norm then differs by 5e-4, past the f32 bound) */
    const char *sets[] = {"train.steps=50", "train.eval_every=0", "train.save_every=0",
                          "precision=f32"};
    cr_assert_eq(chm_config_load_builtin("test", sets, 4, &cfg, &err), CHM_OK, "%s", err.msg);
    char *dc = make_tmpdir_named("chm-vktrain-cpu-"), *dv = make_tmpdir_named("chm-vktrain-vk-");
    chm_trainer *vk = open_on(&cfg, "vulkan", dv);
    chm_trainer *cpu = open_on(&cfg, "cpu", dc);
    double worst = 0, first = 0, last = 0;
    int worst_step = 0;
    for (int s = 1; s <= STEPS; s++) {
        double d = step_both(cpu, vk, s, &first, &last);
        if (d >= worst) worst = d, worst_step = s;
    }
    fprintf(stderr, "vulkan_train: %d steps of test.yaml, loss %.4f -> %.4f; largest relative "
                    "loss difference to cpu %.3g (step %d)\n", STEPS, first, last, worst,
            worst_step);
    cr_assert(last < first - 1.0, "the loss falls (%g -> %g)", first, last);
    chm_trainer_close(cpu);
    chm_trainer_close(vk);
    cr_assert_eq(chm_vulkan_validation_messages(), 0,
                 "the validation layer reported %llu messages (printed on stderr)",
                 (unsigned long long)chm_vulkan_validation_messages());
    chm_config_free(&cfg);
    remove_tmpdir(dc);
    remove_tmpdir(dv);
}
