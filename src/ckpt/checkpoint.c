/*
 * checkpoint.c: writing a checkpoint directory (chimera/trainer.h).
 *
 * Order of a save, so that a crash at any point leaves the newest complete
 * checkpoint loadable: write the three files into run_dir/.tmp-step-X-PID,
 * fsync each, fsync the directory, rename it to step-X (a previous step-X
 * is moved aside first and removed after), fsync the run directory, then
 * prune to the newest `keep`. The weights and moments are downloaded with
 * one download per buffer and written under their parameter names.
 */
#include "checkpoint_internal.h"
#include "data/sha256.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chimera/checkpoint.h"

/* Host copy of a whole buffer view (the model's dtype); NULL with err on failure. */
static void *download_all(chm_backend *be, const chm_tensor *view, chm_err *err) {
    size_t nb = chm_tensor_nbytes(view);
    void *h = malloc(nb ? nb : 1);
    if (!h) {
        CHM_ERR(err, CHM_ERR_NOMEM, "checkpoint: no memory for %zu bytes", nb);
        return NULL;
    }
    if (nb && chm_download(be, view, h) != CHM_OK) {
        CHM_ERR(err, CHM_ERR_DEVICE, "checkpoint: download failed: %s", be->err.msg);
        free(h);
        return NULL;
    }
    return h;
}

/* The safetensors entry of parameter p whose data sits at element `at` of host. */
static chm_st_tensor entry(const chm_model_param *p, const char *prefix, chm_dtype dt,
                           const void *host, int64_t at) {
    size_t ds = chm_dtype_size(dt);
    chm_st_tensor t = {.dtype = dt, .ndim = p->ndim, .nbytes = (uint64_t)p->numel * ds,
                       .data = (const char *)host + (size_t)at * ds};
    snprintf(t.name, sizeof t.name, "%s%s", prefix, p->name);
    memcpy(t.shape, p->shape, sizeof t.shape);
    return t;
}

/* model.safetensors: every parameter by name, in table order; the model config as
 * "chimera.config" metadata (for tools/torch_reference.py). */
static chm_status write_model(const char *path, chm_model *m, int64_t step, chm_err *err) {
    chm_tensor view;
    int64_t first;
    ck_param_span(m, false, &view, &first);
    void *host = download_all(chm_model_backend(m), &view, err);
    if (!host) return err->code;
    int n = chm_model_param_count(m);
    chm_st_tensor *t = calloc((size_t)n, sizeof *t);
    chm_status rc = t ? CHM_OK : CHM_ERR(err, CHM_ERR_NOMEM, "checkpoint: no memory");
    for (int i = 0; t && i < n; i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        t[i] = entry(p, "", view.dtype, host, p->offset - first);
    }
    char step_s[32], *cj = NULL;
    snprintf(step_s, sizeof step_s, "%lld", (long long)step);
    if (rc == CHM_OK) rc = chm_model_config_json(chm_model_config(m), &cj, err);
    const char *md[] = {"format", "pt", "chimera.version", CHIMERA_VERSION, "chimera.step", step_s,
                        "chimera.config", cj, NULL};
    if (rc == CHM_OK) rc = chm_safetensors_write(path, t, n, md, err);
    free(cj);
    free(t);
    free(host);
    return rc;
}

/* optimizer.safetensors from host moments: exp_avg.<name> then exp_avg_sq.<name> of every
 * parameter. */
static chm_status write_moments(const char *path, chm_model *m, const chm_checkpoint_moments *mo,
                                chm_err *err) {
    chm_tensor pv;
    int64_t first;
    ck_param_span(m, false, &pv, &first);
    int n = chm_model_param_count(m);
    chm_st_tensor *t = calloc((size_t)(2 * n), sizeof *t);
    chm_status rc = t ? CHM_OK : CHM_ERR(err, CHM_ERR_NOMEM, "checkpoint: no memory");
    for (int i = 0; rc == CHM_OK && i < n; i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        t[i] = entry(p, CK_PREFIX_M, mo->dtype, mo->exp_avg, p->offset - first);
        t[n + i] = entry(p, CK_PREFIX_V, mo->dtype, mo->exp_avg_sq, p->offset - first);
    }
    char upd[32];
    snprintf(upd, sizeof upd, "%lld", (long long)mo->updates);
    const char *md[] = {"format", "pt", "chimera.adamw_updates", upd, NULL};
    if (rc == CHM_OK) rc = chm_safetensors_write(path, t, 2 * n, md, err);
    free(t);
    return rc;
}

