// attention_flash_bwd.cu: flash-attention backward on bf16 tensor cores
// (sm_80+), head dim 64 or 128, causal, grouped-query: the dK/dV kernel here
// and the entry point that runs it with one of the two dQ paths.
//
//  dkdv: one block per (16*MT*NW keys, kv head, batch), NW = 4 warps (8 in the
//        experiments bwd_w8*: the Q/dO tiles serve twice the keys); each warp
//        owns 16*MT keys (MT m16 tiles: every Q/dO fragment read from shared
//        memory feeds 2*MT mma) and walks, for every q head of the group,
//        the query tiles at or after its keys: S^T = K Q^T,
//        P^T = exp2(S^T*scale*log2e - lse),
//        dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - Delta), dK += dS^T Q.
//        The causal mask runs only on tiles that cross the diagonal; a warp
//        skips the tiles wholly before its keys.
// dQ, two paths:
//  - atomic (FlashAttention-2's; the default for D 64): the dkdv kernel also
//    writes dS^T of the tile to shared memory and the block adds dS K (the
//    5th product) into an f32 dQ buffer with float atomics; a small kernel
//    then adds scale * dQ into dq (attention_flash_dq.cu; the experiment
//    bwd_dq_fused does that in the dkdv kernel, see FUSE). The float sums'
//    order depends on the schedule: dq is not bitwise repeatable.
//  - deterministic (D 128, and D 64 with CHIMERA_DETERMINISTIC=1): the dQ
//    kernel of attention_flash_dq.cu recomputes S and dP per query tile (7
//    products in all), so every gradient element has exactly one writer.
// Q/dO tiles are double-buffered with cp.async. lse and Delta are f32
// [B,H,T]. dq, dk, dv ACCUMULATE (bf16 read-modify-write).
#include "attention_flash_bwd.cuh"

// dkdv: stage iteration `it` (q head h0 + it/per, query tile qstart + it%per) into
// buffer buf, all by cp.async: Q and dO rows, lse and Delta (a plain load
// would stall its warp, and at the barrier the block, for a global-memory
// latency every iteration). Rows >= T read as zeros: their Q and dO are zero,
// so they add nothing to dK and dV whatever P is.
template <int D, int BQ, int NT>
__device__ __forceinline__ void fb_stage(bf16 *Qs, bf16 *Os, float *Ls, float *Ds, const bf16 *q,
                                         const bf16 *dout, const float *lse, const float *delta,
                                         int b, int h0, int per, int qstart, int it, int buf,
                                         int T, int H) {
    constexpr int LD = D + FA_PAD;
    int h = h0 + it / per, i0 = (qstart + it % per) * BQ;
    int64_t base = ((int64_t)b * T * H + h) * D, qld = (int64_t)H * D;
    tile_load<BQ, D, NT>(Qs + buf * BQ * LD, q + base, qld, i0, T);
    tile_load<BQ, D, NT>(Os + buf * BQ * LD, dout + base, qld, i0, T);
    for (int i = threadIdx.x; i < BQ; i += NT) {
        int row = i0 + i;
        bool ok = row < T;
        int64_t st = ((int64_t)b * H + h) * T + (ok ? row : 0);
        cp_async4(Ls + buf * BQ + i, lse + st, ok);
        cp_async4(Ds + buf * BQ + i, delta + st, ok);
    }
}

// In place: st becomes P^T and dpt dS^T (row = key, column = query); Lc holds
// lse (natural log) of the tile's queries. MASK zeroes P of queries before the key.
template <int MT, int BQ, bool MASK>
__device__ __forceinline__ void kv_pds(float st[MT][BQ / 8][4], float dpt[MT][BQ / 8][4],
                                       const float *Lc, const float *Dc, int krow, int i0,
                                       float sl2) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int nt = 0; nt < BQ / 8; nt++) {
        int qc = nt * 8 + (lane & 3) * 2;
        float2 lq = *(const float2 *)(Lc + qc), dq = *(const float2 *)(Dc + qc);
        lq.x *= FA_LOG2E;  // natural log -> log2 units
        lq.y *= FA_LOG2E;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = fast_exp2(fmaf(st[mt][nt][e], sl2, -((e & 1) ? lq.y : lq.x)));
                if (MASK && i0 + qc + (e & 1) < krow + mt * 16 + (e >> 1) * 8) p = 0.0f;
                st[mt][nt][e] = p;
                dpt[mt][nt][e] = p * (dpt[mt][nt][e] - ((e & 1) ? dq.y : dq.x));
            }
    }
}

