/*
 * trainer.c: setting a run up and tearing it down (chimera/trainer.h):
 * the run directory and its refusal rules, the backend (auto falls back to
 * the cpu when the device lacks an op), data, model, optimizer, and either
 * fresh weights or a resumed checkpoint.
 *
 * A resume restores exactly what the next step reads: weights, moments and
 * AdamW's update count, the loader cursor, and the counters. Together with
 * the cpu backend's determinism this makes N + N steps equal 2N steps bit
 * for bit (tests/test_train.c).
 */
#include "trainer_internal.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chimera/rng.h"
#include "ckpt/checkpoint_internal.h"

double tr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- backend ------------------------------------------------------------------------------ */

/* Names of the ops be lacks, comma separated, into out; their count. */
static int missing_ops(const chm_backend *be, char *out, size_t n) {
    int miss = 0;
    out[0] = '\0';
    for (int i = 0; i < chm_backend_op_count(); i++) {
        if (chm_backend_has_op(be, i)) continue;
        if (miss++ < 4)
            snprintf(out + strlen(out), n - strlen(out), "%s%s", miss > 1 ? ", " : "",
                     chm_backend_op_name(i));
    }
    if (miss > 4) snprintf(out + strlen(out), n - strlen(out), ", ...");
    return miss;
}

/* chm_train_backend_open on device `device` (-1: the backend's choice). */
static chm_status backend_open_on(const char *name, int device, int threads, bool quiet,
                                  chm_backend **out, chm_err *err) {
    chm_backend_options bo = {.device_index = device, .threads = threads, .quiet = quiet};
    bool is_auto = !name || !strcmp(name, "auto");
    chm_status rc = chm_backend_open(is_auto ? "auto" : name, &bo, out, err);
    if (rc || !strcmp((*out)->name, "cpu")) return rc;
    char ops[256], why[sizeof (*out)->why];
    int miss = missing_ops(*out, ops, sizeof ops);
    if (miss == 0) return CHM_OK;
    if (!is_auto) {
        rc = CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                     "backend %s on %.80s lacks %d of the model's ops (%s): it cannot train yet; "
                     "use --backend cpu or auto", (*out)->name, (*out)->device, miss, ops);
        chm_backend_close(*out);
        *out = NULL;
        return rc;
    }
    snprintf(why, sizeof why, "auto: cpu, since %s on %.80s lacks %d of the model's ops (%s); "
             "was: %.200s", (*out)->name, (*out)->device, miss, ops, (*out)->why);
    chm_backend_close(*out);
    *out = NULL;
    rc = chm_backend_open("cpu", &bo, out, err);
    if (rc == CHM_OK) snprintf((*out)->why, sizeof (*out)->why, "%s", why);
    return rc;
}

chm_status chm_train_backend_open(const char *name, int threads, bool quiet, chm_backend **out,
                                  chm_err *err) {
    return backend_open_on(name, -1, threads, quiet, out, err);
}

/* The backend name the run asks for: the option, else the config's key. */
static const char *backend_name(const chm_config *cfg, const chm_trainer_options *o) {
    if (o->backend) return o->backend;
    return chm_config_backend_name(cfg->backend);
}

/* ---- the run directory ---------------------------------------------------------------------- */

/*
 * Where to resume from: *ckpt gets a checkpoint directory or "" for a fresh
 * run. Refuses a fresh run into a directory that holds checkpoints.
 */
static chm_status resolve_resume(chm_trainer *t, const chm_trainer_options *o, char *ckpt,
                                 size_t n, chm_err *err) {
    bool found;
    char latest[TR_PATH], state[TR_PATH + 32];
    ckpt[0] = '\0';
    if (o->resume && strcmp(o->resume, "auto") != 0) {
        snprintf(state, sizeof state, "%s/" CK_STATE_FILE, o->resume);
        if (ck_exists(state)) {
            snprintf(ckpt, n, "%s", o->resume);
            return CHM_OK;
        }
        chm_status rc = chm_checkpoint_latest(o->resume, t->rank == 0, ckpt, n, &found, err);
        if (rc == CHM_OK && !found)
            rc = CHM_ERR(err, CHM_ERR_IO, "--resume %s: neither a checkpoint (no " CK_STATE_FILE
                         ") nor a run directory holding one", o->resume);
        return rc;
    }
    /* only rank 0 removes leftovers: the others must not race it */
    chm_status rc = chm_checkpoint_latest(t->run_dir, o->resume && t->rank == 0, latest,
                                          sizeof latest, &found, err);
    if (rc || !found) return rc;
    if (!o->resume)
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "%s already holds checkpoints (newest: %s): continue it with --resume auto, "
                       "or train into another --out DIR", t->run_dir, latest);
    snprintf(ckpt, n, "%s", latest);
    return CHM_OK;
}

