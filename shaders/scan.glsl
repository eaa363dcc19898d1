/*
 * scan.glsl: two workgroup-wide helpers reduce.glsl does not offer, for the
 * shaders of helper vk-a (router_topk's dispatch plan, select_topk,
 * scatter_add_rows, cross_entropy). Call them from uniform control flow.
 *
 *   chm_wg_max(v):          the max of v over the workgroup, returned to all.
 *   chm_wg_scan(v, total):  the exclusive prefix sum of v (uint) in invocation
 *                           order; total receives the sum over the workgroup.
 *
 * Shared-memory trees in a fixed order (no subgroup operations), so results
 * are the same on every run and do not need _nosg twins.
 */
shared float chm_scan_f[WG_SIZE];
shared uint chm_scan_u[WG_SIZE];

float chm_wg_max(float v) {
    uint lid = gl_LocalInvocationID.x;
    chm_scan_f[lid] = v;
    barrier();
    uint width = 1;
    while (width < WG_SIZE) width <<= 1;
    for (uint s = width >> 1; s > 0; s >>= 1) {
        if (lid < s && lid + s < WG_SIZE) chm_scan_f[lid] = max(chm_scan_f[lid], chm_scan_f[lid + s]);
        barrier();
    }
    float r = chm_scan_f[0];
    barrier(); /* the next call may overwrite chm_scan_f */
    return r;
}

/* Hillis-Steele: log2(WG_SIZE) steps, each read then write between barriers. */
uint chm_wg_scan(uint v, out uint total) {
    uint lid = gl_LocalInvocationID.x;
    chm_scan_u[lid] = v;
    barrier();
    for (uint d = 1; d < WG_SIZE; d <<= 1) {
        uint t = lid >= d ? chm_scan_u[lid - d] : 0u;
        barrier();
        chm_scan_u[lid] += t;
        barrier();
    }
    total = chm_scan_u[WG_SIZE - 1];
    uint incl = chm_scan_u[lid];
    barrier();
    return incl - v;
}
