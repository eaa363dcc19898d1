/*
 * test_matmul.c: matmul and grouped matmul on the cpu backend.
 *
 * Every case is compared with a plain f64 triple loop written here: all four
 * transpose combinations, odd shapes (M=7, K=13, N=5), batches with A or B
 * broadcast, 4-D batches, bias, alpha/beta accumulation, beta = 0 over a C
 * full of NaN, K = 0, and grouped products with per-group live counts
 * (0, partial, full) in both the plain and the trans_a (weight-gradient)
 * form; matmul_from with its beta term read from another tensor (and from C
 * itself), and its argument checks. A linear layer Y = X W^T + b is differentiated with matmul and
 * sum_rows and checked against central finite differences in f64.
 */
#include "testutil.h"

#include <stdio.h>

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};

/* One matmul case: C [batch,M,N], A with batch ab, B with batch bb (1 = broadcast). */
typedef struct mm_case {
    int64_t batch, ab, bb, M, K, N;
    bool ta, tb, bias;
    double alpha, beta;
} mm_case;

/* op(A)[m,k] and op(B)[k,n] of one batch entry stored row-major. */
static double at_a(const double *A, bool ta, int64_t M, int64_t K, int64_t m, int64_t k) {
    return ta ? A[k * M + m] : A[m * K + k];
}
static double at_b(const double *B, bool tb, int64_t K, int64_t N, int64_t k, int64_t n) {
    return tb ? B[n * K + k] : B[k * N + n];
}

/* The reference: C = alpha op(A) op(B) + beta C0 (beta 0 ignores C0) + bias. */
static void ref_matmul(double *C, const double *C0, const double *A, const double *B,
                       const double *bias, const mm_case *c) {
    int64_t M = c->M, K = c->K, N = c->N;
    for (int64_t b = 0; b < c->batch; b++) {
        const double *Ab = A + (c->ab == 1 ? 0 : b * M * K), *Bb = B + (c->bb == 1 ? 0 : b * K * N);
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += at_a(Ab, c->ta, M, K, m, k) * at_b(Bb, c->tb, K, N, k, n);
                int64_t i = (b * M + m) * N + n;
                C[i] = c->alpha * s + (c->beta == 0 ? 0 : c->beta * C0[i]) + (bias ? bias[n] : 0);
            }
    }
}

/* A [batch?, r, c] tensor: 2-D when batch is 1, else 3-D. */
static tt_tensor alloc_mat(chm_backend *be, chm_dtype dt, int64_t batch, int64_t r, int64_t c) {
    if (batch == 1) return tt_alloc(be, dt, 2, (int64_t[]){r, c});
    return tt_alloc(be, dt, 3, (int64_t[]){batch, r, c});
}

/* Random host values uploaded into t; the host copy keeps the stored (rounded) values. */
static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, -1, 1);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

static void run_case(chm_backend *be, chm_dtype dt, const mm_case *c, tt_rng *r) {
    tt_tensor A =
        c->ta ? alloc_mat(be, dt, c->ab, c->K, c->M) : alloc_mat(be, dt, c->ab, c->M, c->K);
    tt_tensor B =
        c->tb ? alloc_mat(be, dt, c->bb, c->N, c->K) : alloc_mat(be, dt, c->bb, c->K, c->N);
    tt_tensor C = alloc_mat(be, dt, c->batch, c->M, c->N), bias = tt_alloc(be, dt, 1, &c->N);
    double *ha = rand_upload(be, r, &A), *hb = rand_upload(be, r, &B);
    double *hbias = rand_upload(be, r, &bias), *hc0 = rand_upload(be, r, &C);
    if (c->beta == 0) tt_poison(be, &C); /* beta = 0 must ignore even NaN */
    int64_t n = chm_tensor_numel(&C.t);
    double *want = tt_dalloc(n), *got = tt_dalloc(n);
    ref_matmul(want, hc0, ha, hb, c->bias ? hbias : NULL, c);
    cr_assert_eq(
        chm_matmul(be, &C.t, &A.t, &B.t, c->bias ? &bias.t : NULL, c->ta, c->tb, c->alpha, c->beta),
        CHM_OK, "%s", be->err.msg);
    tt_download(be, &C, got);
    char what[160];
    snprintf(what, sizeof what, "matmul %s batch %lld (A %lld, B %lld) M%lld K%lld N%lld ta%d tb%d",
             chm_dtype_name(dt), (long long)c->batch, (long long)c->ab, (long long)c->bb,
             (long long)c->M, (long long)c->K, (long long)c->N, c->ta, c->tb);
    tt_assert_close(what, got, want, n, TT_ATOL(dt) * 10, TT_RTOL(dt));
    free(ha), free(hb), free(hbias), free(hc0), free(want), free(got);
    tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&bias);
}

