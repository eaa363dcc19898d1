/*
 * router.c: MoE router top-k (forward and backward) and MoD top-k selection
 * on the cpu.
 *
 * router_topk, per row r of logits z [R,E]:
 *   probs [R,E] = softmax(z) (max-subtracted, sums in double) or sigmoid(z);
 *   idx [R,K]   = the K best experts, best first, ties to the lower index;
 *   gates [R,K] = their probs, divided by the sum of the K when renormalize.
 * Experts are ranked by logit: softmax and sigmoid are increasing, so this
 * is the ranking by probability, without the ties that rounding a
 * probability (or a saturated sigmoid) would create. NaN ranks last.
 * Then the dispatch plan for cap = slot_token's second dim, first come first
 * served in token order (r, then k): the slot counts[e]++ of expert e gets
 * slot_token = r and slot_ref = r*K + k while counts[e] < cap; later tokens
 * for a full expert are dropped. Empty slots hold -1.
 *
 * router_topk_bwd ACCUMULATES into dlogits [R,E] the gradient of the gates
 * given dgates [R,K], from the saved probs and idx (a constant). With
 * S = sum_k p[idx_k] and c = sum_k dgates_k * gates_k, the gradient with
 * respect to the chosen probs is dp_k = (dgates_k - c) / S when
 * renormalize, else dgates_k; then through the score:
 *   softmax: dz_j = p_j * (sum_{k: idx_k = j} dp_k - sum_k dp_k p[idx_k])
 *   sigmoid: dz_j = p_j (1 - p_j) * sum_{k: idx_k = j} dp_k.
 *
 * select_topk, per row of scores [R,C]: the K largest (ties to the lower
 * index, NaN last), written in increasing index order (plus r*C when flat).
 *
 * Rows are independent and run in parallel; the plan is one sequential
 * pass because its order is the contract.
 */
#include <math.h>
#include <stdlib.h>

#include "cpu.h"

/* Entry a ranks strictly before entry b: larger value, then lower index; NaN last. */
static inline bool ranks_before(double za, int64_t a, double zb, int64_t b) {
    if (isnan(za) || isnan(zb)) return isnan(zb) && (!isnan(za) || a < b);
    return za > zb || (za == zb && a < b);
}

/* A row's score function: sigmoid, or softmax with the row's max and sum of exp. */
typedef struct score_fn {
    chm_router_score kind;
    double mx, sum;
} score_fn;

/* Probability of logit z under f. */
static inline double score_prob(const score_fn *f, double z) {
    if (f->kind == CHM_ROUTER_SOFTMAX) return exp(z - f->mx) / f->sum;
    return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

/* Fill the dispatch plan from idx [R,K]; see the file comment. */
static void dispatch_plan(int32_t *slot_token, int32_t *slot_ref, int32_t *counts,
                          const int32_t *idx, int64_t R, int64_t K, int64_t E, int64_t cap) {
    for (int64_t s = 0; s < E * cap; s++) slot_token[s] = slot_ref[s] = -1;
    for (int64_t e = 0; e < E; e++) counts[e] = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < K; k++) {
            int64_t e = idx[r * K + k];
            if (counts[e] >= cap) continue;  /* expert full: this token is dropped for e */
            int64_t s = e * cap + counts[e]++;
            slot_token[s] = (int32_t)r;
            slot_ref[s] = (int32_t)(r * K + k);
        }
}

/*
 * route_<sfx>: one row: probs p [E], idx ix [K] and gates g [K] from logits z [E].
 * pick_<sfx>:  the best entry of z [E] ranking after entry prev (-1: none).
 */
