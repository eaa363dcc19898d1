/*
 * vk_commands.c: recording, barriers, submission, sync, events and profiling.
 *
 * Ops are recorded into the current frame's command buffer (a batch). A
 * batch is submitted by chm_sync, a download, the staging ring running
 * full, or CHM_VK_BATCH_MAX commands; frames rotate so that the host records
 * the next batch while the device runs the last one, and a frame is waited
 * for only when it comes round again or at a sync. A batch of at least
 * CHM_VK_EARLY_MIN commands also goes early when the device has finished
 * all earlier batches (a fence asked without waiting): after each wait, and
 * wherever the host records more slowly than the device runs, the device
 * would otherwise idle until CHM_VK_BATCH_MAX commands were recorded.
 *
 * Barriers: each command declares the byte ranges it reads and writes (a
 * tensor's (VkBuffer, offset, size)). Since the last barrier the batch keeps
 * the ranges read and written; a command that reads or writes a written
 * range, or writes a read range, first records one global memory barrier
 * (compute/transfer -> compute/transfer) and the lists start over. Chains of
 * dependent ops therefore get one barrier per link and independent ops none.
 * A batch opens with one such barrier (ordering it after earlier batches on
 * the queue) and closes with one that makes its writes visible to the host.
 *
 * Profiling (CHIMERA_VULKAN_PROFILE=1 or chm_vulkan_set_profile) serialises
 * dispatches and brackets each with timestamps; the times are added per
 * shader when the batch is retired.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"

struct chm_event {
    VkQueryPool pool;   /* one timestamp; VK_NULL_HANDLE without timestamps */
    uint64_t serial;    /* submission that writes it */
    bool recorded;
    double host_ms;     /* without timestamps: host clock after a full wait */
};

static const VkPipelineStageFlags WORK_STAGES =
    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;

chm_vk_range chm_vk_tensor_range(const chm_tensor *t) {
    const chm_vk_alloc *a = t->buf->impl;
    VkDeviceSize lo = a->off + t->offset;
    return (chm_vk_range){a->block->buf, lo, lo + chm_tensor_nbytes(t)};
}

/* ---- frames ---- */

static chm_status frame_init(chm_vk *vk, chm_vk_frame *f) {
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = vk->cmds.pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    VkResult r = vkAllocateCommandBuffers(vk->dev, &ai, &f->cmd);
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = vkCreateFence(vk->dev, &fi, NULL, &f->fence);
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkCreateFence");
    if (!vk->caps.push_descriptor) {
        VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, CHM_VK_BATCH_MAX * 8};
        VkDescriptorPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                         .maxSets = CHM_VK_BATCH_MAX,
                                         .poolSizeCount = 1,
                                         .pPoolSizes = &ps};
        r = vkCreateDescriptorPool(vk->dev, &pi, NULL, &f->dpool);
        if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkCreateDescriptorPool");
    }
    if (vk->caps.timestamps) {
        VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                    .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                    .queryCount = 2 * CHM_VK_BATCH_MAX};
        r = vkCreateQueryPool(vk->dev, &qi, NULL, &f->qpool);
        if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkCreateQueryPool");
        f->qshader = calloc(CHM_VK_BATCH_MAX, sizeof *f->qshader);
        if (!f->qshader) return CHM_ERR(&vk->be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    }
    return CHM_OK;
}

chm_status chm_vk_commands_init(chm_vk *vk) {
    chm_vk_cmds *c = &vk->cmds;
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                  .queueFamilyIndex = vk->qfamily};
    VkResult r = vkCreateCommandPool(vk->dev, &pi, NULL, &c->pool);
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkCreateCommandPool");
    for (int i = 0; i < CHM_VK_FRAMES; i++) CHM_TRY(frame_init(vk, &c->frame[i]));
    c->prof = calloc((size_t)chm_vk_shader_count, sizeof *c->prof);
    if (!c->prof) return CHM_ERR(&vk->be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    const char *env = getenv("CHIMERA_VULKAN_PROFILE");
    c->profile = env && strcmp(env, "1") == 0 && vk->caps.timestamps;
    c->next_serial = 1;
    c->last = -1;
    return CHM_OK;
}

