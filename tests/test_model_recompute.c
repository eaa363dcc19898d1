/*
 * test_model_recompute.c: per-layer activation recomputation
 * (chm_model_options.recompute, train.recompute) on the cpu backend, on
 * configs/test.yaml (Mamba and attention mixers, MoE, MoD, MTP) at a small
 * micro batch, tied and untied embeddings:
 *  - one micro batch and two accumulated ones, f32 and bf16 mixed precision:
 *    loss parts, every gradient byte, the routing digest and the expert
 *    counts equal those without recomputation (the same ops on the same
 *    values); evaluation and logits too;
 *  - the arena is smaller: < 60% of the one without for a 12-layer test.yaml,
 *    and the description-only size equals the allocated one;
 *  - the gradient hook reports every range once, with its final value;
 *  - three trainer steps with grad_accum 2 and --set train.recompute=true
 *    give the same losses, gradient norms and parameters, bit for bit.
 * CHIMERA_DEBUG_RECOMPUTE=1 runs any other model test with recomputation on.
 */
#include <stdio.h>
#include <string.h>

#include "chimera/model.h"
#include "chimera/trainer.h"
#include "testutil.h"
#include "train_fixture.h"

#define RC_CACHE "/tmp/chimera-tests-cache/chimera"

/* configs/test.yaml at a small micro batch, plus `extra` overrides (may be NULL). */
static void load_test(chm_config *cfg, bool tied, const char *extra) {
    const char *sets[] = {"train.micro_batch=2", "train.seq_len=24", "train.eval_every=0",
                          "train.save_every=0", "train.warmup=1",
                          tied ? "model.tie_embeddings=true" : "model.tie_embeddings=false",
                          extra};
    int n = (int)(sizeof sets / sizeof sets[0]) - (extra == NULL);
    chm_err err = {0};
    cr_assert_eq(chm_config_load("test", sets, n, cfg, &err), CHM_OK, "%s", err.msg);
}

/* A model of cfg (be NULL: description only), initialised when it runs. */
static chm_model *make(chm_backend *be, const chm_config *cfg, chm_dtype dt, bool recompute) {
    chm_model_options o = {.dtype = dt, .batch = cfg->train.micro_batch,
                           .seq_len = cfg->train.seq_len, .recompute = recompute};
    chm_model *m = NULL;
    chm_err err = {0};
    chm_status rc = chm_model_create(&cfg->model, be, &o, &m, &err);
    if (rc == CHM_OK && be) rc = chm_model_init_params(m, 7, &err);
    cr_assert_eq(rc, CHM_OK, "%s", err.msg);
    return m;
}

/* Micro batch `seed`: ids [B, T+1] uniform over the vocabulary (caller frees). */
static int32_t *batch_ids(const chm_config *cfg, uint64_t seed) {
    int64_t n = (int64_t)cfg->train.micro_batch * (cfg->train.seq_len + 1);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    tt_rng r = tt_rng_make(seed);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(tt_next(&r) % (uint64_t)cfg->model.vocab);
    return ids;
}

/* The whole gradient buffer's bytes (caller frees), its size into *n. */
static unsigned char *grad_bytes(chm_backend *be, const chm_model *m, size_t *n) {
    chm_tensor g;
    chm_model_param_region(m, true, NULL, &g);
    g = chm_tensor_1d(g.buf, g.offset, g.dtype, chm_model_grad_numel(m));
    *n = (size_t)chm_model_grad_numel(m) * chm_dtype_size(g.dtype);
    unsigned char *h = malloc(*n);
    cr_assert_eq(chm_download(be, &g, h), CHM_OK);
    return h;
}

