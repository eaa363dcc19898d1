/*
 * scatter_add_rows.comp: out[idx[m],:] += w[m] * x[m,:] for every m with
 * idx[m] >= 0, deterministically and without float atomics: the
 * contributions to each output row are bucketed by a counting sort, each
 * bucket is put in increasing m, and each output element adds its bucket
 * in that order (the cpu backend's order). x [M,C], idx [M] (int), w [M]
 * (optional), out [R,C]; scratch (scatter.c): cnt [R], off [R+1], order [M].
 * Variants, run in this order by scatter.c:
 *   _count (-DCOUNT) per m:      cnt[idx[m]]++ (integer atomics: the counts do
 *                                not depend on the order); idx[m] >= R is
 *                                reported (status code 4: scatter_add_rows)
 *   _scan  (-DSCAN)  1 group:    off = exclusive prefix sums of cnt, off[R] =
 *                                total; cnt becomes each bucket's cursor
 *                                (SCAN_RUN consecutive rows per invocation, so
 *                                that R = 16384 takes 4 workgroup scans, not 64)
 *   _place (-DPLACE) per m:      order[cursor[idx[m]]++] = m (any order within
 *                                a bucket)
 *   _sort  (-DSORT)  per r:      insertion sort of bucket r into increasing m
 *                                (buckets hold the few rows that share an
 *                                index: a token's K experts, one MoD slot)
 *   _sum   (-DSUM)   per (r,c):  out[r,c] += w[m]*x[m,c] over bucket r in order;
 *                                x, w, out f32, or 16-bit words (_sum_bf16,
 *                                _sum_f16: -DDT_*, dt.glsl) summed in f32 and
 *                                rounded once
 * With a bound r (1..8) on how often an index occurs (scatter_add_rows' max_repeat: MoE's
 * top-k, MoD's distinct tokens), two dispatches after cnt's fill replace the four:
 *   _list  (-DLIST)  per m:      order[idx[m]*r + cnt[idx[m]]++] = m (any order within a
 *                                row); a row past r sources raises status 9
 *   _sum_bounded (-DSUM -DBOUNDED) per (r,c): the row's min(cnt, r) sources put in
 *                                increasing m in the thread, then _sum's sum
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

#if defined(COUNT) || defined(PLACE)
layout(binding = 0) readonly buffer Idx { int idx[]; };
layout(binding = 1) buffer Cnt { uint cnt[]; };
#ifdef PLACE
layout(binding = 2) writeonly buffer Order { uint order_[]; };
#define NBIND 3
#else
#define CHM_STATUS_BINDING 2
#include "status.glsl"
#define NBIND 2
#endif

layout(push_constant) uniform Push {
    uint off[NBIND];
    uint M, R;
} p;

void main() {
    uint m = chm_index();
    if (m >= p.M) return;
    int id = idx[p.off[0] + m];
    if (id < 0) return;
#ifdef COUNT
    if (id >= int(p.R)) {
        chm_raise(4u, m, uint(id), p.R);
        return;
    }
    atomicAdd(cnt[p.off[1] + uint(id)], 1u);
#else
    if (id >= int(p.R)) return;
    uint slot = atomicAdd(cnt[p.off[1] + uint(id)], 1u);
    order_[p.off[2] + slot] = m;
#endif
}

#elif defined(LIST)
layout(binding = 0) readonly buffer Idx { int idx[]; };
layout(binding = 1) buffer Cnt { uint cnt[]; };
layout(binding = 2) writeonly buffer Order { uint order_[]; };
#define CHM_STATUS_BINDING 3
#include "status.glsl"

layout(push_constant) uniform Push {
    uint off[3];
    uint M, R, r;
} p;

void main() {
    uint m = chm_index();
    if (m >= p.M) return;
    int id = idx[p.off[0] + m];
    if (id < 0) return;
    if (id >= int(p.R)) {
        chm_raise(4u, m, uint(id), p.R);
        return;
    }
    uint slot = atomicAdd(cnt[p.off[1] + uint(id)], 1u);
    if (slot < p.r) order_[p.off[2] + uint(id) * p.r + slot] = m;
    else if (slot == p.r) chm_raise(9u, uint(id), slot + 1u, p.r + 1u);
}

#elif defined(SCAN)
#include "scan.glsl"
layout(binding = 0) buffer Cnt { uint cnt[]; };
layout(binding = 1) writeonly buffer Off { uint off_[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint R;
} p;

#define SCAN_RUN 16u

void main() {
    uint lid = gl_LocalInvocationID.x, base = 0;
    for (uint r0 = 0; r0 < p.R; r0 += WG_SIZE * SCAN_RUN) {
        uint first = r0 + lid * SCAN_RUN, v[SCAN_RUN], run = 0u, total;
        for (uint j = 0u; j < SCAN_RUN; j++) {
            uint r = first + j;
            v[j] = r < p.R ? cnt[p.off[0] + r] : 0u;
            run += v[j];
        }
        uint ex = base + chm_wg_scan(run, total);
        for (uint j = 0u; j < SCAN_RUN; j++) {
            uint r = first + j;
            if (r < p.R) {
                off_[p.off[1] + r] = ex;
                cnt[p.off[0] + r] = ex;
            }
            ex += v[j];
        }
        base += total;
    }
    if (lid == 0u) off_[p.off[1] + p.R] = base;
}

#elif defined(SORT)
layout(binding = 0) readonly buffer Off { uint off_[]; };
layout(binding = 1) buffer Order { uint order_[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint R;
} p;

void main() {
    uint r = chm_index();
    if (r >= p.R) return;
    uint lo = off_[p.off[0] + r], hi = off_[p.off[0] + r + 1u], o = p.off[1];
    for (uint i = lo + 1u; i < hi; i++) {
        uint v = order_[o + i], j = i;
        for (; j > lo && order_[o + j - 1u] > v; j--) order_[o + j] = order_[o + j - 1u];
        order_[o + j] = v;
    }
}

#else /* SUM */
layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer W { DT w[]; };
layout(binding = 2) readonly buffer Off { uint off_[]; };
layout(binding = 3) readonly buffer Order { uint order_[]; };
layout(binding = 4) buffer Out { DT out_[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint R, C, flags; /* flags 1: weights given */
    uint r;           /* BOUNDED: the slots a row (binding 2 is then cnt, not off) */
} p;

void main() {
    uint i = chm_index();
    if (i >= p.R * p.C) return;
    uint r = i / p.C, c = i % p.C;
#ifdef BOUNDED
    uint n = min(off_[p.off[2] + r], p.r), src[8];
    if (n == 0u) return;
    for (uint j = 0u; j < n; j++) src[j] = order_[p.off[3] + r * p.r + j];
    for (uint j = 1u; j < n; j++) { /* insertion sort: increasing m, as _sort leaves a bucket */
        uint v = src[j], k = j;
        for (; k > 0u && src[k - 1u] > v; k--) src[k] = src[k - 1u];
        src[k] = v;
    }
    uint lo = 0u, hi = n;
#define SOURCE(j) src[j]
#else
    uint lo = off_[p.off[2] + r], hi = off_[p.off[2] + r + 1u];
    if (lo == hi) return;
#define SOURCE(j) order_[p.off[3] + (j)]
#endif
    float s = LOAD(out_[p.off[4] + i]);
    for (uint j = lo; j < hi; j++) {
        uint m = SOURCE(j);
        float wm = (p.flags & 1u) != 0u ? LOAD(w[p.off[1] + m]) : 1.0;
        s += wm * LOAD(x[p.off[0] + m * p.C + c]);
    }
    out_[p.off[4] + i] = STORE(s);
}
#endif
