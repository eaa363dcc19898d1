/*
 * test_model.c: the model beyond its gradients (those are test_model_grad.c):
 * incremental decoding equals the full forward in causal routing, parameter
 * counts of chimera-1b against an independent formula, the parameter table
 * and initialisation, the loss parts at initialisation, gradient
 * accumulation, f32 against f64, and argument errors.
 */
#include <stdio.h>
#include <stdlib.h>

#include "chimera/model.h"
#include "testutil.h"

/* Every block kind, small enough for f64 on one thread. %s: pattern, tie_embeddings. */
static const char *SMALL_YAML =
    "model:\n"
    "  vocab: 29\n"
    "  d_model: 16\n"
    "  n_layers: 4\n"
    "  pattern: \"%s\"\n"
    "  heads: 4\n"
    "  kv_heads: 2\n"
    "  head_dim: 4\n"
    "  mamba: {d_state: 4, d_conv: 3, expand: 2, dt_rank: 2}\n"
    "  ffn: {hidden: 24}\n"
    "  moe: {experts: 4, top_k: 2, every: 2, capacity_factor: 1.0, hidden: 12}\n"
    "  mod: {layers: [1, 2], capacity: 0.5}\n"
    "  mtp: {depth: 2, weight: 0.3}\n"
    "  tie_embeddings: %s\n"
    "train: {micro_batch: 2, seq_len: 12, steps: 1, lr: 1.0e-3}\n"
    "data: {tokenizer: small-tokenizer.json}\n";

/* The cpu backend on one thread (tiny shapes; idle OpenMP workers would only spin). */
static chm_backend *open_cpu1(void) {
    chm_backend_options o = {.device_index = -1, .threads = 1};
    chm_backend *be = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_backend_open("cpu", &o, &be, &err), CHM_OK, "%s", err.msg);
    return be;
}

static void load_small(const char *pattern, bool tied, chm_config *cfg) {
    char yaml[2048];
    snprintf(yaml, sizeof yaml, SMALL_YAML, pattern, tied ? "true" : "false");
    chm_err err = {0};
    cr_assert_eq(chm_config_load_string(yaml, "small.yaml", NULL, 0, cfg, &err), CHM_OK, "%s",
                 err.msg);
}

static chm_model *make(chm_backend *be, const chm_config *cfg, chm_dtype dt, uint64_t seed) {
    chm_model_options o = {dt, cfg->train.micro_batch, cfg->train.seq_len, 7, false, 0};
    chm_model *m = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_model_create(&cfg->model, be, &o, &m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_init_params(m, seed, &err), CHM_OK, "%s", err.msg);
    return m;
}

/* Parameter i's values as host doubles (any float dtype of the model). */
static double *param_values(chm_backend *be, const chm_model_param *p, chm_dtype dt) {
    double *x = tt_dalloc(p->numel);
    tt_tensor t = {p->value, NULL};
    t.t.dtype = dt;
    tt_download(be, &t, x);
    return x;
}

/* Scale every parameter named like `needle` by `s` and add uniform(-a, a). */
static void perturb(chm_backend *be, chm_model *m, const char *needle, double s, double a,
                    tt_rng *rng) {
    for (int i = 0; i < chm_model_param_count(m); i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        if (!strstr(p->name, needle)) continue;
        double *x = param_values(be, p, chm_model_dtype(m));
        for (int64_t j = 0; j < p->numel; j++) x[j] = s * x[j] + tt_uniform(rng, -a, a);
        tt_tensor t = {p->value, NULL};
        tt_upload(be, &t, x);
        free(x);
    }
}

