/*
 * mamba_block.c: the Mamba-1 mixer, forward and hand-written backward.
 *
 * xn [B,T,C] (normalised layer input), in_proj [2Di,C] viewed as the x rows
 * and the z rows, x_proj [Rk+2N,Di] viewed as its dt, B and C rows:
 *   xin = xn Wx^T, z = xn Wz^T               [B,T,Di]
 *   xc  = SiLU(causal depthwise conv1d(xin)) [B,T,Di]  (width d_conv, with bias)
 *   dtl = xc Wdt^T [B,T,Rk], Bm = xc WB^T, Cm = xc WC^T [B,T,N]
 *   delta = dtl dt_proj^T [B,T,Di]   (dt_proj.bias and softplus are applied in the scan)
 *   A = -exp(A_log) [Di,N]
 *   y = scan(u=xc, delta, A, Bm, Cm, D, z gate, delta_bias=dt_proj.bias, softplus) [B,T,Di]
 *   out += y out_proj^T   (accumulated into the residual)
 * The backward reverses it: D and dt_proj.bias gradients come straight out of
 * the scan's backward into the gradient buffer.
 */
#include "model_internal.h"

mdl_mamba_w mdl_mamba_views(const chm_model *m, const chm_tensor *in_proj,
                            const chm_tensor *x_proj) {
    int64_t Di = m->Di, C = m->C, Rk = m->Rk, N = m->N;
    mdl_mamba_w w = {
        .in_x = MDL_VIEW(in_proj, 0, Di, C),
        .in_z = MDL_VIEW(in_proj, Di * C, Di, C),
        .xp_dt = MDL_VIEW(x_proj, 0, Rk, Di),
        .xp_b = MDL_VIEW(x_proj, Rk * Di, N, Di),
        .xp_c = MDL_VIEW(x_proj, (Rk + N) * Di, N, Di),
    };
    return w;
}

/* Whether the backend's scan backward reads saved states (none when only counting). */
static bool keep_saved(const chm_model *m) {
    return m->be && (m->be->caps & CHM_CAP_SCAN_SAVED);
}

static chm_status mamba_alloc(chm_model *m, mdl_mamba_act *a, int64_t B, int64_t T) {
    int64_t Di = m->Di, N = m->N;
    MDL_TRY(MDL_ALLOC(m, &a->xin, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &a->z, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &a->xc, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &a->dtl, B, T, m->Rk));
    MDL_TRY(MDL_ALLOC(m, &a->bm, B, T, N));
    MDL_TRY(MDL_ALLOC(m, &a->cm, B, T, N));
    MDL_TRY(MDL_ALLOC(m, &a->delta, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &a->A, Di, N));
    /* The scan's states every CHM_SCAN_SAVE_STRIDE steps, f32 whatever the model's dtype:
       the forward writes them, the backward starts its chunks from them; kept only where
       the backward reads them (chimera-1b at 8 x 2048: 128 MiB a Mamba layer). */
    if (keep_saved(m)) {
        int64_t hs[4] = {B, (T + CHM_SCAN_SAVE_STRIDE - 1) / CHM_SCAN_SAVE_STRIDE, Di, N};
        MDL_TRY(mdl_alloc(m, CHM_F32, 4, hs, &a->hsave));
    }
    return MDL_ALLOC(m, &a->y, B, T, Di);
}

/* The scan's arguments over a's tensors; the backward writes (not accumulates) the
   gradients in `set` (CHM_SCAN_SET_*). */
static chm_scan_args scan_args(const chm_model *m, const mdl_layer *ly, const mdl_mamba_act *a,
                               unsigned set) {
    chm_scan_args s = {&a->xc, &a->delta, &a->A, &a->bm, &a->cm, mdl_w(m, ly->D),
                       &a->z,  mdl_w(m, ly->dt_b), true,
                       keep_saved(m) ? &a->hsave : NULL, set};
    return s;
}

