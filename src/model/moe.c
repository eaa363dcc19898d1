/*
 * moe.c: the mixture-of-experts SwiGLU block, forward and backward.
 *
 * xn [R,C]:
 *   logits = xn Wr^T [R,E]; router_topk (softmax, top-K, gates renormalised
 *   over the K) gives gates, idx [R,K] and the dispatch plan: slot_token
 *   [E,cap] (token of each slot, first come first served in token order,
 *   -1 empty), slot_ref [E,cap] (which gate filled it), counts [E].
 *   xe = xn rows by slot_token [E,cap,C]; per expert e over its counts[e]
 *   live slots: ye = (silu(xe W1e^T) * (xe W3e^T)) W2e^T (grouped matmuls)
 *   out += sum over slots of gate(slot) * ye(slot) into its token's row.
 * The backward reads the counts on the host and runs the three weight
 * gradients as one matmul per expert over its live rows. The read starts in the
 * forward, right after the router (chm_readback_start: cuda queues the copy
 * there), and the backward finishes it: a download in the backward made the
 * host wait until the device had run everything queued before it, so the device
 * ran dry after each of chimera-1b's 12 MoE layers (1.8 ms of its 146 ms step
 * idle in gaps of 20-500 us, tools/cupti_gaps.c). Per expert because the
 * grouped op's trans_a form had copied both operands with the dead capacity
 * rows zeroed first (2.5x the time on an H100), and its tail-zero form copies
 * nothing but still sums over the whole capacity (one strided batch at the
 * largest count already ran ~2% behind 8 products over the live rows,
 * session 23). The other products stay grouped: per expert they cost more
 * (measured) than their dead rows.
 * The empty slots' rows are zero all along (xe is gathered with zeros there),
 * so every grouped product is chm_matmul_grouped_tail_zero: cuda neither keeps
 * nor re-zeroes those rows around the product, nor masks the trans_a form's
 * operands; the cpu checks the promise.
 * CHIMERA_MOE_GROUPED=1 keeps every product grouped (no download), as does a backend
 * without CHM_CAP_CHEAP_READBACK (vulkan).
 * A token an expert has no room for (capacity cap = ceil(capacity_factor *
 * K * R / E)) gets nothing from it: it passes on the residual. In causal
 * routing cap = R, so nothing is dropped and a token's output depends on no
 * other token. The Switch balance loss and router z-loss of the layer are
 * computed in the forward (moe_aux) and added to the loss slots; their
 * gradients join the gates' in the backward.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

int64_t mdl_moe_capacity(const chm_model *m, int64_t R) {
    if (m->routing == CHM_ROUTING_CAUSAL) return R;
    double want = ceil(m->cfg.moe.capacity_factor * (double)m->K * (double)R / (double)m->E);
    int64_t cap = (int64_t)want;
    return cap < 1 ? 1 : cap > R ? R : cap;
}

static chm_status moe_alloc(chm_model *m, mdl_moe_act *a, int64_t R) {
    int64_t E = m->E, K = m->K, cap = a->cap, C = m->C, F = m->Fe;
    MDL_TRY(MDL_ALLOC(m, &a->logits, R, E));
    MDL_TRY(MDL_ALLOC(m, &a->probs, R, E));
    MDL_TRY(MDL_ALLOC(m, &a->gates, R, K));
    MDL_TRY(MDL_ALLOC_I32(m, &a->idx, R, K));
    MDL_TRY(MDL_ALLOC_I32(m, &a->slot_token, E, cap));
    if (!a->kept) {
        MDL_TRY(MDL_ALLOC_I32(m, &a->slot_ref, E, cap));
        MDL_TRY(MDL_ALLOC_I32(m, &a->counts, E));
    }
    MDL_TRY(MDL_ALLOC(m, &a->slot_gate, E * cap));
    MDL_TRY(MDL_ALLOC(m, &a->xe, E, cap, C));
    MDL_TRY(MDL_ALLOC(m, &a->ge, E, cap, F));
    MDL_TRY(MDL_ALLOC(m, &a->ue, E, cap, F));
    MDL_TRY(MDL_ALLOC(m, &a->ae, E, cap, F));
    MDL_TRY(MDL_ALLOC(m, &a->ye, E, cap, C));
    return MDL_ALLOC_STATS(m, &a->aux, 2);
}

/* Rows [0, n) of group e of a [E,rows,cols] tensor, as [n,cols]. */
static chm_tensor grp(const chm_tensor *t, int64_t e, int64_t n) {
    int64_t rows = t->shape[1], cols = t->shape[2];
    return MDL_VIEW(t, e * rows * cols, n, cols);
}

