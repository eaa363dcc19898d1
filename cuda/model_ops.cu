// model_ops.cu: the ops the model added last (backend.h, "added for the model"):
// row scaling, the scaled exponential, binary cross-entropy with logits, the
// fused MoE auxiliary losses, attention against a key/value cache and the
// selective scan continued from a state. f32 and bf16 storage, f32 math, the
// formulas of the cpu reference (src/backend/cpu/<op>.c).
//
// Determinism: no float atomics. Row reductions are fixed-order block sums;
// moe_aux's column sums go through the slab partials of elementwise.cu and
// are added in slab order; its expert counts use integer atomics, which give
// the same totals in any order.
#include "perf.cuh"

#define MO_THREADS 256

// f(s) of row_scale: sigmoid or identity; f'(s).
__device__ __forceinline__ float rs_factor(float s, bool sig) { return sig ? sigmoidf_(s) : s; }
__device__ __forceinline__ float rs_factor_grad(float s, bool sig) {
    float f = sigmoidf_(s);
    return sig ? f * (1.0f - f) : 1.0f;
}

// ---- row_scale: out [M,C] = f(s[m]) * x [M,C] (out may be x) ----

template <typename T>
__global__ void row_scale_fwd_kernel(T *out, const T *x, const T *s, int64_t M, int64_t C,
                                     bool sig) {
    chm_pdl_enter();
    int64_t n = M * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = from_f<T>(rs_factor(to_f(s[i / C]), sig) * to_f(x[i]));
}

// Blocks stride over rows: dx[m,:] += f*dout[m,:]; ds[m] += f' * rowsum(dout*x) (fixed order;
// with set both are written, their old values not loaded),
// V elements per access (16 bytes where C and the pointers allow: 2-byte accesses had held
// chimera-1b's MoE combine backward to ~1.8x its memory floor on an H100).
template <typename T, int V>
__global__ void row_scale_bwd_kernel(T *dx, T *ds, const T *dout, const T *x, const T *s,
                                     int64_t M, int64_t C, bool sig, bool set) {
    chm_pdl_enter();
    __shared__ float red[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        float sm = to_f(s[m]), f = rs_factor(sm, sig), dot = 0.0f;
        const T *g = dout + m * C, *xr = x + m * C;
        for (int64_t c = threadIdx.x * V; c < C; c += blockDim.x * V) {
            vec_t<T, V> gv = vload<T, V>(g + c), xv = vload<T, V>(xr + c), dv;
            if (dx && !set) dv = vload<T, V>(dx + m * C + c);
#pragma unroll
            for (int k = 0; k < V; k++) {
                float gc = to_f(gv.v[k]);
                if (dx) dv.v[k] = from_f<T>(set ? f * gc : fmaf(f, gc, to_f(dv.v[k])));
                dot = fmaf(gc, to_f(xv.v[k]), dot);
            }
            if (dx) vstore<T, V>(dx + m * C + c, dv);
        }
        if (!ds) continue;
        dot = block_sum(dot, red);
        if (threadIdx.x == 0)
            ds[m] = from_f<T>((set ? 0.0f : to_f(ds[m])) + rs_factor_grad(sm, sig) * dot);
    }
}

extern "C" cudaError_t chm_cu_row_scale_fwd(void *out, const void *x, const void *s, int64_t M,
                                            int64_t C, bool sigmoid, chm_dtype dt,
                                            cudaStream_t st) {
    if (M <= 0 || C <= 0) return cudaSuccess;
    CHM_CU_DISPATCH2(dt, T,
                     chm_launch(row_scale_fwd_kernel<T>, grid_for(M * C, MO_THREADS), MO_THREADS, 0,
                                st, (T *)out, (const T *)x, (const T *)s, M, C, sigmoid));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_row_scale_bwd(void *dx, void *ds, const void *dout, const void *x,
                                            const void *s, int64_t M, int64_t C, bool sigmoid,
                                            bool set, chm_dtype dt, cudaStream_t st) {
    if (M <= 0 || (!dx && !ds)) return cudaSuccess;
    unsigned grid = M < 65536 ? (unsigned)M : 65536u;
    CHM_CU_DISPATCH2(dt, T, {
        const int v = 16 / (int)sizeof(T);
        if (C % v == 0 && ptr_aligned(dx, 16) && ptr_aligned(dout, 16) && ptr_aligned(x, 16))
            chm_launch(row_scale_bwd_kernel<T, 16 / sizeof(T)>, grid, MO_THREADS, 0, st, (T *)dx,
                       (T *)ds, (const T *)dout, (const T *)x, (const T *)s, M, C, sigmoid, set);
        else
            chm_launch(row_scale_bwd_kernel<T, 1>, grid, MO_THREADS, 0, st, (T *)dx, (T *)ds,
                       (const T *)dout, (const T *)x, (const T *)s, M, C, sigmoid, set);
    });
    return cudaGetLastError();
}

// ---- exp: out = alpha * exp(x) (out may be x); dx += dout * out ----

template <typename T>
__global__ void exp_fwd_kernel(T *out, const T *x, float alpha, int64_t n) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = from_f<T>(alpha * expf(to_f(x[i])));
}

