/*
 * info.c: `chimera info [--json] [--help]`: what this binary is and what it
 * can run on. Gathers the facts once (build options, backends and their op
 * coverage, Vulkan and CUDA devices, the choice of `auto`), then prints them
 * as short aligned sections or as one JSON object.
 *
 * JSON keys (`--json`; sizes in bytes, absent facts are null):
 *   version               string, e.g. "0.1.0"
 *   build                 object:
 *     compiler            string, e.g. "GNU 12.2.0"
 *     build_type          string, e.g. "RelWithDebInfo"
 *     sanitizers          bool, built with ASan + UBSan
 *     vulkan, cuda        bool, backend compiled in (CHIMERA_HAVE_VULKAN / _CUDA)
 *     cuda_archs          string, e.g. "80,86,89,90"; "" without CUDA
 *     nvcc                string, nvcc version; "" without CUDA
 *     glslc_coopmat_nv    bool, glslc compiles GL_NV_cooperative_matrix shaders
 *     glslc_coopmat_khr   bool, glslc compiles GL_KHR_cooperative_matrix shaders
 *   backends              array of objects, registry order:
 *     name                string: "cuda", "vulkan", "cpu"
 *     compiled            bool, built into this binary
 *     implemented         bool, has an op table (not only a device probe)
 *     ops, ops_total      int (null when not opened) and int: coverage n/N
 *     missing_ops         array of op names (null when not opened)
 *     error               string when an implemented backend failed to open, else null
 *   vulkan                object:
 *     compiled            bool
 *     loader              string, Vulkan loader version ("" when not compiled)
 *     device_override     string, CHIMERA_VULKAN_DEVICE when set, else null
 *     best                int, index `auto` would use, or null
 *     why                 string, why there is no usable device, or null
 *     devices             array of objects:
 *       index, name, type ("discrete", "integrated", "virtual", "cpu", "other"),
 *       vendor_id, device_id (int), api_version ("1.3.230"), driver (string),
 *       subgroup_size (int), subgroup_arithmetic (bool), shared_memory (int),
 *       device_memory (int), shader_f16, storage_16bit, shader_bf16,
 *       coopmat_khr, coopmat_nv, coopmat2_nv (bool)
 *   cuda                  object:
 *     compiled            bool
 *     driver_version      int, e.g. 13000; 0 without a driver
 *     runtime_version     int
 *     why                 string, why there is no device, or null
 *     devices             array of objects:
 *       index, name, compute_capability ("9.0"), memory (int), sm_count (int),
 *       supported (bool, sm_80+), flash_attention, selective_scan (bool: our
 *       sm_80+ kernels apply), hopper_path (bool: the sm_90a path applies)
 *   auto                  object:
 *     backend             string, the backend `auto` opened, or null on failure
 *     device              string, its device name, or null
 *     why                 string, its one-line reason ("auto: ..."), or null
 *     error               string when opening failed, else null
 */
#include "commands.h"
#include "chimera/backend.h"
#include "chimera/device.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Build facts come from CMake (the "---- summary" section); these defaults keep other builds working. */
#ifndef CHIMERA_BUILD_COMPILER
#define CHIMERA_BUILD_COMPILER "unknown"
#endif
#ifndef CHIMERA_BUILD_TYPE
#define CHIMERA_BUILD_TYPE "unknown"
#endif
#ifndef CHIMERA_BUILD_SANITIZE
#define CHIMERA_BUILD_SANITIZE 0
#endif
#ifndef CHIMERA_BUILD_CUDA_ARCHS
#define CHIMERA_BUILD_CUDA_ARCHS ""
#endif
#ifndef CHIMERA_BUILD_NVCC
#define CHIMERA_BUILD_NVCC ""
#endif
#ifndef CHIMERA_GLSLC_COOPMAT_NV
#define CHIMERA_GLSLC_COOPMAT_NV 0
#endif
#ifndef CHIMERA_GLSLC_COOPMAT_KHR
#define CHIMERA_GLSLC_COOPMAT_KHR 0
#endif

/* One registry backend and, when it could be opened, which ops it has. */
typedef struct backend_fact {
    const chm_backend_info *info;
    bool opened;
    bool *has;           /* [chm_backend_op_count()] when opened */
    int n_has;
    char error[1024];    /* why an implemented backend did not open */
} backend_fact;

