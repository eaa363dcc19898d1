/*
 * test_vulkan_dense.c: the vulkan ops of helper vk-a against the cpu backend:
 * matmul (+ grouped), rope, gather/scatter rows, the routers, select_topk,
 * cross-entropy, exp, row_scale, bce_logits and moe_aux.
 *
 * Every op runs through vk_harness.h's check_op: the same random inputs on
 * both backends, vulkan outputs poisoned with NaN (int32 outputs with a
 * sentinel) first, gradients accumulating from the same random starts, f32
 * tolerances. Shapes include 1, odd sizes and sizes larger than one
 * workgroup or one matmul tile. Bad indices, which only the device sees,
 * must come back as CHM_ERR_INVALID_ARG from the next chm_sync. Every test
 * ends with a silent validation layer (vk_close).
 */
#include "vk_harness.h"

/* ---- matmul ---- */

/* How a matmul test calls the op: t = {A, B, C[, bias]}. */
typedef struct mm_case {
    bool ta, tb, bias;
    double alpha, beta;
} mm_case;

static chm_status op_matmul(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const mm_case *c = ctx;
    return chm_matmul(be, t[2], t[0], t[1], c->bias ? t[3] : NULL, c->ta, c->tb, c->alpha,
                      c->beta);
}

/* Shape of one operand: [batch?, r, c] with batch 0 meaning a 2-D tensor. */
static arg mm_arg(role r, int64_t batch, int64_t rows, int64_t cols) {
    arg a = A3(r, batch, rows, cols, -1, 1);
    if (batch == 0) a = (arg)A2(r, rows, cols, -1, 1);
    return a;
}

/* One product of sizes M,K,N with batches ba, bb, bc (0: 2-D) under case c. */
static void check_matmul(pair *bp, int64_t M, int64_t K, int64_t N, int64_t ba, int64_t bb,
                         int64_t bc, const mm_case *c, uint64_t seed) {
    arg a[4] = {mm_arg(IN, ba, c->ta ? K : M, c->ta ? M : K),
                mm_arg(IN, bb, c->tb ? N : K, c->tb ? K : N),
                mm_arg(c->beta == 0 ? OUT : ACC, bc, M, N), A1(IN, N, -1, 1)};
    char what[128];
    snprintf(what, sizeof what, "matmul M%lld K%lld N%lld ta%d tb%d batch %lld/%lld/%lld",
             (long long)M, (long long)K, (long long)N, c->ta, c->tb, (long long)ba,
             (long long)bb, (long long)bc);
    /* f32 sums of up to ~130 products of numbers in [-1, 1] against the cpu's BLAS. */
    check_op(bp, what, c->bias ? 4 : 3, a, op_matmul, c, 2e-5, 1e-5, seed);
}

Test(vulkan, matmul_transposes_and_sizes) {
    pair bp = pair_open();
    static const int64_t sizes[][3] = {{1, 1, 1}, {3, 7, 5}, {33, 17, 65}, {70, 130, 40}};
    uint64_t seed = 1000;
    for (int s = 0; s < 4; s++)
        for (int tr = 0; tr < 4; tr++) {
            mm_case c = {tr & 1, tr >> 1, false, 1.0, 0.0};
            check_matmul(&bp, sizes[s][0], sizes[s][1], sizes[s][2], 0, 0, 0, &c, seed++);
        }
    pair_close(&bp);
}

Test(vulkan, matmul_alpha_beta_bias) {
    pair bp = pair_open();
    static const mm_case cases[] = {{false, false, true, 1.0, 0.0}, {true, false, true, -0.5, 1.0},
                                    {false, true, false, 2.0, 0.5}, {true, true, true, 0.0, -1.5},
                                    {false, false, false, 0.7, 1.0}};
    for (int i = 0; i < 5; i++) check_matmul(&bp, 37, 19, 45, 0, 0, 0, &cases[i], 1100 + i);
    pair_close(&bp);
}

/* Thin A^T B products with a long sum (split over K in matmul.c): M or N small, in f32. */
Test(vulkan, matmul_thin_products_split_over_k) {
    pair bp = pair_open();
    static const int64_t sizes[][3] = {{5, 1500, 37}, {40, 1100, 3}, {17, 1024, 64}, {1, 1300, 9}};
    static const mm_case cases[] = {{true, false, false, 1.0, 0.0},
                                    {true, false, false, -0.5, 1.0}};
    for (int s = 0; s < 4; s++)
        for (int c = 0; c < 2; c++) {
            int64_t M = sizes[s][0], K = sizes[s][1], N = sizes[s][2];
            arg a[3] = {mm_arg(IN, 0, K, M), mm_arg(IN, 0, K, N),
                        mm_arg(cases[c].beta == 0 ? OUT : ACC, 0, M, N)};
            /* f32 sums of up to 1500 products in [-1, 1], in another order than the cpu's */
            check_op(&bp, "thin matmul", 3, a, op_matmul, &cases[c], 1e-4, 1e-5,
                     1150 + 2 * (uint64_t)s + (uint64_t)c);
        }
    pair_close(&bp);
}

/* Batched products: both batched, A broadcast, B broadcast, 4-D tensors. */
Test(vulkan, matmul_batch_and_broadcast) {
    pair bp = pair_open();
    mm_case c = {false, true, true, 1.0, 0.0}, d = {true, false, false, 0.5, 1.0};
    check_matmul(&bp, 13, 9, 11, 3, 3, 3, &c, 1200);
    check_matmul(&bp, 13, 9, 11, 0, 4, 4, &c, 1201);
    check_matmul(&bp, 35, 33, 7, 5, 0, 5, &d, 1202);
    check_matmul(&bp, 1, 40, 70, 2, 2, 2, &d, 1203);
    /* 4-D: A [2,3,M,K] times a shared B [K,N] */
    mm_case e = {false, false, false, 1.0, 0.0};
    arg a[] = {A4(IN, 2, 3, 17, 24, -1, 1), A2(IN, 24, 33, -1, 1), A4(OUT, 2, 3, 17, 33, 0, 0)};
    check_op(&bp, "matmul 4-D", 3, a, op_matmul, &e, 2e-5, 1e-5, 1204);
    pair_close(&bp);
}

/*
 * matmul.comp's tiles: whole tiles whose operands load as vectors beside edge tiles and a
 * partial last K slice (scalar loads) in one product, every transpose, batches, at the
 * device's tile and at others (CHIMERA_VULKAN_MATMUL_TILE, read on every call; Criterion runs
 * each test in its own process): the GPUs' (128x64, 128x128 and 64x64 of 8x8), 4x4 blocks,
 * and two with several loads per invocation and slice (BK 12: three loads of four terms a row).
 */
