/*
 * mtp.c: multi-token prediction modules (DeepSeek-V3 style), forward with
 * their heads, and backward.
 *
 * Module k (0-based; it predicts token t+2+k at position t), h_prev [B,T,C]
 * = the trunk's last residual for k = 0, else module k-1's output:
 *   a = norm_h(h_prev), e = emb(token t+1+k), b = norm_e(e)
 *   p = a P0^T + b P1^T       (proj.weight [2,C,C]: the two halves of a
 *                              Linear(2C -> C) on [a; b], summed)
 *   hk = layer(p)             (one layer: mixer = the pattern's first letter,
 *                              dense SwiGLU, no MoD; MoE and MoD stay in the
 *                              trunk so that the module's tokens are independent)
 *   loss_k = CE(unembed(norm_out(hk)), token t+2+k) over positions with a target
 * All positions 0..T-1 run (static shapes); positions whose embedded token or
 * target lies past the window use token 0 and target -1: the layer is causal,
 * so they cannot change the positions that count. Embedding and unembedding
 * are the trunk's. Loss weight: mtp.weight times the mean over depths.
 */
#include "model_internal.h"

static chm_status mtp_alloc(chm_model *m, mdl_mtp_act *a) {
    int64_t B = m->B, T = m->T, C = m->C, R = B * T;
    MDL_TRY(MDL_ALLOC(m, &a->a, B, T, C));
    MDL_TRY(MDL_ALLOC_STATS(m, &a->rstd_a, R));
    MDL_TRY(MDL_ALLOC(m, &a->e, R, C));
    MDL_TRY(MDL_ALLOC(m, &a->b, R, C));
    MDL_TRY(MDL_ALLOC_STATS(m, &a->rstd_b, R));
    MDL_TRY(MDL_ALLOC(m, &a->p, B, T, C));
    MDL_TRY(MDL_ALLOC(m, &a->hk, B, T, C));
    if (m->train) MDL_TRY(MDL_ALLOC(m, &a->dhk, B, T, C));
    MDL_TRY(MDL_ALLOC(m, &a->hn, B, T, C));
    return MDL_ALLOC_STATS(m, &a->rstd_n, R);
}

chm_status mdl_mtp_fwd(chm_model *m, int k, const chm_tensor *h_prev) {
    chm_backend *be = m->be;
    const mdl_mtp *t = &m->mtp[k];
    mdl_mtp_act *a = &m->mtp_acts[k];
    int64_t B = m->B, T = m->T, C = m->C, R = B * T;
    double eps = m->cfg.norm_eps;
    MDL_TRY(mtp_alloc(m, a));
    MDL_OP(m, chm_rmsnorm_fwd(be, &a->a, &a->rstd_a, h_prev, mdl_w(m, t->norm_h), eps));
    MDL_OP(m, chm_embedding_fwd(be, &a->e, &m->ids.mtp_in[k], mdl_w(m, m->embed)));
    MDL_OP(m, chm_rmsnorm_fwd(be, &a->b, &a->rstd_b, &a->e, mdl_w(m, t->norm_e), eps));
    chm_tensor p0 = MDL_VIEW(mdl_w(m, t->proj), 0, C, C),
               p1 = MDL_VIEW(mdl_w(m, t->proj), C * C, C, C);
    chm_tensor a2 = MDL_VIEW(&a->a, 0, R, C), p2 = MDL_VIEW(&a->p, 0, R, C);
    MDL_TRY(mdl_linear_fwd(m, &p2, &a2, &p0, 0));
    MDL_TRY(mdl_linear_fwd(m, &p2, &a->b, &p1, 1));
    a->layer.x = a->p;
    a->layer.out = a->hk;
    MDL_TRY(mdl_layer_core_fwd(m, &t->layer, &a->layer, B, T));
    if (m->train) MDL_OP(m, chm_fill(be, &a->dhk, 0));
    int64_t n = B * (T - k - 1);
    double scale = n > 0 ? m->gscale * m->cfg.mtp.weight / (double)m->depth / (double)n : 0;
    return mdl_head(m, t->norm_out, &a->hk, &a->hn, &a->rstd_n, &m->ids.mtp_tgt[k],
                    MDL_LOSS_MTP + k, scale, m->train ? &a->dhk : NULL);
}

chm_status mdl_mtp_bwd(chm_model *m, int k, const chm_tensor *h_prev, const chm_tensor *dh_prev) {
    chm_backend *be = m->be;
    const mdl_mtp *t = &m->mtp[k];
    mdl_mtp_act *a = &m->mtp_acts[k];
    int64_t B = m->B, T = m->T, C = m->C, R = B * T;
    /* dhk: the head's and module k+1's gradient of hk; becomes d(p) */
    MDL_TRY(mdl_layer_core_bwd(m, &t->layer, &a->layer, &a->dhk));
    size_t mark = mdl_mark(m);
    chm_tensor da, db, de;
    MDL_TRY(MDL_ALLOC(m, &da, B, T, C));
    MDL_TRY(MDL_ALLOC(m, &db, R, C));
    MDL_TRY(MDL_ALLOC(m, &de, R, C));
    chm_tensor p0 = MDL_VIEW(mdl_w(m, t->proj), 0, C, C),
               p1 = MDL_VIEW(mdl_w(m, t->proj), C * C, C, C);
    chm_tensor g0 = MDL_VIEW(mdl_g(m, t->proj), 0, C, C),
               g1 = MDL_VIEW(mdl_g(m, t->proj), C * C, C, C);
    chm_tensor dp2 = MDL_VIEW(&a->dhk, 0, R, C), a2 = MDL_VIEW(&a->a, 0, R, C);
    chm_tensor da2 = MDL_VIEW(&da, 0, R, C);
    MDL_TRY(mdl_linear_bwd(m, &p0, &g0, &dp2, &a2, &da2, 0));
    MDL_TRY(mdl_linear_bwd(m, &p1, &g1, &dp2, &a->b, &db, 0));
    MDL_OP(m, chm_rmsnorm_bwd(be, dh_prev, mdl_g(m, t->norm_h), &da, h_prev, mdl_w(m, t->norm_h),
                              &a->rstd_a));
    MDL_OP(m, chm_fill(be, &de, 0));
    MDL_OP(m, chm_rmsnorm_bwd(be, &de, mdl_g(m, t->norm_e), &db, &a->e, mdl_w(m, t->norm_e),
                              &a->rstd_b));
    MDL_OP(m, chm_embedding_bwd(be, mdl_g(m, m->embed), &de, &m->ids.mtp_in[k]));
    mdl_release(m, mark);
    return CHM_OK;
}
