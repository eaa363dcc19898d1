/*
 * matmul.c: matmul and grouped matmul of the cuda backend, on cuBLASLt.
 *
 * Row-major C [M,N] = op(A) op(B) is the column-major product
 * C^T [N,M] = op(B)^T op(A)^T, so cuBLASLt's "A" is our B and its "B" our A,
 * with the transposes carried over; nothing is copied. f32 runs in true f32
 * (CUBLAS_COMPUTE_32F, no TF32), bf16 and f16 with f32 accumulation. Batches
 * are strided (stride 0 broadcasts an operand). The bias is cuBLASLt's BIAS
 * epilogue when beta == 0 (one pass over C), else a small kernel after the
 * product. Heuristic results are cached per problem (a hash table; sizes that
 * vary from call to call share entries, see lt_bucket), so a training step
 * asks cuBLASLt only once per shape. When C is not read (beta 0), the first
 * call of a shape times cuBLASLt's top LT_TRIALS candidates on the real
 * operands (each after a warm-up run of its own) and keeps the fastest if it
 * beats the heuristic's first pick by 10% (the margin keeps the choice stable
 * from run to run). CHIMERA_CUDA_GEMM_TUNE=0 keeps the first pick,
 * CHIMERA_CUDA_GEMM_TRIALS=n times n candidates (up to 32),
 * CHIMERA_CUDA_GEMM_LOG=1 prints every timed candidate and =2 every product's
 * device time per shape at exit (diagnosis). The workspace is allocated once.
 *
 * Grouped products (experts) run every group over its full capacity in one
 * strided-batch call, because the live counts are on the device and the host
 * must not wait for them; kernels of cuda/matmul.cu then make the result
 * exactly the contract's (see there): plain form, rows >= counts[e] are set
 * to beta*C (saved before the product when beta != 0); trans_a form, A and B
 * are copied with the rows past counts[e] zeroed so the sum stops there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "kernels.h"

/* One cached heuristic answer. */
typedef struct lt_key {
    int dt, ta, tb, epi;
    int64_t m, n, k, batch, sa, sb, sc;
    uint32_t align[3];
} lt_key;

#define LT_CACHE 2048 /* a power of two: open addressing by hash */
#define LT_BUCKET 64  /* sizes above LT_SMALL keep their own entry when multiples of this */
#define LT_SMALL 256
#define LT_TRIALS 8      /* heuristic candidates timed on a shape's first call */
#define LT_TRIALS_MAX 32 /* CHIMERA_CUDA_GEMM_TRIALS may ask for up to this many */

#define LT_TRACE_EVENTS 1024 /* pending event pairs of CHIMERA_CUDA_GEMM_LOG=2 */
#define LT_TRACE_ROWS 64

/* CHIMERA_CUDA_GEMM_LOG=2: every product's device time (events right around the cuBLASLt
 * call, so no host gap counts when work is queued), per shape, printed when the backend
 * closes: mean, min and max per call. */
typedef struct lt_trace_row {
    int64_t m, n, k, batch;
    bool ta, tb;
    double ms, min, max;
    long calls;
} lt_trace_row;

typedef struct lt_trace {
    cudaEvent_t e0[LT_TRACE_EVENTS], e1[LT_TRACE_EVENTS];
    int row[LT_TRACE_EVENTS];
    int n;
    lt_trace_row rows[LT_TRACE_ROWS];
    int n_rows;
} lt_trace;

struct chm_cuda_lt_cache {
    lt_key key[LT_CACHE];
    cublasLtMatmulAlgo_t algo[LT_CACHE];
    bool used[LT_CACHE];
    int n_used;
    lt_trace *trace; /* NULL unless CHIMERA_CUDA_GEMM_LOG=2 */
};

/* One strided-batch product in our row-major terms (strides in elements, 0 = broadcast). */
typedef struct lt_problem {
    chm_dtype dt;
    bool ta, tb;
    int64_t M, N, K, batch, sa, sb, sc;
    const void *A, *B, *bias;
    void *C;
    float alpha, beta;
    const void *S; /* the beta term's source (matmul_from); NULL: C itself */
} lt_problem;