void chm_vk_commands_destroy(chm_vk *vk) {
    chm_vk_cmds *c = &vk->cmds;
    for (int i = 0; i < CHM_VK_FRAMES; i++) {
        chm_vk_frame *f = &c->frame[i];
        if (f->fence) vkDestroyFence(vk->dev, f->fence, NULL);
        if (f->dpool) vkDestroyDescriptorPool(vk->dev, f->dpool, NULL);
        if (f->qpool) vkDestroyQueryPool(vk->dev, f->qpool, NULL);
        free(f->qshader);
    }
    /* The validation layer keeps the pool's command-buffer state in memory it never frees. */
    chm_vk_leak_check_pause();
    if (c->pool) vkDestroyCommandPool(vk->dev, c->pool, NULL);
    chm_vk_leak_check_resume();
    free(c->reads);
    free(c->writes);
    free(c->prof);
    memset(c, 0, sizeof *c);
}

/* Add the timestamps of a finished frame to the per-shader totals. */
static void read_profile(chm_vk *vk, chm_vk_frame *f) {
    if (f->ntimed == 0) return;
    uint64_t *t = malloc((size_t)f->ntimed * 2 * sizeof *t);
    if (t && vkGetQueryPoolResults(vk->dev, f->qpool, 0, 2 * f->ntimed,
                                   (size_t)f->ntimed * 2 * sizeof *t, t, sizeof *t,
                                   VK_QUERY_RESULT_64_BIT) == VK_SUCCESS)
        for (uint32_t i = 0; i < f->ntimed; i++) {
            uint64_t ticks = (t[2 * i + 1] - t[2 * i]) & vk->caps.timestamp_mask;
            chm_vk_prof *p = &vk->cmds.prof[f->qshader[i]];
            p->calls++;
            p->ms += (double)ticks * vk->caps.timestamp_ns * 1e-6;
        }
    free(t);
}

/* Wait for a submitted frame and make it reusable. */
static chm_status frame_retire(chm_vk *vk, chm_vk_frame *f) {
    if (!f->submitted) return CHM_OK;
    double t0 = chm_vk_now_ms();
    VkResult r = vkWaitForFences(vk->dev, 1, &f->fence, VK_TRUE, UINT64_MAX);
    vk->stats.wait_ms += chm_vk_now_ms() - t0;
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkWaitForFences");
    read_profile(vk, f);
    vkResetFences(vk->dev, 1, &f->fence);
    if (f->dpool) vkResetDescriptorPool(vk->dev, f->dpool, 0);
    f->submitted = false;
    f->ndispatch = f->ntimed = 0;
    if (f->serial > vk->cmds.done_serial) vk->cmds.done_serial = f->serial;
    return CHM_OK;
}

static void barrier(chm_vk *vk, chm_vk_frame *f, VkPipelineStageFlags dst_stage,
                    VkAccessFlags dst_access) {
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask = dst_access};
    vkCmdPipelineBarrier(f->cmd, WORK_STAGES, dst_stage, 0, 1, &mb, 0, NULL, 0, NULL);
    vk->cmds.nreads = vk->cmds.nwrites = 0;
}

static const VkAccessFlags WORK_ACCESS = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                         VK_ACCESS_TRANSFER_READ_BIT |
                                         VK_ACCESS_TRANSFER_WRITE_BIT;

/* The frame being recorded, begun if needed (its earlier use waited for and retired). */
static chm_status frame_current(chm_vk *vk, chm_vk_frame **out) {
    chm_vk_frame *f = &vk->cmds.frame[vk->cmds.cur];
    if (!f->recording) {
        CHM_TRY(frame_retire(vk, f));
        VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                       .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
        VkResult r = vkBeginCommandBuffer(f->cmd, &bi);
        if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkBeginCommandBuffer");
        if (f->qpool) vkCmdResetQueryPool(f->cmd, f->qpool, 0, 2 * CHM_VK_BATCH_MAX);
        barrier(vk, f, WORK_STAGES, WORK_ACCESS); /* after the batches before this one */
        f->recording = true;
    }
    *out = f;
    return CHM_OK;
}

