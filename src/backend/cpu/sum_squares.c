/* sum_squares.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    (void)be;
    (void)out;
    (void)x;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "sum_squares: not written yet");
}
