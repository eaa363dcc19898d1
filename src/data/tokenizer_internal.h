/*
 * tokenizer_internal.h: the inside of chm_tokenizer, shared by src/data/tokenizer*.c and
 * src/data/bpe*.c. Not a public header.
 *
 * A BPE tokenizer is loaded once (tokenizer_load.c) and is read-only afterwards; encode state
 * (regex match data, merge scratch, the split lists) lives in a per-call chm_enc and the word
 * cache is per thread (bpe_cache.c), so encode is safe from many threads on one handle.
 *
 * Encode follows Hugging Face tokenizers step by step (tokenizer_encode.c):
 *   repair UTF-8 -> split on non-normalized added tokens -> NFC per piece -> split on
 *   normalized added tokens -> pre-tokenizer steps (Split regexes, then ByteLevel with the
 *   optional GPT-2 regex) -> BPE per word (bpe_merge.c) -> ids.
 *
 * Files: tokenizer.c (public API), tokenizer_byte.c, tokenizer_load.c (tokenizer.json),
 * tokenizer_regex.c (Oniguruma patterns on PCRE2), tokenizer_text.c (UTF-8, NFC),
 * tokenizer_added.c (added tokens), tokenizer_encode.c, tokenizer_corpus.c (train/bench
 * input), bpe_map.c (hash tables), bpe_merge.c, bpe_cache.c, bpe_train.c (the trainer).
 */
#ifndef CHIMERA_DATA_TOKENIZER_INTERNAL_H
#define CHIMERA_DATA_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chimera/tokenizer.h"

enum { CHM_TOK_BYTE = 0, CHM_TOK_BPE = 1 };

/* Largest id a tokenizer.json may use: bounds the tables a hostile file can make us allocate. */
#define CHM_TOK_MAX_ID (1 << 24)
/* Most pre-tokenizer Split steps we run before ByteLevel. */
#define CHM_TOK_MAX_STEPS 8

/* ---- byte strings -> values (bpe_map.c) ------------------------------------------------ */

/* An open-addressing hash map from byte strings to int64 values; keys are copied in. */
typedef struct chm_bmap {
    uint64_t *hash; /* [cap] 0 = empty slot */
    uint32_t *off;  /* [cap] key offset in pool */
    uint32_t *len;  /* [cap] key length */
    int64_t *val;   /* [cap] */
    size_t cap, n;
    char *pool;
    size_t pool_n, pool_cap;
} chm_bmap;

uint64_t chm_bmap_hash(const void *key, size_t len);
/* Find key; returns its slot or -1. */
int64_t chm_bmap_find(const chm_bmap *m, const void *key, size_t len);
/* Insert or find key; *slot is its slot and *added says whether it is new. CHM_ERR_NOMEM on
 * failure. */
chm_status chm_bmap_put(chm_bmap *m, const void *key, size_t len, int64_t *slot, bool *added);
void chm_bmap_free(chm_bmap *m);

/* ---- merges (bpe_merge.c) ------------------------------------------------------------ */

/* The merge table: (left id, right id) -> (rank, merged id), open addressing. */
typedef struct chm_merges {
    uint64_t *key; /* [cap] (a << 32 | b) + 1; 0 = empty */
    int32_t *rank; /* [cap] position in the merges list (lower merges first) */
    int32_t *id;   /* [cap] id of the merged token */
    size_t cap, n;
} chm_merges;

/* A 64-bit finaliser (splitmix-style) for hashing integers. */
static inline uint64_t chm_mix64(uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

/* Slot of the merge (a,b), or -1 when the pair does not merge. */
static inline int64_t chm_merges_find(const chm_merges *m, int32_t a, int32_t b) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)chm_mix64(k) & mask;; i = (i + 1) & mask) {
        if (m->key[i] == k) return (int64_t)i;
        if (!m->key[i]) return -1;
    }
}

/* Room for n_expected distinct pairs (at most half full). */
chm_status chm_merges_init(chm_merges *m, size_t n_expected);
/* Insert (a,b) -> (rank,id); a later insert of the same pair wins, as in HF's HashMap. */
void chm_merges_put(chm_merges *m, int32_t a, int32_t b, int32_t rank, int32_t id);
void chm_merges_free(chm_merges *m);

/* ---- added tokens (tokenizer_added.c) ------------------------------------------------ */

typedef struct chm_added {
    char *content; /* raw UTF-8 content: what decode gives */
    size_t len;
    char *pattern; /* what is matched: content, or NFC(content) for normalized tokens */
    size_t plen;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} chm_added;

