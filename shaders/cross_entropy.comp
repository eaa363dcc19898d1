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
 * Variants: cross_entropy (subgroup sums), cross_entropy_nosg; each also
 * with 16-bit logits and dlogits (_bf16, _f16: -DDT_*, dt.glsl); losses
 * stay f32.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#include "reduce.glsl"
#include "scan.glsl"
#define CHM_STATUS_BINDING 4
#include "status.glsl"

layout(binding = 0) readonly buffer Z { DT z[]; };
layout(binding = 1) readonly buffer Targets { int targets[]; };
layout(binding = 2) writeonly buffer Losses { float losses[]; };
layout(binding = 3) writeonly buffer Dz { DT dz[]; };

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
    const float NEG_INF = uintBitsToFloat(0xff800000u);
    float mx = NEG_INF, sum = 0.0;
    for (uint j = lid; j < p.V; j += WG_SIZE) {
        float v = LOAD(z[zr + j]);
        if (v > mx) { /* sum stays 0 until the first value: no exp(-inf) */
            sum = (sum == 0.0 ? 0.0 : sum * exp(mx - v)) + 1.0;
            mx = v;
        } else if (v > NEG_INF) {
            sum += exp(v - mx);
        }
    }
    float m_all = chm_wg_max(mx);
    float lse = m_all + log(chm_wg_sum(mx > NEG_INF ? sum * exp(mx - m_all) : 0.0));
    if (lid == 0u) losses[p.off[2] + row] = lse - zt;
    for (uint j = lid; grad && j < p.V; j += WG_SIZE)
        dz[dr + j] = STORE(p.scale * (exp(LOAD(z[zr + j]) - lse) - (j == uint(t) ? 1.0 : 0.0)));
}
