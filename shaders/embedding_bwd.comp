/*
 * embedding_bwd.comp: dtable[ids[r]] += dout[r], deterministically and
 * without float atomics, in two passes (embedding.c runs them):
 *
 * embedding_bwd_link (-DLINK), one invocation per row r:
 *   link[r]   = the next row after r with the same id, or -1;
 *   link[R+r] = 1 when r is the first row with its id, else 0 (also 0 for an
 *               id outside [0,V), which is reported, code 2: embedding_bwd).
 *   Each invocation scans the ids in order up to its next match: O(R) per
 *   row at worst (R = B*T tokens, a few ms on a GPU at 64k); a sort-based
 *   bucketing is the upgrade if it ever shows in a profile.
 * embedding_bwd_sum (-DSUM), one invocation per (row, column): a row that
 *   starts a chain adds dout along the chain in row order onto dtable, the
 *   same order of float additions as the cpu backend. Chains have distinct
 *   ids, so no two invocations write the same element. dout and dtable are
 *   f32, or 16-bit words (embedding_bwd_sum_bf16, _f16: -DDT_*, dt.glsl)
 *   summed in f32 along the chain and rounded once.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

#ifdef LINK
#define CHM_STATUS_BINDING 2
#include "status.glsl"

layout(binding = 0) readonly buffer Ids { int ids[]; };
layout(binding = 1) writeonly buffer Link { int link[]; };  /* [2R] */

layout(push_constant) uniform Push {
    uint off[2];
    uint rows, vocab;
} p;

void main() {
    uint r = chm_index();
    if (r >= p.rows) return;
    int id = ids[p.off[0] + r], next = -1, first = 1;
    if (id < 0 || uint(id) >= p.vocab) {
        chm_raise(2u, r, uint(id), p.vocab);
        first = 0;
    } else {
        for (uint j = 0; j < p.rows; j++) {
            if (ids[p.off[0] + j] != id || j == r) continue;
            if (j < r) {
                first = 0;
            } else {
                next = int(j);
                break;
            }
        }
    }
    link[p.off[1] + r] = next;
    link[p.off[1] + p.rows + r] = first;
}

#else /* SUM */

layout(binding = 0) readonly buffer Dout { DT dout[]; };
layout(binding = 1) readonly buffer Ids { int ids[]; };
layout(binding = 2) readonly buffer Link { int link[]; };
layout(binding = 3) buffer Dtable { DT dtable[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint rows, cols;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.rows * p.cols) return;
    uint r = i / p.cols, c = i % p.cols;
    if (link[p.off[2] + p.rows + r] == 0) return;
    uint dst = p.off[3] + uint(ids[p.off[1] + r]) * p.cols + c;
    float s = LOAD(dtable[dst]);
    for (int j = int(r); j >= 0; j = link[p.off[2] + uint(j)])
        s += LOAD(dout[p.off[0] + uint(j) * p.cols + c]);
    dtable[dst] = STORE(s);
}
#endif
