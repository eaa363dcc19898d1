// selective_scan_bwd.cuh: the selective scan backward's main kernel and its device helpers
// (algorithm: selective_scan.cuh). Compiled twice: by selective_scan_bwd.cu at SCAN_WARPS
// warps a block (8, every dtype and device) and by selective_scan_bwd_w16.cu at 16 (the
// model's call on devices with the shared memory for it). Everything here is in an unnamed
// namespace, so that the two copies of a kernel are two kernels, not one symbol twice.
#ifndef CHIMERA_CUDA_SELECTIVE_SCAN_BWD_CUH
#define CHIMERA_CUDA_SELECTIVE_SCAN_BWD_CUH

#include "selective_scan.cuh"

namespace {

// Per-lane running values of the backward: the dh carry and dA of the lane's states
// (in its register order, lane_of<true>).
struct scan_acc {
    float dhc[4], dA[4];
};

// The chunk's states from h0 (the state before the chunk) into the stash hs.
template <typename T>
__device__ __forceinline__ void bwd_recompute(float (*hs)[4], const float *h0, const float *A2,
                                              const scan_sm<T> &sm, const scan_lane &l) {
    const float4 *B4 = lane_rows(sm.Bs, l);
    float h[4] = {h0[0], h0[1], h0[2], h0[3]};
#pragma unroll
    for (int tt = 0; tt < SCAN_L; tt++) {
        state_step(h, A2, sm, B4, l, tt);
#pragma unroll
        for (int j = 0; j < 4; j++) hs[tt][j] = h[j];
    }
}

#define SCAN_FULL 0xffffffffu

// The sums over the warp's 8 channels (g = 0..7, lane bits 1, 3, 4: lane_of) of the dBm
// terms vb = dh d u and the dCm terms vc = dyr h of the lane's states, reduce-scattered: the
// result of lane (g, q) is the dBm (g even) or dCm (g odd) sum of state 4q + perm,
// perm = 2 (g >> 2 & 1) + (g >> 1 & 1). The register order (j holds state 4q + (j ^ perm))
// makes the first two stages select-free: across lane bit 4 (perm bit 1 differs) each
// lane keeps registers 0, 1 and sends 2, 3, whose states are the partner's 0, 1; across
// bit 3 (perm bit 0) it keeps 0 and sends 1. Only the last stage (across g's bit 0, dBm or
// dCm) selects.
__device__ __forceinline__ float bc_reduce(const float *dh, const float *h, float du, float dyr) {
    float b0 = fmaf(dh[0], du, __shfl_xor_sync(SCAN_FULL, dh[2] * du, 16));
    float b1 = fmaf(dh[1], du, __shfl_xor_sync(SCAN_FULL, dh[3] * du, 16));
    float c0 = fmaf(dyr, h[0], __shfl_xor_sync(SCAN_FULL, dyr * h[2], 16));
    float c1 = fmaf(dyr, h[1], __shfl_xor_sync(SCAN_FULL, dyr * h[3], 16));
    b0 += __shfl_xor_sync(SCAN_FULL, b1, 8);
    c0 += __shfl_xor_sync(SCAN_FULL, c1, 8);
    bool odd = (threadIdx.x & SCAN_LANE_G0) != 0;
    return (odd ? c0 : b0) + __shfl_xor_sync(SCAN_FULL, odd ? b0 : c0, SCAN_LANE_G0);
}

// The sums over a channel's 4 lanes of S, Q, Y: lane q = 0, 1, 2 gets S, Q, Y (lane 3
// a copy of Q). Across q's bit 1 the low lanes keep S and the high ones Y, all Q; across
// q's bit 0 the even lanes keep their first value, the odd ones their second.
__device__ __forceinline__ float sqy_reduce(float S, float Q, float Y) {
    bool hi = (threadIdx.x & SCAN_LANE_Q1) != 0, odd = (threadIdx.x & SCAN_LANE_Q0) != 0;
    float a = (hi ? Y : S) + __shfl_xor_sync(SCAN_FULL, hi ? S : Y, SCAN_LANE_Q1);
    float b = Q + __shfl_xor_sync(SCAN_FULL, Q, SCAN_LANE_Q1);
    return (odd ? b : a) + __shfl_xor_sync(SCAN_FULL, odd ? a : b, SCAN_LANE_Q0);
}

// The same for S and Q alone (the YS kernel, whose Y the forward saved): lanes q = 0, 2 get
// S and q = 1, 3 get Q, so that rows 0 and 1 of part hold S and Q as sqy_reduce leaves them.
__device__ __forceinline__ float sq_reduce(float S, float Q) {
    bool odd = (threadIdx.x & SCAN_LANE_Q0) != 0;
    float a = (odd ? Q : S) + __shfl_xor_sync(SCAN_FULL, odd ? S : Q, SCAN_LANE_Q0);
    return a + __shfl_xor_sync(SCAN_FULL, a, SCAN_LANE_Q1);
}

// Steps whose sums are stored together (see bwd_reverse): 2 measured fastest on the H100
// (1 and 4 slower; at 4 and 8 the kernel spills).
#define SCAN_BATCH 2

// The reverse recurrence over the chunk. Per step: the lane's parts of S = sum dh B,
// Q = sum A2 dh exp(dA) h[t-1] and Y = sum C h (not with YS: bwd_out reads the forward's)
// meet in sqy_reduce (sq_reduce) into sm.part; the
// dBm and dCm terms of the warp's 8 channels in bc_reduce into sm.red. The sums are stored
// SCAN_BATCH steps at a time: a shared store keeps the next step's shared loads from moving
// above it (the compiler cannot tell part and red from the tiles the steps read).
// The chunk's start state h0 (its checkpoint ck - 1; 0 for chunk 0) is loaded again
// halfway, where the stash's late rows are dead, rather than held in registers through the
// steps (holding it cost the kernel spills inside the chunk loop).
template <typename T, bool YS>
__device__ __forceinline__ void bwd_reverse(scan_acc &acc, float (*hs)[4], const float *A2,
                                            const scan_sm<T> &sm, const scan_lane &l,
                                            const scan_k &k, const scan_g &g, int64_t hb,
                                            int ck) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int slot = (lane & SCAN_LANE_G0 ? SCAN_NMAX : 0) + 4 * l.q + l.perm;
    const float4 *B4 = lane_rows(sm.Bs, l), *C4 = lane_rows(sm.Cs, l);
    // Row 0 of the lane's entries (steps apart by constants: immediate offsets).
    float *part = sm.part + l.q * SCAN_PSTRIDE + l.cl, *red = sm.red + w * 32 + slot;
    float h0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, pv[SCAN_BATCH], rv[SCAN_BATCH];
    // Step tt's loads are issued and its decays computed at step tt + 1 (so that their latency
    // overlaps that step's math; in the loop body they were 13 instructions before their use).
    // The compiler then also reuses more of the recompute's decays: 145 -> 140 MUFU a chunk.
    float2 pn = sm.fdu[(SCAN_L - 1) * SCAN_CB + l.cl];
    float dyn = sm.fdyr[(SCAN_L - 1) * SCAN_CB + l.cl];
    float4 bn = B4[(SCAN_L - 1) * 4], cn = C4[(SCAN_L - 1) * 4];
    float decn[4];
#pragma unroll
    for (int j = 0; j < 4; j++) decn[j] = scan_ex2(pn.x * A2[j]);
#pragma unroll
    for (int tt = SCAN_L - 1; tt >= 0; tt--) {
        if (tt == SCAN_L / 2 && ck > 0) hs_load(h0, g.ckpt, k, hb, ck - 1, l);
        float2 p = pn;
        float dyr = dyn, dc[4] = {decn[0], decn[1], decn[2], decn[3]};
        float4 bq = bn, cq = cn;
        if (tt > 0) {
            pn = sm.fdu[(tt - 1) * SCAN_CB + l.cl];
            dyn = sm.fdyr[(tt - 1) * SCAN_CB + l.cl];
            bn = B4[(tt - 1) * 4], cn = C4[(tt - 1) * 4];
#pragma unroll
            for (int j = 0; j < 4; j++) decn[j] = scan_ex2(pn.x * A2[j]);
        }
        float bb[4] = {bq.x, bq.y, bq.z, bq.w}, cc[4] = {cq.x, cq.y, cq.z, cq.w};
        float S = 0.0f, Q = 0.0f, Y = 0.0f, dh[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float hp = tt > 0 ? hs[tt - 1][j] : h0[j], dec = dc[j];
            dh[j] = fmaf(dyr, cc[j], acc.dhc[j]);
            float carry = dh[j] * dec, P = carry * hp;
            acc.dhc[j] = carry;
            acc.dA[j] = fmaf(p.x, P, acc.dA[j]);
            S = fmaf(dh[j], bb[j], S);
            Q = fmaf(A2[j], P, Q);
            if (!YS) Y = fmaf(cc[j], hs[tt][j], Y);
        }
        pv[tt % SCAN_BATCH] = YS ? sq_reduce(S, Q) : sqy_reduce(S, Q, Y);
        rv[tt % SCAN_BATCH] = bc_reduce(dh, hs[tt], p.y, dyr);
        if (tt % SCAN_BATCH == 0) {
#pragma unroll
            for (int u = 0; u < SCAN_BATCH; u++) {
                part[(tt + u) * 4 * SCAN_PSTRIDE] = pv[u];
                red[(tt + u) * SCAN_WARPS * 32] = rv[u];
            }
        }
    }
}

