/*
 * selective_scan_fwd.comp: the Mamba-1 selective scan.
 * u, delta, z, y [B,T,Di]; A [Di,N]; Bm, Cm [B,T,N]; D, delta_bias [Di]
 * (D, z, delta_bias optional: flags). With d = softplus(delta + delta_bias)
 * (or delta + delta_bias without SOFTPLUS):
 *   h[t,n] = exp(d[t]*A[c,n]) * h[t-1,n] + d[t]*Bm[t,n]*u[t]
 *   y[t]   = (sum_n Cm[t,n]*h[t,n] + D[c]*u[t]) * silu(z[t])   (gate only with z)
 * A workgroup owns WGC = WG_SIZE / LANES channels of one batch row; LANES
 * invocations share a channel, each holding SPL of its N states in registers
 * (invocation lid: channel lid % WGC, lane lid / WGC), so a batch row's
 * channels give LANES times more invocations than channels. Time goes in
 * chunks of LC steps: the chunk's [LC, WGC] tiles of delta, u, z are loaded
 * into shared memory with consecutive invocations on consecutive channels,
 * d = softplus(delta + bias), d*u and the gate computed once per element,
 * and the Bm, Cm rows [LC, N] staged too; each lane walks the chunk and
 * leaves its part of sum_n Cm*h per step in shared memory; then per element
 * the LANES parts are added in order, with the skip term and the gate, and
 * y is stored (again consecutive invocations on consecutive channels).
 * Variants: selective_scan_fwd (h starts at 0), selective_scan_step
 * (-DSTEP: h starts at hstate [B,Di,N] and the final state is written back),
 * selective_scan_fwd_save (-DSAVE: also the state after every 16 steps, and
 * the final one, into hsave [B, ceil(T/16), Di, N] f32: chm_scan_args.h_saved,
 * which selective_scan_bwd_sg.comp reads instead of walking the states).
 * Each also as _bf16 and _f16 (dt.glsl): every tensor (hstate included)
 * 16-bit, loaded into f32; y and the final state rounded once on store.
 * Specialization constants: 2 NSTATE = N, 3 LANES, 4 LC.
 * Cost model (chimera-1b, B8 T2048 Di2048 N16, f32): ~30 instructions per
 * lane-step and 0.54 GB of global traffic (delta, u, z read, y written once):
 * predicted 0.3-0.6 ms against 2.37 ms for one invocation per channel
 * (session 4; the new figure awaits the GPU run).
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "dt.glsl"
#include "common.glsl"

layout(constant_id = 2) const uint NSTATE = 16;
layout(constant_id = 3) const uint LANES = 4;   /* invocations per channel */
layout(constant_id = 4) const uint LC = 16;     /* steps per chunk */
const uint WGC = WG_SIZE / LANES;               /* channels per workgroup */
const uint SPL = (NSTATE + LANES - 1u) / LANES; /* states per lane */

layout(binding = 0) readonly buffer U { DT u[]; };
layout(binding = 1) readonly buffer Delta { DT delta[]; };
layout(binding = 2) readonly buffer Amat { DT A_[]; };
layout(binding = 3) readonly buffer Bmat { DT Bm[]; };
layout(binding = 4) readonly buffer Cmat { DT Cm[]; };
layout(binding = 5) readonly buffer Dvec { DT Dv[]; };     /* dummy without HAS_D */
layout(binding = 6) readonly buffer Z { DT z[]; };         /* dummy without HAS_Z */
layout(binding = 7) readonly buffer Dbias { DT dbias[]; }; /* dummy without HAS_DB */
layout(binding = 8) writeonly buffer Y { DT y[]; };
#ifdef STEP
layout(binding = 9) buffer H { DT hstate[]; };
#define NBIND 10
#elif defined(SAVE)
layout(binding = 9) writeonly buffer Hsave { float hsave[]; }; /* f32 whatever DT */
#define NBIND 10
#else
#define NBIND 9
#endif

const uint HAS_D = 1u, HAS_Z = 2u, HAS_DB = 4u, SOFTPLUS = 8u;  /* bits of p.flags */

