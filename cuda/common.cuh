// common.cuh: device helpers shared by the CUDA kernels: f32 <-> storage
// conversions, warp and block reductions, the data-error flag, launch sizes and
// a dtype dispatch for launchers. CUDA C++ kept close to C: templates only
// for the storage type.
#ifndef CHIMERA_CUDA_COMMON_CUH
#define CHIMERA_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"

typedef __nv_bfloat16 bf16;

// ---- programmatic dependent launch (sm_90+) ----
// Every kernel here starts with chm_pdl_enter() and is launched by chm_launch, which allows
// the next kernel of the stream to be scheduled before this one ends (CUDA's programmatic
// stream serialization): its blocks take the SM slots this kernel's last wave frees and wait
// in chm_pdl_enter until this kernel has finished and its writes are visible, so the ~1.3 us
// launch gap between two kernels shrinks while no kernel ever reads or writes memory before
// its predecessor is done. Older GPUs compile the waits out and launch as usual.
__device__ __forceinline__ void chm_pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether this device takes programmatic dependent launches (compute capability 9.0+; asked
// once per process: chimera drives one device a process).
static inline bool chm_pdl_device() {
    static const bool yes = [] {
        int dev = 0, major = 0;
        return cudaGetDevice(&dev) == cudaSuccess &&
               cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ==
                   cudaSuccess &&
               major >= 9;
    }();
    return yes;
}

// kernel<<<grid, block, smem, s>>>(args...) with the programmatic-serialization attribute where
// the device has it; the launch error, as cudaGetLastError would give it.
template <typename... P, typename... A>
static inline cudaError_t chm_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                                     cudaStream_t s, A &&...args) {
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = chm_pdl_device() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<A &&>(args)...);
}

// Above 48 KiB a kernel's dynamic shared memory needs an opt-in (a host call: set per launch).
template <typename K> static inline cudaError_t chm_allow_smem(K kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return cudaSuccess;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

// ---- storage <-> f32 ----
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

// ---- math in f32, written to match the cpu reference's formulas ----
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplusf_(float x) { return x < 20.0f ? log1pf(expf(x)) : x; }

// ---- reductions ----
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a block of at most 1024 threads (fixed order); every thread gets the
// result. `red` is shared scratch of 32 floats; the call starts with a barrier
// so that `red` may be reused by consecutive calls.
__device__ __forceinline__ float block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    return warp_max(v);
}
__device__ __forceinline__ double block_sum_d(double v, double *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0;
    return warp_sum_d(v);
}

// Exclusive prefix sum of an int over the block (blockDim.x a multiple of 32,
// at most 1024); *total receives the block's sum. `red` is 33 shared ints.
__device__ __forceinline__ int block_exclusive_scan(int v, int *red, int *total) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int x = v;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) red[w] = x;
    __syncthreads();
    if (w == 0) {
        int s = lane < nw ? red[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, s, o);
            if (lane >= o) s += y;
        }
        if (lane < nw) red[lane] = s;  // inclusive sums of the warps
        if (lane == 31) red[32] = s;
    }
    __syncthreads();
    *total = red[32];
    return x - v + (w ? red[w - 1] : 0);
}

// ---- data errors: record the first one (see kernels.h) ----
__device__ __forceinline__ void flag_error(int *flag, int op, int64_t index, int64_t value,
                                           int64_t limit) {
    if (!flag) return;
    if (atomicCAS(flag, 0, op) == 0) {
        flag[1] = (int)index;
        flag[2] = (int)value;
        flag[3] = (int)limit;
    }
}

// ---- launch helpers ----
// Blocks for a grid-stride loop over n items with `threads` per block.
static inline unsigned grid_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65536) b = 65536;
    return (unsigned)b;
}

// Run BODY with T bound to the storage type of dt (f32, bf16, f16); any other
// dtype returns cudaErrorInvalidValue (the glue rejects those first).
#define CHM_CU_DISPATCH(dt, T, ...)                          \
    switch (dt) {                                            \
    case CHM_F32: { typedef float T; __VA_ARGS__; } break;   \
    case CHM_BF16: { typedef bf16 T; __VA_ARGS__; } break;   \
    case CHM_F16: { typedef __half T; __VA_ARGS__; } break;  \
    default: return cudaErrorInvalidValue;                   \
    }

// f32 and bf16 only (the heavy kernels).
#define CHM_CU_DISPATCH2(dt, T, ...)                         \
    switch (dt) {                                            \
    case CHM_F32: { typedef float T; __VA_ARGS__; } break;   \
    case CHM_BF16: { typedef bf16 T; __VA_ARGS__; } break;   \
    default: return cudaErrorInvalidValue;                   \
    }

#endif
