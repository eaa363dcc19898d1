/*
 * config_json.c: the resolved model config as compact JSON, stored as the
 * "chimera.config" metadata of every model.safetensors (checkpoints and
 * `chimera model --dump`) so that tools/torch_reference.py can rebuild the
 * model from the weights file alone (chimera/model.h).
 */
#include <jansson.h>

#include "chimera/model.h"

chm_status chm_model_config_json(const chm_config_model *c, char **json, chm_err *err) {
    json_t *moe = json_array(), *mod = json_array();
    char mixers[CHM_CONFIG_MAX_LAYERS + 1] = {0};
    for (int l = 0; l < c->n_layers; l++) {
        mixers[l] = (char)c->mixer[l];
        json_array_append_new(moe, json_boolean(c->moe_layer[l] && c->moe.experts > 0));
        json_array_append_new(mod, json_boolean(c->mod_layer[l]));
    }
    /* json_pack steals moe and mod ("o"), also on failure. */
    json_t *j = json_pack(
        "{s:i,s:i,s:i,s:s,s:s,s:i,s:i,s:i,s:f,s:f,s:{s:i,s:i,s:i,s:i,s:i},s:i,"
        "s:{s:i,s:i,s:i,s:f,s:f,s:f,s:o},s:{s:o,s:f,s:f},s:{s:i,s:f},s:b}",
        "vocab", c->vocab, "d_model", c->d_model, "n_layers", c->n_layers, "mixers", mixers,
        "pattern", c->pattern, "heads", c->heads, "kv_heads", c->kv_heads, "head_dim", c->head_dim,
        "rope_theta", c->rope_theta, "norm_eps", c->norm_eps, "mamba", "d_state", c->mamba.d_state,
        "d_conv", c->mamba.d_conv, "expand", c->mamba.expand, "dt_rank", c->mamba.dt_rank,
        "d_inner", c->mamba.d_inner, "ffn_hidden", c->ffn_hidden, "moe", "experts", c->moe.experts,
        "top_k", c->moe.top_k, "hidden", c->moe.hidden, "capacity_factor", c->moe.capacity_factor,
        "aux_weight", c->moe.aux_weight, "z_weight", c->moe.z_weight, "layers", moe, "mod",
        "layers", mod, "capacity", c->mod.capacity, "aux_weight", c->mod.aux_weight, "mtp", "depth",
        c->mtp.depth, "weight", c->mtp.weight, "tie_embeddings", c->tie_embeddings);
    *json = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(j);
    if (!*json) return CHM_ERR(err, CHM_ERR_NOMEM, "model config: cannot build the JSON");
    return CHM_OK;
}