static int32_t *random_ids(tt_rng *rng, int64_t n, int64_t V) {
    int32_t *ids = calloc((size_t)n, sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(tt_next(rng) % (uint64_t)V);
    return ids;
}

/* ---- incremental decoding ------------------------------------------------------- */

static void decode_case(const char *pattern, chm_dtype dt, double tol) {
    chm_backend *be = open_cpu1();
    chm_config cfg;
    load_small(pattern, true, &cfg);
    chm_model *m = make(be, &cfg, dt, 3);
    tt_rng rng = tt_rng_make(77);
    /* O(1) weights; MoD router scores of both signs so that tokens both run and skip */
    perturb(be, m, "", 1.0, 0.3, &rng);
    perturb(be, m, "mod.router", 0.0, 1.0, &rng);
    int64_t T = chm_model_seq_len(m), V = cfg.model.vocab;
    chm_err err = {0};
    chm_decoder *d = NULL;
    cr_assert_eq(chm_decoder_create(m, T, &d, &err), CHM_OK, "%s", err.msg);
    for (int prompt = 0; prompt < 3; prompt++) {
        int64_t n = T - prompt * 4; /* 12, 8, 4 tokens */
        int32_t *ids = random_ids(&rng, n, V);
        double *full = tt_dalloc(n * V), *step = tt_dalloc(n * V);
        cr_assert_eq(chm_model_logits(m, ids, n, CHM_ROUTING_CAUSAL, full, &err), CHM_OK, "%s",
                     err.msg);
        cr_assert_eq(chm_decoder_reset(d, &err), CHM_OK, "%s", err.msg);
        for (int64_t t = 0; t < n; t++)
            cr_assert_eq(chm_decoder_step(d, ids[t], step + t * V, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(chm_decoder_pos(d), n);
        char what[96];
        snprintf(what, sizeof what, "decode vs full forward (%s, %s, %lld tokens)", pattern,
                 chm_dtype_name(dt), (long long)n);
        tt_assert_close(what, step, full, n * V, tol, tol);
        free(ids), free(full), free(step);
    }
    int32_t tok = 0;
    double *row = tt_dalloc(V);
    cr_assert_eq(chm_decoder_step(d, V, row, &err), CHM_ERR_INVALID_ARG);
    cr_assert_eq(chm_decoder_reset(d, &err), CHM_OK);
    for (int64_t t = 0; t < T; t++) cr_assert_eq(chm_decoder_step(d, tok, row, &err), CHM_OK);
    cr_assert_eq(chm_decoder_step(d, tok, row, &err), CHM_ERR_INVALID_ARG, "full decoder");
    cr_assert(strstr(err.msg, "full") != NULL, "%s", err.msg);
    free(row);
    chm_decoder_free(d);
    chm_model_free(m);
    chm_config_free(&cfg);
    chm_backend_close(be);
}

Test(model, decode_matches_causal_forward_f64) {
    decode_case("MA", CHM_F64, 1e-10);
    decode_case("AM", CHM_F64, 1e-10);
}

Test(model, decode_matches_causal_forward_f32) { decode_case("MA", CHM_F32, 2e-4); }

/* ---- parameter counts --------------------------------------------------------------- */

/* chimera-1b as issue 3 fixes it. */
static const char *CHIMERA_1B_YAML =
    "model:\n"
    "  vocab: 50304\n"
    "  d_model: 1024\n"
    "  n_layers: 24\n"
    "  pattern: \"MMMA\"\n"
    "  heads: 16\n"
    "  head_dim: 64\n"
    "  mamba: {d_state: 16, d_conv: 4, expand: 2, dt_rank: 64}\n"
    "  ffn: {hidden: 2816}\n"
    "  moe: {experts: 8, top_k: 2, every: 2, capacity_factor: 1.25}\n"
    "  mod: {layers: [3, 7, 11, 15, 19, 23], capacity: 0.5}\n"
    "  mtp: {depth: 1, weight: 0.3}\n"
    "  tie_embeddings: true\n"
    "train: {micro_batch: 8, seq_len: 2048, steps: 1, lr: 3.0e-4}\n"
    "data: {tokenizer: gpt-neox-20b.json}\n";

/* Parameters of a config, counted from the architecture's formulas (not from the table). */
static void formula_counts(const chm_config_model *c, int64_t *total, int64_t *active) {
    int64_t C = c->d_model, V = c->vocab, Di = c->mamba.d_inner, N = c->mamba.d_state;
    int64_t Rk = c->mamba.dt_rank, W = c->mamba.d_conv, E = c->moe.experts, K = c->moe.top_k;
    int64_t attn = C * c->heads * c->head_dim * 2 + 2 * C * c->kv_heads * c->head_dim;
    int64_t mamba =
        2 * Di * C + Di * W + Di + (Rk + 2 * N) * Di + Di * Rk + Di + Di * N + Di + C * Di;
    int64_t dense = 3 * C * c->ffn_hidden, expert = 3 * C * c->moe.hidden;
    *total = V * C * (c->tie_embeddings ? 1 : 2) + C; /* embeddings, final norm */
    *active = *total;
    for (int l = 0; l < c->n_layers; l++) {
        int64_t p = 2 * C + (c->mixer[l] == 'A' ? attn : mamba) + (c->mod_layer[l] ? C : 0);
        bool moe = c->moe_layer[l] && E > 0;
        *total += p + (moe ? E * C + E * expert : dense);
        *active += p + (moe ? E * C + K * expert : dense);
    }
    int64_t mtp = 3 * C + 2 * C * C + 2 * C + (c->pattern[0] == 'A' ? attn : mamba) + dense;
    *total += c->mtp.depth * mtp;
    *active += c->mtp.depth * mtp;
}

static void print_stats(const char *name, const chm_config *cfg, const chm_model_stats *s) {
    printf("%s: %.4gB parameters (%lld), %.4gB active per token (%lld), embedding %lld, mtp "
           "%lld; %.4g GFLOP/token forward, %.4g training\n",
           name, (double)s->params_total / 1e9, (long long)s->params_total,
           (double)s->params_active / 1e9, (long long)s->params_active,
           (long long)s->params_embedding, (long long)s->params_mtp, s->flops_forward / 1e9,
           s->flops_train / 1e9);
    (void)cfg;
}

Test(model, chimera_1b_parameter_counts) {
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load_string(CHIMERA_1B_YAML, "chimera-1b.yaml", NULL, 0, &cfg, &err),
                 CHM_OK, "%s", err.msg);
    cr_assert_eq(cfg.model.n_mamba, 18);
    cr_assert_eq(cfg.model.n_attention, 6);
    cr_assert_eq(cfg.model.n_moe, 12);
    chm_model_stats s;
    cr_assert_eq(chm_model_stats_compute(&cfg.model, cfg.train.seq_len, &s, &err), CHM_OK, "%s",
                 err.msg);
    int64_t total, active;
    formula_counts(&cfg.model, &total, &active);
    print_stats("chimera-1b (issue 3)", &cfg, &s);
    cr_assert_eq(s.params_total, total, "table %lld, formula %lld", (long long)s.params_total,
                 (long long)total);
    cr_assert_eq(s.params_active, active, "table %lld, formula %lld", (long long)s.params_active,
                 (long long)active);
    cr_assert(s.params_total > 1.05e9 && s.params_total < 1.2e9, "about 1.1B");
    cr_assert(s.params_active > 0.45e9 && s.params_active < 0.56e9, "about 0.5B active");
    cr_assert(s.flops_train > 2.9 * s.flops_forward);
    chm_config_free(&cfg);
    /* the shipped file, when it is there, through the same checks */
    if (chm_config_load_file(CHIMERA_SOURCE_DIR "/configs/training_dolma.yaml", NULL, 0, &cfg,
                             &err) == CHM_OK) {
        cr_assert_eq(chm_model_stats_compute(&cfg.model, cfg.train.seq_len, &s, &err), CHM_OK, "%s",
                     err.msg);
        formula_counts(&cfg.model, &total, &active);
        print_stats("configs/training_dolma.yaml", &cfg, &s);
        cr_assert_eq(s.params_total, total);
        cr_assert_eq(s.params_active, active);
        chm_config_free(&cfg);
    }
}

/* ---- table, initialisation ----------------------------------------------------------- */

Test(model, table_names_shapes_and_regions) {
    chm_config cfg;
    load_small("MA", false, &cfg);
    chm_model_options o = {CHM_F32, 2, 12, 0, false, 0};
    chm_model *m = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &o, &m, &err), CHM_OK, "%s", err.msg);
    const char *names[] = {"embed.weight",
                           "layers.0.norm1.weight",
                           "layers.0.mixer.in_proj.weight",
                           "layers.0.mixer.A_log",
                           "layers.1.mixer.q_proj.weight",
                           "layers.1.ffn.experts.w1",
                           "layers.1.ffn.router.weight",
                           "layers.1.mod.router.weight",
                           "layers.2.mod.router.weight",
                           "layers.2.ffn.w2.weight",
                           "mtp.0.proj.weight",
                           "mtp.1.layer.mixer.out_proj.weight",
                           "final_norm.weight",
                           "lm_head.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_assert_not_null(chm_model_param_find(m, names[i]), "no %s", names[i]);
    cr_assert_null(chm_model_param_find(m, "layers.0.mod.router.weight"));
    const chm_model_param *p = chm_model_param_find(m, "layers.1.ffn.experts.w2");
    cr_assert(p->ndim == 3 && p->shape[0] == 4 && p->shape[1] == 16 && p->shape[2] == 12);
    p = chm_model_param_find(m, "layers.0.mixer.x_proj.weight");
    cr_assert(p->shape[0] == 2 + 2 * 4 && p->shape[1] == 32 && p->decay);
    cr_assert(!chm_model_param_find(m, "layers.0.mixer.D")->decay);
    /* the regions cover each parameter once, decayed ones first */
    int64_t decay_end = 0, end = 0;
    for (int i = 0; i < chm_model_param_count(m); i++) {
        p = chm_model_param_get(m, i);
        if (p->decay && p->offset + p->numel > decay_end) decay_end = p->offset + p->numel;
        if (p->offset + p->numel > end) end = p->offset + p->numel;
    }
    for (int i = 0; i < chm_model_param_count(m); i++) {
        p = chm_model_param_get(m, i);
        if (!p->decay) cr_assert(p->offset >= decay_end, "%s is not after the decayed", p->name);
        for (int j = 0; j < i; j++) {
            const chm_model_param *q = chm_model_param_get(m, j);
            cr_assert(p->offset >= q->offset + q->numel || q->offset >= p->offset + p->numel,
                      "%s overlaps %s", p->name, q->name);
        }
    }
    chm_model_free(m);
    chm_config_free(&cfg);
}

/* Mean and standard deviation of n values. */
static void moments(const double *x, int64_t n, double *mean, double *std) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += x[i], s2 += x[i] * x[i];
    *mean = s / (double)n;
    *std = sqrt(fmax(s2 / (double)n - *mean * *mean, 0));
}

