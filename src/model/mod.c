/*
 * mod.c: mixture-of-depths around one layer, forward and backward.
 *
 * Training routing, x [B,T,C]:
 *   score = x w^T [R] (w: mod.router.weight [1,C]);
 *   idx [B,k] = the k = ceil(capacity*T) best scores of each sequence, in
 *   increasing position (select_topk), so the selected tokens keep their order;
 *   the indices are flat (b*T + t: rows of the whole batch), so every gather and
 *   scatter below is one call for all sequences (chimera-1b on an H100 made
 *   ~330 row calls a step one sequence at a time);
 *   xs [B,k,C] = the selected rows; ys = layer(xs) (the core layer on a batch
 *   of B sequences of k tokens: attention positions are ranks 0..k-1);
 *   out = x, plus sigmoid(score) * (ys - xs) on each selected row.
 *   Aux loss: BCE(score, selected) per token, mean over tokens and MoD
 *   layers, so that sigmoid(score) learns to predict selection.
 * Causal routing (inference, one sequence at a time): a token runs the layer
 * when its score > 0; the scores are downloaded (a named host read) to build
 * each sequence's index list, the inner layer runs on the k_b selected
 * tokens with ranks as positions, exactly as incremental decoding does.
 * The backward splits d(out) between the identity path, the selected
 * tokens' layer (d(ys - xs) = sigmoid(score) * d(out)) and the score
 * (d(score) from the sigmoid and from the BCE).
 */
#include <math.h>
#include <string.h>

#include "model_internal.h"

/* The first n rows of t as a 2-D [n,c] view. */
static chm_tensor rows_of(const chm_tensor *t, int64_t n, int64_t c) {
    return MDL_VIEW(t, 0, n, c);
}

static chm_status mod_alloc(chm_model *m, mdl_mod_act *a, int64_t B, int64_t T, int64_t k) {
    int64_t R = B * T, M = B * k, C = m->C;
    a->k = k;
    MDL_TRY(MDL_ALLOC(m, &a->score, R));
    if (!a->kept) MDL_TRY(MDL_ALLOC_I32(m, &a->idx, B, k));
    MDL_TRY(MDL_ALLOC(m, &a->rs, M));
    MDL_TRY(MDL_ALLOC(m, &a->sig, M));
    MDL_TRY(MDL_ALLOC(m, &a->ones, M));
    MDL_TRY(MDL_ALLOC(m, &a->xs, B, k, C));
    MDL_TRY(MDL_ALLOC(m, &a->ys, B, k, C));
    MDL_TRY(MDL_ALLOC(m, &a->delta, M, C));
    MDL_TRY(MDL_ALLOC(m, &a->mask, R));
    MDL_TRY(MDL_ALLOC_STATS(m, &a->bce, R));
    return MDL_ALLOC(m, &a->dscore, R);
}

/* The M selected rows of x [R,C] (idx [M]: rows of x) into xs, and of score into rs. */
static chm_status mod_gather(chm_model *m, mdl_layer_act *act, const chm_tensor *idx, int64_t R,
                             int64_t M) {
    mdl_mod_act *a = &act->mod;
    int64_t C = m->C;
    chm_tensor x2 = rows_of(&act->x, R, C), xs2 = rows_of(&a->xs, M, C);
    chm_tensor s2 = rows_of(&a->score, R, 1), rs2 = rows_of(&a->rs, M, 1);
    MDL_OP(m, chm_gather_rows(m->be, &xs2, &x2, idx));
    MDL_OP(m, chm_gather_rows(m->be, &rs2, &s2, idx));
    return CHM_OK;
}

/* delta = ys - xs; sig = sigmoid(rs); out += sig * delta on the M selected rows of out [R,C]. */
static chm_status mod_merge(chm_model *m, mdl_layer_act *act, const chm_tensor *idx, int64_t R,
                            int64_t M) {
    chm_backend *be = m->be;
    mdl_mod_act *a = &act->mod;
    int64_t C = m->C;
    chm_tensor d = rows_of(&a->delta, M, C), ys = rows_of(&a->ys, M, C);
    chm_tensor xs = rows_of(&a->xs, M, C), ones = rows_of(&a->ones, M, 1);
    chm_tensor sig = rows_of(&a->sig, M, 1), rs = MDL_VIEW(&a->rs, 0, M);
    MDL_OP(m, chm_copy(be, &d, &ys));
    MDL_OP(m, chm_axpy(be, &d, &xs, -1.0));
    MDL_OP(m, chm_fill(be, &ones, 1.0));
    MDL_OP(m, chm_row_scale_fwd(be, &sig, &ones, &rs, true));
    chm_tensor out2 = rows_of(&act->out, R, C), sig1 = MDL_VIEW(&a->sig, 0, M);
    MDL_OP(m, chm_scatter_add_rows_bounded(be, &out2, &d, idx, &sig1, 1));
    return CHM_OK;
}

