/*
 * rows.c: the vulkan backend's gather_rows and scatter_add_rows, the row
 * moves of MoE dispatch/combine and MoD select/merge (shaders
 * gather_rows.comp, scatter_add_rows.comp).
 *
 *   gather:  out[m,:]       = x[idx[m],:]     (a zero row where idx[m] < 0)
 *   scatter: out[idx[m],:] += w[m] * x[m,:]   (ACCUMULATES; skipped where idx[m] < 0)
 *
 * Index values live on the device: one >= the row count is reported as
 * CHM_ERR_INVALID_ARG by the next chm_sync or download (the gather writes a
 * zero row for it, the scatter skips it).
 * The scatter is deterministic without float atomics: a counting sort
 * buckets the m of each output row, each bucket is sorted into increasing
 * m, and each output element adds its bucket in that order, which is the
 * cpu backend's order (five small dispatches, see scatter_add_rows.comp).
 * With the caller's bound on how often an index occurs (max_repeat 1..8: MoE's
 * top-k, MoD's distinct tokens) one dispatch lists each row's sources in r
 * slots instead, and the sum orders them in place: the same order, the same
 * sums, no scan or sort; a row with more sources is reported like a bad index.
 * x, out and weights are f32, or all bf16 or all f16: the gather copies
 * words, the scatter's sum runs in f32 and rounds once per output element
 * (native variants, vk_dtype.h); the plan's integer scratch is the same.
 */
#include "vk_dtype.h"

chm_status chm_vk_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                              const chm_tensor *idx) {
    CHM_TRY(chm_vk_need_float(be, "gather_rows", x));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t M, C, R, per;
    } pc = {(uint32_t)out->shape[0], (uint32_t)out->shape[1], (uint32_t)x->shape[0], 1};
    uint32_t word = 16 / (uint32_t)chm_dtype_size(x->dtype); /* elements a 16-byte word */
    if (pc.C % word == 0) pc.per = word; /* the shader moves words where aligned */
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "gather_rows", x->dtype, false, name, sizeof name),
        .nbind = 3, .bind = {x, idx, out}, .writes = 1u << 2,
        .status = true, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups((int64_t)pc.M * pc.C / pc.per, vk->caps.wg_elem),
        .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* The scatter's integer scratch: bucket sizes/cursors, bucket starts, the sorted m. */
typedef struct scatter_plan {
    chm_tensor cnt, off, order;  /* [R], [R+1], [M] */
} scatter_plan;

/* One pass of the plan over n items (rows m or output rows r). */
static chm_status plan_pass(chm_vk *vk, const char *shader, int nbind, const chm_tensor *const *b,
                            uint32_t writes, bool status, const void *pc, uint32_t push_size,
                            uint32_t groups, uint32_t wg) {
    chm_vk_dispatch d = {.shader = shader, .nbind = nbind, .writes = writes, .status = status,
                         .push = pc, .push_size = push_size, .groups = groups, .wg = wg};
    for (int i = 0; i < nbind; i++) d.bind[i] = b[i];
    return chm_vk_run(vk, &d);
}

/* count, scan, place, sort: fill the plan from idx [M] for R output rows. */
static chm_status plan_build(chm_backend *be, scatter_plan *pl, const chm_tensor *idx,
                             uint32_t M, uint32_t R) {
    chm_vk *vk = chm_vk_ctx(be);
    uint32_t wg = vk->caps.wg_elem;
    struct {
        uint32_t M, R;
    } pm = {M, R};
    struct {
        uint32_t R;
    } pr = {R};
    CHM_TRY(chm_vk_fill(be, &pl->cnt, 0));
    CHM_TRY(plan_pass(vk, "scatter_add_rows_count", 2, (const chm_tensor *[]){idx, &pl->cnt},
                      1u << 1, true, &pm, sizeof pm, chm_vk_groups(M, wg), wg));
    CHM_TRY(plan_pass(vk, "scatter_add_rows_scan", 2, (const chm_tensor *[]){&pl->cnt, &pl->off},
                      3u, false, &pr, sizeof pr, 1, vk->caps.wg_row));
    CHM_TRY(plan_pass(vk, "scatter_add_rows_place", 3,
                      (const chm_tensor *[]){idx, &pl->cnt, &pl->order}, 3u << 1, false, &pm,
                      sizeof pm, chm_vk_groups(M, wg), wg));
    return plan_pass(vk, "scatter_add_rows_sort", 2, (const chm_tensor *[]){&pl->off, &pl->order},
                     1u << 1, false, &pr, sizeof pr, chm_vk_groups(R, wg), wg);
}

/* With a bound r on how often an index occurs: cnt [R] and order [R, r] (row i's sources in
   slots i*r ..), listed by one dispatch, no scan, place or sort (scatter_add_rows.comp). */
static chm_status list_build(chm_backend *be, scatter_plan *pl, const chm_tensor *idx,
                             uint32_t M, uint32_t R, uint32_t r) {
    chm_vk *vk = chm_vk_ctx(be);
    uint32_t wg = vk->caps.wg_elem;
    struct {
        uint32_t M, R, r;
    } pm = {M, R, r};
    CHM_TRY(chm_vk_fill(be, &pl->cnt, 0));
    return plan_pass(vk, "scatter_add_rows_list", 3,
                     (const chm_tensor *[]){idx, &pl->cnt, &pl->order}, 3u << 1, true, &pm,
                     sizeof pm, chm_vk_groups(M, wg), wg);
}

chm_status chm_vk_scatter_add_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                   const chm_tensor *idx, const chm_tensor *weights,
                                   int max_repeat) {
    CHM_TRY(chm_vk_need_float(be, "scatter_add_rows", out));
    chm_vk *vk = chm_vk_ctx(be);
    uint32_t M = (uint32_t)x->shape[0], R = (uint32_t)out->shape[0], C = (uint32_t)out->shape[1];
    if (M == 0 || R == 0) return CHM_OK;
    /* a bound of 1..8 lists each row's sources (checked: status 9), else the counting sort */
    uint32_t r = max_repeat >= 1 && max_repeat <= 8 ? (uint32_t)max_repeat : 0;
    scatter_plan pl = {0};
    chm_status rc = chm_vk_scratch(be, CHM_I32, R, &pl.cnt);
    if (r) {
        if (!rc) rc = chm_vk_scratch(be, CHM_I32, (int64_t)R * r, &pl.order);
        if (!rc) rc = list_build(be, &pl, idx, M, R, r);
    } else {
        if (!rc) rc = chm_vk_scratch(be, CHM_I32, (int64_t)R + 1, &pl.off);
        if (!rc) rc = chm_vk_scratch(be, CHM_I32, M, &pl.order);
        if (!rc) rc = plan_build(be, &pl, idx, M, R);
    }
    struct {
        uint32_t R, C, flags, r;
    } ps = {R, C, weights ? 1u : 0u, r};
    char name[48];
    const char *sum = r ? "scatter_add_rows_sum_bounded" : "scatter_add_rows_sum";
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, sum, out->dtype, false, name, sizeof name),
        .nbind = 5, .bind = {x, weights, r ? &pl.cnt : &pl.off, &pl.order, out},
        .writes = 1u << 4, .push = &ps, .push_size = sizeof ps,
        .groups = chm_vk_groups((int64_t)R * C, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    if (!rc) rc = chm_vk_run(vk, &d);
    chm_tensor *all[] = {&pl.cnt, &pl.off, &pl.order};
    for (int i = 0; i < 3; i++)
        if (all[i]->buf) chm_vk_scratch_free(be, all[i]);
    return rc;
}
