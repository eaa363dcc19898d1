/*
 * sum_squares.c: out = sum of x^2 on the vulkan backend (the squared
 * gradient norm; shader sum_squares.comp).
 *
 * Deterministic two-pass reduction: x is cut into K blocks whose size
 * depends only on n, the workgroup size and how many elements of x's dtype
 * the binding limit holds (at most 4096 blocks unless that limit forces
 * smaller ones); workgroup g reduces block g into part[g], then one
 * workgroup reduces part in a fixed order into out. A single block goes
 * straight into out. out and the partial sums are f32; x is f32, or
 * bf16/f16 words that the first pass squares and sums in f32
 * (sum_squares_bf16, _f16: no f32 copy of a 16-bit gradient is made).
 *
 * A gradient buffer larger than one binding may span (chimera-1b: 4.6 GB)
 * runs the first pass as several dispatches over whole blocks, each binding
 * its window of x and of part (vk_split.c); the blocks and the order of the
 * final sum stay the same, so the result is bit for bit that of one pass.
 */
#include "vk_dtype.h"

/*
 * Elements per workgroup: at least 16 per invocation, at most 4096 blocks in
 * all, and at most `chunk` (what one binding may hold) so that a block never
 * straddles two dispatches.
 */
static int64_t block_size(int64_t n, uint32_t wg, int64_t chunk) {
    int64_t b = (int64_t)wg * 16, need = (n + 4095) / 4096;
    if (need > b) b = (need + wg - 1) / wg * wg;
    if (b > chunk) b = chunk >= wg ? chunk / wg * wg : chunk;
    return b;
}

/*
 * One pass: groups workgroups over src (n elements, `block` per group) into
 * dst, with the variant of `name` for src's dtype.
 */
static chm_status pass(chm_vk *vk, const char *name, const chm_vk_dispatch *win,
                       const chm_tensor *dst, const chm_tensor *src, int64_t n, int64_t block,
                       int64_t groups) {
    struct {
        uint32_t n, block;
    } pc = {(uint32_t)n, (uint32_t)block};
    char buf[48];
    chm_vk_dispatch d = *win; /* the windows, if any */
    d.shader = chm_vk_variant_dt(vk, name, src->dtype, true, buf, sizeof buf);
    d.nbind = 2, d.bind[0] = src, d.bind[1] = dst, d.writes = 1u << 1;
    d.push = &pc, d.push_size = sizeof pc, d.groups = (uint32_t)groups, d.wg = vk->caps.wg_row;
    return chm_vk_run(vk, &d);
}

/* The first pass, one dispatch per `per` blocks: x's window [g0 B, g1 B), part's [g0, g1). */
static chm_status partial_sums(chm_vk *vk, const chm_tensor *part, const chm_tensor *x,
                               int64_t n, int64_t block, int64_t groups, int64_t per) {
    static const chm_vk_dispatch whole = {0};
    if (per >= groups) return pass(vk, "sum_squares", &whole, part, x, n, block, groups);
    for (int64_t g0 = 0; g0 < groups; g0 += per) {
        int64_t g1 = g0 + per < groups ? g0 + per : groups;
        int64_t lo = g0 * block, hi = g1 * block < n ? g1 * block : n;
        chm_vk_dispatch w = {.window = 3u, .first = {lo, g0}, .count = {hi - lo, g1 - g0}};
        CHM_TRY(pass(vk, "sum_squares", &w, part, x, hi - lo, block, g1 - g0));
    }
    return CHM_OK;
}

chm_status chm_vk_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    CHM_TRY(chm_vk_need_float(be, "sum_squares", x));
    CHM_TRY(chm_vk_need_f32(be, "sum_squares", out));
    chm_vk *vk = chm_vk_ctx(be);
    static const chm_vk_dispatch whole = {0};
    /* Blocks of x per binding: 16-bit words fit twice as many (part's window is small). */
    int64_t n = chm_tensor_numel(x);
    int64_t chunk = chm_vk_chunk_elems(vk, (uint32_t)chm_dtype_size(x->dtype));
    if (n == 0) return chm_vk_fill(be, out, 0.0);
    if (chunk == 0)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                       "sum_squares: a %llu-byte binding holds no %s element past the "
                       "alignment; raise CHIMERA_VULKAN_MAX_RANGE",
                       (unsigned long long)vk->caps.max_range, chm_dtype_name(x->dtype));
    uint32_t wg = vk->caps.wg_row;
    int64_t block = block_size(n, wg, chunk), groups = (n + block - 1) / block;
    if (groups == 1) return pass(vk, "sum_squares", &whole, out, x, n, block, 1);
    chm_tensor part;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, groups, &part));
    /* One dispatch when x fits a binding whole, as before; else whole blocks per chunk. */
    chm_vk_range r = chm_vk_tensor_range(x);
    VkDeviceSize base, range;
    chm_vk_bind_extent(vk, &r, &base, &range);
    int64_t per = range <= vk->caps.max_range ? groups : chunk / block;
    chm_status rc = partial_sums(vk, &part, x, n, block, groups, per);
    if (!rc) rc = pass(vk, "sum_squares_final", &whole, out, &part, groups, groups, 1);
    chm_vk_scratch_free(be, &part);
    return rc;
}
