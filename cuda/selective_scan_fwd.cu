// selective_scan_fwd.cu: the selective scan's forward kernel, also the backward's
// checkpoint pass (algorithm and shared helpers: selective_scan.cuh).

#include "selective_scan.cuh"

// The chunk's steps for one lane: h advances SCAN_L steps; without CKPT the lane's
// part of y per step goes to sm.part. Padding steps have d = d*u = 0: h stays.
template <typename T, bool CKPT>
__device__ __forceinline__ void fwd_steps(float *h, const float *A2, const scan_sm<T> &sm,
                                          const scan_lane &l) {
    const float4 *B4 = lane_rows(sm.Bs, l);
#pragma unroll
    for (int tt = 0; tt < SCAN_L; tt++) {
        state_step(h, A2, sm, B4, l, tt);
        if (!CKPT) {
            float4 cq = ((const float4 *)sm.Cs)[tt * 4 + l.q];
            float y = cq.x * h[0];
            y = fmaf(cq.y, h[1], y);
            y = fmaf(cq.z, h[2], y);
            y = fmaf(cq.w, h[3], y);
            sm.part[(tt * SCAN_CB + l.cl) * 4 + l.q] = y;
        }
    }
}

// y of the thread's quad of row `row`: the lanes' parts, the skip term, the gate.
template <typename T, bool VEC>
__device__ __forceinline__ void fwd_out(T *y, const scan_sm<T> &sm, const T *raw,
                                        const scan_k &k, int64_t b, int64_t c0, int64_t t0,
                                        int steps) {
    int row = tile_row(), col = tile_col(), at = row * SCAN_CB + col;
    if (row >= steps) return;
    float uu[4], zz[4], Dc[4], out[4];
    scan_load4(raw + RAW_U * SCAN_TILE + at, uu);
    if (k.z) scan_load4(raw + RAW_Z * SCAN_TILE + at, zz);
    scan_load4(sm.cD + col, Dc);
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float4 p = ((const float4 *)sm.part)[at + e];
        float v = fmaf(Dc[e], uu[e], (p.x + p.y) + (p.z + p.w));
        out[e] = k.z ? v * zz[e] * scan_sigmoid(zz[e], scan_enabs(zz[e])) : v;
    }
    scan_store4<T, VEC>(y + (b * k.T + t0 + row) * k.Di + c0 + col, out, c0 + col, k.Di);
}

// Forward (y; the saved states into hsave unless NULL) or, with CKPT, the backward's
// checkpoints (hsave: all but the last chunk's states).
template <typename T, bool VEC, bool CKPT>
__global__ void __launch_bounds__(SCAN_THREADS) scan_fwd_kernel(T *y, float *hsave, scan_k k) {
    extern __shared__ __align__(16) unsigned char scan_raw_sm[];
    scan_sm<T> sm = scan_carve<T>(scan_raw_sm, false);
    int64_t b = blockIdx.y, c0 = blockIdx.x * (int64_t)SCAN_CB;
    int64_t nck = (k.T + SCAN_L - 1) / SCAN_L, last = CKPT ? nck - 1 : nck;
    scan_lane l = lane_of<false>(c0, k.Di);
    float A2[4], h[4] = {0.0f, 0.0f, 0.0f, 0.0f}, bv[SCAN_BCPT], cv[SCAN_BCPT];
    lane_A2<T>(A2, k, l);
    block_consts<T>(sm, k, c0);
    __syncthreads();  // cbias, cD in (pre_phase reads other threads' entries)
    const void *src[RAW_FWD] = {k.delta, k.u, CKPT ? NULL : k.z};
    int steps0 = (int)(k.T < SCAN_L ? k.T : SCAN_L);
    if (last > 0) {
        chunk_issue<T, VEC>(sm.raw, src, RAW_FWD, k, b, c0, 0, steps0);
        bc_fetch<T>(bv, cv, k, b, 0, steps0, !CKPT);
    }
    for (int64_t ck = 0; ck < last; ck++) {
        int64_t t0 = ck * SCAN_L;
        int steps = (int)(k.T - t0 < SCAN_L ? k.T - t0 : SCAN_L);
        T *raw = sm.raw + (ck & 1) * RAW_FWD * SCAN_TILE;
        // The thread's own quads of the chunk's tiles are in (tile_copy, pre_phase and
        // fwd_out share one quad per thread: the raw tiles need no barrier); the last
        // chunk's steps are done (the barrier after them): Bs, Cs and fdu are free.
        scan_cp_wait();
        bc_put<T, 1>(sm, bv, cv);
        if (ck + 1 < last) {
            int64_t t1 = t0 + SCAN_L;
            int s1 = (int)(k.T - t1 < SCAN_L ? k.T - t1 : SCAN_L);
            chunk_issue<T, VEC>(sm.raw + ((ck + 1) & 1) * RAW_FWD * SCAN_TILE, src, RAW_FWD, k,
                                b, c0, t1, s1);
            bc_fetch<T>(bv, cv, k, b, t1, s1, !CKPT);
        }
        pre_phase<T, false>(sm, raw, k, c0, steps);
        __syncthreads();  // Bs, Cs, fdu of the chunk are in
        fwd_steps<T, CKPT>(h, A2, sm, l);
        if (hsave && l.live) hs_store(hsave, h, k, nck, b, ck, l);
        __syncthreads();  // part is in; the steps' reads of Bs, Cs, fdu are done
        if (!CKPT) fwd_out<T, VEC>(y, sm, raw, k, b, c0, t0, steps);
    }
}

// ---- host side ----

template <typename T, bool CKPT>
static cudaError_t scan_fwd_launch(T *y, float *hsave, const chm_cu_scan *a, bool vec,
                                   cudaStream_t s) {
    size_t bytes = scan_sm_bytes(sizeof(T), false);
    scan_k k = scan_consts(a, hsave);
    if (vec)
        return scan_launch(scan_fwd_kernel<T, true, CKPT>, scan_grid(a), bytes, s, y, hsave, k);
    return scan_launch(scan_fwd_kernel<T, false, CKPT>, scan_grid(a), bytes, s, y, hsave, k);
}

extern "C" cudaError_t chm_cu_scan_fwd(void *y, float *hsave, const chm_cu_scan *a,
                                       cudaStream_t s) {
    if (a->B * a->T * a->Di <= 0) return cudaSuccess;
    if (a->N > SCAN_NMAX) return cudaErrorInvalidValue;
    const void *p[] = {y, a->u, a->delta, a->z};
    bool vec = scan_vec_ok(a, p, 4);
    CHM_CU_DISPATCH2(a->dt, T, return scan_fwd_launch<T, false>((T *)y, hsave, a, vec, s));
    return cudaSuccess;
}

cudaError_t chm_cu_scan_ckpt(float *ckpt, const chm_cu_scan *a, bool vec, cudaStream_t s) {
    CHM_CU_DISPATCH2(a->dt, T, return scan_fwd_launch<T, true>(NULL, ckpt, a, vec, s));
    return cudaSuccess;
}
