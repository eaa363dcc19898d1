/*
 * test_model_hook.c: the model's gradient readiness hook
 * (chm_model_set_grad_hook), on one process and the cpu backend, on a model
 * with every block kind (Mamba and attention mixers, MoE, MoD, two MTP
 * depths), tied and untied embeddings:
 *  - the reported ranges cover the gradient buffer exactly once, `last` only
 *    on the final one;
 *  - each range's values when reported equal the buffer after the whole
 *    pass (nothing writes a range after it was reported), also on a second
 *    micro batch that accumulates into the first's gradients;
 *  - the order the model documents: heads first, MTP deepest first, layers
 *    last first, the embedding last (tied or not);
 *  - the hook changes no gradient, and a failing hook stops the pass with its
 *    status and message.
 */
#include <math.h>
#include <stdio.h>

#include "chimera/model.h"
#include "testutil.h"

/* Every block kind at toy size. %s: tie_embeddings. */
static const char *HOOK_YAML =
    "model:\n"
    "  vocab: 300\n"
    "  d_model: 8\n"
    "  n_layers: 3\n"
    "  pattern: \"MAM\"\n"
    "  heads: 2\n"
    "  kv_heads: 1\n"
    "  mamba: {d_state: 2, d_conv: 2, expand: 2, dt_rank: 1}\n"
    "  ffn: {hidden: 16}\n"
    "  moe: {experts: 3, top_k: 1, every: 3, capacity_factor: 2.0, hidden: 8}\n"
    "  mod: {layers: [1], capacity: 0.5}\n"
    "  mtp: {depth: 2, weight: 0.5}\n"
    "  tie_embeddings: %s\n"
    "train: {micro_batch: 2, seq_len: 6, steps: 1, lr: 1.0e-3}\n";

/* What the hook saw during one pass. */
typedef struct seen {
    chm_backend *be;
    chm_tensor all;  /* the whole gradient buffer [n] */
    int64_t n;
    double *snap;    /* [n] each element's value when its range was reported */
    int *call;       /* [n] the call that reported it, -1 none */
    int *hits;       /* [n] how often it was reported */
    int calls, lasts, fail_at;
    bool last_on_final;
} seen;

static chm_status record(void *user, int64_t begin, int64_t count, bool last, chm_err *err) {
    seen *s = user;
    int k = s->calls++;
    if (k == s->fail_at) return CHM_ERR(err, CHM_ERR_DEVICE, "test hook: bucket %d failed", k);
    cr_assert(begin >= 0 && count > 0 && begin + count <= s->n, "range [%lld, +%lld) of %lld",
              (long long)begin, (long long)count, (long long)s->n);
    size_t ds = chm_dtype_size(s->all.dtype);
    chm_tensor v = chm_tensor_1d(s->all.buf, s->all.offset + (size_t)begin * ds, s->all.dtype,
                                 count);
    tt_tensor t = {v, NULL};
    tt_download(s->be, &t, s->snap + begin);
    for (int64_t i = begin; i < begin + count; i++) {
        s->hits[i]++;
        s->call[i] = k;
    }
    s->lasts += last;
    s->last_on_final = last;
    return CHM_OK;
}

static void seen_reset(seen *s) {
    for (int64_t i = 0; i < s->n; i++) s->hits[i] = 0, s->call[i] = -1;
    s->calls = s->lasts = 0;
    s->last_on_final = false;
}

/* The f64 model of HOOK_YAML, initialised; its config into *cfg. */
static chm_model *make_model(chm_backend *be, bool tied, chm_config *cfg) {
    char yaml[2048];
    chm_err err = {0};
    snprintf(yaml, sizeof yaml, HOOK_YAML, tied ? "true" : "false");
    chm_status rc = chm_config_load_string(yaml, "hook.yaml", NULL, 0, cfg, &err);
    cr_assert_eq(rc, CHM_OK, "%s", err.msg);
    chm_model *m = NULL;
    chm_model_options o = {.dtype = CHM_F64, .batch = cfg->train.micro_batch,
                           .seq_len = cfg->train.seq_len, .ce_chunk_rows = 5};
    rc = chm_model_create(&cfg->model, be, &o, &m, &err);
    if (rc == CHM_OK) rc = chm_model_init_params(m, 11, &err);
    cr_assert_eq(rc, CHM_OK, "%s", err.msg);
    return m;
}

static seen seen_make(chm_backend *be, const chm_model *m) {
    seen s = {.be = be, .n = chm_model_grad_numel(m), .fail_at = -1};
    chm_model_param_region(m, true, NULL, &s.all);
    s.all = chm_tensor_1d(s.all.buf, s.all.offset, s.all.dtype, s.n);
    s.snap = tt_dalloc(s.n);
    s.hits = calloc((size_t)s.n, sizeof *s.hits);
    s.call = calloc((size_t)s.n, sizeof *s.call);
    return s;
}

static void seen_free(seen *s) {
    free(s->snap);
    free(s->hits);
    free(s->call);
}

/* One micro batch of ids [B, T+1] drawn uniformly from the vocabulary (caller frees). */
static int32_t *batch_ids(const chm_config *cfg, uint64_t seed) {
    tt_rng r = tt_rng_make(seed);
    double V = cfg->model.vocab;
    int64_t n = (int64_t)cfg->train.micro_batch * (cfg->train.seq_len + 1);
    int32_t *ids = calloc((size_t)n, sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)fmin(tt_uniform(&r, 0, V), V - 1);
    return ids;
}

