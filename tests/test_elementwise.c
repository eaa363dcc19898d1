/*
 * test_elementwise.c: add, scale, axpy and sum_rows on the cpu backend.
 *
 * Each op runs in f32 and f64 at several shapes (odd sizes included) on random
 * inputs, outputs poisoned with NaN first, and is compared with a plain f64
 * loop here. These ops have no backward; sum_rows is itself a gradient op and
 * is checked to accumulate. The wrappers' rejections are checked last.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};

/* Shapes tried by every op (as [rows, cols] for sum_rows). */
static const int64_t SHAPES[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 5, 13}, {3, 1, 4}};
#define N_SHAPES 4

/* A tensor of dt and shape s (3-D) filled with random values; host copy in *h. */
static tt_tensor rand_tensor(chm_backend *be, tt_rng *r, chm_dtype dt, const int64_t *s,
                             double **h) {
    tt_tensor t = tt_alloc(be, dt, 3, s);
    int64_t n = chm_tensor_numel(&t.t);
    *h = tt_dalloc(n);
    tt_fill_uniform(r, *h, n, -2, 2);
    tt_upload(be, &t, *h);
    tt_download(be, &t, *h); /* the values as stored (f32 rounding) */
    return t;
}

Test(elementwise, add_matches_loop) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < N_SHAPES; s++) {
            double *ha, *hb;
            tt_tensor a = rand_tensor(be, &r, DTYPES[d], SHAPES[s], &ha);
            tt_tensor b = rand_tensor(be, &r, DTYPES[d], SHAPES[s], &hb);
            tt_tensor out = tt_alloc(be, DTYPES[d], 3, SHAPES[s]);
            int64_t n = chm_tensor_numel(&a.t);
            double *want = tt_dalloc(n), *got = tt_dalloc(n);
            for (int64_t i = 0; i < n; i++) want[i] = ha[i] + hb[i];
            tt_poison(be, &out);
            cr_assert_eq(chm_add(be, &out.t, &a.t, &b.t), CHM_OK, "%s", be->err.msg);
            tt_download(be, &out, got);
            tt_assert_close("add", got, want, n, TT_ATOL(DTYPES[d]), TT_RTOL(DTYPES[d]));
            /* in place: a = a + b */
            cr_assert_eq(chm_add(be, &a.t, &a.t, &b.t), CHM_OK, "%s", be->err.msg);
            tt_download(be, &a, got);
            tt_assert_close("add in place", got, want, n, TT_ATOL(DTYPES[d]), TT_RTOL(DTYPES[d]));
            free(ha), free(hb), free(want), free(got);
            tt_free(&a), tt_free(&b), tt_free(&out);
        }
    chm_backend_close(be);
}

Test(elementwise, scale_matches_loop) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(2);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < N_SHAPES; s++) {
            double *hx, alpha = tt_uniform(&r, -3, 3);
            tt_tensor x = rand_tensor(be, &r, DTYPES[d], SHAPES[s], &hx);
            tt_tensor out = tt_alloc(be, DTYPES[d], 3, SHAPES[s]);
            int64_t n = chm_tensor_numel(&x.t);
            double *want = tt_dalloc(n), *got = tt_dalloc(n);
            for (int64_t i = 0; i < n; i++) want[i] = alpha * hx[i];
            tt_poison(be, &out);
            cr_assert_eq(chm_scale(be, &out.t, &x.t, alpha), CHM_OK, "%s", be->err.msg);
            tt_download(be, &out, got);
            tt_assert_close("scale", got, want, n, TT_ATOL(DTYPES[d]), TT_RTOL(DTYPES[d]));
            cr_assert_eq(chm_scale(be, &x.t, &x.t, alpha), CHM_OK, "%s", be->err.msg);
            tt_download(be, &x, got);
            tt_assert_close("scale in place", got, want, n, TT_ATOL(DTYPES[d]), TT_RTOL(DTYPES[d]));
            free(hx), free(want), free(got);
            tt_free(&x), tt_free(&out);
        }
    chm_backend_close(be);
}

Test(elementwise, axpy_accumulates_across_shapes) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(3);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < N_SHAPES; s++) {
            double *hx, *hy, alpha = tt_uniform(&r, -3, 3);
            tt_tensor x = rand_tensor(be, &r, DTYPES[d], SHAPES[s], &hx);
            tt_tensor y = rand_tensor(be, &r, DTYPES[d], SHAPES[s], &hy);
            /* y as one flat dim: axpy needs the same element count, not the same shape */
            int64_t n = chm_tensor_numel(&x.t);
            y.t = chm_tensor_1d(y.buf, 0, DTYPES[d], n);
            double *want = tt_dalloc(n), *got = tt_dalloc(n);
            for (int64_t i = 0; i < n; i++) want[i] = hy[i] + alpha * hx[i];
            cr_assert_eq(chm_axpy(be, &y.t, &x.t, alpha), CHM_OK, "%s", be->err.msg);
            tt_download(be, &y, got);
            tt_assert_close("axpy", got, want, n, TT_ATOL(DTYPES[d]), TT_RTOL(DTYPES[d]));
            free(hx), free(hy), free(want), free(got);
            tt_free(&x), tt_free(&y);
        }
    chm_backend_close(be);
}

