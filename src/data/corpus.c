/*
 * corpus.c: the embedded default corpus: sampling documents from the grammar of
 * corpus_grammar.c, their exact information content, and Dolma JSONL output.
 *
 * Randomness is counter-based: draw k of document i under seed s is
 * mix64(key(s, i) + (k+1) * golden), so any document can be made alone, on any
 * thread, and the corpus never depends on how it was generated. Because the text
 * determines every choice (see corpus_grammar.c), -log2 P(text) is exactly the sum
 * of -log2 p of the choices made, which is what each document reports.
 */
#include "data/corpus.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MAX_DEPTH 2000

/* splitmix64's finaliser: a bijective 64-bit mix. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* Sampler state of one document: its output text and its random stream. */
typedef struct gen {
    const chm_corpus_rule *rules;
    uint64_t key, counter;
    char *buf;
    size_t len, cap;
    double bits;
} gen;

static int gen_put(gen *g, const char *s, size_t n) {
    if (g->len + n + 1 > g->cap) {
        size_t cap = g->cap ? g->cap : 1024;
        while (cap < g->len + n + 1) cap *= 2;
        char *p = realloc(g->buf, cap);
        if (!p) return -1;
        g->buf = p;
        g->cap = cap;
    }
    memcpy(g->buf + g->len, s, n);
    g->len += n;
    g->buf[g->len] = '\0';
    return 0;
}

/* Uniform in [0, 1) with 53 random bits. */
static double gen_uniform(gen *g) {
    g->counter++;
    uint64_t x = mix64(g->key + g->counter * 0x9e3779b97f4a7c15ull);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

/* Expand rule r: pick an alternative, emit its literals, recurse into its references. */
static chm_status expand(gen *g, int r, int depth, chm_err *err) {
    if (depth > MAX_DEPTH)
        return CHM_ERR(err, CHM_ERR_INTERNAL, "corpus grammar recursion deeper than %d", MAX_DEPTH);
    const chm_corpus_rule *rule = &g->rules[r];
    double u = gen_uniform(g);
    int k = 0;
    while (k < rule->n - 1 && u >= rule->alts[k].cum) k++;
    const chm_corpus_alt *a = &rule->alts[k];
    g->bits += a->bits;
    for (int i = 0; i < a->n_pieces; i++) {
        const chm_corpus_piece *pc = &a->pieces[i];
        if (pc->rule < 0) {
            if (gen_put(g, pc->lit, pc->len))
                return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for a corpus document");
        } else {
            chm_status rc = expand(g, pc->rule, depth + 1, err);
            if (rc) return rc;
        }
    }
    return CHM_OK;
}

chm_status chm_corpus_document(uint64_t seed, int64_t index, char **text, size_t *len,
                               double *bits, chm_err *err) {
    *text = NULL;
    int n_rules;
    gen g = {0};
    g.rules = chm_corpus_compiled(&n_rules);
    if (!g.rules) return CHM_ERR(err, CHM_ERR_INTERNAL, "the built-in corpus grammar is inconsistent");
    g.key = mix64(mix64(seed ^ 0x6a09e667f3bcc909ull) + (uint64_t)index);
    chm_status rc = expand(&g, 0, 0, err);
    if (rc) {
        free(g.buf);
        return rc;
    }
    *text = g.buf;
    *len = g.len;
    if (bits) *bits = g.bits;
    return CHM_OK;
}

chm_status chm_corpus_generate(uint64_t seed, int64_t n_docs, int64_t n_bytes, chm_corpus_fn fn,
                               void *user, chm_err *err) {
    if (n_docs <= 0 && n_bytes <= 0)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "corpus size: give a document count or a byte count");
    int64_t bytes = 0;
    for (int64_t i = 0; (n_docs <= 0 || i < n_docs) && (n_bytes <= 0 || bytes < n_bytes); i++) {
        chm_corpus_doc d = {.index = i};
        char *text;
        chm_status rc = chm_corpus_document(seed, i, &text, &d.len, &d.bits, err);
        if (rc) return rc;
        snprintf(d.id, sizeof d.id, "%s-%llu-%lld", CHM_CORPUS_SOURCE, (unsigned long long)seed,
                 (long long)i);
        d.text = text;
        bytes += (int64_t)d.len;
        int stop = fn(&d, user);
        free(text);
        if (stop) break;
    }
    return CHM_OK;
}

/* Sum of the floor over documents (callback of chm_corpus_generate). */
static int add_floor(const chm_corpus_doc *d, void *user) {
    chm_corpus_floor *f = user;
    f->documents++;
    f->bytes += (int64_t)d->len;
    f->bits += d->bits;
    return 0;
}

void chm_corpus_floor_finish(chm_corpus_floor *f) {
    double nats = f->bits * log(2.0);
    f->bits_per_byte = f->bytes ? f->bits / (double)f->bytes : 0;
    f->nats_per_byte = f->bytes ? nats / (double)f->bytes : 0;
    f->nats_per_byte_token = f->bytes ? nats / (double)(f->bytes + f->documents) : 0;
}

chm_status chm_corpus_entropy(uint64_t seed, int64_t n_docs, int64_t n_bytes,
                              chm_corpus_floor *out, chm_err *err) {
    memset(out, 0, sizeof *out);
    chm_status rc = chm_corpus_generate(seed, n_docs, n_bytes, add_floor, out, err);
    chm_corpus_floor_finish(out);
    return rc;
}

/* Where chm_corpus_write_jsonl sends lines. */
typedef struct jsonl_sink {
    FILE *f;
    gzFile gz;
    chm_corpus_floor floor;
    int failed;
} jsonl_sink;

static int write_doc(const chm_corpus_doc *d, void *user) {
    jsonl_sink *s = user;
    add_floor(d, &s->floor);
    json_t *o = json_pack("{s:s, s:s%, s:s}", "id", d->id, "text", d->text, d->len, "source",
                          CHM_CORPUS_SOURCE);
    char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!line) return s->failed = 1;
    size_t n = strlen(line);
    line[n] = '\n'; /* replaces the NUL; the length is known */
    int ok = s->gz ? gzwrite(s->gz, line, (unsigned)(n + 1)) == (int)(n + 1)
                   : fwrite(line, 1, n + 1, s->f) == n + 1;
    free(line);
    if (!ok) s->failed = 1;
    return s->failed;
}

chm_status chm_corpus_write_jsonl(const char *path, uint64_t seed, int64_t n_docs,
                                  int64_t n_bytes, chm_corpus_floor *floor_out, chm_err *err) {
    jsonl_sink s = {0};
    size_t pl = strlen(path);
    int gz = pl > 3 && strcmp(path + pl - 3, ".gz") == 0;
    if (gz) s.gz = gzopen(path, "wb6");
    else s.f = fopen(path, "wb");
    if (!s.gz && !s.f) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    chm_status rc = chm_corpus_generate(seed, n_docs, n_bytes, write_doc, &s, err);
    int close_bad = gz ? gzclose(s.gz) != Z_OK : fclose(s.f) != 0;
    if (!rc && (s.failed || close_bad))
        rc = CHM_ERR(err, CHM_ERR_IO, "%s: write failed (disk full?)", path);
    chm_corpus_floor_finish(&s.floor);
    if (floor_out) *floor_out = s.floor;
    return rc;
}
