/*
 * ops_exp.c: checked wrappers of exp_fwd and exp_bwd (contracts in backend.h).
 *
 * x, out, dout, dx: one float dtype and one shape (any rank). out may be x
 * itself (exact alias) or share no byte with it; dx shares no byte with dout
 * or out. alpha is finite.
 */
#include <math.h>

#include "check.h"

chm_status chm_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x, double alpha) {
    const char *op = "exp_fwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->exp_fwd != NULL));
    CHM_TRY(chm_check_float(be, op, "x", x));
    CHM_TRY(chm_check_same(be, op, "out", out, "x", x));
    bool exact = out->buf == x->buf && out->offset == x->offset;
    CHM_TRY(chm_check_arg(be, op, exact || !chm_tensors_overlap(out, x),
                          "out overlaps x in part; it may alias it exactly or not at all"));
    CHM_TRY(chm_check_arg(be, op, isfinite(alpha), "alpha must be finite, got %g", alpha));
    return chm_fault_after(be, "exp_fwd", out, be->ops->exp_fwd(be, out, x, alpha));
}

chm_status chm_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                       const chm_tensor *out) {
    const char *op = "exp_bwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->exp_bwd != NULL));
    CHM_TRY(chm_check_float(be, op, "out", out));
    CHM_TRY(chm_check_same(be, op, "dout", dout, "out", out));
    CHM_TRY(chm_check_same(be, op, "dx", dx, "out", out));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(dx, dout), "dx overlaps dout"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(dx, out), "dx overlaps out"));
    return chm_fault_after(be, "exp_bwd", dx, be->ops->exp_bwd(be, dx, dout, out));
}
