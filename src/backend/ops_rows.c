/* ops_rows.c: checked wrappers of the rows ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                           const chm_tensor *idx) {
    CHM_TRY(chm_check_impl(be, "gather_rows", be->ops->gather_rows != NULL));
    return be->ops->gather_rows(be, out, x, idx);
}

chm_status chm_scatter_add_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                const chm_tensor *idx, const chm_tensor *weights) {
    CHM_TRY(chm_check_impl(be, "scatter_add_rows", be->ops->scatter_add_rows != NULL));
    return be->ops->scatter_add_rows(be, out, x, idx, weights);
}
