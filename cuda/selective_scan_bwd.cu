// selective_scan_bwd.cu: the selective scan's backward: the main kernel (chunks in
// reverse, states recomputed from the checkpoints: selective_scan_bwd.cuh, here at 8 warps a
// block), the finish kernel and the launch (algorithm and shared helpers: selective_scan.cuh).
#include "selective_scan_bwd.cuh"

// Bits of chm_cu_scan_grads.set (CHM_SCAN_SET_* of backend.h).
enum { SET_DU = 1, SET_DDELTA = 2, SET_DA = 4, SET_DBM = 8, SET_DCM = 16, SET_DD = 32,
       SET_DZ = 64, SET_DDB = 128 };

// dst = s, or dst + s unless `set`.
template <typename T> __device__ __forceinline__ void grad_put(T *dst, float s, bool set) {
    *dst = from_f<T>(set ? s : to_f(*dst) + s);
}

// The finish kernel's arguments: the gradients, the partials and the sizes.
struct scan_fin {
    void *dBm, *dCm, *dA, *dD, *ddb;
    const float *pbc, *pA, *pD, *pdb;
    int64_t B, T, Di, N, nblk;
    unsigned set, nbc; /* nbc: the blocks that do dBm/dCm; the others dA, dD, ddelta_bias */
};

// dBm/dCm [B,T,N] += (or =, set bits SET_DBM, SET_DCM) the channel-block partials, in
// block order; block blk of nb, a grid-stride loop.
template <typename T>
__device__ __forceinline__ void bc_finish(const scan_fin &f, int64_t blk, int64_t nb) {
    for (int64_t i = blk * blockDim.x + threadIdx.x; i < f.B * f.T * 32; i += nb * blockDim.x) {
        int64_t l = i % 32, bt = i / 32, t = bt % f.T, b = bt / f.T, n = l % SCAN_NMAX;
        T *dst = (T *)(l < SCAN_NMAX ? f.dBm : f.dCm);
        if (!dst || n >= f.N) continue;
        float s = 0.0f;
        for (int64_t k = 0; k < f.nblk; k++) s += f.pbc[((b * f.nblk + k) * f.T + t) * 32 + l];
        grad_put(dst + (b * f.T + t) * f.N + n, s, f.set & (l < SCAN_NMAX ? SET_DBM : SET_DCM));
    }
}

// dA [Di,N], dD [Di], ddelta_bias [Di] += (or =, as `set` says) the per-batch-row
// partials, in b order; block blk of nb.
template <typename T>
__device__ __forceinline__ void chan_finish(const scan_fin &f, int64_t blk, int64_t nb) {
    for (int64_t i = blk * blockDim.x + threadIdx.x; i < f.Di * SCAN_NMAX; i += nb * blockDim.x) {
        int64_t c = i / SCAN_NMAX, n = i % SCAN_NMAX;
        if (f.dA && n < f.N) {
            float s = 0.0f;
            for (int64_t b = 0; b < f.B; b++) s += f.pA[(b * f.Di + c) * SCAN_NMAX + n];
            grad_put((T *)f.dA + c * f.N + n, s, f.set & SET_DA);
        }
        if (n == 0 && f.dD) {
            float s = 0.0f;
            for (int64_t b = 0; b < f.B; b++) s += f.pD[b * f.Di + c];
            grad_put((T *)f.dD + c, s, f.set & SET_DD);
        }
        if (n == 1 && f.ddb) {
            float s = 0.0f;
            for (int64_t b = 0; b < f.B; b++) s += f.pdb[b * f.Di + c];
            grad_put((T *)f.ddb + c, s, f.set & SET_DDB);
        }
    }
}

// Both finishes in one launch (they are independent: the small one overlaps the large one
// instead of running after it).
template <typename T> __global__ void scan_finish_kernel(scan_fin f) {
    chm_pdl_enter();
    if (blockIdx.x < f.nbc) bc_finish<T>(f, blockIdx.x, f.nbc);
    else chan_finish<T>(f, blockIdx.x - f.nbc, gridDim.x - f.nbc);
}

// ---- host side ----

// Scratch layout of the backward, in floats. The checkpoints come last (16-byte aligned):
// a call given the saved states uses only the part before them (mamba.c sizes it so).
typedef struct scan_layout {
    int64_t nck, nblk, pbc, pA, pD, pdb, ckpt, total;
} scan_layout;

static scan_layout scan_layout_of(const chm_cu_scan *a) {
    scan_layout L;
    L.nck = (a->T + SCAN_L - 1) / SCAN_L;
    L.nblk = (a->Di + SCAN_CB - 1) / SCAN_CB;
    L.pbc = 0;
    L.pA = L.pbc + a->B * L.nblk * a->T * 32;
    L.pD = L.pA + a->B * a->Di * SCAN_NMAX;
    L.pdb = L.pD + a->B * a->Di;
    L.ckpt = (L.pdb + a->B * a->Di + 3) / 4 * 4;
    L.total = L.ckpt + a->B * L.nck * a->Di * a->N;
    return L;
}

// Bytes of the whole layout. A call given the saved states needs only the part before the
// checkpoints: this less their B * ceil(T/16) * Di * N floats, the saved states' size.
extern "C" size_t chm_cu_scan_bwd_scratch(const chm_cu_scan *a) {
    return (size_t)scan_layout_of(a).total * sizeof(float);
}

