// attention_flash_fwd_sm90.cu: the flash-attention forward at head dims 64
// and 128 on Hopper warpgroup tensor cores (wgmma, sm_90a only: built for 90a
// alone and launched only on compute capability 9.0; attention_flash.cu's
// mma.sync kernel serves the rest).
//
// One block of two warpgroups per 128 query rows (64 a warpgroup) of one
// (head, batch); key/value tiles of 64 rows, double-buffered by cp.async into
// 128-byte-swizzled shared tiles (wgmma.cuh), one block barrier a tile. Per
// tile and warpgroup: S = Q K^T as wgmma m64n64k16 with both operands read
// from shared memory, the causal mask only on tiles that cross the
// warpgroup's diagonal, online softmax in the log2 domain (as
// attention_flash.cu: running max m in score units, sum l per row, f32), then
// O += P V as wgmma with P rounded to bf16 from the accumulators as the
// register operand and the V tile read N-major (one m64n64 product a 64
// columns of the head dim). A warpgroup skips the tiles wholly after its rows;
// query tiles launch last-first across all heads (mma.cuh: fa_grid). At the
// end out = O / l and lse = (m * scale * log2e + log2 l) * ln 2 (natural log).
#include "mma.cuh"
#include "wgmma.cuh"

#define FW9_THREADS 256
#define FW9_BM 128  // query rows a block
#define FW9_BN 64   // keys a tile
static_assert(FW9_BN == 64 && FW9_BM == 128, "two warpgroups of 64 rows against 64-key tiles");

// Bytes of the Q tile, of one K (or V) buffer, and of the block's shared
// memory, at head dim D.
template <int D> __host__ __device__ constexpr int fw9_qb() { return FW9_BM * D * 2; }
template <int D> __host__ __device__ constexpr int fw9_kb() { return FW9_BN * D * 2; }
template <int D> __host__ __device__ constexpr int fw9_smem_bytes() {
    return fw9_qb<D>() + 4 * fw9_kb<D>() + 1024;
}

// s = Q K^T (64 x 64 f32 of the warpgroup): Q the 64 rows from r0 of the
// swizzled [128][D] tile at qs, K the swizzled [64][D] tile at ks.
template <int D>
__device__ __forceinline__ void fw9_qk(float s[32], uint32_t qs, uint32_t ks, int r0) {
#pragma unroll
    for (int i = 0; i < 32; i++) s[i] = 0.0f;
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        wg_ss_64x64(s, wg_kdesc<FW9_BM>(qs, r0, kk), wg_kdesc<FW9_BN>(ks, 0, kk), kk);
    wg_commit();
    wg_wait<0>();
    wg_pin<32>(s);
}

// Online softmax of one tile for this thread's rows row and row + 8: s
// becomes P (unnormalised), o and l are rescaled to the new running max
// (the rescale skipped when no row of the warp has a new max). MASK: keys
// after a row become -inf. Accumulator layout (wgmma.cuh): s[4j + e] is key
// key0 + 8j + 2t + (e & 1) of row row + 8 (e >> 1), t = lane % 4; o likewise
// with o[32c + 4j + e] at column 64c + 8j + 2t + (e & 1).
template <int D, bool MASK>
__device__ __forceinline__ void fw9_softmax(float s[32], float o[D / 2], float m[2], float l[2],
                                            int row, int key0, float sl2) {
    int t = threadIdx.x & 3;
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            if (MASK && key0 + 8 * j + 2 * t + (e & 1) > row + 8 * (e >> 1))
                s[4 * j + e] = -INFINITY;
            mx[e >> 1] = fmaxf(mx[e >> 1], s[4 * j + e]);
        }
    float corr[2], ms[2];
    bool grew = fa_new_max(mx, m, l, corr, ms, sl2);
    if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
        for (int i = 0; i < D / 2; i++) o[i] *= corr[(i >> 1) & 1];
    }
#pragma unroll
    for (int i = 0; i < 32; i++) {
        float p = fast_exp2(fmaf(s[i], sl2, -ms[(i >> 1) & 1]));
        s[i] = p;
        l[(i >> 1) & 1] += p;
    }
}

// out rows = O / l (bf16), lse = (m sl2 + log2 l) ln 2; rows >= T are not written.
template <int D>
__device__ __forceinline__ void fw9_store(bf16 *ob, float *lb, const float o[D / 2],
                                          const float m[2], const float l[2], int row, int T,
                                          int64_t ld, float sl2) {
    int t = threadIdx.x & 3;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float lr = l[r];
        lr += __shfl_xor_sync(0xffffffffu, lr, 1);
        lr += __shfl_xor_sync(0xffffffffu, lr, 2);
        int rr = row + 8 * r;
        if (rr >= T) continue;
        float inv = 1.0f / lr;
        bf16 *orow = ob + (int64_t)rr * ld;
#pragma unroll
        for (int c = 0; c < D / 64; c++)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float *p = o + 32 * c + 4 * j + 2 * r;
                *(uint32_t *)(orow + 64 * c + 8 * j + 2 * t) = pack_bf16(p[0] * inv, p[1] * inv);
            }
        if (t == 0) lb[rr] = (m[r] * sl2 + log2f(lr)) * FA_LN2;
    }
}

