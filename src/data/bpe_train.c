/*
 * bpe_train.c: train a GPT-2-style byte-level BPE and write it as a tokenizer.json.
 *
 * Documents are cut at "<|endoftext|>" (it is the special token of the result), split into
 * words by the GPT-2 regex and counted. Ids 0..255 are the bytes; then, while ids remain,
 * the most frequent adjacent pair (ties: the smaller (left, right) ids, as Hugging Face's
 * trainer) is merged in every word that holds it, left to right. The last id is
 * <|endoftext|>. When a merge makes bytes that are already a token (possible when two
 * different pairs spell the same string) it reuses that token's id, as HF's trainer does.
 *
 * Pair counts are kept exact; a max-heap holds entries whose count may be stale but never
 * below the pair's true count, so a popped entry that still matches is the true maximum.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

#define EOT "<|endoftext|>"

typedef struct pair {
    int32_t a, b;
    int64_t count, pushed; /* exact count; count of the newest heap entry */
    int32_t *w;            /* words that held this pair (may repeat or be stale) */
    int32_t nw, cw;
    int32_t stamp; /* merge step that last touched it */
} pair;

typedef struct heap_entry {
    int64_t count;
    int32_t a, b, idx;
} heap_entry;

typedef struct trainer {
    chm_err *err;
    pcre2_code *re;
    pcre2_match_data *md;
    chm_bmap counts; /* word bytes -> count */
    int32_t n_words;
    int64_t *wcount; /* [n_words] */
    int32_t *sym, *sym_off, *sym_len, *wstamp;
    chm_bmap pair_of; /* (a, b) as 8 bytes -> index into pairs */
    pair *pairs;
    int32_t n_pairs, cap_pairs;
    heap_entry *heap;
    size_t heap_n, heap_cap;
    int32_t *touched, n_touched, cap_touched;
    chm_bmap tok_of; /* token bytes -> id */
    struct tok {
        uint8_t *s;
        uint32_t n;
    } * tok; /* [n_tok] bytes of each token */
    int32_t n_tok, cap_tok;
    int32_t (*merges)[2]; /* [n_merges] */
    int32_t n_merges, cap_merges;
    int64_t docs, bytes;
} trainer;

static chm_status oom(trainer *T) {
    return CHM_ERR(T->err, CHM_ERR_NOMEM, "out of memory while training the tokenizer");
}

/* Grow *p (of *cap elements of size sz) to hold need elements. */
static int grow(void *pp, int32_t *cap, int32_t need, size_t sz) {
    void **p = pp;
    if (need <= *cap) return 0;
    int32_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) return 1;
    *p = q, *cap = c;
    return 0;
}

/* ---- counting words -------------------------------------------------------------------- */

static chm_status count_word(trainer *T, const char *s, size_t n) {
    int64_t slot;
    bool added;
    if (chm_bmap_put(&T->counts, s, n, &slot, &added)) return oom(T);
    T->counts.val[slot]++;
    return CHM_OK;
}

/* GPT-2 regex words of one piece (gaps are words too, as Isolated splitting keeps them). */
static chm_status count_piece(trainer *T, const char *s, size_t n) {
    size_t prev = 0, pos = 0;
    chm_status rc = CHM_OK;
    while (pos < n && !rc) {
        int m = pcre2_match(T->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, T->md, NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0)
            return CHM_ERR(T->err, CHM_ERR_INTERNAL, "GPT-2 regex failed (%d) while training", m);
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(T->md);
        if (ov[1] == ov[0]) { /* the GPT-2 pattern never matches empty; step a character anyway */
            size_t k = 1;
            if (ov[1] < n) chm_utf8_decode((const uint8_t *)s + ov[1], &k);
            pos = ov[1] + k;
            continue;
        }
        if (prev < ov[0]) rc = count_word(T, s + prev, ov[0] - prev);
        if (!rc) rc = count_word(T, s + ov[0], ov[1] - ov[0]);
        prev = pos = ov[1];
    }
    if (!rc && prev < n) rc = count_word(T, s + prev, n - prev);
    return rc;
}

