/*
 * eval_cmd.c: `chimera eval`: validation loss, perplexity and bits per byte
 * of a checkpoint, on its own validation split or on given data: token
 * shards (a manifest directory, .npy, llm.c .bin, globs of them) or raw
 * Dolma files (.json/.jsonl, .gz, .zst) tokenized on the fly with the
 * checkpoint's tokenizer (each document's text then EOS, as `chimera
 * tokenize` writes them). Windows of seq_len+1 tokens are taken in stream
 * order, up to --batches micro batches.
 * Exit codes: 0 done, 1 the model failed, 2 bad usage, checkpoint or data.
 */
#include "commands.h"
#include "chimera/trainer.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: chimera eval --checkpoint DIR [--data PATH ...] [--batches N]\n"
            "                    [--backend NAME] [--json]\n\n"
            "Print the loss (nats per token), perplexity and bits per byte of a trained model.\n\n"
            "options:\n"
            "  --checkpoint DIR   a checkpoint directory, or a run directory (its newest)\n"
            "  --data PATH        data to evaluate on (repeatable; default: the checkpoint's own\n"
            "                     validation data): token shards (a directory with\n"
            "                     manifest.json, .npy, .bin) or Dolma JSONL files (.json,\n"
            "                     .jsonl, .gz, .zst; a quoted glob or a directory of them),\n"
            "                     tokenized on the fly with the checkpoint's tokenizer\n"
            "  --batches N        most micro batches to evaluate (default 20)\n"
            "  --backend NAME     auto (default), cpu, vulkan or cuda\n"
            "  --json             print one JSON object instead of text\n");
}

typedef struct eval_args {
    const char *ckpt, *backend;
    const char **data;
    int n_data;
    long batches;
    bool json;
} eval_args;

/* Growing host token stream. */
typedef struct stream {
    int32_t *ids;
    int64_t n, cap, want;
} stream;

static chm_status stream_push(stream *s, const int32_t *ids, int64_t n, chm_err *err) {
    if (s->n + n > s->cap) {
        int64_t cap = s->cap ? s->cap : 4096;
        while (cap < s->n + n) cap *= 2;
        int32_t *p = realloc(s->ids, (size_t)cap * sizeof *p);
        if (!p) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the evaluation tokens");
        s->ids = p, s->cap = cap;
    }
    memcpy(s->ids + s->n, ids, (size_t)n * sizeof *ids);
    s->n += n;
    return CHM_OK;
}

static bool is_dolma(const char *path) {
    return strstr(path, ".json") || strstr(path, ".zst") ||
           (strlen(path) > 3 && !strcmp(path + strlen(path) - 3, ".gz"));
}

/* Documents of one Dolma file -> text + EOS tokens, until the stream has s->want. */
static chm_status read_dolma(const char *path, const chm_tokenizer *tok, stream *s, chm_err *err) {
    chm_dolma_reader *r;
    chm_status rc = chm_dolma_open(path, &r, err);
    chm_ids ids = {0};
    int32_t eos = chm_tokenizer_eos(tok);
    while (rc == CHM_OK && s->n < s->want) {
        chm_dolma_doc d;
        int got;
        rc = chm_dolma_next(r, &d, &got, err);
        if (rc || !got) break;
        ids.n = 0;
        rc = chm_tokenizer_encode(tok, d.text, d.text_len, &ids, err);
        if (rc == CHM_OK && eos >= 0) rc = chm_ids_push(&ids, eos);
        if (rc == CHM_OK) rc = stream_push(s, ids.ids, (int64_t)ids.n, err);
    }
    chm_ids_free(&ids);
    chm_dolma_close(r);
    return rc;
}

/* Token files (anything the loader reads) -> the stream, in order, until s->want. */
static chm_status read_tokens(const char *path, const chm_config *cfg, stream *s, chm_err *err) {
    chm_loader_config lc = {.seq_len = 1, .batch_size = 1, .world_size = 1,
                            .raw_dtype = CHM_TOKENS_U16, .vocab_size = cfg->model.vocab};
    chm_loader *ld;
    const char *paths[] = {path};
    chm_status rc = chm_loader_open(paths, 1, &lc, &ld, err);
    if (rc) return rc;
    int64_t have = chm_loader_get_info(ld).tokens, take = s->want - s->n;
    if (take > have) take = have;
    int32_t *buf = malloc((size_t)(take > 0 ? take : 1) * sizeof *buf);
    rc = buf ? chm_loader_read(ld, 0, take, buf, err) : CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
    if (rc == CHM_OK) rc = stream_push(s, buf, take, err);
    free(buf);
    chm_loader_close(ld);
    return rc;
}

/* One --data argument: a glob, a directory, or a file. */
static chm_status read_data(const char *arg, const chm_config *cfg, const chm_tokenizer *tok,
                            stream *s, chm_err *err) {
    struct stat st;
    char pattern[4200];
    const char *pat = arg;
    bool dir = stat(arg, &st) == 0 && S_ISDIR(st.st_mode);
    snprintf(pattern, sizeof pattern, "%s/manifest.json", arg);
    if (dir && stat(pattern, &st) == 0) return read_tokens(arg, cfg, s, err);
    if (dir) snprintf(pattern, sizeof pattern, "%s/*.json*", arg), pat = pattern;
    glob_t g;
    if (glob(pat, 0, NULL, &g) != 0)
        return CHM_ERR(err, CHM_ERR_IO, "%s: no file matches", arg);
    chm_status rc = CHM_OK;
    for (size_t i = 0; rc == CHM_OK && i < g.gl_pathc && s->n < s->want; i++)
        rc = is_dolma(g.gl_pathv[i]) ? read_dolma(g.gl_pathv[i], tok, s, err)
                                     : read_tokens(g.gl_pathv[i], cfg, s, err);
    globfree(&g);
    return rc;
}

