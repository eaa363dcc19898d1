/*
 * loss.c: the output head (final RMSNorm, unembedding, fused chunked
 * cross-entropy) and the loss slots.
 *
 * The head never holds logits for the whole batch: rows go through in
 * chunks of m->ce_rows, logits [rows,V] = hn W^T (W = the embedding when
 * tied, lm_head.weight otherwise), cross_entropy writes the per-row losses
 * and, in training, overwrites the logits with their gradient (scaled per
 * token), which at once gives this chunk's d(hn) rows and its share of dW.
 * Per-row losses are summed on the device into a loss slot; the slots are
 * downloaded once per pass (mdl_loss_read), the one host read of a step.
 */
#include <stdlib.h>

#include "model_internal.h"

chm_tensor mdl_loss_slot(const chm_model *m, int slot, int64_t n) {
    return MDL_VIEW(&m->loss, slot, n);
}

/* One chunk of rows [r0, r0+rc): logits, losses into the slot, and (training) gradients. */
static chm_status head_chunk(chm_model *m, const chm_tensor *hn, const chm_tensor *targets,
                             const chm_tensor *slot, double scale, const chm_tensor *dhn,
                             int64_t r0, int64_t rc) {
    chm_backend *be = m->be;
    int64_t C = m->C;
    chm_tensor lg = MDL_VIEW(&m->logits, 0, rc, m->V), ls = MDL_VIEW(&m->ce_loss, 0, rc);
    chm_tensor ls1 = MDL_VIEW(&m->ce_loss, 0, rc, 1), tg = MDL_VIEW(targets, r0, rc);
    chm_tensor hc = MDL_VIEW(hn, r0 * C, rc, C);
    MDL_TRY(mdl_linear_fwd(m, &lg, &hc, mdl_w(m, m->lm_head), 0));
    MDL_OP(m, chm_cross_entropy(be, &ls, dhn ? &lg : NULL, &lg, &tg, scale));
    MDL_OP(m, chm_sum_rows(be, slot, &ls1));
    if (!dhn) return CHM_OK;
    chm_tensor dhc = MDL_VIEW(dhn, r0 * C, rc, C);
    return mdl_linear_bwd(m, mdl_w(m, m->lm_head), mdl_g(m, m->lm_head), &lg, &hc, &dhc, 0);
}

chm_status mdl_head(chm_model *m, int norm, const chm_tensor *hidden, const chm_tensor *hn,
                    const chm_tensor *rstd, const chm_tensor *targets, int slot, double scale,
                    const chm_tensor *dhidden) {
    chm_backend *be = m->be;
    int64_t R = chm_tensor_rows(hidden);
    MDL_OP(m, chm_rmsnorm_fwd(be, hn, rstd, hidden, mdl_w(m, norm), m->cfg.norm_eps));
    size_t mark = mdl_mark(m);
    chm_tensor dhn; /* [R,C]: every row is written by its chunk */
    if (dhidden) MDL_TRY(mdl_alloc(m, m->dt, hidden->ndim, hidden->shape, &dhn));
    chm_tensor sl = mdl_loss_slot(m, slot, 1);
    for (int64_t r0 = 0; r0 < R; r0 += m->ce_rows) {
        int64_t rc = R - r0 < m->ce_rows ? R - r0 : m->ce_rows;
        MDL_TRY(head_chunk(m, hn, targets, &sl, scale, dhidden ? &dhn : NULL, r0, rc));
    }
    if (dhidden)
        MDL_OP(m, chm_rmsnorm_bwd(be, dhidden, mdl_g(m, norm), &dhn, hidden, mdl_w(m, norm), rstd));
    mdl_release(m, mark);
    return CHM_OK;
}

/* Per-token counts of the loss parts of a pass over B sequences of T tokens. */
chm_status mdl_loss_read(chm_model *m, chm_model_loss *loss) {
    chm_model_loss out = {0};
    double *s = m->host_loss;
    MDL_TRY(mdl_download_f64(m->be, &m->loss, s)); /* stats dtype: f32 unless f64 */
    const chm_config_model *c = &m->cfg;
    double R = (double)(m->B * m->T);
    out.ce = s[MDL_LOSS_CE] / R;
    for (int k = 0; k < m->depth; k++) {
        double n = (double)(m->B * (m->T - k - 1));
        out.mtp_depth[k] = n > 0 ? s[MDL_LOSS_MTP + k] / n : 0;
        out.mtp += out.mtp_depth[k] / (double)m->depth;
    }
    if (m->n_moe) {
        out.moe_balance = s[MDL_LOSS_BALANCE] / m->n_moe;
        out.moe_z = s[MDL_LOSS_Z] / m->n_moe;
    }
    if (m->n_mod) out.mod_aux = s[MDL_LOSS_MOD] / (m->n_mod * R);
    out.total = out.ce + c->mtp.weight * out.mtp + c->moe.aux_weight * out.moe_balance +
                c->moe.z_weight * out.moe_z + c->mod.aux_weight * out.mod_aux;
    if (loss) *loss = out;
    return CHM_OK;
}
