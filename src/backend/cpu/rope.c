/* rope.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                            double theta, int64_t pos_offset) {
    (void)be;
    (void)out;
    (void)x;
    (void)theta;
    (void)pos_offset;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "rope_fwd: not written yet");
}

chm_status chm_cpu_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                            double theta, int64_t pos_offset) {
    (void)be;
    (void)dx;
    (void)dout;
    (void)theta;
    (void)pos_offset;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "rope_bwd: not written yet");
}
