/*
 * cast.comp: dst = src converted between f32, bf16 and f16, element by
 * element, rounded to nearest even (half.glsl). Variants cast_<src>_<dst>
 * from -D SRC_F32/SRC_BF16/SRC_F16 and DST_F32/DST_BF16/DST_F16.
 */
#version 450
#extension GL_EXT_shader_16bit_storage : require
#include "common.glsl"
#include "half.glsl"

#ifdef SRC_F32
layout(binding = 0) readonly buffer Src { float src[]; };
#define LOAD(i) src[i]
#elif defined(SRC_BF16)
layout(binding = 0) readonly buffer Src { uint16_t src[]; };
#define LOAD(i) chm_bf16_to_f32(uint(src[i]))
#else
layout(binding = 0) readonly buffer Src { uint16_t src[]; };
#define LOAD(i) chm_f16_to_f32(uint(src[i]))
#endif

#ifdef DST_F32
layout(binding = 1) writeonly buffer Dst { float dst[]; };
#define STORE(i, v) dst[i] = (v)
#elif defined(DST_BF16)
layout(binding = 1) writeonly buffer Dst { uint16_t dst[]; };
#define STORE(i, v) dst[i] = uint16_t(chm_f32_to_bf16(v))
#else
layout(binding = 1) writeonly buffer Dst { uint16_t dst[]; };
#define STORE(i, v) dst[i] = uint16_t(chm_f32_to_f16(v))
#endif

layout(push_constant) uniform Push {
    uint off[2];
    uint n;
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) STORE(p.off[1] + i, LOAD(p.off[0] + i));
}
