// attention.cu: causal grouped-query attention, the simple kernels (any head
// dim, f32/bf16/f16) and the Delta = rowsum(dout * out) kernel both backward
// paths share. q [B,T,H,D], k/v [B,T,Hk,D], out [B,T,H,D], lse [B,H,T] f32;
// q head h reads kv head h / (H/Hk); query i sees keys j <= i.
//
// These are the correct-first path (f32 runs, odd head dims); bf16 calls with
// D 64 or 128 go to the tensor-core kernels of attention_flash*.cu.
#include "common.cuh"

#define ATT_THREADS 128

// Dot product of an f32 shared row and a storage row of length D.
template <typename T>
__device__ __forceinline__ float dot_row(const float *a, const T *b, int64_t D) {
    float s = 0.0f;
    for (int64_t d = 0; d < D; d++) s = fmaf(a[d], to_f(b[d]), s);
    return s;
}

// grid (T, H, B): one query row; shared: q*scale [D], o [D], p [ATT_THREADS].
template <typename T>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_fwd_kernel(T *out, float *lse, const T *q, const T *k, const T *v, int64_t T_,
                    int64_t H, int64_t Hk, int64_t D, float scale) {
    chm_pdl_enter();
    extern __shared__ float sm[];
    __shared__ float red[32];
    float *qs = sm, *os = qs + D, *ps = os + D;
    int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / Hk);
    const T *qi = q + ((b * T_ + i) * H + h) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        qs[d] = to_f(qi[d]) * scale;
        os[d] = 0.0f;
    }
    __syncthreads();
    float m = -INFINITY, l = 0.0f;
    for (int64_t j0 = 0; j0 <= i; j0 += blockDim.x) {
        int64_t j = j0 + threadIdx.x;
        float s = j <= i ? dot_row(qs, k + ((b * T_ + j) * Hk + g) * D, D) : -INFINITY;
        float mn = fmaxf(m, block_max(s, red));  // finite: key j0 <= i is in every chunk
        float p = j <= i ? expf(s - mn) : 0.0f;
        ps[threadIdx.x] = p;
        float corr = expf(m - mn);
        l = l * corr + block_sum(p, red);  // its barriers also publish ps
        m = mn;
        int64_t cnt = i - j0 + 1 < blockDim.x ? i - j0 + 1 : blockDim.x;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float acc = os[d] * corr;
            for (int64_t jj = 0; jj < cnt; jj++)
                acc = fmaf(ps[jj], to_f(v[((b * T_ + j0 + jj) * Hk + g) * D + d]), acc);
            os[d] = acc;
        }
        __syncthreads();
    }
    T *oi = out + ((b * T_ + i) * H + h) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) oi[d] = from_f<T>(os[d] / l);
    if (threadIdx.x == 0) lse[(b * H + h) * T_ + i] = m + logf(l);
}

// grid (T, H, B): dq of one query row; shared: q [D], dout [D], dq [D], ds [ATT_THREADS].
template <typename T>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_dq_kernel(T *dq, const T *dout, const T *q, const T *k, const T *v, const float *lse,
                   const float *delta, int64_t T_, int64_t H, int64_t Hk, int64_t D,
                   float scale) {
    chm_pdl_enter();
    extern __shared__ float sm[];
    float *qs = sm, *dos = qs + D, *dqs = dos + D, *ps = dqs + D;
    int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / Hk);
    int64_t row = (b * T_ + i) * H + h;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        qs[d] = to_f(q[row * D + d]);
        dos[d] = to_f(dout[row * D + d]);
        dqs[d] = 0.0f;
    }
    float li = lse[(b * H + h) * T_ + i], di = delta[(b * H + h) * T_ + i];
    __syncthreads();
    for (int64_t j0 = 0; j0 <= i; j0 += blockDim.x) {
        int64_t j = j0 + threadIdx.x;
        float ds = 0.0f;
        if (j <= i) {
            int64_t kv = ((b * T_ + j) * Hk + g) * D;
            float p = expf(scale * dot_row(qs, k + kv, D) - li);
            ds = p * (dot_row(dos, v + kv, D) - di);
        }
        ps[threadIdx.x] = ds;
        __syncthreads();
        int64_t cnt = i - j0 + 1 < blockDim.x ? i - j0 + 1 : blockDim.x;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float acc = dqs[d];
            for (int64_t jj = 0; jj < cnt; jj++)
                acc = fmaf(ps[jj], to_f(k[((b * T_ + j0 + jj) * Hk + g) * D + d]), acc);
            dqs[d] = acc;
        }
        __syncthreads();
    }
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
        dq[row * D + d] = from_f<T>(to_f(dq[row * D + d]) + scale * dqs[d]);
}

