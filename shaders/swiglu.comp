/*
 * swiglu.comp: out = silu(gate) * up = gate * sigmoid(gate) * up, element
 * by element. 1/(1+exp(-g)) is safe in f32: exp overflows to inf and the
 * sigmoid to 0, never NaN.
 * An invocation takes a 16-byte word of elements (words.glsl; swiglu.c sets
 * per = WORD_N), as words where the three windows start word-aligned, else
 * element by element.
 * Variants: swiglu_fwd (f32), swiglu_fwd_bf16, swiglu_fwd_f16 (dt.glsl).
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "dt.glsl"
#include "common.glsl"
#include "words.glsl"

layout(binding = 0) readonly buffer Gate { DT gate[]; };
layout(binding = 0) readonly buffer Gate4 { uvec4 gate4[]; };
layout(binding = 1) readonly buffer Up { DT up[]; };
layout(binding = 1) readonly buffer Up4 { uvec4 up4[]; };
layout(binding = 2) writeonly buffer Out { DT out_[]; };
layout(binding = 2) writeonly buffer Out4 { uvec4 out4[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n;
} p;

float swiglu(float g, float u) { return g / (1.0 + exp(-g)) * u; }

void main() {
    uint i0 = chm_index() * WORD_N;
    if (i0 >= p.n) return;
    bool words = i0 + WORD_N <= p.n && p.off[0] % WORD_N == 0u && p.off[1] % WORD_N == 0u &&
                 p.off[2] % WORD_N == 0u;
    if (words) {
        uvec4 g = gate4[(p.off[0] + i0) / WORD_N], u = up4[(p.off[1] + i0) / WORD_N];
        float o[WORD_N];
        [[unroll]] for (uint e = 0u; e < WORD_N; e++) o[e] = swiglu(word_at(g, e), word_at(u, e));
        out4[(p.off[2] + i0) / WORD_N] = WORD_PACK(o);
        return;
    }
    for (uint i = i0; i < i0 + WORD_N && i < p.n; i++)
        out_[p.off[2] + i] = STORE(swiglu(LOAD(gate[p.off[0] + i]), LOAD(up[p.off[1] + i])));
}
