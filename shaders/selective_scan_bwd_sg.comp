/*
 * selective_scan_bwd_sg.comp: the backward of selective_scan_fwd.comp
 * (Mamba-1) with each chunk's states in registers and the sums over lanes
 * and channels in subgroup shuffles: the design of the CUDA backend's
 * kernel (cuda/selective_scan.cuh), in place of selective_scan_bwd.comp's
 * shared-memory states where the device has subgroup shuffles
 * (selective_scan.c chooses; CHIMERA_VULKAN_DISABLE=scan_shuffle keeps the
 * older shader). The recurrence and its derivatives are the older shader's
 * (its header lists them); what differs is where the values live.
 *
 * Layout. A workgroup owns WGC = WG_SIZE / 4 channels of one batch row;
 * four adjacent invocations of a subgroup share channel k (invocation
 * 4k + q, counted in subgroup order), lane q holding states 4q..4q+3 as a
 * vec4 (states past N: zero A, B, C, so zero states). Time goes in chunks
 * of L = 16 steps (8 in the _l8 variants: half the registers for the states,
 * twice the checkpoints; in the _half variants the chunk's two halves are
 * walked back one after the other, each recomputed into 8 registers, the
 * second from the middle state: half the registers, 1.5 times the recompute). The start state of every chunk comes from the
 * forward's saved states (HSAVED: h_saved, binding 13, L = 16 only) or else
 * from a first walk that stores them (hb, global); then, chunks last to first:
 *  - the chunk's [L, WGC] tiles go into shared memory with what depends on
 *    (t, channel) only computed once per element: d, dsig, d*u, dyr, dzf
 *    (steps past T and dead channels: zeros, which leave the states and the
 *    carried gradient unchanged), and the Bm, Cm rows [L][16] (zero past N);
 *  - each lane recomputes its 16 states of the chunk into registers
 *    (vec4 hs[L], fully unrolled) from the chunk's start state, then walks
 *    back with the carried gradient g and dA in registers. Per step the sums
 *    over the channel's 4 lanes, S = sum_n gn Bm, Q = sum_n A gn e^{dA} h_{t-1}
 *    and Y = sum_n Cm h_t, meet in a 4-lane reduce-scatter of shuffles (lane
 *    0 gets S, 1 Q, 2 Y) into s_part; the dBm (gn d u) and dCm (dyr h) terms
 *    of the SGC channels of a subgroup slice meet in a reduce-scatter over
 *    those channels (each stage halves the values a lane holds), one value
 *    per (slice, step, B or C, state) into s_red;
 *  - per element (t, channel), from s_part: du = dyr D + d S,
 *    ddelta = (Q + u S) dsig, dz = (D u + Y) dzf, added in place or stored
 *    (SET_* flags: the gradient is written, not accumulated); per (t, n) the
 *    slices' dBm/dCm sums in slice order into one partial per (b,
 *    workgroup, t).
 * Sums over the batch (dA, dD, ddelta_bias) go to one partial per (b, c),
 * as in the older shader, whose SUM variant finishes both kinds of partial
 * in a fixed order: no float atomics, and a shuffle's partner is fixed, so
 * the result depends only on the shapes, the data and SGC.
 * Scratch (binding 9, floats; ninv = B*Di, inv = b*Di + c, nblk workgroups per b):
 *   hb  [nch][N][ninv]   start state of each chunk (chunk 0's, zero, is not stored)
 *   pbc [B][nblk][T][2N] per-workgroup channel sums: dBm (n), dCm (N + n)
 *   pa  [B][Di][N+2]     per-(b, c) dA (n), dD (N), ddelta_bias (N + 1)
 * Variants _bf16 and _f16 (dt.glsl) as the older shader's.
 * Specialization constants: 1 SUBGROUP_SIZE (a power of two, >= 4 and
 * dividing WG_SIZE), 2 NSTATE = N (<= 16), 3 SGC: channels reduced by
 * shuffles (1, 2, 4 or 8, at most SUBGROUP_SIZE / 4 and WGC).
 * Measured (H100, 2026-11-26, chimera-1b's B8 T2048 Di2048 N16, vk_bench
 * --scan, before the saved states, the restrict qualifiers and the _l8/_half
 * variants): 2.87 ms bf16 and 2.91 ms f32 with the gradients set, against
 * 3.12 and 3.04 for selective_scan_bwd.comp in the same process (f32
 * accumulating: 4.16 ms, the old values' loads then waited behind the
 * stores). The pipeline took 170 registers: 12 warps an SM, so chimera-1b's
 * 2048 warps (B Di 4 lanes) ran in two waves; at <= 128 (CUDA's cap) one
 * wave would hold them all. That, and the first walk (gone with the saved
 * states), are what the variants and HSAVED address. Timed (session 12, bf16,
 * gradients set): 16-step chunks from the saved states 2.07 ms (174
 * registers); _l8 1.90 ms with its first walk (121 registers: one wave), the
 * default since (selective_scan.c); _half 2.43 ms (134 registers, its halves
 * a loop: 172 written out).
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "dt.glsl"
#include "common.glsl"

layout(constant_id = 2) const uint NSTATE = 16;
layout(constant_id = 3) const uint SGC = 8;
#ifdef L8
const uint L = 8u;                  /* steps per chunk */
#else
const uint L = 16u;
#endif
#ifdef HALF
const uint S = L / 2u;              /* states held in registers at once */
#else
const uint S = L;
#endif
const uint WGC = WG_SIZE / 4u;      /* channels per workgroup */
const uint NGRP = WGC / SGC;        /* subgroup slices of SGC channels */

