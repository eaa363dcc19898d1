/*
 * causal_conv1d.c: the vulkan backend's depthwise causal conv1d over time,
 * forward and backward (shaders causal_conv1d_fwd.comp, causal_conv1d_bwd.comp).
 *
 * x, out [B,T,C], w [C,W], bias [C] optional:
 *   out[b,t,c] = bias[c] + sum_j w[c,j] * x[b,t-(W-1)+j,c], then SiLU when fused.
 * Forward: one invocation per output element. Backward (ACCUMULATES into dx,
 * dw and dbias): one fused pass (conv_bwd_fused) that recomputes pre and
 * g = dout * silu'(pre) in registers, writes dx and per-slab partial sums of
 * dw and dbias, which sum_rows then adds in slab order, so results do not
 * depend on scheduling. CHIMERA_VULKAN_DISABLE=conv1d_fused takes the older
 * three passes instead (for comparison): with SiLU, g goes to a scratch
 * tensor first; dx is one invocation per element; dw and dbias sum over the
 * B*T rows in fixed chunks of rows and then over the chunks in order
 * (chm_vk_colsum_plan).
 *
 * x, w, bias, out, dout and the gradients are f32, or all bf16 or all f16
 * (the shaders' native variants: loaded into f32, rounded once on store or,
 * for a gradient, once when its sum is added; vk_dtype.h). The SiLU's g and
 * dw's chunk sums are f32 scratch whatever the dtype: the dx and dw passes
 * of 16-bit tensors read g through their _gf32 variants then.
 */
#include "vk_dtype.h"

enum { CONV_HAS_BIAS = 1, CONV_SILU = 2 }; /* causal_conv1d_fwd.comp's flags */

chm_status chm_vk_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                    const chm_tensor *w, const chm_tensor *bias, bool silu) {
    CHM_TRY(chm_vk_need_float(be, "causal_conv1d_fwd", x));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t n, T, C, W, flags;
    } pc = {(uint32_t)chm_tensor_numel(x), (uint32_t)x->shape[1], (uint32_t)x->shape[2],
            (uint32_t)w->shape[1], (bias ? CONV_HAS_BIAS : 0u) | (silu ? CONV_SILU : 0u)};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "causal_conv1d_fwd", x->dtype, false, name, sizeof name),
        .nbind = 4, .bind = {x, w, bias, out},
        .writes = 1u << 3, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.n, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/*
 * The variant of backward pass `base` for tensors like t reading g: with
 * _gf32 when g is the f32 scratch of the fused SiLU but t is 16-bit.
 */
static const char *conv_variant(chm_vk *vk, const char *base, const chm_tensor *t,
                                const chm_tensor *g, char *buf, size_t n) {
    char gbase[48];
    bool gf32 = g->dtype == CHM_F32 && t->dtype != CHM_F32;
    snprintf(gbase, sizeof gbase, "%s%s", base, gf32 ? "_gf32" : "");
    return chm_vk_variant_dt(vk, gbase, t->dtype, false, buf, n);
}

/* Sizes of one backward call. */
typedef struct conv_dims {
    uint32_t n, T, C, W; /* n = B*T*C */
} conv_dims;

