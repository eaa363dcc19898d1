/*
 * adamw.c: one fused AdamW step on the vulkan backend (shader adamw.comp).
 *
 * param, m, v are f32 (the master weights and moments); grad is f32, bf16
 * or f16, read natively by the shader (no f32 copy of a 16-bit gradient).
 * The bias corrections 1 - beta^step are computed here in double and passed
 * with the other scalars as f32 push constants. param_lowp (optional,
 * bf16/f16, needs 16-bit storage) receives the new param rounded to nearest
 * even. One invocation per element; deterministic. The model's flat buffers
 * exceed one binding on large models: chm_vk_run_elems splits the step.
 */
#include <math.h>

#include "vk_dtype.h"

/* adamw_step[_g<grad dtype>][_<param_lowp dtype>] (the variants of cmake/vk_shaders.cmake). */
static const char *variant(const chm_tensor *grad, const chm_tensor *param_lowp, char *buf,
                           size_t n) {
    const char *g = grad->dtype == CHM_F32 ? "" : grad->dtype == CHM_BF16 ? "_gbf16" : "_gf16";
    const char *l = !param_lowp ? "" : param_lowp->dtype == CHM_BF16 ? "_bf16" : "_f16";
    snprintf(buf, n, "adamw_step%s%s", g, l);
    return buf;
}

chm_status chm_vk_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                             const chm_tensor *m, const chm_tensor *v,
                             const chm_tensor *param_lowp, const chm_adamw_args *args) {
    CHM_TRY(chm_vk_need_f32(be, "adamw_step", param));
    CHM_TRY(chm_vk_need_float(be, "adamw_step", grad));
    if (param_lowp) CHM_TRY(chm_vk_need_float(be, "adamw_step", param_lowp));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t n;
        float lr, b1, b2, eps, wd, gs, c1, c2;
    } pc = {0 /* set per dispatch */, (float)args->lr, (float)args->beta1,
            (float)args->beta2, (float)args->eps, (float)args->weight_decay,
            (float)args->grad_scale, (float)(1.0 - pow(args->beta1, (double)args->step)),
            (float)(1.0 - pow(args->beta2, (double)args->step))};
    char name[48];
    chm_vk_dispatch d = {
        .shader = variant(grad, param_lowp, name, sizeof name), .nbind = param_lowp ? 5 : 4,
        .bind = {grad, param, m, v, param_lowp}, .writes = 0x1eu, .push = &pc,
        .push_size = sizeof pc, .wg = vk->caps.wg_elem,
    };
    return chm_vk_run_elems(vk, &d, chm_tensor_numel(param));
}
