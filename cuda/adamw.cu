// adamw.cu: one fused AdamW step over a flat buffer (decoupled weight decay).
//
// f32 master params and moments, gradients in f32/bf16/f16, an optional
// bf16/f16 copy of the new params (rounded to nearest even from the stored
// f32). One launch covers the whole buffer, so the optimizer can hand it all
// parameters at once. Per element, like src/backend/cpu/adamw.c:
//   g = gs*grad; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   p -= lr * ((m/c1) / (sqrt(v/c2) + eps) + wd * p).
// Each thread moves V = 4 consecutive elements per access where n and the pointers allow
// (16 bytes of each f32 array): the optimizer reads and writes ~28 bytes per parameter,
// chimera-1b's 1.15B at ~1.13x the bytes' time at 3 TB/s with one element per access.
#include "perf.cuh"

template <typename G, typename L, int V>
__global__ void adamw_kernel(float *p, const G *grad, float *m, float *v, L *lowp, int64_t nv,
                             chm_cu_adamw a) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nv;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t k = i * V;
        vec_t<G, V> gv = vload<G, V>(grad + k);
        vec_t<float, V> mv = vload<float, V>(m + k), vv = vload<float, V>(v + k);
        vec_t<float, V> pv = vload<float, V>(p + k);
        vec_t<L, V> lv;
#pragma unroll
        for (int j = 0; j < V; j++) {
            float g = a.grad_scale * to_f(gv.v[j]);
            float mi = a.beta1 * mv.v[j] + (1.0f - a.beta1) * g;
            float vi = a.beta2 * vv.v[j] + (1.0f - a.beta2) * g * g;
            float pi = pv.v[j];
            float upd = (mi / a.c1) / (sqrtf(vi / a.c2) + a.eps) + a.weight_decay * pi;
            mv.v[j] = mi;
            vv.v[j] = vi;
            pv.v[j] = pi - a.lr * upd;
            lv.v[j] = from_f<L>(pv.v[j]);
        }
        vstore<float, V>(m + k, mv);
        vstore<float, V>(v + k, vv);
        vstore<float, V>(p + k, pv);
        if (lowp) vstore<L, V>(lowp + k, lv);
    }
}

template <typename G, typename L>
static void adamw_run(float *p, const G *grad, float *m, float *v, L *lowp, int64_t n,
                      const chm_cu_adamw *a, cudaStream_t s) {
    bool vec = n % 4 == 0 && ptr_aligned(p, 16) && ptr_aligned(m, 16) && ptr_aligned(v, 16) &&
               ptr_aligned(grad, 4 * sizeof(G)) && ptr_aligned(lowp, 4 * sizeof(L));
    if (vec)
        chm_launch(adamw_kernel<G, L, 4>, grid_for(n / 4, 256), 256, 0, s, p, grad, m, v, lowp,
                   n / 4, *a);
    else
        chm_launch(adamw_kernel<G, L, 1>, grid_for(n, 256), 256, 0, s, p, grad, m, v, lowp, n, *a);
}

template <typename G>
static cudaError_t adamw_launch(float *p, const G *grad, float *m, float *v, void *lowp,
                                chm_dtype ldt, int64_t n, const chm_cu_adamw *a, cudaStream_t s) {
    if (lowp && ldt == CHM_F16)
        adamw_run<G, __half>(p, grad, m, v, (__half *)lowp, n, a, s);
    else
        adamw_run<G, bf16>(p, grad, m, v, (bf16 *)lowp, n, a, s);
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
