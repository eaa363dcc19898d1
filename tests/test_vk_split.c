/*
 * test_vk_split.c: vulkan work over tensors larger than one storage-buffer
 * binding may span (suite vk_split).
 *
 * chimera-1b's flat parameter, gradient and moment buffers (4.6 GB each in
 * f32) exceed maxStorageBufferRange (4 GiB on NVIDIA, 128 MiB on lavapipe),
 * so the elementwise ops that sweep them split their work into dispatches
 * over element windows (src/backend/vulkan/vk_split.c) and sum_squares
 * reduces whole blocks per dispatch. Here CHIMERA_VULKAN_MAX_RANGE lowers the
 * limit to a few KiB (4099 bytes: chunks of 1020 f32 elements on lavapipe,
 * so they end at odd places) so that tensors of a few thousand elements take
 * those paths. Each split op is compared with the cpu backend (the
 * tolerances of test_vulkan_ops.c; fill, copy and cast bit for bit, for
 * every dtype they take), and with the same op in one dispatch on an
 * unlimited backend: equal bit for bit. sum_squares is repeatable bit for
 * bit and, where the limit leaves its blocks alone, equal to one pass. An
 * op that cannot split (matmul) refuses a too-large operand with a message
 * naming the limit; malformed settings and buffers larger than the device
 * holds are clear errors; and configs/test.yaml trains 5 steps under a
 * small limit with the same losses and gradient norms, bit for bit, as
 * without. The environment variable is set only around opening a backend
 * (the caps are read at open) and restored. The validation layer must stay
 * silent (tools/test.sh turns it on).
 */
#include <stdio.h>

#include "chimera/trainer.h"
#include "core/half.h"
#include "train_fixture.h"
#include "vk_harness.h"

/* The debugging limit of most tests: 4096 usable bytes, an odd number on purpose. */
#define SMALL "4099"

/* Set CHIMERA_VULKAN_MAX_RANGE to range (NULL: unset); returns the old value for range_restore. */
static char *range_set(const char *range) {
    const char *old = getenv("CHIMERA_VULKAN_MAX_RANGE");
    char *saved = old ? strdup(old) : NULL;
    if (range) setenv("CHIMERA_VULKAN_MAX_RANGE", range, 1);
    else unsetenv("CHIMERA_VULKAN_MAX_RANGE");
    return saved;
}

static void range_restore(char *saved) {
    if (saved) setenv("CHIMERA_VULKAN_MAX_RANGE", saved, 1);
    else unsetenv("CHIMERA_VULKAN_MAX_RANGE");
    free(saved);
}

/* Open vulkan under the limit `range` (NULL: the device's own). */
static chm_backend *open_limited(const char *range) {
    char *saved = range_set(range);
    chm_backend *be = vk_open();
    range_restore(saved);
    return be;
}

static uint64_t dispatches(const chm_backend *be) {
    chm_vulkan_stats s;
    chm_vulkan_get_stats(be, &s);
    return s.dispatches;
}

/* A tensor's raw bytes (malloc'd). */
static unsigned char *raw(chm_backend *be, const chm_tensor *t) {
    size_t nb = chm_tensor_nbytes(t);
    unsigned char *p = malloc(nb ? nb : 1);
    cr_assert_eq(chm_download(be, t, p), CHM_OK, "%s", be->err.msg);
    return p;
}

/* Two tensors (on two backends) hold the same bytes; the first difference is reported. */
static void same_bytes(const char *what, chm_backend *ba, const chm_tensor *a, chm_backend *bb,
                       const chm_tensor *b) {
    size_t nb = chm_tensor_nbytes(a), i = 0;
    unsigned char *x = raw(ba, a), *y = raw(bb, b);
    while (i < nb && x[i] == y[i]) i++;
    cr_assert(i == nb, "%s: byte %zu of %zu differs (0x%02x, want 0x%02x)", what, i, nb,
              i < nb ? y[i] : 0, i < nb ? x[i] : 0);
    free(x), free(y);
}

/* ---- the elementwise f32 ops ---- */

typedef enum ew_op {
    ADD, ADD_INPLACE, SCALE, SCALE_INPLACE, AXPY, EXP_FWD, EXP_BWD, SWIGLU_FWD, SWIGLU_BWD, ADAMW
} ew_op;

