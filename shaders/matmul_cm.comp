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
 * Operands are f16 on the tensor cores. f16 tensors are staged as they
 * are. bf16 tensors never reach this shader: matmul.c first runs
 * cm_scale.comp, which gives each row of op(A) and each column of op(B) a
 * power-of-two scale 2^-e from its largest |value| (so that it lands in
 * [2^14, 2^15)) and writes the scaled operands as f16 (exact: bf16 has 8
 * significant bits, f16 11, and the scaled values lie in f16's normal range
 * down to 2^-28 of their row's largest), plus the exponents (binding 4).
 * The DT_BF16 variants read those f16 copies and multiply each f32 product
 * by 2^(ea[m] + eb[n]) before the epilogue: bf16's whole range, nothing
 * lost but terms more than 2^24 below their row's or column's largest,
 * which the f32 sums would drop anyway. Edges: a slice that lies partly
 * outside the live rows/terms, or whose operand is not 8-element aligned,
 * is gathered element by element with zeros outside; when both operand
 * slices are whole and aligned, they move as uvec4 words (one uniform
 * branch around all the loads of a slice).
 *
 * Transposes are specialization constants (bits 8 and 9 of constant 4,
 * beside BK), so the fragment loads of the inner loop carry no branches;
 * the emulated variants take them from the push flags instead (one
 * pipeline for all four cases: lavapipe compiles those slowly).
 *
 * Epilogue: each warp stores one row of its accumulator fragments (16 x WN
 * f32) at a time into its own scratch in shared memory (the stages are no
 * longer needed), and its invocations take 8 columns each: alpha, beta*C
 * (not read when beta = 0) and the bias applied in f32, each element of C
 * rounded once to the tensor's dtype, one uvec4 store where the 8 columns
 * are live and 8-aligned in C. Every element of C comes from one fixed
 * order of additions: deterministic.
 *
 * Variants (-D): DT_F16 or DT_BF16 (the dtype of C and bias; A and B are
 * f16, scaled as above for DT_BF16), GROUPED, CM_KHR (the matrices of
 * VK_KHR_cooperative_matrix instead of NVIDIA's: AMD, Intel), CM_BF16_NATIVE
 * (with DT_BF16 and CM_KHR or CM_EMULATE: A and B are the bf16 tensors
 * themselves, on bf16 matrices (VK_KHR_shader_bfloat16): no scaling pass, no
 * exponents binding; the staging moves 16-bit words either way),
 * and CM_EMULATE: the same shader with the four cooperative-matrix
 * operations done in plain GLSL (cm_emulate.glsl), so that devices without
 * them (lavapipe in CI) run and test every index of this file; matmul.c
 * uses it only when asked to (CHIMERA_VULKAN_COOPMAT_EMULATE=1, tests).
 * Spec constants: 0 workgroup size = warps * subgroup size, 1 subgroup size,
 * 2 BM, 3 BN, 4 BK + 256 trans_a + 512 trans_b, 5 WM, 6 WN, 7 FRAG_N (16 or
 * 8), 8 ABLATE (diagnostics, below), 9 KSPLIT (below). matmul.c checks the
 * limits: WM a multiple of 16 (at most FMAX fragments), WN a multiple of
 * FRAG_N (at most NMAX fragments), BK a multiple of 16 up to 64, each operand
 * slice at most LMAX uvec4 words per invocation, both stages in shared
 * memory, and the warps' epilogue scratch inside them.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#if defined(CM_KHR)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_cooperative_matrix : require
#ifdef CM_BF16_NATIVE
#extension GL_EXT_bfloat16 : require
#endif
#elif !defined(CM_EMULATE)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#endif
#include "common.glsl"
#include "half.glsl"

/* bf16 operands on the matrices as stored (CM_BF16_NATIVE), or scaled f16 copies (CM_SCALED). */
#if defined(DT_BF16) && !defined(CM_BF16_NATIVE)
#define CM_SCALED
#endif

layout(constant_id = 2) const uint BM = 128;
layout(constant_id = 3) const uint BN = 128;
layout(constant_id = 4) const uint BK_TRANS = 32; /* BK, plus 256 trans_a, 512 trans_b */
const uint BK = BK_TRANS & 255u;
const bool TRANS_A = (BK_TRANS & 256u) != 0u, TRANS_B = (BK_TRANS & 512u) != 0u;
layout(constant_id = 5) const uint WM = 64;
layout(constant_id = 6) const uint WN = 32;
layout(constant_id = 7) const uint FRAG_N = 16;
/*
 * Ablations for tools/vk_bench (CHIMERA_VULKAN_COOPMAT_ABLATE; 0 in every real
 * product, and then dead code): 1 no global loads (constant words are staged),
 * 2 no staging stores, 4 no barrier in the K loop, 8 no multiply (results
 * wrong: the times say what each part of the K loop costs); and two that keep
 * results right: 16 the general K loop only (no branch-free steady loop), 32
 * kfast slices staged row after row (the order before the conflict-free one),
 * 64 tiles in row order (no groups of 16 tile rows); and in the epilogue: 128 no
 * accumulator stores into the scratch, 256 no stores of C (both wrong), 512 no epilogue,
 * 1024 the scratch epilogue for every strip (no direct stores, below: results right).
 */
layout(constant_id = 8) const uint ABLATE = 0;
/*
 * K split (not GROUPED): KSPLIT > 1 workgroups share each tile, split s summing
 * terms [s*KPER, s*KPER + KPER) (KPER = K/KSPLIT rounded up to BK), and writes
 * its f32 sums, unscaled, to binding 3 as part [KSPLIT, M, N] (no alpha, beta,
 * bias: matmul_splitk.comp's _sum adds the splits in order and applies them).
 * For products with too few tiles to fill the GPU (chimera-1b's weight
 * gradients: 64-176 tiles, K = 16384): matmul.c decides.
 */
layout(constant_id = 9) const uint KSPLIT = 1;
uint split_ix; /* this workgroup's split (main) */
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

/* The 16-bit tensors (A and B f16 bits), element by element and 8 elements at a time. */
layout(binding = 0) readonly buffer A_ { uint16_t a[]; };
layout(binding = 0) readonly buffer A4_ { uvec4 a4[]; };
layout(binding = 1) readonly buffer B_ { uint16_t b[]; };
layout(binding = 1) readonly buffer B4_ { uvec4 b4[]; };
#ifdef GROUPED
layout(binding = 2) readonly buffer Counts { int counts[]; };
#else
layout(binding = 2) readonly buffer Bias { uint16_t bias[]; };
#endif
layout(binding = 3) buffer C_ { uint16_t c[]; };
layout(binding = 3) buffer C4_ { uvec4 c4[]; };
layout(binding = 3) buffer CF_ { float cf[]; }; /* KSPLIT > 1: the partial sums */
#ifdef CM_SCALED
/* cm_scale.comp's exponents: ea[batch of A][M], then eb[batch of B][N] */
layout(binding = 4) readonly buffer Exps { int exps[]; };
#define NBIND 5
#else
#define NBIND 4
#endif
#ifdef GROUPED
#define CHM_STATUS_BINDING NBIND
#include "status.glsl"
#endif

layout(push_constant) uniform Push {
    uint off[NBIND];
    uint M, N, K, lda, ldb;
    uint sa, sb, sc;          /* batch strides in elements */
    uint batch, tiles_m, tiles_n;
    uint flags;               /* 1 trans_a, 2 trans_b, 4 bias, 8 beta is 0 */
    float alpha, beta;
} p;

/* Loads and stores of C and bias: exact widening, C rounded once (half.glsl). */
#ifdef DT_BF16
float ld16(uint h) { return chm_bf16_to_f32(h); }
uint st16(float v) { return chm_f32_to_bf16(v); }
#else
float ld16(uint h) { return chm_f16_to_f32(h); }
uint st16(float v) { return chm_f32_to_f16(v); }
#endif

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
#elif defined(CM_KHR)
/* VK_KHR_cooperative_matrix (AMD, Intel; NVIDIA too): the same fragments, typed by use */
#ifdef CM_BF16_NATIVE
#define CM_T16 bfloat16_t
#else
#define CM_T16 float16_t
#endif
#define CM_IN_A coopmat<CM_T16, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define CM_IN_B coopmat<CM_T16, gl_ScopeSubgroup, 16, FRAG_N, gl_MatrixUseB>
#define CM_ACC coopmat<float, gl_ScopeSubgroup, 16, FRAG_N, gl_MatrixUseAccumulator>
#define CM_ZERO CM_ACC(0.0)
#define CM_LAYOUT(col) ((col) ? gl_CooperativeMatrixLayoutColumnMajor : gl_CooperativeMatrixLayoutRowMajor)
#define CM_LOAD(f, elem, stride, col) coopMatLoad(f, S, elem, stride, CM_LAYOUT(col))
#define CM_MULADD(x, y, acc) coopMatMulAdd(x, y, acc)
#define CM_STORE(acc, elem, stride) coopMatStore(acc, S, elem, stride, gl_CooperativeMatrixLayoutRowMajor)
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
 * Direct stores of C (CM_DIRECT: bf16 C on bf16 matrices, KHR or emulated): a warp whose
 * 16 x WN strip of C is whole and 8-element aligned writes each accumulator straight into C,
 * alpha*acc + beta*C in f32 rounded once to bf16 (rounded here, to nearest even: the
 * conversion of the matrix is then exact, whatever rounding the driver's has), instead of
 * going through the scratch in shared memory row by row. On the H100 the scratch epilogue
 * took ~15 us a 128x128 tile (session 11: 120 us of a 352 us 16384x2048x1024 product,
 * CHIMERA_VULKAN_COOPMAT_ABLATE=15).
 */
#if defined(DT_BF16) && defined(CM_BF16_NATIVE) && (defined(CM_KHR) || defined(CM_EMULATE))
#define CM_DIRECT
float bf16_rounded(float v) { return chm_bf16_to_f32(chm_f32_to_bf16(v)); }
#ifdef CM_EMULATE
/* the emulated accumulator: element e = r*FRAG_N + c in invocation e % SUBGROUP_SIZE */
void cm_store_c(CM_ACC acc, uint ci, uint ldc) {
    for (uint t = 0u; t < 16u * FRAG_N / SUBGROUP_SIZE; t++) {
        uint e = gl_SubgroupInvocationID + t * SUBGROUP_SIZE, r = e / FRAG_N;
        uint at = ci + r * ldc + e % FRAG_N;
        float v = acc.v[t];
        if (p.alpha != 1.0) v = v * p.alpha;
        if ((p.flags & 8u) == 0u) v = v + ld16(uint(c[at])) * p.beta;
        if ((ABLATE & 256u) == 0u) c[at] = uint16_t(chm_f32_to_bf16(v));
    }
}
#else
#define CM_OUT coopmat<bfloat16_t, gl_ScopeSubgroup, 16, FRAG_N, gl_MatrixUseAccumulator>
/* ci and ldc are multiples of 8: C moves as uvec4 words (offsets and strides in words) */
void cm_store_c(CM_ACC acc, uint ci, uint ldc) {
    if (p.alpha != 1.0) acc = acc * p.alpha;
    if ((p.flags & 8u) == 0u) {
        CM_OUT old;
        coopMatLoad(old, c4, ci / 8u, ldc / 8u, gl_CooperativeMatrixLayoutRowMajor);
        acc = acc + CM_ACC(old) * p.beta;
    }
    for (int k = 0; k < acc.length(); k++) acc[k] = bf16_rounded(acc[k]);
    CM_OUT o = CM_OUT(acc);
    if ((ABLATE & 256u) == 0u)
        coopMatStore(o, c4, ci / 8u, ldc / 8u, gl_CooperativeMatrixLayoutRowMajor);
}
#endif
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

/*
 * Row and first column of slice word w, for a slice `wide` elements wide when
 * not kfast. Wide rows go word by word. Rows of BK (kfast, CPR = BK/8 words)
 * go by groups of 8 rows: the 8 invocations of a wavefront of 16-byte shared
 * stores (a quarter warp) take 8/CPR whole rows CPR apart, which the odd
 * staged row stride (CPR + 1 words) spreads over all 32 banks (rows next to
 * each other met in the same banks: 2-way conflicts); their global loads
 * still read whole 16-byte-aligned rows of BK elements.
 */
uvec2 slice_rc(slice s, uint w, uint wide) {
    if (s.kfast) {
        const uint CPR = BK / 8u;
        uint g = w / (8u * CPR), i = w - g * (8u * CPR), t = i & 7u;
        if ((ABLATE & 32u) != 0u) { /* rows next to each other (the conflicting order) */
            uint r = w / CPR;
            return uvec2(r, (w - r * CPR) * 8u);
        }
        return uvec2(g * 8u + (i >> 3u) + (t / CPR) * CPR, (t % CPR) * 8u);
    }
    uint r = w / (wide / 8u);
    return uvec2(r, (w - r * (wide / 8u)) * 8u);
}

/*
 * Word w of a whole aligned slice of A (or B) (slice.fast), and of any slice: zeros outside,
 * a dead row without loads, a whole aligned word of a live row in one load (the edge tiles of
 * thin products, e.g. x_proj's 96 rows, and of the experts' partial counts).
 */
#define GATHER(NAME, WORD, BUF, BUF4, WIDE)                                              \
    uvec4 WORD(slice s, uint w) {                                                        \
        uvec2 rc = slice_rc(s, w, WIDE);                                                 \
        return BUF4[(s.base + rc.x * s.ld + rc.y) / 8u];                                 \
    }                                                                                    \
    uvec4 NAME(slice s, uint w) {                                                        \
        uvec2 rc = slice_rc(s, w, WIDE);                                                 \
        uint i = s.base + rc.x * s.ld + rc.y;                                            \
        if (rc.x >= s.rlive) return uvec4(0u);                                           \
        if (rc.y + 8u <= s.clive && i % 8u == 0u) return BUF4[i / 8u];                   \
        uint h[8];                                                                       \
        UNROLL for (uint j = 0u; j < 8u; j++)                                            \
            h[j] = rc.x < s.rlive && rc.y + j < s.clive ? uint(BUF[i + j]) : 0u;         \
        return uvec4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),      \
                     h[6] | (h[7] << 16));                                               \
    }
GATHER(gather_a, word_a, a, a4, BM)
GATHER(gather_b, word_b, b, b4, BN)

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

#ifdef CM_SCALED
/* 2^e for e in [-126, 127]: exact, built from its bits. */
float pow2(int e) { return uintBitsToFloat(uint(e + 127) << 23); }

/* The product of scaled operands back to scale: v * 2^(ea + eb) in two exact halves. */
float unscale(float v, int e) {
    int h = e / 2;
    return v * pow2(h) * pow2(e - h);
}
#endif

/* The exponent sum of element (m, n) of batch entry bat (0 without the scaled operands). */
int scale_of(uint bat, uint m, uint n) {
#ifdef CM_SCALED
    uint ea = p.off[4] + (p.sa == 0u ? 0u : bat) * p.M + m;
    uint eb = p.off[4] + (p.sa == 0u ? 1u : p.batch) * p.M + (p.sb == 0u ? 0u : bat) * p.N + n;
    return exps[ea] + exps[eb];
#else
    return 0;
#endif
}

/*
 * alpha*v + beta*C + bias for element (m, n) of C given as its f32 product v
 * (of scaled operands for DT_BF16: 2^-e times the product of A and B).
 */
float epilogue_value(float v, int e, uint ci, uint n) {
#ifdef CM_SCALED
    v = unscale(v, e);
#endif
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
void epilogue_store8(uint sw, uint ci, uint bat, uint m, uint n) {
    if (KSPLIT > 1u) { /* f32 partial sums, 2^e applied (exact) for the scaled operands */
        uint pi = p.off[3] + (split_ix * p.M + m) * p.N + n;
        UNROLL for (uint e = 0u; e < 8u; e++) {
            float v = uintBitsToFloat(S[sw + e / 4u][e % 4u]);
#ifdef CM_SCALED
            v = unscale(v, scale_of(bat, m, n + e));
#endif
            if (m < p.M && n + e < p.N) cf[pi + e] = v;
        }
        return;
    }
    bool whole = m < p.M && n + 8u <= p.N && ci % 8u == 0u;
    uint h[8];
    UNROLL for (uint e = 0u; e < 8u; e++) {
        bool live = m < p.M && n + e < p.N;
        float v = uintBitsToFloat(S[sw + e / 4u][e % 4u]);
        h[e] = live ? st16(epilogue_value(v, scale_of(bat, m, n + e), ci + e, n + e)) : 0u;
        if (live && !whole) c[ci + e] = uint16_t(h[e]);
    }
    if (whole && (ABLATE & 256u) == 0u)
        c4[ci / 8u] = uvec4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),
                            h[6] | (h[7] << 16));
}

