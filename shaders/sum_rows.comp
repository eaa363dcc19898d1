/*
 * sum_rows.comp: column sums of x [R,C], deterministic (no atomics).
 * One invocation per (chunk k, column c) adds rows k*RB .. k*RB+RB-1 in
 * order. Default variant (one chunk): out[c] += the sum (ACCUMULATES).
 * -DPARTIAL (sum_rows_partial): part[k,c] = the chunk's sum; the host then
 * runs the default variant over part [K,C], so chunks add in order too.
 */
#version 450
#include "common.glsl"

layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) buffer Out { float out_[]; };  /* out [C], or part [K,C] with PARTIAL */

layout(push_constant) uniform Push {
    uint off[2];
    uint rows, cols, rows_per_chunk, chunks;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.chunks * p.cols) return;
    uint k = i / p.cols, c = i % p.cols;
    uint r0 = k * p.rows_per_chunk, r1 = min(p.rows, r0 + p.rows_per_chunk);
    float s = 0.0;
    for (uint r = r0; r < r1; r++) s += x[p.off[0] + r * p.cols + c];
#ifdef PARTIAL
    out_[p.off[1] + k * p.cols + c] = s;
#else
    out_[p.off[1] + c] += s;
#endif
}
