/* ops_selective_scan.c: checked wrappers of the selective_scan ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_selective_scan_fwd(chm_backend *be, const chm_tensor *y, const chm_scan_args *a) {
    CHM_TRY(chm_check_impl(be, "selective_scan_fwd", be->ops->selective_scan_fwd != NULL));
    return be->ops->selective_scan_fwd(be, y, a);
}

chm_status chm_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                  const chm_tensor *dy, const chm_scan_args *a) {
    CHM_TRY(chm_check_impl(be, "selective_scan_bwd", be->ops->selective_scan_bwd != NULL));
    return be->ops->selective_scan_bwd(be, g, dy, a);
}
