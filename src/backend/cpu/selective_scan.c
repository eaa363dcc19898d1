/*
 * selective_scan.c: the Mamba-1 selective scan on the cpu (reference).
 *
 * u, delta, z, y [B,T,Di]; Bm, Cm [B,T,N] (shared by all channels); A [Di,N];
 * D, delta_bias [Di]. With d = softplus(delta + delta_bias) (or without the
 * softplus), per channel c and state n:
 *   h[t] = exp(d[t]*A[c,n]) * h[t-1] + d[t]*Bm[t,n]*u[t],  h[-1] = 0
 *   y[t] = (sum_n Cm[t,n]*h[t,n] + D[c]*u[t]) * silu(z[t])  (gate when z is given)
 *
 * Work is split into tasks (b, block of SCAN_BLOCK channels). A task gathers
 * its sequences into doubles and runs its channels one after another. The
 * backward recomputes the T states of a channel and their decays exp(d A) into
 * scratch (the reverse reads the decays instead of calling exp again: the
 * same values, and exp is most of the op's time), runs the reverse recurrence
 * and ACCUMULATES (+=) into every requested gradient.
 * Sums over channels (dBm, dCm) go into one partial per task, sums over the
 * batch (dA, dD, ddelta_bias) into one partial per (b, channel); both are
 * reduced afterwards in a fixed order, so results do not depend on threads.
 * Gradients that a->grads_set names are written instead (same sums). The
 * forward writes a->h_saved when given (the state after every 16 steps) and, with a
 * gate, a->y_saved (the output before it); the backward ignores both, since it
 * recomputes all T states of a channel anyway.
 * All scratch is allocated before any output is touched, so a failed
 * allocation leaves every output as it was.
 */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Channels per task: fixes the grouping of channel sums (independent of thread count). */
#define SCAN_BLOCK 64

/* Sizes of one call. */
typedef struct scan_dims {
    int64_t B, T, Di, N, nblk;
} scan_dims;

/* One channel of one batch row, as doubles. */
typedef struct scan_chan {
    double *u, *dt, *dsig, *z;  /* [T] input, step d, dd/ddelta, gate (unused without z) */
    double *A;                  /* [N] row of A */
    double *hs;                 /* [T,N] states */
    double *decay;              /* [T,N] exp(d A), kept by the forward for the backward */
    double *yraw;               /* [T] output before the gate */
    double D;                   /* skip weight, 0 when absent */
} scan_chan;

/* Gradients of one channel (before they are added to the tensors). */
typedef struct scan_chan_grad {
    double *du, *ddelta, *dz, *dy;  /* [T]; dy is the incoming gradient */
    double *dA, *dh;                /* [N] dA of this channel, running dL/dh */
    double dD, ddb;
} scan_chan_grad;

/* log(1 + e^x) without overflow; for x >= 20 it equals x to double precision. */
static double softplus(double x) { return x < 20.0 ? log1p(exp(x)) : x; }

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Doubles scan_chan_carve takes. */
static int64_t scan_chan_size(int64_t T, int64_t N) { return 5 * T + N + 2 * T * N; }

/* Carve a channel's scratch out of mem (scan_chan_size doubles); returns the rest. */
static double *scan_chan_carve(scan_chan *ch, double *mem, int64_t T, int64_t N) {
    ch->u = mem;
    ch->dt = ch->u + T;
    ch->dsig = ch->dt + T;
    ch->z = ch->dsig + T;
    ch->A = ch->z + T;
    ch->hs = ch->A + N;
    ch->decay = ch->hs + T * N;
    ch->yraw = ch->decay + T * N;
    return ch->yraw + T;
}

/* Gather channel c of batch b and compute its steps d and dd/ddelta. */
static void scan_chan_load(scan_chan *ch, const chm_scan_args *a, const scan_dims *s, int64_t b,
                           int64_t c) {
    int64_t T = s->T, Di = s->Di, at = b * T * Di + c;
    double bias = 0;
    chm_cpu_load_rows(ch->u, a->u, at, T, 1, Di);
    chm_cpu_load_rows(ch->dt, a->delta, at, T, 1, Di);
    if (a->z) chm_cpu_load_rows(ch->z, a->z, at, T, 1, Di);
    chm_cpu_load_rows(ch->A, a->A, c * s->N, 1, s->N, s->N);
    if (a->delta_bias) chm_cpu_load_rows(&bias, a->delta_bias, c, 1, 1, 1);
    ch->D = 0;
    if (a->D) chm_cpu_load_rows(&ch->D, a->D, c, 1, 1, 1);
    for (int64_t t = 0; t < T; t++) {
        double x = ch->dt[t] + bias;
        ch->dt[t] = a->delta_softplus ? softplus(x) : x;
        ch->dsig[t] = a->delta_softplus ? sigmoid(x) : 1.0;
    }
}

