/*
 * swiglu_bwd.comp: SwiGLU backward, ACCUMULATING (acc = 1) or writing without
 * reading the old gradients (acc = 0), with s = sigmoid(gate):
 *   dgate += dout * up * s * (1 + gate * (1 - s)),   dup += dout * gate * s
 * An invocation takes a 16-byte word of elements (words.glsl, as swiglu.comp),
 * as words where every window starts word-aligned, else element by element.
 * Variants: swiglu_bwd (f32), swiglu_bwd_bf16, swiglu_bwd_f16 (dt.glsl).
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "dt.glsl"
#include "common.glsl"
#include "words.glsl"

layout(binding = 0) readonly buffer Dout { DT dout[]; };
layout(binding = 0) readonly buffer Dout4 { uvec4 dout4[]; };
layout(binding = 1) readonly buffer Gate { DT gate[]; };
layout(binding = 1) readonly buffer Gate4 { uvec4 gate4[]; };
layout(binding = 2) readonly buffer Up { DT up[]; };
layout(binding = 2) readonly buffer Up4 { uvec4 up4[]; };
layout(binding = 3) buffer Dgate { DT dgate[]; };
layout(binding = 3) buffer Dgate4 { uvec4 dgate4[]; };
layout(binding = 4) buffer Dup { DT dup[]; };
layout(binding = 4) buffer Dup4 { uvec4 dup4[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint n;
    uint acc;
} p;

/* The two gradients of one element (d: dout, g: gate, u: up). */
vec2 grads(float d, float g, float u) {
    float s = 1.0 / (1.0 + exp(-g));
    return vec2(d * u * s * (1.0 + g * (1.0 - s)), d * g * s);
}

void main() {
    uint i0 = chm_index() * WORD_N;
    if (i0 >= p.n) return;
    bool words = i0 + WORD_N <= p.n;
    for (uint k = 0u; k < 5u; k++) words = words && p.off[k] % WORD_N == 0u;
    if (words) {
        uint w0 = (p.off[0] + i0) / WORD_N, w1 = (p.off[1] + i0) / WORD_N;
        uint w2 = (p.off[2] + i0) / WORD_N, w3 = (p.off[3] + i0) / WORD_N;
        uint w4 = (p.off[4] + i0) / WORD_N;
        uvec4 d = dout4[w0], g = gate4[w1], u = up4[w2], og = uvec4(0u), ou = uvec4(0u);
        if (p.acc != 0u) {
            og = dgate4[w3];
            ou = dup4[w4];
        }
        float dg[WORD_N], du[WORD_N];
        [[unroll]] for (uint e = 0u; e < WORD_N; e++) {
            vec2 r = grads(word_at(d, e), word_at(g, e), word_at(u, e));
            dg[e] = p.acc != 0u ? word_at(og, e) + r.x : r.x;
            du[e] = p.acc != 0u ? word_at(ou, e) + r.y : r.y;
        }
        dgate4[w3] = WORD_PACK(dg);
        dup4[w4] = WORD_PACK(du);
        return;
    }
    for (uint i = i0; i < i0 + WORD_N && i < p.n; i++) {
        vec2 r = grads(LOAD(dout[p.off[0] + i]), LOAD(gate[p.off[1] + i]), LOAD(up[p.off[2] + i]));
        if (p.acc != 0u) {
            ACC(dgate[p.off[3] + i], r.x);
            ACC(dup[p.off[4] + i], r.y);
        } else {
            dgate[p.off[3] + i] = STORE(r.x);
            dup[p.off[4] + i] = STORE(r.y);
        }
    }
}
