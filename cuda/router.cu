// router.cu: MoE router top-k (forward with the dispatch plan, backward) and
// the MoD per-row top-k selection. Same contracts as src/backend/cpu/router.c:
//  - experts are ranked by logit (larger first, ties to the lower index, NaN
//    last); probs are softmax (max-subtracted) or sigmoid; gates are the
//    chosen probs, divided by their sum when renormalize;
//  - the dispatch plan is first come first served in (r, k) order: one block
//    per expert scans the R*K choices in order with a block prefix sum, so
//    the plan is exactly the sequential one;
//  - select_topk ranks every column of a row against all others (O(C^2) per
//    row, in one block) and writes the chosen ones in increasing column order.
#include "common.cuh"

// a ranks strictly before b (larger value, then lower index; NaN last).
__device__ __forceinline__ bool ranks_before(float za, int64_t a, float zb, int64_t b) {
    if (isnan(za) || isnan(zb)) return isnan(zb) && (!isnan(za) || a < b);
    return za > zb || (za == zb && a < b);
}

__device__ __forceinline__ float sigmoid_stable(float z) {
    return z >= 0.0f ? 1.0f / (1.0f + expf(-z)) : expf(z) / (1.0f + expf(z));
}

// One thread per row: probs, idx and gates.
template <typename T>
__global__ void route_kernel(T *gates, int32_t *idx, T *probs, const T *logits, int64_t R,
                             int64_t E, int64_t K, int sigmoid, int renorm) {
    int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= R) return;
    const T *z = logits + r * E;
    float mx = -INFINITY, sum = 0.0f;
    if (!sigmoid) {
        for (int64_t j = 0; j < E; j++) mx = fmaxf(mx, to_f(z[j]));
        for (int64_t j = 0; j < E; j++) sum += expf(to_f(z[j]) - mx);
    }
    for (int64_t j = 0; j < E; j++) {
        float zj = to_f(z[j]);
        probs[r * E + j] = from_f<T>(sigmoid ? sigmoid_stable(zj) : expf(zj - mx) / sum);
    }
    float total = 0.0f;
    int64_t prev = -1;
    for (int64_t k = 0; k < K; k++) {
        int64_t best = -1;
        for (int64_t j = 0; j < E; j++) {
            float zj = to_f(z[j]);
            if (prev >= 0 && !ranks_before(to_f(z[prev]), prev, zj, j)) continue;
            if (best < 0 || ranks_before(zj, j, to_f(z[best]), best)) best = j;
        }
        prev = best;
        idx[r * K + k] = (int32_t)best;
        float zb = to_f(z[best]);
        total += sigmoid ? sigmoid_stable(zb) : expf(zb - mx) / sum;
    }
    float div = renorm ? total : 1.0f;
    for (int64_t k = 0; k < K; k++) {
        float zb = to_f(z[idx[r * K + k]]);
        float p = sigmoid ? sigmoid_stable(zb) : expf(zb - mx) / sum;
        gates[r * K + k] = from_f<T>(p / div);
    }
}

// One block per expert e: slots in (r, k) order, counts, -1 for empty slots.
__global__ void dispatch_kernel(int32_t *slot_token, int32_t *slot_ref, int32_t *counts,
                                const int32_t *idx, int64_t RK, int64_t K, int64_t cap) {
    __shared__ int red[33];
    int e = blockIdx.x;
    int64_t base = 0;
    for (int64_t i0 = 0; i0 < RK; i0 += blockDim.x) {
        int64_t i = i0 + threadIdx.x;
        int hit = (i < RK && idx[i] == e) ? 1 : 0, total;
        int64_t pos = base + block_exclusive_scan(hit, red, &total);
        if (hit && pos < cap) {
            slot_token[e * cap + pos] = (int32_t)(i / K);
            slot_ref[e * cap + pos] = (int32_t)i;
        }
        base += total;
        if (base >= cap) break;  // uniform: every thread sees the same total
    }
    int64_t live = base < cap ? base : cap;
    for (int64_t p = live + threadIdx.x; p < cap; p += blockDim.x)
        slot_token[e * cap + p] = slot_ref[e * cap + p] = -1;
    if (threadIdx.x == 0) counts[e] = (int32_t)live;
}