/* Everything `chimera info` reports, gathered before printing. */
typedef struct info_facts {
    chm_vulkan_probe vk;
    chm_cuda_probe cu;
    int vk_best;
    int n_backends;
    backend_fact *be;    /* [n_backends] */
    bool auto_ok;
    char auto_name[16], auto_device[128], auto_why[256], auto_error[1024];
} info_facts;

/* ---- gathering ---------------------------------------------------------- */

/* Open an implemented backend by name to read its op coverage. */
static void gather_backend(backend_fact *f) {
    if (!f->info->compiled || !f->info->implemented) return;
    chm_err err = {0};
    chm_backend *be = NULL;
    if (chm_backend_open(f->info->name, NULL, &be, &err) != CHM_OK) {
        snprintf(f->error, sizeof f->error, "%s", err.msg);
        return;
    }
    int n = chm_backend_op_count();
    f->has = calloc((size_t)n, sizeof *f->has);
    if (f->has) {
        f->opened = true;
        for (int i = 0; i < n; i++)
            if ((f->has[i] = chm_backend_has_op(be, i))) f->n_has++;
    } else {
        snprintf(f->error, sizeof f->error, "out of memory");
    }
    chm_backend_close(be);
}

static void gather_auto(info_facts *f) {
    chm_err err = {0};
    chm_backend *be = NULL;
    if (chm_backend_open("auto", NULL, &be, &err) != CHM_OK) {
        snprintf(f->auto_error, sizeof f->auto_error, "%s", err.msg);
        return;
    }
    f->auto_ok = true;
    snprintf(f->auto_name, sizeof f->auto_name, "%s", be->name);
    snprintf(f->auto_device, sizeof f->auto_device, "%s", be->device);
    snprintf(f->auto_why, sizeof f->auto_why, "%s", be->why);
    chm_backend_close(be);
}

/* Fill f; returns false only when host memory runs out. */
static bool gather(info_facts *f) {
    chm_vulkan_probe_run(&f->vk);
    f->vk_best = chm_vulkan_probe_best(&f->vk);
    chm_cuda_probe_run(&f->cu);
    f->n_backends = chm_backend_count();
    f->be = calloc((size_t)f->n_backends, sizeof *f->be);
    if (!f->be) return false;
    for (int i = 0; i < f->n_backends; i++) {
        f->be[i].info = chm_backend_get_info(i);
        gather_backend(&f->be[i]);
    }
    gather_auto(f);
    return true;
}

static void facts_free(info_facts *f) {
    for (int i = 0; f->be && i < f->n_backends; i++) free(f->be[i].has);
    free(f->be);
}

/* Whether the named backend has an op table (its kernels exist). */
static bool implemented(const char *name) {
    for (int i = 0; i < chm_backend_count(); i++)
        if (strcmp(chm_backend_get_info(i)->name, name) == 0)
            return chm_backend_get_info(i)->implemented;
    return false;
}

/* ---- human output --------------------------------------------------------- */

static const char *yn(bool b) { return b ? "yes" : "no"; }

/* "32 KiB", "31.3 GiB": sizes for people. */
static const char *fmt_bytes(uint64_t b, char *buf, size_t n) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 4) v /= 1024.0, u++;
    if (u == 0 || v == (double)(uint64_t)v) snprintf(buf, n, "%.0f %s", v, unit[u]);
    else snprintf(buf, n, "%.1f %s", v, unit[u]);
    return buf;
}

static void print_build(void) {
    printf("build\n");
    printf("  %-12s %s (%s, sanitizers %s)\n", "compiler", CHIMERA_BUILD_COMPILER,
           CHIMERA_BUILD_TYPE, CHIMERA_BUILD_SANITIZE ? "address+undefined" : "off");
#ifdef CHIMERA_HAVE_VULKAN
    printf("  %-12s built (glslc cooperative matrix: NV %s, KHR %s)\n", "vulkan",
           yn(CHIMERA_GLSLC_COOPMAT_NV), yn(CHIMERA_GLSLC_COOPMAT_KHR));
#else
    printf("  %-12s not built\n", "vulkan");
#endif
#ifdef CHIMERA_HAVE_CUDA
    printf("  %-12s built (nvcc %s, archs %s)\n", "cuda", CHIMERA_BUILD_NVCC,
           CHIMERA_BUILD_CUDA_ARCHS);
#else
    printf("  %-12s not built\n", "cuda");
#endif
}

