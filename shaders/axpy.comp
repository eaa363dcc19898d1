/*
 * axpy.comp: y[n] += alpha * x[n].
 * Variants: axpy (f32), axpy_bf16, axpy_f16 (-DDT_BF16 / -DDT_F16, dt.glsl).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) buffer Y { DT y[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint n;
    float alpha;
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) ACC(y[p.off[1] + i], p.alpha * LOAD(x[p.off[0] + i]));
}
