/*
 * bce_logits.c: the vulkan backend's binary cross-entropy with logits
 * (shader bce_logits.comp), one invocation per element of logits x [R] and
 * targets y [R]: losses = softplus(x) - y*x; dlogits (optional, WRITTEN,
 * may alias logits exactly) = grad_scale * (sigmoid(x) - y).
 * x, y and dlogits are f32, or all bf16 or all f16 (native variants, one
 * rounding on store; vk_dtype.h); losses are f32 whatever the dtype.
 */
#include "vk_dtype.h"

chm_status chm_vk_bce_logits(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                             const chm_tensor *logits, const chm_tensor *targets,
                             double grad_scale) {
    CHM_TRY(chm_vk_need_float(be, "bce_logits", logits));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t n, flags;
        float scale;
    } pc = {(uint32_t)chm_tensor_numel(logits), dlogits ? 1u : 0u, (float)grad_scale};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "bce_logits", logits->dtype, false, name, sizeof name),
        .nbind = 4, .bind = {logits, targets, losses, dlogits},
        .writes = 3u << 2, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.n, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}