/* The BCE aux loss: targets = selection mask; value into the MoD loss slot. */
static chm_status mod_aux(chm_model *m, mdl_layer_act *act, int64_t B, int64_t T) {
    chm_backend *be = m->be;
    mdl_mod_act *a = &act->mod;
    int64_t R = B * T, M = B * a->k;
    chm_tensor mask = rows_of(&a->mask, R, 1), ones = rows_of(&a->ones, M, 1);
    chm_tensor idx = MDL_VIEW(&a->idx, 0, M);
    MDL_OP(m, chm_fill(be, &a->mask, 0));
    MDL_OP(m, chm_scatter_add_rows_bounded(be, &mask, &ones, &idx, NULL, 1));
    double scale = m->gscale * m->cfg.mod.aux_weight / ((double)m->n_mod * (double)R);
    MDL_OP(m,
           chm_bce_logits(be, &a->bce, m->train ? &a->dscore : NULL, &a->score, &a->mask, scale));
    if (m->replay) return CHM_OK; /* the loss counted this layer in the first forward */
    chm_tensor slot = mdl_loss_slot(m, MDL_LOSS_MOD, 1), bce1 = MDL_VIEW(&a->bce, 0, R, 1);
    MDL_OP(m, chm_sum_rows(be, &slot, &bce1));
    return CHM_OK;
}

/* Causal routing: each sequence's tokens with score > 0 run the layer. */
static chm_status mod_fwd_causal(chm_model *m, const mdl_layer *ly, mdl_layer_act *act, int64_t B,
                                 int64_t T) {
    mdl_mod_act *a = &act->mod;
    for (int64_t b = 0; b < B; b++) {
        int64_t k = 0;
        if (m->dry) {
            k = T; /* size for the most */
        } else {
            chm_tensor sb = MDL_VIEW(&a->score, b * T, T);
            MDL_TRY(mdl_download_f64(m->be, &sb, m->host_score));
            for (int64_t t = 0; t < T; t++)
                if (m->host_score[t] > 0) m->host_idx[k++] = (int32_t)t;
        }
        if (k == 0) continue;
        chm_tensor idx = MDL_VIEW(&a->idx, 0, k);
        MDL_OP(m, chm_upload(m->be, &idx, m->host_idx));
        /* sequence b's rows use the first k rows of xs/ys/rs as sequence "0" */
        mdl_layer_act view = *act;
        view.x = MDL_VIEW(&act->x, b * T * m->C, 1, T, m->C);
        view.out = MDL_VIEW(&act->out, b * T * m->C, 1, T, m->C);
        view.mod.score = MDL_VIEW(&a->score, b * T, T);
        MDL_TRY(mod_gather(m, &view, &idx, T, k));
        size_t mark = mdl_mark(m);
        mdl_layer_act *in = a->inner;
        in->x = MDL_VIEW(&a->xs, 0, 1, k, m->C);
        in->out = MDL_VIEW(&a->ys, 0, 1, k, m->C);
        MDL_TRY(mdl_layer_core_fwd(m, ly, in, 1, k));
        MDL_TRY(mod_merge(m, &view, &idx, T, k));
        mdl_release(m, mark);
    }
    return CHM_OK;
}

int64_t mdl_mod_tokens(const chm_model *m, int64_t T) {
    int64_t k = (int64_t)ceil(m->cfg.mod.capacity * (double)T);
    return k < 1 ? 1 : k > T ? T : k;
}

