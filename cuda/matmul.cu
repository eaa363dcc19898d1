// matmul.cu: the small kernels around the cuBLASLt products of
// src/backend/cuda/matmul.c: a bias add (when the product accumulates into
// C, beta != 0) and the fix-ups of the grouped (expert) product.
//
// Grouped products run over the full capacity of every expert because the
// live counts are on the device and the host must not wait for them. The
// fix-ups make the result equal the contract anyway:
//  - plain form: rows >= counts[e] of C must end as beta*C. `save` copies
//    those rows aside before the product, `restore` writes beta*saved after
//    it (beta 0: zeros; no save needed);
//  - trans_a form (weight gradients): the sum over the capacity stops at
//    counts[e], so A and B are copied with the dead rows zeroed (`mask`).
#include "common.cuh"

template <typename T>
__global__ void bias_add_kernel(T *C, const T *bias, int64_t rows, int64_t N) {
    chm_pdl_enter();
    int64_t n = rows * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        C[i] = from_f<T>(to_f(C[i]) + to_f(bias[i % N]));
}

extern "C" cudaError_t chm_cu_bias_add(void *C, const void *bias, int64_t rows, int64_t N,
                                       chm_dtype dt, cudaStream_t s) {
    if (rows * N <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(bias_add_kernel<T>, grid_for(rows * N, 256), 256, 0, s, (T *)C,
                               (const T *)bias, rows, N));
    return cudaGetLastError();
}

// counts[e] clamped into [0, cap], flagging a bad one (each block checks its own e).
__device__ __forceinline__ int64_t live_rows(const int32_t *counts, int64_t e, int64_t cap,
                                             int *flag) {
    int64_t c = counts[e];
    if (c < 0 || c > cap) {
        if (threadIdx.x == 0) flag_error(flag, CHM_CU_FLAG_GROUPED_COUNTS, e, c, cap);
        c = c < 0 ? 0 : cap;
    }
    return c;
}

// grid (row blocks, E): x [E,R,Cc]; mode 0: keep = x, mode 1: x = beta*keep, on rows >= count.
template <typename T>
__global__ void grouped_rows_kernel(T *x, T *keep, const int32_t *counts, int64_t R, int64_t Cc,
                                    float beta, int mode, int *flag) {
    chm_pdl_enter();
    int64_t e = blockIdx.y, live = live_rows(counts, e, R, flag);
    int64_t n = R * Cc, base = e * n;
    for (int64_t i = live * Cc + blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (mode == 0) keep[base + i] = x[base + i];
        else x[base + i] = beta == 0.0f ? from_f<T>(0.0f) : from_f<T>(beta * to_f(keep[base + i]));
    }
}

template <typename T>
__global__ void grouped_mask_kernel(T *dst, const T *src, const int32_t *counts, int64_t R,
                                    int64_t Cc, int rows, int64_t cap, int *flag) {
    chm_pdl_enter();
    int64_t e = blockIdx.y, live = live_rows(counts, e, cap, flag);
    int64_t n = R * Cc, base = e * n;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t pos = rows ? i / Cc : i % Cc;
        dst[base + i] = pos < live ? src[base + i] : from_f<T>(0.0f);
    }
}

static dim3 grouped_grid(int64_t E, int64_t n) {
    unsigned bx = grid_for(n, 256);
    if (bx > 1024) bx = 1024;
    return dim3(bx, (unsigned)E);
}

extern "C" cudaError_t chm_cu_grouped_save(void *keep, const void *x, const int32_t *counts,
                                           int64_t E, int64_t R, int64_t Cc, chm_dtype dt,
                                           int *flag, cudaStream_t s) {
    if (E <= 0 || R * Cc <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(grouped_rows_kernel<T>, grouped_grid(E, R * Cc), 256, 0, s, (T *)x,
                               (T *)keep, counts, R, Cc, 0.0f, 0, flag));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_grouped_restore(void *x, const void *keep, const int32_t *counts,
                                              int64_t E, int64_t R, int64_t Cc, double beta,
                                              chm_dtype dt, int *flag, cudaStream_t s) {
    if (E <= 0 || R * Cc <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(grouped_rows_kernel<T>, grouped_grid(E, R * Cc), 256, 0, s, (T *)x,
                               (T *)keep, counts, R, Cc, (float)beta, 1, flag));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_grouped_mask(void *dst, const void *src, const int32_t *counts,
                                           int64_t E, int64_t R, int64_t Cc, bool rows,
                                           int64_t cap, chm_dtype dt, int *flag,
                                           cudaStream_t s) {
    if (E <= 0 || R * Cc <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(grouped_mask_kernel<T>, grouped_grid(E, R * Cc), 256, 0, s, (T *)dst,
                               (const T *)src, counts, R, Cc, rows ? 1 : 0, cap, flag));
    return cudaGetLastError();
}
