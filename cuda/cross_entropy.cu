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
// bytes' time at 3 TB/s. Such rows up to 16 vectors a thread take the register
// path (ce_kernel_reg): one read of each logit instead of two; up to 13 vectors
// (part of them staged in shared memory) it runs two blocks an SM.
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

// Rows whose target lies outside [0, V): loss 0 and a zero row (t < 0), or flagged with loss
// NaN and no row (t >= V). True when the row is done.
template <typename T>
__device__ bool ce_odd_row(float *losses, T *dr, int64_t r, int64_t t, int64_t V, int *flag) {
    if (t < 0) {
        if (threadIdx.x == 0) losses[r] = 0.0f;
        for (int64_t j = threadIdx.x; dr && j < V; j += blockDim.x) dr[j] = from_f<T>(0.0f);
        return true;
    }
    if (t >= V) {
        if (threadIdx.x == 0) {
            flag_error(flag, CHM_CU_FLAG_CROSS_ENTROPY, r, t, V);
            losses[r] = NAN;
        }
        return true;
    }
    return false;
}

template <typename T, bool VEC>
__global__ void ce_kernel(float *losses, T *dz, const T *z, const int32_t *targets, int64_t V,
                          float scale, int *flag) {
    chm_pdl_enter();
    __shared__ float red[32];
    __shared__ float zt_s;
    int64_t r = blockIdx.x;
    const T *zr = z + r * V;
    T *dr = dz ? dz + r * V : NULL;
    int64_t t = targets[r];
    if (ce_odd_row<T>(losses, dr, r, t, V, flag)) return;
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

// Blocks per SM the register path is compiled for: two (at most 64 registers) up to 13
// vectors a thread, so that one block's loads overlap the other's reductions and exponentials
// (one 124-register block an SM took 120.7 us per 1280-row chunk on an H100, 1.4x the bytes'
// time). Of such rows a thread keeps CE_NREG vectors in registers (at more, the compiler
// spilled at 64) and stages the rest, at most 5 (40 KB a block, no opt-in on any sm_80+), in
// shared memory.
#define CE_MIN_BLOCKS(NV) ((NV) <= 13 ? 2 : 1)
#define CE_NREG(NV) ((NV) <= 13 && (NV) > 8 ? 8 : (NV))

// 16 bytes global -> shared without holding registers while in flight (cp.async on sm_80+).
__device__ __forceinline__ void ce_copy16(void *dst, const void *src) {
#if __CUDA_ARCH__ >= 800
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
#else
    *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
#endif
}

// Wait for this thread's ce_copy16s; their bytes are then visible to this thread (each thread
// reads back only what it copied, so no barrier).
__device__ __forceinline__ void ce_copy_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Mark the packed row as rewritten (an empty asm on each 32-bit word), so that the compiler
// converts it to f32 again in the next pass instead of keeping every converted value live
// across the block reduction (bf16 at 16 vectors a thread: 128 floats, spilled).
template <typename T, int W, int NV>
__device__ __forceinline__ void ce_opaque(vec_t<T, W> (&x)[NV]) {
#pragma unroll
    for (int i = 0; i < NV; i++) {
        uint32_t *u = reinterpret_cast<uint32_t *>(&x[i]);
#pragma unroll
        for (int k = 0; k < 4; k++) asm volatile("" : "+r"(u[k]));
    }
}

// Register path, rows of at most NV*CE_THREADS 16-byte vectors (chimera-1b's 50304-column
// bf16 rows: 13 a thread): the row is loaded once, vectors 0..NR-1 of a thread into registers
// and the rest into shared memory, and its max, its sum and the gradient all come from there,
// so each logit is read from memory once. (The two-pass kernel re-read each row in pass two;
// with ~530 rows of 100 KB in flight the re-reads missed the 50 MB L2: 137 us a 1280-row chunk
// on an H100 against 86 us for the bytes.) Each thread visits its vectors in increasing column
// order in every pass, wherever they are held.
template <typename T, int NV>
__global__ void __launch_bounds__(CE_THREADS, CE_MIN_BLOCKS(NV))
    ce_kernel_reg(float *losses, T *dz, const T *z, const int32_t *targets, int64_t V,
                  float scale, int *flag) {
    chm_pdl_enter();
    constexpr int W = 16 / sizeof(T), NR = CE_NREG(NV), NS = NV - NR;
    __shared__ float red[32];
    __shared__ vec_t<T, W> xs[NS > 0 ? NS : 1][CE_THREADS];
    int64_t r = blockIdx.x;
    const T *zr = z + r * V;
    T *dr = dz ? dz + r * V : NULL;
    int64_t t = targets[r];
    if (ce_odd_row<T>(losses, dr, r, t, V, flag)) return;
    // in-row indices fit an int here (at most 16 * CE_THREADS * 8 columns)
    int tid = (int)threadIdx.x, nv = (int)(V / W), tc = (int)t;
    vec_t<T, W> x[NR];
#pragma unroll
    for (int i = NR; i < NV; i++)
        if (i * CE_THREADS + tid < nv)
            ce_copy16(&xs[i - NR][tid], zr + (i * CE_THREADS + tid) * W);
#pragma unroll
    for (int i = 0; i < NR; i++)
        if (i * CE_THREADS + tid < nv) x[i] = vload<T, W>(zr + (i * CE_THREADS + tid) * W);
    float zt = tid == 0 ? to_f(zr[tc]) : 0.0f;  // read before the barriers below
    float vmax = -INFINITY;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        if (i == NR) ce_copy_wait();
        if (i * CE_THREADS + tid < nv) {
            vec_t<T, W> xi = i < NR ? x[i < NR ? i : 0] : xs[i < NR ? 0 : i - NR][tid];
#pragma unroll
            for (int k = 0; k < W; k++) vmax = fmaxf(vmax, to_f(xi.v[k]));
        }
    }
    ce_opaque<T, W, NR>(x);
    float M = block_max(vmax, red), s = 0.0f;
    if (M != -INFINITY)
#pragma unroll
        for (int i = 0; i < NV; i++)
            if (i * CE_THREADS + tid < nv) {
                vec_t<T, W> xi = i < NR ? x[i < NR ? i : 0] : xs[i < NR ? 0 : i - NR][tid];
#pragma unroll
                for (int k = 0; k < W; k++) s += exp2f((to_f(xi.v[k]) - M) * CE_LOG2E);
            }
    float lse = M + logf(block_sum(s, red));
    if (tid == 0) losses[r] = lse - zt;
    if (!dr) return;
    float l2 = lse * CE_LOG2E;
    ce_opaque<T, W, NR>(x);
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int j = (i * CE_THREADS + tid) * W;
        if (i * CE_THREADS + tid >= nv) continue;
        vec_t<T, W> xi = i < NR ? x[i < NR ? i : 0] : xs[i < NR ? 0 : i - NR][tid], y;
#pragma unroll
        for (int k = 0; k < W; k++) {
            float p = exp2f(fmaf(to_f(xi.v[k]), CE_LOG2E, -l2));
            y.v[k] = from_f<T>(scale * (p - (j + k == tc ? 1.0f : 0.0f)));
        }
        vstore<T, W>(dr + j, y);
    }
}

