/*
 * vulkan_backend.h: what the rest of chimera sees of the vulkan backend.
 *
 * The registry opens it through chm_vulkan_open; tests, `chimera info` and
 * `--profile` use the few introspection calls below. Everything else is
 * private to src/backend/vulkan/ (vk.h). Built only with CHIMERA_HAVE_VULKAN.
 *
 * Environment switches read once by chm_vulkan_open (habit 12: every optional
 * feature is detected, logged once and can be switched off):
 *   CHIMERA_VULKAN_DEVICE=N        use physical device N (as `chimera info` lists them)
 *   CHIMERA_VULKAN_DISABLE=a,b     switch features off: subgroup, 16bit,
 *                                  push_descriptor, pipeline_cache, timestamps,
 *                                  coopmat (f16 matmul on cooperative matrices),
 *                                  coopmat_khr / coopmat_nv (one of the two extensions
 *                                  that give them: KHR's is preferred), coopmat2,
 *                                  splitk (thin A^T B products split over K, matmul.c),
 *                                  conv1d_fused (causal_conv1d_bwd in three passes),
 *                                  topk_split (select_topk one workgroup a row),
 *                                  scan_shuffle (the selective scan's older backward)
 *   CHIMERA_VULKAN_COOPMAT_BF16=0  bf16 matmuls on the plain path (default 1: on the
 *                                  cooperative matrices, scaled into f16's range); =native:
 *                                  as stored on KHR bf16 matrices where the device has them
 *                                  (or emulated ones, tests); =scaled: the default
 *   CHIMERA_VULKAN_COOPMAT_TILE=BMxBNxBK/WMxWN[/16x16|/16x8]  tile (and fragment shape)
 *                                  of the cooperative-matrix matmul for large products
 *                                  (default 128x128x32/64x64, else the first that fits; tuning)
 *   CHIMERA_VULKAN_VALIDATION=1    enable the Khronos validation layer and count its
 *                                  messages (also on when VK_INSTANCE_LAYERS names it)
 *   CHIMERA_VULKAN_PROFILE=1       time every dispatch (see chm_vulkan_profile_report)
 *   CHIMERA_VULKAN_STATS=1         print the counters and host times of chm_vulkan_stats
 *                                  to stderr when the backend closes (diagnosis)
 *   CHIMERA_VULKAN_STAGING_KB=n    size of the host staging ring (default 64 MiB)
 *   CHIMERA_VULKAN_BLOCK_MB=n      size of the device memory pool's blocks (default 256)
 *   CHIMERA_VULKAN_MAX_GROUPS_X=n  (tests) pretend maxComputeWorkGroupCount.x is n
 *   CHIMERA_VULKAN_MAX_RANGE=n     (tests, debugging) bind at most n bytes (>= 1024) per
 *                                  storage buffer, below maxStorageBufferRange, so that small
 *                                  tensors take the split paths of large ones (logged once)
 *   CHIMERA_VULKAN_PIN_SUBGROUP=1  (tests) the cooperative-matrix pipelines require the
 *                                  device's subgroup size even where it cannot vary (done
 *                                  anyway where it can: AMD, Intel)
 *   CHIMERA_VULKAN_COOPMAT_EMULATE=1  (tests) on a device without cooperative matrices,
 *                                  run the cooperative-matrix matmul shader with its
 *                                  matrix operations emulated in plain GLSL
 */
#ifndef CHIMERA_BACKEND_VULKAN_BACKEND_H
#define CHIMERA_BACKEND_VULKAN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chimera/backend.h"

/* Open the vulkan backend on the device opts->device_index (-1: CHIMERA_VULKAN_DEVICE or the best). */
chm_status chm_vulkan_open(const chm_backend_options *opts, chm_backend **out, chm_err *err);

/* Counters of one vulkan backend instance (since it was opened). */
typedef struct chm_vulkan_stats {
    uint64_t dispatches;      /* compute dispatches recorded */
    uint64_t transfers;       /* staging copies recorded (upload/download chunks) */
    uint64_t barriers;        /* pipeline barriers recorded inside batches */
    uint64_t submits;         /* command buffers submitted by a sync, a download, a full
                                 batch or staging ring (early_submits: the others) */
    uint64_t pipelines;       /* pipelines created */
    uint64_t bytes_in_use;    /* device bytes handed out by the memory pool now */
    uint64_t bytes_reserved;  /* device bytes the pool holds from the driver now */
    uint64_t blocks;          /* VkDeviceMemory blocks the pool holds now */
    uint64_t block_allocs;    /* VkDeviceMemory blocks the pool has made (vkAllocateMemory) */
    uint64_t block_reuses;    /* large requests served by a kept empty dedicated block */
    uint64_t early_submits;   /* batches handed to an idle device before they were full
                                 (not counted in submits: nothing waits for them) */
    double wait_ms;           /* host time blocked on the device (fences, query results) */
    double alloc_ms;          /* host time making and freeing the pool's blocks */
    double submit_ms;         /* host time in vkQueueSubmit */
    double record_ms;         /* host time in chm_vk_run (recording dispatches, its waits too) */
} chm_vulkan_stats;

/* Fill *out for a backend opened by chm_vulkan_open (zeros for any other backend). */
void chm_vulkan_get_stats(const chm_backend *be, chm_vulkan_stats *out);

/*
 * Warnings and errors the validation layer reported in this process so far,
 * over every vulkan backend instance (0 when validation is off).
 */
uint64_t chm_vulkan_validation_messages(void);

/*
 * The kernel family chm_matmul runs for tensors of dtype dt on this backend:
 * "coopmat2" (f16/bf16 read as stored on NV cooperative matrices 2: workgroup
 * scope, f32 accumulation), "coopmat-nv" (f16/bf16 on NV cooperative
 * matrices, bf16 through scaled f16 copies, f32 accumulation),
 * "coopmat-khr" (the same on VK_KHR_cooperative_matrix), "coopmat-khr-bf16" (bf16
 * as stored on KHR bf16 matrices, VK_KHR_shader_bfloat16: no scaling pass),
 * "coopmat-emulated" (the same shader, matrix operations in plain GLSL: tests;
 * "coopmat-emulated-bf16" for the emulated bf16 matrices),
 * "plain" (shared-memory tiles, f32 math), or NULL when dt is not supported.
 */
const char *chm_vulkan_matmul_path(const chm_backend *be, chm_dtype dt);

/* Switch per-dispatch timing on or off (also CHIMERA_VULKAN_PROFILE=1). */
void chm_vulkan_set_profile(chm_backend *be, bool on);

/*
 * Write the per-shader timing table (calls, total and mean time, sorted by
 * total) into out (always NUL-terminated). Waits for submitted work first.
 */
chm_status chm_vulkan_profile_report(chm_backend *be, char *out, size_t n);

#endif
