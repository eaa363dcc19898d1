/*
 * test_info.c: `chimera info` (run as a program, human and --json output) and
 * the device probes behind it (chm_vulkan_probe_run/_best, chm_cuda_probe_run).
 *
 * Tests that depend on the machine (lavapipe installed, validation layer
 * present, an NVIDIA driver) skip with a message instead of failing. Criterion
 * runs each test in its own process, so setenv() here stays inside one test.
 */
#include "testutil.h"
#include "chimera/device.h"

#include <glob.h>
#include <jansson.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

/* Output and exit status of one shell command. */
typedef struct run_result {
    char *out;     /* everything the command wrote to the captured stream(s) */
    int status;    /* exit code, or -1 when it did not exit normally */
} run_result;

/* Run `env CHIMERA_BINARY args redirect` through the shell and capture its stdout. */
static run_result run_chimera(const char *env, const char *args, const char *redirect) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s '%s' %s %s", env, CHIMERA_BINARY, args, redirect);
    FILE *f = popen(cmd, "r");
    cr_assert(f != NULL, "cannot run %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    cr_assert(buf != NULL);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len < 1024) buf = realloc(buf, cap *= 2);
        cr_assert(buf != NULL);
    }
    buf[len] = '\0';
    int st = pclose(f);
    run_result r = {buf, WIFEXITED(st) ? WEXITSTATUS(st) : -1};
    return r;
}

/* `chimera info --json` parsed; fails the test on a bad exit or bad JSON. */
static json_t *info_json(const char *env) {
    run_result r = run_chimera(env, "info --json", "");
    cr_assert_eq(r.status, 0, "info --json exited %d:\n%s", r.status, r.out);
    json_error_t jerr;
    json_t *root = json_loads(r.out, 0, &jerr);
    cr_assert(root != NULL, "not JSON (%s at line %d):\n%s", jerr.text, jerr.line, r.out);
    cr_assert(json_is_object(root));
    free(r.out);
    return root;
}

static bool file_glob_exists(const char *pattern) {
    glob_t g;
    bool found = glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc > 0;
    globfree(&g);
    return found;
}

#define LAVAPIPE_ICD "/usr/share/vulkan/icd.d/lvp_icd*.json"
#define VALIDATION_LAYER "/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json"

/* ---- the program ------------------------------------------------------------ */

Test(info, json_has_version_backends_and_auto) {
    json_t *root = info_json("");
    cr_assert_str_eq(json_string_value(json_object_get(root, "version")), CHIMERA_VERSION);
    json_t *backends = json_object_get(root, "backends");
    cr_assert(json_is_array(backends) && json_array_size(backends) == 3);
    bool cpu_seen = false;
    for (size_t i = 0; i < json_array_size(backends); i++) {
        json_t *b = json_array_get(backends, i);
        if (strcmp(json_string_value(json_object_get(b, "name")), "cpu") != 0) continue;
        cpu_seen = true;
        cr_assert(json_is_true(json_object_get(b, "implemented")));
        cr_assert(json_is_true(json_object_get(b, "compiled")));
        json_int_t ops = json_integer_value(json_object_get(b, "ops"));
        json_int_t total = json_integer_value(json_object_get(b, "ops_total"));
        cr_assert(ops > 0 && ops <= total, "cpu ops %lld/%lld", (long long)ops, (long long)total);
        cr_assert_eq(json_array_size(json_object_get(b, "missing_ops")), (size_t)(total - ops));
    }
    cr_assert(cpu_seen, "no cpu entry in backends");
    json_t *au = json_object_get(root, "auto");
    cr_assert(json_is_string(json_object_get(au, "backend")), "auto.backend missing");
    const char *why = json_string_value(json_object_get(au, "why"));
    cr_assert(why && strncmp(why, "auto: ", 6) == 0, "auto.why: %s", why ? why : "(null)");
    json_decref(root);
}

