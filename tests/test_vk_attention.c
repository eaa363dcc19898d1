/*
 * test_vk_attention.c: attention_fwd and attention_bwd of f16 and bf16
 * tensors on the vulkan backend's cooperative-matrix paths (attention_cm.comp,
 * attention_bwd_cm.comp; suite vk_attention):
 * on the tensor cores where the device has them, else emulated
 * (CHIMERA_VULKAN_COOPMAT_EMULATE=1: lavapipe in CI). Each test checks, from
 * the per-dispatch profile, that the path it means ran.
 *
 * Inputs are random values rounded to the 16-bit dtype; the cpu backend's
 * f64 forward of exactly those values is the reference. out [B,T,H,D] must
 * lie within u*|want| + 2^-10 * max|v| (u: half an ulp of the dtype, for
 * the single rounding of out; 2^-10 covers P rounded to f16, 2^-11 of each
 * term, twice over) and lse within 1e-4 + 1e-5*|want| (f32 sums of exact
 * products). Cases: T of 1 to 130 (tails, several key tiles), D 16, 64, 128,
 * GQA (H/Hk of 1, 2, 3), unaligned tensors (the shader's element gathers),
 * bf16 beyond f16's range (the per-tile scales), every tile the host may
 * pick, bit-identical reruns, and CHIMERA_VULKAN_ATTN_CM=0 (the plain path);
 * bf16 both on the device's default path and on bf16 matrices (_bf16n; P
 * as two bf16 parts in the forward, P and dS as bf16 in the backward).
 * The backward: the same cases and checks on dq, dk, dv accumulated into
 * random starting values, against the cpu's f64 backward of the same q, k,
 * v, dout, out (the cpu forward's, rounded to the dtype) and lse (rounded to
 * f32). The API has Tq == Tk: the shader's query offset (Tk - Tq) is not
 * reachable from here. The validation layer must stay silent (vk_close).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "vk_harness.h"

typedef struct att_case {
    int64_t B, T, H, Hk, D;
    double qr, kr, vr; /* q, k, v uniform in [-range, range) */
    int64_t lead;      /* q, k, v start this many elements into their buffers */
} att_case;

/*
 * bf16 on bf16 matrices asked for (the _bf16n variants, emulated too:
 * CHIMERA_VULKAN_COOPMAT_BF16=native); else the device's default (scaled
 * into f16 on lavapipe, native where the device has bf16 matrices).
 */
static bool want_native;

/* The vulkan backend with cooperative matrices, real or emulated; skips the test without them. */
static chm_backend *open_cm(void) {
    setenv("CHIMERA_VULKAN_COOPMAT_EMULATE", "1", 1); /* only where the device lacks them */
    if (want_native) setenv("CHIMERA_VULKAN_COOPMAT_BF16", "native", 1);
    else unsetenv("CHIMERA_VULKAN_COOPMAT_BF16");
    chm_backend *vk = vk_open();
    const char *path = chm_vulkan_matmul_path(vk, CHM_F16);
    if (!path || strncmp(path, "coopmat", 7) != 0) {
        chm_backend_close(vk);
        cr_skip_test("no cooperative matrices here, real or emulated");
    }
    chm_vulkan_set_profile(vk, true); /* the report names the shaders that ran */
    return vk;
}

static double round16(chm_dtype dt, double x) {
    return dt == CHM_BF16 ? chm_bf16_to_f32(chm_f32_to_bf16((float)x))
                          : chm_f16_to_f32(chm_f32_to_f16((float)x));
}

