// attention_flash_bwd.cuh: what the two flash-attention backward kernels
// (attention_flash_bwd.cu: dK/dV, attention_flash_dq.cu: dQ) share: the
// S/dP products, the accumulate-into-bf16 epilogue, the shared-memory opt-in
// and the dQ launcher's declaration.
#ifndef CHIMERA_CUDA_ATTENTION_FLASH_BWD_CUH
#define CHIMERA_CUDA_ATTENTION_FLASH_BWD_CUH

#include "mma.cuh"

#define FB_THREADS 128

// scale * acc added into a bf16 row of D columns at `row` (one C-fragment row per r);
// rows >= T are not written.
template <int DT>
__device__ __forceinline__ void add_rows(bf16 *base, int64_t ld, int rowA, int T, float acc[][4],
                                         float scale) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rowA + r * 8;
        if (row >= T) continue;
        bf16 *p = base + (int64_t)row * ld;
#pragma unroll
        for (int i = 0; i < DT; i++) {
            int col = i * 8 + (lane & 3) * 2;
            __nv_bfloat162 old = *(__nv_bfloat162 *)(p + col);
            float x = __low2float(old) + scale * acc[i][2 * r];
            float y = __high2float(old) + scale * acc[i][2 * r + 1];
            *(uint32_t *)(p + col) = pack_bf16(x, y);
        }
    }
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

#endif