// How the main kernel treats du, ddelta, dz (*set: all given ones are written): when the
// set bits name all of them, the SET kernel; else those named are zeroed here and all
// accumulate.
static cudaError_t scan_elem_set(const chm_cu_scan_grads *gr, const chm_cu_scan *a, bool *set,
                                 cudaStream_t s) {
    void *p[3] = {gr->du, gr->ddelta, a->z ? gr->dz : NULL};
    unsigned bit[3] = {SET_DU, SET_DDELTA, SET_DZ}, given = 0, named = 0;
    for (int i = 0; i < 3; i++) {
        given |= p[i] ? bit[i] : 0u;
        named |= p[i] && (gr->set & bit[i]) ? bit[i] : 0u;
    }
    *set = given && named == given;
    size_t bytes = (size_t)(a->B * a->T * a->Di) * (a->dt == CHM_F32 ? 4 : 2);
    for (int i = 0; i < 3 && !*set; i++)
        if (named & bit[i]) {
            cudaError_t e = cudaMemsetAsync(p[i], 0, bytes, s);  // 0.0 in f32 and bf16
            if (e != cudaSuccess) return e;
        }
    return cudaSuccess;
}

// The main kernel for the call (vec: vector tiles; set: SET; ys: YS, only with both, where
// the model calls it), with the fdd tile or without.
template <typename T, bool FDD>
static cudaError_t scan_bwd_main(bool vec, bool set, bool ys, const chm_cu_scan *a,
                                 const scan_k &k, const scan_g &g, cudaStream_t s) {
    size_t bytes = scan_sm_bytes(sizeof(T), true, FDD);
    dim3 grid = scan_grid(a);
    if (set && vec && ys)
        return scan_full_ok(a, k, vec) && g.du && g.ddelta  // (ys: g.dz is given)
                   ? scan_launch(scan_bwd_kernel<T, true, true, FDD, true, true>, grid, bytes, s, k,
                                 g)
                   : scan_launch(scan_bwd_kernel<T, true, true, FDD, true, false>, grid, bytes, s,
                                 k, g);
    if (set)
        return vec ? scan_launch(scan_bwd_kernel<T, true, true, FDD, false, false>, grid, bytes, s,
                                 k, g)
                   : scan_launch(scan_bwd_kernel<T, false, true, FDD, false, false>, grid, bytes,
                                 s, k, g);
    return vec ? scan_launch(scan_bwd_kernel<T, true, false, FDD, false, false>, grid, bytes, s, k,
                             g)
               : scan_launch(scan_bwd_kernel<T, false, false, FDD, false, false>, grid, bytes, s,
                             k, g);
}

template <typename T>
static cudaError_t scan_bwd_launch(const chm_cu_scan_grads *gr, const void *dy,
                                   const chm_cu_scan *a, float *sc, cudaStream_t s) {
    scan_layout L = scan_layout_of(a);
    const float *hs = gr->hsaved ? gr->hsaved : sc + L.ckpt;
    scan_k k = scan_consts(a, hs);
    scan_g g = {gr->du,     gr->ddelta, gr->dz,    dy,        gr->ysaved, hs,
                sc + L.pbc, sc + L.pA,  sc + L.pD, sc + L.pdb};
    const void *p[] = {a->u, a->delta, a->z, dy, gr->du, gr->ddelta, gr->dz};
    bool vec = scan_vec_ok(a, p, 7), set;
    cudaError_t e = scan_elem_set(gr, a, &set, s);
    if (e == cudaSuccess && !gr->hsaved) e = chm_cu_scan_ckpt(sc + L.ckpt, a, vec, s);
    if (e != cudaSuccess) return e;
    // The forward's pre-gate y replaces the steps' sum where dz is written (the model's call).
    bool ys = set && vec && a->z && gr->dz && gr->ysaved && scan_vec_ok(a, &gr->ysaved, 1);
    // The model's call in 16-warp blocks where it qualifies (half the dBm/dCm partials for the
    // finish kernel to add: -1.4% fwd+bwd on an H100), else the 8-warp kernels.
    int64_t nblk = 0;
    if (sizeof(T) == 2 && set && vec && ys && g.du && g.ddelta)
        e = chm_cu_scan_bwd_w16(a, k, g, &nblk, s);
    if (e == cudaSuccess && !nblk) {
        nblk = L.nblk;
        // (f32 instantiates only the kernels with fdd: without, it would not fit either.)
        if (sizeof(T) == 4 || scan_smem_fits(scan_sm_bytes(sizeof(T), true, true)))
            e = scan_bwd_main<T, true>(vec, set, ys, a, k, g, s);
        else
            e = scan_bwd_main<T, sizeof(T) == 4>(vec, set, ys, a, k, g, s);
    }
    if (e != cudaSuccess) return e;
    unsigned nbc = grid_for(a->B * a->T * 32, 256), nch = grid_for(a->Di * SCAN_NMAX, 256);
    scan_fin f = {gr->dBm, gr->dCm, gr->dA, gr->dD, gr->ddelta_bias, sc + L.pbc, sc + L.pA,
                  sc + L.pD, sc + L.pdb, a->B, a->T, a->Di, a->N, nblk, gr->set, nbc};
    chm_launch(scan_finish_kernel<T>, nbc + nch, 256, 0, s, f);
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_scan_bwd(const chm_cu_scan_grads *g, const void *dy,
                                       const chm_cu_scan *a, void *scratch, cudaStream_t s) {
    if (a->B * a->T * a->Di <= 0) return cudaSuccess;
    if (a->N > SCAN_NMAX) return cudaErrorInvalidValue;
    if ((a->T + SCAN_L - 1) / SCAN_L > INT_MAX) return cudaErrorInvalidValue;  // int chunk indices
    CHM_CU_DISPATCH2(a->dt, T, return scan_bwd_launch<T>(g, dy, a, (float *)scratch, s));
    return cudaSuccess;
}
