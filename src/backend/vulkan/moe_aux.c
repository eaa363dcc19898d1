/*
 * moe_aux.c: the vulkan backend's MoE auxiliary losses, forward and backward
 * fused (shader moe_aux.comp): the Switch load-balancing loss and the ST-MoE
 * z-loss of a softmax router's logits [R,E] with routed idx [R,K].
 * losses [2] = {balance, zloss} are WRITTEN; dlogits [R,E] (optional)
 * ACCUMULATES balance_scale * d(balance) + z_scale * d(zloss), f constant.
 *
 * Four dispatches: the logsumexp of each row; per expert the routed
 * fraction f_e and mean probability P_e (workgroup sums in a fixed order);
 * the two losses; the gradient rows. Deterministic. An idx entry outside
 * [0, E) is reported as CHM_ERR_INVALID_ARG by the next chm_sync or download.
 * logits and dlogits are f32, or both bf16 or both f16 (native variants:
 * loaded into f32, dlogits rounded once when its sum is added; vk_dtype.h);
 * losses and the lse / stats scratch are f32 whatever the dtype.
 */
#include "vk_dtype.h"

/* The push block of the per-row variants (the scales only matter to moe_aux_grad). */
typedef struct aux_row_push {
    uint32_t R, E;
    float bs, zs;
} aux_row_push;

/* lse [R] and stats [2E] = {f_e, P_e} from logits and idx. */
static chm_status aux_stats(chm_vk *vk, const chm_tensor *lse, const chm_tensor *stats,
                            const chm_tensor *logits, const chm_tensor *idx) {
    aux_row_push pr = {(uint32_t)logits->shape[0], (uint32_t)logits->shape[1], 0, 0};
    char name[48];
    chm_vk_dispatch rows = {
        .shader = chm_vk_variant_dt(vk, "moe_aux_rows", logits->dtype, false, name, sizeof name),
        .nbind = 2, .bind = {logits, lse}, .writes = 1u << 1,
        .push = &pr, .push_size = sizeof pr,
        .groups = chm_vk_groups(pr.R, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    CHM_TRY(chm_vk_run(vk, &rows));
    struct {
        uint32_t R, E, K;
    } pc = {pr.R, pr.E, (uint32_t)idx->shape[1]};
    chm_vk_dispatch cols = {
        .shader = chm_vk_variant_dt(vk, "moe_aux_cols", logits->dtype, true, name, sizeof name),
        .nbind = 4, .bind = {logits, idx, lse, stats}, .writes = 1u << 3, .status = true,
        .push = &pc, .push_size = sizeof pc, .groups = pc.E, .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &cols);
}

static chm_status aux_losses(chm_vk *vk, const chm_tensor *losses, const chm_tensor *lse,
                             const chm_tensor *stats, uint32_t R, uint32_t E) {
    struct {
        uint32_t R, E;
    } pc = {R, E};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_sg(vk, "moe_aux_loss", name, sizeof name),
        .nbind = 3, .bind = {lse, stats, losses}, .writes = 1u << 2,
        .push = &pc, .push_size = sizeof pc, .groups = 1, .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &d);
}

static chm_status aux_grad(chm_vk *vk, const chm_tensor *dlogits, const chm_tensor *logits,
                           const chm_tensor *lse, const chm_tensor *stats, double bs, double zs) {
    aux_row_push pc = {(uint32_t)logits->shape[0], (uint32_t)logits->shape[1], (float)bs,
                       (float)zs};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "moe_aux_grad", logits->dtype, false, name, sizeof name),
        .nbind = 4, .bind = {logits, lse, stats, dlogits},
        .writes = 1u << 3, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.R, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_moe_aux(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                          const chm_tensor *logits, const chm_tensor *idx, double balance_scale,
                          double z_scale) {
    CHM_TRY(chm_vk_need_float(be, "moe_aux", logits));
    chm_vk *vk = chm_vk_ctx(be);
    int64_t R = logits->shape[0], E = logits->shape[1];
    chm_tensor lse = {0}, stats = {0};
    chm_status rc = chm_vk_scratch(be, CHM_F32, R, &lse);
    if (!rc) rc = chm_vk_scratch(be, CHM_F32, 2 * E, &stats);
    if (!rc) rc = aux_stats(vk, &lse, &stats, logits, idx);
    if (!rc) rc = aux_losses(vk, losses, &lse, &stats, (uint32_t)R, (uint32_t)E);
    if (!rc && dlogits) rc = aux_grad(vk, dlogits, logits, &lse, &stats, balance_scale, z_scale);
    if (lse.buf) chm_vk_scratch_free(be, &lse);
    if (stats.buf) chm_vk_scratch_free(be, &stats);
    return rc;
}