static void expect_same_loss(const chm_model_loss *a, const chm_model_loss *b, const char *what) {
    cr_expect_eq(a->total, b->total, "%s total %.17g vs %.17g", what, a->total, b->total);
    cr_expect_eq(a->ce, b->ce, "%s ce", what);
    cr_expect_eq(a->mtp, b->mtp, "%s mtp", what);
    cr_expect_eq(a->moe_balance, b->moe_balance, "%s moe_balance %.17g vs %.17g", what,
                 a->moe_balance, b->moe_balance);
    cr_expect_eq(a->moe_z, b->moe_z, "%s moe_z", what);
    cr_expect_eq(a->mod_aux, b->mod_aux, "%s mod_aux %.17g vs %.17g", what, a->mod_aux,
                 b->mod_aux);
    cr_expect_gt(a->moe_balance, 0, "%s: the config has MoE layers", what);
    cr_expect_gt(a->mod_aux, 0, "%s: the config has MoD layers", what);
}

/* Routing digest and expert counts of a and b (after a training-routing pass) agree. */
static void expect_same_routing(chm_model *a, chm_model *b) {
    chm_err err = {0};
    uint64_t da, db;
    cr_assert_eq(chm_model_routing_digest(a, &da, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_routing_digest(b, &db, &err), CHM_OK, "%s", err.msg);
    cr_expect_eq(da, db, "routing digest %llx vs %llx", (unsigned long long)da,
                 (unsigned long long)db);
    int n = chm_model_moe_layers(a) * (int)chm_model_config(a)->moe.experts;
    int32_t ca[256], cb[256];
    int64_t xa, xb;
    cr_assert(n > 0 && n <= 256);
    cr_assert_eq(chm_model_expert_counts(a, ca, &xa, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_expert_counts(b, cb, &xb, &err), CHM_OK, "%s", err.msg);
    cr_expect(!memcmp(ca, cb, (size_t)n * sizeof *ca), "expert counts differ");
    cr_expect_eq(xa, xb, "dropped %lld vs %lld", (long long)xa, (long long)xb);
}

/* `accum` micro batches of fwd+bwd with and without recomputation: everything identical. */
static void same_step(bool tied, chm_dtype dt, int accum) {
    chm_config cfg;
    load_test(&cfg, tied, NULL);
    chm_backend *be = tt_open_cpu();
    chm_model *off = make(be, &cfg, dt, false), *on = make(be, &cfg, dt, true);
    chm_err err = {0};
    cr_assert_eq(chm_model_zero_grad(off, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_zero_grad(on, &err), CHM_OK, "%s", err.msg);
    for (int k = 0; k < accum; k++) {
        int32_t *ids = batch_ids(&cfg, 100 + (uint64_t)k);
        chm_model_loss la, lb;
        cr_assert_eq(chm_model_forward_backward(off, ids, 1.0 / accum, &la, &err), CHM_OK, "%s",
                     err.msg);
        cr_assert_eq(chm_model_forward_backward(on, ids, 1.0 / accum, &lb, &err), CHM_OK, "%s",
                     err.msg);
        expect_same_loss(&la, &lb, "forward_backward");
        expect_same_routing(off, on);
        free(ids);
    }
    size_t na, nb;
    unsigned char *ga = grad_bytes(be, off, &na), *gb = grad_bytes(be, on, &nb);
    cr_assert_eq(na, nb);
    size_t first = 0;
    while (first < na && ga[first] == gb[first]) first++;
    cr_expect_eq(first, na, "%s tied=%d accum=%d: gradients differ from byte %zu of %zu",
                 chm_dtype_name(dt), tied, accum, first, na);
    cr_expect_lt(chm_model_arena_bytes(on), chm_model_arena_bytes(off));
    free(ga), free(gb);
    chm_model_free(off), chm_model_free(on);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

Test(model_recompute, same_gradients_f32_tied) { same_step(true, CHM_F32, 1); }
Test(model_recompute, same_gradients_f32_untied) { same_step(false, CHM_F32, 1); }
Test(model_recompute, same_gradients_f32_grad_accum_2) {
    same_step(true, CHM_F32, 2);
    same_step(false, CHM_F32, 2);
}
Test(model_recompute, same_gradients_bf16_mixed) {
    same_step(true, CHM_BF16, 2);
    same_step(false, CHM_BF16, 1);
}

/* Evaluation and logits (which release each layer at once with recomputation) agree. */
Test(model_recompute, eval_and_logits_agree) {
    chm_config cfg;
    load_test(&cfg, false, NULL);
    chm_backend *be = tt_open_cpu();
    chm_model *off = make(be, &cfg, CHM_F32, false), *on = make(be, &cfg, CHM_F32, true);
    int32_t *ids = batch_ids(&cfg, 5);
    chm_err err = {0};
    chm_model_loss la, lb;
    cr_assert_eq(chm_model_eval_loss(off, ids, &la, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_eval_loss(on, ids, &lb, &err), CHM_OK, "%s", err.msg);
    expect_same_loss(&la, &lb, "eval_loss");
    expect_same_routing(off, on);
    int64_t T = cfg.train.seq_len, V = cfg.model.vocab;
    double *xa = tt_dalloc(T * V), *xb = tt_dalloc(T * V);
    for (int r = 0; r < 2; r++) {
        chm_model_routing routing = r ? CHM_ROUTING_CAUSAL : CHM_ROUTING_TRAIN;
        cr_assert_eq(chm_model_logits(off, ids, T, routing, xa, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(chm_model_logits(on, ids, T, routing, xb, &err), CHM_OK, "%s", err.msg);
        cr_expect(!memcmp(xa, xb, (size_t)(T * V) * sizeof *xa), "logits differ (routing %d)", r);
    }
    free(xa), free(xb), free(ids);
    chm_model_free(off), chm_model_free(on);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

/* A 12-layer test.yaml: L+1 residuals and one layer instead of every layer's activations. */
Test(model_recompute, arena_shrinks) {
    chm_config cfg;
    load_test(&cfg, true, "model.n_layers=12");
    chm_model *off = make(NULL, &cfg, CHM_F32, false), *on = make(NULL, &cfg, CHM_F32, true);
    size_t a = chm_model_arena_bytes(off), b = chm_model_arena_bytes(on);
    cr_log_info("test.yaml x12 layers, B=2 T=24 f32: arena %zu -> %zu bytes (%.0f%%)", a, b,
                100.0 * (double)b / (double)a);
    cr_expect_lt((double)b, 0.6 * (double)a, "arena %zu with recompute, %zu without", b, a);
    /* the description-only size is what a real model allocates (and a step fits in it) */
    chm_backend *be = tt_open_cpu();
    chm_model *real = make(be, &cfg, CHM_F32, true);
    cr_expect_eq(chm_model_arena_bytes(real), b);
    int32_t *ids = batch_ids(&cfg, 9);
    chm_err err = {0};
    cr_expect_eq(chm_model_forward_backward(real, ids, 1.0, NULL, &err), CHM_OK, "%s", err.msg);
    free(ids);
    chm_model_free(real), chm_model_free(off), chm_model_free(on);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

/* What the hook saw: each element's bytes when reported and how often. */
typedef struct hook_seen {
    chm_backend *be;
    chm_tensor all;
    size_t es;
    unsigned char *snap;
    int *hits;
    int lasts;
} hook_seen;

static chm_status hook_record(void *user, int64_t begin, int64_t count, bool last, chm_err *err) {
    (void)err;
    hook_seen *s = user;
    chm_tensor v = chm_tensor_1d(s->all.buf, s->all.offset + (size_t)begin * s->es, s->all.dtype,
                                 count);
    cr_assert_eq(chm_download(s->be, &v, s->snap + (size_t)begin * s->es), CHM_OK);
    for (int64_t i = begin; i < begin + count; i++) s->hits[i]++;
    s->lasts += last;
    return CHM_OK;
}

/* With recomputation the hook still reports every range once, when final. */
Test(model_recompute, grad_hook_ranges_once_and_final) {
    chm_config cfg;
    load_test(&cfg, true, "model.mtp.depth=2");
    chm_backend *be = tt_open_cpu();
    chm_model *m = make(be, &cfg, CHM_F32, true);
    int64_t n = chm_model_grad_numel(m);
    hook_seen s = {.be = be, .es = 4, .snap = malloc((size_t)n * 4), .hits = calloc((size_t)n, 4)};
    chm_model_param_region(m, true, NULL, &s.all);
    chm_model_set_grad_hook(m, hook_record, &s);
    int32_t *ids = batch_ids(&cfg, 3);
    chm_err err = {0};
    cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, NULL, &err), CHM_OK, "%s", err.msg);
    size_t nb;
    unsigned char *final = grad_bytes(be, m, &nb);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += s.hits[i] != 1;
    cr_expect_eq(bad, 0, "%lld elements not reported exactly once", (long long)bad);
    cr_expect_eq(s.lasts, 1);
    cr_expect(!memcmp(final, s.snap, nb), "a range changed after it was reported");
    free(final), free(ids), free(s.snap), free(s.hits);
    chm_model_free(m);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

static chm_trainer *open_trainer(const chm_config *cfg, const char *dir) {
    chm_trainer_options o = {.out_dir = dir, .backend = "cpu", .quiet = true, .threads = 1,
                             .cache_dir = RC_CACHE, .peak_tflops = 1};
    chm_trainer *t;
    chm_err err = {0};
    cr_assert_eq(chm_trainer_open(cfg, &o, &t, &err), CHM_OK, "%s", err.msg);
    return t;
}

/* Three optimizer steps of grad_accum 2 with --set train.recompute=true: bit for bit the same. */
Test(model_recompute, trainer_three_steps_identical) {
    chm_config a, b;
    load_test(&a, true, "train.grad_accum=2");
    const char *sets[] = {"train.micro_batch=2", "train.seq_len=24", "train.eval_every=0",
                          "train.save_every=0", "train.warmup=1", "train.grad_accum=2",
                          "train.recompute=true"};
    chm_err err = {0};
    cr_assert_eq(chm_config_load("test", sets, 7, &b, &err), CHM_OK, "%s", err.msg);
    cr_assert(b.train.recompute && !a.train.recompute);
    char *da = make_tmpdir_named("chm-rc-"), *db = make_tmpdir_named("chm-rc-");
    chm_trainer *ta = open_trainer(&a, da), *tb = open_trainer(&b, db);
    for (int i = 0; i < 3; i++) {
        chm_train_step x, y;
        cr_assert_eq(chm_trainer_step(ta, &x, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(chm_trainer_step(tb, &y, &err), CHM_OK, "%s", err.msg);
        expect_same_loss(&x.loss, &y.loss, "trainer step");
        cr_expect_eq(x.grad_norm, y.grad_norm, "step %d: grad norm %.17g vs %.17g", i + 1,
                     x.grad_norm, y.grad_norm);
    }
    chm_model *ma = chm_trainer_model(ta), *mb = chm_trainer_model(tb);
    for (int i = 0; i < chm_model_param_count(ma); i++) {
        const chm_model_param *p = chm_model_param_get(ma, i), *q = chm_model_param_get(mb, i);
        float *x = malloc((size_t)p->numel * 4), *y = malloc((size_t)p->numel * 4);
        cr_assert_eq(chm_download(chm_trainer_backend(ta), &p->value, x), CHM_OK);
        cr_assert_eq(chm_download(chm_trainer_backend(tb), &q->value, y), CHM_OK);
        cr_expect(!memcmp(x, y, (size_t)p->numel * 4), "%s differs after 3 steps", p->name);
        free(x), free(y);
    }
    cr_expect_lt(chm_model_arena_bytes(mb), chm_model_arena_bytes(ma));
    chm_trainer_close(ta), chm_trainer_close(tb);
    remove_tmpdir(da), remove_tmpdir(db);
    chm_config_free(&a), chm_config_free(&b);
}
