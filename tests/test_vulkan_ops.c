/*
 * test_vulkan_ops.c: every op of the vulkan backend against the cpu backend.
 *
 * A small generic harness: an op is a list of arguments (inputs, outputs,
 * accumulated gradients, ids) and a function calling it. The same random
 * inputs go to both backends; vulkan outputs are poisoned with NaN first,
 * accumulated outputs start at the same random values on both sides; then
 * every output is downloaded and compared with f32 tolerances (worst element
 * reported). Each op runs at several shapes: 1, odd sizes, and sizes larger
 * than a workgroup (lavapipe's are 64 invocations). Every test ends by
 * checking that the validation layer reported nothing (tools/test.sh runs
 * the suite with VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation).
 * The whole suite is skipped when no Vulkan device is found. The harness
 * itself is in vk_harness.h (shared with the other test_vulkan_*.c files).
 */
#include "core/half.h"
#include "vk_harness.h"

/* Sizes: one element, odd, and more than one workgroup. */
static const int64_t SIZES[] = {1, 37, 1000, 4099};
#define NSIZES 4

/* Row shapes [R, C] for row-wise ops: tiny, odd, wide rows, many short rows. */
static const int64_t ROWS[][2] = {{1, 1}, {5, 37}, {70, 1000}, {300, 7}};
#define NROWS 4

/* ---- elementwise ---- */

static chm_status op_add(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_add(be, t[2], t[0], t[1]);
}
static chm_status op_scale(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_scale(be, t[1], t[0], -1.7);
}
static chm_status op_axpy(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_axpy(be, t[1], t[0], 0.3);
}
static chm_status op_sum_rows(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_sum_rows(be, t[1], t[0]);
}

Test(vulkan, add_scale_axpy_match_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < NSIZES; s++) {
        int64_t n = SIZES[s];
        arg add[] = {A1(IN, n, -2, 2), A1(IN, n, -2, 2), A1(OUT, n, 0, 0)};
        check_op(&bp, "add", 3, add, op_add, NULL, 1e-6, 1e-6, 1 + (uint64_t)s);
        arg scale[] = {A1(IN, n, -2, 2), A1(OUT, n, 0, 0)};
        check_op(&bp, "scale", 2, scale, op_scale, NULL, 1e-6, 1e-6, 11 + (uint64_t)s);
        arg axpy[] = {A1(IN, n, -2, 2), A1(ACC, n, -2, 2)};
        check_op(&bp, "axpy", 2, axpy, op_axpy, NULL, 1e-6, 1e-6, 21 + (uint64_t)s);
    }
    pair_close(&bp);
}

