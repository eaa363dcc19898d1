/*
 * ops_bce_logits.c: checked wrapper of the binary cross-entropy with logits
 * (contract in backend.h).
 *
 * logits and targets [R] (one float dtype), losses [R] in
 * chm_dtype_stats(dtype), dlogits [R] like logits or NULL. dlogits may be
 * logits itself (exact alias); any other overlap of an output is rejected.
 * Target values are data (in [0, 1] for a probability) and are not checked.
 */
#include <math.h>

#include "check.h"

chm_status chm_bce_logits(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                          const chm_tensor *logits, const chm_tensor *targets, double grad_scale) {
    const char *op = "bce_logits";
    CHM_TRY(chm_check_impl(be, op, be->ops->bce_logits != NULL));
    CHM_TRY(chm_check_float(be, op, "logits", logits));
    CHM_TRY(chm_check_shape(be, op, "logits", logits, logits->dtype, 1, CHM_DIMS(CHM_ANY)));
    int64_t R = logits->shape[0];
    CHM_TRY(chm_check_shape(be, op, "targets", targets, logits->dtype, 1, CHM_DIMS(R)));
    CHM_TRY(
        chm_check_shape(be, op, "losses", losses, chm_dtype_stats(logits->dtype), 1, CHM_DIMS(R)));
    if (dlogits)
        CHM_TRY(chm_check_shape(be, op, "dlogits", dlogits, logits->dtype, 1, CHM_DIMS(R)));
    CHM_TRY(chm_check_arg(be, op, isfinite(grad_scale), "grad_scale must be finite, got %g",
                          grad_scale));
    CHM_TRY(
        chm_check_arg(be, op, !chm_tensors_overlap(losses, logits), "losses and logits overlap"));
    CHM_TRY(
        chm_check_arg(be, op, !chm_tensors_overlap(losses, targets), "losses and targets overlap"));
    CHM_TRY(
        chm_check_arg(be, op, !chm_tensors_overlap(losses, dlogits), "losses and dlogits overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(dlogits, targets),
                          "dlogits and targets overlap"));
    bool exact = dlogits && dlogits->buf == logits->buf && dlogits->offset == logits->offset;
    CHM_TRY(chm_check_arg(be, op, !dlogits || exact || !chm_tensors_overlap(dlogits, logits),
                          "dlogits partly overlaps logits (it may only be logits itself)"));
    return chm_fault_after(be, "bce_logits", losses,
                           be->ops->bce_logits(be, losses, dlogits, logits, targets, grad_scale));
}
