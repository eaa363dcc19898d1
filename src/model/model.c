/*
 * model.c: creating and freeing a model, and the passes over the layers:
 * training step (forward + backward), evaluation, logits.
 *
 * A pass starts by rewinding the arena, then allocates as it goes: the loss
 * slots, the token ids (uploaded from the host), the residual stream, each
 * layer's saved activations, the heads' scratch. The backward allocates its
 * per-layer scratch above the saved activations and releases it after each
 * layer. chm_model_create runs a training step and a causal logits pass in
 * dry mode (no op runs, allocations are only counted) to size the arena at
 * the largest of their peaks: a real pass then never runs out, and nothing
 * is allocated in the step.
 *
 * Order of a training step: embedding -> layers -> final head (fused CE
 * forward + backward into d(x_L)) -> MTP modules forward with their fused
 * heads -> MTP backward (deepest first, into d(x_L)) -> layers backward ->
 * embedding backward; then one download of the loss slots. With a gradient
 * hook (chm_model_set_grad_hook) each stage of the backward reports the
 * gradient ranges it finished (grad_hook.c says which, and why then).
 *
 * Recomputation (m->recompute): every pass releases a layer's activations
 * right after its forward, keeping its output residual and (training
 * routing) its routing decisions, allocated below the layer's mark. The
 * backward releases the MTP modules' activations once their backward is done,
 * then per layer re-runs the forward (m->replay: no loss terms added twice)
 * above the saved residuals, runs the backward and releases both. The dry
 * run makes the same calls, so the arena is sized for this schedule.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Copy the dimensions of cfg into m and check what the model needs beyond the config's checks. */
chm_status mdl_dims(chm_model *m, const chm_config_model *cfg, int64_t T, chm_err *err) {
    m->cfg = *cfg;
    m->V = cfg->vocab, m->C = cfg->d_model, m->L = cfg->n_layers;
    m->H = cfg->heads, m->Hk = cfg->kv_heads, m->Dh = cfg->head_dim;
    m->Di = cfg->mamba.d_inner, m->N = cfg->mamba.d_state, m->W = cfg->mamba.d_conv;
    m->Rk = cfg->mamba.dt_rank, m->F = cfg->ffn_hidden;
    m->E = cfg->moe.experts, m->K = cfg->moe.top_k, m->Fe = cfg->moe.hidden;
    m->depth = cfg->mtp.depth;
    m->n_moe = m->n_mod = 0;
    for (int l = 0; l < cfg->n_layers; l++) {
        m->n_moe += cfg->moe_layer[l] && m->E > 0;
        m->n_mod += cfg->mod_layer[l];
    }
    if (m->L < 1 || m->L > CHM_CONFIG_MAX_LAYERS || m->V < 1 || m->C < 1)
        return CHM_ERR(err, CHM_ERR_CONFIG, "model: vocab, d_model and n_layers must be positive");
    if (cfg->n_attention > 0 && (m->Dh < 2 || m->Dh % 2 || m->Hk < 1 || m->H % m->Hk))
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "model: attention needs an even head_dim (RoPE) and kv_heads dividing "
                       "heads; got head_dim %lld, heads %lld, kv_heads %lld",
                       (long long)m->Dh, (long long)m->H, (long long)m->Hk);
    if (m->depth < 0 || m->depth > CHM_MODEL_MAX_MTP || (m->depth > 0 && m->depth >= T))
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "model: mtp.depth %lld must be in [0, %d] and below seq_len %lld",
                       (long long)m->depth, CHM_MODEL_MAX_MTP, (long long)T);
    if (m->n_moe > 0 && (m->K < 1 || m->K > m->E))
        return CHM_ERR(err, CHM_ERR_CONFIG, "model: moe.top_k %lld must be in [1, experts %lld]",
                       (long long)m->K, (long long)m->E);
    return CHM_OK;
}

