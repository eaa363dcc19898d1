/*
 * backend_vulkan.c: the vulkan backend's op table, open and close.
 *
 * chm_vulkan_open builds the context piece by piece (vk_context.c, then the
 * memory pool, staging ring, status words, pipelines and command frames)
 * and logs the device's capabilities in one line (once per process) unless
 * opts->quiet. Entries still NULL in the table are reported as unsupported
 * by the shared layer and listed by `chimera info`; later passes add their
 * shaders.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"

static const chm_backend_ops vulkan_ops = {
    .api_version = CHM_BACKEND_API_VERSION,
    .buffer_alloc = chm_vk_buffer_alloc,
    .buffer_free = chm_vk_buffer_free,
    .upload = chm_vk_upload,
    .download = chm_vk_download,
    .fill = chm_vk_fill,
    .copy = chm_vk_copy,
    .cast = chm_vk_cast,
    .sync = chm_vk_sync,
    .event_create = chm_vk_event_create,
    .event_record = chm_vk_event_record,
    .event_elapsed_ms = chm_vk_event_elapsed_ms,
    .event_destroy = chm_vk_event_destroy,
    .event_done = chm_vk_event_done,
    /* vk-a */
    .matmul = chm_vk_matmul,
    .matmul_grouped = chm_vk_matmul_grouped,
    .rope_fwd = chm_vk_rope_fwd,
    .rope_bwd = chm_vk_rope_bwd,
    .exp_fwd = chm_vk_exp_fwd,
    .exp_bwd = chm_vk_exp_bwd,
    .row_scale_fwd = chm_vk_row_scale_fwd,
    .row_scale_bwd = chm_vk_row_scale_bwd,
    .bce_logits = chm_vk_bce_logits,
    .gather_rows = chm_vk_gather_rows,
    .scatter_add_rows = chm_vk_scatter_add_rows,
    .router_topk = chm_vk_router_topk,
    .router_topk_bwd = chm_vk_router_topk_bwd,
    .select_topk = chm_vk_select_topk,
    .cross_entropy = chm_vk_cross_entropy,
    .moe_aux = chm_vk_moe_aux,
    /* end vk-a */
    .rmsnorm_fwd = chm_vk_rmsnorm_fwd,
    .rmsnorm_bwd = chm_vk_rmsnorm_bwd,
    .swiglu_fwd = chm_vk_swiglu_fwd,
    .swiglu_bwd = chm_vk_swiglu_bwd,
    .embedding_fwd = chm_vk_embedding_fwd,
    .embedding_bwd = chm_vk_embedding_bwd,
    .add = chm_vk_add,
    .scale = chm_vk_scale,
    .axpy = chm_vk_axpy,
    .sum_rows = chm_vk_sum_rows,
    .adamw_step = chm_vk_adamw_step,
    .sum_squares = chm_vk_sum_squares,
    /* helper vk-b: attention, selective scan, causal conv1d */
    .attention_fwd = chm_vk_attention_fwd,
    .attention_bwd = chm_vk_attention_bwd,
    .attention_decode = chm_vk_attention_decode,
    .selective_scan_fwd = chm_vk_selective_scan_fwd,
    .selective_scan_bwd = chm_vk_selective_scan_bwd,
    .selective_scan_step = chm_vk_selective_scan_step,
    .causal_conv1d_fwd = chm_vk_causal_conv1d_fwd,
    .causal_conv1d_bwd = chm_vk_causal_conv1d_bwd,
};

chm_status chm_vk_need_f32(chm_backend *be, const char *op, const chm_tensor *t) {
    if (t->dtype == CHM_F32) return CHM_OK;
    return CHM_ERR(&be->err, CHM_ERR_DTYPE,
                   "%s: the vulkan backend computes in f32, not %s; cast first (or use "
                   "--backend cpu for f64)", op, chm_dtype_name(t->dtype));
}

/* Large scratch buffers (dedicated blocks) come back cheaply: the pool keeps empty ones. */
chm_status chm_vk_scratch(chm_backend *be, chm_dtype dt, int64_t n, chm_tensor *out) {
    chm_buffer *buf = NULL;
    CHM_TRY(chm_vk_buffer_alloc(be, (size_t)n * chm_dtype_size(dt), &buf));
    *out = chm_tensor_1d(buf, 0, dt, n);
    return CHM_OK;
}

/*
 * Freeing right after recording the commands that use it is safe: the range
 * returns to the pool, and whatever reuses it is ordered after those
 * commands by the recorder's hazard tracking (vk_memory.c).
 */
void chm_vk_scratch_free(chm_backend *be, chm_tensor *t) {
    chm_buffer *b = t->buf;
    t->buf = NULL;
    chm_vk_buffer_free(be, b);
}

const char *chm_vk_variant_sg(const chm_vk *vk, const char *name, char *buf, size_t n) {
    if (vk->caps.subgroup) return name;
    snprintf(buf, n, "%s_nosg", name);
    return buf;
}

/* The status words shaders raise bad data into, and the dummy buffer empty tensors bind. */
static chm_status small_buffers_init(chm_vk *vk) {
    CHM_TRY(chm_vk_buffer_create(
        vk, 16, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, 0,
        &vk->status.buf, &vk->status.mem));
    void *map = NULL;
    VkResult r = vkMapMemory(vk->dev, vk->status.mem, 0, VK_WHOLE_SIZE, 0, &map);
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkMapMemory (status words)");
    vk->status.map = map;
    memset(map, 0, 16);
    return chm_vk_buffer_create(vk, 256, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, 0,
                                VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &vk->dummy_buf,
                                &vk->dummy_mem);
}

