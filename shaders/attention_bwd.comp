/*
 * attention_bwd.comp: backward of attention_fwd.comp in the flash-attention-2
 * style, ACCUMULATING into dq, dk, dv. q, out, dout, dq [B,T,H,D]; k, v, dk,
 * dv [B,T,Hk,D]; lse [B,H,T] from the forward. The probabilities are
 * recomputed from lse, never stored: with s = scale*q_i.k_j (j <= i),
 *   p = exp(s - lse_i),  dp = dout_i.v_j,  ds = p*(dp - Delta_i)*scale,
 *   Delta_i = rowsum(dout_i*out_i)
 *   dq_i += sum_j ds*k_j;  dk_j += sum_i ds*q_i;  dv_j += sum_i p*dout_i
 * Deterministic without atomics: every output element has one owner that
 * adds its terms in a fixed order.
 *
 * Variants:
 *   attention_bwd_delta (-DDELTA): Delta [B,H,T] (scratch), one invocation per row;
 *   attention_bwd_dq (-DDQ): one workgroup per (b, h, tile of BR query rows),
 *     walking the key tiles of BC keys it sees;
 *   attention_bwd_dkv (-DDKV): one workgroup per (b, kv head, tile of BR
 *     keys), walking, for each q head of its group in order, the query tiles
 *     of BC queries that see its keys; attention_bwd_dkv_reg (-DDKV -DDKV_EREG)
 *     the same with its accumulators in registers, for D / TPR <= 32.
 * Each also as _bf16 and _f16 (dt.glsl): q, k, v, dout, out, dq, dk, dv
 * 16-bit, loaded into f32, gradients rounded once when their sum is added;
 * lse and Delta stay f32.
 * Tiles and thread layout as in attention_fwd.comp: TPR invocations per row,
 * invocation (r, t) owns columns d = t + TPR*e of its row's accumulators and
 * scores of columns t + TPR*s of the tile; operands pass through shared
 * memory in chunks of DC columns of D.
 * Specialization constants: 2 TPR, 3 BC, 4 DC (multiple of TPR), 5 HD = D.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "dt.glsl"
#include "common.glsl"

#ifdef DELTA

layout(binding = 0) readonly buffer Dout { DT dout[]; };
layout(binding = 1) readonly buffer Out { DT out_[]; };
layout(binding = 2) writeonly buffer Delta { float delta[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n, T, H, D;  /* n = B*T*H rows */
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    uint h = i % p.H, bt = i / p.H, b = bt / p.T, t = bt % p.T;
    float s = 0.0;
    for (uint d = 0; d < p.D; d++)
        s += LOAD(dout[p.off[0] + i * p.D + d]) * LOAD(out_[p.off[1] + i * p.D + d]);
    delta[p.off[2] + (b * p.H + h) * p.T + t] = s;
}

#else /* DQ or DKV */

layout(constant_id = 2) const uint TPR = 4;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint DC = 64;
layout(constant_id = 5) const uint HD = 64;
const uint BR = WG_SIZE / TPR;
const uint SPT = BC / TPR;
/*
 * The score arrays get the literal size SMAX (BC / TPR is 2, 4 or 8: attention.c's tiles) and
 * every loop over them the literal bound, so that each index is a constant: sized and walked
 * by SPT, the backward's kept 64-96 bytes of local memory on NVIDIA (session 13).
 */
#define SMAX 8
const uint DPER = (HD + TPR - 1u) / TPR;
const uint NCH = (HD + DC - 1u) / DC;
const uint DS = DC + 1u;

layout(binding = 0) readonly buffer Q { DT q[]; };
layout(binding = 1) readonly buffer K { DT k[]; };
layout(binding = 2) readonly buffer V { DT v[]; };
layout(binding = 3) readonly buffer Dout { DT dout[]; };
layout(binding = 4) readonly buffer Lse { float lse[]; };
layout(binding = 5) readonly buffer Delta { float delta[]; };
#ifdef DQ
layout(binding = 6) buffer Dq { DT dq[]; };
#define NBIND 7
#else
layout(binding = 6) buffer Dk { DT dk[]; };
layout(binding = 7) buffer Dv { DT dv[]; };
#define NBIND 8
#endif

layout(push_constant) uniform Push {
    uint off[NBIND];
    uint B, T, H, Hk;
    uint ntiles;  /* row tiles per (b, head) */
    float scale;
} p;

/* Row-side operands [BR][DS], column-side operands [BC][DS], the tile's ds (and p) [BR][BC]. */
shared float sR1[BR * DS], sR2[BR * DS];
shared float sC1[BC * DS], sC2[BC * DS];
shared float sS[BR * BC];
#ifdef DKV
shared float sP[BR * BC];
shared float sLse[BC], sDelta[BC];
#endif

