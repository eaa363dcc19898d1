/*
 * memory.c: the cuda backend's memory: a caching device allocator, buffers,
 * pinned-staged upload/download, fill/copy/cast, sync, event timers, the
 * shared scratch and the device data-error flag.
 *
 * Allocator: requests are rounded up to CHM_CUDA_ALIGN (256) bytes and carved
 * first-fit out of CHM_CUDA_POOL_CHUNK (64 MiB) chunks obtained once from
 * cudaMalloc; freed blocks coalesce with free neighbours and stay in the pool
 * until the backend closes, so a training step never calls cudaMalloc.
 * Requests of half a chunk or more get a dedicated cudaMalloc (parameters,
 * gradients, the activation arena: allocated once at start-up).
 * Every op runs on the backend's one stream, so a block freed by the host
 * and handed out again is only touched by work queued after the old work.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "cuda_backend.h"
#include "kernels.h"

struct chm_cuda_chunk {
    char *base;
    size_t size;
    chm_cuda_block *first;       /* blocks in address order */
    struct chm_cuda_chunk *next;
};

struct chm_cuda_pool {
    struct chm_cuda_chunk *chunks;
};

struct chm_event {
    cudaEvent_t ev;
};

chm_status chm_cuda_check(chm_backend *be, const char *op, cudaError_t e) {
    if (e == cudaSuccess) return CHM_OK;
    cudaGetLastError(); /* clear a non-sticky error so that later calls start clean */
    return CHM_ERR(&be->err, CHM_ERR_DEVICE, "%s: CUDA error %s (%s)", op, cudaGetErrorName(e),
                   cudaGetErrorString(e));
}

chm_status chm_cuda_dtype(chm_backend *be, const char *op, chm_dtype dt, unsigned mask) {
    if (CHM_CUDA_DT(dt) & mask) return CHM_OK;
    const char *have = (mask & CHM_CUDA_DT(CHM_F16)) ? "f32, bf16 or f16" : "f32 or bf16";
    return CHM_ERR(&be->err, CHM_ERR_DTYPE,
                   "%s: the cuda backend computes this op in %s, not %s%s", op, have,
                   chm_dtype_name(dt),
                   dt == CHM_F64 ? "; f64 runs (gradient checks) belong on --backend cpu"
                                 : "; cast first");
}

/* ---- the pool ---- */

chm_status chm_cuda_pool_create(chm_cuda_pool **out) {
    *out = calloc(1, sizeof **out);
    return *out ? CHM_OK : CHM_ERR_NOMEM;
}

void chm_cuda_pool_destroy(chm_cuda_pool *p) {
    if (!p) return;
    for (struct chm_cuda_chunk *c = p->chunks, *n; c; c = n) {
        n = c->next;
        for (chm_cuda_block *b = c->first, *bn; b; b = bn) {
            bn = b->next;
            free(b);
        }
        cudaFree(c->base);
        free(c);
    }
    free(p);
}

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* A new block record, or NULL. */
static chm_cuda_block *block_new(char *ptr, size_t size, struct chm_cuda_chunk *chunk) {
    chm_cuda_block *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->ptr = ptr;
    b->size = size;
    b->chunk = chunk;
    return b;
}

/* First free block of at least `size` bytes in any chunk, split to size; NULL if none. */
static chm_cuda_block *pool_take(chm_cuda_pool *p, size_t size) {
    for (struct chm_cuda_chunk *c = p->chunks; c; c = c->next)
        for (chm_cuda_block *b = c->first; b; b = b->next) {
            if (!b->free || b->size < size) continue;
            if (b->size > size) {
                chm_cuda_block *rest = block_new(b->ptr + size, b->size - size, c);
                if (!rest) return NULL;
                rest->free = true;
                rest->prev = b;
                rest->next = b->next;
                if (b->next) b->next->prev = rest;
                b->next = rest;
                b->size = size;
            }
            b->free = false;
            return b;
        }
    return NULL;
}

/* Add a chunk of CHM_CUDA_POOL_CHUNK bytes, one free block. */
static cudaError_t pool_grow(chm_cuda_pool *p) {
    struct chm_cuda_chunk *c = calloc(1, sizeof *c);
    if (!c) return cudaErrorMemoryAllocation;
    cudaError_t e = cudaMalloc((void **)&c->base, CHM_CUDA_POOL_CHUNK);
    if (e == cudaSuccess) {
        c->size = CHM_CUDA_POOL_CHUNK;
        c->first = block_new(c->base, c->size, c);
        if (!c->first) e = cudaErrorMemoryAllocation;
    }
    if (e != cudaSuccess) {
        if (c->base) cudaFree(c->base);
        free(c);
        return e;
    }
    c->first->free = true;
    c->next = p->chunks;
    p->chunks = c;
    return cudaSuccess;
}

