/*
 * embedding.comp: out[r,c] = table[ids[r], c], one invocation per element.
 * ids [R] (int), table [V,C], out [R,C]. An id outside [0,V) gives a zero
 * row and is reported through the status words (code 1: embedding_fwd).
 * Variants: embedding_fwd (f32), embedding_fwd_bf16, _f16 (dt.glsl).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#define CHM_STATUS_BINDING 3
#include "status.glsl"

layout(binding = 0) readonly buffer Ids { int ids[]; };
layout(binding = 1) readonly buffer Table { DT table[]; };
layout(binding = 2) writeonly buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint rows, vocab, cols;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.rows * p.cols) return;
    uint r = i / p.cols, c = i % p.cols;
    int id = ids[p.off[0] + r];
    if (id < 0 || uint(id) >= p.vocab) {
        out_[p.off[2] + i] = STORE(0.0);
        if (c == 0) chm_raise(1u, r, uint(id), p.vocab);
        return;
    }
    out_[p.off[2] + i] = table[p.off[1] + uint(id) * p.cols + c]; /* same dtype: a copy */
}
