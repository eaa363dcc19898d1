// attention_flash_bwd.cu: flash-attention backward on bf16 tensor cores
// (sm_80+), head dim 64 or 128, causal, grouped-query, deterministic: the
// dK/dV kernel here and the entry point that runs it and the dQ kernel
// (attention_flash_dq.cu).
//
// Two kernels instead of one with float atomics on dq (FlashAttention-2's
// choice): every gradient element has exactly one writer, so results do not
// depend on scheduling. The price is recomputing S and dP in both kernels.
//  dkdv: one block per (64*MT keys, kv head, batch); each warp owns 16*MT keys
//        (MT m16 tiles: every Q/dO fragment read from shared memory feeds 2*MT
//        mma) and walks, for every q head of the group, the query tiles at or
//        after its keys: S^T = K Q^T, P^T = exp2(S^T*scale*log2e - lse),
//        dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - Delta), dK += dS^T Q.
//        The causal mask runs only on tiles that cross the diagonal; a warp
//        skips the tiles wholly before its keys.
// Q/dO tiles stream through NS shared buffers by cp.async, the next tile
// loading while this one computes. NS 2 needs a barrier after each tile (the
// next prefetch overwrites the buffer just read); with NS 3 the buffer written
// at iteration it was last read at it-2, which every warp finished before it
// passed iteration it-1's barrier, so one barrier an iteration suffices (D 128:
// 2-5% faster on an H100; D 64 no faster). lse and Delta are f32 [B,H,T].
// dq, dk, dv ACCUMULATE (bf16 read-modify-write).
#include "attention_flash_bwd.cuh"

