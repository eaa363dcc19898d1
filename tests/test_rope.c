/*
 * test_rope.c: rotary embedding forward and backward on the cpu backend.
 *
 * Forward against a plain f64 loop (f32 and f64, odd shapes, several thetas and
 * position offsets, in place too); the backward is the adjoint of the forward
 * (<rope(x), y> = <x, rope_bwd(y)>), matches finite differences in f64 and
 * accumulates; a position offset p on a sequence equals positions p.. of a
 * longer sequence; then the wrapper's rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
static const int64_t SHAPES[][4] = {{1, 1, 1, 2}, {2, 3, 2, 4}, {1, 7, 3, 6}, {2, 5, 1, 8}};
#define N_SHAPES 4

/* Random host values uploaded into t; the host copy keeps the stored (rounded) values. */
static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, -2, 2);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

/* out = rotation of x [B,T,H,D] by sign * (t + off) * theta^(-2i/D), pairs (i, i+D/2). */
static void ref_rope(double *out, const double *x, const int64_t *s, double theta, int64_t off,
                     double sign) {
    int64_t T = s[1], H = s[2], D = s[3], half = D / 2;
    for (int64_t bt = 0; bt < s[0] * T; bt++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < half; i++) {
                double a = sign * (double)(bt % T + off) * pow(theta, -2.0 * i / D);
                int64_t j = (bt * H + h) * D + i;
                out[j] = x[j] * cos(a) - x[j + half] * sin(a);
                out[j + half] = x[j] * sin(a) + x[j + half] * cos(a);
            }
}

Test(rope, forward_matches_loop_and_runs_in_place) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    const double thetas[] = {10000.0, 500.0};
    const int64_t offs[] = {0, 3};
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < N_SHAPES; s++)
            for (int k = 0; k < 2; k++) {
                chm_dtype dt = DTYPES[d];
                tt_tensor x = tt_alloc(be, dt, 4, SHAPES[s]), out = tt_alloc(be, dt, 4, SHAPES[s]);
                double *hx = rand_upload(be, &rng, &x);
                int64_t n = chm_tensor_numel(&x.t);
                double *want = tt_dalloc(n), *got = tt_dalloc(n);
                ref_rope(want, hx, SHAPES[s], thetas[k], offs[k], 1.0);
                tt_poison(be, &out);
                cr_assert_eq(chm_rope_fwd(be, &out.t, &x.t, thetas[k], offs[k]), CHM_OK, "%s",
                             be->err.msg);
                tt_download(be, &out, got);
                tt_assert_close("rope_fwd", got, want, n, TT_ATOL(dt), TT_RTOL(dt));
                cr_assert_eq(chm_rope_fwd(be, &x.t, &x.t, thetas[k], offs[k]), CHM_OK);
                tt_download(be, &x, got);
                tt_assert_close("rope_fwd in place", got, want, n, TT_ATOL(dt), TT_RTOL(dt));
                free(hx), free(want), free(got);
                tt_free(&x), tt_free(&out);
            }
    chm_backend_close(be);
}

Test(rope, backward_is_the_adjoint) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    for (int s = 0; s < N_SHAPES; s++) {
        tt_tensor x = tt_alloc(be, CHM_F64, 4, SHAPES[s]), y = tt_alloc(be, CHM_F64, 4, SHAPES[s]);
        tt_tensor rx = tt_alloc(be, CHM_F64, 4, SHAPES[s]),
                  ry = tt_alloc(be, CHM_F64, 4, SHAPES[s]);
        double *hx = rand_upload(be, &rng, &x), *hy = rand_upload(be, &rng, &y);
        int64_t n = chm_tensor_numel(&x.t);
        double *hrx = tt_dalloc(n), *hry = tt_dalloc(n);
        cr_assert_eq(chm_rope_fwd(be, &rx.t, &x.t, 10000.0, 2), CHM_OK);
        cr_assert_eq(chm_fill(be, &ry.t, 0.0), CHM_OK);
        cr_assert_eq(chm_rope_bwd(be, &ry.t, &y.t, 10000.0, 2), CHM_OK, "%s", be->err.msg);
        tt_download(be, &rx, hrx);
        tt_download(be, &ry, hry);
        double lhs = 0, rhs = 0, scale = 0;
        for (int64_t i = 0; i < n; i++) {
            lhs += hrx[i] * hy[i];
            rhs += hx[i] * hry[i];
            scale += fabs(hrx[i] * hy[i]);
        }
        cr_assert(fabs(lhs - rhs) <= 1e-13 * scale,
                  "<rope(x), y> = %.17g but <x, rope_bwd(y)> = %.17g", lhs, rhs);
        free(hx), free(hy), free(hrx), free(hry);
        tt_free(&x), tt_free(&y), tt_free(&rx), tt_free(&ry);
    }
    chm_backend_close(be);
}

