/*
 * chimera/data.h: training data, from Dolma JSONL documents to token batches.
 *
 * Four layers, each usable alone:
 *   1. chm_lines / chm_dolma: stream lines and Dolma documents out of .json,
 *      .jsonl, .gz (multi-member) and .zst files, skipping and counting bad lines.
 *   2. chm_corpus: the embedded default corpus, a stochastic grammar whose
 *      information content (the loss floor) is known exactly.
 *   3. chm_tokenize_run: documents -> token shards the way `dolma tokens` writes
 *      them (raw little-endian memmaps named part-XXXXX.npy, a part-XXXXX.csv.gz
 *      sidecar of "start,end,path,id" per document, and manifest.json).
 *   4. chm_loader: memory-maps shards (chimera/dolma raw memmaps, NumPy .npy,
 *      llm.c .bin) and fills [B, T+1] int32 batches in a seeded, resumable order.
 *
 * Every fallible call returns a chm_status and fills a chm_err (when given) with
 * a message that names the file and says what is wrong. Nothing here prints
 * except chm_tokenize_run's optional progress line on stderr.
 */
#ifndef CHIMERA_DATA_H
#define CHIMERA_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "chimera/error.h"
#include "chimera/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- 1. lines and Dolma documents ------------------------------------------ */

/* How a file is packed. Detected from the magic bytes first, the extension second. */
typedef enum chm_container {
    CHM_CONTAINER_PLAIN = 0, /* uncompressed text */
    CHM_CONTAINER_GZIP,      /* gzip (1f 8b), any number of concatenated members */
    CHM_CONTAINER_ZSTD       /* Zstandard frames (28 b5 2f fd, skippable frames too) */
} chm_container;

/* "plain", "gzip" or "zstd". */
const char *chm_container_name(chm_container c);

/* A streaming, decompressing line reader with no limit on line length. */
typedef struct chm_lines chm_lines;

/*
 * Open `path`. A file whose name ends in .gz or .zst but whose first bytes are not
 * that format is refused (CHM_ERR_PARSE) rather than read as text.
 */
chm_status chm_lines_open(const char *path, chm_lines **out, chm_err *err);
/*
 * The next line, without its '\n' (and without a '\r' before it). *line stays valid
 * until the next call. *got is 0 at the end of the file. A corrupt or truncated
 * compressed file returns every complete line before the damage, then an error
 * (CHM_ERR_PARSE, or CHM_ERR_IO for read failures) naming the file.
 */
chm_status chm_lines_next(chm_lines *r, const char **line, size_t *len, int *got, chm_err *err);
/* The container detected at open. */
chm_container chm_lines_container(const chm_lines *r);
/* 1-based number of the last line returned (0 before the first). */
int64_t chm_lines_number(const chm_lines *r);
/* Bytes of the file consumed so far (compressed bytes for .gz/.zst). */
int64_t chm_lines_bytes_in(const chm_lines *r);
/* Close the file and free the reader (NULL is a no-op). */
void chm_lines_close(chm_lines *r);

/* How many skipped-line locations a chm_dolma_stats keeps for the summary. */
#define CHM_DOLMA_SAMPLES 8

/* Counts over the lines read; skipped lines are kept as "file:line: reason" samples. */
typedef struct chm_dolma_stats {
    int64_t lines;        /* non-blank lines read */
    int64_t blank;        /* blank lines (ignored) */
    int64_t documents;    /* documents returned */
    int64_t empty;        /* documents whose text is "" (not returned) */
    int64_t bad_json;     /* skipped: not a JSON object */
    int64_t missing_text; /* skipped: no "text" field, or not a string */
    int64_t bad_utf8;     /* skipped: the line is not valid UTF-8 */
    int64_t text_bytes;   /* bytes of text returned */
    int n_samples;        /* filled entries of samples[] */
    char samples[CHM_DOLMA_SAMPLES][320];
} chm_dolma_stats;

/* Skipped lines in total: bad_json + missing_text + bad_utf8. */
int64_t chm_dolma_stats_skipped(const chm_dolma_stats *s);
/* Add `from` into `into` (counts summed, samples appended while room is left). */
void chm_dolma_stats_add(chm_dolma_stats *into, const chm_dolma_stats *from);