Test(vulkan, matmul_plain_tiles_vector_and_edge_loads) {
    static const char *tiles[] = {"", "128x64x8/8x8", "128x128x8/8x8", "64x64x8/8x8",
                                  "64x64x16/4x4", "32x64x12/4x8", "64x32x4/8x4"};
    static const int64_t sizes[][3] = {{160, 44, 136}, {64, 24, 96}};
    pair bp = pair_open();
    uint64_t seed = 1500;
    for (int t = 0; t < (int)(sizeof tiles / sizeof *tiles); t++) {
        setenv("CHIMERA_VULKAN_MATMUL_TILE", tiles[t], 1);
        for (int s = 0; s < 2; s++)
            for (int tr = 0; tr < 4; tr++) {
                mm_case c = {tr & 1, tr >> 1, tr == 3, 1.0, tr == 2 ? 0.5 : 0.0};
                check_matmul(&bp, sizes[s][0], sizes[s][1], sizes[s][2], 0, 0, 0, &c, seed++);
            }
        mm_case d = {false, true, false, 1.0, 0.0}, e = {true, false, true, -0.5, 1.0};
        check_matmul(&bp, 64, 32, 64, 3, 3, 3, &d, seed++);
        check_matmul(&bp, 32, 16, 64, 0, 2, 2, &e, seed++);
    }
    pair_close(&bp);
}

/* A malformed tile, or one the device cannot run, is a config error naming the variable. */
Test(vulkan, matmul_tile_variable_is_checked) {
    chm_backend *vk = vk_open();
    tt_tensor A = tt_alloc(vk, CHM_F32, 2, (int64_t[]){8, 8});
    tt_tensor B = tt_alloc(vk, CHM_F32, 2, (int64_t[]){8, 8});
    tt_tensor C = tt_alloc(vk, CHM_F32, 2, (int64_t[]){8, 8});
    cr_assert_eq(chm_fill(vk, &A.t, 1), CHM_OK);
    cr_assert_eq(chm_fill(vk, &B.t, 1), CHM_OK);
    static const char *bad[] = {"128x128", "128x128x8/8x8x", "128x128x8/6x8", "64x64x6/4x4",
                                "4096x4096x8/8x8"};
    for (int i = 0; i < 5; i++) {
        setenv("CHIMERA_VULKAN_MATMUL_TILE", bad[i], 1);
        cr_expect_eq(chm_matmul(vk, &C.t, &A.t, &B.t, NULL, false, false, 1.0, 0.0),
                     CHM_ERR_CONFIG, "%s", bad[i]);
        cr_expect(strstr(vk->err.msg, "CHIMERA_VULKAN_MATMUL_TILE") != NULL, "%s", vk->err.msg);
    }
    unsetenv("CHIMERA_VULKAN_MATMUL_TILE");
    cr_expect_eq(chm_matmul(vk, &C.t, &A.t, &B.t, NULL, false, false, 1.0, 0.0), CHM_OK);
    cr_assert_eq(chm_sync(vk), CHM_OK, "%s", vk->err.msg);
    tt_free(&A), tt_free(&B), tt_free(&C);
    vk_close(vk);
}

/* beta = 0 ignores NaN in C even where the product adds nothing (K = 0). */
Test(vulkan, matmul_beta0_ignores_nan_and_empty_k) {
    pair bp = pair_open();
    mm_case c = {false, false, true, 1.0, 0.0};
    check_matmul(&bp, 5, 0, 9, 0, 0, 0, &c, 1300);
    mm_case d = {false, false, false, 1.0, 2.0};
    check_matmul(&bp, 5, 0, 9, 0, 0, 0, &d, 1301);
    pair_close(&bp);
}

/* ---- matmul_grouped ---- */

typedef struct mmg_case {
    bool ta, tb;
    double alpha, beta;
} mmg_case;

static chm_status op_matmul_grouped(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const mmg_case *c = ctx;
    return chm_matmul_grouped(be, t[2], t[0], t[1], t[3], c->ta, c->tb, c->alpha, c->beta);
}

/* E groups of capacity cap; inner dims (K,N) without trans_a, (M,N) with it. */
static void check_grouped(pair *bp, int64_t E, int64_t cap, int64_t d1, int64_t N,
                          const mmg_case *c, const int32_t *counts, uint64_t seed) {
    /* without trans_a: A [E,cap,K], B [E,K,N] | [E,N,K], C [E,cap,N]
     * with trans_a:    A [E,cap,M], B [E,cap,N] | [E,N,cap], C [E,M,N] */
    int64_t kb = c->ta ? cap : d1;
    arg a[4] = {A3(IN, E, cap, d1, -1, 1),
                c->tb ? (arg)A3(IN, E, N, kb, -1, 1) : (arg)A3(IN, E, kb, N, -1, 1),
                A3(c->beta == 0 ? OUT : ACC, E, c->ta ? d1 : cap, N, -1, 1),
                A1(IDS, E, 0, 0)};
    a[3].idata = counts;
    char what[96];
    snprintf(what, sizeof what, "matmul_grouped E%lld cap%lld ta%d tb%d beta %g", (long long)E,
             (long long)cap, c->ta, c->tb, c->beta);
    check_op(bp, what, 4, a, op_matmul_grouped, c, 2e-5, 1e-5, seed);
}

Test(vulkan, matmul_grouped_counts_and_transposes) {
    pair bp = pair_open();
    static const int32_t counts[] = {13, 0, 5, 1, 70};
    static const mmg_case cases[] = {{false, false, 1.0, 0.0}, {false, true, 0.5, 1.0},
                                     {true, false, 1.0, 0.0},  {true, true, -1.0, 0.5}};
    for (int i = 0; i < 4; i++) {
        check_grouped(&bp, 4, 13, 9, 7, &cases[i], counts, 1400 + (uint64_t)i);
        check_grouped(&bp, 1, 70, 33, 65, &cases[i], counts + 4, 1410 + (uint64_t)i);
    }
    pair_close(&bp);
}

/* Many tiles of C at odd sizes, and groups of many rows. */
Test(vulkan, matmul_many_tiles) {
    pair bp = pair_open();
    mm_case c = {false, false, true, 1.0, 0.0}, d = {true, true, false, -1.0, 0.5};
    check_matmul(&bp, 601, 5, 1205, 0, 0, 0, &c, 1250);
    check_matmul(&bp, 401, 9, 905, 0, 0, 0, &d, 1251);
    static const int32_t counts[] = {1100, 0, 777, 1};
    mmg_case g = {false, true, 1.0, 0.0};
    check_grouped(&bp, 4, 1100, 5, 300, &g, counts, 1252);
    pair_close(&bp);
}

