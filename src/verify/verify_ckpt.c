/*
 * verify_ckpt.c: the checkpoint-crossing phase of `chimera verify`: each
 * run saves a checkpoint after its trajectory and takes one more step; the
 * checkpoint is then resumed on another backend (cpu -> each backend, each
 * backend -> cpu) for that same step, whose loss, gradient norm and
 * resulting weights must match the saving backend's own.
 *
 * Limits: both sides start from the same saved weights, moments and data
 * cursor, so the step differs by one forward/backward of f32 rounding:
 * 1e-5 on the loss and the gradient norm (as in the step phase). The weights
 * after the step differ by the updates' rounding only (lr x a few 1e-6
 * relative to weights of 0.02): 1e-5 in rel-L2; a moment lost in the
 * checkpoint changes the update by up to lr (1e-3 relative), a wrong data
 * cursor changes the loss by 1e-2.
 */
#include "verify_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CROSS_LIMIT 1e-5
#define CROSS_WEIGHTS_LIMIT 1e-5
/* A 16-bit model on either side: bf16 noise on the loss (as the step phase); the f32 master
 * weights move by lr x a bf16-noisy update: 1e-3 relative. */
#define CROSS_LIMIT_LOWP 2e-2
#define CROSS_WEIGHTS_LIMIT_LOWP 1e-3

/* One step on an open run into *s, then its weights into run->weights; false on failure. */
static bool step_and_weights(vf_model *m, vf_run *run, chm_train_step *s) {
    chm_err e = {0};
    chm_status rc = chm_trainer_step(run->t, s, &e);
    if (rc == CHM_OK && !(run->weights = malloc((size_t)m->n_values * sizeof *run->weights)))
        rc = CHM_ERR(&e, CHM_ERR_NOMEM, "no memory for the weights");
    if (rc == CHM_OK) rc = vf_download_params(run->t, false, run->weights, &e);
    if (rc) {
        snprintf(run->why, sizeof run->why, "the step after the checkpoint: %s", e.msg);
        run->rc = rc;
        run->ok = false;
    }
    return rc == CHM_OK;
}

void vf_run_save_next(vf_model *m, vf_run *run) {
    chm_err e = {0};
    if (run->ok && chm_trainer_save(run->t, run->ckpt, sizeof run->ckpt, &e) != CHM_OK) {
        snprintf(run->why, sizeof run->why, "saving a checkpoint: %s", e.msg);
        run->rc = e.code;
        run->ok = false;
    }
    if (run->ok) step_and_weights(m, run, &run->next);
    chm_trainer_close(run->t); /* its device memory is not needed any more */
    run->t = NULL;
}

static void cross_begin(const vf_model *m, const vf_run *from, const char *to,
                        chm_verify_cross *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->from, sizeof c->from, "%s", from->backend);
    snprintf(c->to, sizeof c->to, "%s", to);
    c->step = m->steps;
    c->limit = CROSS_LIMIT;
    c->weights_limit = CROSS_WEIGHTS_LIMIT;
    c->ref_loss = from->next.loss.total;
    c->ref_grad_norm = from->next.grad_norm;
}

/* Compare the resumed run's step with the saving run's continued one. */
static void cross_judge(vf_model *m, const vf_run *from, const vf_run *back,
                        const chm_train_step *s, chm_verify_cross *c) {
    double wmax;
    if (vf_lowp(from, back)) {
        c->limit = CROSS_LIMIT_LOWP;
        c->weights_limit = CROSS_WEIGHTS_LIMIT_LOWP;
    }
    c->loss = s->loss.total;
    c->grad_norm = s->grad_norm;
    c->loss_rel = fabs(c->loss - c->ref_loss) / fmax(fabs(c->ref_loss), 1e-30);
    double gn = fabs(c->grad_norm - c->ref_grad_norm) / fmax(fabs(c->ref_grad_norm), 1e-30);
    vf_compare(back->weights, from->weights, m->n_values, &c->weights_rel_l2, &wmax);
    c->result = CHM_VERIFY_FAIL;
    if (s->step != c->step + 1)
        snprintf(c->note, sizeof c->note, "the resumed run took step %lld, not %lld: the "
                 "counters were not restored", (long long)s->step, (long long)c->step + 1);
    else if (!(c->loss_rel <= c->limit))
        snprintf(c->note, sizeof c->note, "the loss differs by %.1e (limit %.0e): weights or data "
                 "cursor not carried over?", c->loss_rel, c->limit);
    else if (!(gn <= c->limit))
        snprintf(c->note, sizeof c->note, "the gradient norm differs by %.1e (limit %.0e)", gn,
                 c->limit);
    else if (!(c->weights_rel_l2 <= c->weights_limit))
        snprintf(c->note, sizeof c->note, "the weights after the step differ by %.1e rel-L2 "
                 "(limit %.0e): optimizer moments not carried over?", c->weights_rel_l2,
                 c->weights_limit);
    else c->result = CHM_VERIFY_PASS;
}

void vf_cross(vf_model *m, const vf_run *from, const char *to, chm_verify_cross *c) {
    cross_begin(m, from, to, c);
    if (!from->weights) {
        c->result = from->rc == CHM_ERR_UNSUPPORTED ? CHM_VERIFY_SKIP : CHM_VERIFY_FAIL;
        snprintf(c->note, sizeof c->note, "no checkpoint from %s: %s", from->backend, from->why);
        return;
    }
    vf_run back;
    memset(&back, 0, sizeof back);
    snprintf(back.backend, sizeof back.backend, "%s", to);
    vf_run_open(m, &back, from->ckpt);
    chm_train_step s;
    if (back.ok && step_and_weights(m, &back, &s)) {
        cross_judge(m, from, &back, &s, c);
    } else {
        c->result = back.rc == CHM_ERR_UNSUPPORTED ? CHM_VERIFY_SKIP : CHM_VERIFY_FAIL;
        snprintf(c->note, sizeof c->note, "%s", back.why);
    }
    vf_run_close(&back);
}
