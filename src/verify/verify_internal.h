/*
 * verify_internal.h: what the files of src/verify share: the report's
 * growing arrays and totals (verify_report.c), the op phase (verify_ops.c),
 * and the model phases' runs (verify_step.c, verify_traj.c, verify_ckpt.c),
 * all driven by verify.c.
 */
#ifndef CHIMERA_VERIFY_INTERNAL_H
#define CHIMERA_VERIFY_INTERNAL_H

#include <stdio.h>

#include "chimera/config.h"
#include "chimera/trainer.h"
#include "chimera/verify.h"

#define VF_PATH 1024

/* Formatted progress line on f (NULL: nothing). */
void vf_progress(FILE *f, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- verify_report.c ---- */

/* Append a check to the report; CHM_ERR_NOMEM when it cannot grow. */
chm_status vf_add_check(chm_verify_report *r, const chm_verify_check *c, chm_err *err);
/* Build the op rows from the checks: ops in op-list order, backends in report order. */
chm_status vf_build_rows(chm_verify_report *r, const bool *want, chm_err *err);
/* Count passes, failures and skips over every phase. */
void vf_tally(chm_verify_report *r);

/* ---- verify_ops.c ---- */

/* Index of op name in the op list, or -1. */
int vf_op_index(const char *name);
/* The op's rel-L2 limit for f32. */
double vf_op_limit(int i);
/*
 * The op phase on the opened backends bes[0..n) (the report's available
 * backends in order) for the ops with want[i], the backends computing in dt
 * (f32, or bf16 for the bf16 pass: backends without bf16 storage sit it
 * out); checks go into r.
 */
chm_status vf_ops_run(chm_verify_report *r, chm_backend *const *bes, int n, const bool *want,
                      chm_dtype dt, uint64_t seed, int threads, FILE *progress, chm_err *err);

/* ---- the model phases ---- */

/* One backend's training run through the phases (verify_step.c opens it). */
typedef struct vf_run {
    char backend[16];
    char dir[VF_PATH];              /* its run directory */
    chm_trainer *t;                 /* NULL when it could not open (why) */
    chm_dtype dtype;                /* the model's compute dtype (f32, or bf16/f16 mixed) */
    bool ok;                        /* still usable */
    chm_status rc;                  /* why not: the status (UNSUPPORTED: the backend lacks ops) */
    char why[512];                  /* and the message */
    chm_train_step first;           /* step 1 */
    double *grads;                  /* every gradient after step 1, in parameter order */
    uint64_t routing;               /* routing digest of step 1 */
    double *losses;                 /* [steps] the trajectory */
    int n_losses;
    char ckpt[VF_PATH];             /* checkpoint after the trajectory */
    chm_train_step next;            /* the step after the checkpoint */
    double *weights;                /* every weight after that step */
} vf_run;

/* What the model phases share. */
typedef struct vf_model {
    const chm_config *cfg;
    const chm_verify_options *o;
    char tmp[VF_PATH];              /* a private temporary directory, removed at the end */
    int steps;                      /* trajectory length */
    int n_runs;                     /* run directories made so far (their names' numbers) */
    int64_t n_values;               /* elements of all parameters together */
} vf_model;

/* verify_step.c: open a trainer on run->backend (fresh, or resumed from `resume`) in a new
 * run directory under m->tmp; failures go into run->why. */
void vf_run_open(vf_model *m, vf_run *run, const char *resume);
/* Step 1: losses, gradients and the routing digest. */
void vf_run_first(vf_model *m, vf_run *run);
/* Every parameter's gradient (want_grads) or value, in parameter order, into host doubles. */
chm_status vf_download_params(chm_trainer *t, bool want_grads, double *out, chm_err *err);
/* The step phase's comparison of run against the reference. */
void vf_step_compare(const vf_model *m, const vf_run *ref, const vf_run *run, chm_verify_step *s);
/* Release a run's trainer and memory (its directory goes with m->tmp). */
void vf_run_close(vf_run *run);

/* verify_traj.c: steps 2..m->steps of the trajectory (step 1 is vf_run_first's). */
void vf_run_traj(vf_model *m, vf_run *run);
/* The trajectory comparison of run against the reference. */
void vf_traj_compare(const vf_model *m, const vf_run *ref, const vf_run *run, chm_verify_traj *t);

/* verify_ckpt.c: save after the trajectory, then one more step (its loss, grad norm, weights). */
void vf_run_save_next(vf_model *m, vf_run *run);
/* Resume `from`'s checkpoint on backend `to`, take one step, compare with from's next step. */
void vf_cross(vf_model *m, const vf_run *from, const char *to, chm_verify_cross *c);

/* Whether either run computes in 16 bits (mixed precision): then the bf16 limits apply. */
bool vf_lowp(const vf_run *a, const vf_run *b);

/* Relative L2 difference and max |difference| of got against want (n doubles). */
void vf_compare(const double *got, const double *want, int64_t n, double *rel_l2,
                double *max_abs);

#endif
