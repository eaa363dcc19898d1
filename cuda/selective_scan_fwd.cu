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
    const float4 *B4 = lane_rows(sm.Bs, l), *C4 = lane_rows(sm.Cs, l);
    const float2 *F2 = sm.fdu + l.cl;
    float y[SCAN_L], dec[SCAN_L][4];
    float2 p[SCAN_L];
    float4 bq[SCAN_L], cq[SCAN_L];
    // Software-pipelined by hand: step tt's loads are issued at step tt - SCAN_AHEAD and its
    // decays computed at step tt - 1, so that neither the shared loads' nor the MUFU's latency
    // sits between a step's operands and its FFMAs.
#pragma unroll
    for (int tt = 0; tt < SCAN_AHEAD; tt++)
        p[tt] = F2[tt * SCAN_CB], bq[tt] = B4[tt * 4], cq[tt] = C4[tt * 4];
#pragma unroll
    for (int j = 0; j < 4; j++) dec[0][j] = scan_ex2(p[0].x * A2[j]);
#pragma unroll
    for (int tt = 0; tt < SCAN_L; tt++) {
        int ta = tt + SCAN_AHEAD;
        if (ta < SCAN_L) p[ta] = F2[ta * SCAN_CB], bq[ta] = B4[ta * 4], cq[ta] = C4[ta * 4];
        if (tt + 1 < SCAN_L) {
#pragma unroll
            for (int j = 0; j < 4; j++) dec[tt + 1][j] = scan_ex2(p[tt + 1].x * A2[j]);
        }
        float bb[4] = {bq[tt].x, bq[tt].y, bq[tt].z, bq[tt].w};
#pragma unroll
        for (int j = 0; j < 4; j++) h[j] = fmaf(dec[tt][j], h[j], p[tt].y * bb[j]);
        y[tt] = cq[tt].x * h[0];
        y[tt] = fmaf(cq[tt].y, h[1], y[tt]);
        y[tt] = fmaf(cq[tt].z, h[2], y[tt]);
        y[tt] = fmaf(cq[tt].w, h[3], y[tt]);
    }
#pragma unroll
    for (int tt = 0; tt < SCAN_L; tt++)
        if (!CKPT) sm.part[(tt * 4 + l.q) * SCAN_PSTRIDE + l.cl] = y[tt];
}

// y of the thread's quad of row `row`: the lanes' parts, the skip term (dq: D of the quad's
// channels), the gate; with YS (a gate and ys given), the output before the gate into ys too.
template <typename T, bool VEC, bool YS>
__device__ __forceinline__ void fwd_out(T *y, T *ys, const scan_sm<T> &sm, const T *raw,
                                        const scan_k &k, const scan_pos &ps, int64_t t0,
                                        int steps, float4 dq) {
    int row = ps.row, col = ps.col, at = ps.at;
    if (row >= steps) return;
    float uu[4], zz[4], Dc[4] = {dq.x, dq.y, dq.z, dq.w}, raw_y[4], out[4], p[4][4];
    scan_load4(raw + RAW_U * SCAN_TILE + at, uu);
    if (k.z) scan_load4(raw + RAW_Z * SCAN_TILE + at, zz);
#pragma unroll
    for (int q = 0; q < 4; q++) scan_load4(sm.part + (row * 4 + q) * SCAN_PSTRIDE + col, p[q]);
#pragma unroll
    for (int e = 0; e < 4; e++) {
        raw_y[e] = fmaf(Dc[e], uu[e], (p[0][e] + p[1][e]) + (p[2][e] + p[3][e]));
        out[e] = k.z ? raw_y[e] * zz[e] * scan_sigmoid(zz[e], scan_enabs(zz[e])) : raw_y[e];
    }
    scan_store4<T, VEC>(y + ps.g + t0 * k.Di, out, ps.nv);
    if (YS) scan_store4<T, VEC>(ys + ps.g + t0 * k.Di, raw_y, ps.nv);
}

// Buffer i (0, 1) of fdu, part, Bs, Cs (scan_nbuf) as a view the helpers take.
template <typename T> __device__ __forceinline__ scan_sm<T> fwd_buf(scan_sm<T> s, int i) {
    s.fdu += i * SCAN_TILE;
    s.part += i * SCAN_PART;
    s.Bs += i * SCAN_BCCOPY;
    s.Cs += i * SCAN_BCCOPY;
    return s;
}

