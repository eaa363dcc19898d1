/*
 * vk_bench.c: the vulkan backend's matmul paths checked against the cpu
 * backend, and its benchmarks; a plain C program (no Criterion) that
 * tools/gpu_pack.sh builds and tools/gpu_check.sh runs on the GPU machine.
 *
 *   vk_bench [--quick] [--emulate] [--no-train] [--matmul] [--coopmat-probe]
 *            [--attention] [--attention-1b] [--train-profile] [--mm-time] [--mm-odd]
 *            [--seq-ops] [--scan] [--l2-probe] [--mm-plain]
 *
 * 1. check: f32 (plain), f16 and bf16 (cooperative matrices where the device
 *    has them, bf16 scaled into f16's range, and the plain 16-bit path behind
 *    CHIMERA_VULKAN_DISABLE=coopmat) at 193x77x131 in every transpose, at
 *    512^3 and at 200x8192x136 (A^T B, a weight gradient's deep sum),
 *    against the cpu backend's f32 product of the same (rounded) inputs.
 *    Each element must lie within u*|ref| + 2(K+2) 2^-24 S, u the output's
 *    half ulp and S = sum |a b| (the ordering error either side's f32 sums
 *    may have); one PASS/FAIL line per case with the worst ratio err/bound.
 *    bf16 also with rows of A spanning 1e-30..1e30 ("wide").
 * 2. matmul TFLOP/s at 4096^3 and 8192x8192x2048 (A B^T, as the model's
 *    linear layers): f32 plain, f16 and bf16 on each path, with the share
 *    of cuBLASLt's bf16 4096^3 on the H100 (766 TFLOP/s); then every
 *    cooperative-matrix tile of a short list (CHIMERA_VULKAN_COOPMAT_TILE),
 *    to pick the default, and bf16 at the best of them; then chimera-1b's
 *    dense GEMM shapes (M = 16384 tokens; forward A B^T, input gradient A B,
 *    weight gradient A^T B) in f16 and bf16 at the default tile. Where the
 *    device has cooperative matrices 2 (matmul_cm2.comp, the default path
 *    there), sections 1 and 2 also check and time the v1 path beside it
 *    (CHIMERA_VULKAN_DISABLE=coopmat2; chimera-1b's shapes at its default
 *    tile, without the v1 tile sweep), then sweep cm2's tiles
 *    (CHIMERA_VULKAN_COOPMAT2_TILE, f16 and bf16 at 4096^3 A B^T) and time
 *    chimera-1b's shapes on cm2 too.
 * 2b. the cooperative-matrix probe (issue 6; on a device with NV cooperative
 *    matrices, and not with --quick): its matrix list, then TFLOP/s of
 *    coopMatMulAddNV with fragments in registers (16x16x16, 16x8x16, f32 and
 *    f16 accumulators, and an accumulator array walked by a spec-constant
 *    loop), and with fragments loaded each round from shared memory (uvec4
 *    or f16 arrays, row- or column-major, padded rows or not) or from
 *    global memory: which part of the tensor-core path costs what. With it
 *    (and alone, --l2-probe), l2_probe.comp's read bandwidth from regions that
 *    fit the L2 cache and from one that does not: what bounds the staging.
 * 3. attention fwd/bwd at B=8 T=2048 H=16 D=64 and H=8 D=128 in f32, bf16
 *    and f16 (--attention: this section alone), and the selective scan
 *    fwd/bwd at chimera-1b sizes (B=8 T=2048 Di=2048 N=16), f32.
 * 4. training tokens/s on vulkan: configs/tiny.yaml, and chimera-1b's model
 *    (configs/training_dolma.yaml) at micro batch 1 on the built-in corpus
 *    in f32, and in bf16 at micro batches 1 and 8 (its matmuls on the
 *    cooperative matrices, scaled, where the device has them), median step
 *    after a warm-up step. Its flat
 *    buffers (4.6 GB) exceed one storage-buffer binding: the elementwise ops
 *    split them (vk_split.c). A run that fails prints FAIL with the error
 *    and a FAILED summary row, and counts as a failed check.
 * --mm-time: only section 2's f16 and bf16 timings on the default path (no
 *    checks, no sweep): with CHIMERA_VULKAN_COOPMAT_ABLATE or a tile variable,
 *    a quick A/B of the cooperative-matrix kernel.
 * --mm-plain: only the plain path (matmul.comp; cooperative matrices switched off):
 *    section 1's checks in f32, f16 and bf16, then TFLOP/s at 4096^3 (A B^T, A B), at
 *    8192x2048x8192 and at chimera-1b's dense shapes in f32, and 4096^3 A B^T in f16 and
 *    bf16 (CHIMERA_VULKAN_MATMUL_TILE picks another tile).
 * --mm-odd: only chimera-1b's small bf16 products (bench_odd_shapes), on the
 *    default path: thin weight gradients, K of 1 to 96, identity transposes.
 * --seq-ops: only chimera-1b's causal_conv1d_bwd (B=8 T=2048 C=2048 W=4, SiLU,
 *    bias) and select_topk (8 x 2048, K=1024) in bf16 and f32, each on the
 *    default path and on the older one (CHIMERA_VULKAN_DISABLE=conv1d_fused,
 *    topk_split), with the conv's GB/s of its 4 passes over B*T*C words.
 * --scan: only the selective scan at chimera-1b's shape, bf16 and f32, called
 *    as the model calls it (gradients set, saved states where the backend
 *    reads them), bf16 also without the saved states and f32 accumulated, on
 *    the default path and on the older one (CHIMERA_VULKAN_DISABLE=scan_shuffle),
 *    twice.
 * --attention-1b: only bf16 attention at chimera-1b's shape (B8 T1024 H16 D64,
 *    mixture-of-depths keeps half of 2048 tokens) and at B8 T2048, fwd and bwd
 *    ms, then a per-shader profile of 4 fwd+bwd calls at B8 T1024 (each pass:
 *    Delta, dq, dk/dv); quick A/Bs of the attention shaders (tile variables,
 *    CHIMERA_VULKAN_ATTN_ABLATE).
 * --train-profile: only a per-shader profile of chimera-1b's bf16 step at
 *    micro batch 8 (every dispatch timed, CHIMERA_VULKAN_PROFILE's table).
 * Times come from device events (matmuls: the median of three back-to-back runs). Ends
 * with an "== summary" block. --quick shrinks every size (lavapipe);
 * --emulate runs the cooperative-matrix shader emulated where the device
 * lacks it (CHIMERA_VULKAN_COOPMAT_EMULATE=1: tests the program itself);
 * --matmul runs sections 1 and 2 only; --coopmat-probe runs section 2b
 * only (on a device without NV cooperative matrices: its PLAIN stand-ins,
 * which test the probe's plumbing).
 * Exit status: 0 when every check passed, 1 otherwise, 77 without a device.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/vulkan/vk.h" /* the probe dispatches its shaders directly */
#include "backend/vulkan/vk_ext.h" /* the KHR matrix list */
#include "backend/vulkan/vulkan_backend.h"
#include "chimera/backend.h"
#include "chimera/trainer.h"
#include "ckpt/checkpoint_internal.h"
#include "core/half.h"

#define CUBLASLT_BF16_TFLOPS 766.0 /* cuBLASLt bf16 4096^3 on the H100 (issue 6) */

/* ---- small helpers ---- */

static bool quick, emulate, attention_only, attention_1b, train_profile, mm_time, mm_odd, seq_ops;
static bool l2_only;
static bool scan_only;
static bool mm_plain;
static int checks, failures;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform(double lo, double hi) {
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return lo + (hi - lo) * ((double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1p-53);
}

static void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "vk_bench: out of host memory\n");
        exit(2);
    }
    return p;
}

static void die(chm_backend *be, const char *what) {
    fprintf(stderr, "vk_bench: %s: %s\n", what, be->err.msg);
    exit(2);
}

/* x rounded to dt (f32 values stay f32-exact: the host side is double). */
static double round_to(chm_dtype dt, double x) {
    if (dt == CHM_BF16) return chm_bf16_to_f32(chm_f32_to_bf16((float)x));
    if (dt == CHM_F16) return chm_f16_to_f32(chm_f32_to_f16((float)x));
    return (float)x;
}

/* Host doubles -> the bytes of dt (f32, bf16 or f16), malloc'd. */
static void *pack(const double *x, int64_t n, chm_dtype dt) {
    void *p = xmalloc((size_t)n * chm_dtype_size(dt));
    for (int64_t i = 0; i < n; i++) {
        if (dt == CHM_F32) ((float *)p)[i] = (float)x[i];
        else if (dt == CHM_BF16) ((uint16_t *)p)[i] = chm_f32_to_bf16((float)x[i]);
        else ((uint16_t *)p)[i] = chm_f32_to_f16((float)x[i]);
    }
    return p;
}

static void unpack(const void *p, int64_t n, chm_dtype dt, double *x) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == CHM_F32) x[i] = ((const float *)p)[i];
        else if (dt == CHM_BF16) x[i] = chm_bf16_to_f32(((const uint16_t *)p)[i]);
        else x[i] = chm_f16_to_f32(((const uint16_t *)p)[i]);
    }
}

/* A tensor with its own buffer on be. */
static chm_tensor alloc_tensor(chm_backend *be, chm_dtype dt, int nd, const int64_t *shape) {
    chm_tensor t = chm_tensor_make(NULL, 0, dt, nd, shape);
    chm_buffer *b = NULL;
    if (chm_buffer_alloc(be, chm_tensor_nbytes(&t) ? chm_tensor_nbytes(&t) : 1, &b))
        die(be, "allocation");
    t.buf = b;
    return t;
}

/* Fill t with uniform values in [lo, hi) (a pattern of at most 1 Mi elements, repeated). */
static void fill_random(chm_backend *be, const chm_tensor *t, double lo, double hi) {
    int64_t n = chm_tensor_numel(t), chunk = n < (1 << 20) ? n : (1 << 20);
    double *h = xmalloc((size_t)chunk * sizeof *h);
    for (int64_t i = 0; i < chunk; i++) h[i] = uniform(lo, hi);
    void *p = pack(h, chunk, t->dtype);
    for (int64_t off = 0; off < n; off += chunk) {
        int64_t len = n - off < chunk ? n - off : chunk;
        chm_tensor v;
        chm_tensor_view(t, off, 1, &len, &v, NULL);
        if (chm_upload(be, &v, p)) die(be, "upload");
    }
    free(h);
    free(p);
}

/* ---- the summary ---- */

typedef struct row {
    char what[88];
    double ms;
    char rate[96];
} row;

static row rows[192];
static int nrows;

