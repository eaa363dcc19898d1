/*
 * causal_conv1d.c: depthwise causal convolution over time on the cpu (reference).
 *
 * x, out [B,T,C], w [C,W], bias [C] optional:
 *   pre[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-(W-1)+j, c]  (x is 0 before t = 0)
 *   out = silu(pre) when silu is set, else pre.
 * Work is split over blocks of adjacent channels: a block's [T, channels] rows
 * are gathered into doubles, computed there and written back once, so one code
 * path serves f32 and f64.
 * The backward ACCUMULATES (+=) into dx, dw and dbias; each task owns its
 * channels' slices of all three and sums over the batch in order, so there are no races
 * and results do not depend on the thread count. All scratch is allocated
 * before any output is touched.
 */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Adjacent channels a task takes: a task's rows of x are CONV_CB contiguous
 * values (a 64-byte line in f32), where gathering one channel's column touched
 * a cache line per element. Each channel's sums keep their order, so the
 * results do not depend on CONV_CB or on the thread count. */
#define CONV_CB 16

/* Sizes of one call. */
typedef struct conv_dims {
    int64_t B, T, C, W;
} conv_dims;

/* The channels [c0, c0 + n) of one task: taps wk[n][W], biases bk[n]; the
 * scratch rows are [T][n] (row t holds the task's channels at step t). */
typedef struct conv_task {
    int64_t c0, n;
    double *wk, *bk;
} conv_task;

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* pre[T][n] of the task's rows xk[T][n]. */
static void conv_rows(double *pre, const double *xk, const conv_task *k, int64_t T, int64_t W) {
    int64_t n = k->n;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < n; i++) {
            double s = k->bk[i];
            for (int64_t j = 0; j < W; j++) {
                int64_t src = t - (W - 1) + j;
                if (src >= 0) s += k->wk[i * W + j] * xk[src * n + i];
            }
            pre[t * n + i] = s;
        }
}

/* The task's taps and biases (0 when absent). */
static void conv_load_params(const conv_dims *d, conv_task *k, const chm_tensor *w,
                             const chm_tensor *bias) {
    chm_cpu_load_rows(k->wk, w, k->c0 * d->W, 1, k->n * d->W, k->n * d->W);
    if (bias)
        chm_cpu_load_rows(k->bk, bias, k->c0, 1, k->n, k->n);
    else
        memset(k->bk, 0, (size_t)k->n * sizeof *k->bk);
}

/* Doubles of scratch one task needs: `rows` [T][CONV_CB] arrays and `params`
 * arrays of CONV_CB * W (the taps) or CONV_CB (the biases) each. */
static int64_t conv_scratch(const conv_dims *d, int rows, int params) {
    return CONV_CB * (rows * d->T + params * (d->W + 1));
}

/* Forward of task k (channels c0 ..) for every batch row, in scratch mem. */
static void conv_fwd_task(const conv_dims *d, int64_t c0, double *mem, const chm_tensor *out,
                          const chm_tensor *x, const chm_tensor *w, const chm_tensor *bias,
                          bool silu) {
    int64_t T = d->T, C = d->C;
    conv_task k = {c0, min64(CONV_CB, C - c0), NULL, NULL};
    double *xk = mem, *pre = xk + T * k.n;
    k.wk = pre + T * k.n;
    k.bk = k.wk + k.n * d->W;
    conv_load_params(d, &k, w, bias);
    for (int64_t b = 0; b < d->B; b++) {
        chm_cpu_load_rows(xk, x, b * T * C + c0, T, k.n, C);
        conv_rows(pre, xk, &k, T, d->W);
        if (silu)
            for (int64_t e = 0; e < T * k.n; e++) pre[e] *= sigmoid(pre[e]);
        chm_cpu_store_rows(out, b * T * C + c0, T, k.n, C, pre, false);
    }
}

static chm_status conv_dims_of(chm_backend *be, const char *op, const chm_tensor *x,
                               const chm_tensor *w, conv_dims *d) {
    if (x->dtype != CHM_F32 && x->dtype != CHM_F64) return chm_cpu_bad_dtype(be, op, x->dtype);
    *d = (conv_dims){x->shape[0], x->shape[1], x->shape[2], w->shape[1]};
    return CHM_OK;
}

