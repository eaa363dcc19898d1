/*
 * test_vk_scan.c: the vulkan selective scan against the cpu backend at the
 * shapes its tiling makes special (selective_scan.c, selective_scan_*.comp):
 * N < 4 (fewer lanes than four per channel, a workgroup that is not a power
 * of two), N = 5 (a lane with one state and lanes with none), many chunks
 * with a partial last one, odd channel counts that leave dead channels in the
 * last workgroup, and chimera-1b's 2048 channels. Forward, step and
 * backward (every gradient, in groups of three: the harness's argument
 * limit); the backward after a forward given h_saved, with gradients set
 * (grads_set) and accumulated. vk_harness.h skips without a device and checks that the
 * validation layer stayed silent.
 */
#include "vk_harness.h"

/* One call: {B, T, Di, N}, whether the optional inputs are given, and (backward) the
   gradients it asks for: bit i for gradient i in chm_scan_grads order. */
typedef struct vscan {
    int64_t B, T, Di, N;
    bool opt;
    unsigned grads;
} vscan;

/* u, delta, A, Bm, Cm, D, z, delta_bias into a[0..7] (the optional ones always allocated). */
static void vscan_inputs(arg *a, const vscan *s) {
    int64_t btd[3] = {s->B, s->T, s->Di}, btn[3] = {s->B, s->T, s->N};
    for (int i = 0; i < 8; i++) {
        a[i] = (arg){.role = IN, .ndim = 3, .lo = -1, .hi = 1};
        memcpy(a[i].shape, i == 3 || i == 4 ? btn : btd, sizeof btd);
    }
    a[2] = (arg)A2(IN, s->Di, s->N, -2, -0.1);
    a[5] = (arg)A1(IN, s->Di, -1, 1);
    a[7] = (arg)A1(IN, s->Di, -0.5, 0.5);
    if (!s->opt) a[1].lo = 0.01, a[1].hi = 0.5; /* raw steps without softplus stay positive */
}

static chm_scan_args vscan_args(const chm_tensor *const *t, const vscan *s) {
    return (chm_scan_args){t[0], t[1], t[2], t[3], t[4], s->opt ? t[5] : NULL,
                           s->opt ? t[6] : NULL, s->opt ? t[7] : NULL, s->opt, NULL, 0, NULL};
}

static chm_status vscan_fwd(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    chm_scan_args a = vscan_args(t, ctx);
    return chm_selective_scan_fwd(be, t[8], &a);
}

static chm_status vscan_step(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    chm_scan_args a = vscan_args(t, ctx);
    return chm_selective_scan_step(be, t[8], t[9], &a);
}

static chm_status vscan_back(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const vscan *c = ctx;
    chm_scan_args a = vscan_args(t, c);
    chm_tensor *gr[8] = {0};
    for (int i = 0, next = 9; i < 8; i++)
        if (c->grads & (1u << i)) gr[i] = (chm_tensor *)t[next++];
    chm_scan_grads g = {gr[0], gr[1], gr[2], gr[3], gr[4], gr[5], gr[6], gr[7]};
    return chm_selective_scan_bwd(be, &g, t[8], &a);
}

/* Forward and step of one shape. */
static void check_forward(pair *bp, vscan s, uint64_t seed) {
    arg a[10];
    vscan_inputs(a, &s);
    a[8] = (arg)A3(OUT, s.B, s.T, s.Di, 0, 0);
    check_op(bp, "selective_scan_fwd", 9, a, vscan_fwd, &s, 1e-5, 1e-4, seed);
    a[9] = (arg)A3(ACC, s.B, s.Di, s.N, -1, 1);
    check_op(bp, "selective_scan_step", 10, a, vscan_step, &s, 1e-5, 1e-4, seed + 1);
}

