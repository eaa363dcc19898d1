/*
 * test_swiglu.c: SwiGLU forward and backward on the cpu backend.
 *
 * Forward against a plain f64 loop in f32 and f64 at odd shapes (gates far in
 * both tails included); backward against central finite differences of
 * L = sum(out * w) in f64, starting from random gradients that must
 * accumulate, and the f32 backward against a loop; then the wrapper's rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
static const int64_t SHAPES[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 5, 13}};

/* Random host values in [lo, hi) uploaded into t; the host copy keeps the stored values. */
static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t, double lo, double hi) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, lo, hi);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

Test(swiglu, forward_matches_loop) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 3; s++) {
            chm_dtype dt = DTYPES[d];
            tt_tensor g = tt_alloc(be, dt, 3, SHAPES[s]), u = tt_alloc(be, dt, 3, SHAPES[s]);
            tt_tensor out = tt_alloc(be, dt, 3, SHAPES[s]);
            double *hg = rand_upload(be, &rng, &g, -6, 6), *hu = rand_upload(be, &rng, &u, -2, 2);
            int64_t n = chm_tensor_numel(&g.t);
            double *want = tt_dalloc(n), *got = tt_dalloc(n);
            for (int64_t i = 0; i < n; i++) want[i] = hg[i] * sigmoid(hg[i]) * hu[i];
            tt_poison(be, &out);
            cr_assert_eq(chm_swiglu_fwd(be, &out.t, &g.t, &u.t), CHM_OK, "%s", be->err.msg);
            tt_download(be, &out, got);
            tt_assert_close("swiglu_fwd", got, want, n, TT_ATOL(dt), TT_RTOL(dt));
            free(hg), free(hu), free(want), free(got);
            tt_free(&g), tt_free(&u), tt_free(&out);
        }
    chm_backend_close(be);
}

Test(swiglu, forward_tails_stay_finite) {
    /* exp(-x) overflows for very negative gates: silu must go to 0, not NaN. */
    chm_backend *be = tt_open_cpu();
    const double gv[] = {-1000, -100, 100, 1000}, uv[] = {2, 2, 2, 2};
    for (int d = 0; d < 2; d++) {
        tt_tensor g = tt_alloc(be, DTYPES[d], 1, (int64_t[]){4}),
                  u = tt_alloc(be, DTYPES[d], 1, (int64_t[]){4});
        tt_tensor out = tt_alloc(be, DTYPES[d], 1, (int64_t[]){4});
        tt_upload(be, &g, gv);
        tt_upload(be, &u, uv);
        cr_assert_eq(chm_swiglu_fwd(be, &out.t, &g.t, &u.t), CHM_OK);
        double got[4], want[4] = {0, 0, 200, 2000};
        tt_download(be, &out, got);
        tt_assert_close("swiglu tails", got, want, 4, 1e-30, 1e-6);
        tt_free(&g), tt_free(&u), tt_free(&out);
    }
    chm_backend_close(be);
}

/* Tensors of one backward check and host arrays perturbed for differences. */
typedef struct sw_ctx {
    chm_backend *be;
    tt_tensor g, u, out;
    double *hg, *hu, *hw; /* hw: the loss weights */
    int64_t n;
} sw_ctx;

/* L = sum(out * w) through the backend's forward for the current host gate and up. */
static double loss(sw_ctx *c) {
    tt_upload(c->be, &c->g, c->hg);
    tt_upload(c->be, &c->u, c->hu);
    cr_assert_eq(chm_swiglu_fwd(c->be, &c->out.t, &c->g.t, &c->u.t), CHM_OK);
    double *y = tt_dalloc(c->n), L = 0;
    tt_download(c->be, &c->out, y);
    for (int64_t i = 0; i < c->n; i++) L += y[i] * c->hw[i];
    free(y);
    return L;
}

/* want[i] = g0[i] + dL/dv[i] by central differences. */
static void fd_plus(sw_ctx *c, double *v, const double *g0, double *want) {
    for (int64_t i = 0; i < c->n; i++) {
        double v0 = v[i], h = 1e-6 * fmax(1.0, fabs(v0));
        v[i] = v0 + h;
        double lp = loss(c);
        v[i] = v0 - h;
        double lm = loss(c);
        v[i] = v0;
        want[i] = g0[i] + (lp - lm) / (2 * h);
    }
}

