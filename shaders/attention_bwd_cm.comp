/*
 * attention_bwd_cm.comp: attention_bwd.comp's dq and dk/dv passes for f16
 * and bf16 tensors with every product on cooperative matrices
 * (GL_NV_cooperative_matrix or VK_KHR_cooperative_matrix: the tensor
 * cores), in f32 accumulators. The probabilities are recomputed from lse
 * (flash-attention-2), Delta = rowsum(dout*out) comes from
 * attention_bwd.comp's DELTA pass; gradients ACCUMULATE. q, dout, dq
 * [B,Tq,H,D]; k, v, dk, dv [B,Tk,Hk,D]; lse, Delta [B,H,Tq] f32; query i
 * sits at position i + (Tk - Tq) and sees keys j <= that position; head h
 * reads kv head h / (H/Hk).
 *
 * Both passes have one shape. A workgroup owns BR = 16 * WARPS "owner" rows
 * of one head (warp w: rows 16w..16w+15), staged once (each warp then keeps
 * its A fragments of both owner tensors in registers), and walks tiles of
 * BC "walk" rows:
 *   DQ  (-DDQ): owner q, dout (head h), walk k, v: the key tiles up to the
 *       diagonal; grad1 = dq.
 *   DKV (default): owner k, v (kv head), walk q, dout: for each q head of
 *       the group in order, the query tiles at or after the owner keys;
 *       grad1 = dk, grad2 = dv.
 * The walk tiles (and, in DKV, their rows' lse and Delta) go through two
 * shared-memory stages: while the warps work on one step's tiles, the next
 * step's global loads are in flight in registers, then stored into the
 * other stage; one barrier per step (as attention_cm.comp). Per step, in
 * each warp that sees any pair of the step:
 *   X  = own1 walk1^T (S, or S^T in DKV), f32 scratch; P = exp(X*sf - lse)
 *        (masked: 0) as 16-bit values in the warp's P rows;
 *   DKV: grad2 += P walk2 (dv += P^T dout);
 *   X  = own2 walk2^T (dP, or dP^T); dS = P (dP - Delta) in the P rows;
 *   grad1 += dS walk1 * scale (dq += dS k, dk += dS^T q).
 * At the end each lane adds its accumulator elements to the tensor (rounded
 * once; their rows and columns from accumulators loaded from scratch holding
 * r, then c, at (r, c)). Every gradient element has one writer and every sum
 * one order: deterministic. Registers: attention_cm.comp's rules (unrolled
 * loops with literal bounds, no `continue`, one return in what they call: no
 * local memory).
 *
 * bf16, two ways. CM_BF16_NATIVE (VK_KHR_shader_bfloat16; or emulated):
 * the tiles stay bf16 on bf16 matrices (products exact in f32), P and dS are
 * rounded to bf16 (relative 2^-8; dS written over P in place), the
 * accumulators are in true units throughout. Otherwise (CM_SCALED) bf16
 * tiles are staged as f16 with one power-of-two scale per tile, as in
 * attention_cm.comp (whose comment bounds the error), staged after each
 * step (their maxima come first: no prefetch); f16 tensors are staged as
 * they are. On f16 matrices P is rounded to f16 and dS to f16 scaled by one
 * power of two per warp and step (largest |dS| in [2^14, 2^15)), relative
 * 2^-11; a gradient product adds into the gradient's accumulator brought to
 * the product's units (the tiles' power-of-two scales) and back, so the
 * accumulators stay in true units (grad1 without the softmax scale, which
 * the end applies).
 *
 * Variants (-D): DQ or not; DT_BF16 or DT_F16; CM_KHR or NVIDIA's;
 * CM_BF16_NATIVE (with DT_BF16 and CM_KHR or CM_EMULATE); CM_EMULATE (the
 * cooperative-matrix operations in plain GLSL, so that lavapipe runs every
 * index).
 * Spec constants: 0 workgroup size = WARPS * subgroup size, 1 subgroup
 * size, 2 BC (16, 32 or 64), 3 HD = D (multiple of 16 up to 128), 4 FRAG_N
 * (16, or 8 where the device lists 16x8x16), 5 SPAD (0 or 1), 6 ABLATE
 * (diagnostics, below). attention.c checks that the shared array fits and
 * that an invocation prefetches at most FETCH_MAX words.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
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
#include "dt.glsl"
#include "common.glsl"

/* bf16 tiles on bf16 matrices (CM_BF16_NATIVE), or scaled into f16 (CM_SCALED). */
#if defined(DT_BF16) && !defined(CM_BF16_NATIVE)
#define CM_SCALED
#endif

