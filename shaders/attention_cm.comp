/*
 * attention_cm.comp: attention_fwd.comp's causal grouped-query attention for
 * f16 and bf16 tensors with Q K^T and P V on cooperative matrices
 * (GL_NV_cooperative_matrix: the tensor cores), online softmax and lse in f32.
 * q, out [B,Tq,H,D]; k, v [B,Tk,Hk,D]; lse [B,H,Tq] f32; head h reads kv
 * head h / (H/Hk); query i sits at position i + (Tk - Tq) and sees keys j <=
 * that position. attention.c runs it for attention_fwd where the device has
 * cooperative matrices and D is a multiple of 16 up to 128.
 *
 * One workgroup per (b, h, tile of BR = 16 * WARPS query rows); warp w
 * (a subgroup) owns rows 16w..16w+15 of the tile. The q tile is staged once
 * in shared memory as f16 and each warp keeps its D/16 A fragments; key and
 * value tiles of BC rows are staged per step (one barrier before, one after).
 * Per key tile, in each warp that sees any of its keys:
 *   S = Q K^T: BC/FRAG_N f32 accumulators (K^T fragments are column-major
 *     loads of the staged k rows), stored to the warp's f32 scratch;
 *   softmax: LPR lanes per row (RPL rows per lane where the subgroup has
 *     fewer than 16 lanes) read the row, update its running max m and sum l
 *     (in registers: a lane keeps its rows for the whole walk), and write
 *     P = exp(s - m) as f16 to the warp's P rows and the row's factor
 *     alpha = exp(m_old - m_new) to shared memory;
 *   O *= alpha: only when some row's factor is not 1 (subgroupAny), each O
 *     accumulator goes through the scratch (store, scale rows, load): the
 *     NV extension cannot scale an accumulator's rows in place;
 *   O += P V: D/FRAG_N f32 accumulators, P as A fragments, v rows as B.
 * At the end each O accumulator goes through the scratch once more and the
 * lanes write out = O / l rounded once to the dtype; lse = m + log(l).
 * Every sum has one fixed order: deterministic.
 *
 * bf16 inputs are converted to f16 at staging with one power-of-two scale
 * 2^e per staged tile (the tile's largest |value| lands in [2^14, 2^15), as
 * cm_scale.comp does per row): exact for every value within 2^28 of the
 * tile's largest (bf16 has 8 significant bits, f16 11, and f16 is normal
 * down to 2^-14); smaller ones become f16 subnormals, off by at most 2^-39
 * of the tile's largest, far below the bf16 rounding of the inputs. The
 * scores are the products times 2^-(eq + ek) (one factor per tile pair);
 * O is kept in units of 2^ev of the last value tile, and a change of ev
 * joins alpha in the row factor. f16 tensors are staged as they are (e = 0).
 * P is rounded to f16 (relative 2^-11; l sums the f32 values).
 *
 * Variants (-D): DT_BF16 or DT_F16; CM_EMULATE: the cooperative-matrix
 * operations in plain GLSL (below, as cm_emulate.glsl does for matmul_cm),
 * so that lavapipe runs and tests every index of this file.
 * Spec constants: 0 workgroup size = WARPS * subgroup size, 1 subgroup
 * size, 2 BC (multiple of 16 up to 64, BC / LPR a multiple of 8), 3 HD = D
 * (multiple of 16 up to 128), 4 FRAG_N (16, or 8 where the device lists
 * 16x8x16), 5 SPAD (0 or 1). attention.c checks them and that the shared
 * arrays fit.
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
#elif !defined(CM_EMULATE)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#endif
#include "common.glsl"
#include "half.glsl"

layout(constant_id = 2) const uint BC = 32;
layout(constant_id = 3) const uint HD = 64;
layout(constant_id = 4) const uint FRAG_N = 16;
layout(constant_id = 5) const uint SPAD = 1; /* padding words of scratch and P rows (0 or 1) */
const uint WARPS = WG_SIZE / SUBGROUP_SIZE;
const uint BR = 16u * WARPS;                                       /* query rows per workgroup */
const uint LPR = SUBGROUP_SIZE >= 16u ? SUBGROUP_SIZE / 16u : 1u;  /* lanes per softmax row */
const uint RPL = SUBGROUP_SIZE >= 16u ? 1u : 16u / SUBGROUP_SIZE;  /* rows per lane */
const uint CPL = BC / LPR;                                         /* columns per lane */
const float MASKED = -1.0e30;
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
 * Shared memory in uvec4 words (8 f16 or 4 f32 each; fragment offsets and
 * strides count words): q tile BR x QW, k and v tiles BC x QW (staged rows
 * padded by one word), per warp an f32 scratch of 16 x SW and P rows of
 * 16 x PW (rows padded by SPAD words: 1, or 0 where that makes 4 warps fit), per warp 16 row factors (4 words), per warp one word for the
 * tile maxima (components x, y, z: q, k, v).
 */
