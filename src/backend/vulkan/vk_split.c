/*
 * vk_split.c: elementwise work over tensors larger than one storage-buffer
 * binding may span.
 *
 * A descriptor binds at most caps.max_range bytes (maxStorageBufferRange:
 * 4 GiB on NVIDIA, 128 MiB on some AMD/Intel drivers and on lavapipe; less
 * under CHIMERA_VULKAN_MAX_RANGE). The model's flat buffers (parameters,
 * gradients, moments: 4.6 GB each for chimera-1b in f32) are larger, and the
 * ops that sweep them whole (fill, copy, cast, add, scale, axpy, adamw_step,
 * exp, swiglu; sum_squares in sum_squares.c) are elementwise. So such an op
 * goes out as several dispatches over element ranges [first, first + count):
 * each binds only its window of every tensor, at an offset rounded down to
 * minStorageBufferOffsetAlignment (vk_commands.c), and gets its own count in
 * the first push-constant word. Every element sees the same arithmetic as in
 * one dispatch, so results are bit for bit the same. Chunks are multiples of
 * the binding alignment in bytes: windows of aligned tensors then never
 * share a descriptor's bytes, and need no barrier between them.
 */
#include <string.h>

#include "vk.h"

/* Elements per dispatch at most, whatever the range: counts and indices stay 31-bit. */
#define MAX_CHUNK ((int64_t)1 << 31)

int64_t chm_vk_chunk_elems(const chm_vk *vk, uint32_t unit) {
    VkDeviceSize align = vk->caps.bind_align, range = vk->caps.max_range / 4 * 4;
    if (unit == 0 || range <= align) return 0;
    /* A window may start up to align - unit bytes past its descriptor's offset. */
    int64_t n = (int64_t)((range - align) / unit);
    int64_t step = align % unit == 0 ? (int64_t)(align / unit) : 1;
    if (n >= step) n = n / step * step;
    return n < MAX_CHUNK ? n : MAX_CHUNK;
}

/* Bytes per element of binding i (its unit, else its dtype); 0 for an empty binding. */
static uint32_t unit_of(const chm_vk_dispatch *d, int i) {
    const chm_tensor *t = d->bind[i];
    if (!t || chm_tensor_nbytes(t) == 0) return 0;
    return d->unit[i] ? d->unit[i] : (uint32_t)chm_dtype_size(t->dtype);
}

/* Whether one dispatch can bind every tensor whole; *unit: the widest element. */
static bool fits_whole(const chm_vk *vk, const chm_vk_dispatch *d, int64_t n, uint32_t *unit) {
    bool fits = n <= MAX_CHUNK;
    *unit = 0;
    for (int i = 0; i < d->nbind; i++) {
        uint32_t u = unit_of(d, i);
        if (u == 0) continue;
        if (u > *unit) *unit = u;
        chm_vk_range r = chm_vk_tensor_range(d->bind[i]);
        VkDeviceSize base, range;
        chm_vk_bind_extent(vk, &r, &base, &range);
        fits &= range <= vk->caps.max_range;
    }
    return fits;
}

/* One dispatch over elements [first, first + count) of every binding. */
static chm_status run_chunk(chm_vk *vk, const chm_vk_dispatch *d, int64_t first, int64_t count,
                            bool window) {
    uint32_t push[CHM_VK_PUSH_BYTES / 4];
    memcpy(push, d->push, d->push_size);
    push[0] = (uint32_t)count;
    chm_vk_dispatch c = *d;
    c.push = push;
    int64_t per = d->per ? d->per : 1;
    c.groups = chm_vk_groups((count + per - 1) / per, d->wg);
    c.window = 0;
    for (int i = 0; window && i < d->nbind; i++) {
        if (unit_of(d, i) == 0) continue;
        c.window |= 1u << i;
        c.first[i] = first;
        c.count[i] = count;
    }
    return chm_vk_run(vk, &c);
}

chm_status chm_vk_run_elems(chm_vk *vk, const chm_vk_dispatch *d, int64_t n) {
    if (d->push_size < 4)
        return CHM_ERR(&vk->be->err, CHM_ERR_INTERNAL,
                       "vulkan: %s: an elementwise dispatch's push constants start with the "
                       "element count", d->shader);
    uint32_t unit;
    if (n <= 0) return CHM_OK;
    if (fits_whole(vk, d, n, &unit)) return run_chunk(vk, d, 0, n, false);
    int64_t chunk = chm_vk_chunk_elems(vk, unit);
    if (d->per > 1) chunk = chunk / d->per * d->per; /* whole words an invocation */
    if (chunk == 0)
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "vulkan: %s: a binding of %llu bytes cannot hold one %u-byte element "
                       "past the %llu-byte offset alignment; raise CHIMERA_VULKAN_MAX_RANGE",
                       d->shader, (unsigned long long)vk->caps.max_range, unit,
                       (unsigned long long)vk->caps.bind_align);
    for (int64_t first = 0; first < n; first += chunk)
        CHM_TRY(run_chunk(vk, d, first, n - first < chunk ? n - first : chunk, true));
    return CHM_OK;
}
