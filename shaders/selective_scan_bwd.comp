/*
 * selective_scan_bwd.comp: backward of selective_scan_fwd.comp (Mamba-1),
 * ACCUMULATING into every requested gradient. Shapes as in the forward;
 * dy [B,T,Di]. Per (b, c), going back in time with g = dL/dh carried in
 * registers (d, dsig = dd/ddelta, gate = silu(z) or 1, h_t the states):
 *   dyr = dy*gate;  dz += dy*yraw*s*(1 + z*(1-s)) with s = sigmoid(z)
 *   gn = g[n] + dyr*Cm[t,n];  dCm[t,n] += dyr*h_t[n];  dBm[t,n] += gn*d*u
 *   du += dyr*D + sum_n gn*d*Bm[t,n]
 *   dd  = sum_n gn*(A[n]*exp(d*A[n])*h_{t-1}[n] + Bm[t,n]*u)
 *   ddelta += dd*dsig; ddelta_bias += dd*dsig; dD += dyr*u
 *   dA[n] += gn*d*exp(d*A[n])*h_{t-1}[n];  g[n] = gn*exp(d*A[n])
 *
 * Variants:
 *   selective_scan_bwd: a workgroup owns WGC = WG_SIZE / LANES channels of
 *     one batch row; LANES invocations share a channel, each holding SPL of
 *     its N states (invocation lid: channel lid % WGC, lane lid / WGC). Time
 *     goes in chunks of LC steps. A first walk stores the state at the start
 *     of every chunk (hb, global). Then, chunks last to first:
 *      - the chunk's [LC, WGC] tiles of delta, u, dy, z are loaded with
 *        consecutive invocations on consecutive channels (into registers
 *        one chunk ahead, then into shared memory), and what depends on
 *        (t, channel) only is computed once per element: d, dsig,
 *        dyr = dy*gate and dzf = dy*s*(1 + z*(1-s)); Bm, Cm rows [LC, N] too;
 *      - each lane recomputes its states of the chunk from hb into shared
 *        memory (s_h), then walks them back, keeping g and dA in registers
 *        and writing gn (s_g) and its parts of the sums over n (s_p);
 *      - per element (t, channel): the LANES parts in order give du, ddelta,
 *        and yraw = D*u + sum_n Cm*h (from s_h) gives dz, all added in place
 *        (one owner per element); per (t, n): the sums over the workgroup's
 *        channels of gn*d*u (dBm) and dyr*h (dCm), channels in order, go to
 *        one partial per (b, workgroup, t);
 *     sums over the batch (dA, dD, ddelta_bias) go to one partial per (b, c).
 *     Both kinds of partial are finished by the SUM variant in a fixed order:
 *     no float atomics, no subgroup operations (so no _nosg twin either).
 *   selective_scan_bwd_sum (-DSUM): out[g*M + m] += sum_k part[...] with k
 *     in order; part element (g, k, m) is at
 *     base + g*gs + k*ks + (m / inner)*os + m % inner.
 * Scratch (binding 9, floats; ninv = B*Di, inv = b*Di + c, nblk workgroups per b):
 *   hb  [nch][N][ninv]   start state of each chunk (chunk 0's, zero, is not stored)
 *   pbc [B][nblk][T][2N] per-workgroup channel sums: dBm (n), dCm (N + n)
 *   pa  [B][Di][N+2]     per-(b, c) dA (n), dD (N), ddelta_bias (N + 1)
 * Each variant also as _bf16 and _f16 (dt.glsl): the tensors (inputs, dy,
 * gradients) 16-bit, loaded into f32, each gradient rounded once when its
 * sum is added; the scratch and shared tiles stay f32.
 * Specialization constants: 2 NSTATE = N, 3 LANES, 4 LC (selective_scan.c
 * sizes the workgroup so that the shared arrays below fit the device).
 * Cost model (chimera-1b, B8 T2048 Di2048 N16: 134M lane-steps of 4 states;
 * 32 channels x 8 steps a workgroup, 4 workgroups an SM): ~150 instructions
 * and ~60 shared-memory accesses per lane-step over the checkpoint walk, the
 * recompute, the walk back and the sums, i.e. ~0.6 ms of issue and ~1 ms of
 * shared-memory throughput on an H200, with ~2.5 GB of global traffic
 * (inputs twice, gradients read and written, hb and pbc once each). Predicted
 * 1.5-3 ms against 28.1 ms for the one-invocation-per-channel kernel this
 * replaced. Measured on an H100 (2026-11-26, f32): 4.12 ms at 32 channels x 8
 * steps, 2.87 ms at 32 x 4 (selective_scan.c now asks for chunks of 4).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

#ifdef SUM

layout(binding = 0) readonly buffer Part { float part[]; };
layout(binding = 1) buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint G, K, M;
    uint gs, ks, inner, os, base;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.G * p.M) return;
    uint gi = i / p.M, m = i % p.M;
    uint at = p.off[0] + p.base + gi * p.gs + (m / p.inner) * p.os + m % p.inner;
    float s = 0.0;
    for (uint k = 0; k < p.K; k++) s += part[at + k * p.ks];
    ACC(out_[p.off[1] + i], s);
}

#else /* the backward pass */

