/* rmsnorm.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                               const chm_tensor *x, const chm_tensor *w, double eps) {
    (void)be;
    (void)out;
    (void)rstd;
    (void)x;
    (void)w;
    (void)eps;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "rmsnorm_fwd: not written yet");
}

chm_status chm_cpu_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                               const chm_tensor *dout, const chm_tensor *x,
                               const chm_tensor *w, const chm_tensor *rstd) {
    (void)be;
    (void)dx;
    (void)dw;
    (void)dout;
    (void)x;
    (void)w;
    (void)rstd;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "rmsnorm_bwd: not written yet");
}
