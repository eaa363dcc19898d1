/*
 * attention.c: causal grouped-query attention of the cuda backend.
 *
 * bf16 tensors with head dim 64 or 128 (and 16-byte aligned) run the
 * tensor-core flash kernels (cuda/attention_flash*.cu); everything else
 * (f32 - what the op tests compare first -, f16, other head dims) runs the
 * simple kernels of cuda/attention.cu. Both save lse [B,H,T] in f32 and both
 * backwards ACCUMULATE into dq, dk, dv. The simple backward is deterministic
 * (one writer per gradient element); the flash backward at head dim 64 sums
 * dQ in f32 with float atomics unless CHIMERA_DETERMINISTIC=1 (then, as at
 * head dim 128, a separate dQ kernel recomputes S and dP: bitwise
 * repeatable). The backward's scratch is Delta [B,H,T] f32 and, on the atomic
 * path, dQ [B,T,H,D] f32.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "kernels.h"

static chm_cu_attn attn_of(const chm_tensor *q, const chm_tensor *k, double scale) {
    chm_cu_attn a = {q->shape[0], q->shape[1], q->shape[2], k->shape[2], q->shape[3],
                     (float)scale, q->dtype};
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

/* CHIMERA_DETERMINISTIC=1 (any value but 0): the flash backward's dQ without atomics. */
static bool deterministic(void) {
    const char *v = getenv("CHIMERA_DETERMINISTIC");
    return v && *v && strcmp(v, "0") != 0;
}

chm_status chm_cuda_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                  const chm_tensor *dv, const chm_tensor *dout,
                                  const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                  const chm_tensor *out, const chm_tensor *lse, double scale) {
    const char *op = "attention_bwd";
    chm_status rc = chm_cuda_dtype(be, op, q->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    chm_cu_attn a = attn_of(q, k, scale);
    void *pdq = chm_cuda_ptr(dq), *pdk = chm_cuda_ptr(dk), *pdv = chm_cuda_ptr(dv);
    const void *pdo = chm_cuda_ptr(dout), *pq = chm_cuda_ptr(q), *pk = chm_cuda_ptr(k),
               *pv = chm_cuda_ptr(v);
    const void *ptrs[] = {pdq, pdk, pdv, pdo, pq, pk, pv};
    bool flash = chm_cu_flash_ok(&a, ptrs, 7);
    bool acc = flash && chm_cu_flash_dq_atomic(&a) && !deterministic();
    /* scratch: Delta [B,H,T], then (the atomic dQ path) dQ in f32 at a 16-byte boundary */
    size_t nd = ((size_t)(a.B * a.H * a.T) + 4) & ~(size_t)3;
    size_t nq = acc ? (size_t)(a.B * a.T * a.H * a.D) : 0;
    float *delta;
    rc = chm_cuda_scratch(be, op, (nd + nq) * sizeof(float), (void **)&delta);
    if (rc) return rc;
    cudaStream_t s = chm_cuda_ctx_of(be)->stream;
    const float *pl = chm_cuda_ptr(lse);
    cudaError_t e = chm_cu_attn_delta(delta, pdo, chm_cuda_ptr(out), &a, s);
    if (e == cudaSuccess)
        e = flash ? chm_cu_flash_bwd(pdq, pdk, pdv, pdo, pq, pk, pv, pl, delta,
                                     acc ? delta + nd : NULL, &a, s)
                  : chm_cu_attn_bwd(pdq, pdk, pdv, pdo, pq, pk, pv, pl, delta, &a, s);
    return chm_cuda_check(be, op, e);
}
