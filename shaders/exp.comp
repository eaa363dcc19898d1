/*
 * exp.comp: the scaled exponential (Mamba's A = -exp(A_log)), one
 * invocation per element, any shape flattened to n elements.
 *   exp_fwd:          out = alpha * exp(x)   (out may be x itself)
 *   exp_bwd (-DBWD):  dx += dout * out       (ACCUMULATES)
 * Each in f32 and, with -DDT_BF16 / -DDT_F16 (dt.glsl), on 16-bit tensors
 * (exp_fwd_bf16, exp_bwd_f16, ...).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

#ifdef BWD
layout(binding = 0) readonly buffer Dout { DT dout[]; };
layout(binding = 1) readonly buffer Out { DT out_[]; };
layout(binding = 2) buffer Dx { DT dx[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    ACC(dx[p.off[2] + i], LOAD(dout[p.off[0] + i]) * LOAD(out_[p.off[1] + i]));
}
#else
layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) writeonly buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint n;
    float alpha;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    out_[p.off[1] + i] = STORE(p.alpha * exp(LOAD(x[p.off[0] + i])));
}
#endif
