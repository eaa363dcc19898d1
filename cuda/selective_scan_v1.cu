// selective_scan_v1.cu: the session-2 selective scan (forward 1.36 ms, backward 5.17 ms at
// B=8 T=2048 Di=2048 N=16 bf16 on an H100), kept as the default while the rewrite in
// selective_scan_fwd.cu / selective_scan_bwd.cu (selective_scan.cuh) has not run on a GPU:
// CHIMERA_CUDA_SCAN=2 selects the rewrite (chm_cu_scan_fwd and friends dispatch). Delete this
// file once the rewrite has passed tools/gpu_check.sh and become the default.
//
// Algorithm (as it was): the N <= 16 states of a channel in f32 registers, time walked in order;
// forward four lanes per (b, channel); backward from checkpoints every SCAN_L steps, one thread
// per (b, channel), dBm/dCm reduced per warp and finished in a fixed order (no float atomics).
// Everything below lives in an unnamed namespace: the rewrite uses the same kernel and struct
// names, and internal linkage keeps the two apart.

#include "common.cuh"

namespace {

#define SCAN_NMAX CHM_CU_SCAN_MAX_N
#define SCAN_FWD_THREADS 128 /* forward block (32 channels x 4 lanes); the ckpt kernel's too */
#define SCAN_FWD_TCHUNK 32   /* forward: steps whose inputs are loaded together */
#define SCAN_L 16            /* backward chunk: checkpoint interval and stash length */
#define SCAN_BWD_THREADS 32  /* one warp per block: the dBm/dCm reduce-scatter is the block's */
#define SCAN_LOG2E 1.4426950408889634f
#define SCAN_LN2 0.6931471805599453f

// The per-call constants every scan kernel reads.
struct scan_k {
    const void *u, *delta, *A, *Bm, *Cm, *D, *z, *db;
    int64_t B, T, Di, N;
    int softplus;
};

// Stage steps [t0, t0+steps) of Bm and Cm of batch b into Bs, Cs [chunk][16], zero-padded.
template <typename T>
__device__ __forceinline__ void stage_bc(float *Bs, float *Cs, const scan_k &k, int64_t b,
                                         int64_t t0, int steps, int chunk) {
    const T *Bm = (const T *)k.Bm, *Cm = (const T *)k.Cm;
    for (int i = threadIdx.x; i < chunk * SCAN_NMAX; i += blockDim.x) {
        int tt = i / SCAN_NMAX, n = i % SCAN_NMAX;
        bool ok = tt < steps && n < k.N;
        int64_t at = (b * k.T + t0 + tt) * k.N + n;
        Bs[i] = ok ? to_f(Bm[at]) : 0.0f;
        Cs[i] = ok ? to_f(Cm[at]) : 0.0f;
    }
}

// The channel's A row (times log2 e, zero past N), D and delta_bias.
template <typename T>
__device__ __forceinline__ void load_channel(float *A2, float *Dc, float *bias, const scan_k &k,
                                             int64_t c, bool live) {
    const T *A = (const T *)k.A;
#pragma unroll
    for (int n = 0; n < SCAN_NMAX; n++)
        A2[n] = (live && n < k.N) ? to_f(A[c * k.N + n]) * SCAN_LOG2E : 0.0f;
    *Dc = (live && k.D) ? to_f(((const T *)k.D)[c]) : 0.0f;
    *bias = (live && k.db) ? to_f(((const T *)k.db)[c]) : 0.0f;
}

// Step d from the raw delta x (bias added): softplus(x) or x; *dsig = dd/dx.
__device__ __forceinline__ float step_d(const scan_k &k, float x, float *dsig) {
    if (!k.softplus) {
        *dsig = 1.0f;
        return x;
    }
    *dsig = sigmoidf_(x);
    return softplusf_(x);
}

// This thread's delta, u (and z when zz) for steps [t0, t0+steps), into registers:
// fully unrolled, so every load is in flight before the first is used (the loop
// over time is otherwise one memory latency per step).
template <typename T, int L>
__device__ __forceinline__ void prefetch_steps(float *dl, float *uu, float *zz, const scan_k &k,
                                               int64_t b, int64_t c, int64_t t0, int steps,
                                               bool live) {
#pragma unroll
    for (int tt = 0; tt < L; tt++) {
        bool ok = live && tt < steps;
        int64_t idx = (b * k.T + t0 + tt) * k.Di + c;
        dl[tt] = ok ? to_f(((const T *)k.delta)[idx]) : 0.0f;
        uu[tt] = ok ? to_f(((const T *)k.u)[idx]) : 0.0f;
        if (zz) zz[tt] = (ok && k.z) ? to_f(((const T *)k.z)[idx]) : 0.0f;
    }
}

// Forward: each channel's 16 states are split over SCAN_FWD_LANES lanes (4 each),
// so a block of 128 threads covers 32 channels and the grid has four times the
// warps of one thread per channel (the step loop is latency-bound, not math-bound).
// The lanes of a channel add their parts of y with two shuffles per step.
#define SCAN_FWD_LANES 4
#define SCAN_FWD_NQ (SCAN_NMAX / SCAN_FWD_LANES)
#define SCAN_FWD_CH (SCAN_FWD_THREADS / SCAN_FWD_LANES)

template <typename T>
__global__ void __launch_bounds__(SCAN_FWD_THREADS) scan_fwd_kernel(T *y, scan_k k) {
    __shared__ float Bs[SCAN_FWD_TCHUNK * SCAN_NMAX], Cs[SCAN_FWD_TCHUNK * SCAN_NMAX];
    int q = threadIdx.x % SCAN_FWD_LANES, n0 = q * SCAN_FWD_NQ;
    int64_t b = blockIdx.y, c = blockIdx.x * (int64_t)SCAN_FWD_CH + threadIdx.x / SCAN_FWD_LANES;
    bool live = c < k.Di;
    float A2[SCAN_NMAX], h[SCAN_FWD_NQ], Dc, bias, dsig;
    load_channel<T>(A2, &Dc, &bias, k, c, live);
#pragma unroll
    for (int j = 0; j < SCAN_FWD_NQ; j++) {
        h[j] = 0.0f;
        A2[j] = A2[n0 + j];  // this lane's states (n0 is not a constant: copy, then use A2[j])
    }
    for (int64_t t0 = 0; t0 < k.T; t0 += SCAN_FWD_TCHUNK) {
        int steps = (int)(k.T - t0 < SCAN_FWD_TCHUNK ? k.T - t0 : SCAN_FWD_TCHUNK);
        float dl[SCAN_FWD_TCHUNK], uu[SCAN_FWD_TCHUNK], zz[SCAN_FWD_TCHUNK];
        prefetch_steps<T, SCAN_FWD_TCHUNK>(dl, uu, zz, k, b, c, t0, steps, live);
        __syncthreads();
        stage_bc<T>(Bs, Cs, k, b, t0, steps, SCAN_FWD_TCHUNK);
        __syncthreads();
#pragma unroll
        for (int tt = 0; tt < SCAN_FWD_TCHUNK; tt++) {
            if (tt >= steps) continue;  // uniform: every lane of the warp agrees
            float dv = step_d(k, dl[tt] + bias, &dsig), du = dv * uu[tt], yv = 0.0f;
#pragma unroll
            for (int j = 0; j < SCAN_FWD_NQ; j++) {
                h[j] = fmaf(exp2f(dv * A2[j]), h[j], du * Bs[tt * SCAN_NMAX + n0 + j]);
                yv = fmaf(Cs[tt * SCAN_NMAX + n0 + j], h[j], yv);
            }
            yv += __shfl_xor_sync(0xffffffffu, yv, 1);
            yv += __shfl_xor_sync(0xffffffffu, yv, 2);
            if (live && q == 0) {
                yv = fmaf(Dc, uu[tt], yv);
                if (k.z) yv *= zz[tt] * sigmoidf_(zz[tt]);
                y[(b * k.T + t0 + tt) * k.Di + c] = from_f<T>(yv);
            }
        }
    }
}

// Backward step 1: the state at the start of every chunk k >= 1 into ckpt [B, nck, 16, Di];
// lanes split the states like the forward.
template <typename T>
__global__ void __launch_bounds__(SCAN_FWD_THREADS) scan_ckpt_kernel(float *ckpt, scan_k k) {
    __shared__ float Bs[SCAN_L * SCAN_NMAX], Cs[SCAN_L * SCAN_NMAX];
    int q = threadIdx.x % SCAN_FWD_LANES, n0 = q * SCAN_FWD_NQ;
    int64_t b = blockIdx.y, c = blockIdx.x * (int64_t)SCAN_FWD_CH + threadIdx.x / SCAN_FWD_LANES;
    int64_t nck = (k.T + SCAN_L - 1) / SCAN_L;
    bool live = c < k.Di;
    float A2[SCAN_NMAX], h[SCAN_FWD_NQ], Dc, bias, dsig;
    load_channel<T>(A2, &Dc, &bias, k, c, live);
#pragma unroll
    for (int j = 0; j < SCAN_FWD_NQ; j++) {
        h[j] = 0.0f;
        A2[j] = A2[n0 + j];
    }
    for (int64_t ck = 0; ck < nck; ck++) {
        int64_t t0 = ck * SCAN_L;
        int steps = (int)(k.T - t0 < SCAN_L ? k.T - t0 : SCAN_L);
        if (live && ck > 0) {
            float *dst = ckpt + ((b * nck + ck) * SCAN_NMAX + n0) * k.Di + c;
#pragma unroll
            for (int j = 0; j < SCAN_FWD_NQ; j++) dst[j * k.Di] = h[j];
        }
        if (ck == nck - 1) break;  // the last chunk's end state is not needed
        float dl[SCAN_L], uu[SCAN_L];
        prefetch_steps<T, SCAN_L>(dl, uu, NULL, k, b, c, t0, steps, live);
        __syncthreads();
        stage_bc<T>(Bs, Cs, k, b, t0, steps, SCAN_L);
        __syncthreads();
        if (!live) continue;
#pragma unroll
        for (int tt = 0; tt < SCAN_L; tt++) {
            if (tt >= steps) continue;
            float dv = step_d(k, dl[tt] + bias, &dsig), du = dv * uu[tt];
#pragma unroll
            for (int j = 0; j < SCAN_FWD_NQ; j++)
                h[j] = fmaf(exp2f(dv * A2[j]), h[j], du * Bs[tt * SCAN_NMAX + n0 + j]);
        }
    }
}

// One stage of the reduce-scatter: lanes with bit OFF set keep the upper half.
#define SCAN_RS_STAGE(OFF)                                                   \
    {                                                                        \
        bool up = (lane & (OFF)) != 0;                                       \
        _Pragma("unroll") for (int i = 0; i < (OFF); i++) {                  \
            float send = up ? v[i] : v[i + (OFF)];                           \
            float keep = up ? v[i + (OFF)] : v[i];                           \
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, (OFF));         \
        }                                                                    \
    }

