/*
 * model_cmd.c: `chimera model`: the parameter table of a config (name,
 * shape, count), total and active-per-token parameter counts, FLOPs per
 * token; and --dump DIR, which runs one training micro batch in f64 on the
 * cpu backend and writes the weights, the gradients and the batch as
 * safetensors for tools/torch_reference.py; with --weights CHECKPOINT the
 * weights (and the config) come from a trained checkpoint instead.
 * Exit codes: 0 success, 2 bad usage or config, 1 other failures.
 */
#include "commands.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chimera/checkpoint.h"
#include "chimera/config.h"
#include "chimera/model.h"
#include "chimera/rng.h"
#include "chimera/trainer.h"

static void model_usage(FILE *f) {
    fprintf(f,
            "usage: chimera model [--config FILE] [--set key.path=value ...] [--summary]\n"
            "                     [--dump DIR [--weights CKPT] [--seed N] [--jitter X]]\n"
            "                     [--help]\n\n"
            "Print the model of a configuration: every parameter tensor (name, shape, count),\n"
            "the total and active-per-token parameter counts and the FLOPs per token.\n\n"
            "options:\n"
            "  --config FILE    YAML file, or a built-in config name (test, tiny,\n"
            "                   training_dolma); default: the built-in test config\n"
            "  --set KEY=VALUE  override one key (as for `chimera config`), repeatable\n"
            "  --summary        the counts only, no parameter table\n"
            "  --dump DIR       build the model in f64 on the cpu backend with the config's\n"
            "                   micro batch, initialise it, run one training micro batch of\n"
            "                   random tokens and write DIR/model.safetensors (weights, with\n"
            "                   the config and the loss parts as metadata), DIR/grads.safetensors\n"
            "                   and DIR/batch.safetensors (ids [B, T+1]) for\n"
            "                   tools/torch_reference.py\n"
            "  --weights CKPT   with --dump: use the weights and the config of a trained\n"
            "                   checkpoint (a step-XXXXXXXX directory, or a run directory:\n"
            "                   its newest checkpoint) instead of fresh ones; --config and\n"
            "                   --set are not allowed with it. The f32 weights are widened\n"
            "                   to f64, so the reference compares the trained model exactly\n"
            "  --seed N         seed of the weights and the batch (default: train.seed)\n"
            "  --jitter X       add uniform(-X, X) noise to every weight after the\n"
            "                   initialisation (default 0), to check away from the init\n"
            "  -h, --help       print this help\n");
}

/* Parsed command line. */
typedef struct model_args {
    const char *spec, *dump, *weights;
    const char **sets;
    int n_sets;
    bool summary, help;
    long long seed;
    bool has_seed;
    double jitter;
} model_args;

/* Report a usage error; returns the exit code 2. */
static int usage_error(const char *fmt, const char *what) {
    char msg[300];
    snprintf(msg, sizeof msg, fmt, what);
    chm_cli_error(msg, "run `chimera model --help` for the options");
    return 2;
}

/* Fill *a from argv; 0 or the exit code of a usage error. */
static int parse_args(int argc, char **argv, model_args *a) {
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        char *end = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            a->help = true;
        else if (!strcmp(argv[i], "--summary"))
            a->summary = true;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--config", &missing)))
            a->spec = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--set", &missing)))
            a->sets[a->n_sets++] = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--dump", &missing)))
            a->dump = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--weights", &missing)))
            a->weights = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--seed", &missing))) {
            a->seed = strtoll(v, &end, 10);
            a->has_seed = true;
            if (*end || a->seed < 0)
                return usage_error("--seed needs an integer >= 0, not '%s'", v);
        } else if ((v = chm_cli_option_value(argc, argv, &i, "--jitter", &missing))) {
            a->jitter = strtod(v, &end);
            if (*end || !(a->jitter >= 0))
                return usage_error("--jitter needs a number >= 0, not '%s'", v);
        } else {
            return usage_error(missing ? "option %s needs a value" : "unknown option '%s'",
                               argv[i]);
        }
    }
    return 0;
}

/* "[a, b, c]" */
static void shape_str(const chm_model_param *p, char *out, size_t n) {
    size_t at = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < p->ndim && at < n; d++)
        at += (size_t)snprintf(out + at, n - at, "%s%lld", d ? ", " : "", (long long)p->shape[d]);
    if (at < n) snprintf(out + at, n - at, "]");
}

