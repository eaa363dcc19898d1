/*
 * test_vulkan_seq.c: the vulkan backend's sequence ops against the cpu
 * backend: attention (forward, backward, decode), the Mamba-1 selective scan
 * (forward, backward, step) and the causal conv1d (forward, backward).
 *
 * Harness: vk_harness.h (same random inputs on both backends, vulkan outputs
 * NaN-poisoned, accumulated gradients starting from the same random values,
 * f32 tolerances, a silent validation layer). Shapes cover T = 1, odd T, head
 * dims that are not powers of two (and one too wide for shared memory, so D
 * goes through in chunks), GQA with H = 6 over Hk = 1, channel counts that are
 * not a multiple of the workgroup, scans long enough to cross the backward's
 * recomputation chunks, and convolutions with enough rows that dw is summed
 * in chunks. Tolerances are relative ~1e-4 where a result is a long f32
 * reduction (over keys, time or channels) compared with the cpu's double sums.
 */
#include "vk_harness.h"

/* ---- attention ---- */

/* {B, T, H, Hk, D}: T = 1; odd T with GQA 6/1 and D = 12; several tiles; D in chunks (too
 * wide for lavapipe's 32 KiB or an H100's 48 KiB of shared memory). */
static const int64_t ATTN[][5] = {{1, 1, 1, 1, 12}, {2, 7, 6, 1, 12}, {1, 37, 4, 2, 64},
                                  {1, 9, 2, 1, 260}};
#define NATTN 4

static double attn_scale(int64_t D) { return 1.0 / sqrt((double)D); }

static chm_status op_attn_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    return chm_attention_fwd(be, t[3], t[4], t[0], t[1], t[2], *(const double *)ctx);
}

Test(vulkan, attention_fwd_matches_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < NATTN; s++) {
        int64_t B = ATTN[s][0], T = ATTN[s][1], H = ATTN[s][2], Hk = ATTN[s][3], D = ATTN[s][4];
        double scale = attn_scale(D);
        arg a[] = {A4(IN, B, T, H, D, -1, 1), A4(IN, B, T, Hk, D, -1, 1),
                   A4(IN, B, T, Hk, D, -1, 1), A4(OUT, B, T, H, D, 0, 0), A3(OUT, B, H, T, 0, 0)};
        check_op(&bp, "attention_fwd", 5, a, op_attn_fwd, &scale, 2e-5, 1e-4, 201 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* out and lse of q, k, v (host doubles) by the cpu forward, for a realistic backward. */
static void attn_cpu_forward(chm_backend *cpu, const int64_t *sh, const double *q,
                             const double *k, const double *v, double *out, double *lse) {
    int64_t B = sh[0], T = sh[1], H = sh[2], Hk = sh[3], D = sh[4];
    tt_tensor tq = tt_alloc(cpu, CHM_F32, 4, (int64_t[]){B, T, H, D});
    tt_tensor tk = tt_alloc(cpu, CHM_F32, 4, (int64_t[]){B, T, Hk, D});
    tt_tensor tv = tt_alloc(cpu, CHM_F32, 4, (int64_t[]){B, T, Hk, D});
    tt_tensor to = tt_alloc(cpu, CHM_F32, 4, (int64_t[]){B, T, H, D});
    tt_tensor tl = tt_alloc(cpu, CHM_F32, 3, (int64_t[]){B, H, T});
    tt_upload(cpu, &tq, q);
    tt_upload(cpu, &tk, k);
    tt_upload(cpu, &tv, v);
    cr_assert_eq(chm_attention_fwd(cpu, &to.t, &tl.t, &tq.t, &tk.t, &tv.t, attn_scale(D)), CHM_OK,
                 "%s", cpu->err.msg);
    tt_download(cpu, &to, out);
    tt_download(cpu, &tl, lse);
    tt_free(&tq), tt_free(&tk), tt_free(&tv), tt_free(&to), tt_free(&tl);
}

static chm_status op_attn_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    return chm_attention_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8],
                             *(const double *)ctx);
}

