/*
 * selective_scan.c: the vulkan backend's Mamba-1 selective scan: forward,
 * backward and the step from a saved state (shaders selective_scan_fwd.comp,
 * selective_scan_bwd.comp).
 *
 * u, delta, z, y, dy [B,T,Di]; A [Di,N]; Bm, Cm [B,T,N]; D, delta_bias [Di];
 * recurrence and gate as in backend.h. Four invocations share a channel,
 * each with four of its N = 16 states in registers, and walk the time axis
 * in chunks whose [steps, channels] tiles are staged in shared memory
 * (scan_tile_make sizes them to the device; N, the lanes per channel and the
 * chunk length are specialization constants 2..4, so each N gets its own
 * pipelines). The shaders' header comments give the layout.
 *
 * Backward: one dispatch stores the state at the start of every chunk, then
 * walks the chunks last to first, recomputing each chunk's states and walking
 * them back; fixed-order sums finish the reductions: dBm and dCm over the
 * workgroups of channels, dA, dD and ddelta_bias over the batch. No float
 * atomics. Where the device has subgroup shuffles (caps.scan_shuffle), chunks
 * of 16 steps with the states in registers and the sums over lanes and
 * channels in shuffles (selective_scan_bwd_sg.comp, the CUDA kernel's design;
 * it writes du, ddelta, dz directly where grads_set names them); else, or with
 * CHIMERA_VULKAN_DISABLE=scan_shuffle, chunks of 4 steps with the states in
 * shared memory (selective_scan_bwd.comp, no subgroup operations). The other
 * gradients that grads_set names are zeroed first (the shaders accumulate
 * them). Where the register backward runs with chunks of 16 steps, the
 * forward writes h_saved (when given, f32) and the backward takes the chunks'
 * start states from it instead of walking the states first; elsewhere
 * h_saved is left untouched and not read (backend.h allows both).
 *
 * The tensors (h of the step included) are f32, or all bf16 or all f16 (the
 * shaders' native variants: loaded into f32, rounded once on store or, for
 * a gradient, once when its sum is added; vk_dtype.h); the backward's
 * scratch is f32 whatever the dtype.
 */
#include <stdio.h>
#include <stdlib.h>

#include "vk_dtype.h"

/* Flags shared by both shaders (the bits of their p.flags). */
enum {
    SCAN_HAS_D = 1,
    SCAN_HAS_Z = 2,
    SCAN_HAS_DB = 4,
    SCAN_SOFTPLUS = 8,
    SCAN_WANT_DU = 16,
    SCAN_WANT_DDELTA = 32,
    SCAN_WANT_DZ = 64,
    SCAN_WANT_BC = 128,
    SCAN_HSAVED = 2048 /* selective_scan_bwd_sg.comp's; its SET_* bits are 256 << i */
};

/* Sizes of one call. */
typedef struct scan_dims {
    uint32_t B, T, Di, N;
} scan_dims;

static scan_dims scan_dims_of(const chm_scan_args *a) {
    return (scan_dims){(uint32_t)a->u->shape[0], (uint32_t)a->u->shape[1],
                       (uint32_t)a->u->shape[2], (uint32_t)a->A->shape[1]};
}

static uint32_t scan_input_flags(const chm_scan_args *a) {
    return (a->D ? SCAN_HAS_D : 0u) | (a->z ? SCAN_HAS_Z : 0u) |
           (a->delta_bias ? SCAN_HAS_DB : 0u) | (a->delta_softplus ? SCAN_SOFTPLUS : 0u);
}

/* The dtype check, and whether there is anything to do (*empty); N = 0 is refused. */
static chm_status scan_prepare(chm_backend *be, const char *op, const chm_scan_args *a,
                               bool *empty) {
    CHM_TRY(chm_vk_need_float(be, op, a->u));
    scan_dims s = scan_dims_of(a);
    *empty = (uint64_t)s.B * s.T * s.Di == 0;
    if (!*empty && s.N == 0)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                       "%s: the vulkan scan needs at least one state (A is [%u, 0])", op, s.Di);
    return CHM_OK;
}

/*
 * How a scan shader is laid out: LANES invocations per channel, WGC channels
 * per workgroup, chunks of LC steps. scan_tile_make takes the longest chunk
 * (lc_max, else halved) and for it the most channels (a power of two up to
 * 32) whose shared arrays fit the device: the backward asks for chunks of 4
 * steps and gets 32 channels on an H100/H200 (48 KiB) and on lavapipe (32 KiB).
 */
