/*
 * half.glsl: bf16 and f16 <-> f32 with integer operations only, so results
 * are exact, round to nearest even like src/core/half.c, and need no float16
 * arithmetic (storage of the 16-bit words is GL_EXT_shader_16bit_storage's).
 * Values travel as the low 16 bits of a uint.
 */

float chm_bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }

/*
 * Each conversion has one return, its cases chosen by selects: a callee with several returns
 * can keep glslang from unrolling the loops around it (session 11 found that in attention).
 * Checked bit for bit against the cpu backend by tests/test_vk_cast.c.
 */
uint chm_f32_to_bf16(float f) {
    uint u = floatBitsToUint(f);
    bool nan = (u & 0x7fffffffu) > 0x7f800000u; /* NaN stays a quiet NaN */
    return nan ? (u >> 16) | 0x40u : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

float chm_f16_to_f32(uint h) {
    uint sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    /* inf and NaN keep the top exponent; normals rebias; subnormals: m * 2^-24, exact */
    uint bits = sign | (e == 0x1fu ? 0x7f800000u : (e + 112u) << 23) | (m << 13);
    float mag = float(m) * (1.0 / 16777216.0);
    return e == 0u ? (sign != 0u ? -mag : mag) : uintBitsToFloat(bits);
}

uint chm_f32_to_f16(float f) {
    uint u = floatBitsToUint(f);
    uint sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    /* a normal f16: rebias, round the 13 bits (r wraps for smaller a: not chosen then) */
    uint r = a - 0x38000000u, normal = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    /* a subnormal: the significand shifted by s (14..24 where chosen; clamped elsewhere) */
    uint s = clamp(126u - min(a >> 23, 126u), 14u, 24u);
    uint m = (a & 0x7fffffu) | 0x800000u, q = m >> s, rem = m & ((1u << s) - 1u);
    uint half_ = 1u << (s - 1u);
    q += rem > half_ || (rem == half_ && (q & 1u) != 0u) ? 1u : 0u;
    uint mag = a > 0x7f800000u   ? 0x7e00u /* NaN */
               : a >= 0x477ff000u ? 0x7c00u /* rounds to 65536 or more: inf */
               : a >= 0x38800000u ? normal
               : a <= 0x33000000u ? 0u      /* below half the smallest subnormal (ties to 0) */
                                  : q;
    return sign | mag;
}
