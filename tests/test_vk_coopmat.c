/*
 * test_vk_coopmat.c: f16 and bf16 matmul on the vulkan backend (suite
 * vulkan_coopmat): on cooperative matrices where the device has them (the
 * H100: matmul_cm.comp and matmul_cm2.comp), else on the plain 16-bit path (lavapipe:
 * matmul.comp's _f16/_bf16 variants); every test prints which path it ran.
 *
 * Inputs are random values already rounded to the 16-bit dtype; the cpu
 * backend computes the same product in f32 from exactly those values, and
 * each element of vulkan's C (rounded once to its dtype) must lie within
 *   u * |want| + 2 * K * 2^-24 * S + 1e-30,
 * where u is half an ulp of the dtype relative (2^-11 f16, 2^-8 bf16),
 * S = |alpha| * sum_k |a||b| + |beta * c| + |bias| bounds what the f32 sums
 * of either side can lose to ordering, and K is the number of terms. Cases
 * cover all four transposes, sizes that are no multiple of 16 (1, 7, 13,
 * 19, 45, ...) and ones larger than a 128 x 128 tile, aligned and unaligned
 * operands (the shader's word loads and its element gathers), deep sums
 * (K 3000; 1000 emulated), batches with broadcast operands, alpha/beta/bias, beta = 0 over a NaN-poisoned C, the
 * grouped variant, the plain path behind CHIMERA_VULKAN_DISABLE=coopmat,
 * every tile vk_bench tries (on a device with cooperative matrices), bf16
 * scaled onto the f16 cooperative matrices (the default; operands spanning
 * 1e-30..1e30 against an f64 product, which the unscaled f16 path fails,
 * also summed over 600 terms, whose stored columns are scaled in chunks;
 * grouped dead terms that must not set the scales), and the errors: mixed
 * dtypes (the shared wrapper), no 16-bit storage, a malformed
 * CHIMERA_VULKAN_COOPMAT_TILE or CHIMERA_VULKAN_COOPMAT2_TILE. The validation
 * layer must stay silent.
 *
 * Those tests run matmul_cm.comp with matmul_cm2.comp switched off; the
 * cm2_* tests run matmul_cm2.comp (NV cooperative matrices 2: f16 and bf16
 * operands read directly) on every transpose and size above, tile edges,
 * the epilogue, batches, deep sums, the grouped variant, bf16's whole range
 * without scaling, every tile vk_bench sweeps and the coopmat2 switch; they
 * skip, saying so, where the device or build lacks cm2 (lavapipe).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/half.h"
#include "vk_harness.h"

/* ---- 16-bit values ---- */

static uint16_t to_bits(chm_dtype dt, double x) {
    return dt == CHM_BF16 ? chm_f32_to_bf16((float)x) : chm_f32_to_f16((float)x);
}

static double from_bits(chm_dtype dt, uint16_t h) {
    return dt == CHM_BF16 ? chm_bf16_to_f32(h) : chm_f16_to_f32(h);
}

/* n uniform values in [lo, hi) rounded to dt. */
static double *rounded(tt_rng *rng, chm_dtype dt, int64_t n, double lo, double hi) {
    double *x = tt_dalloc(n);
    for (int64_t i = 0; i < n; i++) x[i] = from_bits(dt, to_bits(dt, tt_uniform(rng, lo, hi)));
    return x;
}

/* Upload doubles (exact in dt) as dt bits. */
static void upload16(chm_backend *be, const chm_tensor *t, const double *x) {
    int64_t n = chm_tensor_numel(t);
    uint16_t *h = malloc((size_t)(n ? n : 1) * sizeof *h);
    for (int64_t i = 0; i < n; i++) h[i] = to_bits(t->dtype, x[i]);
    cr_assert_eq(chm_upload(be, t, h), CHM_OK, "%s", be->err.msg);
    free(h);
}

static void download16(chm_backend *be, const chm_tensor *t, double *x) {
    int64_t n = chm_tensor_numel(t);
    uint16_t *h = malloc((size_t)(n ? n : 1) * sizeof *h);
    cr_assert_eq(chm_download(be, t, h), CHM_OK, "%s", be->err.msg);
    for (int64_t i = 0; i < n; i++) x[i] = from_bits(t->dtype, h[i]);
    free(h);
}

/* ---- one product on both backends ---- */

typedef struct mm_case {
    int64_t M, K, N;
    int64_t ba, bb, bc;  /* batch of A, B, C; 0: a 2-D tensor */
    bool ta, tb, bias;
    double alpha, beta;
    int64_t lead;        /* A and B start this many elements into their buffers */
} mm_case;

/* Host data of a case: operands, C's start, bias, and the counts of a grouped case. */
typedef struct mm_data {
    double *a, *b, *c0, *bias;
    int32_t *counts;     /* NULL: a plain matmul */
} mm_data;

static int64_t bat(int64_t b) { return b ? b : 1; }

/* A tensor of `lead` + shape elements on be, viewed from element `lead`. */
static tt_tensor make(chm_backend *be, chm_dtype dt, int64_t b, int64_t r, int64_t c,
                      int64_t lead) {
    int64_t whole = bat(b) * r * c + lead;
    tt_tensor x = tt_alloc(be, dt, 1, &whole);
    int64_t shape[3] = {b, r, c};
    x.t = chm_tensor_make(x.buf, (size_t)lead * chm_dtype_size(dt), dt, b ? 3 : 2,
                          b ? shape : shape + 1);
    return x;
}

/* Element (i, j) of op(X) for batch entry e of a stored [rows, cols] operand. */
static double op_at(const double *x, int64_t b, int64_t e, int64_t rows, int64_t cols, bool t,
                    int64_t i, int64_t j) {
    const double *p = x + (b > 1 ? e : 0) * rows * cols;
    return t ? p[j * cols + i] : p[i * cols + j];
}

/*
 * The ordering part of the error bound of every element of C (see the top of the file):
 * sum_k |op(A)[m,k] op(B)[k,n]| over the live terms, with |op(A)| and |op(B)| first copied
 * into row-major scratch so that the sums run down contiguous rows (the strided form took
 * most of the sanitized suite's time in the larger cases).
 */
static void bounds(const mm_case *c, const mm_data *d, double *tol) {
    int64_t ar = c->ta ? c->K : c->M, ac = c->ta ? c->M : c->K;
    int64_t br = c->tb ? c->N : c->K, bc = c->tb ? c->K : c->N;
    double *aa = tt_dalloc(c->M * c->K), *ab = tt_dalloc(c->K * c->N), *s = tt_dalloc(c->N);
    for (int64_t e = 0; e < bat(c->bc); e++) {
        int64_t live = d->counts ? d->counts[e] : c->K;
        int64_t kn = c->ta ? live : c->K; /* the terms summed */
        for (int64_t m = 0; m < c->M; m++)
            for (int64_t k = 0; k < kn; k++)
                aa[m * c->K + k] = fabs(op_at(d->a, bat(c->ba), e, ar, ac, c->ta, m, k));
        for (int64_t k = 0; k < kn; k++)
            for (int64_t n = 0; n < c->N; n++)
                ab[k * c->N + n] = fabs(op_at(d->b, bat(c->bb), e, br, bc, c->tb, k, n));
        for (int64_t m = 0; m < c->M; m++) {
            bool dead_row = d->counts && !c->ta && m >= live;
            for (int64_t n = 0; n < c->N; n++) s[n] = 0;
            for (int64_t k = 0; !dead_row && k < kn; k++) {
                double a = aa[m * c->K + k];
                const double *b = ab + k * c->N;
                for (int64_t n = 0; n < c->N; n++) s[n] += a * b[n];
            }
            for (int64_t n = 0; n < c->N; n++) {
                int64_t i = (e * c->M + m) * c->N + n;
                double rest = fabs(c->beta * d->c0[i]) + (c->bias ? fabs(d->bias[n]) : 0);
                tol[i] = 2.0 * (double)(c->K + 2) * 0x1p-24 * (fabs(c->alpha) * s[n] + rest);
            }
        }
    }
    free(aa), free(ab), free(s);
}

/* The backends of a test and the 16-bit dtype under test. */
typedef struct ctx {
    chm_backend *cpu, *vk;
} ctx;

