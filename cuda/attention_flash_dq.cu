// attention_flash_dq.cu: the dQ kernel of the flash-attention backward
// (bf16 tensor cores, sm_80+, head dim 64 or 128, causal, grouped-query).
//
// One block of 4 warps per (64*MT queries, head, batch); each warp owns 16*MT
// query rows (MT m16 tiles: every K/V fragment read from shared memory feeds
// 2*MT mma) and walks the key tiles up to the diagonal: S = Q K^T,
// P = exp2(S*scale*log2e - lse), dP = dO V^T, dS = P (dP - Delta),
// dQ += dS K. K/V tiles are double-buffered with cp.async behind one block
// barrier a tile (mma.cuh: kv_next_1bar); Q and dO stay in shared memory.
// The causal mask runs only on tiles that cross the diagonal, and a warp
// skips the tiles wholly after its rows. Query tiles launch
// last-first across all heads (mma.cuh: fa_grid). dq ACCUMULATES (one
// writer per element: deterministic). On compute capability 9.0 the
// wgmma kernel of attention_flash_dq_sm90.cu runs instead (where built).
#include "attention_flash_bwd.cuh"

// s becomes dS = P (dP - Delta); MASK zeroes P of keys after the row.
template <int MT, int BN, bool MASK>
__device__ __forceinline__ void dq_ds(float s[MT][BN / 8][4], const float dp[MT][BN / 8][4],
                                      const float l2[MT][2], const float dl[MT][2], int row0,
                                      int key0, float sl2) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = fast_exp2(fmaf(s[mt][nt][e], sl2, -l2[mt][e >> 1]));
                if (MASK) {
                    int key = key0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                    if (key > row0 + mt * 16 + (e >> 1) * 8) p = 0.0f;
                }
                s[mt][nt][e] = p * (dp[mt][nt][e] - dl[mt][e >> 1]);
            }
}

// Launch bounds with an explicit minimum of one block an SM: this is the
// build that was checked and timed on the H100 (ptxas schedules the bare
// bound differently).
// WEPI: the epilogue through the warp's own Q rows (epi_warp), else through
// the block's Q tile (epi_add between block barriers).
template <int D, int MT, int BN, bool WEPI>
__global__ void __launch_bounds__(FB_THREADS, 1)
    flash_dq_kernel(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                    const float *lse, const float *delta, int T, int H, int Hk, float scale,
                    float sl2) {
    chm_pdl_enter();
    constexpr int LD = D + FA_PAD, BM = 64 * MT;
    extern __shared__ __align__(16) unsigned char fb_smem[];
    bf16 *Qs = (bf16 *)fb_smem, *Os = Qs + BM * LD, *Ks = Os + BM * LD, *Vs = Ks + 2 * BN * LD;
    int qt, h, b;
    fa_block(&qt, &h, &b);
    qt = (T + BM - 1) / BM - 1 - qt;  // the last query tile first: it sees the most keys
    int g = h / (H / Hk);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, q0 = qt * BM;
    int64_t qld = (int64_t)H * D, kld = (int64_t)Hk * D;
    const bf16 *qb = q + ((int64_t)b * T * H + h) * D, *ob = dout + ((int64_t)b * T * H + h) * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int nkt = (q0 + BM - 1) / BN + 1, tmax = (T + BN - 1) / BN;
    if (nkt > tmax) nkt = tmax;
    tile_load<BM, D, FB_THREADS>(Qs, qb, qld, q0, T);
    tile_load<BM, D, FB_THREADS>(Os, ob, qld, q0, T);
    tile_load<BN, D, FB_THREADS>(Ks, kb, kld, 0, T);
    tile_load<BN, D, FB_THREADS>(Vs, vb, kld, 0, T);
    cp_async_commit();
    int wrow = warp * 16 * MT, w0 = q0 + wrow, row0 = w0 + (lane >> 2);
    float l2[MT][2], dl[MT][2], dqa[MT][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int row = row0 + mt * 16 + r * 8;
            int64_t st = ((int64_t)b * H + h) * T + row;
            l2[mt][r] = row < T ? lse[st] * FA_LOG2E : INFINITY;
            dl[mt][r] = row < T ? delta[st] : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            dqa[mt][i][0] = dqa[mt][i][1] = dqa[mt][i][2] = dqa[mt][i][3] = 0.0f;
    }
    for (int kt = 0, cb = 0; kt < nkt; kt++) {
        int nb = next_buf<2>(cb);
        kv_next_1bar<BN, D, FB_THREADS>(Ks, Vs, kb, vb, kld, kt, nkt, T, nb);
        int key0 = kt * BN;
        if (key0 <= w0 + 16 * MT - 1) {  // some key of the tile is visible to this warp
            const bf16 *Kc = Ks + cb * BN * LD, *Vc = Vs + cb * BN * LD;
            float s[MT][BN / 8][4], dp[MT][BN / 8][4];
            bwd_two_nt<D, MT, BN>(s, dp, Qs, Os, Kc, Vc, wrow);
            if (key0 + BN - 1 > w0)
                dq_ds<MT, BN, true>(s, dp, l2, dl, row0, key0, sl2);
            else
                dq_ds<MT, BN, false>(s, dp, l2, dl, row0, key0, sl2);
            mma_c_kn<D, MT, BN>(dqa, s, Kc);
        }
        cb = nb;
    }
    bf16 *dqb = dq + ((int64_t)b * T * H + h) * D;
    if (WEPI) {
        epi_warp<MT, D>(Qs, wrow, dqb, qld, q0 + wrow, T, dqa, scale);
        return;
    }
    __syncthreads();  // the Q tile takes the old dQ rows
    tile_load<BM, D, FB_THREADS>(Qs, dqb, qld, q0, T);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    epi_add<MT, D>(Qs, wrow, dqa, scale);
    __syncthreads();
    tile_store<BM, D, FB_THREADS>(dqb, qld, Qs, q0, T);
}

