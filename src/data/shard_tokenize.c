/*
 * shard_tokenize.c: chm_tokenize_run, the `chimera tokenize` pipeline.
 *
 * The calling thread reads documents in input order and packs them into batches;
 * a pool of worker threads tokenizes batches; the calling thread writes finished
 * batches strictly in order, so the shards are the same for any thread count (which
 * is what lets a re-run recognise and keep shards by their checksums). Batches live
 * in a ring: at most `ring` of them are read-but-unwritten at any time, which bounds
 * memory at about ring * BATCH_BYTES.
 */
#include "data/shard.h"
#include "data/corpus.h"

#include <errno.h>
#include <fcntl.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH_BYTES (1 << 20)
#define BATCH_DOCS 4096
#define DEFAULT_SHARD_TOKENS (INT64_C(1) << 29)

/* ---- batches and the worker pool ---------------------------------------------- */

typedef struct tk_doc {
    size_t text_off, text_len, id_off;
    int input;              /* index into opts->inputs, -1 for the corpus */
} tk_doc;

typedef struct tk_batch {
    tk_doc *docs;
    int n, cap;
    char *chars;            /* texts and NUL-terminated ids */
    size_t chars_len, chars_cap;
    chm_ids toks;           /* all documents' ids, back to back */
    size_t *tok_end;        /* [n] end of document i in toks */
    int done;               /* tokenized (guarded by the pool mutex) */
    chm_status rc;
    chm_err err;
} tk_batch;

typedef struct tk_pool {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    tk_batch *ring;
    int cap;
    int64_t filled, taken, written; /* batch counters: submitted, picked up, written */
    int stop;
    const chm_tokenizer *tok;
    pthread_t *th;
    int nth;
} tk_pool;

static void tokenize_batch(const chm_tokenizer *tok, tk_batch *b) {
    b->toks.n = 0;
    for (int i = 0; i < b->n && !b->rc; i++) {
        const tk_doc *d = &b->docs[i];
        b->rc = chm_tokenizer_encode(tok, b->chars + d->text_off, d->text_len, &b->toks, &b->err);
        b->tok_end[i] = b->toks.n;
    }
}

static void *worker(void *arg) {
    tk_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->taken == p->filled) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) break;
        tk_batch *b = &p->ring[p->taken++ % p->cap];
        pthread_mutex_unlock(&p->mu);
        tokenize_batch(p->tok, b);
        pthread_mutex_lock(&p->mu);
        b->done = 1;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static chm_status pool_start(tk_pool *p, const chm_tokenizer *tok, int nth, chm_err *err) {
    memset(p, 0, sizeof *p);
    p->tok = tok;
    p->cap = 2 * nth + 2;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->ring = calloc((size_t)p->cap, sizeof *p->ring);
    p->th = calloc((size_t)nth, sizeof *p->th);
    if (!p->ring || !p->th) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for %d threads", nth);
    for (; p->nth < nth; p->nth++)
        if (pthread_create(&p->th[p->nth], NULL, worker, p) != 0)
            return CHM_ERR(err, CHM_ERR_INTERNAL, "cannot start tokenizing thread %d", p->nth);
    return CHM_OK;
}

static void pool_stop(tk_pool *p) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nth; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    for (int i = 0; p->ring && i < p->cap; i++) {
        free(p->ring[i].docs);
        free(p->ring[i].chars);
        free(p->ring[i].tok_end);
        chm_ids_free(&p->ring[i].toks);
    }
    free(p->ring);
    free(p->th);
}

/* Copy a document into the batch; -1 when memory runs out. */
static int batch_add(tk_batch *b, const char *text, size_t len, const char *id, int input) {
    size_t idn = strlen(id) + 1;
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        tk_doc *d = realloc(b->docs, (size_t)cap * sizeof *d);
        size_t *e = d ? realloc(b->tok_end, (size_t)cap * sizeof *e) : NULL;
        if (d) b->docs = d;
        if (!e) return -1;
        b->tok_end = e;
        b->cap = cap;
    }
    if (b->chars_len + len + idn > b->chars_cap) {
        size_t cap = b->chars_cap ? b->chars_cap : BATCH_BYTES + 4096;
        while (cap < b->chars_len + len + idn) cap *= 2;
        char *c = realloc(b->chars, cap);
        if (!c) return -1;
        b->chars = c;
        b->chars_cap = cap;
    }
    tk_doc *d = &b->docs[b->n++];
    d->text_off = b->chars_len;
    d->text_len = len;
    memcpy(b->chars + b->chars_len, text, len);
    b->chars_len += len;
    d->id_off = b->chars_len;
    memcpy(b->chars + b->chars_len, id, idn);
    b->chars_len += idn;
    d->input = input;
    return 0;
}

