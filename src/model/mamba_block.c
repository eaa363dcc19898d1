/*
 * mamba_block.c: the Mamba-1 mixer, forward and hand-written backward.
 *
 * xn [B,T,C] (normalised layer input), in_proj [2Di,C] viewed as the x rows
 * and the z rows, x_proj [Rk+2N,Di] viewed as its dt, B and C rows:
 *   xin = xn Wx^T, z = xn Wz^T               [B,T,Di]
 *   xc  = SiLU(causal depthwise conv1d(xin)) [B,T,Di]  (width d_conv, with bias)
 *   xpT = (xc x_proj^T)^T [Rk+2N, R], one product and a transposition (a product
 *         with the identity m->eye_x): rows dtl^T [Rk,R], Bm^T, Cm^T [N,R]
 *   Bm = (Bm^T)^T, Cm = (Cm^T)^T [B,T,N]  (products with the [N,N] identity m->eye)
 *   delta = dtl dt_proj^T [B,T,Di]   (dt_proj.bias and softplus are applied in the scan)
 *   A = -exp(A_log) [Di,N]
 *   y = scan(u=xc, delta, A, Bm, Cm, D, z gate, delta_bias=dt_proj.bias, softplus) [B,T,Di]
 *   out = resid + y out_proj^T   (the residual add inside the product)
 * The backward reverses it: D and dt_proj.bias gradients come straight out of
 * the scan's backward into the gradient buffer.
 *
 * Why x_proj's output is kept transposed: its three blocks (dt, B, C) are one
 * product of K = Di (2048 at chimera-1b) with a thin output (96 columns), so
 * three separate products read xc three times and, in the backward, read and
 * wrote dxc [R,Di] three times (beta 1 each) for a 96-column sum; transposed,
 * the blocks are contiguous row ranges, so one product serves all three in
 * each direction, and only B and C ([R,N], small) pass through the identity.
 */
#include <stdlib.h>
#include <string.h>
#include "core/half.h"
#include "model_internal.h"

mdl_mamba_w mdl_mamba_views(const chm_model *m, const chm_tensor *in_proj) {
    int64_t Di = m->Di, C = m->C;
    mdl_mamba_w w = {
        .in_x = MDL_VIEW(in_proj, 0, Di, C),
        .in_z = MDL_VIEW(in_proj, Di * C, Di, C),
    };
    return w;
}

/* Whether the backend's scan backward reads saved states (when only counting: whether the
   backend the model stands for does, chm_model_options.caps). */
static bool keep_saved(const chm_model *m) { return (m->caps & CHM_CAP_SCAN_SAVED) != 0; }
/* Likewise for the pre-gate outputs (CHM_CAP_SCAN_YSAVED). */
static bool keep_ysaved(const chm_model *m) { return (m->caps & CHM_CAP_SCAN_YSAVED) != 0; }

static chm_status mamba_alloc(chm_model *m, mdl_mamba_act *a, int64_t B, int64_t T) {
    int64_t Di = m->Di, N = m->N;
    MDL_TRY(MDL_ALLOC(m, &a->xin, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &a->z, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &a->xc, B, T, Di));
    MDL_TRY(MDL_ALLOC(m, &a->xpT, m->Rk + 2 * N, B * T));
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
    /* The scan's output before the gate, which the backward's dz needs (64 MiB a Mamba
       layer): saved where the backward reads it instead of summing it again. */
    if (keep_ysaved(m)) MDL_TRY(MDL_ALLOC(m, &a->ysave, B, T, Di));
    return MDL_ALLOC(m, &a->y, B, T, Di);
}

/* The scan's arguments over a's tensors; the backward writes (not accumulates) the
   gradients in `set` (CHM_SCAN_SET_*). */
static chm_scan_args scan_args(const chm_model *m, const mdl_layer *ly, const mdl_mamba_act *a,
                               unsigned set) {
    chm_scan_args s = {&a->xc, &a->delta, &a->A, &a->bm, &a->cm, mdl_w(m, ly->D),
                       &a->z,  mdl_w(m, ly->dt_b), true,
                       keep_saved(m) ? &a->hsave : NULL, set,
                       keep_ysaved(m) ? &a->ysave : NULL};
    return s;
}

/* Row blocks of the transposed x_proj output xpT [Rk+2N, R] (or of its gradient). */
typedef struct xp_rows {
    chm_tensor dt, b, c; /* [Rk,R], [N,R], [N,R] */
} xp_rows;

