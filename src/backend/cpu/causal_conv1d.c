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

/* dst[rows, cols] = t's elements at `at + r*stride + c`, as doubles. */
static void load_rows(double *dst, const chm_tensor *t, int64_t at, int64_t rows, int64_t cols,
                      int64_t stride) {
    if (t->dtype == CHM_F64) {
        const double *p = (const double *)chm_cpu_ptr(t) + at;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = p[r * stride + c];
    } else {
        const float *p = (const float *)chm_cpu_ptr(t) + at;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = p[r * stride + c];
    }
}

/* The inverse of load_rows: set (add == false) or add into t, rounding once. */
static void store_rows(const chm_tensor *t, int64_t at, int64_t rows, int64_t cols,
                       int64_t stride, const double *src, bool add) {
    if (t->dtype == CHM_F64) {
        double *p = (double *)chm_cpu_ptr(t) + at;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                p[r * stride + c] = (add ? p[r * stride + c] : 0.0) + src[r * cols + c];
    } else {
        float *p = (float *)chm_cpu_ptr(t) + at;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                p[r * stride + c] = (float)((add ? (double)p[r * stride + c] : 0.0) +
                                            src[r * cols + c]);
    }
}

/* Scratch of `per` doubles for each thread of the next parallel region, or NULL. */
static double *thread_scratch(int64_t per) {
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    return malloc((size_t)(nt * per + 1) * sizeof(double));
}

/* This thread's slice of thread_scratch. */
static double *my_scratch(double *mem, int64_t per) {
    int id = 0;
#ifdef _OPENMP
    id = omp_get_thread_num();
#endif
    return mem + id * per;
}

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
    load_rows(wc, w, c * d->W, 1, d->W, d->W);
    *bc = 0;
    if (bias) load_rows(bc, bias, c, 1, 1, 1);
}

/* Forward of channel c for every batch row, in scratch mem (2T + W doubles). */
static void conv_fwd_channel(const conv_dims *d, int64_t c, double *mem, const chm_tensor *out,
                             const chm_tensor *x, const chm_tensor *w, const chm_tensor *bias,
                             bool silu) {
    int64_t T = d->T, C = d->C;
    double *xc = mem, *pre = xc + T, *wc = pre + T, bc;
    conv_load_params(d, c, w, bias, wc, &bc);
    for (int64_t b = 0; b < d->B; b++) {
        load_rows(xc, x, b * T * C + c, T, 1, C);
        conv_column(pre, xc, wc, bc, T, d->W);
        if (silu)
            for (int64_t t = 0; t < T; t++) pre[t] *= sigmoid(pre[t]);
        store_rows(out, b * T * C + c, T, 1, C, pre, false);
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
    double *mem = thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "causal_conv1d_fwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.C; c++)
        conv_fwd_channel(&d, c, my_scratch(mem, per), out, x, w, bias, silu);
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
        load_rows(xc, x, at, T, 1, C);
        load_rows(g, dout, at, T, 1, C);
        conv_column(pre, xc, wc, bc, T, W);
        conv_column_bwd(g, pre, xc, wc, silu, T, W, dxc, dwc, &dbc);
        store_rows(dx, at, T, 1, C, dxc, true);
    }
    store_rows(dw, c * W, 1, W, W, dwc, true);
    if (dbias) store_rows(dbias, c, 1, 1, 1, &dbc, true);
}

chm_status chm_cpu_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx,
                                     const chm_tensor *dw, const chm_tensor *dbias,
                                     const chm_tensor *dout, const chm_tensor *x,
                                     const chm_tensor *w, const chm_tensor *bias, bool silu) {
    conv_dims d;
    chm_status rc = conv_dims_of(be, "causal_conv1d_bwd", x, w, &d);
    if (rc) return rc;
    int64_t per = 4 * d.T + 2 * d.W;
    double *mem = thread_scratch(per);
    if (!mem)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                       "causal_conv1d_bwd: cannot allocate %lld doubles of scratch per thread",
                       (long long)per);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.C; c++)
        conv_bwd_channel(&d, c, my_scratch(mem, per), dx, dw, dbias, dout, x, w, bias, silu);
    free(mem);
    return CHM_OK;
}
