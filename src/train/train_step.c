/*
 * train_step.c: one optimizer step, evaluation, checkpointing, and the loop
 * that strings them together (chimera/trainer.h).
 *
 * A step reads the device twice: the loss parts at the end of each micro
 * batch (inside the model) and the gradient norm. Skipping a non-finite
 * step leaves weights and moments untouched, so the state after any number
 * of skipped steps is the last good one; the run stops after
 * CHM_TRAIN_MAX_BAD_STEPS in a row, saving that state.
 */
#include "trainer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Debug only: is 1-based step k listed in CHIMERA_DEBUG_NAN_STEP ("k", "a-b", comma separated)? */
static bool nan_injected(const chm_trainer *t, int64_t k) {
    for (const char *s = t->nan_steps; s && *s;) {
        char *end;
        long long a = strtoll(s, &end, 10), b = a;
        if (end == s) return false;
        if (*end == '-') b = strtoll(end + 1, &end, 10);
        if (k >= a && k <= b) return true;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',') break;
    }
    return false;
}

static void loss_accumulate(chm_model_loss *sum, const chm_model_loss *l, double w) {
    sum->total += w * l->total, sum->ce += w * l->ce, sum->mtp += w * l->mtp;
    for (int k = 0; k < CHM_MODEL_MAX_MTP; k++) sum->mtp_depth[k] += w * l->mtp_depth[k];
    sum->moe_balance += w * l->moe_balance, sum->moe_z += w * l->moe_z;
    sum->mod_aux += w * l->mod_aux;
}

/* Zero the gradients and run the step's micro batches; mean loss into *loss. The gradient
 * scale 1 / (accum * world) makes the sum over the ranks the mean over the global batch. */
static chm_status micro_steps(chm_trainer *t, chm_model_loss *loss, chm_err *err) {
    int accum = t->cfg.train.grad_accum;
    double scale = 1.0 / ((double)accum * t->world);
    memset(loss, 0, sizeof *loss);
    chm_status rc = chm_model_zero_grad(t->model, err);
    for (int a = 0; rc == CHM_OK && a < accum; a++) {
        chm_model_loss l;
        if (a == accum - 1) tr_dp_debug_die(t); /* before any gradient collective of the step */
        tr_dp_micro_batch(t, a, accum);         /* the last one starts the gradient buckets */
        rc = chm_loader_next(t->loader, t->batch, err);
        if (rc == CHM_OK) rc = chm_model_forward_backward(t->model, t->batch, scale, &l, err);
        if (rc == CHM_OK) loss_accumulate(loss, &l, 1.0 / accum);
    }
    return rc;
}

/* Make the gradients NaN (CHIMERA_DEBUG_NAN_STEP). */
static chm_status poison_grads(chm_trainer *t, chm_model_loss *loss, chm_err *err) {
    chm_tensor g;
    chm_model_param_region(t->model, false, NULL, &g);
    if (chm_tensor_numel(&g) == 0) chm_model_param_region(t->model, true, NULL, &g);
    loss->total = NAN;
    chm_status rc = chm_fill(t->be, &g, NAN);
    return rc ? CHM_ERR(err, rc, "%s", t->be->err.msg) : CHM_OK;
}

/* Data parallel timing: wait until the device is idle, then start the clock at *t0. */
static chm_status dp_idle(chm_trainer *t, double *t0, chm_err *err) {
    chm_status rc = t->be->ops->sync(t->be);
    *t0 = tr_now();
    return rc ? CHM_ERR(err, rc, "%s", t->be->err.msg) : CHM_OK;
}

/* Seconds since t0 once the collective has finished on the device (*rc set on failure). */
static double dp_done(chm_trainer *t, double t0, chm_err *err, chm_status *rc) {
    *rc = t->be->ops->sync(t->be);
    if (*rc) CHM_ERR(err, *rc, "%s", t->be->err.msg);
    return tr_now() - t0;
}

/* Data parallel: the gradients summed over the ranks, timed: the buckets started during the
 * backward (train_dp.c), or one all-reduce after it, all of which is exposed. */
static chm_status reduce_grads(chm_trainer *t, chm_train_step *info, chm_err *err) {
    if (t->bkt.on)
        return tr_dp_wait_grads(t, &info->comm_seconds, &info->comm_exposed_seconds, err);
    double c0 = 0;
    chm_status rc = dp_idle(t, &c0, err);
    if (rc == CHM_OK) rc = tr_dp_reduce_grads(t, err);
    double s = rc == CHM_OK ? dp_done(t, c0, err, &rc) : 0;
    info->comm_seconds += s;
    info->comm_exposed_seconds += s;
    return rc;
}

