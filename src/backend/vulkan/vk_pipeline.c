/*
 * vk_pipeline.c: shader variants, pipeline layouts, pipelines and the on-disk cache.
 *
 * Shaders are embedded SPIR-V (chm_vk_shaders, generated at build time and
 * sorted by name). A pipeline is made the first time a dispatch asks for a
 * (variant, specialization constants) pair and kept until close. Every
 * pipeline uses descriptor set 0 with N storage buffers (one layout per N)
 * and a 128-byte push-constant range.
 *
 * Descriptors: with VK_KHR_push_descriptor (NVIDIA, AMD, Intel, lavapipe,
 * MoltenVK all offer it) the set layouts are push-descriptor layouts and
 * each dispatch pushes its bindings into the command buffer: no descriptor
 * set is ever allocated. Without it (or with CHIMERA_VULKAN_DISABLE=
 * push_descriptor) each batch allocates its sets from its own descriptor
 * pool, which is reset in one call when the batch has finished; nothing is
 * allocated or freed per dispatch from the heap either way. Buffer device
 * addresses in push constants were the third option; they were not chosen
 * because 128 bytes of push constants cannot hold the 17 pointers of the
 * selective scan's backward, and a descriptor keeps the driver's bounds.
 *
 * The VkPipelineCache is saved under $XDG_CACHE_HOME/chimera (or
 * ~/.cache/chimera) behind our own header (magic, version, device identity,
 * the embedded shader set's hash, size and checksum), which is validated
 * along with the driver's header before the driver sees the data: a stale,
 * foreign or truncated file is ignored, never trusted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vk.h"

/* ---- shader lookup ---- */

static int cmp_name(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const chm_vk_shader *)elem)->name);
}

int chm_vk_shader_find(const char *name) {
    const chm_vk_shader *s = bsearch(name, chm_vk_shaders, (size_t)chm_vk_shader_count,
                                     sizeof *chm_vk_shaders, cmp_name);
    return s ? (int)(s - chm_vk_shaders) : -1;
}

/* ---- the on-disk pipeline cache ---- */

#define CACHE_MAGIC "CHMVKPC"
#define CACHE_VERSION 1u

/* Our header in front of the driver's cache data. */
typedef struct cache_header {
    char magic[8];
    uint32_t version, vendor, device, driver;
    uint8_t uuid[VK_UUID_SIZE];
    uint64_t shaders;   /* hash of the embedded shader set */
    uint64_t size;      /* bytes of driver data that follow */
    uint64_t checksum;  /* FNV-1a of those bytes */
} cache_header;

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t shader_set_hash(void) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < chm_vk_shader_count; i++)
        h = fnv1a(h, chm_vk_shaders[i].code, chm_vk_shaders[i].size);
    return h;
}

static cache_header expected_header(const chm_vk *vk) {
    cache_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CACHE_MAGIC, sizeof CACHE_MAGIC);
    h.version = CACHE_VERSION;
    h.vendor = vk->props.vendorID;
    h.device = vk->props.deviceID;
    h.driver = vk->props.driverVersion;
    memcpy(h.uuid, vk->props.pipelineCacheUUID, VK_UUID_SIZE);
    h.shaders = shader_set_hash();
    return h;
}

/* mkdir -p for the cache folder; false when it cannot exist. */
static bool make_dirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        bool ok = mkdir(path, 0755) == 0 || errno == EEXIST;
        *p = '/';
        if (!ok) return false;
    }
    return mkdir(path, 0755) == 0 || errno == EEXIST;
}

/* The cache file's path, or false when there is no home to put it in. */
static bool cache_path(const chm_vk *vk, char *out, size_t n) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[400];
    if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/chimera", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.cache/chimera", home);
    else return false;
    if (!make_dirs(dir)) return false;
    snprintf(out, n, "%s/vulkan-%04x-%04x.pipelines", dir, vk->props.vendorID,
             vk->props.deviceID);
    return true;
}

/* The driver's own header (VkPipelineCacheHeaderVersionOne) agrees with the device. */
static bool driver_header_ok(const chm_vk *vk, const unsigned char *d, size_t n) {
    if (n < 16 + VK_UUID_SIZE) return false;
    uint32_t w[4];
    memcpy(w, d, sizeof w);
    return w[0] >= 16 + VK_UUID_SIZE && w[0] <= n &&
           w[1] == VK_PIPELINE_CACHE_HEADER_VERSION_ONE && w[2] == vk->props.vendorID &&
           w[3] == vk->props.deviceID &&
           memcmp(d + 16, vk->props.pipelineCacheUUID, VK_UUID_SIZE) == 0;
}

