/*
 * train_data.c: the data side of a run: the built-in corpus tokenized once
 * into a cache directory, the training loader with its validation split,
 * the validation windows, bytes per token and the corpus's loss floor.
 *
 * The cache entry corpus-s<seed>-<MiB>m-<tokenizer> is tokenized into a
 * temporary directory and renamed into place when complete, so concurrent
 * runs (the tests) and interrupted ones never see half a corpus: whoever
 * renames first wins and the others use it. The validation split holds
 * train.eval_batches micro batches of windows (fewer on small data), chosen
 * by the loader independently of the seed; data.val (a path, or builtin =
 * the corpus of the next seed) replaces the split.
 *
 * Data parallel: the loader gives rank r rows r*B .. r*B+B-1 of each global
 * batch of B*world windows, and the validation set (eval_batches global
 * batches, sized by the global batch so that it is the same set on any
 * number of ranks of the same global batch) is split among the ranks the
 * same way.
 */
#include "trainer_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/checkpoint_internal.h"
#include "data/sha256.h"

void tr_cache_dir(const char *opt, char *out, size_t n) {
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (opt && *opt) snprintf(out, n, "%s", opt);
    else if (x && *x) snprintf(out, n, "%s/chimera", x);
    else snprintf(out, n, "%s/.cache/chimera", h && *h ? h : "/tmp");
}

chm_status chm_train_tokenizer(const chm_config *cfg, chm_tokenizer **out, chm_err *err) {
    if (!strcmp(cfg->data.tokenizer, "byte")) return chm_tokenizer_byte(out, err);
    return chm_tokenizer_load(cfg->data.tokenizer, out, err);
}

/* A short tag of the tokenizer for cache names: "byte" or 12 hex digits of its sha256. */
static chm_status tokenizer_tag(const chm_config *cfg, char tag[16], chm_err *err) {
    if (!strcmp(cfg->data.tokenizer, "byte")) {
        snprintf(tag, 16, "byte");
        return CHM_OK;
    }
    char hex[65];
    chm_status rc = chm_sha256_file(cfg->data.tokenizer, hex, NULL, err);
    if (rc == CHM_OK) snprintf(tag, 16, "%.12s", hex);
    return rc;
}

/* The built-in corpus of `seed` tokenized with tok into the cache; its directory into dir. */
static chm_status builtin_corpus(const char *cache, const chm_config *cfg, const chm_tokenizer *tok,
                                 uint64_t seed, char *dir, size_t n, chm_err *err) {
    char tag[16], tmp[TR_PATH + 64], manifest[TR_PATH + 32];
    chm_status rc = tokenizer_tag(cfg, tag, err);
    if (rc) return rc;
    snprintf(dir, n, "%s/corpus-s%llu-%lldm-%s", cache, (unsigned long long)seed,
             (long long)(CHM_TRAIN_CORPUS_BYTES >> 20), tag);
    snprintf(manifest, sizeof manifest, "%s/manifest.json", dir);
    if (ck_exists(manifest)) return CHM_OK;
    snprintf(tmp, sizeof tmp, "%s/.tmp-corpus-%ld", cache, (long)getpid());
    rc = ck_mkdirs(cache, err);
    if (rc == CHM_OK) rc = ck_remove_tree(tmp, err);
    chm_tokenize_opts o = {.corpus = 1, .corpus_seed = seed, .corpus_bytes = CHM_TRAIN_CORPUS_BYTES,
                           .tok = tok, .tokenizer_name = cfg->data.tokenizer, .out_dir = tmp};
    chm_tokenize_result res;
    if (rc == CHM_OK) rc = chm_tokenize_run(&o, &res, err);
    if (rc == CHM_OK && rename(tmp, dir) != 0 && !ck_exists(manifest))
        rc = CHM_ERR(err, CHM_ERR_IO, "%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
    chm_err ignore;
    ck_remove_tree(tmp, &ignore); /* lost the race, or failed: ours is not needed */
    return rc;
}

/* The path of data.train (the corpus cache for builtin) and a description. */
static chm_status train_path(const chm_config *cfg, const char *cache, const chm_tokenizer *tok,
                             char *path, size_t n, chm_err *err) {
    if (strcmp(cfg->data.train, "builtin") != 0) {
        snprintf(path, n, "%s", cfg->data.train);
        return CHM_OK;
    }
    return builtin_corpus(cache, cfg, tok, CHM_TRAIN_CORPUS_SEED, path, n, err);
}

/* Which share of the data this process reads: rank of world (0 of 1 alone). */
typedef struct data_share {
    int rank, world;
} data_share;

static chm_loader_config loader_config(const chm_config *cfg, int64_t val_windows, data_share sh) {
    return (chm_loader_config){.seq_len = cfg->train.seq_len, .batch_size = cfg->train.micro_batch,
                               .seed = (uint64_t)cfg->train.seed, .val_windows = val_windows,
                               .rank = sh.rank, .world_size = sh.world,
                               .raw_dtype = CHM_TOKENS_U16, .vocab_size = cfg->model.vocab};
}

/* Validation windows to split off n windows: eval_batches global batches of B*world, at most a
 * quarter, whole global batches. */
static chm_status split_size(const chm_config *cfg, const char *path, int64_t windows, int world,
                             int64_t *v, chm_err *err) {
    int64_t B = (int64_t)cfg->train.micro_batch * world;
    int64_t want = (int64_t)cfg->train.eval_batches * B;
    *v = windows >= 4 * want ? want : windows / 4 / B * B;
    if (*v < B)
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "%s: %lld windows of seq_len+1 = %d tokens are too few to hold out a "
                       "validation batch of %lld; give more data or a separate data.val",
                       path, (long long)windows, cfg->train.seq_len + 1, (long long)B);
    return CHM_OK;
}

