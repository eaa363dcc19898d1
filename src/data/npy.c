/*
 * npy.c: NumPy .npy headers (format versions 1, 2 and 3) for token arrays, and the
 * names and sizes of token dtypes.
 *
 * A header is "\x93NUMPY", major and minor version bytes, a little-endian header
 * length (2 bytes in v1, 4 in v2/v3), then a Python dict literal such as
 * {'descr': '<u2', 'fortran_order': False, 'shape': (1000,), }. Only what a token
 * stream can be is accepted: 1-D, C order, '<u2', '<u4' or '<i4'.
 */
#include "chimera/data.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

const char *chm_token_dtype_name(chm_token_dtype d) {
    return d == CHM_TOKENS_U16 ? "uint16" : d == CHM_TOKENS_U32 ? "uint32" : "int32";
}

int chm_token_dtype_size(chm_token_dtype d) { return d == CHM_TOKENS_U16 ? 2 : 4; }

/* A cursor over the dict literal. */
typedef struct lex {
    const char *p, *end;
} lex;

static void skip_ws(lex *x) {
    while (x->p < x->end && isspace((unsigned char)*x->p)) x->p++;
}

/* A quoted Python string into out (at most cap-1 bytes); 0 when there is none. */
static int lex_string(lex *x, char *out, size_t cap) {
    skip_ws(x);
    if (x->p >= x->end || (*x->p != '\'' && *x->p != '"')) return 0;
    char q = *x->p++;
    size_t n = 0;
    while (x->p < x->end && *x->p != q) {
        if (n + 1 < cap) out[n++] = *x->p;
        x->p++;
    }
    if (x->p >= x->end) return 0;
    x->p++;
    out[n] = '\0';
    return 1;
}

/* A tuple of non-negative integers "(a, b, )" into dims; returns the count or -1. */
static int lex_shape(lex *x, int64_t *dims, int max) {
    skip_ws(x);
    if (x->p >= x->end || *x->p != '(') return -1;
    x->p++;
    int n = 0;
    for (;;) {
        skip_ws(x);
        if (x->p < x->end && *x->p == ')') {
            x->p++;
            return n;
        }
        if (x->p >= x->end || !isdigit((unsigned char)*x->p)) return -1;
        int64_t v = 0;
        while (x->p < x->end && isdigit((unsigned char)*x->p)) {
            if (v > (INT64_MAX - 9) / 10) return -1;
            v = v * 10 + (*x->p++ - '0');
        }
        if (n < max) dims[n] = v;
        n++;
        skip_ws(x);
        if (x->p < x->end && *x->p == ',') x->p++;
    }
}

/* Whether the next word is `w` (then it is consumed). */
static int lex_word(lex *x, const char *w) {
    skip_ws(x);
    size_t n = strlen(w);
    if ((size_t)(x->end - x->p) < n || memcmp(x->p, w, n) != 0) return 0;
    x->p += n;
    return 1;
}

/* The three keys' raw values. */
typedef struct npy_dict {
    char descr[32];
    int fortran, have_descr, have_fortran, ndim;
    int64_t dims[4];
} npy_dict;

/* Parse the dict literal; returns NULL or a description of what is wrong. */
static const char *parse_dict(lex *x, npy_dict *d) {
    skip_ws(x);
    if (x->p >= x->end || *x->p++ != '{') return "the header is not a dict";
    d->ndim = -1;
    for (;;) {
        skip_ws(x);
        if (x->p < x->end && *x->p == '}') return NULL;
        char key[32];
        if (!lex_string(x, key, sizeof key)) return "a header key is not a string";
        skip_ws(x);
        if (x->p >= x->end || *x->p++ != ':') return "':' missing after a header key";
        if (strcmp(key, "descr") == 0) {
            if (!lex_string(x, d->descr, sizeof d->descr)) return "'descr' is not a string";
            d->have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            d->fortran = lex_word(x, "True");
            if (!d->fortran && !lex_word(x, "False")) return "'fortran_order' is not True or False";
            d->have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            d->ndim = lex_shape(x, d->dims, 4);
            if (d->ndim < 0) return "'shape' is not a tuple of integers";
        } else {
            return "the header has an unknown key";
        }
        skip_ws(x);
        if (x->p < x->end && *x->p == ',') x->p++;
    }
}

/* Check the parsed dict against what a token array may be. */
static chm_status check_dict(const npy_dict *d, const char *name, chm_npy_header *out,
                             chm_err *err) {
    if (!d->have_descr || !d->have_fortran || d->ndim < 0)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: .npy header lacks 'descr', 'fortran_order' or 'shape'",
                       name);
    if (strcmp(d->descr, "<u2") == 0) out->dtype = CHM_TOKENS_U16;
    else if (strcmp(d->descr, "<u4") == 0) out->dtype = CHM_TOKENS_U32;
    else if (strcmp(d->descr, "<i4") == 0) out->dtype = CHM_TOKENS_I32;
    else
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: .npy dtype '%s' is not a token type; save the array as uint16 ('<u2'), "
                       "uint32 ('<u4') or int32 ('<i4'), little-endian",
                       name, d->descr);
    if (d->fortran)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: .npy array is in Fortran order; save it C-ordered",
                       name);
    if (d->ndim != 1)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: .npy array has %d dimensions; token files must be 1-D (use arr.ravel())",
                       name, d->ndim);
    out->count = d->dims[0];
    return CHM_OK;
}

chm_status chm_npy_parse(const void *bytes, size_t n, const char *name, chm_npy_header *out,
                         chm_err *err) {
    const unsigned char *b = bytes;
    memset(out, 0, sizeof *out);
    if (n < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: not a NumPy .npy file (no \\x93NUMPY magic)", name);
    int major = b[6];
    if (major < 1 || major > 3)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: .npy format version %d.%d is not 1, 2 or 3", name,
                       major, b[7]);
    size_t start = major == 1 ? 10 : 12;
    if (n < start)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: truncated .npy header", name);
    size_t hlen = major == 1 ? (size_t)b[8] | (size_t)b[9] << 8
                             : (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 |
                                   (size_t)b[11] << 24;
    if (hlen > n - start)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: truncated .npy header: it announces %zu bytes but the file has %zu", name,
                       start + hlen, n);
    lex x = {(const char *)b + start, (const char *)b + start + hlen};
    npy_dict d = {0};
    const char *why = parse_dict(&x, &d);
    if (why) return CHM_ERR(err, CHM_ERR_PARSE, "%s: bad .npy header: %s", name, why);
    chm_status rc = check_dict(&d, name, out, err);
    if (rc) return rc;
    out->version = major;
    out->data_offset = (int64_t)(start + hlen);
    return CHM_OK;
}