/* Op coverage and the names of missing ops, on one line. */
static void print_coverage(const backend_fact *f) {
    int n = chm_backend_op_count();
    printf("ready, %d/%d ops", f->n_has, n);
    const char *sep = " (missing: ";
    for (int i = 0; i < n; i++)
        if (!f->has[i]) printf("%s%s", sep, chm_backend_op_name(i)), sep = ", ";
    printf("%s\n", f->n_has < n ? ")" : "");
}

static void print_backends(const info_facts *f) {
    printf("\nbackends\n");
    for (int i = 0; i < f->n_backends; i++) {
        const backend_fact *b = &f->be[i];
        printf("  %-12s ", b->info->name);
        if (!b->info->compiled) printf("not built\n");
        else if (!b->info->implemented) printf("built: device probe only, ops not written yet\n");
        else if (!b->opened) printf("cannot open: %s\n", b->error);
        else print_coverage(b);
    }
}

static void print_vk_device(int i, const chm_vulkan_device *d, bool best) {
    char mem[32], shm[32];
    printf("  [%d] %s%s\n", i, d->name, best ? "   <- vulkan would use this one" : "");
    printf("      %-12s %s, vendor 0x%04x, device 0x%04x, Vulkan %u.%u.%u\n", "type", d->type,
           d->vendor_id, d->device_id, d->api_major, d->api_minor, d->api_patch);
    printf("      %-12s %s\n", "driver", d->driver);
    printf("      %-12s subgroup %u (arithmetic %s), shared memory %s, device memory %s\n",
           "compute", d->subgroup_size, yn(d->subgroup_arith),
           fmt_bytes(d->shared_memory, shm, sizeof shm), fmt_bytes(d->device_memory, mem, sizeof mem));
    printf("      %-12s shaderFloat16 %s, storageBuffer16BitAccess %s, bfloat16 %s\n", "16-bit",
           yn(d->shader_f16), yn(d->storage_16bit), yn(d->shader_bf16));
    printf("      %-12s KHR %s, NV %s, NV2 %s\n", "coopmat", yn(d->coopmat_khr),
           yn(d->coopmat_nv), yn(d->coopmat2_nv));
}

static void print_vulkan(const info_facts *f) {
    const chm_vulkan_probe *p = &f->vk;
    if (p->compiled) printf("\nvulkan devices (loader %s)\n", p->loader);
    else printf("\nvulkan devices\n");
    const char *ov = getenv("CHIMERA_VULKAN_DEVICE");
    if (ov && *ov && p->count > 0) printf("  CHIMERA_VULKAN_DEVICE=%s\n", ov);
    for (int i = 0; i < p->count; i++) print_vk_device(i, &p->dev[i], i == f->vk_best);
    if (p->count == 0) printf("  none: %s\n", p->why);
    else if (f->vk_best < 0) printf("  none usable: %s\n", p->why);
}

static void print_cuda_device(int i, const chm_cuda_device *d, bool planned) {
    char mem[32];
    printf("  [%d] %s\n", i, d->name);
    printf("      %-12s sm_%d%d, %d SMs, %s%s\n", "device", d->cc_major, d->cc_minor, d->sm_count,
           fmt_bytes(d->memory, mem, sizeof mem),
           d->supported ? "" : " (older than Ampere sm_80: cuda backend unsupported)");
    printf("      %-12s flash-attention %s, selective-scan %s, Hopper sm_90a path %s%s\n",
           "kernels", yn(d->flash_attention), yn(d->selective_scan), yn(d->hopper_path),
           planned ? " (planned: not yet implemented)" : "");
}