#define ROUTER_FWD_DEFINE(T, SFX)                                                             \
    static int64_t pick_##SFX(const T *z, int64_t E, int64_t prev) {                          \
        int64_t best = -1;                                                                    \
        for (int64_t j = 0; j < E; j++) {                                                     \
            if (prev >= 0 && !ranks_before((double)z[prev], prev, (double)z[j], j)) continue; \
            if (best < 0 || ranks_before((double)z[j], j, (double)z[best], best)) best = j;   \
        }                                                                                     \
        return best;                                                                          \
    }                                                                                         \
    static void route_##SFX(T *g, int32_t *ix, T *p, const T *z, int64_t E, int64_t K,        \
                            chm_router_score kind, bool renorm) {                             \
        score_fn f = {kind, -INFINITY, 0};                                                    \
        for (int64_t j = 0; kind == CHM_ROUTER_SOFTMAX && j < E; j++)                         \
            f.mx = fmax(f.mx, (double)z[j]);                                                  \
        for (int64_t j = 0; kind == CHM_ROUTER_SOFTMAX && j < E; j++)                         \
            f.sum += exp((double)z[j] - f.mx);                                                \
        for (int64_t j = 0; j < E; j++) p[j] = (T)score_prob(&f, (double)z[j]);               \
        double total = 0;                                                                     \
        for (int64_t k = 0, prev = -1; k < K; k++) {                                          \
            prev = pick_##SFX(z, E, prev);                                                    \
            ix[k] = (int32_t)prev;                                                            \
            total += score_prob(&f, (double)z[prev]);                                         \
        }                                                                                     \
        double div = renorm ? total : 1.0;                                                    \
        for (int64_t k = 0; k < K; k++) g[k] = (T)(score_prob(&f, (double)z[ix[k]]) / div);   \
    }

/*
 * route_bwd_<sfx>: one row: dz [E] += gradient of the gates given dg [K],
 * probs p [E] and idx ix [K] (see the file comment).
 */
#define ROUTER_BWD_DEFINE(T, SFX)                                                             \
    static void route_bwd_##SFX(T *dz, const T *dg, const T *p, const int32_t *ix, int64_t E, \
                                int64_t K, chm_router_score kind, bool renorm) {              \
        double S = 1, c = 0, dot = 0;                                                         \
        if (renorm) {                                                                         \
            S = 0;                                                                            \
            for (int64_t k = 0; k < K; k++) S += (double)p[ix[k]];                            \
            for (int64_t k = 0; k < K; k++) c += (double)dg[k] * (double)p[ix[k]] / S;        \
        }                                                                                     \
        for (int64_t k = 0; k < K; k++) dot += ((double)dg[k] - c) / S * (double)p[ix[k]];    \
        for (int64_t j = 0; j < E; j++) {                                                     \
            double pj = (double)p[j], dpj = 0;                                                \
            for (int64_t k = 0; k < K; k++)                                                   \
                if (ix[k] == j) dpj += ((double)dg[k] - c) / S;                               \
            double d = kind == CHM_ROUTER_SOFTMAX ? pj * (dpj - dot) : pj * (1 - pj) * dpj;   \
            dz[j] = (T)((double)dz[j] + d);                                                   \
        }                                                                                     \
    }

ROUTER_FWD_DEFINE(float, f32)
ROUTER_FWD_DEFINE(double, f64)
ROUTER_BWD_DEFINE(float, f32)
ROUTER_BWD_DEFINE(double, f64)

chm_status chm_cpu_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                               const chm_tensor *probs, const chm_tensor *slot_token,
                               const chm_tensor *slot_ref, const chm_tensor *counts,
                               const chm_tensor *logits, chm_router_score score,
                               bool renormalize) {
    int64_t R = logits->shape[0], E = logits->shape[1], K = idx->shape[1];
    int32_t *ix = chm_cpu_ptr(idx);
    if (logits->dtype != CHM_F32 && logits->dtype != CHM_F64)
        return chm_cpu_bad_dtype(be, "router_topk", logits->dtype);
    bool f64 = logits->dtype == CHM_F64;
    void *g = chm_cpu_ptr(gates), *p = chm_cpu_ptr(probs);
    const void *z = chm_cpu_ptr(logits);
#pragma omp parallel for schedule(static) if (R * E * K > 32768)
    for (int64_t r = 0; r < R; r++) {
        if (f64)
            route_f64((double *)g + r * K, ix + r * K, (double *)p + r * E,
                      (const double *)z + r * E, E, K, score, renormalize);
        else
            route_f32((float *)g + r * K, ix + r * K, (float *)p + r * E,
                      (const float *)z + r * E, E, K, score, renormalize);
    }
    dispatch_plan(chm_cpu_ptr(slot_token), chm_cpu_ptr(slot_ref), chm_cpu_ptr(counts), ix, R, K,
                  E, slot_token->shape[1]);
    return CHM_OK;
}