// grid (T, Hk, B): dk, dv of one key row over every q head of its group.
// shared: k [D], v [D], dk [D], dv [D], p [ATT_THREADS], ds [ATT_THREADS].
template <typename T>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_dkdv_kernel(T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v,
                     const float *lse, const float *delta, int64_t T_, int64_t H, int64_t Hk,
                     int64_t D, float scale) {
    chm_pdl_enter();
    extern __shared__ float sm[];
    float *ks = sm, *vs = ks + D, *dks = vs + D, *dvs = dks + D, *pp = dvs + D,
          *pd = pp + blockDim.x;
    int64_t j = blockIdx.x, g = blockIdx.y, b = blockIdx.z, rep = H / Hk;
    int64_t krow = ((b * T_ + j) * Hk + g) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        ks[d] = to_f(k[krow + d]);
        vs[d] = to_f(v[krow + d]);
        dks[d] = dvs[d] = 0.0f;
    }
    __syncthreads();
    for (int64_t h = g * rep; h < (g + 1) * rep; h++)
        for (int64_t i0 = j; i0 < T_; i0 += blockDim.x) {
            int64_t i = i0 + threadIdx.x;
            float p = 0.0f, ds = 0.0f;
            if (i < T_) {
                int64_t qr = ((b * T_ + i) * H + h) * D, st = (b * H + h) * T_ + i;
                p = expf(scale * dot_row(ks, q + qr, D) - lse[st]);
                ds = p * (dot_row(vs, dout + qr, D) - delta[st]);
            }
            pp[threadIdx.x] = p;
            pd[threadIdx.x] = ds;
            __syncthreads();
            int64_t cnt = T_ - i0 < blockDim.x ? T_ - i0 : blockDim.x;
            for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
                float av = dvs[d], ak = dks[d];
                for (int64_t ii = 0; ii < cnt; ii++) {
                    int64_t qr = ((b * T_ + i0 + ii) * H + h) * D + d;
                    av = fmaf(pp[ii], to_f(dout[qr]), av);
                    ak = fmaf(pd[ii], to_f(q[qr]), ak);
                }
                dvs[d] = av;
                dks[d] = ak;
            }
            __syncthreads();
        }
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        dk[krow + d] = from_f<T>(to_f(dk[krow + d]) + scale * dks[d]);
        dv[krow + d] = from_f<T>(to_f(dv[krow + d]) + dvs[d]);
    }
}

// One warp per (b, t, h) row: delta [B,H,T] = sum_d dout * out.
template <typename T>
__global__ void attn_delta_kernel(float *delta, const T *dout, const T *out, int64_t B,
                                  int64_t T_, int64_t H, int64_t D) {
    chm_pdl_enter();
    int64_t rows = B * T_ * H;
    int lane = threadIdx.x & 31;
    for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; r < rows;
         r += ((int64_t)gridDim.x * blockDim.x) >> 5) {
        float s = 0.0f;
        for (int64_t d = lane; d < D; d += 32)
            s = fmaf(to_f(dout[r * D + d]), to_f(out[r * D + d]), s);
        s = warp_sum(s);
        int64_t h = r % H, bt = r / H, t = bt % T_, b = bt / T_;
        if (lane == 0) delta[(b * H + h) * T_ + t] = s;
    }
}

// The same for bf16 rows of D = 8G (G 8 or 16, rows 16-byte aligned): G lanes
// per row, one 16-byte load of each tensor per lane, so a warp reads whole
// rows at full width (the flash path's Delta: D 64 or 128).
template <int G>
__global__ void attn_delta_bf16_kernel(float *delta, const bf16 *dout, const bf16 *out,
                                       int64_t rows, int64_t T_, int64_t H) {
    chm_pdl_enter();
    int64_t n = rows * G, stride = (int64_t)gridDim.x * blockDim.x;
    // g0 is uniform in the block, so every lane of a warp takes the shuffles
    for (int64_t g0 = (int64_t)blockIdx.x * blockDim.x; g0 < n; g0 += stride) {
        int64_t gid = g0 + threadIdx.x, r = gid / G;
        float s = 0.0f;
        if (gid < n) {
            uint4 x = ((const uint4 *)dout)[gid], y = ((const uint4 *)out)[gid];
            const __nv_bfloat162 *px = (const __nv_bfloat162 *)&x, *py = (const __nv_bfloat162 *)&y;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 fx = __bfloat1622float2(px[i]), fy = __bfloat1622float2(py[i]);
                s = fmaf(fx.x, fy.x, fmaf(fx.y, fy.y, s));
            }
        }
#pragma unroll
        for (int o = G / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (gid < n && gid % G == 0) {
            int64_t h = r % H, bt = r / H, t = bt % T_, b = bt / T_;
            delta[(b * H + h) * T_ + t] = s;
        }
    }
}