chm_status chm_trainer_step(chm_trainer *t, chm_train_step *info, chm_err *err) {
    double t0 = tr_now();
    memset(info, 0, sizeof *info);
    chm_status rc = micro_steps(t, &info->loss, err);
    /* data parallel: sum the gradients, then every rank sees the same norm and loss */
    if (rc == CHM_OK && t->world > 1) rc = reduce_grads(t, info, err);
    if (rc == CHM_OK && nan_injected(t, t->st.step + 1)) rc = poison_grads(t, &info->loss, err);
    if (rc == CHM_OK) rc = chm_optim_grad_norm(t->optim, &info->grad_norm, err);
    if (rc == CHM_OK) rc = tr_dp_mean(t, &info->loss, &info->grad_norm, err);
    if (rc) return rc;
    info->lr = chm_lr_at(&t->cfg.train, t->st.step);
    info->skipped = !isfinite(info->loss.total) || !isfinite(info->grad_norm);
    info->clip_factor = info->skipped ? 0 : chm_optim_clip_factor(info->grad_norm, t->cfg.train.clip);
    if (!info->skipped) rc = chm_optim_step(t->optim, info->lr, info->clip_factor, err);
    double c0 = 0;
    if (rc == CHM_OK && !info->skipped && t->world > 1) rc = dp_idle(t, &c0, err);
    if (rc == CHM_OK && !info->skipped) rc = tr_dp_gather_params(t, err); /* ZeRO-1 */
    if (rc == CHM_OK && !info->skipped && t->world > 1) info->comm_seconds += dp_done(t, c0, err, &rc);
    if (rc) return rc;
    t->bad_streak = info->skipped ? t->bad_streak + 1 : 0;
    info->bad_streak = t->bad_streak;
    t->st.skipped_steps += info->skipped;
    t->st.step++;
    t->st.tokens += t->cfg.train.tokens_per_step;
    t->st.last_lr = info->lr;
    t->st.adamw_updates = chm_optim_updates(t->optim);
    info->step = t->st.step;
    info->tokens = t->st.tokens;
    info->seconds = tr_now() - t0;
    if (info->skipped) tr_log_skip(t, info);
    return CHM_OK;
}

chm_status chm_trainer_eval(chm_trainer *t, chm_eval_result *r, chm_err *err) {
    chm_status rc = chm_evaluate(t->model, t->val, t->n_val, t->bytes_per_token, r, err);
    if (rc == CHM_OK) rc = tr_dp_eval(t, r, err);
    if (rc) return rc;
    t->last_eval_loss = r->loss;
    tr_log_eval(t, r);
    return CHM_OK;
}

chm_status chm_trainer_save(chm_trainer *t, char *path_out, size_t path_n, chm_err *err) {
    char path[TR_PATH];
    t->st.cursor = chm_loader_get_cursor(t->loader);
    t->st.elapsed_s = t->elapsed_open + (tr_now() - t->t_open);
    chm_status rc = t->world > 1 ? tr_dp_save(t, path, sizeof path, err) /* ZeRO-1: gather */
                                 : chm_checkpoint_save(t->run_dir, t->model, t->optim, &t->cfg,
                                                       &t->st, t->keep, path, sizeof path, err);
    if (rc) return rc;
    t->last_saved = t->st.step;
    tr_log_checkpoint(t, path);
    if (path_out) snprintf(path_out, path_n, "%s", path);
    return CHM_OK;
}

/* Where the newest complete checkpoint of this run is, for messages after a failed save. */
static void newest_text(const chm_trainer *t, char *out, size_t n) {
    if (t->last_saved >= 0)
        snprintf(out, n, "the previous checkpoint %s/step-%08lld is intact", t->run_dir,
                 (long long)t->last_saved);
    else
        snprintf(out, n, "no earlier checkpoint of this run exists");
}

/*
 * Save unless this step's checkpoint exists already. A failed save (disk
 * full, I/O error) leaves no partial checkpoint (chm_checkpoint_save removes
 * its temporary directory); the message then says which checkpoint is the
 * newest complete one, and the caller adds what to do.
 */