/* Read and validate the cache file; *data is NULL when there is nothing usable. */
static void cache_read(const chm_vk *vk, const char *path, void **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    cache_header h, want = expected_header(vk);
    unsigned char *buf = NULL;
    bool ok = fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, want.magic, 8) == 0 &&
              h.version == want.version && h.vendor == want.vendor && h.device == want.device &&
              h.driver == want.driver && memcmp(h.uuid, want.uuid, VK_UUID_SIZE) == 0 &&
              h.shaders == want.shaders && h.size > 0 && h.size < ((uint64_t)1 << 30);
    if (ok) buf = malloc((size_t)h.size + 1);
    ok = ok && buf && fread(buf, 1, (size_t)h.size + 1, f) == h.size &&
         fnv1a(0xcbf29ce484222325ull, buf, (size_t)h.size) == h.checksum &&
         driver_header_ok(vk, buf, (size_t)h.size);
    fclose(f);
    if (!ok) {
        free(buf);
        return;
    }
    *data = buf;
    *size = (size_t)h.size;
}

/* Write the driver's cache data behind our header, atomically (temporary file + rename). */
static void cache_write(const chm_vk *vk) {
    const chm_vk_pipelines *p = &vk->pipes;
    size_t n = 0;
    if (vkGetPipelineCacheData(vk->dev, p->cache, &n, NULL) != VK_SUCCESS || n == 0) return;
    unsigned char *buf = malloc(n);
    if (!buf || vkGetPipelineCacheData(vk->dev, p->cache, &n, buf) != VK_SUCCESS) {
        free(buf);
        return;
    }
    cache_header h = expected_header(vk);
    h.size = n;
    h.checksum = fnv1a(0xcbf29ce484222325ull, buf, n);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", p->cache_path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(&h, sizeof h, 1, f) == 1 && fwrite(buf, 1, n, f) == n;
    if (f) ok = (fclose(f) == 0) && ok;
    if (ok) ok = rename(tmp, p->cache_path) == 0;
    if (!ok) remove(tmp);
    free(buf);
}

static chm_status cache_init(chm_vk *vk) {
    chm_vk_pipelines *p = &vk->pipes;
    void *data = NULL;
    size_t size = 0;
    if (vk->caps.pipeline_cache && cache_path(vk, p->cache_path, sizeof p->cache_path))
        cache_read(vk, p->cache_path, &data, &size);
    else
        p->cache_path[0] = '\0';
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                    .initialDataSize = size,
                                    .pInitialData = data};
    VkResult r = vkCreatePipelineCache(vk->dev, &ci, NULL, &p->cache);
    bool had_data = data != NULL;
    free(data);
    if (r != VK_SUCCESS && had_data) { /* the driver refused our data after all: start empty */
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = vkCreatePipelineCache(vk->dev, &ci, NULL, &p->cache);
    }
    return r == VK_SUCCESS ? CHM_OK : chm_vk_fail(vk, r, "vkCreatePipelineCache");
}

/* ---- layouts ---- */

static chm_status layouts_init(chm_vk *vk) {
    chm_vk_pipelines *p = &vk->pipes;
    VkDescriptorSetLayoutBinding b[CHM_VK_MAX_BINDINGS];
    for (int i = 0; i < CHM_VK_MAX_BINDINGS; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = (uint32_t)i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkPushConstantRange pc = {VK_SHADER_STAGE_COMPUTE_BIT, 0, CHM_VK_PUSH_BYTES};
    for (int n = 1; n <= CHM_VK_MAX_BINDINGS; n++) {
        VkDescriptorSetLayoutCreateInfo si = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
            .flags = vk->caps.push_descriptor
                         ? VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR : 0,
            .bindingCount = (uint32_t)n,
            .pBindings = b};
        VkResult r = vkCreateDescriptorSetLayout(vk->dev, &si, NULL, &p->set_layout[n]);
        if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkCreateDescriptorSetLayout");
        VkPipelineLayoutCreateInfo li = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                         .setLayoutCount = 1,
                                         .pSetLayouts = &p->set_layout[n],
                                         .pushConstantRangeCount = 1,
                                         .pPushConstantRanges = &pc};
        r = vkCreatePipelineLayout(vk->dev, &li, NULL, &p->layout[n]);
        if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkCreatePipelineLayout");
    }
    return CHM_OK;
}

