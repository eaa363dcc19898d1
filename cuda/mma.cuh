// mma.cuh: the sm_80 tensor-core and async-copy primitives of the flash
// kernels, as inline PTX: cp.async (16 bytes, zero-filling), ldmatrix (plain
// and transposed), mma.sync m16n8k16 bf16 -> f32 and named barriers; the
// tile copies and products built on them, and the launch order (fa_grid).
// Fragment layouts follow the PTX ISA: lane = 4*g + t; A (16x16) rows g, g+8
// and columns 2t, 2t+1 (+8); B (16x8) rows 2t, 2t+1 (+8) of column g; C
// (16x8) rows g, g+8, columns 2t, 2t+1.
#ifndef CHIMERA_CUDA_MMA_CUH
#define CHIMERA_CUDA_MMA_CUH

#include "common.cuh"

// The primitives need sm_80 (cp.async, bf16 mma.sync); compiled for an older
// arch they trap, and the host never launches them there (the backend needs sm_80).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define FA_SM80 1
#else
#define FA_SM80 0
#endif

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// 16 bytes global -> shared; src_ok false writes zeros and reads nothing.
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool src_ok) {
#if FA_SM80
    unsigned n = src_ok ? 16u : 0u;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(n));
#else
    (void)dst, (void)src, (void)src_ok;
    __trap();
#endif
}
// 4 bytes global -> shared (one f32 of a row statistic); src_ok false writes zero.
__device__ __forceinline__ void cp_async4(void *dst, const void *src, bool src_ok) {
#if FA_SM80
    unsigned n = src_ok ? 4u : 0u;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(n));
#else
    (void)dst, (void)src, (void)src_ok;
    __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if FA_SM80
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if FA_SM80
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// c += a * b (16x16 bf16 times 16x8 bf16, f32 accumulators).
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
#if FA_SM80
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    (void)c, (void)a, (void)b0, (void)b1;
    __trap();
#endif
}

// Named barrier id (1..15; 0 is __syncthreads) over n threads (a multiple of
// 32): a producer warp arrives without waiting, its consumer waits; the
// producer's shared-memory writes before the arrive are visible to the
// consumer after its wait.
__device__ __forceinline__ void bar_arrive(int id, int n) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void bar_wait(int id, int n) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

