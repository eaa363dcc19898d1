/*
 * vk_context.c: the vulkan backend's instance, device and queue.
 *
 * Opens a Vulkan 1.2 instance (with the Khronos validation layer, its
 * synchronization validation, and a message counter when asked for), picks a physical device the way
 * `chimera info` ranks them (discrete > integrated > virtual > cpu, or the
 * index from the options or CHIMERA_VULKAN_DEVICE), one compute queue, and
 * reads the capabilities the shaders are specialised for. Optional features
 * are detected here once and CHIMERA_VULKAN_DISABLE switches them off. The
 * size limits (maxStorageBufferRange, which CHIMERA_VULKAN_MAX_RANGE may
 * lower for tests; maxMemoryAllocationSize; maxBufferSize) are read here
 * for vk_split.c and vk_memory.c.
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"
#include "vk_ext.h"

#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"


/* Validation messages (warnings and errors) seen in this process. */
static atomic_uint_fast64_t validation_count;

uint64_t chm_vulkan_validation_messages(void) { return (uint64_t)atomic_load(&validation_count); }

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                 VkDebugUtilsMessageTypeFlagsEXT type,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                 void *user) {
    (void)user;
    if (sev < VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) return VK_FALSE;
    /* General warnings are the loader's notes (e.g. that VK_INSTANCE_LAYERS added the layer). */
    if (type == VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT &&
        sev < VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)
        return VK_FALSE;
    atomic_fetch_add(&validation_count, 1);
    fprintf(stderr, "chimera vulkan validation %s: %s\n",
            sev >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT ? "error" : "warning",
            data && data->pMessage ? data->pMessage : "(no message)");
    return VK_FALSE;
}

const char *chm_vk_result_name(VkResult r) {
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default: return "VkResult";
    }
}

chm_status chm_vk_fail(chm_vk *vk, VkResult r, const char *what) {
    bool oom = r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY;
    return CHM_ERR(&vk->be->err, oom ? CHM_ERR_NOMEM : CHM_ERR_DEVICE,
                   "vulkan: %s failed (%s, %d)%s", what, chm_vk_result_name(r), (int)r,
                   oom ? ": the device is out of memory; use smaller batches or another device"
                       : "");
}

/* ---- environment ---- */

/* Whether the comma list in CHIMERA_VULKAN_DISABLE names `feature`. */
static bool disabled(const char *feature) {
    const char *s = getenv("CHIMERA_VULKAN_DISABLE");
    size_t n = strlen(feature);
    while (s && *s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len == n && strncmp(s, feature, n) == 0) return true;
        s = end ? end + 1 : NULL;
    }
    return false;
}

/* Every name in CHIMERA_VULKAN_DISABLE is a known feature (else a config error). */
static chm_status check_disable_list(chm_err *err) {
    static const char *const known[] = {"subgroup", "16bit", "push_descriptor", "pipeline_cache",
                                        "timestamps", "coopmat", "coopmat_khr", "coopmat_nv",
                                        "coopmat2", "splitk"};
    const char *s = getenv("CHIMERA_VULKAN_DISABLE");
    while (s && *s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        bool ok = len == 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strlen(known[i]) == len && strncmp(s, known[i], len) == 0;
        if (!ok)
            return CHM_ERR(err, CHM_ERR_CONFIG,
                           "CHIMERA_VULKAN_DISABLE names an unknown feature '%.*s'; known: "
                           "subgroup, 16bit, push_descriptor, pipeline_cache, timestamps, "
                           "coopmat, coopmat_khr, coopmat_nv, coopmat2, splitk",
                           (int)len, s);
        s = end ? end + 1 : NULL;
    }
    return CHM_OK;
}