chm_status chm_vk_pipelines_init(chm_vk *vk) {
    chm_vk_pipelines *p = &vk->pipes;
    p->by_shader = calloc((size_t)chm_vk_shader_count, sizeof *p->by_shader);
    if (!p->by_shader) return CHM_ERR(&vk->be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    CHM_TRY(layouts_init(vk));
    return cache_init(vk);
}

void chm_vk_pipelines_destroy(chm_vk *vk) {
    chm_vk_pipelines *p = &vk->pipes;
    for (int i = 0; p->by_shader && i < chm_vk_shader_count; i++)
        for (chm_vk_pipe *q = p->by_shader[i], *next; q; q = next) {
            next = q->next;
            vkDestroyPipeline(vk->dev, q->pipeline, NULL);
            free(q);
        }
    free(p->by_shader);
    if (p->cache) {
        if (p->cache_dirty && p->cache_path[0]) cache_write(vk);
        vkDestroyPipelineCache(vk->dev, p->cache, NULL);
    }
    for (int n = 1; n <= CHM_VK_MAX_BINDINGS; n++) {
        if (p->layout[n]) vkDestroyPipelineLayout(vk->dev, p->layout[n], NULL);
        if (p->set_layout[n]) vkDestroyDescriptorSetLayout(vk->dev, p->set_layout[n], NULL);
    }
    memset(p, 0, sizeof *p);
}

/* ---- pipelines ---- */

/* The driver's statistics of a new pipeline (registers, spills...) on stderr, one line. */
static void pipeline_stats_log(chm_vk *vk, const chm_vk_pipe *q, const char *name) {
    PFN_vkGetPipelineExecutableStatisticsKHR get = (PFN_vkGetPipelineExecutableStatisticsKHR)
        vkGetDeviceProcAddr(vk->dev, "vkGetPipelineExecutableStatisticsKHR");
    if (!get) return;
    VkPipelineExecutableInfoKHR info = {.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
                                        .pipeline = q->pipeline, .executableIndex = 0};
    VkPipelineExecutableStatisticKHR st[24];
    uint32_t n = 24;
    for (uint32_t i = 0; i < n; i++)
        st[i] = (VkPipelineExecutableStatisticKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
    VkResult r = get(vk->dev, &info, &n, st);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return;
    char line[1024];
    int at = snprintf(line, sizeof line, "chimera vulkan: pipeline %s spec", name);
    for (int i = 0; i < q->nspec && at < (int)sizeof line; i++)
        at += snprintf(line + at, sizeof line - (size_t)at, "%s%u", i ? "," : " ", q->spec[i]);
    for (uint32_t i = 0; i < n && at < (int)sizeof line; i++) {
        const VkPipelineExecutableStatisticKHR *x = &st[i];
        at += snprintf(line + at, sizeof line - (size_t)at, "; %s ", x->name);
        if (at >= (int)sizeof line) break;
        switch (x->format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
            at += snprintf(line + at, sizeof line - (size_t)at, "%s", x->value.b32 ? "yes" : "no");
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
            at += snprintf(line + at, sizeof line - (size_t)at, "%lld", (long long)x->value.i64);
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
            at += snprintf(line + at, sizeof line - (size_t)at, "%llu",
                           (unsigned long long)x->value.u64);
            break;
        default:
            at += snprintf(line + at, sizeof line - (size_t)at, "%g", x->value.f64);
        }
    }
    fprintf(stderr, "%s\n", line);
}

/*
 * CHIMERA_VULKAN_PIPELINE_DUMP=DIR (with the statistics on): the driver's internal
 * representations of a new pipeline (what it offers: assembly, IR), one text file each,
 * DIR/<shader>-<spec constants>-<n>.txt; a line on stderr says what was written.
 */
static void pipeline_ir_dump(chm_vk *vk, const chm_vk_pipe *q, const char *name) {
    const char *dir = getenv("CHIMERA_VULKAN_PIPELINE_DUMP");
    PFN_vkGetPipelineExecutableInternalRepresentationsKHR get =
        (PFN_vkGetPipelineExecutableInternalRepresentationsKHR)vkGetDeviceProcAddr(
            vk->dev, "vkGetPipelineExecutableInternalRepresentationsKHR");
    if (!dir || !*dir || !get) return;
    VkPipelineExecutableInfoKHR info = {.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
                                        .pipeline = q->pipeline, .executableIndex = 0};
    VkPipelineExecutableInternalRepresentationKHR ir[8];
    uint32_t n = 8;
    for (uint32_t i = 0; i < n; i++)
        ir[i] = (VkPipelineExecutableInternalRepresentationKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INTERNAL_REPRESENTATION_KHR};
    VkResult r = get(vk->dev, &info, &n, ir); /* first: the sizes */
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return;
    if (n == 0) fprintf(stderr, "chimera vulkan: pipeline %s: the driver offers no internal "
                                "representation\n", name);
    for (uint32_t i = 0; i < n; i++) ir[i].pData = ir[i].dataSize ? malloc(ir[i].dataSize) : NULL;
    r = get(vk->dev, &info, &n, ir);
    char spec[96] = "";
    int at = 0;
    for (int i = 0; i < q->nspec && at < (int)sizeof spec; i++)
        at += snprintf(spec + at, sizeof spec - (size_t)at, "%s%u", i ? "_" : "", q->spec[i]);
    for (uint32_t i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s-%s-%u.txt", dir, name, spec, i);
        FILE *f = (r == VK_SUCCESS || r == VK_INCOMPLETE) && ir[i].pData ? fopen(path, "w") : NULL;
        if (f) {
            fprintf(f, "# %s: %s\n", ir[i].name, ir[i].description);
            size_t len = ir[i].dataSize;
            if (ir[i].isText && len && ((char *)ir[i].pData)[len - 1] == 0) len--;
            fwrite(ir[i].pData, 1, len, f);
            fclose(f);
            fprintf(stderr, "chimera vulkan: pipeline %s: %s (%zu bytes) -> %s\n", name,
                    ir[i].name, ir[i].dataSize, path);
        }
        free(ir[i].pData);
    }
}

static chm_status pipeline_create(chm_vk *vk, chm_vk_pipe *q) {
    const chm_vk_shader *s = &chm_vk_shaders[q->shader];
    VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = s->size,
                                   .pCode = s->code};
    VkShaderModule mod;
    VkResult r = vkCreateShaderModule(vk->dev, &mi, NULL, &mod);
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkCreateShaderModule");
    VkSpecializationMapEntry map[2 + CHM_VK_MAX_SPEC];
    for (int i = 0; i < q->nspec; i++)
        map[i] = (VkSpecializationMapEntry){(uint32_t)i, (uint32_t)(i * 4), 4};
    VkSpecializationInfo spec = {(uint32_t)q->nspec, map, (size_t)q->nspec * 4, q->spec};
    /* the cooperative-matrix shaders' subgroup size, where it could vary (vk_coopmat.c) */
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfoEXT pin = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO_EXT,
        .requiredSubgroupSize = vk->caps.subgroup_size};
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .pNext = chm_vk_cm_pins(vk, s->name) ? &pin : NULL,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = mod,
                  .pName = "main",
                  .pSpecializationInfo = &spec},
        .flags = vk->caps.pipeline_stats
                     ? VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR |
                           (getenv("CHIMERA_VULKAN_PIPELINE_DUMP")
                                ? VK_PIPELINE_CREATE_CAPTURE_INTERNAL_REPRESENTATIONS_BIT_KHR
                                : 0)
                     : 0,
        .layout = vk->pipes.layout[q->nbind]};
    r = vkCreateComputePipelines(vk->dev, vk->pipes.cache, 1, &ci, NULL, &q->pipeline);
    vkDestroyShaderModule(vk->dev, mod, NULL);
    if (r != VK_SUCCESS) {
        char what[160];
        snprintf(what, sizeof what, "creating the pipeline of shader %s", s->name);
        return chm_vk_fail(vk, r, what);
    }
    if (vk->caps.pipeline_stats) {
        pipeline_stats_log(vk, q, s->name);
        pipeline_ir_dump(vk, q, s->name);
    }
    vk->pipes.cache_dirty = true;
    vk->stats.pipelines++;
    return CHM_OK;
}

chm_status chm_vk_pipeline_get(chm_vk *vk, int shader, int nbind, const uint32_t *spec, int nspec,
                               VkPipeline *out) {
    for (chm_vk_pipe *q = vk->pipes.by_shader[shader]; q; q = q->next)
        if (q->nbind == nbind && q->nspec == nspec &&
            memcmp(q->spec, spec, (size_t)nspec * sizeof *spec) == 0) {
            *out = q->pipeline;
            return CHM_OK;
        }
    chm_vk_pipe *q = calloc(1, sizeof *q);
    if (!q) return CHM_ERR(&vk->be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    q->shader = shader;
    q->nbind = nbind;
    q->nspec = nspec;
    memcpy(q->spec, spec, (size_t)nspec * sizeof *spec);
    chm_status rc = pipeline_create(vk, q);
    if (rc) {
        free(q);
        return rc;
    }
    q->next = vk->pipes.by_shader[shader];
    vk->pipes.by_shader[shader] = q;
    *out = q->pipeline;
    return CHM_OK;
}
