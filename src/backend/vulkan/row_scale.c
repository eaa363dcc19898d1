/*
 * row_scale.c: the vulkan backend's row scaling, forward and backward
 * (shader row_scale.comp). x, out, dout, dx [M,C]; s, ds [M]; f(s) =
 * sigmoid(s) when `sigmoid` (mixture-of-depths), else s (MoE gates):
 *   out[m,:] = f(s[m]) * x[m,:]                 (out may alias x exactly)
 *   dx[m,:] += f(s[m]) * dout[m,:]              (optional, ACCUMULATES)
 *   ds[m]   += f'(s[m]) * sum_c dout[m,c]*x[m,c] (optional, ACCUMULATES)
 * The forward is one invocation per element; the backward one workgroup per
 * row, its sum reduced in a fixed order (reduce.glsl): deterministic.
 * All tensors f32, or all bf16 or all f16 (the shader's native variants:
 * computed in f32, rounded once on store; vk_dtype.h).
 */
#include "vk_dtype.h"

enum { RS_SIGMOID = 1, RS_DX = 2, RS_DS = 4 };

chm_status chm_vk_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                const chm_tensor *s, bool sigmoid) {
    CHM_TRY(chm_vk_need_float(be, "row_scale_fwd", x));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t rows, cols, flags;
    } pc = {(uint32_t)x->shape[0], (uint32_t)x->shape[1], sigmoid ? RS_SIGMOID : 0};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "row_scale_fwd", x->dtype, false, name, sizeof name),
        .nbind = 3, .bind = {x, s, out}, .writes = 1u << 2,
        .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups((int64_t)pc.rows * pc.cols, vk->caps.wg_elem),
        .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                const chm_tensor *dout, const chm_tensor *x, const chm_tensor *s,
                                bool sigmoid, bool set) {
    CHM_TRY(chm_vk_need_float(be, "row_scale_bwd", x));
    chm_vk *vk = chm_vk_ctx(be);
    if (!dx && !ds) return CHM_OK;
    if (set && dx) CHM_TRY(chm_vk_fill(be, dx, 0.0)); /* the shader accumulates onto them */
    if (set && ds) CHM_TRY(chm_vk_fill(be, ds, 0.0));
    struct {
        uint32_t rows, cols, flags;
    } pc = {(uint32_t)x->shape[0], (uint32_t)x->shape[1],
            (sigmoid ? RS_SIGMOID : 0) | (dx ? RS_DX : 0) | (ds ? RS_DS : 0)};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "row_scale_bwd", x->dtype, true, name, sizeof name),
        .nbind = 5, .bind = {dout, x, s, dx, ds}, .writes = 3u << 3,
        .push = &pc, .push_size = sizeof pc, .groups = pc.rows, .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &d);
}