/* The tensor the beta term reads: S, or C itself. */
static const void *lt_src(const lt_problem *p) { return p->S ? p->S : p->C; }

/* The trace of CHIMERA_CUDA_GEMM_LOG=2, or NULL. */
static lt_trace *lt_trace_open(void) {
    const char *v = getenv("CHIMERA_CUDA_GEMM_LOG");
    if (!v || strcmp(v, "2") != 0) return NULL;
    lt_trace *t = calloc(1, sizeof *t);
    for (int i = 0; t && i < LT_TRACE_EVENTS; i++)
        if (cudaEventCreate(&t->e0[i]) != cudaSuccess || cudaEventCreate(&t->e1[i]) != cudaSuccess) {
            free(t); /* (a few events leak: a diagnosis that could not start) */
            return NULL;
        }
    return t;
}

/* Wait for the pending pairs and add their times to their rows. */
static void lt_trace_flush(lt_trace *t) {
    if (!t || t->n == 0) return;
    cudaEventSynchronize(t->e1[t->n - 1]);
    for (int i = 0; i < t->n; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, t->e0[i], t->e1[i]) != cudaSuccess) continue;
        lt_trace_row *r = &t->rows[t->row[i]];
        if (r->calls == 0 || ms < r->min) r->min = ms;
        if (ms > r->max) r->max = ms;
        r->ms += ms;
        r->calls++;
    }
    t->n = 0;
}

/* The pending pair for p's next call (-1 when untraced): e0 is recorded. */
static int lt_trace_begin(lt_trace *t, const lt_problem *p, cudaStream_t s) {
    if (!t) return -1;
    if (t->n == LT_TRACE_EVENTS) lt_trace_flush(t);
    int r = 0;
    while (r < t->n_rows &&
           !(t->rows[r].m == p->M && t->rows[r].n == p->N && t->rows[r].k == p->K &&
             t->rows[r].batch == p->batch && t->rows[r].ta == p->ta && t->rows[r].tb == p->tb))
        r++;
    if (r == LT_TRACE_ROWS) return -1;
    if (r == t->n_rows) t->rows[t->n_rows++] = (lt_trace_row){p->M, p->N, p->K, p->batch, p->ta,
                                                              p->tb, 0, 0, 0, 0};
    t->row[t->n] = r;
    cudaEventRecord(t->e0[t->n], s);
    return t->n++;
}

/* Print the rows and free the trace. */
static void lt_trace_close(lt_trace *t) {
    if (!t) return;
    lt_trace_flush(t);
    for (int r = 0; r < t->n_rows; r++) {
        const lt_trace_row *w = &t->rows[r];
        double mean = w->calls ? w->ms / (double)w->calls : 0;
        double fl = 2.0 * (double)w->m * (double)w->n * (double)w->k * (double)w->batch;
        fprintf(stderr,
                "gemm trace %lldx%lldx%lld x%lld%s%s: %ld calls, mean %.1f us (%.0f TFLOP/s), "
                "min %.1f us (%.0f TFLOP/s), max %.1f us\n",
                (long long)w->m, (long long)w->n, (long long)w->k, (long long)w->batch,
                w->ta ? " tA" : "", w->tb ? " tB" : "", w->calls, 1e3 * mean,
                mean > 0 ? fl / (mean * 1e9) : 0.0, 1e3 * w->min,
                w->min > 0 ? fl / (w->min * 1e9) : 0.0, 1e3 * w->max);
    }
    for (int i = 0; i < LT_TRACE_EVENTS; i++) {
        cudaEventDestroy(t->e0[i]);
        cudaEventDestroy(t->e1[i]);
    }
    free(t);
}

chm_status chm_cuda_lt_init(chm_backend *be) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cublasStatus_t s = cublasLtCreate(&cx->lt);
    if (s != CUBLAS_STATUS_SUCCESS)
        return CHM_ERR(&be->err, CHM_ERR_DEVICE, "cannot create the cuBLASLt handle: %s",
                       cublasLtGetStatusString(s));
    cx->lt_cache = calloc(1, sizeof *cx->lt_cache);
    if (!cx->lt_cache) return CHM_ERR(&be->err, CHM_ERR_NOMEM, "cannot allocate the matmul cache");
    cx->lt_cache->trace = lt_trace_open();
    return chm_cuda_pool_alloc(be, CHM_CUDA_LT_WORKSPACE, &cx->lt_ws);
}

