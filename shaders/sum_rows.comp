/*
 * sum_rows.comp: column sums of x [R,C], deterministic (no atomics).
 * One invocation per (chunk k, column c) adds rows k*RB .. k*RB+RB-1 in
 * order. Default variant (one chunk): out[c] += the sum (ACCUMULATES).
 * -DPARTIAL (sum_rows_partial): f32 part[k,c] = the chunk's sum; the host
 * then runs the default variant over part [K,C], so chunks add in order too.
 * x and out are f32, or 16-bit words with -DDT_BF16 / -DDT_F16 (dt.glsl;
 * sums in f32): sum_rows_bf16, sum_rows_partial_bf16, ...; -DF32_IN keeps
 * x f32 for a 16-bit out: sum_rows_f32_bf16 adds f32 chunk sums (of any
 * op's partial pass) into a bf16 out.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

#ifdef F32_IN
layout(binding = 0) readonly buffer X { float x[]; };
#define LOAD_X(w) (w)
#else
layout(binding = 0) readonly buffer X { DT x[]; };
#define LOAD_X(w) LOAD(w)
#endif
#ifdef PARTIAL
layout(binding = 1) writeonly buffer Part { float out_[]; };  /* part [K,C] */
#else
layout(binding = 1) buffer Out { DT out_[]; };  /* out [C] */
#endif

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
    for (uint r = r0; r < r1; r++) s += LOAD_X(x[p.off[0] + r * p.cols + c]);
#ifdef PARTIAL
    out_[p.off[1] + k * p.cols + c] = s;
#else
    ACC(out_[p.off[1] + c], s);
#endif
}
