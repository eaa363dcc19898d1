// rows.cu: row moves: embedding lookup, gather_rows, and the deterministic
// scatter-add behind embedding_bwd and scatter_add_rows.
//
// Scatter-add without float atomics: the (index, m) pairs are sorted by index
// with cub's stable radix sort (so equal indices keep increasing m), then one
// block per run of equal indices sums the run's rows in that order, in f32,
// and adds the sum into the target row once. The result depends only on the
// data. Invalid indices go to a sentinel key past the last row and are skipped.
// Rows move VW = 16 / sizeof(T) elements per access where C and the pointers
// allow (chimera-1b's MoE and MoD rows on an H100: 2-byte accesses had kept the
// row kernels at a fraction of the bandwidth); the sums keep their order.
// Callers that know no index repeats more than a few times (scatter_add_rows' max_repeat)
// take chm_cu_scatter_add_bounded instead: the same sums, no sort (end of this file).
#include <limits.h>

#include <cub/device/device_radix_sort.cuh>

#include "perf.cuh"

template <typename T>
__global__ void embedding_fwd_kernel(T *out, const int32_t *ids, const T *table, int64_t R,
                                     int64_t V, int64_t C, int *flag) {
    chm_pdl_enter();
    for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
        int64_t id = ids[r];
        bool ok = id >= 0 && id < V;
        if (!ok && threadIdx.x == 0) flag_error(flag, CHM_CU_FLAG_EMBEDDING_FWD, r, id, V);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            out[r * C + c] = ok ? table[id * C + c] : from_f<T>(0.0f);
    }
}

// V elements per access (C % V == 0 and 16-byte aligned rows when V > 1).
template <typename T, int V>
__global__ void gather_kernel(T *out, const T *x, const int32_t *idx, int64_t M, int64_t R,
                              int64_t C, int *flag) {
    chm_pdl_enter();
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        int64_t i = idx[m];
        if (i >= R && threadIdx.x == 0) flag_error(flag, CHM_CU_FLAG_GATHER_ROWS, m, i, R);
        bool ok = i >= 0 && i < R;
        for (int64_t c = threadIdx.x * V; c < C; c += blockDim.x * V) {
            vec_t<T, V> v;
            if (ok) v = vload<T, V>(x + i * C + c);
            else
#pragma unroll
                for (int k = 0; k < V; k++) v.v[k] = from_f<T>(0.0f);
            vstore<T, V>(out + m * C + c, v);
        }
    }
}

// Elements per 16-byte access of T, when rows of C elements at a, b, c (NULL: skipped) allow it.
template <typename T>
static int row_vec(int64_t C, const void *a, const void *b, const void *c) {
    const int v = 16 / (int)sizeof(T);
    bool ok = C % v == 0 && ptr_aligned(a, 16) && ptr_aligned(b, 16) && ptr_aligned(c, 16);
    return ok ? v : 1;
}

static unsigned row_grid(int64_t rows) {
    return (unsigned)(rows < 65535 ? (rows > 0 ? rows : 1) : 65535);
}