chm_status chm_cuda_pool_alloc(chm_backend *be, size_t bytes, chm_cuda_block **out) {
    chm_cuda_pool *p = chm_cuda_ctx_of(be)->pool;
    size_t size = round_up(bytes ? bytes : 1, CHM_CUDA_ALIGN);
    cudaError_t e = cudaSuccess;
    if (size >= CHM_CUDA_POOL_CHUNK / 2) {
        char *ptr = NULL;
        e = cudaMalloc((void **)&ptr, size);
        if (e == cudaSuccess && !(*out = block_new(ptr, size, NULL))) {
            cudaFree(ptr);
            e = cudaErrorMemoryAllocation;
        }
    } else if (!(*out = pool_take(p, size))) {
        e = pool_grow(p);
        if (e == cudaSuccess && !(*out = pool_take(p, size))) e = cudaErrorMemoryAllocation;
    }
    if (e == cudaSuccess) return CHM_OK;
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    return CHM_ERR(&be->err, CHM_ERR_NOMEM,
                   "cannot allocate %zu bytes of device memory (%s; %zu of %zu MiB free): "
                   "lower the micro-batch or sequence length",
                   bytes, cudaGetErrorString(e), fr >> 20, tot >> 20);
}

void chm_cuda_pool_free(chm_backend *be, chm_cuda_block *b) {
    (void)be;
    if (!b) return;
    if (!b->chunk) {
        cudaFree(b->ptr);
        free(b);
        return;
    }
    b->free = true;
    chm_cuda_block *n = b->next;
    if (n && n->free) { /* absorb the next block */
        b->size += n->size;
        b->next = n->next;
        if (n->next) n->next->prev = b;
        free(n);
    }
    chm_cuda_block *pv = b->prev;
    if (pv && pv->free) { /* let the previous block absorb this one */
        pv->size += b->size;
        pv->next = b->next;
        if (b->next) b->next->prev = pv;
        free(b);
    }
}

chm_status chm_cuda_scratch(chm_backend *be, const char *op, size_t bytes, void **out) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    if (!cx->scratch || cx->scratch->size < bytes) {
        chm_cuda_pool_free(be, cx->scratch);
        cx->scratch = NULL;
        /* grow by at least half again, so a slowly rising need settles quickly */
        size_t want = bytes + bytes / 2;
        chm_status rc = chm_cuda_pool_alloc(be, want, &cx->scratch);
        if (rc) {
            size_t n = strlen(be->err.msg);
            snprintf(be->err.msg + n, sizeof be->err.msg - n, " (scratch of %s)", op);
            return rc;
        }
    }
    *out = cx->scratch->ptr;
    return CHM_OK;
}

/* ---- buffers and transfers ---- */

chm_status chm_cuda_buffer_alloc(chm_backend *be, size_t bytes, chm_buffer **out) {
    chm_buffer *b = calloc(1, sizeof *b);
    if (!b) return CHM_ERR(&be->err, CHM_ERR_NOMEM, "cannot allocate a buffer record");
    chm_cuda_block *blk;
    chm_status rc = chm_cuda_pool_alloc(be, bytes, &blk);
    if (rc) {
        free(b);
        return rc;
    }
    b->backend = be;
    b->size = bytes;
    b->impl = blk;
    *out = b;
    return CHM_OK;
}

void chm_cuda_buffer_free(chm_backend *be, chm_buffer *buf) {
    if (!buf) return;
    chm_cuda_pool_free(be, buf->impl);
    free(buf);
}

