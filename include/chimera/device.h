/*
 * chimera/device.h: what GPUs this machine has, as the Vulkan and CUDA
 * drivers describe them. Used by `chimera info` and by backend selection.
 * Probing never fails hard: no driver, no loader or a build without that
 * backend gives zero devices and a one-line reason.
 */
#ifndef CHIMERA_DEVICE_H
#define CHIMERA_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHM_MAX_DEVICES 16

/* One Vulkan physical device and the features chimera cares about. */
typedef struct chm_vulkan_device {
    char name[256];
    char type[24];               /* "discrete", "integrated", "virtual", "cpu", "other" */
    uint32_t vendor_id, device_id;
    uint32_t api_major, api_minor, api_patch;
    char driver[128];            /* driver name and info, when the driver reports them */
    uint32_t subgroup_size;
    uint32_t shared_memory;      /* maxComputeSharedMemorySize, bytes */
    uint64_t device_memory;      /* largest device-local heap, bytes */
    bool shader_f16;             /* shaderFloat16 */
    bool storage_16bit;          /* storageBuffer16BitAccess */
    bool shader_bf16;            /* VK_KHR_shader_bfloat16 */
    bool coopmat_khr;            /* VK_KHR_cooperative_matrix */
    bool coopmat_nv;             /* VK_NV_cooperative_matrix */
    bool coopmat2_nv;            /* VK_NV_cooperative_matrix2 */
    bool subgroup_arith;         /* subgroup arithmetic in compute shaders */
} chm_vulkan_device;

/* The Vulkan devices found: count, up to CHM_MAX_DEVICES, and why none when count == 0. */
typedef struct chm_vulkan_probe {
    bool compiled;               /* this binary was built with Vulkan */
    int count;
    chm_vulkan_device dev[CHM_MAX_DEVICES];
    char loader[64];             /* loader/instance version, e.g. "1.3.239" */
    char why[256];               /* reason when count == 0 */
} chm_vulkan_probe;

/* Enumerate Vulkan devices into *p (never fails; see p->why). */
void chm_vulkan_probe_run(chm_vulkan_probe *p);

/* Index of the device `auto` would use: discrete > integrated > virtual > cpu, then lowest
 * index; CHIMERA_VULKAN_DEVICE=N forces device N. -1 if none (p->why then says why, which
 * can happen with count > 0 when the override names no device). */
int chm_vulkan_probe_best(const chm_vulkan_probe *p);

/* One CUDA device. */
typedef struct chm_cuda_device {
    char name[256];
    int cc_major, cc_minor;      /* compute capability */
    uint64_t memory;             /* total global memory, bytes */
    int sm_count;
    bool supported;              /* Ampere or newer (sm_80+): chimera's kernels apply */
    bool flash_attention;        /* our flash-attention kernels apply (sm_80+) */
    bool selective_scan;         /* our selective-scan kernels apply (sm_80+) */
    bool hopper_path;            /* the sm_90a (wgmma/TMA) path applies */
} chm_cuda_device;

/* The CUDA devices found, driver and runtime versions, and why none when count == 0. */
typedef struct chm_cuda_probe {
    bool compiled;               /* this binary was built with CUDA */
    int count;
    chm_cuda_device dev[CHM_MAX_DEVICES];
    int driver_version;          /* e.g. 13000, 0 when no driver */
    int runtime_version;
    char why[256];
} chm_cuda_probe;

/* Enumerate CUDA devices into *p (never fails; see p->why). */
void chm_cuda_probe_run(chm_cuda_probe *p);

#ifdef __cplusplus
}
#endif
#endif
