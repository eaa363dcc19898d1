/*
 * cm_probe_mma.comp: tools/vk_bench's tensor-core throughput probe (issue 6),
 * never used by the backend. Each warp (subgroup) loads two A fragments
 * (16x16 f16) and two B fragments (16 x FRAG_N) once, then runs p.iters
 * rounds of 8 coopMatMulAddNV on 8 accumulators held in registers (8
 * independent chains, so the tensor pipe is never waiting on one result),
 * and stores its accumulators once at the end so that nothing is dropped.
 * FLOPs per warp: iters * 8 * 2 * 16 * FRAG_N * 16.
 *
 * Variants (-D): ACC_F16 (f16 accumulators instead of f32, where the device
 * lists them); DYNAMIC: the accumulators in an array, multiplied with
 * constant indices but stored by a loop whose bound the compiler cannot see
 * (p.nstore), as matmul_cm.comp's epilogue did before issue 6's fix: such
 * an array cannot stay in registers, so this prices an accumulator array
 * in local memory; PLAIN: the matrix operations replaced by plain f32
 * arithmetic (cm_probe_ops.glsl: runs the probe's plumbing on lavapipe).
 * Spec constants: 0 workgroup size (warps * subgroup size), 1 subgroup
 * size, 2 FRAG_N (16 or 8).
 * Bindings: 0 the fragments' f16 values (at least 128 uvec4 words), 1 the
 * output: 8 accumulators of 16 x FRAG_N (at most f32) per warp, 32 FRAG_N
 * uvec4 words.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#if defined(CM_KHR)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_cooperative_matrix : require
#elif !defined(PLAIN)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#endif
#include "common.glsl"

layout(constant_id = 2) const uint FRAG_N = 16;

layout(binding = 0) readonly buffer Src { uvec4 src[]; };
layout(binding = 1) buffer Dst { uvec4 dst[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint iters;
    uint nstore; /* DYNAMIC: accumulators to store (8) */
} p;

#include "cm_probe_ops.glsl"

void main() {
    CM_IN_A a0, a1;
    CM_IN_B b0, b1;
    /* 16 f16 a row: 2 words; a fragment takes 32 words (B: 16 x FRAG_N, at most 32) */
    CM_LOAD(a0, src, 0u, 2u, false);
    CM_LOAD(a1, src, 32u, 2u, false);
    CM_LOAD(b0, src, 16u, FRAG_N / 8u, false);
    CM_LOAD(b1, src, 48u, FRAG_N / 8u, false);
    uint n = p.iters;
#ifdef DYNAMIC
    CM_ACC acc[8];
    [[unroll]] for (uint i = 0u; i < 8u; i++) acc[i] = CM_ACC_ZERO;
    for (uint it = 0u; it < n; it++) {
        [[unroll]] for (uint i = 0u; i < 8u; i += 4u) {
            acc[i] = CM_MULADD(a0, b0, acc[i]);
            acc[i + 1u] = CM_MULADD(a1, b0, acc[i + 1u]);
            acc[i + 2u] = CM_MULADD(a0, b1, acc[i + 2u]);
            acc[i + 3u] = CM_MULADD(a1, b1, acc[i + 3u]);
        }
    }
    /* the one access by a variable index (p.nstore = 8, unknown to the compiler) */
    uint out0 = probe_warp_out(8u);
    for (uint i = 0u; i < p.nstore && i < 8u; i++)
        CM_STORE(acc[i], dst, out0 + i * ACC_WORDS, ROW_WORDS);
#else
    CM_ACC c0 = CM_ACC_ZERO, c1 = CM_ACC_ZERO, c2 = CM_ACC_ZERO, c3 = CM_ACC_ZERO;
    CM_ACC c4 = CM_ACC_ZERO, c5 = CM_ACC_ZERO, c6 = CM_ACC_ZERO, c7 = CM_ACC_ZERO;
    for (uint it = 0u; it < n; it++) {
        c0 = CM_MULADD(a0, b0, c0);
        c1 = CM_MULADD(a1, b0, c1);
        c2 = CM_MULADD(a0, b1, c2);
        c3 = CM_MULADD(a1, b1, c3);
        c4 = CM_MULADD(a0, b0, c4);
        c5 = CM_MULADD(a1, b0, c5);
        c6 = CM_MULADD(a0, b1, c6);
        c7 = CM_MULADD(a1, b1, c7);
    }
    /* one store each (glslc -O of glslang 11 crashes on sums of cooperative matrices) */
    uint out0 = probe_warp_out(8u);
    CM_STORE(c0, dst, out0, ROW_WORDS);
    CM_STORE(c1, dst, out0 + ACC_WORDS, ROW_WORDS);
    CM_STORE(c2, dst, out0 + 2u * ACC_WORDS, ROW_WORDS);
    CM_STORE(c3, dst, out0 + 3u * ACC_WORDS, ROW_WORDS);
    CM_STORE(c4, dst, out0 + 4u * ACC_WORDS, ROW_WORDS);
    CM_STORE(c5, dst, out0 + 5u * ACC_WORDS, ROW_WORDS);
    CM_STORE(c6, dst, out0 + 6u * ACC_WORDS, ROW_WORDS);
    CM_STORE(c7, dst, out0 + 7u * ACC_WORDS, ROW_WORDS);
#endif
}
