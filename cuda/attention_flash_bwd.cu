// attention_flash_bwd.cu: flash-attention backward on bf16 tensor cores
// (sm_80+), head dim 64 or 128, causal, grouped-query, deterministic.
//
// Two kernels instead of one with float atomics on dq (FlashAttention-2's
// choice): every gradient element has exactly one writer, so results do not
// depend on scheduling. The price is recomputing S and dP in both kernels.
//  dkdv: one block per (64 keys, kv head, batch); each warp owns 16 keys and
//        walks, for every q head of the group, the query tiles at or after its
//        keys: S^T = K Q^T, P^T = exp2(S^T*scale*log2e - lse), dV += P^T dO,
//        dP^T = V dO^T, dS^T = P^T (dP^T - Delta), dK += dS^T Q.
//  dq:   one block per (64 queries, head, batch); each warp owns 16 queries
//        and walks the key tiles up to the diagonal: S = Q K^T, P, dP = dO V^T,
//        dS = P (dP - Delta), dQ += dS K.
// Q/dO (dkdv) and K/V (dq) tiles are double-buffered with cp.async. lse and
// Delta are f32 [B,H,T]. dq, dk, dv ACCUMULATE (bf16 read-modify-write).
#include "mma.cuh"

#define FB_THREADS 128
#define FB_ROWS 64  // keys per dkdv block, queries per dq block

// scale * acc added into a bf16 row of D columns at `row` (one C-fragment row per r).
template <int DT>
__device__ __forceinline__ void add_rows(bf16 *base, int64_t ld, int rowA, int T, float acc[][4],
                                         float scale) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rowA + r * 8;
        if (row >= T) continue;
        bf16 *p = base + (int64_t)row * ld;
#pragma unroll
        for (int i = 0; i < DT; i++) {
            int col = i * 8 + (lane & 3) * 2;
            __nv_bfloat162 old = *(__nv_bfloat162 *)(p + col);
            float x = __low2float(old) + scale * acc[i][2 * r];
            float y = __high2float(old) + scale * acc[i][2 * r + 1];
            *(uint32_t *)(p + col) = pack_bf16(x, y);
        }
    }
}

// dkdv: stage iteration `it` (q head h0 + it/per, query tile qstart + it%per) into
// buffer buf: Q and dO rows by cp.async, lse (log2 units) and Delta by plain stores.
template <int D, int BQ>
__device__ __forceinline__ void fb_stage(bf16 *Qs, bf16 *Os, float *Ls, float *Ds, const bf16 *q,
                                         const bf16 *dout, const float *lse, const float *delta,
                                         int b, int h0, int per, int qstart, int it, int buf,
                                         int T, int H) {
    constexpr int LD = D + FA_PAD;
    int h = h0 + it / per, i0 = (qstart + it % per) * BQ;
    int64_t base = ((int64_t)b * T * H + h) * D, qld = (int64_t)H * D;
    tile_load<BQ, D, FB_THREADS>(Qs + buf * BQ * LD, q + base, qld, i0, T);
    tile_load<BQ, D, FB_THREADS>(Os + buf * BQ * LD, dout + base, qld, i0, T);
    for (int i = threadIdx.x; i < BQ; i += FB_THREADS) {
        int row = i0 + i;
        int64_t st = ((int64_t)b * H + h) * T + row;
        Ls[buf * BQ + i] = row < T ? lse[st] * FA_LOG2E : INFINITY;
        Ds[buf * BQ + i] = row < T ? delta[st] : 0.0f;
    }
}