/* The same from an optimizer's moments on the device (one download per moment). */
static chm_status write_optim(const char *path, chm_model *m, chm_optim *o, chm_err *err) {
    chm_tensor mv, vv;
    chm_optim_moment_buffers(o, &mv, &vv);
    void *hm = download_all(chm_model_backend(m), &mv, err);
    void *hv = hm ? download_all(chm_model_backend(m), &vv, err) : NULL;
    chm_checkpoint_moments mo = {.dtype = mv.dtype, .exp_avg = hm, .exp_avg_sq = hv,
                                 .updates = chm_optim_updates(o)};
    chm_status rc = hm && hv ? write_moments(path, m, &mo, err) : err->code;
    free(hm);
    free(hv);
    return rc;
}

/* The resolved config as YAML text (malloc'd), or NULL. */
static char *config_yaml(const chm_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    chm_config_write(cfg, f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* {"sha256": ..., "bytes": ...} of dir/name after fsyncing it. */
static json_t *file_entry(const char *dir, const char *name, chm_err *err) {
    char path[CK_PATH], hex[65];
    int64_t size = 0;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (ck_fsync_path(path, err) || chm_sha256_file(path, hex, &size, err)) return NULL;
    return json_pack("{s:s,s:I}", "sha256", hex, "bytes", (json_int_t)size);
}

static json_t *schedule_json(const chm_config_train *tc, double last_lr) {
    return json_pack("{s:s,s:f,s:f,s:I,s:I,s:f,s:f}", "name",
                     chm_config_schedule_name(tc->schedule), "lr", tc->lr, "min_lr", tc->min_lr,
                     "warmup", (json_int_t)tc->warmup, "total_steps", (json_int_t)tc->total_steps,
                     "decay_frac", tc->decay_frac, "last_lr", last_lr);
}

/* The counters, config and file checksums as trainer_state.json's object. */
static json_t *state_json(const chm_config *cfg, const chm_checkpoint_state *st, chm_model *m,
                          json_t *files, const char *yaml) {
    const chm_loader_cursor *c = &st->cursor;
    char key[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)st->rng_key);
    chm_backend *be = chm_model_backend(m);
    json_t *loader = json_pack("{s:I,s:I,s:I,s:I,s:I}", "seed", (json_int_t)c->seed, "epoch",
                               (json_int_t)c->epoch, "position", (json_int_t)c->position,
                               "train_windows", (json_int_t)c->train_windows, "seq_len",
                               (json_int_t)c->seq_len);
    json_t *rng = json_pack("{s:s,s:I}", "key", key, "counter", (json_int_t)st->rng_counter);
    return json_pack("{s:s,s:i,s:s,s:I,s:I,s:I,s:I,s:f,s:o,s:o,s:o,s:s,s:s,s:s,s:s,s:o}",
                     "format", CK_FORMAT, "version", CK_VERSION, "chimera_version", CHIMERA_VERSION,
                     "step", (json_int_t)st->step, "tokens", (json_int_t)st->tokens,
                     "adamw_updates", (json_int_t)st->adamw_updates, "skipped_steps",
                     (json_int_t)st->skipped_steps, "elapsed_s", st->elapsed_s, "loader", loader,
                     "rng", rng, "schedule", schedule_json(&cfg->train, st->last_lr), "backend",
                     be->name, "device", be->device, "dtype", chm_dtype_name(chm_model_dtype(m)),
                     "config", yaml, "files", files);
}

/* Write trainer_state.json into dir (after the two tensor files) and fsync it. */
static chm_status write_state(const char *dir, chm_model *m, bool with_optim, const chm_config *cfg,
                              const chm_checkpoint_state *st, chm_err *err) {
    json_t *files = json_object();
    json_t *fm = file_entry(dir, CK_MODEL_FILE, err);
    json_t *fo = with_optim && fm ? file_entry(dir, CK_OPTIM_FILE, err) : NULL;
    if (!fm || (with_optim && !fo)) {
        json_decref(files);
        json_decref(fm);
        return err->code ? err->code : CHM_ERR(err, CHM_ERR_IO, "%s: cannot checksum", dir);
    }
    json_object_set_new(files, CK_MODEL_FILE, fm);
    if (fo) json_object_set_new(files, CK_OPTIM_FILE, fo);
    char *yaml = config_yaml(cfg);
    if (!yaml) {
        json_decref(files);
        return CHM_ERR(err, CHM_ERR_NOMEM, "checkpoint: cannot write the config");
    }
    json_t *root = state_json(cfg, st, m, files, yaml);
    free(yaml);
    char path[CK_PATH];
    snprintf(path, sizeof path, "%s/" CK_STATE_FILE, dir);
    if (!root) return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory for the state", path);
    /* stdio rather than json_dump_file: a full disk must be reported with its errno. */
    FILE *f = fopen(path, "w");
    int bad = !f || json_dumpf(root, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                                            JSON_REAL_PRECISION(17)) != 0;
    int e = errno;
    if (f && fclose(f) != 0 && !bad) bad = 1, e = errno;
    json_decref(root);
    if (bad) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    return ck_fsync_path(path, err);
}

/*
 * Debug only: CHIMERA_DEBUG_SAVE_DELAY_MS=N sleeps N milliseconds between the
 * stages of a save (after each file, before the rename), so that a test can
 * land SIGKILLs inside saves (tests/test_reliability_kill.c).
 */
static void debug_pause(void) {
    const char *s = getenv("CHIMERA_DEBUG_SAVE_DELAY_MS");
    long ms = s ? strtol(s, NULL, 10) : 0;
    if (ms <= 0 || ms > 60000) return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Move tmp into place as final (replacing an existing final), then sync run_dir. */
static chm_status publish(const char *run_dir, const char *tmp, const char *final, chm_err *err) {
    char old[CK_PATH];
    snprintf(old, sizeof old, "%s.old-%ld", tmp, (long)getpid());
    bool had = ck_exists(final);
    if (had && rename(final, old) != 0)
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot move the old checkpoint aside: %s", final,
                       strerror(errno));
    if (rename(tmp, final) != 0) {
        int e = errno;
        if (had) (void)rename(old, final); /* put the old checkpoint back */
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot rename to %s: %s", tmp, final, strerror(e));
    }
    chm_status rc = ck_fsync_path(run_dir, err);
    if (rc == CHM_OK && had) rc = ck_remove_tree(old, err);
    return rc;
}

/* A save with the moments from an optimizer (o), from host memory (mo), or none. */
static chm_status save_any(const char *run_dir, chm_model *m, chm_optim *o,
                           const chm_checkpoint_moments *mo, const chm_config *cfg,
                           const chm_checkpoint_state *st, int keep, char *path_out, size_t path_n,
                           chm_err *err) {
    chm_err local;
    if (!err) err = &local;
    char tmp[CK_PATH], final[CK_PATH], path[CK_PATH];
    snprintf(final, sizeof final, "%s/step-%08lld", run_dir, (long long)st->step);
    snprintf(tmp, sizeof tmp, "%s/" CK_TMP_PREFIX "%08lld-%ld", run_dir, (long long)st->step,
             (long)getpid());
    chm_status rc = ck_mkdirs(run_dir, err);
    if (rc == CHM_OK) rc = ck_remove_tree(tmp, err);
    if (rc == CHM_OK && mkdir(tmp, 0777) != 0)
        rc = CHM_ERR(err, CHM_ERR_IO, "%s: cannot create the checkpoint directory", tmp);
    snprintf(path, sizeof path, "%s/" CK_MODEL_FILE, tmp);
    if (rc == CHM_OK) rc = write_model(path, m, st->step, err);
    debug_pause();
    snprintf(path, sizeof path, "%s/" CK_OPTIM_FILE, tmp);
    if (rc == CHM_OK && o) rc = write_optim(path, m, o, err);
    else if (rc == CHM_OK && mo) rc = write_moments(path, m, mo, err);
    debug_pause();
    if (rc == CHM_OK) rc = write_state(tmp, m, o || mo, cfg, st, err);
    if (rc == CHM_OK) rc = ck_fsync_path(tmp, err);
    debug_pause();
    if (rc == CHM_OK) rc = publish(run_dir, tmp, final, err);
    if (rc != CHM_OK) {
        chm_err ignore;
        ck_remove_tree(tmp, &ignore);
        return rc;
    }
    if (path_out) snprintf(path_out, path_n, "%s", final);
    return ck_prune(run_dir, keep > 0 ? keep : CHM_CHECKPOINT_KEEP, err);
}

chm_status chm_checkpoint_save(const char *run_dir, chm_model *m, chm_optim *o,
                               const chm_config *cfg, const chm_checkpoint_state *st, int keep,
                               char *path_out, size_t path_n, chm_err *err) {
    return save_any(run_dir, m, o, NULL, cfg, st, keep, path_out, path_n, err);
}

chm_status chm_checkpoint_save_moments(const char *run_dir, chm_model *m,
                                       const chm_checkpoint_moments *mo, const chm_config *cfg,
                                       const chm_checkpoint_state *st, int keep, char *path_out,
                                       size_t path_n, chm_err *err) {
    return save_any(run_dir, m, NULL, mo, cfg, st, keep, path_out, path_n, err);
}
