/*
 * embedding.c: the cpu backend's embedding lookup, forward and backward.
 *
 * ids (I32, R of them, any shape), table [V,C], out [R,C]:
 *   out[r] = table[ids[r]]            dtable[ids[r]] += dout[r]  (ACCUMULATES)
 * The shared wrapper cannot read ids (device memory on other backends), so
 * both ops check every id against [0, V) here before touching memory and
 * fail with CHM_ERR_INVALID_ARG naming the first bad row and id.
 * The backward is deterministic: each thread owns a block of columns and adds
 * the rows into it in row order, so repeated ids always sum the same way.
 */
#include "cpu.h"

#include <string.h>

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 16384
/* Columns per backward work item: wide enough for contiguous row chunks. */
#define COL_BLOCK 64

static chm_status check_ids(chm_backend *be, const char *op, const int32_t *ids, int64_t R,
                            int64_t V) {
    for (int64_t r = 0; r < R; r++)
        if (ids[r] < 0 || ids[r] >= V)
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "%s: ids[%lld] = %d is outside [0, %lld), the rows of the table; "
                           "check the tokenizer's vocabulary size against the model's",
                           op, (long long)r, ids[r], (long long)V);
    return CHM_OK;
}

#define EMBEDDING_BWD(T)                                                                           \
    static void embedding_bwd_##T(T *dtable, const T *dout, const int32_t *ids, int64_t R,         \
                                  int64_t C) {                                                     \
        int64_t nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;                                         \
        _Pragma("omp parallel for schedule(static) if (R * C > PAR_MIN)")                          \
        for (int64_t blk = 0; blk < nblocks; blk++) {                                              \
            int64_t c0 = blk * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;            \
            for (int64_t r = 0; r < R; r++) {                                                      \
                T *dst = dtable + (int64_t)ids[r] * C;                                             \
                const T *src = dout + r * C;                                                       \
                for (int64_t c = c0; c < c1; c++) dst[c] += src[c];                                \
            }                                                                                      \
        }                                                                                          \
    }

EMBEDDING_BWD(float)
EMBEDDING_BWD(double)

/* Only f32 and f64 tables: bf16/f16 are storage formats on the cpu. */
static bool float_ok(chm_dtype dt) { return dt == CHM_F32 || dt == CHM_F64; }

chm_status chm_cpu_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                                 const chm_tensor *table) {
    if (!float_ok(table->dtype)) return chm_cpu_bad_dtype(be, "embedding_fwd", table->dtype);
    int64_t R = chm_tensor_numel(ids), V = table->shape[0], C = table->shape[1];
    const int32_t *id = chm_cpu_ptr(ids);
    chm_status rc = check_ids(be, "embedding_fwd", id, R, V);
    if (rc) return rc;
    size_t row = (size_t)C * chm_dtype_size(table->dtype);
    char *dst = chm_cpu_ptr(out);
    const char *src = chm_cpu_ptr(table);
#pragma omp parallel for schedule(static) if (R * C > PAR_MIN)
    for (int64_t r = 0; r < R; r++) memcpy(dst + (size_t)r * row, src + (size_t)id[r] * row, row);
    return CHM_OK;
}

chm_status chm_cpu_embedding_bwd(chm_backend *be, const chm_tensor *dtable,
                                 const chm_tensor *dout, const chm_tensor *ids) {
    if (!float_ok(dtable->dtype)) return chm_cpu_bad_dtype(be, "embedding_bwd", dtable->dtype);
    int64_t R = chm_tensor_numel(ids), V = dtable->shape[0], C = dtable->shape[1];
    const int32_t *id = chm_cpu_ptr(ids);
    chm_status rc = check_ids(be, "embedding_bwd", id, R, V);
    if (rc) return rc;
    if (dtable->dtype == CHM_F32)
        embedding_bwd_float(chm_cpu_ptr(dtable), chm_cpu_ptr(dout), id, R, C);
    else
        embedding_bwd_double(chm_cpu_ptr(dtable), chm_cpu_ptr(dout), id, R, C);
    return CHM_OK;
}