uint b;

/* Element (row, d) of a [B,T,heads,D] tensor's head `head`. */
uint at(uint row, uint heads, uint head, uint d) {
    return ((b * p.T + row) * heads + head) * HD + d;
}

/*
 * nrows rows from n0 (head `head` of q and dout, or of k and v when kv),
 * columns d0.. of the chunk, into sR1/sR2 (to_rows) or sC1/sC2; zeros outside.
 */
void load2(bool kv, bool to_rows, uint n0, uint nrows, uint head, uint d0) {
    for (uint e = gl_LocalInvocationID.x; e < nrows * DC; e += WG_SIZE) {
        uint rr = e / DC, d = d0 + e % DC, row = n0 + rr, s = rr * DS + e % DC;
        bool in_ = row < p.T && d < HD;
        float a = 0.0, c = 0.0;
        if (in_ && kv) {
            a = LOAD(k[p.off[1] + at(row, p.Hk, head, d)]);
            c = LOAD(v[p.off[2] + at(row, p.Hk, head, d)]);
        } else if (in_) {
            a = LOAD(q[p.off[0] + at(row, p.H, head, d)]);
            c = LOAD(dout[p.off[3] + at(row, p.H, head, d)]);
        }
        if (to_rows) {
            sR1[s] = a;
            sR2[s] = c;
        } else {
            sC1[s] = a;
            sC2[s] = c;
        }
    }
}

/*
 * Scores of invocation (r, t): sc1 += R1[r].C1[c], sc2 += R2[r].C2[c] for its columns c,
 * 4 terms of D a trip (DC is a multiple of TPR >= 4: enough for a GPU to overlap loads, and a
 * loop short enough for lavapipe's compiler), the columns inside a trip (unrolled).
 */
void scores(uint r, uint t, inout float sc1[SMAX], inout float sc2[SMAX]) {
    [[dont_unroll]] for (uint d = 0; d < DC; d += 4u) {
        uint x = r * DS + d;
        [[unroll]] for (uint s = 0; s < SMAX; s++) {
            uint y = (t + TPR * s) * DS + d;
            if (s < SPT) {
                sc1[s] += sR1[x] * sC1[y] + sR1[x + 1u] * sC1[y + 1u] +
                          sR1[x + 2u] * sC1[y + 2u] + sR1[x + 3u] * sC1[y + 3u];
                sc2[s] += sR2[x] * sC2[y] + sR2[x + 1u] * sC2[y + 1u] +
                          sR2[x + 2u] * sC2[y + 2u] + sR2[x + 3u] * sC2[y + 3u];
            }
        }
    }
}

#ifdef DQ

void main() {
    uint g = chm_group(), lid = gl_LocalInvocationID.x;
    uint qt = g % p.ntiles, h = (g / p.ntiles) % p.H, kvh = h / (p.H / p.Hk);
    b = g / (p.ntiles * p.H);
    uint q0 = qt * BR, r = lid / TPR, t = lid % TPR, i = q0 + r;
    bool row_in = i < p.T;
    float lse_i = row_in ? lse[p.off[4] + (b * p.H + h) * p.T + i] : 0.0;
    float del_i = row_in ? delta[p.off[5] + (b * p.H + h) * p.T + i] : 0.0;
    float acc[DPER];
    for (uint e = 0; e < DPER; e++) acc[e] = 0.0;
    uint jend = min(p.T, q0 + BR);
    for (uint j0 = 0; j0 < jend; j0 += BC) {
        barrier();
        float sc1[SMAX], sc2[SMAX];
        [[unroll]] for (uint s = 0; s < SMAX; s++) sc1[s] = sc2[s] = 0.0;
        for (uint d0 = 0; d0 < HD; d0 += DC) {
            if (NCH > 1u && d0 > 0u) barrier();
            if (NCH > 1u || j0 == 0u) load2(false, true, q0, BR, h, d0);
            load2(true, false, j0, BC, kvh, d0);
            barrier();
            scores(r, t, sc1, sc2);
        }
        [[unroll]] for (uint s = 0; s < SMAX; s++) {
            uint c = t + TPR * s, j = j0 + c;
            if (s < SPT) {
                float pr = row_in && j <= i ? exp(sc1[s] * p.scale - lse_i) : 0.0;
                sS[r * BC + c] = pr * (sc2[s] - del_i) * p.scale;
            }
        }
        barrier();
        for (uint d0 = 0; d0 < HD; d0 += DC) {
            if (NCH > 1u) {
                barrier();
                load2(true, false, j0, BC, kvh, d0);
                barrier();
            }
            for (uint c = 0; c < BC; c++) {
                float ds = sS[r * BC + c];
                for (uint e = 0; e < DPER; e++) {
                    uint d = t + TPR * e;
                    if (d >= d0 && d < d0 + DC && d < HD) acc[e] += ds * sC1[c * DS + d - d0];
                }
            }
        }
    }
    if (!row_in) return;
    for (uint e = 0; e < DPER; e++) {
        uint d = t + TPR * e;
        if (d < HD) ACC(dq[p.off[6] + at(i, p.H, h, d)], acc[e]);
    }
}

