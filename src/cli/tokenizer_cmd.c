/*
 * tokenizer_cmd.c: `chimera tokenizer encode|decode|train` (and the unlisted `bench`).
 *
 * encode and decode run one text or one id list through a tokenizer.json byte-level BPE
 * (or the built-in byte tokenizer) by hand; train writes a new GPT-2-style tokenizer.json;
 * bench measures encode throughput for tools/bench_tokenizer.sh.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chimera/tokenizer.h"
#include "cli/commands.h"
#include "data/tokenizer_internal.h"

static const char *usage_main =
    "usage: chimera tokenizer <encode|decode|train> [options]\n\n"
    "Run a Hugging Face tokenizer.json byte-level BPE (GPT-2, GPT-NeoX-20B as OLMo/Dolma use it)\n"
    "by hand, or train a new one. Ids match Hugging Face `tokenizers` exactly.\n\n"
    "  encode   text -> ids         (chimera tokenizer encode --help)\n"
    "  decode   ids -> text         (chimera tokenizer decode --help)\n"
    "  train    text files -> a new tokenizer.json (chimera tokenizer train --help)\n";

static const char *usage_encode =
    "usage: chimera tokenizer encode --tokenizer FILE|byte [--text STRING]\n\n"
    "Print the ids of STRING (or of all of standard input when --text is not given),\n"
    "separated by spaces, then a newline. Invalid UTF-8 is replaced by U+FFFD first.\n\n"
    "  --tokenizer FILE   a Hugging Face tokenizer.json (byte-level BPE), or `byte` for\n"
    "                     the built-in byte tokenizer (ids 0-255 are bytes, 256 is EOS)\n"
    "  --text STRING      the text to encode (default: read standard input)\n";

static const char *usage_decode =
    "usage: chimera tokenizer decode --tokenizer FILE|byte [--ids \"1 2 3\"]\n\n"
    "Print the text of the ids (given by --ids or read from standard input, separated by\n"
    "spaces, commas or newlines) exactly as bytes, with no newline added. Added tokens\n"
    "such as <|endoftext|> print as their text.\n\n"
    "  --tokenizer FILE   a Hugging Face tokenizer.json, or `byte`\n"
    "  --ids LIST         the ids (default: read standard input)\n";

static const char *usage_train =
    "usage: chimera tokenizer train --vocab-size N --out FILE INPUT...\n\n"
    "Train a GPT-2-style byte-level BPE: the GPT-2 pre-tokenizer regex, the 256 byte tokens,\n"
    "merges until N ids, and <|endoftext|> as the last id (so N counts all three). Writes\n"
    "FILE as a tokenizer.json that Hugging Face `tokenizers` and chimera load alike.\n\n"
    "  --vocab-size N     total number of ids, at least 257\n"
    "  --out FILE         where to write the tokenizer.json\n"
    "  INPUT...           .json/.jsonl Dolma files (also .gz/.zst: the \"text\" of each line\n"
    "                     is one document), or plain text files (also .gz/.zst)\n";

static const char *usage_bench =
    "usage: chimera tokenizer bench --tokenizer FILE|byte [--threads N] [--repeat R] FILE...\n\n"
    "Encode every document of the files (as `train` reads them) R times (default 5) on N\n"
    "threads (default: all), after one warm-up pass, and print the throughput.\n";

static bool is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

static int usage_error(const char *msg, const char *usage) {
    chm_cli_error(msg, NULL);
    fprintf(stderr, "\n%s", usage);
    return 2;
}

/* The value after option argv[*i]; NULL (after an error message) when it is missing. */
static const char *opt_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        char msg[128];
        snprintf(msg, sizeof msg, "option %s needs a value", argv[*i]);
        chm_cli_error(msg, "see --help");
        return NULL;
    }
    return argv[++*i];
}

static int load_tokenizer(const char *name, chm_tokenizer **t) {
    chm_err err = {0};
    chm_status rc =
        strcmp(name, "byte") == 0 ? chm_tokenizer_byte(t, &err) : chm_tokenizer_load(name, t, &err);
    if (!rc) return 0;
    chm_cli_error(err.msg, "pass a Hugging Face tokenizer.json (byte-level BPE) or `byte`");
    return rc == CHM_ERR_NOMEM ? 1 : 2;
}

/* All of standard input in a malloc'd, NUL-terminated buffer (NULL when out of memory). */
static char *read_stdin(size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, stdin);
        if (!got) break;
        len += got;
    }
    if (buf) buf[len] = '\0';
    *n = len;
    return buf;
}

/* Shared parsing of --tokenizer plus one optional value option (--text or --ids). */
static int parse_tok_args(int argc, char **argv, const char *usage, const char *value_opt,
                          const char **tok, const char **value) {
    *tok = NULL, *value = NULL;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) return printf("%s", usage), -1;
        if (strcmp(argv[i], "--tokenizer") == 0) {
            if (!(*tok = opt_value(argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], value_opt) == 0) {
            if (!(*value = opt_value(argc, argv, &i))) return 2;
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown argument '%s'", argv[i]);
            return usage_error(msg, usage);
        }
    }
    if (!*tok) return usage_error("--tokenizer is required", usage);
    return 0;
}

