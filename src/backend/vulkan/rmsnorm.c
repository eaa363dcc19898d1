/*
 * rmsnorm.c: the vulkan backend's RMSNorm over the last dim, forward and
 * backward (shaders rmsnorm.comp, rmsnorm_bwd.comp).
 *
 * x [R,C], w [C], rstd [R]: rstd = 1/sqrt(mean(x^2) + eps), out = x*rstd*w.
 * Forward and dx: one workgroup per row, the row's sum reduced with subgroup
 * operations (or shared memory: the _nosg variants). dw (ACCUMULATES) sums
 * over rows in fixed chunks of rows and then over the chunks in order
 * (chm_vk_colsum_plan), so the result does not depend on scheduling.
 *
 * x, w, out, dout, dx, dw are f32, or all bf16 or all f16 (the shaders'
 * native variants: loaded into f32, rounded once on store; vk_dtype.h);
 * rstd and dw's chunk sums are f32 whatever the dtype.
 */
#include "vk_dtype.h"

chm_status chm_vk_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                              const chm_tensor *x, const chm_tensor *w, double eps) {
    CHM_TRY(chm_vk_need_float(be, "rmsnorm_fwd", x));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t rows, cols;
        float eps;
    } pc = {(uint32_t)chm_tensor_rows(x), (uint32_t)chm_tensor_cols(x), (float)eps};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "rmsnorm_fwd", x->dtype, true, name, sizeof name),
        .nbind = 4, .bind = {x, w, out, rstd}, .writes = 3u << 2,
        .push = &pc, .push_size = sizeof pc, .groups = pc.rows, .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &d);
}

/* dx += ..., one workgroup per row. */
static chm_status rmsnorm_dx(chm_vk *vk, const chm_tensor *dx, const chm_tensor *dout,
                             const chm_tensor *x, const chm_tensor *w, const chm_tensor *rstd) {
    struct {
        uint32_t rows, cols;
    } pc = {(uint32_t)chm_tensor_rows(x), (uint32_t)chm_tensor_cols(x)};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "rmsnorm_bwd_dx", x->dtype, true, name, sizeof name),
        .nbind = 5, .bind = {dout, x, w, rstd, dx}, .writes = 1u << 4,
        .push = &pc, .push_size = sizeof pc, .groups = pc.rows, .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &d);
}

/* dw (or the f32 chunk sums part [K,C] when partial) from dout, x and rstd. */
static chm_status rmsnorm_dw(chm_vk *vk, bool partial, const chm_tensor *dst,
                             const chm_tensor *dout, const chm_tensor *x, const chm_tensor *rstd,
                             chm_vk_colsum_plan plan) {
    struct {
        uint32_t rows, cols, per, chunks;
    } pc = {(uint32_t)chm_tensor_rows(x), (uint32_t)chm_tensor_cols(x), plan.rows_per_chunk,
            plan.chunks};
    char name[48];
    const char *base = partial ? "rmsnorm_bwd_dw_partial" : "rmsnorm_bwd_dw";
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, base, x->dtype, false, name, sizeof name),
        .nbind = 4, .bind = {dout, x, rstd, dst}, .writes = 1u << 3,
        .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups((int64_t)plan.chunks * pc.cols, vk->caps.wg_elem),
        .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                              const chm_tensor *dout, const chm_tensor *x, const chm_tensor *w,
                              const chm_tensor *rstd) {
    CHM_TRY(chm_vk_need_float(be, "rmsnorm_bwd", x));
    chm_vk *vk = chm_vk_ctx(be);
    int64_t rows = chm_tensor_rows(x), cols = chm_tensor_cols(x);
    if (rows == 0) return CHM_OK;
    CHM_TRY(rmsnorm_dx(vk, dx, dout, x, w, rstd));
    chm_vk_colsum_plan plan = chm_vk_colsum_plan_make(rows, cols);
    if (plan.chunks == 1) return rmsnorm_dw(vk, false, dw, dout, x, rstd, plan);
    chm_tensor part;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, (int64_t)plan.chunks * cols, &part));
    chm_status rc = rmsnorm_dw(vk, true, &part, dout, x, rstd, plan);
    if (!rc) rc = chm_vk_colsum_finish(vk, dw, &part, plan.chunks, cols);
    chm_vk_scratch_free(be, &part);
    return rc;
}