/* The recurrence of one channel: states into ch->hs, their decays exp(d A) into
   ch->decay (the backward's reverse reads them: exp is most of this op's time), pre-gate
   output into ch->yraw. */
static void scan_chan_fwd(scan_chan *ch, const double *Bb, const double *Cb, int64_t T,
                          int64_t N) {
    for (int64_t t = 0; t < T; t++) {
        double *h = ch->hs + t * N, *dc = ch->decay + t * N, y = ch->D * ch->u[t];
        const double *hp = t ? h - N : NULL;
        for (int64_t n = 0; n < N; n++) {
            double prev = hp ? hp[n] : 0.0;
            dc[n] = exp(ch->dt[t] * ch->A[n]);
            h[n] = dc[n] * prev + ch->dt[t] * Bb[t * N + n] * ch->u[t];
            y += Cb[t * N + n] * h[n];
        }
        ch->yraw[t] = y;
    }
}

/* Gate factor silu(z) of step t (1 without z). */
static double scan_gate(const scan_chan *ch, bool has_z, int64_t t) {
    return has_z ? ch->z[t] * sigmoid(ch->z[t]) : 1.0;
}

/*
 * Reverse recurrence of one channel. dBp, dCp [T,N] collect the channel sums
 * of dBm and dCm (+=); everything else lands in gr.
 */
