/*
 * rope.c: the vulkan backend's rotary embedding, forward and backward
 * (shader rope.comp), one invocation per rotated pair.
 *
 * x, out [B,T,H,D], D even: the pair (i, i+D/2) at position p = t +
 * pos_offset turns by p * theta^(-2i/D); the backward turns dout by the
 * opposite angle and ACCUMULATES into dx. The forward may run in place.
 *
 * The angles need more than f32: each call uploads a small table, per i
 * the frequency theta^(-2i/D) / (2 pi) in turns per position as a 64-bit
 * fixed-point fraction computed in double here, and the shader reduces
 * p times it modulo one turn in exact integer arithmetic (see rope.comp).
 * Positions must stay below 2^32.
 *
 * x, out, dx, dout are f32, or bf16/f16 words rotated in f32 and rounded
 * once on store (the shader's native variants, vk_dtype.h).
 */
#include <math.h>
#include <stdlib.h>

#include "vk_dtype.h"

/* tab [D] (uint32 pairs, low word first): frequency i as a 64-bit fraction of a turn. */
static void freq_table(uint32_t *tab, int64_t D, double theta) {
    const double two_pi = 6.283185307179586476925, two64 = 18446744073709551616.0;
    for (int64_t i = 0; i < D / 2; i++) {
        double turns = pow(theta, -2.0 * (double)i / (double)D) / two_pi; /* < 1/(2 pi) */
        uint64_t g = (uint64_t)(turns * two64);
        tab[2 * i] = (uint32_t)g;
        tab[2 * i + 1] = (uint32_t)(g >> 32);
    }
}

/* op is also the shader's base name (rope_fwd, rope_bwd). */
static chm_status rope_run(chm_backend *be, const char *op, const chm_tensor *out,
                           const chm_tensor *x, double theta, int64_t pos_offset) {
    CHM_TRY(chm_vk_need_float(be, op, x));
    chm_vk *vk = chm_vk_ctx(be);
    int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], D = x->shape[3];
    if (pos_offset + T > (int64_t)UINT32_MAX)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                       "%s: positions up to %lld; the vulkan backend handles positions below 2^32",
                       op, (long long)(pos_offset + T));
    if (B * T * H * D == 0) return CHM_OK;
    uint32_t *host = malloc((size_t)D * sizeof *host);
    if (!host) return CHM_ERR(&be->err, CHM_ERR_NOMEM, "%s: out of host memory", op);
    freq_table(host, D, theta);
    chm_tensor tab = {0};
    chm_status rc = chm_vk_scratch(be, CHM_I32, D, &tab);
    if (!rc) rc = chm_vk_upload(be, &tab, host);
    free(host);
    struct {
        uint32_t pairs, T, H, half, pos0;
    } pc = {(uint32_t)(B * T * H * D / 2), (uint32_t)T, (uint32_t)H, (uint32_t)(D / 2),
            (uint32_t)pos_offset};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, op, x->dtype, false, name, sizeof name),
        .nbind = 3, .bind = {x, &tab, out}, .writes = 1u << 2,
        .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.pairs, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    if (!rc) rc = chm_vk_run(vk, &d);
    if (tab.buf) chm_vk_scratch_free(be, &tab);
    return rc;
}

chm_status chm_vk_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                           double theta, int64_t pos_offset) {
    return rope_run(be, "rope_fwd", out, x, theta, pos_offset);
}

chm_status chm_vk_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                           double theta, int64_t pos_offset) {
    return rope_run(be, "rope_bwd", dx, dout, theta, pos_offset);
}