/* Run c in f32 and f64 for all four transpose combinations. */
static void run_all(chm_backend *be, mm_case c, tt_rng *r) {
    for (int d = 0; d < 2; d++)
        for (int t = 0; t < 4; t++) {
            c.ta = t & 1;
            c.tb = t & 2;
            run_case(be, DTYPES[d], &c, r);
        }
}

Test(matmul, transposes_at_odd_shapes) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(1);
    const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {4, 3, 2}, {1, 9, 6}};
    for (int s = 0; s < 4; s++)
        run_all(be, (mm_case){1, 1, 1, shapes[s][0], shapes[s][1], shapes[s][2], 0, 0, 0, 1, 0},
                &r);
    chm_backend_close(be);
}

Test(matmul, batches_and_broadcast) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(2);
    run_all(be, (mm_case){3, 1, 3, 7, 13, 5, 0, 0, 0, 1, 0}, &r); /* A broadcast */
    run_all(be, (mm_case){3, 3, 1, 7, 13, 5, 0, 0, 0, 1, 0}, &r); /* B broadcast (folded) */
    run_all(be, (mm_case){3, 3, 3, 7, 13, 5, 0, 0, 0, 1, 0}, &r); /* both batched */
    run_all(be, (mm_case){2, 1, 1, 3, 4, 5, 0, 0, 0, 1, 0}, &r);  /* both broadcast */
    chm_backend_close(be);
}

Test(matmul, bias_alpha_beta_accumulate) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(3);
    run_all(be, (mm_case){1, 1, 1, 7, 13, 5, 0, 0, 1, 1, 0}, &r);      /* bias */
    run_all(be, (mm_case){3, 3, 1, 7, 13, 5, 0, 0, 1, 0.5, 0}, &r);    /* bias, batch */
    run_all(be, (mm_case){3, 1, 3, 7, 13, 5, 0, 0, 0, -0.5, 1.5}, &r); /* accumulate */
    run_all(be, (mm_case){2, 2, 2, 4, 3, 6, 0, 0, 1, 2.0, 1.0}, &r);   /* both */
    run_all(be, (mm_case){1, 1, 1, 5, 3, 4, 0, 0, 1, 0.0, 0.25}, &r);  /* alpha 0 */
    chm_backend_close(be);
}

Test(matmul, beta_zero_ignores_nan_and_k_zero_scales) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(4);
    run_all(be, (mm_case){2, 2, 2, 7, 13, 5, 0, 0, 0, 1, 0}, &r); /* C poisoned, beta 0 */
    run_all(be, (mm_case){2, 2, 2, 7, 0, 5, 0, 0, 1, 1, 0}, &r);  /* K = 0: zeros + bias */
    run_all(be, (mm_case){2, 2, 1, 7, 0, 5, 0, 0, 0, 1, -2}, &r); /* K = 0: beta*C */
    chm_backend_close(be);
}

/* chm_matmul_from: C = alpha op(A)op(B) + beta S with S another tensor (C poisoned first, S
   unchanged after), or S = C itself (plain accumulate). */