static void print_table(const chm_model *m) {
    printf("%-44s %-20s %14s\n", "parameter", "shape", "count");
    for (int i = 0; i < chm_model_param_count(m); i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        char sh[64];
        shape_str(p, sh, sizeof sh);
        printf("%-44s %-20s %14lld\n", p->name, sh, (long long)p->numel);
    }
    printf("\n");
}

/* "427456 (0.427 M)" or "1148524544 (1.149 B)" */
static const char *count_str(int64_t n, char *out, size_t size) {
    if (n >= 1000000000)
        snprintf(out, size, "%lld (%.3f B)", (long long)n, (double)n / 1e9);
    else
        snprintf(out, size, "%lld (%.3f M)", (long long)n, (double)n / 1e6);
    return out;
}

static void print_summary(const chm_config *cfg, const chm_model_stats *s) {
    const chm_config_model *c = &cfg->model;
    char b[64];
    printf("config               : %s\n", cfg->source ? cfg->source : "?");
    printf("layers               : %d (%d attention, %d Mamba; %d MoE, %d MoD), MTP depth %d\n",
           c->n_layers, c->n_attention, c->n_mamba, c->n_moe, c->mod.n_layers, c->mtp.depth);
    printf("parameters, total    : %s\n", count_str(s->params_total, b, sizeof b));
    printf("  embedding          : %s%s\n", count_str(s->params_embedding, b, sizeof b),
           c->tie_embeddings ? ", tied with the unembedding" : ", and the unembedding");
    printf("  MTP modules        : %s, training only\n", count_str(s->params_mtp, b, sizeof b));
    printf("parameters, active   : %s per token", count_str(s->params_active, b, sizeof b));
    if (c->moe.experts > 0) printf(" (top-%d of %d experts)", c->moe.top_k, c->moe.experts);
    printf("\nFLOPs per token      : forward %.4g M, training %.4g M (seq_len %d; training = 3 x "
           "(forward + MTP))\n",
           s->flops_forward / 1e6, s->flops_train / 1e6, cfg->train.seq_len);
}

static char *loss_json(const chm_model_loss *l, int depth) {
    json_t *md = json_array();
    for (int k = 0; k < depth; k++) json_array_append_new(md, json_real(l->mtp_depth[k]));
    json_t *j = json_pack("{s:f,s:f,s:f,s:o,s:f,s:f,s:f}", "total", l->total, "ce", l->ce, "mtp",
                          l->mtp, "mtp_depth", md, "moe_balance", l->moe_balance, "moe_z", l->moe_z,
                          "mod_aux", l->mod_aux);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(j);
    return s;
}

/* Write every parameter's values (grads = false) or gradients to path, downloaded as f64. */
static chm_status write_params(chm_model *m, const char *path, bool grads, const char *const *md,
                               chm_err *err) {
    int n = chm_model_param_count(m);
    chm_st_tensor *t = calloc((size_t)n, sizeof *t);
    double **data = calloc((size_t)n, sizeof *data);
    chm_status rc = t && data ? CHM_OK : CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
    for (int i = 0; i < n && rc == CHM_OK; i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        data[i] = malloc((size_t)p->numel * sizeof(double));
        if (!data[i])
            rc = CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
        else if (chm_download(chm_model_backend(m), grads ? &p->grad : &p->value, data[i]))
            rc = CHM_ERR(err, CHM_ERR_DEVICE, "%s", chm_model_backend(m)->err.msg);
        t[i] = (chm_st_tensor){
            .dtype = CHM_F64, .ndim = p->ndim, .data = data[i], .nbytes = (uint64_t)p->numel * 8};
        snprintf(t[i].name, sizeof t[i].name, "%s", p->name);
        memcpy(t[i].shape, p->shape, sizeof t[i].shape);
    }
    if (rc == CHM_OK) rc = chm_safetensors_write(path, t, n, md, err);
    for (int i = 0; data && i < n; i++) free(data[i]);
    free(data);
    free(t);
    return rc;
}

