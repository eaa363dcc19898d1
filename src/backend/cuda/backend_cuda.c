/*
 * backend_cuda.c: the cuda backend's op table, opening and closing.
 *
 * One backend = one device, one non-blocking stream (every op is queued on
 * it, in call order), a caching device pool, pinned staging buffers for
 * transfers, a cuBLASLt handle with its workspace, a grow-only scratch area
 * and a device flag for data errors (memory.c). Ops never synchronise;
 * chm_sync and downloads do, and report any data error an op recorded.
 *
 * Needs an Ampere or newer GPU (sm_80: cp.async, bf16 tensor cores). Every
 * entry is set; the ops the model added last (row_scale, exp, bce_logits,
 * moe_aux, attention_decode, selective_scan_step) are in model_ops.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "kernels.h"

static const chm_backend_ops cuda_ops = {
    .api_version = CHM_BACKEND_API_VERSION,
    .buffer_alloc = chm_cuda_buffer_alloc,
    .buffer_free = chm_cuda_buffer_free,
    .upload = chm_cuda_upload,
    .download = chm_cuda_download,
    .fill = chm_cuda_fill,
    .copy = chm_cuda_copy,
    .cast = chm_cuda_cast,
    .sync = chm_cuda_sync,
    .event_create = chm_cuda_event_create,
    .event_record = chm_cuda_event_record,
    .event_elapsed_ms = chm_cuda_event_elapsed_ms,
    .event_destroy = chm_cuda_event_destroy,
    .event_done = chm_cuda_event_done,
    .readback_start = chm_cuda_readback_start,
    .readback_finish = chm_cuda_readback_finish,
    .matmul = chm_cuda_matmul,
    .matmul_from = chm_cuda_matmul_from,
    .matmul_grouped = chm_cuda_matmul_grouped,
    .attention_fwd = chm_cuda_attention_fwd,
    .attention_bwd = chm_cuda_attention_bwd,
    .selective_scan_fwd = chm_cuda_selective_scan_fwd,
    .selective_scan_bwd = chm_cuda_selective_scan_bwd,
    .causal_conv1d_fwd = chm_cuda_causal_conv1d_fwd,
    .causal_conv1d_bwd = chm_cuda_causal_conv1d_bwd,
    .rmsnorm_fwd = chm_cuda_rmsnorm_fwd,
    .rmsnorm_bwd = chm_cuda_rmsnorm_bwd,
    .rope_fwd = chm_cuda_rope_fwd,
    .rope_bwd = chm_cuda_rope_bwd,
    .swiglu_fwd = chm_cuda_swiglu_fwd,
    .swiglu_bwd = chm_cuda_swiglu_bwd,
    .embedding_fwd = chm_cuda_embedding_fwd,
    .embedding_bwd = chm_cuda_embedding_bwd,
    .add = chm_cuda_add,
    .scale = chm_cuda_scale,
    .axpy = chm_cuda_axpy,
    .sum_rows = chm_cuda_sum_rows,
    .router_topk = chm_cuda_router_topk,
    .router_topk_bwd = chm_cuda_router_topk_bwd,
    .select_topk = chm_cuda_select_topk,
    .gather_rows = chm_cuda_gather_rows,
    .scatter_add_rows = chm_cuda_scatter_add_rows,
    .cross_entropy = chm_cuda_cross_entropy,
    .adamw_step = chm_cuda_adamw_step,
    .sum_squares = chm_cuda_sum_squares,
    .row_scale_fwd = chm_cuda_row_scale_fwd,
    .row_scale_bwd = chm_cuda_row_scale_bwd,
    .exp_fwd = chm_cuda_exp_fwd,
    .exp_bwd = chm_cuda_exp_bwd,
    .bce_logits = chm_cuda_bce_logits,
    .moe_aux = chm_cuda_moe_aux,
    .attention_decode = chm_cuda_attention_decode,
    .selective_scan_step = chm_cuda_selective_scan_step,
};

/* Release everything the context holds (any part may be missing after a failed open). */
static void ctx_free(chm_backend *be) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    if (!cx) return;
    if (cx->stream) cudaStreamSynchronize(cx->stream);
    chm_cuda_lt_free(be);
    chm_cuda_pool_free(be, cx->scratch);
    for (int k = 0; k < 2; k++) {
        if (cx->staging[k]) cudaFreeHost(cx->staging[k]);
        if (cx->staging_done[k]) cudaEventDestroy(cx->staging_done[k]);
    }
    if (cx->flag_host) cudaFreeHost(cx->flag_host);
    if (cx->rb_host) cudaFreeHost(cx->rb_host);
    for (int k = 0; k < CHM_CUDA_READBACKS; k++)
        if (cx->rb_done[k]) cudaEventDestroy(cx->rb_done[k]);
    if (cx->flag) cudaFree(cx->flag);
    chm_cuda_pool_destroy(cx->pool);
    if (cx->stream) cudaStreamDestroy(cx->stream);
    free(cx);
    be->ctx = NULL;
}

