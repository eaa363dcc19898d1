// selective_scan.cuh: the Mamba-1 selective scan (f32, bf16): the algorithm, and what its
// forward (selective_scan_fwd.cu) and backward (selective_scan_bwd.cu) kernels share.
//
// u, delta, z, y [B,T,Di]; Bm, Cm [B,T,N]; A [Di,N]; D, delta_bias [Di]. With
// d = softplus(delta + delta_bias) (or without softplus), per channel c:
//   h[t,n] = exp(d A[c,n]) h[t-1,n] + d Bm[t,n] u[t],   h[-1] = 0
//   y[t] = (sum_n Cm[t,n] h[t,n] + D[c] u[t]) * silu(z[t])   (gate when z given)
//
// Layout. A block of SCAN_WARPS warps owns SCAN_CB = 8 * SCAN_WARPS channels of
// one batch row and walks time in chunks of SCAN_L steps. In a warp, four lanes
// share a channel and hold four of its 16 states each, in f32 registers (the
// recurrence over time is serial; the lanes and channels are the parallelism).
// Per chunk the block
//  - copies the chunk's [SCAN_L, SCAN_CB] tiles of its [B,T,Di] inputs into shared
//    memory with cp.async (vector copies when Di % 4 == 0 and the pointers are
//    aligned, one element at a time otherwise), one chunk ahead of the math, so
//    that their latency hides behind the previous chunk. A thread copies, reads and
//    rewrites only its own quad of each tile (tile_row, tile_col), so the raw tiles
//    need no barrier;
//  - computes everything that is per (t, channel) once per element, not once per
//    lane: d = softplus(delta + bias), d*u, and in the backward dy*silu(z) and the
//    derivative factors, into f32 tiles;
//  - runs the steps: per lane and step four exp2 (MUFU), the state update and the
//    lane's part of the per-(t, channel) sums, stored into `part` ([L][lane][CB],
//    rows 8 banks apart: conflict-free stores and float4 reads);
//  - finishes per element (the four lanes' parts, the skip term, the gate) and
//    writes whole tile rows with vector stores.
// The forward does this with one barrier a chunk (its fdu, part, Bs, Cs are double
// buffered, its raw tiles triple buffered: between two barriers a thread runs chunk ck's
// steps, prepares chunk ck + 1 and writes chunk ck - 1's output); the backward, whose
// registers and shared memory leave no room for second buffers, with two.
// Shared memory stores between a phase's loads keep the compiler from hoisting those loads
// (it cannot tell the carved arrays apart), so each phase loads first and stores after, and
// the steps store their sums after all of them (forward) or two steps at a time (backward).
// All math is f32; bf16 is storage only.
//
// Saved states: the forward writes the state after every chunk into hsave [B, K, Di, N]
// f32 (K = ceil(T/SCAN_L); chm_scan_args.h_saved, whose stride the contract fixes at
// 16 = SCAN_L) when the caller gives it, one vector store per lane and chunk.
// Backward, without storing the T states:
//  1. the chunk-boundary states: the forward's saved states when given, else the ckpt
//     pass (the forward kernel in its checkpoint mode) writes them, in the same layout,
//     into scratch;
//  2. main kernel, chunks in reverse order: the chunk's SCAN_L states again from
//     its checkpoint into registers (the stash), then the reverse recurrence
//       dh = dh_carry + dyr C;  dh_carry = dh exp(d A)
//     (exp2 evaluated again rather than stashed: registers are the limit). Sums
//     over the lane's states (for du, ddelta, dz) meet in a 4-lane reduce-scatter;
//     the dBm/dCm terms (sums over channels) in an 8-lane reduce-scatter whose first
//     two stages need no selects (each lane holds its states in a lane-dependent
//     order, with Bm/Cm rows kept in matching permuted copies), then over the
//     block's warps in shared memory, giving one partial per (b, channel block, t,
//     n). dA stays in registers, dD/ddelta_bias in shared memory;
//  3. the finish kernel adds the partials in a fixed order (over channel blocks for
//     dBm/dCm, over b for dA/dD/ddelta_bias). No float atomics anywhere: the
//     result depends only on the shapes and data.
// The pre-gate output: with a gate and chm_scan_args.y_saved, the forward also stores
// sum_n Cm h + D u (in u's dtype), and the backward that writes du, ddelta and dz (the model's
// call: the YS kernel) stages it for dz instead of summing Y = sum C h in its steps: 4 FFMAs
// and a third of the S/Q/Y reduce a lane-step, 5% of the main kernel's instructions (SASS:
// 2084 -> 1976 a chunk and thread), for one more [B,T,Di] tensor written and read.
// Gradients the caller asks to be written (chm_scan_args.grads_set) rather than
// accumulated: the finish kernel stores instead of adding; du, ddelta, dz take the
// main kernel's SET variant, which neither stages nor adds their old values (when
// only some of them are named, those are zeroed first and all accumulate).
// Resources: the backward kernel is capped at 128 registers (the stash is 64 of them; 8
// bytes of spills as chimera-1b calls it, up to 48 in the Di % 4 != 0 accumulating kernel,
// all outside the steps, once a chunk) so that 16 warps fit an SM; the
// chunk's start state is loaded twice (for the recompute, and halfway through the reverse
// for its last step) rather than held through the steps. Shared memory per block: backward
// 103 KiB in bf16 (two blocks an SM; 99 KiB without the fdd tile on devices with less
// room, sm_86/sm_89) and 131 KiB in f32 (one); forward 74.75 KiB in bf16, 92.75 in f32.
// chimera-1b's grid, 8 x 32 blocks of 256 threads, is about one wave on 132 SMs (15.5
// warps an SM: the parallelism, B Di 4 lanes, not the resources, sets the occupancy). Its
// backward runs in 8 x 16 blocks of 512 threads instead where the device has the shared
// memory (196 KiB: sm_90; selective_scan_bwd_w16.cu): the same warps an SM, half the
// dBm/dCm partials. cuda_opcheck's scan cases cover both tile paths (Di % 4 == 0 and not),
// several chunks with a partial last one, N < 16, and the FULL kernels (scan_assume_full)
// at 8 and 16 warps.
// Session 22: the model's backward in 16-warp blocks (selective_scan_bwd_w16.cu), whose
// finish kernel adds half the partials: fwd+bwd -1.4% (H100 and H200 alike, ~1.00 ms).
// Estimated and not built: the dBm/dCm sums over channels on the tensor cores (tf32 mma with
// masked one-step operands) save ~12 instructions a lane-step but need the lane to hold two
// channels (k is lane % 4 in both mma operands), which moves the S/Q sums onto 8 lanes (+8):
// ~-4 net. The forward issues ~10 clocks and keeps its MUFU pipe ~10 clocks busy per warp
// lane-step: moving exp2 or rcp work to the FMA pipe trades one limit for the other.
// Where it stands (session 21, H100, chimera-1b's call, FULL kernels): forward 0.267 ms at 60% of
// the issue slots, its MUFU (XU) pipe at 63% and MIO throttle its top stall (its steps' loads
// and decays software-pipelined by hand, fwd_steps: it had been waiting on them); backward
// 0.728 ms, of which the main kernel 0.698 at 66% of the issue slots (XU 42%); both with 3.5
// warps a scheduler (the parallelism: B Di 4 lanes), stalled on short latencies (shared loads,
// MUFU, shuffles); SASS 39.7 and 114.0 instructions a lane-step. Issue at 100% would give
// ~0.73 ms fwd+bwd, 3.0x the memory floor; the MUFU work alone (14 a lane-step: the three
// exp2 passes, the per-element softplus and sigmoids) ~0.45 ms at 16 a clock an SM. Measured
// slower in session 21: one or two of the recompute's four exp2 on the FMA pipe (a polynomial:
// issue 66 -> 69% but +9% instructions, backward +3%), SCAN_BATCH 1 (+2.4%), and a forward
// with 8 lanes a channel and 2 states each (twice the warps: issue 60 -> 71%, but +53%
// instructions, as the per-step loads and sums serve half the states: +29%). In session 20:
// 4-warp blocks (SCAN_WARPS 4: backward +24%, each block stages Bm/Cm and writes partials)
// and one backward block an SM (SCAN_MINB 1, 255 registers for more work in flight: +19%);
// warps, not registers, are what it lacks. The rest
// of this note is the history of how the kernels got here (tools/bench/RESULTS.md has the
// figures).
// Cost model (per lane-step = one lane's four states for one (b, t, channel); 134M of
// them at chimera-1b's B=8 T=2048 Di=2048 N=16; instructions per lane-step from the
// sm_90 SASS of the bf16 vector kernels, the chunk loop's body over SCAN_L): forward
// 50 with 5 MUFU, main backward kernel 139 with 8.75 (the steps 91: recompute 18,
// reverse 73, of which 20 the dBm/dCm and 10 the S/Q/Y reductions; 10 shuffles). At 4
// issue slots a clock per SM, the forward is issue-bound near 0.19 ms and the backward
// near 0.55 ms on an H100 (1.97 GHz under load). Measured (ncu, H100, bf16, as chimera-1b
// calls it), before session 6: forward 389 us at 47% of the issue slots, backward main
// kernel 1.04 ms at 50%, its finish kernels 33 us; the stalls were short scoreboard
// (shared loads, MUFU, shuffles: 34%), long scoreboard (12-21%: conversions and selects
// placed right after the one-chunk-ahead global loads, now predicated loads of raw values),
// fixed-latency waits and barriers, plus 4-way bank conflicts on the part reads. After:
// forward 307 us at ~63%, backward 895 us at ~61%, finish 29 us (one launch for both).
// Timed (cuda_opcheck-style events, H100, same lease): forward 0.397 -> 0.309 ms,
// backward 1.083 -> 0.930 ms, fwd+bwd 1.480 -> 1.239 ms = 4.70x -> 3.94x the 3 TB/s
// memory floor (issue 7 wants 3x). Earlier: the session-2 kernels took 1.394 / 5.193 ms
// (H200); this design 0.421 / 1.487 ms (H200) before the select-free reductions.
// Session 7 (H100, same call): the chunk loops' integer work cut (each thread's tile offsets
// computed once a kernel, int chunk indices, the dBm/dCm partials' loop unrolled, the element
// math masked instead of branched, the forward's delta_bias and D held in registers): SASS per
// lane-step forward 50.3 -> 47.1, backward 138.8 -> 130.2 (static counts of the bf16 vector
// kernels' chunk loops); timed forward 0.309 -> 0.292 ms, backward 0.930 -> 0.900, fwd+bwd
// 1.239 -> 1.192 = 3.94x -> 3.79x the floor. ncu (before the forward's registers for
// delta_bias and D): besides issue (forward 64%, backward 62%), the shared-memory/shuffle pipe
// bounds both (L1 throughput 84% and 72%). Counting a warp's 128-bit shared load as 4
// wavefronts even when it broadcasts, a 64-bit one as 2 and a shuffle as 1 reproduces those
// figures (79% and 71%): the forward's Bm and Cm quads are 8 of a step's 11 wavefronts, the
// backward's steps take ~29 a lane-step (17 loaded floats, 2 stores, 10 shuffles). Tried and
// reverted: two channels a forward lane (128-thread blocks sharing the Bm/Cm loads): L1
// 84% -> 53% and 5% fewer instructions, but at 7.6 warps an SM it turned latency-bound
// (0.292 -> 0.313 ms). The backward has no such way out: its stash (64 of the 128 registers
// that 16 warps an SM allow) rules out more states or channels a lane.
#ifndef CHIMERA_CUDA_SELECTIVE_SCAN_CUH
#define CHIMERA_CUDA_SELECTIVE_SCAN_CUH

