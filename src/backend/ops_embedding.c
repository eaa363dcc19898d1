/*
 * ops_embedding.c: checked wrappers of embedding_fwd and embedding_bwd (contracts in backend.h).
 *
 * table and dtable are [V,C] float tensors; ids is I32 with 1 to 3 dims (e.g.
 * [R] or [B,T]); out and dout have ids' shape with C appended ([R,C] or
 * [B,T,C]) and the table's dtype. Outputs overlap no other argument. The ids'
 * range [0,V) is data, not shape: the backend checks it (see embedding.c).
 */
#include "check.h"

/* table is [V,C] float, ids is I32 of 1..3 dims, rows is ids' shape + [C] in table's dtype. */
static chm_status check_lookup(chm_backend *be, const char *op, const char *ntable,
                               const chm_tensor *table, const char *nrows, const chm_tensor *rows,
                               const chm_tensor *ids) {
    CHM_TRY(chm_check_float(be, op, ntable, table));
    CHM_TRY(chm_check_shape(be, op, ntable, table, table->dtype, 2, CHM_DIMS(CHM_ANY, CHM_ANY)));
    CHM_TRY(chm_check_shape(be, op, "ids", ids, CHM_I32, 0, NULL));
    if (ids->ndim > CHM_MAX_DIMS - 1)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE, "%s: ids must have 1 to %d dims, got %d", op,
                       CHM_MAX_DIMS - 1, ids->ndim);
    int64_t want[CHM_MAX_DIMS];
    for (int i = 0; i < ids->ndim; i++) want[i] = ids->shape[i];
    want[ids->ndim] = table->shape[1];
    CHM_TRY(chm_check_shape(be, op, nrows, rows, table->dtype, ids->ndim + 1, want));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(rows, ids), "%s overlaps ids", nrows));
    return CHM_OK;
}

chm_status chm_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                             const chm_tensor *table) {
    CHM_TRY(chm_check_impl(be, "embedding_fwd", be->ops->embedding_fwd != NULL));
    CHM_TRY(check_lookup(be, "embedding_fwd", "table", table, "out", out, ids));
    CHM_TRY(
        chm_check_arg(be, "embedding_fwd", !chm_tensors_overlap(out, table), "out overlaps table"));
    return chm_fault_after(be, "embedding_fwd", out, be->ops->embedding_fwd(be, out, ids, table));
}

chm_status chm_embedding_bwd(chm_backend *be, const chm_tensor *dtable, const chm_tensor *dout,
                             const chm_tensor *ids) {
    CHM_TRY(chm_check_impl(be, "embedding_bwd", be->ops->embedding_bwd != NULL));
    CHM_TRY(check_lookup(be, "embedding_bwd", "dtable", dtable, "dout", dout, ids));
    CHM_TRY(chm_check_arg(be, "embedding_bwd", !chm_tensors_overlap(dtable, dout),
                          "dtable overlaps dout"));
    CHM_TRY(chm_check_arg(be, "embedding_bwd", !chm_tensors_overlap(dtable, ids),
                          "dtable overlaps ids"));
    return chm_fault_after(be, "embedding_bwd", dtable,
                           be->ops->embedding_bwd(be, dtable, dout, ids));
}
