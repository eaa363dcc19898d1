/*
 * l2_probe.comp: tools/vk_bench's read-bandwidth probe (issue 6), never used by
 * the backend. Invocation i of n reads the 16-byte words (i + q (n + 1792)) mod
 * words of a region (words a power of two; neighbours read neighbours; the
 * 1792 moves each workgroup's window on, so that no SM reads a word again
 * before it has read megabytes of others: L1 cannot serve it), q = 0 ..
 * p.iters * LOADS - 1, the LOADS of an iteration independent, and stores one word
 * folded from them all: with a region that fits the L2 cache this is the
 * L2 -> SM bandwidth that bounds matmul_cm.comp's staging loads; with a larger
 * one, the memory's. Spec constants: 0 workgroup size, 2 LOADS (1 to 4).
 * Bindings: 0 the region, 1 one word per invocation.
 */
#version 450
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(constant_id = 2) const uint LOADS = 4;

layout(binding = 0) readonly buffer Src { uvec4 src[]; };
layout(binding = 1) writeonly buffer Dst { uvec4 dst[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint words, iters;
} p;

void main() {
    uint i0 = chm_index(), n = gl_NumWorkGroups.x * gl_NumWorkGroups.y * WG_SIZE;
    uint mask = p.words - 1u;
    uvec4 acc = uvec4(i0);
    for (uint j = 0u; j < p.iters; j++) {
        uvec4 v[4];
        [[unroll]] for (uint l = 0u; l < 4u; l++)
            if (l < LOADS) v[l] = src[p.off[0] + ((i0 + (j * LOADS + l) * (n + 1792u)) & mask)];
        [[unroll]] for (uint l = 0u; l < 4u; l++)
            if (l < LOADS) acc = (acc ^ v[l]) + uvec4(j);
    }
    dst[p.off[1] + i0] = acc;
}
