/*
 * fill.comp: t[i] = value, for every element of a tensor of any dtype.
 * The host converts the value into the dtype's bits; the shader stores words.
 * Variants (-D WORD_BITS): fill_16 (bf16/f16, needs 16-bit storage),
 * fill_32 (f32, i32), fill_64 (f64 as two words), fill_128 (any dtype,
 * 16 bytes per invocation: the value's 64-bit pattern twice, for tensors
 * whose bytes start and end 16-aligned; convert.c repeats 16-bit values).
 */
#version 450
#if WORD_BITS == 16
#extension GL_EXT_shader_16bit_storage : require
#define WORD uint16_t
#define VALUE uint16_t(p.lo)
#elif WORD_BITS == 32
#define WORD uint
#define VALUE p.lo
#elif WORD_BITS == 64
#define WORD uvec2
#define VALUE uvec2(p.lo, p.hi)
#else
#define WORD uvec4
#define VALUE uvec4(p.lo, p.hi, p.lo, p.hi)
#endif
#include "common.glsl"

layout(binding = 0) writeonly buffer T { WORD t[]; };

layout(push_constant) uniform Push {
    uint off[1];
    uint n;       /* elements (words of WORD_BITS) */
    uint lo, hi;  /* the value's bits (hi: upper word of an f64) */
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) t[p.off[0] + i] = VALUE;
}
