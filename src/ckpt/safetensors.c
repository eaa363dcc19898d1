/*
 * safetensors.c: reading and writing safetensors files (chimera/checkpoint.h).
 *
 * The writer builds the JSON header with jansson (insertion order kept),
 * pads it with spaces to a multiple of 8 bytes and writes length, header
 * and data with stdio. The reader maps the whole file read-only and checks
 * every number in the header against the file's length before any pointer
 * into it is handed out; sizes are computed with overflow checks, since a
 * hostile header may carry any integer.
 */
#include "chimera/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct chm_safetensors {
    char *path;
    void *map;
    size_t size;
    int n;
    chm_st_tensor *tensors;
    json_t *metadata; /* the "__metadata__" object or NULL */
    json_t *root;
};

static const struct {
    const char *name;
    chm_dtype dt;
} st_dtypes[] = {
    {"F32", CHM_F32}, {"F64", CHM_F64}, {"BF16", CHM_BF16}, {"F16", CHM_F16}, {"I32", CHM_I32}};

const char *chm_safetensors_dtype_name(chm_dtype dt) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dt == dt) return st_dtypes[i].name;
    return NULL;
}

bool chm_safetensors_dtype_parse(const char *name, chm_dtype *dt) {
    for (size_t i = 0; name && i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(st_dtypes[i].name, name)) {
            *dt = st_dtypes[i].dt;
            return true;
        }
    return false;
}

/* ---- writing ---------------------------------------------------------------------- */

/* The header JSON of n tensors laid out in order, plus metadata; NULL on a bad tensor. */
static json_t *header_json(const char *path, const chm_st_tensor *t, int n,
                           const char *const *metadata, chm_err *err) {
    json_t *root = json_object();
    uint64_t at = 0;
    if (metadata && metadata[0]) {
        json_t *md = json_object();
        for (int i = 0; metadata[i] && metadata[i + 1]; i += 2)
            json_object_set_new(md, metadata[i], json_string(metadata[i + 1]));
        json_object_set_new(root, "__metadata__", md);
    }
    for (int i = 0; i < n; i++) {
        const char *dn = chm_safetensors_dtype_name(t[i].dtype);
        if (!dn || t[i].ndim < 0 || t[i].ndim > CHM_MAX_DIMS || !t[i].name[0]) {
            json_decref(root);
            CHM_ERR(err, CHM_ERR_INVALID_ARG,
                    "%s: tensor %d ('%s') has no name, a bad dtype or "
                    "a bad rank",
                    path, i, t[i].name);
            return NULL;
        }
        json_t *shape = json_array(), *e = json_object();
        for (int d = 0; d < t[i].ndim; d++)
            json_array_append_new(shape, json_integer(t[i].shape[d]));
        json_object_set_new(e, "dtype", json_string(dn));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets",
                            json_pack("[II]", (json_int_t)at, (json_int_t)(at + t[i].nbytes)));
        json_object_set_new(root, t[i].name, e);
        at += t[i].nbytes;
    }
    return root;
}

chm_status chm_safetensors_write(const char *path, const chm_st_tensor *tensors, int n,
                                 const char *const *metadata, chm_err *err) {
    json_t *root = header_json(path, tensors, n, metadata, err);
    if (!root) return err ? err->code : CHM_ERR_INVALID_ARG;
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) return CHM_ERR(err, CHM_ERR_NOMEM, "%s: cannot build the header", path);
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(text);
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    bool ok = fwrite(lenb, 1, 8, f) == 8 && fwrite(text, 1, len, f) == len;
    for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++)
        ok = tensors[i].nbytes == 0 ||
             fwrite(tensors[i].data, 1, tensors[i].nbytes, f) == tensors[i].nbytes;
    free(text);
    if (fclose(f) != 0) ok = false;
    if (!ok) return CHM_ERR(err, CHM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return CHM_OK;
}

/* ---- reading ---------------------------------------------------------------------- */

/* a * b into *out unless it overflows 64 bits. */
static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}

