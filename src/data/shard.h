/*
 * shard.h: internals of `chimera tokenize`: the shard writer (shard_writer.c),
 * manifest.json (shard_manifest.c) and progress reporting (shard_progress.c),
 * used by the pipeline in shard_tokenize.c.
 *
 * A shard is two files: part-XXXXX.npy (headerless little-endian tokens, each
 * document followed by EOS) and part-XXXXX.csv.gz ("start,end,path,id" per document,
 * token offsets with end exclusive and the EOS included, as `dolma tokens` writes).
 * Both are written as hidden temporaries (.part-XXXXX.*.tmp), fsynced, renamed, and
 * the directory fsynced; only then does the manifest list the shard.
 */
#ifndef CHIMERA_DATA_SHARD_H
#define CHIMERA_DATA_SHARD_H

#include <jansson.h>
#include <stdio.h>
#include <zlib.h>

#include "chimera/data.h"
#include "data/sha256.h"

/* A complete shard as the manifest lists it. */
typedef struct chm_shard_info {
    char file[40];          /* part-XXXXX.npy */
    char sidecar[40];       /* part-XXXXX.csv.gz */
    int64_t tokens, documents, bytes;
    char sha256[65];        /* of the .npy */
    char sidecar_sha256[65];
} chm_shard_info;

/* Writes documents into consecutive shards. */
typedef struct chm_shard_writer {
    const char *dir;
    chm_token_dtype dtype;
    int64_t max_tokens;     /* a shard is closed before it would pass this */
    int32_t eos, vocab;
    int index;              /* number of the open (or next) shard */
    FILE *npy;              /* open temporary .npy, or NULL between shards */
    int csv_fd;
    gzFile csv;
    char tmp_npy[4096], tmp_csv[4096];
    chm_sha256 sha;
    int64_t tokens, documents;
    unsigned char *conv;    /* little-endian conversion buffer */
    size_t conv_cap;
    chm_shard_info *shards;     /* completed shards, reused ones included */
    int n_shards, cap_shards;
} chm_shard_writer;

/* Start writing at shard number `first` after the `n_reused` shards in reused[]. */
chm_status chm_shard_writer_init(chm_shard_writer *w, const char *dir, chm_token_dtype dtype,
                             int64_t max_tokens, int32_t eos, int32_t vocab,
                             const chm_shard_info *reused, int n_reused, chm_err *err);
/*
 * Append one document (its ids, then EOS) with its sidecar line. *completed is set to 1
 * when a shard was closed first to make room (the caller then rewrites the manifest).
 */
chm_status chm_shard_writer_add(chm_shard_writer *w, const int32_t *ids, size_t n, const char *path,
                            const char *id, int *completed, chm_err *err);
/* Close the open shard, if it has any document. */
chm_status chm_shard_writer_finish(chm_shard_writer *w, chm_err *err);
/* Drop the open shard's temporaries and free the writer (after finish or on failure). */
void chm_shard_writer_free(chm_shard_writer *w);

/* fsync a directory so that renames in it are durable. */
void chm_shard_fsync_dir(const char *dir);
/* "part-%05d.npy" and "part-%05d.csv.gz" names of shard i. */
void chm_shard_names(int i, char npy[40], char csv[40]);

/* Everything manifest.json records. `settings` decides whether a later run may resume. */
typedef struct chm_manifest_view {
    json_t *settings;          /* tokenizer, vocab_size, eos, dtype, shard_tokens, inputs|corpus */
    const char *status;        /* "partial" or "complete" */
    int64_t documents, tokens;
    const chm_dolma_stats *stats;
    json_t *errors;            /* array of strings (may be NULL) */
    const chm_shard_info *shards;
    int n_shards;
    const chm_corpus_floor *floor; /* may be NULL */
} chm_manifest_view;

/* Write dir/manifest.json atomically (temporary, fsync, rename, fsync dir). */
chm_status chm_manifest_write(const char *dir, const chm_manifest_view *v, chm_err *err);

/* What an earlier run left in dir. */
typedef struct chm_manifest_prev {
    int exists;                /* manifest.json was there and readable */
    int same_settings;         /* and its settings equal the new ones */
    int complete, had_errors;
    chm_shard_info *shards;        /* the leading shards that verify (size + sha256), malloc'd */
    int n_valid, n_listed;
    int64_t documents, tokens; /* totals recorded (meaningful when complete) */
} chm_manifest_prev;

/* Read dir/manifest.json (if any) and verify its shards against the files. */
chm_status chm_manifest_load_prev(const char *dir, json_t *settings, chm_manifest_prev *out, chm_err *err);
/* Whether dir holds part-*.npy / part-*.csv.gz files or a manifest. */
int chm_shard_dir_has_shards(const char *dir);
/* Delete part-*.npy, part-*.csv.gz, their temporaries and manifest.json from dir. */
void chm_shard_dir_clear(const char *dir, int temporaries_only);

/* Progress on stderr: a bar on a terminal, a plain line every few seconds otherwise. */
typedef struct chm_progress {
    int enabled, tty;
    double t0, last;
    int64_t total;             /* expected input bytes (0: unknown) */
    int drawn;                 /* a bar is on screen */
} chm_progress;

void chm_progress_start(chm_progress *p, int enabled, int64_t total);
/* Report done input bytes, documents and tokens (rate-limited inside). */
void chm_progress_update(chm_progress *p, int64_t done, int64_t docs, int64_t tokens);
/* Clear the bar (the caller prints its own summary). */
void chm_progress_end(chm_progress *p);
/* Seconds on a monotonic clock. */
double chm_progress_now(void);

#endif