static void print_cuda(const info_facts *f) {
    const chm_cuda_probe *p = &f->cu;
    char drv[32] = "none";
    if (p->driver_version)
        snprintf(drv, sizeof drv, "CUDA %d.%d", p->driver_version / 1000,
                 p->driver_version % 1000 / 10);
    if (p->compiled)
        printf("\ncuda devices (driver %s, runtime CUDA %d.%d)\n", drv,
               p->runtime_version / 1000, p->runtime_version % 1000 / 10);
    else printf("\ncuda devices\n");
    bool planned = !implemented("cuda");
    for (int i = 0; i < p->count; i++) print_cuda_device(i, &p->dev[i], planned);
    if (p->count == 0) printf("  none: %s\n", p->why);
}

static void print_human(const info_facts *f) {
    printf("chimera %s\n\n", CHIMERA_VERSION);
    print_build();
    print_backends(f);
    print_vulkan(f);
    print_cuda(f);
    if (f->auto_ok) printf("\n%s\n", f->auto_why);
    else printf("\nauto: cannot open any backend: %s\n", f->auto_error);
}

/* ---- JSON output ------------------------------------------------------------ */

/* A JSON string, or null for NULL; text that is not UTF-8 is replaced, never dropped. */
static json_t *jstr(const char *s) {
    if (!s) return json_null();
    json_t *j = json_string(s);
    return j ? j : json_string("(not valid UTF-8)");
}

static json_t *json_build(void) {
    return json_pack("{s:s, s:s, s:b, s:b, s:b, s:s, s:s, s:b, s:b}",
                     "compiler", CHIMERA_BUILD_COMPILER, "build_type", CHIMERA_BUILD_TYPE,
                     "sanitizers", CHIMERA_BUILD_SANITIZE,
#ifdef CHIMERA_HAVE_VULKAN
                     "vulkan", 1,
#else
                     "vulkan", 0,
#endif
#ifdef CHIMERA_HAVE_CUDA
                     "cuda", 1,
#else
                     "cuda", 0,
#endif
                     "cuda_archs", CHIMERA_BUILD_CUDA_ARCHS, "nvcc", CHIMERA_BUILD_NVCC,
                     "glslc_coopmat_nv", CHIMERA_GLSLC_COOPMAT_NV,
                     "glslc_coopmat_khr", CHIMERA_GLSLC_COOPMAT_KHR);
}

static json_t *json_backend(const backend_fact *b) {
    json_t *o = json_pack("{s:s, s:b, s:b}", "name", b->info->name, "compiled",
                          b->info->compiled, "implemented", b->info->implemented);
    json_t *missing = json_null();
    if (b->opened) {
        missing = json_array();
        for (int i = 0; i < chm_backend_op_count(); i++)
            if (!b->has[i]) json_array_append_new(missing, json_string(chm_backend_op_name(i)));
    }
    json_object_set_new(o, "ops", b->opened ? json_integer(b->n_has) : json_null());
    json_object_set_new(o, "ops_total", json_integer(chm_backend_op_count()));
    json_object_set_new(o, "missing_ops", missing);
    json_object_set_new(o, "error", b->error[0] ? jstr(b->error) : json_null());
    return o;
}

static json_t *json_vk_device(int i, const chm_vulkan_device *d) {
    char api[32];
    snprintf(api, sizeof api, "%u.%u.%u", d->api_major, d->api_minor, d->api_patch);
    return json_pack("{s:i, s:o, s:s, s:I, s:I, s:s, s:o,"
                     " s:I, s:b, s:I, s:I,"
                     " s:b, s:b, s:b, s:b, s:b, s:b}",
                     "index", i, "name", jstr(d->name), "type", d->type,
                     "vendor_id", (json_int_t)d->vendor_id, "device_id", (json_int_t)d->device_id,
                     "api_version", api, "driver", jstr(d->driver),
                     "subgroup_size", (json_int_t)d->subgroup_size,
                     "subgroup_arithmetic", d->subgroup_arith,
                     "shared_memory", (json_int_t)d->shared_memory,
                     "device_memory", (json_int_t)d->device_memory,
                     "shader_f16", d->shader_f16, "storage_16bit", d->storage_16bit,
                     "shader_bf16", d->shader_bf16, "coopmat_khr", d->coopmat_khr,
                     "coopmat_nv", d->coopmat_nv, "coopmat2_nv", d->coopmat2_nv);
}

