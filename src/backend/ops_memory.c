/* ops_memory.c: checked wrappers of the memory ops (alloc, transfers, readbacks, fill, copy, cast,
 * sync, events). */
#include "check.h"

chm_status chm_buffer_alloc(chm_backend *be, size_t bytes, chm_buffer **out) {
    if (!out) return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG, "buffer_alloc: out is NULL");
    *out = NULL;
    return be->ops->buffer_alloc(be, bytes, out);
}

void chm_buffer_free(chm_buffer *buf) {
    if (buf) buf->backend->ops->buffer_free(buf->backend, buf);
}

chm_status chm_upload(chm_backend *be, const chm_tensor *dst, const void *src) {
    CHM_TRY(chm_check_tensor(be, "upload", "dst", dst));
    CHM_TRY(chm_check_arg(be, "upload", src != NULL || chm_tensor_nbytes(dst) == 0,
                          "src is NULL"));
    return be->ops->upload(be, dst, src);
}

chm_status chm_download(chm_backend *be, const chm_tensor *src, void *dst) {
    CHM_TRY(chm_check_tensor(be, "download", "src", src));
    CHM_TRY(chm_check_arg(be, "download", dst != NULL || chm_tensor_nbytes(src) == 0,
                          "dst is NULL"));
    return be->ops->download(be, src, dst);
}

chm_status chm_readback_start(chm_backend *be, const chm_tensor *src, chm_readback *rb) {
    CHM_TRY(chm_check_tensor(be, "readback_start", "src", src));
    CHM_TRY(chm_check_arg(be, "readback_start", rb != NULL, "rb is NULL"));
    CHM_TRY(chm_check_arg(be, "readback_start", !rb->live,
                          "rb is still in flight: finish it (chm_readback_finish) first"));
    *rb = (chm_readback){.src = *src, .slot = -1};
    if (be->ops->readback_start && be->ops->readback_finish &&
        chm_tensor_nbytes(src) <= CHM_READBACK_MAX)
        CHM_TRY(be->ops->readback_start(be, src, &rb->slot));
    rb->live = true;
    return CHM_OK;
}

chm_status chm_readback_finish(chm_backend *be, chm_readback *rb, void *dst) {
    CHM_TRY(chm_check_arg(be, "readback_finish", rb != NULL && rb->live,
                          "rb was not started (chm_readback_start) or is finished already"));
    CHM_TRY(chm_check_arg(be, "readback_finish", dst != NULL || chm_tensor_nbytes(&rb->src) == 0,
                          "dst is NULL"));
    int slot = rb->slot;
    rb->live = false, rb->slot = -1;
    if (slot < 0) return be->ops->download(be, &rb->src, dst);
    return be->ops->readback_finish(be, slot, dst, chm_tensor_nbytes(&rb->src));
}

chm_status chm_fill(chm_backend *be, const chm_tensor *t, double value) {
    CHM_TRY(chm_check_tensor(be, "fill", "t", t));
    return chm_fault_after(be, "fill", t, be->ops->fill(be, t, value));
}

chm_status chm_copy(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    CHM_TRY(chm_check_tensor(be, "copy", "dst", dst));
    CHM_TRY(chm_check_tensor(be, "copy", "src", src));
    CHM_TRY(chm_check_arg(be, "copy", dst->dtype == src->dtype,
                          "dst is %s but src is %s; use cast to convert",
                          chm_dtype_name(dst->dtype), chm_dtype_name(src->dtype)));
    CHM_TRY(chm_check_arg(be, "copy", chm_tensor_numel(dst) == chm_tensor_numel(src),
                          "dst has %lld elements, src %lld", (long long)chm_tensor_numel(dst),
                          (long long)chm_tensor_numel(src)));
    return chm_fault_after(be, "copy", dst, be->ops->copy(be, dst, src));
}

chm_status chm_cast(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    CHM_TRY(chm_check_float(be, "cast", "dst", dst));
    CHM_TRY(chm_check_float(be, "cast", "src", src));
    CHM_TRY(chm_check_arg(be, "cast", chm_tensor_numel(dst) == chm_tensor_numel(src),
                          "dst has %lld elements, src %lld", (long long)chm_tensor_numel(dst),
                          (long long)chm_tensor_numel(src)));
    CHM_TRY(chm_check_arg(be, "cast", !chm_tensors_overlap(dst, src), "dst and src overlap"));
    return chm_fault_after(be, "cast", dst, be->ops->cast(be, dst, src));
}

chm_status chm_sync(chm_backend *be) { return be->ops->sync(be); }

chm_status chm_event_create(chm_backend *be, chm_event **out) {
    return be->ops->event_create(be, out);
}

chm_status chm_event_record(chm_backend *be, chm_event *ev) {
    return be->ops->event_record(be, ev);
}

chm_status chm_event_elapsed_ms(chm_backend *be, chm_event *start, chm_event *stop, double *ms) {
    return be->ops->event_elapsed_ms(be, start, stop, ms);
}

void chm_event_destroy(chm_backend *be, chm_event *ev) {
    if (ev) be->ops->event_destroy(be, ev);
}