static void run_from_case(chm_backend *be, chm_dtype dt, const mm_case *c, bool s_is_c,
                          tt_rng *r) {
    tt_tensor A =
        c->ta ? alloc_mat(be, dt, c->ab, c->K, c->M) : alloc_mat(be, dt, c->ab, c->M, c->K);
    tt_tensor B =
        c->tb ? alloc_mat(be, dt, c->bb, c->N, c->K) : alloc_mat(be, dt, c->bb, c->K, c->N);
    tt_tensor C = alloc_mat(be, dt, c->batch, c->M, c->N), S = alloc_mat(be, dt, c->batch, c->M, c->N);
    double *ha = rand_upload(be, r, &A), *hb = rand_upload(be, r, &B);
    double *hs = rand_upload(be, r, s_is_c ? &C : &S);
    if (!s_is_c) tt_poison(be, &C);
    int64_t n = chm_tensor_numel(&C.t);
    double *want = tt_dalloc(n), *got = tt_dalloc(n);
    ref_matmul(want, hs, ha, hb, NULL, c);
    const tt_tensor *src = s_is_c ? &C : &S;
    cr_assert_eq(chm_matmul_from(be, &C.t, &A.t, &B.t, &src->t, c->ta, c->tb, c->alpha, c->beta),
                 CHM_OK, "%s", be->err.msg);
    tt_download(be, &C, got);
    char what[160];
    snprintf(what, sizeof what, "matmul_from %s S%s M%lld K%lld N%lld ta%d tb%d",
             chm_dtype_name(dt), s_is_c ? "=C" : "", (long long)c->M, (long long)c->K,
             (long long)c->N, c->ta, c->tb);
    tt_assert_close(what, got, want, n, TT_ATOL(dt) * 10, TT_RTOL(dt));
    if (!s_is_c) {
        tt_download(be, &S, got);
        tt_assert_close("matmul_from leaves S alone", got, hs, n, 0, 0);
    }
    free(ha), free(hb), free(hs), free(want), free(got);
    tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&S);
}

Test(matmul, from_reads_the_beta_term_from_S) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(8);
    const mm_case cases[] = {{1, 1, 1, 7, 13, 5, 0, 0, 0, 1, 1},
                             {3, 3, 1, 4, 3, 6, 0, 0, 0, -0.5, 1.5},
                             {2, 1, 2, 5, 9, 3, 0, 0, 0, 2, 0}};
    for (int i = 0; i < 3; i++)
        for (int d = 0; d < 2; d++)
            for (int t = 0; t < 4; t++) {
                mm_case c = cases[i];
                c.ta = t & 1;
                c.tb = t & 2;
                run_from_case(be, DTYPES[d], &c, false, &r);
                run_from_case(be, DTYPES[d], &c, true, &r);
            }
    chm_backend_close(be);
}

Test(matmul, from_rejects_a_bad_S) {
    chm_backend *be = tt_open_cpu();
    tt_tensor A = tt_alloc(be, CHM_F32, 2, (int64_t[]){7, 13}),
              B = tt_alloc(be, CHM_F32, 2, (int64_t[]){13, 5});
    tt_tensor C = tt_alloc(be, CHM_F32, 2, (int64_t[]){7, 5}),
              S6 = tt_alloc(be, CHM_F32, 2, (int64_t[]){7, 6}),
              Sd = tt_alloc(be, CHM_F64, 2, (int64_t[]){7, 5});
    cr_assert_eq(chm_matmul_from(be, &C.t, &A.t, &B.t, &S6.t, false, false, 1, 1),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "matmul_from: S must have C's dtype and shape"), "%s",
              be->err.msg);
    cr_assert_eq(chm_matmul_from(be, &C.t, &A.t, &B.t, &Sd.t, false, false, 1, 1),
                 CHM_ERR_INVALID_ARG);
    tt_tensor big = tt_alloc(be, CHM_F32, 1, (int64_t[]){40});
    chm_tensor Cv = chm_tensor_2d(big.buf, 0, CHM_F32, 7, 5);
    chm_tensor Sv = chm_tensor_2d(big.buf, 4 * sizeof(float), CHM_F32, 7, 5); /* shifted 4 */
    cr_assert_eq(chm_matmul_from(be, &Cv, &A.t, &B.t, &Sv, false, false, 1, 1),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "matmul_from: S overlaps C"), "%s", be->err.msg);
    tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&S6), tt_free(&Sd), tt_free(&big);
    chm_backend_close(be);
}

Test(matmul, four_dim_batch) {
    /* C [2,3,M,N] = A [2,3,M,K] B [K,N]: the batch is the product of the leading dims. */
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(5);
    for (int d = 0; d < 2; d++) {
        chm_dtype dt = DTYPES[d];
        tt_tensor A = tt_alloc(be, dt, 4, (int64_t[]){2, 3, 7, 13});
        tt_tensor B = tt_alloc(be, dt, 2, (int64_t[]){13, 5});
        tt_tensor C = tt_alloc(be, dt, 4, (int64_t[]){2, 3, 7, 5});
        double *ha = rand_upload(be, &r, &A), *hb = rand_upload(be, &r, &B);
        mm_case c = {6, 6, 1, 7, 13, 5, 0, 0, 0, 1, 0};
        double *want = tt_dalloc(6 * 35), *got = tt_dalloc(6 * 35);
        ref_matmul(want, NULL, ha, hb, NULL, &c);
        tt_poison(be, &C);
        cr_assert_eq(chm_matmul(be, &C.t, &A.t, &B.t, NULL, false, false, 1, 0), CHM_OK, "%s",
                     be->err.msg);
        tt_download(be, &C, got);
        tt_assert_close("matmul 4-D", got, want, 6 * 35, TT_ATOL(dt) * 10, TT_RTOL(dt));
        free(ha), free(hb), free(want), free(got);
        tt_free(&A), tt_free(&B), tt_free(&C);
    }
    chm_backend_close(be);
}

