/*
 * chimera/trainer.h: training runs as a library: a run directory, a model,
 * its AdamW optimizer and data loader, the step loop with logging, metrics,
 * evaluation and checkpoints, and the checkpoint directories themselves.
 * The `chimera train`, `sample` and `eval` commands, the tests and the
 * verifier drive training through this header.
 *
 * A run directory holds:
 *   metrics.jsonl        one JSON object per event, appended (see "Metrics")
 *   config.yaml          the resolved config of the latest start or resume
 *   step-XXXXXXXX/       checkpoints (8-digit step = optimizer steps done); the
 *                        newest CHM_CHECKPOINT_KEEP (or opts.keep) are kept
 *   .tmp-step-*          a checkpoint being written (ignored and removed later)
 *
 * A checkpoint directory holds
 *   model.safetensors      the master weights (the model's dtype, f32 in
 *                          training) under the parameter names of model.h;
 *                          metadata chimera.version, chimera.step and
 *                          chimera.config (the model section as JSON, which
 *                          tools/torch_reference.py reads)
 *   optimizer.safetensors  AdamW's moments under "exp_avg.<name>" and
 *                          "exp_avg_sq.<name>" (same shapes as the parameter)
 *   trainer_state.json     {"format": "chimera-checkpoint", "version": 1,
 *                          "chimera_version", "step", "tokens", "adamw_updates",
 *                          "skipped_steps", "elapsed_s", "loader": {seed, epoch,
 *                          position, train_windows, seq_len}, "rng": {key (hex),
 *                          counter}, "schedule": {name, lr, min_lr, warmup,
 *                          total_steps, decay_frac, last_lr}, "backend",
 *                          "device", "dtype", "config" (the resolved YAML),
 *                          "files": {name: {"sha256", "bytes"}}}
 * and becomes visible only complete: it is written to .tmp-step-*, every file
 * and the directory fsynced, then renamed and the run directory fsynced.
 *
 * Data parallel (chimera/comm.h; `mpirun -np N chimera train ...`, or N
 * processes with --rank/--world-size on the cuda backend): every rank holds
 * the whole model and trains on its own slice of each global batch, so
 *     global batch = train.micro_batch x train.grad_accum x world size
 * sequences per optimizer step (train.tokens counts tokens of the global
 * batches, and tokens_per_step in the trainer's config copy is the global
 * one). The gradients are summed over the ranks once per optimizer step,
 * before the norm: in buckets of train.comm_bucket_mb MiB (default 25)
 * started during the last micro batch's backward as its layers finish
 * (chm_model_set_grad_hook), so that the all-reduce overlaps the rest of
 * the backward (nccl on a second stream; mpi with the cpu backend by
 * MPI_Iallreduce), or with train.comm_bucket_mb 0 and on vulkan (mpi
 * host-staged) in one all-reduce after the backward. Each rank's AdamW updates one
 * block of the parameters and holds the moments of that block only
 * (ZeRO-1), then the parameters are all-gathered. Rank 0 alone prints,
 * writes metrics.jsonl and config.yaml, and writes checkpoints in the
 * standard format (the moments gathered from every rank), so a run resumes
 * on any number of ranks; with the same global batch it continues as if
 * nothing had changed. tokens/s counts every rank; MFU is per device.
 * Under mpirun a rank that dies ends the job (Open MPI's runtime); a rank
 * that fails calls chm_comm_abort (the train command does).
 *
 * Errors: chm_status + chm_err as everywhere; messages name the file and,
 * for tensors, the tensor. Threading: one thread per trainer.
 */
#ifndef CHIMERA_TRAINER_H
#define CHIMERA_TRAINER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "chimera/comm.h"
#include "chimera/config.h"
#include "chimera/data.h"
#include "chimera/model.h"
#include "chimera/optim.h"
#include "chimera/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Checkpoints kept in a run directory when the caller does not say. */
#define CHM_CHECKPOINT_KEEP 3
/* Non-finite steps in a row that stop a run (with a checkpoint of the last good state). */
#define CHM_TRAIN_MAX_BAD_STEPS 3
/* Text bytes of the built-in corpus the trainer tokenizes into its cache (corpus seed 1). */
#define CHM_TRAIN_CORPUS_BYTES (INT64_C(8) << 20)
#define CHM_TRAIN_CORPUS_SEED 1

