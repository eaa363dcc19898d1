/*
 * swiglu.c: the vulkan backend's SwiGLU, forward and backward (shaders
 * swiglu.comp, swiglu_bwd.comp), one invocation per 16-byte word of
 * elements (split over several dispatches when the tensors exceed one
 * binding: vk_split.c):
 *   out = silu(gate) * up;   dgate += ..., dup += ... (ACCUMULATE)
 * f32, bf16 or f16 tensors (one dtype per call; 16-bit through the
 * shaders' native variants, vk_dtype.h). The tail-zero forms' counts are not
 * read: under their promise (zero inputs past the counts) every row computes
 * to what they ask for.
 */
#include "vk_dtype.h"

chm_status chm_vk_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                             const chm_tensor *up, const chm_tensor *counts) {
    (void)counts;
    CHM_TRY(chm_vk_need_float(be, "swiglu_fwd", gate));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t n;
    } pc = {0}; /* n: set per dispatch */
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "swiglu_fwd", gate->dtype, false, name, sizeof name),
        .nbind = 3, .bind = {gate, up, out}, .writes = 1u << 2,
        .push = &pc, .push_size = sizeof pc, .wg = vk->caps.wg_elem,
        .per = 16 / (uint32_t)chm_dtype_size(gate->dtype), /* words.glsl's WORD_N */
    };
    return chm_vk_run_elems(vk, &d, chm_tensor_numel(out));
}

chm_status chm_vk_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                             const chm_tensor *dout, const chm_tensor *gate,
                             const chm_tensor *up, bool accumulate, const chm_tensor *counts) {
    (void)counts;
    CHM_TRY(chm_vk_need_float(be, "swiglu_bwd", gate));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t n, acc;
    } pc = {0, accumulate ? 1u : 0u}; /* n: set per dispatch */
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "swiglu_bwd", gate->dtype, false, name, sizeof name),
        .nbind = 5, .bind = {dout, gate, up, dgate, dup},
        .writes = 3u << 3, .push = &pc, .push_size = sizeof pc, .wg = vk->caps.wg_elem,
        .per = 16 / (uint32_t)chm_dtype_size(gate->dtype), /* words.glsl's WORD_N */
    };
    return chm_vk_run_elems(vk, &d, chm_tensor_numel(dout));
}
