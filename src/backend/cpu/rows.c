/*
 * rows.c: gather_rows and scatter_add_rows on the cpu, the row moves of MoE
 * dispatch/combine and of MoD select/merge.
 *
 *   gather:  out[m,:]       = x[idx[m],:]     (a zero row where idx[m] < 0)
 *   scatter: out[idx[m],:] += w[m] * x[m,:]   (nothing where idx[m] < 0)
 *
 * Shapes and dtypes were checked by the wrapper (ops_rows.c). Index values
 * are data, so they are checked here, all of them before anything is
 * written: an index past the row count fails with CHM_ERR_INVALID_ARG and
 * leaves the output untouched.
 *
 * scatter_add_rows ACCUMULATES into out (it is the adjoint of gather_rows).
 * Duplicate indices are allowed (with max_repeat > 0, at most that many of each:
 * checked here, so that the model's promises hold on the reference); threads split
 * the columns and every column walks m in increasing order, so the additions happen
 * in one fixed order whatever the thread count (deterministic, no atomics).
 */
#include <stdlib.h>

#include "cpu.h"

/* Columns per scatter task: one cache-friendly strip of every row. */
#define ROWS_COL_BLOCK 64

/* Every idx[m] < rows (negative entries mean "skip" and are fine). */
static chm_status check_indices(chm_backend *be, const char *op, const int32_t *idx, int64_t M,
                                int64_t rows) {
    for (int64_t m = 0; m < M; m++)
        if (idx[m] >= rows)
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "%s: idx[%lld] = %d is out of range for %lld rows (use -1 to skip "
                           "a row)",
                           op, (long long)m, (int)idx[m], (long long)rows);
    return CHM_OK;
}

/* No row index occurs more than max_repeat times (the bounded scatter's promise, which the
   cpu, the reference, holds its callers to; the indices are in range). */
static chm_status check_repeats(chm_backend *be, const int32_t *idx, int64_t M, int64_t rows,
                                int max_repeat) {
    int32_t *seen = calloc(rows > 0 ? (size_t)rows : 1, sizeof *seen);
    if (!seen)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM, "scatter_add_rows: no memory to count %lld rows",
                       (long long)rows);
    chm_status rc = CHM_OK;
    for (int64_t m = 0; m < M && rc == CHM_OK; m++)
        if (idx[m] >= 0 && ++seen[idx[m]] > max_repeat)
            rc = CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                         "scatter_add_rows: row %d is the target of more than max_repeat = %d "
                         "rows (idx[%lld] is one more); the caller's bound is wrong",
                         (int)idx[m], max_repeat, (long long)m);
    free(seen);
    return rc;
}

/*
 * gather_<sfx>: out [M,C] = rows idx [M] of x [*,C].
 * scatter_<sfx>: out [*,C] += w[m] * x [M,C] into rows idx [M]; w [M] or NULL (1).
 * Loops under 32768 elements stay on one thread (threads cost more than they save).
 */
#define ROWS_DEFINE(T, SFX)                                                                  \
    static void gather_##SFX(T *out, const T *x, const int32_t *idx, int64_t M, int64_t C) { \
        _Pragma("omp parallel for schedule(static) if (M * C > 32768)")                      \
        for (int64_t m = 0; m < M; m++) {                                                    \
            T *o = out + m * C;                                                              \
            const T *src = idx[m] >= 0 ? x + (int64_t)idx[m] * C : NULL;                     \
            for (int64_t c = 0; c < C; c++) o[c] = src ? src[c] : (T)0;                      \
        }                                                                                    \
    }                                                                                        \
    static void scatter_##SFX(T *out, const T *x, const int32_t *idx, const T *w, int64_t M, \
                              int64_t C) {                                                   \
        _Pragma("omp parallel for schedule(static) if (M * C > 32768)")                      \
        for (int64_t c0 = 0; c0 < C; c0 += ROWS_COL_BLOCK) {                                 \
            int64_t c1 = c0 + ROWS_COL_BLOCK < C ? c0 + ROWS_COL_BLOCK : C;                  \
            for (int64_t m = 0; m < M; m++) {                                                \
                if (idx[m] < 0) continue;                                                    \
                double wm = w ? (double)w[m] : 1.0;                                          \
                T *o = out + (int64_t)idx[m] * C;                                            \
                const T *xm = x + m * C;                                                     \
                for (int64_t c = c0; c < c1; c++)                                            \
                    o[c] = (T)((double)o[c] + wm * (double)xm[c]);                           \
            }                                                                                \
        }                                                                                    \
    }

ROWS_DEFINE(float, f32)
ROWS_DEFINE(double, f64)

chm_status chm_cpu_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                               const chm_tensor *idx) {
    int64_t M = out->shape[0], C = out->shape[1];
    const int32_t *ix = chm_cpu_ptr(idx);
    chm_status rc = check_indices(be, "gather_rows", ix, M, x->shape[0]);
    if (rc != CHM_OK) return rc;
    switch (x->dtype) {
    case CHM_F32:
        gather_f32(chm_cpu_ptr(out), chm_cpu_ptr(x), ix, M, C);
        return CHM_OK;
    case CHM_F64:
        gather_f64(chm_cpu_ptr(out), chm_cpu_ptr(x), ix, M, C);
        return CHM_OK;
    default:
        return chm_cpu_bad_dtype(be, "gather_rows", x->dtype);
    }
}

chm_status chm_cpu_scatter_add_rows(chm_backend *be, const chm_tensor *out,
                                    const chm_tensor *x, const chm_tensor *idx,
                                    const chm_tensor *weights, int max_repeat) {
    int64_t M = x->shape[0], C = x->shape[1];
    const int32_t *ix = chm_cpu_ptr(idx);
    chm_status rc = check_indices(be, "scatter_add_rows", ix, M, out->shape[0]);
    if (rc == CHM_OK && max_repeat > 0) rc = check_repeats(be, ix, M, out->shape[0], max_repeat);
    if (rc != CHM_OK) return rc;
    const void *w = weights ? chm_cpu_ptr(weights) : NULL;
    switch (x->dtype) {
    case CHM_F32:
        scatter_f32(chm_cpu_ptr(out), chm_cpu_ptr(x), ix, w, M, C);
        return CHM_OK;
    case CHM_F64:
        scatter_f64(chm_cpu_ptr(out), chm_cpu_ptr(x), ix, w, M, C);
        return CHM_OK;
    default:
        return chm_cpu_bad_dtype(be, "scatter_add_rows", x->dtype);
    }
}
