/*
 * attention_bwd_cm.comp: attention_bwd.comp's dq and dk/dv passes for f16
 * and bf16 tensors with every product on cooperative matrices
 * (GL_NV_cooperative_matrix: the tensor cores), in f32 accumulators. The
 * probabilities are recomputed from lse (flash-attention-2), Delta =
 * rowsum(dout*out) comes from attention_bwd.comp's DELTA pass; gradients
 * ACCUMULATE. q, dout, dq [B,Tq,H,D]; k, v, dk, dv [B,Tk,Hk,D]; lse, Delta
 * [B,H,Tq] f32; query i sits at position i + (Tk - Tq) and sees keys j <=
 * that position; head h reads kv head h / (H/Hk).
 *
 * Both passes have one shape. A workgroup owns BR = 16 * WARPS "owner" rows
 * of one head (warp w: rows 16w..16w+15), staged once, and walks tiles of BC
 * "walk" rows, staged per step:
 *   DQ  (-DDQ): owner q, dout (head h), walk k, v: the key tiles up to the
 *       diagonal; grad1 = dq.
 *   DKV (default): owner k, v (kv head), walk q, dout: for each q head of
 *       the group in order, the query tiles at or after the owner keys;
 *       grad1 = dk, grad2 = dv.
 * Per step, in each warp that sees any pair of the step:
 *   X  = own1 walk1^T (S, or S^T in DKV), f32 scratch; P = exp(X*sf - lse)
 *        (masked: 0) as f16 in the warp's P rows;
 *   DKV: grad2 += P walk2 (dv += P^T dout);
 *   X  = own2 walk2^T (dP, or dP^T); dS = P (dP - Delta) as f16 in the P
 *        rows, scaled by one power of two per warp and step (largest |dS|
 *        in [2^14, 2^15));
 *   grad1 += dS walk1 * scale (dq += dS k, dk += dS^T q).
 * A gradient product adds into the gradient's accumulator brought to the
 * product's units (the tiles' power-of-two scales) and back, so the
 * accumulators stay in true units (grad1 without the softmax scale, which
 * the end applies). At the end each accumulator goes through the scratch
 * and the lanes add it to the tensor (rounded once). Every gradient element
 * has one writer and every sum one order: deterministic.
 *
 * bf16 tiles are staged as f16 with one power-of-two scale per tile, as in
 * attention_cm.comp (whose comment bounds the error); f16 tensors are
 * staged as they are. P and dS are rounded to f16 (relative 2^-11).
 *
 * Variants (-D): DQ or not; DT_BF16 or DT_F16; CM_EMULATE (the cooperative-
 * matrix operations in plain GLSL, so that lavapipe runs every index).
 * Spec constants: 0 workgroup size = WARPS * subgroup size, 1 subgroup
 * size, 2 BC (16, 32 or 64), 3 HD = D (multiple of 16 up to 128), 4 FRAG_N
 * (16, or 8 where the device lists 16x8x16), 5 SPAD (0 or 1). attention.c
 * checks that the shared array fits.
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
#elif !defined(CM_EMULATE)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#endif
#include "dt.glsl"
#include "common.glsl"

layout(constant_id = 2) const uint BC = 32;
layout(constant_id = 3) const uint HD = 64;
layout(constant_id = 4) const uint FRAG_N = 16;
layout(constant_id = 5) const uint SPAD = 1;
const uint WARPS = WG_SIZE / SUBGROUP_SIZE;
const uint BR = 16u * WARPS; /* owner rows per workgroup */
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
#define WMAX 8 /* words of P rows per lane: 2 * BC / SUBGROUP_SIZE (attention.c checks) */

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
 * Shared memory in uvec4 words (8 f16 or 4 f32): owner tiles BR x QW and
 * walk tiles BC x QW (rows of D/8 words padded by one), per warp an f32
 * scratch 16 x SW and P rows 16 x PW (padded by SPAD words), lse and Delta
 * of the rows that index them (DQ: the owner rows, DKV: the walk rows; NL
 * floats each), per warp one word of tile maxima (component = tensor).
 */