Test(info, json_build_and_device_sections) {
    json_t *root = info_json("");
    json_t *build = json_object_get(root, "build");
    cr_assert(json_is_string(json_object_get(build, "compiler")));
    json_t *vk = json_object_get(root, "vulkan"), *cu = json_object_get(root, "cuda");
#ifdef CHIMERA_HAVE_VULKAN
    cr_assert(json_is_true(json_object_get(build, "vulkan")));
    cr_assert(json_is_true(json_object_get(vk, "compiled")));
    cr_assert(json_is_array(json_object_get(vk, "devices")), "vulkan.devices is not an array");
#else
    cr_assert(json_is_false(json_object_get(vk, "compiled")));
#endif
    cr_assert(json_is_array(json_object_get(cu, "devices")), "cuda.devices is not an array");
    /* No device means a reason; devices and reasons never both go missing. */
    if (json_array_size(json_object_get(cu, "devices")) == 0)
        cr_assert(json_is_string(json_object_get(cu, "why")));
    json_decref(root);
}

Test(info, lavapipe_is_found_as_a_cpu_device) {
#ifndef CHIMERA_HAVE_VULKAN
    cr_skip_test("built without Vulkan");
#endif
    if (!file_glob_exists(LAVAPIPE_ICD))
        cr_skip_test("lavapipe ICD not installed (%s): apt-get install mesa-vulkan-drivers",
                     LAVAPIPE_ICD);
    json_t *root = info_json("");
    json_t *devs = json_object_get(json_object_get(root, "vulkan"), "devices");
    bool found = false;
    for (size_t i = 0; i < json_array_size(devs); i++) {
        json_t *d = json_array_get(devs, i);
        if (strcmp(json_string_value(json_object_get(d, "type")), "cpu") != 0) continue;
        found = true;
        cr_assert(json_integer_value(json_object_get(d, "subgroup_size")) > 0);
        cr_assert(json_integer_value(json_object_get(d, "shared_memory")) > 0);
        cr_assert(json_is_string(json_object_get(d, "api_version")));
    }
    cr_assert(found, "lavapipe is installed but no Vulkan device of type cpu was reported");
    json_decref(root);
}

Test(info, human_output_has_sections_and_auto_line) {
    run_result r = run_chimera("", "info", "");
    cr_assert_eq(r.status, 0, "info exited %d:\n%s", r.status, r.out);
    cr_assert(strstr(r.out, "auto:") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "\nbackends\n") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "vulkan devices") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "cuda devices") != NULL, "%s", r.out);
    free(r.out);
}

Test(info, help_exits_0) {
    run_result r = run_chimera("", "info --help", "");
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "usage: chimera info") != NULL, "%s", r.out);
    free(r.out);
}

Test(info, unknown_option_exits_2_with_hint) {
    run_result r = run_chimera("", "info --bogus", "2>&1 >/dev/null");
    cr_assert_eq(r.status, 2, "exit %d", r.status);
    cr_assert(strstr(r.out, "unknown option '--bogus'") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "HINT") != NULL, "%s", r.out);
    free(r.out);
}

/* The validation layer prints its messages on stdout: none may appear. */
Test(info, clean_under_the_validation_layer) {
#ifndef CHIMERA_HAVE_VULKAN
    cr_skip_test("built without Vulkan");
#endif
    if (access(VALIDATION_LAYER, R_OK) != 0)
        cr_skip_test("Khronos validation layer not installed: apt-get install "
                     "vulkan-validationlayers");
    run_result r = run_chimera("VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation", "info", "2>&1");
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.out);
    cr_assert(strstr(r.out, "VUID") == NULL && strstr(r.out, "Validation") == NULL, "%s", r.out);
    free(r.out);
}

/* ---- the probes -------------------------------------------------------------- */

Test(info, vulkan_probe_describes_devices) {
    chm_vulkan_probe p;
    chm_vulkan_probe_run(&p);
#ifndef CHIMERA_HAVE_VULKAN
    cr_assert(!p.compiled && p.count == 0 && p.why[0]);
    cr_assert_eq(chm_vulkan_probe_best(&p), -1);
#else
    cr_assert(p.compiled);
    cr_assert(p.loader[0], "no loader version");
    if (file_glob_exists(LAVAPIPE_ICD)) cr_assert(p.count >= 1, "why: %s", p.why);
    if (p.count == 0) cr_assert(p.why[0], "no device and no reason");
    for (int i = 0; i < p.count; i++) {
        const chm_vulkan_device *d = &p.dev[i];
        cr_assert(d->name[0] && d->driver[0]);
        cr_assert(strstr(" discrete integrated virtual cpu other ", d->type) != NULL, "%s", d->type);
        cr_assert(d->api_major >= 1);
        cr_assert(d->shared_memory >= 16384, "Vulkan guarantees 16 KiB, got %u", d->shared_memory);
    }
    int best = chm_vulkan_probe_best(&p);
    cr_assert(p.count == 0 ? best == -1 : (best >= 0 && best < p.count), "best %d", best);
#endif
}