void chm_cuda_lt_free(chm_backend *be) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    if (cx->lt_cache) lt_trace_close(cx->lt_cache->trace);
    if (cx->lt) cublasLtDestroy(cx->lt);
    free(cx->lt_cache);
    chm_cuda_pool_free(be, cx->lt_ws);
    cx->lt = NULL;
    cx->lt_cache = NULL;
    cx->lt_ws = NULL;
}

static cudaDataType_t lt_type(chm_dtype dt) {
    return dt == CHM_BF16 ? CUDA_R_16BF : dt == CHM_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* Largest power of two (<= 256) dividing the address and the batch stride in bytes. */
static uint32_t align_of(const void *p, int64_t stride, size_t es) {
    uintptr_t v = (uintptr_t)p | (uintptr_t)(stride * (int64_t)es) | 256;
    return (uint32_t)(v & (~v + 1));
}

/* A column-major layout rows x cols (leading dim rows), with the batch settings. */
static cublasStatus_t lt_layout(cublasLtMatrixLayout_t *l, chm_dtype dt, int64_t rows,
                                int64_t cols, int64_t batch, int64_t stride) {
    cublasStatus_t s = cublasLtMatrixLayoutCreate(l, lt_type(dt), (uint64_t)rows, (uint64_t)cols,
                                                  rows > 0 ? rows : 1);
    if (s != CUBLAS_STATUS_SUCCESS || batch <= 1) return s;
    int32_t bc = (int32_t)batch;
    s = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                             &stride, sizeof stride);
    return s;
}

/* The descriptors of one product (cuBLASLt's A = our B, its B = our A). */
typedef struct lt_descs {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
} lt_descs;

static void lt_descs_free(lt_descs *d) {
    if (d->op) cublasLtMatmulDescDestroy(d->op);
    if (d->a) cublasLtMatrixLayoutDestroy(d->a);
    if (d->b) cublasLtMatrixLayoutDestroy(d->b);
    if (d->c) cublasLtMatrixLayoutDestroy(d->c);
}

static cublasStatus_t lt_descs_make(lt_descs *d, const lt_problem *p) {
    memset(d, 0, sizeof *d);
    cublasOperation_t oa = p->tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                      ob = p->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t s = cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (!s) s = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa);
    if (!s) s = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob);
    if (!s && p->bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = lt_type(p->dt);
        s = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
        if (!s)
            s = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p->bias,
                                               sizeof p->bias);
        if (!s)
            s = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                               sizeof bt);
    }
    /* stored shapes: our B is [K,N] ([N,K] when tb), our A [M,K] ([K,M] when ta) */
    int64_t b_rows = p->tb ? p->K : p->N, b_cols = p->tb ? p->N : p->K;
    int64_t a_rows = p->ta ? p->M : p->K, a_cols = p->ta ? p->K : p->M;
    if (!s) s = lt_layout(&d->a, p->dt, b_rows, b_cols, p->batch, p->sb);
    if (!s) s = lt_layout(&d->b, p->dt, a_rows, a_cols, p->batch, p->sa);
    if (!s) s = lt_layout(&d->c, p->dt, p->N, p->M, p->batch, p->sc);
    return s;
}

/* A size as the cache sees it: exact when at most LT_SMALL or a multiple of LT_BUCKET, else
 * the next power of two. Products whose sizes change from call to call (experts over their
 * live rows) then share a few entries, found in the first step: a cuBLASLt algorithm does not
 * depend on the sizes it was found for (lt_run falls back to a fresh heuristic answer should
 * one refuse). */
static int64_t lt_bucket(int64_t n) {
    if (n <= LT_SMALL || n % LT_BUCKET == 0) return n;
    int64_t b = LT_SMALL;
    while (b < n) b *= 2;
    return b;
}