// dV += P^T dO and dK += dS^T Q for this warp's keys, A operands from the accumulators.
template <int D, int MT, int BQ>
__device__ __forceinline__ void kv_acc(float dva[MT][D / 8][4], float dka[MT][D / 8][4],
                                       const float st[MT][BQ / 8][4],
                                       const float dpt[MT][BQ / 8][4], const bf16 *Qc,
                                       const bf16 *Oc) {
    constexpr int LD = D + FA_PAD;
#pragma unroll
    for (int j = 0; j < BQ / 16; j++) {
        uint32_t pa[MT][4], sa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            c_to_a(pa[mt], st[mt][2 * j], st[mt][2 * j + 1]);
            c_to_a(sa[mt], dpt[mt][2 * j], dpt[mt][2 * j + 1]);
        }
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t r[4];
            frag_b_kn<LD>(r, Oc, j * 16, dp * 16);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(dva[mt][2 * dp], pa[mt], r[0], r[1]);
                mma16816(dva[mt][2 * dp + 1], pa[mt], r[2], r[3]);
            }
            frag_b_kn<LD>(r, Qc, j * 16, dp * 16);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(dka[mt][2 * dp], sa[mt], r[0], r[1]);
                mma16816(dka[mt][2 * dp + 1], sa[mt], r[2], r[3]);
            }
        }
    }
}

// This warp's dS^T (C fragments: rows its keys, columns the tile's queries),
// rounded to bf16, into the shared tile Ss [keys][BQ + FA_PAD].
template <int MT, int BQ>
__device__ __forceinline__ void ds_store(bf16 *Ss, const float dpt[MT][BQ / 8][4], int wkey) {
    constexpr int LS = BQ + FA_PAD;
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < MT * BQ / 4; i++) {  // (m16 tile, n8 tile, row half): 32-bit stores
        int mt = i / (BQ / 4), nt = (i >> 1) % (BQ / 8), r = i & 1;
        int row = wkey + mt * 16 + r * 8 + (lane >> 2), col = nt * 8 + (lane & 3) * 2;
        *(uint32_t *)(Ss + row * LS + col) = pack_bf16(dpt[mt][nt][2 * r], dpt[mt][nt][2 * r + 1]);
    }
}

// 2 floats added at p (8-byte aligned): one vector reduction on sm_90.
__device__ __forceinline__ void red_add2(float *p, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd((float2 *)p, make_float2(x, y));
#else
    atomicAdd(p, x);
    atomicAdd(p + 1, y);
#endif
}

