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
 *   selective_scan_bwd (_nosg): one invocation per (b, c), workgroups as in
 *     the forward. States are recomputed, never stored for all T: a first
 *     pass stores the state at the start of each chunk of L steps (hb), then
 *     chunks are processed last to first, each recomputing its L states (hs)
 *     from its start state and walking them backwards. du, ddelta, dz are
 *     added in place (one owner per element). Sums over channels (dBm, dCm)
 *     are reduced inside the workgroup at each step (subgroupAdd, then the
 *     subgroups in order; _nosg: a shared-memory tree) into one partial per
 *     (b, workgroup, t); sums over the batch (dA, dD, ddelta_bias) go to one
 *     partial per (b, c). Both are finished by the SUM variant in a fixed order.
 *   selective_scan_bwd_sum (-DSUM): out[g*M + m] += sum_k part[...] with k
 *     in order; part element (g, k, m) is at
 *     base + g*gs + k*ks + (m / inner)*os + m % inner.
 * Scratch (binding 9, floats; ninv = B*Di, inv = b*Di + c, nblk workgroups per b):
 *   hb  [nch][N][ninv]   start state of each chunk
 *   hs  [L][N][ninv]     the states of the chunk being walked
 *   pbc [B][nblk][T][2N] per-workgroup channel sums: dBm (n), dCm (N + n)
 *   pa  [B][Di][N+2]     per-(b, c) dA (n), dD (N), ddelta_bias (N + 1)
 * Each variant also as _bf16 and _f16 (dt.glsl): the tensors (inputs, dy,
 * gradients) 16-bit, loaded into f32, each gradient rounded once when its
 * sum is added; the scratch stays f32.
 * Specialization constant 2: NSTATE = N.
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
#ifndef CHM_NO_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(constant_id = 2) const uint NSTATE = 16;

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
    uint L, nch;                 /* chunk length, number of chunks */
    uint flags;
    uint hb_at, hs_at, pbc_at, pa_at;  /* scratch sections (floats) */
} p;

/* Channel sums of the current step: 2N values per invocation, reduced over the workgroup. */
#ifdef CHM_NO_SUBGROUP
shared float red[2u * NSTATE * WG_SIZE];
#else
shared float red[2u * NSTATE * ((WG_SIZE + 3u) / 4u)];  /* per subgroup (subgroups >= 4 wide) */
const uint NSUB_MAX = (WG_SIZE + 3u) / 4u;
#endif

/* Add value v of slot k (0..2N-1) into the step's reduction. Uniform control flow. */
void red_put(uint k, float v) {
#ifdef CHM_NO_SUBGROUP
    red[k * WG_SIZE + gl_LocalInvocationID.x] = v;
#else
    v = subgroupAdd(v);
    if (subgroupElect()) red[k * NSUB_MAX + gl_SubgroupID] = v;
#endif
}

/* Finish the step's reduction: slot k's workgroup sum goes to scr[dst + k]. */
void red_finish(uint dst) {
    uint lid = gl_LocalInvocationID.x;
    barrier();
#ifdef CHM_NO_SUBGROUP
    uint width = 1u;
    while (width < WG_SIZE) width <<= 1;
    for (uint s = width >> 1; s > 0u; s >>= 1) {
        if (lid < s && lid + s < WG_SIZE)
            for (uint k = 0; k < 2u * NSTATE; k++)
                red[k * WG_SIZE + lid] += red[k * WG_SIZE + lid + s];
        barrier();
    }
    for (uint k = lid; k < 2u * NSTATE; k += WG_SIZE) scr[dst + k] = red[k * WG_SIZE];
#else
    for (uint k = lid; k < 2u * NSTATE; k += WG_SIZE) {
        float s = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; i++) s += red[k * NSUB_MAX + i];
        scr[dst + k] = s;
    }
#endif
    barrier(); /* the next step overwrites red */
}

float softplus(float x) {
    if (x > 20.0) return x;
    float e = exp(x), s = 1.0 + e;
    return s == 1.0 ? e : log(s) * e / (s - 1.0);
}

float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }

/* What one invocation knows about its channel. */
uint b, c, inv, ninv, blk, nblk;
bool live;
float A[NSTATE], Dc, bias;

/* Step d and dd/ddelta of time t. */
void step_size(uint ti, out float dt, out float dsig) {
    float x = live ? LOAD(delta[p.off[1] + ti]) + bias : 0.0;
    bool sp = (p.flags & SOFTPLUS) != 0u;
    dt = sp ? softplus(x) : x;
    dsig = sp ? sigmoid(x) : 1.0;
}

/* h <- the state after step t. */
void advance(inout float h[NSTATE], uint t) {
    uint ti = (b * p.T + t) * p.Di + c, tn = (b * p.T + t) * NSTATE;
    float dt, dsig;
    step_size(ti, dt, dsig);
    float uu = live ? LOAD(u[p.off[0] + ti]) : 0.0;
    [[unroll]] for (uint n = 0; n < NSTATE; n++)
        h[n] = exp(dt * A[n]) * h[n] + dt * LOAD(Bm[p.off[3] + tn + n]) * uu;
}

/* Scratch index of state n in slot `slot` of section `at` (hb: slot = chunk, hs: slot = step). */
uint sidx(uint at, uint slot, uint n) { return at + (slot * NSTATE + n) * ninv + inv; }