/* Host arrays of a model that runs (sizes from the micro-batch shape). */
static chm_status host_alloc(chm_model *m, chm_err *err) {
    int64_t R = m->B * m->T;
    m->layers = calloc((size_t)m->L, sizeof *m->layers);
    m->mtp = calloc((size_t)(m->depth ? m->depth : 1), sizeof *m->mtp);
    m->acts = calloc((size_t)m->L, sizeof *m->acts);
    m->inner = calloc((size_t)m->L, sizeof *m->inner);
    m->mtp_acts = calloc((size_t)(m->depth ? m->depth : 1), sizeof *m->mtp_acts);
    m->resid = calloc((size_t)m->L + 1, sizeof *m->resid);
    m->host_ids = calloc((size_t)((2 + 2 * m->depth) * R), sizeof *m->host_ids);
    m->host_loss = calloc(MDL_LOSS_SLOTS, sizeof *m->host_loss);
    m->host_score = calloc((size_t)m->T, sizeof *m->host_score);
    m->host_idx = calloc((size_t)m->T, sizeof *m->host_idx);
    m->host_counts = calloc((size_t)(m->E ? m->E : 1), sizeof *m->host_counts);
    if (!m->layers || !m->mtp || !m->acts || !m->inner || !m->mtp_acts || !m->resid ||
        !m->host_ids || !m->host_loss || !m->host_score || !m->host_idx || !m->host_counts)
        return CHM_ERR(err, CHM_ERR_NOMEM, "model: no memory for its host tables");
    for (int l = 0; l < m->L; l++) m->acts[l].mod.inner = &m->inner[l];
    return CHM_OK;
}

/* Start a pass over B sequences of T tokens: rewind the arena, allocate the pass-wide tensors. */
static chm_status pass_begin(chm_model *m, int64_t B, int64_t T) {
    int64_t R = B * T, C = m->C;
    mdl_release(m, 0);
    if (!m->dry) MDL_TRY(mdl_moe_readbacks_drop(m));
    for (int l = 0; l < m->L; l++) /* routing tensors are allocated by the layers again */
        m->acts[l].mod.kept = m->acts[l].moe.kept = m->inner[l].moe.kept = false;
    m->B = B, m->T = T;
    int64_t rows = m->ce_rows < R ? m->ce_rows : R;
    MDL_TRY(MDL_ALLOC_STATS(m, &m->loss, MDL_LOSS_SLOTS));
    MDL_OP(m, chm_fill(m->be, &m->loss, 0));
    MDL_TRY(MDL_ALLOC_I32(m, &m->ids.in, R));
    MDL_TRY(MDL_ALLOC_I32(m, &m->ids.tgt, R));
    for (int k = 0; k < m->depth; k++) {
        MDL_TRY(MDL_ALLOC_I32(m, &m->ids.mtp_in[k], R));
        MDL_TRY(MDL_ALLOC_I32(m, &m->ids.mtp_tgt[k], R));
    }
    for (int l = 0; l <= m->L; l++) MDL_TRY(MDL_ALLOC(m, &m->resid[l], B, T, C));
    if (m->train) MDL_TRY(MDL_ALLOC(m, &m->dresid, B, T, C));
    MDL_TRY(MDL_ALLOC(m, &m->hn, B, T, C));
    MDL_TRY(MDL_ALLOC_STATS(m, &m->rstd_f, R));
    MDL_TRY(MDL_ALLOC(m, &m->logits, rows, m->V));
    if (m->cfg.n_mamba > 0) MDL_TRY(mdl_mamba_pass_begin(m));
    return MDL_ALLOC_STATS(m, &m->ce_loss, rows);
}

/*
 * Host ids [B, T+1] -> inputs, targets and per-depth MTP inputs/targets, checked against V
 * and uploaded. With targets false (logits), ids is [n] and only the inputs are used.
 */