// dkdv: stage the query tile at row i0 of q head h into buffer buf, all by
// cp.async: Q and dO rows, lse and Delta (a plain load would stall its warp,
// and at the barrier the block, for a global-memory latency every iteration).
// Rows >= T read as zeros: their Q and dO are zero, so they add nothing to dK
// and dV whatever P is.
template <int D, int BQ>
__device__ __forceinline__ void fb_stage(bf16 *Qs, bf16 *Os, float *Ls, float *Ds, const bf16 *q,
                                         const bf16 *dout, const float *lse, const float *delta,
                                         int b, int h, int i0, int buf, int T, int H) {
    constexpr int LD = D + FA_PAD;
    static_assert(BQ <= FB_THREADS, "fb_stage: one row statistic per thread");
    int64_t base = ((int64_t)b * T * H + h) * D, qld = (int64_t)H * D;
    tile_load<BQ, D, FB_THREADS>(Qs + buf * BQ * LD, q + base, qld, i0, T);
    tile_load<BQ, D, FB_THREADS>(Os + buf * BQ * LD, dout + base, qld, i0, T);
    if (threadIdx.x < BQ) {
        int row = i0 + threadIdx.x;
        bool ok = row < T;
        int64_t st = ((int64_t)b * H + h) * T + (ok ? row : 0);
        cp_async4(Ls + buf * BQ + threadIdx.x, lse + st, ok);
        cp_async4(Ds + buf * BQ + threadIdx.x, delta + st, ok);
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

// Launch bounds with an explicit minimum of one block an SM: this is the
// build that was checked and timed on the H100 (ptxas schedules the bare
// bound differently).
template <int D, int MT, int BQ, int NS>
__global__ void __launch_bounds__(FB_THREADS, 1)
    flash_dkdv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                      const bf16 *v, const float *lse, const float *delta, int T, int H, int Hk,
                      float scale, float sl2) {
    constexpr int LD = D + FA_PAD, BK = 64 * MT;
    extern __shared__ __align__(16) unsigned char fb_smem[];
    bf16 *Ks = (bf16 *)fb_smem, *Vs = Ks + BK * LD, *Qs = Vs + BK * LD;
    bf16 *Os = Qs + NS * BQ * LD;  // dO tiles
    float *Ls = (float *)(Os + NS * BQ * LD), *Ds = Ls + NS * BQ;
    int kt = blockIdx.x, g = blockIdx.y, b = blockIdx.z, rep = H / Hk;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k0 = kt * BK;
    int64_t kld = (int64_t)Hk * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int qstart = k0 / BQ, nqt = (T + BQ - 1) / BQ, n_it = rep * (nqt - qstart);
    tile_load<BK, D, FB_THREADS>(Ks, kb, kld, k0, T);
    tile_load<BK, D, FB_THREADS>(Vs, vb, kld, k0, T);
    fb_stage<D, BQ>(Qs, Os, Ls, Ds, q, dout, lse, delta, b, g * rep, qstart * BQ, 0, T, H);
    cp_async_commit();
    float dka[MT][D / 8][4], dva[MT][D / 8][4];
    zero_c<MT, D / 8>(dka);
    zero_c<MT, D / 8>(dva);
    int wkey = warp * 16 * MT, w0 = k0 + wkey;  // this warp's first key
    int krow = w0 + (lane >> 2);                // this thread's keys: krow + 16 mt + 8 r
    // iteration it: q head g*rep + hc, query tile qc (the tiles from qstart, head after head)
    int hc = 0, qc = qstart;
    for (int it = 0, cb = 0; it < n_it; it++) {
        int nb = next_buf<NS>(cb);
        int hn = hc, qn = qc + 1;  // the next iteration's
        if (qn == nqt) qn = qstart, hn++;
        if (it + 1 < n_it) {
            fb_stage<D, BQ>(Qs, Os, Ls, Ds, q, dout, lse, delta, b, g * rep + hn, qn * BQ, nb,
                            T, H);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        int buf = cb, i0 = qc * BQ;
        hc = hn, qc = qn;
        if (i0 + BQ - 1 >= w0) {  // some query of the tile sees some key of this warp
            const bf16 *Qc = Qs + buf * BQ * LD, *Oc = Os + buf * BQ * LD;
            float st[MT][BQ / 8][4], dpt[MT][BQ / 8][4];
            bwd_two_nt<D, MT, BQ>(st, dpt, Ks, Vs, Qc, Oc, wkey);
            if (i0 < w0 + 16 * MT - 1)
                kv_pds<MT, BQ, true>(st, dpt, Ls + buf * BQ, Ds + buf * BQ, krow, i0, sl2);
            else
                kv_pds<MT, BQ, false>(st, dpt, Ls + buf * BQ, Ds + buf * BQ, krow, i0, sl2);
            kv_acc<D, MT, BQ>(dva, dka, st, dpt, Qc, Oc);
        }
        if (NS == 2) __syncthreads();  // the next prefetch overwrites this buffer
        cb = nb;
    }
    bf16 *dkb = dk + ((int64_t)b * T * Hk + g) * D, *dvb = dv + ((int64_t)b * T * Hk + g) * D;
    uint32_t odk[2 * MT][D / 8], odv[2 * MT][D / 8];
    load_rows<MT, D / 8>(odk, dkb, kld, krow, T);
    load_rows<MT, D / 8>(odv, dvb, kld, krow, T);
    store_rows<MT, D / 8>(dkb, kld, krow, T, odk, dka, scale);
    store_rows<MT, D / 8>(dvb, kld, krow, T, odv, dva, 1.0f);
}

template <int D, int MT, int BQ, int NS>
static cudaError_t flash_dkdv_launch(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                                     const bf16 *k, const bf16 *v, const float *lse,
                                     const float *delta, const chm_cu_attn *a, cudaStream_t s) {
    constexpr int LD = D + FA_PAD, BK = 64 * MT;
    size_t smem =
        (size_t)(2 * BK + 2 * NS * BQ) * LD * sizeof(bf16) + 2 * NS * BQ * sizeof(float);
    static bool set = false;
    cudaError_t e = fb_smem_optin(flash_dkdv_kernel<D, MT, BQ, NS>, smem, &set);
    if (e != cudaSuccess) return e;
    unsigned tiles = (unsigned)((a->T + BK - 1) / BK);
    flash_dkdv_kernel<D, MT, BQ, NS><<<dim3(tiles, (unsigned)a->Hk, (unsigned)a->B),
                                       FB_THREADS, smem, s>>>(
        dk, dv, dout, q, k, v, lse, delta, (int)a->T, (int)a->H, (int)a->Hk, a->scale,
        a->scale * FA_LOG2E);
    return cudaGetLastError();
}

// Key m16 tiles per warp and queries per tile: the accumulators (dK, dV, S^T,
// dP^T) must fit the registers without spilling, so D 128 keeps one m16 tile.
// Measured no faster on an H100: D 64 with one m16 tile and 64-query tiles
// (168 registers, 3 blocks an SM: 3% slower), D 128 with 64-query tiles.
static cudaError_t flash_dkdv(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                              const bf16 *k, const bf16 *v, const float *lse, const float *delta,
                              const chm_cu_attn *a, cudaStream_t s) {
    if (a->D == 64)
        return flash_dkdv_launch<64, 2, 32, 2>(dk, dv, dout, q, k, v, lse, delta, a, s);
    if (a->D == 128)
        return flash_dkdv_launch<128, 1, 32, 3>(dk, dv, dout, q, k, v, lse, delta, a, s);
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t chm_cu_flash_bwd(void *dq, void *dk, void *dv, const void *dout,
                                        const void *q, const void *k, const void *v,
                                        const float *lse, const float *delta,
                                        const chm_cu_attn *a, cudaStream_t s) {
    if (a->B * a->T * a->H <= 0) return cudaSuccess;
    const bf16 *o = (const bf16 *)dout, *qq = (const bf16 *)q, *kk = (const bf16 *)k,
               *vv = (const bf16 *)v;
    cudaError_t e = flash_dkdv((bf16 *)dk, (bf16 *)dv, o, qq, kk, vv, lse, delta, a, s);
    if (e != cudaSuccess) return e;
    return chm_cu_flash_dq((bf16 *)dq, o, qq, kk, vv, lse, delta, a, s);
}