/* A 16-bit tensor `lead` elements into its own buffer, holding x (exact in dt); NULL x: NaN. */
static tt_tensor upload16(chm_backend *be, chm_dtype dt, int64_t lead, const int64_t shape[4],
                          const double *x) {
    chm_tensor want = chm_tensor_make(NULL, 0, dt, 4, shape);
    int64_t n = chm_tensor_numel(&want), whole = n + lead;
    tt_tensor t = tt_alloc(be, dt, 1, &whole);
    t.t = chm_tensor_make(t.buf, (size_t)lead * 2, dt, 4, shape);
    uint16_t *h = malloc((size_t)(n ? n : 1) * sizeof *h);
    for (int64_t i = 0; i < n; i++) {
        float f = x ? (float)x[i] : NAN;
        h[i] = dt == CHM_BF16 ? chm_f32_to_bf16(f) : chm_f32_to_f16(f);
    }
    cr_assert_eq(chm_upload(be, &t.t, h), CHM_OK, "%s", be->err.msg);
    free(h);
    return t;
}

static double *download16(chm_backend *be, const tt_tensor *t, uint16_t *bits) {
    int64_t n = chm_tensor_numel(&t->t);
    uint16_t *h = malloc((size_t)n * sizeof *h);
    double *x = tt_dalloc(n);
    cr_assert_eq(chm_download(be, &t->t, h), CHM_OK, "%s", be->err.msg);
    for (int64_t i = 0; i < n; i++)
        x[i] = t->t.dtype == CHM_BF16 ? chm_bf16_to_f32(h[i]) : chm_f16_to_f32(h[i]);
    if (bits) memcpy(bits, h, (size_t)n * sizeof *h);
    free(h);
    return x;
}

/* Whether the profile so far names a shader containing `name`. */
static bool ran(chm_backend *vk, const char *name) {
    static char report[1 << 14];
    cr_assert_eq(chm_vulkan_profile_report(vk, report, sizeof report), CHM_OK, "%s", vk->err.msg);
    return strstr(report, name) != NULL;
}

/*
 * One forward of case c in dt on vk against the cpu's f64 forward; the
 * output's bits into `bits` when not NULL.
 */
static void check_case(chm_backend *vk, chm_backend *cpu, chm_dtype dt, const att_case *c,
                       uint64_t seed, uint16_t *bits) {
    const int64_t qs[4] = {c->B, c->T, c->H, c->D}, ks[4] = {c->B, c->T, c->Hk, c->D};
    const int64_t ls[3] = {c->B, c->H, c->T};
    int64_t nq = c->B * c->T * c->H * c->D, nk = c->B * c->T * c->Hk * c->D, nl = c->B * c->H * c->T;
    tt_rng rng = tt_rng_make(seed);
    double *x[3], range[3] = {c->qr, c->kr, c->vr}, vmax = 0;
    for (int i = 0; i < 3; i++) {
        int64_t n = i ? nk : nq;
        x[i] = tt_dalloc(n);
        for (int64_t e = 0; e < n; e++) x[i][e] = round16(dt, tt_uniform(&rng, -range[i], range[i]));
    }
    for (int64_t e = 0; e < nk; e++) vmax = fmax(vmax, fabs(x[2][e]));
    double scale = 1.0 / sqrt((double)c->D);
    /* cpu f64 reference */
    tt_tensor cq = tt_alloc(cpu, CHM_F64, 4, qs), ck = tt_alloc(cpu, CHM_F64, 4, ks),
              cv = tt_alloc(cpu, CHM_F64, 4, ks), co = tt_alloc(cpu, CHM_F64, 4, qs),
              cl = tt_alloc(cpu, CHM_F64, 3, ls);
    tt_upload(cpu, &cq, x[0]), tt_upload(cpu, &ck, x[1]), tt_upload(cpu, &cv, x[2]);
    cr_assert_eq(chm_attention_fwd(cpu, &co.t, &cl.t, &cq.t, &ck.t, &cv.t, scale), CHM_OK, "%s",
                 cpu->err.msg);
    double *want = tt_dalloc(nq), *want_l = tt_dalloc(nl), *got_l = tt_dalloc(nl);
    tt_download(cpu, &co, want), tt_download(cpu, &cl, want_l);
    /* vulkan, outputs poisoned */
    tt_tensor vq = upload16(vk, dt, c->lead, qs, x[0]), vk_ = upload16(vk, dt, c->lead, ks, x[1]),
              vv = upload16(vk, dt, c->lead, ks, x[2]), vo = upload16(vk, dt, 0, qs, NULL);
    tt_tensor vl = tt_alloc(vk, CHM_F32, 3, ls);
    tt_poison(vk, &vl);
    cr_assert_eq(chm_attention_fwd(vk, &vo.t, &vl.t, &vq.t, &vk_.t, &vv.t, scale), CHM_OK, "%s",
                 vk->err.msg);
    double *got = download16(vk, &vo, bits);
    tt_download(vk, &vl, got_l);
    char what[96];
    snprintf(what, sizeof what, "%s out B%lld T%lld H%lld Hk%lld D%lld", chm_dtype_name(dt),
             (long long)c->B, (long long)c->T, (long long)c->H, (long long)c->Hk, (long long)c->D);
    tt_assert_close(what, got, want, nq, 0x1p-10 * vmax, dt == CHM_BF16 ? 0x1p-8 : 0x1p-11);
    snprintf(what, sizeof what, "%s lse T%lld D%lld", chm_dtype_name(dt), (long long)c->T,
             (long long)c->D);
    tt_assert_close(what, got_l, want_l, nl, 1e-4, 1e-5);
    tt_tensor *all[] = {&cq, &ck, &cv, &co, &cl, &vq, &vk_, &vv, &vo, &vl};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tt_free(all[i]);
    for (int i = 0; i < 3; i++) free(x[i]);
    free(want), free(want_l), free(got), free(got_l);
}

