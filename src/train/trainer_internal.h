/*
 * trainer_internal.h: the trainer's state and the pieces src/train shares:
 * trainer.c (open, resume, close), train_data.c (corpus cache, loaders,
 * validation windows), train_step.c (the step and the loop), train_log.c
 * (log lines, progress bar, metrics.jsonl), train_dp.c (data parallelism).
 * Internal to src/train.
 */
#ifndef CHIMERA_TRAIN_TRAINER_INTERNAL_H
#define CHIMERA_TRAIN_TRAINER_INTERNAL_H

#include <stdio.h>

#include "chimera/comm.h"
#include "chimera/trainer.h"

#define TR_PATH 4096

/* Sums over the steps since the last log line. */
typedef struct tr_window {
    chm_model_loss sum;   /* loss parts summed over the good steps */
    int64_t good;         /* steps summed */
    int64_t steps;        /* steps taken, skipped ones included */
    double seconds;       /* their wall time */
    double comm_seconds;  /* of it, in data-parallel collectives */
    double comm_exposed_seconds; /* of the gradient all-reduce, what the backward did not hide */
} tr_window;

/* Contiguous runs of finished gradient ranges not yet started, at most this many at once. */
#define TR_OPEN_RUNS 8

/* The gradient all-reduce in buckets (train_dp.c), started by the model's gradient hook. */
typedef struct tr_buckets {
    bool on;             /* world > 1, train.comm_bucket_mb > 0 and the transport overlaps */
    bool armed;          /* the last micro batch of a step is running: ranges start buckets */
    int64_t size;        /* elements per bucket */
    chm_tensor grads;    /* the whole gradient buffer [chm_model_grad_numel] */
    int64_t run_begin[TR_OPEN_RUNS], run_end[TR_OPEN_RUNS]; /* open runs (elements) */
    int n_runs;
    int started;         /* buckets started in this step */
    int64_t covered;     /* elements they hold (the whole buffer once the last has started) */
} tr_buckets;

struct chm_trainer {
    chm_config cfg;                 /* own deep copy */
    char run_dir[TR_PATH];
    char cache_dir[TR_PATH];
    bool quiet;
    int keep;
    FILE *log;                      /* may be NULL */
    bool bar;                       /* progress bar on log */
    FILE *metrics;                  /* run_dir/metrics.jsonl, appended */

    chm_backend *be;
    chm_tokenizer *tok;
    chm_loader *loader;
    chm_model *model;
    chm_optim *optim;
    int32_t *batch;                 /* [B, T+1] host ids of one micro batch */
    int32_t *val;                   /* [n_val, T+1] validation windows */
    int64_t n_val;
    double bytes_per_token;         /* of the validation windows */
    double floor;                   /* nats per token of the data (built-in corpus), 0 unknown */
    char data_desc[TR_PATH + 128];  /* what the training data is, for the header */

    chm_model_stats stats;
    chm_device_peak peak;
    size_t mem_bytes;               /* arena + params + grads + moments */

    chm_checkpoint_state st;        /* counters (cursor filled when saving) */
    int bad_streak;
    int64_t last_saved;             /* step of the last checkpoint written or loaded, -1 none */
    bool interrupted;
    char *nan_steps;                /* CHIMERA_DEBUG_NAN_STEP (debug only), or NULL */

    chm_comm *comm;                 /* the data-parallel group (not owned), or NULL */
    int rank, world;                /* this process and the group's size (0 and 1 alone) */
    int die_rank;                   /* CHIMERA_DEBUG_DIE_RANK (debug only), -1 none */
    int64_t die_step;               /* ... at this 1-based step (CHIMERA_DEBUG_DIE_STEP, default 1) */
    tr_buckets bkt;                 /* the gradient all-reduce overlapped with the backward */
    bool masters_stale;             /* mixed precision: other ranks' master blocks not gathered */

    double t_open;                  /* monotonic time at open */
    double elapsed_open;            /* st.elapsed_s at open (resumed time) */
    tr_window win;                  /* since the last log line */
    double last_eval_loss;          /* NAN before the first evaluation */
};

/* Monotonic seconds. */
double tr_now(void);

/* ---- train_data.c ---- */

