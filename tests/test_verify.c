/*
 * test_verify.c: `chimera verify` (chimera/verify.h): the op phase passes
 * for the cpu and for vulkan (lavapipe; skipped without a Vulkan device)
 * against the f64 reference; a fault injected into one op of one backend
 * (CHIMERA_DEBUG_FAULT, debug only) fails exactly that op while the others
 * pass, and every op can be faulted and caught; the op list covers every
 * compute op of backend.h; the model phases (step, trajectory, checkpoint
 * crossing) are exact for cpu against cpu and agree between cpu and vulkan;
 * the CLI's exit codes (0, 1, 2), its --json report and its messages for a
 * bad --ops or --backends.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "chimera/verify.h"
#include "testutil.h"
#include "train_fixture.h"
#ifdef CHIMERA_HAVE_VULKAN
#include "backend/vulkan/vulkan_backend.h"
#endif

#define TEST_CACHE_HOME "/tmp/chimera-tests-cache"
#define TEST_CACHE TEST_CACHE_HOME "/chimera"

/* A subset of ops that keeps the vulkan runs short but touches every kind of op. */
#define VK_OPS "matmul,rmsnorm_fwd,rmsnorm_bwd,attention_fwd,attention_bwd,selective_scan_fwd," \
               "router_topk,select_topk,cross_entropy,moe_aux,cast"

/* Whether the vulkan backend opens here (lavapipe in CI). */
static bool have_vulkan(void) {
    chm_backend *be = NULL;
    chm_err err = {0};
    chm_backend_options o = {.device_index = -1, .quiet = true};
    if (chm_backend_open("vulkan", &o, &be, &err) != CHM_OK) return false;
    chm_backend_close(be);
    return true;
}

/* The on-disk pipeline cache in /tmp, not in $HOME (as the vulkan suites keep theirs out). */
static void use_test_cache(void) { setenv("XDG_CACHE_HOME", TEST_CACHE_HOME, 1); }

