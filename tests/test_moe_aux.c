/*
 * test_moe_aux.c: the fused MoE auxiliary losses on the cpu backend: the
 * Switch balance loss and the z-loss against a naive f64 computation (f32
 * and f64, odd R, E, K), balance = 1 for perfectly even routing, the
 * gradient against central differences of balance_scale*balance +
 * z_scale*z in f64 (f held fixed, accumulating onto random values), and the
 * wrapper's and the backend's rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
static const int64_t SHAPES[][3] = {{1, 1, 1}, {7, 3, 2}, {13, 8, 2}, {33, 5, 3}}; /* R, E, K */

static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t, double lo, double hi) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, lo, hi);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

/* K distinct random experts per row. */
static void rand_idx(tt_rng *r, int32_t *idx, int64_t R, int64_t E, int64_t K) {
    for (int64_t i = 0; i < R; i++)
        for (int64_t k = 0; k < K; k++) {
            int32_t e;
            bool dup;
            do {
                e = (int32_t)(tt_next(r) % (uint64_t)E);
                dup = false;
                for (int64_t j = 0; j < k; j++) dup |= idx[i * K + j] == e;
            } while (dup);
            idx[i * K + k] = e;
        }
}

/* balance and z of logits z [R,E] with the fractions of idx. */
static void naive(const double *z, const int32_t *idx, int64_t R, int64_t E, int64_t K,
                  double *balance, double *zl) {
    double *P = tt_dalloc(E), *f = tt_dalloc(E);
    *zl = 0;
    for (int64_t r = 0; r < R; r++) {
        double mx = -INFINITY, s = 0;
        for (int64_t e = 0; e < E; e++) mx = fmax(mx, z[r * E + e]);
        for (int64_t e = 0; e < E; e++) s += exp(z[r * E + e] - mx);
        double lse = mx + log(s);
        *zl += lse * lse / (double)R;
        for (int64_t e = 0; e < E; e++) P[e] += exp(z[r * E + e] - lse) / (double)R;
    }
    for (int64_t i = 0; i < R * K; i++) f[idx[i]] += 1.0 / (double)(R * K);
    *balance = 0;
    for (int64_t e = 0; e < E; e++) *balance += (double)E * f[e] * P[e];
    free(P), free(f);
}

Test(moe_aux, losses_match_naive) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 4; s++) {
            int64_t R = SHAPES[s][0], E = SHAPES[s][1], K = SHAPES[s][2];
            chm_dtype dt = DTYPES[d];
            tt_tensor z = tt_alloc(be, dt, 2, (int64_t[]){R, E}),
                      ix = tt_alloc(be, CHM_I32, 2, (int64_t[]){R, K});
            tt_tensor l = tt_alloc(be, dt, 1, (int64_t[]){2});
            double *hz = rand_upload(be, &rng, &z, -3, 3);
            int32_t *idx = calloc((size_t)(R * K), sizeof *idx);
            rand_idx(&rng, idx, R, E, K);
            tt_upload_i32(be, &ix, idx);
            double want[2], got[2];
            naive(hz, idx, R, E, K, &want[0], &want[1]);
            tt_poison(be, &l);
            cr_assert_eq(chm_moe_aux(be, &l.t, NULL, &z.t, &ix.t, 1, 1), CHM_OK, "%s", be->err.msg);
            tt_download(be, &l, got);
            tt_assert_close("moe_aux losses", got, want, 2, TT_ATOL(dt), TT_RTOL(dt));
            free(hz), free(idx);
            tt_free(&z), tt_free(&ix), tt_free(&l);
        }
    chm_backend_close(be);
}

Test(moe_aux, even_routing_balances_to_one) {
    chm_backend *be = tt_open_cpu();
    int64_t R = 8, E = 4, K = 2;
    double z[32] = {0};
    int32_t idx[16];
    for (int i = 0; i < 16; i++) idx[i] = i % 4;
    tt_tensor tz = tt_alloc(be, CHM_F64, 2, (int64_t[]){R, E}),
              ix = tt_alloc(be, CHM_I32, 2, (int64_t[]){R, K});
    tt_tensor l = tt_alloc(be, CHM_F64, 1, (int64_t[]){2});
    tt_upload(be, &tz, z);
    tt_upload_i32(be, &ix, idx);
    cr_assert_eq(chm_moe_aux(be, &l.t, NULL, &tz.t, &ix.t, 1, 1), CHM_OK);
    double got[2], want[2] = {1.0, log(4.0) * log(4.0)};
    tt_download(be, &l, got);
    tt_assert_close("even routing", got, want, 2, 1e-14, 1e-14);
    tt_free(&tz), tt_free(&ix), tt_free(&l);
    chm_backend_close(be);
}

