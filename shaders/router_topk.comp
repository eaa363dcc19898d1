/*
 * router_topk.comp: the MoE router's forward (router.c runs both variants).
 *
 * router_topk_route (-DROUTE), one invocation per row r of logits z [R,E]:
 *   probs [R,E] = softmax(z) or sigmoid(z) (flag 1: sigmoid);
 *   idx [R,K]   = the K best experts, best first, ranked by logit (the
 *                 scores are increasing in it), ties to the lower index,
 *                 NaN last: the cpu backend's order;
 *   gates [R,K] = their probs, over their sum when renormalizing (flag 2).
 * router_topk_plan (-DPLAN), one workgroup per expert e: the dispatch plan
 *   for capacity cap, first come first served in token order (r, then k):
 *   the assignments i = r*K+k with idx[i] = e are numbered by a running
 *   prefix sum over i (scan.glsl); number j < cap fills slot j with
 *   slot_token = r, slot_ref = i; counts[e] = min(assignments, cap); empty
 *   slots hold -1.
 * router_topk_route also as _bf16 and _f16 (dt.glsl): z, probs, gates
 * 16-bit, the logits loaded into f32; renormalized gates are recomputed
 * from idx in a second pass, so each is rounded once, from the f32 quotient.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

#ifdef ROUTE
layout(binding = 0) readonly buffer Z { DT z_[]; };
layout(binding = 1) writeonly buffer Gates { DT gates[]; };
layout(binding = 2) buffer Idx { int idx[]; };  /* read back to renormalize */
layout(binding = 3) writeonly buffer Probs { DT probs[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint R, E, K, flags;
} p;

/* Entry (za, a) ranks strictly before (zb, b): larger value, then lower index; NaN last. */
bool before(float za, uint a, float zb, uint b) {
    if (isnan(za) || isnan(zb)) return isnan(zb) && (!isnan(za) || a < b);
    return za > zb || (za == zb && a < b);
}

/* The probability of logit v: sigmoid, or softmax with the row's max and sum of exp. */
float prob(float v, bool sig, float mx, float sum) {
    if (!sig) return exp(v - mx) / sum;
    return v >= 0.0 ? 1.0 / (1.0 + exp(-v)) : exp(v) / (1.0 + exp(v));
}

/* Logit i of the buffer, as f32. */
float z(uint i) { return LOAD(z_[i]); }

void main() {
    uint r = chm_index();
    if (r >= p.R) return;
    uint zr = p.off[0] + r * p.E;
    bool sig = (p.flags & 1u) != 0u;
    float mx = z(zr), sum = 0.0;
    for (uint j = 1; j < p.E; j++) mx = max(mx, z(zr + j));
    for (uint j = 0; !sig && j < p.E; j++) sum += exp(z(zr + j) - mx);
    for (uint j = 0; j < p.E; j++)
        probs[p.off[3] + r * p.E + j] = STORE(prob(z(zr + j), sig, mx, sum));
    /* K picks, each the best entry ranking after the previous pick */
    bool renorm = (p.flags & 2u) != 0u;
    float total = 0.0;
    int prev = -1;
    for (uint k = 0; k < p.K; k++) {
        int best = -1;
        for (uint j = 0; j < p.E; j++) {
            if (prev >= 0 && !before(z(zr + uint(prev)), uint(prev), z(zr + j), j)) continue;
            if (best < 0 || before(z(zr + j), j, z(zr + uint(best)), uint(best))) best = int(j);
        }
        prev = best;
        idx[p.off[2] + r * p.K + k] = best;
        float pk = prob(z(zr + uint(best)), sig, mx, sum);
        if (!renorm) gates[p.off[1] + r * p.K + k] = STORE(pk);
        total += pk;
    }
    for (uint k = 0; renorm && k < p.K; k++) {
        float pk = prob(z(zr + uint(idx[p.off[2] + r * p.K + k])), sig, mx, sum);
        gates[p.off[1] + r * p.K + k] = STORE(pk / total);
    }
}

#else /* PLAN */
#include "scan.glsl"

layout(binding = 0) readonly buffer Idx { int idx[]; };
layout(binding = 1) writeonly buffer SlotToken { int slot_token[]; };
layout(binding = 2) writeonly buffer SlotRef { int slot_ref[]; };
layout(binding = 3) writeonly buffer Counts { int counts[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint RK, K, cap;
} p;

void main() {
    uint e = chm_group(), lid = gl_LocalInvocationID.x, base = 0;
    /* base is the same in every invocation, so the loop and its exit are uniform */
    for (uint i0 = 0; i0 < p.RK && base < p.cap; i0 += WG_SIZE) {
        uint i = i0 + lid, total;
        uint hit = i < p.RK && idx[p.off[0] + i] == int(e) ? 1u : 0u;
        uint j = base + chm_wg_scan(hit, total);
        if (hit == 1u && j < p.cap) {
            slot_token[p.off[1] + e * p.cap + j] = int(i / p.K);
            slot_ref[p.off[2] + e * p.cap + j] = int(i);
        }
        base += total;
    }
    uint n = min(base, p.cap);
    for (uint j = n + lid; j < p.cap; j += WG_SIZE) {
        slot_token[p.off[1] + e * p.cap + j] = -1;
        slot_ref[p.off[2] + e * p.cap + j] = -1;
    }
    if (lid == 0u) counts[p.off[3] + e] = int(n);
}
#endif
