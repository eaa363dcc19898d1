// attention_flash_dkdv_sm90.cu: the dK/dV kernel of the flash-attention
// backward at head dims 64 and 128 on Hopper warpgroup tensor cores (wgmma,
// sm_90a only: built for 90a alone, launched only on compute capability 9.0;
// attention_flash_bwd.cu's mma.sync kernels serve the rest).
//
// One block of two warpgroups per 128 keys (64 a warpgroup) of one (kv head,
// batch); it walks, for every q head of the group, the query tiles of 64 rows
// at or after its keys, double-buffered by cp.async into 128-byte-swizzled
// shared tiles (wgmma.cuh) with lse and Delta, one block barrier a tile. Per
// tile and warpgroup: S^T = K Q^T and dP^T = V dO^T as wgmma m64n64k16 from
// shared memory, P^T = exp2(S^T*scale*log2e - lse) and dS^T = P^T (dP^T -
// Delta) in the accumulators, then dV += P^T dO and dK += dS^T Q as wgmma
// with P^T, dS^T as register operands and dO, Q read N-major (one m64n64
// product a 64 columns of the head dim). A warpgroup skips the tiles wholly
// before its keys; key tile 0 launches first across all heads (mma.cuh:
// fa_grid). dk, dv ACCUMULATE through shared memory (attention_flash_bwd.cuh:
// epi_add); one writer per element: deterministic.
#include "attention_flash_bwd.cuh"
#include "wgmma.cuh"

#define KV9_THREADS 256
#define KV9_BK 128  // keys a block
#define KV9_BQ 64   // queries a tile
static_assert(KV9_BQ == 64 && KV9_BK == 128, "two warpgroups of 64 keys against 64-query tiles");

// Bytes of the K (and V) tile, of one Q (or dO) buffer, and of the block's
// shared memory, at head dim D.
template <int D> __host__ __device__ constexpr int kv9_kb() { return KV9_BK * D * 2; }
template <int D> __host__ __device__ constexpr int kv9_qb() { return KV9_BQ * D * 2; }
template <int D> __host__ __device__ constexpr int kv9_smem_bytes() {
    return 2 * kv9_kb<D>() + 4 * kv9_qb<D>() + 4 * KV9_BQ * 4 + 1024;
}

// The block's shared tiles: K, V, then two buffers of Q, dO, lse and Delta.
struct kv9_smem {
    unsigned char *K, *V, *Q, *O;
    float *L, *Dl;
};

// Queue query tile i0 of q head h into buffer buf: Q and dO rows (rows >= T
// as zeros: they add nothing to dK and dV whatever P is), lse and Delta.
template <int D>
__device__ __forceinline__ void kv9_stage(const kv9_smem &sm, const bf16 *q, const bf16 *dout,
                                          const float *lse, const float *delta, int b, int h,
                                          int i0, int buf, int T, int H) {
    int64_t base = ((int64_t)b * T * H + h) * D, qld = (int64_t)H * D;
    int tid = threadIdx.x;
    sw_tile_load<KV9_BQ, D, KV9_THREADS>(sm.Q + buf * kv9_qb<D>(), q + base, qld, i0, T, tid);
    sw_tile_load<KV9_BQ, D, KV9_THREADS>(sm.O + buf * kv9_qb<D>(), dout + base, qld, i0, T, tid);
    if (tid < 2 * KV9_BQ) {
        int r = tid & (KV9_BQ - 1), row = i0 + r;
        bool ok = row < T;
        int64_t st = ((int64_t)b * H + h) * T + (ok ? row : 0);
        if (tid < KV9_BQ)
            cp_async4(sm.L + buf * KV9_BQ + r, lse + st, ok);
        else
            cp_async4(sm.Dl + buf * KV9_BQ + r, delta + st, ok);
    }
}

// In place: st becomes P^T and dpt dS^T = P^T (dP^T - Delta) for this
// thread's keys key (and key + 8) against queries from i0; Lc, Dc: the
// tile's lse (natural log) and Delta. MASK zeroes P of queries before the key.
template <bool MASK>
__device__ __forceinline__ void kv9_pds(float st[32], float dpt[32], const float *Lc,
                                        const float *Dc, int key, int i0, float sl2) {
    int t = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int qc = 8 * j + 2 * t;
        float2 lq = *(const float2 *)(Lc + qc), dq = *(const float2 *)(Dc + qc);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float l = (e & 1) ? lq.y : lq.x, d = (e & 1) ? dq.y : dq.x;
            float p = fast_exp2(fmaf(st[4 * j + e], sl2, -l * FA_LOG2E));
            if (MASK && i0 + qc + (e & 1) < key + 8 * (e >> 1)) p = 0.0f;
            st[4 * j + e] = p;
            dpt[4 * j + e] = p * (dpt[4 * j + e] - d);
        }
    }
}

