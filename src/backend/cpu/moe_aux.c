/*
 * moe_aux.c: the cpu backend's MoE auxiliary losses, forward and backward in
 * one pass: the Switch load-balancing loss and the ST-MoE router z-loss.
 *
 * logits z [R,E] (the router's, softmax scores p = softmax(z) per row),
 * idx [R,K] (I32, the experts each row was routed to, before capacity):
 *   f_e = (number of k with idx[r,k] = e, over all r) / (R*K)
 *   P_e = (1/R) sum_r p[r,e]
 *   losses[0] = balance = E * sum_e f_e * P_e        (1 when perfectly balanced)
 *   losses[1] = z       = (1/R) sum_r lse_r^2,  lse_r = logsumexp_e z[r,e]
 * f is a constant of the routing (no gradient). With g_e = E * f_e / R,
 *   dz[r,j] += balance_scale * p[r,j] * (g_j - sum_e p[r,e] g_e)
 *            + z_scale * 2 * lse_r * p[r,j] / R
 * losses (stats dtype) are WRITTEN; dlogits (optional) ACCUMULATES.
 * The column sums P_e run over rows in order, in double, on one thread; the
 * gradient rows are independent and run in parallel: deterministic.
 * idx entries outside [0, E) fail with CHM_ERR_INVALID_ARG before any write.
 */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 32768

/* The statistics of one call. */
typedef struct aux_stats {
    double *f, *P, *g;  /* [E] each: routed fraction, mean prob, balance gradient weight */
    double balance, z;
} aux_stats;

/* aux_lse: logsumexp of one row z [E]; aux_probs, aux_grad: see the file comment. */
#define AUX_OPS(T)                                                                           \
    static double aux_lse_##T(const T *z, int64_t E) {                                       \
        double mx = -INFINITY, s = 0;                                                        \
        for (int64_t e = 0; e < E; e++) mx = fmax(mx, (double)z[e]);                         \
        for (int64_t e = 0; e < E; e++) s += exp((double)z[e] - mx);                         \
        return mx + log(s);                                                                  \
    }                                                                                        \
    /* P and the z-loss over all rows, in row order. */                                      \
    static void aux_probs_##T(aux_stats *st, const T *z, int64_t R, int64_t E) {             \
        for (int64_t r = 0; r < R; r++) {                                                    \
            double l = aux_lse_##T(z + r * E, E);                                            \
            st->z += l * l / (double)R;                                                      \
            for (int64_t e = 0; e < E; e++)                                                  \
                st->P[e] += exp((double)z[r * E + e] - l) / (double)R;                       \
        }                                                                                    \
    }                                                                                        \
    static void aux_grad_##T(T *dz, const T *z, const aux_stats *st, int64_t R, int64_t E,   \
                             double bs, double zs) {                                         \
        _Pragma("omp parallel for schedule(static) if (R * E > PAR_MIN)")                    \
        for (int64_t r = 0; r < R; r++) {                                                    \
            const T *zr = z + r * E;                                                         \
            double l = aux_lse_##T(zr, E), pg = 0;                                           \
            for (int64_t e = 0; e < E; e++) pg += exp((double)zr[e] - l) * st->g[e];         \
            for (int64_t j = 0; j < E; j++) {                                                \
                double p = exp((double)zr[j] - l);                                           \
                double d = bs * p * (st->g[j] - pg) + zs * 2.0 * l * p / (double)R;          \
                dz[r * E + j] = (T)((double)dz[r * E + j] + d);                              \
            }                                                                                \
        }                                                                                    \
    }

AUX_OPS(float)
AUX_OPS(double)

/* losses [2] (f32 or f64) = {balance, z}. */
static void store_losses(const chm_tensor *losses, double balance, double z) {
    if (losses->dtype == CHM_F64) {
        double *l = chm_cpu_ptr(losses);
        l[0] = balance, l[1] = z;
    } else {
        float *l = chm_cpu_ptr(losses);
        l[0] = (float)balance, l[1] = (float)z;
    }
}

/* f from idx; fails on an entry that names no expert. */
static chm_status aux_fractions(chm_backend *be, aux_stats *st, const int32_t *ix, int64_t R,
                                int64_t K, int64_t E) {
    for (int64_t i = 0; i < R * K; i++) {
        if (ix[i] < 0 || ix[i] >= E)
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "moe_aux: idx element %lld = %d is not an expert in [0, %lld)",
                           (long long)i, (int)ix[i], (long long)E);
        st->f[ix[i]] += 1.0 / (double)(R * K);
    }
    return CHM_OK;
}

chm_status chm_cpu_moe_aux(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                           const chm_tensor *logits, const chm_tensor *idx, double balance_scale,
                           double z_scale) {
    int64_t R = logits->shape[0], E = logits->shape[1], K = idx->shape[1];
    if (logits->dtype != CHM_F32 && logits->dtype != CHM_F64)
        return chm_cpu_bad_dtype(be, "moe_aux", logits->dtype);
    aux_stats st = {calloc((size_t)E, sizeof(double)), calloc((size_t)E, sizeof(double)),
                    calloc((size_t)E, sizeof(double)), 0, 0};
    chm_status rc = CHM_OK;
    if (!st.f || !st.P || !st.g)
        rc = CHM_ERR(&be->err, CHM_ERR_NOMEM, "moe_aux: no memory for %lld experts", (long long)E);
    if (rc == CHM_OK) rc = aux_fractions(be, &st, chm_cpu_ptr(idx), R, K, E);
    if (rc == CHM_OK) {
        bool f64 = logits->dtype == CHM_F64;
        if (f64) aux_probs_double(&st, chm_cpu_ptr(logits), R, E);
        else aux_probs_float(&st, chm_cpu_ptr(logits), R, E);
        for (int64_t e = 0; e < E; e++) {
            st.balance += (double)E * st.f[e] * st.P[e];
            st.g[e] = (double)E * st.f[e] / (double)R;
        }
        store_losses(losses, st.balance, st.z);
        if (dlogits && f64)
            aux_grad_double(chm_cpu_ptr(dlogits), chm_cpu_ptr(logits), &st, R, E, balance_scale,
                            z_scale);
        else if (dlogits)
            aux_grad_float(chm_cpu_ptr(dlogits), chm_cpu_ptr(logits), &st, R, E, balance_scale,
                           z_scale);
    }
    free(st.f);
    free(st.P);
    free(st.g);
    return rc;
}