/* ---- evaluation ---------------------------------------------------------------------- */

/* The result of evaluating a model on a set of windows. */
typedef struct chm_eval_result {
    double loss;             /* mean next-token cross-entropy (nats per token) */
    double ppl;              /* exp(loss) */
    double bits_per_byte;    /* loss / ln 2 / bytes_per_token */
    double bytes_per_token;  /* text bytes per target token (EOS counts as one byte) */
    chm_model_loss parts;    /* mean of every loss part over the batches */
    int64_t tokens;          /* target tokens evaluated */
    int64_t batches;
} chm_eval_result;

/*
 * Text bytes per token of the targets of n windows [n, T+1] (positions 1..T
 * of each row): each target decoded with tok, the EOS id counting one byte
 * (so the byte tokenizer gives exactly 1).
 */
chm_status chm_eval_bytes_per_token(const chm_tokenizer *tok, const int32_t *windows, int64_t n,
                                    int64_t T, double *bytes_per_token, chm_err *err);

/*
 * Evaluate m (training routing, gradients untouched) on n windows [n, T+1]
 * of host ids, in micro batches of the model's B (T must be the model's
 * seq_len). Only whole batches are used: the n % B windows left over are not
 * evaluated; n < B is CHM_ERR_INVALID_ARG. bytes_per_token scales bits per byte.
 */
chm_status chm_evaluate(chm_model *m, const int32_t *windows, int64_t n, double bytes_per_token,
                        chm_eval_result *r, chm_err *err);

/* ---- device peak (for MFU) ------------------------------------------------------------ */

/* Where a peak figure comes from. */
typedef struct chm_device_peak {
    double tflops;       /* dense peak in TFLOP/s for the run's dtype; 0 = unknown (no MFU) */
    char source[160];    /* e.g. "NVIDIA H100 SXM bf16 dense (table)", "f32 GEMM 1024^3 measured" */
} chm_device_peak;

/*
 * The peak of be's device for matmuls in dtype dt (bf16 or f32): from a
 * table of known cards by device name for GPU backends, else measured with
 * a short chm_matmul GEMM (a fraction of a second). 0 when neither works:
 * callers then show no MFU rather than a wrong one.
 */
void chm_device_peak_find(chm_backend *be, chm_dtype dt, chm_device_peak *out);

/* ---- checkpoints ----------------------------------------------------------------------- */

/* The trainer's counters saved with a checkpoint. */
typedef struct chm_checkpoint_state {
    int64_t step;             /* optimizer steps done (skipped ones included) */
    int64_t tokens;           /* training tokens consumed */
    int64_t adamw_updates;    /* AdamW updates applied (its bias-correction t) */
    int64_t skipped_steps;    /* non-finite steps skipped so far */
    double elapsed_s;         /* training wall time so far */
    double last_lr;           /* learning rate of the last step */
    chm_loader_cursor cursor; /* the loader's position */
    uint64_t rng_key, rng_counter;  /* the trainer's random stream (reserved for
                                       stochastic features; nothing draws from it yet) */
} chm_checkpoint_state;

/*
 * Save a checkpoint of m, o (may be NULL: no optimizer.safetensors), cfg and
 * st into run_dir/step-XXXXXXXX atomically (see the top of this file), then
 * keep only the newest `keep` (> 0) checkpoints. A checkpoint of the same
 * step already there is replaced. path_out (may be NULL) receives the path.
 */
chm_status chm_checkpoint_save(const char *run_dir, chm_model *m, chm_optim *o,
                               const chm_config *cfg, const chm_checkpoint_state *st, int keep,
                               char *path_out, size_t path_n, chm_err *err);

