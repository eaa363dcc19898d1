/*
 * exp.c: the cpu backend's scaled exponential, forward and backward. The
 * Mamba mixer uses it for A = -exp(A_log).
 *
 *   forward:  out[n] = alpha * exp(x[n])      (out may alias x exactly)
 *   backward: dx[n] += dout[n] * out[n]       (d/dx alpha*exp(x) = out; ACCUMULATES)
 * Any shape; element by element in double, rounded once.
 */
#include "cpu.h"

#include <math.h>

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 32768

#define EXP_OPS(T)                                                                       \
    static void exp_fwd_##T(T *out, const T *x, double alpha, int64_t n) {               \
        _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")                    \
        for (int64_t i = 0; i < n; i++) out[i] = (T)(alpha * exp((double)x[i]));         \
    }                                                                                    \
    static void exp_bwd_##T(T *dx, const T *dout, const T *out, int64_t n) {             \
        _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")                    \
        for (int64_t i = 0; i < n; i++)                                                  \
            dx[i] = (T)((double)dx[i] + (double)dout[i] * (double)out[i]);               \
    }

EXP_OPS(float)
EXP_OPS(double)

chm_status chm_cpu_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                           double alpha) {
    int64_t n = chm_tensor_numel(x);
    switch (x->dtype) {
    case CHM_F32: exp_fwd_float(chm_cpu_ptr(out), chm_cpu_ptr(x), alpha, n); return CHM_OK;
    case CHM_F64: exp_fwd_double(chm_cpu_ptr(out), chm_cpu_ptr(x), alpha, n); return CHM_OK;
    default: return chm_cpu_bad_dtype(be, "exp_fwd", x->dtype);
    }
}

chm_status chm_cpu_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                           const chm_tensor *out) {
    int64_t n = chm_tensor_numel(out);
    switch (out->dtype) {
    case CHM_F32:
        exp_bwd_float(chm_cpu_ptr(dx), chm_cpu_ptr(dout), chm_cpu_ptr(out), n);
        return CHM_OK;
    case CHM_F64:
        exp_bwd_double(chm_cpu_ptr(dx), chm_cpu_ptr(dout), chm_cpu_ptr(out), n);
        return CHM_OK;
    default: return chm_cpu_bad_dtype(be, "exp_bwd", out->dtype);
    }
}