// Vectors per thread of the register path for V columns of `size`-byte elements: 4, 8, 12, 13
// (chimera-1b's bf16 rows, exactly) or 16 (0: wider). Few counts, few kernels to compile.
static int ce_reg_vectors(int64_t V, size_t size) {
    int64_t nvec = V * (int64_t)size / 16, nv = (nvec + CE_THREADS - 1) / CE_THREADS;
    return nv <= 4 ? 4 : nv <= 8 ? 8 : nv <= 12 ? 12 : nv <= 13 ? 13 : nv <= 16 ? 16 : 0;
}

// Run BODY with the compile-time vector count NN = nv (4, 8, 12, 13 or 16).
#define CE_DISPATCH_NV(nv, ...)                                     \
    switch (nv) {                                                   \
    case 4: { const int NN = 4; __VA_ARGS__; } break;               \
    case 8: { const int NN = 8; __VA_ARGS__; } break;               \
    case 12: { const int NN = 12; __VA_ARGS__; } break;             \
    case 13: { const int NN = 13; __VA_ARGS__; } break;             \
    default: { const int NN = 16; __VA_ARGS__; } break;             \
    }

extern "C" cudaError_t chm_cu_cross_entropy(float *losses, void *dlogits, const void *logits,
                                            const int32_t *targets, int64_t R, int64_t V,
                                            double grad_scale, chm_dtype dt, int *flag,
                                            cudaStream_t s) {
    if (R <= 0) return cudaSuccess;
    // rows of whole 16-byte vectors: V a multiple of 16 bytes' worth and both bases aligned
    bool vec = (V * (int64_t)chm_dtype_size(dt)) % 16 == 0 && ptr_aligned(logits, 16) &&
               ptr_aligned(dlogits, 16);
    int nv = vec ? ce_reg_vectors(V, chm_dtype_size(dt)) : 0;
    if (nv > 0) {
        CHM_CU_DISPATCH(dt, T,
                        CE_DISPATCH_NV(nv, chm_launch(ce_kernel_reg<T, NN>, (unsigned)R, CE_THREADS,
                                                      0, s, losses, (T *)dlogits, (const T *)logits,
                                                      targets, V, (float)grad_scale, flag)));
    } else if (vec) {
        CHM_CU_DISPATCH(dt, T,
                        chm_launch(ce_kernel<T, true>, (unsigned)R, CE_THREADS, 0, s, losses,
                                   (T *)dlogits, (const T *)logits, targets, V, (float)grad_scale,
                                   flag));
    } else {
        CHM_CU_DISPATCH(dt, T,
                        chm_launch(ce_kernel<T, false>, (unsigned)R, CE_THREADS, 0, s, losses,
                                   (T *)dlogits, (const T *)logits, targets, V, (float)grad_scale,
                                   flag));
    }
    return cudaGetLastError();
}
