/*
 * matmul.c: matmul and grouped matmul of the cuda backend, on cuBLASLt.
 *
 * Row-major C [M,N] = op(A) op(B) is the column-major product
 * C^T [N,M] = op(B)^T op(A)^T, so cuBLASLt's "A" is our B and its "B" our A,
 * with the transposes carried over; nothing is copied. f32 runs in true f32
 * (CUBLAS_COMPUTE_32F, no TF32), bf16 and f16 with f32 accumulation. Batches
 * are strided (stride 0 broadcasts an operand). The bias is cuBLASLt's BIAS
 * epilogue when beta == 0 (one pass over C), else a small kernel after the
 * product. Heuristic results are cached per problem, so a training step asks
 * cuBLASLt only once per shape. When C is not read (beta 0), the first call
 * of a shape times cuBLASLt's top LT_TRIALS candidates on the real operands
 * and keeps the fastest if it beats the heuristic's first pick by 10% (the
 * margin keeps the choice stable from run to run): on an H100 the first pick
 * for chimera-1b's Mamba input projection (16384x2048x1024, B transposed)
 * ran at 119 TFLOP/s where the same layout with N 2816 ran at 712.
 * CHIMERA_CUDA_GEMM_TUNE=0 keeps the first pick. The workspace is allocated once.
 *
 * Grouped products (experts) run every group over its full capacity in one
 * strided-batch call, because the live counts are on the device and the host
 * must not wait for them; kernels of cuda/matmul.cu then make the result
 * exactly the contract's (see there): plain form, rows >= counts[e] are set
 * to beta*C (saved before the product when beta != 0); trans_a form, A and B
 * are copied with the rows past counts[e] zeroed so the sum stops there.
 */
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

#define LT_CACHE 256
#define LT_TRIALS 8 /* heuristic candidates timed on a shape's first call */

struct chm_cuda_lt_cache {
    lt_key key[LT_CACHE];
    cublasLtMatmulAlgo_t algo[LT_CACHE];
    bool used[LT_CACHE];
    int next;
};

/* One strided-batch product in our row-major terms (strides in elements, 0 = broadcast). */
typedef struct lt_problem {
    chm_dtype dt;
    bool ta, tb;
    int64_t M, N, K, batch, sa, sb, sc;
    const void *A, *B, *bias;
    void *C;
    float alpha, beta;
} lt_problem;

chm_status chm_cuda_lt_init(chm_backend *be) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    cublasStatus_t s = cublasLtCreate(&cx->lt);
    if (s != CUBLAS_STATUS_SUCCESS)
        return CHM_ERR(&be->err, CHM_ERR_DEVICE, "cannot create the cuBLASLt handle: %s",
                       cublasLtGetStatusString(s));
    cx->lt_cache = calloc(1, sizeof *cx->lt_cache);
    if (!cx->lt_cache) return CHM_ERR(&be->err, CHM_ERR_NOMEM, "cannot allocate the matmul cache");
    return chm_cuda_pool_alloc(be, CHM_CUDA_LT_WORKSPACE, &cx->lt_ws);
}

void chm_cuda_lt_free(chm_backend *be) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
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

/* The cache key of a problem. */
static lt_key lt_key_of(const lt_problem *p) {
    lt_key k;
    memset(&k, 0, sizeof k);
    size_t es = chm_dtype_size(p->dt);
    k.dt = (int)p->dt;
    k.ta = p->ta;
    k.tb = p->tb;
    k.epi = p->bias != NULL;
    k.m = p->M, k.n = p->N, k.k = p->K, k.batch = p->batch;
    k.sa = p->sa, k.sb = p->sb, k.sc = p->sc;
    k.align[0] = align_of(p->A, p->sa, es);
    k.align[1] = align_of(p->B, p->sb, es);
    k.align[2] = align_of(p->C, p->sc, es);
    return k;
}

/* Timing candidates overwrites C: only when C is not read, and not when switched off. */
static bool lt_tune_allowed(const lt_problem *p) {
    const char *v = getenv("CHIMERA_CUDA_GEMM_TUNE");
    return p->beta == 0.0f && !(v && strcmp(v, "0") == 0);
}

/* Device time of one run of p with algo (ms), or a negative number when it fails. */
static float lt_time(chm_cuda_ctx *cx, const lt_problem *p, const lt_descs *d,
                     const cublasLtMatmulAlgo_t *algo, cudaEvent_t e0, cudaEvent_t e1) {
    float ms = -1.0f;
    cudaEventRecord(e0, cx->stream);
    cublasStatus_t s = cublasLtMatmul(cx->lt, d->op, &p->alpha, p->B, d->a, p->A, d->b, &p->beta,
                                      p->C, d->c, p->C, d->c, algo, cx->lt_ws->ptr,
                                      cx->lt_ws->size, cx->stream);
    cudaEventRecord(e1, cx->stream);
    if (s == CUBLAS_STATUS_SUCCESS && cudaEventSynchronize(e1) == cudaSuccess &&
        cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
        ms = -1.0f;
    if (s != CUBLAS_STATUS_SUCCESS) ms = -1.0f;
    return ms;
}

/* The index of the fastest of n candidates (each run once after a warm-up of the first),
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
    int best = 0;
    float best_ms = first;
    for (int i = 1; i < n && first > 0; i++) {
        float ms = lt_time(cx, p, d, &res[i].algo, e0, e1);
        if (ms > 0 && ms < best_ms) best = i, best_ms = ms;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    (void)cudaGetLastError(); /* a failed candidate leaves no error behind */
    return best_ms < 0.9f * first ? best : 0;
}

