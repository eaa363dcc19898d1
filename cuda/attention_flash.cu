// attention_flash.cu: flash-attention forward on bf16 tensor cores (sm_80+),
// head dim 64 or 128, causal, grouped-query.
//
// One block of 4 warps per (128 query rows, head, batch); each warp owns 32
// rows (two m16 tiles), so every K or V fragment read from shared memory
// feeds four mma instead of two: with 16 rows per warp the ldmatrix traffic,
// not the tensor cores, set the pace. Key/value tiles of 128 rows for D 64
// (64 for D 128, 32 where shared memory is short) stream through shared
// memory with cp.async, double-buffered (the next tile loads while this one
// computes); 128-key tiles halve the per-tile costs (barriers, the rescale of
// O, the row max shuffles): the D 64 forward ran 5-8% faster than with 64 keys
// and Q held in registers (H100). Per tile: S = Q K^T (mma.sync m16n8k16, Q
// fragments read from shared memory), the causal mask only on tiles that
// cross the diagonal, online softmax in the log2 domain (running max m in
// score units, sum l per row, f32), O += P V with P rounded to bf16 straight
// from the accumulators. A warp skips the tiles wholly above its rows. At the
// end out = O / l and lse = (m * scale * log2e + log2 l) * ln 2 (natural log,
// f32).
// Query tiles are scheduled last-first across all heads (mma.cuh: fa_grid):
// the causal work grows with the tile. On compute capability 9.0 the wgmma
// kernel of attention_flash_fwd_sm90.cu runs instead (where built).
#include "mma.cuh"

#define FA_THREADS 128
#define FA_MT 2  // m16 tiles per warp
#define FA_BM (4 * 16 * FA_MT)

// Online softmax of one tile: s becomes P (unnormalised), o and l are
// rescaled to the new running max. m is kept in raw score units (the scale is
// positive: flash_ok), so P = 2^(s*sl2 - m*sl2) is one FFMA and one EX2 per
// score. The rescale of o is skipped when no row of the warp has a new max
// (corr would be exactly 1). MASK: keys after a row become -inf.
template <int D, int BN, bool MASK>
__device__ __forceinline__ void fwd_softmax(float s[FA_MT][BN / 8][4], float o[FA_MT][D / 8][4],
                                            float m[FA_MT][2], float l[FA_MT][2], int row0,
                                            int key0, float sl2) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < FA_MT; mt++) {
        float mx[2] = {m[mt][0], m[mt][1]};
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (MASK) {
                    int key = key0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                    if (key > row0 + mt * 16 + (e >> 1) * 8) s[mt][nt][e] = -INFINITY;
                }
                mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][nt][e]);
            }
        float corr[2], ms[2];
        bool grew = fa_new_max(mx, m[mt], l[mt], corr, ms, sl2);
        if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
            for (int i = 0; i < D / 8; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) o[mt][i][e] *= corr[e >> 1];
        }
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = fast_exp2(fmaf(s[mt][nt][e], sl2, -ms[e >> 1]));
                s[mt][nt][e] = p;
                l[mt][e >> 1] += p;
            }
    }
}

// out rows = O / l (bf16), lse = (m sl2 + log2 l) ln 2; rows >= T are not written.
template <int D>
__device__ __forceinline__ void fwd_store(bf16 *ob, float *lb, float o[FA_MT][D / 8][4],
                                          float m[FA_MT][2], float l[FA_MT][2], int row0, int T,
                                          int64_t ld, float sl2) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < FA_MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float lr = l[mt][r];
            lr += __shfl_xor_sync(0xffffffffu, lr, 1);
            lr += __shfl_xor_sync(0xffffffffu, lr, 2);
            int row = row0 + mt * 16 + r * 8;
            if (row >= T) continue;
            float inv = 1.0f / lr;
            bf16 *orow = ob + (int64_t)row * ld;
#pragma unroll
            for (int i = 0; i < D / 8; i++) {
                int col = i * 8 + (lane & 3) * 2;
                *(uint32_t *)(orow + col) =
                    pack_bf16(o[mt][i][2 * r] * inv, o[mt][i][2 * r + 1] * inv);
            }
            if ((lane & 3) == 0) lb[row] = (m[mt][r] * sl2 + log2f(lr)) * FA_LN2;
        }
}

