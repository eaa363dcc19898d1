// router.cu: MoE router top-k (forward with the dispatch plan, backward) and
// the MoD per-row top-k selection. Same contracts as src/backend/cpu/router.c:
//  - experts are ranked by logit (larger first, ties to the lower index, NaN
//    last); probs are softmax (max-subtracted) or sigmoid; gates are the
//    chosen probs, divided by their sum when renormalize;
//  - the dispatch plan is first come first served in (r, k) order: one block
//    per expert scans the R*K choices in order with a block prefix sum, so
//    the plan is exactly the sequential one;
//  - select_topk: one block per row. Each score becomes a 32-bit key whose
//    unsigned order is the ranking order (NaN lowest, -0 = +0); a radix
//    select (4 passes of 8 bits, shared-memory histograms) finds the K-th
//    largest key tau and how many of the keys equal to tau are taken; the
//    chosen columns (key > tau, then the first ties in index order, which is
//    "ties to the lower index") are written in increasing column order with
//    block prefix sums. Keys live in shared memory when the row fits.
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
    chm_pdl_enter();
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

// One block per expert e: slots in (r, k) order, counts, -1 for empty slots. Each thread
// takes DISPATCH_ITEMS consecutive choices per round, so a round covers DISPATCH_ITEMS *
// blockDim.x choices with one block scan (one choice per thread per scan had made this
// kernel ~130 us of chimera-1b's 16384 x 2 choices on an H100: 128 rounds of barriers).
#define DISPATCH_ITEMS 8
__global__ void dispatch_kernel(int32_t *slot_token, int32_t *slot_ref, int32_t *counts,
                                const int32_t *idx, int64_t RK, int64_t K, int64_t cap) {
    chm_pdl_enter();
    __shared__ int red[33];
    int e = blockIdx.x;
    int64_t base = 0;
    for (int64_t i0 = 0; i0 < RK; i0 += (int64_t)DISPATCH_ITEMS * blockDim.x) {
        int64_t first = i0 + (int64_t)threadIdx.x * DISPATCH_ITEMS;
        int hits = 0, total;
        for (int j = 0; j < DISPATCH_ITEMS; j++)
            hits += (first + j < RK && idx[first + j] == e) ? 1 : 0;
        int64_t pos = base + block_exclusive_scan(hits, red, &total);
        for (int j = 0; j < DISPATCH_ITEMS && hits > 0; j++) {
            int64_t i = first + j;
            if (i >= RK || idx[i] != e) continue;
            if (pos < cap) {
                slot_token[e * cap + pos] = (int32_t)(i / K);
                slot_ref[e * cap + pos] = (int32_t)i;
            }
            pos++;
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
                        chm_launch(route_kernel<T>, g, 128, 0, s, (T *)gates, idx, (T *)probs,
                                   (const T *)logits, R, E, K, sigmoid, renormalize ? 1 : 0));
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    if (E <= 0) return cudaSuccess;
    chm_launch(dispatch_kernel, (unsigned)E, 512, 0, s, slot_token, slot_ref, counts, idx, R * K, K,
               cap);
    return cudaGetLastError();
}

// One thread per row; see src/backend/cpu/router.c for the formulas.
template <typename T>
__global__ void route_bwd_kernel(T *dz, const T *dg, const T *p, const int32_t *ix, int64_t R,
                                 int64_t E, int64_t K, int sigmoid, int renorm, int *flag) {
    chm_pdl_enter();
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
                    chm_launch(route_bwd_kernel<T>, g, 128, 0, s, (T *)dlogits, (const T *)dgates,
                               (const T *)probs, idx, R, E, K, sigmoid, renormalize ? 1 : 0, flag));
    return cudaGetLastError();
}

// Key of a score: unsigned order = ranking order. NaN -> 0 (below -inf),
// -0 -> +0 (equal values tie), else the usual sign-flip of the float bits.
__device__ __forceinline__ uint32_t rank_key(float f) {
    if (isnan(f)) return 0u;
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) == 0u) u = 0u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#define SEL_THREADS 1024  // a row of 2048 scores is two per thread: the op is latency-bound
#define SEL_SMEM_MAX 11264  // keys staged in 44 KiB, under the 48 KiB default with the rest

// Key of column j: from shared memory when the row was staged there.
template <typename T>
__device__ __forceinline__ uint32_t sel_key(const uint32_t *sk, const T *row, int64_t j) {
    return sk ? sk[j] : rank_key(to_f(row[j]));
}

