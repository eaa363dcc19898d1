/*
 * matmul_splitk.comp: C = alpha*op(A)op(B) + beta*C for thin products with a
 * long sum, split over K (matmul.c's split-K path; chimera-1b's weight
 * gradients such as [16,2048] = dY^T X over K = 16384 tokens, which the tiled
 * shaders run on a few dozen workgroups, one K loop each).
 *
 * Element (k, m) of op(A) sits at k*a_sk + m*a_sm, (k, n) of op(B) at
 * k*b_sk + n*b_sn (push constants: any of the four transpose combinations);
 * C [M,N]. One of M and N (the "small" dim) is the width of the operand Y
 * every invocation reads, the other (the "large" dim L) the operand X whose
 * column l invocation l owns. The work is cut into `slices` runs of `ks` rows
 * of K and the small dim into `jblocks` blocks of SMALL:
 *   _part (-DPART -DSMALL=16|64, dtype variants): workgroup (s, jb, tile) sums
 *     rows [s*ks, s*ks + ks) of its invocations' columns against Y's columns
 *     [jb*SMALL, jb*SMALL + SMALL): those are staged in shared memory KC rows
 *     at a time (f32), each invocation keeps its SMALL sums in registers and adds
 *     x * y in increasing k; the sums go to P [slices, small, L] (f32) in that
 *     layout (coalesced by l);
 *   _sum (-DSUM, dtype variants of C): each element of C adds its slices'
 *     partial sums in slice order, then alpha, beta*C (not read when beta
 *     is 0), rounded once to C's dtype.
 * Products of 16-bit operands are exact in f32 and every sum is f32 in one
 * fixed order: deterministic, and no coarser than the tiled shaders.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "dt.glsl"
#include "common.glsl"

#ifdef PART
#define KC 32u
#define Q (uint(SMALL) / 4u)
layout(binding = 0) readonly buffer A { DT a[]; };
layout(binding = 1) readonly buffer B { DT b[]; };
layout(binding = 2) writeonly buffer P { float part[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint M, N, K, ks, tiles, small_m; /* small_m 1: M is the small dim (Y = A), else N (Y = B) */
    uint jblocks;                     /* blocks of SMALL columns of the small dim */
    uint a_sk, a_sm, b_sk, b_sn;      /* element strides of op(A) (k, m) and op(B) (k, n) */
} p;

shared vec4 ys[KC * Q]; /* rows [k0, k0 + KC) of Y, SMALL columns each (zeros past small) */

/* Element (k, j) of Y and (k, l) of X. */
float load_y(uint k, uint j) {
    return p.small_m != 0u ? LOAD(a[p.off[0] + k * p.a_sk + j * p.a_sm])
                           : LOAD(b[p.off[1] + k * p.b_sk + j * p.b_sn]);
}
float load_x(uint k, uint l) {
    return p.small_m != 0u ? LOAD(b[p.off[1] + k * p.b_sk + l * p.b_sn])
                           : LOAD(a[p.off[0] + k * p.a_sk + l * p.a_sm]);
}

void main() {
    uint g = chm_group(), per = p.tiles * p.jblocks, lid = gl_LocalInvocationID.x;
    uint s = g / per, j0 = ((g % per) / p.tiles) * uint(SMALL);
    uint L = p.small_m != 0u ? p.N : p.M, small = p.small_m != 0u ? p.M : p.N;
    uint width = min(uint(SMALL), small - j0); /* this block's columns of the small dim */
    uint l = (g % p.tiles) * WG_SIZE + lid;
    uint k_lo = s * p.ks, k_hi = min(p.K, k_lo + p.ks);
    vec4 acc[Q];
    [[unroll]] for (uint q = 0u; q < Q; q++) acc[q] = vec4(0.0);
    for (uint k0 = k_lo; k0 < k_hi; k0 += KC) { /* uniform: the same for the whole group */
        uint rows = min(KC, k_hi - k0);
        for (uint i = lid; i < KC * uint(SMALL); i += WG_SIZE) {
            uint kk = i / uint(SMALL), j = i % uint(SMALL); /* j first: no bank conflicts */
            ys[kk * Q + j / 4u][j % 4u] = kk < rows && j < width ? load_y(k0 + kk, j0 + j) : 0.0;
        }
        barrier();
        if (l < L)
            for (uint kk = 0u; kk < rows; kk++) {
                float x = load_x(k0 + kk, l);
                [[unroll]] for (uint q = 0u; q < Q; q++) acc[q] += x * ys[kk * Q + q];
            }
        barrier();
    }
    if (l >= L) return;
    [[unroll]] for (uint q = 0u; q < Q; q++)
        [[unroll]] for (uint c = 0u; c < 4u; c++) {
            uint j = 4u * q + c;
            if (j < width) part[p.off[2] + (s * small + j0 + j) * L + l] = acc[q][c];
        }
}

#else /* SUM */
layout(binding = 0) readonly buffer P { float part[]; };
layout(binding = 1) buffer Out { DT c_[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint M, N, slices, small_m, beta0;
    float alpha, beta;
} p;

void main() {
    uint i = chm_index(), n = p.M * p.N;
    if (i >= n) return;
    uint L = p.small_m != 0u ? p.N : p.M, small = p.small_m != 0u ? p.M : p.N;
    uint j = i / L, l = i % L; /* i walks P's layout: reads coalesce */
    float s = 0.0;
    for (uint k = 0u; k < p.slices; k++) s += part[p.off[0] + (k * small + j) * L + l];
    uint e = p.off[1] + (p.small_m != 0u ? j * p.N + l : l * p.N + j);
    float v = p.alpha * s;
    if (p.beta0 == 0u) v += p.beta * LOAD(c_[e]);
    c_[e] = STORE(v);
}
#endif
