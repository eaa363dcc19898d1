/*
 * vk_coopmat.c: which cooperative-matrix paths a vulkan device gets, and
 * what they need enabled at device creation (vk_coopmat.h; vk_context.c
 * calls it while it creates the device).
 *
 * Cooperative matrices (the tensor cores behind f16/bf16 matmuls):
 * VK_KHR_cooperative_matrix (AMD, Intel, NVIDIA; the shaders' KHR variants,
 * built by the modern glslang) is used when the device offers it with its
 * cooperativeMatrix feature for compute shaders, lists 16x16x16 (or
 * 16x8x16) f16 x f16 + f32 -> f32 subgroup matrices, has shaderFloat16,
 * vulkanMemoryModel (glslang's cooperative-matrix SPIR-V uses the Vulkan
 * memory model) and 16-bit storage; else NVIDIA's VK_NV_cooperative_matrix
 * under the same conditions (its variants need only Debian's glslc). On the
 * H100 KHR ran the same shader 37% faster (coopmat_missing).
 * CHIMERA_VULKAN_DISABLE=coopmat_khr (or coopmat_nv) switches one off. The
 * features are enabled at device creation only for what will run.
 * CHIMERA_VULKAN_COOPMAT_TILE=BMxBNxBK/WMxWN overrides the tile
 * of large products (a tuning knob for tools/vk_bench; checked here).
 * bf16 matmuls use them too (scaled into f16's range, matmul.c) unless
 * CHIMERA_VULKAN_COOPMAT_BF16=0; =native puts bf16 on KHR bf16 matrices.
 *
 * Cooperative matrices 2 (matmul_cm2.comp: bf16 where the matrices above are NVIDIA's):
 * VK_NV_cooperative_matrix2 with workgroup scope, flexible dimensions,
 * tensor addressing and per-element operations, VK_KHR_cooperative_matrix,
 * shaderFloat16, vulkanMemoryModel, 16-bit storage, a listed flexible-
 * dimension f16 x f16 + f32 -> f32 workgroup-scope entry (its invocation
 * count is the shader's workgroup size), and the shaders in this build (a
 * modern glslang compiled them); bf16 too where VK_KHR_shader_bfloat16 has
 * shaderBFloat16Type and shaderBFloat16CooperativeMatrix and lists the bf16
 * entry. The structures are vk_ext.h's copies (our headers predate them).
 * CHIMERA_VULKAN_DISABLE=coopmat2 turns it off; CHIMERA_VULKAN_COOPMAT2_TILE
 * =BMxBNxBK[/p] sets its tile ("/p": prefetching) and CHIMERA_VULKAN_COOPMAT2_WG
 * one of the listed workgroup sizes (tools/vk_bench sweeps both).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_coopmat.h"

/* ---- cooperative matrices (matmul_cm.comp, attention_cm*.comp) ---- */

/* Whether one NV matrix type is 16 x n x 16 f16 x f16 + f32 -> f32 at subgroup scope. */
static bool is_f16_f32(const VkCooperativeMatrixPropertiesNV *p, uint32_t n) {
    return p->MSize == 16 && p->NSize == n && p->KSize == 16 &&
           p->AType == VK_COMPONENT_TYPE_FLOAT16_NV && p->BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
           p->CType == VK_COMPONENT_TYPE_FLOAT32_NV && p->DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
           p->scope == VK_SCOPE_SUBGROUP_NV;
}

