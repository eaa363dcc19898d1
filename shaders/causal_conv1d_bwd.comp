/*
 * causal_conv1d_bwd.comp: backward of causal_conv1d_fwd.comp, ACCUMULATING
 * into dx, dw and dbias. x, dout, dx [B,T,C]; w, dw [C,W]; bias, dbias [C].
 * With g = dL/dpre (dout, times silu'(pre) when the forward fused SiLU):
 *   dx[b,s,c] += sum_j g[b, s+(W-1)-j, c] * w[c,j]    (terms with s+(W-1)-j < T)
 *   dw[c,j]   += sum_{b,t} g[b,t,c] * x[b, t-(W-1)+j, c]
 *   dbias[c]  += sum_{b,t} g[b,t,c]
 * Variants:
 *   causal_conv1d_bwd_grad (-DGRAD): g [B,T,C] = dout * silu'(pre), pre
 *     recomputed from x, w, bias (only run when SiLU was fused);
 *   causal_conv1d_bwd_dx (-DDX): one invocation per element of dx;
 *   causal_conv1d_bwd_dw (-DDW): one invocation per (row chunk k, tap j, c),
 *     c fastest (coalesced loads; with j fastest, a warp read 4 rows of 7
 *     channels each: 1.4 ms a call at chimera-1b's shape on an H100), with
 *     j = W standing for dbias; rows (b,t) of the chunk are added in order,
 *     into dw/dbias; causal_conv1d_bwd_dw_partial (-DDW -DPARTIAL) writes the
 *     chunk sums part_w [K,C*W] and part_b [K,C] instead, which sum_rows then
 *     adds in chunk order (deterministic, no atomics).
 * Each also as _bf16 and _f16 (dt.glsl): x, w, bias, dout, dx, dw, dbias
 * 16-bit, loaded into f32, each gradient rounded once when its sum is
 * added. g is f32 scratch when SiLU was fused: DX and DW read it as f32
 * with -DG_F32 (the _gf32_bf16 / _gf32_f16 variants), and dout itself
 * (16-bit) otherwise. The chunk sums of PARTIAL stay f32.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

/* g's storage: the f32 scratch of the fused SiLU, or dout's words */
#ifdef G_F32
#define GT float
#define GLOAD(w) (w)
#else
#define GT DT
#define GLOAD(w) LOAD(w)
#endif

#if defined(GRAD)

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer W { DT w[]; };
layout(binding = 2) readonly buffer Bias { DT bias[]; };  /* dummy without a bias */
layout(binding = 3) readonly buffer Dout { DT dout[]; };
layout(binding = 4) writeonly buffer G { float g[]; };

layout(push_constant) uniform Push {
    uint off[5];
    uint n, T, C, W;
    uint has_bias;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    uint c = i % p.C, row = i / p.C, t = row % p.T;
    float s = p.has_bias != 0u ? LOAD(bias[p.off[2] + c]) : 0.0;
    uint j0 = t + 1u >= p.W ? 0u : p.W - 1u - t;
    for (uint j = j0; j < p.W; j++)
        s += LOAD(w[p.off[1] + c * p.W + j]) * LOAD(x[p.off[0] + (row + j + 1u - p.W) * p.C + c]);
    float sg = 1.0 / (1.0 + exp(-s));
    g[p.off[4] + i] = LOAD(dout[p.off[3] + i]) * sg * (1.0 + s * (1.0 - sg));
}

#elif defined(DX)

layout(binding = 0) readonly buffer G { GT g[]; };
layout(binding = 1) readonly buffer W { DT w[]; };
layout(binding = 2) buffer Dx { DT dx[]; };

layout(push_constant) uniform Push {
    uint off[3];
    uint n, T, C, W;
} p;

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    uint c = i % p.C, row = i / p.C, s = row % p.T;
    /* output time s+(W-1)-j must stay below T: j >= s+W-T */
    uint j0 = s + p.W > p.T ? s + p.W - p.T : 0u;
    float acc = 0.0;
    for (uint j = j0; j < p.W; j++)
        acc += GLOAD(g[p.off[0] + (row + p.W - 1u - j) * p.C + c]) *
               LOAD(w[p.off[1] + c * p.W + j]);
    ACC(dx[p.off[2] + i], acc);
}

#else /* DW */

layout(binding = 0) readonly buffer G { GT g[]; };
layout(binding = 1) readonly buffer X { DT x[]; };
#ifdef PARTIAL
layout(binding = 2) buffer Dw { float dw[]; };      /* part_w [K,C*W] */
layout(binding = 3) buffer Dbias { float db[]; };   /* part_b [K,C]; dummy if absent */
#else
layout(binding = 2) buffer Dw { DT dw[]; };         /* dw [C,W] */
layout(binding = 3) buffer Dbias { DT db[]; };      /* dbias [C]; dummy if absent */
#endif

layout(push_constant) uniform Push {
    uint off[4];
    uint rows, T, C, W;  /* rows = B*T */
    uint rows_per_chunk, chunks, has_dbias;
} p;

void main() {
    uint i = chm_index(), taps = p.W + 1u;
    if (i >= p.chunks * p.C * taps) return;
    /* c fastest: a warp's loads of g and x are consecutive channels of one row */
    uint c = i % p.C, j = (i / p.C) % taps, k = i / (taps * p.C);
    if (j == p.W && p.has_dbias == 0u) return;
    uint r0 = k * p.rows_per_chunk, r1 = min(p.rows, r0 + p.rows_per_chunk);
    float s = 0.0;
    for (uint r = r0; r < r1; r++) {
        float gv = GLOAD(g[p.off[0] + r * p.C + c]);
        if (j == p.W) {
            s += gv;
        } else if (r % p.T + j + 1u >= p.W) {  /* tap j reads time t-(W-1)+j >= 0 */
            s += gv * LOAD(x[p.off[1] + (r + j + 1u - p.W) * p.C + c]);
        }
    }
#ifdef PARTIAL
    if (j == p.W) db[p.off[3] + k * p.C + c] = s;
    else dw[p.off[2] + k * p.C * p.W + c * p.W + j] = s;
#else
    if (j == p.W) ACC(db[p.off[3] + c], s);
    else ACC(dw[p.off[2] + c * p.W + j], s);
#endif
}
#endif