Test(vulkan, attention_bwd_matches_cpu) {
    pair bp = pair_open();
    tt_rng rng = tt_rng_make(211);
    for (int s = 0; s < NATTN; s++) {
        int64_t B = ATTN[s][0], T = ATTN[s][1], H = ATTN[s][2], Hk = ATTN[s][3], D = ATTN[s][4];
        int64_t nq = B * T * H * D, nk = B * T * Hk * D;
        double *q = tt_dalloc(nq), *k = tt_dalloc(nk), *v = tt_dalloc(nk);
        double *out = tt_dalloc(nq), *lse = tt_dalloc(B * H * T);
        tt_fill_uniform(&rng, q, nq, -1, 1);
        tt_fill_uniform(&rng, k, nk, -1, 1);
        tt_fill_uniform(&rng, v, nk, -1, 1);
        attn_cpu_forward(bp.cpu, ATTN[s], q, k, v, out, lse);
        double scale = attn_scale(D);
        arg a[] = {A4(ACC, B, T, H, D, -1, 1),  A4(ACC, B, T, Hk, D, -1, 1),
                   A4(ACC, B, T, Hk, D, -1, 1), A4(IN, B, T, H, D, -1, 1),
                   A4(IN, B, T, H, D, 0, 0),    A4(IN, B, T, Hk, D, 0, 0),
                   A4(IN, B, T, Hk, D, 0, 0),   A4(IN, B, T, H, D, 0, 0),
                   A3(IN, B, H, T, 0, 0)};
        a[4].data = q, a[5].data = k, a[6].data = v, a[7].data = out, a[8].data = lse;
        check_op(&bp, "attention_bwd", 9, a, op_attn_bwd, &scale, 5e-5, 1e-4, 221 + (uint64_t)s);
        free(q), free(k), free(v), free(out), free(lse);
    }
    pair_close(&bp);
}

static chm_status op_attn_decode(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    return chm_attention_decode(be, t[3], t[0], t[1], t[2], *(const double *)ctx);
}

