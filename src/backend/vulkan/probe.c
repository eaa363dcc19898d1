/*
 * probe.c: Vulkan device discovery for `chimera info` and `auto` selection.
 *
 * Creates a short-lived VkInstance, describes every physical device (the
 * properties, features and extensions the vulkan backend chooses its shader
 * variants by) and destroys the instance again: no logical device is made, so
 * probing is cheap and touches no GPU state. Nothing here fails hard: a
 * missing driver or any Vulkan error gives zero devices and a one-line reason.
 *
 * Structures of Vulkan 1.1/1.2 are chained into the *2 queries only when the
 * device (and the instance) offer that version or the matching extension, so
 * the probe stays clean under the Khronos validation layer. Extensions newer
 * than the headers we build against are looked up by their name string.
 */
#include "chimera/device.h"

#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>

/*
 * Mesa's lavapipe keeps a buffer allocated in vkEnumeratePhysicalDevices in a
 * global and never frees it; once the loader dlclose()s the driver,
 * LeakSanitizer reports it from an unloaded module that no suppression file
 * can name (and unwinding into the loader costs ASAN_OPTIONS=
 * fast_unwind_on_malloc=0, which makes every test several times slower).
 * Under AddressSanitizer the calls that enter the driver therefore run with
 * leak checking paused for this thread, and only those calls: chimera's own
 * allocations stay outside the pauses. ASan still checks every access.
 */
#if defined(__SANITIZE_ADDRESS__)
#define CHM_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHM_LSAN 1
#endif
#endif
#ifdef CHM_LSAN
#include <sanitizer/lsan_interface.h>
static void leak_check_pause(void) { __lsan_disable(); }
static void leak_check_resume(void) { __lsan_enable(); }
#else
static void leak_check_pause(void) {}
static void leak_check_resume(void) {}
#endif

#define NO_ICD_WHY                                                                 \
    "no Vulkan driver (ICD) found: apt-get install mesa-vulkan-drivers for lavapipe, " \
    "or install your GPU's driver"

/* The first driver manifest in the loader's system folders, or false when there is none. */
static bool find_manifest(char *path, size_t n) {
    static const char *const dirs[] = {"/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d",
                                       "/usr/share/vulkan/icd.d"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char pattern[64];
        snprintf(pattern, sizeof pattern, "%s/*.json", dirs[i]);
        glob_t g;
        bool found = glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc > 0;
        if (found) snprintf(path, n, "%s", g.gl_pathv[0]);
        globfree(&g);
        if (found) return true;
    }
    return false;
}

/*
 * Why vkCreateInstance found no driver: none installed, one named by the
 * environment that does not load, or manifests whose libraries do not load
 * (typically NVIDIA's in a container started without graphics capability).
 */
static void explain_no_driver(char *why, size_t n) {
    const char *env = "VK_DRIVER_FILES", *val = getenv(env);
    if (!val || !*val) val = getenv(env = "VK_ICD_FILENAMES");
    char manifest[200];
    if (val && *val)
        snprintf(why, n, "no Vulkan driver (ICD) loads from %s=%.80s: fix or unset it", env, val);
    else if (find_manifest(manifest, sizeof manifest))
        snprintf(why, n,
                 "no Vulkan driver (ICD) loads although %.80s is installed: "
                 "VK_LOADER_DEBUG=driver shows why (NVIDIA in a container: "
                 "NVIDIA_DRIVER_CAPABILITIES needs graphics)", manifest);
    else
        snprintf(why, n, "%s", NO_ICD_WHY);
}

/* Short name of the VkResult values the probe can meet. */
static const char *vk_result_name(VkResult r) {
    switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    default: return "VkResult";
    }
}

/* The loader's instance version; 1.0 when it predates vkEnumerateInstanceVersion. */
static uint32_t loader_version(void) {
    PFN_vkEnumerateInstanceVersion f =
        (PFN_vkEnumerateInstanceVersion)vkGetInstanceProcAddr(NULL, "vkEnumerateInstanceVersion");
    uint32_t v = VK_API_VERSION_1_0;
    if (!f || f(&v) != VK_SUCCESS) v = VK_API_VERSION_1_0;
    return v;
}

