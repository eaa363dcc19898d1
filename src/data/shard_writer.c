/*
 * shard_writer.c: documents -> part-XXXXX.npy + part-XXXXX.csv.gz (see shard.h).
 *
 * Shards end at document boundaries: a document that would push the open shard
 * past max_tokens starts a new one (a single document longer than that gets a shard
 * of its own). A shard becomes visible under its final name only when complete and
 * durable: temporary name, fsync, rename, fsync of the directory.
 */
#include "data/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void chm_shard_names(int i, char npy[40], char csv[40]) {
    snprintf(npy, 40, "part-%05d.npy", i);
    snprintf(csv, 40, "part-%05d.csv.gz", i);
}

void chm_shard_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY);
    if (fd < 0) return;
    fsync(fd); /* best effort: some filesystems refuse fsync on directories */
    close(fd);
}

chm_status chm_shard_writer_init(chm_shard_writer *w, const char *dir, chm_token_dtype dtype,
                             int64_t max_tokens, int32_t eos, int32_t vocab,
                             const chm_shard_info *reused, int n_reused, chm_err *err) {
    memset(w, 0, sizeof *w);
    w->dir = dir;
    w->dtype = dtype;
    w->max_tokens = max_tokens;
    w->eos = eos;
    w->vocab = vocab;
    w->csv_fd = -1;
    w->cap_shards = n_reused + 16;
    w->shards = malloc((size_t)w->cap_shards * sizeof *w->shards);
    if (!w->shards) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the shard list");
    if (n_reused) memcpy(w->shards, reused, (size_t)n_reused * sizeof *reused);
    w->n_shards = n_reused;
    w->index = n_reused;
    return CHM_OK;
}

/* Open the temporaries of shard w->index. */
static chm_status open_shard(chm_shard_writer *w, chm_err *err) {
    char npy[40], csv[40];
    chm_shard_names(w->index, npy, csv);
    snprintf(w->tmp_npy, sizeof w->tmp_npy, "%s/.%s.tmp", w->dir, npy);
    snprintf(w->tmp_csv, sizeof w->tmp_csv, "%s/.%s.tmp", w->dir, csv);
    w->npy = fopen(w->tmp_npy, "wb");
    if (!w->npy) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create: %s", w->tmp_npy, strerror(errno));
    setvbuf(w->npy, NULL, _IOFBF, 1 << 20);
    w->csv_fd = open(w->tmp_csv, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int gfd = w->csv_fd >= 0 ? dup(w->csv_fd) : -1; /* gzclose closes its own descriptor */
    w->csv = gfd >= 0 ? gzdopen(gfd, "wb6") : NULL;
    if (!w->csv) {
        if (gfd >= 0) close(gfd);
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create: %s", w->tmp_csv, strerror(errno));
    }
    chm_sha256_init(&w->sha);
    w->tokens = w->documents = 0;
    return CHM_OK;
}

/* Write ids[0..n) in the shard dtype, little-endian, and hash them. */
static chm_status put_tokens(chm_shard_writer *w, const int32_t *ids, size_t n, chm_err *err) {
    int es = chm_token_dtype_size(w->dtype);
    if (w->conv_cap < n * (size_t)es) {
        free(w->conv);
        w->conv_cap = n * (size_t)es + 4096;
        w->conv = malloc(w->conv_cap);
        if (!w->conv) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory to convert tokens");
    }
    unsigned char *p = w->conv;
    for (size_t i = 0; i < n; i++) {
        int32_t v = ids[i];
        if (v < 0 || v >= w->vocab)
            return CHM_ERR(err, CHM_ERR_INTERNAL,
                           "the tokenizer produced id %d outside its vocabulary of %d", (int)v,
                           (int)w->vocab);
        uint32_t u = (uint32_t)v;
        for (int b = 0; b < es; b++) *p++ = (unsigned char)(u >> (8 * b));
    }
    size_t bytes = n * (size_t)es;
    chm_sha256_update(&w->sha, w->conv, bytes);
    if (fwrite(w->conv, 1, bytes, w->npy) != bytes)
        return CHM_ERR(err, CHM_ERR_IO, "%s: write failed: %s", w->tmp_npy, strerror(errno));
    return CHM_OK;
}

/* Append a CSV field, quoted when it holds a comma, quote or line break (RFC 4180). */
static int csv_field(gzFile gz, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) return gzputs(gz, s) >= 0;
    if (gzputc(gz, '"') < 0) return 0;
    for (; *s; s++) {
        if (*s == '"' && gzputc(gz, '"') < 0) return 0;
        if (gzputc(gz, *s) < 0) return 0;
    }
    return gzputc(gz, '"') >= 0;
}

