// causal_conv1d.cu: depthwise causal conv1d over time, forward and backward.
//
// x, out [B,T,C]; w [C,W]; bias [C] optional:
//   pre[b,t,c] = bias[c] + sum_j w[c,j] x[b,t-(W-1)+j,c]  (x = 0 before t = 0),
//   out = silu(pre) when silu, else pre.
// The backward ACCUMULATES (dx is written instead with dx_set: the model's call, whose dx
// would otherwise be zeroed first; its old values are then not read either): with
// g = dout * silu'(pre) (or dout),
//   dx[b,s,c] += sum_j g[b,s+(W-1)-j,c] w[c,j],
//   dw[c,j] += sum_{b,t} g[b,t,c] x[b,t-(W-1)+j,c],  dbias[c] += sum g.
//
// Tiled path (W <= 4, the Mamba case): block (CONV_TX, CONV_TY) covers
// CONV_TX*V channels of one batch row b and CONV_SPAN = CONV_TY*CONV_TT time
// steps; each thread owns V channels (V = 2: one 4/8-byte access, when C is
// even and the pointers allow; else V = 1) and CONV_TT steps. The block first
// copies its rows of x (a W-1 step halo before; 2(W-1) in the backward, whose
// g runs W-1 steps past the span to give dx of its last steps) and of dout
// into shared memory by cp.async, every copy in flight at once; then each
// thread walks its steps from there, keeping the last W inputs (and g values)
// in registers, so g is computed once per step (plus W-1 halo steps). On an
// H100 at chimera-1b's 8 x 2048 x 2048 this took the backward from 161 to 96 us
// (1.4x its bytes) and the forward from 74 to 56 (session 26): the threads had
// walked 64 steps four loads at a time, too few bytes in flight. The SiLU takes
// one MUFU exp2 and one MUFU reciprocal (conv_sigmoid). The backward's dw/dbias
// sums go to per-block partials (one slab per (b, time block)), reduced over
// the block's CONV_TY threads in shared memory in a fixed order, and the finish
// adds the slabs in a fixed order: deterministic, no float atomics.
//
// Generic path (W > 4, or a grid beyond the launch limits): one thread per
// (b,t,c) element, pre recomputed per tap; dw/dbias per slab of (b,t) rows.
// f32 and bf16.
#include "mma.cuh"
#include "perf.cuh"

#define CONV_TX 64
#define CONV_TY 4
#define CONV_TT 16
#define CONV_SPAN (CONV_TY * CONV_TT)
// Blocks an SM the tiled kernels are built for: 5 for 16-bit tiles (48 registers, 175 KiB of
// shared memory in the backward: 40 warps to overlap one block's copies with the others'
// math), 1 for f32 (whose 70 KiB tiles fit 3 anyway).
#define CONV_MINB(T) (sizeof(T) == 2 ? 5 : 1)

// Whether the tiled kernels take this shape (and so how the slabs are cut).
static bool conv_tiled(int64_t B, int64_t T, int64_t W) {
    int64_t tb = (T + CONV_SPAN - 1) / CONV_SPAN;
    return W >= 1 && W <= 4 && B <= 65535 && tb <= 65535 && B * tb <= (1 << 20);
}

extern "C" int chm_cu_conv1d_slabs(int64_t B, int64_t T, int64_t W) {
    int64_t s;
    if (conv_tiled(B, T, W)) s = B * ((T + CONV_SPAN - 1) / CONV_SPAN);
    else s = (B * T + 63) / 64 < 256 ? (B * T + 63) / 64 : 256;
    return (int)(s < 1 ? 1 : s);
}

// ---- tiled path ----

// The per-thread constants: w[c0+v, j] and bias[c0+v] as f32.
template <typename T, int V, int W>
__device__ __forceinline__ void conv_params(float (&wv)[V][W], float (&bv)[V], const T *w,
                                            const T *bias, int64_t c0) {
#pragma unroll
    for (int v = 0; v < V; v++) {
        bv[v] = bias ? to_f(bias[c0 + v]) : 0.0f;
#pragma unroll
        for (int j = 0; j < W; j++) wv[v][j] = to_f(w[(c0 + v) * W + j]);
    }
}

