/*
 * config_schema.c: the table of every config key (type, place in chm_config,
 * default, range) and the look-ups on it. The loader, the unknown-key check,
 * the suggestions and the writer all read this one table; configs/test.yaml
 * documents the same keys for people.
 */
#include "config_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* "No upper bound" for integer keys (larger than any sane count, exact in a double). */
#define NOMAX 1e15

static const char *const schedule_names[] = {"cosine", "linear", "wsd", "constant", NULL};
static const char *const backend_names[] = {"auto", "cpu", "vulkan", "cuda", NULL};
static const char *const precision_names[] = {"auto", "f32", "bf16", NULL};
static const char *const save_error_names[] = {"stop", "continue", NULL};

/* Closed range [lo, hi]. */
#define F(path_, type_, member_, req_, def_, lo_, hi_)                                     \
    {.path = path_, .type = type_, .off = offsetof(chm_config, member_), .required = req_, \
     .def = def_, .lo = lo_, .hi = hi_}
/* Number with an open lower end: (lo, hi]. */
#define FPOS(path_, member_, req_, def_, hi_) \
    {.path = path_, .type = CFG_F64, .off = offsetof(chm_config, member_), .required = req_, \
     .def = def_, .lo = 0, .hi = hi_, .lo_open = true}
#define ENUM(path_, member_, def_, names_) \
    {.path = path_, .type = CFG_ENUM, .off = offsetof(chm_config, member_), .def = def_, \
     .names = names_}