/* Whether this backward reads the counts on the host (see the file comment): only where a
 * download mid-step is cheap (CHM_CAP_CHEAP_READBACK: not vulkan, where chimera-1b ran at
 * 10.5k tokens/s this way against 12.1k grouped on an H100). */
static bool moe_host_counts(const chm_model *m) {
    return m->routing == CHM_ROUTING_TRAIN && m->host_counts && m->be &&
           (m->be->caps & CHM_CAP_CHEAP_READBACK) && !m->moe_grouped;
}

/* gW [E,M,N] += A[e][:n_e]^T B[e][:n_e]: chm_matmul_grouped's trans_a form with beta 1, one
 * matmul per expert when the counts are on the host (host: m->host_counts), else the grouped
 * op. */
static chm_status moe_wgrad(chm_model *m, const mdl_moe_act *a, bool host, const chm_tensor *gW,
                            const chm_tensor *A, const chm_tensor *B) {
    if (!host) {
        MDL_OP(m, chm_matmul_grouped_tail_zero(m->be, gW, A, B, &a->counts, true, false, 1, 1));
        return CHM_OK;
    }
    for (int64_t e = 0; e < m->E; e++) {
        int64_t n = m->host_counts[e];
        n = n < 0 ? 0 : n > a->cap ? a->cap : n; /* the router keeps 0 <= n <= cap */
        if (n == 0) continue;                    /* an empty sum: gW[e] stays */
        chm_tensor ge = grp(gW, e, gW->shape[1]), ae = grp(A, e, n), be = grp(B, e, n);
        MDL_OP(m, chm_matmul(m->be, &ge, &ae, &be, NULL, true, false, 1.0, 1.0));
    }
    return CHM_OK;
}

static chm_status readback_drop(chm_model *m, mdl_moe_act *a) {
    if (!a->counts_rb.live) return CHM_OK;
    return chm_readback_finish(m->be, &a->counts_rb, m->host_counts);
}

chm_status mdl_moe_readbacks_drop(chm_model *m) {
    for (int l = 0; m->be && l < m->L; l++) {
        MDL_TRY(readback_drop(m, &m->acts[l].moe));
        MDL_TRY(readback_drop(m, &m->inner[l].moe));
    }
    for (int k = 0; m->be && k < m->depth; k++)
        MDL_TRY(readback_drop(m, &m->mtp_acts[k].layer.moe));
    return CHM_OK;
}

/* Router, dispatch plan and the aux losses' values. */
static chm_status moe_route(chm_model *m, const mdl_layer *ly, mdl_moe_act *a,
                            const chm_tensor *x2) {
    chm_backend *be = m->be;
    MDL_TRY(mdl_linear_fwd(m, &a->logits, x2, mdl_w(m, ly->router), 0));
    MDL_OP(m, chm_router_topk(be, &a->gates, &a->idx, &a->probs, &a->slot_token, &a->slot_ref,
                              &a->counts, &a->logits, CHM_ROUTER_SOFTMAX, true));
    /* the counts for this layer's backward (a replay keeps the first forward's read) */
    if (m->train && !m->replay && moe_host_counts(m) && !m->dry) {
        if (a->counts_rb.live) MDL_TRY(chm_readback_finish(be, &a->counts_rb, m->host_counts));
        MDL_TRY(chm_readback_start(be, &a->counts, &a->counts_rb));
    }
    /* a replayed forward (recompute) counted its aux losses the first time; the backward
     * recomputes aux itself */
    if (m->routing != CHM_ROUTING_TRAIN || m->replay) return CHM_OK;
    MDL_OP(m, chm_moe_aux(be, &a->aux, NULL, &a->logits, &a->idx, 0, 0));
    chm_tensor slots = mdl_loss_slot(m, MDL_LOSS_BALANCE, 2);
    MDL_OP(m, chm_axpy(be, &slots, &a->aux, 1.0));
    return CHM_OK;
}