extern "C" cudaError_t chm_cu_router_topk(void *gates, int32_t *idx, void *probs,
                                          int32_t *slot_token, int32_t *slot_ref,
                                          int32_t *counts, const void *logits, int64_t R,
                                          int64_t E, int64_t K, int64_t cap, int sigmoid,
                                          bool renormalize, chm_dtype dt, cudaStream_t s) {
    if (R > 0) {
        unsigned g = (unsigned)((R + 127) / 128);
        CHM_CU_DISPATCH(dt, T,
                        route_kernel<T><<<g, 128, 0, s>>>((T *)gates, idx, (T *)probs,
                                                          (const T *)logits, R, E, K, sigmoid,
                                                          renormalize ? 1 : 0));
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    if (E <= 0) return cudaSuccess;
    dispatch_kernel<<<(unsigned)E, 256, 0, s>>>(slot_token, slot_ref, counts, idx, R * K, K, cap);
    return cudaGetLastError();
}

// One thread per row; see src/backend/cpu/router.c for the formulas.
template <typename T>
__global__ void route_bwd_kernel(T *dz, const T *dg, const T *p, const int32_t *ix, int64_t R,
                                 int64_t E, int64_t K, int sigmoid, int renorm, int *flag) {
    int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= R) return;
    const int32_t *ir = ix + r * K;
    const T *pr = p + r * E, *dgr = dg + r * K;
    for (int64_t k = 0; k < K; k++)
        if (ir[k] < 0 || ir[k] >= E) {
            flag_error(flag, CHM_CU_FLAG_ROUTER_BWD, r * K + k, ir[k], E);
            return;
        }
    float S = 1.0f, c = 0.0f, dot = 0.0f;
    if (renorm) {
        S = 0.0f;
        for (int64_t k = 0; k < K; k++) S += to_f(pr[ir[k]]);
        for (int64_t k = 0; k < K; k++) c += to_f(dgr[k]) * to_f(pr[ir[k]]) / S;
    }
    for (int64_t k = 0; k < K; k++) dot += (to_f(dgr[k]) - c) / S * to_f(pr[ir[k]]);
    for (int64_t j = 0; j < E; j++) {
        float pj = to_f(pr[j]), dpj = 0.0f;
        for (int64_t k = 0; k < K; k++)
            if (ir[k] == j) dpj += (to_f(dgr[k]) - c) / S;
        float d = sigmoid ? pj * (1.0f - pj) * dpj : pj * (dpj - dot);
        dz[r * E + j] = from_f<T>(to_f(dz[r * E + j]) + d);
    }
}

extern "C" cudaError_t chm_cu_router_topk_bwd(void *dlogits, const void *dgates,
                                              const void *probs, const int32_t *idx, int64_t R,
                                              int64_t E, int64_t K, int sigmoid,
                                              bool renormalize, chm_dtype dt, int *flag,
                                              cudaStream_t s) {
    if (R <= 0) return cudaSuccess;
    unsigned g = (unsigned)((R + 127) / 128);
    CHM_CU_DISPATCH(dt, T,
                    route_bwd_kernel<T><<<g, 128, 0, s>>>((T *)dlogits, (const T *)dgates,
                                                          (const T *)probs, idx, R, E, K, sigmoid,
                                                          renormalize ? 1 : 0, flag));
    return cudaGetLastError();
}

// One block per row: rank of every column, then the chosen ones in column order.
template <typename T>
__global__ void select_kernel(int32_t *idx, const T *scores, int64_t C, int64_t K) {
    __shared__ int red[33];
    const T *row = scores + blockIdx.x * C;
    int32_t *out = idx + blockIdx.x * K;
    int64_t base = 0;
    for (int64_t j0 = 0; j0 < C; j0 += blockDim.x) {
        int64_t j = j0 + threadIdx.x;
        int chosen = 0, total;
        if (j < C) {
            float zj = to_f(row[j]);
            int64_t rank = 0;
            for (int64_t i = 0; i < C && rank < K; i++)
                if (ranks_before(to_f(row[i]), i, zj, j)) rank++;
            chosen = rank < K;
        }
        int64_t pos = base + block_exclusive_scan(chosen, red, &total);
        if (chosen) out[pos] = (int32_t)j;
        base += total;
    }
}

extern "C" cudaError_t chm_cu_select_topk(int32_t *idx, const void *scores, int64_t R, int64_t C,
                                          int64_t K, chm_dtype dt, cudaStream_t s) {
    if (R <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    select_kernel<T><<<(unsigned)R, 256, 0, s>>>(idx, (const T *)scores, C, K));
    return cudaGetLastError();
}