/* ---- grouped ---- */

/* One grouped case: E groups of capacity cap; M, K, N as in backend.h's two forms. */
typedef struct grp_case {
    int64_t E, cap, M, K, N;
    bool ta, tb;
    double alpha, beta;
} grp_case;

/*
 * Reference: without ta, C [E,cap,N], rows < cnt get alpha A B + beta C0, the
 * rest beta C0; with ta, C [E,M,N] = alpha sum_{k < cnt} A[k,m] op(B)[k,n] + beta C0.
 */
static void ref_grouped(double *C, const double *C0, const double *A, const double *B,
                        const int32_t *cnt, const grp_case *g) {
    int64_t rows = g->ta ? g->M : g->cap, Kd = g->ta ? g->cap : g->K, N = g->N;
    for (int64_t e = 0; e < g->E; e++) {
        const double *Ae = A + e * rows * Kd, *Be = B + e * Kd * N;
        for (int64_t m = 0; m < rows; m++)
            for (int64_t n = 0; n < N; n++) {
                int64_t i = (e * rows + m) * N + n;
                double s = 0;
                int64_t klim = g->ta ? cnt[e] : (m < cnt[e] ? Kd : 0);
                for (int64_t k = 0; k < klim; k++)
                    s += at_a(Ae, g->ta, rows, Kd, m, k) * at_b(Be, g->tb, Kd, N, k, n);
                C[i] = g->alpha * s + (g->beta == 0 ? 0 : g->beta * C0[i]);
            }
    }
}

/* tail_zero: A's rows past the counts zeroed, then the tail-zero form (the same results). */
static void run_grouped(chm_backend *be, chm_dtype dt, const grp_case *g, const int32_t *cnt,
                        tt_rng *r, bool tail_zero) {
    int64_t rows = g->ta ? g->M : g->cap, Kd = g->ta ? g->cap : g->K;
    tt_tensor A = tt_alloc(be, dt, 3, (int64_t[]){g->E, g->cap, g->ta ? g->M : g->K});
    tt_tensor B =
        tt_alloc(be, dt, 3, g->tb ? (int64_t[]){g->E, g->N, Kd} : (int64_t[]){g->E, Kd, g->N});
    tt_tensor C = tt_alloc(be, dt, 3, (int64_t[]){g->E, rows, g->N});
    tt_tensor counts = tt_alloc(be, CHM_I32, 1, &g->E);
    tt_upload_i32(be, &counts, cnt);
    double *ha = rand_upload(be, r, &A), *hb = rand_upload(be, r, &B),
           *hc0 = rand_upload(be, r, &C);
    if (g->beta == 0) tt_poison(be, &C);
    if (tail_zero) {
        int64_t acols = g->ta ? g->M : g->K;
        for (int64_t e = 0; e < g->E; e++)
            for (int64_t k = cnt[e] * acols; k < g->cap * acols; k++)
                ha[e * g->cap * acols + k] = 0;
        tt_upload(be, &A, ha);
    }
    int64_t n = chm_tensor_numel(&C.t);
    double *want = tt_dalloc(n), *got = tt_dalloc(n);
    ref_grouped(want, hc0, ha, hb, cnt, g);
    chm_status rc =
        tail_zero ? chm_matmul_grouped_tail_zero(be, &C.t, &A.t, &B.t, &counts.t, g->ta, g->tb,
                                                 g->alpha, g->beta)
                  : chm_matmul_grouped(be, &C.t, &A.t, &B.t, &counts.t, g->ta, g->tb, g->alpha,
                                       g->beta);
    cr_assert_eq(rc, CHM_OK, "%s", be->err.msg);
    tt_download(be, &C, got);
    char what[96];
    snprintf(what, sizeof what, "matmul_grouped%s %s ta%d tb%d beta %g",
             tail_zero ? " tail-zero" : "", chm_dtype_name(dt), g->ta, g->tb, g->beta);
    tt_assert_close(what, got, want, n, TT_ATOL(dt) * 10, TT_RTOL(dt));
    free(ha), free(hb), free(hc0), free(want), free(got);
    tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&counts);
}