Test(model, init_is_keyed_and_follows_the_recipe) {
    chm_backend *be = open_cpu1();
    chm_config cfg;
    load_small("MA", true, &cfg);
    chm_model *a = make(be, &cfg, CHM_F64, 5), *b = make(be, &cfg, CHM_F64, 5);
    chm_model *c = make(be, &cfg, CHM_F32, 6);
    int L = cfg.model.n_layers;
    for (int i = 0; i < chm_model_param_count(a); i++) {
        const chm_model_param *p = chm_model_param_get(a, i), *q = chm_model_param_get(b, i);
        double *x = param_values(be, p, CHM_F64), *y = param_values(be, q, CHM_F64);
        cr_assert(memcmp(x, y, (size_t)p->numel * sizeof *x) == 0, "%s differs", p->name);
        double mean, std;
        moments(x, p->numel, &mean, &std);
        if (strstr(p->name, "norm") || !strcmp(strrchr(p->name, '.'), ".D"))
            cr_assert(mean == 1 && std == 0, "%s must be ones", p->name);
        else if (strstr(p->name, "A_log"))
            for (int64_t j = 0; j < p->numel; j++)
                cr_assert_float_eq(x[j], log((double)(j % p->shape[1] + 1)), 1e-15);
        else if (strstr(p->name, "dt_proj.bias"))
            for (int64_t j = 0; j < p->numel; j++) {
                double dt = log1p(exp(x[j]));
                cr_assert(dt >= 0.999e-3 && dt <= 1.001e-1, "%s: softplus = %g", p->name, dt);
            }
        else if (strstr(p->name, "o_proj") || strstr(p->name, "out_proj") || strstr(p->name, "w2"))
            cr_assert(fabs(std - 0.02 / sqrt(2.0 * L)) < 0.3 * 0.02 / sqrt(2.0 * L), "%s std %g",
                      p->name, std);
        else if (p->numel >= 256 && !strstr(p->name, "conv1d") && !strstr(p->name, "dt_proj"))
            cr_assert(fabs(std - 0.02) < 0.003 && fabs(mean) < 0.004, "%s: mean %g std %g", p->name,
                      mean, std);
        free(x), free(y);
    }
    /* another seed gives other values, and f32 holds the f64 values rounded */
    const chm_model_param *p = chm_model_param_find(a, "embed.weight");
    double *x = param_values(be, p, CHM_F64);
    double *z = param_values(be, chm_model_param_find(c, "embed.weight"), CHM_F32);
    cr_assert(x[0] != z[0] && x[1] != z[1]);
    free(x), free(z);
    chm_model_free(a), chm_model_free(b), chm_model_free(c);
    chm_config_free(&cfg);
    chm_backend_close(be);
}