Test(elementwise, sum_rows_accumulates_column_sums) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(4);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < N_SHAPES; s++) {
            double *hx, *hg;
            tt_tensor x = rand_tensor(be, &r, DTYPES[d], SHAPES[s], &hx);
            int64_t C = SHAPES[s][2], R = SHAPES[s][0] * SHAPES[s][1];
            tt_tensor out = rand_tensor(be, &r, DTYPES[d], (int64_t[]){1, 1, C}, &hg);
            out.t = chm_tensor_1d(out.buf, 0, DTYPES[d], C);
            double *want = tt_dalloc(C), *got = tt_dalloc(C);
            for (int64_t c = 0; c < C; c++) {
                want[c] = hg[c]; /* G0 + column sum */
                for (int64_t i = 0; i < R; i++) want[c] += hx[i * C + c];
            }
            cr_assert_eq(chm_sum_rows(be, &out.t, &x.t), CHM_OK, "%s", be->err.msg);
            tt_download(be, &out, got);
            tt_assert_close("sum_rows", got, want, C, TT_ATOL(DTYPES[d]), TT_RTOL(DTYPES[d]));
            free(hx), free(hg), free(want), free(got);
            tt_free(&x), tt_free(&out);
        }
    chm_backend_close(be);
}

Test(elementwise, sum_rows_is_deterministic_on_many_rows) {
    /* Large enough for OpenMP: two runs must agree bit for bit. */
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(5);
    double *hx;
    tt_tensor x = rand_tensor(be, &r, CHM_F32, (int64_t[]){1, 4099, 37}, &hx);
    tt_tensor a = tt_alloc(be, CHM_F32, 1, (int64_t[]){37}),
              b = tt_alloc(be, CHM_F32, 1, (int64_t[]){37});
    float ga[37], gb[37];
    cr_assert_eq(chm_fill(be, &a.t, 0.5), CHM_OK);
    cr_assert_eq(chm_fill(be, &b.t, 0.5), CHM_OK);
    cr_assert_eq(chm_sum_rows(be, &a.t, &x.t), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_sum_rows(be, &b.t, &x.t), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_download(be, &a.t, ga), CHM_OK);
    cr_assert_eq(chm_download(be, &b.t, gb), CHM_OK);
    cr_assert(memcmp(ga, gb, sizeof ga) == 0, "sum_rows differs between two runs");
    free(hx);
    tt_free(&x), tt_free(&a), tt_free(&b);
    chm_backend_close(be);
}

Test(elementwise, wrappers_reject_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor a = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4}),
              b = tt_alloc(be, CHM_F32, 2, (int64_t[]){4, 3});
    tt_tensor d = tt_alloc(be, CHM_F64, 2, (int64_t[]){3, 4});
    tt_tensor v = tt_alloc(be, CHM_F32, 1, (int64_t[]){5});
    cr_assert_eq(chm_add(be, &a.t, &a.t, &b.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "add") && strstr(be->err.msg, " b "), "%s", be->err.msg);
    cr_assert_eq(chm_scale(be, &a.t, &d.t, 2.0), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "scale") && strstr(be->err.msg, " x "), "%s", be->err.msg);
    cr_assert_eq(chm_scale(be, &a.t, &a.t, NAN), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "alpha"), "%s", be->err.msg);
    cr_assert_eq(chm_axpy(be, &v.t, &a.t, 1.0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "axpy") && strstr(be->err.msg, "12"), "%s", be->err.msg);
    cr_assert_eq(chm_sum_rows(be, &v.t, &a.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "sum_rows") && strstr(be->err.msg, "out"), "%s", be->err.msg);
    /* an output shifted by one element overlaps its input in part */
    chm_tensor shifted = chm_tensor_2d(a.buf, 4, CHM_F32, 2, 3),
               head = chm_tensor_2d(a.buf, 0, CHM_F32, 2, 3);
    cr_assert_eq(chm_scale(be, &shifted, &head, 2.0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "scale") && strstr(be->err.msg, "in part"), "%s", be->err.msg);
    tt_free(&a), tt_free(&b), tt_free(&d), tt_free(&v);
    chm_backend_close(be);
}
