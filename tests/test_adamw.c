/*
 * test_adamw.c: the fused AdamW step against a naive loop in double over
 * several steps, the bias correction of the first step, decoupled weight
 * decay, grad_scale, the rounded 16-bit copy, and the argument checks.
 */
#include "core/half.h"
#include "testutil.h"

static const chm_dtype dts[] = {CHM_F32, CHM_F64};

/* param, grad, m, v of n elements on the backend. */
typedef struct adam_state {
    tt_tensor p, g, m, v;
    int64_t n;
} adam_state;

static adam_state state_alloc(chm_backend *be, chm_dtype dt, int64_t n) {
    adam_state s = {.n = n};
    s.p = tt_alloc(be, dt, 1, &n);
    s.g = tt_alloc(be, dt, 1, &n);
    s.m = tt_alloc(be, dt, 1, &n);
    s.v = tt_alloc(be, dt, 1, &n);
    return s;
}

static void state_free(adam_state *s) {
    tt_free(&s->p);
    tt_free(&s->g);
    tt_free(&s->m);
    tt_free(&s->v);
}

/* Upload host values into t, then read back what was stored (rounded for f32). */
static void put(chm_backend *be, const tt_tensor *t, double *host) {
    tt_upload(be, t, host);
    tt_download(be, t, host);
}

/* The textbook step in double on host arrays. */
static void naive_step(double *p, const double *g, double *m, double *v, int64_t n,
                       const chm_adamw_args *a) {
    double c1 = 1 - pow(a->beta1, (double)a->step), c2 = 1 - pow(a->beta2, (double)a->step);
    for (int64_t i = 0; i < n; i++) {
        double gi = a->grad_scale * g[i];
        m[i] = a->beta1 * m[i] + (1 - a->beta1) * gi;
        v[i] = a->beta2 * v[i] + (1 - a->beta2) * gi * gi;
        p[i] -= a->lr * ((m[i] / c1) / (sqrt(v[i] / c2) + a->eps) + a->weight_decay * p[i]);
    }
}

/* Five steps with fresh random grads; param, m and v compared after each. */
static void steps_case(chm_backend *be, chm_dtype dt, int64_t n, tt_rng *rng) {
    adam_state s = state_alloc(be, dt, n);
    double *p = tt_dalloc(n), *g = tt_dalloc(n), *m = tt_dalloc(n), *v = tt_dalloc(n);
    double *got = tt_dalloc(n);
    tt_fill_uniform(rng, p, n, -1, 1);
    tt_fill_uniform(rng, m, n, -0.1, 0.1);
    tt_fill_uniform(rng, v, n, 0.001, 0.01);
    put(be, &s.p, p);
    put(be, &s.m, m);
    put(be, &s.v, v);
    chm_adamw_args a = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                        .weight_decay = 0.1, .grad_scale = 0.5};
    for (a.step = 1; a.step <= 5; a.step++) {
        tt_fill_uniform(rng, g, n, -1, 1);
        put(be, &s.g, g);
        cr_assert_eq(chm_adamw_step(be, &s.p.t, &s.g.t, &s.m.t, &s.v.t, NULL, &a), CHM_OK, "%s",
                     be->err.msg);
        naive_step(p, g, m, v, n, &a);
        tt_download(be, &s.p, got);
        tt_assert_close("param", got, p, n, TT_ATOL(dt), TT_RTOL(dt));
        tt_download(be, &s.m, got);
        tt_assert_close("m", got, m, n, TT_ATOL(dt), TT_RTOL(dt));
        tt_download(be, &s.v, got);
        tt_assert_close("v", got, v, n, TT_ATOL(dt) * 1e-3, TT_RTOL(dt));
    }
    state_free(&s);
    free(p);
    free(g);
    free(m);
    free(v);
    free(got);
}

Test(adamw, several_steps_match_naive_loop) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(31);
    static const int64_t sizes[] = {1, 7, 13, 100003};
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            steps_case(be, dts[d], sizes[i], &rng);
    chm_backend_close(be);
}