static json_t *json_vulkan(const info_facts *f) {
    const chm_vulkan_probe *p = &f->vk;
    const char *ov = getenv("CHIMERA_VULKAN_DEVICE");
    json_t *devs = json_array();
    for (int i = 0; i < p->count; i++) json_array_append_new(devs, json_vk_device(i, &p->dev[i]));
    return json_pack("{s:b, s:s, s:o, s:o, s:o, s:o}", "compiled", p->compiled, "loader",
                     p->loader, "device_override", (ov && *ov) ? jstr(ov) : json_null(), "best",
                     f->vk_best >= 0 ? json_integer(f->vk_best) : json_null(), "why",
                     (f->vk_best < 0 && p->why[0]) ? jstr(p->why) : json_null(), "devices", devs);
}

static json_t *json_cuda_device(int i, const chm_cuda_device *d) {
    char cc[16];
    snprintf(cc, sizeof cc, "%d.%d", d->cc_major, d->cc_minor);
    return json_pack("{s:i, s:o, s:s, s:I, s:i, s:b, s:b, s:b, s:b}", "index", i, "name",
                     jstr(d->name), "compute_capability", cc, "memory", (json_int_t)d->memory,
                     "sm_count", d->sm_count, "supported", d->supported, "flash_attention",
                     d->flash_attention, "selective_scan", d->selective_scan, "hopper_path",
                     d->hopper_path);
}

static json_t *json_cuda(const chm_cuda_probe *p) {
    json_t *devs = json_array();
    for (int i = 0; i < p->count; i++) json_array_append_new(devs, json_cuda_device(i, &p->dev[i]));
    return json_pack("{s:b, s:i, s:i, s:o, s:o}", "compiled", p->compiled, "driver_version",
                     p->driver_version, "runtime_version", p->runtime_version, "why",
                     (p->count == 0 && p->why[0]) ? jstr(p->why) : json_null(), "devices", devs);
}

static json_t *json_auto(const info_facts *f) {
    if (!f->auto_ok)
        return json_pack("{s:n, s:n, s:n, s:o}", "backend", "device", "why", "error",
                         jstr(f->auto_error));
    return json_pack("{s:s, s:o, s:o, s:n}", "backend", f->auto_name, "device",
                     jstr(f->auto_device), "why", jstr(f->auto_why), "error");
}

/* Print the JSON object; false if it could not be built (out of memory). */
static bool print_json(const info_facts *f) {
    json_t *backends = json_array();
    for (int i = 0; i < f->n_backends; i++) json_array_append_new(backends, json_backend(&f->be[i]));
    json_t *root = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o}", "version", CHIMERA_VERSION,
                             "build", json_build(), "backends", backends, "vulkan",
                             json_vulkan(f), "cuda", json_cuda(&f->cu), "auto", json_auto(f));
    char *s = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (s) printf("%s\n", s);
    free(s);
    json_decref(root);
    return s != NULL;
}

/* ---- the command -------------------------------------------------------------- */

static void usage(FILE *out) {
    fprintf(out, "usage: chimera info [--json]\n\n"
                 "Print the version, build options, backends with their op coverage, the Vulkan\n"
                 "and CUDA devices of this machine, and which backend `auto` picks and why.\n\n"
                 "  --json   the same facts as one JSON object (keys listed in src/cli/info.c)\n"
                 "  --help   this text\n\n"
                 "CHIMERA_VULKAN_DEVICE=N makes `auto` use Vulkan device N.\n");
}

int chm_cmd_info(int argc, char **argv) {
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown option '%.200s' for `chimera info`", argv[i]);
            chm_cli_error(msg, "run `chimera info --help` for its options");
            return 2;
        }
    }
    info_facts *f = calloc(1, sizeof *f);
    if (!f || !gather(f)) {
        if (f) facts_free(f);
        free(f);
        chm_cli_error("out of memory while gathering device facts", NULL);
        return 1;
    }
    bool ok = true;
    if (json) ok = print_json(f);
    else print_human(f);
    if (!ok) chm_cli_error("could not build the JSON report (out of memory)", NULL);
    int rc = (ok && f->auto_ok) ? 0 : 1;
    facts_free(f);
    free(f);
    return rc;
}