/* ---- the document source -------------------------------------------------------- */

typedef struct source {
    const chm_tokenize_opts *o;
    int input;                 /* next input to open */
    chm_dolma_reader *rd;      /* the open input, or NULL */
    int rd_input;
    int64_t done_bytes;        /* sizes of the inputs finished */
    int64_t *sizes;            /* [n_inputs] */
    chm_dolma_stats stats;     /* of the inputs finished */
    json_t *errors;            /* "path: what is wrong" per failed input */
    chm_status fail_code;
    int64_t corpus_index, corpus_bytes;
    char *corpus_text;
    char corpus_id[64];
    chm_corpus_floor floor;
} source;

/* Close the open input, keeping its counts; `e` (may be NULL) is why it ended. */
static void source_close_input(source *s, const chm_err *e) {
    if (e) {
        json_array_append_new(s->errors, json_string(e->msg));
        if (!s->fail_code) s->fail_code = e->code;
    }
    if (!s->rd) return;
    chm_dolma_stats_add(&s->stats, chm_dolma_stats_get(s->rd));
    chm_dolma_close(s->rd);
    s->rd = NULL;
    s->done_bytes += s->sizes[s->rd_input];
}

/* The next document of the embedded corpus. */
static int source_next_corpus(source *s, chm_dolma_doc *doc, chm_status *rc, chm_err *err) {
    const chm_tokenize_opts *o = s->o;
    if ((o->corpus_docs > 0 && s->corpus_index >= o->corpus_docs) ||
        (o->corpus_bytes > 0 && s->corpus_bytes >= o->corpus_bytes))
        return 0;
    free(s->corpus_text);
    double bits;
    *rc = chm_corpus_document(o->corpus_seed, s->corpus_index, &s->corpus_text, &doc->text_len,
                              &bits, err);
    if (*rc) return 0;
    snprintf(s->corpus_id, sizeof s->corpus_id, "%s-%llu-%lld", CHM_CORPUS_SOURCE,
             (unsigned long long)o->corpus_seed, (long long)s->corpus_index);
    doc->text = s->corpus_text;
    doc->id = s->corpus_id;
    s->corpus_index++;
    s->corpus_bytes += (int64_t)doc->text_len;
    s->floor.documents++;
    s->floor.bytes += (int64_t)doc->text_len;
    s->floor.bits += bits;
    return 1;
}

/*
 * The next document (1) or the end (0). A failing input is recorded in s->errors and
 * reading goes on with the next one; *rc is set only for failures of the run itself.
 */
static int source_next(source *s, chm_dolma_doc *doc, int *input, chm_status *rc, chm_err *err) {
    if (s->o->corpus) {
        *input = -1;
        return source_next_corpus(s, doc, rc, err);
    }
    for (;;) {
        if (!s->rd) {
            if (s->input >= s->o->n_inputs) return 0;
            chm_err e = {0};
            s->rd_input = s->input++;
            if (chm_dolma_open(s->o->inputs[s->rd_input], &s->rd, &e)) {
                s->done_bytes += s->sizes[s->rd_input];
                source_close_input(s, &e);
                continue;
            }
        }
        chm_err e = {0};
        int got;
        chm_status r = chm_dolma_next(s->rd, doc, &got, &e);
        if (got) {
            *input = s->rd_input;
            return 1;
        }
        source_close_input(s, r ? &e : NULL);
    }
}

static int64_t source_bytes(const source *s) {
    if (s->o->corpus) return s->corpus_bytes;
    return s->done_bytes + (s->rd ? chm_dolma_bytes_in(s->rd) : 0);
}

/* Counts so far, the open input included. */
static chm_dolma_stats source_stats(const source *s) {
    chm_dolma_stats st = s->stats;
    if (s->rd) chm_dolma_stats_add(&st, chm_dolma_stats_get(s->rd));
    return st;
}

/* ---- one run ----------------------------------------------------------------------- */

typedef struct run {
    const chm_tokenize_opts *o;
    json_t *settings;
    source src;
    chm_shard_writer w;
    tk_pool pool;
    chm_progress prog;
    int64_t documents, tokens; /* written, reused shards included */
    int64_t skip;              /* documents of reused shards still to pass over */
    chm_token_dtype dtype;
    int64_t shard_tokens;
} run;

