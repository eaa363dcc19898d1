// attention_flash_bwd.cu: flash-attention backward on bf16 tensor cores
// (sm_80+), head dim 64 or 128, causal, grouped-query, deterministic: the
// dK/dV kernels here and the entry point that runs one of them and the dQ
// kernel (attention_flash_dq.cu).
//
// Two kernels instead of one with float atomics on dq (FlashAttention-2's
// choice): every gradient element has exactly one writer, so results do not
// depend on scheduling. The price is recomputing S and dP in both kernels.
//  dkdv (D 64): one block per (64*MT keys, kv head, batch); each warp owns
//        16*MT keys (MT m16 tiles: every Q/dO fragment read from shared memory
//        feeds 2*MT mma) and walks, for every q head of the group, the query
//        tiles at or after its keys: S^T = K Q^T, P^T = exp2(S^T*scale*log2e -
//        lse), dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - Delta),
//        dK += dS^T Q. The causal mask runs only on tiles that cross the
//        diagonal; a warp skips the tiles wholly before its keys.
//  dkdv_pairs (D 128): the same walk with the work of a key tile split
//        between the two warps of a pair (see the kernel).
// Q/dO tiles stream through NS shared buffers by cp.async, the next tile
// loading while this one computes. NS 2 needs a barrier after each tile (the
// next prefetch overwrites the buffer just read); with NS 3 the buffer written
// at iteration it was last read at it-2, which every warp finished before it
// passed iteration it-1's barrier, so one barrier an iteration suffices (D 128:
// 2-5% faster on an H100; D 64 no faster). The D 128 kernel takes NS 4 where
// the shared memory allows (111 KiB a block; NS 3 elsewhere): as fast, and
// compute-sanitizer's racecheck, which reported WAR hazards whenever a single
// barrier separates a buffer's last ldmatrix reads from the cp.async that
// refills it (even for NS 2 with a barrier after every tile), is then clean
// (RESULTS.md, session 8 run 2). lse and Delta are f32 [B,H,T].
// Blocks launch key tile 0 first across all heads (mma.cuh: fa_grid).
// dq, dk, dv ACCUMULATE (bf16 read-modify-write). At D 64 and 128 on compute
// capability 9.0 both kernels have wgmma versions (attention_flash_*_sm90.cu,
// where CMake builds them): on an H100 the D 128 backward took 0.587 ms
// against 0.793 at B8 T2048 H8 and 1.874 against 2.769 at B2 T8192.
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

// The dK/dV kernels' walk over query tiles: iteration it takes q head h0 + hc
// and query tile qc (the tiles from qstart, head after head), staged by
// fb_stage into NS shared buffers.
struct fb_walk {
    bf16 *Qs, *Os;
    float *Ls, *Ds;
    const bf16 *q, *dout;
    const float *lse, *delta;
    int b, h0, T, H, qstart, nqt;
    int qc, hc;
};

// The start of a dK/dV kernel: the K and V rows of its key tile (rows from k0
// of kb, vb) into Ks and Vs and the walk's first query tile into buffer 0,
// all queued by cp.async.
template <int D, int BK, int BQ>
__device__ __forceinline__ void fb_begin(const fb_walk &w, bf16 *Ks, bf16 *Vs, const bf16 *kb,
                                         const bf16 *vb, int64_t kld, int k0) {
    tile_load<BK, D, FB_THREADS>(Ks, kb, kld, k0, w.T);
    tile_load<BK, D, FB_THREADS>(Vs, vb, kld, k0, w.T);
    fb_stage<D, BQ>(w.Qs, w.Os, w.Ls, w.Ds, w.q, w.dout, w.lse, w.delta, w.b, w.h0,
                    w.qstart * BQ, 0, w.T, w.H);
    cp_async_commit();
}

