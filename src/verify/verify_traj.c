/*
 * verify_traj.c: the trajectory phase of `chimera verify`: the runs of the
 * step phase continue to `steps` optimizer steps and their loss curves are
 * compared with the cpu's.
 *
 * Limit: the runs start identical and differ by f32 rounding only, which
 * AdamW's normalised updates carry forward; over a few steps of the small
 * configs the total losses stay within 1e-5 relative (measured 1e-7..1e-6
 * on lavapipe). 1e-4 allows longer runs some growth while a wrong op
 * (which moves the first loss by 1e-3 or more) still fails.
 */
#include "verify_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRAJ_LIMIT 1e-4
#define TRAJ_LIMIT_LOWP 5e-2 /* a 16-bit model on either side: bf16 noise, 2x the step's */

void vf_run_traj(vf_model *m, vf_run *run) {
    while (run->ok && run->n_losses < m->steps) {
        chm_train_step s;
        chm_err e = {0};
        chm_status rc = chm_trainer_step(run->t, &s, &e);
        if (rc) {
            snprintf(run->why, sizeof run->why, "step %d: %s", run->n_losses + 1, e.msg);
            run->rc = rc;
            run->ok = false;
            return;
        }
        run->losses[run->n_losses++] = s.loss.total;
    }
}

void vf_traj_compare(const vf_model *m, const vf_run *ref, const vf_run *run, chm_verify_traj *t) {
    memset(t, 0, sizeof *t);
    snprintf(t->backend, sizeof t->backend, "%s", run->backend);
    t->limit = vf_lowp(ref, run) ? TRAJ_LIMIT_LOWP : TRAJ_LIMIT;
    if (run->n_losses == 0) {
        t->result = run->rc == CHM_ERR_UNSUPPORTED ? CHM_VERIFY_SKIP : CHM_VERIFY_FAIL;
        snprintf(t->note, sizeof t->note, "%s", run->why);
        return;
    }
    t->loss = calloc((size_t)m->steps, sizeof *t->loss);
    t->steps = run->n_losses;
    t->at_step = 1;
    for (int k = 0; t->loss && k < run->n_losses && k < ref->n_losses; k++) {
        t->loss[k] = run->losses[k];
        double d = fabs(run->losses[k] - ref->losses[k]) / fmax(fabs(ref->losses[k]), 1e-30);
        if (!(d <= t->max_rel)) t->max_rel = d, t->at_step = k + 1;
    }
    t->result = t->max_rel <= t->limit ? CHM_VERIFY_PASS : CHM_VERIFY_FAIL;
    if (run->n_losses < m->steps) {
        t->result = CHM_VERIFY_FAIL;
        snprintf(t->note, sizeof t->note, "stopped after %d steps: %s", run->n_losses, run->why);
    }
}
