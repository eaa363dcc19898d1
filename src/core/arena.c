/* arena.c: the bump allocator for activations (see include/chimera/tensor.h). */
#include "chimera/backend.h"

#include <string.h>

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

size_t chm_arena_size_for(chm_dtype dt, int ndim, const int64_t *shape) {
    chm_tensor t = chm_tensor_make(NULL, 0, dt, ndim, shape);
    return align_up(chm_tensor_nbytes(&t), CHM_ARENA_ALIGN);
}

chm_status chm_arena_init(chm_arena *a, chm_backend *be, size_t bytes, chm_err *err) {
    memset(a, 0, sizeof *a);
    chm_status rc = chm_buffer_alloc(be, bytes ? bytes : CHM_ARENA_ALIGN, &a->buf);
    if (rc)
        return CHM_ERR(err, rc, "cannot allocate a %zu-byte activation arena on %s: %s", bytes,
                       be->name, be->err.msg);
    return CHM_OK;
}

void chm_arena_free(chm_arena *a) {
    if (!a) return;
    chm_buffer_free(a->buf);
    memset(a, 0, sizeof *a);
}

chm_status chm_arena_alloc(chm_arena *a, chm_dtype dt, int ndim, const int64_t *shape,
                           chm_tensor *out, chm_err *err) {
    if (ndim < 1 || ndim > CHM_MAX_DIMS)
        return CHM_ERR(err, CHM_ERR_SHAPE, "arena tensors have 1 to %d dims, not %d",
                       CHM_MAX_DIMS, ndim);
    size_t need = chm_arena_size_for(dt, ndim, shape);
    if (!a->buf || need > a->buf->size - a->used)
        return CHM_ERR(err, CHM_ERR_NOMEM,
                       "activation arena full: %zu bytes wanted, %zu of %zu free; "
                       "lower micro_batch or seq_len, or enable recomputation",
                       need, a->buf ? a->buf->size - a->used : 0, a->buf ? a->buf->size : 0);
    *out = chm_tensor_make(a->buf, a->used, dt, ndim, shape);
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return CHM_OK;
}

size_t chm_arena_mark(const chm_arena *a) { return a->used; }

void chm_arena_release(chm_arena *a, size_t mark) {
    if (mark <= a->used) a->used = mark;
}