// 2^x with one MUFU.EX2: denormal results flush to zero and -inf gives 0
// (exp2f without fast-math wraps the MUFU op in denormal scaling, four more
// instructions per score, and the softmax is issue-bound next to mma.sync).
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two f32 -> one register of two bf16 (lo in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

#define FA_PAD 8  // bf16 elements of padding per shared row: conflict-free ldmatrix

// cp.async rows [r0, r0+ROWS) of a bf16 matrix (D columns, row stride ld) into
// a shared tile [ROWS][D+FA_PAD]; rows >= nrows become zeros. Each thread owns
// fixed 16-byte chunks (column ch, rows r + j*RSTEP), so the unrolled loop is a
// compare, an address and a copy per chunk (a strided loop of unknown trip
// count cost ~40 instructions per chunk: 29-31% of the forward's and the dK/dV
// kernel's instructions per tile on an H100, ncu).
// tid: this thread's index among the THREADS that share the copy (a block's
// threadIdx.x, or a lane when one warp copies rows of its own).
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void tile_load(bf16 *sm, const bf16 *g, int64_t ld, int r0, int nrows,
                                          int tid) {
    constexpr int CH = D / 8, RSTEP = THREADS / CH, N = ROWS / RSTEP;
    static_assert(THREADS % CH == 0 && ROWS % RSTEP == 0, "tile_load: whole passes of the block");
    int r = tid / CH, ch = tid % CH;
    const bf16 *src = g + (int64_t)(r0 + r) * ld + ch * 8;
    bf16 *dst = sm + r * (D + FA_PAD) + ch * 8;
#pragma unroll
    for (int j = 0; j < N; j++) {
        bool ok = r0 + r + j * RSTEP < nrows;
        cp_async16(dst + j * RSTEP * (D + FA_PAD), ok ? src + (int64_t)j * RSTEP * ld : g, ok);
    }
}
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void tile_load(bf16 *sm, const bf16 *g, int64_t ld, int r0, int nrows) {
    tile_load<ROWS, D, THREADS>(sm, g, ld, r0, nrows, (int)threadIdx.x);
}

// Rows [r0, r0+ROWS) of a shared tile [ROWS][D+FA_PAD] -> a bf16 matrix (D
// columns, row stride ld) in 16-byte chunks; rows >= nrows are not written.
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void tile_store(bf16 *g, int64_t ld, const bf16 *sm, int r0, int nrows,
                                           int tid) {
    constexpr int CH = D / 8, RSTEP = THREADS / CH, N = ROWS / RSTEP;
    static_assert(THREADS % CH == 0 && ROWS % RSTEP == 0, "tile_store: whole passes of the block");
    int r = tid / CH, ch = tid % CH;
#pragma unroll
    for (int j = 0; j < N; j++) {
        int row = r + j * RSTEP;
        if (r0 + row < nrows)
            *(uint4 *)(g + (int64_t)(r0 + row) * ld + ch * 8) =
                *(const uint4 *)(sm + row * (D + FA_PAD) + ch * 8);
    }
}
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void tile_store(bf16 *g, int64_t ld, const bf16 *sm, int r0, int nrows) {
    tile_store<ROWS, D, THREADS>(g, ld, sm, r0, nrows, (int)threadIdx.x);
}

// Double-buffered key/value tiles of BN rows: queue tile kt+1 (when there is
// one) into buffer nb (the other one), then wait for tile kt; the caller's
// barrier publishes it, and a second barrier after the tile keeps the next
// prefetch off the buffer still being read.
template <int BN, int D, int THREADS>
__device__ __forceinline__ void kv_next(bf16 *Ks, bf16 *Vs, const bf16 *kb, const bf16 *vb,
                                        int64_t kld, int kt, int nkt, int T, int nb) {
    if (kt + 1 < nkt) {
        tile_load<BN, D, THREADS>(Ks + nb * BN * (D + FA_PAD), kb, kld, (kt + 1) * BN, T);
        tile_load<BN, D, THREADS>(Vs + nb * BN * (D + FA_PAD), vb, kld, (kt + 1) * BN, T);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
}

// Double-buffered key/value tiles of BN rows behind one barrier a tile: wait
// for tile kt (the only group in flight) and pass the block barrier, which
// publishes it and which every warp reaches only after its reads of tile
// kt-1, then queue tile kt+1 (when there is one) into buffer nb (kt-1's), to
// load while tile kt computes. kv_next's second barrier a tile is gone: the
// dQ backward kernel ran 1-2% faster on an H100 (D 64 and 128).
template <int BN, int D, int THREADS>
__device__ __forceinline__ void kv_next_1bar(bf16 *Ks, bf16 *Vs, const bf16 *kb, const bf16 *vb,
                                             int64_t kld, int kt, int nkt, int T, int nb) {
    cp_async_wait<0>();
    __syncthreads();
    if (kt + 1 < nkt) {
        tile_load<BN, D, THREADS>(Ks + nb * BN * (D + FA_PAD), kb, kld, (kt + 1) * BN, T);
        tile_load<BN, D, THREADS>(Vs + nb * BN * (D + FA_PAD), vb, kld, (kt + 1) * BN, T);
        cp_async_commit();
    }
}

// The buffer after b of NS (round robin).
template <int NS> __device__ __forceinline__ int next_buf(int b) { return b + 1 == NS ? 0 : b + 1; }

// A fragment (16 rows x 16 columns at column k0) of a shared row-major tile.
template <int LD>
__device__ __forceinline__ void frag_a(uint32_t *r, const bf16 *tile, int row0, int k0) {
    int lane = threadIdx.x & 31;
    ldsm_x4(r, tile + (row0 + (lane & 15)) * LD + k0 + (lane >> 4) * 8);
}

// B fragments of two n-tiles (rows n0..n0+15 of a tile stored [n][k]) at column k0:
// r[0], r[1] for n-tile n0, r[2], r[3] for n-tile n0+8.
template <int LD>
__device__ __forceinline__ void frag_b_nk(uint32_t *r, const bf16 *tile, int n0, int k0) {
    int lane = threadIdx.x & 31;
    ldsm_x4(r, tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * LD + k0 + ((lane >> 3) & 1) * 8);
}

// B fragments of two n-tiles (columns n0..n0+15 of a tile stored [k][n]) for k rows k0..k0+15.
template <int LD>
__device__ __forceinline__ void frag_b_kn(uint32_t *r, const bf16 *tile, int k0, int n0) {
    int lane = threadIdx.x & 31;
    ldsm_x4_t(r, tile + (k0 + (lane & 15)) * LD + n0 + (lane >> 4) * 8);
}

// The A fragment of k-step j from C accumulators c[2j], c[2j+1] (16 x 16 of f32).
__device__ __forceinline__ void c_to_a(uint32_t *a, const float *c0, const float *c1) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// Zero M x N C fragments (16x8 f32 tiles) of accumulators.
template <int M, int N> __device__ __forceinline__ void zero_c(float c[M][N][4]) {
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int n = 0; n < N; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) c[m][n][e] = 0.0f;
}

// c (MT x N/8 tiles of 16x8) = A B^T for a warp's MT m16 tiles of rows (from
// row0 of A) against the N rows of B, both [rows][D] tiles in shared memory.
template <int D, int MT, int N>
__device__ __forceinline__ void mma_nt(float c[MT][N / 8][4], const bf16 *A, const bf16 *B,
                                       int row0) {
    constexpr int LD = D + FA_PAD;
    zero_c<MT, N / 8>(c);
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) frag_a<LD>(a[mt], A, row0 + mt * 16, kk * 16);
#pragma unroll
        for (int np = 0; np < N / 16; np++) {
            uint32_t r[4];
            frag_b_nk<LD>(r, B, np * 16, kk * 16);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(c[mt][2 * np], a[mt], r[0], r[1]);
                mma16816(c[mt][2 * np + 1], a[mt], r[2], r[3]);
            }
        }
    }
}

