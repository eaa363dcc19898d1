/*
 * mamba.c: the Mamba ops of the cuda backend: selective scan and causal
 * conv1d, forward and backward (kernels in cuda/selective_scan_fwd.cu, _bwd.cu, _v1.cu and
 * cuda/causal_conv1d.cu; their file comments describe the algorithms).
 *
 * f32 and bf16. The scan keeps the N states of a channel in registers and
 * takes d_state N <= CHM_CU_SCAN_MAX_N (16, Mamba's default). Backwards
 * ACCUMULATE; their partial sums live in the backend's scratch and are added
 * in a fixed order (deterministic); the gradients chm_scan_args.grads_set
 * names are written instead. The forward writes chm_scan_args.h_saved when
 * given, and the backward then starts its chunks from it instead of running
 * its checkpoint pass; likewise y_saved (with a gate), which the backward reads
 * for dz where it writes du, ddelta and dz (selective_scan_bwd.cu: YS).
 */
#include "cuda_backend.h"
#include "kernels.h"

/* The kernel view of the scan's arguments; fails on N too large. */
static chm_status scan_of(chm_backend *be, const char *op, const chm_scan_args *a,
                          chm_cu_scan *k) {
    chm_status rc = chm_cuda_dtype(be, op, a->u->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    int64_t N = a->A->shape[1];
    if (N > CHM_CU_SCAN_MAX_N)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                       "%s: d_state N = %lld is above the %d states the cuda scan keeps in "
                       "registers; use d_state <= %d or --backend cpu",
                       op, (long long)N, CHM_CU_SCAN_MAX_N, CHM_CU_SCAN_MAX_N);
    chm_cu_scan s = {chm_cuda_ptr(a->u), chm_cuda_ptr(a->delta), chm_cuda_ptr(a->A),
                     chm_cuda_ptr(a->Bm), chm_cuda_ptr(a->Cm), chm_cuda_ptr(a->D),
                     chm_cuda_ptr(a->z), chm_cuda_ptr(a->delta_bias), a->u->shape[0],
                     a->u->shape[1], a->u->shape[2], N, a->delta_softplus, a->u->dtype};
    *k = s;
    return CHM_OK;
}

chm_status chm_cuda_selective_scan_fwd(chm_backend *be, const chm_tensor *y,
                                       const chm_scan_args *a) {
    chm_cu_scan k;
    chm_status rc = scan_of(be, "selective_scan_fwd", a, &k);
    if (rc) return rc;
    return chm_cuda_check(be, "selective_scan_fwd",
                          chm_cu_scan_fwd(chm_cuda_ptr(y), chm_cuda_ptr(a->h_saved),
                                          chm_cuda_ptr(a->y_saved), &k,
                                          chm_cuda_ctx_of(be)->stream));
}

/* With B*T*Di == 0 the kernels do nothing: gradients to be set that are not empty (dA,
   dD, ddelta_bias when B*T == 0; dBm, dCm when Di == 0) become zeros, the sums over none. */
static chm_status scan_zero_set(chm_backend *be, const chm_scan_grads *g, unsigned set) {
    chm_tensor *t[8] = {g->du, g->ddelta, g->dA, g->dBm, g->dCm, g->dD, g->dz, g->ddelta_bias};
    chm_status rc = CHM_OK;
    for (int i = 0; i < 8 && !rc; i++)
        if (t[i] && (set >> i & 1u) && chm_tensor_numel(t[i]) > 0)
            rc = be->ops->fill(be, t[i], 0.0);
    return rc;
}

chm_status chm_cuda_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                       const chm_tensor *dy, const chm_scan_args *a) {
    const char *op = "selective_scan_bwd";
    chm_cu_scan k;
    chm_status rc = scan_of(be, op, a, &k);
    if (rc) return rc;
    if (k.B * k.T * k.Di == 0) return scan_zero_set(be, g, a->grads_set);
    /* The checkpoints, the scratch's tail of h_saved's size, are not needed when it is given
       (selective_scan_bwd.cu: scan_layout_of). */
    size_t bytes = chm_cu_scan_bwd_scratch(&k) - (a->h_saved ? chm_tensor_nbytes(a->h_saved) : 0);
    void *scratch;
    rc = chm_cuda_scratch(be, op, bytes, &scratch);
    if (rc) return rc;
    chm_cu_scan_grads gr = {chm_cuda_ptr(g->du), chm_cuda_ptr(g->ddelta), chm_cuda_ptr(g->dA),
                            chm_cuda_ptr(g->dBm), chm_cuda_ptr(g->dCm), chm_cuda_ptr(g->dD),
                            chm_cuda_ptr(g->dz), chm_cuda_ptr(g->ddelta_bias),
                            a->grads_set, chm_cuda_ptr(a->h_saved), chm_cuda_ptr(a->y_saved)};
    return chm_cuda_check(be, op, chm_cu_scan_bwd(&gr, chm_cuda_ptr(dy), &k, scratch,
                                                  chm_cuda_ctx_of(be)->stream));
}

chm_status chm_cuda_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out,
                                      const chm_tensor *x, const chm_tensor *w,
                                      const chm_tensor *bias, bool silu) {
    const char *op = "causal_conv1d_fwd";
    chm_status rc = chm_cuda_dtype(be, op, x->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    cudaError_t e = chm_cu_conv1d_fwd(chm_cuda_ptr(out), chm_cuda_ptr(x), chm_cuda_ptr(w),
                                      chm_cuda_ptr(bias), x->shape[0], x->shape[1], x->shape[2],
                                      w->shape[1], silu, x->dtype, chm_cuda_ctx_of(be)->stream);
    return chm_cuda_check(be, op, e);
}

chm_status chm_cuda_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx,
                                      const chm_tensor *dw, const chm_tensor *dbias,
                                      const chm_tensor *dout, const chm_tensor *x,
                                      const chm_tensor *w, const chm_tensor *bias, bool silu,
                                      bool dx_set) {
    const char *op = "causal_conv1d_bwd";
    chm_status rc = chm_cuda_dtype(be, op, x->dtype, CHM_CUDA_F32_BF16);
    if (rc) return rc;
    int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2], W = w->shape[1];
    int S = chm_cu_conv1d_slabs(B, T, W);
    float *part;
    rc = chm_cuda_scratch(be, op, (size_t)(S * C * (W + 1) + 1) * sizeof(float), (void **)&part);
    if (rc) return rc;
    cudaStream_t s = chm_cuda_ctx_of(be)->stream;
    cudaError_t e = chm_cu_conv1d_bwd(chm_cuda_ptr(dx), part, chm_cuda_ptr(dout), chm_cuda_ptr(x),
                                      chm_cuda_ptr(w), chm_cuda_ptr(bias), B, T, C, W, silu,
                                      dx_set, x->dtype, s);
    if (e == cudaSuccess)
        e = chm_cu_conv1d_bwd_finish(chm_cuda_ptr(dw), chm_cuda_ptr(dbias), part, S, C, W,
                                     x->dtype, s);
    return chm_cuda_check(be, op, e);
}