/* CHIMERA_VULKAN_STATS=1: the counters and host times, one line to stderr (at close). */
static void print_stats(const chm_backend *be) {
    const char *env = getenv("CHIMERA_VULKAN_STATS");
    if (!env || strcmp(env, "1") != 0) return;
    chm_vulkan_stats s;
    chm_vulkan_get_stats(be, &s);
    fprintf(stderr,
            "chimera vulkan stats: %llu dispatches, %llu transfers, %llu barriers, %llu submits "
            "+ %llu early, %llu pipelines, %llu blocks made, %llu large reuses; host ms: "
            "recording %.1f, waiting %.1f, submitting %.1f, blocks %.1f\n",
            (unsigned long long)s.dispatches, (unsigned long long)s.transfers,
            (unsigned long long)s.barriers, (unsigned long long)s.submits,
            (unsigned long long)s.early_submits, (unsigned long long)s.pipelines,
            (unsigned long long)s.block_allocs, (unsigned long long)s.block_reuses, s.record_ms,
            s.wait_ms, s.submit_ms, s.alloc_ms);
}

static void vulkan_close(chm_backend *be) {
    chm_vk *vk = chm_vk_ctx(be);
    if (vk && vk->dev) {
        if (vk->cmds.pool) chm_vk_flush_wait(vk);
        print_stats(be);
        vkDeviceWaitIdle(vk->dev);
        chm_vk_commands_destroy(vk);
        chm_vk_pipelines_destroy(vk);
        chm_vk_staging_destroy(vk);
        if (vk->status.buf) vkDestroyBuffer(vk->dev, vk->status.buf, NULL);
        if (vk->status.mem) vkFreeMemory(vk->dev, vk->status.mem, NULL);
        if (vk->dummy_buf) vkDestroyBuffer(vk->dev, vk->dummy_buf, NULL);
        if (vk->dummy_mem) vkFreeMemory(vk->dev, vk->dummy_mem, NULL);
        chm_vk_pool_destroy(vk);
    }
    if (vk) chm_vk_context_free(vk);
    free(vk);
    free(be);
}

/* Everything after the device: each part can fail and leaves what it made for close. */
static chm_status parts_init(chm_vk *vk) {
    CHM_TRY(chm_vk_pool_init(vk));
    CHM_TRY(chm_vk_staging_init(vk));
    CHM_TRY(small_buffers_init(vk));
    CHM_TRY(chm_vk_pipelines_init(vk));
    return chm_vk_commands_init(vk);
}

chm_status chm_vulkan_open(const chm_backend_options *opts, chm_backend **out, chm_err *err) {
    chm_backend *be = calloc(1, sizeof *be);
    chm_vk *vk = calloc(1, sizeof *vk);
    if (!be || !vk) {
        free(be);
        free(vk);
        return CHM_ERR(err, CHM_ERR_NOMEM, "cannot allocate the vulkan backend");
    }
    be->api_version = CHM_BACKEND_API_VERSION;
    be->name = "vulkan";
    be->ops = &vulkan_ops;
    be->ctx = vk;
    be->close = vulkan_close;
    vk->be = be;
    vk->quiet = opts && opts->quiet;
    chm_status rc = chm_vk_context_init(vk, opts, err);
    if (rc == CHM_OK && (rc = parts_init(vk)) != CHM_OK && err) *err = be->err;
    if (rc) {
        vulkan_close(be);
        return rc;
    }
    be->caps = vk->caps.storage16 ? CHM_CAP_BF16 | CHM_CAP_F16 : 0;
    /* bf16 matmuls on real (not emulated) cooperative matrices, v1 or 2: auto precision trains
       in bf16 */
    bool cm_bf16 = vk->caps.coopmat && !vk->caps.coopmat_emulated && vk->caps.coopmat_bf16;
    if (vk->caps.storage16 && (cm_bf16 || (vk->caps.coopmat2 && vk->caps.coopmat2_bf16)))
        be->caps |= CHM_CAP_FAST_BF16;
    /* the scan backward reads the forward's saved states only with 16-step chunks
       (selective_scan.c: not the default), for the model's N = 16 */
    if (chm_vk_scan_reads_saved(vk, 16)) be->caps |= CHM_CAP_SCAN_SAVED;
    snprintf(be->device, sizeof be->device, "%s", vk->props.deviceName);
    static atomic_bool logged; /* one line per process, however often the backend opens */
    if (!vk->quiet && !atomic_exchange(&logged, true)) {
        char line[1024];
        chm_vk_caps_describe(vk, line, sizeof line);
        fprintf(stderr, "chimera %s\n", line);
    }
    *out = be;
    return CHM_OK;
}

void chm_vulkan_get_stats(const chm_backend *be, chm_vulkan_stats *out) {
    memset(out, 0, sizeof *out);
    if (!be || strcmp(be->name, "vulkan") != 0) return;
    const chm_vk *vk = be->ctx;
    *out = vk->stats;
    out->bytes_in_use = vk->pool.in_use;
    out->bytes_reserved = vk->pool.reserved;
    out->blocks = (uint64_t)vk->pool.nblocks;
}
