/*
 * test_router.c: router_topk against a naive reference (probs, idx, gates
 * and the capacity plan, with drops and tied logits), router_topk_bwd
 * against finite differences for both score functions with and without
 * renormalisation (and its accumulation), select_topk against a naive
 * selection (ties, K = C), and the wrappers' checks.
 */
#include "testutil.h"

static const chm_dtype dts[] = {CHM_F32, CHM_F64};

/* All tensors of one router_topk call. */
typedef struct router_io {
    tt_tensor gates, idx, probs, slot_token, slot_ref, counts, logits;
    int64_t R, E, K, cap;
} router_io;

static router_io io_alloc(chm_backend *be, chm_dtype dt, int64_t R, int64_t E, int64_t K,
                          int64_t cap) {
    router_io io = {.R = R, .E = E, .K = K, .cap = cap};
    io.gates = tt_alloc(be, dt, 2, (int64_t[]){R, K});
    io.idx = tt_alloc(be, CHM_I32, 2, (int64_t[]){R, K});
    io.probs = tt_alloc(be, dt, 2, (int64_t[]){R, E});
    io.slot_token = tt_alloc(be, CHM_I32, 2, (int64_t[]){E, cap});
    io.slot_ref = tt_alloc(be, CHM_I32, 2, (int64_t[]){E, cap});
    io.counts = tt_alloc(be, CHM_I32, 1, (int64_t[]){E});
    io.logits = tt_alloc(be, dt, 2, (int64_t[]){R, E});
    return io;
}

static void io_free(router_io *io) {
    tt_free(&io->gates);
    tt_free(&io->idx);
    tt_free(&io->probs);
    tt_free(&io->slot_token);
    tt_free(&io->slot_ref);
    tt_free(&io->counts);
    tt_free(&io->logits);
}

static chm_status io_run(chm_backend *be, router_io *io, chm_router_score score, bool renorm) {
    return chm_router_topk(be, &io->gates.t, &io->idx.t, &io->probs.t, &io->slot_token.t,
                           &io->slot_ref.t, &io->counts.t, &io->logits.t, score, renorm);
}

/* The reference's answer for one call (host arrays). */
typedef struct router_ref {
    double *probs, *gates;
    int32_t *idx, *slot_token, *slot_ref, *counts;
} router_ref;

/* Softmax or sigmoid of one row, the obvious way. */
static void naive_probs(double *p, const double *z, int64_t E, chm_router_score score) {
    double mx = z[0], sum = 0;
    for (int64_t j = 0; j < E; j++) mx = fmax(mx, z[j]);
    for (int64_t j = 0; j < E; j++) sum += exp(z[j] - mx);
    for (int64_t j = 0; j < E; j++)
        p[j] = score == CHM_ROUTER_SOFTMAX ? exp(z[j] - mx) / sum : 1 / (1 + exp(-z[j]));
}

/* Top-K of one row: repeatedly the largest unused logit, first one wins a tie. */
static void naive_topk(int32_t *ix, const double *z, int64_t E, int64_t K) {
    bool used[64] = {false};
    for (int64_t k = 0; k < K; k++) {
        int64_t best = -1;
        for (int64_t j = 0; j < E; j++)
            if (!used[j] && (best < 0 || z[j] > z[best])) best = j;
        used[best] = true;
        ix[k] = (int32_t)best;
    }
}

/* The plan: slots filled in (r, k) order while the expert has room. */
static void naive_plan(router_ref *ref, int64_t R, int64_t E, int64_t K, int64_t cap) {
    for (int64_t i = 0; i < E * cap; i++) ref->slot_token[i] = ref->slot_ref[i] = -1;
    for (int64_t e = 0; e < E; e++) ref->counts[e] = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < K; k++) {
            int32_t e = ref->idx[r * K + k];
            if (ref->counts[e] == cap) continue;
            ref->slot_token[e * cap + ref->counts[e]] = (int32_t)r;
            ref->slot_ref[e * cap + ref->counts[e]] = (int32_t)(r * K + k);
            ref->counts[e]++;
        }
}

