/*
 * rmsnorm.comp: RMSNorm forward over the last dim, one workgroup per row.
 * x [R,C], w [C] -> out [R,C] = x * rstd * w, rstd [R] = 1/sqrt(mean(x^2) + eps).
 * Variants: rmsnorm_fwd (subgroup reduction), rmsnorm_fwd_nosg (-DCHM_NO_SUBGROUP);
 * each also with 16-bit x, w, out (_bf16, _f16: -DDT_*, dt.glsl); rstd stays f32.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#include "reduce.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer W { DT w[]; };
layout(binding = 2) writeonly buffer Out { DT out_[]; };
layout(binding = 3) writeonly buffer Rstd { float rstd[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint rows, cols;
    float eps;
} p;

void main() {
    uint row = chm_group(), lid = gl_LocalInvocationID.x;
    if (row >= p.rows) return; /* the whole workgroup leaves together */
    uint xr = p.off[0] + row * p.cols;
    float ss = 0.0;
    for (uint c = lid; c < p.cols; c += WG_SIZE) {
        float v = LOAD(x[xr + c]);
        ss += v * v;
    }
    float rs = 1.0 / sqrt(chm_wg_sum(ss) / float(p.cols) + p.eps);
    if (lid == 0) rstd[p.off[3] + row] = rs;
    uint orow = p.off[2] + row * p.cols;
    for (uint c = lid; c < p.cols; c += WG_SIZE)
        out_[orow + c] = STORE(LOAD(x[xr + c]) * rs * LOAD(w[p.off[1] + c]));
}