// Lane l of the warp returns the warp's sum of v[l] (v: 32 values per lane; 31 shuffles).
__device__ __forceinline__ float reduce_scatter32(float *v) {
    int lane = threadIdx.x & 31;
    SCAN_RS_STAGE(16) SCAN_RS_STAGE(8) SCAN_RS_STAGE(4) SCAN_RS_STAGE(2) SCAN_RS_STAGE(1)
    return v[0];
}

// Gradient pointers and the scratch partials of the main kernel.
struct scan_g {
    void *du, *ddelta, *dz;
    const void *dy;
    const float *ckpt;
    float *pbc;                  /* [B, nblk, T, 32]: dBm (0..15) and dCm (16..31) partials */
    float *pA, *pD, *pdb;        /* [B, Di, 16], [B, Di], [B, Di] */
};

// The main kernel's shared memory: per-step values of each thread's channel for one
// chunk ([SCAN_L][SCAN_BWD_THREADS]; each thread touches only its own column), the
// recomputed states, Bm/Cm and the reduce-scatter results.
struct scan_smem {
    float d[SCAN_L][SCAN_BWD_THREADS], dsig[SCAN_L][SCAN_BWD_THREADS];
    float u[SCAN_L][SCAN_BWD_THREADS], dy[SCAN_L][SCAN_BWD_THREADS], z[SCAN_L][SCAN_BWD_THREADS];
    float gdu[SCAN_L][SCAN_BWD_THREADS], gdd[SCAN_L][SCAN_BWD_THREADS];
    float gdz[SCAN_L][SCAN_BWD_THREADS];
    float hs[SCAN_L][SCAN_NMAX][SCAN_BWD_THREADS];   /* h[t] of the chunk */
    float Bs[SCAN_L * SCAN_NMAX], Cs[SCAN_L * SCAN_NMAX];
    float red[SCAN_L][32];
};

