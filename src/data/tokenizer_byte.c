/*
 * tokenizer_byte.c: the built-in byte tokenizer of the embedded default corpus.
 * Ids 0..255 are the bytes of the (UTF-8 repaired) text, 256 is <|endoftext|>,
 * 257 <|padding|>, 258..259 are reserved; decode drops 256..259.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

chm_status chm_byte_create(chm_tokenizer **out, chm_err *err) {
    chm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return CHM_ERR(err, CHM_ERR_NOMEM, "cannot allocate a tokenizer");
    t->kind = CHM_TOK_BYTE;
    t->n_ids = CHM_BYTE_VOCAB;
    t->eos = CHM_BYTE_EOS;
    t->serial = chm_tokenizer_next_serial();
    snprintf(t->describe, sizeof t->describe, "byte tokenizer, %d ids", CHM_BYTE_VOCAB);
    *out = t;
    return CHM_OK;
}

chm_status chm_byte_encode(const char *text, size_t len, chm_ids *out, chm_err *err) {
    char *fixed = NULL;
    if (chm_utf8_valid_prefix((const uint8_t *)text, len) != len) {
        if (chm_utf8_repair((const uint8_t *)text, len, &fixed, &len))
            return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory while encoding text");
        text = fixed;
    }
    chm_status rc = CHM_OK;
    for (size_t i = 0; i < len && !rc; i++)
        if (chm_ids_push(out, (unsigned char)text[i]))
            rc = CHM_ERR(err, CHM_ERR_NOMEM, "out of memory while encoding text");
    free(fixed);
    return rc;
}

chm_status chm_byte_decode(const int32_t *ids, size_t n, char **text_out, size_t *len_out,
                           chm_err *err) {
    char *s = malloc(n + 1);
    if (!s) return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory while decoding");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= CHM_BYTE_VOCAB) {
            free(s);
            return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                           "id %d at position %zu is outside the byte tokenizer's 0..%d",
                           (int)ids[i], i, CHM_BYTE_VOCAB - 1);
        }
        if (ids[i] < 256) s[k++] = (char)ids[i];
    }
    s[k] = '\0';
    *text_out = s;
    *len_out = k;
    return CHM_OK;
}