/* A count outside [0, capacity]: CHM_ERR_INVALID_ARG at the next sync. */
Test(vulkan, matmul_grouped_reports_bad_counts) {
    chm_backend *vk = vk_open();
    tt_tensor A = tt_alloc(vk, CHM_F32, 3, (int64_t[]){2, 4, 3});
    tt_tensor B = tt_alloc(vk, CHM_F32, 3, (int64_t[]){2, 3, 5});
    tt_tensor C = tt_alloc(vk, CHM_F32, 3, (int64_t[]){2, 4, 5});
    tt_tensor n = tt_alloc(vk, CHM_I32, 1, (int64_t[]){2});
    tt_upload_i32(vk, &n, (int32_t[]){2, 5});
    cr_assert_eq(chm_fill(vk, &A.t, 1), CHM_OK);
    cr_assert_eq(chm_fill(vk, &B.t, 1), CHM_OK);
    cr_assert_eq(chm_matmul_grouped(vk, &C.t, &A.t, &B.t, &n.t, false, false, 1, 0), CHM_OK);
    cr_assert_eq(chm_sync(vk), CHM_ERR_INVALID_ARG, "%s", vk->err.msg);
    cr_assert_eq(chm_sync(vk), CHM_OK, "the report is cleared once raised");
    tt_free(&A), tt_free(&B), tt_free(&C), tt_free(&n);
    vk_close(vk);
}

/* The shared wrapper refuses f64 on vulkan (it computes in f32) and bad shapes. */
Test(vulkan, matmul_refuses_f64_and_bad_shapes) {
    chm_backend *vk = vk_open();
    tt_tensor x = tt_alloc(vk, CHM_F64, 2, (int64_t[]){4, 4});
    cr_assert_eq(chm_matmul(vk, &x.t, &x.t, &x.t, NULL, false, false, 1, 0), CHM_ERR_INVALID_ARG);
    tt_tensor a = tt_alloc(vk, CHM_F64, 2, (int64_t[]){4, 4}), c = tt_alloc(vk, CHM_F64, 2, (int64_t[]){4, 4});
    cr_assert_eq(chm_matmul(vk, &c.t, &a.t, &x.t, NULL, false, false, 1, 0), CHM_ERR_DTYPE);
    cr_assert(strstr(vk->err.msg, "matmul") && strstr(vk->err.msg, "f32"), "%s", vk->err.msg);
    /* also where an f32 product of the shape would be split over K */
    tt_tensor ta = tt_alloc(vk, CHM_F64, 2, (int64_t[]){1024, 2});
    tt_tensor tb = tt_alloc(vk, CHM_F64, 2, (int64_t[]){1024, 3});
    tt_tensor tc = tt_alloc(vk, CHM_F64, 2, (int64_t[]){2, 3});
    cr_assert_eq(chm_matmul(vk, &tc.t, &ta.t, &tb.t, NULL, true, false, 1, 0), CHM_ERR_DTYPE);
    tt_free(&ta), tt_free(&tb), tt_free(&tc);
    tt_tensor f = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 3}), g = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 4});
    cr_assert_eq(chm_matmul(vk, &g.t, &f.t, &f.t, NULL, false, false, 1, 0), CHM_ERR_SHAPE);
    cr_assert(strstr(vk->err.msg, "matmul") && strstr(vk->err.msg, "B"), "%s", vk->err.msg);
    tt_free(&x), tt_free(&a), tt_free(&c), tt_free(&f), tt_free(&g);
    vk_close(vk);
}

/* ---- rope ---- */

typedef struct rope_case {
    double theta;
    int64_t pos;
} rope_case;

static chm_status op_rope_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const rope_case *c = ctx;
    return chm_rope_fwd(be, t[1], t[0], c->theta, c->pos);
}
static chm_status op_rope_inplace(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const rope_case *c = ctx;
    return chm_rope_fwd(be, t[0], t[0], c->theta, c->pos);
}
static chm_status op_rope_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const rope_case *c = ctx;
    return chm_rope_bwd(be, t[1], t[0], c->theta, c->pos);
}

/* Positions far from 0 check the angle reduction (f32 alone would be off by 1e-3 there). */
Test(vulkan, rope_fwd_bwd_match_cpu) {
    pair bp = pair_open();
    static const int64_t shapes[][4] = {{1, 1, 1, 2}, {2, 7, 3, 6}, {1, 33, 2, 64}, {3, 5, 4, 128}};
    static const rope_case cases[] = {{10000, 0}, {10000, 1000}, {500000, 123457}};
    uint64_t seed = 2000;
    for (int s = 0; s < 4; s++)
        for (int k = 0; k < 3; k++) {
            const int64_t *d = shapes[s];
            arg fwd[] = {A4(IN, d[0], d[1], d[2], d[3], -2, 2), A4(OUT, d[0], d[1], d[2], d[3], 0, 0)};
            check_op(&bp, "rope_fwd", 2, fwd, op_rope_fwd, &cases[k], 1e-5, 1e-5, seed++);
            arg inplace[] = {A4(ACC, d[0], d[1], d[2], d[3], -2, 2)};
            check_op(&bp, "rope_fwd in place", 1, inplace, op_rope_inplace, &cases[k], 1e-5, 1e-5,
                     seed++);
            arg bwd[] = {A4(IN, d[0], d[1], d[2], d[3], -2, 2), A4(ACC, d[0], d[1], d[2], d[3], -1, 1)};
            check_op(&bp, "rope_bwd", 2, bwd, op_rope_bwd, &cases[k], 1e-5, 1e-5, seed++);
        }
    pair_close(&bp);
}

/* ---- exp ---- */

static chm_status op_exp_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_exp_fwd(be, t[1], t[0], -1.5);
}
static chm_status op_exp_inplace(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_exp_fwd(be, t[0], t[0], 0.25);
}
static chm_status op_exp_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_exp_bwd(be, t[2], t[0], t[1]);
}

static const int64_t SIZES[] = {1, 37, 1000, 4099};

