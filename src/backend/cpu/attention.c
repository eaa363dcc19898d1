/* attention.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                                 const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                 double scale) {
    (void)be;
    (void)out;
    (void)lse;
    (void)q;
    (void)k;
    (void)v;
    (void)scale;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "attention_fwd: not written yet");
}

chm_status chm_cpu_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                 const chm_tensor *dv, const chm_tensor *dout,
                                 const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                 const chm_tensor *out, const chm_tensor *lse, double scale) {
    (void)be;
    (void)dq;
    (void)dk;
    (void)dv;
    (void)dout;
    (void)q;
    (void)k;
    (void)v;
    (void)out;
    (void)lse;
    (void)scale;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "attention_bwd: not written yet");
}
