/* ops_sum_squares.c: checked wrappers of the sum_squares ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    CHM_TRY(chm_check_impl(be, "sum_squares", be->ops->sum_squares != NULL));
    return be->ops->sum_squares(be, out, x);
}
