/*
 * tokenizer.c: the public tokenizer API (chimera/tokenizer.h): id arrays, and dispatch to
 * the byte tokenizer (tokenizer_byte.c) or the tokenizer.json BPE (tokenizer_load.c,
 * tokenizer_encode.c).
 */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

chm_status chm_ids_push(chm_ids *a, int32_t id) { return chm_ids_append(a, &id, 1); }

void chm_ids_free(chm_ids *a) {
    free(a->ids);
    memset(a, 0, sizeof *a);
}

chm_status chm_tokenizer_byte(chm_tokenizer **out, chm_err *err) {
    if (!out) return CHM_ERR(err, CHM_ERR_INVALID_ARG, "chm_tokenizer_byte: out is NULL");
    return chm_byte_create(out, err);
}

chm_status chm_tokenizer_load(const char *path, chm_tokenizer **out, chm_err *err) {
    if (!out || !path)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "chm_tokenizer_load: path and out must not be NULL");
    *out = NULL;
    return chm_bpe_load(path, out, err);
}

void chm_tokenizer_free(chm_tokenizer *t) {
    if (!t) return;
    if (t->kind == CHM_TOK_BPE) chm_bpe_free(t);
    free(t);
}

int32_t chm_tokenizer_vocab_size(const chm_tokenizer *t) { return t->n_ids; }

int32_t chm_tokenizer_eos(const chm_tokenizer *t) { return t->eos; }

const char *chm_tokenizer_describe(const chm_tokenizer *t) { return t->describe; }

chm_status chm_tokenizer_encode(const chm_tokenizer *t, const char *text, size_t len, chm_ids *out,
                                chm_err *err) {
    if (!t || !out || (!text && len))
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "chm_tokenizer_encode: NULL tokenizer, text or output");
    if (!len) return CHM_OK;
    if (t->kind == CHM_TOK_BYTE) return chm_byte_encode(text, len, out, err);
    return chm_bpe_encode(t, text, len, out, err);
}

chm_status chm_tokenizer_decode(const chm_tokenizer *t, const int32_t *ids, size_t n,
                                char **text_out, size_t *len_out, chm_err *err) {
    if (!t || !text_out || !len_out || (!ids && n))
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "chm_tokenizer_decode: NULL tokenizer, ids or output");
    if (t->kind == CHM_TOK_BYTE) return chm_byte_decode(ids, n, text_out, len_out, err);
    return chm_bpe_decode(t, ids, n, text_out, len_out, err);
}
