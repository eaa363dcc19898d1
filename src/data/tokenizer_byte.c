/*
 * tokenizer_byte.c: the built-in byte tokenizer and the id array helpers.
 * Placeholder for chm_tokenizer_load until the BPE loader lands.
 */
#include "chimera/tokenizer.h"

#include <stdlib.h>
#include <string.h>

struct chm_tokenizer {
    int kind; /* 0: byte */
};

chm_status chm_ids_push(chm_ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        int32_t *p = realloc(a->ids, cap * sizeof *p);
        if (!p) return CHM_ERR_NOMEM;
        a->ids = p;
        a->cap = cap;
    }
    a->ids[a->n++] = id;
    return CHM_OK;
}

void chm_ids_free(chm_ids *a) {
    free(a->ids);
    memset(a, 0, sizeof *a);
}

chm_status chm_tokenizer_byte(chm_tokenizer **out, chm_err *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return CHM_ERR(err, CHM_ERR_NOMEM, "cannot allocate a tokenizer");
    return CHM_OK;
}

chm_status chm_tokenizer_load(const char *path, chm_tokenizer **out, chm_err *err) {
    *out = NULL;
    return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "%s: tokenizer.json loading is not written yet",
                   path);
}

void chm_tokenizer_free(chm_tokenizer *t) { free(t); }

int32_t chm_tokenizer_vocab_size(const chm_tokenizer *t) {
    (void)t;
    return CHM_BYTE_VOCAB;
}

int32_t chm_tokenizer_eos(const chm_tokenizer *t) {
    (void)t;
    return CHM_BYTE_EOS;
}

const char *chm_tokenizer_describe(const chm_tokenizer *t) {
    (void)t;
    return "byte tokenizer, 260 ids";
}

chm_status chm_tokenizer_encode(const chm_tokenizer *t, const char *text, size_t len,
                                chm_ids *out, chm_err *err) {
    (void)t;
    for (size_t i = 0; i < len; i++)
        if (chm_ids_push(out, (unsigned char)text[i]))
            return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory while encoding");
    return CHM_OK;
}

chm_status chm_tokenizer_decode(const chm_tokenizer *t, const int32_t *ids, size_t n,
                                char **text_out, size_t *len_out, chm_err *err) {
    (void)t;
    char *s = malloc(n + 1);
    if (!s) return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory while decoding");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < 256) s[k++] = (char)ids[i];
    s[k] = '\0';
    *text_out = s;
    *len_out = k;
    return CHM_OK;
}
