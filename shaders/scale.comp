/* scale.comp: out[n] = alpha * x[n]; out may alias x exactly. */
#version 450
#include "common.glsl"

layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Out { float out_[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint n;
    float alpha;
} p;

void main() {
    uint i = chm_index();
    if (i < p.n) out_[p.off[1] + i] = p.alpha * x[p.off[0] + i];
}
