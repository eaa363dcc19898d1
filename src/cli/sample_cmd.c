/*
 * sample_cmd.c: `chimera sample`: generate text from a checkpoint with the
 * model's incremental decoder (chm_decoder), printing tokens as they come.
 *
 * Each step turns the next-token logits into a distribution: temperature
 * (0 = greedy), then top-k, then top-p (nucleus), drawn with the
 * counter-based generator keyed by --seed, so a seed reproduces its text.
 * Ids the tokenizer does not have (the vocabulary's padding) are never
 * drawn; the end-of-text token ends the sample. Output is the decoded text
 * so far minus what was printed, holding back an unfinished UTF-8 sequence.
 * Exit codes: 0 done, 1 the model failed, 2 bad usage or checkpoint.
 */
#include "commands.h"
#include "chimera/rng.h"
#include "chimera/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sample_usage(FILE *f) {
    fprintf(f,
            "usage: chimera sample --checkpoint DIR [--prompt TEXT] [--tokens N]\n"
            "                      [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
            "                      [--backend NAME]\n\n"
            "Continue TEXT with a trained model, printing tokens as they are generated.\n\n"
            "options:\n"
            "  --checkpoint DIR   a checkpoint directory, or a run directory (its newest)\n"
            "  --prompt TEXT      the text to continue (default: empty = a new document)\n"
            "  --tokens N         most tokens to generate (default 200); the end-of-text\n"
            "                     token stops earlier\n"
            "  --temperature T    softmax temperature, 0 = always the likeliest (default 0.8)\n"
            "  --top-k K          draw among the K likeliest tokens only (default 0 = all)\n"
            "  --top-p P          draw among the likeliest tokens whose probabilities sum to P\n"
            "                     (default 1 = all)\n"
            "  --seed S           random seed (default 0): the same seed gives the same text\n"
            "  --backend NAME     auto (default), cpu, vulkan or cuda\n");
}

typedef struct sample_args {
    const char *ckpt, *prompt, *backend;
    long tokens, top_k;
    double temperature, top_p;
    unsigned long long seed;
} sample_args;

static int usage_error(const char *msg) {
    chm_cli_error(msg, "run `chimera sample --help` for the options");
    return 2;
}

/* Parse a number into *out within [lo, hi]; 0 ok, 2 bad. */
static int number(const char *name, const char *v, double lo, double hi, double *out) {
    char *end;
    *out = strtod(v, &end);
    if (end != v && !*end && *out >= lo && *out <= hi) return 0;
    char msg[200];
    snprintf(msg, sizeof msg, "%s needs a number in [%g, %g], got '%s'", name, lo, hi, v);
    return usage_error(msg);
}

static int parse_args(int argc, char **argv, sample_args *a) {
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        double x = 0;
        int bad = 0;
        if ((v = chm_cli_option_value(argc, argv, &i, "--checkpoint", &missing))) a->ckpt = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--prompt", &missing))) a->prompt = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--backend", &missing))) a->backend = v;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--tokens", &missing)))
            bad = number("--tokens", v, 1, 1e6, &x), a->tokens = (long)x;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--top-k", &missing)))
            bad = number("--top-k", v, 0, 1e9, &x), a->top_k = (long)x;
        else if ((v = chm_cli_option_value(argc, argv, &i, "--temperature", &missing)))
            bad = number("--temperature", v, 0, 1e6, &a->temperature);
        else if ((v = chm_cli_option_value(argc, argv, &i, "--top-p", &missing)))
            bad = number("--top-p", v, 1e-9, 1, &a->top_p);
        else if ((v = chm_cli_option_value(argc, argv, &i, "--seed", &missing)))
            bad = number("--seed", v, 0, 1.8e19, &x), a->seed = (unsigned long long)x;
        else {
            char msg[300];
            snprintf(msg, sizeof msg, missing ? "option %s needs a value" : "unknown option '%s'",
                     argv[i]);
            return usage_error(msg);
        }
        if (bad) return bad;
    }
    return a->ckpt ? 0 : usage_error("--checkpoint DIR is required");
}

/* ---- drawing a token --------------------------------------------------------------------- */

typedef struct cand {
    double p;
    int32_t id;
} cand;

static int by_p_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The next token from logits[0..V) (ids >= n_ok excluded); c is scratch [V]. */
static int32_t draw(const sample_args *a, const double *logits, int32_t n_ok, cand *c, chm_rng *r) {
    int32_t best = 0;
    for (int32_t i = 1; i < n_ok; i++)
        if (logits[i] > logits[best]) best = i;
    if (a->temperature <= 0) return best;
    for (int32_t i = 0; i < n_ok; i++)
        c[i] = (cand){exp((logits[i] - logits[best]) / a->temperature), i};
    qsort(c, (size_t)n_ok, sizeof *c, by_p_desc);
    int32_t keep = a->top_k > 0 && a->top_k < n_ok ? (int32_t)a->top_k : n_ok;
    double total = 0;
    for (int32_t i = 0; i < keep; i++) total += c[i].p;
    if (a->top_p < 1) { /* the fewest likeliest tokens holding top_p of the top-k mass */
        double kept = 0;
        for (int32_t i = 0; i < keep; i++) {
            kept += c[i].p;
            if (kept >= a->top_p * total) {
                keep = i + 1;
                total = kept;
                break;
            }
        }
    }
    double u = chm_rng_uniform(r) * total;
    for (int32_t i = 0; i < keep; i++) {
        if (u < c[i].p) return c[i].id;
        u -= c[i].p;
    }
    return c[keep - 1].id;
}