/* One document. Pointers stay valid until the next chm_dolma_next or close. */
typedef struct chm_dolma_doc {
    const char *id;     /* "id" (a number is printed as text); "" when absent */
    const char *text;   /* UTF-8, may contain NUL bytes: use text_len */
    size_t text_len;
    const char *source; /* "source"; "" when absent */
    const char *file;   /* the path given to chm_dolma_open */
    int64_t line;       /* 1-based line number in the decompressed file */
} chm_dolma_doc;

typedef struct chm_dolma_reader chm_dolma_reader;

/* Open a Dolma file (.json/.jsonl, .gz or .zst; see chm_lines_open). */
chm_status chm_dolma_open(const char *path, chm_dolma_reader **out, chm_err *err);
/*
 * The next good document (*got = 1) or the end (*got = 0). Bad lines are skipped and
 * counted, never returned; after an error (corrupt compressed data) the reader is done.
 */
chm_status chm_dolma_next(chm_dolma_reader *r, chm_dolma_doc *doc, int *got, chm_err *err);
/* Counts so far for this file. */
const chm_dolma_stats *chm_dolma_stats_get(const chm_dolma_reader *r);
/* Bytes of the file consumed so far (for progress). */
int64_t chm_dolma_bytes_in(const chm_dolma_reader *r);
/* Close and free (NULL is a no-op). */
void chm_dolma_close(chm_dolma_reader *r);

/* ---- 2. the embedded default corpus ----------------------------------------- */

#define CHM_CORPUS_SOURCE "chimera-grammar"

/*
 * The grammar, for tools and tests that re-derive a document's choices. Rule 0 is the
 * start symbol. Each alternative is text in which "{NAME}" expands rule NAME; every
 * other byte is literal. p[k] is the probability of alternative k (they sum to 1).
 * Word lists of different slots are disjoint and punctuation is fixed, so a text has
 * exactly one derivation: its information content is the sum of -log2 p over it.
 */
typedef struct chm_grammar_rule {
    const char *name;
    int n;                   /* alternatives */
    const char *const *alts; /* [n] */
    const double *p;         /* [n] */
} chm_grammar_rule;

/* The rules (static, thread-safe); *n_rules receives their count. */
const chm_grammar_rule *chm_corpus_grammar(int *n_rules);

/* One generated document. */
typedef struct chm_corpus_doc {
    int64_t index;    /* 0-based position in the corpus */
    char id[64];      /* "chimera-grammar-<seed>-<index>" */
    const char *text; /* valid during the callback only */
    size_t len;       /* bytes */
    double bits;      /* exact information content: sum of -log2 p of its choices */
} chm_corpus_doc;

/* Return nonzero to stop chm_corpus_generate early. */
typedef int (*chm_corpus_fn)(const chm_corpus_doc *doc, void *user);

/*
 * Document `index` of the corpus of `seed` (counter-based: independent of the others).
 * *text is malloc'd (NUL-terminated, the caller frees it).
 */
chm_status chm_corpus_document(uint64_t seed, int64_t index, char **text, size_t *len,
                               double *bits, chm_err *err);
/*
 * Call fn on documents 0, 1, ... until n_docs documents (when > 0) or at least n_bytes
 * bytes of text (when > 0) were made; one of the two limits must be positive.
 */
chm_status chm_corpus_generate(uint64_t seed, int64_t n_docs, int64_t n_bytes, chm_corpus_fn fn,
                               void *user, chm_err *err);

/* The loss floor of a sample of the corpus. */
typedef struct chm_corpus_floor {
    int64_t documents;
    int64_t bytes;              /* text bytes */
    double bits;                /* total information content */
    double bits_per_byte;       /* bits / bytes */
    double nats_per_byte;       /* bits * ln 2 / bytes */
    double nats_per_byte_token; /* per token of the byte tokenizer (one EOS per document) */
} chm_corpus_floor;

/* Generate the same documents as chm_corpus_generate and report their floor. */
chm_status chm_corpus_entropy(uint64_t seed, int64_t n_docs, int64_t n_bytes,
                              chm_corpus_floor *out, chm_err *err);
