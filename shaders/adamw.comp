/*
 * adamw.comp: one fused AdamW step (decoupled weight decay), per element:
 *   g = gs*grad; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   param -= lr * ((m/c1) / (sqrt(v/c2) + eps) + wd * param)
 * with c1 = 1 - b1^step, c2 = 1 - b2^step computed by the host in double.
 * param, m, v are f32 (the master weights and moments). Variants
 * adamw_step[_g<grad>][_<lowp>]: grad is f32, or bf16/f16 with
 * -DDT_BF16 / -DDT_F16 (_gbf16, _gf16; dt.glsl); with -DLOWP_BF16 /
 * -DLOWP_F16 (_bf16, _f16) the new param is also written, rounded to
 * 16 bits, into param_lowp.
 */
#version 450
#include "dt.glsl"
#if defined(LOWP_BF16) || defined(LOWP_F16)
#extension GL_EXT_shader_16bit_storage : require
#define LOWP 1
#endif
#include "common.glsl"

layout(binding = 0) readonly buffer Grad { DT grad[]; };
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
    float g = p.gs * LOAD(grad[p.off[0] + i]);
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
