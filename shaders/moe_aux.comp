/*
 * moe_aux.comp: the MoE auxiliary losses, forward and backward fused, for a
 * softmax router (moe_aux.c runs the variants in this order). logits z [R,E],
 * idx [R,K] (int); p = softmax(z) per row, lse_r = logsumexp of row r;
 * f_e = (assignments to e) / (R*K), P_e = mean_r p[r,e]:
 *   balance = E * sum_e f_e P_e,  zloss = mean_r lse_r^2;
 *   dz[r,j] += bs * p_j (g_j - sum_e p_e g_e) + zs * 2 lse_r p_j / R, g_e = E f_e / R.
 *
 * moe_aux_rows  (-DROWS) per row:       lse [R]
 * moe_aux_cols  (-DCOLS) per expert e:  stats[2e] = f_e, stats[2e+1] = P_e
 *               (workgroup sums in a fixed order; the counts are exact in
 *               f32 below 2^24 assignments); an idx entry outside [0, E) is
 *               counted nowhere and reported (status code 7: moe_aux)
 * moe_aux_loss  (-DLOSS) one group:     losses[0] = balance, losses[1] = zloss
 * moe_aux_grad  (-DGRAD) per row:       dlogits += ... (ACCUMULATES)
 * _nosg twins of COLS and LOSS reduce without subgroups. ROWS, COLS and
 * GRAD also as _bf16 and _f16 (dt.glsl): z and dz 16-bit, loaded into f32,
 * dz rounded once when its sum is added; lse, stats and losses stay f32.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

#if defined(ROWS) || defined(GRAD)
layout(binding = 0) readonly buffer Z { DT z_[]; };
#ifdef ROWS
layout(binding = 1) writeonly buffer Lse { float lse[]; };
#else
layout(binding = 1) readonly buffer Lse { float lse[]; };
layout(binding = 2) readonly buffer Stats { float stats[]; };
layout(binding = 3) buffer Dz { DT dz[]; };
#endif

layout(push_constant) uniform Push {
#ifdef ROWS
    uint off[2];
#else
    uint off[4];
#endif
    uint R, E;
    float bs, zs;
} p;

/* Logit i of the buffer, as f32. */
float z(uint i) { return LOAD(z_[i]); }

void main() {
    uint r = chm_index();
    if (r >= p.R) return;
    uint zr = p.off[0] + r * p.E;
#ifdef ROWS
    float mx = z(zr), s = 0.0;
    for (uint e = 1; e < p.E; e++) mx = max(mx, z(zr + e));
    for (uint e = 0; e < p.E; e++) s += exp(z(zr + e) - mx);
    lse[p.off[1] + r] = mx + log(s);
#else
    float l = lse[p.off[1] + r], pg = 0.0, gs = float(p.E) / float(p.R);
    for (uint e = 0; e < p.E; e++) pg += exp(z(zr + e) - l) * gs * stats[p.off[2] + 2u * e];
    for (uint j = 0; j < p.E; j++) {
        float pj = exp(z(zr + j) - l), g = gs * stats[p.off[2] + 2u * j];
        ACC(dz[p.off[3] + r * p.E + j], p.bs * pj * (g - pg) + p.zs * 2.0 * l * pj / float(p.R));
    }
#endif
}

#elif defined(COLS)
#include "reduce.glsl"
#define CHM_STATUS_BINDING 4
#include "status.glsl"

layout(binding = 0) readonly buffer Z { DT z_[]; };
layout(binding = 1) readonly buffer Idx { int idx[]; };
layout(binding = 2) readonly buffer Lse { float lse[]; };
layout(binding = 3) writeonly buffer Stats { float stats[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint R, E, K;
} p;

/* Logit i of the buffer, as f32. */
float z(uint i) { return LOAD(z_[i]); }

void main() {
    uint e = chm_group(), lid = gl_LocalInvocationID.x;
    if (e >= p.E) return; /* the whole workgroup leaves together */
    float n = 0.0, ps = 0.0;
    for (uint i = lid; i < p.R * p.K; i += WG_SIZE) {
        int x = idx[p.off[1] + i];
        if (x == int(e)) n += 1.0;
        if (e == 0u && (x < 0 || x >= int(p.E))) chm_raise(7u, i, uint(x), p.E);
    }
    for (uint r = lid; r < p.R; r += WG_SIZE)
        ps += exp(z(p.off[0] + r * p.E + e) - lse[p.off[2] + r]);
    n = chm_wg_sum(n);
    ps = chm_wg_sum(ps);
    if (lid == 0u) {
        stats[p.off[3] + 2u * e] = n / float(p.R * p.K);
        stats[p.off[3] + 2u * e + 1u] = ps / float(p.R);
    }
}

#else /* LOSS */
#include "reduce.glsl"

layout(binding = 0) readonly buffer Lse { float lse[]; };
layout(binding = 1) readonly buffer Stats { float stats[]; };
layout(binding = 2) writeonly buffer Losses { float losses[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint R, E;
} p;

void main() {
    uint lid = gl_LocalInvocationID.x;
    float b = 0.0, zl = 0.0;
    for (uint e = lid; e < p.E; e += WG_SIZE) b += stats[p.off[1] + 2u * e] * stats[p.off[1] + 2u * e + 1u];
    for (uint r = lid; r < p.R; r += WG_SIZE) zl += lse[p.off[0] + r] * lse[p.off[0] + r];
    b = chm_wg_sum(b);
    zl = chm_wg_sum(zl);
    if (lid == 0u) {
        losses[p.off[2]] = float(p.E) * b;
        losses[p.off[2] + 1u] = zl / float(p.R);
    }
}
#endif