/* restrict: the tensors never alias (backend.h), so that loads may pass stores */
layout(binding = 0) readonly restrict buffer U { DT u[]; };
layout(binding = 1) readonly restrict buffer Delta { DT delta[]; };
layout(binding = 2) readonly restrict buffer Amat { DT A_[]; };
layout(binding = 3) readonly restrict buffer Bmat { DT Bm[]; };
layout(binding = 4) readonly restrict buffer Cmat { DT Cm[]; };
layout(binding = 5) readonly restrict buffer Dvec { DT Dv[]; };     /* dummy without HAS_D */
layout(binding = 6) readonly restrict buffer Z { DT z[]; };         /* dummy without HAS_Z */
layout(binding = 7) readonly restrict buffer Dbias { DT dbias[]; }; /* dummy without HAS_DB */
layout(binding = 8) readonly restrict buffer Dy { DT dy[]; };
layout(binding = 9) restrict buffer Scratch { float scr[]; };
layout(binding = 10) restrict buffer Du { DT du[]; };               /* dummy without WANT_DU */
layout(binding = 11) restrict buffer Ddelta { DT ddelta[]; };       /* dummy without WANT_DDELTA */
layout(binding = 12) restrict buffer Dz { DT dz[]; };               /* dummy without WANT_DZ */
/* chm_scan_args.h_saved [B, nch, Di, N] f32 as selective_scan_fwd_save wrote it (dummy without
   HSAVED): entry kc - 1 is chunk kc's start state, no walk needed */
layout(binding = 13) readonly restrict buffer Hsaved { float hsv[]; };

/* bits of p.flags (the first eight as selective_scan_bwd.comp's) */
const uint HAS_D = 1u, HAS_Z = 2u, HAS_DB = 4u, SOFTPLUS = 8u;
const uint WANT_DU = 16u, WANT_DDELTA = 32u, WANT_DZ = 64u, WANT_BC = 128u;
const uint SET_DU = 256u, SET_DDELTA = 512u, SET_DZ = 1024u, HSAVED = 2048u;

layout(push_constant) uniform Push {
    uint off[14];
    uint B, T, Di;
    uint nch;                    /* number of chunks of L steps */
    uint flags;
    uint hb_at, pbc_at, pa_at;   /* scratch sections (floats) */
} p;

/* Per-element tiles of the chunk, [L][WGC]; Bm, Cm rows [L][16] as vec4s (lane q reads q). */
shared float t_d[L * WGC], t_du[L * WGC], t_dyr[L * WGC];
shared float t_u[L * WGC], t_dsig[L * WGC], t_dzf[L * WGC];
shared vec4 t_B4[L * 4u], t_C4[L * 4u];
/* The channel sums S, Q, Y per element, [L][3][WGC]. */
shared float s_part[L * 3u * WGC];
/* The slices' dBm/dCm sums, [L][NGRP][32]: dBm of state n at n, dCm at 16 + n. */
shared float s_red[L * NGRP * 32u];

/* The walk: this lane's channel k of the workgroup, its states 4q..4q+3. */
uint b, blk, nblk, k, q, c, ninv;
bool live;
vec4 A;
/* The elements: this invocation stages and finishes rows er + 4i (i < L/4) of channel ek. */
uint ek, er, ec;
bool elive;
float eD, ebias;

float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }

