/*
 * cm_scale.comp: the bf16 operands of matmul_cm.comp, scaled into f16's
 * range (issue 6: bf16 matmuls on the f16 tensor cores without losing
 * bf16's range). matmul.c runs it on A and on B before a bf16
 * cooperative-matrix matmul; matmul_cm.comp's header says why it is exact.
 *
 * X is a stored operand [batch, R, Cc] (contiguous per batch entry, entry
 * stride R*Cc). Its "lines" are the rows of op(A) or the columns of op(B)
 * along K: the stored rows when `rowmode` (A [M,K], B^T stored [N,K]),
 * else the stored columns (A stored [K,M], B [K,N]).
 *
 * Variant EXP: one exponent per line, e = clamp(E - 14, -126, 113) where
 * 2^E <= max |x| < 2^(E+1) over the line's live terms (E = -127 for a line
 * of zeros and subnormals), so that x * 2^-e stays below 2^15 < 65504;
 * e = 0 where the line holds an inf or NaN (they stay what they are).
 * With `live` set (grouped, trans_a) only the first counts[b] terms of
 * entry b count: the rest are dead rows the matmul never reads.
 * One workgroup of 256 reduces 8 stored rows (32 invocations each) or 32
 * stored columns (8 each; 256 with `vec`, 8 per invocation) over integer
 * magnitudes (|bf16| orders as its low 15 bits): exact and order-free, so
 * deterministic. Stored columns are long where K is (a weight gradient's
 * A^T B sums over all tokens) and few: they go in two phases, so that the
 * whole GPU works on them: phase 1, each workgroup the largest magnitudes
 * of its columns within one chunk of `chunk` stored rows, into parts
 * [batch, chunks, lines] (binding 3); phase 2, one invocation a line, the
 * largest over the chunks, and the exponent.
 * Phase 3, stored rows fused with APPLY's work (issue 6): each workgroup
 * finds its 8 rows' exponents as phase 0 does, then writes the rows scaled
 * into Y (binding 3), re-reading them while they are still in the caches:
 * one pass over X from memory instead of two, and one dispatch (matmul.c
 * takes phase 3 for stored rows; phase 0 gives their exponents alone).
 * Variant APPLY: y = f16(x * 2^-e[line]) for every element (exact for every
 * x within 2^28 of its line's largest; round to nearest below that), one
 * element per invocation, or 8 with `vec`.
 * `vec` (the host sets it when X and Y start 16-byte aligned and Cc is a
 * multiple of 8): X and Y move as uvec4 words of 8 elements.
 *
 * Bindings: EXP 0 X (bf16), 1 counts (i32; a dummy unless `live`),
 * 2 exponents (i32, written at out_base + b * lines; phase 1: the parts it
 * writes), 3 parts (i32, read by phase 2), Y (phase 3) or a dummy; APPLY 0 X (bf16),
 * 1 exponents, 2 Y (f16, X's shape). Spec constant 0: workgroup size 256.
 */
#version 450
#extension GL_EXT_shader_16bit_storage : require
#include "common.glsl"
#include "half.glsl"

layout(binding = 0) readonly buffer X_ { uint16_t x[]; };
layout(binding = 0) readonly buffer X4_ { uvec4 x4[]; };
#ifdef EXP
layout(binding = 1) readonly buffer Counts { int counts[]; };
layout(binding = 2) buffer Exps { int exps[]; };
layout(binding = 2) buffer PartsOut { uint parts_out[]; }; /* phase 1 writes parts there */
layout(binding = 3) readonly buffer Parts { uint parts[]; };
layout(binding = 3) buffer Y3_ { uint16_t y3[]; };  /* phase 3 writes the scaled rows there */
layout(binding = 3) buffer Y3v_ { uvec4 y3v[]; };
#else
layout(binding = 1) readonly buffer Exps { int exps[]; };
layout(binding = 2) buffer Y_ { uint16_t y[]; };
layout(binding = 2) buffer Y4_ { uvec4 y4[]; };
#endif

layout(push_constant) uniform Push {
#ifdef EXP
    uint off[4];
#else
    uint off[3];
#endif
    uint rows, cols, batch;   /* X is [batch, rows, cols] */
    uint rowmode;             /* 1: a line is a stored row; 0: a stored column */
    uint out_base;            /* exponents of entry b start at out_base + b * lines */
    uint live;                /* EXP: only the first counts[b] terms of a line count */
    uint vec;                 /* X and Y as uvec4 words (see the top) */
    uint phase;               /* EXP: 0 rows, 1 and 2 columns, 3 rows and values (the top) */
    uint chunk;               /* EXP phase 1 and 2: stored rows a chunk */
} p;

