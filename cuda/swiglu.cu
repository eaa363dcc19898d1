// swiglu.cu: SwiGLU, out = silu(gate) * up, and its backward (ACCUMULATES):
//   dgate += g * up * s * (1 + gate * (1 - s)),  dup += g * gate * s,  s = sigmoid(gate).
// Elementwise in f32; expf keeps the sigmoid accurate (f32 results are compared
// with the cpu reference at 1e-5).
#include "common.cuh"

template <typename T>
__global__ void swiglu_fwd_kernel(T *out, const T *gate, const T *up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = to_f(gate[i]);
        out[i] = from_f<T>(g * sigmoidf_(g) * to_f(up[i]));
    }
}

template <typename T>
__global__ void swiglu_bwd_kernel(T *dgate, T *dup, const T *dout, const T *gate, const T *up,
                                  int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = to_f(gate[i]), s = sigmoidf_(g), d = to_f(dout[i]);
        dgate[i] = from_f<T>(to_f(dgate[i]) + d * to_f(up[i]) * s * (1.0f + g * (1.0f - s)));
        dup[i] = from_f<T>(to_f(dup[i]) + d * g * s);
    }
}

extern "C" cudaError_t chm_cu_swiglu_fwd(void *out, const void *gate, const void *up, int64_t n,
                                         chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    swiglu_fwd_kernel<T><<<grid_for(n, 256), 256, 0, s>>>(
                        (T *)out, (const T *)gate, (const T *)up, n));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_swiglu_bwd(void *dgate, void *dup, const void *dout,
                                         const void *gate, const void *up, int64_t n,
                                         chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    swiglu_bwd_kernel<T><<<grid_for(n, 256), 256, 0, s>>>(
                        (T *)dgate, (T *)dup, (const T *)dout, (const T *)gate, (const T *)up,
                        n));
    return cudaGetLastError();
}
