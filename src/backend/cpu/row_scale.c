/*
 * row_scale.c: the cpu backend's row scaling, forward and backward, used by
 * mixture-of-depths (a routed layer's output times sigmoid(router score)) and
 * by the MoE combine backward (an expert output row times its gate).
 *
 * x, out, dout, dx [M,C]; s, ds [M]; f(s) = sigmoid(s) when `sigmoid`, else s:
 *   forward:  out[m,c] = f(s[m]) * x[m,c]           (out may alias x exactly)
 *   backward: dx[m,c] += f(s[m]) * dout[m,c]
 *             ds[m]   += f'(s[m]) * sum_c dout[m,c] * x[m,c]
 * The backward ACCUMULATES into dx and ds (each optional). Row sums run over
 * c in order in double, one row per iteration, so results do not depend on
 * the thread count.
 */
#include "cpu.h"

#include <math.h>

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 32768

/* f(s) and f'(s) of the row factor. */
static inline double factor(double s, bool sig) { return sig ? 1.0 / (1.0 + exp(-s)) : s; }
static inline double factor_grad(double s, bool sig) {
    double f = factor(s, sig);
    return sig ? f * (1.0 - f) : 1.0;
}

#define ROW_SCALE_OPS(T)                                                                       \
    static void row_scale_fwd_##T(T *out, const T *x, const T *s, int64_t M, int64_t C,        \
                                  bool sig) {                                                  \
        _Pragma("omp parallel for schedule(static) if (M * C > PAR_MIN)")                      \
        for (int64_t m = 0; m < M; m++) {                                                      \
            double f = factor((double)s[m], sig);                                              \
            for (int64_t c = 0; c < C; c++) out[m * C + c] = (T)(f * (double)x[m * C + c]);    \
        }                                                                                      \
    }                                                                                          \
    static void row_scale_bwd_##T(T *dx, T *ds, const T *dout, const T *x, const T *s,         \
                                  int64_t M, int64_t C, bool sig) {                            \
        _Pragma("omp parallel for schedule(static) if (M * C > PAR_MIN)")                      \
        for (int64_t m = 0; m < M; m++) {                                                      \
            double f = factor((double)s[m], sig), dot = 0;                                     \
            const T *g = dout + m * C;                                                         \
            for (int64_t c = 0; c < C && dx; c++)                                              \
                dx[m * C + c] = (T)((double)dx[m * C + c] + f * (double)g[c]);                 \
            if (!ds) continue;                                                                 \
            for (int64_t c = 0; c < C; c++) dot += (double)g[c] * (double)x[m * C + c];        \
            ds[m] = (T)((double)ds[m] + factor_grad((double)s[m], sig) * dot);                 \
        }                                                                                      \
    }

ROW_SCALE_OPS(float)
ROW_SCALE_OPS(double)

chm_status chm_cpu_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                 const chm_tensor *s, bool sigmoid) {
    int64_t M = x->shape[0], C = x->shape[1];
    switch (x->dtype) {
    case CHM_F32:
        row_scale_fwd_float(chm_cpu_ptr(out), chm_cpu_ptr(x), chm_cpu_ptr(s), M, C, sigmoid);
        return CHM_OK;
    case CHM_F64:
        row_scale_fwd_double(chm_cpu_ptr(out), chm_cpu_ptr(x), chm_cpu_ptr(s), M, C, sigmoid);
        return CHM_OK;
    default: return chm_cpu_bad_dtype(be, "row_scale_fwd", x->dtype);
    }
}

chm_status chm_cpu_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                 const chm_tensor *dout, const chm_tensor *x,
                                 const chm_tensor *s, bool sigmoid, bool set) {
    int64_t M = x->shape[0], C = x->shape[1];
    if (set) { /* written: zeros first, then the accumulating loops below */
        chm_status rc = dx ? chm_cpu_fill(be, dx, 0.0) : CHM_OK;
        if (!rc && ds) rc = chm_cpu_fill(be, ds, 0.0);
        if (rc) return rc;
    }
    switch (x->dtype) {
    case CHM_F32:
        row_scale_bwd_float(dx ? chm_cpu_ptr(dx) : NULL, ds ? chm_cpu_ptr(ds) : NULL,
                            chm_cpu_ptr(dout), chm_cpu_ptr(x), chm_cpu_ptr(s), M, C, sigmoid);
        return CHM_OK;
    case CHM_F64:
        row_scale_bwd_double(dx ? chm_cpu_ptr(dx) : NULL, ds ? chm_cpu_ptr(ds) : NULL,
                             chm_cpu_ptr(dout), chm_cpu_ptr(x), chm_cpu_ptr(s), M, C, sigmoid);
        return CHM_OK;
    default: return chm_cpu_bad_dtype(be, "row_scale_bwd", x->dtype);
    }
}