extern "C" cudaError_t chm_cu_embedding_fwd(void *out, const int32_t *ids, const void *table,
                                            int64_t R, int64_t V, int64_t C, chm_dtype dt,
                                            int *flag, cudaStream_t s) {
    if (R <= 0 || C <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T,
                    chm_launch(embedding_fwd_kernel<T>, row_grid(R), 128, 0, s, (T *)out, ids,
                               (const T *)table, R, V, C, flag));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_gather_rows(void *out, const void *x, const int32_t *idx,
                                          int64_t M, int64_t R, int64_t C, chm_dtype dt,
                                          int *flag, cudaStream_t s) {
    if (M <= 0 || C <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T, {
        if (row_vec<T>(C, out, x, NULL) > 1)
            chm_launch(gather_kernel<T, 16 / sizeof(T)>, row_grid(M), 128, 0, s, (T *)out,
                       (const T *)x, idx, M, R, C, flag);
        else
            chm_launch(gather_kernel<T, 1>, row_grid(M), 128, 0, s, (T *)out, (const T *)x, idx, M,
                       R, C, flag);
    });
    return cudaGetLastError();
}

// ---- scatter-add ----

// Bits needed for keys in [0, rows] (rows itself is the "skip" sentinel).
static int key_bits(int64_t rows) {
    int b = 1;
    while (b < 31 && ((int64_t)1 << b) <= rows) b++;
    return b;
}

// The scratch layout: keys, sorted keys, values, sorted values (M ints each), then cub's.
static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

static size_t cub_bytes(int64_t M, int64_t rows) {
    size_t bytes = 0;
    cub::DeviceRadixSort::SortPairs(NULL, bytes, (const int *)NULL, (int *)NULL,
                                    (const int *)NULL, (int *)NULL, (int)M, 0, key_bits(rows));
    return bytes;
}

extern "C" size_t chm_cu_scatter_scratch(int64_t M, int64_t rows) {
    if (M <= 0) return 0;
    return 4 * align256((size_t)M * sizeof(int)) + align256(cub_bytes(M, rows));
}

__global__ void scatter_keys_kernel(int *keys, int *vals, const int32_t *idx, int64_t M,
                                    int64_t rows, int neg_is_error, int fop, int *flag) {
    chm_pdl_enter();
    for (int64_t m = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; m < M;
         m += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx[m];
        bool bad = i >= rows || (neg_is_error && i < 0);
        if (bad) flag_error(flag, fop, m, i, rows);
        keys[m] = (bad || i < 0) ? (int)rows : (int)i;
        vals[m] = (int)m;
    }
}

// The arithmetic both scatter paths share (so that they agree bitwise): a target row's
// sources are summed in f32 in increasing m, w[m] * x[m] each, and the sum is added to the
// row once.
template <typename T, int V>
__device__ __forceinline__ void scatter_acc(float (&acc)[V], const T *x, const T *w, int64_t m,
                                            int64_t C, int64_t c) {
    float wm = w ? to_f(w[m]) : 1.0f;
    vec_t<T, V> xv = vload<T, V>(x + m * C + c);
#pragma unroll
    for (int k = 0; k < V; k++) acc[k] += wm * to_f(xv.v[k]);
}

template <typename T, int V>
__device__ __forceinline__ void scatter_add_to(T *o, const float (&acc)[V]) {
    vec_t<T, V> ov = vload<T, V>(o);
#pragma unroll
    for (int k = 0; k < V; k++) ov.v[k] = from_f<T>(to_f(ov.v[k]) + acc[k]);
    vstore<T, V>(o, ov);
}

// One block per sorted position p that starts a run of equal keys: the run's
// rows summed in increasing m, then added to the target row; V elements per access.
template <typename T, int V>
__global__ void scatter_runs_kernel(T *out, const T *x, const T *w, const int *keys,
                                    const int *vals, int64_t M, int64_t rows, int64_t C) {
    chm_pdl_enter();
    for (int64_t p = blockIdx.x; p < M; p += gridDim.x) {
        int key = keys[p];
        if (key >= rows || (p > 0 && keys[p - 1] == key)) continue;
        int64_t end = p + 1;
        while (end < M && keys[end] == key) end++;
        for (int64_t c = threadIdx.x * V; c < C; c += blockDim.x * V) {
            float acc[V];
#pragma unroll
            for (int k = 0; k < V; k++) acc[k] = 0.0f;
            for (int64_t q = p; q < end; q++) scatter_acc<T, V>(acc, x, w, vals[q], C, c);
            scatter_add_to<T, V>(out + (int64_t)key * C + c, acc);
        }
    }
}

extern "C" cudaError_t chm_cu_scatter_add(void *out, const void *x, const int32_t *idx,
                                          const void *w, int64_t M, int64_t rows, int64_t C,
                                          chm_dtype dt, bool neg_is_error, chm_cu_flag_op fop,
                                          void *scratch, size_t scratch_bytes, int *flag,
                                          cudaStream_t s) {
    if (M <= 0) return cudaSuccess;
    size_t a = align256((size_t)M * sizeof(int));
    char *base = (char *)scratch;
    int *keys = (int *)base, *keys2 = (int *)(base + a), *vals = (int *)(base + 2 * a),
        *vals2 = (int *)(base + 3 * a);
    void *tmp = base + 4 * a;
    size_t tmp_bytes = scratch_bytes - 4 * a;
    chm_launch(scatter_keys_kernel, grid_for(M, 256), 256, 0, s, keys, vals, idx, M, rows,
               neg_is_error ? 1 : 0, (int)fop, flag);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    e = cub::DeviceRadixSort::SortPairs(tmp, tmp_bytes, keys, keys2, vals, vals2, (int)M, 0,
                                        key_bits(rows), s);
    if (e != cudaSuccess) return e;
    if (C <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T, {
        if (row_vec<T>(C, out, x, NULL) > 1)
            chm_launch(scatter_runs_kernel<T, 16 / sizeof(T)>, row_grid(M), 128, 0, s, (T *)out,
                       (const T *)x, (const T *)w, keys2, vals2, M, rows, C);
        else
            chm_launch(scatter_runs_kernel<T, 1>, row_grid(M), 128, 0, s, (T *)out, (const T *)x,
                       (const T *)w, keys2, vals2, M, rows, C);
    });
    return cudaGetLastError();
}

// ---- scatter-add with a bounded repeat (no sort) ----
//
// When no index occurs more than r times (MoE's top-k slots of a token, MoD's distinct
// tokens), the radix sort, which took more device time than the sums themselves in
// chimera-1b's step (five small launches a call), is not needed: each target row lists its
// sources in r slots (an int atomic picks the slot, so the list's order varies from run to
// run), and the row's block puts them in increasing m before summing. The sums are those of
// scatter_runs_kernel, in the same order.

static int bounded_slots(int r) { return r <= 1 ? 1 : r <= 2 ? 2 : r <= 4 ? 4 : 8; }

extern "C" size_t chm_cu_scatter_bounded_scratch(int64_t rows, int r) {
    if (rows <= 0) return 0;
    return align256((size_t)rows * sizeof(int)) +
           align256((size_t)rows * (size_t)bounded_slots(r) * sizeof(int));
}

// cnt [rows] (zeroed before), list [rows, R]: source m into a free slot of row idx[m].
__global__ void scatter_list_kernel(int *cnt, int *list, const int32_t *idx, int64_t M,
                                    int64_t rows, int R, int r, int fop, int *flag) {
    chm_pdl_enter();
    for (int64_t m = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; m < M;
         m += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx[m];
        if (i >= rows) flag_error(flag, fop, m, i, rows);
        if (i < 0 || i >= rows) continue;
        int slot = atomicAdd(&cnt[i], 1);
        if (slot < r) list[i * R + slot] = (int)m;
        else if (slot == r) flag_error(flag, CHM_CU_FLAG_SCATTER_REPEAT, i, r + 1, r);
    }
}

// One block per target row: its (at most R) sources sorted by m in registers, summed, added.
template <typename T, int V, int R>
__global__ void scatter_bounded_kernel(T *out, const T *x, const T *w, const int *cnt,
                                       const int *list, int64_t rows, int64_t C, int r) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
        int n = cnt[i];
        if (n == 0) continue;
        n = n < r ? n : r; /* more were flagged: sum those listed */
        int src[R];
#pragma unroll
        for (int q = 0; q < R; q++) src[q] = q < n ? list[i * R + q] : INT_MAX;
#pragma unroll
        for (int pass = 0; pass < R; pass++) /* odd-even transposition sort */
#pragma unroll
            for (int q = pass & 1; q + 1 < R; q += 2) {
                int a = src[q], b = src[q + 1];
                src[q] = min(a, b);
                src[q + 1] = max(a, b);
            }
        for (int64_t c = threadIdx.x * V; c < C; c += blockDim.x * V) {
            float acc[V];
#pragma unroll
            for (int k = 0; k < V; k++) acc[k] = 0.0f;
#pragma unroll
            for (int q = 0; q < R; q++)
                if (q < n) scatter_acc<T, V>(acc, x, w, src[q], C, c);
            scatter_add_to<T, V>(out + i * C + c, acc);
        }
    }
}

