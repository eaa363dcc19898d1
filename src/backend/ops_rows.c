/*
 * ops_rows.c: checked wrappers of gather_rows and scatter_add_rows.
 *
 * gather_rows:      out [M,C] = x [R,C] rows picked by idx [M] (I32)
 * scatter_add_rows: out [R,C] += weights [M] * x [M,C] into rows idx [M]; the bounded
 *                   form adds the caller's promise that no index occurs more than
 *                   max_repeat times (backends check it where it costs nothing extra)
 * All float tensors share one dtype; weights is optional. Index values are
 * data and are range-checked by the backend, not here.
 */
#include "check.h"

chm_status chm_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                           const chm_tensor *idx) {
    const char *op = "gather_rows";
    CHM_TRY(chm_check_impl(be, op, be->ops->gather_rows != NULL));
    CHM_TRY(chm_check_float(be, op, "x", x));
    CHM_TRY(chm_check_shape(be, op, "x", x, x->dtype, 2, CHM_DIMS(CHM_ANY, CHM_ANY)));
    CHM_TRY(chm_check_shape(be, op, "idx", idx, CHM_I32, 1, CHM_DIMS(CHM_ANY)));
    int64_t M = idx->shape[0], C = x->shape[1];
    CHM_TRY(chm_check_shape(be, op, "out", out, x->dtype, 2, CHM_DIMS(M, C)));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, x), "out and x overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, idx), "out and idx overlap"));
    return chm_fault_after(be, "gather_rows", out, be->ops->gather_rows(be, out, x, idx));
}

static chm_status scatter_add_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                   const chm_tensor *idx, const chm_tensor *weights,
                                   int max_repeat) {
    const char *op = "scatter_add_rows";
    CHM_TRY(chm_check_impl(be, op, be->ops->scatter_add_rows != NULL));
    CHM_TRY(chm_check_float(be, op, "out", out));
    CHM_TRY(chm_check_shape(be, op, "out", out, out->dtype, 2, CHM_DIMS(CHM_ANY, CHM_ANY)));
    CHM_TRY(chm_check_shape(be, op, "idx", idx, CHM_I32, 1, CHM_DIMS(CHM_ANY)));
    int64_t M = idx->shape[0], C = out->shape[1];
    CHM_TRY(chm_check_shape(be, op, "x", x, out->dtype, 2, CHM_DIMS(M, C)));
    if (weights) CHM_TRY(chm_check_shape(be, op, "weights", weights, out->dtype, 1, CHM_DIMS(M)));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, x), "out and x overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, idx), "out and idx overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, weights), "out and weights overlap"));
    return chm_fault_after(be, "scatter_add_rows", out,
                           be->ops->scatter_add_rows(be, out, x, idx, weights, max_repeat));
}

chm_status chm_scatter_add_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                const chm_tensor *idx, const chm_tensor *weights) {
    return scatter_add_rows(be, out, x, idx, weights, 0);
}

chm_status chm_scatter_add_rows_bounded(chm_backend *be, const chm_tensor *out,
                                        const chm_tensor *x, const chm_tensor *idx,
                                        const chm_tensor *weights, int max_repeat) {
    CHM_TRY(chm_check_arg(be, "scatter_add_rows", max_repeat >= 1,
                          "max_repeat %d: a bound on how often an index occurs is at least 1",
                          max_repeat));
    return scatter_add_rows(be, out, x, idx, weights, max_repeat);
}
