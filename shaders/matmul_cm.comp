/*
 * matmul_cm.comp: C = alpha*op(A)op(B) + beta*C (+ bias[N] per row) for f16
 * and bf16 tensors on cooperative matrices (GL_NV_cooperative_matrix: the
 * tensor cores of NVIDIA GPUs), f16 x f16 products summed in f32.
 * matmul.c runs it when the device lists 16x16x16 (or else 16x8x16) f16 ->
 * f32 subgroup matrices; matmul.comp's _f16/_bf16 variants are the plain
 * path elsewhere.
 *
 * Shapes, strides, flags and the grouped variant are matmul.comp's (same
 * push block, same bindings): op(A) [M,K] (A stored [K,M] when trans_a),
 * op(B) [K,N] (B stored [N,K] when trans_b), C [M,N] per batch entry.
 *
 * One workgroup computes a BM x BN tile of C with (BM/WM)*(BN/WN)
 * subgroups ("warps"), each owning a WM x WN block of 16 x FRAG_N f32
 * accumulator fragments (A fragments 16x16, B fragments 16 x FRAG_N). The K loop walks BK-deep slices through two shared-memory
 * stages: while the warps multiply slice k out of one stage, the next
 * slice's global loads are in flight in registers, then stored into the
 * other stage; one barrier per slice. A slice is staged exactly as it is
 * stored (its contiguous dim fastest, rows padded by 8 elements against
 * bank conflicts), so global loads are coalesced for every transpose, and
 * the fragment loads read it row- or column-major as the transpose says.
 * Shared memory holds uvec4 words (8 f16 each): cooperative-matrix loads
 * then count offsets and strides in uvec4 units (GL_NV_cooperative_matrix
 * allows uvec4 arrays for any component type).
 *
 * Staging converts to f16: f16 inputs are copied as they are; bf16 inputs
 * are converted to f16 (OpFConvert, round to nearest), which is exact for
 * |x| in [6.1e-5, 65504] (f16 has 3 more mantissa bits than bf16) and loses
 * bf16's range outside it: |x| > 65504 becomes inf, and |x| < 6.1e-5 keeps
 * at most f16's subnormal precision (absolute error <= 3e-8; a driver that
 * flushes f16 subnormals makes them 0). That is the range caveat of the
 * bf16 cooperative-matrix path;
 * CHIMERA_VULKAN_DISABLE=coopmat selects the plain path, which keeps bf16's
 * full range. Edges: a slice that lies partly outside the live rows/terms,
 * or whose operand is not 8-element aligned, is gathered element by
 * element with zeros outside; whole aligned slices move as uvec4 words.
 *
 * Epilogue: each warp stores one accumulator fragment at a time into its
 * own 16 x FRAG_N f32 scratch in shared memory (the stages are no longer needed),
 * and its invocations apply alpha, beta*C (not read when beta = 0) and the
 * bias in f32 and round each element of C once to the tensor's dtype.
 * Every element of C comes from one fixed order of additions: deterministic.
 *
 * Variants (-D): DT_F16 or DT_BF16 (the dtype of A, B, C and bias), GROUPED,
 * and CM_EMULATE: the same shader with the four cooperative-matrix
 * operations done in plain GLSL (cm_emulate.glsl), so that devices without
 * them (lavapipe in CI) run and test every index of this file; matmul.c
 * uses it only when asked to (CHIMERA_VULKAN_COOPMAT_EMULATE=1, tests).
 * Spec constants: 0 workgroup size = warps * subgroup size, 1 subgroup size,
 * 2 BM, 3 BN, 4 BK, 5 WM, 6 WN, 7 FRAG_N (16 or 8). matmul.c checks the
 * limits: WM a multiple of 16 (at most FMAX fragments), WN a multiple of
 * FRAG_N (at most NMAX fragments), BK a multiple of 16, each operand slice
 * at most LMAX uvec4 words per invocation, both stages in shared memory.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#ifndef CM_EMULATE
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#endif
#include "common.glsl"
#include "half.glsl"

layout(constant_id = 2) const uint BM = 128;
layout(constant_id = 3) const uint BN = 128;
layout(constant_id = 4) const uint BK = 32;
layout(constant_id = 5) const uint WM = 64;
layout(constant_id = 6) const uint WN = 32;
layout(constant_id = 7) const uint FRAG_N = 16;
/* Literal bounds for register arrays (spec-constant-sized ones may be kept in local memory). */
#ifdef CM_EMULATE
/* Emulated accumulators are large: fewer, and loops left rolled, keep lavapipe's compile short. */
#define FMAX 2
#define NMAX 4
#define UNROLL
#else
#define FMAX 4 /* fragments per warp along M */
#define NMAX 8 /* fragments per warp along N */
#define UNROLL [[unroll]]
#endif
#define LMAX 4 /* uvec4 words per invocation per operand slice */

