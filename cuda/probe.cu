// probe.cu: enumerate CUDA devices for `chimera info` and backend selection.
// Never fails hard and never prints: no driver, an outdated driver or no GPU
// gives count 0 and a one-line reason in p->why.
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "chimera/device.h"

// nvcc lists the virtual archs of this build (e.g. 800,860,890,900) in host code too.
#ifdef __CUDA_ARCH_LIST__
static const int built_archs[] = {__CUDA_ARCH_LIST__};
#else
static const int built_archs[] = {0};
#endif

// Whether this binary's kernels were compiled for compute_<arch> (arch as 900).
static bool arch_built(int arch) {
    for (size_t i = 0; i < sizeof built_archs / sizeof built_archs[0]; i++)
        if (built_archs[i] == arch) return true;
    return false;
}

// "13.0" from 13000.
static void version_text(int v, char *buf, size_t n) {
    snprintf(buf, n, "%d.%d", v / 1000, v % 1000 / 10);
}

// Fill p->why for a runtime error met before any device was described.
static void explain(chm_cuda_probe *p, cudaError_t e) {
    char drv[16], rt[16];
    version_text(p->driver_version, drv, sizeof drv);
    version_text(p->runtime_version, rt, sizeof rt);
    if (e == cudaErrorInsufficientDriver)
        snprintf(p->why, sizeof p->why,
                 "the NVIDIA driver (CUDA %s) is older than this binary's CUDA runtime %s: "
                 "update the driver", drv, rt);
    else if (e == cudaErrorNoDevice)
        snprintf(p->why, sizeof p->why, "the NVIDIA driver (CUDA %s) sees no GPU", drv);
    else
        snprintf(p->why, sizeof p->why, "CUDA error: %s", cudaGetErrorString(e));
    cudaGetLastError();  // clear it so later CUDA calls in this process start clean
}

static void fill_device(const cudaDeviceProp *prop, chm_cuda_device *d) {
    snprintf(d->name, sizeof d->name, "%s", prop->name);
    d->cc_major = prop->major;
    d->cc_minor = prop->minor;
    d->memory = prop->totalGlobalMem;
    d->sm_count = prop->multiProcessorCount;
    // Our kernels use Ampere features (cp.async, bf16 mma): sm_80 and newer.
    d->supported = prop->major >= 8;
    d->flash_attention = d->supported;
    d->selective_scan = d->supported;
    // wgmma/TMA exist on sm_90 only (the "a" variant is not forward compatible).
    d->hopper_path = prop->major == 9 && prop->minor == 0 && arch_built(900);
}

extern "C" void chm_cuda_probe_run(chm_cuda_probe *p) {
    memset(p, 0, sizeof *p);
    p->compiled = true;
    cudaRuntimeGetVersion(&p->runtime_version);
    // Without libcuda.so the runtime reports driver version 0 rather than failing.
    if (cudaDriverGetVersion(&p->driver_version) != cudaSuccess || p->driver_version == 0) {
        p->driver_version = 0;
        snprintf(p->why, sizeof p->why,
                 "no NVIDIA driver found: install the NVIDIA driver to use the cuda backend");
        cudaGetLastError();
        return;
    }
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        explain(p, e == cudaSuccess ? cudaErrorNoDevice : e);
        return;
    }
    if (n > CHM_MAX_DEVICES) n = CHM_MAX_DEVICES;
    for (int i = 0; i < n; i++) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
            cudaGetLastError();
            continue;
        }
        fill_device(&prop, &p->dev[p->count++]);
    }
    if (p->count == 0)
        snprintf(p->why, sizeof p->why, "the driver lists %d GPU(s) but none could be queried", n);
}