/* 2^-e for a line's exponent e (in [-126, 113]: a normal f32, built from its bits). */
float factor(int e) { return uintBitsToFloat(uint(127 - e) << 23); }

/*
 * Two bf16 values (the halves of w) times their lines' factors f0 and f1 (exact
 * in f32), as two f16 in one word: the device's conversion (round to nearest),
 * one instruction for the pair where half.glsl's integer rounding took a dozen
 * an element (the pass is then bound by memory, not by its arithmetic).
 */
uint scaled2(uint w, float f0, float f1) {
    return packHalf2x16(vec2(uintBitsToFloat(w << 16) * f0,
                             uintBitsToFloat(w & 0xffff0000u) * f1));
}

/* One bf16 value h (low 16 bits) times f, as f16 bits. */
uint scaled(uint h, float f) { return scaled2(h, f, 0.0) & 0xffffu; }

#ifdef EXP
#define WG 256u
shared uint red[8u * WG];
shared int row_e[8];

/* The exponent of a line whose largest magnitude has bf16 bits mb (sign cleared). */
int line_exponent(uint mb) {
    uint field = mb >> 7;
    if (field == 255u) return 0;
    int e = (field == 0u ? -127 : int(field) - 127) - 14;
    return clamp(e, -126, 113);
}

/* The larger magnitude of the two bf16 values in w, with m. */
uint max2(uint m, uint w) { return max(m, max(w & 0x7fffu, (w >> 16) & 0x7fffu)); }

uint max8(uint m, uvec4 v) { return max2(max2(max2(max2(m, v.x), v.y), v.z), v.w); }

/* The terms of entry b's lines that count (`live`: the first counts[b]). */
uint live_terms(uint b, uint terms) {
    return p.live != 0u ? min(terms, uint(max(counts[p.off[1] + b], 0))) : terms;
}

/* Stored rows: 8 a workgroup, 32 invocations each (words of 8 terms with `vec`). */
void rows_max(uint line, uint s, uint terms, uint base) {
    uint mb = 0u;
    if (p.vec != 0u)
        for (uint k = s * 8u; line < p.rows && k < terms; k += 256u) {
            uint i = base + line * p.cols + k;
            if (k + 8u <= terms) mb = max8(mb, x4[i / 8u]);
            else for (uint j = 0u; j < terms - k; j++) mb = max(mb, uint(x[i + j]) & 0x7fffu);
        }
    else
        for (uint k = s; line < p.rows && k < terms; k += 32u)
            mb = max(mb, uint(x[base + line * p.cols + k]) & 0x7fffu);
    red[gl_LocalInvocationID.x] = mb;
}

/*
 * Stored columns, terms k0 <= k < k1: 32 a workgroup (256 with `vec`: 8 an
 * invocation), 8 invocations each.
 */
void cols_max(uint line0, uint s, uint k0, uint k1, uint base) {
    uint t = gl_LocalInvocationID.x, cw = t % 32u;
    if (p.vec != 0u) {
        uint mb[8] = uint[8](0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u), c = line0 + cw * 8u;
        for (uint k = k0 + s; c < p.cols && k < k1; k += 8u) {
            uvec4 v = x4[(base + k * p.cols + c) / 8u];
            for (uint j = 0u; j < 4u; j++) {
                mb[2u * j] = max(mb[2u * j], v[j] & 0x7fffu);
                mb[2u * j + 1u] = max(mb[2u * j + 1u], (v[j] >> 16) & 0x7fffu);
            }
        }
        for (uint j = 0u; j < 8u; j++) red[s * WG + cw * 8u + j] = mb[j];
    } else {
        uint mb = 0u, c = line0 + cw;
        for (uint k = k0 + s; c < p.cols && k < k1; k += 8u)
            mb = max(mb, uint(x[base + k * p.cols + c]) & 0x7fffu);
        red[s * WG + cw] = mb;
    }
}

/* Phase 2: line i of every entry (i over batch * cols), the largest over its chunks. */
void cols_finish(uint chunks) {
    uint i = chm_index();
    if (i >= p.batch * p.cols) return;
    uint b = i / p.cols, line = i % p.cols, mb = 0u;
    for (uint c = 0u; c < chunks; c++)
        mb = max(mb, parts[p.off[3] + (b * chunks + c) * p.cols + line]);
    exps[p.off[2] + p.out_base + i] = line_exponent(mb);
}

/*
 * Phase 3, after rows_max and a barrier: invocations 0-7 finish the 8 rows'
 * exponents (into exps and row_e), then every row's 32 invocations write it
 * scaled into Y, all its terms (the dead ones too, as APPLY does).
 */