static const att_case CASES[] = {
    {1, 1, 1, 1, 16, 1, 1, 1, 0},     {2, 37, 4, 2, 64, 1, 1, 1, 0},
    {1, 70, 2, 1, 128, 1, 1, 1, 0},   {1, 130, 3, 3, 64, 1.5, 1.5, 1, 0},
    {2, 19, 6, 2, 16, 1, 1, 2, 3},    {1, 45, 2, 2, 128, 1, 1, 1, 5},
};

/* ---- the backward (attention_bwd_cm.comp) ---- */

/* n values uniform in [-range, range), rounded to dt. */
static double *rand16(tt_rng *rng, chm_dtype dt, int64_t n, double range) {
    double *x = tt_dalloc(n);
    for (int64_t e = 0; e < n; e++) x[e] = round16(dt, tt_uniform(rng, -range, range));
    return x;
}

/* A cpu f64 tensor holding x. */
static tt_tensor cpu_f64(chm_backend *cpu, int rank, const int64_t *shape, const double *x) {
    tt_tensor t = tt_alloc(cpu, CHM_F64, rank, shape);
    tt_upload(cpu, &t, x);
    return t;
}

/* Inputs of one backward: q, k, v, dout, out, lse (x[0..5]) and the gradients' start dq, dk, dv. */
typedef struct bwd_data {
    int64_t qs[4], ks[4], ls[3], n[6]; /* shapes; elements of q, k, v, dout, out, lse */
    double *x[6], *g0[3];
} bwd_data;

/*
 * Random q, k, v, dout and G0 in dt; out (rounded to dt) and lse (rounded
 * to f32) from the cpu's f64 forward, so that both backends see the same.
 */