/*
 * The tests before the "cooperative matrices 2" section check matmul_cm.comp
 * (or the plain path): they open the backend with matmul_cm2.comp switched
 * off (CHIMERA_VULKAN_DISABLE gains coopmat2); the cm2 tests set with_cm2.
 */
static bool with_cm2;

/* p itself when it names real cooperative matrices (NV or KHR), else NULL. */
static const char *real_cm(const char *p) {
    return p && (strcmp(p, "coopmat-nv") == 0 || strcmp(p, "coopmat-khr") == 0) ? p : NULL;
}

static void cm2_switch(void) {
    const char *d = getenv("CHIMERA_VULKAN_DISABLE");
    if (with_cm2 || (d && strstr(d, "coopmat2"))) return;
    char list[256];
    snprintf(list, sizeof list, "%s%scoopmat2", d ? d : "", d && *d ? "," : "");
    setenv("CHIMERA_VULKAN_DISABLE", list, 1);
}

/* matmul_cm.comp off (CHIMERA_VULKAN_DISABLE gains coopmat), so that f16 takes matmul_cm2.comp
   too: where both exist, f16 prefers matmul_cm.comp (matmul.c: cm2_takes). */
static void cm1_off(void) {
    const char *d = getenv("CHIMERA_VULKAN_DISABLE");
    char list[256];
    snprintf(list, sizeof list, "%s%scoopmat", d ? d : "", d && *d ? "," : "");
    setenv("CHIMERA_VULKAN_DISABLE", list, 1);
}

static ctx ctx_open(void) {
    cm2_switch();
    ctx x = {tt_open_cpu(), vk_open()};
    return x;
}

static void ctx_close(ctx *x) {
    chm_backend_close(x->cpu);
    vk_close(x->vk);
}

/* Say once per test which kernel family the vulkan side runs. */
static void say_path(const ctx *x, chm_dtype dt, const char *test) {
    const char *path = chm_vulkan_matmul_path(x->vk, dt);
    fprintf(stderr, "vulkan_coopmat/%s: %s matmul on %s runs the %s path\n", test,
            chm_dtype_name(dt), x->vk->device, path ? path : "(none)");
}

static chm_status call(chm_backend *be, const mm_case *c, const chm_tensor *C,
                       const chm_tensor *A, const chm_tensor *B, const chm_tensor *third,
                       bool grouped) {
    if (grouped) return chm_matmul_grouped(be, C, A, B, third, c->ta, c->tb, c->alpha, c->beta);
    return chm_matmul(be, C, A, B, c->bias ? third : NULL, c->ta, c->tb, c->alpha, c->beta);
}

/* Upload host values into x: as f32 on the cpu side, as dt bits on the vulkan side. */
static void put(chm_backend *be, const tt_tensor *x, const double *v) {
    if (x->t.dtype == CHM_F32) tt_upload(be, x, v);
    else upload16(be, &x->t, v);
}

/* Run case c on cpu (f32) and vulkan (dt); got and want receive C. */
static void run_both(ctx *x, chm_dtype dt, const mm_case *c, const mm_data *d, double *got,
                     double *want) {
    int64_t ar = c->ta ? c->K : c->M, ac = c->ta ? c->M : c->K;
    int64_t br = c->tb ? c->N : c->K, bcol = c->tb ? c->K : c->N;
    chm_backend *bes[2] = {x->cpu, x->vk};
    double *out[2] = {want, got};
    for (int s = 0; s < 2; s++) {
        chm_backend *be = bes[s];
        chm_dtype t = s ? dt : CHM_F32;
        int64_t lead = s ? c->lead : 0;
        tt_tensor A = make(be, t, c->ba, ar, ac, lead), B = make(be, t, c->bb, br, bcol, lead);
        tt_tensor C = make(be, t, c->bc, c->M, c->N, 0);
        int64_t E = bat(c->bc), nb = d->counts ? E : c->N;
        tt_tensor third = tt_alloc(be, d->counts ? CHM_I32 : t, 1, &nb);
        put(be, &A, d->a);
        put(be, &B, d->b);
        if (d->counts) tt_upload_i32(be, &third, d->counts);
        else put(be, &third, d->bias);
        if (c->beta == 0) tt_poison(be, &C);
        else put(be, &C, d->c0);
        cr_assert_eq(call(be, c, &C.t, &A.t, &B.t, &third.t, d->counts != NULL), CHM_OK,
                     "matmul on %s: %s", be->name, be->err.msg);
        cr_assert_eq(chm_sync(be), CHM_OK, "%s", be->err.msg);
        if (s) download16(be, &C.t, out[s]);
        else tt_download(be, &C, out[s]);
        tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&third);
    }
}

/* Check case c for dtype dt (counts: a grouped case, else NULL). */
static void check_case(ctx *x, chm_dtype dt, const mm_case *c, const int32_t *counts,
                       uint64_t seed) {
    tt_rng rng = tt_rng_make(seed);
    int64_t na = bat(c->ba) * c->M * c->K, nb = bat(c->bb) * c->K * c->N;
    int64_t nc = bat(c->bc) * c->M * c->N;
    mm_data d = {rounded(&rng, dt, na, -1, 1), rounded(&rng, dt, nb, -1, 1),
                 rounded(&rng, dt, nc, -2, 2), rounded(&rng, dt, c->N, -1, 1), NULL};
    if (counts) {
        d.counts = malloc((size_t)bat(c->bc) * sizeof *d.counts);
        memcpy(d.counts, counts, (size_t)bat(c->bc) * sizeof *counts);
    }
    double *got = tt_dalloc(nc), *want = tt_dalloc(nc), *tol = tt_dalloc(nc);
    run_both(x, dt, c, &d, got, want);
    double u = dt == CHM_BF16 ? 0x1p-8 : 0x1p-11;
    bounds(c, &d, tol);
    for (int64_t i = 0; i < nc; i++) {
        double err = fabs(got[i] - want[i]), lim = u * fabs(want[i]) + tol[i] + 1e-30;
        /* results below f16's normal range are rounded to its subnormal spacing 2^-24 */
        if (dt == CHM_F16) lim += 0x1p-25;
        cr_assert(isfinite(got[i]) && err <= lim,
                  "%s matmul M%lld K%lld N%lld ta%d tb%d batch %lld/%lld/%lld alpha %g beta %g "
                  "bias %d lead %lld%s: C[%lld] = %.9g, cpu %.9g (|err| %.3g > %.3g)",
                  chm_dtype_name(dt), (long long)c->M, (long long)c->K, (long long)c->N, c->ta,
                  c->tb, (long long)c->ba, (long long)c->bb, (long long)c->bc, c->alpha,
                  c->beta, c->bias, (long long)c->lead, counts ? " grouped" : "", (long long)i,
                  got[i], want[i], err, lim);
    }
    free(d.a), free(d.b), free(d.c0), free(d.bias), free(d.counts);
    free(got), free(want), free(tol);
}

/* Every transpose at sizes that are no multiple of 16, and across several tiles. */
static void transposes_and_sizes(ctx *x, chm_dtype dt) {
    static const int64_t sizes[][3] = {{1, 1, 1},    {13, 7, 19},   {16, 16, 16}, {17, 33, 31},
                                       {70, 45, 129}, {150, 40, 130}, {129, 72, 200}};
    uint64_t seed = 100;
    for (int s = 0; s < (int)(sizeof sizes / sizeof sizes[0]); s++)
        for (int t = 0; t < 4; t++) {
            mm_case c = {.M = sizes[s][0], .K = sizes[s][1], .N = sizes[s][2], .ta = t & 1,
                         .tb = (t >> 1) & 1, .alpha = 1, .beta = 0};
            check_case(x, dt, &c, NULL, seed++);
        }
}

static void transposes_test(chm_dtype dt, const char *test) {
    ctx x = ctx_open();
    say_path(&x, dt, test);
    transposes_and_sizes(&x, dt);
    ctx_close(&x);
}

Test(vulkan_coopmat, f16_transposes_and_odd_sizes) { transposes_test(CHM_F16, "f16"); }
Test(vulkan_coopmat, bf16_transposes_and_odd_sizes) { transposes_test(CHM_BF16, "bf16"); }

