/*
 * registry.c: the table of backends, opening by name, and `auto` selection.
 *
 * The registry is the one place that knows every backend. It is a constant
 * table: nothing here is mutable at run time. It also reads the debug switch
 * CHIMERA_DEBUG_FAULT into each backend it opens (chm_backend.debug_fault).
 */
#include "chimera/backend.h"
#include "chimera/device.h"
#include "cpu/cpu.h"
#include "profile.h"
#ifdef CHIMERA_HAVE_CUDA
#include "cuda_backend.h"
#endif
#ifdef CHIMERA_HAVE_VULKAN
#include "vulkan/vulkan_backend.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct backend_entry {
    chm_backend_info info;
    chm_status (*open)(const chm_backend_options *opts, chm_backend **out, chm_err *err);
} backend_entry;

#ifdef CHIMERA_HAVE_VULKAN
#define VULKAN_COMPILED true
#else
#define VULKAN_COMPILED false
#endif
#ifdef CHIMERA_HAVE_CUDA
#define CUDA_COMPILED true
#else
#define CUDA_COMPILED false
#endif

static const backend_entry backends[] = {
#ifdef CHIMERA_HAVE_CUDA
    {{"cuda", CUDA_COMPILED, true}, chm_cuda_open},
#else
    {{"cuda", CUDA_COMPILED, false}, NULL},
#endif
#ifdef CHIMERA_HAVE_VULKAN
    {{"vulkan", VULKAN_COMPILED, true}, chm_vulkan_open},
#else
    {{"vulkan", VULKAN_COMPILED, false}, NULL},
#endif
    {{"cpu", true, true}, chm_cpu_open},
};
#define N_BACKENDS ((int)(sizeof backends / sizeof backends[0]))

int chm_backend_count(void) { return N_BACKENDS; }

const chm_backend_info *chm_backend_get_info(int i) {
    return (i >= 0 && i < N_BACKENDS) ? &backends[i].info : NULL;
}

static const backend_entry *find(const char *name) {
    for (int i = 0; i < N_BACKENDS; i++)
        if (strcmp(backends[i].info.name, name) == 0) return &backends[i];
    return NULL;
}

/* Why a GPU backend cannot be used now, in a few words; NULL when it can. */
static const char *gpu_unusable(const backend_entry *e, bool for_auto, char *buf, size_t n) {
    if (!e->info.compiled) {
        snprintf(buf, n, "%s not built into this binary", e->info.name);
        return buf;
    }
    if (strcmp(e->info.name, "cuda") == 0) {
        chm_cuda_probe p;
        chm_cuda_probe_run(&p);
        int ok = -1;
        for (int i = 0; i < p.count; i++)
            if (p.dev[i].supported) { ok = i; break; }
        if (p.count == 0) snprintf(buf, n, "%s", p.why);
        else if (ok < 0)
            snprintf(buf, n, "CUDA GPU %s is sm_%d%d, older than Ampere (sm_80)", p.dev[0].name,
                     p.dev[0].cc_major, p.dev[0].cc_minor);
        else if (!e->open)
            snprintf(buf, n, "CUDA GPU %s found but the cuda backend's ops are not written yet",
                     p.dev[ok].name);
        else return NULL;
        return buf;
    }
    chm_vulkan_probe p;
    chm_vulkan_probe_run(&p);
    int best = chm_vulkan_probe_best(&p);
    if (best < 0) snprintf(buf, n, "%s", p.why);
    else if (for_auto && strcmp(p.dev[best].type, "cpu") == 0)
        snprintf(buf, n, "only %s, a CPU implementation of Vulkan: the cpu backend is faster "
                 "(--backend vulkan uses it anyway)", p.dev[best].name);
    else if (!e->open)
        snprintf(buf, n, "Vulkan device %s found but the vulkan backend's ops are not written yet",
                 p.dev[best].name);
    else return NULL;
    return buf;
}

/*
 * Open a GPU backend for auto: it must open and implement every op, since a
 * training step needs them all. On failure *out is NULL and buf says why.
 */
static chm_backend *open_complete(const backend_entry *e, const chm_backend_options *opts,
                                  char *buf, size_t n) {
    chm_backend *be = NULL;
    chm_err err = {0};
    if (e->open(opts, &be, &err)) {
        snprintf(buf, n, "%s", err.msg);
        return NULL;
    }
    int have = 0, total = chm_backend_op_count();
    for (int i = 0; i < total; i++) have += chm_backend_has_op(be, i);
    if (have == total) return be;
    snprintf(buf, n, "the %s backend implements %d of %d ops so far", e->info.name, have, total);
    chm_backend_close(be);
    return NULL;
}