// dQ of one query tile from the block's BK keys: acc rows i0.. (f32, row
// stride ld) += dS K. dS comes transposed from Ss ([key][query]: ldmatrix
// .trans gives the A fragment; rows of warps that skipped the tile hold
// zeros), K from Ks. Warp w (of NW) takes query m16 tile w % (BQ/16) and DW of
// the D columns. The k loop is unrolled into CS independent accumulator sets, so
// the mma chains overlap (a loop over a runtime key count, with one set, made
// the product cost as much as two of the others). Rows >= T are not written.
template <int D, int BQ, int BK, int NW>
__device__ __forceinline__ void dq_tile(float *acc, int64_t ld, const bf16 *Ss, const bf16 *Ks,
                                        int i0, int T) {
    constexpr int LS = BQ + FA_PAD, LD = D + FA_PAD, MQ = BQ / 16, DW = D * MQ / NW;
    constexpr int CS = DW / 8 >= 8 ? 1 : 2;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int m0 = (warp % MQ) * 16, n0 = (warp / MQ) * DW;
    float c[CS][DW / 8][4];
    zero_c<CS, DW / 8>(c);
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
        uint32_t a[4];
        ldsm_x4_t(a, Ss + (kk * 16 + (lane >> 4) * 8 + (lane & 7)) * LS + m0 +
                         ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int dp = 0; dp < DW / 16; dp++) {
            uint32_t r[4];
            frag_b_kn<LD>(r, Ks, kk * 16, n0 + dp * 16);
            mma16816(c[kk % CS][2 * dp], a, r[0], r[1]);
            mma16816(c[kk % CS][2 * dp + 1], a, r[2], r[3]);
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = i0 + m0 + r * 8 + (lane >> 2);
        if (row >= T) continue;
        float *p = acc + (int64_t)row * ld + n0 + (lane & 3) * 2;
#pragma unroll
        for (int i = 0; i < DW / 8; i++) {
            float x = c[0][i][2 * r], y = c[0][i][2 * r + 1];
            if (CS > 1) x += c[CS - 1][i][2 * r], y += c[CS - 1][i][2 * r + 1];
            red_add2(p + i * 8, x, y);
        }
    }
}

// dQ of iteration j (q head h0 + j/per, query tile qstart + j%per) from its
// dS^T buffer (j & 1).
template <int D, int BQ, int BK, int NW>
__device__ __forceinline__ void dq_step(float *dqa, const bf16 *Ss, const bf16 *Ks, int j,
                                        int qstart, int per, int h0, int b, int T, int H) {
    int i0 = (qstart + j % per) * BQ, h = h0 + j / per;
    dq_tile<D, BQ, BK, NW>(dqa + ((int64_t)b * T * H + h) * D, (int64_t)H * D,
                       Ss + (j & 1) * BK * (BQ + FA_PAD), Ks, i0, T);
}

// Zeros into this warp's rows of a dS^T tile (a warp that skips a tile: its
// keys see none of the tile's queries).
template <int MT, int BQ>
__device__ __forceinline__ void ds_zero(bf16 *Ss, int wkey) {
    constexpr int LS = BQ + FA_PAD, W = BQ / 2;  // 32-bit words a row
    int lane = threadIdx.x & 31;
    for (int i = lane; i < 16 * MT * W; i += 32)
        *(uint32_t *)(Ss + (wkey + i / W) * LS + (i % W) * 2) = 0u;
}

// FUSE (the experiment bwd_dq_fused): the f32 dQ of a query tile goes into dq
// inside this kernel, by the last block to add to it, instead of by a pass over
// the whole buffer afterwards. The blocks that add to tile qt (once per q head)
// are those with first key k0 <= qt*BQ (BK is a multiple of BQ); cnt
// [B,H,ceil(T/BQ)] (zeroed) counts them. Thread 0 calls this after a barrier
// that follows every thread's atomics for iteration j and a fence: the counter's
// old value and the number of adders, so the last block sees x == y - 1.
template <int BQ, int BK>
__device__ __forceinline__ int2 dq_count(int *cnt, int j, int qstart, int per, int h0, int b,
                                         int T, int H) {
    int qt = qstart + j % per, h = h0 + j / per, nqt = (T + BQ - 1) / BQ;
    return make_int2(atomicAdd(cnt + ((int64_t)b * H + h) * nqt + qt, 1), qt * BQ / BK + 1);
}

// FUSE: dq rows of iteration j's tile += scale * their f32 sums, by the whole block
// (read from L2, where the atomics of every block went).
template <int D, int BQ, int NT>
__device__ __forceinline__ void dq_convert(bf16 *dq, const float *dqa, int j, int qstart, int per,
                                           int h0, int b, int T, int H, float scale) {
    constexpr int CH = D / 8;
    int i0 = (qstart + j % per) * BQ, h = h0 + j / per;
    int64_t ld = (int64_t)H * D, base = ((int64_t)b * T * H + h) * D;
    for (int i = threadIdx.x; i < BQ * CH; i += NT) {
        int row = i0 + i / CH;
        if (row >= T) continue;
        int64_t off = base + (int64_t)row * ld + (i % CH) * 8;
        const float4 *a = (const float4 *)(dqa + off);
        dq_add8(dq + off, __ldcg(a), __ldcg(a + 1), scale);
    }
}

