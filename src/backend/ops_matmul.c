/*
 * ops_matmul.c: checked wrappers of matmul and grouped matmul (contracts in backend.h).
 *
 * Both ops view A, B and C as [batch, rows, cols]. With op(A) [M,K] (A stored
 * [K,M] when trans_a) and op(B) [K,N] (B stored [N,K] when trans_b), C must be
 * [M,N] per batch entry. matmul: batch of A and of B is 1 (broadcast) or C's;
 * bias is [N]. matmul_from: matmul whose beta term reads S (C's shape), a copy
 * and matmul where the backend has no fused form. matmul_grouped: all three are
 * [E, ., .] and counts is [E] I32.
 */
#include <math.h>

#include "check.h"
#include "profile.h"

/* K, M and N of a product, read off A and B (after their transposes). */
typedef struct mm_dims {
    int64_t M, K, N;
} mm_dims;

/* Product of all dims but the last two (1 for a 2-D tensor). */
static int64_t batch_of(const chm_tensor *t) {
    int64_t b = 1;
    for (int i = 0; i < t->ndim - 2; i++) b *= t->shape[i];
    return b;
}

/* t has ndim dims, any leading ones, and its last two are (r, c); CHM_ANY skips one. */
static chm_status check_last2(chm_backend *be, const char *op, const char *name,
                              const chm_tensor *t, chm_dtype dt, int64_t r, int64_t c) {
    int64_t want[CHM_MAX_DIMS] = {CHM_ANY, CHM_ANY, CHM_ANY, CHM_ANY};
    int nd = t->ndim;
    if (nd < 2)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE, "%s: %s must have 2 to %d dims, got %d", op, name,
                       CHM_MAX_DIMS, nd);
    want[nd - 2] = r;
    want[nd - 1] = c;
    return chm_check_shape(be, op, name, t, dt, nd, want);
}

/* Dtypes, ranks and the M/K/N relations between A, B and C; scalars finite; no overlaps. */
static chm_status check_product(chm_backend *be, const char *op, const chm_tensor *C,
                                const chm_tensor *A, const chm_tensor *B, bool trans_a,
                                bool trans_b, double alpha, double beta, mm_dims *d) {
    CHM_TRY(chm_check_float(be, op, "C", C));
    CHM_TRY(check_last2(be, op, "A", A, C->dtype, CHM_ANY, CHM_ANY));
    int64_t ar = A->shape[A->ndim - 2], ac = A->shape[A->ndim - 1];
    d->M = trans_a ? ac : ar;
    d->K = trans_a ? ar : ac;
    CHM_TRY(
        check_last2(be, op, "B", B, C->dtype, trans_b ? CHM_ANY : d->K, trans_b ? d->K : CHM_ANY));
    d->N = B->shape[B->ndim - (trans_b ? 2 : 1)];
    CHM_TRY(check_last2(be, op, "C", C, C->dtype, d->M, d->N));
    CHM_TRY(chm_check_arg(be, op, isfinite(alpha) && isfinite(beta),
                          "alpha and beta must be finite, got %g and %g", alpha, beta));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(C, A), "C overlaps A"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(C, B), "C overlaps B"));
    return CHM_OK;
}

/* An operand's batch is 1 (broadcast) or C's. */
static chm_status check_batch(chm_backend *be, const char *name, const chm_tensor *t, int64_t cb) {
    int64_t b = batch_of(t);
    if (b == 1 || b == cb) return CHM_OK;
    return CHM_ERR(&be->err, CHM_ERR_SHAPE,
                   "matmul: %s has batch %lld but C has batch %lld; it must be 1 (broadcast) "
                   "or %lld",
                   name, (long long)b, (long long)cb, (long long)cb);
}