/* Submit the current batch; `early`: not because anything waits for it (counted apart). */
static chm_status submit_batch(chm_vk *vk, bool early) {
    chm_vk_cmds *c = &vk->cmds;
    chm_vk_frame *f = &c->frame[c->cur];
    if (!f->recording) return CHM_OK;
    barrier(vk, f, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    f->recording = false;
    VkResult r = vkEndCommandBuffer(f->cmd);
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkEndCommandBuffer");
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .commandBufferCount = 1,
                       .pCommandBuffers = &f->cmd};
    double t0 = chm_vk_now_ms();
    r = vkQueueSubmit(vk->queue, 1, &si, f->fence);
    vk->stats.submit_ms += chm_vk_now_ms() - t0;
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkQueueSubmit");
    f->submitted = true;
    f->serial = c->next_serial++;
    c->last = c->cur;
    c->cur = (c->cur + 1) % CHM_VK_FRAMES;
    if (early) vk->stats.early_submits++;
    else vk->stats.submits++;
    return CHM_OK;
}

chm_status chm_vk_submit(chm_vk *vk) { return submit_batch(vk, false); }

/*
 * Whether the device has finished every submitted batch (asked without
 * waiting). A fence's signal covers all work submitted before it on the
 * queue, so the last batch's fence answers for all of them.
 */
static bool device_idle(chm_vk *vk) {
    chm_vk_cmds *c = &vk->cmds;
    if (c->last < 0 || !c->frame[c->last].submitted) return true;
    return vkGetFenceStatus(vk->dev, c->frame[c->last].fence) == VK_SUCCESS;
}

/* After a command: submit the batch early when it is long enough and the device ran dry. */
static chm_status submit_if_idle(chm_vk *vk, const chm_vk_frame *f) {
    uint32_t n = f->ndispatch;
    if (n < CHM_VK_EARLY_MIN || (n != CHM_VK_EARLY_MIN && n % CHM_VK_EARLY_EVERY)) return CHM_OK;
    return device_idle(vk) ? submit_batch(vk, true) : CHM_OK;
}

chm_status chm_vk_flush_wait(chm_vk *vk) {
    CHM_TRY(chm_vk_submit(vk));
    for (int i = 0; i < CHM_VK_FRAMES; i++) CHM_TRY(frame_retire(vk, &vk->cmds.frame[i]));
    vk->staging.head = 0;
    chm_vk_pool_trim(vk);
    return CHM_OK;
}

/* What each status code means: the op, the array, and the range its values must be in. */
static const char *const status_what[][3] = {
    [CHM_VK_STATUS_EMBEDDING_FWD_ID] = {"embedding_fwd", "ids", "the rows of the table"},
    [CHM_VK_STATUS_EMBEDDING_BWD_ID] = {"embedding_bwd", "ids", "the rows of the table"},
    [CHM_VK_STATUS_GATHER_ROWS_IDX] = {"gather_rows", "idx", "the rows of x"},
    [CHM_VK_STATUS_SCATTER_ADD_ROWS_IDX] = {"scatter_add_rows", "idx", "the rows of out"},
    [CHM_VK_STATUS_ROUTER_TOPK_BWD_IDX] = {"router_topk_bwd", "idx", "the experts"},
    [CHM_VK_STATUS_CROSS_ENTROPY_TARGET] = {"cross_entropy", "targets", "the vocabulary"},
    [CHM_VK_STATUS_MOE_AUX_IDX] = {"moe_aux", "idx", "the experts"},
    [CHM_VK_STATUS_MATMUL_GROUPED_COUNT] = {"matmul_grouped", "counts", "the capacity (inclusive)"},
    [CHM_VK_STATUS_SCATTER_ADD_ROWS_REPEAT] = {"scatter_add_rows", "the sources of row",
                                               "at most max_repeat: the caller's bound is wrong"},
};