// Store old + v (or v where the gradient is set, !add) into the thread's quad of a
// gradient row (old: its raw tile).
template <typename T, bool VEC>
__device__ __forceinline__ void grad_add4(void *g, const T *old, bool add, float *v,
                                          const scan_pos &ps, int64_t off) {
    if (!g) return;
    if (add) {
        float o[4];
        scan_load4(old + ps.at, o);
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] += o[e];
    }
    scan_store4<T, VEC>((T *)g + off, v, ps.nv);
}

// Per element of the thread's quad: du, ddelta, dz from the lanes' sums (added to the
// tensors, or written with SET; dz's pre-gate y from the forward's, staged, with YS), and
// the running dD, ddelta_bias. The shared loads come
// before the stores (see pre_phase), as float4s; d from fdd, or without FDD from fdu (a
// 32-byte stride between threads: 8-way bank conflicts).
template <typename T, bool VEC, bool SET, bool FDD, bool YS>
__device__ __forceinline__ void bwd_out(const scan_sm<T> &sm, const T *raw, const scan_k &k,
                                        const scan_g &g, const scan_pos &ps, int64_t t0,
                                        int steps) {
    int row = ps.row, col = ps.col, at = ps.at;
    if (row >= steps) return;
    float uu[4], Dc[4], S[4], Q[4], Y[4], dv[4], dyr[4], dsig[4], dzf[4], aD[4], aB[4];
    float gu[4], gd[4], gz[4];
    const float *pr = sm.part + row * 4 * SCAN_PSTRIDE + col;
    scan_load4(raw + RAW_U * SCAN_TILE + at, uu);
    scan_load4(sm.cD + col, Dc);
    scan_load4(pr, S);
    scan_load4(pr + SCAN_PSTRIDE, Q);
    if (YS) scan_load4(raw + RAW_YS * SCAN_TILE + at, Y);
    else scan_load4(pr + 2 * SCAN_PSTRIDE, Y);
    if (FDD) {
        scan_load4(sm.fdd + at, dv);
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) dv[e] = sm.fdu[at + e].x;
    }
    scan_load4(sm.fdyr + at, dyr);
    scan_load4(sm.fdsig + at, dsig);
    scan_load4(sm.fdzf + at, dzf);
    scan_load4(sm.accD + at, aD);
    scan_load4(sm.accB + at, aB);
