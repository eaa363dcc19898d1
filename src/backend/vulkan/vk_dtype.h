/*
 * vk_dtype.h: the dtype side of the vulkan ops with native bf16/f16
 * shaders (shaders/dt.glsl), shared by their op files.
 *
 * Such an op takes f32 tensors, or bf16/f16 tensors on a device with
 * 16-bit storage, and runs the shader variant of its float tensors' dtype:
 * `base` for f32, `base_bf16` / `base_f16` for 16-bit ones (the variant
 * table in cmake/vk_shaders.cmake makes them from one source). The 16-bit
 * variants load each word into f32, compute exactly as the f32 variant
 * does and round once on store, so no f32 scratch copy is made. Every float op of
 * the backend works this way. Statistics and master weights stay f32 as
 * backend.h says.
 */
#ifndef CHIMERA_BACKEND_VK_DTYPE_H
#define CHIMERA_BACKEND_VK_DTYPE_H

#include <stdio.h>

#include "vk.h"

/*
 * OK for f32, and for bf16/f16 where the device has 16-bit storage;
 * otherwise CHM_ERR_UNSUPPORTED (16-bit without storage) or CHM_ERR_DTYPE
 * (f64, int), each naming op.
 */
static inline chm_status chm_vk_need_float(chm_backend *be, const char *op, const chm_tensor *t) {
    if (t->dtype != CHM_BF16 && t->dtype != CHM_F16) return chm_vk_need_f32(be, op, t);
    chm_vk *vk = chm_vk_ctx(be);
    if (vk->caps.storage16) return CHM_OK;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                   "%s: %s tensors need 16-bit storage; %s has none (or "
                   "CHIMERA_VULKAN_DISABLE=16bit is set): train in f32 on this device", op,
                   chm_dtype_name(t->dtype), vk->props.deviceName);
}

/*
 * The variant of shader `base` for float tensors of dt (base, base_bf16 or
 * base_f16), with _nosg appended when `sg` (the shader reduces with
 * subgroups) and the device's reductions must not use them. Written to buf.
 */
static inline const char *chm_vk_variant_dt(const chm_vk *vk, const char *base, chm_dtype dt,
                                            bool sg, char *buf, size_t n) {
    const char *suffix = dt == CHM_BF16 ? "_bf16" : dt == CHM_F16 ? "_f16" : "";
    snprintf(buf, n, "%s%s%s", base, suffix, sg && !vk->caps.subgroup ? "_nosg" : "");
    return buf;
}

#endif