static chm_status count_doc(void *ctx, const char *text, size_t len) {
    trainer *T = ctx;
    char *fixed = NULL;
    if (chm_utf8_valid_prefix((const uint8_t *)text, len) != len) {
        if (chm_utf8_repair((const uint8_t *)text, len, &fixed, &len)) return oom(T);
        text = fixed;
    }
    T->docs++, T->bytes += (int64_t)len;
    chm_status rc = CHM_OK;
    size_t eot = strlen(EOT);
    while (len && !rc) {
        const char *hit = NULL;
        for (const char *p = memchr(text, '<', len); p;
             p = memchr(p + 1, '<', len - (size_t)(p + 1 - text)))
            if ((size_t)(text + len - p) >= eot && memcmp(p, EOT, eot) == 0) {
                hit = p;
                break;
            }
        size_t n = hit ? (size_t)(hit - text) : len;
        if (n) rc = count_piece(T, text, n);
        if (!hit) break;
        text = hit + eot, len -= n + eot;
    }
    free(fixed);
    return rc;
}

/* ---- pairs ------------------------------------------------------------------------------ */

static int32_t pair_index(trainer *T, int32_t a, int32_t b) {
    int32_t key[2] = {a, b};
    int64_t slot;
    bool added;
    if (chm_bmap_put(&T->pair_of, key, sizeof key, &slot, &added)) return -1;
    if (!added) return (int32_t)T->pair_of.val[slot];
    if (grow(&T->pairs, &T->cap_pairs, T->n_pairs + 1, sizeof *T->pairs)) return -1;
    T->pairs[T->n_pairs] = (pair){a, b, 0, 0, NULL, 0, 0, -1};
    T->pair_of.val[slot] = T->n_pairs;
    return T->n_pairs++;
}

/* Add delta to pair (a, b); remember word w in its list when reg; note increases. */
static chm_status pair_add(trainer *T, int32_t a, int32_t b, int64_t delta, int32_t w, bool reg,
                           int32_t step) {
    int32_t i = pair_index(T, a, b);
    if (i < 0) return oom(T);
    pair *p = &T->pairs[i];
    p->count += delta;
    if (reg) {
        if (grow(&p->w, &p->cw, p->nw + 1, sizeof *p->w)) return oom(T);
        p->w[p->nw++] = w;
    }
    if (delta > 0 && p->stamp != step) {
        p->stamp = step;
        if (grow(&T->touched, &T->cap_touched, T->n_touched + 1, sizeof *T->touched)) return oom(T);
        T->touched[T->n_touched++] = i;
    }
    return CHM_OK;
}

static bool heap_before(const heap_entry *x, const heap_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    return x->a != y->a ? x->a < y->a : x->b < y->b;
}

static chm_status heap_push(trainer *T, int32_t idx) {
    if (T->heap_n == T->heap_cap) {
        size_t c = T->heap_cap ? T->heap_cap * 2 : 1024;
        heap_entry *h = realloc(T->heap, c * sizeof *h);
        if (!h) return oom(T);
        T->heap = h, T->heap_cap = c;
    }
    pair *p = &T->pairs[idx];
    heap_entry v = {p->count, p->a, p->b, idx};
    p->pushed = p->count;
    size_t i = T->heap_n++;
    while (i > 0 && heap_before(&v, &T->heap[(i - 1) / 2])) {
        T->heap[i] = T->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    T->heap[i] = v;
    return CHM_OK;
}

static heap_entry heap_pop(trainer *T) {
    heap_entry top = T->heap[0], v = T->heap[--T->heap_n];
    size_t i = 0, n = T->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(&T->heap[c + 1], &T->heap[c])) c++;
        if (!heap_before(&T->heap[c], &v)) break;
        T->heap[i] = T->heap[c];
        i = c;
    }
    if (n) T->heap[i] = v;
    return top;
}

