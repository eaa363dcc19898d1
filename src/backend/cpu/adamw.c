/* adamw.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                              const chm_tensor *m, const chm_tensor *v,
                              const chm_tensor *param_lowp, const chm_adamw_args *args) {
    (void)be;
    (void)param;
    (void)grad;
    (void)m;
    (void)v;
    (void)param_lowp;
    (void)args;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "adamw_step: not written yet");
}