Test(moe_aux, gradient_matches_finite_differences_and_accumulates) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    for (int s = 0; s < 4; s++) {
        int64_t R = SHAPES[s][0], E = SHAPES[s][1], K = SHAPES[s][2], n = R * E;
        tt_tensor z = tt_alloc(be, CHM_F64, 2, (int64_t[]){R, E}),
                  ix = tt_alloc(be, CHM_I32, 2, (int64_t[]){R, K});
        tt_tensor l = tt_alloc(be, CHM_F64, 1, (int64_t[]){2}),
                  g = tt_alloc(be, CHM_F64, 2, (int64_t[]){R, E});
        double *hz = rand_upload(be, &rng, &z, -2, 2), *g0 = rand_upload(be, &rng, &g, -1, 1);
        int32_t *idx = calloc((size_t)(R * K), sizeof *idx);
        rand_idx(&rng, idx, R, E, K);
        tt_upload_i32(be, &ix, idx);
        double bs = 0.7, zs = 0.3;
        cr_assert_eq(chm_moe_aux(be, &l.t, &g.t, &z.t, &ix.t, bs, zs), CHM_OK, "%s", be->err.msg);
        double *want = tt_dalloc(n), *got = tt_dalloc(n);
        for (int64_t i = 0; i < n; i++) {
            double v = hz[i], h = 1e-6, bp, zp, bm, zm;
            hz[i] = v + h;
            naive(hz, idx, R, E, K, &bp, &zp);
            hz[i] = v - h;
            naive(hz, idx, R, E, K, &bm, &zm);
            hz[i] = v;
            want[i] = g0[i] + (bs * (bp - bm) + zs * (zp - zm)) / (2 * h);
        }
        tt_download(be, &g, got);
        cr_assert(tt_rel_l2(got, want, n) < 1e-6, "dlogits: %g", tt_rel_l2(got, want, n));
        free(hz), free(g0), free(idx), free(want), free(got);
        tt_free(&z), tt_free(&ix), tt_free(&l), tt_free(&g);
    }
    chm_backend_close(be);
}

Test(moe_aux, rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor z = tt_alloc(be, CHM_F32, 2, (int64_t[]){4, 3}),
              ix = tt_alloc(be, CHM_I32, 2, (int64_t[]){4, 2});
    tt_tensor ix4 = tt_alloc(be, CHM_I32, 2, (int64_t[]){4, 4}),
              l = tt_alloc(be, CHM_F32, 1, (int64_t[]){2});
    tt_tensor l3 = tt_alloc(be, CHM_F32, 1, (int64_t[]){3}),
              l64 = tt_alloc(be, CHM_F64, 1, (int64_t[]){2});
    cr_assert_eq(chm_moe_aux(be, &l3.t, NULL, &z.t, &ix.t, 1, 1), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "moe_aux: losses"), "%s", be->err.msg);
    cr_assert_eq(chm_moe_aux(be, &l64.t, NULL, &z.t, &ix.t, 1, 1), CHM_ERR_DTYPE);
    cr_assert_eq(chm_moe_aux(be, &l.t, NULL, &z.t, &ix4.t, 1, 1), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "moe_aux: top-k"), "%s", be->err.msg);
    cr_assert_eq(chm_moe_aux(be, &l.t, &z.t, &z.t, &ix.t, 1, 1), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "moe_aux: dlogits and logits overlap"), "%s", be->err.msg);
    int32_t bad[8] = {0, 1, 2, 0, 1, 3, 0, 1};
    tt_upload_i32(be, &ix, bad);
    cr_assert_eq(chm_moe_aux(be, &l.t, NULL, &z.t, &ix.t, 1, 1), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "moe_aux: idx element 5 = 3"), "%s", be->err.msg);
    tt_free(&z), tt_free(&ix), tt_free(&ix4), tt_free(&l), tt_free(&l3), tt_free(&l64);
    chm_backend_close(be);
}