/* The backward of one shape: all eight gradients, three per call, accumulated into. */
static void check_backward(pair *bp, vscan s, uint64_t seed) {
    static const unsigned sets[] = {1 | 8 | 16, 2 | 4 | 32, 64 | 128};
    for (int k = 0; k < 3; k++) {
        vscan c = s;
        c.grads = sets[k];
        if (!s.opt) c.grads &= ~(32u | 64u | 128u); /* no D, z, delta_bias: no gradients */
        arg a[12];
        vscan_inputs(a, &s);
        a[8] = (arg)A3(IN, s.B, s.T, s.Di, -1, 1); /* dy */
        int n = 9;
        for (int i = 0; i < 8; i++)
            if (c.grads & (1u << i)) {
                a[n] = a[i];
                a[n].role = ACC;
                a[n].lo = -1, a[n].hi = 1;
                n++;
            }
        if (n > 9) check_op(bp, "selective_scan_bwd", n, a, vscan_back, &c, 1e-4, 1e-4, seed + k);
    }
}

/* The forward given h_saved (t[10]), then the backward given it, into the one gradient
   c->grads names (t[11]), set when it is du, dA, dCm or dz: t[8] dy, t[9] y. */
static chm_status vscan_saved(chm_backend *be, const chm_tensor *const *t, const void *ctx) {
    const vscan *c = ctx;
    chm_scan_args a = vscan_args(t, c);
    a.h_saved = t[10];
    chm_status rc = chm_selective_scan_fwd(be, t[9], &a);
    if (rc) return rc;
    a.grads_set = c->grads & 0x55u;
    chm_tensor *gr[8] = {0};
    for (int i = 0; i < 8; i++)
        if (c->grads & (1u << i)) gr[i] = (chm_tensor *)t[11];
    chm_scan_grads g = {gr[0], gr[1], gr[2], gr[3], gr[4], gr[5], gr[6], gr[7]};
    return chm_selective_scan_bwd(be, &g, t[8], &a);
}

/* Saved states and set gradients: each gradient alone (the harness's argument limit).
   h_saved is compared (role OUT) where both backends write it; vulkan leaves it without its
   register backward (backend.h allows both): role IN, not compared. */
static void check_saved_as(pair *bp, vscan s, uint64_t seed, int hrole) {
    for (int i = 0; i < (s.opt ? 8 : 5); i++) {
        vscan c = s;
        c.grads = 1u << i;
        arg a[12];
        vscan_inputs(a, &s);
        a[8] = (arg)A3(IN, s.B, s.T, s.Di, -1, 1);    /* dy */
        a[9] = (arg)A3(OUT, s.B, s.T, s.Di, 0, 0);    /* y */
        a[10] = (arg)A4(hrole, s.B, (s.T + CHM_SCAN_SAVE_STRIDE - 1) / CHM_SCAN_SAVE_STRIDE,
                        s.Di, s.N, -1, 1);            /* h_saved */
        a[11] = a[i];
        a[11].role = c.grads & 0x55u ? OUT : ACC;
        a[11].lo = -1, a[11].hi = 1;
        check_op(bp, "selective_scan_bwd", 12, a, vscan_saved, &c, 1e-4, 1e-4, seed + i);
    }
}

/* h_saved compared where vulkan writes it (its register backward: CHM_CAP_SCAN_SAVED, N <= 16). */
static void check_saved(pair *bp, vscan s, uint64_t seed) {
    bool writes = (bp->vk->caps & CHM_CAP_SCAN_SAVED) && s.N <= 16;
    check_saved_as(bp, s, seed, writes ? OUT : IN);
}

Test(vk_scan, backward_with_saved_states_and_set_gradients) {
    pair bp = pair_open();
    check_saved(&bp, (vscan){2, 37, 13, 5, true, 0}, 901);
    check_saved(&bp, (vscan){1, 20, 8, 16, false, 0}, 921);
    pair_close(&bp);
}

/* N < 4 and N = 5: fewer lanes per channel, lanes without states; odd T and Di. */
static const vscan SMALL_N[] = {{2, 19, 37, 1, true, 0}, {1, 23, 9, 3, true, 0},
                                {2, 17, 5, 5, false, 0}, {1, 9, 33, 5, true, 0}};

