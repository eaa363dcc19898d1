/*
 * bpe_merge.c: byte-pair encoding of one pre-tokenized word.
 *
 * The word's bytes become symbols (the single-byte tokens), then pairs merge in order of
 * rank exactly as Hugging Face's Word::merge_all does it: a min-heap of (rank, position)
 * entries; a popped entry is skipped when its left symbol is gone, is last, or no longer
 * forms a pair that merges into the same id; after a merge the pairs with the new
 * neighbours are pushed. Matching that procedure (not just "lowest rank first") keeps the
 * ids identical even for merge lists where several pairs produce one token.
 *
 * Results of words up to CHM_BPE_CACHE_MAX_WORD bytes go to the per-thread cache.
 */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

/* Make room for n more ids in out. */
static chm_status ids_reserve(chm_ids *a, size_t n) {
    if (a->n + n <= a->cap) return CHM_OK;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->n + n) cap *= 2;
    int32_t *p = realloc(a->ids, cap * sizeof *p);
    if (!p) return CHM_ERR_NOMEM;
    a->ids = p, a->cap = cap;
    return CHM_OK;
}

chm_status chm_ids_append(chm_ids *a, const int32_t *ids, size_t n) {
    if (ids_reserve(a, n)) return CHM_ERR_NOMEM;
    memcpy(a->ids + a->n, ids, n * sizeof *ids);
    a->n += n;
    return CHM_OK;
}

static bool entry_less(const chm_bpe_entry *x, const chm_bpe_entry *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(chm_enc *e, chm_bpe_entry v) {
    size_t i = e->heap_n++;
    chm_bpe_entry *h = e->heap;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!entry_less(&v, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static chm_bpe_entry heap_pop(chm_enc *e) {
    chm_bpe_entry *h = e->heap, top = h[0], v = h[--e->heap_n];
    size_t n = e->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && entry_less(&h[c + 1], &h[c])) c++;
        if (!entry_less(&h[c], &v)) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = v;
    return top;
}

/* Push the merge of the pair starting at pos (pos and its next), if that pair merges. */
static void push_pair(chm_enc *e, int32_t pos) {
    const chm_bpe_sym *s = e->sym;
    if (pos < 0 || s[pos].next < 0) return;
    int64_t k = chm_merges_find(&e->t->merges, s[pos].id, s[s[pos].next].id);
    if (k < 0) return;
    chm_bpe_entry v = {(uint32_t)e->t->merges.rank[k], (uint32_t)pos, e->t->merges.id[k]};
    heap_push(e, v);
}

/* Grow the symbol and heap scratch to hold a word of n bytes (heap: <= 2 pushes per merge). */
static chm_status scratch_reserve(chm_enc *e, size_t n) {
    if (n > e->sym_cap) {
        size_t cap = n < 64 ? 64 : n;
        chm_bpe_sym *s = realloc(e->sym, cap * sizeof *s);
        if (!s) return CHM_ERR_NOMEM;
        e->sym = s, e->sym_cap = cap;
    }
    if (3 * n > e->heap_cap) {
        size_t cap = 3 * n < 192 ? 192 : 3 * n;
        chm_bpe_entry *h = realloc(e->heap, cap * sizeof *h);
        if (!h) return CHM_ERR_NOMEM;
        e->heap = h, e->heap_cap = cap;
    }
    return CHM_OK;
}

/* The initial symbols: one per byte; bytes without a token become unk or are dropped (as HF). */
static int32_t word_symbols(chm_enc *e, const uint8_t *w, size_t n) {
    const chm_tokenizer *t = e->t;
    int32_t ns = 0;
    bool prev_unk = false;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        bool unk = id < 0;
        if (unk) {
            if (t->unk_id < 0) continue;
            if (t->fuse_unk && prev_unk) continue;
            id = t->unk_id;
        }
        prev_unk = unk;
        e->sym[ns] = (chm_bpe_sym){id, ns - 1, -1, 1};
        if (ns > 0) e->sym[ns - 1].next = ns;
        ns++;
    }
    return ns;
}

/* HF's Word::merge_all (without dropout). */
static void merge_all(chm_enc *e, int32_t ns) {
    chm_bpe_sym *s = e->sym;
    e->heap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) push_pair(e, i);
    while (e->heap_n) {
        chm_bpe_entry top = heap_pop(e);
        int32_t p = (int32_t)top.pos;
        if (s[p].len == 0 || s[p].next < 0) continue;
        int32_t r = s[p].next;
        int64_t k = chm_merges_find(&e->t->merges, s[p].id, s[r].id);
        if (k < 0 || e->t->merges.id[k] != top.new_id) continue; /* stale entry */
        s[p].id = top.new_id;
        s[p].len += s[r].len;
        s[p].next = s[r].next;
        s[r].len = 0;
        if (s[r].next >= 0) s[s[r].next].prev = p;
        push_pair(e, s[p].prev);
        push_pair(e, p);
    }
}

chm_status chm_bpe_word(chm_enc *e, const uint8_t *w, size_t n) {
    const chm_tokenizer *t = e->t;
    chm_ids *out = e->out;
    if (n == 1 && t->byte_id[w[0]] >= 0) return chm_ids_append(out, &t->byte_id[w[0]], 1);
    if (t->ignore_merges) {
        int64_t k = chm_bmap_find(&t->words, w, n);
        if (k >= 0) {
            int32_t id = (int32_t)t->words.val[k];
            return chm_ids_append(out, &id, 1);
        }
    }
    size_t n_ids;
    const int32_t *hit = e->cache ? chm_bpe_cache_find(e->cache, w, n, &n_ids) : NULL;
    if (hit) return chm_ids_append(out, hit, n_ids);
    if (scratch_reserve(e, n) || ids_reserve(out, n)) return CHM_ERR_NOMEM;
    int32_t ns = word_symbols(e, w, n);
    if (ns == 0) return CHM_OK;
    merge_all(e, ns);
    size_t start = out->n;
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) out->ids[out->n++] = e->sym[i].id;
    if (e->cache) chm_bpe_cache_put(e->cache, w, n, out->ids + start, out->n - start);
    return CHM_OK;
}