const uint QW = HD / 8u + 1u, SW = BC / 4u + SPAD, PW = BC / 8u + SPAD, OSW = FRAG_N / 4u + SPAD;
const uint K_AT = BR * QW, V_AT = K_AT + BC * QW, X_AT = V_AT + BC * QW;
const uint P_AT = X_AT + WARPS * 16u * SW, F_AT = P_AT + WARPS * 16u * PW, M_AT = F_AT + WARPS * 4u;
shared uvec4 S[M_AT + WARPS];

#ifdef CM_EMULATE
/*
 * The emulated operations (cm_emulate.glsl's, rewritten with rolled loops:
 * this shader has more accumulators, and lavapipe's compile of unrolled
 * ones ran out of bounds): a fragment is where its f16 values lie in S
 * (coopMatLoadNV's reading), an accumulator holds 16 x FRAG_N f32, element
 * e = r*FRAG_N + c in lane e % SUBGROUP_SIZE. Products of f16 values are
 * exact in f32, summed in order of k.
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
    vec2 hv = unpackHalf2x16(w);
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
        [[dont_unroll]] for (uint k = 0u; k < 16u; k++) s += cm_at(x, r, k) * cm_at(y, k, c);
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
#define CM_MULADD(x, y, acc) cm_muladd(x, y, acc)
#define CM_STORE(acc, e, s) cm_store(acc, e, s)
#define CM_LOAD_ACC(f, e, s) f = cm_load_acc(e, s)
#elif defined(CM_KHR)
/* VK_KHR_cooperative_matrix (AMD, Intel; NVIDIA too): the same fragments, typed by use */
#define CM_IN_A coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define CM_IN_B coopmat<float16_t, gl_ScopeSubgroup, 16, FRAG_N, gl_MatrixUseB>
#define CM_ACC coopmat<float, gl_ScopeSubgroup, 16, FRAG_N, gl_MatrixUseAccumulator>
#define CM_ZERO CM_ACC(0.0)
#define CM_LAYOUT(col) ((col) ? gl_CooperativeMatrixLayoutColumnMajor : gl_CooperativeMatrixLayoutRowMajor)
#define CM_LOAD(f, elem, stride, col) coopMatLoad(f, S, elem, stride, CM_LAYOUT(col))
#define CM_LOAD_ACC(f, elem, stride) coopMatLoad(f, S, elem, stride, gl_CooperativeMatrixLayoutRowMajor)
#define CM_MULADD(x, y, acc) coopMatMulAdd(x, y, acc)
#define CM_STORE(acc, elem, stride) coopMatStore(acc, S, elem, stride, gl_CooperativeMatrixLayoutRowMajor)
#else
#define CM_IN_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CM_IN_B fcoopmatNV<16, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ZERO CM_ACC(0.0)
#define CM_LOAD(f, elem, stride, col) coopMatLoadNV(f, S, elem, stride, col)
#define CM_LOAD_ACC(f, elem, stride) coopMatLoadNV(f, S, elem, stride, false)
#define CM_MULADD(x, y, acc) coopMatMulAddNV(x, y, acc)
#define CM_STORE(acc, elem, stride) coopMatStoreNV(acc, S, elem, stride, false)
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
        for (uint i = 0u; i < 4u; i++)                                                       \
            w[i] = uint(arr[at + 2u * i]) | (uint(arr[at + 2u * i + 1u]) << 16u);            \
        return w;                                                                            \
    }
GATHER8(gather_q, q16)
GATHER8(gather_k, k16)
GATHER8(gather_v, v16)

/* Word x (row x / (HD/8), columns 8*(x % (HD/8))..) of the tile of tensor t (0 q, 1 k, 2 v) at row pos0. */
uvec4 tile_word(uint t, uint pos0, uint x) {
    uint T = t == 0u ? p.Tq : p.Tk, pos = pos0 + x / (HD / 8u);
    if (pos >= T) return uvec4(0u);
    uint heads = t == 0u ? p.H : p.Hk, head = t == 0u ? h : kvh;
    uint at = p.off[t] + ((b * T + pos) * heads + head) * HD + 8u * (x % (HD / 8u));
    bool fast = p.off[t] % 8u == 0u;
    if (t == 0u) return fast ? q4[at / 8u] : gather_q(at);
    if (t == 1u) return fast ? k4[at / 8u] : gather_k(at);
    return fast ? v4[at / 8u] : gather_v(at);
}

