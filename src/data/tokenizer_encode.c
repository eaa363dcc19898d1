/*
 * tokenizer_encode.c: text -> ids for a loaded byte-level BPE, in Hugging Face's order:
 *
 *   1. invalid UTF-8 -> U+FFFD (tokenizer_text.c)
 *   2. split out the added tokens that match raw text (normalized: false)
 *   3. NFC each remaining piece (when the normalizer asks for it)
 *   4. split out the added tokens that match normalized text (normalized: true)
 *   5. pre-tokenizer: each Split step in order, then ByteLevel (prefix space, GPT-2 regex)
 *   6. BPE per word (bpe_merge.c), through the per-thread word cache (bpe_cache.c)
 *
 * Pieces flow through callbacks, so no list of words is ever built. Empty pieces are
 * dropped at every stage, as HF's PreTokenizedString::split drops them.
 */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

static chm_status push_id(chm_enc *e, int32_t id) { return chm_ids_append(e->out, &id, 1); }

static chm_status nomem(chm_enc *e) {
    return CHM_ERR(e->err, CHM_ERR_NOMEM, "out of memory while encoding text");
}

/* Next match of re in s[0..n) at or after pos: 1 with [*a, *b), 0 when none, or an error. */
static int next_match(chm_enc *e, const pcre2_code *re, bool jit, const uint8_t *s, size_t n,
                      size_t pos, size_t *a, size_t *b) {
    /* the text is valid UTF-8 (repaired on entry), so no per-call UTF check */
    int rc = jit ? pcre2_jit_match(re, s, n, pos, 0, e->md, NULL)
                 : pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        CHM_ERR(e->err, CHM_ERR_UNSUPPORTED, "pre-tokenizer regex failed on the text: %s",
                (char *)msg);
        return -1;
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    *a = ov[0], *b = ov[1];
    return 1;
}

/* Where to search after a match [a, b): b, or one character further when the match is empty. */
static size_t after_match(const uint8_t *s, size_t n, size_t a, size_t b) {
    if (b > a || b >= n) return b > a ? b : n + 1;
    size_t k;
    chm_utf8_decode(s + b, &k);
    return b + k;
}

static chm_status spans_push(chm_spans *v, size_t a, size_t b, int match) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        chm_span *p = realloc(v->v, cap * sizeof *p);
        if (!p) return CHM_ERR_NOMEM;
        v->v = p, v->cap = cap;
    }
    v->v[v->n++] = (chm_span){(uint32_t)a, (uint32_t)b, match};
    return CHM_OK;
}

/* HF's Pattern::find_matches: matches and the gaps between them, in order. */
static chm_status regex_spans(chm_enc *e, const pcre2_code *re, bool jit, const uint8_t *s,
                              size_t n, chm_spans *v) {
    size_t prev = 0, pos = 0, a, b;
    v->n = 0;
    while (pos <= n) {
        int m = next_match(e, re, jit, s, n, pos, &a, &b);
        if (m < 0) return e->err ? e->err->code : CHM_ERR_UNSUPPORTED;
        if (m == 0) break;
        if (b > a) {
            if (prev < a && spans_push(v, prev, a, 0)) return nomem(e);
            if (spans_push(v, a, b, 1)) return nomem(e);
            prev = b;
        }
        pos = after_match(s, n, a, b);
    }
    if (prev < n && spans_push(v, prev, n, 0)) return nomem(e);
    return CHM_OK;
}

static void spans_reverse(chm_span *v, size_t n) {
    for (size_t i = 0; i < n / 2; i++) {
        chm_span x = v[i];
        v[i] = v[n - 1 - i], v[n - 1 - i] = x;
    }
}

/* MergedWithPrevious / MergedWithNext / Contiguous, folded as HF's NormalizedString::split
 * folds them (front to back; back to front for MergedWithNext). */
static void spans_merge(chm_spans *v, chm_split_behavior how) {
    bool rev = how == CHM_SPLIT_MERGED_NEXT, prev_match = false;
    if (rev) spans_reverse(v->v, v->n);
    size_t out = 0;
    for (size_t k = 0; k < v->n; k++) {
        chm_span s = v->v[k];
        bool m = s.match != 0;
        bool fold = out > 0 && (how == CHM_SPLIT_CONTIGUOUS ? m == prev_match : m && !prev_match);
        prev_match = m;
        if (!fold)
            v->v[out++] = s;
        else if (rev)
            v->v[out - 1].a = s.a;
        else
            v->v[out - 1].b = s.b;
    }
    v->n = out;
    if (rev) spans_reverse(v->v, out);
}

static chm_status pretok(chm_enc *e, int level, const uint8_t *s, size_t n);

