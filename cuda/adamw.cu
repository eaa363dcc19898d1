// adamw.cu: one fused AdamW step over a flat buffer (decoupled weight decay).
//
// f32 master params and moments, gradients in f32/bf16/f16, an optional
// bf16/f16 copy of the new params (rounded to nearest even from the stored
// f32). One launch covers the whole buffer, so the optimizer can hand it all
// parameters at once. Per element, like src/backend/cpu/adamw.c:
//   g = gs*grad; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   p -= lr * ((m/c1) / (sqrt(v/c2) + eps) + wd * p).
#include "common.cuh"

template <typename G, typename L>
__global__ void adamw_kernel(float *p, const G *grad, float *m, float *v, L *lowp, int64_t n,
                             chm_cu_adamw a) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = a.grad_scale * to_f(grad[i]);
        float mi = a.beta1 * m[i] + (1.0f - a.beta1) * g;
        float vi = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
        float pi = p[i];
        float upd = (mi / a.c1) / (sqrtf(vi / a.c2) + a.eps) + a.weight_decay * pi;
        m[i] = mi;
        v[i] = vi;
        pi -= a.lr * upd;
        p[i] = pi;
        if (lowp) lowp[i] = from_f<L>(pi);
    }
}

template <typename G>
static cudaError_t adamw_launch(float *p, const G *grad, float *m, float *v, void *lowp,
                                chm_dtype ldt, int64_t n, const chm_cu_adamw *a, cudaStream_t s) {
    unsigned g = grid_for(n, 256);
    if (lowp && ldt == CHM_F16)
        adamw_kernel<G, __half><<<g, 256, 0, s>>>(p, grad, m, v, (__half *)lowp, n, *a);
    else
        adamw_kernel<G, bf16><<<g, 256, 0, s>>>(p, grad, m, v, (bf16 *)lowp, n, *a);
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_adamw_step(float *param, const void *grad, chm_dtype gdt, float *m,
                                         float *v, void *lowp, chm_dtype ldt, int64_t n,
                                         const chm_cu_adamw *a, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(gdt, G,
                    return adamw_launch<G>(param, (const G *)grad, m, v, lowp, ldt, n, a, s));
    return cudaSuccess;
}