/*
 * Tall products: the tiles run down columns of 16 tile rows (matmul_cm.comp's
 * groups), here over more than 16 tile rows (BM <= 128) with a partial last group;
 * every transpose, f16 and bf16.
 */
static const char *real_or_emulated(void);
Test(vulkan_coopmat, tile_groups_of_tall_products) {
    real_or_emulated(); /* the emulated shader where the device has no matrices */
    ctx x = ctx_open();
    say_path(&x, CHM_F16, "tile_groups");
    for (int t = 0; t < 4; t++) {
        mm_case c = {.M = 17 * 128 + 37, .K = 40, .N = 200, .ta = t & 1, .tb = (t >> 1) & 1,
                     .alpha = 1, .beta = 0};
        check_case(&x, t < 2 ? CHM_F16 : CHM_BF16, &c, NULL, 700 + t);
    }
    ctx_close(&x);
}

/*
 * Products with few tiles and a deep sum run split over K (matmul_cm.comp's
 * KSPLIT: several workgroups a tile, f32 partial sums, then matmul_splitk.comp's
 * sum with alpha and beta): every transpose, f16 and bf16 (scaled, then on bf16
 * matrices), K not a multiple of the splits' lengths; both dims over 256, so
 * that the thin products' split (matmul_splitk.comp alone) does not take them.
 */
Test(vulkan_coopmat, few_tiles_split_over_k) {
    real_or_emulated();
    unsetenv("CHIMERA_VULKAN_COOPMAT_BF16");
    ctx x = ctx_open();
    say_path(&x, CHM_F16, "ksplit");
    for (int t = 0; t < 4; t++) {
        mm_case c = {.M = 264, .K = 2100, .N = 260, .ta = t & 1, .tb = (t >> 1) & 1,
                     .alpha = 0.5, .beta = 0.75};
        check_case(&x, CHM_F16, &c, NULL, 800 + t);
        if (t == 0) check_case(&x, CHM_BF16, &c, NULL, 810 + t);
    }
    ctx_close(&x);
    setenv("CHIMERA_VULKAN_COOPMAT_BF16", "native", 1);
    x = ctx_open();
    mm_case c = {.M = 260, .K = 2100, .N = 264, .ta = true, .alpha = 1, .beta = 0};
    check_case(&x, CHM_BF16, &c, NULL, 820);
    ctx_close(&x);
}

/* Whether the per-dispatch profile so far names a shader containing `name`. */
static bool ran(chm_backend *vk, const char *name) {
    static char report[16384];
    cr_assert_eq(chm_vulkan_profile_report(vk, report, sizeof report), CHM_OK, "%s",
                 vk->err.msg);
    return strstr(report, name) != NULL;
}

/*
 * Thin products with a long sum (chimera-1b's x_proj [96,2048] and dt_proj [2048,64] weight
 * gradients, K = 16384 tokens) take matmul_cm.comp's K split, not matmul_splitk.comp's plain
 * one, on (emulated) cooperative matrices: 40 x 300 and 300 x 40 over K = 4096 (4 splits),
 * every transpose, accumulating (beta 1); the routers' width (8) keeps the plain split.
 */
Test(vulkan_coopmat, thin_products_on_tensor_cores) {
    real_or_emulated();
    ctx x = ctx_open();
    say_path(&x, CHM_BF16, "thin_products_on_tensor_cores");
    chm_vulkan_set_profile(x.vk, true);
    for (int t = 0; t < 4; t++) {
        bool wide = ((t ^ (t >> 1)) & 1) != 0;
        mm_case c = {.M = wide ? 40 : 300, .K = 4096, .N = wide ? 300 : 40, .ta = t & 1,
                     .tb = (t >> 1) & 1, .alpha = 1, .beta = 1};
        check_case(&x, t == 3 ? CHM_F16 : CHM_BF16, &c, NULL, 830 + t);
    }
    cr_assert(ran(x.vk, "matmul_cm") && ran(x.vk, "matmul_splitk_sum"),
              "the thin products did not run on matmul_cm.comp's K split");
    cr_assert(!ran(x.vk, "matmul_splitk_part"), "a thin product took the plain split");
    mm_case r = {.M = 8, .K = 4096, .N = 300, .ta = true, .alpha = 1, .beta = 1};
    check_case(&x, CHM_BF16, &r, NULL, 840);
    cr_assert(ran(x.vk, "matmul_splitk_part"), "the router-wide product left the plain split");
    ctx_close(&x);
}

/* Whole aligned slices (word loads) and the same shapes from unaligned views (element gathers). */
Test(vulkan_coopmat, aligned_and_unaligned_operands) {
    ctx x = ctx_open();
    say_path(&x, CHM_F16, "aligned");
    for (int t = 0; t < 4; t++)
        for (int64_t lead = 0; lead < 2; lead++) {
            mm_case c = {.M = 256, .K = 96, .N = 136, .ta = t & 1, .tb = (t >> 1) & 1,
                         .alpha = 1, .beta = 0, .lead = lead};
            check_case(&x, CHM_F16, &c, NULL, 300 + t * 2 + lead);
            check_case(&x, CHM_BF16, &c, NULL, 400 + t * 2 + lead);
        }
    ctx_close(&x);
}

Test(vulkan_coopmat, alpha_beta_bias) {
    static const double ab[][2] = {{0.5, 0.75}, {-1.25, 1}, {0, 0.5}, {2, 0}};
    ctx x = ctx_open();
    say_path(&x, CHM_F16, "alpha_beta_bias");
    for (int i = 0; i < 4; i++)
        for (int bias = 0; bias < 2; bias++) {
            mm_case c = {.M = 37, .K = 19, .N = 45, .ta = i & 1, .tb = bias, .bias = bias,
                         .alpha = ab[i][0], .beta = ab[i][1]};
            check_case(&x, CHM_F16, &c, NULL, 500 + i * 2 + bias);
            check_case(&x, CHM_BF16, &c, NULL, 600 + i * 2 + bias);
        }
    ctx_close(&x);
}

Test(vulkan_coopmat, batch_and_broadcast) {
    ctx x = ctx_open();
    say_path(&x, CHM_F16, "batch");
    mm_case cases[] = {
        {.M = 13, .K = 9, .N = 11, .ba = 3, .bb = 3, .bc = 3, .alpha = 1, .beta = 0},
        {.M = 13, .K = 9, .N = 11, .ba = 1, .bb = 4, .bc = 4, .tb = true, .alpha = 1, .beta = 0.5},
        {.M = 35, .K = 33, .N = 70, .ba = 5, .bb = 0, .bc = 5, .ta = true, .alpha = 1, .beta = 0,
         .bias = true},
        {.M = 130, .K = 24, .N = 72, .ba = 2, .bb = 2, .bc = 2, .alpha = 1, .beta = 0},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        check_case(&x, CHM_F16, &cases[i], NULL, 700 + i);
        check_case(&x, CHM_BF16, &cases[i], NULL, 710 + i);
    }
    ctx_close(&x);
}

/* Deep sums (hundreds of K slices), as weight gradients over B x T tokens: the K loop's stages
 * (split-K off: this thin product would take matmul_splitk.comp). */
Test(vulkan_coopmat, deep_sums) {
    setenv("CHIMERA_VULKAN_DISABLE", "splitk", 1);
    ctx x = ctx_open();
    say_path(&x, CHM_F16, "deep_sums");
    mm_case c = {.M = 40, .K = 3000, .N = 136, .ta = true, .alpha = 1, .beta = 1};
    check_case(&x, CHM_F16, &c, NULL, 750);
    check_case(&x, CHM_BF16, &c, NULL, 751);
    ctx_close(&x);
}

/*
 * Thin products with a long sum take the split-K path (matmul_splitk.comp) in f16 and bf16:
 * every transpose combination, M or N small (1 to 64: both variants; 96 and 200: blocks of
 * 64 columns), K past and off the slice size, alpha, beta, unaligned views; the profile must
 * name the split-K shaders.
 */
