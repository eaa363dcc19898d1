/*
 * test_row_scale.c: row_scale_fwd/bwd (sigmoid and identity factors) on the
 * cpu backend: forward against a loop in f32 and f64 at odd shapes, exact
 * aliasing of out and x, the backward against central differences of
 * L = sum(out * w) in f64 (accumulating onto random gradients), the f32
 * backward against a loop, and the wrapper's rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
static const int64_t SHAPES[][2] = {{1, 1}, {3, 7}, {13, 5}, {300, 130}};

/* A random tensor; host receives the values as stored. */
static double *rand_tensor(chm_backend *be, tt_rng *r, tt_tensor *t, chm_dtype dt, int nd,
                           const int64_t *shape, double lo, double hi) {
    *t = tt_alloc(be, dt, nd, shape);
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, lo, hi);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

static double factor(double s, bool sig) { return sig ? 1 / (1 + exp(-s)) : s; }

Test(row_scale, forward_matches_loop) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 4; s++)
            for (int sig = 0; sig < 2; sig++) {
                int64_t M = SHAPES[s][0], C = SHAPES[s][1];
                chm_dtype dt = DTYPES[d];
                tt_tensor x, sv, out = tt_alloc(be, dt, 2, (int64_t[]){M, C});
                double *hx = rand_tensor(be, &rng, &x, dt, 2, (int64_t[]){M, C}, -2, 2);
                double *hs = rand_tensor(be, &rng, &sv, dt, 1, (int64_t[]){M}, -4, 4);
                double *want = tt_dalloc(M * C), *got = tt_dalloc(M * C);
                for (int64_t i = 0; i < M * C; i++) want[i] = factor(hs[i / C], sig) * hx[i];
                tt_poison(be, &out);
                cr_assert_eq(chm_row_scale_fwd(be, &out.t, &x.t, &sv.t, sig), CHM_OK, "%s",
                             be->err.msg);
                tt_download(be, &out, got);
                tt_assert_close("row_scale_fwd", got, want, M * C, TT_ATOL(dt), TT_RTOL(dt));
                /* in place */
                cr_assert_eq(chm_row_scale_fwd(be, &x.t, &x.t, &sv.t, sig), CHM_OK);
                tt_download(be, &x, got);
                tt_assert_close("row_scale_fwd in place", got, want, M * C, TT_ATOL(dt),
                                TT_RTOL(dt));
                free(hx), free(hs), free(want), free(got);
                tt_free(&x), tt_free(&sv), tt_free(&out);
            }
    chm_backend_close(be);
}

/* L = sum(out * w) for the host x, s. */
static double loss(chm_backend *be, tt_tensor *x, tt_tensor *sv, tt_tensor *out, const double *hx,
                   const double *hs, const double *hw, int64_t M, int64_t C, bool sig) {
    tt_upload(be, x, hx);
    tt_upload(be, sv, hs);
    cr_assert_eq(chm_row_scale_fwd(be, &out->t, &x->t, &sv->t, sig), CHM_OK);
    double *y = tt_dalloc(M * C), L = 0;
    tt_download(be, out, y);
    for (int64_t i = 0; i < M * C; i++) L += y[i] * hw[i];
    free(y);
    return L;
}