/* The whole gradient buffer as host doubles [s->n]. */
static double *grads_now(const seen *s) {
    double *g = tt_dalloc(s->n);
    tt_tensor t = {s->all, NULL};
    tt_download(s->be, &t, g);
    return g;
}

/* The call that reported parameter `name`'s first element. */
static int call_of(const chm_model *m, const seen *s, const char *name) {
    const chm_model_param *p = chm_model_param_find(m, name);
    cr_assert_not_null(p, "no parameter %s", name);
    return s->call[p->offset];
}

/* Coverage, finality and order after one pass. */
static void check_pass(const chm_model *m, const seen *s, bool tied, int pass) {
    double *g = grads_now(s);
    for (int64_t i = 0; i < s->n; i++) {
        cr_assert_eq(s->hits[i], 1, "pass %d: element %lld reported %d times", pass, (long long)i,
                     s->hits[i]);
        cr_assert(s->snap[i] == g[i], "pass %d: element %lld was %.17g when reported, %.17g at "
                  "the end", pass, (long long)i, s->snap[i], g[i]);
    }
    cr_assert(s->lasts == 1 && s->last_on_final, "pass %d: `last` once, on the final range",
              pass);
    int heads = call_of(m, s, "final_norm.weight"), emb = call_of(m, s, "embed.weight");
    int mtp1 = call_of(m, s, "mtp.1.proj.weight"), mtp0 = call_of(m, s, "mtp.0.proj.weight");
    int l2 = call_of(m, s, "layers.2.norm1.weight"), l0 = call_of(m, s, "layers.0.norm1.weight");
    cr_assert(heads < mtp1 && mtp1 < mtp0 && mtp0 < l2 && l2 < l0 && l0 < emb,
              "order: heads %d, mtp.1 %d, mtp.0 %d, layers.2 %d, layers.0 %d, embed %d", heads,
              mtp1, mtp0, l2, l0, emb);
    cr_assert_eq(emb, s->calls - 1, "the embedding comes last");
    cr_assert(call_of(m, s, "mtp.0.norm_out.weight") < mtp1 &&
                  call_of(m, s, "mtp.1.norm_out.weight") < mtp1,
              "the MTP heads' norms come with the heads");
    if (!tied) cr_assert(call_of(m, s, "lm_head.weight") < mtp1, "untied lm_head first");
    cr_assert(call_of(m, s, "layers.1.mod.router.weight") < l0, "MoD router with its layer");
    cr_assert(s->calls > 2 * 3, "a few ranges per stage (%d calls)", s->calls);
    free(g);
}

static void covers_and_final(bool tied) {
    chm_backend *be = tt_open_cpu();
    chm_config cfg;
    chm_model *m = make_model(be, tied, &cfg);
    seen s = seen_make(be, m);
    chm_model_set_grad_hook(m, record, &s);
    chm_err err = {0};
    cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK, "%s", err.msg);
    for (int pass = 0; pass < 2; pass++) { /* the second accumulates into the first's */
        int32_t *ids = batch_ids(&cfg, 100 + (uint64_t)pass);
        seen_reset(&s);
        cr_assert_eq(chm_model_forward_backward(m, ids, 0.5, NULL, &err), CHM_OK, "%s", err.msg);
        check_pass(m, &s, tied, pass);
        free(ids);
    }
    cr_log_info("grad hook (%s): %d ranges over %lld elements", tied ? "tied" : "untied", s.calls,
                (long long)s.n);
    seen_free(&s);
    chm_model_free(m);
    chm_config_free(&cfg);
    chm_backend_close(be);
}

Test(model_hook, ranges_cover_once_and_are_final_untied) { covers_and_final(false); }

Test(model_hook, ranges_cover_once_and_are_final_tied) { covers_and_final(true); }

Test(model_hook, changes_nothing_and_failure_stops_the_pass) {
    chm_backend *be = tt_open_cpu();
    chm_config cfg;
    chm_model *m = make_model(be, false, &cfg);
    seen s = seen_make(be, m);
    int32_t *ids = batch_ids(&cfg, 7);
    chm_err err = {0};
    double *g[2];
    for (int with = 0; with < 2; with++) { /* the same pass without and with a hook */
        chm_model_set_grad_hook(m, with ? record : NULL, &s);
        seen_reset(&s);
        cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, NULL, &err), CHM_OK, "%s", err.msg);
        if (!with) cr_assert_eq(s.calls, 0, "no calls without a hook");
        g[with] = grads_now(&s);
    }
    cr_assert(s.calls > 0);
    cr_assert_arr_eq(g[0], g[1], (size_t)s.n * sizeof *g[0], "the hook changed the gradients");
    s.fail_at = 3;
    seen_reset(&s);
    chm_status rc = chm_model_forward_backward(m, ids, 1.0, NULL, &err);
    cr_assert(rc == CHM_ERR_DEVICE && strstr(err.msg, "bucket 3 failed"), "%d: %s", rc, err.msg);
    cr_assert_eq(s.calls, 4, "the pass stopped at the failing call");
    /* removed again: passes run without it */
    chm_model_set_grad_hook(m, NULL, NULL);
    seen_reset(&s);
    cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, NULL, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(s.calls, 0);
    free(g[0]), free(g[1]), free(ids);
    seen_free(&s);
    chm_model_free(m);
    chm_config_free(&cfg);
    chm_backend_close(be);
}