#include <limits.h>

#include "common.cuh"

#define SCAN_NMAX CHM_CU_SCAN_MAX_N
#define SCAN_L 16 /* steps per chunk: tile height, checkpoint interval, stash length */
#ifndef SCAN_AHEAD
#define SCAN_AHEAD 2 /* steps the forward's shared loads run ahead of their use (fwd_steps;
                        1 and 3 measured slower on the H100) */
#endif
#define SCAN_SAVE 16 /* CHM_SCAN_SAVE_STRIDE (backend.h): the saved states' interval */
#ifndef SCAN_WARPS
#define SCAN_WARPS 8 /* selective_scan_bwd_w16.cu sets 16 before it includes this */
#endif
#define SCAN_THREADS (32 * SCAN_WARPS)
#define SCAN_MINB (16 / SCAN_WARPS)      /* backward blocks per SM: 16 warps at 128 registers */
#define SCAN_NPERM 4                      /* the backward's state orders (scan_perm_of) */
#define SCAN_CB (8 * SCAN_WARPS)          /* channels per block: 8 a warp, 4 lanes each */
#define SCAN_QPR (SCAN_CB / 4)            /* channel quads in a tile row */
#define SCAN_TILE (SCAN_L * SCAN_CB)      /* elements of a [SCAN_L, SCAN_CB] tile */
/* Row stride of the parts: the lanes' rows 8 banks apart, so that a warp's 32 stores of a
   step (8 channels x 4 lanes) hit 32 banks, and a thread reads a lane's 4 channels as one
   float4 (the [L][CB][4] layout before cost 4-way conflicts on those reads). */
