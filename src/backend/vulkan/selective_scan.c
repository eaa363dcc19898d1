/*
 * selective_scan.c: the vulkan backend's Mamba-1 selective scan: forward,
 * backward and the step from a saved state (shaders selective_scan_fwd.comp,
 * selective_scan_bwd.comp).
 *
 * u, delta, z, y, dy [B,T,Di]; A [Di,N]; Bm, Cm [B,T,N]; D, delta_bias [Di];
 * recurrence and gate as in backend.h. One invocation per (b, channel) walks
 * the time axis with its N states in registers (N is specialization constant
 * 2, so each N gets its own pipeline).
 *
 * Backward (ACCUMULATES into every gradient that is not NULL): one dispatch
 * recomputes the states chunk by chunk (chunks of L = ceil(sqrt(T)) steps, so
 * the scratch holds about 2*sqrt(T) states per channel instead of T) and
 * walks back in time; then fixed-order sums finish the reductions: dBm and
 * dCm over the workgroups of channels, dA, dD and ddelta_bias over the batch
 * (selective_scan_bwd.comp explains the layout). No float atomics.
 *
 * The tensors (h of the step included) are f32, or all bf16 or all f16 (the
 * shaders' native variants: loaded into f32, rounded once on store or, for
 * a gradient, once when its sum is added; vk_dtype.h); the backward's
 * scratch is f32 whatever the dtype.
 */
#include <math.h>

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
    SCAN_WANT_BC = 128
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

/* Forward or step (h != NULL: the state starts at h and is written back). */
static chm_status scan_forward(chm_backend *be, const char *op, const chm_tensor *y,
                               const chm_tensor *h, const chm_scan_args *a) {
    bool empty;
    CHM_TRY(scan_prepare(be, op, a, &empty));
    if (empty) return CHM_OK;
    chm_vk *vk = chm_vk_ctx(be);
    scan_dims s = scan_dims_of(a);
    struct {
        uint32_t B, T, Di, flags;
    } pc = {s.B, s.T, s.Di, scan_input_flags(a)};
    uint32_t wg = vk->caps.wg_elem;
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, h ? "selective_scan_step" : "selective_scan_fwd",
                                    a->u->dtype, false, name, sizeof name),
        .nbind = h ? 10 : 9,
        .bind = {a->u, a->delta, a->A, a->Bm, a->Cm, a->D, a->z, a->delta_bias, y, h},
        .writes = h ? 3u << 8 : 1u << 8, .push = &pc, .push_size = sizeof pc,
        .groups = s.B * chm_vk_groups(s.Di, wg), .wg = wg, .spec = {s.N}, .nspec = 1,
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

/* How the backward is laid out: workgroup size, chunks, scratch sections (floats). */
typedef struct scan_plan {
    bool sg;                 /* subgroup reduction variant */
    uint32_t wg, nblk;       /* invocations per workgroup, workgroups per batch row */
    uint32_t L, nch;         /* chunk length and count */
    uint64_t hb, hs, pbc, pa, total;
} scan_plan;

/*
 * The largest power-of-two workgroup (up to wg_elem and 64) whose reduction buffer
 * fits the device's shared memory, and the scratch layout.
 */
