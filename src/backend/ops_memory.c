/* ops_memory.c: checked wrappers of the memory ops (alloc, transfers, fill, copy, cast, sync, events). */
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