#define SCAN_PSTRIDE (SCAN_CB + 8)
#define SCAN_PART (SCAN_L * 4 * SCAN_PSTRIDE)
/* Floats between two copies of the chunk's Bm (or Cm) rows (the backward's permuted copies,
   the forward's two buffers): 16 more than a copy, so that copies p and p ^ 1 start 64 bytes
   apart in the banks. The backward's lanes n and n ^ 8 read copies p and p ^ 1 and, paired
   (lane_of), a half-warp's quads come from one wavefront only if those copies' quads fall in
   different banks (1024 bytes apart, they took two). */
#define SCAN_BCCOPY (SCAN_L * SCAN_NMAX + 16)
#define SCAN_LOG2E 1.4426950408889634f
#define SCAN_LN2 0.6931471805599453f

static_assert(SCAN_NMAX == 16, "four lanes of four states per channel");
static_assert(SCAN_L == SCAN_SAVE, "a saved state at every chunk boundary");
static_assert(SCAN_AHEAD >= 1 && SCAN_AHEAD < SCAN_L, "fwd_steps loads step 0 before its loop");
static_assert(SCAN_TILE == 4 * SCAN_THREADS, "one channel quad of each tile per thread");

// The [B,T,Di] tensors a chunk stages, in their tile order (the forward uses the first 3).
// RAW_YS, the forward's pre-gate output (chm_cu_scan_grads.ysaved), takes dz's slot: the
// backward reads it only where the gradients are set, which stages no old dz.
enum { RAW_DELTA, RAW_U, RAW_Z, RAW_DY, RAW_GU, RAW_GD, RAW_GZ, RAW_BWD, RAW_YS = RAW_GZ };
#define RAW_FWD 3

// The per-call constants every scan kernel reads (storage type T; D, z, db may be NULL).
struct scan_k {
    const void *u, *delta; /* [B,T,Di] */
    const void *A;         /* [Di,N] */
    const void *Bm, *Cm;   /* [B,T,N] */
    const void *D;         /* [Di] */
    const void *z;         /* [B,T,Di] */
    const void *db;        /* [Di] delta_bias */
    int64_t B, T, Di, N;
    int64_t DiN; /* Di * N: the saved states' stride between chunks */
    int softplus;
    int hvec; /* the saved states' rows are float4s: N == 16 and 16-byte aligned */
};

// Gradient pointers and the scratch of the backward.
struct scan_g {
    void *du, *ddelta, *dz; /* [B,T,Di], each optional, accumulated into (or set: SET) */
    const void *dy;         /* [B,T,Di] */
    const void *ys;         /* [B,T,Di] the forward's pre-gate output (the YS kernel) */
    const float *ckpt;    /* [B, nck, Di, N]: the state after chunk ck (hs_store) */
    float *pbc;           /* [B, nblk, T, 32]: dBm (0..15) and dCm (16..31) partials */
    float *pA, *pD, *pdb; /* [B, Di, 16], [B, Di], [B, Di] */
};

// ---- small device helpers ----