static xp_rows xp_views(const chm_model *m, const chm_tensor *xpT, int64_t R) {
    xp_rows v = {
        .dt = MDL_VIEW(xpT, 0, m->Rk, R),
        .b = MDL_VIEW(xpT, m->Rk * R, m->N, R),
        .c = MDL_VIEW(xpT, (m->Rk + m->N) * R, m->N, R),
    };
    return v;
}

/* t = the [n,n] identity in the model's dtype (allocated in the pass's arena, uploaded). */
static chm_status eye_make(chm_model *m, chm_tensor *t, int64_t n) {
    MDL_TRY(MDL_ALLOC(m, t, n, n));
    if (m->dry) return CHM_OK;
    size_t es = chm_dtype_size(m->dt);
    unsigned char *h = calloc((size_t)(n * n), es);
    if (!h) return CHM_ERR(&m->be->err, CHM_ERR_NOMEM, "model: no memory for a %lldx%lld identity",
                           (long long)n, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        unsigned char *e = h + (size_t)(i * n + i) * es;
        switch (m->dt) {
        case CHM_F64: { double one = 1.0; memcpy(e, &one, es); } break;
        case CHM_BF16: { uint16_t one = chm_f32_to_bf16(1.0f); memcpy(e, &one, es); } break;
        case CHM_F16: { uint16_t one = chm_f32_to_f16(1.0f); memcpy(e, &one, es); } break;
        default: { float one = 1.0f; memcpy(e, &one, es); } break;
        }
    }
    chm_status rc = chm_upload(m->be, t, h);
    free(h);
    return rc;
}

chm_status mdl_mamba_pass_begin(chm_model *m) {
    MDL_TRY(eye_make(m, &m->eye, m->N));
    return eye_make(m, &m->eye_x, m->Rk + 2 * m->N);
}

chm_status mdl_mamba_fwd(chm_model *m, const mdl_layer *ly, mdl_mamba_act *a, const chm_tensor *xn,
                         const chm_tensor *resid, const chm_tensor *out, int64_t B, int64_t T) {
    chm_backend *be = m->be;
    int64_t R = B * T, Di = m->Di, N = m->N, C = m->C;
    MDL_TRY(mamba_alloc(m, a, B, T));
    mdl_mamba_w w = mdl_mamba_views(m, mdl_w(m, ly->in_proj));
    chm_tensor x2 = MDL_VIEW(xn, 0, R, C), xin2 = MDL_VIEW(&a->xin, 0, R, Di);
    chm_tensor z2 = MDL_VIEW(&a->z, 0, R, Di), xc2 = MDL_VIEW(&a->xc, 0, R, Di);
    chm_tensor bm2 = MDL_VIEW(&a->bm, 0, R, N), cm2 = MDL_VIEW(&a->cm, 0, R, N);
    chm_tensor delta2 = MDL_VIEW(&a->delta, 0, R, Di);
    xp_rows xp = xp_views(m, &a->xpT, R);
    MDL_TRY(mdl_linear_fwd(m, &xin2, &x2, &w.in_x, 0));
    MDL_TRY(mdl_linear_fwd(m, &z2, &x2, &w.in_z, 0));
    MDL_OP(m, chm_causal_conv1d_fwd(be, &a->xc, &a->xin, mdl_w(m, ly->conv_w), mdl_w(m, ly->conv_b),
                                    true));
    /* xp [R,Rk+2N] = xc x_proj^T, then xpT = I xp^T: cuBLASLt ran xpT = x_proj xc^T (a 96-row
       output at chimera-1b) at 55 TFLOP/s, 117 us on an H100, where three [R,16..64] products had
       taken ~93 us. Bm = (Bm^T)^T I, Cm likewise; delta = dtl dt_w^T */
    size_t mark = mdl_mark(m);
    chm_tensor xp_rows;
    MDL_TRY(MDL_ALLOC(m, &xp_rows, R, m->Rk + 2 * N));
    MDL_OP(m, chm_matmul(be, &xp_rows, &xc2, mdl_w(m, ly->x_proj), NULL, false, true, 1.0, 0.0));
    MDL_OP(m, chm_matmul(be, &a->xpT, &m->eye_x, &xp_rows, NULL, false, true, 1.0, 0.0));
    mdl_release(m, mark);
    MDL_OP(m, chm_matmul(be, &bm2, &xp.b, &m->eye, NULL, true, false, 1.0, 0.0));
    MDL_OP(m, chm_matmul(be, &cm2, &xp.c, &m->eye, NULL, true, false, 1.0, 0.0));
    MDL_OP(m, chm_matmul(be, &delta2, &xp.dt, mdl_w(m, ly->dt_w), NULL, true, true, 1.0, 0.0));
    MDL_OP(m, chm_exp_fwd(be, &a->A, mdl_w(m, ly->A_log), -1.0));
    chm_scan_args s = scan_args(m, ly, a, 0);
    MDL_OP(m, chm_selective_scan_fwd(be, &a->y, &s));
    chm_tensor y2 = MDL_VIEW(&a->y, 0, R, Di), out2 = MDL_VIEW(out, 0, R, C);
    chm_tensor res2 = MDL_VIEW(resid, 0, R, C);
    return mdl_linear_fwd_from(m, &out2, &y2, mdl_w(m, ly->out_proj), &res2);
}