// Queue the next iteration's tile into buffer nb (when there is one: more),
// wait for this iteration's and pass the block barrier; returns this
// iteration's first query row and moves w on to the next iteration.
template <int D, int BQ>
__device__ __forceinline__ int fb_next(fb_walk &w, bool more, int nb) {
    int hn = w.hc, qn = w.qc + 1;
    if (qn == w.nqt) qn = w.qstart, hn++;
    if (more) {
        fb_stage<D, BQ>(w.Qs, w.Os, w.Ls, w.Ds, w.q, w.dout, w.lse, w.delta, w.b, w.h0 + hn,
                        qn * BQ, nb, w.T, w.H);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
    int i0 = w.qc * BQ;
    w.hc = hn, w.qc = qn;
    return i0;
}

// In place: st (S^T, MT x BQ/8 tiles; row = key, column = query) becomes P^T
// and, with DS, dpt (dP^T) dS^T = P^T (dP^T - Delta); Lc and Dc hold lse
// (natural log) and Delta of the tile's queries. MASK zeroes P of queries
// before the key.
template <int MT, int BQ, bool MASK, bool DS>
__device__ __forceinline__ void kv_pds(float st[MT][BQ / 8][4], float dpt[MT][BQ / 8][4],
                                       const float *Lc, const float *Dc, int krow, int i0,
                                       float sl2) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int nt = 0; nt < BQ / 8; nt++) {
        int qc = nt * 8 + (lane & 3) * 2;
        float2 lq = *(const float2 *)(Lc + qc);
        float2 dq = DS ? *(const float2 *)(Dc + qc) : make_float2(0.0f, 0.0f);
        lq.x *= FA_LOG2E;  // natural log -> log2 units
        lq.y *= FA_LOG2E;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = fast_exp2(fmaf(st[mt][nt][e], sl2, -((e & 1) ? lq.y : lq.x)));
                if (MASK && i0 + qc + (e & 1) < krow + mt * 16 + (e >> 1) * 8) p = 0.0f;
                st[mt][nt][e] = p;
                if (DS) dpt[mt][nt][e] = p * (dpt[mt][nt][e] - ((e & 1) ? dq.y : dq.x));
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
// bound differently). The same for the split-role kernel below.
template <int D, int MT, int BQ, int NS>
__global__ void __launch_bounds__(FB_THREADS, 1)
    flash_dkdv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                      const bf16 *v, const float *lse, const float *delta, int T, int H, int Hk,
                      float scale, float sl2) {
    chm_pdl_enter();
    constexpr int LD = D + FA_PAD, BK = 64 * MT;
    extern __shared__ __align__(16) unsigned char fb_smem[];
    bf16 *Ks = (bf16 *)fb_smem, *Vs = Ks + BK * LD, *Qs = Vs + BK * LD;
    bf16 *Os = Qs + NS * BQ * LD;  // dO tiles
    float *Ls = (float *)(Os + NS * BQ * LD), *Ds = Ls + NS * BQ;
    int kt, g, b, rep = H / Hk;
    fa_block(&kt, &g, &b);  // key tile 0 first: it sees the most queries
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k0 = kt * BK;
    int64_t kld = (int64_t)Hk * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int qstart = k0 / BQ, nqt = (T + BQ - 1) / BQ, n_it = rep * (nqt - qstart);
    fb_walk w = {Qs, Os, Ls, Ds, q, dout, lse, delta, b, g * rep, T, H, qstart, nqt, qstart, 0};
    fb_begin<D, BK, BQ>(w, Ks, Vs, kb, vb, kld, k0);
    float dka[MT][D / 8][4], dva[MT][D / 8][4];
    zero_c<MT, D / 8>(dka);
    zero_c<MT, D / 8>(dva);
    int wkey = warp * 16 * MT, w0 = k0 + wkey;  // this warp's first key
    int krow = w0 + (lane >> 2);                // this thread's keys: krow + 16 mt + 8 r
    for (int it = 0, cb = 0; it < n_it; it++) {
        int nb = next_buf<NS>(cb), buf = cb;
        int i0 = fb_next<D, BQ>(w, it + 1 < n_it, nb);
        if (i0 + BQ - 1 >= w0) {  // some query of the tile sees some key of this warp
            const bf16 *Qc = Qs + buf * BQ * LD, *Oc = Os + buf * BQ * LD;
            float st[MT][BQ / 8][4], dpt[MT][BQ / 8][4];
            bwd_two_nt<D, MT, BQ>(st, dpt, Ks, Vs, Qc, Oc, wkey);
            if (i0 < w0 + 16 * MT - 1)
                kv_pds<MT, BQ, true, true>(st, dpt, Ls + buf * BQ, Ds + buf * BQ, krow, i0, sl2);
            else
                kv_pds<MT, BQ, false, true>(st, dpt, Ls + buf * BQ, Ds + buf * BQ, krow, i0, sl2);
            kv_acc<D, MT, BQ>(dva, dka, st, dpt, Qc, Oc);
        }
        if (NS == 2) __syncthreads();  // the next prefetch overwrites this buffer
        cb = nb;
    }
    // The epilogue through shared memory (the K/V tiles take the old dK/dV
    // rows): with the dQ kernel's alike, the D 64 backward ran 4-6% faster on
    // an H100 than with the old rows loaded into registers.
    bf16 *dkb = dk + ((int64_t)b * T * Hk + g) * D, *dvb = dv + ((int64_t)b * T * Hk + g) * D;
    __syncthreads();
    tile_load<BK, D, FB_THREADS>(Ks, dkb, kld, k0, T);
    tile_load<BK, D, FB_THREADS>(Vs, dvb, kld, k0, T);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    epi_add<MT, D>(Ks, wkey, dka, scale);
    epi_add<MT, D>(Vs, wkey, dva, 1.0f);
    __syncthreads();
    tile_store<BK, D, FB_THREADS>(dkb, kld, Ks, k0, T);
    tile_store<BK, D, FB_THREADS>(dvb, kld, Vs, k0, T);
}