// 2^x on the MUFU unit (denormal results flush to 0: a decay below 2^-126 is 0).
__device__ __forceinline__ float scan_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// 1/x on the MUFU unit; x here is in [1, 3], where the approximation is within 1 ulp
// (expf and a full division cost ~10 more instructions each, per element and call).
__device__ __forceinline__ float scan_rcp(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// exp(-|x|) in (0, 1], the argument of scan_softplus and scan_sigmoid.
__device__ __forceinline__ float scan_enabs(float x) { return scan_ex2(-fabsf(x) * SCAN_LOG2E); }

// softplus(x) = max(x, 0) + log1p(e) given e = exp(-|x|) in (0, 1]: log1p(e) = 2 atanh(s)
// with s = e / (2 + e) <= 1/3, whose odd series stops at s^13 (relative error ~1e-8 before
// rounding). Branch-free and a third of log1pf(expf(x))'s instructions.
__device__ __forceinline__ float scan_softplus(float x, float e) {
    float s = e * scan_rcp(2.0f + e), s2 = s * s;
    float p = fmaf(s2, 1.0f / 13.0f, 1.0f / 11.0f);
    p = fmaf(s2, p, 1.0f / 9.0f);
    p = fmaf(s2, p, 1.0f / 7.0f);
    p = fmaf(s2, p, 1.0f / 5.0f);
    p = fmaf(s2, p, 1.0f / 3.0f);
    p = fmaf(s2, p, 1.0f);
    return fmaxf(x, 0.0f) + 2.0f * s * p;
}

// sigmoid(x) given e = exp(-|x|).
__device__ __forceinline__ float scan_sigmoid(float x, float e) {
    float r = scan_rcp(1.0f + e);
    return x >= 0.0f ? r : e * r;
}

// Asynchronous global -> shared copy of BYTES (8 or 16) to the shared address d; src_bytes 0
// writes zeros.
template <int BYTES>
__device__ __forceinline__ void scan_cp_async(unsigned d, const void *src, int src_bytes) {
    if (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                     "r"(src_bytes));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(d), "l"(src),
                     "r"(src_bytes));
}
__device__ __forceinline__ void scan_cp_commit() { asm volatile("cp.async.commit_group;\n"); }
__device__ __forceinline__ void scan_cp_wait() {
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// Four consecutive elements (16-byte aligned for f32, 8 for bf16) as floats.
__device__ __forceinline__ void scan_load4(const float *s, float *v) {
    float4 x = *(const float4 *)s;
    v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
}
__device__ __forceinline__ void scan_load4(const bf16 *s, float *v) {
    uint2 x = *(const uint2 *)s;
    float2 a = __bfloat1622float2(*(const __nv_bfloat162 *)&x.x);
    float2 b = __bfloat1622float2(*(const __nv_bfloat162 *)&x.y);
    v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}
__device__ __forceinline__ void scan_put4(float *d, const float *v) {
    *(float4 *)d = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void scan_put4(bf16 *d, const float *v) {
    __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), b = __floats2bfloat162_rn(v[2], v[3]);
    uint2 x;
    x.x = *(const unsigned *)&a;
    x.y = *(const unsigned *)&b;
    *(uint2 *)d = x;
}

// ---- the block's shared memory ----

// Tiles of one block. f32 arrays first (16-byte aligned), then the raw tiles as stored.
template <typename T> struct scan_sm {
    float2 *fdu;              /* [L][CB] (d, d*u) */
    float *Bs, *Cs;           /* [L][16] Bm, Cm rows of the chunk, zero past N; the
                                 backward keeps [SCAN_NPERM][L][16] (scan_perm_of) */
    float *cbias, *cD;        /* [CB] delta_bias and D of the block's channels (or 0) */
    float *part;              /* [L][4][SCAN_PSTRIDE] per-lane parts of the channels (fwd:
                                 y of lane q in row q; bwd: S, Q, Y, Q in rows 0..3) */
    float *fdd;               /* [L][CB] bwd with FDD (scan_smem_fits, _bwd.cu): d for bwd_out */
    float *fdyr, *fdsig, *fdzf; /* [L][CB] bwd: dy*silu(z), dd/ddelta, dz/yraw */
    float *red;               /* [L][WARPS][32] bwd: the warps' dBm/dCm sums */
    float *accD, *accB;       /* [L][CB] bwd: running dD, ddelta_bias of each element slot */
    T *raw;                   /* [2][nraw][L][CB] double-buffered input tiles */
};

// Copies of the Bm/Cm rows a kernel keeps (the backward's lanes read permuted ones).
static __host__ __device__ constexpr int scan_nperm(bool bwd) { return bwd ? SCAN_NPERM : 1; }
// Buffers of fdu, part, Bs, Cs (the forward prepares chunk ck + 1 while chunk ck's steps
// run: two) and of the raw tiles (the forward's output of chunk ck - 1 reads them too: three).
static __host__ __device__ constexpr int scan_nbuf(bool bwd) { return bwd ? 1 : 2; }
static __host__ __device__ constexpr int scan_nrawbuf(bool bwd) { return bwd ? 2 : 3; }

// Floats of the f32 arrays, then bytes in all.
static __host__ __device__ constexpr size_t scan_sm_floats(bool bwd, bool fdd = true) {
    return (size_t)SCAN_TILE * (bwd ? (fdd ? 1 : 0) + 3 + 4 + 2 : 0) +
           (size_t)scan_nbuf(bwd) * (2 * SCAN_TILE + SCAN_PART +
                                     2 * scan_nperm(bwd) * SCAN_BCCOPY) +
           2 * SCAN_CB;
}
static __host__ __device__ constexpr size_t scan_sm_bytes(size_t tsize, bool bwd, bool fdd = true) {
    return scan_sm_floats(bwd, fdd) * 4 +
           (size_t)scan_nrawbuf(bwd) * (bwd ? RAW_BWD : RAW_FWD) * SCAN_TILE * tsize;
}

template <typename T>
__device__ __forceinline__ scan_sm<T> scan_carve(unsigned char *base, bool bwd,
                                                 bool fdd = true) {
    scan_sm<T> s;
    float *f = (float *)base;
    s.fdu = (float2 *)f, f += 2 * SCAN_TILE * scan_nbuf(bwd);
    s.part = f, f += SCAN_PART * scan_nbuf(bwd);
    s.fdd = s.fdyr = s.fdsig = s.fdzf = s.red = s.accD = s.accB = NULL;
    if (bwd) {
        if (fdd) s.fdd = f, f += SCAN_TILE;
        s.fdyr = f, f += SCAN_TILE;
        s.fdsig = f, f += SCAN_TILE;
        s.fdzf = f, f += SCAN_TILE;
        s.red = f, f += 4 * SCAN_TILE;
        s.accD = f, f += SCAN_TILE;
        s.accB = f, f += SCAN_TILE;
    }
    s.Bs = f, f += scan_nbuf(bwd) * scan_nperm(bwd) * SCAN_BCCOPY;
    s.Cs = f, f += scan_nbuf(bwd) * scan_nperm(bwd) * SCAN_BCCOPY;
    s.cbias = f, f += SCAN_CB;
    s.cD = f, f += SCAN_CB;
    s.raw = (T *)f;
    return s;
}

// ---- thread roles ----

// Scan role: lane q (states 4q..4q+3) of block channel cl. With PERM (the backward)
// the lane's register j holds state 4q + (j ^ perm), perm = lane bits 4 and 3 (see
// bwd_reverse: it lets the dBm/dCm reduce-scatter run without selects); else j.
// Lane bits: 0 = q bit 0, 1 = channel bit 0, 2 = q bit 1, 3..4 = channel bits 1..2. A
// warp's shared loads then pair lanes: the Bm/Cm quads (which depend on q and perm, not on
// channel bit 0) are the same for lanes n and n ^ 2, the per-channel values (fdu, fdyr) for
// lanes n and n ^ 1, and the H100 packs such pairs' returns: a 128-bit load takes 2
// wavefronts instead of 4 (with q in bits 0..1, the quads took 4: the forward's steps, bound
// by this pipe, spent 8 of their ~11 wavefronts a lane-step on them).
struct scan_lane {
    int q, cl, perm;
    int64_t c;
    bool live;
};

// The state permutation of lane `lane` of a warp (0..SCAN_NPERM-1).
static __host__ __device__ constexpr int scan_perm_of(int lane) { return (lane >> 3) & 3; }

// The lane bits of q's bit 0, q's bit 1 and channel bit 0 (bits 3, 4 are channel bits 1, 2).
#define SCAN_LANE_Q0 1
#define SCAN_LANE_G0 2
#define SCAN_LANE_Q1 4

template <bool PERM> __device__ __forceinline__ scan_lane lane_of(int64_t c0, int64_t Di) {
    scan_lane l;
    int lane = threadIdx.x & 31;
    l.q = (lane & 1) | (lane >> 1 & 2);
    l.cl = (threadIdx.x >> 5) * 8 + ((lane >> 1 & 1) | (lane >> 2 & 6));
    l.perm = PERM ? scan_perm_of(threadIdx.x & 31) : 0;
    l.c = c0 + l.cl;
    l.live = l.c < Di;
    return l;
}

// dst[j] = src[j ^ perm] (its own inverse): once per chunk, outside the steps.
__device__ __forceinline__ void scan_permute4(float *dst, const float *src, int perm) {
    float t[4];
#pragma unroll
    for (int j = 0; j < 4; j++) t[j] = (perm & 1) ? src[j ^ 1] : src[j];
#pragma unroll
    for (int j = 0; j < 4; j++) dst[j] = (perm & 2) ? t[j ^ 2] : t[j];
}

// The lane's Bm and Cm quads of chunk row 0 (row tt at [4 * tt]), in its register order.
__device__ __forceinline__ const float4 *lane_rows(const float *rows, const scan_lane &l) {
    return (const float4 *)(rows + l.perm * SCAN_BCCOPY) + l.q;
}

// Tile role: row (step) and first column (channel) of this thread's quad.
__device__ __forceinline__ int tile_row() { return threadIdx.x / SCAN_QPR; }
__device__ __forceinline__ int tile_col() { return 4 * (threadIdx.x % SCAN_QPR); }

// The lane's four entries of A's row, times log2 e (zero past N, so those states stay 0).
template <typename T>
__device__ __forceinline__ void lane_A2(float *A2, const scan_k &k, const scan_lane &l) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int n = 4 * l.q + (j ^ l.perm);
        A2[j] = (l.live && n < k.N) ? to_f(((const T *)k.A)[l.c * k.N + n]) * SCAN_LOG2E : 0.0f;
    }
}