// Rows [r0, r0 + R) of a [T,C] matrix (p at [b, 0, cb], cb the block's first channel) into
// the shared tile [R][CONV_TX] of V-vectors, zeros outside [0, T) and past C: thread
// (x, y) copies column x of rows y, y + CONV_TY, ... By cp.async where a vector is a multiple
// of 4 bytes (the loads of the whole tile in flight at once), else through a register. The
// caller commits, waits and syncs.
template <typename T, int V, int R>
__device__ __forceinline__ void conv_stage(vec_t<T, V> *tile, const T *p, int r0, int T_,
                                           int64_t C, int64_t cb) {
    bool col_ok = cb + (int64_t)threadIdx.x * V < C;
    const T *src = p + (int64_t)(r0 + (int)threadIdx.y) * C + (int64_t)threadIdx.x * V;
    vec_t<T, V> *dst = tile + threadIdx.y * CONV_TX + threadIdx.x;
#pragma unroll 4
    for (int r = threadIdx.y; r < R; r += CONV_TY) {
        int t = r0 + r;
        bool ok = col_ok && t >= 0 && t < T_;
        if (sizeof(T) * V % 4 == 0) {
#pragma unroll
            for (int q = 0; q < (int)(sizeof(T) * V / 4); q++)
                cp_async4((char *)dst + 4 * q, ok ? (const char *)src + 4 * q : (const char *)p,
                          ok);
        } else {
            vec_t<T, V> v;
#pragma unroll
            for (int e = 0; e < V; e++) v.v[e] = from_f<T>(0.0f);
            if (ok) v = vload<T, V>(src);
            *dst = v;
        }
        src += CONV_TY * C;
        dst += CONV_TY * CONV_TX;
    }
}

// sigmoid by the MUFU exp2 and reciprocal: the tiled kernels' SiLU (the accurate expf and
// IEEE division of sigmoidf_, with its slow-path call, were a third of the backward's
// instructions). Relative error below 1e-5 for |x| < 80; 0 and 1 beyond, as the limits.
__device__ __forceinline__ float conv_sigmoid(float x) {
    return __fdividef(1.0f, 1.0f + fast_exp2(-x * 1.4426950408889634f));
}

// Shift the newest input in: win[.][W-1] is time t, win[.][0] is t-(W-1).
template <typename T, int V, int W>
__device__ __forceinline__ void conv_push(float (&win)[V][W], const vec_t<T, V> &in) {
#pragma unroll
    for (int v = 0; v < V; v++) {
#pragma unroll
        for (int j = 0; j + 1 < W; j++) win[v][j] = win[v][j + 1];
        win[v][W - 1] = to_f(in.v[v]);
    }
}

// pre of the newest step, taps in order j = 0..W-1 (like the generic path).
template <int V, int W>
__device__ __forceinline__ float conv_dot(const float (&win)[V][W], const float (&wv)[V][W],
                                          const float (&bv)[V], int v) {
    float acc = bv[v];
#pragma unroll
    for (int j = 0; j < W; j++) acc += wv[v][j] * win[v][j];
    return acc;
}

// Shared memory of the tiled kernels: the x tile (CONV_SPAN + W - 1 rows forward,
// CONV_SPAN + 2(W - 1) backward) and the backward's dout tile (CONV_SPAN + W - 1 rows).
// The backward's also holds the partials' reduction afterwards (conv_block_partial).
template <typename T, int V>
static size_t conv_smem(int64_t W, bool bwd) {
    int64_t rows = bwd ? 2 * CONV_SPAN + 3 * (W - 1) : CONV_SPAN + W - 1;
    size_t tiles = (size_t)rows * CONV_TX * sizeof(vec_t<T, V>);
    size_t red = bwd ? (size_t)CONV_TY * CONV_TX * V * (W + 1) * sizeof(float) : 0;
    return tiles > red ? tiles : red;
}