Test(vk_scan, forward_with_few_states) {
    pair bp = pair_open();
    for (int i = 0; i < 4; i++) check_forward(&bp, SMALL_N[i], 701 + 10 * (uint64_t)i);
    pair_close(&bp);
}

Test(vk_scan, backward_with_few_states) {
    pair bp = pair_open();
    for (int i = 0; i < 4; i++) check_backward(&bp, SMALL_N[i], 751 + 10 * (uint64_t)i);
    pair_close(&bp);
}

/* Many chunks (a partial last one) over chimera-1b's 2048 channels with its N = 16. */
Test(vk_scan, chimera_1b_channels_many_chunks) {
    pair bp = pair_open();
    vscan s = {1, 45, 2048, 16, true, 0};
    check_forward(&bp, s, 801);
    check_backward(&bp, s, 811);
    pair_close(&bp);
}

/* The register kernel's chunks of 16 steps (selective_scan_bwd_sg.comp, asked for by tile:
   the default is 8): several with a partial last one, an exact multiple, channels that leave a
   workgroup partly dead, N = 16 and N = 8, with and without the optional inputs; set gradients
   with z given, from the forward's saved states (the backend says it reads them). */
static const vscan CHUNKS16[] = {{2, 50, 70, 16, true, 0}, {1, 32, 40, 8, false, 0},
                                 {1, 17, 33, 16, true, 0}};

Test(vk_scan, backward_chunks_of_16) {
    setenv("CHIMERA_VULKAN_SCAN_TILE", "0x16", 1);
    pair bp = pair_open();
    for (int i = 0; i < 3; i++) check_backward(&bp, CHUNKS16[i], 1001 + 10 * (uint64_t)i);
    check_saved(&bp, CHUNKS16[0], 1051);
    unsetenv("CHIMERA_VULKAN_SCAN_TILE");
    pair_close(&bp);
}

/* The register kernel's other variants, asked for by tile: chunks of 8 steps (_l8: the
   chunk starts from the first walk, h_saved is not read) and 16-step chunks walked back in two
   halves (_half, from the saved states too), 8 channels a workgroup. */
Test(vk_scan, backward_chunks_of_8_and_halves) {
    pair bp = pair_open();
    setenv("CHIMERA_VULKAN_SCAN_TILE", "8x8", 1);
    check_backward(&bp, CHUNKS16[0], 1201);
    check_saved(&bp, CHUNKS16[2], 1211);
    setenv("CHIMERA_VULKAN_SCAN_TILE", "8x16h", 1);
    check_backward(&bp, CHUNKS16[0], 1221);
    check_backward(&bp, SMALL_N[3], 1231);
    check_saved(&bp, CHUNKS16[0], 1241);
    unsetenv("CHIMERA_VULKAN_SCAN_TILE");
    pair_close(&bp);
}

/* The older shader (CHIMERA_VULKAN_DISABLE=scan_shuffle: states in shared memory). */
Test(vk_scan, backward_without_shuffles) {
    setenv("CHIMERA_VULKAN_DISABLE", "scan_shuffle", 1);
    pair bp = pair_open();
    check_backward(&bp, CHUNKS16[0], 1101);
    check_backward(&bp, SMALL_N[2], 1111);
    check_saved_as(&bp, (vscan){1, 20, 8, 16, true, 0}, 1121, IN);
    pair_close(&bp);
}

/* x (f32 values) into dt's tensor t, or from it into x: through an f32 tensor and chm_cast. */
static void cast_io(chm_backend *vk, const tt_tensor *t, double *x, bool up) {
    tt_tensor f = tt_alloc(vk, CHM_F32, t->t.ndim, t->t.shape);
    if (up) tt_upload(vk, &f, x);
    cr_assert_eq(up ? chm_cast(vk, &t->t, &f.t) : chm_cast(vk, &f.t, &t->t), CHM_OK, "%s",
                 vk->err.msg);
    if (!up) tt_download(vk, &f, x);
    tt_free(&f);
}

