/*
 * rope.comp: rotary embedding, "rotate half", one invocation per pair.
 * x, out [B,T,H,D] (D even, half = D/2): the pair (i, i+half) at position
 * q = t + pos0 turns by a = q * theta^(-2i/D):
 *   rope_fwd:          out = R(a) x               (out may be x itself)
 *   rope_bwd (-DBWD):  dx += R(-a) dout           (ACCUMULATES)
 * Angles: f32 cannot hold q * theta^(-2i/D) to the digits cos/sin need at
 * large q, and GLSL's sin/cos are only accurate near [-pi, pi]. So the
 * host passes, per i, the frequency in turns per position as a 64-bit
 * fixed-point fraction (tab[2i] low word, tab[2i+1] high word; rope.c
 * computes it in double). q times it modulo 1 is exact integer arithmetic;
 * the result, reduced to [-1/2, 1/2) turn, becomes an angle in [-pi, pi).
 * x and out are f32, or 16-bit words with -DDT_BF16 / -DDT_F16 (dt.glsl:
 * rope_fwd_bf16, rope_bwd_f16, ...), rotated in f32.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer Tab { uint tab[]; };  /* [half][2] */
#ifdef BWD
layout(binding = 2) buffer Out { DT out_[]; };
#else
layout(binding = 2) writeonly buffer Out { DT out_[]; };
#endif

layout(push_constant) uniform Push {
    uint off[3];
    uint pairs, T, H, half_, pos0;
} p;

/* The angle of frequency i at position q, in [-pi, pi). */
float angle(uint q, uint i) {
    uint hi, lo;
    umulExtended(q, tab[p.off[1] + 2u * i], hi, lo);
    uint top = hi + q * tab[p.off[1] + 2u * i + 1u]; /* bits 32..63 of the fraction */
    float turns = (float(int(top)) + float(lo) * 2.3283064365386963e-10) * 2.3283064365386963e-10;
    return turns * 6.283185307179586;
}

void main() {
    uint k = chm_index();
    if (k >= p.pairs) return;
    uint i = k % p.half_, bth = k / p.half_;
    uint t = (bth / p.H) % p.T;
    float a = angle(t + p.pos0, i), c = cos(a), s = sin(a);
#ifdef BWD
    s = -s;
#endif
    uint j = bth * 2u * p.half_ + i;
    float x0 = LOAD(x[p.off[0] + j]), x1 = LOAD(x[p.off[0] + j + p.half_]);
    float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
#ifdef BWD
    ACC(out_[p.off[2] + j], y0);
    ACC(out_[p.off[2] + j + p.half_], y1);
#else
    out_[p.off[2] + j] = STORE(y0);
    out_[p.off[2] + j + p.half_] = STORE(y1);
#endif
}
