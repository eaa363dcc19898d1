/* convert.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_fill(chm_backend *be, const chm_tensor *t, double value) {
    (void)be;
    (void)t;
    (void)value;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "fill: not written yet");
}

chm_status chm_cpu_copy(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    (void)be;
    (void)dst;
    (void)src;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "copy: not written yet");
}

chm_status chm_cpu_cast(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    (void)be;
    (void)dst;
    (void)src;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "cast: not written yet");
}