typedef struct scan_tile {
    uint32_t lanes, wgc, lc;
} scan_tile;

/* Shared-memory bytes of either shader (the arrays at the top of the .comp files). */
static uint64_t scan_shared_bytes(bool bwd, uint32_t N, scan_tile t) {
    uint64_t lc = t.lc, wgc = t.wgc, wg = (uint64_t)t.lanes * t.wgc;
    uint64_t tile4 = (lc * wgc + 3) / 4 * 4, rows4 = (lc * N + 3) / 4 * 4; /* vec4 arrays */
    if (!bwd) return 4 * (4 * lc * wgc + 2 * rows4 + lc * wg);
    return 4 * (4 * lc * wgc + 2 * tile4 + 2 * rows4 + 2 * lc * N * (wgc + 1) + 2 * lc * wg);
}

/*
 * CHIMERA_VULKAN_SCAN_TILE=<wgc>x<lc> (tuning, e.g. 16x8): channels per workgroup and
 * steps per chunk of both shaders when they fit the device; false when unset or not.
 */
static bool scan_tile_env(chm_vk *vk, bool bwd, uint32_t N, scan_tile *t) {
    const char *env = getenv("CHIMERA_VULKAN_SCAN_TILE");
    unsigned wgc, lc;
    if (!env || sscanf(env, "%ux%u", &wgc, &lc) != 2 || wgc == 0 || lc == 0 || wgc > 1024)
        return false;
    scan_tile e = {t->lanes, wgc, lc};
    if (e.lanes * e.wgc > vk->caps.max_wg ||
        scan_shared_bytes(bwd, N, e) > vk->props.limits.maxComputeSharedMemorySize)
        return false;
    *t = e;
    return true;
}

static chm_status scan_tile_make(chm_vk *vk, bool bwd, uint32_t N, uint32_t lc_max,
                                 scan_tile *t) {
    uint64_t budget = vk->props.limits.maxComputeSharedMemorySize;
    /* Four lanes of four states for the model's N = 16 (as the CUDA kernels): four
       times the invocations of one per channel, and a short serial chain per lane. */
    t->lanes = N < 4 ? N : 4;
    if (scan_tile_env(vk, bwd, N, t)) return CHM_OK;
    for (t->lc = lc_max; t->lc >= 1; t->lc /= 2)
        for (t->wgc = 32; t->wgc >= 1; t->wgc /= 2)
            if (t->lanes * t->wgc <= vk->caps.max_wg && scan_shared_bytes(bwd, N, *t) <= budget)
                return CHM_OK;
    return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                   "selective_scan: N = %u states do not fit this device's %llu bytes of "
                   "shared memory", N, (unsigned long long)budget);
}

/*
 * Whether the forward writes a->h_saved and the register backward reads it (the shaders'
 * variants with SAVE and HSAVED): where that backward runs with 16-step chunks
 * (chm_vk_scan_reads_saved: not by default) and h_saved is f32 as the contract says.
 * Elsewhere it is left untouched and not read.
 */
static bool scan_saves(const chm_vk *vk, const chm_scan_args *a) {
    return a->h_saved && a->h_saved->dtype == CHM_F32 &&
           chm_vk_scan_reads_saved(vk, (uint32_t)a->A->shape[1]);
}

/* Forward or step (h != NULL: the state starts at h and is written back). */
static chm_status scan_forward(chm_backend *be, const char *op, const chm_tensor *y,
                               const chm_tensor *h, const chm_scan_args *a) {
    bool empty;
    CHM_TRY(scan_prepare(be, op, a, &empty));
    if (empty) return CHM_OK;
    chm_vk *vk = chm_vk_ctx(be);
    scan_dims s = scan_dims_of(a);
    scan_tile t;
    CHM_TRY(scan_tile_make(vk, false, s.N, 16, &t));
    struct {
        uint32_t B, T, Di, flags;
    } pc = {s.B, s.T, s.Di, scan_input_flags(a)};
    char name[48];
    bool save = !h && scan_saves(vk, a);
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, h      ? "selective_scan_step"
                                        : save ? "selective_scan_fwd_save"
                                               : "selective_scan_fwd",
                                    a->u->dtype, false, name, sizeof name),
        .nbind = h || save ? 10 : 9,
        .bind = {a->u, a->delta, a->A, a->Bm, a->Cm, a->D, a->z, a->delta_bias, y,
                 h ? h : save ? a->h_saved : NULL},
        .writes = h || save ? 3u << 8 : 1u << 8, .push = &pc, .push_size = sizeof pc,
        .groups = s.B * chm_vk_groups(s.Di, t.wgc), .wg = t.lanes * t.wgc,
        .spec = {s.N, t.lanes, t.lc}, .nspec = 3,
    };
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_selective_scan_fwd(chm_backend *be, const chm_tensor *y,
                                     const chm_scan_args *a) {
    return scan_forward(be, "selective_scan_fwd", y, NULL, a);
}