static void naive_router(router_ref *ref, const double *z, int64_t R, int64_t E, int64_t K,
                         int64_t cap, chm_router_score score, bool renorm) {
    for (int64_t r = 0; r < R; r++) {
        naive_probs(ref->probs + r * E, z + r * E, E, score);
        naive_topk(ref->idx + r * K, z + r * E, E, K);
        double sum = 0;
        for (int64_t k = 0; k < K; k++) sum += ref->probs[r * E + ref->idx[r * K + k]];
        for (int64_t k = 0; k < K; k++)
            ref->gates[r * K + k] = ref->probs[r * E + ref->idx[r * K + k]] / (renorm ? sum : 1);
    }
    naive_plan(ref, R, E, K, cap);
}

static void assert_i32(const char *what, const int32_t *got, const int32_t *want, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s[%lld] = %d, expected %d", what, (long long)i, got[i],
                     want[i]);
}

/* Random logits in [-2, 2), or (ties) small integers; returns the dropped (r, k) count. */
static int64_t router_case(chm_backend *be, chm_dtype dt, const int64_t *shape, bool ties,
                           chm_router_score score, bool renorm, tt_rng *rng) {
    int64_t R = shape[0], E = shape[1], K = shape[2], cap = shape[3];
    router_io io = io_alloc(be, dt, R, E, K, cap);
    double *z = tt_dalloc(R * E), *p = tt_dalloc(R * E), *g = tt_dalloc(R * K);
    int32_t *ibuf = calloc((size_t)(R * K + 2 * E * cap + E + 1), sizeof *ibuf);
    router_ref ref = {tt_dalloc(R * E), tt_dalloc(R * K), calloc((size_t)(R * K), 4),
                      calloc((size_t)(E * cap + 1), 4), calloc((size_t)(E * cap + 1), 4),
                      calloc((size_t)E, 4)};
    tt_fill_uniform(rng, z, R * E, -2, 2);
    for (int64_t i = 0; ties && i < R * E; i++) z[i] = floor(z[i]);
    tt_upload(be, &io.logits, z);
    tt_download(be, &io.logits, z);
    tt_poison(be, &io.probs);
    tt_poison(be, &io.gates);
    cr_assert_eq(io_run(be, &io, score, renorm), CHM_OK, "%s", be->err.msg);
    naive_router(&ref, z, R, E, K, cap, score, renorm);
    tt_download(be, &io.probs, p);
    tt_download(be, &io.gates, g);
    tt_assert_close("probs", p, ref.probs, R * E, TT_ATOL(dt), TT_RTOL(dt));
    tt_assert_close("gates", g, ref.gates, R * K, TT_ATOL(dt), TT_RTOL(dt));
    int32_t *it = ibuf, *st = it + R * K, *sr = st + E * cap, *ct = sr + E * cap;
    cr_assert_eq(chm_download(be, &io.idx.t, it), CHM_OK);
    cr_assert_eq(chm_download(be, &io.slot_token.t, st), CHM_OK);
    cr_assert_eq(chm_download(be, &io.slot_ref.t, sr), CHM_OK);
    cr_assert_eq(chm_download(be, &io.counts.t, ct), CHM_OK);
    assert_i32("idx", it, ref.idx, R * K);
    assert_i32("slot_token", st, ref.slot_token, E * cap);
    assert_i32("slot_ref", sr, ref.slot_ref, E * cap);
    assert_i32("counts", ct, ref.counts, E);
    int64_t placed = 0;
    for (int64_t e = 0; e < E; e++) placed += ct[e];
    io_free(&io);
    free(z);
    free(p);
    free(g);
    free(ibuf);
    free(ref.probs);
    free(ref.gates);
    free(ref.idx);
    free(ref.slot_token);
    free(ref.slot_ref);
    free(ref.counts);
    return R * K - placed;
}

