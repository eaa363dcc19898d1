// selective_scan_fwd.cu: the selective scan's forward kernel, also the backward's
// checkpoint pass (algorithm and shared helpers: selective_scan.cuh).

#include "selective_scan.cuh"

// The chunk's steps for one lane: h advances SCAN_L steps; without CKPT the lane's
// part of y per step goes to sm.part. Padding steps have d = d*u = 0: h stays. The parts
// are stored after the steps: a store between them would keep the next step's shared loads
// from moving above it (the compiler cannot tell part from the input tiles), and each
// step would wait out its loads' latency.
template <typename T, bool CKPT>
__device__ __forceinline__ void fwd_steps(float *h, const float *A2, const scan_sm<T> &sm,
                                          const scan_lane &l) {
    const float4 *B4 = lane_rows(sm.Bs, l);
    float y[SCAN_L];
#pragma unroll
    for (int tt = 0; tt < SCAN_L; tt++) {
        state_step(h, A2, sm, B4, l, tt);
        float4 cq = ((const float4 *)sm.Cs)[tt * 4 + l.q];
        y[tt] = cq.x * h[0];
        y[tt] = fmaf(cq.y, h[1], y[tt]);
        y[tt] = fmaf(cq.z, h[2], y[tt]);
        y[tt] = fmaf(cq.w, h[3], y[tt]);
    }
#pragma unroll
    for (int tt = 0; tt < SCAN_L; tt++)
        if (!CKPT) sm.part[(tt * 4 + l.q) * SCAN_PSTRIDE + l.cl] = y[tt];
}

// y of the thread's quad of row `row`: the lanes' parts, the skip term, the gate.
template <typename T, bool VEC>
__device__ __forceinline__ void fwd_out(T *y, const scan_sm<T> &sm, const T *raw,
                                        const scan_k &k, int64_t b, int64_t c0, int64_t t0,
                                        int steps) {
    int row = tile_row(), col = tile_col(), at = row * SCAN_CB + col;
    if (row >= steps) return;
    float uu[4], zz[4], Dc[4], out[4], p[4][4];
    scan_load4(raw + RAW_U * SCAN_TILE + at, uu);
    if (k.z) scan_load4(raw + RAW_Z * SCAN_TILE + at, zz);
    scan_load4(sm.cD + col, Dc);
#pragma unroll
    for (int q = 0; q < 4; q++) scan_load4(sm.part + (row * 4 + q) * SCAN_PSTRIDE + col, p[q]);
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float v = fmaf(Dc[e], uu[e], (p[0][e] + p[1][e]) + (p[2][e] + p[3][e]));
        out[e] = k.z ? v * zz[e] * scan_sigmoid(zz[e], scan_enabs(zz[e])) : v;
    }
    scan_store4<T, VEC>(y + (b * k.T + t0 + row) * k.Di + c0 + col, out, c0 + col, k.Di);
}

// Buffer i (0, 1) of fdu, part, Bs, Cs (scan_nbuf) as a view the helpers take.
template <typename T> __device__ __forceinline__ scan_sm<T> fwd_buf(scan_sm<T> s, int i) {
    s.fdu += i * SCAN_TILE;
    s.part += i * SCAN_PART;
    s.Bs += i * SCAN_L * SCAN_NMAX;
    s.Cs += i * SCAN_L * SCAN_NMAX;
    return s;
}

// Raw tiles of chunk ck (three buffers, scan_nrawbuf).
template <typename T> __device__ __forceinline__ T *fwd_raw(const scan_sm<T> &s, int64_t ck) {
    return s.raw + (int)(ck % 3) * RAW_FWD * SCAN_TILE;
}

// Steps of the chunk at t0 (SCAN_L, or fewer in the last chunk).
__device__ __forceinline__ int chunk_steps(const scan_k &k, int64_t t0) {
    return (int)(k.T - t0 < SCAN_L ? k.T - t0 : SCAN_L);
}

