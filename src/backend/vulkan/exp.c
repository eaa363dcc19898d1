/*
 * exp.c: the vulkan backend's scaled exponential, forward and backward
 * (shader exp.comp), one invocation per element of any shape (split over
 * several dispatches when the tensors exceed one binding: vk_split.c):
 *   out = alpha * exp(x)   (out may alias x exactly)
 *   dx += dout * out       (ACCUMULATES)
 * f32, bf16 or f16 tensors (one dtype per call; 16-bit through the
 * shader's native variants, vk_dtype.h).
 */
#include "vk_dtype.h"

chm_status chm_vk_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                          double alpha) {
    CHM_TRY(chm_vk_need_float(be, "exp_fwd", x));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t n;
        float alpha;
    } pc = {0 /* set per dispatch */, (float)alpha};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "exp_fwd", x->dtype, false, name, sizeof name),
        .nbind = 2, .bind = {x, out}, .writes = 1u << 1,
        .push = &pc, .push_size = sizeof pc, .wg = vk->caps.wg_elem,
    };
    return chm_vk_run_elems(vk, &d, chm_tensor_numel(x));
}

chm_status chm_vk_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                          const chm_tensor *out) {
    CHM_TRY(chm_vk_need_float(be, "exp_bwd", out));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t n;
    } pc = {0}; /* n: set per dispatch */
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "exp_bwd", out->dtype, false, name, sizeof name),
        .nbind = 3, .bind = {dout, out, dx}, .writes = 1u << 2,
        .push = &pc, .push_size = sizeof pc, .wg = vk->caps.wg_elem,
    };
    return chm_vk_run_elems(vk, &d, chm_tensor_numel(out));
}