chm_status chm_vk_selective_scan_step(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                      const chm_scan_args *a) {
    return scan_forward(be, "selective_scan_step", y, h, a);
}

/* ---- backward ---- */

/* How the backward is laid out: the tile, workgroups per batch row, scratch sections (floats). */
typedef struct scan_plan {
    scan_tile t;
    bool sg;                 /* selective_scan_bwd_sg (else selective_scan_bwd) */
    bool saved;              /* sg, 16-step chunks: the start states from h_saved (no hb) */
    bool half;               /* sg, 16-step chunks walked back in halves (the _half variants) */
    uint32_t sgc;            /* sg: channels whose dBm/dCm sums meet in shuffles */
    uint32_t nblk, nch;      /* workgroups per batch row, chunks of t.lc steps */
    uint64_t hb, pbc, pa, total;
} scan_plan;

/* Shared-memory bytes of selective_scan_bwd_sg.comp (the arrays at its top), chunks of lc. */
static uint64_t scan_sg_shared_bytes(uint32_t wgc, uint32_t sgc, uint32_t lc) {
    return 4 * (uint64_t)lc * (9 * (uint64_t)wgc + 2 * 16 + (uint64_t)(wgc / sgc) * 32);
}

/*
 * The register kernel's tile: chunks of 8 steps (the _l8 variants) by default, the most
 * channels (32 down to the subgroup's quarter) whose workgroup the subgroup size divides and
 * whose shared arrays fit. CHIMERA_VULKAN_SCAN_TILE=<wgc>x<lc> with lc 16 or 8 asks for that
 * tile (wgc 0: the most channels that fit), <wgc>x16h for 16-step chunks walked back in halves
 * (the _half variants). Why 8 (H100, chimera-1b's bf16 scan, session 12): 16-step chunks hold
 * 16 states in registers (174 a pipeline: 12 warps an SM, so its 2048 warps run in two waves)
 * and start from the forward's saved states, 2.07 ms a backward; 8-step chunks take 121
 * registers (one wave) and a first walk of the states, 1.90 ms, and their forward saves
 * nothing (0.51 ms against 0.61); halves of 16, 134 registers, 2.43.
 * False where it does not apply (N > 16, no shuffles, nothing fits): the older shader runs.
 */
static bool scan_sg_tile(const chm_vk *vk, uint32_t N, scan_plan *pl) {
    uint32_t sg = vk->caps.subgroup_size, want = 0, lc = 8;
    if (!vk->caps.scan_shuffle || N > 16) return false;
    const char *env = getenv("CHIMERA_VULKAN_SCAN_TILE");
    unsigned ew, el;
    char h = 0;
    int nf = env ? sscanf(env, "%ux%u%c", &ew, &el, &h) : 0;
    pl->half = false;
    if (nf >= 2 && (el == 16 || el == 8)) want = ew, lc = el, pl->half = nf == 3 && h == 'h';
    for (uint32_t wgc = 32; wgc >= 1; wgc /= 2) {
        uint32_t sgc = sg / 4 < 8 ? sg / 4 : 8;
        if (sgc > wgc) sgc = wgc;
        if ((want && wgc != want) || 4 * wgc % sg || 4 * wgc > vk->caps.max_wg ||
            scan_sg_shared_bytes(wgc, sgc, lc) > vk->props.limits.maxComputeSharedMemorySize)
            continue;
        pl->t = (scan_tile){4, wgc, lc};
        pl->sgc = sgc;
        return true;
    }
    return false;
}

