/*
 * ops_cross_entropy.c: checked wrapper of the fused cross-entropy.
 *
 * logits [R,V] (float, V >= 1), targets [R] (I32), losses [R] in
 * chm_dtype_stats(logits) (the logits' dtype for f32/f64, f32 for 16-bit
 * logits), dlogits [R,V] like logits or NULL for the loss alone. dlogits may
 * be logits itself (same buffer and offset); any other overlap is rejected.
 * Target values are data and are range-checked by the backend.
 */
#include <math.h>

#include "check.h"

/* dlogits is logits exactly (allowed), or shares none of its bytes with it. */
static bool alias_ok(const chm_tensor *dlogits, const chm_tensor *logits) {
    if (!chm_tensors_overlap(dlogits, logits)) return true;
    return dlogits->offset == logits->offset;  /* same buffer, same dtype and shape: same bytes */
}

chm_status chm_cross_entropy(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                             const chm_tensor *logits, const chm_tensor *targets,
                             double grad_scale) {
    const char *op = "cross_entropy";
    CHM_TRY(chm_check_impl(be, op, be->ops->cross_entropy != NULL));
    CHM_TRY(chm_check_float(be, op, "logits", logits));
    CHM_TRY(chm_check_shape(be, op, "logits", logits, logits->dtype, 2,
                            CHM_DIMS(CHM_ANY, CHM_ANY)));
    int64_t R = logits->shape[0], V = logits->shape[1];
    CHM_TRY(chm_check_arg(be, op, V >= 1, "logits has an empty vocabulary (V = 0)"));
    CHM_TRY(chm_check_shape(be, op, "targets", targets, CHM_I32, 1, CHM_DIMS(R)));
    CHM_TRY(chm_check_shape(be, op, "losses", losses, chm_dtype_stats(logits->dtype), 1,
                            CHM_DIMS(R)));
    if (dlogits) CHM_TRY(chm_check_shape(be, op, "dlogits", dlogits, logits->dtype, 2,
                                         CHM_DIMS(R, V)));
    CHM_TRY(chm_check_arg(be, op, isfinite(grad_scale), "grad_scale must be finite, got %g",
                          grad_scale));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(losses, logits),
                          "losses and logits overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(losses, targets),
                          "losses and targets overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(losses, dlogits),
                          "losses and dlogits overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(dlogits, targets),
                          "dlogits and targets overlap"));
    CHM_TRY(chm_check_arg(be, op, !dlogits || alias_ok(dlogits, logits),
                          "dlogits partly overlaps logits (it may only be logits itself)"));
    return chm_fault_after(be, "cross_entropy", losses,
                           be->ops->cross_entropy(be, losses, dlogits, logits, targets,
                                                  grad_scale));
}