/* Whether the loader (with its implicit layers) offers instance extension `name`. */
static bool instance_has_ext(const char *name) {
    uint32_t n = 0;
    if (vkEnumerateInstanceExtensionProperties(NULL, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkExtensionProperties *ext = calloc(n, sizeof *ext);
    bool found = false;
    if (ext && vkEnumerateInstanceExtensionProperties(NULL, &n, ext) >= VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(ext[i].extensionName, name) == 0;
    free(ext);
    return found;
}

/*
 * Create the probing instance at the loader's own version (so 1.1/1.2 queries
 * are allowed wherever a device offers them), enumerating portability
 * implementations such as MoltenVK too when the loader knows them.
 */
static VkResult create_instance(uint32_t api, VkInstance *out) {
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "chimera",
        .applicationVersion = VK_MAKE_API_VERSION(0, 0, 1, 0),
        .pEngineName = "chimera",
        .engineVersion = VK_MAKE_API_VERSION(0, 0, 1, 0),
        .apiVersion = api,
    };
    const char *exts[1];
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
        .ppEnabledExtensionNames = exts,
    };
    if (instance_has_ext(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
        exts[ci.enabledExtensionCount++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
        ci.flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
    leak_check_pause();
    VkResult r = vkCreateInstance(&ci, NULL, out);
    leak_check_resume();
    return r;
}

/* Device extensions the probe reports or needs to decide which structs it may chain. */
typedef struct dev_exts {
    bool driver_props, float16_int8, coopmat_khr, coopmat_nv, coopmat2_nv, bf16;
} dev_exts;

static dev_exts read_device_exts(VkPhysicalDevice pd) {
    dev_exts e = {0};
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || n == 0) return e;
    VkExtensionProperties *ext = calloc(n, sizeof *ext);
    if (!ext || vkEnumerateDeviceExtensionProperties(pd, NULL, &n, ext) < VK_SUCCESS) n = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *s = ext[i].extensionName;
        e.driver_props |= strcmp(s, "VK_KHR_driver_properties") == 0;
        e.float16_int8 |= strcmp(s, "VK_KHR_shader_float16_int8") == 0;
        e.coopmat_khr |= strcmp(s, "VK_KHR_cooperative_matrix") == 0;
        e.coopmat_nv |= strcmp(s, "VK_NV_cooperative_matrix") == 0;
        e.coopmat2_nv |= strcmp(s, "VK_NV_cooperative_matrix2") == 0;
        e.bf16 |= strcmp(s, "VK_KHR_shader_bfloat16") == 0;
    }
    free(ext);
    return e;
}

static const char *type_name(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
    }
}

/* Subgroup size and arithmetic (1.1 core) and driver name/info (1.2 core or extension). */
static void fill_properties2(VkPhysicalDevice pd, uint32_t api, const dev_exts *e,
                             chm_vulkan_device *d) {
    VkPhysicalDeviceSubgroupProperties sub = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceDriverProperties drv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &sub};
    bool have_drv = api >= VK_API_VERSION_1_2 || e->driver_props;
    if (have_drv) sub.pNext = &drv;
    vkGetPhysicalDeviceProperties2(pd, &p2);
    d->subgroup_size = sub.subgroupSize;
    d->subgroup_arith = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                        (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    if (have_drv && drv.driverName[0])
        snprintf(d->driver, sizeof d->driver, "%.60s%s%.60s", drv.driverName,
                 drv.driverInfo[0] ? ", " : "", drv.driverInfo);
}

/* shaderFloat16 (1.2 core or VK_KHR_shader_float16_int8) and 16-bit storage (1.1 core). */
static void fill_features2(VkPhysicalDevice pd, uint32_t api, const dev_exts *e,
                           chm_vulkan_device *d) {
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
    VkPhysicalDevice16BitStorageFeatures s16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &s16};
    bool have_f16 = api >= VK_API_VERSION_1_2 || e->float16_int8;
    if (have_f16) s16.pNext = &f16;
    vkGetPhysicalDeviceFeatures2(pd, &f2);
    d->storage_16bit = s16.storageBuffer16BitAccess;
    d->shader_f16 = have_f16 && f16.shaderFloat16;
}