chm_status chm_vk_status_check(chm_vk *vk) {
    uint32_t *w = vk->status.map;
    if (w[0] == CHM_VK_STATUS_OK) return CHM_OK;
    uint32_t code = w[0], pos = w[1], val = w[2], bound = w[3];
    memset(w, 0, 4 * sizeof *w);
    size_t n = sizeof status_what / sizeof status_what[0];
    if (code >= n || !status_what[code][0])
        return CHM_ERR(&vk->be->err, CHM_ERR_INTERNAL, "vulkan: unknown shader status code %u",
                       code);
    return CHM_ERR(&vk->be->err, CHM_ERR_INVALID_ARG,
                   "%s (recorded since the last sync): %s[%u] = %d is outside [0, %u), %s",
                   status_what[code][0], status_what[code][1], pos, (int32_t)val, bound,
                   status_what[code][2]);
}

chm_status chm_vk_sync(chm_backend *be) {
    chm_vk *vk = chm_vk_ctx(be);
    CHM_TRY(chm_vk_flush_wait(vk));
    return chm_vk_status_check(vk);
}

/* ---- hazards ---- */

static bool overlaps(const chm_vk_range *list, int n, const chm_vk_range *r) {
    for (int i = 0; i < n; i++)
        if (list[i].buf == r->buf && list[i].lo < r->hi && r->lo < list[i].hi) return true;
    return false;
}

static chm_status append(chm_vk *vk, chm_vk_range **list, int *n, int *cap,
                         const chm_vk_range *r) {
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        chm_vk_range *nl = realloc(*list, (size_t)nc * sizeof *nl);
        if (!nl) return CHM_ERR(&vk->be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
        *list = nl;
        *cap = nc;
    }
    (*list)[(*n)++] = *r;
    return CHM_OK;
}

/*
 * Order a command that reads `rd` and writes `wr` after what the batch did
 * since its last barrier (one barrier when they conflict), then remember them.
 */
static chm_status track(chm_vk *vk, chm_vk_frame *f, const chm_vk_range *rd, int nrd,
                        const chm_vk_range *wr, int nwr) {
    chm_vk_cmds *c = &vk->cmds;
    bool hazard = c->profile;
    for (int i = 0; i < nrd && !hazard; i++) hazard = overlaps(c->writes, c->nwrites, &rd[i]);
    for (int i = 0; i < nwr && !hazard; i++)
        hazard = overlaps(c->writes, c->nwrites, &wr[i]) || overlaps(c->reads, c->nreads, &wr[i]);
    if (hazard) {
        barrier(vk, f, WORK_STAGES, WORK_ACCESS);
        vk->stats.barriers++;
    }
    for (int i = 0; i < nrd; i++) CHM_TRY(append(vk, &c->reads, &c->nreads, &c->capreads, &rd[i]));
    for (int i = 0; i < nwr; i++)
        CHM_TRY(append(vk, &c->writes, &c->nwrites, &c->capwrites, &wr[i]));
    return CHM_OK;
}

/* The frame to record into, submitting the current one first when it is full. */
static chm_status frame_for_command(chm_vk *vk, chm_vk_frame **f) {
    CHM_TRY(frame_current(vk, f));
    if ((*f)->ndispatch < CHM_VK_BATCH_MAX) return CHM_OK;
    CHM_TRY(chm_vk_submit(vk));
    return frame_current(vk, f);
}