/* The cache directory: opt (when set), $XDG_CACHE_HOME/chimera or $HOME/.cache/chimera. */
void tr_cache_dir(const char *opt, char *out, size_t n);
/*
 * Prepare the training data of t->cfg and open t->loader (validation split
 * when data.val is empty), fill t->val / t->n_val, t->bytes_per_token,
 * t->floor and t->data_desc.
 */
chm_status tr_data_open(chm_trainer *t, chm_err *err);

/* ---- train_dp.c: data parallelism (no-ops for a world of one) ---- */

/* Take the group of the options: rank, world, the debug hooks; scale tokens_per_step (and
 * total_steps of a token budget) to the global batch. comm may be NULL. */
void tr_dp_options(chm_trainer *t, chm_comm *comm);
/* Attach the group to t->be (NCCL id file: RUN_DIR/.nccl-id by default). */
chm_status tr_dp_attach(chm_trainer *t, chm_err *err);
/* The optimizer options of this rank: its block of the parameter buffer (ZeRO-1). */
chm_optim_options tr_dp_optim_options(const chm_trainer *t);
/* After init or resume: check that the ranks agree on where the run starts, average the
 * validation bytes per token, broadcast rank 0's weights. */
chm_status tr_dp_start(chm_trainer *t, chm_err *err);
/* Sum the gradient buffer over the ranks in one all-reduce (train.comm_bucket_mb 0, or a
 * transport that does not overlap). */
chm_status tr_dp_reduce_grads(chm_trainer *t, chm_err *err);
/* Before micro batch `a` of `accum`: arm the buckets for the last one (a no-op unless
 * t->bkt.on). */
void tr_dp_micro_batch(chm_trainer *t, int a, int accum);
/* Bucketed: wait for every bucket of the step; adds the all-reduce's time and exposed part
 * (chm_comm_timing) to *seconds and *exposed. */
chm_status tr_dp_wait_grads(chm_trainer *t, double *seconds, double *exposed, chm_err *err);
/* Average the step's loss parts and gradient norm over the ranks. */
chm_status tr_dp_mean(chm_trainer *t, chm_model_loss *loss, double *norm, chm_err *err);
/* All-gather the parameters after each rank updated its block (and refresh a compute copy). */
chm_status tr_dp_gather_params(chm_trainer *t, chm_err *err);
/* *halt: whether any rank was asked to stop (its *stop; stop may be NULL). */
chm_status tr_dp_stop(chm_trainer *t, const volatile sig_atomic_t *stop, bool *halt, chm_err *err);
/* CHIMERA_DEBUG_DIE_RANK/_STEP: this rank kills itself (SIGKILL) now when they say so. */
void tr_dp_debug_die(const chm_trainer *t);
/* Combine every rank's evaluation of its share of the validation windows into r. */
chm_status tr_dp_eval(chm_trainer *t, chm_eval_result *r, chm_err *err);
/* A checkpoint of a sharded optimizer: gather the moments, rank 0 writes; path of it. */
chm_status tr_dp_save(chm_trainer *t, char *path, size_t n, chm_err *err);
/* Resume a sharded optimizer: this rank's block of c's moments and the update count. */
chm_status tr_dp_load_moments(chm_trainer *t, const chm_checkpoint *c, chm_err *err);

/* ---- train_log.c ---- */

/* Print the header of a run (backend, model, data, peak) to the log. */
void tr_log_header(chm_trainer *t, const char *resumed_from);
/* After a step: accumulate, print the progress bar or a log line, write a "train" event. */
void tr_log_step(chm_trainer *t, const chm_train_step *s);
/* A skipped step: warning on stderr and a "skip" event. */
void tr_log_skip(chm_trainer *t, const chm_train_step *s);
void tr_log_eval(chm_trainer *t, const chm_eval_result *r);
void tr_log_checkpoint(chm_trainer *t, const char *path);
/* The "start" event (resumed_from may be NULL) and the "end" event with a reason. */
void tr_log_start(chm_trainer *t, const char *resumed_from);
void tr_log_end(chm_trainer *t, const char *reason);
/* Erase the progress bar (before other output). */
void tr_log_clear_bar(chm_trainer *t);

#endif
