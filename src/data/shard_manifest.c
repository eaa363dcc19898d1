/*
 * shard_manifest.c: manifest.json of a token-shard directory, and what an earlier
 * run left there.
 *
 * The manifest is rewritten (atomically) after every completed shard, with status
 * "partial" until the run ends. A later run with the same settings (tokenizer,
 * vocabulary, EOS, dtype, shard size, inputs with their sizes and mtimes) keeps the
 * leading shards whose size and sha256 still match and continues after them.
 */
#include "data/shard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static json_t *stats_json(const chm_dolma_stats *s) {
    json_t *samples = json_array();
    for (int i = 0; i < s->n_samples; i++) json_array_append_new(samples, json_string(s->samples[i]));
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "lines", (json_int_t)chm_dolma_stats_skipped(s),
                     "bad_json", (json_int_t)s->bad_json, "missing_text", (json_int_t)s->missing_text,
                     "bad_utf8", (json_int_t)s->bad_utf8, "empty_text", (json_int_t)s->empty,
                     "blank_lines", (json_int_t)s->blank, "samples", samples);
}

static json_t *shards_json(const chm_shard_info *sh, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "file", sh[i].file,
                                           "sidecar", sh[i].sidecar, "tokens", (json_int_t)sh[i].tokens,
                                           "documents", (json_int_t)sh[i].documents, "bytes",
                                           (json_int_t)sh[i].bytes, "sha256", sh[i].sha256,
                                           "sidecar_sha256", sh[i].sidecar_sha256));
    return a;
}

static json_t *floor_json(const chm_corpus_floor *f) {
    return json_pack("{s:I, s:I, s:f, s:f, s:f, s:f}", "documents", (json_int_t)f->documents, "bytes",
                     (json_int_t)f->bytes, "bits", f->bits, "bits_per_byte", f->bits_per_byte,
                     "nats_per_byte", f->nats_per_byte, "nats_per_byte_token", f->nats_per_byte_token);
}

/* Write text to path atomically: temporary, fsync, rename, fsync of dir. */
static chm_status write_atomic(const char *dir, const char *path, const char *text, chm_err *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/.manifest.json.tmp", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t k = write(fd, text + off, n - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
    int bad = off < n || fsync(fd) != 0;
    bad |= close(fd) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    chm_shard_fsync_dir(dir);
    return CHM_OK;
}

chm_status chm_manifest_write(const char *dir, const chm_manifest_view *v, chm_err *err) {
    json_t *m = json_pack("{s:s, s:i, s:s}", "format", "chimera-token-shards", "version", 1, "status",
                          v->status);
    if (!m) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the manifest");
    json_object_update(m, v->settings);
    json_object_set_new(m, "documents", json_integer(v->documents));
    json_object_set_new(m, "tokens", json_integer(v->tokens));
    json_object_set_new(m, "skipped", stats_json(v->stats));
    json_object_set_new(m, "errors", v->errors ? json_incref(v->errors) : json_array());
    json_object_set_new(m, "shards", shards_json(v->shards, v->n_shards));
    if (v->floor) json_object_set_new(m, "corpus_floor", floor_json(v->floor));
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    if (!text) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the manifest");
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the manifest");
    }
    memcpy(line + n, "\n", 2);
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    chm_status rc = write_atomic(dir, path, line, err);
    free(line);
    return rc;
}

/*
 * Listed shard number i: fields present, named as this writer names shard i
 * (so a manifest can never point a rerun outside dir), files there with the
 * recorded size and sha256.
 */