static chm_status write_manifest(run *R, const char *status, chm_err *err) {
    chm_dolma_stats st = source_stats(&R->src);
    chm_corpus_floor fl = R->src.floor;
    chm_corpus_floor_finish(&fl);
    chm_manifest_view v = {R->settings, status, R->documents, R->tokens, &st, R->src.errors,
                       R->w.shards, R->w.n_shards, R->o->corpus ? &fl : NULL};
    return chm_manifest_write(R->o->out_dir, &v, err);
}

/* Write one tokenized batch, in order; rewrites the manifest after each finished shard. */
static chm_status write_batch(run *R, tk_batch *b, chm_err *err) {
    if (b->rc) return chm_err_set(err, b->rc, b->err.file, b->err.line, "%s", b->err.msg);
    for (int i = 0; i < b->n; i++) {
        size_t start = i ? b->tok_end[i - 1] : 0, n = b->tok_end[i] - start;
        const tk_doc *d = &b->docs[i];
        const char *path = d->input >= 0 ? R->o->inputs[d->input] : "builtin:" CHM_CORPUS_SOURCE;
        int completed = 0;
        chm_status rc = chm_shard_writer_add(&R->w, b->toks.ids + start, n, path, b->chars + d->id_off,
                                         &completed, err);
        if (rc) return rc;
        R->documents++;
        R->tokens += (int64_t)n + 1;
        if (completed && (rc = write_manifest(R, "partial", err))) return rc;
    }
    return CHM_OK;
}

/* Write finished batches in order; wait for the oldest when `block` (1: one, 2: all). */
static chm_status drain(run *R, int block, chm_err *err) {
    tk_pool *p = &R->pool;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->written == p->filled) {
            pthread_mutex_unlock(&p->mu);
            return CHM_OK;
        }
        tk_batch *b = &p->ring[p->written % p->cap];
        while (block && !b->done) pthread_cond_wait(&p->done, &p->mu);
        int ready = b->done;
        pthread_mutex_unlock(&p->mu);
        if (!ready) return CHM_OK;
        chm_status rc = write_batch(R, b, err);
        if (rc) return rc;
        pthread_mutex_lock(&p->mu);
        p->written++;
        pthread_mutex_unlock(&p->mu);
        if (block == 1) block = 0;
    }
}

/* Fill the next free ring slot from the source; *end when the source ran dry. */
static chm_status fill_batch(run *R, tk_batch *b, int *end, chm_err *err) {
    b->n = 0;
    b->chars_len = 0;
    b->done = 0;
    b->rc = CHM_OK;
    while (b->n < BATCH_DOCS && b->chars_len < BATCH_BYTES) {
        chm_dolma_doc doc;
        int input;
        chm_status rc = CHM_OK;
        if (!source_next(&R->src, &doc, &input, &rc, err)) {
            *end = 1;
            return rc;
        }
        if (R->skip > 0) { /* already in a kept shard */
            R->skip--;
            continue;
        }
        if (batch_add(b, doc.text, doc.text_len, doc.id, input))
            return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for a batch of documents");
    }
    return CHM_OK;
}

static chm_status pipeline(run *R, int nth, chm_err *err) {
    chm_status rc = pool_start(&R->pool, R->o->tok, nth, err);
    tk_pool *p = &R->pool;
    for (int end = 0; !rc && !end;) {
        /* A slot is free: written..filled spans fewer than cap batches. */
        tk_batch *b = &p->ring[p->filled % p->cap];
        rc = fill_batch(R, b, &end, err);
        if (rc) break;
        if (b->n > 0) {
            pthread_mutex_lock(&p->mu);
            p->filled++;
            pthread_cond_signal(&p->work);
            pthread_mutex_unlock(&p->mu);
        }
        chm_progress_update(&R->prog, source_bytes(&R->src), R->documents, R->tokens);
        rc = drain(R, end ? 2 : p->filled - p->written == p->cap ? 1 : 0, err);
    }
    pool_stop(p);
    return rc;
}

/* ---- setup ----------------------------------------------------------------------- */

