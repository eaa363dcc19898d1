/*
 * test_selective_scan.c: the Mamba-1 selective scan (forward, backward, checks).
 *
 * The forward is compared with a naive f64 recurrence with and without each
 * optional input (D, z, delta_bias, softplus), the backward with central
 * finite differences of L = sum(y * R) for every gradient, NULL gradients
 * are skipped, and gradients accumulate onto G0 (or are written, as
 * grads_set says). The forward's saved states (h_saved) and pre-gate outputs
 * (y_saved) are compared with the naive ones, and the backward gives the same
 * results with them.
 */
#include "testutil.h"

/* Input slots, in chm_scan_args order. */
enum { IU, IDELTA, IA, IBM, ICM, ID, IZ, IDB, NIN };
static const char *const in_names[NIN] = {"u", "delta", "A", "Bm", "Cm", "D", "z", "delta_bias"};

/* One configuration: sizes and which optional inputs are present. */
typedef struct scan_case {
    int64_t B, T, Di, N;
    bool has_D, has_z, has_bias, softplus;
} scan_case;

/* Host inputs (NULL when absent) and the backend tensors of one case. */
typedef struct scan_run {
    scan_case c;
    chm_dtype dt;
    double *in[NIN];
    tt_tensor t[NIN], y, dy, g[NIN];
} scan_run;

static bool present(const scan_case *c, int i) {
    return (i != ID || c->has_D) && (i != IZ || c->has_z) && (i != IDB || c->has_bias);
}

/* Number of dims and shape of input slot i. */
static int in_shape(const scan_case *c, int i, int64_t shape[3]) {
    switch (i) {
    case IA: shape[0] = c->Di, shape[1] = c->N; return 2;
    case IBM:
    case ICM: shape[0] = c->B, shape[1] = c->T, shape[2] = c->N; return 3;
    case ID:
    case IDB: shape[0] = c->Di; return 1;
    default: shape[0] = c->B, shape[1] = c->T, shape[2] = c->Di; return 3;
    }
}

static int64_t in_numel(const scan_case *c, int i) {
    int64_t s[3], n = 1;
    int nd = in_shape(c, i, s);
    for (int d = 0; d < nd; d++) n *= s[d];
    return n;
}

static int64_t ny(const scan_case *c) { return c->B * c->T * c->Di; }

/* n uniform values, rounded to f32 when the op runs in f32 (so the reference sees the same). */
static double *rand_vec(tt_rng *r, int64_t n, double lo, double hi, chm_dtype dt) {
    double *x = tt_dalloc(n);
    tt_fill_uniform(r, x, n, lo, hi);
    if (dt == CHM_F32)
        for (int64_t i = 0; i < n; i++) x[i] = (float)x[i];
    return x;
}

/* Random inputs in realistic ranges: A < 0, a positive step without softplus. */
static void scan_inputs(scan_run *s, tt_rng *r) {
    const scan_case *c = &s->c;
    double lo[NIN] = {-1, -1, -1, -1, -1, -1, -2, -0.5}, hi[NIN] = {1, 1, 0.5, 1, 1, 1, 2, 0.5};
    if (!c->softplus) lo[IDELTA] = 0.1, lo[IDB] = 0.0, hi[IDB] = 0.3;
    for (int i = 0; i < NIN; i++) {
        s->in[i] = NULL;
        if (!present(c, i)) continue;
        s->in[i] = rand_vec(r, in_numel(c, i), lo[i], hi[i], s->dt);
    }
    for (int64_t j = 0; j < in_numel(c, IA); j++) {
        double a = -exp(s->in[IA][j]);
        s->in[IA][j] = s->dt == CHM_F32 ? (float)a : a;
    }
}

static scan_run scan_open(chm_backend *be, chm_dtype dt, scan_case c, uint64_t seed) {
    scan_run s = {.c = c, .dt = dt};
    tt_rng r = tt_rng_make(seed);
    scan_inputs(&s, &r);
    int64_t shape[3];
    for (int i = 0; i < NIN; i++) {
        int nd = in_shape(&c, i, shape);
        s.t[i] = tt_alloc(be, dt, nd, shape);
        s.g[i] = tt_alloc(be, dt, nd, shape);
    }
    in_shape(&c, IU, shape);
    s.y = tt_alloc(be, dt, 3, shape);
    s.dy = tt_alloc(be, dt, 3, shape);
    return s;
}