// FUSE, after the loop: count the last two iterations' tiles, then convert what
// this block was last for: those two and the one flagged in lastf[(n_it-1) & 1].
template <int D, int BQ, int BK, int NT>
__device__ __forceinline__ void dq_drain(bf16 *dq, const float *dqa, int *cnt, int *lastf,
                                         int n_it, int qstart, int per, int h0, int b, int T,
                                         int H, float scale) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int2 c = make_int2(0, 2);
        if (n_it >= 2) c = dq_count<BQ, BK>(cnt, n_it - 2, qstart, per, h0, b, T, H);
        lastf[2] = c.x == c.y - 1;
        c = dq_count<BQ, BK>(cnt, n_it - 1, qstart, per, h0, b, T, H);
        lastf[3] = c.x == c.y - 1;
        __threadfence();  // the counts read before the sums converted
    }
    __syncthreads();
    for (int d = 3; d >= 1; d--) {
        bool last = d == 3 ? n_it >= 3 && lastf[(n_it - 1) & 1] : lastf[4 - d];
        if (last) dq_convert<D, BQ, NT>(dq, dqa, n_it - d, qstart, per, h0, b, T, H, scale);
    }
}

// ACC: also dQ into the f32 buffer dqa (q's layout), through two shared dS^T
// tiles: iteration it stores its dS^T, iteration it+1 (after the barrier it
// needs anyway) adds dS K, so the 5th product costs no extra barrier. NW warps
// (4 or 8) of 16*MT keys each. FUSE (ACC only): dq += scale * dQ here, in a
// pipeline along the barriers: iteration j's atomics (made in it = j+1) are
// fenced before the barrier that ends it = j+1, thread 0 counts them at the top
// of j+2 (the atomic's result waited for only at the end of j+2), flags
// lastf[(j+2) & 1], and it = j+3 converts the tile if this block was last.
template <int D, int MT, int BQ, bool ACC, int NW, bool FUSE>
__global__ void __launch_bounds__(NW * 32)
    flash_dkdv_kernel(bf16 *dk, bf16 *dv, float *dqa, bf16 *dq, int *cnt, const bf16 *dout,
                      const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                      const float *delta, int T, int H, int Hk, float scale, float sl2) {
    constexpr int LD = D + FA_PAD, BK = 16 * MT * NW, NT = NW * 32;
    extern __shared__ __align__(16) unsigned char fb_smem[];
    bf16 *Ks = (bf16 *)fb_smem, *Vs = Ks + BK * LD, *Qs = Vs + BK * LD;
    bf16 *Os = Qs + 2 * BQ * LD;  // dO tiles
    float *Ls = (float *)(Os + 2 * BQ * LD), *Ds = Ls + 2 * BQ;
    bf16 *Ss = (bf16 *)(Ds + 2 * BQ);  // 2 x dS^T [BK][BQ + FA_PAD] (ACC only)
    int kt = blockIdx.x, g = blockIdx.y, b = blockIdx.z, rep = H / Hk;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k0 = kt * BK;
    int64_t kld = (int64_t)Hk * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int qstart = k0 / BQ, nqt = (T + BQ - 1) / BQ, per = nqt - qstart, n_it = rep * per;
    tile_load<BK, D, NT>(Ks, kb, kld, k0, T);
    tile_load<BK, D, NT>(Vs, vb, kld, k0, T);
    fb_stage<D, BQ, NT>(Qs, Os, Ls, Ds, q, dout, lse, delta, b, g * rep, per, qstart, 0, 0, T, H);
    cp_async_commit();
    float dka[MT][D / 8][4], dva[MT][D / 8][4];
    zero_c<MT, D / 8>(dka);
    zero_c<MT, D / 8>(dva);
    int wkey = warp * 16 * MT, w0 = k0 + wkey;  // this warp's first key
    int krow = w0 + (lane >> 2);                // this thread's keys: krow + 16 mt + 8 r
    __shared__ int lastf[4];                    // FUSE: this block converts a tile
    int2 pend = make_int2(0, 1);                // FUSE, thread 0: the count in flight
    for (int it = 0; it < n_it; it++) {
        if constexpr (FUSE)
            if (it >= 2 && threadIdx.x == 0)
                pend = dq_count<BQ, BK>(cnt, it - 2, qstart, per, g * rep, b, T, H);
        if (it + 1 < n_it) {
            fb_stage<D, BQ, NT>(Qs, Os, Ls, Ds, q, dout, lse, delta, b, g * rep, per, qstart,
                                it + 1, (it + 1) & 1, T, H);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        int buf = it & 1, i0 = (qstart + it % per) * BQ;
        // the previous iteration's dQ, one barrier after its dS^T was stored
        if constexpr (ACC)
            if (it > 0) dq_step<D, BQ, BK, NW>(dqa, Ss, Ks, it - 1, qstart, per, g * rep, b, T, H);
        if constexpr (FUSE)
            if (it >= 3 && lastf[(it - 1) & 1])
                dq_convert<D, BQ, NT>(dq, dqa, it - 3, qstart, per, g * rep, b, T, H, scale);
        if (i0 + BQ - 1 >= w0) {  // some query of the tile sees some key of this warp
            const bf16 *Qc = Qs + buf * BQ * LD, *Oc = Os + buf * BQ * LD;
            float st[MT][BQ / 8][4], dpt[MT][BQ / 8][4];
            bwd_two_nt<D, MT, BQ>(st, dpt, Ks, Vs, Qc, Oc, wkey);
            if (i0 < w0 + 16 * MT - 1)
                kv_pds<MT, BQ, true>(st, dpt, Ls + buf * BQ, Ds + buf * BQ, krow, i0, sl2);
            else
                kv_pds<MT, BQ, false>(st, dpt, Ls + buf * BQ, Ds + buf * BQ, krow, i0, sl2);
            if constexpr (ACC) ds_store<MT, BQ>(Ss + buf * BK * (BQ + FA_PAD), dpt, wkey);
            kv_acc<D, MT, BQ>(dva, dka, st, dpt, Qc, Oc);
        } else if constexpr (ACC) {
            ds_zero<MT, BQ>(Ss + buf * BK * (BQ + FA_PAD), wkey);
        }
        if constexpr (FUSE) {
            if (it >= 2 && threadIdx.x == 0) lastf[it & 1] = pend.x == pend.y - 1;
            // this thread's atomics of iteration it-1 before their count (and, for
            // thread 0, the count it read before the sums it may convert)
            if (it > 0) __threadfence();
        }
        __syncthreads();  // the next prefetch overwrites this buffer
    }
    if constexpr (ACC) dq_step<D, BQ, BK, NW>(dqa, Ss, Ks, n_it - 1, qstart, per, g * rep, b, T, H);
    if constexpr (FUSE)
        dq_drain<D, BQ, BK, NT>(dq, dqa, cnt, lastf, n_it, qstart, per, g * rep, b, T, H, scale);
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        add_rows<D / 8>(dk + ((int64_t)b * T * Hk + g) * D, kld, krow + mt * 16, T, dka[mt],
                        scale);
        add_rows<D / 8>(dv + ((int64_t)b * T * Hk + g) * D, kld, krow + mt * 16, T, dva[mt],
                        1.0f);
    }
}