/* The largest DEVICE_LOCAL heap: what a training run can keep resident. */
static uint64_t largest_local_heap(VkPhysicalDevice pd) {
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    uint64_t best = 0;
    for (uint32_t i = 0; i < mp.memoryHeapCount && i < VK_MAX_MEMORY_HEAPS; i++)
        if ((mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mp.memoryHeaps[i].size > best)
            best = mp.memoryHeaps[i].size;
    return best;
}

/* Describe one physical device; inst_api is the instance's version. */
static void fill_device(VkPhysicalDevice pd, uint32_t inst_api, chm_vulkan_device *d) {
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(pd, &props);
    snprintf(d->name, sizeof d->name, "%s", props.deviceName);
    snprintf(d->type, sizeof d->type, "%s", type_name(props.deviceType));
    d->vendor_id = props.vendorID;
    d->device_id = props.deviceID;
    d->api_major = VK_API_VERSION_MAJOR(props.apiVersion);
    d->api_minor = VK_API_VERSION_MINOR(props.apiVersion);
    d->api_patch = VK_API_VERSION_PATCH(props.apiVersion);
    snprintf(d->driver, sizeof d->driver, "driver version 0x%x", props.driverVersion);
    d->shared_memory = props.limits.maxComputeSharedMemorySize;
    d->device_memory = largest_local_heap(pd);

    dev_exts e = read_device_exts(pd);
    d->coopmat_khr = e.coopmat_khr;
    d->coopmat_nv = e.coopmat_nv;
    d->coopmat2_nv = e.coopmat2_nv;
    d->shader_bf16 = e.bf16;
    /* A 1.0 device (or instance) has no *2 queries: leave those fields zero. */
    uint32_t api = props.apiVersion < inst_api ? props.apiVersion : inst_api;
    if (api >= VK_API_VERSION_1_1) {
        fill_properties2(pd, api, &e, d);
        fill_features2(pd, api, &e, d);
    }
}

/* Enumerate the instance's devices into p (count 0 and why on failure). */
static void enumerate(VkInstance inst, uint32_t api, chm_vulkan_probe *p) {
    uint32_t n = 0;
    leak_check_pause();
    VkResult r = vkEnumeratePhysicalDevices(inst, &n, NULL);
    leak_check_resume();
    /* The loader answers INITIALIZATION_FAILED when every installed ICD finds no hardware. */
    if (r == VK_ERROR_INITIALIZATION_FAILED || (r == VK_SUCCESS && n == 0)) {
        snprintf(p->why, sizeof p->why,
                 "the installed Vulkan drivers see no device: apt-get install "
                 "mesa-vulkan-drivers for lavapipe, or install your GPU's driver");
        return;
    }
    if (r != VK_SUCCESS) {
        snprintf(p->why, sizeof p->why, "vkEnumeratePhysicalDevices failed (%s %d)",
                 vk_result_name(r), (int)r);
        return;
    }
    VkPhysicalDevice *pd = calloc(n, sizeof *pd);
    if (!pd) {
        snprintf(p->why, sizeof p->why, "out of host memory while probing Vulkan devices");
        return;
    }
    leak_check_pause();
    r = vkEnumeratePhysicalDevices(inst, &n, pd); /* VK_INCOMPLETE: devices came and went */
    leak_check_resume();
    if (r >= VK_SUCCESS)
        for (uint32_t i = 0; i < n && p->count < CHM_MAX_DEVICES; i++)
            fill_device(pd[i], api, &p->dev[p->count++]);
    else
        snprintf(p->why, sizeof p->why, "vkEnumeratePhysicalDevices failed (%s %d)",
                 vk_result_name(r), (int)r);
    free(pd);
}

/*
 * CHIMERA_VULKAN_DEVICE: the device index the user forces, or -1 when unset.
 * Returns -2 when it is set but not an index below `count`.
 */
static int forced_device(int count) {
    const char *s = getenv("CHIMERA_VULKAN_DEVICE");
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 0 || v >= count) return -2;
    return (int)v;
}

void chm_vulkan_probe_run(chm_vulkan_probe *p) {
    memset(p, 0, sizeof *p);
    p->compiled = true;
    uint32_t api = loader_version();
    snprintf(p->loader, sizeof p->loader, "%u.%u.%u", VK_API_VERSION_MAJOR(api),
             VK_API_VERSION_MINOR(api), VK_API_VERSION_PATCH(api));
    VkInstance inst = VK_NULL_HANDLE;
    VkResult r = create_instance(api, &inst);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER) {
        explain_no_driver(p->why, sizeof p->why);
        return;
    }
    if (r != VK_SUCCESS) {
        snprintf(p->why, sizeof p->why, "vkCreateInstance failed (%s %d)", vk_result_name(r),
                 (int)r);
        return;
    }
    enumerate(inst, api, p);
    vkDestroyInstance(inst, NULL);
    /* A bad override leaves the devices listed but none chosen: say why. */
    if (p->count > 0 && forced_device(p->count) == -2)
        snprintf(p->why, sizeof p->why,
                 "CHIMERA_VULKAN_DEVICE=%.40s is not a device index 0..%d: unset it or pick "
                 "one from `chimera info`",
                 getenv("CHIMERA_VULKAN_DEVICE"), p->count - 1);
}

/* Preference of a device type for `auto`: lower is better. */
static int type_rank(const char *type) {
    static const char *const order[] = {"discrete", "integrated", "virtual", "cpu"};
    for (int i = 0; i < 4; i++)
        if (strcmp(type, order[i]) == 0) return i;
    return 4;
}

int chm_vulkan_probe_best(const chm_vulkan_probe *p) {
    if (!p || p->count <= 0) return -1;
    int forced = forced_device(p->count);
    if (forced != -1) return forced >= 0 ? forced : -1;
    int best = 0;
    for (int i = 1; i < p->count; i++)
        if (type_rank(p->dev[i].type) < type_rank(p->dev[best].type)) best = i;
    return best;
}