// dv += P^T dO and dk += dS^T Q (64 keys x D of the warpgroup): P^T, dS^T
// from st, dpt rounded to bf16; dO, Q the swizzled [64 queries][D] buffers
// at os, qs read N-major (an m64n64 product a 64 columns of the head dim,
// four k16 steps).
template <int D>
__device__ __forceinline__ void kv9_acc(float dv[D / 2], float dk[D / 2], const float st[32],
                                        const float dpt[32], uint32_t qs, uint32_t os) {
    uint32_t pa[4][4], sa[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        c_to_a(pa[j], &st[8 * j], &st[8 * j + 4]);
        c_to_a(sa[j], &dpt[8 * j], &dpt[8 * j + 4]);
    }
    wg_fence();
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t o = os + j * 16 * WG_SW, qq = qs + j * 16 * WG_SW;
#pragma unroll
        for (int c = 0; c < D / 64; c++) {
            uint32_t at = c * KV9_BQ * WG_SW;  // column block c of the tile
            wg_rs_64x64_tb(dv + 32 * c, pa[j], wg_desc(o + at, 1024, 1024), 1);
            wg_rs_64x64_tb(dk + 32 * c, sa[j], wg_desc(qq + at, 1024, 1024), 1);
        }
    }
    wg_commit();
    wg_wait<0>();
    wg_pin<D / 2>(dv);
    wg_pin<D / 2>(dk);
}

// The old dk and dv rows come through the free shared tiles ([128][D+FA_PAD]
// each, epi_add's layout), take scale * dka and dva at this warp's rows and
// go back.
template <int D>
__device__ __forceinline__ void kv9_epilogue(unsigned char *free_sm, bf16 *dkb, bf16 *dvb,
                                             int64_t ld, int k0, int T, const float dka[D / 2],
                                             const float dva[D / 2], float scale) {
    constexpr int LD = D + FA_PAD;
    static_assert(2 * KV9_BK * LD * 2 <= kv9_smem_bytes<D>() - 1024, "epilogue tiles fit");
    bf16 *smk = (bf16 *)free_sm, *smv = smk + KV9_BK * LD;
    int wrow = (threadIdx.x >> 5) * 16;
    __syncthreads();  // every warpgroup is done with the shared tiles
    tile_load<KV9_BK, D, KV9_THREADS>(smk, dkb, ld, k0, T);
    tile_load<KV9_BK, D, KV9_THREADS>(smv, dvb, ld, k0, T);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    epi_add<1, D>(smk, wrow, (const float(*)[D / 8][4])dka, scale);
    epi_add<1, D>(smv, wrow, (const float(*)[D / 8][4])dva, 1.0f);
    __syncthreads();
    tile_store<KV9_BK, D, KV9_THREADS>(dkb, ld, smk, k0, T);
    tile_store<KV9_BK, D, KV9_THREADS>(dvb, ld, smv, k0, T);
}