static chm_status open_auto(const chm_backend_options *opts, chm_backend **out, chm_err *err) {
    char why_cuda[300], why_vk[300];
    if (!gpu_unusable(find("cuda"), true, why_cuda, sizeof why_cuda) &&
        (*out = open_complete(find("cuda"), opts, why_cuda, sizeof why_cuda))) {
        snprintf((*out)->why, sizeof (*out)->why, "auto: cuda on %.200s", (*out)->device);
        return CHM_OK;
    }
    if (!gpu_unusable(find("vulkan"), true, why_vk, sizeof why_vk) &&
        (*out = open_complete(find("vulkan"), opts, why_vk, sizeof why_vk))) {
        snprintf((*out)->why, sizeof (*out)->why, "auto: vulkan on %.120s (cuda: %.300s)",
                 (*out)->device, why_cuda);
        return CHM_OK;
    }
    chm_status rc = chm_cpu_open(opts, out, err);
    if (rc == CHM_OK)
        snprintf((*out)->why, sizeof (*out)->why, "auto: cpu (cuda: %.230s; vulkan: %.230s)",
                 why_cuda, why_vk);
    return rc;
}

/*
 * Debug only: CHIMERA_DEBUG_FAULT="backend:op" makes the shared wrappers
 * perturb op's output on that backend (check.h, chm_fault_after), so that
 * `chimera verify` can show that it catches a wrong op. Read at each open:
 * the environment is the only input, nothing global is kept.
 */
static void set_debug_fault(chm_backend *be) {
    const char *f = getenv("CHIMERA_DEBUG_FAULT");
    const char *colon = f ? strchr(f, ':') : NULL;
    be->debug_fault[0] = '\0';
    if (!colon || strlen(be->name) != (size_t)(colon - f) || strncmp(f, be->name, colon - f))
        return;
    snprintf(be->debug_fault, sizeof be->debug_fault, "%s", colon + 1);
}

static chm_status open_by_name(const char *name, const chm_backend_options *opts,
                               chm_backend **out, chm_err *err) {
    if (!name || strcmp(name, "auto") == 0) return open_auto(opts, out, err);
    const backend_entry *e = find(name);
    if (!e)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "unknown backend '%s'; choose auto, cpu, vulkan or cuda", name);
    if (strcmp(name, "cpu") != 0) {
        char why[300];
        if (gpu_unusable(e, false, why, sizeof why))
            return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                           "backend '%s' cannot run here: %s; use --backend cpu or auto", name,
                           why);
    }
    chm_status rc = e->open(opts, out, err);
    if (rc == CHM_OK) snprintf((*out)->why, sizeof (*out)->why, "%s (asked for by name)", name);
    return rc;
}

chm_status chm_backend_open(const char *name, const chm_backend_options *opts,
                            chm_backend **out, chm_err *err) {
    if (!out) return CHM_ERR(err, CHM_ERR_INVALID_ARG, "chm_backend_open: out is NULL");
    *out = NULL;
    chm_status rc = open_by_name(name, opts, out, err);
    if (rc == CHM_OK) set_debug_fault(*out);
    if (rc == CHM_OK) chm_profile_open(*out);
    return rc;
}

void chm_backend_close(chm_backend *be) {
    if (be) chm_profile_close(be);
    if (be && be->close) be->close(be);
}

/* Every entry of chm_backend_ops, for coverage reports. */
#define CHM_OP_LIST(X)                                                                     \
    X(buffer_alloc) X(buffer_free) X(upload) X(download) X(fill) X(copy) X(cast) X(sync)    \
    X(event_create) X(event_record) X(event_elapsed_ms) X(event_destroy) X(matmul)          \
    X(matmul_grouped) X(attention_fwd) X(attention_bwd) X(selective_scan_fwd)              \
    X(selective_scan_bwd) X(causal_conv1d_fwd) X(causal_conv1d_bwd) X(rmsnorm_fwd)          \
    X(rmsnorm_bwd) X(rope_fwd) X(rope_bwd) X(swiglu_fwd) X(swiglu_bwd) X(embedding_fwd)     \
    X(embedding_bwd) X(add) X(scale) X(axpy) X(sum_rows) X(router_topk) X(router_topk_bwd)  \
    X(select_topk) X(gather_rows) X(scatter_add_rows) X(cross_entropy) X(adamw_step)        \
    X(sum_squares) X(row_scale_fwd) X(row_scale_bwd) X(exp_fwd) X(exp_bwd) X(bce_logits)     \
    X(moe_aux) X(attention_decode) X(selective_scan_step)

#define OP_NAME(n) #n,
static const char *const op_names[] = {CHM_OP_LIST(OP_NAME)};
#define N_OPS ((int)(sizeof op_names / sizeof op_names[0]))

int chm_backend_op_count(void) { return N_OPS; }

const char *chm_backend_op_name(int i) { return (i >= 0 && i < N_OPS) ? op_names[i] : NULL; }

bool chm_backend_has_op(const chm_backend *be, int i) {
    int k = 0;
#define OP_HAS(n)                                     \
    if (k++ == i) return be->ops->n != NULL;
    CHM_OP_LIST(OP_HAS)
#undef OP_HAS
    return false;
}