/* (R, E, K, cap): one token, capacity drops, K = E, capacity 0, no drops, threaded. */
static const int64_t router_shapes[][4] = {{1, 1, 1, 1}, {7, 4, 2, 3},  {13, 8, 3, 2},
                                           {5, 5, 5, 4}, {3, 6, 2, 0},  {9, 3, 1, 9},
                                           {600, 16, 4, 140}};

Test(router, topk_matches_naive_with_drops_and_ties) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(51);
    int64_t dropped = 0;
    for (size_t d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof router_shapes / sizeof router_shapes[0]; s++)
            for (int ties = 0; ties < 2; ties++)
                for (int score = 0; score < 2; score++)
                    for (int renorm = 0; renorm < 2; renorm++)
                        dropped += router_case(be, dts[d], router_shapes[s], ties, score, renorm,
                                               &rng);
    cr_assert(dropped > 0, "the shapes were meant to overflow some experts");
    chm_backend_close(be);
}

Test(router, explicit_ties_and_plan) {
    /* row 0: experts 1, 2, 4 tie at 3; row 1 prefers 4 then 0; capacity 1, so row 2's
       picks (1, 2) are both dropped */
    chm_backend *be = tt_open_cpu();
    router_io io = io_alloc(be, CHM_F32, 3, 5, 2, 1);
    tt_upload(be, &io.logits, (double[]){1, 3, 3, 0, 3, 2, -1, 0, 0, 5, 0, 4, 1, 0, 0});
    cr_assert_eq(io_run(be, &io, CHM_ROUTER_SIGMOID, false), CHM_OK, "%s", be->err.msg);
    int32_t idx[6], st[5], sr[5], ct[5];
    cr_assert_eq(chm_download(be, &io.idx.t, idx), CHM_OK);
    cr_assert_eq(chm_download(be, &io.slot_token.t, st), CHM_OK);
    cr_assert_eq(chm_download(be, &io.slot_ref.t, sr), CHM_OK);
    cr_assert_eq(chm_download(be, &io.counts.t, ct), CHM_OK);
    assert_i32("idx", idx, (int32_t[]){1, 2, 4, 0, 1, 2}, 6);
    assert_i32("slot_token", st, (int32_t[]){1, 0, 0, -1, 1}, 5);
    assert_i32("slot_ref", sr, (int32_t[]){3, 0, 1, -1, 2}, 5);
    assert_i32("counts", ct, (int32_t[]){1, 1, 1, 0, 1}, 5);
    io_free(&io);
    chm_backend_close(be);
}

/* L = sum(gates * W) for the logits z (f64), through the forward op. */
static double gate_loss(chm_backend *be, router_io *io, const double *z, const double *W,
                        chm_router_score score, bool renorm) {
    double g[64], L = 0;
    tt_upload(be, &io->logits, z);
    cr_assert_eq(io_run(be, io, score, renorm), CHM_OK, "%s", be->err.msg);
    tt_download(be, &io->gates, g);
    for (int64_t i = 0; i < io->R * io->K; i++) L += g[i] * W[i];
    return L;
}