static void scan_close(scan_run *s) {
    for (int i = 0; i < NIN; i++) {
        free(s->in[i]);
        tt_free(&s->t[i]);
        tt_free(&s->g[i]);
    }
    tt_free(&s->y);
    tt_free(&s->dy);
}

/* Upload the host inputs and describe them for the op. */
static chm_scan_args scan_args(chm_backend *be, scan_run *s) {
    const chm_tensor *p[NIN];
    for (int i = 0; i < NIN; i++) {
        p[i] = s->in[i] ? &s->t[i].t : NULL;
        if (s->in[i]) tt_upload(be, &s->t[i], s->in[i]);
    }
    return (chm_scan_args){p[IU], p[IDELTA], p[IA], p[IBM], p[ICM], p[ID], p[IZ], p[IDB],
                           s->c.softplus, NULL, 0, NULL};
}

/* Saved-state entries of a case: [B, K, Di, N]. */
static int64_t saved_k(const scan_case *c) {
    return (c->T + CHM_SCAN_SAVE_STRIDE - 1) / CHM_SCAN_SAVE_STRIDE;
}
static int64_t nsaved(const scan_case *c) { return c->B * saved_k(c) * c->Di * c->N; }

static void scan_run_fwd(chm_backend *be, scan_run *s, double *y) {
    chm_scan_args a = scan_args(be, s);
    tt_poison(be, &s->y);
    cr_assert_eq(chm_selective_scan_fwd(be, &s->y.t, &a), CHM_OK, "%s", be->err.msg);
    tt_download(be, &s->y, y);
}

/* Backward with dy on the gradients whose want[i] is set: they start at g0[i], end in got[i]. */
static void scan_run_bwd(chm_backend *be, scan_run *s, const double *dy, const bool want[NIN],
                         double *const g0[NIN], double *const got[NIN]) {
    chm_scan_args a = scan_args(be, s);
    tt_upload(be, &s->dy, dy);
    chm_tensor *g[NIN];
    for (int i = 0; i < NIN; i++) {
        g[i] = want[i] ? &s->g[i].t : NULL;
        if (want[i]) tt_upload(be, &s->g[i], g0[i]);
    }
    chm_scan_grads gr = {g[IU], g[IDELTA], g[IA], g[IBM], g[ICM], g[ID], g[IZ], g[IDB]};
    cr_assert_eq(chm_selective_scan_bwd(be, &gr, &s->dy.t, &a), CHM_OK, "%s", be->err.msg);
    for (int i = 0; i < NIN; i++)
        if (want[i]) tt_download(be, &s->g[i], got[i]);
}

/* Naive recurrence in f64, written straight from backend.h; hs (or NULL) receives the
   states h_saved holds: after every CHM_SCAN_SAVE_STRIDE steps and after the last; yraw (or
   NULL) the outputs before the gate, which y_saved holds. */
static void ref_scan_raw(const scan_case *c, double *const in[NIN], double *y, double *hs,
                         double *yraw) {
    int64_t T = c->T, Di = c->Di, N = c->N, S = CHM_SCAN_SAVE_STRIDE, K = saved_k(c);
    double *h = tt_dalloc(N);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t ch = 0; ch < Di; ch++) {
            memset(h, 0, (size_t)N * sizeof *h);
            for (int64_t t = 0; t < T; t++) {
                int64_t at = (b * T + t) * Di + ch;
                double d = in[IDELTA][at] + (c->has_bias ? in[IDB][ch] : 0.0);
                if (c->softplus) d = log(1.0 + exp(d));
                double out = c->has_D ? in[ID][ch] * in[IU][at] : 0.0;
                for (int64_t n = 0; n < N; n++) {
                    int64_t bt = (b * T + t) * N + n;
                    h[n] = exp(d * in[IA][ch * N + n]) * h[n] + d * in[IBM][bt] * in[IU][at];
                    out += in[ICM][bt] * h[n];
                }
                if (yraw) yraw[at] = out;
                if (c->has_z) out *= in[IZ][at] / (1.0 + exp(-in[IZ][at]));
                y[at] = out;
                if (hs && ((t + 1) % S == 0 || t == T - 1))
                    memcpy(hs + ((b * K + t / S) * Di + ch) * N, h, (size_t)N * sizeof *h);
            }
        }
    free(h);
}