Test(adamw, first_step_bias_correction_gives_sign_steps) {
    /* m = v = 0, step 1: mhat = g, vhat = g^2, so the update is lr * g / (|g| + eps) */
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(32);
    enum { N = 9 };
    adam_state s = state_alloc(be, CHM_F64, N);
    double p[N], g[N], zero[N] = {0}, got[N], want[N];
    tt_fill_uniform(&rng, p, N, -1, 1);
    tt_fill_uniform(&rng, g, N, -1e-3, 1e-3);
    put(be, &s.p, p);
    put(be, &s.g, g);
    tt_upload(be, &s.m, zero);
    tt_upload(be, &s.v, zero);
    chm_adamw_args a = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-12, .step = 1,
                        .grad_scale = 1};
    cr_assert_eq(chm_adamw_step(be, &s.p.t, &s.g.t, &s.m.t, &s.v.t, NULL, &a), CHM_OK, "%s",
                 be->err.msg);
    for (int i = 0; i < N; i++) want[i] = p[i] - 0.1 * g[i] / (fabs(g[i]) + 1e-12);
    tt_download(be, &s.p, got);
    tt_assert_close("param after step 1", got, want, N, 1e-14, 1e-14);
    /* the uncorrected moments would have stepped by 0.1 * 0.1/sqrt(0.001) ~ 0.32 instead */
    for (int i = 0; i < N; i++) cr_assert(fabs(fabs(got[i] - p[i]) - 0.1) < 1e-6);
    state_free(&s);
    chm_backend_close(be);
}

Test(adamw, weight_decay_is_decoupled) {
    /* a zero gradient with zero moments leaves only the decay: param *= 1 - lr*wd */
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(33);
    enum { N = 7 };
    adam_state s = state_alloc(be, CHM_F64, N);
    double p[N], zero[N] = {0}, got[N], want[N];
    tt_fill_uniform(&rng, p, N, -1, 1);
    put(be, &s.p, p);
    tt_upload(be, &s.g, zero);
    tt_upload(be, &s.m, zero);
    tt_upload(be, &s.v, zero);
    chm_adamw_args a = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .weight_decay = 0.5, .step = 7, .grad_scale = 1};
    cr_assert_eq(chm_adamw_step(be, &s.p.t, &s.g.t, &s.m.t, &s.v.t, NULL, &a), CHM_OK, "%s",
                 be->err.msg);
    for (int i = 0; i < N; i++) want[i] = p[i] * (1 - 0.01 * 0.5);
    tt_download(be, &s.p, got);
    tt_assert_close("decayed param", got, want, N, 1e-15, 1e-14);
    state_free(&s);
    chm_backend_close(be);
}

/* One step from fixed moments with grad g scaled by gs; the new param into out. */
static void scaled_step(chm_backend *be, adam_state *s, const double *p, const double *g,
                        const double *m, const double *v, double gs, double *out) {
    tt_upload(be, &s->p, p);
    tt_upload(be, &s->g, g);
    tt_upload(be, &s->m, m);
    tt_upload(be, &s->v, v);
    chm_adamw_args a = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .weight_decay = 0.01, .step = 3, .grad_scale = gs};
    cr_assert_eq(chm_adamw_step(be, &s->p.t, &s->g.t, &s->m.t, &s->v.t, NULL, &a), CHM_OK, "%s",
                 be->err.msg);
    tt_download(be, &s->p, out);
}

Test(adamw, grad_scale_multiplies_the_gradient) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(34);
    enum { N = 13 };
    adam_state s = state_alloc(be, CHM_F64, N);
    double p[N], g[N], g4[N], m[N], v[N], a[N], b[N];
    tt_fill_uniform(&rng, p, N, -1, 1);
    tt_fill_uniform(&rng, g, N, -1, 1);
    tt_fill_uniform(&rng, m, N, -0.1, 0.1);
    tt_fill_uniform(&rng, v, N, 0.01, 0.1);
    for (int i = 0; i < N; i++) g4[i] = 0.25 * g[i];
    scaled_step(be, &s, p, g, m, v, 0.25, a);
    scaled_step(be, &s, p, g4, m, v, 1.0, b);
    tt_assert_close("grad_scale 0.25 vs grad/4", a, b, N, 1e-15, 1e-14);
    state_free(&s);
    chm_backend_close(be);
}

