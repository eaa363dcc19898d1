/* ops_router.c: checked wrappers of the router ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                           const chm_tensor *probs, const chm_tensor *slot_token,
                           const chm_tensor *slot_ref, const chm_tensor *counts,
                           const chm_tensor *logits, chm_router_score score, bool renormalize) {
    CHM_TRY(chm_check_impl(be, "router_topk", be->ops->router_topk != NULL));
    return be->ops->router_topk(be, gates, idx, probs, slot_token, slot_ref, counts, logits, score, renormalize);
}

chm_status chm_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                               const chm_tensor *dgates, const chm_tensor *probs,
                               const chm_tensor *idx, chm_router_score score, bool renormalize) {
    CHM_TRY(chm_check_impl(be, "router_topk_bwd", be->ops->router_topk_bwd != NULL));
    return be->ops->router_topk_bwd(be, dlogits, dgates, probs, idx, score, renormalize);
}

chm_status chm_select_topk(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores) {
    CHM_TRY(chm_check_impl(be, "select_topk", be->ops->select_topk != NULL));
    return be->ops->select_topk(be, idx, scores);
}
