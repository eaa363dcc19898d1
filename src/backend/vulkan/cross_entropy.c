/*
 * cross_entropy.c: the vulkan backend's fused cross-entropy over the
 * vocabulary (shader cross_entropy.comp), one workgroup per row of logits
 * [R,V] with an online softmax over the row, so nothing of size V is
 * stored. losses [R] = logsumexp - logits[target]; dlogits [R,V] (optional,
 * WRITTEN, may alias logits exactly) = grad_scale * (softmax - onehot).
 * Targets < 0 are ignored (loss 0, zero gradient row); a target >= V is
 * treated the same and reported as CHM_ERR_INVALID_ARG by the next chm_sync
 * or download (the targets live on the device).
 * logits and dlogits are f32, or both bf16 or both f16 (the shader's native
 * variants read and write the words, vk_dtype.h); losses stay f32.
 */
#include "vk_dtype.h"

chm_status chm_vk_cross_entropy(chm_backend *be, const chm_tensor *losses,
                                const chm_tensor *dlogits, const chm_tensor *logits,
                                const chm_tensor *targets, double grad_scale) {
    CHM_TRY(chm_vk_need_float(be, "cross_entropy", logits));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t R, V, flags;
        float scale;
    } pc = {(uint32_t)logits->shape[0], (uint32_t)logits->shape[1], dlogits ? 1u : 0u,
            (float)grad_scale};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "cross_entropy", logits->dtype, true, name, sizeof name),
        .nbind = 4, .bind = {logits, targets, losses, dlogits}, .writes = 3u << 2,
        .status = true, .push = &pc, .push_size = sizeof pc, .groups = pc.R,
        .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &d);
}
