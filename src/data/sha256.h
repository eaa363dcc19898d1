/*
 * sha256.h: SHA-256 (FIPS 180-4) for shard checksums in the token manifest.
 * Internal to src/data; tested against the FIPS example vectors in test_shards.c.
 */
#ifndef CHIMERA_DATA_SHA256_H
#define CHIMERA_DATA_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "chimera/error.h"

/* Running state: zero-initialise with chm_sha256_init. */
typedef struct chm_sha256 {
    uint32_t h[8];          /* chaining value */
    uint64_t bytes;         /* message length so far */
    unsigned char blk[64];  /* pending partial block */
    size_t n;               /* bytes in blk */
} chm_sha256;

/* Start a new digest. */
void chm_sha256_init(chm_sha256 *s);
/* Absorb n bytes. */
void chm_sha256_update(chm_sha256 *s, const void *data, size_t n);
/* Finish: write the digest as 64 lowercase hex digits plus NUL. */
void chm_sha256_hex(chm_sha256 *s, char hex[65]);
/* Digest of a whole file; *size (may be NULL) receives its length in bytes. */
chm_status chm_sha256_file(const char *path, char hex[65], int64_t *size, chm_err *err);

#endif