static dim3 attn_grid(const chm_cu_attn *a, int64_t heads) {
    return dim3((unsigned)a->T, (unsigned)heads, (unsigned)a->B);
}

// (Dynamic shared memory of the simple kernels grows with D: chm_allow_smem opts in above 48 KB.)
extern "C" cudaError_t chm_cu_attn_fwd(void *out, float *lse, const void *q, const void *k,
                                       const void *v, const chm_cu_attn *a, cudaStream_t s) {
    if (a->B * a->T * a->H <= 0) return cudaSuccess;
    size_t sm = (size_t)(2 * a->D + ATT_THREADS) * sizeof(float);
    CHM_CU_DISPATCH(a->dt, T, {
        cudaError_t e = chm_allow_smem(attn_fwd_kernel<T>, sm);
        if (e != cudaSuccess) return e;
        chm_launch(attn_fwd_kernel<T>, attn_grid(a, a->H), ATT_THREADS, sm, s, (T *)out, lse,
                   (const T *)q, (const T *)k, (const T *)v, a->T, a->H, a->Hk, a->D, a->scale);
    });
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_attn_bwd(void *dq, void *dk, void *dv, const void *dout,
                                       const void *q, const void *k, const void *v,
                                       const float *lse, const float *delta,
                                       const chm_cu_attn *a, cudaStream_t s) {
    if (a->B * a->T * a->H <= 0) return cudaSuccess;
    size_t smq = (size_t)(3 * a->D + ATT_THREADS) * sizeof(float);
    size_t smk = (size_t)(4 * a->D + 2 * ATT_THREADS) * sizeof(float);
    CHM_CU_DISPATCH(a->dt, T, {
        cudaError_t e = chm_allow_smem(attn_dq_kernel<T>, smq);
        if (e == cudaSuccess) e = chm_allow_smem(attn_dkdv_kernel<T>, smk);
        if (e != cudaSuccess) return e;
        chm_launch(attn_dq_kernel<T>, attn_grid(a, a->H), ATT_THREADS, smq, s, (T *)dq,
                   (const T *)dout, (const T *)q, (const T *)k, (const T *)v, lse, delta, a->T,
                   a->H, a->Hk, a->D, a->scale);
        chm_launch(attn_dkdv_kernel<T>, attn_grid(a, a->Hk), ATT_THREADS, smk, s, (T *)dk, (T *)dv,
                   (const T *)dout, (const T *)q, (const T *)k, (const T *)v, lse, delta, a->T,
                   a->H, a->Hk, a->D, a->scale);
    });
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_attn_delta(float *delta, const void *dout, const void *out,
                                         const chm_cu_attn *a, cudaStream_t s) {
    int64_t rows = a->B * a->T * a->H;
    if (rows <= 0) return cudaSuccess;
    bool vec = a->dt == CHM_BF16 && (a->D == 64 || a->D == 128) &&
               ((uintptr_t)dout & 15) == 0 && ((uintptr_t)out & 15) == 0;
    if (vec && a->D == 64)
        chm_launch(attn_delta_bf16_kernel<8>, grid_for(rows * 8, 256), 256, 0, s, delta,
                   (const bf16 *)dout, (const bf16 *)out, rows, a->T, a->H);
    else if (vec)
        chm_launch(attn_delta_bf16_kernel<16>, grid_for(rows * 16, 256), 256, 0, s, delta,
                   (const bf16 *)dout, (const bf16 *)out, rows, a->T, a->H);
    if (vec) return cudaGetLastError();
    CHM_CU_DISPATCH(a->dt, T,
                    chm_launch(attn_delta_kernel<T>, grid_for(rows * 32, 256), 256, 0, s, delta,
                               (const T *)dout, (const T *)out, a->B, a->T, a->H, a->D));
    return cudaGetLastError();
}

extern "C" bool chm_cu_flash_ok(const chm_cu_attn *a, const void *const *ptrs, int nptrs) {
    if (a->dt != CHM_BF16 || (a->D != 64 && a->D != 128)) return false;
    if (a->T > 65535LL * 64) return false;  // tiles of 64+ rows in grid.z (mma.cuh: fa_grid)
    if (!(a->scale > 0.0f)) return false;  // the forward's running max is in raw score units
    for (int i = 0; i < nptrs; i++)
        if (ptrs[i] && ((uintptr_t)ptrs[i] & 15) != 0) return false;
    return true;
}