static void ref_scan(const scan_case *c, double *const in[NIN], double *y, double *hs) {
    ref_scan_raw(c, in, y, hs, NULL);
}

static const scan_case fwd_cases[] = {
    {1, 1, 1, 1, true, true, true, true},      /* T = 1 */
    {2, 7, 3, 5, true, true, true, true},      /* everything on */
    {1, 13, 5, 3, false, false, false, false}, /* everything off */
    {2, 4, 7, 2, true, false, false, true},    /* D and softplus only */
    {3, 5, 2, 4, false, true, true, false},    /* z and bias, no softplus */
    {2, 3, 67, 2, true, true, true, true},     /* more channels than one block */
};
#define NCASES (sizeof fwd_cases / sizeof *fwd_cases)

Test(selective_scan, forward_matches_naive) {
    chm_backend *be = tt_open_cpu();
    chm_dtype dts[2] = {CHM_F32, CHM_F64};
    for (size_t i = 0; i < NCASES; i++)
        for (int k = 0; k < 2; k++) {
            scan_run s = scan_open(be, dts[k], fwd_cases[i], 100 + i);
            double *got = tt_dalloc(ny(&s.c)), *want = tt_dalloc(ny(&s.c));
            scan_run_fwd(be, &s, got);
            ref_scan(&s.c, s.in, want, NULL);
            tt_assert_close("y", got, want, ny(&s.c), TT_ATOL(dts[k]), TT_RTOL(dts[k]));
            free(got), free(want);
            scan_close(&s);
        }
    chm_backend_close(be);
}

/* L = sum(y * R) through the backend's forward. */
static double scan_loss(chm_backend *be, scan_run *s, const double *R, double *y) {
    scan_run_fwd(be, s, y);
    double L = 0;
    for (int64_t i = 0; i < ny(&s->c); i++) L += y[i] * R[i];
    return L;
}

/* Central differences of the loss with respect to every element of input slot i. */
static void scan_fd_grad(chm_backend *be, scan_run *s, int i, const double *R, double *g) {
    double *x = s->in[i], *y = tt_dalloc(ny(&s->c));
    for (int64_t j = 0; j < in_numel(&s->c, i); j++) {
        double x0 = x[j], h = 1e-6 * fmax(1.0, fabs(x0));
        x[j] = x0 + h;
        double lp = scan_loss(be, s, R, y);
        x[j] = x0 - h;
        double lm = scan_loss(be, s, R, y);
        x[j] = x0;
        g[j] = (lp - lm) / (2 * h);
    }
    free(y);
}

/* Zero-filled arrays for every present input (want[i] set), NULL elsewhere. */
static void grad_arrays(const scan_run *s, bool want[NIN], double *a[NIN]) {
    for (int i = 0; i < NIN; i++) {
        want[i] = s->in[i] != NULL;
        a[i] = want[i] ? tt_dalloc(in_numel(&s->c, i)) : NULL;
    }
}

static void check_backward(scan_case c, uint64_t seed) {
    chm_backend *be = tt_open_cpu();
    scan_run s = scan_open(be, CHM_F64, c, seed);
    tt_rng r = tt_rng_make(seed + 7);
    double *R = rand_vec(&r, ny(&c), -1, 1, CHM_F64);
    bool want[NIN];
    double *zero[NIN], *got[NIN], *fd[NIN];
    grad_arrays(&s, want, zero);
    grad_arrays(&s, want, got);
    grad_arrays(&s, want, fd);
    scan_run_bwd(be, &s, R, want, zero, got);
    for (int i = 0; i < NIN; i++) {
        if (!want[i]) continue;
        scan_fd_grad(be, &s, i, R, fd[i]);
        double err = tt_rel_l2(got[i], fd[i], in_numel(&c, i));
        cr_assert(err < 1e-6, "d%s: relative L2 error %g against finite differences (case %lld)",
                  in_names[i], err, (long long)seed);
    }
    for (int i = 0; i < NIN; i++) free(zero[i]), free(got[i]), free(fd[i]);
    free(R);
    scan_close(&s);
    chm_backend_close(be);
}