/* Step size d and dd/ddelta of x = delta + bias: softplus in f32 (log1p through (1+e)-1). */
void step_size(float x, out float d, out float dsig) {
    if ((p.flags & SOFTPLUS) == 0u) {
        d = x, dsig = 1.0;
        return;
    }
    float e = exp(x), s = 1.0 + e;
    d = x > 20.0 ? x : s == 1.0 ? e : log(s) * e / (s - 1.0);
    dsig = sigmoid(x);
}

/* The chunk at t0 (len steps) into the tiles; without grads only d, d*u and the Bm rows. */
void stage(uint t0, uint len, bool grads) {
    bool zin = grads && (p.flags & HAS_Z) != 0u;
    [[unroll]] for (uint i = 0; i < L / 4u; i++) {
        uint tt = er + 4u * i, e = tt * WGC + ek, ti = (b * p.T + t0 + tt) * p.Di + ec;
        bool ok = elive && tt < len;
        float d = 0.0, dsig = 0.0, uu = 0.0, dyr = 0.0, dzf = 0.0;
        if (ok) {
            step_size(LOAD(delta[p.off[1] + ti]) + ebias, d, dsig);
            uu = LOAD(u[p.off[0] + ti]);
            if (grads) dyr = LOAD(dy[p.off[8] + ti]);
            if (zin) {
                float zz = LOAD(z[p.off[6] + ti]), s = sigmoid(zz);
                dzf = dyr * s * (1.0 + zz * (1.0 - s));
                dyr *= zz * s;
            }
        }
        t_d[e] = d, t_du[e] = d * uu;
        if (grads) t_dyr[e] = dyr, t_u[e] = uu, t_dsig[e] = dsig, t_dzf[e] = dzf;
    }
    uint at = (b * p.T + t0) * NSTATE;
    for (uint e = gl_LocalInvocationID.x; e < L * 16u; e += WG_SIZE) {
        uint tt = e / 16u, n = e % 16u, i = at + tt * NSTATE + n;
        bool ok = tt < len && n < NSTATE;
        t_B4[e / 4u][e % 4u] = ok ? LOAD(Bm[p.off[3] + i]) : 0.0;
        if (grads) t_C4[e / 4u][e % 4u] = ok ? LOAD(Cm[p.off[4] + i]) : 0.0;
    }
}

/* Scratch index of state n at the start of chunk kc. */
uint hb_idx(uint kc, uint n) { return p.hb_at + (kc * NSTATE + n) * ninv + b * p.Di + c; }

vec4 advance(vec4 h, uint tt);

/* The first walk: the state at the start of every chunk kc >= 1 into hb. */
void checkpoints() {
    vec4 h = vec4(0.0);
    for (uint kc = 0; kc < p.nch; kc++) {
        uint t0 = kc * L;
        barrier(); /* the previous chunk's tiles are read */
        stage(t0, min(L, p.T - t0), false);
        barrier();
        if (kc > 0u && live) {
            [[unroll]] for (uint j = 0; j < 4u; j++)
                if (4u * q + j < NSTATE) scr[hb_idx(kc, 4u * q + j)] = h[j];
        }
        [[unroll]] for (uint tt = 0; tt < L; tt++)
            h = advance(h, tt);
    }
}

/*
 * The sums over the channel's 4 lanes: lane 0 gets S, 1 Q, 2 Y (3 a copy of Q).
 * Across lane bit 1 the low lanes keep S and the high ones Y, all Q; across bit 0
 * the even lanes keep their first value, the odd ones their second.
 */
float sqy_reduce(float S, float Q, float Y) {
    bool hi = (q & 2u) != 0u, odd = (q & 1u) != 0u;
    float a = (hi ? Y : S) + subgroupShuffleXor(hi ? S : Y, 2u);
    float bq = Q + subgroupShuffleXor(Q, 2u);
    return (odd ? bq : a) + subgroupShuffleXor(odd ? a : bq, 1u);
}

/*
 * The dBm terms vb and dCm terms vc of this lane's states summed over the SGC
 * channels of its slice, reduce-scattered: across channel bit 0 (invocation bit
 * 2) a lane keeps the dBm or dCm half, across bit 1 half of those, across bit 2
 * one; the value a lane keeps ends at slot (B or C) * 16 + 4q + j of the step's
 * row of s_red (row: the step's and slice's).
 */