/* AdamW's state in host memory, for chm_checkpoint_save_moments. */
typedef struct chm_checkpoint_moments {
    chm_dtype dtype;          /* of both arrays: the optimizer's (f32, or f64) */
    const void *exp_avg;      /* [E], laid out like the parameter buffer (element i of a
                                 parameter at chm_model_param.offset + i - the buffer's first) */
    const void *exp_avg_sq;   /* [E] */
    int64_t updates;          /* AdamW's t */
} chm_checkpoint_moments;

/*
 * chm_checkpoint_save with the moments taken from host memory rather than an
 * optimizer: a data-parallel run's rank 0 writes the moments it gathered
 * from every rank's shard (ZeRO-1), in the standard format.
 */
chm_status chm_checkpoint_save_moments(const char *run_dir, chm_model *m,
                                       const chm_checkpoint_moments *mo, const chm_config *cfg,
                                       const chm_checkpoint_state *st, int keep, char *path_out,
                                       size_t path_n, chm_err *err);

/*
 * The newest complete checkpoint of run_dir into path (*found = false when
 * there is none). Leftover temporary directories (.tmp-step-*) of
 * interrupted saves are never picked; with `clean` they are removed.
 */
chm_status chm_checkpoint_latest(const char *run_dir, bool clean, char *path, size_t path_n,
                                 bool *found, chm_err *err);

/* An opened checkpoint: its state, config and verified files. */
typedef struct chm_checkpoint chm_checkpoint;

/*
 * Open checkpoint directory dir: parse trainer_state.json, check the sha256
 * and size of every file it lists, load its config. Errors (CHM_ERR_IO,
 * CHM_ERR_PARSE) name the file: a missing file, a checksum mismatch, a
 * malformed state.
 */
chm_status chm_checkpoint_open(const char *dir, chm_checkpoint **out, chm_err *err);
void chm_checkpoint_close(chm_checkpoint *c);

/* The checkpoint's resolved config and counters (valid until close). */
const chm_config *chm_checkpoint_config(const chm_checkpoint *c);
const chm_checkpoint_state *chm_checkpoint_get_state(const chm_checkpoint *c);
/* Its directory, and the backend name it was written from. */
const char *chm_checkpoint_dir(const chm_checkpoint *c);
const char *chm_checkpoint_backend(const chm_checkpoint *c);

/*
 * Check that model config `want` equals the checkpoint's model section;
 * CHM_ERR_CONFIG naming the first differing key (e.g. "model.d_model is 16
 * in the checkpoint, 32 in the config") otherwise.
 */
chm_status chm_checkpoint_check_model(const chm_checkpoint *c, const chm_config_model *want,
                                      chm_err *err);

/*
 * Load the weights into m: every parameter must be present with its shape
 * (f32 or f64, converted to m's dtype) and no other tensor may be there;
 * CHM_ERR_PARSE naming the file and the tensor otherwise.
 */
chm_status chm_checkpoint_load_model(const chm_checkpoint *c, chm_model *m, chm_err *err);

/* Load the moments into o, the optimizer of m (same checks under the exp_avg. and
 * exp_avg_sq. names), and set its update count from the state. */
chm_status chm_checkpoint_load_optim(const chm_checkpoint *c, chm_model *m, chm_optim *o,
                                     chm_err *err);

/* ---- the trainer ---------------------------------------------------------------------- */

typedef struct chm_trainer chm_trainer;