#pragma unroll
    for (int e = 0; e < 4; e++) {
        gu[e] = fmaf(dyr[e], Dc[e], dv[e] * S[e]);
        gd[e] = fmaf(Q[e], SCAN_LN2, uu[e] * S[e]) * dsig[e];
        gz[e] = dzf[e] * (YS ? Y[e] : fmaf(Dc[e], uu[e], Y[e]));
        aD[e] = fmaf(dyr[e], uu[e], aD[e]);
        aB[e] += gd[e];
    }
    scan_put4(sm.accD + at, aD);
    scan_put4(sm.accB + at, aB);
    int64_t off = ps.g + t0 * k.Di;
    grad_add4<T, VEC>(g.du, raw + RAW_GU * SCAN_TILE, !SET, gu, ps, off);
    grad_add4<T, VEC>(g.ddelta, raw + RAW_GD * SCAN_TILE, !SET, gd, ps, off);
    if (k.z) grad_add4<T, VEC>(g.dz, raw + RAW_GZ * SCAN_TILE, !SET, gz, ps, off);
}

// The chunk's dBm/dCm partials ([steps][32] at pbc): the warps' sums added in warp order.
// A fixed count of entries a thread, unrolled (as a loop over threadIdx.x, the compiler
// kept three copies of its body and the 64-bit index arithmetic of each).
static_assert(SCAN_L * 32 % SCAN_THREADS == 0, "whole rounds of the partials");
__device__ __forceinline__ void bc_partials(const float *red, float *pbc, int steps) {
#pragma unroll
    for (int i = 0; i < SCAN_L * 32 / SCAN_THREADS; i++) {
        int o = threadIdx.x + i * SCAN_THREADS, tt = o / 32, s = o % 32;
        if (tt >= steps) continue;
        const float *r = red + tt * SCAN_WARPS * 32 + s;
        float sum = r[0];
#pragma unroll
        for (int w = 1; w < SCAN_WARPS; w++) sum += r[w * 32];
        pbc[o] = sum;
    }
}

