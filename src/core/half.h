/*
 * half.h: conversions between f32 and the 16-bit float formats (bf16, f16),
 * round-to-nearest-even, with infinities, NaN and subnormals handled.
 * Used by the cpu backend's cast and by anything that prepares 16-bit data.
 */
#ifndef CHIMERA_CORE_HALF_H
#define CHIMERA_CORE_HALF_H

#include <stdint.h>

/* f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
uint16_t chm_f32_to_bf16(float f);
/* bf16 bits -> f32 (exact). */
float chm_bf16_to_f32(uint16_t h);
/* f32 -> IEEE binary16 bits, round to nearest even, overflow to inf, subnormals kept. */
uint16_t chm_f32_to_f16(float f);
/* IEEE binary16 bits -> f32 (exact). */
float chm_f16_to_f32(uint16_t h);

#endif