/* The windows [*n, T+1] of the --data arguments (non-overlapping, in stream order). */
static chm_status data_windows(const eval_args *a, const chm_config *cfg, int32_t **w, int64_t *n,
                               chm_err *err) {
    int64_t T = cfg->train.seq_len, B = cfg->train.micro_batch;
    stream s = {.want = a->batches * B * (T + 1)};
    chm_tokenizer *tok;
    chm_status rc = chm_train_tokenizer(cfg, &tok, err);
    for (int i = 0; rc == CHM_OK && i < a->n_data && s.n < s.want; i++)
        rc = read_data(a->data[i], cfg, tok, &s, err);
    chm_tokenizer_free(tok);
    *w = s.ids;
    *n = s.n / (T + 1);
    if (rc == CHM_OK && *n < B)
        rc = CHM_ERR(err, CHM_ERR_INVALID_ARG,
                     "the data holds %lld tokens, fewer than one batch of %lld windows of %lld",
                     (long long)s.n, (long long)B, (long long)(T + 1));
    return rc;
}

static chm_status evaluate(const eval_args *a, chm_model *m, const chm_config *cfg,
                           chm_eval_result *r, chm_err *err) {
    int32_t *w = NULL;
    int64_t n = 0, B = cfg->train.micro_batch;
    chm_tokenizer *tok = NULL;
    chm_status rc = a->n_data ? data_windows(a, cfg, &w, &n, err)
                              : chm_train_val_windows(cfg, NULL, &w, &n, err);
    if (rc == CHM_OK && n > a->batches * B) n = a->batches * B;
    double bpt = 1;
    if (rc == CHM_OK) rc = chm_train_tokenizer(cfg, &tok, err);
    if (rc == CHM_OK) rc = chm_eval_bytes_per_token(tok, w, n, cfg->train.seq_len, &bpt, err);
    if (rc == CHM_OK) rc = chm_evaluate(m, w, n, bpt, r, err);
    chm_tokenizer_free(tok);
    free(w);
    return rc;
}

static int parse_args(int argc, char **argv, eval_args *a) {
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        char msg[300];
        if ((v = chm_cli_option_value(argc, argv, &i, "--checkpoint", &missing))) a->ckpt = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--data", &missing))) a->data[a->n_data++] = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--backend", &missing))) a->backend = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--batches", &missing))) {
            char *end;
            a->batches = strtol(v, &end, 10);
            if (end == v || *end || a->batches < 1) {
                chm_cli_error("--batches needs a positive integer", NULL);
                return 2;
            }
        } else if (!strcmp(argv[i], "--json")) {
            a->json = true;
        } else {
            snprintf(msg, sizeof msg, missing ? "option %s needs a value" : "unknown option '%s'",
                     argv[i]);
            chm_cli_error(msg, "run `chimera eval --help` for the options");
            return 2;
        }
    }
    if (a->ckpt) return 0;
    chm_cli_error("--checkpoint DIR is required", "run `chimera eval --help` for the options");
    return 2;
}

static void print_result(const eval_args *a, const chm_checkpoint *ck, const chm_eval_result *r) {
    const chm_checkpoint_state *st = chm_checkpoint_get_state(ck);
    if (a->json) {
        printf("{\"checkpoint\": \"%s\", \"step\": %lld, \"tokens\": %lld, \"loss\": %.6f, "
               "\"perplexity\": %.6f, \"bits_per_byte\": %.6f, \"bytes_per_token\": %.6f}\n",
               chm_checkpoint_dir(ck), (long long)st->step, (long long)r->tokens, r->loss, r->ppl,
               r->bits_per_byte, r->bytes_per_token);
        return;
    }
    printf("checkpoint %s (step %lld), %s: %lld tokens\n", chm_checkpoint_dir(ck), (long long)st->step,
           a->n_data ? "given data" : "its validation data", (long long)r->tokens);
    printf("loss %.4f nats/token | perplexity %.4f | %.4f bits/byte\n", r->loss, r->ppl,
           r->bits_per_byte);
}

int chm_cmd_eval(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            eval_usage(stdout);
            return 0;
        }
    eval_args a = {.backend = "auto", .batches = 20};
    a.data = calloc((size_t)argc + 1, sizeof *a.data);
    int code = a.data ? parse_args(argc, argv, &a) : 1;
    if (code) {
        free(a.data);
        return code;
    }
    chm_err err = {0};
    chm_checkpoint *ck;
    chm_backend *be;
    chm_model *m;
    chm_eval_result r;
    chm_status rc = chm_train_open_checkpoint_model(a.ckpt, a.backend, 0, &ck, &be, &m, &err);
    if (rc == CHM_OK) rc = evaluate(&a, m, chm_checkpoint_config(ck), &r, &err);
    if (rc) {
        chm_cli_error(err.msg, NULL);
        code = rc == CHM_ERR_DEVICE || rc == CHM_ERR_NOMEM ? 1 : 2;
    } else {
        print_result(&a, ck, &r);
    }
    chm_model_free(m);
    chm_backend_close(be);
    chm_checkpoint_close(ck);
    free(a.data);
    return code;
}