/* The alignment both C and S (the beta term's source) share. */
static uint32_t lt_align_c(const lt_problem *p, size_t es) {
    uint32_t c = align_of(p->C, p->sc, es), src = align_of(lt_src(p), p->sc, es);
    return c < src ? c : src;
}

/* The cache key of a problem. */
static lt_key lt_key_of(const lt_problem *p) {
    lt_key k;
    memset(&k, 0, sizeof k);
    size_t es = chm_dtype_size(p->dt);
    k.dt = (int)p->dt;
    k.ta = p->ta;
    k.tb = p->tb;
    k.epi = p->bias != NULL;
    k.m = lt_bucket(p->M), k.n = lt_bucket(p->N), k.k = lt_bucket(p->K), k.batch = p->batch;
    k.sa = p->sa, k.sb = p->sb, k.sc = p->sc;
    k.align[0] = align_of(p->A, p->sa, es);
    k.align[1] = align_of(p->B, p->sb, es);
    k.align[2] = lt_align_c(p, es);
    return k;
}

/* Candidates to time: LT_TRIALS (CHIMERA_CUDA_GEMM_TRIALS overrides, 1..LT_TRIALS_MAX); 1 (no
 * timing) when the output is read (C += ...: each timed run would add again) or
 * CHIMERA_CUDA_GEMM_TUNE=0. A beta term read from another tensor (matmul_from) repeats. */
static int lt_trials(const lt_problem *p) {
    const char *v = getenv("CHIMERA_CUDA_GEMM_TUNE");
    if ((p->beta != 0.0f && !p->S) || (v && strcmp(v, "0") == 0)) return 1;
    /* a bucket is timed only at its own sizes, so that an odd size (one expert's rows) never
     * pays for a timing that a whole bucket would share */
    if (lt_bucket(p->M) != p->M || lt_bucket(p->N) != p->N || lt_bucket(p->K) != p->K) return 1;
    const char *t = getenv("CHIMERA_CUDA_GEMM_TRIALS");
    int n = t ? atoi(t) : LT_TRIALS;
    return n < 1 ? 1 : n > LT_TRIALS_MAX ? LT_TRIALS_MAX : n;
}

/* Device time of one run of p with algo (ms), or a negative number when it fails. */
static float lt_time(chm_cuda_ctx *cx, const lt_problem *p, const lt_descs *d,
                     const cublasLtMatmulAlgo_t *algo, cudaEvent_t e0, cudaEvent_t e1) {
    float ms = -1.0f;
    cudaEventRecord(e0, cx->stream);
    cublasStatus_t s = cublasLtMatmul(cx->lt, d->op, &p->alpha, p->B, d->a, p->A, d->b, &p->beta,
                                      lt_src(p), d->c, p->C, d->c, algo, cx->lt_ws->ptr,
                                      cx->lt_ws->size, cx->stream);
    cudaEventRecord(e1, cx->stream);
    if (s == CUBLAS_STATUS_SUCCESS && cudaEventSynchronize(e1) == cudaSuccess &&
        cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
        ms = -1.0f;
    if (s != CUBLAS_STATUS_SUCCESS) ms = -1.0f;
    return ms;
}

/* CHIMERA_CUDA_GEMM_LOG=1: one stderr line per timed candidate of each new shape (diagnosis). */
static void lt_log(const lt_problem *p, int i, const cublasLtMatmulAlgo_t *algo, float ms) {
    static int on = -1;
    if (on < 0) {
        const char *v = getenv("CHIMERA_CUDA_GEMM_LOG");
        on = v && *v && strcmp(v, "0") != 0;
    }
    if (!on) return;
    int id = 0, tile = 0, stages = 0, splitk = 0;
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, NULL);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile,
                                         NULL);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages,
                                         sizeof stages, NULL);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                         sizeof splitk, NULL);
    double tf = ms > 0 ? 2.0 * (double)p->M * (double)p->N * (double)p->K * (double)p->batch /
                             (ms * 1e9)
                       : 0.0;
    fprintf(stderr,
            "gemm %lldx%lldx%lld x%lld%s%s beta %g: candidate %d algo %d tile %d stages %d "
            "splitk %d: %.3f ms %.1f TFLOP/s\n",
            (long long)p->M, (long long)p->N, (long long)p->K, (long long)p->batch,
            p->ta ? " tA" : "", p->tb ? " tB" : "", (double)p->beta, i, id, tile, stages, splitk,
            (double)ms, tf);
}

