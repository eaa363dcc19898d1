/*
 * chimera/config.h: the run configuration (model shape, training schedule, data,
 * backend), loaded from YAML with libyaml, overridden by "key.path=value"
 * strings, checked against a schema and resolved: defaults and derived values
 * are filled in, so the rest of chimera reads plain numbers and never YAML.
 *
 * Every key, its default and its range is documented in configs/test.yaml.
 * Errors come back as one message "WHERE: key.path: expected X, found Y" (plus
 * a hint where one helps), WHERE being "file:line:col" (1-based, at the
 * offending key or value) or "--set key.path" for an override.
 * Codes: CHM_ERR_IO (cannot read the file), CHM_ERR_PARSE (YAML syntax),
 * CHM_ERR_CONFIG (unknown key, wrong type, out of range, missing, inconsistent,
 * malformed --set), CHM_ERR_NOMEM.
 * Dimension letters (tensor.h): V vocab, C d_model, L layers, H heads, N d_state,
 * E experts, K top-k, B micro batch, T sequence length.
 */
#ifndef CHIMERA_CONFIG_H
#define CHIMERA_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "chimera/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most layers a model may have (per-layer arrays below are this long). */
#define CHM_CONFIG_MAX_LAYERS 256

/* The mixer of one layer; the values are the letters of model.pattern. */
typedef enum chm_config_mixer {
    CHM_CONFIG_MIXER_ATTENTION = 'A',
    CHM_CONFIG_MIXER_MAMBA = 'M'
} chm_config_mixer;

/* train.schedule: the learning-rate curve after warmup. */
typedef enum chm_config_schedule {
    CHM_CONFIG_SCHEDULE_COSINE,   /* cosine from lr down to min_lr */
    CHM_CONFIG_SCHEDULE_LINEAR,   /* linear from lr down to min_lr */
    CHM_CONFIG_SCHEDULE_WSD,      /* warmup-stable-decay: lr, then linear to min_lr over the
                                     last decay_frac of the steps */
    CHM_CONFIG_SCHEDULE_CONSTANT  /* lr after warmup */
} chm_config_schedule;

/* train.on_save_error: what a failed checkpoint save (disk full, I/O error) does. Either way
 * the failed save leaves no partial checkpoint and the previous one stays intact. */
typedef enum chm_config_save_error {
    CHM_CONFIG_SAVE_ERROR_STOP,     /* stop the run with the error (exit nonzero) */
    CHM_CONFIG_SAVE_ERROR_CONTINUE  /* warn, keep training, try again at the next save */
} chm_config_save_error;

/* backend: which backend runs the model (names as for chm_backend_open). */
typedef enum chm_config_backend {
    CHM_CONFIG_BACKEND_AUTO,
    CHM_CONFIG_BACKEND_CPU,
    CHM_CONFIG_BACKEND_VULKAN,
    CHM_CONFIG_BACKEND_CUDA
} chm_config_backend;

/* precision: dtype of weights and activations; auto = bf16 on cuda, f32 elsewhere. */
typedef enum chm_config_precision {
    CHM_CONFIG_PRECISION_AUTO,
    CHM_CONFIG_PRECISION_F32,
    CHM_CONFIG_PRECISION_BF16
} chm_config_precision;

/* model.mamba: the Mamba-1 mixer. */
typedef struct chm_config_mamba {
    int d_state;        /* N */
    int d_conv;         /* width of the causal depthwise convolution */
    int expand;         /* d_inner = expand * d_model */
    int dt_rank;        /* resolved: ceil(d_model / 16) when written as "auto" */
    bool dt_rank_auto;  /* the file said "auto" (or nothing) */
    int d_inner;        /* derived: expand * d_model */
} chm_config_mamba;

/* model.moe: mixture-of-experts FFN; experts == 0 means dense FFNs everywhere. */
typedef struct chm_config_moe {
    int experts;             /* E */
    int top_k;               /* K, 1 <= K <= E when E > 0 */
    int every;               /* MoE FFN on layer i when (i + 1) % every == 0 */
    int hidden;              /* each expert's SwiGLU width (resolved; default ffn_hidden) */
    double capacity_factor;  /* tokens per expert = capacity_factor * K * tokens / E */
    double aux_weight;       /* Switch load-balancing loss weight */
    double z_weight;         /* ST-MoE router z-loss weight */
} chm_config_moe;

/* model.mod: mixture-of-depths on chosen layers. */
typedef struct chm_config_mod {
    int n_layers;                          /* entries used in layers[] (0 = off) */
    int layers[CHM_CONFIG_MAX_LAYERS];     /* layer indices as written, each in [0, L) */
    double capacity;                       /* fraction of each sequence's tokens a routed layer
                                              runs, in (0, 1] */
    double aux_weight;                     /* weight of the router's BCE loss */
} chm_config_mod;

/* model.mtp: multi-token prediction; depth 0 means off. */
typedef struct chm_config_mtp {
    int depth;      /* extra predicted tokens */
    double weight;  /* loss weight over the mean of the depths */
} chm_config_mtp;