/* Piece q (row q / (WN/8), 8 columns) of the warp's 16 x WN strip at C's (fm, fn). */
void epilogue_piece(uint q, uint scratch, uint cbase, uint bat, uint fm, uint fn) {
    uint r = q / (WN / 8u), col = (q % (WN / 8u)) * 8u;
    epilogue_store8(scratch + r * (WN / 4u) + col / 4u, cbase + (fm + r) * p.N + fn + col, bat,
                    fm + r, fn + col);
}

/*
 * Row i of the warp's fragments into C: the FN accumulators side by side
 * into the scratch (16 rows of WN f32), then 8 columns an invocation.
 */
#define EPILOGUE_ROW(i)                                                                  \
    if (i < FM) {                                                                        \
        UNROLL for (uint j = 0u; j < NMAX; j++)                                          \
            if (j < FN && (ABLATE & 128u) == 0u)                                         \
                CM_STORE(acc[i * NMAX + j], scratch + j * FRAG_N / 4u, WN / 4u);         \
        subgroupMemoryBarrierShared();                                                   \
        subgroupBarrier();                                                               \
        for (uint q = lane; q < 2u * WN; q += SUBGROUP_SIZE)                             \
            epilogue_piece(q, scratch, cbase, bat, m0 + wm0 + i * 16u, n0 + wn0);        \
        subgroupMemoryBarrierShared();                                                   \
        subgroupBarrier();                                                               \
    }