// How many of the thread's quad of channels lie inside Di (0..4).
__device__ __forceinline__ int quad_valid(int64_t c0, int64_t Di) {
    int64_t n = Di - c0 - tile_col();
    return n < 0 ? 0 : n > 4 ? 4 : (int)n;
}

// The thread's tile quad and where it lies in the [B,T,Di] tensors, computed once a kernel
// (per chunk, that 64-bit address arithmetic was a good part of the chunk's integer work).
struct scan_pos {
    int row, col, at; /* tile_row, tile_col; at = row * SCAN_CB + col */
    int nv;           /* the quad's channels inside Di (quad_valid) */
    int64_t g;        /* offset of element (b, row, c0 + col) of a [B,T,Di] tensor: + t0 Di */
};

__device__ __forceinline__ scan_pos pos_of(const scan_k &k, int64_t b, int64_t c0) {
    scan_pos p;
    p.row = tile_row(), p.col = tile_col(), p.at = p.row * SCAN_CB + p.col;
    p.nv = quad_valid(c0, k.Di);
    p.g = (b * k.T + p.row) * k.Di + c0 + p.col;
    return p;
}

// The block's delta_bias and D into shared memory (0 when absent or past Di); the
// first barrier of the chunk loop publishes them.
template <typename T>
__device__ __forceinline__ void block_consts(const scan_sm<T> &sm, const scan_k &k, int64_t c0) {
    int i = threadIdx.x;  // SCAN_CB <= SCAN_THREADS
    if (i < SCAN_CB) {
        bool in = c0 + i < k.Di;
        sm.cbias[i] = in && k.db ? to_f(((const T *)k.db)[c0 + i]) : 0.0f;
        sm.cD[i] = in && k.D ? to_f(((const T *)k.D)[c0 + i]) : 0.0f;
    }
}