// This thread's per-step inputs of the chunk into shared memory (zeros when idle).
template <typename T>
__device__ __forceinline__ void load_chunk(scan_smem &sm, const scan_k &k, const scan_g &g,
                                           int64_t b, int64_t c, int64_t t0, int steps,
                                           float bias, bool live) {
    int i = threadIdx.x;
    float raw[SCAN_L], uu[SCAN_L], zz[SCAN_L], dd[SCAN_L];
    prefetch_steps<T, SCAN_L>(raw, uu, zz, k, b, c, t0, steps, live);
#pragma unroll
    for (int tt = 0; tt < SCAN_L; tt++) {
        bool ok = live && tt < steps;
        dd[tt] = ok ? to_f(((const T *)g.dy)[(b * k.T + t0 + tt) * k.Di + c]) : 0.0f;
    }
#pragma unroll
    for (int tt = 0; tt < SCAN_L; tt++) {
        float dsig, dv = step_d(k, raw[tt] + bias, &dsig);
        bool ok = live && tt < steps;
        sm.d[tt][i] = ok ? dv : 0.0f;
        sm.dsig[tt][i] = ok ? dsig : 0.0f;
        sm.u[tt][i] = uu[tt];
        sm.dy[tt][i] = dd[tt];
        sm.z[tt][i] = zz[tt];
    }
}

