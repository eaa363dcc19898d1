/*
 * rmsnorm_bwd.comp: RMSNorm backward, ACCUMULATING into dx and dw. With
 * g = dout and r = rstd[row] from the forward:
 *   dx[r,c] += r*w[c]*g[r,c] - x[r,c] * r^3/C * sum_j g[r,j]*w[j]*x[r,j]
 *   dw[c]   += sum_r g[r,c] * x[r,c] * r
 * Variants:
 *   rmsnorm_bwd_dx (-DDX; _nosg without subgroups): one workgroup per row;
 *   rmsnorm_bwd_dw (-DDW): one invocation per (row chunk, column), rows in
 *     order, adding into dw; rmsnorm_bwd_dw_partial (-DDW -DPARTIAL) writes
 *     f32 part [K,C] instead, which sum_rows then adds into dw in chunk order.
 * Each also with 16-bit dout, x, w, dx, dw (_bf16, _f16: -DDT_*, dt.glsl);
 * rstd and part stay f32.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

#ifdef DX
#include "reduce.glsl"

layout(binding = 0) readonly buffer Dout { DT g[]; };
layout(binding = 1) readonly buffer X { DT x[]; };
layout(binding = 2) readonly buffer W { DT w[]; };
layout(binding = 3) readonly buffer Rstd { float rstd[]; };
layout(binding = 4) buffer Dx { DT dx[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint rows, cols;
} p;

void main() {
    uint row = chm_group(), lid = gl_LocalInvocationID.x;
    if (row >= p.rows) return;
    uint gr = p.off[0] + row * p.cols, xr = p.off[1] + row * p.cols, wo = p.off[2];
    float dot_ = 0.0;
    for (uint c = lid; c < p.cols; c += WG_SIZE)
        dot_ += LOAD(g[gr + c]) * LOAD(w[wo + c]) * LOAD(x[xr + c]);
    float rs = rstd[p.off[3] + row];
    float coef = rs * rs * rs * chm_wg_sum(dot_) / float(p.cols);
    uint dr = p.off[4] + row * p.cols;
    for (uint c = lid; c < p.cols; c += WG_SIZE)
        ACC(dx[dr + c], rs * LOAD(w[wo + c]) * LOAD(g[gr + c]) - coef * LOAD(x[xr + c]));
}

#else /* DW */

layout(binding = 0) readonly buffer Dout { DT g[]; };
layout(binding = 1) readonly buffer X { DT x[]; };
layout(binding = 2) readonly buffer Rstd { float rstd[]; };
#ifdef PARTIAL
layout(binding = 3) writeonly buffer Part { float part[]; };  /* [K,C] */
#else
layout(binding = 3) buffer Dw { DT dw[]; };  /* [C] */
#endif

layout(push_constant) uniform Push {
    uint off[4];
    uint rows, cols, rows_per_chunk, chunks;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.chunks * p.cols) return;
    uint k = i / p.cols, c = i % p.cols;
    uint r0 = k * p.rows_per_chunk, r1 = min(p.rows, r0 + p.rows_per_chunk);
    float s = 0.0;
    for (uint r = r0; r < r1; r++) {
        uint e = r * p.cols + c;
        s += LOAD(g[p.off[0] + e]) * LOAD(x[p.off[1] + e]) * rstd[p.off[2] + r];
    }
#ifdef PARTIAL
    part[p.off[3] + k * p.cols + c] = s;
#else
    ACC(dw[p.off[3] + c], s);
#endif
}
#endif
