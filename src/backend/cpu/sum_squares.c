/*
 * sum_squares.c: out = sum of x^2 on the cpu (the squared gradient norm).
 *
 * x (f32 or f64, any shape) is cut into blocks of SS_BLOCK elements; each
 * block's sum of squares is taken in double by one thread into its own
 * entry of a per-block array, then the blocks are added in order. The result
 * depends only on the data and its length, never on the thread count.
 * out is one element, f32 or f64 (independently of x).
 */
#include <stdlib.h>

#include "cpu.h"

/* Elements per block (also the unit of work of a thread). */
#define SS_BLOCK 4096

/* sums_<sfx>: sums[b] = sum of x[i]^2 over block b of x [n], for nb blocks. */
#define SS_DEFINE(T, SFX)                                                          \
    static void sums_##SFX(double *sums, const T *x, int64_t n, int64_t nb) {      \
        _Pragma("omp parallel for schedule(static) if (nb > 8)")                   \
        for (int64_t b = 0; b < nb; b++) {                                         \
            int64_t lo = b * SS_BLOCK, hi = lo + SS_BLOCK < n ? lo + SS_BLOCK : n; \
            double s = 0;                                                          \
            for (int64_t i = lo; i < hi; i++) s += (double)x[i] * (double)x[i];    \
            sums[b] = s;                                                           \
        }                                                                          \
    }

SS_DEFINE(float, f32)
SS_DEFINE(double, f64)

chm_status chm_cpu_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    if (x->dtype != CHM_F32 && x->dtype != CHM_F64)
        return chm_cpu_bad_dtype(be, "sum_squares", x->dtype);
    int64_t n = chm_tensor_numel(x), nb = (n + SS_BLOCK - 1) / SS_BLOCK;
    double *sums = malloc((size_t)(nb ? nb : 1) * sizeof *sums);
    if (!sums)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM, "sum_squares: no memory for %lld block sums",
                       (long long)nb);
    if (x->dtype == CHM_F32)
        sums_f32(sums, chm_cpu_ptr(x), n, nb);
    else
        sums_f64(sums, chm_cpu_ptr(x), n, nb);
    double total = 0;
    for (int64_t b = 0; b < nb; b++) total += sums[b];
    free(sums);
    if (out->dtype == CHM_F64)
        *(double *)chm_cpu_ptr(out) = total;
    else
        *(float *)chm_cpu_ptr(out) = (float)total;
    return CHM_OK;
}
