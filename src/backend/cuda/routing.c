/*
 * routing.c: MoE/MoD routing and row moves of the cuda backend: router_topk
 * (with its dispatch plan), router_topk_bwd, select_topk, gather_rows and
 * the deterministic scatter_add_rows (kernels in cuda/router.cu, cuda/rows.cu).
 * f32, bf16, f16. Index values are data: the kernels check them on the device
 * and a bad one is reported by the next sync (see cuda_backend.h).
 */
#include "cuda_backend.h"
#include "kernels.h"

chm_status chm_cuda_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                                const chm_tensor *probs, const chm_tensor *slot_token,
                                const chm_tensor *slot_ref, const chm_tensor *counts,
                                const chm_tensor *logits, chm_router_score score,
                                bool renormalize) {
    chm_status rc = chm_cuda_dtype(be, "router_topk", logits->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    cudaError_t e = chm_cu_router_topk(
        chm_cuda_ptr(gates), chm_cuda_ptr(idx), chm_cuda_ptr(probs), chm_cuda_ptr(slot_token),
        chm_cuda_ptr(slot_ref), chm_cuda_ptr(counts), chm_cuda_ptr(logits), logits->shape[0],
        logits->shape[1], idx->shape[1], slot_token->shape[1], score == CHM_ROUTER_SIGMOID,
        renormalize, logits->dtype, chm_cuda_ctx_of(be)->stream);
    return chm_cuda_check(be, "router_topk", e);
}

chm_status chm_cuda_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                    const chm_tensor *dgates, const chm_tensor *probs,
                                    const chm_tensor *idx, chm_router_score score,
                                    bool renormalize) {
    chm_status rc = chm_cuda_dtype(be, "router_topk_bwd", dlogits->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cudaError_t e = chm_cu_router_topk_bwd(
        chm_cuda_ptr(dlogits), chm_cuda_ptr(dgates), chm_cuda_ptr(probs), chm_cuda_ptr(idx),
        dlogits->shape[0], dlogits->shape[1], idx->shape[1], score == CHM_ROUTER_SIGMOID,
        renormalize, dlogits->dtype, cx->flag, cx->stream);
    return chm_cuda_check(be, "router_topk_bwd", e);
}

chm_status chm_cuda_select_topk(chm_backend *be, const chm_tensor *idx,
                                const chm_tensor *scores, bool flat) {
    chm_status rc = chm_cuda_dtype(be, "select_topk", scores->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    cudaError_t e = chm_cu_select_topk(chm_cuda_ptr(idx), chm_cuda_ptr(scores), scores->shape[0],
                                       scores->shape[1], idx->shape[1], flat, scores->dtype,
                                       chm_cuda_ctx_of(be)->stream);
    return chm_cuda_check(be, "select_topk", e);
}

chm_status chm_cuda_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                const chm_tensor *idx) {
    chm_status rc = chm_cuda_dtype(be, "gather_rows", x->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cudaError_t e = chm_cu_gather_rows(chm_cuda_ptr(out), chm_cuda_ptr(x), chm_cuda_ptr(idx),
                                       idx->shape[0], x->shape[0], x->shape[1], x->dtype,
                                       cx->flag, cx->stream);
    return chm_cuda_check(be, "gather_rows", e);
}

chm_status chm_cuda_scatter_add_rows(chm_backend *be, const chm_tensor *out,
                                     const chm_tensor *x, const chm_tensor *idx,
                                     const chm_tensor *weights, int max_repeat) {
    const char *op = "scatter_add_rows";
    chm_status rc = chm_cuda_dtype(be, op, out->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    int64_t M = idx->shape[0], R = out->shape[0];
    if (max_repeat >= 1 && max_repeat <= CHM_CU_SCATTER_MAX_REPEAT) {
        /* no sort: the same sums, bitwise (rows.cu) */
        size_t nb = chm_cu_scatter_bounded_scratch(R, max_repeat);
        void *scr = NULL;
        if (nb && (rc = chm_cuda_scratch(be, op, nb, &scr))) return rc;
        cudaError_t e = chm_cu_scatter_add_bounded(
            chm_cuda_ptr(out), chm_cuda_ptr(x), chm_cuda_ptr(idx), chm_cuda_ptr(weights), M, R,
            out->shape[1], max_repeat, out->dtype, CHM_CU_FLAG_SCATTER_ADD_ROWS, scr, cx->flag,
            cx->stream);
        return chm_cuda_check(be, op, e);
    }
    size_t bytes = chm_cu_scatter_scratch(M, R);
    void *scratch = NULL;
    if (bytes && (rc = chm_cuda_scratch(be, op, bytes, &scratch))) return rc;
    cudaError_t e = chm_cu_scatter_add(chm_cuda_ptr(out), chm_cuda_ptr(x), chm_cuda_ptr(idx),
                                       chm_cuda_ptr(weights), M, R, out->shape[1], out->dtype,
                                       false, CHM_CU_FLAG_SCATTER_ADD_ROWS, scratch, bytes,
                                       cx->flag, cx->stream);
    return chm_cuda_check(be, op, e);
}