/* g [B,T,C] = dout * silu'(pre) (only when the forward fused SiLU). */
static chm_status conv_grad(chm_vk *vk, const conv_dims *s, const chm_tensor *g,
                            const chm_tensor *dout, const chm_tensor *x, const chm_tensor *w,
                            const chm_tensor *bias) {
    struct {
        conv_dims s;
        uint32_t has_bias;
    } pc = {*s, bias != NULL};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "causal_conv1d_bwd_grad", x->dtype, false, name,
                                    sizeof name),
        .nbind = 5, .bind = {x, w, bias, dout, g},
        .writes = 1u << 4, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(s->n, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* dx += the transposed convolution of g. */
static chm_status conv_dx(chm_vk *vk, const conv_dims *s, const chm_tensor *dx,
                          const chm_tensor *g, const chm_tensor *w) {
    char name[48];
    chm_vk_dispatch d = {
        .shader = conv_variant(vk, "causal_conv1d_bwd_dx", w, g, name, sizeof name),
        .nbind = 3, .bind = {g, w, dx}, .writes = 1u << 2,
        .push = s, .push_size = sizeof *s,
        .groups = chm_vk_groups(s->n, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* dw/dbias (or their chunk sums part_w [K,C*W], part_b [K,C] when partial) from g and x. */
static chm_status conv_dw(chm_vk *vk, const conv_dims *s, bool partial, const chm_tensor *dw,
                          const chm_tensor *db, const chm_tensor *g, const chm_tensor *x,
                          chm_vk_colsum_plan plan) {
    struct {
        uint32_t rows, T, C, W, per, chunks, has_dbias;
    } pc = {s->n / s->C, s->T, s->C, s->W, plan.rows_per_chunk, plan.chunks, db != NULL};
    char name[48];
    const char *base = partial ? "causal_conv1d_bwd_dw_partial" : "causal_conv1d_bwd_dw";
    chm_vk_dispatch d = {
        .shader = conv_variant(vk, base, x, g, name, sizeof name),
        .nbind = 4, .bind = {g, x, dw, db}, .writes = 3u << 2, .push = &pc,
        .push_size = sizeof pc,
        .groups = chm_vk_groups((int64_t)plan.chunks * s->C * (s->W + 1), vk->caps.wg_elem),
        .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* dw and dbias through chunk partials summed in order (plan.chunks > 1). */
static chm_status conv_dw_chunked(chm_backend *be, const conv_dims *s, const chm_tensor *dw,
                                  const chm_tensor *dbias, const chm_tensor *g,
                                  const chm_tensor *x, chm_vk_colsum_plan plan) {
    chm_vk *vk = chm_vk_ctx(be);
    int64_t K = plan.chunks, CW = (int64_t)s->C * s->W;
    chm_tensor part, pw, pb;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, K * (CW + s->C), &part));
    chm_status rc = chm_tensor_view(&part, 0, 1, (int64_t[]){K * CW}, &pw, &be->err);
    if (!rc) rc = chm_tensor_view(&part, K * CW, 1, (int64_t[]){K * s->C}, &pb, &be->err);
    if (!rc) rc = conv_dw(vk, s, true, &pw, dbias ? &pb : NULL, g, x, plan);
    if (!rc) rc = chm_vk_colsum_finish(vk, dw, &pw, plan.chunks, CW);
    if (!rc && dbias) rc = chm_vk_colsum_finish(vk, dbias, &pb, plan.chunks, s->C);
    chm_vk_scratch_free(be, &part);
    return rc;
}

/*
 * The row chunks of dw's sums: the shared plan, with more chunks where it would leave a GPU
 * mostly idle (chimera-1b's 16384 rows x 2048 channels x 5 taps: 6 chunks of 2731 rows, 61k
 * invocations each walking its chunk). Aims at 256k invocations, chunks of at least 64 rows.
 */
static chm_vk_colsum_plan conv_dw_plan(int64_t rows, int64_t cols) {
    chm_vk_colsum_plan p = chm_vk_colsum_plan_make(rows, cols);
    int64_t want = (262144 + cols - 1) / cols, most = rows / 64;
    if (want > most) want = most;
    if (want <= (int64_t)p.chunks) return p;
    int64_t per = (rows + want - 1) / want;
    return (chm_vk_colsum_plan){(uint32_t)((rows + per - 1) / per), (uint32_t)per};
}

/* dx, dw and dbias from g = dL/dpre. */
static chm_status conv_bwd_from_g(chm_backend *be, const conv_dims *s, const chm_tensor *dx,
                                  const chm_tensor *dw, const chm_tensor *dbias,
                                  const chm_tensor *g, const chm_tensor *x, const chm_tensor *w) {
    chm_vk *vk = chm_vk_ctx(be);
    CHM_TRY(conv_dx(vk, s, dx, g, w));
    chm_vk_colsum_plan plan = conv_dw_plan((int64_t)(s->n / s->C), (int64_t)s->C * (s->W + 1));
    if (plan.chunks == 1) return conv_dw(vk, s, false, dw, dbias, g, x, plan);
    return conv_dw_chunked(be, s, dw, dbias, g, x, plan);
}

/*
 * The fused backward (causal_conv1d_bwd_fused): each invocation walks `per`
 * time steps of one channel, a workgroup CONV_CB channels x wg/CONV_CB
 * consecutive chunks (a slab), each slab one f32 partial row of dw and
 * dbias that sum_rows adds in slab order. x and dout are read once (plus
 * halos of W-1 rows per chunk), dx read and written once: at chimera-1b's
 * shape (B=8, T=2048, C=2048, bf16) 256 MiB against the three passes'
 * ~700 MiB. 16-bit tensors with C even go two channels an invocation (one
 * 32-bit word: a warp's 16-bit loads alone cost twice the memory requests a
 * byte). `per` aims at 512k invocations (about two waves of an H100's 132
 * SMs at 2048 threads each), between 16 and 128 steps; at that shape 32 in
 * bf16 (slabs of 256 rows, 64 partial rows), 64 in f32.
 */
/* channel units of a workgroup; time steps whose loads go together; the flag beside fwd's */
enum { CONV_CB = 32, CONV_STEPS = 4, CONV_DBIAS = 4 };

static chm_status conv_bwd_fused(chm_backend *be, const conv_dims *s, const chm_tensor *dx,
                                 const chm_tensor *dw, const chm_tensor *dbias,
                                 const chm_tensor *dout, const chm_tensor *x,
                                 const chm_tensor *w, const chm_tensor *bias, bool silu) {
    chm_vk *vk = chm_vk_ctx(be);
    uint32_t wg = vk->caps.wg_cap / CONV_CB * CONV_CB;
    /* 16-bit tensors: two channels an invocation, as 32-bit words, where they line up */
    bool pair = x->dtype != CHM_F32 && s->C % 2 == 0 && chm_vk_tensor_range(x).lo % 4 == 0 &&
                chm_vk_tensor_range(dout).lo % 4 == 0 && chm_vk_tensor_range(dx).lo % 4 == 0;
    uint8_t wu = pair ? 4 : 0; /* x, dout and dx read as words */
    int64_t units = (int64_t)s->n / (pair ? 2 : 1);
    int64_t per = (units >> 19) < 16 ? 16 : units >> 19;
    if (per > 128) per = 128;
    int64_t slab = per * (wg / CONV_CB), B = s->n / ((int64_t)s->T * s->C);
    int64_t slabs = (s->T + slab - 1) / slab, K = B * slabs, CW = (int64_t)s->C * s->W;
    chm_tensor part, pw, pb;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, K * (CW + s->C), &part));
    chm_status rc = chm_tensor_view(&part, 0, 1, (int64_t[]){K * CW}, &pw, &be->err);
    if (!rc) rc = chm_tensor_view(&part, K * CW, 1, (int64_t[]){K * s->C}, &pb, &be->err);
    struct {
        uint32_t T, C, per, slabs, flags;
    } pc = {s->T, s->C, (uint32_t)per, (uint32_t)slabs,
            (bias ? CONV_HAS_BIAS : 0u) | (silu ? CONV_SILU : 0u) | (dbias ? CONV_DBIAS : 0u)};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, pair ? "causal_conv1d_bwd_fused_pair" :
                                    "causal_conv1d_bwd_fused", x->dtype, false, name, sizeof name),
        .nbind = 7, .bind = {x, w, bias, dout, dx, &pw, dbias ? &pb : NULL},
        .writes = 7u << 4, .unit = {wu, 0, 0, wu, wu}, .push = &pc, .push_size = sizeof pc,
        .groups = (uint32_t)(K * ((s->C / (pair ? 2 : 1) + CONV_CB - 1) / CONV_CB)), .wg = wg,
        .spec = {s->W, CONV_STEPS}, .nspec = 2,
    };
    if (!rc) rc = chm_vk_run(vk, &d);
    if (!rc) rc = chm_vk_colsum_finish(vk, dw, &pw, (uint32_t)K, CW);
    if (!rc && dbias) rc = chm_vk_colsum_finish(vk, dbias, &pb, (uint32_t)K, s->C);
    chm_vk_scratch_free(be, &part);
    return rc;
}

