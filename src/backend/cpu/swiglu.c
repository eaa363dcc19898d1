/*
 * swiglu.c: the cpu backend's SwiGLU activation, forward and backward.
 *
 * gate, up, out: one shape (any), element by element, with s = sigmoid(gate):
 *   out = silu(gate) * up = gate * s * up
 * Backward ACCUMULATES, with g = dout:
 *   dgate += g * up * s * (1 + gate * (1 - s)),   dup += g * gate * s
 * All in double, rounded once per element. 1/(1+exp(-x)) is safe for any x in
 * double: exp overflows to inf and the sigmoid to 0, never to NaN.
 * The tail-zero forms ([E,cap,F] with counts) compute every row like the plain
 * ones, after checking their promise: gate and up zero on the rows >= counts[e]
 * (and dout finite there), so that a backend that skips those rows agrees.
 */
#include "cpu.h"

#include <math.h>

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 16384

static inline double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

#define SWIGLU_OPS(T)                                                                              \
    static void swiglu_fwd_##T(T *out, const T *gate, const T *up, int64_t n) {                    \
        _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")                              \
        for (int64_t i = 0; i < n; i++) {                                                          \
            double g = gate[i];                                                                    \
            out[i] = (T)(g * sigmoid(g) * up[i]);                                                  \
        }                                                                                          \
    }                                                                                              \
    static void swiglu_bwd_##T(T *dgate, T *dup, const T *dout, const T *gate, const T *up,        \
                               int64_t n, bool acc) {                                              \
        _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")                              \
        for (int64_t i = 0; i < n; i++) {                                                          \
            double g = gate[i], s = sigmoid(g), d = dout[i];                                       \
            double dg = d * up[i] * s * (1.0 + g * (1.0 - s)), du = d * g * s;                     \
            dgate[i] = (T)(acc ? dgate[i] + dg : dg);                                              \
            dup[i] = (T)(acc ? dup[i] + du : du);                                                  \
        }                                                                                          \
    }

SWIGLU_OPS(float)
SWIGLU_OPS(double)

/* Element i of an f32 or f64 tensor. */
static double elem_at(const chm_tensor *t, int64_t i) {
    return t->dtype == CHM_F64 ? ((const double *)chm_cpu_ptr(t))[i]
                               : (double)((const float *)chm_cpu_ptr(t))[i];
}

/* The tail-zero promise on gate and up ([E,cap,F]) and, when given, dout: an error naming the
   first element past counts[e] that breaks it (or a count outside [0, cap]). */
static chm_status check_tail(chm_backend *be, const char *op, const chm_tensor *counts,
                             const chm_tensor *gate, const chm_tensor *up,
                             const chm_tensor *dout) {
    const int32_t *cnt = chm_cpu_ptr(counts);
    int64_t E = gate->shape[0], cap = gate->shape[1], F = gate->shape[2];
    for (int64_t e = 0; e < E; e++) {
        if (cnt[e] < 0 || cnt[e] > cap)
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "%s: counts[%lld] = %d is outside [0, %lld]", op, (long long)e, cnt[e],
                           (long long)cap);
        for (int64_t i = (e * cap + cnt[e]) * F; i < (e + 1) * cap * F; i++) {
            double g = elem_at(gate, i), u = elem_at(up, i), d = dout ? elem_at(dout, i) : 0.0;
            if (g != 0.0 || u != 0.0 || !isfinite(d))
                return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                               "%s: row %lld of group %lld lies past counts[%lld] = %d, but its "
                               "element %lld has gate %g, up %g%s%g: the tail-zero form promises "
                               "zero gate and up (and a finite dout) there",
                               op, (long long)(i / F % cap), (long long)e, (long long)e, cnt[e],
                               (long long)(i % F), g, u, dout ? ", dout " : "", d);
        }
    }
    return CHM_OK;
}

chm_status chm_cpu_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                              const chm_tensor *up, const chm_tensor *counts) {
    int64_t n = chm_tensor_numel(out);
    chm_status rc = CHM_OK;
    if (counts && (out->dtype == CHM_F32 || out->dtype == CHM_F64))
        rc = check_tail(be, "swiglu_fwd", counts, gate, up, NULL);
    if (rc) return rc;
    switch (out->dtype) {
    case CHM_F32:
        swiglu_fwd_float(chm_cpu_ptr(out), chm_cpu_ptr(gate), chm_cpu_ptr(up), n);
        break;
    case CHM_F64:
        swiglu_fwd_double(chm_cpu_ptr(out), chm_cpu_ptr(gate), chm_cpu_ptr(up), n);
        break;
    default: return chm_cpu_bad_dtype(be, "swiglu_fwd", out->dtype);
    }
    return CHM_OK;
}

chm_status chm_cpu_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                              const chm_tensor *dout, const chm_tensor *gate,
                              const chm_tensor *up, bool accumulate, const chm_tensor *counts) {
    int64_t n = chm_tensor_numel(dout);
    chm_status rc = CHM_OK;
    if (counts && (dout->dtype == CHM_F32 || dout->dtype == CHM_F64))
        rc = check_tail(be, "swiglu_bwd", counts, gate, up, dout);
    if (rc) return rc;
    switch (dout->dtype) {
    case CHM_F32:
        swiglu_bwd_float(chm_cpu_ptr(dgate), chm_cpu_ptr(dup), chm_cpu_ptr(dout),
                         chm_cpu_ptr(gate), chm_cpu_ptr(up), n, accumulate);
        break;
    case CHM_F64:
        swiglu_bwd_double(chm_cpu_ptr(dgate), chm_cpu_ptr(dup), chm_cpu_ptr(dout),
                          chm_cpu_ptr(gate), chm_cpu_ptr(up), n, accumulate);
        break;
    default: return chm_cpu_bad_dtype(be, "swiglu_bwd", dout->dtype);
    }
    return CHM_OK;
}
