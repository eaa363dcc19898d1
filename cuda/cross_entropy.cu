// cross_entropy.cu: fused cross-entropy over the vocabulary, one block per row.
//
// Pass one: each thread keeps an online (max, sum of exp) over its strided
// columns; the block merges them into the row's logsumexp (no softmax is
// stored). loss = lse - z[target]. Pass two writes
// dlogits = grad_scale * (exp(z - lse) - onehot). dlogits may be logits
// itself: z[target] is read before the barrier that precedes pass two, and
// pass two reads each element just before the same thread overwrites it.
// Targets < 0: loss 0 and a zero row. Targets >= V: flagged, loss NaN, no row.
#include "common.cuh"

#define CE_THREADS 256

template <typename T>
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
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float v = to_f(zr[j]);
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else if (v != -INFINITY) {
            s += expf(v - m);
        }
    }
    float M = block_max(m, red);
    float S = block_sum(m == -INFINITY ? 0.0f : s * expf(m - M), red);
    float lse = M + logf(S);
    if (threadIdx.x == 0) losses[r] = lse - zt_s;
    if (!dr) return;
    __syncthreads();  // zt_s was read above before any thread overwrites z (aliasing)
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float v = to_f(zr[j]);
        dr[j] = from_f<T>(scale * (expf(v - lse) - (j == t ? 1.0f : 0.0f)));
    }
}

extern "C" cudaError_t chm_cu_cross_entropy(float *losses, void *dlogits, const void *logits,
                                            const int32_t *targets, int64_t R, int64_t V,
                                            double grad_scale, chm_dtype dt, int *flag,
                                            cudaStream_t s) {
    if (R <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    ce_kernel<T><<<(unsigned)R, CE_THREADS, 0, s>>>(
                        losses, (T *)dlogits, (const T *)logits, targets, V, (float)grad_scale,
                        flag));
    return cudaGetLastError();
}