// Launch dK/dV kernel `kernel` (flash_dkdv_kernel's parameters) over key
// tiles of bk rows with smem bytes of dynamic shared memory (*set: opted in).
template <typename K>
static cudaError_t dkdv_run(K kernel, bool *set, size_t smem, int bk, bf16 *dk, bf16 *dv,
                            const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                            const float *lse, const float *delta, const chm_cu_attn *a,
                            cudaStream_t s) {
    cudaError_t e = fb_smem_optin(kernel, smem, set);
    if (e != cudaSuccess) return e;
    unsigned tiles = (unsigned)((a->T + bk - 1) / bk);
    chm_launch(kernel, fa_grid(tiles, (unsigned)a->Hk, (unsigned)a->B), FB_THREADS, smem, s, dk, dv,
               dout, q, k, v, lse, delta, (int)a->T, (int)a->H, (int)a->Hk, a->scale,
               a->scale * FA_LOG2E);
    return cudaGetLastError();
}

template <int D, int MT, int BQ, int NS>
static cudaError_t flash_dkdv_launch(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                                     const bf16 *k, const bf16 *v, const float *lse,
                                     const float *delta, const chm_cu_attn *a, cudaStream_t s) {
    constexpr int LD = D + FA_PAD, BK = 64 * MT;
    size_t smem =
        (size_t)(2 * BK + 2 * NS * BQ) * LD * sizeof(bf16) + 2 * NS * BQ * sizeof(float);
    static bool set = false;
    return dkdv_run(flash_dkdv_kernel<D, MT, BQ, NS>, &set, smem, BK, dk, dv, dout, q, k, v, lse,
                    delta, a, s);
}

// ---- the split-role dK/dV kernel ----
// Warps in pairs: both warps of a pair own the same 16*MT keys; warp 0 of the
// pair computes S^T = K Q^T, P^T and dV += P^T dO, warp 1 dP^T = V dO^T,
// dS^T = P^T (dP^T - Delta) and dK += dS^T Q, taking P^T from its partner
// through shared memory (f32, fragment order: conflict-free 16-byte rows).
// Each warp thus holds one accumulator of 16*MT keys x D and every Q/dO
// fragment read from shared memory feeds 2*MT mma, where one warp holding
// both dK and dV is limited to half the keys (D 128: 16; ncu on an H100:
// 80 ldmatrix per 128 mma, short-scoreboard stalls 19%).
// The warps write back through shared memory without a block barrier
// (attention_flash_bwd.cuh: epi_warp; only the role-0 warp reads its K rows
// and the role-1 warp its V rows). The old epilogue in registers (load_rows/
// store_rows) spilled 76 bytes at D 128 (ptxas: 255 registers; 240 now);
// on an H100 the backward ran 0.816-0.822 ms against 0.833-0.840 at B8
// T2048 H8 and the same (2.80 ms) at B2 T8192. The block-wide shared-memory
// epilogue was slower (2.95 vs 2.79 ms at T8192, session 6).