/* The run directory: the option, else train.out_dir, else the checkpoint's parent. */
static void resolve_run_dir(chm_trainer *t, const chm_trainer_options *o) {
    if (o->out_dir) {
        snprintf(t->run_dir, sizeof t->run_dir, "%s", o->out_dir);
    } else if (o->resume && strcmp(o->resume, "auto") != 0) {
        char state[TR_PATH + 32];
        snprintf(state, sizeof state, "%s/" CK_STATE_FILE, o->resume);
        snprintf(t->run_dir, sizeof t->run_dir, "%s", o->resume);
        char *slash = strrchr(t->run_dir, '/');
        if (ck_exists(state)) {
            if (slash && slash != t->run_dir) *slash = '\0';
            else snprintf(t->run_dir, sizeof t->run_dir, ".");
        }
    } else {
        snprintf(t->run_dir, sizeof t->run_dir, "%s", t->cfg.train.out_dir);
    }
}

/* A deep copy of cfg (written as YAML and loaded back). */
static chm_status copy_config(const chm_config *cfg, chm_config *out, chm_err *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the config");
    chm_config_write(cfg, f);
    fclose(f);
    chm_status rc = chm_config_load_string(buf, cfg->source, NULL, 0, out, err);
    free(buf);
    return rc;
}

/* config.yaml in the run directory: what this start or resume runs with. */
static chm_status write_config_file(chm_trainer *t, chm_err *err) {
    char path[TR_PATH + 16];
    snprintf(path, sizeof path, "%s/config.yaml", t->run_dir);
    FILE *f = fopen(path, "w");
    if (!f) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    chm_config_write(&t->cfg, f);
    return fclose(f) == 0 ? CHM_OK : CHM_ERR(err, CHM_ERR_IO, "%s: write failed", path);
}

static chm_status open_metrics(chm_trainer *t, bool fresh, chm_err *err) {
    char path[TR_PATH + 16];
    snprintf(path, sizeof path, "%s/metrics.jsonl", t->run_dir);
    t->metrics = fopen(path, fresh ? "w" : "a");
    if (!t->metrics) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return CHM_OK;
}

/* ---- model, optimizer, state ------------------------------------------------------------------ */

chm_dtype chm_train_auto_dtype(const chm_backend *be, const char *name) {
    if (be) return (be->caps & CHM_CAP_FAST_BF16) ? CHM_BF16 : CHM_F32;
    return name && strcmp(name, "cuda") == 0 ? CHM_BF16 : CHM_F32;
}

/*
 * The model dtype of `precision`: bf16 is mixed precision (fp32 master weights). auto picks it
 * where bf16 matmuls run on matrix units (chm_train_auto_dtype): cuda, and vulkan on a device
 * with cooperative matrices (chimera-1b on an H100's Vulkan driver: 8,419 tokens/s in bf16
 * against 3,789 in f32 at micro batch 1). Elsewhere vulkan trains in bf16 only when asked. A
 * backend without bf16 storage (a Vulkan device lacking 16-bit storage) refuses bf16 here,
 * before the model makes a tensor.
 */
static chm_status model_dtype(chm_config_precision p, const chm_backend *be, chm_dtype *dt,
                              chm_err *err) {
    if (p == CHM_CONFIG_PRECISION_AUTO) *dt = chm_train_auto_dtype(be, be->name);
    else *dt = p == CHM_CONFIG_PRECISION_BF16 ? CHM_BF16 : CHM_F32;
    if (*dt == CHM_BF16 && !(be->caps & CHM_CAP_BF16))
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                       "precision bf16: the %s backend on %s has no bf16 storage (a Vulkan device "
                       "needs 16-bit storage buffers); use precision f32 here",
                       be->name, be->device);
    return CHM_OK;
}