/* Every idx entry names an expert: idx is data, so the backward checks it. */
static chm_status check_experts(chm_backend *be, const int32_t *ix, int64_t n, int64_t E) {
    for (int64_t i = 0; i < n; i++)
        if (ix[i] < 0 || ix[i] >= E)
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "router_topk_bwd: idx element %lld = %d is not an expert in [0, %lld)",
                           (long long)i, (int)ix[i], (long long)E);
    return CHM_OK;
}

chm_status chm_cpu_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                   const chm_tensor *dgates, const chm_tensor *probs,
                                   const chm_tensor *idx, chm_router_score score,
                                   bool renormalize) {
    int64_t R = dlogits->shape[0], E = dlogits->shape[1], K = idx->shape[1];
    const int32_t *ix = chm_cpu_ptr(idx);
    if (dlogits->dtype != CHM_F32 && dlogits->dtype != CHM_F64)
        return chm_cpu_bad_dtype(be, "router_topk_bwd", dlogits->dtype);
    chm_status rc = check_experts(be, ix, R * K, E);
    if (rc != CHM_OK) return rc;
    bool f64 = dlogits->dtype == CHM_F64;
    void *dz = chm_cpu_ptr(dlogits);
    const void *dg = chm_cpu_ptr(dgates), *p = chm_cpu_ptr(probs);
#pragma omp parallel for schedule(static) if (R * E * K > 32768)
    for (int64_t r = 0; r < R; r++) {
        if (f64)
            route_bwd_f64((double *)dz + r * E, (const double *)dg + r * K,
                          (const double *)p + r * E, ix + r * K, E, K, score, renormalize);
        else
            route_bwd_f32((float *)dz + r * E, (const float *)dg + r * K,
                          (const float *)p + r * E, ix + r * K, E, K, score, renormalize);
    }
    return CHM_OK;
}

/* One score of a row with its column, for sorting. */
typedef struct ranked {
    double s;
    int64_t i;
} ranked;

/* qsort orders: by rank (best first), and by column. Both are total orders. */
static int cmp_rank(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    return ranks_before(x->s, x->i, y->s, y->i) ? -1 : ranks_before(y->s, y->i, x->s, x->i);
}

static int cmp_index(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    return (x->i > y->i) - (x->i < y->i);
}

/* The K best of buf [C] (already loaded) into ix [K], in increasing column order. */
static void select_row(int32_t *ix, ranked *buf, int64_t C, int64_t K) {
    qsort(buf, (size_t)C, sizeof *buf, cmp_rank);
    qsort(buf, (size_t)K, sizeof *buf, cmp_index);
    for (int64_t k = 0; k < K; k++) ix[k] = (int32_t)buf[k].i;
}

/* One row of scores (f32 or f64) into buf [C]. */
static void load_ranked(ranked *buf, const void *scores, bool f64, int64_t C) {
    for (int64_t j = 0; j < C; j++) {
        buf[j].s = f64 ? ((const double *)scores)[j] : (double)((const float *)scores)[j];
        buf[j].i = j;
    }
}

chm_status chm_cpu_select_topk(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores,
                               bool flat) {
    int64_t R = scores->shape[0], C = scores->shape[1], K = idx->shape[1];
    if (scores->dtype != CHM_F32 && scores->dtype != CHM_F64)
        return chm_cpu_bad_dtype(be, "select_topk", scores->dtype);
    bool f64 = scores->dtype == CHM_F64, failed = false;
    size_t esz = chm_dtype_size(scores->dtype);
    int32_t *ix = chm_cpu_ptr(idx);
    const char *s = chm_cpu_ptr(scores);
#pragma omp parallel if (R * C > 32768)
    {
        /* one scratch row per thread; a thread without one marks the call failed */
        ranked *buf = malloc((size_t)C * sizeof *buf);
        if (!buf) {
#pragma omp atomic write
            failed = true;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            if (!buf) continue;
            load_ranked(buf, s + (size_t)(r * C) * esz, f64, C);
            select_row(ix + r * K, buf, C, K);
            if (flat)
                for (int64_t k = 0; k < K; k++) ix[r * K + k] += (int32_t)(r * C);
        }
        free(buf);
    }
    if (failed)
        return CHM_ERR(&be->err, CHM_ERR_NOMEM, "select_topk: no memory for a row of %lld scores",
                       (long long)C);
    return CHM_OK;
}
