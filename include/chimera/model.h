/*
 * chimera/model.h: the hybrid language model (attention + Mamba-1 mixers,
 * dense SwiGLU or mixture-of-experts FFNs, mixture-of-depths, multi-token
 * prediction) on the backend interface.
 *
 * One C implementation for every backend: the model only calls the chm_*
 * ops of backend.h and never touches tensor memory. Host reads happen at a
 * few named points: the loss parts at the end of a step (one download),
 * the per-expert counts when asked for, and the data-dependent routing of
 * inference mode (MoD scores, decoding).
 *
 * Architecture (DESIGN.md "The model"): layer i = x + mixer(norm1(x)), then
 * + ffn(norm2(.)), pre-RMSNorm; mixer by config pattern ('A' attention with
 * RoPE and GQA, 'M' Mamba-1); FFN dense SwiGLU or MoE on the configured
 * layers (softmax router, top-k, renormalised gates, capacity with dropped
 * tokens passing on the residual, Switch balance loss, ST-MoE z-loss);
 * mixture-of-depths on the configured layers (top-k = ceil(capacity*T)
 * tokens per sequence by router score x.w run the whole layer in order, the
 * layer's residual increment scaled by sigmoid(score), BCE aux loss teaching
 * sigmoid(score) to predict selection); MTP depth k (DeepSeek-V3 style)
 * predicts token t+1+k from proj([norm_h(h_{k-1}); norm_e(emb(t+k))])
 * followed by one layer (mixer = the pattern's first letter, dense FFN, no
 * MoD), its own final norm, and the shared unembedding; final RMSNorm; tied
 * or untied unembedding; chunked fused cross-entropy.
 *
 * Parameters live in one buffer, gradients in a second buffer of the same
 * layout, both described by the parameter table (names as in the safetensors
 * checkpoints). Activations live in one arena sized once at creation for the
 * micro-batch shape (a dry run of the step); a step allocates nothing.
 * Without recomputation every layer's forward activations stay in the arena
 * until its backward. With chm_model_options.recompute the forward keeps
 * only each trunk layer's input (the residual stream) and its routing
 * decisions (MoD selections, MoE slots and counts: small, and what the
 * routing digest and expert counts read), and the backward re-runs each
 * layer's forward from its input just before its backward: the same ops on
 * the same values, so (with deterministic ops, as the cpu's) the same
 * routing and bit-identical gradients; the replay adds no loss terms. It
 * costs about one extra trunk forward of compute and needs an arena of L+1
 * residuals plus one layer's activations (MTP modules and the heads keep
 * theirs).
 * Evaluation and logits passes then release each layer's activations after
 * its forward as well (nothing to replay).
 *
 * Mixed precision (dtype CHM_BF16 or CHM_F16): the parameter buffer holds
 * the fp32 MASTER weights (what the optimizer updates and the checkpoints
 * store); a third buffer of the same layout holds their 16-bit COMPUTE copy,
 * which every op of a pass reads. Activations, the gradient buffer and the
 * residual stream are 16-bit; saved statistics (softmax logsumexp, RMSNorm
 * rstd, per-token losses) are f32 (chm_dtype_stats); the selective scan keeps
 * its state in f32 inside the kernel. Gradients of micro batches accumulate
 * in the 16-bit gradient buffer (as llm.c does): with many micro batches
 * per step the sum is rounded once per micro batch. The compute copy must
 * equal the rounded master weights: chm_model_init_params and the AdamW
 * step (chm_adamw_step's param_lowp) keep it so, and whoever writes master
 * weights another way (checkpoint load, an all-gather) calls
 * chm_model_refresh_compute. f16's range is narrow: gradients need a loss
 * scale (pass it in forward_backward's grad_scale and its inverse in the
 * optimizer step's), and even then gradients under 2^-24 flush to zero
 * (Mamba's dt_proj.weight at init), so the trainer offers bf16 only.
 *
 * Threading: a chm_model is used by one thread at a time.
 * Errors: functions return a chm_status and fill `err` (may be NULL).
 */
#ifndef CHIMERA_MODEL_H
#define CHIMERA_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "chimera/backend.h"
#include "chimera/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most MTP depths (the config allows 0..16). */
#define CHM_MODEL_MAX_MTP 16

typedef struct chm_model chm_model;

/* How tokens are routed through MoE and MoD layers. */
typedef enum chm_model_routing {
    /* Training: MoD picks the top ceil(capacity*T) tokens of each sequence, MoE experts
     * have a capacity ceil(capacity_factor*K*tokens/E) and drop what exceeds it. */
    CHM_ROUTING_TRAIN = 0,
    /* Inference (generation): MoD runs a token when its score > 0 (causal: no look at
     * later tokens); MoE drops nothing. Incremental decoding uses this routing. */
    CHM_ROUTING_CAUSAL = 1
} chm_model_routing;

