/*
 * layers.c: the cuda backend's per-layer ops: RMSNorm, RoPE, SwiGLU, the
 * embedding, and add/scale/axpy/sum_rows (kernels in cuda/rmsnorm.cu,
 * rope.cu, swiglu.cu, rows.cu, elementwise.cu). f32, bf16 and f16, computed
 * in f32. Backwards ACCUMULATE. Column sums (dw of RMSNorm, sum_rows) and the
 * embedding backward are deterministic: slab partials added in a fixed order,
 * and a stable sort of the ids followed by one ordered sum per id.
 */
#include "cuda_backend.h"
#include "kernels.h"

static cudaStream_t stream_of(chm_backend *be) { return chm_cuda_ctx_of(be)->stream; }

chm_status chm_cuda_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                                const chm_tensor *x, const chm_tensor *w, double eps) {
    chm_status rc = chm_cuda_dtype(be, "rmsnorm_fwd", x->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    cudaError_t e = chm_cu_rmsnorm_fwd(chm_cuda_ptr(out), chm_cuda_ptr(rstd), chm_cuda_ptr(x),
                                       chm_cuda_ptr(w), chm_tensor_rows(x), chm_tensor_cols(x),
                                       eps, x->dtype, stream_of(be));
    return chm_cuda_check(be, "rmsnorm_fwd", e);
}

chm_status chm_cuda_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                const chm_tensor *dout, const chm_tensor *x,
                                const chm_tensor *w, const chm_tensor *rstd) {
    const char *op = "rmsnorm_bwd";
    chm_status rc = chm_cuda_dtype(be, op, x->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    int64_t R = chm_tensor_rows(x), C = chm_tensor_cols(x);
    int S = chm_cu_rmsnorm_slabs(R);
    float *part;
    rc = chm_cuda_scratch(be, op, ((size_t)S * (size_t)C + 1) * sizeof(float), (void **)&part);
    if (rc) return rc;
    cudaError_t e = chm_cu_rmsnorm_bwd(chm_cuda_ptr(dx), chm_cuda_ptr(dw), part,
                                       chm_cuda_ptr(dout), chm_cuda_ptr(x), chm_cuda_ptr(w),
                                       chm_cuda_ptr(rstd), R, C, x->dtype, stream_of(be));
    return chm_cuda_check(be, op, e);
}

/* Forward (sign +1, written) and backward (sign -1, accumulated) share one kernel. */
static chm_status rope_run(chm_backend *be, const char *op, const chm_tensor *out,
                           const chm_tensor *x, double theta, int64_t pos, int sign) {
    chm_status rc = chm_cuda_dtype(be, op, x->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    const int64_t *s = x->shape;
    cudaError_t e = chm_cu_rope(chm_cuda_ptr(out), chm_cuda_ptr(x), s[0], s[1], s[2], s[3], theta,
                                pos, sign, sign < 0, x->dtype, stream_of(be));
    return chm_cuda_check(be, op, e);
}

chm_status chm_cuda_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                             double theta, int64_t pos_offset) {
    return rope_run(be, "rope_fwd", out, x, theta, pos_offset, 1);
}

chm_status chm_cuda_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                             double theta, int64_t pos_offset) {
    return rope_run(be, "rope_bwd", dx, dout, theta, pos_offset, -1);
}

/* The tail-zero rows of gate [E,cap,F] (NULL without counts). */
static const chm_cu_swiglu_rows *swiglu_rows(chm_cu_swiglu_rows *r, const chm_tensor *gate,
                                             const chm_tensor *counts) {
    if (!counts) return NULL;
    *r = (chm_cu_swiglu_rows){chm_cuda_ptr(counts), gate->shape[1], gate->shape[2]};
    return r;
}