/* Copy host -> device through the pinned halves; returns once src may be reused. */
chm_status chm_cuda_upload(chm_backend *be, const chm_tensor *dst, const void *src) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    size_t n = chm_tensor_nbytes(dst);
    char *d = chm_cuda_ptr(dst);
    const char *s = src;
    for (size_t off = 0; off < n; off += CHM_CUDA_STAGING) {
        size_t len = n - off < CHM_CUDA_STAGING ? n - off : CHM_CUDA_STAGING;
        int k = cx->staging_next;
        cx->staging_next ^= 1;
        cudaError_t e = cudaEventSynchronize(cx->staging_done[k]);
        if (e == cudaSuccess) {
            memcpy(cx->staging[k], s + off, len);
            e = cudaMemcpyAsync(d + off, cx->staging[k], len, cudaMemcpyHostToDevice,
                                cx->stream);
        }
        if (e == cudaSuccess) e = cudaEventRecord(cx->staging_done[k], cx->stream);
        if (e != cudaSuccess) return chm_cuda_check(be, "upload", e);
    }
    return CHM_OK;
}

/* Queue the copy of [off, off+len) of src into staging half k. */
static cudaError_t download_issue(chm_cuda_ctx *cx, const char *s, size_t off, size_t len, int k) {
    cudaError_t e = cudaMemcpyAsync(cx->staging[k], s + off, len, cudaMemcpyDeviceToHost,
                                    cx->stream);
    return e == cudaSuccess ? cudaEventRecord(cx->staging_done[k], cx->stream) : e;
}

/* Copy device -> host, double-buffered: chunk i+1 is in flight while chunk i is copied out. */
chm_status chm_cuda_download(chm_backend *be, const chm_tensor *src, void *dst) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    size_t n = chm_tensor_nbytes(src), step = CHM_CUDA_STAGING;
    const char *s = chm_cuda_ptr(src);
    char *d = dst;
    cudaError_t e = cudaSuccess;
    for (size_t off = 0, i = 0; e == cudaSuccess && off < n; off += step, i++) {
        size_t len = n - off < step ? n - off : step;
        e = download_issue(cx, s, off, len, (int)(i & 1));
        if (e == cudaSuccess && i > 0) { /* copy out the previous chunk */
            int k = (int)((i - 1) & 1);
            e = cudaEventSynchronize(cx->staging_done[k]);
            if (e == cudaSuccess) memcpy(d + off - step, cx->staging[k], step);
        }
        if (e == cudaSuccess && off + len == n) { /* the last chunk */
            e = cudaEventSynchronize(cx->staging_done[i & 1]);
            if (e == cudaSuccess) memcpy(d + off, cx->staging[i & 1], len);
        }
    }
    if (e != cudaSuccess) return chm_cuda_check(be, "download", e);
    return chm_cuda_sync_and_check(be, "download");
}

/* ---- readbacks: small downloads queued now and collected later ---- */

_Static_assert(CHM_CUDA_READBACKS <= 64, "rb_busy is one bit a slot");

/* The pinned slots and their events, made at the first readback (most runs make none). */
static cudaError_t readback_init(chm_cuda_ctx *cx) {
    if (cx->rb_host) return cudaSuccess;
    cudaError_t e = cudaSuccess;
    for (int k = 0; e == cudaSuccess && k < CHM_CUDA_READBACKS; k++)
        if (!cx->rb_done[k]) e = cudaEventCreateWithFlags(&cx->rb_done[k], cudaEventDisableTiming);
    /* mapped: a kernel writes the bytes (a copy-engine transfer stalled the stream ~15 us);
       with unified addressing the host pointer is the device's too */
    if (e == cudaSuccess)
        e = cudaHostAlloc((void **)&cx->rb_host, (size_t)CHM_CUDA_READBACKS * CHM_READBACK_MAX,
                          cudaHostAllocMapped);
    return e;
}

chm_status chm_cuda_readback_start(chm_backend *be, const chm_tensor *src, int *slot) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    *slot = -1;
    int k = 0;
    while (k < CHM_CUDA_READBACKS && (cx->rb_busy >> k & 1)) k++;
    if (k == CHM_CUDA_READBACKS) return CHM_OK; /* all in flight: the finish downloads */
    cudaError_t e = readback_init(cx);
    unsigned char *h = cx->rb_host + (size_t)k * CHM_READBACK_MAX;
    void *hd = NULL;
    if (e == cudaSuccess) e = cudaHostGetDevicePointer(&hd, h, 0);
    if (e == cudaSuccess)
        e = chm_cu_copy_to_host(hd, chm_cuda_ptr(src), (int)chm_tensor_nbytes(src), cx->stream);
    if (e == cudaSuccess) e = cudaEventRecord(cx->rb_done[k], cx->stream);
    if (e != cudaSuccess) return chm_cuda_check(be, "readback_start", e);
    cx->rb_busy |= (uint64_t)1 << k;
    *slot = k;
    return CHM_OK;
}

