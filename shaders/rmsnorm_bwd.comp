/*
 * rmsnorm_bwd.comp: RMSNorm backward, ACCUMULATING into dx and dw. With
 * g = dout and r = rstd[row] from the forward:
 *   dx[r,c] += r*w[c]*g[r,c] - x[r,c] * r^3/C * sum_j g[r,j]*w[j]*x[r,j]
 *   dw[c]   += sum_r g[r,c] * x[r,c] * r
 * Variants:
 *   rmsnorm_bwd_dx (-DDX; _nosg without subgroups): one workgroup per row,
 *     16-byte words of the row an invocation where cols and the windows allow
 *     (words.glsl: 16-bit elements one at a time moved 64 bytes a warp load);
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
#extension GL_EXT_control_flow_attributes : require
#include "reduce.glsl"
#include "words.glsl"

layout(binding = 0) readonly buffer Dout { DT g[]; };
layout(binding = 0) readonly buffer Dout4 { uvec4 g4[]; };
layout(binding = 1) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer X4 { uvec4 x4[]; };
layout(binding = 2) readonly buffer W { DT w[]; };
layout(binding = 2) readonly buffer W4 { uvec4 w4[]; };
layout(binding = 3) readonly buffer Rstd { float rstd[]; };
layout(binding = 4) buffer Dx { DT dx[]; };
layout(binding = 4) buffer Dx4 { uvec4 dx4[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint rows, cols;
} p;

void main() {
    uint row = chm_group(), lid = gl_LocalInvocationID.x;
    if (row >= p.rows) return;
    uint gr = p.off[0] + row * p.cols, xr = p.off[1] + row * p.cols, wo = p.off[2];
    uint dr = p.off[4] + row * p.cols;
    bool words = p.cols % WORD_N == 0u && p.off[0] % WORD_N == 0u && p.off[1] % WORD_N == 0u &&
                 p.off[2] % WORD_N == 0u && p.off[4] % WORD_N == 0u;
    float dot_ = 0.0, rs = rstd[p.off[3] + row];
    if (words) {
        uint nw = p.cols / WORD_N;
        for (uint k = lid; k < nw; k += WG_SIZE) {
            uvec4 gv = g4[gr / WORD_N + k], wv = w4[wo / WORD_N + k], xv = x4[xr / WORD_N + k];
            [[unroll]] for (uint e = 0u; e < WORD_N; e++)
                dot_ += word_at(gv, e) * word_at(wv, e) * word_at(xv, e);
        }
        float coef = rs * rs * rs * chm_wg_sum(dot_) / float(p.cols);
        for (uint k = lid; k < nw; k += WG_SIZE) {
            uvec4 gv = g4[gr / WORD_N + k], wv = w4[wo / WORD_N + k], xv = x4[xr / WORD_N + k];
            uvec4 dv = dx4[dr / WORD_N + k];
            float o[WORD_N];
            [[unroll]] for (uint e = 0u; e < WORD_N; e++)
                o[e] = word_at(dv, e) +
                       (rs * word_at(wv, e) * word_at(gv, e) - coef * word_at(xv, e));
            dx4[dr / WORD_N + k] = WORD_PACK(o);
        }
        return;
    }
    for (uint c = lid; c < p.cols; c += WG_SIZE)
        dot_ += LOAD(g[gr + c]) * LOAD(w[wo + c]) * LOAD(x[xr + c]);
    float coef = rs * rs * rs * chm_wg_sum(dot_) / float(p.cols);
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