chm_status chm_cuda_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                               const chm_tensor *up, const chm_tensor *counts) {
    chm_status rc = chm_cuda_dtype(be, "swiglu_fwd", gate->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cu_swiglu_rows r;
    cudaError_t e = chm_cu_swiglu_fwd(chm_cuda_ptr(out), chm_cuda_ptr(gate), chm_cuda_ptr(up),
                                      chm_tensor_numel(gate), swiglu_rows(&r, gate, counts),
                                      gate->dtype, stream_of(be));
    return chm_cuda_check(be, "swiglu_fwd", e);
}

chm_status chm_cuda_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                               const chm_tensor *dout, const chm_tensor *gate,
                               const chm_tensor *up, bool accumulate, const chm_tensor *counts) {
    chm_status rc = chm_cuda_dtype(be, "swiglu_bwd", gate->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cu_swiglu_rows r;
    cudaError_t e = chm_cu_swiglu_bwd(chm_cuda_ptr(dgate), chm_cuda_ptr(dup), chm_cuda_ptr(dout),
                                      chm_cuda_ptr(gate), chm_cuda_ptr(up),
                                      chm_tensor_numel(gate), accumulate,
                                      swiglu_rows(&r, gate, counts), gate->dtype, stream_of(be));
    return chm_cuda_check(be, "swiglu_bwd", e);
}

chm_status chm_cuda_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                                  const chm_tensor *table) {
    chm_status rc = chm_cuda_dtype(be, "embedding_fwd", table->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    cudaError_t e = chm_cu_embedding_fwd(chm_cuda_ptr(out), chm_cuda_ptr(ids), chm_cuda_ptr(table),
                                         chm_tensor_numel(ids), table->shape[0], table->shape[1],
                                         table->dtype, chm_cuda_ctx_of(be)->flag, stream_of(be));
    return chm_cuda_check(be, "embedding_fwd", e);
}

chm_status chm_cuda_embedding_bwd(chm_backend *be, const chm_tensor *dtable,
                                  const chm_tensor *dout, const chm_tensor *ids) {
    const char *op = "embedding_bwd";
    chm_status rc = chm_cuda_dtype(be, op, dtable->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    int64_t R = chm_tensor_numel(ids), V = dtable->shape[0];
    size_t bytes = chm_cu_scatter_scratch(R, V);
    void *scratch = NULL;
    if (bytes && (rc = chm_cuda_scratch(be, op, bytes, &scratch))) return rc;
    cudaError_t e = chm_cu_scatter_add(chm_cuda_ptr(dtable), chm_cuda_ptr(dout), chm_cuda_ptr(ids),
                                       NULL, R, V, dtable->shape[1], dtable->dtype, true,
                                       CHM_CU_FLAG_EMBEDDING_BWD, scratch, bytes,
                                       chm_cuda_ctx_of(be)->flag, stream_of(be));
    return chm_cuda_check(be, op, e);
}

chm_status chm_cuda_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                        const chm_tensor *b) {
    chm_status rc = chm_cuda_dtype(be, "add", out->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    return chm_cuda_check(be, "add", chm_cu_add(chm_cuda_ptr(out), chm_cuda_ptr(a), chm_cuda_ptr(b),
                                                chm_tensor_numel(out), out->dtype, stream_of(be)));
}

chm_status chm_cuda_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                          double alpha) {
    chm_status rc = chm_cuda_dtype(be, "scale", out->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    return chm_cuda_check(be, "scale", chm_cu_scale(chm_cuda_ptr(out), chm_cuda_ptr(x), alpha,
                                                    chm_tensor_numel(out), out->dtype,
                                                    stream_of(be)));
}

chm_status chm_cuda_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x,
                         double alpha) {
    chm_status rc = chm_cuda_dtype(be, "axpy", y->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    return chm_cuda_check(be, "axpy", chm_cu_axpy(chm_cuda_ptr(y), chm_cuda_ptr(x), alpha,
                                                  chm_tensor_numel(y), y->dtype, stream_of(be)));
}

chm_status chm_cuda_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    chm_status rc = chm_cuda_dtype(be, "sum_rows", x->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    int64_t R = chm_tensor_rows(x), C = chm_tensor_cols(x);
    int S = chm_cu_colsum_slabs(R);
    float *part;
    rc = chm_cuda_scratch(be, "sum_rows", (size_t)(S * C + 1) * sizeof(float), (void **)&part);
    if (rc) return rc;
    cudaError_t e = chm_cu_colsum_partial(part, chm_cuda_ptr(x), R, C, x->dtype, stream_of(be));
    if (e == cudaSuccess)
        e = chm_cu_colsum_finish(chm_cuda_ptr(out), x->dtype, part, S, C, stream_of(be));
    return chm_cuda_check(be, "sum_rows", e);
}
