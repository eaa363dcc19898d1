/*
 * add.comp: out[n] = a[n] + b[n]. out may alias a or b exactly (each
 * element is read and written by the same invocation).
 * Variants: add (f32), add_bf16, add_f16 (-DDT_BF16 / -DDT_F16, dt.glsl).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer A { DT a[]; };
layout(binding = 1) readonly buffer B { DT b[]; };
layout(binding = 2) writeonly buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n;
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) out_[p.off[2] + i] = STORE(LOAD(a[p.off[0] + i]) + LOAD(b[p.off[1] + i]));
}
