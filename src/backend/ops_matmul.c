/* ops_matmul.c: checked wrappers of the matmul ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                      const chm_tensor *B, const chm_tensor *bias, bool trans_a, bool trans_b,
                      double alpha, double beta) {
    CHM_TRY(chm_check_impl(be, "matmul", be->ops->matmul != NULL));
    return be->ops->matmul(be, C, A, B, bias, trans_a, trans_b, alpha, beta);
}

chm_status chm_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                              const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                              bool trans_b, double alpha, double beta) {
    CHM_TRY(chm_check_impl(be, "matmul_grouped", be->ops->matmul_grouped != NULL));
    return be->ops->matmul_grouped(be, C, A, B, counts, trans_a, trans_b, alpha, beta);
}