Test(swiglu, backward_matches_finite_differences_and_accumulates) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    for (int s = 0; s < 3; s++) {
        const int64_t *sh = SHAPES[s];
        sw_ctx c = {.be = be};
        c.g = tt_alloc(be, CHM_F64, 3, sh), c.u = tt_alloc(be, CHM_F64, 3, sh);
        c.out = tt_alloc(be, CHM_F64, 3, sh);
        tt_tensor dout = tt_alloc(be, CHM_F64, 3, sh), dg = tt_alloc(be, CHM_F64, 3, sh);
        tt_tensor du = tt_alloc(be, CHM_F64, 3, sh);
        c.n = chm_tensor_numel(&c.g.t);
        c.hg = rand_upload(be, &rng, &c.g, -4, 4), c.hu = rand_upload(be, &rng, &c.u, -2, 2);
        c.hw = rand_upload(be, &rng, &dout, -1, 1);
        double *g0 = rand_upload(be, &rng, &dg, -1, 1), *u0 = rand_upload(be, &rng, &du, -1, 1);
        cr_assert_eq(chm_swiglu_bwd(be, &dg.t, &du.t, &dout.t, &c.g.t, &c.u.t, true), CHM_OK, "%s",
                     be->err.msg);
        double *want = tt_dalloc(c.n), *got = tt_dalloc(c.n);
        fd_plus(&c, c.hg, g0, want);
        tt_download(be, &dg, got);
        cr_assert(tt_rel_l2(got, want, c.n) < 1e-6, "dgate: relative L2 error %g",
                  tt_rel_l2(got, want, c.n));
        fd_plus(&c, c.hu, u0, want);
        tt_download(be, &du, got);
        cr_assert(tt_rel_l2(got, want, c.n) < 1e-6, "dup: relative L2 error %g",
                  tt_rel_l2(got, want, c.n));
        free(c.hg), free(c.hu), free(c.hw), free(g0), free(u0), free(want), free(got);
        tt_free(&c.g), tt_free(&c.u), tt_free(&c.out), tt_free(&dout), tt_free(&dg), tt_free(&du);
    }
    chm_backend_close(be);
}

/* Both modes: accumulate onto random gradients, and write over NaN-poisoned ones. */
Test(swiglu, f32_backward_matches_loop_accumulating_or_writing) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(3);
    for (int s = 0; s < 6; s++) {
        bool acc = s < 3;
        const int64_t *sh = SHAPES[s % 3];
        tt_tensor g = tt_alloc(be, CHM_F32, 3, sh), u = tt_alloc(be, CHM_F32, 3, sh);
        tt_tensor dout = tt_alloc(be, CHM_F32, 3, sh), dg = tt_alloc(be, CHM_F32, 3, sh);
        tt_tensor du = tt_alloc(be, CHM_F32, 3, sh);
        double *hg = rand_upload(be, &rng, &g, -4, 4), *hu = rand_upload(be, &rng, &u, -2, 2);
        double *hd = rand_upload(be, &rng, &dout, -1, 1), *g0 = rand_upload(be, &rng, &dg, -1, 1);
        double *u0 = rand_upload(be, &rng, &du, -1, 1);
        int64_t n = chm_tensor_numel(&g.t);
        double *wg = tt_dalloc(n), *wu = tt_dalloc(n), *got = tt_dalloc(n);
        for (int64_t i = 0; i < n; i++) {
            double sg = sigmoid(hg[i]);
            wg[i] = (acc ? g0[i] : 0) + hd[i] * hu[i] * sg * (1 + hg[i] * (1 - sg));
            wu[i] = (acc ? u0[i] : 0) + hd[i] * hg[i] * sg;
        }
        if (!acc) tt_poison(be, &dg), tt_poison(be, &du);
        cr_assert_eq(chm_swiglu_bwd(be, &dg.t, &du.t, &dout.t, &g.t, &u.t, acc), CHM_OK, "%s",
                     be->err.msg);
        tt_download(be, &dg, got);
        tt_assert_close("swiglu dgate f32", got, wg, n, TT_ATOL(CHM_F32), TT_RTOL(CHM_F32));
        tt_download(be, &du, got);
        tt_assert_close("swiglu dup f32", got, wu, n, TT_ATOL(CHM_F32), TT_RTOL(CHM_F32));
        free(hg), free(hu), free(hd), free(g0), free(u0), free(wg), free(wu), free(got);
        tt_free(&g), tt_free(&u), tt_free(&dout), tt_free(&dg), tt_free(&du);
    }
    chm_backend_close(be);
}