/* The shape array of entry `name` into t; false with a message when malformed. */
static bool parse_shape(const char *path, const char *name, json_t *shape, chm_st_tensor *t,
                        chm_err *err) {
    if (!json_is_array(shape) || json_array_size(shape) > CHM_MAX_DIMS) {
        CHM_ERR(err, CHM_ERR_PARSE,
                "%s: tensor '%s': shape must be an array of at most %d "
                "dimensions",
                path, name, CHM_MAX_DIMS);
        return false;
    }
    t->ndim = (int)json_array_size(shape);
    uint64_t numel = 1;
    for (int d = 0; d < CHM_MAX_DIMS; d++) t->shape[d] = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_t *v = json_array_get(shape, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            !mul_ok(numel, (uint64_t)json_integer_value(v), &numel)) {
            CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%s': shape entry %d is not a size", path, name,
                    d);
            return false;
        }
        t->shape[d] = (int64_t)json_integer_value(v);
    }
    if (!mul_ok(numel, chm_dtype_size(t->dtype), &t->nbytes)) {
        CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%s': its size overflows", path, name);
        return false;
    }
    return true;
}

/* One tensor entry: dtype, shape, data_offsets within data_len; *begin receives its start. */
static bool parse_entry(const char *path, const char *name, json_t *e, uint64_t data_len,
                        chm_st_tensor *t, uint64_t *begin, chm_err *err) {
    if (strlen(name) >= sizeof t->name || !json_is_object(e)) {
        CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%.60s': name too long or entry not an object",
                path, name);
        return false;
    }
    snprintf(t->name, sizeof t->name, "%s", name);
    const char *dn = json_string_value(json_object_get(e, "dtype"));
    if (!chm_safetensors_dtype_parse(dn, &t->dtype)) {
        CHM_ERR(err, CHM_ERR_PARSE,
                "%s: tensor '%s': unknown dtype '%s' (chimera reads F32, F64, "
                "BF16, F16 and I32)",
                path, name, dn ? dn : "(none)");
        return false;
    }
    if (!parse_shape(path, name, json_object_get(e, "shape"), t, err)) return false;
    json_t *off = json_object_get(e, "data_offsets");
    json_t *b = json_array_get(off, 0), *en = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(b) ||
        !json_is_integer(en) || json_integer_value(b) < 0 ||
        json_integer_value(en) < json_integer_value(b) ||
        (uint64_t)json_integer_value(en) > data_len) {
        CHM_ERR(err, CHM_ERR_PARSE,
                "%s: tensor '%s': data_offsets must be [begin, end] with "
                "begin <= end <= %llu (the data's length)",
                path, name, (unsigned long long)data_len);
        return false;
    }
    *begin = (uint64_t)json_integer_value(b);
    if ((uint64_t)json_integer_value(en) - *begin != t->nbytes) {
        CHM_ERR(err, CHM_ERR_PARSE,
                "%s: tensor '%s': data_offsets span %llu bytes but shape and "
                "dtype need %llu",
                path, name, (unsigned long long)((uint64_t)json_integer_value(en) - *begin),
                (unsigned long long)t->nbytes);
        return false;
    }
    return true;
}

/* Byte range of one tensor, for the overlap check. */
typedef struct st_range {
    uint64_t begin, end;
    int i;
} st_range;