static chm_status upload_ids(chm_model *m, const int32_t *ids, bool targets, chm_err *err) {
    int64_t B = m->B, T = m->T, R = B * T, D = targets ? m->depth : 0;
    int32_t *h = m->host_ids;
    for (int64_t i = 0; i < (targets ? B * (T + 1) : R); i++)
        if (ids[i] < 0 || ids[i] >= m->V)
            return CHM_ERR(
                err, CHM_ERR_INVALID_ARG,
                "model: token id %d at position %lld is outside the vocabulary [0, %lld)",
                (int)ids[i], (long long)i, (long long)m->V);
    int64_t stride = targets ? T + 1 : T;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const int32_t *row = ids + b * stride;
            h[b * T + t] = row[t];
            if (!targets) continue;
            h[R + b * T + t] = row[t + 1];
            for (int64_t k = 0; k < D; k++) {
                h[(2 + 2 * k) * R + b * T + t] = t + k + 1 <= T ? row[t + k + 1] : 0;
                h[(3 + 2 * k) * R + b * T + t] = t + k + 2 <= T ? row[t + k + 2] : -1;
            }
        }
    chm_status rc = chm_upload(m->be, &m->ids.in, h);
    if (rc == CHM_OK && targets) rc = chm_upload(m->be, &m->ids.tgt, h + R);
    for (int64_t k = 0; k < D && rc == CHM_OK; k++) {
        rc = chm_upload(m->be, &m->ids.mtp_in[k], h + (2 + 2 * k) * R);
        if (rc == CHM_OK) rc = chm_upload(m->be, &m->ids.mtp_tgt[k], h + (3 + 2 * k) * R);
    }
    if (rc != CHM_OK) return CHM_ERR(err, rc, "model: uploading token ids: %s", m->be->err.msg);
    return CHM_OK;
}

/*
 * Recomputation, training routing: allocate layer l's routing decisions (MoD idx, MoE slot_ref
 * and counts) before the layer's mark, so that they outlive its released activations for
 * chm_model_routing_digest and chm_model_expert_counts; the layer (and its replay) writes them.
 */
static chm_status keep_routing(chm_model *m, int l) {
    const mdl_layer *ly = &m->layers[l];
    mdl_layer_act *act = &m->acts[l];
    int64_t B = m->B, R = B * m->T;
    if (ly->mod) {
        int64_t k = mdl_mod_tokens(m, m->T);
        MDL_TRY(MDL_ALLOC_I32(m, &act->mod.idx, B, k));
        act->mod.kept = true;
        act = act->mod.inner;
        R = B * k;
    }
    if (!ly->moe) return CHM_OK;
    MDL_TRY(MDL_ALLOC_I32(m, &act->moe.slot_ref, m->E, mdl_moe_capacity(m, R)));
    MDL_TRY(MDL_ALLOC_I32(m, &act->moe.counts, m->E));
    act->moe.kept = true;
    return CHM_OK;
}

/* Layer l's forward from resid[l] into resid[l+1]; with recomputation its activations are
 * released at once (the backward replays it). */
static chm_status layer_fwd(chm_model *m, int l) {
    mdl_layer_act *act = &m->acts[l];
    act->x = m->resid[l];
    act->out = m->resid[l + 1];
    if (!m->recompute) return mdl_layer_fwd(m, &m->layers[l], act, m->B, m->T);
    if (m->routing == CHM_ROUTING_TRAIN) MDL_TRY(keep_routing(m, l));
    size_t mark = mdl_mark(m);
    MDL_TRY(mdl_layer_fwd(m, &m->layers[l], act, m->B, m->T));
    mdl_release(m, mark);
    return CHM_OK;
}

/* Embedding and every layer. */
static chm_status trunk_fwd(chm_model *m) {
    int64_t R = m->B * m->T;
    chm_tensor x0 = MDL_VIEW(&m->resid[0], 0, R, m->C);
    MDL_OP(m, chm_embedding_fwd(m->be, &x0, &m->ids.in, mdl_w(m, m->embed)));
    for (int l = 0; l < m->L; l++) MDL_TRY(layer_fwd(m, l));
    return CHM_OK;
}