static chm_status build_model(chm_trainer *t, chm_err *err) {
    const chm_config *cfg = &t->cfg;
    chm_model_options mo = {.batch = cfg->train.micro_batch, .seq_len = cfg->train.seq_len,
                            .recompute = cfg->train.recompute};
    chm_status rc = model_dtype(cfg->precision, t->be, &mo.dtype, err);
    if (rc == CHM_OK) rc = chm_model_create(&cfg->model, t->be, &mo, &t->model, err);
    chm_optim_options oo = rc == CHM_OK ? tr_dp_optim_options(t) : (chm_optim_options){0};
    if (rc == CHM_OK) rc = chm_optim_create(t->model, &cfg->train, &oo, &t->optim, err);
    if (rc == CHM_OK) rc = chm_model_stats_compute(&cfg->model, cfg->train.seq_len, &t->stats, err);
    size_t B = (size_t)cfg->train.micro_batch, T = (size_t)cfg->train.seq_len;
    if (rc == CHM_OK && !(t->batch = malloc(B * (T + 1) * sizeof *t->batch)))
        rc = CHM_ERR(err, CHM_ERR_NOMEM, "no memory for a batch");
    if (rc) return rc;
    t->mem_bytes = chm_model_arena_bytes(t->model) + chm_model_buffer_bytes(t->model) +
                   chm_optim_bytes(t->optim);
    return CHM_OK;
}

/* Restore weights, moments, cursor and counters from checkpoint dir. */
static chm_status resume_from(chm_trainer *t, chm_checkpoint *c, chm_err *err) {
    chm_status rc = chm_checkpoint_load_model(c, t->model, err);
    bool sharded = t->world > 1; /* ZeRO-1: each rank reads its own block */
    if (rc == CHM_OK) rc = sharded ? tr_dp_load_moments(t, c, err)
                                   : chm_checkpoint_load_optim(c, t->model, t->optim, err);
    if (rc) return rc;
    t->st = *chm_checkpoint_get_state(c);
    rc = chm_loader_set_cursor(t->loader, &t->st.cursor, err);
    if (rc)
        return CHM_ERR(err, CHM_ERR_CONFIG, "%s: its loader cursor does not fit this data: %s",
                       chm_checkpoint_dir(c), err ? err->msg : "");
    t->last_saved = t->st.step;
    return CHM_OK;
}

static chm_status fresh_start(chm_trainer *t, chm_err *err) {
    memset(&t->st, 0, sizeof t->st);
    chm_rng r = chm_rng_keyed((uint64_t)t->cfg.train.seed, "trainer");
    t->st.rng_key = r.key;
    t->last_saved = -1;
    return chm_model_init_params(t->model, (uint64_t)t->cfg.train.seed, err);
}

/* ---- open and close --------------------------------------------------------------------------- */

/* Everything after the run directory and the checkpoint are known. */
/*
 * The backend of this rank, attached to the group: in a data-parallel run
 * the cuda device local_rank % devices, and cpu threads shared among the
 * ranks of this machine unless --threads says.
 */
static chm_status open_backend(chm_trainer *t, const chm_trainer_options *o, chm_err *err) {
    const char *name = backend_name(&t->cfg, o);
    int threads = o->threads;
    if (threads <= 0 && t->world > 1) {
        int share = omp_get_num_procs() / chm_comm_local_size(t->comm);
        threads = share > 1 ? share : 1;
    }
    chm_status rc = backend_open_on(name, chm_comm_device_index(t->comm, name), threads, t->quiet,
                                    &t->be, err);
    return rc ? rc : tr_dp_attach(t, err);
}

static chm_status open_parts(chm_trainer *t, const chm_trainer_options *o, chm_checkpoint *c,
                             chm_err *err) {
    chm_status rc = c ? chm_checkpoint_check_model(c, &t->cfg.model, err) : CHM_OK;
    if (rc == CHM_OK) rc = open_backend(t, o, err);
    if (rc == CHM_OK) rc = tr_data_open(t, err);
    if (rc == CHM_OK) rc = build_model(t, err);
    if (rc == CHM_OK) rc = c ? resume_from(t, c, err) : fresh_start(t, err);
    if (rc == CHM_OK) rc = tr_dp_start(t, err);
    /* the run directory's files are rank 0's: one config.yaml, one metrics.jsonl */
    if (rc == CHM_OK && t->rank == 0) rc = ck_mkdirs(t->run_dir, err);
    if (rc == CHM_OK && t->rank == 0) rc = write_config_file(t, err);
    if (rc == CHM_OK && t->rank == 0) rc = open_metrics(t, c == NULL, err);
    if (rc) return rc;
    if (t->rank != 0) {
        snprintf(t->peak.source, sizeof t->peak.source, "rank 0 reports MFU");
    } else if (o->peak_tflops > 0) {
        t->peak.tflops = o->peak_tflops;
        snprintf(t->peak.source, sizeof t->peak.source, "--peak-tflops");
    } else {
        chm_device_peak_find(t->be, chm_model_dtype(t->model), &t->peak);
    }
    return CHM_OK;
}