/* The algorithm for p: from the cache, or from the heuristic (then cached). */
static cublasStatus_t lt_algo(chm_cuda_ctx *cx, const lt_problem *p, const lt_descs *d,
                              cublasLtMatmulAlgo_t *algo) {
    chm_cuda_lt_cache *c = cx->lt_cache;
    lt_key k = lt_key_of(p);
    for (int i = 0; i < LT_CACHE; i++)
        if (c->used[i] && memcmp(&c->key[i], &k, sizeof k) == 0) {
            *algo = c->algo[i];
            return CUBLAS_STATUS_SUCCESS;
        }
    cublasLtMatmulPreference_t pref;
    cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
    if (s) return s;
    size_t ws = cx->lt_ws->size;
    /* cuBLASLt's A is our B and its B our A: their alignments swap too */
    uint32_t al[3] = {k.align[1], k.align[0], k.align[2]};
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
    cublasLtMatmulHeuristicResult_t res[LT_TRIALS];
    int found = 0, want = lt_tune_allowed(p) ? LT_TRIALS : 1;
    if (!s)
        s = cublasLtMatmulAlgoGetHeuristic(cx->lt, d->op, d->a, d->b, d->c, d->c, pref, want, res,
                                           &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s) return s;
    if (found < 1) return CUBLAS_STATUS_NOT_SUPPORTED;
    int best = found > 1 ? lt_tune(cx, p, d, res, found) : 0;
    int i = c->next;
    c->next = (c->next + 1) % LT_CACHE;
    c->key[i] = k;
    c->algo[i] = res[best].algo;
    c->used[i] = true;
    *algo = res[best].algo;
    return CUBLAS_STATUS_SUCCESS;
}

/* Run one product; an error status when cuBLASLt has no algorithm for it (callers retry). */
static cublasStatus_t lt_run(chm_cuda_ctx *cx, const lt_problem *p) {
    lt_descs d;
    cublasLtMatmulAlgo_t algo;
    cublasStatus_t s = lt_descs_make(&d, p);
    if (!s) s = lt_algo(cx, p, &d, &algo);
    if (!s)
        s = cublasLtMatmul(cx->lt, d.op, &p->alpha, p->B, d.a, p->A, d.b, &p->beta, p->C, d.c,
                           p->C, d.c, &algo, cx->lt_ws->ptr, cx->lt_ws->size, cx->stream);
    lt_descs_free(&d);
    return s;
}

/* C = beta*C (+ bias) for an empty sum (K = 0 or alpha = 0); beta = 0 writes zeros. */
static chm_status empty_product(chm_backend *be, const char *op, const lt_problem *p) {
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    int64_t n = p->batch * p->M * p->N;
    cudaError_t e = p->beta == 0.0f
                        ? chm_cu_fill(p->C, n, (int)chm_dtype_size(p->dt), 0, cx->stream)
                        : chm_cu_scale(p->C, p->C, p->beta, n, p->dt, cx->stream);
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

chm_status chm_cuda_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                           const chm_tensor *B, const chm_tensor *bias, bool trans_a,
                           bool trans_b, double alpha, double beta) {
    chm_status rc = chm_cuda_dtype(be, "matmul", C->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    int64_t cb, M, N, ab, ar, ac, bb, br, bc;
    dims3(C, &cb, &M, &N);
    dims3(A, &ab, &ar, &ac);
    dims3(B, &bb, &br, &bc);
    lt_problem p = {C->dtype, trans_a, trans_b, M, N, trans_a ? ar : ac, cb,
                    ab == 1 ? 0 : ar * ac, bb == 1 ? 0 : br * bc, M * N,
                    chm_cuda_ptr(A), chm_cuda_ptr(B), chm_cuda_ptr(bias), chm_cuda_ptr(C),
                    (float)alpha, (float)beta};
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

/* Plain grouped form: C [E,cap,N]; rows >= counts[e] end as beta*C. */
static chm_status grouped_plain(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                const chm_tensor *B, const chm_tensor *counts, bool trans_b,
                                double alpha, double beta) {
    const char *op = "matmul_grouped";
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    int64_t E = C->shape[0], cap = C->shape[1], N = C->shape[2], K = A->shape[2];
    void *keep = NULL;
    int *flag = cx->flag;
    if (beta != 0.0) {
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
                    (float)beta};
    chm_status rc = product(be, op, p);
    if (rc) return rc;
    return chm_cuda_check(be, op,
                          chm_cu_grouped_restore(chm_cuda_ptr(C), keep, chm_cuda_ptr(counts), E,
                                                 cap, N, beta, C->dtype, flag, cx->stream));
}

/* trans_a form: C [E,M,N] = alpha * A[e][:n]^T op(B[e])[:n] + beta C[e] via zero-masked copies. */
static chm_status grouped_trans(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                const chm_tensor *B, const chm_tensor *counts, bool trans_b,
                                double alpha, double beta) {
    const char *op = "matmul_grouped";
    chm_cuda_ctx *cx = chm_cuda_ctx_of(be);
    int64_t E = C->shape[0], M = C->shape[1], N = C->shape[2], cap = A->shape[1];
    int64_t br = B->shape[1], bc = B->shape[2];
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
                    am, bm, NULL, chm_cuda_ptr(C), (float)alpha, (float)beta};
    return product(be, op, p);
}

chm_status chm_cuda_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                   const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                   bool trans_b, double alpha, double beta) {
    chm_status rc = chm_cuda_dtype(be, "matmul_grouped", C->dtype, CHM_CUDA_FLOATS);
    if (rc) return rc;
    if (C->shape[0] > INT32_MAX)
        return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "matmul_grouped: too many groups");
    if (trans_a) return grouped_trans(be, C, A, B, counts, trans_b, alpha, beta);
    return grouped_plain(be, C, A, B, counts, trans_b, alpha, beta);
}
