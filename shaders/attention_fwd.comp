/*
 * attention_fwd.comp: causal grouped-query attention, tiled with an online
 * softmax (no T x T matrix anywhere). q, out [B,Tq,H,D]; k, v [B,Tk,Hk,D];
 * head h reads kv head h / (H/Hk); query i sits at position i + (Tk - Tq)
 * and sees keys j <= that position (Tq = Tk for attention_fwd).
 *
 * One workgroup per (b, h, tile of BR = WG/TPR query rows); TPR invocations
 * share a row: invocation (r, t) owns the output columns d = t + TPR*i
 * (registers o[DPER]) and the scores of key columns t + TPR*k of the tile.
 * Key/value tiles of BC rows pass through shared memory in chunks of DC
 * columns of D (one chunk when D fits: then q stays in shared memory for
 * the whole walk). Per key tile: scores -> shared, each row's running max m
 * and sum l updated, o rescaled by exp(m_old - m_new) and p*v added. At the
 * end out = o / l and lse = m + log(l).
 *
 * Variants: attention_fwd (writes lse [B,H,T]), attention_decode (-DDECODE:
 * queries against a longer key/value cache, no lse); each also as _bf16 and
 * _f16 (dt.glsl): q, k, v, out 16-bit, loaded into f32 and out rounded once
 * on store; lse stays f32.
 * Specialization constants: 2 TPR, 3 BC, 4 DC (multiple of TPR), 5 HD = D.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "dt.glsl"
#include "common.glsl"

layout(constant_id = 2) const uint TPR = 4;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint DC = 64;
layout(constant_id = 5) const uint HD = 64;
const uint BR = WG_SIZE / TPR;          /* query rows per workgroup */
const uint SPT = BC / TPR;              /* scores per invocation */
const uint DPER = (HD + TPR - 1u) / TPR; /* output columns per invocation */
const uint NCH = (HD + DC - 1u) / DC;   /* chunks of D */
const uint DS = DC + 1u;                /* shared row stride (padded against bank conflicts) */
const float MASKED = -1.0e30;           /* score of a masked key: exp(MASKED - m) = 0 */

layout(binding = 0) readonly buffer Q { DT q[]; };
layout(binding = 1) readonly buffer K { DT k[]; };
layout(binding = 2) readonly buffer V { DT v[]; };
layout(binding = 3) writeonly buffer Out { DT out_[]; };
#ifdef DECODE
#define NBIND 4
#else
layout(binding = 4) writeonly buffer Lse { float lse[]; };
#define NBIND 5
#endif

layout(push_constant) uniform Push {
    uint off[NBIND];
    uint B, Tq, Tk, H, Hk;
    uint nqt;  /* query tiles per (b, h) */
    float scale;
} p;

shared float sQ[BR * DS];
shared float sK[BC * DS];
shared float sV[BC * DS];
shared float sS[BR * BC];

uint b, h, kvh, q0;

/* Rows q0.. of q (chunk d0) into sQ, zeros outside. */
void load_q(uint d0) {
    for (uint e = gl_LocalInvocationID.x; e < BR * DC; e += WG_SIZE) {
        uint r = e / DC, d = d0 + e % DC, i = q0 + r;
        uint at = ((b * p.Tq + i) * p.H + h) * HD + d;
        sQ[r * DS + e % DC] = i < p.Tq && d < HD ? LOAD(q[p.off[0] + at]) : 0.0;
    }
}

/* Keys (or values) j0.., columns d0.. of the chunk, into sK (or sV); zeros outside. */
void load_kv(bool values, uint j0, uint d0) {
    for (uint e = gl_LocalInvocationID.x; e < BC * DC; e += WG_SIZE) {
        uint c = e / DC, d = d0 + e % DC, j = j0 + c;
        uint at = ((b * p.Tk + j) * p.Hk + kvh) * HD + d;
        bool in_ = j < p.Tk && d < HD;
        if (values) sV[c * DS + e % DC] = in_ ? LOAD(v[p.off[2] + at]) : 0.0;
        else sK[c * DS + e % DC] = in_ ? LOAD(k[p.off[1] + at]) : 0.0;
    }
}

void main() {
    uint g = chm_group(), lid = gl_LocalInvocationID.x;
    uint qt = g % p.nqt;
    h = (g / p.nqt) % p.H;
    b = g / (p.nqt * p.H);
    kvh = h / (p.H / p.Hk);
    q0 = qt * BR;
    uint r = lid / TPR, t = lid % TPR, i = q0 + r, shift = p.Tk - p.Tq;
    /* keys any row of the tile sees: up to the last valid row's position */
    uint jend = min(p.Tk, min(p.Tq, q0 + BR) + shift);
    float o[DPER];
    for (uint e = 0; e < DPER; e++) o[e] = 0.0;
    float m = MASKED, l = 0.0;
    for (uint j0 = 0; j0 < jend; j0 += BC) {
        barrier(); /* the last tile's readers are done with sK, sV, sS */
        float sc[SPT];
        for (uint s = 0; s < SPT; s++) sc[s] = 0.0;
        for (uint d0 = 0; d0 < HD; d0 += DC) {
            if (NCH > 1u && d0 > 0u) barrier();
            if (NCH > 1u || j0 == 0u) load_q(d0);
            load_kv(false, j0, d0);
            if (NCH == 1u) load_kv(true, j0, 0u);
            barrier();
            for (uint s = 0; s < SPT; s++) {
                uint c = t + TPR * s;
                float acc = 0.0;
                /* 4 columns per trip (DC is a multiple of TPR >= 4): see attention_bwd.comp */
                [[dont_unroll]] for (uint d = 0; d < DC; d += 4u) {
                    uint x = r * DS + d, y = c * DS + d;
                    acc += sQ[x] * sK[y] + sQ[x + 1u] * sK[y + 1u] + sQ[x + 2u] * sK[y + 2u] +
                           sQ[x + 3u] * sK[y + 3u];
                }
                sc[s] += acc;
            }
        }
        for (uint s = 0; s < SPT; s++) {
            uint c = t + TPR * s, j = j0 + c;
            sS[r * BC + c] = j < p.Tk && j <= i + shift ? sc[s] * p.scale : MASKED;
        }
        barrier();
        float mt = m;
        for (uint c = 0; c < BC; c++) mt = max(mt, sS[r * BC + c]);
        float alpha = exp(m - mt), lt = 0.0;
        for (uint e = 0; e < DPER; e++) o[e] *= alpha;
        for (uint d0 = 0; d0 < HD; d0 += DC) {
            if (NCH > 1u) {
                barrier();
                load_kv(true, j0, d0);
                barrier();
            }
            for (uint c = 0; c < BC; c++) {
                float pj = exp(sS[r * BC + c] - mt);
                if (d0 == 0u) lt += pj;
                for (uint e = 0; e < DPER; e++) {
                    uint d = t + TPR * e;
                    if (d >= d0 && d < d0 + DC && d < HD) o[e] += pj * sV[c * DS + d - d0];
                }
            }
        }
        l = l * alpha + lt;
        m = mt;
    }
    if (i >= p.Tq) return;
    uint orow = p.off[3] + ((b * p.Tq + i) * p.H + h) * HD;
    for (uint e = 0; e < DPER; e++) {
        uint d = t + TPR * e;
        if (d < HD) out_[orow + d] = STORE(o[e] / l);
    }
#ifndef DECODE
    if (t == 0u) lse[p.off[4] + (b * p.H + h) * p.Tq + i] = m + log(l);
#endif
}