/* The training-routing forward (and in training, the heads' fused backward). */
static chm_status pass_fwd(chm_model *m) {
    double scale = m->gscale / (double)(m->B * m->T);
    MDL_TRY(trunk_fwd(m));
    if (m->train) MDL_OP(m, chm_fill(m->be, &m->dresid, 0));
    MDL_TRY(mdl_head(m, m->final_norm, &m->resid[m->L], &m->hn, &m->rstd_f, &m->ids.tgt,
                     MDL_LOSS_CE, scale, m->train ? &m->dresid : NULL));
    m->mtp_mark = mdl_mark(m);
    for (int k = 0; k < m->depth; k++)
        MDL_TRY(mdl_mtp_fwd(m, k, k == 0 ? &m->resid[m->L] : &m->mtp_acts[k - 1].hk));
    return CHM_OK;
}

/*
 * Layer l's backward: dresid holds d(resid[l+1]) and becomes d(resid[l]). With recomputation
 * the layer's forward runs again first (rewriting resid[l+1] with the same values: nothing
 * reads it any more) and its activations are released after the backward.
 */
static chm_status layer_bwd(chm_model *m, int l) {
    mdl_layer_act *act = &m->acts[l];
    if (!m->recompute) return mdl_layer_bwd(m, &m->layers[l], act, &m->dresid);
    size_t mark = mdl_mark(m);
    m->replay = true;
    chm_status rc = mdl_layer_fwd(m, &m->layers[l], act, m->B, m->T);
    m->replay = false;
    MDL_TRY(rc);
    MDL_TRY(mdl_layer_bwd(m, &m->layers[l], act, &m->dresid));
    mdl_release(m, mark);
    return CHM_OK;
}

/* The backward; after each stage the gradient ranges it finished go to the hook (grad_hook.c). */
static chm_status pass_bwd(chm_model *m) {
    int64_t R = m->B * m->T;
    MDL_TRY(mdl_ready_report(m, MDL_STAGE_HEADS));
    for (int k = (int)m->depth - 1; k >= 0; k--) {
        const chm_tensor *h = k == 0 ? &m->resid[m->L] : &m->mtp_acts[k - 1].hk;
        const chm_tensor *dh = k == 0 ? &m->dresid : &m->mtp_acts[k - 1].dhk;
        MDL_TRY(mdl_mtp_bwd(m, k, h, dh));
        MDL_TRY(mdl_ready_report(m, mdl_stage_mtp(m, k)));
    }
    if (m->recompute) mdl_release(m, m->mtp_mark); /* their gradients are in dresid */
    for (int l = (int)m->L - 1; l >= 0; l--) {
        MDL_TRY(layer_bwd(m, l));
        MDL_TRY(mdl_ready_report(m, mdl_stage_layer(m, l)));
    }
    chm_tensor d0 = MDL_VIEW(&m->dresid, 0, R, m->C);
    MDL_OP(m, chm_embedding_bwd(m->be, mdl_g(m, m->embed), &d0, &m->ids.in));
    return mdl_ready_report(m, mdl_stage_embed(m));
}

/* A training (train) or evaluation pass over the model's B x T; ids NULL in a dry run. */
static chm_status run_pass(chm_model *m, const int32_t *ids, bool train, double grad_scale,
                           chm_model_loss *loss, chm_err *err) {
    m->routing = CHM_ROUTING_TRAIN;
    m->train = train;
    m->gscale = train ? grad_scale : 1.0;
    m->routed = false;
    m->ready_next = 0;
    m->hook_failed = false;
    chm_status rc = pass_begin(m, m->B, m->T);
    if (rc == CHM_OK && !m->dry) {
        rc = upload_ids(m, ids, true, err);
        if (rc != CHM_OK) return rc;
    }
    if (rc == CHM_OK) rc = pass_fwd(m);
    if (rc == CHM_OK && train) rc = pass_bwd(m);
    if (rc == CHM_OK && !m->dry) rc = mdl_loss_read(m, loss);
    if (rc != CHM_OK && m->hook_failed) return CHM_ERR(err, rc, "%s", m->hook_err.msg);
    if (rc != CHM_OK) return CHM_ERR(err, rc, "%s", m->be->err.msg);
    m->routed = !m->dry;
    return CHM_OK;
}

/* Refuse to run a description-only model. */
static chm_status need_backend(const chm_model *m, const char *what, chm_err *err) {
    if (!m) return CHM_ERR(err, CHM_ERR_INVALID_ARG, "%s: model is NULL", what);
    if (!m->be)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "%s: this model was created without a backend (description only)", what);
    return CHM_OK;
}

