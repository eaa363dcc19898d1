/*
 * half.glsl: bf16 and f16 <-> f32 with integer operations only, so results
 * are exact, round to nearest even like src/core/half.c, and need no float16
 * arithmetic (storage of the 16-bit words is GL_EXT_shader_16bit_storage's).
 * Values travel as the low 16 bits of a uint.
 */

float chm_bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }

uint chm_f32_to_bf16(float f) {
    uint u = floatBitsToUint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u; /* NaN stays a quiet NaN */
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

float chm_f16_to_f32(uint h) {
    uint sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) return uintBitsToFloat(sign | 0x7f800000u | (m << 13)); /* inf, NaN */
    if (e != 0u) return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
    float mag = float(m) * (1.0 / 16777216.0); /* subnormal: m * 2^-24, exact in f32 */
    return sign != 0u ? -mag : mag;
}

uint chm_f32_to_f16(float f) {
    uint u = floatBitsToUint(f);
    uint sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u; /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u; /* rounds to 65536 or more: inf */
    if (a >= 0x38800000u) {                      /* a normal f16: rebias, round the 13 bits */
        uint r = a - 0x38000000u;
        return sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13);
    }
    if (a <= 0x33000000u) return sign; /* below half the smallest subnormal (ties to 0) */
    uint m = (a & 0x7fffffu) | 0x800000u, s = 126u - (a >> 23); /* 14 <= s <= 24 */
    uint q = m >> s, rem = m & ((1u << s) - 1u), half_ = 1u << (s - 1u);
    if (rem > half_ || (rem == half_ && (q & 1u) != 0u)) q++;
    return sign | q;
}
