/*
 * attention.c: causal grouped-query attention on the cpu (reference).
 *
 * q [B,T,H,D], k and v [B,T,Hk,D], out [B,T,H,D], lse [B,H,T]; q head h reads
 * kv head h / (H/Hk); query i sees keys j <= i. Each head is gathered into
 * double scratch, computed there and written back once, so one code path
 * serves f32 and f64 and every sum runs in double.
 *
 * The backward recomputes the probabilities from lse (p = exp(s - lse)) and
 * uses Delta_i = rowsum(dout_i * out_i), so no T x T matrix is kept. It
 * ACCUMULATES (+=) into dq, dk and dv. Work is split over (b, kv head): the
 * q heads that share a kv head add into its dk/dv in head order inside one
 * task, so there are no races and the sums do not depend on thread count.
 * Scratch is allocated per thread before any output is touched, so a failed
 * allocation leaves every output as it was.
 */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Sizes of one call. */
typedef struct attn_dims {
    int64_t B, T, H, Hk, D;
} attn_dims;

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Element offset of row (b, t=0, head) in a [B,T,heads,D] tensor. */
static int64_t head_at(const attn_dims *d, int64_t b, int64_t head, int64_t heads) {
    return (b * d->T * heads + head) * d->D;
}

/*
 * One query row i of one head: s [T] is scratch, oi [D] receives the output.
 * Returns the row's logsumexp. kh, vh are [T,D].
 */
static double attn_row(const double *qi, const double *kh, const double *vh, int64_t i,
                       int64_t D, double scale, double *s, double *oi) {
    double m = -INFINITY, sum = 0;
    for (int64_t j = 0; j <= i; j++) {
        s[j] = scale * dot(qi, kh + j * D, D);
        if (s[j] > m) m = s[j];
    }
    for (int64_t j = 0; j <= i; j++) {
        s[j] = exp(s[j] - m);
        sum += s[j];
    }
    memset(oi, 0, (size_t)D * sizeof *oi);
    for (int64_t j = 0; j <= i; j++)
        for (int64_t e = 0; e < D; e++) oi[e] += s[j] * vh[j * D + e];
    for (int64_t e = 0; e < D; e++) oi[e] /= sum;
    return m + log(sum);
}

/* Doubles of scratch attn_fwd_head needs. */
static int64_t attn_fwd_scratch(const attn_dims *d) { return 4 * d->T * d->D + 2 * d->T; }

/* Forward of head h of batch b, in scratch mem (attn_fwd_scratch doubles). */
static void attn_fwd_head(const attn_dims *d, int64_t b, int64_t h, double *mem,
                          const chm_tensor *out, const chm_tensor *lse, const chm_tensor *q,
                          const chm_tensor *k, const chm_tensor *v, double scale) {
    int64_t T = d->T, D = d->D, g = h / (d->H / d->Hk);
    double *qh = mem, *kh = qh + T * D, *vh = kh + T * D, *oh = vh + T * D;
    double *s = oh + T * D, *lrow = s + T;
    chm_cpu_load_rows(qh, q, head_at(d, b, h, d->H), T, D, d->H * D);
    chm_cpu_load_rows(kh, k, head_at(d, b, g, d->Hk), T, D, d->Hk * D);
    chm_cpu_load_rows(vh, v, head_at(d, b, g, d->Hk), T, D, d->Hk * D);
    for (int64_t i = 0; i < T; i++)
        lrow[i] = attn_row(qh + i * D, kh, vh, i, D, scale, s, oh + i * D);
    chm_cpu_store_rows(out, head_at(d, b, h, d->H), T, D, d->H * D, oh, false);
    chm_cpu_store_rows(lse, (b * d->H + h) * T, 1, T, T, lrow, false);
}

static chm_status attn_dims_of(chm_backend *be, const char *op, const chm_tensor *q,
                               const chm_tensor *k, attn_dims *d) {
    if (q->dtype != CHM_F32 && q->dtype != CHM_F64) return chm_cpu_bad_dtype(be, op, q->dtype);
    *d = (attn_dims){q->shape[0], q->shape[1], q->shape[2], k->shape[2], q->shape[3]};
    return CHM_OK;
}

chm_status chm_cpu_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                                 const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                 double scale) {
    attn_dims d;
    chm_status rc = attn_dims_of(be, "attention_fwd", q, k, &d);
    if (rc) return rc;
    int64_t per = attn_fwd_scratch(&d);
    double *mem = chm_cpu_thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "attention_fwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
#pragma omp parallel for collapse(2) schedule(dynamic) if (PAR_WORTH(d.B * d.H * d.T * d.T * d.D))
    for (int64_t b = 0; b < d.B; b++)
        for (int64_t h = 0; h < d.H; h++)
            attn_fwd_head(&d, b, h, chm_cpu_my_scratch(mem, per), out, lse, q, k, v, scale);
    free(mem);
    return CHM_OK;
}

