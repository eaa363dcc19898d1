/*
 * rope.c: the cpu backend's rotary position embedding, forward and backward.
 *
 * x [B,T,H,D], D even, "rotate half": for i < D/2 the pair (x[i], x[i+D/2]) at
 * position p = t + pos_offset turns by the angle a = p * theta^(-2i/D):
 *   out[i] = x[i] cos a - x[i+D/2] sin a,  out[i+D/2] = x[i] sin a + x[i+D/2] cos a.
 * The backward is the transpose of that rotation, i.e. the rotation by -a, and
 * ACCUMULATES into dx. Angles, sines and cosines are computed in double, once
 * per (b, t, i) and reused across the H heads. The forward may run in place
 * (out == x): each pair is read before it is written.
 */
#include "cpu.h"

#include <math.h>

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 16384

/* out = R(sign * a) x per pair, or out += R(sign * a) x when acc; Tn is the T of [B,T,H,D]. */
#define ROPE_OP(T)                                                                                 \
    static void rope_##T(T *out, const T *x, int64_t B, int64_t Tn, int64_t H, int64_t D,          \
                         double theta, int64_t pos_offset, double sign, bool acc) {                \
        int64_t half = D / 2;                                                                      \
        _Pragma("omp parallel for schedule(static) if (B * Tn * H * D > PAR_MIN)")                 \
        for (int64_t bt = 0; bt < B * Tn; bt++) {                                                  \
            double p = (double)(bt % Tn + pos_offset);                                             \
            for (int64_t i = 0; i < half; i++) {                                                   \
                double a = p * pow(theta, -2.0 * (double)i / (double)D);                           \
                double c = cos(a), s = sign * sin(a);                                              \
                for (int64_t h = 0; h < H; h++) {                                                  \
                    int64_t j = (bt * H + h) * D + i;                                              \
                    double x0 = x[j], x1 = x[j + half];                                            \
                    double y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;                             \
                    out[j] = (T)(acc ? out[j] + y0 : y0);                                          \
                    out[j + half] = (T)(acc ? out[j + half] + y1 : y1);                            \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

ROPE_OP(float)
ROPE_OP(double)

/* Shared dispatch: forward (sign +1, written) and backward (sign -1, accumulated). */
static chm_status rope_run(chm_backend *be, const char *op, const chm_tensor *out,
                           const chm_tensor *x, double theta, int64_t pos_offset, double sign,
                           bool acc) {
    const int64_t *s = x->shape;
    switch (x->dtype) {
    case CHM_F32:
        rope_float(chm_cpu_ptr(out), chm_cpu_ptr(x), s[0], s[1], s[2], s[3], theta, pos_offset,
                   sign, acc);
        break;
    case CHM_F64:
        rope_double(chm_cpu_ptr(out), chm_cpu_ptr(x), s[0], s[1], s[2], s[3], theta,
                    pos_offset, sign, acc);
        break;
    default: return chm_cpu_bad_dtype(be, op, x->dtype);
    }
    return CHM_OK;
}

chm_status chm_cpu_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                            double theta, int64_t pos_offset) {
    return rope_run(be, "rope_fwd", out, x, theta, pos_offset, 1.0, false);
}

chm_status chm_cpu_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                            double theta, int64_t pos_offset) {
    return rope_run(be, "rope_bwd", dx, dout, theta, pos_offset, -1.0, true);
}