/* The index of the fastest of n candidates (each timed after a warm-up run of its own),
 * kept only if 10% faster than candidate 0; 0 when timing fails. */
static int lt_tune(chm_cuda_ctx *cx, const lt_problem *p, const lt_descs *d,
                   const cublasLtMatmulHeuristicResult_t *res, int n) {
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess) return 0;
    if (cudaEventCreate(&e1) != cudaSuccess) {
        cudaEventDestroy(e0);
        return 0;
    }
    float first = lt_time(cx, p, d, &res[0].algo, e0, e1); /* warm-up */
    first = lt_time(cx, p, d, &res[0].algo, e0, e1);
    lt_log(p, 0, &res[0].algo, first);
    int best = 0;
    float best_ms = first;
    for (int i = 1; i < n && first > 0; i++) {
        /* a warm-up run first: a kernel's first launch in a process loads its module (lazy
         * loading), about 2 ms on an H100, which timed all but the first candidate out */
        if (lt_time(cx, p, d, &res[i].algo, e0, e1) < 0) continue;
        float ms = lt_time(cx, p, d, &res[i].algo, e0, e1);
        lt_log(p, i, &res[i].algo, ms);
        if (ms > 0 && ms < best_ms) best = i, best_ms = ms;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    (void)cudaGetLastError(); /* a failed candidate leaves no error behind */
    return best_ms < 0.9f * first ? best : 0;
}

/* FNV-1a over a key's bytes (lt_key_of zeroes the padding). */
static uint32_t lt_hash(const lt_key *k) {
    const unsigned char *b = (const unsigned char *)k;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ b[i]) * 16777619u;
    return h;
}

/* The cache slot of key k: its entry, else the empty slot where it goes (the cache is
 * emptied when it is half full, so a probe always ends). */
static int lt_slot(chm_cuda_lt_cache *c, const lt_key *k, bool *hit) {
    if (c->n_used >= LT_CACHE / 2) {
        memset(c->used, 0, sizeof c->used);
        c->n_used = 0;
    }
    int i = (int)(lt_hash(k) & (LT_CACHE - 1));
    while (c->used[i] && memcmp(&c->key[i], k, sizeof *k) != 0) i = (i + 1) & (LT_CACHE - 1);
    *hit = c->used[i];
    return i;
}

/* cuBLASLt's heuristic answers for p, best first (*found of them, at most want). */
static cublasStatus_t lt_heuristic(chm_cuda_ctx *cx, const lt_problem *p, const lt_descs *d,
                                   int want, cublasLtMatmulHeuristicResult_t *res, int *found) {
    cublasLtMatmulPreference_t pref;
    cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
    if (s) return s;
    size_t ws = cx->lt_ws->size, es = chm_dtype_size(p->dt);
    /* cuBLASLt's A is our B and its B our A: their alignments swap too */
    uint32_t al[3] = {align_of(p->B, p->sb, es), align_of(p->A, p->sa, es), lt_align_c(p, es)};
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                             sizeof ws);
    if (!s)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                 &al[0], sizeof al[0]);
    if (!s)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                 &al[1], sizeof al[1]);
    if (!s)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                 &al[2], sizeof al[2]);
    if (!s)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                 &al[2], sizeof al[2]);
    *found = 0;
    if (!s)
        s = cublasLtMatmulAlgoGetHeuristic(cx->lt, d->op, d->a, d->b, d->c, d->c, pref, want, res,
                                           found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (!s && *found < 1) s = CUBLAS_STATUS_NOT_SUPPORTED;
    return s;
}

/* The algorithm for p: from the cache, or from the heuristic (then cached). *cached says
 * which, so that a cached algorithm that refuses p's own sizes can be replaced. */