chm_status mdl_moe_fwd(chm_model *m, const mdl_layer *ly, mdl_moe_act *a, const chm_tensor *xn,
                       const chm_tensor *out, int64_t R) {
    chm_backend *be = m->be;
    int64_t E = m->E, K = m->K, C = m->C;
    a->cap = mdl_moe_capacity(m, R);
    int64_t S = E * a->cap; /* slots */
    MDL_TRY(moe_alloc(m, a, R));
    chm_tensor x2 = MDL_VIEW(xn, 0, R, C), out2 = MDL_VIEW(out, 0, R, C);
    MDL_TRY(moe_route(m, ly, a, &x2));
    chm_tensor st = MDL_VIEW(&a->slot_token, 0, S), sr = MDL_VIEW(&a->slot_ref, 0, S);
    chm_tensor xe2 = MDL_VIEW(&a->xe, 0, S, C), ye2 = MDL_VIEW(&a->ye, 0, S, C);
    MDL_OP(m, chm_gather_rows(be, &xe2, &x2, &st));
    /* the empty slots' rows of xe are zero (the gather), so those of ge, ue, ae and ye are too:
       every grouped product and SwiGLU here and in the backward is the tail-zero form */
    const chm_tensor *cnt = &a->counts;
    MDL_OP(m, chm_matmul_grouped_tail_zero(be, &a->ge, &a->xe, mdl_w(m, ly->w1), cnt, false, true,
                                           1, 0));
    MDL_OP(m, chm_matmul_grouped_tail_zero(be, &a->ue, &a->xe, mdl_w(m, ly->w3), cnt, false, true,
                                           1, 0));
    MDL_OP(m, chm_swiglu_fwd_tail_zero(be, &a->ae, &a->ge, &a->ue, cnt));
    MDL_OP(m, chm_matmul_grouped_tail_zero(be, &a->ye, &a->ae, mdl_w(m, ly->w2), cnt, false, true,
                                           1, 0));
    /* each slot's gate: gates viewed [R*K,1], picked by slot_ref (0 for empty slots) */
    chm_tensor g1 = MDL_VIEW(&a->gates, 0, R * K, 1), sg1 = MDL_VIEW(&a->slot_gate, 0, S, 1);
    MDL_OP(m, chm_gather_rows(be, &sg1, &g1, &sr));
    MDL_OP(m, chm_scatter_add_rows_bounded(be, &out2, &ye2, &st, &a->slot_gate, (int)m->K));
    return CHM_OK;
}

/* Scratch of the backward. */
typedef struct moe_grads {
    chm_tensor dyr;           /* [S,C] d(out) rows of each slot's token */
    chm_tensor dye;           /* [E,cap,C] gate * dyr */
    chm_tensor dsg;           /* [S] d(slot gate) */
    chm_tensor dgates;        /* [R*K] */
    chm_tensor dae, dge, due; /* [E,cap,F] */
    chm_tensor dxe;           /* [E,cap,C] */
    chm_tensor dlogits;       /* [R,E] */
} moe_grads;

static chm_status moe_grads_alloc(chm_model *m, moe_grads *g, int64_t R, int64_t cap) {
    int64_t E = m->E, C = m->C, F = m->Fe;
    MDL_TRY(MDL_ALLOC(m, &g->dyr, E * cap, C));
    MDL_TRY(MDL_ALLOC(m, &g->dye, E, cap, C));
    MDL_TRY(MDL_ALLOC(m, &g->dsg, E * cap));
    MDL_TRY(MDL_ALLOC(m, &g->dgates, R * m->K));
    MDL_TRY(MDL_ALLOC(m, &g->dae, E, cap, F));
    MDL_TRY(MDL_ALLOC(m, &g->dge, E, cap, F));
    MDL_TRY(MDL_ALLOC(m, &g->due, E, cap, F));
    MDL_TRY(MDL_ALLOC(m, &g->dxe, E, cap, C));
    return MDL_ALLOC(m, &g->dlogits, R, E);
}