Test(vulkan_coopmat, thin_products_split_over_k) {
    static const mm_case cases[] = {
        {.M = 5, .K = 1500, .N = 37, .ta = true, .alpha = 1, .beta = 0},
        {.M = 40, .K = 1100, .N = 3, .ta = true, .alpha = -0.5, .beta = 1},
        {.M = 17, .K = 1024, .N = 64, .ta = true, .alpha = 1, .beta = 0.5, .lead = 1},
        {.M = 100, .K = 2000, .N = 64, .ta = true, .alpha = 2, .beta = 0},
        {.M = 1, .K = 1300, .N = 200, .ta = true, .alpha = 1, .beta = 0, .lead = 1},
        {.M = 96, .K = 2048, .N = 300, .alpha = 1, .beta = 1},               /* x_proj's dW */
        {.M = 300, .K = 1500, .N = 64, .ta = true, .tb = true, .alpha = 1, .beta = 1},
        {.M = 130, .K = 1100, .N = 20, .tb = true, .alpha = 0.5, .beta = 0, .lead = 1},
        {.M = 200, .K = 1200, .N = 250, .alpha = 1, .beta = 0.25},            /* 4 blocks */
    };
    ctx x = ctx_open();
    chm_vulkan_set_profile(x.vk, true);
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        check_case(&x, CHM_F16, &cases[i], NULL, 770 + i);
        check_case(&x, CHM_BF16, &cases[i], NULL, 780 + i);
    }
    static char report[1 << 14];
    cr_assert_eq(chm_vulkan_profile_report(x.vk, report, sizeof report), CHM_OK, "%s",
                 x.vk->err.msg);
    static const char *const want[] = {"matmul_splitk_part16_f16", "matmul_splitk_part64_bf16",
                                       "matmul_splitk_sum_bf16"};
    for (int i = 0; i < 3; i++)
        cr_assert(strstr(report, want[i]), "%s did not run:\n%s", want[i], report);
    ctx_close(&x);
}

/* Grouped: live rows (or live terms with trans_a) per expert; dead rows become beta*C. */
Test(vulkan_coopmat, grouped_counts) {
    ctx x = ctx_open();
    say_path(&x, CHM_F16, "grouped");
    static const int32_t counts[4] = {0, 7, 24, 13};
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1;
        /* without trans_a: A [E,cap,K], C [E,cap,N]; with it: A [E,cap,M], C [E,M,N] */
        mm_case c = {.M = ta ? 21 : 24, .K = ta ? 24 : 19, .N = 33, .ba = 4, .bb = 4, .bc = 4,
                     .ta = ta, .tb = (t >> 1) & 1, .alpha = 1, .beta = t == 3 ? 0.5 : 0};
        check_case(&x, CHM_F16, &c, counts, 800 + t);
        check_case(&x, CHM_BF16, &c, counts, 810 + t);
    }
    ctx_close(&x);
}

/* CHIMERA_VULKAN_DISABLE=coopmat: the plain path, same results. */
Test(vulkan_coopmat, plain_path_behind_the_switch) {
    setenv("CHIMERA_VULKAN_DISABLE", "coopmat", 1);
    ctx x = ctx_open();
    cr_assert_str_eq(chm_vulkan_matmul_path(x.vk, CHM_F16), "plain");
    cr_assert_str_eq(chm_vulkan_matmul_path(x.vk, CHM_F32), "plain");
    say_path(&x, CHM_BF16, "plain_path_behind_the_switch");
    mm_case c = {.M = 130, .K = 40, .N = 70, .tb = true, .alpha = 1, .beta = 0.25, .bias = true};
    check_case(&x, CHM_F16, &c, NULL, 900);
    check_case(&x, CHM_BF16, &c, NULL, 901);
    ctx_close(&x);
}

/* The plain 16-bit path at the GPUs' tiles too (CHIMERA_VULKAN_MATMUL_TILE): vector loads of
 * four 16-bit values where a tile is whole and aligned, element loads from unaligned views. */
Test(vulkan_coopmat, plain_path_at_gpu_tiles) {
    setenv("CHIMERA_VULKAN_DISABLE", "coopmat", 1);
    static const char *tiles[] = {"128x128x8/8x8", "128x64x8/8x8"};
    ctx x = ctx_open();
    for (int i = 0; i < 2; i++) {
        setenv("CHIMERA_VULKAN_MATMUL_TILE", tiles[i], 1);
        for (int t = 0; t < 4; t++) {
            mm_case c = {.M = 256, .K = 96, .N = 136, .ta = t & 1, .tb = (t >> 1) & 1,
                         .alpha = 1, .beta = t == 3 ? 0.5 : 0, .lead = t == 2};
            check_case(&x, CHM_F16, &c, NULL, 920 + 8 * i + t);
            check_case(&x, CHM_BF16, &c, NULL, 924 + 8 * i + t);
        }
    }
    ctx_close(&x);
}

/*
 * Each extension switched off alone leaves the other one (where the device has it) and never
 * runs the one switched off; both off is the plain path. A product checks each opening.
 */
Test(vulkan_coopmat, flavour_switches) {
    static const char *const off[3] = {"coopmat_khr", "coopmat_nv", "coopmat_khr,coopmat_nv"};
    static const char *const never[3] = {"coopmat-khr", "coopmat-nv", NULL};
    for (int i = 0; i < 3; i++) {
        setenv("CHIMERA_VULKAN_DISABLE", off[i], 1);
        ctx x = ctx_open();
        const char *p = chm_vulkan_matmul_path(x.vk, CHM_F16);
        fprintf(stderr, "vulkan_coopmat/flavour_switches: %s off: f16 runs %s\n", off[i], p);
        if (never[i]) cr_assert(strcmp(p, never[i]) != 0, "%s off, yet f16 runs %s", off[i], p);
        else cr_assert_str_eq(p, "plain");
        mm_case c = {.M = 70, .K = 33, .N = 40, .ta = i == 1, .alpha = 1, .beta = 0};
        check_case(&x, CHM_F16, &c, NULL, 950 + (uint64_t)i);
        ctx_close(&x);
        unsetenv("CHIMERA_VULKAN_DISABLE");
    }
}

/* A short battery of every kind of case (small: sizes for the emulated shader on lavapipe). */
static void battery(ctx *x, uint64_t seed) {
    static const int64_t sizes[][3] = {{13, 7, 19}, {70, 45, 29}, {129, 40, 72}};
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 4; t++) {
            mm_case c = {.M = sizes[s][0], .K = sizes[s][1], .N = sizes[s][2], .ta = t & 1,
                         .tb = (t >> 1) & 1, .alpha = 1, .beta = 0, .lead = s == 2};
            check_case(x, t == 1 ? CHM_BF16 : CHM_F16, &c, NULL, seed++);
        }
    /* whole 64 x 64 x 16 slices (the emulated default tile) and an edge column of tiles */
    mm_case aligned = {.M = 128, .K = 48, .N = 72, .ta = true, .alpha = 1, .beta = 0};
    check_case(x, CHM_F16, &aligned, NULL, seed++);
    check_case(x, CHM_BF16, &aligned, NULL, seed++);
    mm_case full = {.M = 37, .K = 19, .N = 45, .ba = 3, .bb = 0, .bc = 3, .tb = true,
                    .bias = true, .alpha = -0.5, .beta = 0.75};
    check_case(x, CHM_F16, &full, NULL, seed++);
    /* a deep sum (63 slices of 16; cm_emulate.glsl says how deep lavapipe can go) */
    mm_case deep = {.M = 40, .K = 1000, .N = 24, .ta = true, .alpha = 1, .beta = 1};
    check_case(x, CHM_BF16, &deep, NULL, seed++);
    static const int32_t counts[3] = {5, 0, 24};
    mm_case grouped = {.M = 24, .K = 19, .N = 33, .ba = 3, .bb = 3, .bc = 3, .alpha = 1,
                       .beta = 0.5};
    check_case(x, CHM_BF16, &grouped, counts, seed++);
}

/*
 * Where the device has no cooperative matrices: matmul_cm.comp with its
 * matrix operations emulated (CHIMERA_VULKAN_COOPMAT_EMULATE=1) checks the
 * tensor-core shader's staging, offsets, transposes and epilogue here too.
 */