Test(vulkan, exp_fwd_bwd_match_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < 4; s++) {
        int64_t n = SIZES[s];
        arg fwd[] = {A1(IN, n, -4, 3), A1(OUT, n, 0, 0)};
        check_op(&bp, "exp_fwd", 2, fwd, op_exp_fwd, NULL, 1e-6, 2e-6, 2100 + (uint64_t)s);
        arg inplace[] = {A2(ACC, 1, n, -4, 3)};
        check_op(&bp, "exp_fwd in place", 1, inplace, op_exp_inplace, NULL, 1e-6, 2e-6,
                 2110 + (uint64_t)s);
        arg bwd[] = {A1(IN, n, -1, 1), A1(IN, n, -3, 3), A1(ACC, n, -1, 1)};
        check_op(&bp, "exp_bwd", 3, bwd, op_exp_bwd, NULL, 1e-6, 1e-6, 2120 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* ---- row_scale ---- */

/* ctx: bit 0 sigmoid, bit 1 dx wanted, bit 2 ds wanted. */
static chm_status op_row_scale_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    return chm_row_scale_fwd(be, t[2], t[0], t[1], *(const int *)ctx & 1);
}
static chm_status op_row_scale_inplace(chm_backend *be, const chm_tensor *const *t,
                                       const void *ctx) {
    return chm_row_scale_fwd(be, t[0], t[0], t[1], *(const int *)ctx & 1);
}
static chm_status op_row_scale_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    int f = *(const int *)ctx;
    return chm_row_scale_bwd(be, f & 2 ? t[3] : NULL, f & 4 ? t[4] : NULL, t[0], t[1], t[2],
                             f & 1);
}

static chm_status op_row_scale_bwd_set(chm_backend *be, const chm_tensor *const *t,
                                       const void *ctx) {
    int f = *(const int *)ctx;
    return chm_row_scale_bwd_set(be, f & 2 ? t[3] : NULL, f & 4 ? t[4] : NULL, t[0], t[1], t[2],
                                 f & 1);
}

static const int64_t ROWS[][2] = {{1, 1}, {5, 37}, {70, 1000}, {300, 7}};

Test(vulkan, row_scale_fwd_bwd_match_cpu) {
    pair bp = pair_open();
    uint64_t seed = 2200;
    for (int s = 0; s < 4; s++)
        for (int f = 0; f < 8; f++) {
            int64_t M = ROWS[s][0], C = ROWS[s][1];
            if ((f & 6) == 0) { /* the forward, once per score function */
                arg fwd[] = {A2(IN, M, C, -2, 2), A1(IN, M, -3, 3), A2(OUT, M, C, 0, 0)};
                check_op(&bp, "row_scale_fwd", 3, fwd, op_row_scale_fwd, &f, 1e-6, 1e-6, seed++);
                arg inplace[] = {A2(ACC, M, C, -2, 2), A1(IN, M, -3, 3)};
                check_op(&bp, "row_scale_fwd in place", 2, inplace, op_row_scale_inplace, &f,
                         1e-6, 1e-6, seed++);
                continue;
            }
            arg bwd[] = {A2(IN, M, C, -1, 1), A2(IN, M, C, -2, 2), A1(IN, M, -3, 3),
                         A2(ACC, M, C, -1, 1), A1(ACC, M, -1, 1)};
            /* ds sums up to 1000 f32 products. */
            check_op(&bp, "row_scale_bwd", 5, bwd, op_row_scale_bwd, &f, 2e-5, 1e-5, seed++);
            if ((f & 6) != 6) continue;
            /* both written, not accumulated: NaN-poisoned before */
            arg set[] = {A2(IN, M, C, -1, 1), A2(IN, M, C, -2, 2), A1(IN, M, -3, 3),
                         A2(OUT, M, C, 0, 0), A1(OUT, M, 0, 0)};
            check_op(&bp, "row_scale_bwd_set", 5, set, op_row_scale_bwd_set, &f, 2e-5, 1e-5,
                     seed++);
        }
    pair_close(&bp);
}

/* ---- bce_logits ---- */

/* ctx: 0 with dlogits, 1 without, 2 dlogits aliasing logits. */
static chm_status op_bce(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    int k = *(const int *)ctx;
    return chm_bce_logits(be, t[2], k == 1 ? NULL : k == 2 ? t[0] : t[3], t[0], t[1], 0.37);
}

Test(vulkan, bce_logits_matches_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < 4; s++)
        for (int k = 0; k < 3; k++) {
            int64_t n = SIZES[s];
            /* logits up to +-30: the saturated ends of softplus and sigmoid */
            arg a[] = {A1(k == 2 ? ACC : IN, n, -30, 30), A1(IN, n, 0, 1), A1(OUT, n, 0, 0),
                       A1(OUT, n, 0, 0)};
            check_op(&bp, "bce_logits", k == 0 ? 4 : 3, a, op_bce, &k, 1e-6, 1e-5,
                     2300 + 3 * (uint64_t)s + (uint64_t)k);
        }
    pair_close(&bp);
}

/* ---- gather_rows / scatter_add_rows ---- */

static chm_status op_gather(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_gather_rows(be, t[2], t[0], t[1]);
}
/* ctx: weights given or not; t = {x, idx, out[, w]}. */
static chm_status op_scatter(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    return chm_scatter_add_rows(be, t[2], t[0], t[1], *(const bool *)ctx ? t[3] : NULL);
}
/* The bounded form with the loosest true bound (M: no index occurs more often). */
static chm_status op_scatter_bounded(chm_backend *be, const chm_tensor *const *t,
                                     const void *ctx) {
    (void)ctx;
    return chm_scatter_add_rows_bounded(be, t[2], t[0], t[1], t[3], (int)t[1]->shape[0]);
}

/* {R rows of x (gather) / of out (scatter), M indices, C}: M > R repeats rows. */
static const int64_t ROW_MOVES[][3] = {{1, 1, 1},    {7, 13, 5}, {50, 300, 70}, {1000, 37, 3},
                                       {1, 300, 9},  {40, 60, 24}};

Test(vulkan, gather_rows_matches_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < 6; s++) { /* 40 x 24: rows of whole 16-byte words */
        int64_t R = ROW_MOVES[s][0], M = ROW_MOVES[s][1], C = ROW_MOVES[s][2];
        arg a[] = {A2(IN, R, C, -1, 1), A1(IDS, M, -1, (double)R), A2(OUT, M, C, 0, 0)};
        check_op(&bp, "gather_rows", 3, a, op_gather, NULL, 0, 0, 2400 + (uint64_t)s);
    }
    pair_close(&bp);
}