#ifdef DQ
const uint NL = BR;
#else
const uint NL = BC;
#endif
const uint QW = HD / 8u + 1u, SW = BC / 4u + SPAD, PW = BC / 8u + SPAD, OSW = FRAG_N / 4u + SPAD;
const uint O2_AT = BR * QW, W1_AT = 2u * BR * QW, W2_AT = W1_AT + BC * QW;
const uint X_AT = W2_AT + BC * QW, P_AT = X_AT + WARPS * 16u * SW;
const uint L_AT = P_AT + WARPS * 16u * PW, M_AT = L_AT + NL / 2u;
shared uvec4 S[M_AT + WARPS];

#ifdef CM_EMULATE
/*
 * The emulated operations (as attention_cm.comp's): a fragment is where its
 * f16 values lie in S, an accumulator holds 16 x FRAG_N f32, element
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
    vec2 hv = unpackHalf2x16(S[word + pos / 8u][(pos % 8u) / 2u]);
    return pos % 2u == 0u ? hv.x : hv.y;
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
 * GRAD_ADD's column block in one pass: (acc * up + the 16 x BC f16 rows at
 * word pa times the walk rows' FRAG_N columns at word wa) * down, summed in
 * the tensor-core path's order.
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
#define CM_IN_A cm_in
#define CM_IN_B cm_in
#define CM_ACC cm_acc
#define CM_ZERO cm_zero()
#define CM_LOAD(f, e, s, cm) f = cm_in(e, s, cm)
#define CM_MULADD(x, y, acc) cm_muladd(x, y, acc)
#define CM_STORE(acc, e, s) cm_store(acc, e, s)
#elif defined(CM_KHR)
/* VK_KHR_cooperative_matrix (AMD, Intel; NVIDIA too): the same fragments, typed by use */
#define CM_IN_A coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define CM_IN_B coopmat<float16_t, gl_ScopeSubgroup, 16, FRAG_N, gl_MatrixUseB>
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

uint b, h, kvh, warp, lane, shift;
uint orow0; /* the warp's first owner row */
uint wrow0; /* the step's first walk row */

/* Make a warp's shared-memory writes visible to the whole warp. */
void warp_sync() {
    subgroupMemoryBarrierShared();
    subgroupBarrier();
}

/* 8 elements from element `at` of a 16-bit tensor, one word where its offset is 8-aligned. */
#define GATHER8(name, arr)                                                                   \
    uvec4 name(uint at) {                                                                    \
        uvec4 w;                                                                             \
        for (uint i = 0u; i < 4u; i++)                                                       \
            w[i] = uint(arr[at + 2u * i]) | (uint(arr[at + 2u * i + 1u]) << 16u);            \
        return w;                                                                            \
    }
GATHER8(gather_q, q16)
GATHER8(gather_k, k16)
GATHER8(gather_v, v16)
GATHER8(gather_do, do16)