Test(vulkan_coopmat, emulated_coopmat_shader) {
    setenv("CHIMERA_VULKAN_COOPMAT_EMULATE", "1", 1);
    unsetenv("CHIMERA_VULKAN_COOPMAT_BF16"); /* bf16 scaled onto the shader's f16 too */
    ctx x = ctx_open();
    const char *path = chm_vulkan_matmul_path(x.vk, CHM_F16);
    if (real_cm(path)) {
        ctx_close(&x);
        cr_skip_test("real cooperative matrices here: the other tests run them");
    }
    cr_assert_str_eq(path, "coopmat-emulated");
    cr_assert_str_eq(chm_vulkan_matmul_path(x.vk, CHM_BF16), "coopmat-emulated");
    say_path(&x, CHM_F16, "emulated_coopmat_shader");
    battery(&x, 1100);
    ctx_close(&x);
}

/* The path name of this device's real cooperative matrices ("coopmat-nv", or "coopmat-khr"
   where only VK_KHR_cooperative_matrix runs them, as with CHIMERA_VULKAN_DISABLE=coopmat_nv on
   NVIDIA), or NULL; with NULL it asks for the emulated shader. */
static const char *real_or_emulated(void) {
    ctx probe = ctx_open();
    const char *p = chm_vulkan_matmul_path(probe.vk, CHM_F16), *cm = real_cm(p);
    ctx_close(&probe);
    if (!cm) setenv("CHIMERA_VULKAN_COOPMAT_EMULATE", "1", 1);
    return cm;
}

/*
 * Every tile tools/vk_bench tries on a device with cooperative matrices is
 * correct, for both dtypes, each in two of the four transposes (alternating
 * from tile to tile: each transpose is a pipeline to compile; a tile whose
 * fragment shape the device does not list is skipped); elsewhere two more
 * tiles of the emulated shader (beyond emulated_coopmat_shader's
 * 64x64x16/32x32/16x8: BK 32 with one 16x16 fragment a warp, and 16x8
 * fragments, 1 x 4 a warp), one dtype each (lavapipe compiles the emulated
 * shader slowly, a few seconds a pipeline).
 */
Test(vulkan_coopmat, every_benchmarked_tile) {
    static const char *real[] = {
        "128x128x32/64x64/16x16", "128x128x32/64x32/16x16", "128x128x32/64x64/16x8",
        "128x128x32/64x32/16x8", "128x128x32/32x64/16x8", "128x128x16/64x64/16x8",
        "64x128x32/32x64/16x8",  "128x64x32/64x32/16x8",  "64x64x32/32x32/16x8",
        "128x256x16/64x64/16x8", "256x128x16/64x64/16x8", "256x128x32/64x64/16x8",
        "128x256x32/64x64/16x8", "128x256x16/64x64/16x16"};
    static const char *emulated[] = {"32x32x32/16x16", "32x32x16/16x32/16x8"};
    const char *cm = real_or_emulated();
    const char **tiles = cm ? real : emulated;
    int ntiles = cm ? (int)(sizeof real / sizeof *real) : (int)(sizeof emulated / sizeof *emulated);
    cm2_switch();
    for (int i = 0; i < ntiles; i++) {
        setenv("CHIMERA_VULKAN_COOPMAT_TILE", tiles[i], 1);
        chm_backend_options o = {.device_index = -1, .quiet = true};
        chm_err err = {0};
        chm_backend *vk = NULL;
        chm_status rc = chm_vulkan_open(&o, &vk, &err);
        cr_assert(cm || rc == CHM_OK, "emulated tile %s: %s", tiles[i], err.msg);
        if (rc != CHM_OK) {
            fprintf(stderr, "vulkan_coopmat: tile %s does not run here: %s\n", tiles[i], err.msg);
            continue;
        }
        ctx x = {tt_open_cpu(), vk};
        fprintf(stderr, "vulkan_coopmat: tile %s (%s)\n", tiles[i],
                chm_vulkan_matmul_path(vk, CHM_F16));
        cr_assert_str_eq(chm_vulkan_matmul_path(vk, CHM_F16), cm ? cm : "coopmat-emulated");
        /* each transpose is a pipeline of its own on real matrices: half of them per dtype */
        for (int t = 0; t < 4; t++) {
            mm_case c = {.M = cm ? 200 : 70, .K = 72, .N = cm ? 264 : 40, .ta = t & 1,
                         .tb = (t >> 1) & 1, .alpha = 1, .beta = 0};
            if (cm ? (t + i) % 2 == 0 : i == 0) check_case(&x, CHM_F16, &c, NULL, 1000 + t);
            c.K = 45;
            if (cm ? (t + i) % 2 == 1 : i == 1) check_case(&x, CHM_BF16, &c, NULL, 1010 + t);
        }
        ctx_close(&x);
    }
}

/*
 * bf16 takes the cooperative matrices by default: KHR bf16 matrices where the
 * device has them (real ones only), else scaled into f16's range, as =scaled
 * says always; CHIMERA_VULKAN_COOPMAT_BF16=0 keeps it on the plain path. f16
 * keeps the cooperative matrices either way. A value it does not know is
 * refused.
 */
Test(vulkan_coopmat, bf16_coopmat_unless_switched_off) {
    const char *cm = real_or_emulated();
    const char *want = cm ? cm : "coopmat-emulated";
    unsetenv("CHIMERA_VULKAN_COOPMAT_BF16");
    ctx x = ctx_open();
    const char *dflt = chm_vulkan_matmul_path(x.vk, CHM_BF16);
    cr_assert(!strcmp(dflt, want) || (cm && !strcmp(dflt, "coopmat-khr-bf16")),
              "default bf16 path %s (f16's: %s)", dflt, want);
    ctx_close(&x);
    setenv("CHIMERA_VULKAN_COOPMAT_BF16", "scaled", 1);
    x = ctx_open();
    cr_assert_str_eq(chm_vulkan_matmul_path(x.vk, CHM_BF16), want);
    ctx_close(&x);
    setenv("CHIMERA_VULKAN_COOPMAT_BF16", "yes", 1);
    chm_backend_options o = {.device_index = -1, .quiet = true};
    chm_err err = {0};
    chm_backend *bad = NULL;
    cr_assert_eq(chm_vulkan_open(&o, &bad, &err), CHM_ERR_CONFIG);
    cr_assert(strstr(err.msg, "CHIMERA_VULKAN_COOPMAT_BF16=yes"), "%s", err.msg);
    setenv("CHIMERA_VULKAN_COOPMAT_BF16", "0", 1);
    x = ctx_open();
    cr_assert_str_eq(chm_vulkan_matmul_path(x.vk, CHM_F16), want);
    cr_assert_str_eq(chm_vulkan_matmul_path(x.vk, CHM_BF16), "plain");
    mm_case c = {.M = 29, .K = 21, .N = 17, .tb = true, .alpha = 1, .beta = 0};
    check_case(&x, CHM_BF16, &c, NULL, 1200);
    ctx_close(&x);
}

/* ---- bf16's range on the f16 tensor cores (the scaled operands) ---- */

/*
 * Operands whose rows of op(A) span 1e-30..1e30 (10^(60 m/(M-1) - 30) times
 * a random value in [-1, 1]) and whose columns of op(B) span 1e-5..1e5: the
 * products reach from 1e-35 to 1e35, inside f32 and bf16 but mostly outside
 * f16. Values rounded to bf16 (for dt bf16) or to f16 (dt f16: what the
 * unscaled path sees: infinities above 65504, zeros below 6e-8).
 */
static void wide_operands(tt_rng *rng, chm_dtype dt, int64_t M, int64_t K, int64_t N, bool ta,
                          bool tb, double *a, double *b, double *opa, double *opb) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) {
            double v = tt_uniform(rng, -1, 1) * pow(10.0, 60.0 * (double)m / (double)(M - 1) - 30);
            if (k == K - 1) v *= 32; /* most lines: largest in the last term (the last chunk) */
            opa[m * K + k] = from_bits(CHM_BF16, to_bits(CHM_BF16, v));
            a[ta ? k * M + m : m * K + k] = from_bits(dt, to_bits(dt, opa[m * K + k]));
        }
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++) {
            double v = tt_uniform(rng, -1, 1) * pow(10.0, 10.0 * (double)n / (double)(N - 1) - 5);
            if (k == K - 1) v *= 32;
            opb[k * N + n] = from_bits(CHM_BF16, to_bits(CHM_BF16, v));
            b[tb ? n * K + k : k * N + n] = from_bits(dt, to_bits(dt, opb[k * N + n]));
        }
}