/* L = sum(rope(x) * w) through the backend, for the current host x. */
static double loss(chm_backend *be, const tt_tensor *x, const tt_tensor *out, const double *hx,
                   const double *hw, int64_t n) {
    tt_upload(be, x, hx);
    cr_assert_eq(chm_rope_fwd(be, &out->t, &x->t, 10000.0, 1), CHM_OK);
    double *y = tt_dalloc(n), L = 0;
    tt_download(be, out, y);
    for (int64_t i = 0; i < n; i++) L += y[i] * hw[i];
    free(y);
    return L;
}

Test(rope, backward_matches_finite_differences_and_accumulates) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(3);
    for (int s = 0; s < N_SHAPES; s++) {
        const int64_t *sh = SHAPES[s];
        tt_tensor x = tt_alloc(be, CHM_F64, 4, sh), out = tt_alloc(be, CHM_F64, 4, sh);
        tt_tensor w = tt_alloc(be, CHM_F64, 4, sh), dx = tt_alloc(be, CHM_F64, 4, sh);
        double *hx = rand_upload(be, &rng, &x), *hw = rand_upload(be, &rng, &w);
        double *g0 = rand_upload(be, &rng, &dx);
        int64_t n = chm_tensor_numel(&x.t);
        cr_assert_eq(chm_rope_bwd(be, &dx.t, &w.t, 10000.0, 1), CHM_OK, "%s", be->err.msg);
        double *want = tt_dalloc(n), *got = tt_dalloc(n);
        for (int64_t i = 0; i < n; i++) {
            double v0 = hx[i], h = 1e-6 * fmax(1.0, fabs(v0));
            hx[i] = v0 + h;
            double lp = loss(be, &x, &out, hx, hw, n);
            hx[i] = v0 - h;
            double lm = loss(be, &x, &out, hx, hw, n);
            hx[i] = v0;
            want[i] = g0[i] + (lp - lm) / (2 * h);
        }
        tt_download(be, &dx, got);
        double err = tt_rel_l2(got, want, n);
        cr_assert(err < 1e-6, "rope dx: relative L2 error %g against finite differences", err);
        free(hx), free(hw), free(g0), free(want), free(got);
        tt_free(&x), tt_free(&out), tt_free(&w), tt_free(&dx);
    }
    chm_backend_close(be);
}

Test(rope, f32_backward_matches_loop) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(4);
    for (int s = 0; s < N_SHAPES; s++) {
        tt_tensor g = tt_alloc(be, CHM_F32, 4, SHAPES[s]), dx = tt_alloc(be, CHM_F32, 4, SHAPES[s]);
        double *hg = rand_upload(be, &rng, &g), *g0 = rand_upload(be, &rng, &dx);
        int64_t n = chm_tensor_numel(&g.t);
        double *want = tt_dalloc(n), *got = tt_dalloc(n);
        ref_rope(want, hg, SHAPES[s], 10000.0, 5, -1.0);
        for (int64_t i = 0; i < n; i++) want[i] += g0[i];
        cr_assert_eq(chm_rope_bwd(be, &dx.t, &g.t, 10000.0, 5), CHM_OK, "%s", be->err.msg);
        tt_download(be, &dx, got);
        tt_assert_close("rope_bwd f32", got, want, n, TT_ATOL(CHM_F32), TT_RTOL(CHM_F32));
        free(hg), free(g0), free(want), free(got);
        tt_free(&g), tt_free(&dx);
    }
    chm_backend_close(be);
}

