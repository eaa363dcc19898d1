/*
 * cross_entropy.comp: fused cross-entropy over the vocabulary, one
 * workgroup per row of logits z [R,V] with target t = targets[r]:
 *   each invocation keeps an online (max, sum of exp) over its strided
 *   columns, so no softmax is ever stored; the workgroup merges them
 *   (chm_wg_max, then chm_wg_sum of the rescaled sums) into lse;
 *   losses[r] = lse - z[t];
 *   dlogits[r,j] = grad_scale * (exp(z[j] - lse) - (j == t))  (flag 1; WRITTEN)
 * dlogits may be the logits themselves: z[t] is read before the reductions'
 * barriers and each invocation reads z[j] just before writing dlogits[j].
 * t < 0: loss 0 and a zero gradient row; t >= V is treated the same way and
 * reported (status code 6: cross_entropy).
 * Where V and the windows allow, an invocation reads and writes 16-byte words
 * of the row (words.glsl: 16-bit elements one at a time moved 64 bytes a warp
 * load; chimera-1b's 1280 x 50304 rows took 325 us a call on the H100).
 * Variants: cross_entropy (subgroup sums), cross_entropy_nosg; each also
 * with 16-bit logits and dlogits (_bf16, _f16: -DDT_*, dt.glsl); losses
 * stay f32.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "dt.glsl"
#include "common.glsl"
#include "reduce.glsl"
#include "scan.glsl"
#include "words.glsl"
#define CHM_STATUS_BINDING 4
#include "status.glsl"

layout(binding = 0) readonly buffer Z { DT z[]; };
layout(binding = 0) readonly buffer Z4 { uvec4 z4[]; };
layout(binding = 1) readonly buffer Targets { int targets[]; };
layout(binding = 2) writeonly buffer Losses { float losses[]; };
layout(binding = 3) writeonly buffer Dz { DT dz[]; };
layout(binding = 3) writeonly buffer Dz4 { uvec4 dz4[]; };

#define NEG_INF uintBitsToFloat(0xff800000u)

/* Fold value v into the online (max, sum of exp(. - max)) pair. */
void online(float v, inout float mx, inout float sum) {
    if (v > mx) { /* sum stays 0 until the first value: no exp(-inf) */
        sum = (sum == 0.0 ? 0.0 : sum * exp(mx - v)) + 1.0;
        mx = v;
    } else if (v > NEG_INF) {
        sum += exp(v - mx);
    }
}

layout(push_constant) uniform Push {
    uint off[4];
    uint R, V, flags;
    float scale;
} p;

void main() {
    uint row = chm_group(), lid = gl_LocalInvocationID.x;
    if (row >= p.R) return; /* the whole workgroup leaves together */
    uint zr = p.off[0] + row * p.V, dr = p.off[3] + row * p.V;
    bool grad = (p.flags & 1u) != 0u;
    int t = targets[p.off[1] + row];
    if (t < 0 || t >= int(p.V)) {
        if (t >= int(p.V) && lid == 0u) chm_raise(6u, row, uint(t), p.V);
        if (lid == 0u) losses[p.off[2] + row] = 0.0;
        for (uint j = lid; grad && j < p.V; j += WG_SIZE) dz[dr + j] = STORE(0.0);
        return;
    }
    float zt = LOAD(z[zr + uint(t)]);
    float mx = NEG_INF, sum = 0.0;
    bool words = p.V % WORD_N == 0u && p.off[0] % WORD_N == 0u && p.off[3] % WORD_N == 0u;
    uint nw = p.V / WORD_N;
    if (words) {
        for (uint k = lid; k < nw; k += WG_SIZE) {
            uvec4 zv = z4[zr / WORD_N + k];
            [[unroll]] for (uint e = 0u; e < WORD_N; e++) online(word_at(zv, e), mx, sum);
        }
    } else {
        for (uint j = lid; j < p.V; j += WG_SIZE) online(LOAD(z[zr + j]), mx, sum);
    }
    float m_all = chm_wg_max(mx);
    float lse = m_all + log(chm_wg_sum(mx > NEG_INF ? sum * exp(mx - m_all) : 0.0));
    if (lid == 0u) losses[p.off[2] + row] = lse - zt;
    if (words) {
        for (uint k = lid; grad && k < nw; k += WG_SIZE) {
            uvec4 zv = z4[zr / WORD_N + k];
            float o[WORD_N];
            [[unroll]] for (uint e = 0u; e < WORD_N; e++) {
                uint j = k * WORD_N + e;
                o[e] = p.scale * (exp(word_at(zv, e) - lse) - (j == uint(t) ? 1.0 : 0.0));
            }
            dz4[dr / WORD_N + k] = WORD_PACK(o);
        }
        return;
    }
    for (uint j = lid; grad && j < p.V; j += WG_SIZE)
        dz[dr + j] = STORE(p.scale * (exp(LOAD(z[zr + j]) - lse) - (j == uint(t) ? 1.0 : 0.0)));
}