#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 2) const uint NSTATE = 16;
layout(constant_id = 3) const uint LANES = 4;   /* invocations per channel */
layout(constant_id = 4) const uint LC = 8;      /* steps per chunk */
const uint WGC = WG_SIZE / LANES;               /* channels per workgroup */
const uint SPL = (NSTATE + LANES - 1u) / LANES; /* states per lane */
const uint HROW = WGC + 1u;                     /* s_h/s_g row: padded against bank conflicts */

layout(binding = 0) readonly buffer U { DT u[]; };
layout(binding = 1) readonly buffer Delta { DT delta[]; };
layout(binding = 2) readonly buffer Amat { DT A_[]; };
layout(binding = 3) readonly buffer Bmat { DT Bm[]; };
layout(binding = 4) readonly buffer Cmat { DT Cm[]; };
layout(binding = 5) readonly buffer Dvec { DT Dv[]; };     /* dummy without HAS_D */
layout(binding = 6) readonly buffer Z { DT z[]; };         /* dummy without HAS_Z */
layout(binding = 7) readonly buffer Dbias { DT dbias[]; }; /* dummy without HAS_DB */
layout(binding = 8) readonly buffer Dy { DT dy[]; };
layout(binding = 9) buffer Scratch { float scr[]; };
layout(binding = 10) buffer Du { DT du[]; };               /* dummy without WANT_DU */
layout(binding = 11) buffer Ddelta { DT ddelta[]; };       /* dummy without WANT_DDELTA */
layout(binding = 12) buffer Dz { DT dz[]; };               /* dummy without WANT_DZ */

/* bits of p.flags */
const uint HAS_D = 1u, HAS_Z = 2u, HAS_DB = 4u, SOFTPLUS = 8u;
const uint WANT_DU = 16u, WANT_DDELTA = 32u, WANT_DZ = 64u, WANT_BC = 128u;

layout(push_constant) uniform Push {
    uint off[13];
    uint B, T, Di;
    uint nch;                    /* number of chunks of LC steps */
    uint flags;
    uint hb_at, pbc_at, pa_at;   /* scratch sections (floats) */
} p;

/*
 * Per-element tiles of the chunk, [LC][WGC] (dead channels and steps past T:
 * zeros): d, dsig, u, dzf, and as vec4 arrays (16-byte loads of a row where
 * the channel sums and the lanes read four at once) d*u and dyr; Bm and Cm
 * rows of the chunk [LC][N], vec4 arrays too. T_*(i) reads element i.
 */
const uint TILE4 = (LC * WGC + 3u) / 4u, ROWS4 = (LC * NSTATE + 3u) / 4u;
shared float t_d[LC * WGC], t_dsig[LC * WGC], t_u[LC * WGC], t_dzf[LC * WGC];
shared vec4 t_du4[TILE4], t_dyr4[TILE4], t_B4[ROWS4], t_C4[ROWS4];
#define T_DU(i) t_du4[(i) >> 2][(i) & 3u]
#define T_DYR(i) t_dyr4[(i) >> 2][(i) & 3u]
#define T_B(i) t_B4[(i) >> 2][(i) & 3u]
#define T_C(i) t_C4[(i) >> 2][(i) & 3u]
/* States h_t and gn of the chunk, [LC][N][HROW]. */
shared float s_h[LC * NSTATE * HROW], s_g[LC * NSTATE * HROW];
/* Each lane's parts of the sums over n, [LC][2][WG_SIZE]: dd (0), sum gn*Bm (1). */
shared float s_p[LC * 2u * WG_SIZE];

/* What one invocation knows about its channel and lane. */
uint b, blk, nblk, k, lane, c, inv, ninv;
bool live;
float A[SPL], Dc, bias;

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