/*
 * Write the documents as Dolma JSONL ({"id","text","source"} per line) to `path`
 * (gzip when the name ends in .gz); *floor_out (may be NULL) receives their floor.
 */
chm_status chm_corpus_write_jsonl(const char *path, uint64_t seed, int64_t n_docs,
                                  int64_t n_bytes, chm_corpus_floor *floor_out, chm_err *err);

/* ---- 3. token shards ---------------------------------------------------------- */

/* Element type of a token file. */
typedef enum chm_token_dtype {
    CHM_TOKENS_U16 = 0, /* little-endian uint16 (vocabularies up to 65536) */
    CHM_TOKENS_U32,     /* little-endian uint32 */
    CHM_TOKENS_I32      /* little-endian int32 (NumPy '<i4'); negative ids are errors */
} chm_token_dtype;

/* "uint16", "uint32" or "int32". */
const char *chm_token_dtype_name(chm_token_dtype d);
/* 2 or 4. */
int chm_token_dtype_size(chm_token_dtype d);

/* What chm_tokenize_run reads and where it writes. */
typedef struct chm_tokenize_opts {
    const char *const *inputs;  /* [n_inputs] Dolma files (already glob-expanded) */
    int n_inputs;
    int corpus;                 /* nonzero: read the embedded corpus instead of inputs */
    uint64_t corpus_seed;
    int64_t corpus_docs;        /* corpus size: documents (when > 0) ... */
    int64_t corpus_bytes;       /* ... or text bytes (when > 0) */
    const chm_tokenizer *tok;   /* used from many threads (tokenizer.h allows it) */
    const char *tokenizer_name; /* recorded in the manifest, e.g. the tokenizer.json path */
    const char *out_dir;        /* created when missing */
    int threads;                /* tokenizing threads; <= 0: one per processor */
    int64_t shard_tokens;       /* a shard is closed before it would pass this; <= 0: 2^29 */
    int overwrite;              /* replace shards of a different run in out_dir */
    int progress;               /* nonzero: progress on stderr (bar on a terminal) */
} chm_tokenize_opts;

/* What a run did. */
typedef struct chm_tokenize_result {
    int64_t documents, tokens;
    int shards;                 /* shards in the manifest */
    int shards_reused;          /* complete shards of an earlier run kept (size + sha256) */
    int failed_inputs;          /* inputs that ended in an error (named in the message) */
    chm_dolma_stats stats;      /* lines read and skipped over all inputs */
    chm_corpus_floor floor;     /* the corpus floor, when opts.corpus */
} chm_tokenize_result;

/*
 * Tokenize every document (text + EOS per document, in input order, on opts.threads
 * threads) into out_dir/part-XXXXX.npy + .csv.gz and out_dir/manifest.json. Shards
 * are written under temporary names, fsynced and renamed; the manifest is rewritten
 * after each shard, so an interrupted run resumes from its last complete shard.
 * Inputs that fail (corrupt, truncated, unreadable) are named in err and the others
 * still tokenized: the return is then CHM_ERR_PARSE or CHM_ERR_IO with *res filled.
 * Bad options (and shards of another run without overwrite) give CHM_ERR_INVALID_ARG.
 */
chm_status chm_tokenize_run(const chm_tokenize_opts *opts, chm_tokenize_result *res, chm_err *err);

/* ---- NumPy .npy headers --------------------------------------------------------- */

/* A parsed .npy header: a 1-D C-order array of tokens. */
typedef struct chm_npy_header {
    int version;            /* 1, 2 or 3 */
    chm_token_dtype dtype;  /* from descr '<u2', '<u4' or '<i4' */
    int64_t count;          /* shape[0] */
    int64_t data_offset;    /* bytes before the first element */
} chm_npy_header;

/*
 * Parse the header in bytes[0..n) of the file `name` (for messages). Other dtypes,
 * big-endian, Fortran order and shapes that are not 1-D are refused (CHM_ERR_PARSE).
 */
chm_status chm_npy_parse(const void *bytes, size_t n, const char *name, chm_npy_header *out,
                         chm_err *err);

