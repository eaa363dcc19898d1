/*
 * verify_step.c: the step phase of `chimera verify`: one training run per
 * backend through the trainer library (same config, seed and data, hence
 * the same initial weights and the same first batch), its first optimizer
 * step, and the comparison of the loss parts, the gradient norm and every
 * parameter's gradient with the cpu's.
 *
 * Limits (f32 on both sides, one step of the whole model): the loss parts
 * are means over every token, so f32 summation differences stay near 1e-6
 * relative; 1e-5 leaves room and still catches a wrong op (1e-3 and more).
 * A gradient passes through the whole backward chain; f32 reorderings give
 * up to a few 1e-6 relative on lavapipe (the worst parameters: Mamba's
 * x_proj, A_log, dt_proj), so each parameter may differ by 1e-4 in rel-L2,
 * 25x that; the 1.01 debug fault in any forward op moves gradients by 1e-2.
 * A routing decision that flips between backends (a near tie in MoE or MoD
 * scores) moves gradients by more than that; the report says when routing
 * differs.
 */
#include "verify_internal.h"

#include "core/half.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STEP_LOSS_LIMIT 1e-5
#define STEP_GRAD_LIMIT 1e-4
/* With a 16-bit model on either side (an explicit `precision: bf16`): bf16 keeps 8 bits of
 * mantissa, so a loss moves by ~1e-2 and a gradient by up to 1e-1 in rel-L2 (DESIGN.md). */
#define STEP_LOSS_LIMIT_LOWP 2e-2
#define STEP_GRAD_LIMIT_LOWP 1e-1

bool vf_lowp(const vf_run *a, const vf_run *b) {
    return a->dtype == CHM_BF16 || a->dtype == CHM_F16 || b->dtype == CHM_BF16 ||
           b->dtype == CHM_F16;
}

void vf_compare(const double *got, const double *want, int64_t n, double *rel_l2,
                double *max_abs) {
    double num = 0, den = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        num += e * e;
        den += want[i] * want[i];
        if (!(e <= mx)) mx = e; /* NaN propagates */
    }
    *rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    *max_abs = mx;
}

/* Mark run failed with a message (the first one stays). */
static void run_fail(vf_run *run, chm_status rc, const char *what, const char *msg) {
    if (run->ok || !run->why[0]) {
        snprintf(run->why, sizeof run->why, "%s: %s", what, msg);
        run->rc = rc;
    }
    run->ok = false;
}

void vf_run_open(vf_model *m, vf_run *run, const char *resume) {
    snprintf(run->dir, sizeof run->dir, "%s/run%d-%s", m->tmp, m->n_runs++, run->backend);
    chm_trainer_options to = {.backend = run->backend, .out_dir = run->dir, .resume = resume,
                              .peak_tflops = 1, /* no MFU: skips measuring the device */
                              .quiet = true, .progress = 0, .cache_dir = m->o->cache_dir,
                              .threads = m->o->threads, .keep = 2};
    chm_err e = {0};
    chm_status rc = chm_trainer_open(m->cfg, &to, &run->t, &e);
    run->ok = rc == CHM_OK;
    if (rc) run_fail(run, rc, resume ? "resuming" : "opening the trainer", e.msg);
    if (rc) return;
    chm_model *model = chm_trainer_model(run->t);
    run->dtype = chm_model_dtype(model);
    if (m->n_values) return;
    for (int i = 0; i < chm_model_param_count(model); i++)
        m->n_values += chm_model_param_get(model, i)->numel;
}

/* x[k] widened to double, for the float dtypes a parameter or gradient may have. */
static double widen(const void *x, chm_dtype dt, int64_t k) {
    switch (dt) {
    case CHM_BF16: return chm_bf16_to_f32(((const uint16_t *)x)[k]);
    case CHM_F16: return chm_f16_to_f32(((const uint16_t *)x)[k]);
    case CHM_F64: return ((const double *)x)[k];
    default: return ((const float *)x)[k];
    }
}

chm_status vf_download_params(chm_trainer *t, bool want_grads, double *out, chm_err *err) {
    chm_model *model = chm_trainer_model(t);
    chm_backend *be = chm_trainer_backend(t);
    int64_t at = 0;
    for (int i = 0; i < chm_model_param_count(model); i++) {
        const chm_model_param *p = chm_model_param_get(model, i);
        const chm_tensor *x = want_grads ? &p->grad : &p->value;
        /* bytes as stored (bf16 gradients in mixed precision), widened here */
        void *h = malloc((size_t)(p->numel ? p->numel : 1) * chm_dtype_size(x->dtype));
        if (!h) return CHM_ERR(err, CHM_ERR_NOMEM, "verify: no memory for %s", p->name);
        chm_status rc = chm_download(be, x, h);
        for (int64_t k = 0; rc == CHM_OK && k < p->numel; k++) out[at + k] = widen(h, x->dtype, k);
        free(h);
        if (rc) return CHM_ERR(err, rc, "downloading %s: %s", p->name, be->err.msg);
        at += p->numel;
    }
    return CHM_OK;
}

