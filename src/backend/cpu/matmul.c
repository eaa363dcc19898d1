/* matmul.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                          const chm_tensor *B, const chm_tensor *bias, bool trans_a,
                          bool trans_b, double alpha, double beta) {
    (void)be;
    (void)C;
    (void)A;
    (void)B;
    (void)bias;
    (void)trans_a;
    (void)trans_b;
    (void)alpha;
    (void)beta;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "matmul: not written yet");
}

chm_status chm_cpu_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                  const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                  bool trans_b, double alpha, double beta) {
    (void)be;
    (void)C;
    (void)A;
    (void)B;
    (void)counts;
    (void)trans_a;
    (void)trans_b;
    (void)alpha;
    (void)beta;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "matmul_grouped: not written yet");
}
