/*
 * test_causal_conv1d.c: depthwise causal conv1d (forward, backward, checks).
 *
 * Every W from 1 to 4 with and without bias and SiLU, including sequences
 * shorter than the filter: the forward against a naive f64 loop, the
 * backward against central finite differences of L = sum(out * R), dbias
 * left out, accumulation onto G0, and dx written by chm_causal_conv1d_bwd_set_dx.
 */
#include "testutil.h"

/* One configuration: x [B,T,C], w [C,W]. */
typedef struct conv_case {
    int64_t B, T, C, W;
    bool bias, silu;
} conv_case;

/* Host inputs (in[0] x, in[1] w, in[2] bias or NULL) and backend tensors. */
typedef struct conv_run {
    conv_case c;
    chm_dtype dt;
    double *in[3];
    tt_tensor x, w, b, out, dout, dx, dw, db;
} conv_run;

static int64_t nx(const conv_case *c) { return c->B * c->T * c->C; }

static int64_t in_numel(const conv_case *c, int i) {
    return i == 0 ? nx(c) : i == 1 ? c->C * c->W : c->C;
}

/* n uniform values, rounded to f32 when the op runs in f32 (so the reference sees the same). */
static double *rand_vec(tt_rng *r, int64_t n, double lo, double hi, chm_dtype dt) {
    double *x = tt_dalloc(n);
    tt_fill_uniform(r, x, n, lo, hi);
    if (dt == CHM_F32)
        for (int64_t i = 0; i < n; i++) x[i] = (float)x[i];
    return x;
}

static conv_run conv_open(chm_backend *be, chm_dtype dt, conv_case c, uint64_t seed) {
    conv_run s = {.c = c, .dt = dt};
    tt_rng r = tt_rng_make(seed);
    for (int i = 0; i < 3; i++)
        s.in[i] = (i < 2 || c.bias) ? rand_vec(&r, in_numel(&c, i), -1, 1, dt) : NULL;
    int64_t xs[3] = {c.B, c.T, c.C}, ws[2] = {c.C, c.W};
    s.x = tt_alloc(be, dt, 3, xs);
    s.out = tt_alloc(be, dt, 3, xs);
    s.dout = tt_alloc(be, dt, 3, xs);
    s.dx = tt_alloc(be, dt, 3, xs);
    s.w = tt_alloc(be, dt, 2, ws);
    s.dw = tt_alloc(be, dt, 2, ws);
    s.b = tt_alloc(be, dt, 1, &c.C);
    s.db = tt_alloc(be, dt, 1, &c.C);
    return s;
}

static void conv_close(conv_run *s) {
    tt_tensor *all[] = {&s->x, &s->w, &s->b, &s->out, &s->dout, &s->dx, &s->dw, &s->db};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) tt_free(all[i]);
    for (int i = 0; i < 3; i++) free(s->in[i]);
}

/* Upload the inputs; returns the bias tensor or NULL. */
static const chm_tensor *conv_upload(chm_backend *be, conv_run *s) {
    tt_upload(be, &s->x, s->in[0]);
    tt_upload(be, &s->w, s->in[1]);
    if (!s->in[2]) return NULL;
    tt_upload(be, &s->b, s->in[2]);
    return &s->b.t;
}

static void conv_run_fwd(chm_backend *be, conv_run *s, double *out) {
    const chm_tensor *bias = conv_upload(be, s);
    tt_poison(be, &s->out);
    chm_status rc = chm_causal_conv1d_fwd(be, &s->out.t, &s->x.t, &s->w.t, bias, s->c.silu);
    cr_assert_eq(rc, CHM_OK, "%s", be->err.msg);
    tt_download(be, &s->out, out);
}

/* Backward with dout; gradients start at g0[0..2] and end in got[0..2] (dbias when g0[2]). */
static void conv_run_bwd(chm_backend *be, conv_run *s, const double *dout, double *const g0[3],
                         double *const got[3]) {
    const chm_tensor *bias = conv_upload(be, s);
    tt_tensor *gt[3] = {&s->dx, &s->dw, &s->db};
    tt_upload(be, &s->dout, dout);
    for (int i = 0; i < 3; i++)
        if (g0[i]) tt_upload(be, gt[i], g0[i]);
    chm_status rc = chm_causal_conv1d_bwd(be, &s->dx.t, &s->dw.t, g0[2] ? &s->db.t : NULL,
                                          &s->dout.t, &s->x.t, &s->w.t, bias, s->c.silu);
    cr_assert_eq(rc, CHM_OK, "%s", be->err.msg);
    for (int i = 0; i < 3; i++)
        if (g0[i]) tt_download(be, gt[i], got[i]);
}