/* The 16-bit copy equals the stored new param rounded through f32, for bf16 and f16. */
static void lowp_case(chm_backend *be, chm_dtype pdt, chm_dtype ldt, tt_rng *rng) {
    enum { N = 101 };
    adam_state s = state_alloc(be, pdt, N);
    tt_tensor low = tt_alloc(be, ldt, 2, (int64_t[]){1, N});
    double p[N], g[N], m[N], v[N], got[N];
    uint16_t bits[N];
    tt_fill_uniform(rng, p, N, -3, 3);
    tt_fill_uniform(rng, g, N, -1, 1);
    tt_fill_uniform(rng, m, N, -0.1, 0.1);
    tt_fill_uniform(rng, v, N, 0.01, 0.1);
    put(be, &s.p, p);
    put(be, &s.g, g);
    put(be, &s.m, m);
    put(be, &s.v, v);
    chm_adamw_args a = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = 2,
                        .weight_decay = 0.1, .grad_scale = 1};
    cr_assert_eq(chm_adamw_step(be, &s.p.t, &s.g.t, &s.m.t, &s.v.t, &low.t, &a), CHM_OK, "%s",
                 be->err.msg);
    tt_download(be, &s.p, got);
    cr_assert_eq(chm_download(be, &low.t, bits), CHM_OK, "%s", be->err.msg);
    for (int i = 0; i < N; i++) {
        uint16_t want = ldt == CHM_BF16 ? chm_f32_to_bf16((float)got[i])
                                        : chm_f32_to_f16((float)got[i]);
        cr_assert_eq(bits[i], want, "%s copy of %s param %d: 0x%04x, expected 0x%04x (%.9g)",
                     chm_dtype_name(ldt), chm_dtype_name(pdt), i, bits[i], want, got[i]);
    }
    state_free(&s);
    tt_free(&low);
}

Test(adamw, param_lowp_is_the_rounded_param) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(35);
    for (size_t d = 0; d < 2; d++) {
        lowp_case(be, dts[d], CHM_BF16, &rng);
        lowp_case(be, dts[d], CHM_F16, &rng);
    }
    chm_backend_close(be);
}

/* Expect code from one call with args a, and a message naming the op and `what`. */
static void expect_reject(chm_backend *be, adam_state *s, const chm_tensor *low,
                          const chm_adamw_args *a, chm_status code, const char *what) {
    chm_status rc = chm_adamw_step(be, &s->p.t, &s->g.t, &s->m.t, &s->v.t, low, a);
    cr_assert_eq(rc, code, "expected %s for %s, got %s (%s)", chm_status_name(code), what,
                 chm_status_name(rc), be->err.msg);
    cr_assert(strstr(be->err.msg, "adamw_step: ") && strstr(be->err.msg, what), "%s",
              be->err.msg);
}

Test(adamw, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    adam_state s = state_alloc(be, CHM_F32, 6);
    tt_tensor low = tt_alloc(be, CHM_F32, 1, (int64_t[]){6});
    tt_tensor g64 = tt_alloc(be, CHM_F64, 1, (int64_t[]){6});
    const chm_adamw_args ok = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                               .step = 1, .grad_scale = 1};
    chm_adamw_args a = ok;
    a.beta1 = 1.0;
    expect_reject(be, &s, NULL, &a, CHM_ERR_INVALID_ARG, "beta1");
    a = ok, a.beta2 = -0.1;
    expect_reject(be, &s, NULL, &a, CHM_ERR_INVALID_ARG, "beta2");
    a = ok, a.lr = NAN;
    expect_reject(be, &s, NULL, &a, CHM_ERR_INVALID_ARG, "lr");
    a = ok, a.eps = 0;
    expect_reject(be, &s, NULL, &a, CHM_ERR_INVALID_ARG, "eps");
    a = ok, a.step = 0;
    expect_reject(be, &s, NULL, &a, CHM_ERR_INVALID_ARG, "step");
    a = ok, a.weight_decay = -1;
    expect_reject(be, &s, NULL, &a, CHM_ERR_INVALID_ARG, "weight_decay");
    a = ok, a.grad_scale = INFINITY;
    expect_reject(be, &s, NULL, &a, CHM_ERR_INVALID_ARG, "grad_scale");
    expect_reject(be, &s, &low.t, &ok, CHM_ERR_DTYPE, "param_lowp must be bf16 or f16");
    chm_tensor m5 = chm_tensor_1d(s.m.buf, 0, CHM_F32, 5);
    tt_tensor keep = s.m;
    s.m.t = m5;
    expect_reject(be, &s, NULL, &ok, CHM_ERR_SHAPE, "param and m must match");
    s.m = keep;
    tt_tensor keep_g = s.g;
    s.g = s.p;
    expect_reject(be, &s, NULL, &ok, CHM_ERR_INVALID_ARG, "param and grad overlap");
    s.g = g64;  /* accepted by the wrapper, refused by the cpu backend */
    expect_reject(be, &s, NULL, &ok, CHM_ERR_DTYPE, "grad");
    s.g = keep_g;
    state_free(&s);
    tt_free(&low);
    tt_free(&g64);
    chm_backend_close(be);
}
