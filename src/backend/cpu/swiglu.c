/* swiglu.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                              const chm_tensor *up) {
    (void)be;
    (void)out;
    (void)gate;
    (void)up;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "swiglu_fwd: not written yet");
}

chm_status chm_cpu_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                              const chm_tensor *dout, const chm_tensor *gate,
                              const chm_tensor *up) {
    (void)be;
    (void)dgate;
    (void)dup;
    (void)dout;
    (void)gate;
    (void)up;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "swiglu_bwd: not written yet");
}