static void add_row(const char *what, double ms, const char *fmt, ...) {
    if (nrows >= (int)(sizeof rows / sizeof *rows)) return;
    row *r = &rows[nrows++];
    snprintf(r->what, sizeof r->what, "%s", what);
    r->ms = ms;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->rate, sizeof r->rate, fmt, ap);
    va_end(ap);
    printf("  %-46s %10.3f ms  %s\n", r->what, r->ms, r->rate);
    fflush(stdout);
}

/* ---- opening ---- */

/* CHIMERA_VULKAN_DISABLE as the caller gave it (main keeps it: open_vk adds to it). */
static char user_disable[256];
/* CHIMERA_VULKAN_COOPMAT_TILE as the caller gave it (open_vk without a tile restores it). */
static char user_tile[64];

/*
 * The vulkan backend with `disable` added to the caller's CHIMERA_VULKAN_DISABLE (e.g.
 * coopmat_nv: every path then measured on the KHR matrices) and `tile` as the coopmat tile
 * (NULL: the caller's CHIMERA_VULKAN_COOPMAT_TILE, if any).
 */
static chm_status open_vk(const char *disable, const char *tile, chm_backend **be, chm_err *err) {
    char list[512];
    snprintf(list, sizeof list, "%s%s%s", user_disable, user_disable[0] && disable ? "," : "",
             disable ? disable : "");
    if (list[0]) setenv("CHIMERA_VULKAN_DISABLE", list, 1);
    else unsetenv("CHIMERA_VULKAN_DISABLE");
    if (!tile && user_tile[0]) tile = user_tile;
    if (tile) setenv("CHIMERA_VULKAN_COOPMAT_TILE", tile, 1);
    else unsetenv("CHIMERA_VULKAN_COOPMAT_TILE");
    chm_backend_options o = {.device_index = -1, .quiet = true};
    return chm_vulkan_open(&o, be, err);
}

/* ---- 1. correctness of the matmul paths ---- */

/* Element (i, j) of op(X), X stored [rows, cols]. */
static double op_at(const double *x, int64_t cols, bool t, int64_t i, int64_t j) {
    return t ? x[j * cols + i] : x[i * cols + j];
}

/* The cpu's f32 product of a and b (rounded inputs) into ref. */
static void cpu_product(chm_backend *cpu, const double *a, const double *b, int64_t M, int64_t K,
                        int64_t N, bool ta, bool tb, double *ref) {
    int64_t sa[2] = {ta ? K : M, ta ? M : K}, sb[2] = {tb ? N : K, tb ? K : N}, sc[2] = {M, N};
    chm_tensor A = alloc_tensor(cpu, CHM_F32, 2, sa), B = alloc_tensor(cpu, CHM_F32, 2, sb);
    chm_tensor C = alloc_tensor(cpu, CHM_F32, 2, sc);
    void *pa = pack(a, M * K, CHM_F32), *pb = pack(b, K * N, CHM_F32);
    void *pc = xmalloc((size_t)(M * N) * 4);
    if (chm_upload(cpu, &A, pa) || chm_upload(cpu, &B, pb) ||
        chm_matmul(cpu, &C, &A, &B, NULL, ta, tb, 1, 0) || chm_download(cpu, &C, pc))
        die(cpu, "cpu matmul");
    unpack(pc, M * N, CHM_F32, ref);
    free(pa), free(pb), free(pc);
    chm_buffer_free(A.buf), chm_buffer_free(B.buf), chm_buffer_free(C.buf);
}

/* The vulkan product in dt into got (C poisoned with NaN first). */
static void vk_product(chm_backend *vk, chm_dtype dt, const double *a, const double *b, int64_t M,
                       int64_t K, int64_t N, bool ta, bool tb, double *got) {
    int64_t sa[2] = {ta ? K : M, ta ? M : K}, sb[2] = {tb ? N : K, tb ? K : N}, sc[2] = {M, N};
    chm_tensor A = alloc_tensor(vk, dt, 2, sa), B = alloc_tensor(vk, dt, 2, sb);
    chm_tensor C = alloc_tensor(vk, dt, 2, sc);
    void *pa = pack(a, M * K, dt), *pb = pack(b, K * N, dt);
    void *pc = xmalloc((size_t)(M * N) * chm_dtype_size(dt));
    if (chm_upload(vk, &A, pa) || chm_upload(vk, &B, pb) || chm_fill(vk, &C, NAN) ||
        chm_matmul(vk, &C, &A, &B, NULL, ta, tb, 1, 0) || chm_download(vk, &C, pc))
        die(vk, "vulkan matmul");
    unpack(pc, M * N, dt, got);
    free(pa), free(pb), free(pc);
    chm_buffer_free(A.buf), chm_buffer_free(B.buf), chm_buffer_free(C.buf);
}

/* The worst err/bound ratio of got against ref (see the top of the file). */
static double worst_ratio(chm_dtype dt, const double *a, const double *b, const double *got,
                          const double *ref, int64_t M, int64_t K, int64_t N, bool ta, bool tb) {
    double u = dt == CHM_BF16 ? 0x1p-8 : dt == CHM_F16 ? 0x1p-11 : 0x1p-24, worst = 0;
    int64_t ac = ta ? M : K, bc = tb ? K : N;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0, amax = 0, bsum = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = op_at(a, ac, ta, m, k), q = op_at(b, bc, tb, k, n);
                s += fabs(p * q), amax = fmax(amax, fabs(p)), bsum += fabs(q);
            }
            /* the last terms: f16 subnormals (2^-24 at a scale of 2^-14 under a row's max) */
            double bound = u * fabs(ref[m * N + n]) + 2.0 * (double)(K + 2) * 0x1p-24 * s +
                           (dt == CHM_F16 ? 0x1p-25 : 0) + 0x1p-37 * amax * bsum + 1e-30;
            double err = fabs(got[m * N + n] - ref[m * N + n]);
            double r = isfinite(got[m * N + n]) ? err / bound : INFINITY;
            if (r > worst) worst = r;
        }
    return worst;
}

/*
 * One correctness case: print PASS/FAIL with the worst ratio. `wide`: row m
 * of op(A) times 10^(60 m / (M-1) - 30) (bf16's range on the scaled path).
 */
static void check_case(chm_backend *cpu, chm_backend *vk, const char *label, chm_dtype dt,
                       int64_t M, int64_t K, int64_t N, bool ta, bool tb, bool wide) {
    double *a = xmalloc((size_t)(M * K) * sizeof *a), *b = xmalloc((size_t)(K * N) * sizeof *b);
    double *ref = xmalloc((size_t)(M * N) * sizeof *ref);
    double *got = xmalloc((size_t)(M * N) * sizeof *got);
    for (int64_t i = 0; i < M * K; i++) {
        int64_t m = ta ? i % M : i / K;
        a[i] = round_to(dt, uniform(-1, 1) * (wide ? pow(10, 60.0 * (double)m / (M - 1) - 30) : 1));
    }
    for (int64_t i = 0; i < K * N; i++) b[i] = round_to(dt, uniform(-1, 1));
    cpu_product(cpu, a, b, M, K, N, ta, tb, ref);
    vk_product(vk, dt, a, b, M, K, N, ta, tb, got);
    double r = worst_ratio(dt, a, b, got, ref, M, K, N, ta, tb);
    bool ok = r <= 1.0;
    checks++;
    failures += !ok;
    printf("%s  matmul %-4s %-16s %lldx%lldx%lld ta%d tb%d%s: worst err/bound %.3f\n",
           ok ? "PASS" : "FAIL", chm_dtype_name(dt), label, (long long)M, (long long)K,
           (long long)N, ta, tb, wide ? " wide" : "", r);
    fflush(stdout);
    free(a), free(b), free(ref), free(got);
}

/* Every matmul path of backend vk: its dtypes in every transpose at an odd size, and a square. */
static void check_paths(chm_backend *cpu, chm_backend *vk, bool only16) {
    static const chm_dtype dts[] = {CHM_F32, CHM_F16, CHM_BF16};
    int64_t sq = quick ? 96 : 512;
    for (int d = only16 ? 1 : 0; d < 3; d++) {
        const char *path = chm_vulkan_matmul_path(vk, dts[d]);
        if (!path) {
            printf("SKIP  matmul %s: not supported on %s\n", chm_dtype_name(dts[d]), vk->device);
            continue;
        }
        for (int t = 0; t < 4; t++)
            check_case(cpu, vk, path, dts[d], 193, 77, 131, t & 1, t >> 1, false);
        check_case(cpu, vk, path, dts[d], sq, sq, sq, false, true, false);
        /* a deep sum (many K slices): the model's weight gradients sum over B x T tokens */
        check_case(cpu, vk, path, dts[d], quick ? 36 : 200, quick ? 1024 : 8192, 136, true, false,
                   false);
        if (dts[d] == CHM_BF16)
            for (int t = 0; t < 4; t++)
                check_case(cpu, vk, path, dts[d], 193, 77, 131, t & 1, t >> 1, true);
    }
}

/* ---- 2. matmul throughput ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/*
 * How long a job runs untimed before it is timed. After the GPU has idled (pipelines
 * compiled, tensors filled: more than half a second since the last timing ended), the first
 * runs are slow: on the H100 rows read 2-5x slow after a cold pipeline cache's compiles even
 * past a 0.4 s warm-up (sessions 10-12), and all were right after 2 s of the job (session 13,
 * RESULTS.md). So 2 s then, none between timings close together; VK_BENCH_WARM_S overrides.
 * Not in --quick runs (lavapipe: the same 2 s would only cost time).
 */
static double busy_until = -1e9; /* wall_ms() when the last timing ended */
static double warm_ms(void) {
    const char *s = getenv("VK_BENCH_WARM_S");
    if (s) return atof(s) * 1e3;
    if (quick) return 0;
    return wall_ms() - busy_until > 500 ? 2000 : 0;
}

/*
 * Ms per matmul C = op(A) op(B) after 2 warm-up runs: `reps` of them recorded back to back
 * between two device events, three times, the median of the three. (Events around each
 * call also counted the device's idle time while the host recorded the next call, e.g. the
 * scratch of the bf16 scaling passes: 2.5-4x too slow at times on the H100, session 10.)
 */