// Recompute the chunk's states from hs0 (the state before t0) into the stash.
__device__ __forceinline__ void chunk_states(scan_smem &sm, const float *hs0, const float *A2,
                                             int steps) {
    int i = threadIdx.x;
    float h[SCAN_NMAX];
#pragma unroll
    for (int n = 0; n < SCAN_NMAX; n++) h[n] = hs0[n];
    for (int tt = 0; tt < steps; tt++) {
        float dv = sm.d[tt][i], du = dv * sm.u[tt][i];
#pragma unroll
        for (int n = 0; n < SCAN_NMAX; n++) {
            h[n] = fmaf(exp2f(dv * A2[n]), h[n], du * sm.Bs[tt * SCAN_NMAX + n]);
            sm.hs[tt][n][i] = h[n];
        }
    }
}

// Per-thread running sums of the main kernel.
struct scan_acc {
    float dhc[SCAN_NMAX], dA[SCAN_NMAX];
    float dD, ddb;
};

// One reverse step tt of a chunk (idle threads hold zeros and compute zeros); the
// per-element gradients go to sm.gdu/gdd/gdz, the dBm/dCm terms to v.
__device__ __forceinline__ void reverse_step(scan_acc &acc, float *v, scan_smem &sm,
                                             const float *hs0, const float *A2, const scan_k &k,
                                             int tt, float Dc) {
    int i = threadIdx.x;
    float dv = sm.d[tt][i], uv = sm.u[tt][i], dyv = sm.dy[tt][i], dyr = dyv;
    const float *Cs = sm.Cs + tt * SCAN_NMAX, *Bs = sm.Bs + tt * SCAN_NMAX;
    if (k.z) {
        float zv = sm.z[tt][i], s = sigmoidf_(zv), yraw = Dc * uv;
#pragma unroll
        for (int n = 0; n < SCAN_NMAX; n++) yraw = fmaf(Cs[n], sm.hs[tt][n][i], yraw);
        dyr = dyv * zv * s;
        sm.gdz[tt][i] = dyv * yraw * s * (1.0f + zv * (1.0f - s));
    }
    float du = dyr * Dc, dd = 0.0f;
    acc.dD += dyr * uv;
#pragma unroll
    for (int n = 0; n < SCAN_NMAX; n++) {
        float hn = sm.hs[tt][n][i], hp = tt > 0 ? sm.hs[tt - 1][n][i] : hs0[n];
        float dec = exp2f(dv * A2[n]);
        float dh = fmaf(dyr, Cs[n], acc.dhc[n]);
        v[SCAN_NMAX + n] = dyr * hn;  // dCm
        v[n] = dh * dv * uv;          // dBm
        du = fmaf(dh * dv, Bs[n], du);
        dd = fmaf(dh, A2[n] * SCAN_LN2 * dec * hp + Bs[n] * uv, dd);
        acc.dA[n] = fmaf(dh * dv * dec, hp, acc.dA[n]);
        acc.dhc[n] = dh * dec;
    }
    float ds = dd * sm.dsig[tt][i];
    sm.gdu[tt][i] = du;
    sm.gdd[tt][i] = ds;
    acc.ddb += ds;
}