template <int D, int BN>
__global__ void __launch_bounds__(FA_THREADS)
    flash_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T,
                     int H, int Hk, float sl2) {
    chm_pdl_enter();
    constexpr int LD = D + FA_PAD;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16 *Qs = (bf16 *)fa_smem, *Ks = Qs + FA_BM * LD, *Vs = Ks + 2 * BN * LD;
    int qt, h, b;
    fa_block(&qt, &h, &b);
    qt = (T + FA_BM - 1) / FA_BM - 1 - qt;  // the last query tile first: it has the most keys
    int g = h / (H / Hk);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, q0 = qt * FA_BM;
    int64_t qld = (int64_t)H * D, kld = (int64_t)Hk * D;
    const bf16 *qb = q + ((int64_t)b * T * H + h) * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int nkt = (q0 + FA_BM - 1) / BN + 1, tmax = (T + BN - 1) / BN;
    if (nkt > tmax) nkt = tmax;
    tile_load<FA_BM, D, FA_THREADS>(Qs, qb, qld, q0, T);
    tile_load<BN, D, FA_THREADS>(Ks, kb, kld, 0, T);
    tile_load<BN, D, FA_THREADS>(Vs, vb, kld, 0, T);
    cp_async_commit();
    float o[FA_MT][D / 8][4], m[FA_MT][2], l[FA_MT][2];
    zero_c<FA_MT, D / 8>(o);
#pragma unroll
    for (int mt = 0; mt < FA_MT; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }
    int wrow = warp * 16 * FA_MT, w0 = q0 + wrow;  // this warp's first row
    int row0 = w0 + (lane >> 2);                    // this thread's rows: row0 + 16 mt + 8 r
    for (int kt = 0, cb = 0; kt < nkt; kt++) {
        int nb = next_buf<2>(cb);
        kv_next<BN, D, FA_THREADS>(Ks, Vs, kb, vb, kld, kt, nkt, T, nb);
        __syncthreads();
        int key0 = kt * BN;
        if (key0 <= w0 + 16 * FA_MT - 1) {  // some key of the tile is visible to this warp
            const bf16 *Kc = Ks + cb * BN * LD, *Vc = Vs + cb * BN * LD;
            float s[FA_MT][BN / 8][4];
            mma_nt<D, FA_MT, BN>(s, Qs, Kc, wrow);  // S = Q K^T
            if (key0 + BN - 1 > w0)
                fwd_softmax<D, BN, true>(s, o, m, l, row0, key0, sl2);
            else
                fwd_softmax<D, BN, false>(s, o, m, l, row0, key0, sl2);
            mma_c_kn<D, FA_MT, BN>(o, s, Vc);
        }
        __syncthreads();  // the next iteration's prefetch overwrites this buffer
        cb = nb;
    }
    fwd_store<D>(out + ((int64_t)b * T * H + h) * D, lse + ((int64_t)b * H + h) * T, o, m, l,
                 row0, T, qld, sl2);
}

template <int D, int BN>
static cudaError_t flash_fwd_launch(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                    const bf16 *v, const chm_cu_attn *a, cudaStream_t s) {
    constexpr int LD = D + FA_PAD;
    size_t smem = (size_t)(FA_BM + 4 * BN) * LD * sizeof(bf16);
    static bool set = false;
    if (!set) {
        cudaError_t e = cudaFuncSetAttribute(flash_fwd_kernel<D, BN>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) return e;
        set = true;
    }
    dim3 grid = fa_grid((unsigned)((a->T + FA_BM - 1) / FA_BM), (unsigned)a->H, (unsigned)a->B);
    chm_launch(flash_fwd_kernel<D, BN>, grid, FA_THREADS, smem, s, out, lse, q, k, v, (int)a->T,
               (int)a->H, (int)a->Hk, a->scale * FA_LOG2E);
    return cudaGetLastError();
}

// Key tiles of 128 rows for D 64 (92 KB of shared memory) and 64 for D 128
// (more would spill); D 128 needs 104 KB of shared memory that way: devices
// that allow less (sm_86/sm_89) take key tiles of 32 rows.
extern "C" cudaError_t chm_cu_flash_fwd(void *out, float *lse, const void *q, const void *k,
                                        const void *v, const chm_cu_attn *a, cudaStream_t s) {
    if (a->B * a->T * a->H <= 0) return cudaSuccess;
    bf16 *o = (bf16 *)out;
    const bf16 *qq = (const bf16 *)q, *kk = (const bf16 *)k, *vv = (const bf16 *)v;
#ifdef CHIMERA_HAVE_SM90A
    if (a->wgmma & CHM_CU_WGMMA_FWD) {
        bool taken;
        cudaError_t e = chm_cu_flash_fwd_sm90(o, lse, qq, kk, vv, a, s, &taken);
        if (e != cudaSuccess || taken) return e;
    }
#endif
    if (a->D == 64) return flash_fwd_launch<64, 128>(o, lse, qq, kk, vv, a, s);
    if (a->D != 128) return cudaErrorInvalidValue;
    if (fa_smem_max() < (size_t)(FA_BM + 4 * 64) * (128 + FA_PAD) * 2)
        return flash_fwd_launch<128, 32>(o, lse, qq, kk, vv, a, s);
    return flash_fwd_launch<128, 64>(o, lse, qq, kk, vv, a, s);
}
