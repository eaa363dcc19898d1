/*
 * test_bce_logits.c: binary cross-entropy with logits on the cpu backend:
 * losses and gradients against a naive f64 formula (f32 and f64, odd sizes,
 * soft and hard targets, large |logits| staying finite), the gradient
 * against central differences of the op's own loss, dlogits aliasing
 * logits, the loss alone, and the wrapper's rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
static const int64_t SIZES[] = {1, 7, 13, 40000};

static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t, double lo, double hi) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, lo, hi);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

static double naive_loss(double x, double y) { return log(1 + exp(x)) - y * x; }

Test(bce_logits, matches_formula_and_finite_differences) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 4; s++) {
            chm_dtype dt = DTYPES[d];
            int64_t R = SIZES[s];
            tt_tensor x = tt_alloc(be, dt, 1, &R), y = tt_alloc(be, dt, 1, &R);
            tt_tensor l = tt_alloc(be, dt, 1, &R), g = tt_alloc(be, dt, 1, &R);
            double *hx = rand_upload(be, &rng, &x, -6, 6), *hy = rand_upload(be, &rng, &y, 0, 1);
            if (R > 3) hy[1] = 0, hy[2] = 1; /* hard targets too */
            tt_upload(be, &y, hy);
            double *wl = tt_dalloc(R), *wg = tt_dalloc(R), *got = tt_dalloc(R), scale = 0.37;
            for (int64_t i = 0; i < R; i++) {
                wl[i] = naive_loss(hx[i], hy[i]);
                wg[i] = scale * (1 / (1 + exp(-hx[i])) - hy[i]);
                if (d == 1 && i < 20) { /* the gradient is the derivative of the loss */
                    double h = 1e-6,
                           fd = (naive_loss(hx[i] + h, hy[i]) - naive_loss(hx[i] - h, hy[i])) /
                                (2 * h);
                    cr_assert(fabs(scale * fd - wg[i]) < 1e-8, "d/dx at %g: %g vs %g", hx[i],
                              scale * fd, wg[i]);
                }
            }
            tt_poison(be, &l);
            tt_poison(be, &g);
            cr_assert_eq(chm_bce_logits(be, &l.t, &g.t, &x.t, &y.t, scale), CHM_OK, "%s",
                         be->err.msg);
            tt_download(be, &l, got);
            tt_assert_close("bce losses", got, wl, R, TT_ATOL(dt), TT_RTOL(dt));
            tt_download(be, &g, got);
            tt_assert_close("bce dlogits", got, wg, R, TT_ATOL(dt), TT_RTOL(dt));
            /* loss only, then in place */
            cr_assert_eq(chm_bce_logits(be, &l.t, NULL, &x.t, &y.t, scale), CHM_OK);
            cr_assert_eq(chm_bce_logits(be, &l.t, &x.t, &x.t, &y.t, scale), CHM_OK);
            tt_download(be, &x, got);
            tt_assert_close("bce dlogits in place", got, wg, R, TT_ATOL(dt), TT_RTOL(dt));
            free(hx), free(hy), free(wl), free(wg), free(got);
            tt_free(&x), tt_free(&y), tt_free(&l), tt_free(&g);
        }
    chm_backend_close(be);
}

Test(bce_logits, extreme_logits_stay_finite) {
    chm_backend *be = tt_open_cpu();
    const double xv[] = {-800, -40, 40, 800}, yv[] = {0, 1, 0, 1};
    const double wl[] = {0, 40, 40, 0}, wg[] = {0, -1, 1, 0};
    for (int d = 0; d < 2; d++) {
        int64_t R = 4;
        tt_tensor x = tt_alloc(be, DTYPES[d], 1, &R), y = tt_alloc(be, DTYPES[d], 1, &R);
        tt_tensor l = tt_alloc(be, DTYPES[d], 1, &R), g = tt_alloc(be, DTYPES[d], 1, &R);
        tt_upload(be, &x, xv);
        tt_upload(be, &y, yv);
        cr_assert_eq(chm_bce_logits(be, &l.t, &g.t, &x.t, &y.t, 1.0), CHM_OK);
        double got[4];
        tt_download(be, &l, got);
        tt_assert_close("bce extreme losses", got, wl, 4, 1e-6, 1e-6);
        tt_download(be, &g, got);
        tt_assert_close("bce extreme grads", got, wg, 4, 1e-6, 1e-6);
        tt_free(&x), tt_free(&y), tt_free(&l), tt_free(&g);
    }
    chm_backend_close(be);
}

Test(bce_logits, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    int64_t R = 5, R4 = 4;
    tt_tensor x = tt_alloc(be, CHM_F32, 1, &R), y = tt_alloc(be, CHM_F32, 1, &R);
    tt_tensor l = tt_alloc(be, CHM_F32, 1, &R), l4 = tt_alloc(be, CHM_F32, 1, &R4);
    tt_tensor y64 = tt_alloc(be, CHM_F64, 1, &R), yi = tt_alloc(be, CHM_I32, 1, &R);
    cr_assert_eq(chm_bce_logits(be, &l4.t, NULL, &x.t, &y.t, 1), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "bce_logits: losses"), "%s", be->err.msg);
    cr_assert_eq(chm_bce_logits(be, &l.t, NULL, &x.t, &y64.t, 1), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "bce_logits: targets"), "%s", be->err.msg);
    cr_assert_eq(chm_bce_logits(be, &l.t, NULL, &yi.t, &y.t, 1), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "bce_logits: logits"), "%s", be->err.msg);
    cr_assert_eq(chm_bce_logits(be, &l.t, &l.t, &x.t, &y.t, 1), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "bce_logits: losses and dlogits overlap"), "%s", be->err.msg);
    cr_assert_eq(chm_bce_logits(be, &l.t, NULL, &x.t, &y.t, NAN), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "bce_logits: grad_scale"), "%s", be->err.msg);
    tt_free(&x), tt_free(&y), tt_free(&l), tt_free(&l4), tt_free(&y64), tt_free(&yi);
    chm_backend_close(be);
}
