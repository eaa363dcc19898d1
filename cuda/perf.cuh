// perf.cuh: helpers of the bandwidth-bound kernels (causal_conv1d.cu,
// rmsnorm.cu): V consecutive storage elements moved as one 4/8/16-byte
// access, and the deterministic finish that adds per-slab f32 partials in a
// fixed order with a whole block per group of columns.
#ifndef CHIMERA_CUDA_PERF_CUH
#define CHIMERA_CUDA_PERF_CUH

#include "common.cuh"

// V consecutive elements of storage type T; aligned so that a load or store
// of the whole struct is one vector access.
template <typename T, int V> struct alignas(sizeof(T) * V) vec_t {
    T v[V];
};

template <typename T, int V>
__device__ __forceinline__ vec_t<T, V> vload(const T *p) {
    return *reinterpret_cast<const vec_t<T, V> *>(p);
}
template <typename T, int V>
__device__ __forceinline__ void vstore(T *p, const vec_t<T, V> &a) {
    *reinterpret_cast<vec_t<T, V> *>(p) = a;
}

// Whether p may be accessed `bytes` at a time (NULL counts as aligned).
static inline bool ptr_aligned(const void *p, size_t bytes) {
    return ((uintptr_t)p % bytes) == 0;
}

// Finish block shape: FIN_X columns, FIN_Y groups of slabs.
#define FIN_X 32
#define FIN_Y 32

// Sum over s of part[s*N + n] for n = blockIdx.x*FIN_X + threadIdx.x, in a
// fixed order: group y adds its contiguous run of slabs in increasing s, then
// thread y == 0 adds the groups in increasing y. The order depends only on S,
// so the result is deterministic. Block (FIN_X, FIN_Y); every thread must
// call it (it synchronises); the sum is valid in threads with y == 0.
__device__ __forceinline__ float slab_sum(const float *part, int S, int64_t N, int64_t n) {
    __shared__ float red[FIN_Y][FIN_X + 1];
    int per = (S + FIN_Y - 1) / FIN_Y, s0 = (int)threadIdx.y * per;
    int s1 = s0 + per < S ? s0 + per : S;
    float acc = 0.0f;
    if (n < N)
        for (int s = s0; s < s1; s++) acc += part[(int64_t)s * N + n];
    red[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    float tot = 0.0f;
    if (threadIdx.y == 0)
        for (int y = 0; y < FIN_Y; y++) tot += red[y][threadIdx.x];
    return tot;
}

#endif
