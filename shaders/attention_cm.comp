/*
 * attention_cm.comp: attention_fwd.comp's causal grouped-query attention for
 * f16 and bf16 tensors with Q K^T and P V on cooperative matrices
 * (GL_NV_cooperative_matrix or VK_KHR_cooperative_matrix: the tensor cores),
 * online softmax and lse in f32.
 * q, out [B,Tq,H,D]; k, v [B,Tk,Hk,D]; lse [B,H,Tq] f32; head h reads kv
 * head h / (H/Hk); query i sits at position i + (Tk - Tq) and sees keys j <=
 * that position. attention.c runs it for attention_fwd where the device has
 * cooperative matrices and D is a multiple of 16 up to 128.
 *
 * One workgroup per (b, h, tile of BR = 16 * WARPS query rows); warp w
 * (a subgroup) owns rows 16w..16w+15 of the tile. The q tile is staged once
 * in shared memory and each warp keeps its D/16 A fragments in registers;
 * key and value tiles of BC rows go through two shared-memory stages: while
 * the warps work on tile t out of one stage, tile t+1's global loads are in
 * flight in registers, then stored into the other stage; one barrier per
 * tile (the q tile shares the second stage's words until its fragments are
 * loaded). Per key tile, in each warp that sees any of its keys:
 *   S = Q K^T: BC/FRAG_N f32 accumulators (K^T fragments are column-major
 *     loads of the staged k rows), stored to the warp's f32 scratch;
 *   softmax: LPR lanes per row (RPL rows per lane where the subgroup has
 *     fewer than 16 lanes) read the row (4 floats a load), update its
 *     running max m and sum l (in registers: a lane keeps its rows for the
 *     whole walk), and write P = exp(s - m) to the warp's P rows and the
 *     row's factor alpha = exp(m_old - m_new) to shared memory (scores,
 *     m and the exponents in units of log2, powers of 2 taken);
 *   O *= alpha: only when some row's factor is not 1 (subgroupAny), in
 *     registers: each accumulator element is scaled by its row's factor
 *     (every lane knows its elements' rows and columns from the start:
 *     accumulators loaded from scratch holding r, then c, at (r, c); the
 *     element-to-lane mapping is the same for every matrix of one type);
 *   O += P V: D/FRAG_N f32 accumulators, P as A fragments, v rows as B.
 * At the end each lane writes its elements of O: out = O / l rounded once
 * to the dtype; lse = m + log(l). Every sum has one fixed order:
 * deterministic.
 *
 * Registers (as matmul_cm.comp's): every loop that touches a fragment, an
 * accumulator or a register array has a literal bound (spec constants guard
 * the body, no `continue`) and is unrolled by glslang, and functions called
 * in such loops return once: an early return or a `continue` kept glslang's
 * optimizer from unrolling the loop, and arrays of cooperative matrices
 * indexed by its variable went to local memory (session 11: 432-1536 bytes
 * a lane, Local Memory Size in CHIMERA_VULKAN_PIPELINE_STATS).
 *
 * bf16 inputs, three ways. CM_BF16_NATIVE (VK_KHR_shader_bfloat16; or
 * emulated): the tiles stay bf16 on bf16 matrices, products exact in f32;
 * P is split into two bf16 parts, hi = bf16(p) and lo = bf16(p - hi), both
 * rounded to nearest, and P V is summed from both (P to 2^-16 relative,
 * finer than f16's 2^-11).
 * Otherwise (CM_SCALED) each tile is converted to f16 at staging with one
 * power-of-two scale 2^e per tile (its largest |value| lands in [2^14,
 * 2^15), as cm_scale.comp does per row): exact for every value within 2^28
 * of the tile's largest (bf16 has 8 significant bits, f16 11, and f16 is
 * normal down to 2^-14); smaller ones become f16 subnormals, off by at most
 * 2^-39 of the tile's largest, far below the bf16 rounding of the inputs.
 * The scores are the products times 2^-(eq + ek) (one factor per tile
 * pair); O is kept in units of 2^ev of the last value tile, and a change of
 * ev joins alpha in the row factor. The scaled tiles need their maxima
 * before they are stored, so that path stages each tile in one shared stage
 * after the last step (two barriers a step, no prefetch). f16 tensors are
 * staged as they are; P is rounded to f16 (relative 2^-11; l sums the f32
 * values) on f16 matrices.
 *
 * Variants (-D): DT_BF16 or DT_F16; CM_KHR (VK_KHR_cooperative_matrix) or
 * NVIDIA's; CM_BF16_NATIVE (with DT_BF16 and CM_KHR or CM_EMULATE);
 * CM_EMULATE: the cooperative-matrix operations in plain GLSL (below, as
 * cm_emulate.glsl does for matmul_cm), so that lavapipe runs and tests every
 * index of this file.
 * Spec constants: 0 workgroup size = WARPS * subgroup size, 1 subgroup
 * size, 2 BC (multiple of 16 up to 64, BC / LPR a multiple of 8), 3 HD = D
 * (multiple of 16 up to 128), 4 FRAG_N (16, or 8 where the device lists
 * 16x8x16), 5 SPAD (0 or 1), 6 ABLATE (diagnostics, below). attention.c
 * checks them, that the shared arrays fit and that an invocation fetches at
 * most FETCH_MAX words of a key/value tile pair.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_vote : require
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

/* bf16 tiles on bf16 matrices (CM_BF16_NATIVE), or scaled into f16 (CM_SCALED). */
#if defined(DT_BF16) && !defined(CM_BF16_NATIVE)
#define CM_SCALED
#endif

