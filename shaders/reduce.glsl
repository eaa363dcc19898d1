/*
 * reduce.glsl: chm_wg_sum(v), the sum of v over the workgroup, returned to
 * every invocation. Call it from uniform control flow (every invocation of
 * the workgroup, same number of times). The order of the additions is fixed
 * for a given device and workgroup size, so results are reproducible.
 *
 * Default: subgroupAdd inside each subgroup, then the first subgroup adds the
 * per-subgroup partials. With -DCHM_NO_SUBGROUP (the *_nosg variants, used
 * where the device lacks subgroup arithmetic or CHIMERA_VULKAN_DISABLE=
 * subgroup) a shared-memory tree does the whole sum.
 */
#ifndef CHM_NO_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

shared float chm_red[WG_SIZE];
shared float chm_red_total;

float chm_wg_sum(float v) {
    uint lid = gl_LocalInvocationID.x;
#ifdef CHM_NO_SUBGROUP
    chm_red[lid] = v;
    barrier();
    uint width = 1;
    while (width < WG_SIZE) width <<= 1;
    for (uint s = width >> 1; s > 0; s >>= 1) {
        if (lid < s && lid + s < WG_SIZE) chm_red[lid] += chm_red[lid + s];
        barrier();
    }
    if (lid == 0) chm_red_total = chm_red[0];
#else
    v = subgroupAdd(v);
    if (subgroupElect()) chm_red[gl_SubgroupID] = v;
    barrier();
    if (gl_SubgroupID == 0) {
        float s = 0.0;
        for (uint i = gl_SubgroupInvocationID; i < gl_NumSubgroups; i += gl_SubgroupSize)
            s += chm_red[i];
        s = subgroupAdd(s);
        if (subgroupElect()) chm_red_total = s;
    }
#endif
    barrier();
    float total = chm_red_total;
    barrier(); /* the next call may overwrite chm_red and chm_red_total */
    return total;
}