/* How chm_trainer_open sets a run up. Zero-initialise, then set what you need. */
typedef struct chm_trainer_options {
    const char *backend;     /* "auto", "cpu", "vulkan", "cuda"; NULL: the config's backend key */
    const char *out_dir;     /* run directory; NULL: train.out_dir */
    const char *resume;      /* NULL: a fresh run (refused when the run directory holds
                                checkpoints); "auto": the newest checkpoint of the run
                                directory, or a fresh run when there is none; else a
                                checkpoint directory, or a run directory (its newest) */
    double peak_tflops;      /* > 0: the device peak for MFU (else table or measured) */
    int keep;                /* checkpoints kept; <= 0: CHM_CHECKPOINT_KEEP */
    bool quiet;              /* no informational lines (backend choice, floor, fallbacks) */
    FILE *log;               /* log lines and the progress bar; NULL: silent */
    int progress;            /* progress bar: < 0 when log is a terminal, 0 never, > 0 always */
    const char *cache_dir;   /* where the built-in corpus is tokenized; NULL:
                                $XDG_CACHE_HOME/chimera, else $HOME/.cache/chimera */
    int threads;             /* cpu threads; 0: all cores (shared among the ranks of a
                                data-parallel run on one machine) */
    chm_comm *comm;          /* the data-parallel group (chm_comm_open; the trainer attaches
                                it to its backend and detaches it at close, the caller
                                closes it after); NULL: one process */
} chm_trainer_options;

/* What one optimizer step did. */
typedef struct chm_train_step {
    int64_t step;            /* optimizer steps done after this one (1-based number of it) */
    int64_t tokens;          /* training tokens consumed so far */
    chm_model_loss loss;     /* mean over the step's micro batches */
    double lr;               /* learning rate it used */
    double grad_norm;        /* global gradient norm before clipping */
    double clip_factor;      /* 1, or clip / grad_norm when clipped */
    bool skipped;            /* non-finite loss or gradient norm: no update was applied */
    int bad_streak;          /* non-finite steps in a row, this one included */
    double seconds;          /* wall time of the step */
    double comm_seconds;     /* data parallel: time of the gradient all-reduce and of the
                                parameter all-gather (the device idle first), else 0; in
                                buckets, the all-reduces' own time (chm_comm_timing.busy_s) */
    double comm_exposed_seconds; /* of the gradient all-reduce, the part the backward did not
                                hide: from the end of the backward until the last bucket
                                finished (all of it without buckets), else 0 */
} chm_train_step;

/*
 * Set up a run: choose the backend (auto falls back to the cpu when the
 * chosen device lacks an op the model needs, and says so), prepare the data
 * (the built-in corpus is tokenized once into the cache), build the model,
 * optimizer and loader, then either initialise the weights (fresh run) or
 * resume from a checkpoint (model section checked, weights, moments, loader
 * cursor and counters restored). Prints the run's header to opts->log and
 * appends a "start" event to metrics.jsonl. The trainer copies cfg.
 * Errors: CHM_ERR_CONFIG for a run directory that would be overwritten or a
 * checkpoint of another model; the others as their callees.
 */
chm_status chm_trainer_open(const chm_config *cfg, const chm_trainer_options *opts,
                            chm_trainer **out, chm_err *err);
void chm_trainer_close(chm_trainer *t);

/*
 * One optimizer step: zero the gradients, grad_accum micro batches forward
 * and backward (grad_scale 1/grad_accum), the gradient norm (one download),
 * then, when the loss and the norm are finite, AdamW with the schedule's
 * learning rate and the clip factor. A non-finite step is skipped (no update,
 * a warning on stderr and a "skip" event); it still counts as a
 * step and consumes its data. Debug only: the environment variable
 * CHIMERA_DEBUG_NAN_STEP="k[,k2|a-b...]" makes the gradients of the listed
 * steps (1-based) NaN, to test this path; CHIMERA_DEBUG_DIE_RANK=r (with
 * CHIMERA_DEBUG_DIE_STEP=k, default 1) makes rank r kill itself (SIGKILL)
 * in step k, before its last micro batch (so before any gradient all-reduce
 * of the step), to test a dying rank.
 * Data parallel: a collective call; every rank must take every step.
 */
chm_status chm_trainer_step(chm_trainer *t, chm_train_step *info, chm_err *err);

/* Evaluate on the validation windows (train.eval_batches micro batches; data parallel: per
 * rank, each rank its share, combined); appends an "eval" event and prints a line. */
chm_status chm_trainer_eval(chm_trainer *t, chm_eval_result *r, chm_err *err);

/* Save a checkpoint now (path_out may be NULL); appends a "checkpoint" event. Data
 * parallel: every rank calls it (the moments are gathered), rank 0 writes. */