layout(constant_id = 2) const uint BC = 32;
layout(constant_id = 3) const uint HD = 64;
layout(constant_id = 4) const uint FRAG_N = 16;
layout(constant_id = 5) const uint SPAD = 1; /* padding words of scratch and P rows (0 or 1) */
/*
 * Ablations for tools/vk_bench (CHIMERA_VULKAN_ATTN_ABLATE; 0 in every real
 * product, and then dead code; results wrong: the times say what each part
 * costs): 1 no global loads (constant words are staged), 2 no bf16 tile
 * maxima (e = 0, no barrier), 4 no softmax, 8 no O rescale, 16 no Q K^T,
 * 32 no P V.
 */
layout(constant_id = 6) const uint ABLATE = 0;
const uint WARPS = WG_SIZE / SUBGROUP_SIZE;
const uint BR = 16u * WARPS;                                       /* query rows per workgroup */
const uint LPR = SUBGROUP_SIZE >= 16u ? SUBGROUP_SIZE / 16u : 1u;  /* lanes per softmax row */
const uint RPL = SUBGROUP_SIZE >= 16u ? 1u : 16u / SUBGROUP_SIZE;  /* rows per lane */
const uint CPL = BC / LPR;                                         /* columns per lane */
const float MASKED = -1.0e30;
const float LOG2E = 1.4426950408889634, LN2 = 0.6931471805599453;
/* Literal bounds of the register arrays (spec constants guard the bodies), as in matmul_cm.comp. */
#ifdef CM_EMULATE
#define SMAX 4 /* S accumulators: BC / FRAG_N (emulated FRAG_N is 16) */
#define OMAX 8 /* O accumulators: HD / FRAG_N */
#define UNROLL [[dont_unroll]]
#else
#define SMAX 8
#define OMAX 16
#define UNROLL [[unroll]]
#endif
#define QMAX 8   /* A fragments of q: HD / 16 */
#define PMAX 4   /* A fragments of P: BC / 16 */
#define RPL_MAX 2 /* subgroups of 8 lanes or more */
#define CPL_MAX 64 /* columns per lane: BC / LPR */
#ifdef CM_EMULATE
#define ELMAX 32 /* accumulator elements per lane: 16 * FRAG_N / SUBGROUP_SIZE */
#else
#define ELMAX 16 /* (attention.c: subgroups of 16 lanes or more, or FRAG_N 8) */
#endif
#ifdef CM_EMULATE
#define FETCH_MAX 64 /* words of a k, v tile pair per invocation (attention.c checks) */
#else
#define FETCH_MAX 16
#endif
#ifdef CM_BF16_NATIVE
#define NP 2u /* P rows: hi and lo parts */
#else
#define NP 1u
#endif

