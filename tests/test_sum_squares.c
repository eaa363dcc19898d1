/*
 * test_sum_squares.c: sum of squares against a naive double loop for odd
 * sizes (1 to 100003, across the 4096-element blocks), every x/out dtype
 * pair, multi-dimensional and empty x, repeatability, and the checks.
 */
#include "testutil.h"

static const chm_dtype dts[] = {CHM_F32, CHM_F64};

/* sum_squares of n random values of dtype xdt into an out of dtype odt, checked. */
static void ss_case(chm_backend *be, chm_dtype xdt, chm_dtype odt, int nd, const int64_t *shape,
                    tt_rng *rng) {
    tt_tensor x = tt_alloc(be, xdt, nd, shape);
    tt_tensor out = tt_alloc(be, odt, 1, (int64_t[]){1});
    int64_t n = chm_tensor_numel(&x.t);
    double *h = tt_dalloc(n), want = 0, got;
    tt_fill_uniform(rng, h, n, -2, 2);
    tt_upload(be, &x, h);
    tt_download(be, &x, h);
    for (int64_t i = 0; i < n; i++) want += h[i] * h[i];
    tt_poison(be, &out);
    cr_assert_eq(chm_sum_squares(be, &out.t, &x.t), CHM_OK, "%s", be->err.msg);
    tt_download(be, &out, &got);
    double rtol = odt == CHM_F32 ? 1e-6 : 1e-12;
    cr_assert(isfinite(got) && fabs(got - want) <= rtol * want,
              "n=%lld %s->%s: %.17g, expected %.17g", (long long)n, chm_dtype_name(xdt),
              chm_dtype_name(odt), got, want);
    tt_free(&x);
    tt_free(&out);
    free(h);
}

Test(sum_squares, matches_naive_for_odd_sizes) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(41);
    static const int64_t sizes[] = {1, 3, 7, 4096, 4097, 100003};
    for (size_t a = 0; a < 2; a++)
        for (size_t b = 0; b < 2; b++)
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
                ss_case(be, dts[a], dts[b], 1, &sizes[i], &rng);
    ss_case(be, CHM_F32, CHM_F32, 3, (int64_t[]){3, 5, 7}, &rng);
    ss_case(be, CHM_F64, CHM_F64, 4, (int64_t[]){2, 3, 13, 1}, &rng);
    chm_backend_close(be);
}

Test(sum_squares, empty_input_gives_zero) {
    chm_backend *be = tt_open_cpu();
    tt_tensor x = tt_alloc(be, CHM_F32, 2, (int64_t[]){0, 4});
    tt_tensor out = tt_alloc(be, CHM_F64, 1, (int64_t[]){1});
    double got = NAN;
    tt_poison(be, &out);
    cr_assert_eq(chm_sum_squares(be, &out.t, &x.t), CHM_OK, "%s", be->err.msg);
    tt_download(be, &out, &got);
    cr_assert(got == 0, "sum of squares of nothing: %g", got);
    tt_free(&x);
    tt_free(&out);
    chm_backend_close(be);
}

Test(sum_squares, repeated_calls_are_bitwise_equal) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(42);
    int64_t n = 200001;
    tt_tensor x = tt_alloc(be, CHM_F32, 1, &n);
    tt_tensor out = tt_alloc(be, CHM_F64, 1, (int64_t[]){1});
    double *h = tt_dalloc(n), first, again;
    tt_fill_uniform(&rng, h, n, -1, 1);
    tt_upload(be, &x, h);
    cr_assert_eq(chm_sum_squares(be, &out.t, &x.t), CHM_OK, "%s", be->err.msg);
    tt_download(be, &out, &first);
    for (int rep = 0; rep < 3; rep++) {
        cr_assert_eq(chm_sum_squares(be, &out.t, &x.t), CHM_OK, "%s", be->err.msg);
        tt_download(be, &out, &again);
        cr_assert(memcmp(&first, &again, sizeof first) == 0, "%.17g then %.17g", first, again);
    }
    tt_free(&x);
    tt_free(&out);
    free(h);
    chm_backend_close(be);
}

Test(sum_squares, wrapper_rejects_bad_out_and_x) {
    chm_backend *be = tt_open_cpu();
    tt_tensor x = tt_alloc(be, CHM_F32, 1, (int64_t[]){8});
    tt_tensor xi = tt_alloc(be, CHM_I32, 1, (int64_t[]){8});
    tt_tensor o2 = tt_alloc(be, CHM_F32, 1, (int64_t[]){2});
    tt_tensor ob = tt_alloc(be, CHM_BF16, 1, (int64_t[]){1});
    chm_tensor o1 = chm_tensor_1d(o2.buf, 0, CHM_F32, 1);
    cr_assert_eq(chm_sum_squares(be, &o2.t, &x.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "sum_squares: out must have one element") != NULL, "%s",
              be->err.msg);
    cr_assert_eq(chm_sum_squares(be, &ob.t, &x.t), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "sum_squares: out must be f32 or f64") != NULL, "%s",
              be->err.msg);
    cr_assert_eq(chm_sum_squares(be, &o1, &xi.t), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "sum_squares: x must be a float tensor") != NULL, "%s",
              be->err.msg);
    chm_tensor inside = chm_tensor_1d(x.buf, 4, CHM_F32, 1);
    cr_assert_eq(chm_sum_squares(be, &inside, &x.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "sum_squares: out and x overlap") != NULL, "%s", be->err.msg);
    tt_free(&x);
    tt_free(&xi);
    tt_free(&o2);
    tt_free(&ob);
    chm_backend_close(be);
}
