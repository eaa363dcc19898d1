/*
 * swiglu.comp: out = silu(gate) * up = gate * sigmoid(gate) * up, element
 * by element. 1/(1+exp(-g)) is safe in f32: exp overflows to inf and the
 * sigmoid to 0, never NaN.
 * Variants: swiglu_fwd (f32), swiglu_fwd_bf16, swiglu_fwd_f16 (dt.glsl).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer Gate { DT gate[]; };
layout(binding = 1) readonly buffer Up { DT up[]; };
layout(binding = 2) writeonly buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    float g = LOAD(gate[p.off[0] + i]);
    out_[p.off[2] + i] = STORE(g / (1.0 + exp(-g)) * LOAD(up[p.off[1] + i]));
}