layout(push_constant) uniform Push {
    uint off[NBIND];
    uint B, T, Di;
    uint flags;
} p;

/* The chunk's per-element tiles [LC][WGC]: d, d*u, u, gate (zeros past T and Di). */
shared float t_d[LC * WGC], t_du[LC * WGC], t_u[LC * WGC], t_gate[LC * WGC];
/* Bm, Cm rows [LC][N] as vec4 arrays (a lane reads its four states at once) */
const uint ROWS4 = (LC * NSTATE + 3u) / 4u;
shared vec4 t_B4[ROWS4], t_C4[ROWS4];
shared float s_y[LC * WG_SIZE];                    /* each lane's sum_n Cm*h per step */

uint b, k, lane, c;
bool live;

/* log(1 + e^x) in f32: log1p through the (1+y)-1 correction, x itself past 20. */
float softplus(float x) {
    if (x > 20.0) return x;
    float e = exp(x), s = 1.0 + e;
    return s == 1.0 ? e : log(s) * e / (s - 1.0);
}

/*
 * The next chunk's inputs, fetched into registers one chunk ahead (their
 * latency hides behind the current chunk's steps): invocation (k, lane)
 * holds its channel's delta, u, z at steps lane + i*LANES (i < EPI) and the
 * Bm, Cm row elements lid + i*WG_SIZE (i < RPI); zeros past T and Di.
 */
const uint EPI = (LC + LANES - 1u) / LANES, RPI = (LC * NSTATE + WG_SIZE - 1u) / WG_SIZE;
float f_delta[EPI], f_u[EPI], f_z[EPI], f_B[RPI], f_C[RPI];

void fetch(uint t0) {
    uint len = t0 < p.T ? min(LC, p.T - t0) : 0u;
    [[unroll]] for (uint i = 0; i < EPI; i++) {
        uint tt = lane + i * LANES, ti = (b * p.T + t0 + tt) * p.Di + c;
        bool ok = live && tt < len;
        f_delta[i] = ok ? LOAD(delta[p.off[1] + ti]) : 0.0;
        f_u[i] = ok ? LOAD(u[p.off[0] + ti]) : 0.0;
        f_z[i] = ok && (p.flags & HAS_Z) != 0u ? LOAD(z[p.off[6] + ti]) : 0.0;
    }
    uint row = (b * p.T + t0) * NSTATE;
    [[unroll]] for (uint i = 0; i < RPI; i++) {
        uint e = gl_LocalInvocationID.x + i * WG_SIZE;
        bool in_t = e < len * NSTATE;
        f_B[i] = in_t ? LOAD(Bm[p.off[3] + row + e]) : 0.0;
        f_C[i] = in_t ? LOAD(Cm[p.off[4] + row + e]) : 0.0;
    }
}

/* The fetched chunk [t0, t0 + len) into the tiles: d = softplus(delta + bias), d*u, gate. */
void stage(uint len, float bias) {
    [[unroll]] for (uint i = 0; i < EPI; i++) {
        uint tt = lane + i * LANES, e = tt * WGC + k;
        if (tt >= LC) continue;
        float d = 0.0, gate = 0.0, zz = f_z[i];
        if (live && tt < len) {
            d = f_delta[i] + bias;
            if ((p.flags & SOFTPLUS) != 0u) d = softplus(d);
            gate = (p.flags & HAS_Z) != 0u ? zz / (1.0 + exp(-zz)) : 1.0;
        }
        t_d[e] = d, t_du[e] = d * f_u[i], t_u[e] = f_u[i], t_gate[e] = gate;
    }
    [[unroll]] for (uint i = 0; i < RPI; i++) {
        uint e = gl_LocalInvocationID.x + i * WG_SIZE;
        if (e < LC * NSTATE) t_B4[e / 4u][e % 4u] = f_B[i], t_C4[e / 4u][e % 4u] = f_C[i];
    }
}

