/*
 * swiglu.c: the cpu backend's SwiGLU activation, forward and backward.
 *
 * gate, up, out: one shape (any), element by element, with s = sigmoid(gate):
 *   out = silu(gate) * up = gate * s * up
 * Backward ACCUMULATES, with g = dout:
 *   dgate += g * up * s * (1 + gate * (1 - s)),   dup += g * gate * s
 * All in double, rounded once per element. 1/(1+exp(-x)) is safe for any x in
 * double: exp overflows to inf and the sigmoid to 0, never to NaN.
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

chm_status chm_cpu_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                              const chm_tensor *up) {
    int64_t n = chm_tensor_numel(out);
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
                              const chm_tensor *up, bool accumulate) {
    int64_t n = chm_tensor_numel(dout);
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