/* Order matters: it is the order of checks (after the unknown-key pass) and of the output. */
const cfg_field chm_cfg_fields[] = {
    F("model.vocab", CFG_INT, model.vocab, true, NULL, 1, 2147483647),
    F("model.d_model", CFG_INT, model.d_model, true, NULL, 1, 1 << 20),
    F("model.n_layers", CFG_INT, model.n_layers, true, NULL, 1, CHM_CONFIG_MAX_LAYERS),
    F("model.pattern", CFG_PATTERN, model.pattern, true, NULL, 1, CHM_CONFIG_MAX_LAYERS),
    F("model.heads", CFG_INT, model.heads, true, NULL, 1, 1 << 16),
    F("model.kv_heads", CFG_INT, model.kv_heads, false, NULL, 1, 1 << 16),
    F("model.head_dim", CFG_INT, model.head_dim, false, NULL, 1, 1 << 16),
    FPOS("model.rope_theta", model.rope_theta, false, "10000", INFINITY),
    FPOS("model.norm_eps", model.norm_eps, false, "1e-5", 1),
    F("model.mamba.d_state", CFG_INT, model.mamba.d_state, false, "16", 1, 1024),
    F("model.mamba.d_conv", CFG_INT, model.mamba.d_conv, false, "4", 1, 64),
    F("model.mamba.expand", CFG_INT, model.mamba.expand, false, "2", 1, 64),
    F("model.mamba.dt_rank", CFG_DTRANK, model.mamba.dt_rank, false, "auto", 1, 1 << 20),
    F("model.ffn.hidden", CFG_INT, model.ffn_hidden, false, NULL, 1, 1 << 24),
    F("model.moe.experts", CFG_INT, model.moe.experts, false, "0", 0, 4096),
    F("model.moe.top_k", CFG_INT, model.moe.top_k, false, "2", 1, 4096),
    F("model.moe.every", CFG_INT, model.moe.every, false, "1", 1, CHM_CONFIG_MAX_LAYERS),
    FPOS("model.moe.capacity_factor", model.moe.capacity_factor, false, "1.25", INFINITY),
    F("model.moe.aux_weight", CFG_F64, model.moe.aux_weight, false, "0.01", 0, INFINITY),
    F("model.moe.z_weight", CFG_F64, model.moe.z_weight, false, "0.001", 0, INFINITY),
    F("model.moe.hidden", CFG_INT, model.moe.hidden, false, NULL, 1, 1 << 24),
    F("model.mod.layers", CFG_LAYERS, model.mod, false, "[]", 0, CHM_CONFIG_MAX_LAYERS - 1),
    FPOS("model.mod.capacity", model.mod.capacity, false, "0.5", 1),
    F("model.mod.aux_weight", CFG_F64, model.mod.aux_weight, false, "0.01", 0, INFINITY),
    F("model.mtp.depth", CFG_INT, model.mtp.depth, false, "0", 0, 16),
    F("model.mtp.weight", CFG_F64, model.mtp.weight, false, "0.3", 0, INFINITY),
    F("model.tie_embeddings", CFG_BOOL, model.tie_embeddings, false, "true", 0, 0),
    F("train.micro_batch", CFG_INT, train.micro_batch, true, NULL, 1, 1 << 16),
    F("train.seq_len", CFG_INT, train.seq_len, true, NULL, 1, 1 << 24),
    F("train.grad_accum", CFG_INT, train.grad_accum, false, "1", 1, 1 << 16),
    F("train.steps", CFG_I64, train.steps, false, NULL, 1, NOMAX),
    F("train.tokens", CFG_TOKENS, train.tokens, false, NULL, 1, 1e18),
    FPOS("train.lr", train.lr, true, NULL, INFINITY),
    F("train.min_lr", CFG_F64, train.min_lr, false, NULL, 0, INFINITY),
    F("train.warmup", CFG_I64, train.warmup, false, "0", 0, NOMAX),
    ENUM("train.schedule", train.schedule, "cosine", schedule_names),
    F("train.decay_frac", CFG_F64, train.decay_frac, false, "0.2", 0, 1),
    F("train.weight_decay", CFG_F64, train.weight_decay, false, "0.1", 0, INFINITY),
    {.path = "train.betas", .type = CFG_BETAS, .off = offsetof(chm_config, train.betas),
     .def = "[0.9, 0.95]", .lo = 0, .hi = 1, .hi_open = true},
    FPOS("train.eps", train.eps, false, "1e-8", INFINITY),
    F("train.clip", CFG_F64, train.clip, false, "1.0", 0, INFINITY),
    F("train.seed", CFG_I64, train.seed, false, "1337", 0, NOMAX),
    F("train.eval_every", CFG_I64, train.eval_every, false, "100", 0, NOMAX),
    F("train.eval_batches", CFG_INT, train.eval_batches, false, "10", 1, 1 << 20),
    F("train.save_every", CFG_I64, train.save_every, false, "0", 0, NOMAX),
    F("train.log_every", CFG_I64, train.log_every, false, "10", 1, NOMAX),
    ENUM("train.on_save_error", train.on_save_error, "stop", save_error_names),
    F("train.comm_bucket_mb", CFG_F64, train.comm_bucket_mb, false, "25", 0, 1 << 20),
    F("train.recompute", CFG_BOOL, train.recompute, false, "false", 0, 0),
    F("train.out_dir", CFG_STR, train.out_dir, false, "runs/chimera", 1, 0),
    F("data.train", CFG_STR, data.train, false, "builtin", 1, 0),
    F("data.val", CFG_STR, data.val, false, "\"\"", 0, 0),
    F("data.tokenizer", CFG_STR, data.tokenizer, false, "byte", 1, 0),
    ENUM("backend", backend, "auto", backend_names),
    ENUM("precision", precision, "auto", precision_names),
    F("warnings", CFG_BOOL, warnings, false, "true", 0, 0),
};
const int chm_cfg_n_fields = (int)(sizeof chm_cfg_fields / sizeof chm_cfg_fields[0]);
_Static_assert(sizeof chm_cfg_fields / sizeof chm_cfg_fields[0] <= CFG_MAX_FIELDS,
               "raise CFG_MAX_FIELDS");
/* CFG_ENUM stores through an int. */
_Static_assert(sizeof(chm_config_schedule) == sizeof(int) &&
                   sizeof(chm_config_backend) == sizeof(int) &&
                   sizeof(chm_config_precision) == sizeof(int) &&
                   sizeof(chm_config_save_error) == sizeof(int),
               "enums are stored as int");

int chm_cfg_field_index(const char *path) {
    for (int i = 0; i < chm_cfg_n_fields; i++)
        if (!strcmp(chm_cfg_fields[i].path, path)) return i;
    return -1;
}

const cfg_field *chm_cfg_field(const char *path) {
    int i = chm_cfg_field_index(path);
    return i < 0 ? NULL : &chm_cfg_fields[i];
}

