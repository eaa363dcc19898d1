/*
 * router.c: the vulkan backend's MoE router top-k (forward and backward) and
 * MoD top-k selection (shaders router_topk.comp, router_topk_bwd.comp,
 * select_topk.comp); contracts in backend.h, the same choices as the cpu
 * backend: experts ranked by logit, ties to the lower index, NaN last.
 *
 * router_topk: logits [R,E] -> probs [R,E], idx [R,K], gates [R,K] (one
 *   invocation per row), then the capacity dispatch plan slot_token,
 *   slot_ref [E,cap] and counts [E] in token order (one workgroup per
 *   expert, a running prefix sum over the R*K assignments).
 * router_topk_bwd: dlogits [R,E] ACCUMULATES, one invocation per row; an
 *   idx entry that names no expert is reported as CHM_ERR_INVALID_ARG by the
 *   next chm_sync or download.
 * select_topk: scores [R,C] -> idx [R,K] in increasing column order (+ r*C when
 *   flat): each column's selected flag from its rank, many workgroups a row,
 *   then the flags' prefix sums place the columns (select_topk_split); or,
 *   with CHIMERA_VULKAN_DISABLE=topk_split, one workgroup per row.
 * All integer and float results are deterministic.
 *
 * logits, probs, gates, dgates, dlogits and scores are f32, or all bf16 or
 * all f16 (the shaders' native variants: loaded into f32, rounded once on
 * store or, for dlogits, once when its sum is added; vk_dtype.h).
 */
#include "vk_dtype.h"

enum { ROUTER_SIGMOID = 1, ROUTER_RENORM = 2 };

static uint32_t router_flags(chm_router_score score, bool renormalize) {
    return (score == CHM_ROUTER_SIGMOID ? ROUTER_SIGMOID : 0) | (renormalize ? ROUTER_RENORM : 0);
}

/* slot_token, slot_ref [E,cap] and counts [E] from idx [R,K]. */
static chm_status dispatch_plan(chm_vk *vk, const chm_tensor *slot_token,
                                const chm_tensor *slot_ref, const chm_tensor *counts,
                                const chm_tensor *idx) {
    struct {
        uint32_t RK, K, cap;
    } pc = {(uint32_t)chm_tensor_numel(idx), (uint32_t)idx->shape[1],
            (uint32_t)slot_token->shape[1]};
    chm_vk_dispatch d = {
        .shader = "router_topk_plan", .nbind = 4, .bind = {idx, slot_token, slot_ref, counts},
        .writes = 7u << 1, .push = &pc, .push_size = sizeof pc,
        .groups = (uint32_t)counts->shape[0], .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                              const chm_tensor *probs, const chm_tensor *slot_token,
                              const chm_tensor *slot_ref, const chm_tensor *counts,
                              const chm_tensor *logits, chm_router_score score,
                              bool renormalize) {
    CHM_TRY(chm_vk_need_float(be, "router_topk", logits));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t R, E, K, flags;
    } pc = {(uint32_t)logits->shape[0], (uint32_t)logits->shape[1], (uint32_t)idx->shape[1],
            router_flags(score, renormalize)};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "router_topk_route", logits->dtype, false, name,
                                    sizeof name),
        .nbind = 4, .bind = {logits, gates, idx, probs},
        .writes = 7u << 1, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.R, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    CHM_TRY(chm_vk_run(vk, &d));
    return dispatch_plan(vk, slot_token, slot_ref, counts, idx);
}

chm_status chm_vk_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                  const chm_tensor *dgates, const chm_tensor *probs,
                                  const chm_tensor *idx, chm_router_score score,
                                  bool renormalize) {
    CHM_TRY(chm_vk_need_float(be, "router_topk_bwd", dlogits));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t R, E, K, flags;
    } pc = {(uint32_t)dlogits->shape[0], (uint32_t)dlogits->shape[1], (uint32_t)idx->shape[1],
            router_flags(score, renormalize)};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "router_topk_bwd", dlogits->dtype, false, name,
                                    sizeof name),
        .nbind = 4, .bind = {dgates, probs, idx, dlogits},
        .writes = 1u << 3, .status = true, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.R, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/*
 * select_topk in two passes (select_topk.comp's RANK and PLACE) through
 * flags [R,C]: R * C/64 workgroups rank 64 columns each against the row
 * (chimera-1b's 8 x 2048 scores: 256 workgroups, 512 comparisons an
 * invocation, against 2048 in each of 8 workgroups before), then R * C/wg
 * workgroups place them.
 */
enum { TOPK_RB = 64 }; /* columns of a rank workgroup (RB in the shader) */

static chm_status select_topk_split(chm_backend *be, const chm_tensor *idx,
                                    const chm_tensor *scores, bool flat) {
    chm_vk *vk = chm_vk_ctx(be);
    uint32_t R = (uint32_t)scores->shape[0], C = (uint32_t)scores->shape[1];
    uint32_t wg = vk->caps.wg_cap / TOPK_RB * TOPK_RB;
    chm_tensor flags;
    CHM_TRY(chm_vk_scratch(be, CHM_I32, (int64_t)R * C, &flags));
    struct {
        uint32_t R, C, K, flat;
    } pc = {R, C, (uint32_t)idx->shape[1], flat ? 1u : 0u};
    char name[48];
    chm_vk_dispatch rank = {
        .shader = chm_vk_variant_dt(vk, "select_topk_rank", scores->dtype, false, name,
                                    sizeof name),
        .nbind = 2, .bind = {scores, &flags}, .writes = 1u << 1,
        .push = &pc, .push_size = 3 * sizeof(uint32_t),
        .groups = R * ((C + TOPK_RB - 1) / TOPK_RB), .wg = wg,
    };
    chm_vk_dispatch place = {
        .shader = "select_topk_place", .nbind = 2, .bind = {&flags, idx}, .writes = 1u << 1,
        .push = &pc, .push_size = sizeof pc, .groups = R * ((C + wg - 1) / wg), .wg = wg,
    };
    chm_status rc = chm_vk_run(vk, &rank);
    if (!rc) rc = chm_vk_run(vk, &place);
    chm_vk_scratch_free(be, &flags);
    return rc;
}

chm_status chm_vk_select_topk(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores,
                              bool flat) {
    CHM_TRY(chm_vk_need_float(be, "select_topk", scores));
    chm_vk *vk = chm_vk_ctx(be);
    if (chm_tensor_numel(scores) == 0 || idx->shape[1] == 0) return CHM_OK;
    if (vk->caps.topk_split) return select_topk_split(be, idx, scores, flat);
    struct {
        uint32_t R, C, K, flat;
    } pc = {(uint32_t)scores->shape[0], (uint32_t)scores->shape[1], (uint32_t)idx->shape[1],
            flat ? 1u : 0u};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "select_topk", scores->dtype, false, name, sizeof name),
        .nbind = 2, .bind = {scores, idx}, .writes = 1u << 1,
        .push = &pc, .push_size = sizeof pc, .groups = pc.R, .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &d);
}