chm_status chm_vk_record_copy(chm_vk *vk, VkBuffer src, VkDeviceSize soff, VkBuffer dst,
                              VkDeviceSize doff, VkDeviceSize size, const chm_vk_range *dev,
                              bool dev_write) {
    chm_vk_frame *f = NULL;
    CHM_TRY(frame_for_command(vk, &f));
    CHM_TRY(dev_write ? track(vk, f, NULL, 0, dev, 1) : track(vk, f, dev, 1, NULL, 0));
    VkBufferCopy region = {soff, doff, size};
    vkCmdCopyBuffer(f->cmd, src, dst, 1, &region);
    f->ndispatch++;
    vk->stats.transfers++;
    return CHM_OK;
}

/* ---- dispatch ---- */

/* Descriptor writes and push-constant offsets of a dispatch's bindings. */
typedef struct bound {
    VkDescriptorBufferInfo info[CHM_VK_MAX_BINDINGS];
    chm_vk_range rd[CHM_VK_MAX_BINDINGS], wr[CHM_VK_MAX_BINDINGS];
    uint32_t words[CHM_VK_PUSH_BYTES / 4];
    int n, nrd, nwr;
} bound;

/* The byte range binding i touches: its tensor's, or the window of it the dispatch names. */
static chm_vk_range binding_bytes(const chm_vk_dispatch *d, int i, uint32_t unit) {
    chm_vk_range r = chm_vk_tensor_range(d->bind[i]);
    if (d->window & (1u << i)) {
        r.lo += (VkDeviceSize)d->first[i] * unit;
        r.hi = r.lo + (VkDeviceSize)d->count[i] * unit;
    }
    return r;
}

/* A binding larger than the device allows, in an op that does not split its work. */
static chm_status too_large(chm_vk *vk, const chm_vk_dispatch *d, const chm_vk_range *r) {
    const chm_vk_caps *c = &vk->caps;
    return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                   "vulkan: %s: a %llu-byte tensor exceeds the %llu bytes one storage buffer "
                   "may span on %s (maxStorageBufferRange%s), and this op does not split its "
                   "work; use a smaller model or batch, or another backend (cuda, cpu)",
                   d->shader, (unsigned long long)(r->hi - r->lo),
                   (unsigned long long)c->max_range, vk->props.deviceName,
                   c->max_range < c->device_range ? ", lowered by CHIMERA_VULKAN_MAX_RANGE" : "");
}

static chm_status bind_tensors(chm_vk *vk, const chm_vk_dispatch *d, bound *b) {
    for (int i = 0; i < d->nbind; i++) {
        const chm_tensor *t = d->bind[i];
        if (!t || chm_tensor_nbytes(t) == 0) {
            /* Every absent tensor binds the one dummy buffer. The shader does not touch it,
               but synchronisation validation counts the binding's declared access, so it is
               tracked like a tensor: a dummy written by one dispatch and read or written by
               the next gets a barrier (rare: an optional output left out). */
            b->info[i] = (VkDescriptorBufferInfo){vk->dummy_buf, 0, VK_WHOLE_SIZE};
            b->words[i] = 0;
            chm_vk_range r = {vk->dummy_buf, 0, 256};
            if (d->writes & (1u << i)) b->wr[b->nwr++] = r;
            else b->rd[b->nrd++] = r;
            continue;
        }
        uint32_t unit = d->unit[i] ? d->unit[i] : (uint32_t)chm_dtype_size(t->dtype);
        chm_vk_range r = binding_bytes(d, i, unit);
        VkDeviceSize base, range;
        chm_vk_bind_extent(vk, &r, &base, &range);
        if (range > vk->caps.max_range) return too_large(vk, d, &r);
        b->info[i] = (VkDescriptorBufferInfo){r.buf, base, range};
        b->words[i] = (uint32_t)((r.lo - base) / unit);
        /* A window counts as its whole descriptor range (vk.h: chm_vk_dispatch.window). */
        if (d->window & (1u << i)) r = (chm_vk_range){r.buf, base, base + range};
        if (d->writes & (1u << i)) b->wr[b->nwr++] = r;
        else b->rd[b->nrd++] = r;
    }
    b->n = d->nbind;
    if (d->status) {
        /* Tracked as written, so that two reporting shaders never race on the words. */
        b->info[b->n++] = (VkDescriptorBufferInfo){vk->status.buf, 0, VK_WHOLE_SIZE};
        b->wr[b->nwr++] = (chm_vk_range){vk->status.buf, 0, 16};
    }
    memcpy(b->words + d->nbind, d->push, d->push_size);
    return CHM_OK;
}

