/*
 * tokenizer_regex.c: Hugging Face's pre-tokenizer regexes compiled with PCRE2.
 *
 * Hugging Face runs these patterns with Oniguruma (Ruby syntax). PCRE2 with UTF + UCP reads
 * them the same way except for a few escapes, which are rewritten before compiling:
 *   \s  Oniguruma: the 25 White_Space characters. PCRE2 also matches U+180E (MONGOLIAN
 *       VOWEL SEPARATOR), so \s becomes that explicit list and \S its complement (\S inside
 *       a [...] class is left alone: it differs only on U+180E).
 *   \h  Ruby syntax: a hex digit (PCRE2: horizontal space); \H its complement.
 * \p{L}, \p{N} and the like mean the same in both; they can only differ on characters that
 * one library's Unicode tables know and the other's do not (PCRE2 10.42 has Unicode 14,
 * Hugging Face's Oniguruma Unicode 16), i.e. scripts too new to appear in most text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

const char chm_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

#define WHITE_SPACE                                                                                \
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"          \
    "\\x{205F}\\x{3000}"
#define HEX_DIGIT "0-9A-Fa-f"

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void put_str(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* The replacement for the escape \\<d> (d one of s S h H) inside or outside a class, or NULL. */
static const char *escape_rewrite(char d, bool in_class) {
    switch (d) {
    case 's': return in_class ? WHITE_SPACE : "[" WHITE_SPACE "]";
    case 'S': return in_class ? NULL : "[^" WHITE_SPACE "]";
    case 'h': return in_class ? HEX_DIGIT : "[" HEX_DIGIT "]";
    case 'H': return in_class ? NULL : "[^" HEX_DIGIT "]";
    default: return NULL;
    }
}

/* Length of the class opening at in[i] == '[': "[", "[^", plus a leading literal ']'. */
static size_t class_open(const char *in, size_t n, size_t i) {
    size_t k = 1;
    if (i + k < n && in[i + k] == '^') k++;
    if (i + k < n && in[i + k] == ']') k++;
    return k;
}

/* Rewrite Oniguruma escapes for PCRE2 (see the top of the file). */
static void onig_to_pcre2(const char *in, size_t n, sbuf *b) {
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\\' && i + 1 < n) {
            if (in[i + 1] == 'Q') { /* quoted run: copy through \E */
                const char *e = NULL;
                for (size_t j = i + 2; j + 1 < n && !e; j++)
                    if (in[j] == '\\' && in[j + 1] == 'E') e = in + j + 2;
                size_t k = e ? (size_t)(e - (in + i)) : n - i;
                put(b, in + i, k);
                i += k - 1;
                continue;
            }
            const char *rep = escape_rewrite(in[i + 1], in_class);
            if (rep)
                put_str(b, rep);
            else
                put(b, in + i, 2);
            i++;
        } else if (!in_class && in[i] == '[') {
            size_t k = class_open(in, n, i);
            put(b, in + i, k);
            i += k - 1;
            in_class = true;
        } else if (in_class && in[i] == '[' && i + 1 < n && in[i + 1] == ':') {
            const char *e = strstr(in + i, ":]"); /* POSIX class such as [:alpha:] */
            size_t k = e && (size_t)(e - in) < n ? (size_t)(e - (in + i)) + 2 : 1;
            put(b, in + i, k);
            i += k - 1;
        } else {
            if (in[i] == ']') in_class = false;
            put(b, in + i, 1);
        }
    }
}

chm_status chm_regex_compile(const char *pattern, size_t len, bool is_literal, pcre2_code **out,
                             bool *jit, char *why, size_t why_n) {
    sbuf b = {0};
    if (!is_literal) {
        put(&b, "", 0); /* allocates, so that an empty pattern has a buffer too */
        onig_to_pcre2(pattern, len, &b);
        if (b.oom) {
            free(b.p);
            snprintf(why, why_n, "out of memory");
            return CHM_ERR_NOMEM;
        }
        pattern = b.p, len = b.n;
    }
    int code;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (is_literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &code, &off, NULL);
    free(b.p);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(why, why_n, "%s (at offset %zu of the pattern as rewritten for PCRE2)",
                 (char *)msg, (size_t)off);
        return CHM_ERR_PARSE;
    }
    *jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0; /* else the interpreter matches */
    *out = re;
    return CHM_OK;
}
