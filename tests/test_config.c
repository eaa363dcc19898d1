/*
 * test_config.c: the YAML config loader: the shipped configs load, derived
 * values and defaults are right, overrides edit the tree, every kind of error
 * gives the right code and a message with its location (file:line:col or
 * --set KEY), key path and expected/found text, the writer's output loads back,
 * and `chimera config` exits 0 or 2. Fixtures are under tests/data/configs/.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* popen, open_memstream */
#endif
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "chimera/config.h"
#include "config/config_internal.h"
#include "core/embedded.h"

#define FIXTURES CHIMERA_SOURCE_DIR "/tests/data/configs/"

static chm_status load_fixture(const char *name, const char *const *sets, int n_sets,
                               chm_config *cfg, chm_err *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s%s", FIXTURES, name);
    return chm_config_load_file(path, sets, n_sets, cfg, err);
}

/* Assert the status and that the message contains every one of the NULL-terminated needles. */
static void expect_error_v(chm_status rc, const chm_err *err, chm_status code,
                           const char **needles) {
    cr_assert_eq(rc, code, "status %s, expected %s; message: %s", chm_status_name(rc),
                 chm_status_name(code), err->msg);
    for (; *needles; needles++)
        cr_assert(strstr(err->msg, *needles) != NULL, "message lacks \"%s\": %s", *needles,
                  err->msg);
}
#define expect_error(rc, err, code, ...) \
    expect_error_v((rc), (err), (code), (const char *[]){__VA_ARGS__, NULL})

/* Load fixture `name` (with overrides) and expect it to fail with `code` and the needles. */
#define expect_fixture_error(name, sets, n_sets, code, ...)                    \
    do {                                                                      \
        chm_config cfg_;                                                      \
        chm_err err_ = {0};                                                   \
        chm_status rc_ = load_fixture((name), (sets), (n_sets), &cfg_, &err_); \
        expect_error(rc_, &err_, (code), __VA_ARGS__);                        \
        cr_assert_null(cfg_.source, "a failed load leaves the config zeroed"); \
    } while (0)

static void load_good(const char *const *sets, int n_sets, chm_config *cfg) {
    chm_err err = {0};
    chm_status rc = load_fixture("good.yaml", sets, n_sets, cfg, &err);
    cr_assert_eq(rc, CHM_OK, "good.yaml: %s", err.msg);
}

/* ---- shipped configs ------------------------------------------------------------ */

Test(config, shipped_files_load) {
    const char *names[] = {"test", "tiny", "training_dolma"};
    for (int i = 0; i < 3; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/configs/%s.yaml", CHIMERA_SOURCE_DIR, names[i]);
        chm_config cfg;
        chm_err err = {0};
        cr_assert_eq(chm_config_load_file(path, NULL, 0, &cfg, &err), CHM_OK, "%s: %s", path,
                     err.msg);
        cr_assert_str_eq(cfg.source, path);
        chm_config_free(&cfg);
    }
}