static double time_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                          const chm_tensor *B, bool ta, bool tb, double beta, int reps) {
    chm_event *e0, *e1;
    double ms[3];
    if (chm_event_create(be, &e0) || chm_event_create(be, &e1)) die(be, "events");
    for (int i = 0; i < 2; i++)
        if (chm_matmul(be, C, A, B, NULL, ta, tb, 1, beta)) die(be, "matmul");
    for (double t0 = wall_ms(), lim = warm_ms(); wall_ms() - t0 < lim;) {
        if (chm_matmul(be, C, A, B, NULL, ta, tb, 1, beta)) die(be, "matmul");
        if (chm_sync(be)) die(be, "matmul");
    }
    for (int r = 0; r < 3; r++) {
        if (chm_sync(be)) die(be, "matmul");
        chm_event_record(be, e0);
        for (int i = 0; i < reps; i++)
            if (chm_matmul(be, C, A, B, NULL, ta, tb, 1, beta)) die(be, "matmul");
        chm_event_record(be, e1);
        if (chm_event_elapsed_ms(be, e0, e1, &ms[r])) die(be, "event timing");
        ms[r] /= reps;
    }
    if (chm_sync(be)) die(be, "matmul");
    busy_until = wall_ms();
    chm_event_destroy(be, e0);
    chm_event_destroy(be, e1);
    qsort(ms, 3, sizeof ms[0], cmp_double);
    return ms[1];
}

/* TFLOP/s of one M x K x N product op(A) op(B) in dt on be; adds a summary row. */
static double bench_form(chm_backend *be, const char *label, chm_dtype dt, int64_t M, int64_t K,
                         int64_t N, bool ta, bool tb) {
    int64_t sa[2] = {ta ? K : M, ta ? M : K}, sb[2] = {tb ? N : K, tb ? K : N}, sc[2] = {M, N};
    chm_tensor A = alloc_tensor(be, dt, 2, sa), B = alloc_tensor(be, dt, 2, sb);
    chm_tensor C = alloc_tensor(be, dt, 2, sc);
    fill_random(be, &A, -1, 1);
    fill_random(be, &B, -1, 1);
    double ms = time_matmul(be, &C, &A, &B, ta, tb, 0.0, quick ? 3 : 10);
    double tflops = 2.0 * (double)M * (double)K * (double)N / (ms * 1e9);
    static const char *const forms[] = {"(A B)", "(A^T B)", "(A B^T)", "(A^T B^T)"};
    char what[88];
    snprintf(what, sizeof what, "matmul %s %s %lldx%lldx%lld %s", chm_dtype_name(dt), label,
             (long long)M, (long long)K, (long long)N, forms[ta + 2 * tb]);
    if (dt == CHM_F32) add_row(what, ms, "%.4g TFLOP/s", tflops);
    else add_row(what, ms, "%.4g TFLOP/s (%.0f%% of cuBLASLt bf16 %.0f)", tflops,
                 100.0 * tflops / CUBLASLT_BF16_TFLOPS, CUBLASLT_BF16_TFLOPS);
    chm_buffer_free(A.buf), chm_buffer_free(B.buf), chm_buffer_free(C.buf);
    return tflops;
}

/* bench_form for A op(B) (A B^T when tb). */
static double bench_matmul(chm_backend *be, const char *label, chm_dtype dt, int64_t M, int64_t K,
                           int64_t N, bool tb) {
    return bench_form(be, label, dt, M, K, N, false, tb);
}

/* Every dtype of backend vk at the benchmark sizes. */
static void bench_paths(chm_backend *vk, bool only16) {
    int64_t big = quick ? 256 : 4096, wide = quick ? 384 : 8192, deep = quick ? 128 : 2048;
    static const chm_dtype dts[] = {CHM_F32, CHM_F16, CHM_BF16};
    for (int d = only16 ? 1 : 0; d < 3; d++) {
        const char *path = chm_vulkan_matmul_path(vk, dts[d]);
        if (!path) continue;
        bench_matmul(vk, path, dts[d], big, big, big, true);
        if (dts[d] != CHM_F32) bench_matmul(vk, path, dts[d], big, big, big, false);
        bench_matmul(vk, path, dts[d], wide, deep, wide, true);
    }
}

/*
 * The tiles of the sweep (tests/test_vk_coopmat.c checks each of them): 16x16
 * and 16x8 fragments, 4 and 8 warps, BK 16 and 32 (tiles whose two stages
 * pass the device's shared memory, 48 KiB on NVIDIA's driver, say so).
 */
static const char *const sweep_tiles[] = {
    "128x128x32/64x64/16x16", "128x128x32/64x32/16x16", "128x128x32/64x64/16x8",
    "128x128x32/64x32/16x8", "128x128x32/32x64/16x8", "128x128x16/64x64/16x8",
    "64x128x32/32x64/16x8",  "128x64x32/64x32/16x8",  "64x64x32/32x32/16x8",
    "128x256x16/64x64/16x8", "256x128x16/64x64/16x8", "256x128x32/64x64/16x8",
    "128x256x32/64x64/16x8", "128x256x16/64x64/16x16"};

/*
 * chimera-1b's dense GEMMs at micro batch 8 x 2048 (M = 16384 rows): the
 * forward (A B^T: d_model 1024 to 2048 and 2816, and back), the input
 * gradient (A B) and the weight gradient (A^T B, summed over the 16384 rows).
 */
static const struct {
    int64_t M, K, N;
    bool ta, tb;
} shapes_1b[] = {
    {16384, 1024, 2048, false, true}, {16384, 1024, 2816, false, true},
    {16384, 2048, 1024, false, true}, {16384, 2816, 1024, false, true},
    {16384, 2048, 1024, false, false}, {16384, 2816, 1024, false, false},
    {2048, 16384, 1024, true, false},  {2816, 16384, 1024, true, false},
};

/* --mm-plain: matmul.comp alone (devices without cooperative matrices, and f32 everywhere). */
static void bench_plain(chm_backend *cpu) {
    chm_backend *vk = NULL;
    chm_err err = {0};
    if (open_vk("coopmat,coopmat2", NULL, &vk, &err) != CHM_OK) {
        fprintf(stderr, "vk_bench: %s\n", err.msg);
        exit(2);
    }
    const char *tile = getenv("CHIMERA_VULKAN_MATMUL_TILE");
    char label[48];
    snprintf(label, sizeof label, "plain%s%s", tile && *tile ? " " : "", tile ? tile : "");
    printf("\n== check: the plain path against the cpu backend\n");
    check_paths(cpu, vk, false);
    printf("\n== matmul, plain path\n");
    int64_t big = quick ? 256 : 4096, wide = quick ? 384 : 8192, deep = quick ? 128 : 2048;
    bench_matmul(vk, label, CHM_F32, big, big, big, true);
    bench_matmul(vk, label, CHM_F32, big, big, big, false);
    bench_matmul(vk, label, CHM_F32, wide, deep, wide, true);
    int64_t div = quick ? 32 : 1;
    for (int i = 0; i < (int)(sizeof shapes_1b / sizeof *shapes_1b); i++)
        bench_form(vk, label, CHM_F32, shapes_1b[i].M / div, shapes_1b[i].K / div,
                   shapes_1b[i].N / div, shapes_1b[i].ta, shapes_1b[i].tb);
    if (chm_vulkan_matmul_path(vk, CHM_F16)) {
        bench_matmul(vk, label, CHM_F16, big, big, big, true);
        bench_matmul(vk, label, CHM_BF16, big, big, big, true);
    }
    chm_backend_close(vk);
}

/* The chimera-1b shapes in f16 and bf16 at the default tile, with `disable` switched off. */
static void bench_1b_shapes(const char *disable) {
    chm_backend *vk = NULL;
    chm_err err = {0};
    if (open_vk(disable, NULL, &vk, &err) != CHM_OK) return;
    int64_t div = quick ? 32 : 1; /* lavapipe: 512 x 32..88 x 32..88 */
    static const chm_dtype dts[] = {CHM_F16, CHM_BF16};
    for (int d = 0; d < 2; d++) {
        char label[48];
        snprintf(label, sizeof label, "1b %s", chm_vulkan_matmul_path(vk, dts[d]));
        for (int i = 0; i < (int)(sizeof shapes_1b / sizeof *shapes_1b); i++)
            bench_form(vk, label, dts[d], shapes_1b[i].M / div, shapes_1b[i].K / div,
                       shapes_1b[i].N / div, shapes_1b[i].ta, shapes_1b[i].tb);
    }
    chm_backend_close(vk);
}

/*
 * chimera-1b's small products (--mm-odd; profile labels M x N x K): the Mamba mixer's x_proj
 * (N or M = dt_rank + 2 d_state = 96), dt_proj (K or N = dt_rank = 64), their weight
 * gradients (K = 16384 tokens, accumulated: beta 1), the identity transposes of Bm/Cm, and
 * the routers' input gradients (K = 8 experts, K = 1). Most are bound by writing C: each row
 * prints the time of its bytes (A, B and C read where beta is 1, C written) at 3.0 TB/s.
 */
static const struct {
    int64_t M, N, K;
    bool ta, tb;
    double beta;
} shapes_odd[] = {
    {96, 2048, 16384, false, false, 1},  {2048, 64, 16384, true, true, 1},
    {16384, 2048, 96, true, false, 1},   {16384, 96, 2048, false, true, 0},
    {16384, 2048, 64, true, true, 0},    {64, 16384, 2048, true, true, 0},
    {96, 16384, 96, false, true, 0},     {16384, 1024, 8, false, false, 0},
    {16384, 1024, 1, false, false, 0},   {16384, 16, 16, true, false, 0},
    {16384, 2048, 1024, false, true, 0}, {2048, 1024, 16384, true, false, 1},
};

static void bench_odd_shapes(chm_backend *vk) {
    int64_t div = quick ? 32 : 1;
    for (int i = 0; i < (int)(sizeof shapes_odd / sizeof *shapes_odd); i++) {
        int64_t M = shapes_odd[i].M, N = shapes_odd[i].N, K = shapes_odd[i].K;
        bool ta = shapes_odd[i].ta, tb = shapes_odd[i].tb;
        if (M > 1024) M /= div;
        if (N > 1024) N /= div;
        if (K > 1024) K /= div;
        int64_t sa[2] = {ta ? K : M, ta ? M : K}, sb[2] = {tb ? N : K, tb ? K : N};
        int64_t sc[2] = {M, N};
        chm_tensor A = alloc_tensor(vk, CHM_BF16, 2, sa), B = alloc_tensor(vk, CHM_BF16, 2, sb);
        chm_tensor C = alloc_tensor(vk, CHM_BF16, 2, sc);
        fill_random(vk, &A, -1, 1);
        fill_random(vk, &B, -1, 1);
        fill_random(vk, &C, -1, 1);
        double ms = time_matmul(vk, &C, &A, &B, ta, tb, shapes_odd[i].beta, quick ? 3 : 10);
        double bytes = 2.0 * (double)(M * K + K * N + M * N * (shapes_odd[i].beta != 0 ? 2 : 1));
        char what[88];
        snprintf(what, sizeof what, "odd bf16 %lldx%lldx%lld%s%s b%g", (long long)M, (long long)N,
                 (long long)K, ta ? " tA" : "", tb ? " tB" : "", shapes_odd[i].beta);
        add_row(what, ms, "%.4g TFLOP/s, bytes %.1f us at 3 TB/s",
                2.0 * (double)M * (double)N * (double)K / (ms * 1e9), bytes / 3.0e6);
        chm_buffer_free(A.buf), chm_buffer_free(B.buf), chm_buffer_free(C.buf);
    }
}

