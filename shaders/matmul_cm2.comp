/*
 * matmul_cm2.comp: C = alpha*op(A)op(B) + beta*C (+ bias[N] per row) for f16
 * and bf16 tensors on workgroup-scope cooperative matrices
 * (GL_NV_cooperative_matrix2 with GL_KHR_cooperative_matrix and, for bf16,
 * GL_EXT_bfloat16): the operands are read as they are stored (bf16 x bf16
 * or f16 x f16 products summed in f32 on the tensor cores), with no scaling
 * pass. matmul.c runs it where vk_coopmat.c found the extensions and their
 * features (caps.coopmat2); matmul_cm.comp (NV v1, f16 operands) stays for
 * devices without them.
 *
 * Same contract as matmul.comp and matmul_cm.comp: the push block and the
 * bindings are theirs. op(A) [M,K] (A stored [K,M] when trans_a), op(B)
 * [K,N] (B stored [N,K] when trans_b), C [M,N] per batch entry (batch
 * strides sa, sb, sc; 0 for a broadcast operand). Flags: 1 trans_a,
 * 2 trans_b, 4 bias, 8 beta is 0 (C is then never read: it may hold NaN).
 *
 * One workgroup computes one BM x BN tile of C as one workgroup-scope f32
 * accumulator; the K loop walks BK-deep slices in order (deterministic:
 * each element of C is summed in one fixed order, one workgroup per tile).
 * Operand slices are loaded by tensor layouts (NV_tensor_addressing): each
 * stored operand is described as a 2-D tensor of its live rows and columns
 * with its row length as the stride, so the driver stages slices through
 * shared memory as it likes, and elements outside the tensor (edges of M,
 * N, K that are not multiples of the tile) read as zero (clamp mode
 * constant, value 0). Slices wholly inside (a tile inside M and N, K's
 * whole slices) use a layout without the bounds checks. A transposed
 * operand is loaded through a tensor view that swaps its two dimensions.
 * The transposes are bits 8 and 9 of spec constant 4 (beside BK): the
 * branches around the loads fold away.
 *
 * Speed (H100, NVIDIA 580.159.04, f16 4096^3 A B^T): 50.6 TFLOP/s with the
 * loads of a slice issued just before its product, 126 with PREFETCH (the
 * default tile 128x256x32 on 256 invocations); BK 64 or 256x256 tiles
 * collapse to 7-9 (the driver's staging no longer fits its 48 KiB of
 * shared memory, presumably). matmul_cm.comp runs 156 there: cm2 wins on
 * chimera-1b's bf16 step only by dropping the scaling passes.
 *
 * Epilogue: alpha times the accumulator, plus beta*C (C's tile loaded by
 * the same clamped addressing, widened to f32) unless flag 8, plus the bias
 * by a per-element function (bounds-checked reads), all in f32; then one
 * conversion to the dtype (C rounded once, to nearest even: for bf16 the
 * value is rounded by half.glsl's integer rounding first, as NVIDIA's
 * conversion truncated: 2x the error bound in vk_bench's checks) and a
 * clamped tensor store, which writes only the elements inside C.
 *
 * PREFETCH (bit 10 of spec constant 4): the next slice's loads are issued
 * before the current slice's product, all through the clamped layouts.
 *
 * Variants (-D): DT_BF16 or DT_F16 (the dtype of A, B, C and bias), GROUPED
 * (matmul.comp's grouped contract: counts[E] live rows of each entry, or
 * live terms of the sum with trans_a; a count out of range is reported
 * through the status words and clamped).
 * Spec constants: 0 workgroup size, 1 subgroup size (common.glsl), 2 BM,
 * 3 BN, 4 BK + 256 trans_a + 512 trans_b + 1024 prefetch. matmul.c checks
 * the tile against the device (multiples of its flexible-dimension
 * granularity; the workgroup size the device lists for them).
 */
#version 450
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_control_flow_attributes : require
#ifdef DT_BF16
#extension GL_EXT_bfloat16 : require
#endif
#include "common.glsl"
#include "half.glsl"