/* One Split step: split, apply the behaviour, recurse into the next step for each piece. */
static chm_status split_step(chm_enc *e, int level, const uint8_t *s, size_t n) {
    const chm_pretok_step *st = &e->t->steps[level];
    chm_spans *v = &e->spans[level];
    chm_status rc = regex_spans(e, st->re, st->jit, s, n, v);
    if (rc) return rc;
    if (st->invert)
        for (size_t k = 0; k < v->n; k++) v->v[k].match = !v->v[k].match;
    if (st->behavior == CHM_SPLIT_REMOVED) {
        size_t out = 0;
        for (size_t k = 0; k < v->n; k++)
            if (!v->v[k].match) v->v[out++] = v->v[k];
        v->n = out;
    } else if (st->behavior != CHM_SPLIT_ISOLATED) {
        spans_merge(v, st->behavior);
    }
    for (size_t k = 0; k < v->n; k++) {
        chm_span sp = e->spans[level].v[k]; /* deeper levels use their own span lists */
        if (sp.b > sp.a && (rc = pretok(e, level + 1, s + sp.a, sp.b - sp.a))) return rc;
    }
    return CHM_OK;
}

/* ByteLevel: optional prefix space, optional GPT-2 regex (Isolated), then BPE per word. */
static chm_status bytelevel_step(chm_enc *e, const uint8_t *s, size_t n) {
    const chm_tokenizer *t = e->t;
    if (t->add_prefix_space && s[0] != ' ') {
        if (n + 1 > e->pfx_cap) {
            char *p = realloc(e->pfx, n + 1);
            if (!p) return nomem(e);
            e->pfx = p, e->pfx_cap = n + 1;
        }
        e->pfx[0] = ' ';
        memcpy(e->pfx + 1, s, n);
        s = (const uint8_t *)e->pfx, n++;
    }
    if (!t->bl_re) return chm_bpe_word(e, s, n) ? nomem(e) : CHM_OK;
    size_t prev = 0, pos = 0, a, b;
    while (pos <= n) {
        int m = next_match(e, t->bl_re, t->bl_jit, s, n, pos, &a, &b);
        if (m < 0) return e->err ? e->err->code : CHM_ERR_UNSUPPORTED;
        if (m == 0) break;
        if (b > a) {
            if (prev < a && chm_bpe_word(e, s + prev, a - prev)) return nomem(e);
            if (chm_bpe_word(e, s + a, b - a)) return nomem(e);
            prev = b;
        }
        pos = after_match(s, n, a, b);
    }
    if (prev < n && chm_bpe_word(e, s + prev, n - prev)) return nomem(e);
    return CHM_OK;
}

static chm_status pretok(chm_enc *e, int level, const uint8_t *s, size_t n) {
    if (level < e->t->n_steps) return split_step(e, level, s, n);
    return bytelevel_step(e, s, n);
}

static chm_status on_norm_piece(void *ctx, const char *s, size_t n, int32_t token) {
    chm_enc *e = ctx;
    if (token >= 0) return push_id(e, token) ? nomem(e) : CHM_OK;
    return pretok(e, 0, (const uint8_t *)s, n);
}

static chm_status on_raw_piece(void *ctx, const char *s, size_t n, int32_t token) {
    chm_enc *e = ctx;
    const chm_tokenizer *t = e->t;
    if (token >= 0) return push_id(e, token) ? nomem(e) : CHM_OK;
    if (!t->nfc || chm_nfc_quick(t->nfc_unsafe, (const uint8_t *)s, n))
        return chm_added_split(t, &t->trie_norm, s, n, on_norm_piece, e);
    char *norm;
    size_t nn;
    chm_status rc = chm_nfc((const uint8_t *)s, n, &norm, &nn);
    if (rc) return CHM_ERR(e->err, rc, "NFC normalisation failed");
    rc = chm_added_split(t, &t->trie_norm, norm, nn, on_norm_piece, e);
    free(norm);
    return rc;
}

static void enc_free(chm_enc *e) {
    pcre2_match_data_free(e->md);
    for (int i = 0; i < CHM_TOK_MAX_STEPS; i++) free(e->spans[i].v);
    free(e->pfx), free(e->sym), free(e->heap);
}

chm_status chm_bpe_encode(const chm_tokenizer *t, const char *text, size_t len, chm_ids *out,
                          chm_err *err) {
    char *fixed = NULL;
    if (chm_utf8_valid_prefix((const uint8_t *)text, len) != len) {
        if (chm_utf8_repair((const uint8_t *)text, len, &fixed, &len))
            return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory while encoding text");
        text = fixed;
    }
    if (len > UINT32_MAX) {
        free(fixed);
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "text of %zu bytes is too long to encode at once "
                       "(limit 4 GiB): split it into documents",
                       len);
    }
    chm_enc e = {.t = t, .out = out, .err = err};
    e.md = pcre2_match_data_create(16, NULL);
    e.cache = chm_bpe_cache_get(t);
    chm_status rc = e.md ? chm_added_split(t, &t->trie_raw, text, len, on_raw_piece, &e)
                         : CHM_ERR(err, CHM_ERR_NOMEM, "out of memory while encoding text");
    enc_free(&e);
    free(fixed);
    return rc;
}
