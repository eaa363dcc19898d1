// swiglu.cu: SwiGLU, out = silu(gate) * up, and its backward (ACCUMULATES, or writes without
// reading the old gradients when ACC is false):
//   dgate += g * up * s * (1 + gate * (1 - s)),  dup += g * gate * s,  s = sigmoid(gate).
// Elementwise in f32; for f32 storage expf keeps the sigmoid accurate (f32
// results are compared with the cpu reference at 1e-5), for bf16/f16 storage
// the sigmoid takes __expf and a reciprocal (errors far below the storage's
// rounding). Each thread moves one 16-byte vector per access (V = 8 elements
// of 16-bit storage, 4 of f32) when n and every pointer allow, else V = 2,
// else V = 1: with 4-byte accesses chimera-1b's SwiGLU ran at ~1.5-1.7x its
// bytes' time on an H100. Exact aliasing stays safe: every element is read and
// written by one thread.
// Tail-zero forms (TAIL, MoE's expert rows [E,cap,F] with device counts): a vector on a row
// >= counts[e] is written as zeros (left alone when accumulating) and its inputs are not
// read: chimera-1b's experts leave >= 20% of their capacity empty. Vectors then stay inside
// a row (V divides F).
#include "perf.cuh"

// sigmoid(x) at the storage's precision (see the file comment).
template <typename T>
__device__ __forceinline__ float swiglu_sigmoid(float x) {
    if (sizeof(T) == 4) return sigmoidf_(x);
    return __frcp_rn(1.0f + __expf(-x));
}

// Whether vector i (V elements) lies on a live row: always without TAIL.
template <bool TAIL>
__device__ __forceinline__ bool swiglu_live(int64_t i, const chm_cu_swiglu_rows &r, int V) {
    if (!TAIL) return true;
    int64_t row = i * V / r.F, e = row / r.cap;
    return row - e * r.cap < (int64_t)__ldg(r.counts + e);
}

template <typename T, int V, bool TAIL>
__global__ void swiglu_fwd_kernel(T *out, const T *gate, const T *up, int64_t nv,
                                  chm_cu_swiglu_rows rows) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nv;
         i += (int64_t)gridDim.x * blockDim.x) {
        vec_t<T, V> o;
        if (!swiglu_live<TAIL>(i, rows, V)) {
#pragma unroll
            for (int v = 0; v < V; v++) o.v[v] = from_f<T>(0.0f);
            vstore<T, V>(out + i * V, o);
            continue;
        }
        vec_t<T, V> gv = vload<T, V>(gate + i * V), uv = vload<T, V>(up + i * V);
#pragma unroll
        for (int v = 0; v < V; v++) {
            float g = to_f(gv.v[v]);
            o.v[v] = from_f<T>(g * swiglu_sigmoid<T>(g) * to_f(uv.v[v]));
        }
        vstore<T, V>(out + i * V, o);
    }
}

template <typename T, int V, bool ACC, bool TAIL>
__global__ void swiglu_bwd_kernel(T *dgate, T *dup, const T *dout, const T *gate, const T *up,
                                  int64_t nv, chm_cu_swiglu_rows rows) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nv;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t k = i * V;
        if (!swiglu_live<TAIL>(i, rows, V)) {
            if (!ACC) {  // (accumulating: the rows stay as they are)
                vec_t<T, V> z;
#pragma unroll
                for (int v = 0; v < V; v++) z.v[v] = from_f<T>(0.0f);
                vstore<T, V>(dgate + k, z);
                vstore<T, V>(dup + k, z);
            }
            continue;
        }
        vec_t<T, V> gv = vload<T, V>(gate + k), uv = vload<T, V>(up + k);
        vec_t<T, V> dv = vload<T, V>(dout + k), dg, du;
        if (ACC) dg = vload<T, V>(dgate + k), du = vload<T, V>(dup + k);