/*
 * How many elements of C = op(A) op(B) from `dt` operands on vulkan miss the
 * f64 product of the bf16 values: each must lie within
 *   2^-8 |want| + 2 (K+2) 2^-24 S + 2^-36 (max_k |a_mk| sum_k |b_kn| +
 *   max_k |b_kn| sum_k |a_mk|) + 2^-126,
 * rounding to bf16, the f32 sums' ordering, the scaled operands' f16
 * subnormals (2^-25 at a scale that puts a line's largest above 2^14) and
 * f32's own underflow.
 */
static int64_t wide_misses(ctx *x, chm_dtype dt, int64_t M, int64_t K, int64_t N, bool ta,
                           bool tb, uint64_t seed) {
    tt_rng rng = tt_rng_make(seed);
    double *a = tt_dalloc(M * K), *b = tt_dalloc(K * N), *opa = tt_dalloc(M * K);
    double *opb = tt_dalloc(K * N), *got = tt_dalloc(M * N);
    wide_operands(&rng, dt, M, K, N, ta, tb, a, b, opa, opb);
    tt_tensor A = make(x->vk, dt, 0, ta ? K : M, ta ? M : K, 0);
    tt_tensor B = make(x->vk, dt, 0, tb ? N : K, tb ? K : N, 0);
    tt_tensor C = make(x->vk, dt, 0, M, N, 0);
    upload16(x->vk, &A.t, a);
    upload16(x->vk, &B.t, b);
    tt_poison(x->vk, &C);
    cr_assert_eq(chm_matmul(x->vk, &C.t, &A.t, &B.t, NULL, ta, tb, 1, 0), CHM_OK, "%s",
                 x->vk->err.msg);
    download16(x->vk, &C.t, got);
    int64_t misses = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double want = 0, s = 0, amax = 0, bmax = 0, asum = 0, bsum = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = opa[m * K + k], q = opb[k * N + n];
                want += p * q, s += fabs(p * q), asum += fabs(p), bsum += fabs(q);
                amax = fmax(amax, fabs(p)), bmax = fmax(bmax, fabs(q));
            }
            double lim = 0x1p-8 * fabs(want) + 2.0 * (double)(K + 2) * 0x1p-24 * s +
                         0x1p-36 * (amax * bsum + bmax * asum) + 0x1p-126;
            misses += !(fabs(got[m * N + n] - want) <= lim);
        }
    tt_free(&A), tt_free(&B), tt_free(&C);
    free(a), free(b), free(opa), free(opb), free(got);
    return misses;
}

/*
 * bf16 on the cooperative matrices keeps bf16's range: every element within
 * the bound above in every transpose. The shapes give cm_scale.comp both
 * kinds of line (stored rows, stored columns) with and without whole
 * 8-element words. The same values through f16 (the unscaled path) miss the
 * bound: the test can tell.
 */
Test(vulkan_coopmat, bf16_wide_range_scaled) {
    const char *cm = real_or_emulated();
    setenv("CHIMERA_VULKAN_COOPMAT_BF16", "scaled", 1);
    ctx x = ctx_open();
    cr_assert_str_eq(chm_vulkan_matmul_path(x.vk, CHM_BF16), cm ? cm : "coopmat-emulated");
    /* the last, A^T B summed over 600 terms: stored columns scaled in chunks (cm_scale.comp) */
    static const int64_t mkn[5][3] = {
        {37, 48, 32}, {40, 45, 29}, {37, 45, 29}, {40, 48, 29}, {24, 600, 16}};
    for (int t = 0; t < 5; t++) {
        const int64_t *d = mkn[t];
        bool ta = t == 4 || (t & 1), tb = t < 4 && (t >> 1);
        int64_t miss = wide_misses(&x, CHM_BF16, d[0], d[1], d[2], ta, tb, 1300 + t);
        cr_assert_eq(miss, 0, "bf16 %lldx%lldx%lld ta%d tb%d: %lld of %lld elements off",
                     (long long)d[0], (long long)d[1], (long long)d[2], ta, tb, (long long)miss,
                     (long long)(d[0] * d[2]));
    }
    int64_t miss16 = wide_misses(&x, CHM_F16, 37, 45, 29, false, true, 1310);
    fprintf(stderr, "vulkan_coopmat/bf16_wide_range_scaled: through f16 unscaled, %lld of %d "
            "elements off\n", (long long)miss16, 37 * 29);
    cr_assert_gt(miss16, 37 * 29 / 2, "the f16 path passes the wide-range bound: a blind test");
    ctx_close(&x);
}

/*
 * Grouped with trans_a: only the live terms set the scales (dead terms hold
 * +-1e30 here). A [E, K, M] has lines along its stored columns, B^T [E, N, K]
 * along its stored rows, whose live part ends inside an 8-element word.
 */
Test(vulkan_coopmat, bf16_scaled_grouped_dead_terms) {
    real_or_emulated();
    setenv("CHIMERA_VULKAN_COOPMAT_BF16", "scaled", 1);
    ctx x = ctx_open();
    static const int32_t counts[3] = {9, 0, 24};
    mm_case c = {.M = 24, .K = 24, .N = 19, .ba = 3, .bb = 3, .bc = 3, .ta = true, .tb = true,
                 .alpha = 1, .beta = 0};
    check_case(&x, CHM_BF16, &c, counts, 1400);
    /* the same with huge values in the dead terms: a scale taken from them would zero the rest */
    tt_rng rng = tt_rng_make(1401);
    int64_t na = 3 * 24 * 24, nb = 3 * 19 * 24;
    double *a = rounded(&rng, CHM_BF16, na, -1, 1), *b = rounded(&rng, CHM_BF16, nb, -1, 1);
    for (int e = 0; e < 3; e++)
        for (int64_t k = counts[e]; k < 24; k++) {
            for (int64_t m = 0; m < 24; m++) a[(e * 24 + k) * 24 + m] = 1e30;
            for (int64_t n = 0; n < 19; n++) b[(e * 19 + n) * 24 + k] = -1e30;
        }
    /* expert 0's last live term (k = 8, alone in its word) is the largest of each B^T row */
    for (int64_t n = 0; n < 19; n++) b[n * 24 + 8] *= 4096;
    double *got = tt_dalloc(3 * 24 * 19);
    tt_tensor A = make(x.vk, CHM_BF16, 3, 24, 24, 0), B = make(x.vk, CHM_BF16, 3, 19, 24, 0);
    tt_tensor C = make(x.vk, CHM_BF16, 3, 24, 19, 0);
    int64_t three = 3;
    tt_tensor cnt = tt_alloc(x.vk, CHM_I32, 1, &three);
    upload16(x.vk, &A.t, a), upload16(x.vk, &B.t, b);
    tt_upload_i32(x.vk, &cnt, counts);
    tt_poison(x.vk, &C);
    cr_assert_eq(chm_matmul_grouped(x.vk, &C.t, &A.t, &B.t, &cnt.t, true, true, 1, 0), CHM_OK,
                 "%s", x.vk->err.msg);
    download16(x.vk, &C.t, got);
    for (int e = 0; e < 3; e++)
        for (int64_t m = 0; m < 24; m++)
            for (int64_t n = 0; n < 19; n++) {
                double want = 0, s = 0;
                for (int64_t k = 0; k < counts[e]; k++) {
                    double p = a[(e * 24 + k) * 24 + m] * b[(e * 19 + n) * 24 + k];
                    want += p, s += fabs(p);
                }
                double g = got[(e * 24 + m) * 19 + n];
                cr_assert(fabs(g - want) <= 0x1p-8 * fabs(want) + 52 * 0x1p-24 * s + 1e-30,
                          "expert %d C[%lld, %lld] = %g, want %g", e, (long long)m,
                          (long long)n, g, want);
            }
    tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&cnt);
    free(a), free(b), free(got);
    ctx_close(&x);
}

