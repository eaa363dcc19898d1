/*
 * ffn.c: the dense SwiGLU feed-forward block, forward and backward.
 *
 * xn [R,C]: g = xn W1^T, u = xn W3^T [R,F]; a = silu(g) * u; out = resid + a W2^T [R,C].
 */
#include "model_internal.h"

chm_status mdl_ffn_fwd(chm_model *m, const mdl_layer *ly, mdl_ffn_act *a, const chm_tensor *xn,
                       const chm_tensor *resid, const chm_tensor *out, int64_t R) {
    MDL_TRY(MDL_ALLOC(m, &a->g, R, m->F));
    MDL_TRY(MDL_ALLOC(m, &a->u, R, m->F));
    MDL_TRY(MDL_ALLOC(m, &a->a, R, m->F));
    chm_tensor x2 = MDL_VIEW(xn, 0, R, m->C), out2 = MDL_VIEW(out, 0, R, m->C);
    MDL_TRY(mdl_linear_fwd(m, &a->g, &x2, mdl_w(m, ly->w1), 0));
    MDL_TRY(mdl_linear_fwd(m, &a->u, &x2, mdl_w(m, ly->w3), 0));
    MDL_OP(m, chm_swiglu_fwd(m->be, &a->a, &a->g, &a->u));
    chm_tensor res2 = MDL_VIEW(resid, 0, R, m->C);
    return mdl_linear_fwd_from(m, &out2, &a->a, mdl_w(m, ly->w2), &res2);
}

chm_status mdl_ffn_bwd(chm_model *m, const mdl_layer *ly, const mdl_ffn_act *a,
                       const chm_tensor *xn, const chm_tensor *dout, const chm_tensor *dxn,
                       int64_t R) {
    size_t mark = mdl_mark(m);
    chm_tensor da, dg, du; /* [R,F] */
    MDL_TRY(MDL_ALLOC(m, &da, R, m->F));
    MDL_TRY(MDL_ALLOC(m, &dg, R, m->F));
    MDL_TRY(MDL_ALLOC(m, &du, R, m->F));
    chm_tensor x2 = MDL_VIEW(xn, 0, R, m->C), dx2 = MDL_VIEW(dxn, 0, R, m->C);
    chm_tensor dout2 = MDL_VIEW(dout, 0, R, m->C);
    MDL_TRY(mdl_linear_bwd(m, mdl_w(m, ly->w2), mdl_g(m, ly->w2), &dout2, &a->a, &da, 0));
    MDL_OP(m, chm_swiglu_bwd(m->be, &dg, &du, &da, &a->g, &a->u, false)); /* written */
    MDL_TRY(mdl_linear_bwd(m, mdl_w(m, ly->w1), mdl_g(m, ly->w1), &dg, &x2, &dx2, 0)); /* writes */
    MDL_TRY(mdl_linear_bwd(m, mdl_w(m, ly->w3), mdl_g(m, ly->w3), &du, &x2, &dx2, 1));
    mdl_release(m, mark);
    return CHM_OK;
}
