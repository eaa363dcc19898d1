/* ops_adamw.c: checked wrappers of the adamw ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                          const chm_tensor *m, const chm_tensor *v, const chm_tensor *param_lowp,
                          const chm_adamw_args *args) {
    CHM_TRY(chm_check_impl(be, "adamw_step", be->ops->adamw_step != NULL));
    return be->ops->adamw_step(be, param, grad, m, v, param_lowp, args);
}