/* Validation wanted: CHIMERA_VULKAN_VALIDATION=1, or the layer is enabled through the loader. */
static bool validation_wanted(bool *explicit_layer) {
    const char *v = getenv("CHIMERA_VULKAN_VALIDATION");
    const char *layers = getenv("VK_INSTANCE_LAYERS");
    *explicit_layer = v && strcmp(v, "1") == 0;
    return *explicit_layer || (layers && strstr(layers, VALIDATION_LAYER));
}

static bool has_layer(const char *name) {
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0) return false;
    VkLayerProperties *p = calloc(n, sizeof *p);
    bool found = false;
    if (p && vkEnumerateInstanceLayerProperties(&n, p) >= VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = strcmp(p[i].layerName, name) == 0;
    free(p);
    return found;
}

/* Whether `layer` (NULL: the loader and implicit layers) offers instance extension `ext`. */
static bool has_instance_ext(const char *layer, const char *ext) {
    uint32_t n = 0;
    if (vkEnumerateInstanceExtensionProperties(layer, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkExtensionProperties *p = calloc(n, sizeof *p);
    bool found = false;
    if (p && vkEnumerateInstanceExtensionProperties(layer, &n, p) >= VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = strcmp(p[i].extensionName, ext) == 0;
    free(p);
    return found;
}

/* ---- instance ---- */

static const VkDebugUtilsMessengerCreateInfoEXT messenger_info = {
    .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
    .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
    .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                   VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                   VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
    .pfnUserCallback = on_message,
};

/*
 * The instance, at API 1.2, enumerating portability drivers (MoltenVK) like
 * the probe does so that device indices agree with `chimera info`.
 */
static chm_status create_instance(chm_vk *vk, chm_err *err) {
    bool explicit_layer = false, validate = validation_wanted(&explicit_layer);
    const char *layers[1], *exts[3]; /* debug utils, validation features, portability */
    uint32_t nlayers = 0, nexts = 0;
    if (validate && !has_layer(VALIDATION_LAYER)) {
        if (!vk->quiet)
            fprintf(stderr, "chimera vulkan: validation asked for but %s is not installed "
                            "(apt-get install vulkan-validationlayers)\n", VALIDATION_LAYER);
        validate = false;
    }
    if (validate && explicit_layer) layers[nlayers++] = VALIDATION_LAYER;
    bool debug_utils = validate && (has_instance_ext(NULL, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) ||
                                    has_instance_ext(VALIDATION_LAYER,
                                                     VK_EXT_DEBUG_UTILS_EXTENSION_NAME));
    if (debug_utils) exts[nexts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    /* With validation on, synchronization validation checks every barrier decision too. */
    VkValidationFeatureEnableEXT sync = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkDebugUtilsMessengerCreateInfoEXT mi = messenger_info;
    VkValidationFeaturesEXT features = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                        .pNext = debug_utils ? &mi : NULL,
                                        .enabledValidationFeatureCount = 1,
                                        .pEnabledValidationFeatures = &sync};
    bool sync_val = validate && has_instance_ext(VALIDATION_LAYER,
                                                 VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
    if (sync_val) exts[nexts++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = sync_val ? (const void *)&features : debug_utils ? (const void *)&mi : NULL,
        .pApplicationInfo = &(VkApplicationInfo){.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                                                 .pApplicationName = "chimera",
                                                 .pEngineName = "chimera",
                                                 .apiVersion = VK_API_VERSION_1_2},
        .enabledLayerCount = nlayers,
        .ppEnabledLayerNames = layers,
        .ppEnabledExtensionNames = exts,
    };
    if (has_instance_ext(NULL, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
        exts[nexts++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
        ci.flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
    ci.enabledExtensionCount = nexts;
    chm_vk_leak_check_pause();
    VkResult r = vkCreateInstance(&ci, NULL, &vk->instance);
    chm_vk_leak_check_resume();
    if (r != VK_SUCCESS)
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                       "vulkan: vkCreateInstance failed (%s); `chimera info` says why",
                       chm_vk_result_name(r));
    if (debug_utils) {
        PFN_vkCreateDebugUtilsMessengerEXT create = (PFN_vkCreateDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(vk->instance, "vkCreateDebugUtilsMessengerEXT");
        vk->destroy_messenger_fn = (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
            vk->instance, "vkDestroyDebugUtilsMessengerEXT");
        if (create && vk->destroy_messenger_fn)
            create(vk->instance, &messenger_info, NULL, &vk->messenger);
    }
    return CHM_OK;
}

/* ---- physical device ---- */

static int type_rank(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
    default: return 4;
    }
}

/* The device index asked for: opts, else CHIMERA_VULKAN_DEVICE, else -1 (choose). */
static chm_status wanted_index(const chm_backend_options *opts, uint32_t n, int *out,
                               chm_err *err) {
    *out = opts ? opts->device_index : -1;
    const char *s = getenv("CHIMERA_VULKAN_DEVICE");
    if (*out < 0 && s && *s) {
        char *end = NULL;
        long v = strtol(s, &end, 10);
        if (*end || v < 0 || v >= (long)n)
            return CHM_ERR(err, CHM_ERR_CONFIG,
                           "CHIMERA_VULKAN_DEVICE=%.40s is not a device index 0..%u: unset it "
                           "or pick one from `chimera info`", s, n - 1);
        *out = (int)v;
    }
    if (*out >= (int)n)
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "vulkan device %d does not exist (%u found); see `chimera info`", *out, n);
    return CHM_OK;
}

static chm_status pick_device(chm_vk *vk, const chm_backend_options *opts, chm_err *err) {
    uint32_t n = 0;
    chm_vk_leak_check_pause();
    VkResult r = vkEnumeratePhysicalDevices(vk->instance, &n, NULL);
    chm_vk_leak_check_resume();
    if (r != VK_SUCCESS || n == 0)
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "vulkan: no physical device (%s)",
                       chm_vk_result_name(r));
    VkPhysicalDevice *pd = calloc(n, sizeof *pd);
    if (!pd) return CHM_ERR(err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    chm_vk_leak_check_pause();
    r = vkEnumeratePhysicalDevices(vk->instance, &n, pd);
    chm_vk_leak_check_resume();
    int want = -1;
    chm_status rc = r < VK_SUCCESS ? CHM_ERR(err, CHM_ERR_DEVICE, "vulkan: %s",
                                             chm_vk_result_name(r))
                                   : wanted_index(opts, n, &want, err);
    int best = want;
    for (uint32_t i = 0; rc == CHM_OK && want < 0 && i < n; i++) {
        VkPhysicalDeviceProperties p, q;
        vkGetPhysicalDeviceProperties(pd[i], &p);
        if (p.apiVersion < VK_API_VERSION_1_2) continue;
        if (best >= 0) vkGetPhysicalDeviceProperties(pd[best], &q);
        if (best < 0 || type_rank(p.deviceType) < type_rank(q.deviceType)) best = (int)i;
    }
    if (rc == CHM_OK && best < 0)
        rc = CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                     "vulkan: no device offers Vulkan 1.2, which chimera's shaders need");
    if (rc == CHM_OK) vk->pdev = pd[best];
    free(pd);
    if (rc) return rc;
    vkGetPhysicalDeviceProperties(vk->pdev, &vk->props);
    vkGetPhysicalDeviceMemoryProperties(vk->pdev, &vk->memprops);
    if (vk->props.apiVersion < VK_API_VERSION_1_2)
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                       "vulkan: device %s offers Vulkan %u.%u; chimera needs 1.2",
                       vk->props.deviceName, VK_API_VERSION_MAJOR(vk->props.apiVersion),
                       VK_API_VERSION_MINOR(vk->props.apiVersion));
    return CHM_OK;
}

/* A compute queue family: one with timestamps first, then compute-only over graphics. */
static chm_status pick_queue(chm_vk *vk, chm_err *err) {
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(vk->pdev, &n, NULL);
    VkQueueFamilyProperties *q = calloc(n ? n : 1, sizeof *q);
    if (!q) return CHM_ERR(err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    vkGetPhysicalDeviceQueueFamilyProperties(vk->pdev, &n, q);
    int best = -1, best_score = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!(q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || q[i].queueCount == 0) continue;
        int score = (q[i].timestampValidBits ? 2 : 0) + !(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT);
        if (score > best_score) best = (int)i, best_score = score;
    }
    if (best >= 0) {
        vk->qfamily = (uint32_t)best;
        uint32_t bits = q[best].timestampValidBits;
        vk->caps.timestamps = bits > 0 && !disabled("timestamps");
        vk->caps.timestamp_mask = bits >= 64 ? ~0ull : (1ull << bits) - 1;
    }
    free(q);
    if (best < 0)
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "vulkan: device %s has no compute queue",
                       vk->props.deviceName);
    return CHM_OK;
}

static bool has_device_ext(VkPhysicalDevice pd, const char *name) {
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkExtensionProperties *p = calloc(n, sizeof *p);
    bool found = false;
    if (p && vkEnumerateDeviceExtensionProperties(pd, NULL, &n, p) >= VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = strcmp(p[i].extensionName, name) == 0;
    free(p);
    return found;
}

static uint32_t clamp_u32(uint32_t v, uint32_t lo, uint32_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- cooperative matrices ---- */

/* Feature and property bits the cooperative-matrix decision needs. */
typedef struct cm_query {
    bool ext;            /* VK_NV_cooperative_matrix */
    bool feature;        /* cooperativeMatrix, with compute among the supported stages */
    bool memory_model;   /* vulkanMemoryModel */
    /* VK_KHR_cooperative_matrix, VK_NV_cooperative_matrix2, VK_KHR_shader_bfloat16 */
    bool khr, nv2, bf16;
    chm_vk_coopmat_features_khr khr_f;
    chm_vk_coopmat_device_props_khr khr_p; /* the stages that run KHR matrices */
    chm_vk_coopmat2_features_nv nv2_f;
    chm_vk_bf16_features_khr bf16_f;
} cm_query;

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

/* Why the NV cooperative matrices cannot be used (NULL: they can; the shapes are read). */
static const char *coopmat_nv_missing(chm_vk *vk, const cm_query *q) {
    const chm_vk_caps *c = &vk->caps;
    if (disabled("coopmat_nv")) return "switched off by CHIMERA_VULKAN_DISABLE=coopmat_nv";
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

/* Whether VK_KHR_cooperative_matrix is there with its feature for compute shaders. */
static bool khr_usable(const cm_query *q) {
    return q->khr && q->khr_f.cooperativeMatrix &&
           (q->khr_p.cooperativeMatrixSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
}

/* Why the KHR cooperative matrices cannot be used (NULL: they can; the shapes are read). */
static const char *coopmat_khr_missing(chm_vk *vk, const cm_query *q) {
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
    return NULL;
}

/*
 * Why no cooperative matrices can be used (NULL: KHR's, caps.coopmat_khr, or
 * NVIDIA's where KHR's cannot). why holds the reasons for both. KHR first:
 * on the H100 (driver 580.159.04, session 9) the same shader ran f16 4096^3
 * A B^T at 207.7 TFLOP/s on KHR matrices against 151.1 on NV ones, and
 * chimera-1b's bf16 step at 26.0k tokens/s against 24.8k.
 */
static const char *coopmat_missing(chm_vk *vk, const cm_query *q, char *why, size_t n) {
    if (disabled("coopmat")) return "switched off by CHIMERA_VULKAN_DISABLE=coopmat";
    const char *khr = disabled("coopmat_khr")
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
    if (!emu || strcmp(emu, "1") != 0 || disabled("coopmat")) return "";
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
 * scaling pass), when CHIMERA_VULKAN_COOPMAT_BF16=native asks for them:
 * matmul_cm.comp's KHR bf16 variants where VK_KHR_shader_bfloat16 gives
 * cooperative matrices of bf16 (in the tile's fragment shape, else the
 * other), or emulated (tests). Not the default: on the H100 (session 9) they
 * ran 4096^3 A B^T at 143.5 TFLOP/s against 190.5 for the scaled operands on
 * KHR f16 matrices, scaling passes included (its bf16 matrices seem to be
 * 16x16 only; 16x16 f16 fragments ran 137.7 against 207.7 for 16x8).
 */
static void coopmat_bf16_native_decide(chm_vk *vk, const cm_query *q) {
    chm_vk_caps *c = &vk->caps;
    const char *bf = getenv("CHIMERA_VULKAN_COOPMAT_BF16");
    if (!c->coopmat || !c->coopmat_bf16 || !bf || strcmp(bf, "native") != 0) return;
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
                   "matmuls on the plain path), 1 (default), native (on bf16 matrices) or "
                   "scaled (never on bf16 matrices)", bf);
}

/* Decide the cooperative-matrix path (caps.coopmat, or caps.coopmat_why says why not). */
static chm_status coopmat_decide(chm_vk *vk, const cm_query *q, chm_err *err) {
    chm_vk_caps *c = &vk->caps;
    bool tile_set = false;
    CHM_TRY(coopmat_bf16_env(err));
    CHM_TRY(coopmat_tile_env(&c->cm_tile, &tile_set, err));
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
    }
    CHM_TRY(coopmat_tile_pick(vk, tile_set, err));
    coopmat_bf16_native_decide(vk, q);
    return CHM_OK;
}

/* ---- cooperative matrices 2 (matmul_cm2.comp) ---- */

/* Put the cm2 feature structures of the extensions the device has in front of *head. */
static void cm2_chain(VkPhysicalDevice pd, cm_query *q, void **head) {
    q->khr = has_device_ext(pd, CHM_VK_KHR_COOPMAT_NAME);
    q->nv2 = has_device_ext(pd, CHM_VK_NV_COOPMAT2_NAME);
    q->bf16 = has_device_ext(pd, CHM_VK_KHR_BF16_NAME);
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
static const char *coopmat2_missing(chm_vk *vk, const cm_query *q) {
    chm_vk_caps *c = &vk->caps;
    const chm_vk_coopmat2_features_nv *f = &q->nv2_f;
    if (disabled("coopmat2")) return "switched off by CHIMERA_VULKAN_DISABLE=coopmat2";
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
static chm_status coopmat2_decide(chm_vk *vk, const cm_query *q, chm_err *err) {
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

/* Capabilities from properties and features (before the device exists). */
static void read_caps(chm_vk *vk, bool *f16_storage, cm_query *cm) {
    /* maxBufferSize: core in 1.3, else VK_KHR_maintenance4 (the same structure) */
    bool m4 = vk->props.apiVersion >= VK_API_VERSION_1_3 ||
              has_device_ext(vk->pdev, VK_KHR_MAINTENANCE_4_EXTENSION_NAME);
    VkPhysicalDeviceMaintenance4Properties p4 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES};
    VkPhysicalDeviceVulkan11Properties p11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES, .pNext = m4 ? &p4 : NULL};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &p11};
    vkGetPhysicalDeviceProperties2(vk->pdev, &p2);
    cm->ext = has_device_ext(vk->pdev, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
    VkPhysicalDeviceCooperativeMatrixFeaturesNV fcm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    void *head = cm->ext ? &fcm : NULL;
    cm2_chain(vk->pdev, cm, &head);
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = head};
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, .pNext = &f12};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f11};
    vkGetPhysicalDeviceFeatures2(vk->pdev, &f2);
    VkPhysicalDeviceCooperativeMatrixPropertiesNV pcm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_PROPERTIES_NV};
    cm->khr_p = (chm_vk_coopmat_device_props_khr){
        .sType = CHM_VK_STYPE_COOPMAT_DEVICE_PROPERTIES_KHR, .pNext = cm->ext ? &pcm : NULL};
    if (cm->ext || cm->khr) {
        VkPhysicalDeviceProperties2 q2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                          .pNext = cm->khr ? (void *)&cm->khr_p : (void *)&pcm};
        vkGetPhysicalDeviceProperties2(vk->pdev, &q2);
    }
    cm->feature = fcm.cooperativeMatrix &&
                  (pcm.cooperativeMatrixSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
    cm->memory_model = f12.vulkanMemoryModel;
    const VkPhysicalDeviceLimits *l = &vk->props.limits;
    chm_vk_caps *c = &vk->caps;
    c->api = vk->props.apiVersion;
    c->subgroup_size = p11.subgroupSize ? p11.subgroupSize : 1;
    VkSubgroupFeatureFlags need = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
    c->subgroup = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                  (p11.subgroupSupportedOperations & need) == need && !disabled("subgroup");
    *f16_storage = f11.storageBuffer16BitAccess;
    c->storage16 = f11.storageBuffer16BitAccess && !disabled("16bit");
    c->shader_f16 = f12.shaderFloat16;
    c->shared_bytes = l->maxComputeSharedMemorySize;
    c->push_descriptor = has_device_ext(vk->pdev, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) &&
                         !disabled("push_descriptor");
    c->pipeline_cache = !disabled("pipeline_cache");
    c->splitk = !disabled("splitk");
    c->timestamp_ns = l->timestampPeriod;
    if (l->timestampPeriod <= 0) c->timestamps = false;
    memcpy(c->max_groups, l->maxComputeWorkGroupCount, sizeof c->max_groups);
    /* Tests shrink the grid limit to reach the split over y with small tensors. */
    const char *gx = getenv("CHIMERA_VULKAN_MAX_GROUPS_X");
    if (gx && atol(gx) > 0 && (uint64_t)atol(gx) < c->max_groups[0]) c->max_groups[0] = (uint32_t)atol(gx);
    c->max_wg = l->maxComputeWorkGroupInvocations;
    c->max_range = c->device_range = l->maxStorageBufferRange;
    c->max_alloc = p11.maxMemoryAllocationSize;
    c->max_buffer = m4 ? p4.maxBufferSize : 0;
    c->bind_align = l->minStorageBufferOffsetAlignment > 16 ? l->minStorageBufferOffsetAlignment : 16;
    /* 256 invocations keep a GPU's cores busy; a CPU device (lavapipe) prefers fewer. */
    uint32_t cap = clamp_u32(l->maxComputeWorkGroupSize[0] < c->max_wg
                                 ? l->maxComputeWorkGroupSize[0] : c->max_wg, 1, 256);
    c->wg_elem = clamp_u32(c->subgroup_size * 8, 64, cap);
    c->wg_row = clamp_u32(c->subgroup_size * 8, 32, cap);
    if (vk->props.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU) c->wg_elem = c->wg_row = cap;
}

/*
 * CHIMERA_VULKAN_MAX_RANGE=<bytes> (debugging, tests): bind at most that many
 * bytes per storage buffer, below the device's maxStorageBufferRange, so that
 * small tensors take the split paths of large ones (vk_split.c). Logged once
 * per process whenever it is active, quiet or not: it changes how ops run.
 */
static chm_status range_env(chm_vk *vk, chm_err *err) {
    const char *s = getenv("CHIMERA_VULKAN_MAX_RANGE");
    if (!s || !*s) return CHM_OK;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || s[0] == '-' || v < 1024)
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "CHIMERA_VULKAN_MAX_RANGE=%.40s is not a byte count >= 1024: unset it "
                       "(it is a debugging switch) or give e.g. 4099", s);
    chm_vk_caps *c = &vk->caps;
    if (v < c->device_range) c->max_range = (VkDeviceSize)v;
    static atomic_bool logged;
    if (atomic_exchange(&logged, true)) return CHM_OK;
    if (v < c->device_range)
        fprintf(stderr, "chimera vulkan: CHIMERA_VULKAN_MAX_RANGE=%s: storage-buffer bindings "
                        "span at most %llu bytes (the device allows %llu); larger elementwise "
                        "work is split\n", s, (unsigned long long)c->max_range,
                (unsigned long long)c->device_range);
    else
        fprintf(stderr, "chimera vulkan: CHIMERA_VULKAN_MAX_RANGE=%s is not below the device's "
                        "maxStorageBufferRange (%llu bytes): no effect\n", s,
                (unsigned long long)c->device_range);
    return CHM_OK;
}