Test(vulkan, attention_decode_matches_cpu) {
    pair bp = pair_open();
    /* {B, Tq, Tk, H, Hk, D} */
    static const int64_t shapes[][6] = {{1, 1, 1, 1, 1, 12}, {2, 1, 13, 6, 1, 12},
                                        {1, 3, 40, 4, 2, 64}, {1, 5, 9, 2, 1, 260}};
    for (int s = 0; s < 4; s++) {
        const int64_t *d = shapes[s];
        double scale = attn_scale(d[5]);
        arg a[] = {A4(IN, d[0], d[1], d[3], d[5], -1, 1), A4(IN, d[0], d[2], d[4], d[5], -1, 1),
                   A4(IN, d[0], d[2], d[4], d[5], -1, 1), A4(OUT, d[0], d[1], d[3], d[5], 0, 0)};
        check_op(&bp, "attention_decode", 4, a, op_attn_decode, &scale, 2e-5, 1e-4,
                 231 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* The backward twice from the same start: bit-identical gradients (no atomics, fixed orders). */
Test(vulkan, attention_bwd_is_deterministic) {
    chm_backend *vk = vk_open();
    int64_t B = 1, T = 37, H = 6, Hk = 2, D = 12, nq = B * T * H * D;
    tt_rng rng = tt_rng_make(241);
    tt_tensor t[9];
    int64_t sq[] = {B, T, H, D}, sk[] = {B, T, Hk, D}, sl[] = {B, H, T};
    const int64_t *shape[] = {sq, sk, sk, sq, sq, sk, sk, sq, sl};
    for (int i = 0; i < 9; i++) {
        t[i] = tt_alloc(vk, CHM_F32, i == 8 ? 3 : 4, shape[i]);
        int64_t n = chm_tensor_numel(&t[i].t);
        double *h = tt_dalloc(n);
        tt_fill_uniform(&rng, h, n, -1, 1);
        tt_upload(vk, &t[i], h);
        free(h);
    }
    float *first[3], *again = malloc((size_t)nq * sizeof *again);
    for (int run = 0; run < 2; run++) {
        for (int g = 0; g < 3; g++) cr_assert_eq(chm_fill(vk, &t[g].t, 0.25), CHM_OK);
        cr_assert_eq(chm_attention_bwd(vk, &t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t, &t[5].t,
                                       &t[6].t, &t[7].t, &t[8].t, attn_scale(D)),
                     CHM_OK, "%s", vk->err.msg);
        for (int g = 0; g < 3; g++) {
            size_t nb = chm_tensor_nbytes(&t[g].t);
            float *dst = run == 0 ? (first[g] = malloc(nb)) : again;
            cr_assert_eq(chm_download(vk, &t[g].t, dst), CHM_OK, "%s", vk->err.msg);
            if (run == 1)
                cr_assert(memcmp(first[g], again, nb) == 0, "gradient %d differs between runs", g);
        }
    }
    for (int g = 0; g < 3; g++) free(first[g]);
    free(again);
    for (int i = 0; i < 9; i++) tt_free(&t[i]);
    vk_close(vk);
}

/* ---- selective scan ---- */

/* Which optional inputs a scan call gets, and (backward) which gradients it asks for. */
typedef struct scan_cfg {
    bool D, z, delta_bias, softplus;
    unsigned grads; /* bit i: gradient i of {du, ddelta, dA, dBm, dCm, dD, dz, ddelta_bias} */
} scan_cfg;

/* The scan arguments of t[0..7] = u, delta, A, Bm, Cm, D, z, delta_bias. */
static chm_scan_args scan_args_of(const chm_tensor *const *t, const scan_cfg *c) {
    return (chm_scan_args){t[0], t[1], t[2], t[3], t[4], c->D ? t[5] : NULL, c->z ? t[6] : NULL,
                           c->delta_bias ? t[7] : NULL, c->softplus, NULL, 0, NULL};
}

/*
 * {B, T, Di, N}: T = 1; odd sizes; Di over two workgroups (lavapipe: 64) with
 * the model's N = 16. T > 1 crosses the backward's chunks of ceil(sqrt(T))
 * steps. (Few distinct N and D: each makes pipelines that lavapipe compiles
 * slowly.)
 */
static const int64_t SCAN[][4] = {{1, 1, 1, 4}, {2, 7, 5, 4}, {1, 37, 70, 16}, {2, 20, 3, 4}};
#define NSCAN 4

/* Input arguments u, delta, A, Bm, Cm, D, z, delta_bias into a[0..7]. */
static void scan_inputs(arg *a, const int64_t *s, const scan_cfg *c) {
    int64_t B = s[0], T = s[1], Di = s[2], N = s[3];
    arg in[8] = {A3(IN, B, T, Di, -1, 1),  A3(IN, B, T, Di, -1, 1),  A2(IN, Di, N, -2, -0.1),
                 A3(IN, B, T, N, -1, 1),   A3(IN, B, T, N, -1, 1),   A1(IN, Di, -1, 1),
                 A3(IN, B, T, Di, -2, 2),  A1(IN, Di, -0.5, 0.5)};
    if (!c->softplus) in[1].lo = 0.01, in[1].hi = 0.5; /* raw steps must stay positive */
    memcpy(a, in, sizeof in);
}

/* Optional-input combinations: everything; nothing optional without softplus; D and z only. */
static const scan_cfg SCAN_CFGS[] = {{true, true, true, true, 0},
                                     {false, false, false, false, 0},
                                     {true, true, false, true, 0}};

static chm_status op_scan_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    chm_scan_args a = scan_args_of(t, ctx);
    return chm_selective_scan_fwd(be, t[8], &a);
}

Test(vulkan, selective_scan_fwd_matches_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < NSCAN; s++)
        for (int c = 0; c < 3; c++) {
            const int64_t *d = SCAN[s];
            arg a[9];
            scan_inputs(a, d, &SCAN_CFGS[c]);
            a[8] = (arg)A3(OUT, d[0], d[1], d[2], 0, 0);
            check_op(&bp, "selective_scan_fwd", 9, a, op_scan_fwd, &SCAN_CFGS[c], 1e-5, 1e-4,
                     301 + 10 * (uint64_t)s + (uint64_t)c);
        }
    pair_close(&bp);
}

static chm_status op_scan_step(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    chm_scan_args a = scan_args_of(t, ctx);
    return chm_selective_scan_step(be, t[8], t[9], &a);
}

Test(vulkan, selective_scan_step_matches_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < NSCAN; s++)
        for (int c = 0; c < 3; c++) {
            const int64_t *d = SCAN[s];
            arg a[10];
            scan_inputs(a, d, &SCAN_CFGS[c]);
            a[8] = (arg)A3(OUT, d[0], d[1], d[2], 0, 0);
            a[9] = (arg)A3(ACC, d[0], d[2], d[3], -1, 1); /* the state, read and written back */
            check_op(&bp, "selective_scan_step", 10, a, op_scan_step, &SCAN_CFGS[c], 1e-5, 1e-4,
                     331 + 10 * (uint64_t)s + (uint64_t)c);
        }
    pair_close(&bp);
}

