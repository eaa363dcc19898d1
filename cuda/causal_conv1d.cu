// causal_conv1d.cu: depthwise causal conv1d over time, forward and backward.
//
// x, out [B,T,C]; w [C,W]; bias [C] optional:
//   pre[b,t,c] = bias[c] + sum_j w[c,j] x[b,t-(W-1)+j,c]  (x = 0 before t = 0),
//   out = silu(pre) when silu, else pre.
// One thread per (b,t,c) element, consecutive threads on consecutive
// channels (coalesced). The backward recomputes pre where SiLU needs it and
// ACCUMULATES: dx by one thread per element (a gather over the W outputs that
// read it); dw and dbias by per-slab partials over the (b,t) rows, added in
// slab order afterwards (deterministic, no atomics). f32 and bf16.
#include "common.cuh"

// pre of element (b,t,c) from the W taps of channel c.
template <typename T>
__device__ __forceinline__ float conv_pre(const T *x, const T *w, const T *bias, int64_t b,
                                          int64_t t, int64_t c, int64_t T_, int64_t C,
                                          int64_t W) {
    float acc = bias ? to_f(bias[c]) : 0.0f;
    for (int64_t j = 0; j < W; j++) {
        int64_t src = t - (W - 1) + j;
        if (src >= 0) acc += to_f(w[c * W + j]) * to_f(x[(b * T_ + src) * C + c]);
    }
    return acc;
}

// dL/dpre at (b,t,c) from dL/dout.
template <typename T>
__device__ __forceinline__ float conv_g(const T *dout, const T *x, const T *w, const T *bias,
                                        int64_t b, int64_t t, int64_t c, int64_t T_, int64_t C,
                                        int64_t W, int silu) {
    float g = to_f(dout[(b * T_ + t) * C + c]);
    if (silu) {
        float pre = conv_pre(x, w, bias, b, t, c, T_, C, W), s = sigmoidf_(pre);
        g *= s * (1.0f + pre * (1.0f - s));
    }
    return g;
}

template <typename T>
__global__ void conv_fwd_kernel(T *out, const T *x, const T *w, const T *bias, int64_t B,
                                int64_t T_, int64_t C, int64_t W, int silu) {
    int64_t n = B * T_ * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % C, bt = i / C, t = bt % T_, b = bt / T_;
        float pre = conv_pre(x, w, bias, b, t, c, T_, C, W);
        out[i] = from_f<T>(silu ? pre * sigmoidf_(pre) : pre);
    }
}

// dx[b,s,c] += sum_j g[b, s+(W-1)-j, c] * w[c,j] over outputs inside [0,T).
template <typename T>
__global__ void conv_dx_kernel(T *dx, const T *dout, const T *x, const T *w, const T *bias,
                               int64_t B, int64_t T_, int64_t C, int64_t W, int silu) {
    int64_t n = B * T_ * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % C, bt = i / C, s = bt % T_, b = bt / T_;
        float acc = 0.0f;
        for (int64_t j = 0; j < W; j++) {
            int64_t t = s + (W - 1) - j;
            if (t < T_)
                acc += conv_g(dout, x, w, bias, b, t, c, T_, C, W, silu) * to_f(w[c * W + j]);
        }
        dx[i] = from_f<T>(to_f(dx[i]) + acc);
    }
}

extern "C" int chm_cu_conv1d_slabs(int64_t rows) {
    int64_t s = (rows + 63) / 64;
    if (s < 1) s = 1;
    if (s > 256) s = 256;
    return (int)s;
}

// grid (ceil(C*(W+1)/128), S): one (c, tap) of one slab of (b,t) rows; tap W is dbias.
template <typename T>
__global__ void conv_dw_kernel(float *part, const T *dout, const T *x, const T *w, const T *bias,
                               int64_t B, int64_t T_, int64_t C, int64_t W, int silu) {
    int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, rows = B * T_;
    int S = gridDim.y, slab = blockIdx.y;
    if (k >= C * (W + 1)) return;
    int64_t c = k / (W + 1), j = k % (W + 1);
    int64_t per = (rows + S - 1) / S, r0 = slab * per, r1 = r0 + per < rows ? r0 + per : rows;
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / T_, t = r % T_, src = t - (W - 1) + j;
        if (j < W && src < 0) continue;
        float g = conv_g(dout, x, w, bias, b, t, c, T_, C, W, silu);
        acc += j == W ? g : g * to_f(x[(b * T_ + src) * C + c]);
    }
    part[(int64_t)slab * C * (W + 1) + k] = acc;
}

template <typename T>
__global__ void conv_finish_kernel(T *dw, T *dbias, const float *part, int S, int64_t C,
                                   int64_t W) {
    int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (k >= C * (W + 1)) return;
    int64_t c = k / (W + 1), j = k % (W + 1);
    float acc = 0.0f;
    for (int s = 0; s < S; s++) acc += part[(int64_t)s * C * (W + 1) + k];
    if (j < W) dw[c * W + j] = from_f<T>(to_f(dw[c * W + j]) + acc);
    else if (dbias) dbias[c] = from_f<T>(to_f(dbias[c]) + acc);
}

extern "C" cudaError_t chm_cu_conv1d_fwd(void *out, const void *x, const void *w,
                                         const void *bias, int64_t B, int64_t T, int64_t C,
                                         int64_t W, bool silu, chm_dtype dt, cudaStream_t s) {
    int64_t n = B * T * C;
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH2(dt, T_,
                     conv_fwd_kernel<T_><<<grid_for(n, 256), 256, 0, s>>>(
                         (T_ *)out, (const T_ *)x, (const T_ *)w, (const T_ *)bias, B, T, C, W,
                         silu ? 1 : 0));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_conv1d_bwd(void *dx, float *part, const void *dout, const void *x,
                                         const void *w, const void *bias, int64_t B, int64_t T,
                                         int64_t C, int64_t W, bool silu, chm_dtype dt,
                                         cudaStream_t s) {
    int64_t n = B * T * C;
    dim3 gdw((unsigned)((C * (W + 1) + 127) / 128), (unsigned)chm_cu_conv1d_slabs(B * T));
    CHM_CU_DISPATCH2(dt, T_, {
        if (n > 0)
            conv_dx_kernel<T_><<<grid_for(n, 256), 256, 0, s>>>(
                (T_ *)dx, (const T_ *)dout, (const T_ *)x, (const T_ *)w, (const T_ *)bias, B, T,
                C, W, silu ? 1 : 0);
        if (C > 0)
            conv_dw_kernel<T_><<<gdw, 128, 0, s>>>(part, (const T_ *)dout, (const T_ *)x,
                                                   (const T_ *)w, (const T_ *)bias, B, T, C, W,
                                                   silu ? 1 : 0);
    });
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_conv1d_bwd_finish(void *dw, void *dbias, const float *part, int S,
                                                int64_t C, int64_t W, chm_dtype dt,
                                                cudaStream_t s) {
    if (C <= 0) return cudaSuccess;
    unsigned g = (unsigned)((C * (W + 1) + 255) / 256);
    CHM_CU_DISPATCH2(dt, T_,
                     conv_finish_kernel<T_><<<g, 256, 0, s>>>((T_ *)dw, (T_ *)dbias, part, S, C,
                                                              W));
    return cudaGetLastError();
}
