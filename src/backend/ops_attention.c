/* ops_attention.c: checked wrappers of the attention ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                             const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                             double scale) {
    CHM_TRY(chm_check_impl(be, "attention_fwd", be->ops->attention_fwd != NULL));
    return be->ops->attention_fwd(be, out, lse, q, k, v, scale);
}

chm_status chm_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                             const chm_tensor *dv, const chm_tensor *dout, const chm_tensor *q,
                             const chm_tensor *k, const chm_tensor *v, const chm_tensor *out,
                             const chm_tensor *lse, double scale) {
    CHM_TRY(chm_check_impl(be, "attention_bwd", be->ops->attention_bwd != NULL));
    return be->ops->attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, scale);
}
