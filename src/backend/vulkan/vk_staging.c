/*
 * vk_staging.c: host <-> device transfers through a host-visible staging ring.
 *
 * One persistently mapped, host-coherent buffer (64 MiB unless
 * CHIMERA_VULKAN_STAGING_KB says otherwise) is handed out front to back.
 * An upload copies the caller's bytes into the ring at once (so the caller
 * may reuse them when upload returns) and records a ring -> tensor copy in
 * the current batch, ordered after earlier commands on those bytes like any
 * other write. A download records tensor -> ring copies, submits and waits,
 * then copies out. The ring is rewound only after all work has finished
 * (chm_vk_flush_wait), so no region is rewritten while a copy may read it;
 * a tensor larger than the free space moves in chunks, flushing in between.
 */
#include <stdlib.h>
#include <string.h>

#include "vk.h"

/* Chunks start 16-byte aligned (cheap for the copy engine, and no partial words). */
#define RING_ALIGN 16
/* Below this much free space a transfer waits for a rewind rather than crawl in small chunks. */
#define RING_MIN_CHUNK ((VkDeviceSize)64 << 10)

chm_status chm_vk_staging_init(chm_vk *vk) {
    chm_vk_staging *s = &vk->staging;
    const char *env = getenv("CHIMERA_VULKAN_STAGING_KB");
    long kb = env ? atol(env) : 0;
    s->size = kb > 0 ? (VkDeviceSize)kb << 10 : (VkDeviceSize)64 << 20;
    s->size = (s->size + RING_ALIGN - 1) / RING_ALIGN * RING_ALIGN;
    /* Cached memory makes the host's reads of downloads fast; coherent spares flushes. */
    chm_status rc = chm_vk_buffer_create(
        vk, s->size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
        VK_MEMORY_PROPERTY_HOST_CACHED_BIT, &s->buf, &s->mem);
    if (rc) return rc;
    void *map = NULL;
    VkResult r = vkMapMemory(vk->dev, s->mem, 0, VK_WHOLE_SIZE, 0, &map);
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkMapMemory (staging ring)");
    s->map = map;
    s->head = 0;
    return CHM_OK;
}

void chm_vk_staging_destroy(chm_vk *vk) {
    chm_vk_staging *s = &vk->staging;
    if (s->buf) vkDestroyBuffer(vk->dev, s->buf, NULL);
    if (s->mem) vkFreeMemory(vk->dev, s->mem, NULL);
    memset(s, 0, sizeof *s);
}

/* Free bytes at the ring's head. */
static VkDeviceSize ring_free(const chm_vk_staging *s) { return s->size - s->head; }

/* Reserve up to `want` bytes at the head (flushing first when too little is free); *got may be < want. */
static chm_status ring_take(chm_vk *vk, VkDeviceSize want, VkDeviceSize *off, VkDeviceSize *got) {
    chm_vk_staging *s = &vk->staging;
    VkDeviceSize need = want < RING_MIN_CHUNK ? want : RING_MIN_CHUNK;
    if (ring_free(s) < need || ring_free(s) == 0) CHM_TRY(chm_vk_flush_wait(vk));
    *off = s->head;
    *got = want < ring_free(s) ? want : ring_free(s);
    s->head += (*got + RING_ALIGN - 1) / RING_ALIGN * RING_ALIGN;
    if (s->head > s->size) s->head = s->size;
    return CHM_OK;
}

chm_status chm_vk_upload(chm_backend *be, const chm_tensor *dst, const void *src) {
    chm_vk *vk = chm_vk_ctx(be);
    chm_vk_range r = chm_vk_tensor_range(dst);
    VkDeviceSize total = r.hi - r.lo, done = 0;
    while (done < total) {
        VkDeviceSize off, got;
        CHM_TRY(ring_take(vk, total - done, &off, &got));
        memcpy(vk->staging.map + off, (const unsigned char *)src + done, got);
        chm_vk_range part = {r.buf, r.lo + done, r.lo + done + got};
        CHM_TRY(chm_vk_record_copy(vk, vk->staging.buf, off, r.buf, part.lo, got, &part, true));
        done += got;
    }
    return CHM_OK;
}

/* One recorded device -> ring chunk waiting to be copied out after the flush. */
typedef struct pending {
    VkDeviceSize ring_off, dst_off, size;
} pending;

chm_status chm_vk_download(chm_backend *be, const chm_tensor *src, void *dst) {
    chm_vk *vk = chm_vk_ctx(be);
    chm_vk_range r = chm_vk_tensor_range(src);
    VkDeviceSize total = r.hi - r.lo, done = 0;
    chm_status status_rc = CHM_OK;
    while (done < total) {
        /* Record as many chunks as the ring holds, then wait once and copy them out. */
        pending chunks[64];
        int n = 0;
        if (ring_free(&vk->staging) < RING_MIN_CHUNK) CHM_TRY(chm_vk_flush_wait(vk));
        while (done < total && n < 64 && ring_free(&vk->staging) > 0) {
            chm_vk_staging *s = &vk->staging;
            VkDeviceSize got = total - done < ring_free(s) ? total - done : ring_free(s);
            chm_vk_range part = {r.buf, r.lo + done, r.lo + done + got};
            CHM_TRY(chm_vk_record_copy(vk, r.buf, part.lo, s->buf, s->head, got, &part, false));
            chunks[n++] = (pending){s->head, done, got};
            s->head += (got + RING_ALIGN - 1) / RING_ALIGN * RING_ALIGN;
            if (s->head > s->size) s->head = s->size;
            done += got;
        }
        CHM_TRY(chm_vk_flush_wait(vk));
        for (int i = 0; i < n; i++)
            memcpy((unsigned char *)dst + chunks[i].dst_off, vk->staging.map + chunks[i].ring_off,
                   chunks[i].size);
        if (!status_rc) status_rc = chm_vk_status_check(vk);
    }
    return status_rc;
}
