// wgmma.cuh: the Hopper (sm_90a) warpgroup tensor-core primitives of the
// flash-attention backward, as inline PTX: shared-memory matrix descriptors
// for 128-byte-swizzled tiles, wgmma.mma_async m64n64k16 bf16 -> f32 with
// both operands in shared memory (K-major) or A in registers and B N-major
// in shared memory, the wgmma fence/commit/wait and the generic -> async
// proxy fence; and the cp.async copy of row tiles into the swizzled layout.
// Include only from translation units compiled for sm_90a (the host picks
// these kernels only on compute capability 9.0).
//
// Layout facts (PTX ISA, "Matrix Descriptor" and "Shared Memory Matrix
// Layout" of wgmma; checked on an H100 by a throwaway self-test against a host
// product: m64n64k16 with both operands K-major over K 128, and with A in
// registers and B N-major over K 64; max |err| 1e-6 against the f64 sums):
// - descriptor bits 0-13 start address >> 4, 16-29 leading byte offset >> 4,
//   32-45 stride byte offset >> 4, 49-51 base offset (0: atoms 1024-aligned),
//   62-63 swizzle mode (1 = 128 bytes);
// - a 128B-swizzle atom is 8 rows of 128 bytes (1024 bytes, 1024-aligned);
//   the 16-byte chunk c of row r sits at chunk c ^ (r & 7);
// - K-major (S = Q K^T: rows are M or N, 64 bf16 of K a row): the stride
//   byte offset is the step between 8-row groups (1024), the leading offset
//   is unused; the k16 step j starts 32*j bytes into the row;
// - N-major B (dQ += dS K with K stored [key][d]: rows are K, 64 bf16 of N a
//   row): the stride byte offset is the step between 8-row groups of K (1024)
//   and the leading offset the step between 64-column atoms of N (the
//   self-test: leading 8192 / stride 1024 and 1024 / 1024 right, 1024 / 8192
//   wrong); with N = 64 (one atom wide) the leading offset is unused, and the
//   kernels pass 1024 for both, as checked;
// - accumulators of m64nN f32 per warp w of the warpgroup: rows 16w + g and
//   16w + g + 8 (g = lane / 4), d[4j..4j+3] the mma.sync m16n8 C layout of
//   columns 8j..8j+7; the A fragment in registers is mma.sync's m16n8k16 A
//   layout of the warp's 16 rows.
#ifndef CHIMERA_CUDA_WGMMA_CUH
#define CHIMERA_CUDA_WGMMA_CUH

#include "mma.cuh"

#define WG_SW 128  // bytes of a swizzled row (64 bf16)

// Whether this device runs sm_90a kernels: compute capability 9.0 exactly
// (sm_90a code does not run on later architectures).
static inline bool wg_device_ok() {
    int dev = 0, major = 0, minor = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
           major == 9 && minor == 0;
}

// A descriptor of a 128B-swizzled matrix at shared address addr.
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) |
           ((uint64_t)(sbo >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wg_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// This thread's generic-proxy writes to shared memory (cp.async, st.shared)
// become visible to wgmma's operand reads (the async proxy); a barrier after
// it publishes them to the warpgroups.
__device__ __forceinline__ void wg_proxy_fence() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Pin registers after a wait: the compiler may not move their uses above it.
template <int N> __device__ __forceinline__ void wg_pin(float *r) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}

#define WG_D32(d)                                                                               \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),        \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), \
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),           \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),           \
        "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define WG_R32                                                                                   \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24," \
    "%25,%26,%27,%28,%29,%30,%31}"

// d (64x64 f32, 32 a thread) = (acc ? d : 0) + A B^T: A 64x16 and B 64x16,
// both K-major in shared memory (descriptors da, db).
__device__ __forceinline__ void wg_ss_64x64(float *d, uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_R32
                 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : WG_D32(d)
                 : "l"(da), "l"(db), "r"(acc));
}

