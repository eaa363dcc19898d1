/*
 * verify.c: `chimera verify` as a library (chimera/verify.h): options,
 * which backends run, and the phases in order: ops (verify_ops.c), then
 * step, trajectory and checkpoint crossing (verify_step.c, verify_traj.c,
 * verify_ckpt.c) in a private temporary directory.
 */
#include "verify_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt/checkpoint_internal.h"

void vf_progress(FILE *f, const char *fmt, ...) {
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fflush(f);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- options ---- */

/* "a, b, c" of every op name into buf. */
static void op_list(char *buf, size_t n) {
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < chm_verify_op_count() && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? ", " : "", chm_verify_op_name(i));
}

/* want[i] for every op from "all", "none" or a comma list. */
static chm_status parse_ops(const char *spec, bool *want, chm_err *err) {
    bool all = !spec || !strcmp(spec, "all"), none = spec && !strcmp(spec, "none");
    for (int i = 0; i < chm_verify_op_count(); i++) want[i] = all;
    if (all || none) return CHM_OK;
    char buf[1024], names[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        int i = vf_op_index(tok);
        if (i < 0) {
            op_list(names, sizeof names);
            return CHM_ERR(err, CHM_ERR_INVALID_ARG, "unknown op '%s' in --ops; the ops are: %s "
                           "(or all, or none)", tok, names);
        }
        want[i] = true;
    }
    return CHM_OK;
}

/* The backends to verify: the list given (checked), or every compiled one, cpu first. */
static chm_status parse_backends(const char *spec, chm_verify_report *r, chm_err *err) {
    static const char *const known[] = {"cpu", "vulkan", "cuda"};
    bool named = spec && *spec;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", named ? spec : "cpu,vulkan,cuda");
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        int k = -1, dup = 0;
        for (int i = 0; i < 3; i++) k = strcmp(tok, known[i]) ? k : i;
        if (k < 0)
            return CHM_ERR(err, CHM_ERR_INVALID_ARG, "unknown backend '%s' in --backends; choose "
                           "from cpu, vulkan and cuda, comma separated", tok);
        for (int b = 0; b < r->n_backends; b++) dup |= !strcmp(r->backends[b].name, tok);
        if (dup) continue;
        chm_verify_backend *v = &r->backends[r->n_backends++];
        snprintf(v->name, sizeof v->name, "%s", tok);
        v->named = named;
    }
    return CHM_OK;
}

/* Open every listed backend; a named one that cannot open is an error. */
static chm_status open_backends(chm_verify_report *r, const chm_verify_options *o,
                                chm_backend **bes, int *n, chm_err *err) {
    chm_backend_options bo = {.device_index = -1, .threads = o->threads, .quiet = true};
    *n = 0;
    for (int b = 0; b < r->n_backends; b++) {
        chm_verify_backend *v = &r->backends[b];
        const chm_backend_info *info = NULL;
        for (int i = 0; i < chm_backend_count(); i++)
            if (!strcmp(chm_backend_get_info(i)->name, v->name)) info = chm_backend_get_info(i);
        chm_err e = {0};
        chm_status rc = info && !info->compiled && !v->named
                            ? CHM_ERR(&e, CHM_ERR_UNSUPPORTED, "not built into this binary")
                            : chm_backend_open(v->name, &bo, &bes[*n], &e);
        if (rc == CHM_OK) {
            v->available = true;
            snprintf(v->device, sizeof v->device, "%s", bes[(*n)++]->device);
        } else if (v->named) {
            return CHM_ERR(err, rc, "--backends names %s, which cannot run here: %s", v->name,
                           e.msg);
        } else {
            snprintf(v->why, sizeof v->why, "%s", e.msg);
        }
    }
    return CHM_OK;
}

/* ---- the model phases ---- */