/* ---- 4. the training-data loader ---------------------------------------------- */

/* How the loader cuts, orders and splits the token stream. */
typedef struct chm_loader_config {
    int64_t seq_len;           /* T: a window is T+1 tokens; windows start at k*(T+1) */
    int64_t batch_size;        /* B: windows per call, per rank */
    uint64_t seed;             /* the order of epoch e is a permutation keyed by seed+e */
    double val_fraction;       /* validation windows as a fraction of all windows ... */
    int64_t val_windows;       /* ... or as a count (used when > 0) */
    int rank, world_size;      /* data-parallel sharding; world_size <= 0 means 1 */
    chm_token_dtype raw_dtype; /* element type of headerless files outside a manifest */
    int32_t vocab_size;        /* > 0: a token >= vocab_size (or < 0) is an error */
    int verify;                /* nonzero: check manifest sha256 of every shard at open */
} chm_loader_config;

/*
 * Where the loader is in its sequence of training windows. Identical on every rank;
 * save it with a checkpoint and restore it to continue exactly.
 */
typedef struct chm_loader_cursor {
    uint64_t seed;
    int64_t epoch;          /* epochs completed */
    int64_t position;       /* windows of this epoch consumed, over all ranks */
    int64_t train_windows;  /* checked on restore: the data must be the same */
    int64_t seq_len;        /* checked on restore */
} chm_loader_cursor;

/* Sizes of the opened stream. */
typedef struct chm_loader_info {
    int64_t tokens;         /* tokens in the concatenated stream */
    int64_t windows;        /* floor(tokens / (T+1)) */
    int64_t train_windows;
    int64_t val_windows;
    int files;
} chm_loader_info;

typedef struct chm_loader chm_loader;

/*
 * Open and memory-map token files. Each path is a directory holding manifest.json (or
 * the manifest itself), a NumPy .npy (magic \x93NUMPY), an llm.c .bin (magic 20240520),
 * a headerless memmap (cfg->raw_dtype), or a glob of those. The stream is their
 * concatenation in order. Sizes and headers are checked: a truncated file or a wrong
 * magic is CHM_ERR_PARSE naming the file.
 */
chm_status chm_loader_open(const char *const *paths, int n_paths, const chm_loader_config *cfg,
                           chm_loader **out, chm_err *err);
/* Unmap and free (NULL is a no-op). */
void chm_loader_close(chm_loader *ld);
/* Sizes of the stream and of the split. */
chm_loader_info chm_loader_get_info(const chm_loader *ld);

/*
 * The next B training windows of this rank into batch[B, T+1] (int32), then advance
 * the cursor by B * world_size windows. Epochs roll over inside a batch when needed.
 */
chm_status chm_loader_next(chm_loader *ld, int32_t *batch, chm_err *err);
/* Same as chm_loader_next split into inputs x[B, T] and targets y[B, T] (x shifted by one). */
chm_status chm_loader_next_xy(chm_loader *ld, int32_t *x, int32_t *y, chm_err *err);

/* Validation batches per rank: ceil(val_windows / (B * world_size)). */
int64_t chm_loader_val_batches(const chm_loader *ld);
/*
 * Validation batch k (0 <= k < val_batches) of this rank into batch[B, T+1]; *rows gets
 * the windows filled (the last batch may be short; rows past it are left as they were).
 */
chm_status chm_loader_val_batch(chm_loader *ld, int64_t k, int32_t *batch, int64_t *rows,
                                chm_err *err);

/* The cursor now. */
chm_loader_cursor chm_loader_get_cursor(const chm_loader *ld);
/* Continue from a saved cursor; CHM_ERR_INVALID_ARG when it belongs to other data or T. */
chm_status chm_loader_set_cursor(chm_loader *ld, const chm_loader_cursor *c, chm_err *err);

/* Tokens [start, start+n) of the concatenated stream into out[n] (checked like batches). */
chm_status chm_loader_read(const chm_loader *ld, int64_t start, int64_t n, int32_t *out,
                           chm_err *err);

#ifdef __cplusplus
}
#endif
#endif