/* The 16-bit tensors, element by element and (same bindings) 8 elements at a time. */
layout(binding = 0) readonly buffer A_ { uint16_t a[]; };
layout(binding = 0) readonly buffer A4_ { uvec4 a4[]; };
layout(binding = 1) readonly buffer B_ { uint16_t b[]; };
layout(binding = 1) readonly buffer B4_ { uvec4 b4[]; };
#ifdef GROUPED
layout(binding = 2) readonly buffer Counts { int counts[]; };
#define CHM_STATUS_BINDING 4
#include "status.glsl"
#else
layout(binding = 2) readonly buffer Bias { uint16_t bias[]; };
#endif
layout(binding = 3) buffer C_ { uint16_t c[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint M, N, K, lda, ldb;
    uint sa, sb, sc;          /* batch strides in elements */
    uint batch, tiles_m, tiles_n;
    uint flags;               /* 1 trans_a, 2 trans_b, 4 bias, 8 beta is 0 */
    float alpha, beta;
} p;

/*
 * Loads and stores of C and bias (exact widening; C rounded once, integer
 * conversions of half.glsl), and the f16 bits of staged values: f16 as it
 * is, bf16 widened to f32 (exact) and converted by OpFConvert (round to
 * nearest; one instruction, where the hot loop cannot afford half.glsl's).
 */
#ifdef DT_BF16
float ld16(uint h) { return chm_bf16_to_f32(h); }
uint st16(float v) { return chm_f32_to_bf16(v); }
/* Two bf16 values in one word -> the same two as f16. */
uint word_f16(uint w) {
    vec2 v = vec2(uintBitsToFloat(w << 16), uintBitsToFloat(w & 0xffff0000u));
    return packFloat2x16(f16vec2(v));
}
uint to_f16(uint h) { return word_f16(h); } /* h < 65536: the high half stays 0 */
#else
float ld16(uint h) { return chm_f16_to_f32(h); }
uint st16(float v) { return chm_f32_to_f16(v); }
uint word_f16(uint w) { return w; }
uint to_f16(uint h) { return h; }
#endif

uvec4 vec_f16(uvec4 v) { return uvec4(word_f16(v.x), word_f16(v.y), word_f16(v.z), word_f16(v.w)); }

/*
 * Slice geometry in uvec4 words. A slice of A is BM x BK: stored [M,K] it is
 * staged as BM rows of BK (k fastest), stored [K,M] (trans_a) as BK rows of
 * BM (m fastest). Likewise B: BK rows of BN, or BN rows of BK (trans_b).
 * Each staged row has 8 padding elements (one word).
 */
const uint SK = BK / 8u + 1u;               /* words per staged row of BK elements */
const uint SAM = BM / 8u + 1u;              /* ... of BM elements (trans_a) */
const uint SBN = BN / 8u + 1u;              /* ... of BN elements (B not transposed) */
const uint A_WORDS = BM * SK > BK * SAM ? BM * SK : BK * SAM;
const uint B_WORDS = BN * SK > BK * SBN ? BN * SK : BK * SBN;
shared uvec4 As[2u * A_WORDS];
shared uvec4 Bs[2u * B_WORDS];

/*
 * The cooperative-matrix operations: 16x16 f16 fragments of A (from As),
 * 16 x FRAG_N of B (from Bs), 16 x FRAG_N f32 accumulators, and the store
 * of an accumulator to As.
 * Offsets and strides count uvec4 words; `col` must be a literal.
 */
#ifdef CM_EMULATE
#include "cm_emulate.glsl"
#else
#define CM_IN_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CM_IN_B fcoopmatNV<16, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ZERO CM_ACC(0.0)
#define CM_LOAD_A(f, elem, stride, col) coopMatLoadNV(f, As, elem, stride, col)
#define CM_LOAD_B(f, elem, stride, col) coopMatLoadNV(f, Bs, elem, stride, col)
#define CM_MULADD(x, y, acc) coopMatMulAddNV(x, y, acc)
#define CM_STORE(acc, elem, stride) coopMatStoreNV(acc, As, elem, stride, false)
#endif

/* Where one operand slice comes from: rows x cols of the stored layout (cols contiguous). */
struct slice {
    uint base;        /* element index of the slice's (0, 0) in the buffer */
    uint ld;          /* stored row length */
    uint rows, cols;  /* slice shape (cols a multiple of 8) */
    uint rlive, clive;/* live rows and columns left from the slice's corner (may be < shape) */
    bool fast;        /* whole slice live and 8-element aligned: load words */
};

slice slice_make(uint base, uint ld, uint r0, uint c0, uint rows, uint cols, uint rlim,
                 uint clim) {
    slice s;
    s.base = base + r0 * ld + c0;
    s.ld = ld;
    s.rows = rows;
    s.cols = cols;
    s.rlive = rlim > r0 ? rlim - r0 : 0u;
    s.clive = clim > c0 ? clim - c0 : 0u;
    s.fast = s.rlive >= rows && s.clive >= cols && (ld % 8u) == 0u && (s.base % 8u) == 0u;
    return s;
}

/* Word w of a slice of A (or B): 8 elements as f16, zeros outside the live part. */
#define GATHER(NAME, BUF, BUF4)                                                      \
    uvec4 NAME(slice s, uint w) {                                                    \
        uint r = w / (s.cols / 8u), c = (w % (s.cols / 8u)) * 8u;                    \
        uint i = s.base + r * s.ld + c;                                              \
        if (s.fast) return vec_f16(BUF4[i / 8u]);                                    \
        uint h[8];                                                                   \
        UNROLL for (uint j = 0u; j < 8u; j++)                                        \
            h[j] = r < s.rlive && c + j < s.clive ? to_f16(uint(BUF[i + j])) : 0u;   \
        return uvec4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),  \
                     h[6] | (h[7] << 16));                                           \
    }
