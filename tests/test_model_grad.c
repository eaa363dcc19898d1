/*
 * test_model_grad.c: whole-model gradient check in f64 on the cpu backend.
 *
 * A tiny config with every block kind (Mamba and attention mixers, a MoE
 * layer whose capacity drops tokens, mixture-of-depths on an attention and on
 * a Mamba layer, MTP depth 1; tied embeddings, and an untied variant whose
 * MTP layer is attention). Weights are the initialisation plus uniform noise
 * (so that no gradient is trivially small), the batch is random. For every
 * parameter tensor, a few random entries get the central difference
 * (L(w+h) - L(w-h)) / 2h of the total loss, compared with the backward's
 * gradient: relative L2 error per tensor under 1e-5. A perturbation that
 * flips a routing decision (MoE top-k or capacity, MoD selection) would make
 * the loss jump: the routing digest of every perturbed forward is compared
 * with the unperturbed one and flipped entries are skipped (and counted).
 */
#include <stdio.h>

#include "chimera/model.h"
#include "testutil.h"

/* Every block kind; B = 2, T = 7; MoE capacity factor 0.75 forces drops. */
static const char *TINY_YAML =
    "model:\n"
    "  vocab: 23\n"
    "  d_model: 8\n"
    "  n_layers: 4\n"
    "  pattern: \"%s\"\n"
    "  heads: 2\n"
    "  kv_heads: 1\n"
    "  head_dim: 4\n"
    "  mamba: {d_state: 3, d_conv: 3, expand: 2, dt_rank: 2}\n"
    "  ffn: {hidden: 12}\n"
    "  moe: {experts: 4, top_k: 2, every: 2, capacity_factor: 0.75, hidden: 6,\n"
    "        aux_weight: 0.1, z_weight: 0.01}\n"
    "  mod: {layers: [1, 2], capacity: 0.5, aux_weight: 0.1}\n"
    "  mtp: {depth: 1, weight: 0.3}\n"
    "  tie_embeddings: %s\n"
    "train: {micro_batch: 2, seq_len: 7, steps: 1, lr: 1.0e-3}\n"
    "data: {tokenizer: tiny-tokenizer.json}\n";

typedef struct gc_ctx {
    chm_backend *be;
    chm_model *m;
    int32_t *ids;
    uint64_t digest;
} gc_ctx;

/*
 * The cpu backend on one thread: these shapes are far too small to gain from threads, and idle
 * OpenMP workers spinning between the many tiny ops make the check ~10x slower on 2 cores.
 */
static chm_backend *open_cpu1(void) {
    chm_backend_options o = {.device_index = -1, .threads = 1};
    chm_backend *be = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_backend_open("cpu", &o, &be, &err), CHM_OK, "%s", err.msg);
    return be;
}

