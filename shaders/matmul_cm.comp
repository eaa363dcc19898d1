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
 * accumulator fragments (A fragments 16x16, B fragments 16 x FRAG_N). The
 * K loop walks BK-deep slices through two shared-memory stages: while the
 * warps multiply slice k out of one stage, the next slice's global loads
 * are in flight in registers, then stored into the other stage; one barrier
 * per slice. A slice is staged exactly as it is stored (its contiguous dim
 * fastest, rows padded by 8 elements against bank conflicts), so global
 * loads are coalesced for every transpose, and the fragment loads read it
 * row- or column-major as the transpose says. Shared memory holds uvec4
 * words (8 f16 each): cooperative-matrix loads then count offsets and
 * strides in uvec4 units (GL_NV_cooperative_matrix allows uvec4 arrays for
 * any component type).
 *
 * Registers (issue 6): every loop that touches a fragment or an accumulator
 * has a literal bound (spec constants only guard its body) and is unrolled
 * by glslc, or is written out (MULTIPLY_SLICE, EPILOGUE_ROWS), so each
 * fragment is a plain SSA value in the SPIR-V. The earlier loops, bounded
 * by spec constants and indexing arrays of fragments, left that to the
 * driver; tools/vk_bench --coopmat-probe measures what such arrays cost.
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
 * Epilogue: each warp stores one row of its accumulator fragments (16 x WN
 * f32) at a time into its own scratch in shared memory (the stages are no
 * longer needed), and its invocations take 8 columns each: alpha, beta*C
 * (not read when beta = 0) and the bias applied in f32, each element of C
 * rounded once to the tensor's dtype, one uvec4 store where the 8 columns
 * are live and 8-aligned in C. Every element of C comes from one fixed
 * order of additions: deterministic.
 *
 * Variants (-D): DT_F16 or DT_BF16 (the dtype of A, B, C and bias), GROUPED,
 * and CM_EMULATE: the same shader with the four cooperative-matrix
 * operations done in plain GLSL (cm_emulate.glsl), so that devices without
 * them (lavapipe in CI) run and test every index of this file; matmul.c
 * uses it only when asked to (CHIMERA_VULKAN_COOPMAT_EMULATE=1, tests).
 * Spec constants: 0 workgroup size = warps * subgroup size, 1 subgroup size,
 * 2 BM, 3 BN, 4 BK, 5 WM, 6 WN, 7 FRAG_N (16 or 8). matmul.c checks the
 * limits: WM a multiple of 16 (at most FMAX fragments), WN a multiple of
 * FRAG_N (at most NMAX fragments), BK a multiple of 16 up to 64, each
 * operand slice at most LMAX uvec4 words per invocation, both stages in
 * shared memory, and the warps' epilogue scratch inside them.
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
#define FMAX 4 /* fragments per warp along M (EPILOGUE_ROWS writes out 4) */
#define NMAX 8 /* fragments per warp along N */
#define UNROLL [[unroll]]
#endif
#define LMAX 4 /* uvec4 words per invocation per operand slice */
/* BK is at most 64: MULTIPLY_SLICE writes out 4 steps of 16 */

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
layout(binding = 3) buffer C4_ { uvec4 c4[]; };

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
/* Stage s of A at s * A_WORDS, of B at B_STAGES + s * B_WORDS; after the K loop, the scratch. */
const uint B_STAGES = 2u * A_WORDS;
shared uvec4 S[2u * (A_WORDS + B_WORDS)];

/*
 * The cooperative-matrix operations on S: loads of 16x16 f16 fragments of
 * A and 16 x FRAG_N of B, 16 x FRAG_N f32 accumulators, and the store of an
 * accumulator. Offsets and strides count uvec4 words; `col` is constant.
 */
#ifdef CM_EMULATE
#include "cm_emulate.glsl"
#else
#define CM_IN_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CM_IN_B fcoopmatNV<16, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ZERO CM_ACC(0.0)
#define CM_LOAD(f, elem, stride, col) coopMatLoadNV(f, S, elem, stride, col)
#define CM_MULADD(x, y, acc) coopMatMulAddNV(x, y, acc)
#define CM_STORE(acc, elem, stride) coopMatStoreNV(acc, S, elem, stride, false)
#endif

/*
 * Where one operand slice comes from: rows x cols of the stored layout (cols
 * contiguous), `kfast` when its contiguous dim is k (cols = BK; else cols =
 * the tile's BM or BN, `wide`). The word of an invocation splits into row and
 * column by one of those constants (selected, never divided by a variable).
 */
struct slice {
    uint base;        /* element index of the slice's (0, 0) in the buffer */
    uint ld;          /* stored row length */
    uint rlive, clive;/* live rows and columns left from the slice's corner (may be < shape) */
    bool kfast;       /* cols = BK (else cols = wide) */
    bool fast;        /* whole slice live and 8-element aligned: load words */
};