#pragma unroll
        for (int v = 0; v < V; v++) {
            float g = to_f(gv.v[v]), s = swiglu_sigmoid<T>(g), d = to_f(dv.v[v]);
            float a = d * to_f(uv.v[v]) * s * (1.0f + g * (1.0f - s)), b = d * g * s;
            dg.v[v] = from_f<T>(ACC ? to_f(dg.v[v]) + a : a);
            du.v[v] = from_f<T>(ACC ? to_f(du.v[v]) + b : b);
        }
        vstore<T, V>(dgate + k, dg);
        vstore<T, V>(dup + k, du);
    }
}

// The widest V in {16 bytes' worth, 2, 1} that n and all of the (up to five) pointers allow.
template <typename T>
static int swiglu_vec(int64_t n, const void *a, const void *b, const void *c, const void *d,
                      const void *e) {
    for (int v = 16 / (int)sizeof(T); v > 1; v /= 2) {
        size_t k = (size_t)v * sizeof(T);
        if (n % v == 0 && ptr_aligned(a, k) && ptr_aligned(b, k) && ptr_aligned(c, k) &&
            ptr_aligned(d, k) && ptr_aligned(e, k))
            return v;
    }
    return 1;
}

// Run BODY with the compile-time vector width VV = vw (16 bytes' worth of T, 2 or 1).
#define SWIGLU_DISPATCH_V(T, vw, ...)                                  \
    do {                                                               \
        if ((vw) == 16 / (int)sizeof(T)) {                             \
            const int VV = 16 / sizeof(T);                             \
            __VA_ARGS__;                                               \
        } else if ((vw) == 2) {                                        \
            const int VV = 2;                                          \
            __VA_ARGS__;                                               \
        } else {                                                       \
            const int VV = 1;                                          \
            __VA_ARGS__;                                               \
        }                                                              \
    } while (0)

extern "C" cudaError_t chm_cu_swiglu_fwd(void *out, const void *gate, const void *up, int64_t n,
                                         const chm_cu_swiglu_rows *rows, chm_dtype dt,
                                         cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    chm_cu_swiglu_rows r = rows ? *rows : chm_cu_swiglu_rows{NULL, 1, 1};
    CHM_CU_DISPATCH(dt, T, {
        int vw = swiglu_vec<T>(rows ? r.F : n, out, gate, up, NULL, NULL);
        SWIGLU_DISPATCH_V(T, vw, {
            auto kern = rows ? swiglu_fwd_kernel<T, VV, true> : swiglu_fwd_kernel<T, VV, false>;
            chm_launch(kern, grid_for(n / VV, 256), 256, 0, s, (T *)out, (const T *)gate,
                       (const T *)up, n / VV, r);
        });
    });
    return cudaGetLastError();
}

template <typename T, bool ACC>
static void swiglu_bwd_launch(T *dgate, T *dup, const T *dout, const T *gate, const T *up,
                              int64_t n, const chm_cu_swiglu_rows *rows, cudaStream_t s) {
    chm_cu_swiglu_rows r = rows ? *rows : chm_cu_swiglu_rows{NULL, 1, 1};
    int vw = swiglu_vec<T>(rows ? r.F : n, dgate, dup, dout, gate, up);
    SWIGLU_DISPATCH_V(T, vw, {
        auto kern =
            rows ? swiglu_bwd_kernel<T, VV, ACC, true> : swiglu_bwd_kernel<T, VV, ACC, false>;
        chm_launch(kern, grid_for(n / VV, 256), 256, 0, s, dgate, dup, dout, gate, up, n / VV, r);
    });
}

extern "C" cudaError_t chm_cu_swiglu_bwd(void *dgate, void *dup, const void *dout,
                                         const void *gate, const void *up, int64_t n,
                                         bool accumulate, const chm_cu_swiglu_rows *rows,
                                         chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T, {
        if (accumulate)
            swiglu_bwd_launch<T, true>((T *)dgate, (T *)dup, (const T *)dout, (const T *)gate,
                                       (const T *)up, n, rows, s);
        else
            swiglu_bwd_launch<T, false>((T *)dgate, (T *)dup, (const T *)dout, (const T *)gate,
                                        (const T *)up, n, rows, s);
    });
    return cudaGetLastError();
}
