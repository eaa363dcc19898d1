// rmsnorm.cu: RMSNorm over the last dim, forward and backward.
//
// x [R,C], w [C], rstd [R] f32 (the stats dtype of 16-bit and f32 tensors):
//   rstd = 1/sqrt(mean(x^2) + eps), out = x * rstd * w.
// Backward (ACCUMULATES), g = dout:
//   dx += rstd*w*g - x * rstd^3/C * sum_j g_j w_j x_j
//   dw += sum_r g x rstd: per-slab partials, then a finish that adds the
//   slabs in a fixed order (deterministic, no atomics).
// Forward: one warp per row. Backward, fused path (C <= 8*RMS_BT*V): one
// block of RMS_BT threads per slab of rows; each thread keeps its columns'
// w and dw partials in registers (V = 2 columns per access when C is even and
// the pointers allow), walks the slab's rows with the next row's g and x
// loaded ahead (narrow rows, chimera-1b's C = 1024: two rows at a time, the
// next two rows' g, x and dx loaded ahead), and one block sum per row gives the
// row's dot product; g and x are read from memory once. Generic path (wider
// rows): one warp per row for dx, one thread per (slab, column) for dw. (A
// warp-per-row backward with 16-byte accesses, no block barrier per row, ran no
// faster on an H100: 68 vs 66 us at chimera-1b's [16384,1024] in bf16, session 7.)
#include "perf.cuh"

#define RMS_WARPS 8

// One warp per row, V elements per access (16 bytes when C and the pointers allow: 2-byte
// accesses had held chimera-1b's forward norms at ~1.6x their bytes' time on an H100); the
// second pass re-reads the row from cache.
template <typename T, int V>
__global__ void rmsnorm_fwd_kernel(T *out, float *rstd, const T *x, const T *w, int64_t R,
                                   int64_t C, float eps) {
    chm_pdl_enter();
    int64_t r = blockIdx.x * (int64_t)RMS_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    const T *xr = x + r * C;
    float ss = 0.0f;
    for (int64_t c = (int64_t)lane * V; c < C; c += 32 * V) {
        vec_t<T, V> xv = vload<T, V>(xr + c);
#pragma unroll
        for (int k = 0; k < V; k++) {
            float v = to_f(xv.v[k]);
            ss = fmaf(v, v, ss);
        }
    }
    ss = warp_sum(ss);
    float rs = 1.0f / sqrtf(ss / (float)C + eps);
    if (lane == 0) rstd[r] = rs;
    for (int64_t c = (int64_t)lane * V; c < C; c += 32 * V) {
        vec_t<T, V> xv = vload<T, V>(xr + c), wv = vload<T, V>(w + c), o;
#pragma unroll
        for (int k = 0; k < V; k++) o.v[k] = from_f<T>(to_f(xv.v[k]) * rs * to_f(wv.v[k]));
        vstore<T, V>(out + r * C + c, o);
    }
}

template <typename T>
__global__ void rmsnorm_dx_kernel(T *dx, const T *g, const T *x, const T *w, const float *rstd,
                                  int64_t R, int64_t C) {
    chm_pdl_enter();
    int64_t r = blockIdx.x * (int64_t)RMS_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    const T *gr = g + r * C, *xr = x + r * C;
    float dot = 0.0f;
    for (int64_t c = lane; c < C; c += 32) dot += to_f(gr[c]) * to_f(w[c]) * to_f(xr[c]);
    dot = warp_sum(dot);
    float rs = rstd[r], coef = rs * rs * rs * dot / (float)C;
    for (int64_t c = lane; c < C; c += 32) {
        float v = to_f(dx[r * C + c]) + rs * to_f(w[c]) * to_f(gr[c]) - coef * to_f(xr[c]);
        dx[r * C + c] = from_f<T>(v);
    }
}

// grid (ceil(C/256), S): the dw partial of one slab of rows for one column.
template <typename T>
__global__ void rmsnorm_dw_kernel(float *part, const T *g, const T *x, const float *rstd,
                                  int64_t R, int64_t C) {
    chm_pdl_enter();
    int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int S = gridDim.y, slab = blockIdx.y;
    if (c >= C) return;
    int64_t per = (R + S - 1) / S, r0 = slab * per, r1 = r0 + per < R ? r0 + per : R;
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; r++) acc += to_f(g[r * C + c]) * to_f(x[r * C + c]) * rstd[r];
    part[(int64_t)slab * C + c] = acc;
}

