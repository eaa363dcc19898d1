// rmsnorm.cu: RMSNorm over the last dim, forward and backward.
//
// x [R,C], w [C], rstd [R] f32 (the stats dtype of 16-bit and f32 tensors):
//   rstd = 1/sqrt(mean(x^2) + eps), out = x * rstd * w.
// Backward (ACCUMULATES), g = dout:
//   dx += rstd*w*g - x * rstd^3/C * sum_j g_j w_j x_j
//   dw += sum_r g x rstd: per-slab partials here, added in slab order by
//   chm_cu_colsum_finish (deterministic, no atomics).
// One warp per row; rows are independent.
#include "common.cuh"

#define RMS_WARPS 8

template <typename T>
__global__ void rmsnorm_fwd_kernel(T *out, float *rstd, const T *x, const T *w, int64_t R,
                                   int64_t C, float eps) {
    int64_t r = blockIdx.x * (int64_t)RMS_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    const T *xr = x + r * C;
    float ss = 0.0f;
    for (int64_t c = lane; c < C; c += 32) {
        float v = to_f(xr[c]);
        ss = fmaf(v, v, ss);
    }
    ss = warp_sum(ss);
    float rs = 1.0f / sqrtf(ss / (float)C + eps);
    if (lane == 0) rstd[r] = rs;
    for (int64_t c = lane; c < C; c += 32)
        out[r * C + c] = from_f<T>(to_f(xr[c]) * rs * to_f(w[c]));
}

template <typename T>
__global__ void rmsnorm_dx_kernel(T *dx, const T *g, const T *x, const T *w, const float *rstd,
                                  int64_t R, int64_t C) {
    int64_t r = blockIdx.x * (int64_t)RMS_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    const T *gr = g + r * C, *xr = x + r * C;
    float dot = 0.0f;
    for (int64_t c = lane; c < C; c += 32) dot += to_f(gr[c]) * to_f(w[c]) * to_f(xr[c]);
    dot = warp_sum(dot);
    float rs = rstd[r], coef = rs * rs * rs * dot / (float)C;
    for (int64_t c = lane; c < C; c += 32) {
        float v = to_f(dx[r * C + c]) + rs * to_f(w[c]) * to_f(gr[c]) - coef * to_f(xr[c]);
        dx[r * C + c] = from_f<T>(v);
    }
}

// grid (ceil(C/256), S): the dw partial of one slab of rows for one column.
template <typename T>
__global__ void rmsnorm_dw_kernel(float *part, const T *g, const T *x, const float *rstd,
                                  int64_t R, int64_t C) {
    int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int S = gridDim.y, slab = blockIdx.y;
    if (c >= C) return;
    int64_t per = (R + S - 1) / S, r0 = slab * per, r1 = r0 + per < R ? r0 + per : R;
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; r++) acc += to_f(g[r * C + c]) * to_f(x[r * C + c]) * rstd[r];
    part[(int64_t)slab * C + c] = acc;
}

extern "C" cudaError_t chm_cu_rmsnorm_fwd(void *out, float *rstd, const void *x, const void *w,
                                          int64_t R, int64_t C, double eps, chm_dtype dt,
                                          cudaStream_t s) {
    if (R <= 0) return cudaSuccess;
    unsigned g = (unsigned)((R + RMS_WARPS - 1) / RMS_WARPS);
    CHM_CU_DISPATCH(dt, T,
                    rmsnorm_fwd_kernel<T><<<g, RMS_WARPS * 32, 0, s>>>(
                        (T *)out, rstd, (const T *)x, (const T *)w, R, C, (float)eps));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_rmsnorm_bwd(void *dx, float *part, const void *dout, const void *x,
                                          const void *w, const float *rstd, int64_t R, int64_t C,
                                          chm_dtype dt, cudaStream_t s) {
    dim3 gdw((unsigned)((C + 255) / 256), (unsigned)chm_cu_colsum_slabs(R));
    unsigned g = (unsigned)((R + RMS_WARPS - 1) / RMS_WARPS);
    CHM_CU_DISPATCH(dt, T, {
        if (R > 0)
            rmsnorm_dx_kernel<T><<<g, RMS_WARPS * 32, 0, s>>>(
                (T *)dx, (const T *)dout, (const T *)x, (const T *)w, rstd, R, C);
        rmsnorm_dw_kernel<T><<<gdw, 256, 0, s>>>(part, (const T *)dout, (const T *)x, rstd, R, C);
    });
    return cudaGetLastError();
}