// Advance the lane's four states by chunk row tt: h = exp2(d A2) h + (d u) Bm[tt]
// (B4: the lane's Bm quads, lane_rows).
template <typename T>
__device__ __forceinline__ void state_step(float *h, const float *A2, const scan_sm<T> &sm,
                                           const float4 *B4, const scan_lane &l, int tt) {
    float2 p = sm.fdu[tt * SCAN_CB + l.cl];
    float4 bq = B4[tt * 4];
    float bb[4] = {bq.x, bq.y, bq.z, bq.w};
#pragma unroll
    for (int j = 0; j < 4; j++) h[j] = fmaf(scan_ex2(p.x * A2[j]), h[j], p.y * bb[j]);
}

// ---- saved states: [B, K, Di, N] f32, entry ck the state after chunk ck ----

// The lane's entries of chunk 0's saved state (states 4q.. of channel l.c; nck = K); chunk
// ck's are k.DiN * ck further.
__device__ __forceinline__ int64_t hs_base(const scan_k &k, int64_t nck, int64_t b,
                                           const scan_lane &l) {
    return (b * nck * k.Di + l.c) * k.N + 4 * l.q;
}

// Store the lane's four states h (state order), those below N, at hs + hb + ck k.DiN.
__device__ __forceinline__ void hs_store(float *hs, const float *h, const scan_k &k, int64_t hb,
                                         int ck, const scan_lane &l) {
    float *p = hs + hb + ck * k.DiN;
    if (k.hvec) {
        *(float4 *)p = make_float4(h[0], h[1], h[2], h[3]);
        return;
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
        if (4 * l.q + j < k.N) p[j] = h[j];
}

// Load them into the lane's register order (h[j] = state 4q + (j ^ perm); 0 past N). The
// addresses follow the order, so the loads need no select after them: a select (or a
// conversion) placed right after a load waits for it (its latency showed as the top stall),
// while the backward's first reads of h come after the chunk's barrier or 8 steps later.
__device__ __forceinline__ void hs_load(float *h, const float *hs, const scan_k &k, int64_t hb,
                                        int ck, const scan_lane &l) {
    const float *p = hs + hb + ck * k.DiN;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        h[j] = 0.0f;
        if (l.live && 4 * l.q + (j ^ l.perm) < k.N) h[j] = p[j ^ l.perm];
    }
}

// ---- staging ----

// Copy this thread's quad of chunk rows [t0, t0+steps) of src [B,T,Di] into the tile
// dst (zeros outside the tensor), element by element (the path without vector tiles).
template <typename T>
__device__ __forceinline__ void tile_copy_elem(T *dst, const T *src, const scan_k &k, int64_t b,
                                               int64_t c0, int64_t t0, int steps) {
    int row = tile_row(), col = tile_col();
    int64_t c = c0 + col;
    T *d = dst + row * SCAN_CB + col;
    const T *s = src + ((b * k.T + t0 + (row < steps ? row : 0)) * k.Di + (c < k.Di ? c : 0));
#pragma unroll
    for (int e = 0; e < 4; e++) d[e] = (row < steps && c + e < k.Di) ? s[e] : from_f<T>(0.0f);
}

// Start the copies of chunk t0 into the nraw tiles at raw (absent tensors skipped; bit r of
// REQ: src[r] is never NULL, no test). VEC: one async vector copy per tile, its source offset,
// size and shared address computed once for all the tiles (per tile, that address arithmetic
// was most of the chunk's integer work).
template <typename T, bool VEC, unsigned REQ>
__device__ __forceinline__ void chunk_issue(T *raw, const void *const *src, int nraw,
                                            const scan_k &k, const scan_pos &p, int64_t b,
                                            int64_t c0, int64_t t0, int steps) {
    if (VEC) {
        bool ok = p.row < steps && p.nv > 0;  // Di % 4 == 0: a quad is wholly in or out
        int64_t off = ok ? p.g + t0 * k.Di : 0;
        unsigned d = (unsigned)__cvta_generic_to_shared(raw + p.at);
        for (int r = 0; r < nraw; r++)
            if ((REQ >> r & 1u) || src[r])
                scan_cp_async<4 * sizeof(T)>(d + r * SCAN_TILE * (unsigned)sizeof(T),
                                             (const T *)src[r] + off, ok ? 4 * (int)sizeof(T) : 0);
    } else {
        for (int r = 0; r < nraw; r++)
            if ((REQ >> r & 1u) || src[r])
                tile_copy_elem<T>(raw + r * SCAN_TILE, (const T *)src[r], k, b, c0, t0, steps);
    }
    scan_cp_commit();
}