static int cmp_range(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* No two non-empty ranges overlap. */
static chm_status check_overlaps(chm_safetensors *f, st_range *r, chm_err *err) {
    qsort(r, (size_t)f->n, sizeof *r, cmp_range);
    uint64_t end = 0;
    int last = -1;
    for (int i = 0; i < f->n; i++) {
        if (r[i].begin == r[i].end) continue;
        if (last >= 0 && r[i].begin < end)
            return CHM_ERR(err, CHM_ERR_PARSE, "%s: tensors '%s' and '%s' overlap in the data",
                           f->path, f->tensors[last].name, f->tensors[r[i].i].name);
        end = r[i].end;
        last = r[i].i;
    }
    return CHM_OK;
}

/* Every entry of the header object; data starts at `data`, `data_len` bytes. */
static chm_status parse_header(chm_safetensors *f, const unsigned char *data, uint64_t data_len,
                               chm_err *err) {
    size_t cap = json_object_size(f->root);
    f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
    st_range *r = calloc(cap ? cap : 1, sizeof *r);
    if (!f->tensors || !r) {
        free(r);
        return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory for %zu tensors", f->path, cap);
    }
    const char *key;
    json_t *value;
    json_object_foreach(f->root, key, value) {
        if (!strcmp(key, "__metadata__")) {
            f->metadata = json_is_object(value) ? value : NULL;
            continue;
        }
        chm_st_tensor *t = &f->tensors[f->n];
        uint64_t begin;
        if (!parse_entry(f->path, key, value, data_len, t, &begin, err)) {
            free(r);
            return CHM_ERR_PARSE;
        }
        t->data = data + begin;
        r[f->n] = (st_range){begin, begin + t->nbytes, f->n};
        f->n++;
    }
    chm_status rc = check_overlaps(f, r, err);
    free(r);
    return rc;
}

/* Map the file and check its header length; *hlen receives it. */
static chm_status map_file(chm_safetensors *f, uint64_t *hlen, chm_err *err) {
    int fd = open(f->path, O_RDONLY);
    if (fd < 0) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot stat: %s", f->path, strerror(errno));
    }
    f->size = (size_t)st.st_size;
    if (f->size < 8) {
        close(fd);
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: %zu bytes is too short for a safetensors file "
                       "(8-byte header length first)",
                       f->path, f->size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot map: %s", f->path, strerror(errno));
    }
    const unsigned char *p = f->map;
    *hlen = 0;
    for (int i = 7; i >= 0; i--) *hlen = *hlen << 8 | p[i];
    if (*hlen > CHM_SAFETENSORS_MAX_HEADER)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: header length %llu is over the %u-byte limit: not a "
                       "safetensors file, or a corrupt one",
                       f->path, (unsigned long long)*hlen, CHM_SAFETENSORS_MAX_HEADER);
    if (*hlen > f->size - 8)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: header length %llu runs past the end of the file "
                       "(%zu bytes): truncated?",
                       f->path, (unsigned long long)*hlen, f->size);
    return CHM_OK;
}

chm_status chm_safetensors_open(const char *path, chm_safetensors **out, chm_err *err) {
    if (!path || !out) return CHM_ERR(err, CHM_ERR_INVALID_ARG, "safetensors_open: NULL argument");
    *out = NULL;
    chm_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory", path);
    }
    uint64_t hlen = 0;
    chm_status rc = map_file(f, &hlen, err);
    if (rc == CHM_OK) {
        json_error_t je;
        const char *text = (const char *)f->map + 8;
        f->root = json_loadb(text, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
        if (!f->root || !json_is_object(f->root))
            rc = CHM_ERR(err, CHM_ERR_PARSE, "%s: the header is not a JSON object: %s", path,
                         f->root ? "another JSON value" : je.text);
    }
    if (rc == CHM_OK)
        rc = parse_header(f, (const unsigned char *)f->map + 8 + hlen, f->size - 8 - hlen, err);
    if (rc != CHM_OK) {
        chm_safetensors_close(f);
        return rc;
    }
    *out = f;
    return CHM_OK;
}

int chm_safetensors_count(const chm_safetensors *f) { return f ? f->n : 0; }

const chm_st_tensor *chm_safetensors_get(const chm_safetensors *f, int i) {
    return f && i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

const chm_st_tensor *chm_safetensors_find(const chm_safetensors *f, const char *name) {
    for (int i = 0; f && name && i < f->n; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *chm_safetensors_metadata(const chm_safetensors *f, const char *key) {
    if (!f || !f->metadata || !key) return NULL;
    return json_string_value(json_object_get(f->metadata, key));
}

void chm_safetensors_close(chm_safetensors *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->size);
    json_decref(f->root);
    free(f->tensors);
    free(f->path);
    free(f);
}
