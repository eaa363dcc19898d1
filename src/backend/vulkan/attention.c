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
 * f16 and bf16 forwards run on cooperative matrices (attention_cm.comp:
 * Q K^T and P V on the tensor cores; bf16 on bf16 matrices where the device
 * has them, else its tiles scaled into f16's range)
 * where the device has them (or emulates them, tests) and D is a multiple of
 * 16 up to 128; attn_cm_plan_make says when and picks the tile. Their
 * backwards' dq and dk/dv passes too, under the same conditions except that
 * bf16 goes up to d128 there (attention_bwd_cm.comp; Delta stays
 * attention_bwd.comp's).
 *
 * q, k, v, out, dout and the gradients are f32, or all bf16 or all f16 (the
 * shaders' native variants: loaded into f32, rounded once on store or, for
 * the accumulated gradients, once per add; vk_dtype.h); lse and Delta are
 * f32 whatever the dtype.
 */
#include <stdlib.h>
#include <string.h>

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
    /* {TPR, BC}: BC / TPR is at most 8 (attention_bwd.comp's SMAX) */
    static const uint32_t shapes[][2] = {{4, 32}, {4, 16}, {8, 32}, {8, 16}};
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

/* ---- the forward on cooperative matrices (attention_cm.comp) ---- */

/*
 * Its tiles: WARPS subgroups of 16 query rows, BC keys per step, FRAG_N, row
 * padding SPAD; and the variant: bf16 on bf16 matrices (native, the _bf16n
 * shaders), and whether the walked tiles are prefetched into registers and
 * staged in two stages (every variant but bf16 scaled into f16).
 */
typedef struct attn_cm_plan {
    uint32_t warps, bc, fn, pad;
    bool native, prefetch;
} attn_cm_plan;

/*
 * The most words of a walked tile pair one invocation prefetches (the
 * shaders' FETCH_MAX: registers; emulated, small subgroups, more).
 */
static uint32_t attn_fetch_max(const chm_vk *vk) { return vk->caps.coopmat_emulated ? 64 : 16; }

/*
 * Bytes of attention_cm.comp's shared array S (its layout comment): two
 * stages of k and v tiles (emulated: one), the q tile (in the second stage
 * where it fits, not emulated),
 * scratch, P rows (hi and lo parts when native), factors, tile maxima.
 */
static uint64_t attn_cm_bytes(const attn_cm_plan *pl, uint32_t D, bool emulated) {
    uint64_t qw = D / 8 + 1, sw = pl->bc / 4 + pl->pad, pw = pl->bc / 8 + pl->pad;
    uint64_t br = 16ull * pl->warps, stage = 2ull * pl->bc * qw, np = pl->native ? 2 : 1;
    bool q_in_stage = br <= 2ull * pl->bc && !emulated;
    uint64_t stages = (emulated ? 1 : 2) * stage + (q_in_stage ? 0 : br * qw);
    return 16 * (stages + br * (sw + np * pw) + 5ull * pl->warps);
}

/*
 * Bytes of attention_bwd_cm.comp's shared array S (its layout comment):
 * owner tiles and two stages of walk tiles over them (emulated: one stage,
 * apart), scratch and P rows, the stages of lse and Delta of max(BR, BC)
 * rows (the dq pass indexes them by owner row, the dk/dv pass by walk row:
 * one plan serves both), tile maxima.
 */
static uint64_t attn_bwd_cm_bytes(const attn_cm_plan *pl, uint32_t D, bool emulated) {
    uint64_t qw = D / 8 + 1, br = 16ull * pl->warps, sw = pl->bc / 4 + pl->pad;
    uint64_t pw = pl->bc / 8 + pl->pad, nl = br > pl->bc ? br : pl->bc;
    uint64_t own = 2 * br * qw, stage = 2ull * pl->bc * qw, nst = emulated ? 1 : 2;
    uint64_t tiles = emulated ? own + stage : (own > 2 * stage ? own : 2 * stage);
    return 16 * (tiles + br * (sw + pw) + nst * nl / 2 + pl->warps);
}

/*
 * Whether plan pl runs on this device for head dim D: the forward's
 * (attention_cm.comp) or the backward's (attention_bwd_cm.comp): shared
 * memory, workgroup size, the words an invocation prefetches, and the
 * elements of an accumulator a lane holds (the shaders' ELMAX, 16).
 */
static bool attn_cm_fits(const chm_vk *vk, const attn_cm_plan *pl, uint32_t D, bool bwd) {
    uint32_t sg = vk->caps.subgroup_size, lpr = sg >= 16 ? sg / 16 : 1, wg = pl->warps * sg;
    const VkPhysicalDeviceLimits *lim = &vk->props.limits;
    /* the forward's softmax lanes take 8 columns a time; a lane holds <= 16 accumulator elements */
    bool lanes = (bwd || (pl->bc / lpr) % 8 == 0) && (vk->caps.coopmat_emulated || sg >= pl->fn);
    if (pl->prefetch && (2 * pl->bc * (D / 8) + wg - 1) / wg > attn_fetch_max(vk)) return false;
    bool emu = vk->caps.coopmat_emulated;
    uint64_t bytes = bwd ? attn_bwd_cm_bytes(pl, D, emu) : attn_cm_bytes(pl, D, emu);
    return pl->bc % 16 == 0 && pl->bc <= 64 && lanes && wg <= lim->maxComputeWorkGroupSize[0] &&
           wg <= lim->maxComputeWorkGroupInvocations && bytes <= lim->maxComputeSharedMemorySize;
}

/* Tile warps x bc with padded rows (pad 1) or not (0); false when it does not fit. */
static bool attn_cm_try(const chm_vk *vk, uint32_t warps, uint32_t bc, uint32_t pad, uint32_t D,
                        bool bwd, attn_cm_plan *pl) {
    *pl = (attn_cm_plan){warps, bc, pl->fn, pad, pl->native, pl->prefetch};
    return attn_cm_fits(vk, pl, D, bwd);
}

/*
 * The cooperative-matrix plan for a forward (bwd false) or a backward of
 * q's dtype and head dim, or false: f32 tensors, no cooperative matrices
 * (real or emulated), bf16 ones switched off (CHIMERA_VULKAN_COOPMAT_BF16=0),
 * D not a multiple of 16 up to 128, subgroups outside 8..64, or
 * CHIMERA_VULKAN_ATTN_CM=0. The variable may also give the tile as WARPSxBC
 * (e.g. 4x32; benchmarks). bf16 runs on bf16 matrices where the device
 * has them (caps.coopmat_bf16_native: the _bf16n shaders, any D), else
 * scaled into f16, the forward then only up to d64 (its staging, tile
 * maxima and scaling, made d128 slower than the plain shader on the H100:
 * 10.2 ms against 7.7). Four warps first. On the H100 (48 KiB of shared
 * memory a workgroup; session 11, bf16 d64, B8 T1024 H16, fwd/bwd us):
 * 4x32 327/844, 4x16 317/910, 2x64 330/850, 2x32 440/1202, 2x16 339/984;
 * 4x64 does not fit. Emulated (tests), every D runs. The backward takes the
 * first tile of the list that fits its larger footprint. At d128 4x32 fits
 * only unpadded (B8 T2048 H8, ms): the forward takes 2x32 padded first
 * (f16 3.63 -> 1.18), the backward keeps 4x32 unpadded (bf16 12.0 against
 * 23.5 on 2x32 padded, f16 20.1 against 28.6).
 */
static bool attn_cm_plan_make(const chm_vk *vk, const chm_tensor *q, bool bwd, attn_cm_plan *pl) {
    const chm_vk_caps *c = &vk->caps;
    uint32_t D = (uint32_t)q->shape[3], sg = c->subgroup_size;
    const char *env = getenv("CHIMERA_VULKAN_ATTN_CM");
    bool native = q->dtype == CHM_BF16 && c->coopmat_bf16_native;
    if ((env && !strcmp(env, "0")) || !c->coopmat || q->dtype == CHM_F32 ||
        (q->dtype == CHM_BF16 &&
         (!c->coopmat_bf16 || (D > 64 && !bwd && !native && !c->coopmat_emulated))) ||
        D % 16 || D > 128 || sg < 8 || sg > 64)
        return false;
    /* 16x16 fragments where listed: half the fragment loads (H100 f16 d64 fwd 2.19 -> 0.63 ms) */
    pl->fn = c->coopmat_emulated || c->cm_n16 || !c->cm_n8 ? 16 : 8;
    if (native && !c->coopmat_emulated) pl->fn = c->cm_bf16_fn;
    pl->native = native;
    pl->prefetch = q->dtype != CHM_BF16 || native;
    unsigned w = 0, bc = 0;
    if (env && sscanf(env, "%ux%u", &w, &bc) == 2 &&
        (attn_cm_try(vk, w, bc, 1, D, bwd, pl) || attn_cm_try(vk, w, bc, 0, D, bwd, pl)))
        return true;
    /*
     * The forward: every tile with padded rows first (unpadded ones conflict
     * on the banks); the backward: each tile padded, then unpadded (fewer
     * warps cost it more than the conflicts).
     */
    static const uint32_t tiles[][2] = {{4, 64}, {4, 32}, {2, 64}, {2, 32}, {2, 16}};
    const size_t n = sizeof tiles / sizeof tiles[0];
    for (size_t k = 0; k < 2 * n; k++) {
        size_t i = bwd ? k / 2 : k % n;
        uint32_t pad = bwd ? k % 2 == 0 : k < n;
        if (attn_cm_try(vk, tiles[i][0], tiles[i][1], pad, D, bwd, pl)) return true;
    }
    return false;
}

/*
 * CHIMERA_VULKAN_ATTN_ABLATE=N (tools/vk_bench; results wrong): the shaders' ABLATE
 * spec constant, which skips parts of the cooperative-matrix kernels (their comments);
 * 0 or unset in every real run.
 */
static uint32_t attn_cm_ablate(void) {
    const char *env = getenv("CHIMERA_VULKAN_ATTN_ABLATE");
    return env ? (uint32_t)strtoul(env, NULL, 0) : 0;
}

/* attention_fwd on cooperative matrices with plan pl (same push block as attention_fwd.comp). */
static chm_status attn_forward_cm(chm_vk *vk, const attn_cm_plan *pl, const chm_tensor *out,
                                  const chm_tensor *lse, const chm_tensor *q, const chm_tensor *k,
                                  const chm_tensor *v, double scale) {
    uint32_t B = (uint32_t)q->shape[0], Tq = (uint32_t)q->shape[1], H = (uint32_t)q->shape[2];
    struct {
        uint32_t B, Tq, Tk, H, Hk, nqt;
        float scale;
    } pc = {B, Tq, (uint32_t)k->shape[1], H, (uint32_t)k->shape[2],
            chm_vk_groups(Tq, 16 * pl->warps), (float)scale};
    char name[48];
    if (pl->native) /* KHR bf16 matrices, also beside NVIDIA's extension (f16's) */
        snprintf(name, sizeof name, "attention_cm_%s_bf16n",
                 vk->caps.coopmat_emulated ? "emu" : "khr");
    else
        snprintf(name, sizeof name, "attention_cm_%s_%s", chm_vk_cm_flavor(vk),
                 q->dtype == CHM_BF16 ? "bf16" : "f16");
    chm_vk_dispatch d = {
        .shader = name, .nbind = 5, .bind = {q, k, v, out, lse}, .writes = 3u << 3,
        .push = &pc, .push_size = sizeof pc, .groups = B * H * pc.nqt,
        .wg = pl->warps * vk->caps.subgroup_size,
        .spec = {pl->bc, (uint32_t)q->shape[3], pl->fn, pl->pad, attn_cm_ablate()},
    };
    d.nspec = d.spec[4] ? 5 : 4;
    return chm_vk_run(vk, &d);
}

/* Forward and decode: lse == NULL selects the decode variant. */
static chm_status attn_forward(chm_backend *be, const char *op, const chm_tensor *out,
                               const chm_tensor *lse, const chm_tensor *q, const chm_tensor *k,
                               const chm_tensor *v, double scale) {
    CHM_TRY(chm_vk_need_float(be, op, q));
    chm_vk *vk = chm_vk_ctx(be);
    if (chm_tensor_numel(q) == 0) return CHM_OK;
    attn_cm_plan cm;
    if (lse && attn_cm_plan_make(vk, q, false, &cm))
        return attn_forward_cm(vk, &cm, out, lse, q, k, v, scale);
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
    /* the dk/dv accumulators in registers where an invocation holds at most 32 of each
       (attention_bwd.comp's DKV_EREG) */
    const char *base = dq_pass                                 ? "attention_bwd_dq"
                       : (s->D + pl.tpr - 1) / pl.tpr <= 32 ? "attention_bwd_dkv_reg"
                                                             : "attention_bwd_dkv";
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, base, in[0]->dtype, false, name, sizeof name),
        .nbind = dq_pass ? 7 : 8,
        .bind = {in[0], in[1], in[2], in[3], in[4], in[5], g0, g1},
        .writes = dq_pass ? 1u << 6 : 3u << 6, .push = &pc, .push_size = sizeof pc,
        .groups = s->B * heads * pc.ntiles,
    };
    attn_plan_apply(&pl, &d);
    return chm_vk_run(vk, &d);
}

