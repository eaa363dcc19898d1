/*
 * attention.c: the vulkan backend's causal grouped-query attention: forward,
 * backward and decoding against a key/value cache (shaders attention_fwd.comp,
 * attention_bwd.comp; attention_decode is a variant of attention_fwd.comp).
 *
 * q, out, dout, dq [B,Tq,H,D]; k, v, dk, dv [B,Tk,Hk,D]; lse [B,H,T]. The
 * forward is tiled with an online softmax and never forms a T x T matrix;
 * the backward recomputes the probabilities from lse (flash-attention-2
 * style) in three dispatches: Delta = rowsum(dout*out) into scratch, dq per
 * query tile, dk/dv per key tile (each workgroup sums the q heads of its GQA
 * group in order). Every gradient element has one owner that adds its terms
 * in a fixed order, so the backward (which ACCUMULATES) is deterministic.
 *
 * Tile shapes are specialization constants chosen here from the device's
 * shared memory (attn_plan): TPR invocations per row, BR = WG/TPR rows, BC
 * columns per tile, and DC columns of D per shared-memory chunk (D itself
 * when it fits, so any head_dim works).
 *
 * q, k, v, out, dout and the gradients are f32, or all bf16 or all f16 (the
 * shaders' native variants: loaded into f32, rounded once on store or, for
 * the accumulated gradients, once per add; vk_dtype.h); lse and Delta are
 * f32 whatever the dtype.
 */
#include "vk_dtype.h"

/* Tiles of one kernel (specialization constants 2..5 and the workgroup size). */
typedef struct attn_plan {
    uint32_t wg, tpr, bc, dc, hd;
} attn_plan;

/*
 * The shared arrays of a kernel, counted: operand buffers of the row side
 * ([BR][DC+1] each) and of the column side ([BC][DC+1]), tile matrices
 * ([BR][BC]) and per-column floats ([BC]).
 */
typedef struct attn_cost {
    uint32_t rows, cols, tiles, percol;
} attn_cost;

static const attn_cost COST_FWD = {1, 2, 1, 0}, COST_DQ = {2, 2, 1, 0}, COST_DKV = {2, 2, 2, 2};

static uint64_t attn_bytes(attn_cost c, uint32_t br, uint32_t bc, uint32_t dc) {
    return 4ull * (((uint64_t)br * c.rows + (uint64_t)bc * c.cols) * (dc + 1) +
                   (uint64_t)br * bc * c.tiles + (uint64_t)bc * c.percol);
}

static uint32_t round_up(uint32_t x, uint32_t m) { return (x + m - 1) / m * m; }

/*
 * The widest tiles that hold all of D in shared memory (largest workgroup
 * first); failing that, D in chunks of the largest DC that fits.
 */
static chm_status attn_plan_make(chm_vk *vk, const char *op, attn_cost cost, uint32_t D,
                                 attn_plan *pl) {
    uint64_t budget = vk->props.limits.maxComputeSharedMemorySize;
    static const uint32_t shapes[][2] = {{4, 32}, {4, 16}, {8, 32}, {8, 16}}; /* {TPR, BC} */
    for (uint32_t wg = vk->caps.wg_row; wg >= 32 && wg >= vk->caps.wg_row / 2; wg /= 2)
        for (int s = 0; s < 4; s++) {
            uint32_t tpr = shapes[s][0], bc = shapes[s][1], dc = round_up(D, tpr);
            if (wg % tpr || attn_bytes(cost, wg / tpr, bc, dc) > budget) continue;
            *pl = (attn_plan){wg, tpr, bc, dc, D};
            return CHM_OK;
        }
    uint32_t wg = vk->caps.wg_row, tpr = 4, bc = 16, br = wg / tpr, dc = tpr;
    while (dc + tpr < round_up(D, tpr) && attn_bytes(cost, br, bc, dc + tpr) <= budget) dc += tpr;
    if (wg % tpr || attn_bytes(cost, br, bc, dc) > budget)
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "%s: this device's %llu bytes of shared memory hold no attention tile",
                       op, (unsigned long long)budget);
    *pl = (attn_plan){wg, tpr, bc, dc, D};
    return CHM_OK;
}

/* Fill a dispatch's workgroup size and specialization constants from a plan. */
static void attn_plan_apply(const attn_plan *pl, chm_vk_dispatch *d) {
    d->wg = pl->wg;
    d->spec[0] = pl->tpr;
    d->spec[1] = pl->bc;
    d->spec[2] = pl->dc;
    d->spec[3] = pl->hd;
    d->nspec = 4;
}

/* Rows per workgroup of a plan. */
static uint32_t attn_rows(const attn_plan *pl) { return pl->wg / pl->tpr; }