static bwd_data bwd_make(chm_backend *cpu, chm_dtype dt, const att_case *c, uint64_t seed) {
    bwd_data d = {.qs = {c->B, c->T, c->H, c->D}, .ks = {c->B, c->T, c->Hk, c->D},
                  .ls = {c->B, c->H, c->T}};
    int64_t nq = c->B * c->T * c->H * c->D, nk = c->B * c->T * c->Hk * c->D;
    int64_t n[6] = {nq, nk, nk, nq, nq, c->B * c->H * c->T};
    memcpy(d.n, n, sizeof n);
    tt_rng rng = tt_rng_make(seed);
    double range[4] = {c->qr, c->kr, c->vr, 1.0};
    for (int i = 0; i < 4; i++) d.x[i] = rand16(&rng, dt, n[i], range[i]);
    for (int i = 0; i < 3; i++) d.g0[i] = rand16(&rng, dt, n[i], 1.0);
    tt_tensor cq = cpu_f64(cpu, 4, d.qs, d.x[0]), ck = cpu_f64(cpu, 4, d.ks, d.x[1]),
              cv = cpu_f64(cpu, 4, d.ks, d.x[2]), co = tt_alloc(cpu, CHM_F64, 4, d.qs),
              cl = tt_alloc(cpu, CHM_F64, 3, d.ls);
    double scale = 1.0 / sqrt((double)c->D);
    cr_assert_eq(chm_attention_fwd(cpu, &co.t, &cl.t, &cq.t, &ck.t, &cv.t, scale), CHM_OK, "%s",
                 cpu->err.msg);
    d.x[4] = tt_dalloc(nq), d.x[5] = tt_dalloc(n[5]);
    tt_download(cpu, &co, d.x[4]), tt_download(cpu, &cl, d.x[5]);
    for (int64_t e = 0; e < nq; e++) d.x[4][e] = round16(dt, d.x[4][e]);
    for (int64_t e = 0; e < n[5]; e++) d.x[5][e] = (float)d.x[5][e];
    tt_free(&cq), tt_free(&ck), tt_free(&cv), tt_free(&co), tt_free(&cl);
    return d;
}

static void bwd_free(bwd_data *d) {
    for (int i = 0; i < 6; i++) free(d->x[i]);
    for (int i = 0; i < 3; i++) free(d->g0[i]);
}

/* The backward of d on be (cpu: f64 tensors; vulkan: dt, inputs `lead` elements in): G0 + grads. */
static void bwd_run(chm_backend *be, chm_dtype dt, int64_t lead, const bwd_data *d, double scale,
                    double *g[3], uint16_t *bits) {
    bool cpu = dt == CHM_F64;
    const int64_t *shape[6] = {d->qs, d->ks, d->ks, d->qs, d->qs, d->ls};
    tt_tensor t[9];
    for (int i = 0; i < 9; i++) {
        const int64_t *s = i < 6 ? shape[i] : shape[i - 6];
        const double *x = i < 6 ? d->x[i] : d->g0[i - 6];
        if (cpu) t[i] = cpu_f64(be, i == 5 ? 3 : 4, s, x);
        else if (i == 5) t[i] = tt_alloc(be, CHM_F32, 3, s), tt_upload(be, &t[i], x);
        else t[i] = upload16(be, dt, i < 4 ? lead : 0, s, x);
    }
    cr_assert_eq(chm_attention_bwd(be, &t[6].t, &t[7].t, &t[8].t, &t[3].t, &t[0].t, &t[1].t,
                                   &t[2].t, &t[4].t, &t[5].t, scale),
                 CHM_OK, "%s", be->err.msg);
    for (int i = 0; i < 3; i++) {
        if (cpu) {
            g[i] = tt_dalloc(d->n[i]);
            tt_download(be, &t[6 + i], g[i]);
            continue;
        }
        int64_t at = i ? d->n[0] + (i - 1) * d->n[1] : 0; /* dq, dk, dv's bits one after another */
        g[i] = download16(be, &t[6 + i], bits ? bits + at : NULL);
    }
    for (int i = 0; i < 9; i++) tt_free(&t[i]);
}

/*
 * One backward of case c in dt on vk against the cpu's f64 backward of the
 * same values, both accumulating into G0; dq, dk, dv's bits (concatenated)
 * into `bits` when not NULL. Each gradient within u*|want| (its rounding
 * once added to G0) + 2^-8 * max|grad| (P and dS rounded to f16, 2^-11 of
 * each term, summed over up to 130 terms of either sign).
 */
