/*
 * adamw.comp: one fused AdamW step (decoupled weight decay), per element:
 *   g = gs*grad; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   param -= lr * ((m/c1) / (sqrt(v/c2) + eps) + wd * param)
 * with c1 = 1 - b1^step, c2 = 1 - b2^step computed by the host in double.
 * param, grad, m, v are f32. Variants: adamw_step; adamw_step_bf16 and
 * adamw_step_f16 (-D LOWP_BF16 / LOWP_F16) also write the new param rounded
 * to 16 bits into param_lowp.
 */
#version 450
#if defined(LOWP_BF16) || defined(LOWP_F16)
#extension GL_EXT_shader_16bit_storage : require
#define LOWP 1
#endif
#include "common.glsl"
#include "half.glsl"

layout(binding = 0) readonly buffer Grad { float grad[]; };
layout(binding = 1) buffer Param { float param[]; };
layout(binding = 2) buffer M { float m[]; };
layout(binding = 3) buffer V { float v[]; };
#ifdef LOWP
layout(binding = 4) writeonly buffer Lowp { uint16_t param_lowp[]; };
#define NBIND 5
#else
#define NBIND 4
#endif

layout(push_constant) uniform Push {
    uint off[NBIND];
    uint n;
    float lr, b1, b2, eps, wd, gs, c1, c2;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    float g = p.gs * grad[p.off[0] + i];
    float mi = p.b1 * m[p.off[2] + i] + (1.0 - p.b1) * g;
    float vi = p.b2 * v[p.off[3] + i] + (1.0 - p.b2) * g * g;
    float pi = param[p.off[1] + i];
    float upd = (mi / p.c1) / (sqrt(vi / p.c2) + p.eps) + p.wd * pi;
    float np = pi - p.lr * upd;
    m[p.off[2] + i] = mi;
    v[p.off[3] + i] = vi;
    param[p.off[1] + i] = np;
#ifdef LOWP_BF16
    param_lowp[p.off[4] + i] = uint16_t(chm_f32_to_bf16(np));
#elif defined(LOWP_F16)
    param_lowp[p.off[4] + i] = uint16_t(chm_f32_to_f16(np));
#endif
}