static json_t *settings_json(const chm_tokenize_opts *o, chm_token_dtype dt, int64_t shard_tokens,
                             const int64_t *sizes, const int64_t *mtimes) {
    json_t *s = json_pack("{s:{s:s, s:s}, s:i, s:i, s:s, s:I}", "tokenizer", "name",
                          o->tokenizer_name ? o->tokenizer_name : "", "description",
                          chm_tokenizer_describe(o->tok), "vocab_size",
                          (int)chm_tokenizer_vocab_size(o->tok), "eos", (int)chm_tokenizer_eos(o->tok),
                          "dtype", chm_token_dtype_name(dt), "shard_tokens", (json_int_t)shard_tokens);
    if (!s) return NULL;
    if (o->corpus) {
        json_object_set_new(s, "corpus", json_pack("{s:s, s:I, s:I, s:I}", "name", CHM_CORPUS_SOURCE,
                                                   "seed", (json_int_t)o->corpus_seed, "documents",
                                                   (json_int_t)o->corpus_docs, "bytes",
                                                   (json_int_t)o->corpus_bytes));
        return s;
    }
    json_t *in = json_array();
    for (int i = 0; i < o->n_inputs; i++)
        json_array_append_new(in, json_pack("{s:s, s:I, s:I}", "path", o->inputs[i], "bytes",
                                            (json_int_t)sizes[i], "mtime", (json_int_t)mtimes[i]));
    json_object_set_new(s, "inputs", in);
    return s;
}

static chm_status check_opts(const chm_tokenize_opts *o, chm_err *err) {
    if (!o->tok) return CHM_ERR(err, CHM_ERR_INVALID_ARG, "tokenize: no tokenizer given");
    if (!o->out_dir || !*o->out_dir)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "tokenize: no output directory given");
    if (!o->corpus && o->n_inputs <= 0)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "tokenize: no input files given");
    if (o->corpus && o->corpus_docs <= 0 && o->corpus_bytes <= 0)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "tokenize: the corpus needs a document or byte count");
    if (chm_tokenizer_eos(o->tok) < 0)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "tokenize: the tokenizer has no end-of-text token to join documents with");
    return CHM_OK;
}

/* Sizes and mtimes of the inputs; each must be a readable regular file. */
static chm_status stat_inputs(const chm_tokenize_opts *o, int64_t *sizes, int64_t *mtimes,
                              int64_t *total, chm_err *err) {
    *total = 0;
    for (int i = 0; i < o->n_inputs; i++) {
        struct stat st;
        if (stat(o->inputs[i], &st) != 0)
            return CHM_ERR(err, CHM_ERR_INVALID_ARG, "%s: %s", o->inputs[i], strerror(errno));
        if (!S_ISREG(st.st_mode))
            return CHM_ERR(err, CHM_ERR_INVALID_ARG, "%s: not a regular file", o->inputs[i]);
        sizes[i] = (int64_t)st.st_size;
        mtimes[i] = (int64_t)st.st_mtime;
        *total += sizes[i];
    }
    return CHM_OK;
}

/* mkdir -p */
static chm_status make_dirs(const char *dir, chm_err *err) {
    char path[4096];
    if (strlen(dir) >= sizeof path) return CHM_ERR(err, CHM_ERR_INVALID_ARG, "%s: path too long", dir);
    strcpy(path, dir);
    for (char *p = path + 1;; p++) {
        int last = *p == '\0';
        if (*p == '/' || last) {
            *p = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST)
                return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
            if (last) break;
            *p = '/';
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return CHM_ERR(err, CHM_ERR_IO, "%s: not a directory", dir);
    return CHM_OK;
}

/* One writer per directory: a POSIX record lock, dropped when the fd closes or the process dies. */
static chm_status lock_dir(const char *dir, int *fd_out, chm_err *err) {
    char p[4200];
    snprintf(p, sizeof p, "%s/.chimera-tokenize.lock", dir);
    int fd = open(p, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        close(fd);
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "%s: another chimera tokenize is writing this directory", dir);
    }
    *fd_out = fd;
    return CHM_OK;
}

/* Decide what of an earlier run to keep; sets R->skip and the reused shards. */
static chm_status plan_resume(run *R, chm_manifest_prev *prev, int *up_to_date, chm_err *err) {
    const chm_tokenize_opts *o = R->o;
    *up_to_date = 0;
    chm_status rc = chm_manifest_load_prev(o->out_dir, R->settings, prev, err);
    if (rc) return rc;
    if (!prev->same_settings && (prev->exists || chm_shard_dir_has_shards(o->out_dir))) {
        if (!o->overwrite)
            return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                           "%s holds shards of a different run (other inputs, tokenizer or shard "
                           "size); pass --overwrite to replace them or choose another --out",
                           o->out_dir);
        chm_shard_dir_clear(o->out_dir, 0);
    }
    chm_shard_dir_clear(o->out_dir, 1);
    *up_to_date = prev->same_settings && prev->complete && !prev->had_errors &&
                  prev->n_valid == prev->n_listed;
    for (int i = 0; i < prev->n_valid; i++) {
        R->skip += prev->shards[i].documents;
        R->documents += prev->shards[i].documents;
        R->tokens += prev->shards[i].tokens;
    }
    return CHM_OK;
}