static void check_bwd(chm_backend *vk, chm_backend *cpu, chm_dtype dt, const att_case *c,
                      uint64_t seed, uint16_t *bits) {
    bwd_data d = bwd_make(cpu, dt, c, seed);
    double scale = 1.0 / sqrt((double)c->D), *want[3], *got[3];
    bwd_run(cpu, CHM_F64, 0, &d, scale, want, NULL);
    bwd_run(vk, dt, c->lead, &d, scale, got, bits);
    static const char *names[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        double gmax = 0;
        for (int64_t e = 0; e < d.n[i]; e++) gmax = fmax(gmax, fabs(want[i][e] - d.g0[i][e]));
        char what[96];
        snprintf(what, sizeof what, "%s %s B%lld T%lld H%lld Hk%lld D%lld", chm_dtype_name(dt),
                 names[i], (long long)c->B, (long long)c->T, (long long)c->H, (long long)c->Hk,
                 (long long)c->D);
        tt_assert_close(what, got[i], want[i], d.n[i], 0x1p-8 * gmax,
                        dt == CHM_BF16 ? 0x1p-8 : 0x1p-11);
        free(want[i]), free(got[i]);
    }
    bwd_free(&d);
}

/* ---- the tests: each runs the forward's check (check_case) or the backward's (check_bwd) ---- */

/* One check of case c in dt with this seed; the output's bits into `bits` when not NULL. */
typedef void (*check_fn)(chm_backend *vk, chm_backend *cpu, chm_dtype dt, const att_case *c,
                         uint64_t seed, uint16_t *bits);

/* Every case of CASES in dt; the profile must name `shader` (the cooperative-matrix path ran). */
static void check_all(check_fn check, chm_dtype dt, uint64_t seed, const char *shader) {
    chm_backend *vk = open_cm(), *cpu = tt_open_cpu();
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        check(vk, cpu, dt, &CASES[i], seed + i, NULL);
    cr_assert(ran(vk, shader), "%s did not run", shader);
    chm_backend_close(cpu);
    vk_close(vk);
}

/* bf16 beyond f16's range: v up to 1e6 (f16 overflows at 65504), k down at 1e-5, q up at 1e5. */
static void check_wide(check_fn check, uint64_t seed, const char *shader) {
    chm_backend *vk = open_cm(), *cpu = tt_open_cpu();
    const att_case wide = {1, 40, 2, 1, 64, 1e5, 1e-5, 1e6, 0};
    check(vk, cpu, CHM_BF16, &wide, seed, NULL);
    cr_assert(ran(vk, shader), "%s did not run", shader);
    chm_backend_close(cpu);
    vk_close(vk);
}

/* Every tile the host may pick (CHIMERA_VULKAN_ATTN_CM=WARPSxBC; misfits fall back to the list). */
static void check_every_tile(check_fn check, uint64_t seed) {
    chm_backend *vk = open_cm(), *cpu = tt_open_cpu();
    static const char *tiles[] = {"4x64", "4x32", "2x64", "2x32", "2x16"};
    const att_case c64 = {1, 77, 4, 2, 64, 1, 1, 1, 0}, c128 = {1, 41, 2, 1, 128, 1, 1, 1, 0};
    for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++) {
        setenv("CHIMERA_VULKAN_ATTN_CM", tiles[i], 1);
        check(vk, cpu, CHM_F16, &c64, seed + i, NULL);
        check(vk, cpu, CHM_BF16, &c128, seed + 100 + i, NULL);
    }
    unsetenv("CHIMERA_VULKAN_ATTN_CM");
    cr_assert(!want_native || ran(vk, "_bf16n"), "no _bf16n shader ran");
    chm_backend_close(cpu);
    vk_close(vk);
}

/* The same inputs twice give the same n output bits (one writer, fixed summation order). */
static void check_twice(check_fn check, const att_case *c, int64_t n, uint64_t seed) {
    chm_backend *vk = open_cm(), *cpu = tt_open_cpu();
    uint16_t *a = malloc((size_t)n * 2), *b = malloc((size_t)n * 2);
    check(vk, cpu, CHM_BF16, c, seed, a);
    check(vk, cpu, CHM_BF16, c, seed, b);
    cr_assert(memcmp(a, b, (size_t)n * 2) == 0, "two runs differ");
    free(a), free(b);
    chm_backend_close(cpu);
    vk_close(vk);
}