/* Naive loop straight from backend.h. */
static void ref_conv(const conv_case *c, double *const in[3], double *out) {
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < c->T; t++)
            for (int64_t ch = 0; ch < c->C; ch++) {
                double s = in[2] ? in[2][ch] : 0.0;
                for (int64_t j = 0; j < c->W; j++) {
                    int64_t src = t - (c->W - 1) + j;
                    if (src >= 0) s += in[1][ch * c->W + j] * in[0][(b * c->T + src) * c->C + ch];
                }
                out[(b * c->T + t) * c->C + ch] = c->silu ? s / (1.0 + exp(-s)) : s;
            }
}

/* Shapes of the sweeps: odd sizes, T = 1 and T shorter than most filters, and channels over
 * more than one of the cpu's 16-channel tasks (two whole and a partial one). */
static const int64_t shapes[][3] = {{2, 7, 3}, {1, 2, 5}, {3, 1, 1}, {2, 6, 37}};
#define NSHAPES (sizeof shapes / sizeof *shapes)

static conv_case make_case(size_t shape, int64_t W, int variant) {
    return (conv_case){shapes[shape][0], shapes[shape][1], shapes[shape][2], W, variant & 1,
                       (variant & 2) != 0};
}

Test(causal_conv1d, forward_matches_naive) {
    chm_backend *be = tt_open_cpu();
    chm_dtype dts[2] = {CHM_F32, CHM_F64};
    for (size_t sh = 0; sh < NSHAPES; sh++)
        for (int64_t W = 1; W <= 4; W++)
            for (int v = 0; v < 4; v++)
                for (int k = 0; k < 2; k++) {
                    conv_run s = conv_open(be, dts[k], make_case(sh, W, v), 7 * W + v);
                    double *got = tt_dalloc(nx(&s.c)), *want = tt_dalloc(nx(&s.c));
                    conv_run_fwd(be, &s, got);
                    ref_conv(&s.c, s.in, want);
                    tt_assert_close("out", got, want, nx(&s.c), TT_ATOL(dts[k]), TT_RTOL(dts[k]));
                    free(got), free(want);
                    conv_close(&s);
                }
    chm_backend_close(be);
}

/* Central differences of L = sum(out * R) with respect to every element of input i. */
static void conv_fd_grad(chm_backend *be, conv_run *s, int i, const double *R, double *g) {
    double *x = s->in[i], *out = tt_dalloc(nx(&s->c));
    for (int64_t j = 0; j < in_numel(&s->c, i); j++) {
        double x0 = x[j], h = 1e-6 * fmax(1.0, fabs(x0)), L[2];
        for (int side = 0; side < 2; side++) {
            x[j] = side ? x0 - h : x0 + h;
            conv_run_fwd(be, s, out);
            L[side] = 0;
            for (int64_t e = 0; e < nx(&s->c); e++) L[side] += out[e] * R[e];
        }
        x[j] = x0;
        g[j] = (L[0] - L[1]) / (2 * h);
    }
    free(out);
}

/* Zeroed arrays for the gradients of the present inputs (NULL for an absent bias). */
static void grad_arrays(const conv_run *s, double *a[3]) {
    for (int i = 0; i < 3; i++) a[i] = s->in[i] ? tt_dalloc(in_numel(&s->c, i)) : NULL;
}