layout(constant_id = 2) const uint BC = 32;
layout(constant_id = 3) const uint HD = 64;
layout(constant_id = 4) const uint FRAG_N = 16;
layout(constant_id = 5) const uint SPAD = 1;
/*
 * Ablations for tools/vk_bench (CHIMERA_VULKAN_ATTN_ABLATE; 0 in every real
 * product, and then dead code; results wrong: the times say what each part
 * costs): 1 no global loads (constant words are staged), 2 no bf16 tile
 * maxima, 4 no probabilities or dS (the elementwise parts), 16 no X
 * products (S, dP), 32 no gradient products.
 */
layout(constant_id = 6) const uint ABLATE = 0;
const uint WARPS = WG_SIZE / SUBGROUP_SIZE;
const uint BR = 16u * WARPS; /* owner rows per workgroup */
const float LOG2E = 1.4426950408889634;
#ifdef CM_EMULATE
#define SMAX 4 /* accumulators of a 16 x BC product: BC / FRAG_N (emulated FRAG_N is 16) */
#define OMAX 8 /* gradient accumulators: HD / FRAG_N */
#define UNROLL [[dont_unroll]]
#else
#define SMAX 8
#define OMAX 16
#define UNROLL [[unroll]]
#endif
#define KMAX 8 /* k steps over D: HD / 16 */
#define PMAX 4 /* k steps over a walk tile: BC / 16 */
#ifdef CM_EMULATE
#define FETCH_MAX 64 /* words of a walk tile pair per invocation (attention.c checks) */
#else
#define FETCH_MAX 16
#endif
#define SFETCH_MAX 8 /* lse and Delta values of a walk tile per invocation: 2 BC / WG_SIZE */
#ifdef CM_EMULATE
#define ELMAX 32 /* accumulator elements per lane: 16 * FRAG_N / SUBGROUP_SIZE */
#else
#define ELMAX 16 /* (attention.c: subgroups of 16 lanes or more, or FRAG_N 8) */
#endif

layout(binding = 0) readonly buffer Q_ { uint16_t q16[]; };
layout(binding = 0) readonly buffer Q4_ { uvec4 q4[]; };
layout(binding = 1) readonly buffer K_ { uint16_t k16[]; };
layout(binding = 1) readonly buffer K4_ { uvec4 k4[]; };
layout(binding = 2) readonly buffer V_ { uint16_t v16[]; };
layout(binding = 2) readonly buffer V4_ { uvec4 v4[]; };
layout(binding = 3) readonly buffer Do_ { uint16_t do16[]; };
layout(binding = 3) readonly buffer Do4_ { uvec4 do4[]; };
layout(binding = 4) readonly buffer Lse { float lse[]; };
layout(binding = 5) readonly buffer Delta { float delta[]; };
#ifdef DQ
layout(binding = 6) buffer G1_ { uint16_t g1_16[]; };
#define NBIND 7
/* tensors: 0 q, 1 k, 2 v, 3 dout */
#define OWN1 0u
#define OWN2 3u
#define WALK1 1u
#define WALK2 2u
#else
layout(binding = 6) buffer G1_ { uint16_t g1_16[]; };
layout(binding = 7) buffer G2_ { uint16_t g2_16[]; };
#define NBIND 8
#define OWN1 1u
#define OWN2 2u
#define WALK1 0u
#define WALK2 3u
#endif

layout(push_constant) uniform Push {
    uint off[NBIND];
    uint B, Tq, Tk, H, Hk;
    uint ntiles; /* owner tiles per (b, head) */
    float scale;
} p;

/*
 * Shared memory in uvec4 words (8 16-bit values or 4 f32): owner tiles BR x
 * QW and NSTAGE stages of the two walk tiles BC x QW (rows of D/8 words
 * padded by one), the stages over the owner tiles (whose words are done
 * with once the warps hold their fragments; emulated: apart, and one stage
 * refilled between two barriers), per warp an f32 scratch 16 x SW and P
 * rows 16 x PW (padded by SPAD words), NSTAGE stages of lse and Delta of
 * the rows that index them (DQ: the owner rows, in the first; DKV: the walk
 * rows; NL floats each), per warp one word of tile maxima (component =
 * tensor).
 */