static const att_case TWICE = {2, 50, 4, 2, 64, 1, 1, 1, 0};

Test(vk_attention, fwd_bf16_matches_cpu) { check_all(check_case, CHM_BF16, 900, "attention_cm_"); }

Test(vk_attention, fwd_f16_matches_cpu) { check_all(check_case, CHM_F16, 900, "attention_cm_"); }

Test(vk_attention, fwd_bf16_wide_range) { check_wide(check_case, 77, "attention_cm_"); }

Test(vk_attention, fwd_every_tile) { check_every_tile(check_case, 300); }

Test(vk_attention, fwd_is_deterministic) {
    check_twice(check_case, &TWICE, TWICE.B * TWICE.T * TWICE.H * TWICE.D, 5);
}

/* CHIMERA_VULKAN_ATTN_CM=0: the plain 16-bit shader `plain` runs (no `cm` one), and matches too. */
static void check_plain(check_fn check, chm_dtype dt, uint64_t seed, const char *cm,
                        const char *plain) {
    setenv("CHIMERA_VULKAN_ATTN_CM", "0", 1);
    chm_backend *vk = open_cm(), *cpu = tt_open_cpu();
    check(vk, cpu, dt, &CASES[1], seed, NULL);
    cr_assert(!ran(vk, cm) && ran(vk, plain), "%s ran, or %s did not", cm, plain);
    unsetenv("CHIMERA_VULKAN_ATTN_CM");
    chm_backend_close(cpu);
    vk_close(vk);
}

Test(vk_attention, fwd_switched_off_runs_plain) {
    check_plain(check_case, CHM_F16, 11, "attention_cm_", "attention_fwd_f16");
}

Test(vk_attention, bwd_bf16_matches_cpu) {
    check_all(check_bwd, CHM_BF16, 700, "attention_bwd_cm_dq_");
}

Test(vk_attention, bwd_f16_matches_cpu) {
    check_all(check_bwd, CHM_F16, 700, "attention_bwd_cm_dkv_");
}

Test(vk_attention, bwd_bf16_wide_range) { check_wide(check_bwd, 78, "attention_bwd_cm_dkv_"); }

Test(vk_attention, bwd_every_tile) { check_every_tile(check_bwd, 500); }

/* dq, dk and dv's bits, both runs. */
Test(vk_attention, bwd_is_deterministic) {
    check_twice(check_bwd, &TWICE, TWICE.B * TWICE.T * (TWICE.H + 2 * TWICE.Hk) * TWICE.D, 6);
}

Test(vk_attention, bwd_switched_off_runs_plain) {
    check_plain(check_bwd, CHM_BF16, 12, "attention_bwd_cm_", "attention_bwd_dq_bf16");
}

/* bf16 on bf16 matrices (attention_cm.comp's and attention_bwd_cm.comp's CM_BF16_NATIVE). */
Test(vk_attention, fwd_bf16_native_matches_cpu) {
    want_native = true;
    check_all(check_case, CHM_BF16, 910, "_bf16n");
}

Test(vk_attention, fwd_bf16_native_wide_range) {
    want_native = true;
    check_wide(check_case, 79, "_bf16n");
}

Test(vk_attention, fwd_every_tile_native) {
    want_native = true;
    check_every_tile(check_case, 320);
}

Test(vk_attention, bwd_bf16_native_matches_cpu) {
    want_native = true;
    check_all(check_bwd, CHM_BF16, 710, "_bf16n");
}

Test(vk_attention, bwd_bf16_native_wide_range) {
    want_native = true;
    check_wide(check_bwd, 80, "_bf16n");
}

Test(vk_attention, bwd_every_tile_native) {
    want_native = true;
    check_every_tile(check_bwd, 520);
}