// Forward (y; the saved states into hsave unless NULL) or, with CKPT, the backward's
// checkpoints (hsave: all but the last chunk's states). One barrier a chunk: between two,
// a thread runs chunk ck's steps, prepares chunk ck + 1 (its Bm/Cm rows and f32 tiles into
// the other buffers) and writes chunk ck - 1's output, so that warps done with their steps
// go on to the other work instead of waiting at a barrier (profiled, the two-barrier
// version had 6% of its warps' stall samples at the barriers and 23% in the output phase,
// which ran alone between the second barrier and the next chunk's).
template <typename T, bool VEC, bool CKPT>
__global__ void __launch_bounds__(SCAN_THREADS) scan_fwd_kernel(T *y, float *hsave, scan_k k) {
    extern __shared__ __align__(16) unsigned char scan_raw_sm[];
    scan_sm<T> sm = scan_carve<T>(scan_raw_sm, false);
    int64_t b = blockIdx.y, c0 = blockIdx.x * (int64_t)SCAN_CB;
    int64_t nck = (k.T + SCAN_L - 1) / SCAN_L, last = CKPT ? nck - 1 : nck;
    if (last <= 0) return;  // the whole block: no chunk
    scan_lane l = lane_of<false>(c0, k.Di);
    float A2[4], h[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    T bv[SCAN_BCPT], cv[SCAN_BCPT];
    lane_A2<T>(A2, k, l);
    block_consts<T>(sm, k, c0);
    const void *src[RAW_FWD] = {k.delta, k.u, CKPT ? NULL : k.z};
    chunk_issue<T, VEC>(fwd_raw(sm, 0), src, RAW_FWD, k, b, c0, 0, chunk_steps(k, 0));
    bc_fetch<T>(bv, cv, k, b, 0, chunk_steps(k, 0), !CKPT);
    __syncthreads();  // cbias, cD in (pre_phase reads other threads' entries)
    scan_cp_wait();   // this thread's quads of chunk 0 (one quad per thread: no barrier)
    bc_put<T, 1>(sm, bv, cv);
    pre_phase<T, false>(sm, fwd_raw(sm, 0), k, c0, chunk_steps(k, 0));
    __syncthreads();  // chunk 0's Bs, Cs, fdu are in
    for (int64_t ck = 0; ck < last; ck++) {
        int64_t t1 = (ck + 1) * SCAN_L;
        bool more = ck + 1 < last;
        if (more) {
            // Buffer (ck + 1) % 3 last held chunk ck - 2, whose output this thread wrote
            // in the previous round (its own quads only).
            chunk_issue<T, VEC>(fwd_raw(sm, ck + 1), src, RAW_FWD, k, b, c0, t1,
                                chunk_steps(k, t1));
            bc_fetch<T>(bv, cv, k, b, t1, chunk_steps(k, t1), !CKPT);
        }
        fwd_steps<T, CKPT>(h, A2, fwd_buf(sm, (int)(ck & 1)), l);
        if (hsave && l.live) hs_store(hsave, h, k, nck, b, ck, l);
        if (more) {
            // The other buffers were last read by chunk ck - 1's steps, before the barrier.
            scan_sm<T> nx = fwd_buf(sm, (int)((ck + 1) & 1));
            scan_cp_wait();
            bc_put<T, 1>(nx, bv, cv);
            pre_phase<T, false>(nx, fwd_raw(sm, ck + 1), k, c0, chunk_steps(k, t1));
        }
        if (!CKPT && ck > 0)  // chunk ck - 1: whole (only the last chunk is partial)
            fwd_out<T, VEC>(y, fwd_buf(sm, (int)((ck - 1) & 1)), fwd_raw(sm, ck - 1), k, b, c0,
                            (ck - 1) * SCAN_L, SCAN_L);
        __syncthreads();  // chunk ck's part and chunk ck + 1's inputs are in
    }
    if (!CKPT)
        fwd_out<T, VEC>(y, fwd_buf(sm, (int)((last - 1) & 1)), fwd_raw(sm, last - 1), k, b, c0,
                        (last - 1) * SCAN_L, chunk_steps(k, (last - 1) * SCAN_L));
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