static int cmd_encode(int argc, char **argv) {
    const char *tok, *text;
    int rc = parse_tok_args(argc, argv, usage_encode, "--text", &tok, &text);
    if (rc) return rc < 0 ? 0 : rc;
    chm_tokenizer *t;
    if ((rc = load_tokenizer(tok, &t))) return rc;
    size_t n = text ? strlen(text) : 0;
    char *in = text ? NULL : read_stdin(&n);
    chm_ids ids = {0};
    chm_err err = {0};
    if (!text && !in)
        rc = (chm_cli_error("out of memory reading standard input", NULL), 1);
    else if (chm_tokenizer_encode(t, text ? text : in, n, &ids, &err))
        rc = (chm_cli_error(err.msg, NULL), 1);
    for (size_t i = 0; !rc && i < ids.n; i++) printf(i ? " %d" : "%d", (int)ids.ids[i]);
    if (!rc) printf("\n");
    chm_ids_free(&ids);
    free(in);
    chm_tokenizer_free(t);
    return rc;
}

/* Parse ids separated by white space or commas. */
static int parse_ids(const char *s, chm_ids *ids) {
    while (*s) {
        if (strchr(" \t\r\n,", *s)) {
            s++;
            continue;
        }
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX || (*end && !strchr(" \t\r\n,", *end))) {
            char msg[128];
            snprintf(msg, sizeof msg, "'%.40s' is not a token id", s);
            chm_cli_error(msg, "ids are non-negative integers separated by spaces or commas");
            return 2;
        }
        if (chm_ids_push(ids, (int32_t)v)) return 1;
        s = end;
    }
    return 0;
}

static int cmd_decode(int argc, char **argv) {
    const char *tok, *list;
    int rc = parse_tok_args(argc, argv, usage_decode, "--ids", &tok, &list);
    if (rc) return rc < 0 ? 0 : rc;
    size_t n = 0;
    char *in = list ? NULL : read_stdin(&n);
    if (!list && !in) return chm_cli_error("out of memory reading standard input", NULL), 1;
    chm_ids ids = {0};
    chm_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    chm_err err = {0};
    if (in && strlen(in) != n)
        rc = (chm_cli_error("standard input holds a NUL byte, not ids", NULL), 2);
    if (!rc) rc = parse_ids(list ? list : in, &ids);
    if (!rc) rc = load_tokenizer(tok, &t);
    if (!rc && chm_tokenizer_decode(t, ids.ids, ids.n, &text, &len, &err))
        rc = (chm_cli_error(err.msg, "decode only ids that this tokenizer produces"), 2);
    if (!rc) fwrite(text, 1, len, stdout);
    free(text), free(in);
    chm_ids_free(&ids);
    chm_tokenizer_free(t);
    return rc;
}

static int cmd_train(int argc, char **argv) {
    const char *out = NULL, **inputs = calloc((size_t)argc, sizeof *inputs);
    long vocab = 0;
    size_t n_in = 0;
    int rc = inputs ? 0 : 1;
    for (int i = 1; i < argc && !rc; i++) {
        const char *v;
        if (is_help(argv[i])) {
            printf("%s", usage_train);
            free(inputs);
            return 0;
        } else if (strcmp(argv[i], "--out") == 0) {
            rc = (out = opt_value(argc, argv, &i)) ? 0 : 2;
        } else if (strcmp(argv[i], "--vocab-size") == 0) {
            char *end = NULL;
            rc = (v = opt_value(argc, argv, &i)) ? 0 : 2;
            if (!rc && ((vocab = strtol(v, &end, 10)) <= 0 || *end))
                rc = usage_error("--vocab-size needs a positive integer", usage_train);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", argv[i]);
            rc = usage_error(msg, usage_train);
        } else {
            inputs[n_in++] = argv[i];
        }
    }
    if (!rc && (!out || !vocab || !n_in))
        rc =
            usage_error("train needs --vocab-size, --out and at least one input file", usage_train);
    chm_err err = {0};
    int32_t n_ids = 0;
    if (!rc && chm_tokenizer_train(inputs, n_in, (int32_t)(vocab > INT32_MAX ? INT32_MAX : vocab),
                                   out, &n_ids, &err)) {
        chm_cli_error(err.msg, "check the input files and --vocab-size");
        rc = err.code == CHM_ERR_NOMEM ? 1 : 2;
    }
    if (!rc)
        printf("wrote %s: %d ids (256 bytes, %d merged tokens, <|endoftext|> = %d)\n", out,
               (int)n_ids, (int)n_ids - 257, (int)n_ids - 1);
    free(inputs);
    return rc;
}

/* ---- bench ------------------------------------------------------------------------- */