// Add the chunk's per-element gradients into du, ddelta, dz (loads in flight together).
template <typename T>
__device__ __forceinline__ void store_chunk(scan_smem &sm, const scan_k &k, const scan_g &g,
                                            int64_t b, int64_t c, int64_t t0, int steps) {
    int i = threadIdx.x;
    T *outs[3] = {(T *)g.du, (T *)g.ddelta, k.z ? (T *)g.dz : NULL};
    float(*vals[3])[SCAN_BWD_THREADS] = {sm.gdu, sm.gdd, sm.gdz};
#pragma unroll
    for (int o = 0; o < 3; o++) {
        T *p = outs[o];
        if (!p) continue;
        float old[SCAN_L];
#pragma unroll
        for (int tt = 0; tt < SCAN_L; tt++)
            old[tt] = tt < steps ? to_f(p[(b * k.T + t0 + tt) * k.Di + c]) : 0.0f;
#pragma unroll
        for (int tt = 0; tt < SCAN_L; tt++)
            if (tt < steps) p[(b * k.T + t0 + tt) * k.Di + c] = from_f<T>(old[tt] + vals[o][tt][i]);
    }
}

template <typename T>
__global__ void __launch_bounds__(SCAN_BWD_THREADS) scan_bwd_kernel(scan_k k, scan_g g) {
    extern __shared__ __align__(16) unsigned char scan_raw[];
    scan_smem &sm = *(scan_smem *)scan_raw;
    int64_t b = blockIdx.y, c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t nck = (k.T + SCAN_L - 1) / SCAN_L, nblk = gridDim.x;
    bool live = c < k.Di;
    int lane = threadIdx.x & 31;
    float A2[SCAN_NMAX], hs0[SCAN_NMAX], v[2 * SCAN_NMAX], Dc, bias;
    scan_acc acc;
    load_channel<T>(A2, &Dc, &bias, k, c, live);
#pragma unroll
    for (int n = 0; n < SCAN_NMAX; n++) acc.dhc[n] = acc.dA[n] = 0.0f;
    acc.dD = acc.ddb = 0.0f;
    for (int64_t ck = nck - 1; ck >= 0; ck--) {
        int64_t t0 = ck * SCAN_L;
        int steps = (int)(k.T - t0 < SCAN_L ? k.T - t0 : SCAN_L);
        load_chunk<T>(sm, k, g, b, c, t0, steps, bias, live);
#pragma unroll
        for (int n = 0; n < SCAN_NMAX; n++)
            hs0[n] = (live && ck > 0) ? g.ckpt[((b * nck + ck) * SCAN_NMAX + n) * k.Di + c] : 0.0f;
        __syncthreads();  // the previous chunk is done with Bs, Cs, red
        stage_bc<T>(sm.Bs, sm.Cs, k, b, t0, steps, SCAN_L);
        __syncthreads();
        chunk_states(sm, hs0, A2, steps);
        for (int tt = steps - 1; tt >= 0; tt--) {
            reverse_step(acc, v, sm, hs0, A2, k, tt, Dc);
            sm.red[tt][lane] = reduce_scatter32(v);
        }
        if (live) store_chunk<T>(sm, k, g, b, c, t0, steps);
        __syncwarp();
        for (int tt = 0; tt < steps; tt++)
            g.pbc[((b * nblk + blockIdx.x) * k.T + t0 + tt) * 32 + lane] = sm.red[tt][lane];
    }
    if (!live) return;
#pragma unroll
    for (int n = 0; n < SCAN_NMAX; n++) g.pA[(b * k.Di + c) * SCAN_NMAX + n] = acc.dA[n];
    g.pD[b * k.Di + c] = acc.dD;
    g.pdb[b * k.Di + c] = acc.ddb;
}