template <typename T>
__global__ void exp_bwd_kernel(T *dx, const T *dout, const T *out, int64_t n) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dx[i] = from_f<T>(fmaf(to_f(dout[i]), to_f(out[i]), to_f(dx[i])));
}

extern "C" cudaError_t chm_cu_exp_fwd(void *out, const void *x, double alpha, int64_t n,
                                      chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH2(dt, T,
                     chm_launch(exp_fwd_kernel<T>, grid_for(n, MO_THREADS), MO_THREADS, 0, s,
                                (T *)out, (const T *)x, (float)alpha, n));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_exp_bwd(void *dx, const void *dout, const void *out, int64_t n,
                                      chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH2(dt, T,
                     chm_launch(exp_bwd_kernel<T>, grid_for(n, MO_THREADS), MO_THREADS, 0, s,
                                (T *)dx, (const T *)dout, (const T *)out, n));
    return cudaGetLastError();
}

// ---- bce_logits: losses [R] f32, dlogits [R] (optional, may be logits) WRITTEN ----

template <typename T>
__global__ void bce_kernel(float *loss, T *dx, const T *x, const T *y, float scale, int64_t n) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float xi = to_f(x[i]), yi = to_f(y[i]);  // both read before dx[i] may overwrite x[i]
        loss[i] = fmaxf(xi, 0.0f) - xi * yi + log1pf(expf(-fabsf(xi)));
        if (dx) {
            float sg = xi >= 0.0f ? 1.0f / (1.0f + expf(-xi)) : expf(xi) / (1.0f + expf(xi));
            dx[i] = from_f<T>(scale * (sg - yi));
        }
    }
}

extern "C" cudaError_t chm_cu_bce_logits(float *losses, void *dlogits, const void *logits,
                                         const void *targets, int64_t n, double grad_scale,
                                         chm_dtype dt, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    CHM_CU_DISPATCH2(dt, T,
                     chm_launch(bce_kernel<T>, grid_for(n, MO_THREADS), MO_THREADS, 0, s, losses,
                                (T *)dlogits, (const T *)logits, (const T *)targets,
                                (float)grad_scale, n));
    return cudaGetLastError();
}

// ---- moe_aux ----
//
// Scratch (offsets rounded to 256 bytes): p [R,E] f32 softmax, lse [R] f32,
// part [S,E] f32 slab sums of p, cnt [E] int routed counts, g [E] f32 the
// balance gradient weights E*f_e/R. Five launches:
//   1. one warp per row: lse_r and p[r,:];       2. slab partials of p;
//   3. counts of idx (integer atomics; bad entries flagged, skipped);
//   4. one block: P_e, balance, z-loss, g;       5. one warp per row: dlogits.
// A row has E (8 for chimera-1b) values: a warp per row, reduced by shuffles, keeps the
// whole device busy (a 128-thread block per row with block-wide reductions took ~48 us a
// call at 16384 rows on an H100, 24 calls a step).

static size_t mo_align(size_t b) { return (b + 255) & ~(size_t)255; }

typedef struct mo_aux_mem {
    float *p, *lse, *part, *g;
    int *cnt;
} mo_aux_mem;