/* ---- losses and gradients ------------------------------------------------------------ */

Test(model, loss_parts_at_init_and_accumulation) {
    chm_backend *be = open_cpu1();
    chm_config cfg;
    load_small("MA", true, &cfg);
    chm_model *m = make(be, &cfg, CHM_F64, 9);
    tt_rng rng = tt_rng_make(5);
    int64_t B = 2, T = 12, V = cfg.model.vocab;
    int32_t *ids = random_ids(&rng, B * (T + 1), V);
    chm_err err = {0};
    chm_model_loss l1, l2, le;
    cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK);
    cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, &l1, &err), CHM_OK, "%s", err.msg);
    /* at init the predictions are near uniform and the routers near balanced */
    cr_assert(fabs(l1.ce - log((double)V)) < 0.05, "ce %g vs log V %g", l1.ce, log((double)V));
    cr_assert(fabs(l1.mtp_depth[0] - log((double)V)) < 0.05 &&
              fabs(l1.mtp_depth[1] - log((double)V)) < 0.05);
    cr_assert(fabs(l1.mod_aux - log(2.0)) < 0.01, "mod aux %g", l1.mod_aux);
    cr_assert(l1.moe_balance > 0.9 && l1.moe_balance < 1.5, "balance %g", l1.moe_balance);
    cr_assert(fabs(l1.moe_z - log(4.0) * log(4.0)) < 0.05, "z %g", l1.moe_z);
    double total =
        l1.ce + 0.3 * l1.mtp + 0.01 * l1.moe_balance + 0.001 * l1.moe_z + 0.01 * l1.mod_aux;
    cr_assert_float_eq(l1.total, total, 1e-12);
    int32_t counts[2 * 4];
    int64_t dropped;
    cr_assert_eq(chm_model_expert_counts(m, counts, &dropped, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_moe_layers(m), 2);
    for (int i = 0; i < 8; i++) cr_assert(counts[i] >= 0 && counts[i] <= 24);
    /* gradients accumulate: g(1.0) == g(0.5) + g(0.5) */
    chm_tensor gall;
    chm_model_param_region(m, true, NULL, &gall);
    int64_t n = chm_tensor_numel(&gall);
    double *g1 = tt_dalloc(n), *g2 = tt_dalloc(n);
    cr_assert_eq(chm_download(be, &gall, g1), CHM_OK);
    cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK);
    cr_assert_eq(chm_model_forward_backward(m, ids, 0.5, &l2, &err), CHM_OK);
    cr_assert_eq(chm_model_forward_backward(m, ids, 0.5, &l2, &err), CHM_OK);
    cr_assert_eq(chm_download(be, &gall, g2), CHM_OK);
    tt_assert_close("accumulated gradients", g2, g1, n, 1e-15, 1e-12);
    cr_assert_float_eq(l2.total, l1.total, 1e-14);
    /* evaluation computes the same loss and leaves the gradients alone */
    cr_assert_eq(chm_model_eval_loss(m, ids, &le, &err), CHM_OK);
    cr_assert_float_eq(le.total, l1.total, 1e-14);
    cr_assert_eq(chm_download(be, &gall, g1), CHM_OK);
    tt_assert_close("gradients after eval", g1, g2, n, 0, 0);
    free(g1), free(g2), free(ids);
    chm_model_free(m);
    chm_config_free(&cfg);
    chm_backend_close(be);
}

