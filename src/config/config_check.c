/*
 * config_check.c: the checks that involve more than one key (pattern vs
 * n_layers, heads vs d_model, top_k vs experts, mod layers vs n_layers, steps
 * vs tokens, ...) and the values derived from the keys (defaults that depend
 * on other keys, the per-layer tables, token counts). Runs after every key has
 * been read and range-checked on its own.
 */
#include "config_internal.h"

#include <stdio.h>
#include <string.h>

static bool given(const cfg_ctx *c, const char *path) {
    int i = chm_cfg_field_index(path);
    return i >= 0 && c->given[i];
}

static chm_status check_shape(cfg_ctx *c) {
    chm_config_model *m = &c->cfg->model;
    int plen = (int)strlen(m->pattern);
    if (m->n_layers % plen)
        return chm_cfg_fail_path(c, "model.pattern",
                                 "expected a pattern whose length divides model.n_layers (%d), "
                                 "found '%s' of length %d",
                                 m->n_layers, m->pattern, plen);
    if (m->d_model % m->heads)
        return chm_cfg_fail_path(c, "model.heads",
                                 "expected a divisor of model.d_model (%d), found %d (%d %% %d = "
                                 "%d)",
                                 m->d_model, m->heads, m->d_model, m->heads,
                                 m->d_model % m->heads);
    if (!given(c, "model.kv_heads")) m->kv_heads = m->heads;
    if (m->heads % m->kv_heads)
        return chm_cfg_fail_path(c, "model.kv_heads",
                                 "expected a divisor of model.heads (%d) for grouped-query "
                                 "attention, found %d",
                                 m->heads, m->kv_heads);
    if (!given(c, "model.head_dim")) {
        /* the derived width obeys the key's own range, so that a written config loads back */
        if (m->d_model / m->heads > 1 << 16)
            return chm_cfg_fail_path(c, "model.heads",
                                     "expected at least %d heads so that the derived "
                                     "model.head_dim (d_model / heads) stays within 65536, "
                                     "found %d (head_dim %d); or set model.head_dim",
                                     (m->d_model + (1 << 16) - 1) / (1 << 16), m->heads,
                                     m->d_model / m->heads);
        m->head_dim = m->d_model / m->heads;
    }
    return CHM_OK;
}

static chm_status check_moe(cfg_ctx *c) {
    const chm_config_model *m = &c->cfg->model;
    if (m->moe.experts == 0) return CHM_OK;
    if (m->moe.top_k > m->moe.experts)
        return chm_cfg_fail_path(c, "model.moe.top_k",
                                 "expected an integer in [1, %d] (at most model.moe.experts), "
                                 "found %d",
                                 m->moe.experts, m->moe.top_k);
    if (m->moe.every > m->n_layers)
        return chm_cfg_fail_path(c, "model.moe.every",
                                 "expected an integer in [1, %d] (at most model.n_layers, or no "
                                 "layer gets experts), found %d",
                                 m->n_layers, m->moe.every);
    return CHM_OK;
}

/* Each mixture-of-depths layer index below n_layers and listed once. */
static chm_status check_mod(cfg_ctx *c) {
    const chm_config_model *m = &c->cfg->model;
    const chm_ynode *list = chm_ynode_find(c->root, "model.mod.layers", NULL);
    for (int i = 0; i < m->mod.n_layers; i++) {
        char path[64];
        snprintf(path, sizeof path, "model.mod.layers[%d]", i);
        const chm_ynode *at = list && list->kind == CHM_YNODE_LIST ? list->kids[i] : list;
        int layer = m->mod.layers[i];
        if (layer >= m->n_layers)
            return chm_cfg_fail(c, at, false, path, CHM_ERR_CONFIG,
                                "expected a layer index in [0, %d) (below model.n_layers), "
                                "found %d",
                                m->n_layers, layer);
        for (int j = 0; j < i; j++)
            if (m->mod.layers[j] == layer)
                return chm_cfg_fail(c, at, false, path, CHM_ERR_CONFIG,
                                    "expected each layer once, found %d again (also at [%d])",
                                    layer, j);
    }
    return CHM_OK;
}

