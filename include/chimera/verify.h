/*
 * chimera/verify.h: the built-in verifier that shows the backends agree
 * (`chimera verify`).
 *
 * Four phases, each against the cpu backend as the reference:
 *  - ops: every op of backend.h (the compute ops plus fill, copy and cast),
 *    forward and backward, on fresh random inputs (never zeros) at several
 *    shapes, run in f32 on every backend and in f64 on a separate cpu
 *    instance (the reference; inputs are rounded to f32 first so that both
 *    see the same numbers). Outputs are NaN-poisoned before each call,
 *    gradients start at random values (backwards accumulate), and the
 *    inputs a backward takes from its forward (out, lse, rstd, probs, idx)
 *    are the reference's, so a wrong forward never fails its backward.
 *    Each output: max |err|, relative L2 error, and PASS when the relative
 *    L2 error is within the op's limit and every element within
 *    10 x limit x (|ref| + rms(ref)); index outputs must match exactly. A
 *    backend that lacks an op gets SKIP, not FAIL. Optionally (bf16) the
 *    backends with bf16 storage run the ops again in bf16, limits x1000.
 *  - step: one training step (chimera/trainer.h) of the config on every
 *    backend from the same initial weights and batch; loss parts, gradient
 *    norm and every parameter's gradient compared with the cpu's. The model
 *    phases run in f32 (`precision: auto`, which means bf16 on cuda, becomes
 *    f32 so that every backend computes like the cpu); a config asking for
 *    bf16 explicitly runs mixed precision everywhere with bf16 limits.
 *  - trajectory: `steps` steps on every backend from the same start; the
 *    loss curves and their largest divergence.
 *  - crossing: a checkpoint saved on backend A after the trajectory is
 *    resumed on backend B (cpu -> each backend and each backend -> cpu);
 *    the next step's loss, gradient norm and updated weights on B must
 *    match A's own next step.
 *
 * Backends: when the options name none, every compiled backend that opens
 * is verified and the others are listed with the reason; a backend named
 * in the options that cannot open is an error (CHM_ERR_UNSUPPORTED).
 * The cpu reference always runs, named or not.
 *
 * Debug only: CHIMERA_DEBUG_FAULT="backend:op" (backend.h, debug_fault)
 * perturbs one op of one backend; the reference cpu instance of the op
 * phase ignores it, so verify reports exactly that op as FAIL.
 *
 * Errors: chm_verify_run returns a status for what stops it from running
 * (bad option, unknown op, named backend unavailable, config, I/O); a
 * disagreement between backends is a result in the report, not an error.
 * Threading: one thread; the report is owned by the caller.
 */
#ifndef CHIMERA_VERIFY_H
#define CHIMERA_VERIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "chimera/backend.h"
#include "chimera/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Trajectory steps when the options leave `steps` at 0. */
#define CHM_VERIFY_DEFAULT_STEPS 3
/* Most backends one run verifies (cpu, vulkan, cuda). */
#define CHM_VERIFY_MAX_BACKENDS 3
/* Parameters listed as the worst gradients of each backend in the step phase. */
#define CHM_VERIFY_WORST 5

/* What verify runs. Zero-initialise, then set what you need. */
typedef struct chm_verify_options {
    const char *backends;      /* comma list "cpu,vulkan,cuda"; NULL: every compiled backend
                                  that opens */
    const char *config;        /* config file or built-in name; NULL: the built-in "test" */
    const char *const *sets;   /* n_sets "key.path=value" overrides of the config */
    int n_sets;
    const char *ops;           /* NULL or "all": every op; "none": no op phase; else a comma
                                  list of op names (chm_verify_op_name) */
    int steps;                 /* trajectory steps; 0: CHM_VERIFY_DEFAULT_STEPS */
    bool no_model;             /* skip the step, trajectory and crossing phases */
    uint64_t seed;             /* random inputs of the op phase; 0: 1 */
    bool bf16;                 /* also run the op phase in bf16 (limits x1000) on the backends
                                  with bf16 storage; an op without bf16 compute is a SKIP */
    const char *cache_dir;     /* built-in corpus cache (as chm_trainer_options); NULL: default */
    const char *tmp_dir;       /* where run directories go (removed after); NULL: $TMPDIR or /tmp */
    int threads;               /* cpu backend threads; 0: every core */
    FILE *progress;            /* progress lines for the long phases; NULL: silent */
} chm_verify_options;

/* The outcome of one comparison, of an op or a backend. */
typedef enum chm_verify_result {
    CHM_VERIFY_PASS = 0,
    CHM_VERIFY_FAIL = 1,
    CHM_VERIFY_SKIP = 2   /* not compared: the backend lacks the op or cannot run the phase */
} chm_verify_result;

/* A backend as verify found it. */
typedef struct chm_verify_backend {
    char name[16];        /* "cpu", "vulkan", "cuda" */
    char device[128];     /* device name when it opened */
    bool named;           /* the options named it */
    bool available;       /* it opened; otherwise `why` says why not */
    char why[512];
} chm_verify_backend;

/* One output of one op case on one backend, compared with the reference. */
typedef struct chm_verify_check {
    char op[32];            /* op name, e.g. "rmsnorm_bwd" */
    char what[112];         /* case and output, e.g. "rmsnorm 2x37x64 dw" */
    char backend[16];
    chm_dtype dtype;        /* dtype the backend computed in */
    int64_t n;              /* elements compared */
    bool exact;             /* an index output: must match exactly */
    double max_abs;         /* max |got - ref| */
    double rel_l2;          /* ||got - ref|| / ||ref|| */
    double limit;           /* rel-L2 limit (0 for exact) */
    chm_verify_result result;
    char note[256];         /* why it failed or was skipped; "" on PASS */
} chm_verify_check;

