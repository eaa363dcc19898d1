/* ops_swiglu.c: checked wrappers of the swiglu ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                          const chm_tensor *up) {
    CHM_TRY(chm_check_impl(be, "swiglu_fwd", be->ops->swiglu_fwd != NULL));
    return be->ops->swiglu_fwd(be, out, gate, up);
}

chm_status chm_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                          const chm_tensor *dout, const chm_tensor *gate, const chm_tensor *up) {
    CHM_TRY(chm_check_impl(be, "swiglu_bwd", be->ops->swiglu_bwd != NULL));
    return be->ops->swiglu_bwd(be, dgate, dup, dout, gate, up);
}
