/*
 * rmsnorm.c: the cpu backend's RMSNorm over the last dim, forward and backward.
 *
 * x [R,C] (the rows of any tensor), w [C], rstd [R] (stats dtype, which is the
 * tensor dtype on the cpu):
 *   rstd[r] = 1 / sqrt(mean_c x[r,c]^2 + eps),  out[r,c] = x[r,c] * rstd[r] * w[c].
 * Backward, with g = dout and the saved rstd (r below), ACCUMULATES:
 *   dx[r,c] += r*w[c]*g[r,c] - x[r,c] * r^3/C * sum_j g[r,j]*w[j]*x[r,j]
 *   dw[c]   += sum_r g[r,c] * x[r,c] * r
 * Sums run in double. Rows are independent (one per iteration); dw sums each
 * column over the rows in order, so no result depends on the thread count.
 */
#include "cpu.h"

#include <math.h>

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 16384

#define RMSNORM_OPS(T)                                                                             \
    static void rmsnorm_fwd_##T(T *out, T *rstd, const T *x, const T *w, int64_t R,                \
                                int64_t C, double eps) {                                           \
        _Pragma("omp parallel for schedule(static) if (R * C > PAR_MIN)")                          \
        for (int64_t r = 0; r < R; r++) {                                                          \
            const T *xr = x + r * C;                                                               \
            double ss = 0;                                                                         \
            for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c];                           \
            double rs = 1.0 / sqrt(ss / (double)C + eps);                                          \
            rstd[r] = (T)rs;                                                                       \
            for (int64_t c = 0; c < C; c++) out[r * C + c] = (T)(xr[c] * rs * w[c]);               \
        }                                                                                          \
    }                                                                                              \
    static void rmsnorm_dx_##T(T *dx, const T *g, const T *x, const T *w,                          \
                               const T *rstd, int64_t R, int64_t C) {                              \
        _Pragma("omp parallel for schedule(static) if (R * C > PAR_MIN)")                          \
        for (int64_t r = 0; r < R; r++) {                                                          \
            const T *gr = g + r * C, *xr = x + r * C;                                              \
            double rs = rstd[r], dot = 0;                                                          \
            for (int64_t c = 0; c < C; c++) dot += (double)gr[c] * w[c] * xr[c];                   \
            double coef = rs * rs * rs * dot / (double)C;                                          \
            for (int64_t c = 0; c < C; c++)                                                        \
                dx[r * C + c] = (T)(dx[r * C + c] + rs * w[c] * gr[c] - coef * xr[c]);             \
        }                                                                                          \
    }                                                                                              \
    static void rmsnorm_dw_##T(T *dw, const T *g, const T *x, const T *rstd,                       \
                               int64_t R, int64_t C) {                                             \
        _Pragma("omp parallel for schedule(static) if (R * C > PAR_MIN)")                          \
        for (int64_t c = 0; c < C; c++) {                                                          \
            double s = 0;                                                                          \
            for (int64_t r = 0; r < R; r++)                                                        \
                s += (double)g[r * C + c] * x[r * C + c] * rstd[r];                                \
            dw[c] = (T)(dw[c] + s);                                                                \
        }                                                                                          \
    }

RMSNORM_OPS(float)
RMSNORM_OPS(double)

chm_status chm_cpu_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                               const chm_tensor *x, const chm_tensor *w, double eps) {
    int64_t R = chm_tensor_rows(x), C = chm_tensor_cols(x);
    switch (x->dtype) {
    case CHM_F32:
        rmsnorm_fwd_float(chm_cpu_ptr(out), chm_cpu_ptr(rstd), chm_cpu_ptr(x), chm_cpu_ptr(w),
                          R, C, eps);
        break;
    case CHM_F64:
        rmsnorm_fwd_double(chm_cpu_ptr(out), chm_cpu_ptr(rstd), chm_cpu_ptr(x), chm_cpu_ptr(w),
                           R, C, eps);
        break;
    default: return chm_cpu_bad_dtype(be, "rmsnorm_fwd", x->dtype);
    }
    return CHM_OK;
}

chm_status chm_cpu_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                               const chm_tensor *dout, const chm_tensor *x,
                               const chm_tensor *w, const chm_tensor *rstd) {
    int64_t R = chm_tensor_rows(x), C = chm_tensor_cols(x);
    switch (x->dtype) {
    case CHM_F32:
        rmsnorm_dx_float(chm_cpu_ptr(dx), chm_cpu_ptr(dout), chm_cpu_ptr(x), chm_cpu_ptr(w),
                         chm_cpu_ptr(rstd), R, C);
        rmsnorm_dw_float(chm_cpu_ptr(dw), chm_cpu_ptr(dout), chm_cpu_ptr(x), chm_cpu_ptr(rstd),
                         R, C);
        break;
    case CHM_F64:
        rmsnorm_dx_double(chm_cpu_ptr(dx), chm_cpu_ptr(dout), chm_cpu_ptr(x), chm_cpu_ptr(w),
                          chm_cpu_ptr(rstd), R, C);
        rmsnorm_dw_double(chm_cpu_ptr(dw), chm_cpu_ptr(dout), chm_cpu_ptr(x), chm_cpu_ptr(rstd),
                          R, C);
        break;
    default: return chm_cpu_bad_dtype(be, "rmsnorm_bwd", x->dtype);
    }
    return CHM_OK;
}