Test(matmul, grouped_with_live_counts) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(6);
    const int32_t cnt[] = {0, 6, 3, 1}; /* empty, full, partial, one row */
    for (int d = 0; d < 2; d++)
        for (int t = 0; t < 8; t++) {
            grp_case g = {4, 6, 0, 5, 7, false, t & 1, 0.75, t & 2 ? 0.5 : 0};
            g.ta = t & 4;
            g.M = 3; /* used by the trans_a form only */
            run_grouped(be, DTYPES[d], &g, cnt, &r, false);
            run_grouped(be, DTYPES[d], &g, cnt, &r, true);
        }
    chm_backend_close(be);
}

/* The tail-zero form's promise, checked: a nonzero A row past the count, or (trans_a) a
   non-finite B row there, is refused with the element named and C untouched. */
Test(matmul, grouped_tail_zero_refuses_a_broken_promise) {
    chm_backend *be = tt_open_cpu();
    tt_tensor A = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 3, 2}),
              B = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 2, 2});
    tt_tensor Bt = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 3, 2});
    tt_tensor C = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 3, 2}),
              Ct = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 2, 2});
    tt_tensor cnt = tt_alloc(be, CHM_I32, 1, (int64_t[]){2});
    tt_upload_i32(be, &cnt, (int32_t[]){1, 3});
    double a[12] = {1, 2, 0, 0, 0, 0, 3, 4, 5, 6, 7, 8}, ones[12], c0[12], c[12];
    for (int i = 0; i < 12; i++) ones[i] = 1, c0[i] = 0.5 * i;
    tt_upload(be, &A, a), tt_upload(be, &B, ones), tt_upload(be, &Bt, ones);
    tt_upload(be, &C, c0);
    cr_assert_eq(chm_matmul_grouped_tail_zero(be, &C.t, &A.t, &B.t, &cnt.t, false, false, 1, 1),
                 CHM_OK, "%s", be->err.msg);
    a[5] = 0.25; /* group 0, row 2: past counts[0] = 1 */
    tt_upload(be, &A, a);
    tt_upload(be, &C, c0);
    cr_assert_eq(chm_matmul_grouped_tail_zero(be, &C.t, &A.t, &B.t, &cnt.t, false, false, 1, 1),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "A[0, 2, 1] = 0.25 lies past counts[0]") != NULL, "%s",
              be->err.msg);
    tt_download(be, &C, c);
    tt_assert_close("C untouched", c, c0, 12, 0, 0);
    a[5] = 0;
    ones[4] = NAN; /* trans_a: B's group 0, row 2 */
    tt_upload(be, &A, a), tt_upload(be, &Bt, ones);
    cr_assert_eq(chm_matmul_grouped_tail_zero(be, &Ct.t, &A.t, &Bt.t, &cnt.t, true, false, 1, 0),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "group 0, row 2") && strstr(be->err.msg, "not finite"), "%s",
              be->err.msg);
    tt_free(&A), tt_free(&B), tt_free(&Bt), tt_free(&C), tt_free(&Ct), tt_free(&cnt);
    chm_backend_close(be);
}

