/*
 * dolma.c: Dolma documents out of JSON lines (see chimera/data.h).
 *
 * Each non-blank line is parsed with jansson. A line that is not a JSON object, has
 * no string "text", or is not valid UTF-8 is skipped and counted, and its file:line
 * is kept among the first CHM_DOLMA_SAMPLES locations; a document with an empty text
 * is counted and not returned. Nothing a file contains can make the reader crash:
 * the worst case is an error after the good documents.
 */
#include "chimera/data.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chm_dolma_reader {
    chm_lines *lines;
    char *path;
    json_t *cur;        /* the current document's parse tree (owns the doc strings) */
    char id_buf[32];    /* numeric ids printed here */
    chm_dolma_stats st;
    int done;
};

int64_t chm_dolma_stats_skipped(const chm_dolma_stats *s) {
    return s->bad_json + s->missing_text + s->bad_utf8;
}

void chm_dolma_stats_add(chm_dolma_stats *into, const chm_dolma_stats *from) {
    into->lines += from->lines;
    into->blank += from->blank;
    into->documents += from->documents;
    into->empty += from->empty;
    into->bad_json += from->bad_json;
    into->missing_text += from->missing_text;
    into->bad_utf8 += from->bad_utf8;
    into->text_bytes += from->text_bytes;
    for (int i = 0; i < from->n_samples && into->n_samples < CHM_DOLMA_SAMPLES; i++)
        memcpy(into->samples[into->n_samples++], from->samples[i], sizeof from->samples[i]);
}

/* Length of a valid UTF-8 sequence at p (RFC 3629: no overlongs, surrogates, > U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (len == 0 || c > 0xf4 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && p[1] < 0xa0) return 0; /* overlong */
    if (c == 0xed && p[1] > 0x9f) return 0; /* surrogate */
    if (c == 0xf0 && p[1] < 0x90) return 0; /* overlong */
    if (c == 0xf4 && p[1] > 0x8f) return 0; /* above U+10FFFF */
    return len;
}

/* Byte offset of the first invalid UTF-8 sequence, or n when s[0..n) is valid. */
static size_t utf8_first_bad(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(p + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

/* Count a skipped line and keep "file:line: reason" while there is room. */
static void skip_line(chm_dolma_reader *r, int64_t *counter, const char *fmt, ...) {
    (*counter)++;
    if (r->st.n_samples >= CHM_DOLMA_SAMPLES) return;
    char *s = r->st.samples[r->st.n_samples++];
    int k = snprintf(s, sizeof r->st.samples[0], "%s:%lld: ", r->path,
                     (long long)chm_lines_number(r->lines));
    if (k < 0 || (size_t)k >= sizeof r->st.samples[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s + k, sizeof r->st.samples[0] - (size_t)k, fmt, ap);
    va_end(ap);
}

chm_status chm_dolma_open(const char *path, chm_dolma_reader **out, chm_err *err) {
    *out = NULL;
    chm_dolma_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory for a reader", path);
    }
    chm_status rc = chm_lines_open(path, &r->lines, err);
    if (rc) {
        chm_dolma_close(r);
        return rc;
    }
    *out = r;
    return CHM_OK;
}

void chm_dolma_close(chm_dolma_reader *r) {
    if (!r) return;
    json_decref(r->cur);
    chm_lines_close(r->lines);
    free(r->path);
    free(r);
}

const chm_dolma_stats *chm_dolma_stats_get(const chm_dolma_reader *r) { return &r->st; }
int64_t chm_dolma_bytes_in(const chm_dolma_reader *r) { return chm_lines_bytes_in(r->lines); }

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

/* Parse one line; 1 when it is a document to return (r->cur holds it), else 0. */
static int parse_line(chm_dolma_reader *r, const char *line, size_t len) {
    json_error_t je;
    json_t *root = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    if (!root) {
        size_t bad = utf8_first_bad(line, len);
        if (bad < len)
            skip_line(r, &r->st.bad_utf8, "invalid UTF-8 at byte %zu", bad + 1);
        else
            skip_line(r, &r->st.bad_json, "broken JSON: %s (column %d)", je.text, je.column);
        return 0;
    }
    if (!json_is_object(root)) {
        skip_line(r, &r->st.bad_json, "broken JSON: the line is not an object");
        json_decref(root);
        return 0;
    }
    json_t *text = json_object_get(root, "text");
    if (!json_is_string(text)) {
        skip_line(r, &r->st.missing_text, text ? "\"text\" is not a string" : "no \"text\" field");
        json_decref(root);
        return 0;
    }
    if (json_string_length(text) == 0) {
        r->st.empty++;
        json_decref(root);
        return 0;
    }
    r->cur = root;
    return 1;
}

/* Fill doc from r->cur. */
static void fill_doc(chm_dolma_reader *r, chm_dolma_doc *doc) {
    json_t *text = json_object_get(r->cur, "text");
    json_t *id = json_object_get(r->cur, "id");
    json_t *src = json_object_get(r->cur, "source");
    doc->text = json_string_value(text);
    doc->text_len = json_string_length(text);
    doc->id = "";
    if (json_is_string(id)) {
        doc->id = json_string_value(id);
    } else if (json_is_integer(id)) {
        snprintf(r->id_buf, sizeof r->id_buf, "%lld", (long long)json_integer_value(id));
        doc->id = r->id_buf;
    }
    doc->source = json_is_string(src) ? json_string_value(src) : "";
    doc->file = r->path;
    doc->line = chm_lines_number(r->lines);
}

chm_status chm_dolma_next(chm_dolma_reader *r, chm_dolma_doc *doc, int *got, chm_err *err) {
    *got = 0;
    json_decref(r->cur);
    r->cur = NULL;
    while (!r->done) {
        const char *line;
        size_t len;
        int have;
        chm_status rc = chm_lines_next(r->lines, &line, &len, &have, err);
        if (rc || !have) {
            r->done = 1;
            return rc;
        }
        if (is_blank(line, len)) {
            r->st.blank++;
            continue;
        }
        r->st.lines++;
        if (!parse_line(r, line, len)) continue;
        fill_doc(r, doc);
        r->st.documents++;
        r->st.text_bytes += (int64_t)doc->text_len;
        *got = 1;
        return CHM_OK;
    }
    return CHM_OK;
}
