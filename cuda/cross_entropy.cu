// cross_entropy.cu: fused cross-entropy over the vocabulary, one block per row.
//
// Pass one: each thread keeps an online (max, sum of exp) over its strided
// columns; the block merges them into the row's logsumexp (no softmax is
// stored). loss = lse - z[target]. Pass two writes
// dlogits = grad_scale * (exp(z - lse) - onehot). dlogits may be logits
// itself: z[target] is read before the barrier that precedes pass two, and
// pass two reads each element just before the same thread overwrites it.
// Targets < 0: loss 0 and a zero row. Targets >= V: flagged, loss NaN, no row.
// Rows whose bytes are whole 16-byte vectors (chimera-1b: V 50304 in bf16) move
// 16 bytes per access, and the exponentials are exp2 of pre-scaled values: the
// 256-thread scalar version took 166 us per 333-row chunk on an H100, 7.5x the
// bytes' time at 3 TB/s.
#include "perf.cuh"

#define CE_THREADS 512
#define CE_LOG2E 1.4426950408889634f

// Fold a run of values whose maximum is vmax into the running (m, s): s sums
// exp(v - m) over everything seen. -inf values add nothing; m stays -inf until a
// finite value arrives (so no (-inf) - (-inf)).
__device__ __forceinline__ void ce_rescale(float &m, float &s, float vmax) {
    if (vmax > m) {
        s = m == -INFINITY ? 0.0f : s * exp2f((m - vmax) * CE_LOG2E);
        m = vmax;
    }
}

// This thread's (m, s) over columns [0, V) of row zr: 16-byte loads of W elements when vec.
template <typename T, bool VEC>
__device__ void ce_row_stats(const T *zr, int64_t V, float &m, float &s) {
    m = -INFINITY;
    s = 0.0f;
    if (VEC) {
        const int W = 16 / sizeof(T);
        for (int64_t j = (int64_t)threadIdx.x * W; j < V; j += (int64_t)blockDim.x * W) {
            vec_t<T, W> x = vload<T, W>(zr + j);
            float v[W], vmax = -INFINITY;
#pragma unroll
            for (int i = 0; i < W; i++) v[i] = to_f(x.v[i]), vmax = fmaxf(vmax, v[i]);
            ce_rescale(m, s, vmax);
            if (m == -INFINITY) continue;
#pragma unroll
            for (int i = 0; i < W; i++) s += exp2f((v[i] - m) * CE_LOG2E);
        }
    } else {
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
            float v = to_f(zr[j]);
            ce_rescale(m, s, v);
            if (m != -INFINITY) s += exp2f((v - m) * CE_LOG2E);
        }
    }
}

// dr = scale * (softmax(zr) - onehot(t)); dr may be zr (each element read, then overwritten by
// the same thread).
template <typename T, bool VEC>
__device__ void ce_row_grad(T *dr, const T *zr, int64_t V, int64_t t, float lse, float scale) {
    float l2 = lse * CE_LOG2E;
    if (VEC) {
        const int W = 16 / sizeof(T);
        for (int64_t j = (int64_t)threadIdx.x * W; j < V; j += (int64_t)blockDim.x * W) {
            vec_t<T, W> x = vload<T, W>(zr + j), y;
#pragma unroll
            for (int i = 0; i < W; i++) {
                float p = exp2f(fmaf(to_f(x.v[i]), CE_LOG2E, -l2));
                y.v[i] = from_f<T>(scale * (p - (j + i == t ? 1.0f : 0.0f)));
            }
            vstore<T, W>(dr + j, y);
        }
    } else {
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
            float p = exp2f(fmaf(to_f(zr[j]), CE_LOG2E, -l2));
            dr[j] = from_f<T>(scale * (p - (j == t ? 1.0f : 0.0f)));
        }
    }
}

template <typename T, bool VEC>
__global__ void ce_kernel(float *losses, T *dz, const T *z, const int32_t *targets, int64_t V,
                          float scale, int *flag) {
    __shared__ float red[32];
    __shared__ float zt_s;
    int64_t r = blockIdx.x;
    const T *zr = z + r * V;
    T *dr = dz ? dz + r * V : NULL;
    int64_t t = targets[r];
    if (t < 0) {
        if (threadIdx.x == 0) losses[r] = 0.0f;
        for (int64_t j = threadIdx.x; dr && j < V; j += blockDim.x) dr[j] = from_f<T>(0.0f);
        return;
    }
    if (t >= V) {
        if (threadIdx.x == 0) {
            flag_error(flag, CHM_CU_FLAG_CROSS_ENTROPY, r, t, V);
            losses[r] = NAN;
        }
        return;
    }
    if (threadIdx.x == 0) zt_s = to_f(zr[t]);
    float m, s;
    ce_row_stats<T, VEC>(zr, V, m, s);
    float M = block_max(m, red);
    float S = block_sum(m == -INFINITY ? 0.0f : s * exp2f((m - M) * CE_LOG2E), red);
    float lse = M + logf(S);
    if (threadIdx.x == 0) losses[r] = lse - zt_s;
    if (!dr) return;
    __syncthreads();  // zt_s was read above before any thread overwrites z (aliasing)
    ce_row_grad<T, VEC>(dr, zr, V, t, lse, scale);
}

extern "C" cudaError_t chm_cu_cross_entropy(float *losses, void *dlogits, const void *logits,
                                            const int32_t *targets, int64_t R, int64_t V,
                                            double grad_scale, chm_dtype dt, int *flag,
                                            cudaStream_t s) {
    if (R <= 0) return cudaSuccess;
    // rows of whole 16-byte vectors: V a multiple of 16 bytes' worth and both bases aligned
    bool vec = (V * (int64_t)chm_dtype_size(dt)) % 16 == 0 && ptr_aligned(logits, 16) &&
               ptr_aligned(dlogits, 16);
    if (vec) {
        CHM_CU_DISPATCH(dt, T,
                        ce_kernel<T, true><<<(unsigned)R, CE_THREADS, 0, s>>>(
                            losses, (T *)dlogits, (const T *)logits, targets, V,
                            (float)grad_scale, flag));
    } else {
        CHM_CU_DISPATCH(dt, T,
                        ce_kernel<T, false><<<(unsigned)R, CE_THREADS, 0, s>>>(
                            losses, (T *)dlogits, (const T *)logits, targets, V,
                            (float)grad_scale, flag));
    }
    return cudaGetLastError();
}
