/* axpy.comp: y[n] += alpha * x[n]. */
#version 450
#include "common.glsl"

layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint n;
    float alpha;
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) y[p.off[1] + i] += p.alpha * x[p.off[0] + i];
}
