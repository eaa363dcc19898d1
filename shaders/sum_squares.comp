/*
 * sum_squares.comp: the sum of x^2 over all of x, deterministic (fixed
 * blocks, fixed reduction order, no atomics), in two passes:
 *   sum_squares (-DPARTIAL): workgroup g writes part[g] = the sum over
 *     elements [g*B, g*B+B) (B = block, a multiple of the workgroup size);
 *     x is f32, or bf16/f16 words (sum_squares_bf16, _f16: -DDT_*, dt.glsl)
 *     squared and summed in f32;
 *   sum_squares_final: one workgroup writes out[0] = the sum of part [K].
 * part and out are f32. With a single block the first pass writes out
 * directly. _nosg variants reduce without subgroup operations.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#include "reduce.glsl"

#ifdef PARTIAL
layout(binding = 0) readonly buffer X { DT x[]; };
#else
layout(binding = 0) readonly buffer X { float x[]; };  /* part [K] */
#endif
layout(binding = 1) writeonly buffer Out { float out_[]; };  /* part [K] or out [1] */

layout(push_constant) uniform Push {
    uint off[2];
    uint n, block;
} p;

void main() {
    uint lid = gl_LocalInvocationID.x;
#ifdef PARTIAL
    uint g = chm_group(), lo = g * p.block, hi = min(p.n, lo + p.block);
    float s = 0.0;
    for (uint i = lo + lid; i < hi; i += WG_SIZE) {
        float v = LOAD(x[p.off[0] + i]);
        s += v * v;
    }
#else
    uint g = 0;
    float s = 0.0;
    for (uint i = lid; i < p.n; i += WG_SIZE) s += x[p.off[0] + i];
#endif
    float total = chm_wg_sum(s);
    if (lid == 0) out_[p.off[1] + g] = total;
}