layout(constant_id = 2) const uint BM = 128;
layout(constant_id = 3) const uint BN = 128;
/* BK, plus 256 trans_a, 512 trans_b, 1024 prefetch */
layout(constant_id = 4) const uint BK_TRANS = 32;
const uint BK = BK_TRANS & 255u;
const bool TRANS_A = (BK_TRANS & 256u) != 0u, TRANS_B = (BK_TRANS & 512u) != 0u;
const bool PREFETCH = (BK_TRANS & 1024u) != 0u;

#ifdef DT_BF16
#define T16 bfloat16_t
#else
#define T16 float16_t
#endif

layout(binding = 0) readonly buffer A_ { T16 a[]; };
layout(binding = 1) readonly buffer B_ { T16 b[]; };
#ifdef GROUPED
layout(binding = 2) readonly buffer Counts { int counts[]; };
#define CHM_STATUS_BINDING 4
#include "status.glsl"
#else
layout(binding = 2) readonly buffer Bias { T16 bias[]; };
#endif
layout(binding = 3) buffer C_ { T16 c[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint M, N, K, lda, ldb;
    uint sa, sb, sc;          /* batch strides in elements */
    uint batch, tiles_m, tiles_n;
    uint flags;               /* 1 trans_a, 2 trans_b, 4 bias, 8 beta is 0 */
    float alpha, beta;
} p;

#define CM_A coopmat<T16, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA>
#define CM_B coopmat<T16, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB>
#define CM_ACC coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator>
#define CM_C16 coopmat<T16, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator>

#define CLAMPED tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV>

/* A stored rows x cols tensor with row length ld, zeros outside (the clamped loads). */
CLAMPED stored(uint rows, uint cols, uint ld) {
    CLAMPED t = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    t = setTensorLayoutDimensionNV(t, rows, cols);
    return setTensorLayoutStrideNV(t, ld, 1);
}

/* The same without bounds checks, for slices that lie wholly inside. */
tensorLayoutNV<2> stored_inner(uint rows, uint cols, uint ld) {
    tensorLayoutNV<2> t = createTensorLayoutNV(2);
    t = setTensorLayoutDimensionNV(t, rows, cols);
    return setTensorLayoutStrideNV(t, ld, 1);
}

/* Load the BK-deep slices from k0 of A and B (layouts la, lb) into ma, mb. */
#define LOAD_SLICE(la, lb, k0, ma, mb)                                                   \
    if (TRANS_A)                                                                         \
        coopMatLoadTensorNV(ma, a, abase, sliceTensorLayoutNV(la, k0, BK, m0, BM), swap); \
    else                                                                                 \
        coopMatLoadTensorNV(ma, a, abase, sliceTensorLayoutNV(la, m0, BM, k0, BK));      \
    if (TRANS_B)                                                                         \
        coopMatLoadTensorNV(mb, b, bbase, sliceTensorLayoutNV(lb, n0, BN, k0, BK), swap); \
    else                                                                                 \
        coopMatLoadTensorNV(mb, b, bbase, sliceTensorLayoutNV(lb, k0, BK, n0, BN));

/* One slice multiplied into acc. */
#define MULTIPLY_SLICE(la, lb, k0)                                                       \
    {                                                                                    \
        CM_A ma;                                                                         \
        CM_B mb;                                                                         \
        LOAD_SLICE(la, lb, k0, ma, mb)                                                   \
        acc = coopMatMulAdd(ma, mb, acc);                                                \
    }

#ifdef DT_BF16
/* v rounded to the nearest bf16 (even on ties) in f32: the conversion after it is exact. */
float round_bf16(const in uint32_t row, const in uint32_t col, const in float v) {
    return chm_bf16_to_f32(chm_f32_to_bf16(v));
}
#endif

#ifndef GROUPED
/* Bias column n0 + col added to v (the per-element epilogue; columns past N take none). */
float add_bias(const in uint32_t row, const in uint32_t col, const in float v, const in uint n0) {
    uint n = n0 + col;
    return n < p.N ? v + float(bias[p.off[2] + n]) : v;
}
#endif

void main() {
    uint tiles = p.tiles_m * p.tiles_n, g = chm_group();
    uint bat = g / tiles, t = g % tiles;
    if (bat >= p.batch) return; /* whole workgroups only */
    uint m0 = (t / p.tiles_n) * BM, n0 = (t % p.tiles_n) * BN;
    uint mlive = p.M, klive = p.K;
#ifdef GROUPED
    uint cap = TRANS_A ? p.K : p.M;
    int cnt = counts[p.off[2] + bat];
    if (cnt < 0 || uint(cnt) > cap) {
        if (t == 0u && gl_LocalInvocationID.x == 0u) chm_raise(8u, bat, uint(cnt), cap);
        cnt = clamp(cnt, 0, int(cap));
    }
    if (TRANS_A) klive = uint(cnt);
    else mlive = uint(cnt);
#endif
    /* the stored operands: A [M,K] or [K,M], B [K,N] or [N,K], C [M,N] */
    CLAMPED la = TRANS_A ? stored(klive, mlive, p.lda) : stored(mlive, klive, p.lda);
    CLAMPED lb = TRANS_B ? stored(p.N, klive, p.ldb) : stored(klive, p.N, p.ldb);
    CLAMPED lc = stored(p.M, p.N, p.N); /* grouped: dead rows too (beta*C) */
    tensorLayoutNV<2> ia = TRANS_A ? stored_inner(klive, mlive, p.lda)
                                   : stored_inner(mlive, klive, p.lda);
    tensorLayoutNV<2> ib = TRANS_B ? stored_inner(p.N, klive, p.ldb)
                                   : stored_inner(klive, p.N, p.ldb);
    tensorViewNV<2, false, 1, 0> swap = createTensorViewNV(2, false, 1, 0);
    uint abase = p.off[0] + bat * p.sa, bbase = p.off[1] + bat * p.sb;
    uint cbase = p.off[3] + bat * p.sc;

    CM_ACC acc = CM_ACC(0.0);
    uint kend = m0 < mlive ? klive : 0u; /* a tile of dead rows skips the product */
    /* whole slices of a tile inside M and N load unchecked; the rest (edges, K's tail) clamped */
    bool inner = m0 + BM <= mlive && n0 + BN <= p.N;
    uint kinner = inner ? kend / BK * BK : 0u, k0 = 0u;
    if (PREFETCH) {
        /* the next slice's loads issued before this slice's product (clamped throughout:
         * the slice past the end reads nothing and is not used) */
        CM_A ma;
        CM_B mb;
        LOAD_SLICE(la, lb, 0u, ma, mb)
        [[dont_unroll]] for (; k0 < kend; k0 += BK) {
            CM_A na;
            CM_B nb;
            LOAD_SLICE(la, lb, k0 + BK, na, nb)
            acc = coopMatMulAdd(ma, mb, acc);
            ma = na;
            mb = nb;
        }
    } else {
        [[dont_unroll]] for (; k0 < kinner; k0 += BK) MULTIPLY_SLICE(ia, ib, k0)
        [[dont_unroll]] for (; k0 < kend; k0 += BK) MULTIPLY_SLICE(la, lb, k0)
    }

    if (p.alpha == 0.0) acc = CM_ACC(0.0); /* as matmul.comp: 0 * inf sums give 0 */
    else acc = acc * p.alpha;
    if ((p.flags & 8u) == 0u) {
        CM_C16 c16;
        coopMatLoadTensorNV(c16, c, cbase, sliceTensorLayoutNV(lc, m0, BM, n0, BN));
        acc += CM_ACC(c16) * p.beta;
    }
#ifndef GROUPED
    if ((p.flags & 4u) != 0u) coopMatPerElementNV(acc, acc, add_bias, n0);
#endif
#ifdef DT_BF16
    /* the driver's f32 -> bf16 conversion may truncate: round to nearest first (exact after) */
    coopMatPerElementNV(acc, acc, round_bf16);
#endif
    CM_C16 out16 = CM_C16(acc);
    coopMatStoreTensorNV(out16, c, cbase, sliceTensorLayoutNV(lc, m0, BM, n0, BN));
}