// This thread's elements of the chunk's Bm and Cm rows ([L][16], zero past N or T), loaded
// into registers now, as stored, and put into shared memory (as f32) by bc_put a chunk later.
// Predicated loads into zeroed registers, not selects or conversions after the loads: those
// would wait for the loads right here (in the profile, the kernels' top long-scoreboard stall).
#define SCAN_BCPT ((SCAN_L * SCAN_NMAX + SCAN_THREADS - 1) / SCAN_THREADS)
template <typename T>
__device__ __forceinline__ void bc_fetch(T *bv, T *cv, const scan_k &k, int64_t b, int64_t t0,
                                         int steps, bool want_c) {
#pragma unroll
    for (int e = 0; e < SCAN_BCPT; e++) {
        int i = threadIdx.x + e * SCAN_THREADS, row = i / SCAN_NMAX, n = i % SCAN_NMAX;
        bool ok = i < SCAN_L * SCAN_NMAX && row < steps && n < k.N;
        int64_t at = (b * k.T + t0 + row) * k.N + n;
        bv[e] = cv[e] = from_f<T>(0.0f);
        if (ok) bv[e] = ((const T *)k.Bm)[at];
        if (ok && want_c) cv[e] = ((const T *)k.Cm)[at];
    }
}

// NPERM copies: entry n of a row goes to (n & ~3) | ((n & 3) ^ p) of copy p, so that
// lane_rows' quads follow the lane's register order.
template <typename T, int NPERM>
__device__ __forceinline__ void bc_put(const scan_sm<T> &sm, const T *bv, const T *cv) {
#pragma unroll
    for (int e = 0; e < SCAN_BCPT; e++) {
        int i = threadIdx.x + e * SCAN_THREADS;
        if (i < SCAN_L * SCAN_NMAX) {
            float bf = to_f(bv[e]), cf = to_f(cv[e]);
#pragma unroll
            for (int p = 0; p < NPERM; p++) {
                int at = p * SCAN_BCCOPY + (i ^ p);  // p < 4: only the low bits move
                sm.Bs[at] = bf;
                sm.Cs[at] = cf;
            }
        }
    }
}

// Per element of the thread's quad: d and d*u (zero outside the tensor); BWD also
// dy*silu(z), dd/ddelta and dz/yraw = dy s (1 + z (1 - s)) with s = sigmoid(z). All loads
// come first: a shared load after a shared store cannot move above it (the compiler cannot
// tell the tiles apart), and each such round trip showed as stalls in the profile.
// bq: delta_bias of the quad's channels (sm.cbias; the forward keeps it in registers).
template <typename T, bool BWD, bool FDD = true>
__device__ __forceinline__ void pre_phase(const scan_sm<T> &sm, const T *raw, const scan_k &k,
                                          const scan_pos &p, int steps, float4 bq) {
    int at = p.at, nv = p.row < steps ? p.nv : 0;
    float dl[4], uu[4], bias[4] = {bq.x, bq.y, bq.z, bq.w}, dy[4];
    float zz[4] = {0.0f, 0.0f, 0.0f, 0.0f}, dv[4], dsig[4];
    scan_load4(raw + RAW_DELTA * SCAN_TILE + at, dl);
    scan_load4(raw + RAW_U * SCAN_TILE + at, uu);
    if (BWD) scan_load4(raw + RAW_DY * SCAN_TILE + at, dy);
    if (BWD && k.z) scan_load4(raw + RAW_Z * SCAN_TILE + at, zz);
#pragma unroll
    for (int e = 0; e < 4; e++) {
        // Computed for every element and masked by a product, not a branch around each
        // element's math: okf is 1 on the tensor's elements, and the padding holds zeros
        // (x is the channel's delta_bias there: finite where the channel's y can be).
        float okf = e < nv ? 1.0f : 0.0f;
        float x = dl[e] + bias[e], ex = scan_enabs(x);
        dv[e] = (k.softplus ? scan_softplus(x, ex) : x) * okf;
        dsig[e] = (k.softplus ? scan_sigmoid(x, ex) : 1.0f) * okf;
    }
    float4 *fd = (float4 *)(sm.fdu + at);
    fd[0] = make_float4(dv[0], dv[0] * uu[0], dv[1], dv[1] * uu[1]);
    fd[1] = make_float4(dv[2], dv[2] * uu[2], dv[3], dv[3] * uu[3]);
    if (BWD) {
        float dyr[4], dzf[4];
        if (FDD) scan_put4(sm.fdd + at, dv);  // bwd_out's d, read without fdu's stride
#pragma unroll
        for (int e = 0; e < 4; e++) {
            dyr[e] = dy[e], dzf[e] = 0.0f;
            if (k.z) {
                float s = scan_sigmoid(zz[e], scan_enabs(zz[e]));
                dyr[e] = dy[e] * zz[e] * s;
                dzf[e] = dy[e] * s * (1.0f + zz[e] * (1.0f - s));
            }
        }
        scan_put4(sm.fdyr + at, dyr);
        scan_put4(sm.fdsig + at, dsig);
        scan_put4(sm.fdzf + at, dzf);
    }
}

