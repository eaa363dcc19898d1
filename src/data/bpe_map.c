/*
 * bpe_map.c: the two hash tables of the tokenizer: byte strings -> int64 (chm_bmap: vocab
 * lookups, trainer word counts) and id pairs -> (rank, merged id) (chm_merges: the BPE merges).
 * Both are open addressing with linear probing over power-of-two capacities kept at most
 * half full, so a lookup is a multiply, a mask and usually one probe.
 */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

/* A fast non-cryptographic hash of a byte string; never 0 (0 marks empty slots). */
uint64_t chm_bmap_hash(const void *key, size_t len) {
    const uint8_t *p = key;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (len * 0xff51afd7ed558ccdull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = chm_mix64(h ^ w) + 0x2545F4914F6CDD1Dull;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < len; i++) w |= (uint64_t)p[i] << (8 * i);
    h = chm_mix64(h ^ w ^ 0x1234567ull);
    return h ? h : 1;
}

int64_t chm_bmap_find(const chm_bmap *m, const void *key, size_t len) {
    if (!m->cap) return -1;
    uint64_t h = chm_bmap_hash(key, len);
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        if (m->hash[i] == 0) return -1;
        if (m->hash[i] == h && m->len[i] == len && memcmp(m->pool + m->off[i], key, len) == 0)
            return (int64_t)i;
    }
}

/* Double the slot arrays (or create them) and reinsert every key. */
static chm_status bmap_grow(chm_bmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint64_t *hash = calloc(cap, sizeof *hash);
    uint32_t *off = malloc(cap * sizeof *off), *len = malloc(cap * sizeof *len);
    int64_t *val = malloc(cap * sizeof *val);
    if (!hash || !off || !len || !val) {
        free(hash), free(off), free(len), free(val);
        return CHM_ERR_NOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->hash[i]) continue;
        size_t j = (size_t)m->hash[i] & (cap - 1);
        while (hash[j]) j = (j + 1) & (cap - 1);
        hash[j] = m->hash[i], off[j] = m->off[i], len[j] = m->len[i], val[j] = m->val[i];
    }
    free(m->hash), free(m->off), free(m->len), free(m->val);
    m->hash = hash, m->off = off, m->len = len, m->val = val, m->cap = cap;
    return CHM_OK;
}

/* Copy a key into the pool; keys stay below 4 GiB in total (offsets are 32-bit). */
static chm_status bmap_store_key(chm_bmap *m, const void *key, size_t len, uint32_t *off) {
    if (m->pool_n + len > UINT32_MAX) return CHM_ERR_NOMEM;
    if (m->pool_n + len > m->pool_cap) {
        size_t cap = m->pool_cap ? m->pool_cap : 4096;
        while (cap < m->pool_n + len) cap *= 2;
        char *p = realloc(m->pool, cap);
        if (!p) return CHM_ERR_NOMEM;
        m->pool = p, m->pool_cap = cap;
    }
    if (len) memcpy(m->pool + m->pool_n, key, len);
    *off = (uint32_t)m->pool_n;
    m->pool_n += len;
    return CHM_OK;
}

chm_status chm_bmap_put(chm_bmap *m, const void *key, size_t len, int64_t *slot, bool *added) {
    int64_t i = chm_bmap_find(m, key, len);
    if (i >= 0) {
        *slot = i, *added = false;
        return CHM_OK;
    }
    if (len > UINT32_MAX) return CHM_ERR_NOMEM;
    if (2 * (m->n + 1) > m->cap && bmap_grow(m)) return CHM_ERR_NOMEM;
    uint32_t off;
    if (bmap_store_key(m, key, len, &off)) return CHM_ERR_NOMEM;
    uint64_t h = chm_bmap_hash(key, len);
    size_t mask = m->cap - 1, j = (size_t)h & mask;
    while (m->hash[j]) j = (j + 1) & mask;
    m->hash[j] = h, m->off[j] = off, m->len[j] = (uint32_t)len, m->val[j] = 0;
    m->n++;
    *slot = (int64_t)j, *added = true;
    return CHM_OK;
}

void chm_bmap_free(chm_bmap *m) {
    free(m->hash), free(m->off), free(m->len), free(m->val), free(m->pool);
    memset(m, 0, sizeof *m);
}

/* ---- merges -------------------------------------------------------------------------- */

chm_status chm_merges_init(chm_merges *m, size_t n_expected) {
    size_t cap = 64;
    while (cap < 2 * n_expected + 2) cap *= 2;
    m->key = calloc(cap, sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->id = malloc(cap * sizeof *m->id);
    m->cap = cap, m->n = 0;
    if (!m->key || !m->rank || !m->id) {
        chm_merges_free(m);
        return CHM_ERR_NOMEM;
    }
    return CHM_OK;
}

/* The caller sized the table for every pair it puts (chm_merges_init). */
void chm_merges_put(chm_merges *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t mask = m->cap - 1, i = (size_t)chm_mix64(k) & mask;
    while (m->key[i] && m->key[i] != k) i = (i + 1) & mask;
    if (!m->key[i]) m->n++;
    m->key[i] = k, m->rank[i] = rank, m->id[i] = id;
}

void chm_merges_free(chm_merges *m) {
    free(m->key), free(m->rank), free(m->id);
    memset(m, 0, sizeof *m);
}