/* The experts' backward: from d(out) [R,C] to g->dxe, the expert weight grads and g->dsg. */
static chm_status moe_experts_bwd(chm_model *m, const mdl_layer *ly, mdl_moe_act *a,
                                  moe_grads *g, const chm_tensor *dout2) {
    chm_backend *be = m->be;
    int64_t S = m->E * a->cap, C = m->C;
    chm_tensor st = MDL_VIEW(&a->slot_token, 0, S), ye2 = MDL_VIEW(&a->ye, 0, S, C);
    chm_tensor dye2 = MDL_VIEW(&g->dye, 0, S, C);
    MDL_OP(m, chm_gather_rows(be, &g->dyr, dout2, &st));
    MDL_OP(m, chm_row_scale_bwd_set(be, &dye2, &g->dsg, &g->dyr, &ye2, &a->slot_gate, false));
    const chm_tensor *cnt = &a->counts;
    bool host = moe_host_counts(m);
    if (host && a->counts_rb.live)
        MDL_OP(m, chm_readback_finish(be, &a->counts_rb, m->host_counts));
    else if (host)
        MDL_OP(m, chm_download(be, cnt, m->host_counts));
    /* dye's empty slots are zero (their gate and d(out) row are), and so are those of dae,
       dge and due */
    MDL_OP(m, chm_matmul_grouped_tail_zero(be, &g->dae, &g->dye, mdl_w(m, ly->w2), cnt, false,
                                           false, 1, 0));
    MDL_TRY(moe_wgrad(m, a, host, mdl_g(m, ly->w2), &g->dye, &a->ae));
    MDL_OP(m, chm_swiglu_bwd_tail_zero(be, &g->dge, &g->due, &g->dae, &a->ge, &a->ue, cnt, false));
    MDL_TRY(moe_wgrad(m, a, host, mdl_g(m, ly->w1), &g->dge, &a->xe));
    MDL_TRY(moe_wgrad(m, a, host, mdl_g(m, ly->w3), &g->due, &a->xe));
    MDL_OP(m, chm_matmul_grouped_tail_zero(be, &g->dxe, &g->dge, mdl_w(m, ly->w1), cnt, false,
                                           false, 1, 0));
    MDL_OP(m, chm_matmul_grouped_tail_zero(be, &g->dxe, &g->due, mdl_w(m, ly->w3), cnt, false,
                                           false, 1, 1));
    return CHM_OK;
}

/* The router's backward: gates (through the slots) and the aux losses into d(logits). */
static chm_status moe_router_bwd(chm_model *m, const mdl_layer *ly, const mdl_moe_act *a,
                                 moe_grads *g, const chm_tensor *x2, const chm_tensor *dx2,
                                 int64_t R) {
    chm_backend *be = m->be;
    int64_t S = m->E * a->cap, K = m->K;
    chm_tensor sr = MDL_VIEW(&a->slot_ref, 0, S);
    chm_tensor dg1 = MDL_VIEW(&g->dgates, 0, R * K, 1), dsg1 = MDL_VIEW(&g->dsg, 0, S, 1);
    chm_tensor dg2 = MDL_VIEW(&g->dgates, 0, R, K);
    MDL_OP(m, chm_fill(be, &g->dgates, 0));
    MDL_OP(m, chm_scatter_add_rows_bounded(be, &dg1, &dsg1, &sr, NULL, 1));
    MDL_OP(m, chm_fill(be, &g->dlogits, 0));
    MDL_OP(m, chm_router_topk_bwd(be, &g->dlogits, &dg2, &a->probs, &a->idx, CHM_ROUTER_SOFTMAX,
                                  true));
    /* total loss = ... + aux_weight * mean_layers(balance) + z_weight * mean_layers(z) */
    double s = m->gscale / (double)m->n_moe;
    MDL_OP(m, chm_moe_aux(be, &a->aux, &g->dlogits, &a->logits, &a->idx, s * m->cfg.moe.aux_weight,
                          s * m->cfg.moe.z_weight));
    return mdl_linear_bwd(m, mdl_w(m, ly->router), mdl_g(m, ly->router), &g->dlogits, x2, dx2, 1);
}

chm_status mdl_moe_bwd(chm_model *m, const mdl_layer *ly, mdl_moe_act *a,
                       const chm_tensor *xn, const chm_tensor *dout, const chm_tensor *dxn,
                       int64_t R) {
    int64_t S = m->E * a->cap, C = m->C;
    size_t mark = mdl_mark(m);
    moe_grads g;
    MDL_TRY(moe_grads_alloc(m, &g, R, a->cap));
    chm_tensor x2 = MDL_VIEW(xn, 0, R, C), dx2 = MDL_VIEW(dxn, 0, R, C);
    chm_tensor dout2 = MDL_VIEW(dout, 0, R, C);
    MDL_TRY(moe_experts_bwd(m, ly, a, &g, &dout2));
    chm_tensor st = MDL_VIEW(&a->slot_token, 0, S), dxe2 = MDL_VIEW(&g.dxe, 0, S, C);
    MDL_OP(m, chm_scatter_add_rows_bounded(m->be, &dx2, &dxe2, &st, NULL, (int)m->K));
    MDL_TRY(moe_router_bwd(m, ly, a, &g, &x2, &dx2, R));
    mdl_release(m, mark);
    return CHM_OK;
}