chm_status chm_model_forward_backward(chm_model *m, const int32_t *ids, double grad_scale,
                                      chm_model_loss *loss, chm_err *err) {
    MDL_TRY(need_backend(m, "forward_backward", err));
    if (!ids || !isfinite(grad_scale))
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "forward_backward: ids NULL or grad_scale not finite");
    return run_pass(m, ids, true, grad_scale, loss, err);
}

chm_status chm_model_eval_loss(chm_model *m, const int32_t *ids, chm_model_loss *loss,
                               chm_err *err) {
    MDL_TRY(need_backend(m, "eval_loss", err));
    if (!ids) return CHM_ERR(err, CHM_ERR_INVALID_ARG, "eval_loss: ids is NULL");
    return run_pass(m, ids, false, 1.0, loss, err);
}

/* Logits of hn rows [n,C] chunk by chunk into host doubles out [n,V] (a host read). */
static chm_status logits_out(chm_model *m, int64_t n, double *out) {
    int64_t V = m->V;
    for (int64_t r0 = 0; r0 < n; r0 += m->ce_rows) {
        int64_t rc = n - r0 < m->ce_rows ? n - r0 : m->ce_rows;
        chm_tensor lg = MDL_VIEW(&m->logits, 0, rc, V), hc = MDL_VIEW(&m->hn, r0 * m->C, rc, m->C);
        MDL_TRY(mdl_linear_fwd(m, &lg, &hc, mdl_w(m, m->lm_head), 0));
        if (!m->dry) MDL_TRY(mdl_download_f64(m->be, &lg, out + r0 * V));
    }
    return CHM_OK;
}

static chm_status final_norm(chm_model *m) {
    MDL_OP(m, chm_rmsnorm_fwd(m->be, &m->hn, &m->rstd_f, &m->resid[m->L], mdl_w(m, m->final_norm),
                              m->cfg.norm_eps));
    return CHM_OK;
}

/* Forward of one sequence of n tokens in `routing` and its logits (dry: sizing only). */
static chm_status logits_pass(chm_model *m, const int32_t *ids, int64_t n,
                              chm_model_routing routing, double *logits, chm_err *err) {
    int64_t B0 = m->B, T0 = m->T;
    m->routing = routing;
    m->train = false;
    m->gscale = 1.0;
    m->routed = false;
    chm_status rc = pass_begin(m, 1, n);
    if (rc == CHM_OK && !m->dry) {
        rc = upload_ids(m, ids, false, err);
        if (rc != CHM_OK) goto done;
    }
    if (rc == CHM_OK) rc = trunk_fwd(m);
    if (rc == CHM_OK) rc = final_norm(m);
    if (rc == CHM_OK) rc = logits_out(m, n, logits);
    if (rc != CHM_OK) rc = CHM_ERR(err, rc, "%s", m->be->err.msg);
done:
    m->B = B0, m->T = T0;
    return rc;
}

chm_status chm_model_logits(chm_model *m, const int32_t *ids, int64_t n, chm_model_routing routing,
                            double *logits, chm_err *err) {
    MDL_TRY(need_backend(m, "logits", err));
    if (!ids || !logits || n < 1 || n > m->T)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "logits: need ids and logits, and 1 <= n <= seq_len %lld (got n = %lld)",
                       (long long)m->T, (long long)n);
    return logits_pass(m, ids, n, routing, logits, err);
}

/* Choose the cross-entropy chunk: about 2^26 logits at a time (128 MiB in bf16), a multiple of
 * 128 rows when that many fit (the unembedding GEMMs run on tile multiples, and each chunk adds
 * a full pass over the [V,C] weight gradient: 333-row chunks cost chimera-1b ~45 ms a step on
 * an H100), at most the batch's rows. */
static int64_t auto_ce_rows(const chm_model *m, int64_t want) {
    int64_t R = m->B * m->T, rows = want > 0 ? want : ((int64_t)1 << 26) / m->V;
    if (want <= 0 && rows >= 128) rows -= rows % 128;
    return rows < 1 ? 1 : rows > R ? R : rows;
}