static cublasStatus_t lt_algo(chm_cuda_ctx *cx, const lt_problem *p, const lt_descs *d,
                              cublasLtMatmulAlgo_t *algo, bool *cached) {
    chm_cuda_lt_cache *c = cx->lt_cache;
    lt_key k = lt_key_of(p);
    int i = lt_slot(c, &k, cached);
    if (*cached) {
        *algo = c->algo[i];
        return CUBLAS_STATUS_SUCCESS;
    }
    cublasLtMatmulHeuristicResult_t res[LT_TRIALS_MAX];
    int found = 0;
    cublasStatus_t s = lt_heuristic(cx, p, d, lt_trials(p), res, &found);
    if (s) return s;
    int best = found > 1 ? lt_tune(cx, p, d, res, found) : 0;
    c->key[i] = k;
    c->algo[i] = res[best].algo;
    c->used[i] = true;
    c->n_used++;
    *algo = res[best].algo;
    return CUBLAS_STATUS_SUCCESS;
}

/* Run one product; an error status when cuBLASLt has no algorithm for it (callers retry). */
static cublasStatus_t lt_run(chm_cuda_ctx *cx, const lt_problem *p) {
    lt_descs d;
    cublasLtMatmulAlgo_t algo;
    bool cached = false;
    cublasStatus_t s = lt_descs_make(&d, p);
    if (!s) s = lt_algo(cx, p, &d, &algo, &cached);
    int tr = s ? -1 : lt_trace_begin(cx->lt_cache->trace, p, cx->stream);
    if (!s)
        s = cublasLtMatmul(cx->lt, d.op, &p->alpha, p->B, d.a, p->A, d.b, &p->beta, lt_src(p),
                           d.c, p->C, d.c, &algo, cx->lt_ws->ptr, cx->lt_ws->size, cx->stream);
    if (s != CUBLAS_STATUS_SUCCESS && cached) { /* the bucket's algorithm refused p */
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        s = lt_heuristic(cx, p, &d, 1, &res, &found);
        if (!s)
            s = cublasLtMatmul(cx->lt, d.op, &p->alpha, p->B, d.a, p->A, d.b, &p->beta,
                               lt_src(p), d.c, p->C, d.c, &res.algo, cx->lt_ws->ptr,
                               cx->lt_ws->size, cx->stream);
    }
    if (tr >= 0) cudaEventRecord(cx->lt_cache->trace->e1[tr], cx->stream);
    lt_descs_free(&d);
    return s;
}

/* C = beta*S (+ bias) for an empty sum (K = 0 or alpha = 0); beta = 0 writes zeros. */
static chm_status empty_product(chm_backend *be, const char *op, const lt_problem *p) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    int64_t n = p->batch * p->M * p->N;
    cudaError_t e = p->beta == 0.0f
                        ? chm_cu_fill(p->C, n, (int)chm_dtype_size(p->dt), 0, cx->stream)
                        : chm_cu_scale(p->C, lt_src(p), p->beta, n, p->dt, cx->stream);
    if (e == cudaSuccess && p->bias)
        e = chm_cu_bias_add(p->C, p->bias, p->batch * p->M, p->N, p->dt, cx->stream);
    return chm_cuda_check(be, op, e);
}

/* The batch as one strided call, else (no algorithm for that layout, e.g. a broadcast
 * stride) one call per entry. */
static cublasStatus_t lt_run_batch(chm_cuda_ctx *cx, const lt_problem *p) {
    cublasStatus_t s = lt_run(cx, p);
    if (s == CUBLAS_STATUS_SUCCESS || p->batch <= 1) return s;
    size_t es = chm_dtype_size(p->dt);
    lt_problem q = *p;
    q.batch = 1;
    s = CUBLAS_STATUS_SUCCESS;
    for (int64_t i = 0; i < p->batch && s == CUBLAS_STATUS_SUCCESS; i++) {
        q.A = (const char *)p->A + (size_t)(i * p->sa) * es;
        q.B = (const char *)p->B + (size_t)(i * p->sb) * es;
        q.C = (char *)p->C + (size_t)(i * p->sc) * es;
        if (p->S) q.S = (const char *)p->S + (size_t)(i * p->sc) * es;
        s = lt_run(cx, &q);
    }
    return s;
}