// dpt (dP^T) becomes dS^T = P^T (dP^T - Delta), P^T from the partner's tiles at pp.
template <int MT, int BQ>
__device__ __forceinline__ void kv_ds(float dpt[MT][BQ / 8][4], const float4 *pp,
                                      const float *Dc) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int nt = 0; nt < BQ / 8; nt++) {
        float2 dq = *(const float2 *)(Dc + nt * 8 + (lane & 3) * 2);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float4 p = pp[(mt * (BQ / 8) + nt) * 32];
            dpt[mt][nt][0] = p.x * (dpt[mt][nt][0] - dq.x);
            dpt[mt][nt][1] = p.y * (dpt[mt][nt][1] - dq.y);
            dpt[mt][nt][2] = p.z * (dpt[mt][nt][2] - dq.x);
            dpt[mt][nt][3] = p.w * (dpt[mt][nt][3] - dq.y);
        }
    }
}

// Warp 0 of a pair: P^T from st, published to pp for the partner (pair barrier `bar`).
template <int MT, int BQ>
__device__ __forceinline__ void kv_publish(float st[MT][BQ / 8][4], float4 *pp, const float *Lc,
                                           int krow, int i0, int w0, float sl2, int bar) {
    if (i0 < w0 + 16 * MT - 1)
        kv_pds<MT, BQ, true, false>(st, st, Lc, Lc, krow, i0, sl2);  // (no dS: st, Lc unused)
    else
        kv_pds<MT, BQ, false, false>(st, st, Lc, Lc, krow, i0, sl2);
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < BQ / 8; nt++)
            pp[(mt * (BQ / 8) + nt) * 32] =
                make_float4(st[mt][nt][0], st[mt][nt][1], st[mt][nt][2], st[mt][nt][3]);
    bar_arrive(bar, 64);
}

template <int D, int MT, int BQ, int NS>
__global__ void __launch_bounds__(FB_THREADS, 1)
    flash_dkdv_pairs_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                            const bf16 *v, const float *lse, const float *delta, int T, int H,
                            int Hk, float scale, float sl2) {
    chm_pdl_enter();
    constexpr int LD = D + FA_PAD, BK = 2 * 16 * MT, PT = MT * (BQ / 8) * 32;
    extern __shared__ __align__(16) unsigned char fb_smem[];
    bf16 *Ks = (bf16 *)fb_smem, *Vs = Ks + BK * LD, *Qs = Vs + BK * LD;
    bf16 *Os = Qs + NS * BQ * LD;  // dO tiles
    float4 *Ps = (float4 *)(Os + NS * BQ * LD);  // P^T of each pair, PT float4
    float *Ls = (float *)(Ps + 2 * PT), *Ds = Ls + NS * BQ;
    int kt, g, b, rep = H / Hk;
    fa_block(&kt, &g, &b);  // key tile 0 first: it sees the most queries
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k0 = kt * BK;
    int pair = warp >> 1, role = warp & 1;  // role 0: P^T and dV, 1: dS^T and dK
    int64_t kld = (int64_t)Hk * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int qstart = k0 / BQ, nqt = (T + BQ - 1) / BQ, n_it = rep * (nqt - qstart);
    fb_walk w = {Qs, Os, Ls, Ds, q, dout, lse, delta, b, g * rep, T, H, qstart, nqt, qstart, 0};
    fb_begin<D, BK, BQ>(w, Ks, Vs, kb, vb, kld, k0);
    float acc[MT][D / 8][4];
    zero_c<MT, D / 8>(acc);
    int pkey = pair * 16 * MT, w0 = k0 + pkey;  // the pair's first key
    int krow = w0 + (lane >> 2);                // this thread's keys: krow + 16 mt + 8 r
    float4 *pp = Ps + pair * PT + lane;
    const bf16 *As = role ? Vs : Ks;
    for (int it = 0, cb = 0; it < n_it; it++) {
        int nb = next_buf<NS>(cb), buf = cb;
        int i0 = fb_next<D, BQ>(w, it + 1 < n_it, nb);
        if (i0 + BQ - 1 >= w0) {  // some query of the tile sees some key of this pair
            const bf16 *Qc = Qs + buf * BQ * LD, *Oc = Os + buf * BQ * LD;
            float c[MT][BQ / 8][4];
            mma_nt<D, MT, BQ>(c, As, role ? Oc : Qc, pkey);
            if (role == 0) {
                kv_publish<MT, BQ>(c, pp, Ls + buf * BQ, krow, i0, w0, sl2, 1 + pair);
            } else {
                bar_wait(1 + pair, 64);
                kv_ds<MT, BQ>(c, pp, Ds + buf * BQ);
            }
            mma_c_kn<D, MT, BQ>(acc, c, role ? Qc : Oc);
        }
        // NS 2: the next prefetch overwrites this buffer. The P^T tiles are
        // rewritten only after the next iteration's barrier, which the
        // partner passes after its reads.
        if (NS == 2) __syncthreads();
        cb = nb;
    }
    // The epilogue through the warp's own K (role 0) or V rows: its old dV or dK rows.
    bf16 *gb = (role ? dk : dv) + ((int64_t)b * T * Hk + g) * D;
    epi_warp<MT, D>(role ? Vs : Ks, pkey, gb, kld, w0, T, acc, role ? scale : 1.0f);
}