/* Bind the descriptors: pushed, or a set from the frame's pool (a full pool ends the batch). */
static chm_status bind_descriptors(chm_vk *vk, chm_vk_frame **f, const bound *b) {
    VkWriteDescriptorSet w[CHM_VK_MAX_BINDINGS];
    for (int i = 0; i < b->n; i++)
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstBinding = (uint32_t)i,
                                      .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &b->info[i]};
    VkPipelineLayout layout = vk->pipes.layout[b->n];
    if (vk->caps.push_descriptor) {
        vk->push_descriptor_fn((*f)->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0,
                               (uint32_t)b->n, w);
        return CHM_OK;
    }
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                      .descriptorSetCount = 1,
                                      .pSetLayouts = &vk->pipes.set_layout[b->n]};
    VkDescriptorSet set;
    ai.descriptorPool = (*f)->dpool;
    VkResult r = vkAllocateDescriptorSets(vk->dev, &ai, &set);
    if (r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_FRAGMENTED_POOL) {
        CHM_TRY(chm_vk_submit(vk));
        CHM_TRY(frame_current(vk, f));
        ai.descriptorPool = (*f)->dpool;
        r = vkAllocateDescriptorSets(vk->dev, &ai, &set);
    }
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkAllocateDescriptorSets");
    for (int i = 0; i < b->n; i++) w[i].dstSet = set;
    vkUpdateDescriptorSets(vk->dev, (uint32_t)b->n, w, 0, NULL);
    vkCmdBindDescriptorSets((*f)->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0,
                            NULL);
    return CHM_OK;
}

/* vkCmdDispatch over `groups` workgroups, spread over y when x runs out (see common.glsl). */
static chm_status dispatch_groups(chm_vk *vk, chm_vk_frame *f, const char *shader,
                                  uint32_t groups) {
    uint32_t gx = groups < vk->caps.max_groups[0] ? groups : vk->caps.max_groups[0];
    uint32_t gy = (groups + gx - 1) / gx;
    if (gy > vk->caps.max_groups[1])
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "vulkan: %s needs %u workgroups, more than this device dispatches", shader,
                       groups);
    vkCmdDispatch(f->cmd, gx, gy, 1);
    return CHM_OK;
}

static chm_status run_dispatch(chm_vk *vk, const chm_vk_dispatch *d);

chm_status chm_vk_run(chm_vk *vk, const chm_vk_dispatch *d) {
    double t0 = chm_vk_now_ms();
    chm_status rc = run_dispatch(vk, d);
    vk->stats.record_ms += chm_vk_now_ms() - t0;
    return rc;
}

