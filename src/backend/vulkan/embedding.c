/*
 * embedding.c: the vulkan backend's embedding lookup, forward and backward
 * (shaders embedding.comp, embedding_bwd.comp).
 *
 * ids (I32, R of them, any shape), table [V,C], out [R,C]:
 *   out[r] = table[ids[r]]            dtable[ids[r]] += dout[r]  (ACCUMULATES)
 * The ids live on the device, so their range [0,V) is checked by the
 * shaders: a bad id gives a zero row (forward) or is skipped (backward) and
 * is reported as CHM_ERR_INVALID_ARG by the next chm_sync or download.
 * The backward is deterministic and uses no float atomics: a first pass
 * links each row to the next row with the same id, a second adds each
 * chain in row order (see embedding_bwd.comp).
 * table, out, dtable, dout are f32, or all bf16 or all f16: the forward
 * copies words, the backward sums each chain in f32 and rounds once
 * (native variants, vk_dtype.h).
 */
#include "vk_dtype.h"

chm_status chm_vk_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                                const chm_tensor *table) {
    CHM_TRY(chm_vk_need_float(be, "embedding_fwd", table));
    chm_vk *vk = chm_vk_ctx(be);
    struct {
        uint32_t rows, vocab, cols;
    } pc = {(uint32_t)chm_tensor_numel(ids), (uint32_t)table->shape[0],
            (uint32_t)table->shape[1]};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "embedding_fwd", table->dtype, false, name, sizeof name),
        .nbind = 3, .bind = {ids, table, out}, .writes = 1u << 2,
        .status = true, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups((int64_t)pc.rows * pc.cols, vk->caps.wg_elem),
        .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* link [2R]: the next row with the same id (or -1), then whether each row starts its chain. */
static chm_status link_rows(chm_vk *vk, const chm_tensor *link, const chm_tensor *ids,
                            int64_t vocab) {
    struct {
        uint32_t rows, vocab;
    } pc = {(uint32_t)chm_tensor_numel(ids), (uint32_t)vocab};
    chm_vk_dispatch d = {
        .shader = "embedding_bwd_link", .nbind = 2, .bind = {ids, link}, .writes = 1u << 1,
        .status = true, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(pc.rows, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_embedding_bwd(chm_backend *be, const chm_tensor *dtable,
                                const chm_tensor *dout, const chm_tensor *ids) {
    CHM_TRY(chm_vk_need_float(be, "embedding_bwd", dtable));
    chm_vk *vk = chm_vk_ctx(be);
    int64_t rows = chm_tensor_numel(ids), cols = dtable->shape[1];
    if (rows == 0 || cols == 0) return CHM_OK;
    chm_tensor link;
    CHM_TRY(chm_vk_scratch(be, CHM_I32, 2 * rows, &link));
    chm_status rc = link_rows(vk, &link, ids, dtable->shape[0]);
    struct {
        uint32_t rows, cols;
    } pc = {(uint32_t)rows, (uint32_t)cols};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "embedding_bwd_sum", dtable->dtype, false, name,
                                    sizeof name),
        .nbind = 4, .bind = {dout, ids, &link, dtable},
        .writes = 1u << 3, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups(rows * cols, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    if (!rc) rc = chm_vk_run(vk, &d);
    chm_vk_scratch_free(be, &link);
    return rc;
}