/* bf16 (scaled operands) at the best tile, to set against f16 there. */
static void bench_tile_bf16(const char *tile, int64_t n) {
    chm_backend *vk = NULL;
    chm_err err = {0};
    if (open_vk("coopmat2", tile, &vk, &err) != CHM_OK) return;
    char label[64];
    snprintf(label, sizeof label, "%s %s", chm_vulkan_matmul_path(vk, CHM_BF16), tile);
    bench_matmul(vk, label, CHM_BF16, n, n, n, true);
    chm_backend_close(vk);
}

/* Each cooperative-matrix tile of the sweep on f16 4096^3 A B^T; the best one last. */
static void bench_tiles(void) {
    const char *const *tiles = sweep_tiles;
    int64_t n = quick ? 256 : 4096;
    double best = 0;
    const char *best_tile = NULL;
    for (int i = 0; i < (int)(sizeof sweep_tiles / sizeof *sweep_tiles); i++) {
        chm_backend *vk = NULL;
        chm_err err = {0};
        if (open_vk("coopmat2", tiles[i], &vk, &err) != CHM_OK) {
            printf("  tile %-18s does not run here: %s\n", tiles[i], err.msg);
            continue;
        }
        char label[64];
        snprintf(label, sizeof label, "%s %s", chm_vulkan_matmul_path(vk, CHM_F16), tiles[i]);
        double t = bench_matmul(vk, label, CHM_F16, n, n, n, true);
        if (t > best) best = t, best_tile = tiles[i];
        chm_backend_close(vk);
    }
    if (best_tile) bench_tile_bf16(best_tile, n);
    unsetenv("CHIMERA_VULKAN_COOPMAT_TILE");
    if (best_tile) add_row("best coopmat tile (f16 A B^T)", 0, "%s: %.1f TFLOP/s", best_tile, best);
    bench_1b_shapes("coopmat2");
}

/*
 * The tiles of matmul_cm2.comp's sweep (CHIMERA_VULKAN_COOPMAT2_TILE; tests/
 * test_vk_coopmat.c checks each): BM x BN x BK on the device's listed
 * workgroup size (or CHIMERA_VULKAN_COOPMAT2_WG's), "/p": the next slice
 * prefetched. Session 8 on an H100, f16 4096^3 A B^T: 128x256x32 50.6
 * TFLOP/s, /p 126 (the default), 256x128x32/p 129, 128x128x32/p 103,
 * 128x256x16/p 113; BK 64, 256x256 and 128 invocations 7-51.
 */
static const struct {
    const char *tile;
    const char *wg; /* CHIMERA_VULKAN_COOPMAT2_WG, NULL: the device's preferred */
} sweep_tiles_cm2[] = {
    {"128x256x32", NULL},   {"128x256x32/p", NULL}, {"128x128x32", NULL},
    {"128x128x32/p", NULL}, {"256x128x32/p", NULL}, {"128x256x16", NULL},
    {"128x256x16/p", NULL}, {"128x128x16/p", NULL}, {"64x128x32/p", NULL},
    {"64x256x32/p", NULL},  {"128x128x32", "128"},  {"128x256x32/p", "128"}};

/* Each cm2 tile on f16 and bf16 4096^3 A B^T, the best last; then chimera-1b's shapes. */
static void bench_tiles_cm2(void) {
    int64_t n = quick ? 256 : 4096;
    double best = 0;
    const char *best_tile = NULL;
    for (int i = 0; i < (int)(sizeof sweep_tiles_cm2 / sizeof *sweep_tiles_cm2); i++) {
        const char *tile = sweep_tiles_cm2[i].tile, *wg = sweep_tiles_cm2[i].wg;
        chm_backend *vk = NULL;
        chm_err err = {0};
        setenv("CHIMERA_VULKAN_COOPMAT2_TILE", tile, 1);
        if (wg) setenv("CHIMERA_VULKAN_COOPMAT2_WG", wg, 1);
        chm_status rc = open_vk("coopmat", NULL, &vk, &err); /* f16 on cm2 too */
        unsetenv("CHIMERA_VULKAN_COOPMAT2_TILE");
        unsetenv("CHIMERA_VULKAN_COOPMAT2_WG");
        if (rc == CHM_OK && strcmp(chm_vulkan_matmul_path(vk, CHM_F16), "coopmat2") != 0) {
            snprintf(err.msg, sizeof err.msg, "not on the cm2 path");
            chm_backend_close(vk);
            rc = CHM_ERR_UNSUPPORTED;
        }
        if (rc != CHM_OK) {
            printf("  cm2 tile %s wg %s does not run here: %s\n", tile, wg ? wg : "-", err.msg);
            continue;
        }
        char label[64];
        snprintf(label, sizeof label, "coopmat2 %s wg %s", tile, wg ? wg : "dev");
        double t = bench_matmul(vk, label, CHM_F16, n, n, n, true);
        if (!strcmp(chm_vulkan_matmul_path(vk, CHM_BF16), "coopmat2"))
            t = fmax(t, bench_matmul(vk, label, CHM_BF16, n, n, n, true));
        if (t > best) best = t, best_tile = tile;
        chm_backend_close(vk);
    }
    if (best_tile) add_row("best coopmat2 tile (A B^T)", 0, "%s: %.1f TFLOP/s", best_tile, best);
    bench_1b_shapes(NULL);
}

/* ---- 2b. the cooperative-matrix probe (issue 6) ---- */

/*
 * Microbenchmarks of the tensor-core operations alone (shaders
 * cm_probe_mma.comp and cm_probe_load.comp, run directly through the
 * backend's dispatcher): what the NV cooperative matrices reach with
 * fragments in registers, and with each way of loading them. Printed as
 * one table; a device without NV cooperative matrices runs the PLAIN
 * stand-ins (plumbing only) when asked for with --coopmat-probe.
 */
typedef struct cm_probe {
    const char *shader;  /* variant name */
    const char *what;    /* the row's label */
    uint32_t fn;         /* N of the B fragments and accumulators (16 or 8) */
    uint32_t pad;        /* load probes: elements of padding per stored row */
    uint32_t warps;      /* per workgroup */
    bool acc16;          /* needs 16 x fn x 16 f16 -> f16 listed */
} cm_probe;

static const cm_probe cm_probes[] = {
    {"cm_probe_mma", "registers 16x16x16, f32 acc", 16, 0, 4, false},
    {"cm_probe_mma", "registers 16x8x16, f32 acc", 8, 0, 4, false},
    {"cm_probe_mma_h", "registers 16x16x16, f16 acc", 16, 0, 4, true},
    {"cm_probe_mma_h", "registers 16x8x16, f16 acc", 8, 0, 4, true},
    {"cm_probe_mma_dyn", "registers 16x16x16, acc[] also indexed by a variable", 16, 0, 4, false},
    {"cm_probe_load_sh_u4_rc", "shared uvec4, A row B col (A B^T)", 16, 8, 4, false},
    {"cm_probe_load_sh_u4_rc", "shared uvec4, A row B col, no pad", 16, 0, 4, false},
    {"cm_probe_load_sh_u4_rc", "shared uvec4, A row B col, 2 warps", 16, 8, 2, false},
    {"cm_probe_load_sh_u4_rc", "shared uvec4, A row B col, 8 warps", 16, 8, 8, false},
    {"cm_probe_load_sh_u4_rc_n8", "shared uvec4, A row B col", 8, 8, 4, false},
    {"cm_probe_load_sh_u4_rr", "shared uvec4, A row B row (A B)", 16, 8, 4, false},
    {"cm_probe_load_sh_u4_rr", "shared uvec4, A row B row, no pad", 16, 0, 4, false},
    {"cm_probe_load_sh_u4_rr_n8", "shared uvec4, A row B row", 8, 8, 4, false},
    {"cm_probe_load_sh_u4_cr", "shared uvec4, A col B row (A^T B)", 16, 8, 4, false},
    {"cm_probe_load_sh_u4_cc", "shared uvec4, A col B col (A^T B^T)", 16, 8, 4, false},
    {"cm_probe_load_sh_h_rc", "shared f16, A row B col", 16, 8, 4, false},
    {"cm_probe_load_sh_h_rc", "shared f16, A row B col, no pad", 16, 0, 4, false},
    {"cm_probe_load_sh_h_rc_n8", "shared f16, A row B col", 8, 8, 4, false},
    {"cm_probe_load_sh_h_rr", "shared f16, A row B row", 16, 8, 4, false},
    {"cm_probe_load_gl_u4_rc", "global uvec4, A row B col", 16, 8, 4, false},
    {"cm_probe_load_gl_u4_rc_n8", "global uvec4, A row B col", 8, 8, 4, false},
    {"cm_probe_load_gl_u4_rr", "global uvec4, A row B row", 16, 8, 4, false},
    {"cm_probe_load_gl_h_rc", "global f16, A row B col", 16, 8, 4, false},
};

static const cm_probe cm_probes_plain[] = {
    {"cm_probe_mma_plain", "PLAIN stand-in: registers", 16, 0, 4, false},
    {"cm_probe_load_plain", "PLAIN stand-in: shared uvec4", 16, 8, 4, false},
    {"cm_probe_load_plain_gl", "PLAIN stand-in: global uvec4", 16, 8, 4, false},
};

#define CM_PROBE_WARPS 4224 /* 1056 workgroups of 4: 8 per SM of an H100 (132 SMs) */

static const char *component_name(uint32_t t) {
    static const char *const names[] = {"f16", "f32", "f64", "s8", "s16", "s32",
                                        "s64", "u8", "u16", "u32", "u64"};
    if (t < 11) return names[t];
    return t == 1000141000u ? "bf16" : "other";
}

