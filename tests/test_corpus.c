/*
 * test_corpus.c: the embedded default corpus: determinism by seed, counter-based
 * documents, Dolma JSONL output, size limits, and the loss floor recomputed
 * independently: the test parses every sampled text back against the grammar with
 * its own parser, checks that exactly one derivation exists, and sums -log2 p over it.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chimera/data.h"

/* ---- an independent parser of the grammar ------------------------------------------- */

/* Ways to derive a prefix: ends with the bits and the number of derivations of each. */
typedef struct ends {
    int n, cap;
    size_t *end;
    double *bits;
    double *count;
} ends;

static void ends_add(ends *e, size_t end, double bits, double count) {
    for (int i = 0; i < e->n; i++)
        if (e->end[i] == end) { /* a second derivation of the same span */
            e->count[i] += count;
            return;
        }
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 8;
        e->end = realloc(e->end, (size_t)e->cap * sizeof *e->end);
        e->bits = realloc(e->bits, (size_t)e->cap * sizeof *e->bits);
        e->count = realloc(e->count, (size_t)e->cap * sizeof *e->count);
    }
    e->end[e->n] = end;
    e->bits[e->n] = bits;
    e->count[e->n] = count;
    e->n++;
}

static void ends_free(ends *e) {
    free(e->end);
    free(e->bits);
    free(e->count);
    memset(e, 0, sizeof *e);
}

typedef struct parser {
    const chm_grammar_rule *rules;
    int n_rules;
    const char *text;
    size_t len;
} parser;

static int rule_index(const parser *p, const char *name, size_t n) {
    for (int i = 0; i < p->n_rules; i++)
        if (strlen(p->rules[i].name) == n && strncmp(p->rules[i].name, name, n) == 0) return i;
    cr_assert_fail("unknown rule %.*s", (int)n, name);
    return -1;
}

static ends parse_rule(const parser *p, int r, size_t pos);

/* All ways alternative `alt` matches from each state of `in`. */
static ends parse_alt(const parser *p, const char *alt, ends in) {
    while (*alt && in.n) {
        ends out = {0};
        if (*alt == '{') {
            const char *close = strchr(alt, '}');
            int r = rule_index(p, alt + 1, (size_t)(close - alt - 1));
            for (int i = 0; i < in.n; i++) {
                ends sub = parse_rule(p, r, in.end[i]);
                for (int k = 0; k < sub.n; k++)
                    ends_add(&out, sub.end[k], in.bits[i] + sub.bits[k], in.count[i] * sub.count[k]);
                ends_free(&sub);
            }
            alt = close + 1;
        } else {
            const char *open = strchr(alt, '{');
            size_t n = open ? (size_t)(open - alt) : strlen(alt);
            for (int i = 0; i < in.n; i++)
                if (in.end[i] + n <= p->len && memcmp(p->text + in.end[i], alt, n) == 0)
                    ends_add(&out, in.end[i] + n, in.bits[i], in.count[i]);
            alt += n;
        }
        ends_free(&in);
        in = out;
    }
    return in;
}

static ends parse_rule(const parser *p, int r, size_t pos) {
    const chm_grammar_rule *rule = &p->rules[r];
    ends all = {0};
    for (int k = 0; k < rule->n; k++) {
        ends start = {0};
        ends_add(&start, pos, -log2(rule->p[k]), 1);
        ends got = parse_alt(p, rule->alts[k], start);
        for (int i = 0; i < got.n; i++) ends_add(&all, got.end[i], got.bits[i], got.count[i]);
        ends_free(&got);
    }
    return all;
}

/* Bits of the unique full derivation of text; fails the test when there is not exactly one. */
static double parse_bits(const char *text, size_t len) {
    parser p = {.text = text, .len = len};
    p.rules = chm_corpus_grammar(&p.n_rules);
    cr_assert_not_null(p.rules);
    ends e = parse_rule(&p, 0, 0);
    double bits = NAN, count = 0;
    for (int i = 0; i < e.n; i++)
        if (e.end[i] == len) {
            bits = e.bits[i];
            count = e.count[i];
        }
    ends_free(&e);
    cr_assert_eq(count, 1.0, "text has %g derivations:\n%s", count, text);
    return bits;
}

/* ---- tests --------------------------------------------------------------------------- */

Test(corpus, grammar_probabilities_sum_to_one) {
    int n;
    const chm_grammar_rule *g = chm_corpus_grammar(&n);
    cr_assert(g && n > 20);
    cr_assert_str_eq(g[0].name, "DOC");
    for (int r = 0; r < n; r++) {
        double s = 0;
        for (int k = 0; k < g[r].n; k++) {
            cr_assert(g[r].p[k] > 0);
            s += g[r].p[k];
        }
        cr_assert(fabs(s - 1) < 1e-12, "%s sums to %.17g", g[r].name, s);
    }
}

typedef struct collect {
    int n;
    char *texts[64];
    double bits[64];
    int64_t bytes;
} collect;

static int collect_doc(const chm_corpus_doc *d, void *user) {
    collect *c = user;
    if (c->n < 64) {
        c->texts[c->n] = strdup(d->text);
        c->bits[c->n] = d->bits;
    }
    c->n++;
    c->bytes += (int64_t)d->len;
    return 0;
}

