/*
 * causal_conv1d_bwd.comp: backward of causal_conv1d_fwd.comp, ACCUMULATING
 * into dx, dw and dbias. x, dout, dx [B,T,C]; w, dw [C,W]; bias, dbias [C].
 * With g = dL/dpre (dout, times silu'(pre) when the forward fused SiLU):
 *   dx[b,s,c] += sum_j g[b, s+(W-1)-j, c] * w[c,j]    (terms with s+(W-1)-j < T)
 *   dw[c,j]   += sum_{b,t} g[b,t,c] * x[b, t-(W-1)+j, c]
 *   dbias[c]  += sum_{b,t} g[b,t,c]
 * Variants:
 *   causal_conv1d_bwd_grad (-DGRAD): g [B,T,C] = dout * silu'(pre), pre
 *     recomputed from x, w, bias (only run when SiLU was fused);
 *   causal_conv1d_bwd_dx (-DDX): one invocation per element of dx;
 *   causal_conv1d_bwd_dw (-DDW): one invocation per (row chunk k, tap j, c),
 *     c fastest (coalesced loads; with j fastest, a warp read 4 rows of 7
 *     channels each: 1.4 ms a call at chimera-1b's shape on an H100), with
 *     j = W standing for dbias; rows (b,t) of the chunk are added in order,
 *     into dw/dbias; causal_conv1d_bwd_dw_partial (-DDW -DPARTIAL) writes the
 *     chunk sums part_w [K,C*W] and part_b [K,C] instead, which sum_rows then
 *     adds in chunk order (deterministic, no atomics).
 *   causal_conv1d_bwd_fused (-DFUSED, and -DPAIR for two channels an
 *     invocation): all of it in one pass, below; the three passes above
 *     stay for CHIMERA_VULKAN_DISABLE=conv1d_fused.
 * Each also as _bf16 and _f16 (dt.glsl): x, w, bias, dout, dx, dw, dbias
 * 16-bit, loaded into f32, each gradient rounded once when its sum is
 * added. g is f32 scratch when SiLU was fused: DX and DW read it as f32
 * with -DG_F32 (the _gf32_bf16 / _gf32_f16 variants), and dout itself
 * (16-bit) otherwise. The chunk sums of PARTIAL stay f32.
 */
#version 450
#ifdef FUSED
#extension GL_EXT_control_flow_attributes : require
#endif
#include "dt.glsl"
#include "common.glsl"

/* g's storage: the f32 scratch of the fused SiLU, or dout's words */
#ifdef G_F32
#define GT float
#define GLOAD(w) (w)
#else
#define GT DT
#define GLOAD(w) LOAD(w)
#endif

#if defined(FUSED)
/*
 * One pass: each invocation walks `per` time steps of one channel of one
 * sequence (plus W-1 steps of halo either side), x and dout read once from
 * memory, pre and g kept in registers: x[t-(W-1)..t] and g[t-(W-1)..t] are
 * sliding windows. At step t it adds g[t]*x[t-(W-1)+j] to its dw sums and
 * completes dx[t-(W-1)], whose last term g[t] has just been computed.
 * A workgroup is CB consecutive channel units (a warp reads one row's
 * channels contiguously) x NS = WG_SIZE/CB consecutive time chunks: a slab
 * of NS*per rows of one sequence. Its NS per-chunk sums of dw and dbias are
 * added in chunk order through shared memory into one f32 partial row
 * k = b*slabs + slab: part_w [K,C*W], part_b [K,C], which sum_rows adds in
 * order of k (deterministic, no atomics). W is a specialization constant,
 * so the windows stay in registers.
 * A unit is one channel, or with -DPAIR (16-bit tensors, C even, x, dout
 * and dx 4-byte aligned: causal_conv1d_bwd_fused_pair_bf16 / _f16) two
 * adjacent channels read and written as one 32-bit word (vec2 in
 * registers): a warp's loads of 16-bit words alone cost twice the requests
 * per byte.
 */
layout(constant_id = 2) const uint KW = 4;  /* W: taps */
layout(constant_id = 3) const uint U = 4;   /* time steps whose loads are issued together */
#define CB 32u                              /* channel units of a workgroup */

#ifdef PAIR
#define VT vec2
#define NCH 2u
#define WORD uint
#if defined(DT_BF16)
#define PACK(f) chm_f32_to_bf16(f)
#else
#define PACK(f) chm_f32_to_f16(f)
#endif
VT loadv(uint w) { return vec2(LOAD(w & 0xffffu), LOAD(w >> 16)); }
uint storev(VT v) { return PACK(v.x) | (PACK(v.y) << 16); }
float comp(VT v, uint h) { return v[h]; }
#else
#define VT float
#define NCH 1u
#define WORD DT
#define loadv(w) LOAD(w)
#define storev(v) STORE(v)
#define comp(v, h) (v)
#endif

/* restrict: the wrapper keeps the gradients apart from every other tensor, so the
   loads of a group of steps may be issued before the previous group's stores */
