/*
 * gather_rows.comp: out[m,c] = x[idx[m], c], or 0 where idx[m] < 0, one
 * invocation per element. x [R,C], idx [M] (int), out [M,C]. An index
 * >= R gives a zero row and is reported (status code 3: gather_rows).
 * Variants: gather_rows (f32), gather_rows_bf16, gather_rows_f16 (dt.glsl).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#define CHM_STATUS_BINDING 3
#include "status.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer Idx { int idx[]; };
layout(binding = 2) writeonly buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint M, C, R;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.M * p.C) return;
    uint m = i / p.C, c = i % p.C;
    int id = idx[p.off[1] + m];
    if (id >= 0 && id < int(p.R)) {
        out_[p.off[2] + i] = x[p.off[0] + uint(id) * p.C + c]; /* same dtype: a copy */
        return;
    }
    out_[p.off[2] + i] = STORE(0.0);
    if (id >= int(p.R) && c == 0u) chm_raise(3u, m, uint(id), p.R);
}