void bc_reduce(vec4 vb, vec4 vc, uint row) {
    uint kk = k % SGC;
    if (SGC == 1u) {
        [[unroll]] for (uint j = 0; j < 4u; j++)
            s_red[row + 4u * q + j] = vb[j], s_red[row + 16u + 4u * q + j] = vc[j];
        return;
    }
    bool h1 = (kk & 1u) != 0u;
    vec4 w = (h1 ? vc : vb) + subgroupShuffleXor(h1 ? vb : vc, 4u);
    uint base = (h1 ? 16u : 0u) + 4u * q; /* slot of w.x */
    if (SGC == 2u) {
        [[unroll]] for (uint j = 0; j < 4u; j++) s_red[row + base + j] = w[j];
        return;
    }
    bool h2 = (kk & 2u) != 0u;
    vec2 x = (h2 ? w.zw : w.xy) + subgroupShuffleXor(h2 ? w.xy : w.zw, 8u);
    base += h2 ? 2u : 0u;
    if (SGC == 4u) {
        s_red[row + base] = x.x, s_red[row + base + 1u] = x.y;
        return;
    }
    bool h3 = (kk & 4u) != 0u;
    s_red[row + base + (h3 ? 1u : 0u)] = (h3 ? x.y : x.x) + subgroupShuffleXor(h3 ? x.x : x.y, 16u);
}

/* Running sums over the walk: the carried gradient g = dL/dh and dA of the lane's states. */
vec4 g, dA;

/* The state after step tt of the staged chunk, from the one before it. */
vec4 advance(vec4 h, uint tt) {
    return exp(t_d[tt * WGC + k] * A) * h + t_du[tt * WGC + k] * t_B4[tt * 4u + q];
}

/*
 * Steps first..first+S-1 of the chunk: their states recomputed from hstart (the state
 * before step first) into registers, then walked back.
 */
void back_steps(uint first, vec4 hstart) {
    vec4 hs[S], h = hstart;
    [[unroll]] for (uint i = 0; i < S; i++) {
        h = advance(h, first + i);
        hs[i] = h;
    }
    uint red = (k / SGC) * 32u;
    [[unroll]] for (uint r = 0; r < S; r++) {
        uint i = S - 1u - r, tt = first + i, e = tt * WGC + k;
        float d = t_d[e], dyr = t_dyr[e], du_ = t_du[e];
        vec4 bq = t_B4[tt * 4u + q], cq = t_C4[tt * 4u + q];
        vec4 hp = i > 0u ? hs[i > 0u ? i - 1u : 0u] : hstart, dec = exp(d * A);
        vec4 gn = g + dyr * cq, carry = gn * dec, P = carry * hp;
        g = carry;
        dA += d * P;
        float sum = sqy_reduce(dot(gn, bq), dot(A, P), dot(cq, hs[i]));
        if (q < 3u) s_part[(tt * 3u + q) * WGC + k] = sum;
        bc_reduce(gn * du_, dyr * hs[i], tt * NGRP * 32u + red);
    }
}

/*
 * The chunk walked back from its start state h0: in one stash of L states, or (HALF) the
 * second half first from the state at the middle (walked to once more), then the first.
 * The halves are a loop the compiler is asked not to unroll: with the two written out, the
 * driver interleaved them and the pipeline took 172 registers (H100), as many as the whole
 * stash; one copy of back_steps keeps the registers near the _l8 variant's 121.
 */
void chunk_back(vec4 h0) {
#ifdef HALF
    [[dont_unroll]] for (uint hf = 2u; hf-- > 0u;) {
        vec4 h = h0;
        [[dont_unroll]] for (uint tt = 0; tt < hf * S; tt++) h = advance(h, tt);
        back_steps(hf * S, h);
    }
#else
    back_steps(0u, h0);
#endif
}

/* Running per-channel sums of this invocation's elements (dD, ddelta_bias). */
float dD, ddb;

/* Store v into a gradient element, or add it (ACC) unless the flag says it is set. */
#define PUT(t, v, set) if ((p.flags & (set)) != 0u) t = STORE(v); else ACC(t, v)

/* Per element (t, channel) of the chunk: du, ddelta, dz. */
void finish_elements(uint t0, uint len) {
    [[unroll]] for (uint i = 0; i < L / 4u; i++) {
        uint tt = er + 4u * i, e = tt * WGC + ek;
        if (tt >= len) continue;
        float S = s_part[(tt * 3u) * WGC + ek], Q = s_part[(tt * 3u + 1u) * WGC + ek];
        float Y = s_part[(tt * 3u + 2u) * WGC + ek], uu = t_u[e], dyr = t_dyr[e];
        float gd = (Q + uu * S) * t_dsig[e];
        dD += dyr * uu;
        ddb += gd;
        if (!elive) continue;
        uint ti = (b * p.T + t0 + tt) * p.Di + ec;
        if ((p.flags & WANT_DU) != 0u) { PUT(du[p.off[10] + ti], dyr * eD + t_d[e] * S, SET_DU); }
        if ((p.flags & WANT_DDELTA) != 0u) { PUT(ddelta[p.off[11] + ti], gd, SET_DDELTA); }
        if ((p.flags & WANT_DZ) != 0u && (p.flags & HAS_Z) != 0u) {
            PUT(dz[p.off[12] + ti], (eD * uu + Y) * t_dzf[e], SET_DZ);
        }
    }
}