/* Print the device's NV matrix list; *h16, *h8: 16x16x16 and 16x8x16 f16 -> f16 listed. */
static void cm_list_nv(chm_backend *be, bool *h16, bool *h8) {
    chm_vk *vk = chm_vk_ctx(be);
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)vkGetInstanceProcAddr(
            vk->instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
    uint32_t n = 0;
    *h16 = *h8 = false;
    if (!get || get(vk->pdev, &n, NULL) != VK_SUCCESS || n == 0) {
        printf("  NV matrices: none listed\n");
        return;
    }
    VkCooperativeMatrixPropertiesNV *p = xmalloc(n * sizeof *p);
    for (uint32_t i = 0; i < n; i++)
        p[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
    if (get(vk->pdev, &n, p) < VK_SUCCESS) n = 0;
    printf("  NV matrices (M x N x K: A B C D):");
    for (uint32_t i = 0; i < n; i++) {
        printf("%s %ux%ux%u: %s %s %s %s", i ? "," : "", p[i].MSize, p[i].NSize, p[i].KSize,
               component_name(p[i].AType), component_name(p[i].BType),
               component_name(p[i].CType), component_name(p[i].DType));
        bool hh = p[i].MSize == 16 && p[i].KSize == 16 && p[i].AType == 0 && p[i].BType == 0 &&
                  p[i].CType == 0 && p[i].DType == 0 && p[i].scope == VK_SCOPE_SUBGROUP_NV;
        *h16 |= hh && p[i].NSize == 16;
        *h8 |= hh && p[i].NSize == 8;
    }
    printf("\n");
    free(p);
}

/* Print the device's KHR matrix list (subgroup scope; M x N x K: A B C result). */
static void cm_list_khr(chm_backend *be) {
    chm_vk *vk = chm_vk_ctx(be);
    chm_vk_coopmat_props_fn get = (chm_vk_coopmat_props_fn)vkGetInstanceProcAddr(
        vk->instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
    uint32_t n = 0;
    if (!get || get(vk->pdev, &n, NULL) != VK_SUCCESS || n == 0) {
        printf("  KHR matrices: none listed\n");
        return;
    }
    chm_vk_coopmat_props_khr *p = xmalloc(n * sizeof *p);
    for (uint32_t i = 0; i < n; i++)
        p[i] = (chm_vk_coopmat_props_khr){.sType = CHM_VK_STYPE_COOPMAT_PROPERTIES_KHR};
    if (get(vk->pdev, &n, p) < VK_SUCCESS) n = 0;
    printf("  KHR matrices (M x N x K: A B C result, subgroup scope):");
    for (uint32_t i = 0, k = 0; i < n; i++)
        if (p[i].scope == CHM_VK_SCOPE_SUBGROUP)
            printf("%s %ux%ux%u: %s %s %s %s", k++ ? "," : "", p[i].MSize, p[i].NSize,
                   p[i].KSize, component_name(p[i].AType), component_name(p[i].BType),
                   component_name(p[i].CType), component_name(p[i].ResultType));
    printf("\n");
    free(p);
}

/* One timed dispatch of probe pr (iters rounds over `warps` warps); false when it does not run. */
static bool cm_probe_run(chm_backend *be, const cm_probe *pr, const chm_tensor *src,
                         const chm_tensor *dst, uint32_t warps, uint32_t iters, double *ms) {
    bool mma = strncmp(pr->shader, "cm_probe_mma", 12) == 0;
    uint32_t push[2] = {iters, mma ? 8 : 1}; /* mma: accumulators stored; load: the k step */
    chm_vk *vk = chm_vk_ctx(be);
    chm_vk_dispatch d = {
        .shader = pr->shader, .nbind = 2, .bind = {src, dst}, .writes = 1u << 1, .push = push,
        .push_size = sizeof push, .groups = warps / pr->warps,
        .wg = pr->warps * vk->caps.subgroup_size, .spec = {mma ? pr->fn : pr->pad}, .nspec = 1,
    };
    chm_event *e0 = NULL, *e1 = NULL;
    if (chm_event_create(be, &e0) || chm_event_create(be, &e1)) die(be, "events");
    bool ok = chm_event_record(be, e0) == CHM_OK && chm_vk_run(vk, &d) == CHM_OK &&
              chm_event_record(be, e1) == CHM_OK && chm_event_elapsed_ms(be, e0, e1, ms) == CHM_OK;
    chm_event_destroy(be, e0);
    chm_event_destroy(be, e1);
    return ok;
}

/* TFLOP/s of probe pr (median of 3 after a warm-up), 0 when it cannot run (printed). */
static double cm_probe_one(chm_backend *be, const cm_probe *pr, const chm_tensor *src,
                           const chm_tensor *dst) {
    bool mma = strncmp(pr->shader, "cm_probe_mma", 12) == 0;
    uint32_t warps = quick ? 8 : CM_PROBE_WARPS, iters = quick ? 4 : mma ? 4096 : 1024;
    double ms[3], flops_per_round = mma ? 8.0 * 2 * 16 * pr->fn * 16 : 2.0 * 64 * 64 * 16;
    bool ok = cm_probe_run(be, pr, src, dst, warps, iters, &ms[0]);
    for (int i = 0; ok && i < 3; i++) ok = cm_probe_run(be, pr, src, dst, warps, iters, &ms[i]);
    if (!ok) {
        printf("  %-52s does not run: %s\n", pr->what, be->err.msg);
        be->err.msg[0] = '\0';
        return 0;
    }
    qsort(ms, 3, sizeof ms[0], cmp_double);
    double tflops = (double)warps * iters * flops_per_round / (ms[1] * 1e9);
    printf("  %-28s %-44s %2ux%-2u pad %u %u warps %9.1f TFLOP/s %8.3f ms\n", pr->shader,
           pr->what, 16, pr->fn, pr->pad, pr->warps, tflops, ms[1]);
    fflush(stdout);
    return tflops;
}

/*
 * The probe table; real matrices where the device has them (the flavour the backend opened
 * with: the `_khr` variants on KHR matrices, NV's accumulators of f16 skipped there), else
 * the PLAIN stand-ins.
 */
static void cm_probe_all(chm_backend *be, bool real) {
    bool h16 = false, h8 = false, khr = real && chm_vk_ctx(be)->caps.coopmat_khr;
    if (real && khr) cm_list_khr(be);
    else if (real) cm_list_nv(be, &h16, &h8);
    const cm_probe *list = real ? cm_probes : cm_probes_plain;
    int n = real ? (int)(sizeof cm_probes / sizeof *cm_probes)
                 : (int)(sizeof cm_probes_plain / sizeof *cm_probes_plain);
    int64_t nsrc = 64 * 2 * 64 * 72, ndst = (int64_t)(quick ? 8 : CM_PROBE_WARPS) * 1024 * 8;
    chm_tensor src = alloc_tensor(be, CHM_F16, 1, &nsrc), dst = alloc_tensor(be, CHM_F16, 1, &ndst);
    fill_random(be, &src, -0.03, 0.03);
    double best_reg = 0, best_shared = 0;
    for (int i = 0; i < n; i++) {
        cm_probe pk = list[i];
        char name[64];
        snprintf(name, sizeof name, "%s%s", pk.shader, khr ? "_khr" : "");
        pk.shader = name;
        const cm_probe *pr = &pk;
        if (chm_vk_shader_find(pr->shader) < 0) {
            printf("  %-52s not built (%s)\n", pr->what,
                   khr ? "no KHR variant of it" : "this glslc lacks GL_NV_cooperative_matrix");
            continue;
        }
        if (pr->acc16 && (khr || !(pr->fn == 16 ? h16 : h8))) {
            if (khr) printf("  %-52s skipped: f16 accumulators (NV variants only)\n", pr->what);
            else printf("  %-52s skipped: 16x%ux16 f16 -> f16 not listed\n", pr->what, pr->fn);
            continue;
        }
        double t = cm_probe_one(be, pr, &src, &dst);
        if (strncmp(pr->shader, "cm_probe_mma", 12) == 0 && t > best_reg) best_reg = t;
        if (strstr(pr->shader, "_sh_") && t > best_shared) best_shared = t;
    }
    chm_buffer_free(src.buf), chm_buffer_free(dst.buf);
    if (best_reg > 0)
        add_row("coopmat probe: best, fragments in registers", 0, "%.1f TFLOP/s", best_reg);
    if (best_shared > 0)
        add_row("coopmat probe: best, loads from shared memory", 0, "%.1f TFLOP/s", best_shared);
}

/* ---- 2c. read bandwidth (issue 6) ---- */

/* Device ms of one l2_probe.comp dispatch: `groups` workgroups of 256, iters x loads words each. */
static bool l2_probe_run(chm_backend *be, const chm_tensor *src, const chm_tensor *dst,
                         uint32_t words, uint32_t groups, uint32_t loads, uint32_t iters,
                         double *ms) {
    uint32_t push[2] = {words, iters};
    chm_vk_dispatch d = {
        .shader = "l2_probe", .nbind = 2, .bind = {src, dst}, .writes = 1u << 1, .push = push,
        .push_size = sizeof push, .groups = groups, .wg = 256, .spec = {loads}, .nspec = 1,
    };
    chm_event *e0 = NULL, *e1 = NULL;
    if (chm_event_create(be, &e0) || chm_event_create(be, &e1)) die(be, "events");
    bool ok = chm_event_record(be, e0) == CHM_OK && chm_vk_run(chm_vk_ctx(be), &d) == CHM_OK &&
              chm_event_record(be, e1) == CHM_OK && chm_event_elapsed_ms(be, e0, e1, ms) == CHM_OK;
    chm_event_destroy(be, e0);
    chm_event_destroy(be, e1);
    return ok;
}

/*
 * GB/s of 16-byte loads read over and over from regions that fit an H100's 50 MiB L2 and
 * from one that does not (the memory's rate), 1 and 4 loads in flight an invocation, 4096
 * workgroups of 256 (16 an SM of an H100's 132: as many as the SMs hold). matmul_cm.comp's
 * staging reads A and B from L2 at (BM + BN) * 2 bytes per BM * BN * 2 FLOPs a term: a
 * 128x128 tile needs 1 byte of L2 for 64 FLOPs, so L2's rate caps it at 64 FLOPs a byte.
 */
static void l2_probe_all(chm_backend *be) {
    static const int64_t mib[] = {8, 16, 32, 1024};
    int64_t most = quick ? 1 : mib[3], words = most * 65536, four = words * 4;
    uint32_t groups = quick ? 8 : 4096, total = quick ? 8 : 256; /* loads an invocation */
    int64_t nd = (int64_t)groups * 256 * 4;
    chm_tensor src = alloc_tensor(be, CHM_F32, 1, &four), dst = alloc_tensor(be, CHM_F32, 1, &nd);
    fill_random(be, &src, -1, 1);
    double best_l2 = 0;
    for (int r = 0; r < (int)(sizeof mib / sizeof *mib); r++) {
        int64_t w = quick ? (int64_t)4096 << r : mib[r] * 65536; /* words: powers of two */
        for (uint32_t loads = 1; loads <= 4; loads += 3) {
            double ms[5];
            bool ok = true;
            for (int i = 0; ok && i < 5; i++)
                ok = l2_probe_run(be, &src, &dst, (uint32_t)w, groups, loads, total / loads, &ms[i]);
            if (!ok) {
                printf("  l2_probe does not run: %s\n", be->err.msg);
                be->err.msg[0] = '\0';
                goto done;
            }
            qsort(ms + 1, 4, sizeof ms[0], cmp_double); /* the first run warms up */
            double gbs = (double)groups * 256 * total * 16 / (ms[2] * 1e6);
            char what[88];
            snprintf(what, sizeof what, "read bandwidth, %lld KiB region, %u load%s in flight",
                     (long long)(w * 16 / 1024), loads, loads > 1 ? "s" : "");
            add_row(what, ms[2], "%.0f GB/s", gbs);
            if (w * 16 <= 32 * 1048576 && gbs > best_l2) best_l2 = gbs;
        }
    }
    if (best_l2 > 0)
        add_row("L2 bound of 128x128 coopmat tiles", 0, "%.0f TFLOP/s (64 FLOPs an L2 byte)",
                best_l2 * 64 / 1e3);
done:
    chm_buffer_free(src.buf), chm_buffer_free(dst.buf);
}

/* ---- 3. attention and scan ---- */

typedef struct job {
    int kind; /* 0 attention fwd, 1 attention bwd, 2 scan fwd, 3 scan bwd, 4 conv bwd, 5 top-k */
    chm_tensor t[19];
    chm_scan_args sa;
    chm_scan_grads sg;
    double scale;
} job;

static chm_status run_job(chm_backend *be, job *j) {
    chm_tensor *t = j->t;
    switch (j->kind) {
    case 0: return chm_attention_fwd(be, &t[3], &t[4], &t[0], &t[1], &t[2], j->scale);
    case 1:
        return chm_attention_bwd(be, &t[5], &t[6], &t[7], &t[8], &t[0], &t[1], &t[2], &t[3],
                                 &t[4], j->scale);
    case 2: return chm_selective_scan_fwd(be, &t[0], &j->sa);
    case 4: return chm_causal_conv1d_bwd(be, &t[4], &t[5], &t[6], &t[0], &t[1], &t[2], &t[3], true);
    case 5: return chm_select_topk(be, &t[1], &t[0], true);
    default: return chm_selective_scan_bwd(be, &j->sg, &t[1], &j->sa);
    }
}

/* Wall-clock milliseconds (the host's side of a timing). */

/*
 * Ms per run of a job after one warm-up: `reps` runs recorded back to back between two device
 * events, three times, the median of the three (as time_matmul: events around each run also
 * counted the device idling while the host recorded the next). *host (unless NULL): the
 * host's ms per run spent recording them, the least of the three: near the device time, the
 * figure is the host's, not the kernels'.
 */
static double time_job_host(chm_backend *be, job *j, int reps, double *host) {
    chm_event *e0, *e1;
    double ms[3], hmin = 0;
    if (chm_event_create(be, &e0) || chm_event_create(be, &e1)) die(be, "events");
    if (run_job(be, j)) die(be, "warm-up");
    for (double t0 = wall_ms(), lim = warm_ms(); wall_ms() - t0 < lim;) {
        if (run_job(be, j)) die(be, "warm-up");
        if (chm_sync(be)) die(be, "sync");
    }
    for (int r = 0; r < 3; r++) {
        if (chm_sync(be)) die(be, "sync");
        chm_event_record(be, e0);
        double h0 = wall_ms();
        for (int i = 0; i < reps; i++)
            if (run_job(be, j)) die(be, "run");
        double h = (wall_ms() - h0) / reps;
        hmin = r == 0 || h < hmin ? h : hmin;
        chm_event_record(be, e1);
        if (chm_event_elapsed_ms(be, e0, e1, &ms[r])) die(be, "event timing");
        ms[r] /= reps;
    }
    if (chm_sync(be)) die(be, "sync");
    busy_until = wall_ms();
    chm_event_destroy(be, e0);
    chm_event_destroy(be, e1);
    qsort(ms, 3, sizeof ms[0], cmp_double);
    if (host) *host = hmin;
    return ms[1];
}
static double time_job(chm_backend *be, job *j, int reps) { return time_job_host(be, j, reps, NULL); }

static void free_job(job *j, int n) {
    for (int i = 0; i < n; i++) chm_buffer_free(j->t[i].buf);
}

static void bench_attention(chm_backend *be, chm_dtype dt, int64_t B, int64_t T, int64_t H,
                            int64_t D) {
    const int64_t q[4] = {B, T, H, D}, l[3] = {B, H, T};
    job j = {.kind = 0, .scale = 1.0 / sqrt((double)D)};
    for (int i = 0; i < 9; i++)
        j.t[i] = alloc_tensor(be, i == 4 ? CHM_F32 : dt, i == 4 ? 3 : 4, i == 4 ? l : q);
    for (int i = 0; i < 9; i++)
        if (i < 3 || i == 8) fill_random(be, &j.t[i], -1, 1);
    for (int i = 5; i < 8; i++)
        if (chm_fill(be, &j.t[i], 0)) die(be, "fill");
    double flops = 2.0 * (double)(B * H * T) * (double)T * (double)D; /* causal: half of 4BHT^2D */
    int reps = quick ? 3 : 10;
    double hf, hb;
    double f = time_job_host(be, &j, reps, &hf);
    j.kind = 1;
    double bw = time_job_host(be, &j, reps, &hb);
    char what[72];
    snprintf(what, sizeof what, "attention fwd %s B%lld T%lld H%lld D%lld", chm_dtype_name(dt),
             (long long)B, (long long)T, (long long)H, (long long)D);
    add_row(what, f, "%.4g TFLOP/s, host %.3f ms", flops / (f * 1e9), hf);
    snprintf(what, sizeof what, "attention bwd %s B%lld T%lld H%lld D%lld", chm_dtype_name(dt),
             (long long)B, (long long)T, (long long)H, (long long)D);
    add_row(what, bw, "%.4g TFLOP/s (2.5x fwd flops), host %.3f ms", 2.5 * flops / (bw * 1e9),
            hb);
    free_job(&j, 9);
}

/*
 * Attention at chimera-1b's shape (d64) and at d128: f32, then bf16 and f16 on the default path
 * (cooperative matrices where the device has them), on the plain 16-bit shaders
 * (CHIMERA_VULKAN_ATTN_CM=0: the plain forward and backward), and bf16 d64 at each
 * cooperative-matrix tile (forward and backward; a tile that does not fit one of them falls
 * back to the first of attention.c's list that does).
 */
static void bench_attention_all(chm_backend *be) {
    if (quick) {
        bench_attention(be, CHM_F32, 1, 128, 2, 64);
        bench_attention(be, CHM_BF16, 1, 128, 2, 64);
        return;
    }
    static const char *modes[] = {NULL, "0"};
    static const char *tiles[] = {"4x32", "2x64", "2x32", "4x16", "2x16"};
    for (int d = 0; d < 2; d++) {
        int64_t H = d ? 8 : 16, D = d ? 128 : 64;
        bench_attention(be, CHM_F32, 8, 2048, H, D);
        for (int m = 0; m < 2; m++) {
            if (modes[m]) setenv("CHIMERA_VULKAN_ATTN_CM", modes[m], 1);
            printf("  (CHIMERA_VULKAN_ATTN_CM=%s)\n", modes[m] ? modes[m] : "");
            bench_attention(be, CHM_BF16, 8, 2048, H, D);
            bench_attention(be, CHM_F16, 8, 2048, H, D);
            unsetenv("CHIMERA_VULKAN_ATTN_CM");
        }
    }
    for (int t = 0; t < 5; t++) {
        setenv("CHIMERA_VULKAN_ATTN_CM", tiles[t], 1);
        printf("  (CHIMERA_VULKAN_ATTN_CM=%s)\n", tiles[t]);
        bench_attention(be, CHM_BF16, 8, 2048, 16, 64);
    }
    unsetenv("CHIMERA_VULKAN_ATTN_CM");
}

/*
 * --attention-1b: bf16 fwd and bwd at chimera-1b's shape and at T2048, then the per-shader
 * profile of 4 more calls each at chimera-1b's shape (dispatches serialised and timed).
 */
static void bench_attention_1b(chm_backend *be) {
    bench_attention(be, CHM_BF16, 8, 1024, 16, 64);
    bench_attention(be, CHM_BF16, 8, 2048, 16, 64);
    const int64_t q[4] = {8, 1024, 16, 64}, l[3] = {8, 16, 1024};
    job j = {.kind = 0, .scale = 0.125};
    for (int i = 0; i < 9; i++)
        j.t[i] = alloc_tensor(be, i == 4 ? CHM_F32 : CHM_BF16, i == 4 ? 3 : 4, i == 4 ? l : q);
    for (int i = 0; i < 9; i++)
        if (i < 3 || i == 8) fill_random(be, &j.t[i], -1, 1);
    for (int i = 5; i < 8; i++)
        if (chm_fill(be, &j.t[i], 0)) die(be, "fill");
    chm_vulkan_set_profile(be, true);
    for (int r = 0; r < 8; r++) {
        j.kind = r % 2;
        if (run_job(be, &j)) die(be, "profiled run");
    }
    static char report[1 << 14];
    if (chm_vulkan_profile_report(be, report, sizeof report)) die(be, "profile");
    chm_vulkan_set_profile(be, false);
    printf("per-shader device time of 4 fwd + 4 bwd, bf16 B8 T1024 H16 D64:\n%s", report);
    free_job(&j, 9);
}


/* chimera-1b's causal_conv1d_bwd and MoD select_topk on backend be ("default" or "older"). */
static void bench_seq_ops(chm_backend *be, const char *path) {
    static const chm_dtype dts[2] = {CHM_BF16, CHM_F32};
    for (int d = 0; d < 2; d++) {
        chm_dtype dt = dts[d];
        const int64_t btc[3] = {8, 2048, 2048}, cw[2] = {2048, 4}, c1[1] = {2048};
        /* 0 dout, 1 x, 2 w, 3 bias, 4 dx, 5 dw, 6 dbias */
        job j = {.kind = 4};
        for (int i = 0; i < 7; i++) {
            int k = i % 4 == 3 ? 3 : i;
            j.t[i] = alloc_tensor(be, dt, k == 2 || k == 5 ? 2 : k == 3 || k == 6 ? 1 : 3,
                                  k == 2 || k == 5 ? cw : k == 3 || k == 6 ? c1 : btc);
            fill_random(be, &j.t[i], -1, 1);
        }
        double ms = time_job(be, &j, 10), bytes = 4.0 * 8 * 2048 * 2048 * chm_dtype_size(dt);
        char what[72];
        snprintf(what, sizeof what, "causal_conv1d_bwd %s (%s)", chm_dtype_name(dt), path);
        add_row(what, ms, "%.0f GB/s", bytes / (ms * 1e6));
        free_job(&j, 7);
        const int64_t rc[2] = {8, 2048}, rk[2] = {8, 1024};
        job k = {.kind = 5};
        k.t[0] = alloc_tensor(be, dt, 2, rc);
        k.t[1] = alloc_tensor(be, CHM_I32, 2, rk);
        fill_random(be, &k.t[0], -1, 1);
        snprintf(what, sizeof what, "select_topk %s 8x2048 k1024 (%s)", chm_dtype_name(dt), path);
        add_row(what, time_job(be, &k, 10), "");
        free_job(&k, 2);
    }
}

/* How bench_scan calls the backward: gradients accumulated; written (set); written as the
   model calls it (mamba_block.c), with the saved states where the backend reads them. */
enum { SCAN_ACC, SCAN_SET, SCAN_MODEL };

/* The scan's forward and backward in dtype dt, the backward as `mode` says; `path` names the
   shader path in the rows. */
static void bench_scan(chm_backend *be, chm_dtype dt, int mode, const char *path, int64_t B,
                       int64_t T, int64_t Di, int64_t N) {
    bool set = mode != SCAN_ACC;
    const int64_t btd[3] = {B, T, Di}, btn[3] = {B, T, N}, dn[2] = {Di, N}, d1[1] = {Di};
    /* 0 y, 1 dy, 2 u, 3 delta, 4 A, 5 Bm, 6 Cm, 7 D, 8 z, 9 delta_bias, 10.. their gradients */
    static const double lo[10] = {0, -1, -1, -4, -4, -1, -1, -1, -2, -2};
    static const double hi[10] = {0, 1, 1, 0, -0.5, 1, 1, 1, 2, 0};
    const int64_t *shape[10] = {btd, btd, btd, btd, dn, btn, btn, d1, btd, d1};
    const int nd[10] = {3, 3, 3, 3, 2, 3, 3, 1, 3, 1};
    job j = {.kind = 2};
    for (int i = 0; i < 18; i++) {
        int s = i < 10 ? i : i - 8;
        j.t[i] = alloc_tensor(be, dt, nd[s], shape[s]);
        if (i > 0 && i < 10) fill_random(be, &j.t[i], lo[i], hi[i]);
        else if (chm_fill(be, &j.t[i], 0)) die(be, "fill");
    }
    chm_tensor *t = j.t;
    j.sa = (chm_scan_args){&t[2], &t[3], &t[4], &t[5], &t[6],
                           &t[7], &t[8], &t[9], true,  NULL,
                           set ? CHM_SCAN_SET_DU | CHM_SCAN_SET_DDELTA | CHM_SCAN_SET_DZ |
                                     CHM_SCAN_SET_DBM | CHM_SCAN_SET_DCM | CHM_SCAN_SET_DA
                               : 0u, NULL};
    bool saved = mode == SCAN_MODEL && (be->caps & CHM_CAP_SCAN_SAVED);
    if (saved) {
        const int64_t hs[4] = {B, (T + CHM_SCAN_SAVE_STRIDE - 1) / CHM_SCAN_SAVE_STRIDE, Di, N};
        t[18] = alloc_tensor(be, CHM_F32, 4, hs);
        j.sa.h_saved = &t[18];
    }
    j.sg = (chm_scan_grads){&t[10], &t[11], &t[12], &t[13], &t[14], &t[15], &t[16], &t[17]};
    int reps = quick ? 3 : 10;
    double f = time_job(be, &j, reps);
    j.kind = 3;
    double bw = time_job(be, &j, reps);
    double w = (double)chm_dtype_size(dt);
    double btd4 = (double)(B * T * Di) * w, btn4 = (double)(B * T * N) * w;
    double fb = 4 * btd4 + 2 * btn4, bb = 10 * btd4 + 6 * btn4; /* bytes read + written once */
    char what[96];
    snprintf(what, sizeof what, "scan fwd %s B%lld T%lld Di%lld N%lld%s%s", chm_dtype_name(dt),
             (long long)B, (long long)T, (long long)Di, (long long)N, path[0] ? " " : "", path);
    add_row(what, f, "%.4g GB/s (each tensor once)", fb / (f * 1e6));
    snprintf(what, sizeof what, "scan bwd %s B%lld T%lld Di%lld N%lld%s%s%s", chm_dtype_name(dt),
             (long long)B, (long long)T, (long long)Di, (long long)N,
             set ? saved ? " set saved" : " set" : "", path[0] ? " " : "", path);
    add_row(what, bw, "%.4g GB/s (each tensor once)", bb / (bw * 1e6));
    free_job(&j, saved ? 19 : 18);
}

/* ---- 4. training throughput ---- */

/* A training run that failed: the error on a FAIL line, and a FAILED row in the summary. */
static void train_failed(const char *label, const char *why) {
    printf("FAIL  train %s: %s\n", label, why);
    add_row(label, NAN, "FAILED: %.86s", why);
    checks++, failures++;
}

/* Median seconds of `steps` steps after one warm-up step; false (and *err) when one fails. */
static bool train_steps(chm_trainer *t, int steps, double *med, chm_train_step *s, chm_err *err) {
    double sec[16];
    bool ok = chm_trainer_step(t, s, err) == CHM_OK; /* warm-up: pipelines, first sizes */
    for (int i = 0; ok && i < steps && i < 16; i++) {
        ok = chm_trainer_step(t, s, err) == CHM_OK;
        sec[i] = s->seconds;
    }
    if (ok && (s->skipped || !isfinite(s->loss.total))) {
        snprintf(err->msg, sizeof err->msg, "step %lld: non-finite loss %g or gradient norm %g",
                 (long long)s->step, s->loss.total, s->grad_norm);
        ok = false;
    }
    if (!ok) return false;
    qsort(sec, (size_t)steps, sizeof sec[0], cmp_double);
    *med = sec[steps / 2];
    return true;
}

/*
 * Tokens/s of `steps` training steps (after one warm-up step) of a config on
 * vulkan. Any failure (config, opening the trainer, a step) is a FAIL with
 * the error, never a number: chimera-1b's flat buffers are larger than a
 * storage-buffer binding, and a limit the backend cannot work around must
 * show here.
 */
static void bench_train(const char *label, const char *config, const char *const *sets, int nsets,
                        int steps) {
    chm_config cfg;
    chm_err err = {0};
    if (chm_config_load_builtin(config, sets, nsets, &cfg, &err)) {
        train_failed(label, err.msg);
        return;
    }
    char dir[] = "/tmp/vk_bench_XXXXXX";
    if (!mkdtemp(dir)) {
        train_failed(label, "cannot make a run directory under /tmp");
        chm_config_free(&cfg);
        return;
    }
    chm_trainer_options o = {.out_dir = dir, .backend = "vulkan", .quiet = true,
                             .peak_tflops = 1, .cache_dir = "/tmp/vk_bench_cache"};
    chm_trainer *t = NULL;
    if (chm_trainer_open(&cfg, &o, &t, &err)) {
        train_failed(label, err.msg);
    } else {
        int64_t tokens = cfg.train.micro_batch * cfg.train.seq_len * cfg.train.grad_accum;
        chm_train_step s;
        double med = 0;
        if (train_steps(t, steps, &med, &s, &err))
            add_row(label, med * 1e3, "%.0f tokens/s (loss %.3f after %d steps)",
                    (double)tokens / med, s.loss.total, steps + 1);
        else
            train_failed(label, err.msg);
        chm_trainer_close(t);
    }
    ck_remove_tree(dir, &err);
    chm_config_free(&cfg);
}

static void bench_training(void) {
    static const char *tiny[] = {"train.eval_every=0", "train.save_every=0"};
    static const char *tiny_quick[] = {"train.eval_every=0", "train.save_every=0",
                                       "train.micro_batch=2", "train.seq_len=64"};
    static const char *big[] = {"train.eval_every=0", "train.save_every=0", "train.micro_batch=1",
                                "train.grad_accum=1", "train.tokens=", "train.steps=100",
                                "data.train=builtin", "data.val=", "data.tokenizer=byte",
                                "backend=vulkan", "precision=f32"};
    if (quick) bench_train("train tiny.yaml (B2 T64)", "tiny", tiny_quick, 4, 2);
    else bench_train("train tiny.yaml (B16 T512)", "tiny", tiny, 2, 5);
    if (quick) return;
    bench_train("train chimera-1b (B1 T2048, f32)", "training_dolma", big, 11, 3);
    /* mixed precision (bf16 storage, fp32 master): at B1, and at the cuda benchmark's B8 */
    const char *big16[11];
    memcpy(big16, big, sizeof big16);
    big16[10] = "precision=bf16";
    bench_train("train chimera-1b (B1 T2048, bf16)", "training_dolma", big16, 11, 3);
    big16[2] = "train.micro_batch=8";
    bench_train("train chimera-1b (B8 T2048, bf16)", "training_dolma", big16, 11, 3);
}

/*
 * --train-profile: chimera-1b in bf16 at micro batch 8 x 2048 (grad_accum 1) on vulkan, one
 * warm-up step, then two steps with every dispatch timed (chm_vulkan_set_profile: dispatches
 * serialised, so the sum exceeds a normal step); prints the per-shader table.
 */
static int profile_training(void) {
    static const char *sets[] = {"train.eval_every=0", "train.save_every=0", "train.micro_batch=8",
                                 "train.grad_accum=1", "train.tokens=", "train.steps=100",
                                 "data.train=builtin", "data.val=", "data.tokenizer=byte",
                                 "backend=vulkan", "precision=bf16"};
    chm_config cfg;
    chm_err err = {0};
    char dir[] = "/tmp/vk_bench_XXXXXX";
    if (chm_config_load_builtin("training_dolma", sets, 11, &cfg, &err) || !mkdtemp(dir)) {
        printf("FAIL  train profile: %s\n", err.msg[0] ? err.msg : "no run directory");
        return 1;
    }
    chm_trainer_options o = {.out_dir = dir, .backend = "vulkan", .quiet = true,
                             .peak_tflops = 1, .cache_dir = "/tmp/vk_bench_cache"};
    chm_trainer *t = NULL;
    chm_train_step s;
    double sec[3] = {0};
    int rc = chm_trainer_open(&cfg, &o, &t, &err) != CHM_OK;
    for (int i = 0; !rc && i < 3; i++) {
        if (i == 1) chm_vulkan_set_profile(chm_trainer_backend(t), true);
        rc = chm_trainer_step(t, &s, &err) != CHM_OK;
        sec[i] = s.seconds;
    }
    size_t n = 1 << 16;
    char *report = xmalloc(n);
    if (!rc) rc = chm_vulkan_profile_report(chm_trainer_backend(t), report, n) != CHM_OK;
    if (rc) printf("FAIL  train profile: %s\n", err.msg);
    else printf("chimera-1b bf16 B8 T2048 steps: %.3f s (warm-up), %.3f s, %.3f s (profiled)\n"
                "per-shader device time over the 2 profiled steps:\n%s", sec[0], sec[1], sec[2],
                report);
    free(report);
    if (t) chm_trainer_close(t);
    ck_remove_tree(dir, &err);
    chm_config_free(&cfg);
    return rc;
}

/* ---- main ---- */

/* The command line (see the top of the file); false on an unknown argument. */
/* The "== summary" block: the check count and every timed row. */
static void print_summary(const char *device) {
    printf("\n== summary (vulkan on %s)\n", device);
    printf("  matmul checks: %d, failed: %d\n", checks, failures);
    for (int i = 0; i < nrows; i++)
        printf("  %-46s %10.3f ms  %s\n", rows[i].what, rows[i].ms, rows[i].rate);
}

static bool parse_args(int argc, char **argv, bool *train, bool *matmul_only, bool *probe_only) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--emulate")) emulate = true;
        else if (!strcmp(argv[i], "--no-train")) *train = false;
        else if (!strcmp(argv[i], "--matmul")) *matmul_only = true;
        else if (!strcmp(argv[i], "--coopmat-probe")) *probe_only = true;
        else if (!strcmp(argv[i], "--attention")) attention_only = true;
        else if (!strcmp(argv[i], "--attention-1b")) attention_only = attention_1b = true;
        else if (!strcmp(argv[i], "--train-profile")) train_profile = true;
        else if (!strcmp(argv[i], "--mm-time")) mm_time = true;
        else if (!strcmp(argv[i], "--mm-odd")) mm_odd = true;
        else if (!strcmp(argv[i], "--seq-ops")) seq_ops = true;
        else if (!strcmp(argv[i], "--scan")) scan_only = true;
        else if (!strcmp(argv[i], "--l2-probe")) l2_only = true;
        else if (!strcmp(argv[i], "--mm-plain")) mm_plain = true;
        else {
            fprintf(stderr, "usage: %s [--quick] [--emulate] [--no-train] [--matmul] "
                    "[--coopmat-probe] [--attention] [--attention-1b] [--train-profile] "
                    "[--mm-time] [--mm-odd] [--seq-ops] [--scan] [--l2-probe] [--mm-plain]\n", argv[0]);
            return false;
        }
    }
    return true;
}