/* Scratch of one backward task: the kv head's rows and gradients, one q head at a time. */
typedef struct attn_bwd_buf {
    double *kh, *vh, *dkh, *dvh;  /* [T,D] kv head and its gradients (accumulated over q heads) */
    double *qh, *doh, *oh, *dqh;  /* [T,D] current q head, its dout, out and dq */
    double *lrow, *delta;         /* [T] its lse and rowsum(dout*out) */
} attn_bwd_buf;

/* Backward of q head h (reading kv rows in buf) into buf's dq, dk, dv. */
static void attn_bwd_head(const attn_dims *d, int64_t b, int64_t h, attn_bwd_buf *w,
                          const chm_tensor *dq, const chm_tensor *dout, const chm_tensor *q,
                          const chm_tensor *out, const chm_tensor *lse, double scale) {
    int64_t T = d->T, D = d->D, at = head_at(d, b, h, d->H), stride = d->H * D;
    chm_cpu_load_rows(w->qh, q, at, T, D, stride);
    chm_cpu_load_rows(w->doh, dout, at, T, D, stride);
    chm_cpu_load_rows(w->oh, out, at, T, D, stride);
    chm_cpu_load_rows(w->lrow, lse, (b * d->H + h) * T, 1, T, T);
    memset(w->dqh, 0, (size_t)(T * D) * sizeof *w->dqh);
    for (int64_t i = 0; i < T; i++) w->delta[i] = dot(w->doh + i * D, w->oh + i * D, D);
    for (int64_t i = 0; i < T; i++) {
        const double *qi = w->qh + i * D, *doi = w->doh + i * D;
        for (int64_t j = 0; j <= i; j++) {
            const double *kj = w->kh + j * D, *vj = w->vh + j * D;
            double p = exp(scale * dot(qi, kj, D) - w->lrow[i]);
            double ds = scale * p * (dot(doi, vj, D) - w->delta[i]);
            for (int64_t e = 0; e < D; e++) {
                w->dvh[j * D + e] += p * doi[e];
                w->dqh[i * D + e] += ds * kj[e];
                w->dkh[j * D + e] += ds * qi[e];
            }
        }
    }
    chm_cpu_store_rows(dq, at, T, D, stride, w->dqh, true);
}

/* Doubles of scratch attn_bwd_group needs. */
static int64_t attn_bwd_scratch(const attn_dims *d) { return 8 * d->T * d->D + 2 * d->T; }

/* Backward of kv head g of batch b and of every q head that reads it, in scratch mem. */
static void attn_bwd_group(const attn_dims *d, int64_t b, int64_t g, double *mem,
                           const chm_tensor *dq, const chm_tensor *dk, const chm_tensor *dv,
                           const chm_tensor *dout, const chm_tensor *q, const chm_tensor *k,
                           const chm_tensor *v, const chm_tensor *out, const chm_tensor *lse,
                           double scale) {
    int64_t T = d->T, D = d->D, rep = d->H / d->Hk, at = head_at(d, b, g, d->Hk);
    memset(mem, 0, (size_t)attn_bwd_scratch(d) * sizeof *mem);
    attn_bwd_buf w;
    double **parts[] = {&w.kh, &w.vh, &w.dkh, &w.dvh, &w.qh, &w.doh, &w.oh, &w.dqh};
    for (int i = 0; i < 8; i++) *parts[i] = mem + i * T * D;
    w.lrow = mem + 8 * T * D;
    w.delta = w.lrow + T;
    chm_cpu_load_rows(w.kh, k, at, T, D, d->Hk * D);
    chm_cpu_load_rows(w.vh, v, at, T, D, d->Hk * D);
    for (int64_t r = 0; r < rep; r++)
        attn_bwd_head(d, b, g * rep + r, &w, dq, dout, q, out, lse, scale);
    chm_cpu_store_rows(dk, at, T, D, d->Hk * D, w.dkh, true);
    chm_cpu_store_rows(dv, at, T, D, d->Hk * D, w.dvh, true);
}

chm_status chm_cpu_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                 const chm_tensor *dv, const chm_tensor *dout,
                                 const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                 const chm_tensor *out, const chm_tensor *lse, double scale) {
    attn_dims d;
    chm_status rc = attn_dims_of(be, "attention_bwd", q, k, &d);
    if (rc) return rc;
    int64_t per = attn_bwd_scratch(&d);
    double *mem = chm_cpu_thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "attention_bwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
#pragma omp parallel for collapse(2) schedule(dynamic) if (PAR_WORTH(d.B * d.H * d.T * d.T * d.D))
    for (int64_t b = 0; b < d.B; b++)
        for (int64_t g = 0; g < d.Hk; g++)
            attn_bwd_group(&d, b, g, chm_cpu_my_scratch(mem, per), dq, dk, dv, dout, q, k, v, out, lse,
                           scale);
    free(mem);
    return CHM_OK;
}
