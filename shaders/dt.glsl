/*
 * dt.glsl: the storage type of an op's float tensors, chosen by the
 * variant's define (cmake/vk_shaders.cmake): -DDT_BF16 or -DDT_F16 store
 * 16-bit words (GL_EXT_shader_16bit_storage), neither stores f32. A shader
 * declares those tensors as DT arrays and computes in f32 exactly as its
 * f32 variant does, rounding once where it stores:
 *   LOAD(w)      the stored word w as an f32 (exact for every dtype)
 *   STORE(f)     f as a stored word (16-bit: rounded to nearest even)
 *   ACC(t, f)    t += f on a stored word (load, add in f32, store)
 * Statistics, losses, partial sums and master weights stay plain float
 * arrays. Include it right after #version (it may add an #extension).
 */
#if defined(DT_BF16) || defined(DT_F16)
#extension GL_EXT_shader_16bit_storage : require
#define DT uint16_t
#endif
#include "half.glsl"

#if defined(DT_BF16)
#define LOAD(w) chm_bf16_to_f32(uint(w))
#define STORE(f) uint16_t(chm_f32_to_bf16(f))
#elif defined(DT_F16)
#define LOAD(w) chm_f16_to_f32(uint(w))
#define STORE(f) uint16_t(chm_f32_to_f16(f))
#else
#define DT float
#define LOAD(w) (w)
#define STORE(f) (f)
#endif
#define ACC(t, f) t = STORE(LOAD(t) + (f))