// Two blocks an SM at both head dims (D 64: 117 registers; D 128: 128, with 4
// bytes of spills): at D 128 one block an SM (133 registers) ran the forward
// 0.219 ms against 0.172 at B8 T2048 H8 on an H200 (RESULTS.md, session 27).
template <int D>
__global__ void __launch_bounds__(FW9_THREADS, 2)
    flash_fwd_sm90_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                          int T, int H, int Hk, float sl2) {
    chm_pdl_enter();
    extern __shared__ __align__(1024) unsigned char fw9_raw[];
    constexpr int QB = fw9_qb<D>(), KB = fw9_kb<D>();
    unsigned char *Qs = fw9_raw + ((1024 - (smem_addr(fw9_raw) & 1023)) & 1023);
    unsigned char *Ks = Qs + QB, *Vs = Ks + 2 * KB;
    int qt, h, b;
    fa_block(&qt, &h, &b);
    qt = (T + FW9_BM - 1) / FW9_BM - 1 - qt;  // the last query tile first: it has the most keys
    int g = h / (H / Hk), tid = threadIdx.x, q0 = qt * FW9_BM;
    int r0 = (tid >> 7) * 64;                                        // the warpgroup's first row
    int row = q0 + r0 + ((tid >> 5) & 3) * 16 + ((tid & 31) >> 2);  // this thread's rows: +0, +8
    int64_t qld = (int64_t)H * D, kld = (int64_t)Hk * D;
    const bf16 *qb = q + ((int64_t)b * T * H + h) * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D;
    const bf16 *vb = v + ((int64_t)b * T * Hk + g) * D;
    int nkt = (q0 + FW9_BM - 1) / FW9_BN + 1, tmax = (T + FW9_BN - 1) / FW9_BN;
    if (nkt > tmax) nkt = tmax;
    sw_tile_load<FW9_BM, D, FW9_THREADS>(Qs, qb, qld, q0, T, tid);
    sw_tile_load<FW9_BN, D, FW9_THREADS>(Ks, kb, kld, 0, T, tid);
    sw_tile_load<FW9_BN, D, FW9_THREADS>(Vs, vb, kld, 0, T, tid);
    cp_async_commit();
    float o[D / 2], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.0f;
    uint32_t qs = smem_addr(Qs);
    for (int kt = 0, cb = 0; kt < nkt; kt++, cb ^= 1) {
        cp_async_wait<0>();
        wg_proxy_fence();  // the copies are visible to wgmma after the barrier
        __syncthreads();   // every warp is past its reads of buffer cb ^ 1
        if (kt + 1 < nkt) {
            sw_tile_load<FW9_BN, D, FW9_THREADS>(Ks + (cb ^ 1) * KB, kb, kld, (kt + 1) * FW9_BN,
                                                 T, tid);
            sw_tile_load<FW9_BN, D, FW9_THREADS>(Vs + (cb ^ 1) * KB, vb, kld, (kt + 1) * FW9_BN,
                                                 T, tid);
            cp_async_commit();
        }
        int key0 = kt * FW9_BN;
        if (key0 > q0 + r0 + 63) continue;  // no key of the tile is visible to this warpgroup
        float s[32];
        fw9_qk<D>(s, qs, smem_addr(Ks + cb * KB), r0);  // S = Q K^T
        if (key0 + FW9_BN - 1 > q0 + r0)
            fw9_softmax<D, true>(s, o, m, l, row, key0, sl2);
        else
            fw9_softmax<D, false>(s, o, m, l, row, key0, sl2);
        wg_rs_acc<D>(o, s, smem_addr(Vs + cb * KB));  // O += P V (V read N-major)
    }
    fw9_store<D>(out + ((int64_t)b * T * H + h) * D, lse + ((int64_t)b * H + h) * T, o, m, l, row,
                 T, qld, sl2);
}

template <int D>
static cudaError_t fw9_launch(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                              const chm_cu_attn *a, cudaStream_t s) {
    static bool set = false;
    if (!set) {
        cudaError_t e = chm_allow_smem(flash_fwd_sm90_kernel<D>, fw9_smem_bytes<D>());
        if (e != cudaSuccess) return e;
        set = true;
    }
    unsigned tiles = (unsigned)((a->T + FW9_BM - 1) / FW9_BM);
    chm_launch(flash_fwd_sm90_kernel<D>, fa_grid(tiles, (unsigned)a->H, (unsigned)a->B),
               FW9_THREADS, fw9_smem_bytes<D>(), s, out, lse, q, k, v, (int)a->T, (int)a->H,
               (int)a->Hk, a->scale * FA_LOG2E);
    return cudaGetLastError();
}

cudaError_t chm_cu_flash_fwd_sm90(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                  const bf16 *v, const chm_cu_attn *a, cudaStream_t s,
                                  bool *taken) {
    *taken = false;
    if ((a->D != 64 && a->D != 128) || !wg_device_ok()) return cudaSuccess;
    *taken = true;
    if (a->D == 64) return fw9_launch<64>(out, lse, q, k, v, a, s);
    return fw9_launch<128>(out, lse, q, k, v, a, s);
}
