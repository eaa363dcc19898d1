/*
 * cross_entropy.c: fused cross-entropy over the vocabulary on the cpu.
 *
 * Per row r of logits z [R,V] with target t = targets[r] (I32):
 *   pass 1: logsumexp of the row, online over chunks of CE_CHUNK columns
 *           (chunk max and sum of exp, merged into a running max and sum),
 *           so no softmax row is ever stored;
 *   loss:   losses[r] = lse - z[t];
 *   pass 2: dlogits[r,j] = grad_scale * (exp(z[j] - lse) - (j == t)).
 * Targets < 0 are ignored: loss 0 and a zero gradient row. Targets >= V are
 * rejected (CHM_ERR_INVALID_ARG, nothing written). dlogits is WRITTEN, not
 * accumulated; it may be logits itself (exact aliasing): the loss reads z[t]
 * before pass 2, and pass 2 reads each z[j] just before overwriting it.
 * dlogits may be NULL (loss only). Sums run in double; rows run in parallel.
 */
#include <math.h>

#include "cpu.h"

/* Columns per chunk of the logsumexp pass. */
#define CE_CHUNK 4096

/* Fold one chunk's (max, sum of exp(z - max)) into the running pair. */
static void lse_merge(double *mx, double *sum, double cmx, double csum) {
    if (cmx > *mx) {
        *sum = *sum * exp(*mx - cmx) + csum;
        *mx = cmx;
    } else {
        *sum += csum * exp(cmx - *mx);
    }
}

/* Every target below V (negative ones mean "ignore"). */
static chm_status check_targets(chm_backend *be, const int32_t *tg, int64_t R, int64_t V) {
    for (int64_t r = 0; r < R; r++)
        if (tg[r] >= V)
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "cross_entropy: targets[%lld] = %d is not below the vocabulary size "
                           "%lld (use a negative target to ignore a position)",
                           (long long)r, (int)tg[r], (long long)V);
    return CHM_OK;
}

/*
 * lse_<sfx>: logsumexp of z [V], chunk by chunk.
 * row_<sfx>: loss and (when dz) gradient row of z [V] for target t.
 * ce_<sfx>:  all rows: losses [R], dz [R,V] or NULL, z [R,V], targets [R].
 */
#define CE_DEFINE(T, SFX)                                                                       \
    static double lse_##SFX(const T *z, int64_t V) {                                            \
        double mx = -INFINITY, sum = 0;                                                         \
        for (int64_t c0 = 0; c0 < V; c0 += CE_CHUNK) {                                          \
            int64_t c1 = c0 + CE_CHUNK < V ? c0 + CE_CHUNK : V;                                 \
            double cmx = -INFINITY, csum = 0;                                                   \
            for (int64_t j = c0; j < c1; j++)                                                   \
                if ((double)z[j] > cmx) cmx = (double)z[j];                                     \
            for (int64_t j = c0; j < c1; j++) csum += exp((double)z[j] - cmx);                  \
            lse_merge(&mx, &sum, cmx, csum);                                                    \
        }                                                                                       \
        return mx + log(sum);                                                                   \
    }                                                                                           \
    static void row_##SFX(T *loss, T *dz, const T *z, int32_t t, int64_t V, double scale) {     \
        if (t < 0) {                                                                            \
            *loss = (T)0;                                                                       \
            for (int64_t j = 0; dz && j < V; j++) dz[j] = (T)0;                                 \
            return;                                                                             \
        }                                                                                       \
        double lse = lse_##SFX(z, V);                                                           \
        *loss = (T)(lse - (double)z[t]);                                                        \
        for (int64_t j = 0; dz && j < V; j++)                                                   \
            dz[j] = (T)(scale * (exp((double)z[j] - lse) - (j == t ? 1.0 : 0.0)));              \
    }                                                                                           \
    static void ce_##SFX(T *losses, T *dz, const T *z, const int32_t *tg, int64_t R, int64_t V, \
                         double scale) {                                                        \
        _Pragma("omp parallel for schedule(static) if (R * V > 32768)")                         \
        for (int64_t r = 0; r < R; r++)                                                         \
            row_##SFX(losses + r, dz ? dz + r * V : NULL, z + r * V, tg[r], V, scale);          \
    }

CE_DEFINE(float, f32)
CE_DEFINE(double, f64)

chm_status chm_cpu_cross_entropy(chm_backend *be, const chm_tensor *losses,
                                 const chm_tensor *dlogits, const chm_tensor *logits,
                                 const chm_tensor *targets, double grad_scale) {
    int64_t R = logits->shape[0], V = logits->shape[1];
    const int32_t *tg = chm_cpu_ptr(targets);
    chm_status rc = check_targets(be, tg, R, V);
    if (rc != CHM_OK) return rc;
    void *dz = dlogits ? chm_cpu_ptr(dlogits) : NULL;
    switch (logits->dtype) {
    case CHM_F32:
        ce_f32(chm_cpu_ptr(losses), dz, chm_cpu_ptr(logits), tg, R, V, grad_scale);
        return CHM_OK;
    case CHM_F64:
        ce_f64(chm_cpu_ptr(losses), dz, chm_cpu_ptr(logits), tg, R, V, grad_scale);
        return CHM_OK;
    default:
        return chm_cpu_bad_dtype(be, "cross_entropy", logits->dtype);
    }
}