chm_status chm_vk_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                    const chm_tensor *dbias, const chm_tensor *dout,
                                    const chm_tensor *x, const chm_tensor *w,
                                    const chm_tensor *bias, bool silu, bool dx_set) {
    CHM_TRY(chm_vk_need_float(be, "causal_conv1d_bwd", x));
    conv_dims s = {(uint32_t)chm_tensor_numel(x), (uint32_t)x->shape[1], (uint32_t)x->shape[2],
                   (uint32_t)w->shape[1]};
    if (s.n == 0) return CHM_OK;
    if (dx_set) CHM_TRY(chm_vk_fill(be, dx, 0.0));  /* the passes below accumulate onto it */
    if (chm_vk_ctx(be)->caps.conv1d_fused)
        return conv_bwd_fused(be, &s, dx, dw, dbias, dout, x, w, bias, silu);
    if (!silu) return conv_bwd_from_g(be, &s, dx, dw, dbias, dout, x, w);
    chm_tensor g;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, s.n, &g));
    chm_status rc = conv_grad(chm_vk_ctx(be), &s, &g, dout, x, w, bias);
    if (!rc) rc = conv_bwd_from_g(be, &s, dx, dw, dbias, &g, x, w);
    chm_vk_scratch_free(be, &g);
    return rc;
}