static const chm_adamw_args ADAMW_ARGS = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                                          .weight_decay = 0.1, .step = 3, .grad_scale = 0.7};

static chm_status run_ew(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    switch (*(const ew_op *)ctx) {
    case ADD: return chm_add(be, t[2], t[0], t[1]);
    case ADD_INPLACE: return chm_add(be, t[0], t[0], t[1]);
    case SCALE: return chm_scale(be, t[1], t[0], -1.7);
    case SCALE_INPLACE: return chm_scale(be, t[0], t[0], 0.3);
    case AXPY: return chm_axpy(be, t[1], t[0], 0.3);
    case EXP_FWD: return chm_exp_fwd(be, t[1], t[0], 0.5);
    case EXP_BWD: return chm_exp_bwd(be, t[2], t[0], t[1]);
    case SWIGLU_FWD: return chm_swiglu_fwd(be, t[2], t[0], t[1]);
    case SWIGLU_BWD: return chm_swiglu_bwd(be, t[3], t[4], t[0], t[1], t[2], true);
    default: return chm_adamw_step(be, t[1], t[0], t[2], t[3], NULL, &ADAMW_ARGS);
    }
}

/* One op: its arguments' roles and random ranges, and the tolerances against the cpu. */
typedef struct ew_case {
    const char *name;
    ew_op op;
    int nargs;
    role roles[5];
    double lo[5], hi[5];
    double atol, rtol;
} ew_case;

