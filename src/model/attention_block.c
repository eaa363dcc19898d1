/*
 * attention_block.c: the attention mixer, forward and hand-written backward.
 *
 * xn [B,T,C] (normalised layer input):
 *   q = xn Wq^T [B,T,H,D], k = xn Wk^T, v = xn Wv^T [B,T,Hk,D] (GQA: Hk | H)
 *   q, k <- RoPE(q, k) at positions 0..T-1 (theta from the config)
 *   att = causal softmax(q.k / sqrt(D)) v [B,T,H,D], lse saved
 *   out += att Wo^T [B,T,C]   (accumulated into the residual)
 * The backward reverses it; the scratch (dq, dk, dv and their pre-RoPE
 * versions) lives only for the call. Under mixture-of-depths the "sequence"
 * is a sequence's selected tokens, so positions are their ranks.
 */
#include <math.h>

#include "model_internal.h"

chm_status mdl_attn_fwd(chm_model *m, const mdl_layer *ly, mdl_attn_act *a, const chm_tensor *xn,
                        const chm_tensor *resid, const chm_tensor *out, int64_t B, int64_t T) {
    chm_backend *be = m->be;
    int64_t R = B * T, H = m->H, Hk = m->Hk, D = m->Dh, C = m->C;
    MDL_TRY(MDL_ALLOC(m, &a->q, B, T, H, D));
    MDL_TRY(MDL_ALLOC(m, &a->k, B, T, Hk, D));
    MDL_TRY(MDL_ALLOC(m, &a->v, B, T, Hk, D));
    MDL_TRY(MDL_ALLOC(m, &a->att, B, T, H, D));
    MDL_TRY(MDL_ALLOC_STATS(m, &a->lse, B, H, T));
    chm_tensor x2 = MDL_VIEW(xn, 0, R, C), q2 = MDL_VIEW(&a->q, 0, R, H * D);
    chm_tensor k2 = MDL_VIEW(&a->k, 0, R, Hk * D), v2 = MDL_VIEW(&a->v, 0, R, Hk * D);
    MDL_TRY(mdl_linear_fwd(m, &q2, &x2, mdl_w(m, ly->q), 0));
    MDL_TRY(mdl_linear_fwd(m, &k2, &x2, mdl_w(m, ly->k), 0));
    MDL_TRY(mdl_linear_fwd(m, &v2, &x2, mdl_w(m, ly->v), 0));
    MDL_OP(m, chm_rope_fwd(be, &a->q, &a->q, m->cfg.rope_theta, 0));
    MDL_OP(m, chm_rope_fwd(be, &a->k, &a->k, m->cfg.rope_theta, 0));
    MDL_OP(m, chm_attention_fwd(be, &a->att, &a->lse, &a->q, &a->k, &a->v, 1.0 / sqrt((double)D)));
    chm_tensor att2 = MDL_VIEW(&a->att, 0, R, H * D), out2 = MDL_VIEW(out, 0, R, C);
    chm_tensor res2 = MDL_VIEW(resid, 0, R, C);
    return mdl_linear_fwd_from(m, &out2, &att2, mdl_w(m, ly->o), &res2);
}

/* Scratch of the backward. */
typedef struct attn_grads {
    chm_tensor datt;   /* [B,T,H,D] d(att), then reused as d(q before RoPE) */
    chm_tensor dq;     /* [B,T,H,D] d(q after RoPE) */
    chm_tensor dk, dv; /* [B,T,Hk,D] */
    chm_tensor dkp;    /* [B,T,Hk,D] d(k before RoPE) */
} attn_grads;

static chm_status attn_grads_alloc(chm_model *m, attn_grads *g, int64_t B, int64_t T) {
    MDL_TRY(MDL_ALLOC(m, &g->datt, B, T, m->H, m->Dh));
    MDL_TRY(MDL_ALLOC(m, &g->dq, B, T, m->H, m->Dh));
    MDL_TRY(MDL_ALLOC(m, &g->dk, B, T, m->Hk, m->Dh));
    MDL_TRY(MDL_ALLOC(m, &g->dv, B, T, m->Hk, m->Dh));
    return MDL_ALLOC(m, &g->dkp, B, T, m->Hk, m->Dh);
}

/* dq, dk, dv from d(att); then dq, dk through the RoPE into g->datt and g->dkp. */
static chm_status attn_core_bwd(chm_model *m, const mdl_attn_act *a, attn_grads *g) {
    chm_backend *be = m->be;
    double theta = m->cfg.rope_theta;
    MDL_OP(m, chm_fill(be, &g->dq, 0));
    MDL_OP(m, chm_fill(be, &g->dk, 0));
    MDL_OP(m, chm_fill(be, &g->dv, 0));
    MDL_OP(m, chm_attention_bwd(be, &g->dq, &g->dk, &g->dv, &g->datt, &a->q, &a->k, &a->v, &a->att,
                                &a->lse, 1.0 / sqrt((double)m->Dh)));
    MDL_OP(m, chm_fill(be, &g->datt, 0));
    MDL_OP(m, chm_rope_bwd(be, &g->datt, &g->dq, theta, 0));
    MDL_OP(m, chm_fill(be, &g->dkp, 0));
    MDL_OP(m, chm_rope_bwd(be, &g->dkp, &g->dk, theta, 0));
    return CHM_OK;
}

chm_status mdl_attn_bwd(chm_model *m, const mdl_layer *ly, const mdl_attn_act *a,
                        const chm_tensor *xn, const chm_tensor *dout, const chm_tensor *dxn,
                        int64_t B, int64_t T) {
    int64_t R = B * T, HD = m->H * m->Dh, KD = m->Hk * m->Dh, C = m->C;
    size_t mark = mdl_mark(m);
    attn_grads g;
    MDL_TRY(attn_grads_alloc(m, &g, B, T));
    chm_tensor x2 = MDL_VIEW(xn, 0, R, C), dx2 = MDL_VIEW(dxn, 0, R, C);
    chm_tensor dout2 = MDL_VIEW(dout, 0, R, C), att2 = MDL_VIEW(&a->att, 0, R, HD);
    chm_tensor datt2 = MDL_VIEW(&g.datt, 0, R, HD);
    /* out = att Wo^T: d(att) = dout Wo, dWo += dout^T att */
    MDL_TRY(mdl_linear_bwd(m, mdl_w(m, ly->o), mdl_g(m, ly->o), &dout2, &att2, &datt2, 0));
    MDL_TRY(attn_core_bwd(m, a, &g));
    chm_tensor dk2 = MDL_VIEW(&g.dkp, 0, R, KD), dv2 = MDL_VIEW(&g.dv, 0, R, KD);
    MDL_TRY(mdl_linear_bwd(m, mdl_w(m, ly->q), mdl_g(m, ly->q), &datt2, &x2, &dx2, 0)); /* writes */
    MDL_TRY(mdl_linear_bwd(m, mdl_w(m, ly->k), mdl_g(m, ly->k), &dk2, &x2, &dx2, 1));
    MDL_TRY(mdl_linear_bwd(m, mdl_w(m, ly->v), mdl_g(m, ly->v), &dv2, &x2, &dx2, 1));
    mdl_release(m, mark);
    return CHM_OK;
}