/* Add uniform(-x, x) noise, keyed by (seed, "jitter." + name), to every weight. */
static chm_status jitter_params(chm_model *m, uint64_t seed, double x, chm_err *err) {
    chm_backend *be = chm_model_backend(m);
    for (int i = 0; i < chm_model_param_count(m) && x > 0; i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        double *v = malloc((size_t)p->numel * sizeof *v);
        char key[96];
        snprintf(key, sizeof key, "jitter.%s", p->name);
        chm_rng r = chm_rng_keyed(seed, key);
        chm_status rc = v ? chm_download(be, &p->value, v) : CHM_ERR_NOMEM;
        for (int64_t j = 0; rc == CHM_OK && j < p->numel; j++)
            v[j] += x * (2 * chm_rng_uniform(&r) - 1);
        if (rc == CHM_OK) rc = chm_upload(be, &p->value, v);
        free(v);
        if (rc != CHM_OK) return CHM_ERR(err, rc, "jitter: %s", be->err.msg);
    }
    return CHM_OK;
}

/* The batch: uniform random ids [B, T+1] keyed by (seed, "batch"), written to
 * DIR/batch.safetensors. */
static int32_t *make_batch(const chm_config *cfg, uint64_t seed, const char *dir, chm_err *err) {
    int64_t B = cfg->train.micro_batch, T = cfg->train.seq_len;
    int32_t *ids = malloc((size_t)(B * (T + 1)) * sizeof *ids);
    if (!ids) return NULL;
    chm_rng r = chm_rng_keyed(seed, "batch");
    for (int64_t i = 0; i < B * (T + 1); i++)
        ids[i] = (int32_t)(chm_rng_u64(&r) % (uint64_t)cfg->model.vocab);
    char path[4096];
    snprintf(path, sizeof path, "%s/batch.safetensors", dir);
    chm_st_tensor t = {"ids", CHM_I32, 2, {B, T + 1, 1, 1}, ids, (uint64_t)(B * (T + 1)) * 4};
    if (chm_safetensors_write(path, &t, 1, NULL, err) != CHM_OK) {
        free(ids);
        return NULL;
    }
    return ids;
}

/* Run one micro batch and write the three files; fills *loss. The weights: those
 * of ck when given, else a fresh initialisation. */
static chm_status dump_run(chm_model *m, const chm_config *cfg, const chm_checkpoint *ck,
                           const model_args *a, chm_model_loss *loss, chm_err *err) {
    uint64_t seed = a->has_seed ? (uint64_t)a->seed : (uint64_t)cfg->train.seed;
    chm_status rc =
        ck ? chm_checkpoint_load_model(ck, m, err) : chm_model_init_params(m, seed, err);
    if (rc == CHM_OK) rc = jitter_params(m, seed, a->jitter, err);
    int32_t *ids = rc == CHM_OK ? make_batch(cfg, seed, a->dump, err) : NULL;
    if (rc == CHM_OK && !ids) rc = err->code ? err->code : CHM_ERR_NOMEM;
    if (rc == CHM_OK) rc = chm_model_zero_grad(m, err);
    if (rc == CHM_OK) rc = chm_model_forward_backward(m, ids, 1.0, loss, err);
    free(ids);
    char *cj = NULL, *lj = loss_json(loss, cfg->model.mtp.depth);
    if (rc == CHM_OK) rc = chm_model_config_json(&cfg->model, &cj, err);
    if (rc == CHM_OK && !lj) rc = CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
    const char *md[] = {"format", "pt", "chimera.config", cj, "chimera.loss", lj, NULL};
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", a->dump);
    if (rc == CHM_OK) rc = write_params(m, path, false, md, err);
    snprintf(path, sizeof path, "%s/grads.safetensors", a->dump);
    if (rc == CHM_OK) rc = write_params(m, path, true, md + 2, err);
    free(cj);
    free(lj);
    return rc;
}

