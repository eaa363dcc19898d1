/* selective_scan.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_selective_scan_fwd(chm_backend *be, const chm_tensor *y,
                                      const chm_scan_args *a) {
    (void)be;
    (void)y;
    (void)a;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "selective_scan_fwd: not written yet");
}

chm_status chm_cpu_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                      const chm_tensor *dy, const chm_scan_args *a) {
    (void)be;
    (void)g;
    (void)dy;
    (void)a;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "selective_scan_bwd: not written yet");
}