/*
 * A chunk's inputs in registers, fetched one chunk ahead of the tiles so that
 * their latency hides behind the current chunk: invocation (k, lane) holds
 * delta, u (and with grads dy, z) of its channel at steps lane + i*LANES,
 * i < EPI, and the Bm, Cm row elements lid + i*WG_SIZE, i < RPI; zeros past
 * T and Di (and for a chunk t0 >= T: nothing to fetch).
 */
const uint EPI = (LC + LANES - 1u) / LANES, RPI = (LC * NSTATE + WG_SIZE - 1u) / WG_SIZE;
float r_delta[EPI], r_u[EPI], r_dy[EPI], r_z[EPI], r_B[RPI], r_C[RPI];

void fetch(uint t0, bool grads) {
    uint len = t0 < p.T ? min(LC, p.T - t0) : 0u, at = (b * p.T + t0) * NSTATE;
    bool zin = grads && (p.flags & HAS_Z) != 0u;
    [[unroll]] for (uint i = 0; i < EPI; i++) {
        uint tt = lane + i * LANES, ti = (b * p.T + t0 + tt) * p.Di + c;
        bool ok = live && tt < len;
        r_delta[i] = ok ? LOAD(delta[p.off[1] + ti]) : 0.0;
        r_u[i] = ok ? LOAD(u[p.off[0] + ti]) : 0.0;
        r_dy[i] = ok && grads ? LOAD(dy[p.off[8] + ti]) : 0.0;
        r_z[i] = ok && zin ? LOAD(z[p.off[6] + ti]) : 0.0;
    }
    [[unroll]] for (uint i = 0; i < RPI; i++) {
        uint e = gl_LocalInvocationID.x + i * WG_SIZE;
        r_B[i] = e < len * NSTATE ? LOAD(Bm[p.off[3] + at + e]) : 0.0;
        r_C[i] = e < len * NSTATE ? LOAD(Cm[p.off[4] + at + e]) : 0.0;
    }
}

/* The fetched chunk (len steps) into the tiles, per element: d, dsig, d*u, dyr, dzf. */
void stage(uint len, bool grads) {
    [[unroll]] for (uint i = 0; i < EPI; i++) {
        uint tt = lane + i * LANES, e = tt * WGC + k;
        if (tt >= LC) continue;
        float d = 0.0, dsig = 0.0, dyr = r_dy[i], dzf = 0.0;
        if (live && tt < len) step_size(r_delta[i] + bias, d, dsig);
        if (grads && (p.flags & HAS_Z) != 0u) {
            float zz = r_z[i], s = sigmoid(zz);
            dzf = dyr * s * (1.0 + zz * (1.0 - s));
            dyr *= zz * s;
        }
        t_d[e] = d, t_dsig[e] = dsig, t_u[e] = r_u[i], t_dzf[e] = dzf;
        T_DU(e) = d * r_u[i];
        T_DYR(e) = dyr;
    }
    [[unroll]] for (uint i = 0; i < RPI; i++) {
        uint e = gl_LocalInvocationID.x + i * WG_SIZE;
        if (e < LC * NSTATE) T_B(e) = r_B[i], T_C(e) = r_C[i];
    }
}

/* State n = lane*SPL + s (or N when past the last one). */
uint state(uint s) { return min(lane * SPL + s, NSTATE); }

/* Scratch index of this lane's state slot s at the start of chunk kc. */
uint hb_idx(uint kc, uint s) { return p.hb_at + (kc * NSTATE + state(s)) * ninv + inv; }

/*
 * This lane's Bm (or Cm: cm) values of step tt, zero past N: 16-byte loads when
 * its states start 16-byte aligned (SPL and N multiples of 4), else one by one.
 */
void lane_row(uint tt, bool cm, out float v[SPL]) {
    if (SPL % 4u == 0u && NSTATE % 4u == 0u) {
        uint at = (tt * NSTATE + lane * SPL) / 4u;
        [[unroll]] for (uint q = 0; q < SPL / 4u; q++) {
            vec4 w = cm ? t_C4[at + q] : t_B4[at + q];
            v[4u * q] = w.x, v[4u * q + 1u] = w.y, v[4u * q + 2u] = w.z, v[4u * q + 3u] = w.w;
        }
        return;
    }
    [[unroll]] for (uint s = 0; s < SPL; s++) {
        uint n = state(s), i = tt * NSTATE + min(n, NSTATE - 1u);
        v[s] = n == NSTATE ? 0.0 : cm ? T_C(i) : T_B(i);
    }
}

