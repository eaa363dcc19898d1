/*
 * tokenizer_added.c: matching added tokens (tokenizer.json "added_tokens") in text.
 *
 * Hugging Face finds added tokens with an Aho-Corasick automaton in leftmost-longest mode
 * and then applies each token's single_word / lstrip / rstrip flags to the matches
 * (AddedVocabulary::find_matches). A byte trie walked from each position gives the same
 * leftmost-longest matches: at the first position where some pattern matches, the longest
 * one wins, and the search resumes at its end. Patterns and text are valid UTF-8, so
 * matches start on character boundaries.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "data/tokenizer_internal.h"

static chm_status trie_node_new(chm_trie *tr, uint8_t byte, int32_t *out) {
    if (tr->n_nodes == tr->cap) {
        int32_t cap = tr->cap ? tr->cap * 2 : 64;
        chm_trie_node *p = realloc(tr->nodes, (size_t)cap * sizeof *p);
        if (!p) return CHM_ERR_NOMEM;
        tr->nodes = p, tr->cap = cap;
    }
    tr->nodes[tr->n_nodes] = (chm_trie_node){-1, -1, -1, byte};
    *out = tr->n_nodes++;
    return CHM_OK;
}

/* The child of node with this byte (node -1 is the root), created when create is set. */
static chm_status trie_child(chm_trie *tr, int32_t node, uint8_t byte, int32_t *out) {
    int32_t *link = node < 0 ? &tr->root[byte] : &tr->nodes[node].child;
    if (node >= 0) {
        while (*link >= 0 && tr->nodes[*link].byte != byte) link = &tr->nodes[*link].sibling;
    }
    if (*link >= 0) return *out = *link, CHM_OK;
    int32_t fresh;
    if (trie_node_new(tr, byte, &fresh)) return CHM_ERR_NOMEM;
    /* re-derive the link: trie_node_new may have moved the nodes */
    link = node < 0 ? &tr->root[byte] : &tr->nodes[node].child;
    if (node >= 0) {
        while (*link >= 0) link = &tr->nodes[*link].sibling;
    }
    *link = fresh;
    return *out = fresh, CHM_OK;
}

/* Add a pattern; the first token added with a given pattern keeps it (as HF's automaton). */
chm_status chm_trie_add(chm_trie *tr, const char *pattern, size_t plen, int32_t token) {
    if (tr->n_tokens == 0 && tr->n_nodes == 0) {
        for (int i = 0; i < 256; i++) tr->root[i] = -1;
    }
    if (plen == 0) return CHM_OK;
    bool seen = tr->root[(uint8_t)pattern[0]] >= 0;
    if (!seen && tr->n_first < 5) {
        if (tr->n_first < 4) tr->first[tr->n_first] = (uint8_t)pattern[0];
        tr->n_first++;
    }
    int32_t node = -1;
    for (size_t i = 0; i < plen; i++)
        if (trie_child(tr, node, (uint8_t)pattern[i], &node)) return CHM_ERR_NOMEM;
    if (tr->nodes[node].token < 0) tr->nodes[node].token = token;
    tr->n_tokens++;
    return CHM_OK;
}

void chm_trie_free(chm_trie *tr) {
    free(tr->nodes);
    memset(tr, 0, sizeof *tr);
}

/* Longest pattern starting at s[i]: its token and end, or -1. */
static int32_t trie_longest(const chm_trie *tr, const uint8_t *s, size_t n, size_t i, size_t *end) {
    int32_t node = tr->root[s[i]], best = -1;
    size_t j = i + 1;
    while (node >= 0) {
        if (tr->nodes[node].token >= 0) best = tr->nodes[node].token, *end = j;
        if (j >= n) break;
        int32_t c = tr->nodes[node].child;
        while (c >= 0 && tr->nodes[c].byte != s[j]) c = tr->nodes[c].sibling;
        node = c;
        j++;
    }
    return best;
}

