/*
 * router_topk_bwd.comp: the MoE router's backward, one invocation per row:
 * dlogits [R,E] ACCUMULATES the gradient of the gates given dgates [R,K],
 * the saved probs [R,E] and idx [R,K] (a constant). With S = sum_k p[idx_k]
 * and c = sum_k dgates_k * p[idx_k] / S (renormalize, flag 2; else S = 1,
 * c = 0), dp_k = (dgates_k - c) / S and
 *   softmax:          dz_j += p_j * (sum_{k: idx_k = j} dp_k - sum_k dp_k p[idx_k])
 *   sigmoid (flag 1): dz_j += p_j (1 - p_j) * sum_{k: idx_k = j} dp_k.
 * An idx entry outside [0, E) is left out and reported (status code 5).
 * Also as _bf16 and _f16 (dt.glsl): dgates, probs, dlogits 16-bit, loaded
 * into f32, dlogits rounded once when its sum is added.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#define CHM_STATUS_BINDING 4
#include "status.glsl"

layout(binding = 0) readonly buffer Dg { DT dg_[]; };
layout(binding = 1) readonly buffer P { DT pr_[]; };
layout(binding = 2) readonly buffer Idx { int idx[]; };
layout(binding = 3) buffer Dz { DT dz[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint R, E, K, flags;
} p;

/* Element i of dgates and of probs, as f32. */
float dg(uint i) { return LOAD(dg_[i]); }
float pr(uint i) { return LOAD(pr_[i]); }

/* Expert of entry k of row r, or -1 (reported) when it names none. */
int expert(uint r, uint k) {
    int e = idx[p.off[2] + r * p.K + k];
    if (e >= 0 && e < int(p.E)) return e;
    chm_raise(5u, r * p.K + k, uint(e), p.E);
    return -1;
}

void main() {
    uint r = chm_index();
    if (r >= p.R) return;
    uint pr0 = p.off[1] + r * p.E, dg0 = p.off[0] + r * p.K;
    float S = 1.0, c = 0.0, dot_ = 0.0;
    if ((p.flags & 2u) != 0u) {
        S = 0.0;
        for (uint k = 0; k < p.K; k++) {
            int e = expert(r, k);
            if (e >= 0) S += pr(pr0 + uint(e));
        }
        for (uint k = 0; k < p.K; k++) {
            int e = expert(r, k);
            if (e >= 0) c += dg(dg0 + k) * pr(pr0 + uint(e)) / S;
        }
    }
    for (uint k = 0; k < p.K; k++) {
        int e = expert(r, k);
        if (e >= 0) dot_ += (dg(dg0 + k) - c) / S * pr(pr0 + uint(e));
    }
    bool sig = (p.flags & 1u) != 0u;
    for (uint j = 0; j < p.E; j++) {
        float pj = pr(pr0 + j), dpj = 0.0;
        for (uint k = 0; k < p.K; k++)
            if (idx[p.off[2] + r * p.K + k] == int(j)) dpj += (dg(dg0 + k) - c) / S;
        ACC(dz[p.off[3] + r * p.E + j], sig ? pj * (1.0 - pj) * dpj : pj * (dpj - dot_));
    }
}