static void check_backward(conv_case c, uint64_t seed) {
    chm_backend *be = tt_open_cpu();
    conv_run s = conv_open(be, CHM_F64, c, seed);
    tt_rng r = tt_rng_make(seed + 3);
    double *R = rand_vec(&r, nx(&c), -1, 1, CHM_F64), *zero[3], *got[3], *fd[3];
    grad_arrays(&s, zero);
    grad_arrays(&s, got);
    grad_arrays(&s, fd);
    conv_run_bwd(be, &s, R, zero, got);
    const char *names[3] = {"dx", "dw", "dbias"};
    for (int i = 0; i < 3; i++) {
        if (!s.in[i]) continue;
        conv_fd_grad(be, &s, i, R, fd[i]);
        double err = tt_rel_l2(got[i], fd[i], in_numel(&c, i));
        cr_assert(err < 1e-6, "%s: relative L2 error %g (W=%lld bias=%d silu=%d T=%lld)",
                  names[i], err, (long long)c.W, c.bias, c.silu, (long long)c.T);
    }
    for (int i = 0; i < 3; i++) free(zero[i]), free(got[i]), free(fd[i]);
    free(R);
    conv_close(&s);
    chm_backend_close(be);
}

Test(causal_conv1d, backward_matches_finite_differences) {
    for (size_t sh = 0; sh < 2; sh++)
        for (int64_t W = 1; W <= 4; W++)
            for (int v = 0; v < 4; v++) check_backward(make_case(sh, W, v), 50 + 4 * W + v);
}

/* The cpu backend splits the channels into tasks of 16: 37 channels make two whole and a
   partial one. */
Test(causal_conv1d, backward_over_channel_tasks) {
    for (int v = 0; v < 4; v++)
        check_backward((conv_case){2, 6, 37, 4, v & 1, (v & 2) != 0}, 90 + v);
}

Test(causal_conv1d, backward_without_dbias) {
    chm_backend *be = tt_open_cpu();
    conv_run s = conv_open(be, CHM_F64, (conv_case){2, 5, 3, 3, true, true}, 61);
    tt_rng r = tt_rng_make(62);
    double *dout = rand_vec(&r, nx(&s.c), -1, 1, CHM_F64), *zero[3], *full[3], *part[3];
    grad_arrays(&s, zero);
    grad_arrays(&s, full);
    grad_arrays(&s, part);
    conv_run_bwd(be, &s, dout, zero, full);
    double *no_bias[3] = {zero[0], zero[1], NULL};
    conv_run_bwd(be, &s, dout, no_bias, part);
    tt_assert_close("dx", part[0], full[0], nx(&s.c), 0, 0);
    tt_assert_close("dw", part[1], full[1], in_numel(&s.c, 1), 0, 0);
    for (int i = 0; i < 3; i++) free(zero[i]), free(full[i]), free(part[i]);
    free(dout);
    conv_close(&s);
    chm_backend_close(be);
}

static void check_accumulates(chm_dtype dt) {
    chm_backend *be = tt_open_cpu();
    conv_run s = conv_open(be, dt, (conv_case){2, 6, 5, 4, true, true}, 71);
    tt_rng r = tt_rng_make(72);
    double *dout = rand_vec(&r, nx(&s.c), -1, 1, dt), *zero[3], *grad[3], *got[3], *g0[3];
    grad_arrays(&s, zero);
    grad_arrays(&s, grad);
    grad_arrays(&s, got);
    for (int i = 0; i < 3; i++) g0[i] = rand_vec(&r, in_numel(&s.c, i), -2, 2, dt);
    conv_run_bwd(be, &s, dout, zero, grad);
    conv_run_bwd(be, &s, dout, g0, got);
    for (int i = 0; i < 3; i++) {
        for (int64_t j = 0; j < in_numel(&s.c, i); j++) grad[i][j] += g0[i][j];
        tt_assert_close("G0 + grad", got[i], grad[i], in_numel(&s.c, i), TT_ATOL(dt),
                        TT_RTOL(dt));
    }
    for (int i = 0; i < 3; i++) free(zero[i]), free(grad[i]), free(got[i]), free(g0[i]);
    free(dout);
    conv_close(&s);
    chm_backend_close(be);
}

Test(causal_conv1d, backward_accumulates) {
    check_accumulates(CHM_F32);
    check_accumulates(CHM_F64);
}

/* chm_causal_conv1d_bwd_set_dx: dx is written whatever it held (NaN here), dw and dbias still
   accumulate: the same as the accumulating backward onto dx = 0. */
