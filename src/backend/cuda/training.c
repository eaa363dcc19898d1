/*
 * training.c: the cuda backend's loss, optimizer and norm ops: the fused
 * chunked cross-entropy, one fused AdamW step over a flat buffer, and the
 * deterministic sum of squares (kernels in cuda/cross_entropy.cu, adamw.cu,
 * sum_squares.cu).
 *
 * AdamW keeps f32 master weights and moments (f64 params belong on the cpu
 * backend), takes f32/bf16/f16 gradients and writes an optional bf16/f16 copy
 * of the new weights. Its bias corrections are computed here in double.
 */
#include <math.h>

#include "cuda_backend.h"
#include "kernels.h"

chm_status chm_cuda_cross_entropy(chm_backend *be, const chm_tensor *losses,
                                  const chm_tensor *dlogits, const chm_tensor *logits,
                                  const chm_tensor *targets, double grad_scale) {
    chm_status rc = chm_cuda_dtype(be, "cross_entropy", logits->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cudaError_t e = chm_cu_cross_entropy(chm_cuda_ptr(losses), chm_cuda_ptr(dlogits),
                                         chm_cuda_ptr(logits), chm_cuda_ptr(targets),
                                         logits->shape[0], logits->shape[1], grad_scale,
                                         logits->dtype, cx->flag, cx->stream);
    return chm_cuda_check(be, "cross_entropy", e);
}

chm_status chm_cuda_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                               const chm_tensor *m, const chm_tensor *v,
                               const chm_tensor *param_lowp, const chm_adamw_args *args) {
    const char *op = "adamw_step";
    chm_status rc = chm_cuda_dtype(be, op, param->dtype, CHM_CUDA_DT(CHM_F32));
    if (!rc) rc = chm_cuda_dtype(be, op, grad->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cu_adamw a = {(float)args->lr, (float)args->beta1, (float)args->beta2, (float)args->eps,
                      (float)args->weight_decay, (float)args->grad_scale,
                      (float)(1.0 - pow(args->beta1, (double)args->step)),
                      (float)(1.0 - pow(args->beta2, (double)args->step))};
    cudaError_t e = chm_cu_adamw_step(chm_cuda_ptr(param), chm_cuda_ptr(grad), grad->dtype,
                                      chm_cuda_ptr(m), chm_cuda_ptr(v), chm_cuda_ptr(param_lowp),
                                      param_lowp ? param_lowp->dtype : CHM_BF16,
                                      chm_tensor_numel(param), &a, chm_cuda_ctx_of(be)->stream);
    return chm_cuda_check(be, op, e);
}

chm_status chm_cuda_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    const char *op = "sum_squares";
    chm_status rc = chm_cuda_dtype(be, op, x->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    int64_t n = chm_tensor_numel(x);
    void *scratch;
    rc = chm_cuda_scratch(be, op, chm_cu_sum_squares_scratch(n), &scratch);
    if (rc) return rc;
    cudaError_t e = chm_cu_sum_squares(chm_cuda_ptr(out), out->dtype, chm_cuda_ptr(x), n,
                                       x->dtype, scratch, chm_cuda_ctx_of(be)->stream);
    return chm_cuda_check(be, op, e);
}