// dBm/dCm [B,T,N] += the channel-block partials, in block order.
template <typename T>
__global__ void scan_bc_finish_kernel(T *dBm, T *dCm, const float *pbc, int64_t B, int64_t Tn,
                                      int64_t N, int64_t nblk) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < B * Tn * 32;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t l = i % 32, bt = i / 32, t = bt % Tn, b = bt / Tn, n = l % SCAN_NMAX;
        T *dst = l < SCAN_NMAX ? dBm : dCm;
        if (!dst || n >= N) continue;
        float s = 0.0f;
        for (int64_t blk = 0; blk < nblk; blk++) s += pbc[((b * nblk + blk) * Tn + t) * 32 + l];
        int64_t at = (b * Tn + t) * N + n;
        dst[at] = from_f<T>(to_f(dst[at]) + s);
    }
}

// dA [Di,N], dD [Di], ddelta_bias [Di] += the per-batch-row partials, in b order.
template <typename T>
__global__ void scan_chan_finish_kernel(T *dA, T *dD, T *ddb, const float *pA, const float *pD,
                                        const float *pdb, int64_t B, int64_t Di, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < Di * SCAN_NMAX;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i / SCAN_NMAX, n = i % SCAN_NMAX;
        if (dA && n < N) {
            float s = 0.0f;
            for (int64_t b = 0; b < B; b++) s += pA[(b * Di + c) * SCAN_NMAX + n];
            dA[c * N + n] = from_f<T>(to_f(dA[c * N + n]) + s);
        }
        if (n == 0 && dD) {
            float s = 0.0f;
            for (int64_t b = 0; b < B; b++) s += pD[b * Di + c];
            dD[c] = from_f<T>(to_f(dD[c]) + s);
        }
        if (n == 1 && ddb) {
            float s = 0.0f;
            for (int64_t b = 0; b < B; b++) s += pdb[b * Di + c];
            ddb[c] = from_f<T>(to_f(ddb[c]) + s);
        }
    }
}