/*
 * The KHR and cm2 cooperative-matrix extensions and features at device
 * creation, in front of *head (only for the shaders that will run: the KHR
 * matrices of matmul_cm.comp's KHR variants, or matmul_cm2.comp); names
 * appended to exts.
 */
static void cm_khr_enable(const chm_vk *vk, cm_query *q, void **head, const char **exts,
                          uint32_t *nexts) {
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

static chm_status create_device(chm_vk *vk, chm_err *err) {
    bool has16 = false;
    cm_query cm = {0};
    read_caps(vk, &has16, &cm);
    CHM_TRY(range_env(vk, err));
    CHM_TRY(coopmat_decide(vk, &cm, err));
    CHM_TRY(coopmat2_decide(vk, &cm, err));
    bool coopmat = vk->caps.coopmat && !vk->caps.coopmat_emulated;
    bool coopmat_nv = coopmat && !vk->caps.coopmat_khr;
    /* the emulation converts bf16 -> f16 with f16 arithmetic too */
    bool f16 = vk->caps.coopmat || vk->caps.coopmat2;
    const char *exts[6];
    uint32_t nexts = 0;
    if (vk->caps.push_descriptor) exts[nexts++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    /* Portability implementations (MoltenVK) must be told that we know they are one. */
    if (has_device_ext(vk->pdev, "VK_KHR_portability_subset")) exts[nexts++] = "VK_KHR_portability_subset";
    if (coopmat_nv) exts[nexts++] = VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME;
    /* The cooperative-matrix shaders' features, enabled only when they will run. */
    VkPhysicalDeviceCooperativeMatrixFeaturesNV fcm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
        .cooperativeMatrix = VK_TRUE};
    void *head = coopmat_nv ? &fcm : NULL;
    cm_khr_enable(vk, &cm, &head, exts, &nexts);
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .pNext = head,
        .shaderFloat16 = f16,
        .vulkanMemoryModel = coopmat || vk->caps.coopmat2};
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        .pNext = &f12,
        .storageBuffer16BitAccess = vk->caps.storage16 && has16,
    };
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                  .queueFamilyIndex = vk->qfamily,
                                  .queueCount = 1,
                                  .pQueuePriorities = &prio};
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                             .pNext = &f11,
                             .queueCreateInfoCount = 1,
                             .pQueueCreateInfos = &qi,
                             .enabledExtensionCount = nexts,
                             .ppEnabledExtensionNames = exts};
    VkResult r = vkCreateDevice(vk->pdev, &ci, NULL, &vk->dev);
    if (r != VK_SUCCESS)
        return CHM_ERR(err, CHM_ERR_DEVICE, "vulkan: vkCreateDevice on %s failed (%s)",
                       vk->props.deviceName, chm_vk_result_name(r));
    vkGetDeviceQueue(vk->dev, vk->qfamily, 0, &vk->queue);
    if (vk->caps.push_descriptor) {
        vk->push_descriptor_fn = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(
            vk->dev, "vkCmdPushDescriptorSetKHR");
        vk->caps.push_descriptor = vk->push_descriptor_fn != NULL;
    }
    return CHM_OK;
}

