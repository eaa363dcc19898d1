/* rows.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                               const chm_tensor *idx) {
    (void)be;
    (void)out;
    (void)x;
    (void)idx;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "gather_rows: not written yet");
}

chm_status chm_cpu_scatter_add_rows(chm_backend *be, const chm_tensor *out,
                                    const chm_tensor *x, const chm_tensor *idx,
                                    const chm_tensor *weights) {
    (void)be;
    (void)out;
    (void)x;
    (void)idx;
    (void)weights;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "scatter_add_rows: not written yet");
}