Test(causal_conv1d, backward_set_dx_writes_dx) {
    chm_backend *be = tt_open_cpu();
    conv_run s = conv_open(be, CHM_F64, (conv_case){2, 6, 5, 4, true, true}, 91);
    tt_rng r = tt_rng_make(92);
    double *dout = rand_vec(&r, nx(&s.c), -1, 1, CHM_F64), *g0[3], *want[3], *got[3];
    for (int i = 0; i < 3; i++) {
        g0[i] = rand_vec(&r, in_numel(&s.c, i), -2, 2, CHM_F64);
        want[i] = tt_dalloc(in_numel(&s.c, i));
        got[i] = tt_dalloc(in_numel(&s.c, i));
    }
    for (int64_t j = 0; j < nx(&s.c); j++) g0[0][j] = 0.0;
    conv_run_bwd(be, &s, dout, g0, want); /* accumulate onto dx = 0 */
    const chm_tensor *bias = conv_upload(be, &s);
    tt_poison(be, &s.dx);
    tt_upload(be, &s.dw, g0[1]);
    tt_upload(be, &s.db, g0[2]);
    tt_upload(be, &s.dout, dout);
    chm_status rc = chm_causal_conv1d_bwd_set_dx(be, &s.dx.t, &s.dw.t, &s.db.t, &s.dout.t,
                                                 &s.x.t, &s.w.t, bias, s.c.silu);
    cr_assert_eq(rc, CHM_OK, "%s", be->err.msg);
    tt_tensor *gt[3] = {&s.dx, &s.dw, &s.db};
    const char *names[3] = {"dx", "dw", "dbias"};
    for (int i = 0; i < 3; i++) {
        tt_download(be, gt[i], got[i]);
        tt_assert_close(names[i], got[i], want[i], in_numel(&s.c, i), 0, 0);
    }
    for (int i = 0; i < 3; i++) free(g0[i]), free(want[i]), free(got[i]);
    free(dout);
    conv_close(&s);
    chm_backend_close(be);
}

Test(causal_conv1d, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    conv_run s = conv_open(be, CHM_F32, (conv_case){1, 4, 3, 2, true, false}, 81);
    tt_tensor w_bad = tt_alloc(be, CHM_F32, 2, (int64_t[]){4, 2});
    tt_tensor w0 = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 0});
    tt_tensor b64 = tt_alloc(be, CHM_F64, 1, (int64_t[]){3});
    const char *fw = "causal_conv1d_fwd", *bw = "causal_conv1d_bwd";
    tt_expect_fail(be, chm_causal_conv1d_fwd(be, &s.out.t, &s.x.t, &w_bad.t, NULL, false),
                CHM_ERR_SHAPE, fw, "w must have shape");
    tt_expect_fail(be, chm_causal_conv1d_fwd(be, &s.out.t, &s.x.t, &w0.t, NULL, false),
                CHM_ERR_INVALID_ARG, fw, "W=0");
    tt_expect_fail(be, chm_causal_conv1d_fwd(be, &s.out.t, &s.x.t, &s.w.t, &b64.t, false),
                CHM_ERR_DTYPE, fw, "bias");
    tt_expect_fail(be, chm_causal_conv1d_fwd(be, &s.x.t, &s.x.t, &s.w.t, NULL, true),
                CHM_ERR_INVALID_ARG, fw, "out overlaps x");
    tt_expect_fail(be, chm_causal_conv1d_bwd(be, &s.dx.t, &s.dw.t, &s.db.t, &s.dout.t, &s.x.t,
                                          &s.w.t, NULL, false),
                CHM_ERR_INVALID_ARG, bw, "dbias is given but bias is absent");
    tt_expect_fail(be, chm_causal_conv1d_bwd(be, &s.dx.t, &s.dout.t, NULL, &s.dout.t, &s.x.t,
                                          &s.w.t, &s.b.t, false),
                CHM_ERR_SHAPE, bw, "dw");
    tt_expect_fail(be, chm_causal_conv1d_bwd(be, &s.dout.t, &s.dw.t, NULL, &s.dout.t, &s.x.t,
                                          &s.w.t, &s.b.t, false),
                CHM_ERR_INVALID_ARG, bw, "dx overlaps dout");
    tt_free(&w_bad);
    tt_free(&w0);
    tt_free(&b64);
    conv_close(&s);
    chm_backend_close(be);
}