/* A byte trie of added-token patterns for leftmost-longest matching. */
typedef struct chm_trie_node {
    int32_t child, sibling; /* first child and next sibling, -1 for none */
    int32_t token;          /* index into chm_tokenizer.added ending here, -1 for none */
    uint8_t byte;
} chm_trie_node;

typedef struct chm_trie {
    int32_t root[256]; /* node of the first byte, -1 for none */
    chm_trie_node *nodes;
    int32_t n_nodes, cap;
    int32_t n_tokens; /* 0: the trie matches nothing */
    uint8_t first[4]; /* the distinct first bytes when n_first <= 4 (fast scanning) */
    int n_first;
} chm_trie;

/* ---- the tokenizer ---------------------------------------------------------------- */

typedef enum chm_split_behavior {
    CHM_SPLIT_REMOVED,
    CHM_SPLIT_ISOLATED,
    CHM_SPLIT_MERGED_PREV,
    CHM_SPLIT_MERGED_NEXT,
    CHM_SPLIT_CONTIGUOUS
} chm_split_behavior;

/* One Split pre-tokenizer step. */
typedef struct chm_pretok_step {
    pcre2_code *re;
    bool jit; /* JIT-compiled: matched with pcre2_jit_match */
    chm_split_behavior behavior;
    bool invert;
} chm_pretok_step;

struct chm_tokenizer {
    int kind; /* CHM_TOK_BYTE or CHM_TOK_BPE */
    char describe[256];
    int32_t n_ids;   /* largest id + 1 */
    int32_t eos;     /* -1 when none */
    uint64_t serial; /* unique per loaded tokenizer: keys the per-thread word caches */

    /* decode: the bytes of every id */
    uint32_t *dec_off; /* [n_ids + 1] */
    uint8_t *dec_bytes;
    uint8_t *dec_has; /* [n_ids] 1 when the id names a token */

    /* model */
    int32_t byte_id[256]; /* id of each single-byte token, -1 if the vocab lacks it */
    chm_merges merges;
    int32_t unk_id; /* -1: bytes without a token are dropped (HF without unk_token) */
    bool fuse_unk;
    bool ignore_merges; /* whole words found in the vocab skip the merges */
    chm_bmap words;     /* token bytes -> id; filled only when ignore_merges */

    /* normalizer */
    bool nfc;
    uint8_t *nfc_unsafe; /* bitmap over code points: 1 = may change under NFC */

    /* added tokens */
    chm_added *added;
    int32_t n_added;
    chm_trie trie_raw, trie_norm;

    /* pre-tokenizer: Split steps, then ByteLevel */
    chm_pretok_step steps[CHM_TOK_MAX_STEPS];
    int n_steps;
    bool add_prefix_space;
    pcre2_code *bl_re; /* GPT-2 regex of ByteLevel(use_regex=true), NULL when false */
    bool bl_jit;
};

/* GPT-2's byte <-> unicode tables. */
void chm_bytelevel_tables(uint32_t byte_to_cp[256]);
/* Byte of a byte-level code point, or -1 when cp is not one of the 256. */
int chm_bytelevel_byte(uint32_t cp);

/* ---- text (tokenizer_text.c) ------------------------------------------------------- */

/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t chm_utf8_valid_prefix(const uint8_t *s, size_t n);
/* Copy s with every maximal ill-formed subsequence replaced by U+FFFD into a malloc'd buffer. */
chm_status chm_utf8_repair(const uint8_t *s, size_t n, char **out, size_t *out_n);
/* Decode one code point of valid UTF-8 at s; *k receives its byte length. */
uint32_t chm_utf8_decode(const uint8_t *s, size_t *k);
/* Encode cp as UTF-8 into out (4 bytes room); returns the length. */
size_t chm_utf8_encode(uint32_t cp, uint8_t *out);
/* Build the NFC quick-check bitmap (see tokenizer_text.c). */
chm_status chm_nfc_table_build(uint8_t **bitmap);
/* true when NFC(s) == s is certain from the bitmap (s is valid UTF-8). */
bool chm_nfc_quick(const uint8_t *bitmap, const uint8_t *s, size_t n);
/* NFC of valid UTF-8 into a malloc'd buffer. */
chm_status chm_nfc(const uint8_t *s, size_t n, char **out, size_t *out_n);

/* ---- added tokens (tokenizer_added.c) -------------------------------------------------- */

chm_status chm_trie_add(chm_trie *tr, const char *pattern, size_t plen, int32_t token);
void chm_trie_free(chm_trie *tr);