/* dlogits from the op (started at G0, minus G0) against central differences of gate_loss. */
static void bwd_case(chm_backend *be, int64_t R, int64_t E, int64_t K, chm_router_score score,
                     bool renorm, tt_rng *rng) {
    router_io io = io_alloc(be, CHM_F64, R, E, K, 2);
    tt_tensor dz = tt_alloc(be, CHM_F64, 2, (int64_t[]){R, E});
    tt_tensor dg = tt_alloc(be, CHM_F64, 2, (int64_t[]){R, K});
    double z[64], W[64], G0[64], got[64], fd[64];
    tt_fill_uniform(rng, z, R * E, -2, 2);
    tt_fill_uniform(rng, W, R * K, -1, 1);
    tt_fill_uniform(rng, G0, R * E, -1, 1);
    gate_loss(be, &io, z, W, score, renorm);
    tt_upload(be, &dg, W);
    tt_upload(be, &dz, G0);
    cr_assert_eq(chm_router_topk_bwd(be, &dz.t, &dg.t, &io.probs.t, &io.idx.t, score, renorm),
                 CHM_OK, "%s", be->err.msg);
    tt_download(be, &dz, got);
    for (int64_t i = 0; i < R * E; i++) {
        double h = 1e-6 * fmax(1, fabs(z[i])), z0 = z[i];
        z[i] = z0 + h;
        double up = gate_loss(be, &io, z, W, score, renorm);
        z[i] = z0 - h;
        double down = gate_loss(be, &io, z, W, score, renorm);
        z[i] = z0;
        fd[i] = (up - down) / (2 * h);
        got[i] -= G0[i];
    }
    double norm = 0, worst = 0;
    for (int64_t i = 0; i < R * E; i++) norm += fd[i] * fd[i];
    for (int64_t i = 0; i < R * E; i++) worst = fmax(worst, fabs(got[i]));
    if (norm < 1e-18) {
        /* constant gates (one expert under softmax or renormalised): no gradient at all */
        cr_assert(worst < 1e-12, "router_topk_bwd (score %d, renorm %d): %g where 0 was due",
                  score, renorm, worst);
    } else {
        double err = tt_rel_l2(got, fd, R * E);
        cr_assert(err < 1e-6, "router_topk_bwd (score %d, renorm %d, E %lld, K %lld): rel L2 %g",
                  score, renorm, (long long)E, (long long)K, err);
    }
    io_free(&io);
    tt_free(&dz);
    tt_free(&dg);
}

Test(router, backward_matches_finite_differences) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(52);
    for (int score = 0; score < 2; score++)
        for (int renorm = 0; renorm < 2; renorm++) {
            bwd_case(be, 5, 6, 2, score, renorm, &rng);
            bwd_case(be, 3, 7, 7, score, renorm, &rng);
            bwd_case(be, 1, 1, 1, score, renorm, &rng);
        }
    chm_backend_close(be);
}

/* The f32 backward agrees with the f64 one on the same (f32-representable) inputs. */
Test(router, backward_f32_matches_f64) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(53);
    enum { R = 6, E = 8, K = 3 };
    double z[R * E], W[R * K], G0[R * E], got[2][R * E];
    tt_fill_uniform(&rng, z, R * E, -2, 2);
    tt_fill_uniform(&rng, W, R * K, -1, 1);
    tt_fill_uniform(&rng, G0, R * E, -1, 1);
    for (int i = 0; i < R * E; i++) z[i] = (float)z[i], G0[i] = (float)G0[i];
    for (int i = 0; i < R * K; i++) W[i] = (float)W[i];
    for (int score = 0; score < 2; score++)
        for (int renorm = 0; renorm < 2; renorm++) {
            for (int d = 0; d < 2; d++) {
                router_io io = io_alloc(be, dts[d], R, E, K, 1);
                tt_tensor dz = tt_alloc(be, dts[d], 2, (int64_t[]){R, E});
                tt_tensor dg = tt_alloc(be, dts[d], 2, (int64_t[]){R, K});
                tt_upload(be, &io.logits, z);
                cr_assert_eq(io_run(be, &io, score, renorm), CHM_OK, "%s", be->err.msg);
                tt_upload(be, &dg, W);
                tt_upload(be, &dz, G0);
                cr_assert_eq(chm_router_topk_bwd(be, &dz.t, &dg.t, &io.probs.t, &io.idx.t,
                                                 score, renorm),
                             CHM_OK, "%s", be->err.msg);
                tt_download(be, &dz, got[d]);
                io_free(&io);
                tt_free(&dz);
                tt_free(&dg);
            }
            tt_assert_close("f32 dlogits", got[0], got[1], R * E, 1e-5, 1e-5);
        }
    chm_backend_close(be);
}