/* Open the training loader on path, with a validation split when data.val is empty. */
static chm_status open_train_loader(const chm_config *cfg, const char *path, data_share sh,
                                    chm_loader **out, chm_err *err) {
    chm_loader_config lc = loader_config(cfg, 0, sh);
    const char *paths[] = {path};
    chm_status rc = chm_loader_open(paths, 1, &lc, out, err);
    if (rc || cfg->data.val[0]) return rc;
    int64_t windows = chm_loader_get_info(*out).windows;
    chm_loader_close(*out);
    *out = NULL;
    rc = split_size(cfg, path, windows, sh.world, &lc.val_windows, err);
    return rc ? rc : chm_loader_open(paths, 1, &lc, out, err);
}

/* This share of the first (at most) eval_batches whole global batches of windows of a
 * separate validation source: rows sh.rank*B .. of each global batch of B*world. */
static chm_status read_val_path(const chm_config *cfg, const char *path, data_share sh, int32_t **w,
                                int64_t *n, chm_err *err) {
    chm_loader_config lc = loader_config(cfg, 0, (data_share){0, 1});
    chm_loader *ld;
    const char *paths[] = {path};
    chm_status rc = chm_loader_open(paths, 1, &lc, &ld, err);
    if (rc) return rc;
    int64_t T = cfg->train.seq_len, B = cfg->train.micro_batch, G = B * sh.world;
    int64_t have = chm_loader_get_info(ld).windows, want = (int64_t)cfg->train.eval_batches * G;
    *n = (have < want ? have : want) / G * B; /* this rank's windows */
    *w = *n ? malloc((size_t)(*n * (T + 1)) * sizeof **w) : NULL;
    if (*n == 0)
        rc = CHM_ERR(err, CHM_ERR_CONFIG, "%s: fewer windows than one validation batch of %lld",
                     path, (long long)G);
    else if (!*w)
        rc = CHM_ERR(err, CHM_ERR_NOMEM, "no memory for validation windows");
    for (int64_t k = 0; rc == CHM_OK && k < *n; k++) {
        int64_t win = k / B * G + (int64_t)sh.rank * B + k % B;
        rc = chm_loader_read(ld, win * (T + 1), T + 1, *w + k * (T + 1), err);
    }
    chm_loader_close(ld);
    if (rc) {
        free(*w);
        *w = NULL, *n = 0;
    }
    return rc;
}