static void cuda_close(chm_backend *be) {
    ctx_free(be);
    free(be);
}

/* The device to use: the requested index, else the first Ampere-or-newer one. */
static chm_status pick_device(const chm_backend_options *opts, int *dev,
                              struct cudaDeviceProp *prop, chm_err *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "cuda: no CUDA device (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "the driver lists none");
    }
    int want = opts ? opts->device_index : -1;
    if (want >= n)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "cuda: device %d asked for, but only %d found",
                       want, n);
    for (int i = want >= 0 ? want : 0; i < n; i++) {
        if (cudaGetDeviceProperties(prop, i) != cudaSuccess) continue;
        if (prop->major >= 8) {
            *dev = i;
            return CHM_OK;
        }
        if (want >= 0) break;
    }
    cudaGetLastError();
    return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                   "cuda: %s%s is sm_%d%d; the cuda backend needs Ampere (sm_80) or newer",
                   want >= 0 ? "" : "no usable GPU: ", prop->name, prop->major, prop->minor);
}

/* Stream, pool, staging, flag, cuBLASLt: everything but the device choice. */
static chm_status ctx_init(chm_backend *be, chm_err *err) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cudaError_t e = cudaStreamCreateWithFlags(&cx->stream, cudaStreamNonBlocking);
    for (int k = 0; e == cudaSuccess && k < 2; k++) {
        e = cudaMallocHost((void **)&cx->staging[k], CHM_CUDA_STAGING);
        if (e == cudaSuccess)
            e = cudaEventCreateWithFlags(&cx->staging_done[k], cudaEventDisableTiming);
    }
    if (e == cudaSuccess) e = cudaMalloc((void **)&cx->flag, 4 * sizeof(int));
    if (e == cudaSuccess) e = cudaMemsetAsync(cx->flag, 0, 4 * sizeof(int), cx->stream);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&cx->flag_host, 4 * sizeof(int));
    if (e != cudaSuccess) {
        cudaGetLastError();
        return CHM_ERR(err, CHM_ERR_DEVICE, "cuda: cannot set up the device: %s",
                       cudaGetErrorString(e));
    }
    memset(cx->flag_host, 0, 4 * sizeof(int));
    if (chm_cuda_pool_create(&cx->pool))
        return CHM_ERR(err, CHM_ERR_NOMEM, "cuda: cannot allocate the memory pool");
    chm_status rc = chm_cuda_lt_init(be);
    if (rc) *err = be->err;
    return rc;
}

chm_status chm_cuda_open(const chm_backend_options *opts, chm_backend **out, chm_err *err) {
    int dev = 0;
    struct cudaDeviceProp prop;
    chm_status rc = pick_device(opts, &dev, &prop, err);
    if (rc) return rc;
    cudaError_t e = cudaSetDevice(dev);
    if (e != cudaSuccess)
        return CHM_ERR(err, CHM_ERR_DEVICE, "cuda: cannot use device %d: %s", dev,
                       cudaGetErrorString(e));
    chm_backend *be = calloc(1, sizeof *be);
    chm_cuda_ctx *cx = calloc(1, sizeof *cx);
    if (!be || !cx) {
        free(be);
        free(cx);
        return CHM_ERR(err, CHM_ERR_NOMEM, "cannot allocate the cuda backend");
    }
    be->api_version = CHM_BACKEND_API_VERSION;
    be->name = "cuda";
    be->ops = &cuda_ops;
    be->ctx = cx;
    be->caps = CHM_CAP_BF16 | CHM_CAP_F16 | CHM_CAP_FAST_BF16 | CHM_CAP_SCAN_SAVED |
               CHM_CAP_SCAN_YSAVED | CHM_CAP_CHEAP_READBACK;
    be->close = cuda_close;
    cx->device = dev;
    cx->cc_major = prop.major;
    cx->cc_minor = prop.minor;
    cx->sm_count = prop.multiProcessorCount;
    snprintf(be->device, sizeof be->device, "%.80s (sm_%d%d, %.1f GiB, %d SMs)", prop.name,
             prop.major, prop.minor, (double)prop.totalGlobalMem / (1u << 30),
             prop.multiProcessorCount);
    rc = ctx_init(be, err);
    if (rc) {
        cuda_close(be);
        return rc;
    }
    *out = be;
    return CHM_OK;
}
