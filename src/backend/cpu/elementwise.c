/* elementwise.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                       const chm_tensor *b) {
    (void)be;
    (void)out;
    (void)a;
    (void)b;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "add: not written yet");
}

chm_status chm_cpu_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                         double alpha) {
    (void)be;
    (void)out;
    (void)x;
    (void)alpha;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "scale: not written yet");
}

chm_status chm_cpu_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x, double alpha) {
    (void)be;
    (void)y;
    (void)x;
    (void)alpha;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "axpy: not written yet");
}

chm_status chm_cpu_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    (void)be;
    (void)out;
    (void)x;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "sum_rows: not written yet");
}