/* Called for each piece of a split: token >= 0 is an added-token id, -1 plain text. */
typedef chm_status (*chm_piece_fn)(void *ctx, const char *s, size_t n, int32_t token);
/* HF's AddedVocabulary::find_matches over s with trie tr, then one call per non-empty piece. */
chm_status chm_added_split(const chm_tokenizer *t, const chm_trie *tr, const char *s, size_t n,
                           chm_piece_fn fn, void *ctx);

/* ---- encode (tokenizer_encode.c, bpe_merge.c, bpe_cache.c) --------------------------- */

/* One (start, end, is_match) piece of a regex split. */
typedef struct chm_span {
    uint32_t a, b;
    int32_t match;
} chm_span;

typedef struct chm_spans {
    chm_span *v;
    size_t n, cap;
} chm_spans;

/* A symbol of the word being merged: a doubly linked list over positions. */
typedef struct chm_bpe_sym {
    int32_t id, prev, next, len; /* len 0: merged into its left neighbour */
} chm_bpe_sym;

typedef struct chm_bpe_entry {
    uint32_t rank, pos;
    int32_t new_id;
} chm_bpe_entry;

typedef struct chm_bpe_cache chm_bpe_cache;

/* Per-call encode state. */
typedef struct chm_enc {
    const chm_tokenizer *t;
    chm_ids *out;
    pcre2_match_data *md;
    chm_spans spans[CHM_TOK_MAX_STEPS];
    char *pfx; /* " " + piece for add_prefix_space */
    size_t pfx_cap;
    chm_bpe_sym *sym;
    chm_bpe_entry *heap;
    size_t sym_cap, heap_cap, heap_n;
    chm_bpe_cache *cache; /* this thread's word cache, may be NULL */
    chm_err *err;
} chm_enc;

chm_status chm_bpe_encode(const chm_tokenizer *t, const char *text, size_t len, chm_ids *out,
                          chm_err *err);
/* BPE of one pre-tokenized word (raw bytes); appends its ids to e->out. */
chm_status chm_bpe_word(chm_enc *e, const uint8_t *w, size_t n);
/* Append n ids at once. */
chm_status chm_ids_append(chm_ids *a, const int32_t *ids, size_t n);

/* The calling thread's cache for tokenizer t (created or reset on first use); NULL if out of
 * memory. */
chm_bpe_cache *chm_bpe_cache_get(const chm_tokenizer *t);
/* Look a word up; returns its ids and sets *n, or NULL when absent. */
const int32_t *chm_bpe_cache_find(chm_bpe_cache *c, const uint8_t *w, size_t n, size_t *n_ids);
/* Remember a word's ids (silently skipped when it does not fit). */
void chm_bpe_cache_put(chm_bpe_cache *c, const uint8_t *w, size_t n, const int32_t *ids,
                       size_t n_ids);

/* A fresh serial number for a loaded tokenizer. */
uint64_t chm_tokenizer_next_serial(void);

/* ---- the byte tokenizer (tokenizer_byte.c) ------------------------------------------ */

chm_status chm_byte_create(chm_tokenizer **out, chm_err *err);
chm_status chm_byte_encode(const char *text, size_t len, chm_ids *out, chm_err *err);
chm_status chm_byte_decode(const int32_t *ids, size_t n, char **text_out, size_t *len_out,
                           chm_err *err);

/* ---- load and free (tokenizer_load.c, tokenizer.c) --------------------------------- */

chm_status chm_bpe_load(const char *path, chm_tokenizer **out, chm_err *err);
void chm_bpe_free(chm_tokenizer *t);
chm_status chm_bpe_decode(const chm_tokenizer *t, const int32_t *ids, size_t n, char **text_out,
                          size_t *len_out, chm_err *err);

/* ---- documents for train and bench (tokenizer_corpus.c) ---------------------------- */

typedef chm_status (*chm_doc_fn)(void *ctx, const char *text, size_t len);
/* Call fn for each document of path: each "text" of a .json/.jsonl(.gz/.zst) file, or the
 * lines of any other file joined into pieces of about 1 MiB. */
chm_status chm_tok_corpus_read(const char *path, chm_doc_fn fn, void *ctx, chm_err *err);

/* ---- regexes (tokenizer_regex.c) --------------------------------------------------- */

/* Compile a regex (onig-compatible subset) with UTF/UCP and JIT; literal when is_literal.
 * *jit says whether JIT compilation worked. */
chm_status chm_regex_compile(const char *pattern, size_t len, bool is_literal, pcre2_code **out,
                             bool *jit, char *why, size_t why_n);
/* The GPT-2 pre-tokenizer pattern. */
extern const char chm_gpt2_pattern[];

#endif