static int shard_verifies(const char *dir, int i, json_t *j, chm_shard_info *s) {
    const char *file, *sidecar, *sha, *csha;
    json_int_t tokens, docs, bytes;
    if (json_unpack(j, "{s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "file", &file, "sidecar", &sidecar,
                    "tokens", &tokens, "documents", &docs, "bytes", &bytes, "sha256", &sha,
                    "sidecar_sha256", &csha) != 0)
        return 0;
    char want_npy[40], want_csv[40];
    chm_shard_names(i, want_npy, want_csv);
    if (strcmp(file, want_npy) != 0 || strcmp(sidecar, want_csv) != 0 || strlen(sha) != 64 ||
        strlen(csha) != 64 || tokens < 0 || docs < 0)
        return 0;
    char path[4200], hex[65];
    int64_t size;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (chm_sha256_file(path, hex, &size, NULL) || size != bytes || strcmp(hex, sha) != 0) return 0;
    snprintf(path, sizeof path, "%s/%s", dir, sidecar);
    if (chm_sha256_file(path, hex, NULL, NULL) || strcmp(hex, csha) != 0) return 0;
    memset(s, 0, sizeof *s);
    strcpy(s->file, file);
    strcpy(s->sidecar, sidecar);
    s->tokens = tokens;
    s->documents = docs;
    s->bytes = bytes;
    strcpy(s->sha256, sha);
    strcpy(s->sidecar_sha256, csha);
    return 1;
}

/* Whether every key of `want` has an equal value in `have`. */
static int same_settings(json_t *have, json_t *want) {
    const char *key;
    json_t *val;
    json_object_foreach(want, key, val) {
        if (!json_equal(json_object_get(have, key), val)) return 0;
    }
    return 1;
}

chm_status chm_manifest_load_prev(const char *dir, json_t *settings, chm_manifest_prev *out, chm_err *err) {
    memset(out, 0, sizeof *out);
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    if (access(path, F_OK) != 0) return CHM_OK;
    out->exists = 1;
    json_t *m = json_load_file(path, 0, NULL);
    if (!m || !same_settings(m, settings)) {
        json_decref(m);
        return CHM_OK;
    }
    out->same_settings = 1;
    json_t *status = json_object_get(m, "status"), *errors = json_object_get(m, "errors");
    out->complete = json_is_string(status) && strcmp(json_string_value(status), "complete") == 0;
    out->had_errors = json_array_size(errors) > 0;
    out->documents = json_integer_value(json_object_get(m, "documents"));
    out->tokens = json_integer_value(json_object_get(m, "tokens"));
    json_t *shards = json_object_get(m, "shards");
    out->n_listed = (int)json_array_size(shards);
    out->shards = calloc((size_t)out->n_listed + 1, sizeof *out->shards);
    if (!out->shards) {
        json_decref(m);
        return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the shard list");
    }
    /* Only a prefix can be kept: shard i+1 starts where shard i ended. */
    while (out->n_valid < out->n_listed &&
           shard_verifies(dir, out->n_valid, json_array_get(shards, (size_t)out->n_valid),
                          &out->shards[out->n_valid]))
        out->n_valid++;
    json_decref(m);
    return CHM_OK;
}

/* What kind of file `name` is in a shard directory: 1 shard/manifest, 2 temporary, 0 other. */
static int shard_file_kind(const char *name) {
    size_t n = strlen(name);
    if (strcmp(name, "manifest.json") == 0) return 1;
    if (strcmp(name, ".manifest.json.tmp") == 0) return 2;
    if (strncmp(name, ".part-", 6) == 0 && n > 4 && strcmp(name + n - 4, ".tmp") == 0) return 2;
    if (strncmp(name, "part-", 5) != 0) return 0;
    if ((n > 4 && strcmp(name + n - 4, ".npy") == 0) || (n > 7 && strcmp(name + n - 7, ".csv.gz") == 0))
        return 1;
    return 0;
}

int chm_shard_dir_has_shards(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) found = shard_file_kind(e->d_name) == 1;
    closedir(d);
    return found;
}

void chm_shard_dir_clear(const char *dir, int temporaries_only) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4200];
    while ((e = readdir(d))) {
        int kind = shard_file_kind(e->d_name);
        if (kind == 2 || (kind == 1 && !temporaries_only)) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}
