/*
 * arena.c: the model's activation allocations and tensor views.
 *
 * In a real pass mdl_alloc carves tensors from the activation arena; in a
 * dry run (m->dry, during chm_model_create) it only adds up the bytes the
 * same calls would take, with the arena's alignment, and records the peak.
 * The arena is then allocated at exactly that peak: the step that follows
 * makes the same calls and cannot run out.
 */
#include "model_internal.h"

chm_status mdl_alloc(chm_model *m, chm_dtype dt, int ndim, const int64_t *shape, chm_tensor *out) {
    if (m->dry) {
        m->dry_used += chm_arena_size_for(dt, ndim, shape);
        if (m->dry_used > m->dry_peak) m->dry_peak = m->dry_used;
        *out = chm_tensor_make(NULL, 0, dt, ndim, shape);
        return CHM_OK;
    }
    return chm_arena_alloc(&m->arena, dt, ndim, shape, out, &m->be->err);
}

size_t mdl_mark(const chm_model *m) { return m->dry ? m->dry_used : chm_arena_mark(&m->arena); }

void mdl_release(chm_model *m, size_t mark) {
    if (m->dry) {
        if (mark <= m->dry_used) m->dry_used = mark;
    } else {
        chm_arena_release(&m->arena, mark);
    }
}

chm_tensor mdl_view(const chm_tensor *t, int64_t off, int ndim, const int64_t *shape) {
    return chm_tensor_make(t->buf, t->offset + (size_t)off * chm_dtype_size(t->dtype), t->dtype,
                           ndim, shape);
}