/* Whether the backward reads saved states: the register kernel with 16-step chunks (N <= 16). */
bool chm_vk_scan_reads_saved(const chm_vk *vk, uint32_t N) {
    scan_plan pl;
    return scan_sg_tile(vk, N, &pl) && pl.t.lc == 16;
}

/*
 * The register kernel where it applies (chunks of 16 steps: hb holds T/16 states per
 * channel); else chunks of 4 steps whose states and gn (2 * 4 * N floats per channel)
 * live in shared memory, hb holding T/4 states per channel.
 */
static chm_status scan_plan_make(chm_vk *vk, const scan_dims *s, const chm_scan_args *a,
                                 bool want_bc, scan_plan *pl) {
    /* chunks of 4 steps: on an H100 32 channels x 4 steps ran the backward in 2.87 ms against
       4.12 for 32 x 8 (chimera-1b's shape, f32; 16 x 4: 3.14, 16 x 8: 4.47) */
    pl->sg = scan_sg_tile(vk, s->N, pl);
    if (!pl->sg) CHM_TRY(scan_tile_make(vk, true, s->N, 4, &pl->t));
    pl->nblk = chm_vk_groups(s->Di, pl->t.wgc);
    pl->nch = chm_vk_groups(s->T, pl->t.lc);
    uint64_t ninv = (uint64_t)s->B * s->Di;
    pl->saved = pl->sg && pl->t.lc == 16 && scan_saves(vk, a);
    pl->hb = 0;
    pl->pbc = pl->hb + (pl->saved ? 0 : (uint64_t)pl->nch * s->N * ninv);
    pl->pa = pl->pbc + (want_bc ? (uint64_t)s->B * pl->nblk * s->T * 2 * s->N : 0);
    pl->total = pl->pa + ninv * (s->N + 2);
    if (pl->total > UINT32_MAX)
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "selective_scan_bwd: B=%u, T=%u, Di=%u, N=%u needs %llu floats of "
                       "scratch, more than 32-bit indices reach; split the batch",
                       s->B, s->T, s->Di, s->N, (unsigned long long)pl->total);
    return CHM_OK;
}

/*
 * Which of du, ddelta, dz the walk writes rather than adds to (bits 0..2: du, ddelta, dz as
 * in grads_set): those grads_set names, with the register kernel only, and dz only when z is
 * given (else its gradient is zero: zeroed with the others).
 */
static uint32_t scan_elem_set(const scan_plan *pl, const chm_scan_args *a) {
    if (!pl->sg) return 0;
    uint32_t set = a->grads_set & (CHM_SCAN_SET_DU | CHM_SCAN_SET_DDELTA);
    return set | (a->z && (a->grads_set & CHM_SCAN_SET_DZ) ? 4u : 0u);
}

/* The walk back in time: du, ddelta, dz in place; partial sums into the scratch. */
static chm_status scan_walk(chm_vk *vk, const scan_dims *s, const scan_plan *pl,
                            const chm_scan_grads *g, const chm_tensor *dy,
                            const chm_scan_args *a, const chm_tensor *scr) {
    struct {
        uint32_t B, T, Di, nch, flags, hb, pbc, pa;
    } pc = {s->B, s->T, s->Di, pl->nch,
            scan_input_flags(a) | (g->du ? SCAN_WANT_DU : 0u) |
                (g->ddelta ? SCAN_WANT_DDELTA : 0u) | (g->dz ? SCAN_WANT_DZ : 0u) |
                (g->dBm || g->dCm ? SCAN_WANT_BC : 0u) | scan_elem_set(pl, a) << 8 |
                (pl->saved ? SCAN_HSAVED : 0u),
            (uint32_t)pl->hb, (uint32_t)pl->pbc, (uint32_t)pl->pa};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, !pl->sg              ? "selective_scan_bwd"
                                        : pl->t.lc == 8 ? "selective_scan_bwd_sg_l8"
                                        : pl->half      ? "selective_scan_bwd_sg_half"
                                                        : "selective_scan_bwd_sg",
                                    a->u->dtype, false, name, sizeof name),
        .nbind = pl->sg ? 14 : 13,
        .bind = {a->u, a->delta, a->A, a->Bm, a->Cm, a->D, a->z, a->delta_bias, dy, scr, g->du,
                 g->ddelta, g->dz, pl->saved ? a->h_saved : NULL},
        .writes = 0xFu << 9, .push = &pc, .push_size = sizeof pc,
        .groups = s->B * pl->nblk, .wg = pl->t.lanes * pl->t.wgc,
        .spec = {s->N, pl->t.lanes, pl->t.lc}, .nspec = 3,
    };
    if (pl->sg) d.spec[1] = pl->sgc, d.nspec = 2;
    return chm_vk_run(vk, &d);
}

