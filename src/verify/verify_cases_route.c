/*
 * verify_cases_route.c: op cases of the op phase for routing (MoE router,
 * mixture-of-depths top-k, row gathers and scatters) and the losses
 * (cross-entropy, BCE, MoE auxiliary losses). Index outputs are compared
 * exactly, so the scores that decide them are drawn with margins that f32
 * rounding cannot cross (or as exact ties, whose order the contract fixes).
 * Dimension letters as in tensor.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "verify_ops.h"

/* ---- router ---- */

/*
 * Logits [R,E] whose values within a row are a shuffled ladder with steps
 * of at least 2/E: no two scores are close enough for f32 to reorder them.
 */
static vo_t distinct_logits(vo_ctx *x, int64_t R, int64_t E) {
    vo_t t = vo_new(x, VO_FLOAT, 2, VD(R, E));
    double *h = malloc((size_t)(R * E) * sizeof *h);
    for (int64_t r = 0; h && r < R; r++) {
        double *row = h + r * E;
        for (int64_t e = 0; e < E; e++)
            row[e] = -2 + 4 * ((double)e + 0.25 + 0.5 * vo_uniform(x, 0, 1)) / (double)E;
        for (int64_t e = E - 1; e > 0; e--) { /* Fisher-Yates */
            int64_t j = (int64_t)vo_uniform(x, 0, (double)(e + 1));
            double tmp = row[e];
            row[e] = row[j];
            row[j] = tmp;
        }
    }
    if (h) vo_set(x, &t, h);
    free(h);
    return t;
}

static void router_case(vo_ctx *x, int64_t R, int64_t E, int64_t K, int64_t cap,
                        chm_router_score score, bool renorm) {
    vo_case(x, "router %lldx%lld k%lld cap%lld %s%s", (long long)R, (long long)E, (long long)K,
            (long long)cap, score == CHM_ROUTER_SOFTMAX ? "softmax" : "sigmoid",
            renorm ? " renorm" : "");
    vo_t lg = distinct_logits(x, R, E), probs = vo_new(x, VO_FLOAT, 2, VD(R, E));
    vo_t gates = vo_new(x, VO_FLOAT, 2, VD(R, K)), idx = vo_new(x, CHM_I32, 2, VD(R, K));
    vo_t st = vo_new(x, CHM_I32, 2, VD(E, cap)), sr = vo_new(x, CHM_I32, 2, VD(E, cap));
    vo_t cnt = vo_new(x, CHM_I32, 1, VD(E));
    vo_t *outs[] = {&probs, &gates, &idx, &st, &sr, &cnt};
    for (int i = 0; i < 6; i++) vo_poison(x, outs[i]);
    VO_CALL(x, "router_topk", chm_router_topk(BE, VT(gates), VT(idx), VT(probs), VT(st), VT(sr),
                                              VT(cnt), VT(lg), score, renorm));
    vo_check(x, "router_topk", "gates", &gates, 1);
    vo_check(x, "router_topk", "probs", &probs, 1);
    vo_check_exact(x, "router_topk", "idx", &idx);
    vo_check_exact(x, "router_topk", "slot_token", &st);
    vo_check_exact(x, "router_topk", "slot_ref", &sr);
    vo_check_exact(x, "router_topk", "counts", &cnt);
    vo_share(x, &probs);
    vo_share(x, &idx);
    vo_t dl = vo_grad0(x, 2, VD(R, E)), dg = vo_rand(x, 2, VD(R, K), -1, 1);
    VO_CALL(x, "router_topk_bwd",
            chm_router_topk_bwd(BE, VT(dl), VT(dg), VT(probs), VT(idx), score, renorm));
    vo_check(x, "router_topk_bwd", "dlogits", &dl, 1);
    VO_FREE(&lg, &probs, &gates, &idx, &st, &sr, &cnt, &dl, &dg);
}

void vc_router(vo_ctx *x) {
    router_case(x, 70, 8, 2, 12, CHM_ROUTER_SOFTMAX, true);
    router_case(x, 33, 5, 3, 40, CHM_ROUTER_SIGMOID, false);
    router_case(x, 7, 4, 1, 2, CHM_ROUTER_SOFTMAX, true); /* capacity drops tokens */
}

/* scores [R,C] in quarters: exact in f32, with many ties that must go to the lower index. */
static void select_case(vo_ctx *x, int64_t R, int64_t C, int64_t K) {
    vo_case(x, "select_topk %lldx%lld k%lld", (long long)R, (long long)C, (long long)K);
    vo_t sc = vo_new(x, VO_FLOAT, 2, VD(R, C)), idx = vo_new(x, CHM_I32, 2, VD(R, K));
    double *h = malloc((size_t)(R * C) * sizeof *h);
    for (int64_t i = 0; h && i < R * C; i++) h[i] = floor(vo_uniform(x, -5, 5)) / 4.0;
    if (h) vo_set(x, &sc, h);
    free(h);
    vo_poison(x, &idx);
    VO_CALL(x, "select_topk", chm_select_topk(BE, VT(idx), VT(sc), true)); /* flat, as the model */
    vo_check_exact(x, "select_topk", "idx", &idx);
    VO_FREE(&sc, &idx);
}