// Store four values at p (channels c..c+3 of a row), the first nv of them (those inside Di:
// scan_pos.nv; with vector tiles a quad is whole, nv 0 or 4).
template <typename T, bool VEC>
__device__ __forceinline__ void scan_store4(T *p, const float *v, int nv) {
    if (VEC) {
        if (nv > 0) scan_put4(p, v);
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (e < nv) p[e] = from_f<T>(v[e]);
    }
}

// FULL, a template flag of the kernels the model calls: the call's shapes are the common ones,
// every chunk whole (T % SCAN_L == 0), every channel quad inside Di (Di % SCAN_CB == 0), N == 16
// with float4 saved-state rows, softplus on and a gate given (scan_full_ok; the backward also
// wants du, ddelta and dz). The kernel then writes those facts into its copies of k, l and p,
// and the compiler drops the masks, the per-chunk step counts and the N tests they feed. SASS
// per lane-step (sm_90, bf16, the model's calls): forward 48.1 -> 42.5, backward 123.5 ->
// 115.1 (-5.6% time on an H100; the forward, bound by its shared-memory pipe, -1%).
template <bool FULL>
__device__ __forceinline__ void scan_assume_full(scan_k &k, scan_lane &l, scan_pos &p) {
    if (!FULL) return;
    k.N = SCAN_NMAX, k.hvec = 1, k.softplus = 1;
    l.live = true;
    p.nv = 4;
    if (!k.z) __builtin_unreachable();
}

// Steps of the chunk at t0 (SCAN_L, or fewer in the last chunk; always SCAN_L with FULL).
template <bool FULL> __device__ __forceinline__ int chunk_steps(const scan_k &k, int64_t t0) {
    return FULL || k.T - t0 >= SCAN_L ? SCAN_L : (int)(k.T - t0);
}

// ---- host side, shared by the two launchers ----

// hs: the saved states the kernels will read or write (or NULL).
static inline scan_k scan_consts(const chm_cu_scan *a, const float *hs) {
    bool hvec = a->N == SCAN_NMAX && (uintptr_t)hs % 16 == 0;
    scan_k k = {a->u, a->delta, a->A, a->Bm, a->Cm, a->D, a->z, a->delta_bias,
                a->B, a->T, a->Di, a->N, a->Di * a->N, a->softplus ? 1 : 0, hvec ? 1 : 0};
    return k;
}

// Whether the vector tile path applies: whole channel quads and aligned [B,T,Di] rows.
static inline bool scan_vec_ok(const chm_cu_scan *a, const void *const *p, int n) {
    size_t align = 4 * (a->dt == CHM_F32 ? sizeof(float) : sizeof(uint16_t));
    if (a->Di % 4) return false;
    for (int i = 0; i < n; i++)
        if (p[i] && (uintptr_t)p[i] % align) return false;
    return true;
}

// Whether a call with these constants (k) qualifies for the FULL kernels (scan_assume_full);
// vec as scan_vec_ok says.
static inline bool scan_full_ok(const chm_cu_scan *a, const scan_k &k, bool vec) {
    return vec && k.hvec && a->softplus && a->z && a->T % SCAN_L == 0 && a->Di % SCAN_CB == 0;
}

static inline dim3 scan_grid(const chm_cu_scan *a) {
    return dim3((unsigned)((a->Di + SCAN_CB - 1) / SCAN_CB), (unsigned)a->B);
}

// Launch a scan kernel with `bytes` of dynamic shared memory (the limit raised first;
// the attribute is per device, so it is set on every call).
template <typename K, typename... Args>
static inline cudaError_t scan_launch(K kernel, dim3 grid, size_t bytes, cudaStream_t s,
                                      Args... args) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)bytes);
    if (e != cudaSuccess) return e;
    chm_launch(kernel, grid, SCAN_THREADS, bytes, s, args...);
    return cudaGetLastError();
}

// Whether a block may have `bytes` of shared memory on the current device. The bf16 main
// kernel with its fdd tile takes 103 KiB at 8 warps, above the 99 KiB of sm_86 and sm_89:
// there it runs without (99 KiB, d read from fdu). f32 (131 KiB) needs sm_80 or sm_90 either
// way; 16 warps (196 KiB in bf16) an sm_90.
static inline bool scan_smem_fits(size_t bytes) {
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
            cudaSuccess)
        return true;  // the launch reports the error
    return bytes <= (size_t)optin;
}

// The backward's main kernel as the model calls it (bf16, vector tiles, gradients set, the
// forward's pre-gate y: the caller checks those) in 16-warp blocks (selective_scan_bwd_w16.cu):
// launched, with *nblk its channel blocks, where the call has whole blocks and the device the
// shared memory; else *nblk = 0 and nothing runs.
cudaError_t chm_cu_scan_bwd_w16(const chm_cu_scan *a, const scan_k &k, const scan_g &g,
                                int64_t *nblk, cudaStream_t s);

// The backward's checkpoint pass (selective_scan_fwd.cu): the state after every chunk
// but the last into ckpt [B, nck, Di, N] f32; vec as scan_vec_ok says for the call.
cudaError_t chm_cu_scan_ckpt(float *ckpt, const chm_cu_scan *a, bool vec, cudaStream_t s);

#endif
