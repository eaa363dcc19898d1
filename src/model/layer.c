/*
 * layer.c: one pre-norm residual layer, forward and backward, and the
 * linear maps every block uses.
 *
 *   h   = x + mixer(norm1(x))      mixer: attention or Mamba
 *   out = h + ffn(norm2(h))        ffn: dense SwiGLU or MoE
 * A layer routed by mixture-of-depths goes through mod.c, which runs this
 * same core on the selected tokens. The backward works in place on the
 * residual gradient: d(out) becomes d(h) after the FFN branch's norm
 * backward accumulates into it, then d(x) after the mixer's.
 */
#include "model_internal.h"

chm_status mdl_linear_fwd(chm_model *m, const chm_tensor *y, const chm_tensor *x,
                          const chm_tensor *W, double beta) {
    MDL_OP(m, chm_matmul(m->be, y, x, W, NULL, false, true, 1.0, beta));
    return CHM_OK;
}

chm_status mdl_linear_fwd_from(chm_model *m, const chm_tensor *y, const chm_tensor *x,
                               const chm_tensor *W, const chm_tensor *base) {
    MDL_OP(m, chm_matmul_from(m->be, y, x, W, base, false, true, 1.0, 1.0));
    return CHM_OK;
}

chm_status mdl_linear_bwd(chm_model *m, const chm_tensor *W, const chm_tensor *gW,
                          const chm_tensor *dy, const chm_tensor *x, const chm_tensor *dx,
                          double dx_beta) {
    MDL_OP(m, chm_matmul(m->be, gW, dy, x, NULL, true, false, 1.0, 1.0));
    if (dx) MDL_OP(m, chm_matmul(m->be, dx, dy, W, NULL, false, false, 1.0, dx_beta));
    return CHM_OK;
}

static chm_status core_alloc(chm_model *m, mdl_layer_act *act, int64_t B, int64_t T) {
    act->B = B;
    act->T = T;
    MDL_TRY(MDL_ALLOC(m, &act->xn1, B, T, m->C));
    MDL_TRY(MDL_ALLOC_STATS(m, &act->rstd1, B * T));
    MDL_TRY(MDL_ALLOC(m, &act->h, B, T, m->C));
    MDL_TRY(MDL_ALLOC(m, &act->xn2, B, T, m->C));
    return MDL_ALLOC_STATS(m, &act->rstd2, B * T);
}

chm_status mdl_layer_core_fwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act, int64_t B,
                              int64_t T) {
    chm_backend *be = m->be;
    double eps = m->cfg.norm_eps;
    MDL_TRY(core_alloc(m, act, B, T));
    MDL_OP(m, chm_rmsnorm_fwd(be, &act->xn1, &act->rstd1, &act->x, mdl_w(m, ly->norm1), eps));
    /* h = x + mixer(xn1), out = h + ffn(xn2): the output products read the residual (no
       copies first); the MoE FFN adds its experts' rows into a copy of h (a scatter) */
    if (ly->mixer == 'A')
        MDL_TRY(mdl_attn_fwd(m, ly, &act->attn, &act->xn1, &act->x, &act->h, B, T));
    else
        MDL_TRY(mdl_mamba_fwd(m, ly, &act->mamba, &act->xn1, &act->x, &act->h, B, T));
    MDL_OP(m, chm_rmsnorm_fwd(be, &act->xn2, &act->rstd2, &act->h, mdl_w(m, ly->norm2), eps));
    if (!ly->moe) return mdl_ffn_fwd(m, ly, &act->ffn, &act->xn2, &act->h, &act->out, B * T);
    MDL_OP(m, chm_copy(be, &act->out, &act->h));
    return mdl_moe_fwd(m, ly, &act->moe, &act->xn2, &act->out, B * T);
}

chm_status mdl_layer_core_bwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act,
                              const chm_tensor *dres) {
    chm_backend *be = m->be;
    int64_t B = act->B, T = act->T;
    size_t mark = mdl_mark(m);
    chm_tensor dxn; /* [B,T,C] gradient of a norm's output, used by both branches */
    MDL_TRY(MDL_ALLOC(m, &dxn, B, T, m->C));
    if (ly->moe) { /* the MoE backward accumulates; the others write (model_internal.h) */
        MDL_OP(m, chm_fill(be, &dxn, 0));
        MDL_TRY(mdl_moe_bwd(m, ly, &act->moe, &act->xn2, dres, &dxn, B * T));
    } else {
        MDL_TRY(mdl_ffn_bwd(m, ly, &act->ffn, &act->xn2, dres, &dxn, B * T));
    }
    MDL_OP(m, chm_rmsnorm_bwd(be, dres, mdl_g(m, ly->norm2), &dxn, &act->h, mdl_w(m, ly->norm2),
                              &act->rstd2));
    if (ly->mixer == 'A')
        MDL_TRY(mdl_attn_bwd(m, ly, &act->attn, &act->xn1, dres, &dxn, B, T));
    else
        MDL_TRY(mdl_mamba_bwd(m, ly, &act->mamba, &act->xn1, dres, &dxn, B, T));
    MDL_OP(m, chm_rmsnorm_bwd(be, dres, mdl_g(m, ly->norm1), &dxn, &act->x, mdl_w(m, ly->norm1),
                              &act->rstd1));
    mdl_release(m, mark);
    return CHM_OK;
}

chm_status mdl_layer_fwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act, int64_t B,
                         int64_t T) {
    if (ly->mod) return mdl_mod_fwd(m, ly, act, B, T);
    return mdl_layer_core_fwd(m, ly, act, B, T);
}

chm_status mdl_layer_bwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act,
                         const chm_tensor *dres) {
    if (ly->mod) return mdl_mod_bwd(m, ly, act, dres);
    return mdl_layer_core_bwd(m, ly, act, dres);
}