// Dynamic shared memory of one dK/dV block: K, V, two Q and two dO tiles, lse
// and Delta, and (ACC) two dS^T tiles.
template <int D, int MT, int BQ, bool ACC, int NW> static size_t dkdv_smem() {
    constexpr int LD = D + FA_PAD, BK = 16 * MT * NW;
    size_t smem = (size_t)(2 * BK + 4 * BQ) * LD * sizeof(bf16) + 4 * BQ * sizeof(float);
    if (ACC) smem += (size_t)2 * BK * (BQ + FA_PAD) * sizeof(bf16);
    return smem;
}

template <int D, int MT, int BQ, bool ACC, int NW, bool FUSE>
static cudaError_t flash_dkdv_launch(bf16 *dk, bf16 *dv, float *dqa, bf16 *dq, int *cnt,
                                     const bf16 *dout, const bf16 *q, const bf16 *k,
                                     const bf16 *v, const float *lse, const float *delta,
                                     const chm_cu_attn *a, cudaStream_t s) {
    constexpr int BK = 16 * MT * NW;
    size_t smem = dkdv_smem<D, MT, BQ, ACC, NW>();
    static bool set = false;
    cudaError_t e = fb_smem_optin(flash_dkdv_kernel<D, MT, BQ, ACC, NW, FUSE>, smem, &set);
    if (e != cudaSuccess) return e;
    unsigned tiles = (unsigned)((a->T + BK - 1) / BK);
    flash_dkdv_kernel<D, MT, BQ, ACC, NW, FUSE><<<dim3(tiles, (unsigned)a->Hk, (unsigned)a->B),
                                                  NW * 32, smem, s>>>(
        dk, dv, dqa, dq, cnt, dout, q, k, v, lse, delta, (int)a->T, (int)a->H, (int)a->Hk,
        a->scale, a->scale * FA_LOG2E);
    return cudaGetLastError();
}

