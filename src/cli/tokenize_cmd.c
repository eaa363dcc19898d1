/*
 * tokenize_cmd.c: `chimera tokenize`: Dolma JSONL(.gz/.zst) files, or the embedded
 * grammar corpus, into token shards + manifest (see chimera/data.h). Also writes the
 * corpus as Dolma JSONL and prints its loss floor.
 * Exit codes: 0 done, 1 some input or the output failed, 2 bad usage or inputs.
 */
#include "commands.h"
#include "chimera/data.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *usage_text =
    "usage: chimera tokenize --tokenizer FILE|byte --out DIR [options] INPUT...\n"
    "       chimera tokenize --corpus builtin [--seed S] [--docs N|--bytes N]\n"
    "                        (--tokenizer FILE|byte --out DIR | --jsonl FILE | --entropy)\n"
    "\n"
    "Tokenizes Dolma documents (JSON lines with a \"text\" field, in .json/.jsonl, .gz or\n"
    ".zst files; INPUT is a file, a directory (its *.json* files) or a quoted glob) on\n"
    "many threads and writes what `dolma tokens` writes:\n"
    "  DIR/part-XXXXX.npy     raw little-endian tokens (uint16 when the vocabulary fits,\n"
    "                         else uint32; no NumPy header), each document then EOS\n"
    "  DIR/part-XXXXX.csv.gz  one line per document: start,end,path,id (end exclusive)\n"
    "  DIR/manifest.json      counts, dtype, tokenizer, skipped lines, sha256 per shard\n"
    "A re-run with the same inputs keeps the shards already complete. Bad lines are\n"
    "skipped and counted; a corrupt input is named and the others still tokenized.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE|byte  a Hugging Face tokenizer.json, or the built-in byte tokenizer\n"
    "  --out DIR              output directory (created when missing)\n"
    "  --threads N            tokenizing threads (default: one per processor)\n"
    "  --shard-tokens N       most tokens per shard (default 512M; suffixes K, M, G)\n"
    "  --overwrite            replace the shards of a different run found in DIR\n"
    "  --quiet                no progress on stderr\n"
    "  --corpus builtin       read the embedded grammar corpus instead of INPUT files\n"
    "  --seed S               corpus seed (default 1)\n"
    "  --docs N, --bytes N    corpus size in documents or text bytes (default --bytes 8M)\n"
    "  --jsonl FILE           write the corpus as Dolma JSONL (gzip if FILE ends in .gz)\n"
    "  --entropy              print the corpus loss floor (bits and nats per byte) and exit\n";

typedef struct args {
    const char *tokenizer, *out, *corpus, *jsonl;
    int threads, overwrite, quiet, entropy;
    int64_t shard_tokens, docs, bytes;
    uint64_t seed;
    char **inputs; /* expanded, malloc'd */
    int n_inputs, cap_inputs;
} args;

/* "12", "64K", "8M", "1G" (powers of 1024); -1 when malformed. */
static int64_t parse_size(const char *s) {
    char *end;
    double v = strtod(s, &end);
    int64_t mul = 1;
    if (*end == 'K' || *end == 'k') mul = INT64_C(1) << 10;
    else if (*end == 'M' || *end == 'm') mul = INT64_C(1) << 20;
    else if (*end == 'G' || *end == 'g') mul = INT64_C(1) << 30;
    if (mul > 1) end++;
    if (end == s || *end || !(v >= 0) || v * (double)mul > 9e18) return -1;
    return (int64_t)(v * (double)mul);
}

static int add_input(args *a, const char *path) {
    if (a->n_inputs == a->cap_inputs) {
        int cap = a->cap_inputs ? 2 * a->cap_inputs : 16;
        char **p = realloc(a->inputs, (size_t)cap * sizeof *p);
        if (!p) return -1;
        a->inputs = p;
        a->cap_inputs = cap;
    }
    if (!(a->inputs[a->n_inputs] = strdup(path))) return -1;
    a->n_inputs++;
    return 0;
}

