/*
 * causal_conv1d_fwd.comp: depthwise causal conv1d over time, one invocation
 * per output element. x, out [B,T,C], w [C,W], bias [C] optional:
 *   pre[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-(W-1)+j, c]  (x = 0 before t = 0)
 *   out = silu(pre) when the SILU flag is set, else pre.
 * Variants: causal_conv1d_fwd, and _bf16 / _f16 (dt.glsl: x, w, bias, out
 * 16-bit, loaded into f32, out rounded once on store).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer W { DT w[]; };
layout(binding = 2) readonly buffer Bias { DT bias[]; };  /* dummy without HAS_BIAS */
layout(binding = 3) writeonly buffer Out { DT out_[]; };

const uint HAS_BIAS = 1u, SILU = 2u;  /* bits of p.flags */

layout(push_constant) uniform Push {
    uint off[4];
    uint n, T, C, W;  /* n = B*T*C */
    uint flags;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    uint c = i % p.C, row = i / p.C, t = row % p.T;
    float s = (p.flags & HAS_BIAS) != 0u ? LOAD(bias[p.off[2] + c]) : 0.0;
    /* tap j reads time t-(W-1)+j: the first taps fall before t = 0 near the start */
    uint j0 = t + 1u >= p.W ? 0u : p.W - 1u - t;
    for (uint j = j0; j < p.W; j++)
        s += LOAD(w[p.off[1] + c * p.W + j]) * LOAD(x[p.off[0] + (row + j + 1u - p.W) * p.C + c]);
    if ((p.flags & SILU) != 0u) s = s / (1.0 + exp(-s));
    out_[p.off[3] + i] = STORE(s);
}