Test(vulkan, scatter_add_rows_matches_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < 5; s++)
        for (int w = 0; w < 2; w++) {
            bool weights = w;
            int64_t R = ROW_MOVES[s][0], M = ROW_MOVES[s][1], C = ROW_MOVES[s][2];
            arg a[] = {A2(IN, M, C, -1, 1), A1(IDS, M, -1, (double)R), A2(ACC, R, C, -1, 1),
                       A1(IN, M, -2, 2)};
            /* The cpu's order of additions, rounded to f32 after each one like ours. */
            check_op(&bp, "scatter_add_rows", weights ? 4 : 3, a, op_scatter, &weights, 2e-6,
                     1e-6, 2410 + 2 * (uint64_t)s + (uint64_t)w);
            if (weights && s < 3)
                check_op(&bp, "scatter_add_rows bounded", 4, a, op_scatter_bounded, NULL, 2e-6,
                         1e-6, 2420 + (uint64_t)s);
        }
    pair_close(&bp);
}

/* ctx: the bound r; t = {x, idx, out, w}. */
static chm_status op_scatter_bound(chm_backend *be, const chm_tensor *const *t,
                                   const void *ctx) {
    return chm_scatter_add_rows_bounded(be, t[2], t[0], t[1], t[3], *(const int *)ctx);
}

/* The bounded scatter's own path (a bound of 1..8: listed sources, no scan or sort) against
   the cpu: a row's sources far apart and out of order, every seventh index skipped. */