/* If `path` lies below `section`, the component right after it (its length in *len). */
static const char *next_component(const char *path, const char *section, size_t *len) {
    size_t n = strlen(section);
    if (n && (strncmp(path, section, n) != 0 || path[n] != '.')) return NULL;
    const char *p = n ? path + n + 1 : path;
    const char *dot = strchr(p, '.');
    *len = dot ? (size_t)(dot - p) : strlen(p);
    return p;
}

bool chm_cfg_is_section(const char *path) {
    size_t len;
    for (int i = 0; i < chm_cfg_n_fields; i++)
        if (next_component(chm_cfg_fields[i].path, path, &len)) return true;
    return false;
}

int chm_cfg_children(const char *section, const char **names, int max) {
    /* Names point into a static buffer of components: one slot per field is enough. */
    static _Thread_local char buf[CFG_MAX_FIELDS][32];
    int n = 0;
    for (int i = 0; i < chm_cfg_n_fields && n < max; i++) {
        size_t len;
        const char *p = next_component(chm_cfg_fields[i].path, section, &len);
        if (!p || len >= sizeof buf[0]) continue;
        bool seen = false;
        for (int j = 0; j < n && !seen; j++)
            seen = strlen(names[j]) == len && !strncmp(names[j], p, len);
        if (seen) continue;
        memcpy(buf[n], p, len);
        buf[n][len] = 0;
        names[n] = buf[n];
        n++;
    }
    return n;
}

/* "in [lo, hi]", ">= lo", "> lo", ... for numbers printed with %g. */
static void range_text(const cfg_field *f, char *buf, size_t size) {
    bool has_hi = isfinite(f->hi) && f->hi < NOMAX;
    if (!has_hi)
        snprintf(buf, size, "%s %.10g", f->lo_open ? ">" : ">=", f->lo);
    else
        snprintf(buf, size, "in %c%.10g, %.10g%c", f->lo_open ? '(' : '[', f->lo, f->hi,
                 f->hi_open ? ')' : ']');
}

void chm_cfg_expected(const cfg_field *f, char *buf, size_t size) {
    char r[96];
    range_text(f, r, sizeof r);
    switch (f->type) {
    case CFG_INT:
    case CFG_I64: snprintf(buf, size, "an integer %s", r); break;
    case CFG_F64: snprintf(buf, size, "a number %s", r); break;
    case CFG_BOOL: snprintf(buf, size, "true or false"); break;
    case CFG_STR: snprintf(buf, size, "%s", f->lo > 0 ? "a non-empty string" : "a string"); break;
    case CFG_ENUM: {
        size_t n = (size_t)snprintf(buf, size, "one of");
        for (int i = 0; f->names[i] && n < size; i++)
            n += (size_t)snprintf(buf + n, size - n, "%s %s", i ? "," : "", f->names[i]);
        break;
    }
    case CFG_TOKENS:
        snprintf(buf, size, "a token count %s (an integer, or a string like \"100B\" with a K, M, "
                            "B or T suffix)", r);
        break;
    case CFG_DTRANK: snprintf(buf, size, "\"auto\" or an integer %s", r); break;
    case CFG_LAYERS: snprintf(buf, size, "a list of layer indices like [1, 3]"); break;
    case CFG_BETAS: snprintf(buf, size, "a list of two numbers %s, like [0.9, 0.95]", r); break;
    case CFG_PATTERN:
        snprintf(buf, size, "a string of 'A' (attention) and 'M' (mamba), 1 to %d letters",
                 CHM_CONFIG_MAX_LAYERS);
        break;
    }
}

const char *chm_config_schedule_name(chm_config_schedule s) {
    return (unsigned)s < 4 ? schedule_names[s] : "?";
}

const char *chm_config_backend_name(chm_config_backend b) {
    return (unsigned)b < 4 ? backend_names[b] : "?";
}

const char *chm_config_precision_name(chm_config_precision p) {
    return (unsigned)p < 3 ? precision_names[p] : "?";
}

const char *chm_config_mixer_name(chm_config_mixer m) {
    return m == CHM_CONFIG_MIXER_ATTENTION ? "attention"
           : m == CHM_CONFIG_MIXER_MAMBA   ? "mamba"
                                           : "?";
}
