/*
 * test_rmsnorm.c: RMSNorm forward and backward on the cpu backend.
 *
 * Forward against a plain f64 loop (out and rstd) in f32 and f64 at odd shapes;
 * backward against central finite differences of L = sum(out * Rw) in f64
 * (the gradients start at random values and must accumulate), and the f32
 * backward against the f64 one; then the wrapper's rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
#define EPS 1e-5

/* Shapes of x (3-D, so rows are the product of the first two dims). */
static const int64_t SHAPES[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 5, 13}};

/* Random host values uploaded into t; the host copy keeps the stored (rounded) values. */
static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t, double lo, double hi) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, lo, hi);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

/* The reference forward on host arrays: x [R,C], w [C] -> out [R,C], rstd [R]. */
static void ref_fwd(double *out, double *rstd, const double *x, const double *w, int64_t R,
                    int64_t C) {
    for (int64_t r = 0; r < R; r++) {
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += x[r * C + c] * x[r * C + c];
        rstd[r] = 1 / sqrt(ss / C + EPS);
        for (int64_t c = 0; c < C; c++) out[r * C + c] = x[r * C + c] * rstd[r] * w[c];
    }
}

Test(rmsnorm, forward_matches_loop) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 3; s++) {
            chm_dtype dt = DTYPES[d];
            int64_t C = SHAPES[s][2], R = SHAPES[s][0] * SHAPES[s][1];
            tt_tensor x = tt_alloc(be, dt, 3, SHAPES[s]), out = tt_alloc(be, dt, 3, SHAPES[s]);
            tt_tensor w = tt_alloc(be, dt, 1, &C), rstd = tt_alloc(be, dt, 2, SHAPES[s]);
            double *hx = rand_upload(be, &rng, &x, -2, 2),
                   *hw = rand_upload(be, &rng, &w, 0.5, 1.5);
            double *want = tt_dalloc(R * C), *wr = tt_dalloc(R), *got = tt_dalloc(R * C),
                   *gr = tt_dalloc(R);
            ref_fwd(want, wr, hx, hw, R, C);
            tt_poison(be, &out);
            tt_poison(be, &rstd);
            cr_assert_eq(chm_rmsnorm_fwd(be, &out.t, &rstd.t, &x.t, &w.t, EPS), CHM_OK, "%s",
                         be->err.msg);
            tt_download(be, &out, got);
            tt_download(be, &rstd, gr);
            tt_assert_close("rmsnorm out", got, want, R * C, TT_ATOL(dt), TT_RTOL(dt));
            tt_assert_close("rmsnorm rstd", gr, wr, R, TT_ATOL(dt), TT_RTOL(dt));
            free(hx), free(hw), free(want), free(wr), free(got), free(gr);
            tt_free(&x), tt_free(&out), tt_free(&w), tt_free(&rstd);
        }
    chm_backend_close(be);
}

/* Everything one backward check needs; host arrays are perturbed for differences. */
typedef struct rms_ctx {
    chm_backend *be;
    tt_tensor x, w, out, rstd;
    double *hx, *hw, *hr; /* hr: the loss weights Rw */
    int64_t R, C;
} rms_ctx;

/* L = sum(out * Rw) for the current host x and w, through the backend's forward. */
static double loss(rms_ctx *c) {
    tt_upload(c->be, &c->x, c->hx);
    tt_upload(c->be, &c->w, c->hw);
    cr_assert_eq(chm_rmsnorm_fwd(c->be, &c->out.t, &c->rstd.t, &c->x.t, &c->w.t, EPS), CHM_OK);
    double *y = tt_dalloc(c->R * c->C), L = 0;
    tt_download(c->be, &c->out, y);
    for (int64_t i = 0; i < c->R * c->C; i++) L += y[i] * c->hr[i];
    free(y);
    return L;
}

static void fd_grad(rms_ctx *c, double *v, int64_t n, double *grad) {
    for (int64_t i = 0; i < n; i++) {
        double v0 = v[i], h = 1e-6 * fmax(1.0, fabs(v0));
        v[i] = v0 + h;
        double lp = loss(c);
        v[i] = v0 - h;
        double lm = loss(c);
        v[i] = v0;
        grad[i] = (lp - lm) / (2 * h);
    }
}

/* Set up x, w, Rw and random starting gradients; run the backward once into dx, dw. */
static rms_ctx setup(chm_backend *be, chm_dtype dt, const int64_t *shape, tt_rng *rng,
                     tt_tensor *dx, tt_tensor *dw, double **gx, double **gw) {
    rms_ctx c = {.be = be, .R = shape[0] * shape[1], .C = shape[2]};
    c.x = tt_alloc(be, dt, 3, shape), c.out = tt_alloc(be, dt, 3, shape);
    c.w = tt_alloc(be, dt, 1, &c.C), c.rstd = tt_alloc(be, dt, 1, &c.R);
    tt_tensor dout = tt_alloc(be, dt, 3, shape);
    c.hx = rand_upload(be, rng, &c.x, -2, 2), c.hw = rand_upload(be, rng, &c.w, 0.5, 1.5);
    c.hr = rand_upload(be, rng, &dout, -1, 1);
    *dx = tt_alloc(be, dt, 3, shape), *dw = tt_alloc(be, dt, 1, &c.C);
    *gx = rand_upload(be, rng, dx, -1, 1), *gw = rand_upload(be, rng, dw, -1, 1);
    cr_assert_eq(chm_rmsnorm_fwd(be, &c.out.t, &c.rstd.t, &c.x.t, &c.w.t, EPS), CHM_OK);
    cr_assert_eq(chm_rmsnorm_bwd(be, &dx->t, &dw->t, &dout.t, &c.x.t, &c.w.t, &c.rstd.t), CHM_OK,
                 "%s", be->err.msg);
    tt_free(&dout);
    return c;
}