Test(swiglu, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor g = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4}),
              u = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4});
    tt_tensor o = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4}),
              u5 = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 5});
    tt_tensor ud = tt_alloc(be, CHM_F64, 2, (int64_t[]){3, 4}),
              i = tt_alloc(be, CHM_I32, 2, (int64_t[]){3, 4});
    cr_assert_eq(chm_swiglu_fwd(be, &o.t, &g.t, &u5.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "swiglu_fwd: up and gate must match"), "%s", be->err.msg);
    cr_assert_eq(chm_swiglu_fwd(be, &o.t, &g.t, &ud.t), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "swiglu_fwd: up"), "%s", be->err.msg);
    cr_assert_eq(chm_swiglu_fwd(be, &o.t, &i.t, &u.t), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "swiglu_fwd: gate must be a float"), "%s", be->err.msg);
    cr_assert_eq(chm_swiglu_fwd(be, &g.t, &g.t, &u.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "swiglu_fwd: out overlaps gate"), "%s", be->err.msg);
    cr_assert_eq(chm_swiglu_bwd(be, &o.t, &o.t, &u.t, &g.t, &u.t, true), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "swiglu_bwd: dgate overlaps dup"), "%s", be->err.msg);
    cr_assert_eq(chm_swiglu_bwd(be, &o.t, &u5.t, &u.t, &g.t, &u.t, false), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "swiglu_bwd: dup"), "%s", be->err.msg);
    tt_free(&g), tt_free(&u), tt_free(&o), tt_free(&u5), tt_free(&ud), tt_free(&i);
    chm_backend_close(be);
}

/* [E,cap,F] random with the rows >= counts[e] zero; the host copy in *h. */
static tt_tensor tail_zero_tensor(chm_backend *be, tt_rng *r, chm_dtype dt, const int64_t *shape,
                                  const int32_t *counts, double **h) {
    tt_tensor t = tt_alloc(be, dt, 3, shape);
    int64_t cap = shape[1], F = shape[2], n = chm_tensor_numel(&t.t);
    *h = tt_dalloc(n);
    tt_fill_uniform(r, *h, n, -3, 3);
    for (int64_t i = 0; i < n; i++)
        if (i / F % cap >= counts[i / (cap * F)]) (*h)[i] = 0.0;
    tt_upload(be, &t, *h);
    tt_download(be, &t, *h);
    return t;
}

Test(swiglu, tail_zero_forms_match_the_plain_ones) {
    /* The reference computes every row (the promise makes the tails zero): the tail-zero forms
       equal the plain ops bit for bit, written and accumulated, in f32 and f64. */
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(7);
    const int64_t shape[3] = {3, 5, 6};
    const int32_t cv[3] = {5, 2, 0};
    const chm_dtype dts[2] = {CHM_F32, CHM_F64};
    tt_tensor cnt = tt_alloc(be, CHM_I32, 1, (int64_t[]){3});
    tt_upload_i32(be, &cnt, cv);
    for (int d = 0; d < 2; d++) {
        chm_dtype dt = dts[d];
        double *hg, *hu, *hd;
        tt_tensor g = tail_zero_tensor(be, &rng, dt, shape, cv, &hg);
        tt_tensor u = tail_zero_tensor(be, &rng, dt, shape, cv, &hu);
        tt_tensor dout = tt_alloc(be, dt, 3, shape);
        hd = rand_upload(be, &rng, &dout, -1, 1);
        int64_t n = chm_tensor_numel(&g.t);
        double *a = tt_dalloc(n), *b = tt_dalloc(n);
        tt_tensor o1 = tt_alloc(be, dt, 3, shape), o2 = tt_alloc(be, dt, 3, shape);
        cr_assert_eq(chm_swiglu_fwd(be, &o1.t, &g.t, &u.t), CHM_OK, "%s", be->err.msg);
        tt_poison(be, &o2);
        cr_assert_eq(chm_swiglu_fwd_tail_zero(be, &o2.t, &g.t, &u.t, &cnt.t), CHM_OK, "%s",
                     be->err.msg);
        tt_download(be, &o1, a);
        tt_download(be, &o2, b);
        for (int64_t i = 0; i < n; i++) {
            cr_assert_eq(a[i], b[i], "%s fwd element %lld", chm_dtype_name(dt), (long long)i);
            if (i / 6 % 5 >= cv[i / 30]) cr_assert_eq(b[i], 0.0);
        }
        for (int acc = 0; acc < 2; acc++) {
            tt_tensor dg1 = tt_alloc(be, dt, 3, shape), du1 = tt_alloc(be, dt, 3, shape);
            tt_tensor dg2 = tt_alloc(be, dt, 3, shape), du2 = tt_alloc(be, dt, 3, shape);
            double *h0 = rand_upload(be, &rng, &dg1, -1, 1);
            tt_upload(be, &dg2, h0);
            tt_upload(be, &du1, h0);
            tt_upload(be, &du2, h0);
            cr_assert_eq(chm_swiglu_bwd(be, &dg1.t, &du1.t, &dout.t, &g.t, &u.t, acc), CHM_OK);
            cr_assert_eq(chm_swiglu_bwd_tail_zero(be, &dg2.t, &du2.t, &dout.t, &g.t, &u.t, &cnt.t,
                                                  acc),
                         CHM_OK, "%s", be->err.msg);
            tt_tensor *p1[2] = {&dg1, &du1}, *p2[2] = {&dg2, &du2};
            for (int k = 0; k < 2; k++) {
                tt_download(be, p1[k], a);
                tt_download(be, p2[k], b);
                for (int64_t i = 0; i < n; i++)
                    cr_assert_eq(a[i], b[i], "%s bwd acc %d grad %d element %lld",
                                 chm_dtype_name(dt), acc, k, (long long)i);
            }
            free(h0);
            tt_free(&dg1), tt_free(&du1), tt_free(&dg2), tt_free(&du2);
        }
        free(hg), free(hu), free(hd), free(a), free(b);
        tt_free(&g), tt_free(&u), tt_free(&dout), tt_free(&o1), tt_free(&o2);
    }
    tt_free(&cnt);
    chm_backend_close(be);
}

