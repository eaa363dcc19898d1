/*
 * exp.comp: the scaled exponential (Mamba's A = -exp(A_log)), one
 * invocation per element, any shape flattened to n elements.
 *   exp_fwd:          out = alpha * exp(x)   (out may be x itself)
 *   exp_bwd (-DBWD):  dx += dout * out       (ACCUMULATES)
 */
#version 450
#include "common.glsl"

#ifdef BWD
layout(binding = 0) readonly buffer Dout { float dout[]; };
layout(binding = 1) readonly buffer Out { float out_[]; };
layout(binding = 2) buffer Dx { float dx[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    dx[p.off[2] + i] += dout[p.off[0] + i] * out_[p.off[1] + i];
}
#else
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Out { float out_[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint n;
    float alpha;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    out_[p.off[1] + i] = p.alpha * exp(x[p.off[0] + i]);
}
#endif