/*
 * Size the arena by dry runs of a training step and a causal logits pass,
 * then allocate it (only size it when the model has no backend: `chimera
 * plan` reads the size through chm_model_arena_bytes).
 */
static chm_status plan_arena(chm_model *m, chm_err *err) {
    m->dry = true;
    m->dry_used = m->dry_peak = 0;
    chm_status rc = run_pass(m, NULL, true, 1.0, NULL, err);
    if (rc == CHM_OK) rc = logits_pass(m, NULL, m->T, CHM_ROUTING_CAUSAL, NULL, err);
    m->dry = false;
    if (rc != CHM_OK || !m->be) return rc;
    return chm_arena_init(&m->arena, m->be, m->dry_peak, err);
}

chm_status chm_model_create(const chm_config_model *cfg, chm_backend *be,
                            const chm_model_options *opt, chm_model **out, chm_err *err) {
    if (!cfg || !opt || !out)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "model_create: cfg, opt and out are required");
    *out = NULL;
    if (opt->batch < 1 || opt->seq_len < 1 || !chm_dtype_is_float(opt->dtype))
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "model_create: need batch >= 1, seq_len >= 1 and dtype f32, f64, bf16 or "
                       "f16 (got %lld, %lld, %s)",
                       (long long)opt->batch, (long long)opt->seq_len, chm_dtype_name(opt->dtype));
    if (be && opt->dtype == CHM_F64 && !(be->caps & CHM_CAP_F64))
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "model_create: backend %s has no f64", be->name);
    chm_model *m = calloc(1, sizeof *m);
    if (!m) return CHM_ERR(err, CHM_ERR_NOMEM, "model_create: no memory");
    m->be = be;
    m->dt = opt->dtype;
    m->mdt = opt->dtype == CHM_BF16 || opt->dtype == CHM_F16 ? CHM_F32 : opt->dtype;
    m->B = opt->batch, m->T = opt->seq_len;
    /* debug: CHIMERA_DEBUG_RECOMPUTE=1 turns recomputation on for every model, so that any
     * existing test or `chimera verify` runs with it (tests/test_model_recompute.c) */
    const char *env = getenv("CHIMERA_DEBUG_RECOMPUTE");
    m->recompute = opt->recompute || (env && !strcmp(env, "1"));
    m->caps = be ? be->caps : opt->caps;
    env = getenv("CHIMERA_MOE_GROUPED"); /* read once here, not per MoE backward (moe.c) */
    m->moe_grouped = env && !strcmp(env, "1");
    chm_status rc = mdl_dims(m, cfg, m->T, err);
    if (rc == CHM_OK) rc = host_alloc(m, err);
    if (rc == CHM_OK) rc = mdl_params_build(m, err);
    if (rc == CHM_OK) rc = mdl_ready_plan(m, err);
    /* CHIMERA_CE_ROWS=n: the cross-entropy chunk where the options leave it to auto */
    env = getenv("CHIMERA_CE_ROWS");
    m->ce_rows = auto_ce_rows(m, opt->ce_chunk_rows > 0 ? opt->ce_chunk_rows
                                                         : env ? atoll(env) : 0);
    if (rc == CHM_OK && be) rc = mdl_params_alloc(m, err);
    if (rc == CHM_OK) rc = plan_arena(m, err);
    if (rc != CHM_OK) {
        chm_model_free(m);
        return rc;
    }
    *out = m;
    return CHM_OK;
}

void chm_model_free(chm_model *m) {
    if (!m) return;
    if (m->acts && m->inner && m->mtp_acts && m->host_counts && !m->dry)
        mdl_moe_readbacks_drop(m); /* frees the backend's slots; nothing to report */
    chm_arena_free(&m->arena);
    chm_buffer_free(m->pbuf);
    chm_buffer_free(m->gbuf);
    chm_buffer_free(m->cbuf);
    free(m->params);
    free(m->inits);
    free(m->layers);
    free(m->mtp);
    free(m->acts);
    free(m->inner);
    free(m->mtp_acts);
    free(m->resid);
    free(m->host_ids);
    free(m->host_loss);
    free(m->host_score);
    free(m->host_idx);
    free(m->host_counts);
    free(m->ready);
    free(m);
}

