/*
 * vk_memory.c: the vulkan backend's device memory pool.
 *
 * Drivers allow few VkDeviceMemory objects (maxMemoryAllocationCount may be
 * 4096) and each allocation is slow, so chm_buffers are sub-ranges of large
 * blocks: one VkDeviceMemory with one VkBuffer over all of it (storage +
 * transfer usage), carved first-fit from a sorted free list whose neighbours
 * merge on free. Offsets and sizes are multiples of the pool alignment
 * (256 bytes, or minStorageBufferOffsetAlignment when larger), so every
 * buffer starts where a descriptor may bind it. A request larger than half a
 * block gets a dedicated block of its own size.
 *
 * Large models: a dedicated block may exceed 4 GiB (chimera-1b's flat f32
 * parameter buffer is 4.6 GB, its moments 9.2 GB). A VkBuffer cannot exceed
 * maxBufferSize (Vulkan 1.3 / maintenance4) nor the largest device-local
 * heap: such a request fails at once with a message naming the limit.
 * maxMemoryAllocationSize is a soft limit on some drivers (NVIDIA reports
 * just under 4 GiB and allocates more), so a larger request is tried, and
 * its failure names that limit. Binding such a buffer is vk_split.c's part.
 *
 * Freeing a range makes it reusable at once, even while recorded commands
 * still use it: the command recorder tracks hazards by (VkBuffer, byte
 * range), so a later command on the same bytes waits behind a barrier. Only
 * whole blocks outlive their users: empty ones go back to the driver in
 * chm_vk_pool_trim, which runs when no work is pending.
 *
 * Empty dedicated blocks are kept for reuse up to cache_max bytes (the most
 * recently used first; 8 shared blocks' worth, at most an eighth of the
 * heap): a request over half a block takes the smallest empty one that holds
 * it without wasting more than half, at once, like a freed range. Large
 * scratch buffers come and go in every step (chimera-1b: the scan backward's
 * 134 MB, the grouped matmul's 230 MB bf16 operand copies), and each
 * vkAllocateMemory of that size costs the host milliseconds. When the driver
 * is out of memory for a new block, the kept ones go back first (after a
 * wait for the device) and the allocation is tried once more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"

#define MIB ((VkDeviceSize)1 << 20)

int chm_vk_memory_type(const chm_vk *vk, uint32_t bits, VkMemoryPropertyFlags want) {
    for (uint32_t i = 0; i < vk->memprops.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (vk->memprops.memoryTypes[i].propertyFlags & want) == want)
            return (int)i;
    return -1;
}

chm_status chm_vk_buffer_create(chm_vk *vk, VkDeviceSize size, VkBufferUsageFlags usage,
                                VkMemoryPropertyFlags want, VkMemoryPropertyFlags prefer,
                                VkBuffer *buf, VkDeviceMemory *mem) {
    *buf = VK_NULL_HANDLE;
    *mem = VK_NULL_HANDLE;
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                             .size = size,
                             .usage = usage,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult r = vkCreateBuffer(vk->dev, &bi, NULL, buf);
    if (r != VK_SUCCESS) return chm_vk_fail(vk, r, "vkCreateBuffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(vk->dev, *buf, &req);
    int type = chm_vk_memory_type(vk, req.memoryTypeBits, want | prefer);
    if (type < 0) type = chm_vk_memory_type(vk, req.memoryTypeBits, want);
    if (type < 0) {
        vkDestroyBuffer(vk->dev, *buf, NULL);
        *buf = VK_NULL_HANDLE;
        return CHM_ERR(&vk->be->err, CHM_ERR_DEVICE,
                       "vulkan: %s has no memory type with properties 0x%x for a buffer",
                       vk->props.deviceName, (unsigned)want);
    }
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                               .allocationSize = req.size,
                               .memoryTypeIndex = (uint32_t)type};
    r = vkAllocateMemory(vk->dev, &ai, NULL, mem);
    if (r == VK_SUCCESS) r = vkBindBufferMemory(vk->dev, *buf, *mem, 0);
    if (r != VK_SUCCESS) {
        vkDestroyBuffer(vk->dev, *buf, NULL);
        if (*mem) vkFreeMemory(vk->dev, *mem, NULL);
        *buf = VK_NULL_HANDLE;
        *mem = VK_NULL_HANDLE;
        return chm_vk_fail(vk, r, "vkAllocateMemory");
    }
    return CHM_OK;
}

/* The largest device-local heap (what the pool's blocks come from). */
static VkDeviceSize local_heap(const chm_vk *vk) {
    VkDeviceSize best = 0;
    for (uint32_t i = 0; i < vk->memprops.memoryHeapCount; i++)
        if ((vk->memprops.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            vk->memprops.memoryHeaps[i].size > best)
            best = vk->memprops.memoryHeaps[i].size;
    return best ? best : 1024 * MIB;
}

chm_status chm_vk_pool_init(chm_vk *vk) {
    chm_vk_pool *p = &vk->pool;
    VkDeviceSize a = vk->props.limits.minStorageBufferOffsetAlignment;
    p->align = a > 256 ? a : 256;
    const char *env = getenv("CHIMERA_VULKAN_BLOCK_MB");
    VkDeviceSize mb = env && atoi(env) > 0 ? (VkDeviceSize)atoi(env) : 256;
    p->block_size = mb * MIB;
    /* A block is at most an eighth of the heap, so small devices still fit several. */
    if (p->block_size > local_heap(vk) / 8) p->block_size = local_heap(vk) / 8 / MIB * MIB;
    if (p->block_size < 4 * MIB) p->block_size = 4 * MIB;
    p->cache_max = 8 * p->block_size;
    if (p->cache_max > local_heap(vk) / 8) p->cache_max = local_heap(vk) / 8;
    return CHM_OK;
}

static void block_destroy(chm_vk *vk, chm_vk_block *b) {
    double t0 = chm_vk_now_ms();
    vkDestroyBuffer(vk->dev, b->buf, NULL);
    vkFreeMemory(vk->dev, b->mem, NULL);
    vk->stats.alloc_ms += chm_vk_now_ms() - t0;
    vk->pool.reserved -= b->size;
    free(b->free);
    free(b);
}

/* A new block of `size` bytes, one free span over all of it, appended to the pool. */
static chm_status block_create(chm_vk *vk, VkDeviceSize size, bool dedicated, chm_vk_block **out) {
    chm_vk_pool *p = &vk->pool;
    if (p->nblocks == p->capblocks) {
        int cap = p->capblocks ? 2 * p->capblocks : 8;
        chm_vk_block **nb = realloc(p->blocks, (size_t)cap * sizeof *nb);
        if (!nb) return CHM_ERR(&vk->be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
        p->blocks = nb;
        p->capblocks = cap;
    }
    chm_vk_block *b = calloc(1, sizeof *b);
    if (b) b->free = malloc(4 * sizeof *b->free);
    if (!b || !b->free) {
        if (b) free(b);
        return CHM_ERR(&vk->be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    }
    VkBufferUsageFlags usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                               VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    double t0 = chm_vk_now_ms();
    chm_status rc = chm_vk_buffer_create(vk, size, usage, 0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                                         &b->buf, &b->mem);
    vk->stats.alloc_ms += chm_vk_now_ms() - t0;
    vk->stats.block_allocs += rc == CHM_OK;
    if (rc) {
        free(b->free);
        free(b);
        return rc;
    }
    b->size = size;
    b->dedicated = dedicated;
    b->capfree = 4;
    b->nfree = 1;
    b->free[0] = (chm_vk_span){0, size};
    p->blocks[p->nblocks++] = b;
    p->reserved += size;
    *out = b;
    return CHM_OK;
}

/* Take `size` bytes from the first free span that holds them; false when none does. */
static bool block_take(chm_vk_block *b, VkDeviceSize size, VkDeviceSize *off) {
    for (int i = 0; i < b->nfree; i++) {
        chm_vk_span *s = &b->free[i];
        if (s->size < size) continue;
        *off = s->off;
        s->off += size;
        s->size -= size;
        if (s->size == 0) {
            memmove(s, s + 1, (size_t)(b->nfree - i - 1) * sizeof *s);
            b->nfree--;
        }
        b->used += size;
        return true;
    }
    return false;
}

/* Return [off, off+size) to the block's free list, merging with its neighbours. */
static chm_status block_give(chm_vk_block *b, VkDeviceSize off, VkDeviceSize size) {
    int i = 0;
    while (i < b->nfree && b->free[i].off < off) i++;
    bool left = i > 0 && b->free[i - 1].off + b->free[i - 1].size == off;
    bool right = i < b->nfree && off + size == b->free[i].off;
    b->used -= size;
    if (left && right) {
        b->free[i - 1].size += size + b->free[i].size;
        memmove(&b->free[i], &b->free[i + 1], (size_t)(b->nfree - i - 1) * sizeof *b->free);
        b->nfree--;
    } else if (left) {
        b->free[i - 1].size += size;
    } else if (right) {
        b->free[i].off = off;
        b->free[i].size += size;
    } else {
        if (b->nfree == b->capfree) {
            chm_vk_span *nf = realloc(b->free, (size_t)b->capfree * 2 * sizeof *nf);
            if (!nf) return CHM_ERR_NOMEM; /* the range stays lost; nothing breaks */
            b->free = nf;
            b->capfree *= 2;
        }
        memmove(&b->free[i + 1], &b->free[i], (size_t)(b->nfree - i) * sizeof *b->free);
        b->free[i] = (chm_vk_span){off, size};
        b->nfree++;
    }
    return CHM_OK;
}

/* What to do about a buffer larger than the device holds in one piece. */
#define TOO_LARGE_HINT "use a smaller model or micro batch, or another backend (cuda, cpu)"

/* A request no single VkBuffer on this device can hold: an error naming the limit. */
static chm_status check_size(chm_vk *vk, VkDeviceSize size) {
    const chm_vk_caps *c = &vk->caps;
    const char *limit = NULL;
    VkDeviceSize max = 0;
    if (c->max_buffer && size > c->max_buffer) limit = "maxBufferSize", max = c->max_buffer;
    else if (size > local_heap(vk)) limit = "its largest device-local heap", max = local_heap(vk);
    if (!limit) return CHM_OK;
    return CHM_ERR(&vk->be->err, CHM_ERR_NOMEM,
                   "vulkan: a %llu-byte buffer exceeds %s's %s (%llu bytes); %s",
                   (unsigned long long)size, vk->props.deviceName, limit,
                   (unsigned long long)max, TOO_LARGE_HINT);
}

/* The smallest kept empty dedicated block that holds `size` bytes with at most half unused. */
static chm_vk_block *cached_block(chm_vk_pool *p, VkDeviceSize size) {
    chm_vk_block *best = NULL;
    for (int i = 0; i < p->nblocks; i++) {
        chm_vk_block *b = p->blocks[i];
        if (b->dedicated && b->used == 0 && b->size >= size && b->size / 2 <= size &&
            (!best || b->size < best->size))
            best = b;
    }
    return best;
}

/* Give back every empty block but one shared spare (the cache too); when no work is pending. */
static void drop_empty(chm_vk *vk, VkDeviceSize keep_dedicated);

/* A new dedicated block; out of device memory with empty blocks kept, those go back first. */
static chm_status dedicated_new(chm_vk *vk, VkDeviceSize size, chm_vk_block **b) {
    chm_status rc = block_create(vk, size, true, b);
    if (rc != CHM_ERR_NOMEM) return rc;
    bool kept = false;
    for (int i = 0; i < vk->pool.nblocks; i++) kept |= vk->pool.blocks[i]->used == 0;
    if (!kept) return rc;
    CHM_TRY(chm_vk_flush_wait(vk)); /* the kept blocks' last users have finished */
    drop_empty(vk, 0);
    return block_create(vk, size, true, b);
}

/* A dedicated block of `size` bytes; past maxMemoryAllocationSize a failure says so. */
static chm_status dedicated_create(chm_vk *vk, VkDeviceSize size, chm_vk_block **b) {
    CHM_TRY(check_size(vk, size));
    chm_status rc = dedicated_new(vk, size, b);
    if (rc == CHM_OK || size <= vk->caps.max_alloc) return rc;
    char was[sizeof vk->be->err.msg];
    snprintf(was, sizeof was, "%s", vk->be->err.msg);
    return CHM_ERR(&vk->be->err, rc,
                   "vulkan: a %llu-byte buffer is larger than %s's maxMemoryAllocationSize "
                   "(%llu bytes), and the driver refused it (%s); %s", (unsigned long long)size,
                   vk->props.deviceName, (unsigned long long)vk->caps.max_alloc, was,
                   TOO_LARGE_HINT);
}

chm_status chm_vk_pool_alloc(chm_vk *vk, size_t bytes, chm_vk_alloc *out) {
    chm_vk_pool *p = &vk->pool;
    VkDeviceSize size = ((VkDeviceSize)(bytes ? bytes : 1) + p->align - 1) / p->align * p->align;
    chm_vk_block *b = NULL;
    VkDeviceSize off = 0;
    if (size > p->block_size / 2) {
        b = cached_block(p, size);
        if (b) vk->stats.block_reuses++;
        else CHM_TRY(dedicated_create(vk, size, &b));
        block_take(b, size, &off);
        b->stamp = ++p->tick;
    } else {
        for (int i = 0; i < p->nblocks && !b; i++)
            if (!p->blocks[i]->dedicated && block_take(p->blocks[i], size, &off)) b = p->blocks[i];
        if (!b) {
            chm_status rc = block_create(vk, p->block_size, false, &b);
            if (rc) return rc;
            block_take(b, size, &off);
        }
    }
    p->in_use += size;
    *out = (chm_vk_alloc){b, off, size};
    return CHM_OK;
}

void chm_vk_pool_free(chm_vk *vk, chm_vk_alloc *a) {
    if (!a->block) return;
    block_give(a->block, a->off, a->size);
    vk->pool.in_use -= a->size;
    a->block = NULL;
}

/* The stamp of the newest empty dedicated blocks that fit `budget` bytes together: older go. */
static uint64_t keep_since(const chm_vk_pool *p, VkDeviceSize budget) {
    uint64_t since = 0, below = UINT64_MAX; /* walk the empty ones from the newest down */
    VkDeviceSize kept = 0;
    for (;;) {
        const chm_vk_block *next = NULL;
        for (int i = 0; i < p->nblocks; i++) {
            const chm_vk_block *b = p->blocks[i];
            bool empty = b->dedicated && b->used == 0;
            if (empty && b->stamp < below && (!next || b->stamp > next->stamp)) next = b;
        }
        if (!next || kept + next->size > budget) return next ? next->stamp + 1 : since;
        kept += next->size;
        since = below = next->stamp;
    }
}

static void drop_empty(chm_vk *vk, VkDeviceSize keep_dedicated) {
    chm_vk_pool *p = &vk->pool;
    uint64_t since = keep_dedicated ? keep_since(p, keep_dedicated) : UINT64_MAX;
    bool spare = false; /* keep one empty shared block: the next step will want it */
    int k = 0;
    for (int i = 0; i < p->nblocks; i++) {
        chm_vk_block *b = p->blocks[i];
        bool drop = b->used == 0 && (b->dedicated ? b->stamp < since : spare);
        if (drop) {
            block_destroy(vk, b);
            continue;
        }
        if (b->used == 0 && !b->dedicated) spare = true;
        p->blocks[k++] = b;
    }
    p->nblocks = k;
}

void chm_vk_pool_trim(chm_vk *vk) { drop_empty(vk, vk->pool.cache_max); }

void chm_vk_pool_destroy(chm_vk *vk) {
    chm_vk_pool *p = &vk->pool;
    for (int i = 0; i < p->nblocks; i++) block_destroy(vk, p->blocks[i]);
    free(p->blocks);
    memset(p, 0, sizeof *p);
}

/* ---- the backend's buffer_alloc / buffer_free ---- */

chm_status chm_vk_buffer_alloc(chm_backend *be, size_t bytes, chm_buffer **out) {
    chm_vk *vk = chm_vk_ctx(be);
    chm_buffer *b = calloc(1, sizeof *b);
    chm_vk_alloc *a = calloc(1, sizeof *a);
    if (!b || !a) {
        free(b);
        free(a);
        return CHM_ERR(&be->err, CHM_ERR_NOMEM, "vulkan: out of host memory");
    }
    chm_status rc = chm_vk_pool_alloc(vk, bytes, a);
    if (rc) {
        free(b);
        free(a);
        return rc;
    }
    b->backend = be;
    b->size = bytes;
    b->impl = a;
    *out = b;
    return CHM_OK;
}

void chm_vk_buffer_free(chm_backend *be, chm_buffer *buf) {
    if (!buf) return;
    chm_vk_pool_free(chm_vk_ctx(be), buf->impl);
    free(buf->impl);
    free(buf);
}