/* The register backward twice on the same inputs, gradients set: bit-for-bit the same (no
   atomics; shuffle partners and sum orders fixed), with and without the saved states; and
   with them close to without (f32 and bf16: h_saved is f32 in both). */
static void check_repeatable(chm_dtype dt, double tol) {
    chm_backend *vk = vk_open();
    const int64_t B = 2, T = 70, Di = 100, N = 16, K = (T + 15) / 16;
    const int64_t btd[3] = {B, T, Di}, btn[3] = {B, T, N}, dn[2] = {Di, N}, d1[1] = {Di};
    const int64_t hs[4] = {B, K, Di, N};
    /* u, delta, A, Bm, Cm, D, z, delta_bias, dy, h_saved, y, then the eight gradients */
    const int64_t *shape[19] = {btd, btd, dn, btn, btn, d1, btd, d1, btd, hs, btd,
                                btd, btd, dn, btn, btn, d1, btd, d1};
    const int nd[19] = {3, 3, 2, 3, 3, 1, 3, 1, 3, 4, 3, 3, 3, 2, 3, 3, 1, 3, 1};
    tt_tensor t[19];
    tt_rng r = tt_rng_make(1201);
    for (int i = 0; i < 19; i++) {
        t[i] = tt_alloc(vk, i == 9 ? CHM_F32 : dt, nd[i], shape[i]);
        int64_t n = chm_tensor_numel(&t[i].t);
        double *x = tt_dalloc(n);
        tt_fill_uniform(&r, x, n, i == 2 ? -2 : -1, i == 2 ? -0.1 : 1);
        cast_io(vk, &t[i], x, true);
        free(x);
    }
    double *ref[8];
    for (int saved = 0; saved < 2; saved++) {
        chm_scan_args a = {&t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t, &t[5].t, &t[6].t,
                           &t[7].t, true, saved ? &t[9].t : NULL, 0xFFu, NULL};
        chm_scan_grads g = {&t[11].t, &t[12].t, &t[13].t, &t[14].t,
                            &t[15].t, &t[16].t, &t[17].t, &t[18].t};
        cr_assert_eq(chm_selective_scan_fwd(vk, &t[10].t, &a), CHM_OK, "%s", vk->err.msg);
        double *first[8];
        for (int run = 0; run < 2; run++) {
            cr_assert_eq(chm_selective_scan_bwd(vk, &g, &t[8].t, &a), CHM_OK, "%s", vk->err.msg);
            for (int i = 0; i < 8; i++) {
                int64_t n = chm_tensor_numel(&t[11 + i].t);
                double *x = tt_dalloc(n);
                cast_io(vk, &t[11 + i], x, false);
                if (run == 0) {
                    first[i] = x;
                    continue;
                }
                cr_assert(memcmp(x, first[i], (size_t)n * sizeof *x) == 0,
                          "gradient %d differs between two runs (saved states: %d)", i, saved);
                for (int64_t e = 0; saved && e < n; e++)
                    cr_assert(fabs(x[e] - ref[i][e]) <= tol * (1 + fabs(ref[i][e])),
                              "gradient %d [%lld]: %g with saved states, %g without", i,
                              (long long)e, x[e], ref[i][e]);
                free(x);
                if (saved) free(first[i]), free(ref[i]);
                else ref[i] = first[i];
            }
        }
    }
    for (int i = 0; i < 19; i++) tt_free(&t[i]);
    vk_close(vk);
}

Test(vk_scan, backward_is_deterministic) {
    check_repeatable(CHM_F32, 1e-5);
    check_repeatable(CHM_BF16, 2e-2);
}

/* ---- timing on a GPU (skipped unless CHIMERA_VK_SCAN_BENCH is set) ---- */

