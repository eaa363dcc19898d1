/*
 * arena.c: the model's activation allocations, tensor views and host reads.
 *
 * In a real pass mdl_alloc carves tensors from the activation arena; in a
 * dry run (m->dry, during chm_model_create) it only adds up the bytes the
 * same calls would take, with the arena's alignment, and records the peak.
 * The arena is then allocated at exactly that peak: the step that follows
 * makes the same calls and cannot run out.
 */
#include <math.h>
#include <string.h>

#include "core/half.h"
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

/* Element i of n raw host elements of float dtype dt at p, as a double. */
static double raw_elem(const unsigned char *p, chm_dtype dt, int64_t i) {
    float f;
    uint16_t h;
    switch (dt) {
    case CHM_F32:
        memcpy(&f, p + 4 * i, sizeof f);
        return f;
    case CHM_BF16:
        memcpy(&h, p + 2 * i, sizeof h);
        return chm_bf16_to_f32(h);
    case CHM_F16:
        memcpy(&h, p + 2 * i, sizeof h);
        return chm_f16_to_f32(h);
    default:
        return NAN;
    }
}

chm_status mdl_download_f64(chm_backend *be, const chm_tensor *t, double *out) {
    chm_status rc = chm_download(be, t, out); /* the raw elements fill the front of out */
    if (rc != CHM_OK || t->dtype == CHM_F64) return rc;
    /* Widen from the last element down: raw element j sits at bytes [j*s, j*s+s) with
     * s <= 8, so writing out[i] (bytes [8i, 8i+8)) covers only raw elements >= i, and
     * those are already read. */
    const unsigned char *raw = (const unsigned char *)out;
    for (int64_t i = chm_tensor_numel(t) - 1; i >= 0; i--) out[i] = raw_elem(raw, t->dtype, i);
    return CHM_OK;
}