/* The best pair by true count, or -1 when none is left. */
static int32_t best_pair(trainer *T, chm_status *rc) {
    while (T->heap_n) {
        heap_entry e = heap_pop(T);
        pair *p = &T->pairs[e.idx];
        if (p->count <= 0) continue;
        if (p->count == e.count) return e.idx;
        if (p->count < e.count && (*rc = heap_push(T, e.idx))) return -1;
    }
    return -1;
}

/* ---- tokens and merges ------------------------------------------------------------------ */

/* Id of the token spelled by bytes a + b, creating it when new; -1 when out of memory. */
static int32_t token_for(trainer *T, int32_t a, int32_t b) {
    uint32_t n = T->tok[a].n + T->tok[b].n;
    uint8_t *s = malloc(n);
    if (!s) return -1;
    memcpy(s, T->tok[a].s, T->tok[a].n);
    memcpy(s + T->tok[a].n, T->tok[b].s, T->tok[b].n);
    int64_t slot;
    bool added;
    if (chm_bmap_put(&T->tok_of, s, n, &slot, &added) ||
        (added && grow(&T->tok, &T->cap_tok, T->n_tok + 1, sizeof *T->tok))) {
        free(s);
        return -1;
    }
    if (!added) {
        free(s);
        return (int32_t)T->tok_of.val[slot];
    }
    T->tok[T->n_tok] = (struct tok){s, n};
    T->tok_of.val[slot] = T->n_tok;
    return T->n_tok++;
}

static bool word_has(const trainer *T, int32_t w, int32_t a, int32_t b) {
    const int32_t *s = T->sym + T->sym_off[w];
    for (int32_t i = 0; i + 1 < T->sym_len[w]; i++)
        if (s[i] == a && s[i + 1] == b) return true;
    return false;
}

/* Rewrite word w with every (a, b) -> id, left to right, keeping the pair counts exact:
 * the word's pairs are subtracted before and added back after. */
static chm_status merge_word(trainer *T, int32_t w, int32_t a, int32_t b, int32_t id,
                             int32_t step) {
    int32_t *s = T->sym + T->sym_off[w], n = T->sym_len[w], k = 0;
    int64_t c = T->wcount[w];
    chm_status rc = CHM_OK;
    for (int32_t i = 0; i + 1 < n && !rc; i++) rc = pair_add(T, s[i], s[i + 1], -c, w, false, step);
    for (int32_t i = 0; i < n; i++) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b)
            s[k++] = id, i++;
        else
            s[k++] = s[i];
    }
    T->sym_len[w] = k;
    for (int32_t i = 0; i + 1 < k && !rc; i++)
        rc = pair_add(T, s[i], s[i + 1], c, w, s[i] == id || s[i + 1] == id, step);
    return rc;
}

/* Push a heap entry for every pair whose count grew past its newest entry. */
static chm_status push_touched(trainer *T) {
    chm_status rc = CHM_OK;
    for (int32_t i = 0; i < T->n_touched && !rc; i++) {
        pair *p = &T->pairs[T->touched[i]];
        if (p->count > p->pushed) rc = heap_push(T, T->touched[i]);
    }
    T->n_touched = 0;
    return rc;
}

static chm_status merge_step(trainer *T, int32_t P, int32_t step) {
    int32_t a = T->pairs[P].a, b = T->pairs[P].b, id = token_for(T, a, b);
    if (id < 0 || grow(&T->merges, &T->cap_merges, T->n_merges + 1, sizeof *T->merges))
        return oom(T);
    T->merges[T->n_merges][0] = a, T->merges[T->n_merges][1] = b, T->n_merges++;
    /* detach the word list: merging never adds (a, b) back, and T->pairs may move */
    int32_t *list = T->pairs[P].w, nw = T->pairs[P].nw;
    T->pairs[P].w = NULL, T->pairs[P].nw = T->pairs[P].cw = 0;
    chm_status rc = CHM_OK;
    for (int32_t i = 0; i < nw && !rc; i++) {
        int32_t w = list[i];
        if (T->wstamp[w] == step || !word_has(T, w, a, b)) continue;
        T->wstamp[w] = step;
        rc = merge_word(T, w, a, b, id, step);
    }
    free(list);
    return rc ? rc : push_touched(T);
}

