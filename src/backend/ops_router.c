/*
 * ops_router.c: checked wrappers of router_topk, router_topk_bwd and
 * select_topk.
 *
 * Each dimension comes from one tensor and every other tensor must agree:
 * R and E from logits (dlogits in the backward), K from idx, cap from
 * slot_token, C from scores. Shapes:
 *   logits, probs, dlogits [R,E] float (one dtype); gates, dgates [R,K] same;
 *   idx [R,K], slot_token and slot_ref [E,cap], counts [E]: I32;
 *   scores [R,C] float with select_topk's idx [R,K] I32.
 * 1 <= K <= E (K <= C); r*K + k must fit in I32 (slot_ref). No output
 * shares bytes with another tensor of the call.
 */
#include <stdint.h>

#include "check.h"

/* score is a known score function. */
static chm_status check_score(chm_backend *be, const char *op, chm_router_score score) {
    return chm_check_arg(be, op, score == CHM_ROUTER_SOFTMAX || score == CHM_ROUTER_SIGMOID,
                         "score must be CHM_ROUTER_SOFTMAX or CHM_ROUTER_SIGMOID, got %d",
                         (int)score);
}

/* A float [R,E] tensor t named `name`, then idx [R,K] with 1 <= K <= E; *K receives K. */
static chm_status check_rows_and_k(chm_backend *be, const char *op, const char *name,
                                   const chm_tensor *t, const chm_tensor *idx, int64_t *K) {
    CHM_TRY(chm_check_float(be, op, name, t));
    CHM_TRY(chm_check_shape(be, op, name, t, t->dtype, 2, CHM_DIMS(CHM_ANY, CHM_ANY)));
    int64_t R = t->shape[0], E = t->shape[1];
    CHM_TRY(chm_check_shape(be, op, "idx", idx, CHM_I32, 2, CHM_DIMS(R, CHM_ANY)));
    *K = idx->shape[1];
    CHM_TRY(chm_check_arg(be, op, *K >= 1 && *K <= E,
                          "top-k needs 1 <= K <= %lld (%s's last dim), got K = %lld from idx",
                          (long long)E, name, (long long)*K));
    return chm_check_arg(be, op, R * *K <= INT32_MAX, "R*K = %lld does not fit in I32",
                         (long long)(R * *K));
}

chm_status chm_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                           const chm_tensor *probs, const chm_tensor *slot_token,
                           const chm_tensor *slot_ref, const chm_tensor *counts,
                           const chm_tensor *logits, chm_router_score score, bool renormalize) {
    const char *op = "router_topk";
    int64_t K;
    CHM_TRY(chm_check_impl(be, op, be->ops->router_topk != NULL));
    CHM_TRY(check_rows_and_k(be, op, "logits", logits, idx, &K));
    int64_t R = logits->shape[0], E = logits->shape[1];
    chm_dtype dt = logits->dtype;
    CHM_TRY(chm_check_shape(be, op, "probs", probs, dt, 2, CHM_DIMS(R, E)));
    CHM_TRY(chm_check_shape(be, op, "gates", gates, dt, 2, CHM_DIMS(R, K)));
    CHM_TRY(chm_check_shape(be, op, "slot_token", slot_token, CHM_I32, 2, CHM_DIMS(E, CHM_ANY)));
    int64_t cap = slot_token->shape[1];
    CHM_TRY(chm_check_shape(be, op, "slot_ref", slot_ref, CHM_I32, 2, CHM_DIMS(E, cap)));
    CHM_TRY(chm_check_shape(be, op, "counts", counts, CHM_I32, 1, CHM_DIMS(E)));
    CHM_TRY(check_score(be, op, score));
    const chm_tensor *all[] = {gates, idx, probs, slot_token, slot_ref, counts, logits};
    const char *const names[] = {"gates", "idx", "probs", "slot_token", "slot_ref", "counts",
                                 "logits"};
    CHM_TRY(chm_check_disjoint(be, op, 7, all, names));
    return chm_fault_after(be, "router_topk", gates,
                           be->ops->router_topk(be, gates, idx, probs, slot_token, slot_ref, counts,
                                                logits, score, renormalize));
}

chm_status chm_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                               const chm_tensor *dgates, const chm_tensor *probs,
                               const chm_tensor *idx, chm_router_score score, bool renormalize) {
    const char *op = "router_topk_bwd";
    int64_t K;
    CHM_TRY(chm_check_impl(be, op, be->ops->router_topk_bwd != NULL));
    CHM_TRY(check_rows_and_k(be, op, "dlogits", dlogits, idx, &K));
    int64_t R = dlogits->shape[0], E = dlogits->shape[1];
    CHM_TRY(chm_check_shape(be, op, "probs", probs, dlogits->dtype, 2, CHM_DIMS(R, E)));
    CHM_TRY(chm_check_shape(be, op, "dgates", dgates, dlogits->dtype, 2, CHM_DIMS(R, K)));
    CHM_TRY(check_score(be, op, score));
    /* only dlogits is written: the inputs may share bytes among themselves */
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(dlogits, dgates),
                          "dlogits and dgates overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(dlogits, probs),
                          "dlogits and probs overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(dlogits, idx), "dlogits and idx overlap"));
    return chm_fault_after(be, "router_topk_bwd", dlogits,
                           be->ops->router_topk_bwd(be, dlogits, dgates, probs, idx, score,
                                                    renormalize));
}

chm_status chm_select_topk(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores,
                           bool flat) {
    const char *op = "select_topk";
    int64_t K;
    CHM_TRY(chm_check_impl(be, op, be->ops->select_topk != NULL));
    CHM_TRY(check_rows_and_k(be, op, "scores", scores, idx, &K));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(idx, scores), "idx and scores overlap"));
    CHM_TRY(chm_check_arg(be, op, !flat || chm_tensor_numel(scores) <= INT32_MAX,
                          "flat indices of %lld scores exceed I32",
                          (long long)chm_tensor_numel(scores)));
    return chm_fault_after(be, "select_topk", idx, be->ops->select_topk(be, idx, scores, flat));
}