slice slice_make(uint base, uint ld, uint r0, uint c0, uint rows, uint cols, uint rlim,
                 uint clim, bool kfast) {
    slice s;
    s.base = base + r0 * ld + c0;
    s.ld = ld;
    s.rlive = rlim > r0 ? rlim - r0 : 0u;
    s.clive = clim > c0 ? clim - c0 : 0u;
    s.kfast = kfast;
    s.fast = s.rlive >= rows && s.clive >= cols && (ld % 8u) == 0u && (s.base % 8u) == 0u;
    return s;
}

/* Row and first column of slice word w, for a slice `wide` elements wide when not kfast. */
uvec2 slice_rc(slice s, uint w, uint wide) {
    uint r = s.kfast ? w / (BK / 8u) : w / (wide / 8u);
    return uvec2(r, (w - r * (s.kfast ? BK / 8u : wide / 8u)) * 8u);
}

/* Word w of a slice of A (or B): 8 elements as f16, zeros outside the live part. */
#define GATHER(NAME, BUF, BUF4, WIDE)                                                    \
    uvec4 NAME(slice s, uint w) {                                                        \
        uvec2 rc = slice_rc(s, w, WIDE);                                                 \
        uint i = s.base + rc.x * s.ld + rc.y;                                            \
        if (s.fast) return vec_f16(BUF4[i / 8u]);                                        \
        uint h[8];                                                                       \
        UNROLL for (uint j = 0u; j < 8u; j++)                                            \
            h[j] = rc.x < s.rlive && rc.y + j < s.clive ? to_f16(uint(BUF[i + j])) : 0u; \
        return uvec4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),      \
                     h[6] | (h[7] << 16));                                               \
    }
GATHER(gather_a, a, a4, BM)
GATHER(gather_b, b, b4, BN)

/* Staged position (in words) of slice word w: each staged row has one padding word. */
uint staged(slice s, uint w, uint wide) {
    uint per_row = s.kfast ? BK / 8u : wide / 8u;
    uvec2 rc = slice_rc(s, w, wide);
    return rc.x * (per_row + 1u) + rc.y / 8u;
}

/*
 * One 16-deep step kk of the product of a staged slice into the warp's
 * accumulators: FM A fragments and FN B fragments from the stage, then
 * FM*FN multiply-adds. Every loop has a literal bound (and a spec-constant
 * guard) and the steps of a slice are written out (MULTIPLY_SLICE), so that
 * glslc unrolls everything and each fragment and accumulator is a plain
 * value: an array indexed by a loop variable is one the driver may keep in
 * local memory (issue 6: vk_bench --coopmat-probe measures the difference).
 */
#define MULTIPLY_STEP(ast, bst, kk)                                                      \
    if (kk < BK) {                                                                       \
        CM_IN_A fa[FMAX];                                                                \
        CM_IN_B fb[NMAX];                                                                \
        UNROLL for (uint i = 0u; i < FMAX; i++) {                                        \
            uint m = wm0 + i * 16u;                                                      \
            if (i < FM && ta) CM_LOAD(fa[i], ast + kk * SAM + m / 8u, SAM, true);        \
            if (i < FM && !ta) CM_LOAD(fa[i], ast + m * SK + kk / 8u, SK, false);        \
        }                                                                                \
        UNROLL for (uint j = 0u; j < NMAX; j++) {                                        \
            uint n = wn0 + j * FRAG_N;                                                   \
            if (j < FN && tb) CM_LOAD(fb[j], bst + n * SK + kk / 8u, SK, true);          \
            if (j < FN && !tb) CM_LOAD(fb[j], bst + kk * SBN + n / 8u, SBN, false);      \
        }                                                                                \
        UNROLL for (uint i = 0u; i < FMAX; i++)                                          \
            UNROLL for (uint j = 0u; j < NMAX; j++)                                      \
                if (i < FM && j < FN)                                                    \
                    acc[i * NMAX + j] = CM_MULADD(fa[i], fb[j], acc[i * NMAX + j]);      \
    }
#ifdef CM_EMULATE
/* a loop: lavapipe compiles the emulated operations slowly */
#define MULTIPLY_SLICE(ast, bst) \
    for (uint kk = 0u; kk < BK; kk += 16u) { MULTIPLY_STEP(ast, bst, kk) }
#else
#define MULTIPLY_SLICE(ast, bst)                                                         \
    MULTIPLY_STEP(ast, bst, 0u) MULTIPLY_STEP(ast, bst, 16u)                             \
    MULTIPLY_STEP(ast, bst, 32u) MULTIPLY_STEP(ast, bst, 48u)
#endif