/* One op on one backend: the worst of its checks (the op table's row). */
typedef struct chm_verify_op_row {
    char op[32];
    char backend[16];
    chm_dtype dtype;        /* f32, or bf16 in the bf16 pass */
    int checks;             /* compared outputs */
    double max_abs;         /* worst over the checks */
    double rel_l2;          /* worst over the checks */
    double limit;           /* the op's rel-L2 limit for the dtype */
    bool exact;             /* every check was exact */
    chm_verify_result result;
    char note[384];         /* the first failing (or skipped) check and why */
} chm_verify_op_row;

/* One parameter's gradient (or weights) against the reference's. */
typedef struct chm_verify_tensor_cmp {
    char name[64];
    int64_t n;
    double max_abs, rel_l2;
} chm_verify_tensor_cmp;

/* The step phase for one backend. */
typedef struct chm_verify_step {
    char backend[16];
    chm_dtype dtype;                  /* the backend's model dtype (f32; bf16/f16: mixed) */
    chm_verify_result result;
    char note[512];
    chm_model_loss loss, ref_loss;    /* loss parts of the step */
    double grad_norm, ref_grad_norm;
    double loss_rel;                  /* worst relative difference over the loss parts */
    double grad_rel_l2;               /* of all gradients together */
    double grad_max_abs;
    double loss_limit, grad_limit;    /* limits for loss_rel and every parameter's rel-L2 */
    bool routing_same;                /* MoE/MoD routing decisions equal the reference's */
    int n_params;
    chm_verify_tensor_cmp *params;    /* every parameter, worst rel-L2 first */
} chm_verify_step;

/* The trajectory of one backend. */
typedef struct chm_verify_traj {
    char backend[16];
    chm_verify_result result;
    char note[512];
    int steps;
    double *loss;         /* [steps] total loss of each step */
    double max_rel;       /* largest |loss - ref| / |ref| */
    int at_step;          /* where (1-based) */
    double limit;
} chm_verify_traj;

/* One checkpoint crossing: saved on `from` after `step` steps, resumed on `to`. */
typedef struct chm_verify_cross {
    char from[16], to[16];
    bool from_ref;                /* `from` is the cpu reference's run (else `to` is) */
    int64_t step;                 /* steps in the checkpoint; the compared step is step + 1 */
    chm_verify_result result;
    char note[512];
    double loss, ref_loss;        /* step + 1 on `to` (resumed) and on `from` (continued) */
    double grad_norm, ref_grad_norm;
    double loss_rel;              /* relative difference of the losses */
    double weights_rel_l2;        /* weights after the step, all parameters together */
    double limit;                 /* for loss_rel and the gradient norm */
    double weights_limit;
} chm_verify_cross;

/* Everything verify found. Read-only for callers; free with chm_verify_report_free. */
typedef struct chm_verify_report {
    char config[256];             /* what the model phases trained */
    uint64_t seed;
    int n_backends;
    chm_verify_backend backends[CHM_VERIFY_MAX_BACKENDS];
    /* op phase */
    bool ops_run;
    int n_checks;
    chm_verify_check *checks;
    int n_rows;
    chm_verify_op_row *rows;      /* f32 rows then bf16 rows; op-major, backends in report order */
    /* model phases */
    bool model_run;
    char model_desc[256];         /* parameters, batch and sequence length */
    char reference[16];           /* "cpu" */
    int n_steps;
    chm_verify_step *steps;       /* one per backend other than the reference */
    int traj_steps;
    double *ref_traj;             /* [traj_steps] the reference's losses */
    int n_trajs;
    chm_verify_traj *trajs;
    int n_crosses;
    chm_verify_cross *crosses;
    /* totals */
    int passed, failed, skipped;  /* over op rows, steps, trajectories and crossings */
    double seconds_ops, seconds_model;
} chm_verify_report;

/*
 * Run the phases `o` asks for (o may be NULL: everything with defaults) and
 * return the report in *out (also on comparison failures). Errors:
 * CHM_ERR_INVALID_ARG (bad backend or op name; the message lists the valid
 * ones), CHM_ERR_UNSUPPORTED (a named backend cannot open here), and the
 * config loader's and trainer's codes; *out is NULL then.
 */
chm_status chm_verify_run(const chm_verify_options *o, chm_verify_report **out, chm_err *err);

/* True when nothing failed (skips do not fail). */
bool chm_verify_passed(const chm_verify_report *r);

/* The readable report: one table per phase, the failures, then a one-line verdict. */
void chm_verify_print(const chm_verify_report *r, FILE *f);

/* The one-line verdict ("verdict: PASS ..." / "verdict: FAIL: <what failed>") into buf. */
void chm_verify_verdict(const chm_verify_report *r, char *buf, size_t n);

/* The whole report as JSON (every check, every parameter) into path. */
chm_status chm_verify_write_json(const chm_verify_report *r, const char *path, chm_err *err);

/* Release a report. NULL is a no-op. */
void chm_verify_report_free(chm_verify_report *r);

/* The ops the op phase knows (names as in backend.h's op table), for --ops. */
int chm_verify_op_count(void);
const char *chm_verify_op_name(int i);

#ifdef __cplusplus
}
#endif
#endif