// Shared memory of the split-role kernel: K, V, NS Q and dO tiles, the pairs' P^T, lse, Delta.
template <int D, int MT, int BQ, int NS> static constexpr size_t pairs_smem() {
    return (size_t)(2 * (2 * 16 * MT) + 2 * NS * BQ) * (D + FA_PAD) * sizeof(bf16) +
           (size_t)(2 * 16 * MT) * BQ * sizeof(float) + 2 * NS * BQ * sizeof(float);
}

template <int D, int MT, int BQ, int NS>
static cudaError_t flash_dkdv_pairs_launch(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                                           const bf16 *k, const bf16 *v, const float *lse,
                                           const float *delta, const chm_cu_attn *a,
                                           cudaStream_t s) {
    static bool set = false;
    return dkdv_run(flash_dkdv_pairs_kernel<D, MT, BQ, NS>, &set, pairs_smem<D, MT, BQ, NS>(),
                    2 * 16 * MT, dk, dv, dout, q, k, v, lse, delta, a, s);
}

// D 64: flash_dkdv_kernel, two m16 tiles of keys per warp and 32-query tiles
// (dK, dV, S^T and dP^T fill the registers). D 128: the split-role kernel,
// 32 keys a pair (one warp holding dK and dV could keep only 16). Measured on
// an H100 (bwd, ms, old launch order): D 128 split-role 0.93-0.95 vs
// 0.96-0.98 at B8 T2048, 3.17-3.24 vs 3.28-3.35 at B2 T8192. Slower: D 64
// split-role with 64 keys a pair (1.00-1.05 vs 0.89 at T2048: MT 4 spills,
// and the exponentials all fall on one warp of each pair), D 128 split-role
// with the block-wide shared-memory epilogue (2.95 vs 2.79 at T8192), D 64
// with one m16 tile and 64-query tiles (3 blocks an SM: 3% slower), D 64 with
// one barrier a tile as in the dQ kernel (bwd 0.793-0.798 vs 0.769-0.781 ms
// at B8 T2048, 2.73 vs 2.63-2.65 at B2 T8192). No faster: D 128 with
// 64-query tiles.
static cudaError_t flash_dkdv(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                              const bf16 *k, const bf16 *v, const float *lse, const float *delta,
                              const chm_cu_attn *a, cudaStream_t s) {
#ifdef CHIMERA_HAVE_SM90A
    if (a->wgmma & CHM_CU_WGMMA_DKDV) {
        bool taken;
        cudaError_t e = chm_cu_flash_dkdv_sm90(dk, dv, dout, q, k, v, lse, delta, a, s, &taken);
        if (e != cudaSuccess || taken) return e;
    }
#endif
    if (a->D == 64)
        return flash_dkdv_launch<64, 2, 32, 2>(dk, dv, dout, q, k, v, lse, delta, a, s);
    if (a->D == 128 && fa_smem_max() >= pairs_smem<128, 2, 32, 4>())
        return flash_dkdv_pairs_launch<128, 2, 32, 4>(dk, dv, dout, q, k, v, lse, delta, a, s);
    if (a->D == 128)
        return flash_dkdv_pairs_launch<128, 2, 32, 3>(dk, dv, dout, q, k, v, lse, delta, a, s);
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