Test(row_scale, backward_matches_finite_differences_and_accumulates) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    for (int s = 0; s < 3; s++)
        for (int sig = 0; sig < 2; sig++) {
            int64_t M = SHAPES[s][0], C = SHAPES[s][1];
            tt_tensor x, sv, w, dx, ds, out = tt_alloc(be, CHM_F64, 2, (int64_t[]){M, C});
            double *hx = rand_tensor(be, &rng, &x, CHM_F64, 2, (int64_t[]){M, C}, -2, 2);
            double *hs = rand_tensor(be, &rng, &sv, CHM_F64, 1, (int64_t[]){M}, -3, 3);
            double *hw = rand_tensor(be, &rng, &w, CHM_F64, 2, (int64_t[]){M, C}, -1, 1);
            double *gx = rand_tensor(be, &rng, &dx, CHM_F64, 2, (int64_t[]){M, C}, -1, 1);
            double *gs = rand_tensor(be, &rng, &ds, CHM_F64, 1, (int64_t[]){M}, -1, 1);
            cr_assert_eq(chm_row_scale_bwd(be, &dx.t, &ds.t, &w.t, &x.t, &sv.t, sig), CHM_OK, "%s",
                         be->err.msg);
            double *wx = tt_dalloc(M * C), *ws = tt_dalloc(M), *got = tt_dalloc(M * C);
            for (int64_t i = 0; i < M * C; i++) {
                double v = hx[i], h = 1e-6;
                hx[i] = v + h;
                double lp = loss(be, &x, &sv, &out, hx, hs, hw, M, C, sig);
                hx[i] = v - h;
                double lm = loss(be, &x, &sv, &out, hx, hs, hw, M, C, sig);
                hx[i] = v;
                wx[i] = gx[i] + (lp - lm) / (2 * h);
            }
            for (int64_t m = 0; m < M; m++) {
                double v = hs[m], h = 1e-6;
                hs[m] = v + h;
                double lp = loss(be, &x, &sv, &out, hx, hs, hw, M, C, sig);
                hs[m] = v - h;
                double lm = loss(be, &x, &sv, &out, hx, hs, hw, M, C, sig);
                hs[m] = v;
                ws[m] = gs[m] + (lp - lm) / (2 * h);
            }
            tt_download(be, &dx, got);
            cr_assert(tt_rel_l2(got, wx, M * C) < 1e-6, "dx: %g", tt_rel_l2(got, wx, M * C));
            tt_download(be, &ds, got);
            cr_assert(tt_rel_l2(got, ws, M) < 1e-6, "ds: %g", tt_rel_l2(got, ws, M));
            free(hx), free(hs), free(hw), free(gx), free(gs), free(wx), free(ws), free(got);
            tt_free(&x), tt_free(&sv), tt_free(&w), tt_free(&dx), tt_free(&ds), tt_free(&out);
        }
    chm_backend_close(be);
}

Test(row_scale, f32_backward_matches_loop_and_optional_outputs) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(3);
    for (int s = 0; s < 4; s++) {
        int64_t M = SHAPES[s][0], C = SHAPES[s][1];
        tt_tensor x, sv, g, dx, ds;
        double *hx = rand_tensor(be, &rng, &x, CHM_F32, 2, (int64_t[]){M, C}, -2, 2);
        double *hs = rand_tensor(be, &rng, &sv, CHM_F32, 1, (int64_t[]){M}, -3, 3);
        double *hg = rand_tensor(be, &rng, &g, CHM_F32, 2, (int64_t[]){M, C}, -1, 1);
        double *gx = rand_tensor(be, &rng, &dx, CHM_F32, 2, (int64_t[]){M, C}, -1, 1);
        double *gs = rand_tensor(be, &rng, &ds, CHM_F32, 1, (int64_t[]){M}, -1, 1);
        double *wx = tt_dalloc(M * C), *ws = tt_dalloc(M), *got = tt_dalloc(M * C);
        for (int64_t m = 0; m < M; m++) {
            double f = factor(hs[m], true), dot = 0;
            for (int64_t c = 0; c < C; c++) {
                wx[m * C + c] = gx[m * C + c] + f * hg[m * C + c];
                dot += hg[m * C + c] * hx[m * C + c];
            }
            ws[m] = gs[m] + f * (1 - f) * dot;
        }
        cr_assert_eq(chm_row_scale_bwd(be, &dx.t, NULL, &g.t, &x.t, &sv.t, true), CHM_OK);
        cr_assert_eq(chm_row_scale_bwd(be, NULL, &ds.t, &g.t, &x.t, &sv.t, true), CHM_OK);
        tt_download(be, &dx, got);
        tt_assert_close("row_scale dx f32", got, wx, M * C, 1e-5, 1e-5);
        tt_download(be, &ds, got);
        tt_assert_close("row_scale ds f32", got, ws, M, 1e-4, 1e-4);
        free(hx), free(hs), free(hg), free(gx), free(gs), free(wx), free(ws), free(got);
        tt_free(&x), tt_free(&sv), tt_free(&g), tt_free(&dx), tt_free(&ds);
    }
    chm_backend_close(be);
}

/* chm_row_scale_bwd_set: dx and ds are written whatever they held (NaN here), exactly as the
   accumulating backward onto zeros; each may be absent. */
