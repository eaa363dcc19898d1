/*
 * model_ops.c: the cuda backend's glue for the ops the model added last
 * (backend.h, "added for the model"): row_scale, exp, bce_logits, moe_aux,
 * attention_decode and selective_scan_step (kernels in cuda/model_ops.cu).
 *
 * f32 and bf16 tensors; f32 math; losses and other statistics in f32 (the
 * stats dtype of both). Backwards ACCUMULATE; bce_logits' dlogits is written.
 * moe_aux's idx entries outside [0, E) are found on the device and reported
 * at the next sync (like embedding ids); the scan step keeps the state in
 * registers and, like the scan, takes d_state N <= CHM_CU_SCAN_MAX_N.
 */
#include "cuda_backend.h"
#include "kernels.h"

static cudaStream_t stream_of(chm_backend *be) { return chm_cuda_ctx_of(be)->stream; }

chm_status chm_cuda_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                  const chm_tensor *s, bool sigmoid) {
    chm_status rc = chm_cuda_dtype(be, "row_scale_fwd", x->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    cudaError_t e = chm_cu_row_scale_fwd(chm_cuda_ptr(out), chm_cuda_ptr(x), chm_cuda_ptr(s),
                                         x->shape[0], x->shape[1], sigmoid, x->dtype,
                                         stream_of(be));
    return chm_cuda_check(be, "row_scale_fwd", e);
}

chm_status chm_cuda_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                  const chm_tensor *dout, const chm_tensor *x,
                                  const chm_tensor *s, bool sigmoid, bool set) {
    chm_status rc = chm_cuda_dtype(be, "row_scale_bwd", x->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    cudaError_t e = chm_cu_row_scale_bwd(chm_cuda_ptr(dx), chm_cuda_ptr(ds), chm_cuda_ptr(dout),
                                         chm_cuda_ptr(x), chm_cuda_ptr(s), x->shape[0],
                                         x->shape[1], sigmoid, set, x->dtype, stream_of(be));
    return chm_cuda_check(be, "row_scale_bwd", e);
}

chm_status chm_cuda_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                            double alpha) {
    chm_status rc = chm_cuda_dtype(be, "exp_fwd", x->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    cudaError_t e = chm_cu_exp_fwd(chm_cuda_ptr(out), chm_cuda_ptr(x), alpha,
                                   chm_tensor_numel(x), x->dtype, stream_of(be));
    return chm_cuda_check(be, "exp_fwd", e);
}

chm_status chm_cuda_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                            const chm_tensor *out) {
    chm_status rc = chm_cuda_dtype(be, "exp_bwd", out->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    cudaError_t e = chm_cu_exp_bwd(chm_cuda_ptr(dx), chm_cuda_ptr(dout), chm_cuda_ptr(out),
                                   chm_tensor_numel(out), out->dtype, stream_of(be));
    return chm_cuda_check(be, "exp_bwd", e);
}

chm_status chm_cuda_bce_logits(chm_backend *be, const chm_tensor *losses,
                               const chm_tensor *dlogits, const chm_tensor *logits,
                               const chm_tensor *targets, double grad_scale) {
    chm_status rc = chm_cuda_dtype(be, "bce_logits", logits->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    cudaError_t e = chm_cu_bce_logits(chm_cuda_ptr(losses), chm_cuda_ptr(dlogits),
                                      chm_cuda_ptr(logits), chm_cuda_ptr(targets),
                                      chm_tensor_numel(logits), grad_scale, logits->dtype,
                                      stream_of(be));
    return chm_cuda_check(be, "bce_logits", e);
}

chm_status chm_cuda_moe_aux(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                            const chm_tensor *logits, const chm_tensor *idx,
                            double balance_scale, double z_scale) {
    const char *op = "moe_aux";
    chm_status rc = chm_cuda_dtype(be, op, logits->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    int64_t R = logits->shape[0], E = logits->shape[1], K = idx->shape[1];
    void *scratch;
    rc = chm_cuda_scratch(be, op, chm_cu_moe_aux_scratch(R, E), &scratch);
    if (rc) return rc;
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cudaError_t e = chm_cu_moe_aux(chm_cuda_ptr(losses), chm_cuda_ptr(dlogits),
                                   chm_cuda_ptr(logits), chm_cuda_ptr(idx), R, E, K,
                                   balance_scale, z_scale, logits->dtype, scratch, cx->flag,
                                   cx->stream);
    return chm_cuda_check(be, op, e);
}

chm_status chm_cuda_attention_decode(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                     const chm_tensor *k, const chm_tensor *v, double scale) {
    const char *op = "attention_decode";
    chm_status rc = chm_cuda_dtype(be, op, q->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    int64_t D = q->shape[3];
    if ((2 * D + 128) * (int64_t)sizeof(float) > 48 * 1024)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                       "%s: head dim %lld is above what the cuda kernel keeps in shared memory "
                       "(%d); use --backend cpu",
                       op, (long long)D, (48 * 1024 / 4 - 128) / 2);
    cudaError_t e = chm_cu_attention_decode(chm_cuda_ptr(out), chm_cuda_ptr(q), chm_cuda_ptr(k),
                                            chm_cuda_ptr(v), q->shape[0], q->shape[1],
                                            k->shape[1], q->shape[2], k->shape[2], D, scale,
                                            q->dtype, stream_of(be));
    return chm_cuda_check(be, op, e);
}

chm_status chm_cuda_selective_scan_step(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                        const chm_scan_args *a) {
    const char *op = "selective_scan_step";
    chm_status rc = chm_cuda_dtype(be, op, a->u->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    int64_t N = a->A->shape[1];
    if (N > CHM_CU_SCAN_MAX_N)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                       "%s: d_state N = %lld is above the %d states the cuda scan keeps in "
                       "registers; use d_state <= %d or --backend cpu",
                       op, (long long)N, CHM_CU_SCAN_MAX_N, CHM_CU_SCAN_MAX_N);
    chm_cu_scan k = {chm_cuda_ptr(a->u), chm_cuda_ptr(a->delta), chm_cuda_ptr(a->A),
                     chm_cuda_ptr(a->Bm), chm_cuda_ptr(a->Cm), chm_cuda_ptr(a->D),
                     chm_cuda_ptr(a->z), chm_cuda_ptr(a->delta_bias), a->u->shape[0],
                     a->u->shape[1], a->u->shape[2], N, a->delta_softplus, a->u->dtype};
    return chm_cuda_check(be, op, chm_cu_scan_step(chm_cuda_ptr(y), chm_cuda_ptr(h), &k,
                                                   stream_of(be)));
}
