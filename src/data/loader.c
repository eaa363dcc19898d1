/*
 * loader.c: the training-data loader (see chimera/data.h).
 *
 * The token stream (all files concatenated) is cut into W = floor(N / (T+1))
 * disjoint windows of T+1 tokens; window w starts at token w*(T+1). Validation takes
 * V windows spread evenly (window j*s + s-1 for j < V, s = W / V), chosen without the
 * seed so that no seed or rank ever trains on them. The other W - V windows are the
 * training set, indexed t = 0..W-V-1 in stream order.
 *
 * Epoch e visits every training index once, in the order of a keyed bijection of
 * [0, W-V) (a 6-round Feistel network with cycle walking, keyed by seed and e), so
 * the order needs no memory and any position can be computed directly. The cursor is
 * a global position in that sequence: call k on rank r reads positions
 * pos + r*B + b (b < B) and every rank advances pos by B * world_size. Saving
 * (seed, epoch, position) is therefore enough to continue exactly.
 */
#include "data/loader.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct chm_loader {
    chm_loader_config cfg;
    chm_tok_file *files;
    int n_files, cap_files;
    int64_t tokens, windows, n_val, n_train, stride;
    chm_loader_cursor cur;
    int32_t *row;           /* [T+1] scratch for chm_loader_next_xy */
};

/* ---- the order of windows ---------------------------------------------------------- */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* Position i of the permutation of [0, n) keyed by `key`. */
static uint64_t permute(uint64_t i, uint64_t n, uint64_t key) {
    if (n <= 1) return 0;
    int bits = 1;
    while (bits < 64 && (UINT64_C(1) << bits) < n) bits++;
    int half = (bits + 1) / 2; /* both halves: a balanced network on 2*half >= bits bits */
    uint64_t mask = (UINT64_C(1) << half) - 1;
    do { /* cycle walking: re-encrypt until the value falls inside [0, n) */
        uint64_t l = i >> half, r = i & mask;
        for (int k = 0; k < 6; k++) {
            uint64_t f = mix64(r ^ mix64(key + (uint64_t)k * 0x9e3779b97f4a7c15ull)) & mask;
            uint64_t t = l ^ f;
            l = r;
            r = t;
        }
        i = l << half | r;
    } while (i >= n);
    return i;
}

static uint64_t epoch_key(uint64_t seed, int64_t epoch) {
    return mix64(seed ^ mix64((uint64_t)epoch + 0x243f6a8885a308d3ull));
}

/* The window of training index t (skipping the validation windows). */
static int64_t train_window(const chm_loader *ld, int64_t t) {
    int64_t v = ld->n_val, s = ld->stride;
    if (v == 0) return t;
    if (s > 1 && t < v * (s - 1)) return t / (s - 1) * s + t % (s - 1);
    return v * s + (t - v * (s - 1));
}

static int64_t val_window(const chm_loader *ld, int64_t j) { return j * ld->stride + ld->stride - 1; }

/* ---- opening --------------------------------------------------------------------- */

static chm_status add_file(chm_loader *ld, const char *path, chm_token_dtype raw, int64_t expect,
                           chm_err *err) {
    if (ld->n_files == ld->cap_files) {
        int cap = ld->cap_files ? 2 * ld->cap_files : 8;
        chm_tok_file *p = realloc(ld->files, (size_t)cap * sizeof *p);
        if (!p) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the file list");
        ld->files = p;
        ld->cap_files = cap;
    }
    chm_tok_file *f = &ld->files[ld->n_files];
    chm_status rc = chm_tok_file_open(path, raw, expect, f, err);
    if (rc) {
        chm_tok_file_close(f);
        return rc;
    }
    f->start = ld->tokens;
    ld->tokens += f->count;
    ld->n_files++;
    return CHM_OK;
}

/* One path: a manifest directory or file, a glob, or a token file. */
static chm_status add_path(chm_loader *ld, const char *path, chm_err *err) {
    size_t n = strlen(path);
    int manifest = (n >= 13 && strcmp(path + n - 13, "manifest.json") == 0);
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/manifest.json", path);
    if (manifest || access(probe, F_OK) == 0) {
        chm_manifest_files m;
        chm_status rc = chm_manifest_files_read(path, ld->cfg.verify, &m, err);
        for (int i = 0; !rc && i < m.n; i++) rc = add_file(ld, m.paths[i], m.dtype, m.counts[i], err);
        chm_manifest_files_free(&m);
        return rc;
    }
    if (!strpbrk(path, "*?[")) return add_file(ld, path, ld->cfg.raw_dtype, -1, err);
    glob_t g;
    if (glob(path, 0, NULL, &g) != 0)
        return CHM_ERR(err, CHM_ERR_IO, "%s: no file matches", path);
    chm_status rc = CHM_OK;
    for (size_t i = 0; !rc && i < g.gl_pathc; i++) rc = add_path(ld, g.gl_pathv[i], err);
    globfree(&g);
    return rc;
}