/*
 * The dq pass (grads = {dq}) or the dk/dv pass (grads = {dk, dv}) on
 * cooperative matrices (attention_bwd_cm.comp) with plan pl; same bindings
 * as attn_grads.
 */
static chm_status attn_grads_cm(chm_vk *vk, const attn_cm_plan *pl, bool dq_pass,
                                const attn_dims *s, const chm_tensor *const in[6],
                                const chm_tensor *g0, const chm_tensor *g1, double scale) {
    struct {
        uint32_t B, Tq, Tk, H, Hk, ntiles;
        float scale;
    } pc = {s->B, s->T, s->T, s->H, s->Hk, chm_vk_groups(s->T, 16 * pl->warps), (float)scale};
    char name[48];
    if (pl->native)
        snprintf(name, sizeof name, "attention_bwd_cm_%s_%s_bf16n", dq_pass ? "dq" : "dkv",
                 vk->caps.coopmat_emulated ? "emu" : "khr");
    else
        snprintf(name, sizeof name, "attention_bwd_cm_%s_%s_%s", dq_pass ? "dq" : "dkv",
                 chm_vk_cm_flavor(vk), in[0]->dtype == CHM_BF16 ? "bf16" : "f16");
    chm_vk_dispatch d = {
        .shader = name, .nbind = dq_pass ? 7 : 8,
        .bind = {in[0], in[1], in[2], in[3], in[4], in[5], g0, g1},
        .writes = dq_pass ? 1u << 6 : 3u << 6, .push = &pc, .push_size = sizeof pc,
        .groups = s->B * (dq_pass ? s->H : s->Hk) * pc.ntiles,
        .wg = pl->warps * vk->caps.subgroup_size,
        .spec = {pl->bc, s->D, pl->fn, pl->pad, attn_cm_ablate()},
    };
    d.nspec = d.spec[4] ? 5 : 4;
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
    attn_cm_plan cm;
    bool on_cm = attn_cm_plan_make(vk, q, true, &cm);
    chm_status rc = attn_delta(vk, &s, &delta, dout, out);
    if (!rc && on_cm) rc = attn_grads_cm(vk, &cm, true, &s, in, dq, NULL, scale);
    if (!rc && on_cm) rc = attn_grads_cm(vk, &cm, false, &s, in, dk, dv, scale);
    if (!rc && !on_cm) rc = attn_grads(vk, true, &s, in, dq, NULL, scale);
    if (!rc && !on_cm) rc = attn_grads(vk, false, &s, in, dk, dv, scale);
    chm_vk_scratch_free(be, &delta);
    return rc;
}