static void set_options(chm_trainer *t, const chm_trainer_options *o) {
    tr_dp_options(t, o->comm);
    /* one voice: the other ranks of a data-parallel run print nothing but errors */
    t->quiet = o->quiet || !t->cfg.warnings || t->rank != 0;
    t->keep = o->keep > 0 ? o->keep : CHM_CHECKPOINT_KEEP;
    t->log = t->rank == 0 ? o->log : NULL;
    /* under mpirun stdout is often a pty that no one watches live: no bar unless asked */
    t->bar = t->log && (o->progress > 0 ||
                        (o->progress < 0 && t->world == 1 && isatty(fileno(o->log))));
    tr_cache_dir(o->cache_dir, t->cache_dir, sizeof t->cache_dir);
    const char *nan = getenv("CHIMERA_DEBUG_NAN_STEP");
    t->nan_steps = nan && *nan ? strdup(nan) : NULL;
    t->last_eval_loss = NAN;
}

chm_status chm_trainer_open(const chm_config *cfg, const chm_trainer_options *opts,
                            chm_trainer **out, chm_err *err) {
    chm_trainer_options none = {.progress = -1};
    const chm_trainer_options *o = opts ? opts : &none;
    *out = NULL;
    chm_trainer *t = calloc(1, sizeof *t);
    if (!t) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for a trainer");
    chm_status rc = copy_config(cfg, &t->cfg, err);
    if (rc) {
        free(t);
        return rc;
    }
    set_options(t, o);
    resolve_run_dir(t, o);
    char ckpt[TR_PATH];
    chm_checkpoint *c = NULL;
    rc = resolve_resume(t, o, ckpt, sizeof ckpt, err);
    if (rc == CHM_OK && ckpt[0]) rc = chm_checkpoint_open(ckpt, &c, err);
    if (rc == CHM_OK) rc = open_parts(t, o, c, err);
    chm_checkpoint_close(c);
    if (rc) {
        chm_trainer_close(t);
        return rc;
    }
    t->t_open = tr_now();
    t->elapsed_open = t->st.elapsed_s;
    tr_log_header(t, ckpt[0] ? ckpt : NULL);
    tr_log_start(t, ckpt[0] ? ckpt : NULL);
    *out = t;
    return CHM_OK;
}

void chm_trainer_close(chm_trainer *t) {
    if (!t) return;
    if (t->metrics) fclose(t->metrics);
    chm_optim_free(t->optim);
    chm_model_free(t->model);
    chm_loader_close(t->loader);
    chm_tokenizer_free(t->tok);
    chm_comm_detach(t->comm); /* the transport lives on the backend: let go of it first */
    chm_backend_close(t->be);
    chm_config_free(&t->cfg);
    free(t->batch);
    free(t->val);
    free(t->nan_steps);
    free(t);
}

int64_t chm_trainer_steps_done(const chm_trainer *t) { return t->st.step; }
int64_t chm_trainer_total_steps(const chm_trainer *t) { return t->cfg.train.total_steps; }
bool chm_trainer_interrupted(const chm_trainer *t) { return t->interrupted; }
chm_model *chm_trainer_model(chm_trainer *t) { return t->model; }
chm_optim *chm_trainer_optim(chm_trainer *t) { return t->optim; }
chm_backend *chm_trainer_backend(chm_trainer *t) { return t->be; }
const char *chm_trainer_run_dir(const chm_trainer *t) { return t->run_dir; }
const chm_config *chm_trainer_config(const chm_trainer *t) { return &t->cfg; }
double chm_trainer_floor(const chm_trainer *t) { return t->floor; }