// One block an SM at both head dims: at D 64 two (128 registers, 444 bytes of
// spills) ran the backward 13-16% slower on an H200 (RESULTS.md, session 27).
template <int D>
__global__ void __launch_bounds__(KV9_THREADS, 1)
    flash_dkdv_sm90_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                           const bf16 *v, const float *lse, const float *delta, int T, int H,
                           int Hk, float scale, float sl2) {
    chm_pdl_enter();
    extern __shared__ __align__(1024) unsigned char kv9_raw[];
    unsigned char *base = kv9_raw + ((1024 - (smem_addr(kv9_raw) & 1023)) & 1023);
    constexpr int KB = kv9_kb<D>(), QB = kv9_qb<D>();
    kv9_smem sm;
    sm.K = base, sm.V = base + KB, sm.Q = sm.V + KB, sm.O = sm.Q + 2 * QB;
    sm.L = (float *)(sm.O + 2 * QB), sm.Dl = sm.L + 2 * KV9_BQ;
    int kt, g, b, rep = H / Hk, tid = threadIdx.x;
    fa_block(&kt, &g, &b);  // key tile 0 first: it sees the most queries
    int k0 = kt * KV9_BK, r0 = (tid >> 7) * 64;  // r0: the warpgroup's first key in the tile
    int key = k0 + r0 + ((tid >> 5) & 3) * 16 + ((tid & 31) >> 2);  // this thread's keys: +0, +8
    int64_t kld = (int64_t)Hk * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D;
    const bf16 *vb = v + ((int64_t)b * T * Hk + g) * D;
    int qstart = k0 / KV9_BQ, nqt = (T + KV9_BQ - 1) / KV9_BQ, n_it = rep * (nqt - qstart);
    sw_tile_load<KV9_BK, D, KV9_THREADS>(sm.K, kb, kld, k0, T, tid);
    sw_tile_load<KV9_BK, D, KV9_THREADS>(sm.V, vb, kld, k0, T, tid);
    kv9_stage<D>(sm, q, dout, lse, delta, b, g * rep, qstart * KV9_BQ, 0, T, H);
    cp_async_commit();
    float dka[D / 2], dva[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) dka[i] = dva[i] = 0.0f;
    uint32_t ks = smem_addr(sm.K), vs = smem_addr(sm.V);
    for (int it = 0, cb = 0, qc = qstart, hc = 0; it < n_it; it++, cb ^= 1) {
        cp_async_wait<0>();
        wg_proxy_fence();  // the copies are visible to wgmma after the barrier
        __syncthreads();   // every warp is past its reads of buffer cb ^ 1
        int i0 = qc * KV9_BQ;
        if (++qc == nqt) qc = qstart, hc++;
        if (it + 1 < n_it) {
            kv9_stage<D>(sm, q, dout, lse, delta, b, g * rep + hc, qc * KV9_BQ, cb ^ 1, T, H);
            cp_async_commit();
        }
        if (i0 + KV9_BQ - 1 < k0 + r0) continue;  // no query of the tile sees these keys
        uint32_t qs = smem_addr(sm.Q + cb * QB), os = smem_addr(sm.O + cb * QB);
        float st[32], dpt[32];
        wg_two_nt<D, KV9_BK>(st, dpt, ks, vs, qs, os, r0);  // S^T = K Q^T, dP^T = V dO^T
        const float *Lc = sm.L + cb * KV9_BQ, *Dc = sm.Dl + cb * KV9_BQ;
        if (i0 < k0 + r0 + 63)
            kv9_pds<true>(st, dpt, Lc, Dc, key, i0, sl2);
        else
            kv9_pds<false>(st, dpt, Lc, Dc, key, i0, sl2);
        kv9_acc<D>(dva, dka, st, dpt, qs, os);
    }
    kv9_epilogue<D>(base, dk + ((int64_t)b * T * Hk + g) * D, dv + ((int64_t)b * T * Hk + g) * D,
                    kld, k0, T, dka, dva, scale);
}

template <int D>
static cudaError_t kv9_launch(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                              const bf16 *v, const float *lse, const float *delta,
                              const chm_cu_attn *a, cudaStream_t s) {
    static bool set = false;
    cudaError_t e = fb_smem_optin(flash_dkdv_sm90_kernel<D>, kv9_smem_bytes<D>(), &set);
    if (e != cudaSuccess) return e;
    unsigned tiles = (unsigned)((a->T + KV9_BK - 1) / KV9_BK);
    chm_launch(flash_dkdv_sm90_kernel<D>, fa_grid(tiles, (unsigned)a->Hk, (unsigned)a->B),
               KV9_THREADS, kv9_smem_bytes<D>(), s, dk, dv, dout, q, k, v, lse, delta, (int)a->T,
               (int)a->H, (int)a->Hk, a->scale, a->scale * FA_LOG2E);
    return cudaGetLastError();
}

cudaError_t chm_cu_flash_dkdv_sm90(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                                   const bf16 *k, const bf16 *v, const float *lse,
                                   const float *delta, const chm_cu_attn *a, cudaStream_t s,
                                   bool *taken) {
    *taken = false;
    if ((a->D != 64 && a->D != 128) || !wg_device_ok()) return cudaSuccess;
    *taken = true;
    if (a->D == 64) return kv9_launch<64>(dk, dv, dout, q, k, v, lse, delta, a, s);
    return kv9_launch<128>(dk, dv, dout, q, k, v, lse, delta, a, s);
}