typedef struct bench_docs {
    char *buf;
    size_t n, cap;
    size_t *off, *len;
    size_t nd, capd;
} bench_docs;

static chm_status bench_add(void *ctx, const char *text, size_t len) {
    bench_docs *d = ctx;
    if (d->n + len > d->cap) {
        size_t c = d->cap ? d->cap : 1 << 20;
        while (c < d->n + len) c *= 2;
        char *p = realloc(d->buf, c);
        if (!p) return CHM_ERR_NOMEM;
        d->buf = p, d->cap = c;
    }
    if (d->nd == d->capd) {
        size_t c = d->capd ? d->capd * 2 : 256;
        size_t *o = realloc(d->off, c * sizeof *o), *l = o ? realloc(d->len, c * sizeof *l) : NULL;
        if (o) d->off = o;
        if (!o || !l) return CHM_ERR_NOMEM;
        d->len = l, d->capd = c;
    }
    memcpy(d->buf + d->n, text, len);
    d->off[d->nd] = d->n, d->len[d->nd++] = len;
    d->n += len;
    return CHM_OK;
}

/* Encode every document `repeat` times on the current OpenMP threads; returns tokens per pass. */
static int64_t bench_pass(const chm_tokenizer *t, const bench_docs *d, int repeat, int *failed) {
    int64_t tokens = 0;
    int bad = 0;
    long total = (long)d->nd * repeat;
#pragma omp parallel reduction(+ : tokens, bad)
    {
        chm_ids ids = {0};
#pragma omp for schedule(dynamic, 1)
        for (long i = 0; i < total; i++) {
            size_t k = (size_t)(i % (long)d->nd);
            ids.n = 0;
            if (chm_tokenizer_encode(t, d->buf + d->off[k], d->len[k], &ids, NULL)) bad++;
            tokens += (int64_t)ids.n;
        }
        chm_ids_free(&ids);
    }
    *failed = bad;
    return repeat ? tokens / repeat : 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_parse(int argc, char **argv, const char **tok, int *threads, int *repeat,
                       bench_docs *d) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        chm_err err = {0};
        if (is_help(argv[i])) return printf("%s", usage_bench), -1;
        if (strcmp(argv[i], "--tokenizer") == 0) {
            if (!(*tok = opt_value(argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--threads") == 0 || strcmp(argv[i], "--repeat") == 0) {
            int *dst = argv[i][2] == 't' ? threads : repeat;
            if (!(v = opt_value(argc, argv, &i)) || (*dst = atoi(v)) <= 0)
                return usage_error("--threads and --repeat need positive integers", usage_bench);
        } else if (chm_tok_corpus_read(argv[i], bench_add, d, &err)) {
            chm_cli_error(err.code ? err.msg : "out of memory reading the documents", NULL);
            return 2;
        }
    }
    if (!*tok || !d->nd)
        return usage_error("bench needs --tokenizer and files with documents", usage_bench);
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    const char *tok = NULL;
    int threads = omp_get_max_threads(), repeat = 5, bad = 0;
    bench_docs d = {0};
    chm_tokenizer *t = NULL;
    int rc = bench_parse(argc, argv, &tok, &threads, &repeat, &d);
    if (!rc) rc = load_tokenizer(tok, &t);
    if (!rc) {
        omp_set_num_threads(threads);
        double t0 = now_s();
        bench_pass(t, &d, 1, &bad); /* warm-up: fills each thread's word cache */
        double cold = now_s() - t0;
        t0 = now_s();
        int64_t tokens = bench_pass(t, &d, repeat, &bad);
        double dt = now_s() - t0, mb = (double)d.n * repeat / 1e6;
        printf("chimera bench: %zu docs, %.3f MB, %lld tokens per pass; %d threads x %d passes in "
               "%.3f s: %.2f MB/s, %.2f MB/s per thread, %.0f tokens/s; first pass (cold caches) "
               "%.2f MB/s\n",
               d.nd, (double)d.n / 1e6, (long long)tokens, threads, repeat, dt, mb / dt,
               mb / dt / threads, (double)tokens * repeat / dt, (double)d.n / 1e6 / cold);
        if (bad) rc = (chm_cli_error("some documents failed to encode", NULL), 1);
    }
    chm_tokenizer_free(t);
    free(d.buf), free(d.off), free(d.len);
    return rc < 0 ? 0 : rc;
}

int chm_cmd_tokenizer(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "%s", usage_main);
        return 2;
    }
    const char *sub = argv[1];
    if (is_help(sub)) return printf("%s", usage_main), 0;
    if (strcmp(sub, "encode") == 0) return cmd_encode(argc - 1, argv + 1);
    if (strcmp(sub, "decode") == 0) return cmd_decode(argc - 1, argv + 1);
    if (strcmp(sub, "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(sub, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    char msg[256];
    snprintf(msg, sizeof msg, "unknown tokenizer command '%s'", sub);
    return usage_error(msg, usage_main);
}