static void collect_free(collect *c) {
    for (int i = 0; i < c->n && i < 64; i++) free(c->texts[i]);
}

Test(corpus, deterministic_by_seed_and_counter_based) {
    chm_err err = {0};
    collect a = {0}, b = {0}, c = {0};
    cr_assert_eq(chm_corpus_generate(5, 40, 0, collect_doc, &a, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_corpus_generate(5, 40, 0, collect_doc, &b, &err), CHM_OK);
    cr_assert_eq(chm_corpus_generate(6, 40, 0, collect_doc, &c, &err), CHM_OK);
    cr_assert_eq(a.n, 40);
    int differ = 0;
    for (int i = 0; i < 40; i++) {
        cr_assert_str_eq(a.texts[i], b.texts[i]);
        cr_assert_eq(a.bits[i], b.bits[i]);
        differ += strcmp(a.texts[i], c.texts[i]) != 0;
    }
    cr_assert(differ >= 35, "seeds 5 and 6 share %d of 40 documents", 40 - differ);
    /* Document 17 alone equals the 18th of the stream. */
    char *t;
    size_t len;
    double bits;
    cr_assert_eq(chm_corpus_document(5, 17, &t, &len, &bits, &err), CHM_OK);
    cr_assert_str_eq(t, a.texts[17]);
    cr_assert_eq(len, strlen(a.texts[17]));
    cr_assert_eq(bits, a.bits[17]);
    free(t);
    collect_free(&a);
    collect_free(&b);
    collect_free(&c);
}

Test(corpus, floor_matches_an_independent_parse) {
    chm_err err = {0};
    collect a = {0};
    cr_assert_eq(chm_corpus_generate(11, 60, 0, collect_doc, &a, &err), CHM_OK, "%s", err.msg);
    double total = 0;
    for (int i = 0; i < 60; i++) {
        double bits = parse_bits(a.texts[i], strlen(a.texts[i]));
        cr_assert(fabs(bits - a.bits[i]) <= 1e-9 * bits, "doc %d: parse %.12f, generator %.12f", i,
                  bits, a.bits[i]);
        total += bits;
    }
    chm_corpus_floor f;
    cr_assert_eq(chm_corpus_entropy(11, 60, 0, &f, &err), CHM_OK);
    cr_assert_eq(f.documents, 60);
    cr_assert_eq(f.bytes, a.bytes);
    cr_assert(fabs(f.bits - total) <= 1e-9 * total);
    cr_assert(fabs(f.bits_per_byte - total / (double)a.bytes) < 1e-12);
    cr_assert(f.bits_per_byte > 0 && f.bits_per_byte < 8, "%g bits/byte", f.bits_per_byte);
    cr_assert(fabs(f.nats_per_byte - f.bits_per_byte * log(2.0)) < 1e-12);
    cr_assert(fabs(f.nats_per_byte_token - f.bits * log(2.0) / (double)(a.bytes + 60)) < 1e-12);
    collect_free(&a);
}

Test(corpus, size_limits) {
    chm_err err = {0};
    collect a = {0};
    cr_assert_eq(chm_corpus_generate(1, 0, 5000, collect_doc, &a, &err), CHM_OK);
    cr_assert(a.bytes >= 5000 && a.bytes - (int64_t)strlen(a.texts[a.n - 1]) < 5000,
              "stops at the first document that reaches the byte count");
    collect_free(&a);
    cr_assert_eq(chm_corpus_generate(1, 0, 0, collect_doc, &a, &err), CHM_ERR_INVALID_ARG);
}

Test(corpus, jsonl_output_reads_back_as_dolma) {
    char dir[] = "/tmp/chimera-corpus-XXXXXX", path[96];
    cr_assert_not_null(mkdtemp(dir));
    for (int gz = 0; gz < 2; gz++) {
        snprintf(path, sizeof path, "%s/corpus.jsonl%s", dir, gz ? ".gz" : "");
        chm_err err = {0};
        chm_corpus_floor f;
        cr_assert_eq(chm_corpus_write_jsonl(path, 3, 25, 0, &f, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(f.documents, 25);
        chm_dolma_reader *r;
        cr_assert_eq(chm_dolma_open(path, &r, &err), CHM_OK, "%s", err.msg);
        chm_dolma_doc d;
        int got, n = 0;
        while (!chm_dolma_next(r, &d, &got, &err) && got) {
            char *t, id[64];
            size_t len;
            cr_assert_eq(chm_corpus_document(3, n, &t, &len, NULL, &err), CHM_OK);
            cr_assert_eq(d.text_len, len);
            cr_assert_eq(memcmp(d.text, t, len), 0);
            snprintf(id, sizeof id, "chimera-grammar-3-%d", n);
            cr_assert_str_eq(d.id, id);
            cr_assert_str_eq(d.source, CHM_CORPUS_SOURCE);
            free(t);
            n++;
        }
        cr_assert_eq(n, 25);
        cr_assert_eq(chm_dolma_stats_skipped(chm_dolma_stats_get(r)), 0);
        chm_dolma_close(r);
        unlink(path);
    }
    rmdir(dir);
}