void vc_select_topk(vo_ctx *x) {
    select_case(x, 3, 70, 17);
    select_case(x, 5, 13, 1);
    select_case(x, 2, 9, 9);
}

/* ---- rows ---- */

/* M indices into R rows: every fifth -1 (skipped), the others in [0, min(R, 12)) (repeats). */
static vo_t row_ids(vo_ctx *x, int64_t M, int64_t R) {
    int32_t *idx = malloc((size_t)M * sizeof *idx);
    double hi = (double)(R < 12 ? R : 12);
    for (int64_t m = 0; idx && m < M; m++) idx[m] = m % 5 == 4 ? -1 : (int32_t)vo_uniform(x, 0, hi);
    vo_t t = vo_ints(x, 1, VD(M), idx);
    free(idx);
    return t;
}

static const int64_t row_shapes[][3] = {{50, 33, 70}, {3, 1, 2}, {8, 5, 8}}; /* R, C, M */

/* M indices into R rows (R >= M / 2), none more than twice, every fifth -1: MoE's top-2
   slots of a token (the bounded scatter's sort-free path on cuda). */
static vo_t row_ids_twice(vo_ctx *x, int64_t M, int64_t R) {
    int32_t *idx = malloc((size_t)M * sizeof *idx);
    for (int64_t m = 0; idx && m < M; m++) idx[m] = m % 5 == 4 ? -1 : (int32_t)(m / 2);
    for (int64_t m = M - 1; idx && m > 0; m--) { /* shuffled: sources out of row order */
        int64_t j = (int64_t)vo_uniform(x, 0, (double)(m + 1));
        if (j > m) j = m;
        int32_t t = idx[m];
        idx[m] = idx[j];
        idx[j] = t;
    }
    (void)R; /* the caller's R must exceed (M - 1) / 2 */
    vo_t t = vo_ints(x, 1, VD(M), idx);
    free(idx);
    return t;
}

void vc_gather_rows(vo_ctx *x) {
    for (int k = 0; k < 3; k++) {
        int64_t R = row_shapes[k][0], C = row_shapes[k][1], M = row_shapes[k][2];
        vo_case(x, "gather_rows %lld of %lldx%lld", (long long)M, (long long)R, (long long)C);
        vo_t in = vo_rand(x, 2, VD(R, C), -1, 1), id = row_ids(x, M, R);
        vo_t out = vo_new(x, VO_FLOAT, 2, VD(M, C));
        vo_poison(x, &out);
        VO_CALL(x, "gather_rows", chm_gather_rows(BE, VT(out), VT(in), VT(id)));
        vo_check(x, "gather_rows", "out", &out, 1);
        VO_FREE(&in, &id, &out);
    }
}

void vc_scatter_add_rows(vo_ctx *x) {
    for (int k = 0; k < 3; k++) {
        int64_t R = row_shapes[k][0], C = row_shapes[k][1], M = row_shapes[k][2];
        vo_case(x, "scatter_add_rows %lld into %lldx%lld", (long long)M, (long long)R,
                (long long)C);
        vo_t src = vo_rand(x, 2, VD(M, C), -1, 1), id = row_ids(x, M, R);
        vo_t w = vo_rand(x, 1, VD(M), -1, 1), acc = vo_grad0(x, 2, VD(R, C));
        vo_t acc2 = vo_grad0(x, 2, VD(R, C));
        VO_CALL(x, "scatter_add_rows", chm_scatter_add_rows(BE, VT(acc), VT(src), VT(id), VT(w)));
        vo_check(x, "scatter_add_rows", "out (weights)", &acc, 1);
        VO_CALL(x, "scatter_add_rows", chm_scatter_add_rows(BE, VT(acc2), VT(src), VT(id), NULL));
        vo_check(x, "scatter_add_rows", "out", &acc2, 1);
        /* the bounded form (checked under the op's name: verify knows ops by registry name) */
        vo_t id2 = row_ids_twice(x, M, R), acc3 = vo_grad0(x, 2, VD(R, C));
        VO_CALL(x, "scatter_add_rows",
                chm_scatter_add_rows_bounded(BE, VT(acc3), VT(src), VT(id2), VT(w), 2));
        vo_check(x, "scatter_add_rows", "out (bounded, weights)", &acc3, 1);
        VO_FREE(&src, &id, &w, &acc, &acc2, &id2, &acc3);
    }
}

/* ---- losses ---- */

