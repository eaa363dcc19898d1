/*
 * flops.c: parameter counts and FLOPs per token of a configuration.
 *
 * Counts come from the parameter table itself (a model built without a
 * backend), so they cannot drift from what is allocated. "Active" removes
 * the share of the expert weights a token does not use: (E - K) / E of them.
 * FLOPs per token count 2 per multiply-add of every matmul a token takes
 * part in, plus attention's scores and weighted sums at the average causal
 * context (T+1)/2, plus the scan's ~9 FLOPs per channel and state (exp,
 * two multiply-adds, the output dot product, and their share of the
 * softplus/gating); norms, activations and the router's softmax are left
 * out (under 1% at the sizes we train). A mixture-of-depths layer runs for
 * k/T of the tokens, over a context of k. Training is 3x the forward (the
 * backward costs about twice the forward) of the trunk plus the MTP modules.
 */
#include <math.h>
#include <string.h>

#include "model_internal.h"

/* FLOPs per token of one layer's mixer and FFN at context T (no MoD factor). */
static double layer_flops(const chm_model *m, char mixer, bool moe, double T) {
    double C = (double)m->C, f = 0;
    if (mixer == 'A') {
        double hd = (double)(m->H * m->Dh), kd = (double)(m->Hk * m->Dh);
        f += 2 * C * (hd + 2 * kd) + 2 * hd * C; /* q, k, v, o projections */
        f += 2 * 2 * hd * (T + 1) / 2;           /* scores and weighted sum, causal */
    } else {
        double Di = (double)m->Di, N = (double)m->N;
        f += 2 * C * 2 * Di + 2 * (double)m->W * Di;                    /* in_proj, conv */
        f += 2 * Di * ((double)m->Rk + 2 * N) + 2 * (double)m->Rk * Di; /* x_proj, dt_proj */
        f += 9 * Di * N + 2 * Di * C;                                   /* scan, out_proj */
    }
    if (moe)
        f += 2 * C * (double)m->E + (double)m->K * 2 * 3 * C * (double)m->Fe;
    else
        f += 2 * 3 * C * (double)m->F;
    return f;
}

/* Forward FLOPs per token of the trunk and head at sequence length T. */
static double trunk_flops(const chm_model *m, int64_t T) {
    double f = 2 * (double)m->C * (double)m->V; /* unembedding */
    for (int l = 0; l < m->L; l++) {
        const mdl_layer *ly = &m->layers[l];
        if (!ly->mod) {
            f += layer_flops(m, ly->mixer, ly->moe, (double)T);
            continue;
        }
        double k = ceil(m->cfg.mod.capacity * (double)T);
        k = k < 1 ? 1 : k > (double)T ? (double)T : k;
        f += 2 * (double)m->C + k / (double)T * layer_flops(m, ly->mixer, ly->moe, k);
    }
    return f;
}

chm_status chm_model_stats_compute(const chm_config_model *cfg, int64_t seq_len,
                                   chm_model_stats *st, chm_err *err) {
    chm_model_options o = {.dtype = CHM_F32, .batch = 1, .seq_len = seq_len};
    chm_model *m;
    MDL_TRY(chm_model_create(cfg, NULL, &o, &m, err));
    chm_model_stats s = {0};
    int64_t experts = 0;
    for (int i = 0; i < m->n_params; i++) {
        const chm_model_param *p = &m->params[i];
        s.params_total += p->numel;
        if (strstr(p->name, ".ffn.experts.")) experts += p->numel;
        if (!strcmp(p->name, "embed.weight") || !strcmp(p->name, "lm_head.weight"))
            s.params_embedding += p->numel;
        if (!strncmp(p->name, "mtp.", 4)) s.params_mtp += p->numel;
    }
    s.params_active = s.params_total - (m->E ? experts / m->E * (m->E - m->K) : 0);
    s.flops_forward = trunk_flops(m, seq_len);
    double mtp = 2 * 2 * (double)(m->C * m->C) +
                 layer_flops(m, cfg->pattern[0], false, (double)seq_len) +
                 2 * (double)m->C * (double)m->V;
    s.flops_train = 3 * (s.flops_forward + (double)m->depth * mtp);
    chm_model_free(m);
    *st = s;
    return CHM_OK;
}