GATHER(gather_a, a, a4)
GATHER(gather_b, b, b4)

/* Staged position (in words) of slice word w. */
uint staged(slice s, uint w) {
    uint per_row = s.cols / 8u;
    return (w / per_row) * (per_row + 1u) + w % per_row;
}

void main() {
    uint tiles = p.tiles_m * p.tiles_n, g = chm_group();
    uint bat = g / tiles, t = g % tiles;
    if (bat >= p.batch) return; /* whole workgroups only */
    uint m0 = (t / p.tiles_n) * BM, n0 = (t % p.tiles_n) * BN;
    bool ta = (p.flags & 1u) != 0u, tb = (p.flags & 2u) != 0u;
    uint mlive = p.M, klive = p.K;
#ifdef GROUPED
    uint cap = ta ? p.K : p.M;
    int cnt = counts[p.off[2] + bat];
    if (cnt < 0 || uint(cnt) > cap) {
        if (t == 0u && gl_LocalInvocationID.x == 0u) chm_raise(8u, bat, uint(cnt), cap);
        cnt = clamp(cnt, 0, int(cap));
    }
    if (ta) klive = uint(cnt);
    else mlive = uint(cnt);
#endif
    const uint FM = WM / 16u, FN = WN / FRAG_N;
    uint warp = gl_SubgroupID, wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    uint lid = gl_LocalInvocationID.x;
    CM_ACC acc[FMAX * NMAX];
    UNROLL for (uint f = 0u; f < FMAX * NMAX; f++) acc[f] = CM_ZERO;

    uint abase = p.off[0] + bat * p.sa, bbase = p.off[1] + bat * p.sb;
    uint kend = m0 < mlive ? klive : 0u; /* a tile of dead rows skips the product */
    uint nslices = (kend + BK - 1u) / BK;
    uvec4 ra[LMAX], rb[LMAX]; /* the next slice, in flight */
    slice sa_, sb_;
    for (uint ks = 0u; ks <= nslices; ks++) {
        /* 1. issue the global loads of slice ks (if any) */
        if (ks < nslices) {
            uint k0 = ks * BK;
            sa_ = ta ? slice_make(abase, p.lda, k0, m0, BK, BM, klive, mlive)
                     : slice_make(abase, p.lda, m0, k0, BM, BK, mlive, klive);
            sb_ = tb ? slice_make(bbase, p.ldb, n0, k0, BN, BK, p.N, klive)
                     : slice_make(bbase, p.ldb, k0, n0, BK, BN, klive, p.N);
            UNROLL for (uint l = 0u; l < LMAX; l++) {
                uint w = lid + l * WG_SIZE;
                if (w < BM * BK / 8u) ra[l] = gather_a(sa_, w);
                if (w < BN * BK / 8u) rb[l] = gather_b(sb_, w);
            }
        }
        /* 2. multiply slice ks-1 out of its stage */
        if (ks > 0u) {
            uint ast = ((ks - 1u) & 1u) * A_WORDS, bst = ((ks - 1u) & 1u) * B_WORDS;
            UNROLL for (uint kk = 0u; kk < BK; kk += 16u) {
                CM_IN_A fa[FMAX];
                CM_IN_B fb[NMAX];
                UNROLL for (uint i = 0u; i < FMAX; i++) {
                    if (i >= FM) continue;
                    uint m = wm0 + i * 16u;
                    if (ta) CM_LOAD_A(fa[i], ast + kk * SAM + m / 8u, SAM, true);
                    else CM_LOAD_A(fa[i], ast + m * SK + kk / 8u, SK, false);
                }
                UNROLL for (uint j = 0u; j < NMAX; j++) {
                    if (j >= FN) continue;
                    uint n = wn0 + j * FRAG_N;
                    if (tb) CM_LOAD_B(fb[j], bst + n * SK + kk / 8u, SK, true);
                    else CM_LOAD_B(fb[j], bst + kk * SBN + n / 8u, SBN, false);
                }
                UNROLL for (uint i = 0u; i < FMAX; i++)
                    UNROLL for (uint j = 0u; j < NMAX; j++)
                        if (i < FM && j < FN)
                            acc[i * NMAX + j] = CM_MULADD(fa[i], fb[j], acc[i * NMAX + j]);
            }
        }
        /* 3. stage slice ks; its stage was last read two slices ago, before the last barrier */
        if (ks < nslices) {
            uint ast = (ks & 1u) * A_WORDS, bst = (ks & 1u) * B_WORDS;
            UNROLL for (uint l = 0u; l < LMAX; l++) {
                uint w = lid + l * WG_SIZE;
                if (w < BM * BK / 8u) As[ast + staged(sa_, w)] = ra[l];
                if (w < BN * BK / 8u) Bs[bst + staged(sb_, w)] = rb[l];
            }
        }
        barrier();
    }

    /* Epilogue through a 16 x FRAG_N f32 scratch per warp (at most 64 words of As). */
    uint scratch = warp * 64u, lane = gl_SubgroupInvocationID;
    uint cbase = p.off[3] + bat * p.sc;
    UNROLL for (uint i = 0u; i < FMAX; i++) {
        UNROLL for (uint j = 0u; j < NMAX; j++) {
            if (i >= FM || j >= FN) continue;
            CM_STORE(acc[i * NMAX + j], scratch, FRAG_N / 4u);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < 16u * FRAG_N; e += SUBGROUP_SIZE) {
                uint m = m0 + wm0 + i * 16u + e / FRAG_N, n = n0 + wn0 + j * FRAG_N + e % FRAG_N;
                if (m >= p.M || n >= p.N) continue;
                uint ci = cbase + m * p.N + n;
                float v = uintBitsToFloat(As[scratch + e / 4u][e % 4u]); /* rows of FRAG_N */
                v = p.alpha == 0.0 ? 0.0 : p.alpha * v;
                if ((p.flags & 8u) == 0u) v += p.beta * ld16(uint(c[ci]));
#ifndef GROUPED
                if ((p.flags & 4u) != 0u) v += ld16(uint(bias[p.off[2] + n]));
#endif
                c[ci] = uint16_t(st16(v));
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}