// grid (ceil(C/(V*CONV_TX)), ceil(T/CONV_SPAN), B): the block stages its x rows, then each
// thread walks its CONV_TT steps of V channels.
template <typename T, int V, int W>
__global__ void __launch_bounds__(CONV_TX *CONV_TY, CONV_MINB(T))
    conv_fwd_tiled(T *__restrict__ out, const T *__restrict__ x, const T *__restrict__ w,
                   const T *__restrict__ bias, int T_, int64_t C, int silu) {
    chm_pdl_enter();
    extern __shared__ __align__(16) unsigned char conv_sm[];
    vec_t<T, V> *xs = (vec_t<T, V> *)conv_sm;  // x from tb - (W - 1)
    int64_t cb = (int64_t)blockIdx.x * CONV_TX * V, c0 = cb + (int64_t)threadIdx.x * V;
    int tb = blockIdx.y * CONV_SPAN, t0 = tb + threadIdx.y * CONV_TT;
    int64_t base = (int64_t)blockIdx.z * T_ * C;
    conv_stage<T, V, CONV_SPAN + W - 1>(xs, x + base + cb, tb - (W - 1), T_, C, cb);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    if (c0 >= C || t0 >= T_) return;
    float wv[V][W], bv[V], win[V][W];
    conv_params<T, V, W>(wv, bv, w, bias, c0);
    const vec_t<T, V> *col = xs + threadIdx.y * CONV_TT * CONV_TX + threadIdx.x;
    T *op = out + base + (int64_t)t0 * C + c0;
#pragma unroll
    for (int j = 0; j + 1 < W; j++) conv_push<T, V, W>(win, col[j * CONV_TX]);
#pragma unroll
    for (int i = 0; i < CONV_TT; i++) {
        if (t0 + i >= T_) break;
        conv_push<T, V, W>(win, col[(i + W - 1) * CONV_TX]);
        vec_t<T, V> o;
#pragma unroll
        for (int v = 0; v < V; v++) {
            float pre = conv_dot<V, W>(win, wv, bv, v);
            o.v[v] = from_f<T>(silu ? pre * conv_sigmoid(pre) : pre);
        }
        vstore<T, V>(op + (int64_t)i * C, o);
    }
}

// The block's dw/dbias partials: acc [V][W+1] of every thread summed over the CONV_TY time
// threads in order y = 0, 1, ..., written to part[slab, c, 0..W]. red: shared memory for
// [CONV_TY][CONV_TX][V (W + 1)] floats, free for it (the caller has synced).
template <int V, int W>
__device__ __forceinline__ void conv_block_partial(float *red, float *part,
                                                   const float (&acc)[V][W + 1], int64_t c0,
                                                   int64_t C, bool live) {
    const int K = V * (W + 1);
    float *mine = red + (threadIdx.y * CONV_TX + threadIdx.x) * K;
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int j = 0; j <= W; j++) mine[v * (W + 1) + j] = acc[v][j];
    __syncthreads();
    if (threadIdx.y != 0 || !live) return;
    int64_t slab = (int64_t)blockIdx.z * gridDim.y + blockIdx.y;
    float *dst = part + (slab * C + c0) * (W + 1);
    for (int k = 0; k < K; k++) {
        float s = 0.0f;
        for (int y = 0; y < CONV_TY; y++) s += red[(y * CONV_TX + threadIdx.x) * K + k];
        dst[k] = s;
    }
}