// acc (MT x D/8 tiles of 16x8) += A B for a warp's MT m16 row tiles: A (16 x N
// per m16 tile) is the f32 accumulators c rounded to bf16, B a [N][D] tile in
// shared memory. The forward's O += P V and the backward's dQ += dS K.
template <int D, int MT, int N>
__device__ __forceinline__ void mma_c_kn(float acc[MT][D / 8][4], const float c[MT][N / 8][4],
                                         const bf16 *Bs) {
    constexpr int LD = D + FA_PAD;
#pragma unroll
    for (int j = 0; j < N / 16; j++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) c_to_a(a[mt], c[mt][2 * j], c[mt][2 * j + 1]);
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t r[4];
            frag_b_kn<LD>(r, Bs, j * 16, dp * 16);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816(acc[mt][2 * dp], a[mt], r[0], r[1]);
                mma16816(acc[mt][2 * dp + 1], a[mt], r[2], r[3]);
            }
        }
    }
}

// Largest dynamic shared memory a block may opt into on the current device
// (sm_86/sm_89: 99 KB, sm_80: 163 KB, sm_90: 227 KB).
static inline size_t fa_smem_max() {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return 48 * 1024;
    return (size_t)v;
}

// Launch order of the flash kernels: grid (heads, B, tiles), the tile index
// slowest, so that the blocks with the most causal work start first across
// all heads and the last wave holds the shortest (list scheduling). With the
// tile fastest, grid (tiles, heads, B), each head's longest blocks started
// late and SMs idled at the end (ncu, D 128 dK/dV: active 89% of the time,
// 98% now); on an H100 the forward took 10-24% and the backward 10-15%
// longer. The tile count must fit grid.z (65535: chm_cu_flash_ok).
static inline dim3 fa_grid(unsigned tiles, unsigned heads, unsigned batch) {
    return dim3(heads, batch, tiles);
}
// This block's tile (0 = the first launched), head and batch.
__device__ __forceinline__ void fa_block(int *tile, int *head, int *batch) {
    *tile = blockIdx.z, *head = blockIdx.x, *batch = blockIdx.y;
}

#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f

// The online softmax's step for a thread's two rows: mx holds the rows' maxima over this
// thread's scores of the tile (and the old m); reduced over the row's quad of lanes, they
// become the running max m (raw score units), l is rescaled, corr is the factor the old O
// takes and ms = m * sl2. Returns whether a row's max grew (corr < 1 somewhere).
// mx is finite: key 0 of the first tile is visible to every row, and a masked tile only
// follows it. m = -inf at the first tile: corr 0.
__device__ __forceinline__ bool fa_new_max(float mx[2], float m[2], float l[2], float corr[2],
                                           float ms[2], float sl2) {
    bool grew = false;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        grew |= mx[r] > m[r];
        corr[r] = fast_exp2((m[r] - mx[r]) * sl2);
        m[r] = mx[r];
        ms[r] = mx[r] * sl2;
        l[r] *= corr[r];
    }
    return grew;
}

// The sm_90a (wgmma) forward at D 64 and 128 (attention_flash_fwd_sm90.cu, built
// only where CMake defines CHIMERA_HAVE_SM90A): *taken false when it does not
// apply (another head dim, or a device other than compute capability 9.0).
cudaError_t chm_cu_flash_fwd_sm90(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                  const bf16 *v, const chm_cu_attn *a, cudaStream_t s,
                                  bool *taken);

#endif
