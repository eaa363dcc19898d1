/*
 * selective_scan_step.c: the cpu backend's Mamba-1 selective scan continued
 * from a saved state (incremental decoding, forward only).
 *
 * Same arguments and recurrence as selective_scan_fwd (selective_scan.c,
 * backend.h), except that the state starts at h [B,Di,N] instead of zero and
 * the state after the last of the T steps is written back into h:
 *   h[c,n] <- exp(d[t,c]*A[c,n]) * h[c,n] + d[t,c]*Bm[t,n]*u[t,c]
 *   y[t,c]  = (sum_n Cm[t,n]*h[c,n] + D[c]*u[t,c]) * silu(z[t,c])
 * with d = softplus(delta + delta_bias) (or without the softplus). One task
 * per (b, c); sums in double.
 */
#include "cpu.h"

#include <math.h>

static double step_softplus(double x) { return x < 20.0 ? log1p(exp(x)) : x; }

/* Element i of an optional tensor as a double (0 when absent). */
#define OPT(T, t, i) ((t) ? (double)((const T *)chm_cpu_ptr(t))[i] : 0.0)

#define SCAN_STEP(T)                                                                           \
    static void scan_step_##T(T *y, T *h, const chm_scan_args *a, int64_t B, int64_t L,        \
                              int64_t Di, int64_t N) {                                         \
        const T *u = chm_cpu_ptr(a->u), *dl = chm_cpu_ptr(a->delta), *A = chm_cpu_ptr(a->A);   \
        const T *Bm = chm_cpu_ptr(a->Bm), *Cm = chm_cpu_ptr(a->Cm);                            \
        _Pragma("omp parallel for schedule(static) if (B * Di * L * N > 32768)")               \
        for (int64_t task = 0; task < B * Di; task++) {                                        \
            int64_t b = task / Di, c = task % Di;                                              \
            T *hc = h + task * N;                                                              \
            for (int64_t t = 0; t < L; t++) {                                                  \
                int64_t ti = (b * L + t) * Di + c, tn = (b * L + t) * N;                       \
                double x = (double)dl[ti] + OPT(T, a->delta_bias, c);                          \
                double dt = a->delta_softplus ? step_softplus(x) : x, uu = (double)u[ti];      \
                double acc = OPT(T, a->D, c) * uu;                                             \
                for (int64_t n = 0; n < N; n++) {                                              \
                    double hn = exp(dt * (double)A[c * N + n]) * (double)hc[n] +               \
                                dt * (double)Bm[tn + n] * uu;                                  \
                    hc[n] = (T)hn;                                                             \
                    acc += (double)Cm[tn + n] * hn;                                            \
                }                                                                              \
                if (a->z) {                                                                    \
                    double zz = OPT(T, a->z, ti);                                              \
                    acc *= zz / (1.0 + exp(-zz));                                              \
                }                                                                              \
                y[ti] = (T)acc;                                                                \
            }                                                                                  \
        }                                                                                      \
    }

SCAN_STEP(float)
SCAN_STEP(double)

chm_status chm_cpu_selective_scan_step(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                       const chm_scan_args *a) {
    int64_t B = a->u->shape[0], L = a->u->shape[1], Di = a->u->shape[2], N = a->A->shape[1];
    switch (a->u->dtype) {
    case CHM_F32: scan_step_float(chm_cpu_ptr(y), chm_cpu_ptr(h), a, B, L, Di, N); return CHM_OK;
    case CHM_F64: scan_step_double(chm_cpu_ptr(y), chm_cpu_ptr(h), a, B, L, Di, N); return CHM_OK;
    default: return chm_cpu_bad_dtype(be, "selective_scan_step", a->u->dtype);
    }
}