// Slabs of rows of the backward (its blocks, and its dw partials): a function of R alone.
// 32 rows a slab, but at least min(512, ceil(R/8)) slabs, so that R below 16384 still fills
// the 4 blocks an SM of 132 SMs in one wave (R = 8192's 256 slabs of 32 rows left half the
// H100 idle: 45 us against 22 us for the bytes); at most 2048.
extern "C" int chm_cu_rmsnorm_slabs(int64_t R) {
    int64_t s = (R + 31) / 32, lo = (R + 7) / 8;
    if (lo > 512) lo = 512;
    if (s < lo) s = lo;
    if (s < 1) s = 1;
    if (s > 2048) s = 2048;
    return (int)s;
}

#define RMS_BT 256

// Blocks per SM the fused kernel is compiled for: 4 (at most 64 registers, so
// R = 16384's 512 blocks run in one wave on 132 SMs) where its registers allow.
#define RMS_MIN_BLOCKS(T, V, NP) ((NP) <= 4 && (NP) * (V) * sizeof(T) <= 16 ? 4 : 2)

// Rows the fused kernel handles per iteration: 2 where a thread's share of a row of a tensor
// fits 2 registers (chimera-1b's bf16 C = 1024), else 1. With 2, the next two rows' g, x and
// dx are loaded ahead (12 KB a block in flight at C = 1024 in bf16, instead of the next row's
// g and x, 4 KB, while each row waited on its own dx) and the two rows' dot products share
// one block reduction.
#define RMS_ROWS(T, V, NP) ((NP) * (((V) * sizeof(T) + 3) / 4) <= 2 ? 2 : 1)

// Rows r .. r+RW-1 below r1: g and x, and dx when RW > 1. Columns of chunk k of thread tid:
// [c, c+V) with c = (k*RMS_BT + tid)*V.
template <typename T, int V, int NP, int RW>
__device__ __forceinline__ void rms_load_rows(vec_t<T, V> (&gv)[RW][NP],
                                              vec_t<T, V> (&xv)[RW][NP],
                                              vec_t<T, V> (&dv)[RW][NP], const T *g,
                                              const T *x, const T *dx, int64_t r, int64_t r1,
                                              int64_t C) {
#pragma unroll
    for (int h = 0; h < RW; h++)
        if (r + h < r1)
#pragma unroll
            for (int k = 0; k < NP; k++) {
                int64_t c = ((int64_t)k * RMS_BT + threadIdx.x) * V;
                if (c < C) {
                    gv[h][k] = vload<T, V>(g + (r + h) * C + c);
                    xv[h][k] = vload<T, V>(x + (r + h) * C + c);
                    if (RW > 1) dv[h][k] = vload<T, V>(dx + (r + h) * C + c);
                }
            }
}

// block_sum of each of v[0..RW-1] (the same arithmetic), sharing its two barriers. red is
// RW*32 shared floats.
template <int RW>
__device__ __forceinline__ void rms_block_sums(float (&v)[RW], float (*red)[32]) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int h = 0; h < RW; h++) v[h] = warp_sum(v[h]);
    __syncthreads();
    if (lane == 0)
#pragma unroll
        for (int h = 0; h < RW; h++) red[h][w] = v[h];
    __syncthreads();
#pragma unroll
    for (int h = 0; h < RW; h++) v[h] = warp_sum(lane < nw ? red[h][lane] : 0.0f);
}