/* The validation windows: from the loader's split, or from data.val. */
static chm_status val_windows(const chm_config *cfg, const char *cache, const chm_tokenizer *tok,
                              chm_loader *ld, data_share sh, int32_t **w, int64_t *n,
                              chm_err *err) {
    *w = NULL, *n = 0;
    if (cfg->data.val[0]) {
        char path[TR_PATH];
        chm_status rc = CHM_OK;
        if (!strcmp(cfg->data.val, "builtin"))
            rc = builtin_corpus(cache, cfg, tok, CHM_TRAIN_CORPUS_SEED + 1, path, sizeof path, err);
        else
            snprintf(path, sizeof path, "%s", cfg->data.val);
        return rc ? rc : read_val_path(cfg, path, sh, w, n, err);
    }
    int64_t T = cfg->train.seq_len, B = cfg->train.micro_batch, nb = chm_loader_val_batches(ld);
    *w = malloc((size_t)(nb * B * (T + 1)) * sizeof **w);
    if (!*w) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for validation windows");
    for (int64_t k = 0; k < nb; k++) {
        int64_t rows;
        chm_status rc = chm_loader_val_batch(ld, k, *w + k * B * (T + 1), &rows, err);
        if (rc) {
            free(*w);
            *w = NULL, *n = 0;
            return rc;
        }
        *n += rows;
    }
    return CHM_OK;
}

/* Loss floor in nats per token of the built-in corpus as tokenized (0 for other data). */
static double corpus_floor(const chm_config *cfg, const chm_loader *ld) {
    chm_corpus_floor f;
    chm_err ignore;
    if (strcmp(cfg->data.train, "builtin") != 0 ||
        chm_corpus_entropy(CHM_TRAIN_CORPUS_SEED, 0, CHM_TRAIN_CORPUS_BYTES, &f, &ignore) != CHM_OK)
        return 0;
    return f.bits * log(2.0) / (double)chm_loader_get_info(ld).tokens;
}

chm_status tr_data_open(chm_trainer *t, chm_err *err) {
    const chm_config *cfg = &t->cfg;
    char path[TR_PATH];
    chm_status rc = chm_train_tokenizer(cfg, &t->tok, err);
    if (rc == CHM_OK && chm_tokenizer_vocab_size(t->tok) > cfg->model.vocab)
        rc = CHM_ERR(err, CHM_ERR_CONFIG,
                     "the tokenizer has %d ids but model.vocab is %d: raise model.vocab",
                     (int)chm_tokenizer_vocab_size(t->tok), cfg->model.vocab);
    if (rc == CHM_OK) rc = train_path(cfg, t->cache_dir, t->tok, path, sizeof path, err);
    data_share sh = {t->rank, t->world};
    if (rc == CHM_OK) rc = open_train_loader(cfg, path, sh, &t->loader, err);
    if (rc == CHM_OK)
        rc = val_windows(cfg, t->cache_dir, t->tok, t->loader, sh, &t->val, &t->n_val, err);
    if (rc == CHM_OK)
        rc = chm_eval_bytes_per_token(t->tok, t->val, t->n_val, cfg->train.seq_len,
                                      &t->bytes_per_token, err);
    if (rc) return rc;
    t->floor = corpus_floor(cfg, t->loader);
    chm_loader_info li = chm_loader_get_info(t->loader);
    snprintf(t->data_desc, sizeof t->data_desc, "%s%s (%lld tokens, %lld training windows), %lld "
             "validation windows%s",
             strcmp(cfg->data.train, "builtin") ? "" : "built-in corpus at ", path,
             (long long)li.tokens, (long long)li.train_windows, (long long)(t->n_val * t->world),
             cfg->data.val[0] ? " from data.val" : " held out");
    return CHM_OK;
}

chm_status chm_train_val_windows(const chm_config *cfg, const char *cache_dir, int32_t **windows,
                                 int64_t *n, chm_err *err) {
    char cache[TR_PATH], path[TR_PATH];
    tr_cache_dir(cache_dir, cache, sizeof cache);
    chm_tokenizer *tok = NULL;
    chm_loader *ld = NULL;
    chm_status rc = chm_train_tokenizer(cfg, &tok, err);
    if (rc == CHM_OK) rc = train_path(cfg, cache, tok, path, sizeof path, err);
    data_share one = {0, 1};
    if (rc == CHM_OK && !cfg->data.val[0]) rc = open_train_loader(cfg, path, one, &ld, err);
    if (rc == CHM_OK) rc = val_windows(cfg, cache, tok, ld, one, windows, n, err);
    chm_loader_close(ld);
    chm_tokenizer_free(tok);
    return rc;
}
