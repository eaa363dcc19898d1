/*
 * matmul.comp: C = alpha*op(A)op(B) + beta*C (+ bias[N] per row), a tiled
 * shared-memory GEMM computing in f32 (matmul.c picks the tiles and runs it):
 * the plain path, for f32 and for devices without cooperative matrices.
 *
 * Per batch entry: op(A) [M,K] (A stored [K,M] when trans_a), op(B) [K,N]
 * (B stored [N,K] when trans_b), C [M,N]; lda/ldb are the stored row
 * lengths and sa/sb/sc the batch strides (0 broadcasts an operand).
 * One workgroup computes one BM x BN tile of C, walking K in BK-deep slices
 * through two shared-memory stages: while the invocations multiply slice k
 * out of one stage, slice k+1's global loads are in flight in registers,
 * then stored into the other stage; one barrier per slice. Each invocation
 * accumulates a TM x TN micro-tile (TM, TN 4 or 8) made of 4 x 4 blocks:
 * rows 4*(tr + h*BM/TM) + 0..3 for h < TM/4, columns likewise, so that each
 * step reads its operands as vec4 words of the staged slices (one word per
 * block) and neighbouring invocations read neighbouring words.
 *
 * Staging: a slice of an operand is staged as [BK][rows of the tile + 4]
 * f32 (rows padded by 4: the transposing stores below hit distinct banks,
 * words stay 16-byte aligned), moving 4 consecutive elements of the stored
 * layout per load: 4 terms of one row of the tile where the stored operand
 * has K fastest (A, or B^T), else 4 rows of the tile at one term. Where the
 * tile lies wholly inside M and N, the slice inside K, and the operand's
 * offset, row length and batch stride are multiples of 4, that is one vector
 * load (vec4, or uvec2 of four 16-bit values); elsewhere (edges, odd views)
 * four bounds-checked loads with zeros outside. The choice is uniform over
 * the workgroup, so the branch costs nothing.
 * Every element of C is written by one invocation with a fixed order of
 * additions: deterministic. beta = 0 never reads C (NaN there is ignored);
 * alpha = 0 adds nothing.
 *
 * Variants:
 *   matmul          binding 2 is bias [N] (optional: flag 4).
 *   matmul_grouped  (-DGROUPED) binding 2 is counts [E] (I32): in group e
 *                   only counts[e] rows of op(A) are live (without trans_a;
 *                   the others give C = beta*C), or only counts[e] terms of
 *                   the sum over K (with trans_a: weight gradients). A count
 *                   outside [0, capacity] is clamped and reported (status
 *                   code 8).
 *   <name>_f16, <name>_bf16 (-DDT_F16 / -DDT_BF16): A, B, bias and C are
 *                   16-bit tensors (GL_EXT_shader_16bit_storage). They are
 *                   widened to f32 exactly on load (half.glsl), all math is
 *                   f32 as in the f32 variant, and C is rounded once to
 *                   nearest even on store: the plain path of 16-bit matmuls,
 *                   for devices without cooperative matrices (matmul_cm.comp).
 * Spec constants: 0 workgroup size = (BM/TM)*(BN/TN), 2 BM, 3 BN, 4 BK, 5 TM, 6 TN
 * (matmul.c's mm_tile_check: TM and TN 4 or 8 dividing BM and BN, BK a multiple of 4, at
 * most VMAX loads per invocation and operand slice, both stages in shared memory).
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#if defined(DT_F16) || defined(DT_BF16)
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common.glsl"
#include "half.glsl"

layout(constant_id = 2) const uint BM = 128;
layout(constant_id = 3) const uint BN = 128;
layout(constant_id = 4) const uint BK = 8;
layout(constant_id = 5) const uint TM = 8;
layout(constant_id = 6) const uint TN = 8;
/* Register arrays get a literal size (spec constants only guard their use): arrays sized by
 * spec constants may be kept in local memory by a driver. */
#define TMAX 8 /* largest TM, TN */
#define VMAX 4 /* largest number of 4-element loads per invocation and operand slice */

/* The storage type of the float tensors and its loads (to f32) and store (from f32). */
#if defined(DT_F16)
#define ELEM uint16_t
#define LD(x) chm_f16_to_f32(uint(x))
#define ST(v) uint16_t(chm_f32_to_f16(v))
#elif defined(DT_BF16)
#define ELEM uint16_t
#define LD(x) chm_bf16_to_f32(uint(x))
#define ST(v) uint16_t(chm_f32_to_bf16(v))
#else
#define ELEM float
#define LD(x) (x)
#define ST(v) (v)
#endif

