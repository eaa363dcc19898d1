// sum_squares.cu: out = sum of x^2 (the squared gradient norm), deterministic.
//
// Pass one: block b owns the fixed slab [b*SLAB, (b+1)*SLAB) and reduces it
// in double with a fixed thread mapping (16 bytes a load where x is aligned:
// ss_partial_vec_kernel); pass two: one block adds the slab
// sums in a fixed order. The slab size is a constant, so the result depends
// only on the data and its length, never on the device.
#include "perf.cuh"

#define SS_SLAB 16384
#define SS_THREADS 256

template <typename T>
__global__ void ss_partial_kernel(double *part, const T *x, int64_t n) {
    chm_pdl_enter();
    __shared__ double red[32];
    int64_t lo = blockIdx.x * (int64_t)SS_SLAB, hi = lo + SS_SLAB < n ? lo + SS_SLAB : n;
    double acc = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        double v = (double)to_f(x[i]);
        acc += v * v;
    }
    acc = block_sum_d(acc, red);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// As ss_partial_kernel for 16-byte aligned x: 16 bytes a load (the scalar kernel moved 2
// bytes a load and read chimera-1b's 2.3 GB of bf16 gradients at ~1.2 TB/s on an H100), the
// squares of one vector summed in f32 (a bf16/f16 square is exact in f32) before they join
// the thread's double. Whole vectors first, then the slab's tail elements one at a time.
template <typename T>
__global__ void ss_partial_vec_kernel(double *part, const T *x, int64_t n) {
    chm_pdl_enter();
    constexpr int W = 16 / sizeof(T);
    __shared__ double red[32];
    int64_t lo = blockIdx.x * (int64_t)SS_SLAB, hi = lo + SS_SLAB < n ? lo + SS_SLAB : n;
    int64_t nv = (hi - lo) / W;
    double acc = 0.0;
    for (int64_t k = threadIdx.x; k < nv; k += blockDim.x) {
        vec_t<T, W> v = vload<T, W>(x + lo + k * W);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < W; i++) s = fmaf(to_f(v.v[i]), to_f(v.v[i]), s);
        acc += (double)s;
    }
    for (int64_t i = lo + nv * W + threadIdx.x; i < hi; i += blockDim.x) {
        double v = (double)to_f(x[i]);
        acc += v * v;
    }
    acc = block_sum_d(acc, red);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void ss_finish_kernel(void *out, int odt, const double *part, int64_t nb) {
    chm_pdl_enter();
    __shared__ double red[32];
    double acc = 0.0;
    for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) acc += part[b];
    acc = block_sum_d(acc, red);
    if (threadIdx.x == 0) {
        if (odt == CHM_F64) *(double *)out = acc;
        else *(float *)out = (float)acc;
    }
}

static int64_t ss_blocks(int64_t n) { return (n + SS_SLAB - 1) / SS_SLAB; }

extern "C" size_t chm_cu_sum_squares_scratch(int64_t n) {
    int64_t nb = ss_blocks(n);
    return (size_t)(nb > 0 ? nb : 1) * sizeof(double);
}

extern "C" cudaError_t chm_cu_sum_squares(void *out, chm_dtype odt, const void *x, int64_t n,
                                          chm_dtype dt, void *scratch, cudaStream_t s) {
    int64_t nb = ss_blocks(n);
    double *part = (double *)scratch;
    if (nb > 0) {
        if (nb > 0x7fffffff) return cudaErrorInvalidValue;
        bool vec = ptr_aligned(x, 16);
        CHM_CU_DISPATCH(dt, T, {
            if (vec)
                chm_launch(ss_partial_vec_kernel<T>, (unsigned)nb, SS_THREADS, 0, s, part,
                           (const T *)x, n);
            else
                chm_launch(ss_partial_kernel<T>, (unsigned)nb, SS_THREADS, 0, s, part, (const T *)x,
                           n);
        });
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    chm_launch(ss_finish_kernel, 1, 1024, 0, s, out, (int)odt, part, nb);
    return cudaGetLastError();
}