static chm_status run_dispatch(chm_vk *vk, const chm_vk_dispatch *d) {
    if (d->groups == 0) return CHM_OK;
    if (d->nbind + d->status > CHM_VK_MAX_BINDINGS ||
        (uint32_t)d->nbind * 4 + d->push_size > CHM_VK_PUSH_BYTES || d->push_size % 4)
        return CHM_ERR(&vk->be->err, CHM_ERR_INTERNAL,
                       "vulkan: %s has %d bindings and %u bytes of parameters; at most %d and "
                       "%d bytes in all fit", d->shader, d->nbind, d->push_size,
                       CHM_VK_MAX_BINDINGS, CHM_VK_PUSH_BYTES);
    int shader = chm_vk_shader_find(d->shader);
    if (shader < 0)
        return CHM_ERR(&vk->be->err, CHM_ERR_INTERNAL,
                       "vulkan: shader variant %s is not embedded in this build; add it to "
                       "cmake/vk_shaders.cmake", d->shader);
    bound b = {0};
    CHM_TRY(bind_tensors(vk, d, &b));
    uint32_t spec[2 + CHM_VK_MAX_SPEC] = {d->wg, vk->caps.subgroup_size};
    memcpy(spec + 2, d->spec, (size_t)d->nspec * sizeof *spec);
    VkPipeline pipe;
    CHM_TRY(chm_vk_pipeline_get(vk, shader, b.n, spec, 2 + d->nspec, &pipe));
    chm_vk_frame *f = NULL;
    CHM_TRY(frame_for_command(vk, &f));
    CHM_TRY(bind_descriptors(vk, &f, &b));
    CHM_TRY(track(vk, f, b.rd, b.nrd, b.wr, b.nwr));
    vkCmdBindPipeline(f->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    vkCmdPushConstants(f->cmd, vk->pipes.layout[b.n], VK_SHADER_STAGE_COMPUTE_BIT, 0,
                       (uint32_t)(d->nbind * 4 + d->push_size), b.words);
    bool timed = vk->cmds.profile && f->qpool;
    if (timed)
        vkCmdWriteTimestamp(f->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, f->qpool, 2 * f->ntimed);
    CHM_TRY(dispatch_groups(vk, f, d->shader, d->groups));
    if (timed) {
        vkCmdWriteTimestamp(f->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, f->qpool,
                            2 * f->ntimed + 1);
        f->qshader[f->ntimed++] = shader;
    }
    f->ndispatch++;
    vk->stats.dispatches++;
    return submit_if_idle(vk, f);
}

/* ---- events ---- */

chm_status chm_vk_event_create(chm_backend *be, chm_event **out) {
    chm_vk *vk = chm_vk_ctx(be);
    chm_event *ev = calloc(1, sizeof *ev);
    if (!ev) return CHM_ERR(&be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    if (vk->caps.timestamps) {
        VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                    .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                    .queryCount = 1};
        VkResult r = vkCreateQueryPool(vk->dev, &qi, NULL, &ev->pool);
        if (r != VK_SUCCESS) {
            free(ev);
            return chm_vk_fail(vk, r, "vkCreateQueryPool (event)");
        }
    }
    *out = ev;
    return CHM_OK;
}

/* With timestamps: a timestamp after all earlier commands. Without: the host clock after a full wait. */
chm_status chm_vk_event_record(chm_backend *be, chm_event *ev) {
    chm_vk *vk = chm_vk_ctx(be);
    if (!ev->pool) {
        CHM_TRY(chm_vk_flush_wait(vk));
        ev->host_ms = chm_vk_now_ms();
        ev->recorded = true;
        return CHM_OK;
    }
    chm_vk_frame *f = NULL;
    CHM_TRY(frame_for_command(vk, &f));
    vkCmdResetQueryPool(f->cmd, ev->pool, 0, 1);
    vkCmdWriteTimestamp(f->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, ev->pool, 0);
    ev->serial = vk->cmds.next_serial; /* the serial this batch will be submitted with */
    ev->recorded = true;
    return CHM_OK;
}

static chm_status event_ticks(chm_vk *vk, chm_event *ev, uint64_t *t) {
    double t0 = chm_vk_now_ms();
    VkResult r = vkGetQueryPoolResults(vk->dev, ev->pool, 0, 1, sizeof *t, t, sizeof *t,
                                       VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    vk->stats.wait_ms += chm_vk_now_ms() - t0;
    return r == VK_SUCCESS ? CHM_OK : chm_vk_fail(vk, r, "vkGetQueryPoolResults (event)");
}

chm_status chm_vk_event_elapsed_ms(chm_backend *be, chm_event *start, chm_event *stop,
                                   double *ms) {
    chm_vk *vk = chm_vk_ctx(be);
    if (!start->recorded || !stop->recorded)
        return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                       "event_elapsed_ms: both events must be recorded first");
    if (!start->pool) {
        *ms = stop->host_ms - start->host_ms;
        return CHM_OK;
    }
    uint64_t last = start->serial > stop->serial ? start->serial : stop->serial;
    if (last > vk->cmds.done_serial) CHM_TRY(chm_vk_flush_wait(vk));
    uint64_t t0, t1;
    CHM_TRY(event_ticks(vk, start, &t0));
    CHM_TRY(event_ticks(vk, stop, &t1));
    double ticks = t1 >= t0 ? (double)((t1 - t0) & vk->caps.timestamp_mask)
                            : -(double)((t0 - t1) & vk->caps.timestamp_mask);
    *ms = ticks * vk->caps.timestamp_ns * 1e-6;
    return CHM_OK;
}

/*
 * Whether the device has passed a recorded event, without waiting: never while its batch is
 * still on the host; then by its timestamp's availability (without timestamps an event is
 * recorded after a full wait, so it is done).
 */
bool chm_vk_event_done(chm_backend *be, chm_event *ev) {
    chm_vk *vk = chm_vk_ctx(be);
    if (!ev->recorded) return false;
    if (!ev->pool || ev->serial <= vk->cmds.done_serial) return true;
    if (ev->serial >= vk->cmds.next_serial) return false; /* not submitted yet */
    uint64_t t;
    return vkGetQueryPoolResults(vk->dev, ev->pool, 0, 1, sizeof t, &t, sizeof t,
                                 VK_QUERY_RESULT_64_BIT) == VK_SUCCESS;
}

void chm_vk_event_destroy(chm_backend *be, chm_event *ev) {
    chm_vk *vk = chm_vk_ctx(be);
    if (ev->pool) {
        /* A pending batch may still write the timestamp: wait before destroying its pool. */
        if (ev->recorded && ev->serial > vk->cmds.done_serial) chm_vk_flush_wait(vk);
        vkDestroyQueryPool(vk->dev, ev->pool, NULL);
    }
    free(ev);
}

/* ---- profiling ---- */

void chm_vulkan_set_profile(chm_backend *be, bool on) {
    if (!be || strcmp(be->name, "vulkan") != 0) return;
    chm_vk *vk = chm_vk_ctx(be);
    vk->cmds.profile = on && vk->caps.timestamps;
}

/* One line of the report. */
typedef struct prof_row {
    int shader;
    chm_vk_prof p;
} prof_row;

static int by_time(const void *a, const void *b) {
    double x = ((const prof_row *)a)->p.ms, y = ((const prof_row *)b)->p.ms;
    return (x < y) - (x > y);
}

chm_status chm_vulkan_profile_report(chm_backend *be, char *out, size_t n) {
    chm_vk *vk = chm_vk_ctx(be);
    CHM_TRY(chm_vk_flush_wait(vk));
    prof_row *rows = malloc((size_t)chm_vk_shader_count * sizeof *rows);
    int k = 0;
    if (!rows) return CHM_ERR(&be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    for (int i = 0; i < chm_vk_shader_count; i++)
        if (vk->cmds.prof[i].calls) rows[k++] = (prof_row){i, vk->cmds.prof[i]};
    qsort(rows, (size_t)k, sizeof *rows, by_time);
    size_t len = (size_t)snprintf(out, n, "%-28s %10s %12s %12s\n", "shader", "calls", "total ms",
                                  "mean us");
    for (int i = 0; i < k && len < n; i++)
        len += (size_t)snprintf(out + len, n - len, "%-28s %10llu %12.3f %12.2f\n",
                                chm_vk_shaders[rows[i].shader].name,
                                (unsigned long long)rows[i].p.calls, rows[i].p.ms,
                                1e3 * rows[i].p.ms / (double)rows[i].p.calls);
    if (k == 0 && len < n)
        snprintf(out + len, n - len, "(nothing timed: set CHIMERA_VULKAN_PROFILE=1%s)\n",
                 vk->caps.timestamps ? "" : "; this queue has no timestamps");
    free(rows);
    return CHM_OK;
}