/*
 * Row i of the warp's fragments, each straight into C where `direct` (uniform) and the
 * warp's 16 x WN strip lies whole inside C (CM_DIRECT), else EPILOGUE_ROW(i).
 */
#ifdef CM_DIRECT
#define EPILOGUE_ROW_ANY(i)                                                              \
    if (i < FM) {                                                                        \
        uint fm = m0 + wm0 + i * 16u, fn = n0 + wn0;                                     \
        if (direct && fm + 16u <= p.M && fn + WN <= p.N) {                               \
            UNROLL for (uint j = 0u; j < NMAX; j++)                                      \
                if (j < FN)                                                              \
                    cm_store_c(acc[i * NMAX + j], cbase + fm * p.N + fn + j * FRAG_N, p.N); \
        } else {                                                                         \
            EPILOGUE_ROW(i)                                                              \
        }                                                                                \
    }
#else
#define EPILOGUE_ROW_ANY(i) EPILOGUE_ROW(i)
#endif
#ifdef CM_EMULATE
#define EPILOGUE_ROWS EPILOGUE_ROW_ANY(0u) EPILOGUE_ROW_ANY(1u)
#else
#define EPILOGUE_ROWS                                                                    \
    EPILOGUE_ROW_ANY(0u) EPILOGUE_ROW_ANY(1u) EPILOGUE_ROW_ANY(2u) EPILOGUE_ROW_ANY(3u)
