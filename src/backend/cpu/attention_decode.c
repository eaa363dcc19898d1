/*
 * attention_decode.c: the cpu backend's causal attention of new queries
 * against a key/value cache (incremental decoding, forward only).
 *
 * q, out [B,Tq,H,D]; k, v [B,Tk,Hk,D] with Tq <= Tk: the Tq queries are the
 * LAST Tq positions of the Tk keys, so query i sits at position
 * p = Tk - Tq + i and attends keys 0..p (a bottom-right aligned causal mask;
 * Tq = Tk is chm_attention_fwd's mask). Head h reads kv head h / (H/Hk).
 *   out[b,i,h] = sum_{j<=p} softmax_j(scale * q[b,i,h].k[b,j,kh]) v[b,j,kh]
 * One task per (b, i, h) with its own score row; sums in double.
 */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>

/* Sizes of one call. */
typedef struct dec_dims {
    int64_t B, Tq, Tk, H, Hk, D;
} dec_dims;

/* One query row: qi [D] against keys kh, vh (row stride Hk*D) 0..p into oi [D]; s [p+1] scratch. */
#define DECODE_ROW(T)                                                                          \
    static void decode_row_##T(T *oi, const T *qi, const T *kh, const T *vh, int64_t p,        \
                               const dec_dims *d, double scale, double *s) {                   \
        int64_t stride = d->Hk * d->D;                                                         \
        double mx = -INFINITY, sum = 0;                                                        \
        for (int64_t j = 0; j <= p; j++) {                                                     \
            double dot = 0;                                                                    \
            for (int64_t c = 0; c < d->D; c++) dot += (double)qi[c] * (double)kh[j * stride + c]; \
            s[j] = scale * dot;                                                                \
            mx = fmax(mx, s[j]);                                                               \
        }                                                                                      \
        for (int64_t j = 0; j <= p; j++) sum += (s[j] = exp(s[j] - mx));                      \
        for (int64_t c = 0; c < d->D; c++) {                                                   \
            double acc = 0;                                                                    \
            for (int64_t j = 0; j <= p; j++) acc += s[j] * (double)vh[j * stride + c];         \
            oi[c] = (T)(acc / sum);                                                            \
        }                                                                                      \
    }                                                                                          \
    static void decode_all_##T(T *out, const T *q, const T *k, const T *v, const dec_dims *d,  \
                               double scale, double *mem) {                                    \
        int64_t rep = d->H / d->Hk, n = d->B * d->Tq * d->H;                                   \
        _Pragma("omp parallel for schedule(static) if (n * d->Tk * d->D > 32768)")             \
        for (int64_t task = 0; task < n; task++) {                                             \
            int64_t h = task % d->H, i = (task / d->H) % d->Tq, b = task / (d->H * d->Tq);     \
            int64_t kvh = h / rep, p = d->Tk - d->Tq + i;                                      \
            const T *kh = k + (b * d->Tk * d->Hk + kvh) * d->D;                                \
            const T *vh = v + (b * d->Tk * d->Hk + kvh) * d->D;                                \
            decode_row_##T(out + task * d->D, q + task * d->D, kh, vh, p, d, scale,            \
                           mem + task * d->Tk);                                                \
        }                                                                                      \
    }

DECODE_ROW(float)
DECODE_ROW(double)

chm_status chm_cpu_attention_decode(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                    const chm_tensor *k, const chm_tensor *v, double scale) {
    dec_dims d = {q->shape[0], q->shape[1], k->shape[1], q->shape[2], k->shape[2], q->shape[3]};
    if (q->dtype != CHM_F32 && q->dtype != CHM_F64)
        return chm_cpu_bad_dtype(be, "attention_decode", q->dtype);
    /* one score row per task: B*Tq*H rows of Tk doubles */
    double *mem = malloc((size_t)(d.B * d.Tq * d.H * d.Tk + 1) * sizeof *mem);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM, "attention_decode: no memory for the score rows");
    if (q->dtype == CHM_F64)
        decode_all_double(chm_cpu_ptr(out), chm_cpu_ptr(q), chm_cpu_ptr(k), chm_cpu_ptr(v), &d,
                          scale, mem);
    else
        decode_all_float(chm_cpu_ptr(out), chm_cpu_ptr(q), chm_cpu_ptr(k), chm_cpu_ptr(v), &d,
                         scale, mem);
    free(mem);
    return CHM_OK;
}
