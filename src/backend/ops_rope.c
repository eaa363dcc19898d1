/*
 * ops_rope.c: checked wrappers of rope_fwd and rope_bwd (contracts in backend.h).
 *
 * x, out, dx and dout are [B,T,H,D] float tensors of one dtype and shape, D
 * even. out may alias x exactly (in place) but not in part; dx must not
 * overlap dout. theta is finite and > 0, pos_offset >= 0.
 */
#include <math.h>

#include "check.h"

/* t is 4-D with an even last dim; theta and pos_offset are in range. */
static chm_status check_rope(chm_backend *be, const char *op, const char *name, const chm_tensor *t,
                             double theta, int64_t pos_offset) {
    CHM_TRY(chm_check_float(be, op, name, t));
    CHM_TRY(chm_check_shape(be, op, name, t, t->dtype, 4,
                            CHM_DIMS(CHM_ANY, CHM_ANY, CHM_ANY, CHM_ANY)));
    if (t->shape[3] % 2)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE,
                       "%s: %s's head dim (last dim) must be even, got %lld", op, name,
                       (long long)t->shape[3]);
    CHM_TRY(chm_check_arg(be, op, isfinite(theta) && theta > 0,
                          "theta must be finite and > 0, got %g", theta));
    return chm_check_arg(be, op, pos_offset >= 0, "pos_offset must be >= 0, got %lld",
                         (long long)pos_offset);
}

chm_status chm_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x, double theta,
                        int64_t pos_offset) {
    CHM_TRY(chm_check_impl(be, "rope_fwd", be->ops->rope_fwd != NULL));
    CHM_TRY(check_rope(be, "rope_fwd", "x", x, theta, pos_offset));
    CHM_TRY(chm_check_same(be, "rope_fwd", "out", out, "x", x));
    bool exact = out->buf == x->buf && out->offset == x->offset;
    CHM_TRY(chm_check_arg(be, "rope_fwd", exact || !chm_tensors_overlap(out, x),
                          "out overlaps x in part; it may alias it exactly or not at all"));
    return chm_fault_after(be, "rope_fwd", out, be->ops->rope_fwd(be, out, x, theta, pos_offset));
}

chm_status chm_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout, double theta,
                        int64_t pos_offset) {
    CHM_TRY(chm_check_impl(be, "rope_bwd", be->ops->rope_bwd != NULL));
    CHM_TRY(check_rope(be, "rope_bwd", "dout", dout, theta, pos_offset));
    CHM_TRY(chm_check_same(be, "rope_bwd", "dx", dx, "dout", dout));
    CHM_TRY(chm_check_arg(be, "rope_bwd", !chm_tensors_overlap(dx, dout), "dx overlaps dout"));
    return chm_fault_after(be, "rope_bwd", dx, be->ops->rope_bwd(be, dx, dout, theta, pos_offset));
}