/* Expand one INPUT: a glob, a directory (DIR/ *.json*) or a plain path. 0 ok, 2 usage error. */
static int expand_input(args *a, const char *in) {
    struct stat st;
    char pattern[4200];
    const char *pat = NULL;
    if (strpbrk(in, "*?[")) {
        pat = in;
    } else if (stat(in, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(pattern, sizeof pattern, "%s/*.json*", in);
        pat = pattern;
    } else {
        return add_input(a, in) ? 1 : 0; /* checked (exists, regular) by the library */
    }
    glob_t g;
    int rc = glob(pat, 0, NULL, &g);
    if (rc != 0) {
        char msg[4400];
        snprintf(msg, sizeof msg, "%s: %s", in, rc == GLOB_NOMATCH ? "no file matches" : "cannot expand");
        chm_cli_error(msg, "check the path; quote globs so that chimera expands them");
        return 2;
    }
    for (size_t i = 0; i < g.gl_pathc; i++)
        if (add_input(a, g.gl_pathv[i])) {
            globfree(&g);
            return 1;
        }
    globfree(&g);
    return 0;
}

static int usage_error(const char *msg) {
    chm_cli_error(msg, "run `chimera tokenize --help` for the options");
    return 2;
}

/* The value of option argv[*i] ("--x v" or "--x=v"); NULL when missing. */
static const char *opt_value(int argc, char **argv, int *i, const char *name) {
    size_t n = strlen(name);
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    return *i + 1 < argc ? argv[++*i] : NULL;
}

static int is_opt(const char *arg, const char *name) {
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

/* One option with a value into a; 0 ok, 2 bad. */
static int parse_valued(args *a, const char *name, const char *v) {
    char *end;
    if (!strcmp(name, "--tokenizer")) a->tokenizer = v;
    else if (!strcmp(name, "--out")) a->out = v;
    else if (!strcmp(name, "--corpus")) a->corpus = v;
    else if (!strcmp(name, "--jsonl")) a->jsonl = v;
    else if (!strcmp(name, "--threads")) {
        a->threads = (int)strtol(v, &end, 10);
        if (*end || a->threads < 1 || a->threads > 4096) return usage_error("--threads needs 1..4096");
    } else if (!strcmp(name, "--seed")) {
        a->seed = strtoull(v, &end, 10);
        if (*end || !*v) return usage_error("--seed needs a non-negative integer");
    } else {
        int64_t s = parse_size(v);
        if (s <= 0) return usage_error("--shard-tokens, --docs and --bytes need a positive size");
        if (!strcmp(name, "--shard-tokens")) a->shard_tokens = s;
        else if (!strcmp(name, "--docs")) a->docs = s;
        else a->bytes = s;
    }
    return 0;
}

static int parse_args(int argc, char **argv, args *a) {
    static const char *valued[] = {"--tokenizer", "--out", "--corpus", "--jsonl", "--threads",
                                   "--seed", "--shard-tokens", "--docs", "--bytes"};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int done = 0;
        for (size_t k = 0; k < sizeof valued / sizeof *valued && !done; k++) {
            if (!is_opt(arg, valued[k])) continue;
            const char *v = opt_value(argc, argv, &i, valued[k]);
            if (!v) {
                char msg[128];
                snprintf(msg, sizeof msg, "%s needs a value", valued[k]);
                return usage_error(msg);
            }
            int rc = parse_valued(a, valued[k], v);
            if (rc) return rc;
            done = 1;
        }
        if (done) continue;
        if (!strcmp(arg, "--overwrite")) a->overwrite = 1;
        else if (!strcmp(arg, "--quiet")) a->quiet = 1;
        else if (!strcmp(arg, "--entropy")) a->entropy = 1;
        else if (arg[0] == '-' && arg[1]) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", arg);
            return usage_error(msg);
        } else {
            int rc = expand_input(a, arg);
            if (rc) return rc == 1 ? usage_error("out of memory reading the inputs") : rc;
        }
    }
    return 0;
}

static void print_floor(const chm_corpus_floor *f) {
    printf("corpus floor over %lld documents, %lld bytes: %.4f bits/byte, %.4f nats/byte, "
           "%.4f nats/token with the byte tokenizer (one EOS per document)\n",
           (long long)f->documents, (long long)f->bytes, f->bits_per_byte, f->nats_per_byte,
           f->nats_per_byte_token);
}

/* --corpus builtin with --jsonl or --entropy (no tokenizing). */
static int corpus_only(const args *a) {
    chm_err err = {0};
    chm_corpus_floor f;
    chm_status rc = a->jsonl ? chm_corpus_write_jsonl(a->jsonl, a->seed, a->docs, a->bytes, &f, &err)
                             : chm_corpus_entropy(a->seed, a->docs, a->bytes, &f, &err);
    if (rc) {
        chm_cli_error(err.msg, NULL);
        return 1;
    }
    if (a->jsonl) printf("wrote %lld documents to %s\n", (long long)f.documents, a->jsonl);
    print_floor(&f);
    return 0;
}