template <int D, int MT, int BN, bool WEPI>
static cudaError_t flash_dq_launch(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                   const bf16 *v, const float *lse, const float *delta,
                                   const chm_cu_attn *a, cudaStream_t s) {
    constexpr int LD = D + FA_PAD, BM = 64 * MT;
    size_t smem = (size_t)(2 * BM + 4 * BN) * LD * sizeof(bf16);
    static bool set = false;
    cudaError_t e = fb_smem_optin(flash_dq_kernel<D, MT, BN, WEPI>, smem, &set);
    if (e != cudaSuccess) return e;
    unsigned tiles = (unsigned)((a->T + BM - 1) / BM);
    chm_launch(flash_dq_kernel<D, MT, BN, WEPI>, fa_grid(tiles, (unsigned)a->H, (unsigned)a->B),
               FB_THREADS, smem, s, dq, dout, q, k, v, lse, delta, (int)a->T, (int)a->H, (int)a->Hk,
               a->scale, a->scale * FA_LOG2E);
    return cudaGetLastError();
}

// Two m16 tiles per warp; keys per tile so that dQ, S and dP fit the registers
// without spilling. D 128 needs 104 KB of shared memory that way: devices
// that allow less (sm_86/sm_89) take one m16 tile per warp. One m16 tile per
// warp was slower on an H100 at both head dims (D 64: 128 registers and 4
// blocks an SM, 3-5%; D 128: 4-6%). The epilogue through the block's Q
// tile at D 64 and on the one-tile path (checked on an H100 only by forcing
// it, with two barriers a key tile); at D 128 it was no faster at T2048 and
// 6% slower at T8192 (session 6), and the warp's own rows (WEPI) replace the
// old epilogue in registers, which spilled 38 bytes (H100, bwd: 0.815-0.824
// vs 0.833-0.840 ms at B8 T2048 H8, 2.764 vs 2.79-2.82 at B2 T8192). One
// barrier a key tile instead of two: bwd -1.3% at D 64 and D 128, T2048 (0.822
// vs 0.836 ms at D 128); with both and the dK/dV kernel's warp epilogue the D
// 128 backward took 0.794-0.796 ms against 0.833-0.840 (H100, one lease).
cudaError_t chm_cu_flash_dq(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                            const bf16 *v, const float *lse, const float *delta,
                            const chm_cu_attn *a, cudaStream_t s) {
#ifdef CHIMERA_HAVE_SM90A
    if (a->wgmma & CHM_CU_WGMMA_DQ) {
        bool taken;
        cudaError_t e = chm_cu_flash_dq_sm90(dq, dout, q, k, v, lse, delta, a, s, &taken);
        if (e != cudaSuccess || taken) return e;
    }
#endif
    if (a->D == 64) return flash_dq_launch<64, 2, 64, false>(dq, dout, q, k, v, lse, delta, a, s);
    if (a->D != 128) return cudaErrorInvalidValue;
    if (fa_smem_max() < (size_t)(2 * 128 + 4 * 32) * (128 + FA_PAD) * 2)
        return flash_dq_launch<128, 1, 64, false>(dq, dout, q, k, v, lse, delta, a, s);
    return flash_dq_launch<128, 2, 32, true>(dq, dout, q, k, v, lse, delta, a, s);
}