Test(vulkan, scatter_add_rows_bounded_matches_cpu) {
    pair bp = pair_open();
    tt_rng rng = tt_rng_make(2430);
    const int64_t shapes[][3] = {{40, 64, 75}, {9, 300, 60}, {30, 1, 50}}; /* R, C, M <= R r */
    const int rs[] = {2, 7, 3};
    for (int s = 0; s < 3; s++) {
        int64_t R = shapes[s][0], C = shapes[s][1], M = shapes[s][2];
        int32_t idx[75];
        for (int64_t m = 0; m < M; m++) idx[m] = m % 7 == 6 ? -1 : (int32_t)((m / rs[s]) % R);
        for (int64_t m = M - 1; m > 0; m--) {
            int64_t j = (int64_t)(tt_next(&rng) % (uint64_t)(m + 1));
            int32_t t = idx[m];
            idx[m] = idx[j];
            idx[j] = t;
        }
        arg a[] = {A2(IN, M, C, -1, 1), A1(IDS, M, -1, (double)R), A2(ACC, R, C, -1, 1),
                   A1(IN, M, -2, 2)};
        a[1].idata = idx;
        check_op(&bp, "scatter_add_rows bounded", 4, a, op_scatter_bound, &rs[s], 2e-6, 1e-6,
                 2430 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* ---- router_topk, router_topk_bwd, select_topk ---- */

typedef struct router_case {
    chm_router_score score;
    bool renorm;
} router_case;

/* t = {logits, gates, idx, probs, slot_token, slot_ref, counts} */
static chm_status op_router(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const router_case *c = ctx;
    return chm_router_topk(be, t[1], t[2], t[3], t[4], t[5], t[6], t[0], c->score, c->renorm);
}
/* t = {dgates, probs, idx, dlogits} */
static chm_status op_router_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const router_case *c = ctx;
    return chm_router_topk_bwd(be, t[3], t[0], t[1], t[2], c->score, c->renorm);
}
static chm_status op_select(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_select_topk(be, t[1], t[0], false);
}

/* n values, every other one a small integer so that ties are common. */
static double *tied_values(int64_t n, uint64_t seed) {
    tt_rng rng = tt_rng_make(seed);
    double *v = tt_dalloc(n);
    for (int64_t i = 0; i < n; i++) {
        v[i] = tt_uniform(&rng, -3, 3);
        if (i % 2) v[i] = floor(v[i]);
    }
    return v;
}

/* {R, E, K, cap}: capacities below R*K/E drop tokens. */
static const int64_t ROUTES[][4] = {{1, 1, 1, 1}, {7, 4, 2, 3}, {300, 8, 2, 70}, {100, 64, 6, 20},
                                    {5, 3, 3, 0}};

Test(vulkan, router_topk_matches_cpu) {
    pair bp = pair_open();
    static const router_case cases[] = {{CHM_ROUTER_SOFTMAX, true}, {CHM_ROUTER_SOFTMAX, false},
                                        {CHM_ROUTER_SIGMOID, true}, {CHM_ROUTER_SIGMOID, false}};
    uint64_t seed = 2500;
    for (int s = 0; s < 5; s++)
        for (int k = 0; k < 4; k++) {
            int64_t R = ROUTES[s][0], E = ROUTES[s][1], K = ROUTES[s][2], cap = ROUTES[s][3];
            double *z = tied_values(R * E, seed);
            arg a[] = {A2(IN, R, E, 0, 0),        A2(OUT, R, K, 0, 0),        A2(OUT_IDS, R, K, 0, 0),
                       A2(OUT, R, E, 0, 0),       A2(OUT_IDS, E, cap, 0, 0), A2(OUT_IDS, E, cap, 0, 0),
                       A1(OUT_IDS, E, 0, 0)};
            a[0].data = z;
            check_op(&bp, "router_topk", 7, a, op_router, &cases[k], 1e-6, 1e-5, seed++);
            free(z);
        }
    pair_close(&bp);
}

Test(vulkan, router_topk_bwd_matches_cpu) {
    pair bp = pair_open();
    static const router_case cases[] = {{CHM_ROUTER_SOFTMAX, true}, {CHM_ROUTER_SOFTMAX, false},
                                        {CHM_ROUTER_SIGMOID, true}, {CHM_ROUTER_SIGMOID, false}};
    uint64_t seed = 2600;
    for (int s = 0; s < 4; s++)
        for (int k = 0; k < 4; k++) {
            int64_t R = ROUTES[s][0], E = ROUTES[s][1], K = ROUTES[s][2];
            arg a[] = {A2(IN, R, K, -1, 1), A2(IN, R, E, 0.05, 1), A2(IDS, R, K, 0, (double)E),
                       A2(ACC, R, E, -1, 1)};
            check_op(&bp, "router_topk_bwd", 4, a, op_router_bwd, &cases[k], 1e-6, 1e-5, seed++);
        }
    pair_close(&bp);
}

Test(vulkan, select_topk_matches_cpu) {
    pair bp = pair_open();
    /* {R, C, K} */
    static const int64_t shapes[][3] = {{1, 1, 1}, {3, 37, 5}, {4, 300, 100}, {2, 1000, 999},
                                        {5, 70, 70}};
    for (int s = 0; s < 5; s++)
        for (int tied = 0; tied < 2; tied++) {
            int64_t R = shapes[s][0], C = shapes[s][1], K = shapes[s][2];
            uint64_t seed = 2700 + 2 * (uint64_t)s + (uint64_t)tied;
            double *v = tied ? tied_values(R * C, seed) : NULL;
            arg a[] = {A2(IN, R, C, -1, 1), A2(OUT_IDS, R, K, 0, 0)};
            a[0].data = v;
            check_op(&bp, "select_topk", 2, a, op_select, NULL, 0, 0, seed);
            free(v);
        }
    pair_close(&bp);
}

/*
 * Scores that the order must get right: NaN (last, lower index first), -0 tied with +0,
 * infinities, f32 denormals (above zero), repeats; K across the NaN boundary and at C.
 */
Test(vulkan, select_topk_orders_special_values) {
    pair bp = pair_open();
    static const double special[] = {NAN, -0.0, 0.0, INFINITY, -INFINITY, 1e-40, -1e-40, 1.0,
                                     -1.0, 0.5};
    int64_t R = 3, C = 300;
    double *v = tt_dalloc(R * C);
    tt_rng rng = tt_rng_make(2800);
    for (int64_t i = 0; i < R * C; i++)
        v[i] = special[(int64_t)floor(tt_uniform(&rng, 0, 10)) % 10];
    static const int64_t ks[] = {1, 150, 270, 299, 300};
    for (int k = 0; k < 5; k++) {
        arg a[] = {A2(IN, R, C, 0, 0), A2(OUT_IDS, R, ks[k], 0, 0)};
        a[0].data = v;
        check_op(&bp, "select_topk", 2, a, op_select, NULL, 0, 0, 2810 + (uint64_t)k);
    }
    free(v);
    pair_close(&bp);
}

/* The single pass of one workgroup a row (CHIMERA_VULKAN_DISABLE=topk_split). */
Test(vulkan, select_topk_one_workgroup_a_row) {
    setenv("CHIMERA_VULKAN_DISABLE", "topk_split", 1);
    pair bp = pair_open();
    double *v = tied_values(4 * 300, 2820);
    arg a[] = {A2(IN, 4, 300, -1, 1), A2(OUT_IDS, 4, 100, 0, 0)};
    a[0].data = v;
    check_op(&bp, "select_topk", 2, a, op_select, NULL, 0, 0, 2821);
    free(v);
    pair_close(&bp);
}

/* ---- cross_entropy ---- */

/* ctx: 0 dlogits separate, 1 no dlogits, 2 dlogits aliasing logits; t = {logits, targets, losses[, dlogits]}. */
static chm_status op_ce(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    int k = *(const int *)ctx;
    return chm_cross_entropy(be, t[2], k == 1 ? NULL : k == 2 ? t[0] : t[3], t[0], t[1], 0.25);
}

Test(vulkan, cross_entropy_matches_cpu) {
    pair bp = pair_open();
    /* {R, V}: single entries, odd, long rows (several chunks per invocation), many rows,
       rows of whole 16-byte words (the shader's word loads) */
    static const int64_t shapes[][2] = {{1, 1}, {5, 37}, {7, 5003}, {300, 50}, {9, 4000}};
    for (int s = 0; s < 5; s++)
        for (int k = 0; k < 3; k++) {
            int64_t R = shapes[s][0], V = shapes[s][1];
            /* targets include -1 (ignored) */
            arg a[] = {A2(k == 2 ? ACC : IN, R, V, -8, 8), A1(IDS, R, -1, (double)V),
                       A1(OUT, R, 0, 0), A2(OUT, R, V, 0, 0)};
            /* f32 logsumexp over up to 5003 terms against the cpu's double */
            check_op(&bp, "cross_entropy", k == 0 ? 4 : 3, a, op_ce, &k, 1e-6, 1e-5,
                     2800 + 3 * (uint64_t)s + (uint64_t)k);
        }
    pair_close(&bp);
}

/* ---- moe_aux ---- */

/* ctx: dlogits wanted; t = {logits, idx, losses[, dlogits]}. */
static chm_status op_moe_aux(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    return chm_moe_aux(be, t[2], *(const bool *)ctx ? t[3] : NULL, t[0], t[1], 0.7, 1e-2);
}

Test(vulkan, moe_aux_matches_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < 4; s++)
        for (int g = 0; g < 2; g++) {
            bool grad = g;
            int64_t R = ROUTES[s][0], E = ROUTES[s][1], K = ROUTES[s][2];
            arg a[] = {A2(IN, R, E, -3, 3), A2(IDS, R, K, 0, (double)E), A1(OUT, 2, 0, 0),
                       A2(ACC, R, E, -1, 1)};
            check_op(&bp, "moe_aux", grad ? 4 : 3, a, op_moe_aux, &grad, 1e-6, 1e-5,
                     2900 + 2 * (uint64_t)s + (uint64_t)g);
        }
    pair_close(&bp);
}

/* ---- bad indices: seen only by the device, reported by the next sync ---- */

/* Run op on vulkan (it records fine), then require CHM_ERR_INVALID_ARG from chm_sync, once. */
static void expect_reported(chm_backend *vk, const char *what, chm_status rc) {
    cr_assert_eq(rc, CHM_OK, "%s: %s", what, vk->err.msg);
    cr_assert_eq(chm_sync(vk), CHM_ERR_INVALID_ARG, "%s: a bad index must be reported", what);
    cr_assert_eq(chm_sync(vk), CHM_OK, "%s: the report is cleared once raised", what);
}

Test(vulkan, bad_indices_are_reported_at_sync) {
    chm_backend *vk = vk_open();
    tt_tensor x = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 3});
    tt_tensor y = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 3});
    tt_tensor l = tt_alloc(vk, CHM_F32, 1, (int64_t[]){4}), l2 = tt_alloc(vk, CHM_F32, 1, (int64_t[]){2});
    tt_tensor ix = tt_alloc(vk, CHM_I32, 1, (int64_t[]){4});
    tt_tensor ik = tt_alloc(vk, CHM_I32, 2, (int64_t[]){4, 1});
    tt_tensor g = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 1});
    cr_assert_eq(chm_fill(vk, &x.t, 0.5), CHM_OK);
    cr_assert_eq(chm_fill(vk, &y.t, 0), CHM_OK);
    cr_assert_eq(chm_fill(vk, &g.t, 1), CHM_OK);
    tt_upload_i32(vk, &ix, (int32_t[]){0, -1, 4, 1});  /* 4 is past 4 rows, 3 classes */
    tt_upload_i32(vk, &ik, (int32_t[]){0, 3, 1, 2});   /* 3 is past 3 experts */
    expect_reported(vk, "gather_rows", chm_gather_rows(vk, &y.t, &x.t, &ix.t));
    expect_reported(vk, "scatter_add_rows", chm_scatter_add_rows(vk, &y.t, &x.t, &ix.t, NULL));
    tt_upload_i32(vk, &ix, (int32_t[]){2, 0, 2, 2}); /* row 2 three times under a bound of 2 */
    expect_reported(vk, "scatter_add_rows bounded",
                    chm_scatter_add_rows_bounded(vk, &y.t, &x.t, &ix.t, NULL, 2));
    tt_upload_i32(vk, &ix, (int32_t[]){0, -1, 4, 1});
    expect_reported(vk, "cross_entropy", chm_cross_entropy(vk, &l.t, &y.t, &x.t, &ix.t, 1));
    expect_reported(vk, "router_topk_bwd", chm_router_topk_bwd(vk, &y.t, &g.t, &x.t, &ik.t,
                                                               CHM_ROUTER_SOFTMAX, true));
    expect_reported(vk, "moe_aux", chm_moe_aux(vk, &l2.t, &y.t, &x.t, &ik.t, 1, 1));
    tt_free(&x), tt_free(&y), tt_free(&l), tt_free(&l2), tt_free(&ix), tt_free(&ik), tt_free(&g);
    vk_close(vk);
}

