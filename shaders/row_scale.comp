/*
 * row_scale.comp: rows scaled by f(s) with f = sigmoid (flag 1) or f(s) = s.
 * x, out, dout, dx [M,C]; s, ds [M].
 *   row_scale_fwd (-DFWD): out[m,c] = f(s[m]) * x[m,c], one invocation per
 *     element (out may be x itself: each element is read, then written).
 *   row_scale_bwd (-DBWD; _nosg without subgroups): one workgroup per row,
 *     dx[m,:] += f(s[m]) * dout[m,:] (flag 2) and
 *     ds[m] += f'(s[m]) * sum_c dout[m,c]*x[m,c] (flag 4), both ACCUMULATE.
 * The sigmoid is 1/(1+exp(-s)): exp overflows to inf and f to 0, never NaN.
 * Each variant also on 16-bit tensors (row_scale_fwd_bf16, row_scale_bwd_f16,
 * ...: -DDT_BF16 / -DDT_F16, dt.glsl), computed in f32 and rounded once.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

float factor(float s, bool sig) { return sig ? 1.0 / (1.0 + exp(-s)) : s; }

#ifdef FWD
layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer S { DT s[]; };
layout(binding = 2) writeonly buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint rows, cols, flags;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.rows * p.cols) return;
    float f = factor(LOAD(s[p.off[1] + i / p.cols]), (p.flags & 1u) != 0u);
    out_[p.off[2] + i] = STORE(f * LOAD(x[p.off[0] + i]));
}

#else /* BWD */
#include "reduce.glsl"

layout(binding = 0) readonly buffer Dout { DT g[]; };
layout(binding = 1) readonly buffer X { DT x[]; };
layout(binding = 2) readonly buffer S { DT s[]; };
layout(binding = 3) buffer Dx { DT dx[]; };
layout(binding = 4) buffer Ds { DT ds[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint rows, cols, flags;
} p;

void main() {
    uint row = chm_group(), lid = gl_LocalInvocationID.x;
    if (row >= p.rows) return; /* the whole workgroup leaves together */
    bool sig = (p.flags & 1u) != 0u;
    float sv = LOAD(s[p.off[2] + row]), f = factor(sv, sig);
    uint base = row * p.cols;
    if ((p.flags & 2u) != 0u)
        for (uint c = lid; c < p.cols; c += WG_SIZE)
            ACC(dx[p.off[3] + base + c], f * LOAD(g[p.off[0] + base + c]));
    if ((p.flags & 4u) == 0u) return;
    float dot_ = 0.0;
    for (uint c = lid; c < p.cols; c += WG_SIZE)
        dot_ += LOAD(g[p.off[0] + base + c]) * LOAD(x[p.off[1] + base + c]);
    dot_ = chm_wg_sum(dot_);
    if (lid == 0u) ACC(ds[p.off[4] + row], (sig ? f * (1.0 - f) : 1.0) * dot_);
}
#endif