template <typename T, int V>
static void bounded_launch(T *out, const T *x, const T *w, const int *cnt, const int *list,
                           int64_t rows, int64_t C, int r, cudaStream_t s) {
    int64_t lanes = (C + V - 1) / V; /* threads that have work in a row */
    int threads = lanes >= 128 ? 128 : (int)((lanes + 31) / 32 * 32);
    unsigned grid = row_grid(rows);
    switch (bounded_slots(r)) {
    case 1:
        chm_launch(scatter_bounded_kernel<T, V, 1>, grid, threads, 0, s, out, x, w, cnt, list, rows,
                   C, r);
        break;
    case 2:
        chm_launch(scatter_bounded_kernel<T, V, 2>, grid, threads, 0, s, out, x, w, cnt, list, rows,
                   C, r);
        break;
    case 4:
        chm_launch(scatter_bounded_kernel<T, V, 4>, grid, threads, 0, s, out, x, w, cnt, list, rows,
                   C, r);
        break;
    default:
        chm_launch(scatter_bounded_kernel<T, V, 8>, grid, threads, 0, s, out, x, w, cnt, list, rows,
                   C, r);
        break;
    }
}

extern "C" cudaError_t chm_cu_scatter_add_bounded(void *out, const void *x, const int32_t *idx,
                                                  const void *w, int64_t M, int64_t rows,
                                                  int64_t C, int r, chm_dtype dt,
                                                  chm_cu_flag_op fop, void *scratch, int *flag,
                                                  cudaStream_t s) {
    if (M <= 0 || rows <= 0) return cudaSuccess;
    if (r < 1 || r > CHM_CU_SCATTER_MAX_REPEAT) return cudaErrorInvalidValue;
    int R = bounded_slots(r);
    int *cnt = (int *)scratch;
    int *list = (int *)((char *)scratch + align256((size_t)rows * sizeof(int)));
    cudaError_t e = cudaMemsetAsync(cnt, 0, (size_t)rows * sizeof(int), s);
    if (e != cudaSuccess) return e;
    chm_launch(scatter_list_kernel, grid_for(M, 256), 256, 0, s, cnt, list, idx, M, rows, R, r,
               (int)fop, flag);
    if ((e = cudaGetLastError()) != cudaSuccess || C <= 0) return e;
    CHM_CU_DISPATCH(dt, T, {
        if (row_vec<T>(C, out, x, NULL) > 1)
            bounded_launch<T, 16 / sizeof(T)>((T *)out, (const T *)x, (const T *)w, cnt, list,
                                              rows, C, r, s);
        else
            bounded_launch<T, 1>((T *)out, (const T *)x, (const T *)w, cnt, list, rows, C, r, s);
    });
    return cudaGetLastError();
}