/* ---- the shared wrappers' refusals, on the vulkan backend ---- */

/* rc is want and the message names the op and the argument. */
static void expect_refused(chm_backend *vk, chm_status rc, chm_status want, const char *op,
                           const char *argname) {
    cr_assert_eq(rc, want, "%s: got %s (%s)", op, chm_status_name(rc), vk->err.msg);
    cr_assert(strstr(vk->err.msg, op) && strstr(vk->err.msg, argname),
              "%s: the message should name the op and '%s': %s", op, argname, vk->err.msg);
}

Test(vulkan, wrappers_refuse_bad_shapes_and_dtypes) {
    chm_backend *vk = vk_open();
    tt_tensor a = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 6}), b = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 5});
    tt_tensor r4 = tt_alloc(vk, CHM_F32, 4, (int64_t[]){1, 2, 2, 4}), r5 = tt_alloc(vk, CHM_F32, 4, (int64_t[]){1, 2, 2, 5});
    tt_tensor v4 = tt_alloc(vk, CHM_F32, 1, (int64_t[]){4}), v5 = tt_alloc(vk, CHM_F32, 1, (int64_t[]){5});
    tt_tensor i4 = tt_alloc(vk, CHM_I32, 1, (int64_t[]){4}), f4 = tt_alloc(vk, CHM_F64, 1, (int64_t[]){4});
    tt_tensor k2 = tt_alloc(vk, CHM_I32, 2, (int64_t[]){4, 2}), g2 = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 2});
    tt_tensor c3 = tt_alloc(vk, CHM_I32, 1, (int64_t[]){3});
    tt_tensor e3 = tt_alloc(vk, CHM_F32, 3, (int64_t[]){2, 4, 6});
    expect_refused(vk, chm_matmul_grouped(vk, &e3.t, &e3.t, &e3.t, &c3.t, false, true, 1, 0),
                   CHM_ERR_SHAPE, "matmul_grouped", "C");
    expect_refused(vk, chm_rope_fwd(vk, &r4.t, &r5.t, 1e4, 0), CHM_ERR_SHAPE, "rope_fwd", "x");
    expect_refused(vk, chm_rope_bwd(vk, &r5.t, &r4.t, 1e4, 0), CHM_ERR_SHAPE, "rope_bwd", "dx");
    expect_refused(vk, chm_exp_fwd(vk, &v4.t, &v5.t, 1), CHM_ERR_SHAPE, "exp_fwd", "out");
    expect_refused(vk, chm_exp_bwd(vk, &v5.t, &v4.t, &v4.t), CHM_ERR_SHAPE, "exp_bwd", "dx");
    expect_refused(vk, chm_row_scale_fwd(vk, &a.t, &a.t, &v5.t, true), CHM_ERR_SHAPE,
                   "row_scale_fwd", "s");
    expect_refused(vk, chm_row_scale_bwd(vk, &b.t, NULL, &a.t, &a.t, &v4.t, true), CHM_ERR_SHAPE,
                   "row_scale_bwd", "dx");
    expect_refused(vk, chm_bce_logits(vk, &v4.t, NULL, &v4.t, &f4.t, 1), CHM_ERR_DTYPE,
                   "bce_logits", "targets");
    expect_refused(vk, chm_gather_rows(vk, &b.t, &a.t, &i4.t), CHM_ERR_SHAPE, "gather_rows", "out");
    expect_refused(vk, chm_scatter_add_rows(vk, &a.t, &b.t, &i4.t, NULL), CHM_ERR_SHAPE,
                   "scatter_add_rows", "x");
    expect_refused(vk, chm_select_topk(vk, &a.t, &b.t, false), CHM_ERR_DTYPE, "select_topk", "idx");
    expect_refused(vk, chm_router_topk_bwd(vk, &a.t, &b.t, &a.t, &k2.t, CHM_ROUTER_SOFTMAX, true),
                   CHM_ERR_SHAPE, "router_topk_bwd", "dgates");
    expect_refused(vk, chm_router_topk(vk, &g2.t, &k2.t, &b.t, &a.t, &a.t, &c3.t, &a.t,
                                       CHM_ROUTER_SOFTMAX, true),
                   CHM_ERR_SHAPE, "router_topk", "probs");
    expect_refused(vk, chm_cross_entropy(vk, &v4.t, &b.t, &a.t, &i4.t, 1), CHM_ERR_SHAPE,
                   "cross_entropy", "dlogits");
    expect_refused(vk, chm_moe_aux(vk, &v4.t, NULL, &a.t, &k2.t, 1, 1), CHM_ERR_SHAPE, "moe_aux",
                   "losses");
    /* f64 passes the wrapper and is refused by the backend, naming the op */
    expect_refused(vk, chm_exp_fwd(vk, &f4.t, &f4.t, 1), CHM_ERR_DTYPE, "exp_fwd", "f32");
    tt_tensor *all[] = {&a, &b, &r4, &r5, &v4, &v5, &i4, &f4, &k2, &g2, &c3, &e3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tt_free(all[i]);
    vk_close(vk);
}

/* ---- views that start at odd elements (the model's row blocks) ---- */

/* Give argument i a lead of 2i+1 elements. */
static void odd_leads(arg *a, int n) {
    for (int i = 0; i < n; i++) a[i].lead = 2 * i + 1;
}