/* Forward and decode: lse == NULL selects the decode variant. */
static chm_status attn_forward(chm_backend *be, const char *op, const chm_tensor *out,
                               const chm_tensor *lse, const chm_tensor *q, const chm_tensor *k,
                               const chm_tensor *v, double scale) {
    CHM_TRY(chm_vk_need_float(be, op, q));
    chm_vk *vk = chm_vk_ctx(be);
    if (chm_tensor_numel(q) == 0) return CHM_OK;
    attn_plan pl = {0};
    CHM_TRY(attn_plan_make(vk, op, COST_FWD, (uint32_t)q->shape[3], &pl));
    uint32_t B = (uint32_t)q->shape[0], Tq = (uint32_t)q->shape[1], H = (uint32_t)q->shape[2];
    struct {
        uint32_t B, Tq, Tk, H, Hk, nqt;
        float scale;
    } pc = {B, Tq, (uint32_t)k->shape[1], H, (uint32_t)k->shape[2],
            chm_vk_groups(Tq, attn_rows(&pl)), (float)scale};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, lse ? "attention_fwd" : "attention_decode", q->dtype,
                                    false, name, sizeof name),
        .nbind = lse ? 5 : 4,
        .bind = {q, k, v, out, lse}, .writes = lse ? 3u << 3 : 1u << 3,
        .push = &pc, .push_size = sizeof pc, .groups = B * H * pc.nqt,
    };
    attn_plan_apply(&pl, &d);
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                                const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                double scale) {
    return attn_forward(be, "attention_fwd", out, lse, q, k, v, scale);
}

chm_status chm_vk_attention_decode(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                   const chm_tensor *k, const chm_tensor *v, double scale) {
    return attn_forward(be, "attention_decode", out, NULL, q, k, v, scale);
}

/* ---- backward ---- */

/* Sizes of one backward call. */
typedef struct attn_dims {
    uint32_t B, T, H, Hk, D;
} attn_dims;

/* delta [B,H,T] = rowsum(dout * out). */
static chm_status attn_delta(chm_vk *vk, const attn_dims *s, const chm_tensor *delta,
                             const chm_tensor *dout, const chm_tensor *out) {
    struct {
        uint32_t n, T, H, D;
    } pc = {s->B * s->T * s->H, s->T, s->H, s->D};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "attention_bwd_delta", out->dtype, false, name,
                                    sizeof name),
        .nbind = 3, .bind = {dout, out, delta},
        .writes = 1u << 2, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.n, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* The dq pass (grads = {dq}) or the dk/dv pass (grads = {dk, dv}). */
static chm_status attn_grads(chm_vk *vk, bool dq_pass, const attn_dims *s,
                             const chm_tensor *const in[6], const chm_tensor *g0,
                             const chm_tensor *g1, double scale) {
    attn_plan pl = {0};
    const char *op = "attention_bwd";
    CHM_TRY(attn_plan_make(vk, op, dq_pass ? COST_DQ : COST_DKV, s->D, &pl));
    uint32_t heads = dq_pass ? s->H : s->Hk;
    struct {
        uint32_t B, T, H, Hk, ntiles;
        float scale;
    } pc = {s->B, s->T, s->H, s->Hk, chm_vk_groups(s->T, attn_rows(&pl)), (float)scale};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, dq_pass ? "attention_bwd_dq" : "attention_bwd_dkv",
                                    in[0]->dtype, false, name, sizeof name),
        .nbind = dq_pass ? 7 : 8,
        .bind = {in[0], in[1], in[2], in[3], in[4], in[5], g0, g1},
        .writes = dq_pass ? 1u << 6 : 3u << 6, .push = &pc, .push_size = sizeof pc,
        .groups = s->B * heads * pc.ntiles,
    };
    attn_plan_apply(&pl, &d);
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                const chm_tensor *dv, const chm_tensor *dout,
                                const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                const chm_tensor *out, const chm_tensor *lse, double scale) {
    CHM_TRY(chm_vk_need_float(be, "attention_bwd", q));
    chm_vk *vk = chm_vk_ctx(be);
    if (chm_tensor_numel(q) == 0) return CHM_OK;
    attn_dims s = {(uint32_t)q->shape[0], (uint32_t)q->shape[1], (uint32_t)q->shape[2],
                   (uint32_t)k->shape[2], (uint32_t)q->shape[3]};
    chm_tensor delta;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, (int64_t)s.B * s.H * s.T, &delta));
    const chm_tensor *in[6] = {q, k, v, dout, lse, &delta};
    chm_status rc = attn_delta(vk, &s, &delta, dout, out);
    if (!rc) rc = attn_grads(vk, true, &s, in, dq, NULL, scale);
    if (!rc) rc = attn_grads(vk, false, &s, in, dk, dv, scale);
    chm_vk_scratch_free(be, &delta);
    return rc;
}
