// probe.cu: enumerate CUDA devices for `chimera info` and backend selection.
// Never fails hard: no driver or no GPU gives count 0 and a reason.
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "chimera/device.h"

extern "C" void chm_cuda_probe_run(chm_cuda_probe *p) {
    memset(p, 0, sizeof *p);
    p->compiled = true;
    cudaRuntimeGetVersion(&p->runtime_version);
    cudaError_t e = cudaDriverGetVersion(&p->driver_version);
    if (e != cudaSuccess || p->driver_version == 0) {
        snprintf(p->why, sizeof p->why, "no NVIDIA driver found");
        return;
    }
    int n = 0;
    e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(p->why, sizeof p->why, "%s", cudaGetErrorString(e));
        cudaGetLastError();
        return;
    }
    if (n == 0) {
        snprintf(p->why, sizeof p->why, "the driver reports no CUDA GPU");
        return;
    }
    if (n > CHM_MAX_DEVICES) n = CHM_MAX_DEVICES;
    for (int i = 0; i < n; i++) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
        chm_cuda_device *d = &p->dev[p->count++];
        snprintf(d->name, sizeof d->name, "%s", prop.name);
        d->cc_major = prop.major;
        d->cc_minor = prop.minor;
        d->memory = prop.totalGlobalMem;
        d->sm_count = prop.multiProcessorCount;
        d->supported = prop.major >= 8;
        d->flash_attention = d->supported;
        d->selective_scan = d->supported;
        d->hopper_path = prop.major == 9 && prop.minor == 0;
    }
}