static int dump(const chm_config *cfg, const chm_checkpoint *ck, const model_args *a) {
    chm_err err = {0};
    if (mkdir(a->dump, 0777) != 0 && errno != EEXIST) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: cannot create the directory: %s", a->dump, strerror(errno));
        chm_cli_error(msg, NULL);
        return 1;
    }
    chm_backend *be = NULL;
    chm_model *m = NULL;
    chm_model_loss loss = {0};
    chm_model_options o = {.dtype = CHM_F64, .batch = cfg->train.micro_batch,
                           .seq_len = cfg->train.seq_len};
    chm_status rc = chm_backend_open("cpu", NULL, &be, &err);
    if (rc == CHM_OK) rc = chm_model_create(&cfg->model, be, &o, &m, &err);
    if (rc == CHM_OK) rc = dump_run(m, cfg, ck, a, &loss, &err);
    chm_model_free(m);
    chm_backend_close(be);
    if (rc != CHM_OK) {
        chm_cli_error(err.msg, NULL);
        return 1;
    }
    if (ck) printf("weights of %s\n", chm_checkpoint_dir(ck));
    printf("wrote %s/{model,grads,batch}.safetensors: f64, B=%d, T=%d; loss total %.17g (ce %.17g, "
           "mtp %.17g, moe balance %.17g, z %.17g, mod %.17g)\n",
           a->dump, cfg->train.micro_batch, cfg->train.seq_len, loss.total, loss.ce, loss.mtp,
           loss.moe_balance, loss.moe_z, loss.mod_aux);
    return 0;
}

/* --dump DIR --weights PATH: open the checkpoint PATH (or the newest one of the run
 * directory PATH) and dump with its weights and config; the exit code. */
static int dump_checkpoint(const model_args *a) {
    char dir[4096], state[4200];
    struct stat sb;
    chm_err err = {0};
    chm_status rc = CHM_OK;
    snprintf(dir, sizeof dir, "%s", a->weights);
    snprintf(state, sizeof state, "%s/trainer_state.json", a->weights);
    if (stat(state, &sb) != 0) {
        bool found = false;
        rc = chm_checkpoint_latest(a->weights, false, dir, sizeof dir, &found, &err);
        if (rc == CHM_OK && !found)
            rc = CHM_ERR(&err, CHM_ERR_IO, "%s: neither a checkpoint (no trainer_state.json) nor a "
                         "run directory holding one", a->weights);
    }
    chm_checkpoint *ck = NULL;
    if (rc == CHM_OK) rc = chm_checkpoint_open(dir, &ck, &err);
    if (rc != CHM_OK) {
        chm_cli_error(err.msg, NULL);
        return 1;
    }
    int code = dump(chm_checkpoint_config(ck), ck, a);
    chm_checkpoint_close(ck);
    return code;
}

/* Load the config and print or dump; the exit code. */
static int run(const model_args *a) {
    if (a->weights && !a->dump) return usage_error("%s needs --dump DIR", "--weights");
    if (a->weights && (a->spec || a->n_sets))
        return usage_error("%s takes the config from the checkpoint: drop --config and --set",
                           "--weights");
    if (a->weights) return dump_checkpoint(a);
    chm_config cfg;
    chm_err err = {0};
    chm_status rc = chm_config_load(a->spec, a->sets, a->n_sets, &cfg, &err);
    if (rc) {
        chm_cli_error(err.msg, "every key is documented in configs/test.yaml");
        return rc == CHM_ERR_CONFIG || rc == CHM_ERR_PARSE || rc == CHM_ERR_IO ? 2 : 1;
    }
    int code = 0;
    chm_model_stats st;
    chm_model *m = NULL;
    chm_model_options o = {.dtype = CHM_F32, .batch = 1, .seq_len = cfg.train.seq_len};
    rc = chm_model_stats_compute(&cfg.model, cfg.train.seq_len, &st, &err);
    if (rc == CHM_OK) rc = chm_model_create(&cfg.model, NULL, &o, &m, &err);
    if (rc != CHM_OK) {
        chm_cli_error(err.msg, NULL);
        code = rc == CHM_ERR_CONFIG ? 2 : 1;
    } else if (a->dump) {
        code = dump(&cfg, NULL, a);
    } else {
        if (!a->summary) print_table(m);
        print_summary(&cfg, &st);
    }
    chm_model_free(m);
    chm_config_free(&cfg);
    return code;
}

int chm_cmd_model(int argc, char **argv) {
    model_args a = {0};
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    if (!a.sets) {
        chm_cli_error("out of memory", NULL);
        return 1;
    }
    int code = parse_args(argc, argv, &a);
    if (code == 0 && a.help)
        model_usage(stdout);
    else if (code == 0)
        code = run(&a);
    free(a.sets);
    return code;
}
