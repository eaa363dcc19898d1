/* ops_rope.c: checked wrappers of the rope ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                        double theta, int64_t pos_offset) {
    CHM_TRY(chm_check_impl(be, "rope_fwd", be->ops->rope_fwd != NULL));
    return be->ops->rope_fwd(be, out, x, theta, pos_offset);
}

chm_status chm_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                        double theta, int64_t pos_offset) {
    CHM_TRY(chm_check_impl(be, "rope_bwd", be->ops->rope_bwd != NULL));
    return be->ops->rope_bwd(be, dx, dout, theta, pos_offset);
}