/* logits [R,V], targets [R] (row 1 ignored); dlogits written, in place when alias. */
static void ce_case(vo_ctx *x, int64_t R, int64_t V, bool alias) {
    vo_case(x, "cross_entropy %lldx%lld%s", (long long)R, (long long)V, alias ? " in place" : "");
    int32_t *tg = malloc((size_t)R * sizeof *tg);
    for (int64_t r = 0; tg && r < R; r++)
        tg[r] = r == 1 ? -1 : (int32_t)vo_uniform(x, 0, (double)V);
    vo_t lg = vo_rand(x, 2, VD(R, V), -4, 4), t = vo_ints(x, 1, VD(R), tg);
    vo_t loss = vo_new(x, VO_STATS, 1, VD(R)), dl = vo_new(x, VO_FLOAT, 2, VD(R, V));
    vo_t *d = alias ? &lg : &dl;
    vo_poison(x, &loss);
    vo_poison(x, &dl);
    VO_CALL(x, "cross_entropy",
            chm_cross_entropy(BE, VT(loss), VT(*d), VT(lg), VT(t), 1.0 / (double)R));
    vo_check(x, "cross_entropy", "losses", &loss, 1);
    vo_check(x, "cross_entropy", "dlogits", d, 1);
    VO_FREE(&lg, &t, &loss, &dl);
    free(tg);
}

void vc_cross_entropy(vo_ctx *x) {
    ce_case(x, 7, 1000, false);
    ce_case(x, 13, 2001, true);
    ce_case(x, 1, 3, false);
}

/* logits, targets [R] (targets in [0,1]); dlogits written, in place when alias. */
static void bce_case(vo_ctx *x, int64_t R, bool alias) {
    vo_case(x, "bce_logits %lld%s", (long long)R, alias ? " in place" : "");
    vo_t lg = vo_rand(x, 1, VD(R), -6, 6), tg = vo_rand(x, 1, VD(R), 0, 1);
    vo_t loss = vo_new(x, VO_STATS, 1, VD(R)), dl = vo_new(x, VO_FLOAT, 1, VD(R));
    vo_t *d = alias ? &lg : &dl;
    vo_poison(x, &loss);
    vo_poison(x, &dl);
    VO_CALL(x, "bce_logits",
            chm_bce_logits(BE, VT(loss), VT(*d), VT(lg), VT(tg), 1.0 / (double)R));
    vo_check(x, "bce_logits", "losses", &loss, 1);
    vo_check(x, "bce_logits", "dlogits", d, 1);
    if (!alias) {
        vo_poison(x, &loss);
        VO_CALL(x, "bce_logits", chm_bce_logits(BE, VT(loss), NULL, VT(lg), VT(tg), 1.0));
        vo_check(x, "bce_logits", "losses (no dlogits)", &loss, 1);
    }
    VO_FREE(&lg, &tg, &loss, &dl);
}

void vc_bce_logits(vo_ctx *x) {
    bce_case(x, 1, false);
    bce_case(x, 37, false);
    bce_case(x, 411, true);
}

/* idx [R,K]: K distinct experts per row, skewed towards the low ones (an unbalanced load). */
static vo_t expert_ids(vo_ctx *x, int64_t R, int64_t E, int64_t K) {
    int32_t *ix = malloc((size_t)(R * K) * sizeof *ix);
    for (int64_t r = 0; ix && r < R; r++)
        for (int64_t k = 0; k < K; k++) {
            bool again;
            do {
                double u = vo_uniform(x, 0, 1);
                ix[r * K + k] = (int32_t)(u * u * (double)E) % (int32_t)E;
                again = false;
                for (int64_t j = 0; j < k; j++) again |= ix[r * K + j] == ix[r * K + k];
            } while (again);
        }
    vo_t t = vo_ints(x, 2, VD(R, K), ix);
    free(ix);
    return t;
}

static void moe_aux_case(vo_ctx *x, int64_t R, int64_t E, int64_t K) {
    vo_case(x, "moe_aux %lldx%lld k%lld", (long long)R, (long long)E, (long long)K);
    vo_t lg = vo_rand(x, 2, VD(R, E), -3, 3), id = expert_ids(x, R, E, K);
    vo_t loss = vo_new(x, VO_STATS, 1, VD(2)), dl = vo_grad0(x, 2, VD(R, E));
    vo_poison(x, &loss);
    VO_CALL(x, "moe_aux", chm_moe_aux(BE, VT(loss), VT(dl), VT(lg), VT(id), 0.7, 1e-2));
    vo_check(x, "moe_aux", "losses", &loss, 1);
    vo_check(x, "moe_aux", "dlogits", &dl, 1);
    vo_poison(x, &loss);
    VO_CALL(x, "moe_aux", chm_moe_aux(BE, VT(loss), NULL, VT(lg), VT(id), 1.0, 1.0));
    vo_check(x, "moe_aux", "losses (no dlogits)", &loss, 1);
    VO_FREE(&lg, &id, &loss, &dl);
}

void vc_moe_aux(vo_ctx *x) {
    moe_aux_case(x, 1, 3, 1);
    moe_aux_case(x, 70, 8, 2);
    moe_aux_case(x, 33, 5, 3);
}