static mo_aux_mem mo_aux_carve(void *scratch, int64_t R, int64_t E) {
    char *c = (char *)scratch;
    int S = chm_cu_colsum_slabs(R);
    mo_aux_mem m;
    m.p = (float *)c, c += mo_align((size_t)(R * E) * sizeof(float));
    m.lse = (float *)c, c += mo_align((size_t)R * sizeof(float));
    m.part = (float *)c, c += mo_align((size_t)S * (size_t)E * sizeof(float));
    m.g = (float *)c, c += mo_align((size_t)E * sizeof(float));
    m.cnt = (int *)c;
    return m;
}

extern "C" size_t chm_cu_moe_aux_scratch(int64_t R, int64_t E) {
    int S = chm_cu_colsum_slabs(R);
    return mo_align((size_t)(R * E) * sizeof(float)) + mo_align((size_t)R * sizeof(float)) +
           mo_align((size_t)S * (size_t)E * sizeof(float)) + mo_align((size_t)E * sizeof(float)) +
           mo_align((size_t)E * sizeof(int));
}

#define MO_ROWS (MO_THREADS / 32) /* rows a block of the warp-per-row kernels */

// Warp per row r (whole warps leave together, so the shuffles see all 32 lanes).
template <typename T>
__global__ void aux_softmax_kernel(float *p, float *lse, const T *z, int64_t R, int64_t E) {
    chm_pdl_enter();
    int64_t r = (int64_t)blockIdx.x * MO_ROWS + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    const T *zr = z + r * E;
    float mx = -INFINITY;
    for (int64_t e = lane; e < E; e += 32) mx = fmaxf(mx, to_f(zr[e]));
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int64_t e = lane; e < E; e += 32) sum += expf(to_f(zr[e]) - mx);
    float l = mx + logf(warp_sum(sum));
    for (int64_t e = lane; e < E; e += 32) p[r * E + e] = expf(to_f(zr[e]) - l);
    if (lane == 0) lse[r] = l;
}

__global__ void aux_count_kernel(int *cnt, const int32_t *idx, int64_t n, int64_t E, int *flag) {
    chm_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int32_t e = idx[i];
        if (e < 0 || e >= E) flag_error(flag, CHM_CU_FLAG_MOE_AUX, i, e, E);
        else atomicAdd(&cnt[e], 1);  // integer: the same total in any order
    }
}

// One block: P_e from the slab partials (slab order), balance, z = mean lse^2, g_e.
__global__ void aux_stats_kernel(float *losses, float *g, const float *part, int S,
                                 const int *cnt, const float *lse, int64_t R, int64_t E,
                                 int64_t K) {
    chm_pdl_enter();
    __shared__ double red[32];
    double bal = 0.0, zz = 0.0;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        double P = 0.0;
        for (int s = 0; s < S; s++) P += (double)part[(int64_t)s * E + e];
        P /= (double)R;
        double f = (double)cnt[e] / (double)(R * K);
        bal += (double)E * f * P;
        g[e] = (float)((double)E * f / (double)R);
    }
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) zz += (double)lse[r] * (double)lse[r];
    bal = block_sum_d(bal, red);
    zz = block_sum_d(zz, red);
    if (threadIdx.x == 0) {
        losses[0] = (float)bal;
        losses[1] = (float)(zz / (double)R);
    }
}

// Warp per row: dz[r,j] += bs*p*(g_j - sum_e p_e g_e) + zs*2*lse*p/R.
template <typename T>
__global__ void aux_grad_kernel(T *dz, const float *p, const float *lse, const float *g,
                                int64_t R, int64_t E, float bs, float zs) {
    chm_pdl_enter();
    int64_t r = (int64_t)blockIdx.x * MO_ROWS + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    const float *pr = p + r * E;
    float pg = 0.0f;
    for (int64_t e = lane; e < E; e += 32) pg = fmaf(pr[e], g[e], pg);
    pg = warp_sum(pg);
    float zc = zs * 2.0f * lse[r] / (float)R;
    for (int64_t j = lane; j < E; j += 32) {
        float d = bs * pr[j] * (g[j] - pg) + zc * pr[j];
        dz[r * E + j] = from_f<T>(to_f(dz[r * E + j]) + d);
    }
}