Test(selective_scan, backward_matches_finite_differences) {
    check_backward((scan_case){2, 5, 3, 4, true, true, true, true}, 1);
    check_backward((scan_case){1, 4, 5, 3, false, false, false, false}, 2);
    check_backward((scan_case){2, 4, 3, 2, true, false, true, false}, 3);
    check_backward((scan_case){1, 1, 3, 2, true, true, true, true}, 4);
    check_backward((scan_case){2, 3, 67, 2, true, true, true, true}, 5);
}

Test(selective_scan, backward_skips_null_gradients) {
    chm_backend *be = tt_open_cpu();
    scan_run s = scan_open(be, CHM_F64, (scan_case){2, 5, 3, 4, true, true, true, true}, 9);
    tt_rng r = tt_rng_make(19);
    double *dy = rand_vec(&r, ny(&s.c), -1, 1, CHM_F64);
    bool all[NIN], some[NIN] = {false, false, true, false, true, false, false, true};
    double *zero[NIN], *full[NIN], *part[NIN];
    grad_arrays(&s, all, zero);
    grad_arrays(&s, all, full);
    grad_arrays(&s, all, part);
    scan_run_bwd(be, &s, dy, all, zero, full);
    scan_run_bwd(be, &s, dy, some, zero, part);
    for (int i = 0; i < NIN; i++)
        if (some[i])
            tt_assert_close(in_names[i], part[i], full[i], in_numel(&s.c, i), 0, 0);
    bool none[NIN] = {false};
    scan_run_bwd(be, &s, dy, none, zero, part);
    for (int i = 0; i < NIN; i++) free(zero[i]), free(full[i]), free(part[i]);
    free(dy);
    scan_close(&s);
    chm_backend_close(be);
}

/* 130 channels: three blocks of the cpu scan, whose channel sums must not depend on threads. */
static const scan_case threads_case = {2, 4, 130, 3, true, true, true, true};

/* All gradients of threads_case on a cpu backend with `threads` threads. */
static void grads_with_threads(int threads, double *got[NIN]) {
    chm_backend_options opts = {.device_index = -1, .threads = threads, .quiet = true};
    chm_backend *be = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_backend_open("cpu", &opts, &be, &err), CHM_OK, "%s", err.msg);
    scan_run s = scan_open(be, CHM_F32, threads_case, 77);
    tt_rng r = tt_rng_make(78);
    double *dy = rand_vec(&r, ny(&s.c), -1, 1, CHM_F32), *zero[NIN];
    bool all[NIN];
    grad_arrays(&s, all, zero);
    grad_arrays(&s, all, got);
    scan_run_bwd(be, &s, dy, all, zero, got);
    for (int i = 0; i < NIN; i++) free(zero[i]);
    free(dy);
    scan_close(&s);
    chm_backend_close(be);
}

Test(selective_scan, backward_is_independent_of_thread_count) {
    double *one[NIN], *three[NIN];
    grads_with_threads(1, one);
    grads_with_threads(3, three);
    for (int i = 0; i < NIN; i++) {
        tt_assert_close(in_names[i], three[i], one[i], in_numel(&threads_case, i), 0, 0);
        free(one[i]), free(three[i]);
    }
}

