/*
 * swiglu_bwd.comp: SwiGLU backward, ACCUMULATING (acc = 1) or writing without
 * reading the old gradients (acc = 0), with s = sigmoid(gate):
 *   dgate += dout * up * s * (1 + gate * (1 - s)),   dup += dout * gate * s
 * Variants: swiglu_bwd (f32), swiglu_bwd_bf16, swiglu_bwd_f16 (dt.glsl).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer Dout { DT dout[]; };
layout(binding = 1) readonly buffer Gate { DT gate[]; };
layout(binding = 2) readonly buffer Up { DT up[]; };
layout(binding = 3) buffer Dgate { DT dgate[]; };
layout(binding = 4) buffer Dup { DT dup[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint n;
    uint acc;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    float g = LOAD(gate[p.off[1] + i]), d = LOAD(dout[p.off[0] + i]);
    float s = 1.0 / (1.0 + exp(-g));
    float dg = d * LOAD(up[p.off[2] + i]) * s * (1.0 + g * (1.0 - s)), du = d * g * s;
    if (p.acc != 0u) {
        ACC(dgate[p.off[3] + i], dg);
        ACC(dup[p.off[4] + i], du);
    } else {
        dgate[p.off[3] + i] = STORE(dg);
        dup[p.off[4] + i] = STORE(du);
    }
}