void rows_fused(uint line0, uint b) {
    uint t = gl_LocalInvocationID.x;
    if (t < 8u) {
        uint mb = 0u;
        for (uint j = 0u; j < 32u; j++) mb = max(mb, red[t * 32u + j]);
        row_e[t] = line_exponent(mb);
        if (line0 + t < p.rows) exps[p.off[2] + p.out_base + b * p.rows + line0 + t] = row_e[t];
    }
    barrier();
    uint line = line0 + t / 32u, s = t % 32u;
    if (line >= p.rows) return;
    float f = factor(row_e[t / 32u]);
    uint row = (b * p.rows + line) * p.cols; /* element index from X's (and Y's) start */
    if (p.vec != 0u) { /* the columns are whole words (the host checks) */
        for (uint k = s * 8u; k < p.cols; k += 256u) {
            uvec4 v = x4[(p.off[0] + row + k) / 8u];
            y3v[(p.off[3] + row + k) / 8u] = uvec4(scaled2(v.x, f, f), scaled2(v.y, f, f),
                                                   scaled2(v.z, f, f), scaled2(v.w, f, f));
        }
    } else {
        for (uint k = s; k < p.cols; k += 32u)
            y3[p.off[3] + row + k] = uint16_t(scaled(uint(x[p.off[0] + row + k]), f));
    }
}

void main() {
    bool rows = p.rowmode != 0u;
    uint lines = rows ? p.rows : p.cols, terms = rows ? p.cols : p.rows;
    uint chunks = rows ? 1u : (p.rows + p.chunk - 1u) / p.chunk;
    if (p.phase == 2u) {
        cols_finish(chunks);
        return;
    }
    uint per = rows ? 8u : p.vec != 0u ? 256u : 32u; /* lines per workgroup */
    uint groups = (lines + per - 1u) / per, g = chm_group(), t = gl_LocalInvocationID.x;
    uint b = g / (groups * chunks), line0 = (g % groups) * per, chunk = (g / groups) % chunks;
    if (b >= p.batch) return; /* whole workgroups only */
    terms = live_terms(b, terms);
    uint base = p.off[0] + b * p.rows * p.cols;
    if (rows) rows_max(line0 + t / 32u, t % 32u, terms, base);
    else cols_max(line0, t / 32u, chunk * p.chunk, min(terms, (chunk + 1u) * p.chunk), base);
    barrier();
    if (p.phase == 3u) {
        rows_fused(line0, b);
        return;
    }
    /* invocation t < per finishes line line0 + t: its partials at 32 t + j (rows), j WG + t */
    uint q = rows ? t * 32u : t, step = rows ? 1u : WG, n = rows ? 32u : 8u;
    uint line = line0 + t;
    if (t >= per || line >= lines) return;
    uint mb = 0u;
    for (uint j = 0u; j < n; j++) mb = max(mb, red[q + j * step]);
    if (rows) exps[p.off[2] + p.out_base + b * lines + line] = line_exponent(mb);
    else parts_out[p.off[2] + (b * chunks + chunk) * lines + line] = mb;
}
#else

/* Where the exponent of element (b, r, c) lies (the next columns' follow it when !rowmode). */
uint exp_at(uint b, uint r, uint c) {
    uint lines = p.rowmode != 0u ? p.rows : p.cols;
    return p.off[1] + p.out_base + b * lines + (p.rowmode != 0u ? r : c);
}

void main() {
    uint i = chm_index(), per = p.rows * p.cols;
    if (p.vec != 0u) { /* 8 elements of one row (Cc is a multiple of 8) */
        if (i * 8u >= per * p.batch) return;
        uint b = (i * 8u) / per, r = ((i * 8u) % per) / p.cols, c = (i * 8u) % p.cols;
        uint e0 = exp_at(b, r, c), step = p.rowmode != 0u ? 0u : 1u;
        uvec4 v = x4[p.off[0] / 8u + i], o;
        for (uint j = 0u; j < 4u; j++)
            o[j] = scaled2(v[j], factor(exps[e0 + 2u * j * step]),
                           factor(exps[e0 + (2u * j + 1u) * step]));
        y4[p.off[2] / 8u + i] = o;
        return;
    }
    if (i >= per * p.batch) return;
    uint b = i / per, r = (i % per) / p.cols, c = i % p.cols;
    y[p.off[2] + i] = uint16_t(scaled(uint(x[p.off[0] + i]), factor(exps[exp_at(b, r, c)])));
}
#endif
