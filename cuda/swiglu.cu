// swiglu.cu: SwiGLU, out = silu(gate) * up, and its backward (ACCUMULATES, or writes without
// reading the old gradients when ACC is false):
//   dgate += g * up * s * (1 + gate * (1 - s)),  dup += g * gate * s,  s = sigmoid(gate).
// Elementwise in f32; expf keeps the sigmoid accurate (f32 results are compared
// with the cpu reference at 1e-5). Each thread moves V = 2 elements per access
// (4 bytes for 16-bit storage, 8 for f32) when n is even and every pointer is
// aligned for it; V = 1 otherwise. Exact aliasing stays safe: every element
// is read and written by one thread.
#include "perf.cuh"

template <typename T, int V>
__global__ void swiglu_fwd_kernel(T *out, const T *gate, const T *up, int64_t nv) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nv;
         i += (int64_t)gridDim.x * blockDim.x) {
        vec_t<T, V> gv = vload<T, V>(gate + i * V), uv = vload<T, V>(up + i * V), o;
#pragma unroll
        for (int v = 0; v < V; v++) {
            float g = to_f(gv.v[v]);
            o.v[v] = from_f<T>(g * sigmoidf_(g) * to_f(uv.v[v]));
        }
        vstore<T, V>(out + i * V, o);
    }
}

template <typename T, int V, bool ACC>
__global__ void swiglu_bwd_kernel(T *dgate, T *dup, const T *dout, const T *gate, const T *up,
                                  int64_t nv) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nv;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t k = i * V;
        vec_t<T, V> gv = vload<T, V>(gate + k), uv = vload<T, V>(up + k);
        vec_t<T, V> dv = vload<T, V>(dout + k), dg, du;
        if (ACC) dg = vload<T, V>(dgate + k), du = vload<T, V>(dup + k);
#pragma unroll
        for (int v = 0; v < V; v++) {
            float g = to_f(gv.v[v]), s = sigmoidf_(g), d = to_f(dv.v[v]);
            float a = d * to_f(uv.v[v]) * s * (1.0f + g * (1.0f - s)), b = d * g * s;
            dg.v[v] = from_f<T>(ACC ? to_f(dg.v[v]) + a : a);
            du.v[v] = from_f<T>(ACC ? to_f(du.v[v]) + b : b);
        }
        vstore<T, V>(dgate + k, dg);
        vstore<T, V>(dup + k, du);
    }
}

// Whether n and all of the (up to five) pointers allow V = 2 accesses of T.
template <typename T>
static bool swiglu_pairs(int64_t n, const void *a, const void *b, const void *c, const void *d,
                         const void *e) {
    size_t k = 2 * sizeof(T);
    return n % 2 == 0 && ptr_aligned(a, k) && ptr_aligned(b, k) && ptr_aligned(c, k) &&
           ptr_aligned(d, k) && ptr_aligned(e, k);
}

extern "C" cudaError_t chm_cu_swiglu_fwd(void *out, const void *gate, const void *up, int64_t n,
                                         chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T, {
        if (swiglu_pairs<T>(n, out, gate, up, NULL, NULL))
            swiglu_fwd_kernel<T, 2><<<grid_for(n / 2, 256), 256, 0, s>>>(
                (T *)out, (const T *)gate, (const T *)up, n / 2);
        else
            swiglu_fwd_kernel<T, 1><<<grid_for(n, 256), 256, 0, s>>>(
                (T *)out, (const T *)gate, (const T *)up, n);
    });
    return cudaGetLastError();
}

template <typename T, bool ACC>
static void swiglu_bwd_launch(T *dgate, T *dup, const T *dout, const T *gate, const T *up,
                              int64_t n, cudaStream_t s) {
    if (swiglu_pairs<T>(n, dgate, dup, dout, gate, up))
        swiglu_bwd_kernel<T, 2, ACC><<<grid_for(n / 2, 256), 256, 0, s>>>(dgate, dup, dout, gate,
                                                                          up, n / 2);
    else
        swiglu_bwd_kernel<T, 1, ACC><<<grid_for(n, 256), 256, 0, s>>>(dgate, dup, dout, gate, up,
                                                                      n);
}

extern "C" cudaError_t chm_cu_swiglu_bwd(void *dgate, void *dup, const void *dout,
                                         const void *gate, const void *up, int64_t n,
                                         bool accumulate, chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T, {
        if (accumulate)
            swiglu_bwd_launch<T, true>((T *)dgate, (T *)dup, (const T *)dout, (const T *)gate,
                                       (const T *)up, n, s);
        else
            swiglu_bwd_launch<T, false>((T *)dgate, (T *)dup, (const T *)dout, (const T *)gate,
                                        (const T *)up, n, s);
    });
    return cudaGetLastError();
}