// One radix pass: among keys whose bits above `shift+8` equal *prefix, find
// the 8-bit digit at `shift` holding the *need-th largest key; update
// *prefix and *need (shared). hist is 256 shared ints.
template <typename T>
__device__ void sel_pass(int *hist, uint32_t *prefix, int64_t *need, const uint32_t *sk,
                         const T *row, int64_t C, int shift) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    uint32_t pre = *prefix, hi = shift == 24 ? 0u : ~0u << (shift + 8);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
        uint32_t k = sel_key(sk, row, j);
        if ((k & hi) == pre) atomicAdd(&hist[(k >> shift) & 255u], 1);
    }
    __syncthreads();
    if (threadIdx.x < 32) {  // lane l owns digits 8l..8l+7; count from the top digit down
        int lane = threadIdx.x, sum = 0;
        for (int i = 0; i < 8; i++) sum += hist[lane * 8 + i];
        int64_t suf = sum, nd = *need;  // suf: keys in digits >= 8*lane
        for (int o = 1; o < 32; o <<= 1) {
            int64_t y = __shfl_down_sync(0xffffffffu, suf, o);
            if (lane + o < 32) suf += y;
        }
        int64_t above = suf - sum;  // keys in digits of higher lanes
        __syncwarp();  // every lane has read *need before one lane writes it
        if (above < nd && nd <= suf) {  // exactly one lane
            int64_t c = above;
            for (int i = 7; i >= 0; i--) {
                int h = hist[lane * 8 + i];
                if (c + h >= nd) {
                    *prefix = pre | ((uint32_t)(lane * 8 + i) << shift);
                    *need = nd - c;
                    break;
                }
                c += h;
            }
        }
    }
    __syncthreads();
}

// grid R, block SEL_THREADS, dynamic shared C*4 bytes when C <= SEL_SMEM_MAX (else 0).
template <typename T>
__global__ void select_kernel(int32_t *idx, const T *scores, int64_t C, int64_t K, int staged,
                              int flat) {
    chm_pdl_enter();
    extern __shared__ uint32_t sel_keys[];
    __shared__ int hist[256], red[33];
    __shared__ uint32_t prefix;
    __shared__ int64_t need;
    const T *row = scores + blockIdx.x * C;
    int32_t *out = idx + blockIdx.x * K;
    const uint32_t *sk = staged ? sel_keys : NULL;
    const int64_t shift_out = flat ? (int64_t)blockIdx.x * C : 0; // flat: position in scores
    if (staged)
        for (int64_t j = threadIdx.x; j < C; j += blockDim.x) sel_keys[j] = rank_key(to_f(row[j]));
    if (threadIdx.x == 0) {
        prefix = 0u;
        need = K;
    }
    // (sel_pass starts with a barrier, which also publishes the staged keys)
    for (int shift = 24; shift >= 0; shift -= 8) sel_pass(hist, &prefix, &need, sk, row, C, shift);
    uint32_t tau = prefix;
    int64_t ties = need, base = 0, eq_base = 0;
    for (int64_t j0 = 0; j0 < C; j0 += blockDim.x) {
        int64_t j = j0 + threadIdx.x;
        uint32_t k = j < C ? sel_key(sk, row, j) : 0u;
        int eq = j < C && k == tau, total;
        int64_t eq_pos = eq_base + block_exclusive_scan(eq, red, &total);
        eq_base += total;
        int chosen = j < C && (k > tau || (eq && eq_pos < ties));
        int64_t pos = base + block_exclusive_scan(chosen, red, &total);
        if (chosen) out[pos] = (int32_t)(j + shift_out);
        base += total;
    }
}

extern "C" cudaError_t chm_cu_select_topk(int32_t *idx, const void *scores, int64_t R, int64_t C,
                                          int64_t K, bool flat, chm_dtype dt, cudaStream_t s) {
    if (R <= 0 || K <= 0) return cudaSuccess;
    int staged = C <= SEL_SMEM_MAX;
    size_t smem = staged ? (size_t)C * sizeof(uint32_t) : 0;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(select_kernel<T>, (unsigned)R, SEL_THREADS, smem, s, idx,
                               (const T *)scores, C, K, staged, flat ? 1 : 0));
    return cudaGetLastError();
}
