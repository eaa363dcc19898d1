/*
 * rng.c: the keyed counter-based generator of chimera/rng.h.
 *
 * chm_rng_at(key, i) = mix(mix(key + (i+1)*golden) ^ key), where mix is the
 * splitmix64 finaliser (a bijection of 64-bit words with full avalanche).
 * Two rounds separated by the key make neighbouring counters and
 * neighbouring keys independent for every practical purpose (weights init).
 */
#include "chimera/rng.h"

#include <math.h>

#define GOLDEN 0x9E3779B97F4A7C15ull

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t chm_rng_hash(const char *s) {
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a offset basis */
    for (; s && *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001B3ull;
    }
    return mix64(h);
}

chm_rng chm_rng_keyed(uint64_t seed, const char *name) {
    chm_rng r = {mix64(mix64(seed + GOLDEN) ^ chm_rng_hash(name)), 0};
    return r;
}

uint64_t chm_rng_at(uint64_t key, uint64_t counter) {
    return mix64(mix64(key + (counter + 1) * GOLDEN) ^ key);
}

uint64_t chm_rng_u64(chm_rng *r) { return chm_rng_at(r->key, r->counter++); }

double chm_rng_uniform(chm_rng *r) {
    return (double)(chm_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

double chm_rng_normal(chm_rng *r) {
    /* u1 in (0, 1] so that log(u1) is finite */
    double u1 = ((double)(chm_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = chm_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