/* Bm and Cm of step tt for this lane's states (zeros past N). */
void lane_bc(uint tt, out float bn[SPL], out float cn[SPL]) {
    uint first = tt * NSTATE + lane * SPL;
    if (SPL % 4u == 0u && NSTATE % 4u == 0u) { /* 16-byte aligned: whole vec4s */
        [[unroll]] for (uint q = 0; q < SPL; q += 4u) {
            vec4 b4 = t_B4[first / 4u + q / 4u], c4 = t_C4[first / 4u + q / 4u];
            [[unroll]] for (uint r = 0; r < 4u; r++) bn[q + r] = b4[r], cn[q + r] = c4[r];
        }
        return;
    }
    [[unroll]] for (uint s = 0; s < SPL; s++) {
        bool own = lane * SPL + s < NSTATE;
        uint i = own ? first + s : 0u;
        bn[s] = own ? t_B4[i / 4u][i % 4u] : 0.0;
        cn[s] = own ? t_C4[i / 4u][i % 4u] : 0.0;
    }
}

void main() {
    uint nblk = (p.Di + WGC - 1u) / WGC, g = chm_group();
    b = g / nblk;
    k = gl_LocalInvocationID.x % WGC;
    lane = gl_LocalInvocationID.x / WGC;
    c = (g % nblk) * WGC + k;
    live = c < p.Di; /* the others take part in the barriers */
    float A[SPL], h[SPL];
    [[unroll]] for (uint s = 0; s < SPL; s++) {
        uint n = lane * SPL + s;
        bool own = live && n < NSTATE;
        A[s] = own ? LOAD(A_[p.off[2] + c * NSTATE + n]) : 0.0;
#ifdef STEP
        h[s] = own ? LOAD(hstate[p.off[9] + (b * p.Di + c) * NSTATE + n]) : 0.0;
#else
        h[s] = 0.0;
#endif
    }
    float Dc = live && (p.flags & HAS_D) != 0u ? LOAD(Dv[p.off[5] + c]) : 0.0;
    float bias = live && (p.flags & HAS_DB) != 0u ? LOAD(dbias[p.off[7] + c]) : 0.0;
    fetch(0u);
    for (uint t0 = 0; t0 < p.T; t0 += LC) {
        uint len = min(LC, p.T - t0);
        barrier(); /* the previous chunk's tiles are read */
        stage(len, bias);
        barrier();
        fetch(t0 + LC);
        for (uint tt = 0; tt < len; tt++) {
            uint e = tt * WGC + k;
            float d = t_d[e], du_ = t_du[e], acc = 0.0, bn[SPL], cn[SPL];
            lane_bc(tt, bn, cn);
            [[unroll]] for (uint s = 0; s < SPL; s++) { /* past N: A = 0, Bm = 0, h stays 0 */
                h[s] = exp(d * A[s]) * h[s] + du_ * bn[s];
                acc += cn[s] * h[s];
            }
            s_y[tt * WG_SIZE + gl_LocalInvocationID.x] = acc;
#ifdef SAVE
            uint t = t0 + tt; /* entry t / 16 after its last step (or the scan's) */
            if (live && ((t + 1u) % 16u == 0u || t + 1u == p.T)) {
                uint at = p.off[9] + ((b * ((p.T + 15u) / 16u) + t / 16u) * p.Di + c) * NSTATE;
                [[unroll]] for (uint s = 0; s < SPL; s++)
                    if (lane * SPL + s < NSTATE) hsave[at + lane * SPL + s] = h[s];
            }
#endif
        }
        barrier();
        for (uint tt = lane; tt < len && live; tt += LANES) {
            uint e = tt * WGC + k;
            float acc = Dc * t_u[e];
            for (uint l = 0; l < LANES; l++) acc += s_y[tt * WG_SIZE + l * WGC + k];
            y[p.off[8] + (b * p.T + t0 + tt) * p.Di + c] = STORE(acc * t_gate[e]);
        }
    }
#ifdef STEP
    [[unroll]] for (uint s = 0; s < SPL; s++) {
        uint n = lane * SPL + s;
        if (live && n < NSTATE) hstate[p.off[9] + (b * p.Di + c) * NSTATE + n] = STORE(h[s]);
    }
#endif
}