/* t[0..7] the inputs, t[8] dy, then the requested gradients in scan_cfg.grads order. */
static chm_status op_scan_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const scan_cfg *c = ctx;
    chm_scan_args a = scan_args_of(t, c);
    const chm_tensor *gr[8] = {0};
    for (int i = 0, next = 9; i < 8; i++)
        if (c->grads & (1u << i)) gr[i] = t[next++];
    chm_scan_grads g = {(chm_tensor *)gr[0], (chm_tensor *)gr[1], (chm_tensor *)gr[2],
                        (chm_tensor *)gr[3], (chm_tensor *)gr[4], (chm_tensor *)gr[5],
                        (chm_tensor *)gr[6], (chm_tensor *)gr[7]};
    return chm_selective_scan_bwd(be, &g, t[8], &a);
}

/* Run the backward with the gradients of mask `grads` (shaped like their inputs a[0..7]). */
static void check_scan_bwd(pair *bp, const int64_t *d, scan_cfg cfg, unsigned grads,
                           uint64_t seed) {
    cfg.grads = grads;
    arg a[12];
    scan_inputs(a, d, &cfg);
    a[8] = (arg)A3(IN, d[0], d[1], d[2], -1, 1); /* dy */
    int n = 9;
    for (int i = 0; i < 8; i++)
        if (grads & (1u << i)) {
            a[n] = a[i];
            a[n].role = ACC;
            a[n].lo = -1, a[n].hi = 1;
            n++;
        }
    /* sums over T*channels (dA, dBm, dCm) in f32 against the cpu's doubles */
    check_op(bp, "selective_scan_bwd", n, a, op_scan_bwd, &cfg, 1e-4, 1e-4, seed);
}

Test(vulkan, selective_scan_bwd_matches_cpu) {
    pair bp = pair_open();
    enum { DU = 1, DDELTA = 2, DA = 4, DBM = 8, DCM = 16, DD = 32, DZ = 64, DDB = 128 };
    /* The harness takes 12 arguments: 9 inputs and three gradients per call. */
    static const unsigned sets[] = {DU | DBM | DCM, DDELTA | DA | DD, DZ | DDB};
    for (int s = 0; s < NSCAN; s++)
        for (int k = 0; k < 3; k++) {
            scan_cfg cfg = SCAN_CFGS[0];
            check_scan_bwd(&bp, SCAN[s], cfg, sets[k], 351 + 10 * (uint64_t)s + (uint64_t)k);
        }
    /* No optional inputs, no softplus; then dBm alone and dCm alone. */
    check_scan_bwd(&bp, SCAN[2], SCAN_CFGS[1], DU | DDELTA | DA, 391);
    check_scan_bwd(&bp, SCAN[3], SCAN_CFGS[1], DBM, 392);
    check_scan_bwd(&bp, SCAN[3], SCAN_CFGS[2], DCM | DD | DZ, 393);
    pair_close(&bp);
}

/* The backward twice from the same start: bit-identical gradients (fixed-order channel sums). */
Test(vulkan, selective_scan_bwd_is_deterministic) {
    chm_backend *vk = vk_open();
    int64_t B = 2, T = 37, Di = 70, N = 16;
    int64_t s3[] = {B, T, Di}, sA[] = {Di, N}, sN[] = {B, T, N}, sD[] = {Di};
    /* u, delta, A, Bm, Cm, D, z, delta_bias, dy, then dA, dBm, dCm, dD */
    const int64_t *shape[] = {s3, s3, sA, sN, sN, sD, s3, sD, s3, sA, sN, sN, sD};
    const int nd[] = {3, 3, 2, 3, 3, 1, 3, 1, 3, 2, 3, 3, 1};
    tt_rng rng = tt_rng_make(381);
    tt_tensor t[13];
    for (int i = 0; i < 13; i++) {
        t[i] = tt_alloc(vk, CHM_F32, nd[i], shape[i]);
        int64_t n = chm_tensor_numel(&t[i].t);
        double *h = tt_dalloc(n);
        tt_fill_uniform(&rng, h, n, i == 2 ? -2 : -1, i == 2 ? -0.1 : 1);
        tt_upload(vk, &t[i], h);
        free(h);
    }
    chm_scan_args a = {&t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t, &t[5].t, &t[6].t, &t[7].t,
                       true, NULL, 0, NULL};
    chm_scan_grads g = {.dA = &t[9].t, .dBm = &t[10].t, .dCm = &t[11].t, .dD = &t[12].t};
    void *first[4];
    for (int run = 0; run < 2; run++) {
        for (int k = 0; k < 4; k++) cr_assert_eq(chm_fill(vk, &t[9 + k].t, 0.5), CHM_OK);
        cr_assert_eq(chm_selective_scan_bwd(vk, &g, &t[8].t, &a), CHM_OK, "%s", vk->err.msg);
        for (int k = 0; k < 4; k++) {
            size_t nb = chm_tensor_nbytes(&t[9 + k].t);
            void *got = malloc(nb);
            cr_assert_eq(chm_download(vk, &t[9 + k].t, got), CHM_OK, "%s", vk->err.msg);
            if (run == 0) {
                first[k] = got;
                continue;
            }
            cr_assert(memcmp(first[k], got, nb) == 0, "gradient %d differs between runs", k);
            free(got);
            free(first[k]);
        }
    }
    for (int i = 0; i < 13; i++) tt_free(&t[i]);
    vk_close(vk);
}