chm_status chm_cpu_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out,
                                     const chm_tensor *x, const chm_tensor *w,
                                     const chm_tensor *bias, bool silu) {
    conv_dims d;
    chm_status rc = conv_dims_of(be, "causal_conv1d_fwd", x, w, &d);
    if (rc) return rc;
    int64_t per = conv_scratch(&d, 2, 1);
    double *mem = chm_cpu_thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "causal_conv1d_fwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
    int64_t ntask = (d.C + CONV_CB - 1) / CONV_CB;
#pragma omp parallel for schedule(static) if (PAR_WORTH(d.B * d.T * d.C * d.W))
    for (int64_t t = 0; t < ntask; t++)
        conv_fwd_task(&d, t * CONV_CB, chm_cpu_my_scratch(mem, per), out, x, w, bias, silu);
    free(mem);
    return CHM_OK;
}

/*
 * Backward of the task's rows: g[T][n] = dL/dpre (overwritten from dL/dout when
 * silu), dxk[T][n] is set, dwk[n][W] and dbk[n] accumulate. Per channel the
 * order of the sums is the single-column order: t ascending, then j.
 */
static void conv_rows_bwd(double *g, const double *pre, const double *xk, const conv_task *k,
                          bool silu, int64_t T, int64_t W, double *dxk, double *dwk,
                          double *dbk) {
    int64_t n = k->n;
    if (silu)
        for (int64_t e = 0; e < T * n; e++) {
            double s = sigmoid(pre[e]);
            g[e] *= s * (1.0 + pre[e] * (1.0 - s));
        }
    memset(dxk, 0, (size_t)(T * n) * sizeof *dxk);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < n; i++) {
            double gt = g[t * n + i];
            dbk[i] += gt;
            for (int64_t j = 0; j < W; j++) {
                int64_t src = t - (W - 1) + j;
                if (src < 0) continue;
                dwk[i * W + j] += gt * xk[src * n + i];
                dxk[src * n + i] += gt * k->wk[i * W + j];
            }
        }
}

/* Backward of task k (channels c0 ..) for every batch row, in scratch mem. */
static void conv_bwd_task(const conv_dims *d, int64_t c0, double *mem, const chm_tensor *dx,
                          const chm_tensor *dw, const chm_tensor *dbias, const chm_tensor *dout,
                          const chm_tensor *x, const chm_tensor *w, const chm_tensor *bias,
                          bool silu) {
    int64_t T = d->T, C = d->C, W = d->W;
    conv_task k = {c0, min64(CONV_CB, C - c0), NULL, NULL};
    int64_t TN = T * k.n;
    double *xk = mem, *pre = xk + TN, *g = pre + TN, *dxk = g + TN;
    k.wk = dxk + TN;
    k.bk = k.wk + k.n * W;
    double *dwk = k.bk + k.n, *dbk = dwk + k.n * W;
    conv_load_params(d, &k, w, bias);
    memset(dwk, 0, (size_t)(k.n * W) * sizeof *dwk);
    memset(dbk, 0, (size_t)k.n * sizeof *dbk);
    for (int64_t b = 0; b < d->B; b++) {
        int64_t at = b * T * C + c0;
        chm_cpu_load_rows(xk, x, at, T, k.n, C);
        chm_cpu_load_rows(g, dout, at, T, k.n, C);
        conv_rows(pre, xk, &k, T, W);
        conv_rows_bwd(g, pre, xk, &k, silu, T, W, dxk, dwk, dbk);
        chm_cpu_store_rows(dx, at, T, k.n, C, dxk, true);
    }
    chm_cpu_store_rows(dw, c0 * W, 1, k.n * W, k.n * W, dwk, true);
    if (dbias) chm_cpu_store_rows(dbias, c0, 1, k.n, k.n, dbk, true);
}

chm_status chm_cpu_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx,
                                     const chm_tensor *dw, const chm_tensor *dbias,
                                     const chm_tensor *dout, const chm_tensor *x,
                                     const chm_tensor *w, const chm_tensor *bias, bool silu,
                                     bool dx_set) {
    conv_dims d;
    chm_status rc = conv_dims_of(be, "causal_conv1d_bwd", x, w, &d);
    if (!rc && dx_set) rc = chm_cpu_fill(be, dx, 0.0);  /* then accumulate onto zeros */
    if (rc) return rc;
    int64_t per = conv_scratch(&d, 4, 2);
    double *mem = chm_cpu_thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "causal_conv1d_bwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
    int64_t ntask = (d.C + CONV_CB - 1) / CONV_CB;
#pragma omp parallel for schedule(static) if (PAR_WORTH(d.B * d.T * d.C * d.W))
    for (int64_t t = 0; t < ntask; t++)
        conv_bwd_task(&d, t * CONV_CB, chm_cpu_my_scratch(mem, per), dx, dw, dbias, dout, x, w,
                      bias, silu);
    free(mem);
    return CHM_OK;
}