/* Windows and the split, from the stream length and the config. */
static chm_status plan_split(chm_loader *ld, chm_err *err) {
    const chm_loader_config *c = &ld->cfg;
    ld->windows = ld->tokens / (c->seq_len + 1);
    if (ld->windows < 1)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "loader: %lld tokens are fewer than one window of seq_len+1 = %lld",
                       (long long)ld->tokens, (long long)(c->seq_len + 1));
    if (c->val_windows > 0) ld->n_val = c->val_windows;
    else if (c->val_fraction > 0) {
        ld->n_val = (int64_t)((double)ld->windows * c->val_fraction);
        if (ld->n_val == 0) ld->n_val = 1;
    }
    ld->n_train = ld->windows - ld->n_val;
    if (ld->n_train < 1)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "loader: validation takes %lld of the %lld windows, leaving none to train on",
                       (long long)ld->n_val, (long long)ld->windows);
    ld->stride = ld->n_val ? ld->windows / ld->n_val : 0;
    return CHM_OK;
}

static chm_status check_config(const chm_loader_config *c, chm_err *err) {
    if (c->seq_len < 1 || c->batch_size < 1)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "loader: seq_len and batch_size must be >= 1");
    if (c->val_fraction < 0 || c->val_fraction >= 1 || c->val_windows < 0)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "loader: val_fraction must be in [0, 1) and val_windows >= 0");
    if (c->rank < 0 || c->rank >= c->world_size)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "loader: rank %d outside world size %d", c->rank,
                       c->world_size);
    return CHM_OK;
}

chm_status chm_loader_open(const char *const *paths, int n_paths, const chm_loader_config *cfg,
                           chm_loader **out, chm_err *err) {
    *out = NULL;
    chm_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for a loader");
    ld->cfg = *cfg;
    if (ld->cfg.world_size <= 0) ld->cfg.world_size = 1;
    chm_status rc = check_config(&ld->cfg, err);
    if (!rc && n_paths < 1) rc = CHM_ERR(err, CHM_ERR_INVALID_ARG, "loader: no token files given");
    for (int i = 0; !rc && i < n_paths; i++) rc = add_path(ld, paths[i], err);
    if (!rc) rc = plan_split(ld, err);
    if (!rc && !(ld->row = malloc((size_t)(cfg->seq_len + 1) * sizeof *ld->row)))
        rc = CHM_ERR(err, CHM_ERR_NOMEM, "no memory for a loader");
    if (rc) {
        chm_loader_close(ld);
        return rc;
    }
    ld->cur = (chm_loader_cursor){cfg->seed, 0, 0, ld->n_train, cfg->seq_len};
    *out = ld;
    return CHM_OK;
}

void chm_loader_close(chm_loader *ld) {
    if (!ld) return;
    for (int i = 0; i < ld->n_files; i++) chm_tok_file_close(&ld->files[i]);
    free(ld->files);
    free(ld->row);
    free(ld);
}

chm_loader_info chm_loader_get_info(const chm_loader *ld) {
    return (chm_loader_info){ld->tokens, ld->windows, ld->n_train, ld->n_val, ld->n_files};
}

/* ---- reading ------------------------------------------------------------------------ */