// grid S (slabs of rows), block RMS_BT: dx of the slab's rows, and part[slab, C]. Rows are
// visited in order, RW at a time; per row the arithmetic (and its order) is that of one row
// at a time.
template <typename T, int V, int NP>
__global__ void __launch_bounds__(RMS_BT, RMS_MIN_BLOCKS(T, V, NP))
    rmsnorm_bwd_fused(T *__restrict__ dx, float *__restrict__ part, const T *__restrict__ g,
                      const T *__restrict__ x, const T *__restrict__ w,
                      const float *__restrict__ rstd, int64_t R, int64_t C) {
    chm_pdl_enter();
    constexpr int RW = RMS_ROWS(T, V, NP);
    __shared__ float red[RW][32];
    int64_t per = (R + gridDim.x - 1) / gridDim.x, r0 = blockIdx.x * per;
    int64_t r1 = r0 + per < R ? r0 + per : R;
    float wv[NP][V], acc[NP][V];
    vec_t<T, V> gn[RW][NP], xn[RW][NP], dn[RW][NP];  // the next rows (dn: when RW > 1)
#pragma unroll
    for (int k = 0; k < NP; k++) {
        int64_t c = ((int64_t)k * RMS_BT + threadIdx.x) * V;
#pragma unroll
        for (int v = 0; v < V; v++) {
            wv[k][v] = c < C ? to_f(w[c + v]) : 0.0f;
            acc[k][v] = 0.0f;
#pragma unroll
            for (int h = 0; h < RW; h++)
                gn[h][k].v[v] = xn[h][k].v[v] = dn[h][k].v[v] = from_f<T>(0.0f);
        }
    }
    rms_load_rows<T, V, NP, RW>(gn, xn, dn, g, x, dx, r0, r1, C);
    for (int64_t r = r0; r < r1; r += RW) {
        vec_t<T, V> gc[RW][NP], xc[RW][NP], dc[RW][NP];
#pragma unroll
        for (int h = 0; h < RW; h++)
#pragma unroll
            for (int k = 0; k < NP; k++) {
                int64_t c = ((int64_t)k * RMS_BT + threadIdx.x) * V;
                gc[h][k] = gn[h][k];
                xc[h][k] = xn[h][k];
                if (RW > 1) dc[h][k] = dn[h][k];
                else if (c < C) dc[h][k] = vload<T, V>(dx + r * C + c);
            }
        if (r + RW < r1) rms_load_rows<T, V, NP, RW>(gn, xn, dn, g, x, dx, r + RW, r1, C);
        float rs[RW], dot[RW];
#pragma unroll
        for (int h = 0; h < RW; h++) {
            bool row = h == 0 || r + h < r1;  // uniform over the block
            rs[h] = row ? rstd[r + h] : 0.0f;
            dot[h] = 0.0f;
#pragma unroll
            for (int k = 0; k < NP; k++)
#pragma unroll
                for (int v = 0; v < V; v++) {  // inactive columns hold zeros
                    float gf = to_f(gc[h][k].v[v]), xf = to_f(xc[h][k].v[v]);
                    dot[h] += gf * wv[k][v] * xf;
                    if (row) acc[k][v] += gf * xf * rs[h];
                }
        }
        rms_block_sums<RW>(dot, red);
#pragma unroll
        for (int h = 0; h < RW; h++) {
            if (h > 0 && r + h >= r1) continue;
            float coef = rs[h] * rs[h] * rs[h] * dot[h] / (float)C;
#pragma unroll
            for (int k = 0; k < NP; k++) {
                int64_t c = ((int64_t)k * RMS_BT + threadIdx.x) * V;
                if (c >= C) continue;
                vec_t<T, V> o;
#pragma unroll
                for (int v = 0; v < V; v++)
                    o.v[v] = from_f<T>(to_f(dc[h][k].v[v]) +
                                       rs[h] * wv[k][v] * to_f(gc[h][k].v[v]) -
                                       coef * to_f(xc[h][k].v[v]));
                vstore<T, V>(dx + (r + h) * C + c, o);
            }
        }
    }
#pragma unroll
    for (int k = 0; k < NP; k++) {
        int64_t c = ((int64_t)k * RMS_BT + threadIdx.x) * V;
        if (c < C)
#pragma unroll
            for (int v = 0; v < V; v++) part[(int64_t)blockIdx.x * C + c + v] = acc[k][v];
    }
}

// grid ceil(C/FIN_X), block (FIN_X, FIN_Y): dw [C] += the slab sums of part [S,C].
template <typename T>
__global__ void rmsnorm_finish_kernel(T *dw, const float *part, int S, int64_t C) {
    chm_pdl_enter();
    int64_t c = (int64_t)blockIdx.x * FIN_X + threadIdx.x;
    float acc = slab_sum(part, S, C, c);
    if (threadIdx.y == 0 && c < C) dw[c] = from_f<T>(to_f(dw[c]) + acc);
}

