/* ops_causal_conv1d.c: checked wrappers of the causal_conv1d ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                 const chm_tensor *w, const chm_tensor *bias, bool silu) {
    CHM_TRY(chm_check_impl(be, "causal_conv1d_fwd", be->ops->causal_conv1d_fwd != NULL));
    return be->ops->causal_conv1d_fwd(be, out, x, w, bias, silu);
}

chm_status chm_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                 const chm_tensor *dbias, const chm_tensor *dout,
                                 const chm_tensor *x, const chm_tensor *w,
                                 const chm_tensor *bias, bool silu) {
    CHM_TRY(chm_check_impl(be, "causal_conv1d_bwd", be->ops->causal_conv1d_bwd != NULL));
    return be->ops->causal_conv1d_bwd(be, dx, dw, dbias, dout, x, w, bias, silu);
}