/* Read the NV matrix list: caps.cm_n16 (16x16x16 listed) and caps.cm_n8 (16x8x16 listed). */
static void coopmat_nv_shapes(chm_vk *vk) {
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)vkGetInstanceProcAddr(
            vk->instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
    uint32_t n = 0;
    if (!get || get(vk->pdev, &n, NULL) != VK_SUCCESS || n == 0) return;
    VkCooperativeMatrixPropertiesNV *p = calloc(n, sizeof *p);
    if (!p) return;
    for (uint32_t i = 0; i < n; i++)
        p[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
    if (get(vk->pdev, &n, p) >= VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++) {
            vk->caps.cm_n16 |= is_f16_f32(&p[i], 16);
            vk->caps.cm_n8 |= is_f16_f32(&p[i], 8);
        }
    free(p);
}

/* Whether one KHR matrix type is 16 x n x 16 type x type + f32 -> f32 at subgroup scope. */
static bool khr_is(const chm_vk_coopmat_props_khr *p, uint32_t type, uint32_t n) {
    return p->MSize == 16 && p->NSize == n && p->KSize == 16 && p->AType == type &&
           p->BType == type && p->CType == CHM_VK_COMPONENT_FLOAT32 &&
           p->ResultType == CHM_VK_COMPONENT_FLOAT32 && !p->saturatingAccumulation &&
           p->scope == CHM_VK_SCOPE_SUBGROUP;
}

/* Whether the device's KHR matrix list has 16 x n x 16 type x type + f32 -> f32. */
static bool khr_lists(chm_vk *vk, uint32_t type, uint32_t n) {
    chm_vk_coopmat_props_fn get = (chm_vk_coopmat_props_fn)vkGetInstanceProcAddr(
        vk->instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
    uint32_t count = 0;
    if (!get || get(vk->pdev, &count, NULL) != VK_SUCCESS || count == 0) return false;
    chm_vk_coopmat_props_khr *p = calloc(count, sizeof *p);
    if (!p) return false;
    for (uint32_t i = 0; i < count; i++) p[i].sType = CHM_VK_STYPE_COOPMAT_PROPERTIES_KHR;
    bool found = false;
    if (get(vk->pdev, &count, p) >= VK_SUCCESS)
        for (uint32_t i = 0; i < count; i++) found |= khr_is(&p[i], type, n);
    free(p);
    return found;
}

/*
 * The tile from CHIMERA_VULKAN_COOPMAT_TILE ("BMxBNxBK/WMxWN", optionally
 * "/16x16" or "/16x8" for the fragment shape; fn = 0: the device's best);
 * *set says whether the variable gave one. Malformed is a config error on
 * every device (a typo should not pass silently where the tile is unused).
 */
static chm_status coopmat_tile_env(chm_vk_cm_tile *t, bool *set, chm_err *err) {
    const char *s = getenv("CHIMERA_VULKAN_COOPMAT_TILE");
    *set = s && *s;
    if (!*set) return CHM_OK;
    unsigned v[7] = {0};
    int end = 0, end2 = 0;
    bool ok = sscanf(s, "%ux%ux%u/%ux%u%n", &v[0], &v[1], &v[2], &v[3], &v[4], &end) == 5;
    if (ok && s[end] == '/')
        ok = sscanf(s + end, "/%ux%u%n", &v[5], &v[6], &end2) == 2 && v[5] == 16 &&
             (v[6] == 16 || v[6] == 8);
    if (!ok || s[end + end2])
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "CHIMERA_VULKAN_COOPMAT_TILE=%.40s is not BMxBNxBK/WMxWN[/16x16|/16x8] "
                       "(e.g. 128x128x32/64x32)", s);
    *t = (chm_vk_cm_tile){v[0], v[1], v[2], v[3], v[4], v[6]};
    return CHM_OK;
}

/*
 * CHIMERA_VULKAN_COOPMAT_ABLATE: matmul_cm.comp's ABLATE bits (0..2047; vk_bench's
 * diagnostics of what each part of the K loop and the epilogue costs, results wrong under
 * bits 1-8 and 128-512; 16, 32, 64 and 1024 switch off an improvement). Malformed is a
 * config error.
 */
static chm_status coopmat_ablate_env(uint32_t *bits, chm_err *err) {
    const char *s = getenv("CHIMERA_VULKAN_COOPMAT_ABLATE");
    *bits = 0;
    if (!s || !*s) return CHM_OK;
    char *end = NULL;
    long v = strtol(s, &end, 0);
    if (*end || v < 0 || v > 2047)
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "CHIMERA_VULKAN_COOPMAT_ABLATE=%.40s is not 0..2047 (matmul_cm.comp's "
                       "ABLATE bits; unset it for correct products)", s);
    *bits = (uint32_t)v;
    if (v & (15 | 128 | 256 | 512)) fprintf(stderr, "chimera vulkan: CHIMERA_VULKAN_COOPMAT_ABLATE=%ld: cooperative-matrix "
                           "products are WRONG (a diagnostic)\n", v);
    return CHM_OK;
}

/* Why the NV cooperative matrices cannot be used (NULL: they can; the shapes are read). */
static const char *coopmat_nv_missing(chm_vk *vk, const chm_vk_cm_query *q) {
    const chm_vk_caps *c = &vk->caps;
    if (chm_vk_disabled("coopmat_nv")) return "switched off by CHIMERA_VULKAN_DISABLE=coopmat_nv";
    if (!q->ext) return "the device lacks VK_NV_cooperative_matrix";
    if (chm_vk_shader_find("matmul_cm_nv_f16") < 0)
        return "not built: the glslc of this build cannot compile GL_NV_cooperative_matrix";
    if (!q->feature) return "the cooperativeMatrix feature is off for compute shaders";
    if (!c->shader_f16 || !q->memory_model || !c->storage16)
        return "it needs shaderFloat16, vulkanMemoryModel and 16-bit storage";
    coopmat_nv_shapes(vk);
    if (!c->cm_n16 && !c->cm_n8) return "no 16x16x16 or 16x8x16 f16 -> f32 subgroup matrices";
    return NULL;
}