/* h <- the state after step tt of the loaded chunk (this lane's states; past N: 0). */
void advance(inout float h[SPL], uint tt) {
    float d = t_d[tt * WGC + k], du_ = T_DU(tt * WGC + k), bn[SPL];
    lane_row(tt, false, bn);
    [[unroll]] for (uint s = 0; s < SPL; s++) h[s] = exp(d * A[s]) * h[s] + du_ * bn[s];
}

/* The first walk: the state at the start of every chunk k >= 1 into hb. */
void checkpoints() {
    float h[SPL];
    [[unroll]] for (uint s = 0; s < SPL; s++) h[s] = 0.0;
    fetch(0u, false);
    for (uint kc = 0; kc < p.nch; kc++) {
        uint t0 = kc * LC, len = min(LC, p.T - t0);
        barrier(); /* the previous chunk's tiles are read */
        stage(len, false);
        barrier();
        fetch(t0 + LC, false);
        if (kc > 0u && live) {
            [[unroll]] for (uint s = 0; s < SPL; s++)
                if (state(s) < NSTATE) scr[hb_idx(kc, s)] = h[s];
        }
        for (uint tt = 0; tt < len; tt++) advance(h, tt);
    }
}

/* Running sums of one invocation over the walk. */
float g[SPL], dA[SPL];

/* Recompute the chunk's states from its start state h0 into s_h, then walk them back. */
void chunk_back(uint len, float h0[SPL]) {
    float h[SPL];
    [[unroll]] for (uint s = 0; s < SPL; s++) h[s] = h0[s];
    for (uint tt = 0; tt < len; tt++) {
        advance(h, tt);
        [[unroll]] for (uint s = 0; s < SPL; s++)
            if (state(s) < NSTATE) s_h[(tt * NSTATE + state(s)) * HROW + k] = h[s];
    }
    for (uint tt = len; tt-- > 0u;) {
        uint e = tt * WGC + k;
        float d = t_d[e], uu = t_u[e], dyr = T_DYR(e), dd = 0.0, gb = 0.0, bn[SPL], cn[SPL];
        lane_row(tt, false, bn);
        lane_row(tt, true, cn);
        [[unroll]] for (uint s = 0; s < SPL; s++) {
            uint n = state(s);
            if (n == NSTATE) continue;
            float prev = tt > 0u ? s_h[((tt - 1u) * NSTATE + n) * HROW + k] : h0[s];
            float decay = exp(d * A[s]), Bn = bn[s];
            float gn = g[s] + dyr * cn[s];
            s_g[(tt * NSTATE + n) * HROW + k] = gn;
            gb += gn * Bn;
            dd += gn * (A[s] * decay * prev + Bn * uu);
            dA[s] += gn * d * decay * prev;
            g[s] = gn * decay;
        }
        s_p[(tt * 2u) * WG_SIZE + gl_LocalInvocationID.x] = dd;
        s_p[(tt * 2u + 1u) * WG_SIZE + gl_LocalInvocationID.x] = gb;
    }
}

/* Running per-channel sums of this invocation's elements (dD, ddelta_bias). */
float dD, ddb;

/* Per element (t, channel) of the chunk: du, ddelta, dz in place. */
void finish_elements(uint t0, uint len) {
    for (uint tt = lane; tt < len; tt += LANES) {
        uint e = tt * WGC + k;
        float dd = 0.0, gb = 0.0;
        for (uint l = 0; l < LANES; l++) {
            dd += s_p[(tt * 2u) * WG_SIZE + l * WGC + k];
            gb += s_p[(tt * 2u + 1u) * WG_SIZE + l * WGC + k];
        }
        dD += T_DYR(e) * t_u[e];
        ddb += dd * t_dsig[e];
        if (!live) continue;
        uint ti = (b * p.T + t0 + tt) * p.Di + c;
        if ((p.flags & WANT_DU) != 0u) ACC(du[p.off[10] + ti], T_DYR(e) * Dc + t_d[e] * gb);
        if ((p.flags & WANT_DDELTA) != 0u) ACC(ddelta[p.off[11] + ti], dd * t_dsig[e]);
        if ((p.flags & WANT_DZ) == 0u || (p.flags & HAS_Z) == 0u) continue;
        float yraw = Dc * t_u[e]; /* the output before the gate */
        for (uint n = 0; n < NSTATE; n++)
            yraw += T_C(tt * NSTATE + n) * s_h[(tt * NSTATE + n) * HROW + k];
        ACC(dz[p.off[12] + ti], yraw * t_dzf[e]);
    }
}