static chm_status put_sidecar(chm_shard_writer *w, int64_t start, int64_t end, const char *path,
                              const char *id, chm_err *err) {
    char nums[64];
    snprintf(nums, sizeof nums, "%lld,%lld,", (long long)start, (long long)end);
    int ok = gzputs(w->csv, nums) >= 0 && csv_field(w->csv, path) && gzputc(w->csv, ',') >= 0 &&
             csv_field(w->csv, id) && gzputc(w->csv, '\n') >= 0;
    if (!ok) return CHM_ERR(err, CHM_ERR_IO, "%s: write failed", w->tmp_csv);
    return CHM_OK;
}

chm_status chm_shard_writer_add(chm_shard_writer *w, const int32_t *ids, size_t n, const char *path,
                            const char *id, int *completed, chm_err *err) {
    chm_status rc;
    int64_t need = (int64_t)n + 1;
    if (w->npy && w->tokens > 0 && w->tokens + need > w->max_tokens) {
        if ((rc = chm_shard_writer_finish(w, err))) return rc;
        *completed = 1;
    }
    if (!w->npy && (rc = open_shard(w, err))) return rc;
    int64_t start = w->tokens;
    if ((rc = put_tokens(w, ids, n, err)) || (rc = put_tokens(w, &w->eos, 1, err))) return rc;
    w->tokens += need;
    w->documents++;
    return put_sidecar(w, start, w->tokens, path, id, err);
}

/* fsync and close the .npy temporary. */
static chm_status close_npy(chm_shard_writer *w, chm_err *err) {
    int bad = fflush(w->npy) != 0 || fsync(fileno(w->npy)) != 0;
    bad |= fclose(w->npy) != 0;
    w->npy = NULL;
    if (bad) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot write/fsync: %s", w->tmp_npy, strerror(errno));
    return CHM_OK;
}

/* Finish the gzip stream, fsync and close the .csv.gz temporary. */
static chm_status close_csv(chm_shard_writer *w, chm_err *err) {
    int bad = gzclose(w->csv) != Z_OK;
    w->csv = NULL;
    bad |= fsync(w->csv_fd) != 0;
    bad |= close(w->csv_fd) != 0;
    w->csv_fd = -1;
    if (bad) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot write/fsync", w->tmp_csv);
    return CHM_OK;
}

/* Record the shard, rename both files into place and make the renames durable. */
static chm_status publish(chm_shard_writer *w, chm_err *err) {
    if (w->n_shards == w->cap_shards) {
        int cap = w->cap_shards * 2;
        chm_shard_info *p = realloc(w->shards, (size_t)cap * sizeof *p);
        if (!p) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the shard list");
        w->shards = p;
        w->cap_shards = cap;
    }
    chm_shard_info *s = &w->shards[w->n_shards];
    memset(s, 0, sizeof *s);
    chm_shard_names(w->index, s->file, s->sidecar);
    s->tokens = w->tokens;
    s->documents = w->documents;
    s->bytes = w->tokens * chm_token_dtype_size(w->dtype);
    chm_sha256_hex(&w->sha, s->sha256);
    chm_status rc = chm_sha256_file(w->tmp_csv, s->sidecar_sha256, NULL, err);
    if (rc) return rc;
    char dst[4200];
    snprintf(dst, sizeof dst, "%s/%s", w->dir, s->sidecar);
    if (rename(w->tmp_csv, dst) != 0)
        return CHM_ERR(err, CHM_ERR_IO, "cannot rename %s to %s: %s", w->tmp_csv, dst, strerror(errno));
    /* The .npy goes last: a .npy under its final name always has its sidecar. */
    snprintf(dst, sizeof dst, "%s/%s", w->dir, s->file);
    if (rename(w->tmp_npy, dst) != 0)
        return CHM_ERR(err, CHM_ERR_IO, "cannot rename %s to %s: %s", w->tmp_npy, dst, strerror(errno));
    chm_shard_fsync_dir(w->dir);
    w->tmp_npy[0] = w->tmp_csv[0] = '\0';
    w->n_shards++;
    w->index++;
    return CHM_OK;
}

chm_status chm_shard_writer_finish(chm_shard_writer *w, chm_err *err) {
    if (!w->npy) return CHM_OK;
    chm_status rc = close_npy(w, err);
    chm_status rc2 = close_csv(w, err);
    if (rc || rc2) return rc ? rc : rc2;
    return publish(w, err);
}

void chm_shard_writer_free(chm_shard_writer *w) {
    if (w->npy) {
        fclose(w->npy);
        w->npy = NULL;
    }
    if (w->csv) gzclose(w->csv);
    if (w->csv_fd >= 0) close(w->csv_fd);
    w->csv = NULL;
    w->csv_fd = -1;
    if (w->tmp_npy[0]) unlink(w->tmp_npy);
    if (w->tmp_csv[0]) unlink(w->tmp_csv);
    free(w->conv);
    free(w->shards);
    memset(w, 0, sizeof *w);
    w->csv_fd = -1;
}