Test(matmul, grouped_rejects_counts_out_of_range) {
    chm_backend *be = tt_open_cpu();
    tt_tensor A = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 6, 5}),
              B = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 5, 4});
    tt_tensor C = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 6, 4}),
              cnt = tt_alloc(be, CHM_I32, 1, (int64_t[]){2});
    tt_tensor fcnt = tt_alloc(be, CHM_F32, 1, (int64_t[]){2});
    const int32_t over[] = {2, 7}, under[] = {-1, 0};
    tt_upload_i32(be, &cnt, over);
    cr_assert_eq(chm_matmul_grouped(be, &C.t, &A.t, &B.t, &cnt.t, false, false, 1, 0),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "matmul_grouped") && strstr(be->err.msg, "counts[1] = 7"), "%s",
              be->err.msg);
    tt_upload_i32(be, &cnt, under);
    cr_assert_eq(chm_matmul_grouped(be, &C.t, &A.t, &B.t, &cnt.t, false, false, 1, 0),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "counts[0] = -1"), "%s", be->err.msg);
    cr_assert_eq(chm_matmul_grouped(be, &C.t, &A.t, &B.t, &fcnt.t, false, false, 1, 0),
                 CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "matmul_grouped") && strstr(be->err.msg, "counts"), "%s",
              be->err.msg);
    chm_tensor B3 = chm_tensor_3d(B.buf, 0, CHM_F32, 1, 5, 4);
    cr_assert_eq(chm_matmul_grouped(be, &C.t, &A.t, &B3, &cnt.t, false, false, 1, 0),
                 CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "matmul_grouped: B"), "%s", be->err.msg);
    tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&cnt), tt_free(&fcnt);
    chm_backend_close(be);
}

/* ---- a linear layer's backward, by finite differences ---- */

/* Y [R,O] = X [R,I] W^T + b, W [O,I], b [O]. */
typedef struct linear {
    chm_backend *be;
    tt_tensor X, W, b, Y, G;
    double *hx, *hw, *hb, *hg;
    int64_t R, I, O;
} linear;

/* L = sum(Y * G) for the current host X, W, b, computed with matmul. */
static double linear_loss(linear *l) {
    tt_upload(l->be, &l->X, l->hx);
    tt_upload(l->be, &l->W, l->hw);
    tt_upload(l->be, &l->b, l->hb);
    cr_assert_eq(chm_matmul(l->be, &l->Y.t, &l->X.t, &l->W.t, &l->b.t, false, true, 1, 0), CHM_OK,
                 "%s", l->be->err.msg);
    double *y = tt_dalloc(l->R * l->O), L = 0;
    tt_download(l->be, &l->Y, y);
    for (int64_t i = 0; i < l->R * l->O; i++) L += y[i] * l->hg[i];
    free(y);
    return L;
}

/* dL/dv for each element of host array v by central differences. */
static void fd_grad(linear *l, double *v, int64_t n, double *grad) {
    for (int64_t i = 0; i < n; i++) {
        double v0 = v[i], h = 1e-6 * fmax(1.0, fabs(v0));
        v[i] = v0 + h;
        double lp = linear_loss(l);
        v[i] = v0 - h;
        double lm = linear_loss(l);
        v[i] = v0;
        grad[i] = (lp - lm) / (2 * h);
    }
}

/* t starts at random G0; after the backward it must hold G0 + fd. */
static void check_grad(linear *l, const char *what, const tt_tensor *t, const double *g0,
                       const double *fd, int64_t n) {
    double *got = tt_dalloc(n), *want = tt_dalloc(n);
    tt_download(l->be, t, got);
    for (int64_t i = 0; i < n; i++) want[i] = g0[i] + fd[i];
    double err = tt_rel_l2(got, want, n);
    cr_assert(err < 1e-6, "%s: relative L2 error %g against finite differences", what, err);
    tt_assert_close(what, got, want, n, 1e-6, 1e-6);
    free(got), free(want);
}

