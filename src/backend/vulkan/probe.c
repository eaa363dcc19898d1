/* probe.c: Vulkan device enumeration (placeholder until written). */
#include "chimera/device.h"

#include <stdio.h>
#include <string.h>

void chm_vulkan_probe_run(chm_vulkan_probe *p) {
    memset(p, 0, sizeof *p);
    p->compiled = true;
    snprintf(p->why, sizeof p->why, "Vulkan probe not written yet");
}

int chm_vulkan_probe_best(const chm_vulkan_probe *p) {
    (void)p;
    return -1;
}