// grid (ceil(C/(V*CONV_TX)), ceil(T/CONV_SPAN), B). The block stages x from tb - (W - 1)
// and dout from tb (g runs W - 1 steps past the block's span, g = 0 at t >= T: those feed
// dx of its last steps). A thread's steps are [t0, t1): it computes g for t0 .. t1+W-2,
// dw/dbias over its own steps and dx[s] = sum_j g[s+(W-1)-j] w[j] for s in [t0, t1).
// SET: dx is written, its old values not loaded.
template <typename T, int V, int W, bool SET>
__global__ void __launch_bounds__(CONV_TX *CONV_TY, CONV_MINB(T))
    conv_bwd_tiled(T *__restrict__ dx, float *__restrict__ part, const T *__restrict__ dout,
                   const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ bias,
                   int T_, int64_t C, int silu) {
    chm_pdl_enter();
    const int RX = CONV_SPAN + 2 * (W - 1), RD = CONV_SPAN + W - 1;
    extern __shared__ __align__(16) unsigned char conv_sm[];
    vec_t<T, V> *xs = (vec_t<T, V> *)conv_sm, *ds = xs + RX * CONV_TX;
    int64_t cb = (int64_t)blockIdx.x * CONV_TX * V, c0 = cb + (int64_t)threadIdx.x * V;
    int tb = blockIdx.y * CONV_SPAN, t0 = tb + threadIdx.y * CONV_TT;
    int64_t base = (int64_t)blockIdx.z * T_ * C;
    conv_stage<T, V, RX>(xs, x + base + cb, tb - (W - 1), T_, C, cb);
    conv_stage<T, V, RD>(ds, dout + base + cb, tb, T_, C, cb);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    bool live = c0 < C;
    float acc[V][W + 1];
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int j = 0; j <= W; j++) acc[v][j] = 0.0f;
    if (live && t0 < T_) {
        float wv[V][W], bv[V], xw[V][W], gw[V][W];  // gw[.][W-1]: g of the newest step
        conv_params<T, V, W>(wv, bv, w, bias, c0);
        T *dxp = dx + base + (int64_t)t0 * C + c0;
        const vec_t<T, V> *xc = xs + threadIdx.y * CONV_TT * CONV_TX + threadIdx.x;
        const vec_t<T, V> *dc = ds + threadIdx.y * CONV_TT * CONV_TX + threadIdx.x;
#pragma unroll
        for (int v = 0; v < V; v++)
#pragma unroll
            for (int j = 0; j < W; j++) xw[v][j] = gw[v][j] = 0.0f;
#pragma unroll
        for (int j = 0; j + 1 < W; j++) conv_push<T, V, W>(xw, xc[j * CONV_TX]);
#pragma unroll
        for (int i = 0; i < CONV_TT + W - 1; i++) {
            int t = t0 + i, s = t - (W - 1);
            if (s >= T_) break;
            conv_push<T, V, W>(xw, xc[(i + W - 1) * CONV_TX]);
            vec_t<T, V> din = dc[i * CONV_TX];
            float dv[V];
            bool own = i < CONV_TT;
#pragma unroll
            for (int v = 0; v < V; v++) {
                float g = to_f(din.v[v]);  // 0 at t >= T (staged as zeros)
                if (silu && t < T_) {
                    float pre = conv_dot<V, W>(xw, wv, bv, v), sg = conv_sigmoid(pre);
                    g *= sg * (1.0f + pre * (1.0f - sg));
                }
#pragma unroll
                for (int j = 0; j + 1 < W; j++) gw[v][j] = gw[v][j + 1];
                gw[v][W - 1] = g;
                if (own) {
#pragma unroll
                    for (int j = 0; j < W; j++) acc[v][j] += g * xw[v][j];
                    acc[v][W] += g;
                }
                dv[v] = 0.0f;
#pragma unroll
                for (int j = 0; j < W; j++) dv[v] += gw[v][W - 1 - j] * wv[v][j];
            }
            if (s >= t0) {
                T *dst = dxp + (int64_t)(i - (W - 1)) * C;
                vec_t<T, V> o;
                if (!SET) o = vload<T, V>(dst);
#pragma unroll
                for (int v = 0; v < V; v++) o.v[v] = from_f<T>(SET ? dv[v] : to_f(o.v[v]) + dv[v]);
                vstore<T, V>(dst, o);
            }
        }
    }
    __syncthreads();  // the tiles are dead: their memory takes the partials' reduction
    conv_block_partial<V, W>((float *)conv_sm, part, acc, c0, C, live);
}

// ---- generic path ----

// pre of element (b,t,c) from the W taps of channel c.
template <typename T>
__device__ __forceinline__ float conv_pre(const T *x, const T *w, const T *bias, int64_t b,
                                          int64_t t, int64_t c, int64_t T_, int64_t C,
                                          int64_t W) {
    float acc = bias ? to_f(bias[c]) : 0.0f;
    for (int64_t j = 0; j < W; j++) {
        int64_t src = t - (W - 1) + j;
        if (src >= 0) acc += to_f(w[c * W + j]) * to_f(x[(b * T_ + src) * C + c]);
    }
    return acc;
}

// dL/dpre at (b,t,c) from dL/dout.
template <typename T>
__device__ __forceinline__ float conv_g(const T *dout, const T *x, const T *w, const T *bias,
                                        int64_t b, int64_t t, int64_t c, int64_t T_, int64_t C,
                                        int64_t W, int silu) {
    float g = to_f(dout[(b * T_ + t) * C + c]);
    if (silu) {
        float pre = conv_pre(x, w, bias, b, t, c, T_, C, W), s = sigmoidf_(pre);
        g *= s * (1.0f + pre * (1.0f - s));
    }
    return g;
}

template <typename T>
__global__ void conv_fwd_kernel(T *out, const T *x, const T *w, const T *bias, int64_t B,
                                int64_t T_, int64_t C, int64_t W, int silu) {
    chm_pdl_enter();
    int64_t n = B * T_ * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % C, bt = i / C, t = bt % T_, b = bt / T_;
        float pre = conv_pre(x, w, bias, b, t, c, T_, C, W);
        out[i] = from_f<T>(silu ? pre * sigmoidf_(pre) : pre);
    }
}