Test(vulkan, ops_on_views_at_odd_offsets) {
    pair bp = pair_open();
    mm_case mc = {true, true, true, 0.5, 1.0};
    arg mm[] = {A2(IN, 19, 33, -1, 1), A2(IN, 37, 19, -1, 1), A2(ACC, 33, 37, -1, 1),
                A1(IN, 37, -1, 1)};
    odd_leads(mm, 4);
    check_op(&bp, "matmul on views", 4, mm, op_matmul, &mc, 2e-5, 1e-5, 3000);
    static const int32_t counts[] = {3, 9};
    mmg_case gc = {true, false, 1.0, 0.0};
    arg mg[] = {A3(IN, 2, 9, 5, -1, 1), A3(IN, 2, 9, 7, -1, 1), A3(OUT, 2, 5, 7, 0, 0),
                A1(IDS, 2, 0, 0)};
    mg[3].idata = counts;
    odd_leads(mg, 4);
    check_op(&bp, "matmul_grouped on views", 4, mg, op_matmul_grouped, &gc, 2e-5, 1e-5, 3001);
    rope_case rc = {10000, 7};
    arg rope[] = {A4(IN, 2, 5, 3, 8, -2, 2), A4(ACC, 2, 5, 3, 8, -1, 1)};
    odd_leads(rope, 2);
    check_op(&bp, "rope_bwd on views", 2, rope, op_rope_bwd, &rc, 1e-5, 1e-5, 3002);
    bool weights = true;
    arg sc[] = {A2(IN, 40, 6, -1, 1), A1(IDS, 40, -1, 9), A2(ACC, 9, 6, -1, 1), A1(IN, 40, -1, 1)};
    odd_leads(sc, 4);
    check_op(&bp, "scatter_add_rows on views", 4, sc, op_scatter, &weights, 2e-6, 1e-6, 3003);
    int k = 0;
    arg ce[] = {A2(IN, 6, 77, -4, 4), A1(IDS, 6, -1, 77), A1(OUT, 6, 0, 0), A2(OUT, 6, 77, 0, 0)};
    odd_leads(ce, 4);
    check_op(&bp, "cross_entropy on views", 4, ce, op_ce, &k, 1e-6, 1e-5, 3004);
    router_case ro = {CHM_ROUTER_SOFTMAX, true};
    arg rt[] = {A2(IN, 30, 8, -2, 2),       A2(OUT, 30, 2, 0, 0),      A2(OUT_IDS, 30, 2, 0, 0),
                A2(OUT, 30, 8, 0, 0),       A2(OUT_IDS, 8, 9, 0, 0),   A2(OUT_IDS, 8, 9, 0, 0),
                A1(OUT_IDS, 8, 0, 0)};
    odd_leads(rt, 7);
    check_op(&bp, "router_topk on views", 7, rt, op_router, &ro, 1e-6, 1e-5, 3005);
    arg st[] = {A2(IN, 3, 50, -1, 1), A2(OUT_IDS, 3, 11, 0, 0)};
    odd_leads(st, 2);
    check_op(&bp, "select_topk on views", 2, st, op_select, NULL, 0, 0, 3006);
    bool grad = true;
    arg aux[] = {A2(IN, 20, 6, -3, 3), A2(IDS, 20, 2, 0, 6), A1(OUT, 2, 0, 0), A2(ACC, 20, 6, -1, 1)};
    odd_leads(aux, 4);
    check_op(&bp, "moe_aux on views", 4, aux, op_moe_aux, &grad, 1e-6, 1e-5, 3007);
    int f = 7;
    arg rs[] = {A2(IN, 9, 13, -1, 1), A2(IN, 9, 13, -2, 2), A1(IN, 9, -3, 3), A2(ACC, 9, 13, -1, 1),
                A1(ACC, 9, -1, 1)};
    odd_leads(rs, 5);
    check_op(&bp, "row_scale_bwd on views", 5, rs, op_row_scale_bwd, &f, 2e-5, 1e-5, 3008);
    pair_close(&bp);
}

/* ---- determinism: the scatter's buckets are filled by atomics, then sorted ---- */

/* More output rows than one workgroup scans at once (the plan's _scan runs several rounds). */
Test(vulkan, scatter_add_rows_many_rows) {
    pair bp = pair_open();
    bool weights = true;
    int64_t R = 5000, M = 6000, C = 3;
    arg a[] = {A2(IN, M, C, -1, 1), A1(IDS, M, -1, (double)R), A2(ACC, R, C, -1, 1),
               A1(IN, M, -2, 2)};
    check_op(&bp, "scatter_add_rows", 4, a, op_scatter, &weights, 2e-6, 1e-6, 2430);
    pair_close(&bp);
}

Test(vulkan, scatter_add_rows_is_bitwise_repeatable) {
    chm_backend *vk = vk_open();
    int64_t R = 7, M = 3000, C = 33;
    tt_tensor x = tt_alloc(vk, CHM_F32, 2, (int64_t[]){M, C}), ix = tt_alloc(vk, CHM_I32, 1, &M);
    tt_tensor out[2] = {tt_alloc(vk, CHM_F32, 2, (int64_t[]){R, C}),
                        tt_alloc(vk, CHM_F32, 2, (int64_t[]){R, C})};
    tt_rng rng = tt_rng_make(3100);
    double *h = tt_dalloc(M * C);
    tt_fill_uniform(&rng, h, M * C, -1, 1);
    tt_upload(vk, &x, h);
    int32_t *ids = malloc((size_t)M * sizeof *ids);
    for (int64_t m = 0; m < M; m++) ids[m] = (int32_t)(tt_next(&rng) % (uint64_t)R);
    tt_upload_i32(vk, &ix, ids);
    float *got[2];
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(chm_fill(vk, &out[k].t, 0), CHM_OK);
        cr_assert_eq(chm_scatter_add_rows(vk, &out[k].t, &x.t, &ix.t, NULL), CHM_OK, "%s",
                     vk->err.msg);
        got[k] = malloc((size_t)(R * C) * sizeof *got[k]);
        cr_assert_eq(chm_download(vk, &out[k].t, got[k]), CHM_OK, "%s", vk->err.msg);
    }
    cr_assert(memcmp(got[0], got[1], (size_t)(R * C) * sizeof(float)) == 0,
              "two runs of scatter_add_rows differ");
    free(got[0]), free(got[1]), free(h), free(ids);
    tt_free(&x), tt_free(&ix), tt_free(&out[0]), tt_free(&out[1]);
    vk_close(vk);
}
