/*
 * tokenizer_corpus.c: documents for the tokenizer trainer and benchmark.
 *
 * A .json/.jsonl file (also .gz/.zst) is read with the Dolma reader (data.h): each good
 * line's "text" is one document, bad lines are skipped as that reader skips them. Any other
 * file is plain text (also .gz/.zst): its lines are joined back with '\n' into documents of
 * about 1 MiB, cut at line ends, so a huge text file never has to fit in memory at once.
 */
#include <stdlib.h>
#include <string.h>

#include "chimera/data.h"
#include "data/tokenizer_internal.h"

#define TEXT_CHUNK (1u << 20)

/* Does the name (less .gz/.zst) end in .json or .jsonl? */
static bool is_jsonl(const char *path) {
    size_t n = strlen(path);
    if (n > 3 && strcmp(path + n - 3, ".gz") == 0)
        n -= 3;
    else if (n > 4 && strcmp(path + n - 4, ".zst") == 0)
        n -= 4;
    return (n > 5 && strncmp(path + n - 5, ".json", 5) == 0) ||
           (n > 6 && strncmp(path + n - 6, ".jsonl", 6) == 0);
}

static chm_status read_jsonl(const char *path, chm_doc_fn fn, void *ctx, chm_err *err) {
    chm_dolma_reader *r;
    chm_status rc = chm_dolma_open(path, &r, err);
    if (rc) return rc;
    for (;;) {
        chm_dolma_doc d;
        int got = 0;
        if ((rc = chm_dolma_next(r, &d, &got, err)) || !got) break;
        if ((rc = fn(ctx, d.text, d.text_len))) break;
    }
    chm_dolma_close(r);
    return rc;
}

/* Append line + '\n' to the buffer. */
static chm_status buf_line(char **buf, size_t *n, size_t *cap, const char *line, size_t len) {
    if (*n + len + 1 > *cap) {
        size_t c = *cap ? *cap : TEXT_CHUNK;
        while (c < *n + len + 1) c *= 2;
        char *p = realloc(*buf, c);
        if (!p) return CHM_ERR_NOMEM;
        *buf = p, *cap = c;
    }
    memcpy(*buf + *n, line, len);
    (*buf)[*n + len] = '\n';
    *n += len + 1;
    return CHM_OK;
}

static chm_status read_text(const char *path, chm_doc_fn fn, void *ctx, chm_err *err) {
    chm_lines *r;
    chm_status rc = chm_lines_open(path, &r, err);
    if (rc) return rc;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        const char *line;
        size_t len;
        int got = 0;
        if ((rc = chm_lines_next(r, &line, &len, &got, err)) || !got) break;
        if (buf_line(&buf, &n, &cap, line, len)) {
            rc = CHM_ERR(err, CHM_ERR_NOMEM, "%s: out of memory while reading", path);
            break;
        }
        if (n >= TEXT_CHUNK) {
            if ((rc = fn(ctx, buf, n))) break;
            n = 0;
        }
    }
    if (!rc && n) rc = fn(ctx, buf, n);
    free(buf);
    chm_lines_close(r);
    return rc;
}

chm_status chm_tok_corpus_read(const char *path, chm_doc_fn fn, void *ctx, chm_err *err) {
    return is_jsonl(path) ? read_jsonl(path, fn, ctx, err) : read_text(path, fn, ctx, err);
}
