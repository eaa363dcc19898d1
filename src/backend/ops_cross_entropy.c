/* ops_cross_entropy.c: checked wrappers of the cross_entropy ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_cross_entropy(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                             const chm_tensor *logits, const chm_tensor *targets,
                             double grad_scale) {
    CHM_TRY(chm_check_impl(be, "cross_entropy", be->ops->cross_entropy != NULL));
    return be->ops->cross_entropy(be, losses, dlogits, logits, targets, grad_scale);
}
