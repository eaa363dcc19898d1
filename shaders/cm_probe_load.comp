/*
 * cm_probe_load.comp: tools/vk_bench's fragment-load probe (issue 6), never
 * used by the backend. Each warp plays the inner loop of a GEMM with a
 * 64 x 64 warp tile: every round loads 4 A fragments (16x16 f16) and
 * 64 / FRAG_N B fragments (16 x FRAG_N) at one of four k offsets of a
 * 64 x 64 (m or n by k) slice, then runs 4 * 64 / FRAG_N coopMatMulAddNV into
 * accumulators held in registers (2 * 64 * 64 * 16 FLOPs a round). Set
 * against cm_probe_mma.comp, this prices the loads: from shared memory
 * (filled once from binding 0), or with -DGLOBAL straight from the storage
 * buffer (each workgroup its own L2-resident slice pair).
 *
 * Variants (-D): GLOBAL (else shared memory); HALF (the arrays hold f16
 * elements, else uvec4 words of 8); A_COL (A stored k-major, i.e. read
 * column-major, as matmul_cm.comp does for trans_a; else m-major, read
 * row-major); B_ROW (B stored k-major, read row-major, as for a B that is
 * not transposed; else n-major, read column-major, as for trans_b); FRAG_N
 * (16 or 8); PLAIN (cm_probe_ops.glsl). Spec constants: 0 workgroup size,
 * 1 subgroup size, 2 PAD: elements added to each stored row of 64 (0: rows
 * 128 bytes apart; 8: the padding matmul_cm.comp uses against bank
 * conflicts). Push: iters rounds, and step (1; keeps the k offset out of
 * the compiler's sight, so loads cannot be hoisted out of the loop).
 * Bindings: 0 the operands' values (64 slice pairs of 2 * 64 * (64 + PAD)
 * f16), 1 the output (16 accumulators of room 16 x FRAG_N f32 per warp:
 * 64 * FRAG_N uvec4 words; FRAG_N 8 stores 32).
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

#ifndef FRAG_N
#define FRAG_N 16u
#endif
#define FB (64u / FRAG_N) /* B fragments a round */

layout(constant_id = 2) const uint PAD = 8;

#ifdef HALF
#define ELEM float16_t
#define UNIT 1u /* elements per array element */
#else
#define ELEM uvec4
#define UNIT 8u
#endif
layout(binding = 0) readonly buffer Src { ELEM src[]; };
layout(binding = 1) buffer Dst { uvec4 dst[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint iters, step;
} p;

#include "cm_probe_ops.glsl"

const uint LD = 64u + PAD;            /* stored row length, elements */
const uint SLICE = 64u * LD / UNIT;   /* one operand's slice, array elements */

#ifdef GLOBAL
#define OPS src
#else
shared ELEM ops[2u * SLICE];
#define OPS ops
#endif

void main() {
    uint base = 0u;
#ifdef GLOBAL
    base = (chm_group() % 64u) * 2u * SLICE;
#else
    for (uint i = gl_LocalInvocationID.x; i < 2u * SLICE; i += WG_SIZE) ops[i] = src[i];
    barrier();
#endif
    CM_ACC acc[4u * FB];
    [[unroll]] for (uint f = 0u; f < 4u * FB; f++) acc[f] = CM_ACC_ZERO;
    for (uint it = 0u; it < p.iters; it++) {
        uint kk = ((it * p.step) & 3u) * 16u;
        CM_IN_A fa[4];
        CM_IN_B fb[FB];
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
#ifdef A_COL
            CM_LOAD(fa[i], OPS, base + (kk * LD + i * 16u) / UNIT, LD / UNIT, true);
#else
            CM_LOAD(fa[i], OPS, base + (i * 16u * LD + kk) / UNIT, LD / UNIT, false);
#endif
        }
        uint bbase = base + SLICE;
        [[unroll]] for (uint j = 0u; j < FB; j++) {
#ifdef B_ROW
            CM_LOAD(fb[j], OPS, bbase + (kk * LD + j * FRAG_N) / UNIT, LD / UNIT, false);
#else
            CM_LOAD(fb[j], OPS, bbase + (j * FRAG_N * LD + kk) / UNIT, LD / UNIT, true);
#endif
        }
        [[unroll]] for (uint i = 0u; i < 4u; i++)
            [[unroll]] for (uint j = 0u; j < FB; j++)
                acc[i * FB + j] = CM_MULADD(fa[i], fb[j], acc[i * FB + j]);
    }
    uint out0 = probe_warp_out(4u * FB);
    [[unroll]] for (uint f = 0u; f < 4u * FB; f++)
        CM_STORE(acc[f], dst, out0 + f * ACC_WORDS, ROW_WORDS);
}