static void check_accumulates(chm_dtype dt) {
    chm_backend *be = tt_open_cpu();
    scan_run s = scan_open(be, dt, (scan_case){2, 6, 5, 3, true, true, true, true}, 29);
    tt_rng r = tt_rng_make(39);
    double *dy = rand_vec(&r, ny(&s.c), -1, 1, dt);
    bool all[NIN];
    double *zero[NIN], *grad[NIN], *got[NIN], *g0[NIN];
    grad_arrays(&s, all, zero);
    grad_arrays(&s, all, grad);
    grad_arrays(&s, all, got);
    for (int i = 0; i < NIN; i++) g0[i] = rand_vec(&r, in_numel(&s.c, i), -2, 2, dt);
    scan_run_bwd(be, &s, dy, all, zero, grad);
    scan_run_bwd(be, &s, dy, all, g0, got);
    for (int i = 0; i < NIN; i++) {
        for (int64_t j = 0; j < in_numel(&s.c, i); j++) grad[i][j] += g0[i][j];
        tt_assert_close(in_names[i], got[i], grad[i], in_numel(&s.c, i), TT_ATOL(dt),
                        TT_RTOL(dt));
    }
    for (int i = 0; i < NIN; i++) free(zero[i]), free(grad[i]), free(got[i]), free(g0[i]);
    free(dy);
    scan_close(&s);
    chm_backend_close(be);
}

Test(selective_scan, backward_accumulates) {
    check_accumulates(CHM_F32);
    check_accumulates(CHM_F64);
}

Test(selective_scan, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    scan_case c = {1, 3, 4, 2, false, true, true, true};
    scan_run s = scan_open(be, CHM_F32, c, 5);
    chm_scan_args a = scan_args(be, &s);
    const char *fw = "selective_scan_fwd", *bw = "selective_scan_bwd";
    tt_tensor bad_bm = tt_alloc(be, CHM_F32, 3, (int64_t[]){1, 3, 3});
    tt_tensor z64 = tt_alloc(be, CHM_F64, 3, (int64_t[]){1, 3, 4});
    chm_scan_args b = a;
    b.Bm = &bad_bm.t;
    tt_expect_fail(be, chm_selective_scan_fwd(be, &s.y.t, &b), CHM_ERR_SHAPE, fw, "Bm");
    b = a;
    b.z = &z64.t;
    tt_expect_fail(be, chm_selective_scan_fwd(be, &s.y.t, &b), CHM_ERR_DTYPE, fw, "z");
    tt_expect_fail(be, chm_selective_scan_fwd(be, &s.t[IZ].t, &a), CHM_ERR_INVALID_ARG, fw,
                "y overlaps z");
    chm_scan_grads g = {.dD = &s.g[ID].t};
    tt_expect_fail(be, chm_selective_scan_bwd(be, &g, &s.dy.t, &a), CHM_ERR_INVALID_ARG, bw,
                "dD is given but D is absent");
    g = (chm_scan_grads){.dz = &s.g[IBM].t};
    tt_expect_fail(be, chm_selective_scan_bwd(be, &g, &s.dy.t, &a), CHM_ERR_SHAPE, bw,
                "dz and z must match");
    g = (chm_scan_grads){.du = &s.g[IU].t, .dz = &s.g[IU].t};
    tt_expect_fail(be, chm_selective_scan_bwd(be, &g, &s.dy.t, &a), CHM_ERR_INVALID_ARG, bw,
                "du overlaps dz");
    tt_free(&bad_bm);
    tt_free(&z64);
    scan_close(&s);
    chm_backend_close(be);
}

/* The forward with h_saved and, with a gate, y_saved: the same y, the states after every 16
   steps (f32) and the outputs before the gate. */
