// convert.cu: fill, cast and to-host copy kernels of the cuda backend (copy is
// cudaMemcpyAsync).
//
// fill writes a bit pattern the host prepared (so fill rounds exactly like the
// cpu backend), 16 bytes per store over the aligned body. cast converts between f32, f64, bf16 and f16, rounding once to
// nearest even like src/backend/cpu/convert.c: an f64 source is narrowed to
// f32 rounded to odd first, which makes the final bf16/f16 rounding correct.
#include "common.cuh"

// Element-wise fill (any alignment of the element size): the fallback.
template <typename W>
__global__ void fill_kernel(W *p, int64_t n, W v) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        p[i] = v;
}

// Vector fill: the 16-byte-aligned body [head, head + n16*16/sizeof(W)) as
// 16-byte stores of q (the pattern repeated), the head (< 16 bytes before the
// first aligned address) and the tail (< 16 bytes) by block 0's first threads.
template <typename W>
__global__ void fill16_kernel(W *p, int64_t n, W v, uint4 q, int head, int64_t n16) {
    chm_pdl_enter();
    uint4 *body = reinterpret_cast<uint4 *>(p + head);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n16;
         i += (int64_t)gridDim.x * blockDim.x)
        body[i] = q;
    if (blockIdx.x == 0) {
        int64_t t = head + n16 * (int64_t)(16 / sizeof(W)) + threadIdx.x;
        if ((int)threadIdx.x < head) p[threadIdx.x] = v;
        if (t < n) p[t] = v;
    }
}

// Launch fill16_kernel for W elements at p (aligned to sizeof(W)).
template <typename W>
static void fill16_launch(W *p, int64_t n, W v, uint64_t pattern, cudaStream_t s) {
    int64_t esz = (int64_t)sizeof(W), mis = (int64_t)((uintptr_t)p % 16);
    int64_t head = mis ? (16 - mis) / esz : 0;
    if (head > n) head = n;
    int64_t n16 = (n - head) * esz / 16;
    uint32_t lo = (uint32_t)pattern, hi = (uint32_t)(pattern >> 32);
    if (esz == 2) lo = (lo & 0xffffu) | (lo << 16);
    if (esz != 8) hi = lo;
    uint4 q = make_uint4(lo, hi, lo, hi);
    chm_launch(fill16_kernel<W>, grid_for(n16, 256), 256, 0, s, p, n, v, q, (int)head, n16);
}

extern "C" cudaError_t chm_cu_fill(void *p, int64_t n, int esize, uint64_t pattern,
                                   cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    if (esize != 2 && esize != 4 && esize != 8) return cudaErrorInvalidValue;
    if ((uintptr_t)p % (uintptr_t)esize) {  // not element-aligned: one element at a time
        unsigned g = grid_for(n, 256);
        if (esize == 2)
            chm_launch(fill_kernel<uint16_t>, g, 256, 0, s, (uint16_t *)p, n, (uint16_t)pattern);
        else if (esize == 4)
            chm_launch(fill_kernel<uint32_t>, g, 256, 0, s, (uint32_t *)p, n, (uint32_t)pattern);
        else
            chm_launch(fill_kernel<uint64_t>, g, 256, 0, s, (uint64_t *)p, n, (uint64_t)pattern);
    } else if (esize == 2) {
        fill16_launch<uint16_t>((uint16_t *)p, n, (uint16_t)pattern, pattern, s);
    } else if (esize == 4) {
        fill16_launch<uint32_t>((uint32_t *)p, n, (uint32_t)pattern, pattern, s);
    } else {
        fill16_launch<uint64_t>((uint64_t *)p, n, (uint64_t)pattern, pattern, s);
    }
    return cudaGetLastError();
}

// n bytes from device memory into mapped pinned host memory, by one block: a readback as a
// kernel rather than a copy-engine transfer, which stalled the stream ~15 us around it.
__global__ void copy_to_host_kernel(unsigned char *dst, const unsigned char *src, int n) {
    chm_pdl_enter();
    bool words = ((uintptr_t)dst | (uintptr_t)src | (uintptr_t)n) % 4 == 0;
    if (words) {
        for (int i = threadIdx.x; i < n / 4; i += blockDim.x)
            ((unsigned *)dst)[i] = ((const unsigned *)src)[i];
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
    }
}

extern "C" cudaError_t chm_cu_copy_to_host(void *dst, const void *src, int n, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    chm_launch(copy_to_host_kernel, 1, 256, 0, s, (unsigned char *)dst, (const unsigned char *)src,
               n);
    return cudaGetLastError();
}

// f64 -> f32 rounded to odd: truncate, then set the last bit when inexact.
__device__ __forceinline__ float f64_to_f32_odd(double d) {
    float f = __double2float_rz(d);
    if (!isnan(d) && (double)f != d) f = __int_as_float(__float_as_int(f) | 1);
    return f;
}

// Element i of a 16/32-bit float tensor as f32 (exact).
__device__ __forceinline__ float load_f(const void *p, int dt, int64_t i) {
    switch (dt) {
    case CHM_F32: return ((const float *)p)[i];
    case CHM_BF16: return to_f(((const bf16 *)p)[i]);
    default: return to_f(((const __half *)p)[i]);
    }
}

// Store an exact-or-odd-rounded f32 into a 16/32-bit float tensor.
__device__ __forceinline__ void store_f(void *p, int dt, int64_t i, float v) {
    switch (dt) {
    case CHM_F32: ((float *)p)[i] = v; break;
    case CHM_BF16: ((bf16 *)p)[i] = from_f<bf16>(v); break;
    default: ((__half *)p)[i] = from_f<__half>(v); break;
    }
}

__global__ void cast_kernel(void *dst, int ddt, const void *src, int sdt, int64_t n) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (sdt == CHM_F64) {
            double d = ((const double *)src)[i];
            if (ddt == CHM_F64) ((double *)dst)[i] = d;
            else if (ddt == CHM_F32) ((float *)dst)[i] = __double2float_rn(d);
            else store_f(dst, ddt, i, f64_to_f32_odd(d));
        } else {
            float f = load_f(src, sdt, i);
            if (ddt == CHM_F64) ((double *)dst)[i] = (double)f;
            else store_f(dst, ddt, i, f);
        }
    }
}

extern "C" cudaError_t chm_cu_cast(void *dst, chm_dtype ddt, const void *src, chm_dtype sdt,
                                   int64_t n, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    chm_launch(cast_kernel, grid_for(n, 256), 256, 0, s, dst, (int)ddt, src, (int)sdt, n);
    return cudaGetLastError();
}