static chm_status model_tmp(vf_model *m, const chm_verify_options *o, chm_err *err) {
    const char *base = o->tmp_dir ? o->tmp_dir : getenv("TMPDIR");
    snprintf(m->tmp, sizeof m->tmp, "%s/chimera-verify-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(m->tmp))
        return CHM_ERR(err, CHM_ERR_IO, "cannot make a temporary directory %s", m->tmp);
    return CHM_OK;
}

/* The reference's model description, "427.5k parameters, f32, batch 8 x 64 tokens". */
static void describe(chm_verify_report *r, const vf_model *m, chm_dtype dt) {
    snprintf(r->model_desc, sizeof r->model_desc, "%.1fk parameters, %s, batch %d x %d tokens%s",
             (double)m->n_values / 1e3, chm_dtype_name(dt), m->cfg->train.micro_batch,
             m->cfg->train.seq_len, m->cfg->train.grad_accum > 1 ? " x grad_accum" : "");
}

/* The step and trajectory phases on runs[0..n) (runs[0] is the reference). */
static chm_status steps_and_traj(chm_verify_report *r, vf_model *m, vf_run *runs, int n,
                                 chm_err *err) {
    for (int i = 0; i < n; i++) {
        vf_progress(m->o->progress, "verify: step 1 on %s", runs[i].backend);
        vf_run_open(m, &runs[i], NULL);
        vf_run_first(m, &runs[i]);
        if (i == 0 && !runs[0].ok)
            return CHM_ERR(err, runs[0].rc ? runs[0].rc : CHM_ERR_INTERNAL,
                           "verify: the cpu reference run failed: %s", runs[0].why);
    }
    describe(r, m, runs[0].dtype);
    for (int i = 1; i < n; i++) vf_step_compare(m, &runs[0], &runs[i], &r->steps[r->n_steps++]);
    for (int i = 0; i < n; i++) {
        vf_progress(m->o->progress, "verify: trajectory of %d steps, checkpoint and one more "
                    "step on %s", m->steps, runs[i].backend);
        vf_run_traj(m, &runs[i]);
        vf_run_save_next(m, &runs[i]);
        if (i == 0 && !runs[0].ok)
            return CHM_ERR(err, runs[0].rc ? runs[0].rc : CHM_ERR_INTERNAL,
                           "verify: the cpu reference run failed: %s", runs[0].why);
    }
    r->traj_steps = m->steps;
    r->ref_traj = malloc((size_t)m->steps * sizeof *r->ref_traj);
    if (!r->ref_traj) return CHM_ERR(err, CHM_ERR_NOMEM, "verify: no memory");
    memcpy(r->ref_traj, runs[0].losses, (size_t)m->steps * sizeof *r->ref_traj);
    for (int i = 1; i < n; i++) vf_traj_compare(m, &runs[0], &runs[i], &r->trajs[r->n_trajs++]);
    return CHM_OK;
}

static void crossings(chm_verify_report *r, vf_model *m, vf_run *runs, int n) {
    for (int i = 1; i < n; i++) {
        vf_progress(m->o->progress, "verify: checkpoint crossing cpu <-> %s", runs[i].backend);
        vf_cross(m, &runs[0], runs[i].backend, &r->crosses[r->n_crosses]);
        r->crosses[r->n_crosses++].from_ref = true;
        vf_cross(m, &runs[i], runs[0].backend, &r->crosses[r->n_crosses++]);
    }
}

static chm_status model_phases(chm_verify_report *r, const chm_verify_options *o,
                               const chm_config *cfg, chm_err *err) {
    vf_model m = {.cfg = cfg, .o = o, .steps = o->steps > 0 ? o->steps : CHM_VERIFY_DEFAULT_STEPS};
    vf_run runs[CHM_VERIFY_MAX_BACKENDS + 1];
    memset(runs, 0, sizeof runs);
    int n = 1;
    snprintf(runs[0].backend, sizeof runs[0].backend, "cpu");
    snprintf(r->reference, sizeof r->reference, "cpu");
    for (int b = 0; b < r->n_backends; b++) /* a listed cpu runs too: determinism, exact resume */
        if (r->backends[b].available)
            snprintf(runs[n++].backend, sizeof runs[0].backend, "%s", r->backends[b].name);
    r->steps = calloc((size_t)n, sizeof *r->steps);
    r->trajs = calloc((size_t)n, sizeof *r->trajs);
    r->crosses = calloc((size_t)(2 * n), sizeof *r->crosses);
    if (!r->steps || !r->trajs || !r->crosses)
        return CHM_ERR(err, CHM_ERR_NOMEM, "verify: no memory");
    chm_status rc = model_tmp(&m, o, err);
    if (rc) return rc;
    r->model_run = true;
    rc = steps_and_traj(r, &m, runs, n, err);
    if (rc == CHM_OK) crossings(r, &m, runs, n);
    for (int i = 0; i < n; i++) vf_run_close(&runs[i]);
    chm_err ignore;
    ck_remove_tree(m.tmp, &ignore);
    return rc;
}

/* ---- the whole run ---- */

/* The op phase on the opened backends. */
static chm_status ops_phase(chm_verify_report *r, const chm_verify_options *o, const bool *want,
                            chm_backend **bes, int n, chm_err *err) {
    bool any = false;
    for (int i = 0; i < chm_verify_op_count(); i++) any |= want[i];
    if (!any || n == 0) return CHM_OK;
    r->ops_run = true;
    double t0 = now_s();
    chm_status rc = vf_ops_run(r, bes, n, want, CHM_F32, r->seed, o->threads, o->progress, err);
    if (rc == CHM_OK && o->bf16)
        rc = vf_ops_run(r, bes, n, want, CHM_BF16, r->seed, o->threads, o->progress, err);
    if (rc == CHM_OK) rc = vf_build_rows(r, want, err);
    r->seconds_ops = now_s() - t0;
    return rc;
}

static void note_fault(FILE *progress) {
    const char *f = getenv("CHIMERA_DEBUG_FAULT");
    if (f && *f)
        vf_progress(progress, "verify: CHIMERA_DEBUG_FAULT=%s is set: that op's output is "
                    "perturbed on purpose (the op phase's reference is not)", f);
}

static chm_status run_phases(chm_verify_report *r, const chm_verify_options *o, const bool *want,
                             chm_err *err) {
    chm_config cfg;
    memset(&cfg, 0, sizeof cfg);
    chm_status rc = CHM_OK;
    if (!o->no_model) rc = chm_config_load(o->config, o->sets, o->n_sets, &cfg, err);
    if (rc) return rc;
    /* auto would train cuda in bf16 and the cpu in f32: compare like with like, in f32,
     * unless the config asks for 16 bits explicitly (then the bf16 limits apply) */
    if (cfg.precision == CHM_CONFIG_PRECISION_AUTO) cfg.precision = CHM_CONFIG_PRECISION_F32;
    snprintf(r->config, sizeof r->config, "%s", o->no_model ? "-" : cfg.source);
    chm_backend *bes[CHM_VERIFY_MAX_BACKENDS] = {0};
    int n = 0;
    rc = open_backends(r, o, bes, &n, err);
    note_fault(o->progress);
    if (rc == CHM_OK) rc = ops_phase(r, o, want, bes, n, err);
    for (int i = 0; i < n; i++) chm_backend_close(bes[i]);
    double t0 = now_s();
    if (rc == CHM_OK && !o->no_model) rc = model_phases(r, o, &cfg, err);
    r->seconds_model = now_s() - t0;
    chm_config_free(&cfg);
    return rc;
}

chm_status chm_verify_run(const chm_verify_options *opts, chm_verify_report **out, chm_err *err) {
    chm_verify_options none = {0};
    const chm_verify_options *o = opts ? opts : &none;
    *out = NULL;
    bool want[64];
    chm_verify_report *r = calloc(1, sizeof *r);
    if (!r) return CHM_ERR(err, CHM_ERR_NOMEM, "verify: no memory");
    r->seed = o->seed ? o->seed : 1;
    chm_status rc = parse_ops(o->ops, want, err);
    if (rc == CHM_OK) rc = parse_backends(o->backends, r, err);
    if (rc == CHM_OK) rc = run_phases(r, o, want, err);
    if (rc) {
        chm_verify_report_free(r);
        return rc;
    }
    vf_tally(r);
    *out = r;
    return CHM_OK;
}