/* One fixed-order sum of the partials (see selective_scan_bwd.comp's SUM variant). */
typedef struct scan_sum {
    uint32_t G, K, M, gs, ks, inner, os, base;
} scan_sum;

static chm_status scan_sum_run(chm_vk *vk, const chm_tensor *out, const chm_tensor *scr,
                               const scan_sum *ss) {
    if (!out) return CHM_OK;
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "selective_scan_bwd_sum", out->dtype, false, name,
                                    sizeof name), .nbind = 2, .bind = {scr, out}, .writes = 1u << 1,
        .push = ss, .push_size = sizeof *ss,
        .groups = chm_vk_groups((int64_t)ss->G * ss->M, vk->caps.wg_elem),
        .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* dBm, dCm over the channel workgroups; dA, dD, ddelta_bias over the batch. */
static chm_status scan_sums(chm_vk *vk, const scan_dims *s, const scan_plan *pl,
                            const chm_scan_grads *g, const chm_tensor *scr) {
    uint32_t N = s->N, TN2 = s->T * 2 * N, pa_row = s->Di * (N + 2);
    scan_sum dB = {s->B, pl->nblk, s->T * N, pl->nblk * TN2, TN2, N, 2 * N, (uint32_t)pl->pbc};
    scan_sum dC = dB;
    dC.base += N;
    scan_sum dA = {1, s->B, s->Di * N, 0, pa_row, N, N + 2, (uint32_t)pl->pa};
    scan_sum dD = {1, s->B, s->Di, 0, pa_row, 1, N + 2, (uint32_t)pl->pa + N};
    scan_sum ddb = dD;
    ddb.base += 1;
    CHM_TRY(scan_sum_run(vk, g->dBm, scr, &dB));
    CHM_TRY(scan_sum_run(vk, g->dCm, scr, &dC));
    CHM_TRY(scan_sum_run(vk, g->dA, scr, &dA));
    CHM_TRY(scan_sum_run(vk, g->dD, scr, &dD));
    return scan_sum_run(vk, g->ddelta_bias, scr, &ddb);
}

/* Zero the gradients that `set` (grads_set less what the walk writes) says are written. */
static chm_status scan_zero_set(chm_backend *be, const chm_scan_grads *g, unsigned set) {
    chm_tensor *t[8] = {g->du, g->ddelta, g->dA, g->dBm, g->dCm, g->dD, g->dz, g->ddelta_bias};
    for (int i = 0; i < 8; i++)
        if (t[i] && (set >> i & 1u) && chm_tensor_numel(t[i]) > 0)
            CHM_TRY(chm_vk_fill(be, t[i], 0.0));
    return CHM_OK;
}

chm_status chm_vk_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                     const chm_tensor *dy, const chm_scan_args *a) {
    bool empty;
    CHM_TRY(scan_prepare(be, "selective_scan_bwd", a, &empty));
    bool none = !g->du && !g->ddelta && !g->dA && !g->dBm && !g->dCm && !g->dD && !g->dz &&
                !g->ddelta_bias;
    if (empty || none) return scan_zero_set(be, g, a->grads_set);
    chm_vk *vk = chm_vk_ctx(be);
    scan_dims s = scan_dims_of(a);
    scan_plan pl = {0};
    CHM_TRY(scan_plan_make(vk, &s, a, g->dBm || g->dCm, &pl));
    /* the walk's set bits are du, ddelta, dz; grads_set's are bits 0, 1 and 6 */
    uint32_t ws = scan_elem_set(&pl, a);
    CHM_TRY(scan_zero_set(be, g, a->grads_set & ~((ws & 3u) | (ws & 4u ? CHM_SCAN_SET_DZ : 0u))));
    chm_tensor scr;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, (int64_t)pl.total, &scr));
    chm_status rc = scan_walk(vk, &s, &pl, g, dy, a, &scr);
    if (!rc) rc = scan_sums(vk, &s, &pl, g, &scr);
    chm_vk_scratch_free(be, &scr);
    return rc;
}
