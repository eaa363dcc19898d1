// attention_flash_dq_sm90.cu: the dQ kernel of the flash-attention backward
// at head dims 64 and 128 on Hopper warpgroup tensor cores (wgmma, sm_90a only: this
// file is built for 90a alone and the host launches it only on compute
// capability 9.0; attention_flash_dq.cu's mma.sync kernel serves the rest).
//
// One block of two warpgroups per 128 query rows (64 a warpgroup) of one
// (head, batch); key/value tiles of 64 rows, double-buffered by cp.async into
// 128-byte-swizzled shared tiles (wgmma.cuh), one block barrier a tile. Per
// tile and warpgroup: S = Q K^T and dP = dO V^T as wgmma m64n64k16 with both
// operands read from shared memory (no ldmatrix, no fragment registers),
// P = exp2(S*scale*log2e - lse) and dS = P (dP - Delta) in the accumulator
// registers, then dQ += dS K as wgmma with dS as the register operand and
// the same K tile read N-major (one m64n64 product a 64 columns of the head
// dim). A warpgroup skips the tiles wholly after its
// rows; query tiles launch last-first across all heads (mma.cuh: fa_grid).
// dq ACCUMULATES through shared memory (attention_flash_bwd.cuh: epi_add);
// one writer per element: deterministic.
#include "attention_flash_bwd.cuh"
#include "wgmma.cuh"

#define DQ9_THREADS 256
#define DQ9_BM 128  // query rows a block
#define DQ9_BN 64   // keys a tile
static_assert(DQ9_BN == 64 && DQ9_BM == 128, "two warpgroups of 64 rows against 64-key tiles");

// Bytes of the Q (and dO) tile, of one K (or V) buffer, and of the block's
// shared memory, at head dim D.
template <int D> __host__ __device__ constexpr int dq9_qb() { return DQ9_BM * D * 2; }
template <int D> __host__ __device__ constexpr int dq9_kb() { return DQ9_BN * D * 2; }
template <int D> __host__ __device__ constexpr int dq9_smem_bytes() {
    return 2 * dq9_qb<D>() + 4 * dq9_kb<D>() + 1024;
}

// s becomes dS = P (dP - Delta) for this thread's rows row (and row + 8);
// MASK zeroes P of keys after the row.
template <bool MASK>
__device__ __forceinline__ void dq9_ds(float s[32], const float dp[32], const float l2[2],
                                       const float dl[2], int row, int key0, float sl2) {
    int t = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float p = fast_exp2(fmaf(s[4 * j + e], sl2, -l2[e >> 1]));
            if (MASK && key0 + 8 * j + 2 * t + (e & 1) > row + 8 * (e >> 1)) p = 0.0f;
            s[4 * j + e] = p * (dp[4 * j + e] - dl[e >> 1]);
        }
}

// The block's old dq rows come through the free K/V buffers ([128][D+FA_PAD],
// epi_add's layout), take scale * dqa at this warp's rows and go back.
template <int D>
__device__ __forceinline__ void dq9_epilogue(unsigned char *free_sm, bf16 *dqb, int64_t ld, int q0,
                                             int T, const float dqa[D / 2], float scale) {
    static_assert(DQ9_BM * (D + FA_PAD) * 2 <= 4 * dq9_kb<D>(), "epilogue tile fits");
    bf16 *sm = (bf16 *)free_sm;
    __syncthreads();  // every warpgroup is done with the K/V tiles
    tile_load<DQ9_BM, D, DQ9_THREADS>(sm, dqb, ld, q0, T);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    epi_add<1, D>(sm, (threadIdx.x >> 5) * 16, (const float(*)[D / 8][4])dqa, scale);
    __syncthreads();
    tile_store<DQ9_BM, D, DQ9_THREADS>(dqb, ld, sm, q0, T);
}