static chm_model *make_model(chm_backend *be, const char *pattern, bool tied, chm_config *cfg) {
    char yaml[2048];
    snprintf(yaml, sizeof yaml, TINY_YAML, pattern, tied ? "true" : "false");
    chm_err err = {0};
    cr_assert_eq(chm_config_load_string(yaml, "tiny.yaml", NULL, 0, cfg, &err), CHM_OK, "%s",
                 err.msg);
    chm_model_options o = {.dtype = CHM_F64, .batch = cfg->train.micro_batch,
                           .seq_len = cfg->train.seq_len, .ce_chunk_rows = 5};
    chm_model *m = NULL;
    cr_assert_eq(chm_model_create(&cfg->model, be, &o, &m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_init_params(m, 7, &err), CHM_OK, "%s", err.msg);
    return m;
}

/*
 * Add uniform(-0.25, 0.25) noise to every parameter; dt_proj (weight and bias) becomes uniform(-1, 1) so
 * that the steps softplus(dt) are O(1) and the scan's gradients (A_log, dt) are far above the
 * differences' rounding noise (at the initial dt in [1e-3, 1e-1] they are ~1e-8).
 */
static void jitter(chm_backend *be, chm_model *m, tt_rng *rng) {
    for (int i = 0; i < chm_model_param_count(m); i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        bool dt = strstr(p->name, "dt_proj.") != NULL;
        double *x = tt_dalloc(p->numel);
        cr_assert_eq(chm_download(be, &p->value, x), CHM_OK);
        for (int64_t j = 0; j < p->numel; j++)
            x[j] = dt ? tt_uniform(rng, -1, 1) : x[j] + tt_uniform(rng, -0.25, 0.25);
        cr_assert_eq(chm_upload(be, &p->value, x), CHM_OK);
        free(x);
    }
}

static double eval_loss(gc_ctx *c, uint64_t *digest) {
    chm_err err = {0};
    chm_model_loss l;
    cr_assert_eq(chm_model_eval_loss(c->m, c->ids, &l, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_routing_digest(c->m, digest, &err), CHM_OK, "%s", err.msg);
    return l.total;
}

/* One element of a parameter, read or written through a 1-element view. */
static double get_elem(chm_backend *be, const chm_tensor *t, int64_t j) {
    chm_tensor e = chm_tensor_1d(t->buf, t->offset + (size_t)j * sizeof(double), CHM_F64, 1);
    double v;
    cr_assert_eq(chm_download(be, &e, &v), CHM_OK);
    return v;
}

static void set_elem(chm_backend *be, const chm_tensor *t, int64_t j, double v) {
    chm_tensor e = chm_tensor_1d(t->buf, t->offset + (size_t)j * sizeof(double), CHM_F64, 1);
    cr_assert_eq(chm_upload(be, &e, &v), CHM_OK);
}

/* The loss with element j of p set to v; *same is cleared when a routing decision flipped. */
static double loss_at(gc_ctx *c, const chm_model_param *p, int64_t j, double v, bool *same) {
    uint64_t d;
    set_elem(c->be, &p->value, j, v);
    double l = eval_loss(c, &d);
    if (d != c->digest) *same = false;
    return l;
}

/*
 * The derivative of the loss along element j of p by the five-point stencil
 * (8(L(w+h) - L(w-h)) - (L(w+2h) - L(w-2h))) / 12h: truncation O(h^4), so h can be
 * large enough (1e-3) that rounding noise stays near 1e-12 absolute. False when a
 * routing decision flipped at any of the four points.
 */
static bool central_diff(gc_ctx *c, const chm_model_param *p, int64_t j, double *fd) {
    double w = get_elem(c->be, &p->value, j), h = 1e-3;
    bool same = true;
    double l1 = loss_at(c, p, j, w + h, &same) - loss_at(c, p, j, w - h, &same);
    double l2 = loss_at(c, p, j, w + 2 * h, &same) - loss_at(c, p, j, w - 2 * h, &same);
    set_elem(c->be, &p->value, j, w);
    *fd = (8 * l1 - l2) / (12 * h);
    return same;
}

/* Check 5 random entries of every parameter tensor; returns the worst relative error. */
static void check_all(gc_ctx *c, tt_rng *rng, const char *label) {
    int flips = 0, checked = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < chm_model_param_count(c->m); i++) {
        const chm_model_param *p = chm_model_param_get(c->m, i);
        double num = 0, den = 0;
        for (int s = 0; s < 5; s++) {
            int64_t j = (int64_t)(tt_next(rng) % (uint64_t)p->numel), fdj;
            double fd, g = get_elem(c->be, &p->grad, j);
            (void)fdj;
            if (!central_diff(c, p, j, &fd)) {
                flips++;
                continue;
            }
            num += (g - fd) * (g - fd);
            den += fd * fd;
            checked++;
        }
        double rel = sqrt(num) / fmax(sqrt(den), 1e-9);
        if (rel > worst) worst = rel, worst_name = p->name;
        cr_expect(rel < 1e-5, "%s: %s: gradient relative error %.3g (|fd| %.3g)", label, p->name,
                  rel, sqrt(den));
    }
    printf("model grad check (%s): %d entries, %d skipped for a routing flip, worst relative "
           "error %.3g (%s)\n",
           label, checked, flips, worst, worst_name);
    cr_assert(flips * 10 < checked, "%s: too many routing flips (%d of %d)", label, flips,
              checked + flips);
}

static void run_check(const char *pattern, bool tied, uint64_t seed) {
    chm_backend *be = open_cpu1();
    chm_config cfg;
    chm_model *m = make_model(be, pattern, tied, &cfg);
    tt_rng rng = tt_rng_make(seed);
    jitter(be, m, &rng);
    int64_t B = chm_model_batch(m), T = chm_model_seq_len(m);
    int32_t *ids = calloc((size_t)(B * (T + 1)), sizeof *ids);
    for (int64_t i = 0; i < B * (T + 1); i++) ids[i] = (int32_t)(tt_next(&rng) % 23);
    gc_ctx c = {be, m, ids, 0};
    chm_err err = {0};
    chm_model_loss l;
    cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, &l, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_routing_digest(m, &c.digest, &err), CHM_OK, "%s", err.msg);
    int32_t counts[8];
    int64_t dropped = 0;
    cr_assert_eq(chm_model_expert_counts(m, counts, &dropped, &err), CHM_OK, "%s", err.msg);
    cr_assert(dropped > 0, "the capacity factor 0.75 must drop tokens");
    cr_assert(l.moe_balance > 0 && l.moe_z > 0 && l.mod_aux > 0 && l.mtp > 0);
    uint64_t d;
    double again = eval_loss(&c, &d);
    cr_assert(fabs(again - l.total) <= 1e-13 * fabs(l.total), "eval %.17g vs step %.17g", again,
              l.total);
    char label[64];
    snprintf(label, sizeof label, "%s, %s", pattern, tied ? "tied" : "untied");
    check_all(&c, &rng, label);
    free(ids);
    chm_model_free(m);
    chm_config_free(&cfg);
    chm_backend_close(be);
}

Test(model_grad, every_block_kind_tied) { run_check("MA", true, 1); }

Test(model_grad, untied_attention_first) { run_check("AM", false, 2); }
