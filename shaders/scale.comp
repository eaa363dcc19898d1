/*
 * scale.comp: out[n] = alpha * x[n]; out may alias x exactly.
 * Variants: scale (f32), scale_bf16, scale_f16 (-DDT_BF16 / -DDT_F16, dt.glsl).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) writeonly buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint n;
    float alpha;
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) out_[p.off[1] + i] = STORE(p.alpha * LOAD(x[p.off[0] + i]));
}
