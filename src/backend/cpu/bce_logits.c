/*
 * bce_logits.c: the cpu backend's binary cross-entropy with logits, the
 * mixture-of-depths router's auxiliary loss (sigmoid(score) learns to
 * predict whether the token was selected).
 *
 * Per element r of logits x [R] and targets y [R] (same float dtype, y in [0,1]):
 *   losses[r]  = softplus(x) - y*x = max(x,0) - x*y + log1p(exp(-|x|))
 *   dlogits[r] = grad_scale * (sigmoid(x) - y)
 * losses are chm_dtype_stats(dtype). dlogits is WRITTEN (not accumulated),
 * like cross_entropy's, may be NULL, and may be logits itself (each element
 * is read before it is written, by the same iteration). Both forms are
 * stable for any finite x.
 */
#include "cpu.h"

#include <math.h>

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 32768

static inline double bce_sigmoid(double x) {
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

/* loss element type L (stats dtype) and logit type T */
#define BCE_OPS(T, L)                                                                        \
    static void bce_##T(L *loss, T *dx, const T *x, const T *y, double scale, int64_t n) {   \
        _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")                        \
        for (int64_t i = 0; i < n; i++) {                                                    \
            double xi = (double)x[i], yi = (double)y[i];                                     \
            loss[i] = (L)(fmax(xi, 0.0) - xi * yi + log1p(exp(-fabs(xi))));                  \
            if (dx) dx[i] = (T)(scale * (bce_sigmoid(xi) - yi));                             \
        }                                                                                    \
    }

BCE_OPS(float, float)
BCE_OPS(double, double)

chm_status chm_cpu_bce_logits(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                              const chm_tensor *logits, const chm_tensor *targets,
                              double grad_scale) {
    int64_t n = chm_tensor_numel(logits);
    switch (logits->dtype) {
    case CHM_F32:
        bce_float(chm_cpu_ptr(losses), dlogits ? chm_cpu_ptr(dlogits) : NULL, chm_cpu_ptr(logits),
                  chm_cpu_ptr(targets), grad_scale, n);
        return CHM_OK;
    case CHM_F64:
        bce_double(chm_cpu_ptr(losses), dlogits ? chm_cpu_ptr(dlogits) : NULL,
                   chm_cpu_ptr(logits), chm_cpu_ptr(targets), grad_scale, n);
        return CHM_OK;
    default: return chm_cpu_bad_dtype(be, "bce_logits", logits->dtype);
    }
}