static chm_status check_train(cfg_ctx *c) {
    chm_config_train *t = &c->cfg->train;
    bool steps = given(c, "train.steps"), tokens = given(c, "train.tokens");
    if (steps && tokens) {
        char where[400];
        chm_ynode_where(chm_ynode_find(c->root, "train.steps", NULL), c->name, false, where,
                        sizeof where);
        return chm_cfg_fail_path(c, "train.tokens",
                                 "expected either train.steps or train.tokens, found both "
                                 "(train.steps is at %s; an empty value such as --set "
                                 "train.steps= removes one)",
                                 where);
    }
    if (!steps && !tokens)
        return chm_cfg_fail_path(c, "train.steps",
                                 "missing required key: expected train.steps or train.tokens "
                                 "(one of them), found neither");
    if (!given(c, "train.min_lr")) t->min_lr = t->lr / 10;
    if (t->min_lr > t->lr)
        return chm_cfg_fail_path(c, "train.min_lr",
                                 "expected a number in [0, %g] (at most train.lr), found %g",
                                 t->lr, t->min_lr);
    return CHM_OK;
}

static chm_status check_data(cfg_ctx *c) {
    const chm_config *cfg = c->cfg;
    if (!strcmp(cfg->data.tokenizer, "byte") && cfg->model.vocab < 256)
        return chm_cfg_fail_path(c, "model.vocab",
                                 "expected an integer >= 256 (data.tokenizer is \"byte\": 256 "
                                 "byte tokens plus specials), found %d",
                                 cfg->model.vocab);
    return CHM_OK;
}

/* Widths that default to a function of d_model. */
static void derive_widths(cfg_ctx *c) {
    chm_config_model *m = &c->cfg->model;
    m->mamba.dt_rank_auto = m->mamba.dt_rank == 0;
    if (m->mamba.dt_rank_auto) m->mamba.dt_rank = (m->d_model + 15) / 16;
    m->mamba.d_inner = m->mamba.expand * m->d_model;
    if (!given(c, "model.ffn.hidden")) {
        /* SwiGLU keeps a dense FFN's parameters with 8/3 C, rounded up to a multiple of 64. */
        int h = (8 * m->d_model + 2) / 3;
        m->ffn_hidden = (h + 63) / 64 * 64;
    }
    if (!given(c, "model.moe.hidden")) m->moe.hidden = m->ffn_hidden;
}

static void derive_layers(chm_config_model *m) {
    int plen = (int)strlen(m->pattern);
    m->n_attention = m->n_mamba = m->n_moe = 0;
    for (int i = 0; i < m->n_layers; i++) {
        m->mixer[i] = (chm_config_mixer)m->pattern[i % plen];
        m->moe_layer[i] = m->moe.experts > 0 && (i + 1) % m->moe.every == 0;
        m->mod_layer[i] = false;
        m->n_attention += m->mixer[i] == CHM_CONFIG_MIXER_ATTENTION;
        m->n_mamba += m->mixer[i] == CHM_CONFIG_MIXER_MAMBA;
        m->n_moe += m->moe_layer[i];
    }
    for (int i = 0; i < m->mod.n_layers; i++) m->mod_layer[m->mod.layers[i]] = true;
}

static void derive_steps(chm_config_train *t) {
    t->tokens_per_step = (int64_t)t->micro_batch * t->seq_len * t->grad_accum;
    int64_t per = t->tokens_per_step;
    t->total_steps = t->steps ? t->steps : (t->tokens + per - 1) / per;
}

chm_status chm_cfg_resolve(cfg_ctx *c) {
    chm_status rc;
    if ((rc = check_shape(c)) || (rc = check_moe(c)) || (rc = check_mod(c)) ||
        (rc = check_train(c)) || (rc = check_data(c)))
        return rc;
    derive_widths(c);
    derive_layers(&c->cfg->model);
    derive_steps(&c->cfg->train);
    return CHM_OK;
}