static chm_status scan_plan_make(chm_vk *vk, const scan_dims *s, bool want_bc, scan_plan *pl) {
    pl->sg = vk->caps.subgroup && vk->caps.subgroup_size >= 4;
    uint64_t budget = vk->props.limits.maxComputeSharedMemorySize;
    /* At most 64: on an H100 the per-step channel sums of 64 lanes made the backward
       ~15% faster than 256 (more, smaller workgroups; shorter reductions). */
    uint32_t wg = 1;
    while (wg * 2 <= vk->caps.wg_elem && wg < 64) wg *= 2;
    /* red[] of selective_scan_bwd.comp: 2N floats per subgroup (>= 4 wide) or per invocation */
    while (wg > 1 && 8ull * s->N * (pl->sg ? (wg + 3) / 4 : wg) > budget) wg /= 2;
    if (8ull * s->N * (pl->sg ? 1 : wg) > budget)
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "selective_scan_bwd: N = %u states do not fit this device's %llu bytes "
                       "of shared memory", s->N, (unsigned long long)budget);
    pl->wg = wg;
    pl->nblk = chm_vk_groups(s->Di, wg);
    pl->L = (uint32_t)ceil(sqrt((double)s->T));
    pl->nch = chm_vk_groups(s->T, pl->L);
    uint64_t ninv = (uint64_t)s->B * s->Di;
    pl->hb = 0;
    pl->hs = pl->hb + (uint64_t)pl->nch * s->N * ninv;
    pl->pbc = pl->hs + (uint64_t)pl->L * s->N * ninv;
    pl->pa = pl->pbc + (want_bc ? (uint64_t)s->B * pl->nblk * s->T * 2 * s->N : 0);
    pl->total = pl->pa + ninv * (s->N + 2);
    if (pl->total > UINT32_MAX)
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "selective_scan_bwd: B=%u, T=%u, Di=%u, N=%u needs %llu floats of "
                       "scratch, more than 32-bit indices reach; split the batch",
                       s->B, s->T, s->Di, s->N, (unsigned long long)pl->total);
    return CHM_OK;
}

/* The walk back in time: du, ddelta, dz in place; partial sums into the scratch. */
static chm_status scan_walk(chm_vk *vk, const scan_dims *s, const scan_plan *pl,
                            const chm_scan_grads *g, const chm_tensor *dy,
                            const chm_scan_args *a, const chm_tensor *scr) {
    struct {
        uint32_t B, T, Di, L, nch, flags, hb, hs, pbc, pa;
    } pc = {s->B, s->T, s->Di, pl->L, pl->nch,
            scan_input_flags(a) | (g->du ? SCAN_WANT_DU : 0u) |
                (g->ddelta ? SCAN_WANT_DDELTA : 0u) | (g->dz ? SCAN_WANT_DZ : 0u) |
                (g->dBm || g->dCm ? SCAN_WANT_BC : 0u),
            (uint32_t)pl->hb, (uint32_t)pl->hs, (uint32_t)pl->pbc, (uint32_t)pl->pa};
    char name[48];
    const char *suffix = a->u->dtype == CHM_BF16 ? "_bf16" : a->u->dtype == CHM_F16 ? "_f16" : "";
    snprintf(name, sizeof name, "selective_scan_bwd%s%s", suffix, pl->sg ? "" : "_nosg");
    chm_vk_dispatch d = {
        .shader = name,
        .nbind = 13,
        .bind = {a->u, a->delta, a->A, a->Bm, a->Cm, a->D, a->z, a->delta_bias, dy, scr, g->du,
                 g->ddelta, g->dz},
        .writes = 0xFu << 9, .push = &pc, .push_size = sizeof pc,
        .groups = s->B * pl->nblk, .wg = pl->wg, .spec = {s->N}, .nspec = 1,
    };
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

chm_status chm_vk_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                     const chm_tensor *dy, const chm_scan_args *a) {
    bool empty;
    CHM_TRY(scan_prepare(be, "selective_scan_bwd", a, &empty));
    bool none = !g->du && !g->ddelta && !g->dA && !g->dBm && !g->dCm && !g->dD && !g->dz &&
                !g->ddelta_bias;
    if (empty || none) return CHM_OK;
    chm_vk *vk = chm_vk_ctx(be);
    scan_dims s = scan_dims_of(a);
    scan_plan pl = {0};
    CHM_TRY(scan_plan_make(vk, &s, g->dBm || g->dCm, &pl));
    chm_tensor scr;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, (int64_t)pl.total, &scr));
    chm_status rc = scan_walk(vk, &s, &pl, g, dy, a, &scr);
    if (!rc) rc = scan_sums(vk, &s, &pl, g, &scr);
    chm_vk_scratch_free(be, &scr);
    return rc;
}