/* x * 2^e for |e| up to ~250, in two exact steps (2^e itself may not be an f32). */
vec2 scale2(vec2 x, int e) { return ldexp(ldexp(x, ivec2(e / 2)), ivec2(e - e / 2)); }
float scale1(float x, int e) { return ldexp(ldexp(x, e / 2), e - e / 2); }

#ifdef DT_BF16
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
 * f16; returns e, the values being scaled by 2^e (0 for f16 tensors). The
 * bf16 maximum: subgroup maxima in S, one barrier, every invocation reads
 * them; then the words are read again (from the cache) and scaled. (Keeping
 * them in registers instead, LMAX 16, ran slower on the H100: 4.6 ms at d64
 * against 4.5, 16.6 at d128.)
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
    int E;
    frexp(mx, E);
    e = mx > 0.0 ? 15 - E : 0;
#endif
    for (uint x = lid; x < words; x += WG_SIZE) {
        uvec4 w = tile_word(t, pos0, x);
#ifdef DT_BF16
        for (uint i = 0u; i < 4u; i++)
            w[i] = packHalf2x16(scale2(vec2(uintBitsToFloat(w[i] << 16u),
                                            uintBitsToFloat(w[i] & 0xffff0000u)), e));
#endif
        S[dst + staged_at(x)] = w;
    }
    return e;
}