#ifdef DQ
const uint NL = BR;
#else
const uint NL = BC;
#endif
const uint QW = HD / 8u + 1u, SW = BC / 4u + SPAD, PW = BC / 8u + SPAD, OSW = FRAG_N / 4u + SPAD;
const uint STAGE_W = 2u * BC * QW, OWN_W = 2u * BR * QW; /* the two walk, the two owner tiles */
#ifdef CM_EMULATE
/* emulated fragments are read from S at each product: owners apart; one stage (32 KiB) */
#define NSTAGE 1u
const uint W_AT = OWN_W, X_AT = OWN_W + STAGE_W;
#else
#define NSTAGE 2u
const uint W_AT = 0u, X_AT = OWN_W > 2u * STAGE_W ? OWN_W : 2u * STAGE_W;
#endif
const uint O2_AT = BR * QW, P_AT = X_AT + WARPS * 16u * SW;
const uint L_AT = P_AT + WARPS * 16u * PW, M_AT = L_AT + NSTAGE * (NL / 2u);
shared uvec4 S[M_AT + WARPS];

#ifdef CM_EMULATE
/*
 * The emulated operations (as attention_cm.comp's): a fragment is where its
 * 16-bit values lie in S, an accumulator holds 16 x FRAG_N f32, element
 * e = r*FRAG_N + c in lane e % SUBGROUP_SIZE; products summed in order of k.
 * The inner k loops are unrolled: with them rolled, an invocation of a
 * workgroup with 4+ steps at d64 stopped part-way on lavapipe (its loops
 * seem capped near 65535 trips: the gradients' last writes went missing).
 */
