// attention_flash.cu: flash-attention forward on bf16 tensor cores (sm_80+),
// head dim 64 or 128, causal, grouped-query.
//
// One block of 4 warps per (64 query rows, head, batch); each warp owns 16
// rows. Key/value tiles of 64 rows stream through shared memory with cp.async,
// double-buffered (the next tile loads while this one computes). Per tile:
// S = Q K^T (mma.sync m16n8k16, Q fragments kept in registers), scale and the
// causal mask, online softmax in the log2 domain (running max m and sum l per
// row, f32), O += P V with P rounded to bf16 straight from the accumulators.
// At the end out = O / l and lse = (m + log2 l) * ln 2 (natural log, f32).
// Query tiles are scheduled last-first: the causal work grows with the tile.
#include "mma.cuh"

#define FA_BM 64
#define FA_BN 64
#define FA_THREADS 128

template <int D>
__global__ void __launch_bounds__(FA_THREADS)
    flash_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T,
                     int H, int Hk, float sl2) {
    constexpr int LD = D + FA_PAD, NT = FA_BN / 8, DT = D / 8, KS = D / 16;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16 *Qs = (bf16 *)fa_smem, *Ks = Qs + FA_BM * LD, *Vs = Ks + 2 * FA_BN * LD;
    int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / Hk);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, q0 = qt * FA_BM;
    int64_t qld = (int64_t)H * D, kld = (int64_t)Hk * D;
    const bf16 *qb = q + ((int64_t)b * T * H + h) * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int nkt = (q0 + FA_BM - 1) / FA_BN + 1, tmax = (T + FA_BN - 1) / FA_BN;
    if (nkt > tmax) nkt = tmax;
    tile_load<FA_BM, D, FA_THREADS>(Qs, qb, qld, q0, T);
    tile_load<FA_BN, D, FA_THREADS>(Ks, kb, kld, 0, T);
    tile_load<FA_BN, D, FA_THREADS>(Vs, vb, kld, 0, T);
    cp_async_commit();
    uint32_t qf[KS][4];
    float o[DT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    int rowA = q0 + warp * 16 + (lane >> 2);
    for (int kt = 0; kt < nkt; kt++) {
        if (kt + 1 < nkt) {
            int nb = (kt + 1) & 1;
            tile_load<FA_BN, D, FA_THREADS>(Ks + nb * FA_BN * LD, kb, kld, (kt + 1) * FA_BN, T);
            tile_load<FA_BN, D, FA_THREADS>(Vs + nb * FA_BN * LD, vb, kld, (kt + 1) * FA_BN, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kt == 0) {
#pragma unroll
            for (int kk = 0; kk < KS; kk++) frag_a<LD>(qf[kk], Qs, warp * 16, kk * 16);
        }
        const bf16 *Kc = Ks + (kt & 1) * FA_BN * LD, *Vc = Vs + (kt & 1) * FA_BN * LD;
        float s[NT][4];
#pragma unroll
        for (int i = 0; i < NT; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t r[4];
                frag_b_nk<LD>(r, Kc, np * 16, kk * 16);
                mma16816(s[2 * np], qf[kk], r[0], r[1]);
                mma16816(s[2 * np + 1], qf[kk], r[2], r[3]);
            }
        // scale to log2 units, causal mask, running max
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = kt * FA_BN + nt * 8 + (lane & 3) * 2 + (e & 1), row = rowA + (e >> 1) * 8;
                float x = key > row ? -INFINITY : s[nt][e] * sl2;
                s[nt][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            float corr = exp2f(m[r] - mx[r]);  // m = -inf at the first tile: corr 0
            m[r] = mx[r];
            l[r] *= corr;
#pragma unroll
            for (int i = 0; i < DT; i++) {
                o[i][2 * r] *= corr;
                o[i][2 * r + 1] *= corr;
            }
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = exp2f(s[nt][e] - m[e >> 1]);
                s[nt][e] = p;
                l[e >> 1] += p;
            }
        // O += P V
#pragma unroll
        for (int j = 0; j < NT / 2; j++) {
            uint32_t a[4];
            c_to_a(a, s[2 * j], s[2 * j + 1]);
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t r[4];
                frag_b_kn<LD>(r, Vc, j * 16, dp * 16);
                mma16816(o[2 * dp], a, r[0], r[1]);
                mma16816(o[2 * dp + 1], a, r[2], r[3]);
            }
        }
        __syncthreads();  // the next iteration's prefetch overwrites this buffer
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rowA + r * 8;
        if (row >= T) continue;
        float inv = 1.0f / l[r];
        bf16 *orow = out + ((int64_t)b * T + row) * H * D + (int64_t)h * D;
#pragma unroll
        for (int i = 0; i < DT; i++) {
            int col = i * 8 + (lane & 3) * 2;
            *(uint32_t *)(orow + col) = pack_bf16(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
        }
        if ((lane & 3) == 0) lse[((int64_t)b * H + h) * T + row] = (m[r] + log2f(l[r])) * FA_LN2;
    }
}

template <int D>
static cudaError_t flash_fwd_launch(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                    const bf16 *v, const chm_cu_attn *a, cudaStream_t s) {
    constexpr int LD = D + FA_PAD;
    size_t smem = (size_t)(FA_BM + 4 * FA_BN) * LD * sizeof(bf16);
    static bool set = false;
    if (!set) {
        cudaError_t e = cudaFuncSetAttribute(flash_fwd_kernel<D>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) return e;
        set = true;
    }
    dim3 grid((unsigned)((a->T + FA_BM - 1) / FA_BM), (unsigned)a->H, (unsigned)a->B);
    flash_fwd_kernel<D><<<grid, FA_THREADS, smem, s>>>(out, lse, q, k, v, (int)a->T, (int)a->H,
                                                       (int)a->Hk, a->scale * FA_LOG2E);
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_flash_fwd(void *out, float *lse, const void *q, const void *k,
                                        const void *v, const chm_cu_attn *a, cudaStream_t s) {
    if (a->B * a->T * a->H <= 0) return cudaSuccess;
    if (a->D == 64)
        return flash_fwd_launch<64>((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k,
                                    (const bf16 *)v, a, s);
    if (a->D == 128)
        return flash_fwd_launch<128>((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k,
                                     (const bf16 *)v, a, s);
    return cudaErrorInvalidValue;
}