/* Word x (row x / (HD/8), columns 8*(x % (HD/8))..) of tensor t's rows from pos0; zeros past T. */
uvec4 tile_word(uint t, uint pos0, uint x) {
    bool kv = t == 1u || t == 2u;
    uint T = kv ? p.Tk : p.Tq, pos = pos0 + x / (HD / 8u);
    if (pos >= T) return uvec4(0u);
    uint at = p.off[t] + ((b * T + pos) * (kv ? p.Hk : p.H) + (kv ? kvh : h)) * HD +
              8u * (x % (HD / 8u));
    bool fast = p.off[t] % 8u == 0u;
    if (t == 0u) return fast ? q4[at / 8u] : gather_q(at);
    if (t == 1u) return fast ? k4[at / 8u] : gather_k(at);
    if (t == 2u) return fast ? v4[at / 8u] : gather_v(at);
    return fast ? do4[at / 8u] : gather_do(at);
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

#ifdef DT_BF16
float word_max(uvec4 w) {
    float m = 0.0;
    for (uint i = 0u; i < 4u; i++)
        m = max(m, max(abs(uintBitsToFloat(w[i] << 16u)),
                       abs(uintBitsToFloat(w[i] & 0xffff0000u))));
    return m;
}
#endif

/*
 * n rows of tensor t from row pos0 into S at word dst (row stride QW) as
 * f16; returns e, the values being scaled by 2^e (0 for f16 tensors). bf16:
 * subgroup maxima in S, one barrier, then the words are read again, scaled.
 */
int stage(uint t, uint pos0, uint n, uint dst) {
    uint words = n * (HD / 8u), lid = gl_LocalInvocationID.x;
    int e = 0;
#ifdef DT_BF16
    float mx = 0.0;
    for (uint x = lid; x < words; x += WG_SIZE) mx = max(mx, word_max(tile_word(t, pos0, x)));
    mx = subgroupMax(mx);
    if (subgroupElect()) S[M_AT + warp][t] = floatBitsToUint(mx);
    barrier();
    mx = 0.0;
    for (uint w = 0u; w < WARPS; w++) mx = max(mx, uintBitsToFloat(S[M_AT + w][t]));
    e = f16_exponent(mx);
#endif
    for (uint x = lid; x < words; x += WG_SIZE) {
        uvec4 w = tile_word(t, pos0, x);
#ifdef DT_BF16
        for (uint i = 0u; i < 4u; i++)
            w[i] = packHalf2x16(scale2(vec2(uintBitsToFloat(w[i] << 16u),
                                            uintBitsToFloat(w[i] & 0xffff0000u)), e));
#endif
        S[dst + (x / (HD / 8u)) * QW + x % (HD / 8u)] = w;
    }
    return e;
}

/* lse and Delta of n rows from row i0 (queries of head h) into the L words; 0 past Tq. */
void stage_stats(uint i0, uint n) {
    for (uint x = gl_LocalInvocationID.x; x < n; x += WG_SIZE) {
        uint i = i0 + x, at = (b * p.H + h) * p.Tq + i;
        S[L_AT + x / 4u][x % 4u] = floatBitsToUint(i < p.Tq ? lse[p.off[4] + at] : 0.0);
        S[L_AT + NL / 4u + x / 4u][x % 4u] = floatBitsToUint(i < p.Tq ? delta[p.off[5] + at] : 0.0);
    }
}

/* Element (r, c) of the warp's 16 x BC block: its stats slot, whether the query sees the key. */
uint stat_slot(uint r, uint c) {
#ifdef DQ
    return warp * 16u + r;
#else
    return c;
#endif
}
bool visible(uint r, uint c) {
#ifdef DQ
    uint i = orow0 + r, j = wrow0 + c;
#else
    uint j = orow0 + r, i = wrow0 + c;
#endif
    return i < p.Tq && j < p.Tk && j <= i + shift;
}
float stat(uint r, uint c, uint which) {
    uint x = stat_slot(r, c);
    return uintBitsToFloat(S[L_AT + which * (NL / 4u) + x / 4u][x % 4u]);
}

/* Element (r, c) of the warp's f32 scratch. */
float scratch(uint xw, uint r, uint c) { return uintBitsToFloat(S[xw + r * SW + c / 4u][c % 4u]); }

uvec4 pack8(float v[8]) {
    return uvec4(packHalf2x16(vec2(v[0], v[1])), packHalf2x16(vec2(v[2], v[3])),
                 packHalf2x16(vec2(v[4], v[5])), packHalf2x16(vec2(v[6], v[7])));
}

/* P = exp(X * sf - lse) (0 where masked) as f16 into the warp's P rows; lanes take 8 columns. */
void probs(uint xw, uint pw, float sf) {
    for (uint w = lane; w < 16u * (BC / 8u); w += SUBGROUP_SIZE) {
        uint r = w / (BC / 8u), c = (w % (BC / 8u)) * 8u;
        float pj[8];
        for (uint z = 0u; z < 8u; z++)
            pj[z] = visible(r, c + z) ? exp(scratch(xw, r, c + z) * sf - stat(r, c + z, 0u)) : 0.0;
        S[pw + r * PW + c / 8u] = pack8(pj);
    }
}

/* dS = P (X * sdp - Delta) of the 8 columns from c of row r (P from the warp's P rows). */
void dscores(uint xw, uint pw, float sdp, uint r, uint c, out float ds[8]) {
    uvec4 pwd = S[pw + r * PW + c / 8u];
    for (uint z = 0u; z < 8u; z++) {
        vec2 pp = unpackHalf2x16(pwd[z / 2u]);
        float pr = z % 2u == 0u ? pp.x : pp.y;
        ds[z] = pr * (scratch(xw, r, c + z) * sdp - stat(r, c + z, 1u));
    }
}

/*
 * dS into the warp's P rows (over P) times 2^e, e from the largest |dS| of
 * the warp, kept within 126 of -ew (GRAD_ADD's factors 2^(e + ew) must be
 * f32 numbers: only tiles far outside f32's range would be cut); returns e.
 */
int dscores_f16(uint xw, uint pw, float sdp, int ew) {
    float mx = 0.0;
    float ds[8];
    for (uint w = lane; w < 16u * (BC / 8u); w += SUBGROUP_SIZE) {
        dscores(xw, pw, sdp, w / (BC / 8u), (w % (BC / 8u)) * 8u, ds);
        for (uint z = 0u; z < 8u; z++) mx = max(mx, abs(ds[z]));
    }
    int e = clamp(f16_exponent(subgroupMax(mx)), -126 - ew, 126 - ew);
    uvec4 out_[WMAX]; /* each lane's words, written once every lane has read P */
    for (uint t = 0u; t < WMAX; t++) {
        uint w = lane + t * SUBGROUP_SIZE;
        if (w >= 16u * (BC / 8u)) break;
        dscores(xw, pw, sdp, w / (BC / 8u), (w % (BC / 8u)) * 8u, ds);
        for (uint z = 0u; z < 8u; z++) ds[z] = scale1(ds[z], e);
        out_[t] = pack8(ds);
    }
    warp_sync();
    for (uint t = 0u; t < WMAX; t++) {
        uint w = lane + t * SUBGROUP_SIZE;
        if (w >= 16u * (BC / 8u)) break;
        S[pw + (w / (BC / 8u)) * PW + w % (BC / 8u)] = out_[t];
    }
    return e;
}

/* X = own rows (the warp's 16) times walk rows^T (16 x BC) into the warp's f32 scratch. */
void product_t(uint own, uint walk, uint xw) {
    CM_ACC acc[SMAX];
    UNROLL for (uint j = 0u; j < SMAX; j++) if (j < BC / FRAG_N) acc[j] = CM_ZERO;
    UNROLL for (uint kk = 0u; kk < KMAX; kk++) {
        if (kk >= HD / 16u) continue;
        CM_IN_A fa;
        CM_LOAD(fa, own + warp * 16u * QW + 2u * kk, QW, false);
        UNROLL for (uint j = 0u; j < SMAX; j++) {
            if (j >= BC / FRAG_N) continue;
            CM_IN_B fb;
            CM_LOAD(fb, walk + j * FRAG_N * QW + 2u * kk, QW, true);
            acc[j] = CM_MULADD(fa, fb, acc[j]);
        }
    }
    UNROLL for (uint j = 0u; j < SMAX; j++)
        if (j < BC / FRAG_N) CM_STORE(acc[j], xw + j * FRAG_N / 4u, SW);
}

/*
 * g[j] += (the warp's P rows (16 x BC, f16) times the walk tile at `walk`)
 * [:, j-th FRAG_N] * 2^-e: g goes into the product's units and back (scalar
 * products by powers of two, exact; glslang's optimizer crashes on the sum
 * of two cooperative matrices, so the product adds into g itself).
 */
#define GRAD_ADD(g, pw, walk, e)                                                            \
    {                                                                                        \
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
        if (j >= HD / FRAG_N) continue;                                                      \
        g[j] = g[j] * up;                                                                    \
        UNROLL for (uint kk = 0u; kk < PMAX; kk++) {                                         \
            if (kk >= BC / 16u) continue;                                                    \
            CM_IN_B wb;                                                                      \
            CM_LOAD(wb, walk + kk * 16u * QW + j * FRAG_N / 8u, QW, false);                  \
            g[j] = CM_MULADD(fp[kk], wb, g[j]);                                              \
        }                                                                                    \
        g[j] = g[j] * down;                                                                  \
    }
#endif

/* Add columns j*FRAG_N.. of the warp's rows (at xw: 16 x FRAG_N, stride OSW) to gradient gi. */
void grad_out(uint gi, uint xw, uint j) {
#ifdef DQ
    uint T = p.Tq, heads = p.H, head = h;
#else
    uint T = p.Tk, heads = p.Hk, head = kvh;
#endif
    for (uint e = lane; e < 16u * FRAG_N; e += SUBGROUP_SIZE) {
        uint r = e / FRAG_N, c = e % FRAG_N, row = orow0 + r;
        if (row >= T) continue;
        float v = uintBitsToFloat(S[xw + r * OSW + c / 4u][c % 4u]) * (gi == 0u ? p.scale : 1.0);
        uint at = ((b * T + row) * heads + head) * HD + j * FRAG_N + c;
#ifdef DQ
        ACC(g1_16[p.off[6] + at], v);
#else
        if (gi == 0u) ACC(g1_16[p.off[6] + at], v);
        else ACC(g2_16[p.off[7] + at], v);
#endif
    }
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
    uint hfirst = h, hend = h + 1u;
#else
    kvh = (g / p.ntiles) % p.Hk;
    b = g / (p.ntiles * p.Hk);
    uint rep = p.H / p.Hk, hfirst = kvh * rep, hend = hfirst + rep;
    h = hfirst; /* stage() of the owner k, v reads kvh only */
#endif
    uint r0 = tile * BR, xw = X_AT + warp * 16u * SW, pw = P_AT + warp * 16u * PW;
    orow0 = r0 + 16u * warp;
    int eo1 = stage(OWN1, r0, BR, 0u);
    int eo2 = stage(OWN2, r0, BR, O2_AT);
#ifdef DQ
    stage_stats(r0, BR);
    uint wstart = 0u, wend = min(p.Tk, min(p.Tq, r0 + BR) + shift);
#else
    /* the first query that sees key r0 is r0 - shift */
    uint wstart = r0 > shift ? (r0 - shift) / BC * BC : 0u, wend = p.Tq;
    CM_ACC g2[OMAX];
    UNROLL for (uint j = 0u; j < OMAX; j++) if (j < HD / FRAG_N) g2[j] = CM_ZERO;
#endif
    CM_ACC g1[OMAX];
    UNROLL for (uint j = 0u; j < OMAX; j++) if (j < HD / FRAG_N) g1[j] = CM_ZERO;
    for (h = hfirst; h < hend; h++) {
        for (wrow0 = wstart; wrow0 < wend; wrow0 += BC) {
            barrier(); /* every warp is done with the last walk tile and stats */
            int ew1 = stage(WALK1, wrow0, BC, W1_AT);
            int ew2 = stage(WALK2, wrow0, BC, W2_AT);
#ifndef DQ
            stage_stats(wrow0, BC);
#endif
            barrier();
            if (!warp_sees()) continue;
            product_t(0u, W1_AT, xw); /* S */
            warp_sync();
            probs(xw, pw, scale1(scale1(p.scale, -eo1), -ew1));
            warp_sync();
#ifndef DQ
            GRAD_ADD(g2, pw, W2_AT, ew2) /* dv += P^T dout */
#endif
            product_t(O2_AT, W2_AT, xw); /* dP */
            warp_sync();
            int eds = dscores_f16(xw, pw, scale1(1.0, -eo2 - ew2), ew1);
            warp_sync();
            GRAD_ADD(g1, pw, W1_AT, eds + ew1) /* dq += dS k, dk += dS^T q (scale: at the end) */
        }
    }
    h = hfirst; /* grad_out's head (dq) */
    /* the gradients: each accumulator through the scratch, the lanes add it to the tensor */
    UNROLL for (uint j = 0u; j < OMAX; j++) {
        if (j >= HD / FRAG_N) continue;
        CM_STORE(g1[j], xw, OSW);
        warp_sync();
        grad_out(0u, xw, j);
        warp_sync();
#ifndef DQ
        CM_STORE(g2[j], xw, OSW);
        warp_sync();
        grad_out(1u, xw, j);
        warp_sync();
#endif
    }
}