/*
 * CHIMERA_VULKAN_PIN_SUBGROUP=1: the cooperative-matrix pipelines require the device's subgroup
 * size (what AMD and Intel get, whose sizes vary, for the SPIR-V 1.6 KHR variants). On lavapipe
 * (one size) this runs the same pipelines with the requirement chained, under validation.
 */
Test(vulkan_coopmat, pinned_subgroup_size) {
    setenv("CHIMERA_VULKAN_PIN_SUBGROUP", "1", 1);
    const char *cm = real_or_emulated();
    ctx x = ctx_open();
    cr_assert_str_eq(chm_vulkan_matmul_path(x.vk, CHM_F16), cm ? cm : "coopmat-emulated");
    mm_case c = {.M = 70, .K = 45, .N = 29, .tb = true, .alpha = 1, .beta = 0.5, .bias = true};
    check_case(&x, CHM_F16, &c, NULL, 960);
    check_case(&x, CHM_BF16, &c, NULL, 961);
    static const int32_t counts[3] = {5, 0, 24};
    mm_case grouped = {.M = 24, .K = 19, .N = 33, .ba = 3, .bb = 3, .bc = 3, .alpha = 1,
                       .beta = 0};
    check_case(&x, CHM_F16, &grouped, counts, 962);
    ctx_close(&x);
}

/* ---- bf16 as stored on bf16 matrices (matmul_cm.comp's CM_BF16_NATIVE variants) ---- */

/*
 * Open with bf16 products on bf16 matrices: the KHR ones (VK_KHR_shader_bfloat16) where the
 * device has them, else emulated (CHIMERA_VULKAN_COOPMAT_BF16=native asks for those); skip on a
 * device with cooperative matrices but none of bf16.
 */
static ctx native_open(const char *test) {
    const char *cm = real_or_emulated();
    setenv("CHIMERA_VULKAN_COOPMAT_BF16", "native", 1);
    ctx x = ctx_open();
    const char *p = chm_vulkan_matmul_path(x.vk, CHM_BF16);
    if (cm && strcmp(p, "coopmat-khr-bf16") != 0) {
        ctx_close(&x);
        cr_skip_test("%s has cooperative matrices but no bf16 ones (bf16 runs %s)", test, p);
    }
    cr_assert_str_eq(p, cm ? "coopmat-khr-bf16" : "coopmat-emulated-bf16");
    say_path(&x, CHM_BF16, test);
    return x;
}

/* Every transpose and odd size, alpha/beta/bias, a batch, a deep sum and grouped counts. */
Test(vulkan_coopmat, bf16_native_matches_cpu) {
    ctx x = native_open("bf16_native_matches_cpu");
    transposes_and_sizes(&x, CHM_BF16);
    mm_case full = {.M = 37, .K = 19, .N = 45, .ba = 3, .bb = 0, .bc = 3, .tb = true,
                    .bias = true, .alpha = -0.5, .beta = 0.75};
    check_case(&x, CHM_BF16, &full, NULL, 1500);
    mm_case deep = {.M = 40, .K = 1000, .N = 24, .ta = true, .alpha = 1, .beta = 1};
    check_case(&x, CHM_BF16, &deep, NULL, 1501);
    static const int32_t counts[3] = {5, 0, 24};
    mm_case grouped = {.M = 24, .K = 19, .N = 33, .ba = 3, .bb = 3, .bc = 3, .alpha = 1,
                       .beta = 0.5};
    check_case(&x, CHM_BF16, &grouped, counts, 1502);
    mm_case grouped_t = {.M = 24, .K = 24, .N = 19, .ba = 3, .bb = 3, .bc = 3, .ta = true,
                         .tb = true, .alpha = 1, .beta = 0};
    check_case(&x, CHM_BF16, &grouped_t, counts, 1503);
    ctx_close(&x);
}

/*
 * The direct stores of C (matmul_cm.comp's CM_DIRECT: warps whose strip of C is whole and
 * 8-aligned write their accumulators straight into C): strips whole and not (80 x 104 on 32 x
 * 32 warp tiles), every transpose, alpha and beta (alpha 0 and C's 8-misaligned rows take the
 * scratch epilogue), a batch, and grouped counts with dead rows.
 */
Test(vulkan_coopmat, bf16_native_direct_stores) {
    ctx x = native_open("bf16_native_direct_stores");
    static const double ab[][2] = {{1, 0}, {-0.5, 0.75}, {2, 1}, {0, 0.5}};
    for (int t = 0; t < 4; t++) {
        mm_case c = {.M = 80, .K = 40, .N = 104, .ta = t & 1, .tb = (t >> 1) & 1,
                     .alpha = ab[t][0], .beta = ab[t][1]};
        check_case(&x, CHM_BF16, &c, NULL, 1550 + t);
    }
    mm_case odd = {.M = 48, .K = 24, .N = 36, .alpha = 1, .beta = 0.5}; /* rows 36 apart */
    check_case(&x, CHM_BF16, &odd, NULL, 1554);
    mm_case batch = {.M = 32, .K = 24, .N = 64, .ba = 2, .bb = 0, .bc = 2, .tb = true,
                     .alpha = 1, .beta = 0.25};
    check_case(&x, CHM_BF16, &batch, NULL, 1555);
    static const int32_t counts[3] = {40, 0, 17};
    mm_case grouped = {.M = 48, .K = 24, .N = 32, .ba = 3, .bb = 3, .bc = 3, .alpha = 1,
                       .beta = 0.5};
    check_case(&x, CHM_BF16, &grouped, counts, 1556);
    ctx_close(&x);
}

/* bf16 matrices hold bf16's whole range without scaling: the wide-range bound holds. */
Test(vulkan_coopmat, bf16_native_wide_range) {
    ctx x = native_open("bf16_native_wide_range");
    static const int64_t mkn[3][3] = {{37, 48, 32}, {40, 45, 29}, {24, 600, 16}};
    for (int t = 0; t < 3; t++) {
        const int64_t *d = mkn[t];
        bool ta = t != 0, tb = t == 1;
        int64_t miss = wide_misses(&x, CHM_BF16, d[0], d[1], d[2], ta, tb, 1600 + t);
        cr_assert_eq(miss, 0, "bf16 %lldx%lldx%lld ta%d tb%d: %lld of %lld elements off",
                     (long long)d[0], (long long)d[1], (long long)d[2], ta, tb, (long long)miss,
                     (long long)(d[0] * d[2]));
    }
    ctx_close(&x);
}

/* ---- cooperative matrices 2 (matmul_cm2.comp: NV workgroup-scope matrices) ---- */

/*
 * Open with matmul_cm2.comp on and matmul_cm.comp off; skip where f16 does not take it (lavapipe,
 * a driver without VK_NV_cooperative_matrix2, a build without the modern
 * glslang). *bf16: bf16 takes it too (VK_KHR_shader_bfloat16).
 */
static ctx cm2_open(const char *test, bool *bf16) {
    with_cm2 = true;
    cm1_off();
    ctx x = ctx_open();
    if (strcmp(chm_vulkan_matmul_path(x.vk, CHM_F16), "coopmat2") != 0) {
        fprintf(stderr, "vulkan_coopmat/%s: SKIP: %s has no cooperative matrices 2 (needs "
                "VK_NV_cooperative_matrix2 and a build with the modern glslang; `chimera info` "
                "says why)\n", test, x.vk->device);
        ctx_close(&x);
        cr_skip_test("no cooperative matrices 2 on this device or build");
    }
    *bf16 = strcmp(chm_vulkan_matmul_path(x.vk, CHM_BF16), "coopmat2") == 0;
    say_path(&x, CHM_BF16, test);
    return x;
}

/* Both dtypes where bf16 takes cm2 too, else f16 only. */
static int cm2_dtypes(bool bf16, chm_dtype dts[2]) {
    dts[0] = CHM_F16, dts[1] = CHM_BF16;
    return bf16 ? 2 : 1;
}

