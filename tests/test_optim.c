/*
 * test_optim.c: the optimizer (chimera/optim.h): learning-rate schedules at
 * their key points (warmup end, middle, end; wsd's stable and decay
 * phases), AdamW over the model's parameter buffer against a naive loop
 * (decayed parameters vs norms, biases and the embedding), the global
 * gradient norm against a naive sum, and clipping (exactly clip/norm above
 * the threshold, exactly 1 otherwise).
 */
#include <stdio.h>

#include "chimera/optim.h"
#include "testutil.h"

/* ---- schedules ------------------------------------------------------------------------- */

static chm_config_train sched(chm_config_schedule s, int64_t steps, int64_t warmup, double frac) {
    chm_config_train t = {0};
    t.schedule = s;
    t.lr = 1e-3;
    t.min_lr = 1e-4;
    t.total_steps = steps;
    t.warmup = warmup;
    t.decay_frac = frac;
    return t;
}

#define LR_EQ(tc, step, want) \
    cr_assert_float_eq(chm_lr_at(&(tc), (step)), (want), 1e-15, "step %d: lr %.17g, want %.17g", \
                       (int)(step), chm_lr_at(&(tc), (step)), (double)(want))

Test(optim, schedule_warmup) {
    chm_config_train t = sched(CHM_CONFIG_SCHEDULE_COSINE, 101, 10, 0);
    LR_EQ(t, 0, 1e-4);    /* first step: lr * 1/W, never 0 */
    LR_EQ(t, 4, 5e-4);
    LR_EQ(t, 9, 1e-3);    /* warmup end reaches the peak */
    LR_EQ(t, 10, 1e-3);   /* the decay starts at the peak */
}

Test(optim, schedule_cosine) {
    chm_config_train t = sched(CHM_CONFIG_SCHEDULE_COSINE, 101, 10, 0);
    LR_EQ(t, 55, 1e-4 + 0.5 * 9e-4); /* halfway between step 10 and step 100 */
    LR_EQ(t, 100, 1e-4);             /* the last step ends at min_lr */
    LR_EQ(t, 500, 1e-4);             /* and stays there */
    cr_assert(chm_lr_at(&t, 30) > chm_lr_at(&t, 31), "cosine decreases");
}

Test(optim, schedule_linear) {
    chm_config_train t = sched(CHM_CONFIG_SCHEDULE_LINEAR, 101, 10, 0);
    LR_EQ(t, 10, 1e-3);
    LR_EQ(t, 55, 5.5e-4);
    LR_EQ(t, 100, 1e-4);
}

Test(optim, schedule_wsd) {
    /* 100 steps, decay over the last round(0.21 * 100) = 21: stable until step 78, decay 79..99 */
    chm_config_train t = sched(CHM_CONFIG_SCHEDULE_WSD, 100, 10, 0.21);
    LR_EQ(t, 5, 6e-4);   /* warmup */
    LR_EQ(t, 10, 1e-3);  /* stable phase */
    LR_EQ(t, 78, 1e-3);
    LR_EQ(t, 79, 1e-3);  /* decay starts at the peak */
    LR_EQ(t, 89, 5.5e-4);
    LR_EQ(t, 99, 1e-4);
}

Test(optim, schedule_constant_and_no_warmup) {
    chm_config_train t = sched(CHM_CONFIG_SCHEDULE_CONSTANT, 50, 0, 0);
    LR_EQ(t, 0, 1e-3);
    LR_EQ(t, 49, 1e-3);
    chm_config_train c = sched(CHM_CONFIG_SCHEDULE_COSINE, 11, 0, 0);
    LR_EQ(c, 0, 1e-3);
    LR_EQ(c, 5, 5.5e-4);
    LR_EQ(c, 10, 1e-4);
}

/* ---- AdamW on a model ----------------------------------------------------------------------- */