Test(config, embedded_configs_load) {
    int n = 0;
    for (const chm_embedded_file *f = chm_embedded_configs; f->name; f++, n++) {
        chm_config cfg;
        chm_err err = {0};
        cr_assert_eq(chm_config_load_builtin(f->name, NULL, 0, &cfg, &err), CHM_OK, "%s: %s",
                     f->name, err.msg);
        chm_config_free(&cfg);
    }
    cr_assert(n >= 1);
    /* No spec means the built-in test config; its messages name it as such. */
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load(NULL, NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    cr_assert_str_eq(cfg.source, "<builtin test.yaml>");
    chm_config_free(&cfg);
    const char *sets[] = {"model.d_modle=3"};
    expect_error(chm_config_load(NULL, sets, 1, &cfg, &err), &err, CHM_ERR_CONFIG,
                 "--set model.d_modle");
    expect_error(chm_config_load_builtin("nope", NULL, 0, &cfg, &err), &err, CHM_ERR_IO, "'nope'",
                 "test");
    expect_error(chm_config_load("/nonexistent/x.yaml", NULL, 0, &cfg, &err), &err, CHM_ERR_IO,
                 "/nonexistent/x.yaml");
}

Test(config, test_config_is_the_quick_hybrid) {
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load_builtin("test", NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    const chm_config_model *m = &cfg.model;
    cr_assert_str_eq(cfg.data.tokenizer, "byte");
    cr_assert_str_eq(cfg.data.train, "builtin");
    cr_assert(m->vocab >= 256 && m->vocab <= 320);
    cr_assert(m->d_model >= 64 && m->d_model <= 128);
    cr_assert_eq(m->n_layers, 4);
    cr_assert_str_eq(m->pattern, "MMMA");
    cr_assert_eq(m->heads, 4);
    cr_assert_eq(m->moe.experts, 4);
    cr_assert_eq(m->moe.top_k, 2);
    cr_assert_eq(m->n_moe, 2);
    cr_assert_eq(m->mod.n_layers, 1);
    cr_assert_eq(m->mtp.depth, 1);
    cr_assert(cfg.train.seq_len >= 64 && cfg.train.seq_len <= 128);
    cr_assert(cfg.train.micro_batch >= 8 && cfg.train.micro_batch <= 16);
    cr_assert(cfg.train.total_steps >= 200 && cfg.train.total_steps <= 400);
    cr_assert_eq(cfg.train.schedule, CHM_CONFIG_SCHEDULE_COSINE);
    chm_config_free(&cfg);
}

Test(config, dolma_config_is_chimera_1b) {
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/training_dolma.yaml", CHIMERA_SOURCE_DIR);
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load_file(path, NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    const chm_config_model *m = &cfg.model;
    cr_assert_eq(m->vocab, 50304);
    cr_assert_eq(m->vocab % 64, 0);
    /* issue 3 fixes chimera-1b's shape */
    cr_assert_eq(m->d_model, 1024);
    cr_assert_eq(m->n_layers, 24);
    cr_assert_str_eq(m->pattern, "MMMA");
    cr_assert_eq(m->n_mamba, 18);
    cr_assert_eq(m->n_attention, 6);
    cr_assert_eq(m->heads, 16);
    cr_assert_eq(m->head_dim, 64);
    cr_assert_eq(m->mamba.d_state, 16);
    cr_assert_eq(m->mamba.d_conv, 4);
    cr_assert_eq(m->mamba.expand, 2);
    cr_assert_eq(m->mamba.dt_rank, 64);
    cr_assert_eq(m->ffn_hidden, 2816);
    cr_assert_eq(m->moe.experts, 8);
    cr_assert_eq(m->moe.top_k, 2);
    cr_assert_eq(m->n_moe, 12);
    for (int i = 0; i < m->n_layers; i++) {
        cr_assert_eq(m->moe_layer[i], i % 2 == 1, "layer %d", i);
        cr_assert_eq(m->mod_layer[i], m->mixer[i] == CHM_CONFIG_MIXER_ATTENTION, "layer %d", i);
    }
    cr_assert_float_eq(m->mod.capacity, 0.5, 1e-12);
    cr_assert_eq(m->mtp.depth, 1);
    cr_assert_float_eq(m->mtp.weight, 0.3, 1e-12);
    cr_assert_eq(cfg.train.micro_batch, 8);
    cr_assert_float_eq(cfg.train.min_lr, 3e-5, 1e-12);
    cr_assert_eq(cfg.train.schedule, CHM_CONFIG_SCHEDULE_COSINE);
    cr_assert_eq(cfg.train.seq_len, 2048);
    cr_assert_eq(cfg.train.tokens, 100000000000LL);
    cr_assert_eq(cfg.train.steps, 0);
    cr_assert_eq(cfg.train.warmup, 2000);
    cr_assert_float_eq(cfg.train.lr, 3e-4, 1e-12);
    cr_assert_float_eq(cfg.train.weight_decay, 0.1, 1e-12);
    cr_assert_float_eq(cfg.train.betas[1], 0.95, 1e-12);
    cr_assert_float_eq(cfg.train.clip, 1.0, 1e-12);
    cr_assert_eq(cfg.precision, CHM_CONFIG_PRECISION_BF16);
    cr_assert(strncmp(cfg.data.train, "data/dolma/", 11) == 0, "%s", cfg.data.train);
    chm_config_free(&cfg);
}

/* ---- derived values and defaults ------------------------------------------------- */

Test(config, derived_values) {
    chm_config cfg;
    load_good(NULL, 0, &cfg);
    const chm_config_model *m = &cfg.model;
    cr_assert_eq(m->head_dim, 25, "head_dim defaults to d_model / heads");
    cr_assert_eq(m->kv_heads, 4, "kv_heads defaults to heads");
    cr_assert_eq(m->mamba.dt_rank, 7, "dt_rank auto = ceil(100 / 16)");
    cr_assert(m->mamba.dt_rank_auto);
    cr_assert_eq(m->mamba.d_inner, 200);
    cr_assert_eq(m->ffn_hidden, 320, "8/3 * 100 = 266.7 rounds up to 320");
    cr_assert_eq(m->moe.hidden, 320, "expert width defaults to ffn.hidden");
    const char mixers[] = "MMAMMA";
    const bool moe[] = {0, 0, 1, 0, 0, 1}, mod[] = {1, 0, 0, 0, 1, 0};
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(m->mixer[i], (chm_config_mixer)mixers[i], "layer %d", i);
        cr_assert_eq(m->moe_layer[i], moe[i], "moe layer %d", i);
        cr_assert_eq(m->mod_layer[i], mod[i], "mod layer %d", i);
    }
    cr_assert_eq(m->n_mamba, 4);
    cr_assert_eq(m->n_attention, 2);
    cr_assert_eq(m->n_moe, 2);
    cr_assert_eq(cfg.train.tokens_per_step, 64);
    cr_assert_eq(cfg.train.total_steps, 10);
    cr_assert_float_eq(cfg.train.min_lr, 1e-4, 1e-15, "min_lr defaults to lr / 10");
    chm_config_free(&cfg);
}

Test(config, defaults) {
    chm_config cfg;
    load_good(NULL, 0, &cfg);
    const chm_config_model *m = &cfg.model;
    cr_assert_float_eq(m->rope_theta, 10000.0, 0);
    cr_assert_float_eq(m->norm_eps, 1e-5, 1e-20);
    cr_assert_eq(m->mamba.d_state, 16);
    cr_assert_eq(m->mamba.d_conv, 4);
    cr_assert_eq(m->mamba.expand, 2);
    cr_assert_eq(m->moe.top_k, 2);
    cr_assert_float_eq(m->moe.capacity_factor, 1.25, 0);
    cr_assert_float_eq(m->mod.capacity, 0.5, 0);
    cr_assert_eq(m->mtp.depth, 0);
    cr_assert(m->tie_embeddings);
    cr_assert_eq(cfg.train.grad_accum, 1);
    cr_assert_eq(cfg.train.warmup, 0);
    cr_assert_eq(cfg.train.schedule, CHM_CONFIG_SCHEDULE_COSINE);
    cr_assert_float_eq(cfg.train.decay_frac, 0.2, 0);
    cr_assert_float_eq(cfg.train.betas[0], 0.9, 0);
    cr_assert_float_eq(cfg.train.betas[1], 0.95, 0);
    cr_assert_float_eq(cfg.train.clip, 1.0, 0);
    cr_assert_str_eq(cfg.data.train, "builtin");
    cr_assert_str_eq(cfg.data.val, "");
    cr_assert_str_eq(cfg.data.tokenizer, "byte");
    cr_assert_eq(cfg.backend, CHM_CONFIG_BACKEND_AUTO);
    cr_assert_eq(cfg.precision, CHM_CONFIG_PRECISION_AUTO);
    cr_assert(cfg.warnings);
    chm_config_free(&cfg);
}

Test(config, value_forms) {
    /* Ints with separators or exponents, token suffixes, null = default, YAML booleans. */
    const char *sets[] = {"train.steps=",         "train.tokens=\"1.5M\"", "model.d_model=1_000",
                          "model.heads=1e1",      "model.head_dim=~",      "warnings=off",
                          "model.mamba.dt_rank=9"};
    chm_config cfg;
    load_good(sets, 7, &cfg);
    cr_assert_eq(cfg.train.tokens, 1500000);
    cr_assert_eq(cfg.train.steps, 0);
    cr_assert_eq(cfg.train.total_steps, (1500000 + 63) / 64);
    cr_assert_eq(cfg.model.d_model, 1000);
    cr_assert_eq(cfg.model.heads, 10);
    cr_assert_eq(cfg.model.head_dim, 100);
    cr_assert(!cfg.warnings);
    cr_assert_eq(cfg.model.mamba.dt_rank, 9);
    cr_assert(!cfg.model.mamba.dt_rank_auto);
    chm_config_free(&cfg);
}

/* ---- overrides ------------------------------------------------------------------- */

Test(config, overrides_edit_the_tree) {
    const char *sets[] = {
        "train.lr=0.01",          /* replace a scalar */
        "train.betas=[0.8,0.9]",  /* add a list */
        "model.mod.layers=[]",    /* replace a list by an empty one */
        "model.mtp.depth=2",      /* create the missing map model.mtp */
        "data.val=builtin",       /* create the missing section data */
        "train.lr=0.02",          /* a later override wins */
        "data.tokenizer=\"x y.json\"",
    };
    chm_config cfg;
    load_good(sets, 7, &cfg);
    cr_assert_float_eq(cfg.train.lr, 0.02, 0);
    cr_assert_float_eq(cfg.train.betas[0], 0.8, 0);
    cr_assert_float_eq(cfg.train.betas[1], 0.9, 0);
    cr_assert_eq(cfg.model.mod.n_layers, 0);
    for (int i = 0; i < cfg.model.n_layers; i++) cr_assert(!cfg.model.mod_layer[i]);
    cr_assert_eq(cfg.model.mtp.depth, 2);
    cr_assert_str_eq(cfg.data.val, "builtin");
    cr_assert_str_eq(cfg.data.tokenizer, "x y.json");
    chm_config_free(&cfg);
}

Test(config, override_fills_an_empty_section) {
    /* "moe:" with no value is an empty section that --set can fill. */
    chm_config cfg;
    chm_err err = {0};
    const char *text2 = "model: {vocab: 300, d_model: 64, n_layers: 2, pattern: MA, heads: 4,\n"
                        "  moe: }\ntrain: {micro_batch: 1, seq_len: 8, steps: 1, lr: 0.1}\n";
    const char *sets2[] = {"model.moe.experts=2", "model.moe.top_k=1"};
    cr_assert_eq(chm_config_load_string(text2, "s.yaml", sets2, 2, &cfg, &err), CHM_OK, "%s",
                 err.msg);
    cr_assert_eq(cfg.model.moe.experts, 2);
    cr_assert_eq(cfg.model.n_moe, 2);
    chm_config_free(&cfg);
}

/* ---- errors in files ---------------------------------------------------------------- */

Test(config, error_yaml_syntax) {
    expect_fixture_error("syntax_error.yaml", NULL, 0, CHM_ERR_PARSE, "syntax_error.yaml:4:2:",
                         "invalid YAML", "did not find expected key");
}

Test(config, error_unknown_key_suggests) {
    expect_fixture_error("unknown_key.yaml", NULL, 0, CHM_ERR_CONFIG, "unknown_key.yaml:4:3:",
                         "model.d_modle", "unknown key", "did you mean 'd_model'?");
}

Test(config, error_unknown_key_elsewhere_and_without_match) {
    chm_config cfg;
    chm_err err = {0};
    expect_error(chm_config_load_string("train:\n  d_model: 3\n", "s.yaml", NULL, 0, &cfg, &err),
                 &err, CHM_ERR_CONFIG, "s.yaml:2:3:", "train.d_model",
                 "did you mean 'model.d_model'?");
    expect_error(chm_config_load_string("modle:\n  vocab: 3\n", "s.yaml", NULL, 0, &cfg, &err),
                 &err, CHM_ERR_CONFIG, "s.yaml:1:1:", "did you mean 'model'?");
    expect_error(chm_config_load_string("model:\n  zzzzzz: 3\n", "s.yaml", NULL, 0, &cfg, &err),
                 &err, CHM_ERR_CONFIG, "s.yaml:2:3:", "model.zzzzzz", "expected one of:",
                 "d_model");
    expect_error(chm_config_load_string("model.vocab: 3\n", "s.yaml", NULL, 0, &cfg, &err), &err,
                 CHM_ERR_CONFIG, "s.yaml:1:1:", "dotted key");
}

Test(config, error_wrong_type) {
    expect_fixture_error("wrong_type_string.yaml", NULL, 0, CHM_ERR_CONFIG,
                         "wrong_type_string.yaml:4:12:", "model.d_model", "expected an integer",
                         "found 'hundred'");
    expect_fixture_error("wrong_type_map.yaml", NULL, 0, CHM_ERR_CONFIG,
                         "wrong_type_map.yaml:18:5:", "train.lr", "expected a number > 0",
                         "found a map");
    /* A quoted number is a string in YAML; a section must be a map. */
    const char *sets[] = {"model.heads=\"4\""};
    expect_fixture_error("good.yaml", sets, 1, CHM_ERR_CONFIG, "--set model.heads",
                         "expected an integer", "found the string \"4\"");
    const char *sets2[] = {"model.moe=3"};
    expect_fixture_error("good.yaml", sets2, 1, CHM_ERR_CONFIG, "--set model.moe",
                         "expected a map", "found 3");
    const char *sets3[] = {"model.d_model=1.5"};
    expect_fixture_error("good.yaml", sets3, 1, CHM_ERR_CONFIG, "expected an integer",
                         "found 1.5");
}

Test(config, error_out_of_range) {
    expect_fixture_error("negative_lr.yaml", NULL, 0, CHM_ERR_CONFIG, "negative_lr.yaml:17:7:",
                         "train.lr", "expected a number > 0", "found -1.0e-3");
    expect_fixture_error("topk_above_experts.yaml", NULL, 0, CHM_ERR_CONFIG,
                         "topk_above_experts.yaml:11:12:", "model.moe.top_k",
                         "expected an integer in [1, 4]", "found 6");
    expect_fixture_error("mod_capacity_zero.yaml", NULL, 0, CHM_ERR_CONFIG,
                         "mod_capacity_zero.yaml:13:15:", "model.mod.capacity",
                         "expected a number in (0, 1]", "found 0");
}

Test(config, error_missing_key) {
    expect_fixture_error("missing_key.yaml", NULL, 0, CHM_ERR_CONFIG, "missing_key.yaml:2:1:",
                         "model.d_model", "missing required key", "expected an integer",
                         "found nothing");
    /* A required key written with no value points at that value. */
    const char *sets[] = {"train.lr="};
    expect_fixture_error("good.yaml", sets, 1, CHM_ERR_CONFIG, "--set train.lr",
                         "found an empty value");
    /* Neither steps nor tokens. */
    const char *sets2[] = {"train.steps=~"};
    expect_fixture_error("good.yaml", sets2, 1, CHM_ERR_CONFIG, "--set train.steps",
                         "expected train.steps or train.tokens", "found neither");
    chm_config cfg;
    chm_err err = {0};
    expect_error(chm_config_load_string("", "empty.yaml", NULL, 0, &cfg, &err), &err,
                 CHM_ERR_CONFIG, "empty.yaml:1:1:", "model.vocab", "missing required key");
}

Test(config, error_inconsistent) {
    expect_fixture_error("heads_not_dividing.yaml", NULL, 0, CHM_ERR_CONFIG,
                         "heads_not_dividing.yaml:7:10:", "model.heads",
                         "expected a divisor of model.d_model (100)", "found 6");
    expect_fixture_error("pattern_length.yaml", NULL, 0, CHM_ERR_CONFIG,
                         "pattern_length.yaml:6:12:", "model.pattern",
                         "expected a pattern whose length divides model.n_layers (6)",
                         "found 'MMMA' of length 4");
    expect_fixture_error("steps_and_tokens.yaml", NULL, 0, CHM_ERR_CONFIG,
                         "steps_and_tokens.yaml:17:11:", "train.tokens",
                         "expected either train.steps or train.tokens, found both",
                         "steps_and_tokens.yaml:16:10");
    expect_fixture_error("mod_layer_range.yaml", NULL, 0, CHM_ERR_CONFIG,
                         "mod_layer_range.yaml:12:17:", "model.mod.layers[1]",
                         "expected a layer index in [0, 6)", "found 6");
    const char *sets[] = {"model.kv_heads=3"};
    expect_fixture_error("good.yaml", sets, 1, CHM_ERR_CONFIG, "--set model.kv_heads",
                         "expected a divisor of model.heads (4)", "found 3");
    const char *sets2[] = {"model.mod.layers=[1, 1]"};
    expect_fixture_error("good.yaml", sets2, 1, CHM_ERR_CONFIG, "model.mod.layers[1]",
                         "expected each layer once");
    const char *sets3[] = {"train.min_lr=0.5"};
    expect_fixture_error("good.yaml", sets3, 1, CHM_ERR_CONFIG, "--set train.min_lr",
                         "at most train.lr", "found 0.5");
    const char *sets4[] = {"model.vocab=100"};
    expect_fixture_error("good.yaml", sets4, 1, CHM_ERR_CONFIG, "--set model.vocab",
                         "expected an integer >= 256", "data.tokenizer is \"byte\"");
    /* a derived head_dim past model.head_dim's own range (the config fuzzer: the written config
     * did not load back) */
    const char *sets5[] = {"model.d_model=1000000", "model.heads=2"};
    expect_fixture_error("good.yaml", sets5, 2, CHM_ERR_CONFIG, "model.heads",
                         "derived model.head_dim", "head_dim 500000");
}

Test(config, error_document_shape) {
    chm_config cfg;
    chm_err err = {0};
    expect_error(chm_config_load_string("model:\n  vocab: 1\n  vocab: 2\n", "d.yaml", NULL, 0,
                                        &cfg, &err),
                 &err, CHM_ERR_PARSE, "d.yaml:3:3:", "model.vocab", "first at d.yaml:2:3");
    expect_error(chm_config_load_string("model: {}\n---\ntrain: {}\n", "d.yaml", NULL, 0, &cfg,
                                        &err),
                 &err, CHM_ERR_PARSE, "d.yaml:3:1:", "one YAML document");
    expect_error(chm_config_load_string("- a\n- b\n", "d.yaml", NULL, 0, &cfg, &err), &err,
                 CHM_ERR_CONFIG, "d.yaml:1:1:", "expected a map of sections", "found a list");
    expect_error(chm_config_load_string("a: &x [*x]\n", "d.yaml", NULL, 0, &cfg, &err), &err,
                 CHM_ERR_PARSE, "d.yaml:");
    expect_error(chm_config_load_string("model: {vocab: \"\xff\"}\n", "d.yaml", NULL, 0, &cfg,
                                        &err),
                 &err, CHM_ERR_PARSE, "d.yaml:1:", "invalid YAML");
}

/* ---- errors in --set ------------------------------------------------------------------ */

Test(config, error_bad_set) {
    const char *unknown[] = {"model.d_modle=3"};
    expect_fixture_error("good.yaml", unknown, 1, CHM_ERR_CONFIG, "--set model.d_modle:",
                         "unknown key", "did you mean 'd_model'?");
    const char *deep[] = {"model.moee.experts=3"};
    expect_fixture_error("good.yaml", deep, 1, CHM_ERR_CONFIG, "--set model.moee.experts:",
                         "model.moee", "did you mean 'moe'?");
    const char *no_eq[] = {"model.d_model"};
    expect_fixture_error("good.yaml", no_eq, 1, CHM_ERR_CONFIG, "--set model.d_model",
                         "expected key.path=value", "found no '='");
    const char *bad_path[] = {"model..d_model=3"};
    expect_fixture_error("good.yaml", bad_path, 1, CHM_ERR_CONFIG, "--set model..d_model=3",
                         "expected key.path=value");
    const char *bad_yaml[] = {"train.betas=[0.9,"};
    expect_fixture_error("good.yaml", bad_yaml, 1, CHM_ERR_PARSE, "--set train.betas",
                         "expected a YAML scalar or flow list", "found invalid YAML");
    const char *a_map[] = {"model.moe={experts: 8}"};
    expect_fixture_error("good.yaml", a_map, 1, CHM_ERR_CONFIG, "--set model.moe",
                         "found a map", "model.moe.KEY=VALUE");
    const char *bad_value[] = {"train.lr=fast"};
    expect_fixture_error("good.yaml", bad_value, 1, CHM_ERR_CONFIG, "--set train.lr:",
                         "expected a number > 0", "found 'fast'");
    const char *through[] = {"model.d_model.x=1"};
    expect_fixture_error("good.yaml", through, 1, CHM_ERR_CONFIG, "--set model.d_model.x",
                         "expected a map at model.d_model", "found 100");
    const char *bad_betas[] = {"train.betas=[0.9]"};
    expect_fixture_error("good.yaml", bad_betas, 1, CHM_ERR_CONFIG, "--set train.betas",
                         "a list of two numbers", "found a list");
    const char *bad_tokens[] = {"train.steps=", "train.tokens=12Q"};
    expect_fixture_error("good.yaml", bad_tokens, 2, CHM_ERR_CONFIG, "--set train.tokens",
                         "token count", "found '12Q'");
    const char *bad_enum[] = {"train.schedule=cosin"};
    expect_fixture_error("good.yaml", bad_enum, 1, CHM_ERR_CONFIG, "--set train.schedule",
                         "one of cosine, linear, wsd, constant", "found 'cosin'");
}

/* ---- the suggester ------------------------------------------------------------------- */

Test(config, edit_distance_and_suggestions) {
    cr_assert_eq(chm_cfg_edit_distance("d_modle", "d_model"), 1, "a swap costs one");
    cr_assert_eq(chm_cfg_edit_distance("", "abc"), 3);
    cr_assert_eq(chm_cfg_edit_distance("kitten", "sitting"), 3);
    cr_assert_eq(chm_cfg_edit_distance("HEADS", "heads"), 0, "case is ignored");
    const char *cands[] = {"heads", "kv_heads", "head_dim", "d_model"};
    cr_assert_str_eq(chm_cfg_suggest("head", cands, 4), "heads");
    cr_assert_str_eq(chm_cfg_suggest("kvheads", cands, 4), "kv_heads");
    cr_assert_null(chm_cfg_suggest("learning_rate", cands, 4));
}

/* ---- writing --------------------------------------------------------------------------- */

/* The YAML chm_config_write gives for cfg (malloc'ed). */
static char *write_to_string(const chm_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    chm_config_write(cfg, f);
    fclose(f);
    return buf;
}

/* Load `cfg`'s YAML back under `cfg`'s name: the second writing must equal the first. */
static void assert_round_trip(const chm_config *cfg) {
    char *a = write_to_string(cfg);
    chm_config back;
    chm_err err = {0};
    cr_assert_eq(chm_config_load_string(a, cfg->source, NULL, 0, &back, &err), CHM_OK,
                 "%s\n%s", err.msg, a);
    char *b = write_to_string(&back);
    cr_assert_str_eq(a, b);
    cr_assert_eq(memcmp(back.model.mixer, cfg->model.mixer, sizeof back.model.mixer), 0);
    cr_assert_eq(back.train.total_steps, cfg->train.total_steps);
    free(a);
    free(b);
    chm_config_free(&back);
}

Test(config, write_round_trips) {
    for (const chm_embedded_file *f = chm_embedded_configs; f->name; f++) {
        chm_config cfg;
        chm_err err = {0};
        cr_assert_eq(chm_config_load_builtin(f->name, NULL, 0, &cfg, &err), CHM_OK, "%s",
                     err.msg);
        assert_round_trip(&cfg);
        chm_config_free(&cfg);
    }
    const char *sets[] = {"model.mamba.dt_rank=5", "train.steps=~", "train.tokens=2K",
                          "data.val=\"a \\\"quoted\\\" path\"", "train.lr=3.3e-4"};
    chm_config cfg;
    load_good(sets, 5, &cfg);
    char *text = write_to_string(&cfg);
    cr_assert(strstr(text, "  d_model: 100\n") != NULL, "%s", text);
    cr_assert(strstr(text, "  tokens: 2000\n") != NULL, "%s", text);
    cr_assert(strstr(text, "  steps:") == NULL, "only the given one of steps/tokens: %s", text);
    cr_assert(strstr(text, "val: \"a \\\"quoted\\\" path\"") != NULL, "%s", text);
    free(text);
    assert_round_trip(&cfg);
    chm_config_free(&cfg);
}

/* ---- the command --------------------------------------------------------------------------- */

/* Run `chimera ARGS` with stderr folded into stdout; returns the exit status, output in out. */
static int run_cli(const char *args, char *out, size_t size) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", CHIMERA_BINARY, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = 0;
    while (fgetc(p) != EOF) continue; /* drain, so the child never blocks on a full pipe */
    int status = pclose(p);
    cr_assert(WIFEXITED(status), "%s did not exit normally", cmd);
    return WEXITSTATUS(status);
}

Test(config, cli_prints_resolved_yaml) {
    static char out[1 << 16];
    cr_assert_eq(run_cli("config", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "pattern: \"MMMA\"") != NULL, "%s", out);
    cr_assert_eq(run_cli("config --config '" FIXTURES "good.yaml' --set train.lr=0.5 "
                         "--set=model.mamba.d_state=8",
                         out, sizeof out),
                 0, "%s", out);
    cr_assert(strstr(out, "  d_model: 100\n") != NULL, "%s", out);
    cr_assert(strstr(out, "  head_dim: 25\n") != NULL, "%s", out);
    cr_assert(strstr(out, "  lr: 0.5\n") != NULL, "%s", out);
    cr_assert(strstr(out, "    d_state: 8\n") != NULL, "%s", out);
    cr_assert_eq(run_cli("config --help", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "--set") != NULL && strstr(out, "--config") != NULL, "%s", out);
}

Test(config, cli_rejects_bad_configs) {
    static char out[1 << 16];
    cr_assert_eq(run_cli("config --config '" FIXTURES "unknown_key.yaml'", out, sizeof out), 2,
                 "%s", out);
    cr_assert(strstr(out, "chimera: error: ") != NULL, "%s", out);
    cr_assert(strstr(out, "unknown_key.yaml:4:3: model.d_modle") != NULL, "%s", out);
    cr_assert_eq(run_cli("config --config '" FIXTURES "syntax_error.yaml'", out, sizeof out), 2,
                 "%s", out);
    cr_assert_eq(run_cli("config --set train.lr=-1", out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "--set train.lr: expected a number > 0, found -1") != NULL, "%s", out);
    cr_assert_eq(run_cli("config --set", out, sizeof out), 2, "%s", out);
    cr_assert_eq(run_cli("config --bogus", out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "unknown option '--bogus'") != NULL, "%s", out);
    cr_assert_eq(run_cli("config --config /nonexistent.yaml", out, sizeof out), 2, "%s", out);
}