// End of the backward: dA of the lane's states; dD and ddelta_bias of the block's
// channels summed over the tile rows in row order.
template <typename T>
__device__ __forceinline__ void bwd_final(const scan_sm<T> &sm, const scan_acc &acc,
                                          const scan_k &k, const scan_g &g, int64_t b,
                                          int64_t c0, const scan_lane &l) {
    if (l.live) {
        float dA[4];
        scan_permute4(dA, acc.dA, l.perm);
        *(float4 *)(g.pA + (b * k.Di + l.c) * SCAN_NMAX + 4 * l.q) =
            make_float4(dA[0], dA[1], dA[2], dA[3]);
    }
    __syncthreads();
    int c = threadIdx.x;
    if (c >= SCAN_CB || c0 + c >= k.Di) return;
    float sD = 0.0f, sB = 0.0f;
    for (int row = 0; row < SCAN_L; row++) {
        sD += sm.accD[row * SCAN_CB + c];
        sB += sm.accB[row * SCAN_CB + c];
    }
    g.pD[b * k.Di + c0 + c] = sD;
    g.pdb[b * k.Di + c0 + c] = sB;
}

// SET: du, ddelta, dz are written, not accumulated (their old values are not staged). A
// template flag: tested at run time, it cost the kernel spills. FDD: with the fdd tile
// (scan_bwd_main says when not). YS (with SET, z and g.ys only): dz's pre-gate y is the
// forward's, staged in dz's slot, instead of summed again in the steps (5% fewer instructions).
// FULL: the common shapes (scan_assume_full).
template <typename T, bool VEC, bool SET, bool FDD, bool YS, bool FULL>
__global__ void __launch_bounds__(SCAN_THREADS, SCAN_MINB) scan_bwd_kernel(scan_k k, scan_g g) {
    chm_pdl_enter();
    static_assert(!YS || SET, "the saved y takes the slot of dz's old values");
    static_assert(!FULL || VEC, "whole quads are vector quads");
    __builtin_assume(threadIdx.x < SCAN_THREADS);  // the launch's block size (scan_launch)
    extern __shared__ __align__(16) unsigned char scan_raw_sm[];
    scan_sm<T> sm = scan_carve<T>(scan_raw_sm, true, FDD);
    int64_t b = blockIdx.y, c0 = blockIdx.x * (int64_t)SCAN_CB;
    int64_t row0 = (b * gridDim.x + blockIdx.x) * k.T;
    int nck = (int)((k.T + SCAN_L - 1) / SCAN_L);  // the host checks < 2^31
    scan_lane l = lane_of<true>(c0, k.Di);
    scan_pos ps = pos_of(k, b, c0);
    scan_assume_full<FULL>(k, l, ps);
    if (FULL && !(g.du && g.ddelta && g.dz)) __builtin_unreachable();  // scan_bwd_main checks
    int64_t hb = hs_base(k, nck, b, l);
    scan_acc acc;
    float A2[4];
    T bv[SCAN_BCPT], cv[SCAN_BCPT];
    lane_A2<T>(A2, k, l);
    block_consts<T>(sm, k, c0);
#pragma unroll
    for (int j = 0; j < 4; j++) acc.dhc[j] = acc.dA[j] = 0.0f;
    for (int i = threadIdx.x; i < SCAN_TILE; i += SCAN_THREADS) sm.accD[i] = sm.accB[i] = 0.0f;
    __syncthreads();  // cbias, cD, accD, accB in (read with other thread mappings)
    // The gradients' old values are staged only where they accumulate.
    const void *src[RAW_BWD] = {k.delta, k.u, k.z, g.dy, SET ? NULL : g.du,
                                SET ? NULL : g.ddelta, YS ? g.ys : k.z && !SET ? g.dz : NULL};
    // delta, u, dy are always given (bits 0, 1, 3 of REQ); with YS also z and the saved y
    const unsigned REQ = 1u << RAW_DELTA | 1u << RAW_U | 1u << RAW_DY |
                         (YS ? 1u << RAW_Z | 1u << RAW_YS : 0u);
    int64_t tl = (int64_t)(nck - 1) * SCAN_L;
    chunk_issue<T, VEC, REQ>(sm.raw, src, RAW_BWD, k, ps, b, c0, tl, chunk_steps<FULL>(k, tl));
    bc_fetch<T>(bv, cv, k, b, tl, chunk_steps<FULL>(k, tl), true);
    for (int ck = nck - 1; ck >= 0; ck--) {
        int64_t t0 = (int64_t)ck * SCAN_L;
        int steps = chunk_steps<FULL>(k, t0);
        int buf = (nck - 1 - ck) & 1;
        T *raw = sm.raw + buf * RAW_BWD * SCAN_TILE;
        // The thread's own quads of the chunk's tiles are in (one quad per thread in
        // chunk_issue, pre_phase and bwd_out: the raw tiles need no barrier); the last
        // chunk's reverse is done (the barrier after it): Bs, Cs, part, red are free.
        scan_cp_wait();
        bc_put<T, SCAN_NPERM>(sm, bv, cv);
        if (ck > 0) {
            chunk_issue<T, VEC, REQ>(sm.raw + (buf ^ 1) * RAW_BWD * SCAN_TILE, src, RAW_BWD, k,
                                     ps, b, c0, t0 - SCAN_L, SCAN_L);
            bc_fetch<T>(bv, cv, k, b, t0 - SCAN_L, SCAN_L, true);
        }
        float h0[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (ck > 0) hs_load(h0, g.ckpt, k, hb, ck - 1, l);
        pre_phase<T, true, FDD>(sm, raw, k, ps, steps, *(const float4 *)(sm.cbias + ps.col));
        __syncthreads();  // Bs, Cs and the f32 tiles of the chunk are in
        float hs[SCAN_L][4];
        bwd_recompute<T>(hs, h0, A2, sm, l);
        bwd_reverse<T, YS>(acc, hs, A2, sm, l, k, g, hb, ck);
        __syncthreads();  // part, red are in; the reverse's reads of the tiles are done
        bwd_out<T, VEC, SET, FDD, YS>(sm, raw, k, g, ps, t0, steps);
        bc_partials(sm.red, g.pbc + (row0 + t0) * 32, steps);
    }
    bwd_final<T>(sm, acc, k, g, b, c0, l);
}

}  // namespace

#endif