/* Naive select: K times the largest unused score (first wins a tie), then in column order. */
static void naive_select(int32_t *ix, const double *s, int64_t C, int64_t K) {
    bool used[1024] = {false};
    for (int64_t k = 0; k < K; k++) {
        int64_t best = -1;
        for (int64_t j = 0; j < C; j++)
            if (!used[j] && (best < 0 || s[j] > s[best])) best = j;
        used[best] = true;
    }
    for (int64_t j = 0, k = 0; j < C; j++)
        if (used[j]) ix[k++] = (int32_t)j;
}

/* flat: the backend writes r*C + column, checked against the naive columns shifted so. */
static void select_case(chm_backend *be, chm_dtype dt, int64_t R, int64_t C, int64_t K, bool ties,
                        bool flat, tt_rng *rng) {
    tt_tensor ts = tt_alloc(be, dt, 2, (int64_t[]){R, C});
    tt_tensor ti = tt_alloc(be, CHM_I32, 2, (int64_t[]){R, K});
    double *s = tt_dalloc(R * C);
    int32_t *got = calloc((size_t)(R * K), 4), *want = calloc((size_t)(R * K), 4);
    tt_fill_uniform(rng, s, R * C, -3, 3);
    for (int64_t i = 0; ties && i < R * C; i++) s[i] = floor(s[i]);
    tt_upload(be, &ts, s);
    tt_download(be, &ts, s);
    cr_assert_eq(chm_select_topk(be, &ti.t, &ts.t, flat), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_download(be, &ti.t, got), CHM_OK);
    for (int64_t r = 0; r < R; r++) {
        naive_select(want + r * K, s + r * C, C, K);
        for (int64_t k = 0; flat && k < K; k++) want[r * K + k] += (int32_t)(r * C);
    }
    assert_i32("select_topk idx", got, want, R * K);
    tt_free(&ts);
    tt_free(&ti);
    free(s);
    free(got);
    free(want);
}

Test(router, select_topk_matches_naive_with_ties) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(54);
    static const int64_t shapes[][3] = {
        {1, 1, 1}, {3, 7, 3}, {5, 13, 13}, {2, 100, 17}, {40, 1000, 100}};
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            for (int ties = 0; ties < 2; ties++)
                for (int flat = 0; flat < 2; flat++)
                    select_case(be, dts[d], shapes[i][0], shapes[i][1], shapes[i][2], ties, flat,
                                &rng);
    /* explicit: the three 2s tie; K = 4 takes 5 then the first two 2s, in column order */
    tt_tensor ts = tt_alloc(be, CHM_F64, 2, (int64_t[]){1, 6});
    tt_tensor ti = tt_alloc(be, CHM_I32, 2, (int64_t[]){1, 4});
    tt_upload(be, &ts, (double[]){2, 0, 2, 5, 2, 1});
    cr_assert_eq(chm_select_topk(be, &ti.t, &ts.t, false), CHM_OK, "%s", be->err.msg);
    int32_t got[4];
    cr_assert_eq(chm_download(be, &ti.t, got), CHM_OK);
    assert_i32("explicit select", got, (int32_t[]){0, 2, 3, 4}, 4);
    tt_free(&ts);
    tt_free(&ti);
    chm_backend_close(be);
}

/* code from the last call, and a message that contains `what`. */
static void expect(chm_backend *be, chm_status rc, chm_status code, const char *what) {
    cr_assert_eq(rc, code, "expected %s, got %s (%s)", chm_status_name(code),
                 chm_status_name(rc), be->err.msg);
    cr_assert(strstr(be->err.msg, what) != NULL, "message '%s' lacks '%s'", be->err.msg, what);
}

