/*
 * causal_conv1d.c: depthwise causal convolution over time on the cpu (reference).
 *
 * x, out [B,T,C], w [C,W], bias [C] optional:
 *   pre[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-(W-1)+j, c]  (x is 0 before t = 0)
 *   out = silu(pre) when silu is set, else pre.
 * Work is split over channels: a channel's columns are gathered into doubles,
 * computed there and written back once, so one code path serves f32 and f64.
 * The backward ACCUMULATES (+=) into dx, dw and dbias; each channel owns its
 * slice of all three and sums over the batch in order, so there are no races
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

/* Sizes of one call. */
typedef struct conv_dims {
    int64_t B, T, C, W;
} conv_dims;

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* pre[T] of one column xc[T] with taps wc[W] and bias bc. */
static void conv_column(double *pre, const double *xc, const double *wc, double bc, int64_t T,
                        int64_t W) {
    for (int64_t t = 0; t < T; t++) {
        double s = bc;
        for (int64_t j = 0; j < W; j++) {
            int64_t src = t - (W - 1) + j;
            if (src >= 0) s += wc[j] * xc[src];
        }
        pre[t] = s;
    }
}

/* Taps and bias of channel c (bias 0 when absent) into wc[W] and *bc. */
static void conv_load_params(const conv_dims *d, int64_t c, const chm_tensor *w,
                             const chm_tensor *bias, double *wc, double *bc) {
    chm_cpu_load_rows(wc, w, c * d->W, 1, d->W, d->W);
    *bc = 0;
    if (bias) chm_cpu_load_rows(bc, bias, c, 1, 1, 1);
}

/* Forward of channel c for every batch row, in scratch mem (2T + W doubles). */
static void conv_fwd_channel(const conv_dims *d, int64_t c, double *mem, const chm_tensor *out,
                             const chm_tensor *x, const chm_tensor *w, const chm_tensor *bias,
                             bool silu) {
    int64_t T = d->T, C = d->C;
    double *xc = mem, *pre = xc + T, *wc = pre + T, bc;
    conv_load_params(d, c, w, bias, wc, &bc);
    for (int64_t b = 0; b < d->B; b++) {
        chm_cpu_load_rows(xc, x, b * T * C + c, T, 1, C);
        conv_column(pre, xc, wc, bc, T, d->W);
        if (silu)
            for (int64_t t = 0; t < T; t++) pre[t] *= sigmoid(pre[t]);
        chm_cpu_store_rows(out, b * T * C + c, T, 1, C, pre, false);
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
    int64_t per = 2 * d.T + d.W;
    double *mem = chm_cpu_thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "causal_conv1d_fwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
#pragma omp parallel for schedule(static) if (PAR_WORTH(d.B * d.T * d.C * d.W))
    for (int64_t c = 0; c < d.C; c++)
        conv_fwd_channel(&d, c, chm_cpu_my_scratch(mem, per), out, x, w, bias, silu);
    free(mem);
    return CHM_OK;
}

/*
 * Backward of one column: g[T] = dL/dpre (overwritten from dL/dout when silu),
 * dxc[T] is set, dwc[W] and *dbc accumulate.
 */
static void conv_column_bwd(double *g, const double *pre, const double *xc, const double *wc,
                            bool silu, int64_t T, int64_t W, double *dxc, double *dwc,
                            double *dbc) {
    if (silu)
        for (int64_t t = 0; t < T; t++) {
            double s = sigmoid(pre[t]);
            g[t] *= s * (1.0 + pre[t] * (1.0 - s));
        }
    memset(dxc, 0, (size_t)T * sizeof *dxc);
    for (int64_t t = 0; t < T; t++) {
        *dbc += g[t];
        for (int64_t j = 0; j < W; j++) {
            int64_t src = t - (W - 1) + j;
            if (src < 0) continue;
            dwc[j] += g[t] * xc[src];
            dxc[src] += g[t] * wc[j];
        }
    }
}

/* Backward of channel c for every batch row, in scratch mem (4T + 2W doubles). */
static void conv_bwd_channel(const conv_dims *d, int64_t c, double *mem, const chm_tensor *dx,
                             const chm_tensor *dw, const chm_tensor *dbias,
                             const chm_tensor *dout, const chm_tensor *x, const chm_tensor *w,
                             const chm_tensor *bias, bool silu) {
    int64_t T = d->T, C = d->C, W = d->W;
    double *xc = mem, *pre = xc + T, *g = pre + T, *dxc = g + T, *wc = dxc + T, *dwc = wc + W;
    double bc, dbc = 0;
    conv_load_params(d, c, w, bias, wc, &bc);
    memset(dwc, 0, (size_t)W * sizeof *dwc);
    for (int64_t b = 0; b < d->B; b++) {
        int64_t at = b * T * C + c;
        chm_cpu_load_rows(xc, x, at, T, 1, C);
        chm_cpu_load_rows(g, dout, at, T, 1, C);
        conv_column(pre, xc, wc, bc, T, W);
        conv_column_bwd(g, pre, xc, wc, silu, T, W, dxc, dwc, &dbc);
        chm_cpu_store_rows(dx, at, T, 1, C, dxc, true);
    }
    chm_cpu_store_rows(dw, c * W, 1, W, W, dwc, true);
    if (dbias) chm_cpu_store_rows(dbias, c, 1, 1, 1, &dbc, true);
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
    int64_t per = 4 * d.T + 2 * d.W;
    double *mem = chm_cpu_thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "causal_conv1d_bwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
#pragma omp parallel for schedule(static) if (PAR_WORTH(d.B * d.T * d.C * d.W))
    for (int64_t c = 0; c < d.C; c++)
        conv_bwd_channel(&d, c, chm_cpu_my_scratch(mem, per), dx, dw, dbias, dout, x, w, bias, silu);
    free(mem);
    return CHM_OK;
}
