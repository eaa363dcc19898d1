/* causal_conv1d.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out,
                                     const chm_tensor *x, const chm_tensor *w,
                                     const chm_tensor *bias, bool silu) {
    (void)be;
    (void)out;
    (void)x;
    (void)w;
    (void)bias;
    (void)silu;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "causal_conv1d_fwd: not written yet");
}

chm_status chm_cpu_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx,
                                     const chm_tensor *dw, const chm_tensor *dbias,
                                     const chm_tensor *dout, const chm_tensor *x,
                                     const chm_tensor *w, const chm_tensor *bias, bool silu) {
    (void)be;
    (void)dx;
    (void)dw;
    (void)dbias;
    (void)dout;
    (void)x;
    (void)w;
    (void)bias;
    (void)silu;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "causal_conv1d_bwd: not written yet");
}
