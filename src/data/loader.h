/*
 * loader.h: token files for the loader: detection of the format (NumPy .npy,
 * llm.c .bin, headerless memmap), size checks, read-only memory maps, and the list
 * of shards in a manifest. Internal to src/data (loader_files.c, loader.c).
 */
#ifndef CHIMERA_DATA_LOADER_H
#define CHIMERA_DATA_LOADER_H

#include "chimera/data.h"

/* llm.c's token-file header: 256 int32, magic first. */
#define LLMC_MAGIC 20240520
#define LLMC_HEADER_BYTES 1024

/* One memory-mapped token file. */
typedef struct chm_tok_file {
    char *path;
    chm_token_dtype dtype;
    int64_t count;              /* tokens in the file */
    int64_t start;              /* index of its first token in the stream */
    const unsigned char *data;  /* first token (inside map) */
    void *map;
    size_t map_len;
} chm_tok_file;

/*
 * Open and map one file. `expect` >= 0 means a headerless shard listed in a manifest
 * with that many tokens of `raw`; otherwise the format comes from the magic bytes
 * (and a .bin name), headerless files taking `raw`. Errors name the file.
 */
chm_status chm_tok_file_open(const char *path, chm_token_dtype raw, int64_t expect, chm_tok_file *f,
                         chm_err *err);
/* Unmap and free the path. */
void chm_tok_file_close(chm_tok_file *f);

/* The shards a manifest lists, in order, with their dtype and token counts. */
typedef struct chm_manifest_files {
    char **paths;               /* [n] malloc'd */
    int64_t *counts;            /* [n] */
    int n;
    chm_token_dtype dtype;
} chm_manifest_files;

/*
 * Read DIR/manifest.json (path is the directory or the manifest); with `verify`, also
 * check every shard's sha256. Refuses a manifest of an unfinished run.
 */
chm_status chm_manifest_files_read(const char *path, int verify, chm_manifest_files *out, chm_err *err);
void chm_manifest_files_free(chm_manifest_files *m);

#endif