/* The file holding stream token i (binary search over starts). */
static int file_of(const chm_loader *ld, int64_t i) {
    int lo = 0, hi = ld->n_files - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (ld->files[mid].start <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Decode tokens [from, from+n) of file f into out, checking each against the vocabulary. */
static chm_status decode(const chm_loader *ld, const chm_tok_file *f, int64_t from, int64_t n, int32_t *out,
                         chm_err *err) {
    int es = chm_token_dtype_size(f->dtype);
    const unsigned char *p = f->data + from * es;
    int32_t vocab = ld->cfg.vocab_size;
    for (int64_t k = 0; k < n; k++, p += es) {
        uint32_t u = es == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8
                             : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                   (uint32_t)p[3] << 24;
        if (u > INT32_MAX || (vocab > 0 && u >= (uint32_t)vocab))
            return CHM_ERR(err, CHM_ERR_PARSE,
                           "%s: token %lld is %lld, outside the vocabulary [0, %d): wrong tokenizer or "
                           "damaged file",
                           f->path, (long long)(from + k),
                           f->dtype == CHM_TOKENS_I32 ? (long long)(int32_t)u : (long long)u,
                           vocab > 0 ? (int)vocab : INT32_MAX);
        out[k] = (int32_t)u;
    }
    return CHM_OK;
}

chm_status chm_loader_read(const chm_loader *ld, int64_t start, int64_t n, int32_t *out, chm_err *err) {
    if (start < 0 || n < 0 || start > ld->tokens - n)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "loader: tokens [%lld, %lld) outside the stream of %lld",
                       (long long)start, (long long)(start + n), (long long)ld->tokens);
    int fi = n ? file_of(ld, start) : 0;
    while (n > 0) {
        const chm_tok_file *f = &ld->files[fi++];
        int64_t from = start - f->start, take = f->count - from < n ? f->count - from : n;
        chm_status rc = decode(ld, f, from, take, out, err);
        if (rc) return rc;
        out += take;
        start += take;
        n -= take;
    }
    return CHM_OK;
}

static chm_status read_window(const chm_loader *ld, int64_t w, int32_t *out, chm_err *err) {
    int64_t len = ld->cfg.seq_len + 1;
    return chm_loader_read(ld, w * len, len, out, err);
}

/* ---- batches ------------------------------------------------------------------------- */

/* The window that row b of this rank's next batch reads. */
static int64_t next_window(const chm_loader *ld, int64_t b) {
    const chm_loader_config *c = &ld->cfg;
    int64_t g = ld->cur.position + (int64_t)c->rank * c->batch_size + b;
    int64_t epoch = ld->cur.epoch + g / ld->n_train;
    uint64_t t = permute((uint64_t)(g % ld->n_train), (uint64_t)ld->n_train,
                         epoch_key(ld->cur.seed, epoch));
    return train_window(ld, (int64_t)t);
}

/* Every rank moves past the B * world_size windows of this step. */
static void advance(chm_loader *ld) {
    int64_t pos = ld->cur.position + ld->cfg.batch_size * ld->cfg.world_size;
    ld->cur.epoch += pos / ld->n_train;
    ld->cur.position = pos % ld->n_train;
}

chm_status chm_loader_next(chm_loader *ld, int32_t *batch, chm_err *err) {
    int64_t len = ld->cfg.seq_len + 1;
    for (int64_t b = 0; b < ld->cfg.batch_size; b++) {
        chm_status rc = read_window(ld, next_window(ld, b), batch + b * len, err);
        if (rc) return rc;
    }
    advance(ld);
    return CHM_OK;
}

chm_status chm_loader_next_xy(chm_loader *ld, int32_t *x, int32_t *y, chm_err *err) {
    int64_t T = ld->cfg.seq_len;
    for (int64_t b = 0; b < ld->cfg.batch_size; b++) {
        chm_status rc = read_window(ld, next_window(ld, b), ld->row, err);
        if (rc) return rc;
        memcpy(x + b * T, ld->row, (size_t)T * sizeof *x);
        memcpy(y + b * T, ld->row + 1, (size_t)T * sizeof *y);
    }
    advance(ld);
    return CHM_OK;
}

int64_t chm_loader_val_batches(const chm_loader *ld) {
    int64_t per = ld->cfg.batch_size * ld->cfg.world_size;
    return (ld->n_val + per - 1) / per;
}

chm_status chm_loader_val_batch(chm_loader *ld, int64_t k, int32_t *batch, int64_t *rows,
                                chm_err *err) {
    const chm_loader_config *c = &ld->cfg;
    *rows = 0;
    if (k < 0 || k >= chm_loader_val_batches(ld))
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "loader: validation batch %lld of %lld",
                       (long long)k, (long long)chm_loader_val_batches(ld));
    int64_t first = (k * c->world_size + c->rank) * c->batch_size;
    for (int64_t b = 0; b < c->batch_size && first + b < ld->n_val; b++) {
        chm_status rc = read_window(ld, val_window(ld, first + b), batch + b * (c->seq_len + 1), err);
        if (rc) return rc;
        (*rows)++;
    }
    return CHM_OK;
}

/* ---- the cursor -------------------------------------------------------------------- */

chm_loader_cursor chm_loader_get_cursor(const chm_loader *ld) { return ld->cur; }

chm_status chm_loader_set_cursor(chm_loader *ld, const chm_loader_cursor *c, chm_err *err) {
    if (c->train_windows != ld->n_train || c->seq_len != ld->cfg.seq_len)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "loader: the saved cursor is for %lld training windows of seq_len %lld, this "
                       "data has %lld of seq_len %lld: resume with the same data, split and seq_len",
                       (long long)c->train_windows, (long long)c->seq_len, (long long)ld->n_train,
                       (long long)ld->cfg.seq_len);
    if (c->epoch < 0 || c->position < 0 || c->position >= ld->n_train)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "loader: cursor epoch %lld position %lld is invalid",
                       (long long)c->epoch, (long long)c->position);
    ld->cur = *c;
    return CHM_OK;
}