#else /* DKV */

/*
 * The dk/dv accumulators, DPER an invocation. With DKV_EREG (attention.c takes that variant where
 * DPER <= 32: head dims up to 128 at 4 invocations a row) they are arrays of the literal size 32
 * walked by unrolled loops, so that every index is a constant and they stay in registers (sized
 * and walked by DPER, NVIDIA's driver kept them in 64 bytes of local memory at d64, session 13);
 * otherwise arrays of DPER.
 */
#ifdef DKV_EREG
#define EMAX 32u
#define EACH_E [[unroll]] for (uint e = 0; e < EMAX; e++) if (e < DPER)
#else
#define EMAX DPER
#define EACH_E for (uint e = 0; e < DPER; e++)
#endif

void main() {
    uint g = chm_group(), lid = gl_LocalInvocationID.x;
    uint kt = g % p.ntiles, kvh = (g / p.ntiles) % p.Hk, rep = p.H / p.Hk;
    b = g / (p.ntiles * p.Hk);
    uint k0 = kt * BR, r = lid / TPR, t = lid % TPR, j = k0 + r;
    float ak[EMAX], av[EMAX];
    EACH_E ak[e] = av[e] = 0.0;
    bool first = true;
    for (uint h = kvh * rep; h < (kvh + 1u) * rep; h++) {
        for (uint i0 = k0 / BC * BC; i0 < p.T; i0 += BC) {
            barrier();
            float sc1[SMAX], sc2[SMAX];
            [[unroll]] for (uint s = 0; s < SMAX; s++) sc1[s] = sc2[s] = 0.0;
            for (uint d0 = 0; d0 < HD; d0 += DC) {
                if (NCH > 1u && d0 > 0u) barrier();
                if (NCH > 1u || first) load2(true, true, k0, BR, kvh, d0);
                load2(false, false, i0, BC, h, d0);
                if (d0 == 0u)
                    for (uint c = lid; c < BC; c += WG_SIZE) {
                        bool in_ = i0 + c < p.T;
                        sLse[c] = in_ ? lse[p.off[4] + (b * p.H + h) * p.T + i0 + c] : 0.0;
                        sDelta[c] = in_ ? delta[p.off[5] + (b * p.H + h) * p.T + i0 + c] : 0.0;
                    }
                barrier();
                scores(r, t, sc1, sc2);
            }
            first = false;
            [[unroll]] for (uint s = 0; s < SMAX; s++) {
                uint c = t + TPR * s, i = i0 + c;
                if (s < SPT) {
                    float pr = j < p.T && i < p.T && i >= j ? exp(sc1[s] * p.scale - sLse[c]) : 0.0;
                    sP[r * BC + c] = pr;
                    sS[r * BC + c] = pr * (sc2[s] - sDelta[c]) * p.scale;
                }
            }
            barrier();
            for (uint d0 = 0; d0 < HD; d0 += DC) {
                if (NCH > 1u) {
                    barrier();
                    load2(false, false, i0, BC, h, d0);
                    barrier();
                }
                for (uint c = 0; c < BC; c++) {
                    float pr = sP[r * BC + c], ds = sS[r * BC + c];
                    EACH_E {
                        uint d = t + TPR * e;
                        if (d >= d0 && d < d0 + DC && d < HD) {
                            av[e] += pr * sC2[c * DS + d - d0];
                            ak[e] += ds * sC1[c * DS + d - d0];
                        }
                    }
                }
            }
        }
    }
    if (j >= p.T) return;
    EACH_E {
        uint d = t + TPR * e;
        if (d < HD) { /* no `continue`: glslc leaves a loop with one rolled */
            ACC(dk[p.off[6] + at(j, p.Hk, kvh, d)], ak[e]);
            ACC(dv[p.off[7] + at(j, p.Hk, kvh, d)], av[e]);
        }
    }
}
#endif
#endif