static void check_saved_outputs(chm_dtype dt, scan_case c, uint64_t seed) {
    chm_backend *be = tt_open_cpu();
    scan_run s = scan_open(be, dt, c, seed);
    int64_t ns = nsaved(&c), n = ny(&c);
    tt_tensor hs = tt_alloc(be, CHM_F32, 4, (int64_t[]){c.B, saved_k(&c), c.Di, c.N});
    tt_tensor ys = tt_alloc(be, dt, 3, (int64_t[]){c.B, c.T, c.Di});
    double *y0 = tt_dalloc(n), *y1 = tt_dalloc(n), *want = tt_dalloc(n), *raw = tt_dalloc(n);
    double *got = tt_dalloc(ns), *hw = tt_dalloc(ns), *ygot = tt_dalloc(n);
    scan_run_fwd(be, &s, y0);
    chm_scan_args a = scan_args(be, &s);
    a.h_saved = &hs.t;
    a.y_saved = c.has_z ? &ys.t : NULL;
    tt_poison(be, &s.y);
    tt_poison(be, &hs);
    tt_poison(be, &ys);
    cr_assert_eq(chm_selective_scan_fwd(be, &s.y.t, &a), CHM_OK, "%s", be->err.msg);
    tt_download(be, &s.y, y1);
    tt_download(be, &hs, got);
    tt_assert_close("y with h_saved and y_saved", y1, y0, n, 0, 0);
    ref_scan_raw(&c, s.in, want, hw, raw);
    tt_assert_close("h_saved", got, hw, ns, TT_ATOL(CHM_F32), TT_RTOL(CHM_F32));
    if (c.has_z) {
        tt_download(be, &ys, ygot);
        tt_assert_close("y_saved", ygot, raw, n, TT_ATOL(dt), TT_RTOL(dt));
    }
    free(y0), free(y1), free(want), free(raw), free(got), free(hw), free(ygot);
    tt_free(&hs);
    tt_free(&ys);
    scan_close(&s);
    chm_backend_close(be);
}

Test(selective_scan, forward_writes_saved_states) {
    chm_dtype dts[2] = {CHM_F32, CHM_F64};
    for (int k = 0; k < 2; k++) {
        check_saved_outputs(dts[k], (scan_case){2, 37, 5, 3, true, true, true, true}, 41);
        check_saved_outputs(dts[k], (scan_case){1, 16, 3, 4, false, false, false, false}, 42);
        check_saved_outputs(dts[k], (scan_case){3, 5, 2, 1, true, true, false, true}, 43);
        check_saved_outputs(dts[k], (scan_case){1, 33, 7, 2, false, true, true, false}, 44);
        check_saved_outputs(dts[k], (scan_case){1, 20, 67, 2, false, true, false, true}, 46);
    }
}

/* Backward after a forward that saved states: with h_saved (and y_saved, with a gate) given
   and set bits `set`, the gradients (starting at NaN where set, at g0 elsewhere) equal the
   accumulate-onto-g0 results without them, except that set ones lack g0. */
static void check_saved_and_set(chm_backend *be, chm_dtype dt, scan_case c, unsigned set,
                                uint64_t seed) {
    scan_run s = scan_open(be, dt, c, seed);
    tt_rng r = tt_rng_make(seed + 3);
    double *dy = rand_vec(&r, ny(&c), -1, 1, dt), *g0[NIN], *want[NIN], *got[NIN];
    bool all[NIN];
    grad_arrays(&s, all, want);
    grad_arrays(&s, all, got);
    for (int i = 0; i < NIN; i++) g0[i] = all[i] ? rand_vec(&r, in_numel(&c, i), -1, 1, dt) : NULL;
    scan_run_bwd(be, &s, dy, all, g0, want);
    tt_tensor hs = tt_alloc(be, CHM_F32, 4, (int64_t[]){c.B, saved_k(&c), c.Di, c.N});
    tt_tensor ys = tt_alloc(be, dt, 3, (int64_t[]){c.B, c.T, c.Di});
    chm_scan_args a = scan_args(be, &s);
    a.h_saved = &hs.t;
    a.y_saved = c.has_z ? &ys.t : NULL;
    a.grads_set = set;
    cr_assert_eq(chm_selective_scan_fwd(be, &s.y.t, &a), CHM_OK, "%s", be->err.msg);
    chm_tensor *g[NIN];
    for (int i = 0; i < NIN; i++) {
        g[i] = all[i] ? &s.g[i].t : NULL;
        if (!all[i]) continue;
        if (set >> i & 1) tt_poison(be, &s.g[i]);
        else tt_upload(be, &s.g[i], g0[i]);
    }
    chm_scan_grads gr = {g[IU], g[IDELTA], g[IA], g[IBM], g[ICM], g[ID], g[IZ], g[IDB]};
    cr_assert_eq(chm_selective_scan_bwd(be, &gr, &s.dy.t, &a), CHM_OK, "%s", be->err.msg);
    for (int i = 0; i < NIN; i++) {
        if (!all[i]) continue;
        tt_download(be, &s.g[i], got[i]);
        if (set >> i & 1)
            for (int64_t j = 0; j < in_numel(&c, i); j++) got[i][j] += g0[i][j];
        tt_assert_close(in_names[i], got[i], want[i], in_numel(&c, i), TT_ATOL(dt), TT_RTOL(dt));
    }
    for (int i = 0; i < NIN; i++) free(g0[i]), free(want[i]), free(got[i]);
    free(dy);
    tt_free(&hs);
    tt_free(&ys);
    scan_close(&s);
}