static chm_verify_report *run_verify(const char *backends, const char *ops, bool no_model) {
    chm_verify_options o = {.backends = backends, .ops = ops, .no_model = no_model,
                            .threads = 1, .cache_dir = TEST_CACHE};
    chm_verify_report *r = NULL;
    chm_err err = {0};
    use_test_cache();
    cr_assert_eq(chm_verify_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    return r;
}

/* Every op row passed, and the report has one row per op and backend. */
static void expect_all_pass(const chm_verify_report *r, int ops) {
    for (int i = 0; i < r->n_rows; i++)
        cr_expect_eq(r->rows[i].result, CHM_VERIFY_PASS, "%s on %s: %s", r->rows[i].op,
                     r->rows[i].backend, r->rows[i].note);
    int nb = 0;
    for (int b = 0; b < r->n_backends; b++) nb += r->backends[b].available;
    cr_assert_eq(r->n_rows, ops * nb);
    cr_assert(chm_verify_passed(r));
}

static void expect_no_validation_messages(void) {
#ifdef CHIMERA_HAVE_VULKAN
    cr_assert_eq(chm_vulkan_validation_messages(), 0,
                 "the validation layer reported %llu messages (printed on stderr)",
                 (unsigned long long)chm_vulkan_validation_messages());
#endif
}

Test(verify, op_list_covers_every_compute_op) {
    static const char *const not_compute[] = {"buffer_alloc", "buffer_free", "upload", "download",
                                              "sync", "event_create", "event_record",
                                              "event_elapsed_ms", "event_destroy"};
    int compute = 0;
    for (int i = 0; i < chm_backend_op_count(); i++) {
        const char *op = chm_backend_op_name(i);
        bool skip = false;
        for (size_t k = 0; k < sizeof not_compute / sizeof not_compute[0]; k++)
            skip |= !strcmp(op, not_compute[k]);
        if (skip) continue;
        compute++;
        bool found = false;
        for (int j = 0; j < chm_verify_op_count(); j++) found |= !strcmp(chm_verify_op_name(j), op);
        cr_expect(found, "verify does not check %s", op);
    }
    cr_assert_eq(chm_verify_op_count(), compute);
}

Test(verify, ops_cpu_against_the_f64_reference_pass) {
    chm_verify_report *r = run_verify("cpu", NULL, true);
    expect_all_pass(r, chm_verify_op_count());
    cr_assert(r->n_checks > 3 * chm_verify_op_count(), "only %d checks", r->n_checks);
    for (int i = 0; i < r->n_checks; i++) {
        cr_expect_eq(r->checks[i].dtype, CHM_F32);
        cr_expect(r->checks[i].n > 0 || r->checks[i].result != CHM_VERIFY_PASS);
    }
    char v[512];
    chm_verify_verdict(r, v, sizeof v);
    cr_assert(strncmp(v, "verdict: PASS", 13) == 0, "%s", v);
    cr_assert(!r->model_run);
    chm_verify_report_free(r);
}

Test(verify, ops_vulkan_against_the_f64_reference_pass) {
    if (!have_vulkan()) cr_skip_test("no Vulkan device here");
    chm_verify_report *r = run_verify("cpu,vulkan", VK_OPS, true);
    expect_all_pass(r, 11);
    cr_assert_str_eq(r->backends[1].name, "vulkan");
    chm_verify_report_free(r);
    expect_no_validation_messages();
}

/* The backend whose op a fault test perturbs: vulkan when it runs here, else the cpu. */
static const char *faulted_backend(void) { return have_vulkan() ? "vulkan" : "cpu"; }

Test(verify, a_fault_in_one_op_fails_exactly_that_op) {
    const char *be = faulted_backend();
    char spec[64], list[64];
    snprintf(spec, sizeof spec, "%s:rmsnorm_fwd", be);
    snprintf(list, sizeof list, "cpu,%s", be);
    setenv("CHIMERA_DEBUG_FAULT", spec, 1);
    chm_verify_report *r = run_verify(list, "rmsnorm_fwd,rmsnorm_bwd,swiglu_fwd,matmul,select_topk",
                                      true);
    cr_assert(!chm_verify_passed(r));
    int failed = 0;
    for (int i = 0; i < r->n_rows; i++) {
        bool target = !strcmp(r->rows[i].op, "rmsnorm_fwd") && !strcmp(r->rows[i].backend, be);
        cr_expect_eq(r->rows[i].result, target ? CHM_VERIFY_FAIL : CHM_VERIFY_PASS, "%s on %s: %s",
                     r->rows[i].op, r->rows[i].backend, r->rows[i].note);
        failed += r->rows[i].result == CHM_VERIFY_FAIL;
    }
    cr_assert_eq(failed, 1);
    cr_assert_eq(r->failed, 1);
    char v[512];
    chm_verify_verdict(r, v, sizeof v);
    cr_assert(strstr(v, "FAIL") && strstr(v, "rmsnorm_fwd") && strstr(v, be), "%s", v);
    cr_assert(!strstr(v, "rmsnorm_bwd"), "%s", v);
    chm_verify_report_free(r);
    unsetenv("CHIMERA_DEBUG_FAULT");
}

Test(verify, every_op_can_be_faulted_and_is_caught) {
    for (int i = 0; i < chm_verify_op_count(); i++) {
        const char *op = chm_verify_op_name(i);
        char spec[64];
        snprintf(spec, sizeof spec, "cpu:%s", op);
        setenv("CHIMERA_DEBUG_FAULT", spec, 1);
        chm_verify_report *r = run_verify("cpu", op, true);
        cr_assert_eq(r->n_rows, 1);
        cr_expect_eq(r->rows[0].result, CHM_VERIFY_FAIL, "a fault in %s went unnoticed", op);
        chm_verify_report_free(r);
    }
    unsetenv("CHIMERA_DEBUG_FAULT");
}

/* TINY's overrides (train_fixture.h) for the model phases: milliseconds per step. */
static chm_verify_report *run_model(const char *backends, int steps) {
    chm_verify_options o = {.backends = backends, .ops = "none", .steps = steps, .sets = TINY,
                            .n_sets = N_TINY, .threads = 1, .cache_dir = TEST_CACHE};
    chm_verify_report *r = NULL;
    chm_err err = {0};
    use_test_cache();
    cr_assert_eq(chm_verify_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    cr_assert(r->model_run);
    return r;
}

Test(verify, model_phases_of_the_cpu_are_exact) {
    chm_verify_report *r = run_model("cpu", 2);
    cr_assert_eq(r->n_steps, 1);
    cr_assert_eq(r->n_trajs, 1);
    cr_assert_eq(r->n_crosses, 2);
    const chm_verify_step *s = &r->steps[0];
    cr_assert_eq(s->result, CHM_VERIFY_PASS, "%s", s->note);
    /* the cpu backend is deterministic: a second run is bit for bit the first */
    cr_assert_eq(s->loss_rel, 0.0);
    cr_assert_eq(s->grad_rel_l2, 0.0);
    cr_assert(s->routing_same);
    cr_assert(s->n_params > 10 && s->ref_loss.total > 1);
    cr_assert_eq(r->trajs[0].steps, 2);
    cr_assert_eq(r->trajs[0].max_rel, 0.0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(r->crosses[i].result, CHM_VERIFY_PASS, "%s", r->crosses[i].note);
        cr_assert_eq(r->crosses[i].step, 2);
        cr_assert_eq(r->crosses[i].loss_rel, 0.0);
        cr_assert_eq(r->crosses[i].weights_rel_l2, 0.0);
    }
    cr_assert(chm_verify_passed(r));
    chm_verify_report_free(r);
}

Test(verify, checkpoint_crossing_between_cpu_and_vulkan_agrees) {
    if (!have_vulkan()) cr_skip_test("no Vulkan device here");
    chm_verify_report *r = run_model("vulkan", 1);
    cr_assert_eq(r->n_steps, 1);
    cr_assert_str_eq(r->steps[0].backend, "vulkan");
    cr_assert_eq(r->steps[0].result, CHM_VERIFY_PASS, "%s", r->steps[0].note);
    cr_assert_eq(r->trajs[0].result, CHM_VERIFY_PASS, "%s", r->trajs[0].note);
    cr_assert_eq(r->n_crosses, 2);
    cr_assert_str_eq(r->crosses[0].from, "cpu");
    cr_assert_str_eq(r->crosses[0].to, "vulkan");
    cr_assert_str_eq(r->crosses[1].from, "vulkan");
    cr_assert_str_eq(r->crosses[1].to, "cpu");
    for (int i = 0; i < 2; i++) {
        const chm_verify_cross *c = &r->crosses[i];
        cr_assert_eq(c->result, CHM_VERIFY_PASS, "%s -> %s: %s", c->from, c->to, c->note);
        cr_assert(c->loss_rel <= c->limit && c->loss > 1);
    }
    cr_assert(chm_verify_passed(r));
    chm_verify_report_free(r);
    expect_no_validation_messages();
}

/* ---- the command ---- */

/* Run a shell command line; its exit status, stdout+stderr into out. */
static int sh(const char *cmd, char *out, size_t n) {
    char full[2048];
    snprintf(full, sizeof full, "XDG_CACHE_HOME=" TEST_CACHE_HOME " OMP_NUM_THREADS=1 %s 2>&1",
             cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t len = fread(out, 1, n - 1, p);
    out[len] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(verify, cli_exit_codes_and_json_report) {
    static char out[65536];
    char *dir = make_tmpdir_named("chm-verify-"), cmd[1024], json[512];
    snprintf(json, sizeof json, "%s/report.json", dir);
    snprintf(cmd, sizeof cmd, CHIMERA_BINARY " verify --backends cpu --steps 0 --ops add,matmul "
             "--json %s", json);
    cr_assert_eq(sh(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "verdict: PASS"), "%s", out);
    json_error_t je;
    json_t *root = json_load_file(json, 0, &je);
    cr_assert_not_null(root, "%s: %s", json, je.text);
    cr_assert_str_eq(json_string_value(json_object_get(root, "verdict")), "PASS");
    json_t *ops = json_object_get(root, "ops"), *rows = json_object_get(ops, "rows");
    cr_assert_eq(json_array_size(rows), 2);
    json_t *row = json_array_get(rows, 1);
    cr_assert_str_eq(json_string_value(json_object_get(row, "op")), "matmul");
    cr_assert_str_eq(json_string_value(json_object_get(row, "result")), "PASS");
    cr_assert(json_is_number(json_object_get(row, "rel_l2")));
    cr_assert(json_array_size(json_object_get(ops, "checks")) > 5);
    cr_assert(json_is_array(json_object_get(root, "backends")));
    cr_assert(json_is_object(json_object_get(root, "model")));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(root, "totals"), "failed")), 0);
    json_decref(root);
    snprintf(cmd, sizeof cmd, "CHIMERA_DEBUG_FAULT=cpu:add " CHIMERA_BINARY " verify --backends "
             "cpu --steps 0 --ops add,matmul --quiet");
    cr_assert_eq(sh(cmd, out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "verdict: FAIL") && strstr(out, "op add on cpu"), "%s", out);
    cr_assert(!strstr(out, "op matmul"), "%s", out);
    remove_tmpdir(dir);
}

Test(verify, cli_rejects_a_bad_op_or_backend_with_exit_2) {
    static char out[8192];
    cr_assert_eq(sh(CHIMERA_BINARY " verify --ops rmsnorm_fwd,nosuchop", out, sizeof out), 2, "%s",
                 out);
    cr_assert(strstr(out, "nosuchop") && strstr(out, "rmsnorm_bwd") && strstr(out, "moe_aux"),
              "the message should name the bad op and list the valid ones: %s", out);
    cr_assert_eq(sh(CHIMERA_BINARY " verify --backends cpu,tpu", out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "tpu"), "%s", out);
    cr_assert_eq(sh(CHIMERA_BINARY " verify --steps x", out, sizeof out), 2, "%s", out);
    cr_assert_eq(sh(CHIMERA_BINARY " verify --bogus", out, sizeof out), 2, "%s", out);
    cr_assert_eq(sh(CHIMERA_BINARY " verify --list-ops", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "selective_scan_bwd\n"), "%s", out);
#ifndef CHIMERA_HAVE_CUDA
    /* named but not here: an error (exit 2) that says why, not a silent skip */
    cr_assert_eq(sh(CHIMERA_BINARY " verify --backends cpu,cuda --steps 0", out, sizeof out), 2,
                 "%s", out);
    cr_assert(strstr(out, "cuda") && strstr(out, "cannot run here"), "%s", out);
#endif
}

Test(verify, the_bf16_pass_uses_bf16_limits_and_skips_what_is_not_offered) {
    chm_verify_options o = {.backends = have_vulkan() ? "cpu,vulkan" : "cpu",
                            .ops = "matmul,rmsnorm_fwd,cast,adamw_step", .no_model = true,
                            .bf16 = true, .threads = 1};
    chm_verify_report *r = NULL;
    chm_err err = {0};
    use_test_cache();
    cr_assert_eq(chm_verify_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    int lowp = 0;
    for (int i = 0; i < r->n_rows; i++) {
        const chm_verify_op_row *w = &r->rows[i];
        cr_expect_neq(w->result, CHM_VERIFY_FAIL, "%s on %s in %s: %s", w->op, w->backend,
                      chm_dtype_name(w->dtype), w->note);
        if (w->dtype != CHM_BF16) continue;
        lowp++;
        cr_expect(w->limit >= 1e-2 && w->limit <= 2e-2, "%s: limit %g", w->op, w->limit);
    }
    cr_assert(lowp >= 4, "%d bf16 rows", lowp); /* the cpu stores bf16: it takes part */
    for (int i = 0; i < r->n_checks; i++) /* a bf16 product is rounded to 8 bits */
        if (r->checks[i].dtype == CHM_BF16 && !strcmp(r->checks[i].op, "matmul") &&
            r->checks[i].result == CHM_VERIFY_PASS)
            cr_expect(r->checks[i].rel_l2 > 1e-5, "%s %s: bf16 but rel-L2 %g: not rounded?",
                      r->checks[i].op, r->checks[i].what, r->checks[i].rel_l2);
    cr_assert(chm_verify_passed(r));
    chm_verify_report_free(r);
    expect_no_validation_messages();
}
