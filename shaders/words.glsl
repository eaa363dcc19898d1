/*
 * words.glsl: a DT tensor (dt.glsl) as 16-byte words, for elementwise shaders
 * that move WORD_N elements an invocation: 8 16-bit elements or 4 f32 a word.
 * One element an invocation, a warp's 16-bit load moved 64 bytes: the H100's
 * memory then ran at a third of its rate (session 11). Include after dt.glsl.
 *   word_at(w, e)   element e of word w as an f32 (exact)
 *   WORD_PACK(v)    the word of WORD_N f32 values v[] (rounded as STORE does)
 */
#if defined(DT_BF16) || defined(DT_F16)
const uint WORD_N = 8u;
float word_at(uvec4 w, uint e) { return LOAD((w[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu); }
#if defined(DT_BF16)
#define WORD_BITS(f) chm_f32_to_bf16(f)
#else
#define WORD_BITS(f) chm_f32_to_f16(f)
#endif
#define WORD_PACK(v)                                                                   \
    uvec4(WORD_BITS(v[0]) | (WORD_BITS(v[1]) << 16), WORD_BITS(v[2]) | (WORD_BITS(v[3]) << 16), \
          WORD_BITS(v[4]) | (WORD_BITS(v[5]) << 16), WORD_BITS(v[6]) | (WORD_BITS(v[7]) << 16))
#else
const uint WORD_N = 4u;
float word_at(uvec4 w, uint e) { return uintBitsToFloat(w[e]); }
#define WORD_PACK(v) floatBitsToUint(vec4(v[0], v[1], v[2], v[3]))
#endif