chm_status mdl_mamba_fwd(chm_model *m, const mdl_layer *ly, mdl_mamba_act *a, const chm_tensor *xn,
                         const chm_tensor *out, int64_t B, int64_t T) {
    chm_backend *be = m->be;
    int64_t R = B * T, Di = m->Di, N = m->N, C = m->C;
    MDL_TRY(mamba_alloc(m, a, B, T));
    mdl_mamba_w w = mdl_mamba_views(m, mdl_w(m, ly->in_proj), mdl_w(m, ly->x_proj));
    chm_tensor x2 = MDL_VIEW(xn, 0, R, C), xin2 = MDL_VIEW(&a->xin, 0, R, Di);
    chm_tensor z2 = MDL_VIEW(&a->z, 0, R, Di), xc2 = MDL_VIEW(&a->xc, 0, R, Di);
    chm_tensor dtl2 = MDL_VIEW(&a->dtl, 0, R, m->Rk), bm2 = MDL_VIEW(&a->bm, 0, R, N);
    chm_tensor cm2 = MDL_VIEW(&a->cm, 0, R, N), delta2 = MDL_VIEW(&a->delta, 0, R, Di);
    MDL_TRY(mdl_linear_fwd(m, &xin2, &x2, &w.in_x, 0));
    MDL_TRY(mdl_linear_fwd(m, &z2, &x2, &w.in_z, 0));
    MDL_OP(m, chm_causal_conv1d_fwd(be, &a->xc, &a->xin, mdl_w(m, ly->conv_w), mdl_w(m, ly->conv_b),
                                    true));
    MDL_TRY(mdl_linear_fwd(m, &dtl2, &xc2, &w.xp_dt, 0));
    MDL_TRY(mdl_linear_fwd(m, &bm2, &xc2, &w.xp_b, 0));
    MDL_TRY(mdl_linear_fwd(m, &cm2, &xc2, &w.xp_c, 0));
    MDL_TRY(mdl_linear_fwd(m, &delta2, &dtl2, mdl_w(m, ly->dt_w), 0));
    MDL_OP(m, chm_exp_fwd(be, &a->A, mdl_w(m, ly->A_log), -1.0));
    chm_scan_args s = scan_args(m, ly, a, 0);
    MDL_OP(m, chm_selective_scan_fwd(be, &a->y, &s));
    chm_tensor y2 = MDL_VIEW(&a->y, 0, R, Di), out2 = MDL_VIEW(out, 0, R, C);
    return mdl_linear_fwd(m, &out2, &y2, mdl_w(m, ly->out_proj), 1);
}

/* Scratch of the backward, all [R,.] except dA. */
typedef struct mamba_grads {
    chm_tensor dy, dxc, ddelta, dz, dxin; /* [B,T,Di] */
    chm_tensor ddtl;                      /* [B,T,Rk] */
    chm_tensor dbm, dcm;                  /* [B,T,N] */
    chm_tensor dA;                        /* [Di,N] */
} mamba_grads;

static chm_status mamba_grads_alloc(chm_model *m, mamba_grads *g, int64_t B, int64_t T) {
    int64_t Di = m->Di, N = m->N;
    MDL_TRY(MDL_ALLOC(m, &g->dy, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &g->dxc, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &g->ddelta, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &g->dz, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &g->dxin, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &g->ddtl, B, T, m->Rk));
    MDL_TRY(MDL_ALLOC(m, &g->dbm, B, T, N));
    MDL_TRY(MDL_ALLOC(m, &g->dcm, B, T, N));
    return MDL_ALLOC(m, &g->dA, Di, N);
}

/* The scan's backward (g->dy given): dxc, ddelta, dz, dBm, dCm, and A_log, D, dt bias grads.
   The scratch gradients are written by the scan (no zero fills); D's and the dt bias's
   accumulate into the gradient buffer. */
