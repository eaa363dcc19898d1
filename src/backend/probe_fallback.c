/* probe_fallback.c: device probes for builds without Vulkan or CUDA: zero devices and why. */
#include "chimera/device.h"

#include <stdio.h>
#include <string.h>

#ifndef CHIMERA_HAVE_VULKAN
void chm_vulkan_probe_run(chm_vulkan_probe *p) {
    memset(p, 0, sizeof *p);
    snprintf(p->why, sizeof p->why,
             "built without Vulkan: install libvulkan-dev, glslc and spirv-tools "
             "(tools/bootstrap.sh), then reconfigure with CHIMERA_VULKAN=AUTO or ON");
}

int chm_vulkan_probe_best(const chm_vulkan_probe *p) {
    (void)p;
    return -1;
}
#endif

#ifndef CHIMERA_HAVE_CUDA
void chm_cuda_probe_run(chm_cuda_probe *p) {
    memset(p, 0, sizeof *p);
    snprintf(p->why, sizeof p->why,
             "built without CUDA: install the CUDA toolkit (nvcc), then reconfigure "
             "with CHIMERA_CUDA=AUTO or ON");
}
#endif