template <int D, int BQ>
__global__ void __launch_bounds__(FB_THREADS)
    flash_dkdv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                      const bf16 *v, const float *lse, const float *delta, int T, int H, int Hk,
                      float scale, float sl2) {
    constexpr int LD = D + FA_PAD, QT = BQ / 8, DT = D / 8, KS = D / 16;
    extern __shared__ __align__(16) unsigned char fb_smem[];
    bf16 *Ks = (bf16 *)fb_smem, *Vs = Ks + FB_ROWS * LD, *Qs = Vs + FB_ROWS * LD;
    bf16 *Os = Qs + 2 * BQ * LD;  // dO tiles
    float *Ls = (float *)(Os + 2 * BQ * LD), *Ds = Ls + 2 * BQ;
    int kt = blockIdx.x, g = blockIdx.y, b = blockIdx.z, rep = H / Hk;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k0 = kt * FB_ROWS;
    int64_t kld = (int64_t)Hk * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int qstart = k0 / BQ, nqt = (T + BQ - 1) / BQ, per = nqt - qstart, n_it = rep * per;
    tile_load<FB_ROWS, D, FB_THREADS>(Ks, kb, kld, k0, T);
    tile_load<FB_ROWS, D, FB_THREADS>(Vs, vb, kld, k0, T);
    fb_stage<D, BQ>(Qs, Os, Ls, Ds, q, dout, lse, delta, b, g * rep, per, qstart, 0, 0, T, H);
    cp_async_commit();
    float dka[DT][4], dva[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[i][e] = dva[i][e] = 0.0f;
    int krow = k0 + warp * 16 + (lane >> 2);  // this thread's keys: krow, krow + 8
    for (int it = 0; it < n_it; it++) {
        if (it + 1 < n_it) {
            fb_stage<D, BQ>(Qs, Os, Ls, Ds, q, dout, lse, delta, b, g * rep, per, qstart, it + 1,
                            (it + 1) & 1, T, H);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        int buf = it & 1, i0 = (qstart + it % per) * BQ;
        const bf16 *Qc = Qs + buf * BQ * LD, *Oc = Os + buf * BQ * LD;
        const float *Lc = Ls + buf * BQ, *Dc = Ds + buf * BQ;
        float st[QT][4], dpt[QT][4];
#pragma unroll
        for (int i = 0; i < QT; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t ka[4], va[4];
            frag_a<LD>(ka, Ks, warp * 16, kk * 16);
            frag_a<LD>(va, Vs, warp * 16, kk * 16);
#pragma unroll
            for (int np = 0; np < QT / 2; np++) {
                uint32_t r[4];
                frag_b_nk<LD>(r, Qc, np * 16, kk * 16);
                mma16816(st[2 * np], ka, r[0], r[1]);
                mma16816(st[2 * np + 1], ka, r[2], r[3]);
                frag_b_nk<LD>(r, Oc, np * 16, kk * 16);
                mma16816(dpt[2 * np], va, r[0], r[1]);
                mma16816(dpt[2 * np + 1], va, r[2], r[3]);
            }
        }
        // P^T and dS^T in place: row = key, column = query
#pragma unroll
        for (int nt = 0; nt < QT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int qc = nt * 8 + (lane & 3) * 2 + (e & 1), key = krow + (e >> 1) * 8;
                float p = (i0 + qc < key) ? 0.0f : exp2f(st[nt][e] * sl2 - Lc[qc]);
                st[nt][e] = p;
                dpt[nt][e] = p * (dpt[nt][e] - Dc[qc]);
            }
#pragma unroll
        for (int j = 0; j < QT / 2; j++) {
            uint32_t pa[4], sa[4];
            c_to_a(pa, st[2 * j], st[2 * j + 1]);
            c_to_a(sa, dpt[2 * j], dpt[2 * j + 1]);
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t r[4];
                frag_b_kn<LD>(r, Oc, j * 16, dp * 16);
                mma16816(dva[2 * dp], pa, r[0], r[1]);
                mma16816(dva[2 * dp + 1], pa, r[2], r[3]);
                frag_b_kn<LD>(r, Qc, j * 16, dp * 16);
                mma16816(dka[2 * dp], sa, r[0], r[1]);
                mma16816(dka[2 * dp + 1], sa, r[2], r[3]);
            }
        }
        __syncthreads();  // the next prefetch overwrites this buffer
    }
    add_rows<DT>(dk + ((int64_t)b * T * Hk + g) * D, kld, krow, T, dka, scale);
    add_rows<DT>(dv + ((int64_t)b * T * Hk + g) * D, kld, krow, T, dva, 1.0f);
}

template <int D, int BN>
__global__ void __launch_bounds__(FB_THREADS)
    flash_dq_kernel(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                    const float *lse, const float *delta, int T, int H, int Hk, float scale,
                    float sl2) {
    constexpr int LD = D + FA_PAD, NT = BN / 8, DT = D / 8, KS = D / 16;
    extern __shared__ __align__(16) unsigned char fb_smem[];
    bf16 *Qs = (bf16 *)fb_smem, *Os = Qs + FB_ROWS * LD, *Ks = Os + FB_ROWS * LD;
    bf16 *Vs = Ks + 2 * BN * LD;
    int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / Hk);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, q0 = qt * FB_ROWS;
    int64_t qld = (int64_t)H * D, kld = (int64_t)Hk * D;
    const bf16 *qb = q + ((int64_t)b * T * H + h) * D, *ob = dout + ((int64_t)b * T * H + h) * D;
    const bf16 *kb = k + ((int64_t)b * T * Hk + g) * D, *vb = v + ((int64_t)b * T * Hk + g) * D;
    int nkt = (q0 + FB_ROWS - 1) / BN + 1, tmax = (T + BN - 1) / BN;
    if (nkt > tmax) nkt = tmax;
    tile_load<FB_ROWS, D, FB_THREADS>(Qs, qb, qld, q0, T);
    tile_load<FB_ROWS, D, FB_THREADS>(Os, ob, qld, q0, T);
    tile_load<BN, D, FB_THREADS>(Ks, kb, kld, 0, T);
    tile_load<BN, D, FB_THREADS>(Vs, vb, kld, 0, T);
    cp_async_commit();
    int rowA = q0 + warp * 16 + (lane >> 2);
    float l2[2], dl[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rowA + r * 8;
        int64_t st = ((int64_t)b * H + h) * T + row;
        l2[r] = row < T ? lse[st] * FA_LOG2E : INFINITY;
        dl[r] = row < T ? delta[st] : 0.0f;
    }
    float dqa[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.0f;
    for (int kt = 0; kt < nkt; kt++) {
        if (kt + 1 < nkt) {
            int nb = (kt + 1) & 1;
            tile_load<BN, D, FB_THREADS>(Ks + nb * BN * LD, kb, kld, (kt + 1) * BN, T);
            tile_load<BN, D, FB_THREADS>(Vs + nb * BN * LD, vb, kld, (kt + 1) * BN, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *Kc = Ks + (kt & 1) * BN * LD, *Vc = Vs + (kt & 1) * BN * LD;
        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[i][e] = dp[i][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t qa[4], oa[4];
            frag_a<LD>(qa, Qs, warp * 16, kk * 16);
            frag_a<LD>(oa, Os, warp * 16, kk * 16);
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t r[4];
                frag_b_nk<LD>(r, Kc, np * 16, kk * 16);
                mma16816(s[2 * np], qa, r[0], r[1]);
                mma16816(s[2 * np + 1], qa, r[2], r[3]);
                frag_b_nk<LD>(r, Vc, np * 16, kk * 16);
                mma16816(dp[2 * np], oa, r[0], r[1]);
                mma16816(dp[2 * np + 1], oa, r[2], r[3]);
            }
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = kt * BN + nt * 8 + (lane & 3) * 2 + (e & 1), row = rowA + (e >> 1) * 8;
                float p = key > row ? 0.0f : exp2f(s[nt][e] * sl2 - l2[e >> 1]);
                s[nt][e] = p * (dp[nt][e] - dl[e >> 1]);
            }
#pragma unroll
        for (int j = 0; j < NT / 2; j++) {
            uint32_t sa[4];
            c_to_a(sa, s[2 * j], s[2 * j + 1]);
#pragma unroll
            for (int dd = 0; dd < D / 16; dd++) {
                uint32_t r[4];
                frag_b_kn<LD>(r, Kc, j * 16, dd * 16);
                mma16816(dqa[2 * dd], sa, r[0], r[1]);
                mma16816(dqa[2 * dd + 1], sa, r[2], r[3]);
            }
        }
        __syncthreads();
    }
    add_rows<DT>(dq + ((int64_t)b * T * H + h) * D, qld, rowA, T, dqa, scale);
}

// Keys per dq tile and queries per dkdv tile: smaller for D 128 to fit registers and
// the 99 KB of shared memory sm_86/sm_89 allow.
template <int D> struct fb_cfg {
    static constexpr int BQ = D == 64 ? 64 : 32;
    static constexpr int BN = D == 64 ? 64 : 32;
};

template <typename K>
static cudaError_t fb_smem_optin(K kernel, size_t bytes, bool *done) {
    if (*done) return cudaSuccess;
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e == cudaSuccess) *done = true;
    return e;
}

template <int D>
static cudaError_t flash_bwd_launch(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout,
                                    const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                                    const float *delta, const chm_cu_attn *a, cudaStream_t s) {
    constexpr int LD = D + FA_PAD, BQ = fb_cfg<D>::BQ, BN = fb_cfg<D>::BN;
    size_t sm_kv = (size_t)(2 * FB_ROWS + 4 * BQ) * LD * sizeof(bf16) + 4 * BQ * sizeof(float);
    size_t sm_q = (size_t)(2 * FB_ROWS + 4 * BN) * LD * sizeof(bf16);
    static bool set_kv = false, set_q = false;
    cudaError_t e = fb_smem_optin(flash_dkdv_kernel<D, BQ>, sm_kv, &set_kv);
    if (e == cudaSuccess) e = fb_smem_optin(flash_dq_kernel<D, BN>, sm_q, &set_q);
    if (e != cudaSuccess) return e;
    int T = (int)a->T, H = (int)a->H, Hk = (int)a->Hk;
    float sl2 = a->scale * FA_LOG2E;
    unsigned tiles = (unsigned)((a->T + FB_ROWS - 1) / FB_ROWS);
    flash_dkdv_kernel<D, BQ><<<dim3(tiles, (unsigned)Hk, (unsigned)a->B), FB_THREADS, sm_kv, s>>>(
        dk, dv, dout, q, k, v, lse, delta, T, H, Hk, a->scale, sl2);
    flash_dq_kernel<D, BN><<<dim3(tiles, (unsigned)H, (unsigned)a->B), FB_THREADS, sm_q, s>>>(
        dq, dout, q, k, v, lse, delta, T, H, Hk, a->scale, sl2);
    return cudaGetLastError();
}

extern "C" cudaError_t chm_cu_flash_bwd(void *dq, void *dk, void *dv, const void *dout,
                                        const void *q, const void *k, const void *v,
                                        const float *lse, const float *delta,
                                        const chm_cu_attn *a, cudaStream_t s) {
    if (a->B * a->T * a->H <= 0) return cudaSuccess;
    if (a->D == 64)
        return flash_bwd_launch<64>((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                                    (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, lse, delta,
                                    a, s);
    if (a->D == 128)
        return flash_bwd_launch<128>((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                                     (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, lse,
                                     delta, a, s);
    return cudaErrorInvalidValue;
}
