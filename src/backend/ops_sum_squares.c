/*
 * ops_sum_squares.c: checked wrapper of sum_squares.
 *
 * x: any float tensor; out: one element (any shape of numel 1), f32 or f64,
 * not overlapping x.
 */
#include "check.h"

chm_status chm_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    const char *op = "sum_squares";
    CHM_TRY(chm_check_impl(be, op, be->ops->sum_squares != NULL));
    CHM_TRY(chm_check_float(be, op, "x", x));
    CHM_TRY(chm_check_tensor(be, op, "out", out));
    if (out->dtype != CHM_F32 && out->dtype != CHM_F64)
        return CHM_ERR(&be->err, CHM_ERR_DTYPE, "%s: out must be f32 or f64, got %s", op,
                       chm_dtype_name(out->dtype));
    if (chm_tensor_numel(out) != 1)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE, "%s: out must have one element, got %lld", op,
                       (long long)chm_tensor_numel(out));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, x), "out and x overlap"));
    return chm_fault_after(be, "sum_squares", out, be->ops->sum_squares(be, out, x));
}