Test(router, wrappers_reject_bad_shapes_dtypes_and_values) {
    chm_backend *be = tt_open_cpu();
    router_io io = io_alloc(be, CHM_F32, 4, 3, 2, 2);
    router_io big_k = io_alloc(be, CHM_F32, 4, 3, 4, 2);
    tt_tensor g64 = tt_alloc(be, CHM_F64, 2, (int64_t[]){4, 2});
    tt_tensor sr3 = tt_alloc(be, CHM_I32, 2, (int64_t[]){3, 3});
    tt_tensor c4 = tt_alloc(be, CHM_I32, 1, (int64_t[]){4});
    tt_tensor dz = tt_alloc(be, CHM_F32, 2, (int64_t[]){4, 3});
    chm_router_score sc = CHM_ROUTER_SOFTMAX;
    expect(be, io_run(be, &big_k, sc, true), CHM_ERR_INVALID_ARG, "router_topk: top-k needs");
    expect(be, chm_router_topk(be, &g64.t, &io.idx.t, &io.probs.t, &io.slot_token.t,
                               &io.slot_ref.t, &io.counts.t, &io.logits.t, sc, true),
           CHM_ERR_DTYPE, "router_topk: gates must be f32");
    expect(be, chm_router_topk(be, &io.gates.t, &io.idx.t, &io.probs.t, &io.slot_token.t,
                               &sr3.t, &io.counts.t, &io.logits.t, sc, true),
           CHM_ERR_SHAPE, "router_topk: slot_ref must have shape [3, 2]");
    expect(be, chm_router_topk(be, &io.gates.t, &io.idx.t, &io.probs.t, &io.slot_token.t,
                               &io.slot_ref.t, &c4.t, &io.logits.t, sc, true),
           CHM_ERR_SHAPE, "router_topk: counts must have shape [3]");
    expect(be, chm_router_topk(be, &io.gates.t, &io.gates.t, &io.probs.t, &io.slot_token.t,
                               &io.slot_ref.t, &io.counts.t, &io.logits.t, sc, true),
           CHM_ERR_DTYPE, "router_topk: idx must be i32");
    expect(be, chm_router_topk(be, &io.gates.t, &io.idx.t, &io.logits.t, &io.slot_token.t,
                               &io.slot_ref.t, &io.counts.t, &io.logits.t, sc, true),
           CHM_ERR_INVALID_ARG, "router_topk: probs and logits overlap");
    expect(be, io_run(be, &io, (chm_router_score)7, true), CHM_ERR_INVALID_ARG,
           "router_topk: score must be");
    expect(be, chm_router_topk_bwd(be, &dz.t, &g64.t, &io.probs.t, &io.idx.t, sc, true),
           CHM_ERR_DTYPE, "router_topk_bwd: dgates must be f32");
    expect(be, chm_router_topk_bwd(be, &dz.t, &io.gates.t, &dz.t, &io.idx.t, sc, true),
           CHM_ERR_INVALID_ARG, "router_topk_bwd: dlogits and probs overlap");
    tt_upload_i32(be, &io.idx, (int32_t[]){0, 1, 2, 3, 1, 0, 2, 1});
    expect(be, chm_router_topk_bwd(be, &dz.t, &io.gates.t, &io.probs.t, &io.idx.t, sc, true),
           CHM_ERR_INVALID_ARG, "router_topk_bwd: idx element 3 = 3");
    expect(be, chm_select_topk(be, &big_k.idx.t, &io.logits.t, false), CHM_ERR_INVALID_ARG,
           "select_topk: top-k needs 1 <= K <= 3");
    expect(be, chm_select_topk(be, &io.idx.t, &sr3.t, false), CHM_ERR_DTYPE,
           "select_topk: scores must be a float tensor");
    io_free(&io);
    io_free(&big_k);
    tt_free(&g64);
    tt_free(&sr3);
    tt_free(&c4);
    tt_free(&dz);
    chm_backend_close(be);
}