/* Options of chm_model_create. Zero-initialise, then set dtype, batch and seq_len. */
typedef struct chm_model_options {
    chm_dtype dtype;       /* CHM_F32 (cpu training), CHM_F64 (gradient checks), or CHM_BF16 /
                              CHM_F16: mixed precision (fp32 master weights, 16-bit compute) */
    int64_t batch;         /* B: sequences per micro batch, >= 1 */
    int64_t seq_len;       /* T: tokens per sequence, >= 1 (a micro batch holds B*(T+1) ids) */
    int64_t ce_chunk_rows; /* rows per cross-entropy chunk (logits [rows,V] at a time); 0 = auto */
    bool recompute;        /* per-layer activation recomputation (see the top of this file);
                              false: on only under CHIMERA_DEBUG_RECOMPUTE=1 (runs any test so) */
    unsigned caps;         /* a model without a backend (`chimera plan` counting its memory):
                              the CHM_CAP_* of the backend it stands for, so that the arena holds
                              what that backend's model would (the scan's saved states with
                              CHM_CAP_SCAN_SAVED, its pre-gate outputs with
                              CHM_CAP_SCAN_YSAVED); ignored with a backend, whose caps count */
} chm_model_options;

/* One parameter tensor of the table. */
typedef struct chm_model_param {
    char name[64]; /* e.g. "layers.3.mixer.in_proj.weight" */
    int ndim;
    int64_t shape[CHM_MAX_DIMS]; /* unused trailing entries are 1 */
    int64_t numel;
    int64_t offset;     /* elements from the start of the parameter buffer (every buffer) */
    bool decay;         /* AdamW weight decay applies (matrices; not norms, biases, A_log, D) */
    chm_tensor value;   /* view into the parameter buffer: the master weights, of the master
                           dtype (unbound without a backend) */
    chm_tensor grad;    /* same place in the gradient buffer, of the model's (compute) dtype */
    chm_tensor compute; /* what the passes read: the 16-bit compute copy in mixed precision,
                           else the same view as value */
} chm_model_param;

/*
 * The loss of one micro batch and its parts. total = ce + mtp_weight*mtp +
 * aux_weight*moe_balance + z_weight*moe_z + mod_aux_weight*mod_aux.
 * ce and each mtp_depth[k] are means over their predicted tokens; mtp is the
 * mean over depths; moe_balance and moe_z are means over the MoE layers
 * (balance is 1 when experts are evenly used); mod_aux is the mean over the
 * MoD layers of the mean BCE per token. Parts that do not apply are 0.
 */
typedef struct chm_model_loss {
    double total;
    double ce;
    double mtp;
    double mtp_depth[CHM_MODEL_MAX_MTP];
    double moe_balance;
    double moe_z;
    double mod_aux;
} chm_model_loss;

/* Sizes of a configuration, computed from the config alone (chm_model_stats). */
typedef struct chm_model_stats {
    int64_t params_total;     /* every parameter, MTP modules included */
    int64_t params_active;    /* used per token: total minus the experts a token does not use */
    int64_t params_embedding; /* embedding (+ unembedding when untied) */
    int64_t params_mtp;       /* the MTP modules (used in training only) */
    double flops_forward;     /* forward FLOPs per token of the main model at seq_len (no MTP) */
    double flops_train;       /* forward + backward (3x) per token, MTP modules included */
} chm_model_stats;

/*
 * Build a model for `cfg` on backend `be` with the micro-batch shape and dtype
 * of `opt`: the parameter table, one parameter buffer, one gradient buffer and
 * the activation arena (sized by a dry run of a training step and of a causal
 * forward of one sequence). The parameters are not initialised (see
 * chm_model_init_params) and the gradients are not zeroed.
 * be may be NULL: then nothing is allocated and the model only describes the
 * configuration (parameter table, stats, the arena size); running it fails.
 * The model keeps a copy of *cfg. Errors: CHM_ERR_CONFIG (unusable config:
 * head_dim odd, MTP depth >= seq_len ...), CHM_ERR_INVALID_ARG, CHM_ERR_NOMEM.
 */
chm_status chm_model_create(const chm_config_model *cfg, chm_backend *be,
                            const chm_model_options *opt, chm_model **out, chm_err *err);

/* Release the model's buffers and itself. NULL is a no-op. */
void chm_model_free(chm_model *m);

/* The backend, dtype and micro-batch shape the model was built for. The dtype is the
 * compute dtype (activations, gradients): bf16 or f16 in mixed precision. */