/*
 * The KHR variants are SPIR-V 1.6, whose subgroup size a driver may choose per
 * pipeline (where the device's sizes range, e.g. 32..64 on AMD); the
 * cooperative-matrix shaders assume caps.subgroup_size (their warps and
 * lanes). So where the size may vary, their pipelines require it
 * (caps.cm_pin_subgroup: VK_EXT_subgroup_size_control with compute among its
 * stages and the size in its range); false when that cannot be done.
 * CHIMERA_VULKAN_PIN_SUBGROUP=1 pins wherever it can (tests: lavapipe's one
 * size then takes the same path).
 */
static bool subgroup_pin_decide(chm_vk *vk, const chm_vk_cm_query *q) {
    const VkPhysicalDeviceSubgroupSizeControlPropertiesEXT *p = &q->sgc_p;
    const char *force = getenv("CHIMERA_VULKAN_PIN_SUBGROUP");
    uint32_t sg = vk->caps.subgroup_size;
    bool fixed = q->sgc && p->minSubgroupSize == p->maxSubgroupSize;
    bool forced = force && strcmp(force, "1") == 0;
    bool can = q->sgc && q->sgc_f.subgroupSizeControl &&
               (p->requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
               p->minSubgroupSize <= sg && sg <= p->maxSubgroupSize &&
               (uint64_t)p->maxComputeWorkgroupSubgroups * sg >= 256;
    vk->caps.cm_pin_subgroup = can && (forced || !fixed);
    return fixed || can;
}

/* Whether VK_KHR_cooperative_matrix is there with its feature for compute shaders. */
static bool khr_usable(const chm_vk_cm_query *q) {
    return q->khr && q->khr_f.cooperativeMatrix &&
           (q->khr_p.cooperativeMatrixSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
}

/* Why the KHR cooperative matrices cannot be used (NULL: they can; the shapes are read). */
static const char *coopmat_khr_missing(chm_vk *vk, const chm_vk_cm_query *q) {
    const chm_vk_caps *c = &vk->caps;
    if (!khr_usable(q)) return "the device lacks VK_KHR_cooperative_matrix for compute shaders";
    if (chm_vk_shader_find("matmul_cm_khr_f16") < 0)
        return "not built: no modern glslang for GL_KHR_cooperative_matrix (tools/"
               "fetch_glslang.sh)";
    if (!c->shader_f16 || !q->memory_model || !c->storage16)
        return "it needs shaderFloat16, vulkanMemoryModel and 16-bit storage";
    vk->caps.cm_n16 = khr_lists(vk, CHM_VK_COMPONENT_FLOAT16, 16);
    vk->caps.cm_n8 = khr_lists(vk, CHM_VK_COMPONENT_FLOAT16, 8);
    if (!c->cm_n16 && !c->cm_n8)
        return "no 16x16x16 or 16x8x16 f16 -> f32 subgroup matrices";
    if (!subgroup_pin_decide(vk, q))
        return "its subgroup size may vary (AMD, Intel) and cannot be pinned for compute "
               "shaders (VK_EXT_subgroup_size_control)";
    return NULL;
}

/*
 * Why no cooperative matrices can be used (NULL: KHR's, caps.coopmat_khr, or
 * NVIDIA's where KHR's cannot). why holds the reasons for both. KHR first:
 * on the H100 (driver 580.159.04, session 9) the same shader ran f16 4096^3
 * A B^T at 207.7 TFLOP/s on KHR matrices against 151.1 on NV ones, and
 * chimera-1b's bf16 step at 26.0k tokens/s against 24.8k.
 */
static const char *coopmat_missing(chm_vk *vk, const chm_vk_cm_query *q, char *why, size_t n) {
    if (chm_vk_disabled("coopmat")) return "switched off by CHIMERA_VULKAN_DISABLE=coopmat";
    const char *khr = chm_vk_disabled("coopmat_khr")
                          ? "switched off by CHIMERA_VULKAN_DISABLE=coopmat_khr"
                          : coopmat_khr_missing(vk, q);
    if (!khr) {
        vk->caps.coopmat_khr = true;
        return NULL;
    }
    const char *nv = coopmat_nv_missing(vk, q);
    if (!nv) return NULL;
    snprintf(why, n, "KHR: %s; NV: %s", khr, nv);
    return why;
}

/*
 * Tests only: CHIMERA_VULKAN_COOPMAT_EMULATE=1 on a device without
 * cooperative matrices runs matmul_cm.comp's CM_EMULATE variants in their
 * place (both fragment shapes). NULL when it can, else why not.
 */
static const char *coopmat_emulation_missing(chm_vk *vk) {
    const char *emu = getenv("CHIMERA_VULKAN_COOPMAT_EMULATE");
    const chm_vk_caps *c = &vk->caps;
    uint32_t sg = c->subgroup_size;
    if (!emu || strcmp(emu, "1") != 0 || chm_vk_disabled("coopmat")) return "";
    if (!c->storage16 || !c->shader_f16 || !c->subgroup || sg < 8 || 256 % sg)
        return "emulation needs 16-bit storage, shaderFloat16 and subgroups of 8 to 256";
    return NULL;
}

/*
 * The tile: the one CHIMERA_VULKAN_COOPMAT_TILE gives (a config error when
 * it cannot run), else the first of a short list that this device can run.
 * The first, 128x128x32 with 64x64 per warp (4 warps), has the best ratio
 * of fragment loads to multiply-adds that fits a warp's registers. Fragments
 * are 16x8 where the device lists them (fn 0 in the list, and in the
 * variable without a fragment shape): on an H200 16x8 ran this tile at 101
 * TFLOP/s against 47.5 with 16x16 (tools/vk_bench's sweep, issue 6).
 */
static chm_status coopmat_tile_pick(chm_vk *vk, bool tile_set, chm_err *err) {
    static const chm_vk_cm_tile tiles[] = {
        {128, 128, 32, 64, 64, 0}, {64, 64, 16, 32, 32, 0}, {32, 32, 16, 16, 16, 0}};
    chm_vk_caps *c = &vk->caps;
    char why[160] = "";
    for (int i = 0; i < (tile_set ? 1 : (int)(sizeof tiles / sizeof tiles[0])); i++) {
        if (!tile_set) c->cm_tile = tiles[i];
        if (!c->cm_tile.fn) c->cm_tile.fn = c->cm_n8 ? 8 : 16;
        chm_vk_cm_tile_check(vk, c->cm_tile, why, sizeof why);
        if (!why[0]) {
            const char *bf = getenv("CHIMERA_VULKAN_COOPMAT_BF16");
            c->coopmat = true;
            c->coopmat_bf16 = !bf || strcmp(bf, "0") != 0;
            return CHM_OK;
        }
    }
    const chm_vk_cm_tile *t = &c->cm_tile;
    if (tile_set)
        return CHM_ERR(err, CHM_ERR_CONFIG, "CHIMERA_VULKAN_COOPMAT_TILE=%ux%ux%u/%ux%u/16x%u "
                       "cannot run%s on %s: %s", t->bm, t->bn, t->bk, t->wm, t->wn, t->fn,
                       c->coopmat_emulated ? " emulated" : "", vk->props.deviceName, why);
    snprintf(c->coopmat_why, sizeof c->coopmat_why, "no tile fits: %.140s", why);
    c->coopmat_emulated = c->coopmat_khr = false;
    return CHM_OK;
}

/*
 * bf16 products on bf16 matrices as stored (caps.coopmat_bf16_native, no
 * scaling pass): matmul_cm.comp's KHR bf16 variants where
 * VK_KHR_shader_bfloat16 gives cooperative matrices of bf16 (in the tile's
 * fragment shape, else the other). The default there (CHIMERA_VULKAN_COOPMAT_BF16
 * unset or 1; "scaled" keeps the scaled f16 operands): on the H100 (session
 * 10, after the conflict-free staging made its 16x16 fragments as fast as
 * 16x8) bf16 4096^3 A B^T ran 0.538 ms against 0.666 scaled, and chimera-1b
 * 32,961 tokens/s against 26.6k (the scaling passes were ~80 ms a step).
 * Emulated (tests) only when CHIMERA_VULKAN_COOPMAT_BF16=native asks, so that
 * lavapipe's default still runs the scaled path.
 */
static void coopmat_bf16_native_decide(chm_vk *vk, const chm_vk_cm_query *q) {
    chm_vk_caps *c = &vk->caps;
    const char *bf = getenv("CHIMERA_VULKAN_COOPMAT_BF16");
    bool asked = bf && !strcmp(bf, "native");
    bool by_default = (!bf || !strcmp(bf, "1")) && !c->coopmat_emulated;
    if (!c->coopmat || !c->coopmat_bf16 || !(asked || by_default)) return;
    c->cm_bf16_fn = c->cm_tile.fn;
    if (c->coopmat_emulated) {
        c->coopmat_bf16_native = true;
        return;
    }
    if (!khr_usable(q) || !q->bf16 || !q->bf16_f.shaderBFloat16Type ||
        !q->bf16_f.shaderBFloat16CooperativeMatrix ||
        chm_vk_shader_find("matmul_cm_khr_bf16n") < 0)
        return;
    /* the tile's fragment shape, else the other one where the warp tiles hold it */
    uint32_t other = c->cm_tile.fn == 8 ? 16 : 8;
    if (!khr_lists(vk, CHM_VK_COMPONENT_BFLOAT16, c->cm_bf16_fn))
        c->cm_bf16_fn = c->cm_tile.wn % other == 0 &&
                                khr_lists(vk, CHM_VK_COMPONENT_BFLOAT16, other) ? other : 0;
    c->coopmat_bf16_native = c->cm_bf16_fn != 0;
}

/* CHIMERA_VULKAN_COOPMAT_BF16 is unset or one of its values (else a config error). */
static chm_status coopmat_bf16_env(chm_err *err) {
    const char *bf = getenv("CHIMERA_VULKAN_COOPMAT_BF16");
    if (!bf || !strcmp(bf, "0") || !strcmp(bf, "1") || !strcmp(bf, "native") ||
        !strcmp(bf, "scaled"))
        return CHM_OK;
    return CHM_ERR(err, CHM_ERR_CONFIG, "CHIMERA_VULKAN_COOPMAT_BF16=%.40s is not 0 (bf16 "
                   "matmuls on the plain path), 1 (default: on bf16 matrices where the device "
                   "has them, else scaled), native (the same, emulated too) or scaled (never "
                   "on bf16 matrices)", bf);
}

/* Decide the cooperative-matrix path (caps.coopmat, or caps.coopmat_why says why not). */
static chm_status coopmat_decide(chm_vk *vk, const chm_vk_cm_query *q, chm_err *err) {
    chm_vk_caps *c = &vk->caps;
    bool tile_set = false;
    CHM_TRY(coopmat_bf16_env(err));
    CHM_TRY(coopmat_tile_env(&c->cm_tile, &tile_set, err));
    CHM_TRY(coopmat_ablate_env(&c->cm_ablate, err));
    char both[256];
    const char *why = coopmat_missing(vk, q, both, sizeof both);
    if (why) {
        snprintf(c->coopmat_why, sizeof c->coopmat_why, "%s", why);
        const char *emu_why = coopmat_emulation_missing(vk);
        if (emu_why) {
            if (emu_why[0]) snprintf(c->coopmat_why, sizeof c->coopmat_why, "%s", emu_why);
            return CHM_OK;
        }
        c->coopmat_emulated = c->cm_n16 = c->cm_n8 = true;
        subgroup_pin_decide(vk, q); /* the emulated shaders assume the size too */
    }
    CHM_TRY(coopmat_tile_pick(vk, tile_set, err));
    coopmat_bf16_native_decide(vk, q);
    return CHM_OK;
}

/* ---- cooperative matrices 2 (matmul_cm2.comp) ---- */

/* Put the cm2 feature structures of the extensions the device has in front of *head. */
static void cm2_chain(VkPhysicalDevice pd, chm_vk_cm_query *q, void **head) {
    q->khr = chm_vk_has_device_ext(pd, CHM_VK_KHR_COOPMAT_NAME);
    q->nv2 = chm_vk_has_device_ext(pd, CHM_VK_NV_COOPMAT2_NAME);
    q->bf16 = chm_vk_has_device_ext(pd, CHM_VK_KHR_BF16_NAME);
    q->khr_f = (chm_vk_coopmat_features_khr){.sType = CHM_VK_STYPE_COOPMAT_FEATURES_KHR};
    q->nv2_f = (chm_vk_coopmat2_features_nv){.sType = CHM_VK_STYPE_COOPMAT2_FEATURES_NV};
    q->bf16_f = (chm_vk_bf16_features_khr){.sType = CHM_VK_STYPE_BF16_FEATURES_KHR};
    if (q->khr) q->khr_f.pNext = *head, *head = &q->khr_f;
    if (q->nv2) q->nv2_f.pNext = *head, *head = &q->nv2_f;
    if (q->bf16) q->bf16_f.pNext = *head, *head = &q->bf16_f;
}

/*
 * The flexible-dimension entry for workgroup-scope A x B of component type
 * `type` + f32 -> f32 with `wg` invocations (0: prefer 256, else the largest
 * the device runs); false when none is listed.
 */
static bool cm2_flex(chm_vk *vk, uint32_t type, uint32_t *wg, uint32_t gran[3]) {
    chm_vk_flex_fn get = (chm_vk_flex_fn)vkGetInstanceProcAddr(
        vk->instance, "vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV");
    uint32_t n = 0, want = *wg;
    if (!get || get(vk->pdev, &n, NULL) != VK_SUCCESS || n == 0) return false;
    chm_vk_coopmat_flex_nv *p = calloc(n, sizeof *p);
    if (!p) return false;
    for (uint32_t i = 0; i < n; i++) p[i].sType = CHM_VK_STYPE_COOPMAT_FLEX_PROPERTIES_NV;
    bool found = false;
    if (get(vk->pdev, &n, p) >= VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++) {
            const chm_vk_coopmat_flex_nv *e = &p[i];
            uint32_t inv = e->workgroupInvocations;
            bool fits = e->AType == type && e->BType == type &&
                        e->CType == CHM_VK_COMPONENT_FLOAT32 &&
                        e->ResultType == CHM_VK_COMPONENT_FLOAT32 && !e->saturatingAccumulation &&
                        e->scope == CHM_VK_SCOPE_WORKGROUP && inv && inv <= vk->caps.max_wg &&
                        inv % vk->caps.subgroup_size == 0 && (!want || inv == want);
            bool better = !found || (*wg != 256 && (inv == 256 || inv > *wg));
            if (fits && better) {
                found = true;
                *wg = inv;
                gran[0] = e->MGranularity, gran[1] = e->NGranularity, gran[2] = e->KGranularity;
            }
        }
    free(p);
    return found;
}

/* Why matmul_cm2.comp cannot run here (NULL: it can for f16; the flexible entry is read). */
static const char *coopmat2_missing(chm_vk *vk, const chm_vk_cm_query *q) {
    chm_vk_caps *c = &vk->caps;
    const chm_vk_coopmat2_features_nv *f = &q->nv2_f;
    if (chm_vk_disabled("coopmat2")) return "switched off by CHIMERA_VULKAN_DISABLE=coopmat2";
    if (!q->khr || !q->nv2)
        return "the device lacks VK_KHR_cooperative_matrix or VK_NV_cooperative_matrix2";
    if (chm_vk_shader_find("matmul_cm2_f16") < 0)
        return "not built: this build's glslang cannot compile GL_NV_cooperative_matrix2";
    if (!q->khr_f.cooperativeMatrix || !f->cooperativeMatrixWorkgroupScope ||
        !f->cooperativeMatrixFlexibleDimensions || !f->cooperativeMatrixTensorAddressing ||
        !f->cooperativeMatrixPerElementOperations)
        return "it needs workgroup scope, flexible dimensions, tensor addressing and "
               "per-element operations";
    if (!c->shader_f16 || !q->memory_model || !c->storage16)
        return "it needs shaderFloat16, vulkanMemoryModel and 16-bit storage";
    /* CHIMERA_VULKAN_COOPMAT2_WG (tools/vk_bench): one of the listed invocation counts */
    const char *wg = getenv("CHIMERA_VULKAN_COOPMAT2_WG");
    c->cm2_tile.wg = wg ? (uint32_t)atoi(wg) : 0;
    if (!cm2_flex(vk, CHM_VK_COMPONENT_FLOAT16, &c->cm2_tile.wg, c->cm2_gran))
        return "no workgroup-scope f16 x f16 + f32 -> f32 flexible dimensions listed (for "
               "CHIMERA_VULKAN_COOPMAT2_WG, where set)";
    return NULL;
}

/*
 * CHIMERA_VULKAN_COOPMAT2_TILE=BMxBNxBK[/p] into *t (its wg kept; "/p": prefetch);
 * *set: the variable is there.
 */
static chm_status coopmat2_tile_env(chm_vk_cm2_tile *t, bool *set, chm_err *err) {
    const char *s = getenv("CHIMERA_VULKAN_COOPMAT2_TILE");
    *set = s && *s;
    if (!*set) return CHM_OK;
    unsigned v[3] = {0};
    int end = 0;
    bool ok = sscanf(s, "%ux%ux%u%n", &v[0], &v[1], &v[2], &end) == 3;
    bool pre = ok && strcmp(s + end, "/p") == 0;
    if (!ok || (s[end] && !pre))
        return CHM_ERR(err, CHM_ERR_CONFIG, "CHIMERA_VULKAN_COOPMAT2_TILE=%.40s is not "
                       "BMxBNxBK[/p] (e.g. 128x128x32, or 128x256x32/p to prefetch)", s);
    t->bm = v[0], t->bn = v[1], t->bk = v[2], t->prefetch = pre;
    return CHM_OK;
}

/*
 * Decide the cm2 path (caps.coopmat2 / coopmat2_bf16, or coopmat2_why).
 * The default tile, 128x256x32 prefetching, on the listed 256 invocations:
 * on an H100 (driver 580.159.04, session 8) 126 TFLOP/s at f16 4096^3
 * A B^T against 50.6 without the prefetch (256x128x32 prefetching: 129;
 * BK 64, 256x256 or 128 invocations: 7-51), and chimera-1b's bf16 step at
 * 25.0k tokens/s against 24.1k on matmul_cm.comp (13.7k without the
 * prefetch). The variable's tile must run (a config error otherwise).
 */
static chm_status coopmat2_decide(chm_vk *vk, const chm_vk_cm_query *q, chm_err *err) {
    chm_vk_caps *c = &vk->caps;
    bool set = false;
    chm_vk_cm2_tile t = {128, 256, 32, 0, true};
    CHM_TRY(coopmat2_tile_env(&t, &set, err));
    const char *why = coopmat2_missing(vk, q);
    if (why) {
        snprintf(c->coopmat2_why, sizeof c->coopmat2_why, "%s", why);
        return CHM_OK;
    }
    t.wg = c->cm2_tile.wg;
    char msg[160];
    chm_vk_cm2_tile_check(vk, t, msg, sizeof msg);
    if (msg[0] && set)
        return CHM_ERR(err, CHM_ERR_CONFIG, "CHIMERA_VULKAN_COOPMAT2_TILE=%ux%ux%u cannot run "
                       "on %s: %s", t.bm, t.bn, t.bk, vk->props.deviceName, msg);
    if (msg[0]) {
        snprintf(c->coopmat2_why, sizeof c->coopmat2_why, "tile: %.150s", msg);
        return CHM_OK;
    }
    c->cm2_tile = t;
    c->coopmat2 = true;
    uint32_t wg = t.wg, gran[3];
    c->coopmat2_bf16 = q->bf16 && q->bf16_f.shaderBFloat16Type &&
                       q->bf16_f.shaderBFloat16CooperativeMatrix &&
                       chm_vk_shader_find("matmul_cm2_bf16") >= 0 &&
                       cm2_flex(vk, CHM_VK_COMPONENT_BFLOAT16, &wg, gran) &&
                       t.bm % gran[0] == 0 && t.bn % gran[1] == 0 && t.bk % gran[2] == 0;
    return CHM_OK;
}

/*
 * The KHR and cm2 cooperative-matrix extensions and features at device
 * creation, in front of *head (only for the shaders that will run: the KHR
 * matrices of matmul_cm.comp's KHR variants, or matmul_cm2.comp); names
 * appended to exts.
 */
static void cm_khr_enable(const chm_vk *vk, chm_vk_cm_query *q, void **head,
                          const char **exts, uint32_t *nexts) {
    const chm_vk_caps *c = &vk->caps;
    bool real = c->coopmat && !c->coopmat_emulated;
    bool bf16_v1 = real && c->coopmat_bf16_native, khr_v1 = real && (c->coopmat_khr || bf16_v1);
    if (!khr_v1 && !c->coopmat2) return;
    exts[(*nexts)++] = CHM_VK_KHR_COOPMAT_NAME;
    q->khr_f = (chm_vk_coopmat_features_khr){.sType = CHM_VK_STYPE_COOPMAT_FEATURES_KHR,
                                             .pNext = *head, .cooperativeMatrix = VK_TRUE};
    *head = &q->khr_f;
    if (c->coopmat2) {
        exts[(*nexts)++] = CHM_VK_NV_COOPMAT2_NAME;
        q->nv2_f = (chm_vk_coopmat2_features_nv){
            .sType = CHM_VK_STYPE_COOPMAT2_FEATURES_NV, .pNext = *head,
            .cooperativeMatrixWorkgroupScope = VK_TRUE,
            .cooperativeMatrixFlexibleDimensions = VK_TRUE,
            .cooperativeMatrixPerElementOperations = VK_TRUE,
            .cooperativeMatrixTensorAddressing = VK_TRUE};
        *head = &q->nv2_f;
    }
    if (!bf16_v1 && !(c->coopmat2 && c->coopmat2_bf16)) return;
    exts[(*nexts)++] = CHM_VK_KHR_BF16_NAME;
    q->bf16_f = (chm_vk_bf16_features_khr){.sType = CHM_VK_STYPE_BF16_FEATURES_KHR,
                                           .pNext = *head, .shaderBFloat16Type = VK_TRUE,
                                           .shaderBFloat16CooperativeMatrix = VK_TRUE};
    *head = &q->bf16_f;
}

/* ---- the interface (vk_coopmat.h) ---- */

void chm_vk_cm_query_features(chm_vk *vk, chm_vk_cm_query *q, void **head) {
    q->sgc = chm_vk_has_device_ext(vk->pdev, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    q->sgc_f = (VkPhysicalDeviceSubgroupSizeControlFeaturesEXT){
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT};
    if (q->sgc) q->sgc_f.pNext = *head, *head = &q->sgc_f;
    q->ext = chm_vk_has_device_ext(vk->pdev, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
    q->nv_f = (VkPhysicalDeviceCooperativeMatrixFeaturesNV){
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    if (q->ext) q->nv_f.pNext = *head, *head = &q->nv_f;
    cm2_chain(vk->pdev, q, head);
}

void chm_vk_cm_query_props(chm_vk *vk, chm_vk_cm_query *q, bool memory_model) {
    q->nv_p = (VkPhysicalDeviceCooperativeMatrixPropertiesNV){
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_PROPERTIES_NV};
    q->sgc_p = (VkPhysicalDeviceSubgroupSizeControlPropertiesEXT){
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES_EXT};
    q->khr_p = (chm_vk_coopmat_device_props_khr){
        .sType = CHM_VK_STYPE_COOPMAT_DEVICE_PROPERTIES_KHR, .pNext = q->ext ? &q->nv_p : NULL};
    if (q->sgc) { /* in front of the others: read whenever the extension is there */
        q->sgc_p.pNext = q->khr ? (void *)&q->khr_p : q->ext ? (void *)&q->nv_p : NULL;
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                          .pNext = &q->sgc_p};
        vkGetPhysicalDeviceProperties2(vk->pdev, &p2);
    } else if (q->ext || q->khr) {
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                          .pNext = q->khr ? (void *)&q->khr_p : (void *)&q->nv_p};
        vkGetPhysicalDeviceProperties2(vk->pdev, &p2);
    }
    q->feature = q->nv_f.cooperativeMatrix &&
                 (q->nv_p.cooperativeMatrixSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
    q->memory_model = memory_model;
}

chm_status chm_vk_cm_decide(chm_vk *vk, chm_vk_cm_query *q, chm_err *err) {
    CHM_TRY(coopmat_decide(vk, q, err));
    return coopmat2_decide(vk, q, err);
}

void chm_vk_cm_enable(const chm_vk *vk, chm_vk_cm_query *q, void **head, const char **exts,
                      uint32_t *nexts) {
    const chm_vk_caps *c = &vk->caps;
    if (c->coopmat && !c->coopmat_emulated && !c->coopmat_khr) {
        exts[(*nexts)++] = VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME;
        q->nv_f = (VkPhysicalDeviceCooperativeMatrixFeaturesNV){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
            .pNext = *head, .cooperativeMatrix = VK_TRUE};
        *head = &q->nv_f;
    }
    cm_khr_enable(vk, q, head, exts, nexts);
    if (c->cm_pin_subgroup && c->coopmat) {
        exts[(*nexts)++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
        q->sgc_f = (VkPhysicalDeviceSubgroupSizeControlFeaturesEXT){
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT,
            .pNext = *head, .subgroupSizeControl = VK_TRUE};
        *head = &q->sgc_f;
    }
}

bool chm_vk_cm_pins(const chm_vk *vk, const char *name) {
    return vk->caps.cm_pin_subgroup && vk->caps.coopmat &&
           (strstr(name, "_cm_") || strncmp(name, "cm_probe", 8) == 0);
}

const char *chm_vk_cm_flavor(const chm_vk *vk) {
    return vk->caps.coopmat_emulated ? "emu" : vk->caps.coopmat_khr ? "khr" : "nv";
}
