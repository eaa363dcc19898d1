/* ops_elementwise.c: checked wrappers of the elementwise ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                   const chm_tensor *b) {
    CHM_TRY(chm_check_impl(be, "add", be->ops->add != NULL));
    return be->ops->add(be, out, a, b);
}

chm_status chm_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x, double alpha) {
    CHM_TRY(chm_check_impl(be, "scale", be->ops->scale != NULL));
    return be->ops->scale(be, out, x, alpha);
}

chm_status chm_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x, double alpha) {
    CHM_TRY(chm_check_impl(be, "axpy", be->ops->axpy != NULL));
    return be->ops->axpy(be, y, x, alpha);
}

chm_status chm_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    CHM_TRY(chm_check_impl(be, "sum_rows", be->ops->sum_rows != NULL));
    return be->ops->sum_rows(be, out, x);
}