chm_backend *chm_model_backend(const chm_model *m);
chm_dtype chm_model_dtype(const chm_model *m);
/* The dtype of the master weights (the parameter views, checkpoints, AdamW moments):
 * f32 in mixed precision, else the model's dtype. */
chm_dtype chm_model_master_dtype(const chm_model *m);
/* Whether the model runs in mixed precision (16-bit compute over fp32 master weights). */
bool chm_model_is_mixed(const chm_model *m);
/* One line for logs: "f32", "f64", or "bf16 mixed precision (fp32 master)" / "f16 ...". */
const char *chm_model_precision_name(const chm_model *m);
const chm_config_model *chm_model_config(const chm_model *m);
int64_t chm_model_batch(const chm_model *m);
int64_t chm_model_seq_len(const chm_model *m);
/* Bytes of the activation arena (for a model without a backend: the bytes it would take). */
size_t chm_model_arena_bytes(const chm_model *m);
/* Bytes of the parameter, gradient and (mixed precision) compute-copy buffers together. */
size_t chm_model_buffer_bytes(const chm_model *m);

/*
 * Draw every parameter on the host from the counter-based generator keyed by
 * (seed, parameter name) and upload it (master weights, then the compute
 * copy in mixed precision), so that every backend starts from the same
 * weights: matrices normal(0, 0.02), residual-output projections
 * (o_proj, out_proj, w2) scaled by 1/sqrt(2*L); norms 1; Mamba A_log =
 * log(1..N) per channel, dt_proj.bias = softplus^-1(dt) with dt log-uniform
 * in [1e-3, 1e-1], dt_proj.weight uniform(+-dt_rank^-0.5), D = 1, conv1d
 * weight and bias uniform(+-1/sqrt(d_conv)).
 */
chm_status chm_model_init_params(chm_model *m, uint64_t seed, chm_err *err);

/* Set every gradient to zero (the one place gradients are zeroed: micro step 0). */
chm_status chm_model_zero_grad(chm_model *m, chm_err *err);

/*
 * One micro batch, forward and backward, in training routing. ids is HOST
 * memory: [B, T+1] token ids (row b holds sequence b's T inputs and, shifted
 * by one, its T targets); they are checked against the vocabulary and
 * uploaded here. Gradients of grad_scale * total loss ACCUMULATE into the
 * gradient buffer (grad_scale = 1/grad_accum for accumulation). The loss
 * parts are downloaded once at the end into *loss (may be NULL).
 */
chm_status chm_model_forward_backward(chm_model *m, const int32_t *ids, double grad_scale,
                                      chm_model_loss *loss, chm_err *err);

/*
 * Gradient readiness, for overlapping a data-parallel gradient all-reduce
 * with the backward. With a hook set, chm_model_forward_backward calls
 * fn(user, begin, count, last, err) as soon as elements [begin, begin +
 * count) of the gradient buffer hold their final value for this pass: no
 * later op of the pass writes them. Offsets count elements from the start
 * of the gradient buffer (as chm_model_param.offset; the buffer is
 * region(true) followed by region(false)), and each range includes the
 * alignment padding after its parameters, so the ranges of one pass cover
 * [0, chm_model_grad_numel) exactly once; `last` is set on the final one.
 * On a backend whose ops only enqueue work (cuda), final means in the
 * order of the backend's stream: the ops that write the range are enqueued.
 * When, derived from the real order of a training pass:
 *   1. first: final_norm, lm_head (untied) and every mtp.k.norm_out (the
 *      fused heads write their gradients in the forward);
 *   2. after MTP module k's backward, deepest first: the rest of mtp.k.*;
 *   3. after layer l's backward, last layer first: layers.l.*;
 *   4. last: embed.weight (the MTP modules add to it, the trunk's embedding
 *      backward ends the pass; tied, it is the unembedding as well).
 * Decayed parameters and the others lie in two regions, so one step usually
 * gives two ranges. A hook that fails stops the pass; the pass returns its
 * status and message. fn NULL removes the hook (the default; no cost then).
 * Only chm_model_forward_backward calls it.
 */
typedef chm_status (*chm_model_grad_hook)(void *user, int64_t begin, int64_t count, bool last,
                                          chm_err *err);
void chm_model_set_grad_hook(chm_model *m, chm_model_grad_hook fn, void *user);

/* Elements of the gradient buffer, padding included: what the hook's ranges cover. */
int64_t chm_model_grad_numel(const chm_model *m);

/* Forward only (evaluation), training routing, same ids layout; gradients untouched. */
chm_status chm_model_eval_loss(chm_model *m, const int32_t *ids, chm_model_loss *loss,
                               chm_err *err);

