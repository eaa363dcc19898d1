/*
 * select_topk.comp: top-k per row for mixture-of-depths, one workgroup per
 * row of scores [R,C]: idx [R,K] receives the columns of the K largest
 * scores (ties to the lower index, NaN last), in increasing column order
 * (plus row*C when flat: positions in the flattened scores).
 * The ranking is a strict total order, so column j is selected exactly when
 * fewer than K columns rank before it. Columns go in chunks of WG_SIZE, in
 * order; a prefix sum of the selected flags over each chunk (scan.glsl)
 * gives each selected column its place. O(C^2) comparisons per row, read
 * from the (cached) row: C is a sequence length. Also as _bf16 and _f16
 * (dt.glsl): 16-bit scores, compared as their (exact) f32 values.
 *
 * That one workgroup a row leaves a GPU mostly idle (8 rows: 8 workgroups),
 * so by default the work goes in two passes over many workgroups a row
 * (CHIMERA_VULKAN_DISABLE=topk_split keeps the single pass above):
 *   select_topk_rank (-DRANK): flags [R,C] (uint): 1 where the column's
 *     rank is below K. A workgroup takes RB columns of one row, and
 *     WG_SIZE/RB invocations per column each count the columns ranking
 *     before it in their share of every tile of WG_SIZE scores (staged in
 *     shared memory as order keys); the shares' counts are added after.
 *   select_topk_place (-DPLACE): a workgroup per (row, chunk of WG_SIZE
 *     columns) counts the flags before its chunk, then places its own
 *     selected columns by a prefix sum: idx as the single pass writes it.
 * The counts are integers, so either way the result is exact.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"
#include "scan.glsl"

#if defined(RANK)

layout(binding = 0) readonly buffer Scores { DT s[]; };
layout(binding = 1) writeonly buffer Flags { uint flag[]; };  /* [R,C] */

layout(push_constant) uniform Push {
    uint off[2];
    uint R, C, K;
} p;

#define RB 64u /* columns of a workgroup */
const uint SHARES = WG_SIZE / RB;
shared uint tile[WG_SIZE]; /* order keys of WG_SIZE consecutive scores */
shared uint counts[WG_SIZE];

/*
 * An order key: a ranks before b exactly when key(a) > key(b), or the keys
 * are equal and a's column is lower (before() below). Taken from the bits,
 * so that no device's denormal flushing changes the order; -0 ties with +0,
 * NaN (key 0) comes after everything.
 */
uint order_key(float z) {
    uint u = floatBitsToUint(z);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0u;
    if (u == 0x80000000u) u = 0u;
    return (u & 0x80000000u) != 0u ? ~u : u | 0x80000000u;
}

void main() {
    uint lid = gl_LocalInvocationID.x, q = lid % RB, share = lid / RB;
    uint blocks = (p.C + RB - 1u) / RB, g = chm_group();
    uint row = g / blocks, j = (g % blocks) * RB + q, s0 = p.off[0] + row * p.C;
    uint kj = j < p.C ? order_key(LOAD(s[s0 + j])) : 0u, rank = 0u;
    for (uint c0 = 0; c0 < p.C; c0 += WG_SIZE) {
        /* past C: key 0 at a column above every real one, so never before one */
        tile[lid] = c0 + lid < p.C ? order_key(LOAD(s[s0 + c0 + lid])) : 0u;
        barrier();
        for (uint e = share * RB; e < share * RB + RB; e++) {
            uint ki = tile[e];
            rank += ki > kj || (ki == kj && c0 + e < j) ? 1u : 0u;
        }
        barrier();
    }
    counts[lid] = rank;
    barrier();
    if (share == 0u && j < p.C) {
        for (uint h = 1; h < SHARES; h++) rank += counts[h * RB + q];
        flag[p.off[1] + row * p.C + j] = rank < p.K ? 1u : 0u;
    }
}

#elif defined(PLACE)

layout(binding = 0) readonly buffer Flags { uint flag[]; };  /* [R,C] */
layout(binding = 1) writeonly buffer Idx { int idx[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint R, C, K;
    uint flat_rows; /* 1: write row*C + column (the position in the flattened scores) */
} p;

void main() {
    uint lid = gl_LocalInvocationID.x, chunks = (p.C + WG_SIZE - 1u) / WG_SIZE;
    uint g = chm_group(), row = g / chunks, c0 = (g % chunks) * WG_SIZE;
    uint f0 = p.off[0] + row * p.C, earlier = 0u, base, total;
    for (uint j = lid; j < c0; j += WG_SIZE) earlier += flag[f0 + j];
    chm_wg_scan(earlier, base);
    uint j = c0 + lid, chosen = j < p.C ? flag[f0 + j] : 0u;
    uint at = base + chm_wg_scan(chosen, total);
    if (chosen == 1u) idx[p.off[1] + row * p.K + at] = int(j + p.flat_rows * row * p.C);
}

#else /* one workgroup a row */

layout(binding = 0) readonly buffer Scores { DT s[]; };
layout(binding = 1) writeonly buffer Idx { int idx[]; };

layout(push_constant) uniform Push {
    uint off[2];
    uint R, C, K;
    uint flat_rows; /* 1: write row*C + column (the position in the flattened scores) */
} p;

bool before(float za, uint a, float zb, uint b) {
    if (isnan(za) || isnan(zb)) return isnan(zb) && (!isnan(za) || a < b);
    return za > zb || (za == zb && a < b);
}

void main() {
    uint row = chm_group(), lid = gl_LocalInvocationID.x;
    if (row >= p.R) return; /* the whole workgroup leaves together */
    uint s0 = p.off[0] + row * p.C, base = 0;
    for (uint c0 = 0; c0 < p.C && base < p.K; c0 += WG_SIZE) {
        uint j = c0 + lid, chosen = 0u, total;
        if (j < p.C) {
            float sj = LOAD(s[s0 + j]);
            uint rank = 0;
            for (uint i = 0; i < p.C && rank < p.K; i++)
                if (before(LOAD(s[s0 + i]), i, sj, j)) rank++;
            chosen = rank < p.K ? 1u : 0u;
        }
        uint at = base + chm_wg_scan(chosen, total);
        if (chosen == 1u) idx[p.off[1] + row * p.K + at] = int(j + p.flat_rows * row * p.C);
        base += total;
    }
}
#endif