chm_status chm_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                      const chm_tensor *B, const chm_tensor *bias, bool trans_a, bool trans_b,
                      double alpha, double beta) {
    CHM_TRY(chm_check_impl(be, "matmul", be->ops->matmul != NULL));
    mm_dims d;
    CHM_TRY(check_product(be, "matmul", C, A, B, trans_a, trans_b, alpha, beta, &d));
    int64_t cb = batch_of(C);
    CHM_TRY(check_batch(be, "A", A, cb));
    CHM_TRY(check_batch(be, "B", B, cb));
    if (bias) {
        CHM_TRY(chm_check_shape(be, "matmul", "bias", bias, C->dtype, 1, CHM_DIMS(d.N)));
        CHM_TRY(chm_check_arg(be, "matmul", !chm_tensors_overlap(C, bias), "C overlaps bias"));
    }
    const char *label = "matmul";
    if (be->profile) label = chm_profile_gemm_label(be, label, d.M, d.N, d.K, cb, trans_a, trans_b);
    return chm_fault_after(be, label, C,
                           be->ops->matmul(be, C, A, B, bias, trans_a, trans_b, alpha, beta));
}

/* Same dtype, rank and shape. */
static bool same_shape(const chm_tensor *a, const chm_tensor *b) {
    if (a->dtype != b->dtype || a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

chm_status chm_matmul_from(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                           const chm_tensor *B, const chm_tensor *S, bool trans_a, bool trans_b,
                           double alpha, double beta) {
    const char *op = "matmul_from";
    CHM_TRY(chm_check_tensor(be, op, "S", S));
    CHM_TRY(chm_check_float(be, op, "C", C));
    CHM_TRY(chm_check_arg(be, op, same_shape(S, C), "S must have C's dtype and shape"));
    bool same = S->buf == C->buf && S->offset == C->offset;
    CHM_TRY(chm_check_arg(be, op, same || !chm_tensors_overlap(S, C),
                          "S overlaps C without being C"));
    if (same || be->ops->matmul_from == NULL) {
        if (!same) CHM_TRY(chm_copy(be, C, S));
        return chm_matmul(be, C, A, B, NULL, trans_a, trans_b, alpha, beta);
    }
    mm_dims d;
    CHM_TRY(check_product(be, op, C, A, B, trans_a, trans_b, alpha, beta, &d));
    int64_t cb = batch_of(C);
    CHM_TRY(check_batch(be, "A", A, cb));
    CHM_TRY(check_batch(be, "B", B, cb));
    const char *label = "matmul";
    if (be->profile) label = chm_profile_gemm_label(be, label, d.M, d.N, d.K, cb, trans_a, trans_b);
    return chm_fault_after(be, label, C,
                           be->ops->matmul_from(be, C, A, B, S, trans_a, trans_b, alpha, beta));
}

static chm_status matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                 const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                 bool trans_b, double alpha, double beta, bool tail_zero) {
    const char *op = "matmul_grouped";
    CHM_TRY(chm_check_impl(be, op, be->ops->matmul_grouped != NULL));
    CHM_TRY(chm_check_shape(be, op, "A", A, CHM_ANY_DTYPE, 3, CHM_DIMS(CHM_ANY, CHM_ANY, CHM_ANY)));
    int64_t E = A->shape[0];
    CHM_TRY(chm_check_shape(be, op, "B", B, CHM_ANY_DTYPE, 3, CHM_DIMS(E, CHM_ANY, CHM_ANY)));
    CHM_TRY(chm_check_shape(be, op, "C", C, CHM_ANY_DTYPE, 3, CHM_DIMS(E, CHM_ANY, CHM_ANY)));
    mm_dims d;
    CHM_TRY(check_product(be, op, C, A, B, trans_a, trans_b, alpha, beta, &d));
    CHM_TRY(chm_check_shape(be, op, "counts", counts, CHM_I32, 1, CHM_DIMS(E)));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(C, counts), "C overlaps counts"));
    /* (the label's flops count every expert at its full row capacity: a bound) */
    const char *label = op;
    if (be->profile) label = chm_profile_gemm_label(be, op, d.M, d.N, d.K, E, trans_a, trans_b);
    return chm_fault_after(be, label, C,
                           be->ops->matmul_grouped(be, C, A, B, counts, trans_a, trans_b, alpha,
                                                   beta, tail_zero));
}

chm_status chm_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                              const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                              bool trans_b, double alpha, double beta) {
    return matmul_grouped(be, C, A, B, counts, trans_a, trans_b, alpha, beta, false);
}

chm_status chm_matmul_grouped_tail_zero(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                        const chm_tensor *B, const chm_tensor *counts,
                                        bool trans_a, bool trans_b, double alpha, double beta) {
    return matmul_grouped(be, C, A, B, counts, trans_a, trans_b, alpha, beta, true);
}