chm_status chm_cuda_readback_finish(chm_backend *be, int slot, void *dst, size_t n) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    if (slot < 0 || slot >= CHM_CUDA_READBACKS || !(cx->rb_busy >> slot & 1) ||
        n > CHM_READBACK_MAX)
        return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                       "readback_finish: slot %d is not a readback in flight", slot);
    cx->rb_busy &= ~((uint64_t)1 << slot);
    /* waits for the copy only: the work queued after it keeps the device busy meanwhile */
    cudaError_t e = cudaEventSynchronize(cx->rb_done[slot]);
    if (e != cudaSuccess) return chm_cuda_check(be, "readback_finish", e);
    memcpy(dst, cx->rb_host + (size_t)slot * CHM_READBACK_MAX, n);
    return CHM_OK;
}

/* ---- fill, copy, cast ---- */

/* f64 -> f32 rounded to odd, so that one more rounding to bf16/f16 is correct (see cpu/convert.c).
 */
static float f64_to_f32_odd(double d) {
    float f = (float)d;
    if (d != d || (double)f == d) return f;
    if ((f < 0 ? -f : f) > (d < 0 ? -d : d)) f = nextafterf(f, 0.0f);
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u |= 1u;
    memcpy(&f, &u, sizeof f);
    return f;
}

chm_status chm_cuda_fill(chm_backend *be, const chm_tensor *t, double value) {
    uint64_t pat = 0;
    switch (t->dtype) {
    case CHM_F32: {
        float f = (float)value;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        pat = u;
        break;
    }
    case CHM_F64: memcpy(&pat, &value, sizeof pat); break;
    case CHM_BF16: pat = chm_f32_to_bf16(f64_to_f32_odd(value)); break;
    case CHM_F16: pat = chm_f32_to_f16(f64_to_f32_odd(value)); break;
    case CHM_I32: {
        if (!(value >= INT32_MIN && value <= INT32_MAX) || value != (double)(int64_t)value)
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "fill: %g is not an int32 value, so it cannot fill an i32 tensor",
                           value);
        pat = (uint32_t)(int32_t)value;
        break;
    }
    }
    cudaError_t e = chm_cu_fill(chm_cuda_ptr(t), chm_tensor_numel(t), (int)chm_dtype_size(t->dtype),
                                pat, chm_cuda_ctx_of(be)->stream);
    return chm_cuda_check(be, "fill", e);
}

chm_status chm_cuda_copy(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    size_t n = chm_tensor_nbytes(dst);
    char *d = chm_cuda_ptr(dst), *s = chm_cuda_ptr(src);
    if (n == 0 || d == s) return CHM_OK;
    cudaError_t e;
    if (dst->buf == src->buf && d < s + n && s < d + n) {
        /* overlapping ranges (allowed, like memmove): go through scratch */
        void *tmp;
        chm_status rc = chm_cuda_scratch(be, "copy", n, &tmp);
        if (rc) return rc;
        e = cudaMemcpyAsync(tmp, s, n, cudaMemcpyDeviceToDevice, cx->stream);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(d, tmp, n, cudaMemcpyDeviceToDevice, cx->stream);
    } else {
        e = cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToDevice, cx->stream);
    }
    return chm_cuda_check(be, "copy", e);
}

chm_status chm_cuda_cast(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cudaError_t e;
    if (dst->dtype == src->dtype)
        e = cudaMemcpyAsync(chm_cuda_ptr(dst), chm_cuda_ptr(src), chm_tensor_nbytes(dst),
                            cudaMemcpyDeviceToDevice, cx->stream);
    else
        e = chm_cu_cast(chm_cuda_ptr(dst), dst->dtype, chm_cuda_ptr(src), src->dtype,
                        chm_tensor_numel(dst), cx->stream);
    return chm_cuda_check(be, "cast", e);
}

/* ---- sync, data errors, events ---- */