Test(selective_scan, backward_with_saved_states_and_set_gradients) {
    chm_backend *be = tt_open_cpu();
    scan_case c = {2, 37, 5, 3, true, true, true, true};
    unsigned model = CHM_SCAN_SET_DU | CHM_SCAN_SET_DDELTA | CHM_SCAN_SET_DZ | CHM_SCAN_SET_DBM |
                     CHM_SCAN_SET_DCM | CHM_SCAN_SET_DA;
    for (int k = 0; k < 2; k++) {
        chm_dtype dt = k ? CHM_F64 : CHM_F32;
        check_saved_and_set(be, dt, c, 0, 51);
        check_saved_and_set(be, dt, c, 0xff, 52);
        check_saved_and_set(be, dt, c, model, 53);
        check_saved_and_set(be, dt, (scan_case){1, 5, 67, 2, false, false, false, true}, 0x5a, 54);
    }
    chm_backend_close(be);
}

/* Set gradients of sums over nothing are zeros: dBm, dCm with Di = 0, dA, dD, ddelta_bias
   with T = 0. */
Test(selective_scan, backward_sets_empty_sums_to_zero) {
    chm_backend *be = tt_open_cpu();
    scan_case cs[2] = {{2, 3, 0, 2, true, true, true, true}, {2, 0, 3, 2, true, true, true, true}};
    for (int k = 0; k < 2; k++) {
        scan_run s = scan_open(be, CHM_F32, cs[k], 60 + (uint64_t)k);
        chm_scan_args a = scan_args(be, &s);
        a.grads_set = 0xffu;
        chm_scan_grads g = {&s.g[IU].t,  &s.g[IDELTA].t, &s.g[IA].t, &s.g[IBM].t,
                            &s.g[ICM].t, &s.g[ID].t,     &s.g[IZ].t, &s.g[IDB].t};
        for (int i = 0; i < NIN; i++) tt_poison(be, &s.g[i]);
        cr_assert_eq(chm_selective_scan_bwd(be, &g, &s.dy.t, &a), CHM_OK, "%s", be->err.msg);
        for (int i = 0; i < NIN; i++) {
            int64_t n = in_numel(&s.c, i);
            double *got = tt_dalloc(n), *zero = tt_dalloc(n);
            tt_download(be, &s.g[i], got);
            tt_assert_close(in_names[i], got, zero, n, 0, 0);
            free(got), free(zero);
        }
        scan_close(&s);
    }
    chm_backend_close(be);
}

/* A saved output (`name`) of the wrong shape fails the forward, of the wrong dtype the backward. */
static void expect_bad_saved(chm_backend *be, scan_run *s, const chm_scan_args *bad_shape,
                             const chm_scan_args *bad_dtype, const char *name) {
    tt_expect_fail(be, chm_selective_scan_fwd(be, &s->y.t, bad_shape), CHM_ERR_SHAPE,
                   "selective_scan_fwd", name);
    tt_expect_fail(be, chm_selective_scan_bwd(be, &(chm_scan_grads){0}, &s->dy.t, bad_dtype),
                   CHM_ERR_DTYPE, "selective_scan_bwd", name);
}

/* h_saved's and y_saved's shape, dtype and overlaps, and grads_set's bits (T = 17: 2 saved
   states). */
