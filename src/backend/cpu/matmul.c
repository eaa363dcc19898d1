/*
 * matmul.c: the cpu backend's matmul and grouped matmul, on CBLAS.
 *
 * Every product is one row-major cblas_sgemm/cblas_dgemm call per batch entry
 * (or per expert group) through product() below, which also owns the cases
 * BLAS does not cover the way backend.h says:
 *  - beta = 0 must ignore C's old contents, NaN included: C is zeroed first
 *    instead of trusting the BLAS to skip reading it;
 *  - an empty sum (K = 0, or a group with no live rows) still sets C = beta*C;
 *  - the bias add is done here, after the product.
 * Shapes (checked by ops_matmul.c): op(A) [M,K], op(B) [K,N], C [M,N] per
 * batch entry, A or B with batch 1 broadcast over C's batch.
 */
#include "cpu.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* One batch entry's rows x cols and the number of entries (product of leading dims). */
typedef struct mat_dims {
    int64_t batch, rows, cols;
} mat_dims;

static mat_dims dims_of(const chm_tensor *t) {
    mat_dims d = {1, t->shape[t->ndim - 2], t->shape[t->ndim - 1]};
    for (int i = 0; i < t->ndim - 2; i++) d.batch *= t->shape[i];
    return d;
}

/* C [rows,N] *= beta, with beta = 0 writing zeros whatever C held (NaN included). */
static void scale_c(chm_dtype dt, void *C, int64_t rows, int64_t N, double beta) {
    if (beta == 1.0) return;
    if (beta == 0.0) {
        memset(C, 0, (size_t)(rows * N) * chm_dtype_size(dt)); /* 0.0 is all-zero bits */
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        if (dt == CHM_F32)
            cblas_sscal((blasint)N, (float)beta, (float *)C + r * N, 1);
        else
            cblas_dscal((blasint)N, beta, (double *)C + r * N, 1);
    }
}

/*
 * C [M,N] = alpha * op(A) op(B) + beta * C, row-major; lda/ldb are the row
 * strides of A and B as stored. Sizes fit in blasint (checked by callers).
 */
static void product(chm_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                    const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C) {
    if (M == 0 || N == 0) return;
    scale_c(dt, C, M, N, beta);
    if (K == 0 || alpha == 0.0) return; /* the product adds nothing */
    enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
    /* C already holds beta*C, so the GEMM accumulates with beta 1. */
    if (dt == CHM_F32)
        cblas_sgemm(CblasRowMajor, opa, opb, (blasint)M, (blasint)N, (blasint)K, (float)alpha, A,
                    (blasint)lda, B, (blasint)ldb, 1.0f, C, (blasint)N);
    else
        cblas_dgemm(CblasRowMajor, opa, opb, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                    (blasint)lda, B, (blasint)ldb, 1.0, C, (blasint)N);
}

/* C [rows,N] += bias [N] on every row. */
static void add_bias(chm_dtype dt, void *C, const void *bias, int64_t rows, int64_t N) {
    for (int64_t r = 0; r < rows; r++) {
        if (dt == CHM_F32)
            cblas_saxpy((blasint)N, 1.0f, bias, 1, (float *)C + r * N, 1);
        else
            cblas_daxpy((blasint)N, 1.0, bias, 1, (double *)C + r * N, 1);
    }
}

/* CBLAS takes int sizes: refuse what does not fit rather than wrap around. */
static chm_status check_blas_dims(chm_backend *be, const char *op, int64_t a, int64_t b,
                                  int64_t c) {
    if (a <= INT_MAX && b <= INT_MAX && c <= INT_MAX) return CHM_OK;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                   "%s: dims %lld x %lld x %lld exceed the cpu backend's CBLAS int range", op,
                   (long long)a, (long long)b, (long long)c);
}

chm_status chm_cpu_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                          const chm_tensor *B, const chm_tensor *bias, bool trans_a, bool trans_b,
                          double alpha, double beta) {
    chm_dtype dt = C->dtype;
    if (dt != CHM_F32 && dt != CHM_F64) return chm_cpu_bad_dtype(be, "matmul", dt);
    mat_dims c = dims_of(C), a = dims_of(A), b = dims_of(B);
    int64_t M = c.rows, N = c.cols, K = trans_a ? a.rows : a.cols, batch = c.batch;
    size_t es = chm_dtype_size(dt);
    /* A shared B and a stacked, untransposed A fold the batch into M: one GEMM. */
    if (b.batch == 1 && a.batch == batch && !trans_a && batch * M <= INT_MAX) {
        M *= batch;
        batch = 1;
    }
    chm_status rc = check_blas_dims(be, "matmul", M, N, K);
    if (rc) return rc;
    char *pc = chm_cpu_ptr(C);
    const char *pa = chm_cpu_ptr(A), *pb = chm_cpu_ptr(B);
    size_t sa = a.batch == 1 ? 0 : (size_t)(a.rows * a.cols) * es;
    size_t sb = b.batch == 1 ? 0 : (size_t)(b.rows * b.cols) * es;
    size_t sc = (size_t)(M * N) * es;
    for (int64_t i = 0; i < batch; i++) {
        product(dt, trans_a, trans_b, M, N, K, alpha, pa + i * sa, a.cols, pb + i * sb, b.cols,
                beta, pc + i * sc);
        if (bias) add_bias(dt, pc + i * sc, chm_cpu_ptr(bias), M, N);
    }
    return CHM_OK;
}

