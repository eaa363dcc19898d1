/*
 * select_topk.comp: top-k per row for mixture-of-depths, one workgroup per
 * row of scores [R,C]: idx [R,K] receives the columns of the K largest
 * scores (ties to the lower index, NaN last), in increasing column order
 * (plus row*C when flat: positions in the flattened scores).
 * The ranking is a strict total order, so column j is selected exactly when
 * fewer than K columns rank before it. Columns go in chunks of WG_SIZE, in
 * order; a prefix sum of the selected flags over each chunk (scan.glsl)
 * gives each selected column its place. O(C^2) comparisons per row, read
 * from the (cached) row: C is a sequence length. Also as _bf16 and _f16
 * (dt.glsl): 16-bit scores, compared as their (exact) f32 values.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#include "scan.glsl"

layout(binding = 0) readonly buffer Scores { DT s[]; };
layout(binding = 1) writeonly buffer Idx { int idx[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint R, C, K;
    uint flat_rows; /* 1: write row*C + column (the position in the flattened scores) */
} p;

bool before(float za, uint a, float zb, uint b) {
    if (isnan(za) || isnan(zb)) return isnan(zb) && (!isnan(za) || a < b);
    return za > zb || (za == zb && a < b);
}

void main() {
    uint row = chm_group(), lid = gl_LocalInvocationID.x;
    if (row >= p.R) return; /* the whole workgroup leaves together */
    uint s0 = p.off[0] + row * p.C, base = 0;
    for (uint c0 = 0; c0 < p.C && base < p.K; c0 += WG_SIZE) {
        uint j = c0 + lid, chosen = 0u, total;
        if (j < p.C) {
            float sj = LOAD(s[s0 + j]);
            uint rank = 0;
            for (uint i = 0; i < p.C && rank < p.K; i++)
                if (before(LOAD(s[s0 + i]), i, sj, j)) rank++;
            chosen = rank < p.K ? 1u : 0u;
        }
        uint at = base + chm_wg_scan(chosen, total);
        if (chosen == 1u) idx[p.off[1] + row * p.K + at] = int(j + p.flat_rows * row * p.C);
        base += total;
    }
}
