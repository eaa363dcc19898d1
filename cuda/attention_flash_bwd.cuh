// attention_flash_bwd.cuh: what the flash-attention backward kernels
// (attention_flash_bwd.cu: dK/dV, attention_flash_dq.cu: dQ) share: the
// S/dP products, the accumulate-into-bf16 epilogues through shared memory
// (block-wide and per warp), the shared-memory opt-in and the dQ launcher's
// declaration.
#ifndef CHIMERA_CUDA_ATTENTION_FLASH_BWD_CUH
#define CHIMERA_CUDA_ATTENTION_FLASH_BWD_CUH

#include "mma.cuh"

#define FB_THREADS 128

// The accumulate epilogue through shared memory: the block's old gradient
// rows come into a free [ROWS][D+FA_PAD] tile by cp.async (16-byte chunks,
// rows >= T as zeros), each warp adds scale * acc at its fragment positions
// (conflict-free 4-byte accesses: row stride D+FA_PAD), and the block writes
// the rows < T back in 16-byte chunks. Against old rows loaded into registers
// at fragment positions: full 32-byte sectors instead of 16 bytes of 8 rows
// per access, and no registers holding the old rows (at D 128 those spilled:
// 76 bytes in the dK/dV, 38 in the dQ kernel). Callers: barrier, tile_load per
// tensor, cp_async_commit, cp_async_wait<0>, barrier, epi_add, barrier,
// tile_store.
template <int MT, int D>
__device__ __forceinline__ void epi_add(bf16 *sm, int wrow, const float acc[MT][D / 8][4],
                                        float scale) {
    constexpr int LD = D + FA_PAD;
    int lane = threadIdx.x & 31;
    bf16 *p = sm + (wrow + (lane >> 2)) * LD + (lane & 3) * 2;
#pragma unroll
    for (int k = 0; k < 2 * MT; k++) {
        int h = 2 * (k & 1);
#pragma unroll
        for (int i = 0; i < D / 8; i++) {
            uint32_t *e = (uint32_t *)(p + k * 8 * LD + i * 8);
            __nv_bfloat162 o = *(const __nv_bfloat162 *)e;
            float x = __low2float(o) + scale * acc[k >> 1][i][h];
            float y = __high2float(o) + scale * acc[k >> 1][i][h + 1];
            *e = pack_bf16(x, y);
        }
    }
}

// The accumulate epilogue of one warp through shared rows that only it reads
// (its Q rows in the dQ kernel, its K or V rows in the split-role dK/dV
// kernel): the warp's 16*MT rows from wrow of the tile sm take the old
// gradient rows from r0 of g (cp.async, rows >= T as zeros), epi_add adds
// scale * acc, and the rows < T go back in 16-byte chunks. Only warp-level
// syncs: no block barrier, and no registers holding the old rows.
template <int MT, int D>
__device__ __forceinline__ void epi_warp(bf16 *sm, int wrow, bf16 *g, int64_t ld, int r0, int T,
                                         const float acc[MT][D / 8][4], float scale) {
    constexpr int LD = D + FA_PAD, ROWS = 16 * MT;
    int lane = threadIdx.x & 31;
    bf16 *ws = sm + wrow * LD;
    tile_load<ROWS, D, 32>(ws, g, ld, r0, T, lane);
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();
    epi_add<MT, D>(sm, wrow, acc, scale);
    __syncwarp();
    tile_store<ROWS, D, 32>(g, ld, ws, r0, T, lane);
}

// The two products every backward tile starts with, for this warp's MT m16
// tiles of rows (from row0 of A1, A2) against the N rows of B1, B2 (all
// [rows][D] tiles in shared memory): c1 = A1 B1^T, c2 = A2 B2^T (MT x N/8
// tiles of 16x8). dQ: S = Q K^T, dP = dO V^T; dK/dV: S^T = K Q^T, dP^T = V dO^T.
template <int D, int MT, int N>
__device__ __forceinline__ void bwd_two_nt(float c1[MT][N / 8][4], float c2[MT][N / 8][4],
                                           const bf16 *A1, const bf16 *A2, const bf16 *B1,
                                           const bf16 *B2, int row0) {
    constexpr int LD = D + FA_PAD;
    zero_c<MT, N / 8>(c1);
    zero_c<MT, N / 8>(c2);
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a1[MT][4], a2[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            frag_a<LD>(a1[mt], A1, row0 + mt * 16, kk * 16);
            frag_a<LD>(a2[mt], A2, row0 + mt * 16, kk * 16);
        }
#pragma unroll
        for (int np = 0; np < N / 16; np++) {
            uint32_t r[4];
            frag_b_nk<LD>(r, B1, np * 16, kk * 16);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(c1[mt][2 * np], a1[mt], r[0], r[1]);
                mma16816(c1[mt][2 * np + 1], a1[mt], r[2], r[3]);
            }
            frag_b_nk<LD>(r, B2, np * 16, kk * 16);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(c2[mt][2 * np], a2[mt], r[0], r[1]);
                mma16816(c2[mt][2 * np + 1], a2[mt], r[2], r[3]);
            }
        }
    }
}

// Opt a kernel into `bytes` of dynamic shared memory once per process.
template <typename K>
static cudaError_t fb_smem_optin(K kernel, size_t bytes, bool *done) {
    if (*done) return cudaSuccess;
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e == cudaSuccess) *done = true;
    return e;
}

// dq += scale * dS K for every query row (attention_flash_dq.cu); lse, delta [B,H,T] f32.
cudaError_t chm_cu_flash_dq(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                            const bf16 *v, const float *lse, const float *delta,
                            const chm_cu_attn *a, cudaStream_t s);

// The sm_90a (wgmma) dQ and dK/dV kernels at D 64 and 128 (attention_flash_dq_sm90.cu,
// attention_flash_dkdv_sm90.cu, built only where CMake defines
// CHIMERA_HAVE_SM90A): *taken false when they do not apply (another head dim,
// or a device other than compute capability 9.0).
cudaError_t chm_cu_flash_dq_sm90(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                 const bf16 *v, const float *lse, const float *delta,
                                 const chm_cu_attn *a, cudaStream_t s, bool *taken);
cudaError_t chm_cu_flash_dkdv_sm90(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                                   const bf16 *k, const bf16 *v, const float *lse,
                                   const float *delta, const chm_cu_attn *a, cudaStream_t s,
                                   bool *taken);

#endif