Test(row_scale, backward_set_writes_dx_and_ds) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(4);
    for (int s = 0; s < 4; s++)
        for (int which = 1; which < 4; which++) { /* bit 0 dx, bit 1 ds */
            int64_t M = SHAPES[s][0], C = SHAPES[s][1];
            tt_tensor x, sv, g, dx[2], ds[2];
            double *hx = rand_tensor(be, &rng, &x, CHM_F64, 2, (int64_t[]){M, C}, -2, 2);
            double *hs = rand_tensor(be, &rng, &sv, CHM_F64, 1, (int64_t[]){M}, -3, 3);
            double *hg = rand_tensor(be, &rng, &g, CHM_F64, 2, (int64_t[]){M, C}, -1, 1);
            for (int k = 0; k < 2; k++) {
                dx[k] = tt_alloc(be, CHM_F64, 2, (int64_t[]){M, C});
                ds[k] = tt_alloc(be, CHM_F64, 1, (int64_t[]){M});
            }
            cr_assert_eq(chm_fill(be, &dx[0].t, 0.0), CHM_OK);
            cr_assert_eq(chm_fill(be, &ds[0].t, 0.0), CHM_OK);
            tt_poison(be, &dx[1]);
            tt_poison(be, &ds[1]);
            const chm_tensor *px[2], *ps[2];
            for (int k = 0; k < 2; k++) {
                px[k] = which & 1 ? &dx[k].t : NULL;
                ps[k] = which & 2 ? &ds[k].t : NULL;
            }
            cr_assert_eq(chm_row_scale_bwd(be, px[0], ps[0], &g.t, &x.t, &sv.t, s & 1), CHM_OK);
            cr_assert_eq(chm_row_scale_bwd_set(be, px[1], ps[1], &g.t, &x.t, &sv.t, s & 1),
                         CHM_OK, "%s", be->err.msg);
            double *want = tt_dalloc(M * C), *got = tt_dalloc(M * C);
            if (which & 1) {
                tt_download(be, &dx[0], want);
                tt_download(be, &dx[1], got);
                tt_assert_close("dx (set)", got, want, M * C, 0, 0);
            }
            if (which & 2) {
                tt_download(be, &ds[0], want);
                tt_download(be, &ds[1], got);
                tt_assert_close("ds (set)", got, want, M, 0, 0);
            }
            free(hx), free(hs), free(hg), free(want), free(got);
            tt_free(&x), tt_free(&sv), tt_free(&g);
            for (int k = 0; k < 2; k++) tt_free(&dx[k]), tt_free(&ds[k]);
        }
    chm_backend_close(be);
}

Test(row_scale, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor x = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4});
    tt_tensor o = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4});
    tt_tensor s3 = tt_alloc(be, CHM_F32, 1, (int64_t[]){3}),
              s4 = tt_alloc(be, CHM_F32, 1, (int64_t[]){4});
    tt_tensor s64 = tt_alloc(be, CHM_F64, 1, (int64_t[]){3});
    cr_assert_eq(chm_row_scale_fwd(be, &o.t, &x.t, &s4.t, true), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "row_scale_fwd: s"), "%s", be->err.msg);
    cr_assert_eq(chm_row_scale_fwd(be, &o.t, &x.t, &s64.t, true), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "row_scale_fwd: s"), "%s", be->err.msg);
    chm_tensor part = chm_tensor_2d(x.buf, 4 * sizeof(float), CHM_F32, 2, 4);
    chm_tensor part_x = chm_tensor_2d(x.buf, 0, CHM_F32, 2, 4),
               s2 = chm_tensor_1d(s3.buf, 0, CHM_F32, 2);
    cr_assert_eq(chm_row_scale_fwd(be, &part, &part_x, &s2, true), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "row_scale_fwd: out overlaps x in part"), "%s", be->err.msg);
    cr_assert_eq(chm_row_scale_bwd(be, &x.t, NULL, &o.t, &x.t, &s3.t, false), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "row_scale_bwd: dx overlaps x"), "%s", be->err.msg);
    tt_free(&x), tt_free(&o), tt_free(&s3), tt_free(&s4), tt_free(&s64);
    chm_backend_close(be);
}