/* Scratch of the backward, all [R,.] except dA. */
typedef struct mamba_grads {
    chm_tensor dy, dxc, ddelta, dz, dxin; /* [B,T,Di] */
    chm_tensor dxpT;                      /* [Rk+2N,R] gradient of xpT */
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
    MDL_TRY(MDL_ALLOC(m, &g->dxpT, m->Rk + 2 * N, B * T));
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
    int64_t R = B * T, Di = m->Di, N = m->N, C = m->C;
    size_t mark = mdl_mark(m);
    mamba_grads g;
    MDL_TRY(mamba_grads_alloc(m, &g, B, T));
    mdl_mamba_w w = mdl_mamba_views(m, mdl_w(m, ly->in_proj));
    mdl_mamba_w gw = mdl_mamba_views(m, mdl_g(m, ly->in_proj));
#define V2(t, c) MDL_VIEW(t, 0, R, c)
    chm_tensor dout2 = V2(dout, C), y2 = V2(&a->y, Di), dy2 = V2(&g.dy, Di);
    MDL_TRY(
        mdl_linear_bwd(m, mdl_w(m, ly->out_proj), mdl_g(m, ly->out_proj), &dout2, &y2, &dy2, 0));
    MDL_TRY(mamba_scan_bwd(m, ly, a, &g));
    /* delta = dtl dt_w^T: dt_w's gradient += ddelta^T dtl, ddtl^T = dt_w^T ddelta^T */
    chm_backend *be = m->be;
    chm_tensor dd2 = V2(&g.ddelta, Di);
    xp_rows xp = xp_views(m, &a->xpT, R), dxp = xp_views(m, &g.dxpT, R);
    MDL_OP(m, chm_matmul(be, mdl_g(m, ly->dt_w), &dd2, &xp.dt, NULL, true, true, 1.0, 1.0));
    MDL_OP(m, chm_matmul(be, &dxp.dt, mdl_w(m, ly->dt_w), &dd2, NULL, true, true, 1.0, 0.0));
    /* dBm^T = I dBm^T, dCm^T likewise: the x_proj gradient rows in one tensor */
    chm_tensor dbm2 = V2(&g.dbm, N), dcm2 = V2(&g.dcm, N);
    MDL_OP(m, chm_matmul(be, &dxp.b, &m->eye, &dbm2, NULL, false, true, 1.0, 0.0));
    MDL_OP(m, chm_matmul(be, &dxp.c, &m->eye, &dcm2, NULL, false, true, 1.0, 0.0));
    /* x_proj's gradient += dxp xc; dxc += dxp^T x_proj (the scan's du already sits in dxc) */
    chm_tensor xc2 = V2(&a->xc, Di), dxc2 = V2(&g.dxc, Di);
    MDL_OP(m, chm_matmul(be, mdl_g(m, ly->x_proj), &g.dxpT, &xc2, NULL, false, false, 1.0, 1.0));
    MDL_OP(m, chm_matmul(be, &dxc2, &g.dxpT, mdl_w(m, ly->x_proj), NULL, true, false, 1.0, 1.0));
    /* dxin is written (not zeroed first and accumulated onto); the conv's dw, db accumulate */
    MDL_OP(m, chm_causal_conv1d_bwd_set_dx(m->be, &g.dxin, mdl_g(m, ly->conv_w),
                                           mdl_g(m, ly->conv_b), &g.dxc, &a->xin,
                                           mdl_w(m, ly->conv_w), mdl_w(m, ly->conv_b), true));
    chm_tensor x2 = V2(xn, C), dx2 = V2(dxn, C), dxin2 = V2(&g.dxin, Di), dz2 = V2(&g.dz, Di);
    MDL_TRY(mdl_linear_bwd(m, &w.in_x, &gw.in_x, &dxin2, &x2, &dx2, 0)); /* writes dxn */
    MDL_TRY(mdl_linear_bwd(m, &w.in_z, &gw.in_z, &dz2, &x2, &dx2, 1));
#undef V2
    mdl_release(m, mark);
    return CHM_OK;
}