/* ---- setup, the loop, output ------------------------------------------------------------ */

/* The 256 byte tokens, every counted word as byte symbols, and the initial pair counts. */
static chm_status setup(trainer *T) {
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        int64_t slot;
        bool added;
        uint8_t *s = malloc(1);
        if (!s || chm_bmap_put(&T->tok_of, &c, 1, &slot, &added) ||
            grow(&T->tok, &T->cap_tok, T->n_tok + 1, sizeof *T->tok))
            return free(s), oom(T);
        *s = c;
        T->tok[T->n_tok] = (struct tok){s, 1};
        T->tok_of.val[slot] = T->n_tok++;
    }
    size_t nw = T->counts.n, total = 0;
    for (size_t i = 0; i < T->counts.cap; i++) total += T->counts.hash[i] ? T->counts.len[i] : 0;
    T->wcount = malloc(nw * sizeof *T->wcount);
    T->sym = malloc((total ? total : 1) * sizeof *T->sym);
    T->sym_off = malloc(nw * sizeof *T->sym_off), T->sym_len = malloc(nw * sizeof *T->sym_len);
    T->wstamp = malloc(nw * sizeof *T->wstamp);
    if (!T->wcount || !T->sym || !T->sym_off || !T->sym_len || !T->wstamp || total > INT32_MAX)
        return oom(T);
    int32_t w = 0, off = 0;
    chm_status rc = CHM_OK;
    for (size_t i = 0; i < T->counts.cap && !rc; i++) {
        if (!T->counts.hash[i]) continue;
        const uint8_t *k = (const uint8_t *)T->counts.pool + T->counts.off[i];
        T->wcount[w] = T->counts.val[i], T->sym_off[w] = off,
        T->sym_len[w] = (int32_t)T->counts.len[i];
        T->wstamp[w] = -1;
        for (uint32_t j = 0; j < T->counts.len[i]; j++) T->sym[off + (int32_t)j] = k[j];
        for (uint32_t j = 0; j + 1 < T->counts.len[i] && !rc; j++)
            rc = pair_add(T, k[j], k[j + 1], T->wcount[w], w, true, -2);
        off += (int32_t)T->counts.len[i];
        w++;
    }
    T->n_words = w;
    return rc ? rc : push_touched(T);
}

/* The byte-level spelling of token bytes (each byte one character), NUL-terminated. */
static char *bl_string(const uint8_t *s, uint32_t n) {
    uint32_t cp[256];
    chm_bytelevel_tables(cp);
    char *o = malloc(2 * (size_t)n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) k += chm_utf8_encode(cp[s[i]], (uint8_t *)o + k);
    o[k] = '\0';
    return o;
}

static json_t *bytelevel_json(bool add_prefix_space, bool trim_offsets) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                     add_prefix_space, "trim_offsets", trim_offsets, "use_regex", 1);
}

static json_t *model_json(trainer *T, int32_t eos) {
    json_t *vocab = json_object(), *merges = json_array();
    int bad = !vocab || !merges;
    for (int32_t i = 0; i < T->n_tok && !bad; i++) {
        char *k = bl_string(T->tok[i].s, T->tok[i].n);
        bad = !k || json_object_set_new(vocab, k, json_integer(i));
        free(k);
    }
    bad = bad || json_object_set_new(vocab, EOT, json_integer(eos));
    for (int32_t i = 0; i < T->n_merges && !bad; i++) {
        char *a = bl_string(T->tok[T->merges[i][0]].s, T->tok[T->merges[i][0]].n);
        char *b = bl_string(T->tok[T->merges[i][1]].s, T->tok[T->merges[i][1]].n);
        char *m = a && b ? malloc(strlen(a) + strlen(b) + 2) : NULL;
        if (m) sprintf(m, "%s %s", a, b);
        bad = !m || json_array_append_new(merges, json_string(m));
        free(a), free(b), free(m);
    }
    if (bad) return json_decref(vocab), json_decref(merges), NULL;
    return json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                     "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                     "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
}