// dx[b,s,c] += (or with set =) sum_j g[b, s+(W-1)-j, c] * w[c,j] over outputs inside [0,T).
template <typename T>
__global__ void conv_dx_kernel(T *dx, const T *dout, const T *x, const T *w, const T *bias,
                               int64_t B, int64_t T_, int64_t C, int64_t W, int silu, int set) {
    chm_pdl_enter();
    int64_t n = B * T_ * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % C, bt = i / C, s = bt % T_, b = bt / T_;
        float acc = 0.0f;
        for (int64_t j = 0; j < W; j++) {
            int64_t t = s + (W - 1) - j;
            if (t < T_)
                acc += conv_g(dout, x, w, bias, b, t, c, T_, C, W, silu) * to_f(w[c * W + j]);
        }
        dx[i] = from_f<T>(set ? acc : to_f(dx[i]) + acc);
    }
}

// grid (ceil(C*(W+1)/128), S): one (c, tap) of one slab of (b,t) rows; tap W is dbias.
template <typename T>
__global__ void conv_dw_kernel(float *part, const T *dout, const T *x, const T *w, const T *bias,
                               int64_t B, int64_t T_, int64_t C, int64_t W, int silu) {
    chm_pdl_enter();
    int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, rows = B * T_;
    int S = gridDim.y, slab = blockIdx.y;
    if (k >= C * (W + 1)) return;
    int64_t c = k / (W + 1), j = k % (W + 1);
    int64_t per = (rows + S - 1) / S, r0 = slab * per, r1 = r0 + per < rows ? r0 + per : rows;
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / T_, t = r % T_, src = t - (W - 1) + j;
        if (j < W && src < 0) continue;
        float g = conv_g(dout, x, w, bias, b, t, c, T_, C, W, silu);
        acc += j == W ? g : g * to_f(x[(b * T_ + src) * C + c]);
    }
    part[(int64_t)slab * C * (W + 1) + k] = acc;
}


// ---- finish and launchers ----

// grid ceil(C*(W+1)/FIN_X), block (FIN_X, FIN_Y): dw and dbias from the slab partials.
template <typename T>
__global__ void conv_finish_kernel(T *dw, T *dbias, const float *part, int S, int64_t C,
                                   int64_t W) {
    chm_pdl_enter();
    int64_t N = C * (W + 1), k = (int64_t)blockIdx.x * FIN_X + threadIdx.x;
    float acc = slab_sum(part, S, N, k);
    if (threadIdx.y != 0 || k >= N) return;
    int64_t c = k / (W + 1), j = k % (W + 1);
    if (j < W) dw[c * W + j] = from_f<T>(to_f(dw[c * W + j]) + acc);
    else if (dbias) dbias[c] = from_f<T>(to_f(dbias[c]) + acc);
}

// Whether the pair (V = 2) accesses suit C and every [B,T,C] pointer.
template <typename T>
static bool conv_pairs(int64_t C, const void *a, const void *b, const void *c, const void *d) {
    size_t n = 2 * sizeof(T);
    return C % 2 == 0 && ptr_aligned(a, n) && ptr_aligned(b, n) && ptr_aligned(c, n) &&
           ptr_aligned(d, n);
}

// Run BODY with the compile-time tap count WW = W (1..4) and pair width VV.
#define CONV_DISPATCH_WV(W, pairs, ...)                                          \
    do {                                                                         \
        if (pairs) {                                                             \
            const int VV = 2;                                                    \
            switch (W) {                                                         \
            case 1: { const int WW = 1; __VA_ARGS__; } break;                    \
            case 2: { const int WW = 2; __VA_ARGS__; } break;                    \
            case 3: { const int WW = 3; __VA_ARGS__; } break;                    \
            default: { const int WW = 4; __VA_ARGS__; } break;                   \
            }                                                                    \
        } else {                                                                 \
            const int VV = 1;                                                    \
            switch (W) {                                                         \
            case 1: { const int WW = 1; __VA_ARGS__; } break;                    \
            case 2: { const int WW = 2; __VA_ARGS__; } break;                    \
            case 3: { const int WW = 3; __VA_ARGS__; } break;                    \
            default: { const int WW = 4; __VA_ARGS__; } break;                   \
            }                                                                    \
        }                                                                        \
    } while (0)

static dim3 conv_grid(int64_t B, int64_t T, int64_t C, int V) {
    int64_t cx = (C + (int64_t)V * CONV_TX - 1) / ((int64_t)V * CONV_TX);
    return dim3((unsigned)cx, (unsigned)((T + CONV_SPAN - 1) / CONV_SPAN), (unsigned)B);
}