/*
 * Logits of one sequence of n host ids (1 <= n <= T) for every position, in
 * the given routing, into logits [n, V] (host doubles). CHM_ROUTING_CAUSAL
 * gives what incremental decoding computes.
 */
chm_status chm_model_logits(chm_model *m, const int32_t *ids, int64_t n, chm_model_routing routing,
                            double *logits, chm_err *err);

/* The parameter table: count, i-th entry (NULL out of range), entry by name (NULL if absent). */
int chm_model_param_count(const chm_model *m);
const chm_model_param *chm_model_param_get(const chm_model *m, int i);
const chm_model_param *chm_model_param_find(const chm_model *m, const char *name);

/*
 * Flat views of the parameter and gradient buffers for the optimizer: the
 * decayed parameters (decay = true) first, then the others, so that
 * region(true) and region(false) cover every element once (with some
 * alignment padding that stays zero). Views are 1-D: params of the master
 * dtype, grads of the model's dtype (16-bit in mixed precision); element i
 * of both is the same parameter element. Either pointer may be NULL.
 */
void chm_model_param_region(const chm_model *m, bool decay, chm_tensor *params, chm_tensor *grads);

/*
 * The same region of the 16-bit compute copy (mixed precision: the optimizer
 * passes it as chm_adamw_step's param_lowp). Returns false, leaving *lowp
 * unbound (buf NULL), when the model is not mixed.
 */
bool chm_model_compute_region(const chm_model *m, bool decay, chm_tensor *lowp);

/*
 * Mixed precision: set the compute copy to the master weights rounded to the
 * compute dtype (one device cast of the whole buffer, no host transfer).
 * Call it after writing master weights by any means other than the AdamW
 * step (checkpoint load, parameter all-gather, tests). A no-op otherwise.
 */
chm_status chm_model_refresh_compute(chm_model *m, chm_err *err);

/* Number of MoE layers (trunk) and experts per layer. */
int chm_model_moe_layers(const chm_model *m);

/*
 * Tokens each expert processed in the last training-routing forward, per MoE
 * layer: counts [moe_layers * E] (host), and the number of token-expert
 * assignments dropped by capacity into *dropped (may be NULL). Downloads.
 */
chm_status chm_model_expert_counts(chm_model *m, int32_t *counts, int64_t *dropped, chm_err *err);

/* The resolved model config as compact JSON (the "chimera.config" metadata of model.safetensors,
 * read by tools/torch_reference.py) into *json; the caller frees it with free(). */
chm_status chm_model_config_json(const chm_config_model *cfg, char **json, chm_err *err);

/* Parameter counts and FLOPs per token of a configuration at sequence length seq_len. */
chm_status chm_model_stats_compute(const chm_config_model *cfg, int64_t seq_len,
                                   chm_model_stats *st, chm_err *err);

/*
 * A digest of every routing decision of the last forward (MoE top-k and
 * slots, MoD selections): tests compare it across perturbed forwards to
 * detect flipped decisions. Downloads.
 */
chm_status chm_model_routing_digest(chm_model *m, uint64_t *digest, chm_err *err);

/* ---- incremental decoding ---- */

typedef struct chm_decoder chm_decoder;

/*
 * A decoding state for one sequence of up to max_len tokens on m's backend:
 * per attention layer a key/value cache [max_len, Hk, D], per Mamba layer
 * the conv input history [max_len, Di] and the scan state [Di, N] (all of
 * the model's dtype: 16-bit in mixed precision, the scan state rounded
 * between steps), per MoD layer the count of tokens it has run (its own
 * cache positions). Routing is CHM_ROUTING_CAUSAL. The decoder reads m's
 * parameters at each step (it keeps no copy) and computes in m's activation
 * arena (a step invalidates the activations of m's last pass); it must be
 * freed before m. Host reads per step: each MoD layer's score (the routing
 * decision) and the logits.
 */
chm_status chm_decoder_create(chm_model *m, int64_t max_len, chm_decoder **out, chm_err *err);

/* Append one token and write the logits of the next one, [V] host doubles. */
chm_status chm_decoder_step(chm_decoder *d, int32_t token, double *logits, chm_err *err);

/* Tokens consumed so far. */
int64_t chm_decoder_pos(const chm_decoder *d);

/* Forget the sequence (position 0 again; the scan states are zeroed). */
chm_status chm_decoder_reset(chm_decoder *d, chm_err *err);

/* Release the decoder. NULL is a no-op. */
void chm_decoder_free(chm_decoder *d);

#ifdef __cplusplus
}
#endif
#endif