/* ---- causal conv1d ---- */

/*
 * {B, T, C, W}: single element; odd sizes; C over several workgroups of the fused backward
 * (32 channels each) with a partial last one; enough rows for several slabs of chunks (at
 * this size 16 steps an invocation, 128 rows a slab), the last slab and chunk partial;
 * W = 2 with a partial step group (T = 150); more taps than steps (T = 3, W = 6).
 */
static const int64_t CONV[][4] = {{1, 1, 1, 1},     {2, 7, 5, 4},    {3, 37, 70, 4},
                                  {2, 300, 130, 3}, {2, 150, 33, 2}, {2, 3, 9, 6}};
#define NCONV 6

/* Bias and SiLU: both, neither, bias only, SiLU only. */
static const bool CONV_CFGS[][2] = {{true, true}, {false, false}, {true, false}, {false, true}};

static chm_status op_conv_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const bool *c = ctx;
    return chm_causal_conv1d_fwd(be, t[3], t[0], t[1], c[0] ? t[2] : NULL, c[1]);
}

static chm_status op_conv_bwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const bool *c = ctx;
    return chm_causal_conv1d_bwd(be, t[4], t[5], c[0] ? t[6] : NULL, t[0], t[1], t[2],
                                 c[0] ? t[3] : NULL, c[1]);
}

static chm_status op_conv_bwd_set_dx(chm_backend *be, const chm_tensor *const *t,
                                     const void *ctx) {
    const bool *c = ctx;
    return chm_causal_conv1d_bwd_set_dx(be, t[4], t[5], c[0] ? t[6] : NULL, t[0], t[1], t[2],
                                        c[0] ? t[3] : NULL, c[1]);
}

Test(vulkan, causal_conv1d_fwd_bwd_match_cpu) {
    pair bp = pair_open();
    for (int s = 0; s < NCONV; s++)
        for (int c = 0; c < 4; c++) {
            int64_t B = CONV[s][0], T = CONV[s][1], C = CONV[s][2], W = CONV[s][3];
            uint64_t seed = 401 + 10 * (uint64_t)s + (uint64_t)c;
            arg fwd[] = {A3(IN, B, T, C, -2, 2), A2(IN, C, W, -1, 1), A1(IN, C, -1, 1),
                         A3(OUT, B, T, C, 0, 0)};
            check_op(&bp, "causal_conv1d_fwd", 4, fwd, op_conv_fwd, CONV_CFGS[c], 1e-5, 1e-5,
                     seed);
            arg bwd[] = {A3(IN, B, T, C, -1, 1),  A3(IN, B, T, C, -2, 2), A2(IN, C, W, -1, 1),
                         A1(IN, C, -1, 1),        A3(ACC, B, T, C, -1, 1), A2(ACC, C, W, -1, 1),
                         A1(ACC, C, -1, 1)};
            /* dw and dbias sum B*T terms in f32 */
            check_op(&bp, "causal_conv1d_bwd", 7, bwd, op_conv_bwd, CONV_CFGS[c], 5e-5, 1e-5,
                     seed + 1000);
        }
    pair_close(&bp);
}

/* chm_causal_conv1d_bwd_set_dx: dx NaN-poisoned before (written), dw and dbias accumulated. */
Test(vulkan, causal_conv1d_bwd_set_dx_matches_cpu) {
    pair bp = pair_open();
    for (int s = 1; s < NCONV; s += 2) {
        int64_t B = CONV[s][0], T = CONV[s][1], C = CONV[s][2], W = CONV[s][3];
        arg bwd[] = {A3(IN, B, T, C, -1, 1),  A3(IN, B, T, C, -2, 2), A2(IN, C, W, -1, 1),
                     A1(IN, C, -1, 1),        A3(OUT, B, T, C, 0, 0), A2(ACC, C, W, -1, 1),
                     A1(ACC, C, -1, 1)};
        check_op(&bp, "causal_conv1d_bwd_set_dx", 7, bwd, op_conv_bwd_set_dx, CONV_CFGS[s % 4],
                 5e-5, 1e-5, 1700 + (uint64_t)s);
    }
    pair_close(&bp);
}