chm_backend *chm_model_backend(const chm_model *m) { return m->be; }
chm_dtype chm_model_dtype(const chm_model *m) { return m->dt; }
chm_dtype chm_model_master_dtype(const chm_model *m) { return m->mdt; }
bool chm_model_is_mixed(const chm_model *m) { return m->mdt != m->dt; }

const char *chm_model_precision_name(const chm_model *m) {
    if (m->dt == CHM_BF16) return "bf16 mixed precision (fp32 master)";
    if (m->dt == CHM_F16) return "f16 mixed precision (fp32 master)";
    return chm_dtype_name(m->dt);
}
const chm_config_model *chm_model_config(const chm_model *m) { return &m->cfg; }
int64_t chm_model_batch(const chm_model *m) { return m->B; }
int64_t chm_model_seq_len(const chm_model *m) { return m->T; }
size_t chm_model_arena_bytes(const chm_model *m) {
    return m->arena.buf ? m->arena.buf->size : m->be ? 0 : m->dry_peak;
}
int chm_model_moe_layers(const chm_model *m) { return m->n_moe; }

/* The MoE activations of trunk layer l (the inner layer's under MoD). */
static const mdl_moe_act *moe_act(const chm_model *m, int l) {
    return m->layers[l].mod ? &m->inner[l].moe : &m->acts[l].moe;
}

chm_status chm_model_expert_counts(chm_model *m, int32_t *counts, int64_t *dropped, chm_err *err) {
    MDL_TRY(need_backend(m, "expert_counts", err));
    if (!m->routed)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "expert_counts: no training-routing pass has run since the last other pass");
    int64_t drop = 0;
    for (int l = 0, i = 0; l < m->L; l++) {
        if (!m->layers[l].moe) continue;
        const mdl_moe_act *a = moe_act(m, l);
        int32_t *c = counts + (int64_t)i++ * m->E;
        chm_status rc = chm_download(m->be, &a->counts, c);
        if (rc != CHM_OK) return CHM_ERR(err, rc, "expert_counts: %s", m->be->err.msg);
        int64_t rows = m->layers[l].mod ? m->inner[l].B * m->inner[l].T : m->B * m->T;
        drop += rows * m->K;
        for (int64_t e = 0; e < m->E; e++) drop -= c[e];
    }
    if (dropped) *dropped = drop;
    return CHM_OK;
}

/* Fold the bytes of an I32 tensor into an FNV-1a digest (a download). */
static chm_status digest_tensor(chm_model *m, const chm_tensor *t, uint64_t *h) {
    int64_t n = chm_tensor_numel(t);
    int32_t *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
    if (!buf) return CHM_ERR(&m->be->err, CHM_ERR_NOMEM, "routing_digest: no memory");
    chm_status rc = chm_download(m->be, t, buf);
    for (int64_t i = 0; rc == CHM_OK && i < n; i++) {
        *h ^= (uint32_t)buf[i];
        *h *= 0x100000001B3ull;
    }
    free(buf);
    return rc;
}

chm_status chm_model_routing_digest(chm_model *m, uint64_t *digest, chm_err *err) {
    MDL_TRY(need_backend(m, "routing_digest", err));
    if (!m->routed)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "routing_digest: no training-routing pass to digest");
    uint64_t h = 0xCBF29CE484222325ull;
    chm_status rc = CHM_OK;
    for (int l = 0; l < m->L && rc == CHM_OK; l++) {
        if (m->layers[l].mod) rc = digest_tensor(m, &m->acts[l].mod.idx, &h);
        if (rc == CHM_OK && m->layers[l].moe) rc = digest_tensor(m, &moe_act(m, l)->slot_ref, &h);
    }
    if (rc != CHM_OK) return CHM_ERR(err, rc, "routing_digest: %s", m->be->err.msg);
    *digest = h;
    return CHM_OK;
}
