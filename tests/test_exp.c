/*
 * test_exp.c: exp_fwd/exp_bwd (out = alpha*exp(x); dx += dout*out) on the
 * cpu backend: forward against a loop in f32 and f64 at odd shapes with
 * alpha = -1 (Mamba's A) and 2.5, in place, the backward against central
 * differences in f64 (accumulating), and the wrapper's rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
static const int64_t SHAPES[][2] = {{1, 1}, {7, 3}, {13, 16}, {200, 200}};

static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t, double lo, double hi) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, lo, hi);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

Test(exp, forward_matches_loop_and_runs_in_place) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    const double alphas[] = {-1.0, 2.5};
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 4; s++)
            for (int a = 0; a < 2; a++) {
                chm_dtype dt = DTYPES[d];
                tt_tensor x = tt_alloc(be, dt, 2, SHAPES[s]), out = tt_alloc(be, dt, 2, SHAPES[s]);
                int64_t n = chm_tensor_numel(&x.t);
                double *hx = rand_upload(be, &rng, &x, -3, 3), *want = tt_dalloc(n),
                       *got = tt_dalloc(n);
                for (int64_t i = 0; i < n; i++) want[i] = alphas[a] * exp(hx[i]);
                tt_poison(be, &out);
                cr_assert_eq(chm_exp_fwd(be, &out.t, &x.t, alphas[a]), CHM_OK, "%s", be->err.msg);
                tt_download(be, &out, got);
                tt_assert_close("exp_fwd", got, want, n, TT_ATOL(dt), TT_RTOL(dt));
                cr_assert_eq(chm_exp_fwd(be, &x.t, &x.t, alphas[a]), CHM_OK);
                tt_download(be, &x, got);
                tt_assert_close("exp_fwd in place", got, want, n, TT_ATOL(dt), TT_RTOL(dt));
                free(hx), free(want), free(got);
                tt_free(&x), tt_free(&out);
            }
    chm_backend_close(be);
}

Test(exp, backward_matches_finite_differences_and_accumulates) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    for (int s = 0; s < 3; s++) {
        tt_tensor x = tt_alloc(be, CHM_F64, 2, SHAPES[s]),
                  out = tt_alloc(be, CHM_F64, 2, SHAPES[s]);
        tt_tensor w = tt_alloc(be, CHM_F64, 2, SHAPES[s]), dx = tt_alloc(be, CHM_F64, 2, SHAPES[s]);
        int64_t n = chm_tensor_numel(&x.t);
        double *hx = rand_upload(be, &rng, &x, -2, 2), *hw = rand_upload(be, &rng, &w, -1, 1);
        double *g0 = rand_upload(be, &rng, &dx, -1, 1), *want = tt_dalloc(n), *got = tt_dalloc(n);
        cr_assert_eq(chm_exp_fwd(be, &out.t, &x.t, -1.0), CHM_OK);
        cr_assert_eq(chm_exp_bwd(be, &dx.t, &w.t, &out.t), CHM_OK, "%s", be->err.msg);
        /* L = sum(w * -exp(x)); elements are independent, so perturb one at a time on the host */
        for (int64_t i = 0; i < n; i++) {
            double h = 1e-6;
            want[i] = g0[i] + hw[i] * (-exp(hx[i] + h) + exp(hx[i] - h)) / (2 * h);
        }
        tt_download(be, &dx, got);
        cr_assert(tt_rel_l2(got, want, n) < 1e-6, "dx: %g", tt_rel_l2(got, want, n));
        /* and through the op itself for one element */
        double y[2];
        tt_tensor one = tt_alloc(be, CHM_F64, 1, (int64_t[]){1}),
                  oo = tt_alloc(be, CHM_F64, 1, (int64_t[]){1});
        double v = hx[0] + 1e-6;
        tt_upload(be, &one, &v);
        cr_assert_eq(chm_exp_fwd(be, &oo.t, &one.t, -1.0), CHM_OK);
        tt_download(be, &oo, &y[0]);
        v = hx[0] - 1e-6;
        tt_upload(be, &one, &v);
        cr_assert_eq(chm_exp_fwd(be, &oo.t, &one.t, -1.0), CHM_OK);
        tt_download(be, &oo, &y[1]);
        cr_assert(fabs(g0[0] + hw[0] * (y[0] - y[1]) / 2e-6 - got[0]) < 1e-7 * (1 + fabs(got[0])));
        free(hx), free(hw), free(g0), free(want), free(got);
        tt_free(&x), tt_free(&out), tt_free(&w), tt_free(&dx), tt_free(&one), tt_free(&oo);
    }
    chm_backend_close(be);
}

Test(exp, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor x = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4}),
              o = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4});
    tt_tensor o5 = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 5}),
              i = tt_alloc(be, CHM_I32, 2, (int64_t[]){3, 4});
    cr_assert_eq(chm_exp_fwd(be, &o5.t, &x.t, 1), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "exp_fwd: out"), "%s", be->err.msg);
    cr_assert_eq(chm_exp_fwd(be, &o.t, &i.t, 1), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "exp_fwd: x"), "%s", be->err.msg);
    cr_assert_eq(chm_exp_fwd(be, &o.t, &x.t, INFINITY), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "exp_fwd: alpha"), "%s", be->err.msg);
    cr_assert_eq(chm_exp_bwd(be, &o.t, &o.t, &x.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "exp_bwd: dx overlaps dout"), "%s", be->err.msg);
    tt_free(&x), tt_free(&o), tt_free(&o5), tt_free(&i);
    chm_backend_close(be);
}
