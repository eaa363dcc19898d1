/*
 * matmul.comp: C = alpha*op(A)op(B) + beta*C (+ bias[N] per row), a tiled
 * shared-memory GEMM computing in f32 (matmul.c picks the tiles and runs it).
 *
 * Per batch entry: op(A) [M,K] (A stored [K,M] when trans_a), op(B) [K,N]
 * (B stored [N,K] when trans_b), C [M,N]; lda/ldb are the stored row
 * lengths and sa/sb/sc the batch strides (0 broadcasts an operand).
 * One workgroup computes one BM x BN tile of C: each step stages a BK-deep
 * slice of A and B in shared memory (zero-padded at the edges), and each
 * invocation accumulates a TM x TN micro-tile whose rows and columns are
 * strided by BM/TM and BN/TN (so neighbouring invocations touch neighbouring
 * columns of C and of the B tile). Every element of C is written by one
 * invocation with a fixed order of additions: deterministic.
 * beta = 0 never reads C (NaN there is ignored); alpha = 0 adds nothing.
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
 * (TM, TN <= TMAX).
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#if defined(DT_F16) || defined(DT_BF16)
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common.glsl"
#include "half.glsl"

layout(constant_id = 2) const uint BM = 64;
layout(constant_id = 3) const uint BN = 64;
layout(constant_id = 4) const uint BK = 16;
layout(constant_id = 5) const uint TM = 4;
layout(constant_id = 6) const uint TN = 4;
/* Register arrays get a literal size (at least TM*TN, TM, TN): arrays sized by
 * spec constants may be kept in local memory by a driver. */
#define TMAX 8

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

/* [BK][BM] and [BK][BN], rows padded by one so that staging a row-major
 * operand (k fastest) writes to different banks */
#define SA (BM + 1u)
#define SB (BN + 1u)
shared float As[BK * SA];
shared float Bs[BK * SB];

/* Stage A(m0.., k0..) into As, zero outside the live rows and terms. */
void load_a(uint base, uint m0, uint k0, uint mlive, uint klive, bool ta) {
    for (uint i = gl_LocalInvocationID.x; i < BM * BK; i += WG_SIZE) {
        /* walk the stored layout's contiguous dim fastest */
        uint mm = ta ? i % BM : i / BK, kk = ta ? i / BM : i % BK;
        uint m = m0 + mm, k = k0 + kk;
        float v = 0.0;
        /* widened before the select: selecting 16-bit values would need the Int16 capability */
        if (m < mlive && k < klive)
            v = ta ? LD(a[base + k * p.lda + m]) : LD(a[base + m * p.lda + k]);
        As[kk * SA + mm] = v;
    }
}

/* Stage B(k0.., n0..) into Bs. */
void load_b(uint base, uint n0, uint k0, uint klive, bool tb) {
    for (uint i = gl_LocalInvocationID.x; i < BN * BK; i += WG_SIZE) {
        uint nn = tb ? i / BK : i % BN, kk = tb ? i % BK : i / BN;
        uint n = n0 + nn, k = k0 + kk;
        float v = 0.0;
        if (n < p.N && k < klive)
            v = tb ? LD(b[base + n * p.ldb + k]) : LD(b[base + k * p.ldb + n]);
        Bs[kk * SB + nn] = v;
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
    uint TR = BM / TM, TC = BN / TN, lid = gl_LocalInvocationID.x;
    uint tr = lid / TC, tc = lid % TC;
    /*
     * Registers: every loop over acc, av, bv has the literal bound TMAX (TM and TN only guard
     * its body), so glslc unrolls it and every index is a constant. The epilogue's loops, with
     * `continue`s, reached the driver rolled; NVIDIA's unrolled them for bf16 but not for f16
     * (its longer rounding), kept acc in local memory (256 bytes) and ran the f16 product at a
     * tenth of bf16's speed (issue 6, session 13).
     */
    float acc[TMAX * TMAX];
    [[unroll]] for (uint i = 0; i < TMAX * TMAX; i++) acc[i] = 0.0;
    uint abase = p.off[0] + bat * p.sa, bbase = p.off[1] + bat * p.sb;
    uint kend = m0 < mlive ? klive : 0u; /* a tile of dead rows skips the product */
    for (uint k0 = 0; k0 < kend; k0 += BK) {
        load_a(abase, m0, k0, mlive, klive, ta);
        load_b(bbase, n0, k0, klive, tb);
        barrier();
        [[unroll]] for (uint kk = 0; kk < BK; kk++) {
            float av[TMAX], bv[TMAX];
            [[unroll]] for (uint i = 0; i < TMAX; i++)
                if (i < TM) av[i] = As[kk * SA + tr + i * TR];
            [[unroll]] for (uint j = 0; j < TMAX; j++)
                if (j < TN) bv[j] = Bs[kk * SB + tc + j * TC];
            [[unroll]] for (uint i = 0; i < TMAX; i++)
                [[unroll]] for (uint j = 0; j < TMAX; j++)
                    if (i < TM && j < TN) acc[i * TMAX + j] = fma(av[i], bv[j], acc[i * TMAX + j]);
        }
        barrier();
    }
    uint cbase = p.off[3] + bat * p.sc;
    /* (a guard, not `continue`: glslc's unroller leaves a loop with a continue rolled) */
    [[unroll]] for (uint i = 0; i < TMAX; i++) {
        uint m = m0 + tr + i * TR;
        [[unroll]] for (uint j = 0; j < TMAX; j++) {
            uint n = n0 + tc + j * TC;
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
