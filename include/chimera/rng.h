/*
 * chimera/rng.h: a counter-based random generator keyed by (seed, name).
 *
 * Value i of a stream is a pure function of the stream's 64-bit key and of i
 * (a splitmix64-style mixing of key and counter, in the spirit of Philox):
 * there is no hidden state to advance, so any element can be drawn on its
 * own, in any order, on any machine, with the same result. Keys come from a
 * seed and a name (e.g. a parameter's "layers.3.mixer.in_proj.weight"), so
 * every parameter gets its own stream and adding a parameter never shifts
 * the values of another. Not cryptographic.
 * Thread safety: the functions are pure; a chm_rng value belongs to its user.
 */
#ifndef CHIMERA_RNG_H
#define CHIMERA_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A stream: its key and the index of the next value. */
typedef struct chm_rng {
    uint64_t key;
    uint64_t counter;
} chm_rng;

/* 64-bit hash of a NUL-terminated string (FNV-1a, then mixed). */
uint64_t chm_rng_hash(const char *s);

/* The stream of (seed, name), starting at counter 0. name may be NULL (seed only). */
chm_rng chm_rng_keyed(uint64_t seed, const char *name);

/* Value number `counter` of the stream with key `key`: 64 uniform bits. */
uint64_t chm_rng_at(uint64_t key, uint64_t counter);

/* The next 64 bits of r (advances the counter by one). */
uint64_t chm_rng_u64(chm_rng *r);

/* Uniform in [0, 1) with 53 random bits (one counter). */
double chm_rng_uniform(chm_rng *r);

/* Standard normal by Box-Muller (two counters per value; no cached second value). */
double chm_rng_normal(chm_rng *r);

#ifdef __cplusplus
}
#endif
#endif