/* Rows x channels large enough that dw's sums take more chunks than the shared plan gives. */
Test(vulkan, causal_conv1d_bwd_many_chunks) {
    pair bp = pair_open();
    int64_t B = 2, T = 1024, C = 520, W = 4;
    arg bwd[] = {A3(IN, B, T, C, -1, 1), A3(IN, B, T, C, -2, 2), A2(IN, C, W, -1, 1),
                 A1(IN, C, -1, 1),       A3(ACC, B, T, C, -1, 1), A2(ACC, C, W, -1, 1),
                 A1(ACC, C, -1, 1)};
    check_op(&bp, "causal_conv1d_bwd", 7, bwd, op_conv_bwd, CONV_CFGS[0], 5e-5, 1e-5, 1499);
    pair_close(&bp);
}

/* The same with the fused backward off (CHIMERA_VULKAN_DISABLE=conv1d_fused: three passes). */
Test(vulkan, causal_conv1d_bwd_three_passes) {
    setenv("CHIMERA_VULKAN_DISABLE", "conv1d_fused", 1);
    pair bp = pair_open();
    int64_t B = 2, T = 300, C = 130, W = 3;
    arg bwd[] = {A3(IN, B, T, C, -1, 1), A3(IN, B, T, C, -2, 2), A2(IN, C, W, -1, 1),
                 A1(IN, C, -1, 1),       A3(ACC, B, T, C, -1, 1), A2(ACC, C, W, -1, 1),
                 A1(ACC, C, -1, 1)};
    for (int c = 0; c < 2; c++)
        check_op(&bp, "causal_conv1d_bwd", 7, bwd, op_conv_bwd, CONV_CFGS[c], 5e-5, 1e-5,
                 1600 + (uint64_t)c);
    pair_close(&bp);
}

/* ---- what the backend refuses ---- */

/* f64 tensors: every op of this file answers CHM_ERR_DTYPE naming itself. */
Test(vulkan, seq_ops_refuse_f64) {
    chm_backend *vk = vk_open();
    tt_tensor q = tt_alloc(vk, CHM_F64, 4, (int64_t[]){1, 2, 1, 4});
    tt_tensor o = tt_alloc(vk, CHM_F64, 4, (int64_t[]){1, 2, 1, 4});
    tt_tensor l = tt_alloc(vk, CHM_F64, 3, (int64_t[]){1, 1, 2});
    cr_assert_eq(chm_attention_fwd(vk, &o.t, &l.t, &q.t, &q.t, &q.t, 0.5), CHM_ERR_DTYPE);
    cr_assert(strstr(vk->err.msg, "attention_fwd") && strstr(vk->err.msg, "f32"), "%s",
              vk->err.msg);
    cr_assert_eq(chm_attention_decode(vk, &o.t, &q.t, &q.t, &q.t, 0.5), CHM_ERR_DTYPE);
    cr_assert(strstr(vk->err.msg, "attention_decode") != NULL, "%s", vk->err.msg);
    tt_tensor x = tt_alloc(vk, CHM_F64, 3, (int64_t[]){1, 3, 2});
    tt_tensor y = tt_alloc(vk, CHM_F64, 3, (int64_t[]){1, 3, 2});
    tt_tensor w = tt_alloc(vk, CHM_F64, 2, (int64_t[]){2, 2});
    cr_assert_eq(chm_causal_conv1d_fwd(vk, &y.t, &x.t, &w.t, NULL, true), CHM_ERR_DTYPE);
    cr_assert(strstr(vk->err.msg, "causal_conv1d_fwd") != NULL, "%s", vk->err.msg);
    tt_tensor bm = tt_alloc(vk, CHM_F64, 3, (int64_t[]){1, 3, 2});
    chm_scan_args a = {&x.t, &x.t, &w.t, &bm.t, &bm.t, NULL, NULL, NULL, true, NULL, 0, NULL};
    cr_assert_eq(chm_selective_scan_fwd(vk, &y.t, &a), CHM_ERR_DTYPE);
    cr_assert(strstr(vk->err.msg, "selective_scan_fwd") != NULL, "%s", vk->err.msg);
    tt_free(&q), tt_free(&o), tt_free(&l), tt_free(&x), tt_free(&y), tt_free(&w), tt_free(&bm);
    vk_close(vk);
}