// d (64x64 f32) = (acc ? d : 0) + A B: A 64x16 bf16 in registers (a[4],
// mma.sync's A fragment of the warp's 16 rows), B 16x64 N-major in shared
// memory (db).
__device__ __forceinline__ void wg_rs_64x64_tb(float *d, const uint32_t *a, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_R32
                 ", {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
                 : WG_D32(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}

// The K-major descriptor of k16 step kk of a swizzled [ROWS][D] tile at
// shared address base, from row r0 (a multiple of 8).
template <int ROWS> __device__ __forceinline__ uint64_t wg_kdesc(uint32_t base, int r0, int kk) {
    return wg_desc(base + (kk >> 2) * ROWS * WG_SW + r0 * WG_SW + (kk & 3) * 32, 16, 1024);
}

// The two products every backward tile starts with, for the warpgroup:
// c1 = A1 B1^T and c2 = A2 B2^T (64x64 f32 each): A1, A2 the 64 rows from row
// r0 of swizzled [AROWS][D] tiles at a1, a2; B1, B2 the 64 rows of swizzled
// [64][D] tiles at b1, b2. dQ: S = Q K^T, dP = dO V^T; dK/dV: S^T = K Q^T,
// dP^T = V dO^T.
template <int D, int AROWS>
__device__ __forceinline__ void wg_two_nt(float c1[32], float c2[32], uint32_t a1, uint32_t a2,
                                          uint32_t b1, uint32_t b2, int r0) {
#pragma unroll
    for (int i = 0; i < 32; i++) c1[i] = c2[i] = 0.0f;
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        wg_ss_64x64(c1, wg_kdesc<AROWS>(a1, r0, kk), wg_kdesc<64>(b1, 0, kk), kk);
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        wg_ss_64x64(c2, wg_kdesc<AROWS>(a2, r0, kk), wg_kdesc<64>(b2, 0, kk), kk);
    wg_commit();
    wg_wait<0>();
    wg_pin<32>(c1);
    wg_pin<32>(c2);
}

// acc (64 x D f32 of the warpgroup) += S B: S the 64 x 64 accumulators s (a
// previous product, as P or dS) rounded to bf16 as the register operand, B
// the swizzled [64][D] tile at b read N-major (an m64n64 product a 64 columns
// of D, four k16 steps). The forward's O += P V and the dQ kernel's dQ += dS K.
template <int D>
__device__ __forceinline__ void wg_rs_acc(float acc[D / 2], const float s[32], uint32_t b) {
    uint32_t a[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++) c_to_a(a[j], &s[8 * j], &s[8 * j + 4]);
    wg_fence();
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t bj = b + j * 16 * WG_SW;
#pragma unroll
        for (int c = 0; c < D / 64; c++)  // column block c of the [64][D] tile
            wg_rs_64x64_tb(acc + 32 * c, a[j], wg_desc(bj + c * 64 * WG_SW, 1024, 1024), 1);
    }
    wg_commit();
    wg_wait<0>();
    wg_pin<D / 2>(acc);
}

// Byte offset of 16-byte chunk ch (0..D/8-1) of row r in a swizzled tile of
// ROWS rows: column block ch/8 ([ROWS][128 bytes] each), chunk ch%8 ^ (r&7).
template <int ROWS>
__device__ __forceinline__ uint32_t sw_off(int r, int ch) {
    return (uint32_t)((ch >> 3) * ROWS * WG_SW + r * WG_SW + (((ch & 7) ^ (r & 7)) << 4));
}

// cp.async rows [r0, r0+ROWS) of a bf16 matrix (D columns, row stride ld)
// into a swizzled tile at sm (1024-aligned); rows >= nrows become zeros.
// Each thread owns one chunk column and rows r + j*RSTEP (RSTEP a multiple
// of 8, so its swizzle is the same for every j).
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void sw_tile_load(unsigned char *sm, const bf16 *g, int64_t ld, int r0,
                                             int nrows, int tid) {
    constexpr int CH = D / 8, RSTEP = THREADS / CH, N = ROWS / RSTEP;
    static_assert(THREADS % CH == 0 && ROWS % RSTEP == 0 && RSTEP % 8 == 0, "sw_tile_load");
    int r = tid / CH, ch = tid % CH;
    const bf16 *src = g + (int64_t)(r0 + r) * ld + ch * 8;
    unsigned char *dst = sm + sw_off<ROWS>(r, ch);
#pragma unroll
    for (int j = 0; j < N; j++) {
        bool ok = r0 + r + j * RSTEP < nrows;
        cp_async16(dst + j * RSTEP * WG_SW, ok ? src + (int64_t)j * RSTEP * ld : g, ok);
    }
}

#endif