// The dK/dV kernel's shape: 0 the default (4 warps; D 64: 2 m16 key tiles a
// warp, D 128: one), 1 8 warps of one m16 key tile (128 keys a block) with
// 32-query tiles (bwd_w8, bwd_w8_atomic; bwd_dq_fused at D 128), 2 the same
// with 64-query tiles (bwd_w8_q64, atomic dQ only). Each experiment only where
// the device grants its shared memory (D 128, 32 queries: 123 KB; 64 queries:
// 173 KB, D 64: 109 KB); elsewhere the default.
static int dkdv_plan(const chm_cu_attn *a) {
    int e = a->exp;
    if (e == CHM_CU_ATTN_BWD_W8_Q64) {
        size_t need = a->D == 64 ? dkdv_smem<64, 1, 64, true, 8>()
                                 : dkdv_smem<128, 1, 64, true, 8>();
        return fa_smem_max() >= need ? 2 : 0;
    }
    bool w8 = e == CHM_CU_ATTN_BWD_W8 || e == CHM_CU_ATTN_BWD_W8_ATOMIC;
    if (!w8 && !(e == CHM_CU_ATTN_BWD_DQ_FUSED && a->D == 128)) return 0;
    return a->D == 64 || fa_smem_max() >= dkdv_smem<128, 1, 32, true, 8>() ? 1 : 0;
}

// Key m16 tiles per warp and queries per tile (32 where FUSE: dq_count's
// counters assume it): the accumulators (dK, dV, S^T, dP^T) must fit the
// registers without spilling, so D 128 keeps one m16 tile. dqa non-null
// (chm_cu_flash_dq_atomic): dQ goes into it too (the 5-product path); cnt
// non-null: bwd_dq_fused.
static cudaError_t flash_dkdv(bf16 *dk, bf16 *dv, float *dqa, bf16 *dq, int *cnt,
                              const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                              const float *lse, const float *delta, const chm_cu_attn *a,
                              cudaStream_t s) {
#define FB_DKDV(D, MT, BQ, ACC, NW, FUSE)                                                      \
    flash_dkdv_launch<D, MT, BQ, ACC, NW, FUSE>(dk, dv, dqa, dq, cnt, dout, q, k, v, lse, delta, \
                                                a, s)
    int plan = dkdv_plan(a);
    bool fuse = dqa && cnt;
    if (plan == 2 && !dqa) plan = 1;  // (CHIMERA_DETERMINISTIC) 64-query tiles: atomic dQ only
    if (a->D == 64) {
        if (fuse) return FB_DKDV(64, 2, 32, true, 4, true);
        if (plan == 2) return FB_DKDV(64, 1, 64, true, 8, false);
        if (plan == 1)
            return dqa ? FB_DKDV(64, 1, 32, true, 8, false) : FB_DKDV(64, 1, 32, false, 8, false);
        return dqa ? FB_DKDV(64, 2, 32, true, 4, false) : FB_DKDV(64, 2, 32, false, 4, false);
    }
    if (a->D != 128) return cudaErrorInvalidValue;
    if (plan == 2) return FB_DKDV(128, 1, 64, true, 8, false);
    if (plan == 1 && fuse) return FB_DKDV(128, 1, 32, true, 8, true);
    if (plan == 1)
        return dqa ? FB_DKDV(128, 1, 32, true, 8, false) : FB_DKDV(128, 1, 32, false, 8, false);
    return FB_DKDV(128, 1, 32, false, 4, false);
#undef FB_DKDV
}

