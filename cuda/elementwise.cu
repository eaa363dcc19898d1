// elementwise.cu: add, scale, axpy and the deterministic column sums
// (sum_rows and the weight-gradient partials of other ops).
//
// Elementwise kernels compute in f32 and round once per element; exact
// aliasing (out == a) is safe because each element is read and written by
// the same thread. Column sums never use atomics: stage one gives every
// (slab of rows, column) its own f32 partial, stage two adds the slabs in a
// fixed order, so results depend only on the shapes.
#include "common.cuh"

template <typename T>
__global__ void add_kernel(T *out, const T *a, const T *b, int64_t n) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}

template <typename T>
__global__ void scale_kernel(T *out, const T *x, float alpha, int64_t n) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = from_f<T>(alpha * to_f(x[i]));
}

template <typename T>
__global__ void axpy_kernel(T *y, const T *x, float alpha, int64_t n) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = from_f<T>(fmaf(alpha, to_f(x[i]), to_f(y[i])));
}

extern "C" cudaError_t chm_cu_add(void *out, const void *a, const void *b, int64_t n,
                                  chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(add_kernel<T>, grid_for(n, 256), 256, 0, s, (T *)out, (const T *)a,
                               (const T *)b, n));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_scale(void *out, const void *x, double alpha, int64_t n,
                                    chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(scale_kernel<T>, grid_for(n, 256), 256, 0, s, (T *)out, (const T *)x,
                               (float)alpha, n));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_axpy(void *y, const void *x, double alpha, int64_t n,
                                   chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(axpy_kernel<T>, grid_for(n, 256), 256, 0, s, (T *)y, (const T *)x,
                               (float)alpha, n));
    return cudaGetLastError();
}

// Rows per slab: a function of R alone, so the summation order is fixed by the shape.
#define COLSUM_ROWS 64

extern "C" int chm_cu_colsum_slabs(int64_t R) {
    int64_t s = (R + COLSUM_ROWS - 1) / COLSUM_ROWS;
    if (s < 1) s = 1;
    if (s > 1024) s = 1024;
    return (int)s;
}

// Rows [r0, r1) of slab `slab` out of S for R rows.
__device__ __forceinline__ void slab_rows(int64_t R, int S, int slab, int64_t *r0, int64_t *r1) {
    int64_t per = (R + S - 1) / S;
    *r0 = slab * per;
    *r1 = *r0 + per < R ? *r0 + per : R;
}

// grid (ceil(C/256), S): thread = one column of one slab.
template <typename T>
__global__ void colsum_partial_kernel(float *part, const T *x, int64_t R, int64_t C) {
    chm_pdl_enter();
    int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int S = gridDim.y, slab = blockIdx.y;
    if (c >= C) return;
    int64_t r0, r1;
    slab_rows(R, S, slab, &r0, &r1);
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; r++) acc += to_f(x[r * C + c]);
    part[(int64_t)slab * C + c] = acc;
}

template <typename T>
__global__ void colsum_finish_kernel(T *out, const float *part, int S, int64_t C) {
    chm_pdl_enter();
    int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int s = 0; s < S; s++) acc += part[(int64_t)s * C + c];
    out[c] = from_f<T>(to_f(out[c]) + acc);
}

extern "C" cudaError_t chm_cu_colsum_partial(float *part, const void *x, int64_t R, int64_t C,
                                             chm_dtype dt, cudaStream_t s) {
    if (C <= 0) return cudaSuccess;
    dim3 grid((unsigned)((C + 255) / 256), (unsigned)chm_cu_colsum_slabs(R));
    CHM_CU_DISPATCH(
        dt, T, chm_launch(colsum_partial_kernel<T>, grid, 256, 0, s, part, (const T *)x, R, C));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_colsum_finish(void *out, chm_dtype dt, const float *part, int S,
                                            int64_t C, cudaStream_t s) {
    if (C <= 0) return cudaSuccess;
    unsigned g = (unsigned)((C + 255) / 256);
    CHM_CU_DISPATCH(dt, T, chm_launch(colsum_finish_kernel<T>, g, 256, 0, s, (T *)out, part, S, C));
    return cudaGetLastError();
}
