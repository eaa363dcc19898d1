/* router.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                               const chm_tensor *probs, const chm_tensor *slot_token,
                               const chm_tensor *slot_ref, const chm_tensor *counts,
                               const chm_tensor *logits, chm_router_score score,
                               bool renormalize) {
    (void)be;
    (void)gates;
    (void)idx;
    (void)probs;
    (void)slot_token;
    (void)slot_ref;
    (void)counts;
    (void)logits;
    (void)score;
    (void)renormalize;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "router_topk: not written yet");
}

chm_status chm_cpu_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                   const chm_tensor *dgates, const chm_tensor *probs,
                                   const chm_tensor *idx, chm_router_score score,
                                   bool renormalize) {
    (void)be;
    (void)dlogits;
    (void)dgates;
    (void)probs;
    (void)idx;
    (void)score;
    (void)renormalize;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "router_topk_bwd: not written yet");
}

chm_status chm_cpu_select_topk(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores) {
    (void)be;
    (void)idx;
    (void)scores;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "select_topk: not written yet");
}