static chm_status save_once(chm_trainer *t, chm_err *err) {
    if (t->last_saved == t->st.step) return CHM_OK;
    chm_status rc = chm_trainer_save(t, NULL, 0, err);
    if (rc == CHM_OK || !err) return rc;
    char why[sizeof err->msg], newest[TR_PATH + 64];
    snprintf(why, sizeof why, "%s", err->msg);
    newest_text(t, newest, sizeof newest);
    return CHM_ERR(err, rc, "the checkpoint of step %lld was not saved: %s; %s",
                   (long long)t->st.step, why, newest);
}

/* Append advice to a save error's message. */
static void advise(chm_err *err, const char *text) {
    if (!err) return;
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof err->msg - n, "%s", text);
}

/* train.on_save_error: continue: a failed periodic save is a warning; the next one tries again. */
static void save_failed_continue(chm_trainer *t, const chm_err *err) {
    if (t->log) {
        tr_log_clear_bar(t);
        fflush(t->log);
    }
    fprintf(stderr, "chimera: warning: %s; training goes on (train.on_save_error: continue) "
                    "and the next save tries again\n", err->msg);
}

/* The periodic work after a step: evaluation and checkpoint, not on the last step. */
static chm_status periodic(chm_trainer *t, chm_err *err) {
    const chm_config_train *tc = &t->cfg.train;
    int64_t s = t->st.step;
    chm_eval_result r;
    chm_status rc = CHM_OK;
    if (s < tc->total_steps && tc->eval_every > 0 && s % tc->eval_every == 0)
        rc = chm_trainer_eval(t, &r, err);
    if (rc == CHM_OK && s < tc->total_steps && tc->save_every > 0 && s % tc->save_every == 0) {
        rc = save_once(t, err);
        if (rc != CHM_OK && rc != CHM_ERR_INTERNAL &&
            tc->on_save_error == CHM_CONFIG_SAVE_ERROR_CONTINUE) {
            save_failed_continue(t, err);
            rc = CHM_OK;
        } else if (rc != CHM_OK) {
            advise(err, ". Free some space (or fix the error) and continue with --resume auto; "
                        "train.on_save_error: continue keeps training when a save fails");
        }
    }
    return rc;
}

/* Too many non-finite steps: save the unchanged state, stop with a message. */
static chm_status stop_bad(chm_trainer *t, chm_err *err) {
    char path[TR_PATH];
    chm_status rc = t->last_saved == t->st.step ? CHM_OK : chm_trainer_save(t, path, sizeof path, err);
    tr_log_end(t, "non-finite");
    if (rc) return rc;
    if (t->last_saved == t->st.step) snprintf(path, sizeof path, "%s/step-%08lld", t->run_dir,
                                              (long long)t->st.step);
    return CHM_ERR(err, CHM_ERR_CONFIG,
                   "%d steps in a row (up to step %lld) had a non-finite loss or gradient norm: "
                   "stopped; the last good weights are saved in %s. Lower train.lr, raise "
                   "train.warmup or set train.clip, then continue with --resume auto",
                   t->bad_streak, (long long)t->st.step, path);
}

/*
 * The end of the loop: final evaluation and checkpoint. The final save is
 * the run's result, so its failure is an error under either
 * train.on_save_error policy (the message names the newest checkpoint).
 */
static chm_status finish(chm_trainer *t, chm_err *err) {
    chm_eval_result r;
    chm_status rc = CHM_OK;
    if (!t->interrupted && t->cfg.train.eval_every > 0) rc = chm_trainer_eval(t, &r, err);
    if (rc == CHM_OK && (rc = save_once(t, err)) != CHM_OK)
        advise(err, ". Free some space (or fix the error) and run again with --resume auto: it "
                    "continues from that checkpoint");
    tr_log_end(t, t->interrupted ? "signal" : "done");
    return rc;
}

chm_status chm_trainer_run(chm_trainer *t, const volatile sig_atomic_t *stop, chm_err *err) {
    chm_err local;
    if (!err) err = &local;
    bool halt = false;
    while (t->st.step < t->cfg.train.total_steps) {
        chm_status rc = tr_dp_stop(t, stop, &halt, err); /* every rank stops at the same step */
        if (rc) return rc;
        if (halt) {
            t->interrupted = true;
            break;
        }
        chm_train_step s;
        rc = chm_trainer_step(t, &s, err);
        if (rc) return rc;
        tr_log_step(t, &s);
        if (t->bad_streak >= CHM_TRAIN_MAX_BAD_STEPS) return stop_bad(t, err);
        rc = periodic(t, err);
        if (rc) return rc;
    }
    chm_status rc = tr_dp_stop(t, stop, &halt, err);
    if (rc) return rc;
    if (halt) t->interrupted = true;
    return finish(t, err);
}