/* The product with its bias, by the cheapest route that cuBLASLt accepts. */
static chm_status product(chm_backend *be, const char *op, lt_problem p) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    if (p.M == 0 || p.N == 0 || p.batch == 0) return CHM_OK;
    if (p.K == 0 || p.alpha == 0.0f) return empty_product(be, op, &p);
    const void *bias = p.bias;
    if (p.beta != 0.0f) p.bias = NULL; /* epilogue bias only when C is not read */
    cublasStatus_t s = lt_run_batch(cx, &p);
    if (s != CUBLAS_STATUS_SUCCESS && p.bias) { /* no epilogue algorithm: add the bias after */
        p.bias = NULL;
        s = lt_run_batch(cx, &p);
    }
    if (s != CUBLAS_STATUS_SUCCESS)
        return CHM_ERR(&be->err, CHM_ERR_DEVICE,
                       "%s: cuBLASLt failed for M=%lld N=%lld K=%lld batch %lld (%s): %s", op,
                       (long long)p.M, (long long)p.N, (long long)p.K, (long long)p.batch,
                       chm_dtype_name(p.dt), cublasLtGetStatusString(s));
    if (bias && !p.bias)
        return chm_cuda_check(be, op, chm_cu_bias_add(p.C, bias, p.batch * p.M, p.N, p.dt,
                                                      cx->stream));
    return chm_cuda_check(be, op, cudaGetLastError());
}

/* [batch, rows, cols] of a tensor: the leading dims multiply into the batch. */
static void dims3(const chm_tensor *t, int64_t *batch, int64_t *rows, int64_t *cols) {
    *batch = 1;
    for (int i = 0; i < t->ndim - 2; i++) *batch *= t->shape[i];
    *rows = t->shape[t->ndim - 2];
    *cols = t->shape[t->ndim - 1];
}

/* matmul and matmul_from: the beta term reads S (NULL: C). */
static chm_status matmul_any(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                             const chm_tensor *B, const chm_tensor *bias, const chm_tensor *S,
                             bool trans_a, bool trans_b, double alpha, double beta) {
    chm_status rc = chm_cuda_dtype(be, "matmul", C->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    int64_t cb, M, N, ab, ar, ac, bb, br, bc;
    dims3(C, &cb, &M, &N);
    dims3(A, &ab, &ar, &ac);
    dims3(B, &bb, &br, &bc);
    lt_problem p = {C->dtype, trans_a, trans_b, M, N, trans_a ? ar : ac, cb,
                    ab == 1 ? 0 : ar * ac, bb == 1 ? 0 : br * bc, M * N,
                    chm_cuda_ptr(A), chm_cuda_ptr(B), chm_cuda_ptr(bias), chm_cuda_ptr(C),
                    (float)alpha, (float)beta, S ? chm_cuda_ptr(S) : NULL};
    /* a shared B and a stacked, untransposed A fold the batch into M: one plain GEMM */
    if (bb == 1 && ab == cb && !trans_a) {
        p.M *= cb;
        p.batch = 1;
        p.sa = p.sc = 0;
    }
    if (p.batch > INT32_MAX)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "matmul: batch %lld exceeds cuBLASLt's range",
                       (long long)p.batch);
    return product(be, "matmul", p);
}

chm_status chm_cuda_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                           const chm_tensor *B, const chm_tensor *bias, bool trans_a,
                           bool trans_b, double alpha, double beta) {
    return matmul_any(be, C, A, B, bias, NULL, trans_a, trans_b, alpha, beta);
}

chm_status chm_cuda_matmul_from(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                const chm_tensor *B, const chm_tensor *S, bool trans_a,
                                bool trans_b, double alpha, double beta) {
    return matmul_any(be, C, A, B, NULL, S, trans_a, trans_b, alpha, beta);
}

/* Plain grouped form: C [E,cap,N]; rows >= counts[e] end as beta*C: kept and restored around
 * the product, or (tail_zero: those rows of A are zero) left to the product itself, which
 * gives alpha*0*B + beta*C there. */