/* Write the tokenizer.json (to a temporary name, then renamed into place). */
static chm_status write_json(trainer *T, const char *out_path) {
    int32_t eos = T->n_tok;
    json_t *added =
        json_pack("[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}]", "id", eos, "content", EOT, "single_word",
                  0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
    json_t *model = model_json(T, eos);
    json_t *root = added && model
                       ? json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:o, s:o}", "version",
                                   "1.0", "truncation", "padding", "added_tokens", added,
                                   "normalizer", "pre_tokenizer", bytelevel_json(false, true),
                                   "post_processor", bytelevel_json(false, false), "decoder",
                                   bytelevel_json(true, true), "model", model)
                       : NULL;
    if (!root) return json_decref(added), json_decref(model), oom(T);
    size_t n = strlen(out_path);
    char *tmp = malloc(n + 8);
    if (!tmp) return json_decref(root), oom(T);
    snprintf(tmp, n + 8, "%s.tmp", out_path);
    chm_status rc = CHM_OK;
    if (json_dump_file(root, tmp, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0 ||
        rename(tmp, out_path) != 0) {
        remove(tmp);
        rc = CHM_ERR(T->err, CHM_ERR_IO,
                     "%s: cannot write the tokenizer (check the directory exists "
                     "and is writable)",
                     out_path);
    }
    free(tmp);
    json_decref(root);
    return rc;
}

static void trainer_free(trainer *T) {
    pcre2_code_free(T->re);
    pcre2_match_data_free(T->md);
    chm_bmap_free(&T->counts), chm_bmap_free(&T->pair_of), chm_bmap_free(&T->tok_of);
    free(T->wcount), free(T->sym), free(T->sym_off), free(T->sym_len), free(T->wstamp);
    for (int32_t i = 0; i < T->n_pairs; i++) free(T->pairs[i].w);
    free(T->pairs), free(T->heap), free(T->touched), free(T->merges);
    for (int32_t i = 0; i < T->n_tok; i++) free(T->tok[i].s);
    free(T->tok);
}

static chm_status train_check(const char *const *inputs, size_t n_inputs, int32_t vocab_size,
                              const char *out_path, chm_err *err) {
    if (!inputs || !n_inputs || !out_path)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "tokenizer training needs input files and an output path");
    if (vocab_size < 257 || vocab_size > CHM_TOK_MAX_ID)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "vocab size %d is out of range: it counts 256 byte "
                       "tokens, the merges and <|endoftext|>, so use 257..%d",
                       (int)vocab_size, CHM_TOK_MAX_ID);
    return CHM_OK;
}

chm_status chm_tokenizer_train(const char *const *inputs, size_t n_inputs, int32_t vocab_size,
                               const char *out_path, int32_t *n_ids_out, chm_err *err) {
    chm_status rc = train_check(inputs, n_inputs, vocab_size, out_path, err);
    if (rc) return rc;
    trainer T = {.err = err};
    char why[320];
    bool jit;
    if (chm_regex_compile(chm_gpt2_pattern, strlen(chm_gpt2_pattern), false, &T.re, &jit, why,
                          sizeof why))
        return CHM_ERR(err, CHM_ERR_INTERNAL, "cannot compile the GPT-2 regex: %s", why);
    if (!(T.md = pcre2_match_data_create(4, NULL))) rc = oom(&T);
    for (size_t i = 0; i < n_inputs && !rc; i++)
        rc = chm_tok_corpus_read(inputs[i], count_doc, &T, err);
    if (!rc && T.counts.n == 0)
        rc = CHM_ERR(err, CHM_ERR_INVALID_ARG,
                     "the inputs hold no text to train on (%lld documents)", (long long)T.docs);
    if (!rc) rc = setup(&T);
    for (int32_t step = 0; !rc && T.n_tok < vocab_size - 1; step++) {
        int32_t P = best_pair(&T, &rc);
        if (rc || P < 0) break;
        rc = merge_step(&T, P, step);
    }
    if (!rc) rc = write_json(&T, out_path);
    if (!rc && n_ids_out) *n_ids_out = T.n_tok + 1;
    trainer_free(&T);
    return rc;
}