/* Median ms of 5 runs after a warm-up: the backward when g, else the forward into y. */
static double bench_ms(chm_backend *vk, const chm_scan_args *a, const chm_tensor *y,
                       const chm_scan_grads *g) {
    chm_event *e0, *e1;
    cr_assert_eq(chm_event_create(vk, &e0), CHM_OK);
    cr_assert_eq(chm_event_create(vk, &e1), CHM_OK);
    double ms[6];
    for (int r = 0; r < 6; r++) {
        cr_assert_eq(chm_event_record(vk, e0), CHM_OK);
        chm_status rc = g ? chm_selective_scan_bwd(vk, g, y, a) : chm_selective_scan_fwd(vk, y, a);
        cr_assert_eq(rc, CHM_OK, "%s", vk->err.msg);
        cr_assert_eq(chm_event_record(vk, e1), CHM_OK);
        cr_assert_eq(chm_event_elapsed_ms(vk, e0, e1, &ms[r]), CHM_OK, "%s", vk->err.msg);
    }
    chm_event_destroy(vk, e0);
    chm_event_destroy(vk, e1);
    /* ms[0] is the warm-up; insertion sort of the other five */
    for (int i = 2; i < 6; i++)
        for (int j = i; j > 1 && ms[j] < ms[j - 1]; j--) {
            double t = ms[j];
            ms[j] = ms[j - 1], ms[j - 1] = t;
        }
    return ms[3];
}

/*
 * chimera-1b's scan (B8 T2048 Di2048 N16, f32, every input and gradient) as
 * vk_bench times it: CHIMERA_VK_SCAN_BENCH=1 chimera_tests --filter
 * 'vk_scan/bench*' (CHIMERA_VK_SCAN_BENCH=B,T,Di: another size);
 * CHIMERA_VULKAN_SCAN_TILE=<wgc>x<lc> tries another tile.
 */
Test(vk_scan, bench_chimera_1b) {
    const char *size = getenv("CHIMERA_VK_SCAN_BENCH");
    if (!size) cr_skip_test("set CHIMERA_VK_SCAN_BENCH=1 to time");
    chm_backend *vk = vk_open();
    long long B = 8, T = 2048, Di = 2048;
    const int64_t N = 16;
    if (strchr(size, ',')) cr_assert_eq(sscanf(size, "%lld,%lld,%lld", &B, &T, &Di), 3);
    const int64_t btd[3] = {B, T, Di}, btn[3] = {B, T, N}, dn[2] = {Di, N}, d1[1] = {Di};
    /* u, delta, A, Bm, Cm, D, z, delta_bias, y / dy, then the gradients of the first 8 */
    const int64_t *shape[8] = {btd, btd, dn, btn, btn, d1, btd, d1};
    const int nd[8] = {3, 3, 2, 3, 3, 1, 3, 1};
    const double value[8] = {0.5, -1, -0.7, 0.3, -0.2, 1, 0.8, -0.5};
    tt_tensor t[17];
    for (int i = 0; i < 17; i++) {
        int s = i < 8 ? i : i == 8 ? 0 : i - 9;
        t[i] = tt_alloc(vk, CHM_F32, nd[s], shape[s]);
        cr_assert_eq(chm_fill(vk, &t[i].t, i < 8 ? value[i] : 0.1), CHM_OK, "%s", vk->err.msg);
    }
    chm_scan_args a = {&t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t, &t[5].t, &t[6].t, &t[7].t,
                       true, NULL, 0, NULL};
    chm_scan_grads g = {&t[9].t,  &t[10].t, &t[11].t, &t[12].t,
                        &t[13].t, &t[14].t, &t[15].t, &t[16].t};
    double f = bench_ms(vk, &a, &t[8].t, NULL), b = bench_ms(vk, &a, &t[8].t, &g);
    const char *tile = getenv("CHIMERA_VULKAN_SCAN_TILE");
    printf("vk_scan bench on %s (tile %s): scan f32 B%lld T%lld Di%lld N16: fwd %.3f ms, "
           "bwd %.3f ms\n", vk->device, tile ? tile : "default", B, T, Di, f, b);
    for (int i = 0; i < 17; i++) tt_free(&t[i]);
    vk_close(vk);
}