extern "C" cudaError_t chm_cu_moe_aux(float *losses, void *dlogits, const void *logits,
                                      const int32_t *idx, int64_t R, int64_t E, int64_t K,
                                      double balance_scale, double z_scale, chm_dtype dt,
                                      void *scratch, int *flag, cudaStream_t s) {
    if (R <= 0 || E <= 0 || R > 0x7fffffff) return cudaErrorInvalidValue;
    mo_aux_mem m = mo_aux_carve(scratch, R, E);
    int S = chm_cu_colsum_slabs(R);
    unsigned blocks = (unsigned)((R + MO_ROWS - 1) / MO_ROWS);
    CHM_CU_DISPATCH2(dt, T,
                     chm_launch(aux_softmax_kernel<T>, blocks, MO_THREADS, 0, s, m.p, m.lse,
                                (const T *)logits, R, E));
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = chm_cu_colsum_partial(m.part, m.p, R, E, CHM_F32, s);
    if (e == cudaSuccess) e = cudaMemsetAsync(m.cnt, 0, (size_t)E * sizeof(int), s);
    if (e != cudaSuccess) return e;
    chm_launch(aux_count_kernel, grid_for(R * K, MO_THREADS), MO_THREADS, 0, s, m.cnt, idx, R * K,
               E, flag);
    chm_launch(aux_stats_kernel, 1, 1024, 0, s, losses, m.g, m.part, S, m.cnt, m.lse, R, E, K);
    e = cudaGetLastError();
    if (e != cudaSuccess || !dlogits) return e;
    CHM_CU_DISPATCH2(dt, T,
                     chm_launch(aux_grad_kernel<T>, blocks, MO_THREADS, 0, s, (T *)dlogits, m.p,
                                m.lse, m.g, R, E, (float)balance_scale, (float)z_scale));
    return cudaGetLastError();
}

// ---- attention_decode ----
//
// grid (Tq, H, B), MO_DEC_THREADS threads: one query row i at position
// p = Tk - Tq + i against keys 0..p, online softmax over key chunks (the
// simple forward kernel of attention.cu with a bottom-right aligned mask).
// Shared: q*scale [D], o [D], probabilities [MO_DEC_THREADS].

#define MO_DEC_THREADS 128

template <typename T>
__global__ void __launch_bounds__(MO_DEC_THREADS)
    decode_kernel(T *out, const T *q, const T *k, const T *v, int64_t Tq, int64_t Tk, int64_t H,
                  int64_t Hk, int64_t D, float scale) {
    chm_pdl_enter();
    extern __shared__ float sm[];
    __shared__ float red[32];
    float *qs = sm, *os = qs + D, *ps = os + D;
    int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / Hk);
    int64_t p = Tk - Tq + i;
    const T *qi = q + ((b * Tq + i) * H + h) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        qs[d] = to_f(qi[d]) * scale;
        os[d] = 0.0f;
    }
    __syncthreads();
    float m = -INFINITY, l = 0.0f;
    for (int64_t j0 = 0; j0 <= p; j0 += blockDim.x) {
        int64_t j = j0 + threadIdx.x;
        float sc = -INFINITY;
        if (j <= p) {
            const T *kj = k + ((b * Tk + j) * Hk + g) * D;
            sc = 0.0f;
            for (int64_t d = 0; d < D; d++) sc = fmaf(qs[d], to_f(kj[d]), sc);
        }
        float mn = fmaxf(m, block_max(sc, red));  // finite: key j0 <= p is in every chunk
        float pr = j <= p ? expf(sc - mn) : 0.0f;
        ps[threadIdx.x] = pr;
        float corr = expf(m - mn);
        l = l * corr + block_sum(pr, red);  // its barriers also publish ps
        m = mn;
        int64_t cnt = p - j0 + 1 < blockDim.x ? p - j0 + 1 : blockDim.x;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float acc = os[d] * corr;
            for (int64_t jj = 0; jj < cnt; jj++)
                acc = fmaf(ps[jj], to_f(v[((b * Tk + j0 + jj) * Hk + g) * D + d]), acc);
            os[d] = acc;
        }
        __syncthreads();
    }
    T *oi = out + ((b * Tq + i) * H + h) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) oi[d] = from_f<T>(os[d] / l);
}