static void teardown(rms_ctx *c) {
    free(c->hx), free(c->hw), free(c->hr);
    tt_free(&c->x), tt_free(&c->w), tt_free(&c->out), tt_free(&c->rstd);
}

/* got (downloaded from t) must equal g0 + fd. */
static void check_grad(chm_backend *be, const char *what, const tt_tensor *t, const double *g0,
                       const double *fd, int64_t n) {
    double *got = tt_dalloc(n), *want = tt_dalloc(n);
    tt_download(be, t, got);
    for (int64_t i = 0; i < n; i++) want[i] = g0[i] + fd[i];
    double err = tt_rel_l2(got, want, n);
    cr_assert(err < 1e-6, "%s: relative L2 error %g against finite differences", what, err);
    free(got), free(want);
}

Test(rmsnorm, backward_matches_finite_differences_and_accumulates) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    for (int s = 0; s < 3; s++) {
        tt_tensor dx, dw;
        double *gx, *gw;
        rms_ctx c = setup(be, CHM_F64, SHAPES[s], &rng, &dx, &dw, &gx, &gw);
        double *fx = tt_dalloc(c.R * c.C), *fw = tt_dalloc(c.C);
        fd_grad(&c, c.hx, c.R * c.C, fx);
        fd_grad(&c, c.hw, c.C, fw);
        check_grad(be, "rmsnorm dx", &dx, gx, fx, c.R * c.C);
        check_grad(be, "rmsnorm dw", &dw, gw, fw, c.C);
        free(gx), free(gw), free(fx), free(fw);
        tt_free(&dx), tt_free(&dw);
        teardown(&c);
    }
    chm_backend_close(be);
}

Test(rmsnorm, f32_backward_matches_f64) {
    chm_backend *be = tt_open_cpu();
    for (int s = 0; s < 3; s++) {
        tt_tensor dx[2], dw[2];
        double *gx[2], *gw[2], *rx[2], *rw[2];
        int64_t R = SHAPES[s][0] * SHAPES[s][1], C = SHAPES[s][2];
        for (int d = 0; d < 2; d++) {
            tt_rng rng = tt_rng_make(3 + (uint64_t)s); /* the same draws for both dtypes */
            rms_ctx c = setup(be, DTYPES[d], SHAPES[s], &rng, &dx[d], &dw[d], &gx[d], &gw[d]);
            rx[d] = tt_dalloc(R * C), rw[d] = tt_dalloc(C);
            tt_download(be, &dx[d], rx[d]);
            tt_download(be, &dw[d], rw[d]);
            teardown(&c);
        }
        tt_assert_close("rmsnorm f32 dx", rx[0], rx[1], R * C, 1e-5, 1e-4);
        tt_assert_close("rmsnorm f32 dw", rw[0], rw[1], C, 1e-5, 1e-4);
        for (int d = 0; d < 2; d++) {
            free(gx[d]), free(gw[d]), free(rx[d]), free(rw[d]);
            tt_free(&dx[d]), tt_free(&dw[d]);
        }
    }
    chm_backend_close(be);
}

Test(rmsnorm, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor x = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 7}),
              out = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 7});
    tt_tensor w = tt_alloc(be, CHM_F32, 1, (int64_t[]){7}),
              w8 = tt_alloc(be, CHM_F32, 1, (int64_t[]){8});
    tt_tensor rstd = tt_alloc(be, CHM_F32, 1, (int64_t[]){3}),
              r64 = tt_alloc(be, CHM_F64, 1, (int64_t[]){3});
    tt_tensor r4 = tt_alloc(be, CHM_F32, 1, (int64_t[]){4}),
              dw = tt_alloc(be, CHM_F32, 1, (int64_t[]){7});
    cr_assert_eq(chm_rmsnorm_fwd(be, &out.t, &rstd.t, &x.t, &w8.t, EPS), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "rmsnorm_fwd: w must have shape [7]"), "%s", be->err.msg);
    cr_assert_eq(chm_rmsnorm_fwd(be, &out.t, &r64.t, &x.t, &w.t, EPS), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "rmsnorm_fwd: rstd must be f32"), "%s", be->err.msg);
    cr_assert_eq(chm_rmsnorm_fwd(be, &out.t, &r4.t, &x.t, &w.t, EPS), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "rmsnorm_fwd: rstd"), "%s", be->err.msg);
    cr_assert_eq(chm_rmsnorm_fwd(be, &out.t, &rstd.t, &x.t, &w.t, -1), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "rmsnorm_fwd: eps"), "%s", be->err.msg);
    cr_assert_eq(chm_rmsnorm_fwd(be, &x.t, &rstd.t, &x.t, &w.t, EPS), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "rmsnorm_fwd: out overlaps x"), "%s", be->err.msg);
    cr_assert_eq(chm_rmsnorm_bwd(be, &out.t, &dw.t, &out.t, &x.t, &w.t, &rstd.t),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "rmsnorm_bwd: dx overlaps dout"), "%s", be->err.msg);
    cr_assert_eq(chm_rmsnorm_bwd(be, &out.t, &w8.t, &x.t, &x.t, &w.t, &rstd.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "rmsnorm_bwd: dw"), "%s", be->err.msg);
    tt_free(&x), tt_free(&out), tt_free(&w), tt_free(&w8), tt_free(&rstd), tt_free(&r64);
    tt_free(&r4), tt_free(&dw);
    chm_backend_close(be);
}
