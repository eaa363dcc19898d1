/*
 * sum_squares.c: out = sum of x^2 on the vulkan backend (the squared
 * gradient norm; shader sum_squares.comp).
 *
 * Deterministic two-pass reduction: x is cut into K blocks whose size
 * depends only on n and the workgroup size (at most 4096 blocks); workgroup
 * g reduces block g into part[g], then one workgroup reduces part in a fixed
 * order into out. A single block goes straight into out. x and out are f32.
 */
#include "vk.h"

/* Elements per workgroup: at least 16 per invocation, at most 4096 blocks in all. */
static uint32_t block_size(int64_t n, uint32_t wg) {
    int64_t b = (int64_t)wg * 16, need = (n + 4095) / 4096;
    if (need > b) b = (need + wg - 1) / wg * wg;
    return (uint32_t)b;
}

static chm_status pass(chm_vk *vk, const char *name, const chm_tensor *dst, const chm_tensor *src,
                       uint32_t n, uint32_t block, uint32_t groups) {
    struct {
        uint32_t n, block;
    } pc = {n, block};
    char buf[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_sg(vk, name, buf, sizeof buf),
        .nbind = 2, .bind = {src, dst}, .writes = 1u << 1,
        .push = &pc, .push_size = sizeof pc, .groups = groups, .wg = vk->caps.wg_row,
    };
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    CHM_TRY(chm_vk_need_f32(be, "sum_squares", x));
    CHM_TRY(chm_vk_need_f32(be, "sum_squares", out));
    chm_vk *vk = chm_vk_ctx(be);
    int64_t n = chm_tensor_numel(x);
    if (n == 0) return chm_vk_fill(be, out, 0.0);
    uint32_t wg = vk->caps.wg_row, block = block_size(n, wg);
    uint32_t groups = (uint32_t)((n + block - 1) / block);
    if (groups == 1) return pass(vk, "sum_squares", out, x, (uint32_t)n, block, 1);
    chm_tensor part;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, groups, &part));
    chm_status rc = pass(vk, "sum_squares", &part, x, (uint32_t)n, block, groups);
    if (!rc) rc = pass(vk, "sum_squares_final", out, &part, groups, groups, 1);
    chm_vk_scratch_free(be, &part);
    return rc;
}