int main(int argc, char **argv) {
    bool train = true, matmul_only = false, probe_only = false;
    if (!parse_args(argc, argv, &train, &matmul_only, &probe_only)) return 2;
    if (emulate) setenv("CHIMERA_VULKAN_COOPMAT_EMULATE", "1", 1);
    const char *ud = getenv("CHIMERA_VULKAN_DISABLE");
    snprintf(user_disable, sizeof user_disable, "%s", ud ? ud : "");
    const char *ut = getenv("CHIMERA_VULKAN_COOPMAT_TILE");
    snprintf(user_tile, sizeof user_tile, "%s", ut ? ut : "");
    chm_err err = {0};
    chm_backend *cpu = NULL, *vk = NULL, *plain = NULL;
    if (chm_backend_open("cpu", NULL, &cpu, &err)) {
        fprintf(stderr, "vk_bench: %s\n", err.msg);
        return 2;
    }
    chm_status rc = open_vk(NULL, NULL, &vk, &err);
    if (rc) {
        printf("SKIP  no usable Vulkan device: %s\n", err.msg);
        chm_backend_close(cpu);
        return rc == CHM_ERR_UNSUPPORTED ? 77 : 2;
    }
    const char *p16 = chm_vulkan_matmul_path(vk, CHM_F16);
    bool coopmat = p16 && strncmp(p16, "coopmat", 7) == 0;
    bool real_cm = p16 && (!strcmp(p16, "coopmat-nv") || !strcmp(p16, "coopmat-khr"));
    /* bf16 on cm2 (f16 stays on matmul_cm.comp where both exist: matmul.c's cm2_takes) */
    bool cm2 = p16 && strcmp(chm_vulkan_matmul_path(vk, CHM_BF16), "coopmat2") == 0;
    char device[128];
    snprintf(device, sizeof device, "%s", vk->device);
    printf("vk_bench on %s: matmul paths f32 %s, f16 %s, bf16 %s%s\n", device,
           chm_vulkan_matmul_path(vk, CHM_F32), p16 ? p16 : "none",
           p16 ? chm_vulkan_matmul_path(vk, CHM_BF16) : "none", quick ? " (--quick sizes)" : "");
    if (l2_only) {
        printf("\n== read bandwidth (issue 6)\n");
        l2_probe_all(vk);
        chm_backend_close(vk);
        chm_backend_close(cpu);
        print_summary(device);
        return 0;
    }
    if (mm_plain) {
        chm_backend_close(vk);
        bench_plain(cpu);
        chm_backend_close(cpu);
        print_summary(device);
        return failures ? 1 : 0;
    }
    if (mm_odd) {
        printf("\n== chimera-1b's small bf16 products (default path, no checks)\n");
        bench_odd_shapes(vk);
        chm_backend_close(vk);
        chm_backend_close(cpu);
        print_summary(device);
        return 0;
    }
    if (mm_time) {
        printf("\n== matmul (default path, no checks)\n");
        bench_paths(vk, true);
        chm_backend_close(vk);
        chm_backend_close(cpu);
        print_summary(device);
        return 0;
    }
    if (seq_ops) {
        chm_backend *old = NULL;
        printf("\n== causal_conv1d_bwd and select_topk at chimera-1b's shapes\n");
        bench_seq_ops(vk, "default");
        chm_backend_close(vk);
        if (open_vk("conv1d_fused,topk_split", NULL, &old, &err)) {
            fprintf(stderr, "vk_bench: %s\n", err.msg);
            return 2;
        }
        bench_seq_ops(old, "older");
        chm_backend_close(old);
        chm_backend_close(cpu);
        print_summary(device);
        return 0;
    }
    if (scan_only) {
        chm_backend *old = NULL;
        printf("\n== selective scan at chimera-1b's shape (B8 T2048 Di2048 N16)\n");
        for (int r = 0; r < 2; r++) { /* twice: a slow process shows in both paths */
            bench_scan(vk, CHM_BF16, SCAN_MODEL, "(default)", 8, 2048, 2048, 16);
            bench_scan(vk, CHM_F32, SCAN_MODEL, "(default)", 8, 2048, 2048, 16);
            bench_scan(vk, CHM_BF16, SCAN_SET, "(default)", 8, 2048, 2048, 16);
            if (r == 0) bench_scan(vk, CHM_F32, SCAN_ACC, "(default)", 8, 2048, 2048, 16);
        }
        chm_backend_close(vk);
        if (open_vk("scan_shuffle", NULL, &old, &err)) {
            fprintf(stderr, "vk_bench: %s\n", err.msg);
            return 2;
        }
        for (int r = 0; r < 2; r++) {
            bench_scan(old, CHM_BF16, SCAN_MODEL, "(older)", 8, 2048, 2048, 16);
            bench_scan(old, CHM_F32, SCAN_MODEL, "(older)", 8, 2048, 2048, 16);
        }
        chm_backend_close(old);
        chm_backend_close(cpu);
        print_summary(device);
        return 0;
    }
    if (train_profile) { /* before open_vk("coopmat") below sets CHIMERA_VULKAN_DISABLE */
        chm_backend_close(vk);
        chm_backend_close(cpu);
        return profile_training();
    }
    if (coopmat && !probe_only && open_vk("coopmat,coopmat2", NULL, &plain, &err))
        die(vk, "opening without coopmat");
    /* where cm2 is the default: matmul_cm.comp (v1) beside it */
    chm_backend *v1 = NULL, *cm2all = NULL;
    if (cm2 && !probe_only && !attention_only && open_vk("coopmat2", NULL, &v1, &err))
        die(vk, "opening without coopmat2");
    /* and cm2 for both dtypes (matmul_cm.comp off) */
    if (cm2 && !probe_only && !attention_only && open_vk("coopmat", NULL, &cm2all, &err))
        die(vk, "opening without coopmat");

    if (attention_only) matmul_only = false, train = false;
    if (!probe_only && !attention_only) {
        printf("\n== check: each matmul path against the cpu backend\n");
        check_paths(cpu, vk, false);
        if (v1) check_paths(cpu, v1, true);
        if (cm2all) check_paths(cpu, cm2all, true);
        if (plain) check_paths(cpu, plain, true);
        printf("\n== matmul\n");
        bench_paths(vk, false);
        if (v1) bench_paths(v1, true);
        if (cm2all) bench_paths(cm2all, true);
        if (plain) bench_paths(plain, true);
        if (plain) chm_backend_close(plain);
        if (v1) chm_backend_close(v1);
        if (cm2all) chm_backend_close(cm2all);
        /* with cm2 the default: v1 at its default tile on chimera-1b's shapes, no v1 sweep */
        if (coopmat && !cm2) bench_tiles();
        if (cm2 && v1) bench_1b_shapes("coopmat2");
        if (cm2) bench_tiles_cm2();
    }
    if (probe_only || (real_cm && !quick && !matmul_only && !attention_only)) {
        printf("\n== cooperative-matrix probe (issue 6) on %s\n", device);
        cm_probe_all(vk, real_cm);
    }
    if (probe_only || (real_cm && !quick && !matmul_only && !attention_only)) {
        printf("\n== read bandwidth (issue 6) on %s\n", device);
        l2_probe_all(vk);
    }
    if (!probe_only && !matmul_only) {
        printf("\n== attention and selective scan\n");
        if (attention_1b) bench_attention_1b(vk);
        else bench_attention_all(vk);
        if (attention_only) {
        } else if (quick) {
            bench_scan(vk, CHM_F32, SCAN_ACC, "", 1, 64, 64, 16);
        } else {
            bench_scan(vk, CHM_F32, SCAN_ACC, "", 8, 2048, 2048, 16);
        }
    }
    chm_backend_close(vk);
    if (train && !probe_only && !matmul_only) {
        printf("\n== training\n");
        bench_training();
    }
    print_summary(device);
    chm_backend_close(cpu);
    return failures ? 1 : 0;
}