template <int D>
__global__ void __launch_bounds__(DQ9_THREADS, 1)
    flash_dq_sm90_kernel(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                         const float *lse, const float *delta, int T, int H, int Hk, float scale,
                         float sl2) {
    chm_pdl_enter();
    extern __shared__ __align__(1024) unsigned char dq9_smem[];
    constexpr int QB = dq9_qb<D>(), KB = dq9_kb<D>();
    unsigned char *Qs = dq9_smem + ((1024 - (smem_addr(dq9_smem) & 1023)) & 1023);
    unsigned char *Os = Qs + QB, *Ks = Os + QB, *Vs = Ks + 2 * KB;
    int qt, h, b;
    fa_block(&qt, &h, &b);
    qt = (T + DQ9_BM - 1) / DQ9_BM - 1 - qt;  // the last query tile first: it sees the most keys
    int g = h / (H / Hk), tid = threadIdx.x, q0 = qt * DQ9_BM;
    int r0 = (tid >> 7) * 64;                                    // the warpgroup's first row
    int row = q0 + r0 + ((tid >> 5) & 3) * 16 + ((tid & 31) >> 2);  // this thread's rows: +0, +8
    int64_t qld = (int64_t)H * D, kld = (int64_t)Hk * D;
    const bf16 *qb = q + ((int64_t)b * T * H + h) * D;
    const bf16 *ob = dout + ((int64_t)b * T * H + h) * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D;
    const bf16 *vb = v + ((int64_t)b * T * Hk + g) * D;
    int nkt = (q0 + DQ9_BM - 1) / DQ9_BN + 1, tmax = (T + DQ9_BN - 1) / DQ9_BN;
    if (nkt > tmax) nkt = tmax;
    sw_tile_load<DQ9_BM, D, DQ9_THREADS>(Qs, qb, qld, q0, T, tid);
    sw_tile_load<DQ9_BM, D, DQ9_THREADS>(Os, ob, qld, q0, T, tid);
    sw_tile_load<DQ9_BN, D, DQ9_THREADS>(Ks, kb, kld, 0, T, tid);
    sw_tile_load<DQ9_BN, D, DQ9_THREADS>(Vs, vb, kld, 0, T, tid);
    cp_async_commit();
    float l2[2], dl[2], dqa[D / 2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t st = ((int64_t)b * H + h) * T + row + 8 * r;
        l2[r] = row + 8 * r < T ? lse[st] * FA_LOG2E : INFINITY;
        dl[r] = row + 8 * r < T ? delta[st] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < D / 2; i++) dqa[i] = 0.0f;
    uint32_t qs = smem_addr(Qs), os = smem_addr(Os);
    for (int kt = 0, cb = 0; kt < nkt; kt++, cb ^= 1) {
        cp_async_wait<0>();
        wg_proxy_fence();  // the copies are visible to wgmma after the barrier
        __syncthreads();   // every warp is past its reads of buffer cb ^ 1
        if (kt + 1 < nkt) {
            sw_tile_load<DQ9_BN, D, DQ9_THREADS>(Ks + (cb ^ 1) * KB, kb, kld, (kt + 1) * DQ9_BN, T,
                                                 tid);
            sw_tile_load<DQ9_BN, D, DQ9_THREADS>(Vs + (cb ^ 1) * KB, vb, kld, (kt + 1) * DQ9_BN, T,
                                                 tid);
            cp_async_commit();
        }
        int key0 = kt * DQ9_BN;
        if (key0 > q0 + r0 + 63) continue;  // no key of the tile is visible to this warpgroup
        uint32_t ks = smem_addr(Ks + cb * KB), vs = smem_addr(Vs + cb * KB);
        float s[32], dp[32];
        wg_two_nt<D, DQ9_BM>(s, dp, qs, os, ks, vs, r0);  // S = Q K^T, dP = dO V^T
        if (key0 + DQ9_BN - 1 > q0 + r0)
            dq9_ds<true>(s, dp, l2, dl, row, key0, sl2);
        else
            dq9_ds<false>(s, dp, l2, dl, row, key0, sl2);
        wg_rs_acc<D>(dqa, s, ks);  // dQ += dS K (K read N-major)
    }
    dq9_epilogue<D>(Ks, dq + ((int64_t)b * T * H + h) * D, qld, q0, T, dqa, scale);
}

template <int D>
static cudaError_t dq9_launch(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                              const bf16 *v, const float *lse, const float *delta,
                              const chm_cu_attn *a, cudaStream_t s) {
    static bool set = false;
    cudaError_t e = fb_smem_optin(flash_dq_sm90_kernel<D>, dq9_smem_bytes<D>(), &set);
    if (e != cudaSuccess) return e;
    unsigned tiles = (unsigned)((a->T + DQ9_BM - 1) / DQ9_BM);
    chm_launch(flash_dq_sm90_kernel<D>, fa_grid(tiles, (unsigned)a->H, (unsigned)a->B),
               DQ9_THREADS, dq9_smem_bytes<D>(), s, dq, dout, q, k, v, lse, delta, (int)a->T,
               (int)a->H, (int)a->Hk, a->scale, a->scale * FA_LOG2E);
    return cudaGetLastError();
}

cudaError_t chm_cu_flash_dq_sm90(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                 const bf16 *v, const float *lse, const float *delta,
                                 const chm_cu_attn *a, cudaStream_t s, bool *taken) {
    *taken = false;
    if ((a->D != 64 && a->D != 128) || !wg_device_ok()) return cudaSuccess;
    *taken = true;
    if (a->D == 64) return dq9_launch<64>(dq, dout, q, k, v, lse, delta, a, s);
    return dq9_launch<128>(dq, dout, q, k, v, lse, delta, a, s);
}