static const ew_case CASES[] = {
    {"add", ADD, 3, {IN, IN, OUT}, {-1, -1}, {1, 1}, 1e-6, 1e-6},
    {"add in place", ADD_INPLACE, 2, {ACC, IN}, {-1, -1}, {1, 1}, 1e-6, 1e-6},
    {"scale", SCALE, 2, {IN, OUT}, {-1}, {1}, 1e-6, 1e-6},
    {"scale in place", SCALE_INPLACE, 1, {ACC}, {-1}, {1}, 1e-6, 1e-6},
    {"axpy", AXPY, 2, {IN, ACC}, {-1, -1}, {1, 1}, 1e-6, 1e-6},
    {"exp_fwd", EXP_FWD, 2, {IN, OUT}, {-2}, {2}, 1e-6, 2e-6},
    {"exp_bwd", EXP_BWD, 3, {IN, IN, ACC}, {-1, 0, -1}, {1, 2, 1}, 1e-6, 1e-6},
    {"swiglu_fwd", SWIGLU_FWD, 3, {IN, IN, OUT}, {-3, -1}, {3, 1}, 1e-6, 1e-5},
    {"swiglu_bwd", SWIGLU_BWD, 5, {IN, IN, IN, ACC, ACC}, {-1, -3, -1, -1, -1},
     {1, 3, 1, 1, 1}, 1e-6, 1e-5},
    /* grad, param, m, v (v >= 0) */
    {"adamw_step", ADAMW, 4, {IN, ACC, ACC, ACC}, {-1, -1, -1, 0}, {1, 1, 1, 1}, 1e-6, 1e-5},
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

/* The arguments of case c over n elements, each view starting `lead` elements into its buffer. */
static void case_args(const ew_case *c, int64_t n, int64_t lead, arg *a) {
    for (int i = 0; i < c->nargs; i++)
        a[i] = (arg){c->roles[i], 1, {n, 1, 1, 1}, c->lo[i], c->hi[i], NULL, NULL, lead + i};
}

/* Element counts and leads: several chunks ending mid-chunk, at unaligned views. */
static const int64_t N_LEAD[][2] = {{5003, 0}, {2049, 3}, {1021, 1}};

Test(vk_split, elementwise_ops_match_cpu) {
    pair bp = {tt_open_cpu(), open_limited(SMALL)};
    for (int k = 0; k < NCASES; k++)
        for (int s = 0; s < 3; s++) {
            arg a[5];
            case_args(&CASES[k], N_LEAD[s][0], N_LEAD[s][1], a);
            check_op(&bp, CASES[k].name, CASES[k].nargs, a, run_ew, &CASES[k].op, CASES[k].atol,
                     CASES[k].rtol, 100 + (uint64_t)(10 * k + s));
        }
    pair_close(&bp);
}

/*
 * The same random inputs on an unlimited backend (one) and a limited one
 * (split); every output equal bit for bit. The harness's sides serve any two
 * backends.
 */
static void check_same(chm_backend *one, chm_backend *split, const ew_case *c, const arg *a,
                       uint64_t seed) {
    tt_rng rng = tt_rng_make(seed);
    side x, y;
    side_alloc(one, &x, c->nargs, a);
    side_alloc(split, &y, c->nargs, a);
    fill_inputs(&x, &y, one, split, c->nargs, a, &rng);
    uint64_t d0 = dispatches(split);
    cr_assert_eq(run_ew(one, x.p, &c->op), CHM_OK, "%s: %s", c->name, one->err.msg);
    cr_assert_eq(run_ew(split, y.p, &c->op), CHM_OK, "%s: %s", c->name, split->err.msg);
    cr_assert(dispatches(split) - d0 >= 5, "%s: %llu dispatches, a split expected", c->name,
              (unsigned long long)(dispatches(split) - d0));
    for (int i = 0; i < c->nargs; i++) {
        if (a[i].role != IN) same_bytes(c->name, one, x.p[i], split, y.p[i]);
        tt_free(&x.t[i]), tt_free(&y.t[i]);
    }
}

Test(vk_split, elementwise_split_equals_one_dispatch_bit_for_bit) {
    chm_backend *one = open_limited(NULL), *split = open_limited(SMALL);
    for (int k = 0; k < NCASES; k++) {
        arg a[5];
        case_args(&CASES[k], 5003, 1, a);
        check_same(one, split, &CASES[k], a, 200 + (uint64_t)k);
    }
    vk_close(one);
    vk_close(split);
}

/* Five thousand f32 elements at a view 3 elements in: five chunks, and one without the limit. */
Test(vk_split, chunks_follow_the_limit) {
    chm_backend *one = open_limited(NULL), *split = open_limited(SMALL);
    int64_t n = 5003, whole = n + 3;
    chm_backend *be[2] = {one, split};
    for (int k = 0; k < 2; k++) {
        tt_tensor t = tt_alloc(be[k], CHM_F32, 1, &whole);
        chm_tensor v = chm_tensor_1d(t.buf, 12, CHM_F32, n);
        uint64_t d0 = dispatches(be[k]);
        cr_assert_eq(chm_fill(be[k], &v, 2.5), CHM_OK, "%s", be[k]->err.msg);
        uint64_t got = dispatches(be[k]) - d0, want = k == 0 ? 1 : (uint64_t)(n * 4 + 4095) / 4096;
        cr_assert(got >= want && got <= want + 1, "fill of %lld f32: %llu dispatches, want %llu%s",
                  (long long)n, (unsigned long long)got, (unsigned long long)want,
                  k == 0 ? "" : " or one more");
        float *h = (float *)raw(be[k], &v);
        for (int64_t i = 0; i < n; i++) cr_assert_eq(h[i], 2.5f, "element %lld", (long long)i);
        free(h);
        tt_free(&t);
    }
    vk_close(one);
    vk_close(split);
}

/* ---- fill, copy, cast: every dtype, bit for bit against the cpu ---- */

/* Elements [at, at + n) of t's buffer, in t's dtype. */
static chm_tensor view(const tt_tensor *t, int64_t at, int64_t n) {
    return chm_tensor_1d(t->buf, (size_t)at * chm_dtype_size(t->t.dtype), t->t.dtype, n);
}

static bool has16(chm_backend *vk) { return (vk->caps & CHM_CAP_BF16) != 0; }

/* Skip the test, closing both backends, on a device without 16-bit storage. */
static void need16(chm_backend *other, chm_backend *vk) {
    if (has16(vk)) return;
    chm_backend_close(other);
    vk_close(vk);
    cr_skip_test("this device has no 16-bit storage");
}

/* A buffer of `n` elements of dt with the same random bytes on both backends. */
static void random_pair(chm_backend *cpu, chm_backend *vk, chm_dtype dt, int64_t n, tt_rng *rng,
                        tt_tensor *a, tt_tensor *b) {
    *a = tt_alloc(cpu, dt, 1, &n), *b = tt_alloc(vk, dt, 1, &n);
    size_t nb = chm_tensor_nbytes(&a->t);
    unsigned char *bytes = malloc(nb);
    /* Values in [-1, 1) for floats (no NaN payloads: casts must agree on numbers). */
    double *x = tt_dalloc(n);
    tt_fill_uniform(rng, x, n, -1, 1);
    for (int64_t i = 0; i < n; i++) {
        float f = (float)x[i];
        if (dt == CHM_F64) memcpy(bytes + 8 * i, &x[i], 8);
        else if (dt == CHM_F32) memcpy(bytes + 4 * i, &f, 4);
        else {
            uint16_t h = dt == CHM_BF16 ? chm_f32_to_bf16(f) : chm_f32_to_f16(f);
            memcpy(bytes + 2 * i, &h, 2);
        }
    }
    cr_assert_eq(chm_upload(cpu, &a->t, bytes), CHM_OK);
    cr_assert_eq(chm_upload(vk, &b->t, bytes), CHM_OK, "%s", vk->err.msg);
    free(bytes), free(x);
}

Test(vk_split, fill_every_dtype_matches_cpu) {
    chm_backend *cpu = tt_open_cpu(), *vk = open_limited(SMALL);
    const chm_dtype dts[] = {CHM_F32, CHM_F64, CHM_I32, CHM_BF16, CHM_F16};
    int64_t n = 5003;
    for (int d = 0; d < 5; d++) {
        if (chm_dtype_size(dts[d]) == 2 && !has16(vk)) continue;
        tt_tensor a = tt_alloc(cpu, dts[d], 1, &n), b = tt_alloc(vk, dts[d], 1, &n);
        cr_assert_eq(chm_fill(cpu, &a.t, 0.0), CHM_OK);
        cr_assert_eq(chm_fill(vk, &b.t, 0.0), CHM_OK, "%s", vk->err.msg);
        chm_tensor va = view(&a, 3, n - 4), vb = view(&b, 3, n - 4);
        double v = dts[d] == CHM_I32 ? -7.0 : 1.0 / 3.0;
        cr_assert_eq(chm_fill(cpu, &va, v), CHM_OK);
        cr_assert_eq(chm_fill(vk, &vb, v), CHM_OK, "%s", vk->err.msg);
        same_bytes(chm_dtype_name(dts[d]), cpu, &a.t, vk, &b.t);
        tt_free(&a), tt_free(&b);
    }
    chm_backend_close(cpu);
    vk_close(vk);
}

/* Copies between views: 16-byte words, 4-byte words, 2-byte words, partial overlap, no-op. */
Test(vk_split, copy_views_match_cpu) {
    chm_backend *cpu = tt_open_cpu(), *vk = open_limited(SMALL);
    const chm_dtype dts[] = {CHM_F32, CHM_BF16, CHM_F64};
    /* {src offset, dst offset, count} in elements, inside a buffer of 9000 */
    static const int64_t cases[][3] = {
        {0, 4096, 4000}, {1, 5001, 3999}, {7, 3, 4001}, {3, 3, 10}, {4, 4400, 4444}};
    tt_rng rng = tt_rng_make(301);
    for (int d = 0; d < 3; d++) {
        if (chm_dtype_size(dts[d]) == 2 && !has16(vk)) continue;
        for (int k = 0; k < 5; k++) {
            tt_tensor a, b;
            random_pair(cpu, vk, dts[d], 9000, &rng, &a, &b);
            const int64_t *c = cases[k];
            chm_tensor src[2] = {view(&a, c[0], c[2]), view(&b, c[0], c[2])};
            chm_tensor dst[2] = {view(&a, c[1], c[2]), view(&b, c[1], c[2])};
            cr_assert_eq(chm_copy(cpu, &dst[0], &src[0]), CHM_OK);
            cr_assert_eq(chm_copy(vk, &dst[1], &src[1]), CHM_OK, "%s", vk->err.msg);
            char what[64];
            snprintf(what, sizeof what, "copy %s case %d", chm_dtype_name(dts[d]), k);
            same_bytes(what, cpu, &a.t, vk, &b.t);
            tt_free(&a), tt_free(&b);
        }
    }
    chm_backend_close(cpu);
    vk_close(vk);
}

Test(vk_split, cast_every_pair_matches_cpu) {
    chm_backend *cpu = tt_open_cpu(), *vk = open_limited(SMALL);
    need16(cpu, vk);
    const chm_dtype dts[] = {CHM_F32, CHM_BF16, CHM_F16};
    int64_t n = 5003;
    tt_rng rng = tt_rng_make(311);
    for (int s = 0; s < 3; s++)
        for (int d = 0; d < 3; d++) {
            if (s == d) continue;
            tt_tensor a, av, b = tt_alloc(cpu, dts[d], 1, &n), bv = tt_alloc(vk, dts[d], 1, &n);
            random_pair(cpu, vk, dts[s], n, &rng, &a, &av);
            /* views one element in on both sides: unaligned windows */
            chm_tensor sa = view(&a, 1, n - 1), sv = view(&av, 1, n - 1);
            chm_tensor da = view(&b, 1, n - 1), dv = view(&bv, 1, n - 1);
            cr_assert_eq(chm_cast(cpu, &da, &sa), CHM_OK);
            cr_assert_eq(chm_cast(vk, &dv, &sv), CHM_OK, "%s", vk->err.msg);
            char what[64];
            snprintf(what, sizeof what, "cast %s -> %s", chm_dtype_name(dts[s]),
                     chm_dtype_name(dts[d]));
            same_bytes(what, cpu, &da, vk, &dv);
            tt_free(&a), tt_free(&av), tt_free(&b), tt_free(&bv);
        }
    chm_backend_close(cpu);
    vk_close(vk);
}

/* adamw_step with a bf16/f16 compute copy: 2- and 4-byte windows in one split dispatch. */
Test(vk_split, adamw_with_lowp_copy_equals_one_dispatch) {
    chm_backend *one = open_limited(NULL), *split = open_limited(SMALL);
    need16(one, split);
    const chm_dtype lowp[] = {CHM_BF16, CHM_F16};
    int64_t n = 5003;
    tt_rng rng = tt_rng_make(321);
    for (int k = 0; k < 2; k++) {
        tt_tensor x[5], y[5]; /* grad, param, m, v, param_lowp */
        for (int i = 0; i < 5; i++) {
            random_pair(one, split, i == 4 ? lowp[k] : CHM_F32, n, &rng, &x[i], &y[i]);
            if (i == 3) cr_assert_eq(chm_fill(one, &x[3].t, 0.25), CHM_OK);
            if (i == 3) cr_assert_eq(chm_fill(split, &y[3].t, 0.25), CHM_OK);
        }
        cr_assert_eq(chm_adamw_step(one, &x[1].t, &x[0].t, &x[2].t, &x[3].t, &x[4].t, &ADAMW_ARGS),
                     CHM_OK, "%s", one->err.msg);
        cr_assert_eq(chm_adamw_step(split, &y[1].t, &y[0].t, &y[2].t, &y[3].t, &y[4].t,
                                    &ADAMW_ARGS), CHM_OK, "%s", split->err.msg);
        for (int i = 1; i < 5; i++) same_bytes("adamw_step", one, &x[i].t, split, &y[i].t);
        for (int i = 0; i < 5; i++) tt_free(&x[i]), tt_free(&y[i]);
    }
    vk_close(one);
    vk_close(split);
}

/* ---- sum_squares ---- */

static chm_status run_sumsq(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_sum_squares(be, t[1], t[0]);
}

Test(vk_split, sum_squares_matches_cpu) {
    pair bp = {tt_open_cpu(), open_limited(SMALL)};
    const int64_t n[] = {50003, 5003, 1021};
    for (int s = 0; s < 3; s++) {
        arg a[2] = {A1(IN, n[s], -1, 1), A1(OUT, 1, 0, 0)};
        a[0].lead = s;
        check_op(&bp, "sum_squares", 2, a, run_sumsq, NULL, 0, 1e-5, 400 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* sum_squares of n random elements on `be`, twice: the two results' bits must agree. */
static float sumsq_twice(chm_backend *be, int64_t n) {
    tt_rng rng = tt_rng_make(411);
    tt_tensor x = tt_alloc(be, CHM_F32, 1, &n), out = tt_alloc(be, CHM_F32, 1, (int64_t[]){2});
    double *h = tt_dalloc(n);
    tt_fill_uniform(&rng, h, n, -1, 1);
    tt_upload(be, &x, h);
    float r[2];
    for (int k = 0; k < 2; k++) {
        chm_tensor o = chm_tensor_1d(out.buf, 4 * (size_t)k, CHM_F32, 1);
        cr_assert_eq(chm_sum_squares(be, &o, &x.t), CHM_OK, "%s", be->err.msg);
    }
    cr_assert_eq(chm_download(be, &out.t, r), CHM_OK);
    cr_assert(memcmp(&r[0], &r[1], 4) == 0, "sum_squares twice: %.9g then %.9g", r[0], r[1]);
    free(h);
    tt_free(&x), tt_free(&out);
    return r[0];
}

/*
 * Repeatable bit for bit; and under a limit that leaves the blocks as they
 * are (65543 bytes: 15 blocks of 1024 per dispatch), equal to one pass.
 */
Test(vk_split, sum_squares_is_repeatable_and_keeps_its_blocks) {
    chm_backend *one = open_limited(NULL), *small = open_limited(SMALL);
    chm_backend *mid = open_limited("65543");
    int64_t n = 50003;
    float a = sumsq_twice(one, n);
    sumsq_twice(small, n);
    uint64_t d0 = dispatches(mid);
    float b = sumsq_twice(mid, n);
    cr_assert(dispatches(mid) - d0 >= 2 * 4, "the 200 KB input is split under a 64 KiB limit");
    cr_assert(memcmp(&a, &b, 4) == 0, "split %.9g, one pass %.9g", b, a);
    vk_close(one);
    vk_close(small);
    vk_close(mid);
}

/* ---- what cannot split, and bad settings ---- */

Test(vk_split, matmul_refuses_an_operand_past_the_limit) {
    chm_backend *vk = open_limited(SMALL);
    int64_t s[2] = {40, 40}; /* 6400 bytes each */
    tt_tensor a = tt_alloc(vk, CHM_F32, 2, s), b = tt_alloc(vk, CHM_F32, 2, s);
    tt_tensor c = tt_alloc(vk, CHM_F32, 2, s);
    chm_status rc = chm_matmul(vk, &c.t, &a.t, &b.t, NULL, false, false, 1.0, 0.0);
    tt_expect_fail(vk, rc, CHM_ERR_UNSUPPORTED, "matmul", "6400-byte");
    cr_assert(strstr(vk->err.msg, "maxStorageBufferRange") &&
              strstr(vk->err.msg, "CHIMERA_VULKAN_MAX_RANGE") && strstr(vk->err.msg, "4099"),
              "the message names the limit and why it is low: %s", vk->err.msg);
    tt_free(&a), tt_free(&b), tt_free(&c);
    vk_close(vk);
}

Test(vk_split, malformed_limits_are_config_errors) {
    use_test_cache();
    const char *bad[] = {"abc", "100", "-5000", "4096k"};
    for (int k = 0; k < 4; k++) {
        char *saved = range_set(bad[k]);
        chm_backend_options o = {.device_index = -1, .quiet = true};
        chm_err err = {0};
        chm_backend *be = NULL;
        chm_status rc = chm_vulkan_open(&o, &be, &err);
        range_restore(saved);
        if (rc == CHM_ERR_UNSUPPORTED) cr_skip_test("no Vulkan device here: %s", err.msg);
        cr_assert_eq(rc, CHM_ERR_CONFIG, "CHIMERA_VULKAN_MAX_RANGE=%s: %s", bad[k], err.msg);
        cr_assert(strstr(err.msg, "CHIMERA_VULKAN_MAX_RANGE") != NULL, "%s", err.msg);
    }
    /* Above the device's own limit: the device's stays, nothing splits. */
    chm_backend *vk = open_limited("99999999999999");
    int64_t n = 5003;
    tt_tensor t = tt_alloc(vk, CHM_F32, 1, &n);
    uint64_t d0 = dispatches(vk);
    cr_assert_eq(chm_fill(vk, &t.t, 1.0), CHM_OK);
    cr_assert_eq(dispatches(vk) - d0, 1);
    tt_free(&t);
    vk_close(vk);
}

Test(vk_split, buffers_larger_than_the_device_holds_are_refused) {
    chm_backend *vk = open_limited(NULL);
    chm_buffer *b = NULL;
    size_t huge = (size_t)1 << 50;
    chm_status rc = chm_buffer_alloc(vk, huge, &b);
    cr_assert_eq(rc, CHM_ERR_NOMEM, "%s", vk->err.msg);
    cr_assert_null(b);
    cr_assert(strstr(vk->err.msg, "1125899906842624-byte") != NULL, "%s", vk->err.msg);
    cr_assert(strstr(vk->err.msg, "maxBufferSize") || strstr(vk->err.msg, "heap"), "%s",
              vk->err.msg);
    cr_assert(strstr(vk->err.msg, "another backend") != NULL, "%s", vk->err.msg);
    vk_close(vk);
}

/* ---- training ---- */

#define CORPUS_CACHE "/tmp/chimera-tests-cache/chimera"
#define TRAIN_STEPS 5
/*
 * test.yaml's model at micro batch 2 and 32 tokens (a quick run on lavapipe).
 * The limit, 256 KiB + 3, splits its flat buffers (427456 parameters: 1.7 MB
 * each, moments 3.4 MB) but no activation or weight that a non-splitting op
 * binds (the largest is the 100 KB of the experts' weights).
 */
#define TRAIN_RANGE "262147"

/* A trainer on vulkan under `range` (NULL: the device's), or skip without a device. */
static chm_trainer *open_trainer(const chm_config *cfg, const char *range, char *dir) {
    chm_trainer_options o = {.out_dir = dir, .backend = "vulkan", .quiet = true, .threads = 1,
                             .cache_dir = CORPUS_CACHE, .peak_tflops = 1};
    chm_trainer *t = NULL;
    chm_err err = {0};
    char *saved = range_set(range);
    chm_status rc = chm_trainer_open(cfg, &o, &t, &err);
    range_restore(saved);
    if (rc == CHM_ERR_UNSUPPORTED) cr_skip_test("no usable Vulkan device here: %s", err.msg);
    cr_assert_eq(rc, CHM_OK, "vulkan trainer (limit %s): %s", range ? range : "none", err.msg);
    return t;
}

Test(vk_split, test_config_trains_the_same_under_a_small_limit) {
    use_test_cache();
    chm_config cfg;
    chm_err err = {0};
    const char *sets[] = {"train.steps=5", "train.eval_every=0", "train.save_every=0",
                          "train.micro_batch=2", "train.seq_len=32"};
    cr_assert_eq(chm_config_load_builtin("test", sets, 5, &cfg, &err), CHM_OK, "%s", err.msg);
    char *da = make_tmpdir_named("chm-vksplit-a-"), *db = make_tmpdir_named("chm-vksplit-b-");
    chm_trainer *one = open_trainer(&cfg, NULL, da), *split = open_trainer(&cfg, TRAIN_RANGE, db);
    for (int s = 1; s <= TRAIN_STEPS; s++) {
        chm_train_step a, b;
        cr_assert_eq(chm_trainer_step(one, &a, &err), CHM_OK, "step %d: %s", s, err.msg);
        cr_assert_eq(chm_trainer_step(split, &b, &err), CHM_OK, "split step %d: %s", s, err.msg);
        cr_assert(a.loss.total == b.loss.total && a.grad_norm == b.grad_norm,
                  "step %d: loss %.9g vs %.9g, grad norm %.9g vs %.9g (split second)", s,
                  a.loss.total, b.loss.total, a.grad_norm, b.grad_norm);
    }
    uint64_t na = dispatches(chm_trainer_backend(one)), nb = dispatches(chm_trainer_backend(split));
    cr_assert(nb > na, "the split run dispatched %llu times, the other %llu: nothing split?",
              (unsigned long long)nb, (unsigned long long)na);
    chm_trainer_close(one);
    chm_trainer_close(split);
    remove_tmpdir(da);
    remove_tmpdir(db);
    chm_config_free(&cfg);
    cr_assert_eq(chm_vulkan_validation_messages(), 0, "validation layer messages (on stderr)");
}