static void scan_chan_bwd(const scan_chan *ch, bool has_z, const double *Bb, const double *Cb,
                          int64_t T, int64_t N, scan_chan_grad *gr, double *dBp, double *dCp) {
    memset(gr->dA, 0, (size_t)N * sizeof *gr->dA);
    memset(gr->dh, 0, (size_t)N * sizeof *gr->dh);
    gr->dD = gr->ddb = 0;
    for (int64_t t = T - 1; t >= 0; t--) {
        double u = ch->u[t], dt = ch->dt[t], dyr = gr->dy[t] * scan_gate(ch, has_z, t);
        if (has_z) {
            double s = sigmoid(ch->z[t]);
            gr->dz[t] = gr->dy[t] * ch->yraw[t] * s * (1.0 + ch->z[t] * (1.0 - s));
        }
        double du = dyr * ch->D, dd = 0;
        const double *h = ch->hs + t * N, *hp = t ? h - N : NULL, *dc = ch->decay + t * N;
        gr->dD += dyr * u;
        for (int64_t n = 0; n < N; n++) {
            double prev = hp ? hp[n] : 0.0, decay = dc[n];
            double Bn = Bb[t * N + n], dh = gr->dh[n] + dyr * Cb[t * N + n];
            dCp[t * N + n] += dyr * h[n];
            dBp[t * N + n] += dh * dt * u;
            du += dh * dt * Bn;
            dd += dh * (ch->A[n] * decay * prev + Bn * u);
            gr->dA[n] += dh * dt * decay * prev;
            gr->dh[n] = dh * decay;
        }
        gr->du[t] = du;
        gr->ddelta[t] = dd * ch->dsig[t];
        gr->ddb += dd * ch->dsig[t];
    }
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Doubles of scratch one forward task needs. */
static int64_t scan_fwd_scratch(const scan_dims *s) {
    return 2 * s->T * s->N + scan_chan_size(s->T, s->N) + s->T;
}

/* The saved states of channel c of batch b (h_saved [B,K,Di,N]): h after every chunk. */
static void scan_save_states(const scan_dims *s, const chm_tensor *hsv, const double *hs,
                             int64_t b, int64_t c) {
    int64_t S = CHM_SCAN_SAVE_STRIDE, K = (s->T + S - 1) / S, N = s->N;
    for (int64_t k = 0; k < K; k++) {
        int64_t t = min64(S * (k + 1), s->T) - 1;
        chm_cpu_store_rows(hsv, ((b * K + k) * s->Di + c) * N, 1, N, N, hs + t * N, false);
    }
}

/* Forward of one task: block k of channels of batch b, in scratch mem. */
static void scan_fwd_task(const scan_dims *s, const chm_tensor *y, const chm_scan_args *a,
                          int64_t b, int64_t k, double *mem) {
    int64_t T = s->T, N = s->N, Di = s->Di;
    double *Bb = mem, *Cb = Bb + T * N;
    scan_chan ch;
    double *yv = scan_chan_carve(&ch, Cb + T * N, T, N);
    chm_cpu_load_rows(Bb, a->Bm, b * T * N, 1, T * N, T * N);
    chm_cpu_load_rows(Cb, a->Cm, b * T * N, 1, T * N, T * N);
    for (int64_t c = k * SCAN_BLOCK; c < min64(Di, (k + 1) * SCAN_BLOCK); c++) {
        scan_chan_load(&ch, a, s, b, c);
        scan_chan_fwd(&ch, Bb, Cb, T, N);
        if (a->h_saved) scan_save_states(s, a->h_saved, ch.hs, b, c);
        if (a->y_saved && a->z)
            chm_cpu_store_rows(a->y_saved, b * T * Di + c, T, 1, Di, ch.yraw, false);
        for (int64_t t = 0; t < T; t++) yv[t] = ch.yraw[t] * scan_gate(&ch, a->z != NULL, t);
        chm_cpu_store_rows(y, b * T * Di + c, T, 1, Di, yv, false);
    }
}

static chm_status scan_dims_of(chm_backend *be, const char *op, const chm_scan_args *a,
                               scan_dims *s) {
    if (a->u->dtype != CHM_F32 && a->u->dtype != CHM_F64)
        return chm_cpu_bad_dtype(be, op, a->u->dtype);
    s->B = a->u->shape[0];
    s->T = a->u->shape[1];
    s->Di = a->u->shape[2];
    s->N = a->A->shape[1];
    s->nblk = (s->Di + SCAN_BLOCK - 1) / SCAN_BLOCK;
    return CHM_OK;
}

chm_status chm_cpu_selective_scan_fwd(chm_backend *be, const chm_tensor *y,
                                      const chm_scan_args *a) {
    scan_dims s;
    chm_status rc = scan_dims_of(be, "selective_scan_fwd", a, &s);
    if (rc) return rc;
    int64_t per = scan_fwd_scratch(&s);
    double *mem = chm_cpu_thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "selective_scan_fwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
#pragma omp parallel for collapse(2) schedule(dynamic) if (PAR_WORTH(s.B * s.T * s.Di * s.N))
    for (int64_t b = 0; b < s.B; b++)
        for (int64_t k = 0; k < s.nblk; k++) scan_fwd_task(&s, y, a, b, k, chm_cpu_my_scratch(mem, per));
    free(mem);
    return CHM_OK;
}

/*
 * Partial sums of the backward, reduced in a fixed order at the end:
 * dB, dC [B, nblk, T, N] (sums over a task's channels) and
 * dA [B, Di, N], dD and ddb [B, Di] (one entry per (b, channel)).
 */
typedef struct scan_parts {
    double *dB, *dC, *dA, *dD, *ddb;
} scan_parts;

/* Whether gradient `bit` (CHM_SCAN_SET_*) accumulates rather than being written. */
static bool scan_adds(unsigned set, unsigned bit) { return (set & bit) == 0; }

/* Send one channel's gradients to the tensors (per-element ones) or the partials. */
static void scan_chan_emit(const scan_dims *s, const chm_scan_grads *g, unsigned set,
                           const scan_chan_grad *gr, const scan_parts *p, int64_t b, int64_t c) {
    int64_t T = s->T, Di = s->Di, at = b * T * Di + c, bc = b * Di + c;
    if (g->du) chm_cpu_store_rows(g->du, at, T, 1, Di, gr->du, scan_adds(set, CHM_SCAN_SET_DU));
    if (g->ddelta)
        chm_cpu_store_rows(g->ddelta, at, T, 1, Di, gr->ddelta,
                           scan_adds(set, CHM_SCAN_SET_DDELTA));
    if (g->dz) chm_cpu_store_rows(g->dz, at, T, 1, Di, gr->dz, scan_adds(set, CHM_SCAN_SET_DZ));
    memcpy(p->dA + bc * s->N, gr->dA, (size_t)s->N * sizeof *gr->dA);
    p->dD[bc] = gr->dD;
    p->ddb[bc] = gr->ddb;
}

/* Doubles of scratch one backward task needs. */
static int64_t scan_bwd_scratch(const scan_dims *s) {
    return 2 * s->T * s->N + scan_chan_size(s->T, s->N) + 4 * s->T + 2 * s->N;
}

/* Backward of one task: block k of channels of batch b, in scratch mem. */
static void scan_bwd_task(const scan_dims *s, const chm_scan_grads *g, const chm_tensor *dy,
                          const chm_scan_args *a, const scan_parts *p, int64_t b, int64_t k,
                          double *mem) {
    int64_t T = s->T, N = s->N, Di = s->Di;
    double *Bb = mem, *Cb = Bb + T * N;
    scan_chan ch;
    scan_chan_grad gr;
    gr.du = scan_chan_carve(&ch, Cb + T * N, T, N);
    gr.ddelta = gr.du + T;
    gr.dz = gr.ddelta + T;
    gr.dy = gr.dz + T;
    gr.dA = gr.dy + T;
    gr.dh = gr.dA + N;
    double *dBp = p->dB + (b * s->nblk + k) * T * N, *dCp = p->dC + (b * s->nblk + k) * T * N;
    chm_cpu_load_rows(Bb, a->Bm, b * T * N, 1, T * N, T * N);
    chm_cpu_load_rows(Cb, a->Cm, b * T * N, 1, T * N, T * N);
    for (int64_t c = k * SCAN_BLOCK; c < min64(Di, (k + 1) * SCAN_BLOCK); c++) {
        scan_chan_load(&ch, a, s, b, c);
        scan_chan_fwd(&ch, Bb, Cb, T, N);
        chm_cpu_load_rows(gr.dy, dy, b * T * Di + c, T, 1, Di);
        scan_chan_bwd(&ch, a->z != NULL, Bb, Cb, T, N, &gr, dBp, dCp);
        scan_chan_emit(s, g, a->grads_set, &gr, p, b, c);
    }
}

/* Sum n consecutive blocks of `len` doubles into the first, in block order. */
static void sum_blocks(double *x, int64_t n, int64_t len) {
    for (int64_t k = 1; k < n; k++)
        for (int64_t i = 0; i < len; i++) x[i] += x[k * len + i];
}

/* Reduce the partials in a fixed order and add them to the requested gradients. */
static void scan_reduce(const scan_dims *s, const chm_scan_grads *g, unsigned set,
                        const scan_parts *p) {
    int64_t TN = s->T * s->N, DN = s->Di * s->N;
    for (int64_t b = 0; b < s->B; b++) {
        double *dB = p->dB + b * s->nblk * TN, *dC = p->dC + b * s->nblk * TN;
        sum_blocks(dB, s->nblk, TN);
        sum_blocks(dC, s->nblk, TN);
        if (g->dBm)
            chm_cpu_store_rows(g->dBm, b * TN, 1, TN, TN, dB, scan_adds(set, CHM_SCAN_SET_DBM));
        if (g->dCm)
            chm_cpu_store_rows(g->dCm, b * TN, 1, TN, TN, dC, scan_adds(set, CHM_SCAN_SET_DCM));
    }
    sum_blocks(p->dA, s->B, DN);
    sum_blocks(p->dD, s->B, s->Di);
    sum_blocks(p->ddb, s->B, s->Di);
    if (g->dA) chm_cpu_store_rows(g->dA, 0, 1, DN, DN, p->dA, scan_adds(set, CHM_SCAN_SET_DA));
    if (g->dD)
        chm_cpu_store_rows(g->dD, 0, 1, s->Di, s->Di, p->dD, scan_adds(set, CHM_SCAN_SET_DD));
    if (g->ddelta_bias)
        chm_cpu_store_rows(g->ddelta_bias, 0, 1, s->Di, s->Di, p->ddb,
                           scan_adds(set, CHM_SCAN_SET_DDELTA_BIAS));
}

chm_status chm_cpu_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                      const chm_tensor *dy, const chm_scan_args *a) {
    scan_dims s;
    chm_status rc = scan_dims_of(be, "selective_scan_bwd", a, &s);
    if (rc) return rc;
    /* at least one block of dB/dC partials: with Di = 0 they are the zero sums */
    int64_t nBC = s.B * (s.nblk ? s.nblk : 1) * s.T * s.N, nA = s.B * s.Di * s.N;
    int64_t nD = s.B * s.Di;
    int64_t per = scan_bwd_scratch(&s);
    double *parts = calloc((size_t)(2 * nBC + nA + 2 * nD + 1), sizeof *parts);
    double *mem = chm_cpu_thread_scratch(per);
    if (!parts || !mem) {
        free(parts);
        free(mem);
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "selective_scan_bwd: cannot allocate scratch for B=%lld, T=%lld, "
                       "Di=%lld, N=%lld",
                       (long long)s.B, (long long)s.T, (long long)s.Di, (long long)s.N);
    }
    scan_parts p = {parts, parts + nBC, parts + 2 * nBC, parts + 2 * nBC + nA,
                    parts + 2 * nBC + nA + nD};
#pragma omp parallel for collapse(2) schedule(dynamic) if (PAR_WORTH(s.B * s.T * s.Di * s.N))
    for (int64_t b = 0; b < s.B; b++)
        for (int64_t k = 0; k < s.nblk; k++)
            scan_bwd_task(&s, g, dy, a, &p, b, k, chm_cpu_my_scratch(mem, per));
    scan_reduce(&s, g, a->grads_set, &p);
    free(parts);
    free(mem);
    return CHM_OK;
}