void vf_run_first(vf_model *m, vf_run *run) {
    chm_err e = {0};
    if (!run->ok) return;
    chm_status rc = chm_trainer_step(run->t, &run->first, &e);
    if (rc) return run_fail(run, rc, "step 1", e.msg);
    run->losses = calloc((size_t)m->steps, sizeof *run->losses);
    run->grads = malloc((size_t)m->n_values * sizeof *run->grads);
    if (!run->losses || !run->grads) return run_fail(run, CHM_ERR_NOMEM, "step 1", "no memory");
    run->losses[run->n_losses++] = run->first.loss.total;
    rc = vf_download_params(run->t, true, run->grads, &e);
    if (rc == CHM_OK) rc = chm_model_routing_digest(chm_trainer_model(run->t), &run->routing, &e);
    if (rc) run_fail(run, rc, "step 1", e.msg);
}

void vf_run_close(vf_run *run) {
    chm_trainer_close(run->t);
    run->t = NULL;
    free(run->grads);
    free(run->losses);
    free(run->weights);
    run->grads = run->losses = run->weights = NULL;
}

/* Worst relative difference over the loss parts (floored at 1e-3: parts are O(1) when on). */
static double loss_rel(const chm_model_loss *a, const chm_model_loss *b) {
    double pa[] = {a->total, a->ce, a->mtp, a->moe_balance, a->moe_z, a->mod_aux};
    double pb[] = {b->total, b->ce, b->mtp, b->moe_balance, b->moe_z, b->mod_aux};
    double worst = 0;
    for (int i = 0; i < 6; i++) {
        double d = fabs(pa[i] - pb[i]) / fmax(fabs(pb[i]), 1e-3);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

static int by_rel_desc(const void *a, const void *b) {
    double x = ((const chm_verify_tensor_cmp *)a)->rel_l2;
    double y = ((const chm_verify_tensor_cmp *)b)->rel_l2;
    if (isnan(x) || isnan(y)) return isnan(y) - isnan(x);
    return (x < y) - (x > y);
}

/* Every parameter's gradient of run against ref's, worst first. */
static void compare_params(const vf_run *ref, const vf_run *run, chm_verify_step *s) {
    chm_model *model = chm_trainer_model(ref->t);
    int n = chm_model_param_count(model);
    s->params = calloc((size_t)n, sizeof *s->params);
    if (!s->params) return;
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        const chm_model_param *p = chm_model_param_get(model, i);
        chm_verify_tensor_cmp *c = &s->params[s->n_params++];
        snprintf(c->name, sizeof c->name, "%s", p->name);
        c->n = p->numel;
        vf_compare(run->grads + at, ref->grads + at, p->numel, &c->rel_l2, &c->max_abs);
        at += p->numel;
    }
    qsort(s->params, (size_t)s->n_params, sizeof *s->params, by_rel_desc);
}

void vf_step_compare(const vf_model *m, const vf_run *ref, const vf_run *run, chm_verify_step *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->backend, sizeof s->backend, "%s", run->backend);
    bool lowp = vf_lowp(ref, run);
    s->dtype = run->dtype;
    s->loss_limit = lowp ? STEP_LOSS_LIMIT_LOWP : STEP_LOSS_LIMIT;
    s->grad_limit = lowp ? STEP_GRAD_LIMIT_LOWP : STEP_GRAD_LIMIT;
    s->ref_loss = ref->first.loss;
    s->ref_grad_norm = ref->first.grad_norm;
    if (!run->grads) {
        s->result = run->rc == CHM_ERR_UNSUPPORTED ? CHM_VERIFY_SKIP : CHM_VERIFY_FAIL;
        snprintf(s->note, sizeof s->note, "%s", run->why);
        return;
    }
    s->loss = run->first.loss;
    s->grad_norm = run->first.grad_norm;
    s->loss_rel = loss_rel(&s->loss, &s->ref_loss);
    double gn = fabs(s->grad_norm - s->ref_grad_norm) / fmax(fabs(s->ref_grad_norm), 1e-30);
    if (!(gn <= s->loss_rel)) s->loss_rel = gn;
    s->routing_same = run->routing == ref->routing;
    vf_compare(run->grads, ref->grads, m->n_values, &s->grad_rel_l2, &s->grad_max_abs);
    compare_params(ref, run, s);
    s->result = CHM_VERIFY_PASS;
    if (!(s->loss_rel <= s->loss_limit)) {
        s->result = CHM_VERIFY_FAIL;
        snprintf(s->note, sizeof s->note, "the loss parts or gradient norm differ by %.1e "
                 "(limit %.0e)", s->loss_rel, s->loss_limit);
    } else if (s->n_params && !(s->params[0].rel_l2 <= s->grad_limit)) {
        s->result = CHM_VERIFY_FAIL;
        snprintf(s->note, sizeof s->note, "the gradient of %s differs by %.1e rel-L2 (limit "
                 "%.0e)%s", s->params[0].name, s->params[0].rel_l2, s->grad_limit,
                 s->routing_same ? "" : "; routing decisions differ (a near tie?)");
    }
}