Test(vulkan_coopmat, cm2_transposes_and_odd_sizes) {
    bool bf16;
    ctx x = cm2_open("cm2_transposes", &bf16);
    chm_dtype dts[2];
    for (int i = 0; i < cm2_dtypes(bf16, dts); i++) transposes_and_sizes(&x, dts[i]);
    ctx_close(&x);
}

/*
 * Edges of several tiles (M, N past 128 and 256, K past and off BK),
 * unaligned views, alpha/beta/bias (beta 0 over a NaN-poisoned C), batches
 * with a broadcast operand, a deep sum (split-K off) and the grouped variant.
 */
Test(vulkan_coopmat, cm2_edges_epilogue_batch_grouped) {
    setenv("CHIMERA_VULKAN_DISABLE", "splitk", 1);
    bool bf16;
    ctx x = cm2_open("cm2_edges", &bf16);
    static const mm_case cases[] = {
        {.M = 300, .K = 70, .N = 520, .alpha = 1, .beta = 0},
        {.M = 257, .K = 33, .N = 129, .ta = true, .tb = true, .alpha = 1, .beta = 0, .lead = 1},
        {.M = 130, .K = 45, .N = 270, .tb = true, .alpha = -0.5, .beta = 0.75, .bias = true},
        {.M = 37, .K = 19, .N = 45, .ta = true, .alpha = 0, .beta = 0.5, .bias = true},
        {.M = 35, .K = 33, .N = 70, .ba = 5, .bb = 0, .bc = 5, .ta = true, .alpha = 1,
         .beta = 0, .bias = true},
        {.M = 13, .K = 9, .N = 11, .ba = 1, .bb = 4, .bc = 4, .tb = true, .alpha = 1,
         .beta = 0.5, .lead = 1},
        {.M = 40, .K = 3000, .N = 136, .ta = true, .alpha = 1, .beta = 1},
    };
    chm_dtype dts[2];
    int nd = cm2_dtypes(bf16, dts);
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
        for (int d = 0; d < nd; d++) check_case(&x, dts[d], &cases[i], NULL, 1500 + 2 * i + d);
    static const int32_t counts[4] = {0, 7, 24, 13};
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1;
        mm_case c = {.M = ta ? 21 : 24, .K = ta ? 24 : 19, .N = 33, .ba = 4, .bb = 4, .bc = 4,
                     .ta = ta, .tb = (t >> 1) & 1, .alpha = 1, .beta = t == 3 ? 0.5 : 0};
        for (int d = 0; d < nd; d++) check_case(&x, dts[d], &c, counts, 1530 + 2 * t + d);
    }
    ctx_close(&x);
}

/*
 * bf16 read directly keeps bf16's range with no scaling pass: products from
 * 1e-35 to 1e35 within the bound of bf16_wide_range_scaled in every
 * transpose. CHIMERA_VULKAN_DISABLE=coopmat2 leaves the cm2 path.
 */
Test(vulkan_coopmat, cm2_bf16_wide_range_and_switch) {
    bool bf16;
    ctx x = cm2_open("cm2_bf16_wide_range", &bf16);
    for (int t = 0; bf16 && t < 4; t++) {
        int64_t miss = wide_misses(&x, CHM_BF16, 37, 45, 29, t & 1, t >> 1, 1600 + t);
        cr_assert_eq(miss, 0, "cm2 bf16 ta%d tb%d: %lld of %d elements off", t & 1, t >> 1,
                     (long long)miss, 37 * 29);
    }
    ctx_close(&x);
    with_cm2 = false;
    x = ctx_open();
    cr_assert_str_neq(chm_vulkan_matmul_path(x.vk, CHM_F16), "coopmat2");
    cr_assert_str_neq(chm_vulkan_matmul_path(x.vk, CHM_BF16), "coopmat2");
    ctx_close(&x);
}

/* Every tile tools/vk_bench sweeps for cm2 runs correctly (two transposes each, both dtypes). */
Test(vulkan_coopmat, cm2_every_benchmarked_tile) {
    static const char *tiles[] = {"128x256x32",   "128x256x32/p", "128x128x32",
                                  "128x128x32/p", "256x128x32/p", "128x256x16",
                                  "128x256x16/p", "128x128x16/p", "64x128x32/p",
                                  "64x256x32/p"};
    bool bf16;
    ctx probe = cm2_open("cm2_tiles", &bf16);
    ctx_close(&probe);
    for (int i = 0; i < (int)(sizeof tiles / sizeof *tiles); i++) {
        setenv("CHIMERA_VULKAN_COOPMAT2_TILE", tiles[i], 1);
        chm_backend_options o = {.device_index = -1, .quiet = true};
        chm_err err = {0};
        chm_backend *vk = NULL;
        if (chm_vulkan_open(&o, &vk, &err) != CHM_OK) {
            fprintf(stderr, "vulkan_coopmat: cm2 tile %s does not run here: %s\n", tiles[i],
                    err.msg);
            continue;
        }
        ctx x = {tt_open_cpu(), vk};
        cr_assert_str_eq(chm_vulkan_matmul_path(vk, CHM_F16), "coopmat2");
        for (int t = 0; t < 4; t++) {
            mm_case c = {.M = 300, .K = 100, .N = 280, .ta = t & 1, .tb = (t >> 1) & 1,
                         .alpha = 1, .beta = 0};
            if ((t + i) % 2 == 0) check_case(&x, CHM_F16, &c, NULL, 1700 + t);
            else if (bf16) check_case(&x, CHM_BF16, &c, NULL, 1710 + t);
        }
        ctx_close(&x);
    }
}

Test(vulkan_coopmat, refusals) {
    /* a malformed tile is a config error on every device */
    setenv("CHIMERA_VULKAN_COOPMAT_TILE", "128x128", 1);
    chm_backend_options o = {.device_index = -1, .quiet = true};
    chm_err err = {0};
    chm_backend *be = NULL;
    chm_status rc = chm_vulkan_open(&o, &be, &err);
    if (rc == CHM_ERR_UNSUPPORTED) cr_skip_test("no Vulkan device here: %s", err.msg);
    cr_assert_eq(rc, CHM_ERR_CONFIG, "%s", err.msg);
    cr_assert(strstr(err.msg, "CHIMERA_VULKAN_COOPMAT_TILE") != NULL, "%s", err.msg);
    unsetenv("CHIMERA_VULKAN_COOPMAT_TILE");
    setenv("CHIMERA_VULKAN_COOPMAT2_TILE", "128x128x", 1); /* likewise the cm2 tile */
    cr_assert_eq(chm_vulkan_open(&o, &be, &err), CHM_ERR_CONFIG, "%s", err.msg);
    cr_assert(strstr(err.msg, "CHIMERA_VULKAN_COOPMAT2_TILE") != NULL, "%s", err.msg);
    unsetenv("CHIMERA_VULKAN_COOPMAT2_TILE");
    /* the shared wrapper: one dtype for A, B and C */
    chm_backend *vk = vk_open();
    tt_tensor a = tt_alloc(vk, CHM_F16, 2, (int64_t[]){4, 4});
    tt_tensor b = tt_alloc(vk, CHM_F16, 2, (int64_t[]){4, 4});
    tt_tensor c = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 4});
    tt_expect_fail(vk, chm_matmul(vk, &c.t, &a.t, &b.t, NULL, false, false, 1, 0), CHM_ERR_DTYPE,
                   "matmul", "A");
    tt_free(&a), tt_free(&b), tt_free(&c);
    vk_close(vk);
    /* no 16-bit storage: f16 matmul is unsupported, and says so */
    setenv("CHIMERA_VULKAN_DISABLE", "16bit", 1);
    vk = vk_open();
    cr_assert_null(chm_vulkan_matmul_path(vk, CHM_F16));
    tt_tensor h = tt_alloc(vk, CHM_F16, 2, (int64_t[]){4, 4});
    tt_tensor g = tt_alloc(vk, CHM_F16, 2, (int64_t[]){4, 4});
    tt_expect_fail(vk, chm_matmul(vk, &g.t, &h.t, &h.t, NULL, false, false, 1, 0),
                   CHM_ERR_UNSUPPORTED, "matmul", "16-bit storage");
    tt_free(&h), tt_free(&g);
    vk_close(vk);
}