/* alpha*v + beta*C + bias for element (m, n) of C given as its f32 product v. */
float epilogue_value(float v, uint ci, uint n) {
    v = p.alpha == 0.0 ? 0.0 : p.alpha * v;
    if ((p.flags & 8u) == 0u) v += p.beta * ld16(uint(c[ci]));
#ifndef GROUPED
    if ((p.flags & 4u) != 0u) v += ld16(uint(bias[p.off[2] + n]));
#endif
    return v;
}

/*
 * Write 8 columns of one row of C from their f32 products in the scratch
 * (words sw, sw+1): one uvec4 store where the 8 elements are live and
 * 8-aligned in C, else element by element inside the bounds.
 */
void epilogue_store8(uint sw, uint ci, uint m, uint n) {
    bool whole = m < p.M && n + 8u <= p.N && ci % 8u == 0u;
    uint h[8];
    UNROLL for (uint e = 0u; e < 8u; e++) {
        bool live = m < p.M && n + e < p.N;
        float v = uintBitsToFloat(S[sw + e / 4u][e % 4u]);
        h[e] = live ? st16(epilogue_value(v, ci + e, n + e)) : 0u;
        if (live && !whole) c[ci + e] = uint16_t(h[e]);
    }
    if (whole)
        c4[ci / 8u] = uvec4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),
                            h[6] | (h[7] << 16));
}

/* Piece q (row q / (WN/8), 8 columns) of the warp's 16 x WN strip at C's (fm, fn). */
void epilogue_piece(uint q, uint scratch, uint cbase, uint fm, uint fn) {
    uint r = q / (WN / 8u), col = (q % (WN / 8u)) * 8u;
    epilogue_store8(scratch + r * (WN / 4u) + col / 4u, cbase + (fm + r) * p.N + fn + col,
                    fm + r, fn + col);
}

/*
 * Row i of the warp's fragments into C: the FN accumulators side by side
 * into the scratch (16 rows of WN f32), then 8 columns an invocation.
 */
#define EPILOGUE_ROW(i)                                                                  \
    if (i < FM) {                                                                        \
        UNROLL for (uint j = 0u; j < NMAX; j++)                                          \
            if (j < FN) CM_STORE(acc[i * NMAX + j], scratch + j * FRAG_N / 4u, WN / 4u); \
        subgroupMemoryBarrierShared();                                                   \
        subgroupBarrier();                                                               \
        for (uint q = lane; q < 2u * WN; q += SUBGROUP_SIZE)                             \
            epilogue_piece(q, scratch, cbase, m0 + wm0 + i * 16u, n0 + wn0);             \
        subgroupMemoryBarrierShared();                                                   \
        subgroupBarrier();                                                               \
    }
#ifdef CM_EMULATE
#define EPILOGUE_ROWS EPILOGUE_ROW(0u) EPILOGUE_ROW(1u)
#else
#define EPILOGUE_ROWS EPILOGUE_ROW(0u) EPILOGUE_ROW(1u) EPILOGUE_ROW(2u) EPILOGUE_ROW(3u)
#endif

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
            sa_ = ta ? slice_make(abase, p.lda, k0, m0, BK, BM, klive, mlive, false)
                     : slice_make(abase, p.lda, m0, k0, BM, BK, mlive, klive, true);
            sb_ = tb ? slice_make(bbase, p.ldb, n0, k0, BN, BK, p.N, klive, true)
                     : slice_make(bbase, p.ldb, k0, n0, BK, BN, klive, p.N, false);
            UNROLL for (uint l = 0u; l < LMAX; l++) {
                uint w = lid + l * WG_SIZE;
                if (w < BM * BK / 8u) ra[l] = gather_a(sa_, w);
                if (w < BN * BK / 8u) rb[l] = gather_b(sb_, w);
            }
        }
        /* 2. multiply slice ks-1 out of its stage */
        if (ks > 0u) {
            uint ast = ((ks - 1u) & 1u) * A_WORDS, bst = B_STAGES + ((ks - 1u) & 1u) * B_WORDS;
            MULTIPLY_SLICE(ast, bst)
        }
        /* 3. stage slice ks; its stage was last read two slices ago, before the last barrier */
        if (ks < nslices) {
            uint ast = (ks & 1u) * A_WORDS, bst = B_STAGES + (ks & 1u) * B_WORDS;
            UNROLL for (uint l = 0u; l < LMAX; l++) {
                uint w = lid + l * WG_SIZE;
                if (w < BM * BK / 8u) S[ast + staged(sa_, w, BM)] = ra[l];
                if (w < BN * BK / 8u) S[bst + staged(sb_, w, BN)] = rb[l];
            }
        }
        barrier();
    }

    /* Epilogue through 16 x WN f32 of scratch per warp (the K loop ended on a barrier). */
    uint scratch = warp * 4u * WN, lane = gl_SubgroupInvocationID;
    uint cbase = p.off[3] + bat * p.sc;
    EPILOGUE_ROWS
}
