/*
 * loader_files.c: opening token files for the loader (see loader.h).
 *
 * Every header field is checked against the file length before anything is read
 * through the map: a truncated file, a file with bytes past its announced end, a
 * wrong magic or an unsupported dtype is a CHM_ERR_PARSE that names the file.
 */
#include "data/loader.h"
#include "data/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The data must be exactly count tokens after `offset` bytes. */
static chm_status check_size(const chm_tok_file *f, int64_t offset, int64_t size, const char *what,
                             chm_err *err) {
    int es = chm_token_dtype_size(f->dtype);
    if (f->count < 0 || f->count > (INT64_MAX - offset) / es)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: %s announces an impossible %lld tokens", f->path, what,
                       (long long)f->count);
    int64_t want = offset + f->count * es;
    if (size < want)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: truncated: %s announces %lld %s tokens (%lld bytes) but the file has %lld "
                       "bytes; re-create or re-download it",
                       f->path, what, (long long)f->count, chm_token_dtype_name(f->dtype),
                       (long long)want, (long long)size);
    if (size > want)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: %lld bytes past the %lld tokens that %s announces",
                       f->path, (long long)(size - want), (long long)f->count, what);
    return CHM_OK;
}

/* llm.c .bin: magic, version (1 uint16, 2 uint32), token count. */
static chm_status parse_llmc(chm_tok_file *f, const unsigned char *m, int64_t size, int64_t *offset,
                             chm_err *err) {
    if (size < LLMC_HEADER_BYTES)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: %lld bytes, shorter than the 1024-byte llm.c header",
                       f->path, (long long)size);
    int32_t magic = (int32_t)le32(m), version = (int32_t)le32(m + 4);
    if (magic != LLMC_MAGIC)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: wrong magic %d: an llm.c token file starts with %d (is it a headerless "
                       "shard? name it .npy or list it in a manifest)",
                       f->path, (int)magic, LLMC_MAGIC);
    if (version != 1 && version != 2)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: llm.c token file version %d; expected 1 (uint16) or 2 (uint32)", f->path,
                       (int)version);
    f->dtype = version == 1 ? CHM_TOKENS_U16 : CHM_TOKENS_U32;
    f->count = (int64_t)le32(m + 8);
    *offset = LLMC_HEADER_BYTES;
    return check_size(f, *offset, size, "its llm.c header", err);
}

/* Find the format and the data offset of the mapped file. */
static chm_status detect(chm_tok_file *f, const unsigned char *m, int64_t size, chm_token_dtype raw,
                         int64_t expect, int64_t *offset, chm_err *err) {
    *offset = 0;
    f->dtype = raw;
    if (expect >= 0) { /* a manifest shard: headerless, known length */
        f->count = expect;
        return check_size(f, 0, size, "the manifest", err);
    }
    if (size >= 6 && memcmp(m, "\x93NUMPY", 6) == 0) {
        chm_npy_header h;
        chm_status rc = chm_npy_parse(m, (size_t)size, f->path, &h, err);
        if (rc) return rc;
        f->dtype = h.dtype;
        f->count = h.count;
        *offset = h.data_offset;
        return check_size(f, *offset, size, "its .npy header", err);
    }
    /* A .npy whose magic is damaged would otherwise read as a headerless memmap of
     * garbage tokens: refuse what is one byte away from the magic. */
    if (size >= 6 && (memcmp(m + 1, "NUMPY", 5) == 0 || memcmp(m, "\x93NUMP", 5) == 0))
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: wrong magic %02x %02x %02x %02x %02x %02x: it starts like a NumPy .npy "
                       "file but a .npy starts with 93 4e 55 4d 50 59 (\\x93NUMPY); the header is "
                       "damaged: re-create the file",
                       f->path, m[0], m[1], m[2], m[3], m[4], m[5]);
    if (ends_with(f->path, ".bin") || (size >= 4 && le32(m) == LLMC_MAGIC))
        return parse_llmc(f, m, size, offset, err);
    int es = chm_token_dtype_size(raw);
    if (size % es)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: %lld bytes is not a whole number of %s tokens (truncated?)", f->path,
                       (long long)size, chm_token_dtype_name(raw));
    f->count = size / es;
    return CHM_OK;
}

chm_status chm_tok_file_open(const char *path, chm_token_dtype raw, int64_t expect, chm_tok_file *f,
                         chm_err *err) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory", path);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        chm_status rc = CHM_ERR(err, CHM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return CHM_ERR(err, CHM_ERR_IO,
                       "%s: not a regular file (a directory needs a manifest.json; for dolma "
                       "shards pass a glob such as DIR/*.npy)",
                       path);
    }
    if (st.st_size > 0) {
        f->map_len = (size_t)st.st_size;
        f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            chm_status rc = CHM_ERR(err, CHM_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
            close(fd);
            return rc;
        }
        posix_madvise(f->map, f->map_len, POSIX_MADV_RANDOM); /* windows come in random order */
    }
    close(fd); /* the map keeps the file */
    int64_t offset;
    static const unsigned char empty[1];
    const unsigned char *m = f->map ? f->map : empty;
    chm_status rc = detect(f, m, (int64_t)st.st_size, raw, expect, &offset, err);
    if (rc) return rc;
    f->data = m + offset;
    return CHM_OK;
}