/* Nonzero (high bit set in the lowest matching byte first) where a byte of x equals b. */
static uint64_t bytes_equal(uint64_t x, uint8_t b) {
    uint64_t y = x ^ (0x0101010101010101ull * b);
    return (y - 0x0101010101010101ull) & ~y & 0x8080808080808080ull;
}

/* The first position >= i whose byte can start a pattern, or n. Up to four distinct first
 * bytes are searched eight bytes at a time (SWAR); the lowest flagged byte is always a
 * true match because the borrow of the subtraction only runs upwards. */
static size_t next_candidate(const chm_trie *tr, const uint8_t *s, size_t n, size_t i) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (tr->n_first <= 4) {
        while (i + 8 <= n) {
            uint64_t w, m = 0;
            memcpy(&w, s + i, 8); /* byte k of the text is bits 8k..8k+7 */
            for (int k = 0; k < tr->n_first; k++) m |= bytes_equal(w, tr->first[k]);
            if (m) return i + (size_t)__builtin_ctzll(m) / 8;
            i += 8;
        }
    }
#endif
    while (i < n && tr->root[s[i]] < 0) i++;
    return i;
}

/* Unicode White_Space (what Rust's regex \s matches). */
static bool is_space_cp(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust regex \w: letters, marks, decimal digits, connector punctuation (and Nl, Join_Control). */
static bool is_word_cp(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    if (c == 0x200C || c == 0x200D) return true;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ME) || k == UTF8PROC_CATEGORY_ND ||
           k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_PC;
}

/* The code point ending just before s[end] (end > 0, valid UTF-8). */
static uint32_t cp_before(const uint8_t *s, size_t end) {
    size_t i = end - 1, k;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    return chm_utf8_decode(s + i, &k);
}

/* Start of the run of white space that ends at s[end]. */
static size_t space_run_start(const uint8_t *s, size_t end) {
    while (end > 0 && is_space_cp(cp_before(s, end))) {
        end--;
        while (end > 0 && (s[end] & 0xC0) == 0x80) end--;
    }
    return end;
}

/* End of the run of white space that starts at s[i]. */
static size_t space_run_end(const uint8_t *s, size_t n, size_t i) {
    size_t k;
    while (i < n && is_space_cp(chm_utf8_decode(s + i, &k))) i += k;
    return i;
}

/* single_word: the match must not touch a word character on either side. */
static bool single_word_ok(const uint8_t *s, size_t n, size_t a, size_t b) {
    size_t k;
    if (a > 0 && is_word_cp(cp_before(s, a))) return false;
    if (b < n && is_word_cp(chm_utf8_decode(s + b, &k))) return false;
    return true;
}

chm_status chm_added_split(const chm_tokenizer *t, const chm_trie *tr, const char *text, size_t n,
                           chm_piece_fn fn, void *ctx) {
    const uint8_t *s = (const uint8_t *)text;
    if (n == 0) return CHM_OK;
    if (tr->n_tokens == 0) return fn(ctx, text, n, -1);
    size_t done = 0, i = 0; /* done: HF's start_offset */
    chm_status rc;
    while ((i = next_candidate(tr, s, n, i)) < n) {
        size_t stop = 0;
        int32_t k = trie_longest(tr, s, n, i, &stop);
        if (k < 0) {
            i++;
            continue;
        }
        const chm_added *a = &t->added[k];
        size_t start = i;
        i = stop; /* the automaton resumes at the raw match end */
        if (a->single_word && !single_word_ok(s, n, start, stop)) continue;
        if (a->lstrip) {
            size_t ns = space_run_start(s, start);
            start = ns > done ? ns : done;
        }
        if (a->rstrip) stop = space_run_end(s, n, stop);
        if (done < start && (rc = fn(ctx, text + done, start - done, -1))) return rc;
        if ((rc = fn(ctx, text + start, stop - start, a->id))) return rc;
        done = stop;
    }
    if (done < n) return fn(ctx, text + done, n - done, -1);
    return CHM_OK;
}
