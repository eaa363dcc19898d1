/*
 * add.comp: out[n] = a[n] + b[n]. out may alias a or b exactly (each
 * element is read and written by the same invocation).
 */
#version 450
#include "common.glsl"

layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) readonly buffer B { float b[]; };
layout(binding = 2) writeonly buffer Out { float out_[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n;
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) out_[p.off[2] + i] = a[p.off[0] + i] + b[p.off[1] + i];
}
