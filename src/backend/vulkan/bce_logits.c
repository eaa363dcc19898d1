/*
 * bce_logits.c: the vulkan backend's binary cross-entropy with logits
 * (shader bce_logits.comp), one invocation per element of logits x [R] and
 * targets y [R]: losses = softplus(x) - y*x; dlogits (optional, WRITTEN,
 * may alias logits exactly) = grad_scale * (sigmoid(x) - y).
 */
#include "vk.h"

chm_status chm_vk_bce_logits(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                             const chm_tensor *logits, const chm_tensor *targets,
                             double grad_scale) {
    CHM_TRY(chm_vk_need_f32(be, "bce_logits", logits));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t n, flags;
        float scale;
    } pc = {(uint32_t)chm_tensor_numel(logits), dlogits ? 1u : 0u, (float)grad_scale};
    chm_vk_dispatch d = {
        .shader = "bce_logits", .nbind = 4, .bind = {logits, targets, losses, dlogits},
        .writes = 3u << 2, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.n, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}