static scan_k scan_consts(const chm_cu_scan *a) {
    scan_k k = {a->u, a->delta, a->A, a->Bm, a->Cm, a->D, a->z, a->delta_bias,
                a->B, a->T, a->Di, a->N, a->softplus ? 1 : 0};
    return k;
}

}  // namespace
extern "C" cudaError_t chm_cu_scan_v1_fwd(void *y, const chm_cu_scan *a, cudaStream_t s) {
    if (a->B * a->T * a->Di <= 0) return cudaSuccess;
    if (a->N > SCAN_NMAX) return cudaErrorInvalidValue;
    dim3 grid((unsigned)((a->Di + SCAN_FWD_CH - 1) / SCAN_FWD_CH), (unsigned)a->B);
    scan_k k = scan_consts(a);
    CHM_CU_DISPATCH2(a->dt, T, scan_fwd_kernel<T><<<grid, SCAN_FWD_THREADS, 0, s>>>((T *)y, k));
    return cudaGetLastError();
}
namespace {

// Scratch layout of the backward, in floats.
typedef struct scan_layout {
    int64_t nck, nblk, ckpt, pbc, pA, pD, pdb, total;
} scan_layout;

static scan_layout scan_layout_of(const chm_cu_scan *a) {
    scan_layout L;
    L.nck = (a->T + SCAN_L - 1) / SCAN_L;
    L.nblk = (a->Di + SCAN_BWD_THREADS - 1) / SCAN_BWD_THREADS;
    L.ckpt = 0;
    L.pbc = L.ckpt + a->B * L.nck * SCAN_NMAX * a->Di;
    L.pA = L.pbc + a->B * L.nblk * a->T * 32;
    L.pD = L.pA + a->B * a->Di * SCAN_NMAX;
    L.pdb = L.pD + a->B * a->Di;
    L.total = L.pdb + a->B * a->Di;
    return L;
}

}  // namespace
extern "C" size_t chm_cu_scan_v1_bwd_scratch(const chm_cu_scan *a) {
    return (size_t)scan_layout_of(a).total * sizeof(float);
}
namespace {

#define SCAN_SMEM_BYTES sizeof(scan_smem)

template <typename T>
static cudaError_t scan_bwd_launch(const chm_cu_scan_grads *gr, const void *dy,
                                   const chm_cu_scan *a, float *sc, cudaStream_t s) {
    scan_layout L = scan_layout_of(a);
    scan_k k = scan_consts(a);
    scan_g g = {gr->du, gr->ddelta, gr->dz, dy, sc + L.ckpt, sc + L.pbc, sc + L.pA, sc + L.pD,
                sc + L.pdb};
    dim3 gck((unsigned)((a->Di + SCAN_FWD_CH - 1) / SCAN_FWD_CH), (unsigned)a->B);
    scan_ckpt_kernel<T><<<gck, SCAN_FWD_THREADS, 0, s>>>(sc + L.ckpt, k);
    static bool smem_set = false;  // per instantiation; the attribute is per process
    if (!smem_set) {
        cudaError_t e = cudaFuncSetAttribute(scan_bwd_kernel<T>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)SCAN_SMEM_BYTES);
        if (e != cudaSuccess) return e;
        smem_set = true;
    }
    dim3 gb((unsigned)L.nblk, (unsigned)a->B);
    scan_bwd_kernel<T><<<gb, SCAN_BWD_THREADS, SCAN_SMEM_BYTES, s>>>(k, g);
    int64_t nbc = a->B * a->T * 32;
    scan_bc_finish_kernel<T><<<grid_for(nbc, 256), 256, 0, s>>>(
        (T *)gr->dBm, (T *)gr->dCm, sc + L.pbc, a->B, a->T, a->N, L.nblk);
    int64_t nch = a->Di * SCAN_NMAX;
    scan_chan_finish_kernel<T><<<grid_for(nch, 256), 256, 0, s>>>(
        (T *)gr->dA, (T *)gr->dD, (T *)gr->ddelta_bias, sc + L.pA, sc + L.pD, sc + L.pdb, a->B,
        a->Di, a->N);
    return cudaGetLastError();
}

}  // namespace
extern "C" cudaError_t chm_cu_scan_v1_bwd(const chm_cu_scan_grads *g, const void *dy,
                                       const chm_cu_scan *a, void *scratch, cudaStream_t s) {
    if (a->B * a->T * a->Di <= 0) return cudaSuccess;
    if (a->N > SCAN_NMAX) return cudaErrorInvalidValue;
    CHM_CU_DISPATCH2(a->dt, T, return scan_bwd_launch<T>(g, dy, a, (float *)scratch, s));
    return cudaSuccess;
}