// Chunks per thread the fused kernel needs for C columns V at a time (0: too wide).
static int rms_chunks(int64_t C, int V) {
    for (int np = 1; np <= 8; np *= 2)
        if (C <= (int64_t)np * RMS_BT * V) return np;
    return 0;
}

// Run BODY with the compile-time chunk count NN = np (1, 2, 4 or 8).
#define RMS_DISPATCH_NP(np, ...)                                    \
    switch (np) {                                                   \
    case 1: { const int NN = 1; __VA_ARGS__; } break;               \
    case 2: { const int NN = 2; __VA_ARGS__; } break;               \
    case 4: { const int NN = 4; __VA_ARGS__; } break;               \
    default: { const int NN = 8; __VA_ARGS__; } break;              \
    }

template <typename T>
static void rmsnorm_bwd_launch(T *dx, float *part, const T *g, const T *x, const T *w,
                               const float *rstd, int64_t R, int64_t C, cudaStream_t s) {
    int S = chm_cu_rmsnorm_slabs(R);
    size_t pb = 2 * sizeof(T);
    bool pairs = C % 2 == 0 && ptr_aligned(dx, pb) && ptr_aligned(g, pb) && ptr_aligned(x, pb);
    int np = rms_chunks(C, pairs ? 2 : 1);
    if (np > 0 && pairs) {
        RMS_DISPATCH_NP(np, chm_launch(rmsnorm_bwd_fused<T, 2, NN>, S, RMS_BT, 0, s, dx, part, g, x,
                                       w, rstd, R, C));
    } else if (np > 0) {
        RMS_DISPATCH_NP(np, chm_launch(rmsnorm_bwd_fused<T, 1, NN>, S, RMS_BT, 0, s, dx, part, g, x,
                                       w, rstd, R, C));
    } else {
        unsigned gr = (unsigned)((R + RMS_WARPS - 1) / RMS_WARPS);
        if (R > 0)
            chm_launch(rmsnorm_dx_kernel<T>, gr, RMS_WARPS * 32, 0, s, dx, g, x, w, rstd, R, C);
        dim3 gdw((unsigned)((C + 255) / 256), (unsigned)S);
        chm_launch(rmsnorm_dw_kernel<T>, gdw, 256, 0, s, part, g, x, rstd, R, C);
    }
}

extern "C" cudaError_t chm_cu_rmsnorm_bwd(void *dx, void *dw, float *part, const void *dout,
                                          const void *x, const void *w, const float *rstd,
                                          int64_t R, int64_t C, chm_dtype dt, cudaStream_t s) {
    if (C <= 0) return cudaSuccess;
    int S = chm_cu_rmsnorm_slabs(R);
    unsigned gf = (unsigned)((C + FIN_X - 1) / FIN_X);
    CHM_CU_DISPATCH(dt, T, {
        if (R > 0)
            rmsnorm_bwd_launch<T>((T *)dx, part, (const T *)dout, (const T *)x, (const T *)w,
                                  rstd, R, C, s);
        else {
            cudaError_t e = cudaMemsetAsync(part, 0, (size_t)S * (size_t)C * sizeof(float), s);
            if (e != cudaSuccess) return e;
        }
        chm_launch(rmsnorm_finish_kernel<T>, gf, dim3(FIN_X, FIN_Y), 0, s, (T *)dw, part, S, C);
    });
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_rmsnorm_fwd(void *out, float *rstd, const void *x, const void *w,
                                          int64_t R, int64_t C, double eps, chm_dtype dt,
                                          cudaStream_t s) {
    if (R <= 0) return cudaSuccess;
    unsigned g = (unsigned)((R + RMS_WARPS - 1) / RMS_WARPS);
    CHM_CU_DISPATCH(dt, T, {
        const int v = 16 / (int)sizeof(T);
        if (C % v == 0 && ptr_aligned(out, 16) && ptr_aligned(x, 16) && ptr_aligned(w, 16))
            chm_launch(rmsnorm_fwd_kernel<T, 16 / sizeof(T)>, g, RMS_WARPS * 32, 0, s, (T *)out,
                       rstd, (const T *)x, (const T *)w, R, C, (float)eps);
        else
            chm_launch(rmsnorm_fwd_kernel<T, 1>, g, RMS_WARPS * 32, 0, s, (T *)out, rstd,
                       (const T *)x, (const T *)w, R, C, (float)eps);
    });
    return cudaGetLastError();
}