// H100, B8 T2048 / B2 T8192, backward alone: the atomic path takes D 64 from
// 1.043 / 3.585 ms to 0.999 / 3.302 ms, but slows D 128 (one m16 key tile a
// warp: 64 keys a block, twice the atomics a key) to 1.296 / 4.572 ms from
// 1.118 / 3.804 ms; so D 128 keeps the dQ kernel (the experiments
// bwd_w8_atomic, bwd_dq_fused and bwd_w8_q64 try it with 128 keys a block).
extern "C" bool chm_cu_flash_dq_atomic(const chm_cu_attn *a) {
    if (a->D != 128) return a->D == 64;
    bool exp = a->exp == CHM_CU_ATTN_BWD_W8_ATOMIC || a->exp == CHM_CU_ATTN_BWD_DQ_FUSED ||
               a->exp == CHM_CU_ATTN_BWD_W8_Q64;
    return exp && dkdv_plan(a) != 0;
}

// f32 elements of dq_acc: dQ, then (bwd_dq_fused) the int counters of dq_count.
extern "C" int64_t chm_cu_flash_dq_scratch(const chm_cu_attn *a) {
    if (!chm_cu_flash_dq_atomic(a)) return 0;
    int64_t n = a->B * a->T * a->H * a->D;
    if (a->exp == CHM_CU_ATTN_BWD_DQ_FUSED) n += a->B * a->H * ((a->T + 31) / 32);
    return n;
}

extern "C" cudaError_t chm_cu_flash_bwd(void *dq, void *dk, void *dv, const void *dout,
                                        const void *q, const void *k, const void *v,
                                        const float *lse, const float *delta, float *dq_acc,
                                        const chm_cu_attn *a, cudaStream_t s) {
    if (a->B * a->T * a->H <= 0) return cudaSuccess;
    const bf16 *o = (const bf16 *)dout, *qq = (const bf16 *)q, *kk = (const bf16 *)k,
               *vv = (const bf16 *)v;
    int64_t n = a->B * a->T * a->H * a->D;
    if (!chm_cu_flash_dq_atomic(a)) dq_acc = NULL;
    int *cnt = dq_acc && a->exp == CHM_CU_ATTN_BWD_DQ_FUSED ? (int *)(dq_acc + n) : NULL;
    cudaError_t e = cudaSuccess;
    if (dq_acc)
        e = cudaMemsetAsync(dq_acc, 0, (size_t)chm_cu_flash_dq_scratch(a) * sizeof(float), s);
    if (e == cudaSuccess)
        e = flash_dkdv((bf16 *)dk, (bf16 *)dv, dq_acc, (bf16 *)dq, cnt, o, qq, kk, vv, lse, delta,
                       a, s);
    if (e != cudaSuccess || cnt) return e;
    if (dq_acc) return chm_cu_flash_dq_add((bf16 *)dq, dq_acc, n, a->scale, s);
    return chm_cu_flash_dq((bf16 *)dq, o, qq, kk, vv, lse, delta, a, s);
}