template <typename T>
static void conv_fwd_launch(T *out, const T *x, const T *w, const T *bias, int64_t B, int64_t nT,
                            int64_t C, int64_t W, int silu, cudaStream_t s) {
    int64_t n = B * nT * C;
    if (!conv_tiled(B, nT, W)) {
        chm_launch(conv_fwd_kernel<T>, grid_for(n, 256), 256, 0, s, out, x, w, bias, B, nT, C, W,
                   silu);
        return;
    }
    dim3 blk(CONV_TX, CONV_TY);
    CONV_DISPATCH_WV(W, (conv_pairs<T>(C, out, x, x, out)), {
        size_t sm = conv_smem<T, VV>(WW, false);
        (void)chm_allow_smem(conv_fwd_tiled<T, VV, WW>, sm);  // a failure fails the launch
        chm_launch(conv_fwd_tiled<T, VV, WW>, conv_grid(B, nT, C, VV), blk, sm, s, out, x, w,
                   bias, (int)nT, C, silu);
    });
}

template <typename T>
static void conv_bwd_launch(T *dx, float *part, const T *dout, const T *x, const T *w,
                            const T *bias, int64_t B, int64_t nT, int64_t C, int64_t W, int silu,
                            bool set, cudaStream_t s) {
    int64_t n = B * nT * C;
    if (!conv_tiled(B, nT, W)) {
        dim3 gdw((unsigned)((C * (W + 1) + 127) / 128), (unsigned)chm_cu_conv1d_slabs(B, nT, W));
        chm_launch(conv_dx_kernel<T>, grid_for(n, 256), 256, 0, s, dx, dout, x, w, bias, B, nT, C,
                   W, silu, set ? 1 : 0);
        chm_launch(conv_dw_kernel<T>, gdw, 128, 0, s, part, dout, x, w, bias, B, nT, C, W, silu);
        return;
    }
    dim3 blk(CONV_TX, CONV_TY);
    CONV_DISPATCH_WV(W, (conv_pairs<T>(C, dx, dout, x, dx)), {
        size_t sm = conv_smem<T, VV>(WW, true);
        auto kern = set ? conv_bwd_tiled<T, VV, WW, true> : conv_bwd_tiled<T, VV, WW, false>;
        (void)chm_allow_smem(kern, sm);  // a failure fails the launch
        chm_launch(kern, conv_grid(B, nT, C, VV), blk, sm, s, dx, part, dout, x, w, bias,
                   (int)nT, C, silu);
    });
}

extern "C" cudaError_t chm_cu_conv1d_fwd(void *out, const void *x, const void *w,
                                         const void *bias, int64_t B, int64_t T, int64_t C,
                                         int64_t W, bool silu, chm_dtype dt, cudaStream_t s) {
    if (B * T * C <= 0) return cudaSuccess;
    CHM_CU_DISPATCH2(dt, T_,
                     conv_fwd_launch<T_>((T_ *)out, (const T_ *)x, (const T_ *)w,
                                         (const T_ *)bias, B, T, C, W, silu ? 1 : 0, s));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_conv1d_bwd(void *dx, float *part, const void *dout, const void *x,
                                         const void *w, const void *bias, int64_t B, int64_t T,
                                         int64_t C, int64_t W, bool silu, bool dx_set,
                                         chm_dtype dt, cudaStream_t s) {
    if (C <= 0) return cudaSuccess;
    if (B * T <= 0) {  // no rows: the partials are zeros
        size_t n = (size_t)chm_cu_conv1d_slabs(B, T, W) * (size_t)(C * (W + 1)) * sizeof(float);
        return cudaMemsetAsync(part, 0, n, s);
    }
    CHM_CU_DISPATCH2(dt, T_,
                     conv_bwd_launch<T_>((T_ *)dx, part, (const T_ *)dout, (const T_ *)x,
                                         (const T_ *)w, (const T_ *)bias, B, T, C, W,
                                         silu ? 1 : 0, dx_set, s));
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_conv1d_bwd_finish(void *dw, void *dbias, const float *part, int S,
                                                int64_t C, int64_t W, chm_dtype dt,
                                                cudaStream_t s) {
    if (C <= 0) return cudaSuccess;
    unsigned g = (unsigned)((C * (W + 1) + FIN_X - 1) / FIN_X);
    CHM_CU_DISPATCH2(dt, T_,
                     chm_launch(conv_finish_kernel<T_>, g, dim3(FIN_X, FIN_Y), 0, s, (T_ *)dw,
                                (T_ *)dbias, part, S, C, W));
    return cudaGetLastError();
}