Test(selective_scan, wrapper_rejects_bad_saved_outputs) {
    const char *fw = "selective_scan_fwd", *bw = "selective_scan_bwd";
    chm_backend *be = tt_open_cpu();
    scan_run s = scan_open(be, CHM_F32, (scan_case){1, 17, 4, 2, true, true, true, true}, 6);
    tt_tensor k1 = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 1, 4, 2}),
              h64 = tt_alloc(be, CHM_F64, 4, (int64_t[]){1, 2, 4, 2}),
              ok = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 2, 4, 2});
    chm_scan_args a = scan_args(be, &s), b = a, b2 = a;
    b.h_saved = &k1.t;
    b2.h_saved = &h64.t;
    expect_bad_saved(be, &s, &b, &b2, "h_saved");
    b = a;
    b.grads_set = 1u << 8;
    tt_expect_fail(be, chm_selective_scan_bwd(be, &(chm_scan_grads){0}, &s.dy.t, &b),
                   CHM_ERR_INVALID_ARG, bw, "grads_set");
    /* h_saved is an output of the forward and an input of the backward: no sharing */
    chm_tensor hv = chm_tensor_make(s.y.t.buf, s.y.t.offset, CHM_F32, 4, ok.t.shape);
    b = a;
    b.h_saved = &hv;
    tt_expect_fail(be, chm_selective_scan_fwd(be, &s.y.t, &b), CHM_ERR_INVALID_ARG, fw,
                   "h_saved overlaps y");
    hv = chm_tensor_make(s.g[IU].t.buf, s.g[IU].t.offset, CHM_F32, 4, ok.t.shape);
    chm_scan_grads g = {.du = &s.g[IU].t};
    tt_expect_fail(be, chm_selective_scan_bwd(be, &g, &s.dy.t, &b), CHM_ERR_INVALID_ARG, bw,
                   "du overlaps h_saved");
    /* y_saved: only with a gate, shaped and typed like u, apart from the forward's other
       tensors and from the backward's gradients */
    tt_tensor t16 = tt_alloc(be, CHM_F32, 3, (int64_t[]){1, 16, 4}),
              y64 = tt_alloc(be, CHM_F64, 3, (int64_t[]){1, 17, 4}),
              y32 = tt_alloc(be, CHM_F32, 3, (int64_t[]){1, 17, 4});
    b = b2 = a;
    b.y_saved = &t16.t;
    b2.y_saved = &y64.t;
    expect_bad_saved(be, &s, &b, &b2, "y_saved");
    b = a;
    b.z = NULL;
    b.y_saved = &y32.t;
    tt_expect_fail(be, chm_selective_scan_fwd(be, &s.y.t, &b), CHM_ERR_INVALID_ARG, fw,
                   "z is absent");
    b = a;
    b.y_saved = &s.y.t;
    tt_expect_fail(be, chm_selective_scan_fwd(be, &s.y.t, &b), CHM_ERR_INVALID_ARG, fw,
                   "y_saved overlaps y");
    b.y_saved = &s.t[IZ].t;
    tt_expect_fail(be, chm_selective_scan_fwd(be, &y32.t, &b), CHM_ERR_INVALID_ARG, fw,
                   "y_saved overlaps z");
    hv = chm_tensor_make(y32.t.buf, y32.t.offset, CHM_F32, 4, ok.t.shape);
    b.y_saved = &y32.t;
    b.h_saved = &hv;
    tt_expect_fail(be, chm_selective_scan_fwd(be, &s.y.t, &b), CHM_ERR_INVALID_ARG, fw,
                   "y_saved overlaps h_saved");
    b = a;
    b.y_saved = &s.g[IZ].t;
    g = (chm_scan_grads){.dz = &s.g[IZ].t};
    tt_expect_fail(be, chm_selective_scan_bwd(be, &g, &s.dy.t, &b), CHM_ERR_INVALID_ARG, bw,
                   "dz overlaps y_saved");
    tt_free(&k1), tt_free(&h64), tt_free(&ok), tt_free(&t16), tt_free(&y64), tt_free(&y32);
    scan_close(&s);
    chm_backend_close(be);
}
