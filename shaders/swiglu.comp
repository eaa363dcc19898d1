/*
 * swiglu.comp: out = silu(gate) * up = gate * sigmoid(gate) * up, element
 * by element. 1/(1+exp(-g)) is safe in f32: exp overflows to inf and the
 * sigmoid to 0, never NaN.
 */
#version 450
#include "common.glsl"

layout(binding = 0) readonly buffer Gate { float gate[]; };
layout(binding = 1) readonly buffer Up { float up[]; };
layout(binding = 2) writeonly buffer Out { float out_[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    float g = gate[p.off[0] + i];
    out_[p.off[2] + i] = g / (1.0 + exp(-g)) * up[p.off[1] + i];
}
