/*
 * chimera/optim.h: the optimizer side of training: AdamW over the model's
 * parameter buffer, global gradient-norm clipping, and learning-rate
 * schedules.
 *
 * AdamW (decoupled weight decay, Loshchilov & Hutter) keeps fp32 master
 * weights (the model's parameter buffer itself) and two moments m and v of
 * the same dtype in one buffer laid out like the parameters, so the moment of
 * parameter p lives at p's element offset. With a mixed-precision model the
 * gradients are 16-bit and each step also writes the model's 16-bit compute
 * copy (chm_model_compute_region), in the same fused kernel. The update is the backend's fused
 * chm_adamw_step, called once per "segment": a maximal run of parameters,
 * in buffer order, that share a weight decay. A parameter is decayed when the
 * model marks it so (matrices; not norms, biases, A_log, D) and it is not an
 * embedding (embed.weight, lm_head.weight) unless decay_embeddings is set:
 * with the model's layout (decayed parameters first, embedding first among
 * them) that is three segments.
 *
 * Data parallel (ZeRO-1): each rank's optimizer owns one contiguous block of
 * the flat buffer (chm_optim_options.shard), holds moments for it alone and
 * updates only its parameters; the gradients were all-reduced before and
 * the trainer all-gathers the parameters after (src/train/train_dp.c).
 *
 * Gradient accumulation happens in the model (forward_backward's grad_scale
 * = 1/grad_accum); clipping passes its factor as the step's grad_scale, so
 * the gradient buffer is never rescaled in place.
 *
 * Host reads: chm_optim_grad_norm downloads one small buffer (the squared
 * norms of the two gradient regions); nothing else leaves the device.
 * Threading: one thread at a time per optimizer. Errors: chm_status + err.
 */
#ifndef CHIMERA_OPTIM_H
#define CHIMERA_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "chimera/config.h"
#include "chimera/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- learning-rate schedules ------------------------------------------------------ */

/*
 * The learning rate of optimizer step `step` (0-based: the first update is
 * step 0) for train.lr, min_lr, warmup W, schedule, decay_frac and
 * total_steps S:
 *   warmup, step < W:   lr * (step + 1) / W (reaches lr at step W-1)
 *   after warmup:       p = (step - s0) / (S - 1 - s0), clamped to [0, 1],
 *     cosine:    s0 = W,  min_lr + (lr - min_lr) * (1 + cos(pi p)) / 2
 *     linear:    s0 = W,  lr - (lr - min_lr) * p
 *     wsd:       s0 = max(W, S - round(decay_frac * S)); lr before s0, then
 *                lr - (lr - min_lr) * p (the last decay_frac of the steps)
 *     constant:  lr
 * so every decaying schedule starts its decay at lr and ends at exactly
 * min_lr on the last step S-1. Steps past the end keep min_lr.
 */
double chm_lr_at(const chm_config_train *tc, int64_t step);

/* ---- AdamW -------------------------------------------------------------------------- */

typedef struct chm_optim chm_optim;

/* Options of chm_optim_create beyond the config's train section. Zero-initialise. */
typedef struct chm_optim_options {
    bool decay_embeddings;  /* also decay embed.weight / lm_head.weight (default: no) */
    /* ZeRO-1 (data parallel): with `shard`, update only the elements [shard_begin,
     * shard_begin + shard_count) of the flat parameter buffer (chm_comm_block's block of
     * this rank) and hold moments only for them; the caller all-gathers the parameters
     * after each step. Without it: every element. */
    bool shard;
    int64_t shard_begin, shard_count;
} chm_optim_options;

/*
 * An AdamW optimizer for model m with the hyper-parameters of tc (betas,
 * eps, weight_decay, clip): allocates m and v (zeroed) on m's backend, in
 * m's master dtype, plus a two-element buffer for the gradient norm. opt may be
 * NULL. Keeps a pointer to m (m must outlive the optimizer).
 * Errors: CHM_ERR_INVALID_ARG, CHM_ERR_NOMEM.
 */
chm_status chm_optim_create(chm_model *m, const chm_config_train *tc,
                            const chm_optim_options *opt, chm_optim **out, chm_err *err);

/* Release the moments and the optimizer. NULL is a no-op. */
void chm_optim_free(chm_optim *o);

/*
 * The global L2 norm of the gradient buffer: sqrt(sum of squares over the
 * decayed and the other region), one sum_squares per region and one
 * download. NaN or Inf when a gradient is.
 */
chm_status chm_optim_grad_norm(chm_optim *o, double *norm, chm_err *err);

/*
 * The factor clipping applies for a gradient of this norm: clip / norm when
 * clip > 0 and norm > clip, else exactly 1.
 */
double chm_optim_clip_factor(double norm, double clip);

/*
 * One AdamW update of every parameter with learning rate lr, the gradients
 * multiplied by grad_scale first (the clip factor). Increments the update
 * count used for bias correction (chm_optim_updates) before the update.
 */
chm_status chm_optim_step(chm_optim *o, double lr, double grad_scale, chm_err *err);

/* Updates applied so far (AdamW's t); set it when restoring a checkpoint. */
int64_t chm_optim_updates(const chm_optim *o);
void chm_optim_set_updates(chm_optim *o, int64_t t);

/* Whether parameter p is decayed by this optimizer (the model's flag and the embedding rule). */
bool chm_optim_decays(const chm_optim *o, const chm_model_param *p);

/*
 * Views of parameter p's first (exp_avg) and second (exp_avg_sq) moments,
 * shaped like p (checkpoints download and upload through them). A sharded
 * optimizer gives unbound views (buf NULL) for a parameter not wholly in its
 * shard: ZeRO-1 checkpoints go through the trainer's gather instead.
 */
void chm_optim_moments(const chm_optim *o, const chm_model_param *p, chm_tensor *exp_avg,
                       chm_tensor *exp_avg_sq);

/* Views of the whole moment buffers, laid out like the parameter buffer ([E]); for a
 * sharded optimizer those of its shard ([shard_count], element 0 = shard_begin). */
void chm_optim_moment_buffers(const chm_optim *o, chm_tensor *exp_avg, chm_tensor *exp_avg_sq);

/* Bytes of optimizer state on the device (both moments; a shard's only). */
size_t chm_optim_bytes(const chm_optim *o);

/* The shard this optimizer updates: [*begin, *begin + *count) of *total = E elements
 * (0, E, E when unsharded). Any pointer may be NULL. */
void chm_optim_shard(const chm_optim *o, int64_t *begin, int64_t *count, int64_t *total);

/* Zero both moments and the update count (a fresh run). */
chm_status chm_optim_reset(chm_optim *o, chm_err *err);

#ifdef __cplusplus
}
#endif
#endif