/* ---- printing ------------------------------------------------------------------------------ */

/* Bytes of text[0..len) that end on a complete UTF-8 sequence. */
static size_t complete_utf8(const char *text, size_t len) {
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)text[len - back];
        if ((c & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? len - back : len;
    }
    return len;
}

/* Print the decoded text of ids[0..n) beyond *printed bytes (all of it when final). */
static chm_status flush_text(const chm_tokenizer *tok, const int32_t *ids, size_t n,
                             size_t *printed, bool final, chm_err *err) {
    char *text = NULL;
    size_t len = 0;
    chm_status rc = chm_tokenizer_decode(tok, ids, n, &text, &len, err);
    if (rc) return rc;
    size_t upto = final ? len : complete_utf8(text, len);
    if (upto > *printed) {
        fwrite(text + *printed, 1, upto - *printed, stdout);
        fflush(stdout);
        *printed = upto;
    }
    free(text);
    return CHM_OK;
}

/* ---- the loop ---------------------------------------------------------------------------- */

typedef struct gen {
    chm_decoder *dec;
    chm_tokenizer *tok;
    chm_ids prompt;
    int32_t *out;
    double *logits;
    cand *scratch;
} gen;

static chm_status generate(const sample_args *a, chm_model *m, gen *g, chm_err *err) {
    int32_t V = chm_model_config(m)->vocab, n_ok = chm_tokenizer_vocab_size(g->tok);
    int32_t eos = chm_tokenizer_eos(g->tok);
    if (n_ok > V) n_ok = V;
    chm_rng r = chm_rng_keyed(a->seed, "sample");
    chm_status rc = CHM_OK;
    for (size_t i = 0; rc == CHM_OK && i < g->prompt.n; i++)
        rc = chm_decoder_step(g->dec, g->prompt.ids[i], g->logits, err);
    size_t n = 0, printed = 0;
    while (rc == CHM_OK && n < (size_t)a->tokens) {
        int32_t id = draw(a, g->logits, n_ok, g->scratch, &r);
        if (id == eos) break;
        g->out[n++] = id;
        rc = flush_text(g->tok, g->out, n, &printed, false, err);
        if (rc == CHM_OK && n < (size_t)a->tokens) rc = chm_decoder_step(g->dec, id, g->logits, err);
    }
    if (rc == CHM_OK) rc = flush_text(g->tok, g->out, n, &printed, true, err);
    printf("\n");
    return rc;
}

static chm_status setup(const sample_args *a, chm_model *m, const chm_config *cfg, gen *g,
                        chm_err *err) {
    chm_status rc = chm_train_tokenizer(cfg, &g->tok, err);
    if (rc == CHM_OK) rc = chm_tokenizer_encode(g->tok, a->prompt, strlen(a->prompt), &g->prompt, err);
    if (rc == CHM_OK && g->prompt.n == 0) rc = chm_ids_push(&g->prompt, chm_tokenizer_eos(g->tok));
    if (rc) return rc;
    int32_t V = cfg->model.vocab;
    g->out = malloc((size_t)a->tokens * sizeof *g->out);
    g->logits = malloc((size_t)V * sizeof *g->logits);
    g->scratch = malloc((size_t)V * sizeof *g->scratch);
    if (!g->out || !g->logits || !g->scratch) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
    return chm_decoder_create(m, (int64_t)g->prompt.n + a->tokens, &g->dec, err);
}

int chm_cmd_sample(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            sample_usage(stdout);
            return 0;
        }
    sample_args a = {.prompt = "", .backend = "auto", .tokens = 200, .temperature = 0.8, .top_p = 1};
    int code = parse_args(argc, argv, &a);
    if (code) return code;
    chm_err err = {0};
    chm_checkpoint *ck;
    chm_backend *be;
    chm_model *m;
    gen g = {0};
    chm_status rc = chm_train_open_checkpoint_model(a.ckpt, a.backend, 1, &ck, &be, &m, &err);
    if (rc == CHM_OK) rc = setup(&a, m, chm_checkpoint_config(ck), &g, &err);
    if (rc) {
        chm_cli_error(err.msg, NULL);
        code = 2;
    } else {
        fputs(a.prompt, stdout);
        fflush(stdout);
        if (generate(&a, m, &g, &err)) {
            chm_cli_error(err.msg, NULL);
            code = 1;
        }
    }
    chm_decoder_free(g.dec);
    chm_ids_free(&g.prompt);
    chm_tokenizer_free(g.tok);
    free(g.out), free(g.logits), free(g.scratch);
    chm_model_free(m);
    chm_backend_close(be);
    chm_checkpoint_close(ck);
    return code;
}