/*
 * A forward walk from a stored state. Chunk k < nch: from hb[k] over its
 * L steps, the states into hs. k = nch: the whole sequence from zero, the
 * state at the start of every chunk into hb.
 */
void forward_walk(uint k) {
    bool full = k == p.nch;
    uint t0 = full ? 0u : k * p.L, t1 = full ? p.T : min(p.T, t0 + p.L);
    float h[NSTATE];
    [[unroll]] for (uint n = 0; n < NSTATE; n++)
        h[n] = full || !live ? 0.0 : scr[sidx(p.hb_at, k, n)];
    for (uint t = t0; t < t1; t++) {
        if (full && t % p.L == 0u && live) {
            [[unroll]] for (uint n = 0; n < NSTATE; n++) scr[sidx(p.hb_at, t / p.L, n)] = h[n];
        }
        advance(h, t);
        if (!full && live) {
            [[unroll]] for (uint n = 0; n < NSTATE; n++) scr[sidx(p.hs_at, t - t0, n)] = h[n];
        }
    }
}

/* Running sums of one invocation over the walk. */
float g[NSTATE], dA[NSTATE], dD, ddb;

/* Backward of step t (chunk k starting at t0): gradients of the step, carry g. */
void step_back(uint t, uint k, uint t0) {
    uint ti = (b * p.T + t) * p.Di + c, tn = (b * p.T + t) * NSTATE;
    float dt, dsig;
    step_size(ti, dt, dsig);
    float uu = live ? LOAD(u[p.off[0] + ti]) : 0.0, dyv = live ? LOAD(dy[p.off[8] + ti]) : 0.0;
    float hc[NSTATE], yraw = Dc * uu;
    [[unroll]] for (uint n = 0; n < NSTATE; n++) {
        hc[n] = live ? scr[sidx(p.hs_at, t - t0, n)] : 0.0;
        yraw += LOAD(Cm[p.off[4] + tn + n]) * hc[n];
    }
    float dyr = dyv;
    if ((p.flags & HAS_Z) != 0u) {
        float zz = live ? LOAD(z[p.off[6] + ti]) : 0.0, s = sigmoid(zz);
        dyr = dyv * zz * s;
        if ((p.flags & WANT_DZ) != 0u && live)
            ACC(dz[p.off[12] + ti], dyv * yraw * s * (1.0 + zz * (1.0 - s)));
    }
    float dui = dyr * Dc, dd = 0.0;
    dD += dyr * uu;
    bool bc = (p.flags & WANT_BC) != 0u;
    [[unroll]] for (uint n = 0; n < NSTATE; n++) {
        /* h_{t-1}: the previous state of this chunk, or the chunk's start state */
        uint pat = t > t0 ? sidx(p.hs_at, t - 1u - t0, n) : sidx(p.hb_at, k, n);
        float prev = live ? scr[pat] : 0.0;
        float decay = exp(dt * A[n]), Bn = LOAD(Bm[p.off[3] + tn + n]);
        float gn = g[n] + dyr * LOAD(Cm[p.off[4] + tn + n]);
        if (bc) {
            red_put(n, gn * dt * uu);
            red_put(NSTATE + n, dyr * hc[n]);
        }
        dui += gn * dt * Bn;
        dd += gn * (A[n] * decay * prev + Bn * uu);
        dA[n] += gn * dt * decay * prev;
        g[n] = gn * decay;
    }
    if (bc) red_finish(p.pbc_at + ((b * nblk + blk) * p.T + t) * 2u * NSTATE);
    ddb += dd * dsig;
    if (!live) return;
    if ((p.flags & WANT_DU) != 0u) ACC(du[p.off[10] + ti], dui);
    if ((p.flags & WANT_DDELTA) != 0u) ACC(ddelta[p.off[11] + ti], dd * dsig);
}

void main() {
    uint grp = chm_group();
    nblk = (p.Di + WG_SIZE - 1u) / WG_SIZE;
    b = grp / nblk;
    blk = grp % nblk;
    c = blk * WG_SIZE + gl_LocalInvocationID.x;
    live = c < p.Di;  /* the others take part in the reductions with zeros */
    ninv = p.B * p.Di;
    inv = b * p.Di + c;
    [[unroll]] for (uint n = 0; n < NSTATE; n++) {
        A[n] = live ? LOAD(A_[p.off[2] + c * NSTATE + n]) : 0.0;
        g[n] = dA[n] = 0.0;
    }
    Dc = live && (p.flags & HAS_D) != 0u ? LOAD(Dv[p.off[5] + c]) : 0.0;
    bias = live && (p.flags & HAS_DB) != 0u ? LOAD(dbias[p.off[7] + c]) : 0.0;
    dD = ddb = 0.0;
    forward_walk(p.nch); /* the start state of every chunk */
    for (uint k = p.nch; k-- > 0u;) {
        uint t0 = k * p.L, t1 = min(p.T, t0 + p.L);
        forward_walk(k);
        for (uint t = t1; t-- > t0;) step_back(t, k, t0);
    }
    if (!live) return;
    uint pa = p.pa_at + inv * (NSTATE + 2u);
    [[unroll]] for (uint n = 0; n < NSTATE; n++) scr[pa + n] = dA[n];
    scr[pa + NSTATE] = dD;
    scr[pa + NSTATE + 1u] = ddb;
}
#endif