extern "C" cudaError_t chm_cu_attention_decode(void *out, const void *q, const void *k,
                                               const void *v, int64_t B, int64_t Tq, int64_t Tk,
                                               int64_t H, int64_t Hk, int64_t D, double scale,
                                               chm_dtype dt, cudaStream_t s) {
    if (B <= 0 || Tq <= 0 || H <= 0 || D <= 0) return cudaSuccess;
    if (Tq > 0x7fffffff || H > 65535 || B > 65535 || Tq > Tk) return cudaErrorInvalidValue;
    size_t smem = (size_t)(2 * D + MO_DEC_THREADS) * sizeof(float);
    if (smem > 48 * 1024) return cudaErrorInvalidValue;
    dim3 grid((unsigned)Tq, (unsigned)H, (unsigned)B);
    CHM_CU_DISPATCH2(dt, T,
                     chm_launch(decode_kernel<T>, grid, MO_DEC_THREADS, smem, s, (T *)out,
                                (const T *)q, (const T *)k, (const T *)v, Tq, Tk, H, Hk, D,
                                (float)scale));
    return cudaGetLastError();
}

// ---- selective_scan_step ----
//
// One thread per (b, c): the N <= CHM_CU_SCAN_MAX_N states of the channel are
// loaded from h [B,Di,N] into f32 registers, stepped through the T steps and
// stored back (rounded once, at the end).

template <typename T>
__global__ void scan_step_kernel(T *y, T *h, chm_cu_scan a) {
    chm_pdl_enter();
    int64_t task = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (task >= a.B * a.Di) return;
    int64_t b = task / a.Di, c = task % a.Di, N = a.N;
    const T *u = (const T *)a.u, *dl = (const T *)a.delta, *A = (const T *)a.A;
    const T *Bm = (const T *)a.Bm, *Cm = (const T *)a.Cm;
    float hs[CHM_CU_SCAN_MAX_N], Ac[CHM_CU_SCAN_MAX_N];
#pragma unroll
    for (int n = 0; n < CHM_CU_SCAN_MAX_N; n++) {
        hs[n] = n < N ? to_f(h[task * N + n]) : 0.0f;
        Ac[n] = n < N ? to_f(A[c * N + n]) : 0.0f;
    }
    float bias = a.delta_bias ? to_f(((const T *)a.delta_bias)[c]) : 0.0f;
    float Dc = a.D ? to_f(((const T *)a.D)[c]) : 0.0f;
    for (int64_t t = 0; t < a.T; t++) {
        int64_t ti = (b * a.T + t) * a.Di + c, tn = (b * a.T + t) * N;
        float x = to_f(dl[ti]) + bias, uu = to_f(u[ti]);
        float dt = a.softplus ? softplusf_(x) : x, acc = Dc * uu;
#pragma unroll
        for (int n = 0; n < CHM_CU_SCAN_MAX_N; n++) {
            if (n < N) {
                hs[n] = expf(dt * Ac[n]) * hs[n] + dt * to_f(Bm[tn + n]) * uu;
                acc = fmaf(to_f(Cm[tn + n]), hs[n], acc);
            }
        }
        if (a.z) acc *= to_f(((const T *)a.z)[ti]) * sigmoidf_(to_f(((const T *)a.z)[ti]));
        y[ti] = from_f<T>(acc);
    }
#pragma unroll
    for (int n = 0; n < CHM_CU_SCAN_MAX_N; n++)
        if (n < N) h[task * N + n] = from_f<T>(hs[n]);
}

extern "C" cudaError_t chm_cu_scan_step(void *y, void *h, const chm_cu_scan *a, cudaStream_t s) {
    if (a->N > CHM_CU_SCAN_MAX_N) return cudaErrorInvalidValue;
    int64_t n = a->B * a->Di;
    if (n <= 0) return cudaSuccess;
    int64_t blocks = (n + 127) / 128;
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    CHM_CU_DISPATCH2(
        a->dt, T, chm_launch(scan_step_kernel<T>, (unsigned)blocks, 128, 0, s, (T *)y, (T *)h, *a));
    return cudaGetLastError();
}
