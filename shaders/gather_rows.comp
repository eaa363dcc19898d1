/*
 * gather_rows.comp: out[m,c] = x[idx[m], c], or 0 where idx[m] < 0, one
 * invocation per element. x [R,C], idx [M] (int), out [M,C]. An index
 * >= R gives a zero row and is reported (status code 3: gather_rows).
 * Variants: gather_rows (f32), gather_rows_bf16, gather_rows_f16 (dt.glsl).
 * An invocation copies p.per elements of a row (rows.c: 16 bytes where C
 * allows), as one 16-byte word where both rows sit 16-byte aligned in their
 * bindings: 16-bit rows one element an invocation moved 64 bytes a warp
 * load (chimera-1b's MoD and expert rows: 72 us a call on an H100).
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#define CHM_STATUS_BINDING 3
#include "status.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 0) readonly buffer X4 { uvec4 x4[]; };
layout(binding = 1) readonly buffer Idx { int idx[]; };
layout(binding = 2) writeonly buffer Out { DT out_[]; };
layout(binding = 2) writeonly buffer Out4 { uvec4 out4[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint M, C, R;
    uint per; /* elements an invocation: 1, or a 16-byte word's (C a multiple of it) */
} p;

#if defined(DT_BF16) || defined(DT_F16)
const uint WORD = 8u; /* 16-bit elements a 16-byte word */
#else
const uint WORD = 4u;
#endif

void main() {
    uint i = chm_index() * p.per;
    if (i >= p.M * p.C) return;
    uint m = i / p.C, c = i % p.C;
    int id = idx[p.off[1] + m];
    bool live = id >= 0 && id < int(p.R);
    uint src = p.off[0] + uint(live ? id : 0) * p.C + c, dst = p.off[2] + i;
    if (p.per == WORD && src % WORD == 0u && dst % WORD == 0u) {
        out4[dst / WORD] = live ? x4[src / WORD] : uvec4(0u); /* zero bits: 0.0 in every dtype */
    } else {
        for (uint e = 0u; e < p.per; e++) { /* same dtype: a copy (no 16-bit select) */
            if (live) out_[dst + e] = x[src + e];
            else out_[dst + e] = STORE(0.0);
        }
    }
    if (id >= int(p.R) && c == 0u) chm_raise(3u, m, uint(id), p.R);
}