Test(info, vulkan_probe_without_driver_says_why) {
#ifndef CHIMERA_HAVE_VULKAN
    cr_skip_test("built without Vulkan");
#endif
    /* Both the old and the new loader variable: point them at no driver at all. */
    setenv("VK_ICD_FILENAMES", "/nonexistent/chimera_no_icd.json", 1);
    setenv("VK_DRIVER_FILES", "/nonexistent/chimera_no_icd.json", 1);
    chm_vulkan_probe p;
    chm_vulkan_probe_run(&p);
    cr_assert_eq(p.count, 0);
    cr_assert(strstr(p.why, "ICD") != NULL, "why: %s", p.why);
    cr_assert_eq(chm_vulkan_probe_best(&p), -1);
}

/* A hand-made probe result: ranking by type, then lowest index, then the override. */
Test(info, vulkan_best_ranks_types_and_honours_override) {
    unsetenv("CHIMERA_VULKAN_DEVICE");
    static chm_vulkan_probe p;
    memset(&p, 0, sizeof p);
#ifndef CHIMERA_HAVE_VULKAN
    cr_assert_eq(chm_vulkan_probe_best(&p), -1);
    cr_skip_test("built without Vulkan: only the empty probe is checked");
#endif
    const char *types[] = {"cpu", "virtual", "integrated", "discrete", "discrete"};
    p.count = 5;
    for (int i = 0; i < p.count; i++) snprintf(p.dev[i].type, sizeof p.dev[i].type, "%s", types[i]);
    cr_assert_eq(chm_vulkan_probe_best(&p), 3);
    p.count = 3;
    cr_assert_eq(chm_vulkan_probe_best(&p), 2);
    p.count = 2;
    cr_assert_eq(chm_vulkan_probe_best(&p), 1);
    p.count = 0;
    cr_assert_eq(chm_vulkan_probe_best(&p), -1);
    p.count = 5;
    setenv("CHIMERA_VULKAN_DEVICE", "1", 1);
    cr_assert_eq(chm_vulkan_probe_best(&p), 1);
    setenv("CHIMERA_VULKAN_DEVICE", "5", 1);
    cr_assert_eq(chm_vulkan_probe_best(&p), -1, "an index past the end must not fall back");
    setenv("CHIMERA_VULKAN_DEVICE", "1x", 1);
    cr_assert_eq(chm_vulkan_probe_best(&p), -1);
}

Test(info, vulkan_bad_override_is_explained) {
#ifndef CHIMERA_HAVE_VULKAN
    cr_skip_test("built without Vulkan");
#endif
    setenv("CHIMERA_VULKAN_DEVICE", "99", 1);
    chm_vulkan_probe p;
    chm_vulkan_probe_run(&p);
    if (p.count == 0) cr_skip_test("no Vulkan device here: %s", p.why);
    cr_assert_eq(chm_vulkan_probe_best(&p), -1);
    cr_assert(strstr(p.why, "CHIMERA_VULKAN_DEVICE=99") != NULL, "why: %s", p.why);
}

Test(info, cuda_probe_reports_devices_or_why) {
    chm_cuda_probe p;
    chm_cuda_probe_run(&p);
#ifdef CHIMERA_HAVE_CUDA
    cr_assert(p.compiled);
#else
    cr_assert(!p.compiled);
#endif
    /* Without the NVIDIA kernel driver there can be no CUDA device. */
    if (access("/proc/driver/nvidia/version", F_OK) != 0) cr_assert_eq(p.count, 0);
    if (p.count == 0) cr_assert(p.why[0], "no device and no reason");
    for (int i = 0; i < p.count; i++) {
        const chm_cuda_device *d = &p.dev[i];
        cr_assert(d->name[0] && d->cc_major > 0 && d->sm_count > 0 && d->memory > 0);
        cr_assert_eq(d->supported, d->cc_major >= 8);
        cr_assert(!d->hopper_path || (d->cc_major == 9 && d->cc_minor == 0));
    }
}