static const char *OPT_YAML =
    "model:\n"
    "  vocab: 264\n"
    "  d_model: 8\n"
    "  n_layers: 2\n"
    "  pattern: \"MA\"\n"
    "  heads: 2\n"
    "  head_dim: 4\n"
    "  mamba: {d_state: 4, d_conv: 3, expand: 2, dt_rank: 2}\n"
    "  ffn: {hidden: 12}\n"
    "  moe: {experts: 2, top_k: 1, every: 2, hidden: 8}\n"
    "  tie_embeddings: %s\n"
    "train: {micro_batch: 1, seq_len: 4, steps: 1, lr: 1.0e-3, weight_decay: 0.3,\n"
    "        betas: [0.8, 0.9], eps: 1.0e-6, clip: 0.5}\n";

typedef struct fixture {
    chm_backend *be;
    chm_config cfg;
    chm_model *m;
    chm_optim *o;
} fixture;

static fixture setup(bool tied) {
    fixture f = {0};
    chm_backend_options bo = {.device_index = -1, .threads = 1};
    chm_err err = {0};
    char yaml[2048];
    snprintf(yaml, sizeof yaml, OPT_YAML, tied ? "true" : "false");
    cr_assert_eq(chm_backend_open("cpu", &bo, &f.be, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_config_load_string(yaml, "opt.yaml", NULL, 0, &f.cfg, &err), CHM_OK, "%s",
                 err.msg);
    chm_model_options mo = {.dtype = CHM_F64, .batch = 1, .seq_len = 4};
    cr_assert_eq(chm_model_create(&f.cfg.model, f.be, &mo, &f.m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_init_params(f.m, 5, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_optim_create(f.m, &f.cfg.train, NULL, &f.o, &err), CHM_OK, "%s", err.msg);
    return f;
}

static void teardown(fixture *f) {
    chm_optim_free(f->o);
    chm_model_free(f->m);
    chm_backend_close(f->be);
    chm_config_free(&f->cfg);
}

/* Host copies of every parameter's value, gradient and moments (naive state). */
typedef struct host_state {
    double **p, **g, **m, **v;
    int n;
} host_state;

static void get_state(fixture *f, host_state *h) {
    h->n = chm_model_param_count(f->m);
    h->p = calloc((size_t)h->n, sizeof *h->p), h->g = calloc((size_t)h->n, sizeof *h->g);
    h->m = calloc((size_t)h->n, sizeof *h->m), h->v = calloc((size_t)h->n, sizeof *h->v);
    for (int i = 0; i < h->n; i++) {
        const chm_model_param *p = chm_model_param_get(f->m, i);
        chm_tensor mt, vt;
        chm_optim_moments(f->o, p, &mt, &vt);
        h->p[i] = tt_dalloc(p->numel), h->g[i] = tt_dalloc(p->numel);
        h->m[i] = tt_dalloc(p->numel), h->v[i] = tt_dalloc(p->numel);
        cr_assert_eq(chm_download(f->be, &p->value, h->p[i]), CHM_OK);
        cr_assert_eq(chm_download(f->be, &p->grad, h->g[i]), CHM_OK);
        cr_assert_eq(chm_download(f->be, &mt, h->m[i]), CHM_OK);
        cr_assert_eq(chm_download(f->be, &vt, h->v[i]), CHM_OK);
    }
}

static void free_state(host_state *h) {
    for (int i = 0; i < h->n; i++) free(h->p[i]), free(h->g[i]), free(h->m[i]), free(h->v[i]);
    free(h->p), free(h->g), free(h->m), free(h->v);
}

/* Random gradients into every parameter's gradient view. */
static void random_grads(fixture *f, tt_rng *r) {
    for (int i = 0; i < chm_model_param_count(f->m); i++) {
        const chm_model_param *p = chm_model_param_get(f->m, i);
        double *g = tt_dalloc(p->numel);
        tt_fill_uniform(r, g, p->numel, -1, 1);
        cr_assert_eq(chm_upload(f->be, &p->grad, g), CHM_OK);
        free(g);
    }
}

/* The naive AdamW step on host state h (t = 1-based step). */
static void naive_step(fixture *f, host_state *h, double lr, double gs, int64_t t) {
    const chm_config_train *tc = &f->cfg.train;
    double b1 = tc->betas[0], b2 = tc->betas[1];
    for (int i = 0; i < h->n; i++) {
        const chm_model_param *p = chm_model_param_get(f->m, i);
        bool embed = !strcmp(p->name, "embed.weight") || !strcmp(p->name, "lm_head.weight");
        double wd = p->decay && !embed ? tc->weight_decay : 0;
        for (int64_t j = 0; j < p->numel; j++) {
            double g = gs * h->g[i][j];
            h->m[i][j] = b1 * h->m[i][j] + (1 - b1) * g;
            h->v[i][j] = b2 * h->v[i][j] + (1 - b2) * g * g;
            double mh = h->m[i][j] / (1 - pow(b1, (double)t));
            double vh = h->v[i][j] / (1 - pow(b2, (double)t));
            h->p[i][j] -= lr * (mh / (sqrt(vh) + tc->eps) + wd * h->p[i][j]);
        }
    }
}

static void compare(fixture *f, host_state *want) {
    host_state got;
    get_state(f, &got);
    for (int i = 0; i < got.n; i++) {
        const chm_model_param *p = chm_model_param_get(f->m, i);
        char what[96];
        snprintf(what, sizeof what, "%s (param)", p->name);
        tt_assert_close(what, got.p[i], want->p[i], p->numel, 1e-14, 1e-12);
        snprintf(what, sizeof what, "%s (exp_avg)", p->name);
        tt_assert_close(what, got.m[i], want->m[i], p->numel, 1e-14, 1e-12);
        snprintf(what, sizeof what, "%s (exp_avg_sq)", p->name);
        tt_assert_close(what, got.v[i], want->v[i], p->numel, 1e-14, 1e-12);
    }
    free_state(&got);
}

/* Two steps (t = 1, 2), fresh gradients, lr and grad_scale each time, each against the naive
 * loop run on the state the device had before it. */
static void adamw_case(bool tied) {
    fixture f = setup(tied);
    tt_rng r = tt_rng_make(tied ? 11 : 12);
    for (int t = 1; t <= 2; t++) {
        random_grads(&f, &r);
        host_state h;
        get_state(&f, &h);
        double lr = 1e-2 * t, gs = 0.7 / t;
        naive_step(&f, &h, lr, gs, t);
        chm_err err = {0};
        cr_assert_eq(chm_optim_step(f.o, lr, gs, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(chm_optim_updates(f.o), t);
        compare(&f, &h);
        free_state(&h);
    }
    teardown(&f);
}

Test(optim, adamw_matches_naive_loop_tied) { adamw_case(true); }
Test(optim, adamw_matches_naive_loop_untied) { adamw_case(false); }

/* With zero gradients only weight decay moves a parameter: decayed matrices shrink by
 * (1 - lr*wd) exactly, norms, biases, A_log, D and the embeddings do not move. */
Test(optim, adamw_decay_split) {
    fixture f = setup(false);
    chm_err err = {0};
    cr_assert_eq(chm_model_zero_grad(f.m, &err), CHM_OK);
    host_state before, after;
    get_state(&f, &before);
    double lr = 0.1;
    cr_assert_eq(chm_optim_step(f.o, lr, 1.0, &err), CHM_OK, "%s", err.msg);
    get_state(&f, &after);
    int decayed = 0, kept = 0;
    for (int i = 0; i < before.n; i++) {
        const chm_model_param *p = chm_model_param_get(f.m, i);
        bool d = chm_optim_decays(f.o, p);
        decayed += d, kept += !d;
        if (!strcmp(p->name, "embed.weight") || !strcmp(p->name, "lm_head.weight") ||
            strstr(p->name, "norm") || strstr(p->name, "bias") || strstr(p->name, "A_log") ||
            strstr(p->name, ".D"))
            cr_assert(!d, "%s must not be decayed", p->name);
        double *want = tt_dalloc(p->numel);
        for (int64_t j = 0; j < p->numel; j++)
            want[j] = d ? before.p[i][j] * (1 - lr * f.cfg.train.weight_decay) : before.p[i][j];
        tt_assert_close(p->name, after.p[i], want, p->numel, 0, 1e-15);
        free(want);
    }
    cr_assert(decayed > 0 && kept > 0, "both kinds present (%d decayed, %d not)", decayed, kept);
    free_state(&before);
    free_state(&after);
    teardown(&f);
}

Test(optim, adamw_decay_embeddings_option) {
    fixture f = setup(true);
    chm_optim *o2;
    chm_optim_options oo = {.decay_embeddings = true};
    chm_err err = {0};
    cr_assert_eq(chm_optim_create(f.m, &f.cfg.train, &oo, &o2, &err), CHM_OK, "%s", err.msg);
    const chm_model_param *e = chm_model_param_find(f.m, "embed.weight");
    cr_assert_not_null(e);
    cr_assert(!chm_optim_decays(f.o, e) && chm_optim_decays(o2, e));
    chm_optim_free(o2);
    teardown(&f);
}

/* ---- gradient norm and clipping --------------------------------------------------------------- */

Test(optim, clip_grad_norm_matches_naive) {
    fixture f = setup(false);
    tt_rng r = tt_rng_make(3);
    random_grads(&f, &r);
    host_state h;
    get_state(&f, &h);
    double sum = 0;
    for (int i = 0; i < h.n; i++)
        for (int64_t j = 0; j < chm_model_param_get(f.m, i)->numel; j++) sum += h.g[i][j] * h.g[i][j];
    double norm;
    chm_err err = {0};
    cr_assert_eq(chm_optim_grad_norm(f.o, &norm, &err), CHM_OK, "%s", err.msg);
    cr_assert_float_eq(norm, sqrt(sum), 1e-12 * sqrt(sum));
    free_state(&h);
    teardown(&f);
}

Test(optim, clip_factor_exact) {
    cr_assert_eq(chm_optim_clip_factor(2.0, 1.0), 0.5);      /* above: clip / norm */
    cr_assert_eq(chm_optim_clip_factor(3.0, 0.75), 0.25);
    cr_assert_eq(chm_optim_clip_factor(0.5, 1.0), 1.0);      /* below: untouched */
    cr_assert_eq(chm_optim_clip_factor(1.0, 1.0), 1.0);      /* at the threshold: untouched */
    cr_assert_eq(chm_optim_clip_factor(1e6, 0.0), 1.0);      /* clip 0 = off */
}

/* A clipped step equals the naive step on gradients scaled to norm `clip`. */
Test(optim, clip_clipped_step_has_clip_norm) {
    fixture f = setup(false);
    tt_rng r = tt_rng_make(4);
    random_grads(&f, &r);
    double norm;
    chm_err err = {0};
    cr_assert_eq(chm_optim_grad_norm(f.o, &norm, &err), CHM_OK);
    double k = chm_optim_clip_factor(norm, f.cfg.train.clip);
    cr_assert(norm > f.cfg.train.clip && k < 1, "the random gradient is above the clip");
    host_state h;
    get_state(&f, &h);
    double sum = 0;
    for (int i = 0; i < h.n; i++)
        for (int64_t j = 0; j < chm_model_param_get(f.m, i)->numel; j++)
            sum += (k * h.g[i][j]) * (k * h.g[i][j]);
    cr_assert_float_eq(sqrt(sum), f.cfg.train.clip, 1e-12);
    naive_step(&f, &h, 1e-3, k, 1);
    cr_assert_eq(chm_optim_step(f.o, 1e-3, k, &err), CHM_OK);
    compare(&f, &h);
    free_state(&h);
    teardown(&f);
}