static void print_summary(const args *a, const chm_tokenize_result *r) {
    printf("%lld documents, %lld tokens in %d shard%s at %s", (long long)r->documents,
           (long long)r->tokens, r->shards, r->shards == 1 ? "" : "s", a->out);
    if (r->shards_reused) printf(" (%d complete shard%s kept from an earlier run)", r->shards_reused,
                                 r->shards_reused == 1 ? "" : "s");
    printf("\n");
    const chm_dolma_stats *s = &r->stats;
    int64_t skipped = chm_dolma_stats_skipped(s);
    if (skipped || s->empty) {
        printf("skipped %lld line%s (broken JSON %lld, no text %lld, invalid UTF-8 %lld); %lld empty "
               "text%s\n",
               (long long)skipped, skipped == 1 ? "" : "s", (long long)s->bad_json,
               (long long)s->missing_text, (long long)s->bad_utf8, (long long)s->empty,
               s->empty == 1 ? "" : "s");
        for (int i = 0; i < s->n_samples; i++) printf("  %s\n", s->samples[i]);
    }
    if (a->corpus && r->floor.documents) print_floor(&r->floor);
}

static int run_tokenize(const args *a) {
    chm_err err = {0};
    chm_tokenizer *tok = NULL;
    int byte = strcmp(a->tokenizer, "byte") == 0;
    chm_status rc = byte ? chm_tokenizer_byte(&tok, &err) : chm_tokenizer_load(a->tokenizer, &tok, &err);
    if (rc) {
        chm_cli_error(err.msg, "pass a Hugging Face tokenizer.json, or `byte`");
        return 2;
    }
    chm_tokenize_opts o = {
        .inputs = (const char *const *)a->inputs, .n_inputs = a->n_inputs, .corpus = a->corpus != NULL,
        .corpus_seed = a->seed, .corpus_docs = a->docs, .corpus_bytes = a->bytes, .tok = tok,
        .tokenizer_name = byte ? "byte" : a->tokenizer, .out_dir = a->out, .threads = a->threads,
        .shard_tokens = a->shard_tokens, .overwrite = a->overwrite, .progress = !a->quiet};
    chm_tokenize_result res;
    rc = chm_tokenize_run(&o, &res, &err);
    chm_tokenizer_free(tok);
    if (rc == CHM_ERR_INVALID_ARG) {
        chm_cli_error(err.msg, "run `chimera tokenize --help` for the options");
        return 2;
    }
    print_summary(a, &res);
    if (rc) {
        chm_cli_error(err.msg, res.failed_inputs ? "the manifest lists the failed inputs under \"errors\""
                                                 : NULL);
        return 1;
    }
    return 0;
}

/* Check option combinations; 0 ok, 2 bad. */
static int check_args(args *a) {
    if (a->corpus && strcmp(a->corpus, "builtin") != 0)
        return usage_error("--corpus takes `builtin` (the embedded grammar corpus)");
    if (!a->corpus && (a->jsonl || a->entropy || a->docs || a->bytes))
        return usage_error("--jsonl, --entropy, --docs and --bytes go with --corpus builtin");
    if (a->corpus && a->n_inputs) return usage_error("give either INPUT files or --corpus builtin");
    if (a->corpus && !a->docs && !a->bytes) a->bytes = INT64_C(8) << 20;
    if (a->corpus && (a->jsonl || a->entropy)) return 0;
    if (!a->tokenizer) return usage_error("--tokenizer is required (a tokenizer.json, or `byte`)");
    if (!a->out) return usage_error("--out DIR is required");
    if (!a->corpus && !a->n_inputs) return usage_error("no INPUT files given");
    return 0;
}

int chm_cmd_tokenize(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
    args a = {.seed = 1};
    int rc = parse_args(argc, argv, &a);
    if (!rc) rc = check_args(&a);
    if (!rc) rc = a.corpus && (a.jsonl || a.entropy) ? corpus_only(&a) : run_tokenize(&a);
    for (int i = 0; i < a.n_inputs; i++) free(a.inputs[i]);
    free(a.inputs);
    return rc;
}