Test(swiglu, tail_zero_forms_refuse_a_broken_promise) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(8);
    const int64_t shape[3] = {2, 4, 3};
    const int32_t cv[2] = {4, 1}, bad[2] = {5, 0};
    tt_tensor cnt = tt_alloc(be, CHM_I32, 1, (int64_t[]){2});
    tt_upload_i32(be, &cnt, cv);
    double *hg, *hu;
    tt_tensor g = tail_zero_tensor(be, &rng, CHM_F32, shape, cv, &hg);
    tt_tensor u = tail_zero_tensor(be, &rng, CHM_F32, shape, cv, &hu);
    tt_tensor o = tt_alloc(be, CHM_F32, 3, shape), o2 = tt_alloc(be, CHM_F32, 3, shape);
    tt_tensor d = tt_alloc(be, CHM_F32, 3, shape);
    double *hd = rand_upload(be, &rng, &d, -1, 1);
    cr_assert_eq(chm_swiglu_fwd_tail_zero(be, &o.t, &g.t, &u.t, &cnt.t), CHM_OK, "%s",
                 be->err.msg);
    /* up nonzero on row 2 of group 1 (past counts[1] = 1) */
    hu[(1 * 4 + 2) * 3 + 1] = 0.5;
    tt_upload(be, &u, hu);
    cr_assert_eq(chm_swiglu_fwd_tail_zero(be, &o.t, &g.t, &u.t, &cnt.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "row 2 of group 1"), "%s", be->err.msg);
    hu[(1 * 4 + 2) * 3 + 1] = 0.0;
    tt_upload(be, &u, hu);
    /* dout not finite past the count */
    hd[(1 * 4 + 3) * 3] = NAN;
    tt_upload(be, &d, hd);
    cr_assert_eq(chm_swiglu_bwd_tail_zero(be, &o.t, &o2.t, &d.t, &g.t, &u.t, &cnt.t, false),
                 CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "finite dout"), "%s", be->err.msg);
    /* a count past the capacity; counts of the wrong shape; a gate that is not [E,cap,F] */
    tt_upload_i32(be, &cnt, bad);
    cr_assert_eq(chm_swiglu_fwd_tail_zero(be, &o.t, &g.t, &u.t, &cnt.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "counts[0] = 5 is outside [0, 4]"), "%s", be->err.msg);
    tt_tensor c3 = tt_alloc(be, CHM_I32, 1, (int64_t[]){3});
    cr_assert_eq(chm_swiglu_fwd_tail_zero(be, &o.t, &g.t, &u.t, &c3.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "counts"), "%s", be->err.msg);
    cr_assert_eq(chm_swiglu_fwd_tail_zero(be, &o.t, &g.t, &u.t, NULL), CHM_ERR_INVALID_ARG);
    free(hg), free(hu), free(hd);
    tt_free(&cnt), tt_free(&c3), tt_free(&g), tt_free(&u), tt_free(&o), tt_free(&o2), tt_free(&d);
    chm_backend_close(be);
}
