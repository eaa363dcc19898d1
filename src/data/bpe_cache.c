/*
 * bpe_cache.c: a per-thread cache of word -> ids for BPE encode.
 *
 * Each thread owns one cache (a POSIX thread-specific value, freed when the thread exits),
 * tagged with the serial number of the tokenizer that filled it; a thread that switches
 * tokenizers resets it. No locks: the loaded tokenizer stays read-only and the cache is
 * never shared. The cache is bounded (about 1.5 MiB per thread: 32768 slots of 16 bytes and
 * a 1 MiB pool of keys and ids): when its slots or its pool fill up it is cleared whole,
 * which only costs speed (results never depend on the cache).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

#define CACHE_SLOTS 32768     /* power of two; at most 3/4 used */
#define CACHE_POOL (1u << 20) /* key bytes + ids */
#define CACHE_MAX_WORD 64     /* longer words are not cached */

typedef struct cache_slot {
    uint64_t hash; /* 0 = empty */
    uint32_t off;  /* key bytes at pool[off], then the ids (4-byte aligned) */
    uint16_t len, n_ids;
} cache_slot;

struct chm_bpe_cache {
    uint64_t owner;
    uint32_t used;
    uint32_t pool_n;
    cache_slot slot[CACHE_SLOTS];
    uint8_t pool[CACHE_POOL];
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_ok;
static atomic_uint_fast64_t serial_counter = 1;

uint64_t chm_tokenizer_next_serial(void) { return atomic_fetch_add(&serial_counter, 1); }

static void cache_destroy(void *p) { free(p); }

static void cache_key_init(void) {
    cache_key_ok = pthread_key_create(&cache_key, cache_destroy) == 0;
}

static void cache_reset(chm_bpe_cache *c, uint64_t owner) {
    c->owner = owner;
    c->used = 0;
    c->pool_n = 0;
    memset(c->slot, 0, sizeof c->slot);
}

chm_bpe_cache *chm_bpe_cache_get(const chm_tokenizer *t) {
    pthread_once(&cache_once, cache_key_init);
    if (!cache_key_ok) return NULL;
    chm_bpe_cache *c = pthread_getspecific(cache_key);
    if (!c) {
        c = malloc(sizeof *c);
        if (!c) return NULL;
        if (pthread_setspecific(cache_key, c)) {
            free(c);
            return NULL;
        }
        cache_reset(c, t->serial);
    }
    if (c->owner != t->serial) cache_reset(c, t->serial);
    return c;
}

const int32_t *chm_bpe_cache_find(chm_bpe_cache *c, const uint8_t *w, size_t n, size_t *n_ids) {
    if (n > CACHE_MAX_WORD) return NULL;
    uint64_t h = chm_bmap_hash(w, n);
    for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const cache_slot *s = &c->slot[i];
        if (!s->hash) return NULL;
        if (s->hash == h && s->len == n && memcmp(c->pool + s->off, w, n) == 0) {
            *n_ids = s->n_ids;
            return (const int32_t *)(const void *)(c->pool + ((s->off + n + 3) & ~3u));
        }
    }
}

void chm_bpe_cache_put(chm_bpe_cache *c, const uint8_t *w, size_t n, const int32_t *ids,
                       size_t n_ids) {
    if (n > CACHE_MAX_WORD || n_ids > n) return;
    uint32_t ids_off = (c->pool_n + (uint32_t)n + 3) & ~3u;
    uint32_t end = ids_off + (uint32_t)(n_ids * sizeof *ids);
    if (end > CACHE_POOL || 4 * (c->used + 1) > 3 * CACHE_SLOTS) {
        cache_reset(c, c->owner);
        ids_off = ((uint32_t)n + 3) & ~3u;
        end = ids_off + (uint32_t)(n_ids * sizeof *ids);
    }
    uint64_t h = chm_bmap_hash(w, n);
    uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);
    while (c->slot[i].hash) i = (i + 1) & (CACHE_SLOTS - 1);
    c->slot[i] = (cache_slot){h, c->pool_n, (uint16_t)n, (uint16_t)n_ids};
    memcpy(c->pool + c->pool_n, w, n);
    memcpy(c->pool + ids_off, ids, n_ids * sizeof *ids);
    c->pool_n = end;
    c->used++;
}