layout(binding = 0) restrict readonly buffer X { WORD x[]; };      /* [B,T,C/NCH] units */
layout(binding = 1) restrict readonly buffer W { DT w[]; };
layout(binding = 2) restrict readonly buffer Bias { DT bias[]; };  /* dummy without a bias */
layout(binding = 3) restrict readonly buffer Dout { WORD dout[]; };
layout(binding = 4) restrict buffer Dx { WORD dx[]; };
layout(binding = 5) restrict writeonly buffer PartW { float pw[]; };  /* part_w [K,C*W] */
layout(binding = 6) restrict writeonly buffer PartB { float pb[]; };  /* part_b [K,C]; or dummy */

layout(push_constant) uniform Push {
    uint off[7];
    uint T, C, per, slabs; /* per: time steps of an invocation; slabs = ceil(T / (NS*per)) */
    uint flags;            /* 1: bias, 2: SiLU fused, 4: dbias wanted */
} p;

const uint NS = WG_SIZE / CB;
shared VT red[(KW + 1u) * WG_SIZE]; /* [tap or dbias, slice, lane] */

/* w[c, j] (or bias[c] for j = W) of unit u's channels */
VT param(uint u, uint j) {
#ifdef PAIR
    if (j == KW) return vec2(LOAD(bias[p.off[2] + 2u * u]), LOAD(bias[p.off[2] + 2u * u + 1u]));
    return vec2(LOAD(w[p.off[1] + 2u * u * KW + j]), LOAD(w[p.off[1] + (2u * u + 1u) * KW + j]));
#else
    return j == KW ? LOAD(bias[p.off[2] + u]) : LOAD(w[p.off[1] + u * KW + j]);
#endif
}

void main() {
    uint lid = gl_LocalInvocationID.x, lane = lid % CB, slice = lid / CB, Cu = p.C / NCH;
    uint cblocks = (Cu + CB - 1u) / CB, g0 = chm_group();
    uint u = (g0 % cblocks) * CB + lane, k = g0 / cblocks;
    uint b = k / p.slabs, t0 = ((k % p.slabs) * NS + slice) * p.per;
    uint t1 = min(p.T, t0 + p.per);
    bool live = u < Cu && t0 < p.T, silu = (p.flags & 2u) != 0u;

    VT wt[KW], xw[KW], gw[KW], dws[KW], dbs = VT(0.0), bv = VT(0.0);
    [[unroll]] for (uint j = 0; j < KW; j++) wt[j] = xw[j] = gw[j] = dws[j] = VT(0.0);
    uint at = (b * p.T) * Cu + u; /* unit (b, 0, u), less the binding offsets */
    if (live) {
        [[unroll]] for (uint j = 0; j < KW; j++) wt[j] = param(u, j);
        if ((p.flags & 1u) != 0u) bv = param(u, KW);
        /* before step t0, xw[1..W-1] hold x[t0-(W-1) .. t0-1] (zero before time 0) */
        [[unroll]] for (uint j = 1; j < KW; j++)
            if (t0 + j >= KW) xw[j] = loadv(x[p.off[0] + at + (t0 + j - KW) * Cu]);
    }
    uint tend = live ? t1 + KW - 1u : t0; /* steps past T add g = 0 */
    for (uint tb = t0; tb < tend; tb += U) {
        /* the group's loads first, all independent: x and dout at t, dx at t-(W-1) */
        VT xs[U], ds[U], dxs[U];
        [[unroll]] for (uint e = 0; e < U; e++) {
            uint t = tb + e;
            bool in_ = t < tend && t < p.T, out_ = t < tend && t + 1u >= t0 + KW;
            xs[e] = in_ ? loadv(x[p.off[0] + at + t * Cu]) : VT(0.0);
            ds[e] = in_ ? loadv(dout[p.off[3] + at + t * Cu]) : VT(0.0);
            dxs[e] = out_ ? loadv(dx[p.off[4] + at + (t + 1u - KW) * Cu]) : VT(0.0);
        }
        [[unroll]] for (uint e = 0; e < U; e++) {
            uint t = tb + e;
            if (t >= tend) break;
            [[unroll]] for (uint j = 0; j + 1u < KW; j++) {
                xw[j] = xw[j + 1u];
                gw[j] = gw[j + 1u];
            }
            xw[KW - 1u] = xs[e];
            VT g = ds[e];
            if (silu && t < p.T) {
                VT s = bv;
                [[unroll]] for (uint j = 0; j < KW; j++) s += wt[j] * xw[j];
                VT sg = 1.0 / (1.0 + exp(-s));
                g = ds[e] * sg * (1.0 + s * (1.0 - sg));
            }
            gw[KW - 1u] = g;
            if (t < t1) {
                [[unroll]] for (uint j = 0; j < KW; j++) dws[j] += g * xw[j];
                dbs += g;
            }
            if (t + 1u >= t0 + KW) { /* dx[s], s = t-(W-1): sum_j g[s+(W-1)-j] * w[j] */
                VT a = VT(0.0);
                [[unroll]] for (uint j = 0; j < KW; j++) a += gw[KW - 1u - j] * wt[j];
                dx[p.off[4] + at + (t + 1u - KW) * Cu] = storev(dxs[e] + a);
            }
        }
    }

    /* the slab's chunk sums, added in chunk (slice) order */
    [[unroll]] for (uint j = 0; j < KW; j++) red[(j * NS + slice) * CB + lane] = dws[j];
    red[(KW * NS + slice) * CB + lane] = dbs;
    barrier();
    bool dbias = (p.flags & 4u) != 0u;
    for (uint q = lid; q < (KW + 1u) * CB; q += WG_SIZE) {
        uint j = q / CB, uq = (g0 % cblocks) * CB + q % CB;
        if (uq >= Cu || (j == KW && !dbias)) continue;
        VT s = VT(0.0);
        for (uint sl = 0; sl < NS; sl++) s += red[(j * NS + sl) * CB + q % CB];
        for (uint h = 0; h < NCH; h++) {
            uint c = uq * NCH + h;
            if (j == KW) pb[p.off[6] + k * p.C + c] = comp(s, h);
            else pw[p.off[5] + k * p.C * KW + c * KW + j] = comp(s, h);
        }
    }
}