#define CM_LANE_MAX 32u
struct cm_in {
    uint elem, stride;
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
/*
 * GRAD_ADD's column block in one pass: (acc * up + the 16 x BC 16-bit rows
 * at word pa times the walk rows' FRAG_N columns at word wa) * down, summed
 * in the tensor-core path's order.
 */
cm_acc cm_grad(cm_acc acc, uint pa, uint wa, float up, float down) {
    [[dont_unroll]] for (uint t = 0u; t < 16u * FRAG_N / SUBGROUP_SIZE; t++) {
        uint e = gl_SubgroupInvocationID + t * SUBGROUP_SIZE, r = e / FRAG_N, c = e % FRAG_N;
        float s = acc.v[t] * up;
        [[unroll]] for (uint k = 0u; k < 16u * PMAX; k++)
            if (k < BC) s += cm_at(cm_in(pa, PW, false), r, k) * cm_at(cm_in(wa, QW, false), k, c);
        acc.v[t] = s * down;
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
#define CM_LOAD_ACC(f, elem, stride)                                                         \
    coopMatLoad(f, S, elem, stride, gl_CooperativeMatrixLayoutRowMajor)
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

uint b, h, kvh, warp, lane, shift;
uint orow0; /* the warp's first owner row */
uint wrow0; /* the step's first walk row */
uint l_at;  /* the words of this step's lse and Delta */
uint er[ELMAX], ec[ELMAX]; /* each accumulator element's row and column (main) */

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
GATHER8(gather_do, do16)

/*
 * Word x (row x / (HD/8), columns 8*(x % (HD/8))..) of tensor t's rows from
 * pos0 (q and dout of head hq); zeros past T. One return (callers in
 * unrolled loops: early returns kept glslang's optimizer from unrolling them).
 */
uvec4 tile_word(uint t, uint pos0, uint x, uint hq) {
    bool kv = t == 1u || t == 2u;
    uint T = kv ? p.Tk : p.Tq, pos = pos0 + x / (HD / 8u);
    uint at = p.off[t] + ((b * T + pos) * (kv ? p.Hk : p.H) + (kv ? kvh : hq)) * HD +
              8u * (x % (HD / 8u));
    bool fast = p.off[t] % 8u == 0u;
    uvec4 w = uvec4(0u);
    if ((ABLATE & 1u) != 0u) w = uvec4(0x3c003c00u);
    else if (pos < T && fast)
        w = t == 0u ? q4[at / 8u] : t == 1u ? k4[at / 8u] : t == 2u ? v4[at / 8u] : do4[at / 8u];
    else if (pos < T)
        w = t == 0u   ? gather_q(at)
            : t == 1u ? gather_k(at)
            : t == 2u ? gather_v(at)
                      : gather_do(at);
    return w;
}

/* x * 2^e for |e| up to ~250, in two exact steps (2^e itself may not be an f32). */
vec2 scale2(vec2 x, int e) { return ldexp(ldexp(x, ivec2(e / 2)), ivec2(e - e / 2)); }
float scale1(float x, int e) { return ldexp(ldexp(x, e / 2), e - e / 2); }

/* The power of two e that puts mx (> 0) in [2^14, 2^15); 0 for mx == 0. */
int f16_exponent(float mx) {
    int E;
    frexp(mx, E);
    return mx > 0.0 ? 15 - E : 0;
}

#ifdef CM_SCALED
float word_max(uvec4 w) {
    float m = 0.0;
    for (uint i = 0u; i < 4u; i++)
        m = max(m, max(abs(uintBitsToFloat(w[i] << 16u)),
                       abs(uintBitsToFloat(w[i] & 0xffff0000u))));
    return m;
}
#endif

/* Word x of a staged tile: its place in S from the tile's first word. */
uint staged_at(uint x) { return (x / (HD / 8u)) * QW + x % (HD / 8u); }

/*
 * n rows of tensor t from row pos0 (head hq where it is q or dout) into S
 * at word dst (row stride QW), as they are or (CM_SCALED) as f16 scaled by
 * 2^e; returns e (0 unscaled). Scaled: subgroup maxima in S, one barrier,
 * then the words are read again, scaled.
 */
int stage(uint t, uint pos0, uint n, uint dst, uint hq) {
    uint words = n * (HD / 8u), lid = gl_LocalInvocationID.x;
    int e = 0;
#ifdef CM_SCALED
    if ((ABLATE & 2u) == 0u) {
        float mx = 0.0;
        for (uint x = lid; x < words; x += WG_SIZE)
            mx = max(mx, word_max(tile_word(t, pos0, x, hq)));
        mx = subgroupMax(mx);
        if (subgroupElect()) S[M_AT + warp][t] = floatBitsToUint(mx);
        barrier();
        mx = 0.0;
        for (uint w = 0u; w < WARPS; w++) mx = max(mx, uintBitsToFloat(S[M_AT + w][t]));
        e = f16_exponent(mx);
    }
#endif
    for (uint x = lid; x < words; x += WG_SIZE) {
        uvec4 w = tile_word(t, pos0, x, hq);
#ifdef CM_SCALED
        for (uint i = 0u; i < 4u; i++)
            w[i] = packHalf2x16(scale2(vec2(uintBitsToFloat(w[i] << 16u),
                                            uintBitsToFloat(w[i] & 0xffff0000u)), e));
#endif
        S[dst + staged_at(x)] = w;
    }
    return e;
}

/*
 * Value x of n rows' stats from row i0 (queries of head hq): lse (x < n; in
 * units of log2: probs takes powers of 2), then Delta; 0 past Tq.
 */
float stat_value(uint i0, uint n, uint x, uint hq) {
    uint i = i0 + x % n, at = (b * p.H + hq) * p.Tq + i;
    float v = 0.0;
    if (i < p.Tq) v = x < n ? lse[p.off[4] + at] * LOG2E : delta[p.off[5] + at];
    return v;
}

/* lse and Delta of n rows from row i0 into the stats words at `at`. */
void stage_stats(uint i0, uint n, uint at, uint hq) {
    for (uint x = gl_LocalInvocationID.x; x < 2u * n; x += WG_SIZE) {
        uint y = x < n ? x : NL + x - n;
        S[at + y / 4u][y % 4u] = floatBitsToUint(stat_value(i0, n, x, hq));
    }
}

#ifndef CM_SCALED
/*
 * The prefetch: an invocation's words of the step's two walk tiles (word x
 * < WALKW of walk1, else of walk2) and, in DKV, of their rows' stats,
 * fetched into registers, later put into a stage.
 */
const uint WALKW = BC * (HD / 8u), FETCH = (2u * WALKW + WG_SIZE - 1u) / WG_SIZE;
uvec4 fetched[FETCH_MAX];
#ifndef DQ
const uint SFETCH = (2u * BC + WG_SIZE - 1u) / WG_SIZE;
float fetched_stats[SFETCH_MAX];
#endif
void fetch(uint w0, uint hq) {
    UNROLL for (uint i = 0u; i < FETCH_MAX; i++) {
        uint x = gl_LocalInvocationID.x + i * WG_SIZE;
        if (i < FETCH && x < 2u * WALKW)
            fetched[i] = tile_word(x < WALKW ? WALK1 : WALK2, w0, x % WALKW, hq);
    }
#ifndef DQ
    UNROLL for (uint i = 0u; i < SFETCH_MAX; i++) {
        uint x = gl_LocalInvocationID.x + i * WG_SIZE;
        if (i < SFETCH && x < 2u * BC) fetched_stats[i] = stat_value(w0, BC, x, hq);
    }
#endif
}
void put(uint st) {
    UNROLL for (uint i = 0u; i < FETCH_MAX; i++) {
        uint x = gl_LocalInvocationID.x + i * WG_SIZE;
        if (i < FETCH && x < 2u * WALKW)
            S[W_AT + st * STAGE_W + (x < WALKW ? 0u : BC * QW) + staged_at(x % WALKW)] = fetched[i];
    }
#ifndef DQ
    UNROLL for (uint i = 0u; i < SFETCH_MAX; i++) {
        uint x = gl_LocalInvocationID.x + i * WG_SIZE;
        uint y = st * (NL / 2u) * 4u + (x < BC ? x : NL + x - BC);
        if (i < SFETCH && x < 2u * BC) S[L_AT + y / 4u][y % 4u] = floatBitsToUint(fetched_stats[i]);
    }
#endif
}
#endif

/*
 * Columns [clo, chi) of row r of the warp's 16 x BC block that are visible
 * pairs (DQ: the keys query orow0 + r sees; DKV: the queries that see key
 * orow0 + r).
 */
void visible_cols(uint r, out uint clo, out uint chi) {
#ifdef DQ
    uint i = orow0 + r, lim = min(p.Tk, i + shift + 1u);
    clo = 0u;
    chi = i < p.Tq && lim > wrow0 ? lim - wrow0 : 0u;
#else
    uint j = orow0 + r, ilo = j > shift ? j - shift : 0u;
    clo = ilo > wrow0 ? ilo - wrow0 : 0u;
    chi = j < p.Tk && p.Tq > wrow0 ? p.Tq - wrow0 : 0u;
#endif
}

/* lse (which 0; times log2(e)) or Delta (1) of elements (r, c..c+7): per row (DQ), column (DKV). */
void stats8(uint r, uint c, uint which, out float v[8]) {
#ifdef DQ
    uint x = warp * 16u + r;
    float y = uintBitsToFloat(S[l_at + which * (NL / 4u) + x / 4u][x % 4u]);
    [[unroll]] for (uint z = 0u; z < 8u; z++) v[z] = y;
#else
    vec4 a = uintBitsToFloat(S[l_at + which * (NL / 4u) + c / 4u]);
    vec4 d = uintBitsToFloat(S[l_at + which * (NL / 4u) + c / 4u + 1u]);
    [[unroll]] for (uint z = 0u; z < 4u; z++) v[z] = a[z], v[z + 4u] = d[z];
#endif
}

/* Elements (r, c..c+7) of the warp's f32 scratch (c a multiple of 8). */
void scratch8(uint xw, uint r, uint c, out float x[8]) {
    vec4 a = uintBitsToFloat(S[xw + r * SW + c / 4u]);
    vec4 d = uintBitsToFloat(S[xw + r * SW + c / 4u + 1u]);
    [[unroll]] for (uint z = 0u; z < 4u; z++) x[z] = a[z], x[z + 4u] = d[z];
}

/* f's bf16 bits rounded to nearest even (f finite: no NaN case, unlike chm_f32_to_bf16). */
uint bf16_rne(float f) {
    uint u = floatBitsToUint(f);
    return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}

/* 8 values as 16-bit words of the P rows (bf16 when native, else f16) and back. */
uvec4 pack8(float v[8]) {
    uvec4 w;
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
#ifdef CM_BF16_NATIVE
        w[i] = bf16_rne(v[2u * i]) | (bf16_rne(v[2u * i + 1u]) << 16u);
#else
        w[i] = packHalf2x16(vec2(v[2u * i], v[2u * i + 1u]));
#endif
    }
    return w;
}
float unpack1(uvec4 w, uint z) {
#ifdef CM_BF16_NATIVE
    uint x = w[z / 2u];
    return uintBitsToFloat(z % 2u == 0u ? x << 16u : x & 0xffff0000u);
#else
    vec2 pp = unpackHalf2x16(w[z / 2u]);
    return z % 2u == 0u ? pp.x : pp.y;
#endif
}

/*
 * P = exp(X * sf - lse) = 2^(X * sf2 - lse2) (sf2 = sf * log2(e), lse2 in
 * units of log2; 0 where masked) into the warp's P rows; lanes take 8
 * columns.
 */
void probs(uint xw, uint pw, float sf2) {
    if ((ABLATE & 4u) != 0u) return;
    for (uint w = lane; w < 16u * (BC / 8u); w += SUBGROUP_SIZE) {
        uint r = w / (BC / 8u), c = (w % (BC / 8u)) * 8u, clo, chi;
        float pj[8], st[8];
        scratch8(xw, r, c, pj);
        stats8(r, c, 0u, st);
        visible_cols(r, clo, chi);
        [[unroll]] for (uint z = 0u; z < 8u; z++)
            pj[z] = c + z >= clo && c + z < chi ? exp2(pj[z] * sf2 - st[z]) : 0.0;
        S[pw + r * PW + c / 8u] = pack8(pj);
    }
}

/* dS = P (X * sdp - Delta) of the 8 columns from c of row r (P from the warp's P rows). */
void dscores(uint xw, uint pw, float sdp, uint r, uint c, out float ds[8]) {
    uvec4 pwd = S[pw + r * PW + c / 8u];
    float st[8];
    scratch8(xw, r, c, ds);
    stats8(r, c, 1u, st);
    [[unroll]] for (uint z = 0u; z < 8u; z++) ds[z] = unpack1(pwd, z) * (ds[z] * sdp - st[z]);
}

#ifdef CM_BF16_NATIVE
/* dS over P in the warp's P rows, as bf16 (each lane rewrites the words it read). */
int dscores16(uint xw, uint pw, float sdp, int ew) {
    if ((ABLATE & 4u) != 0u) return 0;
    float ds[8];
    for (uint w = lane; w < 16u * (BC / 8u); w += SUBGROUP_SIZE) {
        uint r = w / (BC / 8u), c = (w % (BC / 8u)) * 8u;
        dscores(xw, pw, sdp, r, c, ds);
        S[pw + r * PW + c / 8u] = pack8(ds);
    }
    return 0;
}
#else
/*
 * dS into the warp's P rows (over P) times 2^e, e from the largest |dS| of
 * the warp, kept within 126 of -ew (GRAD_ADD's factors 2^(e + ew) must be
 * f32 numbers: only tiles far outside f32's range would be cut); returns e.
 */
int dscores16(uint xw, uint pw, float sdp, int ew) {
    if ((ABLATE & 4u) != 0u) return 0;
    float mx = 0.0;
    float ds[8];
    for (uint w = lane; w < 16u * (BC / 8u); w += SUBGROUP_SIZE) {
        dscores(xw, pw, sdp, w / (BC / 8u), (w % (BC / 8u)) * 8u, ds);
        [[unroll]] for (uint z = 0u; z < 8u; z++) mx = max(mx, abs(ds[z]));
    }
    int e = clamp(f16_exponent(subgroupMax(mx)), -126 - ew, 126 - ew);
    /* each lane rewrites the words it read (its P words; the scratch is not written) */
    for (uint w = lane; w < 16u * (BC / 8u); w += SUBGROUP_SIZE) {
        dscores(xw, pw, sdp, w / (BC / 8u), (w % (BC / 8u)) * 8u, ds);
        [[unroll]] for (uint z = 0u; z < 8u; z++) ds[z] = scale1(ds[z], e);
        S[pw + (w / (BC / 8u)) * PW + w % (BC / 8u)] = pack8(ds);
    }
    return e;
}
#endif

/*
 * X = the warp's owner rows (A fragments fa) times walk rows^T (16 x BC)
 * into the warp's f32 scratch xw.
 */
#define PRODUCT_T(fa, walk, xw)                                                              \
    if ((ABLATE & 16u) == 0u) {                                                              \
        CM_ACC acc[SMAX];                                                                    \
        UNROLL for (uint j = 0u; j < SMAX; j++) if (j < BC / FRAG_N) acc[j] = CM_ZERO;       \
        UNROLL for (uint kk = 0u; kk < KMAX; kk++) {                                         \
            UNROLL for (uint j = 0u; j < SMAX; j++) {                                        \
                if (kk < HD / 16u && j < BC / FRAG_N) {                                      \
                    CM_IN_B fb;                                                              \
                    CM_LOAD(fb, walk + j * FRAG_N * QW + 2u * kk, QW, true);                 \
                    acc[j] = CM_MULADD(fa[kk], fb, acc[j]);                                  \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        UNROLL for (uint j = 0u; j < SMAX; j++)                                              \
            if (j < BC / FRAG_N) CM_STORE(acc[j], xw + j * FRAG_N / 4u, SW);                 \
    }

/*
 * g[j] += (the warp's P rows (16 x BC, 16-bit) times the walk tile at
 * `walk`)[:, j-th FRAG_N] * 2^-e. Scaled f16 operands: g goes into the
 * product's units and back (scalar products by powers of two, exact;
 * glslang's optimizer crashes on the sum of two cooperative matrices, so
 * the product adds into g itself); native bf16: e is 0, no scaling.
 */
#ifdef CM_BF16_NATIVE
#define GRAD_SCALE(g, x)
#else
#define GRAD_SCALE(g, x) g = g * x;
#endif
#define GRAD_ADD(g, pw, walk, e)                                                            \
    if ((ABLATE & 32u) == 0u) {                                                              \
        float up = ldexp(1.0, e), down = ldexp(1.0, -(e));                                   \
        GRAD_BLOCKS(g, pw, walk, up, down)                                                   \
    }
#ifdef CM_EMULATE
#define GRAD_BLOCKS(g, pw, walk, up, down)                                                   \
    [[dont_unroll]] for (uint j = 0u; j < HD / FRAG_N; j++)                                  \
        g[j] = cm_grad(g[j], pw, walk + j * FRAG_N / 8u, up, down);
#else
#define GRAD_BLOCKS(g, pw, walk, up, down)                                                   \
    CM_IN_A fp[PMAX];                                                                        \
    UNROLL for (uint kk = 0u; kk < PMAX; kk++)                                               \
        if (kk < BC / 16u) CM_LOAD(fp[kk], pw + 2u * kk, PW, false);                         \
    UNROLL for (uint j = 0u; j < OMAX; j++) {                                                \
        if (j < HD / FRAG_N) {                                                               \
            GRAD_SCALE(g[j], up)                                                             \
        }                                                                                    \
        UNROLL for (uint kk = 0u; kk < PMAX; kk++) {                                         \
            if (j < HD / FRAG_N && kk < BC / 16u) {                                          \
                CM_IN_B wb;                                                                  \
                CM_LOAD(wb, walk + kk * 16u * QW + j * FRAG_N / 8u, QW, false);              \
                g[j] = CM_MULADD(fp[kk], wb, g[j]);                                          \
            }                                                                                \
        }                                                                                    \
        if (j < HD / FRAG_N) {                                                               \
            GRAD_SCALE(g[j], down)                                                           \
        }                                                                                    \
    }
#endif

/*
 * Add g (f32 accumulators of the warp's 16 rows, times gs) to the gradient
 * in buf (offset p.off[offi]; T rows of `heads` heads, this one `head`),
 * element by element: er, ec are each accumulator element's row and column.
 */
#define GRAD_OUT(g, buf, offi, gs)                                                           \
    UNROLL for (uint j = 0u; j < OMAX; j++) {                                                \
        UNROLL for (uint e = 0u; e < ELMAX; e++) {                                           \
            uint row = orow0 + er[e];                                                        \
            if (j < HD / FRAG_N && e < CM_LEN(g[0]) && row < T) {                            \
                uint at = ((b * T + row) * heads + head) * HD + j * FRAG_N + ec[e];          \
                ACC(buf[p.off[offi] + at], CM_EL(g[j], e) * (gs));                           \
            }                                                                                \
        }                                                                                    \
    }

/* Whether the warp's owner rows and the step's walk rows hold a visible pair (warp-uniform). */
bool warp_sees() {
#ifdef DQ
    return orow0 < p.Tq && wrow0 <= orow0 + 15u + shift;
#else
    return orow0 < p.Tk && orow0 <= wrow0 + BC - 1u + shift;
#endif
}

void main() {
    uint g = chm_group(), tile = g % p.ntiles;
    warp = gl_SubgroupID;
    lane = gl_SubgroupInvocationID;
    shift = p.Tk - p.Tq;
#ifdef DQ
    h = (g / p.ntiles) % p.H;
    kvh = h / (p.H / p.Hk);
    b = g / (p.ntiles * p.H);
    uint hfirst = h, rep = 1u;
#else
    kvh = (g / p.ntiles) % p.Hk;
    b = g / (p.ntiles * p.Hk);
    uint rep = p.H / p.Hk, hfirst = kvh * rep;
    h = hfirst;
#endif
    uint r0 = tile * BR, xw = X_AT + warp * 16u * SW, pw = P_AT + warp * 16u * PW;
    orow0 = r0 + 16u * warp;
#ifdef DQ
    uint wstart = 0u, wend = min(p.Tk, min(p.Tq, r0 + BR) + shift);
#else
    /* the first query that sees key r0 is r0 - shift */
    uint wstart = r0 > shift ? (r0 - shift) / BC * BC : 0u, wend = p.Tq;
#endif
    /* the walk: steps n = head * nper + tile (the q heads of the group in order) */
    uint nper = wend > wstart ? (wend - wstart + BC - 1u) / BC : 0u, nsteps = rep * nper;
#ifndef CM_SCALED
    if (nsteps > 0u) fetch(wstart, hfirst);
#endif
    int eo1 = stage(OWN1, r0, BR, 0u, h);
    int eo2 = stage(OWN2, r0, BR, O2_AT, h);
#ifdef DQ
    stage_stats(r0, BR, L_AT, h);
#endif
    /*
     * Each accumulator element's row and column (the element-to-lane mapping
     * is the same for every matrix of one type): from accumulators loaded
     * from scratch holding r (then c) at (r, c).
     */
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
    CM_IN_A fo1[KMAX], fo2[KMAX]; /* the warp's owner rows: A fragments */
    UNROLL for (uint kk = 0u; kk < KMAX; kk++) {
        if (kk < HD / 16u) {
            CM_LOAD(fo1[kk], warp * 16u * QW + 2u * kk, QW, false);
            CM_LOAD(fo2[kk], O2_AT + warp * 16u * QW + 2u * kk, QW, false);
        }
    }
#ifndef CM_SCALED
    if (W_AT == 0u) barrier(); /* the owners' words are read: the stages take them */
    if (nsteps > 0u) put(0u);
    barrier();
#endif
#ifndef DQ
    CM_ACC g2[OMAX];
    UNROLL for (uint j = 0u; j < OMAX; j++) if (j < HD / FRAG_N) g2[j] = CM_ZERO;
#endif
    CM_ACC g1[OMAX];
    UNROLL for (uint j = 0u; j < OMAX; j++) if (j < HD / FRAG_N) g1[j] = CM_ZERO;
    uint st = 0u; /* the stage of this step's tiles */
    l_at = L_AT;
    for (uint n = 0u; n < nsteps; n++) {
        h = hfirst + n / nper;
        wrow0 = wstart + (n % nper) * BC;
#ifdef CM_SCALED
        barrier(); /* every warp is done with the last walk tiles and stats */
        int ew1 = stage(WALK1, wrow0, BC, W_AT, h);
        int ew2 = stage(WALK2, wrow0, BC, W_AT + BC * QW, h);
#ifndef DQ
        stage_stats(wrow0, BC, L_AT, h);
#endif
        barrier();
#else
        const int ew1 = 0, ew2 = 0;
        bool more = n + 1u < nsteps;
        if (more) fetch(wstart + ((n + 1u) % nper) * BC, hfirst + (n + 1u) / nper);
#ifndef DQ
        l_at = L_AT + st * (NL / 2u);
#endif
#endif
        uint w1 = W_AT + st * STAGE_W, w2 = w1 + BC * QW;
        if (warp_sees()) {
            PRODUCT_T(fo1, w1, xw) /* S */
            warp_sync();
            probs(xw, pw, scale1(scale1(p.scale * LOG2E, -eo1), -ew1));
            warp_sync();
#ifndef DQ
            GRAD_ADD(g2, pw, w2, ew2) /* dv += P^T dout */
#endif
            PRODUCT_T(fo2, w2, xw) /* dP */
            warp_sync();
            int eds = dscores16(xw, pw, scale1(1.0, -eo2 - ew2), ew1);
            warp_sync();
            GRAD_ADD(g1, pw, w1, eds + ew1) /* dq += dS k, dk += dS^T q (scale: at the end) */
        }
#ifndef CM_SCALED
        if (NSTAGE == 1u) barrier(); /* every warp is done with the only stage */
        if (more) put((st + 1u) % NSTAGE);
        barrier(); /* the next tiles are staged; every warp is done with this stage */
        st = (st + 1u) % NSTAGE;
#endif
    }
    /* the gradients, element by element from registers */
#ifdef DQ
    uint T = p.Tq, heads = p.H, head = hfirst;
    GRAD_OUT(g1, g1_16, 6u, p.scale)
#else
    uint T = p.Tk, heads = p.Hk, head = kvh;
    GRAD_OUT(g1, g1_16, 6u, p.scale)
    GRAD_OUT(g2, g2_16, 7u, 1.0)
#endif
}