layout(binding = 0) readonly buffer Q_ { uint16_t q16[]; };
layout(binding = 0) readonly buffer Q4_ { uvec4 q4[]; };
layout(binding = 1) readonly buffer K_ { uint16_t k16[]; };
layout(binding = 1) readonly buffer K4_ { uvec4 k4[]; };
layout(binding = 2) readonly buffer V_ { uint16_t v16[]; };
layout(binding = 2) readonly buffer V4_ { uvec4 v4[]; };
layout(binding = 3) writeonly buffer Out { uint16_t out16[]; };
layout(binding = 4) writeonly buffer Lse { float lse[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint B, Tq, Tk, H, Hk;
    uint nqt;  /* query tiles per (b, h) */
    float scale;
} p;

/*
 * Shared memory in uvec4 words (8 16-bit values or 4 f32 each; fragment
 * offsets and strides count words): NSTAGE stages of a k and a v tile, BC x
 * QW each (staged rows padded by one word; emulated, one stage, refilled
 * between two barriers); the q tile BR x QW in the second stage where it
 * fits (BR <= 2 BC; not emulated, whose fragments are read from S at each
 * product), else after them; per warp an f32 scratch
 * of 16 x SW and NP sets of P rows of 16 x PW (rows padded by SPAD words: 1,
 * or 0 where that makes 4 warps fit), per warp 16 row factors (4 words), per
 * warp one word for the tile maxima (components x, y, z: q, k, v).
 */
const uint QW = HD / 8u + 1u, SW = BC / 4u + SPAD, PW = BC / 8u + SPAD, OSW = FRAG_N / 4u + SPAD;
const uint STAGE_W = 2u * BC * QW; /* a k and a v tile */
#ifdef CM_EMULATE
/* emulated fragments are read from S at each product: q apart, one stage (lavapipe's 32 KiB) */
#define NSTAGE 1u
const bool Q_IN_STAGE = false;
#else
#define NSTAGE 2u
const bool Q_IN_STAGE = BR <= 2u * BC;
#endif
const uint Q_AT = Q_IN_STAGE ? STAGE_W : NSTAGE * STAGE_W;
const uint X_AT = Q_IN_STAGE ? 2u * STAGE_W : NSTAGE * STAGE_W + BR * QW;
const uint P_AT = X_AT + WARPS * 16u * SW, F_AT = P_AT + NP * WARPS * 16u * PW;
const uint M_AT = F_AT + WARPS * 4u;
shared uvec4 S[M_AT + WARPS];

#ifdef CM_EMULATE
/*
 * The emulated operations (cm_emulate.glsl's, rewritten with rolled loops:
 * this shader has more accumulators, and lavapipe's compile of unrolled
 * ones ran out of bounds): a fragment is where its 16-bit values lie in S
 * (coopMatLoad's reading), an accumulator holds 16 x FRAG_N f32, element
 * e = r*FRAG_N + c in lane e % SUBGROUP_SIZE (its t-th element, t = e /
 * SUBGROUP_SIZE: CM_LEN and CM_EL). Products of 16-bit values are exact in
 * f32, summed in order of k. The inner k loop is unrolled (as
 * attention_bwd_cm.comp's: lavapipe's loops seem capped near 65535 trips,
 * which d128's walks with both parts of P passed).
 */
#define CM_LANE_MAX 32u /* 16 x 16 / the smallest subgroup allowed (8) */
struct cm_in {
    uint elem, stride; /* words: row (or column) i starts at elem + i*stride */
    bool col;
};
struct cm_acc {
    float v[CM_LANE_MAX];
};
float cm_at(cm_in f, uint r, uint c) {
    uint word = f.col ? f.elem + c * f.stride : f.elem + r * f.stride, pos = f.col ? r : c;
    uint w = S[word + pos / 8u][(pos % 8u) / 2u];
#ifdef CM_BF16_NATIVE
    return uintBitsToFloat(pos % 2u == 0u ? w << 16u : w & 0xffff0000u);
#else
    vec2 hv = unpackHalf2x16(w);
    return pos % 2u == 0u ? hv.x : hv.y;
#endif
}
cm_acc cm_zero() {
    cm_acc z;
    [[dont_unroll]] for (uint t = 0u; t < CM_LANE_MAX; t++) z.v[t] = 0.0;
    return z;
}
cm_acc cm_muladd(cm_in x, cm_in y, cm_acc acc) {
    [[dont_unroll]] for (uint t = 0u; t < 16u * FRAG_N / SUBGROUP_SIZE; t++) {
        uint e = gl_SubgroupInvocationID + t * SUBGROUP_SIZE, r = e / FRAG_N, c = e % FRAG_N;
        float s = acc.v[t];
        [[unroll]] for (uint k = 0u; k < 16u; k++) s += cm_at(x, r, k) * cm_at(y, k, c);
        acc.v[t] = s;
    }
    return acc;
}
void cm_store(cm_acc acc, uint elem, uint stride) {
    [[dont_unroll]] for (uint t = 0u; t < 16u * FRAG_N / SUBGROUP_SIZE; t++) {
        uint e = gl_SubgroupInvocationID + t * SUBGROUP_SIZE, r = e / FRAG_N, c = e % FRAG_N;
        S[elem + r * stride + c / 4u][c % 4u] = floatBitsToUint(acc.v[t]);
    }
}
/* An f32 accumulator from words elem + r*stride of S (the inverse of cm_store). */
cm_acc cm_load_acc(uint elem, uint stride) {
    cm_acc a;
    [[dont_unroll]] for (uint t = 0u; t < 16u * FRAG_N / SUBGROUP_SIZE; t++) {
        uint e = gl_SubgroupInvocationID + t * SUBGROUP_SIZE, r = e / FRAG_N, c = e % FRAG_N;
        a.v[t] = uintBitsToFloat(S[elem + r * stride + c / 4u][c % 4u]);
    }
    return a;
}
#define CM_IN_A cm_in
#define CM_IN_B cm_in
#define CM_ACC cm_acc
#define CM_ZERO cm_zero()
#define CM_LOAD(f, e, s, cm) f = cm_in(e, s, cm)
#define CM_LOAD_ACC(f, e, s) f = cm_load_acc(e, s)
#define CM_MULADD(x, y, acc) cm_muladd(x, y, acc)
#define CM_STORE(acc, e, s) cm_store(acc, e, s)
#define CM_LEN(m) (16u * FRAG_N / SUBGROUP_SIZE)
#define CM_EL(m, i) m.v[i]
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
#define CM_LOAD_ACC(f, elem, stride) coopMatLoad(f, S, elem, stride, gl_CooperativeMatrixLayoutRowMajor)
#define CM_MULADD(x, y, acc) coopMatMulAdd(x, y, acc)
#define CM_STORE(acc, elem, stride) coopMatStore(acc, S, elem, stride, gl_CooperativeMatrixLayoutRowMajor)
#define CM_LEN(m) uint(m.length())
#define CM_EL(m, i) m[i]
#else
#define CM_IN_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CM_IN_B fcoopmatNV<16, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ZERO CM_ACC(0.0)
#define CM_LOAD(f, elem, stride, col) coopMatLoadNV(f, S, elem, stride, col)
#define CM_LOAD_ACC(f, elem, stride) coopMatLoadNV(f, S, elem, stride, false)
#define CM_MULADD(x, y, acc) coopMatMulAddNV(x, y, acc)
#define CM_STORE(acc, elem, stride) coopMatStoreNV(acc, S, elem, stride, false)
#define CM_LEN(m) uint(m.length())
#define CM_EL(m, i) m[i]
#endif

uint b, h, kvh, q0, warp, lane;

/* Make a warp's shared-memory writes visible to the whole warp. */
void warp_sync() {
    subgroupMemoryBarrierShared();
    subgroupBarrier();
}

/* 8 elements from element `at` of a 16-bit tensor, one word where its offset is 8-aligned. */
#define GATHER8(name, arr)                                                                   \
    uvec4 name(uint at) {                                                                    \
        uvec4 w;                                                                             \
        [[unroll]] for (uint i = 0u; i < 4u; i++)                                            \
            w[i] = uint(arr[at + 2u * i]) | (uint(arr[at + 2u * i + 1u]) << 16u);            \
        return w;                                                                            \
    }
GATHER8(gather_q, q16)
GATHER8(gather_k, k16)
GATHER8(gather_v, v16)

/*
 * Word x (row x / (HD/8), columns 8*(x % (HD/8))..) of the tile of tensor t
 * (0 q, 1 k, 2 v) at row pos0. One return (callers in unrolled loops: early
 * returns kept glslang's optimizer from unrolling them).
 */
uvec4 tile_word(uint t, uint pos0, uint x) {
    uint T = t == 0u ? p.Tq : p.Tk, pos = pos0 + x / (HD / 8u);
    uint heads = t == 0u ? p.H : p.Hk, head = t == 0u ? h : kvh;
    uint at = p.off[t] + ((b * T + pos) * heads + head) * HD + 8u * (x % (HD / 8u));
    bool fast = p.off[t] % 8u == 0u;
    uvec4 w = uvec4(0u);
    if ((ABLATE & 1u) != 0u) w = uvec4(0x3c003c00u);
    else if (pos < T && fast) w = t == 0u ? q4[at / 8u] : t == 1u ? k4[at / 8u] : v4[at / 8u];
    else if (pos < T) w = t == 0u ? gather_q(at) : t == 1u ? gather_k(at) : gather_v(at);
    return w;
}

/* x * 2^e for |e| up to ~250, in two exact steps (2^e itself may not be an f32). */
vec2 scale2(vec2 x, int e) { return ldexp(ldexp(x, ivec2(e / 2)), ivec2(e - e / 2)); }
float scale1(float x, int e) { return ldexp(ldexp(x, e / 2), e - e / 2); }

#ifdef CM_SCALED
float word_max(uvec4 w) {
    float m = 0.0;
    for (uint i = 0u; i < 4u; i++)
        m = max(m, max(abs(uintBitsToFloat(w[i] << 16u)), abs(uintBitsToFloat(w[i] & 0xffff0000u))));
    return m;
}
#endif

/* Word x of a staged tile: its place in S from the tile's first word. */
uint staged_at(uint x) { return (x / (HD / 8u)) * QW + x % (HD / 8u); }

/*
 * n rows of tensor t from row pos0 into S at word dst (row stride QW), as
 * they are or (CM_SCALED) as f16 scaled by 2^e; returns e (0 unscaled). The
 * bf16 maximum: subgroup maxima in S, one barrier, every invocation reads
 * them; then the words are read again (from the cache) and scaled.
 */
int stage(uint t, uint pos0, uint n, uint dst) {
    uint words = n * (HD / 8u), lid = gl_LocalInvocationID.x;
    int e = 0;
#ifdef CM_SCALED
    if ((ABLATE & 2u) == 0u) {
        float mx = 0.0;
        for (uint x = lid; x < words; x += WG_SIZE) mx = max(mx, word_max(tile_word(t, pos0, x)));
        mx = subgroupMax(mx);
        if (subgroupElect()) S[M_AT + warp][t] = floatBitsToUint(mx);
        barrier();
        mx = 0.0;
        for (uint w = 0u; w < WARPS; w++) mx = max(mx, uintBitsToFloat(S[M_AT + w][t]));
        int E;
        frexp(mx, E);
        e = mx > 0.0 ? 15 - E : 0;
    }
#endif
    for (uint x = lid; x < words; x += WG_SIZE) {
        uvec4 w = tile_word(t, pos0, x);
#ifdef CM_SCALED
        for (uint i = 0u; i < 4u; i++)
            w[i] = packHalf2x16(scale2(vec2(uintBitsToFloat(w[i] << 16u),
                                            uintBitsToFloat(w[i] & 0xffff0000u)), e));
#endif
        S[dst + staged_at(x)] = w;
    }
    return e;
}

#ifndef CM_SCALED
/*
 * The prefetch: an invocation's words of the k and v tiles at key j0 (word
 * x < KVW of k, else of v), fetched into registers, later put into a stage.
 */
const uint KVW = BC * (HD / 8u), FETCH = (2u * KVW + WG_SIZE - 1u) / WG_SIZE;
uvec4 fetched[FETCH_MAX];
void fetch(uint j0) {
    UNROLL for (uint i = 0u; i < FETCH_MAX; i++) {
        uint x = gl_LocalInvocationID.x + i * WG_SIZE;
        if (i < FETCH && x < 2u * KVW) fetched[i] = tile_word(x < KVW ? 1u : 2u, j0, x % KVW);
    }
}
void put(uint stage_at) {
    UNROLL for (uint i = 0u; i < FETCH_MAX; i++) {
        uint x = gl_LocalInvocationID.x + i * WG_SIZE;
        if (i < FETCH && x < 2u * KVW)
            S[stage_at + (x < KVW ? 0u : BC * QW) + staged_at(x % KVW)] = fetched[i];
    }
}
#endif

/* Factor of row r of this warp (shared: every lane of the warp scales accumulator elements). */
float row_factor(uint r) { return uintBitsToFloat(S[F_AT + warp * 4u + r / 4u][r % 4u]); }
void set_row_factor(uint r, float f) { S[F_AT + warp * 4u + r / 4u][r % 4u] = floatBitsToUint(f); }

/* f's bf16 bits rounded to nearest even (f finite: no NaN case, unlike chm_f32_to_bf16). */
uint bf16_rne(float f) {
    uint u = floatBitsToUint(f);
    return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}

/*
 * 8 (4) probabilities as 16-bit words: f16, or (CM_BF16_NATIVE) bf16 hi
 * parts (lo false) or lo parts p - hi (lo true), each rounded to nearest.
 */
uvec2 pack_p4(vec4 x, bool lo) {
#ifdef CM_BF16_NATIVE
    uvec4 hi = uvec4(bf16_rne(x.x), bf16_rne(x.y), bf16_rne(x.z), bf16_rne(x.w));
    if (lo) {
        vec4 rest = x - uintBitsToFloat(hi << 16u);
        hi = uvec4(bf16_rne(rest.x), bf16_rne(rest.y), bf16_rne(rest.z), bf16_rne(rest.w));
    }
    return uvec2(hi.x | (hi.y << 16u), hi.z | (hi.w << 16u));
#else
    return uvec2(packHalf2x16(x.xy), packHalf2x16(x.zw));
#endif
}
uvec4 pack_p(vec4 a, vec4 b, bool lo) { return uvec4(pack_p4(a, lo), pack_p4(b, lo)); }

/*
 * The online softmax of row r of the warp's scratch (its scores = products
 * * sf, in units of log2: sf holds log2(e); columns c < lim of the tile are
 * keys the row sees): the lane's CPL columns from c0, read once into
 * registers, update the running max m and sum l, P = 2^(s - m) goes to the
 * warp's P rows at pw, the row factor 2^(m_old - m_new) * 2^dev to shared
 * memory (by the first of the row's lanes); returns whether the factor is
 * not 1.
 */
bool softmax_row(uint xw, uint pw, uint r, uint c0, uint lim, float sf, int dev, inout float m,
                 inout float l) {
    vec4 sv[CPL_MAX / 4];
    float mx = MASKED;
    UNROLL for (uint w = 0u; w < CPL_MAX / 4u; w++)
        if (4u * w < CPL) sv[w] = uintBitsToFloat(S[xw + r * SW + c0 / 4u + w]) * sf;
    UNROLL for (uint c = 0u; c < CPL_MAX; c++)
        if (c < CPL && c0 + c < lim) mx = max(mx, sv[c / 4u][c % 4u]);
    for (uint x = 1u; x < LPR; x <<= 1u) mx = max(mx, subgroupShuffleXor(mx, x));
    float mn = max(m, mx), alpha = exp2(m - mn), ls = 0.0;
    UNROLL for (uint c = 0u; c < CPL_MAX; c++) {
        if (c < CPL) {
            float pc = c0 + c < lim ? exp2(sv[c / 4u][c % 4u] - mn) : 0.0;
            sv[c / 4u][c % 4u] = pc;
            ls += pc;
        }
    }
    UNROLL for (uint w = 0u; w < CPL_MAX / 8u; w++) {
        if (8u * w < CPL) {
            S[pw + r * PW + c0 / 8u + w] = pack_p(sv[2u * w], sv[2u * w + 1u], false);
#ifdef CM_BF16_NATIVE
            uint lo_at = pw + WARPS * 16u * PW + r * PW + c0 / 8u + w;
            S[lo_at] = pack_p(sv[2u * w], sv[2u * w + 1u], true);
#endif
        }
    }
    for (uint x = 1u; x < LPR; x <<= 1u) ls += subgroupShuffleXor(ls, x);
    l = l * alpha + ls;
    m = mn;
    float f = scale1(alpha, dev);
    if (lane % LPR == 0u) set_row_factor(r, f);
    return f != 1.0;
}

/* This lane's rows of the softmax: lane / LPR, and (subgroups under 16 lanes) 16 / RPL more. */
uint softmax_r(uint u) { return lane / LPR + u * (SUBGROUP_SIZE / LPR); }

void main() {
    uint g = chm_group();
    uint qt = g % p.nqt;
    h = (g / p.nqt) % p.H;
    b = g / (p.nqt * p.H);
    kvh = h / (p.H / p.Hk);
    q0 = qt * BR;
    warp = gl_SubgroupID;
    lane = gl_SubgroupInvocationID;
    uint shift = p.Tk - p.Tq, wrow0 = q0 + 16u * warp, xw = X_AT + warp * 16u * SW;
    uint pw = P_AT + warp * 16u * PW;
    /* keys any row of the tile sees: up to the last valid row's position */
    uint jend = min(p.Tk, min(p.Tq, q0 + BR) + shift);
#ifndef CM_SCALED
    fetch(0u);
#endif
    int eq = stage(0u, q0, BR, Q_AT);
#ifndef CM_SCALED
    put(0u);
#endif
    /*
     * Each accumulator element's row and column (the element-to-lane mapping
     * is the same for every matrix of one type): from accumulators loaded
     * from scratch holding r (then c) at (r, c).
     */
    uint er[ELMAX], ec[ELMAX];
    CM_ACC ids;
    for (uint e = lane; e < 16u * FRAG_N; e += SUBGROUP_SIZE)
        S[xw + (e / FRAG_N) * OSW + (e % FRAG_N) / 4u][e % 4u] = floatBitsToUint(float(e / FRAG_N));
    warp_sync();
    CM_LOAD_ACC(ids, xw, OSW);
    UNROLL for (uint e = 0u; e < ELMAX; e++)
        if (e < CM_LEN(ids)) er[e] = uint(CM_EL(ids, e));
    warp_sync();
    for (uint e = lane; e < 16u * FRAG_N; e += SUBGROUP_SIZE)
        S[xw + (e / FRAG_N) * OSW + (e % FRAG_N) / 4u][e % 4u] = floatBitsToUint(float(e % FRAG_N));
    warp_sync();
    CM_LOAD_ACC(ids, xw, OSW);
    UNROLL for (uint e = 0u; e < ELMAX; e++)
        if (e < CM_LEN(ids)) ec[e] = uint(CM_EL(ids, e));
    barrier();
    CM_IN_A fq[QMAX];
    UNROLL for (uint kk = 0u; kk < QMAX; kk++)
        if (kk < HD / 16u) CM_LOAD(fq[kk], Q_AT + warp * 16u * QW + 2u * kk, QW, false);
    barrier(); /* q's words (in the second stage) are read */
    CM_ACC o[OMAX];
    UNROLL for (uint j = 0u; j < OMAX; j++) if (j < HD / FRAG_N) o[j] = CM_ZERO;
    float m0 = MASKED, l0 = 0.0, m1 = MASKED, l1 = 0.0; /* the lane's rows' max and sum */
    int ev_o = 0;      /* O holds values times 2^ev_o */
    bool fresh = true; /* O is still zero: no rescale */
    uint st = 0u;      /* the stage of this step's tiles */
    for (uint j0 = 0u; j0 < jend; j0 += BC) {
#ifdef CM_SCALED
        barrier(); /* every warp is done with the last k, v */
        int ek = stage(1u, j0, BC, 0u);
        int ev = stage(2u, j0, BC, BC * QW);
        barrier();
#else
        const int ek = 0, ev = 0;
        bool more = j0 + BC < jend;
        if (more) fetch(j0 + BC); /* in flight during this step */
#endif
        uint k_at = st * STAGE_W, v_at = k_at + BC * QW;
        /* warps whose rows all lie past Tq, or all before this tile, skip it (uniform per warp) */
        if (wrow0 < p.Tq && j0 <= wrow0 + 15u + shift) {
            /* score = product * sf, in units of log2 (the softmax takes powers of 2) */
            float sf = scale1(scale1(p.scale * LOG2E, -eq), -ek);
            CM_ACC sacc[SMAX];
            UNROLL for (uint j = 0u; j < SMAX; j++) if (j < BC / FRAG_N) sacc[j] = CM_ZERO;
            UNROLL for (uint kk = 0u; kk < QMAX; kk++) {
                UNROLL for (uint j = 0u; j < SMAX; j++) {
                    if (kk < HD / 16u && j < BC / FRAG_N && (ABLATE & 16u) == 0u) {
                        CM_IN_B kb;
                        CM_LOAD(kb, k_at + j * FRAG_N * QW + 2u * kk, QW, true);
                        sacc[j] = CM_MULADD(fq[kk], kb, sacc[j]);
                    }
                }
            }
            UNROLL for (uint j = 0u; j < SMAX; j++)
                if (j < BC / FRAG_N && (ABLATE & 16u) == 0u)
                    CM_STORE(sacc[j], xw + j * FRAG_N / 4u, SW);
            warp_sync();
            bool rescale = false;
            if ((ABLATE & 4u) == 0u) {
                uint c0 = (lane % LPR) * CPL, r = softmax_r(0u), i = wrow0 + r;
                /* columns c < lim of the tile are keys row r sees */
                uint lim = min(p.Tk, i + shift + 1u);
                lim = lim > j0 ? lim - j0 : 0u;
                rescale = softmax_row(xw, pw, r, c0, lim, sf, ev - ev_o, m0, l0);
                if (RPL > 1u) {
                    r = softmax_r(1u), i = wrow0 + r, lim = min(p.Tk, i + shift + 1u);
                    bool r1 = softmax_row(xw, pw, r, c0, lim > j0 ? lim - j0 : 0u, sf, ev - ev_o,
                                          m1, l1);
                    rescale = rescale || r1;
                }
            }
            ev_o = ev;
            warp_sync();
            /* O's rows times their factors, element by element (er: each element's row) */
            if (!fresh && subgroupAny(rescale) && (ABLATE & 8u) == 0u) {
                float fe[ELMAX];
                UNROLL for (uint e = 0u; e < ELMAX; e++)
                    if (e < CM_LEN(o[0])) fe[e] = row_factor(er[e]);
                UNROLL for (uint j = 0u; j < OMAX; j++)
                    UNROLL for (uint e = 0u; e < ELMAX; e++)
                        if (j < HD / FRAG_N && e < CM_LEN(o[0])) CM_EL(o[j], e) *= fe[e];
            }
            fresh = false;
            CM_IN_A fp[PMAX];
            UNROLL for (uint kk = 0u; kk < PMAX; kk++)
                if (kk < BC / 16u) CM_LOAD(fp[kk], pw + 2u * kk, PW, false);
#ifdef CM_BF16_NATIVE
            CM_IN_A fl[PMAX]; /* P's lo parts */
            UNROLL for (uint kk = 0u; kk < PMAX; kk++)
                if (kk < BC / 16u) CM_LOAD(fl[kk], pw + WARPS * 16u * PW + 2u * kk, PW, false);
#endif
            UNROLL for (uint j = 0u; j < OMAX; j++) {
                UNROLL for (uint kk = 0u; kk < PMAX; kk++) {
                    if (j < HD / FRAG_N && kk < BC / 16u && (ABLATE & 32u) == 0u) {
                        CM_IN_B vb;
                        CM_LOAD(vb, v_at + kk * 16u * QW + j * FRAG_N / 8u, QW, false);
#ifdef CM_BF16_NATIVE
                        o[j] = CM_MULADD(fl[kk], vb, o[j]);
#endif
                        o[j] = CM_MULADD(fp[kk], vb, o[j]);
                    }
                }
            }
        }
#ifndef CM_SCALED
        if (NSTAGE == 1u) barrier(); /* every warp is done with the only stage */
        if (more) put(((st + 1u) % NSTAGE) * STAGE_W);
        barrier(); /* the next tiles are staged; every warp is done with this stage */
        st = (st + 1u) % NSTAGE;
#endif
    }
    if (wrow0 >= p.Tq) return;
    /* out = O * 2^-ev_o / l, lse = m + log(l), for the rows below Tq */
    [[unroll]] for (uint u = 0u; u < RPL_MAX; u++) {
        uint r = softmax_r(u), i = wrow0 + r;
        float l = u == 0u ? l0 : l1, m = u == 0u ? m0 : m1;
        if (u < RPL && lane % LPR == 0u) set_row_factor(r, i < p.Tq ? scale1(1.0 / l, -ev_o) : 0.0);
        if (u < RPL && lane % LPR == 0u && i < p.Tq)
            lse[p.off[4] + (b * p.H + h) * p.Tq + i] = (m + log2(l)) * LN2;
    }
    warp_sync();
    /* each element of O to its place in out (er, ec: its row and column) */
    float fe[ELMAX];
    UNROLL for (uint e = 0u; e < ELMAX; e++)
        if (e < CM_LEN(o[0])) fe[e] = row_factor(er[e]);
    UNROLL for (uint j = 0u; j < OMAX; j++) {
        UNROLL for (uint e = 0u; e < ELMAX; e++) {
            uint i = wrow0 + er[e];
            if (j < HD / FRAG_N && e < CM_LEN(o[0]) && i < p.Tq) {
                float v = CM_EL(o[j], e) * fe[e];
#ifdef DT_BF16
                uint w = chm_f32_to_bf16(v);
#else
                uint w = chm_f32_to_f16(v);
#endif
                uint at = ((b * p.Tq + i) * p.H + h) * HD + j * FRAG_N + ec[e];
                out16[p.off[3] + at] = uint16_t(w);
            }
        }
    }
}