Test(model, f32_matches_f64) {
    chm_backend *be = open_cpu1();
    chm_config cfg;
    load_small("AM", false, &cfg);
    chm_model *m64 = make(be, &cfg, CHM_F64, 4), *m32 = make(be, &cfg, CHM_F32, 4);
    tt_rng rng = tt_rng_make(6);
    int32_t *ids = random_ids(&rng, 2 * 13, cfg.model.vocab);
    chm_err err = {0};
    chm_model_loss a, b;
    cr_assert_eq(chm_model_zero_grad(m64, &err), CHM_OK);
    cr_assert_eq(chm_model_zero_grad(m32, &err), CHM_OK);
    cr_assert_eq(chm_model_forward_backward(m64, ids, 1.0, &a, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_forward_backward(m32, ids, 1.0, &b, &err), CHM_OK, "%s", err.msg);
    cr_assert(fabs(a.total - b.total) < 1e-5 * a.total, "f64 %.9g f32 %.9g", a.total, b.total);
    const chm_model_param *p = chm_model_param_find(m64, "layers.0.mixer.q_proj.weight");
    const chm_model_param *q = chm_model_param_find(m32, "layers.0.mixer.q_proj.weight");
    tt_tensor t64 = {p->grad, NULL}, t32 = {q->grad, NULL};
    double *g64 = tt_dalloc(p->numel), *g32 = tt_dalloc(p->numel);
    tt_download(be, &t64, g64);
    tt_download(be, &t32, g32);
    cr_assert(tt_rel_l2(g32, g64, p->numel) < 1e-3, "rel %g", tt_rel_l2(g32, g64, p->numel));
    free(g64), free(g32), free(ids);
    chm_model_free(m64), chm_model_free(m32);
    chm_config_free(&cfg);
    chm_backend_close(be);
}

/* The backward runs the experts' weight gradients one matmul each over their live rows (counts
 * read on the host, moe.c); CHIMERA_MOE_GROUPED=1 keeps the grouped op: same gradients. */
Test(model, experts_on_live_rows_match_grouped_ops) {
    chm_backend *be = open_cpu1();
    chm_config cfg;
    load_small("MA", false, &cfg);
    tt_rng rng = tt_rng_make(8);
    int32_t *ids = random_ids(&rng, 2 * 13, cfg.model.vocab);
    chm_err err = {0};
    chm_model_loss l[2];
    double *g[2] = {NULL, NULL};
    int64_t n = 0;
    for (int i = 0; i < 2; i++) {
        if (i) setenv("CHIMERA_MOE_GROUPED", "1", 1);
        chm_model *m = make(be, &cfg, CHM_F64, 5);
        cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK);
        cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, &l[i], &err), CHM_OK, "%s", err.msg);
        chm_tensor gall;
        chm_model_param_region(m, true, NULL, &gall);
        n = chm_tensor_numel(&gall);
        tt_tensor t = {gall, NULL};
        g[i] = tt_dalloc(n);
        tt_download(be, &t, g[i]);
        chm_model_free(m);
    }
    unsetenv("CHIMERA_MOE_GROUPED");
    cr_assert(fabs(l[0].total - l[1].total) < 1e-12 * l[1].total, "%.17g vs %.17g", l[0].total,
              l[1].total);
    cr_assert(l[0].moe_balance > 0, "the config has MoE layers");
    tt_assert_close("gradients", g[0], g[1], n, 1e-12, 1e-12);
    free(g[0]), free(g[1]), free(ids);
    chm_config_free(&cfg);
    chm_backend_close(be);
}

