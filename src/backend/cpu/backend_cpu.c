/*
 * backend_cpu.c: the cpu backend's op table, its memory and its timers.
 * Buffers are 64-byte aligned host memory; events are wall-clock stamps.
 * Compute entries are lowp.c's adapters: they take bf16/f16 tensors (as f32
 * copies) and pass f32/f64 ones straight to the kernels.
 */
#include "cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

struct chm_event {
    double ms;  /* CLOCK_MONOTONIC at record time */
};

static const chm_backend_ops cpu_ops = {
    .api_version = CHM_BACKEND_API_VERSION,
    .buffer_alloc = chm_cpu_buffer_alloc,
    .buffer_free = chm_cpu_buffer_free,
    .upload = chm_cpu_upload,
    .download = chm_cpu_download,
    .fill = chm_cpu_fill,
    .copy = chm_cpu_copy,
    .cast = chm_cpu_cast,
    .sync = chm_cpu_sync,
    .event_create = chm_cpu_event_create,
    .event_record = chm_cpu_event_record,
    .event_elapsed_ms = chm_cpu_event_elapsed_ms,
    .event_destroy = chm_cpu_event_destroy,
    .matmul = chm_cpu_lowp_matmul,
    .matmul_grouped = chm_cpu_lowp_matmul_grouped,
    .attention_fwd = chm_cpu_lowp_attention_fwd,
    .attention_bwd = chm_cpu_lowp_attention_bwd,
    .selective_scan_fwd = chm_cpu_lowp_selective_scan_fwd,
    .selective_scan_bwd = chm_cpu_lowp_selective_scan_bwd,
    .causal_conv1d_fwd = chm_cpu_lowp_causal_conv1d_fwd,
    .causal_conv1d_bwd = chm_cpu_lowp_causal_conv1d_bwd,
    .rmsnorm_fwd = chm_cpu_lowp_rmsnorm_fwd,
    .rmsnorm_bwd = chm_cpu_lowp_rmsnorm_bwd,
    .rope_fwd = chm_cpu_lowp_rope_fwd,
    .rope_bwd = chm_cpu_lowp_rope_bwd,
    .swiglu_fwd = chm_cpu_lowp_swiglu_fwd,
    .swiglu_bwd = chm_cpu_lowp_swiglu_bwd,
    .embedding_fwd = chm_cpu_lowp_embedding_fwd,
    .embedding_bwd = chm_cpu_lowp_embedding_bwd,
    .add = chm_cpu_lowp_add,
    .scale = chm_cpu_lowp_scale,
    .axpy = chm_cpu_lowp_axpy,
    .sum_rows = chm_cpu_lowp_sum_rows,
    .router_topk = chm_cpu_lowp_router_topk,
    .router_topk_bwd = chm_cpu_lowp_router_topk_bwd,
    .select_topk = chm_cpu_lowp_select_topk,
    .gather_rows = chm_cpu_lowp_gather_rows,
    .scatter_add_rows = chm_cpu_lowp_scatter_add_rows,
    .cross_entropy = chm_cpu_lowp_cross_entropy,
    .adamw_step = chm_cpu_lowp_adamw_step,
    .sum_squares = chm_cpu_lowp_sum_squares,
    .row_scale_fwd = chm_cpu_lowp_row_scale_fwd,
    .row_scale_bwd = chm_cpu_lowp_row_scale_bwd,
    .exp_fwd = chm_cpu_lowp_exp_fwd,
    .exp_bwd = chm_cpu_lowp_exp_bwd,
    .bce_logits = chm_cpu_lowp_bce_logits,
    .moe_aux = chm_cpu_lowp_moe_aux,
    .attention_decode = chm_cpu_lowp_attention_decode,
    .selective_scan_step = chm_cpu_lowp_selective_scan_step,
};

chm_status chm_cpu_bad_dtype(chm_backend *be, const char *op, chm_dtype dt) {
    return CHM_ERR(&be->err, CHM_ERR_DTYPE,
                   "%s: the cpu backend computes in f32 or f64, not %s; cast first", op,
                   chm_dtype_name(dt));
}

chm_status chm_cpu_buffer_alloc(chm_backend *be, size_t bytes, chm_buffer **out) {
    chm_buffer *b = calloc(1, sizeof *b);
    size_t rounded = (bytes + 63) / 64 * 64;
    void *mem = rounded ? aligned_alloc(64, rounded) : NULL;
    if (!b || (rounded && !mem)) {
        free(b);
        free(mem);
        return CHM_ERR(&be->err, CHM_ERR_NOMEM, "cannot allocate %zu bytes of host memory",
                       bytes);
    }
    b->backend = be;
    b->size = bytes;
    b->host = mem;
    *out = b;
    return CHM_OK;
}

void chm_cpu_buffer_free(chm_backend *be, chm_buffer *buf) {
    (void)be;
    if (!buf) return;
    free(buf->host);
    free(buf);
}

chm_status chm_cpu_upload(chm_backend *be, const chm_tensor *dst, const void *src) {
    (void)be;
    memcpy(chm_cpu_ptr(dst), src, chm_tensor_nbytes(dst));
    return CHM_OK;
}

chm_status chm_cpu_download(chm_backend *be, const chm_tensor *src, void *dst) {
    (void)be;
    memcpy(dst, chm_cpu_ptr(src), chm_tensor_nbytes(src));
    return CHM_OK;
}

chm_status chm_cpu_sync(chm_backend *be) {
    (void)be;
    return CHM_OK;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

chm_status chm_cpu_event_create(chm_backend *be, chm_event **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return CHM_ERR(&be->err, CHM_ERR_NOMEM, "cannot allocate an event");
    return CHM_OK;
}

chm_status chm_cpu_event_record(chm_backend *be, chm_event *ev) {
    (void)be;
    ev->ms = now_ms();
    return CHM_OK;
}

chm_status chm_cpu_event_elapsed_ms(chm_backend *be, chm_event *start, chm_event *stop,
                                    double *ms) {
    (void)be;
    *ms = stop->ms - start->ms;
    return CHM_OK;
}

void chm_cpu_event_destroy(chm_backend *be, chm_event *ev) {
    (void)be;
    free(ev);
}

static void cpu_close(chm_backend *be) { free(be); }

chm_status chm_cpu_open(const chm_backend_options *opts, chm_backend **out, chm_err *err) {
    chm_backend *be = calloc(1, sizeof *be);
    if (!be) return CHM_ERR(err, CHM_ERR_NOMEM, "cannot allocate the cpu backend");
    be->api_version = CHM_BACKEND_API_VERSION;
    be->name = "cpu";
    be->ops = &cpu_ops;
    be->caps = CHM_CAP_F64 | CHM_CAP_BF16 | CHM_CAP_F16 | CHM_CAP_HOST_MEMORY |
               CHM_CAP_CHEAP_READBACK;
    be->close = cpu_close;
    int threads = 1;
#ifdef _OPENMP
    if (opts && opts->threads > 0) omp_set_num_threads(opts->threads);
    threads = omp_get_max_threads();
#else
    (void)opts;
#endif
    snprintf(be->device, sizeof be->device, "host CPU, %d thread%s", threads,
             threads == 1 ? "" : "s");
    *out = be;
    return CHM_OK;
}