chm_status chm_trainer_save(chm_trainer *t, char *path_out, size_t path_n, chm_err *err);

/*
 * The loop until train.total_steps: step; a log line and a "train" event
 * every log_every steps (and for the first and last); evaluation every
 * eval_every steps and at the end; a checkpoint every save_every steps and
 * at the end. When *stop becomes nonzero (a signal handler sets it) the
 * current step finishes, a checkpoint is saved and the loop returns CHM_OK
 * with chm_trainer_interrupted true. After CHM_TRAIN_MAX_BAD_STEPS
 * non-finite steps in a row it saves the (unchanged, last good) state and
 * returns CHM_ERR_CONFIG saying where. A periodic checkpoint that cannot be
 * written (disk full) stops the run with that error under train.on_save_error
 * "stop" (the previous checkpoint stays intact), or warns and tries again at the
 * next save under "continue"; a failed final save is an error either way.
 * Debug only: CHIMERA_DEBUG_SAVE_DELAY_MS=N sleeps between the stages of a save
 * (the crash tests aim their kills there). stop may be NULL. Data parallel: the
 * ranks agree before each step whether any of them was asked to stop.
 */
chm_status chm_trainer_run(chm_trainer *t, const volatile sig_atomic_t *stop, chm_err *err);

/* Accessors. */
int64_t chm_trainer_steps_done(const chm_trainer *t);
int64_t chm_trainer_total_steps(const chm_trainer *t);
bool chm_trainer_interrupted(const chm_trainer *t);
chm_model *chm_trainer_model(chm_trainer *t);
chm_optim *chm_trainer_optim(chm_trainer *t);
chm_backend *chm_trainer_backend(chm_trainer *t);
const char *chm_trainer_run_dir(const chm_trainer *t);
const chm_config *chm_trainer_config(const chm_trainer *t);
/* The data's loss floor in nats per token (the built-in corpus), or 0 when unknown. */
double chm_trainer_floor(const chm_trainer *t);

/* ---- helpers the commands share ---------------------------------------------------------- */

/*
 * Open a backend for a run: `name` as chm_backend_open, except that a
 * backend lacking an op the model needs is not used: "auto" then falls back
 * to the cpu (be->why says so; the caller prints it), a named one fails with
 * CHM_ERR_UNSUPPORTED listing the missing ops. threads: cpu threads (0: all
 * cores); quiet: the backend prints no informational lines.
 */
chm_status chm_train_backend_open(const char *name, int threads, bool quiet, chm_backend **out,
                                  chm_err *err);

/* The model dtype `precision: auto` gives on be: bf16 where the backend has CHM_CAP_FAST_BF16
 * (cuda; vulkan on cooperative matrices), f32 elsewhere; NULL be: by name, bf16 for "cuda". */
chm_dtype chm_train_auto_dtype(const chm_backend *be, const char *name);

/* The tokenizer a config names: "byte" or a tokenizer.json path. */
chm_status chm_train_tokenizer(const chm_config *cfg, chm_tokenizer **out, chm_err *err);

/*
 * The validation windows of cfg's data, as the trainer evaluates them:
 * windows [*n, T+1] (malloc'd, caller frees). cache_dir as in the options.
 */
chm_status chm_train_val_windows(const chm_config *cfg, const char *cache_dir, int32_t **windows,
                                 int64_t *n, chm_err *err);

/*
 * For sample and eval: open `path` (a checkpoint directory, or a run
 * directory: its newest checkpoint), a backend by name (as
 * chm_train_backend_open), and a model of the checkpoint's config in f32
 * with micro batch `batch` (<= 0: train.micro_batch) and train.seq_len,
 * loaded with the checkpoint's weights. The caller frees all three
 * (model, then backend, then checkpoint).
 */
chm_status chm_train_open_checkpoint_model(const char *path, const char *backend, int64_t batch,
                                           chm_checkpoint **ck, chm_backend **be, chm_model **m,
                                           chm_err *err);

#ifdef __cplusplus
}
#endif
#endif