static chm_status grouped_plain(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                const chm_tensor *B, const chm_tensor *counts, bool trans_b,
                                double alpha, double beta, bool tail_zero) {
    const char *op = "matmul_grouped";
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    int64_t E = C->shape[0], cap = C->shape[1], N = C->shape[2], K = A->shape[2];
    void *keep = NULL;
    int *flag = cx->flag;
    if (beta != 0.0 && !tail_zero) {
        chm_status rc = chm_cuda_scratch(be, op, chm_tensor_nbytes(C), &keep);
        if (rc) return rc;
        rc = chm_cuda_check(be, op,
                            chm_cu_grouped_save(keep, chm_cuda_ptr(C), chm_cuda_ptr(counts), E, cap,
                                                N, C->dtype, flag, cx->stream));
        if (rc) return rc;
    }
    lt_problem p = {C->dtype,
                    false,
                    trans_b,
                    cap,
                    N,
                    K,
                    E,
                    cap * K,
                    B->shape[1] * B->shape[2],
                    cap * N,
                    chm_cuda_ptr(A),
                    chm_cuda_ptr(B),
                    NULL,
                    chm_cuda_ptr(C),
                    (float)alpha,
                    (float)beta,
                    NULL};
    chm_status rc = product(be, op, p);
    if (rc || tail_zero) return rc;
    return chm_cuda_check(be, op,
                          chm_cu_grouped_restore(chm_cuda_ptr(C), keep, chm_cuda_ptr(counts), E,
                                                 cap, N, beta, C->dtype, flag, cx->stream));
}

/* trans_a form: C [E,M,N] = alpha * A[e][:n]^T op(B[e])[:n] + beta C[e] via zero-masked copies,
 * or (tail_zero: A zero and B finite past n) straight from A and B, the tail adding zeros. */
static chm_status grouped_trans(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                const chm_tensor *B, const chm_tensor *counts, bool trans_b,
                                double alpha, double beta, bool tail_zero) {
    const char *op = "matmul_grouped";
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    int64_t E = C->shape[0], M = C->shape[1], N = C->shape[2], cap = A->shape[1];
    int64_t br = B->shape[1], bc = B->shape[2];
    if (tail_zero) {
        lt_problem q = {C->dtype, true, trans_b, M, N, cap, E, cap * M, br * bc, M * N,
                        chm_cuda_ptr(A), chm_cuda_ptr(B), NULL, chm_cuda_ptr(C), (float)alpha,
                        (float)beta, NULL};
        return product(be, op, q);
    }
    size_t na = (chm_tensor_nbytes(A) + 255) & ~(size_t)255;
    void *mem;
    chm_status rc = chm_cuda_scratch(be, op, na + chm_tensor_nbytes(B), &mem);
    if (rc) return rc;
    char *am = mem, *bm = am + na;
    const int32_t *cnt = chm_cuda_ptr(counts);
    cudaError_t e = chm_cu_grouped_mask(am, chm_cuda_ptr(A), cnt, E, cap, M, true, cap, A->dtype,
                                        cx->flag, cx->stream);
    if (e == cudaSuccess)
        e = chm_cu_grouped_mask(bm, chm_cuda_ptr(B), cnt, E, br, bc, !trans_b, cap, B->dtype,
                                cx->flag, cx->stream);
    if ((rc = chm_cuda_check(be, op, e))) return rc;
    lt_problem p = {C->dtype, true, trans_b, M, N, cap, E, cap * M, br * bc, M * N,
                    am, bm, NULL, chm_cuda_ptr(C), (float)alpha, (float)beta, NULL};
    return product(be, op, p);
}

chm_status chm_cuda_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                   const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                   bool trans_b, double alpha, double beta, bool tail_zero) {
    chm_status rc = chm_cuda_dtype(be, "matmul_grouped", C->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    if (C->shape[0] > INT32_MAX)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "matmul_grouped: too many groups");
    if (trans_a) return grouped_trans(be, C, A, B, counts, trans_b, alpha, beta, tail_zero);
    return grouped_plain(be, C, A, B, counts, trans_b, alpha, beta, tail_zero);
}