#elif defined(GRAD)

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer W { DT w[]; };
layout(binding = 2) readonly buffer Bias { DT bias[]; };  /* dummy without a bias */
layout(binding = 3) readonly buffer Dout { DT dout[]; };
layout(binding = 4) writeonly buffer G { float g[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint n, T, C, W;
    uint has_bias;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    uint c = i % p.C, row = i / p.C, t = row % p.T;
    float s = p.has_bias != 0u ? LOAD(bias[p.off[2] + c]) : 0.0;
    uint j0 = t + 1u >= p.W ? 0u : p.W - 1u - t;
    for (uint j = j0; j < p.W; j++)
        s += LOAD(w[p.off[1] + c * p.W + j]) * LOAD(x[p.off[0] + (row + j + 1u - p.W) * p.C + c]);
    float sg = 1.0 / (1.0 + exp(-s));
    g[p.off[4] + i] = LOAD(dout[p.off[3] + i]) * sg * (1.0 + s * (1.0 - sg));
}

#elif defined(DX)

layout(binding = 0) readonly buffer G { GT g[]; };
layout(binding = 1) readonly buffer W { DT w[]; };
layout(binding = 2) buffer Dx { DT dx[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n, T, C, W;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    uint c = i % p.C, row = i / p.C, s = row % p.T;
    /* output time s+(W-1)-j must stay below T: j >= s+W-T */
    uint j0 = s + p.W > p.T ? s + p.W - p.T : 0u;
    float acc = 0.0;
    for (uint j = j0; j < p.W; j++)
        acc += GLOAD(g[p.off[0] + (row + p.W - 1u - j) * p.C + c]) *
               LOAD(w[p.off[1] + c * p.W + j]);
    ACC(dx[p.off[2] + i], acc);
}

#else /* DW */

layout(binding = 0) readonly buffer G { GT g[]; };
layout(binding = 1) readonly buffer X { DT x[]; };
#ifdef PARTIAL
layout(binding = 2) buffer Dw { float dw[]; };      /* part_w [K,C*W] */
layout(binding = 3) buffer Dbias { float db[]; };   /* part_b [K,C]; dummy if absent */
#else
layout(binding = 2) buffer Dw { DT dw[]; };         /* dw [C,W] */
layout(binding = 3) buffer Dbias { DT db[]; };      /* dbias [C]; dummy if absent */
#endif

layout(push_constant) uniform Push {
    uint off[4];
    uint rows, T, C, W;  /* rows = B*T */
    uint rows_per_chunk, chunks, has_dbias;
} p;

void main() {
    uint i = chm_index(), taps = p.W + 1u;
    if (i >= p.chunks * p.C * taps) return;
    /* c fastest: a warp's loads of g and x are consecutive channels of one row */
    uint c = i % p.C, j = (i / p.C) % taps, k = i / (taps * p.C);
    if (j == p.W && p.has_dbias == 0u) return;
    uint r0 = k * p.rows_per_chunk, r1 = min(p.rows, r0 + p.rows_per_chunk);
    float s = 0.0;
    for (uint r = r0; r < r1; r++) {
        float gv = GLOAD(g[p.off[0] + r * p.C + c]);
        if (j == p.W) {
            s += gv;
        } else if (r % p.T + j + 1u >= p.W) {  /* tap j reads time t-(W-1)+j >= 0 */
            s += gv * LOAD(x[p.off[1] + (r + j + 1u - p.W) * p.C + c]);
        }
    }
#ifdef PARTIAL
    if (j == p.W) db[p.off[3] + k * p.C + c] = s;
    else dw[p.off[2] + k * p.C * p.W + c * p.W + j] = s;
#else
    if (j == p.W) ACC(db[p.off[3] + c], s);
    else ACC(dw[p.off[2] + c * p.W + j], s);
#endif
}
#endif