// Raw tiles of buffer i (three, scan_nrawbuf: chunk ck is in buffer ck % 3).
template <typename T> __device__ __forceinline__ T *fwd_raw(const scan_sm<T> &s, int i) {
    return s.raw + i * RAW_FWD * SCAN_TILE;
}

// Forward (y; the saved states into hsave unless NULL) or, with CKPT, the backward's
// checkpoints (hsave: all but the last chunk's states). One barrier a chunk: between two,
// a thread runs chunk ck's steps, prepares chunk ck + 1 (its Bm/Cm rows and f32 tiles into
// the other buffers) and writes chunk ck - 1's output, so that warps done with their steps
// go on to the other work instead of waiting at a barrier (profiled, the two-barrier
// version had 6% of its warps' stall samples at the barriers and 23% in the output phase,
// which ran alone between the second barrier and the next chunk's).
// YS: the pre-gate output into ys too (a template flag: as a run-time test the kernel without
// it ran 2% slower). FULL: the common shapes (scan_assume_full).
template <typename T, bool VEC, bool CKPT, bool YS, bool FULL>
__global__ void __launch_bounds__(SCAN_THREADS) scan_fwd_kernel(T *y, float *hsave, T *ys,
                                                                scan_k k) {
    chm_pdl_enter();
    static_assert(!YS || !CKPT, "the checkpoint pass writes no output");
    static_assert(!FULL || VEC, "whole quads are vector quads");
    __builtin_assume(threadIdx.x < SCAN_THREADS);  // the launch's block size (scan_launch)
    extern __shared__ __align__(16) unsigned char scan_raw_sm[];
    scan_sm<T> sm = scan_carve<T>(scan_raw_sm, false);
    int64_t b = blockIdx.y, c0 = blockIdx.x * (int64_t)SCAN_CB;
    int nck = (int)((k.T + SCAN_L - 1) / SCAN_L), last = CKPT ? nck - 1 : nck;  // host: < 2^31
    if (last <= 0) return;  // the whole block: no chunk
    scan_lane l = lane_of<false>(c0, k.Di);
    scan_pos ps = pos_of(k, b, c0);
    scan_assume_full<FULL>(k, l, ps);
    int64_t hb = hs_base(k, nck, b, l);
    float A2[4], h[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    T bv[SCAN_BCPT], cv[SCAN_BCPT];
    lane_A2<T>(A2, k, l);
    block_consts<T>(sm, k, c0);
    const void *src[RAW_FWD] = {k.delta, k.u, CKPT ? NULL : k.z};
    chunk_issue<T, VEC, 3u>(fwd_raw(sm, 0), src, RAW_FWD, k, ps, b, c0, 0, chunk_steps<FULL>(k, 0));
    bc_fetch<T>(bv, cv, k, b, 0, chunk_steps<FULL>(k, 0), !CKPT);
    __syncthreads();  // cbias, cD in (other threads wrote them)
    // The quad's delta_bias and D, in registers for the whole kernel: read from shared memory
    // every chunk, they were 8 of the ~220 shared-memory wavefronts of a warp's chunk (the
    // shared-memory pipe is the forward's busiest: 84% in the session-7 profile).
    float4 bq = *(const float4 *)(sm.cbias + ps.col), dq = *(const float4 *)(sm.cD + ps.col);
    scan_cp_wait();   // this thread's quads of chunk 0 (one quad per thread: no barrier)
    bc_put<T, 1>(sm, bv, cv);
    pre_phase<T, false>(sm, fwd_raw(sm, 0), k, ps, chunk_steps<FULL>(k, 0), bq);
    __syncthreads();  // chunk 0's Bs, Cs, fdu are in
    // rb: chunk ck's raw buffer (ck % 3), rn chunk ck + 1's, rp chunk ck - 1's.
    int rb = 0, rn = 1, rp = 2;
    for (int ck = 0; ck < last; ck++) {
        int64_t t1 = (int64_t)(ck + 1) * SCAN_L;
        bool more = ck + 1 < last;
        if (more) {
            // Buffer (ck + 1) % 3 last held chunk ck - 2, whose output this thread wrote
            // in the previous round (its own quads only).
            chunk_issue<T, VEC, 3u>(fwd_raw(sm, rn), src, RAW_FWD, k, ps, b, c0, t1,
                                    chunk_steps<FULL>(k, t1));
            bc_fetch<T>(bv, cv, k, b, t1, chunk_steps<FULL>(k, t1), !CKPT);
        }
        fwd_steps<T, CKPT>(h, A2, fwd_buf(sm, (int)(ck & 1)), l);
        if (hsave && l.live) hs_store(hsave, h, k, hb, ck, l);
        if (more) {
            // The other buffers were last read by chunk ck - 1's steps, before the barrier.
            scan_sm<T> nx = fwd_buf(sm, (int)((ck + 1) & 1));
            scan_cp_wait();
            bc_put<T, 1>(nx, bv, cv);
            pre_phase<T, false>(nx, fwd_raw(sm, rn), k, ps, chunk_steps<FULL>(k, t1), bq);
        }
        if (!CKPT && ck > 0)  // chunk ck - 1: whole (only the last chunk is partial)
            fwd_out<T, VEC, YS>(y, ys, fwd_buf(sm, (ck - 1) & 1), fwd_raw(sm, rp), k, ps,
                                (int64_t)(ck - 1) * SCAN_L, SCAN_L, dq);
        __syncthreads();  // chunk ck's part and chunk ck + 1's inputs are in
        rp = rb, rb = rn, rn = rn == 2 ? 0 : rn + 1;
    }
    if (!CKPT) {
        int64_t tl = (int64_t)(last - 1) * SCAN_L;
        fwd_out<T, VEC, YS>(y, ys, fwd_buf(sm, (last - 1) & 1), fwd_raw(sm, rp), k, ps, tl,
                            chunk_steps<FULL>(k, tl), dq);
    }
}

// ---- host side ----

// ys: with CKPT NULL; else the pre-gate output, written where a gate is given.
template <typename T, bool CKPT>
static cudaError_t scan_fwd_launch(T *y, float *hsave, T *ys, const chm_cu_scan *a, bool vec,
                                   cudaStream_t s) {
    size_t bytes = scan_sm_bytes(sizeof(T), false);
    scan_k k = scan_consts(a, hsave);
    dim3 g = scan_grid(a);
    if (!CKPT && ys && a->z) {
        if (scan_full_ok(a, k, vec))  // the model's call
            return scan_launch(scan_fwd_kernel<T, true, false, true, true>, g, bytes, s, y, hsave,
                               ys, k);
        return vec ? scan_launch(scan_fwd_kernel<T, true, false, true, false>, g, bytes, s, y,
                                 hsave, ys, k)
                   : scan_launch(scan_fwd_kernel<T, false, false, true, false>, g, bytes, s, y,
                                 hsave, ys, k);
    }
    return vec ? scan_launch(scan_fwd_kernel<T, true, CKPT, false, false>, g, bytes, s, y, hsave,
                             ys, k)
               : scan_launch(scan_fwd_kernel<T, false, CKPT, false, false>, g, bytes, s, y, hsave,
                             ys, k);
}

extern "C" cudaError_t chm_cu_scan_fwd(void *y, float *hsave, void *ysave, const chm_cu_scan *a,
                                       cudaStream_t s) {
    if (a->B * a->T * a->Di <= 0) return cudaSuccess;
    if (a->N > SCAN_NMAX) return cudaErrorInvalidValue;
    if ((a->T + SCAN_L - 1) / SCAN_L > INT_MAX) return cudaErrorInvalidValue;  // int chunk indices
    const void *p[] = {y, a->u, a->delta, a->z, ysave};
    bool vec = scan_vec_ok(a, p, 5);
    CHM_CU_DISPATCH2(a->dt, T,
                     return scan_fwd_launch<T, false>((T *)y, hsave, (T *)ysave, a, vec, s));
    return cudaSuccess;
}

cudaError_t chm_cu_scan_ckpt(float *ckpt, const chm_cu_scan *a, bool vec, cudaStream_t s) {
    CHM_CU_DISPATCH2(a->dt, T, return scan_fwd_launch<T, true>(NULL, ckpt, NULL, a, vec, s));
    return cudaSuccess;
}