chm_status mdl_mod_fwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act, int64_t B,
                       int64_t T) {
    chm_backend *be = m->be;
    bool causal = m->routing == CHM_ROUTING_CAUSAL;
    int64_t k = causal ? T : mdl_mod_tokens(m, T), R = B * T, C = m->C;
    MDL_TRY(mod_alloc(m, &act->mod, B, T, k));
    act->B = B;
    act->T = T;
    chm_tensor x2 = MDL_VIEW(&act->x, 0, R, C), s2 = MDL_VIEW(&act->mod.score, 0, R, 1);
    MDL_TRY(mdl_linear_fwd(m, &s2, &x2, mdl_w(m, ly->mod_router), 0));
    MDL_OP(m, chm_copy(be, &act->out, &act->x));
    if (causal) return mod_fwd_causal(m, ly, act, B, T);
    chm_tensor sc = MDL_VIEW(&act->mod.score, 0, B, T);
    chm_tensor idx = MDL_VIEW(&act->mod.idx, 0, B * k);
    MDL_OP(m, chm_select_topk(be, &act->mod.idx, &sc, true));
    MDL_TRY(mod_gather(m, act, &idx, R, B * k));
    mdl_layer_act *in = act->mod.inner;
    in->x = act->mod.xs;
    in->out = act->mod.ys;
    MDL_TRY(mdl_layer_core_fwd(m, ly, in, B, k));
    MDL_TRY(mod_merge(m, act, &idx, R, B * k));
    return mod_aux(m, act, B, T);
}

/* Scratch of the backward. */
typedef struct mod_grads {
    chm_tensor dsel;   /* [M,C] d(out) on the selected rows */
    chm_tensor ddelta; /* [M,C] d(ys - xs) */
    chm_tensor drs;    /* [M] d(selected scores) */
    chm_tensor dr;     /* [R] d(score) */
    chm_tensor dres;   /* [B,k,C] d(ys), then d(xs) */
} mod_grads;

static chm_status mod_grads_alloc(chm_model *m, mod_grads *g, int64_t B, int64_t T, int64_t k) {
    MDL_TRY(MDL_ALLOC(m, &g->dsel, B * k, m->C));
    MDL_TRY(MDL_ALLOC(m, &g->ddelta, B * k, m->C));
    MDL_TRY(MDL_ALLOC(m, &g->drs, B * k));
    MDL_TRY(MDL_ALLOC(m, &g->dr, B * T));
    return MDL_ALLOC(m, &g->dres, B, k, m->C);
}

/* d(out) on the selected rows through the sigmoid scaling: g->ddelta, g->drs. */
static chm_status mod_scale_bwd(chm_model *m, const mdl_layer_act *act, mod_grads *g,
                                const chm_tensor *dres) {
    chm_backend *be = m->be;
    const mdl_mod_act *a = &act->mod;
    int64_t R = act->B * act->T, M = act->B * a->k, C = m->C;
    chm_tensor d2 = rows_of(dres, R, C), idx = MDL_VIEW(&a->idx, 0, M);
    MDL_OP(m, chm_gather_rows(be, &g->dsel, &d2, &idx));
    MDL_OP(m, chm_row_scale_bwd_set(be, &g->ddelta, &g->drs, &g->dsel, &a->delta, &a->rs, true));
    return CHM_OK;
}

chm_status mdl_mod_bwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act,
                       const chm_tensor *dres) {
    chm_backend *be = m->be;
    const mdl_mod_act *a = &act->mod;
    int64_t B = act->B, T = act->T, k = a->k, C = m->C, R = B * T;
    size_t mark = mdl_mark(m);
    mod_grads g;
    MDL_TRY(mod_grads_alloc(m, &g, B, T, k));
    MDL_TRY(mod_scale_bwd(m, act, &g, dres));
    /* ys = xs + delta: run the core backward on d(ys) = ddelta, then drop the identity part */
    MDL_OP(m, chm_copy(be, &g.dres, &g.ddelta));
    MDL_TRY(mdl_layer_core_bwd(m, ly, a->inner, &g.dres));
    MDL_OP(m, chm_axpy(be, &g.dres, &g.ddelta, -1.0));
    MDL_OP(m, chm_copy(be, &g.dr, &a->dscore));
    int64_t M = B * k;
    chm_tensor idx = MDL_VIEW(&a->idx, 0, M), dx2 = rows_of(dres, R, C);
    chm_tensor gd = rows_of(&g.dres, M, C);
    chm_tensor dr2 = rows_of(&g.dr, R, 1), drs = rows_of(&g.drs, M, 1);
    MDL_OP(m, chm_scatter_add_rows_bounded(be, &dx2, &gd, &idx, NULL, 1));
    MDL_OP(m, chm_scatter_add_rows_bounded(be, &dr2, &drs, &idx, NULL, 1));
    chm_tensor x2 = MDL_VIEW(&act->x, 0, R, C);
    MDL_TRY(
        mdl_linear_bwd(m, mdl_w(m, ly->mod_router), mdl_g(m, ly->mod_router), &dr2, &x2, &dx2, 1));
    mdl_release(m, mark);
    return CHM_OK;
}