static chm_status mamba_scan_bwd(chm_model *m, const mdl_layer *ly, const mdl_mamba_act *a,
                                 mamba_grads *g) {
    chm_backend *be = m->be;
    unsigned set = CHM_SCAN_SET_DU | CHM_SCAN_SET_DDELTA | CHM_SCAN_SET_DZ | CHM_SCAN_SET_DBM |
                   CHM_SCAN_SET_DCM | CHM_SCAN_SET_DA;
    chm_scan_args s = scan_args(m, ly, a, set);
    chm_scan_grads sg = {&g->dxc, &g->ddelta,
                         &g->dA,  &g->dbm,
                         &g->dcm, (chm_tensor *)mdl_g(m, ly->D),
                         &g->dz,  (chm_tensor *)mdl_g(m, ly->dt_b)};
    MDL_OP(m, chm_selective_scan_bwd(be, &sg, &g->dy, &s));
    MDL_OP(m, chm_exp_bwd(be, mdl_g(m, ly->A_log), &g->dA, &a->A));
    return CHM_OK;
}

chm_status mdl_mamba_bwd(chm_model *m, const mdl_layer *ly, const mdl_mamba_act *a,
                         const chm_tensor *xn, const chm_tensor *dout, const chm_tensor *dxn,
                         int64_t B, int64_t T) {
    int64_t R = B * T, Di = m->Di, N = m->N, C = m->C, Rk = m->Rk;
    size_t mark = mdl_mark(m);
    mamba_grads g;
    MDL_TRY(mamba_grads_alloc(m, &g, B, T));
    mdl_mamba_w w = mdl_mamba_views(m, mdl_w(m, ly->in_proj), mdl_w(m, ly->x_proj));
    mdl_mamba_w gw = mdl_mamba_views(m, mdl_g(m, ly->in_proj), mdl_g(m, ly->x_proj));
#define V2(t, c) MDL_VIEW(t, 0, R, c)
    chm_tensor dout2 = V2(dout, C), y2 = V2(&a->y, Di), dy2 = V2(&g.dy, Di);
    MDL_TRY(
        mdl_linear_bwd(m, mdl_w(m, ly->out_proj), mdl_g(m, ly->out_proj), &dout2, &y2, &dy2, 0));
    MDL_TRY(mamba_scan_bwd(m, ly, a, &g));
    /* delta = dtl dt_w^T */
    chm_tensor dd2 = V2(&g.ddelta, Di), dtl2 = V2(&a->dtl, Rk), ddtl2 = V2(&g.ddtl, Rk);
    MDL_TRY(mdl_linear_bwd(m, mdl_w(m, ly->dt_w), mdl_g(m, ly->dt_w), &dd2, &dtl2, &ddtl2, 0));
    /* the x_proj blocks read xc; the scan's du already sits in dxc */
    chm_tensor xc2 = V2(&a->xc, Di), dxc2 = V2(&g.dxc, Di);
    chm_tensor dbm2 = V2(&g.dbm, N), dcm2 = V2(&g.dcm, N);
    MDL_TRY(mdl_linear_bwd(m, &w.xp_dt, &gw.xp_dt, &ddtl2, &xc2, &dxc2, 1));
    MDL_TRY(mdl_linear_bwd(m, &w.xp_b, &gw.xp_b, &dbm2, &xc2, &dxc2, 1));
    MDL_TRY(mdl_linear_bwd(m, &w.xp_c, &gw.xp_c, &dcm2, &xc2, &dxc2, 1));
    MDL_OP(m, chm_fill(m->be, &g.dxin, 0));
    MDL_OP(m,
           chm_causal_conv1d_bwd(m->be, &g.dxin, mdl_g(m, ly->conv_w), mdl_g(m, ly->conv_b), &g.dxc,
                                 &a->xin, mdl_w(m, ly->conv_w), mdl_w(m, ly->conv_b), true));
    chm_tensor x2 = V2(xn, C), dx2 = V2(dxn, C), dxin2 = V2(&g.dxin, Di), dz2 = V2(&g.dz, Di);
    MDL_TRY(mdl_linear_bwd(m, &w.in_x, &gw.in_x, &dxin2, &x2, &dx2, 0)); /* writes dxn */
    MDL_TRY(mdl_linear_bwd(m, &w.in_z, &gw.in_z, &dz2, &x2, &dx2, 1));
#undef V2
    mdl_release(m, mark);
    return CHM_OK;
}
