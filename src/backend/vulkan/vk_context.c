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
 * for vk_split.c and vk_memory.c. Which cooperative-matrix paths the device
 * gets (KHR, NV, NV2) is vk_coopmat.c's decision, taken while the device is
 * created here.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"
#include "vk_coopmat.h"

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

bool chm_vk_disabled(const char *feature) {
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
                                        "coopmat2", "splitk", "conv1d_fused", "topk_split",
                                        "scan_shuffle"};
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
                           "coopmat, coopmat_khr, coopmat_nv, coopmat2, splitk, conv1d_fused, "
                           "topk_split, scan_shuffle",
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
        vk->caps.timestamps = bits > 0 && !chm_vk_disabled("timestamps");
        vk->caps.timestamp_mask = bits >= 64 ? ~0ull : (1ull << bits) - 1;
    }
    free(q);
    if (best < 0)
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "vulkan: device %s has no compute queue",
                       vk->props.deviceName);
    return CHM_OK;
}

bool chm_vk_has_device_ext(VkPhysicalDevice pd, const char *name) {
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

/* Capabilities from properties and features (before the device exists). */
static void read_caps(chm_vk *vk, bool *f16_storage, chm_vk_cm_query *cm) {
    /* maxBufferSize: core in 1.3, else VK_KHR_maintenance4 (the same structure) */
    bool m4 = vk->props.apiVersion >= VK_API_VERSION_1_3 ||
              chm_vk_has_device_ext(vk->pdev, VK_KHR_MAINTENANCE_4_EXTENSION_NAME);
    VkPhysicalDeviceMaintenance4Properties p4 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES};
    VkPhysicalDeviceVulkan11Properties p11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES, .pNext = m4 ? &p4 : NULL};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &p11};
    vkGetPhysicalDeviceProperties2(vk->pdev, &p2);
    void *head = NULL;
    chm_vk_cm_query_features(vk, cm, &head);
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = head};
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, .pNext = &f12};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f11};
    vkGetPhysicalDeviceFeatures2(vk->pdev, &f2);
    chm_vk_cm_query_props(vk, cm, f12.vulkanMemoryModel);
    const VkPhysicalDeviceLimits *l = &vk->props.limits;
    chm_vk_caps *c = &vk->caps;
    c->api = vk->props.apiVersion;
    c->subgroup_size = p11.subgroupSize ? p11.subgroupSize : 1;
    VkSubgroupFeatureFlags need = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
    c->subgroup = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                  (p11.subgroupSupportedOperations & need) == need && !chm_vk_disabled("subgroup");
    *f16_storage = f11.storageBuffer16BitAccess;
    c->storage16 = f11.storageBuffer16BitAccess && !chm_vk_disabled("16bit");
    c->shader_f16 = f12.shaderFloat16;
    c->shared_bytes = l->maxComputeSharedMemorySize;
    c->push_descriptor = chm_vk_has_device_ext(vk->pdev, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) &&
                         !chm_vk_disabled("push_descriptor");
    c->pipeline_cache = !chm_vk_disabled("pipeline_cache");
    c->splitk = !chm_vk_disabled("splitk");
    c->conv1d_fused = !chm_vk_disabled("conv1d_fused");
    c->topk_split = !chm_vk_disabled("topk_split");
    /* The scan's backward with its states in registers and shuffle sums wants 4-lane groups
       of a subgroup whose size is a power of two (selective_scan_bwd_sg.comp) */
    VkSubgroupFeatureFlags shuffle = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
    uint32_t sg = c->subgroup_size;
    c->scan_shuffle = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                      (p11.subgroupSupportedOperations & shuffle) == shuffle && sg >= 4 &&
                      (sg & (sg - 1)) == 0 && !chm_vk_disabled("subgroup") &&
                      !chm_vk_disabled("scan_shuffle");
    /* Workgroups of the cooperative-matrix tile at once: 2 an SM on NVIDIA (its registers
       allow two), where VK_NV_shader_sm_builtins counts the SMs; else a guess (matmul.c's
       K split of products with fewer tiles) */
    c->wg_slots = 256;
    if (chm_vk_has_device_ext(vk->pdev, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME)) {
        VkPhysicalDeviceShaderSMBuiltinsPropertiesNV sm = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV};
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                          .pNext = &sm};
        vkGetPhysicalDeviceProperties2(vk->pdev, &p2);
        if (sm.shaderSMCount) c->wg_slots = 2 * sm.shaderSMCount;
    }
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
    c->wg_cap = cap;
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