Test(vulkan, sum_rows_matches_cpu) {
    pair bp = pair_open();
    static const int64_t shapes[][2] = {{1, 1}, {37, 5}, {1000, 3}, {70, 1000}, {2000, 40}};
    for (int s = 0; s < 5; s++) {
        arg a[] = {A2(IN, shapes[s][0], shapes[s][1], -1, 1), A1(ACC, shapes[s][1], -1, 1)};
        /* f32 sums of up to 2000 terms against the cpu's double sums. */
        check_op(&bp, "sum_rows", 2, a, op_sum_rows, NULL, 2e-5, 1e-5, 31 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* ---- rmsnorm ---- */

static chm_status op_rms_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_rmsnorm_fwd(be, t[2], t[3], t[0], t[1], 1e-5);
}
static chm_status op_rms_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_rmsnorm_bwd(be, t[4], t[5], t[0], t[1], t[2], t[3]);
}

Test(vulkan, rmsnorm_fwd_bwd_match_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < NROWS; s++) {
        int64_t R = ROWS[s][0], C = ROWS[s][1];
        arg fwd[] = {A2(IN, R, C, -2, 2), A1(IN, C, 0.5, 1.5), A2(OUT, R, C, 0, 0),
                     A1(OUT, R, 0, 0)};
        check_op(&bp, "rmsnorm_fwd", 4, fwd, op_rms_fwd, NULL, 1e-5, 1e-5, 41 + (uint64_t)s);
        arg bwd[] = {A2(IN, R, C, -1, 1),   A2(IN, R, C, -2, 2), A1(IN, C, 0.5, 1.5),
                     A1(IN, R, 0.5, 2),     A2(ACC, R, C, -1, 1), A1(ACC, C, -1, 1)};
        check_op(&bp, "rmsnorm_bwd", 6, bwd, op_rms_bwd, NULL, 3e-5, 1e-5, 51 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* ---- swiglu ---- */

static chm_status op_swiglu_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_swiglu_fwd(be, t[2], t[0], t[1]);
}
/* ctx: NULL accumulates, anything else writes the gradients. */
static chm_status op_swiglu_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    return chm_swiglu_bwd(be, t[3], t[4], t[0], t[1], t[2], ctx == NULL);
}

Test(vulkan, swiglu_fwd_bwd_match_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < NSIZES; s++) {
        int64_t n = SIZES[s];
        arg fwd[] = {A1(IN, n, -8, 8), A1(IN, n, -2, 2), A1(OUT, n, 0, 0)};
        check_op(&bp, "swiglu_fwd", 3, fwd, op_swiglu_fwd, NULL, 1e-6, 1e-5, 61 + (uint64_t)s);
        arg bwd[] = {A1(IN, n, -1, 1), A1(IN, n, -8, 8), A1(IN, n, -2, 2), A1(ACC, n, -1, 1),
                     A1(ACC, n, -1, 1)};
        check_op(&bp, "swiglu_bwd", 5, bwd, op_swiglu_bwd, NULL, 1e-6, 1e-5, 71 + (uint64_t)s);
        arg set[] = {A1(IN, n, -1, 1), A1(IN, n, -8, 8), A1(IN, n, -2, 2), A1(OUT, n, 0, 0),
                     A1(OUT, n, 0, 0)};
        check_op(&bp, "swiglu_bwd written", 5, set, op_swiglu_bwd, &bp, 1e-6, 1e-5,
                 81 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* ---- embedding ---- */

static chm_status op_emb_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_embedding_fwd(be, t[2], t[0], t[1]);
}
static chm_status op_emb_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_embedding_bwd(be, t[2], t[1], t[0]);
}

Test(vulkan, embedding_fwd_bwd_match_cpu) {
    pair bp = pair_open();
    /* {rows, vocab, cols}: repeated ids (vocab < rows) exercise the backward's chains. */
    static const int64_t shapes[][3] = {{1, 1, 1}, {37, 5, 13}, {300, 50, 70}, {1000, 997, 3}};
    for (int s = 0; s < 4; s++) {
        int64_t R = shapes[s][0], V = shapes[s][1], C = shapes[s][2];
        arg fwd[] = {A1(IDS, R, 0, (double)V), A2(IN, V, C, -1, 1), A2(OUT, R, C, 0, 0)};
        check_op(&bp, "embedding_fwd", 3, fwd, op_emb_fwd, NULL, 0, 0, 81 + (uint64_t)s);
        arg bwd[] = {A1(IDS, R, 0, (double)V), A2(IN, R, C, -1, 1), A2(ACC, V, C, -1, 1)};
        /* Same additions in the same order as the cpu: equal up to contraction. */
        check_op(&bp, "embedding_bwd", 3, bwd, op_emb_bwd, NULL, 1e-6, 1e-6, 91 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* ---- sum_squares and adamw ---- */

static chm_status op_sumsq(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    (void)ctx;
    return chm_sum_squares(be, t[1], t[0]);
}

Test(vulkan, sum_squares_matches_cpu) {
    pair bp = pair_open();
    static const int64_t sizes[] = {1, 37, 1000, 100003, 2000000};
    for (int s = 0; s < 5; s++) {
        arg a[] = {A1(IN, sizes[s], -1, 1), A1(OUT, 1, 0, 0)};
        check_op(&bp, "sum_squares", 2, a, op_sumsq, NULL, 0, 1e-5, 101 + (uint64_t)s);
    }
    pair_close(&bp);
}

static chm_status op_adamw(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    return chm_adamw_step(be, t[0], t[1], t[2], t[3], NULL, ctx);
}

Test(vulkan, adamw_matches_cpu) {
    pair bp = pair_open();
    chm_adamw_args args = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                           .weight_decay = 0.1, .step = 7, .grad_scale = 0.5};
    for (int s = 0; s < NSIZES; s++) {
        int64_t n = SIZES[s];
        arg a[] = {A1(ACC, n, -1, 1), A1(IN, n, -1, 1), A1(ACC, n, -0.1, 0.1),
                   A1(ACC, n, 0, 0.01)};
        check_op(&bp, "adamw_step", 4, a, op_adamw, &args, 1e-6, 1e-5, 111 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* param_lowp: the rounded copy equals the rounding of the (matching) f32 param. */
Test(vulkan, adamw_writes_rounded_copy) {
    chm_backend *vk = vk_open();
    if (!(vk->caps & CHM_CAP_BF16)) {
        vk_close(vk);
        cr_skip_test("this device has no 16-bit storage");
    }
    chm_adamw_args args = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8,
                           .weight_decay = 0.0, .step = 1, .grad_scale = 1.0};
    const chm_dtype lowp[] = {CHM_BF16, CHM_F16};
    int64_t n = 1000;
    tt_rng rng = tt_rng_make(121);
    for (int k = 0; k < 2; k++) {
        tt_tensor t[5];
        for (int i = 0; i < 4; i++) t[i] = tt_alloc(vk, CHM_F32, 1, (int64_t[]){n});
        t[4] = tt_alloc(vk, lowp[k], 1, (int64_t[]){n});
        double *h = tt_dalloc(n);
        for (int i = 0; i < 4; i++) {
            tt_fill_uniform(&rng, h, n, i == 3 ? 0 : -1, 1);
            tt_upload(vk, &t[i], h);
        }
        cr_assert_eq(chm_adamw_step(vk, &t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t, &args),
                     CHM_OK, "%s", vk->err.msg);
        float *p = malloc((size_t)n * sizeof *p);
        uint16_t *q = malloc((size_t)n * sizeof *q);
        cr_assert_eq(chm_download(vk, &t[0].t, p), CHM_OK);
        cr_assert_eq(chm_download(vk, &t[4].t, q), CHM_OK);
        for (int64_t i = 0; i < n; i++) {
            uint16_t want = k == 0 ? chm_f32_to_bf16(p[i]) : chm_f32_to_f16(p[i]);
            cr_assert_eq(q[i], want, "%s element %lld: 0x%04x, want 0x%04x of %g",
                         chm_dtype_name(lowp[k]), (long long)i, q[i], want, p[i]);
        }
        free(p), free(q), free(h);
        for (int i = 0; i < 5; i++) tt_free(&t[i]);
    }
    vk_close(vk);
}

/* ---- memory ops: bit-exact against the cpu ---- */

/* Download raw bytes from both backends and require them equal. */
static void assert_same_bytes(const char *what, chm_backend *cpu, const chm_tensor *a,
                              chm_backend *vk, const chm_tensor *b) {
    size_t nb = chm_tensor_nbytes(a);
    unsigned char *x = malloc(nb ? nb : 1), *y = malloc(nb ? nb : 1);
    cr_assert_eq(chm_download(cpu, a, x), CHM_OK);
    cr_assert_eq(chm_download(vk, b, y), CHM_OK, "%s", vk->err.msg);
    for (size_t i = 0; i < nb; i++)
        cr_assert_eq(x[i], y[i], "%s: byte %zu is 0x%02x, cpu has 0x%02x", what, i, y[i], x[i]);
    free(x), free(y);
}

Test(vulkan, fill_matches_cpu_for_every_dtype) {
    chm_backend *cpu = tt_open_cpu(), *vk = vk_open();
    const chm_dtype dts[] = {CHM_F32, CHM_F64, CHM_I32, CHM_BF16, CHM_F16};
    const double values[] = {-3.0, 1.0 / 3.0, 70000.0, 1e-7};
    for (int d = 0; d < 5; d++)
        for (int s = 0; s < NSIZES; s++) {
            if (chm_dtype_size(dts[d]) == 2 && !(vk->caps & CHM_CAP_BF16)) continue;
            tt_tensor a = tt_alloc(cpu, dts[d], 1, &SIZES[s]), b = tt_alloc(vk, dts[d], 1, &SIZES[s]);
            double v = dts[d] == CHM_I32 ? -3.0 : values[s];
            cr_assert_eq(chm_fill(cpu, &a.t, v), CHM_OK);
            cr_assert_eq(chm_fill(vk, &b.t, v), CHM_OK, "%s", vk->err.msg);
            assert_same_bytes(chm_dtype_name(dts[d]), cpu, &a.t, vk, &b.t);
            tt_free(&a), tt_free(&b);
        }
    tt_tensor i32 = tt_alloc(vk, CHM_I32, 1, (int64_t[]){4});
    cr_assert_eq(chm_fill(vk, &i32.t, 0.5), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(vk->err.msg, "int32") != NULL, "%s", vk->err.msg);
    tt_free(&i32);
    chm_backend_close(cpu);
    vk_close(vk);
}

/* Copies between views at odd element offsets, overlapping or not, for 2- and 4-byte dtypes. */
Test(vulkan, copy_views_match_cpu) {
    chm_backend *cpu = tt_open_cpu(), *vk = vk_open();
    const chm_dtype dts[] = {CHM_F32, CHM_BF16, CHM_F64};
    /* {src offset, dst offset, count} in elements, inside a buffer of 5000 */
    static const int64_t cases[][3] = {{0, 2000, 1000}, {1, 3003, 999}, {0, 8, 4000}, {7, 3, 999},
                                       {4, 4, 10}};
    tt_rng rng = tt_rng_make(131);
    for (int d = 0; d < 3; d++) {
        if (chm_dtype_size(dts[d]) == 2 && !(vk->caps & CHM_CAP_BF16)) continue;
        size_t es = chm_dtype_size(dts[d]);
        for (int k = 0; k < 5; k++) {
            tt_tensor a = tt_alloc(cpu, dts[d], 1, (int64_t[]){5000});
            tt_tensor b = tt_alloc(vk, dts[d], 1, (int64_t[]){5000});
            unsigned char *bytes = malloc(5000 * es);
            for (size_t i = 0; i < 5000 * es; i++) bytes[i] = (unsigned char)tt_next(&rng);
            cr_assert_eq(chm_upload(cpu, &a.t, bytes), CHM_OK);
            cr_assert_eq(chm_upload(vk, &b.t, bytes), CHM_OK);
            chm_tensor sa = chm_tensor_1d(a.buf, (size_t)cases[k][0] * es, dts[d], cases[k][2]);
            chm_tensor da = chm_tensor_1d(a.buf, (size_t)cases[k][1] * es, dts[d], cases[k][2]);
            chm_tensor sb = sa, db = da;
            sb.buf = db.buf = b.buf;
            cr_assert_eq(chm_copy(cpu, &da, &sa), CHM_OK);
            cr_assert_eq(chm_copy(vk, &db, &sb), CHM_OK, "%s", vk->err.msg);
            assert_same_bytes("copy", cpu, &a.t, vk, &b.t);
            free(bytes);
            tt_free(&a), tt_free(&b);
        }
    }
    chm_backend_close(cpu);
    vk_close(vk);
}

/* f32 values around every rounding case of bf16 and f16: subnormals, ties, overflow, inf. */
static void cast_values(float *v, int64_t n, tt_rng *rng) {
    static const float special[] = {0.0f, -0.0f, 1.0f, 65504.0f, 65520.0f, 65519.99f, 1e-8f,
                                    5.96e-8f, 2.98e-8f, 6.1e-5f, 3.0e38f, INFINITY, -INFINITY,
                                    1.00390625f, 1.001953125f, 1.0009765625f};
    for (int64_t i = 0; i < n; i++) {
        if (i < 16) {
            v[i] = special[i];
            continue;
        }
        double mag = pow(2.0, tt_uniform(rng, -30, 20));
        v[i] = (float)(tt_uniform(rng, 0, 1) < 0.5 ? -mag : mag);
    }
}

Test(vulkan, cast_matches_cpu_bit_for_bit) {
    chm_backend *cpu = tt_open_cpu(), *vk = vk_open();
    if (!(vk->caps & CHM_CAP_BF16)) {
        chm_backend_close(cpu);
        vk_close(vk);
        cr_skip_test("this device has no 16-bit storage");
    }
    const chm_dtype dts[] = {CHM_F32, CHM_BF16, CHM_F16};
    int64_t n = 4099;
    tt_rng rng = tt_rng_make(141);
    float *v = malloc((size_t)n * sizeof *v);
    cast_values(v, n, &rng);
    for (int s = 0; s < 3; s++)
        for (int d = 0; d < 3; d++) {
            if (s == d) continue;
            tt_tensor f = tt_alloc(cpu, CHM_F32, 1, &n), fv = tt_alloc(vk, CHM_F32, 1, &n);
            tt_tensor a = tt_alloc(cpu, dts[s], 1, &n), av = tt_alloc(vk, dts[s], 1, &n);
            tt_tensor b = tt_alloc(cpu, dts[d], 1, &n), bv = tt_alloc(vk, dts[d], 1, &n);
            cr_assert_eq(chm_upload(cpu, &f.t, v), CHM_OK);
            cr_assert_eq(chm_upload(vk, &fv.t, v), CHM_OK);
            /* The source: the values as stored in dtype s (made by the cpu, uploaded as bytes). */
            cr_assert_eq(chm_cast(cpu, &a.t, &f.t), CHM_OK);
            void *raw = malloc(chm_tensor_nbytes(&a.t));
            cr_assert_eq(chm_download(cpu, &a.t, raw), CHM_OK);
            cr_assert_eq(chm_upload(vk, &av.t, raw), CHM_OK);
            free(raw);
            cr_assert_eq(chm_cast(cpu, &b.t, &a.t), CHM_OK);
            cr_assert_eq(chm_cast(vk, &bv.t, &av.t), CHM_OK, "%s", vk->err.msg);
            char what[64];
            snprintf(what, sizeof what, "cast %s -> %s", chm_dtype_name(dts[s]),
                     chm_dtype_name(dts[d]));
            assert_same_bytes(what, cpu, &b.t, vk, &bv.t);
            tt_free(&f), tt_free(&fv), tt_free(&a), tt_free(&av), tt_free(&b), tt_free(&bv);
        }
    free(v);
    chm_backend_close(cpu);
    vk_close(vk);
}

/* ---- what the vulkan backend refuses ---- */

Test(vulkan, refuses_f64_compute_and_missing_ops) {
    use_test_cache();
    chm_backend_options o = {.device_index = -1, .quiet = true};
    chm_err err = {0};
    chm_backend *vk = NULL;
    chm_status rc = chm_backend_open("vulkan", &o, &vk, &err); /* through the registry */
    if (rc == CHM_ERR_UNSUPPORTED) cr_skip_test("no Vulkan device here: %s", err.msg);
    cr_assert_eq(rc, CHM_OK, "%s", err.msg);
    cr_assert_str_eq(vk->name, "vulkan");
    tt_tensor x = tt_alloc(vk, CHM_F64, 1, (int64_t[]){8});
    cr_assert_eq(chm_add(vk, &x.t, &x.t, &x.t), CHM_ERR_DTYPE);
    cr_assert(strstr(vk->err.msg, "add") && strstr(vk->err.msg, "f32"), "%s", vk->err.msg);
    /* A missing entry (as during development): the table with matmul taken out. */
    chm_backend_ops ops = *vk->ops;
    const chm_backend_ops *saved = vk->ops;
    ops.matmul = NULL;
    vk->ops = &ops;
    tt_tensor a = tt_alloc(vk, CHM_F32, 2, (int64_t[]){4, 4});
    chm_status rc_missing = chm_matmul(vk, &a.t, &a.t, &a.t, NULL, false, false, 1, 0);
    vk->ops = saved;
    cr_assert_eq(rc_missing, CHM_ERR_UNSUPPORTED);
    cr_assert(strstr(vk->err.msg, "vulkan") != NULL, "%s", vk->err.msg);
    tt_free(&x), tt_free(&a);
    vk_close(vk);
}