/* Factor of row r of this warp (shared: every lane of the warp scales accumulator elements). */
float row_factor(uint r) { return uintBitsToFloat(S[F_AT + warp * 4u + r / 4u][r % 4u]); }
void set_row_factor(uint r, float f) { S[F_AT + warp * 4u + r / 4u][r % 4u] = floatBitsToUint(f); }

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
    int eq = stage(0u, q0, BR, 0u);
    barrier();
    CM_IN_A fq[QMAX];
    UNROLL for (uint kk = 0u; kk < QMAX; kk++)
        if (kk < HD / 16u) CM_LOAD(fq[kk], warp * 16u * QW + 2u * kk, QW, false);
    CM_ACC o[OMAX];
    UNROLL for (uint j = 0u; j < OMAX; j++) if (j < HD / FRAG_N) o[j] = CM_ZERO;
    float m[RPL_MAX], l[RPL_MAX];
    for (uint u = 0u; u < RPL_MAX; u++) m[u] = MASKED, l[u] = 0.0;
    int ev_o = 0;      /* O holds values times 2^ev_o */
    bool fresh = true; /* O is still zero: no rescale */
    for (uint j0 = 0u; j0 < jend; j0 += BC) {
        barrier(); /* every warp is done with the last k, v and its P */
        int ek = stage(1u, j0, BC, K_AT);
        int ev = stage(2u, j0, BC, V_AT);
        barrier();
        /* warps whose rows all lie past Tq, or all before this tile, skip it (uniform per warp) */
        if (wrow0 >= p.Tq || j0 > wrow0 + 15u + shift) continue;
        float sf = scale1(scale1(p.scale, -eq), -ek); /* score = product * sf */
        CM_ACC sacc[SMAX];
        UNROLL for (uint j = 0u; j < SMAX; j++) if (j < BC / FRAG_N) sacc[j] = CM_ZERO;
        UNROLL for (uint kk = 0u; kk < QMAX; kk++) {
            if (kk >= HD / 16u) continue;
            UNROLL for (uint j = 0u; j < SMAX; j++) {
                if (j >= BC / FRAG_N) continue;
                CM_IN_B kb;
                CM_LOAD(kb, K_AT + j * FRAG_N * QW + 2u * kk, QW, true);
                sacc[j] = CM_MULADD(fq[kk], kb, sacc[j]);
            }
        }
        UNROLL for (uint j = 0u; j < SMAX; j++)
            if (j < BC / FRAG_N) CM_STORE(sacc[j], xw + j * FRAG_N / 4u, SW);
        warp_sync();
        bool rescale = false;
        for (uint u = 0u; u < RPL_MAX; u++) {
            if (u >= RPL) continue;
            uint r = lane / LPR + u * (SUBGROUP_SIZE / LPR), c0 = (lane % LPR) * CPL;
            uint i = wrow0 + r;
            float mx = MASKED;
            for (uint c = c0; c < c0 + CPL; c++) {
                uint j = j0 + c;
                float s = uintBitsToFloat(S[xw + r * SW + c / 4u][c % 4u]) * sf;
                if (j < p.Tk && j <= i + shift) mx = max(mx, s);
            }
            for (uint x = 1u; x < LPR; x <<= 1u) mx = max(mx, subgroupShuffleXor(mx, x));
            float mn = max(m[u], mx), alpha = exp(m[u] - mn), ls = 0.0;
            for (uint c = c0; c < c0 + CPL; c += 8u) {
                float pj[8];
                for (uint z = 0u; z < 8u; z++) {
                    uint j = j0 + c + z;
                    float s = uintBitsToFloat(S[xw + r * SW + (c + z) / 4u][(c + z) % 4u]) * sf;
                    pj[z] = j < p.Tk && j <= i + shift ? exp(s - mn) : 0.0;
                    ls += pj[z];
                }
                S[pw + r * PW + c / 8u] =
                    uvec4(packHalf2x16(vec2(pj[0], pj[1])), packHalf2x16(vec2(pj[2], pj[3])),
                          packHalf2x16(vec2(pj[4], pj[5])), packHalf2x16(vec2(pj[6], pj[7])));
            }
            for (uint x = 1u; x < LPR; x <<= 1u) ls += subgroupShuffleXor(ls, x);
            l[u] = l[u] * alpha + ls;
            m[u] = mn;
            float f = scale1(alpha, ev - ev_o);
            rescale = rescale || f != 1.0;
            if (lane % LPR == 0u) set_row_factor(r, f);
        }
        ev_o = ev;
        warp_sync();
        if (!fresh && subgroupAny(rescale)) {
            UNROLL for (uint j = 0u; j < OMAX; j++) {
                if (j >= HD / FRAG_N) continue;
                CM_STORE(o[j], xw, OSW);
                warp_sync();
                for (uint e = lane; e < 16u * FRAG_N; e += SUBGROUP_SIZE) {
                    uint r = e / FRAG_N, c = e % FRAG_N, at = xw + r * OSW + c / 4u;
                    S[at][c % 4u] = floatBitsToUint(uintBitsToFloat(S[at][c % 4u]) * row_factor(r));
                }
                warp_sync();
                CM_LOAD_ACC(o[j], xw, OSW);
                warp_sync();
            }
        }
        fresh = false;
        CM_IN_A fp[PMAX];
        UNROLL for (uint kk = 0u; kk < PMAX; kk++)
            if (kk < BC / 16u) CM_LOAD(fp[kk], pw + 2u * kk, PW, false);
        UNROLL for (uint j = 0u; j < OMAX; j++) {
            if (j >= HD / FRAG_N) continue;
            UNROLL for (uint kk = 0u; kk < PMAX; kk++) {
                if (kk >= BC / 16u) continue;
                CM_IN_B vb;
                CM_LOAD(vb, V_AT + kk * 16u * QW + j * FRAG_N / 8u, QW, false);
                o[j] = CM_MULADD(fp[kk], vb, o[j]);
            }
        }
    }
    if (wrow0 >= p.Tq) return;
    /* out = O * 2^-ev_o / l, lse = m + log(l), for the rows below Tq */
    for (uint u = 0u; u < RPL_MAX; u++) {
        if (u >= RPL) continue;
        uint r = lane / LPR + u * (SUBGROUP_SIZE / LPR), i = wrow0 + r;
        if (lane % LPR == 0u) set_row_factor(r, i < p.Tq ? scale1(1.0 / l[u], -ev_o) : 0.0);
        if (lane % LPR == 0u && i < p.Tq) lse[p.off[4] + (b * p.H + h) * p.Tq + i] = m[u] + log(l[u]);
    }
    warp_sync();
    UNROLL for (uint j = 0u; j < OMAX; j++) {
        if (j >= HD / FRAG_N) continue;
        CM_STORE(o[j], xw, OSW);
        warp_sync();
        for (uint e = lane; e < 16u * FRAG_N; e += SUBGROUP_SIZE) {
            uint r = e / FRAG_N, c = e % FRAG_N, i = wrow0 + r;
            float v = uintBitsToFloat(S[xw + r * OSW + c / 4u][c % 4u]) * row_factor(r);
#ifdef DT_BF16
            uint w = chm_f32_to_bf16(v);
#else
            uint w = chm_f32_to_f16(v);
#endif
            if (i < p.Tq)
                out16[p.off[3] + ((b * p.Tq + i) * p.H + h) * HD + j * FRAG_N + c] = uint16_t(w);
        }
        warp_sync();
    }
}