/* The message of a recorded data error (flag = {op, index, value, limit}). */
static chm_status flag_error(chm_backend *be, const int *f) {
    static const char *const what[CHM_CU_FLAG_COUNT] = {
        [CHM_CU_FLAG_EMBEDDING_FWD] = "embedding_fwd: ids[%d] = %d is outside [0, %d), the rows "
                                      "of the table; check the tokenizer's vocabulary size "
                                      "against the model's",
        [CHM_CU_FLAG_EMBEDDING_BWD] = "embedding_bwd: ids[%d] = %d is outside [0, %d), the rows "
                                      "of the table",
        [CHM_CU_FLAG_GATHER_ROWS] = "gather_rows: idx[%d] = %d is out of range for %d rows "
                                    "(use -1 to skip a row)",
        [CHM_CU_FLAG_SCATTER_ADD_ROWS] = "scatter_add_rows: idx[%d] = %d is out of range for %d "
                                         "rows (use -1 to skip a row)",
        [CHM_CU_FLAG_CROSS_ENTROPY] = "cross_entropy: targets[%d] = %d is not below the "
                                      "vocabulary size %d (use a negative target to ignore a "
                                      "position)",
        [CHM_CU_FLAG_ROUTER_BWD] = "router_topk_bwd: idx element %d = %d is not an expert in "
                                   "[0, %d)",
        [CHM_CU_FLAG_GROUPED_COUNTS] = "matmul_grouped: counts[%d] = %d is outside [0, %d] "
                                       "(the capacity)",
        [CHM_CU_FLAG_MOE_AUX] = "moe_aux: idx element %d = %d is not an expert in [0, %d)",
        [CHM_CU_FLAG_SCATTER_REPEAT] = "scatter_add_rows: row %d is the target of %d or more "
                                       "rows, more than max_repeat = %d; the caller's bound is "
                                       "wrong",
    };
    const char *fmt = f[0] > 0 && f[0] < CHM_CU_FLAG_COUNT ? what[f[0]] : NULL;
    if (!fmt) return CHM_ERR(&be->err, CHM_ERR_INTERNAL, "unknown device error record %d", f[0]);
    char msg[512];
    snprintf(msg, sizeof msg, fmt, f[1], f[2], f[3]);
    return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                   "%s (found on the device by an earlier op, reported at this sync)", msg);
}

chm_status chm_cuda_sync_and_check(chm_backend *be, const char *op) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cudaError_t e = cudaMemcpyAsync(cx->flag_host, cx->flag, 4 * sizeof(int),
                                    cudaMemcpyDeviceToHost, cx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cx->stream);
    if (e != cudaSuccess) return chm_cuda_check(be, op, e);
    if (cx->flag_host[0] == 0) return CHM_OK;
    int f[4];
    memcpy(f, cx->flag_host, sizeof f);
    memset(cx->flag_host, 0, 4 * sizeof(int));
    e = cudaMemsetAsync(cx->flag, 0, 4 * sizeof(int), cx->stream);
    if (e != cudaSuccess) return chm_cuda_check(be, op, e);
    return flag_error(be, f);
}

chm_status chm_cuda_sync(chm_backend *be) { return chm_cuda_sync_and_check(be, "sync"); }

chm_status chm_cuda_event_create(chm_backend *be, chm_event **out) {
    chm_event *ev = calloc(1, sizeof *ev);
    if (!ev) return CHM_ERR(&be->err, CHM_ERR_NOMEM, "cannot allocate an event");
    cudaError_t e = cudaEventCreate(&ev->ev);
    if (e != cudaSuccess) {
        free(ev);
        return chm_cuda_check(be, "event_create", e);
    }
    *out = ev;
    return CHM_OK;
}

chm_status chm_cuda_event_record(chm_backend *be, chm_event *ev) {
    return chm_cuda_check(be, "event_record",
                          cudaEventRecord(ev->ev, chm_cuda_ctx_of(be)->stream));
}

chm_status chm_cuda_event_elapsed_ms(chm_backend *be, chm_event *start, chm_event *stop,
                                     double *ms) {
    float f = 0;
    cudaError_t e = cudaEventSynchronize(stop->ev);
    if (e == cudaSuccess) e = cudaEventElapsedTime(&f, start->ev, stop->ev);
    *ms = f;
    return chm_cuda_check(be, "event_elapsed_ms", e);
}

bool chm_cuda_event_done(chm_backend *be, chm_event *ev) {
    (void)be;
    cudaError_t e = cudaEventQuery(ev->ev);
    if (e == cudaErrorNotReady) cudaGetLastError(); /* not sticky, but keep the last error clean */
    return e == cudaSuccess;
}

void chm_cuda_event_destroy(chm_backend *be, chm_event *ev) {
    (void)be;
    if (!ev) return;
    cudaEventDestroy(ev->ev);
    free(ev);
}