#endif

void main() {
    uint tiles = p.tiles_m * p.tiles_n, g = chm_group();
    split_ix = 0u;
    if (KSPLIT > 1u) {
        uint per = p.batch * tiles;
        split_ix = g / per;
        g -= split_ix * per;
    }
    uint bat = g / tiles, t = g % tiles;
    if (bat >= p.batch) return; /* whole workgroups only */
    /*
     * Tile order: down columns of 16 tile rows (groups), so that the workgroups
     * running at once share fewer rows of A and columns of B than whole tile
     * rows would (L2 reuse); ABLATE bit 64: row by row.
     */
    uint tm = t / p.tiles_n, tn = t % p.tiles_n;
    if ((ABLATE & 64u) == 0u) {
        const uint GM = 16u;
        uint per = GM * p.tiles_n, grp = t / per, first = grp * GM;
        uint rows = min(p.tiles_m - first, GM), i = t - grp * per;
        tm = first + i % rows;
        tn = i / rows;
    }
    uint m0 = tm * BM, n0 = tn * BN;
#ifdef CM_EMULATE
    bool ta = (p.flags & 1u) != 0u, tb = (p.flags & 2u) != 0u;
#else
    bool ta = TRANS_A, tb = TRANS_B;
#endif
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
    uint kbeg = 0u;
    if (KSPLIT > 1u) { /* this split's terms (none past K: zero sums) */
        uint kper = (p.K + KSPLIT * BK - 1u) / (KSPLIT * BK) * BK;
        kbeg = min(split_ix * kper, kend);
        kend = min(kbeg + kper, kend);
    }
    uint nslices = (kend - kbeg + BK - 1u) / BK;
    uvec4 ra[LMAX], rb[LMAX]; /* the next slice, in flight */
    slice sa_, sb_;
/* The slices of step ks (k0 = ks*BK) of A and B. */
#define MAKE_SLICES(ks)                                                                  \
    {                                                                                    \
        uint k0 = kbeg + (ks) * BK;                                                      \
        sa_ = ta ? slice_make(abase, p.lda, k0, m0, BK, BM, klive, mlive, false)         \
                 : slice_make(abase, p.lda, m0, k0, BM, BK, mlive, klive, true);         \
        sb_ = tb ? slice_make(bbase, p.ldb, n0, k0, BN, BK, p.N, klive, true)            \
                 : slice_make(bbase, p.ldb, k0, n0, BK, BN, klive, p.N, false);          \
    }
/* Issue the global loads of the current slices into ra/rb: words (FETCH word_*) or any (gather_*). */
#define FETCH(ks, FA, FB)                                                                \
    if ((ABLATE & 1u) != 0u) {                                                           \
        UNROLL for (uint l = 0u; l < LMAX; l++) ra[l] = rb[l] = uvec4(lid + l + (ks));   \
    } else {                                                                             \
        UNROLL for (uint l = 0u; l < LMAX; l++) {                                        \
            uint w = lid + l * WG_SIZE;                                                  \
            if (w < BM * BK / 8u) ra[l] = FA(sa_, w);                                    \
            if (w < BN * BK / 8u) rb[l] = FB(sb_, w);                                    \
        }                                                                                \
    }
/* Multiply slice ks out of its stage. */
#define MULTIPLY(ks)                                                                     \
    if ((ABLATE & 8u) == 0u) {                                                           \
        uint ast = ((ks) & 1u) * A_WORDS, bst = B_STAGES + ((ks) & 1u) * B_WORDS;        \
        MULTIPLY_SLICE(ast, bst)                                                         \
    }
/* Stage slice ks from ra/rb; its stage was last read two slices ago, before the last barrier. */
#define STAGE(ks)                                                                        \
    if ((ABLATE & 2u) == 0u) {                                                           \
        uint ast = ((ks) & 1u) * A_WORDS, bst = B_STAGES + ((ks) & 1u) * B_WORDS;        \
        UNROLL for (uint l = 0u; l < LMAX; l++) {                                        \
            uint w = lid + l * WG_SIZE;                                                  \
            if (w < BM * BK / 8u) S[ast + staged(sa_, w, BM)] = ra[l];                   \
            if (w < BN * BK / 8u) S[bst + staged(sb_, w, BN)] = rb[l];                   \
        }                                                                                \
    }
#define SLICE_BARRIER                                                                    \
    if ((ABLATE & 4u) == 0u) barrier();

    /*
     * Every slice whole and aligned (the first and the last are: those between
     * lie between them): a loop without branches, so that the compiler may
     * interleave the staging stores and the next loads with the products.
     * Otherwise each slice picks words or gathers (one uniform branch a slice).
     */
    bool steady = false;
    if (nslices > 0u && (ABLATE & 16u) == 0u) {
        MAKE_SLICES(nslices - 1u)
        steady = sa_.fast && sb_.fast;
        MAKE_SLICES(0u)
        steady = steady && sa_.fast && sb_.fast;
    }
    if (steady) {
        FETCH(0u, word_a, word_b)
        STAGE(0u)
        SLICE_BARRIER
        for (uint ks = 1u; ks < nslices; ks++) {
            MAKE_SLICES(ks)
            FETCH(ks, word_a, word_b)
            MULTIPLY(ks - 1u)
            STAGE(ks)
            SLICE_BARRIER
        }
        MULTIPLY(nslices - 1u)
        barrier();
    } else {
        for (uint ks = 0u; ks <= nslices; ks++) {
            if (ks < nslices) {
                MAKE_SLICES(ks)
                if (sa_.fast && sb_.fast) {
                    FETCH(ks, word_a, word_b)
                } else {
                    FETCH(ks, gather_a, gather_b)
                }
            }
            if (ks > 0u) { MULTIPLY(ks - 1u) }
            if (ks < nslices) { STAGE(ks) }
            SLICE_BARRIER
        }
    }

    /* Epilogue through 16 x WN f32 of scratch per warp (the K loop ended on a barrier). */
    uint scratch = warp * 4u * WN, lane = gl_SubgroupInvocationID;
    uint cbase = p.off[3] + bat * p.sc;
    /* direct stores: no bias, alpha not 0 (0 * a NaN product is 0), C's rows 8-aligned */
    bool direct = (ABLATE & 1024u) == 0u && KSPLIT == 1u && p.alpha != 0.0 &&
                  (p.flags & 4u) == 0u && p.N % 8u == 0u && cbase % 8u == 0u;
    if ((ABLATE & 512u) == 0u) { EPILOGUE_ROWS }
}
