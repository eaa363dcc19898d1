/*
 * copy.comp: dst = src as raw words (the copy op of every dtype). A shader
 * rather than vkCmdCopyBuffer: on the H100 it streams ~3x faster.
 * Variants (-D WORD_BITS): copy_128 (uvec4, when both ends and the size are
 * 16-byte aligned), copy_32, copy_16 (16-bit storage, 2-byte aligned data).
 * The host resolves overlapping src and dst through a scratch copy.
 */
#version 450
#if WORD_BITS == 16
#extension GL_EXT_shader_16bit_storage : require
#define WORD uint16_t
#elif WORD_BITS == 32
#define WORD uint
#else
#define WORD uvec4
#endif
#include "common.glsl"

layout(binding = 0) readonly buffer Src { WORD src[]; };
layout(binding = 1) writeonly buffer Dst { WORD dst[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint n;  /* words */
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) dst[p.off[1] + i] = src[p.off[0] + i];
}
