/*
 * swiglu_bwd.comp: SwiGLU backward, ACCUMULATING, with s = sigmoid(gate):
 *   dgate += dout * up * s * (1 + gate * (1 - s)),   dup += dout * gate * s
 */
#version 450
#include "common.glsl"

layout(binding = 0) readonly buffer Dout { float dout[]; };
layout(binding = 1) readonly buffer Gate { float gate[]; };
layout(binding = 2) readonly buffer Up { float up[]; };
layout(binding = 3) buffer Dgate { float dgate[]; };
layout(binding = 4) buffer Dup { float dup[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint n;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    float g = gate[p.off[1] + i], d = dout[p.off[0] + i];
    float s = 1.0 / (1.0 + exp(-g));
    dgate[p.off[3] + i] += d * up[p.off[2] + i] * s * (1.0 + g * (1.0 - s));
    dup[p.off[4] + i] += d * g * s;
}
