/* ops_rmsnorm.c: checked wrappers of the rmsnorm ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                           const chm_tensor *x, const chm_tensor *w, double eps) {
    CHM_TRY(chm_check_impl(be, "rmsnorm_fwd", be->ops->rmsnorm_fwd != NULL));
    return be->ops->rmsnorm_fwd(be, out, rstd, x, w, eps);
}

chm_status chm_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                           const chm_tensor *dout, const chm_tensor *x, const chm_tensor *w,
                           const chm_tensor *rstd) {
    CHM_TRY(chm_check_impl(be, "rmsnorm_bwd", be->ops->rmsnorm_bwd != NULL));
    return be->ops->rmsnorm_bwd(be, dx, dw, dout, x, w, rstd);
}