Test(rope, pos_offset_continues_a_longer_sequence) {
    /* rope of positions p..p+T-1 alone (offset p) equals that slice of a rope from 0. */
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(5);
    int64_t p = 4, T = 3, H = 2, D = 6, whole = (p + T) * H * D, part = T * H * D;
    for (int d = 0; d < 2; d++) {
        chm_dtype dt = DTYPES[d];
        tt_tensor xl = tt_alloc(be, dt, 4, (int64_t[]){1, p + T, H, D});
        tt_tensor ol = tt_alloc(be, dt, 4, (int64_t[]){1, p + T, H, D});
        tt_tensor os = tt_alloc(be, dt, 4, (int64_t[]){1, T, H, D});
        double *hx = rand_upload(be, &rng, &xl), *gl = tt_dalloc(whole), *gs = tt_dalloc(part);
        chm_tensor xs;
        chm_err err = {0};
        cr_assert_eq(chm_tensor_view(&xl.t, p * H * D, 4, (int64_t[]){1, T, H, D}, &xs, &err),
                     CHM_OK);
        cr_assert_eq(chm_rope_fwd(be, &ol.t, &xl.t, 10000.0, 0), CHM_OK);
        tt_poison(be, &os);
        cr_assert_eq(chm_rope_fwd(be, &os.t, &xs, 10000.0, p), CHM_OK, "%s", be->err.msg);
        tt_download(be, &ol, gl);
        tt_download(be, &os, gs);
        tt_assert_close("rope with pos_offset", gs, gl + p * H * D, part, TT_ATOL(dt), TT_RTOL(dt));
        free(hx), free(gl), free(gs);
        tt_free(&xl), tt_free(&ol), tt_free(&os);
    }
    chm_backend_close(be);
}

Test(rope, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor x = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 2, 2, 4}),
              o = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 2, 2, 4});
    tt_tensor odd = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 2, 2, 5}),
              x3 = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 2, 4});
    cr_assert_eq(chm_rope_fwd(be, &odd.t, &odd.t, 1e4, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "rope_fwd: x's head dim") && strstr(be->err.msg, "even"), "%s",
              be->err.msg);
    cr_assert_eq(chm_rope_fwd(be, &x3.t, &x3.t, 1e4, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "rope_fwd: x must have shape [*, *, *, *]"), "%s", be->err.msg);
    cr_assert_eq(chm_rope_fwd(be, &o.t, &x.t, 0.0, 0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "rope_fwd: theta"), "%s", be->err.msg);
    cr_assert_eq(chm_rope_fwd(be, &o.t, &x.t, 1e4, -1), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "rope_fwd: pos_offset"), "%s", be->err.msg);
    cr_assert_eq(chm_rope_fwd(be, &odd.t, &x.t, 1e4, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "rope_fwd: out and x must match"), "%s", be->err.msg);
    chm_tensor shifted = chm_tensor_4d(x.buf, 4, CHM_F32, 1, 1, 2, 4),
               head = chm_tensor_4d(x.buf, 0, CHM_F32, 1, 1, 2, 4);
    cr_assert_eq(chm_rope_fwd(be, &shifted, &head, 1e4, 0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "rope_fwd: out overlaps x in part"), "%s", be->err.msg);
    cr_assert_eq(chm_rope_bwd(be, &x.t, &x.t, 1e4, 0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "rope_bwd: dx overlaps dout"), "%s", be->err.msg);
    cr_assert_eq(chm_rope_bwd(be, &odd.t, &x.t, 1e4, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "rope_bwd: dx and dout must match"), "%s", be->err.msg);
    tt_free(&x), tt_free(&o), tt_free(&odd), tt_free(&x3);
    chm_backend_close(be);
}