/* counts[e] must lie in [0, cap]: the wrapper cannot read device memory, so check here. */
static chm_status check_counts(chm_backend *be, const int32_t *counts, int64_t E, int64_t cap) {
    for (int64_t e = 0; e < E; e++)
        if (counts[e] < 0 || counts[e] > cap)
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "matmul_grouped: counts[%lld] = %d is outside [0, %lld] (capacity)",
                           (long long)e, counts[e], (long long)cap);
    return CHM_OK;
}

/* Element i of an f32 or f64 tensor. */
static double elem_at(const chm_tensor *t, int64_t i) {
    return t->dtype == CHM_F64 ? ((const double *)chm_cpu_ptr(t))[i]
                               : (double)((const float *)chm_cpu_ptr(t))[i];
}

/* The tail-zero promise (chm_matmul_grouped_tail_zero): rows >= counts[e] of A zero, and with
   trans_a those of B (its columns there with trans_b) finite. The cpu, the reference, holds
   callers to it. */
static chm_status check_tail(chm_backend *be, const chm_tensor *A, const chm_tensor *B,
                             const int32_t *counts, bool trans_a, bool trans_b) {
    int64_t E = A->shape[0], cap = A->shape[1], ac = A->shape[2];
    int64_t bn = trans_b ? B->shape[1] : B->shape[2]; /* B's other dim: N */
    for (int64_t e = 0; e < E; e++)
        for (int64_t r = counts[e]; r < cap; r++) {
            for (int64_t c = 0; c < ac; c++) {
                double v = elem_at(A, (e * cap + r) * ac + c);
                if (v != 0.0)
                    return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                                   "matmul_grouped: A[%lld, %lld, %lld] = %g lies past "
                                   "counts[%lld] = %d but is not zero, as the tail-zero form "
                                   "promises",
                                   (long long)e, (long long)r, (long long)c, v, (long long)e,
                                   counts[e]);
            }
            for (int64_t c = 0; trans_a && c < bn; c++) {
                int64_t i = trans_b ? (e * bn + c) * cap + r : (e * cap + r) * bn + c;
                double v = elem_at(B, i);
                if (!isfinite(v))
                    return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                                   "matmul_grouped: B's element %lld (group %lld, row %lld past "
                                   "counts) is %g, not finite, as the tail-zero form promises",
                                   (long long)i, (long long)e, (long long)r, v);
            }
        }
    return CHM_OK;
}

/*
 * Per group e with n = counts[e] live rows:
 *  without trans_a: C[e][:n] = alpha*A[e][:n] op(B[e]) + beta*C[e][:n],
 *                   C[e][n:] = beta*C[e][n:];
 *  with trans_a:    C[e] = alpha*A[e][:n]^T op(B[e])[:n] + beta*C[e] (the sum over cap stops at n).
 */
chm_status chm_cpu_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                  const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                  bool trans_b, double alpha, double beta, bool tail_zero) {
    chm_dtype dt = C->dtype;
    if (dt != CHM_F32 && dt != CHM_F64) return chm_cpu_bad_dtype(be, "matmul_grouped", dt);
    int64_t E = C->shape[0], M = C->shape[1], N = C->shape[2];
    int64_t cap = A->shape[1], acols = A->shape[2], bcols = B->shape[2];
    const int32_t *cnt = chm_cpu_ptr(counts);
    chm_status rc = check_counts(be, cnt, E, cap);
    if (!rc && tail_zero) rc = check_tail(be, A, B, cnt, trans_a, trans_b);
    if (!rc) rc = check_blas_dims(be, "matmul_grouped", M, N, trans_a ? cap : acols);
    if (rc) return rc;
    size_t es = chm_dtype_size(dt);
    size_t sa = (size_t)(cap * acols) * es, sb = (size_t)(B->shape[1] * bcols) * es;
    size_t sc = (size_t)(M * N) * es;
    const char *pa = chm_cpu_ptr(A), *pb = chm_cpu_ptr(B);
    char *pc = chm_cpu_ptr(C);
    for (int64_t e = 0; e < E; e++) {
        int64_t n = cnt[e];
        const char *ae = pa + e * sa, *b_e = pb + e * sb;
        char *ce = pc + e * sc;
        if (trans_a) {
            product(dt, true, trans_b, M, N, n, alpha, ae, acols, b_e, bcols, beta, ce);
        } else {
            product(dt, false, trans_b, n, N, acols, alpha, ae, acols, b_e, bcols, beta, ce);
            scale_c(dt, ce + (size_t)(n * N) * es, M - n, N, beta);
        }
    }
    return CHM_OK;
}