Test(model, bad_arguments_are_refused) {
    chm_backend *be = open_cpu1();
    chm_config cfg;
    load_small("MA", true, &cfg);
    chm_err err = {0};
    chm_model *m = NULL;
    chm_model_options bad = {CHM_I32, 2, 12, 0, false, 0};
    cr_assert_eq(chm_model_create(&cfg.model, be, &bad, &m, &err), CHM_ERR_INVALID_ARG);
    chm_model_options shortseq = {CHM_F32, 2, 2, 0, false, 0}; /* mtp depth 2 needs T > 2 */
    cr_assert_eq(chm_model_create(&cfg.model, be, &shortseq, &m, &err), CHM_ERR_CONFIG);
    cr_assert(strstr(err.msg, "mtp.depth") != NULL, "%s", err.msg);
    m = make(be, &cfg, CHM_F32, 1);
    int32_t ids[26] = {0};
    ids[17] = 29;
    cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, NULL, &err), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "token id 29 at position 17") != NULL, "%s", err.msg);
    double logits[29];
    cr_assert_eq(chm_model_logits(m, ids, 13, CHM_ROUTING_CAUSAL, logits, &err),
                 CHM_ERR_INVALID_ARG);
    chm_model *desc = NULL;
    chm_model_options o = {CHM_F32, 2, 12, 0, false, 0};
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &o, &desc, &err), CHM_OK);
    cr_assert_eq(chm_model_init_params(desc, 1, &err), CHM_ERR_INVALID_ARG);
    chm_model_free(desc);
    chm_model_free(m);
    chm_config_free(&cfg);
    chm_backend_close(be);
}