/* model: the network's shape, resolved. */
typedef struct chm_config_model {
    int vocab;                                /* V */
    int d_model;                              /* C */
    int n_layers;                             /* L */
    char pattern[CHM_CONFIG_MAX_LAYERS + 1];  /* as written, e.g. "MMMA"; repeats to L layers */
    int heads;                                /* H, query heads */
    int kv_heads;                             /* key/value heads (GQA); resolved, default H */
    int head_dim;                             /* resolved, default C / H */
    double rope_theta;
    double norm_eps;                          /* RMSNorm epsilon */
    chm_config_mamba mamba;
    int ffn_hidden;                           /* dense SwiGLU width (YAML: ffn.hidden); resolved,
                                                 default 8/3 C rounded up to a multiple of 64 */
    chm_config_moe moe;
    chm_config_mod mod;
    chm_config_mtp mtp;
    bool tie_embeddings;                      /* unembedding = embedding^T */
    /* derived per layer, entries [0, L) valid: */
    chm_config_mixer mixer[CHM_CONFIG_MAX_LAYERS];  /* pattern expanded */
    bool moe_layer[CHM_CONFIG_MAX_LAYERS];          /* this layer's FFN is MoE */
    bool mod_layer[CHM_CONFIG_MAX_LAYERS];          /* this layer is routed by mixture-of-depths */
    int n_attention, n_mamba, n_moe;                /* derived counts over the layers */
} chm_config_model;

/* train: the optimisation run. Counts of steps are optimizer steps. */
typedef struct chm_config_train {
    int micro_batch;          /* B, sequences per micro step per process */
    int seq_len;              /* T */
    int grad_accum;           /* micro steps per optimizer step */
    int64_t steps;            /* as written, 0 when tokens was given */
    int64_t tokens;           /* as written (suffixes expanded), 0 when steps was given */
    int64_t tokens_per_step;  /* derived: B * T * grad_accum, for one process */
    int64_t total_steps;      /* derived: steps, or ceil(tokens / tokens_per_step) */
    double lr;                /* peak learning rate */
    double min_lr;            /* final learning rate; resolved, default lr / 10 */
    int64_t warmup;           /* linear warmup steps */
    chm_config_schedule schedule;
    double decay_frac;        /* wsd: fraction of total_steps spent decaying */
    double weight_decay;      /* AdamW decoupled weight decay */
    double betas[2];          /* AdamW beta1, beta2 */
    double eps;               /* AdamW epsilon */
    double clip;              /* global gradient-norm clip, 0 = off */
    int64_t seed;
    int64_t eval_every;       /* steps between evaluations, 0 = never */
    int eval_batches;         /* micro batches per evaluation */
    int64_t save_every;       /* steps between checkpoints, 0 = no periodic checkpoints */
    int64_t log_every;        /* steps between log lines */
    chm_config_save_error on_save_error; /* a failed periodic save: stop or continue */
    double comm_bucket_mb;    /* data parallel: MiB of gradient per all-reduce bucket, started
                                 during the last micro batch's backward as the layers finish
                                 (overlapped on nccl and on mpi with the cpu backend; vulkan's
                                 host-staged mpi reduces once after the backward); 0: one
                                 all-reduce of the whole buffer after the backward. Default 25 */
    bool recompute;           /* per-layer activation recomputation: keep each layer's input,
                                 re-run its forward in the backward (less activation memory,
                                 about one more trunk forward of compute). Default false */
    char *out_dir;            /* run directory (owned) */
} chm_config_train;

/* data: where tokens come from. Strings are owned. */
typedef struct chm_config_data {
    char *train;      /* path, or "builtin" (the embedded default corpus) */
    char *val;        /* path, "builtin", or "" = split from train */
    char *tokenizer;  /* path to tokenizer.json, or "byte" (built-in byte tokenizer) */
} chm_config_data;

/* One resolved configuration. Fill it with a chm_config_load* function and release it with
 * chm_config_free; a struct copy shares the strings, so free only one of the copies. */
typedef struct chm_config {
    chm_config_model model;
    chm_config_train train;
    chm_config_data data;
    chm_config_backend backend;
    chm_config_precision precision;
    bool warnings;    /* print informational fallback warnings */
    char *source;     /* the file path or display name it was loaded from (owned) */
} chm_config;

/* Load and validate the YAML file at `path`, after applying `n_sets` overrides "key.path=value"
 * (the value is a YAML scalar or flow list; missing keys and maps are created). On failure *cfg is
 * left zeroed and `err` (may be NULL) holds the message. */
chm_status chm_config_load_file(const char *path, const char *const *sets, int n_sets,
                                chm_config *cfg, chm_err *err);

/* Same from YAML text; `name` is what messages and cfg->source call it (e.g. "<builtin test.yaml>";
 * NULL gives "<string>"). */
chm_status chm_config_load_string(const char *text, const char *name, const char *const *sets,
                                  int n_sets, chm_config *cfg, chm_err *err);

/* Same from a config compiled into the binary from configs/NAME.yaml ("test", "tiny", ...). */
chm_status chm_config_load_builtin(const char *name, const char *const *sets, int n_sets,
                                   chm_config *cfg, chm_err *err);

/* What the commands call: `spec` NULL loads the builtin "test"; a file that opens is loaded as a
 * file; else a builtin of that name; else CHM_ERR_IO naming the file and the builtins. */
chm_status chm_config_load(const char *spec, const char *const *sets, int n_sets,
                           chm_config *cfg, chm_err *err);

/* Write `cfg` as YAML that loads back to the same config: every key with its resolved value,
 * then the derived values (per-layer table, token counts) as comments. */
void chm_config_write(const chm_config *cfg, FILE *f);

/* Release the strings of `cfg` and zero it. NULL and zeroed configs are fine. */
void chm_config_free(chm_config *cfg);

/* Names as written in YAML: "cosine", "cpu", "bf16", "attention"/"mamba". */
const char *chm_config_schedule_name(chm_config_schedule s);
const char *chm_config_backend_name(chm_config_backend b);
const char *chm_config_precision_name(chm_config_precision p);
const char *chm_config_mixer_name(chm_config_mixer m);

#ifdef __cplusplus
}
#endif
#endif