layout(binding = 0) readonly buffer A_ { ELEM a[]; };
layout(binding = 1) readonly buffer B_ { ELEM b[]; };
/* The same bindings read 4 elements at a time (16-bit: two words of two). */
#if defined(DT_F16) || defined(DT_BF16)
layout(binding = 0) readonly buffer A4_ { uvec2 a4[]; };
layout(binding = 1) readonly buffer B4_ { uvec2 b4[]; };
vec4 widen4(uvec2 w) {
    return vec4(LD(w.x & 0xffffu), LD(w.x >> 16), LD(w.y & 0xffffu), LD(w.y >> 16));
}
#else
layout(binding = 0) readonly buffer A4_ { vec4 a4[]; };
layout(binding = 1) readonly buffer B4_ { vec4 b4[]; };
#define widen4(w) (w)
#endif
#ifdef GROUPED
layout(binding = 2) readonly buffer Counts { int counts[]; };
#define CHM_STATUS_BINDING 4
#include "status.glsl"
#else
layout(binding = 2) readonly buffer Bias { ELEM bias[]; };
#endif
layout(binding = 3) buffer C_ { ELEM c[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint M, N, K, lda, ldb;
    uint sa, sb, sc;          /* batch strides in elements */
    uint batch, tiles_m, tiles_n;
    uint flags;               /* 1 trans_a, 2 trans_b, 4 bias, 8 beta is 0 */
    float alpha, beta;
} p;

/* Staged slices: [stage][BK][rows + 4] f32 as vec4 words (SA4, SB4 words a term). */
const uint SA4 = BM / 4u + 1u, SB4 = BN / 4u + 1u;
shared vec4 As[2u * BK * SA4];
shared vec4 Bs[2u * BK * SB4];

/*
 * How one operand's slice is fetched: `rows` rows of the tile (BM or BN) from `r0`, live
 * rows `rlive`, live terms `klive`; `kfast`: the stored layout has K fastest (A, or B^T).
 * Load v of the slice (v < rows*BK/4) covers 4 terms of one row (kfast) or 4 rows at one term.
 */
struct operand {
    uint base, ld, r0, rlive, rows;
    bool kfast, vec; /* vec: whole aligned vectors may be loaded (offset, ld, stride % 4 == 0) */
};

/* Row-of-tile and term of load v's first element. */
void load_pos(const operand o, uint v, out uint r, out uint k) {
    if (o.kfast) {
        r = v / (BK / 4u);
        k = 4u * (v % (BK / 4u));
    } else {
        k = v / (o.rows / 4u);
        r = 4u * (v % (o.rows / 4u));
    }
}

/* The 4 elements of load v of the slice at k0 (whole: no element outside the live ranges). */
vec4 fetch(const operand o, bool is_a, uint v, uint k0, uint klive, bool whole) {
    uint r, k;
    load_pos(o, v, r, k);
    uint row = o.r0 + r, term = k0 + k;
    uint first = o.kfast ? o.base + row * o.ld + term : o.base + term * o.ld + row;
    if (whole && o.vec) return is_a ? widen4(a4[first / 4u]) : widen4(b4[first / 4u]);
    vec4 x = vec4(0.0);
    [[unroll]] for (uint e = 0u; e < 4u; e++) {
        uint rr = o.kfast ? row : row + e, kk = o.kfast ? term + e : term;
        /* (consecutive in the stored layout either way; widened before the select: selecting
         * 16-bit values would need the Int16 capability) */
        if (rr < o.rlive && kk < klive) x[e] = is_a ? LD(a[first + e]) : LD(b[first + e]);
    }
    return x;
}

/* Store load v's 4 elements into stage st of the operand's staged slices. */
void stage(const operand o, bool is_a, uint st, uint v, vec4 x) {
    uint r, k;
    load_pos(o, v, r, k);
    uint s4 = is_a ? SA4 : SB4, w = st * BK * s4 + r / 4u;
    if (o.kfast) {
        /* 4 terms of one row: one float in each of 4 term rows */
        [[unroll]] for (uint e = 0u; e < 4u; e++) {
            if (is_a) As[w + (k + e) * s4][r % 4u] = x[e];
            else Bs[w + (k + e) * s4][r % 4u] = x[e];
        }
    } else if (is_a) {
        As[w + k * s4] = x;
    } else {
        Bs[w + k * s4] = x;
    }
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
    operand oa, ob;
    oa.base = p.off[0] + bat * p.sa, oa.ld = p.lda, oa.r0 = m0, oa.rlive = mlive, oa.rows = BM;
    oa.kfast = !ta, oa.vec = ((oa.base | p.lda) & 3u) == 0u;
    ob.base = p.off[1] + bat * p.sb, ob.ld = p.ldb, ob.r0 = n0, ob.rlive = p.N, ob.rows = BN;
    ob.kfast = tb, ob.vec = ((ob.base | p.ldb) & 3u) == 0u;
    bool inside = m0 + BM <= mlive && n0 + BN <= p.N; /* the tile, in M and N */

    const uint TR = BM / TM, TC = BN / TN, VA = BM * BK / 4u, VB = BN * BK / 4u;
    uint lid = gl_LocalInvocationID.x, tr = lid / TC, tc = lid % TC;
    /*
     * Registers: every loop over acc, the fetched words and the step's operands has a literal
     * bound (TMAX, VMAX; spec constants only guard the body), so glslc unrolls it and every
     * index is a constant. The epilogue uses a guard, not `continue`: glslc's unroller leaves
     * a loop with a continue rolled, and NVIDIA's driver then kept acc in local memory (f16:
     * a tenth of bf16's speed, issue 6, session 13).
     */
    float acc[TMAX * TMAX];
    [[unroll]] for (uint i = 0u; i < TMAX * TMAX; i++) acc[i] = 0.0;
    vec4 xa[VMAX], xb[VMAX];
    uint kend = m0 < mlive ? klive : 0u; /* a tile of dead rows skips the product */
    if (kend > 0u) {
        bool whole = inside && BK <= klive;
        [[unroll]] for (uint j = 0u; j < VMAX; j++) {
            uint v = lid + j * WG_SIZE;
            if (v < VA) xa[j] = fetch(oa, true, v, 0u, klive, whole);
            if (v < VB) xb[j] = fetch(ob, false, v, 0u, klive, whole);
        }
    }
    uint st = 0u;
    for (uint k0 = 0u; k0 < kend; k0 += BK) {
        [[unroll]] for (uint j = 0u; j < VMAX; j++) {
            uint v = lid + j * WG_SIZE;
            if (v < VA) stage(oa, true, st, v, xa[j]);
            if (v < VB) stage(ob, false, st, v, xb[j]);
        }
        barrier();
        uint k1 = k0 + BK;
        if (k1 < kend) { /* the next slice's loads, in flight during this slice's steps */
            bool whole = inside && k1 + BK <= klive;
            [[unroll]] for (uint j = 0u; j < VMAX; j++) {
                uint v = lid + j * WG_SIZE;
                if (v < VA) xa[j] = fetch(oa, true, v, k1, klive, whole);
                if (v < VB) xb[j] = fetch(ob, false, v, k1, klive, whole);
            }
        }
        uint wa = st * BK * SA4 + tr, wb = st * BK * SB4 + tc;
        [[unroll]] for (uint kk = 0u; kk < BK; kk++) {
            vec4 av[TMAX / 4u], bv[TMAX / 4u];
            [[unroll]] for (uint h = 0u; h < TMAX / 4u; h++) {
                if (h < TM / 4u) av[h] = As[wa + kk * SA4 + h * TR];
                if (h < TN / 4u) bv[h] = Bs[wb + kk * SB4 + h * TC];
            }
            [[unroll]] for (uint i = 0u; i < TMAX; i++)
                [[unroll]] for (uint j = 0u; j < TMAX; j++)
                    if (i < TM && j < TN)
                        acc[i * TMAX + j] = fma(av[i / 4u][i % 4u], bv[j / 4u][j % 4u],
                                                acc[i * TMAX + j]);
        }
        st ^= 1u;
    }
    uint cbase = p.off[3] + bat * p.sc;
    [[unroll]] for (uint i = 0u; i < TMAX; i++) {
        uint m = m0 + 4u * (tr + (i / 4u) * TR) + i % 4u;
        [[unroll]] for (uint j = 0u; j < TMAX; j++) {
            uint n = n0 + 4u * (tc + (j / 4u) * TC) + j % 4u;
            if (i < TM && j < TN && m < p.M && n < p.N) {
                uint ci = cbase + m * p.N + n;
                float v = p.alpha == 0.0 ? 0.0 : p.alpha * acc[i * TMAX + j];
                if ((p.flags & 8u) == 0u) v += p.beta * LD(c[ci]);
#ifndef GROUPED
                if ((p.flags & 4u) != 0u) v += LD(bias[p.off[2] + n]);
#endif
                c[ci] = ST(v);
            }
        }
    }
}