/* Turn the failed inputs into the run's error: "N of M inputs failed: ...". */
static chm_status report_failures(run *R, chm_tokenize_result *res, chm_err *err) {
    size_t nf = json_array_size(R->src.errors);
    res->failed_inputs = (int)nf;
    if (!nf) return CHM_OK;
    char msg[1024];
    int k = snprintf(msg, sizeof msg, "%zu of %d input%s failed%s:", nf, R->o->n_inputs,
                     R->o->n_inputs == 1 ? "" : "s",
                     (int)nf < R->o->n_inputs ? " (the others were tokenized)" : "");
    for (size_t i = 0; i < nf && k > 0 && (size_t)k < sizeof msg; i++)
        k += snprintf(msg + k, sizeof msg - (size_t)k, "%s %s", i ? ";" : "",
                      json_string_value(json_array_get(R->src.errors, i)));
    return CHM_ERR(err, R->src.fail_code ? R->src.fail_code : CHM_ERR_PARSE, "%s", msg);
}

static chm_status run_all(run *R, chm_tokenize_result *res, int64_t total, chm_err *err) {
    const chm_tokenize_opts *o = R->o;
    chm_manifest_prev prev;
    int up_to_date;
    chm_status rc = plan_resume(R, &prev, &up_to_date, err);
    if (!rc)
        rc = chm_shard_writer_init(&R->w, o->out_dir, R->dtype, R->shard_tokens, chm_tokenizer_eos(o->tok),
                               chm_tokenizer_vocab_size(o->tok), prev.shards, prev.n_valid, err);
    res->shards_reused = prev.n_valid;
    free(prev.shards);
    if (rc) return rc;
    if (up_to_date) {
        res->shards = R->w.n_shards;
        res->documents = R->documents;
        res->tokens = R->tokens;
        return CHM_OK;
    }
    if ((rc = write_manifest(R, "partial", err))) return rc;
    int nth = o->threads > 0 ? o->threads : omp_get_num_procs();
    chm_progress_start(&R->prog, o->progress, o->corpus ? o->corpus_bytes : total);
    rc = pipeline(R, nth, err);
    if (!rc) rc = chm_shard_writer_finish(&R->w, err);
    chm_progress_end(&R->prog);
    if (!rc) rc = write_manifest(R, "complete", err);
    res->documents = R->documents;
    res->tokens = R->tokens;
    res->shards = R->w.n_shards;
    res->stats = source_stats(&R->src);
    return rc ? rc : report_failures(R, res, err);
}

chm_status chm_tokenize_run(const chm_tokenize_opts *o, chm_tokenize_result *res, chm_err *err) {
    memset(res, 0, sizeof *res);
    chm_status rc = check_opts(o, err);
    if (rc) return rc;
    run R;
    memset(&R, 0, sizeof R);
    R.o = o;
    R.src.o = o;
    R.src.errors = json_array();
    int n = o->n_inputs > 0 ? o->n_inputs : 1;
    R.src.sizes = calloc((size_t)n, sizeof *R.src.sizes);
    int64_t *mtimes = calloc((size_t)n, sizeof *mtimes), total = 0;
    if (!R.src.sizes || !mtimes) rc = CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the input list");
    if (!rc && !o->corpus) rc = stat_inputs(o, R.src.sizes, mtimes, &total, err);
    R.dtype = chm_tokenizer_vocab_size(o->tok) <= 65536 ? CHM_TOKENS_U16 : CHM_TOKENS_U32;
    R.shard_tokens = o->shard_tokens > 0 ? o->shard_tokens : DEFAULT_SHARD_TOKENS;
    if (!rc && !(R.settings = settings_json(o, R.dtype, R.shard_tokens, R.src.sizes, mtimes)))
        rc = CHM_ERR(err, CHM_ERR_NOMEM, "no memory for the manifest");
    int lock = -1;
    if (!rc) rc = make_dirs(o->out_dir, err);
    if (!rc) rc = lock_dir(o->out_dir, &lock, err);
    if (!rc) rc = run_all(&R, res, total, err);
    if (lock >= 0) close(lock);
    if (o->corpus) {
        res->floor = R.src.floor;
        chm_corpus_floor_finish(&res->floor);
    }
    if (R.src.rd) chm_dolma_close(R.src.rd);
    chm_shard_writer_free(&R.w);
    free(R.src.corpus_text);
    free(R.src.sizes);
    free(mtimes);
    json_decref(R.src.errors);
    json_decref(R.settings);
    return rc;
}