chm_status chm_vk_context_init(chm_vk *vk, const chm_backend_options *opts, chm_err *err) {
    chm_status rc = check_disable_list(err);
    if (!rc) rc = create_instance(vk, err);
    if (!rc) rc = pick_device(vk, opts, err);
    if (!rc) rc = pick_queue(vk, err);
    if (!rc) rc = create_device(vk, err);
    return rc;
}

void chm_vk_context_free(chm_vk *vk) {
    if (vk->dev) vkDestroyDevice(vk->dev, NULL);
    if (vk->messenger) vk->destroy_messenger_fn(vk->instance, vk->messenger, NULL);
    if (vk->instance) vkDestroyInstance(vk->instance, NULL);
}

const char *chm_vk_cm_flavor(const chm_vk *vk) {
    return vk->caps.coopmat_emulated ? "emu" : vk->caps.coopmat_khr ? "khr" : "nv";
}

static const char *type_name(VkPhysicalDeviceType t) {
    static const char *const names[] = {"other", "integrated", "discrete", "virtual", "cpu"};
    return (unsigned)t < 5 ? names[t] : "other";
}

void chm_vk_caps_describe(const chm_vk *vk, char *out, size_t n) {
    const chm_vk_caps *c = &vk->caps;
    char cm[320];
    if (c->coopmat)
        snprintf(cm, sizeof cm, "%s 16x%ux16 f16->f32 for %s matmul (tile %ux%ux%u/%ux%u)",
                 c->coopmat_emulated ? "EMULATED (tests only)" : c->coopmat_khr ? "KHR" : "NV",
                 c->cm_tile.fn,
                 !c->coopmat_bf16         ? "f16 (bf16: plain path)"
                 : c->coopmat_bf16_native ? "f16/bf16 (bf16 on bf16 matrices)"
                                          : "f16/bf16 (bf16 scaled)",
                 c->cm_tile.bm, c->cm_tile.bn, c->cm_tile.bk, c->cm_tile.wm, c->cm_tile.wn);
    else
        snprintf(cm, sizeof cm, "off (%s; f16/bf16 matmul computes in f32)", c->coopmat_why);
    char cm2[224];
    if (c->coopmat2)
        snprintf(cm2, sizeof cm2, "NV2 workgroup scope for %s matmul (tile %ux%ux%u%s on %u "
                 "invocations, granularity %ux%ux%u)", c->coopmat2_bf16 ? "f16/bf16" : "f16",
                 c->cm2_tile.bm, c->cm2_tile.bn, c->cm2_tile.bk,
                 c->cm2_tile.prefetch ? " prefetching" : "", c->cm2_tile.wg,
                 c->cm2_gran[0], c->cm2_gran[1], c->cm2_gran[2]);
    else
        snprintf(cm2, sizeof cm2, "off (%s)", c->coopmat2_why);
    snprintf(out, n,
             "vulkan: %s (%s, Vulkan %u.%u.%u): subgroup %u%s, 16-bit storage %s, push "
             "descriptors %s, timestamps %s, pipeline cache %s, workgroups %u/%u, "
             "bindings up to %llu MiB (larger elementwise work is split), split-K thin "
             "matmuls %s, cooperative matrices %s, cooperative matrices 2 %s",
             vk->props.deviceName, type_name(vk->props.deviceType), VK_API_VERSION_MAJOR(c->api),
             VK_API_VERSION_MINOR(c->api), VK_API_VERSION_PATCH(c->api), c->subgroup_size,
             c->subgroup ? " (reductions use it)" : " (not used)", c->storage16 ? "yes" : "no",
             c->push_descriptor ? "yes" : "no", c->timestamps ? "yes" : "no",
             vk->pipes.cache_path[0] ? vk->pipes.cache_path : "off", c->wg_elem, c->wg_row,
             (unsigned long long)(c->max_range >> 20), c->splitk ? "on" : "off", cm, cm2);
}