static chm_status create_device(chm_vk *vk, chm_err *err) {
    bool has16 = false;
    chm_vk_cm_query cm = {0};
    read_caps(vk, &has16, &cm);
    CHM_TRY(range_env(vk, err));
    CHM_TRY(chm_vk_cm_decide(vk, &cm, err));
    bool coopmat = vk->caps.coopmat && !vk->caps.coopmat_emulated;
    /* the emulation converts bf16 -> f16 with f16 arithmetic too */
    bool f16 = vk->caps.coopmat || vk->caps.coopmat2;
    const char *exts[9];
    uint32_t nexts = 0;
    if (vk->caps.push_descriptor) exts[nexts++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    /* Portability implementations (MoltenVK) must be told that we know they are one. */
    if (chm_vk_has_device_ext(vk->pdev, "VK_KHR_portability_subset"))
        exts[nexts++] = "VK_KHR_portability_subset";
    /* The cooperative-matrix shaders' features, enabled only when they will run. */
    void *head = NULL;
    chm_vk_cm_enable(vk, &cm, &head, exts, &nexts);
    /* Compiler statistics of each pipeline, when asked for (CHIMERA_VULKAN_PIPELINE_STATS=1) */
    const char *ps = getenv("CHIMERA_VULKAN_PIPELINE_STATS");
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pef = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pNext = head};
    if (ps && !strcmp(ps, "1")) {
        VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR has = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR};
        VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                        .pNext = &has};
        bool ext = chm_vk_has_device_ext(vk->pdev,
                                         VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
        if (ext) vkGetPhysicalDeviceFeatures2(vk->pdev, &f2);
        vk->caps.pipeline_stats = ext && has.pipelineExecutableInfo;
        if (vk->caps.pipeline_stats) {
            exts[nexts++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
            pef.pipelineExecutableInfo = VK_TRUE; /* statistics and internal representations */
            head = &pef;
        } else {
            fprintf(stderr, "chimera vulkan: CHIMERA_VULKAN_PIPELINE_STATS=1: %s has no "
                            "VK_KHR_pipeline_executable_properties; no statistics\n",
                    vk->props.deviceName);
        }
    }
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

static const char *type_name(VkPhysicalDeviceType t) {
    static const char *const names[] = {"other", "integrated", "discrete", "virtual", "cpu"};
    return (unsigned)t < 5 ? names[t] : "other";
}

void chm_vk_caps_describe(const chm_vk *vk, char *out, size_t n) {
    const chm_vk_caps *c = &vk->caps;
    char cm[320];
    if (c->coopmat)
        snprintf(cm, sizeof cm, "%s 16x%ux16 f16->f32 for %s matmul (tile %ux%ux%u/%ux%u%s)",
                 c->coopmat_emulated ? "EMULATED (tests only)" : c->coopmat_khr ? "KHR" : "NV",
                 c->cm_tile.fn,
                 !c->coopmat_bf16         ? "f16 (bf16: plain path)"
                 : c->coopmat_bf16_native ? "f16/bf16 (bf16 on bf16 matrices)"
                                          : "f16/bf16 (bf16 scaled)",
                 c->cm_tile.bm, c->cm_tile.bn, c->cm_tile.bk, c->cm_tile.wm, c->cm_tile.wn,
                 c->cm_pin_subgroup ? ", subgroup size pinned" : "");
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
