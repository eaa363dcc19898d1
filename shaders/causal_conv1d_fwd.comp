/*
 * causal_conv1d_fwd.comp: depthwise causal conv1d over time. x, out [B,T,C],
 * w [C,W], bias [C] optional:
 *   pre[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-(W-1)+j, c]  (x = 0 before t = 0)
 *   out = silu(pre) when the SILU flag is set, else pre.
 * An invocation computes p.per neighbouring channels of one (b, t)
 * (causal_conv1d.c: a 16-byte word's where C allows, else 1): x and out move
 * as 16-byte words where x's and out's windows start word-aligned (one
 * element an invocation, a warp's 16-bit load moved 64 bytes: chimera-1b's
 * forward ran at a third of the H100's memory rate), else element by element;
 * the same sums in the same order either way.
 * Variants: causal_conv1d_fwd, and _bf16 / _f16 (dt.glsl: x, w, bias, out
 * 16-bit, loaded into f32, out rounded once on store).
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "dt.glsl"
#include "common.glsl"
#include "words.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 0) readonly buffer X4 { uvec4 x4[]; };
layout(binding = 1) readonly buffer W { DT w[]; };
layout(binding = 2) readonly buffer Bias { DT bias[]; };  /* dummy without HAS_BIAS */
layout(binding = 3) writeonly buffer Out { DT out_[]; };
layout(binding = 3) writeonly buffer Out4 { uvec4 out4[]; };

const uint HAS_BIAS = 1u, SILU = 2u;  /* bits of p.flags */

layout(push_constant) uniform Push {
    uint off[4];
    uint n, T, C, W;  /* n = B*T*C */
    uint flags;
    uint per;         /* channels an invocation: 1, or WORD_N (C a multiple of it) */
} p;

/* The output of channel c at flat row `row` (time t) from its sum s over the taps. */
float finish(float s) { return (p.flags & SILU) != 0u ? s / (1.0 + exp(-s)) : s; }

void main() {
    uint i0 = chm_index() * p.per;
    if (i0 >= p.n) return;
    uint c0 = i0 % p.C, row = i0 / p.C, t = row % p.T;
    /* tap j reads time t-(W-1)+j: the first taps fall before t = 0 near the start */
    uint j0 = t + 1u >= p.W ? 0u : p.W - 1u - t;
    if (p.per == WORD_N && p.off[0] % WORD_N == 0u && p.off[3] % WORD_N == 0u) {
        float s[WORD_N];
        [[unroll]] for (uint e = 0u; e < WORD_N; e++)
            s[e] = (p.flags & HAS_BIAS) != 0u ? LOAD(bias[p.off[2] + c0 + e]) : 0.0;
        for (uint j = j0; j < p.W; j++) {
            uvec4 xv = x4[(p.off[0] + (row + j + 1u - p.W) * p.C + c0) / WORD_N];
            [[unroll]] for (uint e = 0u; e < WORD_N; e++)
                s[e] += LOAD(w[p.off[1] + (c0 + e) * p.W + j]) * word_at(xv, e);
        }
        [[unroll]] for (uint e = 0u; e < WORD_N; e++) s[e] = finish(s[e]);
        out4[(p.off[3] + i0) / WORD_N] = WORD_PACK(s);
        return;
    }
    for (uint c = c0; c < c0 + p.per; c++) {
        float s = (p.flags & HAS_BIAS) != 0u ? LOAD(bias[p.off[2] + c]) : 0.0;
        for (uint j = j0; j < p.W; j++)
            s += LOAD(w[p.off[1] + c * p.W + j]) * LOAD(x[p.off[0] + (row + j + 1u - p.W) * p.C + c]);
        out_[p.off[3] + row * p.C + c] = STORE(finish(s));
    }
}