/* Per (t, n) of the chunk: the slices' dBm and dCm sums in slice order. */
void finish_channel_sums(uint t0, uint len) {
    if ((p.flags & WANT_BC) == 0u) return;
    for (uint o = gl_LocalInvocationID.x; o < len * 32u; o += WG_SIZE) {
        uint tt = o / 32u, s = o % 32u;
        if (s % 16u >= NSTATE) continue;
        float sum = 0.0;
        for (uint gi = 0; gi < NGRP; gi++) sum += s_red[(tt * NGRP + gi) * 32u + s];
        uint at = ((b * nblk + blk) * p.T + t0 + tt) * 2u * NSTATE + (s / 16u) * NSTATE + s % 16u;
        scr[p.pbc_at + at] = sum;
    }
}

/* The per-(b, c) partials: dA from every lane, dD and ddelta_bias summed over rows. */
void write_batch_partials() {
    uint lid = gl_LocalInvocationID.x;
    barrier(); /* s_part is free again */
    s_part[lid] = dD;
    s_part[WG_SIZE + lid] = ddb;
    barrier();
    if (live) {
        uint pa = p.pa_at + (b * p.Di + c) * (NSTATE + 2u);
        [[unroll]] for (uint j = 0; j < 4u; j++)
            if (4u * q + j < NSTATE) scr[pa + 4u * q + j] = dA[j];
    }
    if (er != 0u || !elive) return;
    float sd = 0.0, sb = 0.0;
    for (uint r = 0; r < 4u; r++) sd += s_part[r * WGC + ek], sb += s_part[WG_SIZE + r * WGC + ek];
    uint pa = p.pa_at + (b * p.Di + ec) * (NSTATE + 2u);
    scr[pa + NSTATE] = sd;
    scr[pa + NSTATE + 1u] = sb;
}

void main() {
    uint grp = chm_group(), me = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
    nblk = (p.Di + WGC - 1u) / WGC;
    b = grp / nblk;
    blk = grp % nblk;
    k = me / 4u;
    q = me % 4u;
    c = blk * WGC + k;
    live = c < p.Di; /* the others take part in the shuffles and barriers with zeros */
    ninv = p.B * p.Di;
    ek = gl_LocalInvocationID.x % WGC;
    er = gl_LocalInvocationID.x / WGC;
    ec = blk * WGC + ek;
    elive = ec < p.Di;
    [[unroll]] for (uint j = 0; j < 4u; j++) {
        uint n = 4u * q + j;
        A[j] = live && n < NSTATE ? LOAD(A_[p.off[2] + c * NSTATE + n]) : 0.0;
    }
    eD = elive && (p.flags & HAS_D) != 0u ? LOAD(Dv[p.off[5] + ec]) : 0.0;
    ebias = elive && (p.flags & HAS_DB) != 0u ? LOAD(dbias[p.off[7] + ec]) : 0.0;
    g = dA = vec4(0.0);
    dD = ddb = 0.0;
    if ((p.flags & HSAVED) == 0u) checkpoints();
    for (uint kc = p.nch; kc-- > 0u;) {
        uint t0 = kc * L, len = min(L, p.T - t0);
        barrier(); /* the previous chunk's tiles and sums are read */
        stage(t0, len, true);
        vec4 h0 = vec4(0.0);
        uint hs_at = p.off[13] + ((b * p.nch + kc - 1u) * p.Di + c) * NSTATE + 4u * q;
        bool saved = (p.flags & HSAVED) != 0u;
        if (kc > 0u && live) {
            [[unroll]] for (uint j = 0; j < 4u; j++)
                if (4u * q + j < NSTATE) h0[j] = saved ? hsv[hs_at + j] : scr[hb_idx(kc, 4u * q + j)];
        }
        barrier();
        chunk_back(h0);
        barrier();
        finish_elements(t0, len);
        finish_channel_sums(t0, len);
    }
    write_batch_partials();
}