/* Per (t, n) of the chunk: the workgroup's channel sums of dBm and dCm, channels in order. */
void finish_channel_sums(uint t0, uint len) {
    if ((p.flags & WANT_BC) == 0u) return;
    for (uint o = gl_LocalInvocationID.x; o < len * 2u * NSTATE; o += WG_SIZE) {
        uint tt = o / (2u * NSTATE), q = o % (2u * NSTATE), n = q % NSTATE;
        uint row = (tt * NSTATE + n) * HROW, e = tt * WGC;
        float s = 0.0;
        /* rows of the tiles start 16-byte aligned when WGC % 4 == 0: one load per 4 channels */
        if (WGC % 4u == 0u && q < NSTATE) {
            for (uint kq = 0, r = row; kq < WGC / 4u; kq++, r += 4u) {
                vec4 w = t_du4[e / 4u + kq];
                s += s_g[r] * w.x, s += s_g[r + 1u] * w.y, s += s_g[r + 2u] * w.z;
                s += s_g[r + 3u] * w.w;
            }
        } else if (WGC % 4u == 0u) {
            for (uint kq = 0, r = row; kq < WGC / 4u; kq++, r += 4u) {
                vec4 w = t_dyr4[e / 4u + kq];
                s += w.x * s_h[r], s += w.y * s_h[r + 1u], s += w.z * s_h[r + 2u];
                s += w.w * s_h[r + 3u];
            }
        } else if (q < NSTATE) {
            for (uint kk = 0; kk < WGC; kk++) s += s_g[row + kk] * T_DU(e + kk);
        } else {
            for (uint kk = 0; kk < WGC; kk++) s += T_DYR(e + kk) * s_h[row + kk];
        }
        scr[p.pbc_at + ((b * nblk + blk) * p.T + t0 + tt) * 2u * NSTATE + q] = s;
    }
}

/* The per-(b, c) partials: dA from every lane, dD and ddelta_bias summed over the lanes. */
void write_batch_partials() {
    uint lid = gl_LocalInvocationID.x, pa = p.pa_at + inv * (NSTATE + 2u);
    barrier(); /* s_p is free again */
    s_p[lid] = dD;
    s_p[WG_SIZE + lid] = ddb;
    barrier();
    if (!live) return;
    [[unroll]] for (uint s = 0; s < SPL; s++)
        if (state(s) < NSTATE) scr[pa + state(s)] = dA[s];
    if (lane != 0u) return;
    float sd = 0.0, sb = 0.0;
    for (uint l = 0; l < LANES; l++) sd += s_p[l * WGC + k], sb += s_p[WG_SIZE + l * WGC + k];
    scr[pa + NSTATE] = sd;
    scr[pa + NSTATE + 1u] = sb;
}

void main() {
    uint grp = chm_group();
    nblk = (p.Di + WGC - 1u) / WGC;
    b = grp / nblk;
    blk = grp % nblk;
    k = gl_LocalInvocationID.x % WGC;
    lane = gl_LocalInvocationID.x / WGC;
    c = blk * WGC + k;
    live = c < p.Di;  /* the others take part in the barriers with zeros */
    ninv = p.B * p.Di;
    inv = b * p.Di + c;
    [[unroll]] for (uint s = 0; s < SPL; s++) {
        uint n = state(s);
        A[s] = live && n < NSTATE ? LOAD(A_[p.off[2] + c * NSTATE + n]) : 0.0;
        g[s] = dA[s] = 0.0;
    }
    Dc = live && (p.flags & HAS_D) != 0u ? LOAD(Dv[p.off[5] + c]) : 0.0;
    bias = live && (p.flags & HAS_DB) != 0u ? LOAD(dbias[p.off[7] + c]) : 0.0;
    dD = ddb = 0.0;
    checkpoints();
    fetch((p.nch - 1u) * LC, true);
    for (uint kc = p.nch; kc-- > 0u;) {
        uint t0 = kc * LC, len = min(LC, p.T - t0);
        barrier(); /* the previous chunk's tiles and sums are read */
        stage(len, true);
        float h0[SPL];
        [[unroll]] for (uint s = 0; s < SPL; s++)
            h0[s] = kc > 0u && live && state(s) < NSTATE ? scr[hb_idx(kc, s)] : 0.0;
        barrier();
        fetch(kc > 0u ? t0 - LC : p.T, true); /* the next chunk back (none after the first) */
        chunk_back(len, h0);
        barrier();
        finish_elements(t0, len);
        finish_channel_sums(t0, len);
    }
    write_batch_partials();
}
#endif
