/*
 * attention.c: causal grouped-query attention of the cuda backend.
 *
 * bf16 tensors with head dim 64 or 128 (and 16-byte aligned) run the
 * tensor-core flash kernels (cuda/attention_flash*.cu; on compute capability
 * 9.0 the forward and backward on wgmma: attention_flash_*_sm90.cu);
 * everything else (f32 - what the op tests compare first -, f16, other head
 * dims) runs the simple kernels of cuda/attention.cu. Both save lse [B,H,T] in
 * f32 and both backwards are deterministic (one writer per gradient element)
 * and ACCUMULATE into dq, dk, dv. The backward's scratch is Delta [B,H,T] f32.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "kernels.h"

/* CHIMERA_CUDA_DISABLE, a comma-separated list, turns the Hopper (sm_90a,
 * wgmma) attention kernels off, for A/B timing in one binary: "wgmma" all,
 * "wgmma_fwd" the forward, "wgmma_dq" the dQ kernel, "wgmma_dkdv" the dK/dV
 * kernel (the mma.sync kernels run instead). Read on every call (nil next to
 * a launch). */
static int wgmma_allowed(void) {
    const char *v = getenv("CHIMERA_CUDA_DISABLE");
    int bits = CHM_CU_WGMMA_FWD | CHM_CU_WGMMA_DQ | CHM_CU_WGMMA_DKDV;
    while (v && *v) {
        size_t n = strcspn(v, ",");
        if (n == 5 && !strncmp(v, "wgmma", 5)) bits = 0;
        if (n == 9 && !strncmp(v, "wgmma_fwd", 9)) bits &= ~CHM_CU_WGMMA_FWD;
        if (n == 8 && !strncmp(v, "wgmma_dq", 8)) bits &= ~CHM_CU_WGMMA_DQ;
        if (n == 10 && !strncmp(v, "wgmma_dkdv", 10)) bits &= ~CHM_CU_WGMMA_DKDV;
        v += n + (v[n] == ',');
    }
    return bits;
}

static chm_cu_attn attn_of(const chm_tensor *q, const chm_tensor *k, double scale) {
    chm_cu_attn a = {q->shape[0], q->shape[1], q->shape[2], k->shape[2],
                     q->shape[3], (float)scale, q->dtype, wgmma_allowed()};
    return a;
}

chm_status chm_cuda_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                                  const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                  double scale) {
    const char *op = "attention_fwd";
    chm_status rc = chm_cuda_dtype(be, op, q->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cu_attn a = attn_of(q, k, scale);
    void *po = chm_cuda_ptr(out), *pq = chm_cuda_ptr(q), *pk = chm_cuda_ptr(k),
         *pv = chm_cuda_ptr(v);
    const void *ptrs[] = {po, pq, pk, pv};
    cudaStream_t s = chm_cuda_ctx_of(be)->stream;
    cudaError_t e = chm_cu_flash_ok(&a, ptrs, 4)
                        ? chm_cu_flash_fwd(po, chm_cuda_ptr(lse), pq, pk, pv, &a, s)
                        : chm_cu_attn_fwd(po, chm_cuda_ptr(lse), pq, pk, pv, &a, s);
    return chm_cuda_check(be, op, e);
}

chm_status chm_cuda_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                  const chm_tensor *dv, const chm_tensor *dout,
                                  const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                  const chm_tensor *out, const chm_tensor *lse, double scale) {
    const char *op = "attention_bwd";
    chm_status rc = chm_cuda_dtype(be, op, q->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cu_attn a = attn_of(q, k, scale);
    float *delta;
    rc = chm_cuda_scratch(be, op, (size_t)(a.B * a.H * a.T + 1) * sizeof(float), (void **)&delta);
    if (rc) return rc;
    cudaStream_t s = chm_cuda_ctx_of(be)->stream;
    void *pdq = chm_cuda_ptr(dq), *pdk = chm_cuda_ptr(dk), *pdv = chm_cuda_ptr(dv);
    const void *pdo = chm_cuda_ptr(dout), *pq = chm_cuda_ptr(q), *pk = chm_cuda_ptr(k),
               *pv = chm_cuda_ptr(v);
    const float *pl = chm_cuda_ptr(lse);
    cudaError_t e = chm_cu_attn_delta(delta, pdo, chm_cuda_ptr(out), &a, s);
    const void *ptrs[] = {pdq, pdk, pdv, pdo, pq, pk, pv};
    if (e == cudaSuccess)
        e = chm_cu_flash_ok(&a, ptrs, 7)
                ? chm_cu_flash_bwd(pdq, pdk, pdv, pdo, pq, pk, pv, pl, delta, &a, s)
                : chm_cu_attn_bwd(pdq, pdk, pdv, pdo, pq, pk, pv, pl, delta, &a, s);
    return chm_cuda_check(be, op, e);
}
