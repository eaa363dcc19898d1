/* cross_entropy.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_cross_entropy(chm_backend *be, const chm_tensor *losses,
                                 const chm_tensor *dlogits, const chm_tensor *logits,
                                 const chm_tensor *targets, double grad_scale) {
    (void)be;
    (void)losses;
    (void)dlogits;
    (void)logits;
    (void)targets;
    (void)grad_scale;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "cross_entropy: not written yet");
}
