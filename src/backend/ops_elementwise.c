/*
 * ops_elementwise.c: checked wrappers of add, scale, axpy and sum_rows.
 *
 * Shapes: add and scale take tensors of one shape; axpy takes y and x of one
 * dtype and element count; sum_rows takes x viewed as [R,C] and out [C].
 * An output may alias an input exactly where backend.h allows it, never in
 * part (a partial overlap would read elements already overwritten).
 */
#include <math.h>

#include "check.h"

/* out and in are either the same tensor bytes or do not overlap at all. */
static chm_status check_alias(chm_backend *be, const char *op, const char *nout,
                              const chm_tensor *out, const char *nin, const chm_tensor *in) {
    bool exact = out->buf == in->buf && out->offset == in->offset;
    return chm_check_arg(be, op, exact || !chm_tensors_overlap(out, in),
                         "%s overlaps %s in part; it may alias it exactly or not at all", nout,
                         nin);
}

static chm_status check_scalar(chm_backend *be, const char *op, double alpha) {
    return chm_check_arg(be, op, isfinite(alpha), "alpha must be finite, got %g", alpha);
}

chm_status chm_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                   const chm_tensor *b) {
    CHM_TRY(chm_check_impl(be, "add", be->ops->add != NULL));
    CHM_TRY(chm_check_float(be, "add", "out", out));
    CHM_TRY(chm_check_same(be, "add", "out", out, "a", a));
    CHM_TRY(chm_check_same(be, "add", "out", out, "b", b));
    CHM_TRY(check_alias(be, "add", "out", out, "a", a));
    CHM_TRY(check_alias(be, "add", "out", out, "b", b));
    return chm_fault_after(be, "add", out, be->ops->add(be, out, a, b));
}

chm_status chm_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x, double alpha) {
    CHM_TRY(chm_check_impl(be, "scale", be->ops->scale != NULL));
    CHM_TRY(chm_check_float(be, "scale", "out", out));
    CHM_TRY(chm_check_same(be, "scale", "out", out, "x", x));
    CHM_TRY(check_alias(be, "scale", "out", out, "x", x));
    CHM_TRY(check_scalar(be, "scale", alpha));
    return chm_fault_after(be, "scale", out, be->ops->scale(be, out, x, alpha));
}

chm_status chm_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x, double alpha) {
    CHM_TRY(chm_check_impl(be, "axpy", be->ops->axpy != NULL));
    CHM_TRY(chm_check_float(be, "axpy", "y", y));
    CHM_TRY(chm_check_shape(be, "axpy", "x", x, y->dtype, 0, NULL));
    if (chm_tensor_numel(x) != chm_tensor_numel(y))
        return CHM_ERR(&be->err, CHM_ERR_SHAPE, "axpy: x has %lld elements but y has %lld",
                       (long long)chm_tensor_numel(x), (long long)chm_tensor_numel(y));
    CHM_TRY(check_alias(be, "axpy", "y", y, "x", x));
    CHM_TRY(check_scalar(be, "axpy", alpha));
    return chm_fault_after(be, "axpy", y, be->ops->axpy(be, y, x, alpha));
}

chm_status chm_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    CHM_TRY(chm_check_impl(be, "sum_rows", be->ops->sum_rows != NULL));
    CHM_TRY(chm_check_float(be, "sum_rows", "x", x));
    CHM_TRY(chm_check_shape(be, "sum_rows", "out", out, x->dtype, 1, CHM_DIMS(chm_tensor_cols(x))));
    CHM_TRY(chm_check_arg(be, "sum_rows", !chm_tensors_overlap(out, x), "out overlaps x"));
    return chm_fault_after(be, "sum_rows", out, be->ops->sum_rows(be, out, x));
}