void chm_tok_file_close(chm_tok_file *f) {
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ---- manifests --------------------------------------------------------------------- */

void chm_manifest_files_free(chm_manifest_files *m) {
    for (int i = 0; i < m->n; i++) free(m->paths[i]);
    free(m->paths);
    free(m->counts);
    memset(m, 0, sizeof *m);
}

/*
 * Whether a manifest's shard name stays inside the manifest's directory: a
 * relative path (subdirectories allowed) with no "." or ".." component and
 * no empty one. Symbolic links placed in the directory are the user's
 * choice and are followed.
 */
static int shard_name_inside(const char *file) {
    if (!*file || *file == '/') return 0;
    for (const char *p = file; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
        p += n;
        if (*p == '/') p++;
        if (*p == '\0' && p[-1] == '/') return 0;
    }
    return 1;
}

/* Fill the shard list from the parsed manifest `j` of directory dir. */
static chm_status read_shards(json_t *j, const char *dir, const char *mpath, int verify,
                              chm_manifest_files *out, chm_err *err) {
    json_t *shards = json_object_get(j, "shards");
    size_t n = json_array_size(shards);
    out->paths = calloc(n + 1, sizeof *out->paths);
    out->counts = calloc(n + 1, sizeof *out->counts);
    if (!out->paths || !out->counts) return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory", mpath);
    for (size_t i = 0; i < n; i++) {
        const char *file, *sha;
        json_int_t tokens;
        if (json_unpack(json_array_get(shards, i), "{s:s, s:I, s:s}", "file", &file, "tokens", &tokens,
                        "sha256", &sha) != 0 || tokens < 0)
            return CHM_ERR(err, CHM_ERR_PARSE, "%s: shard %zu lacks file, tokens or sha256", mpath, i);
        if (!shard_name_inside(file))
            return CHM_ERR(err, CHM_ERR_PARSE,
                           "%s: shard %zu's file '%.200s' points outside the manifest's directory "
                           "(absolute, '..' or empty); shard files are named relative to it",
                           mpath, i, file);
        size_t len = strlen(dir) + strlen(file) + 2;
        if (!(out->paths[i] = malloc(len))) return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory", mpath);
        snprintf(out->paths[i], len, "%s/%s", dir, file);
        out->counts[i] = tokens;
        out->n++;
        char hex[65];
        if (verify && chm_sha256_file(out->paths[i], hex, NULL, err)) return CHM_ERR_IO;
        if (verify && strcmp(hex, sha) != 0)
            return CHM_ERR(err, CHM_ERR_PARSE,
                           "%s: sha256 %s differs from the manifest's %s: the shard changed or is "
                           "damaged; re-run chimera tokenize",
                           out->paths[i], hex, sha);
    }
    return CHM_OK;
}

chm_status chm_manifest_files_read(const char *path, int verify, chm_manifest_files *out, chm_err *err) {
    memset(out, 0, sizeof *out);
    char dir[4096], mpath[4200];
    struct stat st;
    int is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    snprintf(dir, sizeof dir, "%s", path);
    if (!is_dir) { /* .../manifest.json: the directory is its parent */
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else strcpy(dir, ".");
    }
    snprintf(mpath, sizeof mpath, is_dir ? "%s/manifest.json" : "%s", path);
    json_error_t je;
    json_t *j = json_load_file(mpath, 0, &je);
    if (!j)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: %s (line %d)", mpath, je.text, je.line);
    const char *format = "", *status = "", *dtype = "";
    json_unpack(j, "{s?s, s?s, s?s}", "format", &format, "status", &status, "dtype", &dtype);
    chm_status rc = CHM_OK;
    if (strcmp(format, "chimera-token-shards") != 0)
        rc = CHM_ERR(err, CHM_ERR_PARSE, "%s: not a chimera token manifest", mpath);
    else if (strcmp(status, "complete") != 0)
        rc = CHM_ERR(err, CHM_ERR_PARSE,
                     "%s: status '%s': the tokenize run did not finish; run it again to complete it",
                     mpath, status);
    else if (strcmp(dtype, "uint16") && strcmp(dtype, "uint32"))
        rc = CHM_ERR(err, CHM_ERR_PARSE, "%s: dtype '%s' is not uint16 or uint32", mpath, dtype);
    out->dtype = strcmp(dtype, "uint32") == 0 ? CHM_TOKENS_U32 : CHM_TOKENS_U16;
    if (!rc) rc = read_shards(j, dir, mpath, verify, out, err);
    json_decref(j);
    if (rc) chm_manifest_files_free(out);
    return rc;
}