Test(matmul, linear_layer_backward_matches_finite_differences) {
    linear l = {.be = tt_open_cpu(), .R = 7, .I = 5, .O = 3};
    tt_rng r = tt_rng_make(7);
    chm_dtype dt = CHM_F64;
    l.X = tt_alloc(l.be, dt, 2, (int64_t[]){l.R, l.I});
    l.W = tt_alloc(l.be, dt, 2, (int64_t[]){l.O, l.I});
    l.b = tt_alloc(l.be, dt, 1, &l.O);
    l.Y = tt_alloc(l.be, dt, 2, (int64_t[]){l.R, l.O});
    l.G = tt_alloc(l.be, dt, 2, (int64_t[]){l.R, l.O});
    l.hx = rand_upload(l.be, &r, &l.X), l.hw = rand_upload(l.be, &r, &l.W);
    l.hb = rand_upload(l.be, &r, &l.b), l.hg = rand_upload(l.be, &r, &l.G);
    /* gradients start at random G0: the backward accumulates */
    tt_tensor dX = tt_alloc(l.be, dt, 2, (int64_t[]){l.R, l.I}),
              dW = tt_alloc(l.be, dt, 2, (int64_t[]){l.O, l.I});
    tt_tensor db = tt_alloc(l.be, dt, 1, &l.O);
    double *gx = rand_upload(l.be, &r, &dX), *gw = rand_upload(l.be, &r, &dW),
           *gb = rand_upload(l.be, &r, &db);
    /* dX += dY W, dW += dY^T X, db += sum_rows(dY), with dY = G */
    cr_assert_eq(chm_matmul(l.be, &dX.t, &l.G.t, &l.W.t, NULL, false, false, 1, 1), CHM_OK);
    cr_assert_eq(chm_matmul(l.be, &dW.t, &l.G.t, &l.X.t, NULL, true, false, 1, 1), CHM_OK);
    cr_assert_eq(chm_sum_rows(l.be, &db.t, &l.G.t), CHM_OK, "%s", l.be->err.msg);
    double *fx = tt_dalloc(l.R * l.I), *fw = tt_dalloc(l.O * l.I), *fb = tt_dalloc(l.O);
    fd_grad(&l, l.hx, l.R * l.I, fx);
    fd_grad(&l, l.hw, l.O * l.I, fw);
    fd_grad(&l, l.hb, l.O, fb);
    check_grad(&l, "dX", &dX, gx, fx, l.R * l.I);
    check_grad(&l, "dW", &dW, gw, fw, l.O * l.I);
    check_grad(&l, "db", &db, gb, fb, l.O);
    free(l.hx), free(l.hw), free(l.hb), free(l.hg), free(gx), free(gw), free(gb);
    free(fx), free(fw), free(fb);
    tt_free(&l.X), tt_free(&l.W), tt_free(&l.b), tt_free(&l.Y), tt_free(&l.G);
    tt_free(&dX), tt_free(&dW), tt_free(&db);
    chm_backend_close(l.be);
}

Test(matmul, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor A = tt_alloc(be, CHM_F32, 2, (int64_t[]){7, 13}),
              B = tt_alloc(be, CHM_F32, 2, (int64_t[]){12, 5});
    tt_tensor C = tt_alloc(be, CHM_F32, 3, (int64_t[]){3, 7, 5}),
              A2 = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 7, 13});
    tt_tensor B13 = tt_alloc(be, CHM_F32, 2, (int64_t[]){13, 5}),
              bias = tt_alloc(be, CHM_F32, 1, (int64_t[]){4});
    tt_tensor Ad = tt_alloc(be, CHM_F64, 2, (int64_t[]){7, 13}),
              v = tt_alloc(be, CHM_F32, 1, (int64_t[]){13});
    tt_tensor H = tt_alloc(be, CHM_BF16, 2, (int64_t[]){4, 4});
    cr_assert_eq(chm_matmul(be, &C.t, &A.t, &B.t, NULL, false, false, 1, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "matmul: B must have shape [13, *]"), "%s", be->err.msg);
    cr_assert_eq(chm_matmul(be, &C.t, &A2.t, &B13.t, NULL, false, false, 1, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "matmul: A has batch 2"), "%s", be->err.msg);
    cr_assert_eq(chm_matmul(be, &C.t, &A.t, &B13.t, &bias.t, false, false, 1, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "matmul: bias"), "%s", be->err.msg);
    cr_assert_eq(chm_matmul(be, &C.t, &Ad.t, &B13.t, NULL, false, false, 1, 0), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "matmul: A must be f32"), "%s", be->err.msg);
    cr_assert_eq(chm_matmul(be, &C.t, &v.t, &B13.t, NULL, false, false, 1, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "matmul: A must have 2 to 4 dims"), "%s", be->err.msg);
    cr_assert_eq(chm_matmul(be, &C.t, &A.t, &B13.t, NULL, false, false, NAN, 0),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "matmul: alpha"), "%s", be->err.msg);
    chm_tensor Cin = chm_tensor_2d(A.buf, 0, CHM_F32, 7, 5); /* C inside A's bytes */
    cr_assert_eq(chm_matmul(be, &Cin, &A.t, &B13.t, NULL, false, false, 1, 0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "matmul: C overlaps A"), "%s", be->err.msg);
    cr_assert_eq(chm_matmul(be, &H.t, &H.t, &H.t, NULL, false, false, 1, 0), CHM_ERR_INVALID_ARG);
    tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&A2), tt_free(&B13), tt_free(&bias);
    tt_free(&Ad), tt_free(&v), tt_free(&H);
    chm_backend_close(be);
}
